//! The pointer cursor: its state as a capture source reports it ([`CursorState`], from ext-image-copy's
//! cursor session or PipeWire's cursor metadata) and, as metadata for viewers (`--cursor metadata`), the
//! data-channel messages the capture thread turns it into, sent on each viewer's `input` channel (the page draws the
//! image over the video, mapped through the letterbox like the picture):
//!
//! * `{"t":"cursor","visible":true,"x":0.5,"y":0.25,"hx":3,"hy":1}` — hotspot position as a fraction of the
//!   frame (buffer pixels / frame size), hotspot offset inside the image in image pixels;
//! * `{"t":"cursor-image","w":24,"h":24,"png":"<base64>"}` — a new image (RGBA PNG), sent when it changes.
//!
//! Sans-IO: state in, messages out; only changes produce messages.

use serde::Serialize;

use crate::frame::{FrameLayout, PixelFormat};

/// A cursor session event, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorEvent {
    Enter,
    Leave,
    Position { x: i32, y: i32 },
    Hotspot { x: i32, y: i32 },
}

/// The cursor image, as the compositor copied it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CursorImage {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    #[serde(skip)]
    pub stride: u32,
    /// `stride * height` bytes in `format`.
    #[serde(skip)]
    pub data: Vec<u8>,
}

impl CursorImage {
    /// RGB at (x, y).
    pub fn pixel_rgb(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        let layout = FrameLayout { width: self.width, height: self.height, stride: self.stride, format: self.format };
        crate::frame::pixel_rgb(&self.data, &layout, false, x, y)
    }
}

/// The pointer cursor over the captured output (`--cursor metadata`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CursorState {
    /// The cursor image intersects the output.
    pub inside: bool,
    /// Hotspot position in the output's buffer pixels (may be outside the buffer).
    pub x: i32,
    pub y: i32,
    /// Offset of the hotspot inside the image.
    pub hotspot_x: i32,
    pub hotspot_y: i32,
    /// Latest image (`None` until the first cursor frame arrives).
    pub image: Option<CursorImage>,
    /// Cursor images received so far.
    pub image_updates: u64,
    /// Position/hotspot/enter/leave events received so far.
    pub updates: u64,
}

impl CursorState {
    pub fn apply(&mut self, ev: CursorEvent) {
        self.updates += 1;
        match ev {
            CursorEvent::Enter => self.inside = true,
            CursorEvent::Leave => self.inside = false,
            CursorEvent::Position { x, y } => (self.x, self.y) = (x, y),
            CursorEvent::Hotspot { x, y } => (self.hotspot_x, self.hotspot_y) = (x, y),
        }
    }
}

/// Turns successive cursor states into the messages that describe what changed.
#[derive(Debug, Default)]
pub struct CursorMessages {
    last_position: Option<String>,
    last_image_updates: Option<u64>,
}

impl CursorMessages {
    /// Messages for `state` over a `width`×`height` frame: (position if it changed, image if it changed).
    pub fn update(&mut self, state: &CursorState, width: u32, height: u32) -> (Option<String>, Option<String>) {
        let pos = position_json(state, width, height);
        let pos = (self.last_position.as_ref() != Some(&pos)).then(|| {
            self.last_position = Some(pos.clone());
            pos
        });
        let image = match &state.image {
            Some(img) if self.last_image_updates != Some(state.image_updates) => {
                self.last_image_updates = Some(state.image_updates);
                image_json(img)
            }
            _ => None,
        };
        (pos, image)
    }
}

fn position_json(state: &CursorState, width: u32, height: u32) -> String {
    let frac = |v: i32, size: u32| if size == 0 { 0.0 } else { f64::from(v) / f64::from(size) };
    serde_json::json!({
        "t": "cursor",
        "visible": state.inside && state.image.is_some(),
        "x": frac(state.x, width),
        "y": frac(state.y, height),
        "hx": state.hotspot_x,
        "hy": state.hotspot_y,
    })
    .to_string()
}

/// The image as a `cursor-image` message (`None` for an empty or inconsistent image).
fn image_json(img: &CursorImage) -> Option<String> {
    let png = rgba_png(img)?;
    Some(serde_json::json!({ "t": "cursor-image", "w": img.width, "h": img.height, "png": base64(&png) }).to_string())
}

/// Encode the cursor image as an RGBA PNG (alpha from ARGB/ABGR formats, opaque otherwise).
fn rgba_png(img: &CursorImage) -> Option<Vec<u8>> {
    let bpp = img.format.bytes_per_pixel();
    let (w, h) = (img.width as usize, img.height as usize);
    if w == 0 || h == 0 || (img.stride as usize) < w * bpp || img.data.len() < img.stride as usize * (h - 1) + w * bpp {
        return None;
    }
    let mut rgba = Vec::with_capacity(w * h * 4);
    for y in 0..h {
        let row = &img.data[y * img.stride as usize..][..w * bpp];
        for px in row.chunks_exact(bpp) {
            let [r, g, b] = img.format.to_rgb8(px);
            let a = match img.format {
                PixelFormat::Argb8888 | PixelFormat::Abgr8888 => px[3],
                _ => 0xff,
            };
            rgba.extend_from_slice(&[r, g, b, a]);
        }
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, img.width, img.height);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().ok()?;
    writer.write_image_data(&rgba).ok()?;
    writer.finish().ok()?;
    Some(out)
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(updates: u64) -> CursorState {
        let mut data = vec![0u8; 2 * 2 * 4];
        PixelFormat::Argb8888.from_rgb8([255, 0, 0], &mut data[0..4]);
        data[7] = 0; // second pixel fully transparent
        CursorState {
            inside: true,
            x: 100,
            y: 50,
            hotspot_x: 1,
            hotspot_y: 0,
            image: Some(CursorImage { width: 2, height: 2, format: PixelFormat::Argb8888, stride: 8, data }),
            image_updates: updates,
            updates: 3,
        }
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn only_changes_produce_messages() {
        let mut m = CursorMessages::default();
        let s = image(1);
        let (pos, img) = m.update(&s, 200, 100);
        let pos: serde_json::Value = serde_json::from_str(&pos.expect("first position")).expect("json");
        assert_eq!(pos, serde_json::json!({"t":"cursor","visible":true,"x":0.5,"y":0.5,"hx":1,"hy":0}));
        let img: serde_json::Value = serde_json::from_str(&img.expect("first image")).expect("json");
        assert_eq!((img["w"].as_u64(), img["h"].as_u64()), (Some(2), Some(2)));
        assert!(img["png"].as_str().is_some_and(|p| p.starts_with("iVBORw0KGgo")), "a PNG: {img}");
        assert_eq!(m.update(&s, 200, 100), (None, None), "nothing changed");
        let mut moved = s.clone();
        moved.x = 150;
        let (pos, img) = m.update(&moved, 200, 100);
        assert!(pos.is_some_and(|p| p.contains("0.75")) && img.is_none());
        let mut left = image(2);
        left.inside = false;
        let (pos, img) = m.update(&left, 200, 100);
        assert!(pos.is_some_and(|p| p.contains("\"visible\":false")) && img.is_some(), "new image sent too");
    }

    #[test]
    fn inconsistent_images_are_not_sent() {
        let mut s = image(1);
        if let Some(img) = s.image.as_mut() {
            img.data.truncate(3);
        }
        assert!(CursorMessages::default().update(&s, 10, 10).1.is_none());
    }
}

//! Frame vocabulary shared by every stage: pixel formats, damage rectangles and the metadata that travels
//! with a captured frame.
//!
//! This module owns no buffers and does no I/O except [`write_png`], which turns a mapped frame into a PNG
//! with correct colours and orientation (used by `wl-webrtc capture --png`). Pixel formats are named by their
//! DRM fourcc (the same codes wl_shm uses for everything but ARGB/XRGB8888), so one enum serves shm, dmabuf
//! and PipeWire.

use std::io::Write;
use std::time::{Duration, Instant};

/// Pixel layouts that capture can deliver. Names follow DRM: `Xrgb8888` is a little-endian 32-bit word
/// `[31:0] x:R:G:B`, i.e. bytes B, G, R, X in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PixelFormat {
    Xrgb8888,
    Argb8888,
    Xbgr8888,
    Abgr8888,
    Rgbx8888,
    Rgba8888,
    Bgrx8888,
    Bgra8888,
    Xrgb2101010,
    Argb2101010,
    Xbgr2101010,
    Abgr2101010,
    Rgb888,
    Bgr888,
    Rgb565,
    Bgr565,
}

const fn fourcc(code: &[u8; 4]) -> u32 {
    (code[0] as u32) | ((code[1] as u32) << 8) | ((code[2] as u32) << 16) | ((code[3] as u32) << 24)
}

impl PixelFormat {
    /// Every format, in the order capture prefers them (cheapest to convert first).
    pub const ALL: [PixelFormat; 16] = [
        PixelFormat::Xrgb8888,
        PixelFormat::Argb8888,
        PixelFormat::Xbgr8888,
        PixelFormat::Abgr8888,
        PixelFormat::Rgbx8888,
        PixelFormat::Rgba8888,
        PixelFormat::Bgrx8888,
        PixelFormat::Bgra8888,
        PixelFormat::Xrgb2101010,
        PixelFormat::Argb2101010,
        PixelFormat::Xbgr2101010,
        PixelFormat::Abgr2101010,
        PixelFormat::Rgb888,
        PixelFormat::Bgr888,
        PixelFormat::Rgb565,
        PixelFormat::Bgr565,
    ];

    /// The DRM fourcc code of this format.
    pub const fn drm_fourcc(self) -> u32 {
        match self {
            PixelFormat::Xrgb8888 => fourcc(b"XR24"),
            PixelFormat::Argb8888 => fourcc(b"AR24"),
            PixelFormat::Xbgr8888 => fourcc(b"XB24"),
            PixelFormat::Abgr8888 => fourcc(b"AB24"),
            PixelFormat::Rgbx8888 => fourcc(b"RX24"),
            PixelFormat::Rgba8888 => fourcc(b"RA24"),
            PixelFormat::Bgrx8888 => fourcc(b"BX24"),
            PixelFormat::Bgra8888 => fourcc(b"BA24"),
            PixelFormat::Xrgb2101010 => fourcc(b"XR30"),
            PixelFormat::Argb2101010 => fourcc(b"AR30"),
            PixelFormat::Xbgr2101010 => fourcc(b"XB30"),
            PixelFormat::Abgr2101010 => fourcc(b"AB30"),
            PixelFormat::Rgb888 => fourcc(b"RG24"),
            PixelFormat::Bgr888 => fourcc(b"BG24"),
            PixelFormat::Rgb565 => fourcc(b"RG16"),
            PixelFormat::Bgr565 => fourcc(b"BG16"),
        }
    }

    /// Format for a DRM fourcc code, if capture supports it.
    pub fn from_drm_fourcc(code: u32) -> Option<PixelFormat> {
        PixelFormat::ALL.into_iter().find(|f| f.drm_fourcc() == code)
    }

    /// Format for a wl_shm format code: identical to DRM fourcc except the two legacy codes 0 (ARGB8888) and
    /// 1 (XRGB8888).
    pub fn from_wl_shm(code: u32) -> Option<PixelFormat> {
        match code {
            0 => Some(PixelFormat::Argb8888),
            1 => Some(PixelFormat::Xrgb8888),
            other => PixelFormat::from_drm_fourcc(other),
        }
    }

    /// The wl_shm code for this format (the inverse of [`PixelFormat::from_wl_shm`]).
    pub const fn wl_shm_code(self) -> u32 {
        match self {
            PixelFormat::Argb8888 => 0,
            PixelFormat::Xrgb8888 => 1,
            other => other.drm_fourcc(),
        }
    }

    /// Bytes per pixel.
    pub const fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb888 | PixelFormat::Bgr888 => 3,
            PixelFormat::Rgb565 | PixelFormat::Bgr565 => 2,
            _ => 4,
        }
    }

    /// Whether the format carries a meaningful alpha channel.
    pub const fn has_alpha(self) -> bool {
        matches!(
            self,
            PixelFormat::Argb8888
                | PixelFormat::Abgr8888
                | PixelFormat::Rgba8888
                | PixelFormat::Bgra8888
                | PixelFormat::Argb2101010
                | PixelFormat::Abgr2101010
        )
    }

    /// Short human name (the fourcc as text, e.g. `XR24`).
    pub fn fourcc_str(self) -> String {
        self.drm_fourcc().to_le_bytes().iter().map(|&b| b as char).collect()
    }

    /// Decode one pixel (`px.len() >= bytes_per_pixel()`) to 8-bit R, G, B. This is the scalar reference every
    /// faster path is checked against; 10-bit channels are rounded down to 8 bits, 5/6-bit ones expanded.
    pub fn to_rgb8(self, px: &[u8]) -> [u8; 3] {
        let word32 = || u32::from_le_bytes([px[0], px[1], px[2], px[3]]);
        let word16 = || u16::from_le_bytes([px[0], px[1]]);
        let c8 = |w: u32, shift: u32| ((w >> shift) & 0xff) as u8;
        // 10-bit to 8-bit with rounding: (v * 255 + 511) / 1023.
        let c10 = |w: u32, shift: u32| ((((w >> shift) & 0x3ff) * 255 + 511) / 1023) as u8;
        let c5 = |v: u16| ((u32::from(v & 0x1f) * 255 + 15) / 31) as u8;
        let c6 = |v: u16| ((u32::from(v & 0x3f) * 255 + 31) / 63) as u8;
        match self {
            PixelFormat::Xrgb8888 | PixelFormat::Argb8888 => {
                let w = word32();
                [c8(w, 16), c8(w, 8), c8(w, 0)]
            }
            PixelFormat::Xbgr8888 | PixelFormat::Abgr8888 => {
                let w = word32();
                [c8(w, 0), c8(w, 8), c8(w, 16)]
            }
            PixelFormat::Rgbx8888 | PixelFormat::Rgba8888 => {
                let w = word32();
                [c8(w, 24), c8(w, 16), c8(w, 8)]
            }
            PixelFormat::Bgrx8888 | PixelFormat::Bgra8888 => {
                let w = word32();
                [c8(w, 8), c8(w, 16), c8(w, 24)]
            }
            PixelFormat::Xrgb2101010 | PixelFormat::Argb2101010 => {
                let w = word32();
                [c10(w, 20), c10(w, 10), c10(w, 0)]
            }
            PixelFormat::Xbgr2101010 | PixelFormat::Abgr2101010 => {
                let w = word32();
                [c10(w, 0), c10(w, 10), c10(w, 20)]
            }
            // RG24: [23:0] R:G:B little endian → bytes B, G, R.
            PixelFormat::Rgb888 => [px[2], px[1], px[0]],
            PixelFormat::Bgr888 => [px[0], px[1], px[2]],
            PixelFormat::Rgb565 => {
                let w = word16();
                [c5(w >> 11), c6(w >> 5), c5(w)]
            }
            PixelFormat::Bgr565 => {
                let w = word16();
                [c5(w), c6(w >> 5), c5(w >> 11)]
            }
        }
    }

    /// Encode 8-bit R, G, B as one pixel of this format (alpha opaque). Used by test clients and tests.
    pub fn from_rgb8(self, rgb: [u8; 3], out: &mut [u8]) {
        let [r, g, b] = rgb.map(u32::from);
        let e10 = |v: u32| (v * 1023 + 127) / 255;
        let w32 = match self {
            PixelFormat::Xrgb8888 | PixelFormat::Argb8888 => 0xff00_0000 | (r << 16) | (g << 8) | b,
            PixelFormat::Xbgr8888 | PixelFormat::Abgr8888 => 0xff00_0000 | (b << 16) | (g << 8) | r,
            PixelFormat::Rgbx8888 | PixelFormat::Rgba8888 => (r << 24) | (g << 16) | (b << 8) | 0xff,
            PixelFormat::Bgrx8888 | PixelFormat::Bgra8888 => (b << 24) | (g << 16) | (r << 8) | 0xff,
            PixelFormat::Xrgb2101010 | PixelFormat::Argb2101010 => {
                0xc000_0000 | (e10(r) << 20) | (e10(g) << 10) | e10(b)
            }
            PixelFormat::Xbgr2101010 | PixelFormat::Abgr2101010 => {
                0xc000_0000 | (e10(b) << 20) | (e10(g) << 10) | e10(r)
            }
            PixelFormat::Rgb888 => {
                out[..3].copy_from_slice(&[rgb[2], rgb[1], rgb[0]]);
                return;
            }
            PixelFormat::Bgr888 => {
                out[..3].copy_from_slice(&rgb);
                return;
            }
            PixelFormat::Rgb565 | PixelFormat::Bgr565 => {
                let (hi, lo) = if self == PixelFormat::Rgb565 { (r, b) } else { (b, r) };
                let w = (((hi >> 3) << 11) | ((g >> 2) << 5) | (lo >> 3)) as u16;
                out[..2].copy_from_slice(&w.to_le_bytes());
                return;
            }
        };
        out[..4].copy_from_slice(&w32.to_le_bytes());
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.fourcc_str())
    }
}

/// A rectangle in buffer pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Rect {
        Rect { x, y, width, height }
    }

    /// This rectangle clipped to a `width`×`height` frame; `None` when nothing is left.
    pub fn clip(self, width: u32, height: u32) -> Option<Rect> {
        let x1 = self.x.saturating_add(self.width).min(width);
        let y1 = self.y.saturating_add(self.height).min(height);
        (self.x < x1 && self.y < y1).then(|| Rect::new(self.x, self.y, x1 - self.x, y1 - self.y))
    }

    pub const fn area(self) -> u64 {
        self.width as u64 * self.height as u64
    }
}

/// What changed in a frame relative to the previous one of the same capture session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Damage {
    /// Everything (first frame, size change, or a source without damage information).
    Full,
    /// Only these rectangles (already clipped to the frame; may overlap).
    Rects(Vec<Rect>),
}

impl Damage {
    /// Damaged pixel count, overlaps counted once.
    pub fn area(&self, width: u32, height: u32) -> u64 {
        match self {
            Damage::Full => u64::from(width) * u64::from(height),
            Damage::Rects(rects) => union_area(rects),
        }
    }

    /// Share of the frame that is damaged, 0.0..=1.0.
    pub fn fraction(&self, width: u32, height: u32) -> f64 {
        let total = u64::from(width) * u64::from(height);
        if total == 0 {
            return 0.0;
        }
        self.area(width, height) as f64 / total as f64
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Damage::Rects(r) if r.is_empty())
    }
}

/// Area of the union of rectangles by coordinate compression (damage lists are short).
fn union_area(rects: &[Rect]) -> u64 {
    let mut xs: Vec<u32> = rects.iter().flat_map(|r| [r.x, r.x + r.width]).collect();
    xs.sort_unstable();
    xs.dedup();
    let mut area = 0u64;
    for w in xs.windows(2) {
        let (x0, x1) = (w[0], w[1]);
        let mut spans: Vec<(u32, u32)> =
            rects.iter().filter(|r| r.x <= x0 && r.x + r.width >= x1).map(|r| (r.y, r.y + r.height)).collect();
        spans.sort_unstable();
        let mut covered = 0u64;
        let mut cur: Option<(u32, u32)> = None;
        for (a, b) in spans {
            match cur {
                Some((ca, cb)) if a <= cb => cur = Some((ca, cb.max(b))),
                Some((ca, cb)) => {
                    covered += u64::from(cb - ca);
                    cur = Some((a, b));
                }
                None => cur = Some((a, b)),
            }
        }
        if let Some((ca, cb)) = cur {
            covered += u64::from(cb - ca);
        }
        area += covered * u64::from(x1 - x0);
    }
    area
}

/// Geometry and format of a frame buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FrameLayout {
    pub width: u32,
    pub height: u32,
    /// Bytes between the starts of two rows.
    pub stride: u32,
    pub format: PixelFormat,
}

impl FrameLayout {
    /// Bytes one frame occupies.
    pub const fn byte_len(&self) -> usize {
        self.stride as usize * self.height as usize
    }

    /// Whether `stride` can hold a row of this width and format.
    pub const fn is_consistent(&self) -> bool {
        self.width > 0 && self.height > 0 && self.stride as usize >= self.width as usize * self.format.bytes_per_pixel()
    }
}

/// Everything known about a captured frame except its pixels.
#[derive(Debug, Clone)]
pub struct FrameInfo {
    pub layout: FrameLayout,
    /// Rows are stored bottom-up (screencopy `y_invert`).
    pub y_invert: bool,
    pub damage: Damage,
    /// When the request for this frame was made.
    pub requested_at: Instant,
    /// When the compositor said it was ready (our clock).
    pub ready_at: Instant,
    /// The compositor's presentation timestamp (CLOCK_MONOTONIC), when it sent one.
    pub presented: Option<Duration>,
    /// Presentation → ready: how old the frame already was when we got it.
    pub age: Option<Duration>,
    /// Sequence number within the capture session, starting at 0.
    pub seq: u64,
}

impl FrameInfo {
    /// Request → ready.
    pub fn latency(&self) -> Duration {
        self.ready_at.saturating_duration_since(self.requested_at)
    }
}

/// A BT.709 limited-range NV12 picture: a full-resolution Y plane and a half-resolution interleaved UV plane.
///
/// NV12 needs even dimensions: the planes cover `padded_width()`×`padded_height()` (the visible size rounded
/// up to even; the extra column/row repeats the last visible one) and the encoder crops back to
/// `width`×`height`. Rows are `stride` bytes apart in both planes (a multiple of 64 for SIMD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nv12Frame {
    /// Visible width in pixels (may be odd).
    pub width: u32,
    /// Visible height in pixels (may be odd).
    pub height: u32,
    /// Bytes between rows, in both planes.
    pub stride: usize,
    /// `stride * padded_height()` bytes.
    pub y: Vec<u8>,
    /// `stride * padded_height() / 2` bytes: U, V pairs.
    pub uv: Vec<u8>,
}

impl Nv12Frame {
    /// Largest per-sample difference from `other` over the padded planes, and where it is (for comparing
    /// converters). Frames of different geometry differ by `u8::MAX`.
    pub fn max_sample_diff(&self, other: &Nv12Frame) -> (u8, String) {
        let (a, b) = (self, other);
        if (a.width, a.height, a.stride) != (b.width, b.height, b.stride) {
            return (
                u8::MAX,
                format!("geometry {}x{}/{} vs {}x{}/{}", a.width, a.height, a.stride, b.width, b.height, b.stride),
            );
        }
        let (pw, ph) = (a.padded_width() as usize, a.padded_height() as usize);
        let mut worst = (0u8, String::new());
        for (plane, rows, pa, pb) in [("Y", ph, &a.y, &b.y), ("UV", ph / 2, &a.uv, &b.uv)] {
            for y in 0..rows {
                for x in 0..pw {
                    let (va, vb) = (pa[y * a.stride + x], pb[y * b.stride + x]);
                    if va.abs_diff(vb) > worst.0 {
                        worst = (va.abs_diff(vb), format!("{plane} byte ({x},{y}): {va} vs {vb}"));
                    }
                }
            }
        }
        worst
    }

    /// A black frame of this visible size.
    pub fn new(width: u32, height: u32) -> Nv12Frame {
        let pw = width.next_multiple_of(2) as usize;
        let ph = height.next_multiple_of(2) as usize;
        let stride = pw.next_multiple_of(64);
        Nv12Frame { width, height, stride, y: vec![16; stride * ph], uv: vec![128; stride * ph / 2] }
    }

    /// Become a copy of `other`, reusing this frame's allocations (no allocation when sizes match).
    pub fn copy_from(&mut self, other: &Nv12Frame) {
        (self.width, self.height, self.stride) = (other.width, other.height, other.stride);
        self.y.clear();
        self.y.extend_from_slice(&other.y);
        self.uv.clear();
        self.uv.extend_from_slice(&other.uv);
    }

    pub const fn padded_width(&self) -> u32 {
        self.width.next_multiple_of(2)
    }

    pub const fn padded_height(&self) -> u32 {
        self.height.next_multiple_of(2)
    }
}

/// Now on CLOCK_MONOTONIC, the clock compositors stamp presentation times with.
pub fn monotonic_now() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// RGB value at (x, y) in display orientation (y-invert applied) of a mapped frame.
pub fn pixel_rgb(data: &[u8], layout: &FrameLayout, y_invert: bool, x: u32, y: u32) -> Option<[u8; 3]> {
    if x >= layout.width || y >= layout.height {
        return None;
    }
    let row = if y_invert { layout.height - 1 - y } else { y } as usize;
    let bpp = layout.format.bytes_per_pixel();
    let off = row * layout.stride as usize + x as usize * bpp;
    data.get(off..off + bpp).map(|px| layout.format.to_rgb8(px))
}

/// Write a mapped frame as an 8-bit RGB PNG, top row first.
pub fn write_png<W: Write>(
    out: W,
    data: &[u8],
    layout: &FrameLayout,
    y_invert: bool,
) -> Result<(), png::EncodingError> {
    if data.len() < layout.byte_len() {
        return Err(png::EncodingError::IoError(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "frame data is shorter than its layout says",
        )));
    }
    let mut enc = png::Encoder::new(out, layout.width, layout.height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    let bpp = layout.format.bytes_per_pixel();
    let mut rgb = Vec::with_capacity(layout.width as usize * layout.height as usize * 3);
    for y in 0..layout.height as usize {
        let row = if y_invert { layout.height as usize - 1 - y } else { y };
        let start = row * layout.stride as usize;
        let line = &data[start..start + layout.width as usize * bpp];
        for px in line.chunks_exact(bpp) {
            rgb.extend_from_slice(&layout.format.to_rgb8(px));
        }
    }
    writer.write_image_data(&rgb)?;
    writer.finish()
}

/// How a captured buffer must be turned to be upright: an output rotated by the compositor (wl_output
/// transform 90/180/270) hands out its framebuffer in the panel's orientation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rotation {
    #[default]
    None,
    /// Turn the buffer 90° clockwise.
    Cw90,
    Cw180,
    /// Turn the buffer 90° counter-clockwise.
    Cw270,
}

impl Rotation {
    /// The rotation that makes the buffers of an output with this wl_output transform upright (as
    /// `OutputDesc::transform` spells it: "Normal", "_90", "_180", "_270", "Flipped…"); `None` for normal and
    /// for the flipped transforms (streamed as captured).
    pub fn for_output_transform(transform: &str) -> Rotation {
        match transform {
            "_90" => Rotation::Cw90,
            "_180" => Rotation::Cw180,
            "_270" => Rotation::Cw270,
            _ => Rotation::None,
        }
    }

    /// The size of an upright frame from a `w`×`h` buffer.
    pub fn size(self, w: u32, h: u32) -> (u32, u32) {
        match self {
            Rotation::Cw90 | Rotation::Cw270 => (h, w),
            Rotation::None | Rotation::Cw180 => (w, h),
        }
    }
}

/// Turn the frame in `data` (`layout`, rows bottom-up when `y_invert`) by `rotation` into `out` (tight rows,
/// top-down); the layout of the result. Works in 32-pixel tiles so both sides stay in cache.
pub fn rotate(
    data: &[u8],
    layout: &FrameLayout,
    y_invert: bool,
    rotation: Rotation,
    out: &mut Vec<u8>,
) -> std::io::Result<FrameLayout> {
    if data.len() < layout.byte_len() || !layout.is_consistent() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "frame data is shorter than its layout says",
        ));
    }
    let (w, h, bpp) = (layout.width as usize, layout.height as usize, layout.format.bytes_per_pixel());
    let (ow, oh) = rotation.size(layout.width, layout.height);
    let (ow, oh) = (ow as usize, oh as usize);
    out.clear();
    out.resize(ow * oh * bpp, 0);
    let stride = layout.stride as usize;
    const TILE: usize = 32;
    for ty in (0..h).step_by(TILE) {
        for tx in (0..w).step_by(TILE) {
            for y in ty..(ty + TILE).min(h) {
                let sy = if y_invert { h - 1 - y } else { y };
                let row = &data[sy * stride..sy * stride + w * bpp];
                for x in tx..(tx + TILE).min(w) {
                    let (dx, dy) = match rotation {
                        Rotation::None => (x, y),
                        Rotation::Cw90 => (h - 1 - y, x),
                        Rotation::Cw180 => (w - 1 - x, h - 1 - y),
                        Rotation::Cw270 => (y, w - 1 - x),
                    };
                    let d = (dy * ow + dx) * bpp;
                    out[d..d + bpp].copy_from_slice(&row[x * bpp..x * bpp + bpp]);
                }
            }
        }
    }
    Ok(FrameLayout { width: ow as u32, height: oh as u32, stride: (ow * bpp) as u32, format: layout.format })
}

/// Copy a mapped frame into `out` as tightly packed BGRx rows (XRGB8888 little-endian; GStreamer's `BGRx`),
/// top row first. XRGB8888/ARGB8888 rows are copied as they are; other formats go through `to_rgb8`.
pub fn to_bgrx(data: &[u8], layout: &FrameLayout, y_invert: bool, out: &mut Vec<u8>) -> std::io::Result<()> {
    if data.len() < layout.byte_len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "frame data is shorter than its layout says",
        ));
    }
    let (w, h, bpp) = (layout.width as usize, layout.height as usize, layout.format.bytes_per_pixel());
    out.clear();
    out.reserve(w * h * 4);
    for y in 0..h {
        let row = if y_invert { h - 1 - y } else { y };
        let line = &data[row * layout.stride as usize..][..w * bpp];
        match layout.format {
            PixelFormat::Xrgb8888 | PixelFormat::Argb8888 => out.extend_from_slice(line),
            f => {
                for px in line.chunks_exact(bpp) {
                    let [r, g, b] = f.to_rgb8(px);
                    out.extend_from_slice(&[b, g, r, 0xff]);
                }
            }
        }
    }
    Ok(())
}

/// A video codec a viewer receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// H.264 (x264): preferred, every browser with an H.264 decoder.
    H264,
    /// VP8 (libvpx): browsers that offer no usable H.264 (Debian's Firefox).
    Vp8,
}

impl Codec {
    /// Every codec, in order of preference.
    pub const ALL: [Codec; 2] = [Codec::H264, Codec::Vp8];

    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::Vp8 => "vp8",
        }
    }

    /// Position in [`Codec::ALL`] (for per-codec arrays).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The encoder name users see in logs.
    pub fn encoder_name(self) -> &'static str {
        match self {
            Codec::H264 => "x264",
            Codec::Vp8 => "libvpx VP8",
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Codec::H264 => "H.264",
            Codec::Vp8 => "VP8",
        })
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn rotation_turns_a_frame_upright_each_way() {
        // 3x2 frame of one-byte "pixels" would not do: use XRGB8888 with the pixel index in the first byte.
        let layout = FrameLayout { width: 3, height: 2, stride: 16, format: PixelFormat::Xrgb8888 };
        let mut data = vec![0u8; 32];
        for (i, px) in [(0, 0), (1, 1), (2, 2), (4, 3), (5, 4), (6, 5)] {
            data[i * 4] = px;
        }
        let first = |out: &[u8]| out.chunks(4).map(|p| p[0]).collect::<Vec<_>>();
        let mut out = Vec::new();
        // 0 1 2 / 3 4 5
        let l = rotate(&data, &layout, false, Rotation::Cw90, &mut out).expect("rotate");
        assert_eq!((l.width, l.height, l.stride), (2, 3, 8));
        assert_eq!(first(&out), [3, 0, 4, 1, 5, 2]);
        rotate(&data, &layout, false, Rotation::Cw180, &mut out).expect("rotate");
        assert_eq!(first(&out), [5, 4, 3, 2, 1, 0]);
        rotate(&data, &layout, false, Rotation::Cw270, &mut out).expect("rotate");
        assert_eq!(first(&out), [2, 5, 1, 4, 0, 3]);
        // Bottom-up rows are read top-down first.
        rotate(&data, &layout, true, Rotation::None, &mut out).expect("rotate");
        assert_eq!(first(&out), [3, 4, 5, 0, 1, 2]);
        assert!(rotate(&data[..20], &layout, false, Rotation::Cw90, &mut out).is_err());
        assert_eq!(Rotation::for_output_transform("_90"), Rotation::Cw90);
        assert_eq!(Rotation::for_output_transform("Flipped90"), Rotation::None);
    }

    use super::*;

    #[test]
    fn bgrx_export_is_top_down_and_packed_for_every_format() {
        let (w, h) = (3u32, 2u32);
        for fmt in PixelFormat::ALL {
            let bpp = fmt.bytes_per_pixel();
            let stride = w * bpp as u32 + 5;
            let mut data = vec![0u8; (stride * h) as usize];
            // Row 0 red, row 1 blue (in memory order).
            for (row, rgb) in [[255, 0, 0], [0, 0, 255]].into_iter().enumerate() {
                for x in 0..w as usize {
                    fmt.from_rgb8(rgb, &mut data[row * stride as usize + x * bpp..][..bpp]);
                }
            }
            let layout = FrameLayout { width: w, height: h, stride, format: fmt };
            let mut out = Vec::new();
            to_bgrx(&data, &layout, true, &mut out).expect("export");
            assert_eq!(out.len(), (w * h * 4) as usize);
            assert_eq!(&out[..3], &[255, 0, 0], "{fmt}: y_invert puts the blue row first (B,G,R order)");
            assert_eq!(&out[out.len() - 4..out.len() - 1], &[0, 0, 255], "{fmt}");
        }
        let short = FrameLayout { width: 4, height: 4, stride: 16, format: PixelFormat::Xrgb8888 };
        assert!(to_bgrx(&[0; 10], &short, false, &mut Vec::new()).is_err());
    }

    #[test]
    fn every_format_round_trips_primary_colours() {
        for fmt in PixelFormat::ALL {
            for rgb in [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [255, 255, 0]] {
                let mut px = [0u8; 4];
                fmt.from_rgb8(rgb, &mut px);
                assert_eq!(fmt.to_rgb8(&px), rgb, "{fmt:?} {rgb:?}");
            }
        }
    }

    #[test]
    fn xrgb8888_memory_order_is_bgrx() {
        assert_eq!(PixelFormat::Xrgb8888.to_rgb8(&[1, 2, 3, 0]), [3, 2, 1]);
        assert_eq!(PixelFormat::Xbgr8888.to_rgb8(&[1, 2, 3, 0]), [1, 2, 3]);
        assert_eq!(PixelFormat::Rgbx8888.to_rgb8(&[0, 3, 2, 1]), [1, 2, 3]);
        assert_eq!(PixelFormat::Bgrx8888.to_rgb8(&[0, 1, 2, 3]), [1, 2, 3]);
    }

    #[test]
    fn shm_codes_map_both_ways() {
        assert_eq!(PixelFormat::from_wl_shm(0), Some(PixelFormat::Argb8888));
        assert_eq!(PixelFormat::from_wl_shm(1), Some(PixelFormat::Xrgb8888));
        assert_eq!(PixelFormat::from_wl_shm(0x3432_4258), Some(PixelFormat::Xbgr8888)); // XB24
        for f in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_wl_shm(f.wl_shm_code()), Some(f));
            assert_eq!(PixelFormat::from_drm_fourcc(f.drm_fourcc()), Some(f));
        }
        assert_eq!(PixelFormat::from_wl_shm(0x1234_5678), None);
        assert_eq!(PixelFormat::Xrgb8888.fourcc_str(), "XR24");
    }

    #[test]
    fn ten_bit_rounds_to_nearest_eight_bit() {
        // 0x3ff → 255, 0x200 (512) → 128.
        let w: u32 = (0x3ff << 20) | (0x200 << 10);
        assert_eq!(PixelFormat::Xrgb2101010.to_rgb8(&w.to_le_bytes()), [255, 128, 0]);
    }

    #[test]
    fn damage_union_counts_overlap_once() {
        let d = Damage::Rects(vec![Rect::new(0, 0, 10, 10), Rect::new(5, 5, 10, 10)]);
        assert_eq!(d.area(100, 100), 175);
        assert!((Damage::Full.fraction(10, 10) - 1.0).abs() < 1e-9);
        assert!(Damage::Rects(vec![]).is_empty());
        assert_eq!(Damage::Rects(vec![]).area(10, 10), 0);
    }

    #[test]
    fn rect_clip() {
        assert_eq!(Rect::new(90, 90, 20, 20).clip(100, 100), Some(Rect::new(90, 90, 10, 10)));
        assert_eq!(Rect::new(100, 0, 5, 5).clip(100, 100), None);
    }

    #[test]
    fn pixel_lookup_honours_y_invert() {
        let layout = FrameLayout { width: 1, height: 2, stride: 4, format: PixelFormat::Xrgb8888 };
        let data = [0, 0, 255, 0, 255, 0, 0, 0]; // row0 red, row1 blue
        assert_eq!(pixel_rgb(&data, &layout, false, 0, 0), Some([255, 0, 0]));
        assert_eq!(pixel_rgb(&data, &layout, true, 0, 0), Some([0, 0, 255]));
        assert_eq!(pixel_rgb(&data, &layout, false, 1, 0), None);
    }

    #[test]
    fn png_of_frame_decodes_to_same_pixels() {
        let layout = FrameLayout { width: 2, height: 2, stride: 12, format: PixelFormat::Xbgr8888 };
        let mut data = vec![0u8; 24];
        PixelFormat::Xbgr8888.from_rgb8([10, 20, 30], &mut data[0..4]);
        PixelFormat::Xbgr8888.from_rgb8([40, 50, 60], &mut data[16..20]);
        let mut out = Vec::new();
        write_png(&mut out, &data, &layout, true).expect("png");
        let dec = png::Decoder::new(std::io::Cursor::new(out));
        let mut reader = dec.read_info().expect("info");
        let mut buf = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut buf).expect("frame");
        // y-inverted: bottom source row comes first.
        assert_eq!(&buf[3..6], &[40, 50, 60]);
        assert_eq!(&buf[6..9], &[10, 20, 30]);
    }
}

//! The scalar reference RGB → NV12 conversion: slow, allocation-happy and obviously correct. Fast paths are
//! tested against it; production code should use [`super::cpu::CpuConverter`].
//!
//! Definition (BT.709, limited range, 8 bit), with R' = R/255 etc.:
//!
//! * Y  = 16  + 219 · (0.2126 R' + 0.7152 G' + 0.0722 B')
//! * Cb = 128 + 224 · (B' − Y')/1.8556, Cr = 128 + 224 · (R' − Y')/1.5748, where Y' is the unscaled luma
//!   of the **average R, G, B of the 2×2 block** (exact average, no intermediate rounding);
//! * every value is rounded to nearest;
//! * odd sizes: the padded column/row repeats the last visible column/row, both in Y and in the 2×2 average.

use super::{ConvertError, check_source, fits};
use crate::frame::{FrameLayout, Nv12Frame};

const KR: f64 = 0.2126;
const KB: f64 = 0.0722;
const KG: f64 = 1.0 - KR - KB;

/// Unscaled luma (0.0..=1.0) of 8-bit R, G, B given as floats 0..=255.
fn luma(rgb: [f64; 3]) -> f64 {
    (KR * rgb[0] + KG * rgb[1] + KB * rgb[2]) / 255.0
}

fn round_u8(v: f64) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// Limited-range Y of one pixel.
pub(crate) fn y_of(rgb: [u8; 3]) -> u8 {
    round_u8(16.0 + 219.0 * luma(rgb.map(f64::from)))
}

/// Limited-range (Cb, Cr) of an RGB triple given as floats 0..=255 (e.g. a 2×2 average).
pub(crate) fn cbcr_of(rgb: [f64; 3]) -> (u8, u8) {
    let y = luma(rgb);
    let cb = 128.0 + 224.0 * (rgb[2] / 255.0 - y) / (2.0 * (1.0 - KB));
    let cr = 128.0 + 224.0 * (rgb[0] / 255.0 - y) / (2.0 * (1.0 - KR));
    (round_u8(cb), round_u8(cr))
}

/// Convert a whole frame with the scalar definition above. `y_invert` means row 0 in memory is the bottom of
/// the picture. `out` is replaced by a fresh frame if its size does not match the layout.
pub fn reference_to_nv12(
    src: &[u8],
    layout: &FrameLayout,
    y_invert: bool,
    out: &mut Nv12Frame,
) -> Result<(), ConvertError> {
    check_source(src, layout)?;
    if !fits(out, layout) {
        *out = Nv12Frame::new(layout.width, layout.height);
    }
    let (w, h) = (layout.width as usize, layout.height as usize);
    let (pw, ph) = (out.padded_width() as usize, out.padded_height() as usize);
    let bpp = layout.format.bytes_per_pixel();
    let stride = layout.stride as usize;

    // Decode the padded picture in display orientation.
    let mut rgb = Vec::with_capacity(pw * ph);
    for y in 0..ph {
        let row = y.min(h - 1);
        let mem_row = if y_invert { h - 1 - row } else { row };
        for x in 0..pw {
            let off = mem_row * stride + x.min(w - 1) * bpp;
            let px = src.get(off..off + bpp).ok_or(ConvertError::Internal("reference source pixel"))?;
            rgb.push(layout.format.to_rgb8(px));
        }
    }

    let ostride = out.stride;
    for y in 0..ph {
        for x in 0..pw {
            let v = y_of(rgb[y * pw + x]);
            *out.y.get_mut(y * ostride + x).ok_or(ConvertError::Internal("reference y plane"))? = v;
        }
    }
    for by in 0..ph / 2 {
        for bx in 0..pw / 2 {
            let mut sum = [0.0f64; 3];
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let p = rgb[(2 * by + dy) * pw + 2 * bx + dx];
                for (s, c) in sum.iter_mut().zip(p) {
                    *s += f64::from(c);
                }
            }
            let (cb, cr) = cbcr_of(sum.map(|s| s / 4.0));
            let off = by * ostride + 2 * bx;
            let uv = out.uv.get_mut(off..off + 2).ok_or(ConvertError::Internal("reference uv plane"))?;
            uv.copy_from_slice(&[cb, cr]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PixelFormat;

    fn solid(rgb: [u8; 3], fmt: PixelFormat, w: u32, h: u32) -> (Vec<u8>, FrameLayout) {
        let bpp = fmt.bytes_per_pixel();
        let stride = w as usize * bpp + 8;
        let mut data = vec![0u8; stride * h as usize];
        for y in 0..h as usize {
            for x in 0..w as usize {
                fmt.from_rgb8(rgb, &mut data[y * stride + x * bpp..]);
            }
        }
        (data, FrameLayout { width: w, height: h, stride: stride as u32, format: fmt })
    }

    #[test]
    fn known_values() {
        for (rgb, y, u, v) in [([255, 255, 255], 235, 128, 128), ([0, 0, 0], 16, 128, 128), ([255, 0, 0], 63, 102, 240)]
        {
            let (data, layout) = solid(rgb, PixelFormat::Xrgb8888, 3, 3);
            let mut out = Nv12Frame::new(1, 1);
            reference_to_nv12(&data, &layout, false, &mut out).unwrap();
            assert_eq!((out.width, out.height), (3, 3));
            for row in 0..4 {
                assert!(out.y[row * out.stride..][..4].iter().all(|&s| s == y), "{rgb:?} Y");
            }
            for row in 0..2 {
                for px in out.uv[row * out.stride..][..4].chunks(2) {
                    assert_eq!(px, [u, v], "{rgb:?} UV");
                }
            }
        }
    }

    #[test]
    fn short_source_is_an_error() {
        let (data, layout) = solid([1, 2, 3], PixelFormat::Rgb565, 5, 5);
        let mut out = Nv12Frame::new(5, 5);
        assert!(matches!(
            reference_to_nv12(&data[..data.len() - 30], &layout, false, &mut out),
            Err(ConvertError::SourceTooShort { .. })
        ));
    }
}

//! Synthetic content for tests and benchmarks: a desktop-like frame (`synthetic_desktop`) and a reproducible
//! pseudo-random source (`Lcg`). The synthetic capture source and `bench convert|encode` are built on these.

use crate::frame::{FrameLayout, Rect};

/// Deterministic pseudo-random numbers (64-bit LCG, high bits): reproducible content for tests and benches.
#[derive(Debug, Clone)]
pub struct Lcg(pub u64);

impl Lcg {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }

    /// Fill `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u32) -> u32 {
        self.next() % n.max(1)
    }

    /// Overwrite rectangle `r` (display orientation; rows bottom-up in memory when `y_invert`) of a frame with
    /// fresh pseudo-random pixels.
    pub fn scribble(&mut self, data: &mut [u8], layout: &FrameLayout, y_invert: bool, r: Rect) {
        let bpp = layout.format.bytes_per_pixel();
        let Some(r) = r.clip(layout.width, layout.height) else { return };
        for y in r.y..r.y + r.height {
            let mem = if y_invert { layout.height - 1 - y } else { y } as usize;
            let off = mem * layout.stride as usize + r.x as usize * bpp;
            if let Some(row) = data.get_mut(off..off + r.width as usize * bpp) {
                self.fill(row);
            }
        }
    }
}

/// A synthetic desktop-like XRGB8888 frame for encoder tests and benchmarks: a gradient wallpaper, two
/// "windows" with text-like stripes, and a box that moves with `t` (so consecutive frames differ the way a
/// desktop does: mostly static, some motion, sharp edges).
pub fn synthetic_desktop(width: u32, height: u32, t: u32) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let mut out = vec![0u8; w * h * 4];
    let put = |out: &mut [u8], x: usize, y: usize, rgb: [u8; 3]| {
        let o = (y * w + x) * 4;
        out[o..o + 4].copy_from_slice(&[rgb[2], rgb[1], rgb[0], 0xff]);
    };
    for y in 0..h {
        for x in 0..w {
            let r = (x * 255 / w.max(1)) as u8;
            let b = (y * 255 / h.max(1)) as u8;
            put(&mut out, x, y, [r / 2 + 40, 60, b / 2 + 80]);
        }
    }
    // Windows: title bar, white page, lines of "text" (1-pixel strokes in 8x16 cells, ragged line ends).
    for (wi, (wx, wy, ww, wh)) in
        [(w / 10, h / 8, w / 2, h / 2), (w / 2, h / 3, w * 2 / 5, h / 2)].into_iter().enumerate()
    {
        for y in wy..(wy + wh).min(h) {
            for x in wx..(wx + ww).min(w) {
                let (lx, ly) = (x - wx, y - wy);
                let rgb = if ly < 24 {
                    [50, 80, 140]
                } else if glyph_pixel(wi, lx, ly - 24, ww) {
                    [25, 25, 30]
                } else {
                    [250, 250, 248]
                };
                put(&mut out, x, y, rgb);
            }
        }
    }
    // The moving box.
    let side = (h / 6).max(1);
    let bx = (t as usize * 12) % w.saturating_sub(side).max(1);
    let by = h / 2 + ((t as usize * 5) % (h / 3).max(1)).min(h.saturating_sub(side + h / 2));
    for y in by..(by + side).min(h) {
        for x in bx..(bx + side).min(w) {
            put(&mut out, x, y, [230, 120, 30]);
        }
    }
    out
}

/// Whether pixel (x, y) of a text area is ink: 8x16 character cells, each glyph a few 1-pixel strokes
/// picked by a hash of its cell, lines of varying length, so the texture is that of real text.
fn glyph_pixel(seed: usize, x: usize, y: usize, area_width: usize) -> bool {
    let (cx, cy, px, py) = (x / 8, y / 16, x % 8, y % 16);
    let hash = |a: usize| {
        let mut v = (a as u64 ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        v ^= v >> 31;
        v
    };
    let line = hash(seed * 7919 + cy);
    let line_len = (area_width / 8) * (40 + (line % 60) as usize) / 100;
    if cx < 1 || cx >= line_len || line % 9 == 0 {
        return false; // margin, end of line, empty line
    }
    let g = hash(seed * 104_729 + cy * 1000 + cx);
    if g % 6 == 0 || !(1..7).contains(&px) || !(3..13).contains(&py) {
        return false; // space between words, cell padding
    }
    let vertical = |col: usize, bit: u64| px == col && g >> bit & 1 == 1;
    let horizontal = |row: usize, bit: u64| py == row && g >> bit & 1 == 1;
    vertical(1, 8) || vertical(5, 9) || vertical(3, 10) || horizontal(3, 11) || horizontal(7, 12) || horizontal(12, 13)
}

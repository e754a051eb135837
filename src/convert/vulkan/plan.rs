//! Pure planning for the Vulkan converter: which 4×2 pixel blocks a frame's damage covers, which rows must be
//! uploaded and read back, and the shader's push constants for each pixel format. No Vulkan calls here, so all
//! of it is unit tested without a device.

use crate::frame::{PixelFormat, Rect};

/// Pixels per shader invocation horizontally (one u32 of Y per row, one u32 of UV).
pub(crate) const BLOCK_W: u32 = 4;
/// Pixels per shader invocation vertically (one chroma row).
pub(crate) const BLOCK_H: u32 = 2;
/// Workgroup size of `shaders/rgb_to_nv12.comp` (`local_size_x`, `local_size_y`), in blocks.
pub(crate) const GROUP: (u32, u32) = (16, 4);

/// Damage covering at least this share of the frame is converted as one full dispatch (same rule as the CPU
/// converter).
pub const FULL_FRAME_SHARE: f64 = 0.6;

/// A range of blocks, `x0..x1` × `y0..y1` (half-open, in blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocks {
    pub x0: u32,
    pub x1: u32,
    pub y0: u32,
    pub y1: u32,
}

impl Blocks {
    /// Every block of a `width`×`height` frame (the padded even size, and padded further to whole blocks).
    pub fn all(width: u32, height: u32) -> Blocks {
        Blocks { x0: 0, x1: blocks_x(width), y0: 0, y1: blocks_y(height) }
    }

    /// The blocks covering `r` clipped to the frame. The padded column/row of an odd-sized frame is included
    /// whenever the last visible column/row is (a block is 4 wide and starts at a multiple of 4, so it always
    /// covers both pixels of a 2×2 chroma pair).
    pub fn covering(r: Rect, width: u32, height: u32) -> Option<Blocks> {
        let r = r.clip(width, height)?;
        Some(Blocks {
            x0: r.x / BLOCK_W,
            x1: (r.x + r.width).div_ceil(BLOCK_W).min(blocks_x(width)),
            y0: r.y / BLOCK_H,
            y1: (r.y + r.height).div_ceil(BLOCK_H).min(blocks_y(height)),
        })
    }

    pub const fn width(&self) -> u32 {
        self.x1 - self.x0
    }

    pub const fn height(&self) -> u32 {
        self.y1 - self.y0
    }

    /// Workgroups to dispatch for these blocks.
    pub const fn groups(&self) -> (u32, u32) {
        (self.width().div_ceil(GROUP.0), self.height().div_ceil(GROUP.1))
    }
}

/// Blocks across a frame: the padded (even) width in 4-pixel blocks.
pub const fn blocks_x(width: u32) -> u32 {
    width.next_multiple_of(2).div_ceil(BLOCK_W)
}

/// Block rows (= chroma rows) of a frame: the padded (even) height / 2.
pub const fn blocks_y(height: u32) -> u32 {
    height.div_ceil(BLOCK_H)
}

/// Merge block-row ranges `[y0, y1)` into sorted, disjoint ranges, in place (no allocation when `ranges` has
/// capacity). Touching ranges are joined.
pub fn merge_rows(ranges: &mut Vec<(u32, u32)>) {
    ranges.retain(|&(a, b)| a < b);
    ranges.sort_unstable();
    let mut out = 0;
    for i in 0..ranges.len() {
        let (a, b) = ranges[i];
        if out > 0 && a <= ranges[out - 1].1 {
            ranges[out - 1].1 = ranges[out - 1].1.max(b);
        } else {
            ranges[out] = (a, b);
            out += 1;
        }
    }
    ranges.truncate(out);
}

/// The source rows (memory order) that block rows `y0..y1` read: picture rows `2*y0 .. 2*y1` clipped to the
/// visible height (the padded row repeats the last visible one), flipped for `y_invert`. Half-open.
pub fn source_rows(y0: u32, y1: u32, height: u32, y_invert: bool) -> (u32, u32) {
    let first = (y0 * BLOCK_H).min(height);
    let end = (y1 * BLOCK_H).min(height);
    if y_invert { (height - end, height - first) } else { (first, end) }
}

/// How the shader decodes a pixel: `kind` (0: 8-bit channels, 1: 10-bit, 2: 565) and the bit position of red,
/// green and blue in the little-endian pixel word, packed as `r | g << 8 | b << 16`.
pub const fn format_params(format: PixelFormat) -> (u32, u32) {
    const fn pack(r: u32, g: u32, b: u32) -> u32 {
        r | (g << 8) | (b << 16)
    }
    use PixelFormat as F;
    match format {
        F::Xrgb8888 | F::Argb8888 => (0, pack(16, 8, 0)),
        F::Xbgr8888 | F::Abgr8888 => (0, pack(0, 8, 16)),
        F::Rgbx8888 | F::Rgba8888 => (0, pack(24, 16, 8)),
        F::Bgrx8888 | F::Bgra8888 => (0, pack(8, 16, 24)),
        F::Xrgb2101010 | F::Argb2101010 => (1, pack(20, 10, 0)),
        F::Xbgr2101010 | F::Abgr2101010 => (1, pack(0, 10, 20)),
        // RG24: bytes B, G, R; BG24: bytes R, G, B.
        F::Rgb888 => (0, pack(16, 8, 0)),
        F::Bgr888 => (0, pack(0, 8, 16)),
        F::Rgb565 => (2, pack(11, 5, 0)),
        F::Bgr565 => (2, pack(0, 5, 11)),
    }
}

/// The shader's push constants (`Params` in `shaders/rgb_to_nv12.comp`, same order, all u32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct PushConstants {
    pub width: u32,
    pub height: u32,
    pub src_stride: u32,
    pub src_offset: u32,
    pub bpp: u32,
    pub kind: u32,
    pub shifts: u32,
    pub y_invert: u32,
    pub dst_stride: u32,
    pub uv_offset: u32,
    pub block_x0: u32,
    pub block_y0: u32,
    pub block_w: u32,
    pub block_h: u32,
    /// 32-bit words in the bound source buffer (loads never go past it).
    pub src_words: u32,
}

impl PushConstants {
    /// Size in bytes (well under the 128 bytes every Vulkan device offers).
    pub const SIZE: usize = 15 * 4;

    /// The bytes handed to `vkCmdPushConstants` (little-endian, as the GPU reads them).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let words = [
            self.width,
            self.height,
            self.src_stride,
            self.src_offset,
            self.bpp,
            self.kind,
            self.shifts,
            self.y_invert,
            self.dst_stride,
            self.uv_offset,
            self.block_x0,
            self.block_y0,
            self.block_w,
            self.block_h,
            self.src_words,
        ];
        let mut out = [0u8; Self::SIZE];
        for (dst, w) in out.chunks_exact_mut(4).zip(words) {
            dst.copy_from_slice(&w.to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode one pixel the way the shader does (load32, then shifts/kind) and compare with the reference.
    fn shader_decode(format: PixelFormat, px: &[u8]) -> [u8; 3] {
        let mut bytes = [0u8; 4];
        bytes[..px.len()].copy_from_slice(px);
        let w = u32::from_le_bytes(bytes);
        let (kind, shifts) = format_params(format);
        let (rs, gs, bs) = (shifts & 255, (shifts >> 8) & 255, (shifts >> 16) & 255);
        let c = |s: u32, bits: u32| {
            let v = (w >> s) & ((1 << bits) - 1);
            let max = (1 << bits) - 1;
            ((v * 255 + max / 2) / max) as u8
        };
        match kind {
            0 => [c(rs, 8), c(gs, 8), c(bs, 8)],
            1 => [c(rs, 10), c(gs, 10), c(bs, 10)],
            _ => [c(rs, 5), c(gs, 6), c(bs, 5)],
        }
    }

    #[test]
    fn format_params_decode_like_to_rgb8() {
        let mut seed = 0x1234_5678u32;
        for format in PixelFormat::ALL {
            let bpp = format.bytes_per_pixel();
            for _ in 0..2000 {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let px = seed.to_le_bytes();
                assert_eq!(shader_decode(format, &px[..bpp]), format.to_rgb8(&px[..bpp]), "{format:?} {px:?}");
            }
        }
    }

    #[test]
    fn blocks_cover_odd_padding() {
        // 5x3: padded 6x4 → 2 blocks across, 2 block rows.
        assert_eq!(Blocks::all(5, 3), Blocks { x0: 0, x1: 2, y0: 0, y1: 2 });
        // The last visible column (4) and row (2) pull in the padded column 5 and row 3.
        assert_eq!(Blocks::covering(Rect::new(4, 2, 1, 1), 5, 3), Some(Blocks { x0: 1, x1: 2, y0: 1, y1: 2 }));
        assert_eq!(Blocks::covering(Rect::new(0, 0, 1, 1), 1, 1), Some(Blocks { x0: 0, x1: 1, y0: 0, y1: 1 }));
        // 1921x1081: padded 1922x1082 → 481 blocks (the last one half padding), 541 block rows.
        assert_eq!(Blocks::all(1921, 1081), Blocks { x0: 0, x1: 481, y0: 0, y1: 541 });
        assert_eq!(Blocks::covering(Rect::new(1920, 1080, 9, 9), 1921, 1081).map(|b| (b.x0, b.y0)), Some((480, 540)));
        assert_eq!(Blocks::covering(Rect::new(50, 50, 1, 1), 10, 10), None);
        assert_eq!(Blocks::all(33, 17).groups(), (1, 3));
    }

    #[test]
    fn rows_merge_sorted_and_disjoint() {
        let mut v = vec![(5, 9), (0, 2), (2, 3), (8, 12), (20, 20), (15, 16)];
        merge_rows(&mut v);
        assert_eq!(v, [(0, 3), (5, 12), (15, 16)]);
        let mut empty: Vec<(u32, u32)> = vec![];
        merge_rows(&mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn source_rows_flip_and_clip() {
        assert_eq!(source_rows(0, 2, 3, false), (0, 3));
        assert_eq!(source_rows(1, 2, 3, false), (2, 3));
        assert_eq!(source_rows(1, 2, 3, true), (0, 1));
        assert_eq!(source_rows(0, 1, 10, true), (8, 10));
    }

    #[test]
    fn push_constants_are_little_endian_words() {
        let pc = PushConstants { width: 0x0102_0304, block_h: 7, ..Default::default() };
        let b = pc.to_bytes();
        assert_eq!(&b[..4], &[4, 3, 2, 1]);
        assert_eq!(&b[52..56], &[7, 0, 0, 0]);
    }
}

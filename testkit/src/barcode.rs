//! The clock barcode of the glass-to-glass benchmark: the clock client paints the wall-clock time and a frame
//! counter into the top strip of every frame; the viewer page reads it back from each decoded video frame.
//!
//! Layout (one row of square-ish cells across the top of the frame, `CELLS` cells wide):
//! `[white][black]` calibration cells, then 64 data cells, most significant bit first, then `[black][white]`.
//! A set bit is white. The reader thresholds at the midpoint of the two calibration levels and samples the
//! middle half of each cell, so blocking, ringing and colour-range errors of a low-bitrate H.264 stream do
//! not flip bits. The 64 bits are: time (40 bits, units of 10 µs of CLOCK_REALTIME, wrapping every ~127
//! days; the reader resolves the wrap against its own clock), frame counter (16 bits), and a checksum
//! (8 bits: XOR of the other seven bytes and 0x5A, so an all-black or all-white strip never validates).
//!
//! `web/e2e.html` holds the JavaScript reader; this module is the painter and the reference reader, and the
//! two are tested against each other (`tests/it/e2e.rs`).

/// Data bits in the strip.
pub const DATA_BITS: u32 = 64;
/// Cells across the frame: 2 calibration + data + 2 calibration.
pub const CELLS: u32 = DATA_BITS + 4;
/// Time unit of the painted clock, in microseconds.
pub const TIME_UNIT_US: u64 = 10;
/// Bits of time painted.
pub const TIME_BITS: u32 = 40;

/// What one frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// CLOCK_REALTIME in units of `TIME_UNIT_US`, modulo 2^40.
    pub time: u64,
    /// Frame counter of the clock client, modulo 2^16.
    pub frame: u16,
}

impl Stamp {
    /// A stamp for wall-clock time `unix_us` (microseconds since the Unix epoch).
    pub fn at(unix_us: u64, frame: u64) -> Stamp {
        Stamp { time: (unix_us / TIME_UNIT_US) & ((1 << TIME_BITS) - 1), frame: frame as u16 }
    }

    /// The 64-bit word painted into the strip.
    pub fn word(self) -> u64 {
        let body = (self.time << 24) | (u64::from(self.frame) << 8);
        body | u64::from(checksum(body))
    }

    /// Parse a 64-bit word; `None` when the checksum does not match.
    pub fn from_word(word: u64) -> Option<Stamp> {
        let body = word & !0xff;
        (checksum(body) == (word & 0xff) as u8).then_some(Stamp { time: word >> 24, frame: (body >> 8) as u16 })
    }

    /// The painted time as microseconds since the epoch, unwrapped against `now_us` (the reader's clock):
    /// the candidate closest to `now_us` among the 2^40-unit epochs.
    pub fn unix_us_near(self, now_us: u64) -> u64 {
        let period = (1u64 << TIME_BITS) * TIME_UNIT_US;
        let t = self.time * TIME_UNIT_US;
        let base = now_us - now_us % period;
        [base.wrapping_sub(period), base, base + period]
            .into_iter()
            .map(|b| b.wrapping_add(t))
            .min_by_key(|&c| c.abs_diff(now_us))
            .unwrap_or(t)
    }
}

fn checksum(body: u64) -> u8 {
    body.to_be_bytes()[..7].iter().fold(0x5A, |acc, b| acc ^ b)
}

/// Geometry of the strip in a frame of this width: (cell width, strip height) in pixels.
pub fn strip_geometry(width: u32) -> (u32, u32) {
    let cell = (width / CELLS).max(4);
    (cell, (cell * 2).max(32))
}

/// Colour (white or black) of each cell, left to right.
pub fn cells(stamp: Stamp) -> [bool; CELLS as usize] {
    let word = stamp.word();
    let mut out = [false; CELLS as usize];
    out[0] = true;
    out[CELLS as usize - 1] = true;
    for i in 0..DATA_BITS {
        out[2 + i as usize] = (word >> (DATA_BITS - 1 - i)) & 1 == 1;
    }
    out
}

/// Paint the strip into the top rows of an XRGB8888 (or ARGB8888) canvas. Returns the strip height.
pub fn paint(canvas: &mut [u8], width: u32, height: u32, stamp: Stamp) -> u32 {
    let (cell, strip) = strip_geometry(width);
    let strip = strip.min(height);
    let stride = width as usize * 4;
    let mut row = vec![0u8; stride];
    for (x, px) in row.chunks_exact_mut(4).enumerate() {
        let i = x / cell as usize;
        let white = cells(stamp).get(i).copied().unwrap_or(false);
        let v = if white { 0xff } else { 0x00 };
        px.copy_from_slice(&[v, v, v, 0xff]);
    }
    for line in canvas.chunks_exact_mut(stride).take(strip as usize) {
        line.copy_from_slice(&row);
    }
    strip
}

/// Read the strip from luma samples (`luma(x, y)` → 0..=255, full-range or limited) of a frame `width` wide.
/// This is the reference for the page's reader: same sampling, same threshold.
pub fn read(width: u32, luma: impl Fn(u32, u32) -> u8) -> Option<Stamp> {
    let (cell, strip) = strip_geometry(width);
    let y = strip / 2;
    let sample = |i: u32| -> u32 {
        let x0 = i * cell + cell / 4;
        let x1 = (i * cell + cell * 3 / 4).max(x0 + 1);
        let n = x1 - x0;
        (x0..x1).map(|x| u32::from(luma(x, y))).sum::<u32>() / n
    };
    let (white, black) = (sample(0), sample(1));
    if white <= black + 32 {
        return None;
    }
    let threshold = (white + black) / 2;
    let mut word = 0u64;
    for i in 0..DATA_BITS {
        word = (word << 1) | u64::from(sample(2 + i) > threshold);
    }
    Stamp::from_word(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_round_trips_and_checksum_rejects_noise() {
        let s = Stamp::at(1_764_000_000_123_456, 70_000);
        assert_eq!(Stamp::from_word(s.word()), Some(s));
        assert_eq!(s.frame, (70_000u64 % 65_536) as u16);
        assert_eq!(Stamp::from_word(s.word() ^ (1 << 40)), None, "one flipped bit");
        assert_eq!(Stamp::from_word(0), None, "all black");
        assert_eq!(Stamp::from_word(u64::MAX), None, "all white");
    }

    #[test]
    fn time_unwraps_against_the_readers_clock() {
        let now = 1_764_000_000_000_000u64;
        for painted in [now - 35_000, now - 10, now + 20] {
            let s = Stamp::at(painted, 1);
            assert_eq!(s.unix_us_near(now), painted - painted % TIME_UNIT_US);
        }
        // Across a wrap of the 40-bit counter.
        let period = (1u64 << TIME_BITS) * TIME_UNIT_US;
        let wrap = (now / period + 1) * period;
        let s = Stamp::at(wrap - 30, 2);
        assert_eq!(s.unix_us_near(wrap + 5_000), wrap - 30);
    }

    #[test]
    fn painted_strip_reads_back_at_every_size() {
        for (w, h) in [(640, 480), (1280, 720), (1920, 1080), (3840, 2160), (300, 40)] {
            let mut canvas = vec![0x40u8; (w * h * 4) as usize];
            let stamp = Stamp::at(1_764_000_000_987_650 + u64::from(w), u64::from(h));
            let strip = paint(&mut canvas, w, h, stamp);
            assert!(strip >= 32.min(h));
            let luma = |x: u32, y: u32| canvas[((y * w + x) * 4) as usize];
            assert_eq!(read(w, luma), Some(stamp), "{w}x{h}");
        }
    }

    #[test]
    fn survives_limited_range_and_noise() {
        let (w, h) = (1280u32, 64u32);
        let mut canvas = vec![0u8; (w * h * 4) as usize];
        let stamp = Stamp::at(1_764_000_000_000_000, 9);
        paint(&mut canvas, w, h, stamp);
        // Limited range (16..235) plus ±30 of deterministic noise.
        let luma = |x: u32, y: u32| {
            let v = f64::from(canvas[((y * w + x) * 4) as usize]);
            let noise = ((x * 7919 + y * 104_729) % 61) as f64 - 30.0;
            (16.0 + v * 219.0 / 255.0 + noise).clamp(0.0, 255.0) as u8
        };
        assert_eq!(read(w, luma), Some(stamp));
        assert_eq!(read(w, |_, _| 128), None, "a flat frame has no barcode");
    }
}

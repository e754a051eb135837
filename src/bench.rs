//! `wl-webrtc bench`: in-process timings of the CPU stages on synthetic desktop frames (criterion benches
//! under `benches/` are the reference; this is the quick check a user runs on their own machine).

use std::time::Instant;

use serde::Serialize;

use crate::convert::Converter;
use crate::encode::x264::X264Encoder;
use crate::encode::{Encoder, EncoderSettings, Profile, RateControl};
use crate::frame::{Damage, FrameLayout, Nv12Frame, PixelFormat};
use crate::metrics::percentile;
use crate::pattern::synthetic_desktop;

/// One measured case.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub stage: &'static str,
    pub case: String,
    pub width: u32,
    pub height: u32,
    pub frames: usize,
    pub p50_ms: f64,
    pub mean_ms: f64,
}

fn row(stage: &'static str, case: String, w: u32, h: u32, ms: &[f64]) -> BenchRow {
    BenchRow {
        stage,
        case,
        width: w,
        height: h,
        frames: ms.len(),
        p50_ms: percentile(ms, 50.0).unwrap_or(0.0),
        mean_ms: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
    }
}

/// XRGB8888 source frames re-encoded as `format`.
fn source(w: u32, h: u32, format: PixelFormat, t: u32) -> (Vec<u8>, FrameLayout) {
    let xrgb = synthetic_desktop(w, h, t);
    let bpp = format.bytes_per_pixel();
    let mut out = vec![0u8; (w * h) as usize * bpp];
    for (src, dst) in xrgb.chunks_exact(4).zip(out.chunks_exact_mut(bpp)) {
        format.from_rgb8(PixelFormat::Xrgb8888.to_rgb8(src), dst);
    }
    (out, FrameLayout { width: w, height: h, stride: w * bpp as u32, format })
}

/// Full-frame conversion time per format.
pub fn convert(w: u32, h: u32, frames: usize) -> Result<Vec<BenchRow>, crate::convert::ConvertError> {
    let mut rows = Vec::new();
    for format in [PixelFormat::Xrgb8888, PixelFormat::Xbgr8888, PixelFormat::Argb8888, PixelFormat::Xrgb2101010] {
        let (src, layout) = source(w, h, format, 0);
        let mut conv = Converter::cpu();
        let mut out = Nv12Frame::new(w, h);
        conv.convert(&src, &layout, false, &Damage::Full, &mut out)?; // warm-up
        let mut ms = Vec::with_capacity(frames);
        for _ in 0..frames {
            let t = Instant::now();
            conv.convert(&src, &layout, false, &Damage::Full, &mut out)?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        rows.push(row("convert", format!("cpu {format}"), w, h, &ms));
    }
    Ok(rows)
}

/// Encode time per frame of a moving synthetic desktop at the automatic bitrate.
pub fn encode(w: u32, h: u32, frames: usize, fps: u32) -> Result<BenchRow, crate::media::MediaError> {
    let layout = FrameLayout { width: w, height: h, stride: w * 4, format: PixelFormat::Xrgb8888 };
    let mut conv = Converter::cpu();
    let pictures: Vec<Nv12Frame> = (0..frames.min(60))
        .map(|t| {
            let mut nv12 = Nv12Frame::new(w, h);
            conv.convert(&synthetic_desktop(w, h, t as u32), &layout, false, &Damage::Full, &mut nv12).map(|()| nv12)
        })
        .collect::<Result<_, _>>()?;
    let mut enc = X264Encoder::new(EncoderSettings {
        width: w,
        height: h,
        fps,
        bitrate_kbps: EncoderSettings::auto_bitrate_kbps(w, h, fps),
        rate_control: RateControl::Cbr,
        threads: 0,
        profile: Profile::ConstrainedBaseline,
        intra_refresh: false,
    })?;
    let now = Instant::now();
    let mut ms = Vec::with_capacity(frames);
    for i in 0..frames {
        let t = Instant::now();
        enc.encode(&pictures[i % pictures.len()], now, false)?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(row("encode", "x264 ultrafast/zerolatency".into(), w, h, &ms))
}

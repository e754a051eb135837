//! Encoded streams checked by a real decoder: Debian's ffmpeg/ffprobe.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::pattern::PatternKind;
use wl_webrtc::convert::cpu::CpuConverter;
use wl_webrtc::encode::x264::X264Encoder;
use wl_webrtc::encode::{Encoder, EncoderSettings, Profile, RateControl};
use wl_webrtc::frame::{Damage, FrameLayout, Nv12Frame, PixelFormat};
use wl_webrtc::synthetic::synthetic_desktop;

use crate::support::{Fixture, assert_no_panic, output_within};

pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("wl-webrtc-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP").is_none() {
            std::fs::remove_dir_all(&self.0).ok();
        }
    }
}

/// ffprobe's view of an H.264 elementary stream: (decoded frame count, width, height, profile).
pub(crate) fn probe(path: &Path) -> (u64, u64, u64, String) {
    let out = output_within(
        {
            let mut c = Command::new("ffprobe");
            c.args(["-v", "error", "-count_frames", "-select_streams", "v:0", "-of", "json", "-show_streams"])
                .arg(path);
            c
        },
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "ffprobe failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let s = &v["streams"][0];
    let num = |k: &str| s[k].as_u64().or_else(|| s[k].as_str().and_then(|t| t.parse().ok())).unwrap_or(0);
    (num("nb_read_frames"), num("width"), num("height"), s["profile"].as_str().unwrap_or("").to_owned())
}

pub(crate) fn write_tight_nv12(out: &mut Vec<u8>, f: &Nv12Frame) {
    let (w, h) = (f.padded_width() as usize, f.padded_height() as usize);
    for row in f.y.chunks(f.stride).take(h) {
        out.extend_from_slice(&row[..w]);
    }
    for row in f.uv.chunks(f.stride).take(h / 2) {
        out.extend_from_slice(&row[..w]);
    }
}

#[test]
fn ffmpeg_decodes_our_1080p_stream_with_high_psnr() {
    let dir = TempDir::new("psnr");
    let (w, h, n) = (1920u32, 1080u32, 120usize);
    let settings = EncoderSettings {
        width: w,
        height: h,
        fps: 60,
        bitrate_kbps: EncoderSettings::auto_bitrate_kbps(w, h, 60),
        rate_control: RateControl::Cbr,
        threads: 0,
        profile: Profile::ConstrainedBaseline,
        intra_refresh: false,
    };
    let mut enc = X264Encoder::new(settings).expect("open x264");
    let mut conv = CpuConverter::new();
    let layout = FrameLayout { width: w, height: h, stride: w * 4, format: PixelFormat::Xrgb8888 };
    let (mut stream, mut raw) = (Vec::new(), Vec::new());
    let mut nv12 = Nv12Frame::new(w, h);
    for t in 0..n {
        let rgb = synthetic_desktop(w, h, t as u32);
        conv.convert(&rgb, &layout, false, &Damage::Full, &mut nv12).expect("convert");
        write_tight_nv12(&mut raw, &nv12);
        stream.extend_from_slice(&enc.encode(&nv12, Instant::now(), false).expect("encode").data);
    }
    let h264 = dir.0.join("out.h264");
    let yuv = dir.0.join("src.yuv");
    std::fs::write(&h264, &stream).expect("write h264");
    std::fs::write(&yuv, &raw).expect("write yuv");

    let (frames, pw, ph, profile) = probe(&h264);
    assert_eq!((frames, pw, ph), (n as u64, 1920, 1080));
    assert_eq!(profile, "Constrained Baseline");

    // Decode with ffmpeg and pair frames by index (ffmpeg's psnr filter pairs by timestamp, and a raw input
    // has none that match the stream's VUI timing).
    let decoded = dir.0.join("dec.yuv");
    let out = output_within(
        {
            let mut c = Command::new("ffmpeg");
            c.args(["-v", "error", "-i"]).arg(&h264).args(["-f", "rawvideo", "-pix_fmt", "nv12", "-y"]).arg(&decoded);
            c
        },
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "ffmpeg decode failed: {}", String::from_utf8_lossy(&out.stderr));
    let decoded = std::fs::read(&decoded).expect("decoded frames");
    let frame_len = (w * h * 3 / 2) as usize;
    assert_eq!(decoded.len(), frame_len * n, "ffmpeg decoded every frame at 1920x1080");
    let psnr: Vec<f64> = decoded.chunks(frame_len).zip(raw.chunks(frame_len)).map(|(d, s)| psnr_db(d, s)).collect();
    let mean = psnr.iter().sum::<f64>() / psnr.len() as f64;
    let last_second = &psnr[n - 60..];
    let steady = last_second.iter().sum::<f64>() / last_second.len() as f64;
    eprintln!(
        "PSNR per frame (dB): first {:.1}, frame 10 {:.1}, frame 30 {:.1}, mean {mean:.2}, last second {steady:.2}",
        psnr[0], psnr[10], psnr[30]
    );
    // x264's "PSNR Mean": the mean of per-frame PSNR over the whole stream, IDR included.
    assert!(mean > 35.0, "mean PSNR {mean:.2} dB at {} kbit/s: {psnr:?}", settings.bitrate_kbps);
    assert!(steady > 35.0, "steady-state PSNR {steady:.2} dB");
}

/// PSNR of two 8-bit pictures (all planes, weighted by sample count).
fn psnr_db(a: &[u8], b: &[u8]) -> f64 {
    let se: f64 = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    let mse = se / a.len() as f64;
    if mse == 0.0 { 99.0 } else { 10.0 * (255.0f64 * 255.0 / mse).log10() }
}

#[test]
fn odd_sized_stream_decodes_at_the_padded_even_size() {
    let dir = TempDir::new("odd");
    let (w, h) = (641u32, 481u32);
    let mut enc = X264Encoder::new(EncoderSettings {
        width: w,
        height: h,
        fps: 30,
        bitrate_kbps: 2000,
        rate_control: RateControl::Vbr,
        threads: 1,
        profile: Profile::ConstrainedBaseline,
        intra_refresh: false,
    })
    .expect("open");
    let mut conv = CpuConverter::new();
    let layout = FrameLayout { width: w, height: h, stride: w * 4, format: PixelFormat::Xrgb8888 };
    let mut nv12 = Nv12Frame::new(w, h);
    let mut stream = Vec::new();
    for t in 0..5 {
        conv.convert(&synthetic_desktop(w, h, t), &layout, false, &Damage::Full, &mut nv12).expect("convert");
        stream.extend_from_slice(&enc.encode(&nv12, Instant::now(), false).expect("encode").data);
    }
    let path = dir.0.join("odd.h264");
    std::fs::write(&path, &stream).expect("write");
    // 4:2:0 H.264 crops in 2-pixel units: the odd column/row is kept, repeated, not cut off.
    assert_eq!(probe(&path), (5, 642, 482, "Constrained Baseline".to_owned()));
}

#[test]
fn capture_encode_writes_a_stream_ffmpeg_decodes() {
    let dir = TempDir::new("cli-encode");
    let mut f = Fixture::start(1280, 720, 60);
    f.spawn_pattern(PatternKind::MovingBar, None);
    f.wait_for_pattern(1280, 720);
    let path = dir.0.join("cap.h264");
    let out = output_within(
        f.cli(&["capture", "--frames", "30", "--json", "--encode", path.to_str().expect("utf-8")]),
        Duration::from_secs(60),
    );
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["encoded_frames"].as_u64(), Some(30), "{r}");
    assert_eq!(probe(&path), (30, 1280, 720, "Constrained Baseline".to_owned()));
}

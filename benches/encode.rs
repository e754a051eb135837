//! Encode benchmarks: our x264 wrapper on pre-made NV12 frames at 1080p and 4K (criterion), and, side by side
//! in the same run, the x264 CLI (`x264 --preset ultrafast --tune zerolatency`) on the very same frames with
//! the same rate control and threads. The side-by-side table is printed first and written to
//! `target/bench-encode.md`.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use wl_webrtc::convert::cpu::CpuConverter;
use wl_webrtc::encode::x264::X264Encoder;
use wl_webrtc::encode::{Encoder, EncoderSettings, Profile, RateControl};
use wl_webrtc::frame::{Damage, FrameLayout, Nv12Frame, PixelFormat};
use wl_webrtc::synthetic::synthetic_desktop;

const SIZES: [(&str, u32, u32, usize); 2] = [("1080p", 1920, 1080, 120), ("4K", 3840, 2160, 40)];
const FPS: u32 = 60;

fn frames(w: u32, h: u32, n: usize) -> Vec<Nv12Frame> {
    let layout = FrameLayout { width: w, height: h, stride: w * 4, format: PixelFormat::Xrgb8888 };
    let mut conv = CpuConverter::new();
    // A few distinct desktops, cycled with motion, so x264 sees realistic inter-frame change.
    (0..n)
        .map(|t| {
            let rgb = synthetic_desktop(w, h, t as u32);
            let mut nv12 = Nv12Frame::new(w, h);
            conv.convert(&rgb, &layout, false, &Damage::Full, &mut nv12).expect("convert");
            nv12
        })
        .collect()
}

fn settings(w: u32, h: u32) -> EncoderSettings {
    EncoderSettings {
        width: w,
        height: h,
        fps: FPS,
        bitrate_kbps: EncoderSettings::auto_bitrate_kbps(w, h, FPS),
        rate_control: RateControl::Cbr,
        threads: 0,
        profile: Profile::ConstrainedBaseline,
        intra_refresh: false,
    }
}

/// Per-frame encode times of one pass of our encoder over `frames`.
fn ours_per_frame(frames: &[Nv12Frame], s: EncoderSettings) -> Vec<f64> {
    let mut enc = X264Encoder::new(s).expect("open x264");
    let now = Instant::now();
    frames
        .iter()
        .map(|f| {
            let t = Instant::now();
            let out = enc.encode(f, now, false).expect("encode");
            std::hint::black_box(out);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

/// Mean per-frame time the x264 CLI reports for encoding `frames` (its own fps figure: excludes start-up).
fn cli_per_frame(frames: &[Nv12Frame], s: EncoderSettings) -> Option<f64> {
    let dir = std::env::temp_dir().join(format!("wl-webrtc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let yuv = dir.join("in.yuv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&yuv).ok()?);
    for fr in frames {
        let (w, h) = (fr.padded_width() as usize, fr.padded_height() as usize);
        for row in fr.y.chunks(fr.stride).take(h) {
            f.write_all(&row[..w]).ok()?;
        }
        for row in fr.uv.chunks(fr.stride).take(h / 2) {
            f.write_all(&row[..w]).ok()?;
        }
    }
    drop(f);
    let vbv = (s.bitrate_kbps / s.fps).max(1);
    let out = Command::new("x264")
        .args(["--preset", "ultrafast", "--tune", "zerolatency", "--input-csp", "nv12", "--keyint", "infinite"])
        .args(["--profile", "baseline", "--threads", "auto", "--log-level", "info"])
        .args(["--input-res", &format!("{}x{}", s.width, s.height), "--fps", &s.fps.to_string()])
        .args(["--bitrate", &s.bitrate_kbps.to_string(), "--vbv-maxrate", &s.bitrate_kbps.to_string()])
        .args(["--vbv-bufsize", &vbv.to_string(), "-o", "/dev/null"])
        .arg(&yuv)
        .output()
        .ok()?;
    std::fs::remove_dir_all(&dir).ok();
    let text = String::from_utf8_lossy(&out.stderr);
    // The summary line "encoded 120 frames, 151.23 fps, 8712.34 kb/s" (not the progress lines before it).
    let summary = text.lines().rev().find(|l| l.starts_with("encoded "))?;
    let fps: f64 = summary.split("frames, ").nth(1)?.split(" fps").next()?.trim().parse().ok()?;
    Some(1000.0 / fps)
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[(((p / 100.0) * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1]
}

fn side_by_side(all: &[(&str, Vec<Nv12Frame>, EncoderSettings)], write_table: bool) {
    let mut table = String::from(
        "| size | frames | ours p50 ms | ours mean ms | x264 CLI mean ms | ours / CLI (mean) |\n|---|---|---|---|---|---|\n",
    );
    for (name, frames, s) in all {
        // Warm-up pass, then the measured pass (interleaved with the CLI run so both see the same machine).
        ours_per_frame(&frames[..frames.len().min(10)], *s);
        let ours = ours_per_frame(frames, *s);
        let cli = cli_per_frame(frames, *s);
        let mean = ours.iter().sum::<f64>() / ours.len() as f64;
        let cli_s = cli.map_or("x264 CLI missing".to_owned(), |c| format!("{c:.2}"));
        let ratio = cli.map_or("-".to_owned(), |c| format!("{:.3}", mean / c));
        table += &format!(
            "| {name} | {} | {:.2} | {mean:.2} | {cli_s} | {ratio} |\n",
            frames.len(),
            percentile(&ours, 50.0)
        );
    }
    println!("\nEncode, ultrafast/zerolatency, CBR at the automatic bitrate, threads auto:\n{table}");
    if write_table {
        let _ = std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-encode.md"), &table);
    }
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test --all-targets` this is a quick smoke run on small frames.
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes: &[(&str, u32, u32, usize)] = if bench { &SIZES } else { &[("240p-smoke", 320, 240, 8)] };
    let all: Vec<_> = sizes.iter().map(|&(name, w, h, n)| (name, frames(w, h, n), settings(w, h))).collect();
    side_by_side(&all, bench);

    let mut c = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(8)).configure_from_args();
    let mut g = c.benchmark_group("encode");
    for (name, frames, s) in &all {
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("x264-ours", name), frames, |b, frames| {
            let mut enc = X264Encoder::new(*s).expect("open x264");
            let now = Instant::now();
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % frames.len();
                enc.encode(&frames[i], now, false).expect("encode")
            });
        });
    }
    g.finish();
    c.final_summary();
}

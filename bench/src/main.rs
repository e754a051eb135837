//! `wl-webrtc-bench e2e`: glass-to-glass latency of wl-webrtc, a GStreamer peer and the x264 CLI, side by side
//! on one private desktop (see `wl_webrtc_bench::e2e`). Exit code 2 for bad flags, 1 when the run fails.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use wl_webrtc::config::HeadlessMode;
use wl_webrtc_bench::e2e::{self, E2eOptions, System};

/// Benchmarks of wl-webrtc that need more than the product: Chromium, GStreamer, the x264 CLI.
#[derive(Debug, Parser)]
#[command(name = "wl-webrtc-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Glass-to-glass latency through Chromium: wl-webrtc vs a GStreamer peer and the x264 CLI.
    E2e(E2eArgs),
}

#[derive(Debug, Args)]
struct E2eArgs {
    /// Desktop modes to measure, comma-separated.
    #[arg(long, value_name = "WxH@HZ,...", default_value = "1920x1080@60,3840x2160@30")]
    modes: String,
    /// Seconds measured per system (after the warm-up).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    duration: f64,
    /// Seconds after the first decoded frame that are not measured.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    warmup: f64,
    /// What moves under the clock's barcode (0 nothing, 1 a moving bar, 2 full-screen noise).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    complexity: u8,
    /// Systems to measure, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "wl-webrtc,wl-webrtc-vp8,gstreamer,x264-cli")]
    systems: Vec<System>,
    /// Encoder bitrate for every system, kbit/s (default: wl-webrtc's automatic bitrate for the mode).
    #[arg(long, value_name = "KBPS")]
    bitrate: Option<u32>,
    /// Folder for the markdown table, SVG histogram and JSON.
    #[arg(long, default_value = "results", value_name = "DIR")]
    results: PathBuf,
    /// Print the results as a JSON array (one object per system and mode).
    #[arg(long)]
    json: bool,
    /// The wl-webrtc binary under test (default: the one next to this program).
    #[arg(long, value_name = "FILE", env = "WL_WEBRTC_BIN")]
    server_bin: Option<PathBuf>,
    /// Measure through an impaired link (loss, delay, jitter, rate, blackouts; e.g.
    /// "loss=2%,delay=20ms,jitter=5ms,rate=6mbit"): the systems on one side, Chromium on the other.
    #[arg(long, value_name = "SPEC")]
    link: Option<testkit::impair::LinkSpec>,
    /// Stamp the clock this many ms in the past: the harness must measure that much more (its self-check).
    #[arg(long, default_value_t = 0, value_name = "MS", hide = true)]
    clock_lag_ms: u32,
}

/// `name` next to this program (how `cargo build --workspace` lays binaries out).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let path = exe.parent().unwrap_or(Path::new(".")).join(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found (build the workspace: cargo build --release --workspace)",
        path.display()
    );
    Ok(path)
}

fn run(a: &E2eArgs) -> anyhow::Result<()> {
    let modes = a
        .modes
        .split(',')
        .map(|m| HeadlessMode::parse(m.trim()).map_err(|e| anyhow::anyhow!("--modes: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !(a.duration.is_finite() && a.duration > 0.0 && a.warmup.is_finite() && a.warmup >= 0.0) {
        anyhow::bail!("--duration must be positive and --warmup not negative");
    }
    let opts = E2eOptions {
        modes,
        duration_s: a.duration,
        warmup_s: a.warmup,
        complexity: a.complexity,
        systems: a.systems.clone(),
        bitrate_kbps: a.bitrate,
        clock_lag_ms: a.clock_lag_ms,
        link: a.link.clone(),
        server_bin: match &a.server_bin {
            Some(p) => p.clone(),
            None => sibling("wl-webrtc")?,
        },
        pattern_bin: sibling("wl-webrtc-test-pattern")?,
        results: a.results.clone(),
    };
    let stop = wl_webrtc::app::shutdown_flag()?;
    let results = e2e::run(&opts, &stop)?;
    let md = e2e::write_results(&opts.results, &opts, &results)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}{}", e2e::table(&results), e2e::stages_table(&results));
        println!("\nwritten: {} (+ e2e-latest.svg, e2e-latest.json)", md.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let What::E2e(a) = &cli.what;
    match run(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wl-webrtc-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

//! `wl-webrtc-test-pattern`: a Wayland client that covers an output with a known pattern (see
//! `testkit::pattern`), for tests, demos and the glass-to-glass harness. Exits 0 on SIGINT/SIGTERM/SIGHUP or
//! when the compositor closes it, 1 with a message on any error.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Parser;
use testkit::pattern::{PatternKind, PatternOptions};

/// Paint a known test pattern on an output of the Wayland session ($WAYLAND_DISPLAY).
#[derive(Debug, Parser)]
#[command(name = "wl-webrtc-test-pattern", version, about)]
struct Args {
    /// What to paint.
    #[arg(long, value_enum, default_value_t = PatternKind::Quadrants)]
    pattern: PatternKind,
    /// Output to cover, by name (default: the first).
    #[arg(long, value_name = "NAME")]
    output: Option<String>,
    /// For `--pattern clock`: what moves under the barcode. 0 = nothing (only the barcode strip changes),
    /// 1 = the moving bar, 2 = full-screen noise (the encoder's worst case).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    complexity: u8,
    /// For `--pattern clock`: stamp frames this many milliseconds in the past (a latency harness must then
    /// measure that much more: its self-check).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    clock_lag_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("wl-webrtc-test-pattern: cannot install a signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    let opts = PatternOptions {
        kind: args.pattern,
        output: args.output,
        complexity: args.complexity,
        clock_lag: Duration::from_millis(args.clock_lag_ms),
    };
    let run = wl_webrtc::capture::wayland::display_from_env()
        .map_err(anyhow::Error::from)
        .and_then(|socket| testkit::pattern::run(&socket, &opts, &stop));
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wl-webrtc-test-pattern: {e:#}");
            ExitCode::FAILURE
        }
    }
}

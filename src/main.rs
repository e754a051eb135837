//! Entry point: flags → `Config` → `app::run`; errors become a message on stderr and an exit code
//! (2 for bad flags or configuration, 1 for runtime failures).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if std::env::var_os(wl_webrtc::convert::PROBE_ENV).is_some() {
        // A child that only probes for a Vulkan GPU (so the parent never maps the drivers).
        wl_webrtc::convert::probe_child_main();
        return ExitCode::SUCCESS;
    }
    let cli = wl_webrtc::cli::Cli::parse();
    let cfg = match cli.global.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wl-webrtc: {e}");
            return ExitCode::from(2);
        }
    };
    wl_webrtc::app::init_logging(&cfg);
    match wl_webrtc::app::run(cli, cfg) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wl-webrtc: {e:#}");
            ExitCode::from(1)
        }
    }
}

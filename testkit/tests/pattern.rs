//! The test-pattern binary against a real headless Sway: it reaches the screen, and it exits promptly and
//! cleanly on SIGTERM and on SIGINT instead of blocking in the Wayland dispatch (it once kept running
//! > 10 min after `kill`).

use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use wl_webrtc::capture::screencopy::ScreencopyCapture;
use wl_webrtc::capture::wayland::WlSession;
use wl_webrtc::config::{DEFAULT_HEADLESS_USER, HeadlessMode};
use wl_webrtc::headless::{HeadlessDesktop, HeadlessOptions};

fn desktop() -> HeadlessDesktop {
    let opts = HeadlessOptions {
        mode: HeadlessMode { width: 320, height: 240, refresh_hz: 60 },
        extra: Vec::new(),
        user: DEFAULT_HEADLESS_USER.to_owned(),
    };
    HeadlessDesktop::start(&opts).expect("start headless sway (run scripts/setup first)")
}

/// The client's exit status, once it exits; panics when it is still running after `limit`.
fn exit_within(desk: &mut HeadlessDesktop, pid: u32, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = desk.try_wait_child(pid) {
            return s;
        }
        assert!(Instant::now() < deadline, "test-pattern still running {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn test_pattern_paints_then_exits_promptly_on_sigterm_and_sigint() {
    for sig in [Signal::TERM, Signal::INT] {
        let mut desk = desktop();
        let mut cmd = desk.command(env!("CARGO_BIN_EXE_wl-webrtc-test-pattern"));
        cmd.args(["--pattern", "moving-bar"]);
        let pid = desk.spawn(cmd).expect("spawn the test-pattern client");
        // On screen: the moving bar keeps damaging frames.
        let mut cap = ScreencopyCapture::new(WlSession::connect(desk.wayland_socket()).expect("connect"), None)
            .expect("screencopy");
        let never = std::sync::atomic::AtomicBool::new(false);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut frames = 0;
        while frames < 5 {
            assert!(Instant::now() < deadline, "the pattern is not animating ({frames} frames in 10 s)");
            frames += usize::from(cap.next_frame(Duration::from_millis(500), &never).expect("capture").is_some());
        }
        kill_process(Pid::from_raw(pid as i32).expect("pid"), sig).expect("signal the client");
        let status = exit_within(&mut desk, pid, Duration::from_secs(3), &format!("3 s after {sig:?}"));
        assert!(status.success(), "test-pattern after {sig:?}: {status}");
    }
}

#[test]
fn test_pattern_refuses_an_unknown_output_with_a_message() {
    let mut desk = desktop();
    let mut cmd = desk.command(env!("CARGO_BIN_EXE_wl-webrtc-test-pattern"));
    cmd.args(["--output", "NOPE-9"]);
    let pid = desk.spawn(cmd).expect("spawn");
    let status = exit_within(&mut desk, pid, Duration::from_secs(10), "with an unknown output");
    assert_eq!(status.code(), Some(1), "{status}");
}

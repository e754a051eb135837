use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wl_webrtc::headless::runtime_dir_prefix;

use crate::support::{assert_no_panic, bin, pattern_bin, processes_with_runtime_dir, wait_output};

/// Start `wl-webrtc --headless ... start -- wl-webrtc-test-pattern` and wait until its desktop runs.
fn start_headless_instance() -> (std::process::Child, String) {
    let child = Command::new(bin())
        .args(["--headless", "640x480", "--listen", "127.0.0.1:0", "start", "--"])
        .arg(pattern_bin())
        .args(["--pattern", "moving-bar"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wl-webrtc --headless");
    let prefix = format!("/tmp/{}", runtime_dir_prefix(child.id()));
    let deadline = Instant::now() + Duration::from_secs(15);
    // Sway and the pattern client both run with the private runtime dir.
    while processes_with_runtime_dir(&prefix).len() < 2 {
        assert!(Instant::now() < deadline, "private desktop did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, prefix)
}

fn assert_nothing_left(prefix: &str, check_dirs: bool) {
    // Children are reaped by their parent before it exits; allow a moment for /proc to settle.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_with_runtime_dir(prefix);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    if !check_dirs {
        return;
    }
    let dirs: Vec<_> = std::fs::read_dir("/tmp")
        .expect("/tmp")
        .flatten()
        .filter(|e| format!("/tmp/{}", e.file_name().to_string_lossy()).starts_with(prefix))
        .collect();
    assert!(dirs.is_empty(), "runtime dir left behind: {dirs:?}");
}

/// Send `sig` to a `--headless` instance: it must exit 0 and leave nothing behind.
fn signal_tears_down(sig: rustix::process::Signal) {
    let (child, prefix) = start_headless_instance();
    rustix::process::kill_process(rustix::process::Pid::from_raw(child.id() as i32).expect("pid"), sig)
        .expect("signal");
    let out = wait_output(child, Duration::from_secs(15));
    assert_no_panic(&out);
    assert!(out.status.success(), "exit after {sig:?}: {:?}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert_nothing_left(&prefix, true);
}

#[test]
fn sigint_tears_down_the_private_desktop() {
    signal_tears_down(rustix::process::Signal::INT);
}

#[test]
fn sigterm_exits_0_and_tears_down_the_private_desktop() {
    signal_tears_down(rustix::process::Signal::TERM);
}

#[test]
fn program_exit_ends_the_headless_session() {
    let child = Command::new(bin())
        .args(["--headless", "640x480", "--listen", "127.0.0.1:0", "--", "sh", "-c", "sleep 1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let prefix = format!("/tmp/{}", runtime_dir_prefix(child.id()));
    let out = wait_output(child, Duration::from_secs(20));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("program inside the desktop exited"));
    assert_nothing_left(&prefix, true);
}

#[test]
fn killed_instance_leaves_no_compositor_behind() {
    let (mut child, prefix) = start_headless_instance();
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    // No teardown code ran: the parent-death signal must take sway and the client down.
    assert_nothing_left(&prefix, false);
    // Its runtime dir stays (nothing ran to remove it) until the next private desktop starts, which removes
    // the dirs of dead instances.
    let f = crate::support::Fixture::start(320, 240, 60);
    drop(f);
    assert_nothing_left(&prefix, true);
}

#[test]
fn headless_runs_as_the_caller_when_not_root() {
    // As root, run the binary as the unprivileged account (scripts/setup creates it) to take the non-root
    // path: sway runs as the caller, with a runtime dir of its own.
    let mut cmd = if rustix::process::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", "wlwebrtc", "--regid", "wlwebrtc", "--init-groups", "--"]).arg(bin());
        c
    } else {
        Command::new(bin())
    };
    cmd.args(["--headless", "320x240@30", "list-outputs", "--json"]).env_remove("XDG_RUNTIME_DIR");
    let out = crate::support::output_within(cmd, Duration::from_secs(30));
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((v[0]["width"].as_i64(), v[0]["refresh_mhz"].as_i64()), (Some(320), Some(30000)));
}

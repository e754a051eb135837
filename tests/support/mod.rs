//! Test fixtures: a private headless Sway per test (the product's own `HeadlessDesktop`), the test-pattern
//! client inside it, and helpers to run the `wl-webrtc` binary with a deadline. Everything a fixture starts
//! is killed and waited for when it is dropped.
#![allow(dead_code)]

pub mod pipewire;

pub use testkit::{browser, compositor, http, netns};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use testkit::pattern::PatternKind;
use testkit::pattern::quadrant_colour;
use wl_webrtc::capture::CaptureSession;
use wl_webrtc::capture::screencopy::ScreencopyCapture;
use wl_webrtc::config::{DEFAULT_HEADLESS_USER, HeadlessMode};
use wl_webrtc::frame::{FrameInfo, pixel_rgb};
use wl_webrtc::headless::{HeadlessDesktop, HeadlessOptions};

/// A stop flag that is never set.
pub static NEVER: AtomicBool = AtomicBool::new(false);

/// The wl-webrtc binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wl-webrtc"))
}

/// The test-pattern client (testkit's binary, built on first use: see `testkit::workspace_bin`).
pub fn pattern_bin() -> PathBuf {
    testkit::workspace_bin("wl-webrtc-test-pattern")
}

/// A private headless desktop for one test.
pub struct Fixture {
    pub desk: HeadlessDesktop,
    pub pattern: Option<u32>,
}

impl Fixture {
    /// Headless Sway with HEADLESS-1 at `width`x`height`@`hz`.
    pub fn start(width: u32, height: u32, hz: u32) -> Fixture {
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
        let opts = HeadlessOptions {
            mode: HeadlessMode { width, height, refresh_hz: hz },
            extra: Vec::new(),
            user: DEFAULT_HEADLESS_USER.to_owned(),
        };
        let desk = HeadlessDesktop::start(&opts).expect("start headless sway (run scripts/setup first)");
        Fixture { desk, pattern: None }
    }

    /// Headless Sway with our test pattern on HEADLESS-1, waited for until it is on screen.
    pub fn with_pattern(width: u32, height: u32, kind: PatternKind) -> Fixture {
        let mut f = Fixture::start(width, height, 60);
        f.spawn_pattern(kind, None);
        match kind {
            PatternKind::Noise | PatternKind::Clock => f.wait_for_animation(),
            _ => f.wait_for_pattern(width, height),
        }
        f
    }

    /// Capture until frames keep coming (an animated client is on screen; a static desktop sends one).
    pub fn wait_for_animation(&self) {
        let mut cap = self.capture();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut frames = 0;
        while frames < 10 {
            assert!(Instant::now() < deadline, "no animation on screen within 10 s ({frames} frames)");
            frames += usize::from(cap.next_frame(Duration::from_millis(500), &NEVER).expect("capture").is_some());
        }
    }

    /// Start `wl-webrtc-test-pattern` inside the desktop.
    pub fn spawn_pattern(&mut self, kind: PatternKind, output: Option<&str>) -> u32 {
        let mut cmd = self.desk.command(pattern_bin());
        cmd.args(["--pattern", kind.arg()]).stdout(Stdio::null());
        if let Some(o) = output {
            cmd.args(["--output", o]);
        }
        let pid = self.desk.spawn(cmd).expect("spawn test-pattern");
        self.pattern = Some(pid);
        pid
    }

    /// Capture until the quadrant pattern of this size is on screen (10 s at most).
    pub fn wait_for_pattern(&self, width: u32, height: u32) {
        let mut cap = self.capture();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "test pattern did not appear on screen within 10 s");
            let Some(info) = cap.next_frame(Duration::from_millis(500), &NEVER).expect("capture") else { continue };
            if info.layout.width == width && info.layout.height == height && quadrants_match(&mut cap, &info).is_ok() {
                return;
            }
        }
    }

    pub fn socket(&self) -> &Path {
        self.desk.wayland_socket()
    }

    pub fn session(&self) -> CaptureSession {
        CaptureSession::connect(self.socket()).expect("connect to headless sway")
    }

    /// A screencopy capture of HEADLESS-1.
    pub fn capture(&self) -> ScreencopyCapture {
        ScreencopyCapture::new(self.session(), Some("HEADLESS-1")).expect("screencopy capture")
    }

    /// `wl-webrtc ARGS` pointed at this desktop (absolute WAYLAND_DISPLAY).
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args).env("WAYLAND_DISPLAY", self.socket()).env_remove("RUST_LOG");
        cmd
    }

    pub fn swaymsg(&self, args: &[&str]) -> String {
        self.desk.swaymsg(args).unwrap_or_else(|e| panic!("swaymsg {args:?}: {e}"))
    }
}

/// Check the quadrant colours (centres and corners of each quadrant) of the last captured frame.
pub fn quadrants_match(cap: &mut ScreencopyCapture, info: &FrameInfo) -> Result<(), String> {
    let layout = info.layout;
    cap.with_pixels(|data, stride| quadrants_match_in(data, &wl_webrtc::frame::FrameLayout { stride, ..layout }, info))
        .map_err(|e| e.to_string())?
}

/// Check the quadrant colours of a mapped frame.
pub fn quadrants_match_in(data: &[u8], layout: &wl_webrtc::frame::FrameLayout, info: &FrameInfo) -> Result<(), String> {
    let (w, h) = (info.layout.width, info.layout.height);
    let points = [
        (w / 4, h / 4),
        (3 * w / 4, h / 4),
        (w / 4, 3 * h / 4),
        (3 * w / 4, 3 * h / 4),
        (0, 0),
        (w - 1, 0),
        (0, h - 1),
        (w - 1, h - 1),
    ];
    for (x, y) in points {
        let got = pixel_rgb(data, layout, info.y_invert, x, y);
        let want = quadrant_colour(w, h, x, y);
        if got != Some(want) {
            return Err(format!("pixel ({x},{y}) of {w}x{h}: got {got:?}, want {want:?}"));
        }
    }
    Ok(())
}

/// Run a command to completion, killing it (and failing the test) if it runs past `timeout`.
pub fn output_within(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn wl-webrtc");
    wait_output(child, timeout)
}

/// Wait for a spawned child with piped output, killing it on timeout. The pipes are drained while it runs
/// (a child writing more than a pipe buffer, 64 KiB, would otherwise block forever: fish completions do).
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(status) => break Some(status),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let (stdout, stderr) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    match status {
        Some(status) => Output { status, stdout, stderr },
        None => panic!(
            "command did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// PIDs of live processes whose environment names a runtime dir that starts with `prefix` (e.g. the
/// private desktops of one wl-webrtc process).
pub fn processes_with_runtime_dir(prefix: &str) -> Vec<u32> {
    let needle = format!("XDG_RUNTIME_DIR={prefix}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == std::process::id() {
            continue;
        }
        // Zombies have no environment; a reaped process has no /proc entry.
        let Ok(env) = std::fs::read(entry.path().join("environ")) else { continue };
        if env.split(|&b| b == 0).any(|kv| kv.starts_with(needle.as_bytes())) {
            found.push(pid);
        }
    }
    found
}

/// Stderr must not show a panic.
pub fn assert_no_panic(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "wl-webrtc panicked:\n{err}");
}

//! A headless Chromium process with a private profile, started so that nothing it spawns can outlive it:
//! used by `wl-webrtc-bench e2e` and, with a DevTools client on top, by the browser tests.
//!
//! `Chromium::launch` starts it in a new process group under a tiny reaper process (a forked child that is a
//! child subreaper, so every process Chromium leaves behind, including the crashpad handlers that daemonize
//! into their own sessions, is re-parented to it and waited for), with a fresh temporary profile. Dropping
//! the `Chromium` SIGTERMs the group, SIGKILLs stragglers (group members and anything whose command line names
//! the profile dir; the crashpad handlers do, as their config dir is put inside it), waits for the reaper and
//! deletes the profile.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::BrowserProcess;

/// Flags every browser gets. The WebRTC ones make Chromium gather a plain 127.0.0.1 host candidate in a
/// loopback-only namespace (with a page served from http://127.0.0.1 that holds a live getUserMedia track).
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // These do not stop Debian's build from starting crashpad handlers; `Drop` deals with those.
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
    "--hide-scrollbars",
    "--window-size=1280,720",
];

/// How long `launch_with_devtools` waits for Chromium to publish its DevTools port.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a browser could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("no Chromium found (install chromium, e.g. with scripts/setup, or set WL_WEBRTC_CHROMIUM)")]
    NotFound,
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("Chromium exited before opening its DevTools port; log tail:\n{0}")]
    Exited(String),
    #[error("Chromium did not open its DevTools port within {LAUNCH_TIMEOUT:?}; log tail:\n{0}")]
    NoDevtools(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BrowserError {
    let what = what.into();
    move |source| BrowserError::Io { what, source }
}

/// The Chromium executable: `$WL_WEBRTC_CHROMIUM` (or the tests' `$WL_WEBRTC_TEST_CHROMIUM`), else the first
/// of /usr/bin/chromium, /usr/bin/chromium-browser, /usr/bin/google-chrome that exists.
pub fn chromium_binary() -> Result<PathBuf, BrowserError> {
    if let Some(path) = std::env::var_os("WL_WEBRTC_CHROMIUM").or_else(|| std::env::var_os("WL_WEBRTC_TEST_CHROMIUM")) {
        return Ok(PathBuf::from(path));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or(BrowserError::NotFound)
}

/// A running headless Chromium with a private profile; everything it started is stopped on drop.
#[derive(Debug)]
pub struct Chromium {
    proc: BrowserProcess,
}

impl Chromium {
    /// Start Chromium with `CHROMIUM_FLAGS`, a fresh profile, `extra` flags (after the defaults: for a
    /// repeated switch such as `--disable-features` the last one wins) on `url`.
    pub fn launch(extra: &[&str], url: &str) -> Result<Chromium, BrowserError> {
        let binary = chromium_binary()?;
        let proc = BrowserProcess::prepare("Chromium", "wl-webrtc-chromium", "chromium.log")
            .map_err(io_err("create a profile directory"))?;
        let mut cmd = Command::new(&binary);
        cmd.args(CHROMIUM_FLAGS).arg(format!("--user-data-dir={}", proc.profile.display())).args(extra).arg(url);
        // Crashpad handlers daemonize out of our process group; with the config dir inside the profile (as
        // `spawn` sets it), their command lines name the profile, which is how the shutdown finds them.
        let mut browser = Chromium { proc };
        browser.proc.spawn(cmd).map_err(io_err(format!("spawn {}", binary.display())))?;
        Ok(browser)
    }

    /// `launch` with `--remote-debugging-port=0` on about:blank; returns the browser and its DevTools port on
    /// 127.0.0.1 once Chromium has published it.
    pub fn launch_with_devtools(extra: &[&str]) -> Result<(Chromium, u16), BrowserError> {
        let mut args = vec!["--remote-debugging-port=0"];
        args.extend_from_slice(extra);
        let browser = Chromium::launch(&args, "about:blank")?;
        let file = browser.proc.profile.join("DevToolsActivePort");
        let deadline = Instant::now() + LAUNCH_TIMEOUT;
        loop {
            // "PORT\n/devtools/browser/UUID"; wait for both lines so a half-written file is not misread.
            if let Ok(text) = fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next())
                    && path.starts_with("/devtools/")
                    && let Ok(port) = port.trim().parse::<u16>()
                {
                    return Ok((browser, port));
                }
            }
            if browser.has_exited() {
                return Err(BrowserError::Exited(browser.log_tail(6000)));
            }
            if Instant::now() > deadline {
                return Err(BrowserError::NoDevtools(browser.log_tail(6000)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// PID of the process-group leader: a minimal reaper process whose child is the Chromium browser process.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The temporary profile directory (removed on drop).
    pub fn user_data_dir(&self) -> &Path {
        &self.proc.profile
    }

    /// The last `max_bytes` of Chromium's stdout/stderr.
    pub fn log_tail(&self, max_bytes: usize) -> String {
        self.proc.log_tail(max_bytes)
    }

    /// Live (non-zombie) processes that belong to this browser: its process group, plus anything whose
    /// command line names the profile dir.
    pub fn processes(&self) -> Vec<u32> {
        self.proc.processes()
    }

    /// Whether the reaper has exited, i.e. Chromium and all its processes are gone (without reaping it, so its
    /// pid/pgid stays reserved).
    pub fn has_exited(&self) -> bool {
        self.proc.has_exited()
    }
}

/// State letter and process group of `pid`, from /proc/PID/stat.
fn proc_state_and_pgrp(pid: u32) -> Option<(char, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid pgrp ..."; comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

fn live_pids() -> impl Iterator<Item = u32> {
    let me = std::process::id();
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(move |&pid| pid != me)
        .filter(|&pid| proc_state_and_pgrp(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X'))
}

/// Live (non-zombie) processes in process group `pgid`.
pub fn process_group_members(pgid: i32) -> Vec<u32> {
    live_pids().filter(|&pid| proc_state_and_pgrp(pid).is_some_and(|(_, pgrp)| pgrp == pgid)).collect()
}

/// Live (non-zombie) processes, other than this one, whose command line contains `needle`.
pub fn processes_with_cmdline(needle: &str) -> Vec<u32> {
    live_pids()
        .filter(|&pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .collect()
}

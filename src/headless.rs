//! A private headless desktop: headless Sway with its own runtime dir, one output at a chosen mode, and the
//! programs run inside it, all torn down (and waited for) when it is dropped.
//!
//! Used by `wl-webrtc --headless WxH[@HZ] -- CMD` and by the integration tests (`tests/support`), so both
//! exercise the same code. Sway refuses to run as root, so as root the compositor and every program inside
//! run as an unprivileged account (`headless.user`, created by `scripts/setup`); otherwise as the caller.
//!
//! Every process started here is the leader of its own process group and gets SIGTERM if wl-webrtc dies
//! (PR_SET_PDEATHSIG), so nothing is left behind even when we are killed. Teardown signals whole groups:
//! SIGTERM, a grace period, then SIGKILL, then `wait`. Never call `start` from a short-lived thread: the
//! death signal fires when the *thread* that spawned the child exits.

#![allow(unsafe_code)] // FFI edge: every unsafe block carries a SAFETY note

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::config::HeadlessMode;

/// How long Sway may take to create its sockets.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Grace period between SIGTERM and SIGKILL at teardown.
const TERM_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum HeadlessError {
    #[error(
        "cannot start the private headless desktop: `{program}` was not found ({source}); run scripts/setup to install it"
    )]
    NotInstalled { program: String, source: io::Error },
    #[error(
        "running as root, the private compositor must run as an unprivileged user, but user {0:?} does not exist; \
         run scripts/setup (creates it) or set [headless] user in the config"
    )]
    NoUser(String),
    #[error("cannot prepare the runtime dir {path}: {source}")]
    RuntimeDir { path: PathBuf, source: io::Error },
    #[error("headless sway exited during start-up ({status}); its log ends with:\n{log}")]
    SwayExited { status: ExitStatus, log: String },
    #[error("headless sway did not create its sockets within {0:?}; its log ends with:\n{1}")]
    StartTimeout(Duration, String),
    #[error("swaymsg {args}: {msg}")]
    Swaymsg { args: String, msg: String },
    #[error("cannot run {program:?} inside the headless desktop: {source}")]
    Spawn { program: String, source: io::Error },
}

/// An account to drop to.
#[derive(Debug, Clone)]
struct Account {
    uid: u32,
    gid: u32,
    home: PathBuf,
}

/// Look a user up in /etc/passwd (no NSS: the accounts we create are local).
fn lookup_user(name: &str) -> Option<Account> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[0] != name {
            return None;
        }
        Some(Account { uid: f[2].parse().ok()?, gid: f[3].parse().ok()?, home: PathBuf::from(f[5]) })
    })
}

/// Options for [`HeadlessDesktop::start`].
#[derive(Debug, Clone)]
pub struct HeadlessOptions {
    pub mode: HeadlessMode,
    /// Further outputs (HEADLESS-2, …), side by side to the right of the first.
    pub extra: Vec<HeadlessMode>,
    /// Account to run as when we are root.
    pub user: String,
}

/// A running private desktop. Dropping it tears everything down.
#[derive(Debug)]
pub struct HeadlessDesktop {
    runtime_dir: PathBuf,
    socket: PathBuf,
    ipc_socket: PathBuf,
    account: Option<Account>,
    sway: Option<Child>,
    children: Vec<Child>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl HeadlessDesktop {
    /// Start headless Sway with HEADLESS-1 at `opts.mode`, and wait until it accepts clients.
    pub fn start(opts: &HeadlessOptions) -> Result<HeadlessDesktop, HeadlessError> {
        let account = if rustix::process::geteuid().is_root() {
            Some(lookup_user(&opts.user).ok_or_else(|| HeadlessError::NoUser(opts.user.clone()))?)
        } else {
            None
        };
        let runtime_dir = make_runtime_dir(account.as_ref())?;
        let mut desk = HeadlessDesktop {
            socket: PathBuf::new(),
            ipc_socket: PathBuf::new(),
            runtime_dir,
            account,
            sway: None,
            children: Vec::new(),
        };
        let m = opts.mode;
        let config = desk.runtime_dir.join("sway.config");
        let mut config_text = "# written by wl-webrtc for a private headless desktop\n\
             xwayland disable\n\
             default_border none\n"
            .to_owned();
        // Every output's rule is in the config: HEADLESS-2 and on get theirs when `create_output` makes them.
        let mut x = 0;
        for (i, o) in std::iter::once(&m).chain(&opts.extra).enumerate() {
            config_text += &format!(
                "output HEADLESS-{} mode --custom {}x{}@{}Hz position {x} 0\n",
                i + 1,
                o.width,
                o.height,
                o.refresh_hz
            );
            x += o.width;
        }
        let rt_err = |source| HeadlessError::RuntimeDir { path: desk.runtime_dir.clone(), source };
        fs::write(&config, config_text).map_err(rt_err)?;
        let log = fs::File::create(desk.runtime_dir.join("sway.log")).map_err(rt_err)?;
        if let Some(a) = &desk.account {
            for p in [&config, &desk.runtime_dir.join("sway.log")] {
                std::os::unix::fs::chown(p, Some(a.uid), Some(a.gid)).map_err(rt_err)?;
            }
        }

        desk.spawn_sway(log)?;
        for _ in &opts.extra {
            desk.swaymsg(&["create_output"])?;
        }
        tracing::info!(
            pid = desk.compositor_pid(),
            dir = %desk.runtime_dir.display(),
            mode = %m,
            outputs = 1 + opts.extra.len(),
            "started private headless sway"
        );
        Ok(desk)
    }

    fn spawn_sway(&mut self, log: fs::File) -> Result<(), HeadlessError> {
        let rt_err = |source| HeadlessError::RuntimeDir { path: self.runtime_dir.clone(), source };
        let mut cmd = self.base_command("sway");
        cmd.arg("-c")
            .arg(self.runtime_dir.join("sway.config"))
            .stdin(Stdio::null())
            .stderr(log.try_clone().map_err(rt_err)?)
            .stdout(log);
        cmd.env("WLR_BACKENDS", "headless")
            .env("WLR_LIBINPUT_NO_DEVICES", "1")
            .env("WLR_RENDERER", std::env::var("WLR_RENDERER").unwrap_or_else(|_| "pixman".into()));
        let sway = spawn_guarded(cmd).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => HeadlessError::NotInstalled { program: "sway".into(), source },
            _ => HeadlessError::Spawn { program: "sway".into(), source },
        })?;
        self.sway = Some(sway);
        self.wait_for_sockets()
    }

    /// Start the compositor again in the same runtime dir (same socket path), e.g. after
    /// [`HeadlessDesktop::kill_compositor`]: clients that reconnect by path find it again.
    pub fn restart_compositor(&mut self) -> Result<(), HeadlessError> {
        self.kill_compositor();
        let log = fs::OpenOptions::new()
            .append(true)
            .open(self.runtime_dir.join("sway.log"))
            .map_err(|source| HeadlessError::RuntimeDir { path: self.runtime_dir.clone(), source })?;
        self.spawn_sway(log)
    }

    /// A `Command` with the environment of the desktop (clean env, runtime dir, account) but no Wayland vars.
    fn base_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()))
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            .current_dir("/");
        for var in ["LANG", "LC_ALL", "TERM", "RUST_LOG", "RUST_BACKTRACE"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        match &self.account {
            Some(a) => {
                cmd.uid(a.uid).gid(a.gid).env("HOME", &a.home);
            }
            None => {
                if let Some(h) = std::env::var_os("HOME") {
                    cmd.env("HOME", h);
                }
            }
        }
        cmd
    }

    fn wait_for_sockets(&mut self) -> Result<(), HeadlessError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(sway) = self.sway.as_mut()
                && let Ok(Some(status)) = sway.try_wait()
            {
                return Err(HeadlessError::SwayExited { status, log: self.log_tail() });
            }
            let (mut wl, mut ipc) = (None, None);
            if let Ok(entries) = fs::read_dir(&self.runtime_dir) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with("wayland-") && !name.ends_with(".lock") {
                        wl = Some(e.path());
                    } else if name.starts_with("sway-ipc.") && name.ends_with(".sock") {
                        ipc = Some(e.path());
                    }
                }
            }
            if let (Some(wl), Some(ipc)) = (wl, ipc) {
                self.socket = wl;
                self.ipc_socket = ipc;
                // The IPC socket appears after the Wayland one; one IPC round trip proves sway is serving.
                if self.swaymsg(&["-t", "get_version"]).is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(HeadlessError::StartTimeout(START_TIMEOUT, self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The compositor's Wayland socket (absolute path).
    pub fn wayland_socket(&self) -> &Path {
        &self.socket
    }

    /// The private XDG_RUNTIME_DIR.
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// PID of the compositor.
    pub(crate) fn compositor_pid(&self) -> Option<u32> {
        self.sway.as_ref().map(Child::id)
    }

    /// Run `swaymsg ARGS...` against this desktop and return its stdout.
    pub fn swaymsg(&self, args: &[&str]) -> Result<String, HeadlessError> {
        let err = |msg: String| HeadlessError::Swaymsg { args: args.join(" "), msg };
        let out = Command::new("swaymsg")
            .arg("-s")
            .arg(&self.ipc_socket)
            // `--` so that sway commands with options (`mode --custom`) reach sway, not swaymsg.
            .args(args.first().filter(|a| !a.starts_with('-')).map(|_| "--"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(e.to_string()))?;
        if !out.status.success() {
            let mut msg = String::from_utf8_lossy(&out.stderr).into_owned();
            msg.push_str(&String::from_utf8_lossy(&out.stdout));
            return Err(err(msg.trim().to_owned()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command that will run inside the desktop (as its account, with WAYLAND_DISPLAY and SWAYSOCK set).
    /// Start it with [`HeadlessDesktop::spawn`] so that it is torn down with the desktop.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = self.base_command(program);
        cmd.env("WAYLAND_DISPLAY", self.socket.file_name().unwrap_or_default())
            .env("SWAYSOCK", &self.ipc_socket)
            .env("XDG_SESSION_TYPE", "wayland");
        cmd
    }

    /// Start a program made by [`HeadlessDesktop::command`]; returns its PID. It is killed (with its whole
    /// process group) and waited for when the desktop is dropped.
    pub fn spawn(&mut self, cmd: Command) -> Result<u32, HeadlessError> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = spawn_guarded(cmd).map_err(|source| HeadlessError::Spawn { program, source })?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Exit status of a program started with [`HeadlessDesktop::spawn`], once it has exited.
    pub fn try_wait_child(&mut self, pid: u32) -> Option<ExitStatus> {
        self.children.iter_mut().find(|c| c.id() == pid).and_then(|c| c.try_wait().ok().flatten())
    }

    /// Exit status of the compositor, once it has exited.
    pub fn compositor_exited(&mut self) -> Option<ExitStatus> {
        self.sway.as_mut().and_then(|s| s.try_wait().ok().flatten())
    }

    /// Stop the compositor now (its process group), as if it crashed; the desktop stays usable for teardown.
    pub fn kill_compositor(&mut self) {
        if let Some(sway) = self.sway.take() {
            terminate_group(sway);
        }
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(self.runtime_dir.join("sway.log")) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(2000)));
            let _ = f.read_to_string(&mut text);
        }
        text.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for HeadlessDesktop {
    fn drop(&mut self) {
        // Clients first (they may want to exit cleanly while the compositor still exists), then sway.
        for child in self.children.drain(..).rev() {
            terminate_group(child);
        }
        if let Some(sway) = self.sway.take() {
            terminate_group(sway);
            tracing::debug!("private headless sway stopped");
        }
        if let Err(e) = fs::remove_dir_all(&self.runtime_dir) {
            tracing::warn!(dir = %self.runtime_dir.display(), "cannot remove runtime dir: {e}");
        }
    }
}

/// Spawn as leader of a new process group, with SIGTERM delivered if we die.
pub fn spawn_guarded(mut cmd: Command) -> io::Result<Child> {
    cmd.process_group(0);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which is
    // async-signal-safe and touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| rustix::process::set_parent_process_death_signal(Some(Signal::TERM)).map_err(io::Error::from));
    }
    cmd.spawn()
}

/// SIGTERM the child's process group, wait up to the grace period, then SIGKILL; always reap the child.
pub fn terminate_group(mut child: Child) {
    let Some(pgid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) else {
        let _ = child.kill();
        let _ = child.wait();
        return;
    };
    let _ = rustix::process::kill_process_group(pgid, Signal::TERM);
    let deadline = Instant::now() + TERM_GRACE;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    // Whatever is left of the group (the leader if it ignored SIGTERM, or its children) is killed.
    let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
    let _ = child.wait();
}

fn make_runtime_dir(account: Option<&Account>) -> Result<PathBuf, HeadlessError> {
    // As root the dir lives in /tmp (root's XDG_RUNTIME_DIR is not reachable by the account).
    let base = match account {
        Some(_) => PathBuf::from("/tmp"),
        None => std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp")),
    };
    remove_stale_runtime_dirs(&base);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = base.join(format!("wl-webrtc-{}-{n}", std::process::id()));
    let err = |source| HeadlessError::RuntimeDir { path: dir.clone(), source };
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(err)?;
    }
    fs::DirBuilder::new().mode(0o700).create(&dir).map_err(err)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(err)?;
    if let Some(a) = account {
        std::os::unix::fs::chown(&dir, Some(a.uid), Some(a.gid)).map_err(err)?;
    }
    Ok(dir)
}

/// Remove runtime dirs of wl-webrtc processes that no longer exist (killed before they could clean up).
fn remove_stale_runtime_dirs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("wl-webrtc-").and_then(|r| r.split('-').next()) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::debug!(dir = %e.path().display(), "removing stale runtime dir");
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Prefix of the runtime dirs a process with this PID creates (tests use it to find leftovers).
pub fn runtime_dir_prefix(pid: u32) -> String {
    format!("wl-webrtc-{pid}-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_in_passwd() {
        let root = lookup_user("root").expect("root in /etc/passwd");
        assert_eq!(root.uid, 0);
        assert!(lookup_user("no-such-user-wl-webrtc").is_none());
    }
}

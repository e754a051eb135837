//! Process plumbing both browser drivers share: [`BrowserProcess`] (a private profile, a log, the browser
//! started under the reaper that owns its whole process tree, all of it stopped and removed on drop), waiting
//! without reaping, and fresh profile directories.

use std::fs::{self, File};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

use super::{process_group_members, processes_with_cmdline};

static PROFILE_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Poll `done` every 20 ms until it returns true (returns true) or `timeout` passes (returns false).
pub(crate) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs in the forked child between fork and exec. It becomes a child subreaper and forks again: the new
/// child returns and execs the browser, while this process stays behind as a minimal reaper. Chromium's
/// zygotes, renderers and daemonized crashpad handlers, Firefox's content processes and its double-forked
/// `crashhelper`, are re-parented to it when their parents die, so every one of them is waited for; it exits
/// (with the browser's status) once it has no children left. Without it they would be left as zombies for
/// init.
///
/// Only async-signal-safe calls are allowed here (the calling process is multi-threaded).
pub(crate) fn reaper_pre_exec() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fork in a single-threaded child; both sides only make async-signal-safe calls afterwards.
    let browser = unsafe { libc::fork() };
    if browser < 0 {
        return Err(io::Error::last_os_error());
    }
    if browser == 0 {
        // The browser: the subreaper attribute is not inherited across fork; go on to exec the browser.
        return Ok(());
    }
    // SAFETY: signal/syscall/waitpid/_exit are async-signal-safe and take no pointers we do not own. The
    // reaper ignores the group-wide SIGTERM sent on shutdown, closes every inherited fd except stdio (the
    // exec-error pipe of `Command::spawn` among them, so `spawn` returns when the browser has exec'd), then reaps
    // until no child is left.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        let mut code = 1;
        loop {
            let mut status = 0;
            let pid = libc::waitpid(-1, &mut status, 0);
            if pid == browser {
                code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
            } else if pid < 0 && *libc::__errno_location() != libc::EINTR {
                break; // ECHILD: everything has been reaped
            }
        }
        libc::_exit(code)
    }
}

/// A fresh, uniquely named directory `PREFIX-PID-N.d` under the temp dir. The name ends in `.d` so that no
/// profile path is a prefix of another (cmdline scans match by substring).
pub(crate) fn fresh_profile_dir(prefix: &str) -> io::Result<PathBuf> {
    loop {
        let n = PROFILE_COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}.d", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("create {}: {e}", dir.display()))),
        }
    }
}

/// Whether child `pid` has exited, leaving it waitable (WNOWAIT).
pub(crate) fn exited_nowait(pid: Pid) -> bool {
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    match rustix::process::waitid(WaitId::Pid(pid), options) {
        Ok(status) => status.is_some(),
        // ECHILD: already reaped (or not our child).
        Err(_) => true,
    }
}

/// End a browser started under [`reaper_pre_exec`] (`child` is the reaper: group leader, subreaper of
/// everything the browser starts, exits once all of it is gone and reaped; it is not reaped before the end,
/// so the group id cannot be reused) and remove its profile `profile`, which every one of its processes
/// names on its command line. `name` is for the warning when something survives.
pub(crate) fn shut_down(name: &str, mut child: Child, profile: &Path) {
    let reaper = Pid::from_child(&child);
    let needle = profile.to_string_lossy().into_owned();
    if !exited_nowait(reaper) {
        // Graceful first (both browsers quit on SIGTERM). The reaper ignores it; helpers in their own
        // sessions (Chromium's crashpad, Firefox's crashhelper) exit with the browser.
        let _ = rustix::process::kill_process_group(reaper, Signal::TERM);
        wait_until(Duration::from_secs(5), || exited_nowait(reaper));
    }
    if !exited_nowait(reaper) {
        // Stragglers: SIGKILL them and let the reaper reap them; SIGKILL the reaper only as a last resort.
        wait_until(Duration::from_secs(3), || {
            let mut left = process_group_members(reaper.as_raw_nonzero().get());
            left.extend(processes_with_cmdline(&needle));
            for p in left.into_iter().filter(|&p| p != child.id()).filter_map(|p| Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process(p, Signal::KILL);
            }
            exited_nowait(reaper)
        });
        let _ = rustix::process::kill_process_group(reaper, Signal::KILL);
    }
    let _ = child.wait();
    // Backstop (the reaper was SIGKILLed, or something escaped it): kill what still names the profile.
    let ok = wait_until(Duration::from_secs(3), || {
        let left = processes_with_cmdline(&needle);
        for p in left.iter().filter_map(|&p| Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process(p, Signal::KILL);
        }
        left.is_empty()
    });
    if !ok {
        eprintln!("warning: {name} processes {:?} survived SIGKILL", processes_with_cmdline(&needle));
    }
    let _ = fs::remove_dir_all(profile);
}

/// A browser's private profile, its log, and (once spawned) the reaper it runs under. Dropping it stops every
/// process of the browser ([`shut_down`]) and removes the profile.
#[derive(Debug)]
pub(crate) struct BrowserProcess {
    /// "Chromium", "Firefox": for messages.
    name: &'static str,
    child: Option<Child>,
    pub(crate) profile: PathBuf,
    log_path: PathBuf,
}

impl BrowserProcess {
    /// A fresh profile directory `PREFIX-PID-N.d` with `tmp`, `xdg-config` and `xdg-cache` inside (the
    /// browser's TMPDIR and XDG dirs: its helpers' command lines then name the profile, which is how the
    /// shutdown finds those that leave the process group), and an empty log `log_name` in it.
    pub(crate) fn prepare(name: &'static str, prefix: &str, log_name: &str) -> io::Result<BrowserProcess> {
        let profile = fresh_profile_dir(prefix)?;
        // From here on, an early return drops it, which removes the profile.
        let b = BrowserProcess { name, child: None, log_path: profile.join(log_name), profile };
        for sub in ["tmp", "xdg-config", "xdg-cache"] {
            fs::create_dir_all(b.profile.join(sub))?;
        }
        File::create(&b.log_path)?;
        Ok(b)
    }

    /// Start `cmd` (the browser with its arguments) with the profile's TMPDIR and XDG dirs, stdout and stderr
    /// to the log, in its own process group, under [`reaper_pre_exec`].
    pub(crate) fn spawn(&mut self, mut cmd: Command) -> io::Result<()> {
        let log = File::options().append(true).open(&self.log_path)?;
        let dir = &self.profile;
        cmd.env("TMPDIR", dir.join("tmp"))
            .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
            .env("XDG_CACHE_HOME", dir.join("xdg-cache"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        // SAFETY: `reaper_pre_exec` only makes async-signal-safe calls (prctl, fork, signal, close_range,
        // waitpid, _exit), as required between fork and exec.
        unsafe { cmd.pre_exec(reaper_pre_exec) };
        self.child = Some(cmd.spawn()?);
        Ok(())
    }

    /// PID of the process-group leader: the reaper, whose child is the browser's main process.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The last `max_bytes` of the browser's stdout/stderr.
    pub(crate) fn log_tail(&self, max_bytes: usize) -> String {
        let log = fs::read(&self.log_path).unwrap_or_default();
        String::from_utf8_lossy(&log[log.len().saturating_sub(max_bytes)..]).into_owned()
    }

    /// The whole log so far.
    pub(crate) fn log(&self) -> Vec<u8> {
        fs::read(&self.log_path).unwrap_or_default()
    }

    /// Live (non-zombie) processes that belong to the browser: its process group, plus anything whose
    /// command line names the profile dir.
    pub(crate) fn processes(&self) -> Vec<u32> {
        let mut pids = self.child.as_ref().map(|c| process_group_members(c.id() as i32)).unwrap_or_default();
        pids.extend(processes_with_cmdline(&self.profile.to_string_lossy()));
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Whether the reaper has exited, i.e. the browser and all its processes are gone (without reaping it,
    /// so its pid/pgid stays reserved).
    pub(crate) fn has_exited(&self) -> bool {
        self.child.as_ref().is_none_or(|c| exited_nowait(Pid::from_child(c)))
    }
}

impl Drop for BrowserProcess {
    fn drop(&mut self) {
        match self.child.take() {
            Some(child) => shut_down(self.name, child, &self.profile),
            None => {
                let _ = fs::remove_dir_all(&self.profile);
            }
        }
    }
}

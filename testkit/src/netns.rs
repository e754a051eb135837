//! Private network namespaces: code that runs inside one can only reach 127.0.0.1 (the namespace has nothing
//! but `lo`), so nothing started there can send traffic anywhere else. `bench e2e` measures inside one when it
//! may (root or CAP_SYS_ADMIN); the browser tests always do
//! ([`in_private_netns`], which panics rather than skip when it cannot).
//!
//! Only the thread that calls `unshare(CLONE_NEWNET)` moves to the new namespace; processes and threads it
//! spawns inherit it, and sockets stay in the namespace they were created in.

use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::raw::c_char;

/// Move the calling thread into a new network namespace whose only interface, `lo`, is up.
pub fn enter_private_netns() -> io::Result<()> {
    // SAFETY: unshare only takes a flag word; CLONE_NEWNET moves just this thread to a fresh namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    set_loopback_up()
}

/// Run `f` on a fresh thread that is first moved into a new, private network namespace whose only interface,
/// `lo`, is up. Returns `f`'s result; a panic in `f` is re-raised on the calling thread. Panics (no silent
/// skip) when the namespace cannot be created, e.g. without root/CAP_SYS_ADMIN.
pub fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let thread = std::thread::Builder::new()
        .name("private-netns".to_owned())
        .spawn(move || {
            enter_private_netns().unwrap_or_else(|e| {
                panic!(
                    "cannot create a private network namespace with only `lo` up: {e}. The browser/WebRTC tests \
                     must run as root (or with CAP_SYS_ADMIN)"
                )
            });
            f()
        })
        .expect("spawn private-netns thread");
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Whether `lo` of the calling thread's namespace is up.
pub fn loopback_is_up() -> io::Result<bool> {
    Ok(loopback_flags()? & libc::IFF_UP != 0)
}

/// A datagram socket in the calling thread's namespace, for the interface ioctls.
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call without pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn loopback_request() -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a name array and a union of integers/sockaddrs); all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as c_char;
    }
    req
}

fn loopback_flags() -> io::Result<i32> {
    use std::os::fd::AsRawFd;
    let sock = ioctl_socket()?;
    let mut req = loopback_request();
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes ifru_flags of the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    Ok(i32::from(unsafe { req.ifr_ifru.ifru_flags }))
}

fn set_loopback_up() -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = loopback_flags()?;
    let sock = ioctl_socket()?;
    let mut req = loopback_request();
    req.ifr_ifru.ifru_flags = (flags | libc::IFF_UP) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the name and ifru_flags of the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Names of the network interfaces in the calling thread's network namespace (from
/// `/proc/thread-self/net/dev`; `/proc/self/net` would show the main thread's namespace).
pub fn interfaces() -> Vec<String> {
    let dev = fs::read_to_string("/proc/thread-self/net/dev").expect("read /proc/thread-self/net/dev");
    // Two header lines, then "  name: counters...".
    dev.lines().skip(2).filter_map(|line| line.split_once(':')).map(|(name, _)| name.trim().to_owned()).collect()
}

/// The calling thread's network namespace, as the `net:[inode]` link target of `/proc/thread-self/ns/net`.
pub fn current_netns() -> String {
    fs::read_link("/proc/thread-self/ns/net").expect("read /proc/thread-self/ns/net").to_string_lossy().into_owned()
}

/// Panic unless the calling thread's namespace has exactly one interface, `lo`, and it is up.
pub fn assert_only_loopback() {
    let names = interfaces();
    assert_eq!(names, ["lo"], "expected a private network namespace with only `lo`, found {names:?}");
    assert!(loopback_is_up().expect("read lo flags"), "`lo` is not up in the private network namespace");
}

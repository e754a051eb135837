//! Private network namespaces for tests that start browsers or servers: code that runs inside one can only
//! reach 127.0.0.1 (the namespace has nothing but `lo`), so nothing a test starts can send traffic anywhere
//! else. Needs root or CAP_SYS_ADMIN. The namespace itself is made by the product's `wl_webrtc::netns`.
//!
//! Only the thread that calls `unshare(CLONE_NEWNET)` moves to the new namespace; processes and threads it
//! spawns inherit it, and sockets stay in the namespace they were created in (so a tokio runtime built inside
//! the closure, current_thread or not, is fully inside).

use std::fs;

/// Run `f` on a fresh thread that is first moved into a new, private network namespace whose only interface,
/// `lo`, is up. Returns `f`'s result; a panic in `f` is re-raised on the calling thread. Panics (no silent
/// skip) when the namespace cannot be created, e.g. without root/CAP_SYS_ADMIN.
pub fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let thread = std::thread::Builder::new()
        .name("private-netns".to_owned())
        .spawn(move || {
            wl_webrtc::netns::enter_private_netns().unwrap_or_else(|e| {
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
    assert!(
        wl_webrtc::netns::loopback_is_up().expect("read lo flags"),
        "`lo` is not up in the private network namespace"
    );
}

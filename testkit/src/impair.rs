//! An impaired network link in userspace, for tests and benchmarks on machines without `sch_netem`: two
//! private network namespaces, each with a TUN device (`wlw0`), joined by a forwarder that applies random and
//! burst (Gilbert–Elliott) loss, delay, jitter, reordering, a rate limit with a bounded queue, and timed
//! blackouts, and counts what it did. Side A is 198.18.0.1, side B 198.18.0.2 (RFC 2544's benchmarking range,
//! inside our own namespaces only); nothing else is reachable from either side.
//!
//! ```text
//!  namespace A (server)            forwarder (this process)              namespace B (viewer)
//!  198.18.0.1 wlw0 ── read ──▶ loss · blackout · queue+rate · delay ──▶ write ── wlw0 198.18.0.2
//!                  ◀── write ──                 (the same, B → A)   ◀── read ──
//! ```
//!
//! The spec is a comma-separated list (`LinkSpec::from_str`), the same in tests and `bench e2e --link`:
//! `loss=2%`, `ge=1%/30%` (Gilbert–Elliott: good→bad 1 %, bad→good 30 %, every packet lost while bad),
//! `delay=20ms` (one way), `jitter=5ms` (uniform ±), `reorder=1%` (that share skips the delay queue),
//! `rate=6mbit` (also `kbit`, `bit`), `queue=64kb` (bytes held at the rate limit before tail drop; default
//! 100 ms at the rate), `blackout=10s+1s` (from 10 s after start, 1 s with every packet dropped; repeatable).
//! The spec can be changed while the link runs ([`ImpairedLink::set`]).

use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Address of side A (the server side).
pub const ADDR_A: &str = "198.18.0.1";
/// Address of side B (the viewer side).
pub const ADDR_B: &str = "198.18.0.2";
const DEVICE: &str = "wlw0";
const MTU: usize = 1500;

/// What the link does to packets, in both directions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkSpec {
    /// Independent random loss, 0..=1.
    pub loss: f64,
    /// Gilbert–Elliott burst loss: (good→bad, bad→good) transition probabilities per packet.
    pub burst: Option<(f64, f64)>,
    /// One-way delay.
    pub delay: Duration,
    /// Uniform jitter, ± this much around `delay` (order kept unless `reorder`).
    pub jitter: Duration,
    /// Share of packets sent at once, ahead of the delayed ones.
    pub reorder: f64,
    /// Link rate, bit/s (`None`: unlimited).
    pub rate_bps: Option<u64>,
    /// Bytes the rate limiter may hold before it drops (default: 100 ms at the rate, at least 16 KiB).
    pub queue_bytes: Option<usize>,
    /// (start after the link came up, length): every packet in that window is dropped.
    pub blackouts: Vec<(Duration, Duration)>,
}

fn percent(v: &str) -> Result<f64, String> {
    let n: f64 = v.trim_end_matches('%').parse().map_err(|_| format!("{v:?} is not a percentage"))?;
    if !(0.0..=100.0).contains(&n) {
        return Err(format!("{v:?} is outside 0..=100 %"));
    }
    Ok(n / 100.0)
}

fn duration(v: &str) -> Result<Duration, String> {
    let (num, unit) = v.find(|c: char| c.is_ascii_alphabetic()).map_or((v, "ms"), |i| v.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("{v:?} is not a duration (e.g. 20ms, 1.5s)"))?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        _ => return Err(format!("{v:?}: unit must be us, ms or s")),
    };
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("{v:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn rate(v: &str) -> Result<u64, String> {
    let lower = v.to_ascii_lowercase();
    let (num, mult) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)]
        .iter()
        .find_map(|(u, m)| lower.strip_suffix(u).map(|n| (n.to_owned(), *m)))
        .ok_or_else(|| format!("{v:?}: a rate needs a unit (bit, kbit, mbit, gbit)"))?;
    let n: f64 = num.parse().map_err(|_| format!("{v:?} is not a rate"))?;
    if !(n > 0.0 && n * mult >= 8_000.0) {
        return Err(format!("{v:?}: at least 8 kbit"));
    }
    Ok((n * mult) as u64)
}

fn bytes(v: &str) -> Result<usize, String> {
    let lower = v.to_ascii_lowercase();
    let (num, mult) = [("mb", 1 << 20), ("kb", 1 << 10), ("b", 1)]
        .iter()
        .find_map(|(u, m)| lower.strip_suffix(u).map(|n| (n.to_owned(), *m)))
        .unwrap_or((lower.clone(), 1));
    num.parse::<usize>().map(|n| n * mult).map_err(|_| format!("{v:?} is not a size (e.g. 64kb)"))
}

impl FromStr for LinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<LinkSpec, String> {
        let mut spec = LinkSpec::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (k, v) = item.split_once('=').ok_or_else(|| format!("{item:?}: expected key=value"))?;
            match k {
                "loss" => spec.loss = percent(v)?,
                "ge" => {
                    let (p, r) = v.split_once('/').ok_or_else(|| format!("ge={v}: expected P%/R%"))?;
                    spec.burst = Some((percent(p)?, percent(r)?));
                }
                "delay" => spec.delay = duration(v)?,
                "jitter" => spec.jitter = duration(v)?,
                "reorder" => spec.reorder = percent(v)?,
                "rate" => spec.rate_bps = Some(rate(v)?),
                "queue" => spec.queue_bytes = Some(bytes(v)?),
                "blackout" => {
                    let (at, len) = v.split_once('+').ok_or_else(|| format!("blackout={v}: expected START+LENGTH"))?;
                    spec.blackouts.push((duration(at)?, duration(len)?));
                }
                _ => {
                    return Err(format!(
                        "unknown link parameter {k:?} (loss, ge, delay, jitter, reorder, rate, queue, blackout)"
                    ));
                }
            }
        }
        Ok(spec)
    }
}

impl LinkSpec {
    fn queue_limit(&self) -> usize {
        self.queue_bytes.unwrap_or_else(|| self.rate_bps.map_or(usize::MAX, |r| ((r / 80) as usize).max(16 << 10)))
    }
}

/// What the link did, one direction.
#[derive(Debug, Default)]
pub struct DirectionCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub delivered: AtomicU64,
    pub lost_random: AtomicU64,
    pub lost_burst: AtomicU64,
    pub lost_blackout: AtomicU64,
    /// Tail drops at the rate limiter's queue.
    pub dropped_queue: AtomicU64,
    pub reordered: AtomicU64,
}

/// A plain copy of [`DirectionCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    pub packets: u64,
    pub bytes: u64,
    pub delivered: u64,
    pub lost_random: u64,
    pub lost_burst: u64,
    pub lost_blackout: u64,
    pub dropped_queue: u64,
    pub reordered: u64,
}

impl DirectionCounters {
    pub fn snapshot(&self) -> DirectionStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DirectionStats {
            packets: g(&self.packets),
            bytes: g(&self.bytes),
            delivered: g(&self.delivered),
            lost_random: g(&self.lost_random),
            lost_burst: g(&self.lost_burst),
            lost_blackout: g(&self.lost_blackout),
            dropped_queue: g(&self.dropped_queue),
            reordered: g(&self.reordered),
        }
    }
}

impl DirectionStats {
    pub fn lost(&self) -> u64 {
        self.lost_random + self.lost_burst + self.lost_blackout + self.dropped_queue
    }
}

/// A handle on a network namespace (kept alive by the handle; threads and children enter it).
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
}

impl Netns {
    /// A new namespace with `lo` up.
    pub fn new() -> io::Result<Netns> {
        std::thread::spawn(|| -> io::Result<Netns> {
            crate::netns::enter_private_netns()?;
            let f = File::open("/proc/thread-self/ns/net")?;
            Ok(Netns { fd: OwnedFd::from(f) })
        })
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
    }

    /// Run `f` on a thread inside this namespace (sockets it creates, and processes it starts, live there).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let fd = self.fd.try_clone().expect("dup the namespace fd");
        let t = std::thread::spawn(move || {
            // SAFETY: setns with a valid namespace fd and the matching flag moves only this thread.
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                panic!("setns into the test namespace: {}", io::Error::last_os_error());
            }
            f()
        });
        match t.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Make `cmd` start inside this namespace.
    pub fn command(&self, cmd: &mut Command) {
        let fd = self.fd.try_clone().expect("dup the namespace fd");
        // SAFETY: setns is an async-signal-safe system call taking an fd this closure owns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            })
        };
    }
}

/// `ip ARGS` in the calling thread's namespace.
fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Open `/dev/net/tun` as a TUN device named `DEVICE` (no packet info) in the calling thread's namespace, and
/// give it `addr`/30, up.
fn tun_with_address(addr: &str) -> io::Result<File> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    let file = File::options().read(true).write(true).open("/dev/net/tun")?;
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req =
        IfReq { name: [0; libc::IFNAMSIZ], flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short, _pad: [0; 22] };
    req.name[..DEVICE.len()].copy_from_slice(DEVICE.as_bytes());
    // SAFETY: TUNSETIFF reads an ifreq-sized struct from a valid pointer for the duration of the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // IPv4 only: no router solicitations or MLD reports mixed into what tests count.
    std::fs::write(format!("/proc/sys/net/ipv6/conf/{DEVICE}/disable_ipv6"), "1")?;
    ip(&["addr", "add", &format!("{addr}/30"), "dev", DEVICE])?;
    ip(&["link", "set", DEVICE, "up", "mtu", &MTU.to_string()])?;
    Ok(file)
}

/// Two namespaces joined by the impaired link; the forwarder stops and the namespaces go when it is dropped
/// (once nothing else holds them: processes started there keep theirs).
#[derive(Debug)]
pub struct ImpairedLink {
    pub a: Netns,
    pub b: Netns,
    spec: Arc<Mutex<LinkSpec>>,
    /// Index 0: A → B, 1: B → A.
    counters: [Arc<DirectionCounters>; 2],
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    start: Instant,
}

impl ImpairedLink {
    pub fn new(spec: LinkSpec) -> io::Result<ImpairedLink> {
        let a = Netns::new()?;
        let b = Netns::new()?;
        let tun_a = a.run(|| tun_with_address(ADDR_A))?;
        let tun_b = b.run(|| tun_with_address(ADDR_B))?;
        let spec = Arc::new(Mutex::new(spec));
        let counters = [Arc::new(DirectionCounters::default()), Arc::new(DirectionCounters::default())];
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let mut threads = Vec::new();
        for (i, (from, to)) in [(tun_a.try_clone()?, tun_b.try_clone()?), (tun_b, tun_a)].into_iter().enumerate() {
            let mut fwd = Forwarder {
                from,
                to,
                spec: Arc::clone(&spec),
                counters: Arc::clone(&counters[i]),
                stop: Arc::clone(&stop),
                start,
                rng: Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9)),
                bad: false,
                heap: BinaryHeap::new(),
                queue: VecDeque::new(),
                queued_bytes: 0,
                next_free: start,
                last_release: start,
                seq: 0,
            };
            threads.push(
                std::thread::Builder::new().name(format!("impair-{}", ["a-b", "b-a"][i])).spawn(move || fwd.run())?,
            );
        }
        Ok(ImpairedLink { a, b, spec, counters, stop, threads, start })
    }

    /// Change what the link does from now on (blackout times stay relative to the link's start).
    pub fn set(&self, spec: LinkSpec) {
        *self.spec.lock().unwrap_or_else(|e| e.into_inner()) = spec;
    }

    /// Time since the link came up (what blackout times count from).
    pub fn uptime(&self) -> Duration {
        self.start.elapsed()
    }

    /// A → B (server → viewer) and B → A.
    pub fn stats(&self) -> (DirectionStats, DirectionStats) {
        (self.counters[0].snapshot(), self.counters[1].snapshot())
    }
}

impl Drop for ImpairedLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// xorshift64*: reproducible, good enough for drop decisions.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A packet waiting for its release time (earliest first; `seq` keeps equal times in order).
#[derive(Debug, PartialEq, Eq)]
struct Delayed {
    at: Instant,
    seq: u64,
    data: Vec<u8>,
}

impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// One direction: read, decide, hold, write.
struct Forwarder {
    from: File,
    to: File,
    spec: Arc<Mutex<LinkSpec>>,
    counters: Arc<DirectionCounters>,
    stop: Arc<AtomicBool>,
    start: Instant,
    rng: Rng,
    /// Gilbert–Elliott state.
    bad: bool,
    /// After the rate limiter, waiting out delay + jitter.
    heap: BinaryHeap<Delayed>,
    /// Before the rate limiter: (time it leaves the bottleneck, packet).
    queue: VecDeque<(Instant, Vec<u8>)>,
    queued_bytes: usize,
    /// When the bottleneck is free again.
    next_free: Instant,
    last_release: Instant,
    seq: u64,
}

impl Forwarder {
    fn run(&mut self) {
        let mut buf = vec![0u8; 65_536];
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            self.flush(now);
            let next = self.queue.front().map(|(t, _)| *t).into_iter().chain(self.heap.peek().map(|d| d.at)).min();
            let wait = next
                .map_or(Duration::from_millis(50), |t| t.saturating_duration_since(now))
                .min(Duration::from_millis(50));
            let fd = self.from.as_fd();
            let mut pfd = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
            let ts = rustix::time::Timespec { tv_sec: wait.as_secs() as i64, tv_nsec: i64::from(wait.subsec_nanos()) };
            match rustix::event::poll(&mut pfd, Some(&ts)) {
                Ok(n) if n > 0 => {}
                _ => continue,
            }
            match self.from.read(&mut buf) {
                Ok(n) if n > 0 => self.admit(buf[..n].to_vec(), Instant::now()),
                _ => {}
            }
        }
    }

    fn admit(&mut self, data: Vec<u8>, now: Instant) {
        let spec = self.spec.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let c = &self.counters;
        c.packets.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        let since = now.saturating_duration_since(self.start);
        if spec.blackouts.iter().any(|&(at, len)| since >= at && since < at + len) {
            c.lost_blackout.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some((p, r)) = spec.burst {
            self.bad = if self.bad { self.rng.unit() >= r } else { self.rng.unit() < p };
            if self.bad {
                c.lost_burst.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if spec.loss > 0.0 && self.rng.unit() < spec.loss {
            c.lost_random.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // The bottleneck: serialise at the rate, tail drop beyond the queue limit.
        let leaves = match spec.rate_bps {
            Some(bps) => {
                if self.queued_bytes + data.len() > spec.queue_limit() {
                    c.dropped_queue.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let start = self.next_free.max(now);
                self.next_free = start + Duration::from_secs_f64(data.len() as f64 * 8.0 / bps as f64);
                self.next_free
            }
            None => now,
        };
        self.queued_bytes += data.len();
        self.queue.push_back((leaves, data));
        self.flush(now);
    }

    /// Move packets that left the bottleneck into the delay line, and write those whose time has come.
    fn flush(&mut self, now: Instant) {
        let spec = self.spec.lock().unwrap_or_else(|e| e.into_inner()).clone();
        while self.queue.front().is_some_and(|(t, _)| *t <= now) {
            let Some((left, data)) = self.queue.pop_front() else { break };
            self.queued_bytes -= data.len();
            let jitter =
                if spec.jitter.is_zero() { 0.0 } else { (self.rng.unit() * 2.0 - 1.0) * spec.jitter.as_secs_f64() };
            let mut at = left + Duration::from_secs_f64((spec.delay.as_secs_f64() + jitter).max(0.0));
            if spec.reorder > 0.0 && self.rng.unit() < spec.reorder {
                at = left;
                self.counters.reordered.fetch_add(1, Ordering::Relaxed);
            } else {
                // Jitter without reordering, as a real queue does.
                at = at.max(self.last_release);
                self.last_release = at;
            }
            self.seq += 1;
            self.heap.push(Delayed { at, seq: self.seq, data });
        }
        while self.heap.peek().is_some_and(|d| d.at <= now) {
            let Some(d) = self.heap.pop() else { break };
            if self.to.write(&d.data).is_ok() {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        let s: LinkSpec = "loss=2%,delay=20ms,jitter=5ms,rate=6mbit,blackout=10s+1s,ge=1%/30%,reorder=0.5%,queue=64kb"
            .parse()
            .expect("spec");
        assert_eq!(s.loss, 0.02);
        assert_eq!((s.delay, s.jitter), (Duration::from_millis(20), Duration::from_millis(5)));
        assert_eq!(s.rate_bps, Some(6_000_000));
        assert_eq!(s.blackouts, vec![(Duration::from_secs(10), Duration::from_secs(1))]);
        assert_eq!(s.burst, Some((0.01, 0.3)));
        assert_eq!(s.queue_bytes, Some(64 << 10));
        assert_eq!("".parse::<LinkSpec>(), Ok(LinkSpec::default()));
        for (bad, why) in [
            ("loss=200%", "outside"),
            ("rate=6", "unit"),
            ("delay=5h", "unit"),
            ("speed=1", "unknown link parameter"),
            ("loss", "key=value"),
            ("blackout=10s", "START+LENGTH"),
        ] {
            let e = bad.parse::<LinkSpec>().expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(LinkSpec { rate_bps: Some(8_000_000), ..Default::default() }.queue_limit(), 100_000);
    }
}

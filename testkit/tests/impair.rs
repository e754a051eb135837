//! The impaired link for real: UDP between its two namespaces through the TUN forwarder, with the loss,
//! delay, rate and blackout it was asked for (and nothing reachable beyond it).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use testkit::impair::{ADDR_A, ADDR_B, ImpairedLink, LinkSpec};

fn pair(link: &ImpairedLink) -> (UdpSocket, UdpSocket) {
    let rx = link.b.run(|| UdpSocket::bind((ADDR_B, 9000)).expect("bind in B"));
    let tx = link.a.run(|| UdpSocket::bind((ADDR_A, 0)).expect("bind in A"));
    rx.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    (tx, rx)
}

/// Send `n` datagrams of `size` bytes, each stamped with its send time (µs since `t0`); receive until quiet.
/// Returns (received, one-way delays in ms).
fn send_and_receive(tx: &UdpSocket, rx: &UdpSocket, n: usize, size: usize, gap: Duration) -> (usize, Vec<f64>) {
    let t0 = Instant::now();
    let rx2 = rx.try_clone().expect("clone");
    let receiver = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(len) = rx2.recv(&mut buf) {
            let sent = u64::from_le_bytes(buf[..8].try_into().expect("stamp"));
            got.push((t0.elapsed().as_micros() as u64 - sent) as f64 / 1000.0);
            assert_eq!(len, size);
        }
        got
    });
    let mut pkt = vec![0u8; size];
    for _ in 0..n {
        pkt[..8].copy_from_slice(&(t0.elapsed().as_micros() as u64).to_le_bytes());
        tx.send_to(&pkt, (ADDR_B, 9000)).expect("send");
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    let delays = receiver.join().expect("receiver");
    (delays.len(), delays)
}

#[test]
fn loss_delay_and_jitter_are_applied_and_counted() {
    let link = ImpairedLink::new("loss=10%,delay=30ms,jitter=5ms".parse().expect("spec")).expect("link (needs root)");
    let (tx, rx) = pair(&link);
    let (got, mut delays) = send_and_receive(&tx, &rx, 2000, 200, Duration::from_micros(200));
    let (ab, _) = link.stats();
    eprintln!("A→B {ab:?}");
    assert_eq!(ab.packets, 2000, "{ab:?}");
    assert_eq!(got as u64, ab.delivered, "{ab:?}");
    let loss = 1.0 - got as f64 / 2000.0;
    assert!((0.07..0.13).contains(&loss), "10 % loss asked, {:.1} % seen", loss * 100.0);
    assert_eq!(ab.lost_random, 2000 - got as u64);
    delays.sort_by(f64::total_cmp);
    let (min, p50, max) = (delays[0], delays[delays.len() / 2], delays[delays.len() - 1]);
    eprintln!("one-way delay min {min:.2} p50 {p50:.2} max {max:.2} ms");
    assert!(min >= 24.5 && (28.0..=36.0).contains(&p50), "30 ms ± 5 ms asked: {min} / {p50} / {max}");
}

#[test]
fn the_rate_limit_serialises_and_its_queue_drops_the_excess_and_blackouts_drop_everything() {
    // 2 Mbit/s with a 32 KiB queue: a 200 kB burst takes ≥ 0.8 s for what fits, and most of it is dropped.
    let link = ImpairedLink::new("rate=2mbit,queue=32kb".parse().expect("spec")).expect("link (needs root)");
    let (tx, rx) = pair(&link);
    let t = Instant::now();
    let (got, delays) = send_and_receive(&tx, &rx, 200, 1000, Duration::ZERO);
    let (ab, _) = link.stats();
    eprintln!(
        "burst of 200 × 1000 B at 2 Mbit/s: {got} through in {:?}, last after {:.0} ms; {ab:?}",
        t.elapsed(),
        delays.last().copied().unwrap_or(0.0)
    );
    assert!(ab.dropped_queue > 100, "{ab:?}");
    assert!((30..=40).contains(&got), "32 KiB of queue holds about 33 packets: {got}");
    assert!(delays.last().copied().unwrap_or(0.0) > 120.0, "the queue drains at 2 Mbit/s: {delays:?}");

    // Paced below the rate, nothing is dropped.
    link.set(LinkSpec { rate_bps: Some(2_000_000), queue_bytes: Some(32 << 10), ..Default::default() });
    let (got, _) = send_and_receive(&tx, &rx, 100, 1000, Duration::from_millis(5));
    assert_eq!(got, 100);

    // A blackout from now on for 500 ms: nothing passes, then everything does.
    link.set(LinkSpec { blackouts: vec![(link.uptime(), Duration::from_millis(500))], ..Default::default() });
    let (got, _) = send_and_receive(&tx, &rx, 20, 100, Duration::from_millis(1));
    assert_eq!(got, 0, "in the blackout");
    std::thread::sleep(Duration::from_millis(300));
    let (got, _) = send_and_receive(&tx, &rx, 20, 100, Duration::from_millis(1));
    assert_eq!(got, 20, "after it");
    assert_eq!(link.stats().0.lost_blackout, 20);
}

#[test]
fn nothing_beyond_the_link_is_reachable() {
    let link = ImpairedLink::new(LinkSpec::default()).expect("link (needs root)");
    let routes = link.a.run(|| {
        String::from_utf8_lossy(&std::process::Command::new("ip").args(["route"]).output().expect("ip").stdout)
            .into_owned()
    });
    assert_eq!(routes.trim(), "198.18.0.0/30 dev wlw0 proto kernel scope link src 198.18.0.1", "{routes}");
    let err = link
        .a
        .run(|| UdpSocket::bind((ADDR_A, 0)).expect("bind").send_to(b"x", ("192.0.2.1", 9)).expect_err("no route"));
    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
}

//! Streaming through an impaired link (`testkit::impair`): the server in namespace A (198.18.0.1), Chromium
//! in namespace B (198.18.0.2), everything between them through the userspace forwarder's loss, delay, rate
//! limit and blackouts.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use testkit::impair::{ADDR_A, ImpairedLink, LinkSpec};
use testkit::pattern::PatternKind;

use crate::stream::{SERIAL, Server, http};
use crate::support::Fixture;
use crate::support::browser::{Browser, Page};

/// A server behind the link and a Chromium viewer on the far side. Drop order: page, browser, server, desktop,
/// link.
struct Session {
    page: Page,
    _browser: Browser,
    srv: Server,
    _f: Fixture,
    link: Arc<ImpairedLink>,
}

impl Session {
    /// Start on a fresh link with `spec`; the viewer page is opened but not waited for.
    fn start(spec: &str, pattern: PatternKind, w: u32, h: u32, extra: &[&str]) -> Session {
        let link = Arc::new(ImpairedLink::new(spec.parse().expect("link spec")).expect("impaired link (needs root)"));
        let f = Fixture::with_pattern(w, h, pattern);
        let listen = format!("{ADDR_A}:0");
        let mut args = vec!["start", "--listen", &listen, "--no-tls"];
        args.extend(extra);
        let mut cmd = f.cli(&args);
        link.a.command(&mut cmd);
        let srv = Server::spawn(cmd);
        let url = srv.url("/");
        let (browser, page) = link.b.run(move || {
            let browser = Browser::launch();
            let page = browser.new_page(&url);
            (browser, page)
        });
        Session { page, _browser: browser, srv, _f: f, link }
    }

    /// `/api/status`, asked from the server's side of the link.
    fn status(&self) -> Value {
        let url = self.srv.url("/api/status");
        self.link.a.run(move || {
            let (code, body) = http("GET", &url, &[], "");
            assert_eq!(code, 200, "{body}");
            serde_json::from_str(&body).expect("json")
        })
    }
}

const DECODING: &str = "window.wlw && wlw.stats && wlw.stats.framesDecoded > 30";

#[test]
fn after_a_one_second_blackout_the_picture_is_back_quickly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Session::start("delay=10ms", PatternKind::MovingBar, 1280, 720, &[]);
    s.page.wait_for(DECODING, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    // The blackout starts now, in the link's clock; the page notes its own "now".
    let t_page = s.page.eval("performance.now()").as_f64().expect("page clock");
    s.link.set(LinkSpec {
        delay: Duration::from_millis(10),
        blackouts: vec![(s.link.uptime(), Duration::from_secs(1))],
        ..Default::default()
    });
    std::thread::sleep(Duration::from_secs(4));
    let back = s
        .page
        .eval(&format!("wlw.frames.times.find(t => t > {} + 1000)", t_page))
        .as_f64()
        .map(|t| t - (t_page + 1000.0));
    let (ab, ba) = s.link.stats();
    eprintln!("1 s blackout: the first frame {back:?} ms after the link returned; A→B {ab:?}; B→A {ba:?}");
    let back = back.expect("no frame after the blackout");
    assert!(back < 500.0, "the picture came back {back:.0} ms after the link did");
    assert!(ab.lost_blackout > 0, "{ab:?}");
    assert_eq!(s.status()["viewers"].as_u64(), Some(1), "the viewer stayed");
}

/// What a viewer saw over one measured stretch (all of it printed by the tests; some fields only there).
#[derive(Debug)]
#[allow(dead_code)]
struct Watched {
    secs: f64,
    frames: u64,
    longest_gap_ms: f64,
    /// Chromium's own freeze accounting (`freezeCount`, `totalFreezesDuration`) over the stretch.
    freezes: u64,
    frozen_ms: f64,
    /// capture→delivery percentiles (ms) over the stretch.
    p50_ms: f64,
    p95_ms: f64,
    /// The encoder's target (kbit/s), once a second.
    targets: Vec<u64>,
    /// Gaps over 100 ms: [page time, length] pairs.
    gaps: String,
    /// Chromium's NACK and PLI counts over the stretch.
    nacks: u64,
    plis: u64,
}

impl Watched {
    fn frozen_share(&self) -> f64 {
        self.frozen_ms / (self.secs * 1000.0)
    }
}

impl Session {
    /// Watch for `secs` from now: the page's frame gaps and latencies, Chromium's freezes, the server's
    /// target bitrate each second.
    fn watch(&mut self, secs: u64) -> Watched {
        let freezes = |page: &mut Page| {
            let st = page.eval("wlw.stats");
            let n = |k: &str| st[k].as_u64().unwrap_or(0);
            (n("freezeCount"), st["freezesMs"].as_f64().unwrap_or(0.0), n("nackCount"), n("pliCount"))
        };
        let (count0, ms0, nack0, pli0) = freezes(&mut self.page);
        self.page.eval("wlw.frames.reset(); true");
        let mut targets = Vec::new();
        for _ in 0..secs {
            std::thread::sleep(Duration::from_secs(1));
            targets.push(self.status()["stream"]["target_bitrate_kbps"].as_u64().unwrap_or(0));
        }
        // Chromium's stats are polled once a second by the page: let one more poll land.
        std::thread::sleep(Duration::from_millis(1100));
        let (count1, ms1, nack1, pli1) = freezes(&mut self.page);
        let f = self.page.eval(
            "(() => { const v = wlw.frames.latencies.slice().sort((a, b) => a - b); \
             const q = p => v.length ? v[Math.min(v.length - 1, Math.floor(p * v.length))] : null; \
             const t = wlw.frames.times, gaps = []; \
             for (let i = 1; i < t.length; i++) if (t[i] - t[i - 1] > 100) gaps.push([Math.round(t[i - 1]), Math.round(t[i] - t[i - 1])]); \
             return { count: wlw.frames.count, gap: wlw.frames.longestGapMs, p50: q(0.5), p95: q(0.95), gaps }; })()",
        );
        Watched {
            secs: secs as f64,
            frames: f["count"].as_u64().unwrap_or(0),
            longest_gap_ms: f["gap"].as_f64().unwrap_or(f64::MAX),
            freezes: count1 - count0,
            frozen_ms: ms1 - ms0,
            p50_ms: f["p50"].as_f64().unwrap_or(f64::MAX),
            p95_ms: f["p95"].as_f64().unwrap_or(f64::MAX),
            targets,
            gaps: f["gaps"].to_string(),
            nacks: nack1 - nack0,
            plis: pli1 - pli0,
        }
    }
}

#[test]
fn a_6_mbit_link_with_full_screen_noise_settles_below_the_cap_without_freezes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 720p60 noise wants ~3.9 Mbit/s automatically; the ceiling is raised over the link so that only the
    // estimate can keep the stream under it.
    let mut s = Session::start("rate=6mbit", PatternKind::Noise, 1280, 720, &["--bitrate", "12000"]);
    s.page.wait_for(DECODING, Duration::from_secs(30));
    let w = s.watch(30);
    let (ab, _) = s.link.stats();
    eprintln!("6 Mbit/s, noise: {w:?}; A→B {ab:?}");
    assert!(w.frozen_share() <= 0.01, "frozen {:.0} ms of 30 s", w.frozen_ms);
    assert!(w.longest_gap_ms <= 300.0, "a freeze of {:.0} ms", w.longest_gap_ms);
    // Settled: over the last 20 s the target stays under the cap on average and never far above it (the
    // estimator probes near the link and backs off on a growing queue, before the queue overflows; a probe
    // has reached 6.83 Mbit/s for a moment before backing off, in one run of many: 1.17 × the link is "far").
    let late = &w.targets[10..];
    let mean = late.iter().sum::<u64>() as f64 / late.len() as f64;
    assert!(mean < 6000.0 && late.iter().all(|&t| t > 0 && t < 7000), "the target: {:?}", w.targets);
    assert!(ab.dropped_queue * 200 <= ab.packets, "the link's queue overflowed: {ab:?}");
    assert!(w.frames >= 30 * 20, "only {} frames in 30 s", w.frames);
}

#[test]
fn two_percent_loss_with_40_ms_rtt_and_jitter_costs_no_freeze_and_little_latency() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let clean = {
        let mut s = Session::start("delay=0ms", PatternKind::MovingBar, 1280, 720, &[]);
        s.page.wait_for(DECODING, Duration::from_secs(30));
        s.watch(10)
    };
    let mut s = Session::start("loss=2%,delay=20ms,jitter=5ms", PatternKind::MovingBar, 1280, 720, &[]);
    s.page.wait_for(DECODING, Duration::from_secs(30));
    let w = s.watch(30);
    let (ab, ba) = s.link.stats();
    eprintln!("clean: {clean:?}\n2 % loss, 40 ms RTT, 5 ms jitter: {w:?}; A→B {ab:?}; B→A {ba:?}");
    assert!(ab.lost_random > 0 && ba.lost_random > 0, "{ab:?} {ba:?}");
    assert!(w.longest_gap_ms <= 200.0, "a freeze of {:.0} ms", w.longest_gap_ms);
    let budget = clean.p95_ms + 40.0 + 30.0;
    assert!(w.p95_ms <= budget, "p95 {:.1} ms > clean p95 {:.1} + RTT 40 + 30", w.p95_ms, clean.p95_ms);
}

#[test]
fn five_percent_loss_freezes_the_picture_for_at_most_one_percent_of_the_time() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Session::start("loss=5%,delay=20ms", PatternKind::MovingBar, 1280, 720, &[]);
    s.page.wait_for(DECODING, Duration::from_secs(30));
    let w = s.watch(30);
    let (ab, ba) = s.link.stats();
    eprintln!("5 % loss, 40 ms RTT: {w:?}; A→B {ab:?}; B→A {ba:?}");
    assert!(ab.lost_random > 0, "{ab:?}");
    assert!(w.frozen_share() <= 0.01, "frozen {:.0} ms of 30 s in {} freezes", w.frozen_ms, w.freezes);
}

#[test]
fn a_3_mbit_link_from_the_start_gives_a_first_frame_fast_and_no_long_freeze() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 720p60 noise wants more than the link carries (automatic bitrate: 3,870 kbit/s).
    let mut s = Session::start("rate=3mbit,delay=10ms", PatternKind::Noise, 1280, 720, &[]);
    s.page.wait_for("wlw.frames && wlw.frames.count > 0", Duration::from_secs(30));
    // From the moment the viewer connected (performance.now() of the page).
    let first = s.page.eval("wlw.frames.times[0] - (wlw.connectedAt || 0)").as_f64().unwrap_or(f64::MAX);
    let w = s.watch(20);
    let (ab, _) = s.link.stats();
    eprintln!("3 Mbit/s from the start, noise: first frame {first:.0} ms after connecting; {w:?}; A→B {ab:?}");
    assert!(first <= 1000.0, "first frame {first:.0} ms after connecting");
    assert!(w.longest_gap_ms <= 300.0, "a freeze of {:.0} ms", w.longest_gap_ms);
}

//! Streaming to a real browser: Debian's headless Chromium, driven over CDP, receives the stream from a
//! live `wl-webrtc start` against a headless Sway, all inside a private network namespace (only `lo`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use testkit::pattern::PatternKind;
use testkit::pattern::quadrant_colour;

use crate::support::Fixture;
use crate::support::browser::Browser;
use crate::support::netns::in_private_netns;

/// Browser tests share two cores with sway, the server and x264: one at a time.
pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

/// A running `wl-webrtc start` pointed at a fixture desktop; stopped (SIGTERM) and reaped on drop.
pub(crate) struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT` (no token, no trailing slash).
    pub(crate) base: String,
    /// The token of the printed URL (a new one at every start unless `--token`/`--no-auth`).
    pub(crate) token: Option<String>,
    /// The first lines it printed (the URL line first).
    pub(crate) lines: Vec<String>,
}

impl Server {
    pub(crate) fn start(f: &Fixture, extra: &[&str]) -> Server {
        let mut args = vec!["start", "--listen", "127.0.0.1:0"];
        args.extend(extra);
        Server::start_with(f, &args)
    }

    fn start_with(f: &Fixture, args: &[&str]) -> Server {
        Server::spawn(f.cli(args))
    }

    /// Spawn `wl-webrtc start …` (already pointed at a desktop) and wait for its URL line.
    pub(crate) fn spawn(cmd: std::process::Command) -> Server {
        Server::spawn_with_lines(cmd, 1)
    }

    /// `spawn`, reading `n` lines of its output (the URL line first).
    pub(crate) fn spawn_with_lines(mut cmd: std::process::Command, n: usize) -> Server {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn wl-webrtc start");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut lines = Vec::new();
        for _ in 0..n {
            let mut l = String::new();
            stdout.read_line(&mut l).expect("read a line of wl-webrtc start");
            lines.push(l.trim_end().to_owned());
        }
        let line = lines[0].clone();
        let url = line.split(" at ").nth(1).unwrap_or_else(|| panic!("no URL in {line:?}")).trim().to_owned();
        let base = url.split('?').next().unwrap_or(&url).trim_end_matches('/').to_owned();
        let token = url.split_once("?token=").map(|(_, t)| t.to_owned());
        Server { child, base, token, lines }
    }

    /// `base` + `path` (which may carry a query) + the token.
    pub(crate) fn url(&self, path: &str) -> String {
        match &self.token {
            Some(t) => format!("{}{path}{}token={t}", self.base, if path.contains('?') { '&' } else { '?' }),
            None => format!("{}{path}", self.base),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn status(&self) -> serde_json::Value {
        http_get_json(&self.url("/api/status"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request to `url` (http://HOST:PORT/PATH) through the product's own client; (status, body).
pub(crate) fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let addr = host.parse().unwrap_or_else(|_| panic!("{host} is not IP:PORT"));
    wl_webrtc::signaling::client::request(addr, method, &path, headers, body).expect("HTTP request")
}

fn http_get_json(url: &str) -> serde_json::Value {
    let (code, body) = http("GET", url, &[], "");
    assert_eq!(code, 200, "GET {url}: {body}");
    serde_json::from_str(&body).expect("json")
}

/// Frames keep arriving (animated desktop).
/// Start a server on the fixture's desktop and a Chromium viewer on it; wait until `until` holds.
fn watch(f: &Fixture, until: &str) -> (Server, Browser, crate::support::browser::Page) {
    let srv = Server::start(f, &[]);
    let browser = Browser::launch();
    let mut page = browser.new_page(&srv.url("/?gum=1"));
    page.wait_for(until, Duration::from_secs(20));
    (srv, browser, page)
}

/// Frames keep arriving (animated desktop).
pub(crate) const DECODING: &str = "window.wlw && wlw.stats && wlw.stats.framesDecoded > 30 && wlw.stats.decoder !== ''";
/// A picture arrived and was decoded (a static desktop sends only the first frames).
const DECODED: &str = "window.wlw && wlw.stats && wlw.stats.framesDecoded > 0 && wlw.stats.decoder !== ''";

/// The pixel of the playing video at (x, y) in video coordinates, as [r, g, b].
pub(crate) fn video_pixel_js(x: u32, y: u32) -> String {
    format!(
        "(() => {{ const v = document.querySelector('video'); const c = document.createElement('canvas'); \
         c.width = v.videoWidth; c.height = v.videoHeight; const g = c.getContext('2d'); g.drawImage(v, 0, 0); \
         return Array.from(g.getImageData({x}, {y}, 1, 1).data.slice(0, 3)); }})()"
    )
}

pub(crate) fn close_to(got: &serde_json::Value, want: [u8; 3]) -> bool {
    let Some(a) = got.as_array() else { return false };
    a.len() == 3 && a.iter().zip(want).all(|(g, w)| (g.as_i64().unwrap_or(-999) - i64::from(w)).abs() <= 40)
}

#[test]
fn chromium_viewer_decodes_the_desktop_with_correct_pixels() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(1280, 720, PatternKind::Quadrants);
        let srv = Server::start(&f, &[]);
        let browser = Browser::launch();
        let mut page = browser.new_page(&srv.url("/?gum=1"));
        let t0 = Instant::now();
        let stats = page.wait_for(DECODED, Duration::from_secs(20));
        let first_frame = t0.elapsed();
        let s1 = page.eval("wlw.stats.framesDecoded").as_u64().unwrap_or(0);
        std::thread::sleep(Duration::from_millis(1500));
        let s2 = page.eval("wlw.stats.framesDecoded").as_u64().unwrap_or(0);
        eprintln!("first frame after {first_frame:?}; stats {stats}");
        // A static screen sends nothing after the first frames: decoding may plateau but never regress.
        assert!(s2 >= s1);
        let st = page.eval("wlw.stats");
        assert_eq!((st["width"].as_u64(), st["height"].as_u64()), (Some(1280), Some(720)), "{st}");
        assert!(!st["decoder"].as_str().unwrap_or("").is_empty(), "decoderImplementation reported: {st}");
        for (x, y) in [(320, 180), (960, 180), (320, 540), (960, 540)] {
            let px = page.eval(&video_pixel_js(x, y));
            assert!(close_to(&px, quadrant_colour(1280, 720, x, y)), "pixel ({x},{y}) = {px}");
        }
        assert_eq!(srv.status()["viewers"].as_u64(), Some(1));
        // playout-delay and abs-capture-time were negotiated.
        let answer = page.eval("wlw.pc.remoteDescription.sdp");
        let answer = answer.as_str().unwrap_or("");
        assert!(answer.contains("playout-delay") && answer.contains("abs-capture-time"), "{answer}");
    });
}

#[test]
fn chromium_keeps_decoding_an_animated_desktop() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(1280, 720, PatternKind::MovingBar);
        let (_srv, _browser, mut page) = watch(&f, DECODING);
        let a = page.eval("wlw.stats.framesDecoded").as_u64().unwrap_or(0);
        std::thread::sleep(Duration::from_secs(2));
        let b = page.eval("wlw.stats.framesDecoded").as_u64().unwrap_or(0);
        assert!(b > a + 30, "frames keep being decoded: {a} → {b}");
        let st = page.eval("wlw.stats");
        assert_eq!(st["framesDropped"].as_u64(), Some(0), "{st}");
    });
}

#[test]
fn whep_round_trip_with_a_real_peer() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(640, 480, PatternKind::MovingBar);
        let srv = Server::start(&f, &[]);
        let browser = Browser::launch();
        let mut page = browser.new_page(&srv.url("/whep.html?gum=1"));
        page.wait_for("window.whep && whep.state === 'negotiated'", Duration::from_secs(20));
        assert_eq!(page.eval("whep.status").as_u64(), Some(201));
        let loc = page.eval("whep.location");
        assert!(loc.as_str().is_some_and(|l| l.starts_with("/whep/")), "Location: {loc}");
        page.wait_for(
            "whep.pc.getStats().then(r => { let n = 0; r.forEach(s => { if (s.type === 'inbound-rtp') n = s.framesDecoded; }); return n > 30; })",
            Duration::from_secs(20),
        );
        assert_eq!(srv.status()["viewers"].as_u64(), Some(1));
        assert_eq!(page.eval("whep.stop()").as_u64(), Some(200), "DELETE on the Location");
        let deadline = Instant::now() + Duration::from_secs(5);
        while srv.status()["viewers"].as_u64() != Some(0) {
            assert!(Instant::now() < deadline, "viewer not freed after DELETE");
            std::thread::sleep(Duration::from_millis(100));
        }
        let (code, _) = http("DELETE", &srv.url(loc.as_str().unwrap_or("")), &[], "");
        assert_eq!(code, 404, "a deleted viewer is gone");
    });
}

#[test]
fn max_viewers_is_enforced_with_503() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(320, 240, PatternKind::Quadrants);
        let dir = std::env::temp_dir().join(format!("wl-webrtc-maxv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let cfg = dir.join("c.toml");
        std::fs::write(&cfg, "[server]\nmax_viewers = 1\n").expect("write config");
        let srv = Server::start(&f, &["--config", cfg.to_str().expect("utf-8")]);
        let browser = Browser::launch();
        let mut first = browser.new_page(&srv.url("/whep.html?gum=1"));
        first.wait_for("window.whep && whep.state === 'negotiated'", Duration::from_secs(20));
        let mut second = browser.new_page(&srv.url("/whep.html?gum=1"));
        second.wait_for("window.whep && whep.state === 'refused'", Duration::from_secs(20));
        assert_eq!(second.eval("whep.status").as_u64(), Some(503));
        assert!(second.eval("whep.error").as_str().unwrap_or("").contains("too many viewers"));
        std::fs::remove_dir_all(&dir).ok();
    });
}

fn proc_counts(pid: u32) -> (usize, usize) {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    (threads, fds)
}

#[test]
fn three_viewers_decode_and_churn_leaves_no_leaks() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(640, 480, PatternKind::MovingBar);
        let srv = Server::start(&f, &[]);
        let browser = Browser::launch();
        let mut pages: Vec<_> = (0..3).map(|_| browser.new_page(&srv.url("/?gum=1"))).collect();
        for p in &mut pages {
            p.wait_for(DECODING, Duration::from_secs(30));
        }
        assert_eq!(srv.status()["viewers"].as_u64(), Some(3));
        drop(pages);
        let settle = |want: u64| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while srv.status()["viewers"].as_u64() != Some(want) {
                assert!(Instant::now() < deadline, "viewers did not settle at {want}: {}", srv.status());
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        settle(0);
        let before = proc_counts(srv.pid());
        for _ in 0..20 {
            let mut page = browser.new_page(&srv.url("/?gum=1"));
            page.wait_for("window.wlw && wlw.stats && wlw.stats.framesDecoded > 0", Duration::from_secs(20));
            drop(page);
            settle(0);
        }
        std::thread::sleep(Duration::from_millis(500));
        let after = proc_counts(srv.pid());
        eprintln!("threads/fds before {before:?} after 20 cycles {after:?}");
        assert!(after.0 <= before.0 + 2, "threads grew: {before:?} → {after:?}");
        assert!(after.1 <= before.1 + 4, "fds grew: {before:?} → {after:?}");
    });
}

#[test]
fn malformed_signaling_gets_clear_errors_and_the_server_keeps_serving() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(320, 240, PatternKind::Quadrants);
        let srv = Server::start(&f, &["--token", "test-token-123"]);
        let ws_url = format!("{}/ws?token=test-token-123", srv.base.replace("http://", "ws://"));
        let expect_error = |payload: tungstenite::Message, needle: &str| {
            let (mut ws, _) = tungstenite::connect(&ws_url).expect("ws connect");
            ws.send(payload).expect("send");
            let reply = ws.read().expect("reply");
            let text = reply.into_text().expect("text").to_string();
            let v: serde_json::Value = serde_json::from_str(&text).expect("json reply");
            assert_eq!(v["type"], "error", "{text}");
            assert!(v["message"].as_str().unwrap_or("").contains(needle), "{text}");
            // Then the server closes the socket.
            loop {
                match ws.read() {
                    Ok(tungstenite::Message::Close(_)) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        };
        expect_error(tungstenite::Message::text("{not json"), "malformed");
        expect_error(tungstenite::Message::text(r#"{"type":"offer","sdp":"garbage"}"#), "v=0");
        expect_error(
            tungstenite::Message::text(format!(r#"{{"type":"offer","sdp":"{}"}}"#, "x".repeat(70_000))),
            "limit",
        );
        expect_error(tungstenite::Message::binary(vec![1u8, 2, 3]), "binary");

        // Wrong or missing token: 401 everywhere.
        let wrong = format!("{}/ws?token=nope", srv.base.replace("http://", "ws://"));
        match tungstenite::connect(&wrong) {
            Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
            other => panic!("expected 401, got {other:?}"),
        }
        assert_eq!(http("GET", &format!("{}/api/status", srv.base), &[], "").0, 401);
        let (code, _) = http("POST", &format!("{}/whep", srv.base), &[("Content-Type", "application/sdp")], "v=0");
        assert_eq!(code, 401);
        let bearer = [("Authorization", "Bearer test-token-123"), ("Content-Type", "application/sdp")];
        let (code, body) = http("POST", &format!("{}/whep", srv.base), &bearer, "garbage");
        assert_eq!(code, 400, "{body}");
        assert!(body.contains("v=0"), "{body}");
        let (code, _) =
            http("POST", &format!("{}/whep", srv.base), &[("Authorization", "Bearer test-token-123")], "v=0");
        assert_eq!(code, 415, "WHEP needs application/sdp");

        // Still serving: status works and a real viewer can connect.
        let (code, body) = http("GET", &format!("{}/api/status?token=test-token-123", srv.base), &[], "");
        assert_eq!(code, 200, "{body}");
        let browser = Browser::launch();
        let mut page = browser.new_page(&format!("{}/?gum=1&token=test-token-123", srv.base));
        page.wait_for(DECODED, Duration::from_secs(20));
    });
}

fn cli_at(srv: &Server, args: &[&str]) -> std::process::Output {
    let listen = srv.base.trim_start_matches("http://").to_owned();
    let mut cmd = std::process::Command::new(crate::support::bin());
    cmd.args(["--listen", &listen]).args(args);
    crate::support::output_within(cmd, Duration::from_secs(30))
}

#[test]
fn idle_costs_nothing_status_and_metrics_are_live_and_stop_exits_0() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(640, 480, PatternKind::Quadrants);
        let mut srv = Server::start(&f, &[]);
        // Nobody watching: nothing is captured.
        std::thread::sleep(Duration::from_millis(1500));
        let out = cli_at(&srv, &["status", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let st: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
        assert_eq!((st["viewers"].as_u64(), st["stream"]["frames_captured"].as_u64()), (Some(0), Some(0)), "{st}");

        // A viewer on a static desktop: the first frames, then nothing is encoded at all.
        let browser = Browser::launch();
        let mut page = browser.new_page(&srv.url("/?gum=1"));
        page.wait_for(DECODED, Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(1000));
        let s1 = srv.status()["stream"].clone();
        std::thread::sleep(Duration::from_millis(4000));
        let s2 = srv.status()["stream"].clone();
        assert!(s1["frames_encoded"].as_u64() > Some(0), "the viewer got its first frame");
        // Chromium asks for a keyframe when no frame came for ~3 s; those are answered by resending the IDR.
        for k in ["frames_captured", "frames_encoded", "keyframes"] {
            assert_eq!(s1[k], s2[k], "{k}: a static desktop captures and encodes nothing more ({s1} → {s2})");
        }

        let text = http("GET", &srv.url("/metrics"), &[], "").1;
        for needle in ["wl_webrtc_frames_encoded_total ", "wl_webrtc_viewers 1", "stage=\"encode\""] {
            assert!(text.contains(needle), "{needle} missing from /metrics:\n{text}");
        }
        let human = cli_at(&srv, &["status"]);
        let human = String::from_utf8_lossy(&human.stdout);
        assert!(human.contains("1 viewer(s)") && human.contains("encode"), "{human}");

        drop(page);
        let out = cli_at(&srv, &["stop"]);
        assert!(out.status.success(), "stop: {}", String::from_utf8_lossy(&out.stderr));
        let deadline = Instant::now() + Duration::from_secs(10);
        let code = loop {
            if let Some(s) = srv.child.try_wait().expect("try_wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "server still running after stop");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(code.success(), "exit status after stop: {code:?}");
        let out = cli_at(&srv, &["status"]);
        assert_eq!(out.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&out.stdout).contains("no running instance"));
    });
}

const DECODED_NOW: &str = "wlw.pc.getStats().then(r => { let n = 0; r.forEach(s => { if (s.type === 'inbound-rtp') n = s.framesDecoded; }); return n; })";

#[test]
fn compositor_restart_keeps_the_server_up_and_streaming_resumes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let mut f = Fixture::with_pattern(640, 480, PatternKind::MovingBar);
        let (srv, _browser, mut page) = watch(&f, DECODING);

        f.desk.kill_compositor();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = srv.status(); // the API keeps answering
            if st["capture"].as_str().unwrap_or("").starts_with("lost") {
                break;
            }
            assert!(Instant::now() < deadline, "the loss was not reported: {st}");
            std::thread::sleep(Duration::from_millis(100));
        }

        f.desk.restart_compositor().expect("restart sway on the same socket");
        f.spawn_pattern(PatternKind::MovingBar, None);
        let deadline = Instant::now() + Duration::from_secs(15);
        while srv.status()["capture"] != "ok" {
            assert!(Instant::now() < deadline, "capture did not resume: {}", srv.status());
            std::thread::sleep(Duration::from_millis(100));
        }
        let a = page.eval(DECODED_NOW).as_u64().unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let b = page.eval(DECODED_NOW).as_u64().unwrap_or(0);
            if b > a + 30 {
                break;
            }
            assert!(Instant::now() < deadline, "the same viewer did not get frames again ({a} → {b})");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(srv.status()["viewers"].as_u64(), Some(1), "the viewer stayed connected throughout");
    });
}

#[test]
fn output_mode_change_while_streaming_reaches_the_viewer() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(1280, 720, PatternKind::MovingBar);
        let (srv, _browser, mut page) = watch(&f, DECODING);
        f.swaymsg(&["output", "HEADLESS-1", "mode", "--custom", "800x600@60Hz"]);
        let size = "wlw.pc.getStats().then(r => { let v = null; r.forEach(s => { if (s.type === 'inbound-rtp') v = [s.frameWidth, s.frameHeight, s.framesDecoded]; }); return v; })";
        let deadline = Instant::now() + Duration::from_secs(15);
        let at_new_size = loop {
            let v = page.eval(size);
            if v[0] == 800 && v[1] == 600 {
                break v[2].as_u64().unwrap_or(0);
            }
            assert!(Instant::now() < deadline, "viewer never decoded 800x600: {v}");
            std::thread::sleep(Duration::from_millis(100));
        };
        std::thread::sleep(Duration::from_secs(1));
        let later = page.eval(size);
        assert!(later[2].as_u64().unwrap_or(0) > at_new_size + 20, "decoding continues at the new size: {later}");
        assert_eq!(srv.status()["stream"]["width"].as_u64(), Some(800));
    });
}

/// Shape this namespace's `lo` (everything the test sends: RTP, RTCP, signaling) to `rate`, with an
/// Ethernet-sized MTU (the token bucket drops any packet larger than its burst).
fn shape_loopback(rate: &str) {
    for args in [
        &["link", "set", "dev", "lo", "mtu", "1500"][..],
        &["qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate, "burst", "10kb", "latency", "250ms"],
    ] {
        let tool = if args[0] == "link" { "ip" } else { "tc" };
        let out = std::process::Command::new(tool)
            .args(args)
            .output()
            .expect("run ip/tc (iproute2, installed by scripts/setup)");
        assert!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn bitrate_follows_a_constrained_link_and_decoding_goes_on() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        // 8 Mbit/s CBR into a 2 Mbit/s link: without adaptation the queue overflows and frames are lost.
        shape_loopback("2mbit");
        let f = Fixture::with_pattern(640, 480, PatternKind::Noise);
        let srv = Server::start(&f, &["--bitrate", "8000"]);
        let browser = Browser::launch();
        let mut page = browser.new_page(&srv.url("/?gum=1"));
        page.wait_for(DECODED, Duration::from_secs(30));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut timeline = Vec::new();
        let adapted = loop {
            let st = srv.status();
            let target = st["stream"]["target_bitrate_kbps"].as_u64().unwrap_or(0);
            timeline.push((target, st["stream"]["estimate_kbps"].as_u64(), st["stream"]["bitrate_kbps"].as_f64()));
            if (1..=2000).contains(&target) {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        eprintln!("(target kbit/s, estimate kbit/s, sent kbit/s) every 0.5 s: {timeline:?}");
        assert!(adapted, "the encoder's bitrate came down to what the link carries: {timeline:?}");
        // Decoding goes on at the lower rate: 60 more frames (a second's worth) decoded soon after adapting.
        // Frames lost while the link was overrun may leave the decoder waiting for a keyframe (PLI → IDR) first.
        let a = page.eval("wlw.stats.framesDecoded").as_u64().unwrap_or(0);
        let t = Instant::now();
        page.wait_for(&format!("wlw.stats.framesDecoded > {}", a + 60), Duration::from_secs(20));
        let resumed = t.elapsed();
        let b = page.eval("wlw.stats.framesDecoded").as_u64().unwrap_or(0);
        let st = srv.status();
        let rtp = page.eval(
            "(async () => { for (const s of (await wlw.pc.getStats()).values()) if (s.type === 'inbound-rtp') \
             return { recv: s.framesReceived, dec: s.framesDecoded, key: s.keyFramesDecoded, pli: s.pliCount, \
             nack: s.nackCount, lost: s.packetsLost, packets: s.packetsReceived, dropped: s.framesDropped }; })()",
        );
        eprintln!("after adapting: decoded {a} → {b} in {resumed:?}; status {}; receiver {rtp}", st["stream"]);
        assert!(b > a + 60, "frames keep being decoded after adapting: {a} → {b}");
        let sent = st["stream"]["bitrate_kbps"].as_f64().unwrap_or(f64::MAX);
        assert!(sent < 3000.0, "sent bitrate is near what the link carries, far below 8000: {sent} kbit/s");
    });
}

//! Codec negotiation per viewer, in real Chromium: VP8 decoded with the right pixels when it is all a viewer
//! offers, H.264 and VP8 viewers on one session at once (each encoder open only while its codec is watched),
//! and refusals that the viewer page shows instead of retrying forever.

use std::time::{Duration, Instant};

use testkit::pattern::{PatternKind, quadrant_colour};

use crate::stream::{DECODING, SERIAL, Server, close_to, video_pixel_js};
use crate::support::Fixture;
use crate::support::browser::{Browser, Page};
use crate::support::netns::in_private_netns;

fn codec_status(srv: &Server, codec: &str) -> serde_json::Value {
    srv.status()["codecs"][codec].clone()
}

fn wait_status(
    srv: &Server,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let st = srv.status();
        if pred(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "{what}: status {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_quadrants(page: &mut Page) {
    for (x, y) in [(320, 180), (960, 180), (320, 540), (960, 540)] {
        let px = page.eval(&video_pixel_js(x, y));
        assert!(close_to(&px, quadrant_colour(1280, 720, x, y)), "pixel ({x},{y}) = {px}");
    }
}

#[test]
fn a_vp8_only_viewer_gets_vp8_with_correct_pixels() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(1280, 720, PatternKind::Quadrants);
        let srv = Server::start(&f, &[]);
        let browser = Browser::launch();
        // The page offers VP8 only (setCodecPreferences), as Debian's Firefox does.
        let mut page = browser.new_page(&srv.url("/?gum=1&codec=vp8"));
        let st = page.wait_for("wlw.stats && wlw.stats.framesDecoded > 0 && wlw.stats.codec", Duration::from_secs(20));
        assert_eq!(st, "VP8", "the stats overlay names the codec");
        let s = page.eval("wlw.stats");
        assert_eq!((s["width"].as_u64(), s["height"].as_u64()), (Some(1280), Some(720)), "{s}");
        assert_quadrants(&mut page);
        let answer = page.eval("wlw.pc.remoteDescription.sdp");
        assert!(answer.as_str().is_some_and(|a| a.contains("VP8/90000") && !a.contains("H264")), "{answer}");
        let vp8 = codec_status(&srv, "vp8");
        assert_eq!((vp8["viewers"].as_u64(), vp8["encoder_open"].as_bool()), (Some(1), Some(true)), "{vp8}");
        assert!(vp8["keyframes"].as_u64() >= Some(1), "{vp8}");
        let h264 = codec_status(&srv, "h264");
        assert_eq!((h264["encoder_open"].as_bool(), h264["frames_encoded"].as_u64()), (Some(false), Some(0)), "{h264}");
        let metrics = crate::stream::http("GET", &srv.url("/metrics"), &[], "").1;
        assert!(metrics.contains("wl_webrtc_codec_viewers{codec=\"vp8\"} 1"), "{metrics}");
    });
}

#[test]
fn h264_and_vp8_viewers_watch_one_session_and_the_vp8_encoder_stops_when_its_viewer_leaves() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(1280, 720, PatternKind::MovingBar);
        let srv = Server::start(&f, &[]);
        let browser = Browser::launch();
        let mut h264 = browser.new_page(&srv.url("/?gum=1"));
        h264.wait_for(DECODING, Duration::from_secs(20));
        let mut vp8 = browser.new_page(&srv.url("/?gum=1&codec=vp8"));
        vp8.wait_for(DECODING, Duration::from_secs(20));
        assert_eq!(h264.eval("wlw.stats.codec"), "H264");
        assert_eq!(vp8.eval("wlw.stats.codec"), "VP8");
        let st = wait_status(&srv, "both codecs watched", Duration::from_secs(5), |st| {
            st["codecs"]["h264"]["viewers"] == 1 && st["codecs"]["vp8"]["viewers"] == 1
        });
        assert_eq!(st["viewers"].as_u64(), Some(2), "{st}");
        assert_eq!(st["codecs"]["vp8"]["encoder_open"].as_bool(), Some(true), "{st}");
        // Both keep decoding side by side.
        let (a, b) = (h264.eval("wlw.stats.framesDecoded"), vp8.eval("wlw.stats.framesDecoded"));
        std::thread::sleep(Duration::from_secs(2));
        assert!(h264.eval("wlw.stats.framesDecoded").as_u64() > a.as_u64(), "H.264 viewer stalled");
        assert!(vp8.eval("wlw.stats.framesDecoded").as_u64() > b.as_u64(), "VP8 viewer stalled");

        // The VP8 viewer leaves: its encoder closes and encodes nothing more; H.264 goes on.
        vp8.navigate("about:blank");
        let st = wait_status(&srv, "VP8 encoder closed", Duration::from_secs(15), |st| {
            st["codecs"]["vp8"]["viewers"] == 0 && st["codecs"]["vp8"]["encoder_open"] == false
        });
        let frozen = st["codecs"]["vp8"]["frames_encoded"].as_u64();
        let h264_frames = st["codecs"]["h264"]["frames_encoded"].as_u64();
        std::thread::sleep(Duration::from_secs(1));
        let st = srv.status();
        assert_eq!(st["codecs"]["vp8"]["frames_encoded"].as_u64(), frozen, "VP8 encodes for nobody: {st}");
        assert!(st["codecs"]["h264"]["frames_encoded"].as_u64() > h264_frames, "H.264 goes on: {st}");
        assert_eq!(st["codecs"]["vp8"]["encoder_opens"].as_u64(), Some(1), "{st}");
        assert_eq!(st["codecs"]["h264"]["encoder_open"].as_bool(), Some(true), "{st}");
    });
}

#[test]
fn refusals_stay_on_screen_and_stop_the_retries() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(640, 480, PatternKind::Quadrants);
        let dir = std::env::temp_dir().join(format!("wl-webrtc-refusals-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let cfg = dir.join("c.toml");
        std::fs::write(&cfg, "[server]\nmax_viewers = 1\n").expect("write config");
        let srv = Server::start(&f, &["--config", cfg.to_str().expect("utf-8")]);
        let browser = Browser::launch();
        // A page that offers neither H.264 nor VP8.
        let mut vp9 = browser.new_page(&srv.url("/?gum=1&codec=vp9"));
        let shown = vp9.wait_for("wlw.fatal && wlw.errorShown", Duration::from_secs(15));
        let shown = shown.as_str().unwrap_or("");
        assert!(
            shown.starts_with("This browser offered no video codec wl-webrtc can send (it offered: VP9"),
            "{shown}"
        );
        assert_eq!(vp9.eval("wlw.fatal.code"), "codec");
        let connects = vp9.eval("wlw.connects");
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(vp9.eval("wlw.connects"), connects, "no retries after a codec refusal");
        assert_eq!(vp9.eval("document.getElementById('error').style.display"), "block");
        // "Try again" starts over (and is refused again, the same way).
        vp9.eval("document.getElementById('retry').click(); true");
        vp9.wait_for(
            &format!("wlw.connects > {connects} && wlw.fatal && wlw.fatal.code === 'codec'"),
            Duration::from_secs(15),
        );

        // Too many viewers: the second one is told so, and stops.
        let mut first = browser.new_page(&srv.url("/?gum=1"));
        first.wait_for("wlw.state === 'connected'", Duration::from_secs(20));
        let mut second = browser.new_page(&srv.url("/?gum=1"));
        let shown = second.wait_for("wlw.fatal && wlw.errorShown", Duration::from_secs(15));
        assert!(shown.as_str().is_some_and(|s| s.starts_with("Too many viewers (at most 1")), "{shown}");
        assert_eq!(second.eval("wlw.fatal.code"), "full");

        // WHEP's player shows its refusal too.
        let mut whep = browser.new_page(&srv.url("/whep.html?gum=1"));
        let shown = whep.wait_for("window.whep && whep.errorShown", Duration::from_secs(15));
        assert!(
            shown.as_str().is_some_and(|s| s.starts_with("Too many viewers (at most 1") && s.ends_with("(HTTP 503)")),
            "{shown}"
        );
        assert_eq!(first.eval("wlw.state"), "connected", "the first viewer was not disturbed");
        std::fs::remove_dir_all(&dir).ok();
    });
}

/// The overlay's live latency (capture → delivery) with the server on this machine's clock, and with the
/// server's wall clock 5 s ahead (libfaketime; its monotonic clock untouched), as if it ran on a machine whose
/// clock is off: the reading must stay small because the browser corrects the capture times by its estimate
/// of the server's clock (RTCP sender reports + abs-capture-time's clock-offset field).
#[test]
fn live_latency_is_shown_and_right_when_the_server_clock_is_off() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(1280, 720, PatternKind::MovingBar);
        let browser = Browser::launch();
        let mut readings = Vec::new();
        for skew in [None, Some("+5s")] {
            let mut cmd = f.cli(&["start", "--listen", "127.0.0.1:0"]);
            if let Some(skew) = skew {
                cmd.env("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
                    .env("FAKETIME", skew)
                    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            }
            let srv = Server::spawn(cmd);
            let mut page = browser.new_page(&srv.url("/?gum=1"));
            page.wait_for(DECODING, Duration::from_secs(20));
            let l = page.wait_for(
                "wlw.latency.corrected && wlw.latency.p50 !== null && wlw.latency.frames > 60 && wlw.latency",
                Duration::from_secs(20),
            );
            let p50 = l["p50"].as_f64().unwrap_or(f64::NAN);
            eprintln!("server clock {}: live capture→delivery {l}", skew.unwrap_or("as is"));
            assert!((0.0..150.0).contains(&p50), "clock {skew:?}: p50 {p50} ms ({l})");
            page.eval("document.getElementById('stats').style.display = 'block'; true");
            std::thread::sleep(Duration::from_millis(1200));
            let text = page.eval("document.getElementById('stats').textContent");
            assert!(
                text.as_str().is_some_and(|t| t.contains("capture→delivery p50") && t.contains("clock-corrected")),
                "{text}"
            );
            readings.push(p50);
        }
        eprintln!("live latency p50: same clock {:.1} ms, server 5 s ahead {:.1} ms", readings[0], readings[1]);
    });
}

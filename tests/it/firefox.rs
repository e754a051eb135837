//! Debian's Firefox ESR (no OpenH264: it offers VP8, VP9 and AV1) as a viewer, driven over WebDriver BiDi,
//! inside the same private network namespaces as the Chromium tests: the viewer page and `/whep.html` decode
//! VP8 with the right pixels, a mode change is followed, input and cursor metadata work, and a Chromium
//! (H.264) and a Firefox (VP8) viewer share one session.

use std::time::{Duration, Instant};

use testkit::browser::BrowserPage;
use testkit::browser::firefox::{Firefox, FirefoxPage, add_default_route_via_lo};
use testkit::pattern::{PatternKind, quadrant_colour};

use crate::input::{H, InputLog, W, near, page_point};
use crate::stream::{DECODING, SERIAL, Server, close_to, video_pixel_js};
use crate::support::Fixture;
use crate::support::browser::Browser;
use crate::support::netns::in_private_netns;

/// A picture arrived and was decoded, and the stats know the codec (Firefox reports no decoder name).
const DECODED: &str = "window.wlw && wlw.stats && wlw.stats.framesDecoded > 0 && wlw.stats.codec";

/// Firefox in this namespace: its ICE needs a default route with a source address (see testkit).
fn firefox() -> Firefox {
    add_default_route_via_lo().expect("a default route via lo for Firefox's ICE");
    Firefox::launch().unwrap_or_else(|e| panic!("launch Firefox: {e}"))
}

fn assert_quadrants(page: &mut impl BrowserPage, w: u32, h: u32) {
    for (x, y) in [(w / 4, h / 4), (3 * w / 4, h / 4), (w / 4, 3 * h / 4), (3 * w / 4, 3 * h / 4)] {
        let px = page.eval(&video_pixel_js(x, y));
        assert!(close_to(&px, quadrant_colour(w, h, x, y)), "pixel ({x},{y}) = {px}");
    }
}

fn frames_decoded(page: &mut FirefoxPage) -> u64 {
    page.eval("wlw.stats ? wlw.stats.framesDecoded : 0").as_u64().unwrap_or(0)
}

#[test]
fn firefox_viewer_decodes_vp8_with_correct_pixels_and_follows_a_mode_change() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(1280, 720, PatternKind::Quadrants);
        let srv = Server::start(&f, &[]);
        let ff = firefox();
        let mut page = ff.new_page(&srv.url("/?gum=1"));
        eprintln!("Firefox {}", page.version());
        let t0 = Instant::now();
        page.wait_for(DECODED, Duration::from_secs(30));
        eprintln!("first VP8 picture in Firefox after {:?}", t0.elapsed());
        assert_eq!(page.eval("wlw.stats.codec"), "VP8");
        let st = page.eval("wlw.stats");
        assert_eq!((st["width"].as_u64(), st["height"].as_u64()), (Some(1280), Some(720)), "{st}");
        assert_quadrants(&mut page, 1280, 720);
        let status = srv.status();
        assert_eq!(status["codecs"]["vp8"]["viewers"].as_u64(), Some(1), "{status}");
        assert_eq!(status["codecs"]["h264"]["encoder_open"].as_bool(), Some(false), "{status}");

        // A mode change: the stream follows, and Firefox decodes the new size.
        f.swaymsg(&["output", "HEADLESS-1", "mode", "--custom", "800x600@60Hz"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while page.eval("[wlw.stats.width, wlw.stats.height]") != serde_json::json!([800, 600]) {
            assert!(Instant::now() < deadline, "Firefox never decoded 800x600: {}", page.eval("wlw.stats"));
            std::thread::sleep(Duration::from_millis(100));
        }
        page.wait_for("document.querySelector('video').videoWidth === 800", Duration::from_secs(10));
        assert_quadrants(&mut page, 800, 600);
    });
}

#[test]
fn firefox_whep_player_decodes_vp8() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(1280, 720, PatternKind::Quadrants);
        let srv = Server::start(&f, &[]);
        let ff = firefox();
        let mut page = ff.new_page(&srv.url("/whep.html?gum=1"));
        page.wait_for("window.whep && whep.state === 'negotiated'", Duration::from_secs(30));
        page.wait_for("document.querySelector('video').videoWidth === 1280", Duration::from_secs(30));
        let codec = page.eval(
            "whep.pc.getStats().then(r => { let c = ''; r.forEach(s => { if (s.type === 'codec') c = s.mimeType; }); return c; })",
        );
        assert_eq!(codec, "video/VP8");
        assert_quadrants(&mut page, 1280, 720);
        assert_eq!(srv.status()["codecs"]["vp8"]["viewers"].as_u64(), Some(1));
        // `--codec h264` cannot serve this Firefox: the player says why.
        let srv264 = Server::start(&f, &["--codec", "h264"]);
        page.navigate(&srv264.url("/whep.html?gum=1"));
        let shown = page.wait_for("window.whep && whep.errorShown", Duration::from_secs(30));
        assert!(
            shown.as_str().is_some_and(|s| s.starts_with("This browser offered no video codec") && s.contains("VP8")),
            "{shown}"
        );
    });
}

#[test]
fn firefox_drives_the_desktop_and_shows_the_cursor() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let mut f = Fixture::start(W, H, 60);
        let log = InputLog::start(&mut f);
        let srv = Server::start(&f, &["--allow-input"]);
        log.wait_keyboard_focus();
        let ff = firefox();
        let mut page = ff.new_page(&srv.url("/?gum=1"));
        page.set_viewport(1280, 720);
        page.wait_for(&format!("{DECODED} && wlw.input.open && wlw.input.allowed"), Duration::from_secs(30));
        for (x, y) in [(200.0, 150.0), (700.0, 500.0)] {
            let (px, py) = page_point(x, y);
            page.mouse_click(px, py);
            log.wait(
                |e| e["ev"] == "button" && e["down"] == true && near(&e["x"], x) && near(&e["y"], y),
                Duration::from_secs(5),
                &format!("left press at ({x}, {y}) from Firefox"),
            );
        }
        for ch in "firefox".chars() {
            page.key_press(&ch.to_string());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.typed() != "firefox" {
            assert!(Instant::now() < deadline, "typed {:?}", log.typed());
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(page);
        drop(ff);

        // Cursor metadata, from the ext-image-copy test compositor.
        let comp = crate::support::compositor::TestCompositor::start(800, 600);
        comp.animate(true);
        let srv = crate::image_copy::cursor_metadata_server(&comp);
        let ff = firefox();
        let mut page = ff.new_page(&srv.url("/?gum=1"));
        page.set_viewport(1280, 720);
        page.wait_for(DECODED, Duration::from_secs(30));
        crate::image_copy::cursor_metadata_follows(&mut page, &comp);
    });
}

#[test]
fn chromium_gets_h264_and_firefox_vp8_on_one_session_and_vp8_stops_when_firefox_leaves() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(1280, 720, PatternKind::MovingBar);
        let srv = Server::start(&f, &[]);
        let chromium = Browser::launch();
        let mut cpage = chromium.new_page(&srv.url("/?gum=1"));
        cpage.wait_for(DECODING, Duration::from_secs(30));
        let ff = firefox();
        let mut fpage = ff.new_page(&srv.url("/?gum=1"));
        fpage.wait_for(&format!("{DECODED} && wlw.stats.framesDecoded > 30"), Duration::from_secs(30));
        assert_eq!(cpage.eval("wlw.stats.codec"), "H264");
        assert_eq!(fpage.eval("wlw.stats.codec"), "VP8");
        let (c0, f0) = (cpage.eval("wlw.stats.framesDecoded").as_u64().unwrap_or(0), frames_decoded(&mut fpage));
        std::thread::sleep(Duration::from_secs(2));
        assert!(cpage.eval("wlw.stats.framesDecoded").as_u64().unwrap_or(0) > c0, "Chromium stalled");
        assert!(frames_decoded(&mut fpage) > f0, "Firefox stalled");
        let st = srv.status();
        assert_eq!(st["viewers"].as_u64(), Some(2), "{st}");
        assert_eq!(st["codecs"]["h264"]["viewers"].as_u64(), Some(1), "{st}");
        assert_eq!(st["codecs"]["vp8"]["viewers"].as_u64(), Some(1), "{st}");

        // Firefox goes: the VP8 encoder closes; Chromium's H.264 goes on.
        drop(fpage);
        drop(ff);
        let deadline = Instant::now() + Duration::from_secs(20);
        let st = loop {
            let st = srv.status();
            if st["codecs"]["vp8"]["viewers"] == 0 && st["codecs"]["vp8"]["encoder_open"] == false {
                break st;
            }
            assert!(Instant::now() < deadline, "the VP8 encoder is still open: {st}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let vp8_frames = st["codecs"]["vp8"]["frames_encoded"].as_u64();
        let c1 = cpage.eval("wlw.stats.framesDecoded").as_u64().unwrap_or(0);
        std::thread::sleep(Duration::from_secs(1));
        let st = srv.status();
        assert_eq!(st["codecs"]["vp8"]["frames_encoded"].as_u64(), vp8_frames, "{st}");
        assert!(cpage.eval("wlw.stats.framesDecoded").as_u64().unwrap_or(0) > c1, "Chromium goes on decoding");
        let metrics = crate::stream::http("GET", &srv.url("/metrics"), &[], "").1;
        assert!(metrics.contains("wl_webrtc_encoder_open{codec=\"vp8\"} 0"), "{metrics}");
        assert!(metrics.contains("wl_webrtc_encoder_open{codec=\"h264\"} 1"), "{metrics}");
    });
}

//! ext-image-copy-capture against the test compositor (`support::compositor`, a real Wayland server on a
//! thread of this test): the library's `Capture`, the `wl-webrtc` binary, and the whole pipeline to Chromium.

use std::time::{Duration, Instant};

use testkit::pattern::quadrant_colour;
use wl_webrtc::capture::{Capture, CaptureError, CursorMode, ResolvedSource};
use wl_webrtc::config::SourceKind;
use wl_webrtc::frame::{Damage, FrameInfo, FrameLayout, Rect, pixel_rgb};

use crate::support::compositor::{CURSOR_ARGB, CURSOR_HOTSPOT, CURSOR_SIZE, Failure, OUTPUT, TestCompositor};
use crate::support::{Fixture, NEVER, assert_no_panic, output_within, quadrants_match_in};

const MAGENTA: [u8; 3] = [255, 0, 255];

fn open(comp: &TestCompositor, cursor: CursorMode) -> Capture {
    Capture::open(comp.socket(), SourceKind::ExtImageCopy, None, cursor).expect("open ext-image-copy capture")
}

fn frame(cap: &mut Capture) -> FrameInfo {
    cap.next_frame(Duration::from_secs(5), &NEVER).expect("capture").expect("a frame within 5 s")
}

fn pixel(cap: &mut Capture, info: &FrameInfo, x: u32, y: u32) -> Option<[u8; 3]> {
    let layout = info.layout;
    cap.with_pixels(|d, stride| pixel_rgb(d, &FrameLayout { stride, ..layout }, info.y_invert, x, y)).expect("pixels")
}

fn assert_quadrants(cap: &mut Capture, info: &FrameInfo) {
    let layout = info.layout;
    cap.with_pixels(|d, stride| quadrants_match_in(d, &FrameLayout { stride, ..layout }, info))
        .expect("pixels")
        .expect("quadrant colours and orientation");
}

#[test]
fn image_copy_frames_have_the_right_pixels() {
    let comp = TestCompositor::start(320, 240);
    let mut cap = open(&comp, CursorMode::Embedded);
    assert_eq!(cap.source(), ResolvedSource::ExtImageCopy);
    assert_eq!(cap.output().name, OUTPUT);
    let info = frame(&mut cap);
    assert_eq!((info.layout.width, info.layout.height), (320, 240));
    assert_eq!(info.damage, Damage::Full, "the first frame is complete");
    assert!(!info.y_invert);
    assert!(info.presented.is_some() && info.age.is_some(), "presentation time passed through: {info:?}");
    assert_quadrants(&mut cap, &info);
    assert_eq!(cap.buffer_kind(), Some("shm"), "no render node here: shm");
    let stats = comp.stats();
    assert_eq!(stats.session_options, vec![1], "embedded cursor = paint_cursors");
    assert_eq!(stats.client_damage, vec![vec![[0, 0, 320, 240]]], "a new buffer is damaged whole");
    assert!(stats.protocol_errors.is_empty(), "{:?}", stats.protocol_errors);
}

#[test]
fn image_copy_damage_rectangles_pass_through() {
    let comp = TestCompositor::start(320, 240);
    let mut cap = open(&comp, CursorMode::Embedded);
    frame(&mut cap);
    // Static screen: the compositor holds the capture, no frame.
    let t = Instant::now();
    assert!(cap.next_frame(Duration::from_millis(300), &NEVER).expect("capture").is_none());
    assert!(t.elapsed() < Duration::from_secs(2));

    comp.paint([10, 20, 30, 40], [255, 0, 0]);
    let info = frame(&mut cap);
    assert_eq!(info.damage, Damage::Rects(vec![Rect::new(10, 20, 30, 40)]));
    assert_eq!(pixel(&mut cap, &info, 15, 25), Some([255, 0, 0]));
    assert_eq!(pixel(&mut cap, &info, 39, 59), Some([255, 0, 0]));
    assert_eq!(pixel(&mut cap, &info, 40, 60), Some(quadrant_colour(320, 240, 40, 60)));
    assert_eq!(pixel(&mut cap, &info, 300, 200), Some(quadrant_colour(320, 240, 300, 200)));

    comp.paint([300, 0, 100, 5], [0, 0, 255]);
    comp.paint([0, 230, 4, 4], [0, 0, 255]);
    let info = frame(&mut cap);
    // Rectangles beyond the buffer are clipped; both changes arrive in one frame.
    assert_eq!(info.damage, Damage::Rects(vec![Rect::new(300, 0, 20, 5), Rect::new(0, 230, 4, 4)]));
    assert_eq!(pixel(&mut cap, &info, 1, 231), Some([0, 0, 255]));

    assert_eq!(cap.counters().buffer_allocations, 1, "one buffer reused");
    let stats = comp.stats();
    assert_eq!(stats.frames_ready, 3);
    assert_eq!(stats.announced_damage[1], vec![[10, 20, 30, 40]]);
    // The buffer still holds the last frame untouched: no client damage after the first capture.
    assert_eq!(stats.client_damage.len(), 3, "one capture per ready frame");
    assert!(stats.client_damage[1..].iter().all(Vec::is_empty), "{:?}", stats.client_damage);
    assert!(stats.protocol_errors.is_empty(), "{:?}", stats.protocol_errors);
}

#[test]
fn image_copy_constraints_change_renegotiates_and_continues() {
    let comp = TestCompositor::start(320, 240);
    let mut cap = open(&comp, CursorMode::Embedded);
    frame(&mut cap);
    // A capture is held (static screen) when the mode changes: new constraints, then that frame fails.
    assert!(cap.next_frame(Duration::from_millis(100), &NEVER).expect("capture").is_none());
    comp.set_size(200, 100);
    let info = frame(&mut cap);
    assert_eq!((info.layout.width, info.layout.height), (200, 100));
    assert_eq!(info.damage, Damage::Full, "the first frame at a new size is complete");
    assert_quadrants(&mut cap, &info);
    assert_eq!(cap.counters().buffer_allocations, 2);
    assert_eq!(cap.counters().failed_frames, 1);
    assert_eq!(comp.stats().failures, vec![Failure::BufferConstraints as u32]);

    // A buffer_constraints failure without new constraints (compositor-side reason): a fresh buffer, and on.
    comp.fail_next(Failure::BufferConstraints);
    comp.paint([0, 0, 8, 8], [0, 255, 0]);
    let info = frame(&mut cap);
    assert_eq!(info.damage, Damage::Full, "after a failure the buffer is not trusted");
    assert_eq!(pixel(&mut cap, &info, 4, 4), Some([0, 255, 0]));
    assert_eq!(cap.counters().buffer_allocations, 3);
    let stats = comp.stats();
    assert!(stats.protocol_errors.is_empty(), "{:?}", stats.protocol_errors);
}

#[test]
fn image_copy_failed_and_stopped_are_handled() {
    let comp = TestCompositor::start(160, 120);
    let mut cap = open(&comp, CursorMode::Hidden);
    frame(&mut cap);
    assert_eq!(comp.stats().session_options, vec![0], "hidden cursor: no paint_cursors");

    // failed(unknown): retried, the frame still arrives.
    comp.fail_next(Failure::Unknown);
    comp.paint([0, 0, 10, 10], [1, 2, 3]);
    let info = frame(&mut cap);
    assert_eq!(pixel(&mut cap, &info, 5, 5), Some([1, 2, 3]));
    assert_eq!(cap.counters().failed_frames, 1);

    // failed(stopped) on the frame.
    comp.fail_next(Failure::Stopped);
    comp.paint([0, 0, 10, 10], [4, 5, 6]);
    let err = cap.next_frame(Duration::from_secs(5), &NEVER).expect_err("stopped");
    assert!(matches!(err, CaptureError::SessionStopped(ref o) if o == OUTPUT), "{err:?}");

    // Session `stopped` while a capture is held: a clear error, every time, and no panic.
    let mut cap = open(&comp, CursorMode::Hidden);
    frame(&mut cap);
    assert!(cap.next_frame(Duration::from_millis(100), &NEVER).expect("capture").is_none());
    comp.stop_sessions();
    let err = cap.next_frame(Duration::from_secs(5), &NEVER).expect_err("stopped");
    assert!(matches!(err, CaptureError::SessionStopped(_)), "{err:?}");
    assert!(err.to_string().contains("stopped capturing TEST-1"), "{err}");
    assert!(matches!(cap.check_alive(), Err(CaptureError::SessionStopped(_))));
    assert!(cap.next_frame(Duration::from_millis(50), &NEVER).is_err());
    drop(cap);

    // A new session (what the server's retry does) captures again.
    let mut cap = open(&comp, CursorMode::Hidden);
    let info = frame(&mut cap);
    assert_eq!(pixel(&mut cap, &info, 5, 5), Some([4, 5, 6]));
    let stats = comp.stats();
    assert!(stats.protocol_errors.is_empty(), "{:?}", stats.protocol_errors);
}

#[test]
fn image_copy_cursor_metadata_delivered_when_asked() {
    let comp = TestCompositor::start(320, 240);
    comp.set_cursor(Some((100, 50)));
    let mut cap = open(&comp, CursorMode::Metadata);
    let info = frame(&mut cap);
    // Metadata mode: the cursor is not painted in.
    assert_eq!(pixel(&mut cap, &info, 100, 50), Some(quadrant_colour(320, 240, 100, 50)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while cap.cursor().and_then(|c| c.image.as_ref()).is_none() {
        assert!(Instant::now() < deadline, "no cursor image within 5 s: {:?}", cap.cursor());
        cap.next_frame(Duration::from_millis(50), &NEVER).expect("capture");
    }
    let c = cap.cursor().expect("cursor metadata").clone();
    assert!(c.inside);
    assert_eq!((c.x, c.y), (100, 50));
    assert_eq!((c.hotspot_x, c.hotspot_y), CURSOR_HOTSPOT);
    let img = c.image.as_ref().expect("image");
    assert_eq!((img.width, img.height), (CURSOR_SIZE, CURSOR_SIZE));
    let [_, r, g, b] = CURSOR_ARGB.to_be_bytes();
    assert_eq!(img.pixel_rgb(0, 0), Some([r, g, b]));
    assert_eq!(img.pixel_rgb(15, 15), Some(MAGENTA));

    // Moves arrive without any output frame; leaving is reported.
    comp.set_cursor(Some((10, 20)));
    cap.next_frame(Duration::from_millis(200), &NEVER).expect("capture");
    let c = cap.cursor().expect("cursor");
    assert_eq!((c.x, c.y, c.inside), (10, 20, true));
    comp.set_cursor(None);
    cap.next_frame(Duration::from_millis(200), &NEVER).expect("capture");
    assert!(!cap.cursor().expect("cursor").inside);
    let stats = comp.stats();
    assert_eq!((stats.session_options.clone(), stats.cursor_sessions), (vec![0], 1));
    assert!(stats.cursor_frames_ready >= 1);
    assert!(stats.protocol_errors.is_empty(), "{:?}", stats.protocol_errors);
    drop(cap);

    // Embedded: painted in by the compositor, no cursor metadata.
    comp.set_cursor(Some((100, 50)));
    let mut cap = open(&comp, CursorMode::Embedded);
    let info = frame(&mut cap);
    assert_eq!(pixel(&mut cap, &info, 100, 50), Some(MAGENTA));
    assert!(cap.cursor().is_none());
}

#[test]
fn image_copy_cli_capture_png_and_cursor_json() {
    let comp = TestCompositor::start(320, 240);
    comp.set_cursor(Some((30, 40)));
    let dir = std::env::temp_dir().join(format!("wl-webrtc-icpng-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let png_path = dir.join("frame.png");
    let png_arg = png_path.to_str().expect("utf-8");
    let args =
        ["capture", "--source", "ext-image-copy", "--cursor", "metadata", "--frames", "1", "--json", "--png", png_arg];
    let out = output_within(comp.cli(&args), Duration::from_secs(20));
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["source"], "ext-image-copy", "{r}");
    assert_eq!((r["width"].as_u64(), r["height"].as_u64(), r["frames"].as_u64()), (Some(320), Some(240), Some(1)));
    assert_eq!((r["cursor"]["x"].as_i64(), r["cursor"]["y"].as_i64()), (Some(30), Some(40)), "{r}");
    assert_eq!(r["cursor"]["inside"], true);
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png_path).expect("png written")));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    reader.next_frame(&mut buf).expect("png data");
    for (x, y) in [(10u32, 10u32), (310, 10), (10, 230), (310, 230)] {
        let off = (y as usize * 320 + x as usize) * 3;
        assert_eq!(&buf[off..off + 3], &quadrant_colour(320, 240, x, y), "png pixel ({x},{y})");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn image_copy_auto_picks_ext_image_copy_on_the_test_compositor_and_screencopy_on_sway() {
    let comp = TestCompositor::start(320, 240);
    let out = output_within(comp.cli(&["list-outputs", "--json"]), Duration::from_secs(20));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let outputs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(outputs[0]["name"], OUTPUT);
    assert_eq!(outputs[0]["sources"], serde_json::json!(["ext-image-copy"]));
    let out = output_within(comp.cli(&["capture", "--frames", "1", "--json"]), Duration::from_secs(20));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["source"], "ext-image-copy", "auto on the test compositor: {r}");
    let out = output_within(comp.cli(&["capture", "--frames", "1", "--source", "screencopy"]), Duration::from_secs(20));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not offer wlr-screencopy") && err.contains("--source ext-image-copy"), "{err}");
    drop(comp);

    let f = Fixture::start(320, 240, 60);
    let out =
        output_within(f.cli(&["capture", "--frames", "1", "--json", "--source", "auto"]), Duration::from_secs(20));
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["source"], "screencopy", "auto on Sway 1.7: {r}");
    let out =
        output_within(f.cli(&["capture", "--frames", "1", "--source", "ext-image-copy"]), Duration::from_secs(20));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not offer ext-image-copy-capture"), "{err}");
}

#[test]
fn image_copy_streams_to_chromium() {
    use crate::stream::{DECODING, SERIAL, Server, close_to, video_pixel_js};
    use crate::support::browser::Browser;
    use crate::support::netns::in_private_netns;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let comp = TestCompositor::start(640, 480);
        comp.animate(true);
        let srv = Server::spawn(comp.cli(&["start", "--listen", "127.0.0.1:0", "--source", "ext-image-copy"]));
        let browser = Browser::launch();
        let mut page = browser.new_page(&srv.url("/?gum=1"));
        page.wait_for(DECODING, Duration::from_secs(30));
        let a = page.eval("wlw.stats.framesDecoded").as_u64().unwrap_or(0);
        std::thread::sleep(Duration::from_secs(1));
        let b = page.eval("wlw.stats.framesDecoded").as_u64().unwrap_or(0);
        assert!(b > a + 10, "frames keep being decoded: {a} → {b}");
        let st = page.eval("wlw.stats");
        assert_eq!((st["width"].as_u64(), st["height"].as_u64()), (Some(640), Some(480)), "{st}");
        // Away from the moving bar (top tenth), the quadrants.
        for (x, y) in [(160, 360), (480, 360), (160, 200), (480, 200)] {
            let px = page.eval(&video_pixel_js(x, y));
            assert!(close_to(&px, quadrant_colour(640, 480, x, y)), "pixel ({x},{y}) = {px}");
        }
        assert_eq!(srv.status()["viewers"].as_u64(), Some(1));
        assert!(comp.stats().frames_ready > 30);

        // The compositor stops the session: the server reports the loss, opens a new session and the same
        // viewer keeps decoding.
        comp.stop_sessions();
        let deadline = Instant::now() + Duration::from_secs(5);
        let lost = loop {
            let capture = srv.status()["capture"].as_str().unwrap_or("").to_owned();
            if capture.starts_with("lost") {
                break capture;
            }
            assert!(Instant::now() < deadline, "the stopped session was not reported: {capture}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(lost.contains("stopped capturing TEST-1"), "{lost}");
        while srv.status()["capture"] != "ok" {
            assert!(Instant::now() < deadline, "capture did not come back: {}", srv.status());
            std::thread::sleep(Duration::from_millis(50));
        }
        let c = page.eval("wlw.stats.framesDecoded").as_u64().unwrap_or(0);
        std::thread::sleep(Duration::from_secs(1));
        let d = page.eval("wlw.stats.framesDecoded").as_u64().unwrap_or(0);
        assert!(d > c + 10, "decoding resumes after the new session: {c} → {d}");
        assert_eq!(comp.stats().session_options.len(), 2, "one new session");
    });
}

/// The test compositor itself follows the protocol text: misuse is a protocol error naming the rule.
#[test]
fn image_copy_test_compositor_enforces_the_protocol() {
    use wayland_protocols::ext::image_capture_source::v1::client::ext_output_image_capture_source_manager_v1::ExtOutputImageCaptureSourceManagerV1 as SourceManager;
    use wayland_protocols::ext::image_copy_capture::v1::client::ext_image_copy_capture_manager_v1::{
        ExtImageCopyCaptureManagerV1 as Manager, Options,
    };
    use wl_webrtc::buffer::shm::ShmBuffer;
    use wl_webrtc::capture::CaptureSession;
    use wl_webrtc::capture::image_copy::ImageCopyData as D;
    use wl_webrtc::frame::PixelFormat;

    let comp = TestCompositor::start(64, 64);
    let cases = [
        "create_frame before the previous frame was destroyed",
        "capture without a buffer",
        "invalid buffer damage",
        "capture sent twice",
        "attach_buffer after capture",
        "options 0x2",
    ];
    // Each misuse on a fresh connection (a protocol error ends the client).
    for want in cases {
        let mut s = CaptureSession::connect(comp.socket()).expect("connect");
        let qh = s.handle();
        let manager: Manager = s.globals.bind(&qh, 1..=1, D).expect("manager");
        let sources: SourceManager = s.globals.bind(&qh, 1..=1, D).expect("source manager");
        let (output, _) = s.find_output(None).expect("output");
        let source = sources.create_source(&output, &qh, D);
        let options = if want.starts_with("options") { Options::from_bits_retain(2) } else { Options::empty() };
        let session = manager.create_session(&source, options, &qh, D);
        let frame = session.create_frame(&qh, D);
        let layout = FrameLayout { width: 64, height: 64, stride: 256, format: PixelFormat::Xrgb8888 };
        let buffer = ShmBuffer::new(&s.state.shm, layout, &qh).expect("shm buffer");
        match want {
            "create_frame before the previous frame was destroyed" => drop(session.create_frame(&qh, D)),
            "capture without a buffer" => frame.capture(),
            "invalid buffer damage" => frame.damage_buffer(-1, 0, 4, 4),
            "capture sent twice" | "attach_buffer after capture" => {
                frame.attach_buffer(buffer.wl_buffer());
                frame.damage_buffer(0, 0, 64, 64);
                frame.capture();
                if want == "capture sent twice" {
                    frame.capture();
                } else {
                    frame.attach_buffer(buffer.wl_buffer());
                }
            }
            _ => {}
        }
        let err = s.queue.roundtrip(&mut s.state).expect_err("a protocol error");
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
    let errors = comp.stats().protocol_errors;
    assert_eq!(errors.len(), cases.len(), "{errors:?}");
}

#[test]
fn image_copy_cursor_metadata_reaches_the_viewer_page() {
    use crate::stream::{DECODING, SERIAL};
    use crate::support::browser::Browser;
    use crate::support::netns::in_private_netns;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        // 800x600 in the 1280x720 page: the picture is letterboxed (scale 1.2, 160 px bars left and right).
        let comp = TestCompositor::start(800, 600);
        comp.animate(true);
        let srv = cursor_metadata_server(&comp);
        let browser = Browser::launch();
        let mut page = browser.new_page(&srv.url("/?gum=1"));
        page.wait_for(DECODING, Duration::from_secs(30));
        cursor_metadata_follows(&mut page, &comp);
    });
}

/// `wl-webrtc start` on the test compositor with cursor metadata, its pointer in the middle of the output.
pub(crate) fn cursor_metadata_server(comp: &TestCompositor) -> crate::stream::Server {
    comp.set_cursor(Some((400, 300)));
    crate::stream::Server::spawn(comp.cli(&[
        "start",
        "--listen",
        "127.0.0.1:0",
        "--source",
        "ext-image-copy",
        "--cursor",
        "metadata",
    ]))
}

/// The page (any browser) shows the test compositor's cursor where it is, at the picture's scale, follows it
/// and hides it when the pointer leaves the output. The desktop is 800x600 in a 1280x720 page: the picture is
/// letterboxed (scale 1.2, 160 px bars left and right).
pub(crate) fn cursor_metadata_follows(page: &mut impl testkit::browser::BrowserPage, comp: &TestCompositor) {
    use crate::support::compositor::{CURSOR_HOTSPOT, CURSOR_SIZE};
    let mut placed = |x: f64, y: f64| {
        // The hotspot lands on the output point (x, y); the image is drawn at the picture's scale.
        let s = 1.2;
        let want = (160.0 + x * s - f64::from(CURSOR_HOTSPOT.0) * s, y * s - f64::from(CURSOR_HOTSPOT.1) * s);
        let js = format!(
            "wlw.cursor.shown && Math.abs(wlw.cursor.shown.left - {}) < 1.5 && Math.abs(wlw.cursor.shown.top - {}) \
             < 1.5 && Math.abs(wlw.cursor.shown.width - {}) < 0.5",
            want.0,
            want.1,
            f64::from(CURSOR_SIZE) * s
        );
        page.wait_for(&js, Duration::from_secs(10));
    };
    comp.set_cursor(Some((400, 300)));
    placed(400.0, 300.0);
    comp.set_cursor(Some((100, 500)));
    placed(100.0, 500.0);
    let img = page.eval("document.getElementById('cursor').src.slice(0, 30)");
    assert_eq!(img.as_str(), Some("data:image/png;base64,iVBORw0K"), "{img}");
    comp.set_cursor(None);
    page.wait_for(
        "wlw.cursor.shown === null && document.getElementById('cursor').style.display === 'none'",
        Duration::from_secs(10),
    );
}

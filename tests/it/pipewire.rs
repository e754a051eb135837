//! The PipeWire source against a real PipeWire + WirePlumber (and, for the portal, xdg-desktop-portal +
//! xdg-desktop-portal-wlr on headless Sway), each test in its own private session (`support::pipewire`).

use std::path::Path;
use std::time::{Duration, Instant};

use testkit::pattern::PatternKind;
use testkit::pattern::quadrant_colour;
use wl_webrtc::capture::pipewire::{PipewireCapture, PipewireError, PipewireOptions};
use wl_webrtc::capture::portal::PortalError;
use wl_webrtc::capture::{Capture, CaptureError, CursorMode, ResolvedSource};
use wl_webrtc::config::SourceKind;
use wl_webrtc::frame::{Damage, FrameInfo, FrameLayout, pixel_rgb};

use crate::support::pipewire::PwSession;
use crate::support::{Fixture, NEVER};

fn open(opts: &PipewireOptions) -> Result<Capture, CaptureError> {
    Capture::open_with(Path::new(""), SourceKind::Pipewire, None, CursorMode::Embedded, opts)
}

fn frame(cap: &mut Capture) -> FrameInfo {
    cap.next_frame(Duration::from_secs(5), &NEVER).expect("capture").expect("a frame within 5 s")
}

fn pixel(cap: &mut Capture, info: &FrameInfo, x: u32, y: u32) -> Option<[u8; 3]> {
    let layout = info.layout;
    cap.with_pixels(|d, stride| pixel_rgb(d, &FrameLayout { stride, ..layout }, info.y_invert, x, y)).expect("pixels")
}

/// Sample points of each quadrant: three per quadrant, more than the moving bar's width (64) apart, so the
/// bar covers at most one of them.
fn samples(w: u32, h: u32) -> Vec<[(u32, u32); 3]> {
    let mut v = Vec::new();
    for (qx, qy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        let y = qy * h / 2 + h / 4;
        let x0 = qx * w / 2;
        v.push([(x0 + w / 16, y), (x0 + w / 4, y), (x0 + 7 * w / 16, y)]);
    }
    v
}

/// The quadrants are on screen (a moving bar may hide one sample per quadrant).
fn quadrants(cap: &mut Capture, info: &FrameInfo) -> Result<(), String> {
    let (w, h) = (info.layout.width, info.layout.height);
    for quad in samples(w, h) {
        let good = quad.iter().filter(|&&(x, y)| pixel(cap, info, x, y) == Some(quadrant_colour(w, h, x, y))).count();
        if good < 2 {
            let got: Vec<_> = quad.iter().map(|&(x, y)| ((x, y), pixel(cap, info, x, y))).collect();
            return Err(format!("{w}x{h}: quadrant samples {got:?}"));
        }
    }
    Ok(())
}

/// Wait (up to `limit`) for a frame of `width`x`height` whose quadrants are right.
fn wait_for_quadrants(cap: &mut Capture, width: u32, height: u32, limit: Duration) -> FrameInfo {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no {width}x{height} quadrant frame within {limit:?}; last: {last}; {:?}",
            cap.counters()
        );
        let Some(info) = cap.next_frame(Duration::from_millis(500), &NEVER).expect("capture") else { continue };
        if (info.layout.width, info.layout.height) != (width, height) {
            last = format!("{}x{}", info.layout.width, info.layout.height);
            continue;
        }
        match quadrants(cap, &info) {
            Ok(()) => return info,
            Err(e) => last = e,
        }
    }
}

/// Headless Sway with the moving-bar pattern (quadrants + a moving vertical bar): the desktop keeps
/// changing, so a damage-driven producer keeps sending frames.
fn animated_desktop(width: u32, height: u32) -> Fixture {
    let mut f = Fixture::start(width, height, 60);
    f.spawn_pattern(PatternKind::MovingBar, None);
    f.wait_for_animation();
    f
}

#[test]
fn pipewire_node_frames_have_the_right_pixels() {
    let mut s = PwSession::start();
    let colour = [0xcc, 0x33, 0x66];
    s.solid_source("wlw-test-solid", colour, 320, 240);
    let t = Instant::now();
    let mut cap = open(&s.options(Some("wlw-test-solid"))).expect("open the node");
    assert_eq!(cap.source(), ResolvedSource::Pipewire);
    assert_eq!(cap.output().name, "pipewire:wlw-test-solid");
    let info = frame(&mut cap);
    eprintln!("first frame {:?} after open", t.elapsed());
    assert_eq!((info.layout.width, info.layout.height), (320, 240));
    assert_eq!(info.damage, Damage::Full, "no damage metadata from videotestsrc: full frames");
    for (x, y) in [(0, 0), (319, 0), (0, 239), (319, 239), (160, 120)] {
        assert_eq!(pixel(&mut cap, &info, x, y), Some(colour), "pixel ({x},{y})");
    }
    // Frames keep coming, in one negotiated format.
    let t = Instant::now();
    let mut n = 0;
    while n < 10 {
        assert!(t.elapsed() < Duration::from_secs(5), "only {n} frames in 5 s");
        n += usize::from(cap.next_frame(Duration::from_millis(500), &NEVER).expect("capture").is_some());
    }
    assert_eq!(cap.buffer_kind(), Some("shm"));
    assert_eq!(cap.counters().buffer_allocations, 1, "one format negotiated");
    assert_eq!(cap.counters().failed_frames, 0);
}

/// The first frame from `node` and the buffer kind it came in, after checking its pixels are `colour`.
fn solid_frames(s: &PwSession, node: &str, colour: [u8; 3], w: u32, h: u32) -> Capture {
    let mut cap = open(&s.options(Some(node))).expect("open the node");
    // Frames keep coming, each the solid colour.
    for _ in 0..5 {
        let info = frame(&mut cap);
        assert_eq!((info.layout.width, info.layout.height), (w, h));
        for (x, y) in [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), (w / 2, h / 2)] {
            assert_eq!(pixel(&mut cap, &info, x, y), Some(colour), "pixel ({x},{y}) from {node}");
        }
    }
    cap
}

#[test]
fn dmabuf_is_negotiated_with_a_producer_that_offers_it_and_memfd_with_one_that_does_not() {
    let mut s = PwSession::start();
    let (w, h) = (256, 144);
    // A producer of DMA-BUFs only (LINEAR): negotiated, mapped by us, right pixels.
    let colour = [0x20, 0xa0, 0xe0];
    s.producer("wlw-dmabuf", "dmabuf", colour, w, h);
    let cap = solid_frames(&s, "wlw-dmabuf", colour, w, h);
    assert_eq!(cap.buffer_kind(), Some("dmabuf"), "{:?}", cap.counters());
    assert_eq!(cap.counters().failed_frames, 0);
    assert!(s.log("wlw-dmabuf").contains("streaming dmabuf"), "{}", s.log("wlw-dmabuf"));
    drop(cap);
    // A producer of MemFd only: our DMA-BUF format (mandatory modifier) does not intersect, shared memory does.
    let colour = [0xe0, 0x40, 0x10];
    s.producer("wlw-memfd", "memfd", colour, w, h);
    let cap = solid_frames(&s, "wlw-memfd", colour, w, h);
    assert_eq!(cap.buffer_kind(), Some("shm"));
    assert_eq!(cap.counters().buffer_allocations, 1, "one format negotiated");
    assert!(s.log("wlw-memfd").contains("streaming memfd") && !s.log("wlw-memfd").contains("streaming dmabuf"));
}

#[test]
fn a_dmabuf_that_cannot_be_mapped_falls_back_to_shared_memory() {
    let mut s = PwSession::start();
    let (w, h) = (160, 90);
    let colour = [0x80, 0x10, 0xc0];
    // DMA-BUF first (its fds cannot be mapped), MemFd second: we drop DMA-BUF and renegotiate.
    s.producer("wlw-unmappable", "both-unmappable", colour, w, h);
    let cap = solid_frames(&s, "wlw-unmappable", colour, w, h);
    assert_eq!(cap.buffer_kind(), Some("shm"));
    let log = s.log("wlw-unmappable");
    assert!(log.contains("streaming dmabuf") && log.contains("streaming memfd"), "{log}");
    assert!(cap.counters().buffer_allocations >= 2, "DMA-BUF, then shared memory: {:?}", cap.counters());
}

#[test]
fn yuv_producers_stream_and_a_format_we_cannot_read_is_named() {
    let _ = tracing_subscriber::fmt().with_env_filter("wl_webrtc=debug").with_test_writer().try_init();
    let mut s = PwSession::start();
    let colour = [0x20, 0xa0, 0xe0];
    // I420 (videotestsrc's native format, cameras', most GStreamer pipelines'), NV12 at an odd-ish size, YUY2.
    let cases = [
        ("wlw-yuv-i420", Some("video/x-raw,format=I420")),
        ("wlw-yuv-nv12", Some("video/x-raw,format=NV12,width=322,height=182")),
        ("wlw-yuv-yuy2", Some("video/x-raw,format=YUY2,width=160,height=120")),
    ];
    for (node, caps) in cases {
        s.solid_source_caps(node, colour, caps);
        let mut cap = open(&s.options(Some(node))).unwrap_or_else(|e| panic!("open {node}: {e}"));
        let info = cap
            .next_frame(Duration::from_secs(5), &NEVER)
            .expect("capture")
            .unwrap_or_else(|| panic!("no frame from {node} within 5 s: {:?}\n{}", cap.counters(), s.log(node)));
        let (w, h) = (info.layout.width, info.layout.height);
        if node == "wlw-yuv-i420" {
            assert_eq!((w, h), (320, 240), "videotestsrc's default size");
        }
        // Through YUV and back: within a few levels of the colour everywhere.
        for (x, y) in [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), (w / 2, h / 2)] {
            let px = pixel(&mut cap, &info, x, y).expect("pixel");
            assert!(
                px.iter().zip(colour).all(|(a, b)| a.abs_diff(b) <= 8),
                "{node} ({x},{y}) = {px:?}, want {colour:?}"
            );
        }
        assert_eq!(cap.counters().failed_frames, 0, "{node}");
        drop(cap);
        s.kill(node);
    }
    // A node in a format we do not read: the error (at once, not after the connect timeout) names what it
    // offers and what we accept.
    s.solid_source_caps("wlw-gray", colour, Some("video/x-raw,format=GRAY8,width=64,height=64"));
    let t = Instant::now();
    let err = open(&s.options(Some("wlw-gray"))).expect_err("GRAY8 cannot be read");
    let text = err.to_string();
    assert!(
        text.contains("offers GRAY8") && text.contains("wl-webrtc accepts BGRx") && text.contains("I420"),
        "{text}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // No caps filter at all: GStreamer negotiates a format PipeWire has no name for; said as such.
    s.solid_source_caps("wlw-nocaps", colour, None);
    let text = open(&s.options(Some("wlw-nocaps"))).expect_err("unnamed format").to_string();
    assert!(text.contains("without a PipeWire name") && text.contains("caps filter"), "{text}");
}

/// Take frames until the capture fails (5 s at most).
fn wait_for_error(cap: &mut Capture, what: &str) -> CaptureError {
    let t = Instant::now();
    loop {
        assert!(t.elapsed() < Duration::from_secs(5), "no error within 5 s of {what}");
        if let Err(e) = cap.next_frame(Duration::from_millis(200), &NEVER) {
            return e;
        }
    }
}

#[test]
fn pipewire_node_removed_and_daemon_gone_are_errors_not_hangs() {
    let mut s = PwSession::start();
    s.solid_source("wlw-test-gone", [0, 255, 0], 64, 64);
    let mut cap = open(&s.options(Some("wlw-test-gone"))).expect("open the node");
    frame(&mut cap);
    // The producer goes away: the stream ends with an error (no hang, no reconnect to another node).
    s.kill("wlw-test-gone");
    let err = wait_for_error(&mut cap, "the node going away");
    assert!(matches!(err, CaptureError::Pipewire(PipewireError::NodeGone(_) | PipewireError::Stream { .. })), "{err}");
    drop(cap);

    // A fresh node, then the daemon dies mid-stream.
    s.solid_source("wlw-test-gone-2", [0, 0, 255], 64, 64);
    let mut cap = open(&s.options(Some("wlw-test-gone-2"))).expect("open the node");
    frame(&mut cap);
    s.kill("wireplumber");
    s.kill("pipewire");
    let t = Instant::now();
    let err = wait_for_error(&mut cap, "the daemon going away");
    eprintln!("daemon gone after {:?}: {err}", t.elapsed());
    assert!(matches!(err, CaptureError::Pipewire(PipewireError::DaemonGone(_) | PipewireError::NodeGone(_))), "{err}");
    let t = Instant::now();
    drop(cap);
    assert!(t.elapsed() < Duration::from_secs(2), "closing after the daemon died took {:?}", t.elapsed());
}

#[test]
fn pipewire_missing_daemon_node_bus_and_portal_fail_fast_with_clear_errors() {
    let s = PwSession::bus_only();
    // No PipeWire daemon.
    let t = Instant::now();
    let err = open(&s.options(Some("anything"))).expect_err("no daemon");
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    assert!(matches!(err, CaptureError::Pipewire(PipewireError::DaemonNotRunning(_))), "{err}");
    assert!(err.to_string().contains("is PipeWire running"), "{err}");
    // A bus without any portal service.
    let t = Instant::now();
    let err = open(&s.options(None)).expect_err("no portal");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert!(matches!(err, CaptureError::Portal(PortalError::NoPortal(_))), "{err}");
    assert!(err.to_string().contains("install xdg-desktop-portal"), "{err}");
    // No session bus at all.
    let opts = PipewireOptions { bus_address: Some(format!("unix:path={}/nobus", s.dir.display())), ..s.options(None) };
    let err = open(&opts).expect_err("no bus");
    assert!(matches!(err, CaptureError::Portal(PortalError::NoSessionBus(_))), "{err}");
    drop(s);

    // A daemon, but no such node.
    let s = PwSession::start();
    let t = Instant::now();
    let err = open(&s.options(Some("wlw-no-such-node"))).expect_err("no such node");
    eprintln!("no such node after {:?}: {err}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(12), "took {:?}", t.elapsed());
    assert!(matches!(err, CaptureError::Pipewire(PipewireError::Stream { .. })), "{err}");
    assert!(err.to_string().contains("no such video node"), "{err}");
}

#[test]
fn pipewire_portal_captures_the_desktop_and_follows_a_size_change() {
    let f = animated_desktop(640, 480);
    let s = PwSession::with_portal(&f, "HEADLESS-1");
    let t = Instant::now();
    let mut cap = open(&s.options(None)).unwrap_or_else(|e| panic!("portal: {e}\nxdpw log:\n{}", s.log("xdpw")));
    eprintln!("portal session + stream open in {:?}", t.elapsed());
    assert_eq!(cap.source(), ResolvedSource::Pipewire);
    assert!(cap.output().name.starts_with("portal:"), "{}", cap.output().name);
    assert_eq!((cap.output().width, cap.output().height), (640, 480), "size from the portal");
    let info = wait_for_quadrants(&mut cap, 640, 480, Duration::from_secs(10));
    eprintln!("first quadrant frame {:?} after start", t.elapsed());
    assert_eq!(info.layout.format.fourcc_str(), "XR24", "xdpw sends BGRx = XRGB8888");
    // The restore token was saved for next time.
    let token = std::fs::read_to_string(s.token_path()).expect("restore token saved");
    assert!(!token.trim().is_empty());

    // The output changes mode mid-stream: xdpw renegotiates, frames continue at the new size.
    f.swaymsg(&["output", "HEADLESS-1", "mode", "--custom", "800x600@60Hz"]);
    wait_for_quadrants(&mut cap, 800, 600, Duration::from_secs(10));
    assert!(cap.counters().buffer_allocations >= 2, "{:?}", cap.counters());
    drop(cap);

    // Second session: the saved token is offered (and replaced by a fresh one). `--cursor metadata`: xdpw
    // offers only hidden/embedded, so the cursor is painted in and no metadata is reported.
    let mut cap = Capture::open_with(Path::new(""), SourceKind::Pipewire, None, CursorMode::Metadata, &s.options(None))
        .expect("portal again with the restore token");
    wait_for_quadrants(&mut cap, 800, 600, Duration::from_secs(10));
    assert!(cap.cursor().is_none());
}

#[test]
fn pipewire_portal_cancel_and_backend_failure_are_clear_errors() {
    let f = Fixture::start(320, 240, 60);
    // xdpw pointed at an output that does not exist: with chooser_type=none it finds nothing to share and
    // answers Start with response 1 (cancelled), as a user closing the dialog would.
    let s = PwSession::with_portal(&f, "NOPE-9");
    let t = Instant::now();
    let err = open(&s.options(None)).expect_err("portal cancel");
    eprintln!("cancelled after {:?}: {err}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(matches!(err, CaptureError::Portal(PortalError::Cancelled)), "{err}");
    assert!(err.to_string().contains("cancelled in the portal dialog"), "{err}");
    assert!(!s.token_path().exists(), "no token from a cancelled session");
    drop(s);

    // xdpw 0.7.0 without the fixture's shim fails Start on this GPU-less Sway: response 2.
    let s = PwSession::with_portal_shim(&f, "HEADLESS-1", false);
    let t = Instant::now();
    let err = open(&s.options(None)).expect_err("backend failure");
    eprintln!("backend failure after {:?}: {err}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(matches!(err, CaptureError::Portal(PortalError::Denied(_))), "{err}");
    assert!(err.to_string().contains("response 2"), "{err}");
}

#[test]
fn pipewire_capture_is_reachable_directly() {
    // The library type used by Capture is public for embedders too.
    let s = PwSession::start();
    let err = PipewireCapture::open(&s.options(Some("wlw-absent")), CursorMode::Embedded).expect_err("absent");
    assert!(err.to_string().contains("wlw-absent"), "{err}");
}

#[test]
fn pipewire_streams_to_chromium() {
    use crate::stream::{DECODING, SERIAL, Server, close_to, video_pixel_js};
    use crate::support::browser::Browser;
    use crate::support::netns::in_private_netns;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = animated_desktop(640, 480);
        let s = PwSession::with_portal(&f, "HEADLESS-1");
        let mut cmd = f.cli(&["start", "--listen", "127.0.0.1:0", "--source", "pipewire"]);
        s.apply_env(&mut cmd);
        let srv = Server::spawn(cmd);
        let browser = Browser::launch();
        let mut page = browser.new_page(&srv.url("/?gum=1"));
        page.wait_for(DECODING, Duration::from_secs(30));
        let st = page.eval("wlw.stats");
        assert_eq!((st["width"].as_u64(), st["height"].as_u64()), (Some(640), Some(480)), "{st}");
        let a = page.eval("wlw.stats.framesDecoded").as_u64().unwrap_or(0);
        std::thread::sleep(Duration::from_secs(1));
        let b = page.eval("wlw.stats.framesDecoded").as_u64().unwrap_or(0);
        assert!(b > a + 10, "frames keep being decoded: {a} → {b}");
        for quad in samples(640, 480) {
            let px: Vec<_> = quad.iter().map(|&(x, y)| page.eval(&video_pixel_js(x, y))).collect();
            let good =
                quad.iter().zip(&px).filter(|&(&(x, y), p)| close_to(p, quadrant_colour(640, 480, x, y))).count();
            assert!(good >= 2, "quadrant samples {quad:?} = {px:?}");
        }
        let status = srv.status();
        assert_eq!(status["capture"], "ok", "{status}");
        assert!(status["output"].as_str().unwrap_or("").starts_with("portal:"), "{status}");
    });
}

/// The id of the node called `name`, from `pw-cli ls Node`.
fn node_id(s: &PwSession, name: &str) -> u32 {
    let ls = s.pw_cli(&["ls", "Node"]);
    let block = ls
        .split("\tid ")
        .find(|b| b.contains(&format!("node.name = \"{name}\"")))
        .unwrap_or_else(|| panic!("no node {name} in {ls}"));
    block.split(',').next().and_then(|id| id.trim().parse().ok()).unwrap_or_else(|| panic!("no id in {block}"))
}

#[test]
fn pipewire_cli_captures_a_node_by_name_and_by_id_without_a_compositor() {
    let mut s = PwSession::start();
    s.solid_source("wlw-cli-by-name", [255, 0, 0], 160, 120);
    s.solid_source("wlw-cli-by-id", [0, 0, 255], 128, 96);
    let id = node_id(&s, "wlw-cli-by-id").to_string();
    for (node, size) in [("wlw-cli-by-name", (160, 120)), (id.as_str(), (128, 96))] {
        let mut cmd = std::process::Command::new(crate::support::bin());
        cmd.args(["capture", "--pipewire-node", node, "--frames", "5", "--json"]);
        s.apply_env(&mut cmd);
        let out = crate::support::output_within(cmd, Duration::from_secs(20));
        crate::support::assert_no_panic(&out);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(r["source"], "pipewire", "{r}");
        assert_eq!(r["output"], format!("pipewire:{node}"), "{r}");
        assert_eq!((r["width"].as_u64(), r["height"].as_u64()), (Some(size.0), Some(size.1)), "{r}");
        assert_eq!(r["frames"].as_u64(), Some(5), "{r}");
    }
}

#[test]
fn pipewire_server_reports_a_lost_node_and_recovers() {
    use crate::stream::Server;
    use crate::support::netns::in_private_netns;
    in_private_netns(|| {
        let mut s = PwSession::start();
        s.solid_source("wlw-srv-node", [0, 255, 0], 160, 120);
        let mut cmd = std::process::Command::new(crate::support::bin());
        cmd.args(["start", "--listen", "127.0.0.1:0", "--pipewire-node", "wlw-srv-node"]);
        s.apply_env(&mut cmd);
        let srv = Server::spawn(cmd);
        assert_eq!(srv.status()["capture"], "ok", "{}", srv.status());
        // The producer goes away: reported as lost (the server keeps running and retries).
        s.kill("wlw-srv-node");
        let deadline = Instant::now() + Duration::from_secs(5);
        let lost = loop {
            let c = srv.status()["capture"].as_str().unwrap_or("").to_owned();
            if c.starts_with("lost") {
                break c;
            }
            assert!(Instant::now() < deadline, "the lost node was not reported: {c}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(lost.contains("wlw-srv-node"), "{lost}");
        // A producer of the same name comes back: capture resumes.
        s.solid_source("wlw-srv-node", [0, 255, 0], 160, 120);
        let deadline = Instant::now() + Duration::from_secs(10);
        while srv.status()["capture"] != "ok" {
            assert!(Instant::now() < deadline, "capture did not come back: {}", srv.status());
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}

#[test]
fn pipewire_node_size_change_mid_stream_and_damage_metadata() {
    use crate::support::pipewire::TestProducer;
    let s = PwSession::start();
    let colour = [0x20, 0xa0, 0x40];
    let producer = TestProducer::start(&s, "wlw-producer", colour, 320, 240);
    let mut cap = open(&s.options(Some("wlw-producer"))).expect("open the producer's node");
    let info = frame(&mut cap);
    assert_eq!((info.layout.width, info.layout.height), (320, 240));
    assert_eq!(pixel(&mut cap, &info, 319, 239), Some(colour));
    producer.resize(200, 150);
    let deadline = Instant::now() + Duration::from_secs(10);
    let info = loop {
        assert!(Instant::now() < deadline, "no 200x150 frame after the producer changed size");
        let Some(info) = cap.next_frame(Duration::from_millis(500), &NEVER).expect("capture") else { continue };
        if (info.layout.width, info.layout.height) == (200, 150) {
            break info;
        }
    };
    assert_eq!(info.damage, Damage::Full, "the first frame of a new size is complete");
    for (x, y) in [(0, 0), (199, 0), (0, 149), (199, 149)] {
        assert_eq!(pixel(&mut cap, &info, x, y), Some(colour), "pixel ({x},{y}) after the size change");
    }
    assert_eq!(cap.counters().buffer_allocations, 2, "two formats");
    // Frames keep coming at the new size.
    assert_eq!((frame(&mut cap).layout.width, frame(&mut cap).layout.height), (200, 150));

    // SPA video damage passes through: a patch painted and announced as the only damage.
    let red = [255, 0, 0];
    producer.paint([10, 20, 30, 40], red);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = Damage::Full;
    let info = loop {
        assert!(Instant::now() < deadline, "no frame with the patch's damage; last {last:?}");
        let info = frame(&mut cap);
        last = info.damage.clone();
        if info.damage == Damage::Rects(vec![wl_webrtc::frame::Rect::new(10, 20, 30, 40)]) {
            break info;
        }
    };
    assert_eq!(pixel(&mut cap, &info, 10, 20), Some(red));
    assert_eq!(pixel(&mut cap, &info, 39, 59), Some(red));
    assert_eq!(pixel(&mut cap, &info, 40, 60), Some(colour));
    assert_eq!(pixel(&mut cap, &info, 9, 20), Some(colour));
    assert!(cap.cursor().is_none(), "no cursor metadata unless --cursor metadata");
}

#[test]
fn pipewire_node_cursor_metadata() {
    use crate::support::pipewire::TestProducer;
    let s = PwSession::start();
    let producer = TestProducer::start(&s, "wlw-producer", [0, 0, 0], 160, 120);
    producer.cursor_at(40, 50);
    let mut cap = Capture::open_with(
        Path::new(""),
        SourceKind::Pipewire,
        None,
        CursorMode::Metadata,
        &s.options(Some("wlw-producer")),
    )
    .expect("open the producer's node");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "no cursor metadata: {:?}", cap.cursor());
        frame(&mut cap);
        if cap.cursor().is_some_and(|c| c.inside && c.image.is_some()) {
            break;
        }
    }
    let c = cap.cursor().expect("cursor").clone();
    assert_eq!((c.x, c.y, c.hotspot_x, c.hotspot_y), (40, 50, 2, 3), "{c:?}");
    let img = c.image.expect("image");
    assert_eq!((img.width, img.height, img.format.fourcc_str().as_str()), (16, 16, "AR24"));
    assert_eq!(img.data.len(), 16 * 16 * 4);
    assert_eq!(&img.data[..4], &[255, 0, 255, 255], "BGRA magenta");
    // The pointer moves, then leaves the stream (id 0).
    producer.cursor_at(70, 80);
    let deadline = Instant::now() + Duration::from_secs(5);
    while cap.cursor().is_none_or(|c| (c.x, c.y) != (70, 80)) {
        assert!(Instant::now() < deadline, "cursor did not move: {:?}", cap.cursor());
        frame(&mut cap);
    }
}

use std::time::{Duration, Instant};

use testkit::pattern::PatternKind;
use testkit::pattern::{BAR, quadrant_colour};
use wl_webrtc::capture::CaptureError;
use wl_webrtc::frame::{Damage, PixelFormat};

use crate::support::{Fixture, NEVER, assert_no_panic, output_within, quadrants_match};

#[test]
fn captured_frame_has_known_pixels() {
    let f = Fixture::with_pattern(1280, 720, PatternKind::Quadrants);
    let mut cap = f.capture();
    let info = cap.next_frame(Duration::from_secs(5), &NEVER).expect("capture").expect("a first frame");
    assert_eq!((info.layout.width, info.layout.height), (1280, 720));
    assert_eq!(info.damage, Damage::Full, "the first frame is complete");
    quadrants_match(&mut cap, &info).expect("colours and orientation");
    assert_eq!(cap.buffer_kind(), Some("shm"), "no render node here: shm");
}

#[test]
fn png_of_captured_frame_has_correct_colours_and_orientation() {
    let f = Fixture::with_pattern(640, 480, PatternKind::Quadrants);
    let dir = std::env::temp_dir().join(format!("wl-webrtc-png-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let png_path = dir.join("frame.png");
    let out = output_within(
        f.cli(&["capture", "--frames", "1", "--png", png_path.to_str().expect("utf-8"), "--json"]),
        Duration::from_secs(20),
    );
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((report["width"].as_u64(), report["height"].as_u64()), (Some(640), Some(480)));
    assert_eq!(report["format"], PixelFormat::Xrgb8888.to_string());
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png_path).expect("png written")));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).expect("png data");
    assert_eq!((frame.width, frame.height, frame.color_type), (640, 480, png::ColorType::Rgb));
    for (x, y) in [(10, 10), (630, 10), (10, 470), (630, 470), (320, 240)] {
        let off = (y as usize * 640 + x as usize) * 3;
        assert_eq!(&buf[off..off + 3], &quadrant_colour(640, 480, x, y), "png pixel ({x},{y})");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn static_screen_delivers_no_new_frames() {
    let f = Fixture::with_pattern(640, 480, PatternKind::Quadrants);
    let mut cap = f.capture();
    let first = cap.next_frame(Duration::from_secs(5), &NEVER).expect("capture").expect("first frame");
    assert_eq!(first.damage, Damage::Full);
    let started = Instant::now();
    let next = cap.next_frame(Duration::from_secs(1), &NEVER).expect("capture");
    assert!(next.is_none(), "a static screen produced a frame: {next:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "the idle wait must end at its timeout");

    // The CLI does not hang either: it reports one frame and that it timed out.
    let out =
        output_within(f.cli(&["capture", "--frames", "10", "--idle-timeout", "1", "--json"]), Duration::from_secs(20));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["frames"].as_u64(), Some(1), "{report}");
    assert_eq!(report["timed_out"], true);
}

#[test]
fn animated_client_delivers_damaged_frames_without_reallocating() {
    let mut f = Fixture::start(1280, 720, 60);
    f.spawn_pattern(PatternKind::MovingBar, None);
    f.wait_for_pattern_or_bar();
    let out = output_within(f.cli(&["capture", "--frames", "30", "--json"]), Duration::from_secs(30));
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["frames"].as_u64(), Some(30), "{r}");
    assert_eq!(r["timed_out"], false);
    assert_eq!(r["buffer_allocations"].as_u64(), Some(1), "buffers are reused: {r}");
    // Only the bar moves: after the first (full) frame each frame damages a small strip.
    let damage = r["damage_mean"].as_f64().expect("damage_mean");
    assert!(damage < 0.5, "mean damage {damage} should be far below a full frame");
    assert!(r["latency_ms_p50"].as_f64().is_some());
}

impl Fixture {
    /// Wait until the moving-bar pattern is on screen (quadrants visible away from the bar, bar white).
    fn wait_for_pattern_or_bar(&self) {
        let mut cap = self.capture();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let Some(info) = cap.next_frame(Duration::from_millis(500), &NEVER).expect("capture") else { continue };
            let layout = info.layout;
            let has_bar = cap
                .with_pixels(|data, stride| {
                    let l = wl_webrtc::frame::FrameLayout { stride, ..layout };
                    (0..l.width).any(|x| wl_webrtc::frame::pixel_rgb(data, &l, info.y_invert, x, 1) == Some(BAR))
                })
                .expect("pixels");
            if has_bar {
                return;
            }
        }
        panic!("moving bar never appeared");
    }
}

#[test]
fn mode_change_mid_capture_continues_at_new_size() {
    let mut f = Fixture::start(1280, 720, 60);
    f.spawn_pattern(PatternKind::MovingBar, None);
    f.wait_for_pattern_or_bar();
    let mut cap = f.capture();
    let info = cap.next_frame(Duration::from_secs(5), &NEVER).expect("capture").expect("frame");
    assert_eq!((info.layout.width, info.layout.height), (1280, 720));
    f.swaymsg(&["output", "HEADLESS-1", "mode", "--custom", "800x600@60Hz"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut frames_after = 0;
    loop {
        assert!(Instant::now() < deadline, "no 800x600 frame within 10 s");
        let Some(info) = cap.next_frame(Duration::from_millis(500), &NEVER).expect("capture continues") else {
            continue;
        };
        if (info.layout.width, info.layout.height) == (800, 600) {
            frames_after += 1;
            assert_eq!(info.damage, Damage::Full, "the first frame at a new size is complete");
            // The pattern follows the new size: quadrant colours away from the moving bar.
            let l = info.layout;
            let bottom_left = cap
                .with_pixels(|d, s| {
                    wl_webrtc::frame::pixel_rgb(
                        d,
                        &wl_webrtc::frame::FrameLayout { stride: s, ..l },
                        info.y_invert,
                        0,
                        599,
                    )
                })
                .expect("pixels");
            if bottom_left == Some(quadrant_colour(800, 600, 0, 599)) {
                break;
            }
        }
    }
    assert!(frames_after >= 1);
    assert!(cap.counters().buffer_allocations >= 2, "a new buffer for the new size");
}

#[test]
fn compositor_vanishing_ends_capture_with_clear_error() {
    let mut f = Fixture::start(640, 480, 60);
    let mut cap = f.capture();
    cap.next_frame(Duration::from_secs(5), &NEVER).expect("capture").expect("frame");
    f.desk.kill_compositor();
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        assert!(Instant::now() < deadline, "capture did not notice the compositor's exit");
        match cap.next_frame(Duration::from_millis(200), &NEVER) {
            Err(e) => break e,
            Ok(_) => continue,
        }
    };
    assert!(matches!(err, CaptureError::CompositorGone(_)), "{err:?}");
    assert!(err.to_string().contains("compositor went away"), "{err}");
}

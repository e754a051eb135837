use std::time::Duration;

use crate::support::{Fixture, assert_no_panic, output_within};

fn list(f: &Fixture) -> Vec<serde_json::Value> {
    let out = output_within(f.cli(&["list-outputs", "--json"]), Duration::from_secs(20));
    assert_no_panic(&out);
    assert!(out.status.success(), "list-outputs failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("list-outputs --json prints a JSON array")
}

#[test]
fn list_outputs_sees_configured_mode_and_runtime_outputs() {
    let f = Fixture::start(1280, 720, 30);
    let outputs = list(&f);
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    let o = &outputs[0];
    assert_eq!(o["name"], "HEADLESS-1");
    assert_eq!((o["width"].as_i64(), o["height"].as_i64()), (Some(1280), Some(720)));
    assert_eq!(o["refresh_mhz"].as_i64(), Some(30000));
    assert_eq!((o["scale"].as_i64(), o["x"].as_i64(), o["y"].as_i64()), (Some(1), Some(0), Some(0)));
    assert_eq!(o["sources"], serde_json::json!(["screencopy"]));

    f.swaymsg(&["create_output"]);
    f.swaymsg(&["output", "HEADLESS-2", "mode", "--custom", "800x600@60Hz", "position", "1280", "0"]);
    let outputs = list(&f);
    let second = outputs.iter().find(|o| o["name"] == "HEADLESS-2").expect("HEADLESS-2 listed after create_output");
    assert_eq!((second["width"].as_i64(), second["height"].as_i64()), (Some(800), Some(600)));
    assert_eq!(second["x"].as_i64(), Some(1280));
}

#[test]
fn a_headless_desktop_of_several_outputs_places_them_side_by_side() {
    // The CLI starts its own private desktop with two outputs, lists them, and tears it down.
    let out = output_within(
        {
            let mut c = std::process::Command::new(crate::support::bin());
            c.args(["list-outputs", "--json", "--headless", "640x480,320x240@30"]).env_remove("WAYLAND_DISPLAY");
            c
        },
        Duration::from_secs(30),
    );
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let outputs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(outputs.len(), 2, "{outputs:?}");
    let by =
        |name: &str| outputs.iter().find(|o| o["name"] == name).unwrap_or_else(|| panic!("no {name}: {outputs:?}"));
    let (a, b) = (by("HEADLESS-1"), by("HEADLESS-2"));
    assert_eq!((a["width"].as_i64(), a["height"].as_i64(), a["x"].as_i64()), (Some(640), Some(480), Some(0)));
    assert_eq!((b["width"].as_i64(), b["height"].as_i64(), b["x"].as_i64()), (Some(320), Some(240), Some(640)));
    assert_eq!(b["refresh_mhz"].as_i64(), Some(30000));
}

#[test]
fn list_outputs_text_names_every_output() {
    let f = Fixture::start(640, 480, 60);
    let out = output_within(f.cli(&["list-outputs"]), Duration::from_secs(20));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HEADLESS-1") && text.contains("640x480@60.000Hz"), "{text}");
}

#[test]
fn every_shm_format_the_compositor_offers_maps_to_a_pixel_format() {
    let f = Fixture::start(320, 240, 60);
    let session = f.session();
    let formats = session.state.shm.formats();
    assert!(formats.len() >= 14, "sway offers 14 shm formats, saw {formats:?}");
    for fmt in formats {
        let code = *fmt as u32;
        assert!(wl_webrtc::frame::PixelFormat::from_wl_shm(code).is_some(), "unmapped wl_shm format {fmt:?}");
    }
}

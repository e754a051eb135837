//! VA-API discovery (`wl-webrtc list-encoders`) against real libva 2.17 through cros-libva, with the fake
//! driver of `testkit::fake_va` at the bottom (no machine here has a VA driver or a render node).

use std::process::Command;

use serde_json::Value;
use testkit::fake_va;

use crate::support::bin;

/// `list-encoders --json` with the fake driver (and `knob` set in its environment, if any).
fn list_with_fake(knob: Option<&str>) -> Value {
    let mut cmd = Command::new(bin());
    cmd.args(["list-encoders", "--json", "--vaapi-device", fake_va::DEVICE]).env("LIBVA_MESSAGING_LEVEL", "0");
    fake_va::apply(&mut cmd);
    if let Some(k) = knob {
        cmd.env(k, "1");
    }
    let out = cmd.output().expect("run wl-webrtc list-encoders");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn the_fake_driver_is_found_through_real_libva_with_its_h264_encode_profiles() {
    let v = list_with_fake(None);
    let vaapi = &v["vaapi"];
    assert_eq!(vaapi["available"], true, "{v}");
    assert_eq!(vaapi["vendor"], fake_va::VENDOR);
    assert_eq!(vaapi["device"], fake_va::DEVICE);
    let profiles: Vec<&str> =
        vaapi["h264_encode"].as_array().expect("list").iter().filter_map(|p| p["profile"].as_str()).collect();
    assert_eq!(profiles, ["constrained-baseline", "main", "high"]);
    assert!(vaapi["h264_encode"].as_array().expect("list").iter().all(|p| p["entrypoint"] == "EncSlice"), "{v}");
    assert_eq!(v["x264"]["available"], true);
}

#[test]
fn a_decode_only_driver_and_a_failing_driver_are_told_apart() {
    let decode_only = list_with_fake(Some("WLFAKE_NO_ENCODE"));
    assert_eq!(decode_only["vaapi"]["available"], false);
    let reason = decode_only["vaapi"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("no H.264 encode entrypoint") && reason.contains(fake_va::VENDOR), "{reason}");
    let failing = list_with_fake(Some("WLFAKE_FAIL_INIT"));
    let reason = failing["vaapi"]["reason"].as_str().unwrap_or_default();
    assert_eq!(failing["vaapi"]["available"], false);
    assert!(reason.contains("did not initialise") && reason.contains("vaInitialize"), "{reason}");
}

#[test]
fn without_a_device_the_reason_is_said_plainly() {
    let out =
        Command::new(bin()).args(["list-encoders", "--vaapi-device", "/nonexistent/renderD128"]).output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("vaapi\tH.264, hardware\tunavailable: cannot open /nonexistent/renderD128"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("x264\t") && l.ends_with("available")), "{text}");
    // The whole machine: on these machines no render node exists at all (a machine with one gets a device
    // or the reason it cannot encode).
    let out = Command::new(bin()).args(["list-encoders", "--json"]).output().expect("run");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    if wl_webrtc::encode::vaapi::render_nodes().is_empty() {
        assert_eq!(v["vaapi"]["reason"], "no render node (/dev/dri/renderD*): this machine has no GPU driver loaded");
    } else {
        assert!(v["vaapi"]["available"] == true || v["vaapi"]["reason"].is_string(), "{v}");
    }
}

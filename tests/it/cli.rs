use std::process::Command;
use std::time::Duration;

use crate::support::{Fixture, assert_no_panic, bin, output_within};

#[test]
fn unknown_output_lists_available_outputs() {
    let f = Fixture::start(640, 480, 60);
    for sub in [&["capture", "--frames", "1"][..], &["start", "--listen", "127.0.0.1:0"][..]] {
        let mut args = sub.to_vec();
        args.extend(["--output", "DP-404"]);
        let out = output_within(f.cli(&args), Duration::from_secs(20));
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("\"DP-404\"") && err.contains("available outputs: HEADLESS-1"), "{err}");
    }
}

#[test]
fn no_wayland_display_says_how_to_run() {
    for args in [&["capture", "--frames", "1"][..], &["list-outputs"][..], &[][..]] {
        let mut cmd = Command::new(bin());
        cmd.args(args).env_remove("WAYLAND_DISPLAY").env_remove("WAYLAND_SOCKET");
        let out = output_within(cmd, Duration::from_secs(20));
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no Wayland display") && err.contains("--headless"), "{err}");
    }
}

#[test]
fn dead_socket_says_compositor_is_not_running() {
    let mut cmd = Command::new(bin());
    cmd.args(["list-outputs"]).env("WAYLAND_DISPLAY", "/nonexistent/wayland-9");
    let out = output_within(cmd, Duration::from_secs(20));
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/wayland-9") && err.contains("--headless"), "{err}");
}

#[test]
fn wrong_flags_and_values_exit_2_with_a_message() {
    for (args, needle) in [
        (&["--source", "x11"][..], "x11"),
        (&["--fps", "0", "list-outputs"][..], "fps"),
        (&["--headless", "huge", "list-outputs"][..], "--headless"),
        (&["--config", "/nonexistent/c.toml", "list-outputs"][..], "/nonexistent/c.toml"),
    ] {
        let out = output_within(
            {
                let mut c = Command::new(bin());
                c.args(args);
                c
            },
            Duration::from_secs(20),
        );
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle), "{args:?}");
    }
}

#[test]
fn config_print_default_is_the_template_and_file_overrides_apply() {
    let out = output_within(
        {
            let mut c = Command::new(bin());
            c.args(["config", "--print-default"]);
            c
        },
        Duration::from_secs(20),
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), wl_webrtc::config::DEFAULT_CONFIG_TEMPLATE);

    let dir = std::env::temp_dir().join(format!("wl-webrtc-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("c.toml");
    std::fs::write(&file, "fps = 30\noutput = \"FROM-FILE\"\n").expect("write");
    let out = output_within(
        {
            let mut c = Command::new(bin());
            c.args(["--config", file.to_str().expect("utf-8"), "--output", "FROM-FLAG", "config", "--print"]);
            c
        },
        Duration::from_secs(20),
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fps = 30") && text.contains("output = \"FROM-FLAG\""), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn man_page_and_completions_are_generated() {
    let run = |args: &[&str]| {
        let mut c = Command::new(bin());
        c.args(args);
        output_within(c, Duration::from_secs(20))
    };
    let man = run(&["generate", "man"]);
    assert!(man.status.success());
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(man.contains(".TH wl-webrtc 1") && man.contains("headless"), "{man}");
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["generate", "completions", shell]);
        assert!(out.status.success(), "{shell}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("list-outputs"), "{shell} completions name subcommands");
    }
}

#[test]
fn bench_reports_per_stage_rows() {
    // convert: 4 CPU formats + CPU 5 % damage, then the Vulkan stages (lavapipe is installed by setup).
    for (what, cases) in [
        (
            "convert",
            &["cpu XR24", "cpu XB24", "cpu AR24", "cpu XR30", "cpu XR24 5% damage", "vulkan direct XR24 total"][..],
        ),
        ("encode", &["x264 ultrafast/zerolatency"][..]),
    ] {
        let mut c = Command::new(bin());
        c.args(["bench", what, "--size", "320x240", "--frames", "3", "--json"]);
        let out = output_within(c, Duration::from_secs(60));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let a = v.as_array().expect("array");
        for case in cases {
            assert!(a.iter().any(|r| r["case"] == *case), "{what}: no {case:?} row in {v}");
        }
        for r in a {
            assert_eq!(
                (r["width"].as_u64(), r["height"].as_u64(), r["frames"].as_u64()),
                (Some(320), Some(240), Some(3))
            );
            assert!(r["p50_ms"].as_f64().is_some_and(|x| x > 0.0), "{r}");
        }
    }
    let mut c = Command::new(bin());
    c.args(["bench", "convert", "--frames", "0"]);
    let out = output_within(c, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1));
}

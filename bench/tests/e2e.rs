//! The glass-to-glass harness (`wl-webrtc-bench e2e`): its barcode reader in the page against frames with
//! known times (through lossy JPEG, in Chromium), and the whole harness end to end — wl-webrtc, the GStreamer
//! peer and the x264 CLI from one command — plus a deliberately delayed stream that must show the delay.

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use testkit::barcode::{self, Stamp};
use testkit::browser::Browser;
use testkit::netns::in_private_netns;
use wl_webrtc_bench::e2e::PageServer;

/// One measurement at a time: they share the machine's cores and would disturb each other's numbers.
static SERIAL: Mutex<()> = Mutex::new(());

/// JS that paints the barcode cells of `stamp` into a `width`×`height` canvas over a noisy grey background,
/// recompresses it as JPEG at `quality`, and reads it back with the page's reader. Returns {time, frame} or
/// null.
fn read_through_jpeg_js(stamp: Stamp, width: u32, height: u32, quality: f64) -> String {
    let cells: Vec<u8> = barcode::cells(stamp).iter().map(|&w| u8::from(w)).collect();
    let (cell, strip) = barcode::strip_geometry(width);
    format!(
        "(async () => {{
          const cells = {cells:?}, cell = {cell}, strip = {strip}, w = {width}, h = {height};
          const c = document.createElement('canvas'); c.width = w; c.height = h;
          const g = c.getContext('2d');
          for (let y = 0; y < h; y += 8) for (let x = 0; x < w; x += 8) {{
            const v = (x * 7 + y * 13) % 200 + 20; g.fillStyle = `rgb(${{v}},${{255 - v}},${{v / 2}})`; g.fillRect(x, y, 8, 8);
          }}
          g.fillStyle = '#000'; g.fillRect(0, 0, w, strip);
          g.fillStyle = '#fff';
          cells.forEach((on, i) => {{ if (on) g.fillRect(i * cell, 0, cell, strip); }});
          const img = new Image();
          img.src = c.toDataURL('image/jpeg', {quality});
          await img.decode();
          return e2e.readSource(img, w);
        }})()"
    )
}

#[test]
fn e2e_page_reads_barcodes_with_known_times_through_lossy_compression() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let pages = PageServer::start().expect("the harness's page server");
        let browser = Browser::launch();
        // Without `whep=` the page only defines its reader.
        let mut page = browser.new_page(&format!("{}/e2e.html", pages.base()));
        page.wait_for("window.e2e && typeof e2e.readSource === 'function'", Duration::from_secs(10));
        let now_us = 1_764_000_000_000_000u64;
        for (i, (w, h, quality)) in
            [(640, 480, 0.9), (1920, 1080, 0.3), (3840, 2160, 0.2), (1280, 720, 0.1)].into_iter().enumerate()
        {
            let stamp = Stamp::at(now_us + i as u64 * 16_667 + 3, 65_530 + i as u64);
            let got = page.eval(&read_through_jpeg_js(stamp, w, h, quality));
            assert_eq!(got["frame"].as_u64(), Some(u64::from(stamp.frame)), "{w}x{h} q={quality}: {got}");
            assert_eq!(got["time"].as_u64(), Some(stamp.time), "{w}x{h} q={quality}: {got}");
            // Unwrapped against the page's clock, the time is the painted one (10 µs units).
            let us = page.eval(&format!("e2e.unwrapUs({}, {})", stamp.time, now_us + 5_000_000));
            assert_eq!(us.as_u64(), Some(stamp.unix_us_near(now_us + 5_000_000)));
        }
        // A frame without a barcode is refused, not misread.
        let none = page.eval(
            "(() => { const c = document.createElement('canvas'); c.width = 640; c.height = 64; \
             const g = c.getContext('2d'); g.fillStyle = '#888'; g.fillRect(0, 0, 640, 64); \
             return e2e.readSource(c, 640); })()",
        );
        assert!(none.is_null(), "{none}");
    });
}

/// Run `wl-webrtc-bench e2e --json` with `args`; the parsed array of results.
fn bench_e2e(args: &[&str]) -> Vec<serde_json::Value> {
    // The harness runs the product and the clock client from beside itself: have both built.
    testkit::workspace_bin("wl-webrtc");
    testkit::workspace_bin("wl-webrtc-test-pattern");
    let dir = std::env::temp_dir().join(format!("wl-webrtc-e2e-test-{}-{}", std::process::id(), args.len()));
    let out = Command::new(env!("CARGO_BIN_EXE_wl-webrtc-bench"))
        .args(["e2e", "--json", "--modes", "640x480@60", "--warmup", "1", "--duration", "3"])
        .arg("--results")
        .arg(&dir)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run wl-webrtc-bench e2e");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench e2e failed: {stderr}");
    for file in ["e2e-latest.md", "e2e-latest.svg", "e2e-latest.json"] {
        assert!(dir.join(file).exists(), "{file} written");
    }
    let md = std::fs::read_to_string(dir.join("e2e-latest.md")).expect("read the table");
    let _ = std::fs::remove_dir_all(&dir);
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    for r in &v {
        assert!(md.contains(&format!("| {} |", r["name"].as_str().unwrap_or("?"))), "{md}");
    }
    v
}

fn p50(results: &[serde_json::Value], name: &str) -> f64 {
    let r = results.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("no {name} row: {results:?}"));
    for key in ["p50_ms", "p95_ms", "p99_ms", "fps", "cpu_percent"] {
        assert!(r.get(key).is_some(), "{name} has {key}: {r}");
    }
    let frames = r["frames"].as_u64().unwrap_or(0);
    assert!(frames > 60, "{name} received frames: {r}");
    // Every barcode reads in practice; allow 2 % so one starved frame of a one-frame-VBV stream is no failure.
    assert!(r["unreadable"].as_u64().unwrap_or(u64::MAX) * 50 <= frames, "{name}: barcodes read: {r}");
    let p50 = r["p50_ms"].as_f64().unwrap_or_else(|| panic!("{name} p50: {r}"));
    assert!(p50 > 0.0 && p50 < 500.0, "{name}: plausible latency {p50} ms: {r}");
    p50
}

#[test]
fn e2e_harness_measures_wl_webrtc_and_the_gstreamer_peer_side_by_side() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let results = bench_e2e(&["--systems", "wl-webrtc,gstreamer,x264-cli"]);
    eprintln!("{results:#?}");
    let ours = p50(&results, "wl-webrtc");
    let gst = p50(&results, "gstreamer");
    eprintln!("p50 glass-to-glass at 640x480@60 (debug build): wl-webrtc {ours:.1} ms, gstreamer {gst:.1} ms");
    let cli = results.iter().find(|r| r["name"] == "x264-cli").expect("x264-cli row");
    assert!(cli["fps"].as_f64().unwrap_or(0.0) > 60.0, "the x264 CLI encodes 640x480 faster than real time: {cli}");
    let stages = &results.iter().find(|r| r["name"] == "wl-webrtc").expect("ours")["stages"];
    for stage in ["capture_wait", "convert", "encode", "send"] {
        assert!(stages[stage]["p50_ms"].as_f64().is_some(), "stage {stage} in {stages}");
    }
}

#[test]
fn e2e_harness_sees_a_deliberately_added_delay() {
    // The clock client stamps its frames 60 ms in the past: everything else (server, link, browser) is as in
    // the base run, so the harness must report 60 ms more.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let base = p50(&bench_e2e(&["--systems", "wl-webrtc"]), "wl-webrtc");
    let delayed = p50(&bench_e2e(&["--systems", "wl-webrtc", "--clock-lag-ms", "60"]), "wl-webrtc");
    eprintln!("p50 without delay {base:.1} ms, with 60 ms added {delayed:.1} ms");
    let added = delayed - base;
    assert!((40.0..=85.0).contains(&added), "the harness measured {added:.1} ms of the 60 ms added");
}

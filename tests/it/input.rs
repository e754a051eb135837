//! Remote control end to end: a real headless Sway running our `input-log` client (a fullscreen surface with
//! keyboard focus that prints every pointer and keyboard event), a live `wl-webrtc start`, and Chromium on the
//! viewer page driven over CDP (mouse and keys), inside a private network namespace.
//!
//! The desktop is 800x600 and the page 1280x720, so the picture is letterboxed: scale 1.2, 160 px bars left
//! and right. Output point (x, y) is at page point (160 + 1.2 x, 1.2 y).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::stream::{SERIAL, Server, http};
use crate::support::Fixture;
use crate::support::browser::{Browser, Page};
use crate::support::netns::in_private_netns;

pub(crate) const W: u32 = 800;
pub(crate) const H: u32 = 600;

/// Page point of output point (x, y) (see the module note).
pub(crate) fn page_point(x: f64, y: f64) -> (f64, f64) {
    (160.0 + 1.2 * x, 1.2 * y)
}

/// The `input-log` client's output file.
pub(crate) struct InputLog {
    path: PathBuf,
}

impl InputLog {
    /// Start `wl-webrtc-test-pattern --pattern input-log` on HEADLESS-1 and wait until it is on screen.
    pub(crate) fn start(f: &mut Fixture) -> InputLog {
        let log = InputLog::spawn(f, "HEADLESS-1");
        f.wait_for_pattern(W, H);
        log
    }

    /// Start the input-log client on `output` (not waited for).
    fn spawn(f: &mut Fixture, output: &str) -> InputLog {
        let path = std::env::temp_dir().join(format!(
            "wl-webrtc-input-log-{}-{}.jsonl",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ u128::from(rand_u32())
        ));
        let file = std::fs::File::create(&path).expect("create the input log");
        let mut cmd = f.desk.command(crate::support::pattern_bin());
        cmd.args(["--pattern", "input-log", "--output", output]).stdout(Stdio::from(file));
        let pid = f.desk.spawn(cmd).expect("spawn the input-log client");
        f.pattern = Some(pid);
        InputLog { path }
    }

    /// Wait until the client has keyboard focus: headless Sway has no keyboard until our virtual one
    /// exists, so this is also "the server's virtual devices are ready".
    pub(crate) fn wait_keyboard_focus(&self) {
        self.wait(|e| e["ev"] == "keyboard_enter", Duration::from_secs(10), "keyboard focus");
    }

    fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The first event matching `pred`, waiting up to `timeout`.
    pub(crate) fn wait(&self, pred: impl Fn(&Value) -> bool, timeout: Duration, what: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(Instant::now() < deadline, "no {what} in the input log within {timeout:?}: {:?}", self.events());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Text typed so far: the utf8 of every key press.
    pub(crate) fn typed(&self) -> String {
        self.events()
            .iter()
            .filter(|e| e["ev"] == "key" && e["down"] == true)
            .filter_map(|e| e["utf8"].as_str().map(str::to_owned))
            .collect()
    }
}

impl Drop for InputLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
}

/// A viewer page connected, decoding, with its input channel open and the server's verdict known.
fn viewer(srv: &Server, browser: &Browser) -> Page {
    let mut page = browser.new_page(&srv.url("/?gum=1"));
    page.wait_for(
        "window.wlw && wlw.stats && wlw.stats.framesDecoded > 0 && wlw.input.open && wlw.input.known",
        Duration::from_secs(20),
    );
    page
}

/// The 800x600 desktop with the input-log client, a server (`extra` flags) and a connected viewer page.
/// Bind the parts in this order: they drop in reverse (page, browser, server, log, desktop).
fn session(extra: &[&str]) -> (Fixture, InputLog, Server, Browser, Page) {
    let mut f = Fixture::start(W, H, 60);
    let log = InputLog::start(&mut f);
    let srv = Server::start(&f, extra);
    if extra.contains(&"--allow-input") {
        log.wait_keyboard_focus();
    }
    let browser = Browser::launch();
    let page = viewer(&srv, &browser);
    (f, log, srv, browser, page)
}

/// Click at output point (x, y) through the page; the logged press must be there (±2 px).
fn click_lands(page: &mut Page, log: &InputLog, x: f64, y: f64) -> Value {
    let (px, py) = page_point(x, y);
    let t = Instant::now();
    page.mouse_click(px, py);
    let press = log.wait(
        |e| e["ev"] == "button" && e["down"] == true && near(&e["x"], x) && near(&e["y"], y),
        Duration::from_secs(5),
        &format!("left press at ({x}, {y})"),
    );
    eprintln!("click at output ({x}, {y}) → logged {press} after {:?}", t.elapsed());
    log.wait(|e| e["ev"] == "button" && e["down"] == false, Duration::from_secs(5), "release");
    press
}

fn input_status(srv: &Server) -> Value {
    srv.status()["input"].clone()
}

fn wait_status(srv: &Server, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = input_status(srv);
        if pred(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "{what}: {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn near(got: &Value, want: f64) -> bool {
    got.as_f64().is_some_and(|g| (g - want).abs() <= 2.0)
}

#[test]
fn clicks_land_at_output_coordinates_and_typed_text_arrives_with_modifiers() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let (_f, log, srv, _browser, mut page) = session(&["--allow-input"]);
        assert_eq!(page.eval("wlw.input.allowed"), Value::Bool(true));

        // Clicks through the letterbox land on the output pixel under the pointer.
        for (x, y) in [(200.0, 150.0), (700.0, 500.0), (13.0, 587.0)] {
            let press = click_lands(&mut page, &log, x, y);
            assert_eq!(press["button"], 0x110, "BTN_LEFT");
        }
        page.mouse_button(400.0, 300.0, "right", true);
        page.mouse_button(400.0, 300.0, "right", false);
        log.wait(|e| e["ev"] == "button" && e["button"] == 0x111, Duration::from_secs(5), "BTN_RIGHT");
        page.mouse_wheel(400.0, 300.0, 0.0, 120.0);
        let axis = log.wait(|e| e["ev"] == "axis", Duration::from_secs(5), "scroll");
        assert!(axis["v"].as_f64().unwrap_or(0.0) > 0.0, "scrolled down: {axis}");

        // Typed text, Shift for capitals.
        let t = Instant::now();
        for part in ["Hello", " ", "World"] {
            for ch in part.chars() {
                if ch.is_ascii_uppercase() {
                    page.key_down("Shift");
                    page.key_press(&ch.to_ascii_lowercase().to_string());
                    page.key_up("Shift");
                } else {
                    page.key_press(&ch.to_string());
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while log.typed() != "Hello World" {
            assert!(Instant::now() < deadline, "typed {:?}, want \"Hello World\"", log.typed());
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("\"Hello World\" arrived in {:?}", t.elapsed());
        log.wait(|e| e["ev"] == "modifiers" && e["shift"] == true, Duration::from_secs(1), "Shift modifier");
        // Ctrl: the client sees the modifier, and Ctrl+A produces no text.
        page.key_down("Control");
        page.key_press("a");
        page.key_up("Control");
        log.wait(|e| e["ev"] == "modifiers" && e["ctrl"] == true, Duration::from_secs(5), "Ctrl modifier");
        log.wait(
            |e| e["ev"] == "modifiers" && e["ctrl"] == false && e["shift"] == false,
            Duration::from_secs(5),
            "modifiers released",
        );

        // Text paste as typed keys (the `text` message).
        page.eval(r#"wlw.dc.send(JSON.stringify({ t: "text", s: "Paste: OK!" }))"#);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !log.typed().ends_with("Paste: OK!") {
            assert!(Instant::now() < deadline, "typed {:?}", log.typed());
            std::thread::sleep(Duration::from_millis(20));
        }

        // Malformed and out-of-range messages are rejected and counted, without effect.
        let before = log.events().len();
        for bad in
            [r#"{"t":"dance"}"#, r#"{"t":"move","x":2,"y":0.5}"#, r#"{"t":"key","code":"KeyÄ","down":true}"#, "{"]
        {
            page.eval(&format!("wlw.dc.send({})", serde_json::to_string(bad).expect("json")));
        }
        let st = wait_status(&srv, "3 rejected", |s| s["rejected"].as_u64() >= Some(4));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(log.events().len(), before, "rejected messages had no effect");
        assert_eq!(st["allowed"], true);
        assert!(st["injected"].as_u64() > Some(20), "{st}");
        assert_eq!(st["dropped"].as_u64(), Some(0), "{st}");
    });
}

#[test]
fn without_allow_input_nothing_is_injected_and_input_is_counted_as_dropped() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let (_f, log, srv, _browser, mut page) = session(&[]);
        assert_eq!(page.eval("wlw.input.allowed"), Value::Bool(false), "the server said view-only");
        let (px, py) = page_point(200.0, 150.0);
        page.mouse_click(px, py);
        page.key_press("a");
        page.key_down("Shift");
        page.key_press("b");
        page.key_up("Shift");
        let sent = page.eval("wlw.input.sent").as_u64().unwrap_or(0);
        assert!(sent >= 7, "the page did send its input ({sent} messages)");
        let st = wait_status(&srv, "all received", |s| s["received"].as_u64() >= Some(sent));
        std::thread::sleep(Duration::from_millis(500));
        let injected: Vec<Value> = log
            .events()
            .into_iter()
            .filter(|e| matches!(e["ev"].as_str(), Some("button" | "key" | "motion" | "axis")))
            .collect();
        assert!(injected.is_empty(), "nothing reaches the desktop: {injected:?}");
        assert_eq!(st["allowed"], false);
        assert_eq!(st["dropped"], st["received"], "every message dropped: {st}");
        assert_eq!(st["injected"].as_u64(), Some(0), "{st}");
        let (_, metrics) = http("GET", &srv.url("/metrics"), &[], "");
        assert!(metrics.contains(&format!("wl_webrtc_input_dropped_total {}", st["dropped"])), "{metrics}");
    });
}

#[test]
fn a_key_held_when_the_viewer_disconnects_is_released() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let (_f, log, _srv, _browser, mut page) = session(&["--allow-input"]);
        page.key_down("Shift");
        page.key_down("x");
        log.wait(|e| e["ev"] == "key" && e["down"] == true && e["code"] == 45, Duration::from_secs(5), "KeyX press");
        // The page would release held keys itself on pagehide/blur; silence it so that the server's
        // release on disconnect is what is tested (as when a tab crashes or the network drops).
        page.eval("wlw.dc.send = () => {}; true");
        let t = Instant::now();
        drop(page);
        let up = log.wait(
            |e| e["ev"] == "key" && e["down"] == false && e["code"] == 45,
            Duration::from_secs(5),
            "KeyX release after the viewer left",
        );
        let released_after = t.elapsed();
        log.wait(
            |e| e["ev"] == "modifiers" && e["shift"] == false && e["caps"] == false,
            Duration::from_secs(5),
            "Shift up",
        );
        eprintln!("held key released {released_after:?} after the page closed: {up}");
        assert!(released_after < Duration::from_secs(2), "released only after {released_after:?}");
        let shift_up = log.events().iter().any(|e| e["ev"] == "key" && e["down"] == false && e["code"] == 42);
        assert!(shift_up, "Shift released too: {:?}", log.events());
    });
}

#[test]
fn clicks_map_onto_a_scaled_output_placed_right_of_another() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        // HEADLESS-2: 1600x1200 pixels at scale 2 = 800x600 logical, at (800, 0) in the layout. The stream is
        // 1600x1200, letterboxed into the page exactly like an 800x600 one (scale 0.6, bars of 160 px).
        let mut f = Fixture::start(W, H, 60);
        f.swaymsg(&["create_output"]);
        f.swaymsg(&[
            "output",
            "HEADLESS-2",
            "mode",
            "--custom",
            "1600x1200@60Hz",
            "scale",
            "2",
            "position",
            "800",
            "0",
        ]);
        let log = InputLog::spawn(&mut f, "HEADLESS-2");
        let srv = Server::start(&f, &["--allow-input", "--output", "HEADLESS-2"]);
        log.wait_keyboard_focus();
        let browser = Browser::launch();
        let mut page = viewer(&srv, &browser);
        let size = page.eval("[wlw.stats.width, wlw.stats.height]");
        assert_eq!(size, serde_json::json!([1600, 1200]), "the stream is the output's pixels");
        for (x, y) in [(200.0, 150.0), (650.0, 420.0)] {
            click_lands(&mut page, &log, x, y);
        }
    });
}

#[test]
fn clicks_land_exactly_on_fractionally_scaled_outputs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Each output is 800x600 logical: 1000x750 pixels at scale 1.25, 1200x900 at 1.5 (wl_output says scale 2
    // for both; the logical size comes from xdg-output, and the virtual pointer moves in logical coordinates).
    for (mode, scale) in [("1000x750", "1.25"), ("1200x900", "1.5")] {
        in_private_netns(move || {
            let mut f = Fixture::start(W, H, 60);
            f.swaymsg(&["create_output"]);
            let custom = format!("{mode}@60Hz");
            f.swaymsg(&["output", "HEADLESS-2", "mode", "--custom", &custom, "scale", scale, "position", "800", "0"]);
            let log = InputLog::spawn(&mut f, "HEADLESS-2");
            let srv = Server::start(&f, &["--allow-input", "--output", "HEADLESS-2"]);
            log.wait_keyboard_focus();
            let browser = Browser::launch();
            let mut page = viewer(&srv, &browser);
            let (w, h) = mode.split_once('x').expect("WxH");
            let size = page.eval("[wlw.stats.width, wlw.stats.height]");
            assert_eq!(size, serde_json::json!([w.parse::<u32>().expect("w"), h.parse::<u32>().expect("h")]));
            for (x, y) in [(100.0, 75.0), (400.0, 300.0), (733.0, 512.0)] {
                click_lands(&mut page, &log, x, y);
            }
        });
    }
}

/// `n` characters of printable ASCII (every key of the US keymap, Shift and not), different for each `seed`.
fn burst_text(seed: u32, n: usize) -> String {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            char::from(b' ' + ((x >> 16) % 95) as u8)
        })
        .collect()
}

/// Send 5 × 1,000 characters of `text` at once over the page's `input` channel, call `meanwhile`, and wait
/// until all of it is typed: the exact text, in order. The input counters' change over the burst.
fn type_burst(srv: &Server, log: &InputLog, page: &mut Page, meanwhile: impl FnOnce()) -> Value {
    let before = input_status(srv);
    let texts: Vec<String> = (0..5).map(|i| burst_text(i, 1000)).collect();
    let want: String = texts.concat();
    // All five in one go: the page sends them back to back.
    let js: Vec<String> = texts
        .iter()
        .map(|t| {
            let msg = serde_json::json!({ "t": "text", "s": t }).to_string();
            format!("wlw.dc.send({});", serde_json::to_string(&msg).expect("json"))
        })
        .collect();
    let t = Instant::now();
    page.eval(&format!("{} true", js.concat()));
    meanwhile();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (0, Instant::now());
    let first_difference = |typed: &str| typed.chars().zip(want.chars()).position(|(a, b)| a != b);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let typed = log.typed();
        if typed.len() >= want.len() {
            break;
        }
        if typed.len() != last.0 {
            last = (typed.len(), Instant::now());
        }
        let stalled = last.1.elapsed() > Duration::from_secs(10);
        assert!(
            Instant::now() < deadline && !stalled,
            "typed {} of {} characters (status {}); first difference at {:?}",
            typed.len(),
            want.len(),
            input_status(srv),
            first_difference(&typed)
        );
    }
    let took = t.elapsed();
    // A moment for anything extra to show up.
    std::thread::sleep(Duration::from_millis(300));
    let typed = log.typed();
    eprintln!("{} characters typed in {took:?}", typed.len());
    assert!(typed == want, "typed {} characters; first difference at {:?}", typed.len(), first_difference(&typed));
    let after =
        wait_status(srv, "5 more injected", |s| s["injected"].as_u64() >= before["injected"].as_u64().map(|n| n + 5));
    let keys = ["received", "injected", "dropped", "rejected", "rate_limited", "backpressure_waits"];
    let delta: serde_json::Map<String, Value> = keys
        .iter()
        .map(|&k| (k.to_owned(), Value::from(after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0))))
        .collect();
    eprintln!("input counters over the burst: {delta:?}");
    Value::Object(delta)
}

#[test]
fn a_burst_of_five_1000_character_texts_is_typed_completely_and_in_order() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let (_f, log, srv, _browser, mut page) = session(&["--allow-input"]);
        let d = type_burst(&srv, &log, &mut page, || {});
        assert_eq!(
            (&d["received"], &d["injected"], &d["dropped"], &d["rejected"], &d["rate_limited"]),
            (&Value::from(5), &Value::from(5), &Value::from(0), &Value::from(0), &Value::from(0)),
            "{d:?}"
        );
    });
}

/// The headless Sway of `f` (found by its runtime dir: the fixture keeps the pid to itself).
fn sway_pid(f: &Fixture) -> u32 {
    let dir = f.desk.runtime_dir().to_string_lossy().into_owned();
    let want = format!("XDG_RUNTIME_DIR={dir}");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            comm.trim() == "sway" && env.split(|&b| b == 0).any(|v| v == want.as_bytes())
        })
        .expect("the fixture's sway process")
}

/// SIGSTOP for a process, undone (SIGCONT) on drop so that a failing test never leaves it stopped.
struct Stopped(rustix::process::Pid);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::STOP).expect("SIGSTOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(self.0, rustix::process::Signal::CONT);
    }
}

#[test]
fn a_compositor_that_stops_reading_is_back_pressure_and_the_burst_is_typed_after_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let (f, log, srv, _browser, mut page) = session(&["--allow-input"]);
        let sway = sway_pid(&f);
        // Sway stops reading for 4 s while the burst is typed: the injector's socket fills up (EAGAIN).
        let d = type_burst(&srv, &log, &mut page, || {
            let stopped = Stopped::new(sway);
            std::thread::sleep(Duration::from_secs(4));
            drop(stopped);
        });
        assert!(d["backpressure_waits"].as_u64() > Some(0), "the socket did fill up: {d:?}");
        assert_eq!(
            (&d["received"], &d["injected"], &d["dropped"], &d["rejected"]),
            (&Value::from(5), &Value::from(5), &Value::from(0), &Value::from(0)),
            "{d:?}"
        );
    });
}

/// Wait until `text` has been typed (the end of what the log shows).
fn wait_typed_suffix(log: &InputLog, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.typed().ends_with(text) {
        assert!(Instant::now() < deadline, "{text:?} not typed; typed {:?}", log.typed());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn counter(st: &Value, k: &str) -> u64 {
    st[k].as_u64().unwrap_or_else(|| panic!("no counter {k} in {st}"))
}

#[test]
fn a_second_input_channel_is_refused_and_a_flood_is_rate_limited_while_the_first_channel_keeps_working() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let (_f, log, srv, _browser, mut page) = session(&["--allow-input"]);
        // The same peer opens another channel labelled `input` (no renegotiation needed: SCTP is up).
        page.eval(
            r#"wlw.dc2 = wlw.pc.createDataChannel("input", { ordered: true });
               wlw.dc2msgs = []; wlw.dc2.onmessage = e => wlw.dc2msgs.push(e.data); true"#,
        );
        page.wait_for(r#"wlw.dc2.readyState === "closed""#, Duration::from_secs(10));
        assert_eq!(page.eval("wlw.dc2msgs.length"), Value::from(0), "the refused channel was never served");
        let st = wait_status(&srv, "one channel refused", |s| s["channels_refused"] == 1);
        assert_eq!(page.eval("wlw.dc.readyState"), Value::from("open"), "the first channel stays: {st}");
        page.eval(r#"wlw.dc.send(JSON.stringify({ t: "text", s: "still here" })); true"#);
        wait_typed_suffix(&log, "still here");

        // A flood: 20,000 pointer moves sent at once. The bucket passes its burst (2,000) plus 1,000/s while
        // they arrive; the rest is dropped and counted; nothing is lost from the books.
        let before = input_status(&srv);
        let t = Instant::now();
        page.eval(
            r#"for (let i = 0; i < 20000; i++) wlw.dc.send(JSON.stringify({ t: "move", x: (i % 100) / 100, y: 0.5 })); true"#,
        );
        wait_status(&srv, "20,000 received", |s| counter(s, "received") >= counter(&before, "received") + 20_000);
        let arrived = t.elapsed();
        let st = wait_status(&srv, "every message accounted for", |s| {
            counter(s, "injected") + counter(s, "dropped") + counter(s, "rejected") == counter(s, "received")
        });
        let d = |k: &str| counter(&st, k) - counter(&before, k);
        eprintln!(
            "flood of 20000 arrived in {arrived:?}: injected {}, rate limited {}, dropped {}",
            d("injected"),
            d("rate_limited"),
            d("dropped")
        );
        // The viewer page may send a message of its own meanwhile (its input script's own events): the flood is
        // the 20,000, and every message received is accounted for.
        assert!((20_000..=20_010).contains(&d("received")), "{st}");
        assert_eq!(d("injected") + d("dropped") + d("rejected"), d("received"), "{st}");
        assert_eq!(d("dropped"), d("rate_limited"), "only the limit dropped anything: {st}");
        let most = 2_000 + (arrived.as_secs_f64() * 1_000.0) as u64 + 50;
        assert!(d("injected") >= 2_000 && d("injected") <= most, "passed {} (at most {most}): {st}", d("injected"));
        assert!(d("rate_limited") > 0, "{st}");
        assert_eq!(counter(&st, "channels_refused"), 1);

        // Not fatal: after the bucket refills, the same channel types again.
        std::thread::sleep(Duration::from_millis(500));
        page.eval(r#"wlw.dc.send(JSON.stringify({ t: "text", s: "and again" })); true"#);
        wait_typed_suffix(&log, "and again");
        assert_eq!(page.eval("wlw.dc.readyState"), Value::from("open"));
    });
}

/// The desktop's clipboard as `wl-paste` (a desktop client) sees it; `None` when there is no selection.
fn desktop_clipboard(f: &Fixture) -> Option<String> {
    let out = f.desk.command("wl-paste").args(["--no-newline", "--type", "text/plain"]).output().expect("wl-paste");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Put `text` on the desktop's clipboard with `wl-copy` (it serves it until the desktop goes).
fn desktop_copy(f: &mut Fixture, text: &str) {
    let mut cmd = f.desk.command("wl-copy");
    cmd.args(["--foreground", "--type", "text/plain;charset=utf-8", text]).stdout(Stdio::null());
    f.desk.spawn(cmd).expect("wl-copy");
}

/// A paste in the viewer page, as the browser fires it (Ctrl+Shift+V), of `text`.
fn page_paste(page: &mut Page, text: &str) {
    page.eval(&format!(
        "(() => {{ const dt = new DataTransfer(); dt.setData('text/plain', {}); \
         document.dispatchEvent(new ClipboardEvent('paste', {{ clipboardData: dt, bubbles: true, cancelable: true }})); \
         return true; }})()",
        serde_json::to_string(text).expect("json")
    ));
}

#[test]
fn the_clipboard_goes_both_ways_with_input_and_never_to_a_view_only_viewer() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let (mut f, _log, srv, _browser, mut page) = session(&["--allow-input"]);
        // Desktop → viewer: a copy on the desktop reaches the page once.
        desktop_copy(&mut f, "héllo from the desktop ✓");
        page.wait_for("wlw.clipboard.fromDesktop === 'héllo from the desktop ✓'", Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(page.eval("wlw.clipboard.received"), Value::from(1), "sent once");
        // Viewer → desktop: a paste in the page becomes the desktop's selection (what Ctrl+V there pastes).
        page_paste(&mut page, "grüße vom Browser\nzweite Zeile");
        let deadline = Instant::now() + Duration::from_secs(10);
        while desktop_clipboard(&f).as_deref() != Some("grüße vom Browser\nzweite Zeile") {
            assert!(Instant::now() < deadline, "not on the desktop's clipboard: {:?}", desktop_clipboard(&f));
            std::thread::sleep(Duration::from_millis(100));
        }
        // Our own selection is not echoed back to the viewer.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(page.eval("wlw.clipboard.received"), Value::from(1));
        // Another change on the desktop comes through again.
        desktop_copy(&mut f, "second copy");
        page.wait_for("wlw.clipboard.fromDesktop === 'second copy'", Duration::from_secs(10));
        assert!(input_status(&srv)["injected"].as_u64() >= Some(1));
    });
    in_private_netns(|| {
        // View-only: the desktop's clipboard never reaches the page, and the page's never reaches the desktop.
        let (mut f, _log, srv, _browser, mut page) = session(&[]);
        desktop_copy(&mut f, "not for view-only eyes");
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(page.eval("wlw.clipboard.received"), Value::from(0));
        page.eval(r#"wlw.dc.send(JSON.stringify({ t: "clipboard", text: "from a view-only page" })); true"#);
        wait_status(&srv, "the message dropped", |s| s["dropped"].as_u64() >= Some(1));
        assert_eq!(desktop_clipboard(&f).as_deref(), Some("not for view-only eyes"));
    });
}

/// What `navigator.keyboard.getLayoutMap()` gives on a German (de) keyboard: the writing-system keys.
const GERMAN_LAYOUT_MAP: &str = r##"{"Backquote":"^","Digit1":"1","Digit2":"2","Digit3":"3","Digit4":"4","Digit5":"5",
  "Digit6":"6","Digit7":"7","Digit8":"8","Digit9":"9","Digit0":"0","Minus":"ß","Equal":"´","KeyQ":"q","KeyW":"w",
  "KeyE":"e","KeyR":"r","KeyT":"t","KeyY":"z","KeyU":"u","KeyI":"i","KeyO":"o","KeyP":"p","BracketLeft":"ü",
  "BracketRight":"+","KeyA":"a","KeyS":"s","KeyD":"d","KeyF":"f","KeyG":"g","KeyH":"h","KeyJ":"j","KeyK":"k",
  "KeyL":"l","Semicolon":"ö","Quote":"ä","Backslash":"#","IntlBackslash":"<","KeyZ":"y","KeyX":"x","KeyC":"c",
  "KeyV":"v","KeyB":"b","KeyN":"n","KeyM":"m","Comma":",","Period":".","Slash":"-"}"##;

#[test]
fn a_viewer_with_a_german_keyboard_types_what_its_keys_say_and_altgr_leaves_nothing_held() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let (_f, log, _srv, _browser, mut page) = session(&["--allow-input"]);
        // The page's own layout report, as a German browser makes it.
        page.eval(&format!("wlw.sendLayout({GERMAN_LAYOUT_MAP})"));
        std::thread::sleep(Duration::from_millis(300));
        // The keys a German user presses for "z", "ö", "y" (physical KeyY, Semicolon, KeyZ) …
        for code in ["KeyY", "Semicolon", "KeyZ"] {
            page.key_press(code);
        }
        wait_typed_suffix(&log, "zöy");
        // … and AltGr+Q, which is "@" on that layout.
        page.key_down("AltRight");
        page.key_press("KeyQ");
        page.key_up("AltRight");
        wait_typed_suffix(&log, "zöy@");
        // Every key that went down came up: nothing is held (AltGr, the level-3 shift, included).
        std::thread::sleep(Duration::from_millis(300));
        let mut held = std::collections::BTreeMap::new();
        for e in log.events().iter().filter(|e| e["ev"] == "key") {
            held.insert(e["code"].as_u64().unwrap_or(0), e["down"] == true);
        }
        assert!(held.values().all(|down| !down), "keys still held: {held:?}");
    });
}

#[test]
fn a_rotated_output_is_streamed_upright_and_clicks_land_where_they_are_shown() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for transform in ["90", "180", "270"] {
        in_private_netns(move || {
            // HEADLESS-1 800x600 turned: 600x800 logical at 90°/270°; the input-log client paints its quadrants
            // upright in it.
            let mut f = Fixture::start(W, H, 60);
            f.swaymsg(&["output", "HEADLESS-1", "transform", transform]);
            let log = InputLog::spawn(&mut f, "HEADLESS-1");
            let srv = Server::start(&f, &["--allow-input"]);
            log.wait_keyboard_focus();
            let browser = Browser::launch();
            let mut page = viewer(&srv, &browser);
            let (w, h) = if transform == "180" { (800, 600) } else { (600, 800) };
            assert_eq!(page.eval("[wlw.stats.width, wlw.stats.height]"), serde_json::json!([w, h]), "{transform}");
            // The picture is upright: each quadrant where the client painted it.
            std::thread::sleep(Duration::from_millis(500));
            for (x, y) in [(w / 4, h / 4), (3 * w / 4, h / 4), (w / 4, 3 * h / 4), (3 * w / 4, 3 * h / 4)] {
                let px = page.eval(&crate::stream::video_pixel_js(x, y));
                let want = testkit::pattern::quadrant_colour(w, h, x, y);
                assert!(crate::stream::close_to(&px, want), "{transform}: pixel ({x},{y}) = {px}, want {want:?}");
            }
            // Letterboxed into the 1280x720 page: 600x800 at scale 0.9 with bars of 370 px, 800x600 at 1.2
            // with bars of 160 px.
            let (scale, left) = if w == 600 { (0.9, 370.0) } else { (1.2, 160.0) };
            for (x, y) in [(100.0, 150.0), (480.0, 550.0)] {
                page.mouse_click(left + scale * x, scale * y);
                log.wait(
                    |e| e["ev"] == "button" && e["down"] == true && near(&e["x"], x) && near(&e["y"], y),
                    Duration::from_secs(5),
                    &format!("{transform}: left press at ({x}, {y})"),
                );
            }
        });
    }
}

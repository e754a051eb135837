//! The Firefox driver (`testkit::browser::firefox`) against a real headless Firefox ESR, inside a private
//! network namespace (only `lo`, plus the default route Firefox's ICE needs): the page API (navigate, eval of
//! values and promises, console, mouse, keys, wheel, viewport) through the `BrowserPage` trait, the same test
//! body in Chromium, no process outliving the `Firefox`, and a VP8 loopback call between two peer connections.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::browser::{Browser, BrowserPage, Firefox, add_default_route_via_lo};
use testkit::http::HttpServer;
use testkit::netns::in_private_netns;

const FIXTURE: &str = r#"<!doctype html>
<html><head><title>fixture</title></head>
<body style="margin:0">
<input id="t" autocomplete="off" style="position:absolute; left:10px; top:10px; width:300px; height:30px">
<div style="height:5000px"></div>
<script>
  window.keys = [];
  document.getElementById('t').addEventListener('keydown', e => keys.push(e.key));
  window.clicks = [];
  document.addEventListener('mousedown', e => clicks.push([e.button, e.clientX, e.clientY]));
  console.log('fixture ready', 7);
</script>
</body></html>"#;

/// Wait until the console has a line that contains `needle` (console events are read while commands run).
fn wait_console(page: &mut impl BrowserPage, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = page.console().iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        assert!(Instant::now() < deadline, "no console line with {needle:?}; console: {:?}", page.console());
        page.eval("0");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One test body for either browser: values and promises, exceptions, console, click, typing, keys with
/// Shift held, the wheel and the viewport.
fn exercise_page(page: &mut impl BrowserPage, url: &str) {
    let name = page.browser_name();
    page.navigate(url);
    assert_eq!(page.eval("document.title"), json!("fixture"), "{name}: navigated");
    // Values, as CDP's returnByValue gives them.
    assert_eq!(page.eval("6 * 7"), json!(42), "{name}");
    assert_eq!(page.eval("0.5 + 0.25"), json!(0.75), "{name}");
    assert_eq!(page.eval("undefined"), json!(null), "{name}");
    assert_eq!(page.eval("0 / 0"), json!("NaN"), "{name}");
    assert_eq!(
        page.eval("({ a: [1, 'x', null, true], b: { c: 1.5 }, s: 'é\"' })"),
        json!({ "a": [1, "x", null, true], "b": { "c": 1.5 }, "s": "é\"" }),
        "{name}"
    );
    // Promises are awaited.
    assert_eq!(page.eval("Promise.resolve(20).then(x => x + 1)"), json!(21), "{name}");
    assert_eq!(page.eval("new Promise(r => setTimeout(() => r('late'), 100))"), json!("late"), "{name}");
    let err = page.try_eval("throw new Error('boom')").expect_err("a throw is an Err");
    assert!(err.contains("boom"), "{name}: exception text: {err}");
    let err = page.try_eval("Promise.reject(new Error('nope'))").expect_err("a rejection is an Err");
    assert!(err.contains("nope"), "{name}: rejection text: {err}");
    // `wait_for` polls until truthy.
    page.eval("setTimeout(() => { window.later = 5 }, 200)");
    assert_eq!(page.wait_for("window.later", Duration::from_secs(5)), json!(5), "{name}");
    // Console.
    assert_eq!(wait_console(page, "fixture ready"), "log: fixture ready 7", "{name}");
    page.eval("console.warn('careful'); console.error('bad', 1)");
    assert_eq!(wait_console(page, "careful"), "warning: careful", "{name}");
    assert_eq!(wait_console(page, "bad"), "error: bad 1", "{name}");

    // Click into the input, type, use keys.
    page.mouse_click(100.0, 25.0);
    assert_eq!(page.eval("document.activeElement.id"), json!("t"), "{name}: the click focused the input");
    assert_eq!(page.eval("clicks"), json!([[0, 100, 25]]), "{name}: one left mousedown at (100, 25)");
    page.type_text("hello wor");
    page.key_press("l");
    page.key_press("KeyD");
    page.key_press("!");
    page.key_down("Shift");
    page.key_press("x");
    page.key_up("Shift");
    page.key_press("Backspace");
    page.key_down("Shift");
    page.key_press("a");
    page.key_up("Shift");
    assert_eq!(page.eval("document.getElementById('t').value"), json!("hello world!A"), "{name}: typed text");
    page.key_press("ArrowLeft");
    page.key_press("Delete");
    page.key_press("Enter");
    assert_eq!(page.eval("document.getElementById('t').value"), json!("hello world!"), "{name}: edited");
    let keys = page.eval("keys");
    for key in ["l", "d", "!", "Shift", "X", "Backspace", "A", "ArrowLeft", "Delete", "Enter"] {
        assert!(keys.as_array().is_some_and(|k| k.contains(&json!(key))), "{name}: no keydown {key:?} in {keys}");
    }
    // Right button down/up, then the wheel.
    page.mouse_button(200.0, 300.0, "right", true);
    page.mouse_button(200.0, 300.0, "right", false);
    assert_eq!(page.eval("clicks[1]"), json!([2, 200, 300]), "{name}: right mousedown");
    page.mouse_move(200.0, 300.0);
    page.mouse_wheel(200.0, 300.0, 0.0, 400.0);
    page.wait_for("window.scrollY > 0", Duration::from_secs(5));
    // Viewport.
    page.set_viewport(800, 600);
    assert_eq!(page.eval("[innerWidth, innerHeight]"), json!([800, 600]), "{name}: viewport");
    let png = page.screenshot_png();
    assert!(png.len() > 100, "{name}: screenshot");
}

#[test]
fn firefox_page_api_and_no_process_outlives_it() {
    in_private_netns(|| {
        let srv = HttpServer::html(&[("/", FIXTURE)]);
        let t0 = Instant::now();
        let firefox = Firefox::launch().unwrap_or_else(|e| panic!("launch Firefox: {e}"));
        let launched = t0.elapsed();
        let profile = firefox.profile_dir().to_owned();
        assert!(profile.file_name().is_some_and(|n| n.to_string_lossy().starts_with("wl-webrtc-firefox-")));
        assert!(profile.join("user.js").exists(), "user.js written");
        {
            let mut page = firefox.new_page("about:blank");
            let version = BrowserPage::version(&mut page);
            assert!(version.split('.').next().is_some_and(|major| major.parse::<u32>().is_ok()), "{version}");
            eprintln!("Firefox {version} (launched in {launched:?})");
            exercise_page(&mut page, &srv.url("/"));
            // The prefs of user.js are in effect: getUserMedia gets a fake camera without a prompt.
            let gum = "navigator.mediaDevices.getUserMedia({ video: true }).then(s => s.getVideoTracks()[0].label)";
            let label = page.eval(gum);
            assert!(label.as_str().is_some_and(|l| !l.is_empty()), "fake camera track, got {label}");
            eprintln!("page API exercised in {:?}", t0.elapsed());
        }
        // The session ended with the page: a second one can be opened (on a data: URL).
        let mut page = firefox.new_page("data:text/html,<title>second</title>");
        assert_eq!(page.eval("document.title"), json!("second"));
        drop(page);

        let pids = firefox.processes();
        assert!(pids.len() >= 3, "Firefox runs several processes, found {pids:?}");
        let t1 = Instant::now();
        drop(firefox);
        eprintln!("{} processes stopped in {:?}", pids.len(), t1.elapsed());
        let alive: Vec<u32> = pids.iter().copied().filter(|&p| is_alive(p)).collect();
        assert!(alive.is_empty(), "Firefox processes outlived the Firefox: {alive:?} of {pids:?}");
        assert!(!profile.exists(), "profile dir {} not removed", profile.display());
    });
}

/// The same body against Chromium: the `BrowserPage` trait drives both.
#[test]
fn same_page_test_drives_chromium() {
    in_private_netns(|| {
        let srv = HttpServer::html(&[("/", FIXTURE)]);
        let browser = Browser::launch();
        let mut page = browser.new_page("about:blank");
        eprintln!("Chromium {}", BrowserPage::version(&mut page));
        exercise_page(&mut page, &srv.url("/"));
    });
}

/// A live, non-zombie process.
fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').and_then(|i| s[i + 1..].split_whitespace().next().map(str::to_owned)))
        .is_some_and(|state| state != "Z" && state != "X")
}

const WEBRTC_PAGE: &str = r#"<!doctype html>
<html><body>
<canvas id="c" width="320" height="240"></canvas>
<video id="v" autoplay muted playsinline></video>
<script>
  const canvas = document.getElementById('c');
  const ctx = canvas.getContext('2d');
  let n = 0;
  // Keep drawing: captureStream() only produces frames when the canvas changes.
  setInterval(() => {
    n++;
    ctx.fillStyle = `hsl(${(n * 7) % 360}, 80%, 50%)`;
    ctx.fillRect(0, 0, 320, 240);
    ctx.fillStyle = '#fff';
    ctx.fillRect((n * 4) % 320, 100, 40, 40);
  }, 33);

  window.state = 'new';
  window.start = async () => {
    const sender = new RTCPeerConnection();
    const receiver = new RTCPeerConnection();
    window.pcs = [sender, receiver];
    sender.onicecandidate = e => e.candidate && receiver.addIceCandidate(e.candidate);
    receiver.onicecandidate = e => e.candidate && sender.addIceCandidate(e.candidate);
    receiver.oniceconnectionstatechange = () => console.log('receiver ice', receiver.iceConnectionState);
    receiver.ontrack = e => { document.getElementById('v').srcObject = new MediaStream([e.track]); };
    const track = canvas.captureStream(30).getVideoTracks()[0];
    const tx = sender.addTransceiver(track, { direction: 'sendonly', streams: [] });
    const vp8 = RTCRtpSender.getCapabilities('video').codecs.filter(c => c.mimeType === 'video/VP8');
    if (!vp8.length) throw new Error('no VP8 in RTCRtpSender.getCapabilities');
    tx.setCodecPreferences(vp8);
    await sender.setLocalDescription(await sender.createOffer());
    await receiver.setRemoteDescription(sender.localDescription);
    await receiver.setLocalDescription(await receiver.createAnswer());
    await sender.setRemoteDescription(receiver.localDescription);
    window.state = 'negotiated';
    return vp8.length;
  };

  window.inbound = async () => {
    const stats = await window.pcs[1].getStats();
    let inbound = null;
    stats.forEach(s => { if (s.type === 'inbound-rtp' && s.kind === 'video') inbound = s; });
    if (!inbound) return null;
    const codec = inbound.codecId ? stats.get(inbound.codecId) : null;
    const video = document.getElementById('v');
    return { framesDecoded: inbound.framesDecoded || 0, mimeType: codec ? codec.mimeType : null,
             videoWidth: video.videoWidth, videoHeight: video.videoHeight,
             ice: window.pcs[1].iceConnectionState };
  };
</script>
</body></html>"#;

#[test]
fn firefox_webrtc_vp8_on_loopback() {
    in_private_netns(|| {
        // Without it, Firefox's ICE finds no usable address in a namespace with only `lo` (see its docs).
        add_default_route_via_lo().unwrap_or_else(|e| panic!("{e}"));
        let srv = HttpServer::html(&[("/webrtc.html", WEBRTC_PAGE)]);
        let firefox = Firefox::launch().unwrap_or_else(|e| panic!("launch Firefox: {e}"));
        let mut page = firefox.new_page(&srv.url("/webrtc.html"));
        eprintln!("Firefox {}", page.version());
        let t0 = Instant::now();
        page.eval("start()");
        let stats = page.wait_for(
            "inbound().then(s => s && s.videoWidth > 0 && s.framesDecoded > 0 && s.mimeType ? s : null)",
            Duration::from_secs(30),
        );
        eprintln!("first decoded frames after {:?}: {stats}", t0.elapsed());
        assert_eq!(stats["mimeType"], json!("video/VP8"), "codec from getStats: {stats}");
        assert_eq!(stats["videoWidth"], json!(320), "{stats}");
        assert_eq!(stats["videoHeight"], json!(240), "{stats}");
        // Frames keep coming.
        let before = stats["framesDecoded"].as_u64().unwrap_or_default();
        page.wait_for(&format!("inbound().then(s => s.framesDecoded > {before} + 10)"), Duration::from_secs(10));
        assert!(
            page.console().iter().any(|l| l.contains("receiver ice connected") || l.contains("receiver ice completed")),
            "ICE state changes on the console: {:?}",
            page.console()
        );
    });
}

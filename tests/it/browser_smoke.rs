//! Smoke tests for the browser test harness (`support::{netns, http, browser}`): a private loopback-only
//! network namespace, a static HTTP server, headless Chromium over CDP, and Chromium doing WebRTC over
//! 127.0.0.1 inside that namespace. Needs root (or CAP_SYS_ADMIN) and /usr/bin/chromium.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::browser::{self, Browser};
use crate::support::http::HttpServer;
use crate::support::netns::{self, in_private_netns};

/// Two RTCPeerConnections in one page: pc1 sends the fake camera (H.264 preferred when both sides have it),
/// pc2 receives; candidates are exchanged in-page.
const LOOPBACK_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>wl-webrtc loopback smoke</title></head>
<body>
<video id="remote" autoplay muted playsinline width="320" height="240"></video>
<script>
window.smoke = { candidates: [], errors: [] };
const isH264 = (c) => c.mimeType.toLowerCase() === 'video/h264';
window.startLoopback = async () => {
  const s = window.smoke;
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: false });
  const track = stream.getVideoTracks()[0];
  const pc1 = new RTCPeerConnection();
  const pc2 = new RTCPeerConnection();
  window.pc1 = pc1; window.pc2 = pc2;
  pc1.onicecandidate = (e) => {
    if (!e.candidate) return;
    s.candidates.push({ address: e.candidate.address, candidate: e.candidate.candidate });
    pc2.addIceCandidate(e.candidate).catch((err) => s.errors.push('pc2.addIceCandidate: ' + err));
  };
  pc2.onicecandidate = (e) => {
    if (e.candidate) pc1.addIceCandidate(e.candidate).catch((err) => s.errors.push('pc1.addIceCandidate: ' + err));
  };
  pc2.ontrack = (e) => { document.getElementById('remote').srcObject = new MediaStream([e.track]); };
  const tx = pc1.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
  const send = RTCRtpSender.getCapabilities('video').codecs;
  const recv = RTCRtpReceiver.getCapabilities('video').codecs;
  s.sendH264 = send.some(isH264);
  s.recvH264 = recv.some(isH264);
  if (s.sendH264 && s.recvH264) {
    try {
      tx.setCodecPreferences([...recv.filter(isH264), ...recv.filter((c) => !isH264(c))]);
      s.preferred = 'H264';
    } catch (err) { s.errors.push('setCodecPreferences: ' + err); }
  }
  const offer = await pc1.createOffer();
  await pc1.setLocalDescription(offer);
  await pc2.setRemoteDescription(offer);
  const answer = await pc2.createAnswer();
  await pc2.setLocalDescription(answer);
  await pc1.setRemoteDescription(answer);
  return { track: track.label, readyState: track.readyState, sendH264: s.sendH264, recvH264: s.recvH264 };
};
// Inbound video stats of pc2 plus the local address of the selected candidate pair (null until there is one).
window.inboundVideo = async () => {
  const stats = await window.pc2.getStats();
  let inbound = null, pairId = null;
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') inbound = r;
    if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
  });
  if (!inbound) return null;
  const codec = inbound.codecId && stats.get(inbound.codecId);
  const pair = pairId && stats.get(pairId);
  const local = pair && stats.get(pair.localCandidateId);
  return {
    framesDecoded: inbound.framesDecoded || 0,
    frameWidth: inbound.frameWidth || 0,
    frameHeight: inbound.frameHeight || 0,
    codec: codec ? codec.mimeType : null,
    decoder: inbound.decoderImplementation || null,
    pairLocalAddress: local ? (local.address || local.ip) : null,
    iceState: window.pc2.iceConnectionState,
  };
};
</script>
</body></html>
"#;

/// Records the input events the page sees.
const INPUT_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>input</title>
<style>html, body { margin: 0; height: 100%; background: rgb(0, 128, 255); } input { position: absolute; left: 10px;
top: 10px; width: 200px; }</style></head>
<body><input id="field">
<script>
window.seen = [];
for (const t of ['keydown', 'keyup']) {
  addEventListener(t, (e) => seen.push({ t, key: e.key, code: e.code, keyCode: e.keyCode, shift: e.shiftKey, ctrl: e.ctrlKey }), true);
}
addEventListener('mousedown', (e) => seen.push({ t: 'mousedown', x: e.clientX, y: e.clientY, button: e.button }), true);
addEventListener('click', (e) => seen.push({ t: 'click', x: e.clientX, y: e.clientY }), true);
addEventListener('mousemove', (e) => { window.lastMove = [e.clientX, e.clientY]; }, true);
addEventListener('wheel', (e) => seen.push({ t: 'wheel', dy: e.deltaY }), true);
</script></body></html>
"#;

#[test]
fn private_netns_has_only_loopback() {
    let outer = netns::current_netns();
    let inner = in_private_netns(move || {
        netns::assert_only_loopback();
        // 127.0.0.1 works ...
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1 in the namespace");
        TcpStream::connect(listener.local_addr().unwrap()).expect("connect over lo in the namespace");
        // ... and nothing else is routable (TEST-NET-1; connect() on UDP only does the route lookup).
        let udp = UdpSocket::bind("0.0.0.0:0").expect("bind udp");
        let err = udp.connect("192.0.2.1:9").expect_err("a private namespace must have no route out");
        assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "unexpected error: {err}");
        // Processes spawned from this thread inherit the namespace.
        let out = std::process::Command::new("cat").arg("/proc/self/net/dev").output().expect("run cat");
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(2)
            .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_owned()))
            .collect();
        assert_eq!(names, ["lo"], "child process is not in the private namespace");
        netns::current_netns()
    });
    assert_ne!(inner, outer, "the closure must run in a different network namespace");
    assert_eq!(netns::current_netns(), outer, "the calling thread must stay in its namespace");
}

#[test]
fn tokio_runtime_threads_stay_in_the_namespace() {
    let outer = netns::current_netns();
    in_private_netns(move || {
        let inner = netns::current_netns();
        assert_ne!(inner, outer);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let (worker_ns, blocking_ns, echoed) = rt.block_on(async {
            let worker_ns = tokio::spawn(async { netns::current_netns() }).await.unwrap();
            let blocking_ns = tokio::task::spawn_blocking(netns::current_netns).await.unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move { listener.accept().await.map(|(_, peer)| peer) });
            tokio::net::TcpStream::connect(addr).await.expect("connect over lo");
            (worker_ns, blocking_ns, server.await.unwrap().is_ok())
        });
        assert_eq!(worker_ns, inner, "tokio worker thread outside the private namespace");
        assert_eq!(blocking_ns, inner, "tokio blocking thread outside the private namespace");
        assert!(echoed);
    });
}

#[test]
fn private_netns_propagates_panics() {
    let caught = std::panic::catch_unwind(|| in_private_netns(|| panic!("boom inside the namespace")));
    let payload = caught.expect_err("the panic must propagate");
    let msg = payload.downcast_ref::<&str>().copied().unwrap_or_default();
    assert_eq!(msg, "boom inside the namespace");
}

#[test]
fn base64_and_truthiness() {
    assert_eq!(browser::base64_decode("aGVsbG8gd29ybGQ="), b"hello world");
    assert_eq!(browser::base64_decode("AAEC/w=="), [0, 1, 2, 255]);
    assert_eq!(browser::base64_decode(""), b"");
    for v in [json!(null), json!(false), json!(0), json!(""), json!("NaN")] {
        assert!(!browser::truthy(&v), "{v} must be falsy");
    }
    for v in [json!(true), json!(1), json!("x"), json!([]), json!({})] {
        assert!(browser::truthy(&v), "{v} must be truthy");
    }
}

#[test]
fn chromium_loopback_webrtc_in_private_netns() {
    in_private_netns(|| {
        let started = Instant::now();
        netns::assert_only_loopback();
        let server = HttpServer::html(&[("/", LOOPBACK_PAGE)]);
        let browser = Browser::launch();
        let profile = browser.user_data_dir().to_owned();
        eprintln!("chromium {} up after {:?}", browser.version()["Browser"], started.elapsed());

        let mut page = browser.new_page(&server.url("/"));
        assert_eq!(page.eval("1+1"), json!(2));
        assert_eq!(page.eval("location.origin"), json!(server.url("")));
        let err = page.try_eval("(() => { throw new Error('expected failure') })()").expect_err("must fail");
        assert!(err.contains("expected failure"), "exception text: {err}");

        let setup = page.eval("startLoopback()");
        eprintln!("loopback set up: {setup}");
        assert_eq!(setup["readyState"], "live", "no live fake camera track: {setup}");

        let stats = page.wait_for(
            "inboundVideo().then(s => s && s.framesDecoded > 10 && s.pairLocalAddress ? s : null)",
            Duration::from_secs(30),
        );
        eprintln!("pc2 inbound video: {stats}");
        assert_eq!(stats["pairLocalAddress"], "127.0.0.1", "selected pair is not on loopback: {stats}");
        let smoke = page.eval("window.smoke");
        let candidates = smoke["candidates"].as_array().cloned().unwrap_or_default();
        assert!(
            candidates.iter().any(|c| c["address"] == "127.0.0.1"),
            "no 127.0.0.1 local candidate among {candidates:?}"
        );
        assert_eq!(smoke["errors"], json!([]), "errors in the page: {smoke}");
        assert!(server.requests().iter().any(|r| r.starts_with("GET / ")), "page not served: {:?}", server.requests());

        drop(page);
        let stopping = Instant::now();
        drop(browser);
        eprintln!("browser stopped in {:?}", stopping.elapsed());
        let left = browser::processes_with_cmdline(&profile.to_string_lossy());
        assert!(left.is_empty(), "Chromium processes left after drop: {left:?}");
        assert!(!profile.exists(), "profile dir {} not removed", profile.display());
        eprintln!("browser smoke done in {:?}", started.elapsed());
    });
}

#[test]
fn input_helpers_and_screenshot() {
    in_private_netns(|| {
        let server = HttpServer::html(&[("/input", INPUT_PAGE)]);
        let browser = Browser::launch();
        let mut page = browser.new_page(&server.url("/input"));
        assert_eq!(page.eval("[innerWidth, innerHeight]"), json!([1280, 720]));

        page.mouse_move(300.0, 200.0);
        page.wait_for("window.lastMove && lastMove[0] === 300 && lastMove[1] === 200", Duration::from_secs(5));
        page.mouse_click(50.0, 20.0); // on the input field: focuses it
        page.mouse_wheel(300.0, 300.0, 0.0, 120.0);
        page.key_press("KeyA");
        page.key_press("B");
        page.key_press("1");
        page.key_down("Shift");
        page.key_press("c");
        page.key_up("Shift");
        page.key_press("Enter");
        page.key_press("ArrowLeft");
        page.type_text("é!");
        let value = page.wait_for("document.getElementById('field').value", Duration::from_secs(5));
        assert_eq!(value, "aB1é!C", "ArrowLeft moves the caret before the inserted text");
        let seen = page.wait_for("seen.some(e => e.t === 'wheel') && seen", Duration::from_secs(5));
        let seen = seen.as_array().unwrap();
        let mouse: Vec<_> = seen.iter().filter(|e| e["t"] == "mousedown" || e["t"] == "click").collect();
        assert_eq!(
            mouse,
            [&json!({"t": "mousedown", "x": 50, "y": 20, "button": 0}), &json!({"t": "click", "x": 50, "y": 20})]
        );
        let downs: Vec<(String, String, bool)> = seen
            .iter()
            .filter(|e| e["t"] == "keydown")
            .map(|e| {
                (e["code"].as_str().unwrap().to_owned(), e["key"].as_str().unwrap().to_owned(), e["shift"] == true)
            })
            .collect();
        let expect = [
            ("KeyA", "a", false),
            ("KeyB", "B", true),
            ("Digit1", "1", false),
            ("ShiftLeft", "Shift", true),
            ("KeyC", "C", true),
            ("Enter", "Enter", false),
            ("ArrowLeft", "ArrowLeft", false),
        ]
        .map(|(c, k, s)| (c.to_owned(), k.to_owned(), s));
        assert_eq!(downs, expect);
        let key_a = seen.iter().find(|e| e["code"] == "KeyA").unwrap();
        assert_eq!(key_a["keyCode"], 65);

        let png = page.screenshot_png();
        // IHDR: width and height, big-endian, at bytes 16..24.
        let (w, h) =
            (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
        assert_eq!((w, h), (1280, 720));
    });
}

#[test]
fn browser_processes_are_gone_after_a_panic() {
    in_private_netns(|| {
        let mut seen: Option<(PathBuf, Vec<u32>)> = None;
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let browser = Browser::launch();
            let _page = browser.new_page("about:blank");
            seen = Some((browser.user_data_dir().to_owned(), browser.processes()));
            panic!("test failure while the browser runs");
        }));
        assert!(result.is_err());
        let (profile, pids) = seen.expect("browser launched");
        assert!(pids.len() > 2, "expected a browser with helper processes, got {pids:?}");
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
            })
            .collect();
        assert!(alive.is_empty(), "processes of the dropped browser still alive: {alive:?}");
        assert!(browser::processes_with_cmdline(&profile.to_string_lossy()).is_empty());
        assert!(!profile.exists(), "profile dir {} not removed", profile.display());
    });
}

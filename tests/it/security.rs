//! Attacks the way a hostile web page or client makes them, against a default `wl-webrtc start` (loopback,
//! a generated token): pages of another origin in real Chromium, DNS-rebinding Host headers and cross-site
//! POSTs from real HTTP clients, half-open offers, idle connections, and HTTPS beyond loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::http::HttpServer;
use testkit::pattern::PatternKind;

use crate::stream::{SERIAL, Server, http};
use crate::support::Fixture;
use crate::support::browser::Browser;
use crate::support::netns::in_private_netns;

const DECODED: &str = "window.wlw && wlw.stats && wlw.stats.framesDecoded > 0 && wlw.stats.decoder !== ''";

/// A hostile page: given the server's address (and, worst case, its token), it tries to watch over WHEP and
/// over `/ws`, to stop the server with a "simple" cross-site POST, and to end sessions. `attack()` resolves to
/// what each attempt got.
const ATTACK_PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>attack</title><script>
async function offer() {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.createDataChannel("input");
  const o = await pc.createOffer();
  await pc.setLocalDescription(o);
  return pc;
}
async function attack(base, token) {
  const r = {};
  // WHEP: a CORS request; the page can read the answer only if the server names its origin.
  const pc = await offer();
  try {
    const res = await fetch(base + "/whep?token=" + token, { method: "POST",
      headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp });
    r.whep = res.status;
    if (res.status === 201) {
      await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
      r.location = res.headers.get("Location");
      for (let i = 0; i < 100 && pc.connectionState !== "connected"; i++) await new Promise(f => setTimeout(f, 100));
      r.whepState = pc.connectionState;
    }
  } catch (e) { r.whep = "blocked: " + e.name; }
  window.whepPc = pc;
  // The signaling WebSocket (browsers send Origin; CORS does not apply, only the server's check does).
  r.ws = await new Promise(done => {
    const ws = new WebSocket(base.replace("http", "ws") + "/ws?token=" + token);
    const t = setTimeout(() => done("timeout"), 5000);
    ws.onopen = async () => {
      const p = await offer();
      ws.send(JSON.stringify({ type: "offer", sdp: p.localDescription.sdp }));
      ws.onmessage = e => { clearTimeout(t); done("answered: " + JSON.parse(e.data).type); };
    };
    ws.onerror = () => { clearTimeout(t); done("refused"); };
  });
  // A "simple" request (no preflight): text/plain POST, response unreadable, but it reaches the server.
  try { await fetch(base + "/api/shutdown?token=" + token, { method: "POST", mode: "no-cors",
    headers: { "Content-Type": "text/plain" }, body: "stop" }); r.shutdown = "sent"; }
  catch (e) { r.shutdown = "blocked: " + e.name; }
  try { const d = await fetch(base + "/whep/1?token=" + token, { method: "DELETE" }); r.delete = d.status; }
  catch (e) { r.delete = "blocked: " + e.name; }
  return r;
}
</script>"#;

/// One raw HTTP/1.1 request (whatever headers the caller writes, Host included); the status code.
fn raw_status(addr: SocketAddr, request: &str) -> u16 {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"))
}

fn addr_of(srv: &Server) -> SocketAddr {
    srv.base.trim_start_matches("http://").parse().expect("IP:PORT base")
}

fn alive(srv: &Server) -> bool {
    http("GET", &srv.url("/api/status"), &[], "").0 == 200
}

#[test]
fn a_page_of_another_origin_can_neither_watch_nor_drive_but_a_listed_origin_can() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(320, 240, PatternKind::Quadrants);
        let evil = HttpServer::html(&[("/attack.html", ATTACK_PAGE)]);
        let browser = Browser::launch();

        let srv = Server::start(&f, &["--allow-input"]);
        let token = srv.token.clone().expect("a default start has a token");
        let mut page = browser.new_page(&evil.url("/attack.html"));
        let r = page.eval(&format!("attack({:?}, {token:?})", srv.base));
        eprintln!("from a foreign origin: {r}");
        assert!(r["whep"].as_str().is_some_and(|s| s.starts_with("blocked")), "WHEP: {r}");
        assert_eq!(r["ws"], "refused", "{r}");
        assert!(r["delete"].as_str().is_some_and(|s| s.starts_with("blocked")), "DELETE: {r}");
        std::thread::sleep(Duration::from_millis(500));
        assert!(alive(&srv), "the cross-site POST to /api/shutdown did not stop the server");
        let st = srv.status();
        assert_eq!((st["viewers"].as_u64(), st["pending"].as_u64()), (Some(0), Some(0)), "nothing answered: {st}");
        assert_eq!(st["input"]["received"].as_u64(), Some(0), "nothing injected: {st}");
        drop(page);
        drop(srv);

        // The same page on an origin the owner listed: WHEP works (and reads its answer), so does /ws.
        let listed = evil.url("");
        let srv = Server::start(&f, &["--allow-input", "--allow-origin", &listed]);
        let token = srv.token.clone().expect("token");
        let mut page = browser.new_page(&evil.url("/attack.html"));
        let r = page.eval(&format!("attack({:?}, {token:?})", srv.base));
        eprintln!("from a listed origin: {r}");
        assert_eq!(r["whep"].as_u64(), Some(201), "{r}");
        assert_eq!(r["whepState"], "connected", "{r}");
        assert!(r["location"].as_str().is_some_and(|l| l.len() == "/whep/".len() + 32), "unguessable id: {r}");
        assert_eq!(r["ws"], "answered: answer", "{r}");
        assert_eq!(r["delete"].as_u64(), Some(404), "/whep/1 names nobody's session: {r}");
        page.wait_for(
            "whepPc.getStats().then(r => { let n = 0; r.forEach(s => { if (s.type === 'inbound-rtp') n = s.framesDecoded; }); return n > 0; })",
            Duration::from_secs(20),
        );
    });
}

#[test]
fn rebinding_hosts_cross_site_posts_and_foreign_deletes_are_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(320, 240, PatternKind::Quadrants);
        let srv = Server::start(&f, &[]);
        let token = srv.token.clone().expect("token");
        let addr = addr_of(&srv);
        // DNS rebinding: the page's own name resolves to 127.0.0.1; its requests say `Host: evil.example`.
        for (method, path) in [
            ("GET", "/"),
            ("GET", "/whep.html"),
            ("GET", "/ws"),
            ("POST", "/whep"),
            ("DELETE", "/whep/x"),
            ("GET", "/api/status"),
            ("POST", "/api/shutdown"),
            ("GET", "/metrics"),
        ] {
            let req = format!(
                "{method} {path}?token={token} HTTP/1.1\r\nHost: evil.example:{}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                addr.port()
            );
            assert_eq!(raw_status(addr, &req), 421, "{method} {path} with a foreign Host");
        }
        // curl, as a second real client: the same.
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: evil.example"])
            .arg(srv.url("/api/status"))
            .output()
            .expect("curl (scripts/setup installs it)");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "421");
        // A cross-site "simple" POST, even with the token: refused, the server keeps running.
        let req = format!(
            "POST /api/shutdown?token={token} HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 4\r\n\r\nstop"
        );
        assert_eq!(raw_status(addr, &req), 403);
        let req = format!(
            "POST /api/shutdown?token={token} HTTP/1.1\r\nHost: {addr}\r\nOrigin: null\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(raw_status(addr, &req), 403, "Origin: null");
        std::thread::sleep(Duration::from_millis(300));
        assert!(alive(&srv));

        // A real viewer's WHEP session cannot be ended by anyone without its token and resource URL.
        let browser = Browser::launch();
        let mut page = browser.new_page(&srv.url("/whep.html?gum=1"));
        let loc = page.wait_for("whep.location", Duration::from_secs(20));
        let loc = loc.as_str().expect("Location").to_owned();
        let deadline = Instant::now() + Duration::from_secs(20);
        while srv.status()["viewers"].as_u64() != Some(1) {
            assert!(Instant::now() < deadline, "the WHEP viewer did not connect");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(http("DELETE", &format!("{}{loc}", srv.base), &[], "").0, 401, "without the token");
        for guess in ["/whep/1", "/whep/2", "/whep/0"] {
            assert_eq!(http("DELETE", &srv.url(guess), &[], "").0, 404, "{guess}");
        }
        let req = format!(
            "DELETE {loc}?token={token} HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(raw_status(addr, &req), 403, "with both, from a foreign page");
        assert_eq!(srv.status()["viewers"].as_u64(), Some(1), "the viewer is still there");
        assert_eq!(http("DELETE", &srv.url(&loc), &[], "").0, 200, "its owner may");
    });
}

#[test]
fn a_default_start_prints_a_tokenized_url_the_page_keeps_it_and_the_cli_finds_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(320, 240, PatternKind::Quadrants);
        let srv = Server::start(&f, &[]);
        let token = srv.token.clone().expect("a default start prints ?token=");
        assert!(token.len() == 32 && token.chars().all(|c| c.is_ascii_hexdigit()), "{token:?}");
        assert_eq!(http("GET", &format!("{}/", srv.base), &[], "").0, 401, "the URL without its token");
        assert_eq!(http("GET", &format!("{}/api/status", srv.base), &[], "").0, 401);
        assert_eq!(http("GET", &format!("{}/ws", srv.base), &[], "").0, 401);
        let browser = Browser::launch();
        let mut page = browser.new_page(&srv.url("/?gum=1"));
        page.wait_for(DECODED, Duration::from_secs(20));
        assert_eq!(page.eval("location.search"), "?gum=1", "the token left the address bar");
        assert_eq!(page.eval("sessionStorage.getItem('wl-webrtc-token')").as_str(), Some(token.as_str()));
        // A reload (no token in the URL now) streams with the kept one.
        page.eval("location.reload()");
        std::thread::sleep(Duration::from_millis(500));
        page.wait_for(DECODED, Duration::from_secs(20));
        // A page without any token says so instead of retrying forever.
        let mut bare = browser.new_page(&format!("{}/", srv.base));
        let shown = bare.wait_for("wlw.fatal && wlw.errorShown", Duration::from_secs(10));
        assert!(shown.as_str().is_some_and(|s| s.starts_with("Wrong or missing token")), "{shown}");
        assert_eq!(bare.eval("wlw.fatal.code"), "auth");
        assert_eq!(bare.eval("getComputedStyle(document.getElementById('retry')).display"), "inline-block");

        // status and stop find the instance's token themselves.
        let listen = srv.base.trim_start_matches("http://").to_owned();
        let cli = |args: &[&str]| {
            let mut cmd = Command::new(crate::support::bin());
            cmd.args(["--listen", &listen]).args(args).env_remove("WL_WEBRTC_TOKEN");
            crate::support::output_within(cmd, Duration::from_secs(30))
        };
        let out = cli(&["status"]);
        assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("viewer(s)"));
        let out = cli(&["--token", "wrong-token-1", "status"]);
        assert!(!out.status.success(), "a wrong explicit token is not replaced");
        assert!(String::from_utf8_lossy(&out.stderr).contains("token"), "{}", String::from_utf8_lossy(&out.stderr));
        let out = cli(&["stop"]);
        assert!(out.status.success(), "stop: {}", String::from_utf8_lossy(&out.stderr));
        drop(srv);
    });
}

#[test]
fn beyond_loopback_it_speaks_https_with_the_printed_certificate() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        // A non-loopback address inside the private namespace (the benchmarking range).
        let ip = "198.18.0.1";
        let st = Command::new("ip").args(["addr", "add", &format!("{ip}/32"), "dev", "lo"]).status().expect("ip");
        assert!(st.success(), "ip addr add");
        let f = Fixture::with_pattern(320, 240, PatternKind::Quadrants);
        let state = std::env::temp_dir().join(format!("wl-webrtc-tls-it-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let mut cmd = f.cli(&["start", "--listen", "0.0.0.0:0"]);
        cmd.env("XDG_STATE_HOME", &state);
        let srv = Server::spawn_with_lines(cmd, 2);
        let (url, cert_line) = (&srv.lines[0], &srv.lines[1]);
        assert!(url.contains(" at https://0.0.0.0:"), "{url}");
        let port: u16 = srv.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        let token = srv.token.clone().expect("token");
        let cert = state.join("wl-webrtc/tls/cert.pem");
        assert!(cert_line.contains("SHA-256") && cert_line.contains(&cert.display().to_string()), "{cert_line}");
        // The printed fingerprint is the certificate's (what the browser shows).
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(&cert)
            .output()
            .expect("openssl");
        let fp = String::from_utf8_lossy(&out.stdout).trim().rsplit('=').next().unwrap_or_default().to_owned();
        assert!(fp.len() == 95 && cert_line.contains(&fp), "{fp} vs {cert_line}");
        let spki = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl x509 -pubkey -noout -in '{}' | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
                cert.display()
            ))
            .output()
            .expect("openssl spki");
        let spki = String::from_utf8_lossy(&spki.stdout).trim().to_owned();

        let remote = format!("{ip}:{port}");
        // Plain HTTP from beyond loopback: redirected to HTTPS, nothing served.
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"])
            .arg(format!("http://{remote}/api/status?token={token}"))
            .output()
            .expect("curl");
        let got = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(got.starts_with("308 https://"), "curl http:// → {got}");
        // curl over HTTPS with the key pinned.
        let out = Command::new("curl")
            .args(["-s", "-k", "-o", "/dev/null", "-w", "%{http_code}", "--pinnedpubkey", &format!("sha256//{spki}")])
            .arg(format!("https://{remote}/api/status?token={token}"))
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");

        // Chromium, with the generated certificate's key pinned, streams over HTTPS.
        let browser = Browser::launch_with_args(&[&format!("--ignore-certificate-errors-spki-list={spki}")]);
        let mut page = browser.new_page(&format!("https://{remote}/?gum=1&token={token}"));
        page.wait_for(DECODED, Duration::from_secs(30));
        assert_eq!(page.eval("location.protocol"), "https:");
        drop(page);
        drop(srv);
        let _ = std::fs::remove_dir_all(&state);
    });
}

/// A page on the server's own origin that posts `n` real Chromium offers to WHEP and never answers them.
const HALF_OPEN: &str = "async (n, token) => { const pcs = []; let ok = 0;
  for (let i = 0; i < n; i++) {
    const pc = new RTCPeerConnection(); pc.addTransceiver('video', { direction: 'recvonly' });
    pc.createDataChannel('input'); const o = await pc.createOffer(); await pc.setLocalDescription(o);
    const r = await fetch('/whep?token=' + token, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: o.sdp });
    if (r.status === 201) ok++; pcs.push(pc); pc.close();
  }
  return ok; }";

#[test]
fn half_open_offers_neither_lock_out_nor_delay_a_real_viewer_and_expire() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    in_private_netns(|| {
        let f = Fixture::with_pattern(320, 240, PatternKind::Quadrants);
        let srv = Server::start(&f, &[]);
        let token = srv.token.clone().expect("token");
        let browser = Browser::launch();
        let time_to_picture = |browser: &Browser| {
            let t = Instant::now();
            let mut page = browser.new_page(&srv.url("/?gum=1"));
            page.wait_for(DECODED, Duration::from_secs(20));
            let d = t.elapsed();
            drop(page);
            let deadline = Instant::now() + Duration::from_secs(10);
            while srv.status()["viewers"].as_u64() != Some(0) {
                assert!(Instant::now() < deadline, "the viewer did not leave");
                std::thread::sleep(Duration::from_millis(100));
            }
            d
        };
        let baseline = time_to_picture(&browser);
        let mut flooder = browser.new_page(&srv.url("/api/status"));
        flooder.set_call_timeout(Duration::from_secs(120));
        let answered = flooder.eval(&format!("({HALF_OPEN})(100, {token:?})"));
        let flood_end = Instant::now();
        assert_eq!(answered.as_u64(), Some(100), "every offer is answered (max_viewers counts connected viewers)");
        let st = srv.status();
        let pending = st["pending"].as_u64().unwrap_or(0);
        assert!(pending > 0 && pending <= wl_webrtc::server::MAX_PENDING as u64, "pending capped: {st}");
        let during = time_to_picture(&browser);
        eprintln!("time to the first picture: {baseline:?} before, {during:?} right after 100 half-open offers");
        assert!(during < baseline + Duration::from_secs(1), "{baseline:?} → {during:?}");
        // Pending peers are dropped 10 s after their offer.
        loop {
            let p = srv.status()["pending"].as_u64();
            if p == Some(0) {
                break;
            }
            assert!(flood_end.elapsed() < wl_webrtc::server::PENDING_TIMEOUT + Duration::from_secs(2), "still {p:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("pending peers gone {:?} after the last offer", flood_end.elapsed());
    });
}

/// This process's open file descriptors and resident memory (kB) of `pid`.
fn fds_and_rss(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (fds, rss)
}

#[test]
fn two_thousand_idle_connections_leave_the_status_api_answering_and_are_closed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    let _ = setrlimit(Resource::Nofile, Rlimit { current: l.maximum, maximum: l.maximum });
    let f = Fixture::with_pattern(320, 240, PatternKind::Quadrants);
    let srv = Server::start(&f, &[]);
    let addr = addr_of(&srv);
    let before = fds_and_rss(srv.pid());
    let idle: Vec<TcpStream> = (0..2000).map(|_| TcpStream::connect(addr).expect("connect")).collect();
    // The kernel completed every handshake; wait until the server has accepted them all (it must not fail).
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut held = fds_and_rss(srv.pid());
    while held.0 < before.0 + 1990 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        held = fds_and_rss(srv.pid());
    }
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        assert!(alive(&srv));
        worst = worst.max(t.elapsed());
    }
    eprintln!(
        "2,000 idle connections: server fds {} → {}, RSS {} → {} kB; /api/status worst of 10: {worst:?}",
        before.0, held.0, before.1, held.1
    );
    assert!(held.0 >= before.0 + 1900, "the server holds them (accept did not fail): {before:?} → {held:?}");
    assert!(worst < Duration::from_millis(100), "{worst:?}");
    // Connections that send nothing are closed after 10 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    while fds_and_rss(srv.pid()).0 > before.0 + 20 {
        assert!(Instant::now() < deadline, "idle connections still open: {:?}", fds_and_rss(srv.pid()));
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(idle);
}

//! A headless Firefox with a private profile, driven over WebDriver BiDi (a WebSocket, synchronously): the
//! counterpart of [`super::Chromium`] + [`super::Page`] for the tests that must also pass in Firefox.
//!
//! `Firefox::launch` writes a `user.js` with the prefs a WebRTC test needs into a fresh profile
//! (`wl-webrtc-firefox-*`), starts `firefox-esr --headless --no-remote --profile DIR
//! --remote-debugging-port=0` in a new process group under a tiny reaper process (a child subreaper, so that
//! Firefox's `crashhelper`, which double-forks into its own session, is re-parented to it and waited for) and
//! reads the BiDi WebSocket address from the line Firefox prints on stderr. `Firefox::new_page` opens the BiDi
//! session (`session.new`) on the top-level browsing context; `FirefoxPage` has the API of the Chromium
//! `Page` (`navigate`, `eval`, `wait_for`, `console`, `mouse_*`, `key_*`, `type_text`, `set_viewport`), and the
//! [`BrowserPage`] trait lets one test body drive either browser. Dropping the `Firefox` SIGTERMs the group,
//! SIGKILLs stragglers (group members and anything whose command line names the profile dir: `crashhelper`
//! does, as `TMPDIR` is put inside it), waits for the reaper and deletes the profile.
//!
//! Firefox ESR as Debian ships it offers VP8, VP9 and AV1 only (no OpenH264). In a network namespace that has
//! only `lo`, its ICE gathers nothing ("failed to find default addresses") until there is a default route
//! with source 127.0.0.1: call [`add_default_route_via_lo`] there first.
//!
//! The process handling (the reaper that owns the whole tree, profile naming) is `browser::process`, shared
//! with the Chromium driver.
//!
//! Error convention as in `Page`: `FirefoxPage::call`/`eval`/`wait_for`/... panic with a useful message (BiDi
//! error, JS exception text, last value seen, console tail); the `try_*` variants return `Result<_, String>`.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::BrowserProcess;
use serde_json::{Map, Value, json};
use tungstenite::protocol::WebSocket;
use tungstenite::{HandshakeError, Message};

use super::{CALL_TIMEOUT, Page, VIEWPORT, base64_decode, truthy};

/// Arguments every Firefox gets (before `--profile` and `--remote-debugging-port`).
pub const FIREFOX_ARGS: &[&str] = &["--headless", "--no-remote", "--new-instance"];

/// Prefs written to the profile's `user.js`, as (name, JavaScript literal). The media ones make a page on
/// http://127.0.0.1 able to use getUserMedia (fake devices, no prompt), gather plain 127.0.0.1 host
/// candidates and autoplay; the rest keep Firefox from showing first-run pages or phoning home (the tests run
/// where nothing but 127.0.0.1 can be reached, and a retrying network service only slows them down).
pub const FIREFOX_PREFS: &[(&str, &str)] = &[
    ("media.navigator.permission.disabled", "true"),
    ("media.navigator.streams.fake", "true"),
    ("media.peerconnection.ice.loopback", "true"),
    ("media.peerconnection.ice.obfuscate_host_addresses", "false"),
    ("media.autoplay.default", "0"),
    ("media.autoplay.blocking_policy", "0"),
    // Debian disables OpenH264 anyway; do not let the GMP manager try to download it.
    ("media.gmp-manager.updateEnabled", "false"),
    ("browser.shell.checkDefaultBrowser", "false"),
    ("browser.startup.homepage_override.mstone", "\"ignore\""),
    ("browser.startup.page", "0"),
    ("browser.aboutwelcome.enabled", "false"),
    ("datareporting.policy.dataSubmissionEnabled", "false"),
    ("datareporting.healthreport.uploadEnabled", "false"),
    ("toolkit.telemetry.reportingpolicy.firstRun", "false"),
    ("app.update.auto", "false"),
    ("messaging-system.rsexperimentloader.enabled", "false"),
    // The prefs Firefox's remote agent recommends for automation (no updates, no safe-browsing lookups, ...).
    ("remote.prefs.recommended", "true"),
];

/// How long `launch` waits for Firefox to announce its WebDriver BiDi endpoint (a cold start of headless
/// Firefox takes a few seconds on a small, busy machine).
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Socket read timeout while waiting for BiDi messages (the overall deadline is checked between reads).
const POLL: Duration = Duration::from_millis(100);
/// At most this many unconsumed BiDi events are kept per page.
const MAX_EVENTS: usize = 10_000;
/// What Firefox prints on stderr once its WebDriver BiDi server listens.
const BIDI_BANNER: &str = "WebDriver BiDi listening on ";

/// Why Firefox could not be started.
#[derive(Debug, thiserror::Error)]
pub enum FirefoxError {
    #[error("no Firefox found (install firefox-esr, e.g. with scripts/setup, or set WL_WEBRTC_FIREFOX)")]
    NotFound,
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("Firefox exited before opening its WebDriver BiDi port; log tail:\n{0}")]
    Exited(String),
    #[error(
        "Firefox did not print \"{BIDI_BANNER}ws://...\" within {LAUNCH_TIMEOUT:?} (is the remote agent \
         disabled?); log tail:\n{0}"
    )]
    NoBidi(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> FirefoxError {
    let what = what.into();
    move |source| FirefoxError::Io { what, source }
}

/// The Firefox executable: `$WL_WEBRTC_FIREFOX` (or the tests' `$WL_WEBRTC_TEST_FIREFOX`), else the first of
/// /usr/bin/firefox-esr, /usr/bin/firefox that exists.
pub fn firefox_binary() -> Result<PathBuf, FirefoxError> {
    if let Some(path) = std::env::var_os("WL_WEBRTC_FIREFOX").or_else(|| std::env::var_os("WL_WEBRTC_TEST_FIREFOX")) {
        return Ok(PathBuf::from(path));
    }
    ["/usr/bin/firefox-esr", "/usr/bin/firefox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or(FirefoxError::NotFound)
}

/// Add `default dev lo src 127.0.0.1` to the calling thread's network namespace (`ip route replace`), so that
/// Firefox's ICE works there. Firefox's ICE looks up its "default" local address through the route to the
/// outside world, and without a camera/microphone capture it gathers host candidates on that address only.
/// With no route (a namespace with only `lo`) it fails ("failed to find default addresses"); with
/// `default dev lo` but no `src` the address it finds is 0.0.0.0, it cannot bind that and offers only TCP
/// candidates on 0.0.0.0, so a call between two Firefox peer connections still fails. With `src 127.0.0.1`
/// the default address is 127.0.0.1 and it gathers UDP host candidates there. Call it on the thread that then
/// starts Firefox (e.g. inside `netns::in_private_netns`), never in the host's namespace: it replaces the
/// default route.
pub fn add_default_route_via_lo() -> io::Result<()> {
    let out = Command::new("ip")
        .args(["route", "replace", "default", "dev", "lo", "src", "127.0.0.1"])
        .stdin(Stdio::null())
        .output();
    let out = out.map_err(|e| io::Error::new(e.kind(), format!("run `ip route` (install iproute2): {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "`ip route replace default dev lo src 127.0.0.1` failed ({}): {} (needs root or CAP_NET_ADMIN in the \
             namespace)",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A running headless Firefox with a private profile and its WebDriver BiDi endpoint; everything it started is
/// stopped on drop.
#[derive(Debug)]
pub struct Firefox {
    proc: BrowserProcess,
    bidi_url: String,
}

impl Firefox {
    /// Start Firefox with `FIREFOX_ARGS`, a fresh profile with `FIREFOX_PREFS` and
    /// `--remote-debugging-port=0` on `about:blank`; returns once its BiDi endpoint is known.
    pub fn launch() -> Result<Firefox, FirefoxError> {
        Firefox::launch_with(&[], &[])
    }

    /// Like `launch`, with `extra_args` after the defaults and `extra_prefs` (name, JavaScript literal such as
    /// `true`, `0` or `"\"text\""`) written after `FIREFOX_PREFS` (a later `user_pref` of the same name wins).
    pub fn launch_with(extra_args: &[&str], extra_prefs: &[(&str, &str)]) -> Result<Firefox, FirefoxError> {
        let binary = firefox_binary()?;
        let proc = BrowserProcess::prepare("Firefox", "wl-webrtc-firefox", "firefox.log")
            .map_err(io_err("create a profile directory"))?;
        let user_js: String = FIREFOX_PREFS
            .iter()
            .chain(extra_prefs)
            .map(|(name, value)| format!("user_pref({}, {value});\n", Value::from(*name)))
            .collect();
        fs::write(proc.profile.join("user.js"), user_js).map_err(io_err("write Firefox user.js"))?;
        let mut cmd = Command::new(&binary);
        cmd.args(FIREFOX_ARGS)
            .arg("--profile")
            .arg(&proc.profile)
            .arg("--remote-debugging-port=0")
            .args(extra_args)
            .arg("about:blank")
            // No crash reports written or offered for submission. `crashhelper` starts all the same and leaves
            // our process group and session; with TMPDIR inside the profile (as `spawn` sets it) its command
            // line names the profile, which is how the shutdown finds it.
            .env("MOZ_CRASHREPORTER_DISABLE", "1");
        let mut browser = Firefox { proc, bidi_url: String::new() };
        browser.proc.spawn(cmd).map_err(io_err(format!("spawn {}", binary.display())))?;
        browser.bidi_url = browser.wait_for_bidi_url()?;
        Ok(browser)
    }

    /// Poll the log for "WebDriver BiDi listening on ws://127.0.0.1:PORT" (a complete line, so a half-written
    /// one is not misread).
    fn wait_for_bidi_url(&self) -> Result<String, FirefoxError> {
        let deadline = Instant::now() + LAUNCH_TIMEOUT;
        loop {
            let log = self.proc.log();
            let text = String::from_utf8_lossy(&log);
            if let Some(url) = text
                .split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .find_map(|l| l.split_once(BIDI_BANNER))
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .filter(|url| url.starts_with("ws://"))
            {
                return Ok(url.to_owned());
            }
            if self.has_exited() {
                return Err(FirefoxError::Exited(self.log_tail(6000)));
            }
            if Instant::now() > deadline {
                return Err(FirefoxError::NoBidi(self.log_tail(6000)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The WebDriver BiDi server's base URL, `ws://127.0.0.1:PORT` (sessions are at `/session`).
    pub fn bidi_url(&self) -> &str {
        &self.bidi_url
    }

    /// PID of the process-group leader: a minimal reaper process whose child is the Firefox main process.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The temporary profile directory (removed on drop).
    pub fn profile_dir(&self) -> &Path {
        &self.proc.profile
    }

    /// The last `max_bytes` of Firefox's stdout/stderr.
    pub fn log_tail(&self, max_bytes: usize) -> String {
        self.proc.log_tail(max_bytes)
    }

    /// Live (non-zombie) processes that belong to this browser: its process group, plus anything whose
    /// command line names the profile dir.
    pub fn processes(&self) -> Vec<u32> {
        self.proc.processes()
    }

    /// Whether the reaper has exited, i.e. Firefox and all its processes are gone (without reaping it, so its
    /// pid/pgid stays reserved).
    pub fn has_exited(&self) -> bool {
        self.proc.has_exited()
    }

    /// Open the BiDi session on the top-level browsing context, set its viewport to `VIEWPORT` and navigate
    /// it to `url` (waiting for its load event; `about:blank` is not navigated). Console output is kept.
    /// Firefox allows one BiDi session at a time: drop the previous page (which ends its session) before
    /// asking for another. Panics with the reason and the log tail; `try_new_page` returns it instead.
    pub fn new_page(&self, url: &str) -> FirefoxPage {
        self.try_new_page(url).unwrap_or_else(|e| panic!("{e}\n  Firefox log tail:\n{}", self.log_tail(4000)))
    }

    /// `new_page`, returning the error instead of panicking.
    pub fn try_new_page(&self, url: &str) -> Result<FirefoxPage, String> {
        let mut page = FirefoxPage::connect(&format!("{}/session", self.bidi_url))?;
        let session = page.try_call("session.new", json!({ "capabilities": {} })).map_err(|e| {
            if e.contains("Maximum number of active sessions") {
                format!("{e} (Firefox allows one BiDi session: drop the previous FirefoxPage first)")
            } else {
                e
            }
        })?;
        page.session_open = true;
        page.version = session["capabilities"]["browserVersion"].as_str().unwrap_or_default().to_owned();
        page.try_call("session.subscribe", json!({ "events": ["log.entryAdded"] }))?;
        let tree = page.try_call("browsingContext.getTree", json!({ "maxDepth": 0 }))?;
        page.context = tree["contexts"][0]["context"]
            .as_str()
            .ok_or_else(|| format!("browsingContext.getTree returned no top-level context: {tree}"))?
            .to_owned();
        page.try_set_viewport(VIEWPORT.0, VIEWPORT.1)?;
        if url != "about:blank" {
            page.try_navigate(url)?;
        }
        Ok(page)
    }
}

/// The top-level tab of a Firefox, over its own WebDriver BiDi session.
pub struct FirefoxPage {
    ws: WebSocket<TcpStream>,
    context: String,
    version: String,
    session_open: bool,
    next_id: u64,
    events: VecDeque<Value>,
    console: Vec<String>,
    call_timeout: Duration,
}

impl FirefoxPage {
    fn connect(ws_url: &str) -> Result<FirefoxPage, String> {
        let addr = ws_url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .and_then(|hostport| hostport.parse::<SocketAddr>().ok())
            .ok_or_else(|| format!("not a ws://IP:PORT/... URL: {ws_url}"))?;
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect to WebDriver BiDi at {addr}: {e}"))?;
        let setup = |s: &TcpStream| -> io::Result<()> {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(POLL))?;
            s.set_write_timeout(Some(Duration::from_secs(10)))
        };
        setup(&stream).map_err(|e| format!("configure the BiDi socket: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut attempt = tungstenite::client::client(ws_url, stream);
        let ws = loop {
            match attempt {
                Ok((ws, _response)) => break ws,
                Err(HandshakeError::Interrupted(mid)) if Instant::now() < deadline => attempt = mid.handshake(),
                Err(HandshakeError::Interrupted(_)) => {
                    return Err(format!("WebSocket handshake with {ws_url} timed out"));
                }
                Err(HandshakeError::Failure(e)) => return Err(format!("WebSocket handshake with {ws_url}: {e}")),
            }
        };
        Ok(FirefoxPage {
            ws,
            context: String::new(),
            version: String::new(),
            session_open: false,
            next_id: 0,
            events: VecDeque::new(),
            console: Vec::new(),
            call_timeout: CALL_TIMEOUT,
        })
    }

    /// The BiDi browsing context id of this tab.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// Firefox's version, e.g. "153.8.0" (`browserVersion` of the session's capabilities).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Change the per-command deadline (default `CALL_TIMEOUT`).
    pub fn set_call_timeout(&mut self, timeout: Duration) {
        self.call_timeout = timeout;
    }

    /// Console messages and uncaught exceptions seen so far, as "level: text" lines (the levels named as in
    /// `Page::console`: "log", "info", "warning", "error", "debug"; exceptions as "uncaught: ...").
    pub fn console(&self) -> &[String] {
        &self.console
    }

    /// Send a BiDi command and wait for its result; events that arrive meanwhile are buffered.
    pub fn try_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(Message::text(msg)).map_err(|e| format!("{method}: send: {e}"))?;
        let deadline = Instant::now() + self.call_timeout;
        loop {
            let mut msg = self.read_message(deadline).map_err(|e| format!("{method}: {e}"))?;
            if msg.get("id").and_then(Value::as_u64) == Some(id) {
                if msg["type"] == "error" {
                    return Err(format!("{method}: {}: {}", msg["error"], msg["message"]));
                }
                return Ok(msg["result"].take());
            }
            self.record_event(msg);
        }
    }

    /// `try_call`, panicking on error.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params).unwrap_or_else(|e| panic!("BiDi {e}"))
    }

    /// Wait for the next event named `method` (buffered ones first, oldest first) and return its params.
    /// Subscribe to it first (`session.subscribe`); `log.entryAdded` is.
    pub fn wait_event(&mut self, method: &str, timeout: Duration) -> Value {
        self.wait_event_where(method, |_| true, timeout)
    }

    /// Wait for the next event named `method` whose params satisfy `pred` (buffered ones first) and return
    /// its params; panics after `timeout`.
    pub fn wait_event_where(&mut self, method: &str, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["method"] == method && pred(&e["params"])) {
            return self.events.remove(i).map(|mut e| e["params"].take()).unwrap_or_default();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let msg = self.read_message(deadline).unwrap_or_else(|e| panic!("waiting for BiDi event {method}: {e}"));
            if msg["method"] == method && pred(&msg["params"]) {
                self.record_console(&msg);
                return msg["params"].clone();
            }
            self.record_event(msg);
        }
    }

    /// Navigate to `url` and wait (up to the call timeout) for its load event (`wait: "complete"`); a network
    /// error is an `Err`. Same-document navigations (`#hash`) return at once.
    pub fn try_navigate(&mut self, url: &str) -> Result<(), String> {
        let context = self.context.clone();
        self.try_call("browsingContext.navigate", json!({ "context": context, "url": url, "wait": "complete" }))
            .map(drop)
            .map_err(|e| format!("navigate to {url}: {e}"))
    }

    /// `try_navigate`, panicking on error.
    pub fn navigate(&mut self, url: &str) {
        if let Err(e) = self.try_navigate(url) {
            panic!("{e}");
        }
    }

    /// Evaluate `js` in the page (promises are awaited, with a user activation as `Page::try_eval` has). The
    /// result is converted by [`bidi_value_to_json`] (`undefined` becomes `Null`, `NaN`/`Infinity`/`-0` a
    /// string, objects and arrays JSON). A JS exception is an `Err` with its text.
    pub fn try_eval(&mut self, js: &str) -> Result<Value, String> {
        let context = self.context.clone();
        let reply = self.try_call(
            "script.evaluate",
            json!({ "expression": js, "target": { "context": context }, "awaitPromise": true,
                    "resultOwnership": "none", "userActivation": true }),
        )?;
        match reply["type"].as_str() {
            Some("success") => Ok(bidi_value_to_json(&reply["result"])),
            Some("exception") => Err(exception_text(&reply["exceptionDetails"])),
            _ => Err(format!("script.evaluate: unexpected reply {reply}")),
        }
    }

    /// `try_eval`, panicking with the exception text (and the console tail).
    pub fn eval(&mut self, js: &str) -> Value {
        match self.try_eval(js) {
            Ok(v) => v,
            Err(e) => panic!("eval failed: {e}\n  script: {js}\n  console:\n{}", self.console_tail(20)),
        }
    }

    /// Poll `js` (every 50 ms) until it evaluates to a JS-truthy value and return that value. Exceptions
    /// count as "not yet". Panics after `timeout` showing the last value or exception and the console tail.
    pub fn wait_for(&mut self, js: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.try_eval(js);
            if let Ok(v) = &last
                && truthy(v)
            {
                return v.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for: {js}\n  last: {last:?}\n  console:\n{}",
                    self.console_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Run WebDriver input actions (`input.performActions`) for one input source, e.g.
    /// `json!({ "type": "key", "id": "keyboard", "actions": [...] })`. Firefox keeps the input state (keys
    /// held, pointer position) between calls until `input.releaseActions`.
    pub fn try_perform(&mut self, source: Value) -> Result<(), String> {
        let context = self.context.clone();
        self.try_call("input.performActions", json!({ "context": context, "actions": [source] })).map(drop)
    }

    fn perform(&mut self, source: Value) {
        if let Err(e) = self.try_perform(source.clone()) {
            panic!("BiDi {e}\n  actions: {source}");
        }
    }

    fn pointer(&mut self, actions: Vec<Value>) {
        self.perform(json!({ "type": "pointer", "id": "mouse", "parameters": { "pointerType": "mouse" },
                             "actions": actions }));
    }

    /// Move the mouse to (x, y) CSS pixels.
    pub fn mouse_move(&mut self, x: f64, y: f64) {
        self.pointer(vec![pointer_move(x, y)]);
    }

    /// Press (`down`) or release a mouse button ("left", "middle", "right", "back", "forward") at (x, y).
    pub fn mouse_button(&mut self, x: f64, y: f64, button: &str, down: bool) {
        let button = match button {
            "left" => 0,
            "middle" => 1,
            "right" => 2,
            "back" => 3,
            "forward" => 4,
            other => panic!("unknown mouse button {other:?}"),
        };
        let ty = if down { "pointerDown" } else { "pointerUp" };
        self.pointer(vec![pointer_move(x, y), json!({ "type": ty, "button": button })]);
    }

    /// Left click at (x, y): move, press, release.
    pub fn mouse_click(&mut self, x: f64, y: f64) {
        self.pointer(vec![
            pointer_move(x, y),
            json!({ "type": "pointerDown", "button": 0 }),
            json!({ "type": "pointerUp", "button": 0 }),
        ]);
    }

    /// Scroll by (dx, dy) CSS pixels with the pointer at (x, y) (WebDriver wants whole pixels: rounded).
    pub fn mouse_wheel(&mut self, x: f64, y: f64, dx: f64, dy: f64) {
        let [x, y, dx, dy] = [x, y, dx, dy].map(|v| v.round() as i64);
        self.perform(json!({ "type": "wheel", "id": "wheel", "actions": [
            { "type": "scroll", "x": x, "y": y, "deltaX": dx, "deltaY": dy, "origin": "viewport" }
        ] }));
    }

    fn keys(&mut self, actions: Vec<Value>) {
        self.perform(json!({ "type": "key", "id": "keyboard", "actions": actions }));
    }

    /// Key down for `key`, named as `Page::key_down` accepts: a DOM `key` ("a", "A", "Enter", "ArrowLeft",
    /// "Shift", "F5", "!") or a DOM `code` ("KeyA", "Digit1", "ShiftLeft", "Space"). Modifier keys stay held
    /// (Firefox keeps the input state) until `key_up`. WebDriver has no key value for CapsLock or F13-F24:
    /// those panic.
    pub fn key_down(&mut self, key: &str) {
        let value = webdriver_key(key).unwrap_or_else(|e| panic!("{e}"));
        self.keys(vec![json!({ "type": "keyDown", "value": value })]);
    }

    /// Key up for `key` (see `key_down`).
    pub fn key_up(&mut self, key: &str) {
        let value = webdriver_key(key).unwrap_or_else(|e| panic!("{e}"));
        self.keys(vec![json!({ "type": "keyUp", "value": value })]);
    }

    /// `key_down` then `key_up` (see `key_down` for the names accepted).
    pub fn key_press(&mut self, key: &str) {
        let value = webdriver_key(key).unwrap_or_else(|e| panic!("{e}"));
        self.keys(vec![json!({ "type": "keyDown", "value": value }), json!({ "type": "keyUp", "value": value })]);
    }

    /// Type `text` with a key press per character, in one `input.performActions` ("\n" presses Enter, "\t"
    /// Tab). Unlike Chromium's `Page::type_text` (`Input.insertText`), the page sees key events too: WebDriver
    /// has no "insert text" action.
    pub fn type_text(&mut self, text: &str) {
        let actions = text
            .chars()
            .flat_map(|c| {
                let value = match c {
                    '\n' | '\r' => ENTER.to_string(),
                    '\t' => '\u{E004}'.to_string(),
                    c => c.to_string(),
                };
                [json!({ "type": "keyDown", "value": value }), json!({ "type": "keyUp", "value": value })]
            })
            .collect();
        self.keys(actions);
    }

    /// Type `text` one character at a time with full key events (like `Page::type_keys`; here the same as
    /// `type_text`).
    pub fn type_keys(&mut self, text: &str) {
        self.type_text(text);
    }

    /// Set the viewport to `width`x`height` CSS pixels at scale 1 (`browsingContext.setViewport`).
    pub fn try_set_viewport(&mut self, width: u32, height: u32) -> Result<(), String> {
        let context = self.context.clone();
        self.try_call(
            "browsingContext.setViewport",
            json!({ "context": context, "viewport": { "width": width, "height": height }, "devicePixelRatio": 1 }),
        )
        .map(drop)
    }

    /// `try_set_viewport`, panicking on error.
    pub fn set_viewport(&mut self, width: u32, height: u32) {
        if let Err(e) = self.try_set_viewport(width, height) {
            panic!("BiDi {e}");
        }
    }

    /// A PNG screenshot of the viewport.
    pub fn screenshot_png(&mut self) -> Vec<u8> {
        let context = self.context.clone();
        let reply = self.call("browsingContext.captureScreenshot", json!({ "context": context }));
        let data = reply["data"].as_str().unwrap_or_else(|| panic!("no data in captureScreenshot reply"));
        let png = base64_decode(data);
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "captureScreenshot did not return a PNG");
        png
    }

    /// Read one JSON message before `deadline`, skipping pings.
    fn read_message(&mut self, deadline: Instant) -> Result<Value, String> {
        super::read_json(&mut self.ws, deadline, "BiDi")
    }

    fn record_event(&mut self, event: Value) {
        self.record_console(&event);
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn record_console(&mut self, event: &Value) {
        if event["method"] != "log.entryAdded" {
            return;
        }
        let params = &event["params"];
        let text = params["text"].as_str().unwrap_or_default();
        if params["type"] == "console" {
            // BiDi names the console method; Chromium's `type` says "warning" for console.warn.
            let level = match params["method"].as_str().unwrap_or("log") {
                "warn" => "warning",
                other => other,
            };
            self.console.push(format!("{level}: {text}"));
        } else {
            // "javascript": an uncaught exception or unhandled rejection.
            self.console.push(format!("uncaught: {text}"));
        }
    }

    fn console_tail(&self, n: usize) -> String {
        let tail = &self.console[self.console.len().saturating_sub(n)..];
        tail.iter().map(|l| format!("    {l}\n")).collect()
    }
}

impl Drop for FirefoxPage {
    fn drop(&mut self) {
        // End the session (Firefox allows one at a time, so the next `new_page` can start its own) and leave the
        // tab on about:blank so that its pages, WebSockets and peer connections end with this page. Bounded:
        // a Firefox that is gone answers nothing.
        if self.session_open {
            self.call_timeout = Duration::from_secs(5);
            let context = self.context.clone();
            if !context.is_empty() {
                let _ = self.try_call(
                    "browsingContext.navigate",
                    json!({ "context": context, "url": "about:blank", "wait": "none" }),
                );
            }
            let _ = self.try_call("session.end", json!({}));
        }
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}

fn pointer_move(x: f64, y: f64) -> Value {
    json!({ "type": "pointerMove", "x": x, "y": y, "origin": "viewport" })
}

fn exception_text(details: &Value) -> String {
    let what = details["text"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| details["exception"]["value"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown exception".to_owned());
    format!("{what} (line {}, column {})", details["lineNumber"], details["columnNumber"])
}

/// A WebDriver BiDi remote value (`script.RemoteValue`) as JSON, close to what CDP's `returnByValue` gives
/// for the same value: `undefined`/`null` become `Null`; strings, booleans and numbers themselves (`NaN`,
/// `-0`, `Infinity`, `-Infinity` stay the strings BiDi sends); a BigInt its digits and "n" ("12n"); arrays,
/// sets, NodeLists and HTMLCollections arrays; objects and maps objects (non-string map keys as their JSON
/// text); a Date its ISO string; a RegExp "/pattern/flags". Values BiDi only names (DOM nodes, windows,
/// functions, promises, errors, ...) and repeated references become `{}`, so that they stay JS-truthy.
pub fn bidi_value_to_json(v: &Value) -> Value {
    match v["type"].as_str() {
        None | Some("undefined" | "null") => Value::Null,
        Some("string" | "boolean" | "number" | "date") => v["value"].clone(),
        Some("bigint") => Value::String(format!("{}n", v["value"].as_str().unwrap_or_default())),
        Some("regexp") => Value::String(format!(
            "/{}/{}",
            v["value"]["pattern"].as_str().unwrap_or_default(),
            v["value"]["flags"].as_str().unwrap_or_default()
        )),
        Some("array" | "set" | "nodelist" | "htmlcollection") => match v["value"].as_array() {
            Some(items) => items.iter().map(bidi_value_to_json).collect(),
            None => Value::Object(Map::new()),
        },
        Some("object" | "map") => {
            let entries = v["value"].as_array().into_iter().flatten().filter_map(|pair| {
                let key = match &pair[0] {
                    Value::String(s) => s.clone(),
                    other => match bidi_value_to_json(other) {
                        Value::String(s) => s,
                        json => json.to_string(),
                    },
                };
                Some((key, bidi_value_to_json(pair.get(1)?)))
            });
            Value::Object(entries.collect())
        }
        Some(_) => Value::Object(Map::new()),
    }
}

/// WebDriver's key value for the main Enter key. The WebDriver table has two: U+E006 ("Return") gives
/// key "Enter", code "Enter" (what Chromium's `Page` sends), U+E007 ("Enter") is the keypad's: code
/// "NumpadEnter", location 3 in Firefox.
const ENTER: char = '\u{E006}';

/// Non-character keys by DOM `key` or `code` (and the aliases `Page::key_down` accepts), with WebDriver's key
/// value (the Private Use Area code points of the WebDriver spec's keyboard table).
const WEBDRIVER_KEYS: &[(&str, char)] = &[
    ("Enter", ENTER),
    ("Return", ENTER),
    ("Tab", '\u{E004}'),
    ("Backspace", '\u{E003}'),
    ("Escape", '\u{E00C}'),
    ("Esc", '\u{E00C}'),
    ("Delete", '\u{E017}'),
    ("Insert", '\u{E016}'),
    ("Home", '\u{E011}'),
    ("End", '\u{E010}'),
    ("PageUp", '\u{E00E}'),
    ("PageDown", '\u{E00F}'),
    ("ArrowLeft", '\u{E012}'),
    ("ArrowUp", '\u{E013}'),
    ("ArrowRight", '\u{E014}'),
    ("ArrowDown", '\u{E015}'),
    (" ", '\u{E00D}'),
    ("Space", '\u{E00D}'),
    ("Shift", '\u{E008}'),
    ("ShiftLeft", '\u{E008}'),
    ("ShiftRight", '\u{E050}'),
    ("Control", '\u{E009}'),
    ("Ctrl", '\u{E009}'),
    ("ControlLeft", '\u{E009}'),
    ("ControlRight", '\u{E051}'),
    ("Alt", '\u{E00A}'),
    ("AltLeft", '\u{E00A}'),
    ("AltRight", '\u{E052}'),
    ("Meta", '\u{E03D}'),
    ("MetaLeft", '\u{E03D}'),
    ("MetaRight", '\u{E053}'),
];

/// US-layout punctuation by DOM `code` (as `Page::key_down` accepts them).
const PUNCTUATION_CODES: &[(&str, char)] = &[
    ("Minus", '-'),
    ("Equal", '='),
    ("BracketLeft", '['),
    ("BracketRight", ']'),
    ("Backslash", '\\'),
    ("Semicolon", ';'),
    ("Quote", '\''),
    ("Comma", ','),
    ("Period", '.'),
    ("Slash", '/'),
    ("Backquote", '`'),
];

/// The WebDriver key value for a key named as `Page::key_down` accepts it (see `FirefoxPage::key_down`).
pub fn webdriver_key(name: &str) -> Result<String, String> {
    if let Some(&(_, value)) = WEBDRIVER_KEYS.iter().find(|k| k.0 == name) {
        return Ok(value.to_string());
    }
    if let Some(n) = name.strip_prefix('F').and_then(|n| n.parse::<u32>().ok())
        && (1..=24).contains(&n)
    {
        return match char::from_u32(0xE031 + n - 1).filter(|_| n <= 12) {
            Some(value) => Ok(value.to_string()),
            None => Err(format!("WebDriver has no key value for {name} (only F1-F12); Firefox cannot send it")),
        };
    }
    if name == "CapsLock" {
        return Err("WebDriver has no key value for CapsLock; Firefox cannot send it".to_owned());
    }
    if let Some(c) = name.strip_prefix("Key").filter(|c| c.len() == 1 && c.as_bytes()[0].is_ascii_uppercase()) {
        return Ok(c.to_ascii_lowercase());
    }
    if let Some(d) = name.strip_prefix("Digit").filter(|d| d.len() == 1 && d.as_bytes()[0].is_ascii_digit()) {
        return Ok(d.to_owned());
    }
    if let Some(&(_, c)) = PUNCTUATION_CODES.iter().find(|p| p.0 == name) {
        return Ok(c.to_string());
    }
    let mut chars = name.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok(c.to_string()),
        _ => Err(format!("unknown key {name:?} (use a DOM key such as \"a\"/\"Enter\" or a code such as \"KeyA\")")),
    }
}

/// The page API shared by Chromium's [`Page`] and Firefox's [`FirefoxPage`], so that one test body can drive
/// either browser (`fn check(page: &mut impl BrowserPage)`). The methods are the inherent ones; see those for
/// details and for what differs (`type_text` sends key events in Firefox, `Input.insertText` in Chromium).
pub trait BrowserPage {
    /// "chromium" or "firefox", for the few checks that differ (codecs: Debian's Firefox has no H.264).
    fn browser_name(&self) -> &'static str;
    /// The browser's version number ("153.8.0", "140.0.7339.185").
    fn version(&mut self) -> String;
    fn navigate(&mut self, url: &str);
    fn try_eval(&mut self, js: &str) -> Result<Value, String>;
    fn eval(&mut self, js: &str) -> Value;
    fn wait_for(&mut self, js: &str, timeout: Duration) -> Value;
    fn console(&self) -> &[String];
    fn mouse_move(&mut self, x: f64, y: f64);
    fn mouse_button(&mut self, x: f64, y: f64, button: &str, down: bool);
    fn mouse_click(&mut self, x: f64, y: f64);
    fn mouse_wheel(&mut self, x: f64, y: f64, dx: f64, dy: f64);
    fn key_down(&mut self, key: &str);
    fn key_up(&mut self, key: &str);
    fn key_press(&mut self, key: &str);
    fn type_text(&mut self, text: &str);
    fn set_viewport(&mut self, width: u32, height: u32);
    fn screenshot_png(&mut self) -> Vec<u8>;
}

/// Implements the trait by calling the inherent method of the same name.
macro_rules! delegate_browser_page {
    () => {
        fn navigate(&mut self, url: &str) {
            Self::navigate(self, url)
        }
        fn try_eval(&mut self, js: &str) -> Result<Value, String> {
            Self::try_eval(self, js)
        }
        fn eval(&mut self, js: &str) -> Value {
            Self::eval(self, js)
        }
        fn wait_for(&mut self, js: &str, timeout: Duration) -> Value {
            Self::wait_for(self, js, timeout)
        }
        fn console(&self) -> &[String] {
            Self::console(self)
        }
        fn mouse_move(&mut self, x: f64, y: f64) {
            Self::mouse_move(self, x, y)
        }
        fn mouse_button(&mut self, x: f64, y: f64, button: &str, down: bool) {
            Self::mouse_button(self, x, y, button, down)
        }
        fn mouse_click(&mut self, x: f64, y: f64) {
            Self::mouse_click(self, x, y)
        }
        fn mouse_wheel(&mut self, x: f64, y: f64, dx: f64, dy: f64) {
            Self::mouse_wheel(self, x, y, dx, dy)
        }
        fn key_down(&mut self, key: &str) {
            Self::key_down(self, key)
        }
        fn key_up(&mut self, key: &str) {
            Self::key_up(self, key)
        }
        fn key_press(&mut self, key: &str) {
            Self::key_press(self, key)
        }
        fn type_text(&mut self, text: &str) {
            Self::type_text(self, text)
        }
        fn set_viewport(&mut self, width: u32, height: u32) {
            Self::set_viewport(self, width, height)
        }
        fn screenshot_png(&mut self) -> Vec<u8> {
            Self::screenshot_png(self)
        }
    };
}

impl BrowserPage for FirefoxPage {
    fn browser_name(&self) -> &'static str {
        "firefox"
    }
    fn version(&mut self) -> String {
        FirefoxPage::version(self).to_owned()
    }
    delegate_browser_page!();
}

impl BrowserPage for Page {
    fn browser_name(&self) -> &'static str {
        "chromium"
    }
    /// From `Browser.getVersion`'s `product` ("HeadlessChrome/140.0.7339.185"): the part after the slash.
    fn version(&mut self) -> String {
        let product = self.call("Browser.getVersion", json!({}))["product"].as_str().unwrap_or_default().to_owned();
        product.rsplit('/').next().unwrap_or_default().to_owned()
    }
    delegate_browser_page!();
}

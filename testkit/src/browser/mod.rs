//! A headless Chromium driven over the Chrome DevTools Protocol (CDP), synchronously, for end-to-end tests.
//!
//! Start it inside `netns::in_private_netns` so that it can only reach 127.0.0.1. `Browser::launch` starts (through
//! [`chromium::Chromium`]) Chromium in a new process group under a reaper process (so
//! every process Chromium leaves behind, including the crashpad handlers that daemonize into their own
//! sessions, is re-parented to it and waited for), with a fresh temporary profile. Dropping the `Browser`
//! SIGTERMs the group, SIGKILLs stragglers (group members and anything whose command line names the profile
//! dir; the crashpad handlers do, as their config dir is put inside it), waits for the reaper and deletes the
//! profile.
//!
//! Firefox: [`firefox`] (WebDriver BiDi; `Firefox`, `FirefoxPage`, and the `BrowserPage` trait that both page
//! types implement).
//!
//! Error convention: `Page::call`/`eval`/`wait_for`/... panic with a useful message (CDP error, JS exception
//! text, last value seen, console tail); the `try_*` variants return `Result<_, String>` instead.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::protocol::WebSocket;
use tungstenite::{HandshakeError, Message};

mod chromium;
pub mod firefox;
mod process;

pub use chromium::{Chromium, chromium_binary, process_group_members, processes_with_cmdline};
pub use firefox::{BrowserPage, Firefox, FirefoxError, FirefoxPage, add_default_route_via_lo, firefox_binary};

/// The viewport `new_page` emulates, in CSS pixels. (Without it the 1280x720 window gives a 1280x633
/// viewport: headless Chromium still subtracts its browser UI.)
pub const VIEWPORT: (u32, u32) = (1280, 720);
/// Default limit for one CDP command (an `eval` of a promise waits this long for it to settle).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Socket read timeout while waiting for CDP messages (the overall deadline is checked between reads).
const POLL: Duration = Duration::from_millis(100);
/// At most this many unconsumed CDP events are kept per page.
const MAX_EVENTS: usize = 10_000;

/// A running headless Chromium (`Chromium`: private profile, reaped process tree) with its
/// DevTools endpoint.
pub struct Browser {
    chromium: Chromium,
    port: u16,
}

impl Browser {
    /// Start Chromium with `CHROMIUM_FLAGS`, a fresh profile and `--remote-debugging-port=0` on `about:blank`;
    /// panics with the browser log tail if the DevTools port does not appear within 15 s.
    pub fn launch() -> Browser {
        Browser::launch_with_args(&[])
    }

    /// Like `launch`, with `extra` flags appended after `CHROMIUM_FLAGS` (for a repeated switch such as
    /// `--disable-features` the last one wins, so repeat the defaults you still want).
    pub fn launch_with_args(extra: &[&str]) -> Browser {
        let (chromium, port) = Chromium::launch_with_devtools(extra).unwrap_or_else(|e| panic!("{e}"));
        Browser { chromium, port }
    }

    /// The DevTools HTTP/WebSocket port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// PID of the process-group leader: a minimal reaper process whose child is the Chromium browser process.
    pub fn pid(&self) -> u32 {
        self.chromium.pid()
    }

    /// The temporary profile directory (removed on drop).
    pub fn user_data_dir(&self) -> &Path {
        self.chromium.user_data_dir()
    }

    /// The last `max_bytes` of Chromium's stdout/stderr.
    pub fn log_tail(&self, max_bytes: usize) -> String {
        self.chromium.log_tail(max_bytes)
    }

    /// `GET /json/version` (Browser, Protocol-Version, User-Agent, ...).
    pub fn version(&self) -> Value {
        devtools_http(self.port, "GET", "/json/version")
    }

    /// Open a new tab, attach to it, set its viewport to `VIEWPORT` and navigate it to `url` (waiting for its
    /// load event; `about:blank` is not navigated). `Page` and `Runtime` are enabled; console output is kept.
    pub fn new_page(&self, url: &str) -> Page {
        let target = devtools_http(self.port, "PUT", "/json/new?about:blank");
        let ws_url = target["webSocketDebuggerUrl"]
            .as_str()
            .unwrap_or_else(|| panic!("no webSocketDebuggerUrl in /json/new reply: {target}"))
            .to_owned();
        let target_id = target["id"].as_str().unwrap_or_default().to_owned();
        let mut page = Page::connect(self.port, &ws_url, target_id);
        page.call("Page.enable", json!({}));
        page.call("Page.setLifecycleEventsEnabled", json!({ "enabled": true }));
        page.call("Runtime.enable", json!({}));
        page.set_viewport(VIEWPORT.0, VIEWPORT.1);
        if url != "about:blank" {
            page.navigate(url);
        }
        page
    }

    /// Live (non-zombie) processes that belong to this browser: its process group, plus anything whose
    /// command line names the profile dir.
    pub fn processes(&self) -> Vec<u32> {
        self.chromium.processes()
    }
}

/// A bare HTTP/1.1 request to the DevTools endpoint; returns the JSON body (panics on non-200).
fn devtools_http(port: u16, method: &str, path: &str) -> Value {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to DevTools at {addr}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(10))).expect("set_read_timeout");
    conn.set_write_timeout(Some(Duration::from_secs(10))).expect("set_write_timeout");
    write!(conn, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
        .unwrap_or_else(|e| panic!("send DevTools request {method} {path}: {e}"));
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let (head_len, body_len) = loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|len| data.len() >= end + 4 + len) {
                break (end + 4, len);
            }
        }
        match conn.read(&mut buf) {
            Ok(0) => {
                let end = data.windows(4).position(|w| w == b"\r\n\r\n").map_or(data.len(), |e| e + 4);
                break (end, None);
            }
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read DevTools reply to {method} {path}: {e}"),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_len]).into_owned();
    let body = &data[head_len..body_len.map_or(data.len(), |l| head_len + l)];
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    assert_eq!(status, "200", "DevTools {method} {path}: {head}{}", String::from_utf8_lossy(body));
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("DevTools {method} {path}: bad JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// One tab, attached over its own DevTools WebSocket.
pub struct Page {
    ws: WebSocket<TcpStream>,
    target_id: String,
    next_id: u64,
    events: VecDeque<Value>,
    console: Vec<String>,
    call_timeout: Duration,
    modifiers: i64,
}

/// CDP modifier bits (`Input.dispatch*Event` `modifiers`).
pub mod modifiers {
    pub const ALT: i64 = 1;
    pub const CTRL: i64 = 2;
    pub const META: i64 = 4;
    pub const SHIFT: i64 = 8;
}

impl Page {
    fn connect(port: u16, ws_url: &str, target_id: String) -> Page {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to DevTools at {addr}: {e}"));
        stream.set_nodelay(true).expect("set_nodelay");
        stream.set_read_timeout(Some(POLL)).expect("set_read_timeout");
        stream.set_write_timeout(Some(Duration::from_secs(10))).expect("set_write_timeout");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut attempt = tungstenite::client::client(ws_url, stream);
        let ws = loop {
            match attempt {
                Ok((ws, _response)) => break ws,
                Err(HandshakeError::Interrupted(mid)) if Instant::now() < deadline => attempt = mid.handshake(),
                Err(HandshakeError::Interrupted(_)) => panic!("WebSocket handshake with {ws_url} timed out"),
                Err(HandshakeError::Failure(e)) => panic!("WebSocket handshake with {ws_url}: {e}"),
            }
        };
        Page {
            ws,
            target_id,
            next_id: 0,
            events: VecDeque::new(),
            console: Vec::new(),
            call_timeout: CALL_TIMEOUT,
            modifiers: 0,
        }
    }

    /// The DevTools target id of this tab.
    pub fn target_id(&self) -> &str {
        &self.target_id
    }

    /// Change the per-command deadline (default `CALL_TIMEOUT`).
    pub fn set_call_timeout(&mut self, timeout: Duration) {
        self.call_timeout = timeout;
    }

    /// Console messages and uncaught exceptions seen so far, as "level: text" lines.
    pub fn console(&self) -> &[String] {
        &self.console
    }

    /// Send a CDP command and wait for its result; events that arrive meanwhile are buffered.
    pub fn try_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(Message::text(msg)).map_err(|e| format!("{method}: send: {e}"))?;
        let deadline = Instant::now() + self.call_timeout;
        loop {
            let msg = self.read_message(deadline).map_err(|e| format!("{method}: {e}"))?;
            if msg.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(err) = msg.get("error") {
                    return Err(format!("{method}: {err}"));
                }
                return Ok(msg.get("result").cloned().unwrap_or(Value::Null));
            }
            self.record_event(msg);
        }
    }

    /// `try_call`, panicking on error.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params).unwrap_or_else(|e| panic!("CDP {e}"))
    }

    /// Wait for the next event named `method` (buffered ones first, oldest first) and return its params.
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
            let msg = self.read_message(deadline).unwrap_or_else(|e| panic!("waiting for CDP event {method}: {e}"));
            if msg["method"] == method && pred(&msg["params"]) {
                self.record_console(&msg);
                return msg["params"].clone();
            }
            self.record_event(msg);
        }
    }

    /// Navigate to `url` and wait (up to the call timeout) for the `load` lifecycle event of that navigation;
    /// panics on a network error. Same-document navigations (`#hash`) return at once.
    pub fn navigate(&mut self, url: &str) {
        let reply = self.call("Page.navigate", json!({ "url": url }));
        if let Some(err) = reply.get("errorText").and_then(Value::as_str) {
            panic!("navigate to {url}: {err}");
        }
        let Some(loader) = reply.get("loaderId").and_then(Value::as_str).map(str::to_owned) else { return };
        let timeout = self.call_timeout;
        self.wait_event_where("Page.lifecycleEvent", |p| p["name"] == "load" && p["loaderId"] == loader, timeout);
        self.events.retain(|e| e["method"] != "Page.lifecycleEvent");
    }

    /// Evaluate `js` in the page (promises are awaited, the result is returned by value; `undefined` and
    /// non-JSON values become `Null`, `NaN`/`Infinity` a string). A JS exception is an `Err` with its text.
    pub fn try_eval(&mut self, js: &str) -> Result<Value, String> {
        let reply = self.try_call(
            "Runtime.evaluate",
            json!({ "expression": js, "awaitPromise": true, "returnByValue": true, "userGesture": true }),
        )?;
        if let Some(details) = reply.get("exceptionDetails") {
            return Err(exception_text(details));
        }
        let result = &reply["result"];
        Ok(match (result.get("value"), result.get("unserializableValue")) {
            (Some(v), _) => v.clone(),
            (None, Some(v)) => v.clone(),
            (None, None) => Value::Null,
        })
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

    /// Move the mouse to (x, y) CSS pixels.
    pub fn mouse_move(&mut self, x: f64, y: f64) {
        self.call(
            "Input.dispatchMouseEvent",
            json!({ "type": "mouseMoved", "x": x, "y": y, "button": "none", "modifiers": self.modifiers }),
        );
    }

    /// Press (`down`) or release a mouse button ("left", "middle", "right", "back", "forward") at (x, y).
    pub fn mouse_button(&mut self, x: f64, y: f64, button: &str, down: bool) {
        let mask = match button {
            "left" => 1,
            "right" => 2,
            "middle" => 4,
            "back" => 8,
            "forward" => 16,
            other => panic!("unknown mouse button {other:?}"),
        };
        let (ty, buttons) = if down { ("mousePressed", mask) } else { ("mouseReleased", 0) };
        self.call(
            "Input.dispatchMouseEvent",
            json!({ "type": ty, "x": x, "y": y, "button": button, "buttons": buttons, "clickCount": 1,
                    "modifiers": self.modifiers }),
        );
    }

    /// Left click at (x, y): move, press, release.
    pub fn mouse_click(&mut self, x: f64, y: f64) {
        self.mouse_move(x, y);
        self.mouse_button(x, y, "left", true);
        self.mouse_button(x, y, "left", false);
    }

    /// Scroll by (dx, dy) CSS pixels with the pointer at (x, y).
    pub fn mouse_wheel(&mut self, x: f64, y: f64, dx: f64, dy: f64) {
        self.call(
            "Input.dispatchMouseEvent",
            json!({ "type": "mouseWheel", "x": x, "y": y, "deltaX": dx, "deltaY": dy, "modifiers": self.modifiers }),
        );
    }

    /// Key down for `key`, given as a DOM `key` ("a", "A", "Enter", "ArrowLeft", "Shift", "F5", "!") or a DOM
    /// `code` ("KeyA", "Digit1", "ShiftLeft", "Space"). Modifier keys stay held (and set `modifiers` on later
    /// events) until `key_up`.
    pub fn key_down(&mut self, key: &str) {
        let def = key_def(key);
        self.modifiers |= def.modifier;
        let mut params = self.key_params(&def);
        let text = params.get("text").and_then(Value::as_str).is_some_and(|t| !t.is_empty());
        params["type"] = json!(if text { "keyDown" } else { "rawKeyDown" });
        self.call("Input.dispatchKeyEvent", params);
    }

    /// Key up for `key` (see `key_down`).
    pub fn key_up(&mut self, key: &str) {
        let def = key_def(key);
        self.modifiers &= !def.modifier;
        let mut params = self.key_params(&def);
        params["type"] = json!("keyUp");
        params.as_object_mut().expect("object").remove("text");
        self.call("Input.dispatchKeyEvent", params);
    }

    /// `key_down` then `key_up` (see `key_down` for the names accepted).
    pub fn key_press(&mut self, key: &str) {
        self.key_down(key);
        self.key_up(key);
    }

    /// Insert `text` as if typed/composed (`Input.insertText`: an `input` event, no key events).
    pub fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({ "text": text }));
    }

    /// Type `text` one character at a time with full key events (US layout; `key_down` names each char).
    pub fn type_keys(&mut self, text: &str) {
        for ch in text.chars() {
            self.key_press(&ch.to_string());
        }
    }

    /// Override the viewport to `width`x`height` CSS pixels at scale 1.
    pub fn set_viewport(&mut self, width: u32, height: u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
    }

    /// A PNG screenshot of the viewport.
    pub fn screenshot_png(&mut self) -> Vec<u8> {
        let reply = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let data = reply["data"].as_str().unwrap_or_else(|| panic!("no data in captureScreenshot reply"));
        let png = base64_decode(data);
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "captureScreenshot did not return a PNG");
        png
    }

    fn key_params(&self, def: &KeyDef) -> Value {
        let mods = self.modifiers | if def.shifted { modifiers::SHIFT } else { 0 };
        let mut key = def.key.clone();
        let mut text = def.text.clone();
        // Shift held: letters become upper case.
        if mods & modifiers::SHIFT != 0 && key.len() == 1 && key.as_bytes()[0].is_ascii_lowercase() {
            key = key.to_ascii_uppercase();
            text = text.map(|t| t.to_ascii_uppercase());
        }
        // Ctrl/Alt/Meta chords produce no text.
        if mods & (modifiers::CTRL | modifiers::ALT | modifiers::META) != 0 {
            text = None;
        }
        let mut params = json!({
            "modifiers": mods,
            "key": key,
            "code": def.code,
            "windowsVirtualKeyCode": def.key_code,
            "nativeVirtualKeyCode": def.key_code,
            "location": def.location,
            "autoRepeat": false,
            "isKeypad": false,
        });
        if let Some(text) = text {
            params["text"] = json!(text);
            params["unmodifiedText"] = json!(text);
        }
        params
    }

    /// Read one JSON message before `deadline`, skipping pings.
    fn read_message(&mut self, deadline: Instant) -> Result<Value, String> {
        read_json(&mut self.ws, deadline, "DevTools")
    }

    fn record_event(&mut self, event: Value) {
        self.record_console(&event);
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn record_console(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| match a.get("value") {
                        Some(Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                        None => a["description"].as_str().unwrap_or("?").to_owned(),
                    })
                    .collect();
                self.console.push(format!("{}: {}", params["type"].as_str().unwrap_or("log"), args.join(" ")));
            }
            Some("Runtime.exceptionThrown") => {
                self.console.push(format!("uncaught: {}", exception_text(&params["exceptionDetails"])));
            }
            _ => {}
        }
    }

    fn console_tail(&self, n: usize) -> String {
        let tail = &self.console[self.console.len().saturating_sub(n)..];
        tail.iter().map(|l| format!("    {l}\n")).collect()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // Close the tab itself (fire and forget): its pages, WebSockets and peer connections end with it.
        self.next_id += 1;
        let close = serde_json::json!({ "id": self.next_id, "method": "Page.close" }).to_string();
        let _ = self.ws.send(tungstenite::Message::text(close));
        let _ = self.ws.flush();
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}

fn exception_text(details: &Value) -> String {
    let what = details["exception"]["description"]
        .as_str()
        .or_else(|| details["exception"]["value"].as_str())
        .or_else(|| details["text"].as_str())
        .unwrap_or("unknown exception");
    format!("{what} (line {}, column {})", details["lineNumber"], details["columnNumber"])
}

/// JavaScript truthiness of a JSON value.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty() && s != "NaN" && s != "-0",
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Decode standard base64 (padding and whitespace ignored); panics on other characters.
pub fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\r' | b'\n' | b' ' | b'\t' => continue,
            other => panic!("invalid base64 byte {other:#x}"),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// What `Input.dispatchKeyEvent` needs for one key.
struct KeyDef {
    key: String,
    code: String,
    key_code: i64,
    text: Option<String>,
    location: i64,
    /// The modifier bit this key holds while down (0 for ordinary keys).
    modifier: i64,
    /// A character typed with Shift (its events carry the Shift modifier).
    shifted: bool,
}

/// US-layout punctuation: (unshifted, shifted, code, Windows virtual key code).
const PUNCTUATION: &[(char, char, &str, i64)] = &[
    ('-', '_', "Minus", 189),
    ('=', '+', "Equal", 187),
    ('[', '{', "BracketLeft", 219),
    (']', '}', "BracketRight", 221),
    ('\\', '|', "Backslash", 220),
    (';', ':', "Semicolon", 186),
    ('\'', '"', "Quote", 222),
    (',', '<', "Comma", 188),
    ('.', '>', "Period", 190),
    ('/', '?', "Slash", 191),
    ('`', '~', "Backquote", 192),
];

/// Shifted digits on a US layout, indexed by digit.
const SHIFTED_DIGITS: &str = ")!@#$%^&*(";

/// A non-character key: (key, code, Windows virtual key code, text, location, modifier bit).
type NamedKey = (&'static str, &'static str, i64, Option<&'static str>, i64, i64);

const NAMED_KEYS: &[NamedKey] = &[
    ("Enter", "Enter", 13, Some("\r"), 0, 0),
    ("Tab", "Tab", 9, None, 0, 0),
    ("Backspace", "Backspace", 8, None, 0, 0),
    ("Escape", "Escape", 27, None, 0, 0),
    ("Delete", "Delete", 46, None, 0, 0),
    ("Insert", "Insert", 45, None, 0, 0),
    ("Home", "Home", 36, None, 0, 0),
    ("End", "End", 35, None, 0, 0),
    ("PageUp", "PageUp", 33, None, 0, 0),
    ("PageDown", "PageDown", 34, None, 0, 0),
    ("ArrowLeft", "ArrowLeft", 37, None, 0, 0),
    ("ArrowUp", "ArrowUp", 38, None, 0, 0),
    ("ArrowRight", "ArrowRight", 39, None, 0, 0),
    ("ArrowDown", "ArrowDown", 40, None, 0, 0),
    ("CapsLock", "CapsLock", 20, None, 0, 0),
    (" ", "Space", 32, Some(" "), 0, 0),
    ("Shift", "ShiftLeft", 16, None, 1, modifiers::SHIFT),
    ("Shift", "ShiftRight", 16, None, 2, modifiers::SHIFT),
    ("Control", "ControlLeft", 17, None, 1, modifiers::CTRL),
    ("Control", "ControlRight", 17, None, 2, modifiers::CTRL),
    ("Alt", "AltLeft", 18, None, 1, modifiers::ALT),
    ("Alt", "AltRight", 18, None, 2, modifiers::ALT),
    ("Meta", "MetaLeft", 91, None, 1, modifiers::META),
    ("Meta", "MetaRight", 92, None, 2, modifiers::META),
];

fn key_def(name: &str) -> KeyDef {
    let plain = |key: String, code: String, key_code: i64, shifted: bool| KeyDef {
        text: Some(key.clone()),
        key,
        code,
        key_code,
        location: 0,
        modifier: 0,
        shifted,
    };
    // Named keys, by key or by code ("Space" and "Ctrl" accepted as aliases).
    let alias = match name {
        "Space" => " ",
        "Ctrl" => "Control",
        "Esc" => "Escape",
        "Return" => "Enter",
        other => other,
    };
    if let Some(&(key, code, key_code, text, location, modifier)) =
        NAMED_KEYS.iter().find(|k| k.0 == alias || k.1 == alias)
    {
        return KeyDef {
            key: key.to_owned(),
            code: code.to_owned(),
            key_code,
            text: text.map(str::to_owned),
            location,
            modifier,
            shifted: false,
        };
    }
    if let Some(n) = name.strip_prefix('F').and_then(|n| n.parse::<i64>().ok())
        && (1..=24).contains(&n)
    {
        return KeyDef {
            key: name.to_owned(),
            code: name.to_owned(),
            key_code: 111 + n,
            text: None,
            location: 0,
            modifier: 0,
            shifted: false,
        };
    }
    // Codes of character keys.
    if let Some(c) = name.strip_prefix("Key").filter(|c| c.len() == 1 && c.as_bytes()[0].is_ascii_uppercase()) {
        return plain(c.to_ascii_lowercase(), name.to_owned(), i64::from(c.as_bytes()[0]), false);
    }
    if let Some(d) = name.strip_prefix("Digit").filter(|d| d.len() == 1 && d.as_bytes()[0].is_ascii_digit()) {
        return plain(d.to_owned(), name.to_owned(), i64::from(d.as_bytes()[0]), false);
    }
    if let Some(&(c, _, code, vk)) = PUNCTUATION.iter().find(|p| p.2 == name) {
        return plain(c.to_string(), code.to_owned(), vk, false);
    }
    // Single characters.
    let mut chars = name.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        if c.is_ascii_lowercase() {
            return plain(
                c.to_string(),
                format!("Key{}", c.to_ascii_uppercase()),
                i64::from(c.to_ascii_uppercase() as u8),
                false,
            );
        }
        if c.is_ascii_uppercase() {
            // Upper case letters are typed with Shift.
            return plain(c.to_string(), format!("Key{c}"), i64::from(c as u8), true);
        }
        if c.is_ascii_digit() {
            return plain(c.to_string(), format!("Digit{c}"), i64::from(c as u8), false);
        }
        if let Some(d) = SHIFTED_DIGITS.find(c) {
            return plain(c.to_string(), format!("Digit{d}"), 48 + d as i64, true);
        }
        if let Some(&(_, _, code, vk)) = PUNCTUATION.iter().find(|p| p.0 == c) {
            return plain(c.to_string(), code.to_owned(), vk, false);
        }
        if let Some(&(_, _, code, vk)) = PUNCTUATION.iter().find(|p| p.1 == c) {
            return plain(c.to_string(), code.to_owned(), vk, true);
        }
    }
    panic!("key_def: unknown key {name:?}");
}

/// Read one JSON text message from a browser's WebSocket (`peer`: "DevTools", "BiDi") before `deadline`,
/// skipping pings and other frames. The socket has a read timeout, so the deadline is checked between reads.
pub(crate) fn read_json(ws: &mut WebSocket<TcpStream>, deadline: Instant, peer: &str) -> Result<Value, String> {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                return serde_json::from_str(text.as_str()).map_err(|e| format!("bad {peer} JSON ({e}): {text}"));
            }
            Ok(Message::Close(frame)) => return Err(format!("{peer} closed the connection: {frame:?}")),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{peer} connection: {e}")),
        }
        if Instant::now() > deadline {
            return Err("no reply before the deadline".to_owned());
        }
    }
}

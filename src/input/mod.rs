//! Remote control: viewer input injected into the Wayland session.
//!
//! Data flow: the viewer page sends compact JSON over the WebRTC data channel `input` (protocol in README,
//! "Remote control"); a viewer task on tokio parses and validates each message here ([`parse`]) — or drops
//! it when input is not allowed — and hands the [`InputEvent`] to the injector thread ([`inject`]) through a
//! bounded channel. The injector owns its own Wayland connection with a zwlr_virtual_pointer_v1 and a
//! zwp_virtual_keyboard_v1 (keymap from [`keymap`]) and turns events into requests through the sans-IO
//! [`state::InputState`] (held keys and buttons per viewer, pointer mapping), so that a viewer that goes away
//! releases everything it held.
//!
//! Never: inject anything unless `--allow-input`/`[input] allow` is on; act on a message that failed
//! validation (it is counted as rejected and has no effect).

pub mod clipboard;
pub mod inject;
pub mod keycodes;
pub mod keymap;
pub mod limit;
pub mod state;

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Largest input message accepted (a text paste included).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Most characters a `text` message may carry.
pub(crate) const MAX_TEXT_CHARS: usize = 1000;
/// Largest wheel delta accepted, in pixels (`mode: "pixel"`) …
pub(crate) const MAX_WHEEL_PIXELS: f64 = 10_000.0;
/// … and in lines (`mode: "line"`).
pub(crate) const MAX_WHEEL_LINES: f64 = 100.0;

/// Why an input message was rejected (it then has no effect; the `input_rejected` counter goes up).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    #[error("input message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed input message: {0}")]
    Malformed(String),
    #[error("{field} = {value} is out of range ({range})")]
    OutOfRange { field: &'static str, value: f64, range: &'static str },
    #[error("unknown key code {0:?} (KeyboardEvent.code of a key we do not map)")]
    UnknownKey(String),
    #[error("unknown mouse button {0} (0..=4: left, middle, right, back, forward)")]
    UnknownButton(u8),
    #[error("text of {0} characters exceeds the {MAX_TEXT_CHARS}-character limit")]
    TextTooLong(usize),
    #[error("text contains the control character U+{0:04X}")]
    ControlChar(u32),
    #[error("keymap: {0}")]
    Keymap(String),
    #[error("clipboard text of {0} bytes exceeds the {max} bytes carried", max = clipboard::MAX_CLIPBOARD_BYTES)]
    ClipboardTooLarge(usize),
}

/// How a wheel delta is measured (`WheelEvent.deltaMode`: pixels, or lines — pages are sent as lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WheelMode {
    #[default]
    Pixel,
    Line,
}

/// One validated input event.
#[derive(Debug, Clone, PartialEq)]
pub enum InputEvent {
    /// The pointer to a point of the output, normalized to 0..=1 over the picture (0,0 top-left).
    Move { x: f64, y: f64 },
    /// A pointer button (evdev `BTN_*` code) pressed or released.
    Button { button: u32, down: bool },
    /// Scrolling, positive = right/down.
    Wheel { dx: f64, dy: f64, mode: WheelMode },
    /// A key (evdev keycode) pressed or released.
    Key { key: u32, down: bool },
    /// Text to type as key presses with the server's keymap (characters it cannot type are skipped).
    Text(String),
    /// Text for the desktop's clipboard (its selection: Ctrl+V in a desktop application pastes it).
    Clipboard(String),
    /// The viewer's keyboard layout as its browser maps it: (evdev key, the character it types unshifted).
    Layout(Vec<(u32, char)>),
}

/// The messages as they arrive (see README for the protocol).
#[derive(Debug, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase", deny_unknown_fields)]
enum Wire {
    Move {
        x: f64,
        y: f64,
    },
    Button {
        b: u8,
        down: bool,
    },
    Wheel {
        #[serde(default)]
        dx: f64,
        #[serde(default)]
        dy: f64,
        #[serde(default)]
        mode: WheelMode,
    },
    Key {
        code: String,
        down: bool,
    },
    Text {
        s: String,
    },
    Clipboard {
        text: String,
    },
    /// `navigator.keyboard.getLayoutMap()`: KeyboardEvent.code → the key's character.
    Layout {
        map: std::collections::BTreeMap<String, String>,
    },
}

fn in_range(field: &'static str, value: f64, lo: f64, hi: f64, range: &'static str) -> Result<f64, InputError> {
    if value.is_finite() && (lo..=hi).contains(&value) {
        Ok(value)
    } else {
        Err(InputError::OutOfRange { field, value, range })
    }
}

/// Parse and validate one message from the `input` data channel.
pub fn parse(bytes: &[u8]) -> Result<InputEvent, InputError> {
    // A clipboard message may be larger than the others (its text, JSON-escaped, plus a little).
    let clipboard = bytes.starts_with(br#"{"t":"clipboard""#);
    if bytes.len() > MAX_MESSAGE_BYTES && !(clipboard && bytes.len() <= 2 * clipboard::MAX_CLIPBOARD_BYTES) {
        return Err(InputError::TooLarge(bytes.len()));
    }
    let wire: Wire = serde_json::from_slice(bytes).map_err(|e| InputError::Malformed(e.to_string()))?;
    Ok(match wire {
        Wire::Move { x, y } => {
            InputEvent::Move { x: in_range("x", x, 0.0, 1.0, "0..=1")?, y: in_range("y", y, 0.0, 1.0, "0..=1")? }
        }
        Wire::Button { b, down } => {
            InputEvent::Button { button: keycodes::evdev_button(b).ok_or(InputError::UnknownButton(b))?, down }
        }
        Wire::Wheel { dx, dy, mode } => {
            let (max, range) = match mode {
                WheelMode::Pixel => (MAX_WHEEL_PIXELS, "-10000..=10000 pixels"),
                WheelMode::Line => (MAX_WHEEL_LINES, "-100..=100 lines"),
            };
            InputEvent::Wheel {
                dx: in_range("dx", dx, -max, max, range)?,
                dy: in_range("dy", dy, -max, max, range)?,
                mode,
            }
        }
        Wire::Key { code, down } => match keycodes::evdev_keycode(&code) {
            Some(key) => InputEvent::Key { key, down },
            None => return Err(InputError::UnknownKey(code)),
        },
        Wire::Text { s } => {
            let n = s.chars().count();
            if n > MAX_TEXT_CHARS {
                return Err(InputError::TextTooLong(n));
            }
            if let Some(c) = s.chars().find(|c| c.is_control() && !matches!(c, '\n' | '\t')) {
                return Err(InputError::ControlChar(u32::from(c)));
            }
            InputEvent::Text(s)
        }
        Wire::Layout { map } => {
            if map.len() > 256 {
                return Err(InputError::Malformed(format!("a layout map of {} keys", map.len())));
            }
            // Keys we know that type one character; dead keys ("Dead"), names and the rest say nothing.
            let pairs: Vec<(u32, char)> = map
                .iter()
                .filter_map(|(code, key)| {
                    let mut chars = key.chars();
                    let (Some(c), None) = (chars.next(), chars.next()) else { return None };
                    Some((keycodes::evdev_keycode(code)?, c))
                })
                .collect();
            if pairs.is_empty() {
                return Err(InputError::Malformed("a layout map with no key we know".into()));
            }
            InputEvent::Layout(pairs)
        }
        Wire::Clipboard { text } => {
            if text.len() > clipboard::MAX_CLIPBOARD_BYTES {
                return Err(InputError::ClipboardTooLarge(text.len()));
            }
            if text.contains('\0') {
                return Err(InputError::ControlChar(0));
            }
            InputEvent::Clipboard(text)
        }
    })
}

/// Input counters, shared by the viewer tasks, the injector and the status API.
#[derive(Debug, Default)]
pub struct InputCounters {
    /// Messages received on `input` data channels.
    pub received: AtomicU64,
    /// Events that reached the compositor.
    pub injected: AtomicU64,
    /// Messages dropped: input not allowed (view-only), over the viewer's rate limit, the injector's queue
    /// full (commands or characters), no compositor connection, or the connection lost before they were sent.
    pub dropped: AtomicU64,
    /// Messages that failed validation (malformed, unknown type or key, out of range): no effect. (Characters
    /// of a `text` the keymap cannot type are counted here one by one.)
    pub rejected: AtomicU64,
    /// Of `dropped`: over the viewer's rate limit ([`limit::TokenBucket`]).
    pub rate_limited: AtomicU64,
    /// Extra `input` data channels refused (one per peer).
    pub channels_refused: AtomicU64,
    /// Times the injector found the compositor's socket full and waited for room (back-pressure).
    pub backpressure_waits: AtomicU64,
    /// Gauge: characters of `text` messages queued for the injector and not typed yet (bounded by
    /// [`inject::MAX_QUEUED_CHARS`]).
    pub queued_chars: AtomicU64,
}

impl InputCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self, allowed: bool) -> InputStatus {
        InputStatus {
            allowed,
            received: self.received.load(Ordering::Relaxed),
            injected: self.injected.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            channels_refused: self.channels_refused.load(Ordering::Relaxed),
            backpressure_waits: self.backpressure_waits.load(Ordering::Relaxed),
        }
    }
}

/// The `input` object of `/api/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InputStatus {
    /// Whether viewers may control the desktop (`--allow-input`).
    pub allowed: bool,
    pub received: u64,
    pub injected: u64,
    pub dropped: u64,
    pub rejected: u64,
    /// Of `dropped`: over a viewer's rate limit.
    pub rate_limited: u64,
    /// Second (and later) `input` data channels of a peer, refused.
    pub channels_refused: u64,
    /// Times the injector waited for room in the compositor's socket (it read more slowly than we wrote).
    pub backpressure_waits: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<InputEvent, InputError> {
        parse(s.as_bytes())
    }

    #[test]
    fn valid_messages_parse() {
        assert_eq!(p(r#"{"t":"move","x":0.5,"y":0.25}"#), Ok(InputEvent::Move { x: 0.5, y: 0.25 }));
        assert_eq!(p(r#"{"t":"move","x":0,"y":1}"#), Ok(InputEvent::Move { x: 0.0, y: 1.0 }));
        assert_eq!(p(r#"{"t":"button","b":0,"down":true}"#), Ok(InputEvent::Button { button: 0x110, down: true }));
        assert_eq!(p(r#"{"t":"button","b":2,"down":false}"#), Ok(InputEvent::Button { button: 0x111, down: false }));
        assert_eq!(
            p(r#"{"t":"wheel","dx":0,"dy":-120,"mode":"pixel"}"#),
            Ok(InputEvent::Wheel { dx: 0.0, dy: -120.0, mode: WheelMode::Pixel })
        );
        assert_eq!(
            p(r#"{"t":"wheel","dy":3,"mode":"line"}"#),
            Ok(InputEvent::Wheel { dx: 0.0, dy: 3.0, mode: WheelMode::Line })
        );
        assert_eq!(p(r#"{"t":"key","code":"KeyA","down":true}"#), Ok(InputEvent::Key { key: 30, down: true }));
        assert_eq!(p(r#"{"t":"text","s":"Hi\n"}"#), Ok(InputEvent::Text("Hi\n".into())));
        assert_eq!(p(r#"{"t":"clipboard","text":"h\u00e9llo\n"}"#), Ok(InputEvent::Clipboard("héllo\n".into())));
        let big = format!(r#"{{"t":"clipboard","text":"{}"}}"#, "x".repeat(clipboard::MAX_CLIPBOARD_BYTES));
        assert!(matches!(p(&big), Ok(InputEvent::Clipboard(t)) if t.len() == clipboard::MAX_CLIPBOARD_BYTES));
        let too_big = format!(r#"{{"t":"clipboard","text":"{}"}}"#, "x".repeat(clipboard::MAX_CLIPBOARD_BYTES + 1));
        assert_eq!(p(&too_big), Err(InputError::ClipboardTooLarge(clipboard::MAX_CLIPBOARD_BYTES + 1)));
        assert_eq!(
            p(r#"{"t":"layout","map":{"KeyY":"z","Semicolon":"ö","Equal":"Dead","NoSuchKey":"x"}}"#),
            Ok(InputEvent::Layout(vec![(21, 'z'), (39, 'ö')]))
        );
        assert!(matches!(p(r#"{"t":"layout","map":{"Equal":"Dead"}}"#), Err(InputError::Malformed(_))));
        // Only a clipboard message may be that large.
        let long_text = format!(r#"{{"t":"text","s":"{}"}}"#, "x".repeat(5000));
        assert!(matches!(p(&long_text), Err(InputError::TooLarge(_))));
    }

    #[test]
    fn invalid_messages_are_rejected_with_a_reason() {
        for bad in [
            "",
            "{not json",
            r#"{"t":"dance"}"#,
            r#"{"x":0.5,"y":0.5}"#,
            r#"{"t":"move","x":0.5}"#,
            r#"{"t":"move","x":"0.5","y":0}"#,
            r#"{"t":"move","x":0.5,"y":0.5,"z":1}"#,
            r#"{"t":"move","x":1e999,"y":0}"#,
            r#"{"t":"key","code":"KeyA"}"#,
        ] {
            assert!(matches!(p(bad), Err(InputError::Malformed(_))), "{bad}: {:?}", p(bad));
        }
        assert!(matches!(p(r#"{"t":"move","x":1.01,"y":0}"#), Err(InputError::OutOfRange { field: "x", .. })));
        assert!(matches!(p(r#"{"t":"move","x":0,"y":-0.1}"#), Err(InputError::OutOfRange { field: "y", .. })));
        assert!(matches!(p(r#"{"t":"wheel","dy":101,"mode":"line"}"#), Err(InputError::OutOfRange { .. })));
        assert!(matches!(p(r#"{"t":"wheel","dx":-20000}"#), Err(InputError::OutOfRange { .. })));
        assert_eq!(p(r#"{"t":"button","b":7,"down":true}"#), Err(InputError::UnknownButton(7)));
        assert_eq!(p(r#"{"t":"key","code":"KeyÄ","down":true}"#), Err(InputError::UnknownKey("KeyÄ".into())));
        assert_eq!(p(r#"{"t":"text","s":"a\u0007"}"#), Err(InputError::ControlChar(7)));
        let long = format!(r#"{{"t":"text","s":"{}"}}"#, "a".repeat(MAX_TEXT_CHARS + 1));
        assert_eq!(p(&long), Err(InputError::TextTooLong(MAX_TEXT_CHARS + 1)));
        let huge = format!(r#"{{"t":"text","s":"{}"}}"#, "a".repeat(MAX_MESSAGE_BYTES));
        assert!(matches!(p(&huge), Err(InputError::TooLarge(_))));
        // NaN cannot be written in JSON; out-of-range doubles are refused by the range check.
        assert!(in_range("x", f64::NAN, 0.0, 1.0, "0..=1").is_err());
        assert!(in_range("x", f64::INFINITY, 0.0, 1.0, "0..=1").is_err());
    }

    #[test]
    fn counters_snapshot() {
        let c = InputCounters::default();
        InputCounters::add(&c.received, 3);
        InputCounters::add(&c.rejected, 1);
        InputCounters::add(&c.channels_refused, 1);
        assert_eq!(
            c.snapshot(true),
            InputStatus { allowed: true, received: 3, rejected: 1, channels_refused: 1, ..InputStatus::default() }
        );
    }
}

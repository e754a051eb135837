//! `/ws` signaling messages from a browser: any text must give a message or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wl_webrtc::signaling::messages::parse_client;

fuzz_target!(|data: &[u8]| {
    // The WebSocket layer hands us text frames only, so the input is UTF-8 by then.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_client(text);
    }
});

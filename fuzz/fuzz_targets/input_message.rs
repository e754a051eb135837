//! Messages on a viewer's `input` data channel: any bytes must give a validated event or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wl_webrtc::input::{InputEvent, parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(InputEvent::Move { x, y }) = parse(data) {
        assert!((0.0..=1.0).contains(&x) && (0.0..=1.0).contains(&y), "a move outside the output: {x},{y}");
    }
});

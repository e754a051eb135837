//! The checks in front of every endpoint: Host, Origin and token (header and query) as a hostile client
//! sends them. Input: four fields separated by newlines (Host, Origin, Authorization, query string).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wl_webrtc::signaling::auth::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut f = text.splitn(4, '\n');
    let (host, origin, authorization, query) = (f.next(), f.next(), f.next(), f.next());
    let policy = Policy {
        token: Some("0123456789abcdef0123456789abcdef".into()),
        allow_hosts: vec!["desk.example.org".into()],
        allow_origins: vec!["https://player.example.org".into()],
    };
    let _ = policy.host_ok(host);
    let _ = policy.origin(origin, host, true);
    let _ = policy.origin(origin, host, false);
    if policy.authorized(authorization, query) {
        // Only the real token opens the door.
        let presented = format!("{} {}", authorization.unwrap_or(""), query.unwrap_or(""));
        assert!(presented.contains("0123456789abcdef0123456789abcdef"), "authorized without the token: {text:?}");
    }
});

//! Signaling on one HTTP port (axum): the embedded viewer page, a WebSocket JSON protocol, WHEP, and the
//! status API. Every route that can start or see a stream checks the token when one is required.
//!
//! WebSocket protocol (`GET /ws`, JSON text messages, one viewer per socket; documented in README):
//! client → server `{"type":"offer","sdp":…}`, `{"type":"candidate","candidate":…,"sdpMid":…,
//! "sdpMLineIndex":…}`, `{"type":"bye"}`; server → client `{"type":"answer","sdp":…}`,
//! `{"type":"error","message":…}`, `{"type":"bye","reason":…}`. A malformed message gets an error and the
//! socket is closed; the server keeps serving everyone else.

pub mod auth;
pub mod client;
pub mod http;
pub mod messages;

//! Signaling on one HTTP port (axum): the embedded viewer page, a WebSocket JSON protocol, WHEP, and the
//! status API, on our own connection loop (`listen`: TLS, caps, timeouts). Every route passes the `http`
//! guard: the Host it was addressed as, the Origin of a browser request, and the token (`auth`).
//!
//! WebSocket protocol (`GET /ws`, JSON text messages, one viewer per socket; documented in README):
//! client → server `{"type":"offer","sdp":…}`, `{"type":"candidate","candidate":…,"sdpMid":…,
//! "sdpMLineIndex":…}`, `{"type":"bye"}`; server → client `{"type":"answer","sdp":…}`,
//! `{"type":"error","message":…}`, `{"type":"bye","reason":…}`. A malformed message gets an error and the
//! socket is closed; the server keeps serving everyone else.

pub mod auth;
pub mod client;
pub mod http;
pub mod instance;
pub mod listen;
pub mod messages;
pub mod tls;

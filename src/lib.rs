//! wl-webrtc: stream a Wayland desktop to any browser over WebRTC.
//!
//! Layout (see README's Architecture section): `capture` talks to the compositor on the capture thread,
//! `buffer` owns the memory frames land in, `frame` is the shared vocabulary, `headless` runs a private
//! desktop, `app` wires commands together, `config`/`cli` turn flags and files into one `Config`.

// `unsafe` only in the FFI modules, each of which allows it explicitly (SAFETY notes on every block):
// capture::pipewire (SPA metadata), convert::vulkan (ash), encode::x264, headless (pre_exec).
#![deny(unsafe_code)]

pub mod app;
pub mod bench;
pub mod buffer;
pub mod capture;
pub mod cli;
pub mod config;
pub mod control;
pub mod convert;
pub mod cursor;
pub mod encode;
pub mod frame;
pub mod headless;
pub mod input;
pub mod media;
pub mod metrics;
pub mod pipeline;
pub mod server;
pub mod signaling;
pub mod synthetic;
pub mod transport;

//! wl-webrtc: stream a Wayland desktop to any browser over WebRTC.
//!
//! Layout (see README's Architecture section), bottom up: `frame`, `buffer`, `cursor`, `metrics`, `synthetic`
//! (vocabulary) → `config` → `capture` (sources; the Wayland core in `capture::wayland`), `convert`, `encode`,
//! `transport`, `input`, `headless` → `control`, `media`, `pipeline` (the sans-IO core) → `server`,
//! `signaling` → `cli`, `app`, `bench`. No module circles (tests/it/layers.rs).

// `unsafe` only in the FFI modules, each of which allows it explicitly (SAFETY notes on every block):
// capture::pipewire (SPA metadata), convert::vulkan (ash), encode::x264, encode::vp8, headless (pre_exec).
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

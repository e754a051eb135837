//! Integration tests against a real headless Sway (started and stopped per test by `support::Fixture`) and,
//! for ext-image-copy-capture, against the in-process test compositor (`support::compositor`).
//! One test binary, one module per area.

#[path = "../support/mod.rs"]
mod support;

mod browser_smoke;
mod capture;
mod cli;
mod codecs;
mod encode;
mod firefox;
mod image_copy;
mod input;
mod lifecycle;
mod network;
mod outputs;
mod pipewire;
mod security;
mod stream;
#[cfg(feature = "vaapi")]
mod vaapi;
mod vulkan;
mod x264;

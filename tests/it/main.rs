//! Integration tests against a real headless Sway (started and stopped per test by `support::Fixture`).
//! One test binary, one module per area.

#[path = "../support/mod.rs"]
mod support;

mod browser_smoke;
mod capture;
mod cli;
mod encode;
mod lifecycle;
mod outputs;
mod stream;
mod vulkan;

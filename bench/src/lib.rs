//! The glass-to-glass harness of wl-webrtc (binary `wl-webrtc-bench`): see [`e2e`]. Kept out of the product:
//! it launches Chromium, makes network namespaces and runs a GStreamer peer.

pub mod e2e;

//! Media transport to viewers.
pub mod congestion;
pub mod webrtc;

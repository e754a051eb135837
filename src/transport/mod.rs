//! Media transport to viewers.
pub mod webrtc;

//! Video encoding: the `Encoder` trait, its settings, and the encoded-frame type every viewer shares. H.264
//! (x264) for every viewer that can take it, VP8 (libvpx) for the others.
//!
//! Encoders take `Nv12Frame`s (never RGB: x264 fed RGB emits High 4:4:4, which browsers cannot decode) and
//! return one Annex-B access unit per frame with no frame delay. Keyframes come only on request (infinite
//! GOP), each with SPS/PPS in front so a new viewer can start from it.

#[cfg(feature = "vaapi")]
pub mod h264;
#[cfg(feature = "vaapi")]
pub mod vaapi;
pub mod vp8;
pub mod x264;

use std::time::Instant;

use bytes::Bytes;

pub use crate::frame::Codec;
use crate::frame::Nv12Frame;

/// Which codec viewers get (`--codec`, `[encoder] codec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CodecChoice {
    /// Per viewer: H.264 when its offer has usable H.264, else VP8.
    #[default]
    Auto,
    /// H.264 only (a viewer without it is refused).
    H264,
    /// VP8 only (a viewer without it is refused).
    Vp8,
}

impl CodecChoice {
    /// The codecs this choice allows, in order of preference.
    pub fn allowed(self) -> &'static [Codec] {
        match self {
            CodecChoice::Auto => &Codec::ALL,
            CodecChoice::H264 => &[Codec::H264],
            CodecChoice::Vp8 => &[Codec::Vp8],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CodecChoice::Auto => "auto",
            CodecChoice::H264 => "h264",
            CodecChoice::Vp8 => "vp8",
        }
    }
}

/// Which H.264 encoder (`--encoder`, `[encoder] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EncoderBackend {
    /// VA-API when a render node can encode H.264, else x264 (one log line says why).
    #[default]
    Auto,
    /// Software (libx264).
    X264,
    /// Hardware through VA-API; the program exits when no device can encode.
    Vaapi,
}

impl EncoderBackend {
    pub fn name(self) -> &'static str {
        match self {
            EncoderBackend::Auto => "auto",
            EncoderBackend::X264 => "x264",
            EncoderBackend::Vaapi => "vaapi",
        }
    }
}

/// H.264 profiles browsers decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// 42e0xx-compatible: no CABAC, no B-frames; every WebRTC H.264 decoder takes it.
    #[default]
    ConstrainedBaseline,
    /// CABAC: ~10-15 % fewer bits at equal quality; Chromium and Firefox decode it.
    Main,
}

/// Rate control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RateControl {
    /// Constant bitrate: average = cap = the target, one-frame VBV.
    #[default]
    Cbr,
    /// Constant quality (CRF) capped at the target bitrate with a one-frame VBV: static content costs less.
    Vbr,
}

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderSettings {
    /// Visible size (may be odd: H.264 4:2:0 cannot signal odd sizes, so the stream is the padded even size).
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub rate_control: RateControl,
    /// Encoder threads; 0 = automatic.
    pub threads: u32,
    pub profile: Profile,
    /// Periodic intra refresh instead of big IDR frames after the first (smoother bitrate).
    pub intra_refresh: bool,
}

impl EncoderSettings {
    /// `frame` has the size this encoder was opened for.
    pub fn check_frame(&self, frame: &Nv12Frame) -> Result<(), EncodeError> {
        if (frame.width, frame.height) == (self.width, self.height) {
            return Ok(());
        }
        Err(EncodeError::SizeMismatch {
            got_w: frame.width,
            got_h: frame.height,
            want_w: self.width,
            want_h: self.height,
        })
    }

    /// The default bitrate for a size and rate: 0.07 bits per pixel per frame, clamped to 1–50 Mbit/s
    /// (1080p60 ≈ 8.7 Mbit/s, 4K30 ≈ 17 Mbit/s).
    pub fn auto_bitrate_kbps(width: u32, height: u32, fps: u32) -> u32 {
        let bits = f64::from(width) * f64::from(height) * f64::from(fps) * 0.07;
        ((bits / 1000.0) as u32).clamp(1000, 50_000)
    }
}

/// One encoded access unit, shared by every viewer without copying.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    /// H.264: an Annex-B access unit (SPS/PPS first when `idr`); VP8: one frame.
    pub data: Bytes,
    /// An IDR (H.264) or keyframe (VP8): a decoder can start here.
    pub idr: bool,
    /// When the source frame was captured.
    pub capture_ts: Instant,
    /// Sequence number of this encoder's output, from 0.
    pub seq: u64,
    /// Coded size (even).
    pub width: u32,
    pub height: u32,
    pub codec: Codec,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot open the H.264 encoder: {0}")]
    Open(String),
    #[error("frame is {got_w}x{got_h} but the encoder was opened for {want_w}x{want_h}")]
    SizeMismatch { got_w: u32, got_h: u32, want_w: u32, want_h: u32 },
    #[error("the encoder failed a frame (code {0})")]
    Encode(i32),
    #[error("the encoder produced no output for a frame")]
    NoOutput,
    #[error("cannot change encoder settings (code {0})")]
    Reconfig(i32),
    #[error("invalid encoder setting: {0}")]
    Invalid(String),
}

/// A video encoder.
pub trait Encoder: std::fmt::Debug {
    /// Encode one frame; `force_idr` (or a pending [`Encoder::request_keyframe`]) makes it an IDR.
    fn encode(&mut self, frame: &Nv12Frame, capture_ts: Instant, force_idr: bool) -> Result<EncodedFrame, EncodeError>;
    /// Change the target bitrate without restarting.
    fn set_bitrate(&mut self, kbps: u32) -> Result<(), EncodeError>;
    /// Make the next frame an IDR.
    fn request_keyframe(&mut self);
    fn settings(&self) -> &EncoderSettings;
    /// Which encoder this is ("x264", "vaapi", "libvpx"), for the log and `status`.
    fn backend(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_bitrate_scales_with_pixels_and_rate() {
        assert_eq!(EncoderSettings::auto_bitrate_kbps(1920, 1080, 60), 8709);
        assert_eq!(EncoderSettings::auto_bitrate_kbps(3840, 2160, 30), 17418);
        assert_eq!(EncoderSettings::auto_bitrate_kbps(64, 64, 1), 1000);
        assert_eq!(EncoderSettings::auto_bitrate_kbps(7680, 4320, 240), 50_000);
    }
}

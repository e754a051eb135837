//! The media stage: RGB frame → NV12 (converter) → H.264 (encoder). It owns the persistent NV12 picture
//! (damage-aware conversion updates it in place) and reopens the encoder when the frame size changes, so a
//! mode change mid-stream continues at the new size starting with an IDR.
//!
//! Today it runs on the capture thread for `capture --encode`; the streaming pipeline moves it to its own
//! thread behind a latest-frame-wins slot.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::convert::Converter;
use crate::encode::x264::X264Encoder;
use crate::encode::{EncodedFrame, Encoder};
use crate::frame::{Damage, FrameLayout, Nv12Frame};

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("colour conversion: {0}")]
    Convert(#[from] crate::convert::ConvertError),
    #[error(transparent)]
    Encode(#[from] crate::encode::EncodeError),
}

/// Per-frame cost of the stage.
#[derive(Debug, Clone, Copy)]
pub struct StageTimes {
    pub convert: Duration,
    pub encode: Duration,
}

/// Converter + encoder + the persistent NV12 frame.
#[derive(Debug)]
pub struct MediaStage {
    cfg: Config,
    converter: Converter,
    nv12: Nv12Frame,
    encoder: Option<X264Encoder>,
}

impl MediaStage {
    pub fn new(cfg: &Config) -> MediaStage {
        MediaStage { cfg: cfg.clone(), converter: Converter::cpu(), nv12: Nv12Frame::new(2, 2), encoder: None }
    }

    /// Convert the damaged part of `pixels` and encode the frame.
    pub fn process(
        &mut self,
        pixels: &[u8],
        layout: &FrameLayout,
        y_invert: bool,
        damage: &Damage,
        capture_ts: Instant,
        force_idr: bool,
    ) -> Result<(EncodedFrame, StageTimes), MediaError> {
        let resized = (self.nv12.width, self.nv12.height) != (layout.width, layout.height);
        let damage = if resized { &Damage::Full } else { damage };
        let t0 = Instant::now();
        self.converter.convert(pixels, layout, y_invert, damage, &mut self.nv12)?;
        let t1 = Instant::now();
        let encoder = match &mut self.encoder {
            Some(e) if (e.settings().width, e.settings().height) == (layout.width, layout.height) => e,
            slot => {
                let settings = self.cfg.encoder_settings(layout.width, layout.height);
                tracing::info!(
                    width = layout.width,
                    height = layout.height,
                    kbps = settings.bitrate_kbps,
                    "opening x264"
                );
                slot.insert(X264Encoder::new(settings)?)
            }
        };
        let out = match encoder.encode(&self.nv12, capture_ts, force_idr) {
            Ok(out) => out,
            Err(e) => {
                // Recovery: the next frame opens a fresh encoder, whose first frame is an IDR.
                tracing::warn!("encoder failed ({e}); re-initialising it");
                self.encoder = None;
                return Err(e.into());
            }
        };
        let t2 = Instant::now();
        Ok((out, StageTimes { convert: t1 - t0, encode: t2 - t1 }))
    }

    /// Encode the last converted picture again as an IDR (a viewer needs a keyframe while the screen is
    /// static and no new frame comes). `None` before the first frame.
    pub fn reencode_idr(&mut self, capture_ts: Instant) -> Option<Result<EncodedFrame, MediaError>> {
        let encoder = self.encoder.as_mut()?;
        Some(encoder.encode(&self.nv12, capture_ts, true).map_err(MediaError::from))
    }

    pub fn encoder(&mut self) -> Option<&mut X264Encoder> {
        self.encoder.as_mut()
    }
}

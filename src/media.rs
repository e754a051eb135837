//! The media stages: RGB frame → NV12 (`ConvertStage`, on the capture thread) and NV12 → H.264
//! (`EncodeStage`, on the media thread), joined by a latest-frame-wins [`LatestSlot`]: a picture the encoder
//! has not taken when the next one is ready is dropped (and counted), never queued.
//!
//! `ConvertStage` owns the persistent NV12 picture (damage-aware conversion updates it in place) and hands out
//! copies; `EncodeStage` reopens the encoder when the size changes (mode change: the first frame at the new size
//! is an IDR) and re-initialises it after an error. `MediaStage` chains both on one thread for
//! `capture --encode`.

use std::sync::{Condvar, Mutex};
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

/// Per-frame cost of the stages.
#[derive(Debug, Clone, Copy)]
pub struct StageTimes {
    pub convert: Duration,
    pub encode: Duration,
}

/// A converted picture on its way to the encoder.
#[derive(Debug, Clone)]
pub struct Picture {
    pub nv12: Nv12Frame,
    /// When the source frame was captured.
    pub capture_ts: Instant,
}

/// Latest-value-wins handoff between two threads.
#[derive(Debug)]
pub struct LatestSlot<T> {
    value: Mutex<Option<T>>,
    ready: Condvar,
}

impl<T> Default for LatestSlot<T> {
    fn default() -> Self {
        LatestSlot::new()
    }
}

impl<T> LatestSlot<T> {
    pub fn new() -> LatestSlot<T> {
        LatestSlot { value: Mutex::new(None), ready: Condvar::new() }
    }

    /// Offer a value; returns the stale one it replaced (the consumer never saw it), if any.
    pub fn put(&self, v: T) -> Option<T> {
        let old = self.value.lock().ok().and_then(|mut slot| slot.replace(v));
        self.ready.notify_one();
        old
    }

    /// Take the newest value, waiting up to `timeout` for one.
    pub fn take_timeout(&self, timeout: Duration) -> Option<T> {
        let guard = self.value.lock().ok()?;
        let (mut guard, _) = self.ready.wait_timeout_while(guard, timeout, |v| v.is_none()).ok()?;
        guard.take()
    }
}

/// The capture → media handoff of NV12 pictures: latest wins, and pictures circulate (the media thread gives
/// them back), so steady state allocates nothing.
#[derive(Debug, Default)]
pub struct PictureSlot {
    slot: LatestSlot<Picture>,
    spare: Mutex<Vec<Picture>>,
}

/// Pictures kept for reuse (one in the slot, one being encoded, one kept for keyframe re-encodes).
const SPARE_PICTURES: usize = 3;

impl PictureSlot {
    /// Capture thread: offer a copy of `nv12`. True when an older picture was still waiting (it is dropped).
    pub fn offer(&self, nv12: &Nv12Frame, capture_ts: Instant) -> bool {
        let spare = self.spare.lock().ok().and_then(|mut s| s.pop());
        let pic = match spare {
            Some(mut p) => {
                p.nv12.copy_from(nv12);
                p.capture_ts = capture_ts;
                p
            }
            None => Picture { nv12: nv12.clone(), capture_ts },
        };
        match self.slot.put(pic) {
            Some(stale) => {
                self.recycle(stale);
                true
            }
            None => false,
        }
    }

    /// Media thread: the newest picture, waiting up to `timeout`.
    pub fn take(&self, timeout: Duration) -> Option<Picture> {
        self.slot.take_timeout(timeout)
    }

    /// Give a picture back for reuse.
    pub fn recycle(&self, p: Picture) {
        if let Ok(mut s) = self.spare.lock()
            && s.len() < SPARE_PICTURES
        {
            s.push(p);
        }
    }
}

/// RGB → NV12 with a persistent picture.
#[derive(Debug)]
pub struct ConvertStage {
    converter: Converter,
    nv12: Nv12Frame,
}

impl Default for ConvertStage {
    /// A CPU converter.
    fn default() -> Self {
        ConvertStage { converter: Converter::cpu(), nv12: Nv12Frame::new(2, 2) }
    }
}

impl ConvertStage {
    /// The converter `choice` asks for (CPU when Vulkan is unavailable; see [`Converter::from_choice`]).
    pub fn new(choice: crate::convert::ConvertChoice) -> ConvertStage {
        ConvertStage { converter: Converter::from_choice(choice), nv12: Nv12Frame::new(2, 2) }
    }

    /// Which converter runs ("cpu" or "vulkan").
    pub fn converter_name(&self) -> &'static str {
        self.converter.name()
    }

    /// Convert the damaged part of `pixels` into the persistent picture (everything after a size change).
    pub fn convert(
        &mut self,
        pixels: &[u8],
        layout: &FrameLayout,
        y_invert: bool,
        damage: &Damage,
    ) -> Result<Duration, MediaError> {
        let resized = (self.nv12.width, self.nv12.height) != (layout.width, layout.height);
        let damage = if resized { &Damage::Full } else { damage };
        let t0 = Instant::now();
        self.converter.convert(pixels, layout, y_invert, damage, &mut self.nv12)?;
        Ok(t0.elapsed())
    }

    pub fn picture(&self) -> &Nv12Frame {
        &self.nv12
    }
}

/// NV12 → H.264, reopening the encoder on size change and after errors.
#[derive(Debug)]
pub struct EncodeStage {
    cfg: Config,
    encoder: Option<X264Encoder>,
    /// Bitrate requested by the bitrate controller (`None`: the configured one).
    target_kbps: Option<u32>,
}

impl EncodeStage {
    pub fn new(cfg: &Config) -> EncodeStage {
        EncodeStage { cfg: cfg.clone(), encoder: None, target_kbps: None }
    }

    /// The configured bitrate for pictures of this size (the most the controller may ask for).
    pub fn ceiling_kbps(&self, width: u32, height: u32) -> u32 {
        self.cfg.encoder_settings(width, height).bitrate_kbps
    }

    /// Encode at `kbps` from the next frame on (live reconfiguration, no new IDR).
    pub fn set_bitrate(&mut self, kbps: u32) {
        self.target_kbps = Some(kbps.max(1));
    }

    pub fn encode(
        &mut self,
        nv12: &Nv12Frame,
        capture_ts: Instant,
        force_idr: bool,
    ) -> Result<(EncodedFrame, Duration), MediaError> {
        let t0 = Instant::now();
        let encoder = match &mut self.encoder {
            Some(e) if (e.settings().width, e.settings().height) == (nv12.width, nv12.height) => e,
            slot => {
                let mut settings = self.cfg.encoder_settings(nv12.width, nv12.height);
                if let Some(kbps) = self.target_kbps {
                    settings.bitrate_kbps = settings.bitrate_kbps.min(kbps);
                }
                tracing::info!(width = nv12.width, height = nv12.height, kbps = settings.bitrate_kbps, "opening x264");
                slot.insert(X264Encoder::new(settings)?)
            }
        };
        if let Some(kbps) = self.target_kbps
            && kbps != encoder.settings().bitrate_kbps
        {
            tracing::debug!(from = encoder.settings().bitrate_kbps, to = kbps, "encoder bitrate");
            if let Err(e) = encoder.set_bitrate(kbps) {
                tracing::warn!("could not change the bitrate to {kbps} kbit/s: {e}");
                self.target_kbps = Some(encoder.settings().bitrate_kbps);
            }
        }
        match encoder.encode(nv12, capture_ts, force_idr) {
            Ok(out) => Ok((out, t0.elapsed())),
            Err(e) => {
                // Recovery: the next frame opens a fresh encoder, whose first frame is an IDR.
                tracing::warn!("encoder failed ({e}); re-initialising it");
                self.encoder = None;
                Err(e.into())
            }
        }
    }
}

/// Convert + encode on one thread (`capture --encode`).
#[derive(Debug)]
pub struct MediaStage {
    convert: ConvertStage,
    encode: EncodeStage,
}

impl MediaStage {
    pub fn new(cfg: &Config) -> MediaStage {
        MediaStage { convert: ConvertStage::new(cfg.convert), encode: EncodeStage::new(cfg) }
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
        let convert = self.convert.convert(pixels, layout, y_invert, damage)?;
        let (out, encode) = self.encode.encode(self.convert.picture(), capture_ts, force_idr)?;
        Ok((out, StageTimes { convert, encode }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_value_wins_and_stale_values_are_returned() {
        let slot = LatestSlot::new();
        assert_eq!(slot.take_timeout(Duration::from_millis(1)), None);
        assert_eq!(slot.put(1), None);
        assert_eq!(slot.put(2), Some(1), "1 was never taken: it is stale");
        assert_eq!(slot.take_timeout(Duration::from_millis(1)), Some(2));
        assert_eq!(slot.take_timeout(Duration::from_millis(1)), None);
    }

    #[test]
    fn take_wakes_when_a_value_arrives() {
        let slot = std::sync::Arc::new(LatestSlot::new());
        let s2 = std::sync::Arc::clone(&slot);
        let t = std::thread::spawn(move || s2.take_timeout(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        slot.put(7);
        assert_eq!(t.join().expect("join"), Some(7));
    }
}

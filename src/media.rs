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

use crate::buffer::FrameBuffer;
use crate::config::Config;
use crate::convert::Converter;
use crate::encode::x264::X264Encoder;
use crate::encode::{Codec, EncodeError, EncodedFrame, Encoder, EncoderSettings};
use crate::frame::{Damage, FrameLayout, Nv12Frame};

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("colour conversion: {0}")]
    Convert(#[from] crate::convert::ConvertError),
    #[error(transparent)]
    Encode(#[from] crate::encode::EncodeError),
    #[error("reading the captured buffer: {0}")]
    Buffer(String),
}

/// Per-frame cost of the stages.
#[derive(Debug, Clone, Copy)]
pub struct StageTimes {
    pub convert: Duration,
    pub encode: Duration,
}

/// A converted picture on its way to the encoder. Pictures circulate (capture → media → back to the pool), so
/// each remembers which conversion it holds: the next conversion into it redoes only what changed since.
#[derive(Debug, Clone)]
pub struct Picture {
    pub nv12: Nv12Frame,
    /// When the source frame was captured.
    pub capture_ts: Instant,
    /// (converter stage, conversion number) of the content; `None`: nothing yet.
    content: Option<(u64, u64)>,
}

impl Picture {
    /// A picture with no content yet (the first conversion into it converts everything).
    pub fn empty() -> Picture {
        Picture { nv12: Nv12Frame::new(2, 2), capture_ts: Instant::now(), content: None }
    }
}

/// Latest-value-wins handoff between two threads.
#[derive(Debug)]
pub(crate) struct LatestSlot<T> {
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
    pub(crate) fn take_timeout(&self, timeout: Duration) -> Option<T> {
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
    /// Capture thread: a picture to convert the next frame into (a recycled one when there is one).
    pub fn spare(&self) -> Picture {
        self.spare.lock().ok().and_then(|mut s| s.pop()).unwrap_or_else(Picture::empty)
    }

    /// Capture thread: hand `pic` over (moved, not copied). True when an older picture was still waiting
    /// (it is dropped back into the pool).
    pub fn offer(&self, pic: Picture) -> bool {
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

/// Conversions whose damage is remembered for pooled pictures (a picture older than that is converted whole).
const DAMAGE_HISTORY: usize = 8;

/// Distinguishes converter stages, so a pooled picture from an earlier capture session is never taken for
/// one of this stage's conversions.
static NEXT_STAGE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// RGB → NV12, into its own persistent picture (`convert`) or into pooled pictures (`convert_into`), converting
/// only what the damage says changed.
#[derive(Debug)]
pub struct ConvertStage {
    converter: Converter,
    id: u64,
    /// Conversions so far, and the damage of the last `DAMAGE_HISTORY` of them (same frame size).
    conversions: u64,
    damage_log: std::collections::VecDeque<(u64, Damage)>,
    size: (u32, u32),
    /// A dmabuf import failed once: map buffers from then on.
    import_failed: bool,
    /// How the last frame was read (see `read_path`).
    last_read: Option<&'static str>,
    /// Frames of a rotated output are turned upright (into `upright`) before conversion.
    rotation: crate::frame::Rotation,
    upright: Vec<u8>,
    nv12: Nv12Frame,
}

impl Default for ConvertStage {
    /// A CPU converter.
    fn default() -> Self {
        ConvertStage::with_converter(Converter::cpu())
    }
}

impl ConvertStage {
    /// The converter `choice` asks for (CPU when Vulkan is unavailable; see [`Converter::from_choice`]).
    pub fn new(choice: crate::convert::ConvertChoice) -> ConvertStage {
        ConvertStage::with_converter(Converter::from_choice(choice))
    }

    fn with_converter(converter: Converter) -> ConvertStage {
        ConvertStage {
            converter,
            id: NEXT_STAGE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            conversions: 0,
            damage_log: std::collections::VecDeque::new(),
            size: (0, 0),
            import_failed: false,
            last_read: None,
            rotation: crate::frame::Rotation::None,
            upright: Vec::new(),
            nv12: Nv12Frame::new(2, 2),
        }
    }

    /// Convert a frame into `pic`, a pooled picture that may hold an older conversion of this stage: the
    /// damage of every frame since then is converted (all of it when that is no longer known, the picture is
    /// new or the size changed). No copy between pictures: each is brought up to date in place.
    pub fn convert_into(
        &mut self,
        pixels: &[u8],
        layout: &FrameLayout,
        y_invert: bool,
        damage: &Damage,
        pic: &mut Picture,
    ) -> Result<Duration, MediaError> {
        if self.rotation != crate::frame::Rotation::None {
            return self.convert_upright(pixels, layout, y_invert, pic);
        }
        let needed = self.damage_for(layout, damage, pic);
        let t0 = Instant::now();
        let r = self.converter.convert(pixels, layout, y_invert, &needed, &mut pic.nv12);
        self.converted(pic, r.is_ok());
        r?;
        Ok(t0.elapsed())
    }

    /// Convert the frame in `buffer` into `pic` (damage as for [`ConvertStage::convert_into`]), reading it
    /// the way this converter reads best: a dmabuf that the Vulkan converter can import is read in place by
    /// the GPU (no CPU mapping, no upload); anything else is mapped and converted from memory. An import
    /// that fails is logged once and the buffer is mapped from then on.
    pub fn convert_buffer(
        &mut self,
        buffer: &mut FrameBuffer,
        layout: &FrameLayout,
        y_invert: bool,
        damage: &Damage,
        pic: &mut Picture,
    ) -> Result<Duration, MediaError> {
        if self.rotation != crate::frame::Rotation::None {
            self.last_read = Some("map");
            let r = buffer
                .with_pixels(|data, stride| {
                    let layout = FrameLayout { stride, ..*layout };
                    self.convert_upright(data, &layout, y_invert, pic)
                })
                .map_err(|e| MediaError::Buffer(e.to_string()))?;
            return r;
        }
        let mut needed = self.damage_for(layout, damage, pic);
        let t0 = Instant::now();
        let is_dmabuf = matches!(buffer, FrameBuffer::Dmabuf(_));
        if read_path(is_dmabuf, self.converter.imports_dmabuf(), self.import_failed) == ReadPath::Import
            && let FrameBuffer::Dmabuf(d) = &*buffer
        {
            let r = d.plane().map_err(|e| e.to_string()).and_then(|plane| {
                self.converter
                    .convert_dmabuf(&plane, layout, y_invert, &needed, &mut pic.nv12)
                    .map_err(|e| e.to_string())
            });
            match r {
                Ok(()) => {
                    self.converted(pic, true);
                    self.last_read = Some("gpu-import");
                    return Ok(t0.elapsed());
                }
                Err(e) => {
                    tracing::info!("reading the dmabuf in place failed ({e}); mapping it from now on");
                    self.import_failed = true;
                    // What a failed import left in the picture is unknown: convert all of it.
                    needed = Damage::Full;
                }
            }
        }
        self.last_read = Some("map");
        let converter = &mut self.converter;
        let r = buffer
            .with_pixels(|data, stride| {
                converter.convert(data, &FrameLayout { stride, ..*layout }, y_invert, &needed, &mut pic.nv12)
            })
            .map_err(|e| MediaError::Buffer(e.to_string()))?;
        self.converted(pic, r.is_ok());
        r?;
        Ok(t0.elapsed())
    }

    /// What to convert into `pic` for this frame: the damage since its content, or everything.
    fn damage_for(&mut self, layout: &FrameLayout, damage: &Damage, pic: &Picture) -> Damage {
        if self.size != (layout.width, layout.height) {
            self.size = (layout.width, layout.height);
            self.damage_log.clear();
        }
        self.conversions += 1;
        self.damage_log.push_back((self.conversions, damage.clone()));
        if self.damage_log.len() > DAMAGE_HISTORY {
            self.damage_log.pop_front();
        }
        let held = match pic.content {
            Some((stage, n)) if stage == self.id && (pic.nv12.width, pic.nv12.height) == self.size => Some(n),
            _ => None,
        };
        let oldest = self.damage_log.front().map_or(u64::MAX, |(n, _)| *n);
        match held {
            Some(n) if n + 1 >= oldest => union(self.damage_log.iter().filter(|(k, _)| *k > n).map(|(_, d)| d)),
            _ => Damage::Full,
        }
    }

    /// `pic` now holds this stage's latest conversion (or, after a failure, nothing known).
    fn converted(&self, pic: &mut Picture, ok: bool) {
        pic.content = ok.then_some((self.id, self.conversions));
    }

    /// Turn the frames of a rotated output upright before converting them (`Rotation::None`: as captured).
    pub fn set_rotation(&mut self, rotation: crate::frame::Rotation) {
        if rotation != self.rotation {
            tracing::info!(?rotation, "the output is rotated: frames are turned upright");
        }
        self.rotation = rotation;
    }

    /// Turn the frame upright (a full frame: damage is in buffer coordinates) and convert all of it.
    fn convert_upright(
        &mut self,
        pixels: &[u8],
        layout: &FrameLayout,
        y_invert: bool,
        pic: &mut Picture,
    ) -> Result<Duration, MediaError> {
        let t0 = Instant::now();
        let mut upright = std::mem::take(&mut self.upright);
        let turned = crate::frame::rotate(pixels, layout, y_invert, self.rotation, &mut upright)
            .map_err(|e| MediaError::Buffer(e.to_string()));
        let r = turned.and_then(|l| {
            self.damage_for(&l, &Damage::Full, pic);
            self.converter.convert(&upright, &l, false, &Damage::Full, &mut pic.nv12).map_err(MediaError::from)
        });
        self.upright = upright;
        self.converted(pic, r.is_ok());
        r?;
        Ok(t0.elapsed())
    }

    /// Which converter runs ("cpu" or "vulkan").
    pub fn converter_name(&self) -> &'static str {
        self.converter.name()
    }

    /// How the last frame was read: "gpu-import" (a dmabuf read in place by the GPU) or "map" (pixels in
    /// memory: shm, a mapped dmabuf, a PipeWire copy).
    pub fn read_path(&self) -> &'static str {
        self.last_read.unwrap_or("map")
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

/// How a consumer reads a captured buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadPath {
    /// The GPU reads the dmabuf in place.
    Import,
    /// Map it (shm is memory already) and convert from memory.
    Map,
}

fn read_path(is_dmabuf: bool, converter_imports: bool, import_failed: bool) -> ReadPath {
    if is_dmabuf && converter_imports && !import_failed { ReadPath::Import } else { ReadPath::Map }
}

/// The union of several frames' damage.
fn union<'a>(damages: impl Iterator<Item = &'a Damage>) -> Damage {
    let mut rects = Vec::new();
    for d in damages {
        match d {
            Damage::Full => return Damage::Full,
            Damage::Rects(r) => rects.extend_from_slice(r),
        }
    }
    Damage::Rects(rects)
}

/// Why a build without the `vaapi` feature has no VA-API.
pub const NO_VAAPI_BUILD: &str = "this build has no VA-API support (built without the `vaapi` feature)";

/// Decide the H.264 encoder once, at start: `auto` becomes `vaapi` (with the render node that can encode) or
/// `x264`, with one log line saying which and why; `vaapi` without a device that can encode is an error that
/// says why.
pub fn resolve_h264_encoder(e: &mut crate::config::EncoderConfig) -> Result<(), String> {
    use crate::encode::EncoderBackend;
    if e.backend == EncoderBackend::X264 {
        tracing::info!("H.264 encoder: x264 (--encoder x264)");
        return Ok(());
    }
    #[cfg(feature = "vaapi")]
    let probed = crate::encode::vaapi::probe(e.vaapi_device.as_deref()).map_err(|err| err.to_string());
    #[cfg(not(feature = "vaapi"))]
    let probed: Result<std::convert::Infallible, String> = Err(NO_VAAPI_BUILD.to_owned());
    match (e.backend, probed) {
        #[cfg(feature = "vaapi")]
        (_, Ok(d)) => {
            tracing::info!("H.264 encoder: VA-API on {} ({})", d.path.display(), d.vendor);
            e.backend = EncoderBackend::Vaapi;
            e.vaapi_device = Some(d.path);
            Ok(())
        }
        (EncoderBackend::Vaapi, Err(why)) => Err(format!("--encoder vaapi: {why}")),
        (_, Err(why)) => {
            tracing::info!("H.264 encoder: x264 (VA-API unavailable: {why})");
            e.backend = EncoderBackend::X264;
            Ok(())
        }
    }
}

/// Open the encoder of `codec`: for H.264, VA-API on `vaapi` (a render node) when given, else x264.
pub fn open_encoder(
    codec: Codec,
    settings: EncoderSettings,
    vaapi: Option<&std::path::Path>,
) -> Result<Box<dyn Encoder + Send>, EncodeError> {
    Ok(match (codec, vaapi) {
        #[cfg(feature = "vaapi")]
        (Codec::H264, Some(device)) => Box::new(crate::encode::vaapi::VaapiEncoder::new(device, settings)?),
        #[cfg(not(feature = "vaapi"))]
        (Codec::H264, Some(_)) => return Err(EncodeError::Open(NO_VAAPI_BUILD.to_owned())),
        (Codec::H264, None) => Box::new(X264Encoder::new(settings)?),
        (Codec::Vp8, _) => Box::new(crate::encode::vp8::Vp8Encoder::new(settings)?),
    })
}

/// How long after a VA-API failure a second one makes the stage give up on VA-API for the rest of the run.
const VAAPI_RETRY_WINDOW: Duration = Duration::from_secs(10);

/// NV12 → one codec, reopening the encoder on size change and after errors, closing it on request (when the
/// codec's last viewer left).
#[derive(Debug)]
pub struct EncodeStage {
    codec: Codec,
    cfg: Config,
    /// The open encoder: the stage holds it by the `Encoder` trait.
    encoder: Option<Box<dyn Encoder + Send>>,
    /// Bitrate requested by the bitrate controller (`None`: the configured one).
    target_kbps: Option<u32>,
    /// H.264 on VA-API: the render node, until VA-API failed twice within `VAAPI_RETRY_WINDOW` (then x264).
    vaapi: Option<std::path::PathBuf>,
    /// When VA-API last failed (open or encode).
    vaapi_failed_at: Option<Instant>,
}

impl EncodeStage {
    pub fn new(cfg: &Config, codec: Codec) -> EncodeStage {
        let vaapi = match (codec, cfg.encoder.backend) {
            (Codec::H264, crate::encode::EncoderBackend::Vaapi) => cfg.encoder.vaapi_device.clone(),
            _ => None,
        };
        EncodeStage { codec, cfg: cfg.clone(), encoder: None, target_kbps: None, vaapi, vaapi_failed_at: None }
    }

    /// The open encoder ("x264", "vaapi", "libvpx"), if one is open.
    pub fn backend(&self) -> Option<&'static str> {
        self.encoder.as_ref().map(|e| e.backend())
    }

    /// VA-API failed (to open or mid-stream): the next frame re-initialises it, unless it already failed
    /// within the retry window: then H.264 is x264 from now on. Either way the next frame is an IDR from a
    /// fresh encoder, so viewers keep decoding.
    fn vaapi_failed(&mut self, why: &EncodeError) {
        let Some(device) = &self.vaapi else { return };
        let now = Instant::now();
        if self.vaapi_failed_at.is_some_and(|t| now.duration_since(t) < VAAPI_RETRY_WINDOW) {
            tracing::error!(
                "VA-API on {} failed again ({why}); H.264 is encoded with x264 from now on",
                device.display()
            );
            self.vaapi = None;
        } else {
            tracing::warn!("VA-API on {} failed ({why}); re-initialising it", device.display());
        }
        self.vaapi_failed_at = Some(now);
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Whether an encoder is open now.
    pub fn is_open(&self) -> bool {
        self.encoder.is_some()
    }

    /// Close the encoder (nobody watches this codec); the next `encode` opens a fresh one. True if one was open.
    pub fn close(&mut self) -> bool {
        self.target_kbps = None;
        self.encoder.take().is_some()
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
        let fits = self.encoder.as_ref().is_some_and(|e| e.settings().check_frame(nv12).is_ok());
        if !fits {
            self.encoder = None;
            let mut settings = self.cfg.encoder_settings(nv12.width, nv12.height);
            if let Some(kbps) = self.target_kbps {
                settings.bitrate_kbps = settings.bitrate_kbps.min(kbps);
            }
            let name = if self.vaapi.is_some() { "the VA-API H.264 encoder" } else { self.codec.encoder_name() };
            tracing::info!(width = nv12.width, height = nv12.height, kbps = settings.bitrate_kbps, "opening {name}");
            let opened = match open_encoder(self.codec, settings, self.vaapi.as_deref()) {
                Err(e) if self.vaapi.is_some() => {
                    self.vaapi_failed(&e);
                    if self.vaapi.is_some() {
                        // Another try is allowed: this frame is lost, the next one re-initialises.
                        return Err(e.into());
                    }
                    open_encoder(self.codec, settings, None)?
                }
                other => other?,
            };
            self.encoder = Some(opened);
        }
        // Open now (just above, or from an earlier frame).
        let Some(encoder) = self.encoder.as_mut() else { return Err(EncodeError::NoOutput.into()) };
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
                let was_vaapi = encoder.backend() == "vaapi";
                self.encoder = None;
                if was_vaapi {
                    self.vaapi_failed(&e);
                } else {
                    tracing::warn!("encoder failed ({e}); re-initialising it");
                }
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
        MediaStage { convert: ConvertStage::new(cfg.convert), encode: EncodeStage::new(cfg, Codec::H264) }
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

    /// Frames converted with their damage into three pictures in turn (as the capture → media pool does)
    /// equal the same frames converted whole, every time.
    #[test]
    fn pooled_pictures_converted_by_accumulated_damage_match_full_conversions() {
        use crate::frame::{PixelFormat, Rect};
        let (w, h) = (96u32, 64u32);
        let layout = FrameLayout { width: w, height: h, stride: w * 4, format: PixelFormat::Xrgb8888 };
        let mut rgb = vec![0u8; (w * h * 4) as usize];
        let mut lcg = crate::synthetic::Lcg(7);
        lcg.fill(&mut rgb);
        let mut stage = ConvertStage::with_converter(Converter::cpu());
        let mut full = ConvertStage::with_converter(Converter::cpu());
        let mut pool = [Picture::empty(), Picture::empty(), Picture::empty()];
        for i in 0..40u32 {
            let damage = if i == 0 {
                Damage::Full
            } else {
                let r = Rect::new((i * 13) % (w - 16), (i * 7) % (h - 16), 16, 16);
                lcg.scribble(&mut rgb, &layout, false, r);
                Damage::Rects(vec![r])
            };
            // Every 10th frame a picture from the pool skips its turn (held by the media thread longer).
            let pic = &mut pool[(i as usize * 7 / 5) % 3];
            stage.convert_into(&rgb, &layout, false, &damage, pic).expect("convert into pooled");
            full.convert(&rgb, &layout, false, &Damage::Full).expect("convert whole");
            assert!(pic.nv12 == *full.picture(), "frame {i}: the pooled picture differs from a full conversion");
        }
        // From another stage (a new capture session), a picture is converted whole.
        let mut other = ConvertStage::with_converter(Converter::cpu());
        let pic = &mut pool[0];
        other.convert_into(&rgb, &layout, false, &Damage::Rects(vec![]), pic).expect("convert");
        assert!(pic.nv12 == *full.picture());
    }

    #[test]
    fn a_dmabuf_is_imported_only_by_a_converter_that_can_and_only_until_an_import_fails() {
        assert_eq!(read_path(true, true, false), ReadPath::Import);
        assert_eq!(read_path(true, true, true), ReadPath::Map, "after a failed import");
        assert_eq!(read_path(true, false, false), ReadPath::Map, "CPU converter, or no import on the device");
        assert_eq!(read_path(false, true, false), ReadPath::Map, "shm is read from memory");
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

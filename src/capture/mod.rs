//! Capture sources. The capture thread owns the Wayland connection; a source hands out one frame at a time
//! (pixels stay in the source's reused buffer until the next call).
//!
//! Sources: `ext-image-copy` (ext-image-copy-capture-v1, [`image_copy`]) and `screencopy` (wlr-screencopy v3,
//! [`screencopy`]), both behind the one [`Capture`] enum the pipeline uses; `auto` picks the best one the
//! compositor offers. `pipewire` ([`pipewire`], with [`portal`] for the xdg-desktop-portal ScreenCast
//! session) takes frames from a PipeWire video node: the portal's, or one named with `--pipewire-node`; `auto`
//! falls back to it when the compositor offers neither Wayland protocol.
//! Both Wayland sources keep their buffer in [`buffers::CaptureBuffers`] (shm, or dmabuf where possible).

pub mod buffers;
pub mod image_copy;
pub mod pipewire;
pub mod portal;
pub mod screencopy;
pub mod synthetic;
pub mod wayland;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

pub use crate::config::CursorMode;
use crate::config::SourceKind;
use crate::cursor::CursorState;
use crate::frame::{Damage, FrameInfo, FrameLayout, PixelFormat, Rect};
use image_copy::ImageCopyCapture;
use pipewire::{PipewireCapture, PipewireOptions};
use screencopy::ScreencopyCapture;
use wayland::{OutputDesc, WlSession};

/// The protocol state the capture sources keep on their Wayland queue (see `wayland::WlState`).
#[derive(Debug, Default)]
pub struct CaptureEvents {
    screencopy: screencopy::ScreencopyEvents,
    image_copy: image_copy::ImageCopyEvents,
}

impl screencopy::ScreencopyHandler for CaptureEvents {
    fn screencopy_events(&mut self) -> &mut screencopy::ScreencopyEvents {
        &mut self.screencopy
    }
}

impl image_copy::ImageCopyHandler for CaptureEvents {
    fn image_copy_events(&mut self) -> &mut image_copy::ImageCopyEvents {
        &mut self.image_copy
    }
}

/// A Wayland session of a capture source.
pub type CaptureSession = WlSession<CaptureEvents>;

/// The outputs of `session`, each with the capture sources it can be captured with.
pub fn describe_outputs<X: 'static>(session: &WlSession<X>) -> Vec<OutputDesc> {
    let mut sources = Vec::new();
    if image_copy::offered(session) {
        sources.push("ext-image-copy");
    }
    if screencopy::offered(session) {
        sources.push("screencopy");
    }
    session.outputs().into_iter().map(|(_, d)| OutputDesc { sources: sources.clone(), ..d }).collect()
}

/// Consecutive failed frames after which capture gives up.
pub(crate) const MAX_CONSECUTIVE_FAILURES: u32 = 50;
/// Pause after a failed frame before asking again.
pub(crate) const FAILURE_BACKOFF: Duration = Duration::from_millis(20);

/// The `FrameInfo` of a frame that just became ready in a buffer of `layout` (`None`: no buffer, an empty
/// layout). `rects`: the compositor's damage in buffer coordinates (clipped here, and flipped into display
/// orientation when `y_invert`), or `None` when the frame must count as fully damaged.
pub(crate) fn ready_frame_info(
    layout: Option<FrameLayout>,
    y_invert: bool,
    rects: Option<Vec<Rect>>,
    requested_at: Instant,
    presented: Option<Duration>,
    seq: u64,
) -> FrameInfo {
    let layout = layout.unwrap_or(FrameLayout { width: 0, height: 0, stride: 0, format: PixelFormat::Xrgb8888 });
    let damage = match rects {
        Some(rects) => {
            let flip =
                |r: Rect| if y_invert { Rect { y: layout.height.saturating_sub(r.y + r.height), ..r } } else { r };
            Damage::Rects(rects.into_iter().filter_map(|r| r.clip(layout.width, layout.height)).map(flip).collect())
        }
        None => Damage::Full,
    };
    FrameInfo {
        layout,
        y_invert,
        damage,
        requested_at,
        ready_at: Instant::now(),
        presented,
        age: presented.map(|p| crate::frame::monotonic_now().saturating_sub(p)),
        seq,
    }
}

/// Counters of one capture session.
#[derive(Debug, Default, Clone, Copy)]
pub struct CaptureCounters {
    /// Buffers allocated (1 in steady state; +1 per size or format change).
    pub buffer_allocations: u64,
    /// Frames the compositor failed.
    pub failed_frames: u64,
}

/// Errors of any capture source. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "no Wayland display: WAYLAND_DISPLAY is not set. Run wl-webrtc inside a Wayland session (Sway, Hyprland, …), \
         or start a private headless desktop: `wl-webrtc --headless 1920x1080`"
    )]
    NoDisplay,
    #[error(
        "cannot connect to the Wayland display at {path}: {source}. Is the compositor running? \
         Without one, use `wl-webrtc --headless 1920x1080`"
    )]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    MissingGlobal(String),
    #[error("no output named {name:?}; available outputs: {}", list_or_none(.available))]
    UnknownOutput { name: String, available: Vec<String> },
    #[error("the compositor has no outputs")]
    NoOutputs,
    #[error("output {0} disappeared")]
    OutputGone(String),
    #[error("the compositor went away: {0}")]
    CompositorGone(String),
    #[error("the compositor has not read our requests for {0:?} (its socket stayed full)")]
    Stalled(std::time::Duration),
    #[error("Wayland protocol error: {0}")]
    Protocol(String),
    #[error("capture buffer: {0}")]
    Buffer(#[from] crate::buffer::BufferError),
    #[error("the compositor failed {0} frames in a row; giving up")]
    RepeatedFailures(u32),
    #[error(
        "the compositor stopped capturing {0} (the output went away or capture was revoked); \
         capture is retried while the server runs"
    )]
    SessionStopped(String),
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Pipewire(#[from] pipewire::PipewireError),
    #[error(transparent)]
    Portal(#[from] portal::PortalError),
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() { "(none)".to_owned() } else { names.join(", ") }
}

/// The source actually used after `auto` is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedSource {
    Screencopy,
    ExtImageCopy,
    Pipewire,
}

impl ResolvedSource {
    /// The `--source` value naming it.
    pub const fn name(self) -> &'static str {
        match self {
            ResolvedSource::Screencopy => "screencopy",
            ResolvedSource::ExtImageCopy => "ext-image-copy",
            ResolvedSource::Pipewire => "pipewire",
        }
    }
}

/// Resolve `--source` against what the compositor offers. `auto`: ext-image-copy-capture, else wlr-screencopy,
/// else PipeWire through the portal.
pub(crate) fn resolve_source(
    kind: SourceKind,
    offers_ext_image_copy: bool,
    offers_screencopy: bool,
) -> Result<ResolvedSource, CaptureError> {
    match kind {
        SourceKind::Screencopy if offers_screencopy => Ok(ResolvedSource::Screencopy),
        SourceKind::Screencopy => Err(CaptureError::MissingGlobal(
            "the compositor does not offer wlr-screencopy (zwlr_screencopy_manager_v1); try --source ext-image-copy"
                .into(),
        )),
        SourceKind::ExtImageCopy if offers_ext_image_copy => Ok(ResolvedSource::ExtImageCopy),
        SourceKind::ExtImageCopy => Err(CaptureError::MissingGlobal(
            "the compositor does not offer ext-image-copy-capture (ext_image_copy_capture_manager_v1 and \
             ext_output_image_capture_source_manager_v1); try --source screencopy"
                .into(),
        )),
        SourceKind::Auto if offers_ext_image_copy => Ok(ResolvedSource::ExtImageCopy),
        SourceKind::Auto if offers_screencopy => Ok(ResolvedSource::Screencopy),
        SourceKind::Auto | SourceKind::Pipewire => Ok(ResolvedSource::Pipewire),
    }
}

/// The capture source the pipeline uses, whichever protocol is behind it. Closed set, picked once at start.
#[derive(Debug)]
pub enum Capture {
    // Boxed: both are large (sessions, buffers, Wayland state) and moved between threads whole.
    Screencopy(Box<ScreencopyCapture>),
    ImageCopy(Box<ImageCopyCapture>),
    /// A PipeWire node (the portal's or a direct one); no Wayland connection.
    PipeWire(Box<PipewireCapture>),
}

impl Capture {
    /// Connect to the compositor at `socket` and open `source` (resolved against what it offers) on `output`
    /// (the first output when `None`).
    pub fn open(
        socket: &Path,
        source: SourceKind,
        output: Option<&str>,
        cursor: CursorMode,
    ) -> Result<Capture, CaptureError> {
        Capture::open_with(socket, source, output, cursor, &PipewireOptions::default())
    }

    /// [`Capture::open`] with PipeWire settings: `--source pipewire` (or a `pipewire.node`) never touches the
    /// compositor; `auto` tries the portal when the compositor offers neither Wayland protocol.
    pub fn open_with(
        socket: &Path,
        source: SourceKind,
        output: Option<&str>,
        cursor: CursorMode,
        pw: &PipewireOptions,
    ) -> Result<Capture, CaptureError> {
        if source == SourceKind::Pipewire || (pw.node.is_some() && source == SourceKind::Auto) {
            return Ok(Capture::PipeWire(Box::new(PipewireCapture::open(pw, cursor)?)));
        }
        let session = CaptureSession::connect(socket)?;
        let resolved = resolve_source(source, image_copy::offered(&session), screencopy::offered(&session))?;
        match resolved {
            ResolvedSource::Screencopy => {
                let mut cap = ScreencopyCapture::new(session, output)?;
                cap.set_cursor_mode(cursor);
                Ok(Capture::Screencopy(Box::new(cap)))
            }
            ResolvedSource::ExtImageCopy => {
                Ok(Capture::ImageCopy(Box::new(ImageCopyCapture::new(session, output, cursor)?)))
            }
            ResolvedSource::Pipewire => {
                drop(session);
                tracing::info!("the compositor offers no Wayland capture protocol: trying the ScreenCast portal");
                Ok(Capture::PipeWire(Box::new(PipewireCapture::open(pw, cursor)?)))
            }
        }
    }

    /// Which protocol this is.
    pub fn source(&self) -> ResolvedSource {
        match self {
            Capture::Screencopy(_) => ResolvedSource::Screencopy,
            Capture::ImageCopy(_) => ResolvedSource::ExtImageCopy,
            Capture::PipeWire(_) => ResolvedSource::Pipewire,
        }
    }

    /// The output as it was when capture started.
    pub fn output(&self) -> &OutputDesc {
        match self {
            Capture::Screencopy(c) => c.output(),
            Capture::ImageCopy(c) => c.output(),
            Capture::PipeWire(c) => c.output(),
        }
    }

    pub fn counters(&self) -> CaptureCounters {
        match self {
            Capture::Screencopy(c) => c.counters(),
            Capture::ImageCopy(c) => c.counters(),
            Capture::PipeWire(c) => c.counters(),
        }
    }

    /// "shm" or "dmabuf", once the first frame has arrived.
    pub fn buffer_kind(&self) -> Option<&'static str> {
        match self {
            Capture::Screencopy(c) => c.buffer_kind(),
            Capture::ImageCopy(c) => c.buffer_kind(),
            Capture::PipeWire(c) => c.buffer_kind(),
        }
    }

    /// Wait up to `timeout` for the next changed frame (`Ok(None)`: none in time, or `stop` was set).
    pub fn next_frame(&mut self, timeout: Duration, stop: &AtomicBool) -> Result<Option<FrameInfo>, CaptureError> {
        match self {
            Capture::Screencopy(c) => c.next_frame(timeout, stop),
            Capture::ImageCopy(c) => c.next_frame(timeout, stop),
            Capture::PipeWire(c) => c.next_frame(timeout, stop),
        }
    }

    /// Read pending events without asking for a frame: notices a vanished compositor, output or session.
    pub fn check_alive(&mut self) -> Result<(), CaptureError> {
        match self {
            Capture::Screencopy(c) => c.check_alive(),
            Capture::ImageCopy(c) => c.check_alive(),
            Capture::PipeWire(c) => c.check_alive(),
        }
    }

    /// The Wayland buffer the last frame is in (shm or dmabuf), for a reader that chooses how to read it;
    /// `None` for PipeWire (whose frames are copied out of its buffers on its own thread: read them with
    /// [`Capture::with_pixels`]).
    pub fn frame_buffer(&mut self) -> Option<&mut crate::buffer::FrameBuffer> {
        match self {
            Capture::Screencopy(c) => c.frame_buffer(),
            Capture::ImageCopy(c) => c.frame_buffer(),
            Capture::PipeWire(_) => None,
        }
    }

    /// Run `f(data, stride)` over the pixels of the last frame.
    pub fn with_pixels<R>(&mut self, f: impl FnOnce(&[u8], u32) -> R) -> Result<R, CaptureError> {
        match self {
            Capture::Screencopy(c) => c.with_pixels(f),
            Capture::ImageCopy(c) => c.with_pixels(f),
            Capture::PipeWire(c) => c.with_pixels(f),
        }
    }

    /// The cursor as metadata (`--cursor metadata` on a source that has it), else `None`.
    pub fn cursor(&self) -> Option<&CursorState> {
        match self {
            Capture::Screencopy(_) => None,
            Capture::ImageCopy(c) => c.cursor(),
            Capture::PipeWire(c) => c.cursor(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_prefers_ext_image_copy_then_screencopy() {
        assert_eq!(resolve_source(SourceKind::Auto, true, true).ok(), Some(ResolvedSource::ExtImageCopy));
        assert_eq!(resolve_source(SourceKind::Auto, false, true).ok(), Some(ResolvedSource::Screencopy));
        assert_eq!(resolve_source(SourceKind::Auto, false, false).ok(), Some(ResolvedSource::Pipewire));
        assert!(resolve_source(SourceKind::Screencopy, true, false).is_err());
        assert_eq!(resolve_source(SourceKind::Screencopy, true, true).ok(), Some(ResolvedSource::Screencopy));
        assert_eq!(resolve_source(SourceKind::ExtImageCopy, true, false).ok(), Some(ResolvedSource::ExtImageCopy));
        let missing = resolve_source(SourceKind::ExtImageCopy, false, true).expect_err("not offered");
        assert!(missing.to_string().contains("--source screencopy"), "{missing}");
        assert_eq!(resolve_source(SourceKind::Pipewire, true, true).ok(), Some(ResolvedSource::Pipewire));
    }

    #[test]
    fn unknown_output_lists_the_others() {
        let e = CaptureError::UnknownOutput { name: "DP-9".into(), available: vec!["DP-1".into(), "HDMI-A-1".into()] };
        assert_eq!(e.to_string(), "no output named \"DP-9\"; available outputs: DP-1, HDMI-A-1");
    }
}

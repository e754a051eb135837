//! ext-image-copy-capture-v1 capture of one output (with ext-output-image-capture-source-manager-v1 for the
//! source), optionally with the pointer cursor as metadata through a cursor session.
//!
//! The protocol is two nested negotiations, both pure and tested here without a compositor:
//! - a *session* announces buffer constraints in batches (`buffer_size`, `shm_format`*, `dmabuf_device`?,
//!   `dmabuf_format`*, then `done`), again whenever they change, and may `stop` ([`ConstraintsMachine`]);
//! - each *frame* (one at a time per session) is created, given a buffer and its damage, captured once, and
//!   answered by `transform`/`damage`/`presentation_time` then `ready`, or by `failed(reason)`
//!   ([`FrameMachine`]).
//!
//! [`ImageCopyCapture`] drives them over the real connection: one buffer reused while the constraints allow
//! (shm, or a GBM dmabuf with one of the offered modifiers: [`super::buffers::CaptureBuffers`], shared with
//! screencopy), `failed(buffer_constraints)` → new buffer for the latest constraints and retry, session
//! `stopped` or `failed(stopped)` → [`CaptureError::SessionStopped`] (the caller may reopen). A frame is
//! captured only when the output changed (the compositor holds `capture` until then, except for a session's
//! first frame), so a static screen costs nothing. Frames into a fresh buffer (or after a failure) report
//! `Damage::Full`; otherwise the compositor's damage since the last ready frame, which is exactly what changed
//! in our buffer since we never write to it.
//!
//! Cursor (`--cursor`): `embedded` sets `paint_cursors` on the session; `hidden` does not; `metadata` does not
//! either, and opens `create_pointer_cursor_session` for the first seat's pointer: position and hotspot come as
//! events, the cursor image through the cursor's own capture session (a small shm buffer), all kept in a
//! [`CursorState`].

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use smithay_client_toolkit::dispatch2::Dispatch2;
use wayland_client::protocol::wl_output::WlOutput;
use wayland_client::protocol::wl_pointer::{self, WlPointer};
use wayland_client::protocol::wl_seat::{self, WlSeat};
use wayland_client::{Connection, Proxy, QueueHandle, WEnum};
use wayland_protocols::ext::image_capture_source::v1::client::{
    ext_image_capture_source_v1::ExtImageCaptureSourceV1,
    ext_output_image_capture_source_manager_v1::ExtOutputImageCaptureSourceManagerV1,
};
use wayland_protocols::ext::image_copy_capture::v1::client::{
    ext_image_copy_capture_cursor_session_v1::{self, ExtImageCopyCaptureCursorSessionV1},
    ext_image_copy_capture_frame_v1::{self, ExtImageCopyCaptureFrameV1},
    ext_image_copy_capture_manager_v1::{self, ExtImageCopyCaptureManagerV1},
    ext_image_copy_capture_session_v1::{self, ExtImageCopyCaptureSessionV1},
};

use super::CaptureSession;
use super::buffers::{CaptureBuffers, DmabufWant};
use super::wayland::{OutputDesc, WlSession, WlState};
use super::{CaptureCounters, CaptureError, CursorMode, FAILURE_BACKOFF, MAX_CONSECUTIVE_FAILURES};
use crate::buffer::FrameBuffer;
use crate::buffer::dmabuf::{self, DmabufOffer};
use crate::cursor::{CursorEvent, CursorImage, CursorState};
use crate::frame::{FrameInfo, FrameLayout, PixelFormat, Rect};

/// wl_output.transform values that matter here.
const TRANSFORM_NORMAL: u32 = 0;
const TRANSFORM_FLIPPED_180: u32 = 6;

/// After `failed(buffer_constraints)` with no new constraints yet, how long to wait for them before retrying
/// with a fresh buffer for the constraints we have.
const CONSTRAINTS_GRACE: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------------------------
// Sans-IO: session constraints.

/// A session event, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    BufferSize {
        width: u32,
        height: u32,
    },
    ShmFormat(u32),
    /// `dev_t` of the DRM node dmabufs must be allocated on.
    DmabufDevice(u64),
    DmabufFormat {
        fourcc: u32,
        modifiers: Vec<u64>,
    },
    Done,
    Stopped,
}

/// One complete batch of buffer constraints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Constraints {
    pub width: u32,
    pub height: u32,
    /// wl_shm format codes, in the compositor's order.
    pub shm_formats: Vec<u32>,
    pub dmabuf_device: Option<u64>,
    /// DRM fourcc and allowed modifiers, in the compositor's order.
    pub dmabuf_formats: Vec<(u32, Vec<u64>)>,
}

impl Constraints {
    /// An shm buffer that satisfies the constraints: the first offered format wl-webrtc can read, rows packed.
    pub fn shm_layout(&self) -> Result<FrameLayout, CaptureError> {
        if self.width == 0 || self.height == 0 {
            return Err(CaptureError::Protocol(format!(
                "ext-image-copy buffer size {}x{} is empty",
                self.width, self.height
            )));
        }
        self.shm_formats
            .iter()
            .find_map(|&code| {
                let format = PixelFormat::from_wl_shm(code)?;
                let stride = self.width.checked_mul(format.bytes_per_pixel() as u32)?;
                Some(FrameLayout { width: self.width, height: self.height, stride, format })
            })
            .ok_or_else(|| {
                let codes: Vec<String> = self.shm_formats.iter().map(|c| format!("{c:#x}")).collect();
                CaptureError::Unsupported(format!(
                    "the compositor offers ext-image-copy only in shm formats wl-webrtc cannot read: [{}]",
                    codes.join(", ")
                ))
            })
    }

    /// The dmabuf to ask for: the first offered format wl-webrtc can read, with its modifiers.
    pub(crate) fn dmabuf_want(&self) -> Option<DmabufWant> {
        if self.width == 0 || self.height == 0 {
            return None;
        }
        self.dmabuf_formats.iter().find(|(fourcc, _)| PixelFormat::from_drm_fourcc(*fourcc).is_some()).map(
            |(fourcc, modifiers)| DmabufWant {
                offer: DmabufOffer { fourcc: *fourcc, width: self.width, height: self.height },
                modifiers: modifiers.clone(),
            },
        )
    }
}

/// What a session event means for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStep {
    Nothing,
    /// A batch ended with `done`: these are the constraints from now on.
    Constraints(Constraints),
    /// The session is over.
    Stopped,
}

/// Collects constraint batches; knows the latest complete one.
#[derive(Debug, Default)]
pub struct ConstraintsMachine {
    /// The batch being received (a constraint event after `done` starts a new one).
    pending: Option<Constraints>,
    current: Option<Constraints>,
    /// Complete batches received (0: none yet).
    generation: u64,
    stopped: bool,
}

impl ConstraintsMachine {
    pub fn on_event(&mut self, ev: SessionEvent) -> SessionStep {
        if self.stopped {
            return SessionStep::Nothing;
        }
        let pending = || Constraints::default();
        match ev {
            SessionEvent::BufferSize { width, height } => {
                let p = self.pending.get_or_insert_with(pending);
                (p.width, p.height) = (width, height);
            }
            SessionEvent::ShmFormat(code) => self.pending.get_or_insert_with(pending).shm_formats.push(code),
            SessionEvent::DmabufDevice(dev) => self.pending.get_or_insert_with(pending).dmabuf_device = Some(dev),
            SessionEvent::DmabufFormat { fourcc, modifiers } => {
                self.pending.get_or_insert_with(pending).dmabuf_formats.push((fourcc, modifiers));
            }
            SessionEvent::Done => {
                // A `done` with no constraint events before it repeats the last batch.
                let batch = self.pending.take().or_else(|| self.current.clone()).unwrap_or_default();
                self.current = Some(batch.clone());
                self.generation += 1;
                return SessionStep::Constraints(batch);
            }
            SessionEvent::Stopped => {
                self.stopped = true;
                return SessionStep::Stopped;
            }
        }
        SessionStep::Nothing
    }

    pub fn current(&self) -> Option<&Constraints> {
        self.current.as_ref()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }
}

// ---------------------------------------------------------------------------------------------------------
// Sans-IO: one frame.

/// Why the compositor failed a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// A runtime error; retry.
    Unknown,
    /// The buffer does not match the latest constraints: reallocate and retry.
    BufferConstraints,
    /// The session stopped.
    Stopped,
}

/// A frame event, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameEvent {
    /// wl_output.transform value.
    Transform(u32),
    Damage(Rect),
    /// CLOCK_MONOTONIC.
    PresentationTime(Duration),
    Ready,
    Failed(FailureReason),
}

/// What a ready frame carries besides its pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameMeta {
    pub transform: u32,
    /// Damage since the previous ready frame of the session, in buffer coordinates.
    pub damage: Vec<Rect>,
    pub presented: Option<Duration>,
}

/// What the driver must do after a frame event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameStep {
    Nothing,
    Ready(FrameMeta),
    Failed(FailureReason),
}

/// One captured frame: metadata collected until `ready`, or `failed`. Anything after the end is ignored.
#[derive(Debug)]
pub struct FrameMachine {
    meta: Option<FrameMeta>,
}

impl Default for FrameMachine {
    fn default() -> Self {
        FrameMachine::new()
    }
}

impl FrameMachine {
    /// A frame whose `capture` request has been sent.
    pub fn new() -> FrameMachine {
        FrameMachine { meta: Some(FrameMeta { transform: TRANSFORM_NORMAL, damage: Vec::new(), presented: None }) }
    }

    pub fn on_event(&mut self, ev: FrameEvent) -> FrameStep {
        let Some(meta) = self.meta.as_mut() else {
            tracing::trace!(?ev, "ext-image-copy frame event after the end ignored");
            return FrameStep::Nothing;
        };
        match ev {
            FrameEvent::Transform(t) => meta.transform = t,
            FrameEvent::Damage(r) => meta.damage.push(r),
            FrameEvent::PresentationTime(t) => meta.presented = Some(t),
            FrameEvent::Ready => return self.meta.take().map_or(FrameStep::Nothing, FrameStep::Ready),
            FrameEvent::Failed(reason) => {
                self.meta = None;
                return FrameStep::Failed(reason);
            }
        }
        FrameStep::Nothing
    }

    pub fn finished(&self) -> bool {
        self.meta.is_none()
    }
}

/// A damage rectangle from protocol integers: negative origins clipped to 0, empty ones dropped.
pub(crate) fn damage_rect(x: i32, y: i32, width: i32, height: i32) -> Option<Rect> {
    let (x1, y1) = (x.saturating_add(width), y.saturating_add(height));
    let (x0, y0) = (x.max(0), y.max(0));
    (x1 > x0 && y1 > y0).then(|| Rect::new(x0 as u32, y0 as u32, (x1 - x0) as u32, (y1 - y0) as u32))
}

// ---------------------------------------------------------------------------------------------------------
// Sans-IO: cursor metadata.

// ---------------------------------------------------------------------------------------------------------
// Events as they come off the wire, tagged with the object they belong to.

/// An ext-image-copy event with the protocol id of its session or frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaggedEvent {
    Session(u32, SessionEvent),
    Frame(u32, FrameEvent),
    Cursor(CursorEvent),
    /// wl_seat capabilities: whether the seat has a pointer.
    SeatPointer(bool),
}

/// Events received for ext-image-copy objects since the driver last looked.
#[derive(Debug, Default)]
pub struct ImageCopyEvents {
    events: Vec<TaggedEvent>,
}

/// The registry name of ext-image-copy-capture's manager.
pub const IFACE: &str = "ext_image_copy_capture_manager_v1";
/// Capturing an output also needs a source for it.
pub(crate) const OUTPUT_SOURCE_IFACE: &str = "ext_output_image_capture_source_manager_v1";

/// Whether ext-image-copy-capture of outputs is possible (the capture manager and the output source manager
/// are both offered).
pub fn offered<X: 'static>(session: &WlSession<X>) -> bool {
    session.has_global(IFACE) && session.has_global(OUTPUT_SOURCE_IFACE)
}

/// What a queue's state gives ext-image-copy: the place its events are stored.
pub trait ImageCopyHandler {
    fn image_copy_events(&mut self) -> &mut ImageCopyEvents;
}

// ---------------------------------------------------------------------------------------------------------
// The driver.

/// Where a session's frame negotiation stands.
#[derive(Debug)]
enum Phase {
    /// No usable constraints yet (or after `failed(buffer_constraints)`: until new ones or `until`).
    AwaitingConstraints {
        until: Option<Instant>,
    },
    /// Constraints known, no frame in flight.
    Idle,
    Capturing {
        frame: ExtImageCopyCaptureFrameV1,
        machine: FrameMachine,
        requested_at: Instant,
        with_damage: bool,
    },
    Stopped,
}

/// What became of a session's frame.
#[derive(Debug)]
enum Outcome {
    Ready { meta: FrameMeta, requested_at: Instant, with_damage: bool },
    Failed(FailureReason),
}

/// One capture session (the output's or the cursor's): constraints, buffer, frame in flight.
struct SessionDriver {
    session: ExtImageCopyCaptureSessionV1,
    constraints: ConstraintsMachine,
    /// Created at the first constraints (their `dmabuf_device` picks the render node).
    buffers: Option<CaptureBuffers>,
    /// Whether dmabuf may be used (not for the cursor: a small shm copy is all it needs).
    allow_dmabuf: bool,
    /// Constraints generation the current buffer was allocated for.
    buffer_generation: u64,
    /// The buffer holds the session's last ready frame, so compositor damage describes every change.
    with_damage: bool,
    phase: Phase,
    consecutive_failures: u32,
    closed: bool,
}

impl SessionDriver {
    fn new(session: ExtImageCopyCaptureSessionV1, allow_dmabuf: bool) -> SessionDriver {
        SessionDriver {
            session,
            constraints: ConstraintsMachine::default(),
            buffers: None,
            allow_dmabuf,
            buffer_generation: 0,
            with_damage: false,
            phase: Phase::AwaitingConstraints { until: None },
            consecutive_failures: 0,
            closed: false,
        }
    }

    fn id(&self) -> u32 {
        self.session.id().protocol_id()
    }

    fn frame_id(&self) -> Option<u32> {
        match &self.phase {
            Phase::Capturing { frame, .. } => Some(frame.id().protocol_id()),
            _ => None,
        }
    }

    /// When the driver needs to act without an event (a constraints grace period ending).
    fn wake_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::AwaitingConstraints { until } => until,
            _ => None,
        }
    }

    /// Start a frame when nothing is in flight and constraints allow.
    fn kick(&mut self, wl: &CaptureSession) -> Result<(), CaptureError> {
        match self.phase {
            // The grace period after failed(buffer_constraints) is over: retry with what we have (below).
            Phase::AwaitingConstraints { until: Some(t) } if Instant::now() >= t => self.phase = Phase::Idle,
            Phase::Idle => {}
            _ => return Ok(()),
        }
        let Some(constraints) = self.constraints.current().cloned() else {
            self.phase = Phase::AwaitingConstraints { until: None };
            return Ok(());
        };
        let dmabuf = if self.allow_dmabuf { constraints.dmabuf_want() } else { None };
        let buffers = self.buffers.get_or_insert_with(|| {
            let node = constraints
                .dmabuf_device
                .and_then(|dev| dmabuf::render_node_for_device(std::path::Path::new(dmabuf::DRI_DIR), dev));
            CaptureBuffers::new(wl, node.as_deref())
        });
        if buffers.ensure(wl, constraints.shm_layout(), dmabuf.as_ref())? {
            self.with_damage = false;
            self.buffer_generation = self.constraints.generation();
        }
        let Some(buffer) = buffers.buffer() else {
            return Err(CaptureError::Unsupported("no capture buffer".into()));
        };
        let layout = buffer.layout();
        let frame = self.session.create_frame(&wl.handle(), ImageCopyData);
        frame.attach_buffer(buffer.wl_buffer());
        if !self.with_damage {
            // A buffer captured for the first time (or whose last capture failed) is damaged whole. Otherwise
            // it still holds the last ready frame untouched: no client damage, the compositor adds its own.
            frame.damage_buffer(0, 0, layout.width as i32, layout.height as i32);
        }
        frame.capture();
        self.phase = Phase::Capturing {
            frame,
            machine: FrameMachine::new(),
            requested_at: Instant::now(),
            with_damage: self.with_damage,
        };
        Ok(())
    }

    fn on_session_event(&mut self, ev: SessionEvent) {
        match self.constraints.on_event(ev) {
            SessionStep::Nothing => {}
            SessionStep::Constraints(c) => {
                tracing::debug!(session = self.id(), ?c, "ext-image-copy buffer constraints");
                if matches!(self.phase, Phase::AwaitingConstraints { .. }) {
                    self.phase = Phase::Idle;
                }
            }
            // The protocol asks the client to destroy a stopped session.
            SessionStep::Stopped => self.close(),
        }
    }

    fn on_frame_event(&mut self, ev: FrameEvent) -> Option<Outcome> {
        let Phase::Capturing { machine, .. } = &mut self.phase else { return None };
        let step = machine.on_event(ev);
        let (frame, requested_at, with_damage) =
            match std::mem::replace(&mut self.phase, Phase::AwaitingConstraints { until: None }) {
                Phase::Capturing { frame, requested_at, with_damage, machine } => {
                    if matches!(step, FrameStep::Nothing) {
                        self.phase = Phase::Capturing { frame, machine, requested_at, with_damage };
                        return None;
                    }
                    (frame, requested_at, with_damage)
                }
                other => {
                    self.phase = other;
                    return None;
                }
            };
        frame.destroy();
        match step {
            FrameStep::Nothing => None,
            FrameStep::Ready(meta) => {
                self.phase = Phase::Idle;
                self.with_damage = true;
                self.consecutive_failures = 0;
                Some(Outcome::Ready { meta, requested_at, with_damage })
            }
            FrameStep::Failed(reason) => {
                self.with_damage = false;
                self.consecutive_failures += 1;
                match reason {
                    FailureReason::Stopped => self.close(),
                    FailureReason::BufferConstraints => {
                        // New constraints either came already (newer generation: reallocate now) or are on
                        // their way; a compositor that never sends them gets a fresh buffer after a grace period.
                        if let Some(b) = self.buffers.as_mut() {
                            b.discard();
                        }
                        self.phase = if self.constraints.generation() > self.buffer_generation {
                            Phase::Idle
                        } else {
                            Phase::AwaitingConstraints { until: Some(Instant::now() + CONSTRAINTS_GRACE) }
                        };
                    }
                    FailureReason::Unknown => {
                        if let Some(b) = self.buffers.as_mut() {
                            b.copy_failed();
                        }
                        self.phase = Phase::Idle;
                    }
                }
                Some(Outcome::Failed(reason))
            }
        }
    }

    fn stop(&mut self) {
        if let Phase::Capturing { frame, .. } = std::mem::replace(&mut self.phase, Phase::Stopped) {
            frame.destroy();
        }
    }

    fn stopped(&self) -> bool {
        matches!(self.phase, Phase::Stopped)
    }

    /// Destroy the frame in flight and the session (once).
    fn close(&mut self) {
        self.stop();
        if !std::mem::replace(&mut self.closed, true) {
            self.session.destroy();
        }
    }
}

impl Drop for SessionDriver {
    fn drop(&mut self) {
        self.close();
    }
}

/// The cursor session and what it has told us.
struct CursorCapture {
    seat: WlSeat,
    pointer: WlPointer,
    cursor_session: ExtImageCopyCaptureCursorSessionV1,
    /// The cursor image's own capture session (`None` once it failed for good).
    images: Option<SessionDriver>,
    state: CursorState,
}

impl Drop for CursorCapture {
    fn drop(&mut self) {
        self.images = None;
        self.cursor_session.destroy();
        if self.pointer.version() >= 3 {
            self.pointer.release();
        }
        if self.seat.version() >= 5 {
            self.seat.release();
        }
    }
}

/// Capture of one output over ext-image-copy-capture-v1.
pub struct ImageCopyCapture {
    // Field order is drop order: sessions before the source and managers, the connection last.
    main: SessionDriver,
    cursor: Option<CursorCapture>,
    source: ExtImageCaptureSourceV1,
    manager: ExtImageCopyCaptureManagerV1,
    source_manager: ExtOutputImageCaptureSourceManagerV1,
    output_desc: OutputDesc,
    /// A frame that completed while nobody asked (during `check_alive`), handed out by the next `next_frame`.
    ready: Option<FrameInfo>,
    seq: u64,
    failed_frames: u64,
    last_transform: u32,
    session: CaptureSession,
}

impl std::fmt::Debug for ImageCopyCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageCopyCapture").field("output", &self.output_desc.name).finish_non_exhaustive()
    }
}

impl ImageCopyCapture {
    /// Start capturing `output` (by name; the first output when `None`) of a connected session.
    pub fn new(
        mut session: CaptureSession,
        output: Option<&str>,
        cursor: CursorMode,
    ) -> Result<ImageCopyCapture, CaptureError> {
        let qh = session.handle();
        let missing = || {
            CaptureError::MissingGlobal(
                "the compositor does not offer ext-image-copy-capture (ext_image_copy_capture_manager_v1 and \
                 ext_output_image_capture_source_manager_v1); try --source screencopy"
                    .into(),
            )
        };
        let manager: ExtImageCopyCaptureManagerV1 =
            session.globals.bind(&qh, 1..=1, ImageCopyData).map_err(|_| missing())?;
        let source_manager: ExtOutputImageCaptureSourceManagerV1 =
            session.globals.bind(&qh, 1..=1, ImageCopyData).map_err(|_| missing())?;
        let (output, output_desc): (WlOutput, OutputDesc) = session.find_output(output)?;
        let source = source_manager.create_source(&output, &qh, ImageCopyData);
        let options = if cursor == CursorMode::Embedded {
            ext_image_copy_capture_manager_v1::Options::PaintCursors
        } else {
            ext_image_copy_capture_manager_v1::Options::empty()
        };
        let main = SessionDriver::new(manager.create_session(&source, options, &qh, ImageCopyData), true);
        let cursor = match cursor {
            CursorMode::Metadata => Some(open_cursor(&mut session, &manager, &source)?),
            _ => None,
        };
        tracing::info!(output = %output_desc.name, cursor_metadata = cursor.is_some(), "capturing with ext-image-copy-capture");
        Ok(ImageCopyCapture {
            main,
            cursor,
            source,
            manager,
            source_manager,
            output_desc,
            ready: None,
            seq: 0,
            failed_frames: 0,
            last_transform: TRANSFORM_NORMAL,
            session,
        })
    }

    /// The output as it was when capture started.
    pub fn output(&self) -> &OutputDesc {
        &self.output_desc
    }

    pub fn counters(&self) -> CaptureCounters {
        CaptureCounters {
            buffer_allocations: self.main.buffers.as_ref().map_or(0, CaptureBuffers::allocations),
            failed_frames: self.failed_frames,
        }
    }

    /// "shm" or "dmabuf", once the first buffer exists.
    pub fn buffer_kind(&self) -> Option<&'static str> {
        self.main.buffers.as_ref().and_then(CaptureBuffers::kind)
    }

    /// The latest buffer constraints of the output's session.
    pub fn constraints(&self) -> Option<&Constraints> {
        self.main.constraints.current()
    }

    /// The wl_output.transform of the last frame (frames are handed out as captured; only a vertical flip is
    /// undone, through `y_invert`).
    pub fn transform(&self) -> u32 {
        self.last_transform
    }

    /// The cursor metadata (`--cursor metadata` only).
    pub fn cursor(&self) -> Option<&CursorState> {
        self.cursor.as_ref().map(|c| &c.state)
    }

    /// Wait up to `timeout` for the next changed frame. `Ok(None)`: nothing changed in time, or `stop` was set
    /// (the frame stays in flight and the next call continues it). The pixels are read with
    /// [`ImageCopyCapture::with_pixels`] until the next call.
    pub fn next_frame(&mut self, timeout: Duration, stop: &AtomicBool) -> Result<Option<FrameInfo>, CaptureError> {
        if let Some(info) = self.ready.take() {
            return Ok(Some(info));
        }
        let deadline = Instant::now() + timeout;
        loop {
            if self.main.stopped() {
                return Err(CaptureError::SessionStopped(self.output_desc.name.clone()));
            }
            self.main.kick(&self.session)?;
            self.kick_cursor();
            let wake = [Some(deadline), self.main.wake_at(), self.cursor_wake_at()].into_iter().flatten().min();
            let until = wake.unwrap_or(deadline);
            let got =
                self.session.dispatch_until(until, stop, |st| Ok(!st.ext.image_copy_events().events.is_empty()))?;
            self.check_output()?;
            if got {
                if let Some(info) = self.process_events()? {
                    return Ok(Some(info));
                }
            } else if Instant::now() >= deadline || stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(None);
            }
        }
    }

    /// Read pending events without asking for a frame: notices a vanished compositor, output or session.
    pub fn check_alive(&mut self) -> Result<(), CaptureError> {
        let never = AtomicBool::new(false);
        self.session.dispatch_until(Instant::now() + Duration::from_millis(1), &never, |_| Ok(false))?;
        self.check_output()?;
        if let Some(info) = self.process_events()? {
            self.ready = Some(info);
        }
        if self.main.stopped() {
            return Err(CaptureError::SessionStopped(self.output_desc.name.clone()));
        }
        Ok(())
    }

    /// The buffer the last frame is in (its reader chooses how: map it, or import a dmabuf).
    pub fn frame_buffer(&mut self) -> Option<&mut FrameBuffer> {
        self.main.buffers.as_mut().and_then(CaptureBuffers::buffer_mut)
    }

    /// Run `f(data, stride)` over the pixels of the last frame.
    pub fn with_pixels<R>(&mut self, f: impl FnOnce(&[u8], u32) -> R) -> Result<R, CaptureError> {
        match self.main.buffers.as_mut() {
            Some(b) => b.with_pixels(f),
            None => Err(CaptureError::Unsupported("no frame captured yet".into())),
        }
    }

    fn check_output(&mut self) -> Result<(), CaptureError> {
        self.session.check_output(&self.output_desc.name)
    }

    /// Apply every queued event; a ready frame of the output comes back (at most one is in flight).
    fn process_events(&mut self) -> Result<Option<FrameInfo>, CaptureError> {
        let events = std::mem::take(&mut self.session.state.ext.image_copy_events().events);
        let mut ready = None;
        for ev in events {
            match ev {
                TaggedEvent::Session(id, e) if id == self.main.id() => self.main.on_session_event(e),
                TaggedEvent::Frame(id, e) if Some(id) == self.main.frame_id() => match self.main.on_frame_event(e) {
                    Some(Outcome::Ready { meta, requested_at, with_damage }) => {
                        ready = Some(self.finish_frame(meta, requested_at, with_damage));
                    }
                    Some(Outcome::Failed(reason)) => self.frame_failed(reason)?,
                    None => {}
                },
                TaggedEvent::Cursor(e) => {
                    if let Some(c) = self.cursor.as_mut() {
                        c.state.apply(e);
                    }
                }
                TaggedEvent::Session(id, e) => {
                    if let Some(images) = self.cursor.as_mut().and_then(|c| c.images.as_mut()).filter(|d| d.id() == id)
                    {
                        images.on_session_event(e);
                    }
                }
                TaggedEvent::Frame(id, e) => self.cursor_frame_event(id, e),
                TaggedEvent::SeatPointer(_) => {}
            }
        }
        Ok(ready)
    }

    fn finish_frame(&mut self, meta: FrameMeta, requested_at: Instant, with_damage: bool) -> FrameInfo {
        if meta.transform != self.last_transform && !matches!(meta.transform, TRANSFORM_NORMAL | TRANSFORM_FLIPPED_180)
        {
            tracing::warn!(transform = meta.transform, "frames arrive rotated/mirrored; they are streamed as captured");
        }
        self.last_transform = meta.transform;
        let info = super::ready_frame_info(
            self.main.buffers.as_ref().and_then(CaptureBuffers::buffer).map(FrameBuffer::layout),
            meta.transform == TRANSFORM_FLIPPED_180,
            with_damage.then_some(meta.damage),
            requested_at,
            meta.presented,
            self.seq,
        );
        self.seq += 1;
        info
    }

    fn frame_failed(&mut self, reason: FailureReason) -> Result<(), CaptureError> {
        self.failed_frames += 1;
        tracing::debug!(?reason, failures = self.main.consecutive_failures, "ext-image-copy frame failed");
        match reason {
            FailureReason::Stopped => return Err(CaptureError::SessionStopped(self.output_desc.name.clone())),
            _ if self.main.consecutive_failures >= MAX_CONSECUTIVE_FAILURES => {
                return Err(CaptureError::RepeatedFailures(self.main.consecutive_failures));
            }
            FailureReason::Unknown => std::thread::sleep(FAILURE_BACKOFF),
            FailureReason::BufferConstraints => {}
        }
        Ok(())
    }

    fn kick_cursor(&mut self) {
        let Some(images) = self.cursor.as_mut().and_then(|c| c.images.as_mut()) else { return };
        // The cursor session has no image while no cursor is over the output (size 0x0): nothing to capture
        // until new constraints come.
        if images.constraints.current().is_some_and(|c| c.shm_layout().is_err()) {
            if matches!(images.phase, Phase::AwaitingConstraints { .. } | Phase::Idle) {
                images.phase = Phase::AwaitingConstraints { until: None };
            }
            return;
        }
        if let Err(e) = images.kick(&self.session) {
            tracing::warn!("cursor image capture stopped: {e}");
            if let Some(c) = self.cursor.as_mut() {
                c.images = None;
            }
        }
    }

    fn cursor_wake_at(&self) -> Option<Instant> {
        self.cursor.as_ref().and_then(|c| c.images.as_ref()).and_then(SessionDriver::wake_at)
    }

    fn cursor_frame_event(&mut self, id: u32, ev: FrameEvent) {
        let Some(c) = self.cursor.as_mut() else { return };
        let Some(images) = c.images.as_mut().filter(|d| d.frame_id() == Some(id)) else { return };
        match images.on_frame_event(ev) {
            Some(Outcome::Ready { .. }) => {
                let layout = images.buffers.as_ref().and_then(CaptureBuffers::buffer).map(FrameBuffer::layout);
                let copied = images.buffers.as_mut().map(|b| b.with_pixels(|data, stride| (data.to_vec(), stride)));
                if let (Some(layout), Some(Ok((data, stride)))) = (layout, copied) {
                    c.state.image = Some(CursorImage {
                        width: layout.width,
                        height: layout.height,
                        format: layout.format,
                        stride,
                        data,
                    });
                    c.state.image_updates += 1;
                }
            }
            Some(Outcome::Failed(reason)) => {
                tracing::debug!(?reason, "cursor image frame failed");
                if images.stopped() || images.consecutive_failures >= MAX_CONSECUTIVE_FAILURES {
                    tracing::info!("the cursor image session ended; cursor position is still reported");
                    c.images = None;
                }
            }
            None => {}
        }
    }
}

/// Open the pointer cursor session for the first seat's pointer and its image capture session.
fn open_cursor(
    session: &mut CaptureSession,
    manager: &ExtImageCopyCaptureManagerV1,
    source: &ExtImageCaptureSourceV1,
) -> Result<CursorCapture, CaptureError> {
    let qh = session.handle();
    let seat: WlSeat = session.globals.bind(&qh, 1..=7, ImageCopyData).map_err(|_| {
        CaptureError::MissingGlobal("--cursor metadata needs a wl_seat, and the compositor offers none".into())
    })?;
    // The pointer may only be asked for once the seat said it has one.
    let never = AtomicBool::new(false);
    let mut has_pointer = None;
    session.dispatch_until(Instant::now() + Duration::from_secs(2), &never, |st| {
        st.ext.image_copy_events().events.retain(|e| match e {
            TaggedEvent::SeatPointer(p) => {
                has_pointer = Some(*p);
                false
            }
            _ => true,
        });
        Ok(has_pointer.is_some())
    })?;
    if has_pointer != Some(true) {
        return Err(CaptureError::Unsupported(
            "--cursor metadata: the compositor's seat has no pointer; use --cursor embedded or hidden".into(),
        ));
    }
    let pointer = seat.get_pointer(&qh, ImageCopyData);
    let cursor_session = manager.create_pointer_cursor_session(source, &pointer, &qh, ImageCopyData);
    let images = SessionDriver::new(cursor_session.get_capture_session(&qh, ImageCopyData), false);
    Ok(CursorCapture { seat, pointer, cursor_session, images: Some(images), state: CursorState::default() })
}

impl Drop for ImageCopyCapture {
    fn drop(&mut self) {
        self.cursor = None;
        self.main.close();
        self.source.destroy();
        self.manager.destroy();
        self.source_manager.destroy();
        let _ = self.session.conn.flush();
    }
}

// ---------------------------------------------------------------------------------------------------------
// Wire decoding.

/// User data of ext-image-copy protocol objects (and the seat/pointer the cursor session needs).
#[derive(Debug, Clone, Copy)]
pub struct ImageCopyData;

fn push<X: ImageCopyHandler>(state: &mut WlState<X>, ev: TaggedEvent) {
    state.ext.image_copy_events().events.push(ev);
}

/// Interfaces without events.
macro_rules! no_events {
    ($($iface:ty),*) => {$(
        impl<X: ImageCopyHandler + 'static> Dispatch2<$iface, WlState<X>> for ImageCopyData {
            fn event(&self, _: &mut WlState<X>, _: &$iface, _: <$iface as Proxy>::Event, _: &Connection, _: &QueueHandle<WlState<X>>) {}
        }
    )*};
}

no_events!(ExtImageCopyCaptureManagerV1, ExtOutputImageCaptureSourceManagerV1, ExtImageCaptureSourceV1);

/// Native-endian u64 values out of a protocol array (`dev_t` and modifiers are sent that way).
fn ne_u64s(bytes: &[u8]) -> Vec<u64> {
    bytes.chunks_exact(8).map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect()
}

impl<X: ImageCopyHandler + 'static> Dispatch2<ExtImageCopyCaptureSessionV1, WlState<X>> for ImageCopyData {
    fn event(
        &self,
        state: &mut WlState<X>,
        session: &ExtImageCopyCaptureSessionV1,
        event: ext_image_copy_capture_session_v1::Event,
        _: &Connection,
        _: &QueueHandle<WlState<X>>,
    ) {
        use ext_image_copy_capture_session_v1::Event as E;
        let ev = match event {
            E::BufferSize { width, height } => SessionEvent::BufferSize { width, height },
            E::ShmFormat { format } => SessionEvent::ShmFormat(match format {
                WEnum::Value(f) => f as u32,
                WEnum::Unknown(u) => u,
            }),
            E::DmabufDevice { device } => match ne_u64s(&device).first() {
                Some(&dev) => SessionEvent::DmabufDevice(dev),
                None => return,
            },
            E::DmabufFormat { format, modifiers } => {
                SessionEvent::DmabufFormat { fourcc: format, modifiers: ne_u64s(&modifiers) }
            }
            E::Done => SessionEvent::Done,
            E::Stopped => SessionEvent::Stopped,
            _ => return,
        };
        push(state, TaggedEvent::Session(session.id().protocol_id(), ev));
    }
}

impl<X: ImageCopyHandler + 'static> Dispatch2<ExtImageCopyCaptureFrameV1, WlState<X>> for ImageCopyData {
    fn event(
        &self,
        state: &mut WlState<X>,
        frame: &ExtImageCopyCaptureFrameV1,
        event: ext_image_copy_capture_frame_v1::Event,
        _: &Connection,
        _: &QueueHandle<WlState<X>>,
    ) {
        use ext_image_copy_capture_frame_v1::{Event as E, FailureReason as R};
        let ev = match event {
            E::Transform { transform } => FrameEvent::Transform(match transform {
                WEnum::Value(t) => t as u32,
                WEnum::Unknown(u) => u,
            }),
            E::Damage { x, y, width, height } => match damage_rect(x, y, width, height) {
                Some(r) => FrameEvent::Damage(r),
                None => return,
            },
            E::PresentationTime { tv_sec_hi, tv_sec_lo, tv_nsec } => {
                let secs = (u64::from(tv_sec_hi) << 32) | u64::from(tv_sec_lo);
                FrameEvent::PresentationTime(Duration::new(secs, tv_nsec.min(999_999_999)))
            }
            E::Ready => FrameEvent::Ready,
            E::Failed { reason } => FrameEvent::Failed(match reason {
                WEnum::Value(R::BufferConstraints) => FailureReason::BufferConstraints,
                WEnum::Value(R::Stopped) => FailureReason::Stopped,
                _ => FailureReason::Unknown,
            }),
            _ => return,
        };
        push(state, TaggedEvent::Frame(frame.id().protocol_id(), ev));
    }
}

impl<X: ImageCopyHandler + 'static> Dispatch2<ExtImageCopyCaptureCursorSessionV1, WlState<X>> for ImageCopyData {
    fn event(
        &self,
        state: &mut WlState<X>,
        _: &ExtImageCopyCaptureCursorSessionV1,
        event: ext_image_copy_capture_cursor_session_v1::Event,
        _: &Connection,
        _: &QueueHandle<WlState<X>>,
    ) {
        use ext_image_copy_capture_cursor_session_v1::Event as E;
        let ev = match event {
            E::Enter => CursorEvent::Enter,
            E::Leave => CursorEvent::Leave,
            E::Position { x, y } => CursorEvent::Position { x, y },
            E::Hotspot { x, y } => CursorEvent::Hotspot { x, y },
            _ => return,
        };
        push(state, TaggedEvent::Cursor(ev));
    }
}

impl<X: ImageCopyHandler + 'static> Dispatch2<WlSeat, WlState<X>> for ImageCopyData {
    fn event(
        &self,
        state: &mut WlState<X>,
        _: &WlSeat,
        event: wl_seat::Event,
        _: &Connection,
        _: &QueueHandle<WlState<X>>,
    ) {
        if let wl_seat::Event::Capabilities { capabilities } = event {
            let pointer = matches!(capabilities, WEnum::Value(c) if c.contains(wl_seat::Capability::Pointer));
            push(state, TaggedEvent::SeatPointer(pointer));
        }
    }
}

impl<X: ImageCopyHandler + 'static> Dispatch2<WlPointer, WlState<X>> for ImageCopyData {
    fn event(
        &self,
        _: &mut WlState<X>,
        _: &WlPointer,
        _: wl_pointer::Event,
        _: &Connection,
        _: &QueueHandle<WlState<X>>,
    ) {
        // The pointer only names whose cursor to capture; its input events are not ours to use.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(m: &mut ConstraintsMachine, w: u32, h: u32, formats: &[u32]) -> SessionStep {
        m.on_event(SessionEvent::BufferSize { width: w, height: h });
        for &f in formats {
            m.on_event(SessionEvent::ShmFormat(f));
        }
        m.on_event(SessionEvent::Done)
    }

    #[test]
    fn constraints_complete_at_done_and_are_replaced_by_the_next_batch() {
        let mut m = ConstraintsMachine::default();
        assert_eq!(m.on_event(SessionEvent::BufferSize { width: 64, height: 32 }), SessionStep::Nothing);
        assert_eq!(m.current(), None, "nothing usable before done");
        m.on_event(SessionEvent::ShmFormat(0xdead));
        m.on_event(SessionEvent::ShmFormat(1));
        let SessionStep::Constraints(c) = m.on_event(SessionEvent::Done) else { panic!("expected constraints") };
        assert_eq!((c.width, c.height, c.shm_formats.clone()), (64, 32, vec![0xdead, 1]));
        let layout = c.shm_layout().expect("XRGB8888 is readable");
        assert_eq!((layout.format, layout.stride), (PixelFormat::Xrgb8888, 256));
        assert_eq!(m.generation(), 1);
        // An update is a whole new batch, not an addition.
        let SessionStep::Constraints(c2) = batch(&mut m, 100, 50, &[PixelFormat::Xbgr8888.wl_shm_code()]) else {
            panic!("expected constraints")
        };
        assert_eq!((c2.width, c2.height), (100, 50));
        assert_eq!(c2.shm_layout().expect("layout").format, PixelFormat::Xbgr8888);
        assert_eq!(m.current(), Some(&c2));
        assert_eq!(m.generation(), 2);
    }

    #[test]
    fn stopped_ends_the_session_for_good() {
        let mut m = ConstraintsMachine::default();
        batch(&mut m, 8, 8, &[1]);
        assert_eq!(m.on_event(SessionEvent::Stopped), SessionStep::Stopped);
        assert!(m.stopped());
        assert_eq!(batch(&mut m, 16, 16, &[1]), SessionStep::Nothing, "nothing after stopped");
    }

    #[test]
    fn unreadable_or_empty_constraints_are_errors_that_name_the_formats() {
        let c = Constraints { width: 8, height: 8, shm_formats: vec![0xbeef], ..Default::default() };
        let e = c.shm_layout().expect_err("unknown format");
        assert!(e.to_string().contains("0xbeef"), "{e}");
        let c = Constraints { width: 0, height: 0, shm_formats: vec![1], ..Default::default() };
        assert!(c.shm_layout().is_err());
    }

    #[test]
    fn dmabuf_want_takes_the_first_readable_format_with_its_modifiers() {
        let xr24 = PixelFormat::Xrgb8888.drm_fourcc();
        let mut m = ConstraintsMachine::default();
        m.on_event(SessionEvent::BufferSize { width: 64, height: 64 });
        m.on_event(SessionEvent::DmabufDevice(0xe280));
        m.on_event(SessionEvent::DmabufFormat { fourcc: 0x1234_5678, modifiers: vec![7] });
        m.on_event(SessionEvent::DmabufFormat { fourcc: xr24, modifiers: vec![0, 0x0100_0000_0000_0001] });
        let SessionStep::Constraints(c) = m.on_event(SessionEvent::Done) else { panic!("expected constraints") };
        assert_eq!(c.dmabuf_device, Some(0xe280));
        let want = c.dmabuf_want().expect("a readable dmabuf format");
        assert_eq!(want.offer, DmabufOffer { fourcc: xr24, width: 64, height: 64 });
        assert_eq!(want.modifiers, vec![0, 0x0100_0000_0000_0001]);
        assert!(c.shm_layout().is_err(), "no shm format offered");
    }

    #[test]
    fn frame_collects_metadata_until_ready() {
        let mut f = FrameMachine::new();
        assert_eq!(f.on_event(FrameEvent::Transform(TRANSFORM_FLIPPED_180)), FrameStep::Nothing);
        assert_eq!(f.on_event(FrameEvent::Damage(Rect::new(1, 2, 3, 4))), FrameStep::Nothing);
        assert_eq!(f.on_event(FrameEvent::Damage(Rect::new(5, 6, 7, 8))), FrameStep::Nothing);
        let t = Duration::from_millis(1234);
        assert_eq!(f.on_event(FrameEvent::PresentationTime(t)), FrameStep::Nothing);
        assert_eq!(
            f.on_event(FrameEvent::Ready),
            FrameStep::Ready(FrameMeta {
                transform: TRANSFORM_FLIPPED_180,
                damage: vec![Rect::new(1, 2, 3, 4), Rect::new(5, 6, 7, 8)],
                presented: Some(t),
            })
        );
        assert!(f.finished());
        assert_eq!(f.on_event(FrameEvent::Ready), FrameStep::Nothing, "ignored after the end");
    }

    #[test]
    fn frame_failure_carries_its_reason() {
        for reason in [FailureReason::Unknown, FailureReason::BufferConstraints, FailureReason::Stopped] {
            let mut f = FrameMachine::new();
            f.on_event(FrameEvent::Damage(Rect::new(0, 0, 1, 1)));
            assert_eq!(f.on_event(FrameEvent::Failed(reason)), FrameStep::Failed(reason));
            assert_eq!(f.on_event(FrameEvent::Ready), FrameStep::Nothing);
        }
    }

    #[test]
    fn damage_rects_from_protocol_ints() {
        assert_eq!(damage_rect(1, 2, 3, 4), Some(Rect::new(1, 2, 3, 4)));
        assert_eq!(damage_rect(-5, -5, 10, 10), Some(Rect::new(0, 0, 5, 5)));
        assert_eq!(damage_rect(0, 0, 0, 10), None);
        assert_eq!(damage_rect(0, 0, -3, 10), None);
        assert_eq!(damage_rect(i32::MAX, 0, i32::MAX, 1), None);
    }

    #[test]
    fn cursor_state_follows_events() {
        let mut s = CursorState::default();
        s.apply(CursorEvent::Enter);
        s.apply(CursorEvent::Position { x: 100, y: -3 });
        s.apply(CursorEvent::Hotspot { x: 2, y: 1 });
        assert!(s.inside);
        assert_eq!((s.x, s.y, s.hotspot_x, s.hotspot_y, s.updates), (100, -3, 2, 1, 3));
        s.apply(CursorEvent::Leave);
        assert!(!s.inside);
    }

    #[test]
    fn native_u64_arrays() {
        let bytes: Vec<u8> = [1u64, 0xe280].iter().flat_map(|v| v.to_ne_bytes()).chain([9u8]).collect();
        assert_eq!(ne_u64s(&bytes), vec![1, 0xe280]);
    }
}

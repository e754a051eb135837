//! wlr-screencopy (zwlr_screencopy_manager_v1, v3) capture of one output.
//!
//! One frame is in flight at a time. Its negotiation is the pure [`FrameMachine`] (offers → copy → ready or
//! failed), tested without a compositor; [`ScreencopyCapture`] drives it over the real connection.
//! Every frame is `copy_with_damage`, which the compositor completes only when something changed (or at
//! once for a client it has not tracked yet), so a static screen costs nothing. The first frame into a
//! buffer (and the first after a failure or a size change) is reported as fully damaged.
//! Buffers are reused while the compositor asks for the same layout; a mode change mid-capture shows up as
//! new buffer parameters (or a failed copy), and capture continues at the new size.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use smithay_client_toolkit::dispatch2::Dispatch2;
use wayland_client::protocol::wl_output::WlOutput;
use wayland_client::{Connection, Proxy, QueueHandle, WEnum};
use wayland_protocols_wlr::screencopy::v1::client::{
    zwlr_screencopy_frame_v1::{self, ZwlrScreencopyFrameV1},
    zwlr_screencopy_manager_v1::{self, ZwlrScreencopyManagerV1},
};

pub use super::CaptureCounters;
use super::CaptureSession;
use super::buffers::{CaptureBuffers, DmabufWant};
use super::wayland::{OutputDesc, WlSession, WlState};
use super::{CaptureError, CursorMode};
use crate::buffer::FrameBuffer;
use crate::buffer::dmabuf::DmabufOffer;
use crate::frame::{FrameInfo, FrameLayout, PixelFormat, Rect};

use super::{FAILURE_BACKOFF, MAX_CONSECUTIVE_FAILURES};

/// A frame event, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameEvent {
    Buffer { shm_format: u32, width: u32, height: u32, stride: u32 },
    LinuxDmabuf(DmabufOffer),
    BufferDone,
    Flags { y_invert: bool },
    Damage(Rect),
    Ready { presented: Duration },
    Failed,
}

/// Events received for screencopy frames, tagged with the frame's protocol id.
#[derive(Debug, Default)]
pub struct ScreencopyEvents {
    events: Vec<(u32, FrameEvent)>,
}

/// The registry name of wlr-screencopy's manager.
pub const IFACE: &str = "zwlr_screencopy_manager_v1";

/// Whether the compositor offers wlr-screencopy.
pub fn offered<X: 'static>(session: &WlSession<X>) -> bool {
    session.has_global(IFACE)
}

/// What a queue's state gives screencopy: the place its events are stored.
pub trait ScreencopyHandler {
    fn screencopy_events(&mut self) -> &mut ScreencopyEvents;
}

/// An shm buffer the compositor offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmOffer {
    pub shm_format: u32,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
}

/// Every buffer type the compositor offered for one frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Offers {
    pub shm: Vec<ShmOffer>,
    pub dmabuf: Option<DmabufOffer>,
}

impl Offers {
    /// The first shm offer in a format we can read.
    pub fn shm_layout(&self) -> Result<FrameLayout, CaptureError> {
        self.shm
            .iter()
            .find_map(|o| {
                let format = PixelFormat::from_wl_shm(o.shm_format)?;
                let layout = FrameLayout { width: o.width, height: o.height, stride: o.stride, format };
                layout.is_consistent().then_some(layout)
            })
            .ok_or_else(|| {
                let codes: Vec<String> = self.shm.iter().map(|o| format!("{:#x}", o.shm_format)).collect();
                CaptureError::Unsupported(format!(
                    "the compositor offers screencopy only in shm formats wl-webrtc cannot read: [{}]",
                    codes.join(", ")
                ))
            })
    }
}

/// What the driver must do after an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Nothing,
    /// All offers are known: pick a buffer and send `copy`/`copy_with_damage`.
    Copy(Offers),
    /// The buffer holds the frame.
    Ready {
        y_invert: bool,
        damage: Vec<Rect>,
        presented: Duration,
    },
    /// The compositor could not copy this frame (e.g. the buffer no longer matches the output).
    Failed,
}

#[derive(Debug)]
enum Phase {
    Negotiating(Offers),
    Copying { y_invert: bool, damage: Vec<Rect> },
    Finished,
}

/// The pure negotiation of one screencopy frame.
#[derive(Debug)]
pub struct FrameMachine {
    phase: Phase,
    /// Protocol version: v3 ends the offers with `buffer_done`; older versions send one `buffer` event.
    version: u32,
}

impl FrameMachine {
    pub fn new(version: u32) -> FrameMachine {
        FrameMachine { phase: Phase::Negotiating(Offers::default()), version }
    }

    /// Feed one event.
    pub fn on_event(&mut self, ev: FrameEvent) -> Step {
        match (&mut self.phase, ev) {
            (_, FrameEvent::Failed) => {
                self.phase = Phase::Finished;
                Step::Failed
            }
            (Phase::Negotiating(offers), FrameEvent::Buffer { shm_format, width, height, stride }) => {
                offers.shm.push(ShmOffer { shm_format, width, height, stride });
                if self.version < 3 { self.offers_complete() } else { Step::Nothing }
            }
            (Phase::Negotiating(offers), FrameEvent::LinuxDmabuf(d)) => {
                offers.dmabuf = Some(d);
                Step::Nothing
            }
            (Phase::Negotiating(_), FrameEvent::BufferDone) => self.offers_complete(),
            (Phase::Copying { y_invert, .. }, FrameEvent::Flags { y_invert: inv }) => {
                *y_invert = inv;
                Step::Nothing
            }
            (Phase::Copying { damage, .. }, FrameEvent::Damage(r)) => {
                damage.push(r);
                Step::Nothing
            }
            (Phase::Copying { .. }, FrameEvent::Ready { presented }) => {
                match std::mem::replace(&mut self.phase, Phase::Finished) {
                    Phase::Copying { y_invert, damage } => Step::Ready { y_invert, damage, presented },
                    _ => unreachable!("matched Copying above"),
                }
            }
            (phase, ev) => {
                tracing::trace!(?phase, ?ev, "screencopy event ignored in this phase");
                Step::Nothing
            }
        }
    }

    fn offers_complete(&mut self) -> Step {
        match std::mem::replace(&mut self.phase, Phase::Copying { y_invert: false, damage: Vec::new() }) {
            Phase::Negotiating(offers) => Step::Copy(offers),
            other => {
                self.phase = other;
                Step::Nothing
            }
        }
    }
}

/// Capture of one output over wlr-screencopy.
pub struct ScreencopyCapture {
    session: CaptureSession,
    manager: ZwlrScreencopyManagerV1,
    version: u32,
    output: WlOutput,
    output_desc: OutputDesc,
    buffers: CaptureBuffers,
    in_flight: Option<(ZwlrScreencopyFrameV1, FrameMachine, Instant, bool)>,
    /// The current buffer holds a complete earlier frame, so damage rectangles describe all changes.
    with_damage: bool,
    overlay_cursor: bool,
    seq: u64,
    consecutive_failures: u32,
    counters: CaptureCounters,
}

impl std::fmt::Debug for ScreencopyCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScreencopyCapture").field("output", &self.output_desc.name).finish_non_exhaustive()
    }
}

impl ScreencopyCapture {
    /// Start capturing `output` (by name; the first output when `None`) of a connected session.
    pub fn new(session: CaptureSession, output: Option<&str>) -> Result<ScreencopyCapture, CaptureError> {
        let qh = session.handle();
        let manager: ZwlrScreencopyManagerV1 = session.globals.bind(&qh, 1..=3, ScreencopyData).map_err(|_| {
            CaptureError::MissingGlobal(
                "the compositor does not offer wlr-screencopy (zwlr_screencopy_manager_v1); try --source pipewire"
                    .into(),
            )
        })?;
        let (output, output_desc) = session.find_output(output)?;
        let buffers = CaptureBuffers::new(&session, None);
        let version = manager.version();
        tracing::info!(output = %output_desc.name, version, "capturing with wlr-screencopy");
        Ok(ScreencopyCapture {
            session,
            manager,
            version,
            output,
            output_desc,
            buffers,
            in_flight: None,
            with_damage: false,
            overlay_cursor: true,
            seq: 0,
            consecutive_failures: 0,
            counters: CaptureCounters::default(),
        })
    }

    /// The output as it was when capture started.
    pub fn output(&self) -> &OutputDesc {
        &self.output_desc
    }

    pub fn counters(&self) -> CaptureCounters {
        CaptureCounters { buffer_allocations: self.buffers.allocations(), ..self.counters }
    }

    /// Kind of buffer frames are captured into ("shm" or "dmabuf"), once the first frame has arrived.
    pub fn buffer_kind(&self) -> Option<&'static str> {
        self.buffers.kind()
    }

    /// Whether the cursor is painted into frames (default true).
    pub fn set_overlay_cursor(&mut self, on: bool) {
        self.overlay_cursor = on;
    }

    /// Apply `--cursor`: screencopy can paint the cursor in or leave it out, but has no cursor metadata, so
    /// `metadata` paints it in (the viewer still sees a cursor) and says so.
    pub fn set_cursor_mode(&mut self, mode: CursorMode) {
        if mode == CursorMode::Metadata {
            tracing::warn!("wlr-screencopy has no cursor metadata: the cursor is painted into frames instead");
        }
        self.overlay_cursor = mode != CursorMode::Hidden;
    }

    /// Wait up to `timeout` for the next frame. `Ok(None)`: nothing changed in time, or `stop` was set (the
    /// request stays in flight and the next call continues it). The pixels are read with
    /// [`ScreencopyCapture::with_pixels`] until the next call.
    pub fn next_frame(&mut self, timeout: Duration, stop: &AtomicBool) -> Result<Option<FrameInfo>, CaptureError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.in_flight.is_none() {
                self.request_frame();
            }
            let got =
                self.session.dispatch_until(deadline, stop, |st| Ok(!st.ext.screencopy_events().events.is_empty()))?;
            self.session.check_output(&self.output_desc.name)?;
            if !got {
                return Ok(None);
            }
            let events = std::mem::take(&mut self.session.state.ext.screencopy_events().events);
            for (id, ev) in events {
                let Some((frame, machine, requested_at, with_damage)) = self.in_flight.as_mut() else { break };
                if frame.id().protocol_id() != id {
                    continue;
                }
                let (requested_at, with_damage) = (*requested_at, *with_damage);
                match machine.on_event(ev) {
                    Step::Nothing => {}
                    Step::Copy(offers) => self.start_copy(&offers)?,
                    Step::Ready { y_invert, damage, presented } => {
                        return Ok(Some(self.finish_frame(requested_at, with_damage, y_invert, damage, presented)));
                    }
                    Step::Failed => self.frame_failed()?,
                }
            }
        }
    }

    /// Read pending events without asking for a frame: notices a vanished compositor or output while idle.
    pub fn check_alive(&mut self) -> Result<(), CaptureError> {
        let never = AtomicBool::new(false);
        self.session.dispatch_until(Instant::now() + Duration::from_millis(1), &never, |_| Ok(false))?;
        self.session.check_output(&self.output_desc.name)
    }

    /// The buffer the last frame is in (its reader chooses how: map it, or import a dmabuf).
    pub fn frame_buffer(&mut self) -> Option<&mut FrameBuffer> {
        self.buffers.buffer_mut()
    }

    /// Run `f(data, stride)` over the pixels of the last frame.
    pub fn with_pixels<R>(&mut self, f: impl FnOnce(&[u8], u32) -> R) -> Result<R, CaptureError> {
        self.buffers.with_pixels(f)
    }

    fn request_frame(&mut self) {
        let qh = self.session.handle();
        let frame = self.manager.capture_output(i32::from(self.overlay_cursor), &self.output, &qh, ScreencopyData);
        self.in_flight = Some((frame, FrameMachine::new(self.version), Instant::now(), false));
    }

    /// Make sure a buffer for the offers exists (reused when the layout is unchanged) and send the copy.
    fn start_copy(&mut self, offers: &Offers) -> Result<(), CaptureError> {
        let dmabuf = offers.dmabuf.map(|offer| DmabufWant { offer, modifiers: Vec::new() });
        if self.buffers.ensure(&self.session, offers.shm_layout(), dmabuf.as_ref())? {
            self.with_damage = false;
        }
        let Some(buffer) = self.buffers.buffer() else {
            return Err(CaptureError::Unsupported("no capture buffer".into()));
        };
        let Some((frame, _, _, with_damage)) = self.in_flight.as_mut() else { return Ok(()) };
        // Always copy_with_damage: the compositor completes it at once when its damage tracker for us is new
        // (wlroots starts it fully damaged), and otherwise only when something changed. Damage rectangles
        // are trusted only once the buffer holds a complete earlier frame; until then the frame is Full.
        frame.copy_with_damage(buffer.wl_buffer());
        *with_damage = self.with_damage;
        Ok(())
    }

    fn finish_frame(
        &mut self,
        requested_at: Instant,
        with_damage: bool,
        y_invert: bool,
        rects: Vec<Rect>,
        presented: Duration,
    ) -> FrameInfo {
        if let Some((frame, ..)) = self.in_flight.take() {
            frame.destroy();
        }
        self.consecutive_failures = 0;
        self.with_damage = true;
        let info = super::ready_frame_info(
            self.buffers.buffer().map(FrameBuffer::layout),
            y_invert,
            with_damage.then_some(rects),
            requested_at,
            (!presented.is_zero()).then_some(presented),
            self.seq,
        );
        self.seq += 1;
        info
    }

    fn frame_failed(&mut self) -> Result<(), CaptureError> {
        if let Some((frame, ..)) = self.in_flight.take() {
            frame.destroy();
        }
        self.counters.failed_frames += 1;
        self.consecutive_failures += 1;
        self.with_damage = false;
        self.buffers.copy_failed();
        tracing::debug!(failures = self.consecutive_failures, "screencopy frame failed; asking again");
        if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES {
            return Err(CaptureError::RepeatedFailures(self.consecutive_failures));
        }
        std::thread::sleep(FAILURE_BACKOFF);
        Ok(())
    }
}

impl Drop for ScreencopyCapture {
    fn drop(&mut self) {
        if let Some((frame, ..)) = self.in_flight.take() {
            frame.destroy();
        }
        if self.version >= 3 {
            self.manager.destroy();
        }
        let _ = self.session.conn.flush();
    }
}

/// User data of screencopy protocol objects.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScreencopyData;

impl<X: ScreencopyHandler + 'static> Dispatch2<ZwlrScreencopyManagerV1, WlState<X>> for ScreencopyData {
    fn event(
        &self,
        _: &mut WlState<X>,
        _: &ZwlrScreencopyManagerV1,
        _: zwlr_screencopy_manager_v1::Event,
        _: &Connection,
        _: &QueueHandle<WlState<X>>,
    ) {
    }
}

impl<X: ScreencopyHandler + 'static> Dispatch2<ZwlrScreencopyFrameV1, WlState<X>> for ScreencopyData {
    fn event(
        &self,
        state: &mut WlState<X>,
        frame: &ZwlrScreencopyFrameV1,
        event: zwlr_screencopy_frame_v1::Event,
        _: &Connection,
        _: &QueueHandle<WlState<X>>,
    ) {
        use zwlr_screencopy_frame_v1::Event as E;
        let ev = match event {
            E::Buffer { format, width, height, stride } => {
                let shm_format = match format {
                    WEnum::Value(f) => f as u32,
                    WEnum::Unknown(u) => u,
                };
                FrameEvent::Buffer { shm_format, width, height, stride }
            }
            E::LinuxDmabuf { format, width, height } => {
                FrameEvent::LinuxDmabuf(DmabufOffer { fourcc: format, width, height })
            }
            E::BufferDone => FrameEvent::BufferDone,
            E::Flags { flags } => {
                let y_invert = matches!(flags, WEnum::Value(f) if f.contains(zwlr_screencopy_frame_v1::Flags::YInvert));
                FrameEvent::Flags { y_invert }
            }
            E::Damage { x, y, width, height } => FrameEvent::Damage(Rect::new(x, y, width, height)),
            E::Ready { tv_sec_hi, tv_sec_lo, tv_nsec } => {
                let secs = (u64::from(tv_sec_hi) << 32) | u64::from(tv_sec_lo);
                FrameEvent::Ready { presented: Duration::new(secs, tv_nsec) }
            }
            E::Failed => FrameEvent::Failed,
            _ => return,
        };
        state.ext.screencopy_events().events.push((frame.id().protocol_id(), ev));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(w: u32, h: u32) -> FrameEvent {
        FrameEvent::Buffer { shm_format: 1, width: w, height: h, stride: w * 4 }
    }

    #[test]
    fn v3_waits_for_buffer_done_then_copies() {
        let mut m = FrameMachine::new(3);
        assert_eq!(m.on_event(buffer(64, 32)), Step::Nothing);
        let d = DmabufOffer { fourcc: PixelFormat::Xrgb8888.drm_fourcc(), width: 64, height: 32 };
        assert_eq!(m.on_event(FrameEvent::LinuxDmabuf(d)), Step::Nothing);
        let Step::Copy(offers) = m.on_event(FrameEvent::BufferDone) else { panic!("expected Copy") };
        assert_eq!(offers.dmabuf, Some(d));
        let layout = offers.shm_layout().expect("layout");
        assert_eq!((layout.width, layout.height, layout.stride, layout.format), (64, 32, 256, PixelFormat::Xrgb8888));
        assert_eq!(m.on_event(FrameEvent::Flags { y_invert: true }), Step::Nothing);
        assert_eq!(m.on_event(FrameEvent::Damage(Rect::new(1, 2, 3, 4))), Step::Nothing);
        let presented = Duration::from_millis(5);
        assert_eq!(
            m.on_event(FrameEvent::Ready { presented }),
            Step::Ready { y_invert: true, damage: vec![Rect::new(1, 2, 3, 4)], presented }
        );
        // Anything after the end is ignored.
        assert_eq!(m.on_event(FrameEvent::Ready { presented }), Step::Nothing);
    }

    #[test]
    fn v2_copies_after_the_buffer_event() {
        let mut m = FrameMachine::new(2);
        assert!(matches!(m.on_event(buffer(8, 8)), Step::Copy(_)));
    }

    #[test]
    fn failure_at_any_point_ends_the_frame() {
        let mut m = FrameMachine::new(3);
        assert_eq!(m.on_event(FrameEvent::Failed), Step::Failed);
        let mut m = FrameMachine::new(3);
        m.on_event(buffer(8, 8));
        m.on_event(FrameEvent::BufferDone);
        assert_eq!(m.on_event(FrameEvent::Failed), Step::Failed);
    }

    #[test]
    fn ready_before_copy_is_ignored() {
        let mut m = FrameMachine::new(3);
        assert_eq!(m.on_event(FrameEvent::Ready { presented: Duration::ZERO }), Step::Nothing);
    }

    #[test]
    fn unreadable_formats_are_reported() {
        let offers =
            Offers { shm: vec![ShmOffer { shm_format: 0xdead, width: 8, height: 8, stride: 32 }], dmabuf: None };
        let err = offers.shm_layout().expect_err("unknown format");
        assert!(err.to_string().contains("0xdead"), "{err}");
        // A stride too small for the width is rejected rather than read out of bounds.
        let offers = Offers { shm: vec![ShmOffer { shm_format: 1, width: 8, height: 8, stride: 16 }], dmabuf: None };
        assert!(offers.shm_layout().is_err());
    }

    #[test]
    fn first_readable_offer_wins() {
        let offers = Offers {
            shm: vec![
                ShmOffer { shm_format: 0xdead, width: 8, height: 8, stride: 32 },
                ShmOffer { shm_format: PixelFormat::Xbgr8888.wl_shm_code(), width: 8, height: 8, stride: 32 },
            ],
            dmabuf: None,
        };
        assert_eq!(offers.shm_layout().expect("layout").format, PixelFormat::Xbgr8888);
    }
}

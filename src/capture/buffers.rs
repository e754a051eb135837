//! The capture buffer of one capture session, shared by every Wayland source (wlr-screencopy,
//! ext-image-copy-capture): one buffer reused while the compositor asks for the same thing, a GBM dmabuf when
//! the compositor offers one and this machine can allocate it, else shm, with the reason for shm logged once.
//!
//! Sources decide *what* the compositor wants (their protocol's offers or constraints); this decides *which*
//! buffer to hand over and owns it. A failed dmabuf copy turns dmabuf off for the rest of the session.

use wayland_client::QueueHandle;
use wayland_protocols::wp::linux_dmabuf::zv1::client::zwp_linux_dmabuf_v1::ZwpLinuxDmabufV1;

use super::CaptureError;
use super::CaptureSession;
use super::wayland::WlState;
use crate::buffer::dmabuf::{self, DmabufBuffer, DmabufOffer, DmabufUnavailable, GbmAllocator};
use crate::buffer::{BufferData, FrameBuffer, shm::ShmBuffer};
use crate::frame::{FrameLayout, PixelFormat};

/// A dmabuf the compositor would accept: the offer and the modifiers it allows (empty: LINEAR only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmabufWant {
    pub offer: DmabufOffer,
    pub modifiers: Vec<u64>,
}

/// The buffer of one capture session and how to make the next one.
pub struct CaptureBuffers {
    linux_dmabuf: Option<ZwpLinuxDmabufV1>,
    gbm: Result<GbmAllocator, DmabufUnavailable>,
    shm_reason_logged: bool,
    buffer: Option<FrameBuffer>,
    allocations: u64,
}

impl std::fmt::Debug for CaptureBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureBuffers")
            .field("buffer", &self.buffer.as_ref().map(FrameBuffer::layout))
            .field("allocations", &self.allocations)
            .finish_non_exhaustive()
    }
}

impl CaptureBuffers {
    /// Bind zwp_linux_dmabuf_v1 when offered and open GBM on `render_node` (the default render node when
    /// `None`). Neither is required: without them every buffer is shm.
    pub fn new(session: &CaptureSession, render_node: Option<&std::path::Path>) -> CaptureBuffers {
        let linux_dmabuf: Option<ZwpLinuxDmabufV1> = session.globals.bind(&session.handle(), 3..=4, BufferData).ok();
        let gbm = match render_node {
            Some(path) => GbmAllocator::open(path),
            None => GbmAllocator::open_default(),
        };
        CaptureBuffers { linux_dmabuf, gbm, shm_reason_logged: false, buffer: None, allocations: 0 }
    }

    /// Make sure the current buffer fits (a dmabuf for `dmabuf` when it can be used, else shm of
    /// `shm_layout`, whose error is returned only when shm is needed), allocating a new one only when it does
    /// not. `Ok(true)`: a new buffer (its contents are undefined, so the next frame into it is complete, not a
    /// set of changes).
    pub fn ensure(
        &mut self,
        session: &CaptureSession,
        shm_layout: Result<FrameLayout, CaptureError>,
        dmabuf: Option<&DmabufWant>,
    ) -> Result<bool, CaptureError> {
        let want_dmabuf =
            dmabuf::choose_dmabuf(dmabuf.map(|d| d.offer), self.gbm.as_ref().map(|_| ()), self.linux_dmabuf.is_some());
        let reusable = match (&self.buffer, &want_dmabuf) {
            (Some(FrameBuffer::Dmabuf(b)), Ok((offer, _))) => {
                b.layout().width == offer.width
                    && b.layout().height == offer.height
                    && b.layout().format.drm_fourcc() == offer.fourcc
            }
            (Some(FrameBuffer::Shm(b)), Err(_)) => shm_layout.as_ref().is_ok_and(|l| *l == b.layout()),
            _ => false,
        };
        if reusable {
            return Ok(false);
        }
        self.buffer = None;
        let modifiers = dmabuf.map(|d| d.modifiers.as_slice()).unwrap_or(&[]);
        let buffer = self.allocate(session, want_dmabuf, modifiers, shm_layout)?;
        self.buffer = Some(buffer);
        self.allocations += 1;
        Ok(true)
    }

    fn allocate(
        &mut self,
        session: &CaptureSession,
        want_dmabuf: Result<(DmabufOffer, PixelFormat), DmabufUnavailable>,
        modifiers: &[u64],
        shm_layout: Result<FrameLayout, CaptureError>,
    ) -> Result<FrameBuffer, CaptureError> {
        let qh: QueueHandle<WlState<super::CaptureEvents>> = session.handle();
        match (want_dmabuf, &self.gbm, &self.linux_dmabuf) {
            (Ok((offer, format)), Ok(gbm), Some(ld)) => {
                match DmabufBuffer::with_modifiers(gbm, offer, format, modifiers, ld, &qh) {
                    Ok(b) => {
                        tracing::info!(node = %gbm.path().display(), "capturing into dmabuf (GBM) buffers");
                        return Ok(FrameBuffer::Dmabuf(b));
                    }
                    Err(e) => self.disable_dmabuf(DmabufUnavailable::AllocationFailed(e.to_string())),
                }
            }
            (Err(reason), _, _) => self.log_shm_reason(&reason),
            _ => {}
        }
        let layout = shm_layout?;
        tracing::debug!(?layout, "allocating shm capture buffer");
        Ok(FrameBuffer::Shm(ShmBuffer::new(&session.state.shm, layout, &qh)?))
    }

    /// The compositor failed a copy: when it was a dmabuf copy, use shm from now on (the buffer is dropped so
    /// the next `ensure` allocates shm).
    pub fn copy_failed(&mut self) {
        if matches!(self.buffer, Some(FrameBuffer::Dmabuf(_))) {
            self.disable_dmabuf(DmabufUnavailable::AllocationFailed("the compositor failed a dmabuf copy".into()));
            self.buffer = None;
        }
    }

    /// Forget the current buffer: the next `ensure` allocates a fresh one.
    pub fn discard(&mut self) {
        self.buffer = None;
    }

    fn disable_dmabuf(&mut self, reason: DmabufUnavailable) {
        self.log_shm_reason(&reason);
        self.gbm = Err(reason);
    }

    fn log_shm_reason(&mut self, reason: &DmabufUnavailable) {
        if !self.shm_reason_logged {
            self.shm_reason_logged = true;
            tracing::info!("capturing over shm, not dmabuf: {reason}");
        }
    }

    pub fn buffer(&self) -> Option<&FrameBuffer> {
        self.buffer.as_ref()
    }

    /// Buffers allocated so far (1 in steady state; +1 per size or format change).
    pub fn allocations(&self) -> u64 {
        self.allocations
    }

    /// "shm" or "dmabuf", once a buffer exists.
    pub fn kind(&self) -> Option<&'static str> {
        self.buffer.as_ref().map(FrameBuffer::kind)
    }

    /// The buffer the last frame was captured into.
    pub fn buffer_mut(&mut self) -> Option<&mut FrameBuffer> {
        self.buffer.as_mut()
    }

    /// Run `f(data, stride)` over the pixels of the buffer.
    pub fn with_pixels<R>(&mut self, f: impl FnOnce(&[u8], u32) -> R) -> Result<R, CaptureError> {
        let buf = self.buffer.as_mut().ok_or_else(|| CaptureError::Unsupported("no frame captured yet".into()))?;
        Ok(buf.with_pixels(f)?)
    }
}

//! Frame buffers the compositor copies into: shm pools and dmabuf (GBM) buffers behind one enum.
//!
//! Buffers are created for a [`FrameLayout`] and reused for as long as the compositor asks for that layout;
//! nothing is allocated per frame in steady state. CPU consumers read pixels through
//! [`FrameBuffer::with_pixels`], which maps a dmabuf only for the duration of the call.

pub mod dmabuf;
pub mod shm;

use smithay_client_toolkit::dispatch2::Dispatch2;
use wayland_client::protocol::wl_buffer::{self, WlBuffer};
use wayland_client::{Connection, QueueHandle};
use wayland_protocols::wp::linux_dmabuf::zv1::client::{
    zwp_linux_buffer_params_v1::{self, ZwpLinuxBufferParamsV1},
    zwp_linux_dmabuf_v1::{self, ZwpLinuxDmabufV1},
};

use crate::frame::FrameLayout;

/// A buffer a frame is captured into.
#[derive(Debug)]
pub enum FrameBuffer {
    Shm(shm::ShmBuffer),
    Dmabuf(dmabuf::DmabufBuffer),
}

/// Errors mapping or creating buffers.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("cannot create shared-memory buffer of {len} bytes: {msg}")]
    Shm { len: usize, msg: String },
    #[error("dmabuf: {0}")]
    Dmabuf(String),
}

impl FrameBuffer {
    pub fn layout(&self) -> FrameLayout {
        match self {
            FrameBuffer::Shm(b) => b.layout(),
            FrameBuffer::Dmabuf(b) => b.layout(),
        }
    }

    pub fn wl_buffer(&self) -> &WlBuffer {
        match self {
            FrameBuffer::Shm(b) => b.wl_buffer(),
            FrameBuffer::Dmabuf(b) => b.wl_buffer(),
        }
    }

    /// Run `f` over the pixels (`data`, `stride` in bytes). A dmabuf is mapped for reading just for the call.
    pub fn with_pixels<R>(&mut self, f: impl FnOnce(&[u8], u32) -> R) -> Result<R, BufferError> {
        match self {
            FrameBuffer::Shm(b) => {
                let stride = b.layout().stride;
                Ok(f(b.data(), stride))
            }
            FrameBuffer::Dmabuf(b) => b.with_mapped(f),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            FrameBuffer::Shm(_) => "shm",
            FrameBuffer::Dmabuf(_) => "dmabuf",
        }
    }
}

/// User data of every buffer-related protocol object we create (wl_buffer, dmabuf params and global).
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferData;

impl<D> Dispatch2<WlBuffer, D> for BufferData {
    fn event(&self, _: &mut D, _: &WlBuffer, _: wl_buffer::Event, _: &Connection, _: &QueueHandle<D>) {
        // Release: capture buffers are ours again once the frame is ready; nothing to do.
    }
}

impl<D> Dispatch2<ZwpLinuxDmabufV1, D> for BufferData {
    fn event(
        &self,
        _: &mut D,
        _: &ZwpLinuxDmabufV1,
        _: zwp_linux_dmabuf_v1::Event,
        _: &Connection,
        _: &QueueHandle<D>,
    ) {
        // format/modifier announcements: we allocate LINEAR, which every dmabuf importer accepts.
    }
}

impl<D> Dispatch2<ZwpLinuxBufferParamsV1, D> for BufferData {
    fn event(
        &self,
        _: &mut D,
        _: &ZwpLinuxBufferParamsV1,
        event: zwp_linux_buffer_params_v1::Event,
        _: &Connection,
        _: &QueueHandle<D>,
    ) {
        if let zwp_linux_buffer_params_v1::Event::Failed = event {
            // With create_immed the failed buffer makes the copy fail; capture then falls back to shm.
            tracing::warn!("the compositor rejected a dmabuf buffer");
        }
    }
}

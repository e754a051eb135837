//! One wl_shm buffer (memfd + mmap through smithay-client-toolkit's `RawPool`), sized for one layout.

use smithay_client_toolkit::shm::{Shm, raw::RawPool};
use wayland_client::protocol::{wl_buffer::WlBuffer, wl_shm};
use wayland_client::{Dispatch, QueueHandle};

use super::{BufferData, BufferError};
use crate::frame::FrameLayout;

/// A shared-memory buffer the compositor writes a frame into.
#[derive(Debug)]
pub struct ShmBuffer {
    pool: RawPool,
    buffer: WlBuffer,
    layout: FrameLayout,
}

impl ShmBuffer {
    /// Allocate a pool of exactly one frame and a wl_buffer over it.
    pub fn new<D>(shm: &Shm, layout: FrameLayout, qh: &QueueHandle<D>) -> Result<ShmBuffer, BufferError>
    where
        D: Dispatch<WlBuffer, BufferData> + 'static,
    {
        let len = layout.byte_len();
        let mut pool = RawPool::new(len, shm).map_err(|e| BufferError::Shm { len, msg: e.to_string() })?;
        let format = wl_shm::Format::try_from(layout.format.wl_shm_code())
            .map_err(|()| BufferError::Shm { len, msg: format!("format {} has no wl_shm code", layout.format) })?;
        let buffer = pool.create_buffer(
            0,
            layout.width as i32,
            layout.height as i32,
            layout.stride as i32,
            format,
            BufferData,
            qh,
        );
        Ok(ShmBuffer { pool, buffer, layout })
    }

    pub fn layout(&self) -> FrameLayout {
        self.layout
    }

    pub fn wl_buffer(&self) -> &WlBuffer {
        &self.buffer
    }

    /// The pixels, `layout.byte_len()` bytes.
    pub fn data(&mut self) -> &[u8] {
        let len = self.layout.byte_len();
        &self.pool.mmap()[..len]
    }

    /// Writable pixels (test clients paint through this).
    pub fn data_mut(&mut self) -> &mut [u8] {
        let len = self.layout.byte_len();
        &mut self.pool.mmap()[..len]
    }
}

impl Drop for ShmBuffer {
    fn drop(&mut self) {
        self.buffer.destroy();
    }
}

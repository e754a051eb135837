//! RGB → NV12 on a Vulkan compute queue (`--convert vulkan`, or `auto` on a real GPU).
//!
//! What it owns: one Vulkan device, the compute pipeline of `shaders/rgb_to_nv12.comp` (GLSL compiled to SPIR-V
//! by naga at build time), and buffers sized for the current frame layout, reused frame after frame (they are
//! reallocated only when the layout changes). What it must never do: panic on a Vulkan failure (every call's
//! result becomes a [`VulkanError`]), or free anything the GPU may still use.
//!
//! How a frame flows (host-memory input, the path capture uses today):
//! 1. the damaged source rows (whole rows, memory order) are copied into a host-visible upload buffer (large
//!    copies on several threads);
//! 2. one command buffer: in [`UploadMode::Staged`] the GPU copies those rows into device-local memory;
//!    one dispatch per damaged rectangle (in 4×2-pixel blocks, one shader invocation each) writes NV12 into a
//!    buffer with exactly the [`Nv12Frame`] layout; in `Staged` the damaged NV12 rows are copied back into a
//!    host-visible readback buffer. [`UploadMode::Direct`] skips both copies: the shader reads the upload buffer
//!    and writes the readback buffer itself (right for software and unified-memory devices);
//! 3. one fence wait, then the damaged NV12 rows are copied into the caller's frame.
//!
//! Timestamp queries around the three GPU phases give the per-stage costs ([`VulkanTimings`]) that
//! `wl-webrtc bench convert` reports.
//!
//! Zero-copy input: [`VulkanConverter::convert_dmabuf`] imports a linear dmabuf (VK_EXT_external_memory_dma_buf)
//! as the shader's source buffer, skipping step 1 and the upload copy; see [`dmabuf`].
//!
//! The output equals the scalar reference within ±1 per sample (float math in the shader); damage-aware
//! conversion equals full conversion exactly, because every sample depends only on its own pixel / 2×2 block.

#![allow(unsafe_code)] // FFI edge: every unsafe block carries a SAFETY note

mod copy;
pub mod dmabuf;
mod gpu;
pub mod plan;

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use ash::vk;

use self::copy::{CopyPool, Piece};
use self::gpu::{Buf, Gpu, MemoryWish};
use self::plan::{Blocks, PushConstants};
use super::{ConvertError, check_source, fits};
use crate::frame::{Damage, FrameLayout, Nv12Frame, Rect};

pub use self::gpu::{DeviceInfo, choose_device, list_devices};

/// Why the Vulkan converter cannot be used or a frame failed. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum VulkanError {
    /// libvulkan.so.1 could not be loaded.
    #[error(
        "cannot load the Vulkan loader ({0}); install libvulkan1 and a Vulkan driver (e.g. mesa-vulkan-drivers), \
         or use --convert cpu"
    )]
    Loader(String),
    /// No device fits (none at all, or only software ones when a hardware GPU is required).
    #[error("{}", no_device_message(found, *hardware_only))]
    NoDevice { found: String, hardware_only: bool },
    /// A Vulkan call failed.
    #[error("{call} failed: {result}")]
    Vk { call: &'static str, result: vk::Result },
    /// The device offers no memory type for a buffer.
    #[error("no Vulkan memory type fits a {size}-byte buffer")]
    NoMemoryType { size: u64 },
    /// A submission did not finish in time (the GPU hung or is far too slow).
    #[error("the GPU did not finish a frame within {} s", gpu::SUBMIT_TIMEOUT_NS / 1_000_000_000)]
    Timeout,
    /// dmabuf input cannot be imported on this device or with this layout.
    #[error("dmabuf import: {0}")]
    Dmabuf(String),
    /// A bug in this module, reported rather than panicking.
    #[error("internal Vulkan converter error: {0}")]
    Internal(&'static str),
}

fn no_device_message(found: &str, hardware_only: bool) -> String {
    match (found.is_empty(), hardware_only) {
        (true, _) => "the Vulkan loader reports no device; install a Vulkan driver, or use --convert cpu".to_owned(),
        (false, true) => format!(
            "no hardware Vulkan GPU (found: {found}); --convert auto does not use software Vulkan, which is slower \
             than the CPU converter (use --convert vulkan to force it)"
        ),
        (false, false) => format!("no Vulkan device with a compute queue (found: {found})"),
    }
}

impl VulkanError {
    fn vk(call: &'static str) -> impl Fn(vk::Result) -> VulkanError {
        move |result| VulkanError::Vk { call, result }
    }

    /// The device is gone for good (driver reset, GPU removed): the caller should stop using it.
    pub fn is_device_lost(&self) -> bool {
        matches!(self, VulkanError::Vk { result: vk::Result::ERROR_DEVICE_LOST, .. } | VulkanError::Timeout)
    }
}

/// Which devices may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevicePreference {
    /// Discrete or integrated GPUs only (what `--convert auto` uses).
    HardwareOnly,
    /// Any device with a compute queue, software ones (lavapipe) included (`--convert vulkan`, tests).
    Any,
}

/// Where the shader reads its input and writes its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMode {
    /// [`UploadMode::Direct`] when the device has host-visible device-local memory (unified memory, software
    /// devices, discrete GPUs with a large BAR such as the H100: the CPU writes the frame straight into VRAM and
    /// the shader writes NV12 straight into host memory), else [`UploadMode::Staged`]. On the H100, Direct
    /// measured 0.51 vs 0.75 ms per 1080p frame and 1.69 vs 2.03 ms at 4K (README, Performance).
    Auto,
    /// Host staging buffers plus GPU copies to and from device-local memory (the shader touches only VRAM).
    Staged,
    /// The shader reads the host-visible upload buffer and writes the host-visible readback buffer (no copies).
    Direct,
}

impl UploadMode {
    pub fn name(self) -> &'static str {
        match self {
            UploadMode::Auto => "auto",
            UploadMode::Staged => "staged",
            UploadMode::Direct => "direct",
        }
    }
}

/// Costs of the last converted frame. GPU phases come from timestamp queries (`None` when the queue has none).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VulkanTimings {
    /// CPU: copying the damaged source rows into the upload buffer.
    pub upload_cpu: Duration,
    /// GPU: copying them into device-local memory (`Staged` mode; in `Direct` mode and for dmabuf input only
    /// barriers, ~0).
    pub upload_gpu: Option<Duration>,
    /// GPU: the conversion dispatches alone.
    pub dispatch_gpu: Option<Duration>,
    /// GPU: copying the damaged NV12 rows into the readback buffer (`Staged`; ~0 in `Direct` mode).
    pub readback_gpu: Option<Duration>,
    /// CPU: copying them into the caller's frame.
    pub readback_cpu: Duration,
    /// Submit → fence signalled, as the CPU saw it.
    pub gpu_wall: Duration,
    /// The whole `convert` call.
    pub total: Duration,
}

/// What the frame buffers were made for; any change reallocates them and converts the next frame in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameKey {
    layout: FrameLayout,
    /// Bytes of source the layout needs.
    src_len: u64,
    /// Stride of the caller's NV12 frame (the GPU buffer has the same layout).
    out_stride: usize,
}

/// Buffers for one frame layout.
#[derive(Debug)]
struct FrameBuffers {
    key: FrameKey,
    /// Host-visible copy of the source (the shader's input in `Direct` mode).
    upload: Buf,
    /// Device-local source (`Staged` only).
    src: Option<Buf>,
    /// Device-local NV12 (`Staged` only).
    nv12: Option<Buf>,
    /// Host-visible NV12 (the shader's output in `Direct` mode).
    readback: Buf,
    /// Nothing converted yet: fill the NV12 buffer and convert everything.
    fresh: bool,
}

impl FrameBuffers {
    fn buffers_mut(&mut self) -> impl Iterator<Item = &mut Buf> {
        [Some(&mut self.upload), self.src.as_mut(), self.nv12.as_mut(), Some(&mut self.readback)].into_iter().flatten()
    }

    /// The buffer the shader writes.
    fn target(&self) -> &Buf {
        self.nv12.as_ref().unwrap_or(&self.readback)
    }
}

/// Where this frame's source pixels are.
enum Source<'a> {
    /// Mapped host memory (shm): uploaded.
    Host(&'a [u8]),
    /// An imported dmabuf: read in place, starting at this byte offset.
    Imported { buffer: vk::Buffer, size: u64, offset: u32 },
}

/// Reused per-frame lists (no allocation in steady state).
#[derive(Debug, Default)]
struct Scratch {
    blocks: Vec<Blocks>,
    rows: Vec<(u32, u32)>,
    copies: Vec<vk::BufferCopy>,
    pieces: Vec<Piece>,
}

/// The Vulkan converter. Create once per capture stream and keep it; see the module documentation.
pub struct VulkanConverter {
    frame: Option<FrameBuffers>,
    imports: dmabuf::ImportCache,
    scratch: Scratch,
    /// Threads for the host-side copies.
    copier: CopyPool,
    timings: VulkanTimings,
    mode: UploadMode,
    /// The buffers the descriptor set points at (source, destination).
    bound: (vk::Buffer, vk::Buffer),
    // Last: dropped after `Drop::drop` has freed the buffers above.
    gpu: Gpu,
}

impl std::fmt::Debug for VulkanConverter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VulkanConverter")
            .field("device", &self.gpu.info.name)
            .field("kind", &self.gpu.info.kind_name())
            .field("mode", &self.mode)
            .field("frame", &self.frame.as_ref().map(|f| f.key))
            .finish()
    }
}

impl VulkanConverter {
    /// Open a device (see [`DevicePreference`]) with [`UploadMode::Auto`].
    pub fn new(pref: DevicePreference) -> Result<VulkanConverter, VulkanError> {
        Self::with_mode(pref, UploadMode::Auto)
    }

    /// Open a device with an explicit upload mode (the bench compares both).
    pub fn with_mode(pref: DevicePreference, mode: UploadMode) -> Result<VulkanConverter, VulkanError> {
        let gpu = Gpu::new(pref == DevicePreference::HardwareOnly)?;
        let mode = match mode {
            UploadMode::Auto if gpu.has_host_visible_device_memory() => UploadMode::Direct,
            UploadMode::Auto => UploadMode::Staged,
            m => m,
        };
        tracing::info!(device = %gpu.info.name, kind = gpu.info.kind_name(), mode = mode.name(),
            dmabuf_import = gpu.info.dmabuf_import, "Vulkan converter ready");
        Ok(VulkanConverter {
            frame: None,
            imports: dmabuf::ImportCache::default(),
            scratch: Scratch::default(),
            copier: CopyPool::new(),
            timings: VulkanTimings::default(),
            mode,
            bound: (vk::Buffer::null(), vk::Buffer::null()),
            gpu,
        })
    }

    /// The device in use.
    pub fn device(&self) -> &DeviceInfo {
        &self.gpu.info
    }

    /// The upload mode in use (never `Auto`).
    pub fn mode(&self) -> UploadMode {
        self.mode
    }

    /// Per-stage costs of the last converted frame.
    pub fn timings(&self) -> VulkanTimings {
        self.timings
    }

    /// Whether [`VulkanConverter::convert_dmabuf`] can work on this device.
    pub fn supports_dmabuf(&self) -> bool {
        self.gpu.info.dmabuf_import
    }

    /// Convert `src` (laid out as `layout`; rows bottom-up when `y_invert`) into `out`, exactly like
    /// [`super::CpuConverter::convert`]: only the 2×2 blocks covered by `damage` are rewritten (in 4×2 blocks
    /// here), and an `out` of the wrong size is replaced and converted in full. Errors, never panics.
    pub fn convert(
        &mut self,
        src: &[u8],
        layout: &FrameLayout,
        y_invert: bool,
        damage: &Damage,
        out: &mut Nv12Frame,
    ) -> Result<(), ConvertError> {
        let need = check_source(src, layout)?;
        let src = src.get(..need).ok_or(ConvertError::Internal("source length"))?;
        self.run(Source::Host(src), need, layout, y_invert, damage, out)
    }

    /// Convert a frame that lives in a dmabuf (zero-copy: the GPU reads it in place). `offset` is the plane's
    /// byte offset in the dmabuf, `modifier` its DRM format modifier (only linear layouts are read directly).
    /// Fails with [`VulkanError::Dmabuf`] when the device cannot import dmabufs or the layout is not linear;
    /// the caller then maps the buffer and uses [`VulkanConverter::convert`].
    #[allow(clippy::too_many_arguments)]
    pub fn convert_dmabuf(
        &mut self,
        fd: BorrowedFd<'_>,
        offset: u32,
        modifier: u64,
        layout: &FrameLayout,
        y_invert: bool,
        damage: &Damage,
        out: &mut Nv12Frame,
    ) -> Result<(), ConvertError> {
        let plan = dmabuf::plan_import(layout.format, modifier, &self.gpu.info).map_err(ConvertError::from)?;
        if plan != dmabuf::ImportPlan::Buffer {
            return Err(VulkanError::Dmabuf(format!(
                "modifier {modifier:#x} needs an image import ({plan:?}), which is not implemented; map the buffer \
                 instead"
            ))
            .into());
        }
        let need = super::required_len(layout)?;
        // The previous frame is finished (every convert waits for its fence), so the cache may evict.
        let (buffer, size) = self.imports.import(&self.gpu, fd, u64::from(offset) + need as u64)?;
        self.run(Source::Imported { buffer, size, offset }, need, layout, y_invert, damage, out)
    }

    fn run(
        &mut self,
        source: Source<'_>,
        need: usize,
        layout: &FrameLayout,
        y_invert: bool,
        damage: &Damage,
        out: &mut Nv12Frame,
    ) -> Result<(), ConvertError> {
        let t0 = Instant::now();
        let mut full = matches!(damage, Damage::Full);
        if !fits(out, layout) {
            *out = Nv12Frame::new(layout.width, layout.height);
            full = true;
        }
        let key = FrameKey { layout: *layout, src_len: need as u64, out_stride: out.stride };
        self.ensure_buffers(key)?;
        let fresh = self.frame.as_ref().is_some_and(|f| f.fresh);
        full |= fresh;

        // Damage → blocks; large damage → one full dispatch (fewer, larger dispatches and copies).
        let (w, h) = (layout.width, layout.height);
        let s = &mut self.scratch;
        s.blocks.clear();
        if let Damage::Rects(rects) = damage
            && !full
        {
            let area: u64 = rects.iter().filter_map(|r| r.clip(w, h)).map(Rect::area).sum();
            full = area as f64 >= plan::FULL_FRAME_SHARE * (f64::from(w) * f64::from(h));
            if !full {
                s.blocks.extend(rects.iter().filter_map(|&r| Blocks::covering(r, w, h)));
            }
        }
        if full {
            s.blocks.push(Blocks::all(w, h));
        }
        if s.blocks.is_empty() {
            self.timings = VulkanTimings { total: t0.elapsed(), ..Default::default() };
            return Ok(());
        }
        s.rows.clear();
        s.rows.extend(s.blocks.iter().map(|b| (b.y0, b.y1)));
        plan::merge_rows(&mut s.rows);

        // 1. Upload the damaged source rows.
        let t_up = Instant::now();
        let (src_buffer, src_size) = match source {
            Source::Host(src) => {
                let frame = self.frame.as_ref().ok_or(ConvertError::Internal("frame buffers"))?;
                let upload = &frame.upload;
                if upload.ptr.is_null() {
                    return Err(ConvertError::Internal("upload buffer not mapped"));
                }
                let up_len = usize::try_from(upload.size).map_err(|_| ConvertError::TooLarge)?;
                s.copies.clear();
                s.pieces.clear();
                let stride = layout.stride as usize;
                for &(y0, y1) in &s.rows {
                    let (r0, r1) = plan::source_rows(y0, y1, h, y_invert);
                    let (a, b) = (r0 as usize * stride, (r1 as usize * stride).min(src.len()));
                    if a >= b {
                        continue;
                    }
                    if b > up_len {
                        return Err(ConvertError::Internal("upload buffer range"));
                    }
                    let (dst, from) = (upload.ptr as usize + a, src.as_ptr() as usize + a);
                    s.pieces.push(Piece { dst, src: from, len: b - a });
                    s.copies.push(vk::BufferCopy { src_offset: a as u64, dst_offset: a as u64, size: (b - a) as u64 });
                }
                // SAFETY: every piece lies inside `src` (b <= src.len()) and inside the mapped upload buffer
                // (b <= its size); the row ranges are merged, so destinations are disjoint; the GPU is idle (the
                // previous submission was waited for) and nothing else touches either buffer during the call.
                unsafe { self.copier.run(&s.pieces) };
                match &frame.src {
                    Some(dev) => (dev.buffer, dev.size),
                    None => (frame.upload.buffer, frame.upload.size),
                }
            }
            Source::Imported { buffer, size, .. } => {
                s.copies.clear();
                (buffer, size)
            }
        };
        let upload_cpu = t_up.elapsed();
        let src_offset = match source {
            Source::Imported { offset, .. } => offset,
            Source::Host(_) => 0,
        };

        // 2. Record, submit, wait.
        let t_gpu = Instant::now();
        self.bind(src_buffer)?;
        let src_words = u32::try_from(src_size / 4).map_err(|_| ConvertError::TooLarge)?;
        self.record(layout, y_invert, src_offset, src_words, out.stride, matches!(source, Source::Host(_)))?;
        self.submit_and_wait()?;
        let gpu_wall = t_gpu.elapsed();
        if let Some(f) = self.frame.as_mut() {
            f.fresh = false;
        }

        // 3. Copy the damaged NV12 rows out.
        let t_rb = Instant::now();
        let frame = self.frame.as_ref().ok_or(ConvertError::Internal("frame buffers"))?;
        let ph = out.padded_height() as usize;
        let os = out.stride;
        let rb = &frame.readback;
        if rb.ptr.is_null() {
            return Err(ConvertError::Internal("readback buffer not mapped"));
        }
        let rb_len = usize::try_from(rb.size).map_err(|_| ConvertError::TooLarge)?;
        let uv_base = os * ph;
        let (y_ptr, y_len) = (out.y.as_mut_ptr() as usize, out.y.len());
        let (uv_ptr, uv_len) = (out.uv.as_mut_ptr() as usize, out.uv.len());
        let pieces = &mut self.scratch.pieces;
        pieces.clear();
        for &(y0, y1) in &self.scratch.rows {
            let (y0, y1) = (y0 as usize, y1 as usize);
            let (a, b) = (2 * y0 * os, (2 * y1 * os).min(y_len));
            let (ua, ub) = (y0 * os, (y1 * os).min(uv_len));
            if b > rb_len || uv_base + ub > rb_len {
                return Err(ConvertError::Internal("readback range"));
            }
            if a < b {
                pieces.push(Piece { dst: y_ptr + a, src: rb.ptr as usize + a, len: b - a });
            }
            if ua < ub {
                pieces.push(Piece { dst: uv_ptr + ua, src: rb.ptr as usize + uv_base + ua, len: ub - ua });
            }
        }
        // SAFETY: the Y pieces lie inside `out.y`, the UV pieces inside `out.uv` (checked against their lengths
        // above, pointers taken once from each plane), all sources inside the mapped readback buffer (checked
        // against its size); merged row ranges make the destinations disjoint; the GPU finished (fence waited)
        // and `out` is exclusively borrowed, so nothing else touches these bytes during the call.
        unsafe { self.copier.run(pieces) };
        let readback_cpu = t_rb.elapsed();
        let (upload_gpu, dispatch_gpu, readback_gpu) = self.read_timestamps();
        self.timings = VulkanTimings {
            upload_cpu,
            upload_gpu,
            dispatch_gpu,
            readback_gpu,
            readback_cpu,
            gpu_wall,
            total: t0.elapsed(),
        };
        Ok(())
    }

    /// (Re)allocate the frame buffers for `key` if needed.
    fn ensure_buffers(&mut self, key: FrameKey) -> Result<(), VulkanError> {
        if self.frame.as_ref().is_some_and(|f| f.key == key) {
            return Ok(());
        }
        self.free_frame();
        use vk::BufferUsageFlags as U;
        use vk::MemoryPropertyFlags as M;
        let host = M::HOST_VISIBLE | M::HOST_COHERENT;
        // Room for the shader's 32-bit loads past a tight last pixel, rounded to whole words.
        let src_size = (key.src_len + 8).next_multiple_of(4);
        let ph = u64::from(key.layout.height.next_multiple_of(2));
        let nv12_size = key.out_stride as u64 * ph * 3 / 2;
        let staged = self.mode == UploadMode::Staged;
        let g = &self.gpu;
        let mut made: Vec<Buf> = Vec::with_capacity(4);
        let result = (|| {
            let (upload_wish, readback_wish) = if staged {
                (
                    MemoryWish { required: host, preferred: M::empty(), avoided: M::DEVICE_LOCAL },
                    MemoryWish { required: host, preferred: M::HOST_CACHED, avoided: M::DEVICE_LOCAL },
                )
            } else {
                (
                    MemoryWish { required: host, preferred: M::DEVICE_LOCAL, avoided: M::empty() },
                    MemoryWish { required: host, preferred: M::HOST_CACHED, avoided: M::empty() },
                )
            };
            let local = MemoryWish { required: M::DEVICE_LOCAL, preferred: M::empty(), avoided: M::HOST_VISIBLE };
            made.push(g.create_buffer(src_size, U::TRANSFER_SRC | U::STORAGE_BUFFER, upload_wish)?);
            made.push(g.create_buffer(nv12_size, U::TRANSFER_DST | U::STORAGE_BUFFER, readback_wish)?);
            if staged {
                made.push(g.create_buffer(src_size, U::TRANSFER_DST | U::STORAGE_BUFFER, local)?);
                made.push(g.create_buffer(nv12_size, U::TRANSFER_SRC | U::TRANSFER_DST | U::STORAGE_BUFFER, local)?);
            }
            Ok::<(), VulkanError>(())
        })();
        if let Err(e) = result {
            for mut b in made {
                g.free(&mut b);
            }
            return Err(e);
        }
        let mut it = made.into_iter();
        let (Some(upload), Some(readback)) = (it.next(), it.next()) else {
            return Err(VulkanError::Internal("buffers missing"));
        };
        let (src, nv12) = (it.next(), it.next());
        tracing::debug!(
            width = key.layout.width,
            height = key.layout.height,
            src_size,
            nv12_size,
            upload_device_local = upload.device_local,
            "Vulkan frame buffers allocated"
        );
        self.frame = Some(FrameBuffers { key, upload, src, nv12, readback, fresh: true });
        self.bound = (vk::Buffer::null(), vk::Buffer::null());
        Ok(())
    }

    fn free_frame(&mut self) {
        if let Some(mut f) = self.frame.take() {
            self.gpu.wait_idle();
            for b in f.buffers_mut() {
                self.gpu.free(b);
            }
        }
    }

    /// Point the descriptor set at `src` and the frame's NV12 target (only when they changed).
    fn bind(&mut self, src: vk::Buffer) -> Result<(), VulkanError> {
        let frame = self.frame.as_ref().ok_or(VulkanError::Internal("frame buffers"))?;
        let dst = frame.target().buffer;
        if self.bound == (src, dst) {
            return Ok(());
        }
        let infos = [src, dst].map(|b| [vk::DescriptorBufferInfo { buffer: b, offset: 0, range: vk::WHOLE_SIZE }]);
        let writes = [0, 1].map(|i| {
            vk::WriteDescriptorSet::default()
                .dst_set(self.gpu.descriptor_set)
                .dst_binding(i as u32)
                .descriptor_type(vk::DescriptorType::STORAGE_BUFFER)
                .buffer_info(&infos[i])
        });
        // SAFETY: the set and both buffers are alive, and no submission using the set is pending (every convert
        // waits for its fence before returning).
        unsafe { self.gpu.device.update_descriptor_sets(&writes, &[]) };
        self.bound = (src, dst);
        Ok(())
    }

    /// Record the frame's command buffer from `self.scratch` (blocks, rows, upload copies).
    fn record(
        &mut self,
        layout: &FrameLayout,
        y_invert: bool,
        src_offset: u32,
        src_words: u32,
        out_stride: usize,
        host_source: bool,
    ) -> Result<(), VulkanError> {
        let g = &self.gpu;
        let d = &g.device;
        let cmd = g.cmd;
        let frame = self.frame.as_ref().ok_or(VulkanError::Internal("frame buffers"))?;
        let s = &self.scratch;
        let ph = u64::from(layout.height.next_multiple_of(2));
        let os = out_stride as u64;
        let uv_offset = os * ph;
        let stage =
            |a: vk::AccessFlags, b: vk::AccessFlags| vk::MemoryBarrier::default().src_access_mask(a).dst_access_mask(b);
        use vk::AccessFlags as A;
        use vk::PipelineStageFlags as P;
        let (kind, shifts) = plan::format_params(layout.format);
        let stride32 = |v: usize| u32::try_from(v).map_err(|_| VulkanError::Internal("stride overflows u32"));
        let base = PushConstants {
            width: layout.width,
            height: layout.height,
            src_stride: layout.stride,
            src_offset,
            bpp: layout.format.bytes_per_pixel() as u32,
            kind,
            shifts,
            y_invert: u32::from(y_invert),
            dst_stride: stride32(out_stride)?,
            uv_offset: u32::try_from(uv_offset).map_err(|_| VulkanError::Internal("NV12 size overflows u32"))?,
            src_words,
            ..Default::default()
        };

        // SAFETY: all recorded handles (buffers, pipeline, layout, set, query pool) belong to this device and are
        // alive; the command buffer is not pending (the previous submission's fence was waited for), so it may
        // be reset and re-recorded; copy regions lie inside both buffers (built from the same layout that sized
        // them); barriers order upload → dispatch → readback → host read.
        unsafe {
            d.reset_command_buffer(cmd, vk::CommandBufferResetFlags::empty())
                .map_err(VulkanError::vk("vkResetCommandBuffer"))?;
            d.begin_command_buffer(
                cmd,
                &vk::CommandBufferBeginInfo::default().flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT),
            )
            .map_err(VulkanError::vk("vkBeginCommandBuffer"))?;
            if let Some(q) = g.queries {
                d.cmd_reset_query_pool(cmd, q, 0, gpu::TIMESTAMPS);
                d.cmd_write_timestamp(cmd, P::TOP_OF_PIPE, q, 0);
            }
            // Order against the previous frame's GPU work on the same buffers (write-after-read/write).
            d.cmd_pipeline_barrier(
                cmd,
                P::TRANSFER | P::COMPUTE_SHADER,
                P::TRANSFER | P::COMPUTE_SHADER,
                vk::DependencyFlags::empty(),
                &[stage(
                    A::TRANSFER_WRITE | A::SHADER_WRITE,
                    A::TRANSFER_READ | A::TRANSFER_WRITE | A::SHADER_READ | A::SHADER_WRITE,
                )],
                &[],
                &[],
            );
            if frame.fresh {
                // Bytes right of the shader's blocks are never written: give them a fresh Nv12Frame's black.
                let t = frame.target();
                d.cmd_fill_buffer(cmd, t.buffer, 0, uv_offset, 0x1010_1010);
                d.cmd_fill_buffer(cmd, t.buffer, uv_offset, t.size - uv_offset, 0x8080_8080);
            }
            if host_source
                && let Some(dev) = &frame.src
                && !s.copies.is_empty()
            {
                d.cmd_copy_buffer(cmd, frame.upload.buffer, dev.buffer, &s.copies);
            }
            d.cmd_pipeline_barrier(
                cmd,
                P::TRANSFER,
                P::COMPUTE_SHADER,
                vk::DependencyFlags::empty(),
                &[stage(A::TRANSFER_WRITE, A::SHADER_READ | A::SHADER_WRITE)],
                &[],
                &[],
            );
            if let Some(q) = g.queries {
                d.cmd_write_timestamp(cmd, P::BOTTOM_OF_PIPE, q, 1);
            }
            d.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::COMPUTE, g.pipeline);
            d.cmd_bind_descriptor_sets(
                cmd,
                vk::PipelineBindPoint::COMPUTE,
                g.pipeline_layout,
                0,
                &[g.descriptor_set],
                &[],
            );
            // Overlapping rectangles make dispatches write the same words with the same values: harmless.
            for b in &s.blocks {
                let pc =
                    PushConstants { block_x0: b.x0, block_y0: b.y0, block_w: b.width(), block_h: b.height(), ..base };
                d.cmd_push_constants(cmd, g.pipeline_layout, vk::ShaderStageFlags::COMPUTE, 0, &pc.to_bytes());
                let (gx, gy) = b.groups();
                d.cmd_dispatch(cmd, gx, gy, 1);
            }
            if let Some(q) = g.queries {
                d.cmd_write_timestamp(cmd, P::BOTTOM_OF_PIPE, q, 2);
            }
            if let Some(nv12) = &frame.nv12 {
                d.cmd_pipeline_barrier(
                    cmd,
                    P::COMPUTE_SHADER,
                    P::TRANSFER,
                    vk::DependencyFlags::empty(),
                    &[stage(A::SHADER_WRITE, A::TRANSFER_READ)],
                    &[],
                    &[],
                );
                let mut regions = [vk::BufferCopy::default(); 2];
                for &(y0, y1) in &s.rows {
                    let (y0, y1) = (u64::from(y0), u64::from(y1));
                    regions[0] =
                        vk::BufferCopy { src_offset: 2 * y0 * os, dst_offset: 2 * y0 * os, size: 2 * (y1 - y0) * os };
                    let uv = uv_offset + y0 * os;
                    regions[1] = vk::BufferCopy { src_offset: uv, dst_offset: uv, size: (y1 - y0) * os };
                    d.cmd_copy_buffer(cmd, nv12.buffer, frame.readback.buffer, &regions);
                }
            }
            d.cmd_pipeline_barrier(
                cmd,
                P::TRANSFER | P::COMPUTE_SHADER,
                P::HOST,
                vk::DependencyFlags::empty(),
                &[stage(A::TRANSFER_WRITE | A::SHADER_WRITE, A::HOST_READ)],
                &[],
                &[],
            );
            if let Some(q) = g.queries {
                d.cmd_write_timestamp(cmd, P::BOTTOM_OF_PIPE, q, 3);
            }
            d.end_command_buffer(cmd).map_err(VulkanError::vk("vkEndCommandBuffer"))?;
        }
        Ok(())
    }

    fn submit_and_wait(&mut self) -> Result<(), VulkanError> {
        let g = &self.gpu;
        let cmds = [g.cmd];
        let submit = [vk::SubmitInfo::default().command_buffers(&cmds)];
        // SAFETY: the command buffer is fully recorded and not pending; the fence is unsignalled (reset after
        // every wait) and not used by another submission; host writes to coherent memory before this call are
        // visible to the GPU (implicit host-write ordering of vkQueueSubmit).
        unsafe { g.device.queue_submit(g.queue, &submit, g.fence) }.map_err(VulkanError::vk("vkQueueSubmit"))?;
        // SAFETY: the fence belongs to this device.
        let waited = unsafe { g.device.wait_for_fences(&[g.fence], true, gpu::SUBMIT_TIMEOUT_NS) };
        match waited {
            Ok(()) => {}
            Err(vk::Result::TIMEOUT) => {
                // Still running: wait for the device before anything is reused, then report it.
                g.wait_idle();
                // SAFETY: the device is idle, so the fence is no longer in use.
                let _ = unsafe { g.device.reset_fences(&[g.fence]) };
                return Err(VulkanError::Timeout);
            }
            Err(e) => {
                // Device lost or similar: make sure nothing is still pending before the buffers are reused.
                g.wait_idle();
                return Err(VulkanError::Vk { call: "vkWaitForFences", result: e });
            }
        }
        // SAFETY: the fence is signalled and no longer in use by a pending submission.
        unsafe { g.device.reset_fences(&[g.fence]) }.map_err(VulkanError::vk("vkResetFences"))?;
        Ok(())
    }

    /// GPU durations of (upload copy, dispatch, readback copy) of the last submission.
    fn read_timestamps(&self) -> (Option<Duration>, Option<Duration>, Option<Duration>) {
        let Some(q) = self.gpu.queries else { return (None, None, None) };
        let mut ts = [0u64; gpu::TIMESTAMPS as usize];
        // SAFETY: the pool belongs to this device and its submission finished (fence waited), so all four queries
        // are available; `ts` holds exactly TIMESTAMPS 64-bit results.
        let ok = unsafe { self.gpu.device.get_query_pool_results(q, 0, &mut ts, vk::QueryResultFlags::TYPE_64) };
        if ok.is_err() {
            return (None, None, None);
        }
        let bits = self.gpu.info.timestamp_bits;
        let mask = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
        let period = self.gpu.timestamp_period_ns;
        let span = |a: u64, b: u64| {
            let ticks = (b & mask).wrapping_sub(a & mask) & mask;
            Some(Duration::from_nanos((ticks as f64 * period) as u64))
        };
        (span(ts[0], ts[1]), span(ts[1], ts[2]), span(ts[2], ts[3]))
    }
}

impl Drop for VulkanConverter {
    fn drop(&mut self) {
        // Children before the device: frame buffers and imports here, then `gpu` (dropped after this body)
        // waits for idle again and destroys pipeline, pools, device and instance.
        self.gpu.wait_idle();
        self.free_frame();
        self.imports.clear(&self.gpu);
    }
}

//! Zero-copy input: importing the capture's dmabuf into Vulkan (VK_KHR_external_memory_fd +
//! VK_EXT_external_memory_dma_buf), so the GPU reads the compositor's pixels where they already are.
//!
//! What is implemented: a **linear** dmabuf (DRM_FORMAT_MOD_LINEAR, or the implicit INVALID modifier of old
//! clients, which means linear for shm-like allocations) is imported as device memory bound to a storage
//! buffer, and the same shader as for uploaded frames reads it at the plane's offset and stride. Imports are
//! cached per dmabuf (by inode), because capture reuses a few buffers: steady state imports nothing.
//!
//! What is not: tiled or compressed modifiers need a `VkImage` created with
//! VkImageDrmFormatModifierExplicitCreateInfoEXT and a shader that samples an image; [`plan_import`] reports
//! them as [`ImportPlan::Image`] (with the Vulkan format that would be used, see [`vk_format`]) and the caller
//! falls back to mapping the buffer. None of the import path can run on the development machine (no /dev/dri,
//! and lavapipe offers no dma_buf import); its pure parts are unit tested here.

#![allow(unsafe_code)] // FFI edge: every unsafe block carries a SAFETY note

use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};

use ash::vk;

use super::VulkanError;
use super::gpu::{Buf, DeviceInfo, Gpu};
use crate::frame::PixelFormat;

/// DRM_FORMAT_MOD_LINEAR.
pub const DRM_FORMAT_MOD_LINEAR: u64 = 0;
/// DRM_FORMAT_MOD_INVALID: "no explicit modifier" (implicitly linear for the buffers capture allocates).
pub const DRM_FORMAT_MOD_INVALID: u64 = 0x00ff_ffff_ffff_ffff;

/// How a dmabuf of a given format and modifier would be imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportPlan {
    /// Linear: imported as a storage buffer and read by the regular shader (implemented).
    Buffer,
    /// Tiled/compressed: would need an image with an explicit DRM format modifier (not implemented).
    Image { format: vk::Format, modifier: u64 },
}

/// The Vulkan format whose memory layout equals this DRM format (for the image import of tiled buffers).
/// `None` for byte orders Vulkan has no format for (RGBX/BGRX8888: they would need a component swizzle).
pub const fn vk_format(format: PixelFormat) -> Option<vk::Format> {
    use PixelFormat as F;
    Some(match format {
        // DRM formats are little-endian words: XRGB8888 is bytes B, G, R, X.
        F::Xrgb8888 | F::Argb8888 => vk::Format::B8G8R8A8_UNORM,
        F::Xbgr8888 | F::Abgr8888 => vk::Format::R8G8B8A8_UNORM,
        F::Xrgb2101010 | F::Argb2101010 => vk::Format::A2R10G10B10_UNORM_PACK32,
        F::Xbgr2101010 | F::Abgr2101010 => vk::Format::A2B10G10R10_UNORM_PACK32,
        F::Rgb888 => vk::Format::B8G8R8_UNORM,
        F::Bgr888 => vk::Format::R8G8B8_UNORM,
        F::Rgb565 => vk::Format::R5G6B5_UNORM_PACK16,
        F::Bgr565 => vk::Format::B5G6R5_UNORM_PACK16,
        F::Rgbx8888 | F::Rgba8888 | F::Bgrx8888 | F::Bgra8888 => return None,
    })
}

/// Decide how (and whether) a dmabuf can be imported on `device`.
pub fn plan_import(format: PixelFormat, modifier: u64, device: &DeviceInfo) -> Result<ImportPlan, VulkanError> {
    if !device.dmabuf_import {
        return Err(VulkanError::Dmabuf(format!(
            "{} offers no VK_EXT_external_memory_dma_buf; map the buffer and upload it instead",
            device.name
        )));
    }
    if modifier == DRM_FORMAT_MOD_LINEAR || modifier == DRM_FORMAT_MOD_INVALID {
        return Ok(ImportPlan::Buffer);
    }
    if !device.drm_modifiers {
        return Err(VulkanError::Dmabuf(format!(
            "modifier {modifier:#x} is not linear and {} offers no VK_EXT_image_drm_format_modifier",
            device.name
        )));
    }
    let format = vk_format(format)
        .ok_or_else(|| VulkanError::Dmabuf(format!("no Vulkan format has the memory layout of {format}")))?;
    Ok(ImportPlan::Image { format, modifier })
}

/// Most dmabufs kept imported at once (capture cycles through two or three).
const CACHE_SLOTS: usize = 4;

/// An imported dmabuf.
#[derive(Debug)]
struct Import {
    /// (st_dev, st_ino) of the dmabuf: the same buffer seen through any fd.
    id: (u64, u64),
    buf: Buf,
    last_used: u64,
}

/// dmabufs imported as storage buffers, reused while capture reuses its buffers.
#[derive(Debug, Default)]
pub struct ImportCache {
    imports: Vec<Import>,
    clock: u64,
}

impl ImportCache {
    /// The buffer (and its size) for `fd`, importing it (and evicting the least recently used import) when not cached.
    /// `min_size`: bytes the frame needs from the start of the dmabuf. No submission may be pending.
    pub fn import(&mut self, gpu: &Gpu, fd: BorrowedFd<'_>, min_size: u64) -> Result<(vk::Buffer, u64), VulkanError> {
        let stat = rustix::fs::fstat(fd).map_err(|e| VulkanError::Dmabuf(format!("fstat: {e}")))?;
        let id = (stat.st_dev, stat.st_ino);
        self.clock += 1;
        if let Some(i) = self.imports.iter_mut().find(|i| i.id == id) {
            if i.buf.size >= min_size {
                i.last_used = self.clock;
                return Ok((i.buf.buffer, i.buf.size));
            }
        }
        // Not cached (or too small: re-import at the new size).
        if let Some(pos) = self.imports.iter().position(|i| i.id == id) {
            let mut old = self.imports.swap_remove(pos);
            gpu.free(&mut old.buf);
        }
        if self.imports.len() >= CACHE_SLOTS
            && let Some(pos) = self.imports.iter().enumerate().min_by_key(|(_, i)| i.last_used).map(|(p, _)| p)
        {
            let mut old = self.imports.swap_remove(pos);
            gpu.free(&mut old.buf);
        }
        let size = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0))
            .map_err(|e| VulkanError::Dmabuf(format!("dmabuf size (lseek): {e}")))?;
        if size < min_size {
            return Err(VulkanError::Dmabuf(format!("dmabuf holds {size} bytes, the frame needs {min_size}")));
        }
        let buf = import_buffer(gpu, fd, size)?;
        let found = (buf.buffer, buf.size);
        self.imports.push(Import { id, buf, last_used: self.clock });
        Ok(found)
    }

    /// Release every import. The GPU must be idle.
    pub fn clear(&mut self, gpu: &Gpu) {
        for mut i in self.imports.drain(..) {
            gpu.free(&mut i.buf);
        }
    }
}

/// Import the whole dmabuf `fd` (`size` bytes) as device memory bound to a storage buffer.
fn import_buffer(gpu: &Gpu, fd: BorrowedFd<'_>, size: u64) -> Result<Buf, VulkanError> {
    let ext = gpu.external_fd.as_ref().ok_or_else(|| VulkanError::Dmabuf("dmabuf import not enabled".into()))?;
    let d = &gpu.device;
    let handle = vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT;
    let mut fd_props = vk::MemoryFdPropertiesKHR::default();
    // SAFETY: valid device with VK_KHR_external_memory_fd enabled; `fd` is an open dmabuf for the call.
    unsafe { ext.get_memory_fd_properties(handle, fd.as_raw_fd(), &mut fd_props) }
        .map_err(VulkanError::vk("vkGetMemoryFdPropertiesKHR"))?;
    let mut external = vk::ExternalMemoryBufferCreateInfo::default().handle_types(handle);
    let info = vk::BufferCreateInfo::default()
        .size(size)
        .usage(vk::BufferUsageFlags::STORAGE_BUFFER)
        .sharing_mode(vk::SharingMode::EXCLUSIVE)
        .push_next(&mut external);
    // SAFETY: valid device; the info chain outlives the call.
    let buffer = unsafe { d.create_buffer(&info, None) }.map_err(VulkanError::vk("vkCreateBuffer (dmabuf)"))?;
    let mut buf = Buf { buffer, memory: vk::DeviceMemory::null(), size, ptr: std::ptr::null_mut(), device_local: true };
    let result = (|| {
        // SAFETY: the buffer is alive.
        let req = unsafe { d.get_buffer_memory_requirements(buffer) };
        let bits = req.memory_type_bits & fd_props.memory_type_bits;
        let type_index = (0..32u32).find(|i| bits & (1 << i) != 0).ok_or(VulkanError::NoMemoryType { size })?;
        // Vulkan takes ownership of the fd on success only: import a duplicate and close it ourselves on failure.
        let dup: OwnedFd = fd.try_clone_to_owned().map_err(|e| VulkanError::Dmabuf(format!("dup: {e}")))?;
        let raw = dup.into_raw_fd();
        let mut import = vk::ImportMemoryFdInfoKHR::default().handle_type(handle).fd(raw);
        let alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(req.size.min(size))
            .memory_type_index(type_index)
            .push_next(&mut import);
        // SAFETY: valid device with dma_buf import enabled; `raw` is an open dmabuf fd we own; the type index is
        // one the fd and the buffer both allow.
        match unsafe { d.allocate_memory(&alloc, None) } {
            Ok(m) => buf.memory = m,
            Err(e) => {
                // SAFETY: the import failed, so we still own `raw`; wrapping it closes it exactly once.
                drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) });
                return Err(VulkanError::Vk { call: "vkAllocateMemory (dmabuf import)", result: e });
            }
        }
        // SAFETY: fresh imported memory of an allowed type, offset 0.
        unsafe { d.bind_buffer_memory(buffer, buf.memory, 0) }.map_err(VulkanError::vk("vkBindBufferMemory (dmabuf)"))
    })();
    match result {
        Ok(()) => Ok(buf),
        Err(e) => {
            gpu.free(&mut buf);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(dmabuf: bool, modifiers: bool) -> DeviceInfo {
        DeviceInfo {
            name: "test".into(),
            device_type: vk::PhysicalDeviceType::DISCRETE_GPU,
            compute_family: Some(0),
            timestamp_bits: 64,
            dmabuf_import: dmabuf,
            drm_modifiers: modifiers,
        }
    }

    #[test]
    fn linear_dmabufs_import_as_buffers() {
        for m in [DRM_FORMAT_MOD_LINEAR, DRM_FORMAT_MOD_INVALID] {
            assert_eq!(plan_import(PixelFormat::Xrgb8888, m, &device(true, false)).ok(), Some(ImportPlan::Buffer));
            assert_eq!(plan_import(PixelFormat::Rgbx8888, m, &device(true, true)).ok(), Some(ImportPlan::Buffer));
        }
    }

    #[test]
    fn tiled_dmabufs_need_modifier_support_and_a_vulkan_format() {
        // I915_FORMAT_MOD_X_TILED.
        let x_tiled = (1u64 << 56) | 1;
        assert!(matches!(
            plan_import(PixelFormat::Xrgb8888, x_tiled, &device(true, false)),
            Err(VulkanError::Dmabuf(_))
        ));
        assert_eq!(
            plan_import(PixelFormat::Xrgb8888, x_tiled, &device(true, true)).ok(),
            Some(ImportPlan::Image { format: vk::Format::B8G8R8A8_UNORM, modifier: x_tiled })
        );
        assert!(plan_import(PixelFormat::Bgrx8888, x_tiled, &device(true, true)).is_err());
    }

    #[test]
    fn no_import_without_the_extension() {
        let err = plan_import(PixelFormat::Xrgb8888, DRM_FORMAT_MOD_LINEAR, &device(false, false)).unwrap_err();
        assert!(err.to_string().contains("VK_EXT_external_memory_dma_buf"), "{err}");
    }

    #[test]
    fn vk_formats_match_drm_byte_order() {
        // Byte-addressed formats: the first byte in memory is the first component of the Vulkan name.
        assert_eq!(vk_format(PixelFormat::Xrgb8888), Some(vk::Format::B8G8R8A8_UNORM));
        assert_eq!(vk_format(PixelFormat::Abgr8888), Some(vk::Format::R8G8B8A8_UNORM));
        assert_eq!(vk_format(PixelFormat::Rgb888), Some(vk::Format::B8G8R8_UNORM));
        assert_eq!(vk_format(PixelFormat::Bgr888), Some(vk::Format::R8G8B8_UNORM));
        // Packed formats: bit order, most significant first, as in DRM.
        assert_eq!(vk_format(PixelFormat::Argb2101010), Some(vk::Format::A2R10G10B10_UNORM_PACK32));
        assert_eq!(vk_format(PixelFormat::Rgb565), Some(vk::Format::R5G6B5_UNORM_PACK16));
        assert_eq!(vk_format(PixelFormat::Bgra8888), None);
        assert_eq!(PixelFormat::ALL.iter().filter(|f| vk_format(**f).is_some()).count(), 12);
    }
}

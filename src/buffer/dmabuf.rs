//! dmabuf frame buffers allocated with GBM on a DRM render node, shared with the compositor through
//! zwp_linux_dmabuf_v1. This is the path towards zero-copy (a GPU converter or VA-API can import the same
//! planes); CPU consumers map the buffer only while they read it.
//!
//! Everything that needs hardware lives in [`GbmAllocator`] and [`DmabufBuffer`]; the decisions (which node,
//! whether dmabuf can be used at all) are pure functions tested without a GPU.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use wayland_client::protocol::wl_buffer::WlBuffer;
use wayland_client::{Dispatch, QueueHandle};
use wayland_protocols::wp::linux_dmabuf::zv1::client::{
    zwp_linux_buffer_params_v1::{self, ZwpLinuxBufferParamsV1},
    zwp_linux_dmabuf_v1::ZwpLinuxDmabufV1,
};

use super::{BufferData, BufferError};
use crate::frame::{FrameLayout, PixelFormat};

/// Directory where DRM device nodes live.
pub const DRI_DIR: &str = "/dev/dri";

/// The `renderD*` names among the names in a DRI directory, lowest-numbered first (the first is the one to use).
fn render_node_names<I, S>(names: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut nodes: Vec<(u32, String)> = names
        .into_iter()
        .filter_map(|n| {
            let n = n.as_ref();
            let num: u32 = n.strip_prefix("renderD")?.parse().ok()?;
            Some((num, n.to_owned()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, n)| n).collect()
}

/// Every render node of this machine (in `dri_dir`), lowest-numbered first.
pub fn render_nodes(dri_dir: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(dri_dir) else { return Vec::new() };
    let names = dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned());
    render_node_names(names).into_iter().map(|n| dri_dir.join(n)).collect()
}

/// The render node of this machine, if any.
pub(crate) fn find_render_node(dri_dir: &Path) -> Option<PathBuf> {
    render_nodes(dri_dir).into_iter().next()
}

/// What the compositor offered for a dmabuf copy (screencopy `linux_dmabuf` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmabufOffer {
    /// DRM fourcc.
    pub fourcc: u32,
    pub width: u32,
    pub height: u32,
}

/// Why a frame is captured over shm instead of dmabuf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DmabufUnavailable {
    #[error("the compositor offers no dmabuf copy for this output")]
    NotOffered,
    #[error("no DRM render node in {DRI_DIR}")]
    NoRenderNode,
    #[error("cannot open GBM on the render node: {0}")]
    Gbm(String),
    #[error("the compositor has no zwp_linux_dmabuf_v1 global to share buffers through")]
    NoLinuxDmabufGlobal,
    #[error("dmabuf format {0:#010x} is not one wl-webrtc can read")]
    UnknownFormat(u32),
    #[error("a dmabuf buffer could not be created: {0}")]
    AllocationFailed(String),
}

/// The dmabuf offer to use, or why not. `allocator` is the result of opening GBM (absent node, failure).
pub fn choose_dmabuf(
    offer: Option<DmabufOffer>,
    allocator: Result<(), &DmabufUnavailable>,
    linux_dmabuf_global: bool,
) -> Result<(DmabufOffer, PixelFormat), DmabufUnavailable> {
    let offer = offer.ok_or(DmabufUnavailable::NotOffered)?;
    allocator.map_err(Clone::clone)?;
    if !linux_dmabuf_global {
        return Err(DmabufUnavailable::NoLinuxDmabufGlobal);
    }
    let format = PixelFormat::from_drm_fourcc(offer.fourcc).ok_or(DmabufUnavailable::UnknownFormat(offer.fourcc))?;
    Ok((offer, format))
}

/// DRM_FORMAT_MOD_LINEAR.
pub(crate) const MOD_LINEAR: u64 = 0;
/// DRM_FORMAT_MOD_INVALID: "implicit modifier", not something GBM can be asked for explicitly.
pub(crate) const MOD_INVALID: u64 = 0x00ff_ffff_ffff_ffff;

/// The modifiers to ask GBM for, out of those the compositor accepts: every explicit one, LINEAR when the
/// list is empty or holds only the implicit modifier (which every importer reads as linear here).
pub(crate) fn usable_modifiers(offered: &[u64]) -> Vec<u64> {
    let explicit: Vec<u64> = offered.iter().copied().filter(|&m| m != MOD_INVALID).collect();
    if explicit.is_empty() { vec![MOD_LINEAR] } else { explicit }
}

/// The render node for a `dev_t` the compositor named (ext-image-copy `dmabuf_device`): the render node with
/// that device number, else this machine's default render node. The protocol says the node type is
/// unspecified, so a primary node's number simply does not match and the default is used.
pub fn render_node_for_device(dri_dir: &Path, dev: u64) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let exact = std::fs::read_dir(dri_dir).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        (name.starts_with("renderD") && e.metadata().ok()?.rdev() == dev).then(|| e.path())
    });
    exact.or_else(|| find_render_node(dri_dir))
}

/// GBM on a render node.
pub struct GbmAllocator {
    device: gbm::Device<File>,
    path: PathBuf,
}

impl std::fmt::Debug for GbmAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GbmAllocator").field("path", &self.path).finish()
    }
}

impl GbmAllocator {
    /// Open GBM on this machine's render node.
    pub fn open_default() -> Result<GbmAllocator, DmabufUnavailable> {
        let path = find_render_node(Path::new(DRI_DIR)).ok_or(DmabufUnavailable::NoRenderNode)?;
        GbmAllocator::open(&path)
    }

    pub fn open(path: &Path) -> Result<GbmAllocator, DmabufUnavailable> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| DmabufUnavailable::Gbm(format!("{}: {e}", path.display())))?;
        let device = gbm::Device::new(file).map_err(|e| DmabufUnavailable::Gbm(e.to_string()))?;
        Ok(GbmAllocator { device, path: path.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One plane of a dmabuf, for a consumer that imports it (the Vulkan converter) instead of mapping it.
#[derive(Debug)]
pub struct DmabufPlane {
    pub fd: std::os::fd::OwnedFd,
    pub offset: u32,
    pub stride: u32,
    pub modifier: u64,
}

/// A GBM buffer object exported to the compositor as a wl_buffer.
pub struct DmabufBuffer {
    bo: gbm::BufferObject<()>,
    buffer: WlBuffer,
    layout: FrameLayout,
}

impl std::fmt::Debug for DmabufBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmabufBuffer").field("layout", &self.layout).finish()
    }
}

impl DmabufBuffer {
    /// Allocate a linear buffer for `offer` and wrap it in a wl_buffer (create_immed).
    pub fn new<D>(
        alloc: &GbmAllocator,
        offer: DmabufOffer,
        format: PixelFormat,
        linux_dmabuf: &ZwpLinuxDmabufV1,
        qh: &QueueHandle<D>,
    ) -> Result<DmabufBuffer, BufferError>
    where
        D: Dispatch<WlBuffer, BufferData> + Dispatch<ZwpLinuxBufferParamsV1, BufferData> + 'static,
    {
        DmabufBuffer::with_modifiers(alloc, offer, format, &[], linux_dmabuf, qh)
    }

    /// Allocate a buffer for `offer` with one of `modifiers` (GBM picks; see [`usable_modifiers`]) and wrap it
    /// in a wl_buffer (create_immed). An empty list means LINEAR.
    pub fn with_modifiers<D>(
        alloc: &GbmAllocator,
        offer: DmabufOffer,
        format: PixelFormat,
        modifiers: &[u64],
        linux_dmabuf: &ZwpLinuxDmabufV1,
        qh: &QueueHandle<D>,
    ) -> Result<DmabufBuffer, BufferError>
    where
        D: Dispatch<WlBuffer, BufferData> + Dispatch<ZwpLinuxBufferParamsV1, BufferData> + 'static,
    {
        let fourcc = gbm::Format::try_from(offer.fourcc)
            .map_err(|_| BufferError::Dmabuf(format!("unknown fourcc {:#x}", offer.fourcc)))?;
        let bo = alloc
            .device
            .create_buffer_object_with_modifiers2::<()>(
                offer.width,
                offer.height,
                fourcc,
                usable_modifiers(modifiers).into_iter().map(gbm::Modifier::from),
                gbm::BufferObjectFlags::RENDERING,
            )
            .map_err(|e| BufferError::Dmabuf(format!("gbm_bo_create {}x{}: {e}", offer.width, offer.height)))?;
        let modifier: u64 = bo.modifier().into();
        let params = linux_dmabuf.create_params(qh, BufferData);
        for plane in 0..bo.plane_count() as i32 {
            let fd = bo.fd_for_plane(plane).map_err(|e| BufferError::Dmabuf(format!("export plane {plane}: {e}")))?;
            params.add(
                fd.as_fd(),
                plane as u32,
                bo.offset(plane),
                bo.stride_for_plane(plane),
                (modifier >> 32) as u32,
                modifier as u32,
            );
        }
        let buffer = params.create_immed(
            offer.width as i32,
            offer.height as i32,
            offer.fourcc,
            zwp_linux_buffer_params_v1::Flags::empty(),
            qh,
            BufferData,
        );
        params.destroy();
        let layout = FrameLayout { width: offer.width, height: offer.height, stride: bo.stride(), format };
        Ok(DmabufBuffer { bo, buffer, layout })
    }

    pub fn layout(&self) -> FrameLayout {
        self.layout
    }

    pub fn wl_buffer(&self) -> &WlBuffer {
        &self.buffer
    }

    /// The buffer's (first and only, for the RGB formats captured) plane as a consumer imports it: a new fd,
    /// the plane's offset and stride, and the format modifier.
    pub fn plane(&self) -> Result<DmabufPlane, BufferError> {
        let fd = self.bo.fd_for_plane(0).map_err(|e| BufferError::Dmabuf(format!("export plane 0: {e}")))?;
        Ok(DmabufPlane {
            fd,
            offset: self.bo.offset(0),
            stride: self.bo.stride_for_plane(0),
            modifier: self.bo.modifier().into(),
        })
    }

    /// Map for reading and run `f(data, stride)`.
    pub fn with_mapped<R>(&mut self, f: impl FnOnce(&[u8], u32) -> R) -> Result<R, BufferError> {
        let (w, h) = (self.layout.width, self.layout.height);
        self.bo.map(0, 0, w, h, |m| f(m.buffer(), m.stride())).map_err(|e| BufferError::Dmabuf(format!("map: {e}")))
    }
}

impl Drop for DmabufBuffer {
    fn drop(&mut self) {
        self.buffer.destroy();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_render_node_wins() {
        let first = |names: &[&str]| render_node_names(names).into_iter().next();
        assert_eq!(first(&["card0", "renderD129", "renderD128", "by-path"]), Some("renderD128".into()));
        assert_eq!(first(&["card0", "by-path"]), None);
        assert_eq!(first(&["renderDx"]), None);
        // Numerically, not by name: renderD1000 comes after renderD200.
        assert_eq!(render_node_names(["renderD1000", "renderD200"]), ["renderD200", "renderD1000"]);
    }

    #[test]
    fn missing_render_node_dir_is_none() {
        assert_eq!(find_render_node(Path::new("/nonexistent/dri")), None);
        assert_eq!(render_node_for_device(Path::new("/nonexistent/dri"), 0xe280), None);
    }

    #[test]
    fn modifiers_fall_back_to_linear() {
        assert_eq!(usable_modifiers(&[]), vec![MOD_LINEAR]);
        assert_eq!(usable_modifiers(&[MOD_INVALID]), vec![MOD_LINEAR]);
        assert_eq!(usable_modifiers(&[MOD_INVALID, 0x0100_0000_0000_0001, MOD_LINEAR]), vec![0x0100_0000_0000_0001, 0]);
    }

    #[test]
    fn dmabuf_choice_explains_each_refusal() {
        let offer = DmabufOffer { fourcc: PixelFormat::Xrgb8888.drm_fourcc(), width: 64, height: 64 };
        assert_eq!(choose_dmabuf(None, Ok(()), true), Err(DmabufUnavailable::NotOffered));
        let no_node = DmabufUnavailable::NoRenderNode;
        assert_eq!(choose_dmabuf(Some(offer), Err(&no_node), true), Err(DmabufUnavailable::NoRenderNode));
        assert_eq!(choose_dmabuf(Some(offer), Ok(()), false), Err(DmabufUnavailable::NoLinuxDmabufGlobal));
        let odd = DmabufOffer { fourcc: 0x1234_5678, ..offer };
        assert_eq!(choose_dmabuf(Some(odd), Ok(()), true), Err(DmabufUnavailable::UnknownFormat(0x1234_5678)));
        assert_eq!(choose_dmabuf(Some(offer), Ok(()), true), Ok((offer, PixelFormat::Xrgb8888)));
    }
}

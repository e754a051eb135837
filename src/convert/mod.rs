//! RGB → NV12 colour conversion (BT.709, limited range), the step between capture and the encoder.
//!
//! This module owns the converters and their scratch memory, nothing else: it reads a mapped frame (any
//! [`PixelFormat`](crate::frame::PixelFormat), any stride, top-down or `y_invert`ed) and writes into an
//! [`Nv12Frame`] the caller keeps between frames. With [`Damage::Rects`] only the damaged 2×2 chroma blocks
//! are rewritten, so the caller's frame must persist from one call to the next.
//!
//! * [`cpu::CpuConverter`] is the fast path: SIMD kernels from `yuvutils-rs`, fed straight from the mapped
//!   buffer for XRGB/ARGB/XBGR/ABGR8888 and RGB/BGR888 and through a small reused row band for everything
//!   else (other byte orders, 10-bit, 565, `y_invert`). It never
//!   allocates per frame in steady state (scratch grows to the largest band seen, then stays).
//! * [`vulkan::VulkanConverter`] runs a compute shader on a Vulkan device (`--convert vulkan`, or `auto` when a
//!   hardware GPU is present): same contract, same damage handling, output within ±1 of the reference.
//! * [`reference::reference_to_nv12`] is the slow, obviously-correct scalar definition every fast path is
//!   tested against (within ±1 per sample).
//!
//! Colour definition: Y = 16 + 219·(Kr·R + Kg·G + Kb·B)/255 with Kr = 0.2126, Kb = 0.0722; each chroma sample
//! is computed from the average R, G, B of its 2×2 block (not the average of four Cb/Cr values), Cb/Cr in
//! 16..=240 centred at 128. Odd sizes are padded by repeating the last column/row (see [`Nv12Frame`]).
//!
//! Damage rectangles are in display orientation (capture already flips them for `y_invert` frames).

pub mod cpu;
pub mod reference;
pub mod vulkan;

use std::sync::OnceLock;

use crate::frame::{Damage, FrameLayout, Nv12Frame};

pub use cpu::CpuConverter;

/// Why a frame could not be converted. The output frame is left in an unspecified but valid state.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// Zero size, or a stride too small for one row of the format.
    #[error("invalid frame layout: {width}x{height}, stride {stride}, format {format}")]
    InvalidLayout { width: u32, height: u32, stride: u32, format: crate::frame::PixelFormat },
    /// The mapped buffer is shorter than the layout says.
    #[error("source buffer holds {got} bytes but a {width}x{height} frame with this stride needs {need}")]
    SourceTooShort { need: usize, got: usize, width: u32, height: u32 },
    /// The frame is too large to address on this platform.
    #[error("frame size overflows the address space")]
    TooLarge,
    /// The SIMD library rejected the planes (a bug in this module, reported rather than panicking).
    #[error("yuvutils rejected the conversion: {0}")]
    Yuv(#[from] yuvutils_rs::YuvError),
    /// An internal bounds check failed (a bug in this module, reported rather than panicking).
    #[error("internal converter bounds check failed: {0}")]
    Internal(&'static str),
    /// The Vulkan converter failed.
    #[error("Vulkan: {0}")]
    Vulkan(#[from] vulkan::VulkanError),
}

/// Bytes a source buffer of `layout` must hold: `stride * (height - 1) + width * bpp` (the last row needs no
/// padding). Errors for an inconsistent layout or one too large to address.
pub(crate) fn required_len(layout: &FrameLayout) -> Result<usize, ConvertError> {
    if !layout.is_consistent() {
        return Err(ConvertError::InvalidLayout {
            width: layout.width,
            height: layout.height,
            stride: layout.stride,
            format: layout.format,
        });
    }
    let row = (layout.width as usize).checked_mul(layout.format.bytes_per_pixel()).ok_or(ConvertError::TooLarge)?;
    let need = (layout.stride as usize)
        .checked_mul(layout.height as usize - 1)
        .and_then(|v| v.checked_add(row))
        .ok_or(ConvertError::TooLarge)?;
    // The NV12 planes must be addressable too (stride and sizes are computed in usize).
    let pw = (layout.width as usize).next_multiple_of(64);
    pw.checked_mul(layout.height as usize + 1).ok_or(ConvertError::TooLarge)?;
    Ok(need)
}

/// Check that `src` can hold a frame of `layout`; returns the minimum number of bytes it must have
/// (`stride * (height - 1) + width * bpp`: the last row needs no padding).
pub(crate) fn check_source(src: &[u8], layout: &FrameLayout) -> Result<usize, ConvertError> {
    let need = required_len(layout)?;
    if src.len() < need {
        return Err(ConvertError::SourceTooShort { need, got: src.len(), width: layout.width, height: layout.height });
    }
    Ok(need)
}

/// Whether `out` is an intact NV12 frame of this visible size (sizes match, planes long enough).
pub(crate) fn fits(out: &Nv12Frame, layout: &FrameLayout) -> bool {
    let pw = out.padded_width() as usize;
    let ph = out.padded_height() as usize;
    out.width == layout.width
        && out.height == layout.height
        && out.stride >= pw
        && out.stride.checked_mul(ph).is_some_and(|n| out.y.len() >= n)
        && out.stride.checked_mul(ph / 2).is_some_and(|n| out.uv.len() >= n)
        && u32::try_from(out.stride).is_ok()
}

/// Which converter to use (`--convert`, config key `convert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ConvertChoice {
    /// Vulkan on a hardware GPU (discrete or integrated), else the CPU. Software Vulkan (lavapipe) is slower
    /// than the CPU SIMD path and is never picked.
    #[default]
    Auto,
    /// CPU SIMD.
    Cpu,
    /// Vulkan on the best device there is, software included; the CPU if there is none.
    Vulkan,
}

impl ConvertChoice {
    pub fn name(self) -> &'static str {
        match self {
            ConvertChoice::Auto => "auto",
            ConvertChoice::Cpu => "cpu",
            ConvertChoice::Vulkan => "vulkan",
        }
    }
}

/// Environment variable that makes the `wl-webrtc` binary answer a Vulkan probe and exit (see
/// [`probe_child_main`]).
pub const PROBE_ENV: &str = "WL_WEBRTC_PROBE_VULKAN";

/// Whether the machine has a hardware Vulkan GPU, probed once per process (creating and destroying an instance
/// each time a capture session starts would be wasted work; GPUs do not come and go).
///
/// Loading the Vulkan loader and every installed driver costs tens of MB that stay mapped after the instance is
/// destroyed (Mesa's lavapipe alone pulls in LLVM: 50 MB of RSS measured), so the `wl-webrtc` binary probes
/// in a short-lived child of itself and stays lean when the answer is "CPU". Other executables (tests, library
/// users) probe in-process.
fn hardware_gpu_present() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| {
        let (found, why) = probe_in_child().unwrap_or_else(probe_here);
        if !found {
            tracing::info!("{why}: converting on the CPU");
        }
        found
    })
}

/// The probe in this process: (hardware GPU found, what was found otherwise).
fn probe_here() -> (bool, String) {
    match vulkan::list_devices() {
        Ok(devices) => {
            let found = vulkan::choose_device(&devices, true).is_some();
            let names: Vec<String> = devices.iter().map(|d| format!("{} ({})", d.name, d.kind_name())).collect();
            (found, format!("no hardware Vulkan GPU (devices: [{}])", names.join(", ")))
        }
        Err(e) => (false, format!("Vulkan unavailable ({e})")),
    }
}

/// The probe in a child `wl-webrtc` (None when this is not the `wl-webrtc` binary or the child fails).
fn probe_in_child() -> Option<(bool, String)> {
    let exe = std::env::current_exe().ok()?;
    if exe.file_name()? != "wl-webrtc" {
        return None;
    }
    let out = std::process::Command::new(exe)
        .env(PROBE_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?;
    match line.split_once(' ') {
        Some(("hardware", _)) => Some((true, String::new())),
        Some(("cpu", why)) => Some((false, why.to_owned())),
        _ => None,
    }
}

/// Run by `main` when [`PROBE_ENV`] is set: print "hardware -" or "cpu WHY" and return.
pub fn probe_child_main() {
    match probe_here() {
        (true, _) => println!("hardware -"),
        (false, why) => println!("cpu {why}"),
    }
}

/// Every way this crate can turn captured RGB into NV12.
#[derive(Debug)]
pub enum Converter {
    /// SIMD conversion on the CPU ([`cpu::CpuConverter`]).
    Cpu(cpu::CpuConverter),
    /// A compute shader on a Vulkan device ([`vulkan::VulkanConverter`]).
    Vulkan(Box<vulkan::VulkanConverter>),
}

impl Converter {
    /// A CPU converter with empty scratch (it sizes itself on the first frame).
    pub fn cpu() -> Converter {
        Converter::Cpu(cpu::CpuConverter::new())
    }

    /// The converter `choice` asks for, or the CPU one when Vulkan cannot be used (with a warning when Vulkan
    /// was asked for explicitly). Never fails.
    pub fn from_choice(choice: ConvertChoice) -> Converter {
        let pref = match choice {
            ConvertChoice::Cpu => return Converter::cpu(),
            ConvertChoice::Auto if !hardware_gpu_present() => return Converter::cpu(),
            ConvertChoice::Auto => vulkan::DevicePreference::HardwareOnly,
            ConvertChoice::Vulkan => vulkan::DevicePreference::Any,
        };
        match vulkan::VulkanConverter::new(pref) {
            Ok(v) => Converter::Vulkan(Box::new(v)),
            Err(e) => {
                tracing::warn!(
                    "--convert {}: Vulkan unavailable: {e}; falling back to the CPU converter",
                    choice.name()
                );
                Converter::cpu()
            }
        }
    }

    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Converter::Cpu(_) => "cpu",
            Converter::Vulkan(_) => "vulkan",
        }
    }

    /// Whether this converter reads dmabufs in place ([`Converter::convert_dmabuf`]).
    pub fn imports_dmabuf(&self) -> bool {
        matches!(self, Converter::Vulkan(v) if v.supports_dmabuf())
    }

    /// Convert a frame that lives in a dmabuf plane, read in place by the GPU. An error (not Vulkan, no
    /// import, a non-linear modifier) means: map the buffer and [`Converter::convert`] its pixels instead.
    pub fn convert_dmabuf(
        &mut self,
        plane: &crate::buffer::dmabuf::DmabufPlane,
        layout: &FrameLayout,
        y_invert: bool,
        damage: &Damage,
        out: &mut Nv12Frame,
    ) -> Result<(), ConvertError> {
        use std::os::fd::AsFd;
        match self {
            Converter::Vulkan(v) => {
                let layout = FrameLayout { stride: plane.stride, ..*layout };
                v.convert_dmabuf(plane.fd.as_fd(), plane.offset, plane.modifier, &layout, y_invert, damage, out)
            }
            Converter::Cpu(_) => Err(ConvertError::Internal("the CPU converter does not import dmabufs")),
        }
    }

    /// Convert `src` (laid out as `layout`, rows bottom-up when `y_invert`) into `out`, touching only the
    /// 2×2 blocks covered by `damage`. If `out` is not a frame of the layout's size it is replaced by a fresh
    /// one and everything is converted. See [`cpu::CpuConverter::convert`].
    ///
    /// A Vulkan device that is lost (or hangs) is dropped for good: this frame and every later one are converted
    /// on the CPU, with a warning.
    pub fn convert(
        &mut self,
        src: &[u8],
        layout: &FrameLayout,
        y_invert: bool,
        damage: &Damage,
        out: &mut Nv12Frame,
    ) -> Result<(), ConvertError> {
        match self {
            Converter::Cpu(c) => c.convert(src, layout, y_invert, damage, out),
            Converter::Vulkan(v) => match v.convert(src, layout, y_invert, damage, out) {
                Err(ConvertError::Vulkan(e)) if e.is_device_lost() => {
                    tracing::warn!("Vulkan device failed ({e}); converting on the CPU from now on");
                    *self = Converter::cpu();
                    self.convert(src, layout, y_invert, &Damage::Full, out)
                }
                other => other,
            },
        }
    }
}

//! `wl-webrtc bench`: in-process timings of the media stages on synthetic desktop frames (criterion benches
//! under `benches/` are the reference; this is the quick check a user runs on their own machine).
//!
//! `bench convert` times CPU SIMD per format, then the Vulkan converter (when a device exists, software ones
//! included) per stage: upload (memcpy into the upload buffer + GPU copy to device memory), dispatch alone
//! (GPU timestamps), readback (GPU copy + memcpy into the caller's frame) and the whole call.

use std::time::Instant;

use serde::Serialize;

use crate::convert::Converter;
use crate::convert::vulkan::{DevicePreference, UploadMode, VulkanConverter, VulkanTimings};
use crate::encode::{Codec, EncoderSettings, Profile, RateControl};
use crate::frame::{Damage, FrameLayout, Nv12Frame, PixelFormat, Rect};
use crate::metrics::percentile;
use crate::synthetic::synthetic_desktop;

/// One measured case.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub stage: &'static str,
    pub case: String,
    pub width: u32,
    pub height: u32,
    pub frames: usize,
    pub p50_ms: f64,
    pub mean_ms: f64,
    /// The Vulkan device, for Vulkan rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

fn row(stage: &'static str, case: String, w: u32, h: u32, ms: &[f64]) -> BenchRow {
    BenchRow {
        stage,
        case,
        width: w,
        height: h,
        frames: ms.len(),
        p50_ms: percentile(ms, 50.0).unwrap_or(0.0),
        mean_ms: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
        device: None,
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A text area, a toolbar and a cursor, ≈ 5 % of the frame (the criterion bench's rectangles at 1080p, scaled).
fn typical_damage(w: u32, h: u32) -> Damage {
    let s = |v: u32, full: u32, of: u32| (u64::from(v) * u64::from(of) / u64::from(full)) as u32;
    let r = |x, y, rw, rh| Rect::new(s(x, 1920, w), s(y, 1080, h), s(rw, 1920, w).max(1), s(rh, 1080, h).max(1));
    Damage::Rects(vec![r(301, 417, 800, 100), r(0, 1040, 500, 40), r(1501, 99, 64, 64)])
}

/// XRGB8888 source frames re-encoded as `format`.
fn source(w: u32, h: u32, format: PixelFormat, t: u32) -> (Vec<u8>, FrameLayout) {
    let xrgb = synthetic_desktop(w, h, t);
    let bpp = format.bytes_per_pixel();
    let mut out = vec![0u8; (w * h) as usize * bpp];
    for (src, dst) in xrgb.chunks_exact(4).zip(out.chunks_exact_mut(bpp)) {
        format.from_rgb8(PixelFormat::Xrgb8888.to_rgb8(src), dst);
    }
    (out, FrameLayout { width: w, height: h, stride: w * bpp as u32, format })
}

/// Conversion time: CPU SIMD per format (full frames, and XRGB8888 with ~5 % damage), then Vulkan per stage
/// unless `choice` is `cpu`. A missing Vulkan device is reported on stderr, not an error.
pub fn convert(
    w: u32,
    h: u32,
    frames: usize,
    choice: crate::convert::ConvertChoice,
) -> Result<Vec<BenchRow>, crate::convert::ConvertError> {
    let mut rows = Vec::new();
    for format in [PixelFormat::Xrgb8888, PixelFormat::Xbgr8888, PixelFormat::Argb8888, PixelFormat::Xrgb2101010] {
        let (src, layout) = source(w, h, format, 0);
        let mut conv = Converter::cpu();
        let mut out = Nv12Frame::new(w, h);
        conv.convert(&src, &layout, false, &Damage::Full, &mut out)?; // warm-up
        let mut ms = Vec::with_capacity(frames);
        for _ in 0..frames {
            let t = Instant::now();
            conv.convert(&src, &layout, false, &Damage::Full, &mut out)?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        rows.push(row("convert", format!("cpu {format}"), w, h, &ms));
    }
    let (src, layout) = source(w, h, PixelFormat::Xrgb8888, 0);
    let damage = typical_damage(w, h);
    let pct = damage.fraction(w, h) * 100.0;
    let mut conv = Converter::cpu();
    let mut out = Nv12Frame::new(w, h);
    conv.convert(&src, &layout, false, &Damage::Full, &mut out)?;
    let mut t = Vec::with_capacity(frames);
    for _ in 0..frames {
        let t0 = Instant::now();
        conv.convert(&src, &layout, false, &damage, &mut out)?;
        t.push(ms(t0.elapsed()));
    }
    rows.push(row("convert", format!("cpu XR24 {pct:.0}% damage"), w, h, &t));

    if choice == crate::convert::ConvertChoice::Cpu {
        return Ok(rows);
    }
    let modes = match VulkanConverter::with_mode(DevicePreference::Any, UploadMode::Auto) {
        Ok(c) if c.device().is_hardware_gpu() => {
            vec![c.mode(), if c.mode() == UploadMode::Staged { UploadMode::Direct } else { UploadMode::Staged }]
        }
        Ok(c) => vec![c.mode()],
        Err(e) => {
            tracing::warn!("bench convert: no Vulkan rows: {e}");
            return Ok(rows);
        }
    };
    for mode in modes {
        let mut vk = match VulkanConverter::with_mode(DevicePreference::Any, mode) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("bench convert: Vulkan ({}) unavailable: {e}", mode.name());
                continue;
            }
        };
        rows.extend(vulkan_rows(&mut vk, &src, &layout, frames, &Damage::Full, "")?);
        rows.extend(vulkan_rows(&mut vk, &src, &layout, frames, &damage, &format!(" {pct:.0}% damage"))?);
    }
    Ok(rows)
}

/// Per-stage rows of the Vulkan converter over `frames` conversions with `damage` (after a full warm-up).
fn vulkan_rows(
    vk: &mut VulkanConverter,
    src: &[u8],
    layout: &FrameLayout,
    frames: usize,
    damage: &Damage,
    what: &str,
) -> Result<Vec<BenchRow>, crate::convert::ConvertError> {
    let (w, h) = (layout.width, layout.height);
    let mut out = Nv12Frame::new(w, h);
    for _ in 0..3 {
        vk.convert(src, layout, false, &Damage::Full, &mut out)?; // warm-up: allocation, pipeline, caches
    }
    let mut all: Vec<VulkanTimings> = Vec::with_capacity(frames);
    for _ in 0..frames {
        vk.convert(src, layout, false, damage, &mut out)?;
        all.push(vk.timings());
    }
    let mode = vk.mode().name();
    let device = format!("{} ({})", vk.device().name, vk.device().kind_name());
    let opt = |d: Option<std::time::Duration>| d.map_or(f64::NAN, ms);
    type Stage = (&'static str, fn(&VulkanTimings) -> Option<std::time::Duration>);
    let stages: [Stage; 8] = [
        ("total", |t| Some(t.total)),
        ("upload", |t| t.upload_gpu.map(|g| g + t.upload_cpu)),
        ("upload memcpy", |t| Some(t.upload_cpu)),
        ("upload GPU copy", |t| t.upload_gpu),
        ("dispatch (GPU)", |t| t.dispatch_gpu),
        ("readback", |t| t.readback_gpu.map(|g| g + t.readback_cpu)),
        ("readback GPU copy", |t| t.readback_gpu),
        ("readback memcpy", |t| Some(t.readback_cpu)),
    ];
    let mut rows = Vec::new();
    for (name, f) in stages {
        let v: Vec<f64> = all.iter().map(|t| opt(f(t))).collect();
        if v.iter().any(|x| x.is_nan()) {
            continue; // no timestamps on this queue
        }
        let mut r = row("convert", format!("vulkan {mode} XR24{what} {name}"), w, h, &v);
        r.device = Some(device.clone());
        rows.push(r);
    }
    Ok(rows)
}

/// Encode time per frame of a moving synthetic desktop at the automatic bitrate, for every codec, the same
/// pictures (x264, then libvpx VP8), in one run.
/// Time each encoder on synthetic desktop frames: x264 and libvpx always, VA-API when `vaapi` names the render
/// node `--encoder` resolved to.
pub fn encode(
    w: u32,
    h: u32,
    frames: usize,
    fps: u32,
    vaapi: Option<&std::path::Path>,
) -> Result<Vec<BenchRow>, crate::media::MediaError> {
    let layout = FrameLayout { width: w, height: h, stride: w * 4, format: PixelFormat::Xrgb8888 };
    let mut conv = Converter::cpu();
    let pictures: Vec<Nv12Frame> = (0..frames.min(60))
        .map(|t| {
            let mut nv12 = Nv12Frame::new(w, h);
            conv.convert(&synthetic_desktop(w, h, t as u32), &layout, false, &Damage::Full, &mut nv12).map(|()| nv12)
        })
        .collect::<Result<_, _>>()?;
    let settings = EncoderSettings {
        width: w,
        height: h,
        fps,
        bitrate_kbps: EncoderSettings::auto_bitrate_kbps(w, h, fps),
        rate_control: RateControl::Cbr,
        threads: 0,
        profile: Profile::ConstrainedBaseline,
        intra_refresh: false,
    };
    let mut rows = Vec::new();
    let mut cases = vec![
        (Codec::H264, None, "x264 ultrafast/zerolatency".to_owned()),
        (Codec::Vp8, None, "libvpx VP8 realtime, cpu-used -8".to_owned()),
    ];
    if let Some(d) = vaapi {
        cases.insert(1, (Codec::H264, Some(d), format!("VA-API H.264 CBR on {}", d.display())));
    }
    for (codec, device, case) in cases {
        let mut enc = crate::media::open_encoder(codec, settings, device)?;
        let now = Instant::now();
        let mut ms = Vec::with_capacity(frames);
        for i in 0..frames {
            let t = Instant::now();
            enc.encode(&pictures[i % pictures.len()], now + std::time::Duration::from_millis(i as u64 * 16), false)?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        rows.push(row("encode", case, w, h, &ms));
    }
    Ok(rows)
}

/// Which links of the zero-copy chain this machine has, for the `bench` header: (link, what was found).
pub fn paths(cfg: &crate::config::Config) -> Vec<(&'static str, String)> {
    let nodes: Vec<String> = crate::buffer::dmabuf::render_nodes(std::path::Path::new(crate::buffer::dmabuf::DRI_DIR))
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let dmabuf = if nodes.is_empty() {
        "no: no render node (capture uses shared memory)".to_owned()
    } else {
        format!("yes: {}", nodes.join(", "))
    };
    let vulkan = match crate::convert::vulkan::list_devices() {
        Ok(devices) if devices.is_empty() => "no Vulkan device".to_owned(),
        Ok(devices) => devices
            .iter()
            .map(|d| {
                let import = if d.dmabuf_import { "dmabuf import" } else { "no dmabuf import" };
                let modifiers = if d.drm_modifiers { "DRM modifiers" } else { "no DRM modifiers" };
                format!("{} ({}: {import}, {modifiers})", d.name, d.kind_name())
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => format!("unavailable ({e})"),
    };
    #[cfg(feature = "vaapi")]
    let vaapi = match crate::encode::vaapi::probe(cfg.encoder.vaapi_device.as_deref()) {
        Ok(d) => format!("{} on {}", d.vendor, d.path.display()),
        Err(e) => format!("unavailable: {e}"),
    };
    #[cfg(not(feature = "vaapi"))]
    let vaapi = {
        let _ = cfg;
        crate::media::NO_VAAPI_BUILD.to_owned()
    };
    vec![
        ("dmabuf capture", dmabuf),
        ("Vulkan", vulkan),
        ("VA-API H.264", vaapi),
        ("capture into VA surfaces", "not written (see README, zero-copy chain)".to_owned()),
    ]
}

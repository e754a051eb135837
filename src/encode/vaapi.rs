//! VA-API (hardware H.264 encode) discovery through cros-libva: which render node has an H.264 encode
//! entrypoint, or exactly why none does. `wl-webrtc list-encoders` shows it. (The VA-API encoder itself is the
//! next step of issue 18; this is what `--encoder auto` will decide on.)

use std::path::{Path, PathBuf};

use cros_codecs::libva::{self, VAEntrypoint, VAProfile};

/// A render node that can encode H.264.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaapiDevice {
    pub path: PathBuf,
    pub vendor: String,
    /// H.264 profiles with an encode entrypoint, with the entrypoint (`EncSlice` or the low-power
    /// `EncSliceLP`).
    pub h264_encode: Vec<(&'static str, &'static str)>,
}

/// Why VA-API cannot encode here.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaapiUnavailable {
    #[error("no render node (/dev/dri/renderD*): this machine has no GPU driver loaded")]
    NoRenderNode,
    #[error("cannot open {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path}: the VA driver did not initialise ({reason}); is a VA-API driver installed for this GPU?")]
    Init { path: PathBuf, reason: String },
    #[error("{path} ({vendor}) has no H.264 encode entrypoint (it may decode only)")]
    NoH264Encode { path: PathBuf, vendor: String },
}

/// The H.264 profiles browsers decode, by preference.
const PROFILES: [(VAProfile::Type, &str); 3] = [
    (VAProfile::VAProfileH264ConstrainedBaseline, "constrained-baseline"),
    (VAProfile::VAProfileH264Main, "main"),
    (VAProfile::VAProfileH264High, "high"),
];

/// The render nodes of this machine, in order.
pub fn render_nodes() -> Vec<PathBuf> {
    let mut nodes: Vec<PathBuf> = std::fs::read_dir("/dev/dri")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("renderD")))
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    nodes
}

/// Probe `device`, or every render node until one can encode H.264 (the last node's reason otherwise).
pub fn probe(device: Option<&Path>) -> Result<VaapiDevice, VaapiUnavailable> {
    let nodes = match device {
        Some(d) => vec![d.to_path_buf()],
        None => render_nodes(),
    };
    let mut last = VaapiUnavailable::NoRenderNode;
    for node in nodes {
        match probe_one(&node) {
            Ok(d) => return Ok(d),
            Err(e) => {
                tracing::debug!("VA-API: {e}");
                last = e;
            }
        }
    }
    Err(last)
}

fn probe_one(path: &Path) -> Result<VaapiDevice, VaapiUnavailable> {
    let display = libva::Display::open_drm_display(path).map_err(|e| match e {
        libva::OpenDrmDisplayError::DeviceOpen(io) => {
            VaapiUnavailable::Open { path: path.to_path_buf(), reason: io.to_string() }
        }
        other => VaapiUnavailable::Init { path: path.to_path_buf(), reason: other.to_string() },
    })?;
    let vendor = display.query_vendor_string().unwrap_or_else(|e| e.to_owned());
    let offered = display.query_config_profiles().unwrap_or_default();
    let mut h264_encode = Vec::new();
    for (profile, name) in PROFILES {
        if !offered.contains(&profile) {
            continue;
        }
        let entrypoints = display.query_config_entrypoints(profile).unwrap_or_default();
        let found =
            [(VAEntrypoint::VAEntrypointEncSlice, "EncSlice"), (VAEntrypoint::VAEntrypointEncSliceLP, "EncSliceLP")]
                .into_iter()
                .find(|(e, _)| entrypoints.contains(e));
        if let Some((_, entry)) = found {
            h264_encode.push((name, entry));
        }
    }
    if h264_encode.is_empty() {
        return Err(VaapiUnavailable::NoH264Encode { path: path.to_path_buf(), vendor });
    }
    Ok(VaapiDevice { path: path.to_path_buf(), vendor, h264_encode })
}

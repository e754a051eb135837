//! Capture sources. The capture thread owns the Wayland connection; a source hands out one frame at a time
//! (pixels stay in the source's reused buffer until the next call).
//!
//! Sources: `screencopy` (wlr-screencopy v3). `ext-image-copy` and `pipewire` are chosen by `--source` but
//! not built yet; `auto` picks the best one the compositor offers.

pub mod screencopy;
pub mod wayland;

use std::path::PathBuf;

use crate::config::SourceKind;

/// Errors of any capture source. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "no Wayland display: WAYLAND_DISPLAY is not set. Run wl-webrtc inside a Wayland session (Sway, Hyprland, …), \
         or start a private headless desktop: `wl-webrtc --headless 1920x1080`"
    )]
    NoDisplay,
    #[error(
        "cannot connect to the Wayland display at {path}: {source}. Is the compositor running? \
         Without one, use `wl-webrtc --headless 1920x1080`"
    )]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    MissingGlobal(String),
    #[error("no output named {name:?}; available outputs: {}", list_or_none(.available))]
    UnknownOutput { name: String, available: Vec<String> },
    #[error("the compositor has no outputs")]
    NoOutputs,
    #[error("output {0} disappeared")]
    OutputGone(String),
    #[error("the compositor went away: {0}")]
    CompositorGone(String),
    #[error("Wayland protocol error: {0}")]
    Protocol(String),
    #[error("capture buffer: {0}")]
    Buffer(#[from] crate::buffer::BufferError),
    #[error("the compositor failed {0} frames in a row; giving up")]
    RepeatedFailures(u32),
    #[error("{0}")]
    Unsupported(String),
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() { "(none)".to_owned() } else { names.join(", ") }
}

/// The source actually used after `auto` is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedSource {
    Screencopy,
}

/// Resolve `--source` against what the compositor offers.
pub fn resolve_source(
    kind: SourceKind,
    offers_ext_image_copy: bool,
    offers_screencopy: bool,
) -> Result<ResolvedSource, CaptureError> {
    match kind {
        SourceKind::Screencopy if offers_screencopy => Ok(ResolvedSource::Screencopy),
        SourceKind::Screencopy => Err(CaptureError::MissingGlobal(
            "the compositor does not offer wlr-screencopy (zwlr_screencopy_manager_v1); try --source pipewire".into(),
        )),
        SourceKind::Auto if offers_screencopy => Ok(ResolvedSource::Screencopy),
        SourceKind::Auto if offers_ext_image_copy => Err(CaptureError::Unsupported(
            "the compositor offers only ext-image-copy-capture, which this build cannot use yet; try --source pipewire"
                .into(),
        )),
        SourceKind::Auto => Err(CaptureError::MissingGlobal(
            "the compositor offers neither ext-image-copy-capture nor wlr-screencopy; try --source pipewire".into(),
        )),
        SourceKind::ExtImageCopy => Err(CaptureError::Unsupported(
            "--source ext-image-copy is not implemented yet; use --source screencopy".into(),
        )),
        SourceKind::Pipewire => {
            Err(CaptureError::Unsupported("--source pipewire is not implemented yet; use --source screencopy".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_prefers_screencopy_when_that_is_all_we_can_use() {
        assert_eq!(resolve_source(SourceKind::Auto, false, true).ok(), Some(ResolvedSource::Screencopy));
        assert!(resolve_source(SourceKind::Auto, false, false).is_err());
        assert!(resolve_source(SourceKind::Screencopy, true, false).is_err());
    }

    #[test]
    fn unknown_output_lists_the_others() {
        let e = CaptureError::UnknownOutput { name: "DP-9".into(), available: vec!["DP-1".into(), "HDMI-A-1".into()] };
        assert_eq!(e.to_string(), "no output named \"DP-9\"; available outputs: DP-1, HDMI-A-1");
    }
}

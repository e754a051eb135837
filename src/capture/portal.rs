//! The xdg-desktop-portal ScreenCast dance (over D-Bus, with ashpd): CreateSession, SelectSources (one
//! monitor, cursor embedded or as metadata when offered), Start, OpenPipeWireRemote. It yields the PipeWire
//! node id and a connected PipeWire fd for [`super::pipewire`].
//!
//! The restore token the portal returns is kept in a file (`$XDG_STATE_HOME/wl-webrtc/portal-restore-token`),
//! so the user is asked once; a token the portal no longer accepts is simply replaced by the next one.
//! [`PortalSession`] owns the D-Bus connection, the session and a small tokio runtime that keeps the
//! connection serviced: dropping it closes the session, which ends the portal's stream.
//! Every call has a deadline; the user's answer to the portal dialog has the longest one. Blocking: call and
//! drop it from plain threads, never from inside an async runtime.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ashpd::desktop::screencast::{CursorMode as PortalCursor, Screencast, SelectSourcesOptions, SourceType};
use ashpd::desktop::{PersistMode, Session};

use crate::config::CursorMode;

/// Deadline of each portal call that needs no user.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline of `Start`, which may show a dialog and wait for the user.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Errors of the portal. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error(
        "no D-Bus session bus ({0}): the portal is reached over the session bus (DBUS_SESSION_BUS_ADDRESS). \
         Run inside a desktop session, or capture a PipeWire node directly with --pipewire-node"
    )]
    NoSessionBus(String),
    #[error(
        "no xdg-desktop-portal service on the session bus ({0}): install xdg-desktop-portal and a backend for \
         your desktop (xdg-desktop-portal-wlr, -gnome, -kde), or use --source screencopy / --pipewire-node"
    )]
    NoPortal(String),
    #[error(
        "xdg-desktop-portal has no ScreenCast backend for this desktop ({0}): install xdg-desktop-portal-wlr \
         (wlroots), -gnome or -kde, and check XDG_CURRENT_DESKTOP"
    )]
    NoScreenCast(String),
    #[error("screen sharing was cancelled in the portal dialog")]
    Cancelled,
    #[error(
        "the portal refused screen sharing ({0}): the backend failed or the request was denied; its log \
         (e.g. xdg-desktop-portal-wlr's) says why"
    )]
    Denied(String),
    #[error("the portal returned no stream")]
    NoStream,
    #[error("the portal did not answer {0} within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("portal {0}: {1}")]
    Call(&'static str, String),
    #[error("the portal session is not usable: {0}")]
    Setup(String),
}

/// How to reach the portal.
#[derive(Debug, Clone)]
pub struct PortalOptions {
    /// D-Bus address (default: the session bus from the environment).
    pub bus_address: Option<String>,
    /// Where the restore token lives (`None`: not persisted).
    pub restore_token: Option<PathBuf>,
    pub cursor: CursorMode,
}

/// Default restore-token file: `$XDG_STATE_HOME/wl-webrtc/portal-restore-token`, or
/// `~/.local/state/wl-webrtc/portal-restore-token`.
pub fn default_token_path() -> Option<PathBuf> {
    crate::config::xdg_file("XDG_STATE_HOME", ".local/state", "portal-restore-token")
}

/// A started ScreenCast session. Keep it alive for the whole capture.
pub struct PortalSession {
    // Field order is drop order: the session is closed (best effort) in Drop, then the proxy, then the
    // runtime that services the connection.
    session: Option<Session<Screencast>>,
    proxy: Option<Screencast>,
    rt: tokio::runtime::Runtime,
    node_id: u32,
    size: Option<(i32, i32)>,
    fd: Option<OwnedFd>,
    /// The cursor comes as metadata (asked for and offered), not painted in.
    cursor_metadata: bool,
}

impl std::fmt::Debug for PortalSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalSession").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

/// Classify an ashpd error of `call`.
fn classify(call: &'static str, e: ashpd::Error) -> PortalError {
    use ashpd::desktop::ResponseError;
    let text = e.to_string();
    match e {
        ashpd::Error::Response(ResponseError::Cancelled) => PortalError::Cancelled,
        ashpd::Error::Response(ResponseError::Other) => PortalError::Denied(format!("{call} answered response 2")),
        ashpd::Error::PortalNotFound(iface) => PortalError::NoScreenCast(iface.to_string()),
        _ if text.contains("ServiceUnknown") || text.contains("not provided by any .service") => {
            PortalError::NoPortal(text)
        }
        _ if text.contains("UnknownInterface") || text.contains("UnknownMethod") => PortalError::NoScreenCast(text),
        _ => PortalError::Call(call, text),
    }
}

async fn within<T>(
    call: &'static str,
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, ashpd::Error>>,
) -> Result<T, PortalError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(|e| classify(call, e)),
        Err(_) => Err(PortalError::Timeout(call, limit)),
    }
}

impl PortalSession {
    /// Run CreateSession → SelectSources → Start → OpenPipeWireRemote.
    pub fn open(opts: &PortalOptions) -> Result<PortalSession, PortalError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("portal-dbus")
            .enable_all()
            .build()
            .map_err(|e| PortalError::Setup(format!("cannot start the D-Bus runtime: {e}")))?;
        let token_path = opts.restore_token.clone();
        let token = token_path.as_deref().and_then(read_token);
        let cursor = opts.cursor;
        let address = opts.bus_address.clone();
        let (proxy, session, streams, cursor_metadata) = rt.block_on(async move {
            let conn = connect_bus(address.as_deref()).await?;
            let proxy = within("ScreenCast", CALL_TIMEOUT, Screencast::with_connection(conn)).await?;
            let session = within("CreateSession", CALL_TIMEOUT, proxy.create_session(Default::default())).await?;
            let available = within("AvailableCursorModes", CALL_TIMEOUT, proxy.available_cursor_modes()).await?;
            let cursor_mode = pick_cursor(cursor, available.contains(PortalCursor::Metadata));
            tracing::debug!(?available, ?cursor_mode, restore = token.is_some(), "portal SelectSources");
            let options = SelectSourcesOptions::default()
                .set_sources(Some(SourceType::Monitor.into()))
                .set_multiple(false)
                .set_cursor_mode(cursor_mode)
                .set_persist_mode(PersistMode::ExplicitlyRevoked)
                .set_restore_token(token.as_deref());
            let request = within("SelectSources", CALL_TIMEOUT, proxy.select_sources(&session, options)).await?;
            request.response().map_err(|e| classify("SelectSources", e))?;
            let request = within("Start", START_TIMEOUT, proxy.start(&session, None, Default::default())).await?;
            let streams = request.response().map_err(|e| classify("Start", e))?;
            Ok::<_, PortalError>((proxy, session, streams, cursor_mode == PortalCursor::Metadata))
        })?;
        if let (Some(path), Some(new)) = (token_path.as_deref(), streams.restore_token()) {
            write_token(path, new);
        }
        let stream = streams.streams().first().ok_or(PortalError::NoStream)?;
        let (node_id, size) = (stream.pipe_wire_node_id(), stream.size());
        let fd = rt.block_on(within(
            "OpenPipeWireRemote",
            CALL_TIMEOUT,
            proxy.open_pipe_wire_remote(&session, Default::default()),
        ))?;
        tracing::info!(node_id, ?size, "portal ScreenCast started");
        Ok(PortalSession {
            session: Some(session),
            proxy: Some(proxy),
            rt,
            node_id,
            size,
            fd: Some(fd),
            cursor_metadata,
        })
    }

    /// The PipeWire node of the (first) stream.
    pub fn node_id(&self) -> u32 {
        self.node_id
    }

    /// The stream's size as the portal announced it.
    pub fn size(&self) -> Option<(i32, i32)> {
        self.size
    }

    /// Whether the cursor comes as SPA cursor metadata rather than painted into frames.
    pub fn cursor_metadata(&self) -> bool {
        self.cursor_metadata
    }

    /// The PipeWire remote fd (once).
    pub fn take_fd(&mut self) -> Result<OwnedFd, PortalError> {
        self.fd.take().ok_or_else(|| PortalError::Setup("the PipeWire fd was already taken".into()))
    }
}

impl Drop for PortalSession {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(2), session.close()).await });
        }
        self.proxy = None;
    }
}

async fn connect_bus(address: Option<&str>) -> Result<ashpd::zbus::Connection, PortalError> {
    let fut = async {
        match address {
            Some(a) => ashpd::zbus::connection::Builder::address(a)?.build().await,
            None => ashpd::zbus::Connection::session().await,
        }
    };
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(PortalError::NoSessionBus(e.to_string())),
        Err(_) => Err(PortalError::Timeout("the session bus", CALL_TIMEOUT)),
    }
}

/// The portal cursor mode for `--cursor`: metadata only when the portal offers it (else embedded, said once).
fn pick_cursor(want: CursorMode, metadata_offered: bool) -> PortalCursor {
    match want {
        CursorMode::Hidden => PortalCursor::Hidden,
        CursorMode::Embedded => PortalCursor::Embedded,
        CursorMode::Metadata if metadata_offered => PortalCursor::Metadata,
        CursorMode::Metadata => {
            tracing::warn!("the portal offers no cursor metadata: the cursor is painted into frames instead");
            PortalCursor::Embedded
        }
    }
}

fn read_token(path: &Path) -> Option<String> {
    let t = std::fs::read_to_string(path).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

fn write_token(path: &Path, token: &str) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{token}\n"))?;
        std::fs::rename(&tmp, path)
    };
    match write() {
        Ok(()) => tracing::debug!(path = %path.display(), "portal restore token saved"),
        Err(e) => tracing::warn!(path = %path.display(), "cannot save the portal restore token: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_metadata_falls_back_to_embedded() {
        assert_eq!(pick_cursor(CursorMode::Metadata, false), PortalCursor::Embedded);
        assert_eq!(pick_cursor(CursorMode::Metadata, true), PortalCursor::Metadata);
        assert_eq!(pick_cursor(CursorMode::Hidden, true), PortalCursor::Hidden);
        assert_eq!(pick_cursor(CursorMode::Embedded, true), PortalCursor::Embedded);
    }

    #[test]
    fn token_round_trips_through_the_file() {
        let dir = std::env::temp_dir().join(format!("wlw-token-{}", std::process::id()));
        let path = dir.join("wl-webrtc").join("portal-restore-token");
        assert_eq!(read_token(&path), None);
        write_token(&path, "abc-123");
        assert_eq!(read_token(&path).as_deref(), Some("abc-123"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn responses_are_classified() {
        use ashpd::desktop::ResponseError;
        assert!(matches!(classify("Start", ashpd::Error::Response(ResponseError::Cancelled)), PortalError::Cancelled));
        let denied = classify("Start", ashpd::Error::Response(ResponseError::Other));
        assert!(denied.to_string().contains("response 2"), "{denied}");
    }
}

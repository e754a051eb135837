//! The axum routes: `GET /` viewer page, `GET /whep.html` minimal WHEP player, `GET /ws` signaling,
//! `POST /whep` + `DELETE /whep/{resource}` (WHEP; CORS only for `--allow-origin` origins), `GET /api/status`,
//! `POST /api/shutdown`, `GET /metrics`, all behind [`guard`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use super::auth::{self, Origin, Policy};
use super::listen::ConnInfo;
use super::messages::{ClientMessage, MAX_MESSAGE_BYTES, ServerMessage, parse_client};
use crate::server::{Hub, HubError};
use crate::transport::webrtc::TransportError;

/// The viewer page (embedded).
pub(crate) const VIEWER_HTML: &str = include_str!("../../web/viewer.html");
/// A minimal WHEP player (embedded), for existing-player compatibility checks.
pub(crate) const WHEP_HTML: &str = include_str!("../../web/whep.html");

/// Shared state of the HTTP server.
#[derive(Debug, Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    /// Token, Host and Origin rules.
    pub policy: Arc<Policy>,
    /// Whether the server speaks HTTPS (then plain HTTP from beyond loopback is redirected to it).
    pub tls: bool,
    /// Flips to true on shutdown: WebSocket viewers are told bye.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// WHEP resources: an unguessable id per session → its viewer.
    sessions: Arc<Mutex<HashMap<String, u64>>>,
}

impl AppState {
    pub fn new(hub: Arc<Hub>, policy: Policy, tls: bool, shutdown: tokio::sync::watch::Receiver<bool>) -> AppState {
        AppState { hub, policy: Arc::new(policy), tls, shutdown, sessions: Arc::default() }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { Html(VIEWER_HTML) }))
        .route("/whep.html", get(|| async { Html(WHEP_HTML) }))
        .route("/ws", get(ws_upgrade))
        .route("/whep", post(whep_post).options(cors_preflight))
        .route("/whep/{id}", delete(whep_delete).options(cors_preflight))
        .route("/api/status", get(status))
        .route("/api/shutdown", post(shutdown))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .with_state(state)
}

fn refuse(code: StatusCode, why: String) -> Response {
    tracing::info!(code = code.as_u16(), "request refused: {why}");
    (code, format!("{why}\n")).into_response()
}

/// Every request passes here first: the Host it was addressed as, HTTPS beyond loopback, the Origin of a
/// browser request, and the token. Pages (`/`, `/whep.html`) need the token too, but a page without it is
/// still sent (with 401) so that it can use the token it kept in sessionStorage and explain itself.
async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let conn = req.extensions().get::<ConnInfo>().copied();
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let host = host.or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    if !st.policy.host_ok(host.as_deref()) {
        let h = host.as_deref().unwrap_or("(none)");
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!("this server is not addressed as {h:?} (add the name with --allow-host)"),
        );
    }
    let tls = conn.is_some_and(|c| c.tls);
    if st.tls && conn.is_some_and(|c| !c.tls && !c.peer.ip().is_loopback()) {
        let target = format!("https://{}{}", host.as_deref().unwrap_or(""), req.uri().path());
        let mut r = (StatusCode::PERMANENT_REDIRECT, "this server speaks HTTPS\n").into_response();
        if let Ok(v) = HeaderValue::from_str(&target) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    let authz = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let authorized = st.policy.authorized(authz, req.uri().query());
    if matches!(req.uri().path(), "/" | "/whep.html") {
        let mut r = next.run(req).await;
        if !authorized {
            *r.status_mut() = StatusCode::UNAUTHORIZED;
        }
        r.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        return r;
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let listed = match st.policy.origin(origin, host.as_deref(), tls) {
        Origin::Foreign(o) => {
            return refuse(
                StatusCode::FORBIDDEN,
                format!("a page of {o} may not use this server (the owner can list it with --allow-origin)"),
            );
        }
        Origin::Listed(o) => Some(o),
        Origin::None | Origin::Same => None,
    };
    let mut r = if req.method() == Method::OPTIONS {
        next.run(req).await
    } else if !authorized {
        let mut r = (StatusCode::UNAUTHORIZED, "missing or wrong token\n").into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    } else {
        next.run(req).await
    };
    if let Some(o) = listed
        && let Ok(v) = HeaderValue::from_str(&o)
    {
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Location"));
    }
    r
}

/// A CORS preflight; the guard has refused foreign origins already and names a listed one in its answer.
async fn cors_preflight() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, DELETE, OPTIONS"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Authorization, Content-Type"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    r
}

async fn status(State(st): State<AppState>) -> Response {
    Json(st.hub.status()).into_response()
}

async fn metrics(State(st): State<AppState>) -> Response {
    let mut r = st.hub.prometheus().into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    r
}

/// `wl-webrtc stop`: ask this instance to shut down gracefully.
async fn shutdown(State(st): State<AppState>) -> Response {
    tracing::info!("shutdown requested through the API");
    st.hub.request_stop();
    (StatusCode::ACCEPTED, "shutting down\n").into_response()
}

fn hub_error(e: &HubError) -> Response {
    let code = match e {
        HubError::Full(_) => StatusCode::SERVICE_UNAVAILABLE,
        HubError::Transport(TransportError::BadOffer(_) | TransportError::NoCodec { .. }) => StatusCode::BAD_REQUEST,
        HubError::Transport(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, format!("{e}\n")).into_response()
}

async fn whep_post(
    State(st): State<AppState>,
    conn: Option<axum::Extension<ConnInfo>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ctype.starts_with("application/sdp") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "WHEP offers must be Content-Type: application/sdp\n")
            .into_response();
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "the SDP offer is not UTF-8\n").into_response();
    };
    match st.hub.add_viewer(offer, conn.map(|c| c.peer.ip())).await {
        Ok((id, answer, _peer)) => {
            let resource = auth::generate_token();
            {
                let mut s = st.sessions();
                // Forget the resources of viewers that ended on their own.
                s.retain(|_, v| st.hub.has_viewer(*v));
                s.insert(resource.clone(), id);
            }
            let mut r = (StatusCode::CREATED, answer).into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
            if let Ok(loc) = HeaderValue::from_str(&format!("/whep/{resource}")) {
                h.insert(header::LOCATION, loc);
            }
            r
        }
        Err(e) => {
            tracing::info!("WHEP offer refused: {e}");
            hub_error(&e)
        }
    }
}

/// End a WHEP session: only its own (unguessable) resource URL does.
async fn whep_delete(State(st): State<AppState>, Path(resource): Path<String>) -> Response {
    let id = st.sessions().remove(&resource);
    match id {
        Some(id) if st.hub.remove_viewer(id) => StatusCode::OK.into_response(),
        _ => (StatusCode::NOT_FOUND, "no such session\n").into_response(),
    }
}

async fn ws_upgrade(
    State(st): State<AppState>,
    conn: Option<axum::Extension<ConnInfo>>,
    ws: WebSocketUpgrade,
) -> Response {
    let from = conn.map(|c| c.peer.ip());
    // The protocol limit is generous so that an oversize message still gets a readable error from us.
    ws.max_message_size(16 * MAX_MESSAGE_BYTES).on_upgrade(move |socket| ws_session(st, socket, from))
}

async fn send(socket: &mut WebSocket, msg: ServerMessage) -> bool {
    socket.send(Message::Text(msg.to_json().into())).await.is_ok()
}

/// Tell the client what went wrong (and with `code`, whether trying again can help) and close the socket.
async fn fail_with(socket: &mut WebSocket, code: &str, message: String) {
    tracing::info!("signaling error ({code}): {message}");
    send(socket, ServerMessage::Error { message, code: code.to_owned() }).await;
    let _ = socket.send(Message::Close(None)).await;
}

async fn fail(socket: &mut WebSocket, message: String) {
    fail_with(socket, "protocol", message).await;
}

async fn wait_shutdown(rx: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard wait_for returns is dropped here, before anything else awaits.
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Signaling messages a WebSocket may send: a whole ICE trickle fits in the burst; a flood closes it.
const WS_MESSAGES_PER_S: u32 = 20;
const WS_MESSAGE_BURST: u32 = 200;

async fn ws_session(st: AppState, mut socket: WebSocket, from: Option<std::net::IpAddr>) {
    let mut viewer: Option<(u64, Arc<crate::transport::webrtc::Peer>)> = None;
    let mut shutdown = st.shutdown.clone();
    let mut budget = crate::input::limit::TokenBucket::new(WS_MESSAGES_PER_S, WS_MESSAGE_BURST);
    loop {
        let msg = tokio::select! {
            m = socket.recv() => m,
            () = wait_shutdown(&mut shutdown) => {
                send(&mut socket, ServerMessage::Bye { reason: "server shutting down".into() }).await;
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                fail(&mut socket, "binary messages are not part of the signaling protocol".into()).await;
                break;
            }
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::debug!("websocket error: {e}");
                break;
            }
        };
        if !budget.allow(std::time::Instant::now()) {
            fail(&mut socket, format!("more than {WS_MESSAGES_PER_S} signaling messages per second")).await;
            break;
        }
        match parse_client(&text) {
            Ok(ClientMessage::Offer { sdp }) => {
                if viewer.is_some() {
                    fail(&mut socket, "one offer per connection; reconnect to renegotiate".into()).await;
                    break;
                }
                match st.hub.add_viewer(&sdp, from).await {
                    Ok((id, answer, peer)) => {
                        viewer = Some((id, peer));
                        if !send(&mut socket, ServerMessage::Answer { sdp: answer }).await {
                            break;
                        }
                    }
                    Err(e) => {
                        fail_with(&mut socket, e.code(), e.to_string()).await;
                        break;
                    }
                }
            }
            Ok(ClientMessage::Candidate { candidate, sdp_mid, sdp_mline_index }) => match &viewer {
                Some((_, peer)) => {
                    if let Err(e) = peer.add_candidate(candidate, sdp_mid, sdp_mline_index).await {
                        tracing::debug!("remote candidate rejected: {e}");
                    }
                }
                None => {
                    fail(&mut socket, "candidate before offer".into()).await;
                    break;
                }
            },
            Ok(ClientMessage::Bye) => break,
            Err(message) => {
                fail(&mut socket, message).await;
                break;
            }
        }
    }
    if let Some((id, _)) = viewer {
        st.hub.remove_viewer(id);
    }
}

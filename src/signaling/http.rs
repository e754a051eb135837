//! The axum routes: `GET /` viewer page, `GET /whep.html` minimal WHEP player, `GET /ws` signaling,
//! `POST /whep` + `DELETE /whep/{id}` (WHEP, with CORS), `GET /api/status`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use super::auth;
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
    /// Required token, if any.
    pub token: Option<Arc<str>>,
    /// Flips to true on shutdown: WebSocket viewers are told bye.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
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
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .with_state(state)
}

fn authorized(st: &AppState, headers: &HeaderMap, uri: &Uri) -> bool {
    let authz = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    auth::token_ok(st.token.as_deref(), auth::presented_token(authz, uri.query()))
}

fn unauthorized() -> Response {
    let mut r = (StatusCode::UNAUTHORIZED, "missing or wrong token\n").into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    cors(r)
}

fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("Location"));
    r
}

async fn cors_preflight() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, DELETE, OPTIONS"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("Authorization, Content-Type"));
    cors(r)
}

async fn status(State(st): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if !authorized(&st, &headers, &uri) {
        return unauthorized();
    }
    Json(st.hub.status()).into_response()
}

async fn metrics(State(st): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if !authorized(&st, &headers, &uri) {
        return unauthorized();
    }
    let mut r = st.hub.prometheus().into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    r
}

/// `wl-webrtc stop`: ask this instance to shut down gracefully.
async fn shutdown(State(st): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if !authorized(&st, &headers, &uri) {
        return unauthorized();
    }
    tracing::info!("shutdown requested through the API");
    st.hub.request_stop();
    (StatusCode::ACCEPTED, "shutting down\n").into_response()
}

fn hub_error(e: &HubError) -> Response {
    let code = match e {
        HubError::Full(_) => StatusCode::SERVICE_UNAVAILABLE,
        HubError::Transport(TransportError::BadOffer(_) | TransportError::NoH264) => StatusCode::BAD_REQUEST,
        HubError::Transport(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    cors((code, format!("{e}\n")).into_response())
}

async fn whep_post(State(st): State<AppState>, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    if !authorized(&st, &headers, &uri) {
        return unauthorized();
    }
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ctype.starts_with("application/sdp") {
        return cors(
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "WHEP offers must be Content-Type: application/sdp\n").into_response(),
        );
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return cors((StatusCode::BAD_REQUEST, "the SDP offer is not UTF-8\n").into_response());
    };
    match st.hub.add_viewer(offer).await {
        Ok((id, answer, _peer)) => {
            let mut r = (StatusCode::CREATED, answer).into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
            if let Ok(loc) = HeaderValue::from_str(&format!("/whep/{id}")) {
                h.insert(header::LOCATION, loc);
            }
            cors(r)
        }
        Err(e) => {
            tracing::info!("WHEP offer refused: {e}");
            hub_error(&e)
        }
    }
}

async fn whep_delete(State(st): State<AppState>, headers: HeaderMap, uri: Uri, Path(id): Path<String>) -> Response {
    if !authorized(&st, &headers, &uri) {
        return unauthorized();
    }
    match id.parse::<u64>() {
        Ok(id) if st.hub.remove_viewer(id) => cors(StatusCode::OK.into_response()),
        _ => cors((StatusCode::NOT_FOUND, "no such viewer\n").into_response()),
    }
}

async fn ws_upgrade(State(st): State<AppState>, headers: HeaderMap, uri: Uri, ws: WebSocketUpgrade) -> Response {
    if !authorized(&st, &headers, &uri) {
        return unauthorized();
    }
    // The protocol limit is generous so that an oversize message still gets a readable error from us.
    ws.max_message_size(16 * MAX_MESSAGE_BYTES).on_upgrade(move |socket| ws_session(st, socket))
}

async fn send(socket: &mut WebSocket, msg: ServerMessage) -> bool {
    socket.send(Message::Text(msg.to_json().into())).await.is_ok()
}

/// Tell the client what went wrong and close the socket cleanly.
async fn fail(socket: &mut WebSocket, message: String) {
    tracing::info!("signaling error: {message}");
    send(socket, ServerMessage::Error { message }).await;
    let _ = socket.send(Message::Close(None)).await;
}

async fn wait_shutdown(rx: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard wait_for returns is dropped here, before anything else awaits.
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn ws_session(st: AppState, mut socket: WebSocket) {
    let mut viewer: Option<(u64, Arc<crate::transport::webrtc::Peer>)> = None;
    let mut shutdown = st.shutdown.clone();
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
        match parse_client(&text) {
            Ok(ClientMessage::Offer { sdp }) => {
                if viewer.is_some() {
                    fail(&mut socket, "one offer per connection; reconnect to renegotiate".into()).await;
                    break;
                }
                match st.hub.add_viewer(&sdp).await {
                    Ok((id, answer, peer)) => {
                        viewer = Some((id, peer));
                        if !send(&mut socket, ServerMessage::Answer { sdp: answer }).await {
                            break;
                        }
                    }
                    Err(e) => {
                        fail(&mut socket, e.to_string()).await;
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

//! The streaming session: one capture+media thread producing `EncodedFrame`s, fanned out to every viewer of
//! their codec through a broadcast channel per codec (the frames' `Bytes` are shared, never copied), and the
//! viewer tasks. Each codec is a stream of its own with its own `PipelineCore` (its viewers, keyframes,
//! bitrate); capture serves them all.
//!
//! The decisions (nobody watching → no capture; a new viewer, a PLI/FIR or a viewer that fell behind → one
//! IDR per interval; the bitrate from the viewers' feedback) are the `pipeline::PipelineCore`'s, fed here with
//! the viewers' events and asked by the capture and media threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{broadcast, oneshot};

use crate::config::Config;
use crate::control::LossMeter;
use crate::encode::{Codec, EncodedFrame};
use crate::input::inject::{InputCommand, InputSender};
use crate::input::limit::TokenBucket;
use crate::input::{InputCounters, InputStatus};
use crate::metrics::{CodecCounters, PipelineMetrics};
use crate::pipeline::{CaptureStep, EncodePlan, Event, PipelineCore, Refresh};
use crate::transport::webrtc::{
    ChannelEvent, DataChannel, InboundChannel, Peer, PeerEvent, TransportConfig, TransportError,
};

/// Frames buffered per viewer before it counts as lagging (then it waits for the next IDR).
const FANOUT_DEPTH: usize = 8;
/// Longest a single frame may take to hand to a peer's transport (then it is skipped).
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// A peer whose every send times out this long is dropped.
const PEER_STUCK_TIMEOUT: Duration = Duration::from_secs(10);
/// A frame is not queued behind more than this much of the pacer's backlog (it would arrive too late).
const PACER_BACKLOG_LIMIT: Duration = Duration::from_millis(300);
/// A viewer that has not connected (ICE + DTLS) this long after its offer is dropped.
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(10);
/// Offers answered but not yet connected, at most; a new one beyond this evicts the oldest. Pending viewers
/// do not count against `max_viewers`, so a burst of half-open offers cannot lock real viewers out.
pub const MAX_PENDING: usize = 32;

/// Live gauges for `/api/status` (counters and latencies live in `PipelineMetrics`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamStats {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub bitrate_kbps: f64,
    pub frames_captured: u64,
    pub frames_encoded: u64,
    pub frames_dropped: u64,
    pub keyframes: u64,
    pub keyframes_resent: u64,
    /// The bitrate the encoder is set to now (below the configured one while viewer feedback says so).
    pub target_bitrate_kbps: u32,
    /// Lowest fresh receiver estimate (REMB) among the viewers, if any viewer sends one.
    pub estimate_kbps: Option<u32>,
    /// How frames travel from the compositor to the encoders (each codec's encoder is in `codecs`).
    pub path: MediaPath,
}

/// The media path in use (`stream.path` in `/api/status`), as the capture thread last saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MediaPath {
    /// Capture buffers: "shm" (shared memory, or PipeWire's copied out) or "dmabuf".
    pub buffers: Option<&'static str>,
    /// How the converter read them: "map" (from memory) or "gpu-import" (the GPU read the dmabuf in place).
    pub read: Option<&'static str>,
    /// RGB→NV12: "cpu" or "vulkan".
    pub converter: Option<&'static str>,
}

/// `/api/status` document.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub sessions: usize,
    /// Connected viewers.
    pub viewers: usize,
    /// Viewers whose offer was answered but that have not connected yet (dropped after 10 s).
    pub pending: usize,
    pub output: Option<String>,
    /// "ok", or "lost: <why>" while the compositor or output is gone (capture is retried every second).
    pub capture: String,
    pub stream: StreamStats,
    /// Per-stage latency: `{stage: {p50_ms, p95_ms, count}}` for capture_wait, copy, convert, encode, send.
    pub latency_ms: serde_json::Value,
    /// Remote control: allowed or not, and what happened to viewers' input messages.
    pub input: InputStatus,
    /// Per codec: its viewers, whether its encoder is open, frames, keyframes, bytes.
    pub codecs: std::collections::BTreeMap<&'static str, CodecCounters>,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("too many viewers (at most {0} may watch at once)")]
    Full(usize),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl HubError {
    /// The signaling error code for this refusal (see `signaling::messages::ServerMessage::Error`).
    pub fn code(&self) -> &'static str {
        match self {
            HubError::Full(_) => "full",
            HubError::Transport(TransportError::NoCodec { .. }) => "codec",
            HubError::Transport(TransportError::BadOffer(_)) => "offer",
            HubError::Transport(_) => "internal",
        }
    }
}

/// Lock `m`. Every mutex here guards plain state that a panic elsewhere cannot leave half-updated in a
/// harmful way (counters, the latest status values, decision state), so a poisoned lock is used as it is
/// rather than an update being skipped.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `{"t":"ping","c":T}` on the input channel: the page's clock T (ms since the Unix epoch).
fn clock_ping(data: &[u8]) -> Option<f64> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ping {
        t: String,
        c: f64,
    }
    if !data.starts_with(br#"{"t":"ping""#) {
        return None;
    }
    serde_json::from_slice::<Ping>(data).ok().filter(|p| p.t == "ping" && p.c.is_finite()).map(|p| p.c)
}

/// The answer to a clock ping: the page's time back and ours (the wall clock that stamps abs-capture-time),
/// from which the page estimates our clock's offset (NTP-style, half the round trip).
fn pong(c: f64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!(r#"{{"t":"pong","c":{c},"s":{:.3}}}"#, now.as_secs_f64() * 1000.0)
}

/// A viewer task, from its offer on.
#[derive(Debug)]
struct ViewerSlot {
    cancel: oneshot::Sender<()>,
    connected: bool,
    answered: Instant,
}

/// Shared state of a streaming session.
#[derive(Debug)]
pub struct Hub {
    /// One fan-out per codec, indexed like `Codec::ALL`.
    frames: [broadcast::Sender<EncodedFrame>; 2],
    /// Each codec's decisions (its viewers, IDR, bitrate, refresh; capture serves them all): see `pipeline`.
    cores: Mutex<[PipelineCore; 2]>,
    viewers: Mutex<HashMap<u64, ViewerSlot>>,
    /// Connected viewers (`viewers` also holds pending ones).
    viewer_count: AtomicUsize,
    next_id: AtomicU64,
    max_viewers: usize,
    transport: TransportConfig,
    stats: Mutex<StreamStats>,
    metrics: Mutex<PipelineMetrics>,
    output: Mutex<Option<String>>,
    capture_state: Mutex<String>,
    /// Set on shutdown: the media thread and every viewer task end.
    stop: Arc<AtomicBool>,
    /// Whether viewers may control the desktop (`--allow-input`).
    input_allowed: bool,
    /// Cursor metadata for the viewers' `input` channels (`--cursor metadata`): the latest position and image
    /// messages (see `cursor`).
    cursor_position: tokio::sync::watch::Sender<Option<Arc<str>>>,
    cursor_image: tokio::sync::watch::Sender<Option<Arc<str>>>,
    input_counters: Arc<InputCounters>,
    /// The injector, once started (only when input is allowed).
    input: Mutex<Option<InputSender>>,
    /// The desktop's clipboard (input allowed): viewers' texts go to it …
    clipboard: Mutex<Option<crate::input::clipboard::ClipboardHandle>>,
    /// … and its changes, as the `clipboard` message, go to every viewer that may use input.
    clipboard_text: tokio::sync::watch::Sender<Option<Arc<str>>>,
}

impl Hub {
    pub fn new(cfg: &Config, transport: TransportConfig, stop: Arc<AtomicBool>) -> Arc<Hub> {
        Arc::new(Hub {
            frames: [broadcast::channel(FANOUT_DEPTH).0, broadcast::channel(FANOUT_DEPTH).0],
            cores: Mutex::new([PipelineCore::new(cfg.fps), PipelineCore::new(cfg.fps)]),
            viewers: Mutex::new(HashMap::new()),
            viewer_count: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            max_viewers: cfg.server.max_viewers,
            transport,
            stats: Mutex::new(StreamStats::default()),
            metrics: Mutex::new(PipelineMetrics::default()),
            output: Mutex::new(None),
            capture_state: Mutex::new("ok".to_owned()),
            stop,
            input_allowed: cfg.input.allow,
            cursor_position: tokio::sync::watch::channel(None).0,
            cursor_image: tokio::sync::watch::channel(None).0,
            input_counters: Arc::new(InputCounters::default()),
            input: Mutex::new(None),
            clipboard: Mutex::new(None),
            clipboard_text: tokio::sync::watch::channel(None).0,
        })
    }

    /// Connect the injector (input allowed): validated events of viewers go to it from now on.
    pub fn set_input(&self, sender: InputSender) {
        {
            let mut i = lock(&self.input);
            *i = Some(sender);
        }
    }

    fn input_sender(&self) -> Option<InputSender> {
        lock(&self.input).clone()
    }

    /// Connect the desktop's clipboard (input allowed): viewers' clipboard texts become its selection.
    pub fn set_clipboard(&self, handle: crate::input::clipboard::ClipboardHandle) {
        *lock(&self.clipboard) = Some(handle);
    }

    /// Clipboard thread: the desktop's selection changed to `text`; every viewer that may use input gets it
    /// once (a view-only viewer never does).
    pub fn clipboard_changed(&self, text: &str) {
        if !self.input_allowed {
            return;
        }
        let msg = serde_json::json!({ "t": "clipboard", "text": text }).to_string();
        tracing::debug!(bytes = text.len(), "clipboard: the desktop's selection goes to the viewers");
        self.clipboard_text.send_replace(Some(msg.into()));
    }

    /// One message from viewer `id`'s `input` data channel, arriving at `now`: dropped (view-only, or over the
    /// viewer's rate limit `limit`), rejected (invalid) or queued for the injector. Counted either way.
    pub(crate) fn input_message(&self, id: u64, data: &[u8], limit: &mut TokenBucket, now: Instant) {
        let c = &self.input_counters;
        InputCounters::add(&c.received, 1);
        if !self.input_allowed {
            InputCounters::add(&c.dropped, 1);
            return;
        }
        if !limit.allow(now) {
            if limit.refused() == 1 {
                tracing::warn!(viewer = id, "input over the rate limit; excess messages are dropped");
            }
            InputCounters::add(&c.rate_limited, 1);
            InputCounters::add(&c.dropped, 1);
            return;
        }
        match crate::input::parse(data) {
            Ok(crate::input::InputEvent::Clipboard(text)) => match lock(&self.clipboard).as_ref() {
                Some(clipboard) if clipboard.set(text) => InputCounters::add(&c.injected, 1),
                _ => InputCounters::add(&c.dropped, 1),
            },
            Ok(event) => match self.input_sender() {
                Some(tx) => {
                    tx.send(InputCommand::Event { viewer: id, event });
                }
                None => InputCounters::add(&c.dropped, 1),
            },
            Err(e) => {
                tracing::debug!(viewer = id, "input message rejected: {e}");
                InputCounters::add(&c.rejected, 1);
            }
        }
    }

    /// Viewer `id` opened a second `input` channel: the transport closed it; count and say so.
    fn input_channel_refused(&self, id: u64) {
        tracing::warn!(viewer = id, "refused a second `input` data channel (one per viewer); the first stays");
        InputCounters::add(&self.input_counters.channels_refused, 1);
    }

    /// Viewer `id` stopped sending input: release whatever it holds.
    fn input_gone(&self, id: u64) {
        if let Some(tx) = self.input_sender() {
            tx.send(InputCommand::ViewerGone(id));
        }
    }

    /// Capture thread: what changed about the cursor (messages from `cursor::CursorMessages::update`).
    pub fn update_cursor(&self, (pos, image): (Option<String>, Option<String>)) {
        if let Some(image) = image {
            self.cursor_image.send_replace(Some(image.into()));
        }
        if let Some(pos) = pos {
            self.cursor_position.send_replace(Some(pos.into()));
        }
    }

    /// Serve viewer `id`'s `input` data channel until it closes: tell the page whether input is allowed,
    /// hand every message to [`Hub::input_message`], and send cursor metadata as it changes.
    async fn run_input_channel(self: Arc<Self>, id: u64, channel: DataChannel) {
        let hello = format!(r#"{{"t":"state","input":{}}}"#, self.input_allowed);
        let _ = channel.send_text(&hello).await;
        let mut position = self.cursor_position.subscribe();
        let mut image = self.cursor_image.subscribe();
        // Only changes from now on (the selection at join time is not a change).
        let mut clipboard = self.clipboard_text.subscribe();
        // What the channel has now (a viewer joining a still cursor gets it at once).
        position.mark_changed();
        image.mark_changed();
        let mut open = false;
        // One bucket per channel, and the transport allows one `input` channel per peer: per viewer.
        let mut limit = TokenBucket::default();
        loop {
            tokio::select! {
                ev = channel.next() => match ev {
                    ChannelEvent::Open => {
                        open = true;
                        let _ = channel.send_text(&hello).await;
                    }
                    ChannelEvent::Message(data) => match clock_ping(&data) {
                        // A clock ping (the page's live-latency clock sync): answered, never injected.
                        Some(c) if limit.allow(Instant::now()) => {
                            let _ = channel.send_text(&pong(c)).await;
                        }
                        Some(_) => {}
                        None => self.input_message(id, &data, &mut limit, Instant::now()),
                    },
                    ChannelEvent::Closed => break,
                },
                Ok(()) = clipboard.changed(), if open && self.input_allowed => {
                    let msg = clipboard.borrow_and_update().clone();
                    if let Some(m) = msg {
                        let _ = channel.send_text(&m).await;
                    }
                }
                // The image first, so a page never positions a cursor it has no picture for.
                Ok(()) = image.changed(), if open => {
                    let msg = image.borrow_and_update().clone();
                    if let Some(m) = msg {
                        let _ = channel.send_text(&m).await;
                    }
                }
                Ok(()) = position.changed(), if open && !image.has_changed().unwrap_or(false) => {
                    let msg = position.borrow_and_update().clone();
                    if let Some(m) = msg {
                        let _ = channel.send_text(&m).await;
                    }
                }
            }
        }
        tracing::debug!(viewer = id, "input channel closed");
        self.input_gone(id);
    }

    /// Set on shutdown: the media thread and every viewer task end when they see it.
    pub fn stop_flag(&self) -> &AtomicBool {
        &self.stop
    }

    /// Ask everything to end (`POST /api/shutdown`).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The output being streamed (status).
    pub fn set_output(&self, name: &str) {
        *lock(&self.output) = Some(name.to_owned());
    }

    /// Capture thread: the size of the frames it captures and the path they take (status); a new path is
    /// logged.
    pub fn set_frame(&self, width: u32, height: u32, path: MediaPath) {
        let mut st = lock(&self.stats);
        (st.width, st.height) = (width, height);
        if st.path != path {
            let name = |v: Option<&str>| v.unwrap_or("?").to_owned();
            tracing::info!(
                "media path: {} buffers, read by {}, converted by {}",
                name(path.buffers),
                name(path.read),
                name(path.converter)
            );
            st.path = path;
        }
    }

    /// Media thread: frames and bits per second sent over the last window (status).
    pub fn set_rates(&self, fps: f64, bitrate_kbps: f64) {
        let mut st = lock(&self.stats);
        (st.fps, st.bitrate_kbps) = (fps, bitrate_kbps);
    }

    /// The input counters, shared with the injector thread.
    pub fn input_counters(&self) -> Arc<InputCounters> {
        Arc::clone(&self.input_counters)
    }

    pub fn viewers(&self) -> usize {
        self.viewer_count.load(Ordering::Relaxed)
    }

    /// `codec`'s pipeline core, locked. A panic elsewhere while it was held leaves plain decision state
    /// behind, still usable: the lock's poison is cleared rather than the update skipped.
    fn with_core<R>(&self, codec: Codec, f: impl FnOnce(&mut PipelineCore) -> R) -> R {
        f(&mut lock(&self.cores)[codec.index()])
    }

    fn core_event(&self, codec: Codec, event: Event) {
        self.with_core(codec, |c| c.handle(Instant::now(), event));
    }

    /// An event every codec's stream sees (the source is shared).
    fn all_cores_event(&self, event: Event) {
        let now = Instant::now();
        for c in lock(&self.cores).iter_mut() {
            c.handle(now, event);
        }
    }

    /// A keyframe for `codec`'s viewers (a PLI/FIR, a viewer that fell behind).
    pub fn request_keyframe(&self, codec: Codec) {
        self.core_event(codec, Event::KeyframeRequested);
    }

    /// The capture source was (re)opened: every stream restarts from a keyframe.
    pub fn source_reset(&self) {
        self.all_cores_event(Event::SourceReset);
    }

    /// Capture thread: capture now, wait, or idle (nobody watches any codec)? The soonest any stream wants.
    pub fn poll_capture(&self, now: Instant) -> CaptureStep {
        let cores = lock(&self.cores);
        cores.iter().map(|c| c.poll_capture(now)).fold(CaptureStep::Idle, |a, b| match (a, b) {
            (CaptureStep::Capture, _) | (_, CaptureStep::Capture) => CaptureStep::Capture,
            (CaptureStep::WaitUntil(x), CaptureStep::WaitUntil(y)) => CaptureStep::WaitUntil(x.min(y)),
            (CaptureStep::WaitUntil(x), CaptureStep::Idle) | (CaptureStep::Idle, CaptureStep::WaitUntil(x)) => {
                CaptureStep::WaitUntil(x)
            }
            (CaptureStep::Idle, CaptureStep::Idle) => CaptureStep::Idle,
        })
    }

    /// Capture thread: a frame asked for at `requested_at` arrived.
    pub fn frame_captured(&self, requested_at: Instant) {
        self.all_cores_event(Event::FrameCaptured { requested_at });
    }

    /// Media thread: whether anyone watches `codec` (else its encoder stays closed).
    pub fn watched(&self, codec: Codec) -> bool {
        self.with_core(codec, |c| c.viewers() > 0)
    }

    /// Media thread: how to encode the picture about to be encoded in `codec` (IDR or not, bitrate), given
    /// the configured bitrate for its size.
    pub fn plan_encode(&self, codec: Codec, now: Instant, ceiling_kbps: u32) -> EncodePlan {
        let (plan, (target, estimate)) = self.with_core(codec, |c| {
            let plan = c.plan_encode(now, ceiling_kbps);
            (plan, c.bitrate_status())
        });
        {
            let mut st = lock(&self.stats);
            st.target_bitrate_kbps = target.unwrap_or(ceiling_kbps);
            st.estimate_kbps = estimate;
        }
        plan
    }

    /// Media thread: no new picture; is a keyframe of `codec` due anyway (and how)?
    pub fn poll_refresh(&self, codec: Codec, now: Instant, have_picture: bool) -> Option<Refresh> {
        self.with_core(codec, |c| c.poll_refresh(now, have_picture))
    }

    /// Media thread: hand a frame to every viewer of its codec.
    pub fn publish(&self, frame: EncodedFrame) {
        let codec = frame.codec;
        self.core_event(codec, Event::Published { bytes: frame.data.len(), idr: frame.idr });
        let _ = self.frames[codec.index()].send(frame);
    }

    /// Each codec's counters, with its viewers as its pipeline core counts them.
    fn codec_counters(&self) -> [CodecCounters; 2] {
        let mut counters = lock(&self.metrics).codecs;
        let cores = lock(&self.cores);
        for (c, core) in counters.iter_mut().zip(cores.iter()) {
            c.viewers = core.viewers();
        }
        counters
    }

    /// Media thread: `codec`'s encoder is open (which one) or closed (`None`).
    pub fn encoder_state(&self, codec: Codec, backend: Option<&'static str>) {
        let open = backend.is_some();
        self.with_metrics(|m| {
            let c = &mut m.codecs[codec.index()];
            if backend.is_some() {
                c.encoder = backend;
            }
            c.encoder_opens += u64::from(open && !c.encoder_open);
            c.encoder_open = open;
        });
    }

    pub fn status(&self) -> Status {
        let mut stream = lock(&self.stats).clone();
        let latency_ms = {
            let m = lock(&self.metrics);
            stream.frames_captured = m.frames_captured;
            stream.frames_encoded = m.frames_encoded;
            stream.frames_dropped = m.frames_dropped;
            stream.keyframes = m.keyframes;
            stream.keyframes_resent = m.keyframes_resent;
            m.stage_summary()
        };
        Status {
            version: env!("CARGO_PKG_VERSION"),
            sessions: 1,
            viewers: self.viewers(),
            pending: lock(&self.viewers).values().filter(|v| !v.connected).count(),
            output: lock(&self.output).clone(),
            capture: lock(&self.capture_state).clone(),
            stream,
            latency_ms,
            input: self.input_counters.snapshot(self.input_allowed),
            codecs: {
                let counters = self.codec_counters();
                Codec::ALL.iter().map(|c| (c.name(), counters[c.index()])).collect()
            },
        }
    }

    /// Prometheus text for `/metrics`.
    pub fn prometheus(&self) -> String {
        let (fps, kbps, target) = {
            let s = lock(&self.stats);
            (s.fps, s.bitrate_kbps, s.target_bitrate_kbps)
        };
        let codecs = self.codec_counters();
        let mut text = lock(&self.metrics).prometheus(self.viewers(), fps, kbps, target, &codecs);
        let i = self.input_counters.snapshot(self.input_allowed);
        for (name, help, value) in [
            ("wl_webrtc_input_received_total", "Input messages received from viewers.", i.received),
            ("wl_webrtc_input_injected_total", "Input events injected into the session.", i.injected),
            (
                "wl_webrtc_input_dropped_total",
                "Input messages dropped (input not allowed, over the rate limit, queue full, no compositor).",
                i.dropped,
            ),
            ("wl_webrtc_input_rejected_total", "Input messages rejected as invalid.", i.rejected),
            (
                "wl_webrtc_input_rate_limited_total",
                "Input messages dropped over a viewer's rate limit.",
                i.rate_limited,
            ),
            ("wl_webrtc_input_channels_refused_total", "Extra input data channels refused.", i.channels_refused),
            (
                "wl_webrtc_input_backpressure_waits_total",
                "Times the injector waited for the compositor to read its requests.",
                i.backpressure_waits,
            ),
        ] {
            text += &format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n");
        }
        text
    }

    pub fn set_capture_state(&self, state: impl Into<String>) {
        {
            let mut c = lock(&self.capture_state);
            *c = state.into();
        }
    }

    /// Record something in the metrics.
    pub fn with_metrics(&self, f: impl FnOnce(&mut PipelineMetrics)) {
        {
            let mut m = lock(&self.metrics);
            f(&mut m);
        }
    }

    /// Answer a viewer's offer and start streaming to it once it connects. Returns the viewer id and the
    /// SDP answer. Refused when `max_viewers` are connected; a pending (not yet connected) viewer beyond
    /// [`MAX_PENDING`] evicts the oldest pending one.
    /// `from`: where the viewer's signaling came from (it gets only sockets that can reach it).
    pub async fn add_viewer(
        self: &Arc<Self>,
        offer: &str,
        from: Option<std::net::IpAddr>,
    ) -> Result<(u64, String, Arc<Peer>), HubError> {
        if self.viewers() >= self.max_viewers {
            return Err(HubError::Full(self.max_viewers));
        }
        let mut peer = Peer::answer(offer, &self.transport.for_viewer(from)).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (cancel_tx, cancel_rx) = oneshot::channel();
        {
            let mut v = lock(&self.viewers);
            let pending: Vec<(Instant, u64)> =
                v.iter().filter(|(_, s)| !s.connected).map(|(id, s)| (s.answered, *id)).collect();
            if pending.len() >= MAX_PENDING
                && let Some(&(_, oldest)) = pending.iter().min()
                && let Some(slot) = v.remove(&oldest)
            {
                tracing::info!(viewer = oldest, "too many viewers connecting at once: dropping the oldest");
                let _ = slot.cancel.send(());
            }
            v.insert(id, ViewerSlot { cancel: cancel_tx, connected: false, answered: Instant::now() });
        }
        let answer = std::mem::take(&mut peer.answer);
        let events = std::mem::replace(&mut peer.events, tokio::sync::mpsc::unbounded_channel().1);
        let channels = std::mem::replace(&mut peer.data_channels, tokio::sync::mpsc::unbounded_channel().1);
        let peer = Arc::new(peer);
        tracing::info!(viewer = id, "offer answered; waiting for the viewer to connect");
        tokio::spawn(Arc::clone(self).run_viewer(id, Arc::clone(&peer), events, channels, cancel_rx));
        Ok((id, answer, peer))
    }

    /// Whether viewer `id` is still there (pending or connected).
    pub fn has_viewer(&self, id: u64) -> bool {
        lock(&self.viewers).contains_key(&id)
    }

    /// Viewer `id` connected: it counts against `max_viewers` from now on (false: the limit is reached).
    fn viewer_connected(&self, id: u64) -> bool {
        let mut v = lock(&self.viewers);
        let connected = v.values().filter(|s| s.connected).count();
        match v.get_mut(&id) {
            Some(slot) if connected < self.max_viewers => {
                slot.connected = true;
                self.viewer_count.store(connected + 1, Ordering::SeqCst);
                true
            }
            _ => false,
        }
    }

    /// End a viewer (DELETE on its WHEP resource, WebSocket closed, bye). False if unknown.
    pub fn remove_viewer(&self, id: u64) -> bool {
        let slot = lock(&self.viewers).remove(&id);
        match slot {
            Some(slot) => {
                let _ = slot.cancel.send(());
                true
            }
            None => false,
        }
    }

    /// End every viewer (shutdown).
    pub fn remove_all(&self) {
        let all: Vec<_> = lock(&self.viewers).drain().collect();
        for (_, slot) in all {
            let _ = slot.cancel.send(());
        }
    }

    async fn run_viewer(
        self: Arc<Self>,
        id: u64,
        peer: Arc<Peer>,
        mut events: tokio::sync::mpsc::UnboundedReceiver<PeerEvent>,
        mut channels: tokio::sync::mpsc::UnboundedReceiver<InboundChannel>,
        mut cancel: oneshot::Receiver<()>,
    ) {
        let mut input_tasks = Vec::new();
        let codec = peer.codec();
        let mut frames = self.frames[codec.index()].subscribe();
        let mut sender = peer.sender();
        let track = peer.track();
        let mut connected = false;
        let mut need_idr = true;
        let mut sent = 0u64;
        // Since when every send timed out (a peer that takes nothing this long is gone).
        let mut stuck_since: Option<Instant> = None;
        let ssrc = peer.ssrc();
        let congestion = peer.congestion();
        let rtcp = async {
            let mut loss = LossMeter::default();
            while let Some(fb) = Peer::feedback(&track, ssrc).await {
                let now = Instant::now();
                if fb.keyframe {
                    tracing::debug!(viewer = id, "keyframe request (PLI/FIR)");
                    self.request_keyframe(codec);
                }
                let fraction = fb.report.and_then(|(lost, highest)| loss.on_report(now, lost, highest));
                self.with_core(codec, |c| {
                    if let Some(bps) = fb.remb_bps {
                        c.handle(now, Event::Remb { id, bps });
                    }
                    if let Some(fraction) = fraction {
                        c.handle(now, Event::Loss { id, fraction });
                    }
                });
            }
        };
        tokio::pin!(rtcp);
        let mut stop_poll = tokio::time::interval(Duration::from_millis(100));
        let pending_deadline = tokio::time::sleep(PENDING_TIMEOUT);
        tokio::pin!(pending_deadline);
        loop {
            tokio::select! {
                _ = &mut cancel => break,
                _ = stop_poll.tick() => {
                    if self.stop.load(Ordering::Relaxed) { break; }
                    // The send-side estimate (a browser that gets transport-wide sequence numbers sends no REMB).
                    if connected && let Some(bps) = congestion.estimate_bps() {
                        self.with_core(codec, |c| c.handle(Instant::now(), Event::SendSideEstimate { id, bps }));
                    }
                }
                () = &mut pending_deadline, if !connected => {
                    tracing::info!(viewer = id, "the viewer did not connect within {PENDING_TIMEOUT:?}; dropping it");
                    break;
                }
                ev = events.recv() => match ev {
                    Some(PeerEvent::Connected) if !connected => {
                        if !self.viewer_connected(id) {
                            tracing::info!(viewer = id, max = self.max_viewers, "too many viewers; dropping the newest");
                            break;
                        }
                        connected = true;
                        need_idr = true;
                        self.core_event(codec, Event::ViewerJoined { id });
                        self.request_keyframe(codec);
                        tracing::info!(viewer = id, viewers = self.viewers(), %codec, "viewer connected");
                    }
                    Some(PeerEvent::Connected) => {}
                    Some(PeerEvent::KeyframeRequest) => self.request_keyframe(codec),
                    Some(PeerEvent::Gone) | None => break,
                },
                () = &mut rtcp => {}
                Some(channel) = channels.recv() => match channel {
                    InboundChannel::Input(c) => input_tasks.push(tokio::spawn(Arc::clone(&self).run_input_channel(id, c))),
                    InboundChannel::RefusedInput => self.input_channel_refused(id),
                },
                f = frames.recv() => match f {
                    Ok(frame) => {
                        if !connected || (need_idr && !frame.idr) {
                            continue;
                        }
                        // The pacer holds more than it can send soon (the estimate fell under what was queued):
                        // adding to it only delays every later frame; skip to a keyframe instead.
                        if congestion.pacer_backlog() > PACER_BACKLOG_LIMIT {
                            tracing::debug!(viewer = id, backlog = ?congestion.pacer_backlog(), "pacer backlog; waiting for a keyframe");
                            self.with_metrics(|m| m.frames_dropped += 1);
                            // (A keyframe skipped as well is asked for again.)
                            need_idr = true;
                            self.request_keyframe(codec);
                            continue;
                        }
                        need_idr = false;
                        // Bounded: a peer whose connection stalls must not pin this task (or the viewer slot).
                        let t = Instant::now();
                        match tokio::time::timeout(SEND_TIMEOUT, sender.send(&frame)).await {
                            Ok(Ok(_)) => {
                                stuck_since = None;
                                self.with_metrics(|m| m.observe("send", t.elapsed()));
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(viewer = id, "send failed: {e}");
                                break;
                            }
                            // A link slower than the stream (the socket stays full): skip to the next
                            // keyframe rather than drop the viewer; the bitrate controller lowers the rate
                            // meanwhile. Only a peer that takes nothing for PEER_STUCK_TIMEOUT is dropped.
                            Err(_) => {
                                let since = *stuck_since.get_or_insert(t);
                                if since.elapsed() >= PEER_STUCK_TIMEOUT {
                                    tracing::info!(viewer = id, "peer stopped taking packets; dropping it");
                                    break;
                                }
                                tracing::debug!(viewer = id, "a frame took over {SEND_TIMEOUT:?} to send; waiting for a keyframe");
                                self.with_metrics(|m| m.frames_dropped += 1);
                                need_idr = true;
                                self.request_keyframe(codec);
                                continue;
                            }
                        }
                        sent += 1;
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(viewer = id, skipped = n, "viewer fell behind; waiting for a keyframe");
                        self.with_metrics(|m| m.frames_dropped += n);
                        need_idr = true;
                        self.request_keyframe(codec);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        {
            let mut v = lock(&self.viewers);
            v.remove(&id);
            self.viewer_count.store(v.values().filter(|s| s.connected).count(), Ordering::SeqCst);
        }
        if connected {
            self.core_event(codec, Event::ViewerLeft { id });
        }
        for task in input_tasks {
            task.abort();
        }
        // Whatever this viewer still held (a key down when the page closed) goes up now.
        self.input_gone(id);
        peer.close().await;
        tracing::info!(viewer = id, frames = sent, viewers = self.viewers(), "viewer left");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::InputEvent;

    fn hub(allow: bool) -> Arc<Hub> {
        let mut cfg = Config::default();
        cfg.input.allow = allow;
        Hub::new(&cfg, TransportConfig::default(), Arc::new(AtomicBool::new(false)))
    }

    #[test]
    fn view_only_input_is_dropped_and_counted() {
        let hub = hub(false);
        let mut limit = TokenBucket::default();
        let now = Instant::now();
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        hub.set_input(InputSender::from_channel(tx, Arc::clone(&hub.input_counters)));
        hub.input_message(1, br#"{"t":"key","code":"KeyA","down":true}"#, &mut limit, now);
        hub.input_message(1, b"garbage", &mut limit, now);
        assert!(rx.try_recv().is_err(), "nothing reaches the injector");
        let st = hub.status().input;
        assert_eq!((st.allowed, st.received, st.dropped, st.rejected), (false, 2, 2, 0));
        assert!(hub.prometheus().contains("wl_webrtc_input_dropped_total 2"));
    }

    #[test]
    fn allowed_input_is_validated_then_queued_and_a_leaving_viewer_is_announced() {
        let hub = hub(true);
        let mut limit = TokenBucket::default();
        let now = Instant::now();
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        hub.set_input(InputSender::from_channel(tx, Arc::clone(&hub.input_counters)));
        hub.input_message(7, br#"{"t":"move","x":0.5,"y":0.5}"#, &mut limit, now);
        hub.input_message(7, br#"{"t":"move","x":1.5,"y":0.5}"#, &mut limit, now);
        hub.input_message(7, br#"{"t":"key","code":"NoSuchKey","down":true}"#, &mut limit, now);
        assert_eq!(
            rx.try_recv().ok(),
            Some(InputCommand::Event { viewer: 7, event: InputEvent::Move { x: 0.5, y: 0.5 } })
        );
        assert!(rx.try_recv().is_err(), "rejected messages are not queued");
        hub.input_gone(7);
        assert_eq!(rx.try_recv().ok(), Some(InputCommand::ViewerGone(7)));
        let st = hub.status().input;
        assert_eq!((st.allowed, st.received, st.dropped, st.rejected), (true, 3, 0, 2));
        assert!(hub.prometheus().contains("wl_webrtc_input_rejected_total 2"));
    }

    #[test]
    fn input_over_the_rate_limit_is_dropped_and_counted_and_the_viewer_goes_on() {
        let hub = hub(true);
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        hub.set_input(InputSender::from_channel(tx, Arc::clone(&hub.input_counters)));
        let mut limit = TokenBucket::new(10, 5);
        let t0 = Instant::now();
        let key = br#"{"t":"key","code":"KeyA","down":true}"#;
        for _ in 0..8 {
            hub.input_message(3, key, &mut limit, t0);
        }
        // 100 ms later one token is back (10/s).
        hub.input_message(3, key, &mut limit, t0 + Duration::from_millis(100));
        hub.input_message(3, key, &mut limit, t0 + Duration::from_millis(100));
        assert_eq!(rx.try_iter().count(), 6, "the burst of 5, then one refilled token");
        let st = hub.status().input;
        assert_eq!((st.received, st.dropped, st.rate_limited, st.rejected), (10, 4, 4, 0));
        assert!(hub.prometheus().contains("wl_webrtc_input_rate_limited_total 4"), "{}", hub.prometheus());
    }

    #[test]
    fn clock_pings_are_recognised_and_answered_with_our_clock() {
        assert_eq!(clock_ping(br#"{"t":"ping","c":1764800000123.5}"#), Some(1_764_800_000_123.5));
        assert_eq!(clock_ping(br#"{"t":"move","x":0.5,"y":0.5}"#), None);
        assert_eq!(clock_ping(br#"{"t":"ping","c":"x"}"#), None);
        assert_eq!(clock_ping(br#"{"t":"ping","c":1,"extra":2}"#), None);
        let p: serde_json::Value = serde_json::from_str(&pong(42.0)).expect("json");
        assert_eq!((p["t"].as_str(), p["c"].as_f64()), (Some("pong"), Some(42.0)));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
        assert!((p["s"].as_f64().unwrap_or(0.0) - now.as_secs_f64() * 1000.0).abs() < 1000.0, "{p}");
    }

    #[test]
    fn a_refused_second_input_channel_is_counted() {
        let hub = hub(true);
        hub.input_channel_refused(4);
        assert_eq!(hub.status().input.channels_refused, 1);
        assert!(hub.prometheus().contains("wl_webrtc_input_channels_refused_total 1"));
    }
}

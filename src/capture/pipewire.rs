//! Capture from a PipeWire video node: a node given directly (`--pipewire-node ID|NAME`) or the node the
//! xdg-desktop-portal ScreenCast session hands out ([`super::portal`]).
//!
//! A PipeWire thread owns the PipeWire main loop, context, core and one input stream. Its `process` callback
//! copies the newest buffer out of shared memory into a reused `Vec` and queues the PipeWire buffer back at
//! once (a buffer is never held across conversion or encoding), then publishes the copy in a latest-wins slot.
//! The capture thread ([`PipewireCapture::next_frame`]) takes whatever is newest from the slot; a frame it did
//! not take in time is replaced, its damage merged into the next. Stream errors, the daemon going away and
//! the node being removed reach the slot as a terminal error, so every wait ends.
//!
//! Format negotiation offers the packed 8-bit RGB formats wl-webrtc converts (BGRx first, the common one),
//! then the YUV formats cameras, OBS and GStreamer's `videotestsrc` produce (I420, NV12, YUY2: converted to
//! BGRx as each frame is copied out, with the producer's matrix and range, BT.601 below 720 lines and BT.709
//! from there when it names none), any size and rate, twice: first as DMA-BUF with the LINEAR modifier (the one layout a CPU mapping reads;
//! the GPU import of tiled modifiers is not written), then in shared memory (MemFd or MemPtr). A producer that
//! offers DMA-BUF gets it; one that offers only shared memory (or cannot fixate LINEAR) gets the second
//! format. A DMA-BUF buffer is mapped by us (PipeWire maps everything except DMA-BUFs), once per buffer, with
//! the kernel's begin/end CPU-access ioctls around each read; one that cannot be mapped makes the stream drop
//! DMA-BUF and renegotiate shared memory, with one log line. A new `Format` mid-stream (size change) is
//! accepted and the next frames carry the new layout. SPA video damage metadata is used when the producer
//! sends it, else every frame counts as fully damaged.
//!
//! pipewire-rs maps shared-memory buffers (MAP_BUFFERS) and bounds every slice; DMA-BUF mappings are ours
//! (memmap2, read-only, sized by the buffer's `maxsize`); chunk offset and stride are checked against the
//! mapping before a row is copied.

#![allow(unsafe_code)] // FFI edge: every unsafe block carries a SAFETY note

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pipewire as pw;
use pw::spa;
use spa::pod::{ChoiceValue, Object, Pod, Property, PropertyFlags, Value};
use spa::utils::{Choice, ChoiceEnum, ChoiceFlags, Fraction, Id, Rectangle};

use super::wayland::OutputDesc;
use super::{CaptureCounters, CaptureError, portal};
use crate::cursor::{CursorImage, CursorState};
use crate::frame::{FrameInfo, FrameLayout, PixelFormat, Rect};

/// How long opening a stream may take until it is connected to its node (or fails).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest cursor image asked for as metadata (pixels per side).
const MAX_CURSOR: i32 = 256;
/// How often the PipeWire thread looks at its quit flag.
const LOOP_TICK: Duration = Duration::from_millis(50);

/// Errors of the PipeWire source. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum PipewireError {
    #[error(
        "cannot connect to the PipeWire daemon{}: is PipeWire running in this session? \
         (start `pipewire` and `wireplumber`; `pw-cli info 0` checks it)",
        remote_suffix(.0)
    )]
    DaemonNotRunning(Option<PathBuf>),
    #[error("PipeWire: {0}")]
    Setup(String),
    #[error("the PipeWire daemon went away ({0}); capture is retried while the server runs")]
    DaemonGone(String),
    #[error("PipeWire node {0} went away (removed, or the producer stopped)")]
    NodeGone(String),
    #[error("PipeWire stream error on node {node}: {message}")]
    Stream { node: String, message: String },
    #[error(
        "PipeWire node {0} did not start streaming within {1:?}: does it exist and is it a video source \
         (media.class=Video/Source, media.type=Video)? `pw-cli ls Node` lists nodes"
    )]
    ConnectTimeout(String, Duration),
    #[error("PipeWire node {node} offers {offers}; wl-webrtc accepts {}", accepted_format_names())]
    FormatMismatch { node: String, offers: String },
}

fn remote_suffix(p: &Option<PathBuf>) -> String {
    p.as_ref().map(|p| format!(" at {}", p.display())).unwrap_or_default()
}

/// Where the PipeWire source gets its frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipewireOptions {
    /// A node to connect to directly (its id, or its `node.name`/serial); `None` = ask the portal.
    pub node: Option<String>,
    /// The PipeWire socket (default: `$PIPEWIRE_REMOTE`, else `$XDG_RUNTIME_DIR/pipewire-0`).
    pub remote: Option<PathBuf>,
    /// D-Bus session bus address for the portal (default: `$DBUS_SESSION_BUS_ADDRESS`).
    pub bus_address: Option<String>,
    /// Restore-token file of the portal (default: [`portal::default_token_path`]).
    pub restore_token: Option<PathBuf>,
}

/// What the PipeWire thread connects to.
enum Target {
    /// A node of the daemon at `remote` (default socket when `None`), by id or by name.
    Node { remote: Option<PathBuf>, node: String },
    /// The portal's PipeWire remote (an fd) and the node id of its stream.
    Portal { fd: OwnedFd, node_id: u32 },
}

/// One frame copied out of a PipeWire buffer, with tightly packed rows.
#[derive(Debug, Default)]
struct CopiedFrame {
    data: Vec<u8>,
    layout: Option<FrameLayout>,
    /// `None` = fully damaged.
    damage: Option<Vec<Rect>>,
    ready_at: Option<Instant>,
}

/// The latest-wins slot between the PipeWire thread and the capture thread.
#[derive(Debug, Default)]
struct Slot {
    /// The newest frame the capture thread has not taken yet.
    frame: Option<CopiedFrame>,
    /// A buffer to copy the next frame into (the one the capture thread gave back).
    spare: Vec<u8>,
    /// The stream has ended with this error; no more frames come.
    error: Option<PipewireError>,
    /// A format was negotiated: the stream is linked to its node.
    connected: bool,
    /// The cursor from SPA cursor metadata (`--cursor metadata`, when the producer sends it).
    cursor: Option<CursorState>,
    /// Frames replaced in the slot before the capture thread took them.
    frames_replaced: u64,
    format_changes: u64,
    bad_buffers: u64,
    /// The negotiated buffers are DMA-BUFs.
    dmabuf: bool,
    /// The video formats the node offers (from its EnumFormat parameters), once it was found by id or name
    /// and answered: for failing at once, saying why, when none of them is ours.
    node_formats: Option<Vec<u32>>,
}

#[derive(Debug, Default)]
struct Shared {
    slot: Mutex<Slot>,
    cond: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self, e: PipewireError) {
        let mut slot = self.lock();
        if slot.error.is_none() {
            tracing::debug!("PipeWire stream ends: {e}");
            slot.error = Some(e);
        }
        self.cond.notify_all();
    }
}

/// Capture from one PipeWire video node.
pub struct PipewireCapture {
    shared: Arc<Shared>,
    quit: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The frame last handed out by `next_frame` (its pixels, tightly packed).
    current: CopiedFrame,
    output: OutputDesc,
    seq: u64,
    /// The cursor as of the last frame handed out.
    cursor: Option<CursorState>,
    /// Kept alive for the whole capture: closing it ends the portal's stream.
    _portal: Option<portal::PortalSession>,
}

impl std::fmt::Debug for PipewireCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipewireCapture").field("output", &self.output.name).finish_non_exhaustive()
    }
}

impl PipewireCapture {
    /// Open the node of `opts.node`, or run the portal ScreenCast dance (asking the user once; the restore
    /// token is kept) and open the portal's node.
    pub fn open(opts: &PipewireOptions, cursor: super::CursorMode) -> Result<PipewireCapture, CaptureError> {
        match &opts.node {
            Some(node) => {
                let target = Target::Node { remote: opts.remote.clone(), node: node.clone() };
                let want_cursor = cursor == super::CursorMode::Metadata;
                PipewireCapture::start(target, format!("pipewire:{node}"), None, want_cursor, None)
            }
            None => {
                let mut session = portal::PortalSession::open(&portal::PortalOptions {
                    bus_address: opts.bus_address.clone(),
                    restore_token: opts.restore_token.clone().or_else(portal::default_token_path),
                    cursor,
                })?;
                let node_id = session.node_id();
                let size = session.size();
                let fd = session.take_fd()?;
                let want_cursor = session.cursor_metadata();
                let target = Target::Portal { fd, node_id };
                PipewireCapture::start(target, format!("portal:{node_id}"), size, want_cursor, Some(session))
            }
        }
    }

    fn start(
        target: Target,
        name: String,
        size: Option<(i32, i32)>,
        want_cursor: bool,
        portal: Option<portal::PortalSession>,
    ) -> Result<PipewireCapture, CaptureError> {
        let shared = Arc::new(Shared::default());
        let quit = Arc::new(AtomicBool::new(false));
        // `true`: the stream is connecting; `false`: setup failed (the error is in the slot, set before).
        let (ready_tx, ready_rx) = mpsc::channel::<bool>();
        let thread = {
            let (shared, quit, name) = (Arc::clone(&shared), Arc::clone(&quit), name.clone());
            std::thread::Builder::new()
                .name("pipewire".into())
                .spawn(move || {
                    if let Err(e) = run_stream(target, &name, want_cursor, &shared, &quit, &ready_tx) {
                        shared.fail(e);
                        let _ = ready_tx.send(false);
                    }
                })
                .map_err(|e| PipewireError::Setup(format!("cannot start the PipeWire thread: {e}")))?
        };
        let mut cap = PipewireCapture {
            shared,
            quit,
            thread: Some(thread),
            current: CopiedFrame::default(),
            output: OutputDesc {
                name: name.clone(),
                description: Some("PipeWire video node".into()),
                make: String::new(),
                model: String::new(),
                width: size.map_or(0, |s| s.0),
                height: size.map_or(0, |s| s.1),
                refresh_mhz: 0,
                scale: 1,
                x: 0,
                y: 0,
                logical_width: None,
                logical_height: None,
                transform: "normal".into(),
                sources: vec!["pipewire"],
            },
            seq: 0,
            cursor: None,
            _portal: portal,
        };
        // The stream object exists (or setup failed) …
        match ready_rx.recv_timeout(CONNECT_TIMEOUT) {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                let e = cap.shared.lock().error.take();
                return Err(e.unwrap_or(PipewireError::ConnectTimeout(name, CONNECT_TIMEOUT)).into());
            }
        }
        // … and is linked to its node (or fails: no such node, daemon gone).
        cap.wait_connected(&name)?;
        tracing::info!(node = %name, "capturing from PipeWire");
        Ok(cap)
    }

    fn wait_connected(&mut self, name: &str) -> Result<(), CaptureError> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut slot = self.shared.lock();
        loop {
            let mismatch = format_mismatch(name, slot.node_formats.as_deref());
            if let Some(e) = slot.error.take() {
                return Err(mismatch.unwrap_or(e).into());
            }
            if slot.connected {
                return Ok(());
            }
            if let Some(e) = mismatch {
                // No format of the node is ours: the link can never come up.
                return Err(e.into());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(mismatch.unwrap_or(PipewireError::ConnectTimeout(name.to_owned(), CONNECT_TIMEOUT)).into());
            }
            slot = self.shared.cond.wait_timeout(slot, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// The node as an "output" (name `pipewire:NODE` or `portal:ID`; size as the portal announced it).
    pub fn output(&self) -> &OutputDesc {
        &self.output
    }

    pub fn counters(&self) -> CaptureCounters {
        let slot = self.shared.lock();
        CaptureCounters { buffer_allocations: slot.format_changes, failed_frames: slot.bad_buffers }
    }

    /// Always "shm": frames are copied out of PipeWire's shared memory.
    pub fn buffer_kind(&self) -> Option<&'static str> {
        let dmabuf = self.shared.lock().dmabuf;
        self.current.layout.map(|_| if dmabuf { "dmabuf" } else { "shm" })
    }

    /// Frames the PipeWire thread replaced before the capture thread took them.
    pub fn frames_replaced(&self) -> u64 {
        self.shared.lock().frames_replaced
    }

    /// Wait up to `timeout` for the next frame (`Ok(None)`: none in time, or `stop` was set). The pixels are
    /// read with [`PipewireCapture::with_pixels`] until the next call.
    pub fn next_frame(&mut self, timeout: Duration, stop: &AtomicBool) -> Result<Option<FrameInfo>, CaptureError> {
        let requested_at = Instant::now();
        let deadline = requested_at + timeout;
        let mut slot = self.shared.lock();
        loop {
            if let Some(frame) = slot.frame.take() {
                // Give the previous frame's buffer back for the next copy.
                slot.spare = std::mem::take(&mut self.current.data);
                self.cursor.clone_from(&slot.cursor);
                drop(slot);
                self.current = frame;
                let info = super::ready_frame_info(
                    self.current.layout,
                    false,
                    self.current.damage.take(),
                    requested_at,
                    None,
                    self.seq,
                );
                self.seq += 1;
                return Ok(Some(FrameInfo { ready_at: self.current.ready_at.unwrap_or(info.ready_at), ..info }));
            }
            if let Some(e) = slot.error.take() {
                return Err(e.into());
            }
            let now = Instant::now();
            if now >= deadline || stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let wait = (deadline - now).min(LOOP_TICK);
            slot = self.shared.cond.wait_timeout(slot, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Notice a stream that ended (daemon gone, node removed) without taking a frame.
    pub fn check_alive(&mut self) -> Result<(), CaptureError> {
        match self.shared.lock().error.take() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// The cursor from SPA cursor metadata (`--cursor metadata` on a producer that sends it), as of the last
    /// frame; `None` otherwise (the cursor is then painted in, or hidden).
    pub fn cursor(&self) -> Option<&CursorState> {
        self.cursor.as_ref()
    }

    /// Run `f(data, stride)` over the pixels of the last frame.
    pub fn with_pixels<R>(&mut self, f: impl FnOnce(&[u8], u32) -> R) -> Result<R, CaptureError> {
        let layout = self.current.layout.ok_or_else(|| CaptureError::Unsupported("no frame captured yet".into()))?;
        Ok(f(&self.current.data, layout.stride))
    }
}

impl Drop for PipewireCapture {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The SPA video formats offered, preferred first, and the DRM-named format each one is in memory.
/// SPA names list bytes in memory order (BGRx = B, G, R, x), DRM names the little-endian word (XRGB8888).
const FORMATS: [(u32, PixelFormat); 10] = [
    (spa::sys::SPA_VIDEO_FORMAT_BGRx, PixelFormat::Xrgb8888),
    (spa::sys::SPA_VIDEO_FORMAT_BGRA, PixelFormat::Argb8888),
    (spa::sys::SPA_VIDEO_FORMAT_RGBx, PixelFormat::Xbgr8888),
    (spa::sys::SPA_VIDEO_FORMAT_RGBA, PixelFormat::Abgr8888),
    (spa::sys::SPA_VIDEO_FORMAT_xRGB, PixelFormat::Bgrx8888),
    (spa::sys::SPA_VIDEO_FORMAT_ARGB, PixelFormat::Bgra8888),
    (spa::sys::SPA_VIDEO_FORMAT_xBGR, PixelFormat::Rgbx8888),
    (spa::sys::SPA_VIDEO_FORMAT_ABGR, PixelFormat::Rgba8888),
    (spa::sys::SPA_VIDEO_FORMAT_RGB, PixelFormat::Bgr888),
    (spa::sys::SPA_VIDEO_FORMAT_BGR, PixelFormat::Rgb888),
];

/// The pixel format of an SPA video format, if offered.
pub(crate) fn pixel_format_of_spa(spa_format: u32) -> Option<PixelFormat> {
    FORMATS.iter().find(|(s, _)| *s == spa_format).map(|(_, p)| *p)
}

/// The YUV layouts accepted from producers (offered after the RGB ones, in shared memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Yuv {
    /// Planar 4:2:0: Y, then U, then V.
    I420,
    /// Y, then interleaved UV (4:2:0).
    Nv12,
    /// Packed 4:2:2: Y0 U Y1 V.
    Yuy2,
}

const YUV_FORMATS: [(u32, Yuv); 3] = [
    (spa::sys::SPA_VIDEO_FORMAT_I420, Yuv::I420),
    (spa::sys::SPA_VIDEO_FORMAT_NV12, Yuv::Nv12),
    (spa::sys::SPA_VIDEO_FORMAT_YUY2, Yuv::Yuy2),
];

/// The formats a node offers, when none of them is one we accept: the reason its link failed.
fn format_mismatch(node: &str, offered: Option<&[u32]>) -> Option<PipewireError> {
    let ours = |f: &u32| pixel_format_of_spa(*f).is_some() || YUV_FORMATS.iter().any(|(y, _)| y == f);
    let offered = offered?;
    if offered.iter().any(ours) {
        return None;
    }
    if offered.is_empty() {
        return Some(PipewireError::FormatMismatch {
            node: node.to_owned(),
            offers: "a video format without a PipeWire name (a GStreamer pipeline negotiated one PipeWire cannot \
                     express: add a caps filter such as video/x-raw,format=BGRx)"
                .to_owned(),
        });
    }
    let names: Vec<String> = offered.iter().map(|&f| spa_format_name(f)).collect();
    Some(PipewireError::FormatMismatch { node: node.to_owned(), offers: names.join(", ") })
}

/// The video formats in an EnumFormat parameter (its `format` property: one id or a choice of ids). Read from
/// the raw pod, bounds-checked (libspa-rs' deserializer divides by a choice's child size, which a producer can
/// send as 0).
fn formats_in(param: &Pod) -> Vec<u32> {
    let Ok(obj) = param.as_object() else { return Vec::new() };
    let Some(prop) = obj.find_prop(Id(spa::sys::SPA_FORMAT_VIDEO_format)) else { return Vec::new() };
    let value = prop.value();
    if let Ok(id) = value.get_id() {
        return vec![id.0];
    }
    choice_ids(value.as_bytes())
}

/// The ids of a Choice pod of Ids: `[size, type=Choice][choice type, flags][child size, child type][values…]`.
fn choice_ids(bytes: &[u8]) -> Vec<u32> {
    let word = |i: usize| bytes.get(i * 4..i * 4 + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    let (Some(size), Some(ty), Some(child_size), Some(child_type)) = (word(0), word(1), word(4), word(5)) else {
        return Vec::new();
    };
    if ty != spa::sys::SPA_TYPE_Choice || child_type != spa::sys::SPA_TYPE_Id || child_size != 4 {
        return Vec::new();
    }
    // `size` counts the body (from the choice type on): 16 bytes of header, then the values.
    let n = (size as usize).saturating_sub(16) / 4;
    let mut ids: Vec<u32> = (0..n).filter_map(|i| word(6 + i)).collect();
    // An Enum choice repeats its default among the alternatives.
    let mut seen = Vec::new();
    ids.retain(|id| {
        let new = !seen.contains(id);
        seen.push(*id);
        new
    });
    ids
}

/// Every SPA format we accept, in order of preference, and their names (for messages).
fn accepted_format_names() -> String {
    let all = FORMATS.iter().map(|(f, _)| *f).chain(YUV_FORMATS.iter().map(|(f, _)| *f));
    all.map(spa_format_name).collect::<Vec<_>>().join(", ")
}

/// SPA's short name of a video format ("BGRx", "I420", …).
fn spa_format_name(format: u32) -> String {
    let name = format!("{:?}", spa::param::video::VideoFormat(format));
    name.strip_prefix("VideoFormat::").map(str::to_owned).unwrap_or(name)
}

/// A negotiated YUV source: its layout and how to turn it into RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct YuvSource {
    kind: Yuv,
    full_range: bool,
    bt709: bool,
}

/// The planes of one YUV frame inside one buffer.
struct YuvPlanes<'a> {
    y: &'a [u8],
    y_stride: usize,
    /// I420: U; NV12: UV; YUY2: unused.
    u: &'a [u8],
    u_stride: usize,
    /// I420: V.
    v: &'a [u8],
    v_stride: usize,
}

/// Find the planes of a `w`×`h` frame of `kind` in `mem[offset..offset + size]`, the first plane's stride being
/// `stride` (0: unknown). The chroma planes follow the luma plane, as GStreamer lays them out; with no stride
/// given, GStreamer's (rows 4-byte aligned) or a tight one, whichever the size holds; the chroma stride is what
/// the size leaves. A luma plane padded to an even number of rows is allowed.
fn yuv_planes(
    kind: Yuv,
    mem: &[u8],
    offset: usize,
    size: usize,
    stride: i32,
    w: usize,
    h: usize,
) -> Result<YuvPlanes<'_>, String> {
    let buf = mem.get(offset..offset.checked_add(size).ok_or("chunk overflows")?).ok_or("chunk beyond the buffer")?;
    if w == 0 || h == 0 {
        return Err("empty frame".into());
    }
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let min_stride = if kind == Yuv::Yuy2 { cw * 4 } else { w };
    let candidates: Vec<usize> =
        if stride > 0 { vec![stride as usize] } else { vec![min_stride.next_multiple_of(4), min_stride] };
    let empty: &[u8] = &[];
    for ys in candidates.into_iter().filter(|&s| s >= min_stride) {
        for rows in [h.next_multiple_of(2), h] {
            let Some(luma) = ys.checked_mul(rows).filter(|&l| l <= buf.len()) else { continue };
            let (y, rest) = buf.split_at(luma);
            let y = &y[..ys * h];
            match kind {
                Yuv::Yuy2 => return Ok(YuvPlanes { y, y_stride: ys, u: empty, u_stride: 0, v: empty, v_stride: 0 }),
                Yuv::Nv12 if rest.len() >= ys * ch => {
                    return Ok(YuvPlanes { y, y_stride: ys, u: &rest[..ys * ch], u_stride: ys, v: empty, v_stride: 0 });
                }
                Yuv::I420 => {
                    let cs = rest.len() / (2 * ch);
                    if cs >= cw {
                        let (u, v) = rest.split_at(cs * ch);
                        return Ok(YuvPlanes { y, y_stride: ys, u, u_stride: cs, v: &v[..cs * ch], v_stride: cs });
                    }
                }
                Yuv::Nv12 => {}
            }
        }
    }
    Err(format!("{size} bytes hold no {w}x{h} {kind:?} frame (stride {stride})"))
}

/// Convert one YUV frame into tight BGRx (`w * 4` per row) in `out`.
fn yuv_to_bgrx(src: YuvSource, p: &YuvPlanes<'_>, w: u32, h: u32, out: &mut [u8]) -> Result<(), String> {
    use yuvutils_rs::{YuvRange, YuvStandardMatrix};
    let range = if src.full_range { YuvRange::Full } else { YuvRange::Limited };
    let matrix = if src.bt709 { YuvStandardMatrix::Bt709 } else { YuvStandardMatrix::Bt601 };
    let stride = |s: usize| u32::try_from(s).map_err(|_| "stride too large".to_owned());
    // yuvutils' I420 path, for I420 and (split) NV12.
    let i420 = |u: &[u8], us: usize, v: &[u8], vs: usize, out: &mut [u8]| -> Result<(), String> {
        let image = yuvutils_rs::YuvPlanarImage {
            y_plane: p.y,
            y_stride: stride(p.y_stride)?,
            u_plane: u,
            u_stride: stride(us)?,
            v_plane: v,
            v_stride: stride(vs)?,
            width: w,
            height: h,
        };
        yuvutils_rs::yuv420_to_bgra(&image, out, w * 4, range, matrix).map_err(|e| format!("{e:?}"))
    };
    match src.kind {
        Yuv::I420 => finish(i420(p.u, p.u_stride, p.v, p.v_stride, out), out),
        Yuv::Nv12 => {
            // yuvutils' NV12 path takes only tight planes: split UV into U and V (a quarter frame each) and
            // convert as I420.
            let (cw, ch) = ((w as usize).div_ceil(2), (h as usize).div_ceil(2));
            let (mut u, mut v) = (Vec::with_capacity(cw * ch), Vec::with_capacity(cw * ch));
            for row in p.u.chunks(p.u_stride).take(ch) {
                for pair in row[..(cw * 2).min(row.len())].chunks_exact(2) {
                    u.push(pair[0]);
                    v.push(pair[1]);
                }
            }
            finish(i420(&u, cw, &v, cw, out), out)
        }
        Yuv::Yuy2 => {
            let r = yuvutils_rs::yuyv422_to_bgra(
                &yuvutils_rs::YuvPackedImage { yuy: p.y, yuy_stride: stride(p.y_stride)?, width: w, height: h },
                out,
                w * 4,
                range,
                matrix,
            );
            finish(r.map_err(|e| format!("{e:?}")), out)
        }
    }
}

/// After a conversion into BGRx: the fourth byte is padding; make it opaque like every other source.
fn finish(r: Result<(), String>, out: &mut [u8]) -> Result<(), String> {
    r?;
    for px in out.chunks_exact_mut(4) {
        px[3] = 0xff;
    }
    Ok(())
}

fn serialize(value: Value) -> Result<Vec<u8>, PipewireError> {
    spa::pod::serialize::PodSerializer::serialize(std::io::Cursor::new(Vec::new()), &value)
        .map(|(c, _)| c.into_inner())
        .map_err(|e| PipewireError::Setup(format!("cannot build a format parameter: {e:?}")))
}

fn prop(key: u32, value: Value) -> Property {
    Property { key, flags: PropertyFlags::empty(), value }
}

/// DRM_FORMAT_MOD_LINEAR: the DMA-BUF layout we read.
const DRM_FORMAT_MOD_LINEAR: i64 = 0;

/// The EnumFormat parameters: raw video in the formats of [`FORMATS`], any size and rate; with `dmabuf`,
/// first as DMA-BUF with the LINEAR modifier, then (always) in shared memory.
fn enum_formats(dmabuf: bool) -> Result<Vec<Vec<u8>>, PipewireError> {
    let mut out = Vec::new();
    if dmabuf {
        let modifier = Property {
            key: spa::sys::SPA_FORMAT_VIDEO_modifier,
            // MANDATORY | DONT_FIXATE (the constant is version-gated in pipewire-rs, the bit is not)
            flags: PropertyFlags::from_bits_retain(
                spa::sys::SPA_POD_PROP_FLAG_MANDATORY | spa::sys::SPA_POD_PROP_FLAG_DONT_FIXATE,
            ),
            value: Value::Choice(ChoiceValue::Long(Choice(
                ChoiceFlags::empty(),
                ChoiceEnum::Enum { default: DRM_FORMAT_MOD_LINEAR, alternatives: vec![DRM_FORMAT_MOD_LINEAR] },
            ))),
        };
        out.push(enum_format(Some(modifier))?);
    }
    out.push(enum_format(None)?);
    Ok(out)
}

/// One EnumFormat object: with `modifier`, DMA-BUF in the RGB formats; without, shared memory in the RGB and
/// then the YUV formats.
fn enum_format(modifier: Option<Property>) -> Result<Vec<u8>, PipewireError> {
    let mut ids: Vec<Id> = FORMATS.iter().map(|(f, _)| Id(*f)).collect();
    if modifier.is_none() {
        ids.extend(YUV_FORMATS.iter().map(|(f, _)| Id(*f)));
    }
    let mut obj = Object {
        type_: spa::sys::SPA_TYPE_OBJECT_Format,
        id: spa::sys::SPA_PARAM_EnumFormat,
        properties: vec![
            prop(spa::sys::SPA_FORMAT_mediaType, Value::Id(Id(spa::sys::SPA_MEDIA_TYPE_video))),
            prop(spa::sys::SPA_FORMAT_mediaSubtype, Value::Id(Id(spa::sys::SPA_MEDIA_SUBTYPE_raw))),
            // The default must also be among the alternatives.
            prop(
                spa::sys::SPA_FORMAT_VIDEO_format,
                Value::Choice(ChoiceValue::Id(Choice(
                    ChoiceFlags::empty(),
                    ChoiceEnum::Enum { default: ids[0], alternatives: ids },
                ))),
            ),
            prop(
                spa::sys::SPA_FORMAT_VIDEO_size,
                Value::Choice(ChoiceValue::Rectangle(Choice(
                    ChoiceFlags::empty(),
                    ChoiceEnum::Range {
                        default: Rectangle { width: 1920, height: 1080 },
                        min: Rectangle { width: 1, height: 1 },
                        max: Rectangle { width: 16384, height: 16384 },
                    },
                ))),
            ),
            prop(
                spa::sys::SPA_FORMAT_VIDEO_framerate,
                Value::Choice(ChoiceValue::Fraction(Choice(
                    ChoiceFlags::empty(),
                    ChoiceEnum::Range {
                        default: Fraction { num: 60, denom: 1 },
                        min: Fraction { num: 0, denom: 1 },
                        max: Fraction { num: 1000, denom: 1 },
                    },
                ))),
            ),
        ],
    };
    obj.properties.extend(modifier);
    serialize(Value::Object(obj))
}

/// The Buffers parameter for a negotiated layout (DMA-BUF when the format has a modifier, else shared memory)
/// and the Meta parameters we want (header, video damage). Sent after every Format.
fn buffer_params(
    layout: &FrameLayout,
    want_cursor: bool,
    dmabuf: bool,
    yuv: Option<Yuv>,
) -> Result<Vec<Vec<u8>>, PipewireError> {
    let size = layout.stride as usize * layout.height as usize;
    let size = i32::try_from(size).map_err(|_| PipewireError::Setup(format!("frame too large: {layout:?}")))?;
    let stride = i32::try_from(layout.stride).unwrap_or(i32::MAX);
    // RGB: exactly our layout. YUV: whatever the producer's layout (aligned strides) needs, from tight up.
    let int_or_range = |exact: i32, tight: i32| match yuv {
        None => Value::Int(exact),
        Some(_) => Value::Choice(ChoiceValue::Int(Choice(
            ChoiceFlags::empty(),
            ChoiceEnum::Range { default: tight, min: tight, max: tight.saturating_mul(4) },
        ))),
    };
    let (w, h) = (layout.width as i32, layout.height as i32);
    let (cw, ch) = ((w + 1) / 2, (h + 1) / 2);
    let (tight_stride, tight_size) = match yuv {
        Some(Yuv::Yuy2) => (cw * 4, cw * 4 * h),
        Some(_) => (w, w * h + 2 * cw * ch),
        None => (stride, size),
    };
    let data_types = if dmabuf {
        1i32 << spa::sys::SPA_DATA_DmaBuf
    } else {
        (1i32 << spa::sys::SPA_DATA_MemFd) | (1i32 << spa::sys::SPA_DATA_MemPtr)
    };
    let buffers = Object {
        type_: spa::sys::SPA_TYPE_OBJECT_ParamBuffers,
        id: spa::sys::SPA_PARAM_Buffers,
        properties: vec![
            prop(
                spa::sys::SPA_PARAM_BUFFERS_buffers,
                Value::Choice(ChoiceValue::Int(Choice(
                    ChoiceFlags::empty(),
                    ChoiceEnum::Range { default: 4, min: 2, max: 16 },
                ))),
            ),
            prop(spa::sys::SPA_PARAM_BUFFERS_blocks, Value::Int(1)),
            prop(spa::sys::SPA_PARAM_BUFFERS_size, int_or_range(size, tight_size)),
            prop(spa::sys::SPA_PARAM_BUFFERS_stride, int_or_range(stride, tight_stride)),
            prop(
                spa::sys::SPA_PARAM_BUFFERS_dataType,
                Value::Choice(ChoiceValue::Int(Choice(
                    ChoiceFlags::empty(),
                    ChoiceEnum::Flags { default: data_types, flags: vec![data_types] },
                ))),
            ),
        ],
    };
    let meta = |ty: u32, size: Value| Object {
        type_: spa::sys::SPA_TYPE_OBJECT_ParamMeta,
        id: spa::sys::SPA_PARAM_Meta,
        properties: vec![
            prop(spa::sys::SPA_PARAM_META_type, Value::Id(Id(ty))),
            prop(spa::sys::SPA_PARAM_META_size, size),
        ],
    };
    let region = std::mem::size_of::<spa::sys::spa_meta_region>() as i32;
    let header = std::mem::size_of::<spa::sys::spa_meta_header>() as i32;
    let cursor_meta = |pixels: i32| {
        (std::mem::size_of::<spa::sys::spa_meta_cursor>() + std::mem::size_of::<spa::sys::spa_meta_bitmap>()) as i32
            + pixels * 4
    };
    let mut params = vec![
        serialize(Value::Object(buffers))?,
        serialize(Value::Object(meta(spa::sys::SPA_META_Header, Value::Int(header))))?,
        // Damage rectangles: any count the producer offers from 1 to 64 (a range, so that it intersects
        // with a producer's fixed size; an Int would have to match exactly).
        serialize(Value::Object(meta(
            spa::sys::SPA_META_VideoDamage,
            Value::Choice(ChoiceValue::Int(Choice(
                ChoiceFlags::empty(),
                ChoiceEnum::Range { default: region * 16, min: region, max: region * 64 },
            ))),
        )))?,
    ];
    if want_cursor {
        // Cursor position + hotspot, and an image of up to MAX_CURSOR² pixels (a range, as above).
        params.push(serialize(Value::Object(meta(
            spa::sys::SPA_META_Cursor,
            Value::Choice(ChoiceValue::Int(Choice(
                ChoiceFlags::empty(),
                ChoiceEnum::Range {
                    default: cursor_meta(64 * 64),
                    min: cursor_meta(0),
                    max: cursor_meta(MAX_CURSOR * MAX_CURSOR),
                },
            ))),
        )))?);
    }
    Ok(params)
}

/// State of the stream callbacks (on the PipeWire thread).
struct StreamData {
    shared: Arc<Shared>,
    node: String,
    layout: Option<FrameLayout>,
    /// The first frame after a (new) format is complete whatever the damage says.
    fresh_format: bool,
    /// Ask for and read SPA cursor metadata.
    want_cursor: bool,
    streamed: bool,
    /// DMA-BUF is still offered (until a DMA-BUF buffer could not be mapped).
    dmabuf_offered: bool,
    /// The negotiated format has a modifier: buffers are DMA-BUFs.
    dmabuf: bool,
    /// Our mappings of DMA-BUF buffers, by (fd, inode); dropped at every new format (buffers are reallocated).
    maps: Vec<((i64, u64), memmap2::Mmap)>,
    /// The negotiated format is YUV: frames are converted to BGRx as they are copied out.
    yuv: Option<YuvSource>,
}

/// The PipeWire thread: connect, negotiate, copy frames until `quit` or the stream ends.
fn run_stream(
    target: Target,
    name: &str,
    want_cursor: bool,
    shared: &Arc<Shared>,
    quit: &AtomicBool,
    ready: &mpsc::Sender<bool>,
) -> Result<(), PipewireError> {
    pw::init();
    let setup = |e: pw::Error| PipewireError::Setup(e.to_string());
    let mainloop = pw::main_loop::MainLoopRc::new(None).map_err(setup)?;
    let context = pw::context::ContextRc::new(&mainloop, None).map_err(setup)?;
    let (core, node_id, target_object) = match target {
        Target::Node { remote, node } => {
            let core = match &remote {
                Some(path) => {
                    let sock = std::os::unix::net::UnixStream::connect(path)
                        .map_err(|_| PipewireError::DaemonNotRunning(Some(path.clone())))?;
                    context.connect_fd_rc(OwnedFd::from(sock), None)
                }
                None => context.connect_rc(None),
            }
            .map_err(|_| PipewireError::DaemonNotRunning(remote.clone()))?;
            match node.parse::<u32>() {
                Ok(id) => (core, Some(id), None),
                Err(_) => (core, None, Some(node)),
            }
        }
        Target::Portal { fd, node_id } => {
            let core = context
                .connect_fd_rc(fd, None)
                .map_err(|e| PipewireError::Setup(format!("cannot connect to the portal's PipeWire remote: {e}")))?;
            (core, Some(node_id), None)
        }
    };
    let _core_listener = {
        let shared = Arc::clone(shared);
        core.add_listener_local()
            .error(move |id, _seq, res, message| {
                // id 0 is the core itself: the connection to the daemon is broken.
                if id == pw::core::PW_ID_CORE {
                    shared.fail(PipewireError::DaemonGone(format!("{message} ({res})")));
                } else {
                    tracing::debug!(id, res, "PipeWire object error: {message}");
                }
            })
            .register()
    };
    // The node's own formats, to tell "no such node" from "a node in formats we do not read".
    let registry = core.get_registry_rc().map_err(setup)?;
    let probe: std::rc::Rc<std::cell::RefCell<Vec<(pw::node::Node, pw::node::NodeListener)>>> = Default::default();
    let _registry_listener = {
        let (registry_weak, probe, shared) = (registry.downgrade(), std::rc::Rc::clone(&probe), Arc::clone(shared));
        let target_name = target_object.clone();
        registry
            .add_listener_local()
            .global(move |global| {
                if global.type_ != pw::types::ObjectType::Node {
                    return;
                }
                let name = global.props.as_ref().and_then(|p| p.get("node.name"));
                let wanted = node_id == Some(global.id) || (target_name.is_some() && name == target_name.as_deref());
                let Some(registry) = registry_weak.upgrade() else { return };
                if !wanted {
                    return;
                }
                let Ok(node) = registry.bind::<pw::node::Node, _>(global) else { return };
                let shared = Arc::clone(&shared);
                let listener = node
                    .add_listener_local()
                    .param(move |_, _, _, _, param| {
                        if let Some(param) = param {
                            let mut slot = shared.lock();
                            let known = slot.node_formats.get_or_insert_with(Vec::new);
                            for f in formats_in(param) {
                                if !known.contains(&f) {
                                    known.push(f);
                                }
                            }
                            shared.cond.notify_all();
                        }
                    })
                    .register();
                node.enum_params(0, Some(spa::param::ParamType::EnumFormat), 0, u32::MAX);
                probe.borrow_mut().push((node, listener));
            })
            .register()
    };
    let mut props = pw::properties::properties! {
        *pw::keys::MEDIA_TYPE => "Video",
        *pw::keys::MEDIA_CATEGORY => "Capture",
        *pw::keys::MEDIA_ROLE => "Screen",
        *pw::keys::NODE_NAME => "wl-webrtc",
        *pw::keys::APP_NAME => "wl-webrtc",
    };
    if let Some(t) = &target_object {
        // `target.object` (name or serial); the keys constant is version-gated, the string is not.
        props.insert("target.object", t.as_str());
    }
    let stream = pw::stream::StreamBox::new(&core, "wl-webrtc-capture", props).map_err(setup)?;
    let data = StreamData {
        shared: Arc::clone(shared),
        node: name.to_owned(),
        layout: None,
        fresh_format: true,
        want_cursor,
        streamed: false,
        dmabuf_offered: true,
        dmabuf: false,
        maps: Vec::new(),
        yuv: None,
    };
    let _listener = stream
        .add_local_listener_with_user_data(data)
        .state_changed(|_, d, old, new| on_state(d, old, new))
        .param_changed(on_param)
        .process(on_process)
        .register()
        .map_err(setup)?;
    let formats = enum_formats(true)?;
    let mut pods = formats
        .iter()
        .map(|f| Pod::from_bytes(f).ok_or_else(|| PipewireError::Setup("bad format pod".into())))
        .collect::<Result<Vec<&Pod>, _>>()?;
    let flags = pw::stream::StreamFlags::AUTOCONNECT
        | pw::stream::StreamFlags::MAP_BUFFERS
        | pw::stream::StreamFlags::DONT_RECONNECT;
    stream.connect(spa::utils::Direction::Input, node_id, flags, &mut pods).map_err(setup)?;
    let _ = ready.send(true);
    while !quit.load(Ordering::Relaxed) {
        mainloop.loop_().iterate(pw::loop_::Timeout::Finite(LOOP_TICK));
    }
    let _ = stream.disconnect();
    Ok(())
}

fn on_state(d: &mut StreamData, old: pw::stream::StreamState, new: pw::stream::StreamState) {
    use pw::stream::StreamState as S;
    tracing::debug!(node = %d.node, ?old, ?new, "PipeWire stream state");
    match new {
        S::Paused | S::Streaming => d.streamed = true,
        S::Error(message) => d.shared.fail(PipewireError::Stream { node: d.node.clone(), message }),
        S::Unconnected if d.layout.is_some() => d.shared.fail(PipewireError::NodeGone(d.node.clone())),
        S::Unconnected => d.shared.fail(PipewireError::Stream {
            node: d.node.clone(),
            message: "the stream could not be linked to it (no such video node? `pw-cli ls Node` lists them)".into(),
        }),
        S::Connecting => {}
    }
}

fn on_param(stream: &pw::stream::Stream, d: &mut StreamData, id: u32, param: Option<&Pod>) {
    let Some(param) = param else { return };
    if id != spa::sys::SPA_PARAM_Format {
        return;
    }
    let mut info = spa::param::video::VideoInfoRaw::new();
    if info.parse(param).is_err() {
        tracing::warn!("PipeWire: cannot parse the negotiated format");
        return;
    }
    let size = info.size();
    let spa_format = info.format().as_raw();
    let yuv = YUV_FORMATS.iter().find(|(f, _)| *f == spa_format).map(|&(_, kind)| YuvSource {
        kind,
        full_range: info.color_range() == spa::sys::SPA_VIDEO_COLOR_RANGE_0_255,
        bt709: match info.color_matrix() {
            spa::sys::SPA_VIDEO_COLOR_MATRIX_BT709 => true,
            spa::sys::SPA_VIDEO_COLOR_MATRIX_BT601 => false,
            _ => size.height >= 720,
        },
    });
    let format = match (pixel_format_of_spa(spa_format), yuv) {
        (Some(f), _) => f,
        // YUV arrives as BGRx (XRGB8888) after the copy.
        (None, Some(_)) => PixelFormat::Xrgb8888,
        (None, None) => {
            tracing::warn!(format = spa_format, "PipeWire negotiated a format wl-webrtc cannot read");
            return;
        }
    };
    let layout = FrameLayout {
        width: size.width,
        height: size.height,
        stride: size.width * format.bytes_per_pixel() as u32,
        format,
    };
    let dmabuf = info.flags().bits() & spa::sys::SPA_VIDEO_FLAG_MODIFIER != 0;
    tracing::info!(
        node = %d.node,
        width = size.width,
        height = size.height,
        format = %yuv.map_or_else(|| format.to_string(), |y| format!("{:?} (converted to {format})", y.kind)),
        rate = format!("{}/{}", info.framerate().num, info.framerate().denom),
        buffers = if dmabuf { "DMA-BUF (LINEAR)" } else { "shared memory" },
        "PipeWire format"
    );
    if d.layout != Some(layout) || d.dmabuf != dmabuf {
        d.shared.lock().format_changes += 1;
    }
    d.layout = Some(layout);
    d.yuv = yuv;
    d.dmabuf = dmabuf;
    d.maps.clear();
    d.shared.lock().dmabuf = dmabuf;
    d.fresh_format = true;
    {
        // A format means the stream is linked to its node: opening is done.
        let mut slot = d.shared.lock();
        slot.connected = true;
        d.shared.cond.notify_all();
    }
    // Every Format gets its Buffers answer (param_changed repeats; the producer waits for one each time).
    match buffer_params(&layout, d.want_cursor, dmabuf, yuv.map(|y| y.kind)) {
        Ok(params) => {
            let mut pods: Vec<&Pod> = params.iter().filter_map(|p| Pod::from_bytes(p)).collect();
            if let Err(e) = stream.update_params(&mut pods) {
                tracing::warn!("PipeWire: cannot send buffer parameters: {e}");
            }
        }
        Err(e) => tracing::warn!("{e}"),
    }
}

/// Copy the newest buffer out and give every buffer back at once.
fn on_process(stream: &pw::stream::Stream, d: &mut StreamData) {
    // Drain the queue: only the newest buffer matters; older ones go straight back.
    let mut newest = None;
    while let Some(b) = stream.dequeue_buffer() {
        newest = Some(b);
    }
    let Some(mut buffer) = newest else { return };
    let Some(layout) = d.layout else { return };
    let damage = if d.fresh_format {
        None
    } else {
        buffer.find_meta::<spa::buffer::meta::MetaVideoDamage>().and_then(|m| {
            let rects: Vec<Rect> = m
                .iter()
                .map(|r| {
                    let (p, sz) = (r.position(), r.size());
                    Rect::new(p.x.max(0) as u32, p.y.max(0) as u32, sz.width, sz.height)
                })
                .collect();
            // An empty list says nothing reliable: treat as full.
            (!rects.is_empty()).then_some(rects)
        })
    };
    if d.want_cursor {
        if let Some(c) = buffer.find_meta::<spa::buffer::meta::MetaCursor>() {
            read_cursor(c, &mut d.shared.lock().cursor);
        }
    }
    let corrupted = buffer
        .find_meta::<spa::buffer::meta::MetaHeader>()
        .is_some_and(|h| h.flags().contains(spa::buffer::meta::MetaHeaderFlags::CORRUPTED));
    let datas = buffer.datas_mut();
    let Some(first) = datas.first_mut() else { return };
    let chunk = first.chunk();
    let (offset, size, stride) = (chunk.offset() as usize, chunk.size() as usize, chunk.stride());
    if size == 0 || corrupted {
        // No frame in this buffer (e.g. the producer had nothing new, or only cursor metadata changed).
        return;
    }
    let dmabuf_fd = (first.type_() == spa::buffer::DataType::DmaBuf).then(|| first.fd());
    let mem: &[u8] = match dmabuf_fd {
        Some(fd) => match map_dmabuf(&mut d.maps, i64::from(fd), first.as_raw().maxsize, first.as_raw().mapoffset) {
            Ok(i) => &d.maps[i].1,
            Err(e) => {
                d.shared.lock().bad_buffers += 1;
                if d.dmabuf_offered {
                    // Renegotiate without DMA-BUF: the producer's shared-memory format, if it has one.
                    tracing::warn!(node = %d.node, "PipeWire: cannot map a DMA-BUF buffer ({e}); asking for shared memory");
                    d.dmabuf_offered = false;
                    match enum_formats(false) {
                        Ok(formats) => {
                            let mut pods: Vec<&Pod> = formats.iter().filter_map(|f| Pod::from_bytes(f)).collect();
                            if let Err(e) = stream.update_params(&mut pods) {
                                tracing::warn!("PipeWire: cannot renegotiate: {e}");
                            }
                        }
                        Err(e) => tracing::warn!("{e}"),
                    }
                }
                return;
            }
        },
        None => match first.data() {
            Some(m) => m,
            None => {
                d.shared.lock().bad_buffers += 1;
                return;
            }
        },
    };
    let row = layout.width as usize * layout.format.bytes_per_pixel();
    let src_stride = if stride > 0 { stride as usize } else { row };
    let h = layout.height as usize;
    let planes = match d.yuv {
        Some(src) => match yuv_planes(src.kind, mem, offset, size, stride, layout.width as usize, h) {
            Ok(p) => Some((src, p)),
            Err(e) => {
                tracing::debug!(?layout, "PipeWire YUV buffer skipped: {e}");
                d.shared.lock().bad_buffers += 1;
                return;
            }
        },
        None => None,
    };
    let needed = offset + src_stride * h.saturating_sub(1) + row;
    if planes.is_none() && (src_stride < row || needed > mem.len() || h == 0) {
        tracing::debug!(offset, size, src_stride, len = mem.len(), ?layout, "PipeWire buffer too small; skipped");
        d.shared.lock().bad_buffers += 1;
        return;
    }
    let mut slot = d.shared.lock();
    // Reuse the pending frame's buffer if the capture thread did not take it, else the spare one.
    let (mut out, prev_damage) = match slot.frame.take() {
        Some(old) => {
            slot.frames_replaced += 1;
            (old.data, Some(old.damage))
        }
        None => (std::mem::take(&mut slot.spare), None),
    };
    drop(slot);
    out.resize(row * h, 0);
    if let Some(fd) = dmabuf_fd {
        dmabuf_cpu_access(i64::from(fd), DMA_BUF_SYNC_START);
    }
    match &planes {
        Some((src, p)) => {
            if let Err(e) = yuv_to_bgrx(*src, p, layout.width, layout.height, &mut out) {
                tracing::debug!(?layout, "PipeWire YUV conversion failed: {e}");
                let mut slot = d.shared.lock();
                slot.bad_buffers += 1;
                slot.spare = out;
                return;
            }
        }
        None => {
            for (y, dst) in out.chunks_exact_mut(row).enumerate() {
                let s = offset + y * src_stride;
                dst.copy_from_slice(&mem[s..s + row]);
            }
        }
    }
    if let Some(fd) = dmabuf_fd {
        dmabuf_cpu_access(i64::from(fd), DMA_BUF_SYNC_END);
    }
    // Drop the SPA buffer now: it goes back to the producer before anything else happens.
    drop(buffer);
    let damage = match (prev_damage, damage) {
        (Some(None), _) | (_, None) => None,
        (Some(Some(mut a)), Some(b)) => {
            for r in b {
                if !a.contains(&r) {
                    a.push(r);
                }
            }
            Some(a)
        }
        (None, Some(b)) => Some(b),
    };
    d.fresh_format = false;
    let mut slot = d.shared.lock();
    slot.frame = Some(CopiedFrame { data: out, layout: Some(layout), damage, ready_at: Some(Instant::now()) });
    d.shared.cond.notify_all();
}

/// The index in `maps` of a read-only mapping of the DMA-BUF `fd` (`maxsize` bytes), made the first time this
/// buffer is seen.
fn map_dmabuf(
    maps: &mut Vec<((i64, u64), memmap2::Mmap)>,
    fd: i64,
    maxsize: u32,
    mapoffset: u32,
) -> Result<usize, String> {
    let raw = i32::try_from(fd).map_err(|_| format!("bad fd {fd}"))?;
    // SAFETY: PipeWire owns the fd for as long as the buffer exists (we are inside its process callback); we
    // only read its metadata here.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    let ino = rustix::fs::fstat(borrowed).map_err(|e| e.to_string())?.st_ino;
    if let Some(i) = maps.iter().position(|(k, _)| *k == (fd, ino)) {
        return Ok(i);
    }
    if maxsize == 0 {
        return Err("zero-sized buffer".into());
    }
    if mapoffset != 0 {
        return Err(format!("DMA-BUF with a map offset ({mapoffset}) is not supported"));
    }
    // SAFETY: a read-only shared mapping of the producer's buffer. The producer may write into it while we
    // read (a torn frame at worst, never unsoundness for plain bytes); the mapping keeps its own reference to
    // the memory, so it stays valid until we drop it at the next format (when PipeWire reallocates buffers).
    let map = unsafe { memmap2::MmapOptions::new().len(maxsize as usize).map(raw) }.map_err(|e| e.to_string())?;
    maps.push(((fd, ino), map));
    Ok(maps.len() - 1)
}

/// DMA_BUF_IOCTL_SYNC = _IOW('b', 0, struct dma_buf_sync { u64 flags }).
const DMA_BUF_IOCTL_SYNC: libc::c_ulong = 0x4008_6200;
const DMA_BUF_SYNC_READ: u64 = 1;
const DMA_BUF_SYNC_START: u64 = 0;
const DMA_BUF_SYNC_END: u64 = 4;

/// Tell the kernel the CPU starts/ends reading a DMA-BUF (cache coherency on GPUs that need it). Memory that
/// is not a kernel DMA-BUF (a memfd) answers ENOTTY: nothing to do then.
fn dmabuf_cpu_access(fd: i64, phase: u64) {
    let Ok(fd) = i32::try_from(fd) else { return };
    let mut flags: u64 = phase | DMA_BUF_SYNC_READ;
    // SAFETY: the ioctl reads one u64 from a valid pointer; a wrong fd type is an error return, not UB.
    unsafe { libc::ioctl(fd, DMA_BUF_IOCTL_SYNC, &mut flags as *mut u64) };
}

/// Fold one SPA cursor metadata block into `state` (id 0: no cursor over the stream).
fn read_cursor(c: &spa::buffer::meta::MetaCursor, state: &mut Option<CursorState>) {
    let st = state.get_or_insert_with(CursorState::default);
    st.updates += 1;
    st.inside = c.id() != 0;
    if !st.inside {
        return;
    }
    (st.x, st.y) = (c.position().x, c.position().y);
    (st.hotspot_x, st.hotspot_y) = (c.hotspot().x, c.hotspot().y);
    // A bitmap comes only when the image changed.
    let Some(bitmap) = c.bitmap().filter(|b| b.is_valid()) else { return };
    let Some(format) = pixel_format_of_spa(bitmap.format().as_raw()) else { return };
    let (size, stride) = (bitmap.size(), bitmap.stride());
    let Some(data) = bitmap.bitmap_data() else { return };
    let Ok(stride) = u32::try_from(stride) else { return };
    let needed = stride as usize * size.height as usize;
    if size.width == 0 || stride < size.width * format.bytes_per_pixel() as u32 || data.len() < needed {
        return;
    }
    st.image =
        Some(CursorImage { width: size.width, height: size.height, format, stride, data: data[..needed].to_vec() });
    st.image_updates += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spa_formats_map_to_drm_names_by_memory_order() {
        // BGRx: bytes B, G, R, x = the little-endian word x:R:G:B = XRGB8888.
        let px = [0x10u8, 0x20, 0x30, 0xff];
        assert_eq!(
            pixel_format_of_spa(spa::sys::SPA_VIDEO_FORMAT_BGRx).map(|f| f.to_rgb8(&px)),
            Some([0x30, 0x20, 0x10])
        );
        assert_eq!(
            pixel_format_of_spa(spa::sys::SPA_VIDEO_FORMAT_RGBA).map(|f| f.to_rgb8(&px)),
            Some([0x10, 0x20, 0x30])
        );
        assert_eq!(
            pixel_format_of_spa(spa::sys::SPA_VIDEO_FORMAT_xRGB).map(|f| f.to_rgb8(&px)),
            Some([0x20, 0x30, 0xff])
        );
        assert_eq!(
            pixel_format_of_spa(spa::sys::SPA_VIDEO_FORMAT_RGB).map(|f| f.to_rgb8(&px)),
            Some([0x10, 0x20, 0x30])
        );
        assert_eq!(pixel_format_of_spa(spa::sys::SPA_VIDEO_FORMAT_I420), None);
    }

    #[test]
    fn format_and_buffer_params_serialize() {
        let f = enum_format(None).expect("enum format");
        assert!(Pod::from_bytes(&f).is_some());
        let layout = FrameLayout { width: 64, height: 32, stride: 256, format: PixelFormat::Xrgb8888 };
        let params = buffer_params(&layout, false, false, None).expect("buffer params");
        assert_eq!(params.len(), 3);
        let params = buffer_params(&layout, false, false, Some(Yuv::I420)).expect("buffer params, YUV");
        assert!(params.iter().all(|p| Pod::from_bytes(p).is_some()));
        let params = buffer_params(&layout, true, true, None).expect("buffer params with cursor, DMA-BUF");
        assert_eq!(params.len(), 4);
        let formats = enum_formats(true).expect("formats");
        assert_eq!(formats.len(), 2, "DMA-BUF first, then shared memory");
        assert!(formats[0].len() > formats[1].len(), "the first carries the modifier");
        assert!(params.iter().all(|p| Pod::from_bytes(p).is_some()));
    }

    #[test]
    fn errors_map_to_capture_errors() {
        let gone: CaptureError = PipewireError::DaemonGone("broken pipe".into()).into();
        assert!(gone.to_string().contains("went away"), "{gone}");
        let down: CaptureError = PipewireError::DaemonNotRunning(Some("/run/x/pipewire-0".into())).into();
        assert!(down.to_string().contains("is PipeWire running"), "{down}");
    }
}

#[cfg(test)]
mod yuv_tests {
    use super::*;

    /// GStreamer's I420 layout for 6x3: luma stride 8 (4-aligned), 4 rows (even), chroma stride 4.
    #[test]
    fn i420_planes_are_found_with_aligned_and_tight_strides() {
        let aligned = vec![0u8; 8 * 4 + 2 * 4 * 2];
        let p = yuv_planes(Yuv::I420, &aligned, 0, aligned.len(), 8, 6, 3).expect("aligned");
        assert_eq!((p.y_stride, p.u_stride, p.v_stride, p.y.len(), p.u.len(), p.v.len()), (8, 4, 4, 24, 8, 8));
        // No stride in the chunk: GStreamer's 4-aligned layout is found from the size.
        let p = yuv_planes(Yuv::I420, &aligned, 0, aligned.len(), 0, 6, 3).expect("inferred");
        assert_eq!((p.y_stride, p.u_stride), (8, 4));
        let tight = vec![0u8; 6 * 4 + 2 * 3 * 2];
        let p = yuv_planes(Yuv::I420, &tight, 0, tight.len(), 6, 6, 4).expect("tight");
        assert_eq!((p.y_stride, p.u_stride), (6, 3));
        assert!(yuv_planes(Yuv::I420, &tight, 0, tight.len() - 1, 6, 6, 4).is_err(), "one byte short");
        assert!(yuv_planes(Yuv::Nv12, &tight, 4, tight.len(), 6, 6, 4).is_err(), "chunk beyond the buffer");
        // NV12 322x182 as GStreamer lays it out (stride 324), no stride given.
        let nv12 = vec![0u8; 324 * 182 + 324 * 91];
        let p = yuv_planes(Yuv::Nv12, &nv12, 0, nv12.len(), 0, 322, 182).expect("nv12");
        assert_eq!((p.y_stride, p.u_stride, p.u.len()), (324, 324, 324 * 91));
    }

    #[test]
    fn formats_are_read_from_enum_formats_without_the_deserializer() {
        let ours = enum_format(None).expect("format");
        let pod = Pod::from_bytes(&ours).expect("pod");
        let ids = formats_in(pod);
        assert_eq!(ids.len(), FORMATS.len() + YUV_FORMATS.len(), "{ids:?}");
        assert_eq!(ids[0], spa::sys::SPA_VIDEO_FORMAT_BGRx);
        // A choice whose child size is 0 (what libspa-rs' deserializer divides by): nothing, no panic.
        let mut bad = vec![0u8; 32];
        bad[0..4].copy_from_slice(&24u32.to_ne_bytes());
        bad[4..8].copy_from_slice(&spa::sys::SPA_TYPE_Choice.to_ne_bytes());
        bad[20..24].copy_from_slice(&spa::sys::SPA_TYPE_Id.to_ne_bytes());
        assert!(choice_ids(&bad).is_empty());
        assert!(choice_ids(&bad[..10]).is_empty());
        assert!(format_mismatch("n", Some(&[spa::sys::SPA_VIDEO_FORMAT_I420])).is_none(), "I420 is ours");
        assert!(format_mismatch("n", None).is_none(), "not known yet");
        let e = format_mismatch("n", Some(&[])).expect("nameless");
        assert!(e.to_string().contains("caps filter"), "{e}");
        assert_eq!(
            accepted_format_names(),
            "BGRx, BGRA, RGBx, RGBA, xRGB, ARGB, xBGR, ABGR, RGB, BGR, I420, NV12, YUY2"
        );
        let e = format_mismatch("n", Some(&[spa::sys::SPA_VIDEO_FORMAT_GRAY8])).expect("mismatch");
        assert!(e.to_string().contains("offers GRAY8; wl-webrtc accepts BGRx"), "{e}");
    }

    #[test]
    fn yuv_grey_and_colour_come_out_as_rgb() {
        // Limited-range BT.601 grey (Y 126, U = V = 128) and a 4x2 I420 / NV12 / YUY2 frame of it.
        let (w, h) = (4u32, 2u32);
        let src = |kind| YuvSource { kind, full_range: false, bt709: false };
        let mut out = vec![0u8; 4 * 2 * 4];
        let i420 = [vec![126u8; 8], vec![128u8; 2], vec![128u8; 2]].concat();
        let p = yuv_planes(Yuv::I420, &i420, 0, i420.len(), 4, 4, 2).expect("planes");
        yuv_to_bgrx(src(Yuv::I420), &p, w, h, &mut out).expect("I420");
        assert!(
            out.chunks(4).all(|px| px[0].abs_diff(128) <= 2 && px[1].abs_diff(128) <= 2 && px[3] == 255),
            "{out:?}"
        );
        let nv12 = [vec![126u8; 8], vec![128u8; 4]].concat();
        let p = yuv_planes(Yuv::Nv12, &nv12, 0, nv12.len(), 4, 4, 2).expect("planes");
        yuv_to_bgrx(src(Yuv::Nv12), &p, w, h, &mut out).expect("NV12");
        assert!(out.chunks(4).all(|px| px[2].abs_diff(128) <= 2), "{out:?}");
        // YUY2 red-ish: V high.
        let yuy2: Vec<u8> = [81u8, 90, 81, 240].repeat(4);
        let p = yuv_planes(Yuv::Yuy2, &yuy2, 0, yuy2.len(), 8, 4, 2).expect("planes");
        yuv_to_bgrx(src(Yuv::Yuy2), &p, w, h, &mut out).expect("YUY2");
        assert!(out.chunks(4).all(|px| px[2] > 200 && px[1] < 40 && px[0] < 40), "red: {out:?}");
    }
}

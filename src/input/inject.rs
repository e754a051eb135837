//! The injector thread: its own Wayland connection with a zwlr_virtual_pointer_v1 and a
//! zwp_virtual_keyboard_v1, fed by a bounded channel of [`InputCommand`]s from the viewer tasks.
//!
//! Why a thread of its own and not the capture thread's connection: the capture thread blocks for up to
//! 100 ms in `next_frame` on a static screen (and in `--fps` pacing), so input drained there would wait that
//! long; here a command is injected and flushed the moment it arrives (blocking `recv`), and input keeps
//! working while capture is lost and retried. The compositor sees two clients of the same process; virtual
//! devices are per client anyway.
//!
//! Back-pressure: requests are flushed every [`FLUSH_EVERY`] requests and after each batch of commands. When
//! the compositor's socket is full (`EAGAIN`: it reads more slowly than we write, e.g. a long `text` typed at
//! once) the injector waits for it to become writable again ([`WlSession::flush_within`]) and goes on; the
//! commands behind it wait in the bounded queue. Only a socket that stays full for [`STALL_TIMEOUT`] counts as a
//! dead compositor.
//!
//! Bounds: the queue holds at most [`QUEUE_DEPTH`] commands and [`MAX_QUEUED_CHARS`] characters of `text`; a
//! command that does not fit is dropped whole (never truncated) and counted as dropped. So memory stays bounded
//! whatever viewers send, and what is typed is always whole messages in the order they arrived.
//!
//! Counting: an event is counted as injected once the flush that carried its last request succeeded; events
//! whose requests were lost with a dead connection are counted as dropped.
//!
//! Failure: no compositor (or it went away) → commands are dropped and counted, the connection is retried at
//! most once a second; on reconnect the held-key state starts empty (the old devices died with the old
//! connection, and the compositor released their keys). On stop everything still held is released.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use smithay_client_toolkit::dispatch2::Dispatch2;
use wayland_client::protocol::wl_pointer::{self, ButtonState};
use wayland_client::protocol::wl_seat::{self, WlSeat};
use wayland_client::{Connection, Proxy, QueueHandle};
use wayland_protocols_misc::zwp_virtual_keyboard_v1::client::zwp_virtual_keyboard_manager_v1::{
    self, ZwpVirtualKeyboardManagerV1,
};
use wayland_protocols_misc::zwp_virtual_keyboard_v1::client::zwp_virtual_keyboard_v1::{self, ZwpVirtualKeyboardV1};
use wayland_protocols_wlr::virtual_pointer::v1::client::zwlr_virtual_pointer_manager_v1::{
    self, ZwlrVirtualPointerManagerV1,
};
use wayland_protocols_wlr::virtual_pointer::v1::client::zwlr_virtual_pointer_v1::{self, ZwlrVirtualPointerV1};

use super::keymap::Keyboard;
use super::state::{Action, Area, Axis, InputState, PointerSpace, bounding_box};
use super::{InputCounters, InputEvent};
use crate::capture::CaptureError;
use crate::capture::wayland::{WlSession, WlState};

/// Commands waiting for the injector before new ones are dropped.
pub(crate) const QUEUE_DEPTH: usize = 1024;
/// Characters of `text` messages waiting for the injector before new texts are dropped: 16 full-length
/// messages, a few seconds of typing (the 5 × 1,000-character burst of the tests fits three times over).
pub const MAX_QUEUED_CHARS: u64 = 16_384;
/// Requests written between two flushes (~2.5 KB): a long text goes out in slices, each waiting for room in
/// the compositor's socket, instead of piling up in the connection's buffer.
const FLUSH_EVERY: usize = 128;
/// Key events of a `text` typed per second (~1,000 characters/s of mixed text: 2 events a character, 4 with
/// Shift). Why a pace at all: the compositor forwards every key to the focused client at once, and a
/// compositor on libwayland-server < 1.23 (Debian 12, Ubuntu 24.04) disconnects a client whose socket fills up
/// (its event buffer is fixed). Our own socket's back-pressure says nothing about how fast that client reads,
/// so a long paste is typed at a pace ordinary clients keep up with instead of as fast as we can write it.
const TEXT_KEYS_PER_SECOND: u32 = 3_000;
/// Key events of a text typed between two pauses (a slice of 20 ms at the pace above).
const TEXT_SLICE_KEYS: usize = 60;
/// A compositor that takes none of our requests for this long is treated as hung: reconnect.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the injector looks at the stop flag and the compositor's events when idle.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Pause between connection attempts while the compositor is away.
const RETRY: Duration = Duration::from_secs(1);

pub const VIRTUAL_POINTER_IFACE: &str = "zwlr_virtual_pointer_manager_v1";
pub(crate) const VIRTUAL_KEYBOARD_IFACE: &str = "zwp_virtual_keyboard_manager_v1";

/// What viewer tasks tell the injector.
#[derive(Debug, Clone, PartialEq)]
pub enum InputCommand {
    /// A validated event of viewer `viewer`.
    Event { viewer: u64, event: InputEvent },
    /// The viewer disconnected (or its input channel closed): release what it held.
    ViewerGone(u64),
}

/// Settings of the injector.
#[derive(Debug, Clone)]
pub struct InjectorConfig {
    /// Compositor socket.
    pub socket: PathBuf,
    /// The streamed output (pointer coordinates are relative to it); `None`: the first.
    pub output: Option<String>,
    /// xkb layout and variant of the uploaded keymap.
    pub layout: String,
    pub variant: String,
}

/// The sending side, held by the viewer tasks.
#[derive(Debug, Clone)]
pub struct InputSender {
    tx: SyncSender<InputCommand>,
    counters: Arc<InputCounters>,
}

impl InputSender {
    /// A sender over an existing channel (tests drive the receiving side themselves).
    pub fn from_channel(tx: SyncSender<InputCommand>, counters: Arc<InputCounters>) -> InputSender {
        InputSender { tx, counters }
    }

    /// Queue a command; false (and counted as dropped) when the injector is behind or gone, or when a text
    /// would take the queued characters over [`MAX_QUEUED_CHARS`].
    pub fn send(&self, cmd: InputCommand) -> bool {
        let chars = text_chars(&cmd);
        if chars > 0 && !reserve_chars(&self.counters.queued_chars, chars) {
            tracing::debug!(chars, "input: text dropped, the injector's queue holds too many characters");
            InputCounters::add(&self.counters.dropped, 1);
            return false;
        }
        match self.tx.try_send(cmd) {
            Ok(()) => true,
            Err(TrySendError::Full(InputCommand::ViewerGone(id))) => {
                // Must not be lost (keys would stay held): wait for room, off the async runtime's hot path.
                let tx = self.tx.clone();
                std::thread::spawn(move || tx.send(InputCommand::ViewerGone(id)).is_ok());
                true
            }
            Err(_) => {
                self.counters.queued_chars.fetch_sub(chars, Ordering::Relaxed);
                InputCounters::add(&self.counters.dropped, 1);
                false
            }
        }
    }
}

/// Characters a command puts in the queue (those of a `text` event).
fn text_chars(cmd: &InputCommand) -> u64 {
    match cmd {
        InputCommand::Event { event: InputEvent::Text(s), .. } => s.chars().count() as u64,
        _ => 0,
    }
}

/// Add `n` to the queued characters unless that would pass [`MAX_QUEUED_CHARS`].
fn reserve_chars(queued: &AtomicU64, n: u64) -> bool {
    queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| (q + n <= MAX_QUEUED_CHARS).then_some(q + n)).is_ok()
}

/// Start the injector thread. It ends when `stop` is set (releasing every held key first).
pub fn spawn(
    cfg: InjectorConfig,
    counters: Arc<InputCounters>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(InputSender, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_DEPTH);
    let sender = InputSender { tx, counters: Arc::clone(&counters) };
    let handle = std::thread::Builder::new().name("input".into()).spawn(move || run(&cfg, &rx, &counters, &stop))?;
    Ok((sender, handle))
}

fn run(cfg: &InjectorConfig, rx: &Receiver<InputCommand>, counters: &InputCounters, stop: &AtomicBool) {
    let mut devices: Option<Devices> = None;
    let mut state = InputState::default();
    // The layout each viewer's browser said it has (guessed from its layout map); others get the configured.
    let mut layouts: std::collections::HashMap<u64, &'static str> = std::collections::HashMap::new();
    let mut candidates = crate::input::keymap::LayoutCandidates::default();
    let mut last_try: Option<Instant> = None;
    let mut failures = 0u32;
    while !stop.load(Ordering::Relaxed) {
        // The devices exist from the start (not at the first event): a compositor without a physical
        // keyboard (headless) gives clients a wl_keyboard only once one exists, and they need it before the
        // first key arrives.
        if devices.is_none() && last_try.is_none_or(|t| t.elapsed() >= RETRY) {
            last_try = Some(Instant::now());
            match Devices::open(cfg) {
                Ok(d) => {
                    failures = 0;
                    tracing::info!(pointer = ?d.space, "input: virtual pointer and keyboard ready");
                    devices = Some(d);
                    state = InputState::default();
                }
                Err(e) => {
                    // Said once; a compositor without the protocols would otherwise fill the log.
                    if failures == 0 {
                        tracing::warn!("input: cannot create virtual devices: {e}; retrying every second");
                    } else {
                        tracing::debug!("input: cannot create virtual devices: {e}");
                    }
                    failures += 1;
                }
            }
        }
        let cmd = match rx.recv_timeout(IDLE_POLL) {
            Ok(cmd) => cmd,
            Err(RecvTimeoutError::Timeout) => {
                if let Some(d) = devices.as_mut()
                    && let Err(e) = d.poll_events(stop)
                {
                    tracing::warn!("input: {e}; reconnecting");
                    devices = None;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let Some(d) = devices.as_mut() else {
            counters.queued_chars.fetch_sub(text_chars(&cmd), Ordering::Relaxed);
            if matches!(cmd, InputCommand::Event { .. }) {
                InputCounters::add(&counters.dropped, 1);
            }
            continue;
        };
        // Everything already queued goes out together (flushed in slices of FLUSH_EVERY requests).
        let mut result = Ok(true);
        for cmd in std::iter::once(cmd).chain(rx.try_iter()) {
            let chars = text_chars(&cmd);
            result = match cmd {
                InputCommand::Event { viewer, event: InputEvent::Layout(map) } => {
                    match candidates.guess(&map) {
                        // At least half of its keys must agree, or the map says nothing we understand.
                        Some((layout, n)) if 2 * n >= map.len() => {
                            tracing::info!(
                                viewer,
                                layout,
                                matched = n,
                                keys = map.len(),
                                "input: the viewer's keyboard layout"
                            );
                            layouts.insert(viewer, layout);
                        }
                        _ => tracing::info!(
                            viewer,
                            keys = map.len(),
                            "input: the viewer's layout map matches no known layout; using the configured one"
                        ),
                    }
                    // Taken (it has no requests of its own): every message received is accounted for.
                    InputCounters::add(&counters.injected, 1);
                    Ok(true)
                }
                InputCommand::Event { viewer, event } => {
                    // Keys type what the viewer's keycaps say: its layout's keymap, switched to when needed.
                    if matches!(event, InputEvent::Key { .. } | InputEvent::Text(_)) {
                        let want = layouts.get(&viewer).copied().unwrap_or(cfg.layout.as_str());
                        let variant = if want == cfg.layout { cfg.variant.as_str() } else { "" };
                        if want != d.layout
                            && let Err(e) = d.use_layout(want, variant, &mut state, counters, stop)
                        {
                            tracing::warn!("input: cannot switch to the {want} keymap: {e}");
                        }
                    }
                    let actions = state.handle(viewer, event, d.space);
                    let r = d.apply(&actions, counters, stop);
                    match r {
                        Ok(true) => d.unflushed += 1,
                        Ok(false) | Err(_) => InputCounters::add(&counters.dropped, 1),
                    }
                    r
                }
                InputCommand::ViewerGone(viewer) => {
                    layouts.remove(&viewer);
                    let up = state.viewer_gone(viewer);
                    if !up.is_empty() {
                        tracing::info!(viewer, released = up.len(), "input: released what the viewer held");
                    }
                    d.apply(&up, counters, stop)
                }
            };
            counters.queued_chars.fetch_sub(chars, Ordering::Relaxed);
            if !matches!(result, Ok(true)) {
                break;
            }
        }
        if let Ok(true) = result {
            result = d.flush(counters, stop);
        }
        if let Err(e) = result {
            tracing::warn!("input: {e}; reconnecting");
            InputCounters::add(&counters.dropped, d.unflushed);
            devices = None;
        }
    }
    if let Some(d) = devices.as_mut() {
        let up = state.release_everything();
        let done = AtomicBool::new(false);
        let released = d.apply(&up, counters, &done).and_then(|_| d.flush(counters, &done));
        if let Err(e) = released {
            tracing::debug!("input: releasing held keys on stop: {e}");
            InputCounters::add(&counters.dropped, d.unflushed);
        }
    }
    // Whatever is still queued was not injected.
    for cmd in rx.try_iter() {
        counters.queued_chars.fetch_sub(text_chars(&cmd), Ordering::Relaxed);
        if matches!(cmd, InputCommand::Event { .. }) {
            InputCounters::add(&counters.dropped, 1);
        }
    }
}

/// Sleep until `until` (in slices, watching `stop`); false when `stop` was set.
fn pause_until(until: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(IDLE_POLL));
    }
}

/// The virtual devices on one connection.
struct Devices {
    session: WlSession,
    pointer: ZwlrVirtualPointerV1,
    keyboard: ZwpVirtualKeyboardV1,
    kbd: Keyboard,
    /// The layout `kbd` was compiled from (the configured one, or a viewer's: [`Devices::use_layout`]).
    layout: String,
    /// Where pointer coordinates land (refreshed when outputs change).
    space: PointerSpace,
    /// The bound output is rotated: the compositor takes absolute positions in its framebuffer's orientation,
    /// the viewer gives them upright.
    rotation: crate::frame::Rotation,
    bound_to_output: bool,
    output: Option<String>,
    epoch: Instant,
    /// Requests written since the last flush.
    requests: usize,
    /// Events whose requests are all written but not flushed yet (counted as injected by the next flush).
    unflushed: u64,
}

/// Where the pointer's coordinates land for `output` (the first when `None`) of `session`.
fn pointer_space(session: &WlSession, output: Option<&str>, bound: bool) -> Result<PointerSpace, CaptureError> {
    let (_, desc) = session.find_output(output)?;
    let area = |d: &crate::capture::wayland::OutputDesc| {
        let scale = d.scale.max(1);
        Area {
            x: d.x,
            y: d.y,
            width: d.logical_width.unwrap_or(d.width / scale).max(1) as u32,
            height: d.logical_height.unwrap_or(d.height / scale).max(1) as u32,
        }
    };
    let out = area(&desc);
    if bound {
        return Ok(PointerSpace::Output { width: out.width, height: out.height });
    }
    let layout = bounding_box(session.outputs().iter().map(|(_, d)| area(d))).unwrap_or(out);
    Ok(PointerSpace::Layout { output: out, layout })
}

/// How the bound output is rotated (only a pointer bound to it needs to know).
fn output_rotation(session: &WlSession, output: Option<&str>, bound: bool) -> crate::frame::Rotation {
    match session.find_output(output) {
        Ok((_, desc)) if bound => crate::frame::Rotation::for_output_transform(&desc.transform),
        _ => crate::frame::Rotation::None,
    }
}

/// An upright position (`x` of `xe`, `y` of `ye`) as the compositor wants it for an output whose framebuffer is
/// turned by `rotation` from upright: in the framebuffer's orientation (measured on Sway: on a 90° output a
/// position (a, b) sent lands at (1 − b, a) upright, so (u, v) is sent as (v, 1 − u)).
fn to_framebuffer(rotation: crate::frame::Rotation, x: u32, y: u32, xe: u32, ye: u32) -> (u32, u32, u32, u32) {
    use crate::frame::Rotation as R;
    match rotation {
        R::None => (x, y, xe, ye),
        R::Cw90 => (y, xe.saturating_sub(x), ye, xe),
        R::Cw180 => (xe.saturating_sub(x), ye.saturating_sub(y), xe, ye),
        R::Cw270 => (ye.saturating_sub(y), x, ye, xe),
    }
}

impl Devices {
    fn open(cfg: &InjectorConfig) -> Result<Devices, CaptureError> {
        let kbd = Keyboard::new(&cfg.layout, &cfg.variant).map_err(|e| CaptureError::Unsupported(e.to_string()))?;
        let mut session = WlSession::connect(&cfg.socket)?;
        let qh = session.handle();
        let missing = |iface: &str| {
            CaptureError::MissingGlobal(format!(
                "the compositor does not offer {iface}: remote control needs a wlroots-based compositor (Sway, \
                 Hyprland, river, …)"
            ))
        };
        let pointers: ZwlrVirtualPointerManagerV1 =
            session.globals.bind(&qh, 1..=2, InputData).map_err(|_| missing(VIRTUAL_POINTER_IFACE))?;
        let keyboards: ZwpVirtualKeyboardManagerV1 =
            session.globals.bind(&qh, 1..=1, InputData).map_err(|_| missing(VIRTUAL_KEYBOARD_IFACE))?;
        let seat: WlSeat = session.globals.bind(&qh, 1..=7, InputData).map_err(|_| missing("wl_seat"))?;
        let (output, _) = session.find_output(cfg.output.as_deref())?;
        let bound_to_output = pointers.version() >= 2;
        let pointer = if bound_to_output {
            pointers.create_virtual_pointer_with_output(Some(&seat), Some(&output), &qh, InputData)
        } else {
            pointers.create_virtual_pointer(Some(&seat), &qh, InputData)
        };
        let space = pointer_space(&session, cfg.output.as_deref(), bound_to_output)?;
        let keyboard = keyboards.create_virtual_keyboard(&seat, &qh, InputData);
        upload_keymap(&keyboard, &kbd.keymap_text())?;
        session.flush_within(STALL_TIMEOUT, &AtomicBool::new(false))?;
        let rotation = output_rotation(&session, cfg.output.as_deref(), bound_to_output);
        let mut d = Devices {
            session,
            pointer,
            keyboard,
            kbd,
            layout: cfg.layout.clone(),
            space,
            rotation,
            bound_to_output,
            output: cfg.output.clone(),
            epoch: Instant::now(),
            requests: 0,
            unflushed: 0,
        };
        // A round trip: a protocol error (e.g. a refused keymap) shows up here, not at the first key.
        d.poll_events(&AtomicBool::new(false))?;
        Ok(d)
    }

    /// Read the compositor's events (output changes; a dead connection is an error), at most ~1 ms.
    /// Upload the keymap of `layout` (with `variant`: the configured one for the configured layout), after releasing
    /// every key and button held (a key pressed under one keymap must not be released under another, and no
    /// modifier may stay held across the switch).
    fn use_layout(
        &mut self,
        layout: &str,
        variant: &str,
        state: &mut InputState,
        counters: &InputCounters,
        stop: &AtomicBool,
    ) -> Result<(), CaptureError> {
        let up = state.release_everything();
        self.apply(&up, counters, stop)?;
        let kbd = Keyboard::new(layout, variant).map_err(|e| CaptureError::Unsupported(e.to_string()))?;
        upload_keymap(&self.keyboard, &kbd.keymap_text())?;
        self.kbd = kbd;
        tracing::info!(layout, "input: keymap switched");
        self.layout = layout.to_owned();
        Ok(())
    }

    fn poll_events(&mut self, stop: &AtomicBool) -> Result<(), CaptureError> {
        self.session.dispatch_until(Instant::now() + Duration::from_millis(1), stop, |_| Ok(false))?;
        if let Ok(space) = pointer_space(&self.session, self.output.as_deref(), self.bound_to_output) {
            self.space = space;
        }
        self.rotation = output_rotation(&self.session, self.output.as_deref(), self.bound_to_output);
        Ok(())
    }

    /// Send everything written, waiting while the compositor's socket is full; the events it completes are
    /// counted as injected. `Ok(false)`: `stop` was set while waiting.
    fn flush(&mut self, counters: &InputCounters, stop: &AtomicBool) -> Result<bool, CaptureError> {
        let Some(waits) = self.session.flush_within(STALL_TIMEOUT, stop)? else { return Ok(false) };
        if waits > 0 {
            tracing::debug!(waits, "input: the compositor's socket was full; waited for it");
            InputCounters::add(&counters.backpressure_waits, u64::from(waits));
        }
        self.requests = 0;
        InputCounters::add(&counters.injected, std::mem::take(&mut self.unflushed));
        Ok(true)
    }

    /// After `n` more requests: flush when a slice is full.
    fn wrote(&mut self, n: usize, counters: &InputCounters, stop: &AtomicBool) -> Result<bool, CaptureError> {
        self.requests += n;
        if self.requests >= FLUSH_EVERY { self.flush(counters, stop) } else { Ok(true) }
    }

    fn time(&self) -> u32 {
        self.epoch.elapsed().as_millis() as u32
    }

    /// A key press or release (and the modifiers it changes); the number of requests written.
    fn key(&mut self, code: u32, down: bool) -> usize {
        let time = self.time();
        let state = if down { wl_keyboard_state::PRESSED } else { wl_keyboard_state::RELEASED };
        self.keyboard.key(time, code, state);
        if let Some(m) = self.kbd.update_key(code, down) {
            self.keyboard.modifiers(m.depressed, m.latched, m.locked, m.group);
            return 2;
        }
        1
    }

    /// Write the requests of `actions`, flushing every [`FLUSH_EVERY`] requests (waiting for room in the
    /// compositor's socket). `Ok(false)`: `stop` was set while waiting (the rest is not written).
    fn apply(&mut self, actions: &[Action], counters: &InputCounters, stop: &AtomicBool) -> Result<bool, CaptureError> {
        for action in actions {
            let time = self.time();
            let written = match action {
                Action::Motion { x, y, x_extent, y_extent } => {
                    let (x, y, xe, ye) = to_framebuffer(self.rotation, *x, *y, *x_extent, *y_extent);
                    self.pointer.motion_absolute(time, x, y, xe, ye);
                    self.pointer.frame();
                    2
                }
                Action::Button { code, down } => {
                    let state = if *down { ButtonState::Pressed } else { ButtonState::Released };
                    self.pointer.button(time, *code, state);
                    self.pointer.frame();
                    2
                }
                Action::Axis { axis, value, discrete } => {
                    let axis = match axis {
                        Axis::Vertical => wl_pointer::Axis::VerticalScroll,
                        Axis::Horizontal => wl_pointer::Axis::HorizontalScroll,
                    };
                    match discrete {
                        Some(steps) => {
                            self.pointer.axis_source(wl_pointer::AxisSource::Wheel);
                            self.pointer.axis_discrete(time, axis, *value, *steps);
                        }
                        None => {
                            self.pointer.axis_source(wl_pointer::AxisSource::Continuous);
                            self.pointer.axis(time, axis, *value);
                        }
                    }
                    self.pointer.frame();
                    3
                }
                Action::Key { code, down } => self.key(*code, *down),
                Action::Text(text) => {
                    let (keys, skipped) = self.kbd.text_to_keys(text);
                    if skipped > 0 {
                        tracing::debug!(skipped, "input: characters the keymap cannot type");
                        InputCounters::add(&counters.rejected, skipped as u64);
                    }
                    for slice in keys.chunks(TEXT_SLICE_KEYS) {
                        let until = Instant::now() + Duration::from_secs(1) * slice.len() as u32 / TEXT_KEYS_PER_SECOND;
                        for &(code, down) in slice {
                            let n = self.key(code, down);
                            if !self.wrote(n, counters, stop)? {
                                return Ok(false);
                            }
                        }
                        if !self.flush(counters, stop)? || !pause_until(until, stop) {
                            return Ok(false);
                        }
                    }
                    0
                }
            };
            if !self.wrote(written, counters, stop)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Drop for Devices {
    fn drop(&mut self) {
        self.pointer.destroy();
        self.keyboard.destroy();
        let _ = self.session.conn.flush();
    }
}

/// `wl_keyboard.key_state` values (the virtual keyboard's `key` takes them as a plain uint).
mod wl_keyboard_state {
    pub(crate) const RELEASED: u32 = 0;
    pub(crate) const PRESSED: u32 = 1;
}

/// `wl_keyboard.keymap_format.xkb_v1`.
const KEYMAP_FORMAT_XKB_V1: u32 = 1;

/// Put the keymap text (NUL-terminated, as the compositor hands it to xkbcommon) in a sealed memfd and send it.
fn upload_keymap(keyboard: &ZwpVirtualKeyboardV1, text: &str) -> Result<(), CaptureError> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let io = |e: std::io::Error| CaptureError::Unsupported(format!("cannot write the keymap to a memfd: {e}"));
    let fd = rustix::fs::memfd_create("wl-webrtc-keymap", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(|e| io(e.into()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(text.as_bytes()).and_then(|()| file.write_all(&[0])).map_err(io)?;
    let size = u32::try_from(text.len() + 1).map_err(|_| CaptureError::Unsupported("keymap too large".into()))?;
    // Read-only from here on: the compositor maps it.
    let _ =
        rustix::fs::fcntl_add_seals(&file, SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL);
    keyboard.keymap(KEYMAP_FORMAT_XKB_V1, file.as_fd(), size);
    Ok(())
}

/// User data of the input protocol objects (none of them sends events we need).
#[derive(Debug, Clone, Copy)]
pub(crate) struct InputData;

impl Dispatch2<ZwlrVirtualPointerManagerV1, WlState> for InputData {
    fn event(
        &self,
        _: &mut WlState,
        _: &ZwlrVirtualPointerManagerV1,
        _: zwlr_virtual_pointer_manager_v1::Event,
        _: &Connection,
        _: &QueueHandle<WlState>,
    ) {
    }
}

impl Dispatch2<ZwlrVirtualPointerV1, WlState> for InputData {
    fn event(
        &self,
        _: &mut WlState,
        _: &ZwlrVirtualPointerV1,
        _: zwlr_virtual_pointer_v1::Event,
        _: &Connection,
        _: &QueueHandle<WlState>,
    ) {
    }
}

impl Dispatch2<ZwpVirtualKeyboardManagerV1, WlState> for InputData {
    fn event(
        &self,
        _: &mut WlState,
        _: &ZwpVirtualKeyboardManagerV1,
        _: zwp_virtual_keyboard_manager_v1::Event,
        _: &Connection,
        _: &QueueHandle<WlState>,
    ) {
    }
}

impl Dispatch2<ZwpVirtualKeyboardV1, WlState> for InputData {
    fn event(
        &self,
        _: &mut WlState,
        _: &ZwpVirtualKeyboardV1,
        _: zwp_virtual_keyboard_v1::Event,
        _: &Connection,
        _: &QueueHandle<WlState>,
    ) {
    }
}

impl Dispatch2<WlSeat, WlState> for InputData {
    fn event(&self, _: &mut WlState, _: &WlSeat, _: wl_seat::Event, _: &Connection, _: &QueueHandle<WlState>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_full_queue_drops_events_but_never_a_viewers_departure() {
        let counters = Arc::new(InputCounters::default());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let sender = InputSender::from_channel(tx, Arc::clone(&counters));
        let ev = InputCommand::Event { viewer: 1, event: InputEvent::Key { key: 30, down: true } };
        assert!(sender.send(ev.clone()));
        assert!(!sender.send(ev.clone()), "queue full: dropped");
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 1);
        assert!(sender.send(InputCommand::ViewerGone(1)), "queued for delivery once there is room");
        assert_eq!(rx.recv_timeout(Duration::from_secs(1)).ok(), Some(ev));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).ok(), Some(InputCommand::ViewerGone(1)));
    }

    #[test]
    fn texts_beyond_the_queued_character_bound_are_dropped_whole_and_counted() {
        let counters = Arc::new(InputCounters::default());
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_DEPTH);
        let sender = InputSender::from_channel(tx, Arc::clone(&counters));
        let text = |n: usize| InputCommand::Event { viewer: 1, event: InputEvent::Text("x".repeat(n)) };
        let fit = (MAX_QUEUED_CHARS / 1000) as usize;
        for _ in 0..fit {
            assert!(sender.send(text(1000)));
        }
        let left = MAX_QUEUED_CHARS - 1000 * fit as u64;
        assert!(!sender.send(text(1000)), "over the bound: dropped");
        assert!(sender.send(text(left as usize)), "what still fits is taken");
        assert!(!sender.send(text(1)));
        assert!(
            sender.send(InputCommand::Event { viewer: 1, event: InputEvent::Key { key: 30, down: true } }),
            "not text"
        );
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(counters.queued_chars.load(Ordering::Relaxed), MAX_QUEUED_CHARS);
        assert_eq!(rx.try_iter().count(), fit + 2, "nothing dropped was queued, nothing queued was cut");
    }

    #[test]
    fn a_text_refused_by_a_full_queue_gives_its_characters_back() {
        let counters = Arc::new(InputCounters::default());
        let (tx, _rx) = std::sync::mpsc::sync_channel(1);
        let sender = InputSender::from_channel(tx, Arc::clone(&counters));
        let text = InputCommand::Event { viewer: 1, event: InputEvent::Text("abc".into()) };
        assert!(sender.send(text.clone()));
        assert!(!sender.send(text), "queue full");
        assert_eq!(counters.queued_chars.load(Ordering::Relaxed), 3);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 1);
    }
}

//! Wayland core of the capture thread: finding and connecting to the display, the registry, outputs
//! (wl_output v4 + xdg-output through smithay-client-toolkit), wl_shm, and a dispatch loop with a deadline
//! and a stop flag so that no call can hang.
//!
//! `WlState<X>` is the state object of one event queue; the core names no capture or input protocol: each
//! protocol file brings its events, a handler trait for `X` (as client-toolkit's `delegate_*` do) and its
//! `Dispatch2` impls for `WlState<X>`. The capture sources use `X = CaptureEvents`, the input injector
//! `X = ()`.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use smithay_client_toolkit::output::{OutputHandler, OutputState};
use smithay_client_toolkit::registry::{ProvidesRegistryState, RegistryState};
use smithay_client_toolkit::shm::{Shm, ShmHandler};
use smithay_client_toolkit::{delegate_dispatch2, delegate_registry, registry_handlers};
use wayland_client::globals::{GlobalList, registry_queue_init};
use wayland_client::protocol::wl_output::WlOutput;
use wayland_client::{Connection, EventQueue, Proxy, QueueHandle};

use super::CaptureError;

/// Where the compositor's socket is, from the environment (`WAYLAND_DISPLAY`, relative to
/// `XDG_RUNTIME_DIR` unless absolute).
pub fn display_from_env() -> Result<PathBuf, CaptureError> {
    let display = std::env::var_os("WAYLAND_DISPLAY").filter(|d| !d.is_empty()).ok_or(CaptureError::NoDisplay)?;
    let display = PathBuf::from(display);
    if display.is_absolute() {
        return Ok(display);
    }
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()).ok_or(CaptureError::NoDisplay)?;
    Ok(PathBuf::from(runtime).join(display))
}

/// Connect to the compositor at `socket`.
pub fn connect(socket: &Path) -> Result<Connection, CaptureError> {
    let stream =
        UnixStream::connect(socket).map_err(|source| CaptureError::Connect { path: socket.to_owned(), source })?;
    Connection::from_socket(stream).map_err(|e| CaptureError::CompositorGone(e.to_string()))
}

/// State of a Wayland event queue: the core's (registry, outputs, shm) plus `ext`, the protocol state of
/// whoever owns the queue.
pub struct WlState<X = ()> {
    pub registry: RegistryState,
    pub outputs: OutputState,
    pub shm: Shm,
    /// Names of outputs whose global went away since the last `take_destroyed_outputs`.
    destroyed_outputs: Vec<String>,
    /// The owner's protocol state (events its `Dispatch2` impls store for it).
    pub ext: X,
}

impl<X> std::fmt::Debug for WlState<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WlState").finish_non_exhaustive()
    }
}

/// A connected session: connection, event queue, state and the global list.
pub struct WlSession<X = ()> {
    pub conn: Connection,
    pub queue: EventQueue<WlState<X>>,
    pub state: WlState<X>,
    pub globals: GlobalList,
}

impl<X> std::fmt::Debug for WlSession<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WlSession").finish_non_exhaustive()
    }
}

/// One output as `list-outputs` reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutputDesc {
    pub name: String,
    pub description: Option<String>,
    pub make: String,
    pub model: String,
    /// Current mode in physical pixels.
    pub width: i32,
    pub height: i32,
    pub refresh_mhz: i32,
    pub scale: i32,
    /// Position in the compositor's logical space.
    pub x: i32,
    pub y: i32,
    pub logical_width: Option<i32>,
    pub logical_height: Option<i32>,
    pub transform: String,
    /// Capture sources this output can be captured with (filled by `capture::describe_outputs`).
    pub sources: Vec<&'static str>,
}

impl<X: Default + 'static> WlSession<X> {
    /// Connect, read the registry and wait until every output has described itself.
    pub fn connect(socket: &Path) -> Result<WlSession<X>, CaptureError> {
        let conn = connect(socket)?;
        let (globals, mut queue) = registry_queue_init::<WlState<X>>(&conn).map_err(|e| gone_or_protocol(&e))?;
        let qh = queue.handle();
        let shm = Shm::bind(&globals, &qh)
            .map_err(|e| CaptureError::MissingGlobal(format!("the compositor offers no wl_shm: {e}")))?;
        let mut state = WlState {
            registry: RegistryState::new(&globals),
            outputs: OutputState::new(&globals, &qh),
            shm,
            destroyed_outputs: Vec::new(),
            ext: X::default(),
        };
        // First round trip: wl_output/xdg_output objects bound; second: their done events.
        for _ in 0..2 {
            queue.roundtrip(&mut state).map_err(|e| dispatch_error(&e))?;
        }
        Ok(WlSession { conn, queue, state, globals })
    }
}

impl<X: 'static> WlSession<X> {
    /// Whether the compositor offers a global with this interface name.
    pub fn has_global(&self, interface: &str) -> bool {
        self.globals.contents().with_list(|list| list.iter().any(|g| g.interface == interface))
    }

    /// All outputs with a name, in the compositor's order.
    pub fn outputs(&self) -> Vec<(WlOutput, OutputDesc)> {
        let mut v: Vec<(u32, WlOutput, OutputDesc)> = self
            .state
            .outputs
            .outputs()
            .filter_map(|o| {
                let info = self.state.outputs.info(&o)?;
                let mode = info.modes.iter().find(|m| m.current).or(info.modes.first());
                let (width, height, refresh_mhz) =
                    mode.map(|m| (m.dimensions.0, m.dimensions.1, m.refresh_rate)).unwrap_or((0, 0, 0));
                let (x, y) = info.logical_position.unwrap_or(info.location);
                let desc = OutputDesc {
                    name: info.name.clone()?,
                    description: info.description.clone(),
                    make: info.make.clone(),
                    model: info.model.clone(),
                    width,
                    height,
                    refresh_mhz,
                    scale: info.scale_factor,
                    x,
                    y,
                    logical_width: info.logical_size.map(|s| s.0),
                    logical_height: info.logical_size.map(|s| s.1),
                    transform: format!("{:?}", info.transform),
                    sources: Vec::new(),
                };
                Some((info.id, o, desc))
            })
            .collect();
        v.sort_by_key(|(id, _, _)| *id);
        v.into_iter().map(|(_, o, d)| (o, d)).collect()
    }

    /// The output called `name`, or the first output when `name` is `None`.
    pub fn find_output(&self, name: Option<&str>) -> Result<(WlOutput, OutputDesc), CaptureError> {
        let outputs = self.outputs();
        match name {
            None => outputs.into_iter().next().ok_or(CaptureError::NoOutputs),
            Some(n) => {
                let names: Vec<String> = outputs.iter().map(|(_, d)| d.name.clone()).collect();
                outputs
                    .into_iter()
                    .find(|(_, d)| d.name == n)
                    .ok_or_else(|| CaptureError::UnknownOutput { name: n.to_owned(), available: names })
            }
        }
    }

    pub fn handle(&self) -> QueueHandle<WlState<X>> {
        self.queue.handle()
    }

    /// Dispatch events until `done(state)` is true (→ `Ok(true)`), the deadline passes or `stop` is set
    /// (→ `Ok(false)`). Never blocks longer than 50 ms without checking `stop`.
    pub fn dispatch_until(
        &mut self,
        deadline: Instant,
        stop: &AtomicBool,
        mut done: impl FnMut(&mut WlState<X>) -> Result<bool, CaptureError>,
    ) -> Result<bool, CaptureError> {
        loop {
            self.queue.dispatch_pending(&mut self.state).map_err(|e| dispatch_error(&e))?;
            if done(&mut self.state)? {
                return Ok(true);
            }
            // A full socket is back-pressure: what did not fit stays queued and goes with a later flush.
            flush_some(&self.conn)?;
            let now = Instant::now();
            if stop.load(Ordering::Relaxed) || now >= deadline {
                return Ok(false);
            }
            let Some(guard) = self.queue.prepare_read() else { continue };
            let wait = (deadline - now).min(Duration::from_millis(50));
            read_events_within(guard, wait).map_err(|e| gone_or_protocol(&e))?;
        }
    }

    /// Send everything queued, waiting while the compositor's socket is full (back-pressure: the compositor
    /// reads more slowly than we write, e.g. a burst of typed text). While waiting, the compositor's events are
    /// read too (it might itself be waiting for us to read). `Ok(Some(waits))`: all sent, after waiting for room
    /// `waits` times; `Ok(None)`: `stop` was set first (some may still be queued); `Err(Stalled)`: the socket
    /// stayed full for `timeout`; other errors: the connection is dead.
    pub fn flush_within(&mut self, timeout: Duration, stop: &AtomicBool) -> Result<Option<u32>, CaptureError> {
        let deadline = Instant::now() + timeout;
        let mut waits = 0;
        loop {
            if flush_some(&self.conn)? {
                return Ok(Some(waits));
            }
            waits += 1;
            let now = Instant::now();
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            if now >= deadline {
                return Err(CaptureError::Stalled(timeout));
            }
            let readable = wait_writable(&self.conn, (deadline - now).min(Duration::from_millis(50)))?;
            if readable {
                if let Some(guard) = self.queue.prepare_read() {
                    read_events_within(guard, Duration::ZERO).map_err(|e| gone_or_protocol(&e))?;
                }
                self.queue.dispatch_pending(&mut self.state).map_err(|e| dispatch_error(&e))?;
            }
        }
    }

    /// `Err(OutputGone)` when the output called `name` was removed since the last look.
    pub fn check_output(&mut self, name: &str) -> Result<(), CaptureError> {
        match self.take_destroyed_outputs().into_iter().find(|n| n == name) {
            Some(name) => Err(CaptureError::OutputGone(name)),
            None => Ok(()),
        }
    }

    /// Names of outputs removed since the last call.
    pub(crate) fn take_destroyed_outputs(&mut self) -> Vec<String> {
        std::mem::take(&mut self.state.destroyed_outputs)
    }
}

/// Wait at most `wait` for the compositor's events and read them into the queue; nothing is read when the wait
/// runs out or a signal interrupts it. Waiting in slices like this (not `blocking_dispatch`) is what lets a
/// loop check its stop flag in between.
pub fn read_events_within(
    guard: wayland_client::backend::ReadEventsGuard,
    wait: Duration,
) -> Result<(), wayland_client::backend::WaylandError> {
    use wayland_client::backend::WaylandError;
    let ready = {
        let fd = guard.connection_fd();
        let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
        let ts = rustix::event::Timespec { tv_sec: wait.as_secs() as i64, tv_nsec: i64::from(wait.subsec_nanos()) };
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(n) => n > 0,
            Err(rustix::io::Errno::INTR) => false,
            Err(e) => return Err(WaylandError::Io(e.into())),
        }
    };
    if ready {
        match guard.read() {
            Ok(_) => {}
            Err(WaylandError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One non-blocking flush: `Ok(true)` when everything queued went out, `Ok(false)` when the socket is full
/// (`EAGAIN`: the rest stays queued in the connection), `Err` when the connection is dead.
pub fn flush_some(conn: &Connection) -> Result<bool, CaptureError> {
    use wayland_client::backend::WaylandError;
    match conn.flush() {
        Ok(()) => Ok(true),
        Err(WaylandError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(gone_or_protocol(&e)),
    }
}

/// Wait at most `wait` for the connection's socket to take more data; true when events are waiting to be read
/// (or the peer hung up: the next read or flush says so).
fn wait_writable(conn: &Connection, wait: Duration) -> Result<bool, CaptureError> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let backend = conn.backend();
    let fd = backend.poll_fd();
    let mut fds = [PollFd::new(&fd, PollFlags::OUT | PollFlags::IN)];
    let ts = Timespec { tv_sec: wait.as_secs() as i64, tv_nsec: i64::from(wait.subsec_nanos()) };
    match poll(&mut fds, Some(&ts)) {
        Ok(_) => Ok(fds[0].revents().intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR)),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(CaptureError::CompositorGone(format!("poll on the Wayland socket: {e}"))),
    }
}

pub(crate) fn gone_or_protocol(e: &dyn std::fmt::Display) -> CaptureError {
    let msg = e.to_string();
    if msg.contains("protocol error") || msg.contains("Protocol error") {
        CaptureError::Protocol(msg)
    } else {
        CaptureError::CompositorGone(msg)
    }
}

fn dispatch_error(e: &wayland_client::DispatchError) -> CaptureError {
    match e {
        wayland_client::DispatchError::Backend(wayland_client::backend::WaylandError::Protocol(p)) => {
            CaptureError::Protocol(p.to_string())
        }
        wayland_client::DispatchError::Backend(b) => CaptureError::CompositorGone(b.to_string()),
        other => CaptureError::Protocol(other.to_string()),
    }
}

impl<X: 'static> OutputHandler for WlState<X> {
    fn output_state(&mut self) -> &mut OutputState {
        &mut self.outputs
    }

    fn new_output(&mut self, _: &Connection, _: &QueueHandle<Self>, output: WlOutput) {
        if let Some(info) = self.outputs.info(&output) {
            tracing::debug!(name = ?info.name, "output added");
        }
    }

    fn update_output(&mut self, _: &Connection, _: &QueueHandle<Self>, output: WlOutput) {
        if let Some(info) = self.outputs.info(&output) {
            let mode = info.modes.iter().find(|m| m.current).map(|m| m.dimensions);
            tracing::debug!(name = ?info.name, ?mode, "output changed");
        }
    }

    fn output_destroyed(&mut self, _: &Connection, _: &QueueHandle<Self>, output: WlOutput) {
        let name = self.outputs.info(&output).and_then(|i| i.name).unwrap_or_else(|| format!("{}", output.id()));
        tracing::info!(%name, "output removed");
        self.destroyed_outputs.push(name);
    }
}

impl<X: 'static> ShmHandler for WlState<X> {
    fn shm_state(&mut self) -> &mut Shm {
        &mut self.shm
    }
}

impl<X: 'static> ProvidesRegistryState for WlState<X> {
    fn registry(&mut self) -> &mut RegistryState {
        &mut self.registry
    }
    registry_handlers![OutputState];
}

delegate_dispatch2!(@<X: 'static> WlState<X>);
delegate_registry!(@<X: 'static> WlState<X>);

//! The desktop's clipboard both ways (with `--allow-input`): a thread with its own Wayland connection and a
//! data-control device (ext-data-control-v1 where the compositor offers it, else
//! wlr-data-control-unstable-v1, which Sway ≥ 1.7 has): the clipboard-manager interface, which sees and sets
//! the selection without keyboard focus.
//!
//! Desktop → viewers: each new selection that offers text is read (UTF-8, at most [`MAX_CLIPBOARD_BYTES`];
//! larger ones are skipped and said so) and handed to `on_change` once. Viewers → desktop: [`ClipboardHandle::set`]
//! makes the text the desktop's selection (offered as `text/plain;charset=utf-8`, `text/plain`,
//! `UTF8_STRING`, `TEXT`, `STRING`), so Ctrl+V in a desktop application pastes it; the selection we set
//! ourselves is not echoed back. Images are not carried.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use wayland_client::globals::{GlobalListContents, registry_queue_init};
use wayland_client::protocol::{wl_registry, wl_seat::WlSeat};
use wayland_client::{Connection, Dispatch, EventQueue, Proxy, QueueHandle};
use wayland_protocols::ext::data_control::v1::client as ext;
use wayland_protocols_wlr::data_control::v1::client as wlr;

/// Largest clipboard text carried either way (it travels in one data-channel message).
pub const MAX_CLIPBOARD_BYTES: usize = 60 * 1024;
/// The text types we read and offer, preferred first.
const TEXT_MIMES: [&str; 5] = ["text/plain;charset=utf-8", "text/plain", "UTF8_STRING", "TEXT", "STRING"];
/// How long reading an offer or writing our selection to a reader may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(2);
const TICK: Duration = Duration::from_millis(50);
const RETRY: Duration = Duration::from_secs(1);

/// Viewers → desktop: the sending side, held by the viewer tasks.
#[derive(Debug, Clone)]
pub struct ClipboardHandle {
    tx: SyncSender<String>,
}

impl ClipboardHandle {
    /// Make `text` the desktop's selection; false when the clipboard thread is behind or gone.
    pub fn set(&self, text: String) -> bool {
        match self.tx.try_send(text) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Start the clipboard thread on the compositor at `socket`; `on_change` gets each new desktop selection's
/// text. It ends when `stop` is set.
pub fn spawn(
    socket: PathBuf,
    on_change: impl Fn(String) + Send + 'static,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(ClipboardHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(8);
    let handle =
        std::thread::Builder::new().name("clipboard".into()).spawn(move || run(&socket, &rx, &on_change, &stop))?;
    Ok((ClipboardHandle { tx }, handle))
}

fn run(socket: &std::path::Path, rx: &Receiver<String>, on_change: &dyn Fn(String), stop: &AtomicBool) {
    let mut failures = 0u32;
    while !stop.load(Ordering::Relaxed) {
        match Clipboard::open(socket) {
            Ok(mut c) => {
                tracing::info!(protocol = c.protocol(), "clipboard: watching and setting the desktop's selection");
                failures = 0;
                if let Err(e) = c.serve(rx, on_change, stop) {
                    tracing::warn!("clipboard: {e}; reconnecting");
                }
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!("clipboard: {e}; retrying every second");
                } else {
                    tracing::debug!("clipboard: {e}");
                }
                failures += 1;
            }
        }
        let until = Instant::now() + RETRY;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            // Texts sent while there is no device are dropped (the viewer can paste again).
            while rx.try_recv().is_ok() {}
            std::thread::sleep(TICK);
        }
    }
}

/// The data-control objects of one protocol family.
enum Device {
    Ext {
        manager: ext::ext_data_control_manager_v1::ExtDataControlManagerV1,
        device: ext::ext_data_control_device_v1::ExtDataControlDeviceV1,
    },
    Wlr {
        manager: wlr::zwlr_data_control_manager_v1::ZwlrDataControlManagerV1,
        device: wlr::zwlr_data_control_device_v1::ZwlrDataControlDeviceV1,
    },
}

/// An offer of either family.
#[derive(Clone)]
enum Offer {
    Ext(ext::ext_data_control_offer_v1::ExtDataControlOfferV1),
    Wlr(wlr::zwlr_data_control_offer_v1::ZwlrDataControlOfferV1),
}

impl Offer {
    fn id(&self) -> wayland_client::backend::ObjectId {
        match self {
            Offer::Ext(o) => o.id(),
            Offer::Wlr(o) => o.id(),
        }
    }

    fn receive(&self, mime: &str, fd: std::os::fd::BorrowedFd<'_>) {
        match self {
            Offer::Ext(o) => o.receive(mime.to_owned(), fd),
            Offer::Wlr(o) => o.receive(mime.to_owned(), fd),
        }
    }

    fn destroy(&self) {
        match self {
            Offer::Ext(o) => o.destroy(),
            Offer::Wlr(o) => o.destroy(),
        }
    }
}

/// What the event handlers collect.
#[derive(Default)]
struct State {
    /// Offers being announced, with their types.
    offers: Vec<(Offer, Vec<String>)>,
    /// The newest selection, not yet read (`None` inside: cleared).
    selection: Option<Option<Offer>>,
    /// Our own selection's text (served to readers; not echoed back to viewers).
    ours: Option<Arc<str>>,
    /// A reader asked for our selection: (fd to write it to).
    send: Vec<OwnedFd>,
    /// The device is gone (finished).
    finished: bool,
    /// Our source was cancelled: someone else owns the selection.
    cancelled: bool,
}

struct Clipboard {
    _conn: Connection,
    queue: EventQueue<State>,
    state: State,
    device: Device,
    /// Our current source (replaced by the next set, destroyed when cancelled).
    source: Option<Source>,
}

enum Source {
    Ext(ext::ext_data_control_source_v1::ExtDataControlSourceV1),
    Wlr(wlr::zwlr_data_control_source_v1::ZwlrDataControlSourceV1),
}

impl Clipboard {
    fn open(socket: &std::path::Path) -> Result<Clipboard, String> {
        let conn = crate::capture::wayland::connect(socket).map_err(|e| e.to_string())?;
        let (globals, queue) = registry_queue_init::<State>(&conn).map_err(|e| e.to_string())?;
        let qh = queue.handle();
        let seat: WlSeat = globals.bind(&qh, 1..=8, ()).map_err(|_| "the compositor offers no wl_seat".to_owned())?;
        let device = if let Ok(manager) =
            globals.bind::<ext::ext_data_control_manager_v1::ExtDataControlManagerV1, _, _>(&qh, 1..=1, ())
        {
            let device = manager.get_data_device(&seat, &qh, ());
            Device::Ext { manager, device }
        } else if let Ok(manager) =
            globals.bind::<wlr::zwlr_data_control_manager_v1::ZwlrDataControlManagerV1, _, _>(&qh, 1..=2, ())
        {
            let device = manager.get_data_device(&seat, &qh, ());
            Device::Wlr { manager, device }
        } else {
            return Err(
                "the compositor offers neither ext-data-control-v1 nor wlr-data-control: no clipboard sharing \
                        (Sway ≥ 1.7, Hyprland, KDE and other wlroots compositors have one)"
                    .to_owned(),
            );
        };
        let mut c = Clipboard { _conn: conn, queue, state: State::default(), device, source: None };
        c.queue.roundtrip(&mut c.state).map_err(|e| e.to_string())?;
        // The selection at start is the desktop's, not a change: it is not sent.
        if let Some(Some(offer)) = c.state.selection.take() {
            offer.destroy();
        }
        Ok(c)
    }

    fn protocol(&self) -> &'static str {
        match self.device {
            Device::Ext { .. } => "ext-data-control-v1",
            Device::Wlr { .. } => "wlr-data-control-unstable-v1",
        }
    }

    fn serve(&mut self, rx: &Receiver<String>, on_change: &dyn Fn(String), stop: &AtomicBool) -> Result<(), String> {
        let qh = self.queue.handle();
        while !stop.load(Ordering::Relaxed) {
            match rx.recv_timeout(TICK) {
                Ok(text) => self.set(text, &qh),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            self.queue.flush().map_err(|e| e.to_string())?;
            if let Some(guard) = self.queue.prepare_read() {
                crate::capture::wayland::read_events_within(guard, Duration::from_millis(1))
                    .map_err(|e| e.to_string())?;
            }
            self.queue.dispatch_pending(&mut self.state).map_err(|e| e.to_string())?;
            for fd in std::mem::take(&mut self.state.send) {
                let text = self.state.ours.clone().unwrap_or_else(|| Arc::from(""));
                std::thread::spawn(move || write_all_within(fd, text.as_bytes()));
            }
            if std::mem::take(&mut self.state.cancelled) {
                self.source = None;
                self.state.ours = None;
            }
            if let Some(selection) = self.state.selection.take() {
                self.read_selection(selection, on_change)?;
            }
            if self.state.finished {
                return Err("the data-control device went away".into());
            }
        }
        Ok(())
    }

    /// Make `text` the selection.
    fn set(&mut self, text: String, qh: &QueueHandle<State>) {
        if let Some(old) = self.source.take() {
            match old {
                Source::Ext(s) => s.destroy(),
                Source::Wlr(s) => s.destroy(),
            }
        }
        self.state.ours = Some(Arc::from(text));
        self.source = Some(match &self.device {
            Device::Ext { manager, device } => {
                let s = manager.create_data_source(qh, ());
                TEXT_MIMES.iter().for_each(|m| s.offer((*m).to_owned()));
                device.set_selection(Some(&s));
                Source::Ext(s)
            }
            Device::Wlr { manager, device } => {
                let s = manager.create_data_source(qh, ());
                TEXT_MIMES.iter().for_each(|m| s.offer((*m).to_owned()));
                device.set_selection(Some(&s));
                Source::Wlr(s)
            }
        });
    }

    /// Read a new selection's text (when it has one) and hand it on, unless it is our own.
    fn read_selection(&mut self, selection: Option<Offer>, on_change: &dyn Fn(String)) -> Result<(), String> {
        let Some(offer) = selection else { return Ok(()) };
        let id = offer.id();
        let mimes = self.state.offers.iter().find(|(o, _)| o.id() == id).map(|(_, m)| m.clone()).unwrap_or_default();
        self.state.offers.retain(|(o, _)| o.id() != id);
        // Our own source's offer (announced right after we set it): never read from ourselves (this thread
        // would wait on itself), never echoed.
        let ours = self.source.is_some() && mimes.iter().map(String::as_str).eq(TEXT_MIMES.iter().copied());
        if ours {
            offer.destroy();
            return Ok(());
        }
        let Some(mime) = TEXT_MIMES.iter().find(|t| mimes.iter().any(|m| m == *t)) else {
            tracing::debug!(?mimes, "clipboard: a selection without text; not sent");
            offer.destroy();
            return Ok(());
        };
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| e.to_string())?;
        offer.receive(mime, std::os::fd::AsFd::as_fd(&write));
        self.queue.flush().map_err(|e| e.to_string())?;
        drop(write);
        let text = read_all_within(read, MAX_CLIPBOARD_BYTES);
        offer.destroy();
        match text {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => on_change(text),
                Err(_) => tracing::info!("clipboard: the desktop's selection is not UTF-8 text; not sent"),
            },
            Err(e) => tracing::info!("clipboard: the desktop's selection was not sent: {e}"),
        }
        Ok(())
    }
}

/// Read `fd` to its end (at most `cap` bytes, within [`TRANSFER_TIMEOUT`]).
fn read_all_within(fd: OwnedFd, cap: usize) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + TRANSFER_TIMEOUT;
    let mut file = std::fs::File::from(fd);
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("the owner did not send it within 2 s".into());
        }
        let mut fds = [rustix::event::PollFd::new(&file, rustix::event::PollFlags::IN)];
        let ts = rustix::event::Timespec { tv_sec: left.as_secs() as i64, tv_nsec: i64::from(left.subsec_nanos()) };
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        match file.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > cap {
                    return Err(format!("it is larger than {cap} bytes"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Write `data` to `fd` and close it (a reader that stops reading is given up on after the timeout).
fn write_all_within(fd: OwnedFd, data: &[u8]) {
    let mut file = std::fs::File::from(fd);
    let started = Instant::now();
    let mut rest = data;
    while !rest.is_empty() && started.elapsed() < TRANSFER_TIMEOUT {
        match file.write(rest) {
            Ok(0) => break,
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

impl Dispatch<wl_registry::WlRegistry, GlobalListContents> for State {
    fn event(
        _: &mut Self,
        _: &wl_registry::WlRegistry,
        _: wl_registry::Event,
        _: &GlobalListContents,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

impl Dispatch<WlSeat, ()> for State {
    fn event(
        _: &mut Self,
        _: &WlSeat,
        _: wayland_client::protocol::wl_seat::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

impl Dispatch<ext::ext_data_control_manager_v1::ExtDataControlManagerV1, ()> for State {
    fn event(
        _: &mut Self,
        _: &ext::ext_data_control_manager_v1::ExtDataControlManagerV1,
        _: ext::ext_data_control_manager_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

impl Dispatch<wlr::zwlr_data_control_manager_v1::ZwlrDataControlManagerV1, ()> for State {
    fn event(
        _: &mut Self,
        _: &wlr::zwlr_data_control_manager_v1::ZwlrDataControlManagerV1,
        _: wlr::zwlr_data_control_manager_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

impl Dispatch<ext::ext_data_control_device_v1::ExtDataControlDeviceV1, ()> for State {
    fn event(
        state: &mut Self,
        _: &ext::ext_data_control_device_v1::ExtDataControlDeviceV1,
        event: ext::ext_data_control_device_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        use ext::ext_data_control_device_v1::Event as E;
        match event {
            E::DataOffer { id } => state.offers.push((Offer::Ext(id), Vec::new())),
            E::Selection { id } => state.selection = Some(id.map(Offer::Ext)),
            // The primary selection (middle-click paste) is not carried.
            E::PrimarySelection { id: Some(o) } => {
                state.offers.retain(|(x, _)| x.id() != o.id());
                o.destroy();
            }
            E::Finished => state.finished = true,
            _ => {}
        }
    }

    wayland_client::event_created_child!(State, ext::ext_data_control_device_v1::ExtDataControlDeviceV1, [
        ext::ext_data_control_device_v1::EVT_DATA_OFFER_OPCODE => (ext::ext_data_control_offer_v1::ExtDataControlOfferV1, ()),
    ]);
}

impl Dispatch<wlr::zwlr_data_control_device_v1::ZwlrDataControlDeviceV1, ()> for State {
    fn event(
        state: &mut Self,
        _: &wlr::zwlr_data_control_device_v1::ZwlrDataControlDeviceV1,
        event: wlr::zwlr_data_control_device_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        use wlr::zwlr_data_control_device_v1::Event as E;
        match event {
            E::DataOffer { id } => state.offers.push((Offer::Wlr(id), Vec::new())),
            E::Selection { id } => state.selection = Some(id.map(Offer::Wlr)),
            // The primary selection (middle-click paste) is not carried.
            E::PrimarySelection { id: Some(o) } => {
                state.offers.retain(|(x, _)| x.id() != o.id());
                o.destroy();
            }
            E::Finished => state.finished = true,
            _ => {}
        }
    }

    wayland_client::event_created_child!(State, wlr::zwlr_data_control_device_v1::ZwlrDataControlDeviceV1, [
        wlr::zwlr_data_control_device_v1::EVT_DATA_OFFER_OPCODE => (wlr::zwlr_data_control_offer_v1::ZwlrDataControlOfferV1, ()),
    ]);
}

impl Dispatch<ext::ext_data_control_offer_v1::ExtDataControlOfferV1, ()> for State {
    fn event(
        state: &mut Self,
        offer: &ext::ext_data_control_offer_v1::ExtDataControlOfferV1,
        event: ext::ext_data_control_offer_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let ext::ext_data_control_offer_v1::Event::Offer { mime_type } = event {
            add_mime(state, &offer.id(), mime_type);
        }
    }
}

impl Dispatch<wlr::zwlr_data_control_offer_v1::ZwlrDataControlOfferV1, ()> for State {
    fn event(
        state: &mut Self,
        offer: &wlr::zwlr_data_control_offer_v1::ZwlrDataControlOfferV1,
        event: wlr::zwlr_data_control_offer_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wlr::zwlr_data_control_offer_v1::Event::Offer { mime_type } = event {
            add_mime(state, &offer.id(), mime_type);
        }
    }
}

fn add_mime(state: &mut State, id: &wayland_client::backend::ObjectId, mime: String) {
    if let Some((_, mimes)) = state.offers.iter_mut().find(|(o, _)| &o.id() == id)
        && mimes.len() < 64
    {
        mimes.push(mime);
    }
}

impl Dispatch<ext::ext_data_control_source_v1::ExtDataControlSourceV1, ()> for State {
    fn event(
        state: &mut Self,
        source: &ext::ext_data_control_source_v1::ExtDataControlSourceV1,
        event: ext::ext_data_control_source_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            ext::ext_data_control_source_v1::Event::Send { fd, .. } => state.send.push(fd),
            ext::ext_data_control_source_v1::Event::Cancelled => {
                source.destroy();
                state.cancelled = true;
            }
            _ => {}
        }
    }
}

impl Dispatch<wlr::zwlr_data_control_source_v1::ZwlrDataControlSourceV1, ()> for State {
    fn event(
        state: &mut Self,
        source: &wlr::zwlr_data_control_source_v1::ZwlrDataControlSourceV1,
        event: wlr::zwlr_data_control_source_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            wlr::zwlr_data_control_source_v1::Event::Send { fd, .. } => state.send.push(fd),
            wlr::zwlr_data_control_source_v1::Event::Cancelled => {
                source.destroy();
                state.cancelled = true;
            }
            _ => {}
        }
    }
}

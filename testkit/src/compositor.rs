//! A small test compositor that speaks ext-image-copy-capture-v1 (no compositor available here does).
//!
//! A real Wayland server (smithay 0.7's server bindings: the `wayland-server` 0.31 crate, used directly) on a
//! thread of the test, listening on a socket in a private temporary runtime dir. It serves one output
//! (`TEST-1`: wl_output v4 + zxdg_output_manager_v1 v3), wl_shm (XRGB8888, ARGB8888), a wl_seat with a pointer,
//! ext_output_image_capture_source_manager_v1 and ext_image_copy_capture_manager_v1 (output sessions, pointer
//! cursor sessions, shm buffers), following the protocol text strictly: constraints (`buffer_size`,
//! `shm_format`*, `done`) on session creation and after every change; `transform`, `damage`,
//! `presentation_time` then `ready`; the first frame of a session fully damaged, later ones carrying the damage
//! since the last `ready` and held until something changes; `failed(buffer_constraints)` for a buffer that
//! does not match; protocol errors (`duplicate_frame`, `already_captured`, `no_buffer`, `invalid_buffer_damage`,
//! `invalid_option`) posted and recorded.
//!
//! The content is known (the test-pattern's quadrants, plus painted rectangles), so tests can check pixels
//! and damage; [`TestCompositor`] is the control handle (`set_size`, `fail_next`, `stop_sessions`, `paint`,
//! `set_cursor`, `animate`, `stats`). Dropping it stops and joins the thread and removes the runtime dir.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wayland_protocols::ext::image_capture_source::v1::server::{
    ext_image_capture_source_v1::ExtImageCaptureSourceV1,
    ext_output_image_capture_source_manager_v1::{self, ExtOutputImageCaptureSourceManagerV1},
};
use wayland_protocols::ext::image_copy_capture::v1::server::{
    ext_image_copy_capture_cursor_session_v1::{self, ExtImageCopyCaptureCursorSessionV1},
    ext_image_copy_capture_frame_v1::{self, ExtImageCopyCaptureFrameV1, FailureReason},
    ext_image_copy_capture_manager_v1::{self, ExtImageCopyCaptureManagerV1},
    ext_image_copy_capture_session_v1::{self, ExtImageCopyCaptureSessionV1},
};
use wayland_protocols::xdg::xdg_output::zv1::server::{
    zxdg_output_manager_v1::{self, ZxdgOutputManagerV1},
    zxdg_output_v1::ZxdgOutputV1,
};
use wayland_server::backend::{ClientData, ClientId, DisconnectReason};
use wayland_server::protocol::{wl_buffer, wl_output, wl_pointer, wl_seat, wl_shm, wl_shm_pool};
use wayland_server::{
    Client, DataInit, Dispatch, Display, DisplayHandle, GlobalDispatch, ListeningSocket, New, Resource, WEnum,
};

use crate::pattern::quadrant_colour;

pub use ext_image_copy_capture_frame_v1::FailureReason as Failure;

/// Name of the one output.
pub const OUTPUT: &str = "TEST-1";
/// Size of the cursor image the compositor hands out.
pub const CURSOR_SIZE: u32 = 16;
/// Cursor hotspot inside the image.
pub const CURSOR_HOTSPOT: (i32, i32) = (3, 2);
/// Cursor image colour (opaque magenta, 0xAARRGGBB).
pub const CURSOR_ARGB: u32 = 0xffff_00ff;

/// What the test can read back about what clients did.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Output capture sessions created, with their `options`.
    pub session_options: Vec<u32>,
    pub cursor_sessions: u32,
    /// Frames completed with `ready` (output sessions).
    pub frames_ready: u64,
    /// Cursor image frames completed.
    pub cursor_frames_ready: u64,
    /// `failed` events sent, by reason value.
    pub failures: Vec<u32>,
    /// Per captured output frame: the damage the client sent with `damage_buffer` (x, y, w, h).
    pub client_damage: Vec<Vec<[i32; 4]>>,
    /// Per ready output frame: the damage we announced.
    pub announced_damage: Vec<Vec<[i32; 4]>>,
    /// Protocol errors posted to clients.
    pub protocol_errors: Vec<String>,
}

/// The control handle. Every call is executed on the server thread and waited for.
pub struct TestCompositor {
    dir: PathBuf,
    socket: PathBuf,
    jobs: mpsc::Sender<Job>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<Mutex<Stats>>,
}

type Job = Box<dyn FnOnce(&mut Comp, &DisplayHandle) + Send>;

static INSTANCE: AtomicU32 = AtomicU32::new(0);

impl TestCompositor {
    /// Start serving an output of `width`x`height` showing the quadrant pattern.
    pub fn start(width: u32, height: u32) -> TestCompositor {
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("wlw-testcomp-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create runtime dir");
        let socket = dir.join("wayland-test");
        let listener = ListeningSocket::bind_absolute(socket.clone()).expect("bind the test compositor socket");
        let (jobs, rx) = mpsc::channel::<Job>();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(Stats::default()));
        let thread = {
            let (stop, stats) = (Arc::clone(&stop), Arc::clone(&stats));
            std::thread::Builder::new()
                .name("test-compositor".into())
                .spawn(move || serve(listener, rx, &stop, stats, width, height))
                .expect("spawn the test compositor thread")
        };
        TestCompositor { dir, socket, jobs, stop, thread: Some(thread), stats }
    }

    /// Absolute path of the socket (what WAYLAND_DISPLAY is set to).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Run `f` on the server thread and wait for its result.
    pub fn with<R: Send + 'static>(&self, f: impl FnOnce(&mut Comp, &DisplayHandle) -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .send(Box::new(move |c: &mut Comp, dh: &DisplayHandle| {
                let _ = tx.send(f(c, dh));
            }))
            .expect("test compositor thread is running");
        rx.recv_timeout(Duration::from_secs(5)).expect("test compositor answered")
    }

    /// Change the output mode: new constraints to every session, pending frames fail (buffer_constraints).
    pub fn set_size(&self, width: u32, height: u32) {
        self.with(move |c, dh| c.set_size(width, height, dh));
    }

    /// The next `capture` fails with this reason.
    pub fn fail_next(&self, reason: Failure) {
        self.with(move |c, _| c.fail_next = Some(reason));
    }

    /// Stop every session (`stopped`; pending frames fail with `stopped`).
    pub fn stop_sessions(&self) {
        self.with(|c, dh| c.stop_sessions(dh));
    }

    /// Paint a rectangle (x, y, w, h) in a colour: the only damage of the next frame.
    pub fn paint(&self, rect: [u32; 4], rgb: [u8; 3]) {
        self.with(move |c, dh| c.paint(rect, rgb, dh));
    }

    /// Put the pointer's hotspot at (x, y) over the output, or take it away (`None`).
    pub fn set_cursor(&self, pos: Option<(i32, i32)>) {
        self.with(move |c, dh| c.set_cursor(pos, dh));
    }

    /// Move a white bar along the top of the output every ~16 ms (frames keep coming).
    pub fn animate(&self, on: bool) {
        self.with(move |c, _| c.animate = on.then(Instant::now));
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `wl-webrtc ARGS` pointed at this compositor.
    pub fn cli(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(crate::workspace_bin("wl-webrtc"));
        cmd.args(args).env("WAYLAND_DISPLAY", &self.socket).env_remove("RUST_LOG");
        cmd
    }
}

impl Drop for TestCompositor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server loop: accept, dispatch, run control jobs, animate, flush; every 5 ms at most.
fn serve(
    listener: ListeningSocket,
    jobs: mpsc::Receiver<Job>,
    stop: &AtomicBool,
    stats: Arc<Mutex<Stats>>,
    width: u32,
    height: u32,
) {
    let mut display: Display<Comp> = Display::new().expect("wayland display");
    let dh = display.handle();
    dh.create_global::<Comp, wl_output::WlOutput, _>(4, ());
    dh.create_global::<Comp, ZxdgOutputManagerV1, _>(3, ());
    dh.create_global::<Comp, wl_shm::WlShm, _>(1, ());
    dh.create_global::<Comp, wl_seat::WlSeat, _>(7, ());
    dh.create_global::<Comp, ExtOutputImageCaptureSourceManagerV1, _>(1, ());
    dh.create_global::<Comp, ExtImageCopyCaptureManagerV1, _>(1, ());
    let mut comp = Comp::new(width, height, stats);
    let poll_fd = display.backend().poll_fd().try_clone_to_owned().expect("dup the display's poll fd");
    while !stop.load(Ordering::Relaxed) {
        {
            let mut fds = [
                rustix::event::PollFd::new(&listener, rustix::event::PollFlags::IN),
                rustix::event::PollFd::new(&poll_fd, rustix::event::PollFlags::IN),
            ];
            let ts = rustix::event::Timespec { tv_sec: 0, tv_nsec: 5_000_000 };
            let _ = rustix::event::poll(&mut fds, Some(&ts));
        }
        while let Ok(Some(stream)) = listener.accept() {
            let _ = display.handle().insert_client(stream, Arc::new(ClientState));
        }
        let _ = display.dispatch_clients(&mut comp);
        while let Ok(job) = jobs.try_recv() {
            job(&mut comp, &dh);
        }
        comp.tick(&dh);
        let _ = display.flush_clients();
    }
}

struct ClientState;

impl ClientData for ClientState {
    fn initialized(&self, _: ClientId) {}
    fn disconnected(&self, _: ClientId, _: DisconnectReason) {}
}

/// Which kind of capture session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Output { paint_cursors: bool },
    Cursor,
}

struct Session {
    resource: ExtImageCopyCaptureSessionV1,
    kind: Kind,
    /// The live frame object (at most one).
    frame: Option<ExtImageCopyCaptureFrameV1>,
    /// That frame was captured and waits for the content to change.
    pending: bool,
    /// Damage since the last `ready` (None: the whole buffer).
    damage: Option<Vec<[u32; 4]>>,
    stopped: bool,
}

struct CursorSession {
    resource: ExtImageCopyCaptureCursorSessionV1,
    has_capture_session: bool,
    inside: bool,
}

/// Compositor state (server thread only).
pub struct Comp {
    width: u32,
    height: u32,
    /// 0xffRRGGBB, row-major.
    pixels: Vec<u32>,
    outputs: Vec<(wl_output::WlOutput, Option<ZxdgOutputV1>)>,
    sessions: HashMap<u64, Session>,
    cursor_sessions: HashMap<u64, CursorSession>,
    next_id: u64,
    fail_next: Option<Failure>,
    cursor: Option<(i32, i32)>,
    animate: Option<Instant>,
    bar: Option<[u32; 4]>,
    stats: Arc<Mutex<Stats>>,
}

impl Comp {
    fn new(width: u32, height: u32, stats: Arc<Mutex<Stats>>) -> Comp {
        let mut c = Comp {
            width,
            height,
            pixels: Vec::new(),
            outputs: Vec::new(),
            sessions: HashMap::new(),
            cursor_sessions: HashMap::new(),
            next_id: 1,
            fail_next: None,
            cursor: None,
            animate: None,
            bar: None,
            stats,
        };
        c.fill_pattern();
        c
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fill_pattern(&mut self) {
        let (w, h) = (self.width, self.height);
        self.pixels = (0..h).flat_map(|y| (0..w).map(move |x| argb(quadrant_colour(w, h, x, y)))).collect();
    }

    fn error(&self, resource: &impl Resource, code: u32, msg: &str) {
        self.stats().protocol_errors.push(format!("{}: {msg}", resource.id()));
        resource.post_error(code, msg.to_owned());
    }

    fn send_constraints(&self, s: &Session) {
        match s.kind {
            Kind::Output { .. } => {
                s.resource.buffer_size(self.width, self.height);
                s.resource.shm_format(wl_shm::Format::Xrgb8888);
                s.resource.shm_format(wl_shm::Format::Argb8888);
            }
            Kind::Cursor => {
                s.resource.buffer_size(CURSOR_SIZE, CURSOR_SIZE);
                s.resource.shm_format(wl_shm::Format::Argb8888);
            }
        }
        s.resource.done();
    }

    fn add_session(&mut self, resource: ExtImageCopyCaptureSessionV1, kind: Kind) {
        let s = Session { resource, kind, frame: None, pending: false, damage: None, stopped: false };
        self.send_constraints(&s);
        let id = s.resource.data::<SessionData>().map_or(0, |d| d.0);
        self.sessions.insert(id, s);
    }

    fn set_size(&mut self, width: u32, height: u32, _: &DisplayHandle) {
        (self.width, self.height) = (width, height);
        self.bar = None;
        self.fill_pattern();
        for (o, x) in &self.outputs {
            send_output_info(o, x.as_ref(), width, height);
        }
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for id in ids {
            let Some(s) = self.sessions.get_mut(&id) else { continue };
            if s.stopped || s.kind == Kind::Cursor {
                continue;
            }
            s.damage = None;
            let pending = std::mem::take(&mut s.pending).then(|| s.frame.clone()).flatten();
            let s = &self.sessions[&id];
            self.send_constraints(s);
            if let Some(f) = pending {
                self.fail(&f, FailureReason::BufferConstraints);
            }
        }
    }

    fn stop_sessions(&mut self, _: &DisplayHandle) {
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for id in ids {
            let Some(s) = self.sessions.get_mut(&id) else { continue };
            if s.stopped {
                continue;
            }
            s.stopped = true;
            let pending = std::mem::take(&mut s.pending).then(|| s.frame.clone()).flatten();
            s.resource.stopped();
            if let Some(f) = pending {
                self.fail(&f, FailureReason::Stopped);
            }
        }
    }

    fn paint(&mut self, rect: [u32; 4], rgb: [u8; 3], dh: &DisplayHandle) {
        let [x, y, w, h] = rect;
        let (x1, y1) = ((x + w).min(self.width), (y + h).min(self.height));
        for row in y..y1 {
            for col in x..x1 {
                self.pixels[(row * self.width + col) as usize] = argb(rgb);
            }
        }
        self.damage(rect, dh);
    }

    fn damage(&mut self, rect: [u32; 4], dh: &DisplayHandle) {
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for id in ids {
            let Some(s) = self.sessions.get_mut(&id) else { continue };
            if s.stopped || s.kind == Kind::Cursor {
                continue;
            }
            if let Some(d) = s.damage.as_mut() {
                d.push(rect);
            }
            if s.pending {
                self.complete(id, dh);
            }
        }
    }

    fn tick(&mut self, dh: &DisplayHandle) {
        let Some(t0) = self.animate else { return };
        let step = (t0.elapsed().as_millis() / 16) as u32;
        let (w, h) = (self.width, self.height);
        let bw = (w / 10).max(1);
        let bh = (h / 10).max(1);
        let x = (step * 8) % w.saturating_sub(bw).max(1);
        let rect = [x, 0, bw, bh];
        if self.bar == Some(rect) {
            return;
        }
        if let Some([ox, oy, ow, oh]) = self.bar {
            for row in oy..(oy + oh).min(h) {
                for col in ox..(ox + ow).min(w) {
                    self.pixels[(row * w + col) as usize] = argb(quadrant_colour(w, h, col, row));
                }
            }
            self.damage([ox, oy, ow, oh], dh);
        }
        self.bar = Some(rect);
        self.paint(rect, [255, 255, 255], dh);
    }

    fn set_cursor(&mut self, pos: Option<(i32, i32)>, dh: &DisplayHandle) {
        let moved_from = self.cursor;
        self.cursor = pos;
        for cs in self.cursor_sessions.values_mut() {
            send_cursor(cs, pos);
        }
        // Sessions that paint the cursor see it move.
        for p in [moved_from, pos].into_iter().flatten() {
            let (x, y) = ((p.0 - CURSOR_HOTSPOT.0).max(0) as u32, (p.1 - CURSOR_HOTSPOT.1).max(0) as u32);
            let ids: Vec<u64> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.kind == Kind::Output { paint_cursors: true })
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                if let Some(d) = self.sessions.get_mut(&id).and_then(|s| s.damage.as_mut()) {
                    d.push([x, y, CURSOR_SIZE, CURSOR_SIZE]);
                }
                if self.sessions.get(&id).is_some_and(|s| s.pending) {
                    self.complete(id, dh);
                }
            }
        }
    }

    fn fail(&self, frame: &ExtImageCopyCaptureFrameV1, reason: FailureReason) {
        self.stats().failures.push(reason as u32);
        frame.failed(reason);
        if let Some(fd) = frame.data::<FrameData>() {
            fd.lock().done = true;
        }
    }

    /// `capture` on a frame of session `id`.
    fn capture(&mut self, id: u64, frame: &ExtImageCopyCaptureFrameV1, dh: &DisplayHandle) {
        let Some(fd) = frame.data::<FrameData>() else { return };
        {
            let mut st = fd.lock();
            if st.captured {
                drop(st);
                return self.error(
                    frame,
                    ext_image_copy_capture_frame_v1::Error::AlreadyCaptured as u32,
                    "capture sent twice",
                );
            }
            if st.buffer.is_none() {
                drop(st);
                return self.error(
                    frame,
                    ext_image_copy_capture_frame_v1::Error::NoBuffer as u32,
                    "capture without a buffer",
                );
            }
            st.captured = true;
            if matches!(self.sessions.get(&id).map(|s| s.kind), Some(Kind::Output { .. })) {
                let dmg = st.damage.clone();
                self.stats().client_damage.push(dmg);
            }
        }
        let Some(s) = self.sessions.get(&id) else {
            // The session was destroyed: its frames can only fail.
            return self.fail(frame, FailureReason::Stopped);
        };
        if s.stopped {
            return self.fail(frame, FailureReason::Stopped);
        }
        if s.kind != Kind::Cursor {
            if let Some(reason) = self.fail_next.take() {
                return self.fail(frame, reason);
            }
        }
        let immediate = s.damage.as_ref().is_none_or(|d| !d.is_empty());
        if let Some(s) = self.sessions.get_mut(&id) {
            s.pending = true;
        }
        if immediate {
            self.complete(id, dh);
        }
    }

    /// Copy the content into the pending frame's buffer and send the metadata and `ready`, or fail it.
    fn complete(&mut self, id: u64, _: &DisplayHandle) {
        let Some(s) = self.sessions.get_mut(&id) else { return };
        s.pending = false;
        let Some(frame) = s.frame.clone() else { return };
        let kind = s.kind;
        let (w, h) = match kind {
            Kind::Output { .. } => (self.width, self.height),
            Kind::Cursor => (CURSOR_SIZE, CURSOR_SIZE),
        };
        let Some(fd) = frame.data::<FrameData>() else { return };
        let buffer = fd.lock().buffer.clone();
        let Some(buf) = buffer.as_ref().and_then(|b| b.data::<ShmBufferData>()) else {
            return self.fail(&frame, FailureReason::BufferConstraints);
        };
        let formats: &[u32] = match kind {
            Kind::Output { .. } => &[wl_shm::Format::Xrgb8888 as u32, wl_shm::Format::Argb8888 as u32],
            Kind::Cursor => &[wl_shm::Format::Argb8888 as u32],
        };
        let fits = buf.width == w as i32
            && buf.height == h as i32
            && formats.contains(&buf.format)
            && buf.stride >= buf.width * 4
            && buf.offset >= 0;
        if !fits {
            return self.fail(&frame, FailureReason::BufferConstraints);
        }
        let written = {
            let mut pool = buf.pool.lock().unwrap_or_else(|e| e.into_inner());
            let need = buf.offset as usize + buf.stride as usize * h as usize;
            if pool.map.len() < need {
                false
            } else {
                for row in 0..h {
                    let start = buf.offset as usize + row as usize * buf.stride as usize;
                    for col in 0..w {
                        let px = match kind {
                            Kind::Cursor => CURSOR_ARGB,
                            Kind::Output { paint_cursors } => self.output_pixel(col, row, paint_cursors),
                        };
                        let o = start + col as usize * 4;
                        pool.map[o..o + 4].copy_from_slice(&px.to_le_bytes());
                    }
                }
                true
            }
        };
        if !written {
            return self.fail(&frame, FailureReason::BufferConstraints);
        }
        let Some(s) = self.sessions.get_mut(&id) else { return };
        let damage = s.damage.replace(Vec::new()).unwrap_or_else(|| vec![[0, 0, w, h]]);
        frame.transform(wl_output::Transform::Normal);
        let mut announced = Vec::new();
        for [x, y, dw, dh] in damage {
            frame.damage(x as i32, y as i32, dw as i32, dh as i32);
            announced.push([x as i32, y as i32, dw as i32, dh as i32]);
        }
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let secs = ts_secs(now.tv_sec);
        frame.presentation_time((secs >> 32) as u32, secs as u32, now.tv_nsec as u32);
        frame.ready();
        fd.lock().done = true;
        let mut st = self.stats();
        match kind {
            Kind::Output { .. } => {
                st.frames_ready += 1;
                st.announced_damage.push(announced);
            }
            Kind::Cursor => st.cursor_frames_ready += 1,
        }
    }

    fn output_pixel(&self, x: u32, y: u32, paint_cursors: bool) -> u32 {
        if paint_cursors && let Some((cx, cy)) = self.cursor {
            let (ox, oy) = (cx - CURSOR_HOTSPOT.0, cy - CURSOR_HOTSPOT.1);
            let (dx, dy) = (x as i32 - ox, y as i32 - oy);
            if (0..CURSOR_SIZE as i32).contains(&dx) && (0..CURSOR_SIZE as i32).contains(&dy) {
                return CURSOR_ARGB;
            }
        }
        self.pixels[(y * self.width + x) as usize]
    }
}

fn ts_secs(s: i64) -> u64 {
    s.max(0) as u64
}

fn argb(rgb: [u8; 3]) -> u32 {
    0xff00_0000 | (u32::from(rgb[0]) << 16) | (u32::from(rgb[1]) << 8) | u32::from(rgb[2])
}

fn send_cursor(cs: &mut CursorSession, pos: Option<(i32, i32)>) {
    match pos {
        Some((x, y)) => {
            if !cs.inside {
                cs.inside = true;
                cs.resource.enter();
                cs.resource.position(x, y);
                cs.resource.hotspot(CURSOR_HOTSPOT.0, CURSOR_HOTSPOT.1);
            } else {
                cs.resource.position(x, y);
            }
        }
        None => {
            if std::mem::take(&mut cs.inside) {
                cs.resource.leave();
            }
        }
    }
}

fn send_output_info(o: &wl_output::WlOutput, xdg: Option<&ZxdgOutputV1>, width: u32, height: u32) {
    o.geometry(
        0,
        0,
        0,
        0,
        wl_output::Subpixel::Unknown,
        "wl-webrtc".into(),
        "test".into(),
        wl_output::Transform::Normal,
    );
    o.mode(wl_output::Mode::Current | wl_output::Mode::Preferred, width as i32, height as i32, 60_000);
    if o.version() >= 2 {
        o.scale(1);
    }
    if o.version() >= 4 {
        o.name(OUTPUT.into());
        o.description("wl-webrtc test compositor output".into());
    }
    if let Some(x) = xdg {
        x.logical_position(0, 0);
        x.logical_size(width as i32, height as i32);
        if x.version() >= 2 {
            x.name(OUTPUT.into());
            x.description("wl-webrtc test compositor output".into());
        }
        if x.version() < 3 {
            x.done();
        }
    }
    if o.version() >= 2 {
        o.done();
    }
}

// --- user data ---

/// Id of a capture session in `Comp::sessions`.
struct SessionData(u64);
/// Id of a cursor session in `Comp::cursor_sessions`.
struct CursorSessionData(u64);

#[derive(Default)]
struct FrameState {
    buffer: Option<wl_buffer::WlBuffer>,
    damage: Vec<[i32; 4]>,
    captured: bool,
    /// ready or failed was sent.
    done: bool,
}

struct FrameData {
    session: u64,
    st: Mutex<FrameState>,
}

impl FrameData {
    fn lock(&self) -> std::sync::MutexGuard<'_, FrameState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Pool {
    _fd: OwnedFd,
    map: memmap2::MmapMut,
}

struct PoolData(Arc<Mutex<Pool>>);

struct ShmBufferData {
    pool: Arc<Mutex<Pool>>,
    offset: i32,
    width: i32,
    height: i32,
    stride: i32,
    format: u32,
}

fn map_fd(fd: &OwnedFd, size: usize) -> std::io::Result<memmap2::MmapMut> {
    let file = File::from(fd.as_fd().try_clone_to_owned()?);
    // SAFETY: the mapping is of a client's shm file that only this test's own client code writes, and the
    // client never truncates it while buffers exist (the product keeps its pool for the buffer's lifetime);
    // a shrinking client could only crash this test compositor, not the product under test.
    unsafe { memmap2::MmapOptions::new().len(size).map_mut(&file) }
}

// --- globals ---

/// Objects whose requests need no handling here (only destroy, or nothing we simulate).
macro_rules! ignore_requests {
    ($($iface:ty => $data:ty),* $(,)?) => {$(
        impl Dispatch<$iface, $data> for Comp {
            fn request(
                _: &mut Self,
                _: &Client,
                _: &$iface,
                _: <$iface as Resource>::Request,
                _: &$data,
                _: &DisplayHandle,
                _: &mut DataInit<'_, Self>,
            ) {
            }
        }
    )*};
}

/// Globals whose binding sends nothing.
macro_rules! plain_globals {
    ($($iface:ty),* $(,)?) => {$(
        impl GlobalDispatch<$iface, ()> for Comp {
            fn bind(_: &mut Self, _: &DisplayHandle, _: &Client, resource: New<$iface>, _: &(), init: &mut DataInit<'_, Self>) {
                init.init(resource, ());
            }
        }
    )*};
}

ignore_requests!(
    ZxdgOutputV1 => (),
    wl_buffer::WlBuffer => ShmBufferData,
    wl_pointer::WlPointer => (),
    ExtImageCaptureSourceV1 => (),
);
plain_globals!(ZxdgOutputManagerV1, ExtOutputImageCaptureSourceManagerV1, ExtImageCopyCaptureManagerV1);

impl GlobalDispatch<wl_output::WlOutput, ()> for Comp {
    fn bind(
        state: &mut Self,
        _: &DisplayHandle,
        _: &Client,
        resource: New<wl_output::WlOutput>,
        _: &(),
        init: &mut DataInit<'_, Self>,
    ) {
        let o = init.init(resource, ());
        send_output_info(&o, None, state.width, state.height);
        state.outputs.push((o, None));
    }
}

impl Dispatch<wl_output::WlOutput, ()> for Comp {
    fn request(
        _: &mut Self,
        _: &Client,
        _: &wl_output::WlOutput,
        _: wl_output::Request,
        _: &(),
        _: &DisplayHandle,
        _: &mut DataInit<'_, Self>,
    ) {
    }

    fn destroyed(state: &mut Self, _: ClientId, resource: &wl_output::WlOutput, _: &()) {
        state.outputs.retain(|(o, _)| o != resource);
    }
}

impl Dispatch<ZxdgOutputManagerV1, ()> for Comp {
    fn request(
        state: &mut Self,
        _: &Client,
        _: &ZxdgOutputManagerV1,
        request: zxdg_output_manager_v1::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        if let zxdg_output_manager_v1::Request::GetXdgOutput { id, output } = request {
            let x = init.init(id, ());
            send_output_info(&output, Some(&x), state.width, state.height);
            if let Some(entry) = state.outputs.iter_mut().find(|(o, _)| *o == output) {
                entry.1 = Some(x);
            }
        }
    }
}

impl GlobalDispatch<wl_shm::WlShm, ()> for Comp {
    fn bind(
        _: &mut Self,
        _: &DisplayHandle,
        _: &Client,
        resource: New<wl_shm::WlShm>,
        _: &(),
        init: &mut DataInit<'_, Self>,
    ) {
        let shm = init.init(resource, ());
        shm.format(wl_shm::Format::Argb8888);
        shm.format(wl_shm::Format::Xrgb8888);
    }
}

impl Dispatch<wl_shm::WlShm, ()> for Comp {
    fn request(
        state: &mut Self,
        _: &Client,
        shm: &wl_shm::WlShm,
        request: wl_shm::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        if let wl_shm::Request::CreatePool { id, fd, size } = request {
            match map_fd(&fd, size.max(0) as usize) {
                Ok(map) => {
                    init.init(id, PoolData(Arc::new(Mutex::new(Pool { _fd: fd, map }))));
                }
                Err(e) => state.error(shm, wl_shm::Error::InvalidFd as u32, &format!("mmap: {e}")),
            }
        }
    }
}

impl Dispatch<wl_shm_pool::WlShmPool, PoolData> for Comp {
    fn request(
        state: &mut Self,
        _: &Client,
        pool: &wl_shm_pool::WlShmPool,
        request: wl_shm_pool::Request,
        data: &PoolData,
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        match request {
            wl_shm_pool::Request::CreateBuffer { id, offset, width, height, stride, format } => {
                let format = match format {
                    WEnum::Value(f) => f as u32,
                    WEnum::Unknown(u) => u,
                };
                init.init(id, ShmBufferData { pool: Arc::clone(&data.0), offset, width, height, stride, format });
            }
            wl_shm_pool::Request::Resize { size } => {
                let mut p = data.0.lock().unwrap_or_else(|e| e.into_inner());
                match map_fd(&p._fd, size.max(0) as usize) {
                    Ok(map) => p.map = map,
                    Err(e) => {
                        drop(p);
                        state.error(pool, wl_shm::Error::InvalidFd as u32, &format!("mmap: {e}"));
                    }
                }
            }
            _ => {}
        }
    }
}

impl GlobalDispatch<wl_seat::WlSeat, ()> for Comp {
    fn bind(
        _: &mut Self,
        _: &DisplayHandle,
        _: &Client,
        resource: New<wl_seat::WlSeat>,
        _: &(),
        init: &mut DataInit<'_, Self>,
    ) {
        let seat = init.init(resource, ());
        seat.capabilities(wl_seat::Capability::Pointer);
        if seat.version() >= 2 {
            seat.name("seat0".into());
        }
    }
}

impl Dispatch<wl_seat::WlSeat, ()> for Comp {
    fn request(
        _: &mut Self,
        _: &Client,
        _: &wl_seat::WlSeat,
        request: wl_seat::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        if let wl_seat::Request::GetPointer { id } = request {
            init.init(id, ());
        }
    }
}

impl Dispatch<ExtOutputImageCaptureSourceManagerV1, ()> for Comp {
    fn request(
        _: &mut Self,
        _: &Client,
        _: &ExtOutputImageCaptureSourceManagerV1,
        request: ext_output_image_capture_source_manager_v1::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        if let ext_output_image_capture_source_manager_v1::Request::CreateSource { source, .. } = request {
            init.init(source, ());
        }
    }
}

impl Dispatch<ExtImageCopyCaptureManagerV1, ()> for Comp {
    fn request(
        state: &mut Self,
        _: &Client,
        manager: &ExtImageCopyCaptureManagerV1,
        request: ext_image_copy_capture_manager_v1::Request,
        _: &(),
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        use ext_image_copy_capture_manager_v1::{Options, Request};
        match request {
            Request::CreateSession { session, options, .. } => {
                let options = match options {
                    WEnum::Value(o) => o,
                    WEnum::Unknown(bits) => {
                        return state.error(
                            manager,
                            ext_image_copy_capture_manager_v1::Error::InvalidOption as u32,
                            &format!("options {bits:#x}"),
                        );
                    }
                };
                state.stats().session_options.push(options.bits());
                let id = state.next_id;
                state.next_id += 1;
                let resource = init.init(session, SessionData(id));
                state.add_session(resource, Kind::Output { paint_cursors: options.contains(Options::PaintCursors) });
            }
            Request::CreatePointerCursorSession { session, .. } => {
                state.stats().cursor_sessions += 1;
                let id = state.next_id;
                state.next_id += 1;
                let resource = init.init(session, CursorSessionData(id));
                let mut cs = CursorSession { resource, has_capture_session: false, inside: false };
                send_cursor(&mut cs, state.cursor);
                state.cursor_sessions.insert(id, cs);
            }
            _ => {}
        }
    }
}

impl Dispatch<ExtImageCopyCaptureCursorSessionV1, CursorSessionData> for Comp {
    fn request(
        state: &mut Self,
        _: &Client,
        resource: &ExtImageCopyCaptureCursorSessionV1,
        request: ext_image_copy_capture_cursor_session_v1::Request,
        data: &CursorSessionData,
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        if let ext_image_copy_capture_cursor_session_v1::Request::GetCaptureSession { session } = request {
            let Some(cs) = state.cursor_sessions.get_mut(&data.0) else { return };
            if std::mem::replace(&mut cs.has_capture_session, true) {
                return state.error(
                    resource,
                    ext_image_copy_capture_cursor_session_v1::Error::DuplicateSession as u32,
                    "get_capture_session sent twice",
                );
            }
            let id = state.next_id;
            state.next_id += 1;
            let r = init.init(session, SessionData(id));
            state.add_session(r, Kind::Cursor);
        }
    }

    fn destroyed(state: &mut Self, _: ClientId, _: &ExtImageCopyCaptureCursorSessionV1, data: &CursorSessionData) {
        state.cursor_sessions.remove(&data.0);
    }
}

impl Dispatch<ExtImageCopyCaptureSessionV1, SessionData> for Comp {
    fn request(
        state: &mut Self,
        _: &Client,
        resource: &ExtImageCopyCaptureSessionV1,
        request: ext_image_copy_capture_session_v1::Request,
        data: &SessionData,
        _: &DisplayHandle,
        init: &mut DataInit<'_, Self>,
    ) {
        if let ext_image_copy_capture_session_v1::Request::CreateFrame { frame } = request {
            let live = state.sessions.get(&data.0).and_then(|s| s.frame.as_ref()).is_some_and(|f| f.is_alive());
            if live {
                return state.error(
                    resource,
                    ext_image_copy_capture_session_v1::Error::DuplicateFrame as u32,
                    "create_frame before the previous frame was destroyed",
                );
            }
            let f = init.init(frame, FrameData { session: data.0, st: Mutex::new(FrameState::default()) });
            if let Some(s) = state.sessions.get_mut(&data.0) {
                s.frame = Some(f);
                s.pending = false;
            }
        }
    }

    fn destroyed(state: &mut Self, _: ClientId, _: &ExtImageCopyCaptureSessionV1, data: &SessionData) {
        state.sessions.remove(&data.0);
    }
}

impl Dispatch<ExtImageCopyCaptureFrameV1, FrameData> for Comp {
    fn request(
        state: &mut Self,
        _: &Client,
        frame: &ExtImageCopyCaptureFrameV1,
        request: ext_image_copy_capture_frame_v1::Request,
        data: &FrameData,
        dh: &DisplayHandle,
        _: &mut DataInit<'_, Self>,
    ) {
        use ext_image_copy_capture_frame_v1::{Error, Request};
        match request {
            Request::AttachBuffer { buffer } => {
                let mut st = data.lock();
                if st.captured {
                    drop(st);
                    return state.error(frame, Error::AlreadyCaptured as u32, "attach_buffer after capture");
                }
                st.buffer = Some(buffer);
            }
            Request::DamageBuffer { x, y, width, height } => {
                let mut st = data.lock();
                if st.captured {
                    drop(st);
                    return state.error(frame, Error::AlreadyCaptured as u32, "damage_buffer after capture");
                }
                if x < 0 || y < 0 || width <= 0 || height <= 0 {
                    drop(st);
                    return state.error(frame, Error::InvalidBufferDamage as u32, "invalid buffer damage");
                }
                st.damage.push([x, y, width, height]);
            }
            Request::Capture => state.capture(data.session, frame, dh),
            _ => {}
        }
    }

    fn destroyed(state: &mut Self, _: ClientId, resource: &ExtImageCopyCaptureFrameV1, data: &FrameData) {
        if let Some(s) = state.sessions.get_mut(&data.session) {
            if s.frame.as_ref() == Some(resource) {
                s.frame = None;
                s.pending = false;
            }
        }
    }
}

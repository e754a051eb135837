//! A private PipeWire session per test: its own D-Bus session bus (a `dbus-daemon` with a config written
//! here), `pipewire` and `wireplumber` in a private root-owned XDG_RUNTIME_DIR, and for the portal tests
//! `xdg-desktop-portal` + `xdg-desktop-portal-wlr` against a headless Sway [`Fixture`].
//!
//! xdg-desktop-portal-wlr 0.7.0 (Debian bookworm) fails `Start` on a GPU-less wlroots (it waits for a
//! screencopy `linux_dmabuf` event that the pixman renderer never sends, upstream issue #289). The test
//! fixture, not the product, works around it: `xdpw-shm-shim.c` (beside this file) is compiled with `cc` into
//! the session's directory and LD_PRELOADed into xdpw only.
//!
//! Every process is started in its own process group and killed (group) and reaped on drop; nothing the
//! session starts outlives the test. Missing programs fail the test with a message naming `scripts/setup`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wl_webrtc::capture::pipewire::PipewireOptions;

use super::Fixture;

const PROGRAMS: [&str; 5] = ["dbus-daemon", "pipewire", "wireplumber", "pw-cli", "gst-launch-1.0"];
const XDP: &str = "/usr/libexec/xdg-desktop-portal";
const XDPW: &str = "/usr/libexec/xdg-desktop-portal-wlr";

fn require(program: &str) {
    let found = if program.starts_with('/') {
        Path::new(program).exists()
    } else {
        std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
    };
    assert!(found, "{program} is not installed: run scripts/setup (PipeWire, WirePlumber, portal and GStreamer)");
}

/// One private PipeWire (and optionally portal) session.
pub struct PwSession {
    pub dir: PathBuf,
    pub runtime: PathBuf,
    pub bus_address: String,
    /// `XDG_STATE_HOME` of the session (the portal restore token goes under it).
    pub state_home: PathBuf,
    config_home: PathBuf,
    wayland: Option<PathBuf>,
    procs: Vec<(String, Child)>,
}

/// How the session's D-Bus finds services.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Services {
    /// The system's activatable services (the portal's permission store, …).
    System,
    /// None at all: nothing can be activated (the "no portal" case).
    None,
}

impl PwSession {
    /// D-Bus + PipeWire + WirePlumber.
    pub fn start() -> PwSession {
        PwSession::start_inner(None, Services::None, true)
    }

    /// D-Bus only, nothing activatable: no portal, no PipeWire.
    pub fn bus_only() -> PwSession {
        PwSession::start_inner(None, Services::None, false)
    }

    /// D-Bus + PipeWire + WirePlumber + xdg-desktop-portal-wlr (with the shim, capturing `output_name`) +
    /// xdg-desktop-portal, against the headless Sway of `fixture`.
    pub fn with_portal(fixture: &Fixture, output_name: &str) -> PwSession {
        PwSession::with_portal_shim(fixture, output_name, true)
    }

    /// [`PwSession::with_portal`], optionally without the xdpw shim (then xdpw 0.7.0 fails `Start` on this
    /// GPU-less Sway: the backend-failure case).
    pub fn with_portal_shim(fixture: &Fixture, output_name: &str, shim_on: bool) -> PwSession {
        require(XDP);
        require(XDPW);
        require("cc");
        let mut s = PwSession::start_inner(Some(fixture.socket().to_owned()), Services::System, true);
        let xdpw_conf = s.config_home.join("xdg-desktop-portal-wlr");
        std::fs::create_dir_all(&xdpw_conf).expect("xdpw config dir");
        std::fs::write(
            xdpw_conf.join("config"),
            format!("[screencast]\noutput_name={output_name}\nmax_fps=30\nchooser_type=none\n"),
        )
        .expect("xdpw config");
        let shim = s.dir.join("xdpw-shm-shim.so");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/xdpw-shm-shim.c");
        let cflags = Command::new("pkg-config").args(["--cflags", "wayland-client"]).output().expect("pkg-config");
        let mut cc = Command::new("cc");
        cc.args(["-O2", "-shared", "-fPIC", "-o"]).arg(&shim).arg(&src);
        cc.args(String::from_utf8_lossy(&cflags.stdout).split_whitespace()).arg("-ldl");
        let out = cc.output().expect("run cc");
        assert!(out.status.success(), "compiling the xdpw shim failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut cmd = s.command(XDPW);
        cmd.args(["-l", "DEBUG"]);
        if shim_on {
            cmd.env("LD_PRELOAD", &shim);
        }
        s.spawn_logged("xdpw", cmd);
        s.wait_for_name("org.freedesktop.impl.portal.desktop.wlr");
        let cmd = s.command(XDP);
        s.spawn_logged("xdp", cmd);
        s.wait_for_name("org.freedesktop.portal.Desktop");
        s
    }

    fn start_inner(wayland: Option<PathBuf>, services: Services, pipewire: bool) -> PwSession {
        for p in PROGRAMS {
            require(p);
        }
        let dir = std::env::temp_dir().join(format!(
            "wlw-pw-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
        ));
        let runtime = dir.join("run");
        let (state_home, config_home) = (dir.join("state"), dir.join("config"));
        for d in [&runtime, &state_home, &config_home, &dir.join("services")] {
            std::fs::create_dir_all(d).expect("session dirs");
        }
        std::fs::set_permissions(&runtime, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
        let bus = dir.join("bus");
        let servicedir = match services {
            Services::System => "<standard_session_servicedirs/>".to_owned(),
            Services::None => format!("<servicedir>{}</servicedir>", dir.join("services").display()),
        };
        let conf = dir.join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  {servicedir}
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                bus.display()
            ),
        )
        .expect("bus config");
        let mut s = PwSession {
            bus_address: format!("unix:path={}", bus.display()),
            dir,
            runtime,
            state_home,
            config_home,
            wayland,
            procs: Vec::new(),
        };
        let mut cmd = s.command("dbus-daemon");
        cmd.arg(format!("--config-file={}", conf.display())).args(["--nofork", "--nopidfile"]);
        s.spawn_logged("dbus", cmd);
        s.wait_until("the session bus socket", || bus.exists());
        if pipewire {
            s.start_pipewire();
        }
        s
    }

    /// Start (or restart) `pipewire` and `wireplumber`, and wait until WirePlumber is connected.
    pub fn start_pipewire(&mut self) {
        let cmd = self.command("pipewire");
        self.spawn_logged("pipewire", cmd);
        let sock = self.remote();
        self.wait_until("the PipeWire socket", || sock.exists());
        let cmd = self.command("wireplumber");
        self.spawn_logged("wireplumber", cmd);
        self.wait_until("WirePlumber", || self.pw_cli(&["ls", "Client"]).to_lowercase().contains("wireplumber"));
        // WirePlumber's policy scripts load after it connects: wait until it has exported its metadata.
        self.wait_until("WirePlumber's default metadata", || self.pw_cli(&["ls", "Metadata"]).contains("default"));
    }

    /// The environment every process of the session gets (and that `wl-webrtc` needs to use it).
    pub fn apply_env(&self, cmd: &mut Command) {
        cmd.env("XDG_RUNTIME_DIR", &self.runtime)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus_address)
            .env("XDG_STATE_HOME", &self.state_home)
            .env("XDG_CONFIG_HOME", &self.config_home)
            .env("XDG_CURRENT_DESKTOP", "sway")
            .env("XDG_SESSION_TYPE", "wayland")
            .env_remove("PIPEWIRE_REMOTE")
            .env_remove("RUST_LOG");
        match &self.wayland {
            Some(w) => cmd.env("WAYLAND_DISPLAY", w),
            None => cmd.env_remove("WAYLAND_DISPLAY"),
        };
    }

    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        self.apply_env(&mut cmd);
        cmd
    }

    /// The PipeWire socket of this session.
    pub fn remote(&self) -> PathBuf {
        self.runtime.join("pipewire-0")
    }

    /// Options for the library: this session's PipeWire socket, bus and restore-token file.
    pub fn options(&self, node: Option<&str>) -> PipewireOptions {
        PipewireOptions {
            node: node.map(str::to_owned),
            remote: Some(self.remote()),
            bus_address: Some(self.bus_address.clone()),
            restore_token: Some(self.token_path()),
        }
    }

    /// Where `wl-webrtc` keeps the portal restore token in this session.
    pub fn token_path(&self) -> PathBuf {
        self.state_home.join("wl-webrtc").join("portal-restore-token")
    }

    pub fn pw_cli(&self, args: &[&str]) -> String {
        self.command("pw-cli")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Our own producer node `name` (`testkit::pw_producer`): a solid `rgb` colour at `width`x`height`, BGRx,
    /// 30 fps, in buffers of `mode` ("dmabuf", "memfd" or "both-unmappable"); its stdout (the kinds of
    /// buffer it allocated) is in `log(name)`.
    pub fn producer(&mut self, name: &str, mode: &str, rgb: [u8; 3], width: u32, height: u32) {
        let mut cmd = self.command(testkit::pw_producer());
        cmd.args([name, mode, &width.to_string(), &height.to_string()])
            .arg(format!("{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]));
        self.spawn_logged(name, cmd);
        self.wait_until("the producer node", || self.pw_cli(&["ls", "Node"]).contains(name));
    }

    /// A GStreamer video source node `name`: a solid `rgb` colour at `width`x`height`, BGRx, 30 fps.
    pub fn solid_source(&mut self, name: &str, rgb: [u8; 3], width: u32, height: u32) {
        self.solid_source_caps(
            name,
            rgb,
            Some(&format!("video/x-raw,format=BGRx,width={width},height={height},framerate=30/1")),
        );
    }

    /// A GStreamer `videotestsrc` node `name` of a solid `rgb` colour through `caps` (None: no caps filter,
    /// `videotestsrc`'s own defaults: I420 320x240).
    pub fn solid_source_caps(&mut self, name: &str, rgb: [u8; 3], caps: Option<&str>) {
        let colour = format!("0xff{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]);
        let mut cmd = self.command("gst-launch-1.0");
        cmd.args(["-q", "videotestsrc", "is-live=true", "pattern=solid-color"])
            .arg(format!("foreground-color={colour}"));
        if let Some(caps) = caps {
            cmd.args(["!", caps]);
        }
        cmd.args(["!", "pipewiresink", "mode=provide"])
            .arg(format!("stream-properties=props,media.class=Video/Source,media.type=Video,node.name={name}"));
        self.spawn_logged(name, cmd);
        self.wait_until("the GStreamer node", || self.pw_cli(&["ls", "Node"]).contains(name));
    }

    /// Kill one process of the session (by the name it was started under) and reap it.
    pub fn kill(&mut self, name: &str) {
        if let Some(i) = self.procs.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.procs.remove(i);
            kill_group(&mut child);
        }
    }

    /// The log of one process (`<dir>/<name>.log`).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    fn spawn_logged(&mut self, name: &str, mut cmd: Command) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log file");
        let err = log.try_clone().expect("log file");
        cmd.stdin(Stdio::null()).stdout(log).stderr(err).process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e} (run scripts/setup)"));
        self.procs.push((name.to_owned(), child));
    }

    fn wait_for_name(&self, name: &str) {
        self.wait_until(name, || {
            self.command("dbus-send")
                .args(["--session", "--print-reply", "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus"])
                .args(["org.freedesktop.DBus.NameHasOwner", &format!("string:{name}")])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("boolean true"))
        });
    }

    fn wait_until(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !ok() {
            if Instant::now() > deadline {
                let logs: Vec<String> =
                    self.procs.iter().map(|(n, _)| format!("--- {n}.log\n{}", self.log(n))).collect();
                panic!("{what} did not come up within 15 s\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn kill_group(child: &mut Child) {
    let pgid = child.id() as i32;
    // SAFETY: kill(2) with a negative pid signals the process group this session created for the child;
    // no memory is involved.
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() > deadline => {
                // SAFETY: as above, SIGKILL to the child's own process group.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                let _ = child.wait();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    // Whatever else is left in the group (children of the child).
    // SAFETY: as above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

impl Drop for PwSession {
    fn drop(&mut self) {
        // Reverse order: clients before the daemons they use, the bus last.
        while let Some((_, mut child)) = self.procs.pop() {
            kill_group(&mut child);
        }
        if std::env::var_os("WLW_KEEP_PW_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A rectangle `[x, y, w, h]` painted in a colour; sent as SPA video damage on every frame.
type Patch = ([u32; 4], [u8; 3]);

/// A PipeWire video source written here with pipewire-rs (an output stream on its own thread): a solid
/// colour, BGRx, at a size the test can change mid-stream (the stream renegotiates its format), with SPA
/// video-damage metadata: the whole frame, or the patch set with [`TestProducer::paint`].
pub struct TestProducer {
    size: std::sync::Arc<std::sync::Mutex<(u32, u32)>>,
    patch: std::sync::Arc<std::sync::Mutex<Option<Patch>>>,
    cursor: std::sync::Arc<std::sync::Mutex<Option<(i32, i32)>>>,
    quit: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestProducer {
    /// Start node `name` on the session's daemon, `rgb` at `width`x`height`.
    pub fn start(s: &PwSession, name: &str, rgb: [u8; 3], width: u32, height: u32) -> TestProducer {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        let size = Arc::new(Mutex::new((width, height)));
        let patch = Arc::new(Mutex::new(None));
        let cursor = Arc::new(Mutex::new(None));
        let quit = Arc::new(AtomicBool::new(false));
        let (remote, name) = (s.remote(), name.to_owned());
        let (size2, patch2, cursor2, quit2) =
            (Arc::clone(&size), Arc::clone(&patch), Arc::clone(&cursor), Arc::clone(&quit));
        let thread = std::thread::spawn(move || run_producer(&remote, &name, rgb, &size2, &patch2, &cursor2, &quit2));
        let p = TestProducer { size, patch, cursor, quit, thread: Some(thread) };
        s.wait_until("the test producer node", || s.pw_cli(&["ls", "Node"]).contains("wlw-producer"));
        p
    }

    /// Change the size: the producer renegotiates its format with the consumer.
    pub fn resize(&self, width: u32, height: u32) {
        *self.size.lock().unwrap_or_else(|e| e.into_inner()) = (width, height);
    }

    /// Send cursor metadata: the pointer at (x, y) with hotspot (2, 3) and a 16x16 magenta image.
    pub fn cursor_at(&self, x: i32, y: i32) {
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = Some((x, y));
    }

    /// Paint `rect` (`[x, y, w, h]`) in `rgb` on every following frame, and send it as the frames' damage.
    pub fn paint(&self, rect: [u32; 4], rgb: [u8; 3]) {
        *self.patch.lock().unwrap_or_else(|e| e.into_inner()) = Some((rect, rgb));
    }
}

impl Drop for TestProducer {
    fn drop(&mut self) {
        self.quit.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A serialized SPA object parameter.
fn spa_param(type_: u32, id: u32, props: Vec<(u32, pipewire::spa::pod::Value)>) -> Vec<u8> {
    use pipewire::spa::pod::serialize::PodSerializer;
    use pipewire::spa::pod::{Object, Property, Value};
    let properties = props.into_iter().map(|(k, v)| Property::new(k, v)).collect();
    PodSerializer::serialize(std::io::Cursor::new(Vec::new()), &Value::Object(Object { type_, id, properties }))
        .expect("serialize a parameter")
        .0
        .into_inner()
}

fn video_format(width: u32, height: u32) -> Vec<u8> {
    use pipewire::spa;
    use spa::param::format::{FormatProperties, MediaSubtype, MediaType};
    use spa::param::video::VideoFormat;
    use spa::pod::{Value, property};
    let obj = spa::pod::object!(
        spa::utils::SpaTypes::ObjectParamFormat,
        spa::param::ParamType::EnumFormat,
        property!(FormatProperties::MediaType, Id, MediaType::Video),
        property!(FormatProperties::MediaSubtype, Id, MediaSubtype::Raw),
        property!(FormatProperties::VideoFormat, Id, VideoFormat::BGRx),
        property!(FormatProperties::VideoSize, Rectangle, spa::utils::Rectangle { width, height }),
        property!(FormatProperties::VideoFramerate, Fraction, spa::utils::Fraction { num: 30, denom: 1 }),
    );
    spa::pod::serialize::PodSerializer::serialize(std::io::Cursor::new(Vec::new()), &Value::Object(obj))
        .expect("serialize format")
        .0
        .into_inner()
}

fn run_producer(
    remote: &Path,
    name: &str,
    rgb: [u8; 3],
    size: &std::sync::Mutex<(u32, u32)>,
    patch: &std::sync::Arc<std::sync::Mutex<Option<Patch>>>,
    cursor: &std::sync::Arc<std::sync::Mutex<Option<(i32, i32)>>>,
    quit: &std::sync::atomic::AtomicBool,
) {
    use pipewire as pw;
    use pw::spa::pod::Pod;
    pw::init();
    let mainloop = pw::main_loop::MainLoopRc::new(None).expect("main loop");
    let context = pw::context::ContextRc::new(&mainloop, None).expect("context");
    let sock = std::os::unix::net::UnixStream::connect(remote).expect("connect to the session's PipeWire");
    let core = context.connect_fd_rc(std::os::fd::OwnedFd::from(sock), None).expect("core");
    let props = pw::properties::properties! {
        *pw::keys::MEDIA_TYPE => "Video",
        *pw::keys::MEDIA_CLASS => "Video/Source",
        *pw::keys::NODE_NAME => name,
        *pw::keys::NODE_DESCRIPTION => "wlw-producer",
    };
    let stream = pw::stream::StreamBox::new(&core, "wlw-producer", props).expect("stream");
    let current = std::rc::Rc::new(std::cell::Cell::new(*size.lock().unwrap_or_else(|e| e.into_inner())));
    let negotiated = std::rc::Rc::new(std::cell::Cell::new((0u32, 0u32)));
    let neg = std::rc::Rc::clone(&negotiated);
    let patch_cb = std::sync::Arc::clone(patch);
    let cursor_cb = std::sync::Arc::clone(cursor);
    let neg2 = std::rc::Rc::clone(&negotiated);
    let _listener = stream
        .add_local_listener_with_user_data(())
        .param_changed(move |stream, _, id, param| {
            let Some(param) = param else { return };
            if id != pw::spa::param::ParamType::Format.as_raw() {
                return;
            }
            let mut info = pw::spa::param::video::VideoInfoRaw::new();
            if info.parse(param).is_err() {
                return;
            }
            let (w, h) = (info.size().width, info.size().height);
            neg2.set((w, h));
            // Keys by raw value; damage metadata (up to 4 regions) and cursor metadata offered.
            use pw::spa::pod::Value;
            use pw::spa::sys as spa;
            let bytes = spa_param(
                spa::SPA_TYPE_OBJECT_ParamBuffers,
                spa::SPA_PARAM_Buffers,
                vec![
                    (spa::SPA_PARAM_BUFFERS_buffers, Value::Int(4)),
                    (spa::SPA_PARAM_BUFFERS_blocks, Value::Int(1)),
                    (spa::SPA_PARAM_BUFFERS_size, Value::Int((w * h * 4) as i32)),
                    (spa::SPA_PARAM_BUFFERS_stride, Value::Int((w * 4) as i32)),
                    (spa::SPA_PARAM_BUFFERS_dataType, Value::Int(1 << spa::SPA_DATA_MemFd)),
                ],
            );
            let region = std::mem::size_of::<spa::spa_meta_region>() as i32;
            let meta = spa_param(
                spa::SPA_TYPE_OBJECT_ParamMeta,
                spa::SPA_PARAM_Meta,
                vec![
                    (spa::SPA_PARAM_META_type, Value::Id(pw::spa::utils::Id(spa::SPA_META_VideoDamage))),
                    (spa::SPA_PARAM_META_size, Value::Int(4 * region)),
                ],
            );
            let cursor_meta = spa_param(
                spa::SPA_TYPE_OBJECT_ParamMeta,
                spa::SPA_PARAM_Meta,
                vec![
                    (spa::SPA_PARAM_META_type, Value::Id(pw::spa::utils::Id(spa::SPA_META_Cursor))),
                    (spa::SPA_PARAM_META_size, Value::Int(CURSOR_META_SIZE as i32)),
                ],
            );
            let mut pods: Vec<&Pod> =
                [&bytes, &meta, &cursor_meta].into_iter().filter_map(|b| Pod::from_bytes(b)).collect();
            let _ = stream.update_params(&mut pods);
        })
        .process(move |stream, _| {
            let (w, h) = neg.get();
            let patch = *patch_cb.lock().unwrap_or_else(|e| e.into_inner());
            let cursor = *cursor_cb.lock().unwrap_or_else(|e| e.into_inner());
            // Raw buffer API: metadata is written in place (the safe wrapper hands out shared references).
            // SAFETY: dequeue returns null or a buffer of this stream that is ours until queued below.
            let pwb = unsafe { stream.dequeue_raw_buffer() };
            if pwb.is_null() {
                return;
            }
            // SAFETY: `pwb` is a valid pw_buffer (above); its spa_buffer, datas, chunks and metas were set up
            // by PipeWire for the negotiated params and stay valid while we hold the buffer.
            unsafe { fill_buffer((*pwb).buffer, w, h, rgb, patch, cursor) };
            // SAFETY: `pwb` came from this stream's dequeue and is queued exactly once.
            unsafe { stream.queue_raw_buffer(pwb) };
        })
        .register()
        .expect("listener");
    let fmt = video_format(current.get().0, current.get().1);
    let pod = Pod::from_bytes(&fmt).expect("format pod");
    // The driver of its graph, paced by the loop below (~30 fps).
    let flags = pw::stream::StreamFlags::DRIVER | pw::stream::StreamFlags::MAP_BUFFERS;
    stream.connect(pw::spa::utils::Direction::Output, None, flags, &mut [pod]).expect("connect producer");
    while !quit.load(std::sync::atomic::Ordering::Relaxed) {
        mainloop.loop_().iterate(pw::loop_::Timeout::Finite(Duration::from_millis(33)));
        let want = *size.lock().unwrap_or_else(|e| e.into_inner());
        if want != current.get() {
            current.set(want);
            let fmt = video_format(want.0, want.1);
            if let Some(pod) = Pod::from_bytes(&fmt) {
                let _ = stream.update_params(&mut [pod]);
            }
        }
        if stream.state() == pw::stream::StreamState::Streaming {
            // SAFETY: the stream pointer is valid while `stream` lives (it does, for this whole loop);
            // pw_stream_trigger_process exists since PipeWire 0.3.34 (the safe wrapper is version-gated).
            unsafe { pw::sys::pw_stream_trigger_process(stream.as_raw_ptr()) };
        }
    }
    let _ = stream.disconnect();
}

/// Size of the producer's cursor metadata: cursor, bitmap header, 16x16 BGRA pixels.
const CURSOR_META_SIZE: usize = std::mem::size_of::<pipewire::spa::sys::spa_meta_cursor>()
    + std::mem::size_of::<pipewire::spa::sys::spa_meta_bitmap>()
    + 16 * 16 * 4;

/// Fill one producer buffer: the frame (colour, patch), its damage and cursor metadata.
///
/// # Safety
/// `sb` must be a valid spa_buffer the caller holds (dequeued, not yet queued), whose data 0 is mapped.
unsafe fn fill_buffer(
    sb: *mut pipewire::spa::sys::spa_buffer,
    w: u32,
    h: u32,
    rgb: [u8; 3],
    patch: Option<Patch>,
    cursor: Option<(i32, i32)>,
) {
    use pipewire::spa::sys as spa;
    if sb.is_null() || w == 0 {
        return;
    }
    // SAFETY: the caller guarantees `sb` and everything it points to (whole block); every write below stays
    // inside the sizes PipeWire recorded (maxsize, meta size).
    unsafe {
        let damage = patch.map_or([0, 0, w, h], |(r, _)| r);
        let meta = spa::spa_buffer_find_meta(sb, spa::SPA_META_VideoDamage);
        if !meta.is_null() {
            let regions = (*meta).data.cast::<spa::spa_meta_region>();
            let n = (*meta).size as usize / std::mem::size_of::<spa::spa_meta_region>();
            // The first region is the damage; the next one (zero size) ends the list.
            for (i, r) in [damage, [0, 0, 0, 0]].into_iter().enumerate().take(n) {
                let reg = &mut (*regions.add(i)).region;
                (reg.position.x, reg.position.y) = (r[0] as i32, r[1] as i32);
                (reg.size.width, reg.size.height) = (r[2], r[3]);
            }
        }
        let meta = spa::spa_buffer_find_meta(sb, spa::SPA_META_Cursor);
        if !meta.is_null() && (*meta).size as usize >= CURSOR_META_SIZE {
            let c = (*meta).data.cast::<spa::spa_meta_cursor>();
            match cursor {
                None => (*c).id = 0,
                Some((x, y)) => {
                    (*c).id = 1;
                    (*c).flags = 0;
                    ((*c).position.x, (*c).position.y) = (x, y);
                    ((*c).hotspot.x, (*c).hotspot.y) = (2, 3);
                    (*c).bitmap_offset = std::mem::size_of::<spa::spa_meta_cursor>() as u32;
                    let bm = (*meta).data.cast::<u8>().add((*c).bitmap_offset as usize).cast::<spa::spa_meta_bitmap>();
                    (*bm).format = spa::SPA_VIDEO_FORMAT_BGRA;
                    ((*bm).size.width, (*bm).size.height) = (16, 16);
                    (*bm).stride = 64;
                    (*bm).offset = std::mem::size_of::<spa::spa_meta_bitmap>() as u32;
                    let px = std::slice::from_raw_parts_mut(bm.cast::<u8>().add((*bm).offset as usize), 16 * 16 * 4);
                    for p in px.chunks_exact_mut(4) {
                        p.copy_from_slice(&[255, 0, 255, 255]);
                    }
                }
            }
        }
        if (*sb).n_datas == 0 || (*sb).datas.is_null() {
            return;
        }
        let d = &mut *(*sb).datas;
        let len = (w * h * 4) as usize;
        if d.data.is_null() || (d.maxsize as usize) < len || d.chunk.is_null() {
            return;
        }
        let mem = std::slice::from_raw_parts_mut(d.data.cast::<u8>(), len);
        for (i, px) in mem.chunks_exact_mut(4).enumerate() {
            let (x, y) = (i as u32 % w, i as u32 / w);
            let c = match patch {
                Some(([px0, py0, pw_, ph], c)) if x >= px0 && x < px0 + pw_ && y >= py0 && y < py0 + ph => c,
                _ => rgb,
            };
            px.copy_from_slice(&[c[2], c[1], c[0], 0xff]);
        }
        let chunk = &mut *d.chunk;
        chunk.offset = 0;
        chunk.size = len as u32;
        chunk.stride = (w * 4) as i32;
    }
}

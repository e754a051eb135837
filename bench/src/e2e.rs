//! `wl-webrtc-bench e2e`: glass-to-glass latency, measured end to end on this machine, for wl-webrtc and, in
//! the same run and on the same desktop, a GStreamer peer and the x264 CLI.
//!
//! Per mode (e.g. 1920x1080@60): a private headless Sway runs the clock client (`wl-webrtc-test-pattern
//! --pattern clock`: wall-clock time + frame counter as a barcode in every frame, see `barcode`). For each system a
//! headless Chromium opens `web/e2e.html` (served by the harness itself), which plays the system's WHEP
//! stream, reads the barcode of every decoded frame in requestVideoFrameCallback and POSTs the latencies
//! back. Server CPU is read from /proc over the measured window.
//!
//! * `wl-webrtc`: `wl-webrtc start` on the desktop.
//! * `gstreamer`: `wl-webrtc capture --raw -` (the same screencopy capture; raw BGRx frames down a pipe) →
//!   `bench/gst-whep-peer.py` (videoconvert → x264enc ultrafast/zerolatency → rtph264pay → webrtcbin, with
//!   a minimal WHEP endpoint). The glue is ours; its CPU (capture process + GStreamer) is counted.
//! * `x264-cli`: frames captured from the same desktop, converted to NV12, encoded by `x264 --preset
//!   ultrafast --tune zerolatency` at the same bitrate: the encode limit (per-frame time, not latency).
//!
//! As root everything runs in a private network namespace with only `lo`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use testkit::impair::{ImpairedLink, LinkSpec};
use wl_webrtc::config::{DEFAULT_HEADLESS_USER, HeadlessMode};
use wl_webrtc::headless::{HeadlessDesktop, HeadlessOptions, spawn_guarded, terminate_group};
use wl_webrtc::metrics::percentile;

/// The measurement page (usable by hand against a desktop running the clock client:
/// `/e2e.html?whep=URL&duration=10`, result in `window.e2e.result`).
pub const PAGE: &str = include_str!("../web/e2e.html");
const GST_PEER: &str = include_str!("../gst-whep-peer.py");

/// What to measure.
#[derive(Debug, Clone)]
pub struct E2eOptions {
    pub modes: Vec<HeadlessMode>,
    /// Seconds measured per system (after the warm-up).
    pub duration_s: f64,
    /// Seconds after the first decoded frame that are not measured.
    pub warmup_s: f64,
    /// Clock client background: 0 static, 1 moving bar, 2 full-screen noise.
    pub complexity: u8,
    pub systems: Vec<System>,
    /// Encoder bitrate for every system (kbit/s); `None` = wl-webrtc's automatic bitrate for the mode.
    pub bitrate_kbps: Option<u32>,
    /// The clock client stamps frames this far in the past: the harness must measure exactly this much more
    /// (its self-check; the product under test is not touched).
    pub clock_lag_ms: u32,
    /// Measure through an impaired link (`testkit::impair`): servers on its side A, Chromium and the page
    /// on side B. `None`: everything on loopback in one private namespace.
    pub link: Option<LinkSpec>,
    /// The `wl-webrtc` binary under test and the `wl-webrtc-test-pattern` clock client.
    pub server_bin: PathBuf,
    pub pattern_bin: PathBuf,
    /// Where the table, plot and JSON go.
    pub results: PathBuf,
}

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    WlWebrtc,
    /// wl-webrtc with `--codec vp8` (what Debian's Firefox gets).
    WlWebrtcVp8,
    Gstreamer,
    X264Cli,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::WlWebrtc => "wl-webrtc",
            System::WlWebrtcVp8 => "wl-webrtc-vp8",
            System::Gstreamer => "gstreamer",
            System::X264Cli => "x264-cli",
        }
    }
}

/// One system at one mode.
#[derive(Debug, Clone, Serialize)]
pub struct E2eResult {
    pub name: &'static str,
    pub mode: String,
    /// Glass-to-glass latency percentiles (for `x264-cli`: the per-frame encode time).
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    /// Frames received (decoded and presented) per second.
    pub fps: f64,
    pub frames: u64,
    /// Painted frames that never reached the viewer (gaps in the frame counter).
    pub frames_lost: u64,
    /// Frames whose barcode could not be read.
    pub unreadable: u64,
    /// Server CPU, % of one core, over the measured window.
    pub cpu_percent: f64,
    /// Server CPU per received frame.
    pub cpu_ms_per_frame: Option<f64>,
    pub first_frame_ms: Option<f64>,
    pub decode_ms: Option<f64>,
    pub jitter_buffer_ms: Option<f64>,
    /// The encoder bitrate configured for the system.
    pub bitrate_kbps: u32,
    /// What the viewer actually received over the measured window (RTP payload bytes, from getStats).
    pub received_kbps: Option<f64>,
    /// wl-webrtc's own per-stage breakdown (`/api/status` latency_ms) when the system is ours.
    pub stages: Option<serde_json::Value>,
    /// Chromium's freezes over the measured window: count, total frozen time, and the longest gap between
    /// two presented frames.
    pub freezes: u64,
    pub frozen_ms: Option<f64>,
    pub longest_gap_ms: Option<f64>,
    /// RTP packets lost (after repair), NACKs the viewer sent, retransmissions it received.
    pub packets_lost: Option<i64>,
    pub nacks: u64,
    pub retransmitted: u64,
    pub note: String,
    #[serde(skip)]
    pub samples_ms: Vec<f64>,
}

/// Where the systems and the viewer run: all on loopback, or on the two sides of an impaired link.
enum Net {
    Local,
    Link(ImpairedLink),
}

impl Net {
    /// The address the systems listen on.
    fn server_ip(&self) -> &'static str {
        match self {
            Net::Local => "127.0.0.1",
            Net::Link(_) => testkit::impair::ADDR_A,
        }
    }

    /// Start `cmd` on the systems' side.
    fn server_side(&self, cmd: &mut Command) {
        if let Net::Link(l) = self {
            l.a.command(cmd);
        }
    }

    fn in_server_ns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match self {
            Net::Local => f(),
            Net::Link(l) => l.a.run(f),
        }
    }

    fn in_viewer_ns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match self {
            Net::Local => f(),
            Net::Link(l) => l.b.run(f),
        }
    }
}

/// Run the benchmark; in a private network namespace when we may create one, or through an impaired link
/// (`opts.link`) between two.
pub fn run(opts: &E2eOptions, stop: &AtomicBool) -> anyhow::Result<Vec<E2eResult>> {
    let opts2 = opts.clone();
    let stop_flag = Arc::new(AtomicBool::new(false));
    let inner_stop = Arc::clone(&stop_flag);
    let worker = std::thread::Builder::new().name("bench-e2e".into()).spawn(move || {
        let net = match &opts2.link {
            Some(spec) => {
                let link = ImpairedLink::new(spec.clone())
                    .context("cannot set up the impaired link (needs root: namespaces and /dev/net/tun)")?;
                tracing::info!(?spec, "measuring through an impaired link");
                Net::Link(link)
            }
            None => {
                match testkit::netns::enter_private_netns() {
                    Ok(()) => tracing::info!("measuring in a private network namespace (only lo)"),
                    Err(e) => tracing::warn!(
                        "cannot create a private network namespace ({e}); measuring in this one (ICE stays on \
                         127.0.0.1)"
                    ),
                }
                Net::Local
            }
        };
        let results = run_all(&opts2, &inner_stop, &net);
        if let Net::Link(l) = &net {
            let (ab, ba) = l.stats();
            tracing::info!(?ab, ?ba, "the link: systems → viewer, viewer → systems");
        }
        results
    })?;
    while !worker.is_finished() {
        if stop.load(Ordering::Relaxed) {
            stop_flag.store(true, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    worker.join().map_err(|_| anyhow::anyhow!("the benchmark thread panicked"))?
}

fn run_all(opts: &E2eOptions, stop: &AtomicBool, net: &Net) -> anyhow::Result<Vec<E2eResult>> {
    let page = net.in_viewer_ns(PageServer::start)?;
    let mut results = Vec::new();
    for mode in &opts.modes {
        let bitrate = opts.bitrate_kbps.unwrap_or_else(|| {
            wl_webrtc::encode::EncoderSettings::auto_bitrate_kbps(mode.width, mode.height, mode.refresh_hz)
        });
        let mut desk = HeadlessDesktop::start(&HeadlessOptions {
            mode: *mode,
            extra: Vec::new(),
            user: DEFAULT_HEADLESS_USER.to_owned(),
        })
        .context("cannot start the private headless desktop")?;
        let exe = opts.server_bin.as_path();
        let mut clock = desk.command(&opts.pattern_bin);
        clock.args(["--pattern", "clock", "--complexity", &opts.complexity.to_string()]);
        clock.args(["--clock-lag-ms", &opts.clock_lag_ms.to_string()]);
        clock.stdout(Stdio::null());
        desk.spawn(clock).context("cannot start the clock client")?;
        std::thread::sleep(Duration::from_millis(500));
        for &system in &opts.systems {
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            tracing::info!(system = system.name(), mode = %mode, "measuring");
            let r = match system {
                System::WlWebrtc | System::WlWebrtcVp8 => {
                    measure_ours(opts, net, &desk, exe, &page, *mode, bitrate, system)
                }
                System::Gstreamer => measure_gstreamer(opts, net, &desk, exe, &page, *mode, bitrate),
                System::X264Cli => measure_x264_cli(&desk, *mode, bitrate),
            };
            match r {
                Ok(r) => results.push(r),
                Err(e) => {
                    tracing::warn!(system = system.name(), "failed: {e:#}");
                    let mut r = E2eResult::empty(system.name(), *mode, bitrate);
                    r.note = format!("{e:#}");
                    results.push(r);
                }
            }
        }
    }
    Ok(results)
}

impl E2eResult {
    /// A result with nothing measured yet.
    fn empty(name: &'static str, mode: HeadlessMode, bitrate_kbps: u32) -> E2eResult {
        E2eResult {
            name,
            mode: mode.to_string(),
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
            mean_ms: None,
            fps: 0.0,
            frames: 0,
            frames_lost: 0,
            unreadable: 0,
            cpu_percent: 0.0,
            cpu_ms_per_frame: None,
            first_frame_ms: None,
            decode_ms: None,
            jitter_buffer_ms: None,
            bitrate_kbps,
            received_kbps: None,
            stages: None,
            freezes: 0,
            frozen_ms: None,
            longest_gap_ms: None,
            packets_lost: None,
            nacks: 0,
            retransmitted: 0,
            note: String::new(),
            samples_ms: Vec::new(),
        }
    }
}

/// A child process of the harness, stopped with its process group (SIGTERM, then SIGKILL) and reaped on drop.
struct Guarded(Option<Child>);

impl Guarded {
    fn spawn(cmd: Command) -> anyhow::Result<Guarded> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        Ok(Guarded(Some(spawn_guarded(cmd).with_context(|| format!("cannot start {program}"))?)))
    }

    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    fn child(&mut self) -> Option<&mut Child> {
        self.0.as_mut()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            terminate_group(c);
        }
    }
}

/// utime + stime of a process and its reaped children, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return 0.0 };
    // After "pid (comm)": state is field 3; utime 14, stime 15, cutime 16, cstime 17.
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf with a valid name has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    f.get(11..15).map_or(0.0, |v| v.iter().filter_map(|x| x.parse::<f64>().ok()).sum::<f64>() / hz)
}

/// Read lines from `r` until one contains `needle` (returned), or time out.
fn wait_for_line(r: impl Read + Send + 'static, needle: &'static str, timeout: Duration) -> anyhow::Result<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if line.contains(needle) {
                let _ = tx.send(line);
                // Keep draining so the writer never blocks on a full pipe.
            }
        }
    });
    rx.recv_timeout(timeout).map_err(|_| anyhow::anyhow!("no {needle:?} line within {timeout:?}"))
}

#[allow(clippy::too_many_arguments)]
fn measure_ours(
    opts: &E2eOptions,
    net: &Net,
    desk: &HeadlessDesktop,
    exe: &Path,
    page: &PageServer,
    mode: HeadlessMode,
    bitrate: u32,
    system: System,
) -> anyhow::Result<E2eResult> {
    let codec = if system == System::WlWebrtcVp8 { "vp8" } else { "h264" };
    let mut cmd = Command::new(exe);
    let listen = format!("{}:0", net.server_ip());
    cmd.args(["start", "--listen", &listen, "--output", "HEADLESS-1", "--codec", codec])
        .args(["--fps", &mode.refresh_hz.to_string(), "--bitrate", &bitrate.to_string()])
        // The measuring page is served from another origin (the harness's page server).
        .args(["--allow-origin", &page.base()])
        .env("WAYLAND_DISPLAY", desk.wayland_socket())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if matches!(net, Net::Link(_)) {
        // Beyond loopback the server speaks HTTPS by default; the measuring page talks plain HTTP.
        cmd.arg("--no-tls");
    }
    net.server_side(&mut cmd);
    let mut server = Guarded::spawn(cmd)?;
    let out = server.child().and_then(|c| c.stdout.take()).context("no stdout")?;
    let line = wait_for_line(out, "streaming", Duration::from_secs(20))?;
    let url = line.split(" at ").nth(1).context("no URL in the server's first line")?.trim().to_owned();
    let base = url.split('?').next().unwrap_or(&url).trim_end_matches('/').to_owned();
    let token = url.split_once("?token=").map(|(_, t)| t.to_owned()).unwrap_or_default();
    let whep = format!("{base}/whep?token={token}");
    let pid = server.pid();
    let mut r = page.measure(opts, net, system, mode, bitrate, &whep, &[pid])?;
    let bearer = format!("Bearer {token}");
    if let Some(addr) = base.strip_prefix("http://").and_then(|a| a.parse::<SocketAddr>().ok())
        && let Ok((200, body)) = net.in_server_ns(move || {
            wl_webrtc::signaling::client::request(addr, "GET", "/api/status", &[("Authorization", &bearer)], "")
        })
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
    {
        r.stages = Some(v["latency_ms"].clone());
    }
    Ok(r)
}

fn measure_gstreamer(
    opts: &E2eOptions,
    net: &Net,
    desk: &HeadlessDesktop,
    exe: &Path,
    page: &PageServer,
    mode: HeadlessMode,
    bitrate: u32,
) -> anyhow::Result<E2eResult> {
    let script = std::env::temp_dir().join(format!("wl-webrtc-gst-whep-peer-{}.py", std::process::id()));
    std::fs::write(&script, GST_PEER).context("cannot write the GStreamer glue")?;
    let _cleanup = RemoveOnDrop(script.clone());
    let ip = net.server_ip();
    let port = net.in_server_ns(move || TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()))?.port();
    let mut cap = Command::new(exe);
    cap.args(["capture", "--frames", "0", "--idle-timeout", "100000", "--raw", "-", "--output", "HEADLESS-1"])
        .args(["--fps", &mode.refresh_hz.to_string()])
        .env("WAYLAND_DISPLAY", desk.wayland_socket())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut capture = Guarded::spawn(cap)?;
    let frames = capture.child().and_then(|c| c.stdout.take()).context("no stdout")?;
    let mut peer = Command::new("python3");
    peer.arg(&script)
        .args(["--listen", &format!("{ip}:{port}")])
        .args(["--width", &mode.width.to_string(), "--height", &mode.height.to_string()])
        .args(["--fps", &mode.refresh_hz.to_string(), "--bitrate", &bitrate.to_string()])
        .stdin(Stdio::from(frames))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // The peer's own log, for finding out why it gave no result: WL_WEBRTC_BENCH_GST_LOG=FILE.
    if let Some(path) = std::env::var_os("WL_WEBRTC_BENCH_GST_LOG")
        && let Ok(f) = std::fs::File::create(path)
    {
        peer.stderr(Stdio::from(f));
    }
    net.server_side(&mut peer);
    let mut gst = Guarded::spawn(peer)?;
    let out = gst.child().and_then(|c| c.stdout.take()).context("no stdout")?;
    let line = wait_for_line(out, "gst-whep-peer: ready", Duration::from_secs(20))
        .context("the GStreamer peer did not start (run scripts/setup for its packages)")?;
    let whep = line.rsplit(' ').next().unwrap_or_default().to_owned();
    let mut r = page.measure(opts, net, System::Gstreamer, mode, bitrate, &whep, &[capture.pid(), gst.pid()])?;
    r.note =
        "capture = wl-webrtc capture --raw (screencopy, BGRx through a pipe); videoconvert, x264enc, webrtcbin".into();
    Ok(r)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Capture 120 frames of the desktop, convert them to NV12 and time the x264 CLI on them.
fn measure_x264_cli(desk: &HeadlessDesktop, mode: HeadlessMode, bitrate: u32) -> anyhow::Result<E2eResult> {
    use wl_webrtc::capture::screencopy::ScreencopyCapture;
    let never = AtomicBool::new(false);
    let mut cap =
        ScreencopyCapture::new(wl_webrtc::capture::wayland::WlSession::connect(desk.wayland_socket())?, None)?;
    let mut conv = wl_webrtc::convert::Converter::cpu();
    let raw = std::env::temp_dir().join(format!("wl-webrtc-e2e-{}.nv12", std::process::id()));
    let _cleanup = RemoveOnDrop(raw.clone());
    let mut file = std::io::BufWriter::new(std::fs::File::create(&raw)?);
    let mut nv12 = wl_webrtc::frame::Nv12Frame::new(mode.width, mode.height);
    let mut n = 0;
    while n < 120 {
        let Some(info) = cap.next_frame(Duration::from_secs(2), &never)? else { bail!("the desktop stopped moving") };
        let layout = info.layout;
        cap.with_pixels(|data, stride| {
            let layout = wl_webrtc::frame::FrameLayout { stride, ..layout };
            conv.convert(data, &layout, info.y_invert, &wl_webrtc::frame::Damage::Full, &mut nv12)
        })??;
        for plane in [(&nv12.y, nv12.padded_height()), (&nv12.uv, nv12.padded_height() / 2)] {
            for row in plane.0.chunks(nv12.stride).take(plane.1 as usize) {
                file.write_all(&row[..nv12.padded_width() as usize])?;
            }
        }
        n += 1;
    }
    file.flush()?;
    drop(file);
    let (w, h) = (nv12.padded_width(), nv12.padded_height());
    let vbv = (bitrate / mode.refresh_hz.max(1)).max(1);
    let before = children_cpu_seconds();
    let t0 = Instant::now();
    let out = Command::new("x264")
        .args(["--preset", "ultrafast", "--tune", "zerolatency", "--input-csp", "nv12"])
        .args(["--input-res", &format!("{w}x{h}"), "--fps", &mode.refresh_hz.to_string()])
        .args(["--bitrate", &bitrate.to_string(), "--vbv-maxrate", &bitrate.to_string()])
        .args(["--vbv-bufsize", &vbv.to_string(), "--keyint", "infinite", "--bframes", "0"])
        .args(["-o", "/dev/null"])
        .arg(&raw)
        .output()
        .context("cannot run the x264 CLI (install x264, e.g. with scripts/setup)")?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = children_cpu_seconds() - before;
    let text = String::from_utf8_lossy(&out.stderr);
    // "encoded 120 frames, 95.31 fps, 8123.45 kb/s"
    let fps = text
        .lines()
        .find_map(|l| l.strip_prefix("encoded ").and_then(|r| r.split(", ").nth(1)))
        .and_then(|f| f.trim_end_matches(" fps").parse::<f64>().ok())
        .with_context(|| format!("unexpected x264 output: {text}"))?;
    let per_frame = 1000.0 / fps;
    let mut r = E2eResult::empty(System::X264Cli.name(), mode, bitrate);
    (r.p50_ms, r.p95_ms, r.p99_ms, r.mean_ms) = (Some(per_frame), None, None, Some(per_frame));
    r.fps = fps;
    r.frames = n;
    r.cpu_percent = 100.0 * cpu / wall.max(1e-9);
    r.cpu_ms_per_frame = Some(1000.0 * cpu / n as f64);
    r.note = "encode only: mean per-frame time of the CLI (its own fps), same frames and bitrate".into();
    Ok(r)
}

fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_CHILDREN with a valid out-pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The harness's own HTTP endpoint: serves the measurement page and takes its reports.
pub struct PageServer {
    addr: SocketAddr,
    reports: Arc<Mutex<mpsc::Receiver<serde_json::Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PageServer {
    /// Listen on 127.0.0.1 (a free port) and serve until dropped.
    pub fn start() -> anyhow::Result<PageServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on 127.0.0.1")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("e2e-page".into()).spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        if let Err(e) = serve_one(conn, &tx) {
                            tracing::debug!("e2e page server: {e}");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => tracing::debug!("e2e page server accept: {e}"),
                }
            }
        })?;
        Ok(PageServer { addr, reports: Arc::new(Mutex::new(rx)), stop, thread: Some(thread) })
    }

    /// `http://127.0.0.1:PORT`: the page is at `{base}/e2e.html`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Open the page in a fresh Chromium against `whep`; CPU of `pids` is measured from the page's "measuring"
    /// beacon to its report.
    #[allow(clippy::too_many_arguments)]
    fn measure(
        &self,
        opts: &E2eOptions,
        net: &Net,
        system: System,
        mode: HeadlessMode,
        bitrate: u32,
        whep: &str,
        pids: &[u32],
    ) -> anyhow::Result<E2eResult> {
        let rx = self.reports.lock().map_err(|_| anyhow::anyhow!("report channel poisoned"))?;
        while rx.try_recv().is_ok() {}
        let report = format!("http://{}/report", self.addr);
        let url = format!(
            "http://{}/e2e.html?whep={}&report={}&warmup={}&duration={}&name={}",
            self.addr,
            percent_encode(whep),
            percent_encode(&report),
            opts.warmup_s,
            opts.duration_s,
            system.name()
        );
        let browser = net.in_viewer_ns(move || testkit::browser::Chromium::launch(&[], &url))?;
        let deadline = Instant::now() + Duration::from_secs_f64(opts.warmup_s + opts.duration_s + 40.0);
        let mut cpu_start: Option<(f64, Instant)> = None;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no result from the page; Chromium log tail:\n{}", browser.log_tail(3000));
            }
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(v) if v["event"] == "measuring" => {
                    cpu_start = Some((pids.iter().map(|&p| cpu_seconds(p)).sum(), Instant::now()));
                }
                Ok(v) => break v,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if browser.has_exited() {
                        bail!("Chromium exited; log tail:\n{}", browser.log_tail(3000));
                    }
                }
                Err(e) => bail!("page server: {e}"),
            }
        };
        let cpu_end: f64 = pids.iter().map(|&p| cpu_seconds(p)).sum();
        drop(browser);
        if let Some(err) = result["error"].as_str() {
            bail!("the page failed: {err}");
        }
        let samples: Vec<f64> = result["samples_ms"]
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default();
        let frames = result["frames"].as_u64().unwrap_or(0);
        let seconds = result["seconds"].as_f64().unwrap_or(0.0);
        let (cpu, wall) = cpu_start.map_or((0.0, 0.0), |(c, t)| (cpu_end - c, t.elapsed().as_secs_f64()));
        let mut r = E2eResult::empty(system.name(), mode, bitrate);
        r.p50_ms = percentile(&samples, 50.0);
        r.p95_ms = percentile(&samples, 95.0);
        r.p99_ms = percentile(&samples, 99.0);
        r.mean_ms = (!samples.is_empty()).then(|| samples.iter().sum::<f64>() / samples.len() as f64);
        r.fps = if seconds > 0.0 { frames as f64 / seconds } else { 0.0 };
        r.frames = frames;
        r.frames_lost = result["lost"].as_u64().unwrap_or(0);
        r.unreadable = result["unreadable"].as_u64().unwrap_or(0);
        r.cpu_percent = if wall > 0.0 { 100.0 * cpu / wall } else { 0.0 };
        r.cpu_ms_per_frame = (frames > 0).then(|| 1000.0 * cpu / frames as f64 * (seconds / wall.max(1e-9)));
        r.first_frame_ms = result["first_frame_ms"].as_f64();
        r.decode_ms = result["decode_ms"].as_f64();
        r.jitter_buffer_ms = result["jitter_buffer_ms"].as_f64();
        r.received_kbps = result["received_kbps"].as_f64();
        r.freezes = result["freezes"].as_u64().unwrap_or(0);
        r.frozen_ms = result["frozen_ms"].as_f64();
        r.longest_gap_ms = result["longest_gap_ms"].as_f64();
        r.packets_lost = result["packets_lost"].as_i64();
        r.nacks = result["nacks"].as_u64().unwrap_or(0);
        r.retransmitted = result["retransmitted"].as_u64().unwrap_or(0);
        r.samples_ms = samples;
        Ok(r)
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const CORS: &str = "Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Methods: GET, POST, OPTIONS\r\n\
                    Access-Control-Allow-Headers: content-type\r\n";

/// One request on the page server: GET /e2e.html, POST /report (JSON), OPTIONS (CORS preflight).
fn serve_one(mut conn: TcpStream, reports: &mpsc::Sender<serde_json::Value>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut data = Vec::new();
    let mut buf = [0u8; 16384];
    let (head, body_start, len) = loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let len = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            break (head, end + 4, len);
        }
        if data.len() > 1 << 20 {
            return Ok(());
        }
    };
    while data.len() < body_start + len && data.len() < 64 << 20 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let reply = |conn: &mut TcpStream, status: &str, ctype: &str, body: &[u8]| -> std::io::Result<()> {
        let head = format!(
            "HTTP/1.1 {status}\r\n{CORS}Content-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes())?;
        conn.write_all(body)
    };
    match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/e2e.html") => reply(&mut conn, "200 OK", "text/html; charset=utf-8", PAGE.as_bytes()),
        ("OPTIONS", _) => reply(&mut conn, "204 No Content", "text/plain", b""),
        ("POST", "/report") => {
            let body = &data[body_start.min(data.len())..(body_start + len).min(data.len())];
            match serde_json::from_slice(body) {
                Ok(v) => {
                    let _ = reports.send(v);
                    reply(&mut conn, "200 OK", "text/plain", b"ok\n")
                }
                Err(e) => reply(&mut conn, "400 Bad Request", "text/plain", e.to_string().as_bytes()),
            }
        }
        ("GET", "/favicon.ico") => reply(&mut conn, "404 Not Found", "text/plain", b""),
        _ => reply(&mut conn, "404 Not Found", "text/plain", b"not found\n"),
    }
}

/// The markdown table of a run.
pub fn table(results: &[E2eResult]) -> String {
    let f = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.1}"));
    let mut s = String::from(
        "| mode | system | p50 ms | p95 ms | p99 ms | fps received | frames lost | unreadable | frozen ms (freezes) | longest gap ms | packets lost / NACKs / retransmitted | server CPU % | CPU ms/frame | bitrate set / received kbit/s | note |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        s += &format!(
            "| {} | {} | {} | {} | {} | {:.1} | {} | {} | {} ({}) | {} | {} / {} / {} | {:.1} | {} | {} / {} | {} |\n",
            r.mode,
            r.name,
            f(r.p50_ms),
            f(r.p95_ms),
            f(r.p99_ms),
            r.fps,
            r.frames_lost,
            r.unreadable,
            r.frozen_ms.map_or("—".into(), |v| format!("{v:.0}")),
            r.freezes,
            r.longest_gap_ms.map_or("—".into(), |v| format!("{v:.0}")),
            r.packets_lost.map_or("—".into(), |v| v.to_string()),
            r.nacks,
            r.retransmitted,
            r.cpu_percent,
            r.cpu_ms_per_frame.map_or("—".into(), |v| format!("{v:.2}")),
            r.bitrate_kbps,
            r.received_kbps.map_or("—".into(), |v| format!("{v:.0}")),
            r.note.replace('|', "/").replace('\n', " ")
        );
    }
    s
}

/// wl-webrtc's stage breakdown per mode, as markdown.
pub fn stages_table(results: &[E2eResult]) -> String {
    let mut s = String::new();
    for r in results.iter().filter(|r| r.stages.is_some()) {
        let Some(st) = &r.stages else { continue };
        s += &format!("\nwl-webrtc stages at {} (p50 / p95 ms):", r.mode);
        for stage in ["capture_wait", "copy", "convert", "encode", "send"] {
            let p = |k: &str| st[stage][k].as_f64().map_or("—".to_owned(), |v| format!("{v:.2}"));
            s += &format!(" {stage} {} / {};", p("p50_ms"), p("p95_ms"));
        }
        if let Some(d) = r.decode_ms {
            s += &format!(" browser decode {d:.2}");
        }
        if let Some(j) = r.jitter_buffer_ms {
            s += &format!(", jitter buffer {j:.2}");
        }
        s.push('\n');
    }
    s
}

/// Latency histograms (1 ms bins) of every measured system, one panel per mode, as SVG.
pub fn histogram_svg(results: &[E2eResult]) -> String {
    let colours = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e"];
    let mut modes: Vec<&str> = results.iter().map(|r| r.mode.as_str()).collect();
    modes.dedup();
    let (pw, ph, margin) = (640.0, 260.0, 50.0);
    let height = modes.len() as f64 * (ph + margin) + margin;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        pw + 2.0 * margin
    );
    for (mi, mode) in modes.iter().enumerate() {
        let top = margin + mi as f64 * (ph + margin);
        let rows: Vec<&E2eResult> = results.iter().filter(|r| r.mode == *mode && !r.samples_ms.is_empty()).collect();
        let max_ms = rows.iter().filter_map(|r| percentile(&r.samples_ms, 99.5)).fold(10.0f64, f64::max).ceil() + 2.0;
        let bins = max_ms as usize;
        let hist: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| {
                let mut h = vec![0.0; bins];
                for &v in &r.samples_ms {
                    if v >= 0.0 && (v as usize) < bins {
                        h[v as usize] += 1.0;
                    }
                }
                let n = r.samples_ms.len().max(1) as f64;
                h.iter().map(|c| c / n).collect()
            })
            .collect();
        let ymax = hist.iter().flatten().copied().fold(0.01f64, f64::max);
        s += &format!(
            "<text x=\"{margin}\" y=\"{}\" font-size=\"14\">glass-to-glass latency, {mode} (share of frames per 1 ms bin)</text>\n",
            top - 10.0
        );
        s += &format!(
            "<line x1=\"{margin}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"black\"/>\n",
            y = top + ph,
            x2 = margin + pw
        );
        let step = if max_ms > 100.0 {
            20
        } else if max_ms > 40.0 {
            10
        } else {
            5
        };
        for t in (0..=bins).step_by(step) {
            let x = margin + pw * t as f64 / max_ms;
            s += &format!(
                "<line x1=\"{x}\" y1=\"{y}\" x2=\"{x}\" y2=\"{y2}\" stroke=\"black\"/><text x=\"{x}\" y=\"{ty}\" text-anchor=\"middle\">{t}</text>\n",
                y = top + ph,
                y2 = top + ph + 4.0,
                ty = top + ph + 16.0
            );
        }
        s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">ms</text>\n", margin + pw, top + ph + 30.0);
        for (i, (r, h)) in rows.iter().zip(&hist).enumerate() {
            let c = colours[i % colours.len()];
            let pts: Vec<String> = h
                .iter()
                .enumerate()
                .flat_map(|(b, v)| {
                    let y = top + ph - ph * v / ymax;
                    let x0 = margin + pw * b as f64 / max_ms;
                    let x1 = margin + pw * (b + 1) as f64 / max_ms;
                    [format!("{x0:.1},{y:.1}"), format!("{x1:.1},{y:.1}")]
                })
                .collect();
            s += &format!(
                "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
                pts.join(" ")
            );
            s += &format!(
                "<text x=\"{}\" y=\"{}\" fill=\"{c}\">{} p50 {:.1} ms, p95 {:.1} ms</text>\n",
                margin + pw - 220.0,
                top + 16.0 + 16.0 * i as f64,
                r.name,
                r.p50_ms.unwrap_or(0.0),
                r.p95_ms.unwrap_or(0.0)
            );
        }
    }
    s + "</svg>\n"
}

/// Write `e2e-latest.{md,svg,json}` (and a dated copy of the markdown) into `dir`.
pub fn write_results(dir: &Path, opts: &E2eOptions, results: &[E2eResult]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let md = format!(
        "# wl-webrtc bench e2e\n\nUnix time {now}; {} s measured per system after {} s warm-up; clock client complexity {}; \
         {} cores.\n\n{}{}\n![latency histogram](e2e-latest.svg)\n",
        opts.duration_s,
        opts.warmup_s,
        opts.complexity,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        table(results),
        stages_table(results)
    );
    let md_path = dir.join("e2e-latest.md");
    std::fs::write(&md_path, &md)?;
    std::fs::write(dir.join(format!("e2e-{now}.md")), &md)?;
    std::fs::write(dir.join("e2e-latest.svg"), histogram_svg(results))?;
    std::fs::write(dir.join("e2e-latest.json"), serde_json::to_string_pretty(results)?)?;
    Ok(md_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &'static str, mode: &str, samples: Vec<f64>) -> E2eResult {
        let mut r = E2eResult::empty(name, HeadlessMode { width: 1, height: 1, refresh_hz: 1 }, 1);
        r.mode = mode.into();
        r.p50_ms = percentile(&samples, 50.0);
        r.samples_ms = samples;
        r
    }

    #[test]
    fn table_and_plot_have_every_system_and_mode() {
        let rs = vec![
            result("wl-webrtc", "1920x1080@60", vec![18.0, 19.5, 21.0]),
            result("gstreamer", "1920x1080@60", vec![30.0, 35.0]),
            result("wl-webrtc", "3840x2160@30", vec![40.0]),
        ];
        let t = table(&rs);
        assert_eq!(t.lines().count(), 2 + 3);
        assert!(t.contains("| 1920x1080@60 | gstreamer | 30.0 |"), "{t}");
        let svg = histogram_svg(&rs);
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("3840x2160@30") && svg.ends_with("</svg>\n"));
    }

    #[test]
    fn cpu_of_this_process_is_readable() {
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64.wrapping_add(1));
        }
        assert!(cpu_seconds(std::process::id()) > 0.0);
        assert_eq!(cpu_seconds(u32::MAX), 0.0);
    }

    #[test]
    fn percent_encoding_keeps_urls_intact_as_parameters() {
        assert_eq!(percent_encode("http://127.0.0.1:80/whep"), "http%3A%2F%2F127.0.0.1%3A80%2Fwhep");
    }
}

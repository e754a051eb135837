//! Commands wired together: which desktop to talk to (the current session or a private headless one),
//! signals, and the `start`, `capture`, `list-outputs`, `config` and `test-pattern` commands.
//!
//! Shutdown: SIGINT/SIGTERM/SIGHUP set one flag; every loop checks it at least every 50 ms, returns, and
//! the `Desktop` drop tears a private compositor down.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::capture::Capture;
use crate::capture::wayland::{self, WlSession};
use crate::cli::{CaptureArgs, Cli, Command, ConfigArgs, ListEncodersArgs, ListOutputsArgs, StartArgs};
use crate::config::{Config, DEFAULT_CONFIG_TEMPLATE};
use crate::cursor::CursorState;
use crate::encode::{Codec, EncodedFrame};
use crate::frame::{FrameInfo, write_png};
use crate::headless::{HeadlessDesktop, HeadlessOptions};
use crate::metrics;
use crate::pipeline::{CaptureStep, Refresh};

/// Install the tracing subscriber: RUST_LOG wins, else the configured filter. Logs go to stderr.
pub fn init_logging(cfg: &Config) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(&cfg.log_filter));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The flag set by SIGINT, SIGTERM and SIGHUP.
pub fn shutdown_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(sig, Arc::clone(&flag)).context("cannot install signal handler")?;
    }
    Ok(flag)
}

/// The desktop a command works on.
#[derive(Debug)]
pub struct Desktop {
    /// Compositor socket.
    pub socket: PathBuf,
    /// The private desktop, when `--headless` started one (dropped last: tears it down).
    pub headless: Option<HeadlessDesktop>,
    /// The program started inside it.
    pub child: Option<u32>,
}

impl Desktop {
    /// The current session, or a private headless desktop running `child`.
    pub fn open(cfg: &Config, child: &[String]) -> anyhow::Result<Desktop> {
        let Some(mode) = cfg.headless else {
            if !child.is_empty() {
                anyhow::bail!(
                    "a program after `--` ({}) runs only inside a private desktop: add --headless WxH",
                    child.join(" ")
                );
            }
            let socket = match wayland::display_from_env() {
                Ok(s) => s,
                // A PipeWire source needs no compositor connection (only --allow-input does, and it says so).
                Err(_) if cfg.source == crate::config::SourceKind::Pipewire => PathBuf::new(),
                Err(e) => return Err(e.into()),
            };
            return Ok(Desktop { socket, headless: None, child: None });
        };
        let mut desk = HeadlessDesktop::start(&HeadlessOptions {
            mode,
            extra: cfg.headless_extra.clone(),
            user: cfg.headless_user.clone(),
        })?;
        let child_pid = match child.split_first() {
            Some((prog, args)) => {
                let mut cmd = desk.command(prog);
                cmd.args(args);
                Some(desk.spawn(cmd)?)
            }
            None => None,
        };
        Ok(Desktop { socket: desk.wayland_socket().to_owned(), headless: Some(desk), child: child_pid })
    }

    /// Why the desktop is over, if it is: the program inside exited, or the private compositor died.
    pub fn ended(&mut self) -> Option<String> {
        let desk = self.headless.as_mut()?;
        if let Some(status) = desk.compositor_exited() {
            return Some(format!("the private compositor exited ({status})"));
        }
        let pid = self.child?;
        desk.try_wait_child(pid).map(|status| format!("the program inside the desktop exited ({status})"))
    }
}

/// Run the command line.
pub fn run(cli: Cli, mut cfg: Config) -> anyhow::Result<ExitCode> {
    let stop = shutdown_flag()?;
    // The H.264 encoder is decided once, before anything starts: `--encoder vaapi` without a device that can
    // encode is an error now, not when the first viewer arrives.
    let encodes = match &cli.command {
        None | Some(Command::Start(_)) => cfg.encoder.codec != crate::encode::CodecChoice::Vp8,
        Some(Command::Capture(a)) => a.encode.is_some(),
        Some(Command::Bench(b)) => b.what == crate::cli::BenchWhat::Encode,
        _ => false,
    };
    if encodes {
        crate::media::resolve_h264_encoder(&mut cfg.encoder).map_err(anyhow::Error::msg)?;
    }
    match cli.command {
        None => start(&cfg, &StartArgs { child: cli.child }, &stop),
        Some(Command::Start(mut a)) => {
            a.child.extend(cli.child);
            start(&cfg, &a, &stop)
        }
        Some(Command::Capture(mut a)) => {
            a.child.extend(cli.child);
            capture(&cfg, &a, &stop)
        }
        Some(Command::ListOutputs(a)) => list_outputs(&cfg, &a),
        Some(Command::ListEncoders(a)) => list_encoders(&cfg, &a),
        Some(Command::Status(a)) => status(&cfg, a.json),
        Some(Command::Stop) => stop_instance(&cfg),
        Some(Command::Config(a)) => print_config(&cfg, &a),
        Some(Command::Bench(b)) => bench(&cfg, &b),
        Some(Command::Generate(g)) => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            match g.what {
                crate::cli::Generated::Man => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
                crate::cli::Generated::Completions { shell } => {
                    clap_complete::generate(shell, &mut cmd, "wl-webrtc", &mut std::io::stdout())
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn bench(cfg: &Config, b: &crate::cli::BenchArgs) -> anyhow::Result<ExitCode> {
    if b.frames == 0 {
        anyhow::bail!("--frames must be at least 1");
    }
    let sizes = match &b.size {
        Some(s) => {
            let m = crate::config::HeadlessMode::parse(s).map_err(|e| anyhow::anyhow!("--size: {e}"))?;
            vec![(m.width, m.height)]
        }
        None => vec![(1920, 1080), (3840, 2160)],
    };
    let mut rows = Vec::new();
    for (w, h) in sizes {
        match b.what {
            crate::cli::BenchWhat::Convert => rows.extend(crate::bench::convert(w, h, b.frames, cfg.convert)?),
            crate::cli::BenchWhat::Encode => {
                let vaapi = (cfg.encoder.backend == crate::encode::EncoderBackend::Vaapi)
                    .then_some(cfg.encoder.vaapi_device.as_deref())
                    .flatten();
                rows.extend(crate::bench::encode(w, h, b.frames, cfg.fps, vaapi)?)
            }
        }
    }
    let mut devices: Vec<&str> = rows.iter().filter_map(|r| r.device.as_deref()).collect();
    devices.dedup();
    if b.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for (link, found) in crate::bench::paths(cfg) {
            println!("path: {link}: {found}");
        }
        println!("{:<8} {:<46} {:>10} {:>7} {:>9} {:>9}", "stage", "case", "size", "frames", "p50 ms", "mean ms");
        for r in &rows {
            println!(
                "{:<8} {:<46} {:>10} {:>7} {:>9.3} {:>9.3}",
                r.stage,
                r.case,
                format!("{}x{}", r.width, r.height),
                r.frames,
                r.p50_ms,
                r.mean_ms
            );
        }
        for d in devices {
            println!("vulkan device: {d}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit code when no instance answers at the listen address.
const EXIT_NO_INSTANCE: u8 = 3;

/// Query a running instance; `Ok(None)` when nothing listens there.
fn query(cfg: &Config, method: &str, path: &str) -> anyhow::Result<Option<(u16, String)>> {
    use crate::signaling::client;
    let addr = client::reach(cfg.server.listen);
    // The token: given, else the one the instance on that port keeps for us.
    let token = cfg.server.token.clone().or_else(|| crate::signaling::instance::find(addr.port())?.token);
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("Authorization", b.as_str())).collect();
    match client::request(addr, method, path, &headers, "") {
        Ok((401, _)) => {
            anyhow::bail!("the instance at {addr} refused the token: pass its token with --token (or WL_WEBRTC_TOKEN)")
        }
        Ok(r) => Ok(Some(r)),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut) => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot reach {addr}: {e}")),
    }
}

fn status(cfg: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let addr = crate::signaling::client::reach(cfg.server.listen);
    let Some((code, body)) = query(cfg, "GET", "/api/status")? else {
        println!("no running instance at {addr}");
        return Ok(ExitCode::from(EXIT_NO_INSTANCE));
    };
    if code != 200 {
        anyhow::bail!("{addr} answered {code}: {}", body.trim());
    }
    let v: serde_json::Value = serde_json::from_str(&body).context("the status document is not JSON")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s = &v["stream"];
    println!(
        "wl-webrtc {} at {addr}: output {}, {} session(s), {} viewer(s)",
        v["version"].as_str().unwrap_or("?"),
        v["output"].as_str().unwrap_or("-"),
        v["sessions"],
        v["viewers"]
    );
    println!(
        "stream {}x{} at {:.1} fps, {:.0} kbit/s; frames captured {}, encoded {}, dropped {}, keyframes {}",
        s["width"],
        s["height"],
        s["fps"].as_f64().unwrap_or(0.0),
        s["bitrate_kbps"].as_f64().unwrap_or(0.0),
        s["frames_captured"],
        s["frames_encoded"],
        s["frames_dropped"],
        s["keyframes"]
    );
    let i = &v["input"];
    if i.is_object() {
        println!(
            "input {}: received {}, injected {}, dropped {}, rejected {}",
            if i["allowed"] == true { "allowed" } else { "off (view-only)" },
            i["received"],
            i["injected"],
            i["dropped"],
            i["rejected"]
        );
    }
    if let Some(stages) = v["latency_ms"].as_object() {
        for (stage, l) in stages {
            let ms = |k: &str| l[k].as_f64().map_or("-".to_owned(), |x| format!("{x:.2}"));
            println!("  {stage:<13} p50 {:>7} ms  p95 {:>7} ms", ms("p50_ms"), ms("p95_ms"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn stop_instance(cfg: &Config) -> anyhow::Result<ExitCode> {
    let addr = crate::signaling::client::reach(cfg.server.listen);
    let Some((code, body)) = query(cfg, "POST", "/api/shutdown")? else {
        println!("no running instance at {addr}");
        return Ok(ExitCode::from(EXIT_NO_INSTANCE));
    };
    if code != 202 {
        anyhow::bail!("{addr} refused to stop ({code}): {}", body.trim());
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            println!("stopped the instance at {addr}");
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("the instance at {addr} accepted the request but is still listening after 15 s")
}

fn print_config(cfg: &Config, a: &ConfigArgs) -> anyhow::Result<ExitCode> {
    if a.print_default || !a.print {
        print!("{DEFAULT_CONFIG_TEMPLATE}");
    } else {
        print!("{}", cfg.to_toml());
    }
    Ok(ExitCode::SUCCESS)
}

fn list_encoders(cfg: &Config, a: &ListEncodersArgs) -> anyhow::Result<ExitCode> {
    #[cfg(feature = "vaapi")]
    let vaapi = crate::encode::vaapi::probe(cfg.encoder.vaapi_device.as_deref()).map_err(|e| e.to_string());
    #[cfg(not(feature = "vaapi"))]
    let vaapi: Result<VaapiNone, String> = {
        let _ = cfg;
        Err(crate::media::NO_VAAPI_BUILD.to_owned())
    };
    if a.json {
        let vaapi = match &vaapi {
            Ok(d) => serde_json::json!({
                "available": true,
                "device": d.path,
                "vendor": d.vendor,
                "h264_encode": d.h264_encode.iter().map(|(p, e)| serde_json::json!({"profile": p, "entrypoint": e})).collect::<Vec<_>>(),
            }),
            Err(e) => serde_json::json!({ "available": false, "reason": e }),
        };
        let all = serde_json::json!({ "x264": { "available": true }, "vp8": { "available": true }, "vaapi": vaapi });
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("x264\tH.264, software\tavailable");
    println!("vp8\tVP8, software (libvpx)\tavailable");
    match vaapi {
        Ok(d) => {
            let profiles: Vec<String> = d.h264_encode.iter().map(|(p, e)| format!("{p} ({e})")).collect();
            println!("vaapi\tH.264, {} on {}\t{}", d.vendor, d.path.display(), profiles.join(", "));
        }
        Err(e) => println!("vaapi\tH.264, hardware\tunavailable: {e}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// What a build without VA-API "finds" (never constructed).
#[cfg(not(feature = "vaapi"))]
struct VaapiNone {
    path: std::path::PathBuf,
    vendor: String,
    h264_encode: Vec<(&'static str, &'static str)>,
}

fn list_outputs(cfg: &Config, a: &ListOutputsArgs) -> anyhow::Result<ExitCode> {
    let desk = Desktop::open(cfg, &[])?;
    let session: WlSession = WlSession::connect(&desk.socket)?;
    let outputs = crate::capture::describe_outputs(&session);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&outputs)?);
    } else if outputs.is_empty() {
        println!("no outputs");
    } else {
        for o in &outputs {
            println!(
                "{}\t{}x{}@{}.{:03}Hz\tscale {}\tat {},{}\t{}\tsources: {}",
                o.name,
                o.width,
                o.height,
                o.refresh_mhz / 1000,
                o.refresh_mhz % 1000,
                o.scale,
                o.x,
                o.y,
                o.description.as_deref().unwrap_or(""),
                o.sources.join(",")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Open the configured capture source (`--source`, resolved against what the compositor offers) on a desktop.
pub(crate) fn open_capture(cfg: &Config, socket: &std::path::Path) -> anyhow::Result<Capture> {
    let pw = crate::capture::pipewire::PipewireOptions { node: cfg.pipewire_node.clone(), ..Default::default() };
    Ok(Capture::open_with(socket, cfg.source, cfg.output.as_deref(), cfg.cursor, &pw)?)
}

/// `--fps` pacing: the decision is `control::FramePacer`'s; this only sleeps (in ≤ 50 ms steps, so a stop
/// request is seen promptly).
#[derive(Debug)]
struct Pacer(crate::control::FramePacer);

impl Pacer {
    fn new(fps: u32) -> Pacer {
        Pacer(crate::control::FramePacer::new(fps))
    }

    fn wait(&mut self, stop: &AtomicBool) {
        loop {
            let wait = self.0.wait_time(Instant::now());
            if wait.is_zero() || stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(wait.min(Duration::from_millis(50)));
        }
    }

    fn frame_delivered(&mut self, requested_at: Instant) {
        self.0.frame_delivered(requested_at);
    }
}

/// Summary of a `capture` run (`--json`).
#[derive(Debug, Serialize)]
pub(crate) struct CaptureReport {
    pub output: String,
    pub source: &'static str,
    pub buffer: Option<&'static str>,
    pub frames: u64,
    pub width: u32,
    pub height: u32,
    pub format: String,
    pub y_invert: bool,
    pub fps: f64,
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p95: Option<f64>,
    pub latency_ms_max: Option<f64>,
    /// Compositor presentation → frame ready in our process (the copy's own cost), median.
    pub age_ms_p50: Option<f64>,
    /// Mean share of each frame that was damaged (0..1).
    pub damage_mean: f64,
    /// Every distinct size seen, in order.
    pub sizes: Vec<[u32; 2]>,
    pub buffer_allocations: u64,
    pub failed_frames: u64,
    /// Frames encoded (with --encode) and their total size.
    pub encoded_frames: u64,
    pub encoded_bytes: u64,
    /// Average bitrate of the encoded stream over the capture span.
    pub encoded_kbps: Option<f64>,
    pub convert_ms_p50: Option<f64>,
    pub encode_ms_p50: Option<f64>,
    /// Capture stopped because no new frame arrived within --idle-timeout.
    pub timed_out: bool,
    pub png: Option<PathBuf>,
    /// The cursor at the end (`--cursor metadata` on ext-image-copy), else null.
    pub cursor: Option<CursorState>,
}

fn capture(cfg: &Config, a: &CaptureArgs, stop: &AtomicBool) -> anyhow::Result<ExitCode> {
    if !(a.idle_timeout.is_finite() && a.idle_timeout > 0.0) {
        anyhow::bail!("--idle-timeout must be a positive number of seconds");
    }
    let mut desk = Desktop::open(cfg, &a.child)?;
    let mut cap = open_capture(cfg, &desk.socket)?;
    let idle = Duration::from_secs_f64(a.idle_timeout);
    let mut pacer = Pacer::new(cfg.fps);
    let (mut latencies, mut damage, mut ages) = (Vec::new(), Vec::new(), Vec::new());
    let mut sizes: Vec<[u32; 2]> = Vec::new();
    let (mut first_at, mut last): (Option<Instant>, Option<FrameInfo>) = (None, None);
    let mut timed_out = false;
    let mut encode = match &a.encode {
        Some(path) => {
            let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            Some((crate::media::MediaStage::new(cfg), std::io::BufWriter::new(file)))
        }
        None => None,
    };
    let (mut convert_ms, mut encode_ms, mut encoded_bytes) = (Vec::new(), Vec::new(), 0u64);
    let raw_to_stdout = a.raw.as_deref().is_some_and(|p| p.as_os_str() == "-");
    let mut raw: Option<(Box<dyn std::io::Write>, Vec<u8>)> = match &a.raw {
        Some(_) if raw_to_stdout => Some((Box::new(std::io::stdout().lock()), Vec::new())),
        Some(path) => Some((
            Box::new(std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?),
            Vec::new(),
        )),
        None => None,
    };
    let quiet = raw_to_stdout;
    let limit = if a.frames == 0 { u64::MAX } else { a.frames };
    while (latencies.len() as u64) < limit && !stop.load(Ordering::Relaxed) {
        if let Some(why) = desk.ended() {
            tracing::warn!("{why}");
            break;
        }
        pacer.wait(stop);
        let Some(info) = cap.next_frame(idle, stop)? else {
            timed_out = !stop.load(Ordering::Relaxed);
            break;
        };
        pacer.frame_delivered(info.requested_at);
        if let Some((stage, out)) = encode.as_mut() {
            let layout = info.layout;
            let (encoded, times) = cap.with_pixels(|data, stride| {
                let layout = crate::frame::FrameLayout { stride, ..layout };
                stage.process(data, &layout, info.y_invert, &info.damage, info.ready_at, false)
            })??;
            std::io::Write::write_all(out, &encoded.data).context("cannot write the encoded stream")?;
            encoded_bytes += encoded.data.len() as u64;
            convert_ms.push(metrics::ms(times.convert));
            encode_ms.push(metrics::ms(times.encode));
        }
        if let Some((out, buf)) = raw.as_mut() {
            let layout = info.layout;
            cap.with_pixels(|data, stride| {
                crate::frame::to_bgrx(data, &crate::frame::FrameLayout { stride, ..layout }, info.y_invert, buf)
            })?
            .context("cannot export the frame")?;
            match out.write_all(buf).and_then(|()| out.flush()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    tracing::info!("the raw-frame reader went away; stopping");
                    break;
                }
                Err(e) => return Err(e).context("cannot write raw frames"),
            }
        }
        let (w, h) = (info.layout.width, info.layout.height);
        let share = info.damage.fraction(w, h);
        if !a.json && !quiet {
            println!(
                "frame {:>4}: {w}x{h} {} latency {:6.2} ms damage {:5.1}%",
                info.seq,
                info.layout.format,
                metrics::ms(info.latency()),
                share * 100.0
            );
        }
        if sizes.last() != Some(&[w, h]) {
            sizes.push([w, h]);
        }
        latencies.push(metrics::ms(info.latency()));
        ages.extend(info.age.map(metrics::ms));
        damage.push(share);
        first_at.get_or_insert(info.ready_at);
        last = Some(info);
    }
    let Some(last) = last else {
        if stop.load(Ordering::Relaxed) {
            return Ok(ExitCode::from(130));
        }
        anyhow::bail!("no frame arrived within {:.1} s", a.idle_timeout);
    };
    if let Some(path) = &a.png {
        let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let layout = last.layout;
        cap.with_pixels(|data, stride| {
            let layout = crate::frame::FrameLayout { stride, ..layout };
            write_png(std::io::BufWriter::new(file), data, &layout, last.y_invert)
        })?
        .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some((_, out)) = encode.as_mut() {
        std::io::Write::flush(out).context("cannot write the encoded stream")?;
    }
    let frames = latencies.len() as u64;
    let span = first_at.map(|f| last.ready_at.saturating_duration_since(f)).unwrap_or_default();
    let counters = cap.counters();
    let report = CaptureReport {
        output: cap.output().name.clone(),
        source: cap.source().name(),
        buffer: cap.buffer_kind(),
        frames,
        width: last.layout.width,
        height: last.layout.height,
        format: last.layout.format.to_string(),
        y_invert: last.y_invert,
        fps: metrics::fps(frames, span),
        latency_ms_p50: metrics::percentile(&latencies, 50.0),
        latency_ms_p95: metrics::percentile(&latencies, 95.0),
        latency_ms_max: metrics::percentile(&latencies, 100.0),
        age_ms_p50: metrics::percentile(&ages, 50.0),
        damage_mean: damage.iter().sum::<f64>() / damage.len().max(1) as f64,
        sizes,
        buffer_allocations: counters.buffer_allocations,
        failed_frames: counters.failed_frames,
        encoded_frames: encode_ms.len() as u64,
        encoded_bytes,
        encoded_kbps: (!encode_ms.is_empty() && !span.is_zero())
            .then(|| encoded_bytes as f64 * 8.0 / 1000.0 / span.as_secs_f64()),
        convert_ms_p50: metrics::percentile(&convert_ms, 50.0),
        encode_ms_p50: metrics::percentile(&encode_ms, 50.0),
        timed_out,
        png: a.png.clone(),
        cursor: cap.cursor().cloned(),
    };
    if a.json && !quiet {
        println!("{}", serde_json::to_string(&report)?);
    } else if a.json {
        eprintln!("{}", serde_json::to_string(&report)?);
    } else {
        let summary = format!(
            "{} frames of {} ({}x{} {}) in {:.2} s: {:.1} fps, latency p50 {:.2} ms p95 {:.2} ms, mean damage {:.1}%{}",
            report.frames,
            report.output,
            report.width,
            report.height,
            report.format,
            span.as_secs_f64(),
            report.fps,
            report.latency_ms_p50.unwrap_or(0.0),
            report.latency_ms_p95.unwrap_or(0.0),
            report.damage_mean * 100.0,
            if timed_out { " (stopped: no new frame within --idle-timeout)" } else { "" }
        );
        if quiet {
            eprintln!("{summary}");
        } else {
            println!("{summary}");
        }
    }
    drop(cap);
    drop(desk);
    Ok(ExitCode::SUCCESS)
}

/// The main job: serve the viewer page and signaling, and stream the desktop to every viewer.
fn start(cfg: &Config, a: &StartArgs, stop: &Arc<AtomicBool>) -> anyhow::Result<ExitCode> {
    let mut desk = Desktop::open(cfg, &a.child)?;
    // Open capture here so that a wrong output or a missing protocol fails before we serve anything.
    let cap = open_capture(cfg, &desk.socket)?;
    let output = cap.output().name.clone();
    let token: Option<Arc<str>> = cfg
        .server
        .auth_required()
        .then(|| Arc::from(cfg.server.token.clone().unwrap_or_else(crate::signaling::auth::generate_token).as_str()));
    let transport = crate::transport::webrtc::TransportConfig {
        udp_addrs: cfg.server.media_udp_addrs(),
        ice_servers: cfg.server.ice_servers.clone(),
        nat_1to1_ip: cfg.server.nat_1to1_ip,
        codec: cfg.encoder.codec,
    };
    let hub = crate::server::Hub::new(cfg, transport, Arc::clone(stop));
    hub.set_output(&output);
    if token.is_none() && cfg.input.allow {
        tracing::warn!(
            "--no-auth with --allow-input: every local user and program that reaches {} can drive this desktop",
            cfg.server.listen
        );
    }
    // Remote control: its own thread and Wayland connection (see input::inject for why).
    let injector = if cfg.input.allow {
        // A layout xkbcommon cannot compile fails now, not at the first key.
        crate::input::keymap::Keyboard::new(&cfg.input.layout, &cfg.input.variant)
            .context("--allow-input: the [input] layout")?;
        let icfg = crate::input::inject::InjectorConfig {
            socket: desk.socket.clone(),
            // A PipeWire node is not a Wayland output: inject on --output (or the first output) then.
            output: if cap.source() == crate::capture::ResolvedSource::Pipewire {
                cfg.output.clone()
            } else {
                Some(output.clone())
            },
            layout: cfg.input.layout.clone(),
            variant: cfg.input.variant.clone(),
        };
        let (sender, thread) = crate::input::inject::spawn(icfg, hub.input_counters(), Arc::clone(stop))?;
        hub.set_input(sender);
        if !cfg.server.listen.ip().is_loopback() && !cfg.server.auth_required() {
            tracing::warn!(
                "input is allowed on a non-loopback address without a token: anyone who reaches it can type"
            );
        }
        tracing::info!(layout = %cfg.input.layout, "remote control on: viewers may use mouse and keyboard");
        // The clipboard both ways goes with input: its own thread and connection (input::clipboard).
        let clip_hub = Arc::clone(&hub);
        let (clipboard, clip_thread) = crate::input::clipboard::spawn(
            desk.socket.clone(),
            move |text| clip_hub.clipboard_changed(&text),
            Arc::clone(stop),
        )?;
        hub.set_clipboard(clipboard);
        Some((thread, clip_thread))
    } else {
        None
    };
    let tls = if cfg.server.tls_enabled() {
        let owner = cfg.server.tls_cert.as_deref().zip(cfg.server.tls_key.as_deref());
        let dir = crate::config::xdg_file("XDG_STATE_HOME", ".local/state", "tls")
            .context("HTTPS needs $XDG_STATE_HOME or $HOME for its certificate (or pass --tls-cert/--tls-key)")?;
        let mut names = cfg.server.allow_hosts.clone();
        if !cfg.server.listen.ip().is_unspecified() {
            names.push(cfg.server.listen.ip().to_string());
        }
        Some(crate::signaling::tls::identity(owner, &dir, &names).context("HTTPS")?)
    } else {
        None
    };
    let limits = crate::signaling::listen::Limits::for_fd_limit(crate::signaling::listen::raise_fd_limit());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let listener = rt
        .block_on(async { crate::signaling::listen::bind(cfg.server.listen) })
        .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    let query = token.as_ref().map(|t| format!("?token={t}")).unwrap_or_default();
    let url = format!("{}://{addr}/{query}", if tls.is_some() { "https" } else { "http" });
    {
        // Whoever reads these lines may stop reading (a closed pipe is not an error of ours).
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "wl-webrtc: streaming {output} at {url}");
        if let Some(id) = &tls {
            let what = if id.self_signed { "self-signed, kept in" } else { "from" };
            let _ = writeln!(
                out,
                "wl-webrtc: HTTPS certificate SHA-256 {} ({what} {})",
                id.fingerprint,
                id.cert_path.display()
            );
        }
        let _ = out.flush();
    }
    tracing::info!(%addr, %output, auth = token.is_some(), tls = tls.is_some(), max_connections = limits.max_connections, "serving");
    let instance = crate::signaling::instance::Instance {
        pid: std::process::id(),
        url,
        token: token.as_deref().map(str::to_owned),
        fingerprint: tls.as_ref().map(|t| t.fingerprint.clone()),
    };
    let _instance_file = crate::signaling::instance::InstanceFile::write(addr.port(), &instance).unwrap_or_else(|e| {
        tracing::warn!("cannot write the instance file for `wl-webrtc status`/`stop`: {e}");
        None
    });

    // Capture thread (Wayland, convert) → latest-picture slot → media thread (encode, publish).
    let pipe = Arc::new(crate::media::PictureSlot::default());
    let media = {
        let (cfg, hub, pipe) = (cfg.clone(), Arc::clone(&hub), Arc::clone(&pipe));
        let (socket, headless) = (desk.socket.clone(), desk.headless.is_some());
        let reopen = move |cfg: &Config| open_capture(cfg, &socket);
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || media_loop(cap, &reopen, headless, &cfg, &hub, &pipe))?
    };
    let encoder_thread = {
        let (cfg, hub, pipe) = (cfg.clone(), Arc::clone(&hub), Arc::clone(&pipe));
        std::thread::Builder::new().name("media".into()).spawn(move || encode_loop(&cfg, &hub, &pipe))?
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let policy = crate::signaling::auth::Policy {
        token,
        allow_hosts: cfg.server.allow_hosts.clone(),
        allow_origins: cfg.server.allow_origins.clone(),
    };
    let state = crate::signaling::http::AppState::new(Arc::clone(&hub), policy, tls.is_some(), shutdown_rx);
    let router = crate::signaling::http::router(state);
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(crate::signaling::listen::serve(
        listener,
        router,
        tls.map(|t| t.config),
        limits,
        Arc::new(crate::signaling::listen::ConnCounters::default()),
        async move {
            let _ = ended_rx.await;
        },
    ));
    // Watch for the end: a signal, the media thread ending (capture error), or the desktop ending.
    let why = rt.block_on(async {
        loop {
            if stop.load(Ordering::Relaxed) {
                return "signal".to_owned();
            }
            if media.is_finished() {
                return "capture ended".to_owned();
            }
            if let Some(why) = desk.ended() {
                return why;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tracing::info!("shutting down: {why}");
    let _ = shutdown_tx.send(true);
    hub.remove_all();
    rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = ended_tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
    });
    stop.store(true, Ordering::Relaxed);
    let media_result = media.join().map_err(|_| anyhow::anyhow!("the capture thread panicked"))?;
    encoder_thread.join().map_err(|_| anyhow::anyhow!("the media thread panicked"))?;
    if let Some((t, clip)) = injector {
        t.join().map_err(|_| anyhow::anyhow!("the input thread panicked"))?;
        clip.join().map_err(|_| anyhow::anyhow!("the clipboard thread panicked"))?;
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    drop(desk);
    media_result?;
    Ok(ExitCode::SUCCESS)
}

/// How often a lost capture (compositor or output gone) is retried.
const CAPTURE_RETRY: Duration = Duration::from_secs(1);

/// Capture → convert → encode → publish, while anyone watches. Returns on stop; on a capture error it returns
/// only for a private headless desktop (whose compositor dying ends the program); otherwise the server keeps
/// running, reports the loss in its status and reconnects when the compositor (and output) are back.
fn media_loop(
    cap: Capture,
    reopen: &dyn Fn(&Config) -> anyhow::Result<Capture>,
    headless: bool,
    cfg: &Config,
    hub: &crate::server::Hub,
    pipe: &crate::media::PictureSlot,
) -> anyhow::Result<()> {
    let mut cap = Some(cap);
    let mut last_try = Instant::now();
    let stop = hub.stop_flag();
    while !stop.load(Ordering::Relaxed) {
        let step = match cap.as_mut() {
            Some(c) => media_run(c, cfg, hub, pipe),
            None => {
                if last_try.elapsed() >= CAPTURE_RETRY {
                    last_try = Instant::now();
                    match reopen(cfg) {
                        Ok(c) => {
                            tracing::info!("capture is back");
                            hub.set_capture_state("ok");
                            hub.source_reset();
                            cap = Some(c);
                        }
                        Err(e) => hub.set_capture_state(format!("lost: {e:#}")),
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        match step {
            Ok(()) => return Ok(()),
            Err(e) if headless => return Err(e),
            Err(e) => {
                tracing::warn!("capture lost: {e:#}; the server keeps running and retries every second");
                hub.set_capture_state(format!("lost: {e:#}"));
                cap = None;
                last_try = Instant::now();
            }
        }
    }
    Ok(())
}

/// The streaming loop over one capture; returns Ok on stop, Err when capture fails.
fn media_run(
    cap: &mut Capture,
    cfg: &Config,
    hub: &crate::server::Hub,
    pipe: &crate::media::PictureSlot,
) -> anyhow::Result<()> {
    let mut stage = crate::media::ConvertStage::new(cfg.convert);
    tracing::info!(converter = stage.converter_name(), "colour conversion");
    // A rotated output hands out its framebuffer in the panel's orientation: stream it upright (the viewer's
    // pointer then maps onto the output's logical, upright, coordinates as it is).
    stage.set_rotation(crate::frame::Rotation::for_output_transform(&cap.output().transform));
    let stop = hub.stop_flag();
    let mut frame_size = (0, 0);
    let mut cursor_messages = crate::cursor::CursorMessages::default();
    while !stop.load(Ordering::Relaxed) {
        // The core decides; this thread only sleeps (≤ 50 ms at a time, so a stop is seen) or captures.
        let now = Instant::now();
        match hub.poll_capture(now) {
            CaptureStep::Idle => {
                cap.check_alive()?;
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            CaptureStep::WaitUntil(t) => {
                std::thread::sleep(t.saturating_duration_since(now).min(Duration::from_millis(50)));
                continue;
            }
            CaptureStep::Capture => {}
        }
        let frame = cap.next_frame(Duration::from_millis(100), stop)?;
        if let Some(info) = &frame {
            frame_size = (info.layout.width, info.layout.height);
        }
        if let Some(cursor) = cap.cursor() {
            hub.update_cursor(cursor_messages.update(cursor, frame_size.0, frame_size.1));
        }
        let Some(info) = frame else { continue };
        hub.frame_captured(info.requested_at);
        let layout = info.layout;
        let mut pic = pipe.spare();
        // The buffer itself reaches the converter, which reads it as it can (a dmabuf in place on the GPU).
        let converted = match cap.frame_buffer() {
            Some(buffer) => stage.convert_buffer(buffer, &layout, info.y_invert, &info.damage, &mut pic),
            None => cap.with_pixels(|data, stride| {
                let layout = crate::frame::FrameLayout { stride, ..layout };
                stage.convert_into(data, &layout, info.y_invert, &info.damage, &mut pic)
            })?,
        };
        let path = crate::server::MediaPath {
            buffers: cap.buffer_kind(),
            read: Some(stage.read_path()),
            converter: Some(stage.converter_name()),
        };
        hub.set_frame(layout.width, layout.height, path);
        hub.with_metrics(|m| {
            m.frames_captured += 1;
            m.observe("capture_wait", info.latency());
            if let Some(age) = info.age {
                m.observe("copy", age);
            }
            if let Ok(t) = &converted {
                m.observe("convert", *t);
            }
        });
        match converted {
            Ok(_) => {
                // Capture time = the compositor's presentation time, on our clock.
                let capture_ts = info.age.and_then(|a| info.ready_at.checked_sub(a)).unwrap_or(info.ready_at);
                pic.capture_ts = capture_ts;
                if pipe.offer(pic) {
                    hub.with_metrics(|m| m.frames_dropped += 1);
                }
            }
            Err(e) => {
                tracing::warn!("frame dropped: {e}");
                hub.with_metrics(|m| m.frames_dropped += 1);
                pipe.recycle(pic);
            }
        }
    }
    Ok(())
}

/// The media thread: take the newest picture and, for every codec someone watches (H.264 first), encode it as
/// that codec's core plans (IDR or not, bitrate) and publish it; a codec nobody watches has its encoder closed.
/// On a static screen a keyframe that is due is, as the core decides, the codec's last keyframe again (nothing
/// followed it) or the last picture encoded as a keyframe.
fn encode_loop(cfg: &Config, hub: &crate::server::Hub, pipe: &crate::media::PictureSlot) {
    let mut codecs: Vec<CodecStream> = Codec::ALL.iter().map(|&c| CodecStream::new(cfg, c)).collect();
    let (mut window_start, mut window_frames, mut window_bytes) = (Instant::now(), 0u64, 0u64);
    let mut last_picture: Option<crate::media::Picture> = None;
    while !hub.stop_flag().load(Ordering::Relaxed) {
        let picture = pipe.take(Duration::from_millis(100));
        // A picture counts once towards the frame rate, however many codecs encoded it.
        let mut published = false;
        for stream in &mut codecs {
            let codec = stream.stage.codec();
            if !hub.watched(codec) {
                if stream.stage.close() {
                    tracing::info!("closed the {} encoder: nobody watches {codec}", codec.encoder_name());
                    hub.encoder_state(codec, None);
                }
                stream.last_published = None;
                continue;
            }
            // Which encoder is open, if any (None: closed).
            let was_backend = stream.stage.backend();
            let encoded = match &picture {
                Some(pic) => {
                    let ceiling = stream.stage.ceiling_kbps(pic.nv12.width, pic.nv12.height);
                    let plan = hub.plan_encode(codec, Instant::now(), ceiling);
                    stream.stage.set_bitrate(plan.bitrate_kbps);
                    stream.stage.encode(&pic.nv12, pic.capture_ts, plan.idr).map(|(frame, t)| {
                        hub.with_metrics(|m| m.observe("encode", t));
                        frame
                    })
                }
                None => match (hub.poll_refresh(codec, Instant::now(), last_picture.is_some()), &stream.last_published)
                {
                    (Some(Refresh::ResendLastIdr), Some(f)) if f.idr => {
                        hub.publish(EncodedFrame { capture_ts: Instant::now(), ..f.clone() });
                        hub.with_metrics(|m| m.keyframes_resent += 1);
                        continue;
                    }
                    (Some(_), _) => match &last_picture {
                        Some(p) => stream.stage.encode(&p.nv12, Instant::now(), true).map(|(f, _)| f),
                        None => continue,
                    },
                    _ => continue,
                },
            };
            if stream.stage.backend() != was_backend {
                hub.encoder_state(codec, stream.stage.backend());
            }
            match encoded {
                Ok(frame) => {
                    published = true;
                    window_bytes += frame.data.len() as u64;
                    hub.with_metrics(|m| {
                        m.frames_encoded += 1;
                        m.keyframes += u64::from(frame.idr);
                        m.bytes_sent += frame.data.len() as u64;
                        let c = &mut m.codecs[codec.index()];
                        c.frames_encoded += 1;
                        c.keyframes += u64::from(frame.idr);
                        c.bytes += frame.data.len() as u64;
                    });
                    stream.last_published = Some(frame.clone());
                    hub.publish(frame);
                }
                Err(e) => {
                    tracing::warn!("{codec} frame dropped: {e}");
                    hub.with_metrics(|m| m.frames_dropped += 1);
                    hub.encoder_state(codec, stream.stage.backend());
                }
            }
        }
        window_frames += u64::from(published);
        if let Some(pic) = picture
            && let Some(old) = last_picture.replace(pic)
        {
            pipe.recycle(old);
        }
        let secs = window_start.elapsed().as_secs_f64();
        if secs >= 1.0 {
            hub.set_rates(window_frames as f64 / secs, window_bytes as f64 * 8.0 / 1000.0 / secs);
            (window_start, window_frames, window_bytes) = (Instant::now(), 0, 0);
        }
    }
}

/// One codec's encoder on the media thread and the last frame it published (a static screen's refresh).
struct CodecStream {
    stage: crate::media::EncodeStage,
    last_published: Option<EncodedFrame>,
}

impl CodecStream {
    fn new(cfg: &Config, codec: Codec) -> CodecStream {
        CodecStream { stage: crate::media::EncodeStage::new(cfg, codec), last_published: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_without_headless_is_refused() {
        let cfg = Config::default();
        let err = Desktop::open(&cfg, &["foot".into()]).expect_err("refused");
        assert!(err.to_string().contains("--headless"), "{err}");
    }
}

//! The command line: flags exactly as clap parses them, and [`GlobalArgs::resolve`], which lays them over the
//! config file into one validated `Config`. The only layer that knows clap's structs; the choices (`--source`,
//! `--cursor`, `--convert`) are the config's own enums, which derive `ValueEnum`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{
    Config, ConfigError, CursorMode, FileConfig, HeadlessMode, SourceKind, invalid, parse_host_name, parse_listen,
    parse_origin,
};
use crate::convert::ConvertChoice;
use crate::encode::CodecChoice;

/// Stream a Wayland desktop to any browser over WebRTC.
#[derive(Debug, Parser)]
#[command(name = "wl-webrtc", version, about, long_about = None, propagate_version = true)]
#[command(args_conflicts_with_subcommands = false, subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// With --headless: the program (and its arguments) to run inside the private desktop.
    #[arg(last = true, value_name = "CMD")]
    pub child: Vec<String>,
}

/// Flags accepted before or after any subcommand.
#[derive(Debug, Args, Default, Clone)]
pub struct GlobalArgs {
    /// Config file (TOML). Default: $XDG_CONFIG_HOME/wl-webrtc/config.toml when it exists.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Output (monitor) to capture, by name, e.g. DP-1 or HEADLESS-1. Default: the first output.
    #[arg(long, global = true, value_name = "NAME")]
    pub output: Option<String>,

    /// Capture source: auto = ext-image-copy if offered, else screencopy, else pipewire.
    #[arg(long, global = true, value_enum)]
    pub source: Option<SourceKind>,

    /// Capture this PipeWire video node (its id, or node.name/serial) directly, without the portal.
    /// Implies --source pipewire.
    #[arg(long, global = true, value_name = "ID|NAME")]
    pub pipewire_node: Option<String>,

    /// Pointer cursor: painted into frames (embedded), sent separately as position + hotspot + image
    /// (metadata; ext-image-copy only), or left out (hidden).
    #[arg(long, global = true, value_enum)]
    pub cursor: Option<CursorMode>,

    /// RGB→NV12 converter: auto (Vulkan on a hardware GPU, else CPU SIMD), cpu, or vulkan (any Vulkan device,
    /// software included; CPU if there is none).
    #[arg(long, global = true, value_enum)]
    pub convert: Option<ConvertChoice>,

    /// Frame-rate cap (frames per second).
    #[arg(long, global = true, value_name = "N")]
    pub fps: Option<u32>,

    /// Log filter: a level (error, warn, info, debug, trace) or a tracing env-filter directive.
    /// RUST_LOG, when set, wins over this.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Video codec: auto (per viewer: H.264 when its browser offers it, else VP8), h264, or vp8.
    #[arg(long, global = true, value_enum)]
    pub codec: Option<CodecChoice>,

    /// H.264 encoder: auto (VA-API hardware when a render node can encode H.264, else x264), x264, or vaapi
    /// (exit when no device can).
    #[arg(long, global = true, value_enum)]
    pub encoder: Option<crate::encode::EncoderBackend>,

    /// The render node VA-API encodes on (default: the first /dev/dri/renderD* that can encode H.264).
    #[arg(long, global = true, value_name = "PATH")]
    pub vaapi_device: Option<PathBuf>,

    /// Encoder target bitrate in kbit/s (0 = automatic for the size and frame rate).
    #[arg(long, global = true, value_name = "KBPS")]
    pub bitrate: Option<u32>,

    /// HTTP address for the viewer page, signaling and API (HOST:PORT). Beyond loopback it speaks HTTPS.
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Access token viewers must present (default: a new random one at every start, printed in the URL).
    #[arg(long, global = true, value_name = "TOKEN", env = "WL_WEBRTC_TOKEN")]
    pub token: Option<String>,

    /// Serve without a token: anyone who can reach the address can watch (refused with --allow-input
    /// beyond loopback).
    #[arg(long, global = true)]
    pub no_auth: bool,

    /// Let pages from this origin (https://host[:port]) use the signaling endpoints too, e.g. a WHEP player
    /// hosted elsewhere. Repeatable. The server's own origin always may; other web pages may not.
    #[arg(long, global = true, value_name = "URL")]
    pub allow_origin: Vec<String>,

    /// A host name the server may be addressed as (besides IP addresses and localhost). Repeatable.
    #[arg(long, global = true, value_name = "NAME")]
    pub allow_host: Vec<String>,

    /// Serve plain HTTP beyond loopback (an on-path attacker can then watch and drive).
    #[arg(long, global = true)]
    pub no_tls: bool,

    /// Certificate chain (PEM) for HTTPS; default beyond loopback: a generated self-signed one.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, global = true, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Start a private headless desktop of this size (WxH or WxH@HZ; several outputs side by side:
    /// WxH,WxH@HZ,…) and stream it instead of the current session. The program after `--` runs inside it; everything is torn down on exit.
    #[arg(long, global = true, value_name = "WxH[@HZ]")]
    pub headless: Option<String>,

    /// Let viewers control the desktop (mouse, wheel, keyboard over the `input` data channel). Off by
    /// default: without it viewers can only watch, and their input messages are dropped.
    #[arg(long, global = true)]
    pub allow_input: bool,
}

impl GlobalArgs {
    /// Defaults ← config file (explicit `--config`, else the default path if it exists) ← these flags,
    /// validated.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let file = crate::config::read_config_file(self.config.as_deref())?;
        self.over(file.as_ref())
    }

    /// Defaults ← `file` ← these flags, validated.
    fn over(&self, file: Option<&FileConfig>) -> Result<Config, ConfigError> {
        let args = self;
        let mut cfg = Config::from_file(file)?;
        if let Some(o) = &args.output {
            cfg.output = Some(o.clone());
        }
        if let Some(s) = args.source {
            cfg.source = s;
        }
        if let Some(n) = &args.pipewire_node {
            cfg.pipewire_node = Some(n.clone());
            // A node is a PipeWire source, whatever `source` said in the file.
            if args.source.is_none() {
                cfg.source = SourceKind::Pipewire;
            }
        }
        if let Some(c) = args.cursor {
            cfg.cursor = c;
        }
        if let Some(c) = args.convert {
            cfg.convert = c;
        }
        if let Some(fps) = args.fps {
            cfg.fps = fps;
        }
        match (args.log_level.as_ref(), args.verbose) {
            (Some(l), _) => cfg.log_filter = l.clone(),
            (None, 1) => cfg.log_filter = "debug".to_owned(),
            (None, n) if n >= 2 => cfg.log_filter = "trace".to_owned(),
            _ => {}
        }
        if let Some(c) = args.codec {
            cfg.encoder.codec = c;
        }
        if let Some(b) = args.encoder {
            cfg.encoder.backend = b;
        }
        if let Some(d) = &args.vaapi_device {
            cfg.encoder.vaapi_device = Some(d.clone());
        }
        if let Some(b) = args.bitrate {
            cfg.encoder.bitrate_kbps = (b != 0).then_some(b);
        }
        if let Some(l) = &args.listen {
            cfg.server.listen = parse_listen(l).map_err(|e| invalid("--listen", e))?;
        }
        if let Some(t) = &args.token {
            cfg.server.token = Some(t.clone());
        }
        if args.no_auth {
            cfg.server.no_auth = true;
        }
        for o in &args.allow_origin {
            cfg.server.allow_origins.push(parse_origin(o).map_err(|e| invalid("--allow-origin", e))?);
        }
        for h in &args.allow_host {
            cfg.server.allow_hosts.push(parse_host_name(h).map_err(|e| invalid("--allow-host", e))?);
        }
        if args.no_tls {
            cfg.server.no_tls = true;
        }
        if let (Some(c), Some(k)) = (&args.tls_cert, &args.tls_key) {
            (cfg.server.tls_cert, cfg.server.tls_key) = (Some(c.clone()), Some(k.clone()));
        }
        if let Some(h) = &args.headless {
            let mut modes = HeadlessMode::parse_list(h).map_err(|e| invalid("--headless", e))?;
            cfg.headless = Some(modes.remove(0));
            cfg.headless_extra = modes;
        }
        if args.allow_input {
            cfg.input.allow = true;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream the desktop: serve the viewer page, WebSocket and WHEP signaling, and send every viewer the
    /// live H.264 stream (the default command).
    Start(StartArgs),
    /// Show a running instance's sessions, viewers, fps, bitrate and stage latencies (found by --listen).
    Status(StatusArgs),
    /// Ask a running instance (found by --listen) to shut down gracefully.
    Stop,
    /// Capture N frames and report latency, frame rate and damage.
    Capture(CaptureArgs),
    /// List the outputs of the Wayland session.
    ListOutputs(ListOutputsArgs),
    /// List the encoders this machine has: x264 and libvpx (software), and VA-API hardware H.264 with the
    /// render node and driver, or the reason there is none.
    ListEncoders(ListEncodersArgs),
    /// Print configuration.
    Config(ConfigArgs),
    /// Print the man page (roff) or shell completions.
    Generate(GenerateArgs),
    /// Time the media stages on this machine (synthetic desktop frames): `convert` compares CPU SIMD with
    /// Vulkan (per stage), `encode` times x264.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which stage.
    #[arg(value_enum)]
    pub what: BenchWhat,
    /// Frame size (default: both 1920x1080 and 3840x2160).
    #[arg(long, value_name = "WxH")]
    pub size: Option<String>,
    /// Frames to time per case.
    #[arg(long, default_value_t = 60)]
    pub frames: usize,
    /// Print a JSON array of rows.
    #[arg(long)]
    pub json: bool,
}

/// `bench` stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchWhat {
    /// RGB→NV12 conversion: CPU SIMD per pixel format, and Vulkan (upload, dispatch, readback) when a device exists.
    Convert,
    /// x264 encode of converted frames.
    Encode,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: Generated,
}

#[derive(Debug, Subcommand)]
pub enum Generated {
    /// The man page, in roff: `wl-webrtc generate man > wl-webrtc.1`.
    Man,
    /// Completions for a shell: `wl-webrtc generate completions bash > /etc/bash_completion.d/wl-webrtc`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args, Default)]
pub struct StartArgs {
    /// With --headless: the program (and its arguments) to run inside the private desktop.
    #[arg(last = true, value_name = "CMD")]
    pub child: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Number of frames to capture (0: until stopped, the compositor goes away or --idle-timeout passes).
    #[arg(long, default_value_t = 60, value_name = "N")]
    pub frames: u64,

    /// Write every frame, as it arrives, as raw BGRx (XRGB8888 little-endian, rows top-down, no padding) to
    /// FILE, or to stdout with `-` (then the text report goes to stderr). A reader that goes away ends the
    /// capture normally. This is how other programs (the GStreamer peer of `bench e2e`) get our frames.
    #[arg(long, value_name = "FILE")]
    pub raw: Option<PathBuf>,

    /// Save the last frame as PNG.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,

    /// Print one JSON object with the results instead of text.
    #[arg(long)]
    pub json: bool,

    /// Convert and encode every frame with x264 and write the H.264 elementary stream (Annex-B) to FILE.
    #[arg(long, value_name = "FILE.h264")]
    pub encode: Option<PathBuf>,

    /// Stop waiting when no new frame (no damage) arrives for this many seconds.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub idle_timeout: f64,

    /// With --headless: the program (and its arguments) to run inside the private desktop.
    #[arg(last = true, value_name = "CMD")]
    pub child: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status document as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListOutputsArgs {
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListEncodersArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print the commented default configuration file.
    #[arg(long, conflicts_with = "print")]
    pub print_default: bool,
    /// Print the effective configuration (file + flags) as TOML.
    #[arg(long)]
    pub print: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn headless_child_after_double_dash() {
        let cli =
            Cli::try_parse_from(["wl-webrtc", "--headless", "1280x720", "--", "foot", "-e", "top"]).expect("parse");
        assert_eq!(cli.global.headless.as_deref(), Some("1280x720"));
        assert_eq!(cli.child, ["foot", "-e", "top"]);
        assert!(cli.command.is_none());
    }

    #[test]
    fn global_flags_after_subcommand() {
        let cli = Cli::try_parse_from(["wl-webrtc", "capture", "--frames", "3", "--output", "DP-1", "--", "foot"])
            .expect("parse");
        assert_eq!(cli.global.output.as_deref(), Some("DP-1"));
        match cli.command {
            Some(Command::Capture(c)) => {
                assert_eq!(c.frames, 3);
                assert_eq!(c.child, ["foot"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn pipewire_node_implies_the_pipewire_source() {
        let args = GlobalArgs { pipewire_node: Some("42".into()), ..GlobalArgs::default() };
        let cfg = args.over(None).expect("node");
        assert_eq!((cfg.source, cfg.pipewire_node.as_deref()), (SourceKind::Pipewire, Some("42")));
        assert_eq!(Config::from_toml(&cfg.to_toml()).expect("round trip"), cfg);
        let cfg = Config::from_toml("pipewire_node = \"cam\"\nsource = \"pipewire\"").expect("file");
        assert_eq!(cfg.pipewire_node.as_deref(), Some("cam"));
        let err = Config::from_toml("pipewire_node = \"cam\"\nsource = \"screencopy\"").expect_err("conflict");
        assert!(err.to_string().contains("--source pipewire"), "{err}");
    }

    #[test]
    fn flags_override_file() {
        let file = crate::config::parse_file(
            "output = \"A\"\nfps = 30\nsource = \"pipewire\"\nconvert = \"cpu\"\n",
            std::path::Path::new("t"),
        )
        .expect("parse");
        let args = GlobalArgs { output: Some("B".into()), verbose: 1, ..Default::default() };
        assert_eq!(GlobalArgs::default().over(Some(&file)).expect("file only").convert, ConvertChoice::Cpu);
        let flag = GlobalArgs { convert: Some(ConvertChoice::Vulkan), ..Default::default() };
        assert_eq!(flag.over(Some(&file)).expect("flag wins").convert, ConvertChoice::Vulkan);
        let cfg = args.over(Some(&file)).expect("resolve");
        assert_eq!(cfg.output.as_deref(), Some("B"));
        assert_eq!(cfg.fps, 30);
        assert_eq!(cfg.source, SourceKind::Pipewire);
        assert_eq!(cfg.log_filter, "debug");
    }

    #[test]
    fn input_is_off_unless_allowed() {
        assert!(!Config::default().input.allow);
        let file = crate::config::parse_file("[input]\nlayout = \"fr\"\n", std::path::Path::new("t")).expect("parse");
        let cfg = GlobalArgs::default().over(Some(&file)).expect("resolve");
        assert!(!cfg.input.allow);
        assert_eq!(cfg.input.layout, "fr");
        let args = GlobalArgs { allow_input: true, ..Default::default() };
        assert!(args.over(Some(&file)).expect("resolve").input.allow);
        assert!(Config::from_toml("[input]\nallow = true").expect("parse").input.allow);
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let args = GlobalArgs { config: Some("/nonexistent/wl-webrtc.toml".into()), ..Default::default() };
        let err = args.resolve().expect_err("missing file");
        assert!(err.to_string().contains("/nonexistent/wl-webrtc.toml"), "{err}");
    }

    #[test]
    fn bad_flag_values_are_named() {
        let args = GlobalArgs { headless: Some("big".into()), ..Default::default() };
        let err = args.over(None).expect_err("bad mode");
        assert!(err.to_string().contains("--headless"), "{err}");
    }

    #[test]
    fn wrong_flag_is_an_error() {
        assert!(Cli::try_parse_from(["wl-webrtc", "--source", "x11"]).is_err());
        assert!(Cli::try_parse_from(["wl-webrtc", "--frobnicate"]).is_err());
    }
}

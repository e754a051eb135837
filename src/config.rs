//! The one validated `Config`: defaults, then the TOML file, then command-line flags, resolved once.
//!
//! Every later stage reads `Config` and never looks at raw flags or the file again. Validation errors name
//! the offending key or flag and say what is accepted.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::convert::ConvertChoice;
use crate::encode::{CodecChoice, EncoderBackend, EncoderSettings, Profile, RateControl};

/// The commented default configuration file (also printed by `wl-webrtc config --print-default`).
pub const DEFAULT_CONFIG_TEMPLATE: &str = include_str!("../config.toml.template");

/// Log filter used when neither flags, the file nor RUST_LOG say otherwise.
pub(crate) const DEFAULT_LOG_FILTER: &str =
    "info,rtc=warn,rtc_ice=warn,rtc_dtls=warn,rtc_sctp=warn,rtc_sctp::endpoint=error,rtc_srtp=warn,webrtc=warn";

/// Unprivileged account the private compositor runs as when wl-webrtc runs as root.
pub const DEFAULT_HEADLESS_USER: &str = "wlwebrtc";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{what}: {msg}")]
    Invalid { what: String, msg: String },
}

/// `what` (a key or flag) has a bad value.
pub fn invalid(what: &str, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { what: what.to_owned(), msg: msg.into() }
}

/// Capture source selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// ext-image-copy-capture if offered, else wlr-screencopy, else PipeWire.
    #[default]
    Auto,
    Screencopy,
    ExtImageCopy,
    Pipewire,
}

/// What happens to the pointer cursor (`--cursor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CursorMode {
    /// Painted into the frames by the compositor.
    #[default]
    Embedded,
    /// Not in the frames; position, hotspot and image delivered separately (ext-image-copy cursor session;
    /// screencopy has no such thing and paints it in instead).
    Metadata,
    /// Neither painted nor reported.
    Hidden,
}

impl CursorMode {
    pub const fn name(self) -> &'static str {
        match self {
            CursorMode::Embedded => "embedded",
            CursorMode::Metadata => "metadata",
            CursorMode::Hidden => "hidden",
        }
    }
}

/// Size and refresh of a private headless desktop: `WxH` or `WxH@HZ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadlessMode {
    pub width: u32,
    pub height: u32,
    pub refresh_hz: u32,
}

impl HeadlessMode {
    pub(crate) const DEFAULT_REFRESH_HZ: u32 = 60;

    pub fn parse(s: &str) -> Result<HeadlessMode, String> {
        let (size, hz) = match s.split_once('@') {
            Some((size, hz)) => {
                let hz = hz.trim_end_matches("Hz").trim_end_matches("hz");
                let hz: u32 = hz.parse().map_err(|_| format!("refresh rate {hz:?} is not a whole number"))?;
                (size, hz)
            }
            None => (s, Self::DEFAULT_REFRESH_HZ),
        };
        let (w, h) = size.split_once(['x', 'X']).ok_or_else(|| format!("{s:?} is not WxH or WxH@HZ"))?;
        let width: u32 = w.parse().map_err(|_| format!("width {w:?} is not a number"))?;
        let height: u32 = h.parse().map_err(|_| format!("height {h:?} is not a number"))?;
        if !(64..=8192).contains(&width) || !(64..=8192).contains(&height) {
            return Err(format!("{width}x{height} is outside 64..=8192 in either dimension"));
        }
        if !(1..=240).contains(&hz) {
            return Err(format!("refresh {hz} Hz is outside 1..=240"));
        }
        Ok(HeadlessMode { width, height, refresh_hz: hz })
    }

    /// Several outputs: `WxH[@HZ],WxH[@HZ],…` (at most 8), placed side by side from the left.
    pub fn parse_list(s: &str) -> Result<Vec<HeadlessMode>, String> {
        let modes = s.split(',').map(|m| HeadlessMode::parse(m.trim())).collect::<Result<Vec<_>, _>>()?;
        if modes.len() > 8 {
            return Err(format!("{} outputs: at most 8", modes.len()));
        }
        Ok(modes)
    }
}

impl std::fmt::Display for HeadlessMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}@{}", self.width, self.height, self.refresh_hz)
    }
}

/// The config file as written (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    output: Option<String>,
    source: Option<SourceKind>,
    pipewire_node: Option<String>,
    cursor: Option<CursorMode>,
    convert: Option<ConvertChoice>,
    fps: Option<u32>,
    log_level: Option<String>,
    #[serde(default)]
    headless: FileHeadless,
    #[serde(default)]
    encoder: FileEncoder,
    #[serde(default)]
    server: FileServer,
    #[serde(default)]
    input: FileInput,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileInput {
    allow: Option<bool>,
    layout: Option<String>,
    variant: Option<String>,
}

/// Remote control (viewer input injected into the session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputConfig {
    /// Whether viewers may drive the desktop; off unless `--allow-input` or `[input] allow = true`.
    pub allow: bool,
    /// xkb layout of the virtual keyboard's keymap (e.g. "us", "de", "fr").
    pub layout: String,
    /// xkb variant ("" = the layout's default, e.g. "nodeadkeys", "dvorak").
    pub variant: String,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig { allow: false, layout: "us".to_owned(), variant: String::new() }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    listen: Option<String>,
    token: Option<String>,
    no_auth: Option<bool>,
    max_viewers: Option<usize>,
    ice_servers: Option<Vec<String>>,
    nat_1to1_ip: Option<String>,
    udp_addrs: Option<Vec<String>>,
    allow_origins: Option<Vec<String>>,
    allow_hosts: Option<Vec<String>>,
    no_tls: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// Default signaling address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// HTTP/WebRTC server configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
    /// Access token; `None` (and no `no_auth`) means "generate one at start and print it".
    pub token: Option<String>,
    /// Explicitly serve without a token (refused with input allowed beyond loopback).
    pub no_auth: bool,
    /// Origins (`scheme://host[:port]`, lowercase) besides the server's own whose pages may use the
    /// signaling endpoints (a WHEP player hosted elsewhere).
    pub allow_origins: Vec<String>,
    /// Host names (besides IP literals and `localhost`) the server may be addressed as.
    pub allow_hosts: Vec<String>,
    /// Serve plain HTTP beyond loopback (explicit opt-out of TLS).
    pub no_tls: bool,
    /// The owner's certificate chain and key (PEM); unset beyond loopback: a self-signed one.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub max_viewers: usize,
    /// STUN/TURN URLs for ICE.
    pub ice_servers: Vec<String>,
    /// Public IPv4/IPv6 to advertise for host candidates (1:1 NAT).
    pub nat_1to1_ip: Option<std::net::IpAddr>,
    /// UDP sockets for media; empty = automatic (127.0.0.1 when listening on loopback, else also 0.0.0.0).
    pub udp_addrs: Vec<std::net::SocketAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            no_auth: false,
            max_viewers: 8,
            ice_servers: Vec::new(),
            nat_1to1_ip: None,
            udp_addrs: Vec::new(),
            allow_origins: Vec::new(),
            allow_hosts: Vec::new(),
            no_tls: false,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl ServerConfig {
    /// Whether clients must present a token (always, unless `--no-auth`).
    pub fn auth_required(&self) -> bool {
        !self.no_auth
    }

    /// Whether the server speaks HTTPS: beyond loopback unless `--no-tls`, and whenever a certificate is given.
    pub fn tls_enabled(&self) -> bool {
        !self.no_tls && (self.tls_cert.is_some() || !self.listen.ip().is_loopback())
    }

    /// UDP addresses for ICE host candidates.
    pub fn media_udp_addrs(&self) -> Vec<std::net::SocketAddr> {
        if !self.udp_addrs.is_empty() {
            return self.udp_addrs.clone();
        }
        let mut v = vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))];
        if !self.listen.ip().is_loopback() {
            v.push(std::net::SocketAddr::new(self.listen.ip(), 0));
        }
        v
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEncoder {
    codec: Option<CodecChoice>,
    backend: Option<EncoderBackend>,
    vaapi_device: Option<PathBuf>,
    bitrate_kbps: Option<u32>,
    rate_control: Option<RateControl>,
    profile: Option<Profile>,
    threads: Option<u32>,
    intra_refresh: Option<bool>,
}

/// Encoder configuration (size and rate come from the capture).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EncoderConfig {
    /// Which codec viewers get (auto: per viewer, H.264 preferred).
    pub codec: CodecChoice,
    /// Which H.264 encoder: VA-API hardware, x264, or auto (resolved to one of them at start).
    pub backend: EncoderBackend,
    /// The render node VA-API encodes on; `None` = the first with an H.264 encode entrypoint.
    pub vaapi_device: Option<PathBuf>,
    /// Target bitrate; `None` = automatic for the size and rate.
    pub bitrate_kbps: Option<u32>,
    pub rate_control: RateControl,
    pub profile: Profile,
    /// Encoder threads; 0 = automatic.
    pub threads: u32,
    pub intra_refresh: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHeadless {
    mode: Option<String>,
    user: Option<String>,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Output to capture; `None` = the first one the compositor lists.
    pub output: Option<String>,
    pub source: SourceKind,
    /// A PipeWire video node (id or name) to capture directly, without the portal (`--pipewire-node`).
    pub pipewire_node: Option<String>,
    /// Pointer cursor: painted in, sent as metadata, or left out.
    pub cursor: CursorMode,
    /// RGB→NV12 converter.
    pub convert: ConvertChoice,
    /// Frame-rate cap.
    pub fps: u32,
    /// tracing env-filter directive.
    pub log_filter: String,
    /// Start a private headless desktop of this mode (its first output, HEADLESS-1).
    pub headless: Option<HeadlessMode>,
    /// Its further outputs (HEADLESS-2, …), to the right of the first.
    pub headless_extra: Vec<HeadlessMode>,
    /// Account the private compositor runs as when we are root.
    pub headless_user: String,
    pub encoder: EncoderConfig,
    pub server: ServerConfig,
    pub input: InputConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            output: None,
            source: SourceKind::Auto,
            pipewire_node: None,
            cursor: CursorMode::Embedded,
            convert: ConvertChoice::Auto,
            fps: 60,
            log_filter: DEFAULT_LOG_FILTER.to_owned(),
            headless: None,
            headless_extra: Vec::new(),
            headless_user: DEFAULT_HEADLESS_USER.to_owned(),
            encoder: EncoderConfig::default(),
            server: ServerConfig::default(),
            input: InputConfig::default(),
        }
    }
}

/// `$VAR/wl-webrtc/FILE`, or `~/HOME_DEFAULT/wl-webrtc/FILE` when the XDG base directory `var` is unset.
pub fn xdg_file(var: &str, home_default: &str, file: &str) -> Option<PathBuf> {
    let base = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(home_default)))?;
    Some(base.join("wl-webrtc").join(file))
}

/// Default config file location: `$XDG_CONFIG_HOME/wl-webrtc/config.toml` (or `~/.config/...`).
pub(crate) fn default_config_path() -> Option<PathBuf> {
    xdg_file("XDG_CONFIG_HOME", ".config", "config.toml")
}

impl Config {
    /// Parse a TOML string alone (flags absent); used for the template check and tests.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg = Config::from_file(Some(&parse_file(text, Path::new("<string>"))?))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Defaults ← `file`, not yet validated (flags may still change it: see `cli::GlobalArgs::resolve`).
    pub fn from_file(file: Option<&FileConfig>) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        if let Some(f) = file {
            if let Some(o) = &f.output {
                cfg.output = Some(o.clone());
            }
            if let Some(s) = f.source {
                cfg.source = s;
            }
            if let Some(n) = &f.pipewire_node {
                cfg.pipewire_node = Some(n.clone());
            }
            if let Some(c) = f.cursor {
                cfg.cursor = c;
            }
            if let Some(c) = f.convert {
                cfg.convert = c;
            }
            if let Some(fps) = f.fps {
                cfg.fps = fps;
            }
            if let Some(l) = &f.log_level {
                cfg.log_filter = l.clone();
            }
            if let Some(m) = &f.headless.mode {
                let mut modes = HeadlessMode::parse_list(m).map_err(|e| invalid("headless.mode", e))?;
                cfg.headless = Some(modes.remove(0));
                cfg.headless_extra = modes;
            }
            if let Some(u) = &f.headless.user {
                cfg.headless_user = u.clone();
            }
            let e = &f.encoder;
            cfg.encoder.codec = e.codec.unwrap_or_default();
            cfg.encoder.backend = e.backend.unwrap_or_default();
            cfg.encoder.vaapi_device = e.vaapi_device.clone().filter(|p| !p.as_os_str().is_empty());
            cfg.encoder.bitrate_kbps = e.bitrate_kbps.filter(|&b| b != 0);
            cfg.encoder.rate_control = e.rate_control.unwrap_or_default();
            cfg.encoder.profile = e.profile.unwrap_or_default();
            cfg.encoder.threads = e.threads.unwrap_or(0);
            cfg.encoder.intra_refresh = e.intra_refresh.unwrap_or(false);
            let sv = &f.server;
            if let Some(l) = &sv.listen {
                cfg.server.listen = parse_listen(l).map_err(|e| invalid("server.listen", e))?;
            }
            cfg.server.token = sv.token.clone().filter(|t| !t.is_empty());
            cfg.server.no_auth = sv.no_auth.unwrap_or(false);
            cfg.server.max_viewers = sv.max_viewers.unwrap_or(cfg.server.max_viewers);
            for o in sv.allow_origins.iter().flatten() {
                cfg.server.allow_origins.push(parse_origin(o).map_err(|e| invalid("server.allow_origins", e))?);
            }
            for h in sv.allow_hosts.iter().flatten() {
                cfg.server.allow_hosts.push(parse_host_name(h).map_err(|e| invalid("server.allow_hosts", e))?);
            }
            cfg.server.no_tls = sv.no_tls.unwrap_or(false);
            cfg.server.tls_cert = sv.tls_cert.clone();
            cfg.server.tls_key = sv.tls_key.clone();
            cfg.server.ice_servers = sv.ice_servers.clone().unwrap_or_default();
            if let Some(ip) = &sv.nat_1to1_ip {
                cfg.server.nat_1to1_ip = Some(
                    ip.parse().map_err(|_| invalid("server.nat_1to1_ip", format!("{ip:?} is not an IP address")))?,
                );
            }
            for a in sv.udp_addrs.iter().flatten() {
                let addr = a.parse().map_err(|_| invalid("server.udp_addrs", format!("{a:?} is not IP:PORT")))?;
                cfg.server.udp_addrs.push(addr);
            }
            let i = &f.input;
            cfg.input.allow = i.allow.unwrap_or(false);
            if let Some(l) = &i.layout {
                cfg.input.layout = l.clone();
            }
            if let Some(v) = &i.variant {
                cfg.input.variant = v.clone();
            }
        }
        Ok(cfg)
    }

    /// Check every value; the error names the key or flag.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=240).contains(&self.fps) {
            return Err(invalid("fps", format!("{} is outside 1..=240", self.fps)));
        }
        if matches!(&self.pipewire_node, Some(n) if n.trim().is_empty()) {
            return Err(invalid("pipewire_node", "must not be empty"));
        }
        if self.pipewire_node.is_some() && !matches!(self.source, SourceKind::Pipewire | SourceKind::Auto) {
            return Err(invalid("--pipewire-node", "needs --source pipewire (or auto)"));
        }
        if matches!(&self.output, Some(o) if o.trim().is_empty()) {
            return Err(invalid("output", "must not be empty"));
        }
        if matches!(self.encoder.bitrate_kbps, Some(b) if !(100..=500_000).contains(&b)) {
            return Err(invalid("bitrate", "must be 100..=500000 kbit/s (or 0 for automatic)"));
        }
        if self.encoder.threads > 64 {
            return Err(invalid("encoder.threads", "must be 0 (automatic) ..= 64"));
        }
        if self.server.max_viewers == 0 || self.server.max_viewers > 1000 {
            return Err(invalid("server.max_viewers", "must be 1..=1000"));
        }
        if matches!(&self.server.token, Some(t) if t.len() < 8 || t.contains(char::is_whitespace)) {
            return Err(invalid("token", "must be at least 8 characters without spaces"));
        }
        if self.server.no_auth && self.server.token.is_some() {
            return Err(invalid("--no-auth", "conflicts with a configured token"));
        }
        if self.server.no_auth && self.input.allow && !self.server.listen.ip().is_loopback() {
            return Err(invalid(
                "--no-auth",
                "refused with --allow-input on a non-loopback address: anyone who reaches it could type on this desktop",
            ));
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(invalid("--tls-cert", "--tls-cert and --tls-key go together"));
        }
        if self.server.no_tls && self.server.tls_cert.is_some() {
            return Err(invalid("--no-tls", "conflicts with --tls-cert"));
        }
        for url in &self.server.ice_servers {
            if !(url.starts_with("stun:") || url.starts_with("turn:") || url.starts_with("turns:")) {
                return Err(invalid("server.ice_servers", format!("{url:?} is not a stun:/turn:/turns: URL")));
            }
        }
        if self.input.layout.is_empty() || !valid_xkb_name(&self.input.layout) {
            return Err(invalid("input.layout", "must be an xkb layout name such as \"us\", \"de\" or \"us,de\""));
        }
        if !valid_xkb_name(&self.input.variant) {
            return Err(invalid("input.variant", "must be an xkb variant name such as \"nodeadkeys\" (or empty)"));
        }
        if self.headless_user.is_empty() {
            return Err(invalid("headless.user", "must not be empty"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_filter)
            .map_err(|e| invalid("log level", format!("{:?}: {e}", self.log_filter)))?;
        Ok(())
    }

    /// The effective configuration as TOML (same keys as the file).
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        if let Some(o) = &self.output {
            s += &format!("output = {}\n", toml_str(o));
        }
        if let Some(n) = &self.pipewire_node {
            s += &format!("pipewire_node = {}\n", toml_str(n));
        }
        let source = match self.source {
            SourceKind::Auto => "auto",
            SourceKind::Screencopy => "screencopy",
            SourceKind::ExtImageCopy => "ext-image-copy",
            SourceKind::Pipewire => "pipewire",
        };
        s += &format!(
            "source = \"{source}\"\ncursor = \"{}\"\nconvert = \"{}\"\nfps = {}\nlog_level = {}\n\n[headless]\n",
            self.cursor.name(),
            self.convert.name(),
            self.fps,
            toml_str(&self.log_filter)
        );
        if let Some(m) = &self.headless {
            let all: Vec<String> = std::iter::once(m).chain(&self.headless_extra).map(ToString::to_string).collect();
            s += &format!("mode = \"{}\"\n", all.join(","));
        }
        s += &format!("user = {}\n", toml_str(&self.headless_user));
        let e = &self.encoder;
        let sv = &self.server;
        s += &format!(
            "\n[server]\nlisten = \"{}\"\nno_auth = {}\nmax_viewers = {}\n",
            sv.listen, sv.no_auth, sv.max_viewers
        );
        if let Some(t) = &sv.token {
            s += &format!("token = {}\n", toml_str(t));
        }
        if !sv.ice_servers.is_empty() {
            let urls: Vec<String> = sv.ice_servers.iter().map(|u| toml_str(u)).collect();
            s += &format!("ice_servers = [{}]\n", urls.join(", "));
        }
        if let Some(ip) = sv.nat_1to1_ip {
            s += &format!("nat_1to1_ip = \"{ip}\"\n");
        }
        let list = |v: &[String]| v.iter().map(|x| toml_str(x)).collect::<Vec<_>>().join(", ");
        if !sv.allow_origins.is_empty() {
            s += &format!("allow_origins = [{}]\n", list(&sv.allow_origins));
        }
        if !sv.allow_hosts.is_empty() {
            s += &format!("allow_hosts = [{}]\n", list(&sv.allow_hosts));
        }
        s += &format!("no_tls = {}\n", sv.no_tls);
        for (k, v) in [("tls_cert", &sv.tls_cert), ("tls_key", &sv.tls_key)] {
            if let Some(p) = v {
                s += &format!("{k} = {}\n", toml_str(&p.to_string_lossy()));
            }
        }
        if !sv.udp_addrs.is_empty() {
            let a: Vec<String> = sv.udp_addrs.iter().map(|a| format!("\"{a}\"")).collect();
            s += &format!("udp_addrs = [{}]\n", a.join(", "));
        }
        s += &format!(
            "\n[encoder]\ncodec = \"{}\"\nbackend = \"{}\"\nbitrate_kbps = {}\nrate_control = {}\nprofile = {}\nthreads = {}\nintra_refresh = {}\n",
            e.codec.name(),
            e.backend.name(),
            e.bitrate_kbps.unwrap_or(0),
            enum_toml(&e.rate_control),
            enum_toml(&e.profile),
            e.threads,
            e.intra_refresh
        );
        if let Some(d) = &e.vaapi_device {
            s += &format!("vaapi_device = {}\n", toml_str(&d.to_string_lossy()));
        }
        let i = &self.input;
        s += &format!(
            "\n[input]\nallow = {}\nlayout = {}\nvariant = {}\n",
            i.allow,
            toml_str(&i.layout),
            toml_str(&i.variant)
        );
        s
    }

    /// Encoder settings for a capture of this size.
    pub fn encoder_settings(&self, width: u32, height: u32) -> EncoderSettings {
        let e = &self.encoder;
        EncoderSettings {
            width,
            height,
            fps: self.fps,
            bitrate_kbps: e.bitrate_kbps.unwrap_or_else(|| EncoderSettings::auto_bitrate_kbps(width, height, self.fps)),
            rate_control: e.rate_control,
            threads: e.threads,
            profile: e.profile,
            intra_refresh: e.intra_refresh,
        }
    }
}

/// `HOST:PORT`, `:PORT` or `PORT` (loopback when no host is given).
pub fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.trim_start_matches(':').parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| format!("{s:?} is not HOST:PORT (e.g. 127.0.0.1:8080 or 0.0.0.0:8080)"))
}

/// An origin for `--allow-origin`: `http(s)://host[:port]` (a trailing `/` is dropped), lowercased, as a
/// browser sends it in its `Origin` header.
pub fn parse_origin(s: &str) -> Result<String, String> {
    let o = s.trim().trim_end_matches('/').to_ascii_lowercase();
    let rest = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://"));
    let ok = rest.is_some_and(|r| {
        !r.is_empty()
            && !r.contains(['/', '?', '#', '@', ' '])
            && r.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
    });
    if ok { Ok(o) } else { Err(format!("{s:?} is not an origin such as https://player.example:8443")) }
}

/// A host name for `--allow-host` (no port), lowercased.
pub fn parse_host_name(s: &str) -> Result<String, String> {
    let h = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if ok { Ok(h) } else { Err(format!("{s:?} is not a host name such as desk.example.org")) }
}

/// A serde enum value (kebab-case string) as a TOML string literal.
fn enum_toml<T: Serialize>(v: &T) -> String {
    toml::Value::try_from(v).map(|v| v.to_string()).unwrap_or_else(|_| "\"\"".to_owned())
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The config file: `explicit` (an error when it cannot be read), else the default path when it exists.
pub fn read_config_file(explicit: Option<&Path>) -> Result<Option<FileConfig>, ConfigError> {
    match explicit {
        Some(path) => Ok(Some(read_file(path)?)),
        None => match default_config_path() {
            Some(path) if path.exists() => Ok(Some(read_file(&path)?)),
            _ => Ok(None),
        },
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse_file(&text, path)
}

/// Parse config-file text (`path` only names it in errors).
pub fn parse_file(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), source: Box::new(e) })
}

/// Whether a layout or variant name is safe to hand to xkbcommon (names like `us`, `de`, `fr`, `dvorak`,
/// `us,de`, `altgr-intl`).
pub fn valid_xkb_name(s: &str) -> bool {
    s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ','))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_to_defaults() {
        assert_eq!(Config::from_toml(DEFAULT_CONFIG_TEMPLATE).expect("template"), Config::default());
    }

    #[test]
    fn effective_config_round_trips() {
        let cfg = Config {
            output: Some("DP-1".into()),
            source: SourceKind::Screencopy,
            pipewire_node: None,
            cursor: CursorMode::Metadata,
            convert: ConvertChoice::Vulkan,
            fps: 30,
            log_filter: "debug".into(),
            headless: Some(HeadlessMode { width: 1280, height: 720, refresh_hz: 30 }),
            headless_extra: vec![HeadlessMode { width: 800, height: 600, refresh_hz: 60 }],
            headless_user: "someone".into(),
            encoder: EncoderConfig {
                codec: CodecChoice::Vp8,
                backend: EncoderBackend::Vaapi,
                vaapi_device: Some("/dev/dri/renderD129".into()),
                bitrate_kbps: Some(4000),
                rate_control: RateControl::Vbr,
                profile: Profile::Main,
                threads: 2,
                intra_refresh: true,
            },
            server: ServerConfig {
                listen: "0.0.0.0:9000".parse().expect("addr"),
                token: Some("secret-token".into()),
                no_auth: false,
                max_viewers: 3,
                ice_servers: vec!["stun:127.0.0.1:3478".into()],
                nat_1to1_ip: Some("203.0.113.1".parse().expect("ip")),
                udp_addrs: vec!["127.0.0.1:40000".parse().expect("addr")],
                allow_origins: vec!["https://player.example:8443".into()],
                allow_hosts: vec!["desk.example".into()],
                no_tls: false,
                tls_cert: Some("/etc/wl-webrtc/cert.pem".into()),
                tls_key: Some("/etc/wl-webrtc/key.pem".into()),
            },
            input: InputConfig { allow: true, layout: "de".into(), variant: "nodeadkeys".into() },
        };
        assert_eq!(Config::from_toml(&cfg.to_toml()).expect("round trip"), cfg);
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::from_toml("fps = 0").expect_err("fps 0");
        assert!(err.to_string().contains("fps"), "{err}");
        let err = Config::from_toml("colour = 1").expect_err("unknown key");
        assert!(err.to_string().contains("colour"), "{err}");
        let err = Config::from_toml("source = \"x11\"").expect_err("bad source");
        assert!(err.to_string().contains("x11"), "{err}");
        let err = Config::from_toml("convert = \"opencl\"").expect_err("bad converter");
        assert!(err.to_string().contains("opencl"), "{err}");
        let err = Config::from_toml("[input]\nlayout = \"us; rm\"").expect_err("bad layout");
        assert!(err.to_string().contains("input.layout"), "{err}");
    }

    #[test]
    fn headless_mode_parsing() {
        assert_eq!(HeadlessMode::parse("1920x1080"), Ok(HeadlessMode { width: 1920, height: 1080, refresh_hz: 60 }));
        assert_eq!(HeadlessMode::parse("3840x2160@30"), Ok(HeadlessMode { width: 3840, height: 2160, refresh_hz: 30 }));
        assert_eq!(HeadlessMode::parse("800X600@75Hz").map(|m| m.refresh_hz), Ok(75));
        for bad in ["1920", "axb", "10x10", "1920x1080@0", "1920x1080@fast", "99999x100"] {
            assert!(HeadlessMode::parse(bad).is_err(), "{bad}");
        }
        let two = HeadlessMode::parse_list("1920x1080, 1280x720@30").expect("two outputs");
        assert_eq!(
            two,
            vec![
                HeadlessMode { width: 1920, height: 1080, refresh_hz: 60 },
                HeadlessMode { width: 1280, height: 720, refresh_hz: 30 }
            ]
        );
        assert!(HeadlessMode::parse_list("1920x1080,").is_err(), "an empty mode");
        assert!(HeadlessMode::parse_list(&["640x480"; 9].join(",")).is_err(), "nine outputs");
        let cfg = Config::from_toml("[headless]\nmode = \"640x480,320x240@30\"\n").expect("file");
        assert_eq!((cfg.headless.map(|m| m.width), cfg.headless_extra.len()), (Some(640), 1));
    }
}

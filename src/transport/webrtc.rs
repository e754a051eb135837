//! One WebRTC peer per viewer on webrtc-rs 0.21: H.264 (packetization-mode 1) video when the viewer's offer
//! has it, else VP8 (`choose_codec`), sent from the shared encoder's frames of that codec without copying them
//! (the `Bytes` of an `EncodedFrame` are sliced into RTP payloads).
//!
//! Order matters in webrtc-rs 0.21 (measured): codecs are registered before the default interceptors, the
//! track is added only after the remote offer is applied (else header-extension ids are wrong and the
//! browser drops every packet), mDNS is off (it fails in a namespace without multicast), and candidates come
//! from the UDP sockets we bind (`127.0.0.1:0` gives a loopback candidate). RTCP keyframe requests reach us
//! through a small interceptor that marks PLI/FIR for the application.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Packet, Slot, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_VP8, MediaEngine};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtp::packetizer::Payloader;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState,
    RTCIceServer, RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
};

use super::congestion::{Congestion, ReadTap};
use crate::control::congestion::Redundancy;
use crate::encode::{Codec, CodecChoice, EncodedFrame};

/// RTP payload size (fits any path MTU with SRTP and extension overhead).
const RTP_MTU: usize = 1200;
/// How long to wait for ICE gathering before answering with what we have.
const GATHER_TIMEOUT: Duration = Duration::from_secs(3);
/// 90 kHz RTP clock for video.
const VIDEO_CLOCK: u64 = 90_000;
pub(crate) const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
pub(crate) const ABS_CAPTURE_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time";

/// H.264 codecs offered to browsers: Constrained Baseline and Main, packetization-mode 1.
pub(crate) const H264_FMTP: [(u8, &str); 2] = [
    (102, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"),
    (104, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f"),
];
/// Our VP8 payload type (a browser's own number wins in the answer).
const VP8_PT: u8 = 96;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("WebRTC: {0}")]
    Webrtc(#[from] webrtc::error::Error),
    #[error("invalid SDP offer: {0}")]
    BadOffer(String),
    /// Nothing in the offer that we may send: `offered` lists the browser's video codecs.
    #[error(
        "this browser offered no video codec wl-webrtc can send (it offered: {offered}; wl-webrtc sends {allowed})"
    )]
    NoCodec { offered: String, allowed: String },
}

/// Transport settings from the config.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Local addresses to bind UDP sockets on (each gives host candidates).
    pub udp_addrs: Vec<SocketAddr>,
    /// STUN/TURN server URLs.
    pub ice_servers: Vec<String>,
    /// Public address to advertise instead of the bound one (1:1 NAT).
    pub nat_1to1_ip: Option<IpAddr>,
    /// Which codecs viewers may get (`--codec`).
    pub codec: CodecChoice,
}

impl TransportConfig {
    /// The settings for one viewer whose signaling came from `from`: only sockets that can reach it. A
    /// loopback socket cannot send to a remote address (every check would fail with EINVAL) and a remote
    /// viewer's candidates are never loopback, so a viewer beyond loopback gets no loopback socket and a
    /// loopback viewer only loopback ones, whenever the other kind exists.
    pub fn for_viewer(&self, from: Option<IpAddr>) -> TransportConfig {
        let mut cfg = self.clone();
        if let Some(from) = from {
            let fits: Vec<SocketAddr> =
                self.udp_addrs.iter().copied().filter(|a| a.ip().is_loopback() == from.is_loopback()).collect();
            if !fits.is_empty() {
                cfg.udp_addrs = fits;
            }
        }
        cfg
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            udp_addrs: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            ice_servers: Vec::new(),
            nat_1to1_ip: None,
            codec: CodecChoice::Auto,
        }
    }
}

/// What a peer tells the rest of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    Connected,
    /// The browser asked for a keyframe (PLI/FIR), or the peer fell behind and needs one.
    KeyframeRequest,
    /// The connection failed or closed: free everything.
    Gone,
}

/// What one RTCP compound packet from a viewer says about our stream.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Feedback {
    /// PLI or FIR: the decoder needs a keyframe.
    pub keyframe: bool,
    /// REMB: the receiver's estimate of the bitrate its link carries, bit/s.
    pub remb_bps: Option<f64>,
    /// Receiver report: the cumulative number of our packets lost and the extended highest sequence
    /// number received (see `control::LossMeter`).
    pub report: Option<(u32, u32)>,
}

impl Feedback {
    /// Collect what concerns the stream `ssrc` from a compound packet (other SSRCs' reports are ignored).
    pub(crate) fn from_packets(packets: &[Box<dyn rtc::rtcp::Packet>], ssrc: u32) -> Feedback {
        let mut fb = Feedback::default();
        for p in packets {
            let any = p.as_any();
            if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                fb.keyframe = true;
            } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                if remb.ssrcs.is_empty() || remb.ssrcs.contains(&ssrc) {
                    fb.remb_bps = Some(f64::from(remb.bitrate));
                }
            } else if let Some(rr) = any.downcast_ref::<ReceiverReport>()
                && let Some(r) = rr.reports.iter().find(|r| r.ssrc == ssrc)
            {
                fb.report = Some((r.total_lost, r.last_sequence_number));
            }
        }
        fb
    }
}

/// Label of the data channel that carries viewer input (see `crate::input`).
pub(crate) const INPUT_CHANNEL: &str = "input";

/// The viewer's `input` data channel (webrtc-rs's type stays inside this module).
#[derive(Clone)]
pub struct DataChannel(Arc<dyn webrtc::data_channel::DataChannel>);

impl std::fmt::Debug for DataChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataChannel").finish_non_exhaustive()
    }
}

/// A data channel the viewer opened, as the peer hands it on.
#[derive(Debug)]
pub enum InboundChannel {
    /// The peer's `input` channel: the first one labelled `input`.
    Input(DataChannel),
    /// Another channel labelled `input` on the same peer: refused (closed at once; one per peer, so that a
    /// viewer cannot multiply its input rate limit or race two streams of keys).
    RefusedInput,
}

/// What happened on a data channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    Open,
    Message(Vec<u8>),
    Closed,
}

impl DataChannel {
    /// The next event; `Closed` once the channel is gone (and from then on).
    pub async fn next(&self) -> ChannelEvent {
        use webrtc::data_channel::DataChannelEvent as E;
        loop {
            match self.0.poll().await {
                Some(E::OnOpen) => return ChannelEvent::Open,
                Some(E::OnMessage(msg)) => return ChannelEvent::Message(msg.data.to_vec()),
                Some(E::OnClose) | None => return ChannelEvent::Closed,
                Some(_) => {}
            }
        }
    }

    /// Send a text message; an error means the channel is gone (the caller sees `Closed` next).
    pub async fn send_text(&self, text: &str) -> Result<(), TransportError> {
        self.0.send_text(text).await.map(|_| ()).map_err(TransportError::from)
    }
}

struct Handler {
    gathered: tokio::sync::watch::Sender<bool>,
    events: tokio::sync::mpsc::UnboundedSender<PeerEvent>,
    channels: tokio::sync::mpsc::UnboundedSender<InboundChannel>,
    /// Whether this peer's `input` channel has been handed on (there is only ever one).
    input_taken: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(%state, "peer connection state");
        let ev = match state {
            RTCPeerConnectionState::Connected => PeerEvent::Connected,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Disconnected | RTCPeerConnectionState::Closed => {
                PeerEvent::Gone
            }
            _ => return,
        };
        let _ = self.events.send(ev);
    }

    async fn on_data_channel(&self, channel: Arc<dyn webrtc::data_channel::DataChannel>) {
        match channel.label().await {
            Ok(label) if label == INPUT_CHANNEL => {
                if self.input_taken.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    let _ = channel.close().await;
                    let _ = self.channels.send(InboundChannel::RefusedInput);
                } else {
                    let _ = self.channels.send(InboundChannel::Input(DataChannel(channel)));
                }
            }
            Ok(label) => {
                tracing::debug!(%label, "closing a data channel we do not know");
                let _ = channel.close().await;
            }
            Err(e) => tracing::debug!("data channel gone before use: {e}"),
        }
    }
}

/// Marks incoming PLI/FIR (keyframe requests), REMB and receiver reports (bitrate control) for delivery to the
/// application (they stop in the interceptor chain otherwise).
fn mark_for_application(msg: &mut TaggedPacket) {
    if let Packet::Rtcp(packets) = &msg.message.packet
        && packets.iter().any(|p| {
            let any = p.as_any();
            any.is::<PictureLossIndication>()
                || any.is::<FullIntraRequest>()
                || any.is::<ReceiverEstimatedMaximumBitrate>()
                || any.is::<ReceiverReport>()
        })
    {
        msg.message.add(Attribute::DeliverToApplication);
    }
}

/// The codec parameters we register for `codec` (H.264: one per profile we announce).
fn codec_parameters(codec: Codec) -> Vec<RTCRtpCodecParameters> {
    let entries: Vec<(u8, &str, &str)> = match codec {
        Codec::H264 => H264_FMTP.iter().map(|&(pt, fmtp)| (pt, MIME_TYPE_H264, fmtp)).collect(),
        Codec::Vp8 => vec![(VP8_PT, MIME_TYPE_VP8, "")],
    };
    entries
        .into_iter()
        .map(|(pt, mime, fmtp)| RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate: VIDEO_CLOCK as u32,
                channels: 0,
                sdp_fmtp_line: fmtp.to_owned(),
                // NACK (retransmission), PLI and FIR (keyframe requests), REMB (bandwidth estimate).
                rtcp_feedback: [("nack", ""), ("nack", "pli"), ("ccm", "fir"), ("goog-remb", "")]
                    .into_iter()
                    .map(|(typ, parameter)| RTCPFeedback { typ: typ.to_owned(), parameter: parameter.to_owned() })
                    .collect(),
            },
            payload_type: pt,
        })
        .collect()
}

fn mime_type(codec: Codec) -> &'static str {
    match codec {
        Codec::H264 => MIME_TYPE_H264,
        Codec::Vp8 => MIME_TYPE_VP8,
    }
}

/// The video codecs an offer lists (rtpmap names of its video sections, in order, without the repair and
/// redundancy formats rtx, red, ulpfec, flexfec), and whether one of its H.264 formats is packetization-mode 1.
pub(crate) fn offered_codecs(sdp: &str) -> (Vec<String>, bool) {
    let mut names: Vec<String> = Vec::new();
    let mut h264_pts = Vec::new();
    let mut in_video = false;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            in_video = m.starts_with("video");
            continue;
        }
        if !in_video {
            continue;
        }
        if let Some(rest) = line.strip_prefix("a=rtpmap:")
            && let Some((pt, enc)) = rest.split_once(' ')
        {
            let name = enc.split('/').next().unwrap_or("").trim().to_owned();
            if matches!(name.to_ascii_lowercase().as_str(), "rtx" | "red" | "ulpfec" | "flexfec-03" | "") {
                continue;
            }
            if name.eq_ignore_ascii_case("H264") {
                h264_pts.push(pt.trim().to_owned());
            }
            if !names.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
                names.push(name);
            }
        }
    }
    let mode1 = sdp.lines().any(|l| {
        l.strip_prefix("a=fmtp:").and_then(|r| r.split_once(' ')).is_some_and(|(pt, params)| {
            h264_pts.iter().any(|p| p == pt)
                && params.split(';').any(|kv| kv.trim().eq_ignore_ascii_case("packetization-mode=1"))
        })
    });
    (names, mode1)
}

/// The codec to send a viewer with this offer: the first of `choice`'s codecs the offer has (H.264 needs
/// packetization-mode 1).
pub fn choose_codec(sdp: &str, choice: CodecChoice) -> Result<Codec, TransportError> {
    let (offered, h264_mode1) = offered_codecs(sdp);
    let has = |c: Codec| match c {
        Codec::H264 => h264_mode1,
        Codec::Vp8 => offered.iter().any(|n| n.eq_ignore_ascii_case("VP8")),
    };
    choice.allowed().iter().copied().find(|&c| has(c)).ok_or_else(|| {
        let mut offered = offered.join(", ");
        if offered.is_empty() {
            offered = "none".into();
        } else if !h264_mode1 && offered.to_ascii_uppercase().contains("H264") {
            offered += " (H.264 without packetization-mode 1)";
        }
        let allowed: Vec<String> = choice.allowed().iter().map(|c| c.to_string()).collect();
        TransportError::NoCodec { offered, allowed: allowed.join(" and ") }
    })
}

/// The codec and header extensions a viewer negotiates (the live peer and [`answer_offline`] alike).
fn media_engine(codec: Codec) -> Result<MediaEngine, TransportError> {
    let mut me = MediaEngine::default();
    for params in codec_parameters(codec) {
        me.register_codec(params, RtpCodecKind::Video)?;
    }
    for uri in [PLAYOUT_DELAY_URI, ABS_CAPTURE_TIME_URI] {
        me.register_header_extension(
            RTCRtpHeaderExtensionCapability { uri: uri.to_owned() },
            RtpCodecKind::Video,
            None,
        )?;
    }
    Ok(me)
}

/// The desktop video track in `codec`, one encoding with our SSRC.
fn desktop_track(ssrc: u32, codec: Codec) -> MediaStreamTrack {
    MediaStreamTrack::new(
        "wl-webrtc".to_owned(),
        "desktop".to_owned(),
        "desktop".to_owned(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec: codec_parameters(codec).remove(0).rtp_codec,
            ..Default::default()
        }],
    )
}

/// The payload type of the codec the sender ended up with, which must be `codec`.
fn negotiated(codecs: &[RTCRtpCodecParameters], codec: Codec, offer: &str) -> Result<u8, TransportError> {
    match codecs.first() {
        Some(c) if c.rtp_codec.mime_type.eq_ignore_ascii_case(mime_type(codec)) => Ok(c.payload_type),
        _ => Err(TransportError::NoCodec {
            offered: offered_codecs(offer).0.join(", "),
            allowed: format!("{codec} (in a form this browser accepts)"),
        }),
    }
}

/// The SDP path of [`Peer::answer`] without sockets, ICE gathering or tasks: check the offer, choose the
/// codec, apply the offer to a sans-I/O peer with the same codec, header extensions and track, and answer.
/// Returns the answer SDP, the codec and the negotiated payload type. The fuzz target `sdp_offer` drives it;
/// so do tests that need an answer fast.
pub fn answer_offline(offer_sdp: &str, choice: CodecChoice) -> Result<(String, Codec, u8), TransportError> {
    validate_offer(offer_sdp)?;
    let codec = choose_codec(offer_sdp, choice)?;
    let now = Instant::now();
    // No DTLS happens offline: one certificate serves every call (generating one is most of the cost).
    static CERT: std::sync::OnceLock<Option<rtc::peer_connection::certificate::RTCCertificate>> =
        std::sync::OnceLock::new();
    let cert = CERT.get_or_init(|| {
        let provider = rtc::crypto::default_provider().ok()?;
        let params = rtc::peer_connection::certificate::CertificateParams::new(vec!["wl-webrtc".to_owned()]).ok()?;
        rtc::peer_connection::certificate::RTCCertificate::generate(
            provider.crypto(),
            rtc::crypto::SignatureScheme::EcdsaP256Sha256,
            params,
        )
        .ok()
    });
    let config = RTCConfigurationBuilder::new().with_certificates(cert.iter().cloned().collect()).build();
    let mut pc = rtc::peer_connection::RTCPeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media_engine(codec)?)
        .build(now)?;
    let offer =
        RTCSessionDescription::offer(offer_sdp.to_owned()).map_err(|e| TransportError::BadOffer(e.to_string()))?;
    pc.set_remote_description(now, offer).map_err(|e| TransportError::BadOffer(e.to_string()))?;
    let sender = pc.add_track(desktop_track(1, codec))?;
    let answer = pc.create_answer(None)?;
    pc.set_local_description(now, answer)?;
    let mut sender = pc.rtp_sender(sender).ok_or(TransportError::BadOffer("no sender for the track".into()))?;
    let payload_type = negotiated(&sender.get_parameters().rtp_parameters.codecs, codec, offer_sdp)?;
    let sdp = pc.local_description().ok_or(TransportError::BadOffer("no local description".into()))?.sdp;
    check_answer(&sdp)?;
    Ok((sdp, codec, payload_type))
}

/// A negotiated viewer connection.
pub struct Peer {
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    /// Events from this peer (connected, keyframe requests, gone).
    pub events: tokio::sync::mpsc::UnboundedReceiver<PeerEvent>,
    /// The viewer's `input` data channel, and word of any further one refused.
    pub data_channels: tokio::sync::mpsc::UnboundedReceiver<InboundChannel>,
    /// The SDP answer to send back.
    pub answer: String,
    codec: Codec,
    payload_type: u8,
    ssrc: u32,
    congestion: Arc<Congestion>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("pt", &self.payload_type).field("ssrc", &self.ssrc).finish_non_exhaustive()
    }
}

/// Quick checks of an offer before handing it to the WebRTC stack.
pub(crate) fn validate_offer(sdp: &str) -> Result<(), TransportError> {
    if !sdp.starts_with("v=0") {
        return Err(TransportError::BadOffer("SDP must start with v=0".into()));
    }
    if !sdp.lines().any(|l| l.starts_with("m=video")) {
        return Err(TransportError::BadOffer("no video m-line: the viewer must offer to receive video".into()));
    }
    Ok(())
}

/// An answer must carry a video section that sends (found by fuzzing: an offer whose video section
/// webrtc-rs cannot parse is answered without one, and the viewer would connect to a black picture).
pub(crate) fn check_answer(answer: &str) -> Result<(), TransportError> {
    let mut in_video = false;
    for line in answer.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            in_video = m.starts_with("video ") && !m.starts_with("video 0 ");
        } else if in_video && matches!(line.trim_end(), "a=sendonly" | "a=sendrecv") {
            return Ok(());
        }
    }
    Err(TransportError::BadOffer(
        "its video section could not be answered with a stream (check its a=rtpmap and direction lines)".into(),
    ))
}

/// Replace the address of every host candidate with the 1:1 NAT address.
pub(crate) fn rewrite_candidates(sdp: &str, public: IpAddr) -> String {
    sdp.lines()
        .map(|l| {
            if let Some(rest) = l.strip_prefix("a=candidate:") {
                let mut f: Vec<&str> = rest.split(' ').collect();
                let public = public.to_string();
                if f.len() > 7 && f[7] == "host" {
                    f[4] = &public;
                    return format!("a=candidate:{}\r\n", f.join(" "));
                }
                // Borrow ends here; fall through with the original line.
            }
            format!("{l}\r\n")
        })
        .collect()
}

impl Peer {
    /// Answer a viewer's offer: build the peer, add the H.264 track, gather candidates.
    pub async fn answer(offer: &str, cfg: &TransportConfig) -> Result<Peer, TransportError> {
        validate_offer(offer)?;
        let codec = choose_codec(offer, cfg.codec)?;
        let mut me = media_engine(codec)?;
        let congestion = Arc::new(Congestion::default());
        let registry = register_default_interceptors(Registry::new(), &mut me)?;
        let registry = super::congestion::register(registry, &congestion)
            .with(Slot::from(14_000), ReadTap::new(mark_for_application));
        let setting =
            SettingEngineBuilder::new().with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled).build();
        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(if cfg.ice_servers.is_empty() {
                vec![]
            } else {
                vec![RTCIceServer { urls: cfg.ice_servers.clone(), ..Default::default() }]
            })
            .build();
        let (gathered_tx, mut gathered_rx) = tokio::sync::watch::channel(false);
        let (ev_tx, ev_rx) = tokio::sync::mpsc::unbounded_channel();
        let (dc_tx, dc_rx) = tokio::sync::mpsc::unbounded_channel();
        let handler = Arc::new(Handler {
            gathered: gathered_tx,
            events: ev_tx,
            channels: dc_tx,
            input_taken: std::sync::atomic::AtomicBool::new(false),
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(me)
            .with_setting_engine(setting)
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_udp_addrs(cfg.udp_addrs.clone())
            .build()
            .await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let result = async {
            let remote =
                RTCSessionDescription::offer(offer.to_owned()).map_err(|e| TransportError::BadOffer(e.to_string()))?;
            pc.set_remote_description(remote).await.map_err(|e| TransportError::BadOffer(e.to_string()))?;
            // After the offer (webrtc-rs 0.21: header-extension ids are fixed at add_track).
            let ssrc = rand_ssrc();
            let track = Arc::new(TrackLocalStaticRTP::new(desktop_track(ssrc, codec)));
            let sender = pc.add_track(Arc::clone(&track) as Arc<dyn TrackLocal>).await?;
            let answer = pc.create_answer(None).await?;
            pc.set_local_description(answer).await?;
            let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered_rx.wait_for(|g| *g)).await;
            let params = sender.get_parameters().await?;
            let payload_type = negotiated(&params.rtp_parameters.codecs, codec, offer)?;
            let local = pc.local_description().await.ok_or(TransportError::BadOffer("no local description".into()))?;
            let mut answer = local.sdp;
            check_answer(&answer)?;
            if let Some(ip) = cfg.nat_1to1_ip {
                answer = rewrite_candidates(&answer, ip);
            }
            Ok::<_, TransportError>((track, payload_type, ssrc, answer))
        }
        .await;
        match result {
            Ok((track, payload_type, ssrc, answer)) => Ok(Peer {
                pc,
                track,
                events: ev_rx,
                data_channels: dc_rx,
                answer,
                codec,
                payload_type,
                ssrc,
                congestion,
            }),
            Err(e) => {
                let _ = pc.close().await;
                Err(e)
            }
        }
    }

    /// Add a trickled remote candidate.
    pub async fn add_candidate(
        &self,
        candidate: String,
        mid: Option<String>,
        index: Option<u16>,
    ) -> Result<(), TransportError> {
        let init = webrtc::peer_connection::RTCIceCandidateInit {
            candidate,
            sdp_mid: mid,
            sdp_mline_index: index,
            ..Default::default()
        };
        Ok(self.pc.add_ice_candidate(init).await?)
    }

    /// The codec this viewer receives.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The send-side bandwidth estimate and pacer state for this viewer.
    pub fn congestion(&self) -> Arc<Congestion> {
        Arc::clone(&self.congestion)
    }

    /// A sender that turns encoded frames into RTP for this peer.
    pub fn sender(&self) -> RtpFrameSender {
        let payloader: Box<dyn Payloader> = match self.codec {
            Codec::H264 => Box::new(rtc::rtp::codec::h264::H264Payloader::default()),
            // The picture id lets the browser tell which frame a lost packet belonged to (NACK, PLI).
            Codec::Vp8 => {
                let mut p = rtc::rtp::codec::vp8::Vp8Payloader::default();
                p.enable_picture_id = true;
                Box::new(p)
            }
        };
        RtpFrameSender {
            track: Arc::clone(&self.track),
            payloader,
            payload_type: self.payload_type,
            ssrc: self.ssrc,
            seq: rand_ssrc() as u16,
            ts_base: None,
            ts_offset: rand_ssrc(),
            congestion: Arc::clone(&self.congestion),
            redundancy: Redundancy::default(),
            media: VecDeque::new(),
        }
    }

    /// Wait for the next RTCP feedback about our stream from the browser (None when the peer is closed).
    pub async fn feedback(track: &TrackLocalStaticRTP, ssrc: u32) -> Option<Feedback> {
        loop {
            let TrackLocalEvent::OnRtcpPacket(packets) = track.poll().await? else { continue };
            let fb = Feedback::from_packets(&packets, ssrc);
            if fb != Feedback::default() {
                return Some(fb);
            }
        }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn track(&self) -> Arc<TrackLocalStaticRTP> {
        Arc::clone(&self.track)
    }

    pub async fn close(&self) {
        if let Err(e) = self.pc.close().await {
            tracing::debug!("closing peer: {e}");
        }
    }
}

fn rand_ssrc() -> u32 {
    // Not security relevant: unique per process run is enough.
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut x = t.as_nanos() as u64 ^ (std::process::id() as u64) << 32;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x as u32
}

/// Packetizes encoded frames for one peer: RTP timestamps from capture time (exact 90 kHz), marker on the
/// last packet of a frame, playout-delay 0/0 and abs-capture-time on every packet.
pub struct RtpFrameSender {
    track: Arc<TrackLocalStaticRTP>,
    payloader: Box<dyn Payloader>,
    payload_type: u8,
    ssrc: u32,
    seq: u16,
    ts_base: Option<Instant>,
    ts_offset: u32,
    congestion: Arc<Congestion>,
    redundancy: Redundancy,
    /// Media bytes sent (one copy) over the last second: (when, bytes).
    media: VecDeque<(Instant, usize)>,
}

impl std::fmt::Debug for RtpFrameSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtpFrameSender").field("ssrc", &self.ssrc).finish_non_exhaustive()
    }
}

/// abs-capture-time, the long form: the 64-bit NTP timestamp of capture and the estimated capture clock
/// offset (Q32.32, the sender's NTP clock minus the capture clock), which is 0: we stamp with the same wall
/// clock our RTCP sender reports use. The offset field being present is what makes the receiver add its own
/// sender→receiver clock estimate (from the sender reports), so that a viewer page can turn the capture time
/// into its own clock (`senderCaptureTimeOffset`) even when the two machines' clocks differ.
#[derive(Debug, Clone, Copy)]
struct AbsCaptureTime(u64);

impl rtc::shared::marshal::MarshalSize for AbsCaptureTime {
    fn marshal_size(&self) -> usize {
        16
    }
}

impl rtc::shared::marshal::Marshal for AbsCaptureTime {
    fn marshal_to(&self, buf: &mut [u8]) -> rtc::shared::error::Result<usize> {
        let out = buf.get_mut(..16).ok_or(rtc::shared::error::Error::ErrBufferTooSmall)?;
        out[..8].copy_from_slice(&self.0.to_be_bytes());
        out[8..].copy_from_slice(&0i64.to_be_bytes());
        Ok(16)
    }
}

/// NTP time (seconds since 1900 in 32.32 fixed point) of an `Instant`, via the wall clock.
fn ntp_of(at: Instant) -> u64 {
    let now_wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let age = Instant::now().saturating_duration_since(at);
    let wall = now_wall.saturating_sub(age);
    let secs = wall.as_secs() + 2_208_988_800;
    let frac = (u64::from(wall.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The header extensions on every packet: playout-delay 0/0 and abs-capture-time.
fn ext_for(abs: AbsCaptureTime) -> [rtc::rtp::extension::HeaderExtension; 2] {
    [
        rtc::rtp::extension::HeaderExtension::PlayoutDelay(
            rtc::rtp::extension::playout_delay_extension::PlayoutDelayExtension { min_delay: 0, max_delay: 0 },
        ),
        rtc::rtp::extension::HeaderExtension::Custom { uri: ABS_CAPTURE_TIME_URI.into(), extension: Box::new(abs) },
    ]
}

impl RtpFrameSender {
    /// RTP timestamp of a capture instant: 90 kHz since the first frame this peer was sent.
    pub(crate) fn rtp_timestamp(&mut self, capture: Instant) -> u32 {
        let base = *self.ts_base.get_or_insert(capture);
        let ticks = capture.saturating_duration_since(base).as_nanos() as u64 * VIDEO_CLOCK / 1_000_000_000;
        self.ts_offset.wrapping_add(ticks as u32)
    }

    /// Send one access unit. Returns the number of RTP packets written.
    pub async fn send(&mut self, frame: &EncodedFrame) -> Result<usize, TransportError> {
        let payloads = self
            .payloader
            .payload(RTP_MTU, &frame.data)
            .map_err(|e| TransportError::Webrtc(webrtc::error::Error::Other(e.to_string())))?;
        let timestamp = self.rtp_timestamp(frame.capture_ts);
        let n = payloads.len();
        let abs = AbsCaptureTime(ntp_of(frame.capture_ts));
        let now = Instant::now();
        self.media.push_back((now, frame.data.len()));
        while self.media.front().is_some_and(|&(t, _)| now.saturating_duration_since(t) > Duration::from_secs(1)) {
            self.media.pop_front();
        }
        let media_bps = self.media.iter().map(|&(_, b)| b).sum::<usize>() as f64 * 8.0;
        let copies = match self.congestion.estimate_bps() {
            Some(est) => self.redundancy.copies(now, self.congestion.loss(), est, media_bps),
            None => 1,
        };
        // Further copies go after the whole frame (a burst that takes one copy spares the other).
        let mut again = Vec::new();
        for (i, payload) in payloads.into_iter().enumerate() {
            let header = rtc::rtp::header::Header {
                version: 2,
                marker: i + 1 == n,
                payload_type: self.payload_type,
                sequence_number: self.seq,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            };
            self.seq = self.seq.wrapping_add(1);
            let pkt = rtc::rtp::packet::Packet { header, payload };
            let ext = ext_for(abs);
            if copies > 1 {
                again.push(pkt.clone());
            }
            self.track.write_rtp_with_extensions(pkt, &ext).await?;
        }
        for _ in 1..copies {
            for pkt in &again {
                self.track.write_rtp_with_extensions(pkt.clone(), &ext_for(abs)).await?;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_without_h264_video_are_refused() {
        assert!(matches!(validate_offer("hello"), Err(TransportError::BadOffer(_))));
        let audio_only = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
        assert!(matches!(validate_offer(audio_only), Err(TransportError::BadOffer(_))));
        let vp8 = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n";
        assert!(validate_offer(vp8).is_ok());
        assert_eq!(choose_codec(vp8, CodecChoice::Auto).ok(), Some(Codec::Vp8));
        let err = choose_codec(vp8, CodecChoice::H264).expect_err("h264 only");
        assert_eq!(
            err.to_string(),
            "this browser offered no video codec wl-webrtc can send (it offered: VP8; wl-webrtc sends H.264)"
        );
        let h264 = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102 96\r\na=rtpmap:102 H264/90000\r\n\
                    a=fmtp:102 profile-level-id=42e01f;packetization-mode=1\r\na=rtpmap:96 VP8/90000\r\n";
        assert_eq!(choose_codec(h264, CodecChoice::Auto).ok(), Some(Codec::H264), "H.264 preferred");
        assert_eq!(choose_codec(h264, CodecChoice::Vp8).ok(), Some(Codec::Vp8));
        let mode0 = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102 97\r\na=rtpmap:102 H264/90000\r\n\
                     a=fmtp:102 packetization-mode=0\r\na=rtpmap:97 rtx/90000\r\na=rtpmap:98 VP9/90000\r\n";
        let err = choose_codec(mode0, CodecChoice::Auto).expect_err("no usable codec").to_string();
        assert!(err.contains("it offered: H264, VP9 (H.264 without packetization-mode 1)"), "{err}");
        assert!(err.contains("wl-webrtc sends H.264 and VP8"), "{err}");
    }

    #[test]
    fn real_browser_offers_get_an_answer_offline() {
        // Offers captured from Chromium and Firefox by `scripts/fuzz seed-offers` (the fuzz corpus seeds).
        let chromium = include_str!("../../fuzz/corpus/sdp_offer/chromium.sdp");
        let firefox = include_str!("../../fuzz/corpus/sdp_offer/firefox.sdp");
        let firefox_h264 = include_str!("../../fuzz/corpus/sdp_offer/firefox-openh264.sdp");
        for (name, offer, choice, codec, rtp) in [
            ("chromium", chromium, CodecChoice::Auto, Codec::H264, "H264/90000"),
            ("firefox+openh264", firefox_h264, CodecChoice::Auto, Codec::H264, "H264/90000"),
            // Debian's Firefox has no OpenH264: it gets VP8.
            ("firefox", firefox, CodecChoice::Auto, Codec::Vp8, "VP8/90000"),
            ("chromium --codec vp8", chromium, CodecChoice::Vp8, Codec::Vp8, "VP8/90000"),
        ] {
            let (answer, got, pt) = answer_offline(offer, choice).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, codec, "{name}");
            assert!(answer.starts_with("v=0") && answer.contains("m=video"), "{name}: {answer}");
            let rtpmap = format!("a=rtpmap:{pt} {rtp}");
            assert!(answer.contains(&rtpmap) && offer.contains(&rtpmap), "{name}: payload type {pt}: {answer}");
            assert!(answer.contains("a=sendonly"), "{name}: {answer}");
        }
        let err = answer_offline(firefox, CodecChoice::H264).expect_err("no H.264 in it").to_string();
        assert!(err.contains("it offered: VP8, VP9, AV1;"), "{err}");
        assert!(answer_offline("v=0\r\nm=video 9 x\r\na=rtpmap:1 H264/90000\r\n", CodecChoice::Auto).is_err());
    }

    #[test]
    fn an_offer_whose_video_section_cannot_be_answered_is_refused() {
        // Found by the sdp_offer fuzz target: Chromium's offer with its direction line replaced by a broken
        // rtpmap used to be answered without any video section.
        let chromium = include_str!("../../fuzz/corpus/sdp_offer/chromium.sdp");
        let broken = chromium.replacen("a=recvonly\r\n", "a=rtpmap:y\r\n", 1);
        let err = answer_offline(&broken, CodecChoice::Auto).expect_err("refused").to_string();
        assert!(err.contains("video section could not be answered"), "{err}");
        assert!(check_answer("v=0\r\nm=video 9 X 96\r\na=sendonly\r\n").is_ok());
        assert!(check_answer("v=0\r\nm=video 0 X 96\r\na=sendonly\r\n").is_err());
        assert!(check_answer("v=0\r\nm=video 9 X 96\r\na=inactive\r\nm=application 9 X\r\na=sendrecv\r\n").is_err());
    }

    #[test]
    fn a_viewer_gets_only_sockets_that_can_reach_it() {
        let cfg = TransportConfig {
            udp_addrs: vec!["127.0.0.1:0".parse().expect("a"), "198.18.0.1:0".parse().expect("b")],
            ..Default::default()
        };
        let remote = cfg.for_viewer(Some("198.18.0.2".parse().expect("ip")));
        assert_eq!(remote.udp_addrs, vec!["198.18.0.1:0".parse::<SocketAddr>().expect("b")]);
        let local = cfg.for_viewer(Some("127.0.0.1".parse().expect("ip")));
        assert_eq!(local.udp_addrs, vec!["127.0.0.1:0".parse::<SocketAddr>().expect("a")]);
        assert_eq!(cfg.for_viewer(None).udp_addrs.len(), 2);
        // Only loopback sockets configured: a remote viewer still gets them (nothing better to offer).
        assert_eq!(TransportConfig::default().for_viewer(Some("10.0.0.9".parse().expect("ip"))).udp_addrs.len(), 1);
    }

    #[test]
    fn nat_rewrite_touches_only_host_candidates() {
        let sdp = "a=candidate:1 1 udp 2130706431 10.0.0.5 5000 typ host\r\na=candidate:2 1 udp 1 9.9.9.9 6000 typ srflx raddr 10.0.0.5 rport 5000\r\n";
        let out = rewrite_candidates(sdp, "203.0.113.7".parse().expect("ip"));
        assert!(out.contains("a=candidate:1 1 udp 2130706431 203.0.113.7 5000 typ host\r\n"), "{out}");
        assert!(out.contains("9.9.9.9 6000 typ srflx"), "{out}");
    }

    #[test]
    fn feedback_reads_keyframe_requests_remb_and_loss_for_our_ssrc_only() {
        use rtc::rtcp::reception_report::ReceptionReport;
        let ours = 0x1234;
        let packets: Vec<Box<dyn rtc::rtcp::Packet>> = vec![
            Box::new(ReceiverReport {
                ssrc: 1,
                reports: vec![
                    ReceptionReport { ssrc: 99, fraction_lost: 255, ..Default::default() },
                    ReceptionReport {
                        ssrc: ours,
                        fraction_lost: 64,
                        total_lost: 7,
                        last_sequence_number: 70_000,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            Box::new(ReceiverEstimatedMaximumBitrate { sender_ssrc: 1, bitrate: 2.5e6, ssrcs: vec![ours] }),
        ];
        let fb = Feedback::from_packets(&packets, ours);
        assert_eq!(fb, Feedback { keyframe: false, remb_bps: Some(2.5e6), report: Some((7, 70_000)) });
        let other = Feedback::from_packets(&packets, 7);
        assert_eq!(other, Feedback::default(), "reports about other streams are not ours");
        let pli: Vec<Box<dyn rtc::rtcp::Packet>> =
            vec![Box::new(PictureLossIndication { sender_ssrc: 1, media_ssrc: ours })];
        assert!(Feedback::from_packets(&pli, ours).keyframe);
    }

    #[test]
    fn ntp_time_is_after_1900_offset() {
        let ntp = ntp_of(Instant::now());
        assert!(ntp >> 32 > 2_208_988_800 + 1_700_000_000);
    }
}

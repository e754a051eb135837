//! Send-side congestion control in the interceptor chain of one peer, in libwebrtc's order: transport-wide
//! sequence numbers on every packet (the TWCC sender), the viewer's transport-cc feedback into our
//! [`SendSideEstimator`], and a pacer that releases packets at [`PACING_FACTOR`] × the estimate (a keyframe
//! is spread, never a backlog: the encoder is held to the estimate itself). The estimate, the pacer's queue
//! and what it refused reach the rest of the server through [`Congestion`] (webrtc-rs has no API for them:
//! the estimator publishes, the pacer wrapper publishes).
//!
//! A viewer whose browser does not negotiate transport-cc never produces feedback here: its estimate stays
//! `None` and the bitrate controller goes on using its REMB and receiver reports.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::interceptor::{
    BandwidthEstimator, CongestionControlBuilder, EstimatorStats, Interceptor, PacerBuilder, PacerInterceptor, Packet,
    PacketReport, Slot, StreamInfo, TaggedPacket, TwccSenderBuilder,
};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::sansio::Protocol;
use webrtc::peer_connection::Registry;

use crate::control::congestion::SendSideEstimator;

/// Where the estimate starts: a first picture fast behind a slow link; slow start finds a fast one in
/// about half a second (×1.5 every 200 ms).
pub const START_BPS: f64 = 2_500_000.0;
pub const MIN_BPS: f64 = 300_000.0;
pub const MAX_BPS: f64 = 100_000_000.0;
/// The pacer may send this much faster than the estimate (libwebrtc: 2.5).
pub const PACING_FACTOR: f64 = 2.5;
/// The pacer's bucket: what may leave back to back (a few packets; the driver ticks at ~1 ms).
const PACER_BURST_BITS: f64 = 40_000.0;
/// Packets the pacer holds before it refuses more (the send loop skips to a keyframe long before).
const PACER_QUEUE_PACKETS: usize = 2048;
/// Bits per queued packet, for the backlog's duration (RTP payload + headers).
const PACKET_BITS: f64 = 1250.0 * 8.0;

/// One peer's congestion state, shared between its interceptor chain and its viewer task.
#[derive(Debug, Default)]
pub struct Congestion {
    /// The estimate, bit/s as f64 bits; 0 until the first transport-cc feedback.
    estimate: AtomicU64,
    /// The pacer's rate, bit/s as f64 bits.
    pacing: AtomicU64,
    queued: AtomicU64,
    refused: AtomicU64,
    /// Our packets the viewer reported lost over the last second (before repair), per mille.
    loss_permille: AtomicU64,
    /// The transport-wide sequence ranges (first, count) the latest feedback packets covered.
    covered: Mutex<VecDeque<(u16, u16)>>,
}

/// Feedback ranges remembered (a second and more of feedback at ~10 a second).
const COVERED_RANGES: usize = 32;

impl Congestion {
    /// The send-side estimate, bit/s, once transport-cc feedback came.
    pub fn estimate_bps(&self) -> Option<f64> {
        let v = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        (v > 0.0).then_some(v)
    }

    /// How long the pacer needs for what it holds now.
    pub fn pacer_backlog(&self) -> Duration {
        let rate = f64::from_bits(self.pacing.load(Ordering::Relaxed));
        let queued = self.queued.load(Ordering::Relaxed) as f64;
        if rate > 0.0 { Duration::from_secs_f64(queued * PACKET_BITS / rate) } else { Duration::ZERO }
    }

    /// Packets the pacer refused (its queue was full) since the peer started.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Loss before repair over the last second (0..=1), from transport-cc feedback.
    pub fn loss(&self) -> f64 {
        self.loss_permille.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

impl Congestion {
    fn covered(&self, seq: u16) -> bool {
        let covered = self.covered.lock().unwrap_or_else(|e| e.into_inner());
        covered.iter().any(|&(first, count)| seq.wrapping_sub(first) < count)
    }
}

/// Our estimator as the congestion-control interceptor sees it: its target is the *pacing* rate (that is
/// what the interceptor hands the pacer); the estimate itself is published for the application.
struct Estimator {
    inner: SendSideEstimator,
    out: Arc<Congestion>,
    /// RTP sequence numbers recently reported at all, and reported arrived.
    seen: SeqMemory,
    arrived: SeqMemory,
}

/// A set of the last [`SEQ_MEMORY`] RTP sequence numbers inserted (several seconds of a busy stream).
#[derive(Default)]
struct SeqMemory {
    order: VecDeque<u16>,
    set: std::collections::HashSet<u16>,
}

const SEQ_MEMORY: usize = 4096;

impl SeqMemory {
    /// True when `seq` was not in the set.
    fn insert(&mut self, seq: u16) -> bool {
        if !self.set.insert(seq) {
            return false;
        }
        self.order.push_back(seq);
        if self.order.len() > SEQ_MEMORY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }

    fn contains(&self, seq: &u16) -> bool {
        self.set.contains(seq)
    }
}

impl BandwidthEstimator for Estimator {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        // A packet reported "not arrived" only because the feedback that covered it was itself lost (the
        // history reports every packet up to the highest acknowledged) is not known lost: at 2 % loss on
        // the way back that tripled the loss we saw (measured). Only packets some feedback covered count.
        // And loss is measured on first transmissions only: a further copy of a packet (redundancy, a
        // retransmission) that arrives after another copy did is dropped by the viewer's SRTP replay check
        // and reported missing; a copy counts only as the first arrival of a packet whose first copy was lost
        // (for the delay and the received rate).
        let mut known = Vec::with_capacity(reports.len());
        for r in reports {
            let first = self.seen.insert(r.rtp_sequence_number);
            let arrived_before = self.arrived.contains(&r.rtp_sequence_number);
            let keep = if r.arrived {
                self.arrived.insert(r.rtp_sequence_number);
                first || !arrived_before
            } else {
                first && (!r.is_twcc || self.out.covered(r.twcc_sequence_number))
            };
            if keep {
                known.push(r.clone());
            }
        }
        self.inner.on_reports(now, &known);
        let state = self.inner.state();
        self.out.estimate.store(state.estimate_bps.to_bits(), Ordering::Relaxed);
        self.out.loss_permille.store((state.loss * 1000.0).round() as u64, Ordering::Relaxed);
        self.out.pacing.store(self.target_bitrate().to_bits(), Ordering::Relaxed);
    }

    fn target_bitrate(&self) -> f64 {
        self.inner.estimate_bps() * PACING_FACTOR
    }

    fn stats(&self) -> EstimatorStats {
        EstimatorStats::default()
    }
}

/// An interceptor that looks at (and may mark) every inbound RTCP compound packet on its way and passes
/// everything through: the keyframe-request forwarder and the feedback-coverage note are two of them.
pub(crate) struct ReadTap<F> {
    tap: F,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl<F: FnMut(&mut TaggedPacket) + Send + Sync> ReadTap<F> {
    pub(crate) fn new(tap: F) -> ReadTap<F> {
        ReadTap { tap, read: VecDeque::new(), write: VecDeque::new() }
    }
}

impl<F: FnMut(&mut TaggedPacket) + Send + Sync> Protocol<TaggedPacket, TaggedPacket, ()> for ReadTap<F> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if matches!(msg.message.packet, Packet::Rtcp(_)) {
            (self.tap)(&mut msg);
        }
        self.read.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl<F: FnMut(&mut TaggedPacket) + Send + Sync> Interceptor for ReadTap<F> {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

/// Notes which transport-wide sequence numbers each transport-cc feedback covers, before the congestion
/// controller reads it (the read leg walks up from the wire, and this sits below it).
fn note_coverage(out: &Congestion, msg: &TaggedPacket) {
    let Packet::Rtcp(packets) = &msg.message.packet else { return };
    for p in packets {
        if let Some(cc) = p.as_any().downcast_ref::<TransportLayerCc>() {
            let mut covered = out.covered.lock().unwrap_or_else(|e| e.into_inner());
            covered.push_back((cc.base_sequence_number, cc.packet_status_count));
            while covered.len() > COVERED_RANGES {
                covered.pop_front();
            }
        }
    }
}

/// rtc-interceptor's pacer, publishing its queue.
struct ObservedPacer {
    inner: PacerInterceptor,
    out: Arc<Congestion>,
}

impl ObservedPacer {
    fn publish(&self) {
        self.out.queued.store(self.inner.queued() as u64, Ordering::Relaxed);
        self.out.refused.store(self.inner.dropped(), Ordering::Relaxed);
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for ObservedPacer {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.inner.handle_read(msg)
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.inner.poll_read()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        let r = self.inner.handle_write(msg);
        self.publish();
        r
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.inner.poll_write()
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        let r = self.inner.handle_timeout(now);
        self.publish();
        r
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        self.inner.poll_timeout()
    }
    fn close(&mut self) -> Result<(), Self::Error> {
        self.inner.close()
    }
}

impl Interceptor for ObservedPacer {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_local_stream(info);
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_local_stream(info);
    }
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_remote_stream(info);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_remote_stream(info);
    }
}

/// Add the send side of congestion control to `registry` (after the defaults, which negotiate the
/// transport-cc feedback and header extension), publishing into `out`.
pub(crate) fn register(registry: Registry, out: &Arc<Congestion>) -> Registry {
    let inner = SendSideEstimator::new(START_BPS, MIN_BPS, MAX_BPS);
    out.pacing.store((START_BPS * PACING_FACTOR).to_bits(), Ordering::Relaxed);
    let estimator =
        Estimator { inner, out: Arc::clone(out), seen: SeqMemory::default(), arrived: SeqMemory::default() };
    let pacer = PacerBuilder::new()
        .with_target_bitrate(START_BPS * PACING_FACTOR)
        .with_burst_bits(PACER_BURST_BITS)
        .with_queue_limit(PACER_QUEUE_PACKETS)
        .build();
    registry
        .with(Slot::from(500), {
            let out = Arc::clone(out);
            ReadTap::new(move |msg: &mut TaggedPacket| note_coverage(&out, msg))
        })
        .with(Slot::CongestionControl, CongestionControlBuilder::new(estimator).build())
        .with(Slot::TwccSender, TwccSenderBuilder::new().build())
        .with(Slot::Pacer, ObservedPacer { inner: pacer, out: Arc::clone(out) })
}

//! The pipeline core on simulated time: a synthetic source, the CPU converter and the real x264 encoder,
//! stepped one frame period at a time by `Sim` exactly as the capture and media threads carry out the
//! core's decisions (without their sleeps). No compositor, browser or wall clock.

use std::time::{Duration, Instant};

use super::*;
use crate::capture::synthetic::{Motion, SyntheticSource};
use crate::config::Config;
use crate::convert::ConvertChoice;
use crate::encode::EncodedFrame;
use crate::media::{ConvertStage, EncodeStage};

const PERIOD: Duration = Duration::from_micros(16_667);
const CEILING_KBPS: u32 = 2000;

/// What the media side sent, per step.
#[derive(Debug, Clone, PartialEq)]
enum Sent {
    Encoded { idr: bool, bitrate_kbps: u32 },
    Resent,
}

struct Sim {
    now: Instant,
    core: PipelineCore,
    source: SyntheticSource,
    convert: ConvertStage,
    encode: EncodeStage,
    /// A converted picture waiting for the media side.
    fresh_picture: bool,
    have_picture: bool,
    sent: Vec<Sent>,
}

impl Sim {
    fn new(motion: Motion) -> Sim {
        let mut cfg = Config::default();
        cfg.encoder.bitrate_kbps = Some(CEILING_KBPS);
        Sim {
            now: Instant::now(),
            core: PipelineCore::new(60),
            source: SyntheticSource::new(64, 48, motion),
            convert: ConvertStage::new(ConvertChoice::Cpu),
            encode: EncodeStage::new(&cfg, crate::encode::Codec::H264),
            fresh_picture: false,
            have_picture: false,
            sent: Vec::new(),
        }
    }

    fn event(&mut self, e: Event) {
        self.core.handle(self.now, e);
    }

    /// Advance by `dt`, then run the capture side and the media side once each.
    fn step(&mut self, dt: Duration) {
        self.now += dt;
        let now = self.now;
        if self.core.poll_capture(now) == CaptureStep::Capture
            && let Some(info) = self.source.capture(now, now)
        {
            self.core.handle(now, Event::FrameCaptured { requested_at: info.requested_at });
            self.convert.convert(self.source.pixels(), &info.layout, false, &info.damage).expect("convert");
            self.fresh_picture = true;
            self.have_picture = true;
        }
        if std::mem::take(&mut self.fresh_picture) {
            let plan = self.core.plan_encode(now, CEILING_KBPS);
            self.encode.set_bitrate(plan.bitrate_kbps);
            let frame = self.encode_picture(plan.idr);
            self.sent.push(Sent::Encoded { idr: frame.idr, bitrate_kbps: plan.bitrate_kbps });
        } else {
            match self.core.poll_refresh(now, self.have_picture) {
                Some(Refresh::ResendLastIdr) => {
                    self.core.handle(now, Event::Published { bytes: 1000, idr: true });
                    self.sent.push(Sent::Resent);
                }
                Some(Refresh::EncodeLastAsIdr) => {
                    let frame = self.encode_picture(true);
                    self.sent.push(Sent::Encoded { idr: frame.idr, bitrate_kbps: 0 });
                }
                None => {}
            }
        }
    }

    fn encode_picture(&mut self, idr: bool) -> EncodedFrame {
        let (frame, _) = self.encode.encode(self.convert.picture(), self.now, idr).expect("encode");
        self.core.handle(self.now, Event::Published { bytes: frame.data.len(), idr: frame.idr });
        frame
    }

    fn steps(&mut self, n: usize) {
        for _ in 0..n {
            self.step(PERIOD);
        }
    }

    fn idrs(&self) -> usize {
        self.sent.iter().filter(|s| matches!(s, Sent::Encoded { idr: true, .. })).count()
    }
}

#[test]
fn a_keyframe_request_makes_the_very_next_frame_an_idr() {
    let mut sim = Sim::new(Motion::Moving);
    sim.event(Event::ViewerJoined { id: 1 });
    sim.steps(30);
    assert_eq!(sim.sent.len(), 30, "one frame per period at the 60 fps cap");
    assert_eq!(sim.sent[0], Sent::Encoded { idr: true, bitrate_kbps: CEILING_KBPS }, "a new viewer starts on an IDR");
    assert_eq!(sim.idrs(), 1, "then only P frames: {:?}", sim.sent);
    sim.event(Event::KeyframeRequested);
    sim.steps(1);
    assert!(matches!(sim.sent[30], Sent::Encoded { idr: true, .. }), "the frame after the PLI: {:?}", sim.sent[30]);
    sim.steps(10);
    assert_eq!(sim.idrs(), 2, "one IDR per request");
    // A storm of requests costs one IDR per KEYFRAME_INTERVAL, not one per request.
    for _ in 0..20 {
        sim.event(Event::KeyframeRequested);
        sim.steps(1);
    }
    let interval_frames = (KEYFRAME_INTERVAL.as_secs_f64() / PERIOD.as_secs_f64()).floor() as usize;
    assert!(sim.idrs() - 2 <= 20 / interval_frames + 1, "{} IDRs for 20 requests in 1/3 s", sim.idrs() - 2);
    assert!(sim.idrs() > 2, "the storm got its IDR");
}

#[test]
fn the_bitrate_steps_down_on_congestion_and_back_up_after() {
    let mut sim = Sim::new(Motion::Moving);
    sim.event(Event::ViewerJoined { id: 1 });
    sim.steps(1);
    // Past the new viewer's grace period (at 1 frame/s: the cap allows it, and it keeps the test short).
    for _ in 0..6 {
        sim.step(Duration::from_secs(1));
    }
    let before = sim.sent.len();
    assert!(sim.sent.iter().all(|s| matches!(s, Sent::Encoded { bitrate_kbps: CEILING_KBPS, .. })), "{:?}", sim.sent);
    // 30 % loss: the link is overrun.
    sim.event(Event::Loss { id: 1, fraction: 0.3 });
    sim.steps(1);
    let Sent::Encoded { bitrate_kbps: cut, .. } = sim.sent[before] else { panic!("no frame: {:?}", sim.sent) };
    assert!(cut < CEILING_KBPS / 2, "the very next frame is encoded below the ceiling: {cut} kbit/s");
    assert!(cut >= MIN_BITRATE_KBPS, "never below the floor: {cut}");
    // The loss stops (fresh reports of none): +15 % per second back to the ceiling.
    let mut rates = vec![cut];
    for _ in 0..20 {
        sim.step(Duration::from_millis(500));
        sim.event(Event::Loss { id: 1, fraction: 0.0 });
        sim.step(Duration::from_millis(500));
        if let Some(Sent::Encoded { bitrate_kbps, .. }) = sim.sent.last() {
            rates.push(*bitrate_kbps);
        }
    }
    assert!(rates.windows(2).all(|w| w[1] >= w[0]), "recovery only rises: {rates:?}");
    assert_eq!(rates.last(), Some(&CEILING_KBPS), "back at the ceiling: {rates:?}");
    assert!(rates[1] < CEILING_KBPS, "in steps, not at once: {rates:?}");
}

#[test]
fn no_feedback_after_a_cut_means_no_recovery() {
    let mut sim = Sim::new(Motion::Moving);
    sim.event(Event::ViewerJoined { id: 1 });
    for _ in 0..6 {
        sim.step(Duration::from_secs(1));
    }
    sim.event(Event::Loss { id: 1, fraction: 0.3 });
    sim.steps(1);
    let Some(&Sent::Encoded { bitrate_kbps: cut, .. }) = sim.sent.last() else { panic!("{:?}", sim.sent) };
    assert!(cut < CEILING_KBPS, "cut: {cut}");
    // The overrun link delays the receiver's reports as well: 5 s of silence.
    let before = sim.sent.len();
    for _ in 0..5 {
        sim.step(Duration::from_secs(1));
    }
    let held: Vec<_> = sim.sent[before..].to_vec();
    assert!(!held.is_empty() && held.iter().all(|s| *s == Sent::Encoded { idr: false, bitrate_kbps: cut }), "{held:?}");
    // The first report that says the link is fine starts the recovery.
    sim.event(Event::Loss { id: 1, fraction: 0.0 });
    sim.step(Duration::from_millis(500));
    let Some(&Sent::Encoded { bitrate_kbps, .. }) = sim.sent.last() else { panic!("{:?}", sim.sent) };
    assert!(bitrate_kbps > cut, "{cut} -> {bitrate_kbps}");
}

#[test]
fn nobody_watching_means_nothing_is_captured() {
    let mut sim = Sim::new(Motion::Moving);
    sim.steps(600);
    assert_eq!((sim.source.frames(), sim.sent.len()), (0, 0), "10 s without viewers: nothing captured or sent");
    sim.event(Event::ViewerJoined { id: 7 });
    sim.steps(1);
    assert_eq!(sim.source.frames(), 1, "a viewer: capture starts at the next step");
    assert!(matches!(sim.sent[..], [Sent::Encoded { idr: true, .. }]), "{:?}", sim.sent);
    sim.event(Event::ViewerLeft { id: 7 });
    sim.steps(60);
    assert_eq!(sim.source.frames(), 1, "the last viewer left: capture stops");
}

#[test]
fn a_static_screen_costs_nothing_and_a_keyframe_request_resends_the_last_idr() {
    let mut sim = Sim::new(Motion::Static);
    sim.event(Event::ViewerJoined { id: 1 });
    sim.steps(120);
    assert_eq!(sim.sent, [Sent::Encoded { idr: true, bitrate_kbps: CEILING_KBPS }], "one frame for a static screen");
    sim.event(Event::KeyframeRequested);
    sim.steps(1);
    assert_eq!(sim.sent.last(), Some(&Sent::Resent), "nothing followed the IDR: it is sent again, not re-encoded");
    // After motion the last frame is a P frame: the request re-encodes the last picture as an IDR.
    sim.source.set_motion(Motion::Moving);
    sim.steps(5);
    sim.source.set_motion(Motion::Static);
    sim.steps(30);
    let n = sim.sent.len();
    sim.event(Event::KeyframeRequested);
    sim.steps(1);
    assert_eq!(sim.sent.len(), n + 1);
    assert!(matches!(sim.sent[n], Sent::Encoded { idr: true, .. }), "{:?}", sim.sent[n]);
}

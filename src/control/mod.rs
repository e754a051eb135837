//! Sans-IO decisions: inputs and `now` in, decisions out; no clocks, sockets or threads, so they are tested
//! on simulated time.

pub mod congestion;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Rate-limits keyframe requests (new viewers, PLI/FIR, lagging peers) so that a storm of requests costs at
/// most one IDR per interval. A request inside the interval is remembered and granted when it ends.
#[derive(Debug, Clone)]
pub struct KeyframeLimiter {
    min_interval: Duration,
    last_granted: Option<Instant>,
    pending: bool,
}

impl KeyframeLimiter {
    pub fn new(min_interval: Duration) -> KeyframeLimiter {
        KeyframeLimiter { min_interval, last_granted: None, pending: false }
    }

    /// Someone wants a keyframe.
    pub fn request(&mut self) {
        self.pending = true;
    }

    /// Called once per frame about to be encoded: should it be an IDR?
    pub fn poll(&mut self, now: Instant) -> bool {
        if !self.pending {
            return false;
        }
        match self.last_granted {
            Some(t) if now.saturating_duration_since(t) < self.min_interval => false,
            _ => {
                self.pending = false;
                self.last_granted = Some(now);
                true
            }
        }
    }
}

/// Frame pacing for the `--fps` cap: a frame may be requested one period after the previous request that
/// delivered a frame. (Requests are what cost: the compositor completes them at its own next frame.)
#[derive(Debug, Clone)]
pub struct FramePacer {
    period: Duration,
    next: Option<Instant>,
}

impl FramePacer {
    pub fn new(fps: u32) -> FramePacer {
        FramePacer { period: Duration::from_secs_f64(1.0 / f64::from(fps.max(1))), next: None }
    }

    /// How long to wait at `now` before the next request (zero: go).
    pub fn wait_time(&self, now: Instant) -> Duration {
        self.next.map_or(Duration::ZERO, |next| next.saturating_duration_since(now))
    }

    /// A frame requested at `requested_at` arrived.
    pub fn frame_delivered(&mut self, requested_at: Instant) {
        self.next = Some(requested_at + self.period);
    }
}

/// Loss from receiver reports over at least [`LOSS_WINDOW`], from their cumulative counters. A browser
/// sends a receiver report with every NACK, so the per-report "fraction lost" covers a few packets just
/// when one went missing: at 2 % random loss Chromium reported 25–50 % (measured), and reading that as
/// congestion cut the rate to the floor.
#[derive(Debug, Clone, Default)]
pub struct LossMeter {
    /// (when, cumulative lost, extended highest sequence number received).
    reports: VecDeque<(Instant, i64, i64)>,
}

/// The span a loss fraction is measured over.
pub const LOSS_WINDOW: Duration = Duration::from_secs(1);

impl LossMeter {
    /// A report's cumulative counters; the fraction lost over the last [`LOSS_WINDOW`] or more, once the
    /// reports span that long.
    pub fn on_report(&mut self, now: Instant, total_lost: u32, highest_seq: u32) -> Option<f64> {
        // total_lost is a signed 24-bit field (duplicates can make it negative).
        let lost = i64::from(((total_lost << 8) as i32) >> 8);
        self.reports.push_back((now, lost, i64::from(highest_seq)));
        // Keep the newest report at least a window old as the base.
        while self.reports.len() > 2 && now.saturating_duration_since(self.reports[1].0) >= LOSS_WINDOW {
            self.reports.pop_front();
        }
        let &(t0, lost0, seq0) = self.reports.front()?;
        if now.saturating_duration_since(t0) < LOSS_WINDOW {
            return None;
        }
        let expected = i64::from(highest_seq) - seq0;
        (expected > 0).then(|| ((lost - lost0) as f64 / expected as f64).clamp(0.0, 1.0))
    }
}

/// Feedback older than this is not acted on.
const FEEDBACK_MAX_AGE: Duration = Duration::from_secs(2);
/// Window over which the bitrate actually sent is measured.
const SENT_WINDOW: Duration = Duration::from_secs(1);
/// Loss above this fraction is congestion; below `LOSS_OK` the link is fine.
const LOSS_CONGESTED: f64 = 0.10;
const LOSS_OK: f64 = 0.02;
/// The encoder gets this share of a send-side estimate (the rest: retransmissions, RTP and SRTP overhead).
const SEND_SIDE_SHARE: f64 = 0.9;

/// What one viewer last told us about its link.
#[derive(Debug, Clone)]
struct LinkFeedback {
    joined: Instant,
    /// Receiver-estimated maximum bitrate (REMB) in kbit/s, and when it came.
    remb: Option<(f64, Instant)>,
    /// Fraction of packets lost since the previous receiver report, and when it came.
    loss: Option<(f64, Instant)>,
    /// The send-side estimate from its transport-cc feedback, kbit/s, and when it was read.
    send_side: Option<(f64, Instant)>,
}

impl LinkFeedback {
    /// When this viewer last told us anything.
    fn latest(&self) -> Option<Instant> {
        [self.remb.map(|(_, t)| t), self.loss.map(|(_, t)| t), self.send_side.map(|(_, t)| t)]
            .into_iter()
            .flatten()
            .max()
    }
}

/// Chooses the encoder's bitrate from the viewers' feedback (REMB and receiver-report loss), below the
/// configured bitrate (the ceiling). One encoder feeds every viewer, so the slowest link sets the rate.
///
/// The trap it avoids: a receiver's REMB follows the rate it *receives* (Chromium keeps it between ~0.85× and
/// 1.5× the incoming rate), so on a desktop that is mostly static the estimate is tiny and hovers around what
/// we send; obeying it would send the next burst of motion at a few hundred kbit/s. A REMB therefore counts as
/// congestion only when it is below 90 % of what we actually sent over the last second *and* that was at least
/// half the current rate (we were using the rate, not idling under it); loss above 10 % counts whatever we sent.
/// New viewers get a grace period (their estimator starts from a low default). A cut goes to the estimate (or
/// sent × (1 − loss/2)), at most once per second, never below the floor; without loss above 10 % it is also
/// never below half the current rate in one step (an estimate alone can dip spuriously); recovery is +15 % per
/// second until the ceiling is reached again, and only on feedback that arrived since the last change and says
/// the link is fine: silence is not good news (an overrun link delays the receiver's reports as well, and
/// raising the rate into it keeps the picture frozen).
#[derive(Debug, Clone)]
pub struct BitrateController {
    viewers: HashMap<u64, LinkFeedback>,
    /// Current cap in kbit/s; `None` = the ceiling.
    cap: Option<f64>,
    last_change: Option<Instant>,
    sent: VecDeque<(Instant, usize)>,
    sent_bytes: usize,
    min_kbps: u32,
    grace: Duration,
}

impl BitrateController {
    /// `min_kbps`: never go below this. `grace`: how long a new viewer's feedback is ignored.
    pub fn new(min_kbps: u32, grace: Duration) -> BitrateController {
        BitrateController {
            viewers: HashMap::new(),
            cap: None,
            last_change: None,
            sent: VecDeque::new(),
            sent_bytes: 0,
            min_kbps: min_kbps.max(1),
            grace,
        }
    }

    pub fn viewer_joined(&mut self, id: u64, now: Instant) {
        self.viewers.insert(id, LinkFeedback { joined: now, remb: None, loss: None, send_side: None });
    }

    /// A viewer left; with nobody left the cap is forgotten (the next viewer starts at full quality).
    pub fn viewer_left(&mut self, id: u64) {
        self.viewers.remove(&id);
        if self.viewers.is_empty() {
            self.cap = None;
        }
    }

    /// A REMB from viewer `id`, in bit/s.
    pub fn on_remb(&mut self, id: u64, bps: f64, now: Instant) {
        if let Some(v) = self.viewers.get_mut(&id)
            && bps.is_finite()
            && bps >= 0.0
        {
            v.remb = Some((bps / 1000.0, now));
        }
    }

    /// The send-side estimate for viewer `id` (transport-cc feedback), bit/s.
    pub fn on_send_side(&mut self, id: u64, bps: f64, now: Instant) {
        if let Some(v) = self.viewers.get_mut(&id)
            && bps.is_finite()
            && bps > 0.0
        {
            v.send_side = Some((bps / 1000.0, now));
        }
    }

    /// A receiver report from viewer `id`: `fraction` of packets lost since its previous report (0..=1).
    pub fn on_loss(&mut self, id: u64, fraction: f64, now: Instant) {
        if let Some(v) = self.viewers.get_mut(&id)
            && (0.0..=1.0).contains(&fraction)
        {
            v.loss = Some((fraction, now));
        }
    }

    /// An encoded frame of `bytes` was published.
    pub fn on_sent(&mut self, bytes: usize, now: Instant) {
        self.sent.push_back((now, bytes));
        self.sent_bytes += bytes;
        self.expire_sent(now);
    }

    fn expire_sent(&mut self, now: Instant) {
        while let Some(&(t, b)) = self.sent.front() {
            if now.saturating_duration_since(t) <= SENT_WINDOW {
                break;
            }
            self.sent.pop_front();
            self.sent_bytes -= b;
        }
    }

    /// Bitrate actually sent over the last second, kbit/s.
    pub(crate) fn sent_kbps(&mut self, now: Instant) -> f64 {
        self.expire_sent(now);
        self.sent_bytes as f64 * 8.0 / 1000.0 / SENT_WINDOW.as_secs_f64()
    }

    /// The current cap (kbit/s), if feedback has lowered the rate.
    pub fn cap_kbps(&self) -> Option<u32> {
        self.cap.map(|c| c.round() as u32)
    }

    /// The lowest fresh REMB (kbit/s) of any viewer past its grace period, for status reports.
    pub fn estimate_kbps(&self, now: Instant) -> Option<u32> {
        self.fresh(now)
            .filter_map(|v| v.send_side.or(v.remb).map(|(kbps, _)| kbps))
            .reduce(f64::min)
            .map(|k| k.round() as u32)
    }

    fn fresh(&self, now: Instant) -> impl Iterator<Item = LinkFeedback> + '_ {
        let grace = self.grace;
        self.viewers.values().filter(move |v| now.saturating_duration_since(v.joined) >= grace).map(move |v| {
            let recent = |t: Instant| now.saturating_duration_since(t) <= FEEDBACK_MAX_AGE;
            LinkFeedback {
                joined: v.joined,
                remb: v.remb.filter(|&(_, t)| recent(t)),
                loss: v.loss.filter(|&(_, t)| recent(t)),
                send_side: v.send_side.filter(|&(_, t)| recent(t)),
            }
        })
    }

    /// Whether every viewer past its grace period has sent feedback since the last rate change (and there
    /// is at least one): only then does "no congestion" mean the link is fine rather than silent.
    fn all_heard_since_change(&self, fresh: &[LinkFeedback]) -> bool {
        !fresh.is_empty() && fresh.iter().all(|v| v.latest().is_some_and(|t| self.last_change.is_none_or(|c| t > c)))
    }

    /// The bitrate (kbit/s) to encode at now, given the configured `ceiling_kbps`.
    pub fn poll(&mut self, now: Instant, ceiling_kbps: u32) -> u32 {
        let ceiling = f64::from(ceiling_kbps.max(1));
        let floor = f64::from(self.min_kbps).min(ceiling);
        let sent = self.sent_kbps(now);
        let current = self.cap.unwrap_or(ceiling).min(ceiling);
        // Send-side estimates are followed at once (the estimator already paces its own changes), with a
        // margin for retransmissions and packet overhead, and not subject to the grace period: the viewers
        // that have one need nothing else.
        let send_side = self
            .viewers
            .values()
            .filter_map(|v| v.send_side.filter(|&(_, t)| now.saturating_duration_since(t) <= FEEDBACK_MAX_AGE))
            .map(|(kbps, _)| kbps * SEND_SIDE_SHARE)
            .reduce(f64::min);
        let fresh: Vec<LinkFeedback> = self.fresh(now).filter(|v| v.send_side.is_none()).collect();
        if send_side.is_some() && fresh.is_empty() {
            self.cap = None; // nobody left whom the REMB/loss rules speak for
        }
        let worst_loss = fresh.iter().filter_map(|v| v.loss.map(|(l, _)| l)).reduce(f64::max);
        // The largest rate each viewer's feedback allows, where it signals congestion.
        let mut limit: Option<f64> = None;
        for v in &fresh {
            if let Some((remb, _)) = v.remb
                && remb < 0.9 * sent
                && sent >= 0.5 * current
            {
                limit = Some(limit.map_or(remb, |l| l.min(remb)));
            }
            if let Some((loss, _)) = v.loss
                && loss > LOSS_CONGESTED
            {
                let l = sent.min(current) * (1.0 - 0.5 * loss);
                limit = Some(limit.map_or(l, |x| x.min(l)));
            }
        }
        let since_change = self.last_change.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        match limit {
            Some(l) if l < current * 0.95 && since_change >= Duration::from_secs(1) => {
                // Halving bounds a cut on the estimate alone; with heavy loss the link is plainly overrun, and
                // going straight down drains its queue (and lets the next keyframe through) seconds sooner.
                let overrun = worst_loss.is_some_and(|l| l > LOSS_CONGESTED);
                let to = if overrun { l.max(floor) } else { l.max(current * 0.5).max(floor) };
                self.cap = Some(to);
                self.last_change = Some(now);
                tracing::info!(
                    from_kbps = current.round(),
                    to_kbps = to.round(),
                    sent_kbps = sent.round(),
                    remb_kbps = ?self.estimate_kbps(now),
                    loss = ?worst_loss,
                    "viewer feedback: lowering the bitrate"
                );
            }
            Some(_) => {}
            None if self.cap.is_some()
                && since_change >= Duration::from_secs(1)
                && worst_loss.is_none_or(|l| l < LOSS_OK)
                && self.all_heard_since_change(&fresh) =>
            {
                let next = current * 1.15;
                self.cap = (next < ceiling).then_some(next);
                self.last_change = Some(now);
            }
            None => {}
        }
        let legacy = self.cap.map_or(ceiling, |c| c.min(ceiling));
        match send_side {
            Some(s) => s.min(legacy).max(floor).round() as u32,
            None => legacy.round() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_measured_over_a_second_of_reports_not_per_report() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut m = LossMeter::default();
        // 100 packets a second, 2 lost in each, reported every 100 ms (a per-report fraction would read 0 %
        // or 50 %).
        assert_eq!(m.on_report(ms(0), 0, 1000), None);
        let mut last = None;
        for i in 1..=30u32 {
            last = m.on_report(ms(u64::from(i) * 100), i / 5, 1000 + i * 10);
        }
        let f = last.expect("a fraction after a second");
        assert!((0.015..=0.025).contains(&f), "{f}");
        // A negative cumulative count (duplicates) and a counter going back are not loss.
        assert_eq!(m.on_report(ms(3100), 0xFF_FFFF, 1000 + 31 * 10), Some(0.0));
    }

    #[test]
    fn pacer_caps_the_request_rate() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = FramePacer::new(50); // 20 ms period
        assert_eq!(p.wait_time(ms(0)), Duration::ZERO, "first request at once");
        p.frame_delivered(ms(0));
        assert_eq!(p.wait_time(ms(5)), Duration::from_millis(15));
        assert_eq!(p.wait_time(ms(20)), Duration::ZERO);
        // A frame that took longer than a period (compositor at 30 Hz) allows the next request at once.
        p.frame_delivered(ms(20));
        assert_eq!(p.wait_time(ms(53)), Duration::ZERO);
        assert_eq!(FramePacer::new(0).period, Duration::from_secs(1), "0 fps is treated as 1");
    }

    #[test]
    fn bursts_collapse_to_one_idr_per_interval() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut l = KeyframeLimiter::new(Duration::from_millis(500));
        assert!(!l.poll(ms(0)), "nothing requested");
        l.request();
        l.request();
        assert!(l.poll(ms(0)));
        assert!(!l.poll(ms(16)), "granted once");
        l.request();
        assert!(!l.poll(ms(100)), "inside the interval");
        assert!(!l.poll(ms(499)));
        assert!(l.poll(ms(500)), "remembered and granted when the interval ends");
        assert!(!l.poll(ms(516)));
    }
    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Send `kbps` for `secs` seconds (60 frames of 17 ms each) starting at `from` ms, polling every frame; returns the last
    /// target and the time reached.
    fn stream(c: &mut BitrateController, t0: Instant, from: u64, secs: u64, kbps: f64, ceiling: u32) -> (u32, u64) {
        let mut target = ceiling;
        let mut ms = from;
        for _ in 0..secs * 60 {
            ms += 17;
            c.on_sent((kbps * 1000.0 / 8.0 / 60.0) as usize, at(t0, ms));
            target = c.poll(at(t0, ms), ceiling);
        }
        (target, ms)
    }

    #[test]
    fn remb_of_an_application_limited_stream_changes_nothing() {
        let t0 = Instant::now();
        let mut c = BitrateController::new(300, Duration::from_secs(5));
        c.viewer_joined(1, t0);
        // A static desktop: 50 kbit/s sent, Chromium estimates ~1.5x that. Must not cap the encoder.
        c.on_remb(1, 85_000.0, at(t0, 6000));
        let (target, _) = stream(&mut c, t0, 6000, 2, 50.0, 8000);
        assert_eq!(target, 8000);
        assert_eq!(c.cap_kbps(), None);
    }

    #[test]
    fn remb_just_under_a_small_application_limited_rate_changes_nothing() {
        let t0 = Instant::now();
        let mut c = BitrateController::new(300, Duration::ZERO);
        c.viewer_joined(1, t0);
        // A moving bar costs 130 kbit/s of an 8.7 Mbit/s budget; Chromium's estimate dips to 0.85x of that
        // (measured: REMB 98 while sending 127). That is no reason to cap the encoder at 300.
        c.on_remb(1, 98_000.0, t0);
        let (target, _) = stream(&mut c, t0, 0, 2, 127.0, 8709);
        assert_eq!(target, 8709);
    }

    #[test]
    fn a_send_side_estimate_sets_the_rate_at_once_and_the_slowest_viewer_wins() {
        let t0 = Instant::now();
        let mut c = BitrateController::new(300, Duration::from_secs(5));
        c.viewer_joined(1, t0);
        c.viewer_joined(2, t0);
        // No grace and no "was the rate used" rule: the estimator already judged that.
        c.on_send_side(1, 5_000_000.0, at(t0, 100));
        c.on_send_side(2, 3_000_000.0, at(t0, 100));
        assert_eq!(c.poll(at(t0, 100), 8700), 2700, "0.9 x the lowest estimate");
        assert_eq!(c.estimate_kbps(at(t0, 6000)), None, "stale after 2 s");
        c.on_send_side(2, 20_000_000.0, at(t0, 6000));
        c.on_send_side(1, 20_000_000.0, at(t0, 6000));
        assert_eq!(c.poll(at(t0, 6000), 8700), 8700, "never above the ceiling");
        assert_eq!(c.estimate_kbps(at(t0, 6000)), Some(20_000));
        // A viewer that has one is not also judged by its REMB.
        c.on_remb(1, 100_000.0, at(t0, 6100));
        assert_eq!(c.poll(at(t0, 6100), 8700), 8700);
        c.on_send_side(1, 100.0, at(t0, 6200));
        assert_eq!(c.poll(at(t0, 6200), 8700), 300, "the floor holds");
    }

    #[test]
    fn new_viewers_low_start_estimate_is_ignored_during_grace() {
        let t0 = Instant::now();
        let mut c = BitrateController::new(300, Duration::from_secs(5));
        c.viewer_joined(1, t0);
        c.on_remb(1, 300_000.0, at(t0, 500));
        let (target, _) = stream(&mut c, t0, 500, 2, 8000.0, 8000);
        assert_eq!(target, 8000, "inside the grace period");
    }

    #[test]
    fn congestion_cuts_at_once_and_recovery_is_gradual() {
        let t0 = Instant::now();
        let mut c = BitrateController::new(300, Duration::from_secs(5));
        c.viewer_joined(1, t0);
        let (_, ms) = stream(&mut c, t0, 6000, 1, 8000.0, 8000);
        // The link carries 3 Mbit/s: REMB says so while we send 8.
        c.on_remb(1, 3_000_000.0, at(t0, ms));
        c.on_sent(16_000, at(t0, ms + 1));
        assert_eq!(c.poll(at(t0, ms + 1), 8000), 4000, "cut on the first poll, by half at most");
        // Cuts are at most one per second: a lower estimate right after waits.
        c.on_remb(1, 2_000_000.0, at(t0, ms + 100));
        assert_eq!(c.poll(at(t0, ms + 100), 8000), 4000);
        let (target, t) = stream(&mut c, t0, ms + 100, 1, 4000.0, 8000);
        assert_eq!(target, 2000, "then follows it");
        // The link clears: the estimate rises above what we send. +15 %/s, never a jump to the ceiling.
        let mut last = 2000;
        let mut t = t;
        for _ in 0..3 {
            c.on_remb(1, 10_000_000.0, at(t0, t));
            let (target, end) = stream(&mut c, t0, t, 1, f64::from(last), 8000);
            assert!(target > last && f64::from(target) <= f64::from(last) * 1.16, "{last} -> {target}");
            last = target;
            t = end;
        }
        // Silence is not good news: without feedback the rate holds.
        let (target, mut t) = stream(&mut c, t0, t, 3, f64::from(last), 8000);
        assert_eq!(target, last, "no feedback, no recovery");
        for _ in 0..12 {
            c.on_remb(1, 10_000_000.0, at(t0, t + 1));
            (last, t) = stream(&mut c, t0, t, 1, f64::from(last), 8000);
        }
        let target = last;
        assert_eq!(target, 8000, "back at the ceiling");
        assert_eq!(c.cap_kbps(), None);
    }

    #[test]
    fn an_overrun_link_is_cut_to_its_estimate_at_once() {
        let t0 = Instant::now();
        let mut c = BitrateController::new(300, Duration::ZERO);
        c.viewer_joined(1, t0);
        let (_, ms) = stream(&mut c, t0, 0, 1, 8000.0, 8000);
        // 2 Mbit/s link: 30 % loss and an estimate of 1.3 Mbit/s. No halving steps: straight to the estimate.
        c.on_loss(1, 0.3, at(t0, ms));
        c.on_remb(1, 1_300_000.0, at(t0, ms));
        assert_eq!(c.poll(at(t0, ms), 8000), 1300);
    }

    #[test]
    fn a_feedback_blackout_after_a_cut_holds_the_rate() {
        let t0 = Instant::now();
        let mut c = BitrateController::new(300, Duration::ZERO);
        c.viewer_joined(1, t0);
        let (_, ms) = stream(&mut c, t0, 0, 1, 8000.0, 8000);
        c.on_remb(1, 4_000_000.0, at(t0, ms));
        assert_eq!(c.poll(at(t0, ms), 8000), 4000);
        // The overrun link's queue holds the receiver's reports too: nothing arrives for 5 s.
        let (target, ms) = stream(&mut c, t0, ms, 5, 4000.0, 8000);
        assert_eq!(target, 4000, "silence raises nothing");
        // A report from before the cut does not count either; one that says the link is fine does.
        c.on_loss(1, 0.0, at(t0, ms));
        let (target, _) = stream(&mut c, t0, ms, 1, 4000.0, 8000);
        assert_eq!(target, 4600, "+15 % on fresh good news");
    }

    #[test]
    fn loss_cuts_by_half_the_loss_and_the_slowest_viewer_wins() {
        let t0 = Instant::now();
        let mut c = BitrateController::new(300, Duration::ZERO);
        c.viewer_joined(1, t0);
        c.viewer_joined(2, t0);
        let (_, ms) = stream(&mut c, t0, 0, 1, 4000.0, 4000);
        c.on_loss(1, 0.01, at(t0, ms));
        c.on_loss(2, 0.20, at(t0, ms));
        c.on_remb(1, 9_000_000.0, at(t0, ms));
        let target = c.poll(at(t0, ms), 4000);
        // ~3930 kbit/s measured over the window, cut by half the 20 % loss.
        assert!((3500..=3600).contains(&target), "≈ 3930 * (1 - 0.1), got {target}");
        let cut = target;
        // No recovery while a viewer still reports loss (between 2 % and 10 % holds).
        c.on_loss(2, 0.05, at(t0, ms + 500));
        let (target, end) = stream(&mut c, t0, ms + 500, 1, f64::from(cut), 4000);
        assert_eq!(target, cut);
        // The lossy viewer leaves: the other one's link is fine (it says so), so the rate recovers.
        c.viewer_left(2);
        c.on_loss(1, 0.0, at(t0, end + 1));
        let (target, _) = stream(&mut c, t0, end, 2, f64::from(cut), 4000);
        assert!(target > cut, "{cut} -> {target}");
    }

    #[test]
    fn floor_stale_feedback_and_last_viewer_leaving() {
        let t0 = Instant::now();
        let mut c = BitrateController::new(500, Duration::ZERO);
        c.viewer_joined(7, t0);
        let (_, ms) = stream(&mut c, t0, 0, 1, 6000.0, 6000);
        c.on_remb(7, 10_000.0, at(t0, ms));
        assert_eq!(c.poll(at(t0, ms), 6000), 3000, "at most halved in one step");
        let (_, ms) = stream(&mut c, t0, ms, 1, 3000.0, 6000);
        c.on_remb(7, 10_000.0, at(t0, ms));
        let (_, ms) = stream(&mut c, t0, ms, 1, 1500.0, 6000);
        c.on_remb(7, 10_000.0, at(t0, ms));
        let (_, ms) = stream(&mut c, t0, ms, 1, 750.0, 6000);
        c.on_remb(7, 10_000.0, at(t0, ms));
        assert_eq!(c.poll(at(t0, ms), 6000), 500, "never below the floor");
        assert_eq!(c.estimate_kbps(at(t0, ms)), Some(10));
        assert_eq!(c.estimate_kbps(at(t0, ms + 2500)), None, "stale after 2 s");
        // Garbage is ignored, not acted on.
        c.on_remb(7, f64::NAN, at(t0, ms));
        c.on_loss(7, 3.0, at(t0, ms));
        c.on_remb(99, 1.0, at(t0, ms));
        c.viewer_left(7);
        assert_eq!(c.cap_kbps(), None);
        assert_eq!(c.poll(at(t0, ms + 10), 6000), 6000);
        assert_eq!(BitrateController::new(9000, Duration::ZERO).poll(t0, 2000), 2000, "floor above ceiling");
    }
}

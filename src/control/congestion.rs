//! Send-side bandwidth estimation from transport-wide congestion-control feedback (TWCC): what the path to
//! one viewer carries, from the delay trend and the loss of our own packets as the viewer saw them.
//!
//! The delay signal is libwebrtc's trendline detector ([`Trendline`]: packet groups by departure, the slope
//! of their smoothed accumulated one-way delay variation over the last 20 groups, against an adaptive
//! threshold). webrtc-rs 0.21's GCC has the draft's per-group Kalman detector instead, which a 60 fps stream
//! overrunning a link by 60 % never pushed over its 12.5 ms threshold (the queue filled and tail-dropped
//! first), and its rate control starts at 300 kbit/s, climbs 8 % a second and, once it has backed off,
//! creeps up by one packet per interval for good: a 2 → 8 Mbit/s recovery took ~100 s (docs/notes). Ours:
//!
//! - **Start** at `start` (a moderate rate: a viewer behind a slow link gets a first picture fast), then
//!   **slow start**: ×1.5 every [`INCREASE_INTERVAL`] while the delay is flat, the loss low and the stream
//!   actually uses the rate (an idle desktop proves nothing about the path), until the first overuse.
//! - **Overuse** (the queue grows): back off to 0.85 × what the viewer *received* over the last 500 ms, at
//!   most once per [`DECREASE_INTERVAL`]; that received rate is remembered as the path's capacity.
//! - **Below 85 % of that capacity** the rate grows ×1.08 per interval (back to the path in ~2 s); **near
//!   it** by 0.5 % of it per interval (a probe; the next overuse cuts gently, no climb-and-crash cycle);
//!   a received rate above it without an overuse raises it (the path got faster).
//! - **Loss** counts only above 10 % over the last second (random loss on a Wi-Fi or a VPN is not
//!   congestion; NACK repairs it): then ×(1 − loss/2), at most once per [`DECREASE_INTERVAL`].
//!
//! It is sans-I/O: reports and `now` in, an estimate out; tested on simulated links below.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::PacketReport;

/// Increases at most this often.
pub const INCREASE_INTERVAL: Duration = Duration::from_millis(200);
/// Decreases at most this often (a back-off needs a round of feedback to show).
pub const DECREASE_INTERVAL: Duration = Duration::from_millis(300);
/// The received rate is measured over this much of the viewer's clock.
const RECEIVED_WINDOW: Duration = Duration::from_millis(500);
/// Loss and the sent rate are measured over this much of ours.
const WINDOW: Duration = Duration::from_secs(1);
/// Loss above this (before repair) is congestion.
const LOSS_CONGESTED: f64 = 0.10;
/// At least this many packets before a loss fraction means anything (2 % random loss is 3 of 25 packets
/// often enough that a low-rate stream was cut on it, measured).
const LOSS_MIN_PACKETS: usize = 100;
/// Back-off: this share of the received rate.
const BACKOFF: f64 = 0.85;
/// The stream uses the rate when it sends at least this share of it (else increases wait).
const USED_SHARE: f64 = 0.5;

/// What the delay trend says about the path's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Usage {
    #[default]
    Normal,
    /// The queue grows: we send more than the path carries.
    Over,
    /// The queue drains.
    Under,
}

/// Packets that left within this much of a group's first belong to the group (one frame, paced).
const GROUP_SPAN: Duration = Duration::from_millis(5);
/// Groups in the regression window.
const TREND_WINDOW: usize = 20;
const SMOOTHING: f64 = 0.9;
const THRESHOLD_GAIN: f64 = 4.0;
/// The trend must stay over the threshold this long (and for two groups) to be overuse.
const OVERUSE_TIME_MS: f64 = 10.0;

/// libwebrtc's `TrendlineEstimator` in a few lines: per group of packets, the change in one-way delay
/// (arrival spacing minus departure spacing), accumulated and smoothed; the least-squares slope of that
/// over the last [`TREND_WINDOW`] groups, scaled by the number of samples and a gain, against a threshold
/// that adapts to the path's noise (up fast, down slowly, 6–600 ms).
#[derive(Debug, Clone)]
pub struct Trendline {
    /// The group being collected: first departure, last departure, last arrival.
    group: Option<(Instant, Instant, Duration)>,
    /// The previous complete group: last departure, last arrival.
    prev: Option<(Instant, Duration)>,
    first_arrival: Option<Duration>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    samples: VecDeque<(f64, f64)>,
    deltas: u32,
    threshold: f64,
    last_threshold_update: Option<f64>,
    over_ms: f64,
    over_count: u32,
    prev_trend: f64,
    usage: Usage,
}

impl Default for Trendline {
    fn default() -> Self {
        Trendline {
            group: None,
            prev: None,
            first_arrival: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            samples: VecDeque::new(),
            deltas: 0,
            threshold: 12.5,
            last_threshold_update: None,
            over_ms: 0.0,
            over_count: 0,
            prev_trend: 0.0,
            usage: Usage::Normal,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Trendline {
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// One packet that arrived (reports in departure order).
    pub fn packet(&mut self, departure: Instant, arrival: Duration) {
        match self.group {
            Some((first, last_dep, last_arr)) if departure.saturating_duration_since(first) <= GROUP_SPAN => {
                self.group = Some((first, last_dep.max(departure), last_arr.max(arrival)));
            }
            Some((_, last_dep, last_arr)) => {
                self.group_done(last_dep, last_arr);
                self.group = Some((departure, departure, arrival));
            }
            None => self.group = Some((departure, departure, arrival)),
        }
    }

    fn group_done(&mut self, departure: Instant, arrival: Duration) {
        let Some((prev_dep, prev_arr)) = self.prev.replace((departure, arrival)) else { return };
        if arrival < prev_arr {
            return; // reordered: no delta
        }
        let delta = ms(arrival - prev_arr) - ms(departure.saturating_duration_since(prev_dep));
        self.deltas = (self.deltas + 1).min(1000);
        self.accumulated_ms += delta;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        let t = ms(arrival - *self.first_arrival.get_or_insert(arrival));
        self.samples.push_back((t, self.smoothed_ms));
        if self.samples.len() > TREND_WINDOW {
            self.samples.pop_front();
        }
        if self.samples.len() < TREND_WINDOW {
            return;
        }
        let trend = slope(&self.samples).unwrap_or(self.prev_trend);
        self.detect(trend, ms(arrival - prev_arr), t);
    }

    fn detect(&mut self, trend: f64, group_gap_ms: f64, now_ms: f64) {
        let modified = f64::from(self.deltas.min(60)) * trend * THRESHOLD_GAIN;
        if modified > self.threshold {
            self.over_ms = if self.over_count == 0 { group_gap_ms / 2.0 } else { self.over_ms + group_gap_ms };
            self.over_count += 1;
            if self.over_ms > OVERUSE_TIME_MS && self.over_count > 1 && trend >= self.prev_trend {
                self.over_ms = 0.0;
                self.over_count = 0;
                self.usage = Usage::Over;
            }
        } else if modified < -self.threshold {
            self.over_count = 0;
            self.usage = Usage::Under;
        } else {
            self.over_count = 0;
            self.usage = Usage::Normal;
        }
        self.prev_trend = trend;
        // The threshold follows |modified| (k_up 0.0087, k_down 0.039 per ms), ignoring big spikes.
        let last = self.last_threshold_update.replace(now_ms).unwrap_or(now_ms);
        if modified.abs() <= self.threshold + 15.0 {
            let k = if modified.abs() < self.threshold { 0.039 } else { 0.0087 };
            let dt = (now_ms - last).clamp(0.0, 100.0);
            self.threshold = (self.threshold + k * (modified.abs() - self.threshold) * dt).clamp(6.0, 600.0);
        }
    }
}

/// Least-squares slope of y over x.
fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (mx, my) = points.iter().fold((0.0, 0.0), |(a, b), &(x, y)| (a + x / n, b + y / n));
    let (num, den) =
        points.iter().fold((0.0, 0.0), |(a, b), &(x, y)| (a + (x - mx) * (y - my), b + (x - mx) * (x - mx)));
    (den > 0.0).then(|| num / den)
}

/// What the estimator currently thinks, for logs and the status page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EstimatorState {
    pub estimate_bps: f64,
    /// The rate the viewer received over the last 500 ms.
    pub received_bps: Option<f64>,
    /// Our packets lost on the way over the last second (before retransmission), 0..=1.
    pub loss: f64,
    pub overuse: bool,
    /// The capacity remembered from the last back-off.
    pub capacity_bps: Option<f64>,
}

/// The send-side estimator for one viewer.
#[derive(Debug, Clone)]
pub struct SendSideEstimator {
    trend: Trendline,
    /// Arrived packets on the viewer's clock: (arrival, bytes).
    arrivals: VecDeque<(Duration, usize)>,
    /// Reported packets on our clock: (departure, bytes, arrived).
    reported: VecDeque<(Instant, usize, bool)>,
    estimate: f64,
    min: f64,
    max: f64,
    slow_start: bool,
    capacity: Option<f64>,
    last_increase: Option<Instant>,
    last_decrease: Option<Instant>,
}

impl SendSideEstimator {
    /// Starting at `start` bit/s, held within `min..=max`.
    pub fn new(start: f64, min: f64, max: f64) -> SendSideEstimator {
        let max = max.max(min);
        SendSideEstimator {
            trend: Trendline::default(),
            arrivals: VecDeque::new(),
            reported: VecDeque::new(),
            estimate: start.clamp(min, max),
            min,
            max,
            slow_start: true,
            capacity: None,
            last_increase: None,
            last_decrease: None,
        }
    }

    /// The current estimate, bit/s.
    pub fn estimate_bps(&self) -> f64 {
        self.estimate
    }

    /// A new ceiling (the configured bitrate changed).
    pub fn set_max(&mut self, max: f64) {
        self.max = max.max(self.min);
        self.estimate = self.estimate.min(self.max);
    }

    pub fn state(&self) -> EstimatorState {
        EstimatorState {
            estimate_bps: self.estimate,
            received_bps: self.received_bps(),
            loss: self.loss().unwrap_or(0.0),
            overuse: self.trend.usage() == Usage::Over,
            capacity_bps: self.capacity,
        }
    }

    fn received_bps(&self) -> Option<f64> {
        let (first, last) = (self.arrivals.front()?.0, self.arrivals.back()?.0);
        let span = last.saturating_sub(first);
        if span < Duration::from_millis(100) {
            return None;
        }
        // The first packet's bytes arrived before the span began.
        let bytes: usize = self.arrivals.iter().skip(1).map(|&(_, b)| b).sum();
        Some(bytes as f64 * 8.0 / span.as_secs_f64())
    }

    fn loss(&self) -> Option<f64> {
        let n = self.reported.len();
        (n >= LOSS_MIN_PACKETS).then(|| self.reported.iter().filter(|r| !r.2).count() as f64 / n as f64)
    }

    fn sent_bps(&self, now: Instant) -> f64 {
        let bytes: usize = self.reported.iter().map(|r| r.1).sum();
        let span = self.reported.front().map_or(WINDOW, |r| now.saturating_duration_since(r.0).max(WINDOW / 2));
        bytes as f64 * 8.0 / span.as_secs_f64()
    }

    /// A batch of feedback: our packets, each arrived (with its arrival on the viewer's clock) or lost.
    pub fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        for r in reports {
            self.reported.push_back((r.departure, r.size, r.arrived));
            if let (true, Some(at)) = (r.arrived, r.arrival) {
                self.arrivals.push_back((at, r.size));
                self.trend.packet(r.departure, at);
            }
        }
        if let Some(&(newest, _)) = self.arrivals.back() {
            while self.arrivals.front().is_some_and(|&(t, _)| newest.saturating_sub(t) > RECEIVED_WINDOW) {
                self.arrivals.pop_front();
            }
        }
        while self.reported.front().is_some_and(|r| now.saturating_duration_since(r.0) > WINDOW) {
            self.reported.pop_front();
        }
        self.update(now);
        if tracing::enabled!(tracing::Level::TRACE) {
            let lost: Vec<u16> = reports.iter().filter(|r| !r.arrived).map(|r| r.twcc_sequence_number).collect();
            let seqs = reports.first().map(|r| r.twcc_sequence_number)..reports.last().map(|r| r.twcc_sequence_number);
            tracing::trace!(n = reports.len(), ?seqs, ?lost, est = self.estimate.round(), "transport-cc feedback");
        }
    }

    fn update(&mut self, now: Instant) {
        let since = |t: Option<Instant>| t.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        let loss = self.loss().unwrap_or(0.0);
        let received = self.received_bps();
        let may_decrease = since(self.last_decrease) >= DECREASE_INTERVAL;
        if self.trend.usage() == Usage::Over {
            if may_decrease {
                let to = received.map_or(self.estimate * BACKOFF, |r| (r * BACKOFF).min(self.estimate));
                self.capacity = received.or(Some(self.estimate));
                self.decrease(now, to, "the delay grows (overuse)");
            }
            return;
        }
        if loss > LOSS_CONGESTED {
            if may_decrease {
                self.decrease(now, self.estimate * (1.0 - 0.5 * loss), "loss");
            }
            return;
        }
        // Increase: only while the stream uses the rate, and not right after a decrease.
        if since(self.last_increase) < INCREASE_INTERVAL
            || since(self.last_decrease) < DECREASE_INTERVAL
            || self.sent_bps(now) < USED_SHARE * self.estimate
        {
            return;
        }
        // What the path carried without a queue growing is capacity too (a link that got faster is
        // followed up by the additive step, not by a slow start that overshoots it).
        if let (Some(c), Some(r)) = (self.capacity, received)
            && r > c
        {
            self.capacity = Some(r);
        }
        let next = match self.capacity {
            _ if self.slow_start => self.estimate * 1.5,
            Some(c) if self.estimate < BACKOFF * c => self.estimate * 1.08,
            Some(c) => self.estimate + 0.005 * c,
            None => self.estimate * 1.08,
        };
        // Never more than twice what the viewer receives: an estimate far above anything that was carried
        // would be a guess.
        let next = received.map_or(next, |r| next.min(2.0 * r.max(self.min)));
        if next > self.estimate {
            self.estimate = next.min(self.max);
            self.last_increase = Some(now);
        }
    }

    fn decrease(&mut self, now: Instant, to: f64, why: &str) {
        let to = to.clamp(self.min, self.max);
        self.slow_start = false;
        self.last_decrease = Some(now);
        if to < self.estimate {
            tracing::debug!(
                from_kbps = (self.estimate / 1000.0).round(),
                to_kbps = (to / 1000.0).round(),
                received_kbps = ?self.received_bps().map(|r| (r / 1000.0).round()),
                reported = self.reported.len(),
                lost = self.reported.iter().filter(|r| !r.2).count(),
                "send-side estimate: {why}"
            );
            self.estimate = to;
        }
    }
}

/// Random loss at or above this (over the last second, before repair) turns redundancy on…
const REDUNDANCY_LOSS_ON: f64 = 0.01;
/// …and it goes off after [`REDUNDANCY_HOLD`] below this.
const REDUNDANCY_LOSS_OFF: f64 = 0.003;
const REDUNDANCY_HOLD: Duration = Duration::from_secs(5);
/// Loss at or above this gets a third copy where it fits.
const REDUNDANCY_LOSS_THIRD: f64 = 0.03;
/// Both copies together may use at most this share of the estimate.
const REDUNDANCY_ROOM: f64 = 0.8;

/// Whether to send every media packet twice (or three times). On a path with random loss (Wi-Fi, a VPN) every lost packet
/// costs a NACK round trip, and a lost NACK or a lost retransmission costs Chromium's retry delay (100 ms
/// when it knows no RTT, which a receive-only peer does not) on top: a visible freeze, ~10 a minute at
/// 5 % loss (measured). A second copy of each packet makes a loss that needs repair 1/20 as likely at 5 %.
/// It is spare capacity put to use, never more: only while both copies fit in [`REDUNDANCY_ROOM`] of the
/// estimate (a desktop at rest or a small change, not full-screen video), and the estimate itself still
/// falls on congestion, which turns it off.
#[derive(Debug, Clone, Default)]
pub struct Redundancy {
    on: bool,
    /// Since when loss has been low while on.
    quiet_since: Option<Instant>,
}

impl Redundancy {
    /// How many copies of each packet to send for the next frame (1–3): `loss` over the last second
    /// (0..=1), the estimate, and the media rate (one copy) over the last second, bit/s. A third copy when
    /// the loss is heavy (at 5 % two copies still leave ~10 packets a minute for NACK, and a lost NACK is a
    /// freeze) and there is room for it.
    pub fn copies(&mut self, now: Instant, loss: f64, estimate_bps: f64, media_bps: f64) -> usize {
        let fits = |n: f64| n * media_bps <= REDUNDANCY_ROOM * estimate_bps;
        if !self.decide(now, loss, fits(2.0)) {
            1
        } else if loss >= REDUNDANCY_LOSS_THIRD && fits(3.0) {
            3
        } else {
            2
        }
    }

    fn decide(&mut self, now: Instant, loss: f64, room: bool) -> bool {
        if !room {
            self.on = false;
        } else if !self.on {
            if loss >= REDUNDANCY_LOSS_ON {
                tracing::debug!(loss, "lossy path: sending every packet twice");
                self.on = true;
                self.quiet_since = None;
            }
        } else if loss < REDUNDANCY_LOSS_OFF {
            let since = *self.quiet_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= REDUNDANCY_HOLD {
                self.on = false;
            }
        } else {
            self.quiet_since = None;
        }
        self.on
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated bottleneck: packets of `size` bytes leave us at `send_bps` (in frame-sized bursts every
    /// 16 ms), queue at a link of `link_bps` with a `queue` byte limit (tail drop) and `delay`, and come back
    /// as TWCC reports every 100 ms. Returns the estimate after each feedback.
    struct Link {
        link_bps: f64,
        queue: usize,
        delay: Duration,
        loss_every: Option<u64>,
        /// Uniform ± jitter on each packet's delay, order kept (as the test link's forwarder does).
        jitter: Duration,
    }

    fn report(id: u64, size: usize, departure: Instant, arrival: Option<Duration>) -> PacketReport {
        PacketReport {
            ssrc: 1,
            id,
            rtp_sequence_number: id as u16,
            is_twcc: true,
            twcc_sequence_number: id as u16,
            size,
            arrived: arrival.is_some(),
            departure,
            arrival,
            ecn: Default::default(),
        }
    }

    /// Run `secs` of a sender that always sends at the estimate (a busy desktop) through `link`.
    fn run(est: &mut SendSideEstimator, link: &Link, secs: f64) -> Vec<f64> {
        let t0 = Instant::now();
        let frame = Duration::from_micros(16_667);
        let size = 1200usize;
        let mut id = 0u64;
        let mut link_free = Duration::ZERO; // when the bottleneck has sent everything queued (since t0)
        let mut last_arrival = Duration::ZERO;
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut pending: Vec<PacketReport> = Vec::new();
        let mut next_feedback = Duration::from_millis(100);
        let mut out = Vec::new();
        let mut t = Duration::ZERO;
        while t.as_secs_f64() < secs {
            let bytes = (est.estimate_bps() / 8.0 * frame.as_secs_f64()) as usize;
            for _ in 0..bytes.div_ceil(size) {
                id += 1;
                let queued = link_free.saturating_sub(t).as_secs_f64() * link.link_bps / 8.0;
                let lost = link.loss_every.is_some_and(|n| id % n == 0);
                let arrival = if queued as usize + size > link.queue || lost {
                    None
                } else {
                    link_free = link_free.max(t) + Duration::from_secs_f64(size as f64 * 8.0 / link.link_bps);
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let unit = (rng >> 11) as f64 / (1u64 << 53) as f64;
                    let jitter = (unit * 2.0 - 1.0) * link.jitter.as_secs_f64();
                    let at = (link_free + link.delay).as_secs_f64() + jitter;
                    last_arrival = last_arrival.max(Duration::from_secs_f64(at.max(0.0)));
                    Some(last_arrival)
                };
                pending.push(report(id, size, t0 + t, arrival));
            }
            t += frame;
            if t >= next_feedback {
                // Everything that arrived (or should have) by now is reported.
                let (ready, later): (Vec<_>, Vec<_>) =
                    pending.drain(..).partition(|r| r.arrival.is_none_or(|a| a <= t) && r.departure <= t0 + t);
                pending = later;
                est.on_reports(t0 + t, &ready);
                out.push(est.estimate_bps());
                next_feedback += Duration::from_millis(100);
            }
        }
        out
    }

    fn mbit(x: f64) -> f64 {
        x * 1e6
    }

    #[test]
    fn a_fast_link_is_found_quickly_from_a_moderate_start() {
        let mut est = SendSideEstimator::new(mbit(2.0), mbit(0.3), mbit(20.0));
        let link = Link {
            link_bps: mbit(100.0),
            queue: 1 << 20,
            delay: Duration::from_millis(5),
            loss_every: None,
            jitter: Duration::ZERO,
        };
        let trace = run(&mut est, &link, 2.0);
        let at_1s = trace[9];
        assert!(at_1s >= mbit(10.0), "after 1 s only {at_1s:.0} bit/s: {trace:?}");
        assert_eq!(est.estimate_bps(), mbit(20.0), "{trace:?}");
    }

    #[test]
    fn a_slow_link_settles_below_its_rate_without_a_sawtooth_into_loss() {
        let mut est = SendSideEstimator::new(mbit(2.0), mbit(0.3), mbit(20.0));
        let link = Link {
            link_bps: mbit(6.0),
            queue: 75_000,
            delay: Duration::from_millis(20),
            loss_every: None,
            jitter: Duration::ZERO,
        };
        let trace = run(&mut est, &link, 30.0);
        let late = &trace[100..];
        let (lo, hi) = late.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        assert!(hi <= mbit(6.6) && lo >= mbit(3.5), "between {lo:.0} and {hi:.0}: {trace:?}");
        let mean = late.iter().sum::<f64>() / late.len() as f64;
        assert!(mean < mbit(6.0) && mean > mbit(4.5), "mean {mean:.0}");
    }

    #[test]
    fn random_loss_is_not_congestion_but_heavy_loss_is() {
        let mut est = SendSideEstimator::new(mbit(2.0), mbit(0.3), mbit(10.0));
        let lossy = Link {
            link_bps: mbit(100.0),
            queue: 1 << 20,
            delay: Duration::from_millis(20),
            loss_every: Some(20),
            jitter: Duration::ZERO,
        };
        run(&mut est, &lossy, 3.0);
        assert_eq!(est.estimate_bps(), mbit(10.0), "5 % random loss held the rate down");
        let awful = Link { loss_every: Some(3), ..lossy };
        run(&mut est, &awful, 3.0);
        assert!(est.estimate_bps() < mbit(5.0), "33 % loss: {}", est.estimate_bps());
    }

    #[test]
    fn jitter_and_random_loss_are_not_congestion() {
        let mut est = SendSideEstimator::new(mbit(2.0), mbit(0.3), mbit(10.0));
        let link = Link {
            link_bps: mbit(100.0),
            queue: 1 << 20,
            delay: Duration::from_millis(20),
            loss_every: Some(50),
            jitter: Duration::from_millis(5),
        };
        let trace = run(&mut est, &link, 20.0);
        let low = trace[50..].iter().copied().fold(f64::MAX, f64::min);
        assert!(low >= mbit(9.0), "fell to {low:.0}: {trace:?}");
    }

    #[test]
    fn redundancy_uses_spare_room_on_a_lossy_path_only() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut r = Redundancy::default();
        assert_eq!(r.copies(s(0), 0.0, mbit(5.0), mbit(0.5)), 1, "a clean path");
        assert_eq!(r.copies(s(1), 0.05, mbit(5.0), mbit(0.5)), 3, "5 % loss, plenty of room");
        assert_eq!(r.copies(s(2), 0.0, mbit(5.0), mbit(0.5)), 2, "a quiet second does not end it");
        assert_eq!(r.copies(s(3), 0.05, mbit(5.0), mbit(2.5)), 1, "no room: off at once");
        assert_eq!(r.copies(s(4), 0.05, mbit(5.0), mbit(1.5)), 2, "room for two copies only");
        for n in 5..10 {
            assert_eq!(r.copies(s(n), 0.0, mbit(5.0), mbit(1.0)), 2, "held at {n}");
        }
        assert_eq!(r.copies(s(10), 0.0, mbit(5.0), mbit(1.0)), 1, "5 s without loss");
    }

    #[test]
    fn an_idle_stream_does_not_talk_the_estimate_up() {
        let t0 = Instant::now();
        let mut est = SendSideEstimator::new(mbit(2.0), mbit(0.3), mbit(20.0));
        // One small packet every 100 ms: far below the estimate.
        for i in 0..50u64 {
            let t = Duration::from_millis(100 * i);
            est.on_reports(t0 + t, &[report(i, 200, t0 + t, Some(t + Duration::from_millis(10)))]);
        }
        assert_eq!(est.estimate_bps(), mbit(2.0));
    }
}

//! Sans-IO decisions: inputs and `now` in, decisions out; no clocks, sockets or threads, so they are tested
//! on simulated time.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}

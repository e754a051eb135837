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

#[cfg(test)]
mod tests {
    use super::*;

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

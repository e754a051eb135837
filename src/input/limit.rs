//! Sans-IO token bucket for a viewer's input messages (time is passed in, so tests run on simulated time).
//!
//! Why these numbers ([`MESSAGES_PER_SECOND`], [`BURST`]): the busiest honest sender is the pointer. The viewer
//! page sends one `move` per `pointermove`, which browsers deliver at up to the display's frame rate (60–240 Hz)
//! and, with high-polling mice and coalescing off, up to ~1,000 Hz; keys, buttons and wheel add little on top.
//! So 1,000 messages/s sustained never throttles a real user, and a burst of 2,000 absorbs a page that catches
//! up at once (a tab back from the background, SCTP delivering a backlog after a loss, a long paste split into
//! `text` messages). What it stops: a client flooding the injector with tens of thousands of messages a
//! second. A `text` message counts as one message here; its characters are bounded separately by the
//! injector's queue (`inject::MAX_QUEUED_CHARS`).

use std::time::Instant;

/// Sustained input messages per second a viewer may send.
pub const MESSAGES_PER_SECOND: u32 = 1_000;
/// Messages a viewer may send at once after being idle (the bucket's size).
pub const BURST: u32 = 2_000;

/// A token bucket: starts full with `burst` tokens, refills at `rate` per second up to `burst`; each message
/// takes one token, and a message that finds none is refused.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
    refused: u64,
}

impl Default for TokenBucket {
    /// The bucket every input channel gets: [`MESSAGES_PER_SECOND`] sustained, [`BURST`] at once.
    fn default() -> Self {
        TokenBucket::new(MESSAGES_PER_SECOND, BURST)
    }
}

impl TokenBucket {
    pub fn new(rate_per_second: u32, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket { rate: f64::from(rate_per_second), burst, tokens: burst, last: None, refused: 0 }
    }

    /// Whether one message arriving at `now` may pass (and takes its token if so).
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            // `saturating_duration_since`: a `now` before the last one (callers' clocks) refills nothing.
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        }
        if self.last.is_none_or(|last| now > last) {
            self.last = Some(now);
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.refused += 1;
            false
        }
    }

    /// Messages refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Messages allowed out of `n` sent at `per_second` evenly spaced, starting at `t0 + start`.
    fn send(b: &mut TokenBucket, t0: Instant, start: Duration, n: u32, per_second: u32) -> (u32, Duration) {
        let step = Duration::from_secs(1) / per_second;
        let mut allowed = 0;
        let mut t = start;
        for _ in 0..n {
            if b.allow(t0 + t) {
                allowed += 1;
            }
            t += step;
        }
        (allowed, t)
    }

    #[test]
    fn a_full_bucket_passes_the_burst_at_once_then_refuses() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000, 2_000);
        let passed = (0..5_000).filter(|_| b.allow(t0)).count();
        assert_eq!(passed, 2_000, "the burst, and nothing more at the same instant");
        assert!(!b.allow(t0));
        assert_eq!(b.refused(), 3_001);
        // 1 ms later one token is back; 10 ms later ten.
        assert!(b.allow(t0 + Duration::from_millis(1)));
        assert!(!b.allow(t0 + Duration::from_millis(1)));
        let later = t0 + Duration::from_millis(11);
        assert_eq!((0..100).filter(|_| b.allow(later)).count(), 10);
    }

    #[test]
    fn the_sustained_rate_passes_and_a_flood_is_held_to_it() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000, 2_000);
        // 10 s at the allowed rate: everything passes.
        let (allowed, end) = send(&mut b, t0, Duration::ZERO, 10_000, 1_000);
        assert_eq!(allowed, 10_000);
        // Then 10 s at 10,000/s: the bucket's 2,000 (full, since the sender stayed at the rate) plus 1,000/s.
        let (allowed, end) = send(&mut b, t0, end, 100_000, 10_000);
        assert!((11_990..=12_010).contains(&allowed), "{allowed}");
        // Idle for a second refills 1,000; idle for 5 s refills only up to the burst.
        let (allowed, end) = send(&mut b, t0, end + Duration::from_secs(1), 5_000, 1_000_000);
        assert!((1_000..=1_005).contains(&allowed), "{allowed}");
        let (allowed, _) = send(&mut b, t0, end + Duration::from_secs(5), 5_000, 1_000_000);
        assert!((2_000..=2_005).contains(&allowed), "{allowed}");
    }

    #[test]
    fn time_going_backwards_refills_nothing_and_a_zero_burst_still_passes_one() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1_000, 1);
        assert!(b.allow(t0));
        assert!(!b.allow(t0 - Duration::from_secs(5)), "earlier than the last message: no refill");
        assert!(!b.allow(t0));
        assert!(b.allow(t0 + Duration::from_millis(1)));
        let mut z = TokenBucket::new(0, 0);
        assert!(z.allow(t0), "a bucket holds at least one token");
        assert!(!z.allow(t0 + Duration::from_secs(3600)), "rate 0: never refilled");
    }
}

//! Per-connection flood control: a token bucket for frames, and a second, slowly refilling bucket of
//! "strikes" for frames refused, so that an occasional burst gets an error but a sustained flood ends the
//! connection.

use std::time::Instant;

/// A classic token bucket: holds up to `burst` tokens, refills at `rate` per second, each frame takes one.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub fn full(rate: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        TokenBucket {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            refilled: now,
        }
    }

    /// Whether the bucket would be full again at `now`: it has forgotten every past take.
    pub fn refilled_by(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What to do with a frame a client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Over the rate: refuse this frame with an error, keep the connection.
    Refuse,
    /// Refused too often: close the connection (1008).
    Disconnect,
}

#[derive(Debug)]
pub struct RateLimiter {
    frames: TokenBucket,
    /// One strike per refused frame; `burst` of them, one forgiven per second.
    strikes: TokenBucket,
}

/// Strikes forgiven per second.
const FORGIVE_PER_SEC: f64 = 1.0;

impl RateLimiter {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        RateLimiter {
            frames: TokenBucket::full(rate, burst, now),
            strikes: TokenBucket::full(FORGIVE_PER_SEC, burst, now),
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.frames.take(now) {
            Verdict::Accept
        } else if self.strikes.take(now) {
            Verdict::Refuse
        } else {
            Verdict::Disconnect
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(2.0, 3.0, t0);
        assert!((0..3).all(|_| limiter.check(t0) == Verdict::Accept));
        assert_eq!(limiter.check(t0), Verdict::Refuse);
        // Half a second at 2 per second buys one more frame.
        assert_eq!(
            limiter.check(t0 + Duration::from_millis(500)),
            Verdict::Accept
        );
    }

    #[test]
    fn a_sustained_flood_is_disconnected() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(1.0, 5.0, t0);
        let verdicts: Vec<Verdict> = (0..11).map(|_| limiter.check(t0)).collect();
        assert_eq!(&verdicts[..5], &[const { Verdict::Accept }; 5]);
        assert_eq!(&verdicts[5..10], &[const { Verdict::Refuse }; 5]);
        assert_eq!(verdicts[10], Verdict::Disconnect);
    }

    #[test]
    fn an_occasional_overrun_is_forgiven() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(1.0, 2.0, t0);
        let mut now = t0;
        // Three frames every two seconds against one per second: the third is refused each time, but
        // strikes are forgiven as fast as they come, so the connection stays.
        for _ in 0..100 {
            assert_eq!(limiter.check(now), Verdict::Accept);
            assert_eq!(limiter.check(now), Verdict::Accept);
            assert_eq!(limiter.check(now), Verdict::Refuse);
            now += Duration::from_secs(2);
        }
    }
}

//! Token bucket per destination: `per_minute` sustained, `burst` at once; an async
//! acquire waits for the next token instead of failing.
//!
//! The arithmetic ([`TokenBucket::try_take`]) is pure and takes the current instant.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A destination's rate limit.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per minute (PagerDuty allows about 120 per routing key).
    pub per_minute: f64,
    /// Requests that may go at once after a quiet spell. Default 10.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_burst() -> u32 {
    10
}

/// The bucket's arithmetic.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(limit: &RateLimit, now: Instant) -> Self {
        let capacity = f64::from(limit.burst.max(1));
        TokenBucket {
            capacity,
            per_second: (limit.per_minute / 60.0).max(f64::MIN_POSITIVE),
            tokens: capacity,
            last: now,
        }
    }

    /// Takes a token at `now`, or says how long until one is there.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = self.last.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / self.per_second;
            Err(Duration::from_secs_f64(wait.min(86_400.0)))
        }
    }
}

/// A token bucket shared by the tasks delivering to one destination.
#[derive(Debug)]
pub struct SharedBucket {
    bucket: Mutex<TokenBucket>,
}

impl SharedBucket {
    pub fn new(limit: &RateLimit) -> Self {
        SharedBucket {
            bucket: Mutex::new(TokenBucket::new(limit, Instant::now())),
        }
    }

    /// Waits until a token is available and takes it.
    pub async fn acquire(&self) {
        loop {
            let wait = match self.bucket.lock().await.try_take(Instant::now()) {
                Ok(()) => return,
                Err(wait) => wait,
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit() -> RateLimit {
        RateLimit {
            per_minute: 60.0,
            burst: 3,
        }
    }

    #[test]
    fn burst_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&limit(), t0);
        for _ in 0..3 {
            b.try_take(t0).unwrap();
        }
        let wait = b.try_take(t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert!(b.try_take(t0 + Duration::from_millis(500)).is_err());
        b.try_take(t0 + Duration::from_secs(1)).unwrap();
        // A long quiet spell refills to the burst, not beyond.
        let t1 = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            b.try_take(t1).unwrap();
        }
        assert!(b.try_take(t1).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_the_next_token() {
        let bucket = SharedBucket::new(&limit());
        let start = Instant::now();
        for _ in 0..5 {
            bucket.acquire().await;
        }
        // 3 at once, then one per second.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
            "{waited:?}"
        );
    }
}

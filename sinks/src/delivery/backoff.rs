//! Retry policy: exponential backoff with full jitter, never shorter than the wait the
//! server asked for.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use serde::Deserialize;

/// How often and how patiently a delivery is retried.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Upper bound of the first backoff; it doubles with every further failure. Default 1s.
    #[serde(default = "default_base", with = "humantime_serde")]
    pub base: Duration,
    /// Upper bound of any one backoff. Default 5m.
    #[serde(default = "default_cap", with = "humantime_serde")]
    pub cap: Duration,
    /// Attempts in all, the first included; then the notification is dead-lettered.
    /// Default 8.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_base() -> Duration {
    Duration::from_secs(1)
}

fn default_cap() -> Duration {
    Duration::from_secs(300)
}

fn default_max_attempts() -> u32 {
    8
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: default_base(),
            cap: default_cap(),
            max_attempts: default_max_attempts(),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based) before the next one, or
    /// `None` when the attempts are used up. Full jitter: uniform in
    /// `[0, min(cap, base·2^(attempt-1))]`; then at least `retry_after`, the server's hint.
    pub fn next_delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        jitter: &mut Jitter,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let exponent = attempt.saturating_sub(1).min(31);
        let ceiling = self.base.saturating_mul(1 << exponent).min(self.cap);
        let backoff = jitter.up_to(ceiling);
        Some(backoff.max(retry_after.unwrap_or(Duration::ZERO)))
    }
}

/// The random source of the jitter: SplitMix64, seedable so tests are deterministic.
#[derive(Clone, Debug)]
pub struct Jitter {
    state: u64,
}

impl Jitter {
    pub fn seeded(seed: u64) -> Self {
        Jitter { state: seed }
    }

    /// Seeded from the process's hash randomness (distinct per call).
    pub fn from_entropy() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0x006d_6370_756c_7365);
        Jitter::seeded(hasher.finish())
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, max]`, at nanosecond resolution.
    pub fn up_to(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.next_u64() % nanos.saturating_add(1).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
            max_attempts: 6,
        }
    }

    #[test]
    fn delays_stay_under_the_doubling_ceiling_and_the_cap() {
        let mut jitter = Jitter::seeded(7);
        for attempt in 1..6 {
            let ceiling = Duration::from_secs(1 << (attempt - 1)).min(Duration::from_secs(10));
            for _ in 0..200 {
                let d = policy().next_delay(attempt, None, &mut jitter).unwrap();
                assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
            }
        }
    }

    #[test]
    fn jitter_spreads_and_is_deterministic_per_seed() {
        let sample = |seed| {
            let mut j = Jitter::seeded(seed);
            (0..100)
                .map(|_| policy().next_delay(5, None, &mut j).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(sample(42), sample(42));
        assert_ne!(sample(42), sample(43));
        let s = sample(42);
        let (lo, hi) = (s.iter().min().unwrap(), s.iter().max().unwrap());
        assert!(
            *lo < Duration::from_secs(2) && *hi > Duration::from_secs(8),
            "{lo:?}..{hi:?}"
        );
    }

    #[test]
    fn honours_retry_after_and_stops_after_max_attempts() {
        let mut j = Jitter::seeded(1);
        let d = policy()
            .next_delay(1, Some(Duration::from_secs(30)), &mut j)
            .unwrap();
        assert_eq!(d, Duration::from_secs(30));
        assert_eq!(policy().next_delay(6, None, &mut j), None);
        assert!(policy().next_delay(5, None, &mut j).is_some());
    }

    #[test]
    fn parses_from_yaml_with_defaults() {
        let p: RetryPolicy = serde_yaml_ng::from_str("base: 500ms\nmax_attempts: 3").unwrap();
        assert_eq!(p.base, Duration::from_millis(500));
        assert_eq!(p.cap, Duration::from_secs(300));
        assert!(serde_yaml_ng::from_str::<RetryPolicy>("bse: 1s").is_err());
    }
}

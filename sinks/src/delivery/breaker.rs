//! Circuit breaker per destination: closed → open after `failure_threshold` consecutive
//! failures → half-open after `cooldown`, when exactly one probe goes through; its
//! success closes the circuit, its failure opens it for another cooldown.
//!
//! Pure: every call takes the current instant, so tests drive it with a fake clock.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

/// Circuit breaker settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failed attempts (retryable errors: network, timeout, 429, 5xx) that
    /// open the circuit. Default 5.
    #[serde(default = "default_threshold")]
    pub failure_threshold: u32,
    /// How long an open circuit rejects before letting one probe through. Default 30s.
    #[serde(default = "default_cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
}

fn default_threshold() -> u32 {
    5
}

fn default_cooldown() -> Duration {
    Duration::from_secs(30)
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: default_threshold(),
            cooldown: default_cooldown(),
        }
    }
}

/// The breaker's state as seen from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Whether an attempt may go now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go.
    Allowed,
    /// Half-open: this attempt is the one probe; report its result.
    Probe,
    /// Open (or a probe is in flight): try again in `retry_in`.
    Rejected { retry_in: Duration },
}

#[derive(Clone, Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// One destination's circuit breaker.
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: State,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config,
            state: State::Closed { failures: 0 },
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to make an attempt at `now`.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            State::Closed { .. } => Admission::Allowed,
            State::Open { until } if now < until => Admission::Rejected {
                retry_in: until - now,
            },
            State::Open { .. } | State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                Admission::Probe
            }
            State::HalfOpen { probing: true } => Admission::Rejected {
                retry_in: self.config.cooldown,
            },
        }
    }

    /// The attempt reached the destination and it answered sensibly (a 2xx, or a
    /// permanent 4xx about the request itself).
    pub fn record_success(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// The attempt failed in a way that says the destination is unwell.
    pub fn record_failure(&mut self, now: Instant) {
        self.state = match self.state {
            State::Closed { failures } if failures + 1 < self.config.failure_threshold => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            State::Closed { .. } | State::HalfOpen { .. } | State::Open { .. } => State::Open {
                until: now + self.config.cooldown,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            cooldown: Duration::from_secs(10),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut b = breaker();
        b.record_failure(t0);
        b.record_failure(t0);
        b.record_success();
        b.record_failure(t0);
        b.record_failure(t0);
        assert_eq!(b.admit(t0), Admission::Allowed);
        b.record_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(
            b.admit(t0 + Duration::from_secs(4)),
            Admission::Rejected {
                retry_in: Duration::from_secs(6)
            }
        );
    }

    #[test]
    fn half_open_lets_one_probe_through() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record_failure(t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert_eq!(b.admit(t1), Admission::Probe);
        assert!(matches!(b.admit(t1), Admission::Rejected { .. }));
        // The probe fails: open again for a full cooldown.
        b.record_failure(t1);
        assert!(matches!(
            b.admit(t1 + Duration::from_secs(9)),
            Admission::Rejected { .. }
        ));
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(b.admit(t2), Admission::Probe);
        b.record_success();
        assert_eq!(b.state(t2), BreakerState::Closed);
        assert_eq!(b.admit(t2), Admission::Allowed);
    }
}

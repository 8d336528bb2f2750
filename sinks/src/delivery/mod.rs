//! Delivery semantics around a [`Receiver`]: retries with exponential backoff and full
//! jitter (honouring the server's retry hint), a circuit breaker and a token bucket per
//! destination. The policies are pure and clock-driven ([`backoff`], [`breaker`],
//! [`bucket`]); [`deliver_with_retries`] puts them together for one notification.

pub mod backoff;
pub mod breaker;
pub mod bucket;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcpulse_schemas::AlertEvent;
use serde::Deserialize;
use tokio::time::Instant;

pub use backoff::{Jitter, RetryPolicy};
pub use breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker};
pub use bucket::{RateLimit, SharedBucket, TokenBucket};

use crate::receivers::{DeliveryError, Outcome, Receiver, SinkHandle};

/// Delivery settings of a receiver (or defaults for all).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryPolicy {
    /// Retries.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Circuit breaker of each destination.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Rate limit of each destination. Default: none.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

/// The shared state of one destination: its breaker and bucket.
#[derive(Debug)]
pub struct Destination {
    breaker: Mutex<CircuitBreaker>,
    bucket: Option<SharedBucket>,
}

impl Destination {
    pub fn new(policy: &DeliveryPolicy) -> Self {
        Destination {
            breaker: Mutex::new(CircuitBreaker::new(policy.breaker.clone())),
            bucket: policy.rate_limit.as_ref().map(SharedBucket::new),
        }
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker
            .lock()
            .expect("breaker lock")
            .state(Instant::now())
    }

    fn admit(&self) -> Admission {
        self.breaker
            .lock()
            .expect("breaker lock")
            .admit(Instant::now())
    }

    fn record(&self, result: &Result<Outcome, DeliveryError>) {
        let mut breaker = self.breaker.lock().expect("breaker lock");
        match result {
            Err(DeliveryError::Retryable { .. }) => breaker.record_failure(Instant::now()),
            // A 4xx about the request still proves the destination is up.
            Ok(_) | Err(DeliveryError::Permanent { .. }) => breaker.record_success(),
        }
    }
}

/// Destinations by [`Receiver::destination`], created on first use.
#[derive(Debug, Default)]
pub struct Destinations {
    policy: DeliveryPolicy,
    map: Mutex<HashMap<String, Arc<Destination>>>,
}

impl Destinations {
    pub fn new(policy: DeliveryPolicy) -> Self {
        Destinations {
            policy,
            map: Mutex::default(),
        }
    }

    pub fn get(&self, destination: &str) -> Arc<Destination> {
        let mut map = self.map.lock().expect("destinations lock");
        map.entry(destination.to_owned())
            .or_insert_with(|| Arc::new(Destination::new(&self.policy)))
            .clone()
    }
}

/// One attempt, for the `notifications` table.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    /// 1-based.
    pub number: u32,
    /// Time spent in the receiver (zero when the breaker rejected the attempt).
    pub latency: Duration,
    /// `Ok` when delivered or skipped.
    pub result: Result<(), DeliveryError>,
}

/// Delivers one notification: waits for the destination's token, asks its breaker,
/// calls the receiver, and on a retryable error waits (backoff with full jitter, at
/// least the server's hint) and tries again, up to `policy.max_attempts`. A breaker
/// rejection counts as a failed attempt (so a dead destination ends in the dead-letter
/// queue too). `on_attempt` sees every attempt. Returns the outcome, or the last error
/// (permanent, or retryable with the attempts used up).
pub async fn deliver_with_retries(
    receiver: &dyn Receiver,
    event: &AlertEvent,
    handle: Option<&SinkHandle>,
    destination: &Destination,
    policy: &RetryPolicy,
    jitter: &mut Jitter,
    mut on_attempt: impl FnMut(&Attempt),
) -> Result<Outcome, DeliveryError> {
    let mut number = 0;
    loop {
        number += 1;
        if let Some(bucket) = &destination.bucket {
            bucket.acquire().await;
        }
        let (result, latency) = match destination.admit() {
            Admission::Rejected { retry_in } => {
                let err = DeliveryError::Retryable {
                    reason: "circuit open: the destination failed repeatedly".into(),
                    retry_after: Some(retry_in),
                };
                (Err(err), Duration::ZERO)
            }
            Admission::Allowed | Admission::Probe => {
                let start = Instant::now();
                let result = receiver.deliver(event, handle).await;
                destination.record(&result);
                (result, start.elapsed())
            }
        };
        on_attempt(&Attempt {
            number,
            latency,
            result: result.as_ref().map(|_| ()).map_err(Clone::clone),
        });
        let err = match result {
            Ok(outcome) => return Ok(outcome),
            Err(err @ DeliveryError::Permanent { .. }) => return Err(err),
            Err(err) => err,
        };
        let Some(wait) = policy.next_delay(number, err.retry_after(), jitter) else {
            return Err(err);
        };
        tracing::debug!(
            destination = receiver.destination(),
            attempt = number,
            wait_ms = wait.as_millis() as u64,
            error = %err,
            "delivery failed, retrying"
        );
        tokio::time::sleep(wait).await;
    }
}

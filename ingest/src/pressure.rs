//! Backpressure at the edge: a budget of request bytes in flight, and the archiver's lag
//! behind the log. When either is exceeded, requests are refused with a retryable status
//! instead of queueing without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::IngestError;

/// Shared admission control of all receivers.
#[derive(Clone)]
pub struct Backpressure {
    inflight: Arc<Semaphore>,
    max_inflight: usize,
    backlog: Arc<AtomicU64>,
    max_backlog: u64,
    retry_after: Duration,
}

impl Backpressure {
    pub fn new(max_inflight_bytes: usize, max_backlog: u64, retry_after: Duration) -> Self {
        let max_inflight = max_inflight_bytes.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            inflight: Arc::new(Semaphore::new(max_inflight)),
            max_inflight,
            backlog: Arc::new(AtomicU64::new(0)),
            max_backlog,
            retry_after,
        }
    }

    /// Admits a request of `bytes`, or refuses it with a retryable error.
    pub fn admit(&self, bytes: usize) -> Result<OwnedSemaphorePermit, IngestError> {
        let backlog = self.backlog.load(Relaxed);
        if backlog > self.max_backlog {
            return Err(IngestError::Backlogged {
                message: format!("archiving is {backlog} messages behind; retry later"),
                retry_after: self.retry_after * 2,
            });
        }
        let permits = bytes.clamp(1, self.max_inflight) as u32;
        self.inflight
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| IngestError::Busy {
                message: "too many requests in flight; retry shortly".into(),
                retry_after: self.retry_after,
            })
    }

    /// Updates the archiver's lag (messages in the log not yet archived).
    pub fn set_backlog(&self, messages: u64) {
        self.backlog.store(messages, Relaxed);
    }

    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_when_saturated_and_recovers() {
        let bp = Backpressure::new(100, 10, Duration::from_secs(1));
        let permit = bp.admit(80).unwrap();
        assert!(matches!(bp.admit(30), Err(IngestError::Busy { .. })));
        drop(permit);
        let _permit = bp.admit(30).unwrap();
        bp.set_backlog(11);
        let err = bp.admit(1).unwrap_err();
        assert!(matches!(err, IngestError::Backlogged { .. }));
        assert_eq!(err.http_status(), http::StatusCode::TOO_MANY_REQUESTS);
        bp.set_backlog(0);
        let _permit = bp.admit(1).unwrap();
    }
}

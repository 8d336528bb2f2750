//! Retention: a background thread deleting sealed segments older than the retention.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::Registry;
use super::fsutil::now_ms;
use crate::BusError;

/// The running retention thread.
pub(crate) struct Retention {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Retention {
    /// Checks every tenth of `retention` (between 1 s and 1 min).
    pub fn spawn(registry: Arc<Registry>, retention: Duration) -> Result<Retention, BusError> {
        let interval = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let (stop, rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("log-retention".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                    if let Err(error) = enforce(&registry, retention) {
                        tracing::warn!(%error, "log retention failed");
                    }
                }
            })
            .map_err(|e| {
                BusError::Unavailable(format!("cannot start log retention thread: {e}"))
            })?;
        Ok(Retention { stop, thread })
    }

    /// Stops the thread and waits for it.
    pub fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::error!("the log retention thread panicked");
        }
    }
}

/// Deletes, in every partition, the sealed segments whose last append is older than
/// `retention`. Returns how many segments were deleted.
pub(crate) fn enforce(registry: &Registry, retention: Duration) -> Result<usize, BusError> {
    let cutoff = now_ms().saturating_sub(retention.as_millis().min(i64::MAX as u128) as i64);
    let mut deleted = 0;
    for log in registry.logs() {
        deleted += log.delete_older_than(cutoff)?;
    }
    Ok(deleted)
}

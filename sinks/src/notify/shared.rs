//! What the operator and the delivery workers share for one log partition: its
//! notification log and the notifications finished since the last flush, under one lock
//! — so a checkpoint's log covers exactly the finished notifications that flush took —
//! and a cancel flag raised when the partition is released.

use std::sync::{Arc, Mutex, MutexGuard};

use mcpulse_bus::{Offset, TopicPartition};
use object_store::path::Path;
use tokio::sync::watch;

use super::nflog::Nflog;
use super::rows::NotificationRow;

/// A notification that finished (delivered, skipped, dead-lettered, or found done).
#[derive(Debug)]
pub struct Completion {
    /// The record it came from (`None` for a repeat).
    pub offset: Option<Offset>,
    /// Its attempts.
    pub rows: Vec<NotificationRow>,
    /// Journal objects done with (every entry in them applied), deleted once a
    /// checkpoint covers this completion.
    pub journal: Vec<Path>,
}

/// The state behind the lock.
#[derive(Debug, Default)]
pub struct PartInner {
    pub nflog: Nflog,
    /// Finished since the last flush took them.
    pub finished: Vec<Completion>,
    /// The log changed since the last checkpoint.
    pub dirty: bool,
    /// The journal file the recorder appends to (append journals only): every entry in
    /// it up to its latest batch is applied. A checkpoint snapshot takes it (to delete
    /// once the checkpoint is written) and the recorder moves on to a new file; a batch
    /// it wrote there meanwhile is written again to the new one (see
    /// [`super::recorder`]).
    pub journal_file: Option<Path>,
}

/// One partition's shared state.
#[derive(Debug)]
pub struct PartShared {
    pub tp: TopicPartition,
    inner: Mutex<PartInner>,
    cancel: watch::Sender<bool>,
}

impl PartShared {
    pub fn new(tp: TopicPartition, nflog: Nflog) -> Arc<Self> {
        Arc::new(PartShared {
            tp,
            inner: Mutex::new(PartInner {
                nflog,
                ..PartInner::default()
            }),
            cancel: watch::channel(false).0,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, PartInner> {
        // A worker that panicked holding the lock left consistent data (every update is
        // a single call), so poisoning is not a reason to stop.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The partition was released: its queued notifications are dropped (its next owner
    /// redoes whatever is not on record).
    pub fn cancel(&self) {
        self.cancel.send_replace(true);
    }

    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Resolves once the partition is released.
    pub async fn cancelled(&self) {
        let mut rx = self.cancel.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

//! Group commit of a partition's journal: a delivery worker hands its finished
//! notification to the partition's recorder and waits; the recorder writes every entry
//! that arrived meanwhile as one journal object (one fsync for all of them), then applies
//! them to the notification log under one lock (so a checkpoint covers either all of an
//! object's entries or none, and deleting the object after the checkpoint never drops
//! one), and only then lets the workers go on. With a thousand destinations finishing at
//! once, that is a handful of fsyncs instead of a thousand.

use std::sync::Arc;
use std::time::Duration;

use mcpulse_bus::Offset;
use object_store::path::Path;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use super::shared::{Completion, PartShared};
use super::store::{JournalEntry, NotifyStore};

/// At most this many entries per journal object.
const MAX_BATCH: usize = 4096;

struct Request {
    entry: JournalEntry,
    /// The record the notification came from.
    offset: Option<Offset>,
    done: oneshot::Sender<()>,
}

/// The recorder of one partition (cheap to clone).
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Request>,
}

impl Recorder {
    /// Starts the recorder of `part`; it stops once every clone is dropped.
    pub fn spawn(store: NotifyStore, part: Arc<PartShared>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, part, rx));
        Recorder { tx }
    }

    /// Puts `entry` on record durably, applies it to the notification log and hands its
    /// rows to the next flush. Returns once that is done (or, after a permanent write
    /// error, logged, once it is applied without a journal object; or once the partition
    /// is released).
    pub async fn record(&self, entry: JournalEntry, offset: Option<Offset>) {
        let (done, wait) = oneshot::channel();
        if self
            .tx
            .send(Request {
                entry,
                offset,
                done,
            })
            .is_ok()
        {
            let _ = wait.await;
        }
    }
}

async fn run(store: NotifyStore, part: Arc<PartShared>, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (mut entries, mut waiting) = (Vec::with_capacity(batch.len()), Vec::new());
        for Request {
            entry,
            offset,
            done,
        } in batch.drain(..)
        {
            entries.push((entry, offset));
            waiting.push(done);
        }
        let Some(path) = write(&store, &part, &entries).await else {
            return; // released: the next owner redoes whatever is not on record
        };
        apply(&part, entries, path);
        for done in waiting {
            let _ = done.send(());
        }
    }
}

/// Writes the journal object, retrying while the archive fails retryably. `None` when
/// the partition was released meanwhile; `Some(None)` after a permanent error.
async fn write(
    store: &NotifyStore,
    part: &PartShared,
    entries: &[(JournalEntry, Option<Offset>)],
) -> Option<Option<Path>> {
    let only: Vec<&JournalEntry> = entries.iter().map(|(e, _)| e).collect();
    let mut pause = Duration::from_millis(100);
    loop {
        match store.journal(&part.tp, &only).await {
            Ok(path) => return Some(Some(path)),
            Err(e) if e.is_retryable() => {
                warn!(partition = %part.tp, entries = entries.len(), error = %e, "cannot record finished notifications yet, retrying");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = part.cancelled() => return None,
                }
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            Err(e) => {
                error!(partition = %part.tp, entries = entries.len(), error = %e, "cannot record finished notifications: a crash before the next checkpoint would send them again");
                return Some(None);
            }
        }
    }
}

/// Applies a recorded batch to the notification log; the object is deleted after the
/// checkpoint that covers the batch (it rides on the first completion).
fn apply(part: &PartShared, entries: Vec<(JournalEntry, Option<Offset>)>, path: Option<Path>) {
    let mut inner = part.lock();
    let mut path = path;
    for (entry, offset) in entries {
        inner
            .nflog
            .finish(&entry.event, &entry.key, &entry.outcome, entry.sent.clone());
        inner.finished.push(Completion {
            offset,
            rows: entry.rows,
            journal: path.take(),
        });
    }
    inner.dirty = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::nflog::{Finished, Nflog};
    use crate::notify::testutil::{event, memory_store};
    use mcpulse_bus::TopicPartition;

    #[tokio::test]
    async fn notifications_finishing_together_share_one_journal_object() {
        let store = memory_store();
        let tp = TopicPartition::new("alerts", 0);
        let part = PartShared::new(tp.clone(), Nflog::default());
        let recorder = Recorder::spawn(store.clone(), part.clone());
        let records = (0..50).map(|i| {
            let recorder = recorder.clone();
            let e = event("acme", &format!("i{i}"), &format!("e{i}"));
            async move {
                let entry = JournalEntry {
                    event: Arc::new(e),
                    key: "k".into(),
                    outcome: Finished::Sent { handle: None },
                    sent: None,
                    rows: Vec::new(),
                };
                recorder.record(entry, Some(i)).await;
            }
        });
        futures::future::join_all(records).await;

        let entries = store.journal_entries(&tp).await.unwrap();
        assert_eq!(entries.len(), 50, "every entry on record");
        let mut objects: Vec<&Path> = entries.iter().map(|(p, _)| p).collect();
        objects.dedup();
        assert!(objects.len() < 50, "grouped: {} objects", objects.len());

        let inner = part.lock();
        assert_eq!(inner.finished.len(), 50);
        assert!((0..50).all(|i| inner.nflog.is_done(&format!("i{i}"), "k", &format!("e{i}"))));
        let paths: Vec<_> = inner
            .finished
            .iter()
            .filter_map(|c| c.journal.as_ref())
            .collect();
        assert_eq!(
            paths.len(),
            objects.len(),
            "each object deleted once, after a checkpoint"
        );
    }
}

//! Group commit of a partition's journal: a delivery worker hands its finished
//! notification to the partition's recorder and waits; the recorder writes every entry
//! that arrived meanwhile as one journal object (one fsync for all of them), then applies
//! them to the notification log under one lock (so a checkpoint covers either all of an
//! object's entries or none, and deleting the object after the checkpoint never drops
//! one), and only then lets the workers go on. With a thousand destinations finishing at
//! once, that is a handful of fsyncs instead of a thousand.
//!
//! On a local archive the batches are appended to one journal file (a write and an
//! `fdatasync` each, no file created or deleted per batch), registered in the
//! partition's shared state once its first batch is applied. A checkpoint snapshot
//! takes the registered file under the same lock: every entry applied so far is in the
//! checkpoint, and the file is deleted after it. A batch written to the file but not yet
//! applied when the snapshot took it is written again to a new file before it is
//! applied, so the deletion never drops an entry the checkpoint does not cover.

use std::sync::Arc;
use std::time::Duration;

use mcpulse_bus::Offset;
use object_store::path::Path;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use super::shared::{Completion, PartInner, PartShared};
use super::store::{JournalEntry, JournalFile, NotifyStore};

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
    let mut journal = Journal::new(store);
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
        if !journal.record(&part, entries).await {
            return; // released: the next owner redoes whatever is not on record
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
}

/// Where a recorder puts its batches: one object per batch on an object store; on a local
/// archive one file appended to until a checkpoint snapshot takes it.
struct Journal {
    store: NotifyStore,
    /// The append file in use.
    file: Option<JournalFile>,
    /// Whether `file` is the partition's `journal_file` (a snapshot may take it then).
    registered: bool,
    /// Objects done with (every entry in them applied), handed over with the next
    /// applied batch (deleted after the checkpoint that covers it).
    done_with: Vec<Path>,
}

impl Journal {
    fn new(store: NotifyStore) -> Self {
        Journal {
            store,
            file: None,
            registered: false,
            done_with: Vec::new(),
        }
    }

    /// Whether a checkpoint snapshot took the registered file (it is deleted once that
    /// checkpoint is written: nothing more may count on it).
    fn taken(&self, inner: &PartInner) -> bool {
        self.registered && inner.journal_file.as_ref() != self.file.as_ref().map(|f| &f.path)
    }

    fn give_up_taken_file(&mut self) {
        self.file = None;
        self.registered = false;
    }

    /// Puts a batch on record and applies it to the notification log. `false` when the
    /// partition was released meanwhile.
    async fn record(
        &mut self,
        part: &PartShared,
        entries: Vec<(JournalEntry, Option<Offset>)>,
    ) -> bool {
        let only: Vec<&JournalEntry> = entries.iter().map(|(e, _)| e).collect();
        loop {
            if self.taken(&part.lock()) {
                self.give_up_taken_file();
            }
            if !self.write(part, &only).await {
                return false;
            }
            let mut inner = part.lock();
            if self.taken(&inner) {
                // A snapshot took the file between the write and now: the checkpoint
                // does not cover this batch, and deletes the file. Again, in a new one.
                drop(inner);
                self.give_up_taken_file();
                continue;
            }
            drop(only);
            self.apply(&mut inner, entries);
            if self.store.appends() {
                inner.journal_file = self.file.as_ref().map(|f| f.path.clone());
                self.registered = self.file.is_some();
            }
            return true;
        }
    }

    /// Writes the batch, retrying while the archive fails retryably. `false` when the
    /// partition was released meanwhile; after a permanent error (logged) the entries
    /// are applied without a record.
    async fn write(&mut self, part: &PartShared, entries: &[&JournalEntry]) -> bool {
        let mut pause = Duration::from_millis(100);
        loop {
            let result = if self.store.appends() {
                match self.store.append(&part.tp, self.file.take(), entries).await {
                    Ok(file) => {
                        self.file = Some(file);
                        Ok(())
                    }
                    Err((e, given_up)) => {
                        // Its applied entries stay on record until a checkpoint covers
                        // them; a half-written line is never followed by another.
                        self.registered = false;
                        self.done_with.extend(given_up);
                        Err(e)
                    }
                }
            } else {
                self.store
                    .journal(&part.tp, entries)
                    .await
                    .map(|path| self.done_with.push(path))
            };
            match result {
                Ok(()) => return true,
                Err(e) if e.is_retryable() => {
                    warn!(partition = %part.tp, entries = entries.len(), error = %e, "cannot record finished notifications yet, retrying");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = part.cancelled() => return false,
                    }
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    error!(partition = %part.tp, entries = entries.len(), error = %e, "cannot record finished notifications: a crash before the next checkpoint would send them again");
                    return true;
                }
            }
        }
    }

    /// Applies a recorded batch to the notification log under one lock, so a checkpoint
    /// covers all of it or none. The objects done with (a batch's own object; append
    /// files given up) ride on its first completion.
    fn apply(&mut self, inner: &mut PartInner, entries: Vec<(JournalEntry, Option<Offset>)>) {
        let mut journal = std::mem::take(&mut self.done_with);
        for (entry, offset) in entries {
            inner
                .nflog
                .finish(&entry.event, &entry.key, &entry.outcome, entry.sent.clone());
            inner.finished.push(Completion {
                offset,
                rows: entry.rows,
                journal: std::mem::take(&mut journal),
            });
        }
        inner.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::nflog::{Finished, Nflog};
    use crate::notify::testutil::{event, local_store, memory_store};
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
        let paths: Vec<_> = inner.finished.iter().flat_map(|c| &c.journal).collect();
        assert_eq!(
            paths.len(),
            objects.len(),
            "each object deleted once, after a checkpoint"
        );
    }

    fn entry(i: usize) -> JournalEntry {
        JournalEntry {
            event: Arc::new(event("acme", &format!("i{i}"), &format!("e{i}"))),
            key: "k".into(),
            outcome: Finished::Sent { handle: None },
            sent: None,
            rows: Vec::new(),
        }
    }

    /// The journal objects the completions hand over for deletion.
    fn handed_over(part: &PartShared) -> Vec<Path> {
        part.lock()
            .finished
            .drain(..)
            .flat_map(|c| c.journal)
            .collect()
    }

    #[tokio::test]
    async fn a_local_journal_is_one_file_appended_to_until_a_checkpoint_asks_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path());
        assert!(store.appends());
        let tp = TopicPartition::new("alerts", 0);
        let part = PartShared::new(tp.clone(), Nflog::default());
        let recorder = Recorder::spawn(store.clone(), part.clone());
        for i in 0..3 {
            recorder.record(entry(i), Some(i as u64)).await;
        }
        let entries = store.journal_entries(&tp).await.unwrap();
        assert_eq!(entries.len(), 3);
        let first = entries[0].0.clone();
        assert!(entries.iter().all(|(p, _)| *p == first), "one file");
        assert!(handed_over(&part).is_empty(), "still in use");

        // A checkpoint snapshot takes the file (every entry in it applied): the next
        // write goes to a new one.
        assert_eq!(part.lock().journal_file.take(), Some(first.clone()));
        recorder.record(entry(3), Some(3)).await;
        let entries = store.journal_entries(&tp).await.unwrap();
        assert_eq!(entries.len(), 4);
        let second = &entries
            .iter()
            .find(|(_, e)| e.event.event_id == "e3")
            .unwrap()
            .0;
        assert_ne!(*second, first);
        assert_eq!(part.lock().journal_file.as_ref(), Some(second));
        assert!(handed_over(&part).is_empty());
        assert!((0..4).all(|i| {
            part.lock()
                .nflog
                .is_done(&format!("i{i}"), "k", &format!("e{i}"))
        }));
    }

    #[tokio::test]
    async fn a_batch_written_to_a_file_a_snapshot_took_meanwhile_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path());
        let tp = TopicPartition::new("alerts", 0);
        let part = PartShared::new(tp.clone(), Nflog::default());
        let mut journal = Journal::new(store.clone());
        assert!(journal.record(&part, vec![(entry(0), Some(0))]).await);
        let first = part.lock().journal_file.clone().unwrap();
        // The batch is written to the registered file; the snapshot takes the file
        // before the batch is applied.
        let batch = entry(1);
        assert!(journal.write(&part, &[&batch]).await);
        part.lock().journal_file.take();
        {
            let mut inner = part.lock();
            assert!(journal.taken(&inner), "the recorder sees it was taken");
            inner.finished.clear();
        }
        // What `record` then does: a new file, the batch again, applied.
        journal.give_up_taken_file();
        assert!(journal.record(&part, vec![(batch, Some(1))]).await);
        let second = part.lock().journal_file.clone().unwrap();
        assert_ne!(second, first);
        let in_second: Vec<String> = store
            .journal_entries(&tp)
            .await
            .unwrap()
            .into_iter()
            .filter(|(p, _)| *p == second)
            .map(|(_, e)| e.event.event_id.clone())
            .collect();
        assert_eq!(
            in_second,
            ["e1"],
            "the batch survives the taken file's deletion"
        );
    }

    /// The journal files under `dir`.
    fn journal_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                found.extend(journal_files(&path));
            } else if path
                .parent()
                .is_some_and(|p| p.to_string_lossy().ends_with(".journal"))
            {
                found.push(path);
            }
        }
        found
    }

    #[tokio::test]
    async fn a_torn_last_line_of_a_journal_file_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path());
        let tp = TopicPartition::new("alerts", 0);
        let part = PartShared::new(tp.clone(), Nflog::default());
        let recorder = Recorder::spawn(store.clone(), part.clone());
        recorder.record(entry(0), Some(0)).await;
        recorder.record(entry(1), Some(1)).await;
        let file = journal_files(dir.path()).pop().expect("one journal file");
        // A crash in the middle of the third append.
        let mut torn = std::fs::read(&file).unwrap();
        let whole = torn.len();
        let head = torn[..whole / 4].to_vec();
        torn.extend_from_slice(&head);
        std::fs::write(&file, &torn).unwrap();
        let entries = store.journal_entries(&tp).await.unwrap();
        assert_eq!(
            entries.len(),
            2,
            "the two acknowledged entries, not the torn one"
        );
    }
}

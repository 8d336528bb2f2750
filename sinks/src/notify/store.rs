//! Durable state of the stage, next to the archive under `{root}/_state/notify/{topic}/`:
//!
//! * `{partition}.checkpoint.json` — the partition's notification log, the offset it
//!   covers and the sequence number of the next `notifications` object;
//! * `{partition}.journal/{id}.json` — one entry per notification finished since that
//!   checkpoint, written (and fsynced) the moment it finished: a crash after a send but
//!   before the next checkpoint keeps the send on record, so the replay does not repeat
//!   it. A checkpoint folds the entries in, then they are deleted.

use bytes::Bytes;
use futures::TryStreamExt;
use mcpulse_bus::{Offset, TopicPartition};
use mcpulse_processors::archive::ArchiveTarget;
use mcpulse_schemas::AlertEvent;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::NotifyError;
use super::nflog::{Finished, LastSent, Nflog};
use super::rows::NotificationRow;

/// A checkpoint of one partition.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Sequence number of the next `notifications` object of the partition.
    pub seq: u64,
    /// Every record below this offset has all its notifications finished.
    pub next_offset: Offset,
    pub nflog: Nflog,
}

/// One finished notification, as the journal keeps it until the next checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub event: AlertEvent,
    /// The integration key.
    pub key: String,
    pub outcome: Finished,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<LastSent>,
    /// Its attempts, for the `notifications` table.
    pub rows: Vec<NotificationRow>,
}

impl JournalEntry {
    /// Object name: derived from what was delivered, so a redo overwrites.
    fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.key.as_bytes());
        h.update(b"\n");
        h.update(self.event.event_id.as_bytes());
        hex::encode(&h.finalize()[..16])
    }
}

/// Reads and writes the stage's state in the archive.
#[derive(Clone)]
pub struct NotifyStore {
    target: ArchiveTarget,
}

fn retryable(what: &str, e: impl std::fmt::Display) -> NotifyError {
    NotifyError::Retryable(format!("{what}: {e}"))
}

impl NotifyStore {
    pub fn new(target: ArchiveTarget) -> Self {
        NotifyStore { target }
    }

    fn dir(&self, tp: &TopicPartition) -> Path {
        self.target
            .root
            .clone()
            .join("_state")
            .join("notify")
            .join(tp.topic.as_str())
    }

    fn checkpoint_path(&self, tp: &TopicPartition) -> Path {
        self.dir(tp)
            .join(format!("{}.checkpoint.json", tp.partition).as_str())
    }

    fn journal_dir(&self, tp: &TopicPartition) -> Path {
        self.dir(tp)
            .join(format!("{}.journal", tp.partition).as_str())
    }

    async fn read<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<T>, NotifyError> {
        match self.target.store.get(path).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(|e| retryable("reading", e))?;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| NotifyError::Fatal(format!("corrupt notify state {path}: {e}")))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(retryable("reading notify state", e)),
        }
    }

    async fn write<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), NotifyError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| NotifyError::Fatal(format!("serializing notify state: {e}")))?;
        self.target
            .put_durable(path, Bytes::from(body))
            .await
            .map_err(NotifyError::from)
    }

    /// The partition's checkpoint, if it has one.
    pub async fn checkpoint(&self, tp: &TopicPartition) -> Result<Option<Checkpoint>, NotifyError> {
        self.read(&self.checkpoint_path(tp)).await
    }

    /// Writes the partition's checkpoint durably.
    pub async fn save(
        &self,
        tp: &TopicPartition,
        checkpoint: &Checkpoint,
    ) -> Result<(), NotifyError> {
        self.write(&self.checkpoint_path(tp), checkpoint).await
    }

    /// Records a finished notification durably; returns the entry's path.
    pub async fn journal(
        &self,
        tp: &TopicPartition,
        entry: &JournalEntry,
    ) -> Result<Path, NotifyError> {
        let path = self
            .journal_dir(tp)
            .join(format!("{}.json", entry.id()).as_str());
        self.write(&path, entry).await?;
        Ok(path)
    }

    /// Every journal entry of the partition.
    pub async fn journal_entries(
        &self,
        tp: &TopicPartition,
    ) -> Result<Vec<(Path, JournalEntry)>, NotifyError> {
        let dir = self.journal_dir(tp);
        let listed: Vec<object_store::ObjectMeta> =
            match self.target.store.list(Some(&dir)).try_collect().await {
                Ok(listed) => listed,
                Err(object_store::Error::NotFound { .. }) => Vec::new(),
                Err(e) => return Err(retryable("listing the notify journal", e)),
            };
        let mut entries = Vec::with_capacity(listed.len());
        for meta in listed {
            if let Some(entry) = self.read::<JournalEntry>(&meta.location).await? {
                entries.push((meta.location, entry));
            }
        }
        Ok(entries)
    }

    /// Deletes journal entries a checkpoint now covers.
    pub async fn forget(&self, paths: &[Path]) -> Result<(), NotifyError> {
        for path in paths {
            match self.target.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(retryable("deleting a notify journal entry", e)),
            }
        }
        Ok(())
    }
}

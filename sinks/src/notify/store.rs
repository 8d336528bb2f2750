//! Durable state of the stage, next to the archive under `{root}/_state/notify/{topic}/`:
//!
//! * `{partition}.checkpoint.json` — the offset the partition's checkpoint covers, the
//!   segments of its notification log, the spool objects not yet written to the table
//!   and the numbers of the next segment, spool and `notifications` objects;
//! * `{partition}.nflog/{n}.json` — a [`Segment`] of the notification log: a full one,
//!   then the changes of each checkpoint since (a full one is written again once the
//!   changes add up, and the segments before it are deleted). Immutable once listed; an
//!   unlisted one is overwritten by the next attempt, like a spool object;
//! * `{partition}.spool/{n}.ndjson` — the attempts (rows of the `notifications` table)
//!   finished between two checkpoints, one object per checkpoint, until they are written
//!   to the table as Parquet (every `table_interval`: far fewer, bigger objects than one
//!   per tenant and hour at every checkpoint). An object is immutable once a checkpoint
//!   lists it; one written by a checkpoint that did not complete is overwritten by the
//!   next attempt (same `n`), whose rows it is a subset of;
//! * `{partition}.journal/{time}-{nonce}.ndjson` — the notifications finished since that
//!   checkpoint, one JSON entry per line, written (and fsynced) as they finish: a crash
//!   after a send but before the next checkpoint keeps the send on record, so the replay
//!   does not repeat it. Notifications that finish while a journal object is being
//!   written share the next one (group commit: one object and one fsync for all of
//!   them, see [`super::recorder`]). A checkpoint folds the entries in, then the objects
//!   are deleted. On a local archive a journal object is a file the recorder appends to
//!   (one write and one `fdatasync` per group commit, no file created, renamed or
//!   deleted per commit) until a checkpoint asks it to start the next one; a crash can
//!   leave a torn last line, which was never acknowledged and is ignored on reading.

use bytes::Bytes;
use futures::TryStreamExt;
use mcpulse_bus::{Offset, TopicPartition};
use mcpulse_processors::archive::ArchiveTarget;
use mcpulse_schemas::AlertEvent;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::error::NotifyError;
use super::nflog::{Finished, LastSent, Nflog, Segment};
use super::rows::NotificationRow;

/// A checkpoint of one partition.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Sequence number of the next `notifications` object of the partition.
    pub seq: u64,
    /// Every record below this offset has all its notifications finished.
    pub next_offset: Offset,
    /// The segments of the notification log, a full one first.
    pub segments: Vec<u64>,
    /// Number of the next segment.
    pub segment_next: u64,
    /// Spool objects whose rows are not in the table yet, oldest first.
    #[serde(default)]
    pub spool: Vec<u64>,
    /// Number of the next spool object.
    #[serde(default)]
    pub spool_next: u64,
}

/// A partition's durable state, as read back when it is assigned.
#[derive(Debug, Default)]
pub struct Loaded {
    pub checkpoint: Checkpoint,
    /// Rebuilt from the checkpoint's segments.
    pub nflog: Nflog,
    /// The rows of the checkpoint's spool objects.
    pub spooled: Vec<NotificationRow>,
    /// Journal entries written after the checkpoint, with the objects they are in.
    pub journal: Vec<(Path, JournalEntry)>,
}

/// One finished notification, as the journal keeps it until the next checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Shared with the delivery that finished (not copied per notification).
    #[serde(with = "shared_event")]
    pub event: Arc<AlertEvent>,
    /// The integration key.
    pub key: String,
    pub outcome: Finished,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<LastSent>,
    /// Its attempts, for the `notifications` table.
    pub rows: Vec<NotificationRow>,
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

    /// Spool object `n` of the partition.
    pub fn spool_path(&self, tp: &TopicPartition, n: u64) -> Path {
        self.dir(tp)
            .join(format!("{}.spool", tp.partition).as_str())
            .join(format!("{n:020}.ndjson").as_str())
    }

    /// Writes spool object `n` of the partition durably (overwriting an unlisted one).
    pub async fn spool(
        &self,
        tp: &TopicPartition,
        n: u64,
        rows: &[NotificationRow],
    ) -> Result<(), NotifyError> {
        let mut body = Vec::with_capacity(rows.len() * 512);
        for row in rows {
            serde_json::to_writer(&mut body, row)
                .map_err(|e| NotifyError::Fatal(format!("serializing notify state: {e}")))?;
            body.push(b'\n');
        }
        self.target
            .put_durable(&self.spool_path(tp, n), Bytes::from(body))
            .await
            .map_err(NotifyError::from)
    }

    /// The rows of the listed spool objects, in order.
    pub async fn spooled(
        &self,
        tp: &TopicPartition,
        spool: &[u64],
    ) -> Result<Vec<NotificationRow>, NotifyError> {
        let mut rows = Vec::new();
        for &n in spool {
            let path = self.spool_path(tp, n);
            let got = match self.target.store.get(&path).await {
                Ok(got) => got,
                // A listed object is never deleted before a checkpoint unlists it.
                Err(e @ object_store::Error::NotFound { .. }) => {
                    return Err(NotifyError::Fatal(format!(
                        "notify spool object listed by the checkpoint is missing: {e}"
                    )));
                }
                Err(e) => return Err(retryable("reading the notify spool", e)),
            };
            let bytes = got.bytes().await.map_err(|e| retryable("reading", e))?;
            for line in complete_lines(&bytes) {
                rows.push(serde_json::from_slice(line).map_err(|e| {
                    NotifyError::Fatal(format!("corrupt notify spool {path}: {e}"))
                })?);
            }
        }
        Ok(rows)
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

    /// Everything the partition left on record: the checkpoint, the notification log it
    /// lists, its spooled rows and the journal entries written since.
    pub async fn load(&self, tp: &TopicPartition) -> Result<Loaded, NotifyError> {
        let checkpoint = self.checkpoint(tp).await?.unwrap_or_default();
        let mut segments = Vec::with_capacity(checkpoint.segments.len());
        for &n in &checkpoint.segments {
            let path = self.segment_path(tp, n);
            let segment: Segment = self.read(&path).await?.ok_or_else(|| {
                NotifyError::Fatal(format!(
                    "notification log segment {path} listed by the checkpoint is missing"
                ))
            })?;
            segments.push(segment);
        }
        Ok(Loaded {
            nflog: Nflog::from_segments(segments),
            spooled: self.spooled(tp, &checkpoint.spool).await?,
            journal: self.journal_entries(tp).await?,
            checkpoint,
        })
    }

    /// Segment `n` of the partition's notification log.
    pub fn segment_path(&self, tp: &TopicPartition, n: u64) -> Path {
        self.dir(tp)
            .join(format!("{}.nflog", tp.partition).as_str())
            .join(format!("{n:020}.json").as_str())
    }

    /// Writes segment `n` durably (overwriting an unlisted one).
    pub async fn segment(
        &self,
        tp: &TopicPartition,
        n: u64,
        segment: &Segment,
    ) -> Result<(), NotifyError> {
        self.write(&self.segment_path(tp, n), segment).await
    }

    /// Writes the partition's checkpoint durably.
    pub async fn save(
        &self,
        tp: &TopicPartition,
        checkpoint: &Checkpoint,
    ) -> Result<(), NotifyError> {
        self.write(&self.checkpoint_path(tp), checkpoint).await
    }

    /// Records finished notifications durably, in one new journal object; returns its
    /// path. The name is new on every call (wall-clock time, a per-process nonce and a
    /// counter), so a journal object is never overwritten, not even by a later owner of
    /// the partition.
    pub async fn journal(
        &self,
        tp: &TopicPartition,
        entries: &[&JournalEntry],
    ) -> Result<Path, NotifyError> {
        let body = journal_body(entries)?;
        let path = self.journal_dir(tp).join(journal_name().as_str());
        self.target
            .put_durable(&path, Bytes::from(body))
            .await
            .map_err(NotifyError::from)?;
        Ok(path)
    }

    /// Whether journals are append files (a local archive) rather than one object per
    /// group commit (object stores, which cannot append).
    pub fn appends(&self) -> bool {
        self.target.local_root.is_some()
    }

    /// Appends `entries` to the partition's journal file `current` and makes them durable
    /// (`fdatasync`); without a current file, starts a new one first (created, its folder
    /// fsynced). Returns the file to append the next entries to. On error the file is
    /// given up (its path is returned in the error's place for deletion after the next
    /// checkpoint): a line half written into it must not be followed by another.
    pub async fn append(
        &self,
        tp: &TopicPartition,
        current: Option<JournalFile>,
        entries: &[&JournalEntry],
    ) -> Result<JournalFile, (NotifyError, Option<Path>)> {
        let body = journal_body(entries).map_err(|e| (e, None))?;
        let journal = match current {
            Some(journal) => journal,
            None => {
                let path = self.journal_dir(tp).join(journal_name().as_str());
                let local = self.target.local_path(&path).ok_or_else(|| {
                    (
                        NotifyError::Fatal("no local archive to append to".into()),
                        None,
                    )
                })?;
                JournalFile {
                    path,
                    local,
                    file: None,
                }
            }
        };
        tokio::task::spawn_blocking(move || {
            let mut journal = journal;
            match journal.write(&body) {
                Ok(()) => Ok(journal),
                Err(e) => {
                    let created = journal.local.exists().then(|| journal.path.clone());
                    Err((retryable("appending to the notify journal", e), created))
                }
            }
        })
        .await
        .map_err(|e| (retryable("appending to the notify journal", e), None))?
    }

    /// Every journal entry of the partition, with the object it is in.
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
        let mut entries = Vec::new();
        for meta in listed {
            let got = match self.target.store.get(&meta.location).await {
                Ok(got) => got,
                // Deleted by a checkpoint since the listing.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(retryable("reading the notify journal", e)),
            };
            let bytes = got.bytes().await.map_err(|e| retryable("reading", e))?;
            for line in complete_lines(&bytes) {
                let entry = serde_json::from_slice(line).map_err(|e| {
                    NotifyError::Fatal(format!("corrupt notify journal {}: {e}", meta.location))
                })?;
                entries.push((meta.location.clone(), entry));
            }
        }
        Ok(entries)
    }

    /// Deletes objects a checkpoint now covers.
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

/// Journal entries as written: one JSON document per line.
fn journal_body(entries: &[&JournalEntry]) -> Result<Vec<u8>, NotifyError> {
    let mut body = Vec::with_capacity(entries.len() * 1024);
    for entry in entries {
        serde_json::to_writer(&mut body, entry)
            .map_err(|e| NotifyError::Fatal(format!("serializing notify state: {e}")))?;
        body.push(b'\n');
    }
    Ok(body)
}

/// The non-empty lines of a journal object that end with a newline: a last line without
/// one is an append a crash cut short, never acknowledged, and is left out.
fn complete_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let complete = bytes
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(&bytes[..0], |end| &bytes[..end]);
    complete.split(|b| *b == b'\n').filter(|l| !l.is_empty())
}

/// A partition's journal file on a local archive, appended to by its recorder.
#[derive(Debug)]
pub struct JournalFile {
    /// The object path (what a checkpoint deletes).
    pub path: Path,
    local: std::path::PathBuf,
    /// Open once the file exists.
    file: Option<std::fs::File>,
}

impl JournalFile {
    /// Appends `body` and syncs it (creating the file, and syncing its folder, first).
    fn write(&mut self, body: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let dir = self.local.parent().expect("journal files are in a folder");
                std::fs::create_dir_all(dir)?;
                let file = std::fs::OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&self.local)?;
                std::fs::File::open(dir)?.sync_all()?;
                self.file.insert(file)
            }
        };
        file.write_all(body)?;
        file.sync_data()
    }
}

/// A journal object name no other call, process or owner produces.
fn journal_name() -> String {
    static NONCE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nonce = *NONCE.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    });
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{nanos:020}-{nonce:016x}-{:08}.ndjson",
        COUNTER.fetch_add(1, Relaxed)
    )
}

/// An `Arc<AlertEvent>` as a plain event (serde's `rc` feature is not enabled).
mod shared_event {
    use std::sync::Arc;

    use mcpulse_schemas::AlertEvent;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(event: &Arc<AlertEvent>, s: S) -> Result<S::Ok, S::Error> {
        event.as_ref().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<AlertEvent>, D::Error> {
        AlertEvent::deserialize(d).map(Arc::new)
    }
}

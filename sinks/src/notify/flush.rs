//! The background flush of one partition. The operator takes a snapshot under the
//! partition's lock (the notification log, the offset below which every record is
//! finished, the rows and journal objects since the last flush) and hands it to a task
//! on the flush runtime ([`super::background`], lowest CPU priority),
//! so records keep being consumed and notifications delivered while it is written:
//!
//! 1. the rows since the last flush go to one new spool object — or, every
//!    `table_interval` (and on shutdown), every spooled row goes to the `notifications`
//!    table, one Parquet object per tenant and hour named after the partition and `seq`
//!    (a retry or a replay after a crash overwrites it);
//! 2. a segment of the notification log (the changes since the last checkpoint, or now
//!    and then all of it);
//! 3. the checkpoint: the offset, the segments and the spool objects it lists;
//! 4. the journal objects the checkpoint folded in, the spool objects the table now
//!    holds and the segments a full one replaced are deleted.

use mcpulse_bus::{Offset, TopicPartition};
use mcpulse_processors::archive::TableWriter;
use object_store::path::Path;
use tracing::warn;

use super::error::NotifyError;
use super::nflog::Segment;
use super::rows::{self, NotificationRow};
use super::store::{Checkpoint, NotifyStore};

/// What one flush writes.
pub struct Flush {
    pub writer: TableWriter,
    pub store: NotifyStore,
    pub tp: TopicPartition,
    /// The checkpoint as it stands (sequence numbers, listed spool objects).
    pub seq: u64,
    pub spool: Vec<u64>,
    pub spool_next: u64,
    pub segments: Vec<u64>,
    pub segment_next: u64,
    /// The offset the new checkpoint covers.
    pub durable: Offset,
    /// The notification log's segment.
    pub segment: Segment,
    /// Rows finished since the last flush.
    pub fresh: Vec<NotificationRow>,
    /// `Some(the spooled rows)`: write every row to the table this time.
    pub table: Option<Vec<NotificationRow>>,
    /// Journal objects the checkpoint covers.
    pub journals: Vec<Path>,
}

/// How it went. On failure, what it took goes back to the partition for the next
/// attempt, which writes the same object names.
pub struct Flushed {
    /// `Ok` once the checkpoint is written.
    pub result: Result<(), NotifyError>,
    /// The checkpoint written (on success).
    pub seq: u64,
    pub spool: Vec<u64>,
    pub spool_next: u64,
    pub segments: Vec<u64>,
    pub segment_next: u64,
    pub durable: Offset,
    /// Whether the segment written was a full one, and how many incidents it held.
    pub full: bool,
    pub segment_len: usize,
    pub fresh: Vec<NotificationRow>,
    pub table: Option<Vec<NotificationRow>>,
    pub journals: Vec<Path>,
    /// Objects the checkpoint made obsolete that could not be deleted: tried again
    /// after the next checkpoint.
    pub undeleted: Vec<Path>,
}

impl Flush {
    pub async fn run(mut self) -> Flushed {
        let result = self.write().await;
        let undeleted = match &result {
            Ok(obsolete) => self.delete(obsolete).await,
            Err(_) => Vec::new(),
        };
        Flushed {
            result: result.map(|_| ()),
            undeleted,
            seq: self.seq,
            spool: self.spool,
            spool_next: self.spool_next,
            segments: self.segments,
            segment_next: self.segment_next,
            durable: self.durable,
            full: self.segment.full,
            segment_len: self.segment.len(),
            fresh: self.fresh,
            table: self.table,
            journals: self.journals,
        }
    }

    /// Writes the rows, the segment and the checkpoint; advances the sequence numbers
    /// and lists to what the checkpoint says (left as they were if it is not written).
    /// Returns the objects it made obsolete.
    async fn write(&mut self) -> Result<Vec<Path>, NotifyError> {
        let (mut seq, mut spool, mut spool_next) = (self.seq, self.spool.clone(), self.spool_next);
        let (mut segments, mut segment_next) = (self.segments.clone(), self.segment_next);
        let mut unlisted = Vec::new();
        if let Some(spooled) = &self.table {
            let rows: Vec<&NotificationRow> = spooled.iter().chain(&self.fresh).collect();
            if !rows.is_empty() {
                let files = rows::batches(rows.iter().copied())
                    .map_err(|e| NotifyError::Fatal(format!("building notification rows: {e}")))?;
                let name = format!(
                    "{}-{}-{:020}.parquet",
                    self.tp.topic, self.tp.partition, seq
                );
                self.writer.write(&name, &files).await?;
                seq += 1;
            }
            unlisted = std::mem::take(&mut spool);
        } else if !self.fresh.is_empty() {
            self.store.spool(&self.tp, spool_next, &self.fresh).await?;
            spool.push(spool_next);
            spool_next += 1;
        }
        self.store
            .segment(&self.tp, segment_next, &self.segment)
            .await?;
        let replaced = if self.segment.full {
            std::mem::take(&mut segments)
        } else {
            Vec::new()
        };
        segments.push(segment_next);
        segment_next += 1;
        let checkpoint = Checkpoint {
            seq,
            next_offset: self.durable,
            segments: segments.clone(),
            segment_next,
            spool: spool.clone(),
            spool_next,
        };
        self.store.save(&self.tp, &checkpoint).await?;
        (self.seq, self.spool, self.spool_next) = (seq, spool, spool_next);
        (self.segments, self.segment_next) = (segments, segment_next);
        let unlisted = unlisted
            .into_iter()
            .map(|n| self.store.spool_path(&self.tp, n));
        let replaced = replaced
            .into_iter()
            .map(|n| self.store.segment_path(&self.tp, n));
        Ok(self
            .journals
            .iter()
            .cloned()
            .chain(unlisted)
            .chain(replaced)
            .collect())
    }

    /// Deletes `obsolete`; returns what it could not delete.
    async fn delete(&self, obsolete: &[Path]) -> Vec<Path> {
        match self.store.forget(obsolete).await {
            Ok(()) => Vec::new(),
            Err(e) => {
                warn!(partition = %self.tp, error = %e, "cannot delete notify state a checkpoint made obsolete yet: retrying after the next checkpoint");
                obsolete.to_vec()
            }
        }
    }
}

//! The operator's side of one log partition: which records still have notifications in
//! flight (so the offset committed never passes one of them), the rows and journal
//! objects the next flush writes and folds in, the flush running in the background, and
//! where the last checkpoint stands.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use mcpulse_bus::{Offset, TopicPartition};
use object_store::path::Path;

use super::error::NotifyError;
use super::flush::Flushed;
use super::nflog::Segment;
use super::recorder::Recorder;
use super::rows::NotificationRow;
use super::shared::{PartInner, PartShared};
use super::store::{Checkpoint, Loaded, NotifyStore};
use mcpulse_processors::archive::maintenance::DeletionRequest;
use tracing::info;

pub struct Partition {
    pub shared: Arc<PartShared>,
    /// Puts finished notifications on record (group commit of the journal).
    pub recorder: Recorder,
    /// The flush running in the background, if any (one at a time).
    pub flushing: Option<tokio::task::JoinHandle<Flushed>>,
    /// Sequence number of the next `notifications` object.
    pub seq: u64,
    /// Records below this were finished when the loaded checkpoint was taken.
    pub skip_below: Offset,
    /// The offset after the last record taken.
    pub next_offset: Offset,
    /// Records whose notifications are not all finished: offset → how many are left.
    outstanding: BTreeMap<Offset, u32>,
    /// Rows finished since the last flush (the next one spools them).
    pub rows: Vec<NotificationRow>,
    /// Rows spooled, not yet in the table.
    pub spooled: Vec<NotificationRow>,
    /// The spool objects holding them, as the last checkpoint lists them.
    pub spool: Vec<u64>,
    /// Number of the next spool object.
    pub spool_next: u64,
    /// The notification log's segments, as the last checkpoint lists them.
    pub segments: Vec<u64>,
    /// Number of the next segment.
    pub segment_next: u64,
    /// Incidents in the segments after the full one (when they outnumber the log, the
    /// next segment is a full one).
    pub since_full: usize,
    /// The next segment must be a full one (a flush failed after taking its changes, or
    /// a deletion removed incidents).
    pub need_full: bool,
    /// The next flush writes the table (a deletion removed spooled rows).
    pub table_now: bool,
    /// When the log last forgot incidents past their retention.
    pub pruned_at: Option<Instant>,
    /// When the spooled rows were last written to the table.
    pub last_table: Instant,
    /// Journal objects the next checkpoint covers (then deleted).
    pub journals: Vec<Path>,
    /// The offset the last checkpoint covers.
    pub checkpointed: Offset,
    /// The offset last reported for commit.
    pub reported: Option<Offset>,
    pub last_flush: Instant,
}

impl Partition {
    /// Restores a partition from its checkpoint and the journal entries written after it
    /// (in event-time order, so the latest handle wins). Entries the checkpoint already
    /// covers only need deleting; the others are folded in and their rows written again
    /// under the same object name.
    /// Starts the partition's recorder (on the current Tokio runtime).
    pub fn restore(tp: TopicPartition, loaded: Loaded, store: &NotifyStore) -> Self {
        let Loaded {
            checkpoint,
            mut nflog,
            spooled,
            mut journal,
        } = loaded;
        let Checkpoint {
            seq,
            next_offset,
            segments,
            segment_next,
            spool,
            spool_next,
        } = checkpoint;
        journal.sort_by_key(|(_, entry)| entry.event.time);
        let (mut rows, mut journals, mut dirty) = (Vec::new(), Vec::new(), false);
        for (path, entry) in journal {
            if !nflog.is_done(&entry.event.incident_id, &entry.key, &entry.event.event_id) {
                nflog.finish(&entry.event, &entry.key, &entry.outcome, entry.sent.clone());
                rows.extend(entry.rows);
                dirty = true;
            }
            if !journals.contains(&path) {
                journals.push(path);
            }
        }
        let shared = PartShared::new(tp, nflog);
        shared.lock().dirty = dirty;
        Partition {
            recorder: Recorder::spawn(store.clone(), shared.clone()),
            flushing: None,
            shared,
            seq,
            skip_below: next_offset,
            next_offset,
            outstanding: BTreeMap::new(),
            rows,
            spooled,
            spool,
            spool_next,
            since_full: 0,
            need_full: false,
            table_now: false,
            pruned_at: None,
            segments,
            segment_next,
            last_table: Instant::now(),
            journals,
            checkpointed: next_offset,
            reported: None,
            last_flush: Instant::now(),
        }
    }

    /// `count` notifications of the record at `offset` are in flight.
    pub fn hold(&mut self, offset: Offset, count: u32) {
        if count > 0 {
            *self.outstanding.entry(offset).or_default() += count;
        }
    }

    /// Notifications in flight.
    pub fn in_flight(&self) -> u32 {
        self.outstanding.values().sum()
    }

    /// The next offset all of whose predecessors have their notifications finished.
    pub fn durable(&self) -> Offset {
        self.outstanding
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_offset)
    }

    /// Takes the notifications finished since the last call (under the caller's lock of
    /// the shared state): their rows and journal entries wait for the next flush.
    pub fn absorb(&mut self, inner: &mut PartInner) {
        for done in inner.finished.drain(..) {
            if let Some(offset) = done.offset
                && let Some(left) = self.outstanding.get_mut(&offset)
            {
                *left -= 1;
                if *left == 0 {
                    self.outstanding.remove(&offset);
                }
            }
            self.rows.extend(done.rows);
            self.journals.extend(done.journal);
        }
    }

    /// The partition was released (or the operator dropped): queued notifications are
    /// dropped and a background flush is cut short; the next owner redoes whatever is not
    /// on record.
    pub fn stop(&self) {
        self.shared.cancel();
        if let Some(task) = &self.flushing {
            task.abort();
        }
    }

    /// Forgets the tenant or server of a deletion request (`mcpulse admin delete`): its
    /// incidents and budget in the notification log, its rows not yet in the table. The
    /// next checkpoint writes the whole log, and the next flush writes the table (so no
    /// spool object keeps its rows).
    pub fn forget(&mut self, request: &DeletionRequest) {
        let (tenant, server) = (request.tenant.as_str(), request.server.as_deref());
        let of_target =
            |r: &NotificationRow| r.tenant == tenant && server.is_none_or(|s| r.server == s);
        let rows = self.rows.len() + self.spooled.len();
        self.rows.retain(|r| !of_target(r));
        self.spooled.retain(|r| !of_target(r));
        let incidents = self.shared.lock().nflog.forget(tenant, server);
        if incidents > 0 || rows != self.rows.len() + self.spooled.len() {
            self.need_full = true;
            self.table_now = true;
            self.shared.lock().dirty = true;
            info!(partition = %self.shared.tp, request = %request.id, incidents, "notification state of a deleted tenant or server dropped");
        }
    }

    /// Takes in a background flush that ended: on success, where the checkpoint now
    /// stands; on failure, what it took goes back (ahead of what came since) for the
    /// next attempt.
    pub fn flushed(&mut self, done: Flushed) -> Result<(), NotifyError> {
        let Flushed {
            result,
            seq,
            spool,
            spool_next,
            segments,
            segment_next,
            durable,
            full,
            segment_len,
            mut fresh,
            table,
            mut journals,
            undeleted,
        } = done;
        self.journals.extend(undeleted);
        match result {
            Ok(()) => {
                (self.seq, self.spool, self.spool_next) = (seq, spool, spool_next);
                (self.segments, self.segment_next) = (segments, segment_next);
                self.since_full = if full {
                    0
                } else {
                    self.since_full + segment_len
                };
                self.checkpointed = durable;
                if table.is_none() {
                    self.spooled.append(&mut fresh);
                }
                Ok(())
            }
            Err(e) => {
                fresh.append(&mut self.rows);
                self.rows = fresh;
                journals.append(&mut self.journals);
                self.journals = journals;
                if let Some(table) = table {
                    self.spooled = table;
                }
                self.need_full = true;
                self.shared.lock().dirty = true;
                Err(e)
            }
        }
    }

    /// The notification log's segment for the next checkpoint: its changes, or all of
    /// it when the changes written since the last full segment add up to more than the
    /// log (so reading it back costs at most about twice its size).
    pub fn segment(&mut self, inner: &mut PartInner) -> Segment {
        const MAX_SEGMENTS: usize = 64;
        let full = self.need_full
            || self.segments.is_empty()
            || self.segments.len() >= MAX_SEGMENTS
            || self.since_full + inner.nflog.changes() > inner.nflog.len().max(1024);
        self.need_full = false;
        inner.nflog.segment(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::nflog::{Finished, Nflog};
    use crate::notify::shared::Completion;
    use crate::notify::store::JournalEntry;
    use crate::notify::testutil::{event, memory_store};

    #[tokio::test]
    async fn the_durable_offset_stops_at_the_first_record_with_notifications_in_flight() {
        let tp = TopicPartition::new("alerts", 0);
        let mut p = Partition::restore(tp, Loaded::default(), &memory_store());
        p.hold(3, 2);
        p.hold(5, 1);
        p.next_offset = 7;
        assert_eq!(p.durable(), 3);
        let shared = p.shared.clone();
        let mut inner = shared.lock();
        inner.finished.push(Completion {
            offset: Some(5),
            rows: Vec::new(),
            journal: Vec::new(),
        });
        inner.finished.push(Completion {
            offset: Some(3),
            rows: Vec::new(),
            journal: Vec::new(),
        });
        p.absorb(&mut inner);
        assert_eq!((p.durable(), p.in_flight()), (3, 1));
        inner.finished.push(Completion {
            offset: Some(3),
            rows: Vec::new(),
            journal: vec![Path::from("j/1.json")],
        });
        p.absorb(&mut inner);
        assert_eq!((p.durable(), p.in_flight()), (7, 0));
        assert_eq!(p.journals.len(), 1);
    }

    #[tokio::test]
    async fn restore_folds_in_journal_entries_the_checkpoint_does_not_cover() {
        let tp = TopicPartition::new("alerts", 1);
        let e1 = event("acme", "i1", "e1");
        let e2 = event("acme", "i1", "e2");
        let mut nflog = Nflog::default();
        nflog.finish(&e1, "k", &Finished::Skipped, None);
        let entry = |e: &mcpulse_schemas::AlertEvent| JournalEntry {
            event: std::sync::Arc::new(e.clone()),
            key: "k".into(),
            outcome: Finished::Sent { handle: None },
            sent: None,
            rows: vec![crate::notify::rows::NotificationRow::new(
                e,
                &crate::notify::rows::Addressee {
                    route_id: "r".into(),
                    receiver: "x".into(),
                    integration: "webhook".into(),
                    destination: "d".into(),
                },
                crate::notify::rows::Status::Sent,
            )],
        };
        let p = Partition::restore(
            tp,
            Loaded {
                checkpoint: Checkpoint {
                    seq: 4,
                    next_offset: 10,
                    ..Checkpoint::default()
                },
                nflog,
                spooled: Vec::new(),
                journal: vec![
                    (Path::from("j/a.ndjson"), entry(&e1)),
                    (Path::from("j/b.ndjson"), entry(&e2)),
                    (Path::from("j/b.ndjson"), entry(&e1)),
                ],
            },
            &memory_store(),
        );
        assert_eq!((p.seq, p.skip_below, p.durable()), (4, 10, 10));
        assert_eq!(p.rows.len(), 1, "only e2's rows: e1 was checkpointed");
        assert_eq!(
            p.journals.len(),
            2,
            "both objects deleted after the next checkpoint, each once"
        );
        let inner = p.shared.lock();
        assert!(inner.dirty && inner.nflog.is_done("i1", "k", "e2"));
    }

    #[tokio::test]
    async fn a_deletion_forgets_the_servers_incidents_and_rows_and_forces_a_full_rewrite() {
        let tp = TopicPartition::new("alerts", 2);
        let mut p = Partition::restore(tp, Loaded::default(), &memory_store());
        let to = crate::notify::rows::Addressee {
            route_id: "r".into(),
            receiver: "x".into(),
            integration: "webhook".into(),
            destination: "d".into(),
        };
        for (tenant, incident) in [("acme", "i1"), ("globex", "i2")] {
            let e = event(tenant, incident, &format!("{incident}-e"));
            p.shared
                .lock()
                .nflog
                .finish(&e, "k", &Finished::Skipped, None);
            let row = crate::notify::rows::NotificationRow::new(
                &e,
                &to,
                crate::notify::rows::Status::Sent,
            );
            p.rows.push(row.clone());
            p.spooled.push(row);
        }
        let request = DeletionRequest::new("acme", Some("weather"), chrono::Utc::now());
        p.forget(&request);
        assert!(p.need_full && p.table_now);
        assert!(
            p.rows
                .iter()
                .chain(&p.spooled)
                .all(|r| r.tenant == "globex")
        );
        let inner = p.shared.lock();
        assert!(inner.nflog.incident("i1").is_none() && inner.nflog.incident("i2").is_some());
    }
}

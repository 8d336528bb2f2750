//! The operator's side of one log partition: which records still have notifications in
//! flight (so the offset committed never passes one of them), the rows and journal
//! entries the next flush writes and folds in, and where the last checkpoint stands.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use mcpulse_bus::{Offset, TopicPartition};
use object_store::path::Path;

use super::nflog::Nflog;
use super::rows::NotificationRow;
use super::shared::{PartInner, PartShared};
use super::store::{Checkpoint, JournalEntry};

pub struct Partition {
    pub shared: Arc<PartShared>,
    /// Sequence number of the next `notifications` object.
    pub seq: u64,
    /// Records below this were finished when the loaded checkpoint was taken.
    pub skip_below: Offset,
    /// The offset after the last record taken.
    pub next_offset: Offset,
    /// Records whose notifications are not all finished: offset → how many are left.
    outstanding: BTreeMap<Offset, u32>,
    /// Rows the next flush writes.
    pub rows: Vec<NotificationRow>,
    /// Journal entries the next checkpoint covers (then deleted).
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
    pub fn restore(
        tp: TopicPartition,
        checkpoint: Option<Checkpoint>,
        mut journal: Vec<(Path, JournalEntry)>,
    ) -> Self {
        let Checkpoint {
            seq,
            next_offset,
            mut nflog,
        } = checkpoint.unwrap_or_default();
        journal.sort_by_key(|(_, entry)| entry.event.time);
        let (mut rows, mut journals, mut dirty) = (Vec::new(), Vec::new(), false);
        for (path, entry) in journal {
            if !nflog.is_done(&entry.event.incident_id, &entry.key, &entry.event.event_id) {
                nflog.finish(&entry.event, &entry.key, &entry.outcome, entry.sent.clone());
                rows.extend(entry.rows);
                dirty = true;
            }
            journals.push(path);
        }
        let shared = PartShared::new(tp, nflog);
        shared.lock().dirty = dirty;
        Partition {
            shared,
            seq,
            skip_below: next_offset,
            next_offset,
            outstanding: BTreeMap::new(),
            rows,
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

    /// A copy of the notification log (for a checkpoint).
    pub fn nflog(inner: &PartInner) -> Nflog {
        inner.nflog.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::nflog::Finished;
    use crate::notify::shared::Completion;
    use crate::notify::testutil::event;

    #[test]
    fn the_durable_offset_stops_at_the_first_record_with_notifications_in_flight() {
        let tp = TopicPartition::new("alerts", 0);
        let mut p = Partition::restore(tp, None, Vec::new());
        p.hold(3, 2);
        p.hold(5, 1);
        p.next_offset = 7;
        assert_eq!(p.durable(), 3);
        let shared = p.shared.clone();
        let mut inner = shared.lock();
        inner.finished.push(Completion {
            offset: Some(5),
            rows: Vec::new(),
            journal: None,
        });
        inner.finished.push(Completion {
            offset: Some(3),
            rows: Vec::new(),
            journal: None,
        });
        p.absorb(&mut inner);
        assert_eq!((p.durable(), p.in_flight()), (3, 1));
        inner.finished.push(Completion {
            offset: Some(3),
            rows: Vec::new(),
            journal: Some(Path::from("j/1.json")),
        });
        p.absorb(&mut inner);
        assert_eq!((p.durable(), p.in_flight()), (7, 0));
        assert_eq!(p.journals.len(), 1);
    }

    #[test]
    fn restore_folds_in_journal_entries_the_checkpoint_does_not_cover() {
        let tp = TopicPartition::new("alerts", 1);
        let e1 = event("acme", "i1", "e1");
        let e2 = event("acme", "i1", "e2");
        let mut nflog = Nflog::default();
        nflog.finish(&e1, "k", &Finished::Skipped, None);
        let entry = |e: &mcpulse_schemas::AlertEvent| JournalEntry {
            event: e.clone(),
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
            Some(Checkpoint {
                seq: 4,
                next_offset: 10,
                nflog,
            }),
            vec![
                (Path::from("j/a.json"), entry(&e1)),
                (Path::from("j/b.json"), entry(&e2)),
            ],
        );
        assert_eq!((p.seq, p.skip_below, p.durable()), (4, 10, 10));
        assert_eq!(p.rows.len(), 1, "only e2's rows: e1 was checkpointed");
        assert_eq!(
            p.journals.len(),
            2,
            "both deleted after the next checkpoint"
        );
        let inner = p.shared.lock();
        assert!(inner.dirty && inner.nflog.is_done("i1", "k", "e2"));
    }
}

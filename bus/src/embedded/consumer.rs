//! The embedded log's consumer: one member of a consumer group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{Notify, watch};

use super::BusInner;
use super::group::{Group, GroupEvent, MemberId};
use super::partition::{Budget, Cursor, PartitionLog};
use crate::{BusError, Consumer, ConsumerEvent, Offset, Record, TopicPartition};

/// Most records one poll returns.
const MAX_POLL_RECORDS: usize = 1000;
/// Most bytes one poll returns (a single larger record is still returned alone).
const MAX_POLL_BYTES: u64 = 4 << 20;

/// A member of a consumer group of an `EmbeddedBus` (see [`Consumer`]).
///
/// Dropping it leaves the group like [`Consumer::close`].
pub struct EmbeddedConsumer {
    bus: Arc<BusInner>,
    group: Arc<Group>,
    member: MemberId,
    notify: Arc<Notify>,
    /// Partitions whose `Assigned` event was delivered, with their fetch positions.
    fetch: BTreeMap<TopicPartition, Fetch>,
    /// Partitions revoked by the last poll: still committable until the next one.
    revoked: Vec<TopicPartition>,
    /// Rotates the partition fetched first, for fairness.
    round: usize,
    left: bool,
}

struct Fetch {
    log: Arc<PartitionLog>,
    end: watch::Receiver<Offset>,
    next: Offset,
    cursor: Option<Cursor>,
    paused: bool,
}

impl EmbeddedConsumer {
    pub(crate) fn new(
        bus: Arc<BusInner>,
        group: Arc<Group>,
        member: MemberId,
        notify: Arc<Notify>,
    ) -> Self {
        Self {
            bus,
            group,
            member,
            notify,
            fetch: BTreeMap::new(),
            revoked: Vec::new(),
            round: 0,
            left: false,
        }
    }

    /// The consumer group this member belongs to.
    pub fn group(&self) -> &str {
        &self.group.name
    }

    /// Where fetching of an assigned partition continues (the next offset to return).
    pub fn position(&self, tp: &TopicPartition) -> Option<Offset> {
        self.fetch.get(tp).map(|f| f.next)
    }

    fn apply(&mut self, event: GroupEvent) -> Result<ConsumerEvent, BusError> {
        Ok(match event {
            GroupEvent::Assigned(partitions) => {
                for tp in &partitions {
                    let log = self
                        .bus
                        .partition_log(tp)
                        .ok_or_else(|| BusError::UnknownTopic(tp.topic.clone()))?;
                    let next = self.group.committed(tp).unwrap_or(0);
                    let end = log.subscribe();
                    self.fetch.insert(
                        tp.clone(),
                        Fetch {
                            log,
                            end,
                            next,
                            cursor: None,
                            paused: false,
                        },
                    );
                }
                ConsumerEvent::Assigned(partitions)
            }
            GroupEvent::Revoked(partitions) => {
                for tp in &partitions {
                    self.fetch.remove(tp);
                }
                self.revoked.clone_from(&partitions);
                ConsumerEvent::Revoked(partitions)
            }
        })
    }

    /// Reads what is available from the unpaused partitions, within one poll's budget.
    fn fetch_records(&mut self) -> Result<Vec<Record>, BusError> {
        let mut out = Vec::new();
        if self.fetch.is_empty() {
            return Ok(out);
        }
        let mut budget = Budget {
            records: MAX_POLL_RECORDS,
            bytes: MAX_POLL_BYTES,
        };
        let mut entries: Vec<&mut Fetch> = self.fetch.values_mut().collect();
        let start = self.round % entries.len();
        entries.rotate_left(start);
        self.round = self.round.wrapping_add(1);
        for f in entries {
            if f.paused {
                continue;
            }
            let end = *f.end.borrow_and_update();
            if f.next < end {
                f.log
                    .read(&mut f.next, &mut f.cursor, &mut budget, &mut out)?;
            }
            if budget.exhausted() {
                break;
            }
        }
        Ok(out)
    }

    /// Waits until a partition's end offset moves, a group event arrives, or `until`.
    async fn wait(&mut self, until: Instant) {
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(until));
        let changes: Vec<_> = self
            .fetch
            .values_mut()
            .filter(|f| !f.paused)
            .map(|f| Box::pin(f.end.changed()))
            .collect();
        if changes.is_empty() {
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = sleep => {}
            }
        } else {
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = futures::future::select_all(changes) => {}
                _ = sleep => {}
            }
        }
    }

    fn leave(&mut self) {
        if !self.left {
            self.left = true;
            self.group.leave(self.member);
        }
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn poll(&mut self, timeout: Duration) -> Result<ConsumerEvent, BusError> {
        if self.left {
            return Err(BusError::Closed);
        }
        self.revoked.clear();
        let deadline = Instant::now() + timeout;
        loop {
            if self.bus.is_closed() {
                return Err(BusError::Closed);
            }
            if let Some(event) = self.group.next_event(self.member) {
                return self.apply(event);
            }
            let records = self.fetch_records()?;
            if !records.is_empty() {
                return Ok(ConsumerEvent::Records(records));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(ConsumerEvent::Records(Vec::new()));
            }
            let until = self
                .group
                .next_deadline()
                .map_or(deadline, |d| d.clamp(now, deadline));
            self.wait(until).await;
        }
    }

    async fn commit(&mut self, offsets: &[(TopicPartition, Offset)]) -> Result<(), BusError> {
        if offsets.is_empty() {
            return Ok(());
        }
        if self.left {
            return Err(BusError::Closed);
        }
        let group = Arc::clone(&self.group);
        let member = self.member;
        let offsets = offsets.to_vec();
        tokio::task::spawn_blocking(move || group.commit(member, &offsets))
            .await
            .map_err(|e| BusError::Unavailable(format!("offset commit task failed: {e}")))?
    }

    /// The partitions assigned (their `Assigned` event returned by `poll`), plus those
    /// revoked by the last poll, which may still be committed until the next one.
    fn assignment(&self) -> Vec<TopicPartition> {
        let mut all: Vec<TopicPartition> = self
            .fetch
            .keys()
            .cloned()
            .chain(self.revoked.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    fn pause(&mut self, tp: &TopicPartition) -> Result<(), BusError> {
        let f = self
            .fetch
            .get_mut(tp)
            .ok_or_else(|| BusError::NotAssigned(tp.clone()))?;
        f.paused = true;
        Ok(())
    }

    fn resume(&mut self, tp: &TopicPartition, offset: Offset) -> Result<(), BusError> {
        let f = self
            .fetch
            .get_mut(tp)
            .ok_or_else(|| BusError::NotAssigned(tp.clone()))?;
        f.paused = false;
        f.next = offset;
        f.cursor = None;
        Ok(())
    }

    async fn close(mut self: Box<Self>) -> Result<(), BusError> {
        self.leave();
        Ok(())
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        self.leave();
    }
}

//! The stream runtime: consume → operate → make durable → commit.
//!
//! One runtime drives one operator as one member of a consumer group. Offsets are
//! committed only for output the operator reports durable, so nothing is lost and nothing
//! is committed early.
//!
//! **When the next stage fails** (a flush, a record's processing or a dead-letter write
//! fails retryably) the runtime *stalls*: it pauses every partition it has handed records
//! of to the operator, keeps polling the consumer — so a Kafka member is not thrown out
//! of its group for exceeding `max.poll.interval.ms`, and rebalances are served — and
//! retries the failed step with exponential backoff (`min_backoff`..`max_backoff`). Once
//! the step succeeds it commits what became durable and resumes each paused partition at
//! the first offset not yet handed to the operator.
//!
//! Records a poll returns while stalled (a partition assigned during the stall, whose
//! position the runtime cannot know before its first records arrive, or records a backend
//! had already fetched before the pause) are **dropped and re-fetched**: the runtime
//! remembers per partition the first offset it did not hand over, pauses the partition,
//! and `resume`s it there after recovery. The records after a failed record in the same
//! poll are dropped the same way. Nothing is skipped: a dropped record is always read
//! again.
//!
//! **Revocation** (stalled or not): the revoked partitions are flushed once; if that fails
//! retryably they are released without committing their buffered output (the new owner
//! replays from the last commit, and operators are idempotent on replay). Offsets already
//! durable for them are committed before the next poll, as the `Consumer` contract asks.
//!
//! **Commits** that fail retryably (broker briefly unreachable) are kept per partition
//! (offsets only move forward) and retried at the next flush or after a backoff; a commit
//! for a partition no longer owned is dropped; other commit errors stop the runtime.
//!
//! **Shutdown** flushes everything and commits; if the next stage keeps failing, it gives
//! up after `drain_timeout` and leaves the group without committing what is not durable
//! (it is redelivered to the next owner).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mcpulse_bus::{BusError, Consumer, ConsumerEvent, Offset, Record, TopicPartition};
use serde::Deserialize;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::dlq::DeadLetters;
use crate::operator::{Operator, OperatorError};
use crate::stats::RuntimeStats;

/// Tuning of a runtime.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// How long one poll waits for records before checking whether a flush is due.
    #[serde(with = "humantime_serde")]
    pub poll_timeout: Duration,
    /// First pause after a failed flush (or record, or commit); doubles up to `max_backoff`.
    /// Consumption stays paused meanwhile, but the consumer keeps polling to stay in its
    /// group.
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    /// Longest pause between retries.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// On shutdown, how long the final flush and commit may keep failing retryably before
    /// the runtime gives up and leaves the group without committing what is not durable
    /// (it is redelivered to the next owner of those partitions).
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            poll_timeout: Duration::from_millis(200),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a runtime stopped.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("log error in {operator}: {source}")]
    Bus {
        operator: &'static str,
        #[source]
        source: BusError,
    },
    #[error("operator {operator} failed: {source}")]
    Operator {
        operator: &'static str,
        #[source]
        source: OperatorError,
    },
}

/// The step that failed retryably and is retried while consumption is paused.
enum Pending {
    /// Hand this record to the operator again (its predecessors were handed over).
    Process(Record),
    /// Write this undecodable record to the dead-letter topic, then skip it.
    DeadLetter(Record, String),
    /// Flush the output that is due.
    Flush,
}

impl Pending {
    fn record(&self) -> Option<&Record> {
        match self {
            Pending::Process(r) | Pending::DeadLetter(r, _) => Some(r),
            Pending::Flush => None,
        }
    }
}

/// Consumption is paused until `pending` succeeds.
struct Stall {
    pending: Pending,
    backoff: Backoff,
    retry_at: Instant,
    since: Instant,
}

/// A step failed retryably: what to retry, and why it failed.
type Retry = (Pending, String);

/// Drives one operator over one consumer.
pub struct Runtime {
    consumer: Box<dyn Consumer>,
    operator: Box<dyn Operator>,
    dead_letters: DeadLetters,
    config: RuntimeConfig,
    stats: Arc<RuntimeStats>,
    /// Per partition whose records were handed to the operator since it was assigned (or
    /// whose position a dropped record revealed): the first offset not handed over yet.
    next: BTreeMap<TopicPartition, Offset>,
    /// Partitions this runtime paused (each has an entry in `next`).
    paused: BTreeSet<TopicPartition>,
    /// Offsets the operator reported durable that are not committed yet.
    uncommitted: BTreeMap<TopicPartition, Offset>,
    commit_backoff: Backoff,
    /// When a commit that failed retryably is tried again (also at the next flush).
    commit_retry_at: Option<Instant>,
    stall: Option<Stall>,
}

impl Runtime {
    pub fn new(
        consumer: Box<dyn Consumer>,
        operator: Box<dyn Operator>,
        dead_letters: DeadLetters,
        config: RuntimeConfig,
        stats: Arc<RuntimeStats>,
    ) -> Self {
        Self {
            consumer,
            operator,
            dead_letters,
            commit_backoff: Backoff::new(&config),
            config,
            stats,
            next: BTreeMap::new(),
            paused: BTreeSet::new(),
            uncommitted: BTreeMap::new(),
            commit_retry_at: None,
            stall: None,
        }
    }

    /// Runs until `shutdown` turns true, then flushes everything, commits and leaves the group.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), RuntimeError> {
        let name = self.operator.name();
        info!(operator = name, "runtime started");
        self.serve(&mut shutdown).await?;
        self.drain().await?;
        let name = self.operator.name();
        self.consumer
            .close()
            .await
            .map_err(|source| RuntimeError::Bus {
                operator: name,
                source,
            })?;
        info!(operator = name, "runtime stopped");
        Ok(())
    }

    fn bus_error(&self, source: BusError) -> RuntimeError {
        RuntimeError::Bus {
            operator: self.operator.name(),
            source,
        }
    }

    /// The poll loop, until `shutdown` turns true.
    async fn serve(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), RuntimeError> {
        let name = self.operator.name();
        // A dropped sender can no longer ask for a shutdown: stop watching it.
        let mut watching = true;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            if self
                .stall
                .as_ref()
                .is_some_and(|s| Instant::now() >= s.retry_at)
            {
                self.retry_stalled().await?;
            }
            if self.commit_retry_due() {
                self.commit_pending(None).await?;
            }
            let timeout = match &self.stall {
                Some(stall) => stall
                    .retry_at
                    .saturating_duration_since(Instant::now())
                    .min(self.config.poll_timeout),
                None => self.config.poll_timeout,
            };
            let event = tokio::select! {
                event = self.consumer.poll(timeout) => event,
                changed = shutdown.changed(), if watching => {
                    watching = changed.is_ok();
                    continue;
                }
            };
            match event.map_err(|e| self.bus_error(e))? {
                ConsumerEvent::Records(records) => {
                    if self.stall.is_some() {
                        self.hold_back(records)?;
                    } else {
                        self.process_records(records).await?;
                    }
                }
                ConsumerEvent::Assigned(partitions) => {
                    info!(operator = name, ?partitions, "partitions assigned");
                    for tp in &partitions {
                        // Reading starts at the committed offset, which is not known here.
                        self.next.remove(tp);
                        self.paused.remove(tp);
                    }
                    self.update_paused_gauge();
                }
                ConsumerEvent::Revoked(partitions) => self.revoke(&partitions).await?,
            }
            if self.stall.is_none()
                && self.operator.flush_due()
                && let Err(reason) = self.try_flush(None, false).await?
            {
                self.enter_stall(Pending::Flush, reason)?;
            }
        }
    }

    /// Hands `records` to the operator in order; stalls at the first retryable failure,
    /// holding back the rest.
    async fn process_records(&mut self, records: Vec<Record>) -> Result<(), RuntimeError> {
        let mut records = records.into_iter();
        while let Some(record) = records.next() {
            if let Some((pending, reason)) = self.try_process(record).await? {
                self.enter_stall(pending, reason)?;
                self.hold_back(records.collect())?;
                break;
            }
        }
        Ok(())
    }

    /// One attempt at handing `record` over (dead-lettering it if it cannot be decoded).
    async fn try_process(&mut self, record: Record) -> Result<Option<Retry>, RuntimeError> {
        match self.operator.process(&record).await {
            Ok(()) => {
                self.handed_over(&record);
                Ok(None)
            }
            Err(OperatorError::Decode(reason)) => self.try_dead_letter(record, reason).await,
            Err(OperatorError::Retryable(reason)) => {
                self.stats.process_errors.fetch_add(1, Relaxed);
                Ok(Some((Pending::Process(record), reason)))
            }
            Err(source) => Err(RuntimeError::Operator {
                operator: self.operator.name(),
                source,
            }),
        }
    }

    /// One attempt at dead-lettering `record`, then skipping it.
    async fn try_dead_letter(
        &mut self,
        record: Record,
        reason: String,
    ) -> Result<Option<Retry>, RuntimeError> {
        let name = self.operator.name();
        warn!(operator = name, topic = %record.topic, partition = record.partition, offset = record.offset, %reason, "dead-lettering record");
        match self.dead_letters.send(&record, &reason).await {
            Ok(()) => {
                self.stats.dead_lettered.fetch_add(1, Relaxed);
                self.operator.skip(&record.topic_partition(), record.offset);
                self.handed_over(&record);
                Ok(None)
            }
            Err(e) if e.is_retryable() => {
                self.stats.process_errors.fetch_add(1, Relaxed);
                let why = format!("dead-letter write failed: {e}");
                Ok(Some((Pending::DeadLetter(record, reason), why)))
            }
            Err(source) => Err(self.bus_error(source)),
        }
    }

    fn handed_over(&mut self, record: &Record) {
        self.stats.records.fetch_add(1, Relaxed);
        self.next
            .insert(record.topic_partition(), record.offset + 1);
    }

    /// Records not handed over while stalled: dropped, and re-fetched from the first of
    /// them (per partition) by `resume` after recovery. Their partitions are paused.
    fn hold_back(&mut self, records: Vec<Record>) -> Result<(), RuntimeError> {
        if records.is_empty() {
            return Ok(());
        }
        debug!(
            operator = self.operator.name(),
            records = records.len(),
            "stalled: dropping records, re-fetched after recovery"
        );
        for record in &records {
            // Records come in offset order per partition: the first one is where to resume.
            self.next
                .entry(record.topic_partition())
                .or_insert(record.offset);
        }
        self.pause_known()
    }

    /// Pauses every partition whose resume offset is known and that is not paused yet.
    fn pause_known(&mut self) -> Result<(), RuntimeError> {
        let todo: Vec<TopicPartition> = self
            .next
            .keys()
            .filter(|tp| !self.paused.contains(*tp))
            .cloned()
            .collect();
        for tp in todo {
            match self.consumer.pause(&tp) {
                Ok(()) => {
                    debug!(operator = self.operator.name(), partition = %tp, "paused");
                    self.paused.insert(tp);
                }
                // No longer ours: its revocation is on its way.
                Err(BusError::NotAssigned(_)) => {
                    self.next.remove(&tp);
                }
                Err(e) => return Err(self.bus_error(e)),
            }
        }
        self.update_paused_gauge();
        Ok(())
    }

    fn update_paused_gauge(&self) {
        self.stats
            .paused_partitions
            .store(self.paused.len() as u64, Relaxed);
    }

    /// Pauses consumption until `pending` succeeds.
    fn enter_stall(&mut self, pending: Pending, reason: String) -> Result<(), RuntimeError> {
        let mut backoff = Backoff::new(&self.config);
        let delay = backoff.step();
        warn!(
            operator = self.operator.name(),
            %reason,
            retry_in = ?delay,
            "next stage failing: pausing consumption and retrying (still serving the group)"
        );
        self.stats.stalls.fetch_add(1, Relaxed);
        if let Some(record) = pending.record() {
            self.next
                .entry(record.topic_partition())
                .or_insert(record.offset);
        }
        let now = Instant::now();
        self.stall = Some(Stall {
            pending,
            backoff,
            retry_at: now + delay,
            since: now,
        });
        self.pause_known()
    }

    /// Retries the stalled step; on success resumes consumption.
    async fn retry_stalled(&mut self) -> Result<(), RuntimeError> {
        let Some(mut stall) = self.stall.take() else {
            return Ok(());
        };
        let outcome = match stall.pending {
            Pending::Process(record) => self.try_process(record).await?,
            Pending::DeadLetter(record, reason) => self.try_dead_letter(record, reason).await?,
            Pending::Flush => self
                .try_flush(None, false)
                .await?
                .err()
                .map(|reason| (Pending::Flush, reason)),
        };
        let name = self.operator.name();
        match outcome {
            None => {
                info!(operator = name, stalled_for = ?stall.since.elapsed(), "next stage recovered: resuming consumption");
                self.resume_all()
            }
            Some((pending, reason)) => {
                let delay = stall.backoff.step();
                warn!(operator = name, %reason, retry_in = ?delay, stalled_for = ?stall.since.elapsed(), "still failing, consumption stays paused");
                stall.pending = pending;
                stall.retry_at = Instant::now() + delay;
                self.stall = Some(stall);
                Ok(())
            }
        }
    }

    /// Resumes every paused partition at the first offset not handed over.
    fn resume_all(&mut self) -> Result<(), RuntimeError> {
        for tp in std::mem::take(&mut self.paused) {
            let Some(&offset) = self.next.get(&tp) else {
                continue;
            };
            match self.consumer.resume(&tp, offset) {
                Ok(()) => {
                    debug!(operator = self.operator.name(), partition = %tp, offset, "resumed")
                }
                Err(BusError::NotAssigned(_)) => {
                    self.next.remove(&tp);
                }
                Err(e) => return Err(self.bus_error(e)),
            }
        }
        self.update_paused_gauge();
        Ok(())
    }

    /// Serves a revocation: one flush attempt for `partitions`, a synchronous commit of
    /// what is durable, then the operator forgets them.
    async fn revoke(&mut self, partitions: &[TopicPartition]) -> Result<(), RuntimeError> {
        let name = self.operator.name();
        info!(
            operator = name,
            ?partitions,
            "partitions revoked: flushing and committing"
        );
        let mut failed = None;
        match self.operator.flush(Some(partitions), true).await {
            Ok(offsets) => {
                self.stats.flushes.fetch_add(1, Relaxed);
                if !offsets.is_empty() {
                    crate::failpoint::hit("runtime.before_commit");
                }
                self.merge_uncommitted(offsets);
            }
            Err(e) if e.is_retryable() => {
                self.stats.flush_errors.fetch_add(1, Relaxed);
                self.stats
                    .released_uncommitted
                    .fetch_add(partitions.len() as u64, Relaxed);
                warn!(operator = name, error = %e, ?partitions, "could not flush revoked partitions: releasing them without committing their buffered output; the new owner replays it from the last commit");
                failed = Some(e.to_string());
            }
            Err(source) => {
                return Err(RuntimeError::Operator {
                    operator: name,
                    source,
                });
            }
        }
        // Committable only until the next poll: one attempt now.
        self.commit_pending(Some(partitions)).await?;
        for tp in partitions {
            if let Some(offset) = self.uncommitted.remove(tp) {
                warn!(operator = name, partition = %tp, offset, "commit of a revoked partition failed: its new owner replays from the previous commit");
            }
            self.next.remove(tp);
            self.paused.remove(tp);
        }
        self.update_paused_gauge();
        self.operator.release(partitions);
        if let Some(stall) = &mut self.stall
            && stall
                .pending
                .record()
                .is_some_and(|r| partitions.contains(&r.topic_partition()))
        {
            // The failed record now belongs to another member; keep checking the next stage.
            stall.pending = Pending::Flush;
        }
        if let Some(reason) = failed
            && self.stall.is_none()
        {
            self.enter_stall(Pending::Flush, reason)?;
        }
        Ok(())
    }

    /// One flush attempt; on success commits what became durable. `Err(reason)` when it
    /// failed retryably.
    async fn try_flush(
        &mut self,
        partitions: Option<&[TopicPartition]>,
        all: bool,
    ) -> Result<Result<(), String>, RuntimeError> {
        match self.operator.flush(partitions, all).await {
            Ok(offsets) => {
                self.stats.flushes.fetch_add(1, Relaxed);
                if !offsets.is_empty() {
                    crate::failpoint::hit("runtime.before_commit");
                }
                self.merge_uncommitted(offsets);
                self.commit_pending(None).await?;
                Ok(Ok(()))
            }
            Err(e) if e.is_retryable() => {
                self.stats.flush_errors.fetch_add(1, Relaxed);
                Ok(Err(e.to_string()))
            }
            Err(source) => Err(RuntimeError::Operator {
                operator: self.operator.name(),
                source,
            }),
        }
    }

    fn merge_uncommitted(&mut self, offsets: Vec<(TopicPartition, Offset)>) {
        for (tp, offset) in offsets {
            let entry = self.uncommitted.entry(tp).or_insert(offset);
            *entry = (*entry).max(offset);
        }
    }

    fn commit_retry_due(&self) -> bool {
        !self.uncommitted.is_empty() && self.commit_retry_at.is_some_and(|t| Instant::now() >= t)
    }

    /// Commits the uncommitted offsets (of `only`, if given). Offsets of partitions no
    /// longer owned are dropped; a retryable failure keeps them for a later attempt.
    async fn commit_pending(
        &mut self,
        only: Option<&[TopicPartition]>,
    ) -> Result<(), RuntimeError> {
        let name = self.operator.name();
        if self.uncommitted.is_empty() {
            return Ok(());
        }
        let assigned: BTreeSet<TopicPartition> = self.consumer.assignment().into_iter().collect();
        self.uncommitted.retain(|tp, offset| {
            let owned = assigned.contains(tp);
            if !owned {
                warn!(operator = name, partition = %tp, offset = *offset, "dropping stale commit for a partition no longer owned");
            }
            owned
        });
        loop {
            let offsets: Vec<(TopicPartition, Offset)> = self
                .uncommitted
                .iter()
                .filter(|(tp, _)| only.is_none_or(|only| only.contains(tp)))
                .map(|(tp, &o)| (tp.clone(), o))
                .collect();
            if offsets.is_empty() {
                return Ok(());
            }
            debug!(operator = name, ?offsets, "committing");
            match self.consumer.commit(&offsets).await {
                Ok(()) => {
                    self.stats.commits.fetch_add(1, Relaxed);
                    for (tp, offset) in &offsets {
                        if self.uncommitted.get(tp) == Some(offset) {
                            self.uncommitted.remove(tp);
                        }
                    }
                    if self.uncommitted.is_empty() {
                        self.commit_retry_at = None;
                        self.commit_backoff = Backoff::new(&self.config);
                    }
                    return Ok(());
                }
                // The partition moved to another member meanwhile: its new owner replays
                // from the last commit and rewrites the same objects, so the stale commit
                // is dropped (and the others tried again).
                Err(BusError::NotAssigned(tp)) => {
                    warn!(operator = name, partition = %tp, "dropping stale commit for a partition no longer owned");
                    if self.uncommitted.remove(&tp).is_none() {
                        return Err(self.bus_error(BusError::NotAssigned(tp)));
                    }
                }
                Err(e) if e.is_retryable() => {
                    self.stats.commit_errors.fetch_add(1, Relaxed);
                    let delay = self.commit_backoff.step();
                    warn!(operator = name, error = %e, retry_in = ?delay, "offset commit failed, retrying later");
                    self.commit_retry_at = Some(Instant::now() + delay);
                    return Ok(());
                }
                Err(source) => return Err(self.bus_error(source)),
            }
        }
    }

    /// Final flush and commit, retried with backoff for at most `drain_timeout`.
    async fn drain(&mut self) -> Result<(), RuntimeError> {
        let name = self.operator.name();
        info!(operator = name, "draining: flushing buffered output");
        if let Some(stall) = self.stall.take()
            && let Some(record) = stall.pending.record()
        {
            info!(operator = name, partition = %record.topic_partition(), offset = record.offset, "not retrying a failed record on shutdown: it is redelivered after restart");
        }
        let deadline = Instant::now() + self.config.drain_timeout;
        let mut backoff = Backoff::new(&self.config);
        loop {
            match self.try_flush(None, true).await? {
                Ok(()) => break,
                Err(reason) => {
                    let delay = backoff.step();
                    if Instant::now() + delay > deadline {
                        warn!(operator = name, %reason, drain_timeout = ?self.config.drain_timeout, handed_over = ?self.next, "final flush keeps failing: giving up, leaving the group without committing; records after each partition's last commit are redelivered to the next owner");
                        self.stats
                            .released_uncommitted
                            .fetch_add(self.next.len() as u64, Relaxed);
                        break;
                    }
                    warn!(operator = name, %reason, retry_in = ?delay, "final flush failed, retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        while !self.uncommitted.is_empty() {
            let wait = self.commit_retry_at.map_or(Duration::ZERO, |t| {
                t.saturating_duration_since(Instant::now())
            });
            if Instant::now() + wait > deadline {
                warn!(operator = name, uncommitted = ?self.uncommitted, "final commit keeps failing: giving up; these partitions are replayed from their previous commit");
                break;
            }
            tokio::time::sleep(wait).await;
            self.commit_pending(None).await?;
        }
        Ok(())
    }
}

/// Exponential backoff between retries.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(config: &RuntimeConfig) -> Self {
        Self {
            next: config.min_backoff,
            max: config.max_backoff,
        }
    }

    /// The pause before the next retry; the one after is twice as long (up to the max).
    fn step(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

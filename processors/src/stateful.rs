//! The shell every analytic operator (signals, drift, …) runs in: per log partition a
//! piece of [`PartitionLogic`] whose state is checkpointed with the offsets it covers, and
//! whose output — rows of one archive table and findings — is written idempotently.
//!
//! ## The flush protocol (per partition)
//!
//! 1. The logic proposes a *watermark* (its event-time clock) and closes what it covers,
//!    giving rows and findings. This is deterministic given the state, the records since
//!    the last checkpoint and the watermark.
//! 2. If there is output, the flush is first recorded as *pending* (`{seq, last offset,
//!    watermark}`) next to the checkpoint, then the rows are written as one object per
//!    (tenant, date, hour) named `{topic}-{partition}-{seq}.parquet` and the findings
//!    are appended to `findings.v1` (ids derived from their content).
//! 3. The new state is checkpointed with the next offset and `seq + 1`, and only then is
//!    that offset reported for commit. Logic whose snapshot leaves out its open windows
//!    ([`PartitionLogic::replay_from`]) is checkpointed with the offset of the first
//!    record of those windows instead: a restart replays them from the log.
//!
//! After a crash the partition restarts from its checkpoint: records below the
//! checkpoint's offset are skipped (they are in the state — a committed offset may lag
//! the checkpoint), and a pending flush is *replayed*: the partition flushes exactly
//! when it reaches the recorded last offset, with the recorded watermark, so it writes
//! the same objects under the same names (overwriting, never doubling) and emits
//! findings with the same ids. A restart or rebalance therefore neither loses nor
//! double-counts a window.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use mcpulse_bus::{Message, Offset, Producer, Record, TopicPartition};
use mcpulse_schemas::Finding;
use mcpulse_schemas::Table;
use mcpulse_schemas::topics::{HEADER_CONTENT_TYPE, HEADER_TENANT, valid_tenant_id};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::archive::maintenance::{DeletionRequest, DeletionWatch};
use crate::archive::{ArchiveConfig, ArchiveTarget, PartitionKey, TableWriter};
use crate::forget::Forget;
use crate::operator::{Operator, OperatorError};
use crate::stats::RuntimeStats;

/// What one close produced.
#[derive(Default)]
pub struct Closed {
    /// Rows of the operator's table, per hive partition.
    pub rows: Vec<(PartitionKey, arrow::array::RecordBatch)>,
    /// Findings, in emission order.
    pub findings: Vec<Finding>,
    /// Other messages, in emission order, each for one of the outputs.
    pub messages: Vec<(OutTopic, Message)>,
}

impl Closed {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.findings.is_empty() && self.messages.is_empty()
    }
}

/// The topics an analytic operator writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutTopic {
    Findings,
    Alerts,
}

/// The per-partition logic of an analytic operator.
pub trait PartitionLogic: Send + Sync + 'static {
    /// The checkpointed state.
    type State: Serialize + DeserializeOwned + Send + Sync;
    /// What every partition's logic shares (configuration, metrics).
    type Context: Send + Sync;

    /// Rebuilds the logic of `tp` from a checkpoint (`None`: a fresh partition).
    fn restore(context: &Self::Context, tp: &TopicPartition, state: Option<Self::State>) -> Self;

    /// The state to checkpoint.
    fn snapshot(&self) -> Self::State;

    /// The first offset whose record the snapshot does not cover, when that is before
    /// the next record: logic that leaves open windows out of its snapshot (and rebuilds
    /// them by replaying their records from the log after a restart) returns the offset
    /// of the first record in them. The checkpoint, and so the committed offset, stops
    /// there. `None` (the default): the snapshot covers every record processed.
    fn replay_from(&self) -> Option<Offset> {
        None
    }

    /// Takes one record of `tenant`. An error means the record cannot be used (it is
    /// counted and skipped: the archivers own dead-lettering).
    fn process(&mut self, tenant: &str, record: &Record) -> Result<(), String>;

    /// The watermark (ns since the epoch) the next close may use: a function of what was
    /// seen and, for idle partitions, of the wall clock.
    fn watermark(&self) -> i64;

    /// Closes everything the watermark covers (deterministic given state and watermark).
    fn close(&mut self, watermark_ns: i64) -> Result<Closed, OperatorError>;

    /// Drops what the logic holds about a tenant (or one of its servers): `mcpulse admin
    /// delete`. Called right after a close, so nothing is waiting to be emitted. The
    /// default rebuilds the logic from its snapshot with the tenant's parts removed (see
    /// [`Forget`]), as a restart from a checkpoint would; logic whose snapshot leaves
    /// something out ([`PartitionLogic::replay_from`]) must do it in place.
    fn forget(
        &mut self,
        context: &Self::Context,
        tp: &TopicPartition,
        forget: &Forget,
    ) -> Result<(), String>
    where
        Self: Sized,
    {
        let mut state = serde_json::to_value(self.snapshot()).map_err(|e| e.to_string())?;
        if forget.scrub(&mut state) {
            let state: Self::State = serde_json::from_value(state)
                .map_err(|e| format!("state without {forget:?} does not load: {e}"))?;
            *self = Self::restore(context, tp, Some(state));
        }
        Ok(())
    }
}

/// A flush whose output is being written (recorded before the first object).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingFlush {
    pub seq: u64,
    /// The last offset the flush covers.
    pub last_offset: Offset,
    pub watermark_ns: i64,
}

/// A checkpoint of one partition.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint<S> {
    /// Sequence number of the next flush with output.
    seq: u64,
    /// The offset after the last record the state covers.
    next_offset: Offset,
    state: S,
    /// Deletion requests (`mcpulse admin delete`) already applied to `state`.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    forgotten: BTreeSet<String>,
}

/// Removes the target of `forget` from a stored checkpoint of logic whose state is `S`
/// (`mcpulse admin delete`, when the operator may not be running), and records `id` as
/// applied. `Ok(None)`: nothing to change. Fails if the state without those parts does
/// not load as `S`.
pub fn forget_in_checkpoint<S: Serialize + DeserializeOwned>(
    stored: &[u8],
    forget: &Forget,
    id: &str,
) -> Result<Option<Vec<u8>>, String> {
    let mut checkpoint: Checkpoint<serde_json::Value> =
        serde_json::from_slice(stored).map_err(|e| format!("not a checkpoint: {e}"))?;
    let changed = forget.scrub(&mut checkpoint.state);
    let recorded = checkpoint.forgotten.insert(id.to_string());
    if !changed && !recorded {
        return Ok(None);
    }
    serde_json::from_value::<S>(checkpoint.state.clone())
        .map_err(|e| format!("the state without {forget:?} does not load: {e}"))?;
    serde_json::to_vec(&checkpoint)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Reads and writes checkpoints and pending flushes under `{root}/_state/{operator}/`.
#[derive(Clone)]
pub struct CheckpointStore {
    target: ArchiveTarget,
    operator: &'static str,
}

impl CheckpointStore {
    pub fn new(target: ArchiveTarget, operator: &'static str) -> Self {
        Self { target, operator }
    }

    fn path(&self, tp: &TopicPartition, what: &str) -> Path {
        self.target
            .root
            .clone()
            .join("_state")
            .join(self.operator)
            .join(tp.topic.as_str())
            .join(format!("{}.{what}.json", tp.partition).as_str())
    }

    async fn get<T: DeserializeOwned>(
        &self,
        tp: &TopicPartition,
        what: &str,
    ) -> Result<Option<T>, OperatorError> {
        let path = self.path(tp, what);
        match self.target.store.get(&path).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(retryable)?;
                serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                    OperatorError::Fatal(format!(
                        "corrupt {what} of {} for {tp}: {e}",
                        self.operator
                    ))
                })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(retryable(e)),
        }
    }

    async fn put<T: Serialize>(
        &self,
        tp: &TopicPartition,
        what: &str,
        value: &T,
    ) -> Result<(), OperatorError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| OperatorError::Fatal(format!("serializing {what}: {e}")))?;
        self.target
            .put_durable(&self.path(tp, what), Bytes::from(body))
            .await
    }

    /// Removes the pending record of `tp` (after its checkpoint covers it).
    async fn clear_pending(&self, tp: &TopicPartition) -> Result<(), OperatorError> {
        match self.target.store.delete(&self.path(tp, "pending")).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(retryable(e)),
        }
    }
}

fn retryable(e: impl std::fmt::Display) -> OperatorError {
    OperatorError::Retryable(e.to_string())
}

/// Settings of the shell.
#[derive(Clone, Debug)]
pub struct StatefulConfig {
    /// Least time between two flushes of a partition.
    pub flush_interval: Duration,
    /// Header naming a record's tenant, and the tenant of records without it.
    pub tenant_header: String,
    pub default_tenant: Option<String>,
}

impl StatefulConfig {
    pub fn from_archive(config: &ArchiveConfig) -> Self {
        Self {
            flush_interval: config.flush_interval,
            tenant_header: config.tenant_header.clone(),
            default_tenant: config.default_tenant.clone(),
        }
    }
}

/// Where findings (and alerts) go.
#[derive(Clone)]
pub struct FindingsOutput {
    pub producer: Arc<dyn Producer>,
    /// `findings.v1`.
    pub topic: String,
    /// `alerts.v1`.
    pub alerts_topic: String,
}

impl FindingsOutput {
    /// Appends `messages` durably, in order, per topic.
    pub async fn send_messages(
        &self,
        messages: &[(OutTopic, Message)],
    ) -> Result<(), OperatorError> {
        for (which, topic) in [
            (OutTopic::Findings, &self.topic),
            (OutTopic::Alerts, &self.alerts_topic),
        ] {
            let batch: Vec<Message> = messages
                .iter()
                .filter(|(t, _)| *t == which)
                .map(|(_, m)| m.clone())
                .collect();
            if batch.is_empty() {
                continue;
            }
            self.producer.send(topic, batch).await.map_err(|e| {
                if e.is_retryable() {
                    OperatorError::Retryable(format!("appending to {topic}: {e}"))
                } else {
                    OperatorError::Fatal(format!("appending to {topic}: {e}"))
                }
            })?;
        }
        Ok(())
    }

    /// Appends `findings` durably, one message each, keyed by correlation key.
    pub async fn send(&self, findings: &[Finding]) -> Result<(), OperatorError> {
        if findings.is_empty() {
            return Ok(());
        }
        let messages = findings
            .iter()
            .map(|f| {
                let value = serde_json::to_vec(f).expect("findings serialize");
                Message::new(Some(Bytes::from(f.correlation_key())), value)
                    .with_header(HEADER_TENANT, Bytes::from(f.tenant.clone()))
                    .with_header(HEADER_CONTENT_TYPE, Bytes::from_static(b"application/json"))
            })
            .collect();
        self.producer
            .send(&self.topic, messages)
            .await
            .map(|_| ())
            .map_err(|e| {
                if e.is_retryable() {
                    OperatorError::Retryable(format!("appending findings: {e}"))
                } else {
                    OperatorError::Fatal(format!("appending findings: {e}"))
                }
            })
    }
}

struct PartState<L> {
    logic: L,
    seq: u64,
    /// The offset after the last record taken into the state.
    next_offset: Offset,
    /// The offset the last checkpoint covers.
    checkpointed: Offset,
    /// A flush to replay exactly (recovered after a crash).
    forced: Option<PendingFlush>,
    last_flush: Instant,
    reported: Option<Offset>,
    /// Output closed but not yet (completely) written.
    unwritten: Option<Unwritten>,
    /// Deletion requests applied to the state (checkpointed with it).
    forgotten: BTreeSet<String>,
    /// Deletion requests to apply at the next flush.
    to_forget: Vec<DeletionRequest>,
}

struct Unwritten {
    pending: PendingFlush,
    /// Whether the pending record is stored.
    recorded: bool,
    closed: Closed,
}

/// An analytic operator: [`PartitionLogic`] per partition, checkpointed and written by
/// the protocol of the module docs.
pub struct StatefulOperator<L: PartitionLogic> {
    name: &'static str,
    writer: TableWriter,
    checkpoints: CheckpointStore,
    findings: FindingsOutput,
    config: StatefulConfig,
    partitions: HashMap<TopicPartition, PartState<L>>,
    context: L::Context,
    stats: Arc<RuntimeStats>,
    /// Deletion requests to apply to the state (`mcpulse admin delete`).
    deletions: Option<DeletionWatch>,
}

impl<L: PartitionLogic> StatefulOperator<L> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &'static str,
        context: L::Context,
        table: Table,
        target: ArchiveTarget,
        archive: ArchiveConfig,
        findings: FindingsOutput,
        stats: Arc<RuntimeStats>,
    ) -> Self {
        Self {
            name,
            writer: TableWriter::new(table, archive.clone(), target.clone(), stats.clone()),
            checkpoints: CheckpointStore::new(target, name),
            findings,
            config: StatefulConfig::from_archive(&archive),
            partitions: HashMap::new(),
            context,
            stats,
            deletions: None,
        }
    }

    /// Applies the deletion requests of `mcpulse admin delete` (looked for every
    /// `poll`): the state of the tenant (or server) is dropped at the next flush of each
    /// partition, and from checkpoints written before the request when they load.
    pub fn with_deletions(mut self, poll: Duration) -> Self {
        self.deletions = Some(DeletionWatch::new(self.writer.target().clone(), poll));
        self
    }

    /// Looks for new deletion requests (if due) and queues them on every partition. A
    /// failure to look is logged and tried again later: it must not stop the stream.
    async fn watch_deletions(&mut self) {
        let Some(watch) = &mut self.deletions else {
            return;
        };
        if !watch.due() {
            return;
        }
        match watch.refresh().await {
            Ok(new) => {
                for request in new {
                    for part in self.partitions.values_mut() {
                        if !part.forgotten.contains(&request.id) {
                            part.to_forget.push(request.clone());
                        }
                    }
                }
            }
            Err(e) => {
                warn!(operator = self.name, error = %e, "cannot read deletion requests; trying again later")
            }
        }
    }

    /// Overrides the flush interval (tests, benchmarks).
    pub fn with_flush_interval(mut self, interval: Duration) -> Self {
        self.config.flush_interval = interval;
        self
    }

    /// The logic of `tp`, if the partition is loaded (tests, metrics).
    pub fn logic(&self, tp: &TopicPartition) -> Option<&L> {
        self.partitions.get(tp).map(|p| &p.logic)
    }

    /// All loaded partitions' logic.
    pub fn logics(&self) -> impl Iterator<Item = (&TopicPartition, &L)> {
        self.partitions.iter().map(|(tp, p)| (tp, &p.logic))
    }

    async fn load(&mut self, tp: &TopicPartition) -> Result<(), OperatorError> {
        if self.partitions.contains_key(tp) {
            return Ok(());
        }
        let checkpoint: Option<Checkpoint<L::State>> =
            self.checkpoints.get(tp, "checkpoint").await?;
        let pending: Option<PendingFlush> = self.checkpoints.get(tp, "pending").await?;
        let (seq, next_offset, state, forgotten) = match checkpoint {
            Some(c) => (c.seq, c.next_offset, Some(c.state), c.forgotten),
            None => (0, 0, None, BTreeSet::new()),
        };
        self.watch_deletions().await;
        let to_forget: Vec<DeletionRequest> = self
            .deletions
            .as_ref()
            .map(|w| {
                w.known()
                    .filter(|r| !forgotten.contains(&r.id))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        // A pending record older than the checkpoint was covered by it.
        let forced = pending.filter(|p| p.seq == seq && p.last_offset >= next_offset);
        if let Some(p) = &forced {
            warn!(operator = self.name, %tp, seq = p.seq, last_offset = p.last_offset,
                "replaying an unfinished flush");
        }
        debug!(operator = self.name, %tp, seq, next_offset, "partition state loaded");
        self.partitions.insert(
            tp.clone(),
            PartState {
                logic: L::restore(&self.context, tp, state),
                seq,
                next_offset,
                checkpointed: next_offset,
                forced,
                last_flush: Instant::now(),
                reported: None,
                unwritten: None,
                forgotten,
                to_forget,
            },
        );
        Ok(())
    }

    fn tenant<'a>(&'a self, record: &'a Record) -> Result<&'a str, String> {
        let header = self.config.tenant_header.as_str();
        match record.header(header) {
            Some(value) => std::str::from_utf8(value)
                .ok()
                .filter(|t| valid_tenant_id(t))
                .ok_or_else(|| format!("{header} header is not a valid tenant id")),
            None => self
                .config
                .default_tenant
                .as_deref()
                .ok_or_else(|| format!("missing {header} header")),
        }
    }

    /// Whether `tp` may flush now (a replayed flush only at its recorded offset).
    fn ready(&self, part: &PartState<L>, all: bool) -> bool {
        if part.unwritten.is_some() {
            return true;
        }
        if !part.to_forget.is_empty() && part.forced.is_none() {
            return true;
        }
        match part.forced {
            Some(p) => part.next_offset > p.last_offset,
            None => all || part.last_flush.elapsed() >= self.config.flush_interval,
        }
    }

    async fn flush_one(&mut self, tp: &TopicPartition) -> Result<(), OperatorError> {
        let part = self.partitions.get_mut(tp).expect("loaded");
        if part.unwritten.is_none() {
            let (watermark, recorded) = match part.forced {
                Some(p) => (p.watermark_ns, true),
                None => (part.logic.watermark(), false),
            };
            // Closing changes the state: keep the output until it is written, so a failed
            // write is retried with the same output rather than lost.
            let closed = part.logic.close(watermark)?;
            if !closed.is_empty() {
                part.unwritten = Some(Unwritten {
                    pending: PendingFlush {
                        seq: part.seq,
                        last_offset: part.next_offset.saturating_sub(1),
                        watermark_ns: watermark,
                    },
                    recorded,
                    closed,
                });
            }
        }
        if let Some(unwritten) = self.partitions[tp].unwritten.as_ref() {
            if !unwritten.recorded {
                self.checkpoints
                    .put(tp, "pending", &unwritten.pending)
                    .await?;
                let part = self.partitions.get_mut(tp).expect("loaded");
                part.unwritten.as_mut().expect("present").recorded = true;
            }
            let unwritten = self.partitions[tp].unwritten.as_ref().expect("present");
            self.write(tp, unwritten.pending.seq, &unwritten.closed)
                .await?;
            crate::failpoint::hit("stateful.after_output");
        }
        let part = self.partitions.get_mut(tp).expect("loaded");
        // Deletion requests apply right after the close: nothing of the tenant is
        // waiting to be emitted, and the checkpoint below no longer holds its state.
        let forgot = !part.to_forget.is_empty() && part.forced.is_none();
        if forgot {
            for request in std::mem::take(&mut part.to_forget) {
                part.logic
                    .forget(&self.context, tp, &request.forget())
                    .map_err(|e| {
                        OperatorError::Fatal(format!("{}: deletion {}: {e}", self.name, request.id))
                    })?;
                debug!(operator = self.name, %tp, request = %request.id, "state of a deleted tenant or server dropped");
                part.forgotten.insert(request.id);
            }
        }
        if let Some(watch) = &self.deletions {
            // Requests no longer stored need not be remembered.
            let known: BTreeSet<&str> = watch.known().map(|r| r.id.as_str()).collect();
            part.forgotten.retain(|id| known.contains(id.as_str()));
        }
        let wrote = part.unwritten.is_some();
        let next_offset = match part.logic.replay_from() {
            Some(first) => first.min(part.next_offset),
            None => part.next_offset,
        };
        let new_seq = if wrote { part.seq + 1 } else { part.seq };
        if wrote || forgot || part.checkpointed != next_offset {
            let checkpoint = Checkpoint {
                seq: new_seq,
                next_offset,
                state: part.logic.snapshot(),
                forgotten: part.forgotten.clone(),
            };
            self.checkpoints.put(tp, "checkpoint", &checkpoint).await?;
            if wrote {
                self.checkpoints.clear_pending(tp).await?;
            }
        }
        let part = self.partitions.get_mut(tp).expect("loaded");
        part.seq = new_seq;
        part.checkpointed = next_offset;
        part.forced = None;
        part.unwritten = None;
        part.last_flush = Instant::now();
        Ok(())
    }

    async fn write(
        &self,
        tp: &TopicPartition,
        seq: u64,
        closed: &Closed,
    ) -> Result<(), OperatorError> {
        let name = format!("{}-{}-{:020}.parquet", tp.topic, tp.partition, seq);
        self.writer.write(&name, &closed.rows).await?;
        self.findings.send(&closed.findings).await?;
        self.findings.send_messages(&closed.messages).await
    }
}

#[async_trait]
impl<L: PartitionLogic> Operator for StatefulOperator<L> {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn process(&mut self, record: &Record) -> Result<(), OperatorError> {
        let tp = record.topic_partition();
        self.load(&tp).await?;
        let part = &self.partitions[&tp];
        if record.offset < part.next_offset {
            // Already in the checkpointed state (the committed offset lags it).
            return Ok(());
        }
        if let Some(p) = part.forced
            && record.offset > p.last_offset
            && part.next_offset <= p.last_offset
        {
            // Cannot happen with an ordered log; refuse rather than diverge.
            return Err(OperatorError::Fatal(format!(
                "{tp}: offset {} skips past the replayed flush ending at {}",
                record.offset, p.last_offset
            )));
        }
        let tenant = self.tenant(record).map(str::to_string);
        let part = self.partitions.get_mut(&tp).expect("loaded");
        match tenant.and_then(|t| part.logic.process(&t, record)) {
            Ok(()) => {}
            Err(e) => {
                self.stats.skipped_records.fetch_add(1, Relaxed);
                debug!(operator = self.name, %tp, offset = record.offset, error = %e, "record skipped");
            }
        }
        part.next_offset = record.offset + 1;
        Ok(())
    }

    fn skip(&mut self, tp: &TopicPartition, offset: Offset) {
        if let Some(part) = self.partitions.get_mut(tp) {
            part.next_offset = part.next_offset.max(offset + 1);
        }
    }

    fn flush_due(&self) -> bool {
        // Time alone is a reason: an idle partition's watermark moves with the clock.
        self.partitions.values().any(|p| self.ready(p, false))
    }

    async fn flush(
        &mut self,
        partitions: Option<&[TopicPartition]>,
        all: bool,
    ) -> Result<Vec<(TopicPartition, Offset)>, OperatorError> {
        let mut tps: Vec<TopicPartition> = match partitions {
            Some(p) => p
                .iter()
                .filter(|tp| self.partitions.contains_key(tp))
                .cloned()
                .collect(),
            None => self.partitions.keys().cloned().collect(),
        };
        tps.sort();
        self.watch_deletions().await;
        let mut commits = Vec::new();
        for tp in tps {
            if self.ready(&self.partitions[&tp], all) {
                self.flush_one(&tp).await?;
            }
            let part = self.partitions.get_mut(&tp).expect("listed");
            let durable = part.checkpointed;
            if part.reported != Some(durable) && durable > 0 {
                part.reported = Some(durable);
                commits.push((tp, durable));
            }
        }
        Ok(commits)
    }

    fn release(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.partitions.remove(tp);
        }
    }
}

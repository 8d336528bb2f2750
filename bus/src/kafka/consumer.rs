//! A group member on librdkafka, with the trait's rebalance handshake.
//!
//! librdkafka runs rebalance callbacks inside `poll`, and partitions revoked there belong
//! to another member as soon as the callback returns. The [`Consumer`] trait instead hands
//! a revocation to its caller (`poll` returns [`ConsumerEvent::Revoked`]) and lets it
//! flush and commit before its *next* `poll`. To bridge the two, one driver thread owns the
//! librdkafka consumer and serves commands from the handle. When a revocation arrives, the
//! callback answers the pending `poll` with `Revoked`, then keeps serving commits (made on
//! the consumer, still a member of the current generation) until the caller polls again;
//! only then does it return and let librdkafka give the partitions away.
//!
//! Records are fetched only on request (no read-ahead beyond librdkafka's own queue), so a
//! paused or revoked partition never has records buffered on this side.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::{ClientContext, Offset as KafkaOffset, TopicPartitionList};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::context::{Diagnostics, log_line};
use super::errors::{bus_error, commit_error};
use crate::{BusError, Consumer, ConsumerEvent, Header, Offset, Record, TopicPartition};

/// Most records one `poll` returns.
const MAX_BATCH_RECORDS: usize = 1024;
/// Most payload bytes one `poll` returns (a batch always holds at least one record).
const MAX_BATCH_BYTES: usize = 16 << 20;

/// How long a commit refused with REBALANCE_IN_PROGRESS is retried (100 ms apart). A
/// broker refuses commits while the group syncs; librdkafka's mock cluster refuses them
/// for its whole join phase (up to the session timeout), and when that phase ends with
/// a new generation the commit fails with ILLEGAL_GENERATION, which is not retried here.
const COMMIT_REBALANCE_WAIT: Duration = Duration::from_secs(10);

type Reply<T> = oneshot::Sender<Result<T, BusError>>;

enum Command {
    Poll(Duration, Reply<ConsumerEvent>),
    Commit(Vec<(TopicPartition, Offset)>, Reply<()>),
    Pause(TopicPartition),
    Resume(TopicPartition, Offset),
    Close(Reply<()>),
}

/// State the driver loop and the rebalance callback share (both run on the driver thread).
#[derive(Default)]
struct DriverState {
    /// The `poll` being answered.
    reply: Option<Reply<ConsumerEvent>>,
    /// Records gathered for it.
    batch: Vec<Record>,
    batch_bytes: usize,
    /// Partitions assigned since the last answer.
    assigned: Vec<TopicPartition>,
    owned: BTreeSet<TopicPartition>,
    paused: BTreeSet<TopicPartition>,
    /// After `resume(tp, offset)`: records of `tp` below `offset` are stale.
    floor: HashMap<TopicPartition, Offset>,
    /// Set once the handle is closed or dropped: callbacks no longer wait for it.
    closing: bool,
    close_reply: Option<Reply<()>>,
}

/// The librdkafka context of a group member.
pub(crate) struct MemberCtx {
    diagnostics: Arc<Diagnostics>,
    request_timeout: Duration,
    commands: Mutex<mpsc::Receiver<Command>>,
    state: Mutex<DriverState>,
}

impl ClientContext for MemberCtx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        log_line(&self.diagnostics, level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        warn!(target: "librdkafka", %error, reason, "kafka consumer error");
    }
}

impl ConsumerContext for MemberCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let revoked = partitions_of(tpl);
        let lost = consumer.assignment_lost();
        info!(partitions = ?revoked, lost, "kafka partitions revoked");
        let mut events = Vec::new();
        {
            let mut state = self.state.lock();
            for tp in &revoked {
                state.owned.remove(tp);
                state.paused.remove(tp);
                state.floor.remove(tp);
            }
            if state.closing || revoked.is_empty() {
                return;
            }
            // What was gathered before the revocation is answered first, in order.
            if !state.assigned.is_empty() {
                events.push(ConsumerEvent::Assigned(std::mem::take(&mut state.assigned)));
            }
            let batch = std::mem::take(&mut state.batch);
            state.batch_bytes = 0;
            let batch: Vec<Record> = batch
                .into_iter()
                .filter(|r| {
                    !revoked
                        .iter()
                        .any(|tp| tp.topic == r.topic && tp.partition == r.partition)
                })
                .collect();
            if !batch.is_empty() {
                events.push(ConsumerEvent::Records(batch));
            }
        }
        events.push(ConsumerEvent::Revoked(revoked));
        for event in events {
            let reply = self.state.lock().reply.take();
            let reply = match reply {
                Some(reply) => reply,
                None => match self.serve_until_poll(consumer) {
                    Some(reply) => reply,
                    None => return,
                },
            };
            let _ = reply.send(Ok(event));
        }
        // The caller commits what it finished for the revoked partitions, then polls:
        // only then may they go.
        if let Some(reply) = self.serve_until_poll(consumer) {
            self.state.lock().reply = Some(reply);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned = partitions_of(tpl);
                if assigned.is_empty() {
                    return;
                }
                info!(partitions = ?assigned, "kafka partitions assigned");
                let mut state = self.state.lock();
                state.owned.extend(assigned.iter().cloned());
                state.assigned.extend(assigned);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "kafka rebalance error"),
        }
    }
}

impl MemberCtx {
    /// Serves commits, pauses and resumes until the handle polls (returning that poll's
    /// reply) or goes away (`None`).
    fn serve_until_poll(&self, consumer: &BaseConsumer<Self>) -> Option<Reply<ConsumerEvent>> {
        loop {
            let command = self.commands.lock().recv();
            match command {
                Ok(Command::Poll(_, reply)) => return Some(reply),
                Ok(Command::Close(reply)) => {
                    let mut state = self.state.lock();
                    state.closing = true;
                    state.close_reply = Some(reply);
                    return None;
                }
                Ok(other) => self.serve(consumer, other),
                Err(_) => {
                    self.state.lock().closing = true;
                    return None;
                }
            }
        }
    }

    /// Serves a command other than `Poll` and `Close`.
    fn serve(&self, consumer: &BaseConsumer<Self>, command: Command) {
        match command {
            Command::Commit(offsets, reply) => {
                let _ = reply.send(commit(consumer, &offsets));
            }
            Command::Pause(tp) => {
                let tpl = single(&tp);
                if let Err(e) = consumer.pause(&tpl) {
                    warn!(partition = %tp, error = %e, "pausing failed");
                }
                let mut state = self.state.lock();
                state
                    .batch
                    .retain(|r| r.topic != tp.topic || r.partition != tp.partition);
                state.paused.insert(tp);
            }
            Command::Resume(tp, offset) => {
                let mut state = self.state.lock();
                if !state.owned.contains(&tp) {
                    return;
                }
                state.paused.remove(&tp);
                state.floor.insert(tp.clone(), offset);
                drop(state);
                let tpl = single(&tp);
                if let Err(e) = consumer.resume(&tpl) {
                    warn!(partition = %tp, error = %e, "resuming failed");
                }
                if let Err(e) = consumer.seek(
                    &tp.topic,
                    tp.partition as i32,
                    KafkaOffset::Offset(offset as i64),
                    self.request_timeout,
                ) {
                    warn!(partition = %tp, offset, error = %e, "seeking failed");
                }
            }
            Command::Poll(..) | Command::Close(_) => unreachable!("handled by the caller"),
        }
    }

    /// Gathers records for the pending poll until `timeout`, a full batch, or an event.
    fn gather(&self, consumer: &BaseConsumer<Self>, timeout: Duration) {
        let started = Instant::now();
        let mut wait = timeout;
        loop {
            {
                let state = self.state.lock();
                if state.closing || state.reply.is_none() {
                    return;
                }
                if !state.assigned.is_empty()
                    || state.batch.len() >= MAX_BATCH_RECORDS
                    || state.batch_bytes >= MAX_BATCH_BYTES
                {
                    return;
                }
                if !state.batch.is_empty() {
                    wait = Duration::ZERO;
                }
            }
            match consumer.poll(wait) {
                Some(Ok(message)) => {
                    let record = to_record(&message);
                    let mut state = self.state.lock();
                    let tp = record.topic_partition();
                    let stale = !state.owned.contains(&tp)
                        || state.paused.contains(&tp)
                        || state.floor.get(&tp).is_some_and(|&f| record.offset < f);
                    if stale {
                        debug!(partition = %tp, offset = record.offset, "dropping a record of a paused, revoked or rewound partition");
                    } else {
                        state.floor.remove(&tp);
                        state.batch_bytes += record.value.len();
                        state.batch.push(record);
                    }
                }
                Some(Err(e)) => {
                    // librdkafka reports fetch and broker errors here and keeps going.
                    warn!(error = %e, "kafka consumer reported an error");
                    return;
                }
                None => {
                    let state = self.state.lock();
                    if !state.batch.is_empty() || !state.assigned.is_empty() {
                        return;
                    }
                    drop(state);
                    if started.elapsed() >= timeout {
                        return;
                    }
                    wait = timeout.saturating_sub(started.elapsed());
                }
            }
        }
    }

    /// Answers the pending poll with what was gathered (assignments first).
    fn answer(&self) {
        let mut state = self.state.lock();
        let Some(reply) = state.reply.take() else {
            return;
        };
        let event = if !state.assigned.is_empty() {
            ConsumerEvent::Assigned(std::mem::take(&mut state.assigned))
        } else {
            state.batch_bytes = 0;
            ConsumerEvent::Records(std::mem::take(&mut state.batch))
        };
        let _ = reply.send(Ok(event));
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition() as u32))
        .collect()
}

/// A list holding just `tp` (for pause and resume).
fn single(tp: &TopicPartition) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&tp.topic, tp.partition as i32);
    tpl
}

fn commit(
    consumer: &BaseConsumer<MemberCtx>,
    offsets: &[(TopicPartition, Offset)],
) -> Result<(), BusError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (tp, offset) in offsets {
        tpl.add_partition_offset(
            &tp.topic,
            tp.partition as i32,
            KafkaOffset::Offset(*offset as i64),
        )
        .map_err(|e| bus_error("commit", &e))?;
    }
    // A commit that meets the group between the join and sync of a rebalance is refused
    // with REBALANCE_IN_PROGRESS; that window closes without this member, so retry briefly.
    let mut attempts = 0;
    let deadline = Instant::now() + COMMIT_REBALANCE_WAIT;
    loop {
        match consumer.commit(&tpl, CommitMode::Sync) {
            Err(e)
                if Instant::now() < deadline
                    && e.rdkafka_error_code() == Some(RDKafkaErrorCode::RebalanceInProgress) =>
            {
                attempts += 1;
                debug!(attempts, "commit met a rebalance in progress, retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            result => return result.map_err(|e| commit_error(&e)),
        }
    }
}

fn to_record(message: &BorrowedMessage<'_>) -> Record {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| Header::new(h.key, Bytes::copy_from_slice(h.value.unwrap_or_default())))
                .collect()
        })
        .unwrap_or_default();
    Record {
        topic: message.topic().to_string(),
        partition: message.partition() as u32,
        offset: message.offset().max(0) as u64,
        key: message.key().map(Bytes::copy_from_slice),
        value: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
        headers,
        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
    }
}

/// Runs the driver thread: serves commands until the handle closes or goes away, then
/// leaves the group.
fn drive(consumer: BaseConsumer<MemberCtx>) {
    let ctx = consumer.context().clone();
    loop {
        if ctx.state.lock().closing {
            break;
        }
        let command = ctx.commands.lock().recv();
        match command {
            Ok(Command::Poll(timeout, reply)) => {
                {
                    let mut state = ctx.state.lock();
                    state.reply = Some(reply);
                }
                let ready = {
                    let state = ctx.state.lock();
                    !state.assigned.is_empty() || !state.batch.is_empty()
                };
                if !ready {
                    ctx.gather(&consumer, timeout);
                }
                ctx.answer();
            }
            Ok(Command::Close(reply)) => {
                let mut state = ctx.state.lock();
                state.closing = true;
                state.close_reply = Some(reply);
            }
            Ok(other) => ctx.serve(&consumer, other),
            Err(_) => ctx.state.lock().closing = true,
        }
    }
    let close_reply = ctx.state.lock().close_reply.take();
    // Dropping the consumer leaves the group (its revocation callback no longer waits).
    drop(consumer);
    if let Some(reply) = close_reply {
        let _ = reply.send(Ok(()));
    }
}

/// The handle a runtime holds.
pub(crate) struct KafkaConsumer {
    commands: mpsc::Sender<Command>,
    /// A poll whose answer has not been read (its future was dropped).
    pending: Option<oneshot::Receiver<Result<ConsumerEvent, BusError>>>,
    owned: BTreeSet<TopicPartition>,
    /// Revoked by the last poll: committable until the next.
    revoking: BTreeSet<TopicPartition>,
    committed: HashMap<TopicPartition, Offset>,
    thread: Option<JoinHandle<()>>,
}

impl KafkaConsumer {
    pub(crate) fn start(
        config: &super::KafkaConfig,
        diagnostics: Arc<Diagnostics>,
        group: &str,
        topics: &[String],
    ) -> Result<Self, BusError> {
        let (tx, rx) = mpsc::channel();
        let ctx = MemberCtx {
            diagnostics,
            request_timeout: config.request_timeout,
            commands: Mutex::new(rx),
            state: Mutex::new(DriverState::default()),
        };
        let consumer: BaseConsumer<MemberCtx> = super::client_config::consumer(config, group)
            .create_with_context(ctx)
            .map_err(|e| BusError::Config(format!("kafka consumer for group {group}: {e}")))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| bus_error(&format!("subscribing group {group}"), &e))?;
        let thread = std::thread::Builder::new()
            .name(format!("kafka-{group}"))
            .spawn(move || drive(consumer))?;
        Ok(Self {
            commands: tx,
            pending: None,
            owned: BTreeSet::new(),
            revoking: BTreeSet::new(),
            committed: HashMap::new(),
            thread: Some(thread),
        })
    }

    fn send(&self, command: Command) -> Result<(), BusError> {
        self.commands.send(command).map_err(|_| BusError::Closed)
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, timeout: Duration) -> Result<ConsumerEvent, BusError> {
        for tp in std::mem::take(&mut self.revoking) {
            self.committed.remove(&tp);
        }
        if self.pending.is_none() {
            let (tx, rx) = oneshot::channel();
            self.send(Command::Poll(timeout, tx))?;
            self.pending = Some(rx);
        }
        let pending = self.pending.as_mut().expect("set above");
        let answer = pending.await;
        self.pending = None;
        let event = answer.map_err(|_| BusError::Closed)??;
        match &event {
            ConsumerEvent::Assigned(partitions) => {
                self.owned.extend(partitions.iter().cloned());
            }
            ConsumerEvent::Revoked(partitions) => {
                for tp in partitions {
                    self.owned.remove(tp);
                    self.revoking.insert(tp.clone());
                }
            }
            ConsumerEvent::Records(_) => {}
        }
        Ok(event)
    }

    async fn commit(&mut self, offsets: &[(TopicPartition, Offset)]) -> Result<(), BusError> {
        let mut forward = Vec::with_capacity(offsets.len());
        for (tp, offset) in offsets {
            if !self.owned.contains(tp) && !self.revoking.contains(tp) {
                return Err(BusError::NotAssigned(tp.clone()));
            }
            if self.committed.get(tp).is_some_and(|&c| c >= *offset) {
                continue;
            }
            forward.push((tp.clone(), *offset));
        }
        if forward.is_empty() {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        self.send(Command::Commit(forward.clone(), tx))?;
        rx.await.map_err(|_| BusError::Closed)??;
        for (tp, offset) in forward {
            self.committed.insert(tp, offset);
        }
        Ok(())
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        self.owned.union(&self.revoking).cloned().collect()
    }

    fn pause(&mut self, tp: &TopicPartition) -> Result<(), BusError> {
        if !self.owned.contains(tp) {
            return Err(BusError::NotAssigned(tp.clone()));
        }
        self.send(Command::Pause(tp.clone()))
    }

    fn resume(&mut self, tp: &TopicPartition, offset: Offset) -> Result<(), BusError> {
        if !self.owned.contains(tp) {
            return Err(BusError::NotAssigned(tp.clone()));
        }
        self.send(Command::Resume(tp.clone(), offset))
    }

    async fn close(mut self: Box<Self>) -> Result<(), BusError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Close(tx))?;
        let result = rx.await.map_err(|_| BusError::Closed)?;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        result
    }
}

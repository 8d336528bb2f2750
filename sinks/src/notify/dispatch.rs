//! Fan-out: one worker task and queue per destination, so a receiver that fails, is slow
//! or rate-limits never delays another. A worker delivers its queue in order (the
//! transitions of one incident reach a destination in the order they happened, and an
//! update finds the handle its trigger recorded) with [`deliver_with_retries`] and the
//! destination's circuit breaker and token bucket; it then records the outcome durably
//! (the dead-letter topic for a failure, then the partition's journal through its
//! [`Recorder`], which groups the entries of workers finishing together) before the
//! operator may commit the record's offset.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use chrono::Utc;
use mcpulse_bus::Offset;
use mcpulse_schemas::AlertEvent;
use tokio::sync::mpsc;
use tracing::{debug, error, warn};

use crate::delivery::{Attempt, Destinations, Jitter, RetryPolicy, deliver_with_retries};
use crate::receivers::{DeliveryError, Outcome, Redactor};

use super::dead_letter::DeadLetterOut;
use super::metrics::NotifyMetrics;
use super::nflog::{Finished, LastSent};
use super::recorder::Recorder;
use super::rows::{Addressee, NotificationRow, Status};
use super::shared::{Completion, PartShared};
use super::store::JournalEntry;
use super::targets::Target;

/// One notification: one transition to one integration.
pub struct Job {
    pub event: Arc<AlertEvent>,
    pub target: Arc<Target>,
    pub to: Addressee,
    pub repeat_interval: Duration,
    /// A re-send after `repeat_interval` (not tied to a record).
    pub repeat: bool,
    /// The record it came from (`None` for a repeat).
    pub offset: Option<Offset>,
    pub part: Arc<PartShared>,
    /// Puts the outcome on record (the partition's journal).
    pub recorder: Recorder,
    pub redactor: Arc<Redactor>,
}

/// What every worker shares.
pub struct WorkerContext {
    pub destinations: Destinations,
    pub retry: RetryPolicy,
    pub dead_letters: DeadLetterOut,
    pub metrics: Arc<NotifyMetrics>,
}

/// The queues of the destinations, created on first use.
pub struct Dispatcher {
    ctx: Arc<WorkerContext>,
    queues: HashMap<String, mpsc::UnboundedSender<Job>>,
}

impl Dispatcher {
    pub fn new(ctx: WorkerContext) -> Self {
        Dispatcher {
            ctx: Arc::new(ctx),
            queues: HashMap::new(),
        }
    }

    /// Notifications queued or being delivered.
    pub fn in_flight(&self) -> usize {
        self.ctx.metrics.in_flight.load(Relaxed).max(0) as usize
    }

    /// Queues `job` behind the other notifications of its destination.
    pub fn submit(&mut self, job: Job) {
        self.ctx.metrics.in_flight.fetch_add(1, Relaxed);
        let destination = job.target.destination().to_owned();
        let mut job = job;
        loop {
            let ctx = &self.ctx;
            let queue = self
                .queues
                .entry(destination.clone())
                .or_insert_with(|| spawn_worker(ctx.clone()));
            match queue.send(job) {
                Ok(()) => return,
                // The worker is gone (it panicked): start another.
                Err(mpsc::error::SendError(back)) => {
                    error!(destination, "delivery worker stopped; starting a new one");
                    self.queues.remove(&destination);
                    job = back;
                }
            }
        }
    }
}

fn spawn_worker(ctx: Arc<WorkerContext>) -> mpsc::UnboundedSender<Job> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    tokio::spawn(async move {
        let mut jitter = Jitter::from_entropy();
        while let Some(job) = rx.recv().await {
            let part = job.part.clone();
            if !part.is_cancelled() {
                tokio::select! {
                    () = deliver(&ctx, job, &mut jitter) => {}
                    () = part.cancelled() => {
                        debug!(partition = %part.tp, "partition released: its next owner redoes this notification");
                    }
                }
            }
            ctx.metrics.in_flight.fetch_sub(1, Relaxed);
        }
    });
    tx
}

/// Pauses between retries of a durable write (journal, dead-letter topic).
struct WriteBackoff(Duration);

impl WriteBackoff {
    fn new() -> Self {
        WriteBackoff(Duration::from_millis(100))
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(10));
    }
}

/// The row of one attempt (an `Ok` is marked sent; a skip is fixed up afterwards).
fn attempt_row(job: &Job, attempt: &Attempt, max_attempts: u32) -> NotificationRow {
    let (status, error) = match &attempt.result {
        Ok(()) => (Status::Sent, None),
        Err(e) => {
            let again = e.is_retryable() && attempt.number < max_attempts;
            let status = if again { Status::Retry } else { Status::Failed };
            (status, Some(job.redactor.scrub(&e.to_string())))
        }
    };
    let mut row = NotificationRow::new(&job.event, &job.to, status).attempt(
        attempt.number,
        attempt.latency,
        error,
    );
    row.repeat = job.repeat;
    row
}

/// Delivers one notification and records how it finished.
async fn deliver(ctx: &WorkerContext, job: Job, jitter: &mut Jitter) {
    let key = job.target.key.as_str();
    let handle = {
        let mut inner = job.part.lock();
        if !job.repeat
            && inner
                .nflog
                .is_done(&job.event.incident_id, key, &job.event.event_id)
        {
            // Queued twice (a replay of a record already handled, or two routes).
            ctx.metrics.deduplicated.fetch_add(1, Relaxed);
            inner.finished.push(Completion {
                offset: job.offset,
                rows: Vec::new(),
                journal: Vec::new(),
            });
            return;
        }
        inner.nflog.handle(&job.event.incident_id, key)
    };
    let destination = ctx.destinations.get(job.target.destination());
    let mut rows = Vec::new();
    let max = ctx.retry.max_attempts;
    let result = deliver_with_retries(
        job.target.sender.as_ref(),
        &job.event,
        handle.as_ref(),
        &destination,
        &ctx.retry,
        jitter,
        |a| rows.push(attempt_row(&job, a, max)),
    )
    .await;
    let outcome = match result {
        Ok(Outcome::Sent { handle }) => Finished::Sent { handle },
        Ok(Outcome::Skipped { reason }) => {
            if let Some(last) = rows.last_mut() {
                last.status = Status::Skipped;
                last.error = Some(reason.to_owned());
            }
            Finished::Skipped
        }
        Err(e) => {
            dead_letter(ctx, &job, &e, rows.len() as u32).await;
            Finished::DeadLettered
        }
    };
    for row in &rows {
        ctx.metrics.count(row.status);
    }
    let sent = matches!(outcome, Finished::Sent { .. }).then(|| LastSent {
        event_id: job.event.event_id.clone(),
        at: Utc::now(),
        route_id: job.to.route_id.clone(),
        repeat_interval: job.repeat_interval,
    });
    let entry = JournalEntry {
        event: job.event.clone(),
        key: key.to_owned(),
        outcome,
        sent,
        rows,
    };
    if job.repeat {
        // A repeat is not journaled: losing one in a crash only delays the next.
        let mut inner = job.part.lock();
        inner
            .nflog
            .finish(&entry.event, key, &entry.outcome, entry.sent.clone());
        inner.dirty = true;
        inner.finished.push(Completion {
            offset: job.offset,
            rows: entry.rows,
            journal: Vec::new(),
        });
        return;
    }
    let sent = matches!(entry.outcome, Finished::Sent { .. });
    job.recorder.record(entry, job.offset).await;
    if sent {
        mcpulse_processors::failpoint::hit("notify.after_send");
    }
}

/// Appends the failed notification to the dead-letter topic, retrying while the log
/// refuses it.
async fn dead_letter(ctx: &WorkerContext, job: &Job, error: &DeliveryError, attempts: u32) {
    warn!(
        receiver = %job.to.receiver,
        integration = %job.to.integration,
        destination = %job.to.destination,
        incident = %job.event.incident_id,
        error = %job.redactor.scrub(&error.to_string()),
        "notification failed for good: dead-lettering it"
    );
    let mut backoff = WriteBackoff::new();
    loop {
        match ctx.dead_letters.send(job, error, attempts).await {
            Ok(()) => {
                ctx.metrics.dead_lettered.fetch_add(1, Relaxed);
                return;
            }
            Err(e) if e.is_retryable() => {
                warn!(error = %e, "cannot dead-letter a failed notification yet, retrying");
                backoff.wait().await;
            }
            Err(e) => {
                error!(error = %e, receiver = %job.to.receiver, incident = %job.event.incident_id, "cannot dead-letter a failed notification");
                return;
            }
        }
    }
}

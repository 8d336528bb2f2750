//! The notify operator: `alerts.v1` records in, notifications out (see the module docs
//! of [`super`] for the protocol).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use mcpulse_bus::{Offset, Producer, Record, TopicPartition};
use mcpulse_processors::archive::maintenance::DeletionWatch;
use mcpulse_processors::archive::{ArchiveConfig, ArchiveTarget, TableWriter};
use mcpulse_processors::stats::RuntimeStats;
use mcpulse_processors::{Operator, OperatorError};
use mcpulse_schemas::topics::valid_tenant_id;
use mcpulse_schemas::{AlertEvent, Table};
use tracing::{debug, error, info, warn};

use crate::delivery::Destinations;
use crate::receivers::HttpClient;
use crate::routes::SilenceSet;

use super::budget::Admission;
use super::config::NotifyConfig;
use super::dead_letter::DeadLetterOut;
use super::dispatch::{Dispatcher, Job, WorkerContext};
use super::error::NotifyError;
use super::flush::Flush;
use super::metrics::NotifyMetrics;
use super::nflog::Finished;
use super::partition::Partition;
use super::rows::{Addressee, NotificationRow, Status};
use super::store::NotifyStore;
use super::targets::Routing;
use super::watched::{Watched, load_silences};

/// How often the notification log forgets incidents past their retention.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What the operator needs from its surroundings.
pub struct NotifySetup {
    pub config: NotifyConfig,
    /// The silences file (`{data_dir}/silences.json`, written by `mcpulse silence` and
    /// the silences API); re-read when it changes.
    pub silences: PathBuf,
    /// Archive settings (Parquet encoding, the tenant header).
    pub archive: ArchiveConfig,
    pub target: ArchiveTarget,
    /// For the dead-letter topic.
    pub producer: Arc<dyn Producer>,
    pub dlq_topic: String,
    pub metrics: Arc<NotifyMetrics>,
    pub stats: Arc<RuntimeStats>,
    /// How often to look for deletion requests of `mcpulse admin delete` (whose tenant
    /// or server the stage then forgets); `None`: never.
    pub deletion_poll: Option<Duration>,
}

/// Delivers `alerts.v1` to the receivers of `routes.yaml`.
pub struct NotifyOperator {
    config: NotifyConfig,
    http: HttpClient,
    routing: Watched<Routing>,
    silences: Watched<SilenceSet>,
    dispatcher: Dispatcher,
    store: NotifyStore,
    writer: TableWriter,
    tenant_header: String,
    partitions: HashMap<TopicPartition, Partition>,
    metrics: Arc<NotifyMetrics>,
    deletions: Option<DeletionWatch>,
}

impl NotifyOperator {
    /// Loads the routes file (every integration built) and the silences.
    pub fn new(setup: NotifySetup) -> Result<Self, NotifyError> {
        let NotifySetup {
            config,
            silences,
            archive,
            target,
            producer,
            dlq_topic,
            metrics,
            stats,
            deletion_poll,
        } = setup;
        let routes = config
            .routes
            .clone()
            .ok_or_else(|| NotifyError::Config("notify.routes: no routes file".into()))?;
        let http = HttpClient::new().map_err(|e| NotifyError::Config(e.to_string()))?;
        let routing = Watched::load(routes, |p| Routing::load(p, &http))?;
        let silences = Watched::load(silences, load_silences)?;
        let store = NotifyStore::new(target.clone());
        let dispatcher = Dispatcher::new(WorkerContext {
            destinations: Destinations::new(config.delivery_policy()),
            retry: config.retry.clone(),
            dead_letters: DeadLetterOut::new(producer, dlq_topic),
            metrics: metrics.clone(),
        });
        Ok(NotifyOperator {
            writer: TableWriter::new(Table::Notifications, archive.clone(), target.clone(), stats),
            tenant_header: archive.tenant_header.clone(),
            config,
            http,
            routing,
            silences,
            dispatcher,
            store,
            partitions: HashMap::new(),
            metrics,
            deletions: deletion_poll.map(|poll| DeletionWatch::new(target.clone(), poll)),
        })
    }

    /// The loaded routes (tests, logs).
    pub fn routing(&self) -> &Arc<Routing> {
        self.routing.get()
    }

    async fn load(&mut self, tp: &TopicPartition) -> Result<(), NotifyError> {
        if self.partitions.contains_key(tp) {
            return Ok(());
        }
        let loaded = self.store.load(tp).await?;
        let pending = loaded.journal.len();
        let mut part = Partition::restore(tp.clone(), loaded, &self.store);
        self.watch_deletions().await;
        if let Some(watch) = &self.deletions {
            for request in watch.known() {
                part.forget(request);
            }
        }
        info!(partition = %tp, next_offset = part.skip_below, incidents = part.shared.lock().nflog.len(), journal_entries = pending, "notification log restored");
        self.partitions.insert(tp.clone(), part);
        Ok(())
    }

    /// The event of a record, if its tenant header names a valid tenant that owns it.
    fn decode(&self, record: &Record) -> Result<AlertEvent, OperatorError> {
        let header = self.tenant_header.as_str();
        let tenant = record
            .header(header)
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|t| valid_tenant_id(t))
            .ok_or_else(|| OperatorError::Decode(format!("missing or invalid {header} header")))?;
        let event: AlertEvent = serde_json::from_slice(&record.value)
            .map_err(|e| OperatorError::Decode(format!("alert event: {e}")))?;
        if event.tenant != tenant {
            return Err(OperatorError::Decode(
                "alert event: the tenant header does not match the payload".into(),
            ));
        }
        Ok(event)
    }

    /// Routes `event` and queues one notification per integration it reaches that has
    /// not finished it yet; muted and silenced ones are recorded as such.
    fn route(&mut self, tp: &TopicPartition, offset: Offset, event: AlertEvent) {
        let now = Utc::now();
        let routing = self.routing.get().clone();
        let silenced = self
            .silences
            .get()
            .silenced_by(&event, now)
            .map(|s| format!("silenced by {}", s.id));
        let matches = routing.file.route(&event, now);
        let event = Arc::new(event);
        let part = self.partitions.get_mut(tp).expect("loaded");
        let mut jobs = Vec::new();
        {
            let mut inner = part.shared.lock();
            inner.nflog.observe(&event);
            inner.dirty = true;
            let mut seen = HashSet::new();
            for m in &matches {
                for target in routing.targets(&m.receiver) {
                    if !seen.insert(target.key.as_str()) {
                        continue;
                    }
                    if inner
                        .nflog
                        .is_done(&event.incident_id, &target.key, &event.event_id)
                    {
                        self.metrics.deduplicated.fetch_add(1, Relaxed);
                        continue;
                    }
                    let to = Addressee {
                        route_id: m.route_id.clone(),
                        receiver: target.receiver.clone(),
                        integration: target.kind.as_str().to_owned(),
                        destination: target.destination().to_owned(),
                    };
                    let decision = match (&silenced, &m.muted) {
                        (Some(why), _) => Some((Status::Silenced, Finished::Silenced, why.clone())),
                        (None, Some(mute)) => {
                            Some((Status::Muted, Finished::Muted, mute.to_string()))
                        }
                        (None, None) => None,
                    };
                    if let Some((status, finished, why)) = decision {
                        inner.nflog.finish(&event, &target.key, &finished, None);
                        part.rows
                            .push(NotificationRow::new(&event, &to, status).with_error(why));
                        self.metrics.count(status);
                        continue;
                    }
                    jobs.push(Job {
                        event: event.clone(),
                        target: target.clone(),
                        to,
                        repeat_interval: m.repeat_interval,
                        repeat: false,
                        offset: Some(offset),
                        part: part.shared.clone(),
                        recorder: part.recorder.clone(),
                        redactor: routing.redactor.clone(),
                    });
                }
            }
            if !jobs.is_empty()
                && inner.nflog.admission(&event, &self.config.budget, now) == Admission::Folded
            {
                for job in jobs.drain(..) {
                    inner
                        .nflog
                        .finish(&event, &job.target.key, &Finished::Folded, None);
                    inner
                        .nflog
                        .budget_mut()
                        .fold(&job.target.key, &job.to.route_id, &event, now);
                    part.rows.push(
                        NotificationRow::new(&event, &job.to, Status::Folded).with_error(
                            "past the tenant's notification budget: in the next digest",
                        ),
                    );
                    self.metrics.count(Status::Folded);
                }
            }
        }
        part.hold(offset, jobs.len() as u32);
        debug!(partition = %tp, offset, incident = %event.incident_id, action = event.action.as_str(), routes = matches.len(), notifications = jobs.len(), "alert routed");
        for job in jobs {
            self.dispatcher.submit(job);
        }
    }

    /// Looks for new deletion requests (if due) and forgets their tenant or server in
    /// every partition. A failure to look is logged and tried again later.
    async fn watch_deletions(&mut self) {
        let Some(watch) = &mut self.deletions else {
            return;
        };
        if !watch.due() {
            return;
        }
        match watch.refresh().await {
            Ok(new) => {
                for request in &new {
                    for part in self.partitions.values_mut() {
                        part.forget(request);
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot read deletion requests; trying again later")
            }
        }
    }

    /// Reloads the routes and silences files if they changed.
    fn reload(&mut self) {
        let interval = self.config.reload_interval;
        let http = self.http.clone();
        let routes = self.routing.refresh(interval, |p| Routing::load(p, &http));
        let silences = self.silences.refresh(interval, load_silences);
        for (what, result) in [("routes", routes), ("silences", silences)] {
            match result {
                None => {}
                Some(Ok(())) => {
                    self.metrics.reloads.fetch_add(1, Relaxed);
                    info!(file = what, "reloaded after a change");
                }
                Some(Err(e)) => {
                    self.metrics.reload_errors.fetch_add(1, Relaxed);
                    error!(file = what, error = %e, "changed file does not load: keeping the previous version");
                }
            }
        }
    }

    /// Waits (until `deadline`) for the notifications in flight of `tp` to finish.
    async fn wait_idle(&mut self, tp: &TopicPartition, deadline: Instant) {
        loop {
            let part = self.partitions.get_mut(tp).expect("listed");
            let shared = part.shared.clone();
            part.absorb(&mut shared.lock());
            if part.in_flight() == 0 {
                return;
            }
            if Instant::now() >= deadline {
                warn!(partition = %tp, in_flight = part.in_flight(), "notifications still in flight: their records stay uncommitted and are redone by the next owner unless on record");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes in the background flush of `tp` if it ended (waiting for it if `wait`):
    /// on success the checkpoint's offset becomes committable; on failure what it took
    /// is handed back for the next attempt.
    async fn collect(&mut self, tp: &TopicPartition, wait: bool) -> Result<(), NotifyError> {
        let part = self.partitions.get_mut(tp).expect("listed");
        let Some(task) = part.flushing.take_if(|t| wait || t.is_finished()) else {
            return Ok(());
        };
        let done = task
            .await
            .map_err(|e| NotifyError::Fatal(format!("notification flush task: {e}")))?;
        part.flushed(done)
    }

    /// Queues due repeats and digests, and starts a background flush of `tp` (unless one
    /// is running, see [`Flush`]); records keep being consumed and notifications
    /// delivered meanwhile. With `all` (shutdown, partitions moving) it writes every
    /// spooled row to the table and returns once done.
    async fn flush_one(&mut self, tp: &TopicPartition, all: bool) -> Result<(), NotifyError> {
        self.collect(tp, all).await?;
        if self.partitions[tp].flushing.is_some() {
            return Ok(());
        }
        let now = Utc::now();
        let (retention, open_retention) = (
            self.config.nflog_retention,
            self.config.nflog_open_retention,
        );
        let routing = self.routing.get().clone();
        let part = self.partitions.get_mut(tp).expect("listed");
        part.last_flush = Instant::now();
        let shared = part.shared.clone();
        let (snapshot, repeats, digests, table) = {
            let mut inner = shared.lock();
            part.absorb(&mut inner);
            let spooled = part.spooled.len() + part.rows.len();
            let table = (spooled > 0 || part.table_now)
                && (all
                    || part.table_now
                    || part.last_table.elapsed() >= self.config.table_interval
                    || spooled >= self.config.table_rows);
            // The retention is days: once a minute is often enough to walk the log.
            if part.pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                part.pruned_at = Some(Instant::now());
                if inner.nflog.prune(now, retention, open_retention) > 0 {
                    inner.dirty = true;
                }
            }
            let repeats = inner.nflog.repeats_due(now);
            if !repeats.is_empty() {
                inner.dirty = true;
            }
            let mut digests = inner.nflog.budget_mut().due(&self.config.budget, now);
            if !digests.is_empty() {
                inner.dirty = true;
            }
            // One already on record (sent before a restart) is done with.
            digests.retain(|d| {
                let done = inner
                    .nflog
                    .is_done(&d.event.incident_id, &d.key, &d.event.event_id);
                if done {
                    inner.nflog.budget_mut().finished(&d.event.event_id);
                }
                !done
            });
            let changed = inner.dirty
                || part.durable() != part.checkpointed
                || !part.rows.is_empty()
                || table;
            inner.dirty = false;
            // The journal file in use holds entries this checkpoint covers (and only
            // those: see the recorder): deleted after it, the recorder moves on.
            if changed {
                part.journals.extend(inner.journal_file.take());
            }
            (
                changed.then(|| part.segment(&mut inner)),
                repeats,
                digests,
                table,
            )
        };
        let due = digests
            .into_iter()
            .map(|d| (d.key, d.route_id, d.event, Duration::ZERO, false))
            .chain(
                repeats
                    .into_iter()
                    .map(|r| (r.key, r.route_id, r.event, r.repeat_interval, true)),
            );
        for (key, route_id, event, repeat_interval, repeat) in due {
            let Some(target) = routing.target_by_key(&key).cloned() else {
                // The integration is gone from the routes file.
                if !repeat {
                    shared.lock().nflog.budget_mut().finished(&event.event_id);
                }
                continue;
            };
            let counter = if repeat {
                &self.metrics.repeats
            } else {
                &self.metrics.digests
            };
            counter.fetch_add(1, Relaxed);
            let to = Addressee {
                route_id,
                receiver: target.receiver.clone(),
                integration: target.kind.as_str().to_owned(),
                destination: target.destination().to_owned(),
            };
            self.dispatcher.submit(Job {
                event: Arc::new(event),
                target,
                to,
                repeat_interval,
                repeat,
                offset: None,
                part: shared.clone(),
                recorder: part.recorder.clone(),
                redactor: routing.redactor.clone(),
            });
        }
        let Some(segment) = snapshot else {
            return Ok(());
        };
        if table {
            part.last_table = Instant::now();
            part.table_now = false;
        }
        let flush = Flush {
            writer: self.writer.clone(),
            store: self.store.clone(),
            tp: tp.clone(),
            seq: part.seq,
            spool: part.spool.clone(),
            spool_next: part.spool_next,
            segments: part.segments.clone(),
            segment_next: part.segment_next,
            durable: part.durable(),
            segment,
            fresh: std::mem::take(&mut part.rows),
            table: table.then(|| std::mem::take(&mut part.spooled)),
            journals: std::mem::take(&mut part.journals),
        };
        part.flushing = Some(super::background::spawn(flush.run()));
        if all {
            self.collect(tp, true).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Operator for NotifyOperator {
    fn name(&self) -> &'static str {
        "notify"
    }

    async fn process(&mut self, record: &Record) -> Result<(), OperatorError> {
        if self.dispatcher.in_flight() >= self.config.max_in_flight {
            return Err(OperatorError::Retryable(format!(
                "{} notifications in flight (notify.max_in_flight): waiting for deliveries",
                self.dispatcher.in_flight()
            )));
        }
        let tp = record.topic_partition();
        self.load(&tp).await?;
        if record.offset < self.partitions[&tp].skip_below {
            // Finished before the checkpoint (the committed offset lags it).
            return Ok(());
        }
        let event = self.decode(record)?;
        self.route(&tp, record.offset, event);
        let part = self.partitions.get_mut(&tp).expect("loaded");
        part.next_offset = part.next_offset.max(record.offset + 1);
        Ok(())
    }

    fn skip(&mut self, tp: &TopicPartition, offset: Offset) {
        if let Some(part) = self.partitions.get_mut(tp) {
            part.next_offset = part.next_offset.max(offset + 1);
        }
    }

    fn flush_due(&self) -> bool {
        self.partitions.values().any(|p| match &p.flushing {
            // Its checkpoint's offset is ready to commit.
            Some(task) => task.is_finished(),
            None => p.last_flush.elapsed() >= self.config.flush_interval,
        })
    }

    async fn flush(
        &mut self,
        partitions: Option<&[TopicPartition]>,
        all: bool,
    ) -> Result<Vec<(TopicPartition, Offset)>, OperatorError> {
        self.reload();
        self.watch_deletions().await;
        let mut tps: Vec<TopicPartition> = match partitions {
            Some(p) => p
                .iter()
                .filter(|tp| self.partitions.contains_key(tp))
                .cloned()
                .collect(),
            None => self.partitions.keys().cloned().collect(),
        };
        tps.sort();
        let deadline = Instant::now() + self.config.drain_timeout;
        let mut commits = Vec::new();
        for tp in tps {
            if all {
                self.wait_idle(&tp, deadline).await;
            }
            let due = self.partitions[&tp].last_flush.elapsed() >= self.config.flush_interval;
            if all || due {
                self.flush_one(&tp, all).await?;
            } else {
                self.collect(&tp, false).await?;
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
            if let Some(part) = self.partitions.remove(tp) {
                part.stop();
            }
        }
    }
}

impl Drop for NotifyOperator {
    fn drop(&mut self) {
        for part in self.partitions.values() {
            part.stop();
        }
    }
}

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
use mcpulse_processors::archive::{ArchiveConfig, ArchiveTarget, ParquetEncoder};
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
use super::metrics::NotifyMetrics;
use super::nflog::Finished;
use super::partition::Partition;
use super::rows::{self, Addressee, NotificationRow, Status};
use super::store::{Checkpoint, NotifyStore};
use super::targets::Routing;
use super::watched::{Watched, load_silences};

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
}

/// Delivers `alerts.v1` to the receivers of `routes.yaml`.
pub struct NotifyOperator {
    config: NotifyConfig,
    http: HttpClient,
    routing: Watched<Routing>,
    silences: Watched<SilenceSet>,
    dispatcher: Dispatcher,
    store: NotifyStore,
    encoder: ParquetEncoder,
    target: ArchiveTarget,
    tenant_header: String,
    partitions: HashMap<TopicPartition, Partition>,
    metrics: Arc<NotifyMetrics>,
    stats: Arc<RuntimeStats>,
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
            store: store.clone(),
            dead_letters: DeadLetterOut::new(producer, dlq_topic),
            metrics: metrics.clone(),
        });
        Ok(NotifyOperator {
            encoder: ParquetEncoder::new(Table::Notifications, archive.clone()),
            tenant_header: archive.tenant_header.clone(),
            config,
            http,
            routing,
            silences,
            dispatcher,
            store,
            target,
            partitions: HashMap::new(),
            metrics,
            stats,
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
        let checkpoint = self.store.checkpoint(tp).await?;
        let journal = self.store.journal_entries(tp).await?;
        let pending = journal.len();
        let part = Partition::restore(tp.clone(), checkpoint, journal);
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

    /// Writes finished notifications' rows, checkpoints the log with the offset it covers,
    /// deletes the journal entries it folded in, and queues due repeats.
    async fn flush_one(&mut self, tp: &TopicPartition) -> Result<(), NotifyError> {
        let now = Utc::now();
        let (retention, open_retention) = (
            self.config.nflog_retention,
            self.config.nflog_open_retention,
        );
        let routing = self.routing.get().clone();
        let part = self.partitions.get_mut(tp).expect("listed");
        let shared = part.shared.clone();
        let (snapshot, repeats, digests) = {
            let mut inner = shared.lock();
            part.absorb(&mut inner);
            if inner.nflog.prune(now, retention, open_retention) > 0 {
                inner.dirty = true;
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
            let changed =
                inner.dirty || part.durable() != part.checkpointed || !part.rows.is_empty();
            inner.dirty = false;
            (changed.then(|| Partition::nflog(&inner)), repeats, digests)
        };
        for digest in digests {
            let Some(target) = routing.target_by_key(&digest.key).cloned() else {
                // The integration is gone from the routes file.
                shared
                    .lock()
                    .nflog
                    .budget_mut()
                    .finished(&digest.event.event_id);
                continue;
            };
            self.metrics.digests.fetch_add(1, Relaxed);
            let to = Addressee {
                route_id: digest.route_id,
                receiver: target.receiver.clone(),
                integration: target.kind.as_str().to_owned(),
                destination: target.destination().to_owned(),
            };
            self.dispatcher.submit(Job {
                event: Arc::new(digest.event),
                target,
                to,
                repeat_interval: Duration::ZERO,
                repeat: false,
                offset: None,
                part: shared.clone(),
                redactor: routing.redactor.clone(),
            });
        }
        for repeat in repeats {
            let Some(target) = routing.target_by_key(&repeat.key).cloned() else {
                continue; // the integration is gone from the routes file
            };
            self.metrics.repeats.fetch_add(1, Relaxed);
            let to = Addressee {
                route_id: repeat.route_id,
                receiver: target.receiver.clone(),
                integration: target.kind.as_str().to_owned(),
                destination: target.destination().to_owned(),
            };
            self.dispatcher.submit(Job {
                event: Arc::new(repeat.event),
                target,
                to,
                repeat_interval: repeat.repeat_interval,
                repeat: true,
                offset: None,
                part: shared.clone(),
                redactor: routing.redactor.clone(),
            });
        }
        let Some(nflog) = snapshot else {
            part.last_flush = Instant::now();
            return Ok(());
        };
        let part = &self.partitions[tp];
        let (seq, durable) = (part.seq, part.durable());
        let result = self.persist(tp, seq, durable, nflog).await;
        let part = self.partitions.get_mut(tp).expect("listed");
        match result {
            Ok(wrote_rows) => {
                part.rows.clear();
                part.journals.clear();
                if wrote_rows {
                    part.seq += 1;
                }
                part.checkpointed = durable;
                part.last_flush = Instant::now();
                Ok(())
            }
            Err(e) => {
                // Keep everything for the retry (same object names).
                shared.lock().dirty = true;
                Err(e)
            }
        }
    }

    /// Rows, then the checkpoint, then the journal entries it covers. Returns whether
    /// rows were written.
    async fn persist(
        &self,
        tp: &TopicPartition,
        seq: u64,
        durable: Offset,
        nflog: super::nflog::Nflog,
    ) -> Result<bool, NotifyError> {
        let part = &self.partitions[tp];
        let wrote_rows = !part.rows.is_empty();
        if wrote_rows {
            self.write_rows(tp, seq, &part.rows).await?;
        }
        let checkpoint = Checkpoint {
            seq: if wrote_rows { seq + 1 } else { seq },
            next_offset: durable,
            nflog,
        };
        self.store.save(tp, &checkpoint).await?;
        self.store.forget(&part.journals).await?;
        Ok(wrote_rows)
    }

    /// One object per (tenant, date, hour), named after the partition and `seq`, so a
    /// replay after a crash overwrites it.
    async fn write_rows(
        &self,
        tp: &TopicPartition,
        seq: u64,
        rows: &[NotificationRow],
    ) -> Result<(), NotifyError> {
        let batches = rows::batches(rows)
            .map_err(|e| NotifyError::Fatal(format!("building notification rows: {e}")))?;
        let name = format!("{}-{}-{:020}.parquet", tp.topic, tp.partition, seq);
        let writes = batches.iter().map(|(key, batch)| {
            let path = key
                .dir(&self.target.root, Table::Notifications)
                .join(name.as_str());
            async move {
                let bytes = self.encoder.encode(batch, &key.tenant)?;
                let len = bytes.len() as u64;
                self.target.put_durable(&path, bytes).await?;
                self.stats
                    .rows_written
                    .fetch_add(batch.num_rows() as u64, Relaxed);
                self.stats.bytes_written.fetch_add(len, Relaxed);
                self.stats.files_written.fetch_add(1, Relaxed);
                Ok::<_, OperatorError>(())
            }
        });
        futures::future::try_join_all(writes).await?;
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
        self.partitions
            .values()
            .any(|p| p.last_flush.elapsed() >= self.config.flush_interval)
    }

    async fn flush(
        &mut self,
        partitions: Option<&[TopicPartition]>,
        all: bool,
    ) -> Result<Vec<(TopicPartition, Offset)>, OperatorError> {
        self.reload();
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
            if let Some(part) = self.partitions.remove(tp) {
                part.shared.cancel();
            }
        }
    }
}

impl Drop for NotifyOperator {
    fn drop(&mut self) {
        for part in self.partitions.values() {
            part.shared.cancel();
        }
    }
}

//! Runs the [`Prober`] over a list of targets, forever: every target every `interval`,
//! first runs spread over the interval by a deterministic per-target jitter, at most
//! `max_concurrency` probes in flight, each probe its own task (a slow target never
//! delays another), a probe still running when its next slot comes skipped and counted
//! (never stacked). Results are batched per tenant and handed to a [`ResultSink`]
//! without ever blocking probing: when delivery falls behind, results are dropped and
//! counted.

use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_trait::async_trait;
use mcpulse_schemas::metrics::{MetricsSource, PromWriter};
use mcpulse_schemas::probe::{FailureReason, ProbeResult};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::probe::{NotProbed, Prober};
use super::target_guard::redact_url;
use super::targets::Target;
use crate::{IngestError, ProbeIngest};

/// Most results handed to the sink in one batch.
pub const MAX_BATCH: usize = 100;
/// Longest a result waits for its batch to fill.
pub const BATCH_DELAY: Duration = Duration::from_millis(100);
/// Results waiting for delivery; beyond this, new results are dropped and counted.
pub const DELIVERY_QUEUE: usize = 10_000;
/// Batches being delivered at once.
const DELIVERIES_IN_FLIGHT: usize = 4;
/// Grace beyond a target's own timeout before a probe task is abandoned (the prober
/// enforces the timeout itself; this only guards against a bug there).
const ABANDON_GRACE: Duration = Duration::from_secs(2);
/// How long shutdown waits for the last batches to be delivered.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// Where probe results go.
#[async_trait]
pub trait ResultSink: Send + Sync {
    /// Delivers `results` of `tenant`; an error means they were dropped.
    async fn deliver(&self, tenant: &str, results: Vec<ProbeResult>) -> Result<(), String>;
}

/// A [`ResultSink`] that drops every result (benchmarks, `run_once` only).
pub struct DiscardSink;

#[async_trait]
impl ResultSink for DiscardSink {
    async fn deliver(&self, _tenant: &str, _results: Vec<ProbeResult>) -> Result<(), String> {
        Ok(())
    }
}

/// A [`ResultSink`] appending to the log through [`ProbeIngest`] (the path externally
/// posted results take): retryable errors are retried with backoff for up to
/// `give_up_after`; a batch refused as invalid is retried result by result, so one bad
/// result does not take its batch with it.
pub struct IngestSink {
    ingest: ProbeIngest,
    give_up_after: Duration,
}

impl IngestSink {
    pub fn new(ingest: ProbeIngest) -> Self {
        Self {
            ingest,
            give_up_after: Duration::from_secs(30),
        }
    }

    /// Gives up on a batch after retrying for `give_up_after`.
    pub fn with_give_up_after(mut self, give_up_after: Duration) -> Self {
        self.give_up_after = give_up_after;
        self
    }

    async fn append_retrying(
        &self,
        tenant: &str,
        results: Vec<ProbeResult>,
    ) -> Result<(), IngestError> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.ingest.append(tenant, results.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_retryable() => {
                    let wait = e.retry_after().unwrap_or(backoff).max(backoff);
                    if started.elapsed() + wait > self.give_up_after {
                        return Err(e);
                    }
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[async_trait]
impl ResultSink for IngestSink {
    async fn deliver(&self, tenant: &str, results: Vec<ProbeResult>) -> Result<(), String> {
        let n = results.len();
        match self.append_retrying(tenant, results.clone()).await {
            Ok(()) => Ok(()),
            Err(IngestError::BadRequest(e)) if n > 1 => {
                let mut failed = 0;
                let mut last = e;
                for result in results {
                    if let Err(e) = self.append_retrying(tenant, vec![result]).await {
                        failed += 1;
                        last = e.to_string();
                    }
                }
                if failed == 0 {
                    Ok(())
                } else {
                    Err(format!("{failed} of {n} results refused: {last}"))
                }
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Counters of the scheduler, on `/metrics`.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Probes that ran to a result.
    pub probes: AtomicU64,
    pub ok: AtomicU64,
    /// Failed probes by reason (indexed like [`FailureReason::ALL`]).
    pub failed: [AtomicU64; FailureReason::ALL.len()],
    /// Successful probes with a warning (`tls_expiring`, `latency_degraded`), by reason.
    pub warnings: [AtomicU64; FailureReason::ALL.len()],
    /// Slots skipped because the target's previous probe was still running.
    pub skipped_overlaps: AtomicU64,
    /// Probes not run: the target is refused by the policy or its URL is invalid.
    pub not_probed: AtomicU64,
    /// Probe tasks abandoned past their timeout (a prober bug if ever non-zero).
    pub abandoned: AtomicU64,
    /// Probes in flight (running or waiting for a concurrency slot) right now.
    pub in_flight: AtomicU64,
    /// The most probes that held a concurrency slot at once.
    pub peak_running: AtomicU64,
    running: AtomicU64,
    /// Results the sink accepted.
    pub delivered: AtomicU64,
    /// Batches the sink failed to deliver.
    pub delivery_failures: AtomicU64,
    /// Results dropped: by failed deliveries or a full delivery queue.
    pub dropped: AtomicU64,
}

impl SchedulerStats {
    /// Failed probes of `reason` so far.
    pub fn failed(&self, reason: FailureReason) -> u64 {
        self.failed[reason_index(reason)].load(Relaxed)
    }

    fn record(&self, result: &Result<ProbeResult, NotProbed>) {
        match result {
            Ok(result) => {
                self.probes.fetch_add(1, Relaxed);
                if result.ok {
                    self.ok.fetch_add(1, Relaxed);
                    if let Some(reason) = result.failure_reason {
                        self.warnings[reason_index(reason)].fetch_add(1, Relaxed);
                    }
                } else {
                    // A failed result without a reason would fail validation; count it
                    // as a timeout rather than lose it.
                    let reason = result.failure_reason.unwrap_or(FailureReason::Timeout);
                    self.failed[reason_index(reason)].fetch_add(1, Relaxed);
                }
            }
            Err(_) => {
                self.not_probed.fetch_add(1, Relaxed);
            }
        }
    }
}

fn reason_index(reason: FailureReason) -> usize {
    FailureReason::ALL
        .iter()
        .position(|r| *r == reason)
        .expect("ALL lists every reason")
}

impl MetricsSource for SchedulerStats {
    fn render(&self, out: &mut PromWriter) {
        out.counter(
            "mcpulse_prober_probes_total",
            "Probes run to a result.",
            &[],
            self.probes.load(Relaxed),
        );
        out.counter(
            "mcpulse_prober_ok_total",
            "Probes that succeeded (possibly with a warning).",
            &[],
            self.ok.load(Relaxed),
        );
        for (i, reason) in FailureReason::ALL.iter().enumerate() {
            let l = [("reason", reason.as_str())];
            let failed = self.failed[i].load(Relaxed);
            if failed > 0 {
                out.counter(
                    "mcpulse_prober_failed_total",
                    "Probes that failed, by failure_reason.",
                    &l,
                    failed,
                );
            }
            let warned = self.warnings[i].load(Relaxed);
            if warned > 0 {
                out.counter(
                    "mcpulse_prober_warnings_total",
                    "Successful probes with a warning, by failure_reason.",
                    &l,
                    warned,
                );
            }
        }
        out.counter(
            "mcpulse_prober_skipped_overlaps_total",
            "Probe slots skipped because the target's previous probe was still running.",
            &[],
            self.skipped_overlaps.load(Relaxed),
        );
        out.counter(
            "mcpulse_prober_not_probed_total",
            "Probes not run: the target is refused by the policy or its URL is invalid.",
            &[],
            self.not_probed.load(Relaxed),
        );
        out.counter(
            "mcpulse_prober_abandoned_total",
            "Probe tasks abandoned past their timeout.",
            &[],
            self.abandoned.load(Relaxed),
        );
        out.gauge(
            "mcpulse_prober_in_flight",
            "Probes running or waiting for a concurrency slot.",
            &[],
            self.in_flight.load(Relaxed) as f64,
        );
        out.counter(
            "mcpulse_prober_results_delivered_total",
            "Probe results the sink accepted.",
            &[],
            self.delivered.load(Relaxed),
        );
        out.counter(
            "mcpulse_prober_delivery_failures_total",
            "Batches of probe results the sink failed to deliver.",
            &[],
            self.delivery_failures.load(Relaxed),
        );
        out.counter(
            "mcpulse_prober_results_dropped_total",
            "Probe results dropped: failed deliveries or a full delivery queue.",
            &[],
            self.dropped.load(Relaxed),
        );
    }
}

/// The deterministic offset of a target's first probe within its interval (FNV-1a of
/// `tenant/server/region`), so many targets do not fire at once.
pub fn first_offset(target: &Target, region: &str, interval: Duration) -> Duration {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [&target.tenant, "/", &target.server, "/", region] {
        for b in part.as_bytes() {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let nanos = interval.as_nanos().max(1);
    Duration::from_nanos((u128::from(hash) % nanos) as u64)
}

/// One target under the scheduler.
struct Slot {
    target: Target,
    in_flight: AtomicBool,
    warned: AtomicBool,
}

/// Schedules probes of many targets.
pub struct Scheduler {
    prober: Arc<Prober>,
    sink: Arc<dyn ResultSink>,
    permits: Arc<Semaphore>,
    stats: Arc<SchedulerStats>,
}

impl Scheduler {
    pub fn new(prober: Arc<Prober>, sink: Arc<dyn ResultSink>, max_concurrency: usize) -> Self {
        Self::with_stats(
            prober,
            sink,
            max_concurrency,
            Arc::new(SchedulerStats::default()),
        )
    }

    /// A scheduler counting into `stats` (so counters survive a reload of the targets,
    /// which replaces the scheduler).
    pub fn with_stats(
        prober: Arc<Prober>,
        sink: Arc<dyn ResultSink>,
        max_concurrency: usize,
        stats: Arc<SchedulerStats>,
    ) -> Self {
        Self {
            prober,
            sink,
            permits: Arc::new(Semaphore::new(max_concurrency.max(1))),
            stats,
        }
    }

    /// The scheduler's counters (register them on `/metrics`).
    pub fn stats(&self) -> Arc<SchedulerStats> {
        self.stats.clone()
    }

    /// Probes every target once, at most `max_concurrency` at a time, and returns each
    /// target's index with its outcome (in completion order). Results are counted but
    /// not delivered to the sink.
    pub async fn run_once(
        &self,
        targets: Vec<Target>,
    ) -> Vec<(usize, Result<ProbeResult, NotProbed>)> {
        let mut tasks = JoinSet::new();
        let n = targets.len();
        for (i, target) in targets.into_iter().enumerate() {
            let slot = Arc::new(Slot {
                target,
                in_flight: AtomicBool::new(true),
                warned: AtomicBool::new(false),
            });
            let permits = self.permits.clone();
            let prober = self.prober.clone();
            let stats = self.stats.clone();
            stats.in_flight.fetch_add(1, Relaxed);
            tasks.spawn(async move { (i, probe_slot(&prober, &permits, &stats, &slot).await) });
        }
        let mut out = Vec::with_capacity(n);
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, Some(result))) = joined {
                out.push((i, result));
            }
        }
        out
    }

    /// Probes every target every `interval` until `shutdown` turns true (or its sender
    /// is dropped); then aborts the probes in flight and delivers what is buffered
    /// (bounded).
    pub async fn run(self, targets: Vec<Target>, mut shutdown: watch::Receiver<bool>) {
        let region = self.prober.settings().region.clone();
        let start = Instant::now();
        let slots: Vec<Arc<Slot>> = targets
            .into_iter()
            .map(|target| {
                Arc::new(Slot {
                    target,
                    in_flight: AtomicBool::new(false),
                    warned: AtomicBool::new(false),
                })
            })
            .collect();
        // Earliest due first: (Reverse(due), index).
        let mut due: BinaryHeap<(std::cmp::Reverse<Instant>, usize)> = slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let interval = s.target.interval.max(Duration::from_millis(1));
                (
                    std::cmp::Reverse(start + first_offset(&s.target, &region, interval)),
                    i,
                )
            })
            .collect();

        let (tx, rx) = mpsc::channel::<(String, ProbeResult)>(DELIVERY_QUEUE);
        let delivery = tokio::spawn(deliver_loop(rx, self.sink.clone(), self.stats.clone()));
        let mut tasks: JoinSet<()> = JoinSet::new();

        loop {
            if *shutdown.borrow() {
                break;
            }
            let next = due.peek().map(|(std::cmp::Reverse(at), _)| *at);
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = sleep_until_opt(next) => {
                    let Some((std::cmp::Reverse(at), i)) = due.pop() else { continue };
                    let slot = &slots[i];
                    let interval = slot.target.interval.max(Duration::from_millis(1));
                    let now = Instant::now();
                    let mut next_at = at + interval;
                    if next_at <= now {
                        // Fell behind (a stalled runtime): resume from now, not in a burst.
                        next_at = now + interval;
                    }
                    due.push((std::cmp::Reverse(next_at), i));
                    if slot.in_flight.swap(true, Relaxed) {
                        self.stats.skipped_overlaps.fetch_add(1, Relaxed);
                        continue;
                    }
                    self.stats.in_flight.fetch_add(1, Relaxed);
                    let (slot, prober, permits, stats, tx) = (
                        slot.clone(),
                        self.prober.clone(),
                        self.permits.clone(),
                        self.stats.clone(),
                        tx.clone(),
                    );
                    tasks.spawn(async move {
                        if let Some(Ok(result)) = probe_slot(&prober, &permits, &stats, &slot).await
                            && tx.try_send((slot.target.tenant.clone(), result)).is_err()
                        {
                            stats.dropped.fetch_add(1, Relaxed);
                        }
                    });
                }
            }
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        for slot in &slots {
            if slot.in_flight.swap(false, Relaxed) {
                self.stats.in_flight.fetch_sub(1, Relaxed);
            }
        }
        drop(tx);
        if tokio::time::timeout(SHUTDOWN_FLUSH, delivery)
            .await
            .is_err()
        {
            tracing::warn!("prober: undelivered probe results dropped at shutdown");
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Probes `slot` once holding a concurrency permit; counts the outcome, warns once per
/// target that is not probed, and clears the slot's in-flight flag. `None` when the
/// probe was abandoned past its timeout.
async fn probe_slot(
    prober: &Prober,
    permits: &Semaphore,
    stats: &SchedulerStats,
    slot: &Slot,
) -> Option<Result<ProbeResult, NotProbed>> {
    let outcome = {
        let _permit = permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let running = stats.running.fetch_add(1, Relaxed) + 1;
        stats.peak_running.fetch_max(running, Relaxed);
        let limit = slot.target.timeout + ABANDON_GRACE;
        let outcome = tokio::time::timeout(limit, prober.probe(&slot.target)).await;
        stats.running.fetch_sub(1, Relaxed);
        outcome
    };
    if slot.in_flight.swap(false, Relaxed) {
        stats.in_flight.fetch_sub(1, Relaxed);
    }
    let Ok(result) = outcome else {
        stats.abandoned.fetch_add(1, Relaxed);
        tracing::warn!(
            tenant = %slot.target.tenant,
            server = %slot.target.server,
            url = %redact_url(&slot.target.url),
            "prober: probe abandoned past its timeout"
        );
        return None;
    };
    stats.record(&result);
    if let Err(e) = &result
        && !slot.warned.swap(true, Relaxed)
    {
        tracing::warn!(
            tenant = %slot.target.tenant,
            server = %slot.target.server,
            url = %redact_url(&slot.target.url),
            reason = %e.reason,
            "prober: target not probed"
        );
    }
    Some(result)
}

/// Batches results per tenant (up to [`MAX_BATCH`] or [`BATCH_DELAY`]) and hands them to
/// the sink, a few batches at a time.
async fn deliver_loop(
    mut rx: mpsc::Receiver<(String, ProbeResult)>,
    sink: Arc<dyn ResultSink>,
    stats: Arc<SchedulerStats>,
) {
    let permits = Arc::new(Semaphore::new(DELIVERIES_IN_FLIGHT));
    let mut deliveries = JoinSet::new();
    // Per tenant: the results waiting and when the oldest arrived.
    let mut pending: HashMap<String, (Vec<ProbeResult>, Instant)> = HashMap::new();
    let mut open = true;
    while open || !pending.is_empty() {
        let oldest = pending.values().map(|(_, since)| *since).min();
        let flush_at = oldest.map(|t| t + BATCH_DELAY);
        let mut ready = Vec::new();
        tokio::select! {
            received = rx.recv(), if open => match received {
                Some((tenant, result)) => {
                    let entry = pending
                        .entry(tenant.clone())
                        .or_insert_with(|| (Vec::new(), Instant::now()));
                    entry.0.push(result);
                    if entry.0.len() >= MAX_BATCH {
                        ready.push(tenant);
                    }
                }
                None => {
                    open = false;
                    ready.extend(pending.keys().cloned());
                }
            },
            _ = sleep_until_opt(flush_at) => {
                let now = Instant::now();
                ready.extend(
                    pending
                        .iter()
                        .filter(|(_, (_, since))| *since + BATCH_DELAY <= now)
                        .map(|(tenant, _)| tenant.clone()),
                );
            }
            Some(_) = deliveries.join_next(), if !deliveries.is_empty() => {}
        }
        for tenant in ready {
            let Some((batch, _)) = pending.remove(&tenant) else {
                continue;
            };
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let (sink, stats) = (sink.clone(), stats.clone());
            deliveries.spawn(async move {
                let _permit = permit;
                let n = batch.len() as u64;
                match sink.deliver(&tenant, batch).await {
                    Ok(()) => {
                        stats.delivered.fetch_add(n, Relaxed);
                    }
                    Err(e) => {
                        stats.delivery_failures.fetch_add(1, Relaxed);
                        stats.dropped.fetch_add(n, Relaxed);
                        tracing::warn!(%tenant, results = n, error = %e, "prober: probe results dropped");
                    }
                }
            });
        }
    }
    while deliveries.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn target(tenant: &str, server: &str) -> Target {
        Target {
            tenant: tenant.into(),
            server: server.into(),
            url: url::Url::parse("http://127.0.0.1:1/mcp").unwrap(),
            transport: Default::default(),
            credential: None,
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn first_offsets_are_deterministic_and_spread() {
        let interval = Duration::from_secs(60);
        let a = first_offset(&target("acme", "a"), "eu", interval);
        assert_eq!(a, first_offset(&target("acme", "a"), "eu", interval));
        assert_ne!(a, first_offset(&target("acme", "a"), "us", interval));
        // 2,000 targets land in (nearly) every one of 60 one-second buckets, none crowded.
        let mut buckets = [0u32; 60];
        for i in 0..2000 {
            let offset = first_offset(&target("acme", &format!("s{i}")), "eu", interval);
            assert!(offset < interval);
            buckets[offset.as_secs() as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| n < 70), "{buckets:?}");
    }

    mod ingest_sink {
        use super::super::*;
        use crate::stats::IngestStats;
        use crate::{Backpressure, Edge, IngestConfig};
        use mcpulse_bus::Bus;
        use mcpulse_bus::embedded::{EmbeddedBus, EmbeddedConfig};
        use mcpulse_schemas::Topics;

        /// A sink over an embedded log whose backpressure the test controls.
        fn sink(dir: &std::path::Path, give_up_after: Duration) -> (IngestSink, Arc<IngestStats>) {
            let bus = EmbeddedBus::open(EmbeddedConfig::new(dir)).unwrap();
            let pressure = Backpressure::new(1 << 20, 10, Duration::from_millis(50));
            let stats = Arc::new(IngestStats::default());
            let edge = Edge::new(
                bus.producer(),
                IngestConfig::default(),
                pressure,
                stats.clone(),
            );
            let sink = IngestSink::new(ProbeIngest::new(edge, &Topics::default()))
                .with_give_up_after(give_up_after);
            (sink, stats)
        }

        fn result(server: &str) -> ProbeResult {
            let mut r = ProbeResult::new(server, "eu", chrono::Utc::now());
            r.ok = true;
            r
        }

        #[tokio::test]
        async fn one_invalid_result_does_not_take_its_batch_with_it() {
            let dir = tempfile::tempdir().unwrap();
            let (sink, stats) = sink(dir.path(), Duration::from_secs(1));
            let mut bad = result("bad");
            bad.ok = false; // a failed result must name its failure_reason
            let err = sink
                .deliver("acme", vec![result("a"), bad, result("b")])
                .await
                .unwrap_err();
            assert!(err.starts_with("1 of 3 results refused"), "{err}");
            assert_eq!(stats.probes_accepted.load(Relaxed), 2);
        }
    }

    #[test]
    fn stats_render() {
        let stats = SchedulerStats::default();
        stats.failed[reason_index(FailureReason::Timeout)].fetch_add(2, Relaxed);
        stats.skipped_overlaps.fetch_add(1, Relaxed);
        let mut out = PromWriter::default();
        stats.render(&mut out);
        let text = out.finish();
        assert!(
            text.contains("mcpulse_prober_failed_total{reason=\"timeout\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("mcpulse_prober_skipped_overlaps_total 1"),
            "{text}"
        );
        assert_eq!(stats.failed(FailureReason::Timeout), 2);
    }
}

//! Benchmark of the incident pipeline (issue 6): 1 million probe results across 50,000
//! servers and 500 tenants, with a provider storm and scattered failures, through the
//! verdict stage and the incident stage — each a checkpointed [`StatefulOperator`] as in
//! production, flushed (output written, state checkpointed to disk) once per minute of
//! event time — on one thread.
//!
//! Prints probe results/s per core of pipeline CPU time, the same figure for a baseline
//! measured in the same run (decoding every probe result from JSON, the one thing the
//! pipeline cannot skip) and their ratio; the processing time per decided event (the
//! incident stage's time on the input that decided it plus its share of the flush that
//! wrote it) at p50/p99/max; events by action; peak RSS.
//!
//! ```sh
//! cargo run --release --bin bench-incidents [-- --probes 1000000 --servers 50000 --tenants 500 --regions 2]
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use clap::Parser;
use mcpulse_bus::{BusError, Delivery, Header, Message, Producer, Record, TopicPartition};
use mcpulse_processors::Operator;
use mcpulse_processors::archive::{ArchiveConfig, ArchiveTarget};
use mcpulse_processors::incidents::fleet::FleetView;
use mcpulse_processors::incidents::{
    IncidentContext, IncidentLogic, IncidentMetrics, IncidentsConfig, VerdictContext, VerdictLogic,
    VerdictMetrics,
};
use mcpulse_processors::stateful::{FindingsOutput, PartitionLogic, StatefulOperator};
use mcpulse_processors::stats::RuntimeStats;
use mcpulse_schemas::{AlertEvent, FailureReason, ProbeResult, Table};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;

#[path = "bench_support/mod.rs"]
mod bench_support;
use bench_support::{peak_rss_mb, process_cpu, thread_cpu};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PROBES: &str = "mcpulse.probes.v1";
const FINDINGS: &str = "mcpulse.findings.v1";

#[derive(Parser)]
struct Args {
    /// Probe results in all.
    #[arg(long, default_value_t = 1_000_000)]
    probes: usize,
    #[arg(long, default_value_t = 50_000)]
    servers: usize,
    #[arg(long, default_value_t = 500)]
    tenants: usize,
    /// Regions probing every server each minute.
    #[arg(long, default_value_t = 2)]
    regions: usize,
}

/// An in-memory topic the next stage reads from.
#[derive(Default)]
struct Topic(std::sync::Mutex<Vec<Message>>);

#[async_trait]
impl Producer for Topic {
    async fn send(&self, _topic: &str, messages: Vec<Message>) -> Result<Vec<Delivery>, BusError> {
        let mut log = self.0.lock().unwrap();
        let first = log.len() as u64;
        let n = messages.len();
        log.extend(messages);
        Ok((0..n as u64)
            .map(|i| Delivery {
                partition: 0,
                offset: first + i,
            })
            .collect())
    }
}

/// Counts `alerts.v1` events by action.
#[derive(Default)]
struct Alerts {
    by_action: std::sync::Mutex<BTreeMap<String, u64>>,
    total: AtomicU64,
}

#[async_trait]
impl Producer for Alerts {
    async fn send(&self, _topic: &str, messages: Vec<Message>) -> Result<Vec<Delivery>, BusError> {
        let mut by = self.by_action.lock().unwrap();
        for m in &messages {
            let e: AlertEvent = serde_json::from_slice(&m.value).expect("alert events");
            let key = if e.class == "storm" {
                format!("storm {}", e.action.as_str())
            } else {
                e.action.as_str().to_string()
            };
            *by.entry(key).or_default() += 1;
        }
        self.total.fetch_add(messages.len() as u64, Relaxed);
        Ok(messages
            .iter()
            .map(|_| Delivery {
                partition: 0,
                offset: 0,
            })
            .collect())
    }
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap()
}

/// Server `j`: its tenant, URL, and whether (and how) it fails at `minute`.
struct Fleet {
    servers: usize,
    tenants: usize,
}

impl Fleet {
    fn tenant(&self, j: usize) -> usize {
        j % self.tenants
    }

    /// 20% of each tenant's servers on render, 20% on fly.io, the rest self-hosted.
    fn url(&self, j: usize) -> String {
        match (j / self.tenants) % 10 {
            0 | 1 => format!("https://s{j}.onrender.com/mcp"),
            2 | 3 => format!("https://s{j}.fly.dev/mcp"),
            _ => format!("https://mcp.s{j}.example{}.com/mcp", j % 97),
        }
    }

    fn failure(&self, j: usize, minute: usize) -> Option<FailureReason> {
        // The storm: render-hosted servers of 30% of the tenants, minutes 2..7.
        let on_render = (j / self.tenants) % 10 < 2;
        if on_render && self.tenant(j) * 10 < self.tenants * 3 && (2..7).contains(&minute) {
            return Some(FailureReason::TcpRefused);
        }
        // Scattered failures: 1 server in 200, for 4 minutes from a server-chosen minute.
        if j % 200 == 7 && (j / 200 % 5..j / 200 % 5 + 4).contains(&minute) {
            return Some(FailureReason::Http5xx);
        }
        None
    }

    /// One minute of probe results as log records, in time order.
    fn minute(&self, minute: usize, regions: usize, first_offset: u64) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.servers * regions);
        for j in 0..self.servers {
            for r in 0..regions {
                let second = ((j * 7 + r * 13) % 60) as i64;
                let t = start() + chrono::Duration::seconds(minute as i64 * 60 + second);
                let mut p = ProbeResult::new(format!("srv{j}"), format!("region-{r}"), t);
                p.url = Some(self.url(j));
                match self.failure(j, minute) {
                    Some(reason) => p.failure_reason = Some(reason),
                    None => {
                        p.ok = true;
                        p.total_ms = Some(80.0);
                    }
                }
                out.push((t, self.tenant(j), serde_json::to_vec(&p).unwrap()));
            }
        }
        out.sort_by_key(|(t, _, _)| *t);
        out.into_iter()
            .enumerate()
            .map(|(i, (_, tenant, value))| Record {
                topic: PROBES.into(),
                partition: 0,
                offset: first_offset + i as u64,
                key: None,
                value: Bytes::from(value),
                headers: vec![Header::new("mcpulse-tenant", format!("tenant{tenant}"))],
                timestamp_ms: 0,
            })
            .collect()
    }
}

fn operator<L: PartitionLogic>(
    name: &'static str,
    context: L::Context,
    target: &ArchiveTarget,
    out: Arc<dyn Producer>,
) -> StatefulOperator<L> {
    StatefulOperator::new(
        name,
        context,
        Table::Alerts,
        target.clone(),
        ArchiveConfig::default(),
        FindingsOutput {
            producer: out,
            topic: FINDINGS.into(),
            alerts_topic: "mcpulse.alerts.v1".into(),
        },
        Arc::new(RuntimeStats::default()),
    )
    .with_flush_interval(Duration::ZERO)
}

fn main() {
    let args = Args::parse();
    let minutes = args.probes.div_ceil(args.servers * args.regions);
    let fleet = Fleet {
        servers: args.servers,
        tenants: args.tenants,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    std::fs::create_dir_all(&root).unwrap();
    let target = ArchiveTarget {
        store: Arc::new(LocalFileSystem::new()),
        root: ObjectPath::from(root.to_string_lossy().trim_start_matches('/')),
        local_root: Some(root.clone()),
    };
    let config = IncidentsConfig::default();
    let findings = Arc::new(Topic::default());
    let alerts = Arc::new(Alerts::default());
    let incident_metrics = Arc::new(IncidentMetrics::default());
    let active = Arc::new(FleetView::new(60));
    let mut verdict = operator::<VerdictLogic>(
        "verdict",
        VerdictContext {
            settings: config.verdict(),
            fleet: active.clone(),
            metrics: Arc::new(VerdictMetrics::default()),
        },
        &target,
        findings.clone(),
    );
    let mut incidents = operator::<IncidentLogic>(
        "incidents",
        IncidentContext {
            engine: config.engine(),
            settings: config.verdict(),
            metrics: incident_metrics.clone(),
            fleet: active,
        },
        &target,
        alerts.clone(),
    );
    let incidents_tp = TopicPartition::new(FINDINGS, 0);

    println!(
        "bench-incidents: {} probe results = {} servers x {} regions x {minutes} minutes, {} tenants",
        minutes * args.servers * args.regions,
        args.servers,
        args.regions,
        args.tenants
    );
    let mut probes = 0u64;
    let mut pipeline_cpu = Duration::ZERO;
    let mut baseline_cpu = Duration::ZERO;
    let mut offset = 0u64;
    let mut findings_read = 0usize;
    let mut per_event = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    let mut flush_times = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    // Wall time per part (one thread: wall ≈ CPU).
    let mut parts = [Duration::ZERO; 4];
    let wall = Instant::now();
    for minute in 0..minutes {
        let records = fleet.minute(minute, args.regions, offset);
        offset += records.len() as u64;
        probes += records.len() as u64;

        // Baseline: decoding each probe result, nothing else.
        let t = thread_cpu();
        let mut checksum = 0usize;
        for r in &records {
            let p: ProbeResult = serde_json::from_slice(&r.value).unwrap();
            checksum = checksum.wrapping_add(p.server.len() + usize::from(p.ok));
        }
        std::hint::black_box(checksum);
        baseline_cpu += thread_cpu() - t;

        let cpu = process_cpu();
        runtime.block_on(async {
            let t = Instant::now();
            for r in &records {
                verdict.process(r).await.unwrap();
            }
            parts[0] += t.elapsed();
            let t = Instant::now();
            verdict.flush(None, true).await.unwrap();
            parts[1] += t.elapsed();
            let t_incidents = Instant::now();
            // The incident stage takes what the verdict stage appended.
            let messages: Vec<Message> = findings.0.lock().unwrap()[findings_read..].to_vec();
            let mut decided: Vec<u64> = Vec::new();
            for m in messages {
                let record = Record {
                    topic: FINDINGS.into(),
                    partition: 0,
                    offset: findings_read as u64,
                    key: m.key,
                    value: m.value,
                    headers: m.headers,
                    timestamp_ms: 0,
                };
                findings_read += 1;
                let before = incidents
                    .logic(&incidents_tp)
                    .map_or(0, |l| l.pending_events());
                let t = Instant::now();
                incidents.process(&record).await.unwrap();
                let took = t.elapsed().as_nanos() as u64;
                let after = incidents
                    .logic(&incidents_tp)
                    .map_or(0, |l| l.pending_events());
                decided.extend(std::iter::repeat_n(took, after.saturating_sub(before)));
            }
            parts[2] += t_incidents.elapsed();
            let t = Instant::now();
            let before = alerts.total.load(Relaxed);
            incidents.flush(None, true).await.unwrap();
            parts[3] += t.elapsed();
            let flush = t.elapsed().as_nanos() as u64;
            flush_times.record(flush.max(1)).unwrap();
            let written = (alerts.total.load(Relaxed) - before).max(1);
            for took in decided {
                per_event.record((took + flush / written).max(1)).unwrap();
            }
        });
        pipeline_cpu += process_cpu() - cpu;
    }
    let wall = wall.elapsed();

    let rate = |n: u64, cpu: Duration| n as f64 / cpu.as_secs_f64();
    let pipeline_rate = rate(probes, pipeline_cpu);
    let baseline_rate = rate(probes, baseline_cpu);
    let us = |ns: u64| ns as f64 / 1000.0;
    println!(
        "pipeline (verdict + incident stages, checkpointed per minute): {:.0} probe results/s per core ({:.2} s CPU, {:.2} s wall incl. generation)",
        pipeline_rate,
        pipeline_cpu.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!(
        "baseline (JSON decode of each probe result only): {:.0} probe results/s per core",
        baseline_rate
    );
    println!(
        "ratio pipeline / baseline: {:.2} (target: >= 200,000 probe results/s per core)",
        pipeline_rate / baseline_rate
    );
    println!(
        "processing time per decided event: p50 {:.1} us, p99 {:.1} us, max {:.1} us over {} events (target p99 < 5 ms)",
        us(per_event.value_at_quantile(0.5)),
        us(per_event.value_at_quantile(0.99)),
        us(per_event.max()),
        per_event.len()
    );
    println!(
        "incident-stage flush (write alerts rows + events, checkpoint): p50 {:.1} ms, max {:.1} ms",
        flush_times.value_at_quantile(0.5) as f64 / 1e6,
        flush_times.max() as f64 / 1e6
    );
    println!(
        "time by part: verdict process {:.2} s, verdict flush (close minutes, write, checkpoint) {:.2} s, incident process {:.2} s, incident flush {:.2} s",
        parts[0].as_secs_f64(),
        parts[1].as_secs_f64(),
        parts[2].as_secs_f64(),
        parts[3].as_secs_f64()
    );
    let by = alerts.by_action.lock().unwrap();
    println!(
        "events: {}",
        by.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "verdict messages: {}; peak RSS {:.0} MB",
        findings_read,
        peak_rss_mb()
    );
    assert!(
        by.get("storm trigger").copied().unwrap_or(0) >= 1,
        "the storm was not detected"
    );
    assert_eq!(
        incident_metrics.redacted.load(Relaxed),
        0,
        "an event crossed a payload boundary"
    );
}

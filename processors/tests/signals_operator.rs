//! The golden-signals operator in its stateful shell, fed records directly: exact counts
//! and quantiles against a generated stream, merged minute rows against the raw
//! latencies (through the SQL functions), out-of-order and late spans, an idle
//! partition, a restart mid-window, and a crash between output and checkpoint replayed
//! without doubling a row or a finding.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use mcpulse_bus::{BusError, Delivery, Header, Message, Producer, Record, TopicPartition};
use mcpulse_processors::Operator;
use mcpulse_processors::archive::{ArchiveConfig, ArchiveTarget};
use mcpulse_processors::signals::{SignalsConfig, SignalsContext, SignalsLogic};
use mcpulse_processors::stateful::{FindingsOutput, StatefulOperator};
use mcpulse_processors::stats::RuntimeStats;
use mcpulse_queries::{QueryConfig, QueryEngine, Scope};
use mcpulse_schemas::{Finding, FindingKind, FindingStatus, Table, latency_hist};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;

const SPANS: &str = "mcpulse.spans.v1";
const PROBES: &str = "mcpulse.probes.v1";
const MINUTE_NS: u64 = 60_000_000_000;

/// Collects what the operator appends to `findings.v1`.
#[derive(Default)]
struct Collect(Mutex<Vec<Finding>>);

#[async_trait]
impl Producer for Collect {
    async fn send(&self, _topic: &str, messages: Vec<Message>) -> Result<Vec<Delivery>, BusError> {
        let mut all = self.0.lock().unwrap();
        for m in &messages {
            all.push(serde_json::from_slice(&m.value).unwrap());
        }
        Ok(messages
            .iter()
            .enumerate()
            .map(|(i, _)| Delivery {
                partition: 0,
                offset: i as u64,
            })
            .collect())
    }
}

/// One generated call.
#[derive(Clone, Debug)]
struct Call {
    service: &'static str,
    tool: Option<&'static str>,
    method: Option<&'static str>,
    start_ns: u64,
    latency_ns: u64,
    error: bool,
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn request(calls: &[Call]) -> Bytes {
    let mut by_service: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for (i, c) in calls.iter().enumerate() {
        let mut attributes = Vec::new();
        if let Some(tool) = c.tool {
            attributes.push(kv("gen_ai.tool.name", tool));
        }
        if let Some(method) = c.method {
            attributes.push(kv("mcp.method.name", method));
        }
        // Half the failures say so in the status, half in error.type.
        let (status, error_type) = match (c.error, i % 2) {
            (true, 0) => (
                Some(Status {
                    code: 2,
                    ..Default::default()
                }),
                None,
            ),
            (true, _) => (None, Some(kv("error.type", "tool_error"))),
            _ => (None, None),
        };
        attributes.extend(error_type);
        by_service.entry(c.service).or_default().push(Span {
            trace_id: vec![1; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: "tools/call".into(),
            start_time_unix_nano: c.start_ns,
            end_time_unix_nano: c.start_ns + c.latency_ns,
            attributes,
            status,
            ..Default::default()
        });
    }
    let req = ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", service)],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    Bytes::from(req.encode_to_vec())
}

fn record(topic: &str, offset: u64, tenant: &str, value: Bytes) -> Record {
    Record {
        topic: topic.into(),
        partition: 0,
        offset,
        key: None,
        value,
        headers: vec![Header::new("mcpulse-tenant", tenant.to_string())],
        timestamp_ms: 0,
    }
}

/// A small deterministic PRNG (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The first minute of the generated stream: half an hour ago, so no event time is
/// clamped as being in the future.
fn base_minute() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    (now / MINUTE_NS - 30) * MINUTE_NS
}

/// `per_minute` calls for each of 3 tools over `minutes` minutes, plus non-MCP spans.
fn generate(base: u64, minutes: u64, per_minute: u64, seed: u64) -> Vec<Call> {
    let mut rng = Rng(seed);
    let mut calls = Vec::new();
    for m in 0..minutes {
        for tool in ["forecast", "alerts", "search"] {
            for _ in 0..per_minute {
                // Latencies 1 ms .. ~2 s, skewed toward short ones.
                let r = rng.next() % 1000;
                let latency_ms = 1 + (r * r * r) / 500_000;
                let latency_ns = latency_ms * 1_000_000 + rng.next() % 1_000_000;
                // End times (the event time) inside minute m.
                let end = base + m * MINUTE_NS + rng.next() % (MINUTE_NS - 1);
                let start = end.saturating_sub(latency_ns);
                calls.push(Call {
                    service: "weather",
                    tool: Some(tool),
                    method: Some("tools/call"),
                    start_ns: start,
                    latency_ns: end - start,
                    error: rng.next() % 100 < 7,
                });
            }
        }
        // Internal spans of the server: not calls.
        calls.push(Call {
            service: "weather",
            tool: None,
            method: None,
            start_ns: base + m * MINUTE_NS + 5,
            latency_ns: 1_000,
            error: true,
        });
    }
    calls
}

struct Harness {
    dir: tempfile::TempDir,
    target: ArchiveTarget,
    findings: Arc<Collect>,
    config: SignalsConfig,
    next_offset: u64,
}

impl Harness {
    fn new(config: SignalsConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let target = common::target(dir.path());
        Self {
            dir,
            target,
            findings: Arc::new(Collect::default()),
            config,
            next_offset: 0,
        }
    }

    fn operator(&self) -> StatefulOperator<SignalsLogic> {
        let context =
            SignalsContext::new(self.config.clone(), SPANS.into(), PROBES.into()).unwrap();
        StatefulOperator::new(
            "signals",
            context,
            Table::Signals,
            self.target.clone(),
            ArchiveConfig::default(),
            FindingsOutput {
                producer: self.findings.clone(),
                topic: "mcpulse.findings.v1".into(),
                alerts_topic: "mcpulse.alerts.v1".into(),
            },
            Arc::new(RuntimeStats::default()),
        )
        .with_flush_interval(Duration::ZERO)
    }

    /// Feeds `calls` in requests of `batch` spans, in the given order.
    async fn feed(
        &mut self,
        op: &mut StatefulOperator<SignalsLogic>,
        calls: &[Call],
        batch: usize,
    ) {
        for chunk in calls.chunks(batch) {
            let r = record(SPANS, self.next_offset, "acme", request(chunk));
            op.process(&r).await.unwrap();
            self.next_offset += 1;
        }
    }

    async fn engine(&self) -> QueryEngine {
        let root =
            url::Url::from_directory_path(self.dir.path().join("archive").canonicalize().unwrap())
                .unwrap();
        let catalog = mcpulse_queries::ArchiveCatalog::new(
            root,
            Arc::new(object_store::local::LocalFileSystem::new()),
        );
        QueryEngine::new(catalog, QueryConfig::default())
    }

    async fn rows(&self, sql: &str) -> Vec<serde_json::Value> {
        let engine = self.engine().await;
        let result = engine.execute(&Scope::All, sql).await.unwrap();
        let bytes = mcpulse_queries::OutputFormat::Json
            .render(&result.schema, &result.batches)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }
}

fn sorted_by_end(mut calls: Vec<Call>) -> Vec<Call> {
    calls.sort_by_key(|c| c.start_ns + c.latency_ns);
    calls
}

/// (calls, errors) per (tool, minute).
type Counts = BTreeMap<(String, u64), (i64, i64)>;

/// Expected (calls, errors) per (tool, minute) and the raw latencies per tool.
fn expected(calls: &[Call], base: u64) -> (Counts, BTreeMap<String, Vec<u64>>) {
    let mut counts = BTreeMap::new();
    let mut latencies: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in calls {
        let Some(tool) = c.tool else { continue };
        let minute = (c.start_ns + c.latency_ns - base) / MINUTE_NS;
        let e = counts.entry((tool.to_string(), minute)).or_insert((0, 0));
        e.0 += 1;
        e.1 += i64::from(c.error);
        latencies
            .entry(tool.to_string())
            .or_default()
            .push(c.latency_ns / 1000);
    }
    (counts, latencies)
}

/// A call far enough ahead to close every generated minute.
fn closer(base: u64, minutes: u64) -> Call {
    Call {
        service: "weather",
        tool: Some("tick"),
        method: Some("tools/call"),
        start_ns: base + (minutes + 2) * MINUTE_NS,
        latency_ns: 1_000_000,
        error: false,
    }
}

async fn check_signals(h: &Harness, calls: &[Call], base: u64) {
    let (counts, latencies) = expected(calls, base);
    let rows = h
        .rows(
            "SELECT tool, CAST(time AS BIGINT) AS t, calls, errors, source, peak_in_flight FROM signals \
             WHERE tool <> 'tick' ORDER BY tool, t",
        )
        .await;
    let mut got = BTreeMap::new();
    for r in &rows {
        assert_eq!(r["source"], "spans");
        assert!(r["peak_in_flight"].as_i64().unwrap() >= 1);
        let minute = (r["t"].as_i64().unwrap() as u64 - base) / MINUTE_NS;
        let key = (r["tool"].as_str().unwrap().to_string(), minute);
        assert!(
            got.insert(
                key.clone(),
                (r["calls"].as_i64().unwrap(), r["errors"].as_i64().unwrap())
            )
            .is_none(),
            "two rows for {key:?}"
        );
    }
    assert_eq!(got, counts, "per (tool, minute) calls and errors");

    // Merged minute histograms give exactly the p99 of one histogram of the raw values,
    // and that is within HdrHistogram's precision of the exact sorted p99.
    let merged = h
        .rows(
            "SELECT tool, hdr_quantile(hdr_merge(latency_hist), 0.99) AS p99, \
             hdr_count(hdr_merge(latency_hist)) AS n FROM signals WHERE tool <> 'tick' GROUP BY tool ORDER BY tool",
        )
        .await;
    assert_eq!(merged.len(), 3);
    for row in merged {
        let tool = row["tool"].as_str().unwrap();
        let raw = &latencies[tool];
        let mut all = latency_hist::new_histogram();
        for us in raw {
            all.record((*us).max(1)).unwrap();
        }
        let p99 = row["p99"].as_f64().unwrap();
        assert_eq!(
            p99,
            latency_hist::quantile_ms(&all, 0.99).unwrap(),
            "{tool}"
        );
        assert_eq!(row["n"].as_u64().unwrap(), raw.len() as u64);
        let mut sorted = raw.clone();
        sorted.sort_unstable();
        let exact = sorted[((sorted.len() as f64 * 0.99).ceil() as usize) - 1] as f64 / 1000.0;
        assert!(
            ((p99 - exact) / exact).abs() <= 0.01,
            "{tool}: p99 {p99} vs exact {exact}"
        );
    }
}

#[tokio::test]
async fn signals_match_the_generated_stream() {
    let base = base_minute();
    let calls = generate(base, 6, 150, 7);
    let mut h = Harness::new(SignalsConfig::default());
    let mut op = h.operator();
    let mut stream = sorted_by_end(calls.clone());
    stream.push(closer(base, 6));
    h.feed(&mut op, &stream, 40).await;
    let commits = op.flush(None, true).await.unwrap();
    assert_eq!(
        commits,
        vec![(TopicPartition::new(SPANS, 0), h.next_offset)]
    );
    check_signals(&h, &calls, base).await;
}

#[tokio::test]
async fn out_of_order_spans_within_the_lateness_count_and_late_ones_do_not() {
    let base = base_minute();
    let calls = generate(base, 4, 80, 11);
    let mut h = Harness::new(SignalsConfig::default());
    let mut op = h.operator();
    // Shuffle within 20 s: every span arrives within the 30 s lateness.
    let mut rng = Rng(3);
    let mut stream: Vec<(u64, Call)> = calls
        .iter()
        .map(|c| {
            (
                c.start_ns + c.latency_ns + rng.next() % 20_000_000_000,
                c.clone(),
            )
        })
        .collect();
    stream.sort_by_key(|(k, _)| *k);
    let mut stream: Vec<Call> = stream.into_iter().map(|(_, c)| c).collect();
    stream.push(closer(base, 4));
    h.feed(&mut op, &stream, 25).await;
    op.flush(None, true).await.unwrap();
    // A span of minute 0 arriving now is late: not counted.
    let late = Call {
        start_ns: base + 1_000,
        ..calls[0].clone()
    };
    h.feed(&mut op, &[late], 1).await;
    let mut stream = vec![closer(base, 10)];
    stream[0].tool = Some("tick");
    h.feed(&mut op, &stream, 1).await;
    op.flush(None, true).await.unwrap();
    check_signals(&h, &calls, base).await;
}

#[tokio::test]
async fn a_restart_mid_window_neither_loses_nor_doubles() {
    let base = base_minute();
    let calls = sorted_by_end(generate(base, 5, 100, 23));
    let mut h = Harness::new(SignalsConfig::default());
    let half = calls.len() / 2;
    {
        let mut op = h.operator();
        h.feed(&mut op, &calls[..half], 30).await;
        // Shutdown: flush what is closed, checkpoint the open windows, commit.
        op.flush(None, true).await.unwrap();
    }
    // A new instance (after a restart or a rebalance) continues from the checkpoint. The
    // committed offset may lag the checkpoint: replaying already-covered records from 0
    // must not double them.
    let mut op = h.operator();
    let resume_at = h.next_offset;
    h.next_offset = 0;
    let mut replay = calls[..half].to_vec();
    // Same chunking as the first run, so offsets match.
    let replayed = replay.chunks(30).count() as u64;
    h.feed(&mut op, &replay, 30).await;
    assert_eq!(h.next_offset, replayed);
    assert_eq!(h.next_offset, resume_at);
    replay = calls[half..].to_vec();
    replay.push(closer(base, 5));
    h.feed(&mut op, &replay, 30).await;
    op.flush(None, true).await.unwrap();
    check_signals(&h, &calls, base).await;
}

#[tokio::test]
async fn an_idle_partition_closes_its_windows_by_the_clock() {
    let base = base_minute();
    let calls = sorted_by_end(generate(base, 2, 20, 5));
    let config = SignalsConfig {
        idle_timeout: Duration::from_millis(200),
        ..SignalsConfig::default()
    };
    let mut h = Harness::new(config);
    let mut op = h.operator();
    h.feed(&mut op, &calls, 50).await;
    op.flush(None, false).await.unwrap();
    // The last minute is still open: no later event time closes it...
    let before = h.rows("SELECT count(*) AS n FROM signals").await;
    let closed_rows = before[0]["n"].as_i64().unwrap();
    assert!(
        closed_rows <= 3,
        "minute 1 is still open: {closed_rows} rows"
    );
    // ...until the partition has been idle for idle_timeout.
    tokio::time::sleep(Duration::from_millis(300)).await;
    op.flush(None, false).await.unwrap();
    check_signals(&h, &calls, base).await;
}

#[tokio::test]
async fn rules_fire_once_from_closed_windows() {
    let base = base_minute() - 10 * MINUTE_NS;
    let mut calls = Vec::new();
    // 8 minutes of `forecast` failing 50% of 20 calls a minute, then 3 healthy minutes.
    for m in 0..11u64 {
        for i in 0..20u64 {
            calls.push(Call {
                service: "weather",
                tool: Some("forecast"),
                method: Some("tools/call"),
                start_ns: base + m * MINUTE_NS + i * 1_000_000_000,
                latency_ns: 5_000_000,
                error: m < 8 && i % 2 == 0,
            });
        }
    }
    let mut h = Harness::new(SignalsConfig::default());
    let mut op = h.operator();
    let mut stream = calls.clone();
    stream.push(closer(base, 11));
    // Flush after every minute's worth, as the runtime would.
    for chunk in stream.chunks(20) {
        h.feed(&mut op, chunk, 20).await;
        op.flush(None, false).await.unwrap();
    }
    op.flush(None, true).await.unwrap();
    let findings = h.findings.0.lock().unwrap().clone();
    let errors: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::ErrorRateElevated)
        .collect();
    assert_eq!(errors.len(), 2, "{findings:#?}");
    assert_eq!(errors[0].status, FindingStatus::Firing);
    assert_eq!(errors[0].tool.as_deref(), Some("forecast"));
    assert_eq!(errors[0].tenant, "acme");
    assert_eq!(
        errors[0].window_start.timestamp_nanos_opt().unwrap() as u64,
        base,
        "fires after 5 minutes, over minutes 0..5"
    );
    assert_eq!(errors[1].status, FindingStatus::Resolved);
}

/// Crash between output and checkpoint, replayed by a fresh instance from the old
/// checkpoint: the same objects (same names) and findings with the same ids.
#[tokio::test]
async fn a_replayed_flush_rewrites_the_same_objects() {
    let base = base_minute();
    let calls = sorted_by_end(generate(base, 3, 50, 31));
    let mut stream = calls.clone();
    stream.push(closer(base, 3));
    let mut h = Harness::new(SignalsConfig::default());
    let mut op = h.operator();
    h.feed(&mut op, &stream, 25).await;
    op.flush(None, true).await.unwrap();
    let files = list(&h.target, "signals");
    assert!(!files.is_empty());
    // Simulate the crash: put back the pending record and the previous (empty)
    // checkpoint, as if the checkpoint write after the output never happened.
    let state = h.dir.path().join("archive/_state/signals").join(SPANS);
    std::fs::remove_file(state.join("0.checkpoint.json")).unwrap();
    std::fs::write(
        state.join("0.pending.json"),
        serde_json::json!({"seq": 0, "last_offset": h.next_offset - 1, "watermark_ns": (base + 5 * MINUTE_NS - 30_000_000_000) as i64}).to_string(),
    )
    .unwrap();
    let mut op = h.operator();
    h.next_offset = 0;
    h.feed(&mut op, &stream, 25).await;
    op.flush(None, true).await.unwrap();
    assert_eq!(
        list(&h.target, "signals"),
        files,
        "the replay wrote the same objects"
    );
    check_signals(&h, &calls, base).await;
}

fn list(target: &ArchiveTarget, table: &str) -> Vec<String> {
    let root = target.local_root.as_ref().unwrap().join(table);
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(&root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

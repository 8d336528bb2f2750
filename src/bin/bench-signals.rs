//! Benchmark of the golden-signals operator alone: 10 million spans across 10,000
//! (server, tool) keys, fed as OTLP requests straight into the operator (no log), with
//! windows closed, `signals` rows written and state checkpointed once per minute of
//! event time, as in production.
//!
//! Prints spans/s per core of operator CPU time (the requests are generated outside the
//! measured time), the same figure for a baseline measured in the same run — decoding
//! every request with prost and reading the same fields, with no aggregation at all —
//! and their ratio, the peak RSS, and the open state at the end (series, windows).
//!
//! ```sh
//! cargo run --release --bin bench-signals [-- --spans 10000000 --servers 1000 --tools 10 --live 1]
//! ```
//!
//! `--live 1` (the default, as `mcpulse run` does) also feeds the live golden signals of
//! `/metrics` ([`mcpulse_processors::live`]); `--live 0` leaves them out, to see what
//! they cost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use mcpulse_bus::{BusError, Delivery, Header, Message, Producer, Record, TopicPartition};
use mcpulse_processors::Operator;
use mcpulse_processors::archive::{ArchiveConfig, ArchiveTarget};
use mcpulse_processors::live::{LiveMetricsConfig, LiveSignals};
use mcpulse_processors::signals::{SignalsConfig, SignalsContext, SignalsLogic};
use mcpulse_processors::stateful::{FindingsOutput, StatefulOperator};
use mcpulse_processors::stats::RuntimeStats;
use mcpulse_schemas::Table;
use mcpulse_schemas::metrics::{MetricsSource, PromWriter};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;

#[path = "bench_support/mod.rs"]
mod bench_support;
use bench_support::{peak_rss_mb, process_cpu, thread_cpu};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SPANS_TOPIC: &str = "mcpulse.spans.v1";
const MINUTE_NS: u64 = 60_000_000_000;
/// Spans of one tool in one request.
const SPANS_PER_TOOL: usize = 10;

struct Args {
    spans: u64,
    servers: usize,
    tools: usize,
    live: bool,
}

fn args() -> Args {
    let mut out = Args {
        spans: 10_000_000,
        servers: 1000,
        tools: 10,
        live: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        let n: u64 = value
            .parse()
            .unwrap_or_else(|_| panic!("{flag}: expected a number, got {value:?}"));
        match flag.as_str() {
            "--spans" => out.spans = n,
            "--servers" => out.servers = n as usize,
            "--tools" => out.tools = n as usize,
            "--live" => out.live = n != 0,
            other => panic!("unknown flag {other} (--spans, --servers, --tools, --live)"),
        }
    }
    out
}

/// Drops findings (the bench measures the operator, not the log).
struct Discard;

#[async_trait]
impl Producer for Discard {
    async fn send(&self, _topic: &str, messages: Vec<Message>) -> Result<Vec<Delivery>, BusError> {
        Ok(messages
            .iter()
            .map(|_| Delivery {
                partition: 0,
                offset: 0,
            })
            .collect())
    }
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

/// One request per server: `tools` × [`SPANS_PER_TOOL`] realistic MCP call spans ending
/// inside `minute`.
fn minute_requests(minute: u64, servers: usize, tools: usize, seed: &mut u64) -> Vec<Bytes> {
    let mut next = move || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let tool_names: Vec<String> = (0..tools).map(|t| format!("tool_{t}")).collect();
    (0..servers)
        .map(|s| {
            let mut spans = Vec::with_capacity(tools * SPANS_PER_TOOL);
            for tool in &tool_names {
                for _ in 0..SPANS_PER_TOOL {
                    let r = next();
                    let latency_ns = 1_000_000 + (r % 200) * (r % 200) * 25_000;
                    let end = minute * MINUTE_NS + next() % (MINUTE_NS - 1);
                    let error = r % 100 < 3;
                    spans.push(Span {
                        trace_id: next().to_le_bytes().repeat(2),
                        span_id: next().to_le_bytes().to_vec(),
                        parent_span_id: next().to_le_bytes().to_vec(),
                        name: format!("tools/call {tool}"),
                        kind: 2,
                        start_time_unix_nano: end - latency_ns,
                        end_time_unix_nano: end,
                        attributes: vec![
                            kv("mcp.method.name", "tools/call"),
                            kv("gen_ai.tool.name", tool),
                            kv("gen_ai.operation.name", "execute_tool"),
                            kv("mcp.session.id", "3f2a9c1e-session"),
                            kv("mcp.protocol.version", "2025-11-25"),
                            kv("jsonrpc.request.id", "42"),
                            kv("network.transport", "tcp"),
                            kv("server.address", "mcp.example.com"),
                        ],
                        status: error.then(|| Status {
                            code: 2,
                            message: "tool failed".into(),
                        }),
                        ..Default::default()
                    });
                }
            }
            let req = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![
                            kv("service.name", &format!("server-{s:04}")),
                            kv("service.version", "1.4.2"),
                            kv("telemetry.sdk.language", "python"),
                            kv("telemetry.sdk.name", "opentelemetry"),
                            kv("telemetry.sdk.version", "1.45.1"),
                            kv("host.name", "worker-7"),
                        ],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            Bytes::from(req.encode_to_vec())
        })
        .collect()
}

/// The baseline: a full prost decode of each request, reading the same fields, no
/// aggregation. Returns spans seen.
fn baseline(requests: &[Bytes]) -> u64 {
    let mut n = 0u64;
    let mut checksum = 0u64;
    for bytes in requests {
        let req = ExportTraceServiceRequest::decode(bytes.as_ref()).expect("valid");
        for rs in &req.resource_spans {
            let server = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .map(|a| a.key.len())
                .unwrap_or(0);
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    let tool = span
                        .attributes
                        .iter()
                        .find(|a| a.key == "gen_ai.tool.name")
                        .map(|a| a.key.len())
                        .unwrap_or(0);
                    let error = span.status.as_ref().is_some_and(|s| s.code == 2);
                    checksum = checksum
                        .wrapping_add(span.end_time_unix_nano - span.start_time_unix_nano)
                        .wrapping_add((server + tool) as u64 + u64::from(error));
                    n += 1;
                }
            }
        }
    }
    std::hint::black_box(checksum);
    n
}

fn main() {
    let args = args();
    let spans_per_request = (args.tools * SPANS_PER_TOOL) as u64;
    let spans_per_round = spans_per_request * args.servers as u64;
    // Rounds of one request per server; 10 rounds per minute of event time.
    let rounds = args.spans.div_ceil(spans_per_round);
    let rounds_per_minute = 10u64;
    let minutes = rounds.div_ceil(rounds_per_minute);
    let now_minute = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64)
        / MINUTE_NS;
    let first_minute = now_minute - minutes - 5;
    println!(
        "signals operator: {} spans = {rounds} rounds x {} servers x {} tools x {SPANS_PER_TOOL} spans, {} keys, over {minutes} minutes of event time; live /metrics series {}",
        rounds * spans_per_round,
        args.servers,
        args.tools,
        args.servers * args.tools,
        if args.live { "on" } else { "off" },
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("archive");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let target = ArchiveTarget {
        store: Arc::new(LocalFileSystem::new()),
        root: ObjectPath::from(root.to_string_lossy().trim_start_matches('/')),
        local_root: Some(root),
    };
    let config = SignalsConfig {
        max_series_per_tenant: args.servers * args.tools + 10,
        ..SignalsConfig::default()
    };
    let context = SignalsContext::new(config, SPANS_TOPIC.into(), "mcpulse.probes.v1".into())
        .expect("valid config");
    let live = args.live.then(|| {
        Arc::new(LiveSignals::new(&LiveMetricsConfig {
            max_series: args.servers * args.tools + 10,
            ..LiveMetricsConfig::default()
        }))
    });
    let context = match &live {
        Some(live) => context.with_live(live.clone()),
        None => context,
    };
    let metrics = context.metrics.clone();
    let stats = Arc::new(RuntimeStats::default());
    let mut operator = StatefulOperator::<SignalsLogic>::new(
        "signals",
        context,
        Table::Signals,
        target,
        ArchiveConfig::default(),
        FindingsOutput {
            producer: Arc::new(Discard),
            topic: "mcpulse.findings.v1".into(),
            alerts_topic: "mcpulse.alerts.v1".into(),
        },
        stats.clone(),
    )
    .with_flush_interval(Duration::ZERO);
    let tp = TopicPartition::new(SPANS_TOPIC, 0);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut offset = 0u64;
    let mut operator_cpu = Duration::ZERO;
    let mut baseline_cpu = Duration::ZERO;
    let mut baseline_spans = 0u64;
    let mut spans = 0u64;
    let wall = Instant::now();
    let headers = vec![Header::new("mcpulse-tenant", "bench")];
    for m in 0..minutes {
        let requests = minute_requests(first_minute + m, args.servers, args.tools, &mut seed);
        // The baseline on this minute's requests, once.
        let t = thread_cpu();
        baseline_spans += baseline(&requests);
        baseline_cpu += thread_cpu() - t;

        let cpu_before = process_cpu();
        for _ in 0..rounds_per_minute {
            if spans >= rounds * spans_per_round {
                break;
            }
            for value in &requests {
                let record = Record {
                    topic: SPANS_TOPIC.into(),
                    partition: 0,
                    offset,
                    key: None,
                    value: value.clone(),
                    headers: headers.clone(),
                    timestamp_ms: 0,
                };
                runtime
                    .block_on(operator.process(&record))
                    .expect("process");
                offset += 1;
                spans += spans_per_request;
            }
        }
        // One flush per minute of event time: closes the previous minute, writes its
        // rows, checkpoints the open windows.
        runtime
            .block_on(operator.flush(Some(std::slice::from_ref(&tp)), false))
            .expect("flush");
        operator_cpu += process_cpu() - cpu_before;
    }
    // The last windows.
    let cpu_before = process_cpu();
    runtime
        .block_on(operator.flush(None, true))
        .expect("final flush");
    operator_cpu += process_cpu() - cpu_before;
    let wall = wall.elapsed();

    let logic = operator.logic(&tp).expect("partition loaded");
    let per_core = spans as f64 / operator_cpu.as_secs_f64();
    let baseline_per_core = baseline_spans as f64 / baseline_cpu.as_secs_f64();
    println!(
        "operator: {spans} spans in {:.2} s CPU -> {:.2} M spans/s per core (target >= 1.00 M)",
        operator_cpu.as_secs_f64(),
        per_core / 1e6
    );
    println!(
        "baseline (prost decode + same fields, no aggregation): {:.2} M spans/s per core",
        baseline_per_core / 1e6
    );
    println!(
        "ratio operator / baseline: {:.2}x",
        per_core / baseline_per_core
    );
    println!(
        "rows written: {}, files: {}, windows closed: {}, late: {}, overflow: {}",
        stats
            .rows_written
            .load(std::sync::atomic::Ordering::Relaxed),
        stats
            .files_written
            .load(std::sync::atomic::Ordering::Relaxed),
        metrics
            .windows_closed
            .load(std::sync::atomic::Ordering::Relaxed),
        metrics.late.load(std::sync::atomic::Ordering::Relaxed),
        metrics.overflow.load(std::sync::atomic::Ordering::Relaxed),
    );
    println!(
        "open at the end: {} series, {} windows; peak RSS {:.0} MB; wall {:.1} s (including request generation and the baseline)",
        logic.series_count(),
        logic.open_windows(),
        peak_rss_mb(),
        wall.as_secs_f64()
    );
    if let Some(live) = live {
        let started = Instant::now();
        let mut out = PromWriter::default();
        live.render(&mut out);
        let text = out.finish();
        println!(
            "/metrics render of the live series: {} lines, {:.1} MB in {:.0} ms",
            text.lines().count(),
            text.len() as f64 / 1e6,
            started.elapsed().as_secs_f64() * 1e3
        );
    }
}

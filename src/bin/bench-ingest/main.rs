//! Ingest benchmark, in two modes.
//!
//! **Embedded** (default): pushes OTLP spans through the full path (OTLP protobuf decode
//! and validation → embedded log with fsync → archiver → Parquet files) and, in the same
//! run, writes the same spans straight to Parquet with the parquet crate (the physical
//! limit of this path). Prints spans/s per core (spans per CPU-second of the process),
//! wall throughput, their ratio and peak RSS.
//!
//! ```sh
//! cargo run --release --bin bench-ingest -- [--spans 1000000] [--batch 1000] [--flush-mb N]
//! ```
//!
//! **Kafka** (`--kafka-tansu` or `--kafka HOST:PORT`): in one run, against one broker,
//! 1. *pipeline*: the same in-process `TraceIngest` path producing through
//!    `mcpulse_bus::kafka::KafkaBus` → Kafka → the span archiver runtime (a consumer-group
//!    member built by `mcpulse::roles::archiver_runtime`, as `mcpulse process` runs it) →
//!    Parquet, timed until every span is in Parquet and its offset committed;
//! 2. *raw*: plain rdkafka producing the very same messages (same OTLP bytes, key and
//!    headers; same producer settings) with a `BaseProducer`, then reading them all back
//!    with a `BaseConsumer`;
//!
//! and prints both rates (spans/s; raw also messages/s), pipeline / raw (target ≥ 50 %),
//! peak RSS, and checks that every span was archived and every raw message read back.
//!
//! ```sh
//! # start a tansu broker (in-memory storage, free loopback port) from
//! # $MCPULSE_TANSU or ~/.cache/mcpulse/tools/bin/tansu (scripts/test-deps.sh installs it)
//! cargo run --release --bin bench-ingest -- --kafka-tansu
//! # the same with another tansu binary (implies --kafka-tansu)
//! cargo run --release --bin bench-ingest -- --tansu /path/to/tansu
//! # a broker that is already running
//! cargo run --release --bin bench-ingest -- --kafka 127.0.0.1:9092
//! ```
//!
//! Kafka-mode defaults: 1,000,000 spans in requests of 500 spans (2000 messages of about
//! 170 KB), 4 partitions, 4 concurrent ingest requests; `--spans`, `--batch`,
//! `--partitions`, `--concurrency` change them. Against tansu the whole run takes about
//! 25 s on 2 cores. Smaller loads understate the pipeline: its time includes the
//! archive's `flush_interval` (2 s) before the last, partial Parquet files are written,
//! which the output shows separately. `--timeout-secs` bounds each phase (default 120).
//!
//! Both sides use the same librdkafka settings (printed): the raw clients copy what
//! `bus/src/kafka/client_config.rs` sets, then `--option` (every client, the pipeline's
//! `bus.options`), `--producer-option` and `--consumer-option` (`bus.producer_options`,
//! `bus.consumer_options`). With tansu both producers send one record per batch
//! (`batch.num.messages=1`: tansu 0.6 mishandles fetches inside multi-record batches);
//! `--batch-num-messages N` sets it explicitly (against `--kafka` it is left at
//! librdkafka's default unless given).
//!
//! tansu 0.6 answers every Fetch only after the consumer's whole `fetch.wait.max.ms`
//! (mcpulse sets 100 ms) with at most 5 MiB, so on tansu both sides consume at about
//! 50 MB/s and the figures measure that pacing; `--consumer-option fetch.wait.max.ms=1`
//! (for both) takes it away and shows the pipeline's own limit. `--progress` prints the
//! pipeline's counters every 250 ms (stalls show as flat lines); `--archivers N` runs N
//! span archiver runtimes in the group (`mcpulse process` runs one).

mod embedded;
mod kafka;
mod tansu;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::Event};

/// Distinct requests generated up front; they are sent round-robin until `--spans` is reached.
pub const TEMPLATES: usize = 100;
/// Services the requests come from (request `i` is from service `i % SERVICES`).
pub const SERVICES: usize = 8;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ingest benchmark: embedded log (default) or Kafka (pipeline vs raw rdkafka).
#[derive(Parser, Debug)]
#[command(name = "bench-ingest")]
pub struct Args {
    /// Spans to send [default: 1000000].
    #[arg(long)]
    pub spans: Option<usize>,
    /// Spans per OTLP request [default: 1000 embedded, 500 Kafka].
    #[arg(long)]
    pub batch: Option<usize>,
    /// archive.flush_bytes in MiB (default: the configuration default).
    #[arg(long, value_name = "MIB")]
    pub flush_mb: Option<usize>,
    /// Kafka mode against a running broker.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["kafka_tansu", "tansu"])]
    pub kafka: Option<String>,
    /// Kafka mode against a tansu broker the benchmark starts (in-memory storage, free
    /// loopback port) and kills at the end; binary from --tansu, else $MCPULSE_TANSU, else
    /// ~/.cache/mcpulse/tools/bin/tansu.
    #[arg(long)]
    pub kafka_tansu: bool,
    /// The tansu binary (implies --kafka-tansu).
    #[arg(long, value_name = "PATH")]
    pub tansu: Option<PathBuf>,
    /// librdkafka batch.num.messages of both the pipeline's and the raw producer
    /// [default: 1 with tansu, librdkafka's default with --kafka].
    #[arg(long, value_name = "N")]
    pub batch_num_messages: Option<u32>,
    /// Kafka mode: an extra librdkafka property for every client of both phases (the
    /// pipeline's `bus.options`), e.g. `--option debug=fetch`; repeatable.
    #[arg(long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// Kafka mode: an extra librdkafka property for both producers (`bus.producer_options`);
    /// repeatable.
    #[arg(long = "producer-option", value_name = "KEY=VALUE")]
    pub producer_options: Vec<String>,
    /// Kafka mode: an extra librdkafka property for both consumers (`bus.consumer_options`),
    /// e.g. `--consumer-option fetch.wait.max.ms=10`; repeatable.
    #[arg(long = "consumer-option", value_name = "KEY=VALUE")]
    pub consumer_options: Vec<String>,
    /// Kafka mode: partitions of the benchmark's topics.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Kafka mode: span archiver runtimes in the pipeline's consumer group (`mcpulse
    /// process` runs one); they share the partitions.
    #[arg(long, default_value_t = 1)]
    pub archivers: usize,
    /// Kafka mode: print the pipeline's progress every 250 ms.
    #[arg(long)]
    pub progress: bool,
    /// Concurrent ingest requests.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Kafka mode: longest each phase may take before the run fails.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

fn main() -> anyhow::Result<()> {
    mcpulse::alloc::tune();
    let mut args = Args::parse();
    anyhow::ensure!(
        args.concurrency > 0 && args.archivers > 0,
        "--concurrency and --archivers must be positive"
    );
    if args.tansu.is_some() {
        args.kafka_tansu = true;
    }
    if args.kafka.is_some() || args.kafka_tansu {
        kafka::run(&args)
    } else {
        embedded::run(
            args.spans.unwrap_or(1_000_000),
            args.batch.unwrap_or(1_000),
            args.flush_mb,
            args.concurrency,
        )
    }
}

/// How many requests of `batch` spans cover `spans`.
pub fn requests_for(spans: usize, batch: usize) -> anyhow::Result<usize> {
    anyhow::ensure!(
        spans > 0 && batch > 0,
        "--spans and --batch must be positive"
    );
    Ok(spans.div_ceil(batch))
}

/// One OTLP request of `batch` MCP tool-call spans from service `i % SERVICES`.
pub fn request(i: usize, batch: usize) -> ExportTraceServiceRequest {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64;
    let s = |k: &str, v: String| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v)),
        }),
        ..Default::default()
    };
    let spans = (0..batch)
        .map(|j| {
            let n = (i * batch + j) as u64;
            let start = now - 60_000_000_000 + n * 1_000;
            let tool = format!("tool_{}", j % 12);
            let error = j % 20 == 0;
            Span {
                trace_id: [n.to_be_bytes(), (i as u64 + 1).to_be_bytes()].concat(),
                span_id: (n + 1).to_be_bytes().to_vec(),
                parent_span_id: if j % 4 == 0 {
                    Vec::new()
                } else {
                    (n).to_be_bytes().to_vec()
                },
                name: format!("tools/call {tool}"),
                kind: 2,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 1_000_000 + (j as u64 % 97) * 100_000,
                attributes: vec![
                    s("mcp.method.name", "tools/call".into()),
                    s("gen_ai.tool.name", tool),
                    s("mcp.session.id", format!("session-{}", j % 50)),
                    s("mcp.protocol.version", "2025-06-18".into()),
                    s("jsonrpc.request.id", j.to_string()),
                    s("network.transport", "tcp".into()),
                    s("gen_ai.operation.name", "execute_tool".into()),
                    s("client.address", "10.0.0.1".into()),
                ]
                .into_iter()
                .chain(error.then(|| s("error.type", "tool_error".into())))
                .collect(),
                events: if error {
                    vec![Event {
                        time_unix_nano: start + 500,
                        name: "exception".into(),
                        attributes: vec![s("exception.message", "boom".into())],
                        dropped_attributes_count: 0,
                    }]
                } else {
                    Vec::new()
                },
                status: Some(Status {
                    message: if error { "boom".into() } else { String::new() },
                    code: if error { 2 } else { 0 },
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", service_name(i)),
                    s("service.version", "1.4.2".into()),
                    s("telemetry.sdk.language", "python".into()),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "mcp.server".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The `service.name` of request `i`.
pub fn service_name(i: usize) -> String {
    format!("mcp-server-{}", i % SERVICES)
}

/// User + system CPU time of the whole process.
pub fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Peak resident set size (VmHWM) in MB of this process (`pid` `None`) or another one.
pub fn peak_rss_mb(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Resets this process's peak RSS to its current RSS (Linux ≥ 4.0), so the next
/// [`peak_rss_mb`] covers only what follows; `false` when the kernel refused.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

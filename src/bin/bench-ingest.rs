//! Ingest benchmark: pushes OTLP spans through the full path (OTLP protobuf decode and
//! validation → embedded log with fsync → archiver → Parquet files) and, in the same run,
//! writes the same spans straight to Parquet with the parquet crate (the physical limit
//! of this path). Prints spans/s per core (spans per CPU-second of the process), wall
//! throughput, their ratio and peak RSS.
//!
//! `cargo run --release --bin bench-ingest -- [--spans 1000000] [--batch 1000]`

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mcpulse::Config;
use mcpulse::archive_store::ArchiveLocation;
use mcpulse_ingest::stats::IngestStats;
use mcpulse_ingest::{Backpressure, Edge, TraceIngest};
use mcpulse_processors::archive::{PartitionedRows, SpansFormat};
use mcpulse_processors::stats::RuntimeStats;
use mcpulse_schemas::Table;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span::Event};
use prost::Message;

/// Distinct requests generated up front; they are sent round-robin until `--spans` is reached.
const TEMPLATES: usize = 100;
const SERVICES: usize = 8;
const CONCURRENCY: usize = 4;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    mcpulse::alloc::tune();
    let mut spans = 1_000_000usize;
    let mut batch = 1_000usize;
    let mut flush_mb: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--spans" => {
                spans = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--spans N"))?
            }
            "--batch" => {
                batch = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--batch N"))?
            }
            "--flush-mb" => {
                flush_mb = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| anyhow::anyhow!("--flush-mb N"))?,
                )
            }
            other => {
                anyhow::bail!("unknown argument {other:?} (use --spans N --batch N --flush-mb N)")
            }
        }
    }
    let requests = spans.div_ceil(batch);
    let templates: Vec<Bytes> = (0..TEMPLATES.min(requests))
        .map(|i| Bytes::from(request(i, batch).encode_to_vec()))
        .collect();
    let template_mb = templates.iter().map(Bytes::len).sum::<usize>() as f64 / 1e6;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "bench-ingest: {} spans in {requests} OTLP requests of {batch} spans ({} distinct requests, {template_mb:.1} MB), {cores} cores",
        requests * batch,
        templates.len()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let full = rt.block_on(full_path(&templates, requests, batch, flush_mb))?;
    let rss_full = peak_rss_mb();
    let direct = direct_parquet(&templates, requests)?;

    let total = (requests * batch) as f64;
    let per_core = |m: &Measure| total / m.cpu.as_secs_f64();
    let wall = |m: &Measure| total / m.wall.as_secs_f64();
    println!();
    println!(
        "{:<44} {:>14} {:>14} {:>10}",
        "path", "spans/s/core", "spans/s wall", "cpu s"
    );
    println!(
        "{:<44} {:>14.0} {:>14.0} {:>10.2}",
        "full (OTLP decode → log → archiver → Parquet)",
        per_core(&full),
        wall(&full),
        full.cpu.as_secs_f64()
    );
    println!(
        "{:<44} {:>14.0} {:>14.0} {:>10.2}",
        "direct (spans → Arrow → Parquet)",
        per_core(&direct),
        wall(&direct),
        direct.cpu.as_secs_f64()
    );
    println!();
    println!(
        "full path per core: {:.0} spans/s (target ≥ 250000)",
        per_core(&full)
    );
    println!(
        "full / direct per core: {:.1}% (target ≥ 40%)",
        100.0 * per_core(&full) / per_core(&direct)
    );
    println!("peak RSS during full path: {rss_full:.0} MB (target < 300)");
    Ok(())
}

struct Measure {
    cpu: Duration,
    wall: Duration,
}

async fn full_path(
    templates: &[Bytes],
    requests: usize,
    batch: usize,
    flush_mb: Option<usize>,
) -> anyhow::Result<Measure> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::embedded_default();
    config.data_dir = dir.path().to_path_buf();
    if let Some(mb) = flush_mb {
        config.archive.flush_bytes = mb << 20;
    }
    let bus = mcpulse::roles::open_bus(&config).await?;
    let archive = ArchiveLocation::open(&config)?;
    let stats = Arc::new(RuntimeStats::default());
    let runtime = mcpulse::roles::archiver_runtime(
        &config,
        &bus,
        &archive,
        SpansFormat,
        "bench-archive",
        config.topics.spans(),
        stats.clone(),
    )
    .await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let pressure = Backpressure::new(
        config.ingest.max_inflight_bytes,
        u64::MAX,
        config.ingest.retry_after,
    );
    let edge = Edge::new(
        bus.producer(),
        config.ingest.clone(),
        pressure,
        Arc::new(IngestStats::default()),
    );
    let ingest = TraceIngest::new(edge, &config.topics);

    let cpu0 = cpu_time();
    let start = Instant::now();
    let archiver_task = tokio::spawn(runtime.run(stopped));
    let mut senders = Vec::new();
    for worker in 0..CONCURRENCY {
        let ingest = ingest.clone();
        let templates = templates.to_vec();
        senders.push(tokio::spawn(async move {
            let mut i = worker;
            while i < requests {
                let outcome = ingest
                    .export_protobuf("bench", templates[i % templates.len()].clone())
                    .await?;
                anyhow::ensure!(outcome.rejected == 0, "spans rejected: {}", outcome.message);
                i += CONCURRENCY;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for s in senders {
        s.await??;
    }
    let acked = start.elapsed();
    let expected = (requests * batch) as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while stats.rows_written.load(Relaxed) < expected {
        anyhow::ensure!(Instant::now() < deadline, "archiver did not catch up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = start.elapsed();
    let cpu = cpu_time() - cpu0;
    println!(
        "full path: all requests acknowledged (durable in the log) after {:.2}s, all rows in Parquet after {:.2}s, {} files, {:.1} MB",
        acked.as_secs_f64(),
        wall.as_secs_f64(),
        stats.files_written.load(Relaxed),
        stats.bytes_written.load(Relaxed) as f64 / 1e6
    );
    let _ = stop.send(true);
    archiver_task.await??;
    bus.shutdown().await?;
    Ok(Measure { cpu, wall })
}

/// The same spans, decoded once outside the measurement, written straight to Parquet with
/// the archive's encoder (Arrow build, sort, zstd) into fsynced files.
fn direct_parquet(templates: &[Bytes], requests: usize) -> anyhow::Result<Measure> {
    let decoded: Vec<ExportTraceServiceRequest> = templates
        .iter()
        .map(|t| ExportTraceServiceRequest::decode(t.as_ref()))
        .collect::<Result<_, _>>()?;
    let dir = tempfile::tempdir()?;
    let config = Config::embedded_default();
    let encoder =
        mcpulse_processors::archive::ParquetEncoder::new(Table::Spans, config.archive.clone());
    let rows_per_file = config.archive.flush_rows;
    let cpu0 = cpu_time();
    let start = Instant::now();
    let mut rows = PartitionedRows::default();
    let mut files = 0;
    let mut flush = |rows: PartitionedRows<_>| -> anyhow::Result<()> {
        for (_, batch) in rows.finish()? {
            let bytes = encoder
                .encode(&batch, "bench")
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let path = dir.path().join(format!("{files}.parquet"));
            std::fs::write(&path, &bytes)?;
            std::fs::File::open(&path)?.sync_all()?;
            files += 1;
        }
        Ok(())
    };
    for i in 0..requests {
        SpansFormat.append_request("bench", &decoded[i % decoded.len()], &mut rows);
        if rows.rows() >= rows_per_file {
            flush(std::mem::take(&mut rows))?;
        }
    }
    flush(rows)?;
    Ok(Measure {
        cpu: cpu_time() - cpu0,
        wall: start.elapsed(),
    })
}

/// One OTLP request of `batch` MCP tool-call spans from service `i % SERVICES`.
fn request(i: usize, batch: usize) -> ExportTraceServiceRequest {
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
                    s("service.name", format!("mcp-server-{}", i % SERVICES)),
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

/// User + system CPU time of the whole process.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Peak resident set size (VmHWM) in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

//! Embedded mode: the full path on the embedded log vs Parquet written directly.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mcpulse::Config;
use mcpulse::archive_store::ArchiveLocation;
use mcpulse_ingest::stats::IngestStats;
use mcpulse_ingest::{Backpressure, Edge, TraceIngest};
use mcpulse_processors::archive::{PartitionedRows, SpansFormat};
use mcpulse_processors::stats::RuntimeStats;
use mcpulse_schemas::Table;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::{TEMPLATES, cpu_time, peak_rss_mb, request, requests_for};

/// The embedded-log benchmark (see the binary's documentation).
pub fn run(
    spans: usize,
    batch: usize,
    flush_mb: Option<usize>,
    concurrency: usize,
) -> anyhow::Result<()> {
    let requests = requests_for(spans, batch)?;
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
    let full = rt.block_on(full_path(
        &templates,
        requests,
        batch,
        flush_mb,
        concurrency,
    ))?;
    let rss_full = peak_rss_mb(None);
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
    concurrency: usize,
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
    for worker in 0..concurrency {
        let ingest = ingest.clone();
        let templates = templates.to_vec();
        senders.push(tokio::spawn(async move {
            let mut i = worker;
            while i < requests {
                let outcome = ingest
                    .export_protobuf("bench", templates[i % templates.len()].clone())
                    .await?;
                anyhow::ensure!(outcome.rejected == 0, "spans rejected: {}", outcome.message);
                i += concurrency;
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

//! The archiver on the real embedded log: rows land once, undecodable records go to the
//! dead-letter topic, and a replay after a crash between writing and committing rewrites
//! the same objects instead of doubling rows.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use common::{request, target};
use mcpulse_bus::embedded::{EmbeddedBus, EmbeddedConfig};
use mcpulse_bus::{Bus, ConsumerEvent, DynBus, Message, TopicSpec};
use mcpulse_processors::archive::{ArchiveConfig, Archiver, SpansFormat};
use mcpulse_processors::dlq::DeadLetters;
use mcpulse_processors::stats::RuntimeStats;
use mcpulse_processors::{Operator, Runtime, RuntimeConfig};
use mcpulse_schemas::topics::{HEADER_DLQ_ERROR, HEADER_DLQ_OFFSET, HEADER_TENANT};

const SPANS: &str = "t.spans.v1";
const DLQ: &str = "t.dlq.v1";

async fn open_bus(dir: &Path) -> DynBus {
    let bus = EmbeddedBus::open(EmbeddedConfig::new(dir.join("log"))).unwrap();
    bus.ensure_topics(&[
        TopicSpec {
            name: SPANS.into(),
            partitions: 1,
            replication: 1,
        },
        TopicSpec {
            name: DLQ.into(),
            partitions: 1,
            replication: 1,
        },
    ])
    .await
    .unwrap();
    bus
}

/// Every Parquet file under the archive with its row count.
fn parquet_files(dir: &Path) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("archive")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let file = std::fs::File::open(&path).unwrap();
                let reader =
                    parquet::file::serialized_reader::SerializedFileReader::new(file).unwrap();
                use parquet::file::reader::FileReader;
                let rows = reader.metadata().file_metadata().num_rows() as usize;
                out.push((
                    path.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                    rows,
                ));
            }
        }
    }
    out.sort();
    out
}

/// Polls `consumer` until it has read `n` records (failing after 20 s).
async fn read(consumer: &mut Box<dyn mcpulse_bus::Consumer>, n: usize) -> Vec<mcpulse_bus::Record> {
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while records.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of {n} records",
            records.len()
        );
        if let ConsumerEvent::Records(r) = consumer.poll(Duration::from_secs(2)).await.unwrap() {
            records.extend(r);
        }
    }
    records
}

/// The file names (without folders) of [`parquet_files`].
fn file_names(files: &[(String, usize)]) -> Vec<String> {
    files
        .iter()
        .map(|(p, _)| p.rsplit('/').next().unwrap().to_string())
        .collect()
}

fn message(value: Bytes, tenant: Option<&str>) -> Message {
    let m = Message::new(Some(Bytes::from_static(b"acme/svc")), value);
    match tenant {
        Some(t) => m.with_header(HEADER_TENANT, Bytes::copy_from_slice(t.as_bytes())),
        None => m,
    }
}

#[tokio::test]
async fn archives_once_and_dead_letters_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open_bus(dir.path()).await;
    bus.producer()
        .send(
            SPANS,
            vec![
                message(request(0, 10), Some("acme")),
                message(Bytes::from_static(b"\xff\x00 not protobuf"), Some("acme")),
                message(request(10, 5), None),
                message(request(15, 5), Some("acme")),
            ],
        )
        .await
        .unwrap();

    let stats = Arc::new(RuntimeStats::default());
    let config = ArchiveConfig {
        flush_interval: Duration::from_millis(50),
        ..ArchiveConfig::default()
    };
    let archiver = Archiver::new(SpansFormat, target(dir.path()), config, stats.clone());
    let consumer = bus.consumer("archive", &[SPANS.to_string()]).await.unwrap();
    let runtime = Runtime::new(
        consumer,
        Box::new(archiver),
        DeadLetters::new(bus.producer(), DLQ.into()),
        RuntimeConfig::default(),
        stats.clone(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runtime.run(stopped));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stats.rows_written.load(Relaxed) < 15 || stats.commits.load(Relaxed) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "archiver did not write 15 rows"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();

    assert_eq!(stats.rows_written.load(Relaxed), 15);
    assert_eq!(stats.dead_lettered.load(Relaxed), 2);
    let files = parquet_files(dir.path());
    assert_eq!(files.iter().map(|(_, n)| n).sum::<usize>(), 15, "{files:?}");
    assert!(
        files
            .iter()
            .all(|(p, _)| p.contains("spans/tenant=acme/date=")),
        "{files:?}"
    );

    // Both bad records are in the DLQ with their origin and reason.
    let mut dlq = bus.consumer("inspect", &[DLQ.to_string()]).await.unwrap();
    let seen = read(&mut dlq, 2).await;
    let offsets: Vec<_> = seen
        .iter()
        .map(|r| r.header(HEADER_DLQ_OFFSET).unwrap().clone())
        .collect();
    assert_eq!(
        offsets,
        vec![Bytes::from_static(b"1"), Bytes::from_static(b"2")]
    );
    let reason = String::from_utf8(seen[0].header(HEADER_DLQ_ERROR).unwrap().to_vec()).unwrap();
    assert!(reason.contains("ExportTraceServiceRequest"), "{reason}");
    let reason = String::from_utf8(seen[1].header(HEADER_DLQ_ERROR).unwrap().to_vec()).unwrap();
    assert!(reason.contains("tenant"), "{reason}");

    // Everything is committed: a new member of the group reads nothing.
    let status = bus.status("archive", &[SPANS.to_string()]).await.unwrap();
    assert_eq!(status.partitions[0].committed, Some(4));
}

/// A crash after writing a cut's objects but before committing: the replay, even with
/// other flush settings, cuts at the recorded offset and rewrites the same objects.
#[tokio::test]
async fn replay_after_crash_rewrites_the_same_objects() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open_bus(dir.path()).await;
    let messages: Vec<Message> = (0..6)
        .map(|i| message(request(i * 10, 10), Some("acme")))
        .collect();
    bus.producer().send(SPANS, messages).await.unwrap();

    // First run: flush by age after 4 records, then "crash" before committing.
    let stats = Arc::new(RuntimeStats::default());
    let mut first = Archiver::new(
        SpansFormat,
        target(dir.path()),
        ArchiveConfig::default(),
        stats.clone(),
    );
    let mut consumer = bus.consumer("archive", &[SPANS.to_string()]).await.unwrap();
    let records = read(&mut consumer, 6).await;
    for r in &records[..4] {
        first.process(r).await.unwrap();
    }
    let offsets = first.flush(None, true).await.unwrap();
    assert_eq!(offsets.len(), 1);
    assert_eq!(offsets[0].1, 4);
    drop(consumer); // no commit: the crash
    let after_crash = parquet_files(dir.path());
    assert_eq!(after_crash.len(), 1);
    assert!(
        after_crash[0]
            .0
            .ends_with("t.spans.v1-0-00000000000000000000-00000000000000000003.parquet")
    );

    // Replay with a different (size) setting that alone would cut after 3 records.
    let config = ArchiveConfig {
        flush_rows: 30,
        ..ArchiveConfig::default()
    };
    let mut second = Archiver::new(SpansFormat, target(dir.path()), config, stats);
    for r in &records {
        second.process(r).await.unwrap();
    }
    let offsets = second.flush(None, true).await.unwrap();
    assert_eq!(offsets[0].1, 6);
    let files = parquet_files(dir.path());
    assert_eq!(
        file_names(&files),
        vec![
            "t.spans.v1-0-00000000000000000000-00000000000000000003.parquet",
            "t.spans.v1-0-00000000000000000004-00000000000000000005.parquet",
        ]
    );
    assert_eq!(
        files.iter().map(|(_, n)| n).sum::<usize>(),
        60,
        "every span exactly once: {files:?}"
    );
}

/// A recorded cut that starts right after a dead-lettered record is still replayed exactly.
#[tokio::test]
async fn replay_keeps_the_cut_after_a_dead_lettered_first_record() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open_bus(dir.path()).await;
    let mut messages = vec![message(request(0, 10), None)]; // no tenant header: dead-lettered
    messages.extend((1..4).map(|i| message(request(i * 10, 10), Some("acme"))));
    bus.producer().send(SPANS, messages).await.unwrap();
    let mut consumer = bus.consumer("archive", &[SPANS.to_string()]).await.unwrap();
    let records = read(&mut consumer, 4).await;
    let stats = Arc::new(RuntimeStats::default());
    let run = |config: ArchiveConfig, upto: usize| {
        let mut archiver = Archiver::new(SpansFormat, target(dir.path()), config, stats.clone());
        let records = records[..upto].to_vec();
        async move {
            for r in &records {
                match archiver.process(r).await {
                    Ok(()) => {}
                    Err(mcpulse_processors::OperatorError::Decode(_)) => {
                        archiver.skip(&r.topic_partition(), r.offset)
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            archiver.flush(None, true).await.unwrap()
        }
    };
    // First run archives offsets 1..=2 (cut by the final flush) and dies before committing.
    assert_eq!(run(ArchiveConfig::default(), 3).await[0].1, 3);
    // The replay would cut after every record by size; it must end its first cut at 2.
    let offsets = run(
        ArchiveConfig {
            flush_rows: 5,
            ..ArchiveConfig::default()
        },
        4,
    )
    .await;
    assert_eq!(offsets[0].1, 4);
    let files = parquet_files(dir.path());
    assert_eq!(
        file_names(&files),
        vec![
            "t.spans.v1-0-00000000000000000001-00000000000000000002.parquet",
            "t.spans.v1-0-00000000000000000003-00000000000000000003.parquet",
        ]
    );
    assert_eq!(files.iter().map(|(_, n)| n).sum::<usize>(), 30, "{files:?}");
}

/// Runs an archiver with `config` over `messages` until every record is archived or
/// dead-lettered; returns the Parquet files and the dead-letter reasons.
async fn archive_all(
    config: ArchiveConfig,
    messages: Vec<Message>,
) -> (Vec<(String, usize)>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let bus = open_bus(dir.path()).await;
    let n = messages.len() as u64;
    bus.producer().send(SPANS, messages).await.unwrap();
    let stats = Arc::new(RuntimeStats::default());
    let config = ArchiveConfig {
        flush_interval: Duration::from_millis(50),
        ..config
    };
    let archiver = Archiver::new(SpansFormat, target(dir.path()), config, stats.clone());
    let consumer = bus.consumer("archive", &[SPANS.to_string()]).await.unwrap();
    let runtime = Runtime::new(
        consumer,
        Box::new(archiver),
        DeadLetters::new(bus.producer(), DLQ.into()),
        RuntimeConfig::default(),
        stats.clone(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runtime.run(stopped));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = bus.status("archive", &[SPANS.to_string()]).await.unwrap();
        if status.partitions[0].committed == Some(n) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "archiver did not commit {n} records: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap().unwrap();
    let dead = stats.dead_lettered.load(Relaxed) as usize;
    let reasons = if dead == 0 {
        Vec::new()
    } else {
        let mut dlq = bus.consumer("inspect", &[DLQ.to_string()]).await.unwrap();
        read(&mut dlq, dead)
            .await
            .iter()
            .map(|r| String::from_utf8(r.header(HEADER_DLQ_ERROR).unwrap().to_vec()).unwrap())
            .collect()
    };
    (parquet_files(dir.path()), reasons)
}

/// Rows per tenant folder of `files`.
fn rows_per_tenant(files: &[(String, usize)]) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for (path, rows) in files {
        let tenant = path
            .split('/')
            .find_map(|p| p.strip_prefix("tenant="))
            .unwrap()
            .to_string();
        *out.entry(tenant).or_default() += rows;
    }
    out
}

/// Records written by an outside producer (an OTel Collector's Kafka exporter) carry no
/// tenant header: they land under `archive.default_tenant`; an invalid header value is
/// still dead-lettered, never used as a folder name.
#[tokio::test]
async fn records_without_the_header_get_the_default_tenant() {
    let config = ArchiveConfig {
        default_tenant: Some("collector".into()),
        ..ArchiveConfig::default()
    };
    let (files, reasons) = archive_all(
        config,
        vec![
            message(request(0, 10), None),
            message(request(10, 5), Some("acme")),
            message(request(15, 3), Some("../escape")),
        ],
    )
    .await;
    assert_eq!(
        rows_per_tenant(&files),
        [("acme".to_string(), 5), ("collector".to_string(), 10)].into(),
        "{files:?}"
    );
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("mcpulse-tenant header is not a valid tenant id"),
        "{reasons:?}"
    );
}

/// With `archive.tenant_header` set, the tenant comes from that header (and the default
/// one is no longer consulted).
#[tokio::test]
async fn a_custom_tenant_header_names_the_tenant() {
    let config = ArchiveConfig {
        tenant_header: "x-tenant".into(),
        ..ArchiveConfig::default()
    };
    let custom = |value: Bytes, tenant: &str| {
        Message::new(Some(Bytes::from_static(b"k")), value)
            .with_header("x-tenant", Bytes::copy_from_slice(tenant.as_bytes()))
    };
    let (files, reasons) = archive_all(
        config,
        vec![
            custom(request(0, 4), "globex"),
            custom(request(4, 2), "initech"),
            // Only the standard header: no tenant under this configuration.
            message(request(6, 7), Some("acme")),
        ],
    )
    .await;
    assert_eq!(
        rows_per_tenant(&files),
        [("globex".to_string(), 4), ("initech".to_string(), 2)].into(),
        "{files:?}"
    );
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("missing x-tenant header"),
        "{reasons:?}"
    );
}

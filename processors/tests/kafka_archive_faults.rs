//! The span archiver on Kafka (librdkafka's mock cluster) through injected faults — commit
//! errors, fetch errors, partition leaders moving, a broker down — and a member crashing
//! without committing while two others take over: every span lands in the archive exactly
//! once.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{request, target};
use mcpulse_bus::conformance::keys_for_partitions;
use mcpulse_bus::kafka::mock::MockKafka;
use mcpulse_bus::{DynBus, Message, TopicSpec};
use mcpulse_processors::archive::{ArchiveConfig, Archiver, SpansFormat};
use mcpulse_processors::dlq::DeadLetters;
use mcpulse_processors::stats::RuntimeStats;
use mcpulse_processors::{Runtime, RuntimeConfig};
use mcpulse_schemas::topics::HEADER_TENANT;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const SPANS: &str = "faults.spans.v1";
const DLQ: &str = "faults.dlq.v1";
const GROUP: &str = "archive-spans";
const PARTITIONS: u32 = 4;
const ROUNDS: u64 = 60;
const SPANS_PER_MESSAGE: u64 = 5;

struct Member {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), mcpulse_processors::RuntimeError>>,
}

async fn member(bus: &DynBus, dir: &Path) -> Member {
    let stats = Arc::new(RuntimeStats::default());
    let config = ArchiveConfig {
        flush_interval: Duration::from_millis(200),
        flush_rows: 100,
        ..ArchiveConfig::default()
    };
    let archiver = Archiver::new(SpansFormat, target(dir), config, stats.clone());
    let consumer = bus.consumer(GROUP, &[SPANS.to_string()]).await.unwrap();
    let runtime = Runtime::new(
        consumer,
        Box::new(archiver),
        DeadLetters::new(bus.producer(), DLQ.into()),
        RuntimeConfig {
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            ..RuntimeConfig::default()
        },
        stats,
    );
    let (stop, stopped) = watch::channel(false);
    Member {
        stop,
        task: tokio::spawn(runtime.run(stopped)),
    }
}

/// Span ids of every row in the archive, with how often each appears.
fn archived_span_ids(dir: &Path) -> BTreeMap<String, usize> {
    use arrow::array::{Array, StringArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.join("archive")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let file = std::fs::File::open(&path).unwrap();
                let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .build()
                    .unwrap();
                for batch in reader {
                    let batch = batch.unwrap();
                    let ids = batch
                        .column_by_name("span_id")
                        .unwrap()
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .unwrap()
                        .clone();
                    for i in 0..ids.len() {
                        *out.entry(ids.value(i).to_string()).or_default() += 1;
                    }
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_through_faults_and_a_crash_exactly_once() {
    // Logs show on failure (the harness captures them otherwise).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,librdkafka=warn".into()),
        )
        .with_test_writer()
        .try_init();
    let mock = MockKafka::new(3);
    let bus = mock.bus().await;
    bus.ensure_topics(&[
        TopicSpec {
            name: SPANS.into(),
            partitions: PARTITIONS,
            replication: 3,
        },
        TopicSpec {
            name: DLQ.into(),
            partitions: 1,
            replication: 3,
        },
    ])
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_for_partitions(PARTITIONS);
    let cluster = mock.clone();

    let mut first = Some(member(&bus, dir.path()).await);
    let mut later = Vec::new();
    let mut crashed = None;
    let mut next_id = 0u64;
    for round in 0..ROUNDS {
        match round {
            10 => cluster.cluster().request_errors(
                RDKafkaApiKey::OffsetCommit,
                &[
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                ],
            ),
            15 => {
                for p in 0..PARTITIONS {
                    cluster
                        .cluster()
                        .partition_leader(SPANS, p as i32, Some((p % 3 + 1) as i32))
                        .unwrap();
                }
            }
            20 => cluster.cluster().request_errors(
                RDKafkaApiKey::Fetch,
                &[
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                ],
            ),
            // The first member dies without flushing or committing what it holds; two
            // new members share its partitions and replay from its last commits.
            30 => {
                let first = first.take().expect("first member");
                first.task.abort();
                crashed = Some(first.task.await);
                later.push(member(&bus, dir.path()).await);
                later.push(member(&bus, dir.path()).await);
            }
            // A broker dies and the controller moves its partitions' leadership.
            40 => {
                cluster.cluster().broker_down(2).unwrap();
                for p in 0..PARTITIONS {
                    let leader = if p % 2 == 0 { 1 } else { 3 };
                    cluster
                        .cluster()
                        .partition_leader(SPANS, p as i32, Some(leader))
                        .unwrap();
                }
            }
            44 => cluster.cluster().broker_up(2).unwrap(),
            _ => {}
        }
        let messages: Vec<Message> = keys
            .iter()
            .map(|key| {
                let value = request(next_id, SPANS_PER_MESSAGE);
                next_id += SPANS_PER_MESSAGE;
                Message::new(Some(key.clone()), value)
                    .with_header(HEADER_TENANT, Bytes::from_static(b"acme"))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match bus.producer().send(SPANS, messages.clone()).await {
                Ok(_) => break,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("send: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let crashed = crashed.expect("the first member was crashed");
    assert!(crashed.unwrap_err().is_cancelled());

    // Everything is committed by the two members that took over.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = bus.status(GROUP, &[SPANS.to_string()]).await.unwrap();
        if status.total_lag() == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "archivers never caught up: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for m in later {
        m.stop.send(true).unwrap();
        m.task.await.unwrap().expect("member drained cleanly");
    }
    let ids = archived_span_ids(dir.path());
    let duplicated: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "{} spans archived twice, e.g. {:?}",
        duplicated.len(),
        duplicated.first()
    );
    assert_eq!(ids.len() as u64, next_id, "spans lost");
    bus.shutdown().await.unwrap();
}

//! Fault injection on librdkafka's mock cluster: produce errors, leader changes, a broker
//! down and commit errors. Whatever happens, every acknowledged message is in the log
//! exactly once, in order per partition, and a group resumes exactly after its last
//! commit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mcpulse_bus::conformance::{keys_for_partitions, unique};
use mcpulse_bus::kafka::mock::MockKafka;
use mcpulse_bus::{ConsumerEvent, DynBus, Message, Offset, Record, TopicPartition, TopicSpec};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const PARTITIONS: u32 = 4;
const WAIT: Duration = Duration::from_secs(60);

async fn topic(bus: &DynBus, replication: u16) -> String {
    let name = unique("faults");
    bus.ensure_topics(&[TopicSpec {
        name: name.clone(),
        partitions: PARTITIONS,
        replication,
    }])
    .await
    .expect("ensure_topics");
    name
}

/// Reads every message of `topic` from the start with a fresh group.
async fn read_all(bus: &DynBus, topic: &str, expected: usize) -> Vec<Record> {
    let mut consumer = bus
        .consumer(&unique("reader"), &[topic.to_string()])
        .await
        .expect("join");
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    // Reads until `expected` arrived, then a little longer to catch duplicates.
    let mut quiet_until: Option<Instant> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} messages",
            out.len()
        );
        if let ConsumerEvent::Records(records) = consumer
            .poll(Duration::from_millis(100))
            .await
            .expect("poll")
        {
            out.extend(records);
        }
        if out.len() >= expected {
            let until =
                *quiet_until.get_or_insert_with(|| Instant::now() + Duration::from_millis(500));
            if Instant::now() >= until {
                break;
            }
        }
    }
    consumer.close().await.expect("close");
    out
}

/// Every value in `acked` appears exactly once in `records`, offsets are contiguous per
/// partition, and each key's values keep their send order.
fn assert_exactly_once(records: &[Record], acked: &BTreeSet<String>) {
    let mut seen = BTreeMap::new();
    for r in records {
        let value = String::from_utf8(r.value.to_vec()).expect("utf-8");
        *seen.entry(value).or_insert(0u32) += 1;
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicated messages: {duplicates:?}");
    let lost: Vec<_> = acked.iter().filter(|v| !seen.contains_key(*v)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    let mut per_partition: BTreeMap<u32, Vec<&Record>> = BTreeMap::new();
    for r in records {
        per_partition.entry(r.partition).or_default().push(r);
    }
    for (p, rs) in per_partition {
        let offsets: Vec<Offset> = rs.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as u64).collect::<Vec<_>>(),
            "partition {p} offsets"
        );
        // Values are `{key}#{seq}`: per key, sequence numbers only grow.
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for r in rs {
            let value = String::from_utf8_lossy(&r.value);
            let (key, seq) = value.rsplit_once('#').expect("key#seq");
            let seq: u64 = seq.parse().expect("seq");
            if let Some(prev) = last.insert(key.to_string(), seq) {
                assert!(seq > prev, "{key}: {seq} after {prev} in partition {p}");
            }
        }
    }
}

fn batch(keys: &[Bytes], round: u64, per_key: u64) -> Vec<Message> {
    let mut messages = Vec::new();
    for key in keys {
        for i in 0..per_key {
            let seq = round * per_key + i;
            let value = format!("{}#{seq}", String::from_utf8_lossy(key));
            messages.push(Message::new(Some(key.clone()), value.into_bytes()));
        }
    }
    messages
}

/// Retriable produce errors and partition leaders moving between brokers while messages
/// are produced: librdkafka retries, and the idempotent producer never writes one twice
/// or out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_errors_and_leader_changes_lose_and_duplicate_nothing() {
    let mock = MockKafka::new(3);
    let bus = mock.bus().await;
    let topic = topic(&bus, 3).await;
    let keys = keys_for_partitions(PARTITIONS);
    let producer = bus.producer();
    let mut acked = BTreeSet::new();
    for round in 0..40u64 {
        match round % 10 {
            2 => mock.cluster().request_errors(
                RDKafkaApiKey::Produce,
                &[
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                ],
            ),
            5 => {
                for p in 0..PARTITIONS {
                    let leader = ((round / 10 + p as u64) % 3 + 1) as i32;
                    mock.cluster()
                        .partition_leader(&topic, p as i32, Some(leader))
                        .expect("move leader");
                }
            }
            _ => {}
        }
        let messages = batch(&keys, round, 5);
        let values: Vec<String> = messages
            .iter()
            .map(|m| String::from_utf8_lossy(&m.value).into_owned())
            .collect();
        let deliveries = producer
            .send(&topic, messages)
            .await
            .expect("send through faults");
        assert_eq!(deliveries.len(), values.len());
        acked.extend(values);
    }
    let records = read_all(&bus, &topic, acked.len()).await;
    assert_eq!(records.len(), acked.len());
    assert_exactly_once(&records, &acked);
    bus.shutdown().await.expect("shutdown");
}

/// With the only broker down, sends fail with a *retryable* error within the delivery
/// timeout (ingest turns that into 503/UNAVAILABLE); once it is back, retried sends succeed
/// and every acknowledged message is there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_gives_retryable_errors_then_recovers() {
    let mock = MockKafka::new(1);
    let mut config = mock.config();
    config.delivery_timeout = Duration::from_secs(2);
    let bus = mock.bus_with(config).await;
    let topic = topic(&bus, 1).await;
    let keys = keys_for_partitions(PARTITIONS);
    let producer = bus.producer();
    let mut acked = BTreeSet::new();
    let mut failed = 0;
    for round in 0..12u64 {
        if round == 4 {
            mock.cluster().broker_down(1).expect("broker down");
        }
        let messages = batch(&keys, round, 5);
        let values: Vec<String> = messages
            .iter()
            .map(|m| String::from_utf8_lossy(&m.value).into_owned())
            .collect();
        // A client retries a refused request, as an OTLP exporter does.
        let deadline = Instant::now() + WAIT;
        loop {
            let started = Instant::now();
            match producer.send(&topic, messages.clone()).await {
                Ok(_) => {
                    acked.extend(values);
                    break;
                }
                Err(e) => {
                    eprintln!("failed after {:?}: {e}", started.elapsed());
                    assert!(e.is_retryable(), "broker outage must be retryable: {e}");
                    assert!(
                        started.elapsed() < Duration::from_secs(20),
                        "a send hung {:?} during the outage",
                        started.elapsed()
                    );
                    failed += 1;
                    if failed == 3 {
                        mock.cluster().broker_up(1).expect("broker up");
                    }
                    assert!(Instant::now() < deadline, "sends never recovered");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    assert!(failed > 0, "no send failed while the broker was down");
    // A retried batch may have been written before its report timed out; what matters is
    // that acknowledged batches are there once and that nothing was written twice by the
    // producer itself. Count per value: a value appears once, or (retried) at most as
    // many times as it was sent.
    let records = read_all(&bus, &topic, acked.len()).await;
    let present: BTreeSet<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(lost.is_empty(), "acknowledged messages lost: {lost:?}");
    bus.shutdown().await.expect("shutdown");
}

/// Commits refused by the coordinator come back as retryable errors and move nothing; a
/// retry commits, and a new member resumes exactly there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_errors_are_retryable_and_resume_is_exact() {
    let mock = MockKafka::new(3);
    let bus = mock.bus().await;
    let topic = topic(&bus, 3).await;
    let group = unique("commit-faults");
    let keys = keys_for_partitions(PARTITIONS);
    bus.producer()
        .send(&topic, batch(&keys, 0, 10))
        .await
        .expect("send");

    let mut consumer = bus
        .consumer(&group, std::slice::from_ref(&topic))
        .await
        .expect("join");
    let mut next: BTreeMap<TopicPartition, Offset> = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while next.values().sum::<u64>() < 40 {
        assert!(Instant::now() < deadline, "records never arrived");
        if let ConsumerEvent::Records(records) = consumer
            .poll(Duration::from_millis(100))
            .await
            .expect("poll")
        {
            for r in records {
                next.insert(r.topic_partition(), r.offset + 1);
            }
        }
    }
    // Commit half of each partition through injected coordinator errors.
    let half: Vec<(TopicPartition, Offset)> =
        next.iter().map(|(tp, o)| (tp.clone(), o / 2)).collect();
    mock.cluster().request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    let mut attempts = 0;
    loop {
        attempts += 1;
        match consumer.commit(&half).await {
            Ok(()) => break,
            Err(e) => {
                assert!(e.is_retryable(), "commit error must be retryable: {e}");
                assert!(attempts < 50, "commit never succeeded: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let status = bus
        .status(&group, std::slice::from_ref(&topic))
        .await
        .expect("status");
    for (tp, offset) in &half {
        let committed = status
            .partitions
            .iter()
            .find(|s| s.partition == tp.partition)
            .and_then(|s| s.committed);
        assert_eq!(committed, Some(*offset), "{tp}");
    }
    // Crash: drop without committing the rest.
    drop(consumer);

    let mut consumer = bus
        .consumer(&group, std::slice::from_ref(&topic))
        .await
        .expect("rejoin");
    let mut again: Vec<(TopicPartition, Offset)> = Vec::new();
    let expected: u64 = half.iter().map(|(tp, o)| next[tp] - o).sum();
    let deadline = Instant::now() + WAIT;
    while (again.len() as u64) < expected {
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} redelivered",
            again.len()
        );
        if let ConsumerEvent::Records(records) = consumer
            .poll(Duration::from_millis(100))
            .await
            .expect("poll")
        {
            again.extend(records.iter().map(|r| (r.topic_partition(), r.offset)));
        }
    }
    for (tp, offset) in &half {
        let offsets: Vec<Offset> = again
            .iter()
            .filter(|(t, _)| t == tp)
            .map(|(_, o)| *o)
            .collect();
        assert_eq!(
            offsets,
            (*offset..next[tp]).collect::<Vec<_>>(),
            "{tp} resumed at the commit"
        );
    }
    consumer.close().await.expect("close");
    bus.shutdown().await.expect("shutdown");
}

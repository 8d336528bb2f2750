//! Tests of the embedded log as a whole (module-level tests live beside the code).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::{ConsumerEvent, Delivery, Message, Record};

fn config(dir: &Path) -> EmbeddedConfig {
    EmbeddedConfig {
        default_partitions: 1,
        ..EmbeddedConfig::new(dir)
    }
}

fn msg(i: usize) -> Message {
    Message::new(None, format!("value-{i}").into_bytes())
}

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

/// Polls until `n` records arrived (panics after 5 s).
async fn read_n(consumer: &mut Box<dyn Consumer>, n: usize) -> Vec<Record> {
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while out.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} records arrived",
            out.len()
        );
        if let ConsumerEvent::Records(records) =
            consumer.poll(Duration::from_millis(100)).await.unwrap()
        {
            out.extend(records);
        }
    }
    out
}

fn last_segment(dir: &Path, topic: &str, partition: u32) -> PathBuf {
    let pdir = dir.join(topic).join(partition.to_string());
    let mut logs: Vec<PathBuf> = std::fs::read_dir(pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

#[tokio::test]
async fn torn_tail_is_cut_and_offsets_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let bus = EmbeddedBus::open(config(dir.path())).unwrap();
        let producer = bus.producer();
        for i in 0..10 {
            producer.send("t", vec![msg(i)]).await.unwrap();
        }
        // Dropped without shutdown, like a crash after the acknowledgements.
    }
    let segment = last_segment(dir.path(), "t", 0);
    let complete = std::fs::metadata(&segment).unwrap().len();
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&[0x17, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7])
        .unwrap(); // a torn frame
    drop(file);

    let bus = EmbeddedBus::open(config(dir.path())).unwrap();
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), complete);
    assert_eq!(bus.partition_info(&tp("t", 0)).unwrap().end_offset, 10);
    let delivery = bus.producer().send("t", vec![msg(10)]).await.unwrap();
    assert_eq!(
        delivery,
        vec![Delivery {
            partition: 0,
            offset: 10
        }]
    );
    let mut consumer = bus.consumer("g", &["t".to_string()]).await.unwrap();
    let records = read_n(&mut consumer, 11).await;
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..11).collect::<Vec<_>>());
    assert_eq!(&records[10].value[..], b"value-10");
}

#[tokio::test]
async fn record_cut_mid_frame_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let bus = EmbeddedBus::open(config(dir.path())).unwrap();
        let batch: Vec<Message> = (0..5).map(msg).collect();
        bus.producer().send("t", batch).await.unwrap();
    }
    let segment = last_segment(dir.path(), "t", 0);
    let len = std::fs::metadata(&segment).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let bus = EmbeddedBus::open(config(dir.path())).unwrap();
    assert_eq!(bus.partition_info(&tp("t", 0)).unwrap().end_offset, 4);
    assert_eq!(
        bus.producer().send("t", vec![msg(99)]).await.unwrap()[0].offset,
        4
    );
    let mut consumer = bus.consumer("g", &["t".to_string()]).await.unwrap();
    let records = read_n(&mut consumer, 5).await;
    let values: Vec<&[u8]> = records.iter().map(|r| &r.value[..]).collect();
    assert_eq!(
        values,
        vec![
            &b"value-0"[..],
            b"value-1",
            b"value-2",
            b"value-3",
            b"value-99"
        ]
    );
}

#[tokio::test]
async fn segments_roll_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedConfig {
        segment_bytes: 1024,
        ..config(dir.path())
    };
    {
        let bus = EmbeddedBus::open(cfg.clone()).unwrap();
        let producer = bus.producer();
        for i in 0..60 {
            producer
                .send("t", vec![Message::new(None, vec![i as u8; 200])])
                .await
                .unwrap();
        }
        let info = bus.partition_info(&tp("t", 0)).unwrap();
        assert_eq!(info.end_offset, 60);
        // 232-byte frames: a roll after every 5th record.
        assert_eq!(info.segments, 12);
        bus.shutdown().await.unwrap();
    }
    let pdir = dir.path().join("t").join("0");
    let indexes = std::fs::read_dir(&pdir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "index");
    assert_eq!(indexes.count(), 11);
    let bus = EmbeddedBus::open(cfg).unwrap();
    assert_eq!(
        bus.partition_info(&tp("t", 0)).unwrap(),
        PartitionInfo {
            start_offset: 0,
            end_offset: 60,
            segments: 12
        }
    );
    let mut consumer = bus.consumer("g", &["t".to_string()]).await.unwrap();
    let records = read_n(&mut consumer, 60).await;
    assert!(
        records
            .iter()
            .enumerate()
            .all(|(i, r)| r.offset == i as u64 && r.value[..] == [i as u8; 200])
    );
    // Resuming in the middle of a segment starts exactly there.
    consumer.resume(&tp("t", 0), 37).unwrap();
    let records = read_n(&mut consumer, 23).await;
    assert_eq!(records[0].offset, 37);
    assert_eq!(records.last().unwrap().offset, 59);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_gives_concurrent_senders_distinct_ordered_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(config(dir.path())).unwrap();
    let producer = bus.producer();
    let mut tasks = Vec::new();
    for task in 0..32 {
        let producer = Arc::clone(&producer);
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..25 {
                let batch = (0..4).map(|j| msg(task * 1000 + i * 10 + j)).collect();
                let deliveries = producer.send("t", batch).await.unwrap();
                offsets.extend(deliveries.iter().map(|d| d.offset));
            }
            offsets
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let offsets = task.await.unwrap();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "a sender's offsets go backwards"
        );
        assert!(
            offsets.chunks(4).all(|c| c[3] == c[0] + 3),
            "a send's messages are not contiguous"
        );
        all.extend(offsets);
    }
    all.sort_unstable();
    assert_eq!(all, (0..3200).collect::<Vec<u64>>());
    assert_eq!(bus.pending_bytes(), 0);
}

#[tokio::test]
async fn large_records_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(config(dir.path())).unwrap();
    let big: Vec<Message> = (0..6u8)
        .map(|i| Message::new(Some(Bytes::from(vec![i])), vec![i; 1 << 20]))
        .collect();
    bus.producer().send("big", big).await.unwrap();
    let mut consumer = bus.consumer("g", &["big".to_string()]).await.unwrap();
    let records = read_n(&mut consumer, 6).await;
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.value.len(), 1 << 20);
        assert!(r.value.iter().all(|&b| b == i as u8));
    }
}

#[tokio::test]
async fn retention_deletes_old_sealed_segments_and_moves_readers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedConfig {
        segment_bytes: 1024,
        retention: Duration::from_millis(50),
        ..config(dir.path())
    };
    let bus = EmbeddedBus::open(cfg).unwrap();
    let producer = bus.producer();
    for i in 0..20 {
        producer
            .send("t", vec![Message::new(None, vec![i as u8; 200])])
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    bus.enforce_retention().unwrap();
    let info = bus.partition_info(&tp("t", 0)).unwrap();
    // 232-byte frames, 1 KiB segments: the active one holds offsets 15..20.
    assert_eq!(
        info,
        PartitionInfo {
            start_offset: 15,
            end_offset: 20,
            segments: 1
        }
    );
    assert!(!dir.path().join("t/0/00000000000000000000.log").exists());
    producer.send("t", vec![msg(20)]).await.unwrap();
    let mut consumer = bus.consumer("g", &["t".to_string()]).await.unwrap();
    let records = read_n(&mut consumer, 6).await;
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(
        offsets,
        (15..21).collect::<Vec<_>>(),
        "a reader before the log start moves to it"
    );
}

#[tokio::test]
async fn pending_bytes_limit_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(EmbeddedConfig {
        max_pending_bytes: 1000,
        ..config(dir.path())
    })
    .unwrap();
    bus.inner.reserve_pending(5000).unwrap(); // alone: accepted even above the limit
    assert!(matches!(
        bus.inner.reserve_pending(1),
        Err(BusError::Saturated(_))
    ));
    assert!(matches!(bus.producer().send("t", vec![msg(0)]).await, Err(e) if e.is_retryable()));
    bus.inner.pending.fetch_sub(5000, Ordering::AcqRel);
    assert_eq!(
        bus.producer().send("t", vec![msg(0)]).await.unwrap()[0].offset,
        0
    );
}

#[tokio::test]
async fn directory_is_locked_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(config(dir.path())).unwrap();
    assert!(matches!(
        EmbeddedBus::open(config(dir.path())),
        Err(BusError::Unavailable(_))
    ));
    drop(bus);
    EmbeddedBus::open(config(dir.path())).unwrap();
}

#[tokio::test]
async fn shutdown_rejects_further_work() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(config(dir.path())).unwrap();
    let producer = bus.producer();
    producer.send("t", vec![msg(0)]).await.unwrap();
    let mut consumer = bus.consumer("g", &["t".to_string()]).await.unwrap();
    bus.shutdown().await.unwrap();
    bus.shutdown().await.unwrap();
    assert!(matches!(
        producer.send("t", vec![msg(1)]).await,
        Err(BusError::Closed)
    ));
    assert!(matches!(
        consumer.poll(Duration::from_millis(10)).await,
        Err(BusError::Closed)
    ));
    assert!(matches!(
        bus.consumer("g", &["t".to_string()]).await,
        Err(BusError::Closed)
    ));
}

#[tokio::test]
async fn unknown_topics_are_created_with_default_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmbeddedConfig {
        default_partitions: 3,
        ..EmbeddedConfig::new(dir.path())
    };
    {
        let bus = EmbeddedBus::open(cfg.clone()).unwrap();
        bus.producer().send("auto", vec![msg(0)]).await.unwrap();
        let _consumer = bus.consumer("g", &["auto2".to_string()]).await.unwrap();
        assert!(matches!(
            bus.status("g", &["missing".to_string()]).await,
            Err(BusError::UnknownTopic(t)) if t == "missing"
        ));
        assert!(matches!(
            bus.producer().send("bad/name", vec![msg(0)]).await,
            Err(BusError::Config(_))
        ));
    }
    let bus = EmbeddedBus::open(cfg).unwrap();
    assert_eq!(
        bus.topics(),
        BTreeMap::from([("auto".to_string(), 3), ("auto2".to_string(), 3)])
    );
}

#[tokio::test]
async fn idle_poll_waits_for_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let bus = EmbeddedBus::open(config(dir.path())).unwrap();
    let mut consumer = bus.consumer("g", &["t".to_string()]).await.unwrap();
    assert!(
        matches!(consumer.poll(Duration::from_millis(10)).await.unwrap(), ConsumerEvent::Assigned(p) if p == vec![tp("t", 0)])
    );
    let producer = bus.producer();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        producer.send("t", vec![msg(7)]).await.unwrap();
    });
    let started = std::time::Instant::now();
    let ConsumerEvent::Records(records) = consumer.poll(Duration::from_secs(5)).await.unwrap()
    else {
        panic!("expected records")
    };
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "poll did not wake on new data"
    );
    assert_eq!(&records[0].value[..], b"value-7");
    sender.await.unwrap();
}

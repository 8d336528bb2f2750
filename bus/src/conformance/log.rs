//! Checks of the log itself: partitioning, offsets, message contents, durability,
//! topic management.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use bytes::Bytes;

use super::support::*;
use crate::{BusError, DynBus, Header, Message, Offset, TopicSpec, partition_for_key};

/// Messages with the same key land in the partition `partition_for_key` gives (so Kafka
/// clients and the embedded log agree) and are read back in the order sent.
pub async fn keyed_partitioning<F, Fut>(make_bus: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynBus>,
{
    let bus = make_bus().await;
    let topic = create_topic(&bus, "keyed", 4).await;
    let keys: Vec<String> = (0..8).map(|k| format!("tenant-{k}/service")).collect();
    let mut messages = Vec::new();
    for round in 0..5 {
        for key in &keys {
            messages.push(Message::new(
                Some(Bytes::from(key.clone())),
                format!("{key}#{round}").into_bytes(),
            ));
        }
    }
    let deliveries = bus.producer().send(&topic, messages).await.expect("send");
    assert_eq!(deliveries.len(), 40);
    for (i, d) in deliveries.iter().enumerate() {
        let key = &keys[i % keys.len()];
        assert_eq!(
            d.partition,
            partition_for_key(key.as_bytes(), 4),
            "delivery of key {key} in the wrong partition"
        );
    }
    let used: BTreeSet<u32> = deliveries.iter().map(|d| d.partition).collect();
    assert!(
        used.len() >= 2,
        "8 keys all hashed to one partition: {used:?}"
    );

    let mut consumer = join(&bus, "keyed", &topic).await;
    let records = read_records(consumer.as_mut(), 40).await;
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &records {
        let key = String::from_utf8(r.key.clone().expect("key").to_vec()).expect("utf-8 key");
        assert_eq!(
            r.partition,
            partition_for_key(key.as_bytes(), 4),
            "record of key {key} read from the wrong partition"
        );
        per_key
            .entry(key)
            .or_default()
            .push(String::from_utf8(r.value.to_vec()).expect("utf-8 value"));
    }
    assert_eq!(per_key.len(), 8);
    for (key, values) in per_key {
        let expected: Vec<String> = (0..5).map(|round| format!("{key}#{round}")).collect();
        assert_eq!(values, expected, "messages of key {key} out of order");
    }
    finish(bus, vec![consumer]).await;
}

/// Offsets are contiguous per partition, start at 0, follow the send order, and are
/// read back in order.
pub async fn ordered_offsets<F, Fut>(make_bus: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynBus>,
{
    let bus = make_bus().await;
    let topic = create_topic(&bus, "ordered", 2).await;
    let keys = keys_for_partitions(2);
    let producer = bus.producer();
    let mut sent: BTreeMap<u32, Vec<(Offset, Bytes)>> = BTreeMap::new();
    for batch in 0..3 {
        let mut messages = Vec::new();
        for i in 0..5 {
            let p = usize::from(i % 5 >= 3); // 3 messages for partition 0, 2 for partition 1
            messages.push(Message::new(
                Some(keys[p].clone()),
                format!("b{batch}-m{i}").into_bytes(),
            ));
        }
        let values: Vec<Bytes> = messages.iter().map(|m| m.value.clone()).collect();
        let deliveries = producer.send(&topic, messages).await.expect("send");
        for (d, value) in deliveries.iter().zip(values) {
            sent.entry(d.partition).or_default().push((d.offset, value));
        }
    }
    for (p, expected_len) in [(0u32, 9u64), (1, 6)] {
        let offsets: Vec<Offset> = sent[&p].iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (0..expected_len).collect::<Vec<_>>(),
            "delivered offsets of partition {p}"
        );
    }
    let status = bus
        .status(&unique("ordered-status"), std::slice::from_ref(&topic))
        .await
        .expect("status");
    let ends: Vec<Offset> = status.partitions.iter().map(|s| s.end_offset).collect();
    assert_eq!(ends, vec![9, 6]);

    let mut consumer = join(&bus, "ordered", &topic).await;
    let records = read_records(consumer.as_mut(), 15).await;
    for p in 0..2u32 {
        let read: Vec<(Offset, Bytes)> = records
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| (r.offset, r.value.clone()))
            .collect();
        assert_eq!(
            read, sent[&p],
            "records of partition {p} differ from what was sent"
        );
    }
    finish(bus, vec![consumer]).await;
}

/// Keys (absent, empty, binary), values (empty, 1 MiB), headers (repeated names, empty
/// and binary values) and timestamps (given, or the append time) come back unchanged.
pub async fn message_round_trip<F, Fut>(make_bus: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynBus>,
{
    let bus = make_bus().await;
    let topic = create_topic(&bus, "roundtrip", 1).await;
    let big: Bytes = (0..(1u32 << 20))
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let mut first = Message::new(Some(Bytes::from_static(b"acme/weather")), &b"hello"[..])
        .with_header("tenant", &b"acme"[..])
        .with_header("tenant", &b"second"[..])
        .with_header("empty", Bytes::new());
    first.timestamp_ms = Some(1_700_000_000_123);
    let second = Message::new(None, Bytes::new());
    let mut third =
        Message::new(Some(Bytes::new()), big.clone()).with_header("bin", vec![0u8, 255, 1]);
    third.timestamp_ms = Some(1);
    let fourth = Message::new(
        Some(Bytes::from(vec![0u8, 159, 146, 150])),
        &b"binary key"[..],
    );
    let before = now_ms();
    bus.producer()
        .send(
            &topic,
            vec![first.clone(), second, third.clone(), fourth.clone()],
        )
        .await
        .expect("send");
    let after = now_ms();

    let mut consumer = join(&bus, "roundtrip", &topic).await;
    let records = read_records(consumer.as_mut(), 4).await;
    let offsets: Vec<Offset> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3]);
    let [r1, r2, r3, r4] = &records[..] else {
        unreachable!()
    };

    assert_eq!(r1.topic, topic);
    assert_eq!(r1.key.as_deref(), Some(&b"acme/weather"[..]));
    assert_eq!(&r1.value[..], b"hello");
    assert_eq!(r1.headers, first.headers);
    assert_eq!(r1.header("tenant").map(|v| &v[..]), Some(&b"acme"[..]));
    assert_eq!(r1.timestamp_ms, 1_700_000_000_123);

    assert_eq!(r2.key, None, "an absent key must stay absent");
    assert!(r2.value.is_empty());
    assert!(r2.headers.is_empty());
    assert!(
        r2.timestamp_ms >= before - 60_000 && r2.timestamp_ms <= after + 60_000,
        "append timestamp {} far from the send time {before}..{after}",
        r2.timestamp_ms
    );

    assert_eq!(
        r3.key.as_deref(),
        Some(&b""[..]),
        "an empty key must stay empty, not absent"
    );
    assert_eq!(r3.value, big);
    assert_eq!(r3.headers, vec![Header::new("bin", vec![0u8, 255, 1])]);
    assert_eq!(r3.timestamp_ms, 1);

    assert_eq!(r4.key, fourth.key);
    assert_eq!(&r4.value[..], b"binary key");
    finish(bus, vec![consumer]).await;
}

/// Acknowledged messages are all there after the bus is dropped without shutdown and
/// reopened, and offsets continue where they stopped.
pub async fn acknowledged_messages_survive_reopen<F, Fut>(make_bus: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynBus>,
{
    let topic;
    {
        let bus = make_bus().await;
        topic = create_topic(&bus, "reopen", 2).await;
        let producer = bus.producer();
        for i in 0..20 {
            producer
                .send(
                    &topic,
                    vec![Message::new(None, format!("m{i}").into_bytes())],
                )
                .await
                .expect("send");
        }
        drop(producer);
        drop(bus);
    }
    let bus = make_bus().await;
    let status = bus
        .status(&unique("reopen-status"), std::slice::from_ref(&topic))
        .await
        .expect("status");
    assert_eq!(
        status
            .partitions
            .iter()
            .map(|s| s.end_offset)
            .sum::<Offset>(),
        20
    );
    let mut consumer = join(&bus, "reopen", &topic).await;
    let records = read_records(consumer.as_mut(), 20).await;
    let mut values = values_of(&records);
    values.sort_by_key(|v| v[1..].parse::<u32>().unwrap_or(u32::MAX));
    assert_eq!(values, (0..20).map(|i| format!("m{i}")).collect::<Vec<_>>());
    let ends: BTreeMap<u32, Offset> = status
        .partitions
        .iter()
        .map(|s| (s.partition, s.end_offset))
        .collect();
    let d = bus
        .producer()
        .send(&topic, vec![Message::new(None, &b"next"[..])])
        .await
        .expect("send");
    assert_eq!(
        d[0].offset, ends[&d[0].partition],
        "offsets continue after reopening"
    );
    finish(bus, vec![consumer]).await;
}

/// `ensure_topics` creates missing topics, accepts existing ones with the same partition
/// count and rejects a different count with `PartitionMismatch`.
pub async fn ensure_topics_validates<F, Fut>(make_bus: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynBus>,
{
    let bus = make_bus().await;
    let topic = unique("ensure");
    let spec = |partitions| TopicSpec {
        name: topic.clone(),
        partitions,
        replication: 1,
    };
    bus.ensure_topics(&[spec(3)]).await.expect("create");
    bus.ensure_topics(&[spec(3)])
        .await
        .expect("the same spec again is fine");
    match bus.ensure_topics(&[spec(5)]).await {
        Err(BusError::PartitionMismatch {
            topic: t,
            expected,
            actual,
        }) => {
            assert_eq!((t, expected, actual), (topic.clone(), 5, 3));
        }
        other => panic!("expected PartitionMismatch, got {other:?}"),
    }
    let status = bus
        .status(&unique("ensure-status"), std::slice::from_ref(&topic))
        .await
        .expect("status");
    assert_eq!(status.partitions.len(), 3);
    assert!(
        status
            .partitions
            .iter()
            .all(|s| s.end_offset == 0 && s.committed.is_none())
    );
    finish(bus, Vec::new()).await;
}

/// After `shutdown`, sends fail with `Closed`.
pub async fn shutdown_rejects_sends<F, Fut>(make_bus: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynBus>,
{
    let bus = make_bus().await;
    let topic = create_topic(&bus, "shutdown", 1).await;
    let producer = bus.producer();
    producer
        .send(&topic, vec![Message::new(None, &b"before"[..])])
        .await
        .expect("send before shutdown");
    bus.shutdown().await.expect("shutdown");
    let result = producer
        .send(&topic, vec![Message::new(None, &b"after"[..])])
        .await;
    assert!(
        matches!(result, Err(BusError::Closed)),
        "send after shutdown: {result:?}"
    );
}

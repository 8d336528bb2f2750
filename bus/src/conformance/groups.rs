//! Checks of consumer groups: committed offsets, redelivery, rebalancing, pausing.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use super::support::*;
use crate::{BusError, ConsumerEvent, DynBus, Message, Offset, TopicPartition};

/// A member that rejoins its group resumes right after the committed offset.
pub async fn committed_offsets_resume<F, Fut>(make_bus: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynBus>,
{
    let bus = make_bus().await;
    let topic = create_topic(&bus, "resume", 1).await;
    let group = unique("resume");
    send_values(&bus, &topic, None, 0..10).await;
    let tp = TopicPartition::new(topic.clone(), 0);

    let mut first = bus
        .consumer(&group, std::slice::from_ref(&topic))
        .await
        .expect("join");
    let records = read_records(first.as_mut(), 10).await;
    assert_eq!(records.last().map(|r| r.offset), Some(9));
    first.commit(&[(tp.clone(), 6)]).await.expect("commit");
    first.close().await.expect("close");

    let status = bus
        .status(&group, std::slice::from_ref(&topic))
        .await
        .expect("status");
    assert_eq!(status.partitions[0].committed, Some(6));
    assert_eq!(status.partitions[0].end_offset, 10);
    assert_eq!(status.total_lag(), 4);

    let mut second = bus
        .consumer(&group, std::slice::from_ref(&topic))
        .await
        .expect("rejoin");
    let records = read_records(second.as_mut(), 4).await;
    assert_eq!(values_of(&records), vec!["v6", "v7", "v8", "v9"]);
    assert_eq!(
        records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![6, 7, 8, 9]
    );
    expect_quiet(second.as_mut()).await;
    finish(bus, vec![second]).await;
}

/// After a crash (every handle dropped, no shutdown, no close), a new member of the group
/// is redelivered everything after the last commit, and nothing before it.
pub async fn redelivery_after_crash<F, Fut>(make_bus: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynBus>,
{
    let group = unique("crash");
    let topic;
    let keys = keys_for_partitions(2);
    {
        let bus = make_bus().await;
        topic = create_topic(&bus, "crash", 2).await;
        send_values(&bus, &topic, Some(&keys[0]), 0..5).await;
        send_values(&bus, &topic, Some(&keys[1]), 5..10).await;
        let mut consumer = bus
            .consumer(&group, std::slice::from_ref(&topic))
            .await
            .expect("join");
        let records = read_records(consumer.as_mut(), 10).await;
        assert_eq!(records.len(), 10);
        consumer
            .commit(&[(TopicPartition::new(topic.clone(), 0), 3)])
            .await
            .expect("commit");
        // Crash: nothing else committed, nothing closed or shut down.
        drop(consumer);
        drop(bus);
    }
    let bus = make_bus().await;
    let status = bus
        .status(&group, std::slice::from_ref(&topic))
        .await
        .expect("status");
    let committed: Vec<Option<Offset>> = status.partitions.iter().map(|s| s.committed).collect();
    assert_eq!(committed, vec![Some(3), None]);
    let ends: Vec<Offset> = status.partitions.iter().map(|s| s.end_offset).collect();
    assert_eq!(ends, vec![5, 5], "acknowledged messages lost in the crash");

    let mut consumer = bus
        .consumer(&group, std::slice::from_ref(&topic))
        .await
        .expect("rejoin");
    let records = read_records(consumer.as_mut(), 7).await;
    let mut got: Vec<(u32, Offset, String)> = records
        .iter()
        .map(|r| {
            (
                r.partition,
                r.offset,
                String::from_utf8_lossy(&r.value).into_owned(),
            )
        })
        .collect();
    got.sort();
    let mut expected: Vec<(u32, Offset, String)> =
        (3..5).map(|o| (0, o, format!("v{o}"))).collect();
    expected.extend((0..5).map(|o| (1, o, format!("v{}", o + 5))));
    assert_eq!(got, expected, "redelivery after the crash");
    expect_quiet(consumer.as_mut()).await;

    let deliveries = bus
        .producer()
        .send(
            &topic,
            vec![Message::new(Some(keys[0].clone()), &b"after"[..])],
        )
        .await
        .expect("send");
    assert_eq!(
        (deliveries[0].partition, deliveries[0].offset),
        (0, 5),
        "offsets continue after the crash"
    );
    finish(bus, vec![consumer]).await;
}

/// Two members split the partitions (none owned by both); across a join and a leave,
/// driven through the Revoked → commit → poll handshake, every message is consumed
/// exactly once — unless the group refused a revoke commit (it had moved on to a newer
/// generation), when only the records that commit covered may be read again.
pub async fn group_split_and_rebalance<F, Fut>(make_bus: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynBus>,
{
    let bus = make_bus().await;
    let topic = create_topic(&bus, "rebalance", 4).await;
    let group = unique("rebalance");
    let keys = keys_for_partitions(4);
    let subscribe = std::slice::from_ref(&topic);
    let mut sent = 0u64;
    let mut send_round = async |bus: &DynBus, per_partition: u64| {
        for key in &keys {
            send_values(bus, &topic, Some(key), sent..sent + per_partition).await;
            sent += per_partition;
        }
    };

    send_round(&bus, 8).await;
    let mut a = Member::new("a", bus.consumer(&group, subscribe).await.expect("join a"));
    drive(&mut [&mut a], "a owns all 4 partitions and read 32", |m| {
        m[0].assigned.len() == 4 && m[0].seen.len() == 32
    })
    .await;
    a.commit_processed().await;

    send_round(&bus, 8).await;
    let mut b = Member::new("b", bus.consumer(&group, subscribe).await.expect("join b"));
    drive(
        &mut [&mut a, &mut b],
        "a and b own 2 partitions each and all 64 are read",
        |m| {
            m[0].assigned.len() == 2
                && m[1].assigned.len() == 2
                && distinct(m[0].seen.iter().chain(&m[1].seen)) == 64
        },
    )
    .await;
    assert!(
        a.revoked >= 1,
        "a was never told its partitions were revoked"
    );
    assert!(
        a.assigned.is_disjoint(&b.assigned),
        "a partition owned by both: {:?} {:?}",
        a.assigned,
        b.assigned
    );
    let mut owned = a.assigned.clone();
    owned.extend(b.assigned.iter().cloned());
    assert_eq!(owned.len(), 4);
    assert!(
        b.seen.iter().all(|(tp, _)| b.assigned.contains(tp)),
        "b read a partition it does not own"
    );
    assert_eq!(
        a.consumer.assignment().into_iter().collect::<BTreeSet<_>>(),
        a.assigned,
        "assignment() disagrees with the events"
    );

    b.commit_processed().await;
    let b_seen = std::mem::take(&mut b.seen);
    let b_refused = std::mem::take(&mut b.refused);
    b.consumer.close().await.expect("close b");
    send_round(&bus, 4).await;
    drive(
        &mut [&mut a],
        "a owns all 4 partitions again and read 80",
        |m| m[0].assigned.len() == 4 && distinct(m[0].seen.iter().chain(&b_seen)) == 80,
    )
    .await;
    a.commit_processed().await;

    let all: Vec<(TopicPartition, Offset)> = a.seen.iter().chain(b_seen.iter()).cloned().collect();
    let refused: Vec<(TopicPartition, Offset)> =
        a.refused.iter().chain(&b_refused).cloned().collect();
    assert_read_once(&all, &refused);
    let distinct: BTreeSet<(TopicPartition, Offset)> = all.into_iter().collect();
    for p in 0..4 {
        let offsets: Vec<Offset> = distinct
            .iter()
            .filter(|(tp, _)| tp.partition == p)
            .map(|(_, o)| *o)
            .collect();
        assert_eq!(
            offsets,
            (0..20).collect::<Vec<_>>(),
            "partition {p} lost or duplicated messages"
        );
    }
    let status = bus.status(&group, subscribe).await.expect("status");
    assert_eq!(status.total_lag(), 0);
    finish(bus, vec![a.consumer]).await;
}

/// A partition revoked from a member may be committed until that member's next poll;
/// afterwards (it belongs to another member) the commit fails with `NotAssigned`, as does
/// a commit for a partition never assigned.
///
/// The commit in the revoke window may still be refused with a retryable error when the
/// group has already moved on to a newer generation (Kafka: another member rejoined
/// meanwhile and the coordinator fenced this one). Nothing is lost then: the commit did
/// not happen, and the new owner reads the partition from the previous commit.
pub async fn stale_commit_rejected<F, Fut>(make_bus: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynBus>,
{
    let bus = make_bus().await;
    let topic = create_topic(&bus, "stale", 2).await;
    let group = unique("stale");
    let subscribe = std::slice::from_ref(&topic);
    let keys = keys_for_partitions(2);
    send_values(&bus, &topic, Some(&keys[0]), 0..2).await;
    send_values(&bus, &topic, Some(&keys[1]), 2..4).await;

    let mut a = bus.consumer(&group, subscribe).await.expect("join a");
    read_records(a.as_mut(), 4).await;
    let never = TopicPartition::new(unique("stale-other"), 0);
    assert!(
        matches!(a.commit(&[(never.clone(), 1)]).await, Err(BusError::NotAssigned(tp)) if tp == never),
        "commit of a partition never assigned must fail with NotAssigned"
    );

    let mut b = bus.consumer(&group, subscribe).await.expect("join b");
    let deadline = Instant::now() + WAIT;
    let revoked = loop {
        assert!(
            Instant::now() < deadline,
            "a was not told of a revoke after b joined"
        );
        match a.poll(POLL).await.expect("poll a") {
            ConsumerEvent::Revoked(partitions) => break partitions,
            ConsumerEvent::Records(records) => {
                assert!(records.is_empty(), "a read records it had already read")
            }
            ConsumerEvent::Assigned(p) => panic!("a got an unexpected assignment {p:?}"),
        }
        // Lets a backend that needs the new member to poll make progress.
        let _ = b.poll(Duration::from_millis(1)).await.expect("poll b");
    };
    assert_eq!(revoked.len(), 1, "one of two partitions moves to b");
    let moved = revoked[0].clone();
    let revoke_commit = a.commit(&[(moved.clone(), 2)]).await;
    let kept = match &revoke_commit {
        Ok(()) => Some(2),
        Err(e) if e.is_retryable() => None,
        Err(e) => panic!("a commit between Revoked and its next poll must succeed: {e:?}"),
    };

    let _ = a.poll(POLL).await.expect("poll a");
    assert!(
        matches!(a.commit(&[(moved.clone(), 2)]).await, Err(BusError::NotAssigned(tp)) if tp == moved),
        "stale commit after the next poll must fail with NotAssigned"
    );
    let mut b_assigned = Vec::new();
    let deadline = Instant::now() + WAIT;
    while b_assigned.is_empty() {
        assert!(
            Instant::now() < deadline,
            "b never got the revoked partition"
        );
        if let ConsumerEvent::Assigned(partitions) = b.poll(POLL).await.expect("poll b") {
            b_assigned = partitions;
        }
        let _ = a.poll(Duration::from_millis(1)).await.expect("poll a");
    }
    assert_eq!(b_assigned, vec![moved.clone()]);
    assert!(
        matches!(
            a.commit(&[(moved.clone(), 2)]).await,
            Err(BusError::NotAssigned(_))
        ),
        "stale commit must keep failing"
    );
    let status = bus.status(&group, subscribe).await.expect("status");
    let committed = status
        .partitions
        .iter()
        .find(|s| s.partition == moved.partition)
        .and_then(|s| s.committed);
    assert_eq!(
        committed, kept,
        "the commit made during the revoke window is kept, and a refused one left nothing behind ({revoke_commit:?})"
    );
    b.commit(&[(moved.clone(), 2)])
        .await
        .expect("the new owner may commit");
    finish(bus, vec![a, b]).await;
}

/// A lower commit does not move the committed offset back.
pub async fn commits_never_go_backwards<F, Fut>(make_bus: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynBus>,
{
    let bus = make_bus().await;
    let topic = create_topic(&bus, "monotonic", 1).await;
    let group = unique("monotonic");
    let subscribe = std::slice::from_ref(&topic);
    send_values(&bus, &topic, None, 0..10).await;
    let tp = TopicPartition::new(topic.clone(), 0);

    let mut consumer = bus.consumer(&group, subscribe).await.expect("join");
    read_records(consumer.as_mut(), 10).await;
    consumer.commit(&[(tp.clone(), 7)]).await.expect("commit 7");
    consumer
        .commit(&[(tp.clone(), 3)])
        .await
        .expect("a lower commit is accepted and ignored");
    let status = bus.status(&group, subscribe).await.expect("status");
    assert_eq!(status.partitions[0].committed, Some(7));
    consumer.close().await.expect("close");

    let mut consumer = bus.consumer(&group, subscribe).await.expect("rejoin");
    let records = read_records(consumer.as_mut(), 3).await;
    assert_eq!(
        records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![7, 8, 9]
    );
    finish(bus, vec![consumer]).await;
}

/// `status` reports end offsets, committed offsets and the lag between them.
pub async fn status_reports_lag<F, Fut>(make_bus: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynBus>,
{
    let bus = make_bus().await;
    let topic = create_topic(&bus, "lag", 2).await;
    let group = unique("lag");
    let subscribe = std::slice::from_ref(&topic);
    let keys = keys_for_partitions(2);
    send_values(&bus, &topic, Some(&keys[0]), 0..6).await;
    send_values(&bus, &topic, Some(&keys[1]), 6..10).await;

    let status = bus.status(&group, subscribe).await.expect("status");
    assert_eq!(status.group, group);
    let rows: Vec<(String, u32, Offset, Option<Offset>)> = status
        .partitions
        .iter()
        .map(|s| (s.topic.clone(), s.partition, s.end_offset, s.committed))
        .collect();
    assert_eq!(
        rows,
        vec![(topic.clone(), 0, 6, None), (topic.clone(), 1, 4, None)]
    );
    assert_eq!(status.total_lag(), 10);

    let mut consumer = bus.consumer(&group, subscribe).await.expect("join");
    read_records(consumer.as_mut(), 10).await;
    let (p0, p1) = (
        TopicPartition::new(topic.clone(), 0),
        TopicPartition::new(topic.clone(), 1),
    );
    consumer.commit(&[(p0, 6), (p1, 1)]).await.expect("commit");
    let status = bus.status(&group, subscribe).await.expect("status");
    let lags: Vec<(Option<Offset>, u64)> = status
        .partitions
        .iter()
        .map(|s| (s.committed, s.lag()))
        .collect();
    assert_eq!(lags, vec![(Some(6), 0), (Some(1), 3)]);
    assert_eq!(status.total_lag(), 3);
    finish(bus, vec![consumer]).await;
}

/// A paused partition is not fetched; `resume` continues from the given offset.
pub async fn pause_and_resume<F, Fut>(make_bus: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynBus>,
{
    let bus = make_bus().await;
    let topic = create_topic(&bus, "pause", 1).await;
    let tp = TopicPartition::new(topic.clone(), 0);
    let mut consumer = join(&bus, "pause", &topic).await;
    let deadline = Instant::now() + WAIT;
    while consumer.assignment() != vec![tp.clone()] {
        assert!(Instant::now() < deadline, "partition never assigned");
        if let ConsumerEvent::Records(r) = consumer.poll(POLL).await.expect("poll") {
            assert!(r.is_empty());
        }
    }
    let stranger = TopicPartition::new(unique("pause-other"), 0);
    assert!(matches!(
        consumer.pause(&stranger),
        Err(BusError::NotAssigned(_))
    ));
    consumer.pause(&tp).expect("pause");
    send_values(&bus, &topic, None, 0..5).await;
    expect_quiet(consumer.as_mut()).await;
    consumer.resume(&tp, 2).expect("resume");
    let records = read_records(consumer.as_mut(), 3).await;
    assert_eq!(values_of(&records), vec!["v2", "v3", "v4"]);
    finish(bus, vec![consumer]).await;
}

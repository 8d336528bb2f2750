//! Helpers shared by the checks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::{
    Consumer, ConsumerEvent, DynBus, Message, Offset, Record, TopicPartition, TopicSpec,
    partition_for_key,
};

/// Longest a check waits for an expected event or record.
pub const WAIT: Duration = Duration::from_secs(30);
/// Poll timeout used by the checks.
pub(crate) const POLL: Duration = Duration::from_millis(50);
/// How long a check polls to make sure nothing more arrives.
pub(crate) const QUIET: Duration = Duration::from_millis(300);

/// A name unique to this process and call, valid as a Kafka topic and group.
pub fn unique(what: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "conformance.{what}.{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// One key per partition of an `n`-partition topic.
pub fn keys_for_partitions(n: u32) -> Vec<Bytes> {
    let mut keys: Vec<Option<Bytes>> = vec![None; n as usize];
    let mut i = 0u32;
    while keys.iter().any(Option::is_none) {
        let key = format!("key-{i}");
        let slot = &mut keys[partition_for_key(key.as_bytes(), n) as usize];
        if slot.is_none() {
            *slot = Some(Bytes::from(key));
        }
        i += 1;
    }
    keys.into_iter().flatten().collect()
}

pub(crate) async fn create_topic(bus: &DynBus, what: &str, partitions: u32) -> String {
    let name = unique(what);
    bus.ensure_topics(&[TopicSpec {
        name: name.clone(),
        partitions,
        replication: 1,
    }])
    .await
    .expect("ensure_topics");
    name
}

pub(crate) async fn join(bus: &DynBus, what: &str, topic: &str) -> Box<dyn Consumer> {
    bus.consumer(&unique(what), &[topic.to_string()])
        .await
        .expect("join group")
}

/// Sends `v{i}` for each `i` in `range`, with `key`, in one call; checks the deliveries
/// are contiguous.
pub(crate) async fn send_values(
    bus: &DynBus,
    topic: &str,
    key: Option<&Bytes>,
    range: std::ops::Range<u64>,
) {
    let messages: Vec<Message> = range
        .clone()
        .map(|i| Message::new(key.cloned(), format!("v{i}").into_bytes()))
        .collect();
    let deliveries = bus.producer().send(topic, messages).await.expect("send");
    assert_eq!(deliveries.len() as u64, range.end - range.start);
    if key.is_some() {
        assert!(
            deliveries
                .windows(2)
                .all(|w| w[1].partition == w[0].partition && w[1].offset == w[0].offset + 1)
        );
    }
}

pub(crate) fn values_of(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Polls until `n` records arrived (more is a failure); rebalance events are skipped.
pub(crate) async fn read_records(consumer: &mut dyn Consumer, n: usize) -> Vec<Record> {
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records arrived",
            out.len()
        );
        if let ConsumerEvent::Records(records) = consumer.poll(POLL).await.expect("poll") {
            out.extend(records);
        }
    }
    assert_eq!(out.len(), n, "more records than expected");
    out
}

/// Polls for a while and fails if any record arrives.
pub(crate) async fn expect_quiet(consumer: &mut dyn Consumer) {
    let until = Instant::now() + QUIET;
    while Instant::now() < until {
        if let ConsumerEvent::Records(records) = consumer.poll(POLL).await.expect("poll") {
            assert!(
                records.is_empty(),
                "unexpected records: {:?}",
                values_of(&records)
            );
        }
    }
}

/// Closes the consumers and shuts the bus down.
pub(crate) async fn finish(bus: DynBus, consumers: Vec<Box<dyn Consumer>>) {
    for consumer in consumers {
        consumer.close().await.expect("close");
    }
    bus.shutdown().await.expect("shutdown");
}

/// A group member driven by the rebalance check: it processes records as they arrive and
/// commits what it processed when partitions are revoked.
pub(crate) struct Member {
    name: &'static str,
    pub consumer: Box<dyn Consumer>,
    pub assigned: BTreeSet<TopicPartition>,
    /// Next offset to commit per partition.
    processed: BTreeMap<TopicPartition, Offset>,
    pub seen: Vec<(TopicPartition, Offset)>,
    /// How many `Revoked` events it got.
    pub revoked: usize,
    /// Revoked partitions whose commit the group refused (retryably: it had already moved
    /// on to a newer generation), with the offset processed up to. Their new owner may
    /// read the records below that offset again; nothing else may be read twice.
    pub refused: Vec<(TopicPartition, Offset)>,
}

impl Member {
    pub fn new(name: &'static str, consumer: Box<dyn Consumer>) -> Self {
        Self {
            name,
            consumer,
            assigned: BTreeSet::new(),
            processed: BTreeMap::new(),
            seen: Vec::new(),
            revoked: 0,
            refused: Vec::new(),
        }
    }

    async fn step(&mut self) {
        match self.consumer.poll(POLL).await.expect("poll") {
            ConsumerEvent::Assigned(partitions) => {
                for tp in partitions {
                    assert!(
                        self.assigned.insert(tp.clone()),
                        "{}: {tp} assigned twice",
                        self.name
                    );
                }
            }
            ConsumerEvent::Revoked(partitions) => {
                self.revoked += 1;
                let offsets: Vec<(TopicPartition, Offset)> = partitions
                    .iter()
                    .filter_map(|tp| self.processed.get(tp).map(|&o| (tp.clone(), o)))
                    .collect();
                match self.consumer.commit(&offsets).await {
                    Ok(()) => {}
                    Err(e) if e.is_retryable() => self.refused.extend(offsets),
                    Err(e) => panic!("{}: commit of revoked partitions: {e:?}", self.name),
                }
                for tp in &partitions {
                    assert!(
                        self.assigned.remove(tp),
                        "{}: {tp} revoked but not assigned",
                        self.name
                    );
                    self.processed.remove(tp);
                }
            }
            ConsumerEvent::Records(records) => {
                for r in records {
                    let tp = r.topic_partition();
                    assert!(
                        self.assigned.contains(&tp),
                        "{}: record of unassigned {tp}",
                        self.name
                    );
                    if let Some(&next) = self.processed.get(&tp) {
                        assert_eq!(
                            r.offset, next,
                            "{}: {tp} skipped or repeated offsets",
                            self.name
                        );
                    }
                    self.processed.insert(tp.clone(), r.offset + 1);
                    self.seen.push((tp, r.offset));
                }
            }
        }
    }

    pub async fn commit_processed(&mut self) {
        let offsets: Vec<(TopicPartition, Offset)> = self
            .processed
            .iter()
            .map(|(tp, &o)| (tp.clone(), o))
            .collect();
        self.consumer.commit(&offsets).await.expect("commit");
    }
}

/// How many distinct records `seen` holds.
pub(crate) fn distinct<'a>(seen: impl IntoIterator<Item = &'a (TopicPartition, Offset)>) -> usize {
    seen.into_iter().collect::<BTreeSet<_>>().len()
}

/// Asserts every record in `seen` was read once, except records below the offset of a
/// refused revoke commit (`refused`), which the partition's next owner may read again.
pub(crate) fn assert_read_once(
    seen: &[(TopicPartition, Offset)],
    refused: &[(TopicPartition, Offset)],
) {
    let mut reads: BTreeMap<&(TopicPartition, Offset), usize> = BTreeMap::new();
    for record in seen {
        *reads.entry(record).or_default() += 1;
    }
    for ((tp, offset), n) in reads {
        if n > 1 {
            assert!(
                refused.iter().any(|(r, upto)| r == tp && offset < upto),
                "{tp} offset {offset} was consumed {n} times without a refused commit to explain it"
            );
        }
    }
}

/// Polls the members in turn until `done` holds (fails after [`WAIT`]).
pub(crate) async fn drive(
    members: &mut [&mut Member],
    what: &str,
    done: impl Fn(&[&mut Member]) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    while !done(members) {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        for member in members.iter_mut() {
            member.step().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cover_every_partition() {
        let keys = keys_for_partitions(4);
        let partitions: Vec<u32> = keys.iter().map(|k| partition_for_key(k, 4)).collect();
        assert_eq!(partitions, vec![0, 1, 2, 3]);
        assert_ne!(unique("x"), unique("x"));
    }
}

//! The runtime while the next stage fails, on the real embedded log: it pauses
//! consumption but keeps polling (so it stays in its group and serves rebalances), retries
//! with backoff, resumes exactly where it stopped, retries failed commits, and gives up a
//! failing drain after `drain_timeout`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use mcpulse_bus::embedded::{EmbeddedBus, EmbeddedConfig};
use mcpulse_bus::{
    Bus, BusError, Consumer, ConsumerEvent, DynBus, Message, Offset, Record, TopicPartition,
    TopicSpec,
};
use mcpulse_processors::dlq::DeadLetters;
use mcpulse_processors::stats::RuntimeStats;
use mcpulse_processors::{Operator, OperatorError, Runtime, RuntimeConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const GROUP: &str = "g";
const DLQ: &str = "dlq";

/// What the test operator shares with the test.
#[derive(Default)]
struct Shared {
    /// Flushes still to fail (retryably).
    fail_flushes: usize,
    /// `process` calls still to fail (retryably).
    fail_process: usize,
    /// Records handed over (successful `process` calls).
    processed: usize,
    /// Per partition, the offsets made "durable", in flush order.
    flushed: BTreeMap<TopicPartition, Vec<Offset>>,
}

/// Buffers records and "writes" them to `Shared::flushed` when flushed, failing as told.
struct TestOperator {
    shared: Arc<Mutex<Shared>>,
    buffered: BTreeMap<TopicPartition, (Vec<Offset>, Offset)>,
}

impl TestOperator {
    fn new(shared: Arc<Mutex<Shared>>) -> Self {
        Self {
            shared,
            buffered: BTreeMap::new(),
        }
    }
}

#[async_trait]
impl Operator for TestOperator {
    fn name(&self) -> &'static str {
        "test"
    }

    async fn process(&mut self, record: &Record) -> Result<(), OperatorError> {
        let mut shared = self.shared.lock().unwrap();
        if shared.fail_process > 0 {
            shared.fail_process -= 1;
            return Err(OperatorError::Retryable("store unreachable".into()));
        }
        shared.processed += 1;
        let (offsets, next) = self.buffered.entry(record.topic_partition()).or_default();
        offsets.push(record.offset);
        *next = record.offset + 1;
        Ok(())
    }

    fn skip(&mut self, _tp: &TopicPartition, _offset: Offset) {}

    fn flush_due(&self) -> bool {
        self.buffered
            .values()
            .any(|(offsets, _)| !offsets.is_empty())
    }

    async fn flush(
        &mut self,
        partitions: Option<&[TopicPartition]>,
        _all: bool,
    ) -> Result<Vec<(TopicPartition, Offset)>, OperatorError> {
        let mut shared = self.shared.lock().unwrap();
        if shared.fail_flushes > 0 {
            shared.fail_flushes -= 1;
            return Err(OperatorError::Retryable("store unreachable".into()));
        }
        let mut commits = Vec::new();
        for (tp, (offsets, next)) in &mut self.buffered {
            if partitions.is_some_and(|p| !p.contains(tp)) || offsets.is_empty() {
                continue;
            }
            shared
                .flushed
                .entry(tp.clone())
                .or_default()
                .append(offsets);
            commits.push((tp.clone(), *next));
        }
        Ok(commits)
    }

    fn release(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.buffered.remove(tp);
        }
    }
}

/// A consumer whose first `failures` commits fail with `BusError::Unavailable`.
struct FlakyCommits {
    inner: Box<dyn Consumer>,
    failures: Arc<AtomicUsize>,
}

#[async_trait]
impl Consumer for FlakyCommits {
    async fn poll(&mut self, timeout: Duration) -> Result<ConsumerEvent, BusError> {
        self.inner.poll(timeout).await
    }

    async fn commit(&mut self, offsets: &[(TopicPartition, Offset)]) -> Result<(), BusError> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(BusError::Unavailable("broker unreachable".into()));
        }
        self.inner.commit(offsets).await
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        self.inner.assignment()
    }

    fn pause(&mut self, tp: &TopicPartition) -> Result<(), BusError> {
        self.inner.pause(tp)
    }

    fn resume(&mut self, tp: &TopicPartition, offset: Offset) -> Result<(), BusError> {
        self.inner.resume(tp, offset)
    }

    async fn close(self: Box<Self>) -> Result<(), BusError> {
        self.inner.close().await
    }
}

async fn open_bus(dir: &Path, topics: &[(&str, u32)]) -> DynBus {
    let config = EmbeddedConfig {
        // Long, so a member that stopped polling would visibly hold up the rebalance.
        rebalance_timeout: Duration::from_secs(60),
        ..EmbeddedConfig::new(dir.join("log"))
    };
    let bus = EmbeddedBus::open(config).unwrap();
    let mut specs: Vec<TopicSpec> = topics
        .iter()
        .map(|&(name, partitions)| TopicSpec {
            name: name.into(),
            partitions,
            replication: 1,
        })
        .collect();
    specs.push(TopicSpec {
        name: DLQ.into(),
        partitions: 1,
        replication: 1,
    });
    bus.ensure_topics(&specs).await.unwrap();
    bus
}

/// Sends `n` unkeyed messages (spread round robin over the partitions).
async fn produce(bus: &DynBus, topic: &str, n: usize) {
    let messages = (0..n)
        .map(|i| Message::new(None, Bytes::from(format!("m{i}"))))
        .collect();
    bus.producer().send(topic, messages).await.unwrap();
}

fn fast_config() -> RuntimeConfig {
    RuntimeConfig {
        poll_timeout: Duration::from_millis(50),
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        drain_timeout: Duration::from_secs(5),
    }
}

struct Running {
    stats: Arc<RuntimeStats>,
    shared: Arc<Mutex<Shared>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), mcpulse_processors::runtime::RuntimeError>>,
}

impl Running {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("runtime stops")
            .unwrap()
            .unwrap();
    }
}

fn start(
    bus: &DynBus,
    consumer: Box<dyn Consumer>,
    shared: Shared,
    config: RuntimeConfig,
) -> Running {
    let stats = Arc::new(RuntimeStats::default());
    let shared = Arc::new(Mutex::new(shared));
    let runtime = Runtime::new(
        consumer,
        Box::new(TestOperator::new(shared.clone())),
        DeadLetters::new(bus.producer(), DLQ.into()),
        config,
        stats.clone(),
    );
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(runtime.run(stopped));
    Running {
        stats,
        shared,
        stop,
        task,
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Committed and end offsets per partition of `topics`.
async fn offsets(
    bus: &DynBus,
    topics: &[&str],
) -> BTreeMap<TopicPartition, (Option<Offset>, Offset)> {
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    let status = bus.status(GROUP, &topics).await.unwrap();
    status
        .partitions
        .iter()
        .map(|p| {
            (
                TopicPartition::new(p.topic.clone(), p.partition),
                (p.committed, p.end_offset),
            )
        })
        .collect()
}

async fn wait_all_committed(bus: &DynBus, topics: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let offsets = offsets(bus, topics).await;
        if offsets.values().all(|&(c, end)| c == Some(end)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not everything committed: {offsets:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every partition was flushed exactly once, in order, up to its end offset.
async fn assert_flushed_exactly_once(bus: &DynBus, topics: &[&str], shared: &Mutex<Shared>) {
    let offsets = offsets(bus, topics).await;
    let shared = shared.lock().unwrap();
    for (tp, &(_, end)) in &offsets {
        let flushed = shared.flushed.get(tp).cloned().unwrap_or_default();
        assert_eq!(
            flushed,
            (0..end).collect::<Vec<_>>(),
            "{tp} flushed out of order, twice or not at all"
        );
    }
}

/// A stalled runtime keeps polling: a member joining meanwhile gets its share of the
/// partitions at once (the revocation is served while stalled, the revoked partitions are
/// released without committing), and after recovery the rest is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_runtime_keeps_serving_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open_bus(dir.path(), &[("t", 4)]).await;
    produce(&bus, "t", 40).await;

    let consumer = bus.consumer(GROUP, &["t".to_string()]).await.unwrap();
    let a = start(
        &bus,
        consumer,
        Shared {
            fail_flushes: usize::MAX,
            ..Shared::default()
        },
        fast_config(),
    );
    wait_until("all four partitions are paused", || {
        a.stats.paused_partitions.load(Relaxed) == 4
    })
    .await;
    assert_eq!(a.stats.stalls.load(Relaxed), 1);

    // A second member joins while the first is stalled.
    let mut b = bus.consumer(GROUP, &["t".to_string()]).await.unwrap();
    let started = Instant::now();
    let mut b_partitions = Vec::new();
    let mut b_records = Vec::new();
    while b_records.len() < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the second member got {b_partitions:?} and {} records",
            b_records.len()
        );
        match b.poll(Duration::from_millis(100)).await.unwrap() {
            ConsumerEvent::Assigned(p) => b_partitions.extend(p),
            ConsumerEvent::Revoked(p) => panic!("revoked {p:?}"),
            ConsumerEvent::Records(r) => b_records.extend(r),
        }
    }
    assert_eq!(b_partitions.len(), 2, "{b_partitions:?}");
    // Nothing was committed for them: the new owner reads them from the start.
    assert!(b_records.iter().all(|r| r.offset < 10));
    assert_eq!(b_records.iter().filter(|r| r.offset == 0).count(), 2);
    assert_eq!(a.stats.released_uncommitted.load(Relaxed), 2);
    assert_eq!(a.stats.paused_partitions.load(Relaxed), 2);
    assert!(a.shared.lock().unwrap().flushed.is_empty());
    let committed = offsets(&bus, &["t"]).await;
    assert!(
        committed.values().all(|(c, _)| c.is_none()),
        "{committed:?}"
    );

    // The next stage recovers: the first member commits exactly its own partitions.
    a.shared.lock().unwrap().fail_flushes = 0;
    let a_partitions: Vec<TopicPartition> = (0..4)
        .map(|p| TopicPartition::new("t", p))
        .filter(|tp| !b_partitions.contains(tp))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let committed = offsets(&bus, &["t"]).await;
        if a_partitions
            .iter()
            .all(|tp| committed[tp].0 == Some(committed[tp].1))
        {
            for tp in &b_partitions {
                assert_eq!(committed[tp].0, None, "{tp} committed by the wrong member");
            }
            break;
        }
        assert!(Instant::now() < deadline, "{committed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.stats.paused_partitions.load(Relaxed), 0);
    {
        let shared = a.shared.lock().unwrap();
        let flushed: Vec<_> = shared.flushed.keys().cloned().collect();
        assert_eq!(flushed, a_partitions);
        for tp in &a_partitions {
            assert_eq!(shared.flushed[tp], (0..10).collect::<Vec<_>>());
        }
    }
    a.stop().await;
    drop(b);
}

/// After recovery every record is flushed exactly once, in order, including records that
/// arrived during the stall on a partition that had none before (fetched once, dropped,
/// and re-fetched on resume), and the committed offsets equal the end offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_without_skipping_or_duplicating() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open_bus(dir.path(), &[("a", 2), ("b", 1)]).await;
    produce(&bus, "a", 20).await;
    let consumer = bus
        .consumer(GROUP, &["a".to_string(), "b".to_string()])
        .await
        .unwrap();
    let r = start(
        &bus,
        consumer,
        Shared {
            fail_flushes: usize::MAX,
            ..Shared::default()
        },
        fast_config(),
    );
    wait_until("both partitions of `a` are paused", || {
        r.stats.paused_partitions.load(Relaxed) == 2
    })
    .await;
    produce(&bus, "a", 10).await;
    produce(&bus, "b", 5).await;
    wait_until("the partition of `b` is paused too", || {
        r.stats.paused_partitions.load(Relaxed) == 3
    })
    .await;
    let errors = r.stats.flush_errors.load(Relaxed);
    wait_until("three more flushes failed", || {
        r.stats.flush_errors.load(Relaxed) >= errors + 3
    })
    .await;
    // Paused: nothing that arrived during the stall was handed over.
    assert_eq!(r.shared.lock().unwrap().processed, 20);
    assert!(
        offsets(&bus, &["a", "b"])
            .await
            .values()
            .all(|(c, _)| c.is_none())
    );

    // Two more failures, then it works.
    r.shared.lock().unwrap().fail_flushes = 2;
    wait_all_committed(&bus, &["a", "b"]).await;
    assert_flushed_exactly_once(&bus, &["a", "b"], &r.shared).await;
    assert_eq!(r.shared.lock().unwrap().processed, 35);
    assert_eq!(r.stats.records.load(Relaxed), 35);
    assert_eq!(r.stats.paused_partitions.load(Relaxed), 0);

    // And it keeps consuming normally.
    produce(&bus, "b", 3).await;
    wait_all_committed(&bus, &["a", "b"]).await;
    assert_flushed_exactly_once(&bus, &["a", "b"], &r.shared).await;
    r.stop().await;
}

/// A record whose processing fails retryably is retried (not skipped) while the
/// partitions are paused; the records after it in the same poll are re-fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_a_failed_record_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open_bus(dir.path(), &[("t", 2)]).await;
    produce(&bus, "t", 30).await;
    let consumer = bus.consumer(GROUP, &["t".to_string()]).await.unwrap();
    let r = start(
        &bus,
        consumer,
        Shared {
            fail_process: 3,
            ..Shared::default()
        },
        fast_config(),
    );
    wait_all_committed(&bus, &["t"]).await;
    assert_flushed_exactly_once(&bus, &["t"], &r.shared).await;
    assert_eq!(r.stats.process_errors.load(Relaxed), 3);
    assert_eq!(r.stats.stalls.load(Relaxed), 1);
    assert_eq!(r.shared.lock().unwrap().processed, 30);
    r.stop().await;
}

/// A commit that fails retryably (broker briefly unreachable) is retried and does not
/// stop the runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_a_failed_commit() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open_bus(dir.path(), &[("t", 1)]).await;
    produce(&bus, "t", 10).await;
    let inner = bus.consumer(GROUP, &["t".to_string()]).await.unwrap();
    let failures = Arc::new(AtomicUsize::new(1));
    let consumer = Box::new(FlakyCommits {
        inner,
        failures: failures.clone(),
    });
    let r = start(&bus, consumer, Shared::default(), fast_config());
    wait_all_committed(&bus, &["t"]).await;
    assert_eq!(failures.load(Relaxed), 0);
    assert_eq!(r.stats.commit_errors.load(Relaxed), 1);
    assert!(!r.task.is_finished(), "the runtime stopped");

    // Still running: later records are committed too.
    failures.store(2, Relaxed);
    produce(&bus, "t", 5).await;
    wait_all_committed(&bus, &["t"]).await;
    assert_eq!(r.stats.commit_errors.load(Relaxed), 3);
    assert_flushed_exactly_once(&bus, &["t"], &r.shared).await;
    r.stop().await;
}

/// On shutdown a final flush that keeps failing is given up after `drain_timeout`: the
/// runtime leaves the group without committing, and the next member replays everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_a_failing_drain_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open_bus(dir.path(), &[("t", 1)]).await;
    produce(&bus, "t", 10).await;
    let consumer = bus.consumer(GROUP, &["t".to_string()]).await.unwrap();
    let config = RuntimeConfig {
        drain_timeout: Duration::from_millis(300),
        ..fast_config()
    };
    let r = start(
        &bus,
        consumer,
        Shared {
            fail_flushes: usize::MAX,
            ..Shared::default()
        },
        config,
    );
    wait_until("the partition is paused", || {
        r.stats.paused_partitions.load(Relaxed) == 1
    })
    .await;
    let stats = r.stats.clone();
    let stopping = Instant::now();
    r.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopping.elapsed()
    );
    assert_eq!(stats.released_uncommitted.load(Relaxed), 1);
    let committed = offsets(&bus, &["t"]).await;
    assert!(
        committed.values().all(|(c, _)| c.is_none()),
        "{committed:?}"
    );

    // The group is free again: a new member gets the partition and replays from 0.
    let mut next = bus.consumer(GROUP, &["t".to_string()]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no records for the new member");
        if let ConsumerEvent::Records(records) =
            next.poll(Duration::from_millis(100)).await.unwrap()
            && !records.is_empty()
        {
            assert_eq!(records[0].offset, 0);
            break;
        }
    }
}

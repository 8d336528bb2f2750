//! The prober's [`IngestSink`] on a Kafka log whose broker goes down (librdkafka's mock
//! cluster): a batch is retried until the broker is back, or dropped (and reported) once
//! `give_up_after` has passed — never held forever.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mcpulse_bus::kafka::mock::MockKafka;
use mcpulse_bus::{DynBus, TopicSpec};
use mcpulse_ingest::prober::scheduler::{IngestSink, ResultSink};
use mcpulse_ingest::stats::IngestStats;
use mcpulse_ingest::{Backpressure, Edge, IngestConfig, ProbeIngest};
use mcpulse_schemas::Topics;
use mcpulse_schemas::probe::ProbeResult;

async fn setup(give_up_after: Duration) -> (Arc<MockKafka>, DynBus, IngestSink, Arc<IngestStats>) {
    let mock = MockKafka::new(1);
    let mut config = mock.config();
    config.delivery_timeout = Duration::from_secs(1);
    let bus = mock.bus_with(config).await;
    bus.ensure_topics(&[TopicSpec {
        name: Topics::default().probes(),
        partitions: 2,
        replication: 1,
    }])
    .await
    .unwrap();
    let stats = Arc::new(IngestStats::default());
    let edge = Edge::new(
        bus.producer(),
        IngestConfig::default(),
        Backpressure::new(1 << 20, u64::MAX, Duration::from_millis(100)),
        stats.clone(),
    );
    let sink = IngestSink::new(ProbeIngest::new(edge, &Topics::default()))
        .with_give_up_after(give_up_after);
    (mock, bus, sink, stats)
}

fn results(n: usize) -> Vec<ProbeResult> {
    (0..n)
        .map(|i| {
            let mut r = ProbeResult::new(format!("s{i}"), "eu", chrono::Utc::now());
            r.ok = true;
            r
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waits_out_a_broker_outage() {
    let (mock, bus, sink, stats) = setup(Duration::from_secs(30)).await;
    mock.cluster().broker_down(1).unwrap();
    let up = mock.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        up.cluster().broker_up(1).unwrap();
    });
    let started = Instant::now();
    sink.deliver("acme", results(3)).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "delivered during the outage?"
    );
    assert_eq!(stats.probes_accepted.load(Relaxed), 3);
    bus.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lasting_outage_drops_the_batch_after_give_up_after() {
    let (mock, bus, sink, stats) = setup(Duration::from_secs(2)).await;
    mock.cluster().broker_down(1).unwrap();
    let started = Instant::now();
    let err = sink.deliver("acme", results(2)).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "gave up after {:?}",
        started.elapsed()
    );
    assert!(!err.is_empty());
    assert_eq!(stats.probes_accepted.load(Relaxed), 0);
    mock.cluster().broker_up(1).unwrap();
    bus.shutdown().await.unwrap();
}

//! The probe scheduler against the fault server on loopback: the concurrency bound,
//! isolation of hanging targets, interval scheduling, overlap skipping and shutdown.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::fault_server::FaultServer;
use mcpulse_ingest::prober::probe::{Prober, ProberSettings};
use mcpulse_ingest::prober::scheduler::{ResultSink, Scheduler};
use mcpulse_ingest::prober::target_guard::TargetPolicy;
use mcpulse_ingest::prober::targets::{Target, TransportHint};
use mcpulse_schemas::probe::{FailureReason, ProbeResult};
use tokio::sync::watch;

#[derive(Default)]
struct Collect {
    results: Mutex<Vec<(String, ProbeResult)>>,
}

#[async_trait]
impl ResultSink for Collect {
    async fn deliver(&self, tenant: &str, results: Vec<ProbeResult>) -> Result<(), String> {
        let mut all = self.results.lock().unwrap();
        all.extend(results.into_iter().map(|r| (tenant.to_string(), r)));
        Ok(())
    }
}

impl Collect {
    fn per_server(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for (_, r) in self.results.lock().unwrap().iter() {
            *counts.entry(r.server.clone()).or_default() += 1;
        }
        counts
    }
}

fn prober(allow_loopback: bool) -> Arc<Prober> {
    let mut settings = ProberSettings::new("test");
    settings.policy = TargetPolicy {
        allow_loopback,
        ..Default::default()
    };
    Arc::new(Prober::new(settings))
}

fn target(
    server: &FaultServer,
    mode: &str,
    name: &str,
    interval_ms: u64,
    timeout_ms: u64,
) -> Target {
    Target {
        tenant: "acme".into(),
        server: name.into(),
        url: server.url(mode).parse().unwrap(),
        transport: TransportHint::StreamableHttp,
        credential: None,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        labels: BTreeMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_targets_do_not_delay_the_others() {
    let server = FaultServer::start().await;
    let mut targets = Vec::new();
    for i in 0..20 {
        targets.push(target(&server, "good", &format!("good{i}"), 60_000, 1000));
    }
    for i in 0..5 {
        targets.push(target(
            &server,
            "hang-tools",
            &format!("hang{i}"),
            60_000,
            1000,
        ));
    }
    let scheduler = Scheduler::new(prober(true), Arc::new(Collect::default()), 64);
    let started = Instant::now();
    let results = scheduler.run_once(targets).await;
    let elapsed = started.elapsed();
    assert_eq!(results.len(), 25);
    assert!(elapsed < Duration::from_millis(1800), "{elapsed:?}");
    for (i, result) in &results {
        let result = result.as_ref().unwrap();
        if *i < 20 {
            assert!(result.ok, "{result:?}");
        } else {
            assert_eq!(
                result.failure_reason,
                Some(FailureReason::Timeout),
                "{result:?}"
            );
        }
    }
    let stats = scheduler.stats();
    assert_eq!(stats.probes.load(Relaxed), 25);
    assert_eq!(stats.ok.load(Relaxed), 20);
    assert_eq!(stats.failed(FailureReason::Timeout), 5);
    assert_eq!(stats.in_flight.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_bound_is_respected() {
    let server = FaultServer::start().await;
    let targets: Vec<Target> = (0..12)
        .map(|i| target(&server, "hang-tools", &format!("h{i}"), 60_000, 300))
        .collect();
    let scheduler = Scheduler::new(prober(true), Arc::new(Collect::default()), 4);
    let started = Instant::now();
    let results = scheduler.run_once(targets).await;
    let elapsed = started.elapsed();
    assert_eq!(results.len(), 12);
    // Three waves of four probes, each held for its 300 ms timeout.
    assert!(elapsed >= Duration::from_millis(880), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2000), "{elapsed:?}");
    assert_eq!(scheduler.stats().peak_running.load(Relaxed), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_is_probed_every_interval() {
    let server = FaultServer::start().await;
    let targets: Vec<Target> = (0..10)
        .map(|i| target(&server, "good", &format!("g{i}"), 200, 150))
        .collect();
    let sink = Arc::new(Collect::default());
    let scheduler = Scheduler::new(prober(true), sink.clone(), 64);
    let stats = scheduler.stats();
    let (tx, rx) = watch::channel(false);
    let run = tokio::spawn(scheduler.run(targets, rx));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    tx.send(true).unwrap();
    run.await.unwrap();
    let counts = sink.per_server();
    assert_eq!(counts.len(), 10, "{counts:?}");
    for (server, n) in &counts {
        assert!((4..=6).contains(n), "{server}: {n} probes ({counts:?})");
    }
    assert_eq!(stats.skipped_overlaps.load(Relaxed), 0);
    assert_eq!(
        stats.delivered.load(Relaxed),
        counts.values().sum::<usize>() as u64
    );
    assert!(
        sink.results
            .lock()
            .unwrap()
            .iter()
            .all(|(t, r)| t == "acme" && r.ok)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_slots_are_skipped_not_stacked() {
    let server = FaultServer::start().await;
    // Each probe hangs for its 350 ms timeout; slots come every 100 ms.
    let targets: Vec<Target> = (0..2)
        .map(|i| target(&server, "hang-tools", &format!("h{i}"), 100, 350))
        .collect();
    let sink = Arc::new(Collect::default());
    let scheduler = Scheduler::new(prober(true), sink.clone(), 64);
    let stats = scheduler.stats();
    let (tx, rx) = watch::channel(false);
    let run = tokio::spawn(scheduler.run(targets, rx));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    tx.send(true).unwrap();
    run.await.unwrap();
    let probes = stats.probes.load(Relaxed);
    let skipped = stats.skipped_overlaps.load(Relaxed);
    // About 3 probes of ~350 ms per target, each followed by a slot that is free.
    assert!((4..=8).contains(&probes), "probes {probes}");
    assert!(skipped >= 10, "skipped {skipped}");
    assert!(stats.peak_running.load(Relaxed) <= 2);
    assert_eq!(stats.failed(FailureReason::Timeout), probes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_promptly() {
    let server = FaultServer::start().await;
    let targets: Vec<Target> = (0..5)
        .map(|i| target(&server, "hang-tools", &format!("h{i}"), 20, 30_000))
        .collect();
    let scheduler = Scheduler::new(prober(true), Arc::new(Collect::default()), 64);
    let stats = scheduler.stats();
    let (tx, rx) = watch::channel(false);
    let run = tokio::spawn(scheduler.run(targets, rx));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stats.in_flight.load(Relaxed), 5);
    let started = Instant::now();
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(1), run)
        .await
        .expect("the scheduler stops within a second")
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(stats.in_flight.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_targets_are_not_probed_and_counted() {
    let server = FaultServer::start().await;
    let targets = vec![target(&server, "good", "g", 60_000, 1000)];
    let scheduler = Scheduler::new(prober(false), Arc::new(Collect::default()), 4);
    let results = scheduler.run_once(targets).await;
    assert_eq!(results.len(), 1);
    assert!(results[0].1.is_err());
    let stats = scheduler.stats();
    assert_eq!(stats.not_probed.load(Relaxed), 1);
    assert_eq!(stats.probes.load(Relaxed), 0);
}

//! `mcpulse run`: every role in one process on the embedded log.
//!
//! Start-up order: log → archive → processors → ingest listeners; once every listener is
//! bound, `{data_dir}/ready.json` names the bound addresses and `/readyz` turns ready.
//! On SIGTERM/SIGINT: stop accepting requests (in-flight ones finish and are acknowledged
//! only once durable), then drain the processors (flush, commit), then close the log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use mcpulse_bus::embedded::EmbeddedBus;
use mcpulse_bus::{Bus, DynBus, GroupStatus, TopicSpec};
use mcpulse_ingest::stats::IngestStats;
use mcpulse_ingest::{Authenticator, Backpressure, Edge, ProbeIngest, TraceIngest};
use mcpulse_processors::Runtime;
use mcpulse_processors::archive::{Archiver, ProbesFormat, SpansFormat, TableFormat};
use mcpulse_processors::dlq::DeadLetters;
use mcpulse_processors::stats::{NamedStats, RuntimeStats};
use mcpulse_queries::QueryEngine;
use mcpulse_schemas::metrics::{MetricsSource, PromWriter};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::Config;
use crate::api::{Health, authorize_queries, health_router};
use crate::archive_store::ArchiveLocation;

/// Consumer group of the span archiver (its lag drives ingest backpressure).
pub const GROUP_ARCHIVE_SPANS: &str = "mcpulse-archive-spans";
/// Consumer group of the probe archiver.
pub const GROUP_ARCHIVE_PROBES: &str = "mcpulse-archive-probes";

/// The addresses `mcpulse run` bound (written to `{data_dir}/ready.json`).
#[derive(Clone, Debug, Serialize)]
pub struct BoundAddrs {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub api: SocketAddr,
}

/// Opens the embedded log with every topic created.
pub async fn open_bus(config: &Config) -> anyhow::Result<DynBus> {
    let bus = EmbeddedBus::open(config.embedded_log()).context("opening the embedded log")?;
    let specs: Vec<TopicSpec> = config
        .topics
        .all()
        .into_iter()
        .map(|name| TopicSpec {
            name,
            partitions: config.partitions(),
            replication: 1,
        })
        .collect();
    bus.ensure_topics(&specs).await.context("creating topics")?;
    Ok(bus)
}

/// Runs every role until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    let ready_file = config.data_dir.join("ready.json");
    let _ = std::fs::remove_file(&ready_file);
    let bus = open_bus(&config).await?;
    let archive = ArchiveLocation::open(&config)?;
    let auth = Arc::new(Authenticator::new(&config.auth).map_err(anyhow::Error::msg)?);
    if config.auth.anonymous_tenant.is_some() {
        warn!(tenant = ?config.auth.anonymous_tenant, "requests without a token are accepted as the anonymous tenant");
    }

    // Processors.
    let (stop_processors, processors_stopped) = watch::channel(false);
    let mut processors = JoinSet::new();
    let spans_stats = Arc::new(RuntimeStats::default());
    let probes_stats = Arc::new(RuntimeStats::default());
    let spans = archiver_runtime(
        &config,
        &bus,
        &archive,
        SpansFormat,
        GROUP_ARCHIVE_SPANS,
        config.topics.spans(),
        spans_stats.clone(),
    );
    processors.spawn(spans.await?.run(processors_stopped.clone()));
    let probes = archiver_runtime(
        &config,
        &bus,
        &archive,
        ProbesFormat,
        GROUP_ARCHIVE_PROBES,
        config.topics.probes(),
        probes_stats.clone(),
    );
    processors.spawn(probes.await?.run(processors_stopped.clone()));

    // Edges.
    let ingest_stats = Arc::new(IngestStats::default());
    let pressure = Backpressure::new(
        config.ingest.max_inflight_bytes,
        config.ingest.max_backlog_messages,
        config.ingest.retry_after,
    );
    let edge = Edge::new(
        bus.producer(),
        config.ingest.clone(),
        pressure.clone(),
        ingest_stats.clone(),
    );
    let traces = TraceIngest::new(edge.clone(), &config.topics);
    let probes = ProbeIngest::new(edge, &config.topics);
    let lag = Arc::new(LagMetrics::default());
    let backlog_task = tokio::spawn(watch_backlog(
        bus.clone(),
        config.topics.spans(),
        pressure.clone(),
        lag.clone(),
    ));

    let grpc_listener = bind(config.listen.otlp_grpc, "listen.otlp_grpc").await?;
    let http_listener = bind(config.listen.otlp_http, "listen.otlp_http").await?;
    let api_listener = bind(config.listen.api, "listen.api").await?;
    let addrs = BoundAddrs {
        otlp_grpc: grpc_listener.local_addr()?,
        otlp_http: http_listener.local_addr()?,
        api: api_listener.local_addr()?,
    };

    let ready = Arc::new(AtomicBool::new(false));
    let sources: Vec<Arc<dyn MetricsSource>> = vec![
        ingest_stats.clone(),
        Arc::new(NamedStats {
            operator: "archive-spans",
            stats: spans_stats,
        }),
        Arc::new(NamedStats {
            operator: "archive-probes",
            stats: probes_stats,
        }),
        lag.clone(),
    ];
    let health = Health {
        ready: ready.clone(),
        sources: Arc::new(sources),
    };
    let engine = QueryEngine::new(archive.catalog(), config.query.clone());
    let api = mcpulse_ingest::http::probe_router(probes, auth.clone(), &config.ingest)
        .merge(mcpulse_queries::http::query_router(
            engine,
            authorize_queries(auth.clone()),
        ))
        .merge(health_router(health));
    let otlp_http = mcpulse_ingest::http::otlp_router(traces.clone(), auth.clone());
    let grpc = mcpulse_ingest::grpc::trace_service(traces, auth);

    let (stop_servers, servers_stopped) = watch::channel(false);
    let mut servers = JoinSet::new();
    let until = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    servers.spawn({
        let stop = until(servers_stopped.clone());
        async move {
            tonic::transport::Server::builder()
                .add_service(grpc)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(grpc_listener),
                    stop,
                )
                .await
                .context("OTLP/gRPC server")
        }
    });
    servers.spawn({
        let stop = until(servers_stopped.clone());
        async move {
            axum::serve(http_listener, otlp_http)
                .with_graceful_shutdown(stop)
                .await
                .context("OTLP/HTTP server")
        }
    });
    servers.spawn({
        let stop = until(servers_stopped.clone());
        async move {
            axum::serve(api_listener, api)
                .with_graceful_shutdown(stop)
                .await
                .context("API server")
        }
    });

    std::fs::write(&ready_file, serde_json::to_vec_pretty(&addrs)?)
        .with_context(|| format!("writing {}", ready_file.display()))?;
    ready.store(true, Ordering::Relaxed);
    info!(otlp_grpc = %addrs.otlp_grpc, otlp_http = %addrs.otlp_http, api = %addrs.api, data_dir = %config.data_dir.display(), archive = %archive.url, "mcpulse is running");

    // Wait for a signal, or for a role to fail.
    let failure = tokio::select! {
        _ = shutdown => None,
        Some(done) = processors.join_next() => Some(describe_exit("processor", done.map_err(anyhow::Error::from).and_then(|r| r.map_err(anyhow::Error::from)))),
        Some(done) = servers.join_next() => Some(describe_exit("server", done.map_err(anyhow::Error::from).and_then(|r| r))),
    };
    info!("shutting down: refusing new requests, draining in-flight ones");
    ready.store(false, Ordering::Relaxed);
    let _ = std::fs::remove_file(&ready_file);
    let _ = stop_servers.send(true);
    while let Some(done) = servers.join_next().await {
        if let Ok(Err(e)) = done {
            warn!(error = %e, "server stopped with an error");
        }
    }
    info!("draining processors: flushing and committing");
    let _ = stop_processors.send(true);
    while let Some(done) = processors.join_next().await {
        match done {
            Ok(Err(e)) => error!(error = %e, "processor failed while draining"),
            Err(e) => error!(error = %e, "processor task panicked"),
            Ok(Ok(())) => {}
        }
    }
    backlog_task.abort();
    bus.shutdown().await.context("closing the log")?;
    info!("stopped");
    match failure {
        Some(message) => Err(anyhow::anyhow!(message)),
        None => Ok(()),
    }
}

fn describe_exit(role: &str, result: anyhow::Result<()>) -> String {
    match result {
        Ok(()) => format!("{role} stopped unexpectedly"),
        Err(e) => format!("{role} failed: {e:#}"),
    }
}

async fn bind(addr: SocketAddr, field: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("{field}: cannot listen on {addr}"))
}

/// A runtime archiving `topic` into `format`'s table as a member of consumer group `group`.
pub async fn archiver_runtime<F: TableFormat>(
    config: &Config,
    bus: &DynBus,
    archive: &ArchiveLocation,
    format: F,
    group: &str,
    topic: String,
    stats: Arc<RuntimeStats>,
) -> anyhow::Result<Runtime> {
    let consumer = bus
        .consumer(group, &[topic])
        .await
        .with_context(|| format!("joining consumer group {group}"))?;
    let archiver = Archiver::new(
        format,
        archive.target.clone(),
        config.archive.clone(),
        None,
        stats.clone(),
    );
    let dlq = DeadLetters::new(bus.producer(), config.topics.dlq());
    Ok(Runtime::new(
        consumer,
        Box::new(archiver),
        dlq,
        config.runtime.clone(),
        stats,
    ))
}

/// Consumer lag of the archivers, for `/metrics` and ingest backpressure.
#[derive(Default)]
pub struct LagMetrics {
    last: std::sync::Mutex<Option<GroupStatus>>,
}

impl MetricsSource for LagMetrics {
    fn render(&self, out: &mut PromWriter) {
        let Some(status) = self.last.lock().expect("not poisoned").clone() else {
            return;
        };
        for p in &status.partitions {
            let partition = p.partition.to_string();
            let labels = [
                ("group", status.group.as_str()),
                ("topic", p.topic.as_str()),
                ("partition", partition.as_str()),
            ];
            out.gauge(
                "mcpulse_bus_end_offset",
                "Next offset of the partition.",
                &labels,
                p.end_offset as f64,
            );
            out.gauge(
                "mcpulse_bus_committed_offset",
                "Committed offset of the group.",
                &labels,
                p.committed.unwrap_or(0) as f64,
            );
            out.gauge(
                "mcpulse_bus_consumer_lag",
                "Messages not yet committed by the group.",
                &labels,
                p.lag() as f64,
            );
        }
    }
}

async fn watch_backlog(bus: DynBus, topic: String, pressure: Backpressure, lag: Arc<LagMetrics>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        match bus
            .status(GROUP_ARCHIVE_SPANS, std::slice::from_ref(&topic))
            .await
        {
            Ok(status) => {
                pressure.set_backlog(status.total_lag());
                *lag.last.lock().expect("not poisoned") = Some(status);
            }
            Err(e) => warn!(error = %e, "reading archiver lag failed"),
        }
    }
}

//! The roles of `mcpulse`, each runnable as its own process on a shared log, or all in one
//! (`mcpulse run`):
//!
//! | role | module | listeners | does |
//! |---|---|---|---|
//! | `run` | [`all`] | otlp_grpc, otlp_http, api | every role below in one process (embedded or Kafka log) |
//! | `ingest` | [`ingest`] | otlp_grpc, otlp_http, api | OTLP receivers and the probe API; backpressure from archiver lag |
//! | `process` | [`process`] | api | the span and probe archivers (members of their consumer groups) |
//! | `serve` | [`serve`] | api | SQL over the archive |
//! | `notify` | [`notify`] | api | the notification stage (`alerts.v1` → receivers of `notify.routes`) |
//! | `probe` | [`prober`] | api | the built-in prober alone (one per region) |
//!
//! `run` and `ingest` also run the prober when `prober.targets` is set.
//!
//! Every role serves `/healthz`, `/readyz` and `/metrics` on the API port, writes the
//! addresses it bound to `{data_dir}/ready.json` once it accepts requests, and drains on
//! SIGTERM/SIGINT in the same order ([`Supervisor::run`]): stop accepting, finish
//! in-flight requests, drain the processors (flush, commit, leave the group), close the log.

pub mod all;
pub mod analytics;
pub mod ingest;
mod lag;
pub mod notify;
pub mod prober;
pub mod process;
pub mod serve;
pub mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use mcpulse_bus::embedded::EmbeddedBus;
use mcpulse_bus::kafka::KafkaBus;
use mcpulse_bus::{DynBus, TopicSpec};
use mcpulse_ingest::Authenticator;
use mcpulse_processors::Runtime;
use mcpulse_processors::archive::{Archiver, TableFormat};
use mcpulse_processors::dlq::DeadLetters;
use mcpulse_processors::stats::RuntimeStats;
use mcpulse_schemas::metrics::{MetricsSource, PromWriter};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, warn};

use crate::Config;
use crate::archive_store::ArchiveLocation;
use crate::config::BusConfig;

pub use lag::LagMetrics;

/// Consumer group of the span archiver (its lag drives ingest backpressure).
pub const GROUP_ARCHIVE_SPANS: &str = "mcpulse-archive-spans";
/// Consumer group of the probe archiver.
pub const GROUP_ARCHIVE_PROBES: &str = "mcpulse-archive-probes";

/// The archiver consumer groups and the topic each reads.
pub fn archiver_groups(config: &Config) -> Vec<(String, String)> {
    vec![
        (GROUP_ARCHIVE_SPANS.to_string(), config.topics.spans()),
        (GROUP_ARCHIVE_PROBES.to_string(), config.topics.probes()),
    ]
}

/// Every processor group that runs with this configuration and the topics it reads:
/// the archivers, then the analytic operators that are enabled, then the notification
/// stage (when it has a routes file).
pub fn processor_groups(config: &Config) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = archiver_groups(config)
        .into_iter()
        .map(|(group, topic)| (group, vec![topic]))
        .collect();
    groups.extend(analytics::analytic_groups(config));
    groups.extend(notify::notify_groups(config));
    groups
}

/// Fails unless the log can be shared between processes (the embedded log cannot).
pub fn require_shared_log(config: &Config, role: &str) -> anyhow::Result<()> {
    if config.is_embedded() {
        anyhow::bail!(
            "`mcpulse {role}` cannot run alone: the embedded log is single-process: use `mcpulse run`, or set bus.kind: kafka"
        );
    }
    Ok(())
}

/// The log in one phrase, for logs and errors.
pub fn describe_bus(config: &Config) -> String {
    match &config.bus {
        BusConfig::Embedded { .. } => {
            format!("embedded log in {}", config.data_dir.join("log").display())
        }
        BusConfig::Kafka(kafka) => format!("Kafka at {}", kafka.bootstrap_servers()),
    }
}

/// Connects to the log without creating anything (embedded: opens, and so locks, the
/// log directory; Kafka: waits for the brokers' metadata).
pub async fn connect_bus(config: &Config) -> anyhow::Result<DynBus> {
    match &config.bus {
        BusConfig::Embedded { .. } => {
            let embedded = config.embedded_log().expect("bus.kind is embedded");
            let dir = embedded.dir.clone();
            let bus = EmbeddedBus::open(embedded)
                .with_context(|| format!("opening the embedded log in {}", dir.display()))?;
            Ok(bus)
        }
        BusConfig::Kafka(kafka) => {
            let bus = KafkaBus::connect(kafka.clone()).await.with_context(|| {
                format!("connecting to Kafka brokers {}", kafka.bootstrap_servers())
            })?;
            Ok(bus)
        }
    }
}

/// Opens the log and makes sure every topic exists with the configured partitions (and,
/// on Kafka, replication).
pub async fn open_bus(config: &Config) -> anyhow::Result<DynBus> {
    let bus = connect_bus(config).await?;
    let specs: Vec<TopicSpec> = config
        .topics
        .all()
        .into_iter()
        .map(|name| TopicSpec {
            name,
            partitions: config.partitions(),
            replication: config.replication(),
        })
        .collect();
    if let Err(e) = bus.ensure_topics(&specs).await {
        let _ = bus.shutdown().await;
        return Err(e).with_context(|| format!("creating topics on the {}", describe_bus(config)));
    }
    Ok(bus)
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

/// The token table of `auth:` (warning when requests without a token are accepted).
pub fn authenticator(config: &Config) -> anyhow::Result<Arc<Authenticator>> {
    let auth = Authenticator::new(&config.auth).map_err(anyhow::Error::msg)?;
    if let Some(tenant) = &config.auth.anonymous_tenant {
        warn!(
            tenant,
            "requests without a token are accepted as the anonymous tenant"
        );
    }
    Ok(Arc::new(auth))
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Binds `addr` (the `field` of `listen:`).
pub async fn bind(addr: SocketAddr, field: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("{field}: cannot listen on {addr}"))
}

/// The addresses a role bound, written to `{data_dir}/ready.json` (listeners the role does
/// not have are left out).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct BoundAddrs {
    pub role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_grpc: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_http: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<SocketAddr>,
}

impl std::fmt::Display for BoundAddrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (name, addr) in [
            ("otlp_grpc", self.otlp_grpc),
            ("otlp_http", self.otlp_http),
            ("api", self.api),
        ] {
            if let Some(addr) = addr {
                if !first {
                    f.write_str(" ")?;
                }
                write!(f, "{name}={addr}")?;
                first = false;
            }
        }
        Ok(())
    }
}

/// `mcpulse_role_info{role, version} 1`: which role a scraped process runs.
pub struct RoleInfo(pub &'static str);

impl MetricsSource for RoleInfo {
    fn render(&self, out: &mut PromWriter) {
        out.gauge(
            "mcpulse_role_info",
            "The role this process runs (1).",
            &[("role", self.0), ("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
    }
}

/// The tasks of one role and the order they stop in: servers first (stop accepting,
/// finish in-flight requests), then processors (flush, commit, leave the group), then
/// background tasks, then the log.
pub struct Supervisor {
    role: &'static str,
    ready_file: PathBuf,
    ready: Arc<AtomicBool>,
    stop_servers: watch::Sender<bool>,
    servers: JoinSet<anyhow::Result<()>>,
    stop_processors: watch::Sender<bool>,
    processors: JoinSet<anyhow::Result<()>>,
    background: Vec<JoinHandle<()>>,
    /// Optional listeners beyond [`BoundAddrs`] (e.g. `pg`), reported the same way.
    extra_listeners: Vec<(&'static str, SocketAddr)>,
}

impl Supervisor {
    /// Creates `data_dir` and removes a stale `ready.json`.
    pub fn new(role: &'static str, config: &Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
        let ready_file = config.data_dir.join("ready.json");
        let _ = std::fs::remove_file(&ready_file);
        Ok(Self {
            role,
            ready_file,
            ready: Arc::new(AtomicBool::new(false)),
            stop_servers: watch::channel(false).0,
            servers: JoinSet::new(),
            stop_processors: watch::channel(false).0,
            processors: JoinSet::new(),
            background: Vec::new(),
            extra_listeners: Vec::new(),
        })
    }

    /// The readiness flag `/readyz` reports (set once every listener serves).
    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    /// Reports one more bound listener in `ready.json` and the running line (e.g. `pg`,
    /// the PostgreSQL endpoint), beside those of [`BoundAddrs`].
    pub fn announce_listener(&mut self, name: &'static str, addr: SocketAddr) {
        self.extra_listeners.push((name, addr));
    }

    /// Runs a stream processor until the drain.
    pub fn spawn_processor(&mut self, runtime: Runtime) {
        let stop = self.stop_processors.subscribe();
        self.processors
            .spawn(async move { runtime.run(stop).await.map_err(anyhow::Error::from) });
    }

    /// Runs an edge task (like the prober) until the drain: `task` gets a flag that turns
    /// true when the servers stop, and should return once it has delivered what it holds.
    pub fn spawn_edge<F, Fut>(&mut self, what: &'static str, task: F)
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let stop = self.stop_servers.subscribe();
        let fut = task(stop);
        self.servers
            .spawn(async move { fut.await.with_context(|| what.to_string()) });
    }

    /// A task aborted once the processors have drained (e.g. the lag watcher).
    pub fn spawn_background(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.background.push(tokio::spawn(task));
    }

    fn until_stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop_servers.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Serves `router` on `listener` until the drain (in-flight requests finish).
    pub fn serve_http(&mut self, what: &'static str, listener: TcpListener, router: axum::Router) {
        let stop = self.until_stopped();
        self.servers.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
                .context(what)
        });
    }

    /// Serves the OTLP/gRPC trace service on `listener` until the drain.
    pub fn serve_otlp_grpc(
        &mut self,
        listener: TcpListener,
        service: mcpulse_ingest::grpc::TraceGrpcService,
    ) {
        let stop = self.until_stopped();
        self.servers.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    stop,
                )
                .await
                .context("OTLP/gRPC server")
        });
    }

    /// Announces readiness (ready file, `/readyz`, one log line), then runs until
    /// `shutdown` resolves or a server or processor stops, and drains. Fails if anything
    /// failed, including while draining.
    pub async fn run(
        mut self,
        addrs: BoundAddrs,
        bus: Option<DynBus>,
        details: String,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let role = self.role;
        let mut ready = serde_json::to_value(&addrs)?;
        let mut listed = addrs.to_string();
        for (name, addr) in &self.extra_listeners {
            ready[*name] = serde_json::Value::String(addr.to_string());
            listed = format!("{listed} {name}={addr}");
        }
        let written = serde_json::to_vec_pretty(&ready)?;
        std::fs::write(&self.ready_file, &written)
            .with_context(|| format!("writing {}", self.ready_file.display()))?;
        self.ready.store(true, Ordering::Relaxed);
        info!(role, addrs = %listed, "mcpulse {role} is running: {details}");

        let mut failures = Vec::new();
        tokio::select! {
            _ = shutdown => info!(role, "shutdown requested"),
            Some(done) = self.processors.join_next() => failures.push(describe_exit("processor", done)),
            Some(done) = self.servers.join_next() => failures.push(describe_exit("server", done)),
        }
        if let Some(failure) = failures.first() {
            error!(role, "{failure}");
        }

        info!(
            role,
            "shutting down: refusing new requests, draining in-flight ones"
        );
        self.ready.store(false, Ordering::Relaxed);
        // Another process sharing the data_dir may have written its own file since.
        if std::fs::read(&self.ready_file).is_ok_and(|now| now == written) {
            let _ = std::fs::remove_file(&self.ready_file);
        }
        let _ = self.stop_servers.send(true);
        while let Some(done) = self.servers.join_next().await {
            if let Err(e) = flatten(done) {
                error!(
                    role,
                    error = format!("{e:#}"),
                    "server stopped with an error"
                );
                failures.push(format!("server failed while draining: {e:#}"));
            }
        }
        if !self.processors.is_empty() {
            info!(
                role,
                "draining processors: flushing, committing, leaving the consumer groups"
            );
        }
        let _ = self.stop_processors.send(true);
        while let Some(done) = self.processors.join_next().await {
            if let Err(e) = flatten(done) {
                error!(
                    role,
                    error = format!("{e:#}"),
                    "processor failed while draining"
                );
                failures.push(format!("processor failed while draining: {e:#}"));
            }
        }
        for task in self.background.drain(..) {
            task.abort();
        }
        if let Some(bus) = bus
            && let Err(e) = bus.shutdown().await
        {
            error!(role, error = %e, "closing the log failed");
            failures.push(format!("closing the log: {e}"));
        }
        if failures.is_empty() {
            info!(role, "stopped");
            Ok(())
        } else {
            warn!(role, failures = failures.len(), "stopped after a failure");
            Err(anyhow::anyhow!(failures.join("; ")))
        }
    }
}

fn flatten(done: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    done.map_err(|e| anyhow::anyhow!("task panicked: {e}"))?
}

fn describe_exit(what: &str, done: Result<anyhow::Result<()>, tokio::task::JoinError>) -> String {
    match flatten(done) {
        Ok(()) => format!("{what} stopped unexpectedly"),
        Err(e) => format!("{what} failed: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_file_leaves_out_unbound_listeners() {
        let addrs = BoundAddrs {
            role: "process",
            api: Some("127.0.0.1:7080".parse().unwrap()),
            ..BoundAddrs::default()
        };
        assert_eq!(
            serde_json::to_value(&addrs).unwrap(),
            serde_json::json!({"role": "process", "api": "127.0.0.1:7080"})
        );
        assert_eq!(addrs.to_string(), "api=127.0.0.1:7080");
    }

    #[test]
    fn split_roles_refuse_the_embedded_log() {
        let err = require_shared_log(&Config::embedded_default(), "ingest").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`mcpulse ingest` cannot run alone: the embedded log is single-process: use `mcpulse run`, or set bus.kind: kafka"
        );
    }
}

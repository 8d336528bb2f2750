//! `mcpulse ingest`: the edges. OTLP/gRPC, OTLP/HTTP, the probe API, the Alertmanager
//! alerts API and (with
//! `prober.targets`) the built-in prober append to the log;
//! the span archiver's lag turns into backpressure (429 / `RESOURCE_EXHAUSTED`).

use std::sync::Arc;

use mcpulse_bus::DynBus;
use mcpulse_ingest::stats::IngestStats;
use mcpulse_ingest::{AlertIngest, Authenticator, Backpressure, Edge, ProbeIngest, TraceIngest};
use mcpulse_schemas::metrics::MetricsSource;

use super::lag::{LagMetrics, watch_lag};
use super::prober::{ProberOverrides, ProberPlan};
use super::{
    BoundAddrs, GROUP_ARCHIVE_SPANS, RoleInfo, Supervisor, authenticator, bind, describe_bus,
    open_bus, require_shared_log,
};
use crate::Config;
use crate::api::{Health, health_router};

/// The receivers of one process, writing to the log.
pub struct Edges {
    pub traces: TraceIngest,
    pub probes: ProbeIngest,
    /// `POST /api/v2/alerts` (Alertmanager API v2) into `findings.v1`.
    pub alerts: AlertIngest,
    pub stats: Arc<IngestStats>,
    pub pressure: Backpressure,
}

impl Edges {
    pub fn new(config: &Config, bus: &DynBus) -> Self {
        let stats = Arc::new(IngestStats::default());
        let pressure = Backpressure::new(
            config.ingest.max_inflight_bytes,
            config.ingest.max_backlog_messages,
            config.ingest.retry_after,
        );
        let edge = Edge::new(
            bus.producer(),
            config.ingest.clone(),
            pressure.clone(),
            stats.clone(),
        );
        Self {
            traces: TraceIngest::new(edge.clone(), &config.topics),
            probes: ProbeIngest::new(edge.clone(), &config.topics),
            alerts: AlertIngest::new(
                edge,
                &config.topics,
                config.incidents.external.cause_labels(),
            ),
            stats,
            pressure,
        }
    }

    /// `POST /v1/probes` and `POST /api/v2/alerts`, for the API port.
    pub fn probe_router(&self, config: &Config, auth: &Arc<Authenticator>) -> axum::Router {
        mcpulse_ingest::http::probe_router(self.probes.clone(), auth.clone(), &config.ingest).merge(
            mcpulse_ingest::http::alertmanager_router(
                self.alerts.clone(),
                auth.clone(),
                &config.ingest,
            ),
        )
    }

    /// `POST /v1/traces`, for the OTLP/HTTP port.
    pub fn otlp_router(&self, auth: &Arc<Authenticator>) -> axum::Router {
        mcpulse_ingest::http::otlp_router(self.traces.clone(), auth.clone())
    }

    /// The OTLP/gRPC trace service.
    pub fn grpc_service(
        &self,
        auth: &Arc<Authenticator>,
    ) -> mcpulse_ingest::grpc::TraceGrpcService {
        mcpulse_ingest::grpc::trace_service(self.traces.clone(), auth.clone())
    }
}

/// Runs the ingest role until `shutdown` resolves (Kafka only).
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    require_shared_log(&config, "ingest")?;
    let mut roles = Supervisor::new("ingest", &config)?;
    let auth = authenticator(&config)?;
    let prober = ProberPlan::load(&config, &ProberOverrides::default())?;
    let grpc_listener = bind(config.listen.otlp_grpc, "listen.otlp_grpc").await?;
    let http_listener = bind(config.listen.otlp_http, "listen.otlp_http").await?;
    let api_listener = bind(config.listen.api, "listen.api").await?;
    let addrs = BoundAddrs {
        role: "ingest",
        otlp_grpc: Some(grpc_listener.local_addr()?),
        otlp_http: Some(http_listener.local_addr()?),
        api: Some(api_listener.local_addr()?),
    };

    let bus = open_bus(&config).await?;
    let edges = Edges::new(&config, &bus);
    let lag = Arc::new(LagMetrics::default());
    roles.spawn_background(watch_lag(
        bus.clone(),
        vec![(GROUP_ARCHIVE_SPANS.to_string(), vec![config.topics.spans()])],
        lag.clone(),
        Some(edges.pressure.clone()),
    ));
    let mut sources: Vec<Arc<dyn MetricsSource>> =
        vec![Arc::new(RoleInfo("ingest")), edges.stats.clone(), lag];
    let mut details = describe_bus(&config);
    if let Some(prober) = prober {
        sources.push(prober.metrics());
        details = format!("{details}, {}", prober.describe());
        prober.spawn(&config, edges.probes.clone(), &mut roles);
    }
    let health = Health {
        ready: roles.ready_flag(),
        sources: Arc::new(sources),
        auth: None,
    };
    roles.serve_otlp_grpc(grpc_listener, edges.grpc_service(&auth));
    roles.serve_http("OTLP/HTTP server", http_listener, edges.otlp_router(&auth));
    roles.serve_http(
        "API server",
        api_listener,
        edges
            .probe_router(&config, &auth)
            .merge(health_router(health)),
    );
    roles.run(addrs, Some(bus), details, shutdown).await
}

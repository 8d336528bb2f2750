//! `mcpulse run`: every role in one process, on the embedded log (the default) or Kafka,
//! with the built-in prober when `prober.targets` is set and the notification stage when
//! `notify.routes` is.
//!
//! Start-up order: listeners bound → log → archive → processors → servers; once every
//! server runs, `{data_dir}/ready.json` names the bound addresses and `/readyz` turns
//! ready. On SIGTERM/SIGINT: stop accepting requests (in-flight ones finish and are
//! acknowledged only once durable), then drain the processors (flush, commit), then close
//! the log.

use std::sync::Arc;

use mcpulse_schemas::metrics::MetricsSource;

use super::analytics::start_analytics;
use super::ingest::Edges;
use super::lag::{LagMetrics, watch_lag};
use super::notify::start_notify;
use super::prober::{ProberOverrides, ProberPlan};
use super::process::start_archivers;
use super::serve::{bind_pg, query_router, serve_pg};
use super::{
    BoundAddrs, RoleInfo, Supervisor, authenticator, bind, describe_bus, open_bus, processor_groups,
};
use crate::Config;
use crate::api::{Health, health_router};
use crate::archive_store::ArchiveLocation;

/// Runs every role until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut roles = Supervisor::new("run", &config)?;
    let auth = authenticator(&config)?;
    let prober = ProberPlan::load(&config, &ProberOverrides::default())?;
    let grpc_listener = bind(config.listen.otlp_grpc, "listen.otlp_grpc").await?;
    let http_listener = bind(config.listen.otlp_http, "listen.otlp_http").await?;
    let api_listener = bind(config.listen.api, "listen.api").await?;
    let pg_listener = bind_pg(&config).await?;
    let addrs = BoundAddrs {
        role: "run",
        otlp_grpc: Some(grpc_listener.local_addr()?),
        otlp_http: Some(http_listener.local_addr()?),
        api: Some(api_listener.local_addr()?),
    };

    let bus = open_bus(&config).await?;
    let archive = ArchiveLocation::connect(&config).await?;
    let mut sources: Vec<Arc<dyn MetricsSource>> = vec![Arc::new(RoleInfo("run"))];
    sources.extend(start_archivers(&config, &bus, &archive, &mut roles).await?);
    sources.extend(start_analytics(&config, &bus, &archive, &mut roles).await?);
    sources.extend(start_notify(&config, &bus, &archive, &mut roles).await?);
    crate::admin::spawn_maintenance(&config, &archive, &mut roles);

    let edges = Edges::new(&config, &bus);
    let lag = Arc::new(LagMetrics::default());
    roles.spawn_background(watch_lag(
        bus.clone(),
        processor_groups(&config),
        lag.clone(),
        Some(edges.pressure.clone()),
    ));
    sources.insert(1, edges.stats.clone());
    sources.push(lag);
    let mut details = format!(
        "{}, archive {}, data_dir {}",
        describe_bus(&config),
        archive.url,
        config.data_dir.display()
    );
    if let Some(prober) = prober {
        sources.push(prober.metrics());
        details = format!("{details}, {}", prober.describe());
        prober.spawn(&config, edges.probes.clone(), &mut roles);
    }
    let health = Health {
        ready: roles.ready_flag(),
        sources: Arc::new(sources),
        auth: Some(auth.clone()),
    };
    let api = edges
        .probe_router(&config, &auth)
        .merge(query_router(&config, &archive, &auth))
        .merge(crate::api::silences_router(
            crate::routes_cli::silences::SilenceStore::in_data_dir(&config.data_dir),
            auth.clone(),
        ))
        .merge(health_router(health));
    roles.serve_otlp_grpc(grpc_listener, edges.grpc_service(&auth));
    roles.serve_http("OTLP/HTTP server", http_listener, edges.otlp_router(&auth));
    roles.serve_http("API server", api_listener, api);
    if let Some(listener) = pg_listener {
        serve_pg(&mut roles, &config, &archive, &auth, listener)?;
    }
    roles.run(addrs, Some(bus), details, shutdown).await
}

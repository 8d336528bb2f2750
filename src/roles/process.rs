//! `mcpulse process`: the stream processors (the span and probe archivers, the signals
//! and drift operators), each a member of its consumer group; run as many instances as
//! there are partitions to share.

use std::sync::Arc;

use mcpulse_bus::DynBus;
use mcpulse_processors::archive::{ProbesFormat, SpansFormat};
use mcpulse_processors::stats::{NamedStats, RuntimeStats};
use mcpulse_schemas::metrics::MetricsSource;

use super::lag::{LagMetrics, watch_lag};
use super::{
    BoundAddrs, GROUP_ARCHIVE_PROBES, GROUP_ARCHIVE_SPANS, RoleInfo, Supervisor, archiver_runtime,
    bind, describe_bus, open_bus, processor_groups, require_shared_log,
};
use crate::Config;
use crate::api::{Health, health_router};
use crate::archive_store::ArchiveLocation;

/// Joins both archiver groups and starts their runtimes under `roles`; returns their
/// metrics.
pub async fn start_archivers(
    config: &Config,
    bus: &DynBus,
    archive: &ArchiveLocation,
    roles: &mut Supervisor,
) -> anyhow::Result<Vec<Arc<dyn MetricsSource>>> {
    let spans_stats = Arc::new(RuntimeStats::default());
    let probes_stats = Arc::new(RuntimeStats::default());
    let spans = archiver_runtime(
        config,
        bus,
        archive,
        SpansFormat,
        GROUP_ARCHIVE_SPANS,
        config.topics.spans(),
        spans_stats.clone(),
    )
    .await?;
    roles.spawn_processor(spans);
    let probes = archiver_runtime(
        config,
        bus,
        archive,
        ProbesFormat,
        GROUP_ARCHIVE_PROBES,
        config.topics.probes(),
        probes_stats.clone(),
    )
    .await?;
    roles.spawn_processor(probes);
    Ok(vec![
        Arc::new(NamedStats {
            operator: "archive-spans",
            stats: spans_stats,
        }),
        Arc::new(NamedStats {
            operator: "archive-probes",
            stats: probes_stats,
        }),
    ])
}

/// Runs the process role until `shutdown` resolves (Kafka only).
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    require_shared_log(&config, "process")?;
    let mut roles = Supervisor::new("process", &config)?;
    let api_listener = bind(config.listen.api, "listen.api").await?;
    let addrs = BoundAddrs {
        role: "process",
        api: Some(api_listener.local_addr()?),
        ..BoundAddrs::default()
    };

    let archive = ArchiveLocation::connect(&config).await?;
    let bus = open_bus(&config).await?;
    let mut sources: Vec<Arc<dyn MetricsSource>> = vec![Arc::new(RoleInfo("process"))];
    sources.extend(start_archivers(&config, &bus, &archive, &mut roles).await?);
    sources.extend(super::analytics::start_analytics(&config, &bus, &archive, &mut roles).await?);
    // The role that owns archive maintenance in split deployments.
    crate::admin::spawn_maintenance(&config, &archive, &mut roles);
    let lag = Arc::new(LagMetrics::default());
    roles.spawn_background(watch_lag(
        bus.clone(),
        processor_groups(&config),
        lag.clone(),
        None,
    ));
    sources.push(lag);
    let health = Health {
        ready: roles.ready_flag(),
        sources: Arc::new(sources),
        auth: Some(super::authenticator(&config)?),
    };
    roles.serve_http("API server", api_listener, health_router(health));
    let details = format!("{}, archive {}", describe_bus(&config), archive.url);
    roles.run(addrs, Some(bus), details, shutdown).await
}

//! The notification stage (`alerts.v1` → the receivers of `notify.routes`), as a member of
//! consumer group `mcpulse-notify`: inside `mcpulse run`, or alone as `mcpulse notify`
//! (Kafka only; run several, they share the partitions).

use std::sync::Arc;

use anyhow::Context;
use mcpulse_bus::DynBus;
use mcpulse_processors::Runtime;
use mcpulse_processors::dlq::DeadLetters;
use mcpulse_processors::stats::{NamedStats, RuntimeStats};
use mcpulse_schemas::metrics::MetricsSource;
use mcpulse_sinks::notify::{GROUP_NOTIFY, NotifyMetrics, NotifyOperator, NotifySetup};
use tracing::info;

use super::lag::{LagMetrics, watch_lag};
use super::{
    BoundAddrs, RoleInfo, Supervisor, bind, describe_bus, open_bus, processor_groups,
    require_shared_log,
};
use crate::Config;
use crate::api::{Health, health_router};
use crate::archive_store::ArchiveLocation;

/// The notification group and the topic it reads, when the stage runs.
pub fn notify_groups(config: &Config) -> Vec<(String, Vec<String>)> {
    if config.notify.active() {
        vec![(GROUP_NOTIFY.to_string(), vec![config.topics.alerts()])]
    } else {
        Vec::new()
    }
}

/// Joins `mcpulse-notify` and starts the stage under `roles` when `notify.routes` is set
/// (and `notify.enabled`); returns its metrics. Fails when the routes file does not load.
pub async fn start_notify(
    config: &Config,
    bus: &DynBus,
    archive: &ArchiveLocation,
    roles: &mut Supervisor,
) -> anyhow::Result<Vec<Arc<dyn MetricsSource>>> {
    if !config.notify.active() {
        info!("notifications off (no notify.routes): alerts.v1 is not delivered");
        return Ok(Vec::new());
    }
    let metrics = Arc::new(NotifyMetrics::default());
    let stats = Arc::new(RuntimeStats::default());
    let operator = NotifyOperator::new(NotifySetup {
        config: config.notify.clone(),
        silences: config.data_dir.join("silences.json"),
        archive: config.archive.clone(),
        target: archive.target.clone(),
        producer: bus.producer(),
        dlq_topic: config.topics.dlq(),
        metrics: metrics.clone(),
        stats: stats.clone(),
        deletion_poll: Some(config.archive.maintenance.deletion_poll),
    })
    .context("notify.routes")?;
    info!(
        routes = %config.notify.routes.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        integrations = operator.routing().integration_count(),
        "notifications on"
    );
    let consumer = bus
        .consumer(GROUP_NOTIFY, &[config.topics.alerts()])
        .await
        .with_context(|| format!("joining consumer group {GROUP_NOTIFY}"))?;
    let dlq = DeadLetters::new(bus.producer(), config.topics.dlq());
    roles.spawn_processor(Runtime::new(
        consumer,
        Box::new(operator),
        dlq,
        config.runtime.clone(),
        stats.clone(),
    ));
    Ok(vec![
        metrics,
        Arc::new(NamedStats {
            operator: "notify",
            stats,
        }),
    ])
}

/// Runs the notify role until `shutdown` resolves (Kafka only).
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    require_shared_log(&config, "notify")?;
    if !config.notify.active() {
        anyhow::bail!(
            "`mcpulse notify` has nothing to do: set notify.routes (and notify.enabled: true)"
        );
    }
    let mut roles = Supervisor::new("notify", &config)?;
    let api_listener = bind(config.listen.api, "listen.api").await?;
    let addrs = BoundAddrs {
        role: "notify",
        api: Some(api_listener.local_addr()?),
        ..BoundAddrs::default()
    };
    let archive = ArchiveLocation::connect(&config).await?;
    let bus = open_bus(&config).await?;
    let mut sources: Vec<Arc<dyn MetricsSource>> = vec![Arc::new(RoleInfo("notify"))];
    sources.extend(start_notify(&config, &bus, &archive, &mut roles).await?);
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
        auth: None,
    };
    roles.serve_http("API server", api_listener, health_router(health));
    let details = format!("{}, archive {}", describe_bus(&config), archive.url);
    roles.run(addrs, Some(bus), details, shutdown).await
}

//! The analytic operators: golden signals (spans and probes into the `signals` table and
//! rule findings), schema drift (probes into the `drift` table and findings), and the
//! incident pipeline (probes into verdicts on `findings.v1`; findings into incident
//! transitions on `alerts.v1` and the `alerts` table), each a [`StatefulOperator`] in its
//! own consumer group, checkpointing next to the archive.

use std::sync::Arc;

use anyhow::Context;
use mcpulse_bus::DynBus;
use mcpulse_processors::Runtime;
use mcpulse_processors::dlq::DeadLetters;
use mcpulse_processors::drift::{DriftContext, DriftLogic};
use mcpulse_processors::incidents::fleet::FleetView;
use mcpulse_processors::incidents::{
    IncidentContext, IncidentLogic, IncidentMetrics, VerdictContext, VerdictLogic, VerdictMetrics,
};
use mcpulse_processors::live::{LiveIncidents, LiveSignals};
use mcpulse_processors::signals::{SignalsContext, SignalsLogic};
use mcpulse_processors::stateful::{FindingsOutput, PartitionLogic, StatefulOperator};
use mcpulse_processors::stats::{NamedStats, RuntimeStats};
use mcpulse_schemas::Table;
use mcpulse_schemas::metrics::MetricsSource;

use super::Supervisor;
use crate::Config;
use crate::archive_store::ArchiveLocation;

/// Consumer group of the golden-signals operator.
pub const GROUP_SIGNALS: &str = "mcpulse-signals";
/// Consumer group of the schema-drift operator.
pub const GROUP_DRIFT: &str = "mcpulse-drift";
/// Consumer group of the verdict stage (probes into verdicts).
pub const GROUP_VERDICT: &str = "mcpulse-verdict";
/// Consumer group of the incident stage (findings into incident transitions).
pub const GROUP_INCIDENTS: &str = "mcpulse-incidents";

/// The analytic groups that run with this configuration and the topics each reads.
pub fn analytic_groups(config: &Config) -> Vec<(String, Vec<String>)> {
    let mut groups = Vec::new();
    if config.signals.enabled {
        groups.push((
            GROUP_SIGNALS.to_string(),
            vec![config.topics.spans(), config.topics.probes()],
        ));
    }
    if config.drift.enabled {
        groups.push((GROUP_DRIFT.to_string(), vec![config.topics.probes()]));
    }
    if config.incidents.enabled {
        groups.push((GROUP_VERDICT.to_string(), vec![config.topics.probes()]));
        groups.push((GROUP_INCIDENTS.to_string(), vec![config.topics.findings()]));
    }
    groups
}

#[allow(clippy::too_many_arguments)]
async fn runtime<L: PartitionLogic>(
    config: &Config,
    bus: &DynBus,
    archive: &ArchiveLocation,
    name: &'static str,
    context: L::Context,
    table: Table,
    group: &str,
    topics: Vec<String>,
    flush_interval: std::time::Duration,
    stats: Arc<RuntimeStats>,
) -> anyhow::Result<Runtime> {
    let consumer = bus
        .consumer(group, &topics)
        .await
        .with_context(|| format!("joining consumer group {group}"))?;
    let findings = FindingsOutput {
        producer: bus.producer(),
        topic: config.topics.findings(),
        alerts_topic: config.topics.alerts(),
    };
    let operator = StatefulOperator::<L>::new(
        name,
        context,
        table,
        archive.target.clone(),
        config.archive.clone(),
        findings,
        stats.clone(),
    )
    .with_flush_interval(flush_interval)
    .with_deletions(config.archive.maintenance.deletion_poll);
    let dlq = DeadLetters::new(bus.producer(), config.topics.dlq());
    Ok(Runtime::new(
        consumer,
        Box::new(operator),
        dlq,
        config.runtime.clone(),
        stats,
    ))
}

/// Joins the analytic groups that are enabled and starts their runtimes under `roles`;
/// returns their metrics, the live golden signals (`metrics:`) among them.
pub async fn start_analytics(
    config: &Config,
    bus: &DynBus,
    archive: &ArchiveLocation,
    roles: &mut Supervisor,
) -> anyhow::Result<Vec<Arc<dyn MetricsSource>>> {
    let mut sources: Vec<Arc<dyn MetricsSource>> = Vec::new();
    if config.signals.enabled {
        let context = SignalsContext::new(
            config.signals.clone(),
            config.topics.spans(),
            config.topics.probes(),
        )
        .map_err(anyhow::Error::msg)?;
        sources.push(context.metrics.clone());
        let context = if config.metrics.live_signals {
            let live = Arc::new(LiveSignals::new(&config.metrics));
            sources.push(live.clone());
            context.with_live(live)
        } else {
            context
        };
        let stats = Arc::new(RuntimeStats::default());
        let runtime = runtime::<SignalsLogic>(
            config,
            bus,
            archive,
            "signals",
            context,
            Table::Signals,
            GROUP_SIGNALS,
            vec![config.topics.spans(), config.topics.probes()],
            config.signals.flush_interval,
            stats.clone(),
        )
        .await?;
        roles.spawn_processor(runtime);
        sources.push(Arc::new(NamedStats {
            operator: "signals",
            stats,
        }));
    }
    if config.drift.enabled {
        let context = DriftContext::new(config.drift.clone());
        sources.push(context.metrics.clone());
        let stats = Arc::new(RuntimeStats::default());
        let runtime = runtime::<DriftLogic>(
            config,
            bus,
            archive,
            "drift",
            context,
            Table::Drift,
            GROUP_DRIFT,
            vec![config.topics.probes()],
            config.drift.flush_interval,
            stats.clone(),
        )
        .await?;
        roles.spawn_processor(runtime);
        sources.push(Arc::new(NamedStats {
            operator: "drift",
            stats,
        }));
    }
    if config.incidents.enabled {
        let incidents = &config.incidents;
        let window_minutes = (incidents.active_window.as_secs() / 60).max(1) as i64;
        let verdict_metrics = Arc::new(VerdictMetrics::default());
        sources.push(verdict_metrics.clone());
        // One view of the active tenants for both stages: probes mark tenants active in
        // the verdict stage, alerts received on the Alertmanager API in the incident stage.
        let fleet = Arc::new(FleetView::new(window_minutes));
        let context = VerdictContext {
            settings: incidents.verdict(),
            fleet: fleet.clone(),
            metrics: verdict_metrics,
        };
        let stats = Arc::new(RuntimeStats::default());
        // The verdict stage writes no table: its output is messages on findings.v1.
        let verdict_runtime = runtime::<VerdictLogic>(
            config,
            bus,
            archive,
            "verdict",
            context,
            Table::Alerts,
            GROUP_VERDICT,
            vec![config.topics.probes()],
            incidents.flush_interval,
            stats.clone(),
        )
        .await?;
        roles.spawn_processor(verdict_runtime);
        sources.push(Arc::new(NamedStats {
            operator: "verdict",
            stats,
        }));

        let live = config.metrics.live_signals.then(|| {
            let live = Arc::new(LiveIncidents::new(&config.metrics));
            sources.push(live.clone());
            live
        });
        let incident_metrics = Arc::new(IncidentMetrics {
            live,
            ..IncidentMetrics::default()
        });
        sources.push(incident_metrics.clone());
        let context = IncidentContext {
            engine: incidents.engine(),
            settings: incidents.verdict(),
            metrics: incident_metrics,
            fleet,
        };
        let stats = Arc::new(RuntimeStats::default());
        let runtime = runtime::<IncidentLogic>(
            config,
            bus,
            archive,
            "incidents",
            context,
            Table::Alerts,
            GROUP_INCIDENTS,
            vec![config.topics.findings()],
            incidents.flush_interval,
            stats.clone(),
        )
        .await?;
        roles.spawn_processor(runtime);
        sources.push(Arc::new(NamedStats {
            operator: "incidents",
            stats,
        }));
    }
    Ok(sources)
}

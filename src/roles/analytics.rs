//! The analytic operators: golden signals (spans and probes into the `signals` table and
//! rule findings) and schema drift (probes into the `drift` table and findings), each a
//! [`StatefulOperator`] in its own consumer group, checkpointing next to the archive.

use std::sync::Arc;

use anyhow::Context;
use mcpulse_bus::DynBus;
use mcpulse_processors::Runtime;
use mcpulse_processors::dlq::DeadLetters;
use mcpulse_processors::drift::{DriftContext, DriftLogic};
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
    .with_flush_interval(flush_interval);
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
/// returns their metrics.
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
    Ok(sources)
}

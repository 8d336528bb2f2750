//! The schema-drift operator's logic for one partition of `probes.v1` (keyed by
//! tenant/server, so one partition sees every probe of a server, from every region, in
//! order): each probe result with a tool-list hash is an observation for its server's
//! [`ServerTracker`]; the events it yields become `drift` rows and findings at the next
//! flush. The trackers are the checkpointed state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use mcpulse_bus::{Record, TopicPartition};
use mcpulse_schemas::metrics::{MetricsSource, PromWriter};
use mcpulse_schemas::probe::ProbeResult;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::rows::{DriftRow, row_of, to_batch};
use super::tracker::{DriftConfig, DriftEvent, Observation, ServerTracker, to_finding};
use crate::archive::PartitionKey;
use crate::operator::OperatorError;
use crate::stateful::{Closed, PartitionLogic};

/// Counters of the drift operator, on `/metrics`.
#[derive(Debug, Default)]
pub struct DriftMetrics {
    /// Probe results with a tool-list hash.
    pub observations: AtomicU64,
    pub baselines: AtomicU64,
    pub drifts: AtomicU64,
    pub inconsistent: AtomicU64,
}

impl MetricsSource for DriftMetrics {
    fn render(&self, out: &mut PromWriter) {
        out.counter(
            "mcpulse_drift_observations_total",
            "Probe results with a tool-list hash seen by the drift operator.",
            &[],
            self.observations.load(Relaxed),
        );
        out.counter(
            "mcpulse_drift_baselines_total",
            "Servers whose first tool list was confirmed.",
            &[],
            self.baselines.load(Relaxed),
        );
        out.counter(
            "mcpulse_drift_changes_total",
            "Confirmed tool-list changes.",
            &[],
            self.drifts.load(Relaxed),
        );
        out.counter(
            "mcpulse_drift_fleet_inconsistent_total",
            "Servers reported as serving alternating tool lists.",
            &[],
            self.inconsistent.load(Relaxed),
        );
    }
}

/// What every partition shares.
pub struct DriftContext {
    pub config: DriftConfig,
    pub metrics: Arc<DriftMetrics>,
}

impl DriftContext {
    pub fn new(config: DriftConfig) -> Self {
        Self {
            config,
            metrics: Arc::new(DriftMetrics::default()),
        }
    }
}

/// The checkpointed state: one tracker per `tenant/server`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DriftState {
    pub trackers: BTreeMap<String, ServerTracker>,
}

/// The logic of one partition.
pub struct DriftLogic {
    config: DriftConfig,
    trackers: BTreeMap<(String, String), ServerTracker>,
    /// Events since the last close, in order.
    events: Vec<(String, String, DriftEvent)>,
    metrics: Arc<DriftMetrics>,
}

impl DriftLogic {
    /// The tracker of `tenant`/`server`, if any.
    pub fn tracker(&self, tenant: &str, server: &str) -> Option<&ServerTracker> {
        self.trackers.get(&(tenant.to_string(), server.to_string()))
    }
}

impl PartitionLogic for DriftLogic {
    type State = DriftState;
    type Context = DriftContext;

    fn restore(context: &DriftContext, _tp: &TopicPartition, state: Option<DriftState>) -> Self {
        let trackers = state
            .unwrap_or_default()
            .trackers
            .into_iter()
            .filter_map(|(key, tracker)| {
                let (tenant, server) = key.split_once('/')?;
                Some(((tenant.to_string(), server.to_string()), tracker))
            })
            .collect();
        Self {
            config: context.config.clone(),
            trackers,
            events: Vec::new(),
            metrics: context.metrics.clone(),
        }
    }

    fn snapshot(&self) -> DriftState {
        DriftState {
            trackers: self
                .trackers
                .iter()
                .map(|((tenant, server), t)| (format!("{tenant}/{server}"), t.clone()))
                .collect(),
        }
    }

    fn process(&mut self, tenant: &str, record: &Record) -> Result<(), String> {
        let probe: ProbeResult =
            serde_json::from_slice(&record.value).map_err(|e| format!("probe result: {e}"))?;
        let Some(hash) = probe.tools_hash.as_deref() else {
            // A failed probe (or one without tools): nothing to say about the tool list.
            return Ok(());
        };
        self.metrics.observations.fetch_add(1, Relaxed);
        let tracker = self
            .trackers
            .entry((tenant.to_string(), probe.server.clone()))
            .or_default();
        let events = tracker.observe(
            Observation {
                time: probe.started_at,
                region: &probe.region,
                hash,
                tools: probe.tools.as_deref(),
            },
            &self.config,
        );
        for event in events {
            match &event {
                DriftEvent::Baseline { hash, .. } => {
                    self.metrics.baselines.fetch_add(1, Relaxed);
                    info!(tenant, server = %probe.server, hash, "drift: tool list baseline");
                }
                DriftEvent::Drift { .. } => {
                    self.metrics.drifts.fetch_add(1, Relaxed);
                }
                DriftEvent::FleetInconsistent { .. } => {
                    self.metrics.inconsistent.fetch_add(1, Relaxed);
                }
            }
            self.events
                .push((tenant.to_string(), probe.server.clone(), event));
        }
        Ok(())
    }

    fn watermark(&self) -> i64 {
        // Drift events are decided as probes arrive: every flush writes what is pending.
        0
    }

    fn close(&mut self, _watermark_ns: i64) -> Result<Closed, OperatorError> {
        let mut groups: BTreeMap<PartitionKey, Vec<DriftRow>> = BTreeMap::new();
        let mut findings = Vec::new();
        for (tenant, server, event) in self.events.drain(..) {
            if let Some(row) = row_of(&tenant, &server, &event) {
                let time_ns = row.time.timestamp_nanos_opt().unwrap_or(0);
                groups
                    .entry(PartitionKey::at(&tenant, time_ns))
                    .or_default()
                    .push(row);
            }
            findings.extend(to_finding(&tenant, &server, &event));
        }
        let rows = groups
            .into_iter()
            .map(|(key, rows)| to_batch(&rows).map(|b| (key, b)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| OperatorError::Fatal(format!("building drift rows: {e}")))?;
        Ok(Closed {
            rows,
            findings,
            ..Closed::default()
        })
    }
}

//! The incident stage: `findings.v1` (verdicts of the verdict stage, keyed by upstream
//! cause, findings of the signals and drift operators, and alerts received on the
//! Alertmanager API, keyed by tenant and label fingerprint) into decided incident
//! transitions — one event each on `alerts.v1` (keyed by tenant/incident) and one row
//! each in the `alerts` table — by the [`IncidentEngine`] of each partition, checkpointed
//! with the offsets it covers (see [`crate::stateful`]): a restart or rebalance replays
//! the same inputs into the same state and re-emits the same events under the same ids,
//! never a second incident or a second trigger.
//!
//! Tenancy: the record's tenant header (set by the stage that wrote it) must match the
//! tenant in the payload; a record where they differ is refused, so no stage can open an
//! incident for another tenant.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use mcpulse_bus::{Header, Message, Record, TopicPartition};
use mcpulse_schemas::external::{KIND_EXTERNAL_ALERT, fingerprint};
use mcpulse_schemas::metrics::{MetricsSource, PromWriter};
use mcpulse_schemas::topics::{HEADER_CONTENT_TYPE, HEADER_TENANT};
use mcpulse_schemas::{AlertAction, AlertEvent, ExternalAlert, Finding, Severity};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::error;

use super::engine::{EngineConfig, EngineState, IncidentEngine};
use super::fleet::FleetView;
use super::rows;
use super::verdict_stage::{HEADER_KIND, KIND_VERDICT, VerdictMessage};
use crate::live::LiveIncidents;
use crate::live::incidents::OpenCounts;
use crate::operator::OperatorError;
use crate::stateful::{Closed, OutTopic, PartitionLogic};

const SEVERITIES: [Severity; 4] = [Severity::P1, Severity::P2, Severity::P3, Severity::P4];
const ACTIONS: [AlertAction; 5] = [
    AlertAction::Trigger,
    AlertAction::Update,
    AlertAction::Resolve,
    AlertAction::Blip,
    AlertAction::Suppress,
];

/// Counters and gauges of the incident stage (all partitions of the process).
#[derive(Debug, Default)]
pub struct IncidentMetrics {
    pub verdicts: AtomicU64,
    pub findings: AtomicU64,
    /// Alerts received on the Alertmanager API.
    pub external: AtomicU64,
    /// Events by [`ACTIONS`] index.
    pub events: [AtomicU64; 5],
    /// Open incidents by severity ([`SEVERITIES`] index), storms excluded.
    pub open: [AtomicI64; 4],
    pub storms_open: AtomicI64,
    pub held: AtomicI64,
    /// Events whose evidence had to be redacted to keep the payload boundaries.
    pub redacted: AtomicU64,
    /// Open incidents per (tenant, server, severity) on `/metrics` (none: not kept).
    pub live: Option<Arc<LiveIncidents>>,
}

impl MetricsSource for IncidentMetrics {
    fn render(&self, out: &mut PromWriter) {
        out.counter(
            "mcpulse_incident_verdicts_total",
            "Verdicts taken by the incident stage.",
            &[],
            self.verdicts.load(Relaxed),
        );
        out.counter(
            "mcpulse_incident_findings_total",
            "Analytic findings taken by the incident stage.",
            &[],
            self.findings.load(Relaxed),
        );
        out.counter(
            "mcpulse_incident_external_alerts_total",
            "Alerts received on the Alertmanager API taken by the incident stage.",
            &[],
            self.external.load(Relaxed),
        );
        for (i, action) in ACTIONS.iter().enumerate() {
            out.counter(
                "mcpulse_alert_events_total",
                "Incident transitions emitted on alerts.v1, by action.",
                &[("action", action.as_str())],
                self.events[i].load(Relaxed),
            );
        }
        for (i, severity) in SEVERITIES.iter().enumerate() {
            out.gauge(
                "mcpulse_incidents_open",
                "Open incidents (flapping and suppressed included), by severity.",
                &[("severity", severity.as_str())],
                self.open[i].load(Relaxed).max(0) as f64,
            );
        }
        out.gauge(
            "mcpulse_storms_open",
            "Storms open.",
            &[],
            self.storms_open.load(Relaxed).max(0) as f64,
        );
        out.gauge(
            "mcpulse_incident_triggers_held",
            "Triggers held while a storm may form.",
            &[],
            self.held.load(Relaxed).max(0) as f64,
        );
        out.counter(
            "mcpulse_alert_events_redacted_total",
            "Events whose evidence was redacted to keep the payload boundaries.",
            &[],
            self.redacted.load(Relaxed),
        );
    }
}

/// What every partition shares.
pub struct IncidentContext {
    pub engine: EngineConfig,
    pub settings: super::verdict_stage::VerdictSettings,
    pub metrics: Arc<IncidentMetrics>,
    /// The tenants active in the process (the verdict stage's view): external alerts
    /// mark their tenant active and read the storm share rule's denominator from it.
    pub fleet: Arc<FleetView>,
}

/// The checkpointed state of a partition.
#[derive(Debug, Serialize, Deserialize)]
pub struct IncidentStageState {
    pub engine: EngineState,
    pub max_event_ns: i64,
    /// Events decided but not yet written (normally empty at a checkpoint).
    pub outbox: Vec<AlertEvent>,
}

/// The incident stage of one partition.
pub struct IncidentLogic {
    engine: IncidentEngine,
    max_event_ns: i64,
    outbox: Vec<AlertEvent>,
    last_record: Instant,
    settings: super::verdict_stage::VerdictSettings,
    metrics: Arc<IncidentMetrics>,
    fleet: Arc<FleetView>,
    /// What this partition last added to the shared gauges.
    reported: Gauges,
    /// This instance's key in the live open-incident counts (unique, so a partition
    /// assigned again before the old instance is dropped is not erased by that drop).
    live_key: String,
    /// What this partition last reported there.
    reported_live: OpenCounts,
}

/// Numbers the partition instances of the process (for their live keys).
static INSTANCES: AtomicU64 = AtomicU64::new(0);

#[derive(Default, Clone, Copy, PartialEq)]
struct Gauges {
    open: [i64; 4],
    storms: i64,
    held: i64,
}

fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn now_ns() -> i64 {
    ns(Utc::now())
}

impl IncidentLogic {
    /// Events decided and not yet handed to the next close.
    pub fn pending_events(&self) -> usize {
        self.outbox.len()
    }

    fn take(&mut self, events: Vec<AlertEvent>) {
        self.outbox.extend(events);
    }

    fn gauges(&self) -> Gauges {
        let mut g = Gauges::default();
        for e in self.engine.open_incidents() {
            g.open[e.severity as usize] += 1;
        }
        g.storms = self.engine.open_storms() as i64;
        g.held = self.engine.held() as i64;
        g
    }

    fn report_gauges(&mut self) {
        if let Some(live) = &self.metrics.live {
            let counts = live.count(self.engine.open_incidents());
            if counts != self.reported_live {
                live.report(&self.live_key, counts.clone());
                self.reported_live = counts;
            }
        }
        let now = self.gauges();
        if now == self.reported {
            return;
        }
        for i in 0..4 {
            self.metrics.open[i].fetch_add(now.open[i] - self.reported.open[i], Relaxed);
        }
        self.metrics
            .storms_open
            .fetch_add(now.storms - self.reported.storms, Relaxed);
        self.metrics
            .held
            .fetch_add(now.held - self.reported.held, Relaxed);
        self.reported = now;
    }

    /// Keeps the payload boundaries (no IP literal, no prober internals, storms name no
    /// member): an event that would cross one loses its evidence (and, if that is not
    /// enough, its summary) rather than leave the system with it.
    fn guard(&self, mut event: AlertEvent) -> AlertEvent {
        if let Err(problem) = event.check_boundaries() {
            self.metrics.redacted.fetch_add(1, Relaxed);
            error!(incident = %event.incident_id, %problem, "alert event crossed a payload boundary; evidence redacted");
            event.evidence =
                json!({"redacted": "evidence withheld: it crossed a payload boundary"});
            if event.check_boundaries().is_err() {
                event.summary = format!("{} {}", event.class, event.action.as_str());
                event.reason = None;
            }
        }
        event
    }

    /// `alerts.v1` message of an event: keyed by tenant/incident, tenant in a header.
    fn message(event: &AlertEvent) -> Message {
        let mut message = Message::new(
            Some(Bytes::from(event.key())),
            serde_json::to_vec(event).expect("alert events serialize"),
        );
        message.headers = vec![
            Header::new(HEADER_TENANT, event.tenant.clone()),
            Header::new(HEADER_CONTENT_TYPE, "application/json"),
        ];
        message
    }
}

impl Drop for IncidentLogic {
    fn drop(&mut self) {
        // A released partition no longer counts towards the process's gauges.
        for i in 0..4 {
            self.metrics.open[i].fetch_sub(self.reported.open[i], Relaxed);
        }
        self.metrics
            .storms_open
            .fetch_sub(self.reported.storms, Relaxed);
        self.metrics.held.fetch_sub(self.reported.held, Relaxed);
        if let Some(live) = &self.metrics.live {
            live.release(&self.live_key);
        }
    }
}

impl PartitionLogic for IncidentLogic {
    type State = IncidentStageState;
    type Context = IncidentContext;

    fn restore(
        context: &IncidentContext,
        tp: &TopicPartition,
        state: Option<IncidentStageState>,
    ) -> Self {
        let (engine, max_event_ns, outbox) = match state {
            Some(s) => (
                IncidentEngine::restore(context.engine.clone(), s.engine),
                s.max_event_ns,
                s.outbox,
            ),
            None => (
                IncidentEngine::new(context.engine.clone()),
                i64::MIN,
                Vec::new(),
            ),
        };
        let mut logic = Self {
            engine,
            max_event_ns,
            outbox,
            last_record: Instant::now(),
            settings: context.settings.clone(),
            metrics: context.metrics.clone(),
            fleet: context.fleet.clone(),
            reported: Gauges::default(),
            live_key: format!("{tp}#{}", INSTANCES.fetch_add(1, Relaxed)),
            reported_live: OpenCounts::new(),
        };
        logic.report_gauges();
        logic
    }

    fn snapshot(&self) -> IncidentStageState {
        IncidentStageState {
            engine: self.engine.state().clone(),
            max_event_ns: self.max_event_ns,
            outbox: self.outbox.clone(),
        }
    }

    fn process(&mut self, tenant: &str, record: &Record) -> Result<(), String> {
        self.last_record = Instant::now();
        let kind = record.header(HEADER_KIND).map(|v| v.as_ref());
        if kind == Some(KIND_EXTERNAL_ALERT.as_bytes()) {
            let alert: ExternalAlert = serde_json::from_slice(&record.value)
                .map_err(|e| format!("external alert: {e}"))?;
            if alert.tenant != tenant {
                return Err("external alert: the tenant header does not match the payload".into());
            }
            if alert.labels.is_empty() || alert.fingerprint != fingerprint(&alert.labels) {
                return Err("external alert: the fingerprint does not match the labels".into());
            }
            self.max_event_ns = self
                .max_event_ns
                .max(ns(alert.received_at).min(now_ns() + 60_000_000_000));
            self.metrics.external.fetch_add(1, Relaxed);
            let minute = alert.received_at.timestamp().div_euclid(60);
            self.fleet.touch(tenant, minute);
            let active = self.fleet.active(minute);
            let events = self.engine.external(&alert, active);
            self.take(events);
        } else if kind == Some(KIND_VERDICT.as_bytes()) {
            let message: VerdictMessage =
                serde_json::from_slice(&record.value).map_err(|e| format!("verdict: {e}"))?;
            if message.verdict.tenant != tenant {
                return Err("verdict: the tenant header does not match the payload".into());
            }
            let end = message.verdict.minute + chrono::Duration::minutes(1);
            self.max_event_ns = self
                .max_event_ns
                .max(ns(end).min(now_ns() + 60_000_000_000));
            self.metrics.verdicts.fetch_add(1, Relaxed);
            let events = self
                .engine
                .verdict(&message, message.active_tenants as usize);
            self.take(events);
        } else {
            let finding: Finding =
                serde_json::from_slice(&record.value).map_err(|e| format!("finding: {e}"))?;
            if finding.tenant != tenant {
                return Err("finding: the tenant header does not match the payload".into());
            }
            self.max_event_ns = self
                .max_event_ns
                .max(ns(finding.time).min(now_ns() + 60_000_000_000));
            self.metrics.findings.fetch_add(1, Relaxed);
            let events = self.engine.finding(&finding);
            self.take(events);
        }
        Ok(())
    }

    fn watermark(&self) -> i64 {
        let idle = self.last_record.elapsed() >= self.settings.idle_timeout;
        let lateness = self.settings.allowed_lateness.as_nanos() as i64;
        match (self.max_event_ns == i64::MIN, idle) {
            (true, false) => i64::MIN,
            (_, true) => self.max_event_ns.max(now_ns().saturating_sub(lateness)),
            (false, false) => self.max_event_ns,
        }
    }

    fn close(&mut self, watermark_ns: i64) -> Result<Closed, OperatorError> {
        if watermark_ns != i64::MIN {
            let events = self
                .engine
                .advance(DateTime::<Utc>::from_timestamp_nanos(watermark_ns));
            self.take(events);
        }
        let events: Vec<AlertEvent> = std::mem::take(&mut self.outbox)
            .into_iter()
            .map(|e| self.guard(e))
            .collect();
        for e in &events {
            let i = ACTIONS.iter().position(|a| *a == e.action).expect("listed");
            self.metrics.events[i].fetch_add(1, Relaxed);
        }
        self.report_gauges();
        if events.is_empty() {
            return Ok(Closed::default());
        }
        let rows = rows::batches(&events)
            .map_err(|e| OperatorError::Fatal(format!("building alert rows: {e}")))?;
        let messages = events
            .iter()
            .map(|e| (OutTopic::Alerts, Self::message(e)))
            .collect();
        Ok(Closed {
            rows,
            messages,
            ..Closed::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mcpulse_schemas::external::{HEADER_KIND as SCHEMA_HEADER_KIND, SOURCE_ALERTMANAGER_API};

    use super::*;

    fn logic() -> IncidentLogic {
        let context = IncidentContext {
            engine: EngineConfig::default(),
            settings: super::super::verdict_stage::VerdictSettings::default(),
            metrics: Arc::new(IncidentMetrics::default()),
            fleet: Arc::new(FleetView::default()),
        };
        IncidentLogic::restore(
            &context,
            &TopicPartition::new("findings".to_string(), 0),
            None,
        )
    }

    fn record(tenant: &str, alert: &ExternalAlert) -> Record {
        Record {
            topic: "mcpulse.findings.v1".into(),
            partition: 0,
            offset: 0,
            key: Some(Bytes::from(alert.key())),
            value: Bytes::from(serde_json::to_vec(alert).unwrap()),
            headers: vec![
                Header::new(HEADER_TENANT, tenant.to_string()),
                Header::new(SCHEMA_HEADER_KIND, KIND_EXTERNAL_ALERT),
            ],
            timestamp_ms: 0,
        }
    }

    fn alert() -> ExternalAlert {
        let labels: BTreeMap<String, String> =
            [("alertname", "McpDown"), ("instance", "10.0.0.7:9100")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        ExternalAlert {
            tenant: "acme".into(),
            fingerprint: fingerprint(&labels),
            labels,
            annotations: [("description".to_string(), "down at 10.0.0.7".to_string())].into(),
            starts_at: Utc::now(),
            ends_at: None,
            generator_url: Some("http://[fd00::1]:9090/graph".into()),
            received_at: Utc::now(),
            source: SOURCE_ALERTMANAGER_API.into(),
        }
    }

    #[test]
    fn the_kind_header_is_the_one_the_edge_writes() {
        assert_eq!(HEADER_KIND, SCHEMA_HEADER_KIND);
        assert_ne!(KIND_VERDICT, KIND_EXTERNAL_ALERT);
    }

    #[test]
    fn external_alerts_become_events_within_the_payload_boundaries() {
        let mut logic = logic();
        logic.process("acme", &record("acme", &alert())).unwrap();
        assert_eq!(logic.metrics.external.load(Relaxed), 1);
        let closed = logic.close(i64::MIN).unwrap();
        assert_eq!(closed.messages.len(), 1);
        let event: AlertEvent = serde_json::from_slice(&closed.messages[0].1.value).unwrap();
        assert_eq!(event.action, AlertAction::Trigger);
        assert_eq!(event.class, "external");
        event.check_boundaries().unwrap();
        assert_eq!(event.evidence["labels"]["alertname"], "McpDown");
        assert_eq!(
            logic.metrics.redacted.load(Relaxed),
            0,
            "masked, not withheld"
        );
        assert_eq!(logic.metrics.open[Severity::P3 as usize].load(Relaxed), 1);
    }

    #[test]
    fn open_incidents_reach_the_live_counts_and_leave_with_the_partition() {
        use crate::live::{LiveIncidents, LiveMetricsConfig};
        use mcpulse_schemas::metrics::{MetricsSource, PromWriter};

        let live = Arc::new(LiveIncidents::new(&LiveMetricsConfig::default()));
        let context = IncidentContext {
            engine: EngineConfig::default(),
            settings: super::super::verdict_stage::VerdictSettings::default(),
            metrics: Arc::new(IncidentMetrics {
                live: Some(live.clone()),
                ..IncidentMetrics::default()
            }),
            fleet: Arc::new(FleetView::default()),
        };
        let tp = TopicPartition::new("findings".to_string(), 0);
        let mut logic = IncidentLogic::restore(&context, &tp, None);
        logic.process("acme", &record("acme", &alert())).unwrap();
        logic.close(i64::MIN).unwrap();
        let render = || {
            let mut out = PromWriter::default();
            live.render(&mut out);
            out.finish()
        };
        let text = render();
        assert!(
            text.contains(
                "mcpulse_server_incidents_open{tenant=\"acme\",server=\"McpDown\",severity=\"P3\"} 1\n"
            ),
            "{text}"
        );
        drop(logic);
        assert!(!render().contains("mcpulse_server_incidents_open{"));
    }

    #[test]
    fn refuses_records_whose_tenant_or_fingerprint_disagree() {
        let mut logic = logic();
        let err = logic
            .process("globex", &record("globex", &alert()))
            .unwrap_err();
        assert!(err.contains("tenant header"), "{err}");
        let mut forged = alert();
        forged.labels.insert("team".into(), "x".into());
        let err = logic.process("acme", &record("acme", &forged)).unwrap_err();
        assert!(err.contains("fingerprint"), "{err}");
    }
}

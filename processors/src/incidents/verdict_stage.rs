//! The verdict stage: probe results (`probes.v1`, keyed by tenant/server) into one
//! verdict per server and minute across regions, sent on `findings.v1` keyed by the
//! upstream cause `{provider}/{class}`, so one owner sees every candidate of a cause
//! (storm correlation) and every verdict of an incident.
//!
//! A failing or degraded verdict goes to its class's key. After a class failed, the
//! server's later verdicts keep going to that class's key for `follow_for` (healthy or
//! failing with another class): the incident of that class needs them to resolve.
//! Healthy servers without recent failures send nothing.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use mcpulse_bus::{Header, Message, Offset, Record, TopicPartition};
use mcpulse_schemas::metrics::{MetricsSource, PromWriter};
use mcpulse_schemas::probe::FailureReason;
use mcpulse_schemas::topics::HEADER_TENANT;
use serde::{Deserialize, Serialize};

use super::fleet::FleetView;
use super::provider::ProviderTable;
use super::types::{FailureClass, Verdict};
use super::verdict::{Observation, VerdictAggregator, VerdictState};
use crate::forget::Forget;
use crate::operator::OperatorError;
use crate::stateful::{Closed, OutTopic, PartitionLogic};

/// Header marking a `findings.v1` record as a verdict (its value is a
/// [`VerdictMessage`]); findings of the analytic operators have none.
pub const HEADER_KIND: &str = "mcpulse-kind";
/// The value of [`HEADER_KIND`] for verdicts.
pub const KIND_VERDICT: &str = "verdict";

const MINUTE_NS: i64 = 60_000_000_000;
/// Endpoint URLs whose provider is remembered (the cache starts over when full).
const MAX_CACHED_PROVIDERS: usize = 200_000;
/// How far ahead of the wall clock a probe's `started_at` may be. A later one is refused:
/// its minute would stay open (holding the checkpoint, and so the committed offset,
/// back) until the clock got there.
const MAX_CLOCK_SKEW_NS: i64 = 10 * MINUTE_NS;

/// The fields of a `ProbeResult` (schemas `probe.rs`, validated at ingest) the verdict
/// needs, borrowed from the record: decoding only these skips the tool list, timings
/// and details every probe carries.
#[derive(Deserialize)]
struct ProbeFields<'a> {
    #[serde(borrow)]
    server: Cow<'a, str>,
    #[serde(default, borrow)]
    url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    region: Cow<'a, str>,
    started_at: DateTime<Utc>,
    ok: bool,
    #[serde(default)]
    failure_reason: Option<FailureReason>,
}

/// A verdict routed to the incident of `class`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictMessage {
    /// The incident class this verdict is for (failing, or healthy for it).
    pub class: FailureClass,
    pub verdict: Verdict,
    /// Tenants active around the verdict's minute, as this process saw them (the storm
    /// share rule's denominator; carried here so a replay decides the same).
    #[serde(default)]
    pub active_tenants: u64,
}

impl VerdictMessage {
    /// The log key: the upstream cause without the region (a server's incident of one
    /// class always lands in one partition, whatever its regions).
    pub fn key(&self) -> String {
        format!("{}/{}", self.verdict.provider, self.class.as_str())
    }

    pub fn to_message(&self) -> Message {
        let mut message = Message::new(
            Some(Bytes::from(self.key())),
            serde_json::to_vec(self).expect("verdicts serialize"),
        );
        message.headers = vec![
            Header::new(HEADER_TENANT, self.verdict.tenant.clone()),
            Header::new(HEADER_KIND, KIND_VERDICT),
        ];
        message
    }
}

/// Settings of the verdict stage.
#[derive(Clone, Debug)]
pub struct VerdictSettings {
    pub providers: ProviderTable,
    /// How long after the last event time a minute stays open.
    pub allowed_lateness: Duration,
    /// After this long without records the watermark follows the wall clock.
    pub idle_timeout: Duration,
    /// How long a server's verdicts keep going to a class after it last failed.
    pub follow_for: Duration,
}

impl Default for VerdictSettings {
    fn default() -> Self {
        Self {
            providers: ProviderTable::default(),
            allowed_lateness: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            follow_for: Duration::from_secs(2 * 3600),
        }
    }
}

/// Counters of the verdict stage.
#[derive(Debug, Default)]
pub struct VerdictMetrics {
    pub probes: AtomicU64,
    pub verdicts: AtomicU64,
    pub sent: AtomicU64,
    pub late: AtomicU64,
}

impl MetricsSource for VerdictMetrics {
    fn render(&self, out: &mut PromWriter) {
        out.counter(
            "mcpulse_verdict_probes_total",
            "Probe results taken into verdicts.",
            &[],
            self.probes.load(Relaxed),
        );
        out.counter(
            "mcpulse_verdict_verdicts_total",
            "Verdict minutes decided (per server and minute).",
            &[],
            self.verdicts.load(Relaxed),
        );
        out.counter(
            "mcpulse_verdict_sent_total",
            "Verdicts sent to incidents (failing ones, and those of recently failing classes).",
            &[],
            self.sent.load(Relaxed),
        );
        out.counter(
            "mcpulse_verdict_late_total",
            "Probe results whose minute had closed.",
            &[],
            self.late.load(Relaxed),
        );
    }
}

/// What every partition shares.
pub struct VerdictContext {
    pub settings: VerdictSettings,
    pub fleet: Arc<FleetView>,
    pub metrics: Arc<VerdictMetrics>,
}

/// The checkpointed state of a partition. Open minutes are not in it: the checkpoint's
/// offset is the first probe of the oldest open minute, and a restart replays them
/// ([`VerdictAggregator::replay_from`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct VerdictStageState {
    pub aggregator: VerdictState,
    pub max_event_ns: i64,
    /// Per `tenant/server`: classes that failed recently and the minute they last did.
    pub recent: BTreeMap<String, BTreeMap<FailureClass, DateTime<Utc>>>,
    /// Tenants this partition saw within the fleet window, and their latest minute (so
    /// a restarted process counts the same active tenants before new probes arrive).
    #[serde(default)]
    pub tenants: BTreeMap<String, i64>,
    /// The offset after the last probe taken in when the state was saved: probes before
    /// it that a restart replays into closed minutes were counted (late or decided) then.
    #[serde(default)]
    pub processed_until: Offset,
}

/// The verdict stage of one partition.
pub struct VerdictLogic {
    aggregator: VerdictAggregator,
    max_event_ns: i64,
    /// tenant → server → classes that failed recently and the minute they last did.
    recent: HashMap<String, HashMap<String, BTreeMap<FailureClass, DateTime<Utc>>>>,
    tenants: BTreeMap<String, i64>,
    processed_until: Offset,
    /// Provider of each endpoint URL seen (probes repeat their URLs every round).
    providers: HashMap<String, String>,
    last_record: Instant,
    settings: VerdictSettings,
    fleet: Arc<FleetView>,
    metrics: Arc<VerdictMetrics>,
    reported_late: u64,
}

fn now_ns() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl VerdictLogic {
    /// The (tenant, server) of every open minute bucket (tests, diagnostics).
    pub fn open_servers(&self) -> Vec<(String, String)> {
        self.aggregator
            .open_servers()
            .into_iter()
            .map(|(t, s)| (t.to_string(), s.to_string()))
            .collect()
    }
}

impl PartitionLogic for VerdictLogic {
    type State = VerdictStageState;
    type Context = VerdictContext;

    fn restore(
        context: &VerdictContext,
        _tp: &TopicPartition,
        state: Option<VerdictStageState>,
    ) -> Self {
        let (aggregator, max_event_ns, recent, tenants, processed_until) = match state {
            Some(s) => (
                VerdictAggregator::restore(s.aggregator),
                s.max_event_ns,
                s.recent,
                s.tenants,
                s.processed_until,
            ),
            None => (
                VerdictAggregator::new(),
                i64::MIN,
                BTreeMap::new(),
                BTreeMap::new(),
                0,
            ),
        };
        for (tenant, minute) in &tenants {
            context.fleet.touch(tenant, *minute);
        }
        let reported_late = aggregator.late();
        let mut by_tenant: HashMap<String, HashMap<String, _>> = HashMap::new();
        for (key, classes) in recent {
            let (tenant, server) = key.split_once('/').unwrap_or((key.as_str(), ""));
            by_tenant
                .entry(tenant.to_string())
                .or_default()
                .insert(server.to_string(), classes);
        }
        Self {
            aggregator,
            max_event_ns,
            recent: by_tenant,
            tenants,
            processed_until,
            providers: HashMap::new(),
            last_record: Instant::now(),
            settings: context.settings.clone(),
            fleet: context.fleet.clone(),
            metrics: context.metrics.clone(),
            reported_late,
        }
    }

    fn snapshot(&self) -> VerdictStageState {
        VerdictStageState {
            aggregator: self.aggregator.state(),
            max_event_ns: self.max_event_ns,
            recent: self
                .recent
                .iter()
                .flat_map(|(tenant, servers)| {
                    servers.iter().map(move |(server, classes)| {
                        (format!("{tenant}/{server}"), classes.clone())
                    })
                })
                .collect(),
            tenants: self.tenants.clone(),
            processed_until: self.processed_until,
        }
    }

    fn replay_from(&self) -> Option<Offset> {
        self.aggregator.replay_from()
    }

    /// In place: the open minutes are not in the snapshot (they are replayed from the log
    /// after a restart), so a round trip through it would lose them.
    fn forget(
        &mut self,
        _context: &VerdictContext,
        _tp: &TopicPartition,
        forget: &Forget,
    ) -> Result<(), String> {
        let server = forget.server.as_deref();
        self.aggregator.forget(&forget.tenant, server);
        match server {
            None => {
                self.recent.remove(&forget.tenant);
                self.tenants.remove(&forget.tenant);
            }
            Some(server) => {
                if let Some(servers) = self.recent.get_mut(&forget.tenant) {
                    servers.remove(server);
                    if servers.is_empty() {
                        self.recent.remove(&forget.tenant);
                    }
                }
            }
        }
        Ok(())
    }

    fn process(&mut self, tenant: &str, record: &Record) -> Result<(), String> {
        self.last_record = Instant::now();
        let probe: ProbeFields<'_> =
            serde_json::from_slice(&record.value).map_err(|e| format!("probe result: {e}"))?;
        let event = probe.started_at.timestamp_nanos_opt().unwrap_or(i64::MIN);
        let now = now_ns();
        if event > now.saturating_add(MAX_CLOCK_SKEW_NS) {
            return Err(format!(
                "probe result: started_at {} is more than 10 minutes ahead of the clock",
                probe.started_at
            ));
        }
        let replayed = record.offset < self.processed_until;
        self.processed_until = self.processed_until.max(record.offset + 1);
        if replayed
            && self
                .aggregator
                .closed_before()
                .is_some_and(|closed| probe.started_at < closed)
        {
            // Replayed after a restart into a minute closed before it: done with then.
            return Ok(());
        }
        self.max_event_ns = self
            .max_event_ns
            .max(event.min(now.saturating_add(MINUTE_NS)));
        let minute = event.div_euclid(MINUTE_NS);
        // The shared view needs a touch only when this tenant's latest minute moves.
        let moved = match self.tenants.get_mut(tenant) {
            Some(m) if *m >= minute => false,
            Some(m) => {
                *m = minute;
                true
            }
            None => {
                self.tenants.insert(tenant.to_string(), minute);
                true
            }
        };
        if moved {
            self.fleet.touch(tenant, minute);
        }
        let url = probe.url.as_deref().unwrap_or("");
        if !self.providers.contains_key(url) {
            if self.providers.len() >= MAX_CACHED_PROVIDERS {
                self.providers.clear();
            }
            let provider = self.settings.providers.provider_of_url(url);
            self.providers.insert(url.to_string(), provider);
        }
        let observation = Observation {
            server: &probe.server,
            region: &probe.region,
            started_at: probe.started_at,
            ok: probe.ok,
            failure_reason: probe.failure_reason,
        };
        self.aggregator.observe_at(
            tenant,
            observation,
            &self.providers[url],
            Some(record.offset),
        );
        if !replayed {
            self.metrics.probes.fetch_add(1, Relaxed);
        }
        let late = self.aggregator.late();
        self.metrics
            .late
            .fetch_add(late - self.reported_late, Relaxed);
        self.reported_late = late;
        Ok(())
    }

    fn watermark(&self) -> i64 {
        let lateness = self.settings.allowed_lateness.as_nanos() as i64;
        if self.max_event_ns == i64::MIN && self.last_record.elapsed() < self.settings.idle_timeout
        {
            return i64::MIN;
        }
        let by_events = self.max_event_ns.saturating_sub(lateness);
        if self.last_record.elapsed() >= self.settings.idle_timeout {
            by_events.max(now_ns().saturating_sub(lateness))
        } else {
            by_events
        }
    }

    fn close(&mut self, watermark_ns: i64) -> Result<Closed, OperatorError> {
        if watermark_ns == i64::MIN {
            return Ok(Closed::default());
        }
        let closed_before =
            DateTime::<Utc>::from_timestamp_nanos(watermark_ns.div_euclid(MINUTE_NS) * MINUTE_NS);
        // Healthy verdicts of servers no incident follows are only counted.
        let recent = &self.recent;
        let (decided, mut verdicts) = self.aggregator.close_where(closed_before, |t, s| {
            recent.get(t).is_some_and(|servers| servers.contains_key(s))
        });
        // Minute by minute across servers (each server's minutes stay in order), so the
        // incident stage's event time moves forward with the fleet's.
        verdicts.sort_by(|a, b| {
            (a.minute, &a.tenant, &a.server).cmp(&(b.minute, &b.tenant, &b.server))
        });
        let mut active: Option<(DateTime<Utc>, u64)> = None;
        self.metrics.verdicts.fetch_add(decided as u64, Relaxed);
        let follow = chrono::Duration::from_std(self.settings.follow_for)
            .unwrap_or(chrono::Duration::hours(2));
        let mut messages = Vec::new();
        for verdict in verdicts {
            let servers = self.recent.entry(verdict.tenant.clone()).or_default();
            let recent = servers.entry(verdict.server.clone()).or_default();
            if let Some(class) = verdict.class {
                recent.insert(class, verdict.minute);
            }
            recent.retain(|_, last| verdict.minute - *last <= follow);
            let active_tenants = match active {
                Some((minute, n)) if minute == verdict.minute => n,
                _ => {
                    let n = self.fleet.active(verdict.minute.timestamp().div_euclid(60)) as u64;
                    active = Some((verdict.minute, n));
                    n
                }
            };
            for class in recent.keys() {
                messages.push((
                    OutTopic::Findings,
                    VerdictMessage {
                        class: *class,
                        verdict: verdict.clone(),
                        active_tenants,
                    }
                    .to_message(),
                ));
            }
            if recent.is_empty() {
                servers.remove(&verdict.server);
                if servers.is_empty() {
                    self.recent.remove(&verdict.tenant);
                }
            }
        }
        self.metrics.sent.fetch_add(messages.len() as u64, Relaxed);
        let since = closed_before.timestamp().div_euclid(60) - self.fleet.window_minutes();
        self.tenants.retain(|_, minute| *minute > since);
        Ok(Closed {
            messages,
            ..Closed::default()
        })
    }
}

//! The incident engine: verdicts and findings in, `alerts.v1` events out. It owns one
//! [`IncidentTracker`] per (tenant, server, class), the [`StormCorrelator`] of the
//! partition, the triggers held while a storm may still form, and what each open
//! incident and storm last said, and turns their decisions into [`AlertEvent`]s.
//!
//! Pure logic: no I/O and no clock — every time is an event time of the input (verdict
//! minutes, finding times, the watermark passed to [`IncidentEngine::advance`]) — so an
//! engine restored from [`IncidentEngine::state`] and fed the same inputs emits the same
//! events with the same ids.
//!
//! # From transitions to events
//!
//! | tracker / correlator | event (`action`, `status`) |
//! |---|---|
//! | `Blip` | `blip`, `resolved` (P4: logged, never paged) |
//! | `Open` | `trigger`, `open` — held first for `storm.hold` when the class is a probe class |
//! | `Update` (escalated, evidence) | `update`, `open` (or `suppressed` for a storm member) |
//! | `Update` (flapping) | `update`, `flapping` |
//! | `Resolve` | `resolve`, `resolved`, with `resolved_at` and `duration_s` |
//! | storm `Open` / `Grow` / `Clear` | `trigger` / `update` (at most one per storm each time event time moves) / `resolve` of the storm (tenant `_operator`, class `storm`, counts only) |
//! | storm `Suppress` | `suppress`, `suppressed`, with `storm_id` (and `provider_outage` for opted-in tenants) |
//! | storm `ResolveMember` | `resolve`, `resolved`, with `storm_id` |
//! | external alert (Alertmanager API) | see [`super::external`]: `trigger` at once, re-sends nothing, `resolve` when it ends or expires |
//!
//! # Holding triggers
//!
//! A probe-class incident that opens is not triggered at once: its trigger waits
//! `storm.hold` of event time. If a storm forms around it meanwhile, the trigger is
//! replaced by its `suppress` event and the tenant is never paged. An escalation while
//! held changes the held trigger (it is sent with the worse severity); a resolve while
//! held sends the trigger first (it was a real incident, past its blip window), then the
//! resolve. The trigger's `time` is when it was released.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use mcpulse_schemas::alert::OPERATOR_TENANT;
use mcpulse_schemas::{
    AlertAction, AlertEvent, AlertStatus, ExternalAlert, Finding, ProviderOutage, Severity,
    StormSummary,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::external::{self, ExternalAlerts, ExternalConfig};
use super::incident::{IncidentConfig, IncidentTracker, Transition, UpdateReason};
use super::storm::{StormConfig, StormCorrelator, StormEvent, pairs};
use super::types::{Cause, FailureClass, IncidentKey, Scope};
use super::verdict_stage::VerdictMessage;

/// What the engine is configured with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EngineConfig {
    pub incident: IncidentConfig,
    pub storm: StormConfig,
    /// Tenants opted in to "upstream provider outage" notices on their suppressed
    /// incidents.
    pub provider_notices: BTreeSet<String>,
    /// Alerts received on the Alertmanager API.
    pub external: ExternalConfig,
}

/// A trigger waiting for `storm.hold` to pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Held {
    event: AlertEvent,
    release_at: DateTime<Utc>,
}

/// The checkpointed state of an engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    #[serde(with = "pairs")]
    trackers: BTreeMap<IncidentKey, IncidentTracker>,
    storm: StormCorrelator,
    #[serde(with = "pairs")]
    held: BTreeMap<IncidentKey, Held>,
    /// The last event of every open incident (what storm events update).
    #[serde(with = "pairs")]
    open: BTreeMap<IncidentKey, AlertEvent>,
    /// The last event of every open storm, by storm id.
    storms: BTreeMap<String, AlertEvent>,
    /// Storms whose counts changed since their last event: one `update` each goes out
    /// when event time next moves (members join by the dozen in a minute; operators get
    /// one update, not one per member).
    #[serde(default)]
    grown: BTreeSet<String>,
    now: Option<DateTime<Utc>>,
    /// Alerts received on the Alertmanager API (absent from older checkpoints).
    #[serde(default)]
    external: ExternalAlerts,
}

/// See the module docs.
pub struct IncidentEngine {
    config: EngineConfig,
    state: EngineState,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Healthy => "healthy",
        Scope::Degraded => "degraded",
        Scope::Regional => "regional",
        Scope::Global => "global",
    }
}

/// The upstream cause of a verdict's failure of `class`: its provider, the failing
/// region when only one region fails (else `global`), and the class.
pub fn cause_of(message: &VerdictMessage) -> Cause {
    let v = &message.verdict;
    let region = match (v.scope, v.failing_regions.as_slice()) {
        (Scope::Regional, [region]) => region.clone(),
        _ => "global".to_string(),
    };
    Cause {
        provider: v.provider.clone(),
        region,
        class: message.class,
    }
}

/// Scope, reason and failing regions of the failure a transition's evidence describes
/// (verdict evidence directly or under `last_failure`; finding evidence has no scope).
fn failure_fields(evidence: &Value) -> (String, Option<String>, Vec<String>) {
    let failure = evidence.get("last_failure").unwrap_or(evidence);
    let text = |name: &str| {
        failure
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let scope = text("scope").unwrap_or_else(|| "finding".to_string());
    let reason = text("reason").or_else(|| text("kind"));
    let regions = match failure.get("failing_regions").and_then(Value::as_array) {
        Some(regions) => regions
            .iter()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect(),
        None => text("region").into_iter().collect(),
    };
    (scope, reason, regions)
}

/// What a human reads first about the failure in `evidence`.
fn failure_line(evidence: &Value) -> String {
    let failure = evidence.get("last_failure").unwrap_or(evidence);
    ["detail", "summary"]
        .iter()
        .find_map(|k| failure.get(*k).and_then(Value::as_str))
        .unwrap_or_default()
        .to_string()
}

fn human_duration(d: Duration) -> String {
    humantime_serde::re::humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Fills `event_id` from the content that makes a transition unique.
fn with_id(mut event: AlertEvent) -> AlertEvent {
    event.event_id = Finding::derive_id(&[
        &event.incident_id,
        event.action.as_str(),
        event.status.as_str(),
        event.severity.as_str(),
        &rfc3339(event.time),
        &event.summary,
    ]);
    event
}

impl IncidentEngine {
    /// An empty engine (the config should have been validated).
    pub fn new(config: EngineConfig) -> Self {
        let storm = StormCorrelator::new(config.storm.clone());
        Self {
            config,
            state: EngineState {
                trackers: BTreeMap::new(),
                storm,
                held: BTreeMap::new(),
                open: BTreeMap::new(),
                storms: BTreeMap::new(),
                grown: BTreeSet::new(),
                now: None,
                external: ExternalAlerts::default(),
            },
        }
    }

    /// An engine restored from a checkpoint, under the current config.
    pub fn restore(config: EngineConfig, mut state: EngineState) -> Self {
        state.storm.set_config(config.storm.clone());
        Self { config, state }
    }

    /// The state to checkpoint.
    pub fn state(&self) -> &EngineState {
        &self.state
    }

    /// Open incidents (flapping and suppressed included, external alerts too; not
    /// storms).
    pub fn open_incidents(&self) -> impl Iterator<Item = &AlertEvent> {
        self.state.open.values().chain(self.state.external.open())
    }

    /// Storms currently open.
    pub fn open_storms(&self) -> usize {
        self.state.storms.len()
    }

    /// Triggers currently held.
    pub fn held(&self) -> usize {
        self.state.held.len()
    }

    /// Subjects tracked (open, pending, or with flapping history).
    pub fn trackers(&self) -> usize {
        self.state.trackers.len()
    }

    /// One verdict minute routed to the incident of `message.class`; `active_tenants`
    /// is the share rule's denominator at that minute.
    pub fn verdict(&mut self, message: &VerdictMessage, active_tenants: usize) -> Vec<AlertEvent> {
        let v = &message.verdict;
        let mut out = Vec::new();
        self.tick(v.minute, &mut out);
        let key = IncidentKey {
            tenant: v.tenant.clone(),
            server: v.server.clone(),
            class: message.class,
        };
        let transitions =
            Self::tracker(&mut self.state.trackers, &key).observe_verdict(v, &self.config.incident);
        let cause = cause_of(message);
        for t in transitions {
            self.apply(&key, t, Some((&cause, v.minute, active_tenants)), &mut out);
        }
        self.forget_if_idle(&key);
        out
    }

    /// One finding of the analytic operators (signals, drift).
    pub fn finding(&mut self, finding: &Finding) -> Vec<AlertEvent> {
        let mut out = Vec::new();
        self.tick(finding.time, &mut out);
        let key = IncidentKey {
            tenant: finding.tenant.clone(),
            server: finding.server.clone(),
            class: FailureClass::of_finding(finding.kind),
        };
        let transitions = Self::tracker(&mut self.state.trackers, &key)
            .observe_finding(finding, &self.config.incident);
        for t in transitions {
            self.apply(&key, t, None, &mut out);
        }
        self.forget_if_idle(&key);
        out
    }

    /// One alert received on the Alertmanager API (see [`super::external`]); its
    /// `received_at` is the event time, `active_tenants` the share rule's denominator
    /// then (used when its labels name a cause to correlate on).
    pub fn external(&mut self, alert: &ExternalAlert, active_tenants: usize) -> Vec<AlertEvent> {
        let mut out = Vec::new();
        self.tick(alert.received_at, &mut out);
        let events = self.state.external.observe(alert, &self.config.external);
        let cause = self.config.external.cause_of(alert);
        let key = external::incident_key(alert);
        for event in events {
            match (&cause, event.action) {
                (Some(cause), AlertAction::Trigger) => {
                    let at = self.now();
                    let storm_events =
                        self.state
                            .storm
                            .incident_opened(&key, cause, at, active_tenants);
                    self.hold_or_send(&key, event, at, &storm_events, &mut out);
                    self.storm_events(storm_events, &mut out);
                }
                _ => self.external_ended(&key, event, &mut out),
            }
        }
        out
    }

    /// A new occurrence that may join a storm: unless `storm_events` suppress it, its
    /// trigger is held for `storm.hold` (from `at`) or, without a hold, sent.
    fn hold_or_send(
        &mut self,
        key: &IncidentKey,
        event: AlertEvent,
        at: DateTime<Utc>,
        storm_events: &[StormEvent],
        out: &mut Vec<AlertEvent>,
    ) {
        let suppressed = storm_events
            .iter()
            .any(|e| matches!(e, StormEvent::Suppress { member, .. } if member == key));
        if suppressed {
            return;
        }
        let hold = self.state.storm.hold_for();
        if event.action == AlertAction::Trigger && !hold.is_zero() {
            let release_at = at + delta(hold);
            self.state
                .held
                .insert(key.clone(), Held { event, release_at });
        } else {
            out.push(with_id(event));
        }
    }

    /// An external incident's event other than its trigger (a resolve): a trigger still
    /// held goes out first, and the storm correlator learns the incident ended.
    fn external_ended(&mut self, key: &IncidentKey, event: AlertEvent, out: &mut Vec<AlertEvent>) {
        let resolves = event.action == AlertAction::Resolve;
        if resolves {
            self.release(key, out);
        }
        out.push(with_id(event));
        if resolves {
            let at = self.now();
            let events = self.state.storm.incident_resolved(key, at);
            self.storm_events(events, out);
        }
    }

    /// Moves event time to `now` (the watermark): releases held triggers, clears
    /// storms, resolves quiet flapping incidents of analytic classes.
    pub fn advance(&mut self, now: DateTime<Utc>) -> Vec<AlertEvent> {
        let mut out = Vec::new();
        self.tick(now, &mut out);
        let now = self.state.now.unwrap_or(now);
        let quiet: Vec<IncidentKey> = self
            .state
            .trackers
            .iter()
            .filter(|(k, t)| !k.class.is_probe_class() && t.is_flapping())
            .map(|(k, _)| k.clone())
            .collect();
        for key in quiet {
            let transitions = Self::tracker(&mut self.state.trackers, &key)
                .observe_time(now, &self.config.incident);
            for t in transitions {
                self.apply(&key, t, None, &mut out);
            }
            self.forget_if_idle(&key);
        }
        out
    }

    fn tracker<'a>(
        trackers: &'a mut BTreeMap<IncidentKey, IncidentTracker>,
        key: &IncidentKey,
    ) -> &'a mut IncidentTracker {
        trackers
            .entry(key.clone())
            .or_insert_with(|| IncidentTracker::new(key.clone()))
    }

    fn forget_if_idle(&mut self, key: &IncidentKey) {
        if self.state.trackers.get(key).is_some_and(|t| t.is_idle()) {
            self.state.trackers.remove(key);
        }
    }

    /// Moves time forward (never back): storm expiries, then held triggers now due.
    fn tick(&mut self, at: DateTime<Utc>, out: &mut Vec<AlertEvent>) {
        if self.state.now.is_some_and(|now| at <= now) {
            return;
        }
        self.state.now = Some(at);
        for storm_id in std::mem::take(&mut self.state.grown) {
            if let Some(event) = self.state.storms.get_mut(&storm_id) {
                event.time = at;
                out.push(with_id(event.clone()));
            }
        }
        let events = self.state.storm.advance(at);
        self.storm_events(events, out);
        let due: Vec<IncidentKey> = self
            .state
            .held
            .iter()
            .filter(|(_, h)| h.release_at <= at)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.release(&key, out);
        }
        for (key, event) in self.state.external.expire(at) {
            self.external_ended(&key, event, out);
        }
    }

    /// Sends a held trigger.
    fn release(&mut self, key: &IncidentKey, out: &mut Vec<AlertEvent>) {
        if let Some(held) = self.state.held.remove(key) {
            let mut event = held.event;
            event.time = held.release_at;
            out.push(with_id(event));
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.state.now.unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }

    /// The event of a tracker transition (before storms and holds have their say).
    fn event_of(&self, key: &IncidentKey, t: &Transition) -> AlertEvent {
        let (scope, reason, regions) = failure_fields(t.evidence());
        let line = failure_line(t.evidence());
        let class = key.class.as_str();
        let server = &key.server;
        let (resolved_at, duration_s, summary) = match t {
            Transition::Blip {
                started,
                ended,
                severity_seen,
                ..
            } => {
                let lasted = (*ended - *started).to_std().unwrap_or_default();
                (
                    Some(*ended),
                    Some(lasted.as_secs()),
                    format!(
                        "{server} {class} ({}) recovered within the blip window after {}: {line}",
                        severity_seen.as_str(),
                        human_duration(lasted)
                    ),
                )
            }
            Transition::Open { severity, .. } => (
                None,
                None,
                format!("{server} {class} ({}, {scope}): {line}", severity.as_str()),
            ),
            Transition::Update {
                severity,
                previous,
                reason,
                ..
            } => (
                None,
                None,
                match reason {
                    UpdateReason::Escalated => format!(
                        "{server} {class} escalated from {} to {}: {line}",
                        previous.as_str(),
                        severity.as_str()
                    ),
                    UpdateReason::Flapping => format!(
                        "{server} {class} is flapping: held open instead of paging again: {line}"
                    ),
                    UpdateReason::Evidence => format!("{server} {class}: {line}"),
                },
            ),
            Transition::Resolve {
                resolved_at,
                duration,
                ..
            } => (
                Some(*resolved_at),
                Some(duration.as_secs()),
                format!(
                    "{server} {class} resolved after {}",
                    human_duration(*duration)
                ),
            ),
        };
        AlertEvent {
            event_id: String::new(),
            incident_id: t.incident_id().to_string(),
            dedup_key: key.dedup_key(),
            action: t.action(),
            status: t.status(),
            tenant: key.tenant.clone(),
            server: Some(key.server.clone()),
            class: class.to_string(),
            severity: t.severity(),
            scope,
            reason,
            regions,
            time: t.at(),
            opened_at: t.opened_at(),
            resolved_at,
            duration_s,
            storm_id: None,
            storm: None,
            provider_outage: None,
            summary,
            evidence: t.evidence().clone(),
        }
    }

    /// Applies one tracker transition. `probe` is the cause, the verdict minute and the
    /// active tenants when the input was a verdict.
    fn apply(
        &mut self,
        key: &IncidentKey,
        t: Transition,
        probe: Option<(&Cause, DateTime<Utc>, usize)>,
        out: &mut Vec<AlertEvent>,
    ) {
        let mut event = self.event_of(key, &t);
        // A new occurrence: an `Open`, or an `Update` of one held open as flapping.
        let opens = match &t {
            Transition::Open { .. } => true,
            Transition::Update { .. } => !self.state.open.contains_key(key),
            _ => false,
        };
        match &t {
            Transition::Blip { .. } => out.push(with_id(event)),
            Transition::Open { .. } | Transition::Update { .. } if opens => {
                self.state.open.insert(key.clone(), event.clone());
                let Some((cause, minute, active)) = probe else {
                    out.push(with_id(event));
                    return;
                };
                let storm_events = self.state.storm.incident_opened(key, cause, minute, active);
                self.hold_or_send(key, event, minute, &storm_events, out);
                self.storm_events(storm_events, out);
            }
            Transition::Open { .. } => unreachable!("an Open always opens"),
            Transition::Update { .. } => {
                if let Some(held) = self.state.held.get_mut(key) {
                    // Not paged yet: the trigger goes out with what it knows now.
                    held.event.severity = event.severity;
                    held.event.evidence = event.evidence.clone();
                    held.event.summary = event.summary.clone();
                    return;
                }
                if let Some(storm_id) = self.state.storm.storm_of(key) {
                    event.storm_id = Some(storm_id.to_string());
                    event.status = AlertStatus::Suppressed;
                }
                self.state.open.insert(key.clone(), event.clone());
                out.push(with_id(event));
            }
            Transition::Resolve { .. } => {
                self.release(key, out);
                event.storm_id = self.state.storm.storm_of(key).map(str::to_string);
                self.state.open.remove(key);
                out.push(with_id(event));
                if key.class.is_probe_class() {
                    let at = probe.map_or(self.now(), |(_, minute, _)| minute);
                    let events = self.state.storm.incident_resolved(key, at);
                    self.storm_events(events, out);
                }
            }
        }
    }

    /// Turns the correlator's decisions into events.
    fn storm_events(&mut self, events: Vec<StormEvent>, out: &mut Vec<AlertEvent>) {
        for e in events {
            match e {
                StormEvent::Open {
                    storm_id,
                    cause,
                    opened_at,
                    tenants,
                    members,
                } => {
                    let event = self.storm_event(&storm_id, &cause, opened_at, tenants, members);
                    self.state.storms.insert(storm_id, event.clone());
                    out.push(with_id(event));
                }
                StormEvent::Grow {
                    storm_id,
                    cause,
                    tenants,
                    members,
                } => {
                    let Some(last) = self.state.storms.get(&storm_id) else {
                        continue;
                    };
                    let mut event =
                        self.storm_event(&storm_id, &cause, last.opened_at, tenants, members);
                    event.action = AlertAction::Update;
                    self.state.storms.insert(storm_id.clone(), event);
                    self.state.grown.insert(storm_id);
                }
                StormEvent::Clear {
                    storm_id,
                    cause,
                    opened_at,
                    cleared_at,
                    duration_s,
                    tenants,
                    members,
                    ..
                } => {
                    self.state.storms.remove(&storm_id);
                    self.state.grown.remove(&storm_id);
                    let mut event =
                        self.storm_event(&storm_id, &cause, opened_at, tenants, members);
                    event.action = AlertAction::Resolve;
                    event.status = AlertStatus::Resolved;
                    event.time = cleared_at;
                    event.resolved_at = Some(cleared_at);
                    event.duration_s = Some(duration_s);
                    event.summary = format!(
                        "Upstream outage cleared: {} {} ({}) after {}",
                        cause.provider,
                        cause.class.as_str(),
                        cause.region,
                        human_duration(Duration::from_secs(duration_s))
                    );
                    out.push(with_id(event));
                }
                StormEvent::Suppress { storm_id, member } => {
                    self.state.held.remove(&member);
                    let external = member.class == FailureClass::External;
                    let event = if external {
                        self.state.external.suppress(&member, &storm_id, self.now())
                    } else {
                        self.state.open.get(&member).cloned()
                    };
                    let Some(mut event) = event else {
                        continue;
                    };
                    event.action = AlertAction::Suppress;
                    event.status = AlertStatus::Suppressed;
                    event.time = self.now();
                    event.storm_id = Some(storm_id.clone());
                    let notice = self.state.storm.provider_notice(&storm_id);
                    let provider = notice.as_ref().map_or("", |n| n.provider.as_str());
                    event.summary = if external {
                        let name = event.reason.as_deref().unwrap_or("external alert");
                        format!("{name}: part of an upstream outage of {provider}; not paged")
                    } else {
                        format!(
                            "{} {}: part of an upstream outage of {provider}; not paged",
                            member.server,
                            member.class.as_str()
                        )
                    };
                    if self.config.provider_notices.contains(&member.tenant) {
                        event.provider_outage = notice.map(|n| ProviderOutage {
                            provider: n.provider,
                            region: n.region,
                            class: n.class.as_str().to_string(),
                            since: n.opened_at,
                        });
                    }
                    if !external {
                        self.state.open.insert(member, event.clone());
                    }
                    out.push(with_id(event));
                }
                StormEvent::ResolveMember {
                    storm_id,
                    member,
                    resolved_at,
                } if member.class == FailureClass::External => {
                    self.state.held.remove(&member);
                    let resolved =
                        self.state
                            .external
                            .resolve_with_storm(&member, &storm_id, resolved_at);
                    out.extend(resolved.map(with_id));
                }
                StormEvent::ResolveMember {
                    storm_id,
                    member,
                    resolved_at,
                } => {
                    self.state.held.remove(&member);
                    let resolved = self
                        .state
                        .trackers
                        .get_mut(&member)
                        .and_then(|t| t.resolve_with_storm(resolved_at, &storm_id));
                    if let Some(t) = resolved {
                        let mut event = self.event_of(&member, &t);
                        event.storm_id = Some(storm_id);
                        self.state.open.remove(&member);
                        out.push(with_id(event));
                    }
                    self.forget_if_idle(&member);
                }
            }
        }
    }

    /// A storm's event: operator-owned, counts only, no tenant or server of a member.
    fn storm_event(
        &self,
        storm_id: &str,
        cause: &Cause,
        opened_at: DateTime<Utc>,
        tenants: u64,
        members: u64,
    ) -> AlertEvent {
        let scope = if cause.region == "global" {
            Scope::Global
        } else {
            Scope::Regional
        };
        AlertEvent {
            event_id: String::new(),
            incident_id: storm_id.to_string(),
            dedup_key: format!("mcpulse/{OPERATOR_TENANT}/storm/{}", cause.key()),
            action: AlertAction::Trigger,
            status: AlertStatus::Open,
            tenant: OPERATOR_TENANT.to_string(),
            server: None,
            class: "storm".to_string(),
            severity: self.storm_severity(cause, scope),
            scope: scope_name(scope).to_string(),
            reason: Some(cause.class.as_str().to_string()),
            regions: (scope == Scope::Regional)
                .then(|| cause.region.clone())
                .into_iter()
                .collect(),
            time: self.now(),
            opened_at,
            resolved_at: None,
            duration_s: None,
            storm_id: None,
            storm: Some(StormSummary {
                provider: cause.provider.clone(),
                region: cause.region.clone(),
                tenants,
                members,
            }),
            provider_outage: None,
            summary: format!(
                "Upstream outage: {} {} ({}): {tenants} tenants, {members} incidents",
                cause.provider,
                cause.class.as_str(),
                cause.region
            ),
            evidence: json!({
                "cause": {"provider": cause.provider, "region": cause.region, "class": cause.class.as_str()},
                "tenants": tenants,
                "members": members,
            }),
        }
    }

    fn storm_severity(&self, cause: &Cause, scope: Scope) -> Severity {
        self.config.incident.severity_of(cause.class, scope)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mcpulse_schemas::external::{SOURCE_ALERTMANAGER_API, fingerprint};

    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + TimeDelta::seconds(seconds)
    }

    /// An alert of `tenant` with `labels`, started at `started`, received at `received`,
    /// ended at `ends_at` when given.
    fn labelled(
        tenant: &str,
        labels: &[(&str, &str)],
        started: i64,
        received: i64,
        ends_at: Option<i64>,
    ) -> ExternalAlert {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ExternalAlert {
            tenant: tenant.into(),
            fingerprint: fingerprint(&labels),
            labels,
            annotations: BTreeMap::new(),
            starts_at: t(started),
            ends_at: ends_at.map(t),
            generator_url: None,
            received_at: t(received),
            source: SOURCE_ALERTMANAGER_API.into(),
        }
    }

    fn alert(tenant: &str, received: i64, ends_at: Option<i64>) -> ExternalAlert {
        let labels = [("alertname", "McpDown"), ("severity", "warning")];
        labelled(tenant, &labels, 0, received, ends_at)
    }

    fn actions(events: &[AlertEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.action.as_str()).collect()
    }

    /// `UpstreamDown` of `tenant` naming provider `aws`, started and received at
    /// `received`, ended at `ends_at` when given.
    fn upstream(tenant: &str, received: i64, ends_at: Option<i64>) -> ExternalAlert {
        let labels = [
            ("alertname", "UpstreamDown"),
            ("provider", "aws"),
            ("severity", "critical"),
        ];
        labelled(tenant, &labels, received, received, ends_at)
    }

    /// (tenant, action) of each event.
    fn who(events: &[AlertEvent]) -> Vec<(String, &'static str)> {
        events
            .iter()
            .map(|e| (e.tenant.clone(), e.action.as_str()))
            .collect()
    }

    #[test]
    fn external_alerts_naming_a_provider_correlate_into_one_storm_across_tenants() {
        let mut engine = IncidentEngine::new(EngineConfig::default());
        // Of 10 active tenants, two fire: held (a storm may form), nothing pages.
        assert!(engine.external(&upstream("t1", 0, None), 10).is_empty());
        assert!(engine.external(&upstream("t2", 10, None), 10).is_empty());
        assert_eq!(engine.held(), 2);
        // The third tenant crosses the floor (3 tenants, > 10% of 10): one storm for the
        // operator, the three members suppressed, no member paged.
        let out = engine.external(&upstream("t3", 20, None), 10);
        assert_eq!(
            who(&out),
            [
                ("_operator".to_string(), "trigger"),
                ("t1".to_string(), "suppress"),
                ("t2".to_string(), "suppress"),
                ("t3".to_string(), "suppress"),
            ]
        );
        let storm = &out[0];
        assert_eq!(storm.class, "storm");
        assert_eq!(storm.severity, Severity::P2);
        assert_eq!(storm.opened_at, t(0));
        let summary = storm.storm.as_ref().unwrap();
        assert_eq!(
            (summary.provider.as_str(), summary.region.as_str()),
            ("aws", "global")
        );
        assert_eq!((summary.tenants, summary.members), (3, 3));
        assert!(!storm.summary.contains("t1"), "{}", storm.summary);
        for member in &out[1..] {
            assert_eq!(member.class, "external");
            assert_eq!(member.status, AlertStatus::Suppressed);
            assert_eq!(member.storm_id.as_deref(), Some(storm.incident_id.as_str()));
            assert!(
                member.summary.contains("upstream outage of aws"),
                "{}",
                member.summary
            );
        }
        assert_eq!(engine.held(), 0);
        assert_eq!(engine.open_storms(), 1);
        // Nothing left to release when the hold would have ended.
        assert!(engine.advance(t(200)).is_empty());

        // A fourth tenant joins: suppressed at once; the storm's counts go out once when
        // event time next moves.
        assert_eq!(
            who(&engine.external(&upstream("t4", 230, None), 10)),
            [("t4".to_string(), "suppress")]
        );
        let grown = engine.advance(t(240));
        assert_eq!(who(&grown), [("_operator".to_string(), "update")]);
        assert_eq!(grown[0].storm.as_ref().unwrap().tenants, 4);

        // Senders resolve: each member resolves, linked to the storm; below 3 tenants
        // failing the storm subsides, and clears `clear_after` (5m) later.
        for (i, tenant) in ["t1", "t2", "t3"].iter().enumerate() {
            let at = 300 + i as i64;
            let resolved = engine.external(&upstream(tenant, at, Some(at)), 10);
            assert_eq!(who(&resolved), [(tenant.to_string(), "resolve")]);
            assert_eq!(
                resolved[0].storm_id.as_deref(),
                Some(storm.incident_id.as_str())
            );
        }
        // t4's sender re-sends it (else its resolve timeout would end it at 530).
        assert!(engine.external(&upstream("t4", 500, None), 10).is_empty());
        // Two tenants still failing after t2 resolved at 301: subsided then.
        assert!(engine.advance(t(301 + 299)).is_empty());
        let cleared = engine.advance(t(301 + 300));
        // The storm resolves, and so does the member still open (t4), linked to it.
        assert_eq!(
            who(&cleared),
            [
                ("_operator".to_string(), "resolve"),
                ("t4".to_string(), "resolve"),
            ]
        );
        assert_eq!(cleared[1].evidence["resolved_by"], "storm_cleared");
        assert_eq!(engine.open_storms(), 0);
        assert_eq!(engine.open_incidents().count(), 0);

        // t4 still firing: its next re-send is a new incident of its own, held, then paged.
        assert!(engine.external(&upstream("t4", 660, None), 10).is_empty());
        let paged = engine.advance(t(660 + 120));
        assert_eq!(who(&paged), [("t4".to_string(), "trigger")]);
        assert_eq!(paged[0].status, AlertStatus::Open);
        assert!(paged[0].storm_id.is_none());
    }

    #[test]
    fn an_external_alert_of_a_provider_that_stays_alone_pages_after_the_hold() {
        let mut engine = IncidentEngine::new(EngineConfig::default());
        assert!(engine.external(&upstream("t1", 0, None), 2).is_empty());
        // A second tenant, but the floor is 3 tenants: no storm.
        assert!(engine.external(&upstream("t2", 30, None), 2).is_empty());
        assert!(engine.advance(t(119)).is_empty());
        assert_eq!(
            who(&engine.advance(t(120))),
            [("t1".to_string(), "trigger")]
        );
        // Resolved by its sender while still held: the trigger goes out, then the resolve.
        let ended = engine.external(&upstream("t2", 100, Some(140)), 2);
        assert!(
            ended.is_empty(),
            "a resolved re-send received before the end is a re-send"
        );
        let ended = engine.external(&upstream("t2", 140, Some(140)), 2);
        assert_eq!(
            who(&ended),
            [("t2".to_string(), "trigger"), ("t2".to_string(), "resolve")]
        );
        // The share rule: 3 tenants of 40 active (7.5%) is no storm.
        let mut engine = IncidentEngine::new(EngineConfig::default());
        for (i, tenant) in ["a", "b", "c"].iter().enumerate() {
            assert!(
                engine
                    .external(&upstream(tenant, i as i64, None), 40)
                    .is_empty()
            );
        }
        assert_eq!(engine.open_storms(), 0);
        assert_eq!(engine.advance(t(122)).len(), 3);
    }

    #[test]
    fn external_alerts_do_not_correlate_when_the_provider_label_is_off() {
        let mut config = EngineConfig::default();
        config.external.provider_label = String::new();
        let mut engine = IncidentEngine::new(config);
        for (i, tenant) in ["a", "b", "c", "d"].iter().enumerate() {
            let out = engine.external(&upstream(tenant, i as i64, None), 4);
            assert_eq!(who(&out), [(tenant.to_string(), "trigger")]);
        }
        assert_eq!(engine.open_storms(), 0);
    }

    #[test]
    fn a_restored_engine_keeps_an_external_storm() {
        let mut engine = IncidentEngine::new(EngineConfig::default());
        for (i, tenant) in ["t1", "t2", "t3"].iter().enumerate() {
            engine.external(&upstream(tenant, i as i64, None), 10);
        }
        assert_eq!(engine.open_storms(), 1);
        let state = serde_json::to_string(engine.state()).unwrap();
        let mut restored = IncidentEngine::restore(
            EngineConfig::default(),
            serde_json::from_str(&state).unwrap(),
        );
        let joined = restored.external(&upstream("t4", 10, None), 10);
        assert_eq!(who(&joined), [("t4".to_string(), "suppress")]);
        // A re-send of a member is nothing (the storm's grown counts go out as time moves).
        assert_eq!(
            who(&restored.external(&upstream("t1", 60, None), 10)),
            [("_operator".to_string(), "update")]
        );
        assert!(restored.external(&upstream("t1", 120, None), 10).is_empty());
    }

    #[test]
    fn external_alerts_trigger_at_once_dedup_and_resolve_through_the_engine() {
        let mut engine = IncidentEngine::new(EngineConfig::default());
        let trigger = engine.external(&alert("acme", 0, None), 1);
        assert_eq!(actions(&trigger), ["trigger"], "no blip window, no hold");
        assert_eq!(trigger[0].severity, Severity::P3);
        assert!(!trigger[0].event_id.is_empty());
        assert_eq!(engine.open_incidents().count(), 1);
        // Same labels, another tenant: its own incident.
        let other = engine.external(&alert("globex", 0, None), 1);
        assert_eq!(actions(&other), ["trigger"]);
        assert_ne!(other[0].dedup_key, trigger[0].dedup_key);
        assert_eq!(engine.external(&alert("globex", 1, Some(1)), 1).len(), 1);

        // Re-sent every minute: nothing; the watermark moving does not resolve it.
        for minute in 1..=4 {
            assert!(
                engine
                    .external(&alert("acme", minute * 60, None), 1)
                    .is_empty()
            );
            assert!(engine.advance(t(minute * 60 + 30)).is_empty());
        }
        // Not re-sent for resolve_timeout (5m after the last one at 4m): resolved once.
        assert!(engine.advance(t(240 + 299)).is_empty());
        let resolved = engine.advance(t(240 + 300));
        assert_eq!(actions(&resolved), ["resolve"]);
        assert_eq!(resolved[0].incident_id, trigger[0].incident_id);
        assert_eq!(resolved[0].duration_s, Some(540));
        assert!(engine.advance(t(900)).is_empty());
        assert_eq!(engine.open_incidents().count(), 0);
    }

    #[test]
    fn a_restored_engine_keeps_external_incidents_and_reads_older_checkpoints() {
        let mut engine = IncidentEngine::new(EngineConfig::default());
        let trigger = engine.external(&alert("acme", 0, None), 1);
        let state = serde_json::to_value(engine.state()).unwrap();
        let mut restored = IncidentEngine::restore(
            EngineConfig::default(),
            serde_json::from_value(state.clone()).unwrap(),
        );
        assert!(restored.external(&alert("acme", 60, None), 1).is_empty());
        let resolved = restored.external(&alert("acme", 120, Some(100)), 1);
        assert_eq!(actions(&resolved), ["resolve"]);
        assert_eq!(resolved[0].incident_id, trigger[0].incident_id);

        // A checkpoint written before external alerts existed.
        let mut older = state;
        older.as_object_mut().unwrap().remove("external");
        let restored: EngineState = serde_json::from_value(older).unwrap();
        assert_eq!(
            IncidentEngine::restore(EngineConfig::default(), restored)
                .open_incidents()
                .count(),
            0
        );
    }
}

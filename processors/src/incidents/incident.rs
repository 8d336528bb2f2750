//! The incident state machine of one subject (tenant, server, failure class): verdict
//! minutes and analytic findings in, incident transitions out. Pure logic: no I/O, no
//! clock (every time is an event time of the input), so a tracker restored from a
//! checkpoint and fed the same inputs emits the same transitions with the same ids.
//!
//! # Inputs
//!
//! One [`IncidentTracker`] per [`IncidentKey`]; the caller routes inputs by key.
//!
//! * **Verdicts** ([`IncidentTracker::observe_verdict`]), for the probe classes
//!   ([`FailureClass::is_probe_class`]): the caller passes *every* verdict minute of the
//!   server to the tracker of each probe class it tracks for it. `verdict.class ==
//!   Some(class)` is a failing minute, anything else a healthy one
//!   ([`Verdict::healthy_for`]). Minutes arrive in order; a minute at or before the last
//!   one seen is ignored (a duplicate after a replay). A missing minute is a **gap**: it
//!   is neither failing nor healthy — it does not break a failing run nor a healthy run.
//! * **Findings** ([`IncidentTracker::observe_finding`]), for the analytic classes:
//!   `error_rate`, `tool_latency`, `traffic_drop` are *conditions* (firing … resolved);
//!   `schema_drift` and `fleet_inconsistent` are *one-shot notices*.
//! * **Time** ([`IncidentTracker::observe_time`]): the event-time watermark, only needed
//!   to end a flapping incident of an analytic class (nothing else arrives while it is
//!   quiet). Verdict-driven trackers ignore it (a gap is not health).
//!
//! # Verdict timeline (1-minute verdicts)
//!
//! * **Pending**: the first failing minute `T` starts a pending failure. The severity is
//!   the worst seen since `T` ([`IncidentConfig::severity_of`]: overrides, then
//!   [`default_severity`]).
//! * **Open**: a failing minute whose *end* is at or after `T + blip_window(worst
//!   severity)` opens the incident with `opened_at = T` (blip window 3m: the third
//!   consecutive failing minute). The `Open` carries the worst severity seen while pending.
//!   Blip window 0 or 1m opens on the first failing minute.
//! * **Blip**: a pending failure that recovers — `resolve_after` healthy minutes (the
//!   same hysteresis as resolving; a single healthy minute between failing ones does not
//!   split a failure into blips) — before reaching the blip window is one
//!   [`Transition::Blip`] (a P4 row, never paged) with `started = T` and `ended` = end of
//!   its last failing minute.
//! * **While open**: failing minutes refresh the evidence silently; a worse severity
//!   (e.g. regional P2 → global P1) emits `Update { reason: Escalated }`. Severity never
//!   de-escalates while open (a global outage that is now "only" regional is still the
//!   same incident, and paging down would be noise); a later occurrence starts afresh.
//! * **Resolve**: `resolve_after` healthy minutes after the last failing one (gaps
//!   between them allowed) resolve it. `resolved_at` is the **end of the last failing
//!   minute** (the last time the failure was seen; with no gap, the start of the first
//!   healthy minute), so `duration = resolved_at − opened_at` is the time the failure
//!   was observed: 10 failing minutes → 10m. The transition itself happens at `at`, the
//!   end of the minute that decided it.
//!
//! # Flapping
//!
//! Each normal open → resolve is a *cycle* (kept by its `opened_at`, at most
//! `flapping.max_cycles` of them: constant memory). When a failure is about to open and
//! the cycles opened within `flapping.window` before it, plus this one, reach
//! `max_cycles`, it does not `Open` (no page): it emits one `Update { reason: Flapping }`
//! and the incident is **held open as flapping**. That occurrence has its own id
//! (`opened_at` = its first failing minute, like any occurrence); its `Update` is its
//! first transition and updates the subject in place through the shared dedup key.
//! While flapping, failing minutes and recoveries emit nothing (escalation still emits
//! `Update { reason: Escalated }`); it resolves once healthy for `flapping.quiet`
//! (measured from the end of the last failing minute to the end of a healthy minute, and
//! at least `resolve_after` healthy minutes). Resolving a flapping incident clears the
//! cycle history: the quiet period proved it stable. Blips are not cycles (they never
//! paged). So with defaults: at most `max_cycles − 1` `Open`s, one `Flapping` update,
//! then one `Resolve` after 15 quiet minutes.
//!
//! # Findings
//!
//! * Condition classes: a `firing` finding opens immediately (the rule already waited its
//!   `for`), `opened_at` = the finding's `window_start` (when the condition started to
//!   hold), subject to the same flapping rule. Several conditions can feed one incident
//!   (one rule per tool: `error_rate` of tools `a` and `b` are one incident of the server);
//!   the tracker keeps the set of firing conditions (rule, tool, method, region; at most
//!   [`MAX_CONDITIONS`], more are not tracked individually) and resolves when the last
//!   one resolves, with `resolved_at` = that finding's `time`. A new condition firing
//!   while open emits `Update { reason: Evidence }` (or `Escalated` if worse); a repeated
//!   `firing` of a known condition and a `resolved` of an unknown one emit nothing
//!   (replays are harmless). A flapping condition incident resolves when `quiet` has
//!   passed since its last condition resolved, seen through the next finding's time or
//!   [`IncidentTracker::observe_time`].
//! * One-shot classes (`schema_drift`, `fleet_inconsistent`): a notice, not a lasting
//!   state, so each `firing` finding is an `Open` immediately followed by a `Resolve` of
//!   duration 0 (`opened_at = resolved_at =` the finding's time), an occurrence of its
//!   own. Its severity decides its route (breaking drift P2 pushes, additive P3 goes to
//!   chat, cosmetic P4 is logged only, like every P4). A finding at or before the time of
//!   the last one-shot is a replay and ignored; `resolved` findings are ignored.
//! * Severity: the finding's, unless an override without `scope` names the class
//!   (findings have no scope).
//!
//! # Ids
//!
//! `incident_id = Finding::derive_id(&[dedup_key, opened_at RFC 3339])` (a blip's with its
//! `started`): stable for one occurrence and reproduced by a replay; the dedup key
//! ([`IncidentKey::dedup_key`]) is shared by every occurrence of the subject.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use mcpulse_schemas::{AlertAction, AlertStatus, Finding, FindingStatus, Severity};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::types::{FailureClass, IncidentKey, Scope, Verdict, default_severity};

/// Firing conditions tracked per incident (one per rule × tool × method × region).
pub const MAX_CONDITIONS: usize = 64;
/// Largest accepted `flapping.max_cycles` (bounds the checkpointed state).
const MAX_CYCLES: u32 = 100;
/// Largest accepted `resolve_after`.
const MAX_RESOLVE_AFTER: u32 = 1440;
/// Longest accepted duration (blip windows, flapping window and quiet).
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Blip window per severity: how long a failure of that severity must persist to open.
///
/// ```yaml
/// blip_window: { p1: 3m, p2: 3m, p3: 3m }
/// ```
///
/// A P4 failure (only possible through an override) uses the P3 window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlipWindows {
    /// Default 3m.
    #[serde(with = "humantime_serde")]
    pub p1: Duration,
    /// Default 3m.
    #[serde(with = "humantime_serde")]
    pub p2: Duration,
    /// Default 3m.
    #[serde(with = "humantime_serde")]
    pub p3: Duration,
}

impl Default for BlipWindows {
    fn default() -> Self {
        let three = Duration::from_secs(180);
        Self {
            p1: three,
            p2: three,
            p3: three,
        }
    }
}

impl BlipWindows {
    /// The same window for every severity.
    pub fn all(window: Duration) -> Self {
        Self {
            p1: window,
            p2: window,
            p3: window,
        }
    }

    /// The window of a severity (P4 uses P3's).
    pub fn of(&self, severity: Severity) -> Duration {
        match severity {
            Severity::P1 => self.p1,
            Severity::P2 => self.p2,
            Severity::P3 | Severity::P4 => self.p3,
        }
    }
}

/// `flapping:` — too many open → resolve cycles hold the incident open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlappingConfig {
    /// Cycles (counting the one about to open) within `window` that mean flapping
    /// (default 3: the third open within 30 minutes is held as flapping instead).
    pub max_cycles: u32,
    /// How far back cycles count (default 30m).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Continuous health that resolves a flapping incident (default 15m).
    #[serde(with = "humantime_serde")]
    pub quiet: Duration,
}

impl Default for FlappingConfig {
    fn default() -> Self {
        Self {
            max_cycles: 3,
            window: Duration::from_secs(30 * 60),
            quiet: Duration::from_secs(15 * 60),
        }
    }
}

/// One severity override: `{class: timeout, scope: global, severity: P1}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityOverride {
    pub class: FailureClass,
    /// The verdict scope it applies to; omitted: every scope, and findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    pub severity: Severity,
}

/// `incidents:` (the incident state machine part) in `mcpulse.yaml`.
///
/// ```yaml
/// incidents:
///   blip_window: { p1: 3m, p2: 3m, p3: 3m }  # a failure must persist this long to open
///   resolve_after: 2                          # healthy verdict minutes that resolve
///   flapping: { max_cycles: 3, window: 30m, quiet: 15m }
///   severity:                                 # overrides, before the defaults
///     - { class: timeout, scope: global, severity: P1 }
///     - { class: client_error, severity: P3 }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentConfig {
    /// How long a failure must persist to open, per severity (default 3m each); one that
    /// recovers sooner is a blip (P4 row, never paged).
    pub blip_window: BlipWindows,
    /// Healthy verdict minutes (after the last failing one) that resolve an incident or
    /// end a pending failure as a blip (default 2).
    pub resolve_after: u32,
    /// Flapping detection (default 3 cycles in 30m, resolved after 15m quiet).
    pub flapping: FlappingConfig,
    /// Severity overrides: for a verdict, an override naming its class and scope wins,
    /// then one naming its class without scope, then [`default_severity`]; for a finding,
    /// an override naming its class without scope, then the finding's severity.
    pub severity: Vec<SeverityOverride>,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        Self {
            blip_window: BlipWindows::default(),
            resolve_after: 2,
            flapping: FlappingConfig::default(),
            severity: Vec::new(),
        }
    }
}

impl IncidentConfig {
    /// Checks what serde cannot; errors name the field (`incidents.resolve_after: …`).
    pub fn validate(&self) -> Result<(), String> {
        for (name, window) in [
            ("p1", self.blip_window.p1),
            ("p2", self.blip_window.p2),
            ("p3", self.blip_window.p3),
        ] {
            if window > MAX_DURATION {
                return Err(format!(
                    "incidents.blip_window.{name}: must be at most 7 days"
                ));
            }
        }
        if self.resolve_after < 1 {
            return Err("incidents.resolve_after: must be at least 1".into());
        }
        if self.resolve_after > MAX_RESOLVE_AFTER {
            return Err(format!(
                "incidents.resolve_after: must be at most {MAX_RESOLVE_AFTER} (minutes)"
            ));
        }
        let f = &self.flapping;
        if f.max_cycles < 2 {
            return Err(
                "incidents.flapping.max_cycles: must be at least 2 (1 would hold every \
                 incident as flapping)"
                    .into(),
            );
        }
        if f.max_cycles > MAX_CYCLES {
            return Err(format!(
                "incidents.flapping.max_cycles: must be at most {MAX_CYCLES}"
            ));
        }
        if f.window < Duration::from_secs(60) || f.window > MAX_DURATION {
            return Err("incidents.flapping.window: must be between 1m and 7 days".into());
        }
        if f.quiet < Duration::from_secs(60) || f.quiet > MAX_DURATION {
            return Err("incidents.flapping.quiet: must be between 1m and 7 days".into());
        }
        let mut seen = BTreeSet::new();
        for (i, o) in self.severity.iter().enumerate() {
            let scope = o.scope.map(scope_str).unwrap_or("any");
            if !seen.insert((o.class, scope)) {
                return Err(format!(
                    "incidents.severity[{i}]: a second override for class {} and scope {scope}",
                    o.class.as_str()
                ));
            }
            if o.class == FailureClass::External && o.scope.is_some() {
                return Err(format!(
                    "incidents.severity[{i}].scope: class external takes no scope (an \
                     override of class external sets the severity of storms of external \
                     alerts; each alert's own comes from its labels); omit scope"
                ));
            }
            if o.scope.is_some() && !o.class.is_probe_class() {
                return Err(format!(
                    "incidents.severity[{i}].scope: class {} comes from findings, which \
                     have no scope; omit scope",
                    o.class.as_str()
                ));
            }
        }
        Ok(())
    }

    /// The severity of a failing verdict minute of `class` at `scope`: an override for
    /// (class, scope), else one for the class without scope, else [`default_severity`].
    pub fn severity_of(&self, class: FailureClass, scope: Scope) -> Severity {
        self.override_for(class, Some(scope))
            .or_else(|| self.override_for(class, None))
            .unwrap_or_else(|| default_severity(class, scope))
    }

    /// The severity of a finding: an override for its class without scope, else the
    /// finding's.
    pub fn finding_severity(&self, class: FailureClass, suggested: Severity) -> Severity {
        self.override_for(class, None).unwrap_or(suggested)
    }

    fn override_for(&self, class: FailureClass, scope: Option<Scope>) -> Option<Severity> {
        self.severity
            .iter()
            .find(|o| o.class == class && o.scope == scope)
            .map(|o| o.severity)
    }
}

fn scope_str(scope: Scope) -> &'static str {
    match scope {
        Scope::Healthy => "healthy",
        Scope::Degraded => "degraded",
        Scope::Regional => "regional",
        Scope::Global => "global",
    }
}

/// Why an open incident was updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateReason {
    /// The severity got worse (never better while open).
    Escalated,
    /// Too many cycles: held open as flapping instead of opening (no page).
    Flapping,
    /// Another condition (e.g. another tool's error rate) joined the incident.
    Evidence,
}

/// One decided incident transition; the caller turns it into an `alerts.v1` event.
/// `at` is the event time the transition was decided (the end of the verdict minute, or
/// the finding's time).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "transition", rename_all = "snake_case")]
pub enum Transition {
    /// A failure that recovered inside the blip window: a P4 row, never paged.
    Blip {
        incident_id: String,
        started: DateTime<Utc>,
        /// End of its last failing minute.
        ended: DateTime<Utc>,
        /// The worst severity it had (what it would have opened with).
        severity_seen: Severity,
        at: DateTime<Utc>,
        evidence: Value,
    },
    /// The incident opened: trigger.
    Open {
        incident_id: String,
        severity: Severity,
        opened_at: DateTime<Utc>,
        at: DateTime<Utc>,
        evidence: Value,
    },
    /// Updated in place (no new page).
    Update {
        incident_id: String,
        severity: Severity,
        /// The severity before (for `flapping`: that of the previous occurrence).
        previous: Severity,
        reason: UpdateReason,
        /// Whether the incident is held open as flapping after this update.
        flapping: bool,
        opened_at: DateTime<Utc>,
        at: DateTime<Utc>,
        evidence: Value,
    },
    /// The incident resolved.
    Resolve {
        incident_id: String,
        severity: Severity,
        opened_at: DateTime<Utc>,
        resolved_at: DateTime<Utc>,
        /// `resolved_at − opened_at`.
        #[serde(with = "humantime_serde")]
        duration: Duration,
        at: DateTime<Utc>,
        evidence: Value,
    },
}

impl Transition {
    pub fn incident_id(&self) -> &str {
        match self {
            Transition::Blip { incident_id, .. }
            | Transition::Open { incident_id, .. }
            | Transition::Update { incident_id, .. }
            | Transition::Resolve { incident_id, .. } => incident_id,
        }
    }

    /// When the transition was decided (event time).
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Transition::Blip { at, .. }
            | Transition::Open { at, .. }
            | Transition::Update { at, .. }
            | Transition::Resolve { at, .. } => *at,
        }
    }

    pub fn evidence(&self) -> &Value {
        match self {
            Transition::Blip { evidence, .. }
            | Transition::Open { evidence, .. }
            | Transition::Update { evidence, .. }
            | Transition::Resolve { evidence, .. } => evidence,
        }
    }

    /// The severity the event carries (a blip is a P4 row whatever it had).
    pub fn severity(&self) -> Severity {
        match self {
            Transition::Blip { .. } => Severity::P4,
            Transition::Open { severity, .. }
            | Transition::Update { severity, .. }
            | Transition::Resolve { severity, .. } => *severity,
        }
    }

    /// When the occurrence started (a blip's `started`).
    pub fn opened_at(&self) -> DateTime<Utc> {
        match self {
            Transition::Blip { started, .. } => *started,
            Transition::Open { opened_at, .. }
            | Transition::Update { opened_at, .. }
            | Transition::Resolve { opened_at, .. } => *opened_at,
        }
    }

    pub fn action(&self) -> AlertAction {
        match self {
            Transition::Blip { .. } => AlertAction::Blip,
            Transition::Open { .. } => AlertAction::Trigger,
            Transition::Update { .. } => AlertAction::Update,
            Transition::Resolve { .. } => AlertAction::Resolve,
        }
    }

    /// The incident's state after the transition.
    pub fn status(&self) -> AlertStatus {
        match self {
            Transition::Open { .. } => AlertStatus::Open,
            Transition::Update { flapping: true, .. } => AlertStatus::Flapping,
            Transition::Update { .. } => AlertStatus::Open,
            Transition::Blip { .. } | Transition::Resolve { .. } => AlertStatus::Resolved,
        }
    }
}

/// Where the subject stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Phase {
    /// Nothing failing.
    Idle,
    /// Failing since `started`, not yet past the blip window.
    Pending {
        started: DateTime<Utc>,
        /// End of the last failing minute.
        last_failing_end: DateTime<Utc>,
        worst: Severity,
        /// Healthy minutes since the last failing one.
        healthy: u32,
        evidence: Value,
    },
    /// An open incident (possibly held open as flapping).
    Open {
        incident_id: String,
        opened_at: DateTime<Utc>,
        severity: Severity,
        flapping: bool,
        /// Verdicts: end of the last failing minute. Findings: when the last condition
        /// resolved (only read while no condition fires).
        last_failing_end: DateTime<Utc>,
        /// Healthy minutes since the last failing one (verdicts).
        healthy: u32,
        /// The evidence of the last failure.
        evidence: Value,
    },
}

/// The state machine of one (tenant, server, class); see the module docs. Constant size
/// (bounded by the config: at most `max_cycles` cycle times and [`MAX_CONDITIONS`]
/// conditions) and checkpointable (serde).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentTracker {
    key: IncidentKey,
    phase: Phase,
    /// `opened_at` of recent normal cycles (open → resolve), oldest first.
    cycles: VecDeque<DateTime<Utc>>,
    /// Severity of the last occurrence that opened (the `previous` of a flapping update).
    last_severity: Option<Severity>,
    /// The last verdict minute seen (later duplicates are ignored).
    last_minute: Option<DateTime<Utc>>,
    /// Time of the last one-shot finding (replays at or before it are ignored).
    last_notice: Option<DateTime<Utc>>,
    /// Firing conditions of an analytic incident.
    conditions: BTreeSet<String>,
}

fn minute() -> chrono::Duration {
    chrono::Duration::minutes(1)
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn std_of(d: chrono::Duration) -> Duration {
    d.to_std().unwrap_or(Duration::ZERO)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// `Finding::derive_id(&[dedup_key, opened_at RFC 3339])`.
fn occurrence_id(dedup_key: &str, opened_at: DateTime<Utc>) -> String {
    Finding::derive_id(&[dedup_key, &rfc3339(opened_at)])
}

fn is_one_shot(class: FailureClass) -> bool {
    matches!(
        class,
        FailureClass::SchemaDrift | FailureClass::FleetInconsistent
    )
}

/// The evidence of a verdict minute.
fn verdict_evidence(v: &Verdict) -> Value {
    json!({
        "minute": rfc3339(v.minute),
        "scope": scope_str(v.scope),
        "class": v.class.map(FailureClass::as_str),
        "reason": v.reason,
        "failing_regions": v.failing_regions,
        "regions": v.regions,
        "detail": v.detail,
    })
}

/// The evidence of a finding.
fn finding_evidence(f: &Finding) -> Value {
    json!({
        "finding_id": f.id,
        "kind": f.kind.as_str(),
        "status": f.status.as_str(),
        "tool": f.tool,
        "method": f.method,
        "region": f.region,
        "window_start": rfc3339(f.window_start),
        "window_end": rfc3339(f.window_end),
        "summary": f.summary,
        "evidence": f.evidence,
        "source": f.source,
    })
}

/// `{"last_failure": …, "recovery": …}`.
fn recovery_evidence(last_failure: Value, recovery: Value) -> Value {
    json!({"last_failure": last_failure, "recovery": recovery})
}

/// The identity of a condition within an analytic incident.
fn condition_id(f: &Finding) -> String {
    let rule = f
        .evidence
        .get("rule")
        .and_then(Value::as_str)
        .unwrap_or_default();
    format!(
        "{rule}\u{1f}{}\u{1f}{}\u{1f}{}",
        f.tool.as_deref().unwrap_or_default(),
        f.method.as_deref().unwrap_or_default(),
        f.region.as_deref().unwrap_or_default()
    )
}

impl IncidentTracker {
    pub fn new(key: IncidentKey) -> Self {
        Self {
            key,
            phase: Phase::Idle,
            cycles: VecDeque::new(),
            last_severity: None,
            last_minute: None,
            last_notice: None,
            conditions: BTreeSet::new(),
        }
    }

    pub fn key(&self) -> &IncidentKey {
        &self.key
    }

    /// The id of an occurrence of this subject that started at `opened_at`.
    pub fn incident_id(&self, opened_at: DateTime<Utc>) -> String {
        occurrence_id(&self.key.dedup_key(), opened_at)
    }

    /// The open incident's id, if one is open (flapping included).
    pub fn open_incident(&self) -> Option<&str> {
        match &self.phase {
            Phase::Open { incident_id, .. } => Some(incident_id),
            _ => None,
        }
    }

    /// Whether a failure is pending (inside the blip window).
    pub fn is_pending(&self) -> bool {
        matches!(self.phase, Phase::Pending { .. })
    }

    /// Whether the open incident is held as flapping.
    pub fn is_flapping(&self) -> bool {
        matches!(self.phase, Phase::Open { flapping: true, .. })
    }

    /// Closed, nothing pending and no cycle history: the caller may drop the tracker (a
    /// new one behaves the same). Cycles age out as later inputs (or
    /// [`observe_time`](Self::observe_time)) move past `flapping.window`.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Idle) && self.cycles.is_empty() && self.conditions.is_empty()
    }

    /// One verdict minute of the server (see the module docs).
    pub fn observe_verdict(&mut self, v: &Verdict, cfg: &IncidentConfig) -> Vec<Transition> {
        let class = self.key.class;
        if !class.is_probe_class() || v.tenant != self.key.tenant || v.server != self.key.server {
            return Vec::new();
        }
        if self.last_minute.is_some_and(|last| v.minute <= last) {
            return Vec::new();
        }
        self.last_minute = Some(v.minute);
        let end = v.minute + minute();
        self.prune_cycles(v.minute, cfg);
        if v.healthy_for(class) {
            self.healthy_minute(v, end, cfg)
        } else {
            let severity = cfg.severity_of(class, v.scope);
            self.failing_minute(v, severity, end, cfg)
        }
    }

    fn failing_minute(
        &mut self,
        v: &Verdict,
        severity: Severity,
        end: DateTime<Utc>,
        cfg: &IncidentConfig,
    ) -> Vec<Transition> {
        let evidence = verdict_evidence(v);
        match &mut self.phase {
            Phase::Idle => {
                self.phase = Phase::Pending {
                    started: v.minute,
                    last_failing_end: end,
                    worst: severity,
                    healthy: 0,
                    evidence,
                };
                self.maybe_open(end, cfg)
            }
            Phase::Pending {
                last_failing_end,
                worst,
                healthy,
                evidence: last,
                ..
            } => {
                *last_failing_end = end;
                *worst = (*worst).min(severity);
                *healthy = 0;
                *last = evidence;
                self.maybe_open(end, cfg)
            }
            Phase::Open {
                incident_id,
                opened_at,
                severity: current,
                flapping,
                last_failing_end,
                healthy,
                evidence: last,
            } => {
                *last_failing_end = end;
                *healthy = 0;
                *last = evidence.clone();
                if severity < *current {
                    let previous = *current;
                    *current = severity;
                    self.last_severity = Some(severity);
                    return vec![Transition::Update {
                        incident_id: incident_id.clone(),
                        severity,
                        previous,
                        reason: UpdateReason::Escalated,
                        flapping: *flapping,
                        opened_at: *opened_at,
                        at: end,
                        evidence,
                    }];
                }
                Vec::new()
            }
        }
    }

    /// Opens a pending failure that reached its blip window at `end`.
    fn maybe_open(&mut self, end: DateTime<Utc>, cfg: &IncidentConfig) -> Vec<Transition> {
        let Phase::Pending {
            started,
            worst,
            evidence,
            ..
        } = &self.phase
        else {
            return Vec::new();
        };
        if end < *started + chrono_of(cfg.blip_window.of(*worst)) {
            return Vec::new();
        }
        let (started, worst, evidence) = (*started, *worst, evidence.clone());
        vec![self.open(started, worst, end, end, evidence, cfg)]
    }

    /// Opens an occurrence (or holds it as flapping) and returns its first transition.
    fn open(
        &mut self,
        opened_at: DateTime<Utc>,
        severity: Severity,
        last_failing_end: DateTime<Utc>,
        at: DateTime<Utc>,
        evidence: Value,
        cfg: &IncidentConfig,
    ) -> Transition {
        let incident_id = self.incident_id(opened_at);
        let since = opened_at - chrono_of(cfg.flapping.window);
        let recent = self.cycles.iter().filter(|t| **t >= since).count() as u32;
        let flapping = recent + 1 >= cfg.flapping.max_cycles;
        let previous = self.last_severity.unwrap_or(severity);
        self.last_severity = Some(severity);
        self.phase = Phase::Open {
            incident_id: incident_id.clone(),
            opened_at,
            severity,
            flapping,
            last_failing_end,
            healthy: 0,
            evidence: evidence.clone(),
        };
        if flapping {
            Transition::Update {
                incident_id,
                severity,
                previous,
                reason: UpdateReason::Flapping,
                flapping: true,
                opened_at,
                at,
                evidence: json!({
                    "cycles": recent + 1,
                    "window": humantime_serde::re::humantime::format_duration(cfg.flapping.window).to_string(),
                    "last_failure": evidence,
                }),
            }
        } else {
            Transition::Open {
                incident_id,
                severity,
                opened_at,
                at,
                evidence,
            }
        }
    }

    fn healthy_minute(
        &mut self,
        v: &Verdict,
        end: DateTime<Utc>,
        cfg: &IncidentConfig,
    ) -> Vec<Transition> {
        let dedup_key = self.key.dedup_key();
        match &mut self.phase {
            Phase::Idle => Vec::new(),
            Phase::Pending {
                started,
                last_failing_end,
                worst,
                healthy,
                evidence,
            } => {
                *healthy += 1;
                if *healthy < cfg.resolve_after {
                    return Vec::new();
                }
                let blip = Transition::Blip {
                    incident_id: occurrence_id(&dedup_key, *started),
                    started: *started,
                    ended: *last_failing_end,
                    severity_seen: *worst,
                    at: end,
                    evidence: recovery_evidence(evidence.take(), verdict_evidence(v)),
                };
                self.phase = Phase::Idle;
                vec![blip]
            }
            Phase::Open {
                flapping,
                last_failing_end,
                healthy,
                ..
            } => {
                *healthy += 1;
                let due = *healthy >= cfg.resolve_after
                    && (!*flapping || end - *last_failing_end >= chrono_of(cfg.flapping.quiet));
                if !due {
                    return Vec::new();
                }
                vec![self.resolve(end, verdict_evidence(v), cfg)]
            }
        }
    }

    /// Resolves the open incident at the end of its last failure.
    fn resolve(&mut self, at: DateTime<Utc>, recovery: Value, cfg: &IncidentConfig) -> Transition {
        let phase = std::mem::replace(&mut self.phase, Phase::Idle);
        let Phase::Open {
            incident_id,
            opened_at,
            severity,
            flapping,
            last_failing_end,
            evidence,
            ..
        } = phase
        else {
            unreachable!("resolve is only called while open");
        };
        if flapping {
            self.cycles.clear();
        } else {
            self.cycles.push_back(opened_at);
            while self.cycles.len() > cfg.flapping.max_cycles as usize {
                self.cycles.pop_front();
            }
        }
        let resolved_at = last_failing_end.max(opened_at);
        Transition::Resolve {
            incident_id,
            severity,
            opened_at,
            resolved_at,
            duration: std_of(resolved_at - opened_at),
            at,
            evidence: recovery_evidence(evidence, recovery),
        }
    }

    /// Resolves the open incident because the storm it was a member of cleared at `at`
    /// (the storm's `cleared_at`): the shared outage is over. Not a flapping cycle — the
    /// server did not cycle, its provider did. `None` when nothing is open. If the server
    /// is still failing, its next failing minutes start a new occurrence.
    pub fn resolve_with_storm(&mut self, at: DateTime<Utc>, storm_id: &str) -> Option<Transition> {
        if !matches!(self.phase, Phase::Open { .. }) {
            return None;
        }
        let Phase::Open {
            incident_id,
            opened_at,
            severity,
            evidence,
            ..
        } = std::mem::replace(&mut self.phase, Phase::Idle)
        else {
            unreachable!("checked above");
        };
        self.conditions.clear();
        let resolved_at = at.max(opened_at);
        Some(Transition::Resolve {
            incident_id,
            severity,
            opened_at,
            resolved_at,
            duration: std_of(resolved_at - opened_at),
            at: resolved_at,
            evidence: json!({"last_failure": evidence, "storm_cleared": storm_id}),
        })
    }

    /// Forgets cycles that can no longer count towards flapping at `now`.
    /// (The earliest occurrence that can still open is a pending one's start.)
    fn prune_cycles(&mut self, now: DateTime<Utc>, cfg: &IncidentConfig) {
        let now = match &self.phase {
            Phase::Pending { started, .. } => now.min(*started),
            _ => now,
        };
        let since = now - chrono_of(cfg.flapping.window);
        while self.cycles.front().is_some_and(|t| *t < since) {
            self.cycles.pop_front();
        }
    }

    /// One finding of this subject (see the module docs).
    pub fn observe_finding(&mut self, f: &Finding, cfg: &IncidentConfig) -> Vec<Transition> {
        let class = FailureClass::of_finding(f.kind);
        if class != self.key.class || f.tenant != self.key.tenant || f.server != self.key.server {
            return Vec::new();
        }
        let severity = cfg.finding_severity(class, f.severity);
        if is_one_shot(class) {
            return self.notice(f, severity);
        }
        let mut out = self.observe_time(f.time, cfg);
        let condition = condition_id(f);
        let evidence = finding_evidence(f);
        match f.status {
            FindingStatus::Firing => {
                // A condition beyond the cap is not tracked (and so adds no evidence).
                let new =
                    self.conditions.len() < MAX_CONDITIONS && self.conditions.insert(condition);
                match &mut self.phase {
                    Phase::Idle | Phase::Pending { .. } => {
                        let opened_at = f.window_start.min(f.time);
                        out.push(self.open(opened_at, severity, f.time, f.time, evidence, cfg));
                    }
                    Phase::Open {
                        incident_id,
                        opened_at,
                        severity: current,
                        flapping,
                        evidence: last,
                        ..
                    } => {
                        *last = evidence.clone();
                        let reason = if severity < *current {
                            UpdateReason::Escalated
                        } else if new && !*flapping {
                            UpdateReason::Evidence
                        } else {
                            return out;
                        };
                        let previous = *current;
                        *current = severity.min(previous);
                        self.last_severity = Some(*current);
                        out.push(Transition::Update {
                            incident_id: incident_id.clone(),
                            severity: *current,
                            previous,
                            reason,
                            flapping: *flapping,
                            opened_at: *opened_at,
                            at: f.time,
                            evidence,
                        });
                    }
                }
            }
            FindingStatus::Resolved => {
                if !self.conditions.remove(&condition) || !self.conditions.is_empty() {
                    return out;
                }
                if let Phase::Open {
                    flapping,
                    last_failing_end,
                    ..
                } = &mut self.phase
                {
                    *last_failing_end = f.time;
                    if !*flapping {
                        out.push(self.resolve(f.time, evidence, cfg));
                    }
                }
            }
        }
        out
    }

    /// A one-shot notice: open and resolve in one step.
    fn notice(&mut self, f: &Finding, severity: Severity) -> Vec<Transition> {
        if f.status != FindingStatus::Firing || self.last_notice.is_some_and(|t| f.time <= t) {
            return Vec::new();
        }
        self.last_notice = Some(f.time);
        let incident_id = self.incident_id(f.time);
        let evidence = finding_evidence(f);
        vec![
            Transition::Open {
                incident_id: incident_id.clone(),
                severity,
                opened_at: f.time,
                at: f.time,
                evidence: evidence.clone(),
            },
            Transition::Resolve {
                incident_id,
                severity,
                opened_at: f.time,
                resolved_at: f.time,
                duration: Duration::ZERO,
                at: f.time,
                evidence: json!({"notice": true, "kind": f.kind.as_str()}),
            },
        ]
    }

    /// The event-time watermark moved to `now`: ages out old cycles and resolves a
    /// flapping analytic incident whose conditions have all been resolved for
    /// `flapping.quiet`. Verdict-driven trackers only age their cycles (a gap is not
    /// health).
    pub fn observe_time(&mut self, now: DateTime<Utc>, cfg: &IncidentConfig) -> Vec<Transition> {
        self.prune_cycles(now, cfg);
        if self.key.class.is_probe_class() || !self.conditions.is_empty() {
            return Vec::new();
        }
        let Phase::Open {
            flapping: true,
            last_failing_end,
            ..
        } = &self.phase
        else {
            return Vec::new();
        };
        if now - *last_failing_end < chrono_of(cfg.flapping.quiet) {
            return Vec::new();
        }
        let recovery = json!({"quiet_since": rfc3339(*last_failing_end)});
        vec![self.resolve(now, recovery, cfg)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpulse_schemas::FindingKind;
    use mcpulse_schemas::probe::FailureReason;

    const T0: &str = "2026-11-21T10:00:00Z";

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(T0)
            .unwrap()
            .with_timezone(&Utc)
            + chrono::Duration::minutes(minutes)
    }

    fn key(class: FailureClass) -> IncidentKey {
        IncidentKey {
            tenant: "acme".into(),
            server: "weather".into(),
            class,
        }
    }

    const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

    /// A verdict minute `m` (minutes after T0).
    fn verdict(m: i64, scope: Scope, reason: Option<FailureReason>, failing: &[&str]) -> Verdict {
        let mut regions: Vec<String> = REGIONS.iter().map(|r| r.to_string()).collect();
        regions.sort();
        let mut failing_regions: Vec<String> = failing.iter().map(|r| r.to_string()).collect();
        failing_regions.sort();
        Verdict {
            tenant: "acme".into(),
            server: "weather".into(),
            minute: t(m),
            scope,
            class: reason.and_then(FailureClass::of_reason),
            reason,
            failing_regions,
            regions,
            provider: "fly.dev".into(),
            detail: format!("{reason:?} from {failing:?}"),
        }
    }

    fn down(m: i64) -> Verdict {
        verdict(m, Scope::Global, Some(FailureReason::TcpRefused), &REGIONS)
    }

    fn down_in_one(m: i64) -> Verdict {
        verdict(
            m,
            Scope::Regional,
            Some(FailureReason::TcpRefused),
            &["eu-west"],
        )
    }

    fn up(m: i64) -> Verdict {
        verdict(m, Scope::Healthy, None, &[])
    }

    /// Feeds verdicts by pattern: `F` global failure, `R` regional, `H` healthy, `.` gap.
    fn pattern(start: i64, p: &str) -> Vec<Verdict> {
        p.chars()
            .enumerate()
            .filter_map(|(i, c)| {
                let m = start + i as i64;
                match c {
                    'F' => Some(down(m)),
                    'R' => Some(down_in_one(m)),
                    'H' => Some(up(m)),
                    '.' => None,
                    other => panic!("pattern char {other}"),
                }
            })
            .collect()
    }

    fn run(
        tracker: &mut IncidentTracker,
        verdicts: &[Verdict],
        cfg: &IncidentConfig,
    ) -> Vec<Transition> {
        verdicts
            .iter()
            .flat_map(|v| tracker.observe_verdict(v, cfg))
            .collect()
    }

    fn fresh(verdicts: &[Verdict], cfg: &IncidentConfig) -> Vec<Transition> {
        run(
            &mut IncidentTracker::new(key(FailureClass::Unreachable)),
            verdicts,
            cfg,
        )
    }

    fn kinds(ts: &[Transition]) -> Vec<&'static str> {
        ts.iter()
            .map(|t| match t {
                Transition::Blip { .. } => "blip",
                Transition::Open { .. } => "open",
                Transition::Update {
                    reason: UpdateReason::Escalated,
                    ..
                } => "escalated",
                Transition::Update {
                    reason: UpdateReason::Flapping,
                    ..
                } => "flapping",
                Transition::Update {
                    reason: UpdateReason::Evidence,
                    ..
                } => "evidence",
                Transition::Resolve { .. } => "resolve",
            })
            .collect()
    }

    fn id_at(opened_at: DateTime<Utc>) -> String {
        Finding::derive_id(&[
            "mcpulse/acme/weather/unreachable",
            &opened_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        ])
    }

    #[test]
    fn down_everywhere_for_ten_minutes_is_one_p1_and_one_resolve_with_its_duration() {
        let cfg = IncidentConfig::default();
        let out = fresh(&pattern(0, "HHFFFFFFFFFFHHHH"), &cfg);
        assert_eq!(kinds(&out), ["open", "resolve"]);
        match &out[0] {
            Transition::Open {
                incident_id,
                severity,
                opened_at,
                at,
                evidence,
            } => {
                assert_eq!(*severity, Severity::P1);
                assert_eq!(*opened_at, t(2));
                // The third consecutive failing minute (t4) decides: at its end.
                assert_eq!(*at, t(5));
                assert_eq!(*incident_id, id_at(t(2)));
                assert_eq!(evidence["scope"], "global");
                assert_eq!(evidence["reason"], "tcp_refused");
                assert_eq!(evidence["failing_regions"].as_array().unwrap().len(), 3);
            }
            other => panic!("{other:?}"),
        }
        match &out[1] {
            Transition::Resolve {
                incident_id,
                severity,
                opened_at,
                resolved_at,
                duration,
                at,
                evidence,
            } => {
                assert_eq!(*incident_id, id_at(t(2)));
                assert_eq!(*severity, Severity::P1);
                assert_eq!(*opened_at, t(2));
                assert_eq!(*resolved_at, t(12));
                assert_eq!(*duration, Duration::from_secs(600));
                // Decided by the second healthy minute (t13), at its end.
                assert_eq!(*at, t(14));
                assert_eq!(evidence["last_failure"]["minute"], "2026-11-21T10:11:00Z");
                assert_eq!(evidence["recovery"]["scope"], "healthy");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out[1].status(), AlertStatus::Resolved);
        assert_eq!(out[0].action(), AlertAction::Trigger);
    }

    #[test]
    fn a_two_minute_blip_is_one_p4_row_and_no_trigger() {
        let cfg = IncidentConfig::default();
        let mut tracker = IncidentTracker::new(key(FailureClass::Unreachable));
        let out = run(&mut tracker, &pattern(0, "HFFHHHHH"), &cfg);
        assert_eq!(kinds(&out), ["blip"]);
        match &out[0] {
            Transition::Blip {
                incident_id,
                started,
                ended,
                severity_seen,
                at,
                evidence,
            } => {
                assert_eq!(*incident_id, id_at(t(1)));
                assert_eq!(*started, t(1));
                assert_eq!(*ended, t(3));
                assert_eq!(*severity_seen, Severity::P1);
                assert_eq!(*at, t(5));
                assert_eq!(evidence["last_failure"]["scope"], "global");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out[0].severity(), Severity::P4);
        assert_eq!(out[0].action(), AlertAction::Blip);
        assert!(tracker.is_idle());
    }

    #[test]
    fn one_healthy_minute_does_not_split_a_failure_into_blips() {
        let cfg = IncidentConfig::default();
        // F H F F: still failing at the end of t3 ≥ t0 + 3m.
        let out = fresh(&pattern(0, "FHFF"), &cfg);
        assert_eq!(kinds(&out), ["open"]);
        assert_eq!(out[0].opened_at(), t(0));
    }

    #[test]
    fn one_region_failing_is_a_p2_regional_incident() {
        let cfg = IncidentConfig::default();
        let out = fresh(&pattern(0, "RRRRRHH"), &cfg);
        assert_eq!(kinds(&out), ["open", "resolve"]);
        match &out[0] {
            Transition::Open {
                severity, evidence, ..
            } => {
                assert_eq!(*severity, Severity::P2);
                assert_eq!(evidence["scope"], "regional");
                assert_eq!(evidence["failing_regions"], json!(["eu-west"]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out[1].severity(), Severity::P2);
    }

    #[test]
    fn regional_then_global_escalates_in_place_and_never_deescalates() {
        let cfg = IncidentConfig::default();
        let out = fresh(&pattern(0, "RRRRFFRRRHH"), &cfg);
        assert_eq!(kinds(&out), ["open", "escalated", "resolve"]);
        let id = out[0].incident_id().to_string();
        assert!(out.iter().all(|t| t.incident_id() == id));
        match &out[1] {
            Transition::Update {
                severity,
                previous,
                flapping,
                opened_at,
                at,
                ..
            } => {
                assert_eq!((*severity, *previous), (Severity::P1, Severity::P2));
                assert!(!flapping);
                assert_eq!(*opened_at, t(0));
                assert_eq!(*at, t(5));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out[2].severity(), Severity::P1);
    }

    #[test]
    fn opens_with_the_worst_severity_seen_while_pending() {
        let cfg = IncidentConfig::default();
        let out = fresh(&pattern(0, "RFR"), &cfg);
        assert_eq!(kinds(&out), ["open"]);
        assert_eq!(out[0].severity(), Severity::P1);
    }

    #[test]
    fn blip_windows_are_per_severity() {
        let cfg = IncidentConfig {
            blip_window: BlipWindows {
                p1: Duration::from_secs(60),
                p2: Duration::from_secs(300),
                p3: Duration::from_secs(180),
            },
            ..IncidentConfig::default()
        };
        // P1 opens on its first minute.
        let out = fresh(&pattern(0, "F"), &cfg);
        assert_eq!(kinds(&out), ["open"]);
        // P2 needs five minutes: four regional minutes are a blip.
        let out = fresh(&pattern(0, "RRRRHH"), &cfg);
        assert_eq!(kinds(&out), ["blip"]);
        assert_eq!(out[0].severity(), Severity::P4);
        let out = fresh(&pattern(0, "RRRRR"), &cfg);
        assert_eq!(kinds(&out), ["open"]);
        // Escalating while pending shortens the window: opens at once.
        let out = fresh(&pattern(0, "RRF"), &cfg);
        assert_eq!(kinds(&out), ["open"]);
        assert_eq!((out[0].opened_at(), out[0].at()), (t(0), t(3)));
    }

    #[test]
    fn gaps_are_neither_failing_nor_healthy() {
        let cfg = IncidentConfig::default();
        // A failing minute, two missing, a failing one: persisted past the window.
        let out = fresh(&pattern(0, "F..F"), &cfg);
        assert_eq!(kinds(&out), ["open"]);
        assert_eq!(out[0].opened_at(), t(0));
        // Healthy minutes separated by a gap still resolve; the duration ends at the
        // last failing minute.
        let out = fresh(&pattern(0, "FFFH...H"), &cfg);
        assert_eq!(kinds(&out), ["open", "resolve"]);
        match &out[1] {
            Transition::Resolve {
                resolved_at,
                duration,
                at,
                ..
            } => {
                assert_eq!(*resolved_at, t(3));
                assert_eq!(*duration, Duration::from_secs(180));
                assert_eq!(*at, t(8));
            }
            other => panic!("{other:?}"),
        }
        // Missing minutes alone resolve nothing.
        let mut tracker = IncidentTracker::new(key(FailureClass::Unreachable));
        run(&mut tracker, &pattern(0, "FFF"), &cfg);
        assert!(tracker.observe_time(t(600), &cfg).is_empty());
        assert!(tracker.open_incident().is_some());
    }

    #[test]
    fn duplicate_and_late_minutes_are_ignored() {
        let cfg = IncidentConfig::default();
        let mut tracker = IncidentTracker::new(key(FailureClass::Unreachable));
        let mut out = run(&mut tracker, &pattern(0, "FFF"), &cfg);
        out.extend(run(&mut tracker, &pattern(0, "FFF"), &cfg));
        out.extend(run(&mut tracker, &pattern(1, "H"), &cfg));
        assert_eq!(kinds(&out), ["open"]);
        out.extend(run(&mut tracker, &pattern(3, "HH"), &cfg));
        assert_eq!(kinds(&out), ["open", "resolve"]);
    }

    #[test]
    fn other_classes_and_auth_required_are_healthy_minutes_for_this_class() {
        let cfg = IncidentConfig::default();
        let tls = |m| verdict(m, Scope::Global, Some(FailureReason::TlsError), &REGIONS);
        let auth = |m| {
            verdict(
                m,
                Scope::Global,
                Some(FailureReason::AuthRequired),
                &REGIONS,
            )
        };
        let mut tracker = IncidentTracker::new(key(FailureClass::Unreachable));
        let mut out = run(&mut tracker, &pattern(0, "FFF"), &cfg);
        out.extend(tracker.observe_verdict(&tls(3), &cfg));
        out.extend(tracker.observe_verdict(&auth(4), &cfg));
        assert_eq!(kinds(&out), ["open", "resolve"]);
        // The TLS tracker sees its own failure.
        let mut tls_tracker = IncidentTracker::new(key(FailureClass::Tls));
        let out: Vec<_> = (0..3)
            .flat_map(|m| tls_tracker.observe_verdict(&tls(m), &cfg))
            .collect();
        assert_eq!(kinds(&out), ["open"]);
        assert_eq!(out[0].severity(), Severity::P1);
        // Another server's verdicts are not this tracker's.
        let mut other = down(10);
        other.server = "news".into();
        assert!(tls_tracker.observe_verdict(&other, &cfg).is_empty());
    }

    fn flapping_cfg() -> IncidentConfig {
        IncidentConfig {
            blip_window: BlipWindows::all(Duration::from_secs(60)),
            ..IncidentConfig::default()
        }
    }

    #[test]
    fn flapping_is_held_open_after_max_cycles_minus_one_opens() {
        let cfg = flapping_cfg();
        let mut tracker = IncidentTracker::new(key(FailureClass::Unreachable));
        // Ten cycles of 2 failing + 2 healthy minutes (one open/resolve every 4 minutes),
        // then a long quiet period.
        let cycles = "FFHH".repeat(10);
        let out = run(
            &mut tracker,
            &pattern(0, &format!("{cycles}{}", "H".repeat(30))),
            &cfg,
        );
        assert_eq!(
            kinds(&out),
            ["open", "resolve", "open", "resolve", "flapping", "resolve"]
        );
        let pages = out
            .iter()
            .filter(|t| matches!(t, Transition::Open { .. }))
            .count();
        assert_eq!(pages, cfg.flapping.max_cycles as usize - 1);
        match &out[4] {
            Transition::Update {
                incident_id,
                severity,
                previous,
                flapping,
                opened_at,
                at,
                evidence,
                ..
            } => {
                assert_eq!(*incident_id, id_at(t(8)));
                assert_eq!((*severity, *previous), (Severity::P1, Severity::P1));
                assert!(flapping);
                assert_eq!(*opened_at, t(8));
                assert_eq!(*at, t(9));
                assert_eq!(evidence["cycles"], 3);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(out[4].status(), AlertStatus::Flapping);
        match &out[5] {
            Transition::Resolve {
                incident_id,
                opened_at,
                resolved_at,
                duration,
                at,
                ..
            } => {
                assert_eq!(*incident_id, id_at(t(8)));
                assert_eq!(*opened_at, t(8));
                // Last failing minute: t37 (the last cycle starts at t36).
                assert_eq!(*resolved_at, t(38));
                assert_eq!(*duration, Duration::from_secs(30 * 60));
                // 15 minutes of quiet after t38.
                assert_eq!(*at, t(38 + 15));
            }
            other => panic!("{other:?}"),
        }
        assert!(tracker.is_idle());
        // Stable again: the next failure opens (and pages) normally.
        let out = run(&mut tracker, &pattern(100, "FFHH"), &cfg);
        assert_eq!(kinds(&out), ["open", "resolve"]);
    }

    #[test]
    fn cycles_outside_the_window_do_not_count() {
        let cfg = flapping_cfg();
        // A cycle every 20 minutes: never three inside 30 minutes.
        let cycle = format!("FFHH{}", "H".repeat(16));
        let out = fresh(&pattern(0, &cycle.repeat(5)), &cfg);
        assert_eq!(kinds(&out), ["open", "resolve"].repeat(5));
    }

    #[test]
    fn flapping_escalation_still_updates() {
        let cfg = flapping_cfg();
        let out = fresh(&pattern(0, "RRHHRRHHRRHHRRFFHH"), &cfg);
        assert_eq!(
            kinds(&out),
            [
                "open",
                "resolve",
                "open",
                "resolve",
                "flapping",
                "escalated"
            ]
        );
        match &out[5] {
            Transition::Update { flapping, .. } => assert!(flapping),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn realistic_90_second_flapping_is_one_incident_with_default_hysteresis() {
        let cfg = IncidentConfig::default();
        // Probes every minute against a server failing 45s of every 90s.
        let mut p = String::new();
        for m in 0..30 {
            let s = (m * 60) % 90;
            p.push(if s < 45 { 'F' } else { 'H' });
        }
        p.push_str("HH");
        let out = fresh(&pattern(0, &p), &cfg);
        assert_eq!(kinds(&out), ["open", "resolve"]);
        assert_eq!(out[0].opened_at(), t(0));
    }

    fn finding(
        kind: FindingKind,
        status: FindingStatus,
        tool: Option<&str>,
        severity: Severity,
        start: i64,
        at: i64,
    ) -> Finding {
        Finding {
            id: Finding::derive_id(&[
                kind.as_str(),
                tool.unwrap_or(""),
                status.as_str(),
                &start.to_string(),
            ]),
            kind,
            status,
            tenant: "acme".into(),
            server: "weather".into(),
            tool: tool.map(Into::into),
            method: None,
            region: None,
            severity,
            time: t(at),
            window_start: t(start),
            window_end: t(at),
            summary: format!("{kind} {}", tool.unwrap_or("")),
            evidence: json!({"rule": format!("{kind}-rule")}),
            source: "signals".into(),
        }
    }

    #[test]
    fn condition_findings_open_at_once_and_resolve_with_the_last_condition() {
        use FindingStatus::{Firing, Resolved};
        let cfg = IncidentConfig::default();
        let k = FindingKind::ErrorRateElevated;
        let mut tracker = IncidentTracker::new(key(FailureClass::ErrorRate));
        let inputs = [
            finding(k, Firing, Some("forecast"), Severity::P2, 0, 5),
            finding(k, Firing, Some("forecast"), Severity::P2, 0, 6), // repeat
            finding(k, Firing, Some("radar"), Severity::P2, 3, 8),    // joins
            finding(k, Resolved, Some("alerts"), Severity::P2, 0, 9), // unknown
            finding(k, Resolved, Some("forecast"), Severity::P2, 0, 10),
            finding(k, Resolved, Some("radar"), Severity::P2, 3, 12),
            finding(k, Resolved, Some("radar"), Severity::P2, 3, 12), // replayed
        ];
        let out: Vec<_> = inputs
            .iter()
            .flat_map(|f| tracker.observe_finding(f, &cfg))
            .collect();
        assert_eq!(kinds(&out), ["open", "evidence", "resolve"]);
        let id = Finding::derive_id(&["mcpulse/acme/weather/error_rate", "2026-11-21T10:00:00Z"]);
        assert!(out.iter().all(|t| t.incident_id() == id));
        match &out[0] {
            Transition::Open {
                severity,
                opened_at,
                at,
                evidence,
                ..
            } => {
                assert_eq!(*severity, Severity::P2);
                assert_eq!((*opened_at, *at), (t(0), t(5)));
                assert_eq!(evidence["tool"], "forecast");
                assert_eq!(evidence["evidence"]["rule"], "error_rate_elevated-rule");
            }
            other => panic!("{other:?}"),
        }
        match &out[2] {
            Transition::Resolve {
                resolved_at,
                duration,
                evidence,
                ..
            } => {
                assert_eq!(*resolved_at, t(12));
                assert_eq!(*duration, Duration::from_secs(12 * 60));
                assert_eq!(evidence["recovery"]["tool"], "radar");
            }
            other => panic!("{other:?}"),
        }
        // Closed, but its cycle counts towards flapping until it ages out of the window.
        assert!(!tracker.is_idle());
        assert!(tracker.observe_time(t(30), &cfg).is_empty());
        assert!(!tracker.is_idle());
        assert!(tracker.observe_time(t(31), &cfg).is_empty());
        assert!(tracker.is_idle());
        // Findings of another kind are not this tracker's.
        let other = finding(FindingKind::TrafficDrop, Firing, None, Severity::P2, 20, 25);
        assert!(tracker.observe_finding(&other, &cfg).is_empty());
    }

    #[test]
    fn a_worse_finding_escalates() {
        use FindingStatus::Firing;
        let cfg = IncidentConfig::default();
        let k = FindingKind::LatencyDegraded;
        let mut tracker = IncidentTracker::new(key(FailureClass::ToolLatency));
        let mut out =
            tracker.observe_finding(&finding(k, Firing, Some("a"), Severity::P3, 0, 5), &cfg);
        out.extend(
            tracker.observe_finding(&finding(k, Firing, Some("a"), Severity::P2, 0, 6), &cfg),
        );
        out.extend(
            tracker.observe_finding(&finding(k, Firing, Some("b"), Severity::P3, 0, 7), &cfg),
        );
        assert_eq!(kinds(&out), ["open", "escalated", "evidence"]);
        assert_eq!(out[1].severity(), Severity::P2);
        // Never de-escalated.
        assert_eq!(out[2].severity(), Severity::P2);
    }

    #[test]
    fn flapping_conditions_resolve_after_quiet_event_time() {
        use FindingStatus::{Firing, Resolved};
        let cfg = IncidentConfig::default();
        let k = FindingKind::TrafficDrop;
        let mut tracker = IncidentTracker::new(key(FailureClass::TrafficDrop));
        let mut out = Vec::new();
        for c in 0..5 {
            let s = c * 5;
            out.extend(
                tracker.observe_finding(&finding(k, Firing, None, Severity::P2, s, s + 1), &cfg),
            );
            out.extend(
                tracker.observe_finding(&finding(k, Resolved, None, Severity::P2, s, s + 3), &cfg),
            );
        }
        assert_eq!(
            kinds(&out),
            ["open", "resolve", "open", "resolve", "flapping"]
        );
        assert!(tracker.is_flapping());
        // Last condition resolved at t23: quiet until t38.
        assert!(tracker.observe_time(t(37), &cfg).is_empty());
        let out = tracker.observe_time(t(38), &cfg);
        assert_eq!(kinds(&out), ["resolve"]);
        match &out[0] {
            Transition::Resolve {
                opened_at,
                resolved_at,
                at,
                ..
            } => assert_eq!((*opened_at, *resolved_at, *at), (t(10), t(23), t(38))),
            other => panic!("{other:?}"),
        }
        assert!(tracker.is_idle());
    }

    #[test]
    fn a_finding_after_the_quiet_period_resolves_then_opens_anew() {
        use FindingStatus::{Firing, Resolved};
        let cfg = IncidentConfig::default();
        let k = FindingKind::TrafficDrop;
        let mut tracker = IncidentTracker::new(key(FailureClass::TrafficDrop));
        for c in 0..3 {
            let s = c * 5;
            tracker.observe_finding(&finding(k, Firing, None, Severity::P2, s, s + 1), &cfg);
            tracker.observe_finding(&finding(k, Resolved, None, Severity::P2, s, s + 3), &cfg);
        }
        assert!(tracker.is_flapping());
        let out = tracker.observe_finding(&finding(k, Firing, None, Severity::P2, 60, 61), &cfg);
        assert_eq!(kinds(&out), ["resolve", "open"]);
    }

    #[test]
    fn one_shot_drift_opens_and_resolves_in_one_step() {
        let cfg = IncidentConfig::default();
        let mut tracker = IncidentTracker::new(key(FailureClass::SchemaDrift));
        let mut drift = finding(
            FindingKind::SchemaDrift,
            FindingStatus::Firing,
            None,
            Severity::P2,
            7,
            7,
        );
        drift.source = "drift".into();
        let out = tracker.observe_finding(&drift, &cfg);
        assert_eq!(kinds(&out), ["open", "resolve"]);
        assert_eq!(out[0].incident_id(), out[1].incident_id());
        assert_eq!(out[0].severity(), Severity::P2);
        match &out[1] {
            Transition::Resolve {
                opened_at,
                resolved_at,
                duration,
                ..
            } => {
                assert_eq!((*opened_at, *resolved_at), (t(7), t(7)));
                assert_eq!(*duration, Duration::ZERO);
            }
            other => panic!("{other:?}"),
        }
        assert!(tracker.is_idle());
        // A replay of the same finding is ignored; a later drift is a new occurrence.
        assert!(tracker.observe_finding(&drift, &cfg).is_empty());
        let mut later = drift.clone();
        later.time = t(30);
        later.window_start = t(30);
        let again = tracker.observe_finding(&later, &cfg);
        assert_eq!(kinds(&again), ["open", "resolve"]);
        assert_ne!(again[0].incident_id(), out[0].incident_id());
        // Fleet inconsistency is a one-shot too.
        let mut fleet = IncidentTracker::new(key(FailureClass::FleetInconsistent));
        let f = finding(
            FindingKind::FleetInconsistent,
            FindingStatus::Firing,
            None,
            Severity::P3,
            9,
            9,
        );
        assert_eq!(kinds(&fleet.observe_finding(&f, &cfg)), ["open", "resolve"]);
    }

    #[test]
    fn severity_overrides_come_before_the_defaults() {
        let cfg: IncidentConfig = serde_yaml_ng::from_str(
            "severity:\n  - {class: unreachable, scope: regional, severity: P1}\n  \
             - {class: unreachable, severity: P3}\n  - {class: error_rate, severity: P1}\n",
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(
            cfg.severity_of(FailureClass::Unreachable, Scope::Regional),
            Severity::P1
        );
        assert_eq!(
            cfg.severity_of(FailureClass::Unreachable, Scope::Global),
            Severity::P3
        );
        assert_eq!(
            cfg.severity_of(FailureClass::Tls, Scope::Global),
            Severity::P1
        );
        let out = fresh(&pattern(0, "RRR"), &cfg);
        assert_eq!(out[0].severity(), Severity::P1);
        let mut tracker = IncidentTracker::new(key(FailureClass::ErrorRate));
        let f = finding(
            FindingKind::ErrorRateElevated,
            FindingStatus::Firing,
            Some("a"),
            Severity::P2,
            0,
            5,
        );
        assert_eq!(
            tracker.observe_finding(&f, &cfg)[0].severity(),
            Severity::P1
        );
    }

    /// Every split point: checkpoint (JSON), restore, continue — same stream.
    fn assert_restart_invariant(verdicts: &[Verdict], cfg: &IncidentConfig) {
        let expected = fresh(verdicts, cfg);
        for split in 0..=verdicts.len() {
            let mut tracker = IncidentTracker::new(key(FailureClass::Unreachable));
            let mut out = run(&mut tracker, &verdicts[..split], cfg);
            let json = serde_json::to_string(&tracker).unwrap();
            let mut restored: IncidentTracker = serde_json::from_str(&json).unwrap();
            assert_eq!(restored, tracker);
            let rest = &verdicts[split..];
            let a = run(&mut restored, rest, cfg);
            let b = run(&mut tracker, rest, cfg);
            assert_eq!(a, b, "split at {split}");
            out.extend(a);
            assert_eq!(out, expected, "split at {split}");
        }
    }

    #[test]
    fn a_checkpointed_tracker_continues_identically() {
        let cfg = IncidentConfig::default();
        // Mid-pending and mid-open splits are among them.
        assert_restart_invariant(&pattern(0, "HFFHHFFFFRRFFFFHHHFHH"), &cfg);
        assert_restart_invariant(
            &pattern(0, &format!("{}{}", "FFHH".repeat(8), "H".repeat(20))),
            &flapping_cfg(),
        );
        let mut tracker = IncidentTracker::new(key(FailureClass::Unreachable));
        run(&mut tracker, &pattern(0, "F"), &cfg);
        assert!(tracker.is_pending());
        run(&mut tracker, &pattern(1, "FF"), &cfg);
        assert!(tracker.open_incident().is_some());
    }

    #[test]
    fn ids_are_stable_across_replays_and_differ_between_occurrences() {
        let cfg = IncidentConfig::default();
        let verdicts = pattern(0, "FFFFHHHHFFFFHH");
        let a = fresh(&verdicts, &cfg);
        let b = fresh(&verdicts, &cfg);
        assert_eq!(a, b);
        assert_eq!(kinds(&a), ["open", "resolve", "open", "resolve"]);
        assert_eq!(a[0].incident_id(), id_at(t(0)));
        assert_eq!(a[2].incident_id(), id_at(t(8)));
        assert_ne!(a[0].incident_id(), a[2].incident_id());
        let tracker = IncidentTracker::new(key(FailureClass::Unreachable));
        assert_eq!(tracker.incident_id(t(8)), id_at(t(8)));
        assert_eq!(
            tracker.key().dedup_key(),
            "mcpulse/acme/weather/unreachable"
        );
    }

    #[test]
    fn transitions_serialize_with_a_tag() {
        let cfg = IncidentConfig::default();
        let out = fresh(&pattern(0, "FFFHH"), &cfg);
        let json = serde_json::to_value(&out).unwrap();
        assert_eq!(json[0]["transition"], "open");
        assert_eq!(json[0]["severity"], "P1");
        assert_eq!(json[0]["opened_at"], "2026-11-21T10:00:00Z");
        assert_eq!(json[1]["transition"], "resolve");
        assert_eq!(json[1]["duration"], "3m");
        let back: Vec<Transition> = serde_json::from_value(json).unwrap();
        assert_eq!(back, out);
        let update = Transition::Update {
            incident_id: "x".into(),
            severity: Severity::P1,
            previous: Severity::P2,
            reason: UpdateReason::Escalated,
            flapping: false,
            opened_at: t(0),
            at: t(1),
            evidence: json!({}),
        };
        let json = serde_json::to_value(&update).unwrap();
        assert_eq!(json["transition"], "update");
        assert_eq!(json["reason"], "escalated");
    }

    #[test]
    fn config_defaults_parse_and_validation_names_the_field() {
        let cfg = IncidentConfig::default();
        cfg.validate().unwrap();
        assert_eq!(cfg.blip_window, BlipWindows::all(Duration::from_secs(180)));
        assert_eq!(cfg.resolve_after, 2);
        assert_eq!(cfg.flapping.max_cycles, 3);
        assert_eq!(cfg.flapping.window, Duration::from_secs(1800));
        assert_eq!(cfg.flapping.quiet, Duration::from_secs(900));

        let parsed: IncidentConfig = serde_yaml_ng::from_str(
            "blip_window: {p1: 1m, p3: 10m}\nresolve_after: 3\nflapping: {quiet: 5m}\n",
        )
        .unwrap();
        parsed.validate().unwrap();
        assert_eq!(parsed.blip_window.p1, Duration::from_secs(60));
        assert_eq!(parsed.blip_window.p2, Duration::from_secs(180));
        assert_eq!(parsed.blip_window.p3, Duration::from_secs(600));
        assert_eq!(
            parsed.blip_window.of(Severity::P4),
            Duration::from_secs(600)
        );
        assert_eq!(parsed.flapping.quiet, Duration::from_secs(300));
        assert_eq!(parsed.flapping.max_cycles, 3);
        assert!(serde_yaml_ng::from_str::<IncidentConfig>("resolve_afterr: 2").is_err());
        assert!(serde_yaml_ng::from_str::<IncidentConfig>("blip_window: {p4: 1m}").is_err());
        assert!(
            serde_yaml_ng::from_str::<IncidentConfig>(
                "severity: [{class: unreachable, severity: P9}]"
            )
            .is_err()
        );

        let err = |cfg: IncidentConfig| cfg.validate().unwrap_err();
        let base = IncidentConfig::default;
        assert!(
            err(IncidentConfig {
                resolve_after: 0,
                ..base()
            })
            .starts_with("incidents.resolve_after: ")
        );
        assert!(
            err(IncidentConfig {
                flapping: FlappingConfig {
                    max_cycles: 1,
                    ..FlappingConfig::default()
                },
                ..base()
            })
            .starts_with("incidents.flapping.max_cycles: ")
        );
        assert!(
            err(IncidentConfig {
                flapping: FlappingConfig {
                    quiet: Duration::ZERO,
                    ..FlappingConfig::default()
                },
                ..base()
            })
            .starts_with("incidents.flapping.quiet: ")
        );
        assert!(
            err(IncidentConfig {
                blip_window: BlipWindows {
                    p2: Duration::from_secs(8 * 24 * 3600),
                    ..BlipWindows::default()
                },
                ..base()
            })
            .starts_with("incidents.blip_window.p2: ")
        );
        let over = |class, scope| SeverityOverride {
            class,
            scope,
            severity: Severity::P1,
        };
        assert!(
            err(IncidentConfig {
                severity: vec![
                    over(FailureClass::Timeout, Some(Scope::Global)),
                    over(FailureClass::Timeout, Some(Scope::Global)),
                ],
                ..base()
            })
            .starts_with("incidents.severity[1]: ")
        );
        assert!(
            err(IncidentConfig {
                severity: vec![over(FailureClass::ErrorRate, Some(Scope::Global))],
                ..base()
            })
            .starts_with("incidents.severity[0].scope: ")
        );
        assert!(
            err(IncidentConfig {
                severity: vec![over(FailureClass::External, Some(Scope::Global))],
                ..base()
            })
            .contains("class external takes no scope")
        );
        // Without scope it sets the severity of storms of external alerts.
        let config = IncidentConfig {
            severity: vec![over(FailureClass::External, None)],
            ..base()
        };
        config.validate().unwrap();
        assert_eq!(
            config.severity_of(FailureClass::External, Scope::Global),
            Severity::P1
        );
    }
}

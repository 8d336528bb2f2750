//! The alert rules of the golden-signals operator: closed minute rows in, findings out.
//! Pure logic, no I/O; the engine's state is checkpointed with the partition's.
//!
//! ```yaml
//! rules:
//!   - name: tool-error-rate
//!     kind: error_rate        # errors / calls of a tool in a minute
//!     threshold: 0.05         # or "5%"; holds when the rate is above it
//!     min_calls: 10           # fewer calls in a minute: not evaluated
//!     for: 5m
//!   - name: slow-search
//!     kind: latency           # a latency quantile of a tool in a minute
//!     quantile: 0.99
//!     threshold: 2s
//!     for: 3m
//!     servers: [search]
//!     severity: P2
//!   - name: traffic-drop
//!     kind: traffic_drop      # a server with steady traffic gets no calls at all
//!     baseline: 15m
//!     for: 5m
//! ```
//!
//! Without rules configured, the three standard rules of [`RulesConfig::default`] apply
//! (the first and last above, and p95 latency above 10 s for 5 minutes); an explicit
//! empty list (`rules: []`) turns alerting off.
//!
//! # Semantics
//!
//! Only rows of the `spans` source count; `probes` rows and overflow rows (the folded
//! series beyond a tenant's cardinality cap, whose subject is not one tool) are ignored.
//!
//! **error_rate and latency** are evaluated per (tenant, server, tool), every method of
//! the tool summed (calls, errors) and merged (latency histograms) per minute. Calls
//! without a tool (`initialize`, `tools/list`, …) form the series of tool `None` of the
//! server: rules without a `tools` filter (the standard ones included) watch it too, and
//! its findings carry no tool; rules with a `tools` filter never match it.
//!
//! A closed minute *holds* when it has at least `min_calls` calls and its value is above
//! the threshold. The rule fires (one `firing` finding) when the minute that completes
//! `for` consecutive holding minutes closes: with `for: 5m`, at the fifth. It is not
//! emitted again while it keeps holding. A minute that does not hold ends the streak and,
//! if the rule fired, resolves it (one `resolved` finding): a value at or below the
//! threshold, but also a minute with too few calls or none at all. Such a minute is *not
//! evaluated*: it never counts toward `for` and resets the streak (so a tool called every
//! other minute cannot fire), and it resolves because there is no evidence of failure
//! any more.
//!
//! **traffic_drop** is evaluated per (tenant, server), all its calls counted. Traffic is
//! *steady* when each of the `baseline` minutes before the drop had at least
//! `min_calls_per_minute` calls. The rule fires when, after steady traffic, `for`
//! consecutive closed minutes had no call at all. Silent servers produce no rows, so
//! the silence is noticed by [`RuleEngine::advance`] (or by [`RuleEngine::observe`] when
//! calls return after a gap it had not been told about). The first minute with calls
//! resolves it. Per server the engine keeps two counters and the last `baseline` call
//! counts; a server that is not firing is forgotten once it has been silent for `for`
//! minutes (it could not fire again before `baseline` minutes of fresh traffic anyway).
//!
//! **Findings** have ids derived from (rule name, tenant, server, tool or "", status,
//! first minute of the condition), so a replay emits the same ids. `time` is the end of
//! the minute whose evaluation emitted the finding; the window of a `firing` finding is
//! the `for` minutes that held (or were silent); that of a `resolved` finding runs from
//! the first of them to the end of the minute that resolved it. The severity is the
//! rule's, else the kind's: P2 for error rate and traffic drop, P3 for latency.
//!
//! **Input order**: each minute of a series is fed once, in minute order across calls
//! (rows within one call may be in any order). Rows for a minute the engine already
//! evaluated for that series are ignored.
//!
//! **Config changes** across [`RuleEngine::restore`]: state is kept per rule name when the
//! kind is unchanged (a changed threshold applies from the next minute; a shortened
//! `for` fires at the next holding minute if the streak is already long enough). A rule
//! that was removed (or changed kind), and a firing series a changed filter no longer
//! selects, is resolved by the next [`RuleEngine::advance`] so no incident stays open.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use hdrhistogram::Histogram;
use mcpulse_schemas::finding::{Finding, FindingKind, FindingStatus, Severity};
use mcpulse_schemas::latency_hist;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::row::{Minute, SignalRow, SignalSource, minute_start};

/// The `source` of the findings this module emits.
pub const FINDING_SOURCE: &str = "signals";

/// The longest `for` and `baseline` accepted (one day).
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

const MAX_WINDOW_MINUTES: u32 = 24 * 60;

/// Default `for` of every rule: 5 minutes.
pub const DEFAULT_FOR: Duration = Duration::from_secs(300);
/// Default `threshold` of `error_rate` rules: 5%.
pub const DEFAULT_ERROR_RATE_THRESHOLD: f64 = 0.05;
/// Default `min_calls` of `error_rate` rules: 10 per minute.
pub const DEFAULT_ERROR_RATE_MIN_CALLS: u64 = 10;
/// Default `quantile` of `latency` rules: p95.
pub const DEFAULT_LATENCY_QUANTILE: f64 = 0.95;
/// Default `threshold` of `latency` rules: 10 seconds.
pub const DEFAULT_LATENCY_THRESHOLD: Duration = Duration::from_secs(10);
/// Default `min_calls` of `latency` rules: 1 per minute.
pub const DEFAULT_LATENCY_MIN_CALLS: u64 = 1;
/// Default `baseline` of `traffic_drop` rules: 15 minutes.
pub const DEFAULT_BASELINE: Duration = Duration::from_secs(900);
/// Default `min_calls_per_minute` of `traffic_drop` rules: 1.
pub const DEFAULT_MIN_CALLS_PER_MINUTE: u64 = 1;

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// The rules (`signals.rules` in `mcpulse.yaml`, or the `rules:` list of a rules file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// The rules, each evaluated on its own (default: [`RulesConfig::standard`]; an
    /// explicit empty list disables alerting).
    #[serde(default = "RulesConfig::standard")]
    pub rules: Vec<Rule>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            rules: Self::standard(),
        }
    }
}

/// One rule. In YAML its condition's fields sit beside the common ones, selected by
/// `kind` (see [`Condition`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawRule", into = "RawRule")]
pub struct Rule {
    /// Unique name (required); part of the finding ids and of the checkpointed state.
    pub name: String,
    /// What must hold (`kind` and its fields).
    pub condition: Condition,
    /// How long it must hold before the rule fires: whole minutes, 1m to 24h (key `for`,
    /// default 5m).
    pub r#for: Duration,
    /// Severity of the findings (default: P2 for `error_rate` and `traffic_drop`, P3 for
    /// `latency`).
    pub severity: Option<Severity>,
    /// Tenants the rule applies to (default empty: all).
    pub tenants: Vec<String>,
    /// Servers the rule applies to (default empty: all).
    pub servers: Vec<String>,
    /// Tools the rule applies to (default empty: all, and the calls without a tool); not
    /// allowed for `traffic_drop`, which watches whole servers.
    pub tools: Vec<String>,
}

/// The condition of a rule, selected by `kind`.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// `kind: error_rate` — errors / calls of a tool in a minute above `threshold`.
    ErrorRate {
        /// In `0 ≤ threshold < 1`; `0.05` or `"5%"` in YAML (default 0.05).
        threshold: f64,
        /// Calls a minute needs to be evaluated (default 10).
        min_calls: u64,
    },
    /// `kind: latency` — a latency quantile of a tool in a minute above `threshold`.
    Latency {
        /// In `0 < quantile ≤ 1` (default 0.95).
        quantile: f64,
        /// A duration like `10s` or `750ms` (default 10s).
        threshold: Duration,
        /// Calls a minute needs to be evaluated (default 1).
        min_calls: u64,
    },
    /// `kind: traffic_drop` — no calls at all to a server that had steady traffic.
    TrafficDrop {
        /// The minutes before the drop that must each have had `min_calls_per_minute`
        /// calls: whole minutes, 2m to 24h (default 15m).
        baseline: Duration,
        /// Calls per minute that count as steady (default 1).
        min_calls_per_minute: u64,
    },
}

/// The `kind` of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    ErrorRate,
    Latency,
    TrafficDrop,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::ErrorRate => "error_rate",
            RuleKind::Latency => "latency",
            RuleKind::TrafficDrop => "traffic_drop",
        }
    }

    /// The kind of the findings the rule emits.
    pub fn finding_kind(self) -> FindingKind {
        match self {
            RuleKind::ErrorRate => FindingKind::ErrorRateElevated,
            RuleKind::Latency => FindingKind::LatencyDegraded,
            RuleKind::TrafficDrop => FindingKind::TrafficDrop,
        }
    }

    /// The severity when the rule names none (DESIGN.md: elevated error rate P2, latency
    /// degradation P3; a server losing all its traffic is treated like an outage, P2).
    pub fn default_severity(self) -> Severity {
        match self {
            RuleKind::ErrorRate | RuleKind::TrafficDrop => Severity::P2,
            RuleKind::Latency => Severity::P3,
        }
    }
}

impl Condition {
    pub fn kind(&self) -> RuleKind {
        match self {
            Condition::ErrorRate { .. } => RuleKind::ErrorRate,
            Condition::Latency { .. } => RuleKind::Latency,
            Condition::TrafficDrop { .. } => RuleKind::TrafficDrop,
        }
    }
}

impl Rule {
    /// The rule's severity, or its kind's default.
    pub fn severity(&self) -> Severity {
        self.severity
            .unwrap_or_else(|| self.condition.kind().default_severity())
    }

    fn new(name: &str, condition: Condition, severity: Severity) -> Self {
        Self {
            name: name.into(),
            condition,
            r#for: DEFAULT_FOR,
            severity: Some(severity),
            tenants: Vec::new(),
            servers: Vec::new(),
            tools: Vec::new(),
        }
    }

    fn applies_to(&self, tenant: &str, server: &str, tool: Option<&str>) -> bool {
        let listed =
            |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
        listed(&self.tenants, tenant)
            && listed(&self.servers, server)
            && (self.tools.is_empty() || tool.is_some_and(|t| self.tools.iter().any(|v| v == t)))
    }
}

impl RulesConfig {
    /// The field's standard alerts: `tool-error-rate` (error rate above 5% for 5m, at
    /// least 10 calls a minute, P2), `tool-latency-p95` (p95 above 10 s for 5m, P3) and
    /// `traffic-drop` (no calls for 5m after 15m of at least one call a minute, P2).
    pub fn standard() -> Vec<Rule> {
        vec![
            Rule::new(
                "tool-error-rate",
                Condition::ErrorRate {
                    threshold: DEFAULT_ERROR_RATE_THRESHOLD,
                    min_calls: DEFAULT_ERROR_RATE_MIN_CALLS,
                },
                Severity::P2,
            ),
            Rule::new(
                "tool-latency-p95",
                Condition::Latency {
                    quantile: DEFAULT_LATENCY_QUANTILE,
                    threshold: DEFAULT_LATENCY_THRESHOLD,
                    min_calls: DEFAULT_LATENCY_MIN_CALLS,
                },
                Severity::P3,
            ),
            Rule::new(
                "traffic-drop",
                Condition::TrafficDrop {
                    baseline: DEFAULT_BASELINE,
                    min_calls_per_minute: DEFAULT_MIN_CALLS_PER_MINUTE,
                },
                Severity::P2,
            ),
        ]
    }

    /// Checks what serde cannot; errors name the field, like
    /// `rules[1].threshold: must be at least 0 and below 1`.
    pub fn validate(&self) -> Result<(), String> {
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let err = |field: &str, msg: &str| Err(format!("rules[{i}].{field}: {msg}"));
            if rule.name.trim().is_empty() {
                return err("name", "must not be empty");
            }
            if let Some(j) = names.insert(&rule.name, i) {
                return err(
                    "name",
                    &format!("`{}` is already the name of rules[{j}]", rule.name),
                );
            }
            check_minutes(rule.r#for, 1).or_else(|m| err("for", &m))?;
            for (field, list) in [
                ("tenants", &rule.tenants),
                ("servers", &rule.servers),
                ("tools", &rule.tools),
            ] {
                if list.iter().any(|v| v.is_empty()) {
                    return err(field, "entries must not be empty");
                }
            }
            match &rule.condition {
                Condition::ErrorRate {
                    threshold,
                    min_calls,
                } => {
                    if !(0.0..1.0).contains(threshold) {
                        return err("threshold", "must be at least 0 and below 1 (0.05 is 5%)");
                    }
                    if *min_calls == 0 {
                        return err("min_calls", "must be at least 1");
                    }
                }
                Condition::Latency {
                    quantile,
                    threshold,
                    min_calls,
                } => {
                    if !(*quantile > 0.0 && *quantile <= 1.0) {
                        return err("quantile", "must be above 0 and at most 1 (0.95 is p95)");
                    }
                    if threshold.is_zero() {
                        return err("threshold", "must be positive");
                    }
                    if *min_calls == 0 {
                        return err("min_calls", "must be at least 1");
                    }
                }
                Condition::TrafficDrop {
                    baseline,
                    min_calls_per_minute,
                } => {
                    check_minutes(*baseline, 2).or_else(|m| err("baseline", &m))?;
                    if *min_calls_per_minute == 0 {
                        return err("min_calls_per_minute", "must be at least 1");
                    }
                    if !rule.tools.is_empty() {
                        return err(
                            "tools",
                            "not allowed for traffic_drop rules (they watch whole servers)",
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_minutes(d: Duration, min_minutes: u64) -> Result<(), String> {
    if d.subsec_nanos() != 0 || !d.as_secs().is_multiple_of(60) {
        return Err("must be whole minutes (rules are evaluated per minute)".into());
    }
    if d.as_secs() < min_minutes * 60 {
        return Err(format!("must be at least {min_minutes}m"));
    }
    if d > MAX_WINDOW {
        return Err("must be at most 24h".into());
    }
    Ok(())
}

/// Whole minutes of `d`, clamped to what the engine supports (for unvalidated configs).
fn minutes_of(d: Duration, min: u32) -> u32 {
    (d.as_secs() / 60).clamp(u64::from(min), u64::from(MAX_WINDOW_MINUTES)) as u32
}

/// The YAML shape of a rule: common fields and every condition's, checked against `kind`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    kind: RuleKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    threshold: Option<RawThreshold>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quantile: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_calls: Option<u64>,
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    baseline: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_calls_per_minute: Option<u64>,
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    r#for: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tenants: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tools: Vec<String>,
}

/// A threshold: a number or `"5%"` (error rate), a duration string (latency).
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawThreshold {
    Number(f64),
    Text(String),
}

impl TryFrom<RawRule> for Rule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Self, String> {
        let name = raw.name;
        let kind = raw.kind.as_str();
        let not_a_field = |field: &str| {
            Err(format!(
                "rule `{name}`: `{field}` is not a field of {kind} rules"
            ))
        };
        let condition = match raw.kind {
            RuleKind::ErrorRate => {
                if raw.quantile.is_some() {
                    return not_a_field("quantile");
                }
                if raw.baseline.is_some() {
                    return not_a_field("baseline");
                }
                if raw.min_calls_per_minute.is_some() {
                    return not_a_field("min_calls_per_minute");
                }
                let threshold = match raw.threshold {
                    None => DEFAULT_ERROR_RATE_THRESHOLD,
                    Some(RawThreshold::Number(x)) => x,
                    Some(RawThreshold::Text(text)) => parse_percent(&text).ok_or_else(|| {
                        format!(
                            "rule `{name}`: threshold `{text}` is not an error rate like 0.05 or 5%"
                        )
                    })?,
                };
                Condition::ErrorRate {
                    threshold,
                    min_calls: raw.min_calls.unwrap_or(DEFAULT_ERROR_RATE_MIN_CALLS),
                }
            }
            RuleKind::Latency => {
                if raw.baseline.is_some() {
                    return not_a_field("baseline");
                }
                if raw.min_calls_per_minute.is_some() {
                    return not_a_field("min_calls_per_minute");
                }
                let threshold = match raw.threshold {
                    None => DEFAULT_LATENCY_THRESHOLD,
                    Some(RawThreshold::Text(text)) => {
                        humantime_serde::re::humantime::parse_duration(&text).map_err(|e| {
                            format!("rule `{name}`: threshold `{text}`: {e} (a duration like 10s or 750ms)")
                        })?
                    }
                    Some(RawThreshold::Number(x)) => {
                        return Err(format!(
                            "rule `{name}`: threshold {x} needs a unit (a duration like 10s or 750ms)"
                        ));
                    }
                };
                Condition::Latency {
                    quantile: raw.quantile.unwrap_or(DEFAULT_LATENCY_QUANTILE),
                    threshold,
                    min_calls: raw.min_calls.unwrap_or(DEFAULT_LATENCY_MIN_CALLS),
                }
            }
            RuleKind::TrafficDrop => {
                if raw.threshold.is_some() {
                    return not_a_field("threshold");
                }
                if raw.quantile.is_some() {
                    return not_a_field("quantile");
                }
                if raw.min_calls.is_some() {
                    return not_a_field("min_calls");
                }
                Condition::TrafficDrop {
                    baseline: raw.baseline.unwrap_or(DEFAULT_BASELINE),
                    min_calls_per_minute: raw
                        .min_calls_per_minute
                        .unwrap_or(DEFAULT_MIN_CALLS_PER_MINUTE),
                }
            }
        };
        Ok(Rule {
            name,
            condition,
            r#for: raw.r#for.unwrap_or(DEFAULT_FOR),
            severity: raw.severity,
            tenants: raw.tenants,
            servers: raw.servers,
            tools: raw.tools,
        })
    }
}

impl From<Rule> for RawRule {
    fn from(rule: Rule) -> Self {
        let mut raw = RawRule {
            name: rule.name,
            kind: rule.condition.kind(),
            threshold: None,
            quantile: None,
            min_calls: None,
            baseline: None,
            min_calls_per_minute: None,
            r#for: Some(rule.r#for),
            severity: rule.severity,
            tenants: rule.tenants,
            servers: rule.servers,
            tools: rule.tools,
        };
        match rule.condition {
            Condition::ErrorRate {
                threshold,
                min_calls,
            } => {
                raw.threshold = Some(RawThreshold::Number(threshold));
                raw.min_calls = Some(min_calls);
            }
            Condition::Latency {
                quantile,
                threshold,
                min_calls,
            } => {
                raw.quantile = Some(quantile);
                raw.threshold = Some(RawThreshold::Text(
                    humantime_serde::re::humantime::format_duration(threshold).to_string(),
                ));
                raw.min_calls = Some(min_calls);
            }
            Condition::TrafficDrop {
                baseline,
                min_calls_per_minute,
            } => {
                raw.baseline = Some(baseline);
                raw.min_calls_per_minute = Some(min_calls_per_minute);
            }
        }
        raw
    }
}

/// `"5%"` → 0.05, `"0.05"` → 0.05.
fn parse_percent(text: &str) -> Option<f64> {
    let text = text.trim();
    match text.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().ok().map(|p| p / 100.0),
        None => text.parse().ok(),
    }
}

// ---------------------------------------------------------------------------------------
// Engine
// ---------------------------------------------------------------------------------------

/// Evaluates the rules over closed minutes; see the module documentation.
#[derive(Debug)]
pub struct RuleEngine {
    rules: Vec<ActiveRule>,
    /// Firing series of rules that were removed or no longer select them, resolved by the
    /// next [`RuleEngine::advance`].
    retired: Vec<Retired>,
}

/// One rule with its evaluation state.
#[derive(Debug)]
struct ActiveRule {
    params: Params,
    /// error_rate and latency: (tenant, server, tool) series that hold or fire.
    tools: BTreeMap<ToolKey, ToolSeries>,
    /// traffic_drop: (tenant, server) series that may fire or fire.
    servers: BTreeMap<ServerKey, ServerSeries>,
}

type ToolKey = (String, String, Option<String>);
type ServerKey = (String, String);

/// A rule with its derived numbers.
#[derive(Debug)]
struct Params {
    rule: Rule,
    kind: RuleKind,
    for_minutes: u32,
    severity: Severity,
}

/// The checkpointable state of a [`RuleEngine`] (JSON-friendly; opaque).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    #[serde(default)]
    rules: Vec<RuleStateEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    retired: Vec<Retired>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct RuleStateEntry {
    name: String,
    kind: RuleKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolSeries>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    servers: Vec<ServerSeries>,
}

/// error_rate / latency state of one (tenant, server, tool): kept only while it holds
/// or fires.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ToolSeries {
    tenant: String,
    server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool: Option<String>,
    /// The last minute evaluated.
    last: Minute,
    /// Consecutive holding minutes ending at `last`.
    streak: u32,
    /// The first minute of the streak.
    streak_start: Minute,
    /// The last (at most `for`) holding minutes.
    samples: VecDeque<Sample>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    firing: Option<Fired>,
}

/// One evaluated minute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Sample {
    minute: Minute,
    calls: u64,
    #[serde(default)]
    errors: u64,
    /// Error rate, or latency in milliseconds.
    value: f64,
}

/// The rule fired for a series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Fired {
    /// The first minute of the condition (part of the ids).
    first: Minute,
    /// The minute whose close fired it.
    at: Minute,
    severity: Severity,
    /// traffic_drop: the steady traffic before the drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    baseline: Option<BaselineSummary>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct BaselineSummary {
    start: Minute,
    minutes: u32,
    min_calls: u64,
    max_calls: u64,
    total_calls: u64,
}

/// traffic_drop state of one (tenant, server).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ServerSeries {
    tenant: String,
    server: String,
    /// The last minute evaluated.
    last: Minute,
    /// Consecutive minutes with at least `min_calls_per_minute` calls before the current
    /// silence (capped at `baseline`).
    steady: u32,
    /// Consecutive minutes without calls ending at `last`.
    silent: u64,
    /// Calls of the last (at most `baseline`) minutes with calls, for the evidence.
    recent: VecDeque<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    firing: Option<Fired>,
}

/// A firing series whose rule is gone (or no longer selects it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Retired {
    rule: String,
    kind: RuleKind,
    tenant: String,
    server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool: Option<String>,
    fired: Fired,
    last: Minute,
    /// `rule_removed` or `rule_changed`.
    reason: String,
}

/// A tool's minute as a rule sees it.
#[derive(Clone, Copy, Debug)]
enum Eval {
    /// Fewer calls than `min_calls` (0: no rows at all).
    NotEvaluated {
        calls: u64,
    },
    Value {
        calls: u64,
        errors: u64,
        value: f64,
    },
}

/// A tool's minute: all its methods summed and merged.
struct ToolMinute<'a> {
    calls: u64,
    errors: u64,
    latency: Latency<'a>,
}

/// The latency histogram of a tool's minute, merged only when it has several rows.
enum Latency<'a> {
    Empty,
    One(&'a Histogram<u64>),
    Merged(Histogram<u64>),
}

impl<'a> ToolMinute<'a> {
    fn of(rows: &[&'a SignalRow], with_latency: bool) -> Self {
        let mut minute = ToolMinute {
            calls: 0,
            errors: 0,
            latency: Latency::Empty,
        };
        for row in rows {
            minute.calls = minute.calls.saturating_add(row.calls);
            minute.errors = minute.errors.saturating_add(row.errors);
            if !with_latency || row.latency.is_empty() {
                continue;
            }
            minute.latency = match std::mem::replace(&mut minute.latency, Latency::Empty) {
                Latency::Empty => Latency::One(&row.latency),
                Latency::One(h) => {
                    let mut merged = h.clone();
                    match latency_hist::merge_into(&mut merged, &row.latency) {
                        Ok(()) => Latency::Merged(merged),
                        // Beyond 2^63 values: impossible with real rows.
                        Err(_) => Latency::Empty,
                    }
                }
                Latency::Merged(mut merged) => {
                    match latency_hist::merge_into(&mut merged, &row.latency) {
                        Ok(()) => Latency::Merged(merged),
                        Err(_) => Latency::Empty,
                    }
                }
            };
        }
        minute
    }

    fn latency(&self) -> Option<&Histogram<u64>> {
        match &self.latency {
            Latency::Empty => None,
            Latency::One(h) => Some(h),
            Latency::Merged(h) => Some(h),
        }
    }
}

impl RuleEngine {
    /// An engine without state. The config should be validated; an unvalidated one is
    /// clamped (`for` and `baseline` to 1m..24h) rather than refused.
    pub fn new(config: RulesConfig) -> Self {
        Self {
            rules: config
                .rules
                .into_iter()
                .map(|rule| ActiveRule {
                    params: Params::new(rule),
                    tools: BTreeMap::new(),
                    servers: BTreeMap::new(),
                })
                .collect(),
            retired: Vec::new(),
        }
    }

    /// Feeds rows of closed minutes (see the module documentation for the order they
    /// must come in); returns the findings they complete, ordered by time.
    pub fn observe(&mut self, rows: &[SignalRow]) -> Vec<Finding> {
        let mut out = Vec::new();
        if self.rules.is_empty() {
            return out;
        }
        let want_tools = self
            .rules
            .iter()
            .any(|r| r.params.kind != RuleKind::TrafficDrop);
        let want_latency = self
            .rules
            .iter()
            .any(|r| r.params.kind == RuleKind::Latency);
        let want_servers = self
            .rules
            .iter()
            .any(|r| r.params.kind == RuleKind::TrafficDrop);

        let spans: Vec<&SignalRow> = rows
            .iter()
            .filter(|row| row.key.source == SignalSource::Spans && !row.overflow)
            .collect();

        if want_servers {
            let mut servers: BTreeMap<(&str, &str), BTreeMap<Minute, u64>> = BTreeMap::new();
            for row in &spans {
                let calls = servers
                    .entry((&row.key.tenant, &row.key.server))
                    .or_default()
                    .entry(row.minute)
                    .or_default();
                *calls = calls.saturating_add(row.calls);
            }
            for active in &mut self.rules {
                if active.params.kind != RuleKind::TrafficDrop {
                    continue;
                }
                for (&(tenant, server), minutes) in &servers {
                    if !active.params.rule.applies_to(tenant, server, None) {
                        continue;
                    }
                    let key = (tenant.to_string(), server.to_string());
                    for (&minute, &calls) in minutes {
                        active.traffic_minute(&key, minute, calls, &mut out);
                    }
                }
            }
        }

        if want_tools {
            // One (tool, minute) at a time, in minute order per tool, so at most one
            // merged histogram exists at once (each is ~190 KB at this precision).
            let mut spans = spans;
            spans.sort_by(|a, b| {
                (&a.key.tenant, &a.key.server, &a.key.tool, a.minute).cmp(&(
                    &b.key.tenant,
                    &b.key.server,
                    &b.key.tool,
                    b.minute,
                ))
            });
            let same = |a: &&SignalRow, b: &&SignalRow| {
                a.minute == b.minute
                    && a.key.tool == b.key.tool
                    && a.key.server == b.key.server
                    && a.key.tenant == b.key.tenant
            };
            for group in spans.chunk_by(same) {
                let first = &group[0].key;
                let (tenant, server, tool) = (&first.tenant, &first.server, first.tool.as_deref());
                let applies = |a: &ActiveRule| {
                    a.params.kind != RuleKind::TrafficDrop
                        && a.params.rule.applies_to(tenant, server, tool)
                };
                if !self.rules.iter().any(applies) {
                    continue;
                }
                let minute = ToolMinute::of(group, want_latency);
                let key = (tenant.clone(), server.clone(), first.tool.clone());
                for active in &mut self.rules {
                    if applies(active) {
                        let eval = active.params.measure(&minute);
                        active.tool_minute(&key, group[0].minute, eval, &mut out);
                    }
                }
            }
        }
        out.sort_by_key(|f| f.time);
        out
    }

    /// Declares every minute before `closed_before` closed: series without rows in
    /// them are evaluated as having had no calls (resetting error-rate and latency
    /// streaks, resolving what fired, counting toward a traffic drop). Returns the
    /// findings that completes, ordered by time.
    pub fn advance(&mut self, closed_before: Minute) -> Vec<Finding> {
        let mut out = Vec::new();
        let through = closed_before.saturating_sub(1);
        for active in &mut self.rules {
            let params = &active.params;
            active.tools.retain(|_, series| {
                if series.last >= through {
                    return true;
                }
                let minute = series.last + 1;
                params.eval_tool(series, minute, Eval::NotEvaluated { calls: 0 }, &mut out);
                series.keep()
            });
            active.servers.retain(|_, series| {
                if series.last < through {
                    params.traffic_silence(series, through, &mut out);
                }
                series.keep(params.for_minutes)
            });
        }
        for retired in self.retired.drain(..) {
            out.push(retired.resolve(closed_before.max(retired.last.saturating_add(1))));
        }
        out.sort_by_key(|f| f.time);
        out
    }

    /// The state to checkpoint.
    pub fn state(&self) -> RuleState {
        RuleState {
            rules: self
                .rules
                .iter()
                .filter(|a| !a.tools.is_empty() || !a.servers.is_empty())
                .map(|a| RuleStateEntry {
                    name: a.params.rule.name.clone(),
                    kind: a.params.kind,
                    tools: a.tools.values().cloned().collect(),
                    servers: a.servers.values().cloned().collect(),
                })
                .collect(),
            retired: self.retired.clone(),
        }
    }

    /// An engine for `config` continuing from `state` (see the module documentation for
    /// what happens to rules that changed).
    pub fn restore(config: RulesConfig, state: RuleState) -> Self {
        let mut engine = Self::new(config);
        engine.retired = state.retired;
        for entry in state.rules {
            let active = engine
                .rules
                .iter_mut()
                .find(|a| a.params.rule.name == entry.name && a.params.kind == entry.kind);
            let Some(active) = active else {
                engine.retired.extend(retire(&entry, "rule_removed"));
                continue;
            };
            let params = &active.params;
            for mut series in entry.tools {
                let tool = series.tool.as_deref();
                if !params.rule.applies_to(&series.tenant, &series.server, tool) {
                    if let Some(fired) = series.firing.take() {
                        engine.retired.push(Retired {
                            rule: entry.name.clone(),
                            kind: entry.kind,
                            tenant: series.tenant,
                            server: series.server,
                            tool: series.tool,
                            fired,
                            last: series.last,
                            reason: "rule_changed".into(),
                        });
                    }
                    continue;
                }
                while series.samples.len() > params.for_minutes as usize {
                    series.samples.pop_front();
                }
                if series.keep() {
                    let key = (
                        series.tenant.clone(),
                        series.server.clone(),
                        series.tool.clone(),
                    );
                    active.tools.insert(key, series);
                }
            }
            let baseline = params.baseline_minutes();
            for mut series in entry.servers {
                if !params.rule.applies_to(&series.tenant, &series.server, None) {
                    if let Some(fired) = series.firing.take() {
                        engine.retired.push(Retired {
                            rule: entry.name.clone(),
                            kind: entry.kind,
                            tenant: series.tenant,
                            server: series.server,
                            tool: None,
                            fired,
                            last: series.last,
                            reason: "rule_changed".into(),
                        });
                    }
                    continue;
                }
                series.steady = series.steady.min(baseline);
                while series.recent.len() > baseline as usize {
                    series.recent.pop_front();
                }
                if series.keep(params.for_minutes) {
                    let key = (series.tenant.clone(), series.server.clone());
                    active.servers.insert(key, series);
                }
            }
        }
        engine
    }

    /// Series currently firing (removed rules' included until they are resolved).
    pub fn firing(&self) -> usize {
        self.rules
            .iter()
            .map(|a| {
                a.tools.values().filter(|s| s.firing.is_some()).count()
                    + a.servers.values().filter(|s| s.firing.is_some()).count()
            })
            .sum::<usize>()
            + self.retired.len()
    }

    /// Series the engine keeps state for (for metrics).
    pub fn tracked(&self) -> usize {
        self.rules
            .iter()
            .map(|a| a.tools.len() + a.servers.len())
            .sum::<usize>()
            + self.retired.len()
    }
}

/// The firing series of a checkpointed rule that no longer exists.
fn retire(entry: &RuleStateEntry, reason: &str) -> Vec<Retired> {
    let tools = entry.tools.iter().filter_map(|s| {
        s.firing.clone().map(|fired| Retired {
            rule: entry.name.clone(),
            kind: entry.kind,
            tenant: s.tenant.clone(),
            server: s.server.clone(),
            tool: s.tool.clone(),
            fired,
            last: s.last,
            reason: reason.into(),
        })
    });
    let servers = entry.servers.iter().filter_map(|s| {
        s.firing.clone().map(|fired| Retired {
            rule: entry.name.clone(),
            kind: entry.kind,
            tenant: s.tenant.clone(),
            server: s.server.clone(),
            tool: None,
            fired,
            last: s.last,
            reason: reason.into(),
        })
    });
    tools.chain(servers).collect()
}

impl ToolSeries {
    fn keep(&self) -> bool {
        self.streak > 0 || self.firing.is_some()
    }
}

impl ServerSeries {
    /// Whether the series can still fire or is firing: a server silent for `for`
    /// minutes without firing cannot fire before it has had `baseline` minutes of
    /// traffic again, exactly like a server never seen, so it is forgotten.
    fn keep(&self, for_minutes: u32) -> bool {
        self.firing.is_some() || self.silent < u64::from(for_minutes)
    }
}

impl ActiveRule {
    /// Evaluates one minute of one tool series (rows fed by `observe`).
    fn tool_minute(&mut self, key: &ToolKey, minute: Minute, eval: Eval, out: &mut Vec<Finding>) {
        let holds = self.params.holds(&eval);
        let mut series = match self.tools.remove(key) {
            Some(series) => series,
            // Nothing to remember about a series that does not hold.
            None if !holds => return,
            None => ToolSeries {
                tenant: key.0.clone(),
                server: key.1.clone(),
                tool: key.2.clone(),
                last: minute.saturating_sub(1),
                streak: 0,
                streak_start: minute,
                samples: VecDeque::new(),
                firing: None,
            },
        };
        if minute > series.last {
            if minute > series.last.saturating_add(1) {
                // The minute after `last` closed without rows for this tool.
                let gap = series.last + 1;
                self.params
                    .eval_tool(&mut series, gap, Eval::NotEvaluated { calls: 0 }, out);
            }
            self.params.eval_tool(&mut series, minute, eval, out);
        }
        if series.keep() {
            self.tools.insert(key.clone(), series);
        }
    }

    /// Evaluates one minute of one server (rows fed by `observe`).
    fn traffic_minute(
        &mut self,
        key: &ServerKey,
        minute: Minute,
        calls: u64,
        out: &mut Vec<Finding>,
    ) {
        let mut series = match self.servers.remove(key) {
            Some(series) => series,
            None if calls == 0 => return,
            None => ServerSeries {
                tenant: key.0.clone(),
                server: key.1.clone(),
                last: minute.saturating_sub(1),
                steady: 0,
                silent: 0,
                recent: VecDeque::new(),
                firing: None,
            },
        };
        if minute > series.last {
            if minute > series.last.saturating_add(1) {
                // Closed minutes without rows: silent.
                self.params.traffic_silence(&mut series, minute - 1, out);
            }
            self.params.traffic_eval(&mut series, minute, calls, out);
        }
        if series.keep(self.params.for_minutes) {
            self.servers.insert(key.clone(), series);
        }
    }
}

impl Params {
    fn new(rule: Rule) -> Self {
        Self {
            kind: rule.condition.kind(),
            for_minutes: minutes_of(rule.r#for, 1),
            severity: rule.severity(),
            rule,
        }
    }

    fn baseline_minutes(&self) -> u32 {
        match &self.rule.condition {
            Condition::TrafficDrop { baseline, .. } => minutes_of(*baseline, 1),
            _ => 0,
        }
    }

    fn min_calls_per_minute(&self) -> u64 {
        match &self.rule.condition {
            Condition::TrafficDrop {
                min_calls_per_minute,
                ..
            } => (*min_calls_per_minute).max(1),
            _ => 1,
        }
    }

    /// The rule's value of a tool's minute.
    fn measure(&self, minute: &ToolMinute) -> Eval {
        let not_evaluated = Eval::NotEvaluated {
            calls: minute.calls,
        };
        match &self.rule.condition {
            Condition::ErrorRate { min_calls, .. } => {
                if minute.calls == 0 || minute.calls < *min_calls {
                    return not_evaluated;
                }
                let errors = minute.errors.min(minute.calls);
                Eval::Value {
                    calls: minute.calls,
                    errors,
                    value: errors as f64 / minute.calls as f64,
                }
            }
            Condition::Latency {
                quantile,
                min_calls,
                ..
            } => {
                if minute.calls == 0 || minute.calls < *min_calls {
                    return not_evaluated;
                }
                match minute
                    .latency()
                    .and_then(|h| latency_hist::quantile_ms(h, *quantile))
                {
                    Some(ms) => Eval::Value {
                        calls: minute.calls,
                        errors: minute.errors,
                        value: ms,
                    },
                    None => not_evaluated,
                }
            }
            Condition::TrafficDrop { .. } => not_evaluated,
        }
    }

    fn threshold(&self) -> f64 {
        match &self.rule.condition {
            Condition::ErrorRate { threshold, .. } => *threshold,
            Condition::Latency { threshold, .. } => threshold.as_secs_f64() * 1000.0,
            Condition::TrafficDrop { .. } => f64::INFINITY,
        }
    }

    fn holds(&self, eval: &Eval) -> bool {
        matches!(eval, Eval::Value { value, .. } if *value > self.threshold())
    }

    /// Evaluates `minute` (the one after `series.last`) of a tool series.
    fn eval_tool(
        &self,
        series: &mut ToolSeries,
        minute: Minute,
        eval: Eval,
        out: &mut Vec<Finding>,
    ) {
        series.last = minute;
        if let Eval::Value {
            calls,
            errors,
            value,
        } = eval
            && value > self.threshold()
        {
            if series.streak == 0 {
                series.streak_start = minute;
            }
            series.streak = series.streak.saturating_add(1);
            series.samples.push_back(Sample {
                minute,
                calls,
                errors,
                value,
            });
            while series.samples.len() > self.for_minutes as usize {
                series.samples.pop_front();
            }
            if series.firing.is_none() && series.streak >= self.for_minutes {
                let fired = Fired {
                    first: series.streak_start,
                    at: minute,
                    severity: self.severity,
                    baseline: None,
                };
                out.push(self.tool_firing(series, &fired));
                series.firing = Some(fired);
            }
        } else {
            if let Some(fired) = series.firing.take() {
                out.push(self.tool_resolved(series, &fired, minute, eval));
            }
            series.streak = 0;
            series.samples.clear();
        }
    }

    /// Evaluates the minutes after `series.last` through `through` as silent.
    fn traffic_silence(&self, series: &mut ServerSeries, through: Minute, out: &mut Vec<Finding>) {
        while series.last < through {
            let minute = series.last + 1;
            self.traffic_eval(series, minute, 0, out);
            if series.firing.is_some() || series.silent >= u64::from(self.for_minutes) {
                // Nothing changes any more until calls return.
                let rest = through - series.last;
                series.silent = series.silent.saturating_add(rest as u64);
                series.last = through;
            }
        }
    }

    /// Evaluates `minute` (the one after `series.last`) of a server series.
    fn traffic_eval(
        &self,
        series: &mut ServerSeries,
        minute: Minute,
        calls: u64,
        out: &mut Vec<Finding>,
    ) {
        series.last = minute;
        let baseline = self.baseline_minutes();
        if calls == 0 {
            series.silent = series.silent.saturating_add(1);
            if series.firing.is_none()
                && series.silent == u64::from(self.for_minutes)
                && series.steady >= baseline
            {
                let first = minute - Minute::from(self.for_minutes) + 1;
                let recent = series.recent.iter().copied();
                let fired = Fired {
                    first,
                    at: minute,
                    severity: self.severity,
                    baseline: Some(BaselineSummary {
                        start: first - Minute::from(baseline),
                        minutes: baseline,
                        min_calls: recent.clone().min().unwrap_or(0),
                        max_calls: recent.clone().max().unwrap_or(0),
                        total_calls: recent.fold(0u64, u64::saturating_add),
                    }),
                };
                out.push(self.traffic_firing(series, &fired));
                series.firing = Some(fired);
                series.recent.clear();
            }
            return;
        }
        if let Some(fired) = series.firing.take() {
            out.push(self.traffic_resolved(series, &fired, minute, calls));
        }
        if series.silent > 0 {
            series.silent = 0;
            series.steady = 0;
            series.recent.clear();
        }
        series.steady = if calls >= self.min_calls_per_minute() {
            series.steady.saturating_add(1).min(baseline)
        } else {
            0
        };
        series.recent.push_back(calls);
        while series.recent.len() > baseline as usize {
            series.recent.pop_front();
        }
    }

    // ---- findings ----

    fn finding(
        &self,
        status: FindingStatus,
        subject: (&str, &str, Option<&str>),
        fired: &Fired,
        window: (Minute, Minute),
        summary: String,
        evidence: Value,
    ) -> Finding {
        let (tenant, server, tool) = subject;
        let first = fired.first.to_string();
        let severity = fired.severity;
        Finding {
            id: Finding::derive_id(&[
                &self.rule.name,
                tenant,
                server,
                tool.unwrap_or(""),
                status.as_str(),
                &first,
            ]),
            kind: self.kind.finding_kind(),
            status,
            tenant: tenant.into(),
            server: server.into(),
            tool: tool.map(Into::into),
            method: None,
            region: None,
            severity,
            time: minute_start(window.1),
            window_start: minute_start(window.0),
            window_end: minute_start(window.1),
            summary,
            evidence,
            source: FINDING_SOURCE.into(),
        }
    }

    /// `rule`, `kind`, the thresholds and `for_minutes`.
    fn evidence_base(&self) -> serde_json::Map<String, Value> {
        let mut e = serde_json::Map::new();
        e.insert("rule".into(), json!(self.rule.name));
        e.insert("kind".into(), json!(self.kind.as_str()));
        match &self.rule.condition {
            Condition::ErrorRate {
                threshold,
                min_calls,
            } => {
                e.insert("threshold".into(), json!(threshold));
                e.insert("min_calls".into(), json!(min_calls));
            }
            Condition::Latency {
                quantile,
                threshold,
                min_calls,
            } => {
                e.insert("quantile".into(), json!(quantile));
                e.insert(
                    "threshold_ms".into(),
                    json!(threshold.as_secs_f64() * 1000.0),
                );
                e.insert("min_calls".into(), json!(min_calls));
            }
            Condition::TrafficDrop {
                min_calls_per_minute,
                ..
            } => {
                e.insert("baseline_minutes".into(), json!(self.baseline_minutes()));
                e.insert("min_calls_per_minute".into(), json!(min_calls_per_minute));
            }
        }
        e.insert("for_minutes".into(), json!(self.for_minutes));
        e
    }

    fn sample_json(&self, minute: Minute, calls: u64, errors: u64, value: Option<f64>) -> Value {
        let mut v = json!({"minute": rfc3339(minute_start(minute)), "calls": calls});
        match self.kind {
            RuleKind::ErrorRate => {
                v["errors"] = json!(errors);
                v["error_rate"] = json!(value);
            }
            RuleKind::Latency => v["latency_ms"] = json!(value),
            RuleKind::TrafficDrop => {}
        }
        v
    }

    /// `forecast on weather: error rate 12.0% > 5.0%` (without the duration).
    fn describe(&self, value: f64, op: &str) -> String {
        match &self.rule.condition {
            Condition::ErrorRate { threshold, .. } => {
                format!("error rate {} {op} {}", fmt_pct(value), fmt_pct(*threshold))
            }
            Condition::Latency {
                quantile,
                threshold,
                ..
            } => format!(
                "{} latency {} {op} {}",
                quantile_label(*quantile),
                fmt_ms(value),
                fmt_ms(threshold.as_secs_f64() * 1000.0)
            ),
            Condition::TrafficDrop { .. } => String::new(),
        }
    }

    fn tool_firing(&self, series: &ToolSeries, fired: &Fired) -> Finding {
        let values: Vec<Value> = series
            .samples
            .iter()
            .map(|s| self.sample_json(s.minute, s.calls, s.errors, Some(s.value)))
            .collect();
        // The summary's value: the error rate over the window (exact), or the latency of
        // the last minute (quantiles of separate minutes do not combine).
        let value = match self.kind {
            RuleKind::ErrorRate => {
                let calls: u64 = series.samples.iter().map(|s| s.calls).sum();
                let errors: u64 = series.samples.iter().map(|s| s.errors).sum();
                if calls == 0 {
                    0.0
                } else {
                    errors as f64 / calls as f64
                }
            }
            _ => series.samples.back().map_or(0.0, |s| s.value),
        };
        let mut e = self.evidence_base();
        e.insert("value".into(), json!(value));
        e.insert("values".into(), Value::Array(values));
        let summary = format!(
            "{}: {} for {}",
            subject(&series.server, series.tool.as_deref()),
            self.describe(value, ">"),
            fmt_minutes(u64::from(self.for_minutes))
        );
        let start = fired
            .at
            .saturating_sub(Minute::from(self.for_minutes) - 1)
            .max(fired.first);
        self.finding(
            FindingStatus::Firing,
            (&series.tenant, &series.server, series.tool.as_deref()),
            fired,
            (start, fired.at + 1),
            summary,
            Value::Object(e),
        )
    }

    fn tool_resolved(
        &self,
        series: &ToolSeries,
        fired: &Fired,
        minute: Minute,
        eval: Eval,
    ) -> Finding {
        let subject_text = subject(&series.server, series.tool.as_deref());
        let after = fmt_minutes((minute - fired.first).max(0) as u64);
        let (reason, sample, summary) = match eval {
            Eval::Value {
                calls,
                errors,
                value,
            } => (
                "below_threshold",
                self.sample_json(minute, calls, errors, Some(value)),
                format!(
                    "{subject_text}: {}; resolved after {after}",
                    self.describe(value, "≤")
                ),
            ),
            Eval::NotEvaluated { calls: 0 } => (
                "no_calls",
                self.sample_json(minute, 0, 0, None),
                format!(
                    "{subject_text}: no calls in the last minute; {} alert resolved after {after}",
                    self.kind.as_str().replace('_', " ")
                ),
            ),
            Eval::NotEvaluated { calls } => (
                "too_few_calls",
                self.sample_json(minute, calls, 0, None),
                format!(
                    "{subject_text}: too few calls in the last minute ({calls}); {} alert resolved after {after}",
                    self.kind.as_str().replace('_', " ")
                ),
            ),
        };
        let mut e = self.evidence_base();
        e.insert("reason".into(), json!(reason));
        e.insert(
            "fired_at".into(),
            json!(rfc3339(minute_start(fired.at + 1))),
        );
        e.insert("values".into(), json!([sample]));
        self.finding(
            FindingStatus::Resolved,
            (&series.tenant, &series.server, series.tool.as_deref()),
            fired,
            (fired.first, minute + 1),
            summary,
            Value::Object(e),
        )
    }

    fn traffic_firing(&self, series: &ServerSeries, fired: &Fired) -> Finding {
        let values: Vec<Value> = (fired.first..=fired.at)
            .map(|m| self.sample_json(m, 0, 0, None))
            .collect();
        let mut e = self.evidence_base();
        if let Some(b) = &fired.baseline {
            e.insert(
                "baseline".into(),
                json!({
                    "start": rfc3339(minute_start(b.start)),
                    "end": rfc3339(minute_start(b.start + Minute::from(b.minutes))),
                    "min_calls": b.min_calls,
                    "max_calls": b.max_calls,
                    "total_calls": b.total_calls,
                }),
            );
        }
        e.insert("values".into(), Value::Array(values));
        let summary = format!(
            "{}: no calls for {} after steady traffic (≥{}/min for {})",
            series.server,
            fmt_minutes(u64::from(self.for_minutes)),
            self.min_calls_per_minute(),
            fmt_minutes(u64::from(self.baseline_minutes()))
        );
        self.finding(
            FindingStatus::Firing,
            (&series.tenant, &series.server, None),
            fired,
            (fired.first, fired.at + 1),
            summary,
            Value::Object(e),
        )
    }

    fn traffic_resolved(
        &self,
        series: &ServerSeries,
        fired: &Fired,
        minute: Minute,
        calls: u64,
    ) -> Finding {
        let silent = (minute - fired.first).max(0) as u64;
        let mut e = self.evidence_base();
        e.insert("reason".into(), json!("calls_resumed"));
        e.insert(
            "fired_at".into(),
            json!(rfc3339(minute_start(fired.at + 1))),
        );
        e.insert("silent_minutes".into(), json!(silent));
        e.insert(
            "values".into(),
            json!([self.sample_json(minute, calls, 0, None)]),
        );
        let summary = format!(
            "{}: calls resumed ({calls} in the last minute) after {} without calls",
            series.server,
            fmt_minutes(silent)
        );
        self.finding(
            FindingStatus::Resolved,
            (&series.tenant, &series.server, None),
            fired,
            (fired.first, minute + 1),
            summary,
            Value::Object(e),
        )
    }
}

impl Retired {
    /// The resolved finding of a series whose rule is gone, at `end` (exclusive).
    fn resolve(&self, end: Minute) -> Finding {
        let (tool, status) = (self.tool.as_deref(), FindingStatus::Resolved);
        let first = self.fired.first.to_string();
        let what = match self.reason.as_str() {
            "rule_removed" => "the rule was removed",
            _ => "the rule no longer applies",
        };
        let subject_text = match self.kind {
            RuleKind::TrafficDrop => self.server.clone(),
            _ => subject(&self.server, tool),
        };
        Finding {
            id: Finding::derive_id(&[
                &self.rule,
                &self.tenant,
                &self.server,
                tool.unwrap_or(""),
                status.as_str(),
                &first,
            ]),
            kind: self.kind.finding_kind(),
            status,
            tenant: self.tenant.clone(),
            server: self.server.clone(),
            tool: self.tool.clone(),
            method: None,
            region: None,
            severity: self.fired.severity,
            time: minute_start(end),
            window_start: minute_start(self.fired.first),
            window_end: minute_start(end),
            summary: format!(
                "{subject_text}: {} alert `{}` resolved: {what}",
                self.kind.as_str().replace('_', " "),
                self.rule
            ),
            evidence: json!({
                "rule": self.rule,
                "kind": self.kind.as_str(),
                "reason": self.reason,
                "fired_at": rfc3339(minute_start(self.fired.at + 1)),
                "values": [],
            }),
            source: FINDING_SOURCE.into(),
        }
    }
}

fn subject(server: &str, tool: Option<&str>) -> String {
    match tool {
        Some(tool) => format!("{tool} on {server}"),
        None => format!("{server} (calls without a tool)"),
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// 0.123 → `12.3%`.
fn fmt_pct(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

/// 12345.0 → `12.3 s`, 10000.0 → `10 s`, 850.0 → `850 ms`.
fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", trim_decimals(format!("{:.1}", ms / 1000.0)))
    } else {
        format!("{} ms", trim_decimals(format!("{ms:.1}")))
    }
}

/// 0.95 → `p95`, 0.999 → `p99.9`, 1.0 → `max`.
fn quantile_label(q: f64) -> String {
    if q >= 1.0 {
        "max".into()
    } else {
        format!("p{}", trim_decimals(format!("{:.3}", q * 100.0)))
    }
}

fn trim_decimals(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// 5 → `5m`, 60 → `1h`, 90 → `1h30m`.
fn fmt_minutes(minutes: u64) -> String {
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::row::SeriesKey;

    /// 2025-02-19T…, an arbitrary minute.
    const T0: Minute = 29_000_000;

    fn key(server: &str, tool: Option<&str>, method: &str) -> SeriesKey {
        SeriesKey {
            source: SignalSource::Spans,
            tenant: "acme".into(),
            server: server.into(),
            tool: tool.map(Into::into),
            method: Some(method.into()),
            region: None,
        }
    }

    /// A spans row with `calls` calls of which `errors` failed, each taking `ms`.
    fn row(minute: Minute, key: SeriesKey, calls: u64, errors: u64, ms: f64) -> SignalRow {
        let mut row = SignalRow::new(key, minute);
        row.calls = calls;
        row.errors = errors;
        for _ in 0..calls {
            latency_hist::record_ms(&mut row.latency, ms);
        }
        row
    }

    fn forecast(minute: Minute, calls: u64, errors: u64) -> SignalRow {
        row(
            minute,
            key("weather", Some("forecast"), "tools/call"),
            calls,
            errors,
            5.0,
        )
    }

    fn only(rules: Vec<Rule>) -> RulesConfig {
        let config = RulesConfig { rules };
        config.validate().expect("valid");
        config
    }

    fn standard(name: &str) -> Rule {
        RulesConfig::standard()
            .into_iter()
            .find(|r| r.name == name)
            .expect("standard rule")
    }

    /// Feeds one minute the way the operator does: its rows, then the watermark.
    fn minute(engine: &mut RuleEngine, m: Minute, rows: Vec<SignalRow>) -> Vec<Finding> {
        let mut out = engine.observe(&rows);
        out.extend(engine.advance(m + 1));
        out
    }

    fn ts(m: Minute) -> DateTime<Utc> {
        minute_start(m)
    }

    #[test]
    fn error_rate_fires_at_the_fifth_holding_minute_once_and_resolves_once() {
        let mut engine = RuleEngine::new(only(vec![standard("tool-error-rate")]));
        for m in T0..T0 + 4 {
            assert!(
                minute(&mut engine, m, vec![forecast(m, 100, 12)]).is_empty(),
                "minute {m}"
            );
        }
        let fired = minute(&mut engine, T0 + 4, vec![forecast(T0 + 4, 100, 12)]);
        assert_eq!(fired.len(), 1, "{fired:#?}");
        let f = &fired[0];
        assert_eq!(f.kind, FindingKind::ErrorRateElevated);
        assert_eq!(f.status, FindingStatus::Firing);
        assert_eq!(f.severity, Severity::P2);
        assert_eq!((f.tenant.as_str(), f.server.as_str()), ("acme", "weather"));
        assert_eq!(f.tool.as_deref(), Some("forecast"));
        assert_eq!((f.method.as_deref(), f.region.as_deref()), (None, None));
        assert_eq!(f.time, ts(T0 + 5));
        assert_eq!((f.window_start, f.window_end), (ts(T0), ts(T0 + 5)));
        assert_eq!(
            f.summary,
            "forecast on weather: error rate 12.0% > 5.0% for 5m"
        );
        assert_eq!(f.source, "signals");
        assert_eq!(
            f.id,
            Finding::derive_id(&[
                "tool-error-rate",
                "acme",
                "weather",
                "forecast",
                "firing",
                &T0.to_string()
            ])
        );
        let e = &f.evidence;
        assert_eq!(e["rule"], "tool-error-rate");
        assert_eq!(e["kind"], "error_rate");
        assert_eq!(e["threshold"], 0.05);
        assert_eq!(e["for_minutes"], 5);
        let values = e["values"].as_array().expect("values");
        assert_eq!(values.len(), 5);
        assert_eq!(values[0]["minute"], rfc3339(ts(T0)));
        assert_eq!(values[4]["calls"], 100);
        assert_eq!(values[4]["errors"], 12);
        assert_eq!(values[4]["error_rate"], 0.12);
        assert_eq!(engine.firing(), 1);

        // Still holding: nothing new, the evidence never grows.
        for m in T0 + 5..T0 + 20 {
            assert!(minute(&mut engine, m, vec![forecast(m, 100, 50)]).is_empty());
        }
        let state = engine.state();
        assert_eq!(state.rules[0].tools[0].samples.len(), 5);

        let resolved = minute(&mut engine, T0 + 20, vec![forecast(T0 + 20, 100, 1)]);
        assert_eq!(resolved.len(), 1);
        let r = &resolved[0];
        assert_eq!(r.status, FindingStatus::Resolved);
        assert_eq!(r.time, ts(T0 + 21));
        assert_eq!((r.window_start, r.window_end), (ts(T0), ts(T0 + 21)));
        assert_eq!(r.evidence["reason"], "below_threshold");
        assert_eq!(
            r.summary,
            "forecast on weather: error rate 1.0% ≤ 5.0%; resolved after 20m"
        );
        assert_eq!(
            r.id,
            Finding::derive_id(&[
                "tool-error-rate",
                "acme",
                "weather",
                "forecast",
                "resolved",
                &T0.to_string()
            ])
        );
        assert_eq!(engine.firing(), 0);
        assert_eq!(engine.tracked(), 0, "healthy series are not kept");
        for m in T0 + 21..T0 + 30 {
            assert!(minute(&mut engine, m, vec![forecast(m, 100, 1)]).is_empty());
        }
    }

    #[test]
    fn a_healthy_or_missing_minute_resets_the_streak() {
        let mut engine = RuleEngine::new(only(vec![standard("tool-error-rate")]));
        let mut out = Vec::new();
        // 4 holding, 1 healthy, 4 holding, 1 without calls, 4 holding.
        for m in T0..T0 + 4 {
            out.extend(minute(&mut engine, m, vec![forecast(m, 100, 12)]));
        }
        out.extend(minute(&mut engine, T0 + 4, vec![forecast(T0 + 4, 100, 5)])); // exactly 5%: not above
        for m in T0 + 5..T0 + 9 {
            out.extend(minute(&mut engine, m, vec![forecast(m, 100, 12)]));
        }
        out.extend(minute(&mut engine, T0 + 9, vec![]));
        for m in T0 + 10..T0 + 14 {
            out.extend(minute(&mut engine, m, vec![forecast(m, 100, 12)]));
        }
        assert!(out.is_empty(), "{out:#?}");
        // The fifth consecutive one fires, and its window starts after the gap.
        let fired = minute(&mut engine, T0 + 14, vec![forecast(T0 + 14, 100, 12)]);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].window_start, ts(T0 + 10));
    }

    #[test]
    fn gaps_seen_by_observe_alone_reset_too() {
        // Minutes fed without advance in between (one big close): the missing minute is
        // still a closed minute without calls.
        let mut engine = RuleEngine::new(only(vec![standard("tool-error-rate")]));
        let rows: Vec<SignalRow> = (T0..T0 + 10)
            .filter(|m| *m != T0 + 3)
            .map(|m| forecast(m, 100, 12))
            .collect();
        let out = engine.observe(&rows);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0].window_start, ts(T0 + 4));
        assert_eq!(out[0].time, ts(T0 + 9));
    }

    #[test]
    fn rows_of_one_call_may_come_in_any_order() {
        let mut engine = RuleEngine::new(only(vec![standard("tool-error-rate")]));
        let mut rows: Vec<SignalRow> = (T0..T0 + 5).map(|m| forecast(m, 100, 12)).collect();
        rows.reverse();
        let out = engine.observe(&rows);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].time, ts(T0 + 5));
        // A minute fed again is ignored.
        assert!(engine.observe(&[forecast(T0 + 4, 100, 0)]).is_empty());
        assert_eq!(engine.firing(), 1);
    }

    #[test]
    fn min_calls_is_respected_and_too_few_calls_resolve() {
        let mut engine = RuleEngine::new(only(vec![standard("tool-error-rate")]));
        // 9 calls, all failing: below min_calls (10), never evaluated.
        for m in T0..T0 + 10 {
            assert!(minute(&mut engine, m, vec![forecast(m, 9, 9)]).is_empty());
        }
        assert_eq!(engine.tracked(), 0);
        for m in T0 + 10..T0 + 14 {
            assert!(minute(&mut engine, m, vec![forecast(m, 10, 1)]).is_empty());
        }
        assert_eq!(
            minute(&mut engine, T0 + 14, vec![forecast(T0 + 14, 10, 1)]).len(),
            1
        );
        let resolved = minute(&mut engine, T0 + 15, vec![forecast(T0 + 15, 3, 3)]);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, FindingStatus::Resolved);
        assert_eq!(resolved[0].evidence["reason"], "too_few_calls");
        assert_eq!(resolved[0].evidence["values"][0]["calls"], 3);
        assert!(
            resolved[0].summary.contains("too few calls"),
            "{}",
            resolved[0].summary
        );
    }

    #[test]
    fn a_minute_without_calls_resolves_through_advance_once() {
        let mut engine = RuleEngine::new(only(vec![standard("tool-error-rate")]));
        for m in T0..T0 + 5 {
            minute(&mut engine, m, vec![forecast(m, 100, 20)]);
        }
        assert_eq!(engine.firing(), 1);
        // No rows for T0+5; the watermark passes it.
        assert!(engine.observe(&[]).is_empty());
        let resolved = engine.advance(T0 + 6);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].evidence["reason"], "no_calls");
        assert_eq!(resolved[0].time, ts(T0 + 6));
        assert!(engine.advance(T0 + 7).is_empty());
        assert!(engine.advance(T0 + 100_000).is_empty());
        assert_eq!(engine.tracked(), 0);
    }

    #[test]
    fn latency_uses_the_quantile_of_all_methods_merged() {
        let mut latency = standard("tool-latency-p95");
        latency.tools = vec!["search".into()];
        let mut engine = RuleEngine::new(only(vec![latency]));
        let fast = |m| row(m, key("s", Some("search"), "tools/call"), 1000, 0, 1.0);
        let slow = |m| {
            row(
                m,
                key("s", Some("search"), "resources/read"),
                10,
                0,
                20_000.0,
            )
        };
        // The slow method alone has p95 = 20 s, but the tool's p95 is 1 ms.
        for m in T0..T0 + 10 {
            assert!(minute(&mut engine, m, vec![fast(m), slow(m)]).is_empty());
        }
        // 100 fast + 10 slow: p95 of the merge is 20 s, though the fast method's is 1 ms.
        let few_fast = |m| row(m, key("s", Some("search"), "tools/call"), 100, 0, 1.0);
        let mut out = Vec::new();
        for m in T0 + 10..T0 + 15 {
            out.extend(minute(&mut engine, m, vec![few_fast(m), slow(m)]));
        }
        assert_eq!(out.len(), 1);
        let f = &out[0];
        assert_eq!(f.kind, FindingKind::LatencyDegraded);
        assert_eq!(f.severity, Severity::P3);
        assert_eq!(f.time, ts(T0 + 15));
        // 20 s at two significant digits (the histogram reports the top of its bucket).
        assert_eq!(f.summary, "search on s: p95 latency 20.1 s > 10 s for 5m");
        let ms = f.evidence["values"][4]["latency_ms"].as_f64().expect("ms");
        assert!((ms / 20_000.0 - 1.0).abs() < 0.01, "{ms}");
        assert_eq!(f.evidence["values"][4]["calls"], 110);
        assert_eq!(f.evidence["quantile"], 0.95);
        assert_eq!(f.evidence["threshold_ms"], 10_000.0);
    }

    #[test]
    fn latency_rule_from_yaml_p99_over_2s() {
        let config: RulesConfig = serde_yaml_ng::from_str(
            "rules:\n  - name: slow-search\n    kind: latency\n    quantile: 0.99\n    threshold: 2s\n    for: 3m\n",
        )
        .expect("parses");
        config.validate().expect("valid");
        let mut engine = RuleEngine::new(config);
        let r = |m| row(m, key("s", Some("search"), "tools/call"), 100, 0, 2500.0);
        assert!(minute(&mut engine, T0, vec![r(T0)]).is_empty());
        assert!(minute(&mut engine, T0 + 1, vec![r(T0 + 1)]).is_empty());
        let out = minute(&mut engine, T0 + 2, vec![r(T0 + 2)]);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].summary,
            "search on s: p99 latency 2.5 s > 2 s for 3m"
        );
        assert_eq!(out[0].window_start, ts(T0));
    }

    #[test]
    fn calls_without_a_tool_form_their_own_series() {
        let mut engine = RuleEngine::new(only(vec![standard("tool-error-rate")]));
        let list = |m| row(m, key("weather", None, "tools/list"), 50, 25, 1.0);
        let init = |m| row(m, key("weather", None, "initialize"), 50, 0, 1.0);
        let mut out = Vec::new();
        for m in T0..T0 + 5 {
            out.extend(minute(&mut engine, m, vec![list(m), init(m)]));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].tool, None);
        assert_eq!(
            out[0].summary,
            "weather (calls without a tool): error rate 25.0% > 5.0% for 5m"
        );
        assert_eq!(out[0].evidence["values"][0]["calls"], 100);

        // A rule with a tools filter never watches them.
        let mut rule = standard("tool-error-rate");
        rule.tools = vec!["forecast".into()];
        let mut engine = RuleEngine::new(only(vec![rule]));
        for m in T0..T0 + 10 {
            assert!(minute(&mut engine, m, vec![list(m), init(m)]).is_empty());
        }
    }

    #[test]
    fn filters_select_tenants_servers_and_tools() {
        let failing = |m, tenant: &str, server: &str, tool: &str| {
            let mut k = key(server, Some(tool), "tools/call");
            k.tenant = tenant.into();
            row(m, k, 100, 50, 1.0)
        };
        let subjects = |rule: Rule| {
            let mut engine = RuleEngine::new(only(vec![rule]));
            let mut fired: Vec<String> = Vec::new();
            for m in T0..T0 + 5 {
                let rows = vec![
                    failing(m, "acme", "weather", "forecast"),
                    failing(m, "acme", "weather", "alerts"),
                    failing(m, "acme", "search", "query"),
                    failing(m, "globex", "weather", "forecast"),
                ];
                for f in minute(&mut engine, m, rows) {
                    fired.push(format!(
                        "{}/{}/{}",
                        f.tenant,
                        f.server,
                        f.tool.unwrap_or_default()
                    ));
                }
            }
            fired.sort();
            fired
        };
        let base = standard("tool-error-rate");
        assert_eq!(subjects(base.clone()).len(), 4);
        let mut r = base.clone();
        r.tenants = vec!["globex".into()];
        assert_eq!(subjects(r), ["globex/weather/forecast"]);
        let mut r = base.clone();
        r.servers = vec!["weather".into()];
        assert_eq!(
            subjects(r),
            [
                "acme/weather/alerts",
                "acme/weather/forecast",
                "globex/weather/forecast"
            ]
        );
        let mut r = base.clone();
        r.tools = vec!["forecast".into()];
        r.tenants = vec!["acme".into()];
        assert_eq!(subjects(r), ["acme/weather/forecast"]);
    }

    #[test]
    fn overflow_and_probe_rows_are_ignored() {
        let mut engine = RuleEngine::new(RulesConfig::default());
        let probe = |m| {
            let mut k = key("weather", None, "x");
            k.source = SignalSource::Probes;
            k.method = None;
            k.region = Some("eu".into());
            row(m, k, 10, 10, 20_000.0)
        };
        let overflow = |m| {
            let mut r = row(
                m,
                key("__overflow__", None, "tools/call"),
                100,
                100,
                20_000.0,
            );
            r.overflow = true;
            r
        };
        for m in T0..T0 + 30 {
            assert!(minute(&mut engine, m, vec![probe(m), overflow(m)]).is_empty());
        }
        assert_eq!(engine.tracked(), 0);
        assert!(engine.advance(T0 + 100).is_empty());
    }

    fn steady(engine: &mut RuleEngine, from: Minute, to: Minute, calls: u64) -> Vec<Finding> {
        let mut out = Vec::new();
        for m in from..to {
            out.extend(engine.observe(&[
                row(
                    m,
                    key("weather", Some("forecast"), "tools/call"),
                    calls,
                    0,
                    1.0,
                ),
                row(m, key("weather", None, "tools/list"), 1, 0, 1.0),
            ]));
            out.extend(engine.advance(m + 1));
        }
        out
    }

    #[test]
    fn traffic_drop_fires_through_advance_after_steady_traffic_and_resolves() {
        let mut engine = RuleEngine::new(only(vec![standard("traffic-drop")]));
        assert!(steady(&mut engine, T0, T0 + 15, 2).is_empty());
        // Silence: rows never come; observe alone can never see it.
        for m in T0 + 15..T0 + 19 {
            assert!(engine.observe(&[]).is_empty());
            assert!(engine.advance(m + 1).is_empty(), "minute {m}");
        }
        let fired = engine.advance(T0 + 20);
        assert_eq!(fired.len(), 1, "{fired:#?}");
        let f = &fired[0];
        assert_eq!(f.kind, FindingKind::TrafficDrop);
        assert_eq!(f.status, FindingStatus::Firing);
        assert_eq!(f.severity, Severity::P2);
        assert_eq!(f.tool, None);
        assert_eq!(
            (f.window_start, f.window_end, f.time),
            (ts(T0 + 15), ts(T0 + 20), ts(T0 + 20))
        );
        assert_eq!(
            f.summary,
            "weather: no calls for 5m after steady traffic (≥1/min for 15m)"
        );
        assert_eq!(
            f.id,
            Finding::derive_id(&[
                "traffic-drop",
                "acme",
                "weather",
                "",
                "firing",
                &(T0 + 15).to_string()
            ])
        );
        assert_eq!(f.evidence["baseline"]["total_calls"], 45);
        assert_eq!(f.evidence["baseline"]["min_calls"], 3);
        assert_eq!(f.evidence["baseline"]["start"], rfc3339(ts(T0)));
        assert_eq!(f.evidence["baseline"]["end"], rfc3339(ts(T0 + 15)));
        assert_eq!(f.evidence["values"].as_array().map(Vec::len), Some(5));
        assert_eq!(engine.firing(), 1);

        // Still silent, a long time: nothing more, and O(1) work for the jump.
        assert!(engine.advance(T0 + 25).is_empty());
        assert!(engine.advance(T0 + 5_000_000).is_empty());
        // Calls return.
        let resolved = steady(&mut engine, T0 + 5_000_000, T0 + 5_000_001, 1);
        assert_eq!(resolved.len(), 1);
        let r = &resolved[0];
        assert_eq!(r.status, FindingStatus::Resolved);
        assert_eq!(r.time, ts(T0 + 5_000_001));
        assert_eq!(r.evidence["reason"], "calls_resumed");
        assert_eq!(r.evidence["values"][0]["calls"], 2);
        assert_eq!(
            r.id,
            Finding::derive_id(&[
                "traffic-drop",
                "acme",
                "weather",
                "",
                "resolved",
                &(T0 + 15).to_string()
            ])
        );
        assert!(steady(&mut engine, T0 + 5_000_001, T0 + 5_000_010, 1).is_empty());
        assert_eq!(engine.firing(), 0);
    }

    #[test]
    fn traffic_drop_needs_steady_traffic() {
        // 14 minutes of traffic is not 15.
        let mut engine = RuleEngine::new(only(vec![standard("traffic-drop")]));
        assert!(steady(&mut engine, T0, T0 + 14, 2).is_empty());
        assert!(engine.advance(T0 + 40).is_empty());
        assert_eq!(
            engine.tracked(),
            0,
            "a silent server that cannot fire is forgotten"
        );

        // One thin minute (below min_calls_per_minute) breaks the baseline.
        let mut rule = standard("traffic-drop");
        rule.condition = Condition::TrafficDrop {
            baseline: Duration::from_secs(600),
            min_calls_per_minute: 5,
        };
        let mut engine = RuleEngine::new(only(vec![rule]));
        assert!(steady(&mut engine, T0, T0 + 5, 10).is_empty());
        assert!(steady(&mut engine, T0 + 5, T0 + 6, 2).is_empty()); // 3 calls < 5
        assert!(steady(&mut engine, T0 + 6, T0 + 15, 10).is_empty()); // 9 steady minutes
        assert!(engine.advance(T0 + 40).is_empty());

        // A short silence resets the baseline too.
        let mut engine = RuleEngine::new(only(vec![standard("traffic-drop")]));
        assert!(steady(&mut engine, T0, T0 + 20, 2).is_empty());
        assert!(engine.advance(T0 + 23).is_empty()); // 3 silent minutes
        assert!(steady(&mut engine, T0 + 23, T0 + 30, 2).is_empty());
        assert!(engine.advance(T0 + 60).is_empty());

        // Without any gap in the baseline, the same silence fires.
        let mut engine = RuleEngine::new(only(vec![standard("traffic-drop")]));
        assert!(steady(&mut engine, T0, T0 + 20, 2).is_empty());
        assert_eq!(engine.advance(T0 + 60).len(), 1);
    }

    #[test]
    fn traffic_drop_noticed_by_observe_when_calls_return_after_an_unseen_gap() {
        let mut engine = RuleEngine::new(only(vec![standard("traffic-drop")]));
        let rows: Vec<SignalRow> = (T0..T0 + 15)
            .chain(T0 + 22..T0 + 23)
            .map(|m| row(m, key("weather", Some("forecast"), "tools/call"), 1, 0, 1.0))
            .collect();
        let out = engine.observe(&rows);
        assert_eq!(out.len(), 2, "{out:#?}");
        assert_eq!(out[0].status, FindingStatus::Firing);
        assert_eq!(out[0].time, ts(T0 + 20));
        assert_eq!(out[1].status, FindingStatus::Resolved);
        assert_eq!(out[1].time, ts(T0 + 23));
        assert_eq!(out[1].evidence["silent_minutes"], 7);
    }

    #[test]
    fn traffic_drop_filters_servers() {
        let mut rule = standard("traffic-drop");
        rule.servers = vec!["search".into()];
        let mut engine = RuleEngine::new(only(vec![rule]));
        assert!(steady(&mut engine, T0, T0 + 20, 2).is_empty());
        assert!(engine.advance(T0 + 60).is_empty());
        assert_eq!(engine.tracked(), 0);
    }

    /// A mixed stream: error streaks, latency, silences, resumptions.
    fn stream(m: Minute) -> Vec<SignalRow> {
        let i = m - T0;
        let mut rows = Vec::new();
        if !(30..40).contains(&i) {
            let errors = if (3..12).contains(&i) || (20..26).contains(&i) {
                40
            } else {
                0
            };
            rows.push(forecast(m, 100, errors));
            let ms = if (5..15).contains(&i) { 15_000.0 } else { 30.0 };
            rows.push(row(
                m,
                key("weather", Some("alerts"), "tools/call"),
                20,
                0,
                ms,
            ));
        }
        if i % 7 != 6 {
            rows.push(row(m, key("search", None, "tools/list"), 3, 1, 2.0));
        }
        rows
    }

    fn run(engine: &mut RuleEngine, from: Minute, to: Minute) -> Vec<Finding> {
        (from..to)
            .flat_map(|m| minute(engine, m, stream(m)))
            .collect()
    }

    #[test]
    fn state_round_trip_mid_streak_replays_identically() {
        let config = RulesConfig::default;
        let mut reference = RuleEngine::new(config());
        let all = run(&mut reference, T0, T0 + 60);
        let kinds: Vec<(FindingKind, FindingStatus)> =
            all.iter().map(|f| (f.kind, f.status)).collect();
        assert!(kinds.contains(&(FindingKind::ErrorRateElevated, FindingStatus::Firing)));
        assert!(kinds.contains(&(FindingKind::LatencyDegraded, FindingStatus::Resolved)));
        assert!(kinds.contains(&(FindingKind::TrafficDrop, FindingStatus::Resolved)));

        // Cut at every minute: checkpoint through JSON, restore, continue.
        for cut in T0..T0 + 60 {
            let mut first = RuleEngine::new(config());
            let mut out = run(&mut first, T0, cut);
            let json = serde_json::to_string(&first.state()).expect("serializes");
            let state: RuleState = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(state, first.state());
            let mut second = RuleEngine::restore(config(), state);
            assert_eq!(second.firing(), first.firing());
            out.extend(run(&mut second, cut, T0 + 60));
            assert_eq!(out, all, "cut at minute {}", cut - T0);
        }

        // A fresh replay gives the same ids.
        let again = run(&mut RuleEngine::new(config()), T0, T0 + 60);
        let ids: Vec<&str> = all.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, again.iter().map(|f| f.id.as_str()).collect::<Vec<_>>());
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "firing and resolved ids differ");
    }

    #[test]
    fn restore_resolves_removed_rules_and_starts_new_ones_empty() {
        let mut engine = RuleEngine::new(RulesConfig::default());
        let fired = run(&mut engine, T0, T0 + 8);
        let firing = fired
            .iter()
            .find(|f| f.kind == FindingKind::ErrorRateElevated)
            .expect("fired");
        let state = engine.state();

        // Without the error-rate rule, but with a new one.
        let mut config = RulesConfig::default();
        config.rules.retain(|r| r.name != "tool-error-rate");
        let mut extra = standard("tool-error-rate");
        extra.name = "strict-error-rate".into();
        extra.condition = Condition::ErrorRate {
            threshold: 0.5,
            min_calls: 1,
        };
        config.rules.push(extra);
        let mut restored = RuleEngine::restore(
            config,
            serde_json::from_value(serde_json::to_value(state).unwrap()).unwrap(),
        );
        assert_eq!(restored.firing(), 1);
        assert!(restored.observe(&stream(T0 + 8)).is_empty());
        let out = restored.advance(T0 + 9);
        assert_eq!(out.len(), 1, "{out:#?}");
        let r = &out[0];
        assert_eq!(r.status, FindingStatus::Resolved);
        assert_eq!(r.kind, FindingKind::ErrorRateElevated);
        assert_eq!(r.evidence["reason"], "rule_removed");
        assert_eq!(r.tool, firing.tool);
        assert_eq!(r.window_start, firing.window_start);
        assert_eq!(
            r.id,
            Finding::derive_id(&[
                "tool-error-rate",
                "acme",
                "weather",
                "forecast",
                "resolved",
                &(T0 + 3).to_string()
            ])
        );
        assert_eq!(restored.firing(), 0);
        assert!(restored.advance(T0 + 10).is_empty());
    }

    #[test]
    fn restore_with_a_narrowed_filter_resolves_what_it_no_longer_selects() {
        let mut engine = RuleEngine::new(only(vec![standard("tool-error-rate")]));
        for m in T0..T0 + 5 {
            minute(&mut engine, m, vec![forecast(m, 100, 50)]);
        }
        let mut rule = standard("tool-error-rate");
        rule.servers = vec!["search".into()];
        let mut restored = RuleEngine::restore(only(vec![rule]), engine.state());
        let out = restored.advance(T0 + 6);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].evidence["reason"], "rule_changed");
        assert_eq!(restored.firing(), 0);
    }

    #[test]
    fn for_of_one_minute_fires_at_the_first_holding_minute() {
        let mut rule = standard("tool-error-rate");
        rule.r#for = Duration::from_secs(60);
        let mut engine = RuleEngine::new(only(vec![rule]));
        let out = minute(&mut engine, T0, vec![forecast(T0, 100, 50)]);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].summary,
            "forecast on weather: error rate 50.0% > 5.0% for 1m"
        );
        assert_eq!(
            (out[0].window_start, out[0].window_end),
            (ts(T0), ts(T0 + 1))
        );
    }

    #[test]
    fn severity_comes_from_the_rule() {
        let mut rule = standard("tool-latency-p95");
        rule.severity = Some(Severity::P1);
        assert_eq!(rule.severity(), Severity::P1);
        rule.severity = None;
        assert_eq!(rule.severity(), Severity::P3);
    }

    // ---- configuration ----

    const EXAMPLE: &str = "\
rules:
  - name: tool-error-rate
    kind: error_rate
    threshold: 0.05
    for: 5m
  - name: slow-search
    kind: latency
    quantile: 0.99
    threshold: 2s
    for: 3m
    servers: [search]
  - name: traffic-drop
    kind: traffic_drop
    baseline: 15m
    for: 5m
";

    #[test]
    fn the_example_parses_with_defaults_filled_in() {
        let config: RulesConfig = serde_yaml_ng::from_str(EXAMPLE).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.rules.len(), 3);
        assert_eq!(
            config.rules[0].condition,
            Condition::ErrorRate {
                threshold: 0.05,
                min_calls: 10
            }
        );
        assert_eq!(config.rules[0].severity, None);
        assert_eq!(config.rules[0].severity(), Severity::P2);
        assert_eq!(
            config.rules[1].condition,
            Condition::Latency {
                quantile: 0.99,
                threshold: Duration::from_secs(2),
                min_calls: 1
            }
        );
        assert_eq!(config.rules[1].r#for, Duration::from_secs(180));
        assert_eq!(config.rules[1].servers, ["search"]);
        assert_eq!(
            config.rules[2].condition,
            Condition::TrafficDrop {
                baseline: Duration::from_secs(900),
                min_calls_per_minute: 1
            }
        );
    }

    #[test]
    fn defaults_are_the_three_standard_rules() {
        let config = RulesConfig::default();
        config.validate().expect("valid");
        let names: Vec<&str> = config.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["tool-error-rate", "tool-latency-p95", "traffic-drop"]
        );
        assert!(
            config
                .rules
                .iter()
                .all(|r| r.r#for == Duration::from_secs(300))
        );
        let severities: Vec<Severity> = config.rules.iter().map(Rule::severity).collect();
        assert_eq!(severities, [Severity::P2, Severity::P3, Severity::P2]);
        // A document without `rules` gets them; an empty list means none.
        let parsed: RulesConfig = serde_yaml_ng::from_str("{}").expect("parses");
        assert_eq!(parsed, config);
        let none: RulesConfig = serde_yaml_ng::from_str("rules: []").expect("parses");
        assert!(none.rules.is_empty());
        // Minimal rules take every default.
        let minimal: RulesConfig = serde_yaml_ng::from_str(
            "rules:\n  - {name: tool-error-rate, kind: error_rate, severity: P2}\n  - {name: tool-latency-p95, kind: latency, severity: P3}\n  - {name: traffic-drop, kind: traffic_drop, severity: P2}\n",
        )
        .expect("parses");
        assert_eq!(minimal, config);
    }

    #[test]
    fn rules_round_trip_through_serde() {
        let config: RulesConfig = serde_yaml_ng::from_str(EXAMPLE).expect("parses");
        let json = serde_json::to_value(&config).expect("serializes");
        assert_eq!(json["rules"][1]["threshold"], "2s");
        assert_eq!(json["rules"][1]["for"], "3m");
        assert_eq!(json["rules"][2]["baseline"], "15m");
        let back: RulesConfig = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, config);
        let yaml = serde_yaml_ng::to_string(&RulesConfig::default()).expect("yaml");
        let back: RulesConfig = serde_yaml_ng::from_str(&yaml).expect("parses");
        assert_eq!(back, RulesConfig::default());
    }

    #[test]
    fn percent_thresholds_are_accepted() {
        let config: RulesConfig =
            serde_yaml_ng::from_str("rules:\n  - {name: e, kind: error_rate, threshold: 12.5%}\n")
                .expect("parses");
        assert_eq!(
            config.rules[0].condition,
            Condition::ErrorRate {
                threshold: 0.125,
                min_calls: 10
            }
        );
    }

    fn parse_err(yaml: &str) -> String {
        let de = serde_yaml_ng::Deserializer::from_str(yaml);
        match serde_path_to_error::deserialize::<_, RulesConfig>(de) {
            Ok(config) => panic!("parsed: {config:?}"),
            Err(e) => {
                let path = e.path().to_string();
                format!("{path}: {}", e.into_inner())
            }
        }
    }

    #[test]
    fn shape_errors_are_refused_at_parse_time() {
        let e = parse_err("rules:\n  - {name: a, kind: error_rate, treshold: 0.1}\n");
        assert!(e.contains("treshold"), "{e}");
        let e = parse_err(
            "rules:\n  - {name: a, kind: error_rate}\n  - {name: b, kind: error_rate, baseline: 5m}\n",
        );
        assert!(
            e.starts_with("rules[1]")
                && e.contains("`baseline` is not a field of error_rate rules"),
            "{e}"
        );
        let e = parse_err("rules:\n  - {name: a, kind: latency, threshold: 10}\n");
        assert!(e.contains("needs a unit"), "{e}");
        let e = parse_err("rules:\n  - {name: a, kind: latency, threshold: fast}\n");
        assert!(e.contains("a duration like"), "{e}");
        let e = parse_err("rules:\n  - {name: a, kind: error_rate, threshold: lots}\n");
        assert!(e.contains("an error rate like"), "{e}");
        let e = parse_err("rules:\n  - {name: a, kind: traffic_drop, threshold: 0.1}\n");
        assert!(
            e.contains("`threshold` is not a field of traffic_drop"),
            "{e}"
        );
        let e = parse_err("rules:\n  - {name: a, kind: saturation}\n");
        assert!(e.contains("saturation"), "{e}");
        let e = parse_err("rules:\n  - {name: a, kind: error_rate, for: soon}\n");
        assert!(e.contains("rules[0]"), "{e}");
        let e = parse_err("rules:\n  - {name: a, kind: error_rate, severity: P9}\n");
        assert!(e.contains("P9"), "{e}");
        let e = parse_err("rule: []\n");
        assert!(e.contains("rule"), "{e}");
    }

    #[test]
    fn validate_names_the_field() {
        let check = |edit: &dyn Fn(&mut Vec<Rule>)| {
            let mut config = RulesConfig::default();
            edit(&mut config.rules);
            config.validate().expect_err("invalid")
        };
        let cond =
            |i: usize, c: Condition| move |rules: &mut Vec<Rule>| rules[i].condition = c.clone();
        assert_eq!(
            check(&cond(
                0,
                Condition::ErrorRate {
                    threshold: 1.5,
                    min_calls: 10
                }
            )),
            "rules[0].threshold: must be at least 0 and below 1 (0.05 is 5%)"
        );
        assert!(
            check(&cond(
                0,
                Condition::ErrorRate {
                    threshold: f64::NAN,
                    min_calls: 10
                }
            ))
            .starts_with("rules[0].threshold")
        );
        assert!(
            check(&cond(
                0,
                Condition::ErrorRate {
                    threshold: -0.1,
                    min_calls: 10
                }
            ))
            .starts_with("rules[0].threshold")
        );
        assert_eq!(
            check(&cond(
                0,
                Condition::ErrorRate {
                    threshold: 0.1,
                    min_calls: 0
                }
            )),
            "rules[0].min_calls: must be at least 1"
        );
        let latency = |quantile, threshold, min_calls| Condition::Latency {
            quantile,
            threshold,
            min_calls,
        };
        assert_eq!(
            check(&cond(1, latency(0.0, Duration::from_secs(1), 1))),
            "rules[1].quantile: must be above 0 and at most 1 (0.95 is p95)"
        );
        assert!(
            check(&cond(1, latency(1.01, Duration::from_secs(1), 1)))
                .starts_with("rules[1].quantile")
        );
        assert_eq!(
            check(&cond(1, latency(0.5, Duration::ZERO, 1))),
            "rules[1].threshold: must be positive"
        );
        assert_eq!(
            check(&cond(1, latency(0.5, Duration::from_secs(1), 0))),
            "rules[1].min_calls: must be at least 1"
        );
        let drop = |baseline, min| Condition::TrafficDrop {
            baseline,
            min_calls_per_minute: min,
        };
        assert_eq!(
            check(&cond(2, drop(Duration::from_secs(60), 1))),
            "rules[2].baseline: must be at least 2m"
        );
        assert_eq!(
            check(&cond(2, drop(Duration::from_secs(150), 1))),
            "rules[2].baseline: must be whole minutes (rules are evaluated per minute)"
        );
        assert_eq!(
            check(&cond(2, drop(Duration::from_secs(25 * 3600), 1))),
            "rules[2].baseline: must be at most 24h"
        );
        assert_eq!(
            check(&cond(2, drop(Duration::from_secs(600), 0))),
            "rules[2].min_calls_per_minute: must be at least 1"
        );
        assert_eq!(
            check(&|rules| rules[2].tools = vec!["x".into()]),
            "rules[2].tools: not allowed for traffic_drop rules (they watch whole servers)"
        );
        assert_eq!(
            check(&|rules| rules[1].r#for = Duration::ZERO),
            "rules[1].for: must be at least 1m"
        );
        assert_eq!(
            check(&|rules| rules[1].r#for = Duration::from_secs(90)),
            "rules[1].for: must be whole minutes (rules are evaluated per minute)"
        );
        assert_eq!(
            check(&|rules| rules[0].r#for = Duration::from_secs(2 * 86400)),
            "rules[0].for: must be at most 24h"
        );
        assert_eq!(
            check(&|rules| rules[2].name = "tool-error-rate".into()),
            "rules[2].name: `tool-error-rate` is already the name of rules[0]"
        );
        assert_eq!(
            check(&|rules| rules[1].name = " ".into()),
            "rules[1].name: must not be empty"
        );
        assert_eq!(
            check(&|rules| rules[0].servers = vec![String::new()]),
            "rules[0].servers: entries must not be empty"
        );
    }

    #[test]
    fn labels_and_formats() {
        assert_eq!(quantile_label(0.95), "p95");
        assert_eq!(quantile_label(0.999), "p99.9");
        assert_eq!(quantile_label(0.5), "p50");
        assert_eq!(quantile_label(1.0), "max");
        assert_eq!(fmt_ms(12_345.0), "12.3 s");
        assert_eq!(fmt_ms(10_000.0), "10 s");
        assert_eq!(fmt_ms(850.0), "850 ms");
        assert_eq!(fmt_ms(0.25), "0.2 ms");
        assert_eq!(fmt_minutes(5), "5m");
        assert_eq!(fmt_minutes(60), "1h");
        assert_eq!(fmt_minutes(90), "1h30m");
        assert_eq!(fmt_pct(0.12), "12.0%");
    }
}

//! Alerts of outside alerting systems — Prometheus or Grafana alert rules posting to the
//! Alertmanager-compatible `POST /api/v2/alerts` ([`ExternalAlert`] records on
//! `findings.v1`) — as incidents of class `external`.
//!
//! One incident per (tenant, label fingerprint): dedup key
//! `mcpulse/{tenant}/external/{fingerprint}`, incident id from it and the alert's
//! `startsAt` (stable across re-sends, new for the next occurrence).
//!
//! | received | event |
//! |---|---|
//! | firing, nothing open | `trigger` at once (no blip window: the rule's `for:` already debounced it) |
//! | firing again (the sender's resend interval) | none: the open incident's expiry moves on |
//! | `endsAt` at or before its receipt, incident open | `resolve` (`resolved_at` = `endsAt`) |
//! | nothing for the incident until its expiry (`endsAt` if sent, else receipt + `resolve_timeout`) | `resolve` (`resolved_at` = the expiry) |
//! | re-sends of an occurrence that resolved (the sender keeps sending resolved alerts for a while) | none |
//!
//! Severity comes from the `severity` label (configurable): `critical` → P1,
//! `error`/`high` → P2, `warning` → P3, `info` → P4, others → `default_severity` (P3).
//!
//! Payload boundaries: label and annotation values are the sender's own text; IP address
//! literals in them (a Prometheus `instance` label is usually `10.0.0.7:9100`) are masked
//! before they enter an event, so the incident stage's boundary check does not have to
//! withhold the whole evidence — and with it the labels routes match on
//! (`labels.<name>`). The fingerprint is computed from the unmasked labels, so two
//! instances stay two incidents.
//!
//! # Storms
//!
//! An alert whose labels name its upstream cause — `provider` (and optionally `region`;
//! the label names are configurable, see [`CauseLabels`]) — correlates across tenants
//! like a probe incident: its cause is (provider, region or `global`, class `external`),
//! the ingest edge keys it by that cause so one partition sees every tenant's alerts of
//! it, and the storm rules of `incidents.storm` apply (its trigger is held for
//! `storm.hold` in case a storm forms; when one does, the members are `suppress`ed and
//! the operator routes get one storm incident instead of a page per tenant; a storm
//! that clears resolves the members still open, and an alert still firing then opens a
//! new incident that pages). The share rule's denominator is the tenants active in the
//! process: probed within `incidents.active_window`, or having sent an alert on the
//! Alertmanager API within it. Alerts without a provider label never correlate; a
//! storm of external alerts has severity P2 unless `incidents.severity` overrides class
//! `external`.
//!
//! Changing `provider_label` or `region_label` moves alerts to other partitions: an
//! alert open at the change may be triggered again by its new partition (same incident
//! id, so receivers update it in place) and resolved by the old one's timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use mcpulse_schemas::alert::mask_addresses;
use mcpulse_schemas::external::{CauseLabels, valid_label_name};
use mcpulse_schemas::{AlertAction, AlertEvent, AlertStatus, ExternalAlert, Finding, Severity};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::types::{Cause, FailureClass, IncidentKey};

/// The `class` of external incidents.
pub const EXTERNAL_CLASS: &str = "external";
/// How long after an occurrence ended its re-sends are still recognised and ignored.
const ENDED_MEMORY: Duration = Duration::from_secs(3600);
/// Longest summary an event carries, in characters.
const MAX_SUMMARY_CHARS: usize = 1000;

/// `incidents.external:` in `mcpulse.yaml`.
///
/// ```yaml
/// incidents:
///   external:
///     resolve_timeout: 5m          # open this long without a re-send (when no endsAt) → resolve
///     severity_label: severity
///     severities: { sev1: P1 }     # added to (and overriding) the built-in table
///     default_severity: P3
///     provider_label: provider     # names the upstream cause: storm correlation ("" = off)
///     region_label: region
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExternalConfig {
    /// How long an alert sent without `endsAt` stays open without being re-sent
    /// (Alertmanager's `resolve_timeout`; default 5m). An alert with a future `endsAt`
    /// (Prometheus sends one) stays open until then unless re-sent.
    #[serde(with = "humantime_serde")]
    pub resolve_timeout: Duration,
    /// The label whose value decides the severity (default `severity`).
    pub severity_label: String,
    /// Label values (case-insensitive) and the severity each maps to, added to and
    /// overriding the built-in table (critical, page, emergency → P1; error, high, major
    /// → P2; warning, warn, medium, minor → P3; info, informational, low, notice, none →
    /// P4; and p1…p4 themselves).
    pub severities: BTreeMap<String, Severity>,
    /// The severity of an alert without the label, or with a value in neither table
    /// (default P3).
    pub default_severity: Severity,
    /// The label whose value names an alert's upstream provider (default `provider`):
    /// alerts of one provider (and region) from enough tenants at once correlate into a
    /// storm (see the module docs). Empty: external alerts never correlate.
    pub provider_label: String,
    /// The label whose value names the region of the cause (default `region`); alerts
    /// without it correlate as `global`.
    pub region_label: String,
}

impl Default for ExternalConfig {
    fn default() -> Self {
        Self {
            resolve_timeout: Duration::from_secs(300),
            severity_label: "severity".to_string(),
            severities: BTreeMap::new(),
            default_severity: Severity::P3,
            provider_label: "provider".to_string(),
            region_label: "region".to_string(),
        }
    }
}

/// The built-in severity table.
fn builtin_severity(value: &str) -> Option<Severity> {
    Some(match value {
        "critical" | "page" | "emergency" | "fatal" | "p1" => Severity::P1,
        "error" | "high" | "major" | "p2" => Severity::P2,
        "warning" | "warn" | "medium" | "minor" | "p3" => Severity::P3,
        "info" | "informational" | "low" | "notice" | "none" | "p4" => Severity::P4,
        _ => return None,
    })
}

impl ExternalConfig {
    /// Checks what serde cannot; errors name the field (`incidents.external.…`).
    pub fn validate(&self) -> Result<(), String> {
        if self.resolve_timeout < Duration::from_secs(1)
            || self.resolve_timeout > Duration::from_secs(7 * 24 * 3600)
        {
            return Err("incidents.external.resolve_timeout: must be between 1s and 7 days".into());
        }
        if !valid_label_name(&self.severity_label) {
            return Err(format!(
                "incidents.external.severity_label: {:?} is not a label name \
                 ([a-zA-Z_][a-zA-Z0-9_]*)",
                self.severity_label
            ));
        }
        if self.severities.keys().any(|k| k.trim().is_empty()) {
            return Err("incidents.external.severities: an empty label value".into());
        }
        for (field, name) in [
            ("provider_label", &self.provider_label),
            ("region_label", &self.region_label),
        ] {
            let optional = field == "provider_label" && name.is_empty();
            if !optional && !valid_label_name(name) {
                return Err(format!(
                    "incidents.external.{field}: {name:?} is not a label name \
                     ([a-zA-Z_][a-zA-Z0-9_]*)"
                ));
            }
        }
        if !self.provider_label.is_empty() && self.provider_label == self.region_label {
            return Err("incidents.external.region_label: must differ from provider_label".into());
        }
        Ok(())
    }

    /// The labels naming an alert's cause (what the ingest edge keys records by).
    pub fn cause_labels(&self) -> CauseLabels {
        CauseLabels {
            provider: self.provider_label.clone(),
            region: self.region_label.clone(),
        }
    }

    /// The storm cause of an alert: its provider and region labels, class `external`;
    /// `None` when it names no provider.
    pub fn cause_of(&self, alert: &ExternalAlert) -> Option<Cause> {
        let (provider, region) = self.cause_labels().of(&alert.labels)?;
        Some(Cause {
            provider,
            region,
            class: FailureClass::External,
        })
    }

    /// The severity of an alert with these labels.
    pub fn severity_of(&self, labels: &BTreeMap<String, String>) -> Severity {
        let Some(value) = labels.get(&self.severity_label) else {
            return self.default_severity;
        };
        let value = value.trim().to_ascii_lowercase();
        self.severities
            .iter()
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(&value))
            .map(|(_, s)| *s)
            .or_else(|| builtin_severity(&value))
            .unwrap_or(self.default_severity)
    }
}

/// An open external incident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Open {
    /// `startsAt` of the occurrence.
    starts_at: DateTime<Utc>,
    /// When it resolves unless re-sent.
    expires_at: DateTime<Utc>,
    /// Its trigger.
    trigger: AlertEvent,
}

/// An occurrence that ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Ended {
    starts_at: DateTime<Utc>,
    /// Resolved by the sender (`endsAt`), not by the timeout: its late re-sends are stale.
    by_sender: bool,
    /// When it ended (event time; forgotten [`ENDED_MEMORY`] later).
    at: DateTime<Utc>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Tracked {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open: Option<Open>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ended: Option<Ended>,
}

/// The external alerts of one partition (checkpointed with the engine).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExternalAlerts {
    /// By `tenant/fingerprint`.
    alerts: BTreeMap<String, Tracked>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

fn capped(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(MAX_SUMMARY_CHARS) {
        text.truncate(at);
        text.push('…');
    }
    text
}

/// The incident key of an external alert (what storms track members by): its tenant,
/// its fingerprint as the server, class `external`.
pub fn incident_key(alert: &ExternalAlert) -> IncidentKey {
    IncidentKey {
        tenant: alert.tenant.clone(),
        server: alert.fingerprint.clone(),
        class: FailureClass::External,
    }
}

/// The incident key of the incident `trigger` opened (its evidence keeps the
/// fingerprint).
fn member_key(trigger: &AlertEvent) -> IncidentKey {
    IncidentKey {
        tenant: trigger.tenant.clone(),
        server: trigger.evidence["fingerprint"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        class: FailureClass::External,
    }
}

/// Where [`ExternalAlerts`] tracks the incident of `member` ([`ExternalAlert::key`]).
fn tracked_key(member: &IncidentKey) -> String {
    format!("{}/{}", member.tenant, member.server)
}

/// The dedup key of an external alert.
pub fn dedup_key(tenant: &str, fingerprint: &str) -> String {
    format!("mcpulse/{tenant}/{EXTERNAL_CLASS}/{fingerprint}")
}

/// What the alert is called in summaries: its `alertname`, else its fingerprint.
fn name_of(alert: &ExternalAlert) -> String {
    mask_addresses(
        alert
            .labels
            .get("alertname")
            .map_or(alert.fingerprint.as_str(), String::as_str),
    )
}

fn masked(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.iter()
        .map(|(k, v)| (k.clone(), mask_addresses(v)))
        .collect()
}

/// The trigger of a new occurrence that opened at `opened_at`.
fn trigger(alert: &ExternalAlert, opened_at: DateTime<Utc>, cfg: &ExternalConfig) -> AlertEvent {
    let dedup_key = dedup_key(&alert.tenant, &alert.fingerprint);
    let name = name_of(alert);
    let text = ["summary", "description", "message"]
        .iter()
        .find_map(|k| alert.annotations.get(*k).filter(|v| !v.trim().is_empty()));
    let summary = match text {
        Some(text) => format!("{name}: {}", mask_addresses(text.trim())),
        None => format!("{name} firing"),
    };
    let server = alert
        .labels
        .get("server")
        .or_else(|| alert.labels.get("alertname"))
        .map_or_else(|| alert.fingerprint.clone(), |s| mask_addresses(s));
    let mut evidence = json!({
        "source": alert.source,
        "fingerprint": alert.fingerprint,
        "labels": masked(&alert.labels),
        "annotations": masked(&alert.annotations),
        "starts_at": rfc3339(alert.starts_at),
    });
    if let Some(url) = &alert.generator_url {
        evidence["generator_url"] = Value::String(mask_addresses(url));
    }
    AlertEvent {
        event_id: String::new(),
        incident_id: Finding::derive_id(&[&dedup_key, &rfc3339(opened_at)]),
        dedup_key,
        action: AlertAction::Trigger,
        status: AlertStatus::Open,
        tenant: alert.tenant.clone(),
        server: Some(server),
        class: EXTERNAL_CLASS.to_string(),
        severity: cfg.severity_of(&alert.labels),
        scope: EXTERNAL_CLASS.to_string(),
        reason: Some(name),
        regions: alert
            .labels
            .get("region")
            .map(|r| mask_addresses(r))
            .into_iter()
            .collect(),
        time: alert.received_at,
        opened_at,
        resolved_at: None,
        duration_s: None,
        storm_id: None,
        storm: None,
        provider_outage: None,
        summary: capped(summary),
        evidence,
    }
}

/// The resolve of `open`, ended at `resolved_at`, decided at `at`.
fn resolve(open: &Open, resolved_at: DateTime<Utc>, at: DateTime<Utc>, by: &str) -> AlertEvent {
    let mut event = open.trigger.clone();
    let resolved_at = resolved_at.max(event.opened_at);
    let lasted = (resolved_at - event.opened_at).to_std().unwrap_or_default();
    event.action = AlertAction::Resolve;
    event.status = AlertStatus::Resolved;
    event.time = at;
    event.resolved_at = Some(resolved_at);
    event.duration_s = Some(lasted.as_secs());
    let name = event.reason.clone().unwrap_or_default();
    event.summary = format!(
        "{name} resolved after {}",
        humantime_serde::re::humantime::format_duration(Duration::from_secs(lasted.as_secs()))
    );
    // The labels stay in the evidence: the resolve must route where the trigger went.
    event.evidence["resolved_by"] = Value::String(by.to_string());
    event
}

impl ExternalAlerts {
    /// One alert as received; the events it decides (without ids).
    pub fn observe(&mut self, alert: &ExternalAlert, cfg: &ExternalConfig) -> Vec<AlertEvent> {
        let tracked = self.alerts.entry(alert.key()).or_default();
        let mut out = Vec::new();
        if alert.is_resolved() {
            let ends_at = alert.ends_at.expect("resolved alerts have an end");
            if let Some(open) = tracked.open.take_if(|o| alert.starts_at >= o.starts_at) {
                out.push(resolve(&open, ends_at, alert.received_at, "ends_at"));
                tracked.ended = Some(Ended {
                    starts_at: open.starts_at.max(alert.starts_at),
                    by_sender: true,
                    at: alert.received_at,
                });
            }
        } else {
            let expires_at = alert
                .ends_at
                .unwrap_or(alert.received_at + delta(cfg.resolve_timeout));
            match &mut tracked.open {
                Some(open) => open.expires_at = open.expires_at.max(expires_at),
                None => {
                    let opened_at = match &tracked.ended {
                        // A late re-send of an occurrence its sender resolved.
                        Some(e) if e.by_sender && alert.starts_at <= e.starts_at => {
                            return out;
                        }
                        // Still firing after its timeout resolved it: a new occurrence,
                        // from now.
                        Some(e) if alert.starts_at <= e.starts_at => alert.received_at,
                        _ => alert.starts_at,
                    };
                    let trigger = trigger(alert, opened_at, cfg);
                    out.push(trigger.clone());
                    tracked.open = Some(Open {
                        starts_at: alert.starts_at,
                        expires_at,
                        trigger,
                    });
                }
            }
        }
        out
    }

    /// Event time moved to `now`: resolves the incidents whose expiry passed, forgets
    /// occurrences that ended long enough ago. Returns the events (without ids), each
    /// with the key of its incident.
    pub fn expire(&mut self, now: DateTime<Utc>) -> Vec<(IncidentKey, AlertEvent)> {
        let mut out = Vec::new();
        let forget_before = now - delta(ENDED_MEMORY);
        self.alerts.retain(|_, tracked| {
            if let Some(open) = tracked.open.take_if(|o| o.expires_at <= now) {
                let event = resolve(&open, open.expires_at, open.expires_at, "timeout");
                out.push((member_key(&open.trigger), event));
                tracked.ended = Some(Ended {
                    starts_at: open.starts_at,
                    by_sender: false,
                    at: open.expires_at,
                });
            }
            if tracked.ended.as_ref().is_some_and(|e| e.at < forget_before) {
                tracked.ended = None;
            }
            tracked.open.is_some() || tracked.ended.is_some()
        });
        out
    }

    /// A storm took the open incident of `member` in: its trigger and every later event
    /// carry the storm id, and it reads as suppressed. Returns the `suppress` event
    /// (without id, summary as the trigger's), `None` when it is not open.
    pub fn suppress(
        &mut self,
        member: &IncidentKey,
        storm_id: &str,
        at: DateTime<Utc>,
    ) -> Option<AlertEvent> {
        let open = self.alerts.get_mut(&tracked_key(member))?.open.as_mut()?;
        open.trigger.storm_id = Some(storm_id.to_string());
        open.trigger.status = AlertStatus::Suppressed;
        let mut event = open.trigger.clone();
        event.action = AlertAction::Suppress;
        event.time = at;
        Some(event)
    }

    /// The storm that took `member` in cleared at `at`: its incident resolves (a re-send
    /// of the alert, still firing, opens a new incident from then). `None` when it is
    /// not open.
    pub fn resolve_with_storm(
        &mut self,
        member: &IncidentKey,
        storm_id: &str,
        at: DateTime<Utc>,
    ) -> Option<AlertEvent> {
        let tracked = self.alerts.get_mut(&tracked_key(member))?;
        let open = tracked.open.take()?;
        let mut event = resolve(&open, at, at, "storm_cleared");
        event.storm_id = Some(storm_id.to_string());
        tracked.ended = Some(Ended {
            starts_at: open.starts_at,
            by_sender: false,
            at,
        });
        Some(event)
    }

    /// The triggers of the open incidents.
    pub fn open(&self) -> impl Iterator<Item = &AlertEvent> {
        self.alerts
            .values()
            .filter_map(|t| t.open.as_ref().map(|o| &o.trigger))
    }

    /// Alerts remembered (open, or ended recently).
    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpulse_schemas::external::{SOURCE_ALERTMANAGER_API, fingerprint};

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + TimeDelta::seconds(seconds)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `McpDown` on `instance`, started at t(0), received at `received`.
    fn alert(instance: &str, received: i64, ends_at: Option<i64>) -> ExternalAlert {
        let annotations = labels(&[("summary", "weather down on 10.0.0.7:9100")]);
        let labels = labels(&[
            ("alertname", "McpDown"),
            ("severity", "critical"),
            ("instance", instance),
            ("team", "mcp"),
        ]);
        ExternalAlert {
            tenant: "acme".into(),
            fingerprint: fingerprint(&labels),
            labels,
            annotations,
            starts_at: t(0),
            ends_at: ends_at.map(t),
            generator_url: Some("http://10.0.0.1:9090/graph?g0.expr=up".into()),
            received_at: t(received),
            source: SOURCE_ALERTMANAGER_API.into(),
        }
    }

    fn actions(events: &[AlertEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.action.as_str()).collect()
    }

    #[test]
    fn severity_mapping_is_documented_and_configurable() {
        let cfg = ExternalConfig::default();
        let sev = |v: &str| cfg.severity_of(&labels(&[("severity", v)]));
        assert_eq!(sev("critical"), Severity::P1);
        assert_eq!(sev("CRITICAL"), Severity::P1);
        assert_eq!(sev("error"), Severity::P2);
        assert_eq!(sev("high"), Severity::P2);
        assert_eq!(sev("warning"), Severity::P3);
        assert_eq!(sev("info"), Severity::P4);
        assert_eq!(sev("whatever"), Severity::P3);
        assert_eq!(
            cfg.severity_of(&labels(&[("alertname", "X")])),
            Severity::P3
        );

        let cfg: ExternalConfig = serde_yaml_ng::from_str(
            "severity_label: priority\nseverities: {Sev1: P1, warning: P2}\ndefault_severity: P4\n",
        )
        .unwrap();
        cfg.validate().unwrap();
        let sev = |v: &str| cfg.severity_of(&labels(&[("priority", v)]));
        assert_eq!(sev("sev1"), Severity::P1);
        assert_eq!(
            sev("warning"),
            Severity::P2,
            "the config overrides the table"
        );
        assert_eq!(sev("critical"), Severity::P1);
        assert_eq!(
            cfg.severity_of(&labels(&[("severity", "critical")])),
            Severity::P4
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let parse = |yaml: &str| -> Result<ExternalConfig, String> {
            let c: ExternalConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
            c.validate()?;
            Ok(c)
        };
        assert_eq!(parse("{}").unwrap(), ExternalConfig::default());
        assert!(parse("bogus: 1").unwrap_err().contains("bogus"));
        assert!(
            parse("resolve_timeout: 0s")
                .unwrap_err()
                .contains("incidents.external.resolve_timeout")
        );
        assert!(
            parse("severity_label: a-b")
                .unwrap_err()
                .contains("incidents.external.severity_label")
        );
        assert!(parse("severities: {critical: P9}").is_err());
        assert!(
            parse("provider_label: up-stream")
                .unwrap_err()
                .contains("incidents.external.provider_label")
        );
        assert!(
            parse("region_label: ''")
                .unwrap_err()
                .contains("incidents.external.region_label")
        );
        assert!(
            parse("region_label: provider")
                .unwrap_err()
                .contains("incidents.external.region_label: must differ")
        );
        // Off: alerts never correlate, whatever their labels.
        let off = parse("provider_label: ''").unwrap();
        let mut a = alert("x", 0, None);
        a.labels.insert("provider".into(), "aws".into());
        assert_eq!(off.cause_of(&a), None);
        let cause = ExternalConfig::default().cause_of(&a).unwrap();
        assert_eq!(cause.key(), "aws/global/external");
    }

    #[test]
    fn re_sends_update_in_place_and_an_ended_alert_resolves_once() {
        let cfg = ExternalConfig::default();
        let mut alerts = ExternalAlerts::default();
        let first = alerts.observe(&alert("10.0.0.7:9100", 0, Some(240)), &cfg);
        assert_eq!(actions(&first), ["trigger"]);
        let trigger = &first[0];
        assert_eq!(trigger.severity, Severity::P1);
        assert_eq!(trigger.class, "external");
        assert_eq!(trigger.server.as_deref(), Some("McpDown"));
        assert_eq!(trigger.opened_at, t(0));
        assert!(trigger.dedup_key.starts_with("mcpulse/acme/external/"));
        assert_eq!(trigger.summary, "McpDown: weather down on [address]");
        assert_eq!(trigger.evidence["labels"]["instance"], "[address]");
        assert_eq!(trigger.evidence["labels"]["team"], "mcp");
        trigger.check_boundaries().unwrap();

        // Prometheus re-sends every minute with a later endsAt: nothing new.
        for minute in 1..=5 {
            let resend = alert("10.0.0.7:9100", minute * 60, Some(minute * 60 + 240));
            assert!(alerts.observe(&resend, &cfg).is_empty(), "minute {minute}");
            assert!(alerts.expire(t(minute * 60)).is_empty());
        }
        assert_eq!(alerts.open().count(), 1);

        // Resolved: endsAt in the past.
        let resolved = alerts.observe(&alert("10.0.0.7:9100", 400, Some(390)), &cfg);
        assert_eq!(actions(&resolved), ["resolve"]);
        let r = &resolved[0];
        assert_eq!(r.incident_id, trigger.incident_id);
        assert_eq!(r.dedup_key, trigger.dedup_key);
        assert_eq!(r.resolved_at, Some(t(390)));
        assert_eq!(r.duration_s, Some(390));
        assert_eq!(r.evidence["labels"], trigger.evidence["labels"]);
        assert_eq!(r.evidence["resolved_by"], "ends_at");
        assert_eq!(alerts.open().count(), 0);

        // Prometheus keeps sending the resolved alert for a while, and a late firing
        // re-send may still arrive: neither does anything.
        assert!(
            alerts
                .observe(&alert("10.0.0.7:9100", 460, Some(390)), &cfg)
                .is_empty()
        );
        assert!(
            alerts
                .observe(&alert("10.0.0.7:9100", 461, Some(700)), &cfg)
                .is_empty()
        );

        // The next occurrence (a later startsAt) is a new incident.
        let mut again = alert("10.0.0.7:9100", 900, Some(1140));
        again.starts_at = t(880);
        let next = alerts.observe(&again, &cfg);
        assert_eq!(actions(&next), ["trigger"]);
        assert_ne!(next[0].incident_id, trigger.incident_id);
        assert_eq!(next[0].dedup_key, trigger.dedup_key);
    }

    #[test]
    fn an_alert_not_re_sent_resolves_after_its_expiry() {
        let cfg = ExternalConfig::default();
        let mut alerts = ExternalAlerts::default();
        // No endsAt: open until resolve_timeout (5m) after the last receipt.
        assert_eq!(
            actions(&alerts.observe(&alert("a", 0, None), &cfg)),
            ["trigger"]
        );
        assert!(alerts.observe(&alert("a", 120, None), &cfg).is_empty());
        assert!(alerts.expire(t(120 + 299)).is_empty());
        let expired: Vec<AlertEvent> = alerts
            .expire(t(120 + 300))
            .into_iter()
            .map(|(key, event)| {
                assert_eq!(key, incident_key(&alert("a", 0, None)));
                event
            })
            .collect();
        assert_eq!(actions(&expired), ["resolve"]);
        assert_eq!(expired[0].resolved_at, Some(t(420)));
        assert_eq!(expired[0].evidence["resolved_by"], "timeout");
        assert!(alerts.expire(t(1000)).is_empty(), "resolves once");

        // Still firing after all (the sender was away): a new occurrence from now.
        let back = alerts.observe(&alert("a", 1000, None), &cfg);
        assert_eq!(actions(&back), ["trigger"]);
        assert_eq!(back[0].opened_at, t(1000));
        assert_ne!(back[0].incident_id, expired[0].incident_id);

        // A future endsAt is the expiry.
        let mut alerts = ExternalAlerts::default();
        alerts.observe(&alert("b", 0, Some(240)), &cfg);
        assert!(alerts.expire(t(239)).is_empty());
        assert_eq!(alerts.expire(t(240)).len(), 1);
        // Ended occurrences are forgotten after an hour.
        assert_eq!(alerts.len(), 1);
        alerts.expire(t(240 + 3601));
        assert!(alerts.is_empty());
    }

    #[test]
    fn different_labels_are_different_incidents_and_a_resolved_unknown_is_ignored() {
        let cfg = ExternalConfig::default();
        let mut alerts = ExternalAlerts::default();
        let a = alerts.observe(&alert("10.0.0.7:9100", 0, None), &cfg);
        let b = alerts.observe(&alert("10.0.0.8:9100", 0, None), &cfg);
        assert_eq!(actions(&a), ["trigger"]);
        assert_eq!(actions(&b), ["trigger"]);
        assert_ne!(
            a[0].dedup_key, b[0].dedup_key,
            "masked alike, fingerprinted apart"
        );
        assert!(alerts.observe(&alert("c", 10, Some(5)), &cfg).is_empty());
    }

    #[test]
    fn state_round_trips() {
        let cfg = ExternalConfig::default();
        let mut alerts = ExternalAlerts::default();
        alerts.observe(&alert("a", 0, None), &cfg);
        let json = serde_json::to_string(&alerts).unwrap();
        let mut back: ExternalAlerts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, alerts);
        assert!(back.observe(&alert("a", 60, None), &cfg).is_empty());
    }
}

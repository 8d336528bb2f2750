//! `AlertEvent`: one decided incident transition on `alerts.v1` (keyed by
//! tenant/incident), the stream alert routing delivers, and one row of the `alerts` table.
//!
//! Payload boundaries (what may leave the system): one event per payload; no upstream IP
//! addresses; no prober internals (probe ids, prober names); no identifiers of another
//! tenant — a storm event carries its cause and counts, never member tenants or servers.
//! [`AlertEvent::check_boundaries`] asserts them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::finding::Severity;

/// The tenant that owns storm events (operator routes see them).
pub const OPERATOR_TENANT: &str = "_operator";

/// What happened to the incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertAction {
    /// The incident opened: page.
    Trigger,
    /// Severity changed, flapping started, or the incident was suppressed by a storm.
    Update,
    /// The incident resolved (with its duration).
    Resolve,
    /// A failure that recovered inside the blip window: logged (P4), never paged.
    Blip,
    /// The incident is part of a storm (`storm_id`): its tenant is not paged for it
    /// (unless opted in to provider notices, see [`AlertEvent::provider_outage`]). Sent
    /// instead of the trigger of a member that had not paged yet, or as an update of one
    /// that had.
    Suppress,
}

impl AlertAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertAction::Trigger => "trigger",
            AlertAction::Update => "update",
            AlertAction::Resolve => "resolve",
            AlertAction::Blip => "blip",
            AlertAction::Suppress => "suppress",
        }
    }
}

/// The state of the incident after the transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Open,
    /// Held open while it keeps cycling.
    Flapping,
    /// Part of a storm: its tenant is not paged (unless opted in to provider notices).
    Suppressed,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Flapping => "flapping",
            AlertStatus::Suppressed => "suppressed",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// What a tenant that opted in to "upstream provider outage" notices is told on the
/// suppress event of its own incident: the shared cause, never who else it hits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderOutage {
    pub provider: String,
    /// The region, or `global`.
    pub region: String,
    /// The failure class of the shared cause.
    pub class: String,
    /// When the storm's first member opened.
    pub since: DateTime<Utc>,
}

/// Storm details of a storm event (counts only: no member identities).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StormSummary {
    pub provider: String,
    pub region: String,
    pub tenants: u64,
    pub members: u64,
}

/// One decided transition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertEvent {
    /// Unique per transition (derived from its content: a replay repeats it).
    pub event_id: String,
    /// Stable for one occurrence of the incident.
    pub incident_id: String,
    /// Stable for every occurrence of the subject (PagerDuty `dedup_key`, OpsGenie
    /// `alias`).
    pub dedup_key: String,
    pub action: AlertAction,
    pub status: AlertStatus,
    /// The tenant that owns the incident ([`OPERATOR_TENANT`] for storms).
    pub tenant: String,
    /// The server (absent for storms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Failure class (`unreachable`, `tls`, …, `storm` for storms).
    pub class: String,
    pub severity: Severity,
    /// `global`, `regional`, `degraded` or `finding`.
    pub scope: String,
    /// The failure reason of the last evidence, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Regions failing in the last evidence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// When the transition happened (event time).
    pub time: DateTime<Utc>,
    pub opened_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u64>,
    /// The storm this incident is suppressed by (its incident id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_id: Option<String>,
    /// Storm details (storm events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm: Option<StormSummary>,
    /// On the suppress event of a tenant opted in to provider notices: the shared cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_outage: Option<ProviderOutage>,
    /// One line for a human.
    pub summary: String,
    /// What caused the transition (verdict or finding evidence).
    pub evidence: serde_json::Value,
}

impl AlertEvent {
    /// The log key: one incident's events stay in order.
    pub fn key(&self) -> String {
        format!("{}/{}", self.tenant, self.incident_id)
    }

    /// Checks the payload boundaries: no IP address literal anywhere in the text of the
    /// event, no prober internals, and (for storm events) no tenant or server named.
    pub fn check_boundaries(&self) -> Result<(), String> {
        let text = serde_json::to_string(self).map_err(|e| e.to_string())?;
        for (_, word) in address_words(&text) {
            match address_kind(word) {
                Some(Address::V4) => return Err(format!("an IPv4 address in the payload: {word}")),
                Some(Address::V6) => return Err(format!("an IPv6 address in the payload: {word}")),
                None => {}
            }
        }
        for internal in ["probe_id", "\"prober\""] {
            if text.contains(internal) {
                return Err(format!("prober internals in the payload: {internal}"));
            }
        }
        if self.storm.is_some() && (self.tenant != OPERATOR_TENANT || self.server.is_some()) {
            return Err("a storm event names a tenant or server".into());
        }
        Ok(())
    }
}

/// Which kind of address literal a word is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Address {
    V4,
    V6,
}

/// The words of `text` that could be address literals (runs of hex digits, `.` and `:`,
/// trimmed of leading and trailing `.` and `:`), with their byte offsets.
fn address_words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let is_part = |c: char| c.is_ascii_hexdigit() || c == '.' || c == ':';
    let mut start = None;
    let mut words = Vec::new();
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (is_part(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                words.push((s, &text[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    words.into_iter().filter_map(|(at, word)| {
        let trimmed = word.trim_start_matches(['.', ':']);
        let at = at + (word.len() - trimmed.len());
        let trimmed = trimmed.trim_end_matches(['.', ':']);
        (!trimmed.is_empty()).then_some((at, trimmed))
    })
}

fn address_kind(word: &str) -> Option<Address> {
    if word.parse::<std::net::Ipv4Addr>().is_ok() || word.parse::<std::net::SocketAddrV4>().is_ok()
    {
        return Some(Address::V4);
    }
    if word.contains(':') && word.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some(Address::V6);
    }
    None
}

/// `text` with every IP address literal (what [`AlertEvent::check_boundaries`] refuses:
/// IPv4, IPv4 with a port, IPv6) replaced by `[address]`. For text from outside mcpulse
/// (the labels and annotations of alerts sent through the Alertmanager API) that an event
/// carries: a Prometheus `instance` label is usually `10.0.0.7:9100`.
pub fn mask_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (at, word) in address_words(text) {
        if address_kind(word).is_some() {
            out.push_str(&text[copied..at]);
            out.push_str("[address]");
            copied = at + word.len();
        }
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AlertEvent {
        let t = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        AlertEvent {
            event_id: "e".into(),
            incident_id: "i".into(),
            dedup_key: "mcpulse/acme/weather/unreachable".into(),
            action: AlertAction::Trigger,
            status: AlertStatus::Open,
            tenant: "acme".into(),
            server: Some("weather".into()),
            class: "unreachable".into(),
            severity: Severity::P1,
            scope: "global".into(),
            reason: Some("tcp_refused".into()),
            regions: vec!["eu-west".into(), "us-east".into()],
            time: t,
            opened_at: t,
            resolved_at: None,
            duration_s: None,
            storm_id: None,
            storm: None,
            provider_outage: None,
            summary: "weather unreachable from 2 of 2 regions".into(),
            evidence: serde_json::json!({"detail": "tcp_refused from eu-west, us-east"}),
        }
    }

    #[test]
    fn round_trips_and_passes_the_boundaries() {
        let e = event();
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["action"], "trigger");
        assert_eq!(json["severity"], "P1");
        assert!(json.get("resolved_at").is_none());
        assert_eq!(serde_json::from_value::<AlertEvent>(json).unwrap(), e);
        e.check_boundaries().unwrap();
        assert_eq!(e.key(), "acme/i");
    }

    #[test]
    fn boundaries_catch_ips_internals_and_named_storm_members() {
        let mut e = event();
        e.evidence = serde_json::json!({"detail": "connect to 10.1.2.3:443 refused"});
        assert!(e.check_boundaries().unwrap_err().contains("IPv4"));
        let mut e = event();
        e.evidence = serde_json::json!({"addr": "fd00::1"});
        assert!(e.check_boundaries().unwrap_err().contains("IPv6"));
        let mut e = event();
        e.evidence = serde_json::json!({"probe_id": "acme/weather/eu/1"});
        assert!(e.check_boundaries().is_err());
        let mut e = event();
        e.storm = Some(StormSummary {
            provider: "render".into(),
            region: "global".into(),
            tenants: 40,
            members: 41,
        });
        assert!(e.check_boundaries().unwrap_err().contains("storm"));
        e.tenant = OPERATOR_TENANT.into();
        e.server = None;
        e.check_boundaries().unwrap();
        // Times and versions are not addresses.
        let mut e = event();
        e.summary = "version 1.2.3 at 10:00:00".into();
        e.check_boundaries().unwrap();
    }

    #[test]
    fn masks_exactly_what_the_boundaries_refuse() {
        assert_eq!(
            mask_addresses("instance 10.0.0.7:9100 down; see http://[fd00::1]:9090/graph."),
            "instance [address] down; see http://[[address]]:9090/graph."
        );
        assert_eq!(mask_addresses("host 1.2.3.4."), "host [address].");
        for kept in [
            "version 1.2.3 at 10:00:00",
            "api.example.com:443",
            "cafe",
            "",
        ] {
            assert_eq!(mask_addresses(kept), kept);
        }
        let mut e = event();
        e.summary = mask_addresses("connect to 10.1.2.3:443 and fe80::1 refused");
        e.evidence = serde_json::json!({"instance": mask_addresses("192.168.0.1:9100")});
        e.check_boundaries().unwrap();
    }
}

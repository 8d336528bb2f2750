//! `Finding`: a candidate incident on `findings.v1`, emitted by the analytic operators
//! (signals rules, schema drift, and later the multi-region verdict) for the incident
//! operator, which decides what becomes an incident.
//!
//! A finding is a *transition* of one condition: `firing` when it starts holding (and
//! again, with fresh evidence, while it holds if the emitter re-evaluates), `resolved`
//! when it stops. Its `id` is derived from what it describes (kind, subject, status and
//! the event-time window), never from the wall clock, so an operator replaying after a
//! crash emits findings with the same ids and the consumer can drop the repeats.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A tool's error rate stayed above its threshold for the rule's duration.
    ErrorRateElevated,
    /// A tool's latency quantile stayed above its threshold for the rule's duration.
    LatencyDegraded,
    /// A server with steady traffic stopped receiving calls.
    TrafficDrop,
    /// A server's tool list changed (confirmed), classified by its worst change.
    SchemaDrift,
    /// A server's tool list alternates between versions (instances disagree).
    FleetInconsistent,
}

impl FindingKind {
    pub const ALL: [FindingKind; 5] = [
        FindingKind::ErrorRateElevated,
        FindingKind::LatencyDegraded,
        FindingKind::TrafficDrop,
        FindingKind::SchemaDrift,
        FindingKind::FleetInconsistent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::ErrorRateElevated => "error_rate_elevated",
            FindingKind::LatencyDegraded => "latency_degraded",
            FindingKind::TrafficDrop => "traffic_drop",
            FindingKind::SchemaDrift => "schema_drift",
            FindingKind::FleetInconsistent => "fleet_inconsistent",
        }
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the condition started (or still) holds, or stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingStatus {
    Firing,
    Resolved,
}

impl FindingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingStatus::Firing => "firing",
            FindingStatus::Resolved => "resolved",
        }
    }
}

/// The severity the emitter suggests (the incident operator has the last word).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    P1,
    P2,
    P3,
    P4,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::P1 => "P1",
            Severity::P2 => "P2",
            Severity::P3 => "P3",
            Severity::P4 => "P4",
        }
    }
}

/// One finding (JSON on `findings.v1`, keyed by [`Finding::correlation_key`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// Deterministic id (see [`Finding::derive_id`]).
    pub id: String,
    pub kind: FindingKind,
    pub status: FindingStatus,
    /// The tenant that owns the server.
    pub tenant: String,
    pub server: String,
    /// The tool, for per-tool findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The MCP method, for per-method findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The probing region, for per-region findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Suggested severity.
    pub severity: Severity,
    /// Event time the finding refers to (the end of the evidence window).
    pub time: DateTime<Utc>,
    /// Start of the evidence window (event time).
    pub window_start: DateTime<Utc>,
    /// End of the evidence window (event time, exclusive).
    pub window_end: DateTime<Utc>,
    /// One line an on-call engineer can read.
    pub summary: String,
    /// What the emitter saw: values, thresholds, rule name, changes… (kind-specific).
    pub evidence: serde_json::Value,
    /// The operator that emitted it (`signals`, `drift`, …).
    pub source: String,
}

impl Finding {
    /// The log key: findings about the same server land in the same partition.
    pub fn correlation_key(&self) -> String {
        format!("{}/{}", self.tenant, self.server)
    }

    /// A stable id from the parts that identify one transition of one condition.
    pub fn derive_id(parts: &[&str]) -> String {
        let mut hash = Sha256::new();
        for part in parts {
            hash.update(part.as_bytes());
            hash.update([0u8]);
        }
        hex::encode(&hash.finalize()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_separate_parts() {
        let a = Finding::derive_id(&["traffic_drop", "acme", "weather", "firing", "123"]);
        assert_eq!(
            a,
            Finding::derive_id(&["traffic_drop", "acme", "weather", "firing", "123"])
        );
        assert_ne!(
            a,
            Finding::derive_id(&["traffic_drop", "acme", "weathe", "rfiring", "123"])
        );
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn json_shape() {
        let t = DateTime::parse_from_rfc3339("2026-11-21T10:05:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let finding = Finding {
            id: "x".into(),
            kind: FindingKind::ErrorRateElevated,
            status: FindingStatus::Firing,
            tenant: "acme".into(),
            server: "weather".into(),
            tool: Some("forecast".into()),
            method: None,
            region: None,
            severity: Severity::P2,
            time: t,
            window_start: t - chrono::Duration::minutes(5),
            window_end: t,
            summary: "error rate 12% > 5% for 5m".into(),
            evidence: serde_json::json!({"error_rate": 0.12}),
            source: "signals".into(),
        };
        let json = serde_json::to_value(&finding).unwrap();
        assert_eq!(json["kind"], "error_rate_elevated");
        assert_eq!(json["status"], "firing");
        assert_eq!(json["severity"], "P2");
        assert!(json.get("method").is_none());
        let back: Finding = serde_json::from_value(json).unwrap();
        assert_eq!(back, finding);
        assert_eq!(back.correlation_key(), "acme/weather");
    }
}

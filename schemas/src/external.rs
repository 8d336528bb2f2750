//! `ExternalAlert`: an alert raised by an outside alerting system (a Prometheus or Grafana
//! alert rule posting to mcpulse's Alertmanager-compatible `POST /api/v2/alerts`), as the
//! ingest edge writes it to `findings.v1` for the incident stage.
//!
//! One record per alert as received (a firing alert is re-sent every resend interval,
//! each re-send is one more record), keyed by [`ExternalAlert::partition_key`] so every
//! record of one alert lands in one partition, in order: an alert that names its upstream
//! cause (a `provider` label, see [`CauseLabels`]) is keyed by that cause, so one partition
//! sees every tenant's alerts of the cause and can correlate them into a storm; any other
//! alert by tenant and label fingerprint ([`ExternalAlert::key`]). The header
//! [`HEADER_KIND`] = [`KIND_EXTERNAL_ALERT`] tells it from verdicts and findings.
//!
//! The tenant comes from the credential of the request, never from a label.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Header naming what a `findings.v1` record is (absent: a [`crate::Finding`]).
pub const HEADER_KIND: &str = "mcpulse-kind";
/// The value of [`HEADER_KIND`] for an [`ExternalAlert`].
pub const KIND_EXTERNAL_ALERT: &str = "external_alert";
/// `source` of alerts received on the Alertmanager API.
pub const SOURCE_ALERTMANAGER_API: &str = "alertmanager_api";

/// One alert as received, after the Alertmanager API's defaults were applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalAlert {
    /// The tenant of the credential the alert was posted with.
    pub tenant: String,
    /// [`fingerprint`] of `labels`: the alert's identity within its tenant.
    pub fingerprint: String,
    /// Identifying labels (non-empty; names match `[a-zA-Z_][a-zA-Z0-9_]*`; labels with
    /// an empty value were dropped, as Alertmanager does).
    pub labels: BTreeMap<String, String>,
    /// Informational text (`summary`, `description`, `runbook_url`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing (defaults: `ends_at` when only that was given, else
    /// `received_at`).
    pub starts_at: DateTime<Utc>,
    /// When it ends: in the past (at or before `received_at`) means resolved; in the
    /// future, firing until then unless re-sent; absent, firing until the incident
    /// stage's resolve timeout passes without a re-send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    /// Link back to the rule in the sending system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
    /// When the edge received it (the record's event time).
    pub received_at: DateTime<Utc>,
    /// What received it ([`SOURCE_ALERTMANAGER_API`]).
    pub source: String,
}

impl ExternalAlert {
    /// The log key: every record of one alert in one partition.
    pub fn key(&self) -> String {
        format!("{}/{}", self.tenant, self.fingerprint)
    }

    /// The log key under `cause` (see the module docs): `external/{provider}/{region}`
    /// for an alert naming its upstream cause, else [`ExternalAlert::key`]. Depends only
    /// on the labels, so every re-send of an alert lands in the same partition.
    pub fn partition_key(&self, cause: &CauseLabels) -> String {
        match cause.of(&self.labels) {
            Some((provider, region)) => format!("external/{provider}/{region}"),
            None => self.key(),
        }
    }

    /// Whether the alert says it has ended (`ends_at` at or before its receipt).
    pub fn is_resolved(&self) -> bool {
        self.ends_at.is_some_and(|end| end <= self.received_at)
    }
}

/// Which labels of an external alert name its upstream cause, for storm correlation
/// across tenants (`incidents.external.provider_label` / `region_label`; the ingest edge
/// keys records by them and the incident stage correlates on them, so both read the same
/// config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CauseLabels {
    /// The label whose value names the upstream provider (`provider`); empty: external
    /// alerts never correlate.
    pub provider: String,
    /// The label whose value names the region (`region`); an alert without it is
    /// correlated as `global`.
    pub region: String,
}

impl Default for CauseLabels {
    fn default() -> Self {
        Self {
            provider: "provider".to_string(),
            region: "region".to_string(),
        }
    }
}

impl CauseLabels {
    /// The (provider, region) an alert with these labels names, values trimmed and
    /// lower-cased (`AWS` and `aws` are one provider); `None` without a provider.
    pub fn of(&self, labels: &BTreeMap<String, String>) -> Option<(String, String)> {
        if self.provider.is_empty() {
            return None;
        }
        let provider = labels.get(&self.provider)?.trim().to_ascii_lowercase();
        if provider.is_empty() {
            return None;
        }
        let region = labels
            .get(&self.region)
            .map(|r| r.trim().to_ascii_lowercase())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "global".to_string());
        Some((provider, region))
    }
}

/// Whether `name` is a valid label name (Prometheus' classic rule:
/// `[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The identity of a label set: 16 hex digits of the SHA-256 of the labels sorted by name
/// (`name \0 value \0` each), the same for the same labels whatever their order.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut hash = Sha256::new();
    for (name, value) in labels {
        hash.update(name.as_bytes());
        hash.update([0u8]);
        hash.update(value.as_bytes());
        hash.update([0u8]);
    }
    hex::encode(&hash.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fingerprints_are_stable_order_free_and_separate_parts() {
        let a = fingerprint(&labels(&[("alertname", "Down"), ("job", "mcp")]));
        assert_eq!(
            a,
            fingerprint(&labels(&[("job", "mcp"), ("alertname", "Down")]))
        );
        // A pinned value: stable across releases (dedup keys of open incidents use it).
        assert_eq!(a, "f4ad76be05847401");
        assert_eq!(a.len(), 16);
        assert_ne!(
            a,
            fingerprint(&labels(&[("alertname", "Dow"), ("njob", "mcp")]))
        );
        assert_ne!(
            a,
            fingerprint(&labels(&[("alertname", "Down"), ("job", "mcp2")]))
        );
    }

    #[test]
    fn label_names() {
        for ok in ["alertname", "_x", "a1_B"] {
            assert!(valid_label_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a.b", "é"] {
            assert!(!valid_label_name(bad), "{bad}");
        }
    }

    /// A firing alert of `tenant` with `pairs` as labels, started and received at `t`.
    fn alert(tenant: &str, pairs: &[(&str, &str)], t: DateTime<Utc>) -> ExternalAlert {
        ExternalAlert {
            tenant: tenant.into(),
            fingerprint: fingerprint(&labels(pairs)),
            labels: labels(pairs),
            annotations: BTreeMap::new(),
            starts_at: t,
            ends_at: None,
            generator_url: None,
            received_at: t,
            source: SOURCE_ALERTMANAGER_API.into(),
        }
    }

    #[test]
    fn resolved_when_it_ended_by_its_receipt() {
        let t = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut a = alert("acme", &[("alertname", "Down")], t);
        assert!(!a.is_resolved());
        a.ends_at = Some(t + chrono::Duration::minutes(4));
        assert!(!a.is_resolved());
        a.ends_at = Some(t);
        assert!(a.is_resolved());
        let json = serde_json::to_value(&a).unwrap();
        assert!(json.get("annotations").is_none());
        assert_eq!(serde_json::from_value::<ExternalAlert>(json).unwrap(), a);
        assert_eq!(a.key(), format!("acme/{}", a.fingerprint));
        assert_eq!(a.partition_key(&CauseLabels::default()), a.key());
    }

    #[test]
    fn alerts_naming_a_provider_are_keyed_by_their_cause() {
        let cause = CauseLabels::default();
        let of = |pairs: &[(&str, &str)]| cause.of(&labels(pairs));
        assert_eq!(
            of(&[("provider", " AWS "), ("region", "us-east-1")]),
            Some(("aws".into(), "us-east-1".into()))
        );
        assert_eq!(
            of(&[("provider", "aws")]),
            Some(("aws".into(), "global".into()))
        );
        assert_eq!(of(&[("alertname", "Down")]), None);
        assert_eq!(of(&[("provider", "  ")]), None);
        let off = CauseLabels {
            provider: String::new(),
            ..CauseLabels::default()
        };
        assert_eq!(off.of(&labels(&[("provider", "aws")])), None);

        let t = Utc::now();
        let alert = |tenant: &str| alert(tenant, &[("alertname", "Down"), ("provider", "aws")], t);
        // Two tenants' alerts of one cause share a partition.
        assert_eq!(alert("acme").partition_key(&cause), "external/aws/global");
        assert_eq!(
            alert("acme").partition_key(&cause),
            alert("globex").partition_key(&cause)
        );
        assert_eq!(alert("acme").partition_key(&off), alert("acme").key());
    }
}

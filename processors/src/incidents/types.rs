//! The vocabulary the incident pipeline shares: failure classes, verdicts, the subject of
//! an incident and the signals that drive it.
//!
//! The pipeline (DESIGN.md "Severity", "Dedup", "Storm correlation"; issue 6):
//!
//! 1. **Verdict** (per tenant/server, from `probes.v1`): probe results of one event-time
//!    minute, across regions, become one [`Verdict`]: healthy, degraded, failing in some
//!    regions (regional) or in most (global), with the failure class and reason.
//! 2. **Incident** (per tenant/server/class): verdicts and findings of the analytic
//!    operators become incident transitions — a blip that recovered inside the blip
//!    window (logged, never paged), open (after persisting past the blip window), update
//!    (severity changed), flapping, resolve (after enough healthy verdicts, with the
//!    duration).
//! 3. **Storm** (per upstream cause: provider, region, class): incidents opening within a
//!    window across enough tenants collapse into one storm; members are suppressed and
//!    linked to it, and resolve when it clears.

use chrono::{DateTime, Utc};
use mcpulse_schemas::probe::FailureReason;
use mcpulse_schemas::{FindingKind, Severity};
use serde::{Deserialize, Serialize};

/// What kind of failure an incident is about: one open incident per (tenant, server,
/// class). Several failure reasons share a class, so a server flipping between
/// `tcp_refused` and `connect_timeout` stays one incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// dns_failure, tcp_refused, connect_timeout: the server cannot be reached.
    Unreachable,
    /// tls_error: the handshake fails (untrusted, expired, wrong name).
    Tls,
    /// http_5xx.
    ServerError,
    /// http_4xx, auth_misconfigured: the endpoint refuses requests it should accept.
    ClientError,
    /// not_jsonrpc, initialize_error, protocol_version_mismatch, session_error,
    /// tools_list_error: HTTP works, MCP does not.
    Protocol,
    /// timeout (any phase).
    Timeout,
    /// latency_degraded: works, slowly.
    Latency,
    /// tls_expiring: works, certificate expiring.
    CertificateExpiring,
    /// error_rate_elevated findings.
    ErrorRate,
    /// latency_degraded findings of the signals rules (tool latency).
    ToolLatency,
    /// traffic_drop findings.
    TrafficDrop,
    /// schema_drift findings.
    SchemaDrift,
    /// fleet_inconsistent findings.
    FleetInconsistent,
    /// Alerts of outside alerting systems received on the Alertmanager API (see
    /// `external.rs`); their severity comes from their labels.
    External,
}

impl FailureClass {
    pub const ALL: [FailureClass; 14] = [
        FailureClass::Unreachable,
        FailureClass::Tls,
        FailureClass::ServerError,
        FailureClass::ClientError,
        FailureClass::Protocol,
        FailureClass::Timeout,
        FailureClass::Latency,
        FailureClass::CertificateExpiring,
        FailureClass::ErrorRate,
        FailureClass::ToolLatency,
        FailureClass::TrafficDrop,
        FailureClass::SchemaDrift,
        FailureClass::FleetInconsistent,
        FailureClass::External,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Unreachable => "unreachable",
            FailureClass::Tls => "tls",
            FailureClass::ServerError => "server_error",
            FailureClass::ClientError => "client_error",
            FailureClass::Protocol => "protocol",
            FailureClass::Timeout => "timeout",
            FailureClass::Latency => "latency",
            FailureClass::CertificateExpiring => "certificate_expiring",
            FailureClass::ErrorRate => "error_rate",
            FailureClass::ToolLatency => "tool_latency",
            FailureClass::TrafficDrop => "traffic_drop",
            FailureClass::SchemaDrift => "schema_drift",
            FailureClass::FleetInconsistent => "fleet_inconsistent",
            FailureClass::External => "external",
        }
    }

    /// The class of a probe failure reason; `None` for `auth_required` (alive and
    /// protected: not an outage).
    pub fn of_reason(reason: FailureReason) -> Option<FailureClass> {
        use FailureReason as R;
        Some(match reason {
            R::DnsFailure | R::TcpRefused | R::ConnectTimeout => FailureClass::Unreachable,
            R::TlsError => FailureClass::Tls,
            R::Http5xx => FailureClass::ServerError,
            R::Http4xx | R::AuthMisconfigured => FailureClass::ClientError,
            R::NotJsonrpc
            | R::InitializeError
            | R::ProtocolVersionMismatch
            | R::SessionError
            | R::ToolsListError => FailureClass::Protocol,
            R::Timeout => FailureClass::Timeout,
            R::LatencyDegraded => FailureClass::Latency,
            R::TlsExpiring => FailureClass::CertificateExpiring,
            R::AuthRequired => return None,
        })
    }

    /// The class of an analytic finding.
    pub fn of_finding(kind: FindingKind) -> FailureClass {
        match kind {
            FindingKind::ErrorRateElevated => FailureClass::ErrorRate,
            FindingKind::LatencyDegraded => FailureClass::ToolLatency,
            FindingKind::TrafficDrop => FailureClass::TrafficDrop,
            FindingKind::SchemaDrift => FailureClass::SchemaDrift,
            FindingKind::FleetInconsistent => FailureClass::FleetInconsistent,
        }
    }

    /// Whether incidents of the class can correlate into storms: the probe classes, and
    /// external alerts that name their upstream cause in their labels.
    pub fn correlates(self) -> bool {
        self.is_probe_class() || self == FailureClass::External
    }

    /// Whether the class comes from probes (and so has regions and a provider that
    /// storms can correlate on).
    pub fn is_probe_class(self) -> bool {
        matches!(
            self,
            FailureClass::Unreachable
                | FailureClass::Tls
                | FailureClass::ServerError
                | FailureClass::ClientError
                | FailureClass::Protocol
                | FailureClass::Timeout
                | FailureClass::Latency
                | FailureClass::CertificateExpiring
        )
    }
}

/// How widely a verdict minute failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every region succeeded without warning.
    Healthy,
    /// Succeeded, with a warning (latency degraded, certificate expiring).
    Degraded,
    /// Failed in some regions while others succeeded.
    Regional,
    /// Failed in at least two regions (or in all, when fewer than two probe).
    Global,
}

/// One event-time minute of one server's probe results across regions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub tenant: String,
    pub server: String,
    /// Start of the minute.
    pub minute: DateTime<Utc>,
    pub scope: Scope,
    /// The class of the failure or warning (`None` when healthy, or when the only
    /// failure is `auth_required`).
    pub class: Option<FailureClass>,
    /// The failure reason that decided the class (the most common among failing
    /// regions; ties broken by the taxonomy order).
    pub reason: Option<FailureReason>,
    /// Regions whose probes failed this minute (sorted).
    pub failing_regions: Vec<String>,
    /// Regions that probed this minute (sorted).
    pub regions: Vec<String>,
    /// Hosting provider of the endpoint (see `provider.rs`), for storm correlation.
    pub provider: String,
    /// One line of evidence (e.g. "tcp_refused from eu-west, us-east; 2 of 3 regions").
    pub detail: String,
}

impl Verdict {
    /// Whether this minute counts as healthy for the incident of `class` (hysteresis).
    pub fn healthy_for(&self, class: FailureClass) -> bool {
        self.class != Some(class)
    }
}

/// The subject of an incident: one open incident per (tenant, server, class).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IncidentKey {
    pub tenant: String,
    pub server: String,
    pub class: FailureClass,
}

impl IncidentKey {
    /// The dedup key receivers use to update one incident in place (PagerDuty
    /// `dedup_key`, OpsGenie `alias`): stable for the life of the incident and the same
    /// for every incident of this subject.
    pub fn dedup_key(&self) -> String {
        format!(
            "mcpulse/{}/{}/{}",
            self.tenant,
            self.server,
            self.class.as_str()
        )
    }
}

/// An upstream cause incidents may share (storm correlation).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cause {
    pub provider: String,
    /// The region, or `global`.
    pub region: String,
    pub class: FailureClass,
}

impl Cause {
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.provider, self.region, self.class.as_str())
    }
}

/// The severity a class has at a scope by default (configurable, see `severity.rs`):
/// P1 for unreachable, TLS, 5xx and protocol failures seen globally; P2 for timeouts,
/// regional failures, elevated error rates, breaking drift, traffic drops; P3 for
/// latency, expiring certificates, additive drift, inconsistent fleets; P4 for cosmetic
/// drift.
pub fn default_severity(class: FailureClass, scope: Scope) -> Severity {
    use FailureClass as C;
    match (class, scope) {
        (C::Unreachable | C::Tls | C::ServerError | C::Protocol, Scope::Global) => Severity::P1,
        (C::ClientError, Scope::Global) => Severity::P2,
        (C::Timeout, Scope::Global | Scope::Regional) => Severity::P2,
        (_, Scope::Regional) if class.is_probe_class() => Severity::P2,
        (C::ErrorRate | C::TrafficDrop, _) => Severity::P2,
        (C::SchemaDrift, _) => Severity::P2,
        // A storm of external alerts (each member's own severity comes from its labels).
        (C::External, _) => Severity::P2,
        (C::Latency | C::ToolLatency | C::CertificateExpiring | C::FleetInconsistent, _) => {
            Severity::P3
        }
        _ => Severity::P3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_class_but_auth_required() {
        for reason in FailureReason::ALL {
            let class = FailureClass::of_reason(reason);
            assert_eq!(
                class.is_none(),
                reason == FailureReason::AuthRequired,
                "{reason:?}"
            );
            if let Some(class) = class {
                assert!(class.is_probe_class());
            }
        }
    }

    #[test]
    fn default_severities_follow_the_taxonomy() {
        use FailureClass as C;
        assert_eq!(
            default_severity(C::Unreachable, Scope::Global),
            Severity::P1
        );
        assert_eq!(default_severity(C::Tls, Scope::Global), Severity::P1);
        assert_eq!(default_severity(C::Protocol, Scope::Global), Severity::P1);
        assert_eq!(
            default_severity(C::Unreachable, Scope::Regional),
            Severity::P2
        );
        assert_eq!(default_severity(C::Timeout, Scope::Global), Severity::P2);
        assert_eq!(default_severity(C::ErrorRate, Scope::Global), Severity::P2);
        assert_eq!(default_severity(C::Latency, Scope::Degraded), Severity::P3);
        assert_eq!(
            default_severity(C::CertificateExpiring, Scope::Degraded),
            Severity::P3
        );
    }

    #[test]
    fn dedup_keys_are_stable() {
        let key = IncidentKey {
            tenant: "acme".into(),
            server: "weather".into(),
            class: FailureClass::Unreachable,
        };
        assert_eq!(key.dedup_key(), "mcpulse/acme/weather/unreachable");
    }
}

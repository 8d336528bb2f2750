//! Test helpers: events and times.

use chrono::{DateTime, Utc};
use mcpulse_schemas::alert::OPERATOR_TENANT;
use mcpulse_schemas::{AlertAction, AlertEvent, AlertStatus, Severity, StormSummary};

pub fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
}

/// A P1 trigger of `server` of `tenant`, class `unreachable`, from eu-west and us-east.
pub fn event(tenant: &str, server: &str) -> AlertEvent {
    let t = at("2026-01-14T10:00:00Z");
    AlertEvent {
        event_id: format!("e-{tenant}-{server}"),
        incident_id: format!("i-{tenant}-{server}"),
        dedup_key: format!("mcpulse/{tenant}/{server}/unreachable"),
        action: AlertAction::Trigger,
        status: AlertStatus::Open,
        tenant: tenant.into(),
        server: Some(server.into()),
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
        summary: format!("{server} unreachable"),
        evidence: serde_json::json!({}),
    }
}

/// A storm notice (tenant `_operator`, no server).
pub fn storm() -> AlertEvent {
    let mut e = event(OPERATOR_TENANT, "x");
    e.server = None;
    e.class = "storm".into();
    e.dedup_key = "mcpulse/_operator/storm/render".into();
    e.storm = Some(StormSummary {
        provider: "render".into(),
        region: "global".into(),
        tenants: 40,
        members: 41,
    });
    e
}

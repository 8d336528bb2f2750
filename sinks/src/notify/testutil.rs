//! Events for the unit tests.

use chrono::{DateTime, Utc};
use mcpulse_schemas::{AlertAction, AlertEvent, AlertStatus, Severity};

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A trigger of a P1 incident of `tenant`/weather.
pub fn event(tenant: &str, incident: &str, event_id: &str) -> AlertEvent {
    let t = at("2026-11-21T10:00:00Z");
    AlertEvent {
        event_id: event_id.into(),
        incident_id: incident.into(),
        dedup_key: format!("mcpulse/{tenant}/weather/unreachable"),
        action: AlertAction::Trigger,
        status: AlertStatus::Open,
        tenant: tenant.into(),
        server: Some("weather".into()),
        class: "unreachable".into(),
        severity: Severity::P1,
        scope: "global".into(),
        reason: Some("tcp_refused".into()),
        regions: vec!["eu-west".into()],
        time: t,
        opened_at: t,
        resolved_at: None,
        duration_s: None,
        storm_id: None,
        storm: None,
        provider_outage: None,
        summary: "weather unreachable".into(),
        evidence: serde_json::json!({}),
    }
}

/// The resolve of the incident of [`event`], `minutes` later.
pub fn resolved(tenant: &str, incident: &str, event_id: &str, minutes: i64) -> AlertEvent {
    let mut e = event(tenant, incident, event_id);
    e.action = AlertAction::Resolve;
    e.status = AlertStatus::Resolved;
    e.time = e.opened_at + chrono::Duration::minutes(minutes);
    e.resolved_at = Some(e.time);
    e.duration_s = Some(minutes as u64 * 60);
    e
}

/// A notify store in memory.
pub fn memory_store() -> super::store::NotifyStore {
    super::store::NotifyStore::new(mcpulse_processors::archive::ArchiveTarget {
        store: std::sync::Arc::new(object_store::memory::InMemory::new()),
        root: object_store::path::Path::from("archive"),
        local_root: None,
    })
}

/// A store on a local archive under `dir` (journals are append files).
pub fn local_store(dir: &std::path::Path) -> super::store::NotifyStore {
    let root = dir.canonicalize().unwrap();
    super::store::NotifyStore::new(mcpulse_processors::archive::ArchiveTarget {
        store: std::sync::Arc::new(object_store::local::LocalFileSystem::new()),
        root: object_store::path::Path::from(root.to_string_lossy().trim_start_matches('/')),
        local_root: Some(root),
    })
}

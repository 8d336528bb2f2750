//! How an incident transition reads for humans and what kind of change it is: shared by
//! the receivers so a page, a chat message and a mail say the same thing.

use mcpulse_schemas::{AlertAction, AlertEvent, AlertStatus};

use super::text::human_duration;

/// The kind of change a transition is, from its action and the status after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Opened or still open (trigger, update, flapping).
    Open,
    /// Resolved.
    Resolve,
    /// Folded into a storm: its tenant is not paged for it.
    Suppress,
    /// Recovered inside the blip window: never paged.
    Blip,
}

pub(crate) fn change(event: &AlertEvent) -> Change {
    match (event.action, event.status) {
        (AlertAction::Blip, _) => Change::Blip,
        (AlertAction::Resolve, _) | (_, AlertStatus::Resolved) => Change::Resolve,
        (AlertAction::Suppress, _) | (_, AlertStatus::Suppressed) => Change::Suppress,
        _ => Change::Open,
    }
}

/// What the incident is about, stable over its life: `acme/weather unreachable`, or for
/// a storm `storm: render global unreachable`.
pub(crate) fn subject(event: &AlertEvent) -> String {
    match (&event.storm, &event.server) {
        (Some(storm), _) => format!("storm: {} {} {}", storm.provider, storm.region, event.class),
        (None, Some(server)) => format!("{}/{} {}", event.tenant, server, event.class),
        (None, None) => format!("{} {}", event.tenant, event.class),
    }
}

/// `[P1] acme/weather unreachable`.
pub(crate) fn title(event: &AlertEvent) -> String {
    format!("[{}] {}", event.severity.as_str(), subject(event))
}

/// `OPEN`, `FLAPPING`, `RESOLVED after 12m 3s`, `SUPPRESSED (storm …)`, `BLIP`.
pub(crate) fn state_line(event: &AlertEvent) -> String {
    match change(event) {
        Change::Blip => "BLIP (recovered inside the blip window)".into(),
        Change::Resolve => match event.duration_s {
            Some(s) => format!("RESOLVED after {}", human_duration(s)),
            None => "RESOLVED".into(),
        },
        Change::Suppress => match &event.storm_id {
            Some(storm) => format!("SUPPRESSED (part of storm {storm})"),
            None => "SUPPRESSED".into(),
        },
        Change::Open if event.status == AlertStatus::Flapping => "FLAPPING".into(),
        Change::Open => "OPEN".into(),
    }
}

/// The facts of the transition, labelled, in reading order (empty ones left out).
pub(crate) fn facts(event: &AlertEvent) -> Vec<(&'static str, String)> {
    let mut facts = vec![
        ("Status", event.status.as_str().to_owned()),
        ("Severity", event.severity.as_str().to_owned()),
        ("Tenant", event.tenant.clone()),
    ];
    if let Some(server) = &event.server {
        facts.push(("Server", server.clone()));
    }
    facts.push(("Class", event.class.clone()));
    facts.push(("Scope", event.scope.clone()));
    if let Some(reason) = &event.reason {
        facts.push(("Reason", reason.clone()));
    }
    if !event.regions.is_empty() {
        facts.push(("Regions", event.regions.join(", ")));
    }
    facts.push(("Opened", event.opened_at.to_rfc3339()));
    if let Some(at) = event.resolved_at {
        facts.push(("Resolved", at.to_rfc3339()));
    }
    if let Some(s) = event.duration_s {
        facts.push(("Duration", human_duration(s)));
    }
    if let Some(storm) = &event.storm {
        facts.push((
            "Storm",
            format!(
                "{} {}: {} tenants, {} incidents",
                storm.provider, storm.region, storm.tenants, storm.members
            ),
        ));
    }
    if let Some(storm_id) = &event.storm_id {
        facts.push(("Storm incident", storm_id.clone()));
    }
    if let Some(outage) = &event.provider_outage {
        facts.push((
            "Provider outage",
            format!(
                "{} {} ({}) since {}",
                outage.provider,
                outage.region,
                outage.class,
                outage.since.to_rfc3339()
            ),
        ));
    }
    facts.push(("Incident", event.incident_id.clone()));
    facts
}

/// The evidence, pretty-printed (`None` when there is none).
pub(crate) fn evidence(event: &AlertEvent) -> Option<String> {
    match &event.evidence {
        serde_json::Value::Null => None,
        serde_json::Value::Object(map) if map.is_empty() => None,
        value => serde_json::to_string_pretty(value).ok(),
    }
}

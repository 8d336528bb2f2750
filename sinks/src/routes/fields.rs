//! The fields of an [`AlertEvent`] that routes match on and group by.

use std::fmt;
use std::str::FromStr;

use mcpulse_schemas::AlertEvent;

/// A matchable field of an alert event.
///
/// A field the event does not have (no `server` on a storm, no regions, a label it does
/// not carry) reads as the empty string, as a missing label does in Alertmanager. Labels
/// are those of alerts received on the Alertmanager API (`evidence.labels` of `external`
/// incidents); other events carry none.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Tenant,
    Server,
    /// `P1` … `P4`.
    Severity,
    /// The failure class (`unreachable`, `tls`, …, `storm`).
    Class,
    /// `global`, `regional`, `degraded` or `finding`.
    Scope,
    /// `trigger`, `update`, `resolve`, `blip` or `suppress`.
    Action,
    /// `open`, `flapping`, `suppressed` or `resolved`.
    Status,
    /// Multi-valued: a positive matcher holds when any of the event's regions matches, a
    /// negative one when none does.
    Region,
    /// `labels.<name>`: a label of an alert received on the Alertmanager API (the
    /// event's `evidence.labels`); empty when the event has no such label.
    Label(String),
}

/// Names accepted in matchers (besides `labels.<name>`), for error messages.
pub const FIELD_NAMES: &str =
    "tenant, server, severity, class, scope, action, status, region, labels.<name>";

impl Field {
    /// The closed set of values of an enumerated field (`None` for free-form fields).
    pub fn allowed_values(&self) -> Option<&'static [&'static str]> {
        match self {
            Field::Severity => Some(&["P1", "P2", "P3", "P4"]),
            Field::Action => Some(&["trigger", "update", "resolve", "blip", "suppress"]),
            Field::Status => Some(&["open", "flapping", "suppressed", "resolved"]),
            _ => None,
        }
    }

    /// Whether the field can hold several values at once (regions).
    pub fn is_multi_valued(&self) -> bool {
        matches!(self, Field::Region)
    }

    /// Calls `pred` on each value of the field in `event` (the empty string when the
    /// event has none) and says whether any returned true.
    pub fn any_value(&self, event: &AlertEvent, mut pred: impl FnMut(&str) -> bool) -> bool {
        match self {
            Field::Tenant => pred(&event.tenant),
            Field::Server => pred(event.server.as_deref().unwrap_or("")),
            Field::Severity => pred(event.severity.as_str()),
            Field::Class => pred(&event.class),
            Field::Scope => pred(&event.scope),
            Field::Action => pred(event.action.as_str()),
            Field::Status => pred(event.status.as_str()),
            Field::Region if event.regions.is_empty() => pred(""),
            Field::Region => event.regions.iter().any(|r| pred(r)),
            Field::Label(name) => pred(
                event
                    .evidence
                    .get("labels")
                    .and_then(|labels| labels.get(name))
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or(""),
            ),
        }
    }

    /// The field's value as one string (regions sorted and joined with `,`).
    pub fn value(&self, event: &AlertEvent) -> String {
        if let Field::Region = self {
            let mut regions = event.regions.clone();
            regions.sort();
            return regions.join(",");
        }
        let mut out = String::new();
        self.any_value(event, |v| {
            out.push_str(v);
            true
        });
        out
    }
}

impl FromStr for Field {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "tenant" => Field::Tenant,
            "server" => Field::Server,
            "severity" => Field::Severity,
            "class" => Field::Class,
            "scope" => Field::Scope,
            "action" => Field::Action,
            "status" => Field::Status,
            "region" | "regions" => Field::Region,
            _ => match s.strip_prefix("labels.") {
                Some(name) if is_label_name(name) => Field::Label(name.to_string()),
                _ => return Err(format!("unknown field {s:?} (one of {FIELD_NAMES})")),
            },
        })
    }
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Tenant => "tenant",
            Field::Server => "server",
            Field::Severity => "severity",
            Field::Class => "class",
            Field::Scope => "scope",
            Field::Action => "action",
            Field::Status => "status",
            Field::Region => "region",
            Field::Label(name) => return write!(f, "labels.{name}"),
        })
    }
}

/// A `group_by` entry: a field whose value stays the same over an incident's life, or
/// `incident` (one group per incident, by its dedup key).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GroupField {
    Field(Field),
    Incident,
}

impl GroupField {
    /// The value of this entry for `event`.
    pub fn value(&self, event: &AlertEvent) -> String {
        match self {
            GroupField::Field(field) => field.value(event),
            GroupField::Incident => event.dedup_key.clone(),
        }
    }
}

impl TryFrom<String> for GroupField {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s == "incident" {
            return Ok(GroupField::Incident);
        }
        match s.parse::<Field>() {
            Ok(field @ (Field::Action | Field::Status)) => Err(format!(
                "cannot group by {field}: it changes over an incident's life and would split \
                 its notifications (group by tenant, server, severity, class, scope, region, \
                 incident or labels.<name>)"
            )),
            Ok(field) => Ok(GroupField::Field(field)),
            Err(_) => Err(format!(
                "unknown group_by field {s:?} (one of tenant, server, severity, class, scope, \
                 region, incident, labels.<name>)"
            )),
        }
    }
}

impl fmt::Display for GroupField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupField::Field(field) => field.fmt(f),
            GroupField::Incident => f.write_str("incident"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for GroupField {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::de::parse_str(deserializer, "a group_by field", |s| {
            GroupField::try_from(s.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::testutil::event;

    #[test]
    fn parses_every_field_and_refuses_unknown_ones() {
        for name in [
            "tenant", "server", "severity", "class", "scope", "action", "status", "region",
        ] {
            assert_eq!(name.parse::<Field>().unwrap().to_string(), name);
        }
        assert_eq!(
            "labels.team".parse::<Field>().unwrap(),
            Field::Label("team".into())
        );
        let err = "sevrity".parse::<Field>().unwrap_err();
        assert!(
            err.contains("\"sevrity\"") && err.contains("severity"),
            "{err}"
        );
        assert!("labels.".parse::<Field>().is_err());
        assert!("labels.a-b".parse::<Field>().is_err());
    }

    #[test]
    fn reads_values_missing_ones_as_empty() {
        let mut e = event("acme", "weather");
        assert_eq!(Field::Server.value(&e), "weather");
        assert_eq!(Field::Severity.value(&e), "P1");
        assert_eq!(Field::Region.value(&e), "eu-west,us-east");
        assert!(Field::Region.any_value(&e, |r| r == "us-east"));
        assert_eq!(Field::Label("team".into()).value(&e), "");
        e.evidence = serde_json::json!({"labels": {"team": "db", "n": 1}});
        assert_eq!(Field::Label("team".into()).value(&e), "db");
        assert_eq!(Field::Label("n".into()).value(&e), "", "only string values");
        assert_eq!(Field::Label("other".into()).value(&e), "");
        e.server = None;
        e.regions.clear();
        assert_eq!(Field::Server.value(&e), "");
        assert!(Field::Region.any_value(&e, |r| r.is_empty()));
    }

    #[test]
    fn group_by_refuses_fields_that_change_within_an_incident() {
        assert!(GroupField::try_from("status".to_string()).is_err());
        assert!(GroupField::try_from("action".to_string()).is_err());
        assert_eq!(
            GroupField::try_from("incident".to_string()).unwrap(),
            GroupField::Incident
        );
        let e = event("acme", "weather");
        assert_eq!(GroupField::Incident.value(&e), e.dedup_key);
    }
}

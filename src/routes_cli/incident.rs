//! The event `routes test` routes: an [`AlertEvent`] given as JSON (a file, inline, or
//! stdin; any subset of its fields) and/or shorthand flags, the rest filled with plausible
//! defaults.

use std::io::Read;

use chrono::{DateTime, Duration, Utc};
use mcpulse_schemas::alert::OPERATOR_TENANT;
use mcpulse_schemas::{AlertEvent, StormSummary};
use serde_json::{Map, Value, json};

/// Which event to route.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct IncidentArgs {
    /// The event: inline JSON (`{"tenant": "acme", ...}`), a JSON file, or `-` for stdin.
    /// Any subset of the fields of an `alerts.v1` event; the flags below override it and
    /// fill in the rest.
    #[arg(long, value_name = "JSON|FILE")]
    pub incident: Option<String>,
    /// Tenant (default `default`; `_operator` makes a storm notice).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Server (default `example`; none for storms).
    #[arg(long)]
    pub server: Option<String>,
    /// Failure class (default `unreachable`, `storm` for `_operator`).
    #[arg(long)]
    pub class: Option<String>,
    /// P1, P2, P3 or P4 (default P1, P4 for a blip).
    #[arg(long)]
    pub severity: Option<String>,
    /// trigger, update, resolve, blip or suppress (default trigger).
    #[arg(long)]
    pub action: Option<String>,
    /// open, flapping, suppressed or resolved (default: follows the action).
    #[arg(long)]
    pub status: Option<String>,
    /// global, regional, degraded or finding (default global).
    #[arg(long)]
    pub scope: Option<String>,
    /// A failing region (repeatable; default eu-west and us-east).
    #[arg(long = "region", value_name = "REGION")]
    pub regions: Vec<String>,
}

/// An event that cannot be built: names the flag (and field) at fault.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct IncidentError {
    /// `--incident`, `--severity`, …
    pub source_name: String,
    pub message: String,
}

impl IncidentArgs {
    /// The event, with its time `at` when given (else the JSON's `time`, else now).
    pub fn event(&self, at: Option<DateTime<Utc>>) -> Result<AlertEvent, IncidentError> {
        let given = match &self.incident {
            Some(text) => read_json(text)?,
            None => Map::new(),
        };
        let flags = self.flag_fields();
        let pick = |key: &str| -> Option<String> {
            flags
                .get(key)
                .or_else(|| given.get(key))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let time = match (at, given.get("time")) {
            (Some(at), _) => at,
            (None, Some(t)) => serde_json::from_value(t.clone()).map_err(|e| IncidentError {
                source_name: "--incident".into(),
                message: format!("time: {e}"),
            })?,
            (None, None) => Utc::now(),
        };
        let defaults = Defaults {
            tenant: pick("tenant").unwrap_or_else(|| "default".into()),
            action: pick("action").unwrap_or_else(|| "trigger".into()),
            server: pick("server"),
            class: pick("class"),
            time,
        }
        .event();
        let mut merged = defaults;
        merged.extend(given.clone());
        if at.is_some() {
            merged.insert("time".into(), json!(time));
        }
        merged.extend(flags.clone());
        serde_path_to_error::deserialize(Value::Object(merged)).map_err(|e| {
            let path = e.path().to_string();
            let field = path
                .split(['.', '['])
                .next()
                .unwrap_or_default()
                .to_string();
            let field = field.as_str();
            let message = e.into_inner().to_string();
            match flags.contains_key(field) {
                true => IncidentError {
                    source_name: format!("--{}", flag_name(field)),
                    message,
                },
                false if field.is_empty() => IncidentError {
                    source_name: "--incident".into(),
                    message,
                },
                false => IncidentError {
                    source_name: "--incident".into(),
                    message: format!("{path}: {message}"),
                },
            }
        })
    }

    /// The shorthand flags given, as event fields.
    fn flag_fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        let strings = [
            ("tenant", &self.tenant),
            ("server", &self.server),
            ("class", &self.class),
            ("severity", &self.severity),
            ("action", &self.action),
            ("status", &self.status),
            ("scope", &self.scope),
        ];
        for (key, value) in strings {
            if let Some(v) = value {
                fields.insert(key.into(), json!(v));
            }
        }
        if !self.regions.is_empty() {
            fields.insert("regions".into(), json!(self.regions));
        }
        fields
    }
}

fn flag_name(field: &str) -> &str {
    match field {
        "regions" => "region",
        other => other,
    }
}

/// `-` (stdin), inline JSON (starts with `{`), or a file.
fn read_json(text: &str) -> Result<Map<String, Value>, IncidentError> {
    let error = |message: String| IncidentError {
        source_name: "--incident".into(),
        message,
    };
    let json = if text == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| error(format!("cannot read stdin: {e}")))?;
        s
    } else if text.trim_start().starts_with('{') {
        text.to_string()
    } else {
        std::fs::read_to_string(text).map_err(|e| error(format!("cannot read {text}: {e}")))?
    };
    match serde_json::from_str(&json) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(error("expected a JSON object (an alerts.v1 event)".into())),
        Err(e) => Err(error(format!("invalid JSON: {e}"))),
    }
}

/// What the fields not given default to: a plausible event of its action.
struct Defaults {
    tenant: String,
    action: String,
    server: Option<String>,
    class: Option<String>,
    time: DateTime<Utc>,
}

impl Defaults {
    fn event(self) -> Map<String, Value> {
        let storm = self.tenant == OPERATOR_TENANT;
        let server = match storm {
            true => self.server,
            false => Some(self.server.unwrap_or_else(|| "example".into())),
        };
        let class = self.class.unwrap_or_else(|| {
            match storm {
                true => "storm",
                false => "unreachable",
            }
            .into()
        });
        let (status, severity, open_for) = match self.action.as_str() {
            "resolve" => ("resolved", "P1", Some(Duration::minutes(10))),
            "blip" => ("resolved", "P4", Some(Duration::minutes(2))),
            "suppress" => ("suppressed", "P1", None),
            _ => ("open", "P1", None),
        };
        let opened_at = self.time - open_for.unwrap_or_default();
        let subject = server.as_deref().unwrap_or("upstream");
        let dedup_key = match storm {
            true => format!("mcpulse/{OPERATOR_TENANT}/storm/example-provider"),
            false => format!("mcpulse/{}/{subject}/{class}", self.tenant),
        };
        let event = AlertEvent {
            event_id: format!("routes-test-{}", self.action),
            incident_id: "routes-test-incident".into(),
            dedup_key,
            action: mcpulse_schemas::AlertAction::Trigger,
            status: mcpulse_schemas::AlertStatus::Open,
            tenant: self.tenant.clone(),
            server: server.clone(),
            class: class.clone(),
            severity: mcpulse_schemas::Severity::P1,
            scope: "global".into(),
            reason: (!storm).then(|| "tcp_refused".into()),
            regions: match storm {
                true => Vec::new(),
                false => vec!["eu-west".into(), "us-east".into()],
            },
            time: self.time,
            opened_at,
            resolved_at: open_for.map(|_| self.time),
            duration_s: open_for.map(|d| d.num_seconds().unsigned_abs()),
            storm_id: None,
            storm: storm.then(|| StormSummary {
                provider: "example-provider".into(),
                region: "global".into(),
                tenants: 12,
                members: 30,
            }),
            provider_outage: None,
            summary: format!("{subject}: {class} (a test event from mcpulse routes test)"),
            evidence: json!({}),
        };
        let Ok(Value::Object(mut map)) = serde_json::to_value(&event) else {
            unreachable!("an AlertEvent serializes to an object")
        };
        // The action and what follows from it, as strings: an invalid action given by the
        // user is reported by deserialization, not here.
        map.insert("action".into(), json!(self.action));
        map.insert("status".into(), json!(status));
        map.insert("severity".into(), json!(severity));
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpulse_schemas::{AlertAction, AlertStatus, Severity};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn flags_alone_make_a_plausible_event() {
        let args = IncidentArgs {
            tenant: Some("acme".into()),
            server: Some("weather".into()),
            action: Some("resolve".into()),
            ..Default::default()
        };
        let e = args.event(Some(at("2026-01-14T10:00:00Z"))).unwrap();
        assert_eq!(
            (e.tenant.as_str(), e.server.as_deref()),
            ("acme", Some("weather"))
        );
        assert_eq!(
            (e.action, e.status),
            (AlertAction::Resolve, AlertStatus::Resolved)
        );
        assert_eq!(e.duration_s, Some(600));
        assert_eq!(e.dedup_key, "mcpulse/acme/weather/unreachable");
        e.check_boundaries().unwrap();
    }

    #[test]
    fn json_is_completed_and_flags_override_it() {
        let args = IncidentArgs {
            incident: Some(
                r#"{"tenant": "acme", "severity": "P3", "time": "2026-01-14T10:00:00Z"}"#.into(),
            ),
            class: Some("tls".into()),
            ..Default::default()
        };
        let e = args.event(None).unwrap();
        assert_eq!((e.severity, e.class.as_str()), (Severity::P3, "tls"));
        assert_eq!(e.time, at("2026-01-14T10:00:00Z"));
        let storm = IncidentArgs {
            tenant: Some(OPERATOR_TENANT.into()),
            ..Default::default()
        }
        .event(None)
        .unwrap();
        assert!(storm.server.is_none() && storm.storm.is_some());
        storm.check_boundaries().unwrap();
    }

    #[test]
    fn errors_name_the_flag_or_the_field() {
        let bad_flag = IncidentArgs {
            severity: Some("P9".into()),
            ..Default::default()
        };
        let e = bad_flag.event(None).unwrap_err().to_string();
        assert!(e.starts_with("--severity: unknown variant `P9`"), "{e}");
        let bad_json = IncidentArgs {
            incident: Some(r#"{"action": "explode"}"#.into()),
            ..Default::default()
        };
        let e = bad_json.event(None).unwrap_err().to_string();
        assert!(e.starts_with("--incident: action: unknown variant"), "{e}");
        let unknown = IncidentArgs {
            incident: Some(r#"{"sevrity": "P1"}"#.into()),
            ..Default::default()
        };
        let e = unknown.event(None).unwrap_err().to_string();
        assert!(e.contains("unknown field `sevrity`"), "{e}");
    }
}

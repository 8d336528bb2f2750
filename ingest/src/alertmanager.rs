//! `POST /api/v2/alerts`: alerts in the Alertmanager API v2 format (a JSON array of
//! `postableAlert`: `labels`, `annotations`, `startsAt`, `endsAt`, `generatorURL`), so
//! Prometheus and Grafana alert rules can send their alerts through mcpulse's incident
//! stage (dedup, resolve) and routing.
//!
//! Each valid alert becomes one [`ExternalAlert`] record on `findings.v1`, with the
//! tenant of the credential, keyed by [`ExternalAlert::partition_key`]: by its upstream
//! cause when its labels name one (so the incident stage can correlate tenants' alerts
//! into a storm), else by tenant and label fingerprint; either way every re-send of an
//! alert lands in one partition. As Alertmanager does: labels with an empty value are
//! dropped; a missing `startsAt` defaults to `endsAt`, else to the time of receipt; the
//! valid alerts of a request are written even when others are refused, and the request
//! then answers 400 naming each refused alert and its field.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use chrono::{DateTime, Datelike, Utc};
use mcpulse_bus::Message;
use mcpulse_schemas::external::{
    CauseLabels, HEADER_KIND, KIND_EXTERNAL_ALERT, SOURCE_ALERTMANAGER_API, fingerprint,
    valid_label_name,
};
use mcpulse_schemas::topics::{HEADER_CONTENT_TYPE, HEADER_TENANT};
use mcpulse_schemas::{ExternalAlert, Topics};
use serde_json::Value;

use crate::{Backpressure, Edge, IngestError};

/// Most alerts accepted in one request.
pub const MAX_ALERTS_PER_REQUEST: usize = 10_000;

/// Appends alerts received on the Alertmanager API to `findings.v1`.
#[derive(Clone)]
pub struct AlertIngest {
    edge: Edge,
    topic: String,
    cause: CauseLabels,
}

/// A request body, parsed: the valid alerts and why each other one was refused.
#[derive(Debug, Default)]
pub struct Parsed {
    pub alerts: Vec<ExternalAlert>,
    /// `alert [i] field f: …`, one per refused alert.
    pub refused: Vec<String>,
}

impl AlertIngest {
    /// `cause`: the labels naming an alert's upstream cause (the incident stage's
    /// `incidents.external` config), which decide the partition key.
    pub fn new(edge: Edge, topics: &Topics, cause: CauseLabels) -> Self {
        Self {
            edge,
            topic: topics.findings(),
            cause,
        }
    }

    pub fn pressure(&self) -> &Backpressure {
        self.edge.pressure()
    }

    /// Parses `body`, appends its valid alerts and returns how many; when some were
    /// refused, a `BadRequest` naming them (after the valid ones are durable).
    pub async fn ingest(&self, tenant: &str, body: &[u8]) -> Result<usize, IngestError> {
        let parsed = parse(tenant, body, Utc::now())?;
        let n = parsed.alerts.len();
        if n > 0 {
            let messages = parsed
                .alerts
                .iter()
                .map(|a| message(a, &self.cause))
                .collect();
            self.edge.append(&self.topic, messages).await?;
            self.edge
                .stats()
                .alerts_accepted
                .fetch_add(n as u64, Relaxed);
        }
        if parsed.refused.is_empty() {
            return Ok(n);
        }
        let refused = parsed.refused.len();
        Err(IngestError::BadRequest(format!(
            "{refused} of {} alerts refused ({n} accepted): {}",
            refused + n,
            parsed.refused.join("; ")
        )))
    }
}

/// The `findings.v1` message of an alert.
fn message(alert: &ExternalAlert, cause: &CauseLabels) -> Message {
    let value = serde_json::to_vec(alert).expect("external alerts serialize");
    Message::new(Some(Bytes::from(alert.partition_key(cause))), value)
        .with_header(
            HEADER_TENANT,
            Bytes::copy_from_slice(alert.tenant.as_bytes()),
        )
        .with_header(HEADER_CONTENT_TYPE, Bytes::from_static(b"application/json"))
        .with_header(
            HEADER_KIND,
            Bytes::from_static(KIND_EXTERNAL_ALERT.as_bytes()),
        )
}

/// Parses a request body received at `now` for `tenant`. The body as a whole must be a
/// JSON array (else the request is refused whole); each alert is checked on its own.
pub fn parse(tenant: &str, body: &[u8], now: DateTime<Utc>) -> Result<Parsed, IngestError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| IngestError::BadRequest(format!("invalid JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        other => {
            return Err(IngestError::BadRequest(format!(
                "expected a JSON array of alerts (Alertmanager API v2 postableAlerts), got {}",
                json_kind(&other)
            )));
        }
    };
    if items.len() > MAX_ALERTS_PER_REQUEST {
        return Err(IngestError::PayloadTooLarge(format!(
            "more than {MAX_ALERTS_PER_REQUEST} alerts in one request"
        )));
    }
    let mut parsed = Parsed::default();
    for (i, item) in items.into_iter().enumerate() {
        match alert(tenant, item, now) {
            Ok(alert) => parsed.alerts.push(alert),
            Err(problem) => parsed.refused.push(format!("alert [{i}] {problem}")),
        }
    }
    Ok(parsed)
}

/// One `postableAlert`; the error names the field.
fn alert(tenant: &str, item: Value, now: DateTime<Utc>) -> Result<ExternalAlert, String> {
    let mut fields = match item {
        Value::Object(fields) => fields,
        other => return Err(format!("must be an object, got {}", json_kind(&other))),
    };
    let mut labels = match fields.remove("labels") {
        None | Some(Value::Null) => {
            return Err("field labels: required (a map of label names to values)".into());
        }
        Some(v) => string_map("labels", v)?,
    };
    labels.retain(|_, value| !value.is_empty());
    if labels.is_empty() {
        return Err("field labels: at least one label with a non-empty value is required".into());
    }
    let annotations = match fields.remove("annotations") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(v) => string_map("annotations", v)?,
    };
    let starts_at = timestamp("startsAt", fields.remove("startsAt"))?;
    let ends_at = timestamp("endsAt", fields.remove("endsAt"))?;
    if let (Some(start), Some(end)) = (starts_at, ends_at)
        && end < start
    {
        return Err(format!(
            "field endsAt: {} is before startsAt {}",
            end.to_rfc3339(),
            start.to_rfc3339()
        ));
    }
    let generator_url = match fields.remove("generatorURL") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) if url.is_empty() => None,
        Some(Value::String(url)) => Some(url),
        Some(other) => {
            return Err(format!(
                "field generatorURL: must be a string, got {}",
                json_kind(&other)
            ));
        }
    };
    Ok(ExternalAlert {
        tenant: tenant.to_string(),
        fingerprint: fingerprint(&labels),
        labels,
        annotations,
        starts_at: starts_at.or(ends_at).unwrap_or(now),
        ends_at,
        generator_url,
        received_at: now,
        source: SOURCE_ALERTMANAGER_API.to_string(),
    })
}

/// A map of label names to string values (`labels`, `annotations`).
fn string_map(field: &str, value: Value) -> Result<BTreeMap<String, String>, String> {
    let entries = match value {
        Value::Object(entries) => entries,
        other => {
            return Err(format!(
                "field {field}: must be a map of names to string values, got {}",
                json_kind(&other)
            ));
        }
    };
    let mut out = BTreeMap::new();
    for (name, value) in entries {
        if !valid_label_name(&name) {
            return Err(format!(
                "field {field}: invalid name {name:?} (must match [a-zA-Z_][a-zA-Z0-9_]*)"
            ));
        }
        match value {
            Value::String(value) => out.insert(name, value),
            other => {
                return Err(format!(
                    "field {field}.{name}: must be a string, got {}",
                    json_kind(&other)
                ));
            }
        };
    }
    Ok(out)
}

/// An RFC 3339 timestamp; absent, null, empty or Go's zero time (year 1) is unset.
fn timestamp(field: &str, value: Option<Value>) -> Result<Option<DateTime<Utc>>, String> {
    let text = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) if text.is_empty() => return Ok(None),
        Some(Value::String(text)) => text,
        Some(other) => {
            return Err(format!(
                "field {field}: must be an RFC 3339 timestamp string, got {}",
                json_kind(&other)
            ));
        }
    };
    let t = DateTime::parse_from_rfc3339(&text)
        .map_err(|e| {
            format!(
                "field {field}: invalid timestamp {text:?} ({e}; expected RFC 3339 such as \
                 2026-01-02T15:04:05Z)"
            )
        })?
        .with_timezone(&Utc);
    Ok((t.year() > 1).then_some(t))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn one(body: &str) -> Result<ExternalAlert, String> {
        let mut parsed = parse("acme", body.as_bytes(), now()).map_err(|e| e.to_string())?;
        match parsed.refused.pop() {
            Some(problem) => Err(problem),
            None => Ok(parsed.alerts.pop().expect("one alert")),
        }
    }

    #[test]
    fn parses_what_prometheus_sends() {
        let a = one(
            r#"[{"labels":{"alertname":"McpDown","severity":"critical","instance":"10.0.0.7:9100"},
                 "annotations":{"summary":"weather is down"},
                 "startsAt":"2026-11-21T09:58:00.123Z","endsAt":"2026-11-21T10:04:00Z",
                 "generatorURL":"http://prometheus:9090/graph?g0.expr=up"}]"#,
        )
        .unwrap();
        assert_eq!(a.tenant, "acme");
        assert_eq!(a.labels["alertname"], "McpDown");
        assert_eq!(a.annotations["summary"], "weather is down");
        assert_eq!(a.starts_at.to_rfc3339(), "2026-11-21T09:58:00.123+00:00");
        assert_eq!(a.ends_at.unwrap().to_rfc3339(), "2026-11-21T10:04:00+00:00");
        assert!(!a.is_resolved());
        assert_eq!(a.received_at, now());
        assert_eq!(a.fingerprint, fingerprint(&a.labels));
        assert_eq!(a.source, SOURCE_ALERTMANAGER_API);
    }

    #[test]
    fn applies_alertmanagers_defaults() {
        // Only labels: starts now, firing until the resolve timeout.
        let a = one(r#"[{"labels":{"alertname":"X","empty":""}}]"#).unwrap();
        assert_eq!(a.starts_at, now());
        assert_eq!(a.ends_at, None);
        assert!(!a.labels.contains_key("empty"), "empty labels are dropped");
        // Go's zero time (Grafana) is unset; an endsAt alone is also the start.
        let a = one(
            r#"[{"labels":{"alertname":"X"},"startsAt":"0001-01-01T00:00:00Z","endsAt":"2026-11-21T09:00:00Z"}]"#,
        )
        .unwrap();
        assert_eq!(a.starts_at, a.ends_at.unwrap());
        assert!(a.is_resolved());
        assert!(parse("acme", b"[]", now()).unwrap().alerts.is_empty());
    }

    #[test]
    fn errors_name_the_alert_and_field() {
        let cases = [
            (
                r#"[{"annotations":{}}]"#,
                "alert [0] field labels: required",
            ),
            (r#"[{"labels":null}]"#, "alert [0] field labels: required"),
            (
                r#"[{"labels":{}}]"#,
                "alert [0] field labels: at least one label",
            ),
            (
                r#"[{"labels":{"a":""}}]"#,
                "alert [0] field labels: at least one label",
            ),
            (
                r#"[{"labels":["a"]}]"#,
                "alert [0] field labels: must be a map",
            ),
            (
                r#"[{"labels":{"1x":"v"}}]"#,
                "alert [0] field labels: invalid name \"1x\"",
            ),
            (
                r#"[{"labels":{"a-b":"v"}}]"#,
                "alert [0] field labels: invalid name",
            ),
            (
                r#"[{"labels":{"a":1}}]"#,
                "alert [0] field labels.a: must be a string",
            ),
            (
                r#"[{"labels":{"a":"v"},"annotations":{"s":false}}]"#,
                "alert [0] field annotations.s: must be a string",
            ),
            (
                r#"[{"labels":{"a":"v"},"startsAt":"yesterday"}]"#,
                "alert [0] field startsAt: invalid timestamp \"yesterday\"",
            ),
            (
                r#"[{"labels":{"a":"v"},"endsAt":1700000000}]"#,
                "alert [0] field endsAt: must be an RFC 3339 timestamp string",
            ),
            (
                r#"[{"labels":{"a":"v"},"startsAt":"2026-11-21T10:00:00Z","endsAt":"2026-11-21T09:00:00Z"}]"#,
                "alert [0] field endsAt: 2026-11-21T09:00:00+00:00 is before startsAt",
            ),
            (
                r#"[{"labels":{"a":"v"},"generatorURL":5}]"#,
                "alert [0] field generatorURL: must be a string",
            ),
            (r#"["x"]"#, "alert [0] must be an object, got a string"),
        ];
        for (body, expected) in cases {
            let err = one(body).unwrap_err();
            assert!(err.starts_with(expected), "{body}: {err}");
        }
        for (body, expected) in [
            ("{", "invalid JSON"),
            (r#"{"labels":{"a":"v"}}"#, "expected a JSON array of alerts"),
        ] {
            let err = parse("acme", body.as_bytes(), now()).unwrap_err();
            assert!(matches!(err, IngestError::BadRequest(_)), "{err}");
            assert!(err.to_string().starts_with(expected), "{err}");
        }
    }

    #[test]
    fn valid_alerts_of_a_mixed_batch_are_kept() {
        let parsed = parse(
            "acme",
            br#"[{"labels":{"a":"1"}},{"labels":{}},{"labels":{"a":"2"}}]"#,
            now(),
        )
        .unwrap();
        assert_eq!(parsed.alerts.len(), 2);
        assert_eq!(parsed.refused.len(), 1);
        assert!(parsed.refused[0].starts_with("alert [1]"));
    }

    #[test]
    fn too_many_alerts_are_too_large() {
        let body = format!(
            "[{}]",
            vec![r#"{"labels":{"a":"1"}}"#; MAX_ALERTS_PER_REQUEST + 1].join(",")
        );
        assert!(matches!(
            parse("acme", body.as_bytes(), now()),
            Err(IngestError::PayloadTooLarge(_))
        ));
    }

    #[test]
    fn messages_are_keyed_by_tenant_and_fingerprint_with_headers() {
        let a = one(r#"[{"labels":{"alertname":"X"}}]"#).unwrap();
        let m = message(&a, &CauseLabels::default());
        assert_eq!(m.key.as_deref(), Some(a.key().as_bytes()));
        // An alert naming its provider is keyed by its cause, whoever sent it.
        let of_aws =
            one(r#"[{"labels":{"alertname":"X","provider":"aws","region":"eu"}}]"#).unwrap();
        let keyed = message(&of_aws, &CauseLabels::default());
        assert_eq!(keyed.key.as_deref(), Some(&b"external/aws/eu"[..]));
        let header = |name: &str| {
            m.headers
                .iter()
                .find(|h| h.key == name)
                .map(|h| h.value.clone())
        };
        assert_eq!(header(HEADER_TENANT).as_deref(), Some(&b"acme"[..]));
        assert_eq!(
            header(HEADER_KIND).as_deref(),
            Some(KIND_EXTERNAL_ALERT.as_bytes())
        );
        let back: ExternalAlert = serde_json::from_slice(&m.value).unwrap();
        assert_eq!(back, a);
    }
}

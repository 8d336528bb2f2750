//! `POST /v1/probes`: probe results from external probers (and mcpulse's own), as a JSON
//! object, a JSON array or NDJSON. Every result is validated before any is written: a
//! request is accepted whole or rejected whole, with an error naming the item and field.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use mcpulse_bus::Message;
use mcpulse_schemas::topics::{HEADER_CONTENT_TYPE, HEADER_TENANT, tenant_key};
use mcpulse_schemas::{ProbeResult, Topics};
use serde::Deserialize;

use crate::{Backpressure, Edge, IngestError};

/// Most probe results accepted in one request.
pub const MAX_PROBES_PER_REQUEST: usize = 10_000;

/// How a probe request body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeFraming {
    /// `application/json`: one object or an array of objects.
    Json,
    /// `application/x-ndjson`: one object per line.
    Ndjson,
}

/// Appends probe results to `probes.v1`.
#[derive(Clone)]
pub struct ProbeIngest {
    edge: Edge,
    topic: String,
}

impl ProbeIngest {
    pub fn new(edge: Edge, topics: &Topics) -> Self {
        Self {
            edge,
            topic: topics.probes(),
        }
    }

    pub fn pressure(&self) -> &Backpressure {
        self.edge.pressure()
    }

    /// Parses, validates and appends the results in `body`; returns how many were accepted.
    pub async fn ingest(
        &self,
        tenant: &str,
        body: &[u8],
        framing: ProbeFraming,
    ) -> Result<usize, IngestError> {
        let probes = parse(body, framing)?;
        self.append(tenant, probes).await
    }

    /// Validates and appends already-parsed results (used by the built-in prober).
    pub async fn append(
        &self,
        tenant: &str,
        probes: Vec<ProbeResult>,
    ) -> Result<usize, IngestError> {
        let (earliest, latest) = self.edge.window_ns();
        let (earliest, latest) = (
            DateTime::<Utc>::from_timestamp_nanos(earliest as i64),
            DateTime::<Utc>::from_timestamp_nanos(latest as i64),
        );
        for (i, probe) in probes.iter().enumerate() {
            probe.validate(earliest, latest).map_err(|e| {
                IngestError::BadRequest(format!(
                    "probe result [{i}] field {}: {}",
                    e.field, e.message
                ))
            })?;
        }
        let messages: Vec<Message> = probes
            .iter()
            .map(|p| {
                let value = serde_json::to_vec(p).expect("probe results serialize");
                Message::new(Some(Bytes::from(tenant_key(tenant, &p.server))), value)
                    .with_header(HEADER_TENANT, Bytes::copy_from_slice(tenant.as_bytes()))
                    .with_header(HEADER_CONTENT_TYPE, Bytes::from_static(b"application/json"))
            })
            .collect();
        let n = messages.len();
        self.edge.append(&self.topic, messages).await?;
        self.edge
            .stats()
            .probes_accepted
            .fetch_add(n as u64, Relaxed);
        Ok(n)
    }
}

/// Parses a body into probe results, naming the item that is wrong.
pub fn parse(body: &[u8], framing: ProbeFraming) -> Result<Vec<ProbeResult>, IngestError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        IngestError::BadRequest(format!(
            "body is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    let probes =
        match framing {
            ProbeFraming::Json => {
                let value: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| IngestError::BadRequest(format!("invalid JSON: {e}")))?;
                match value {
                    serde_json::Value::Array(items) => {
                        check_count(items.len())?;
                        items
                            .into_iter()
                            .enumerate()
                            .map(|(i, item)| {
                                ProbeResult::deserialize(item).map_err(|e| {
                                    IngestError::BadRequest(format!("probe result [{i}]: {e}"))
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()?
                    }
                    object @ serde_json::Value::Object(_) => vec![
                        ProbeResult::deserialize(object)
                            .map_err(|e| IngestError::BadRequest(format!("probe result: {e}")))?,
                    ],
                    other => {
                        return Err(IngestError::BadRequest(format!(
                            "expected a probe result object or an array of them, got {}",
                            json_kind(&other)
                        )));
                    }
                }
            }
            ProbeFraming::Ndjson => {
                let mut probes = Vec::new();
                for (i, line) in text
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                {
                    check_count(probes.len() + 1)?;
                    probes.push(serde_json::from_str(line).map_err(|e| {
                        IngestError::BadRequest(format!("NDJSON line {}: {e}", i + 1))
                    })?);
                }
                probes
            }
        };
    if probes.is_empty() {
        return Err(IngestError::BadRequest(
            "the request holds no probe results".into(),
        ));
    }
    Ok(probes)
}

fn check_count(n: usize) -> Result<(), IngestError> {
    if n > MAX_PROBES_PER_REQUEST {
        return Err(IngestError::PayloadTooLarge(format!(
            "more than {MAX_PROBES_PER_REQUEST} probe results in one request"
        )));
    }
    Ok(())
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(server: &str) -> String {
        format!(
            r#"{{"server":"{server}","region":"eu","started_at":"{}","ok":true}}"#,
            Utc::now().to_rfc3339()
        )
    }

    #[test]
    fn parses_object_array_and_ndjson() {
        assert_eq!(
            parse(probe("a").as_bytes(), ProbeFraming::Json)
                .unwrap()
                .len(),
            1
        );
        let array = format!("[{},{}]", probe("a"), probe("b"));
        assert_eq!(
            parse(array.as_bytes(), ProbeFraming::Json).unwrap().len(),
            2
        );
        let nd = format!("{}\n\n{}\n", probe("a"), probe("b"));
        let got = parse(nd.as_bytes(), ProbeFraming::Ndjson).unwrap();
        assert_eq!(
            got.iter().map(|p| p.server.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn errors_name_the_item_and_field() {
        let array = format!(r#"[{},{{"region":"eu"}}]"#, probe("a"));
        let err = parse(array.as_bytes(), ProbeFraming::Json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("[1]") && err.contains("server"), "{err}");
        let nd = format!("{}\nnot json\n", probe("a"));
        let err = parse(nd.as_bytes(), ProbeFraming::Ndjson)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("NDJSON line 2"), "{err}");
        assert!(
            parse(b"", ProbeFraming::Ndjson)
                .unwrap_err()
                .to_string()
                .contains("no probe results")
        );
        assert!(parse(b"[]", ProbeFraming::Json).is_err());
        assert!(
            parse(b"42", ProbeFraming::Json)
                .unwrap_err()
                .to_string()
                .contains("a number")
        );
        assert!(
            parse(&[0xff, 0xfe], ProbeFraming::Json)
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
    }
}

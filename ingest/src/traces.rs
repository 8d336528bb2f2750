//! OTLP trace export: validate spans, split by (tenant, service), append to `spans.v1`.
//!
//! Each `ResourceSpans` is routed by its `service.name` to a message keyed
//! `tenant/service` whose value is an `ExportTraceServiceRequest` (the OTel Collector's
//! `otlp_proto` encoding). Spans that fail validation are dropped and reported as a
//! partial success; the rest is acknowledged only once durable in the log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use mcpulse_bus::Message;
use mcpulse_schemas::Topics;
use mcpulse_schemas::tables::spans::SERVICE_NAME_ATTRIBUTE;
use mcpulse_schemas::topics::{HEADER_CONTENT_TYPE, HEADER_TENANT, tenant_key};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use prost::Message as _;

use crate::otlp_scan::scan_request;
use crate::stats::IngestStats;
use crate::{Backpressure, Edge, IngestConfig, IngestError};

/// The service of resources without a `service.name` (as the OTel SDKs name it).
const UNKNOWN_SERVICE: &str = "unknown_service";

/// How many rejection reasons are quoted in a partial-success message.
const MAX_QUOTED_REJECTIONS: usize = 3;

/// The result of an accepted export (possibly partial).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportOutcome {
    pub accepted: u64,
    pub rejected: u64,
    /// Why spans were rejected (empty when none were).
    pub message: String,
}

/// Appends OTLP trace exports to the log.
#[derive(Clone)]
pub struct TraceIngest {
    edge: Edge,
    topic: String,
}

impl TraceIngest {
    pub fn new(edge: Edge, topics: &Topics) -> Self {
        Self {
            edge,
            topic: topics.spans(),
        }
    }

    pub fn pressure(&self) -> &Backpressure {
        self.edge.pressure()
    }

    pub fn config(&self) -> &IngestConfig {
        self.edge.config()
    }

    pub fn stats(&self) -> &Arc<IngestStats> {
        self.edge.stats()
    }

    /// Decodes a protobuf body and exports it.
    pub async fn export_protobuf(
        &self,
        tenant: &str,
        body: Bytes,
    ) -> Result<ExportOutcome, IngestError> {
        let (earliest, latest) = self.edge.window_ns();
        let scan = scan_request(&body, earliest, latest).map_err(|e| {
            IngestError::BadRequest(format!("invalid ExportTraceServiceRequest protobuf: {e}"))
        })?;
        if scan.invalid_spans > 0 {
            // Some spans are refused: decode, filter and re-encode (with the reasons).
            let request = ExportTraceServiceRequest::decode(body.as_ref()).map_err(|e| {
                IngestError::BadRequest(format!("invalid ExportTraceServiceRequest protobuf: {e}"))
            })?;
            return self.export(tenant, request).await;
        }
        let accepted = scan.spans();
        if accepted == 0 {
            return Ok(ExportOutcome::default());
        }
        // Every span is valid: forward the bytes, cut per service by whole fields.
        let mut groups: BTreeMap<String, Vec<std::ops::Range<usize>>> = BTreeMap::new();
        for rs in scan.resource_spans {
            let service = rs.service.unwrap_or_else(|| UNKNOWN_SERVICE.to_string());
            groups.entry(service).or_default().push(rs.field);
        }
        let single = groups.len() == 1;
        let groups = groups.into_iter().map(|(service, fields)| {
            let value = if single {
                body.clone()
            } else {
                let mut value = Vec::with_capacity(fields.iter().map(|f| f.len()).sum());
                for field in fields {
                    value.extend_from_slice(&body[field]);
                }
                Bytes::from(value)
            };
            (service, value)
        });
        self.send(tenant, groups.collect()).await?;
        self.stats().spans_accepted.fetch_add(accepted, Relaxed);
        Ok(ExportOutcome {
            accepted,
            ..ExportOutcome::default()
        })
    }

    /// Validates and appends a decoded request (OTLP/JSON, or protobuf with refused spans).
    pub async fn export(
        &self,
        tenant: &str,
        mut request: ExportTraceServiceRequest,
    ) -> Result<ExportOutcome, IngestError> {
        let mut outcome = ExportOutcome::default();
        let mut reasons = Vec::new();
        let (earliest, latest) = self.edge.window_ns();
        for rs in &mut request.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans
                    .retain(|span| match check_span(span, earliest, latest) {
                        Ok(()) => {
                            outcome.accepted += 1;
                            true
                        }
                        Err(reason) => {
                            outcome.rejected += 1;
                            if reasons.len() < MAX_QUOTED_REJECTIONS {
                                reasons.push(reason);
                            }
                            false
                        }
                    });
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        request
            .resource_spans
            .retain(|rs| !rs.scope_spans.is_empty());
        if outcome.rejected > 0 {
            outcome.message = format!(
                "{} span(s) rejected: {}",
                outcome.rejected,
                reasons.join("; ")
            );
            self.stats()
                .spans_rejected
                .fetch_add(outcome.rejected, Relaxed);
        }
        if outcome.accepted == 0 {
            return Ok(outcome);
        }

        let groups = group_by_service(request.resource_spans)
            .into_iter()
            .map(|(service, resource_spans)| {
                let value = ExportTraceServiceRequest { resource_spans }.encode_to_vec();
                (service, Bytes::from(value))
            })
            .collect();
        self.send(tenant, groups).await?;
        self.stats()
            .spans_accepted
            .fetch_add(outcome.accepted, Relaxed);
        Ok(outcome)
    }

    /// Appends one message per service, keyed `tenant/service`; returns once all are durable.
    async fn send(&self, tenant: &str, groups: Vec<(String, Bytes)>) -> Result<(), IngestError> {
        let messages = groups
            .into_iter()
            .map(|(service, value)| {
                Message::new(Some(Bytes::from(tenant_key(tenant, &service))), value)
                    .with_header(HEADER_TENANT, Bytes::copy_from_slice(tenant.as_bytes()))
                    .with_header(
                        HEADER_CONTENT_TYPE,
                        Bytes::from_static(b"application/x-protobuf"),
                    )
            })
            .collect();
        self.edge.append(&self.topic, messages).await
    }
}

/// Why a span is not accepted, or `Ok`.
fn check_span(span: &Span, earliest: u64, latest: u64) -> Result<(), String> {
    let id = || hex_id(&span.span_id);
    if span.trace_id.len() != 16 || span.trace_id.iter().all(|b| *b == 0) {
        return Err(format!(
            "span {}: trace_id must be 16 bytes and not all zero",
            id()
        ));
    }
    if span.span_id.len() != 8 || span.span_id.iter().all(|b| *b == 0) {
        return Err(format!(
            "span {}: span_id must be 8 bytes and not all zero",
            id()
        ));
    }
    if !(span.parent_span_id.is_empty() || span.parent_span_id.len() == 8) {
        return Err(format!(
            "span {}: parent_span_id must be empty or 8 bytes",
            id()
        ));
    }
    if span.start_time_unix_nano < earliest || span.start_time_unix_nano > latest {
        return Err(format!(
            "span {}: start_time_unix_nano {} is outside the accepted window (too far in the past or future)",
            id(),
            span.start_time_unix_nano
        ));
    }
    if span.end_time_unix_nano < span.start_time_unix_nano {
        return Err(format!(
            "span {}: end_time_unix_nano is before start_time_unix_nano",
            id()
        ));
    }
    Ok(())
}

fn hex_id(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Groups resource spans by `service.name` (in a stable order).
fn group_by_service(resource_spans: Vec<ResourceSpans>) -> BTreeMap<String, Vec<ResourceSpans>> {
    let mut groups: BTreeMap<String, Vec<ResourceSpans>> = BTreeMap::new();
    for rs in resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| {
                r.attributes
                    .iter()
                    .find(|kv| kv.key == SERVICE_NAME_ATTRIBUTE)
            })
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| match &v.value {
                Some(Value::StringValue(s)) if !s.is_empty() => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_else(|| UNKNOWN_SERVICE.to_string());
        groups.entry(service).or_default().push(rs);
    }
    groups
}

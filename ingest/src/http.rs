//! HTTP receivers: OTLP/HTTP (`POST /v1/traces`, protobuf or JSON), the probe results
//! API (`POST /v1/probes`) and the Alertmanager API v2 alerts endpoint
//! (`POST /api/v2/alerts`). Errors follow OTLP/HTTP: a `google.rpc.Status` body in the
//! request's encoding, 4xx for bad input, 429/503 with `Retry-After` when saturated.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;

use crate::probes::ProbeFraming;
use crate::{AlertIngest, Authenticator, ExportOutcome, IngestError, ProbeIngest, TraceIngest};

/// `google.rpc.Status`, the body of OTLP error responses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The two OTLP/HTTP encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

#[derive(Clone)]
struct OtlpState {
    traces: TraceIngest,
    auth: Arc<Authenticator>,
}

/// The OTLP/HTTP router (`POST /v1/traces`), served on its own port (4318 by default).
pub fn otlp_router(traces: TraceIngest, auth: Arc<Authenticator>) -> Router {
    let limit = traces.config().max_request_bytes;
    Router::new()
        .route("/v1/traces", post(export_traces))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(OtlpState { traces, auth })
}

async fn export_traces(
    State(s): State<OtlpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let encoding = match media_type(&headers).as_str() {
        "application/x-protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            let err = IngestError::UnsupportedMediaType(format!(
                "unsupported Content-Type {other:?}: use application/x-protobuf or application/json"
            ));
            return otlp_error(&s.traces, err, Encoding::Json);
        }
    };
    match handle_traces(&s, &headers, body, encoding).await {
        Ok(outcome) => otlp_success(&outcome, encoding),
        Err(err) => otlp_error(&s.traces, err, encoding),
    }
}

async fn handle_traces(
    s: &OtlpState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    encoding: Encoding,
) -> Result<ExportOutcome, IngestError> {
    let principal = s
        .auth
        .authenticate(headers.get(AUTHORIZATION).map(HeaderValue::as_bytes))?;
    let tenant = principal.tenant()?;
    let body = read_body(headers, body, s.traces.config().max_decompressed_bytes)?;
    let _permit = s.traces.pressure().admit(body.len())?;
    match encoding {
        Encoding::Protobuf => s.traces.export_protobuf(tenant, body).await,
        Encoding::Json => {
            let request: ExportTraceServiceRequest =
                serde_json::from_slice(&body).map_err(|e| {
                    IngestError::BadRequest(format!(
                        "invalid OTLP/JSON ExportTraceServiceRequest: {e}"
                    ))
                })?;
            s.traces.export(tenant, request).await
        }
    }
}

fn otlp_success(outcome: &ExportOutcome, encoding: Encoding) -> Response {
    let partial = (outcome.rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: outcome.rejected as i64,
        error_message: outcome.message.clone(),
    });
    let body = match encoding {
        Encoding::Protobuf => ExportTraceServiceResponse {
            partial_success: partial,
        }
        .encode_to_vec(),
        Encoding::Json => {
            let value = match partial {
                // Protobuf JSON mapping: int64 as a string.
                Some(p) => serde_json::json!({"partialSuccess": {
                    "rejectedSpans": p.rejected_spans.to_string(),
                    "errorMessage": p.error_message,
                }}),
                None => serde_json::json!({}),
            };
            serde_json::to_vec(&value).expect("JSON serializes")
        }
    };
    (
        StatusCode::OK,
        [(CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

fn otlp_error(traces: &TraceIngest, err: IngestError, encoding: Encoding) -> Response {
    count_refusal(traces.stats(), &err);
    let status = RpcStatus {
        code: err.grpc_code() as i32,
        message: err.to_string(),
    };
    let body = match encoding {
        Encoding::Protobuf => status.encode_to_vec(),
        Encoding::Json => {
            serde_json::to_vec(&serde_json::json!({"code": status.code, "message": status.message}))
                .expect("JSON")
        }
    };
    let mut response = (
        err.http_status(),
        [(CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response();
    decorate(&mut response, &err);
    response
}

/// Adds `Retry-After` to retryable errors and `WWW-Authenticate` to 401s.
fn decorate(response: &mut Response, err: &IngestError) {
    if let Some(after) = err.retry_after() {
        let secs = after.as_secs().max(1).to_string();
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_str(&secs).expect("digits"));
    }
    if matches!(err, IngestError::Unauthenticated(_)) {
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"mcpulse\""),
        );
    }
}

fn count_refusal(stats: &crate::stats::IngestStats, err: &IngestError) {
    if err.is_retryable() {
        stats.requests_throttled.fetch_add(1, Relaxed);
    } else {
        stats.requests_refused.fetch_add(1, Relaxed);
    }
}

/// The media type of `Content-Type`, lower-cased (it is case-insensitive), without
/// parameters; empty when the header is missing or unreadable.
fn media_type(headers: &HeaderMap) -> String {
    let value = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The request body, decompressed when `Content-Encoding: gzip`, within the limits.
pub fn read_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    max_decompressed: usize,
) -> Result<Bytes, IngestError> {
    let body = body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(e) if e.to_string().contains("length limit") => {
            IngestError::PayloadTooLarge(format!("request body exceeds the limit: {e}"))
        }
        other => IngestError::BadRequest(format!(
            "could not read the request body (truncated?): {other}"
        )),
    })?;
    let encoding = headers
        .get(CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => {
            if body.len() > max_decompressed {
                return Err(IngestError::PayloadTooLarge(format!(
                    "request body exceeds {max_decompressed} bytes"
                )));
            }
            Ok(body)
        }
        Some("gzip") => {
            let mut out = Vec::with_capacity(body.len() * 4);
            flate2::read::GzDecoder::new(body.as_ref())
                .take(max_decompressed as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| IngestError::BadRequest(format!("invalid gzip body: {e}")))?;
            if out.len() > max_decompressed {
                return Err(IngestError::PayloadTooLarge(format!(
                    "decompressed request body exceeds {max_decompressed} bytes"
                )));
            }
            Ok(Bytes::from(out))
        }
        Some(other) => Err(IngestError::UnsupportedMediaType(format!(
            "unsupported Content-Encoding {other:?}: use gzip or none"
        ))),
    }
}

#[derive(Clone)]
struct ProbeState {
    probes: ProbeIngest,
    auth: Arc<Authenticator>,
    max_request: usize,
    max_decompressed: usize,
}

/// The probe results API (`POST /v1/probes`), served on the API port.
pub fn probe_router(
    probes: ProbeIngest,
    auth: Arc<Authenticator>,
    config: &crate::IngestConfig,
) -> Router {
    let state = ProbeState {
        probes,
        auth,
        max_request: config.max_request_bytes,
        max_decompressed: config.max_decompressed_bytes,
    };
    Router::new()
        .route("/v1/probes", post(post_probes))
        .layer(DefaultBodyLimit::max(state.max_request))
        .with_state(state)
}

async fn post_probes(
    State(s): State<ProbeState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle_probes(&s, &headers, body).await {
        Ok(n) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"accepted": n})),
        )
            .into_response(),
        Err(err) => json_error(err),
    }
}

async fn handle_probes(
    s: &ProbeState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<usize, IngestError> {
    let principal = s
        .auth
        .authenticate(headers.get(AUTHORIZATION).map(HeaderValue::as_bytes))?;
    let tenant = principal.tenant()?;
    let framing = match media_type(headers).as_str() {
        "application/json" => ProbeFraming::Json,
        "application/x-ndjson" | "application/jsonl" => ProbeFraming::Ndjson,
        other => {
            return Err(IngestError::UnsupportedMediaType(format!(
                "unsupported Content-Type {other:?}: use application/json or application/x-ndjson"
            )));
        }
    };
    let body = read_body(headers, body, s.max_decompressed)?;
    let _permit = s.probes.pressure().admit(body.len())?;
    s.probes.ingest(tenant, &body, framing).await
}

#[derive(Clone)]
struct AlertState {
    alerts: AlertIngest,
    auth: Arc<Authenticator>,
    max_decompressed: usize,
}

/// The Alertmanager API v2 alerts endpoint (`POST /api/v2/alerts`), served on the API
/// port. Answers as Alertmanager does: 200 with an empty body once the alerts are durable.
pub fn alertmanager_router(
    alerts: AlertIngest,
    auth: Arc<Authenticator>,
    config: &crate::IngestConfig,
) -> Router {
    let state = AlertState {
        alerts,
        auth,
        max_decompressed: config.max_decompressed_bytes,
    };
    Router::new()
        .route("/api/v2/alerts", post(post_alerts))
        .layer(DefaultBodyLimit::max(config.max_request_bytes))
        .with_state(state)
}

async fn post_alerts(
    State(s): State<AlertState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle_alerts(&s, &headers, body).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(err) => json_error(err),
    }
}

async fn handle_alerts(
    s: &AlertState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<usize, IngestError> {
    let principal = s
        .auth
        .authenticate(headers.get(AUTHORIZATION).map(HeaderValue::as_bytes))?;
    let tenant = principal.tenant()?;
    // Prometheus and Grafana send application/json; a client that sends none is let in.
    match media_type(headers).as_str() {
        "application/json" | "" => {}
        other => {
            return Err(IngestError::UnsupportedMediaType(format!(
                "unsupported Content-Type {other:?}: use application/json"
            )));
        }
    }
    let body = read_body(headers, body, s.max_decompressed)?;
    let _permit = s.alerts.pressure().admit(body.len())?;
    s.alerts.ingest(tenant, &body).await
}

/// A JSON error response `{"error": "..."}` with the status of `err`.
pub fn json_error(err: IngestError) -> Response {
    let mut response = (
        err.http_status(),
        axum::Json(serde_json::json!({"error": err.to_string()})),
    )
        .into_response();
    decorate(&mut response, &err);
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use http::Request;
    use mcpulse_bus::Bus;
    use mcpulse_bus::embedded::{EmbeddedBus, EmbeddedConfig};
    use mcpulse_schemas::Topics;
    use tower::ServiceExt;

    use super::*;
    use crate::auth::{AuthConfig, TenantConfig};
    use crate::stats::IngestStats;
    use crate::{Backpressure, IngestConfig};

    const TOKEN: &str = "tenant-token-1";

    fn router(dir: &std::path::Path, pressure: Backpressure) -> (Router, Arc<EmbeddedBus>) {
        let bus = EmbeddedBus::open(EmbeddedConfig::new(dir)).unwrap();
        let auth = Authenticator::new(&AuthConfig {
            tenants: vec![TenantConfig {
                id: "acme".into(),
                tokens: vec![TOKEN.into()],
            }],
            ..AuthConfig::default()
        })
        .unwrap();
        let stats = Arc::new(IngestStats::default());
        let edge = crate::Edge::new(bus.producer(), IngestConfig::default(), pressure, stats);
        let traces = TraceIngest::new(edge, &Topics::default());
        (otlp_router(traces, Arc::new(auth)), bus)
    }

    fn export(body: Vec<u8>) -> Request<Body> {
        Request::post("/v1/traces")
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::from(body))
            .unwrap()
    }

    fn alerts_app(dir: &std::path::Path, max_request_bytes: usize) -> (Router, Arc<EmbeddedBus>) {
        let bus = EmbeddedBus::open(EmbeddedConfig::new(dir)).unwrap();
        let auth = Authenticator::new(&AuthConfig {
            tenants: vec![TenantConfig {
                id: "acme".into(),
                tokens: vec![TOKEN.into()],
            }],
            operators: vec![crate::auth::OperatorConfig {
                name: "ops".into(),
                tokens: vec!["operator-token-1".into()],
            }],
            ..AuthConfig::default()
        })
        .unwrap();
        let config = IngestConfig {
            max_request_bytes,
            ..IngestConfig::default()
        };
        let edge = crate::Edge::new(
            bus.producer(),
            config.clone(),
            Backpressure::new(1 << 20, u64::MAX, Duration::from_secs(1)),
            Arc::new(IngestStats::default()),
        );
        let alerts = AlertIngest::new(
            edge,
            &Topics::default(),
            mcpulse_schemas::external::CauseLabels::default(),
        );
        (alertmanager_router(alerts, Arc::new(auth), &config), bus)
    }

    fn post_alerts_request(token: Option<&str>, body: &str) -> Request<Body> {
        let mut request = Request::post("/api/v2/alerts").header(CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(Body::from(body.to_owned())).unwrap()
    }

    async fn answer(app: &Router, request: Request<Body>) -> (StatusCode, String) {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// The records on `findings.v1` (waits at most 5 s for `n`).
    async fn findings(bus: &EmbeddedBus, group: &str, n: usize) -> Vec<mcpulse_bus::Record> {
        let mut consumer = bus
            .consumer(group, &[Topics::default().findings()])
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut records = Vec::new();
        while records.len() < n && std::time::Instant::now() < deadline {
            if let mcpulse_bus::ConsumerEvent::Records(batch) =
                consumer.poll(Duration::from_millis(100)).await.unwrap()
            {
                records.extend(batch);
            }
        }
        records
    }

    #[tokio::test]
    async fn alertmanager_api_answers_like_alertmanager() {
        let dir = tempfile::tempdir().unwrap();
        let (app, bus) = alerts_app(dir.path(), 4096);
        let body = r#"[{"labels":{"alertname":"McpDown","severity":"critical"},"annotations":{"summary":"down"}}]"#;

        let (status, text) = answer(&app, post_alerts_request(Some(TOKEN), body)).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(text, "", "an empty body, as Alertmanager answers");
        let records = findings(&bus, "first", 1).await;
        assert_eq!(records.len(), 1);
        assert_eq!(
            records[0]
                .header(mcpulse_schemas::external::HEADER_KIND)
                .map(|v| v.as_ref()),
            Some(mcpulse_schemas::external::KIND_EXTERNAL_ALERT.as_bytes())
        );
        let alert: mcpulse_schemas::ExternalAlert =
            serde_json::from_slice(&records[0].value).unwrap();
        assert_eq!(alert.tenant, "acme", "the tenant of the token");

        // No token, a wrong one: 401 with the challenge. An operator token: 403.
        for token in [None, Some("wrong-token")] {
            let response = app
                .clone()
                .oneshot(post_alerts_request(token, body))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert!(response.headers().contains_key(WWW_AUTHENTICATE));
        }
        let (status, _) = answer(&app, post_alerts_request(Some("operator-token-1"), body)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        // Bad input: 400 naming the alert and field.
        let (status, text) = answer(
            &app,
            post_alerts_request(
                Some(TOKEN),
                r#"[{"labels":{"alertname":"X"},"startsAt":"soon"}]"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("alert [0] field startsAt"), "{text}");
        let (status, text) = answer(&app, post_alerts_request(Some(TOKEN), r#"[{}]"#)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("field labels: required"), "{text}");

        // Over the body limit: 413. Not JSON: 415.
        let big = format!(
            r#"[{{"labels":{{"alertname":"X"}},"annotations":{{"d":"{}"}}}}]"#,
            "x".repeat(8192)
        );
        let (status, _) = answer(&app, post_alerts_request(Some(TOKEN), &big)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let request = Request::post("/api/v2/alerts")
            .header(CONTENT_TYPE, "text/plain")
            .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::from(body))
            .unwrap();
        let (status, _) = answer(&app, request).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        // Nothing of the refused requests was written.
        assert_eq!(findings(&bus, "second", 2).await.len(), 1);
    }

    #[test]
    fn media_type_ignores_case_and_parameters() {
        let mut headers = HeaderMap::new();
        assert_eq!(media_type(&headers), "");
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Application/X-Protobuf; charset=utf-8"),
        );
        assert_eq!(media_type(&headers), "application/x-protobuf");
    }

    #[tokio::test]
    async fn too_much_in_flight_answers_503_with_retry_after() {
        let dir = tempfile::tempdir().unwrap();
        let pressure = Backpressure::new(1024, u64::MAX, Duration::from_secs(2));
        let (app, _bus) = router(dir.path(), pressure.clone());
        // Another request holds the whole in-flight budget.
        let held = pressure.admit(1024).unwrap();
        let response = app.clone().oneshot(export(Vec::new())).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "2");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let status = RpcStatus::decode(body).unwrap();
        assert_eq!(status.code, tonic::Code::Unavailable as i32);
        assert!(status.message.contains("in flight"), "{}", status.message);
        drop(held);
        let response = app.oneshot(export(Vec::new())).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn log_failure_is_retryable_and_nothing_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (app, bus) = router(
            dir.path(),
            Backpressure::new(1 << 20, u64::MAX, Duration::from_secs(1)),
        );
        bus.shutdown().await.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let span = opentelemetry_proto::tonic::trace::v1::Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            start_time_unix_nano: now,
            end_time_unix_nano: now,
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![opentelemetry_proto::tonic::trace::v1::ResourceSpans {
                scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let response = app.oneshot(export(request.encode_to_vec())).await.unwrap();
        assert_ne!(response.status(), StatusCode::OK);
        assert!(response.status().is_server_error(), "{}", response.status());
    }
}

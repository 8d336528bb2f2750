//! `POST /api/v1/query`: SQL over HTTP, tenant-scoped by the caller's token.
//!
//! Body: `{"sql": "..."}` or `{"named": "uptime_30d", "params": {"server": "weather"}}`,
//! with optional `"format"` (`json`, `csv`, `ndjson`, `arrow`, `table`) and `"max_rows"`
//! (lowered to `query.max_rows` at most); or the SQL itself as `text/plain` with
//! `?format=`. Without a format the `Accept` header decides (`application/json`,
//! `text/csv`, `application/x-ndjson`, `application/vnd.apache.arrow.stream`,
//! `text/plain`), else JSON.
//!
//! Answers 200 with the rows; 400 for bad SQL or a bad named query (naming the
//! parameter), 401 without a valid token, 504 when planning passes the timeout, 503
//! when the archive cannot be read. A result that fits in the first chunk
//! ([`STREAM_AFTER_BYTES`]) is sent whole, with `X-Mcpulse-Truncated: true|false`; a
//! larger one is streamed as it is computed (chunked, `X-Mcpulse-Streamed: true`,
//! `X-Mcpulse-Row-Limit: N`): it ends after N rows at most, and an error or the timeout
//! in the middle cuts the body short (the client sees an incomplete document).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;

use crate::engine::Request;
use crate::format::Encoder;
use crate::{OutputFormat, QueryEngine, QueryError, Scope};

/// Results up to this many encoded bytes are answered in one piece (with an exact
/// `X-Mcpulse-Truncated`); beyond it the response streams.
pub const STREAM_AFTER_BYTES: usize = 1 << 20;

/// Decides the scope of a request from its headers, or refuses it (status, message).
pub type Authorize = Arc<dyn Fn(&HeaderMap) -> Result<Scope, (StatusCode, String)> + Send + Sync>;

#[derive(Clone)]
struct QueryState {
    engine: QueryEngine,
    authorize: Authorize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    /// Free SQL (one read-only statement).
    #[serde(default)]
    sql: Option<String>,
    /// Or a named query (`mcpulse query --list-named`)...
    #[serde(default)]
    named: Option<String>,
    /// ...and its parameters (strings, numbers or booleans).
    #[serde(default)]
    params: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    format: Option<OutputFormat>,
    /// At most this many rows (never more than `query.max_rows`).
    #[serde(default)]
    max_rows: Option<usize>,
}

#[derive(Deserialize)]
struct QueryParams {
    format: Option<OutputFormat>,
    max_rows: Option<usize>,
}

/// The SQL endpoint router.
pub fn query_router(engine: QueryEngine, authorize: Authorize) -> Router {
    Router::new()
        .route("/api/v1/query", post(query))
        .with_state(QueryState { engine, authorize })
}

fn parse_body(
    headers: &HeaderMap,
    params: &QueryParams,
    body: &[u8],
) -> Result<(Request, Option<OutputFormat>, Option<usize>), String> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        let sql = String::from_utf8(body.to_vec()).map_err(|_| "the SQL is not valid UTF-8")?;
        if sql.trim().is_empty() {
            return Err("empty SQL".into());
        }
        return Ok((Request::sql(sql), params.format, params.max_rows));
    }
    let b: QueryBody =
        serde_json::from_slice(body).map_err(|e| format!("invalid query body: {e}"))?;
    let request = match (b.sql, b.named) {
        (Some(_), Some(_)) => return Err("give either \"sql\" or \"named\", not both".into()),
        (None, None) => return Err("missing \"sql\" (or \"named\")".into()),
        (Some(sql), None) => {
            if !b.params.is_empty() {
                return Err("\"params\" go with \"named\" queries".into());
            }
            if sql.trim().is_empty() {
                return Err("empty SQL".into());
            }
            Request::sql(sql)
        }
        (None, Some(name)) => {
            let mut params = BTreeMap::new();
            for (key, value) in b.params {
                let text = match value {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(format!(
                            "parameter {key:?}: expected a string, number or boolean, got {other}"
                        ));
                    }
                };
                params.insert(key, text);
            }
            Request::Named { name, params }
        }
    };
    Ok((
        request,
        b.format.or(params.format),
        b.max_rows.or(params.max_rows),
    ))
}

async fn query(
    State(s): State<QueryState>,
    Query(params): Query<QueryParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let scope = match (s.authorize)(&headers) {
        Ok(scope) => scope,
        Err((status, message)) => return error(status, &message),
    };
    let (request, format, max_rows) = match parse_body(&headers, &params, &body) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let format = format
        .or_else(|| {
            headers
                .get(ACCEPT)
                .and_then(|v| v.to_str().ok())
                .and_then(OutputFormat::from_accept)
        })
        .unwrap_or(OutputFormat::Json);
    let mut rows = match s.engine.stream(&scope, &request, max_rows).await {
        Ok(rows) => rows,
        Err(e) => return query_error(&e),
    };
    let mut encoder = match Encoder::new(format, rows.schema.clone()) {
        Ok(encoder) => encoder,
        Err(e) => return render_error(e),
    };
    // The first chunk: the whole result when it is small.
    let mut head = Vec::new();
    let mut ended = false;
    while !(format.streams() && head.len() >= STREAM_AFTER_BYTES) {
        match rows.next().await {
            None => {
                ended = true;
                break;
            }
            Some(Err(e)) => return query_error(&e),
            Some(Ok(batch)) => match encoder.push(&batch) {
                Ok(bytes) => head.extend(bytes),
                Err(e) => return render_error(e),
            },
        }
    }
    let content_type = HeaderValue::from_static(format.content_type());
    if ended {
        match encoder.finish() {
            Ok(bytes) => head.extend(bytes),
            Err(e) => return render_error(e),
        }
        let truncated = if rows.truncated() { "true" } else { "false" };
        return (
            StatusCode::OK,
            [
                (CONTENT_TYPE, content_type),
                (
                    http::HeaderName::from_static("x-mcpulse-truncated"),
                    HeaderValue::from_static(truncated),
                ),
            ],
            head,
        )
            .into_response();
    }
    let limit = rows.max_rows;
    let (_, _, batches) = rows.into_stream();
    let tail = futures::stream::unfold(
        (batches, Some(encoder)),
        |(mut batches, encoder)| async move {
            let mut encoder = encoder?;
            use futures::StreamExt;
            match batches.next().await {
                Some(Ok(batch)) => match encoder.push(&batch) {
                    Ok(bytes) => Some((Ok(Bytes::from(bytes)), (batches, Some(encoder)))),
                    Err(e) => Some((Err(std::io::Error::other(e)), (batches, None))),
                },
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "streamed query failed after the first chunk");
                    Some((Err(std::io::Error::other(e)), (batches, None)))
                }
                None => match encoder.finish() {
                    Ok(bytes) => Some((Ok(Bytes::from(bytes)), (batches, None))),
                    Err(e) => Some((Err(std::io::Error::other(e)), (batches, None))),
                },
            }
        },
    );
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) })
        .chain(tail);
    use futures::StreamExt;
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(
        http::HeaderName::from_static("x-mcpulse-streamed"),
        HeaderValue::from_static("true"),
    );
    headers.insert(
        http::HeaderName::from_static("x-mcpulse-row-limit"),
        HeaderValue::from(limit),
    );
    response
}

fn query_error(e: &QueryError) -> Response {
    let status = match e {
        QueryError::Sql(_) | QueryError::NotAllowed(_) | QueryError::Named(_) => {
            StatusCode::BAD_REQUEST
        }
        QueryError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        QueryError::Archive(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, &e.to_string())
}

fn render_error(e: impl std::fmt::Display) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("rendering the result failed: {e}"),
    )
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({"error": message}))).into_response()
}

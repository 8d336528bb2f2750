//! `POST /api/v1/query`: SQL over HTTP, tenant-scoped by the caller's token.
//!
//! Body: `{"sql": "...", "format": "json"|"csv"|"ndjson"|"table"}` (format defaults to
//! json), or the SQL itself as `text/plain` with `?format=`. Answers 200 with the rows
//! (`X-Mcpulse-Truncated: true` when cut at the row limit), 400 for bad SQL, 401 without
//! a valid token, 504 on timeout.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use crate::{OutputFormat, QueryEngine, QueryError, Scope};

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
    sql: String,
    #[serde(default)]
    format: Option<OutputFormat>,
}

#[derive(Deserialize)]
struct QueryParams {
    format: Option<OutputFormat>,
}

/// The SQL endpoint router.
pub fn query_router(engine: QueryEngine, authorize: Authorize) -> Router {
    Router::new()
        .route("/api/v1/query", post(query))
        .with_state(QueryState { engine, authorize })
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
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (sql, format) = if is_json {
        match serde_json::from_slice::<QueryBody>(&body) {
            Ok(b) => (
                b.sql,
                b.format.or(params.format).unwrap_or(OutputFormat::Json),
            ),
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid query body: {e}")),
        }
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(sql) => (sql, params.format.unwrap_or(OutputFormat::Json)),
            Err(_) => return error(StatusCode::BAD_REQUEST, "the SQL is not valid UTF-8"),
        }
    };
    if sql.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "empty SQL");
    }
    match s.engine.execute(&scope, &sql).await {
        Ok(result) => match format.render(&result.schema, &result.batches) {
            Ok(bytes) => {
                let truncated = if result.truncated { "true" } else { "false" };
                (
                    StatusCode::OK,
                    [
                        (CONTENT_TYPE, format.content_type()),
                        (
                            http::HeaderName::from_static("x-mcpulse-truncated"),
                            truncated,
                        ),
                    ],
                    bytes,
                )
                    .into_response()
            }
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("rendering the result failed: {e}"),
            ),
        },
        Err(e) => {
            let status = match &e {
                QueryError::Sql(_) | QueryError::NotAllowed(_) => StatusCode::BAD_REQUEST,
                QueryError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                QueryError::Archive(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            error(status, &e.to_string())
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({"error": message}))).into_response()
}

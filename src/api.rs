//! The API port: probe results, SQL, health, readiness and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use mcpulse_ingest::{Authenticator, Principal};
use mcpulse_queries::Scope;
use mcpulse_queries::http::Authorize;
use mcpulse_schemas::metrics::{MetricsSource, PromWriter};

/// What `/metrics`, `/healthz` and `/readyz` report.
#[derive(Clone)]
pub struct Health {
    pub ready: Arc<AtomicBool>,
    pub sources: Arc<Vec<Arc<dyn MetricsSource>>>,
}

/// Health, readiness and metrics routes.
pub fn health_router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    if h.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting or draining\n")
    }
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    let mut out = PromWriter::default();
    for source in h.sources.iter() {
        source.render(&mut out);
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], out.finish())
}

/// Query scoping from bearer tokens: tenants see their rows, operators everything.
pub fn authorize_queries(auth: Arc<Authenticator>) -> Authorize {
    Arc::new(move |headers: &HeaderMap| {
        match auth.authenticate(headers.get(AUTHORIZATION).map(|v| v.as_bytes())) {
            Ok(Principal::Tenant(t)) => Ok(Scope::Tenant(t)),
            Ok(Principal::Operator(_)) => Ok(Scope::All),
            Err(e) => Err((StatusCode::UNAUTHORIZED, e.to_string())),
        }
    })
}

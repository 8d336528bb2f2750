//! The API port: probe results, SQL, silences, health, readiness and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use chrono::Utc;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};
use mcpulse_ingest::{Authenticator, Principal};
use mcpulse_queries::Scope;
use mcpulse_queries::http::Authorize;
use mcpulse_schemas::metrics::{MetricsSource, PromWriter, Viewer};
use mcpulse_sinks::routes::{Silence, SilenceError, SilenceSet};

use crate::routes_cli::silences::{NewSilence, SilenceStore, SilenceView, StoreError, new_id};

/// What `/metrics`, `/healthz` and `/readyz` report.
#[derive(Clone)]
pub struct Health {
    pub ready: Arc<AtomicBool>,
    pub sources: Arc<Vec<Arc<dyn MetricsSource>>>,
    /// Scopes the tenant-labelled series of `/metrics` (the live golden signals) by the
    /// scrape's bearer token; `None`: the role has none, every scrape is public.
    pub auth: Option<Arc<Authenticator>>,
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

/// `GET /metrics`: the process's own metrics for anyone; series labelled with a tenant
/// for the tenants the bearer token may see (an operator's: all; a tenant's: its own;
/// none: `auth.anonymous_tenant`'s, if set, else none). A token that is not valid is a
/// 401, so a misconfigured scrape fails loudly instead of silently missing series.
async fn metrics(State(h): State<Health>, headers: HeaderMap) -> Response {
    let viewer = match &h.auth {
        None => Viewer::Public,
        Some(auth) => {
            let header = headers.get(AUTHORIZATION);
            match auth.authenticate(header.map(|v| v.as_bytes())) {
                Ok(Principal::Operator(_)) => Viewer::Operator,
                Ok(Principal::Tenant(t)) => Viewer::Tenant(t),
                Err(_) if header.is_none() => Viewer::Public,
                Err(e) => return unauthorized(&e.to_string()),
            }
        }
    };
    let mut out = PromWriter::for_viewer(viewer);
    for source in h.sources.iter() {
        source.render(&mut out);
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], out.finish()).into_response()
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

/// The silences API on the API port, over `{data_dir}/silences.json`:
///
/// - `GET /api/v1/silences`: `{"silences": [...]}`, every silence the caller may see
///   (expired ones included, kept 30 days), each with its `state` (pending, active,
///   expired);
/// - `POST /api/v1/silences`: a JSON [`NewSilence`] (`matchers`, `ends_at` or
///   `duration`, `starts_at`, `comment`, `created_by`, `tenant`); 201 with the silence;
/// - `DELETE /api/v1/silences/{id}`: expires it now; 200 with the silence.
///
/// An operator token sees and manages every silence. A tenant token sees and expires
/// only its own tenant's silences (another tenant's is a 404), and every silence it
/// creates belongs to its tenant (naming another tenant is a 403). Bad input is a 400
/// naming the field; no or a wrong token a 401.
pub fn silences_router(store: SilenceStore, auth: Arc<Authenticator>) -> Router {
    Router::new()
        .route("/api/v1/silences", get(list_silences).post(create_silence))
        .route("/api/v1/silences/{id}", delete(expire_silence))
        .with_state(SilencesApi { store, auth })
}

#[derive(Clone)]
struct SilencesApi {
    store: SilenceStore,
    auth: Arc<Authenticator>,
}

impl SilencesApi {
    /// The caller's tenant (`None` for operators), or why it is not authenticated.
    fn caller(&self, headers: &HeaderMap) -> Result<Option<String>, String> {
        match self
            .auth
            .authenticate(headers.get(AUTHORIZATION).map(|v| v.as_bytes()))
        {
            Ok(Principal::Tenant(t)) => Ok(Some(t)),
            Ok(Principal::Operator(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Runs a change of the silences file off the async threads.
    async fn update<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut SilenceSet) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        let path = store.path().to_path_buf();
        tokio::task::spawn_blocking(move || store.update(Utc::now(), change))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Io {
                    path,
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }
}

/// Whether a caller (`None`: an operator) may see and manage `silence`.
fn may_manage(tenant: Option<&str>, silence: &Silence) -> bool {
    tenant.is_none_or(|t| silence.tenant.as_deref() == Some(t))
}

async fn list_silences(State(api): State<SilencesApi>, headers: HeaderMap) -> Response {
    let tenant = match api.caller(&headers) {
        Ok(t) => t,
        Err(message) => return unauthorized(&message),
    };
    let store = api.store.clone();
    let set = match tokio::task::spawn_blocking(move || store.load()).await {
        Ok(Ok(set)) => set,
        Ok(Err(e)) => return store_error(&e),
        Err(e) => return api_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let now = Utc::now();
    let visible: Vec<SilenceView> = set
        .list()
        .iter()
        .filter(|s| may_manage(tenant.as_deref(), s))
        .map(|s| SilenceView::new(s, now))
        .collect();
    axum::Json(serde_json::json!({ "silences": visible })).into_response()
}

async fn create_silence(
    State(api): State<SilencesApi>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let tenant = match api.caller(&headers) {
        Ok(t) => t,
        Err(message) => return unauthorized(&message),
    };
    let deserializer = &mut serde_json::Deserializer::from_slice(&body);
    let mut new: NewSilence = match serde_path_to_error::deserialize(deserializer) {
        Ok(new) => new,
        Err(e) => {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            let message = match path.as_str() {
                "." => message,
                path => format!("{path}: {message}"),
            };
            return api_error(StatusCode::BAD_REQUEST, &message);
        }
    };
    if let Some(own) = tenant {
        if new.tenant.as_deref().is_some_and(|t| t != own) {
            return api_error(
                StatusCode::FORBIDDEN,
                "tenant: a tenant token can only create silences of its own tenant",
            );
        }
        new.tenant = Some(own);
    }
    let silence = match new.into_silence(new_id(), Utc::now()) {
        Ok(s) => s,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let added = silence.clone();
    match api.update(move |set| Ok(set.add(added)?)).await {
        Ok(()) => {
            let view = SilenceView::new(&silence, Utc::now());
            (StatusCode::CREATED, axum::Json(view)).into_response()
        }
        Err(e) => store_error(&e),
    }
}

async fn expire_silence(
    State(api): State<SilencesApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let tenant = match api.caller(&headers) {
        Ok(t) => t,
        Err(message) => return unauthorized(&message),
    };
    let expired = api
        .update(move |set| {
            let now = Utc::now();
            // Another tenant's silence does not exist for this caller.
            match set.get(&id) {
                Some(s) if may_manage(tenant.as_deref(), s) => {}
                _ => return Err(SilenceError::NotFound(id).into()),
            }
            set.expire(&id, now)?;
            Ok(set.get(&id).cloned().expect("just expired"))
        })
        .await;
    match expired {
        Ok(silence) => axum::Json(SilenceView::new(&silence, Utc::now())).into_response(),
        Err(e) => store_error(&e),
    }
}

fn store_error(e: &StoreError) -> Response {
    let status = match e {
        StoreError::Silence(SilenceError::NotFound(_)) => StatusCode::NOT_FOUND,
        StoreError::Silence(SilenceError::AlreadyExpired(_) | SilenceError::DuplicateId(_)) => {
            StatusCode::CONFLICT
        }
        StoreError::Silence(SilenceError::Invalid(_)) => StatusCode::BAD_REQUEST,
        StoreError::Io { .. } | StoreError::Corrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    api_error(status, &e.to_string())
}

/// A 401 with its `WWW-Authenticate` challenge.
fn unauthorized(message: &str) -> Response {
    let mut response = api_error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"mcpulse\""),
    );
    response
}

fn api_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

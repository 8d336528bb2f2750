//! `mcpulse serve`: SQL over the archive (`POST /api/v1/query`); reads the archive only,
//! never the log.

use std::sync::Arc;

use mcpulse_ingest::Authenticator;
use mcpulse_queries::QueryEngine;
use mcpulse_schemas::metrics::MetricsSource;

use super::{BoundAddrs, RoleInfo, Supervisor, authenticator, bind, require_shared_log};
use crate::Config;
use crate::api::{Health, authorize_queries, health_router};
use crate::archive_store::ArchiveLocation;

/// `POST /api/v1/query` over `archive`, scoped by bearer token.
pub fn query_router(
    config: &Config,
    archive: &ArchiveLocation,
    auth: &Arc<Authenticator>,
) -> axum::Router {
    let engine = QueryEngine::new(archive.catalog(), config.query.clone());
    mcpulse_queries::http::query_router(engine, authorize_queries(auth.clone()))
}

/// Runs the serve role until `shutdown` resolves (refused on the embedded log, like
/// every split role: `mcpulse run` serves SQL there).
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    require_shared_log(&config, "serve")?;
    let mut roles = Supervisor::new("serve", &config)?;
    let auth = authenticator(&config)?;
    let api_listener = bind(config.listen.api, "listen.api").await?;
    let addrs = BoundAddrs {
        role: "serve",
        api: Some(api_listener.local_addr()?),
        ..BoundAddrs::default()
    };
    let archive = ArchiveLocation::open(&config)?;
    let sources: Vec<Arc<dyn MetricsSource>> = vec![Arc::new(RoleInfo("serve"))];
    let health = Health {
        ready: roles.ready_flag(),
        sources: Arc::new(sources),
    };
    roles.serve_http(
        "API server",
        api_listener,
        query_router(&config, &archive, &auth).merge(health_router(health)),
    );
    let details = format!("archive {}", archive.url);
    roles.run(addrs, None, details, shutdown).await
}

//! `mcpulse serve`: SQL over the archive (`POST /api/v1/query`, and the PostgreSQL wire
//! protocol on `query.pg_listen`); reads the archive only, never the log.

use std::sync::Arc;

use anyhow::Context;
use mcpulse_ingest::{Authenticator, Principal};
use mcpulse_queries::{QueryEngine, Scope};
use mcpulse_schemas::metrics::MetricsSource;
use tokio::net::TcpListener;

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

/// Binds the PostgreSQL endpoint's listener when `query.pg_listen` is set.
pub async fn bind_pg(config: &Config) -> anyhow::Result<Option<TcpListener>> {
    match config.query.pg_listen {
        Some(addr) => Ok(Some(bind(addr, "query.pg_listen").await?)),
        None => Ok(None),
    }
}

/// Serves the PostgreSQL wire protocol on `listener` until the drain: the password is a
/// tenant's token (its rows only) or an operator's (every tenant); an empty password
/// acts as `auth.anonymous_tenant` when that is set.
pub fn serve_pg(
    roles: &mut Supervisor,
    config: &Config,
    archive: &ArchiveLocation,
    auth: &Arc<Authenticator>,
    listener: TcpListener,
) -> anyhow::Result<()> {
    roles.announce_listener("pg", listener.local_addr()?);
    let engine = QueryEngine::new(archive.catalog(), config.query.clone());
    let auth = auth.clone();
    let authenticate: mcpulse_queries::pg::PgAuthenticate = Arc::new(move |token: &str| {
        let header = (!token.is_empty()).then(|| format!("Bearer {token}"));
        match auth.authenticate(header.as_deref().map(str::as_bytes)) {
            Ok(Principal::Tenant(t)) => Some(Scope::Tenant(t)),
            Ok(Principal::Operator(_)) => Some(Scope::All),
            Err(_) => None,
        }
    });
    roles.spawn_edge("PostgreSQL endpoint", move |mut stop| async move {
        let stopped = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        mcpulse_queries::pg::serve(listener, engine, authenticate, stopped)
            .await
            .context("serving PostgreSQL connections")
    });
    Ok(())
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
    let pg_listener = bind_pg(&config).await?;
    let addrs = BoundAddrs {
        role: "serve",
        api: Some(api_listener.local_addr()?),
        ..BoundAddrs::default()
    };
    let archive = ArchiveLocation::connect(&config).await?;
    if let Some(listener) = pg_listener {
        serve_pg(&mut roles, &config, &archive, &auth, listener)?;
    }
    let sources: Vec<Arc<dyn MetricsSource>> = vec![Arc::new(RoleInfo("serve"))];
    let health = Health {
        ready: roles.ready_flag(),
        sources: Arc::new(sources),
        auth: None,
    };
    roles.serve_http(
        "API server",
        api_listener,
        query_router(&config, &archive, &auth).merge(health_router(health)),
    );
    let details = format!("archive {}", archive.url);
    roles.run(addrs, None, details, shutdown).await
}

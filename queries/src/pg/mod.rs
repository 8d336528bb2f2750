//! The PostgreSQL wire protocol endpoint (`query.pg_listen`): psql, psycopg, Grafana's
//! PostgreSQL data source and any other PostgreSQL client run SQL over the archive
//! through the same [`QueryEngine`] as `POST /api/v1/query`.
//!
//! - **Authentication**: cleartext password (use TLS termination in front of it when it
//!   leaves the machine). The password is a tenant's token (that tenant's rows only) or
//!   an operator's token (every tenant); the user name is not checked. A wrong password
//!   is `28P01 invalid_password`.
//! - **Protocols**: simple query (several statements per message) and extended query
//!   (parse / bind / describe / execute, `$1` parameters bound by DataFusion).
//! - **Compatibility** ([`compat`]): `SET`, `RESET`, `BEGIN`/`COMMIT`/`ROLLBACK` are
//!   accepted and do nothing (the archive is read-only); `SHOW x` and
//!   `current_setting('x')` answer from a fixed table of settings; `version()`,
//!   `current_database()`, `current_schema()`, `current_user`, `quote_ident`,
//!   `parse_ident`, and a small `pg_catalog` (`pg_namespace`, `pg_class`, `pg_type`,
//!   `pg_database`, `pg_extension`, `pg_settings`) serve what clients ask when they
//!   connect, and Grafana's table and column lists.
//! - **Types** ([`types`]): Arrow types become PostgreSQL types (timestamps with time zone,
//!   integers, floats, text, bool, bytea; lists, maps and structs as JSON text).
//! - **Errors** ([`errors`]): a failed statement is an `ErrorResponse` with a SQLSTATE;
//!   the connection stays usable.

pub mod auth;
pub mod compat;
pub mod errors;
pub mod handler;
pub mod types;

use std::future::Future;
use std::sync::Arc;

use pgwire::api::PgWireServerHandlers;
use pgwire::api::auth::StartupHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::{QueryEngine, Scope};

/// Decides the scope of a connection from its password (a bearer token), or `None`.
pub type PgAuthenticate = Arc<dyn Fn(&str) -> Option<Scope> + Send + Sync>;

/// Everything one connection needs.
pub struct PgHandlers {
    startup: Arc<auth::TokenStartup>,
    query: Arc<handler::PgQueryHandler>,
}

impl PgHandlers {
    pub fn new(engine: QueryEngine, authenticate: PgAuthenticate) -> Self {
        let engine = compat::engine(engine);
        Self {
            startup: Arc::new(auth::TokenStartup::new(authenticate)),
            query: Arc::new(handler::PgQueryHandler::new(engine)),
        }
    }
}

impl PgWireServerHandlers for PgHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.query.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.query.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
}

/// Serves connections on `listener` until `shutdown` resolves; then stops accepting and
/// closes the open connections (clients reconnect to another instance or later).
pub async fn serve(
    listener: TcpListener,
    engine: QueryEngine,
    authenticate: PgAuthenticate,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let handlers = Arc::new(PgHandlers::new(engine, authenticate));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let handlers = handlers.clone();
                    connections.spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                            debug!(%peer, error = %e, "PostgreSQL connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // E.g. too many open files: keep serving the open connections.
                    warn!(error = %e, "accepting a PostgreSQL connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
    connections.shutdown().await;
    Ok(())
}

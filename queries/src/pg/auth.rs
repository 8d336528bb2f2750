//! Start-up of a PostgreSQL connection: cleartext password = a bearer token, which
//! decides the connection's [`Scope`] (kept in the session, never taken from start-up
//! parameters).

use std::fmt::Debug;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::ClientInfo;
use pgwire::api::auth::driver::AuthOutcome;
use pgwire::api::auth::mechanism::{AuthMechanism, AuthState};
use pgwire::api::auth::{
    AuthDriver, DefaultServerParameterProvider, StartupHandler, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::PgAuthenticate;
use crate::Scope;

/// The scope of an authenticated connection, in its session extensions.
#[derive(Clone, Debug)]
pub struct SessionScope(pub Scope);

/// The server version clients see (`server_version`, `version()`, `SHOW`).
pub const SERVER_VERSION: &str = "16.6";

pub struct TokenStartup {
    driver: AuthDriver<DefaultServerParameterProvider, Scope>,
    authenticate: PgAuthenticate,
}

impl TokenStartup {
    pub fn new(authenticate: PgAuthenticate) -> Self {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = SERVER_VERSION.to_string();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        Self {
            driver: AuthDriver::new(parameters),
            authenticate,
        }
    }
}

/// Asks for a cleartext password and checks it as a token.
struct TokenMechanism {
    authenticate: PgAuthenticate,
}

#[async_trait]
impl AuthMechanism<Scope> for TokenMechanism {
    async fn begin(
        &mut self,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> PgWireResult<AuthState<Scope>> {
        Ok(AuthState::InProgress(Authentication::CleartextPassword))
    }

    async fn next(
        &mut self,
        client: &(dyn ClientInfo + Send + Sync),
        message: PasswordMessageFamily,
    ) -> PgWireResult<AuthState<Scope>> {
        let password = message.into_password()?;
        let user = client
            .metadata()
            .get(pgwire::api::METADATA_USER)
            .cloned()
            .unwrap_or_default();
        match (self.authenticate)(&password.password) {
            Some(scope) => Ok(AuthState::Ok {
                final_message: None,
                identity: Some(scope),
            }),
            None => Ok(AuthState::Failed(PgWireError::InvalidPassword(user))),
        }
    }
}

#[async_trait]
impl StartupHandler for TokenStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let outcome = match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let mechanism = Box::new(TokenMechanism {
                    authenticate: self.authenticate.clone(),
                });
                self.driver.begin_authentication(client, mechanism).await?
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                self.driver.advance_authentication(client, message).await?
            }
            _ => return Ok(()),
        };
        match outcome {
            AuthOutcome::InProgress => Ok(()),
            AuthOutcome::Authenticated {
                identity,
                final_message,
            } => {
                let Some(scope) = identity else {
                    return Err(PgWireError::InvalidPassword(String::new()));
                };
                client.session_extensions().insert(SessionScope(scope));
                self.driver
                    .complete_authentication(client, final_message)
                    .await
            }
        }
    }
}

/// The scope of an authenticated connection.
pub fn scope_of<C: ClientInfo + ?Sized>(client: &C) -> PgWireResult<Scope> {
    client
        .session_extensions()
        .get::<SessionScope>()
        .map(|s| s.0.clone())
        .ok_or_else(|| PgWireError::InvalidPassword(String::new()))
}

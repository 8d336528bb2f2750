//! Tenant authentication at the edge: the tenant comes from the bearer token, never from
//! the payload.
//!
//! Tokens are kept only as SHA-256 digests, so a token never sits in memory in the clear
//! after start-up and lookups do not compare secrets byte by byte.

use std::collections::HashMap;

use mcpulse_schemas::topics::TENANT_ID_RULE;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::IngestError;

/// Who a request acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A tenant: writes and reads only its own rows.
    Tenant(String),
    /// An operator: reads every tenant's rows; cannot ingest.
    Operator(String),
}

impl Principal {
    /// The tenant this principal writes as, or a 403 for operators.
    pub fn tenant(&self) -> Result<&str, IngestError> {
        match self {
            Principal::Tenant(t) => Ok(t),
            Principal::Operator(name) => Err(IngestError::Forbidden(format!(
                "operator credential {name:?} cannot ingest data; use a tenant token"
            ))),
        }
    }
}

/// `auth:` in mcpulse.yaml.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Tenants and their bearer tokens (use `${ENV}` references for the tokens).
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// Operators: tokens that may query every tenant.
    #[serde(default)]
    pub operators: Vec<OperatorConfig>,
    /// When set, requests without an `Authorization` header act as this tenant (for the
    /// single-user embedded demo). Requests with a wrong token are still refused.
    #[serde(default)]
    pub anonymous_tenant: Option<String>,
}

/// One tenant.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Tenant id: 1–64 characters of `[A-Za-z0-9_-]` (it becomes a folder name).
    pub id: String,
    /// Bearer tokens of this tenant.
    pub tokens: Vec<String>,
}

/// One operator.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// A name for logs.
    pub name: String,
    /// Bearer tokens of this operator.
    pub tokens: Vec<String>,
}

use mcpulse_schemas::alert::OPERATOR_TENANT;
pub use mcpulse_schemas::topics::valid_tenant_id;

/// Resolves `Authorization` headers to principals.
#[derive(Clone, Debug, Default)]
pub struct Authenticator {
    by_digest: HashMap<[u8; 32], Principal>,
    anonymous: Option<Principal>,
}

impl Authenticator {
    /// Builds the token table; fails naming the field on invalid or duplicate entries.
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let mut by_digest = HashMap::new();
        let mut add = |field: String, token: &str, principal: Principal| -> Result<(), String> {
            if token.len() < 8 {
                return Err(format!("{field}: tokens must be at least 8 characters"));
            }
            if by_digest.insert(digest(token), principal).is_some() {
                return Err(format!("{field}: the same token is configured twice"));
            }
            Ok(())
        };
        for (i, tenant) in config.tenants.iter().enumerate() {
            if !valid_tenant_id(&tenant.id) {
                return Err(format!(
                    "auth.tenants[{i}].id: {:?} {TENANT_ID_RULE}",
                    tenant.id
                ));
            }
            if tenant.id == OPERATOR_TENANT {
                return Err(format!(
                    "auth.tenants[{i}].id: {OPERATOR_TENANT:?} is reserved (it owns storm incidents, which only operators see)"
                ));
            }
            for (j, token) in tenant.tokens.iter().enumerate() {
                add(
                    format!("auth.tenants[{i}].tokens[{j}]"),
                    token,
                    Principal::Tenant(tenant.id.clone()),
                )?;
            }
        }
        for (i, op) in config.operators.iter().enumerate() {
            for (j, token) in op.tokens.iter().enumerate() {
                add(
                    format!("auth.operators[{i}].tokens[{j}]"),
                    token,
                    Principal::Operator(op.name.clone()),
                )?;
            }
        }
        let anonymous = match &config.anonymous_tenant {
            Some(t) if !valid_tenant_id(t) => {
                return Err(format!("auth.anonymous_tenant: {t:?} {TENANT_ID_RULE}"));
            }
            Some(t) if t == OPERATOR_TENANT => {
                return Err(format!("auth.anonymous_tenant: {t:?} is reserved"));
            }
            Some(t) => Some(Principal::Tenant(t.clone())),
            None => None,
        };
        if by_digest.is_empty() && anonymous.is_none() {
            return Err("auth: configure at least one tenant token or anonymous_tenant".into());
        }
        Ok(Self {
            by_digest,
            anonymous,
        })
    }

    /// The principal of a request with this `Authorization` header value (if any).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, IngestError> {
        let Some(value) = authorization else {
            return self.anonymous.clone().ok_or_else(|| {
                IngestError::Unauthenticated(
                    "missing Authorization header (expected `Bearer <token>`)".into(),
                )
            });
        };
        let value = std::str::from_utf8(value).map_err(|_| {
            IngestError::Unauthenticated("Authorization header is not valid UTF-8".into())
        })?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                IngestError::Unauthenticated("Authorization header must be `Bearer <token>`".into())
            })?;
        self.by_digest
            .get(&digest(token))
            .cloned()
            .ok_or_else(|| IngestError::Unauthenticated("invalid bearer token".into()))
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        AuthConfig {
            tenants: vec![TenantConfig {
                id: "acme".into(),
                tokens: vec!["acme-secret-1".into()],
            }],
            operators: vec![OperatorConfig {
                name: "ops".into(),
                tokens: vec!["ops-secret-1".into()],
            }],
            anonymous_tenant: None,
        }
    }

    #[test]
    fn token_decides_the_tenant() {
        let auth = Authenticator::new(&config()).unwrap();
        assert_eq!(
            auth.authenticate(Some(b"Bearer acme-secret-1")).unwrap(),
            Principal::Tenant("acme".into())
        );
        assert_eq!(
            auth.authenticate(Some(b"Bearer ops-secret-1")).unwrap(),
            Principal::Operator("ops".into())
        );
        assert!(matches!(
            auth.authenticate(Some(b"Bearer nope-nope-nope")),
            Err(IngestError::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.authenticate(Some(b"Basic abc")),
            Err(IngestError::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.authenticate(None),
            Err(IngestError::Unauthenticated(_))
        ));
        assert!(Principal::Operator("ops".into()).tenant().is_err());
    }

    #[test]
    fn anonymous_tenant_only_without_a_header() {
        let auth = Authenticator::new(&AuthConfig {
            anonymous_tenant: Some("demo".into()),
            ..config()
        })
        .unwrap();
        assert_eq!(
            auth.authenticate(None).unwrap(),
            Principal::Tenant("demo".into())
        );
        assert!(auth.authenticate(Some(b"Bearer wrong-token")).is_err());
    }

    #[test]
    fn rejects_bad_config_naming_the_field() {
        let mut bad = config();
        bad.tenants[0].id = "../etc".into();
        assert!(
            Authenticator::new(&bad)
                .unwrap_err()
                .starts_with("auth.tenants[0].id")
        );
        let mut dup = config();
        dup.operators[0].tokens = vec!["acme-secret-1".into()];
        assert!(Authenticator::new(&dup).unwrap_err().contains("twice"));
        assert!(Authenticator::new(&AuthConfig::default()).is_err());
        let mut reserved = config();
        reserved.tenants[0].id = "_operator".into();
        assert!(
            Authenticator::new(&reserved)
                .unwrap_err()
                .contains("auth.tenants[0].id: \"_operator\" is reserved")
        );
        let anonymous = AuthConfig {
            anonymous_tenant: Some("_operator".into()),
            ..config()
        };
        assert!(
            Authenticator::new(&anonymous)
                .unwrap_err()
                .contains("reserved")
        );
    }
}

//! Errors of `routes.yaml`: each names the file, the line and the field
//! (`routes.yaml:12: route.routes[0].receiver: unknown receiver "pager"`), and never a
//! secret: every substituted `${ENV}` value is scrubbed from them.

use std::fmt;

/// A problem in a routes file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutesError {
    /// The file as named to `parse_named` or `load`.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The field (`route.routes[0].receiver`); empty for whole-file problems.
    pub path: String,
    pub kind: ErrorKind,
}

impl std::error::Error for RoutesError {}

impl fmt::Display for RoutesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl RoutesError {
    /// Replaces every secret in the error's text with `***`.
    pub(crate) fn scrubbed(self, secrets: &[String]) -> RoutesError {
        let scrub = |s: String| mcpulse_schemas::env::scrub(s, secrets);
        RoutesError {
            file: scrub(self.file),
            line: self.line,
            path: scrub(self.path),
            kind: self.kind.map_text(scrub),
        }
    }
}

/// What is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("cannot read the file: {0}")]
    Read(String),
    /// A `${ENV}` reference that is not set or malformed.
    #[error("{0}")]
    Env(String),
    /// Syntax, a wrong type, an unknown or missing field, or a bad value (matcher, regex,
    /// time, time zone…), as found while parsing.
    #[error("{0}")]
    Invalid(String),
    #[error("duplicate route id {id:?} (also at line {first_line})")]
    DuplicateRouteId { id: String, first_line: usize },
    #[error("duplicate receiver {0:?}")]
    DuplicateReceiver(String),
    #[error("duplicate time interval {0:?}")]
    DuplicateTimeInterval(String),
    #[error("unknown receiver {0:?}")]
    UnknownReceiver(String),
    #[error("unknown time interval {0:?}")]
    UnknownTimeInterval(String),
    #[error("the top route needs a receiver (the default of every route under it)")]
    MissingReceiver,
    #[error("the top route sees every event: it cannot have matchers (add a child route)")]
    TopRouteMatchers,
    #[error("the top route cannot have continue: true")]
    TopRouteContinue,
    #[error("{name:?} is not a valid {what} (1-128 of letters, digits, `-`, `_`, `.`, `@`, `/`)")]
    BadName { what: &'static str, name: String },
    #[error("{0:?} is not a valid tenant id ({rule})", rule = mcpulse_schemas::topics::TENANT_ID_RULE)]
    BadTenant(String),
    #[error("{0:?} is reserved for operator events (storms): route them under operator_routes")]
    OperatorTenant(String),
    #[error("receiver has no integration: add one of pagerduty, opsgenie, discord, email, webhook")]
    EmptyReceiver,
    #[error(
        "this route is already inside tenant {owner:?}'s routes (route {owner_route:?}): \
         a tenant's routes cannot contain another tenant section"
    )]
    NestedTenant { owner: String, owner_route: String },
    #[error("operator routes see only operator events (storms): they cannot belong to a tenant")]
    TenantInOperatorRoutes,
    #[error(
        "matcher `{matcher}` can never hold: this route only ever sees events of tenant \
         {tenant:?}{}",
        never_holds_hint(tenant)
    )]
    TenantMatcherNeverHolds { matcher: String, tenant: String },
    #[error(
        "receiver {receiver:?} belongs to tenant {owner:?}: only routes inside that tenant's \
         section (`tenant: {owner}`) can use it"
    )]
    ReceiverOfAnotherTenant { receiver: String, owner: String },
    #[error("must be more than zero")]
    ZeroDuration,
}

impl ErrorKind {
    fn map_text(self, f: impl Fn(String) -> String) -> ErrorKind {
        use ErrorKind::*;
        match self {
            Read(s) => Read(f(s)),
            Env(s) => Env(f(s)),
            Invalid(s) => Invalid(f(s)),
            DuplicateRouteId { id, first_line } => DuplicateRouteId {
                id: f(id),
                first_line,
            },
            DuplicateReceiver(s) => DuplicateReceiver(f(s)),
            DuplicateTimeInterval(s) => DuplicateTimeInterval(f(s)),
            UnknownReceiver(s) => UnknownReceiver(f(s)),
            UnknownTimeInterval(s) => UnknownTimeInterval(f(s)),
            BadName { what, name } => BadName {
                what,
                name: f(name),
            },
            BadTenant(s) => BadTenant(f(s)),
            OperatorTenant(s) => OperatorTenant(f(s)),
            NestedTenant { owner, owner_route } => NestedTenant {
                owner: f(owner),
                owner_route: f(owner_route),
            },
            TenantMatcherNeverHolds { matcher, tenant } => TenantMatcherNeverHolds {
                matcher: f(matcher),
                tenant: f(tenant),
            },
            ReceiverOfAnotherTenant { receiver, owner } => ReceiverOfAnotherTenant {
                receiver: f(receiver),
                owner: f(owner),
            },
            other @ (MissingReceiver
            | TopRouteMatchers
            | TopRouteContinue
            | EmptyReceiver
            | TenantInOperatorRoutes
            | ZeroDuration) => other,
        }
    }
}

/// Why a `tenant` matcher is decided in advance where it is.
fn never_holds_hint(tenant: &str) -> &'static str {
    if tenant == mcpulse_schemas::alert::OPERATOR_TENANT {
        " (operator routes only see operator events)"
    } else {
        " (tenant isolation: a tenant's routes never see another tenant's events)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_file_line_field_and_reason() {
        let e = RoutesError {
            file: "routes.yaml".into(),
            line: Some(12),
            path: "route.routes[0].receiver".into(),
            kind: ErrorKind::UnknownReceiver("pager".into()),
        };
        assert_eq!(
            e.to_string(),
            "routes.yaml:12: route.routes[0].receiver: unknown receiver \"pager\""
        );
        let e = RoutesError {
            line: None,
            path: String::new(),
            kind: ErrorKind::Env("line 3: environment variable X is not set".into()),
            ..e
        };
        assert_eq!(
            e.to_string(),
            "routes.yaml: line 3: environment variable X is not set"
        );
    }

    #[test]
    fn scrubbing_reaches_every_part() {
        let e = RoutesError {
            file: "routes.yaml".into(),
            line: Some(1),
            path: "receivers[0].s3cr3t".into(),
            kind: ErrorKind::UnknownReceiver("s3cr3t".into()),
        }
        .scrubbed(&["s3cr3t".to_string()]);
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }
}

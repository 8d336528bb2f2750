//! Receivers: named destinations with one or more integrations.

use std::fmt;

use serde_yaml_ng::Value;

/// The kinds of integration a receiver can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IntegrationKind {
    PagerDuty,
    OpsGenie,
    Discord,
    Email,
    Webhook,
}

impl IntegrationKind {
    pub const ALL: [IntegrationKind; 5] = [
        IntegrationKind::PagerDuty,
        IntegrationKind::OpsGenie,
        IntegrationKind::Discord,
        IntegrationKind::Email,
        IntegrationKind::Webhook,
    ];

    /// The key in `routes.yaml` (`pagerduty`, `opsgenie`, `discord`, `email`, `webhook`).
    pub fn as_str(self) -> &'static str {
        match self {
            IntegrationKind::PagerDuty => "pagerduty",
            IntegrationKind::OpsGenie => "opsgenie",
            IntegrationKind::Discord => "discord",
            IntegrationKind::Email => "email",
            IntegrationKind::Webhook => "webhook",
        }
    }
}

impl fmt::Display for IntegrationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A receiver from `receivers:`.
#[derive(Clone, Debug)]
pub struct Receiver {
    pub name: String,
    /// The tenant that owns it (only that tenant's routes can use it).
    pub tenant: Option<String>,
    /// At least one.
    pub integrations: Vec<Integration>,
    /// Line of its `name`.
    pub line: Option<usize>,
}

impl Receiver {
    /// The kinds of its integrations, in order (`pagerduty, discord`).
    pub fn kinds(&self) -> String {
        let kinds: Vec<&str> = self.integrations.iter().map(|i| i.kind.as_str()).collect();
        kinds.join(", ")
    }
}

/// One integration block of a receiver, its `${ENV}` references already substituted.
/// Its `Debug` output hides the block: it holds secrets.
#[derive(Clone)]
pub struct Integration {
    pub kind: IntegrationKind,
    /// The block as written (a mapping), for the delivery code to parse.
    pub config: Value,
    /// Its place in the file (`receivers[0].pagerduty`, `receivers[1].discord[1]`), for
    /// errors about its fields (with [`super::RoutesFile::locate`] for the line).
    pub path: String,
    /// Line of the block.
    pub line: Option<usize>,
}

impl fmt::Debug for Integration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Integration")
            .field("kind", &self.kind)
            .field("config", &"<hidden>")
            .field("path", &self.path)
            .field("line", &self.line)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_block() {
        let integration = Integration {
            kind: IntegrationKind::PagerDuty,
            config: serde_yaml_ng::from_str("routing_key: s3cr3t").unwrap(),
            path: "receivers[0].pagerduty".into(),
            line: Some(3),
        };
        let shown = format!("{integration:?}");
        assert!(
            !shown.contains("s3cr3t") && shown.contains("pagerduty"),
            "{shown}"
        );
    }
}

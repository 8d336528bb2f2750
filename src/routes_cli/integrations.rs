//! Building the integrations of a routes file's receivers (`pagerduty:`, `discord:`, …)
//! with the receivers crate, so a block that would fail at delivery time fails at
//! `routes check` instead — with the line and field of the block in the file, and never
//! a secret.

use std::collections::BTreeMap;
use std::fmt;

use mcpulse_sinks::receivers::{
    DiscordConfig, EmailConfig, HttpClient, OpsGenieConfig, PagerDutyConfig, Receiver,
    ReceiverConfig, ReceiverKind, WebhookConfig,
};
use mcpulse_sinks::routes::{Integration, IntegrationKind, RoutesFile};
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

/// One integration block that cannot work, located in the routes file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct IntegrationError {
    pub file: String,
    pub line: Option<usize>,
    /// The field at fault (`receivers[0].pagerduty.routing_key`), or the block itself.
    pub path: String,
    pub message: String,
}

impl fmt::Display for IntegrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}: {}", self.path, self.message)
    }
}

/// One built integration of a receiver.
#[derive(Debug)]
pub struct BuiltIntegration {
    pub kind: IntegrationKind,
    /// Its place in the file (`receivers[1].discord[0]`).
    pub path: String,
    pub receiver: Box<dyn Receiver>,
}

/// Every receiver of a routes file with its built integrations, by receiver name.
#[derive(Debug, Default)]
pub struct Integrations {
    by_receiver: BTreeMap<String, Vec<BuiltIntegration>>,
}

impl Integrations {
    /// Builds every integration of every receiver of `file`; on failure, every block that
    /// failed (not just the first).
    pub fn build(file: &RoutesFile) -> Result<Integrations, Vec<IntegrationError>> {
        let http = HttpClient::new().map_err(|e| {
            vec![IntegrationError {
                file: file.file().to_string(),
                line: None,
                path: "receivers".into(),
                message: file.redact(&e.to_string()),
            }]
        })?;
        let mut by_receiver = BTreeMap::new();
        let mut errors = Vec::new();
        for receiver in file.receivers() {
            let mut built = Vec::new();
            for integration in &receiver.integrations {
                match build_one(file, integration, &http) {
                    Ok(b) => built.push(b),
                    Err(e) => errors.push(e),
                }
            }
            by_receiver.insert(receiver.name.clone(), built);
        }
        match errors.is_empty() {
            true => Ok(Integrations { by_receiver }),
            false => Err(errors),
        }
    }

    /// The integrations of receiver `name` (empty for an unknown name).
    pub fn of(&self, name: &str) -> &[BuiltIntegration] {
        self.by_receiver.get(name).map_or(&[], Vec::as_slice)
    }
}

/// The receivers crate's name for a routes file's integration kind.
pub fn receiver_kind(kind: IntegrationKind) -> ReceiverKind {
    match kind {
        IntegrationKind::PagerDuty => ReceiverKind::PagerDuty,
        IntegrationKind::OpsGenie => ReceiverKind::OpsGenie,
        IntegrationKind::Discord => ReceiverKind::Discord,
        IntegrationKind::Email => ReceiverKind::Email,
        IntegrationKind::Webhook => ReceiverKind::Webhook,
    }
}

fn build_one(
    file: &RoutesFile,
    integration: &Integration,
    http: &HttpClient,
) -> Result<BuiltIntegration, IntegrationError> {
    let error = |field: &str, message: &str| {
        let path = match field {
            "" => integration.path.clone(),
            field => format!("{}.{field}", integration.path),
        };
        IntegrationError {
            file: file.file().to_string(),
            line: file.locate(&path).or(integration.line),
            message: file.redact(message),
            path: file.redact(&path),
        }
    };
    let kind = receiver_kind(integration.kind);
    let config = ReceiverConfig::from_yaml(kind, integration.config.clone()).map_err(|e| {
        let (field, message) = failing_field(kind, &integration.config)
            .unwrap_or_else(|| (String::new(), e.to_string()));
        error(&field, &message)
    })?;
    let receiver = config.build(http).map_err(|e| error(e.field, &e.message))?;
    Ok(BuiltIntegration {
        kind: integration.kind,
        path: integration.path.clone(),
        receiver,
    })
}

/// The field (relative to the block) and message of a block that does not deserialize.
fn failing_field(kind: ReceiverKind, block: &Value) -> Option<(String, String)> {
    match kind {
        ReceiverKind::PagerDuty => failing_field_of::<PagerDutyConfig>(block),
        ReceiverKind::OpsGenie => failing_field_of::<OpsGenieConfig>(block),
        ReceiverKind::Discord => failing_field_of::<DiscordConfig>(block),
        ReceiverKind::Email => failing_field_of::<EmailConfig>(block),
        ReceiverKind::Webhook => failing_field_of::<WebhookConfig>(block),
    }
}

fn failing_field_of<T: DeserializeOwned>(block: &Value) -> Option<(String, String)> {
    let error = serde_path_to_error::deserialize::<_, T>(block.clone()).err()?;
    let mut path = match error.path().to_string() {
        p if p == "." || p == "?" => String::new(),
        p => p,
    };
    let message = error.into_inner().to_string();
    // Where an unknown field is reported at its parent, name the field itself.
    if let Some(unknown) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
        .filter(|field| path != *field && !path.ends_with(&format!(".{field}")))
    {
        path = match path.is_empty() {
            true => unknown.to_string(),
            false => format!("{path}.{unknown}"),
        };
    }
    Some((path, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(yaml: &str) -> RoutesFile {
        RoutesFile::parse(yaml, |_| Some("s3cr3t-value-0123456789".into())).unwrap()
    }

    fn errors(yaml: &str) -> Vec<String> {
        let errors = Integrations::build(&file(yaml)).unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        for e in &shown {
            assert!(!e.contains("s3cr3t"), "a secret in {e}");
        }
        shown
    }

    #[test]
    fn builds_valid_blocks() {
        let f = file(
            "receivers:\n  - name: pd\n    pagerduty:\n      routing_key: \"${PD_KEY}\"\nroute: {id: root, receiver: pd}\n",
        );
        let built = Integrations::build(&f).unwrap();
        assert_eq!(built.of("pd").len(), 1);
        assert!(built.of("nope").is_empty());
    }

    #[test]
    fn names_line_and_field_of_unknown_missing_and_invalid_fields() {
        let shown = errors(
            "receivers:
  - name: pd
    pagerduty:
      routing_key: \"${PD_KEY}\"
      sevrity: high
  - name: mail
    email:
      to: [oncall@example.com]
  - name: hook
    webhook:
      url: \"https://hooks.example.com/${TOKEN}\"
      secret: short
route: {id: root, receiver: pd}
",
        );
        assert_eq!(shown.len(), 3, "{shown:#?}");
        assert!(
            shown[0].starts_with(
                "routes.yaml:5: receivers[0].pagerduty.sevrity: unknown field `sevrity`"
            ),
            "{shown:#?}"
        );
        assert!(
            shown[1].starts_with("routes.yaml:7: receivers[1].email: missing field"),
            "{shown:#?}"
        );
        assert!(
            shown[2].starts_with("routes.yaml:12: receivers[2].webhook.secret:"),
            "{shown:#?}"
        );
    }
}

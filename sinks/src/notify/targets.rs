//! A routes file made deliverable: every integration of every receiver built into a
//! [`Receiver`](crate::receivers::Receiver), once, when the file is loaded.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::receivers::{HttpClient, Receiver, ReceiverConfig, ReceiverKind, Redactor};
use crate::routes::{IntegrationKind, RoutesFile};

use super::error::NotifyError;

/// One integration of one receiver: where a transition routed to the receiver goes.
#[derive(Debug)]
pub struct Target {
    /// The receiver's name in routes.yaml.
    pub receiver: String,
    pub kind: ReceiverKind,
    /// `{receiver}/{destination}`: what the notification log keys this integration by.
    /// It holds no secret and survives reordering the file; changing the destination
    /// (another routing key, another webhook) starts afresh, as it should.
    pub key: String,
    pub sender: Box<dyn Receiver>,
}

impl Target {
    /// The destination without secrets (`pagerduty:<host>:<key hash>`, …).
    pub fn destination(&self) -> &str {
        self.sender.destination()
    }
}

/// A loaded routes file with its integrations built.
#[derive(Debug)]
pub struct Routing {
    pub file: RoutesFile,
    targets: HashMap<String, Vec<Arc<Target>>>,
    /// Replaces the file's `${ENV}` values in any text that leaves the stage.
    pub redactor: Arc<Redactor>,
}

/// The receiver kind of a routes-file integration kind.
pub fn receiver_kind(kind: IntegrationKind) -> ReceiverKind {
    match kind {
        IntegrationKind::PagerDuty => ReceiverKind::PagerDuty,
        IntegrationKind::OpsGenie => ReceiverKind::OpsGenie,
        IntegrationKind::Discord => ReceiverKind::Discord,
        IntegrationKind::Email => ReceiverKind::Email,
        IntegrationKind::Webhook => ReceiverKind::Webhook,
    }
}

impl Routing {
    /// Reads `path` (with `${ENV}` from the process environment) and builds it.
    pub fn load(path: &Path, http: &HttpClient) -> Result<Routing, NotifyError> {
        let file = RoutesFile::load(path).map_err(|e| NotifyError::Config(e.to_string()))?;
        Routing::build(file, http)
    }

    /// Builds every integration of `file`. Errors name the file, line and block
    /// (`routes.yaml:7: receivers[0].pagerduty: …`), with secret values redacted.
    pub fn build(file: RoutesFile, http: &HttpClient) -> Result<Routing, NotifyError> {
        let redactor = Arc::new(Redactor::new(file.secrets().iter().map(String::as_str)));
        let mut targets: HashMap<String, Vec<Arc<Target>>> = HashMap::new();
        for receiver in file.receivers() {
            let mut built = Vec::new();
            for integration in &receiver.integrations {
                let kind = receiver_kind(integration.kind);
                let fail = |message: String| {
                    let line = file
                        .locate(&integration.path)
                        .or(integration.line)
                        .map(|l| format!("{l}: "))
                        .unwrap_or_default();
                    NotifyError::Config(file.redact(&format!(
                        "{}:{line}{}: {message}",
                        file.file(),
                        integration.path
                    )))
                };
                let config = ReceiverConfig::from_yaml(kind, integration.config.clone())
                    .map_err(|e| fail(e.to_string()))?;
                let sender = config.build(http).map_err(|e| fail(e.to_string()))?;
                built.push(Arc::new(Target {
                    receiver: receiver.name.clone(),
                    kind,
                    key: format!("{}/{}", receiver.name, sender.destination()),
                    sender,
                }));
            }
            targets.insert(receiver.name.clone(), built);
        }
        Ok(Routing {
            file,
            targets,
            redactor,
        })
    }

    /// The integrations of receiver `name` (empty for an unknown name).
    pub fn targets(&self, name: &str) -> &[Arc<Target>] {
        self.targets.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The integration with this nflog key, if the file still has it.
    pub fn target_by_key(&self, key: &str) -> Option<&Arc<Target>> {
        self.targets.values().flatten().find(|t| t.key == key)
    }

    /// How many integrations the file has in all.
    pub fn integration_count(&self) -> usize {
        self.targets.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> RoutesFile {
        RoutesFile::parse(yaml, |name| match name {
            "PD_KEY" => Some("pd-secret-key-0123456789abcdef".into()),
            "HOOK" => {
                Some("https://discord.com/api/webhooks/123456789012345678/t0k3n-value".into())
            }
            _ => None,
        })
        .unwrap()
    }

    #[test]
    fn builds_every_integration_with_stable_secret_free_keys() {
        let file = parse(
            "receivers:\n  - name: oncall\n    pagerduty: { routing_key: \"${PD_KEY}\" }\n    discord: { webhook_url: \"${HOOK}\" }\nroute:\n  id: root\n  receiver: oncall\n",
        );
        let routing = Routing::build(file, &HttpClient::new().unwrap()).unwrap();
        let targets = routing.targets("oncall");
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].kind, ReceiverKind::PagerDuty);
        assert!(
            targets[0]
                .key
                .starts_with("oncall/pagerduty:events.pagerduty.com:")
        );
        assert_eq!(targets[1].key, "oncall/discord:webhook/123456789012345678");
        for t in targets {
            assert!(!t.key.contains("pd-secret") && !t.key.contains("t0k3n"));
        }
        assert_eq!(routing.integration_count(), 2);
        assert!(routing.targets("nobody").is_empty());
        assert_eq!(
            routing.redactor.scrub("x pd-secret-key-0123456789abcdef y"),
            "x <redacted> y"
        );
    }

    #[test]
    fn a_bad_block_names_file_line_and_block_without_the_secret() {
        let file = parse(
            "receivers:\n  - name: chat\n    discord: { webhook_url: \"${PD_KEY}\" }\nroute:\n  id: root\n  receiver: chat\n",
        );
        let err = Routing::build(file, &HttpClient::new().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("routes.yaml:3: receivers[0].discord: "),
            "{err}"
        );
        assert!(!err.contains("pd-secret"), "{err}");
        let file = parse(
            "receivers:\n  - name: pd\n    pagerduty: { routing_key: \"${PD_KEY}\", colour: red }\nroute:\n  id: root\n  receiver: pd\n",
        );
        let err = Routing::build(file, &HttpClient::new().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
    }
}

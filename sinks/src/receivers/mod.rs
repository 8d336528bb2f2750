//! Delivery of one incident transition ([`AlertEvent`]) to one receiver: PagerDuty
//! Events API v2, OpsGenie Alert API, a Discord webhook, email over SMTP, or a signed
//! generic webhook — each exactly per its provider's published contract.
//!
//! A [`Receiver`] gets the event and the [`SinkHandle`] recorded for this incident at
//! this receiver by the previous delivery (the notification log keeps it), delivers, and
//! returns the handle to record next ([`Outcome`]). [`Receiver::render`] is the pure twin
//! used by `routes test`: the exact requests, secrets replaced by `<redacted>`.
//!
//! Errors are typed ([`DeliveryError`]: retryable with the server's hint, or permanent
//! with the reason); retries, circuit breaking and rate limiting live in
//! [`crate::delivery`]. Secrets ([`Secret`]) never reach `Debug`, errors or renders.
//!
//! Config blocks (unknown fields are refused; durations in humantime):
//!
//! ```yaml
//! pagerduty:
//!   routing_key: ${PD_ROUTING_KEY}            # secret
//!   url: https://events.pagerduty.com         # default; /v2/enqueue is appended
//!   client: mcpulse                           # default
//!   client_url: https://mcpulse.example.com
//!   links: [{href: "https://grafana.example.com/d/mcp?var-server={server}", text: Dashboard}]
//!   timeout: 10s
//! opsgenie:
//!   api_key: ${OPSGENIE_KEY}                  # secret
//!   region: eu                                # us (default) | eu; or url: https://…
//!   responders: [{type: team, name: sre}]     # type team|user|escalation|schedule; id|name|username
//!   tags: [mcp]
//!   priority: {P1: P1, P2: P2, P3: P3, P4: P5}
//!   source: mcpulse
//!   timeout: 10s
//! discord:
//!   webhook_url: ${DISCORD_WEBHOOK}           # secret (holds the token)
//!   mention_role_id: "123456789012345678"     # trigger only
//!   forum: false                              # true: one thread per incident
//!   thread_after: 30m                         # forum only: replies for long outages
//!   username: mcpulse
//!   timeout: 10s
//! email:
//!   smtp_host: smtp.example.com
//!   port: 587                                 # default by tls: 587 | 465 | 25
//!   tls: starttls                             # starttls | implicit | plaintext_loopback
//!   ca_file: /etc/mcpulse/relay-ca.pem        # extra trusted CA
//!   username: alerts@example.com
//!   password: ${SMTP_PASSWORD}                # secret
//!   from: "mcpulse <alerts@example.com>"
//!   to: [oncall@example.com]
//!   hello_name: mcpulse.example.com
//!   timeout: 30s
//!   max_connections: 4
//! webhook:
//!   url: https://hooks.example.com/in/${HOOK_TOKEN}   # secret (path and query hidden)
//!   secret: ${HOOK_HMAC_KEY}                  # secret, ≥16 characters
//!   headers: {Authorization: "Bearer ${HOOK_BEARER}"}  # values are secrets
//!   timeout: 10s
//! ```

pub mod classify;
mod describe;
mod discord;
mod email;
mod error;
mod http;
mod opsgenie;
mod pagerduty;
mod secret;
mod text;
mod webhook;

use std::time::Duration;

use async_trait::async_trait;
use mcpulse_schemas::AlertEvent;
use serde::{Deserialize, Serialize};

pub use discord::{DiscordConfig, DiscordReceiver};
pub use email::{EmailConfig, EmailReceiver, SmtpTls};
pub use error::{ConfigError, DeliveryError};
pub use http::HttpClient;
pub use opsgenie::{OpsGenieConfig, OpsGenieReceiver, OpsGenieRegion, Responder, ResponderType};
pub use pagerduty::{PagerDutyConfig, PagerDutyLink, PagerDutyReceiver};
pub use secret::{REDACTED, Redactor, Secret};
pub use webhook::{WebhookConfig, WebhookReceiver, signature};

/// The providers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverKind {
    #[serde(rename = "pagerduty")]
    PagerDuty,
    #[serde(rename = "opsgenie")]
    OpsGenie,
    Discord,
    Email,
    Webhook,
}

impl ReceiverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverKind::PagerDuty => "pagerduty",
            ReceiverKind::OpsGenie => "opsgenie",
            ReceiverKind::Discord => "discord",
            ReceiverKind::Email => "email",
            ReceiverKind::Webhook => "webhook",
        }
    }
}

/// What a receiver remembers of an incident between its transitions, so updates edit
/// the same page, alert, message or thread. Stored by the notification log per
/// (incident, receiver); serialized with a `kind` tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SinkHandle {
    /// The `dedup_key` PagerDuty knows the alert by.
    #[serde(rename = "pagerduty")]
    PagerDuty { dedup_key: String },
    /// The OpsGenie alert `alias`.
    #[serde(rename = "opsgenie")]
    OpsGenie { alias: String },
    /// The Discord message edited in place, and its forum thread if any.
    Discord {
        message_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread_id: Option<String>,
    },
    /// The email thread: its first `Message-ID`, the last one sent, and its subject.
    Email {
        root_message_id: String,
        last_message_id: String,
        subject: String,
    },
}

/// The result of a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered. Record `handle` (when `Some`) for the incident at this receiver.
    Sent { handle: Option<SinkHandle> },
    /// Nothing to send for this transition here (e.g. a blip at PagerDuty, which never
    /// pages for one); the recorded handle stays as it was.
    Skipped { reason: &'static str },
}

/// One request as `routes test` prints it: secrets replaced by `<redacted>`. Email is
/// shown as method `SMTP`, the server as URL, the message headers, and a body of
/// `{"text", "html"}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RenderedRequest {
    pub method: String,
    pub url_redacted: String,
    pub headers_redacted: Vec<(String, String)>,
    pub body: serde_json::Value,
}

/// One configured destination of one provider.
#[async_trait]
pub trait Receiver: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> ReceiverKind;

    /// A stable name of the destination without any secret (`pagerduty:<host>:<key
    /// hash>`, `discord:<webhook id>`, …): the key of its circuit breaker and token
    /// bucket, and what logs and the `notifications` table show.
    fn destination(&self) -> &str;

    /// The requests [`Receiver::deliver`] would make for `event` given `handle`, with
    /// secrets redacted; empty when this transition is skipped here. No I/O. Where a
    /// request depends on the send time (the webhook's signed timestamp), the event's
    /// time stands in for it.
    fn render(&self, event: &AlertEvent, handle: Option<&SinkHandle>) -> Vec<RenderedRequest>;

    /// Delivers `event`. `handle` is what the previous delivery of this incident here
    /// returned (`None` for the first).
    async fn deliver(
        &self,
        event: &AlertEvent,
        handle: Option<&SinkHandle>,
    ) -> Result<Outcome, DeliveryError>;
}

/// One receiver entry of a config file: exactly one provider key.
///
/// ```yaml
/// - pagerduty: { routing_key: "${PD_KEY}" }
/// - discord: { webhook_url: "${DISCORD_HOOK}", mention_role_id: "123456789012345678" }
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ReceiverConfig {
    Pagerduty(PagerDutyConfig),
    Opsgenie(OpsGenieConfig),
    Discord(DiscordConfig),
    Email(EmailConfig),
    Webhook(WebhookConfig),
}

impl ReceiverConfig {
    /// Validates the config and builds its receiver (HTTP receivers share `http`).
    pub fn build(&self, http: &HttpClient) -> Result<Box<dyn Receiver>, ConfigError> {
        Ok(match self {
            ReceiverConfig::Pagerduty(c) => {
                Box::new(PagerDutyReceiver::new(c.clone(), http.clone())?)
            }
            ReceiverConfig::Opsgenie(c) => {
                Box::new(OpsGenieReceiver::new(c.clone(), http.clone())?)
            }
            ReceiverConfig::Discord(c) => Box::new(DiscordReceiver::new(c.clone(), http.clone())?),
            ReceiverConfig::Email(c) => Box::new(EmailReceiver::new(c.clone())?),
            ReceiverConfig::Webhook(c) => Box::new(WebhookReceiver::new(c.clone(), http.clone())?),
        })
    }

    /// Parses one integration block of `kind`, as `routes.yaml` holds it (the value of
    /// its `pagerduty:`, `discord:`, … key, `${ENV}` already substituted).
    pub fn from_yaml(
        kind: ReceiverKind,
        block: serde_yaml_ng::Value,
    ) -> Result<Self, serde_yaml_ng::Error> {
        use serde_yaml_ng::from_value;
        Ok(match kind {
            ReceiverKind::PagerDuty => ReceiverConfig::Pagerduty(from_value(block)?),
            ReceiverKind::OpsGenie => ReceiverConfig::Opsgenie(from_value(block)?),
            ReceiverKind::Discord => ReceiverConfig::Discord(from_value(block)?),
            ReceiverKind::Email => ReceiverConfig::Email(from_value(block)?),
            ReceiverKind::Webhook => ReceiverConfig::Webhook(from_value(block)?),
        })
    }

    pub fn kind(&self) -> ReceiverKind {
        match self {
            ReceiverConfig::Pagerduty(_) => ReceiverKind::PagerDuty,
            ReceiverConfig::Opsgenie(_) => ReceiverKind::OpsGenie,
            ReceiverConfig::Discord(_) => ReceiverKind::Discord,
            ReceiverConfig::Email(_) => ReceiverKind::Email,
            ReceiverConfig::Webhook(_) => ReceiverKind::Webhook,
        }
    }
}

/// Default per-request timeout of HTTP receivers.
pub(crate) fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

//! Generic webhook: `POST {url}` with the [`AlertEvent`] as JSON, signed so the receiver
//! can check origin and freshness:
//!
//! ```text
//! X-Mcpulse-Timestamp: <unix seconds>
//! X-Mcpulse-Signature: sha256=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>
//! X-Mcpulse-Event-Id:  <event_id>   (stable across retries and replays: an idempotency key)
//! ```
//!
//! Verify by recomputing the HMAC over the raw body bytes, comparing in constant time,
//! and rejecting timestamps older than a few minutes. Any 2xx is success.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http::Method;
use http::header::HeaderName;
use mcpulse_schemas::AlertEvent;
use serde::Deserialize;
use sha2::Sha256;

use super::http::{HttpClient, PlannedRequest, check_url, send};
use super::text::short_hash;
use super::{
    ConfigError, DeliveryError, Outcome, Receiver, ReceiverKind, Redactor, RenderedRequest, Secret,
    SinkHandle, default_timeout,
};

/// Shortest HMAC key accepted.
const MIN_SECRET: usize = 16;
/// Headers mcpulse sets itself (configured headers may not replace them).
const RESERVED: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "x-mcpulse-timestamp",
    "x-mcpulse-signature",
    "x-mcpulse-event-id",
];

/// `webhook:` receiver config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Endpoint, `https://…`. Treated as a secret (URLs often carry a token): its path
    /// and query are never shown.
    pub url: Secret,
    /// HMAC-SHA256 key of `X-Mcpulse-Signature`, at least 16 characters. Secret: give it
    /// as `${ENV}`.
    pub secret: Secret,
    /// Extra request headers, e.g. `Authorization`. Values are treated as secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Timeout of one request. Default 10s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// Delivers to one signed webhook endpoint.
#[derive(Debug)]
pub struct WebhookReceiver {
    config: WebhookConfig,
    /// The endpoint as parsed (what is sent, and what the redactor knows).
    url: Secret,
    destination: String,
    http: HttpClient,
    redactor: Redactor,
}

impl WebhookReceiver {
    pub fn new(config: WebhookConfig, http: HttpClient) -> Result<Self, ConfigError> {
        let url = config.url.expose();
        let parsed = check_url("webhook", "url", url)?;
        if config.secret.expose().chars().count() < MIN_SECRET {
            return Err(ConfigError::new(
                "webhook",
                "secret",
                format!("at least {MIN_SECRET} characters"),
            ));
        }
        for name in config.headers.keys() {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ConfigError::new(
                    "webhook",
                    "headers",
                    format!("{name:?} is not a header name"),
                ));
            }
            if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(ConfigError::new(
                    "webhook",
                    "headers",
                    format!("{name} is set by mcpulse"),
                ));
            }
        }
        let host = parsed.host_str().unwrap_or_default();
        // Everything after `scheme://host[:port]/` is hidden.
        let query = parsed.query().map(|q| format!("?{q}")).unwrap_or_default();
        let hidden = format!("{}{query}", parsed.path().trim_start_matches('/'));
        let destination = format!("webhook:{host}:{}", short_hash(url));
        let mut secrets = vec![config.secret.expose(), hidden.as_str()];
        secrets.extend(config.headers.values().map(Secret::expose));
        let redactor = Redactor::new(secrets);
        Ok(WebhookReceiver {
            url: Secret::new(parsed.to_string()),
            config,
            destination,
            http,
            redactor,
        })
    }

    /// The signed request, as sent at `now`.
    fn plan(&self, event: &AlertEvent, now: DateTime<Utc>) -> PlannedRequest {
        let mut request = PlannedRequest::json(Method::POST, self.url.expose().to_owned(), event);
        let timestamp = now.timestamp();
        let signature = signature(self.config.secret.expose(), timestamp, &request.body);
        request = request
            .header("X-Mcpulse-Timestamp", timestamp.to_string())
            .header("X-Mcpulse-Signature", signature)
            .header("X-Mcpulse-Event-Id", event.event_id.clone());
        for (name, value) in &self.config.headers {
            request = request.header(name, value.expose());
        }
        request
    }
}

/// `sha256=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait]
impl Receiver for WebhookReceiver {
    fn kind(&self) -> ReceiverKind {
        ReceiverKind::Webhook
    }

    fn destination(&self) -> &str {
        &self.destination
    }

    fn render(&self, event: &AlertEvent, _handle: Option<&SinkHandle>) -> Vec<RenderedRequest> {
        vec![self.plan(event, event.time).render(&self.redactor)]
    }

    async fn deliver(
        &self,
        event: &AlertEvent,
        _handle: Option<&SinkHandle>,
    ) -> Result<Outcome, DeliveryError> {
        let request = self.plan(event, Utc::now());
        send(
            &self.http,
            ReceiverKind::Webhook,
            &request,
            self.config.timeout,
            &self.redactor,
        )
        .await?;
        Ok(Outcome::Sent { handle: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // RFC 4231 style check against an independently known value:
        // HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog").
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        let a = signature("0123456789abcdef", 1_700_000_000, b"{}");
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64);
        assert_ne!(a, signature("0123456789abcdef", 1_700_000_001, b"{}"));
    }
}

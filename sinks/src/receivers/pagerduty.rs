//! PagerDuty Events API v2: `POST {url}/v2/enqueue`, answered 202.
//!
//! | transition | event_action | why |
//! |---|---|---|
//! | trigger, update | `trigger` | PagerDuty folds a trigger with an open alert's `dedup_key` into it |
//! | resolve | `resolve` | only when this incident paged here (a handle): the dedup key is per subject, so a resolve of an incident that never paged could close a later one |
//! | suppress | `resolve` if it paged, else nothing | a storm member must stop paging; `acknowledge` would not do, PagerDuty re-triggers an acknowledged incident when its ack timeout ends. The storm notice pages the operator instead |
//! | blip | nothing | P4 blips are never paged |

use std::time::Duration;

use async_trait::async_trait;
use http::Method;
use mcpulse_schemas::{AlertEvent, Severity};
use serde::Deserialize;
use serde_json::{Value, json};

use super::describe::{Change, change};
use super::http::{HttpClient, PlannedRequest, check_url, send};
use super::text::{fit_key, short_hash, truncate};
use super::{
    ConfigError, DeliveryError, Outcome, Receiver, ReceiverKind, Redactor, RenderedRequest, Secret,
    SinkHandle, default_timeout,
};

/// PagerDuty's limits.
const MAX_DEDUP_KEY: usize = 255;
const MAX_SUMMARY: usize = 1024;
/// Events over ~512 KB are rejected; stay under with room for HTTP framing.
const MAX_EVENT_BYTES: usize = 512 * 1024 - 1024;

/// `pagerduty:` receiver config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// Integration key of an "Events API v2" integration on the PagerDuty service (32
    /// characters). Secret: give it as `${ENV}`.
    pub routing_key: Secret,
    /// Base URL of the Events API; `/v2/enqueue` is appended. Default
    /// `https://events.pagerduty.com` (EU service regions: `https://events.eu.pagerduty.com`).
    #[serde(default = "default_url")]
    pub url: String,
    /// Name of the monitoring client PagerDuty shows (`client`). Default `mcpulse`.
    #[serde(default)]
    pub client: Option<String>,
    /// Link back to the monitoring client (`client_url`), e.g. the mcpulse dashboard.
    #[serde(default)]
    pub client_url: Option<String>,
    /// Links attached to every trigger (`links`). `{tenant}`, `{server}`, `{class}` and
    /// `{incident_id}` in `href` are replaced (URL-encoded).
    #[serde(default)]
    pub links: Vec<PagerDutyLink>,
    /// Timeout of one request. Default 10s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// One link of a PagerDuty event.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyLink {
    /// Target URL (placeholders allowed, see [`PagerDutyConfig::links`]).
    pub href: String,
    /// Text shown for the link.
    pub text: String,
}

fn default_url() -> String {
    "https://events.pagerduty.com".into()
}

/// Delivers to one PagerDuty routing key.
#[derive(Debug)]
pub struct PagerDutyReceiver {
    config: PagerDutyConfig,
    endpoint: String,
    destination: String,
    http: HttpClient,
    redactor: Redactor,
}

impl PagerDutyReceiver {
    pub fn new(config: PagerDutyConfig, http: HttpClient) -> Result<Self, ConfigError> {
        let key = config.routing_key.expose();
        if key.trim().is_empty() {
            return Err(ConfigError::new("pagerduty", "routing_key", "is empty"));
        }
        let parsed = check_url("pagerduty", "url", &config.url)?;
        if let Some(url) = &config.client_url {
            check_url("pagerduty", "client_url", url)?;
        }
        let endpoint = format!("{}/v2/enqueue", config.url.trim_end_matches('/'));
        let host = parsed.host_str().unwrap_or_default();
        let destination = format!("pagerduty:{host}:{}", short_hash(key));
        let redactor = Redactor::new([key]);
        Ok(PagerDutyReceiver {
            config,
            endpoint,
            destination,
            http,
            redactor,
        })
    }

    /// The request for this transition, if any.
    fn plan(&self, event: &AlertEvent, handle: Option<&SinkHandle>) -> Option<PlannedRequest> {
        let paged = matches!(handle, Some(SinkHandle::PagerDuty { .. }));
        let body = match change(event) {
            Change::Open => self.trigger_body(event),
            Change::Resolve | Change::Suppress if paged => self.resolve_body(event),
            Change::Resolve | Change::Suppress | Change::Blip => return None,
        };
        Some(PlannedRequest::json(
            Method::POST,
            self.endpoint.clone(),
            &body,
        ))
    }

    fn resolve_body(&self, event: &AlertEvent) -> Value {
        json!({
            "routing_key": self.config.routing_key.expose(),
            "event_action": "resolve",
            "dedup_key": dedup_key(event),
        })
    }

    fn trigger_body(&self, event: &AlertEvent) -> Value {
        let mut body = json!({
            "routing_key": self.config.routing_key.expose(),
            "event_action": "trigger",
            "dedup_key": dedup_key(event),
            "payload": {
                "summary": truncate(&event.summary, MAX_SUMMARY),
                "source": event.server.as_deref().unwrap_or("mcpulse"),
                "severity": severity(event.severity),
                "timestamp": event.time.to_rfc3339(),
                "component": event.server.as_deref().unwrap_or("mcpulse"),
                "group": event.tenant,
                "class": event.class,
                "custom_details": custom_details(event, true),
            },
            "client": self.config.client.as_deref().unwrap_or("mcpulse"),
        });
        if let Some(url) = &self.config.client_url {
            body["client_url"] = json!(url);
        }
        if !self.config.links.is_empty() {
            let links: Vec<Value> = self
                .config
                .links
                .iter()
                .map(|l| json!({"href": expand(&l.href, event), "text": l.text}))
                .collect();
            body["links"] = json!(links);
        }
        fit_size(body, event)
    }
}

/// Drops the evidence, then all custom details, when the event would be too large.
fn fit_size(mut body: Value, event: &AlertEvent) -> Value {
    if body.to_string().len() > MAX_EVENT_BYTES {
        body["payload"]["custom_details"] = custom_details(event, false);
    }
    if body.to_string().len() > MAX_EVENT_BYTES {
        body["payload"]
            .as_object_mut()
            .expect("payload is an object")
            .remove("custom_details");
    }
    body
}

fn custom_details(event: &AlertEvent, with_evidence: bool) -> Value {
    let mut details = json!({
        "tenant": event.tenant,
        "incident_id": event.incident_id,
        "event_id": event.event_id,
        "action": event.action.as_str(),
        "status": event.status.as_str(),
        "scope": event.scope,
        "opened_at": event.opened_at.to_rfc3339(),
    });
    let map = details.as_object_mut().expect("an object");
    let optional = [
        ("server", event.server.as_ref().map(|s| json!(s))),
        ("reason", event.reason.as_ref().map(|s| json!(s))),
        (
            "regions",
            (!event.regions.is_empty()).then(|| json!(event.regions)),
        ),
        ("storm_id", event.storm_id.as_ref().map(|s| json!(s))),
        ("storm", event.storm.as_ref().map(|s| json!(s))),
        (
            "provider_outage",
            event.provider_outage.as_ref().map(|s| json!(s)),
        ),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            map.insert(key.into(), value);
        }
    }
    if with_evidence {
        map.insert("evidence".into(), event.evidence.clone());
    } else {
        map.insert(
            "evidence".into(),
            json!("dropped: the event would exceed PagerDuty's 512 KB limit"),
        );
    }
    details
}

/// The dedup key PagerDuty gets for this subject.
fn dedup_key(event: &AlertEvent) -> String {
    fit_key(&event.dedup_key, MAX_DEDUP_KEY)
}

/// P1 → critical, P2 → error, P3 → warning, P4 → info.
pub fn severity(severity: Severity) -> &'static str {
    match severity {
        Severity::P1 => "critical",
        Severity::P2 => "error",
        Severity::P3 => "warning",
        Severity::P4 => "info",
    }
}

/// Replaces `{tenant}`, `{server}`, `{class}` and `{incident_id}` with URL-encoded values.
fn expand(template: &str, event: &AlertEvent) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    template
        .replace("{tenant}", &enc(&event.tenant))
        .replace("{server}", &enc(event.server.as_deref().unwrap_or("")))
        .replace("{class}", &enc(&event.class))
        .replace("{incident_id}", &enc(&event.incident_id))
}

#[async_trait]
impl Receiver for PagerDutyReceiver {
    fn kind(&self) -> ReceiverKind {
        ReceiverKind::PagerDuty
    }

    fn destination(&self) -> &str {
        &self.destination
    }

    fn render(&self, event: &AlertEvent, handle: Option<&SinkHandle>) -> Vec<RenderedRequest> {
        self.plan(event, handle)
            .map(|r| r.render(&self.redactor))
            .into_iter()
            .collect()
    }

    async fn deliver(
        &self,
        event: &AlertEvent,
        handle: Option<&SinkHandle>,
    ) -> Result<Outcome, DeliveryError> {
        let Some(request) = self.plan(event, handle) else {
            return Ok(Outcome::Skipped {
                reason: "PagerDuty is paged only for open incidents and resolves what it paged",
            });
        };
        send(
            &self.http,
            ReceiverKind::PagerDuty,
            &request,
            self.config.timeout,
            &self.redactor,
        )
        .await?;
        Ok(Outcome::Sent {
            handle: Some(SinkHandle::PagerDuty {
                dedup_key: dedup_key(event),
            }),
        })
    }
}

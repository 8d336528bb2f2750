//! OpsGenie Alert API: create `POST {base}/v2/alerts` and close
//! `POST {base}/v2/alerts/{alias}/close?identifierType=alias`, header
//! `Authorization: GenieKey <key>`, every call answered 202.
//!
//! Self-contained on purpose: OpsGenie's REST API is retired on 2027-04-05, and removing
//! this file (and its variants in `mod.rs`) removes the receiver.
//!
//! | transition | call |
//! |---|---|
//! | trigger, update | create (OpsGenie dedups on the alias: an update bumps the open alert) |
//! | resolve, suppress | close by alias, only if this incident created it here (the alias is per subject) |
//! | blip | nothing (never paged) |

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use http::Method;
use mcpulse_schemas::{AlertEvent, Severity};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::describe::{Change, change, evidence, facts, state_line, title};
use super::http::{HttpClient, PlannedRequest, check_url, send};
use super::text::{chars, fit_key, short_hash, truncate};
use super::{
    ConfigError, DeliveryError, Outcome, Receiver, ReceiverKind, Redactor, RenderedRequest, Secret,
    SinkHandle, default_timeout,
};

/// OpsGenie's documented limits.
pub const MAX_MESSAGE: usize = 130;
pub const MAX_ALIAS: usize = 512;
pub const MAX_DESCRIPTION: usize = 15_000;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG: usize = 50;
pub const MAX_DETAILS_TOTAL: usize = 8_000;
pub const MAX_ENTITY: usize = 512;
pub const MAX_SOURCE: usize = 100;
pub const MAX_NOTE: usize = 25_000;

/// Unreserved characters stay, everything else (`/` included) is percent-encoded.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `opsgenie:` receiver config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsGenieConfig {
    /// Key of an API integration (sent as `Authorization: GenieKey <key>`). Secret: give
    /// it as `${ENV}`.
    pub api_key: Secret,
    /// Account region: `us` (`https://api.opsgenie.com`, default) or `eu`
    /// (`https://api.eu.opsgenie.com`).
    #[serde(default)]
    pub region: OpsGenieRegion,
    /// Base URL overriding `region` (a proxy, or a test server).
    #[serde(default)]
    pub url: Option<String>,
    /// Who is notified: `[{type: team, name: sre}]`; each entry has exactly one of `id`,
    /// `name` or `username` (users only).
    #[serde(default)]
    pub responders: Vec<Responder>,
    /// Tags on every alert, before the ones mcpulse adds (`mcpulse`, `severity:P1`,
    /// `class:…`, `tenant:…`); at most 20 in all, 50 characters each.
    #[serde(default)]
    pub tags: Vec<String>,
    /// OpsGenie priority per mcpulse severity. Default P1→P1, P2→P2, P3→P3, P4→P4.
    #[serde(default)]
    pub priority: BTreeMap<Severity, OpsGeniePriority>,
    /// `source` of the alerts (≤100 characters). Default `mcpulse`.
    #[serde(default)]
    pub source: Option<String>,
    /// Timeout of one request. Default 10s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// OpsGenie account region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpsGenieRegion {
    #[default]
    Us,
    Eu,
}

impl OpsGenieRegion {
    pub fn base_url(self) -> &'static str {
        match self {
            OpsGenieRegion::Us => "https://api.opsgenie.com",
            OpsGenieRegion::Eu => "https://api.eu.opsgenie.com",
        }
    }
}

/// OpsGenie alert priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum OpsGeniePriority {
    P1,
    P2,
    P3,
    P4,
    P5,
}

/// A responder of the created alert.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Responder {
    /// `team`, `user`, `escalation` or `schedule`.
    #[serde(rename = "type")]
    pub kind: ResponderType,
    /// OpsGenie id of the responder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name of the team, escalation or schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// User name (e-mail address) of a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// Responder type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponderType {
    Team,
    User,
    Escalation,
    Schedule,
}

/// Delivers to one OpsGenie API integration.
#[derive(Debug)]
pub struct OpsGenieReceiver {
    config: OpsGenieConfig,
    base: String,
    destination: String,
    http: HttpClient,
    redactor: Redactor,
}

impl OpsGenieReceiver {
    pub fn new(config: OpsGenieConfig, http: HttpClient) -> Result<Self, ConfigError> {
        let key = config.api_key.expose();
        if key.trim().is_empty() {
            return Err(ConfigError::new("opsgenie", "api_key", "is empty"));
        }
        let base = match &config.url {
            Some(url) => {
                check_url("opsgenie", "url", url)?;
                url.trim_end_matches('/').to_owned()
            }
            None => config.region.base_url().to_owned(),
        };
        for r in &config.responders {
            check_responder(r)?;
        }
        if config.tags.len() > MAX_TAGS {
            return Err(ConfigError::new(
                "opsgenie",
                "tags",
                format!("more than {MAX_TAGS}"),
            ));
        }
        if let Some(tag) = config
            .tags
            .iter()
            .find(|t| chars(t) > MAX_TAG || t.is_empty())
        {
            return Err(ConfigError::new(
                "opsgenie",
                "tags",
                format!("{tag:?}: tags are 1 to {MAX_TAG} characters"),
            ));
        }
        if config
            .source
            .as_deref()
            .is_some_and(|s| chars(s) > MAX_SOURCE)
        {
            return Err(ConfigError::new(
                "opsgenie",
                "source",
                format!("over {MAX_SOURCE} characters"),
            ));
        }
        let host = url::Url::parse(&base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let destination = format!("opsgenie:{host}:{}", short_hash(key));
        let redactor = Redactor::new([key]);
        Ok(OpsGenieReceiver {
            config,
            base,
            destination,
            http,
            redactor,
        })
    }

    fn plan(&self, event: &AlertEvent, handle: Option<&SinkHandle>) -> Option<PlannedRequest> {
        let created = matches!(handle, Some(SinkHandle::OpsGenie { .. }));
        let (url, body) = match change(event) {
            Change::Open => (format!("{}/v2/alerts", self.base), self.create_body(event)),
            Change::Resolve | Change::Suppress if created => (
                format!(
                    "{}/v2/alerts/{}/close?identifierType=alias",
                    self.base,
                    utf8_percent_encode(&alias(event), PATH_SEGMENT)
                ),
                json!({
                    "source": self.source(),
                    "note": truncate(&state_line(event), MAX_NOTE),
                }),
            ),
            Change::Resolve | Change::Suppress | Change::Blip => return None,
        };
        let auth = format!("GenieKey {}", self.config.api_key.expose());
        Some(PlannedRequest::json(Method::POST, url, &body).header("Authorization", auth))
    }

    fn source(&self) -> &str {
        self.config.source.as_deref().unwrap_or("mcpulse")
    }

    fn create_body(&self, event: &AlertEvent) -> Value {
        let mut body = json!({
            "message": truncate(&format!("{}: {}", title(event), event.summary), MAX_MESSAGE),
            "alias": alias(event),
            "description": truncate(&description(event), MAX_DESCRIPTION),
            "tags": self.tags(event),
            "details": details(event),
            "entity": truncate(event.server.as_deref().unwrap_or(&event.tenant), MAX_ENTITY),
            "source": self.source(),
            "priority": self.priority(event.severity),
        });
        if !self.config.responders.is_empty() {
            body["responders"] = json!(self.config.responders);
        }
        body
    }

    fn priority(&self, severity: Severity) -> OpsGeniePriority {
        self.config
            .priority
            .get(&severity)
            .copied()
            .unwrap_or(match severity {
                Severity::P1 => OpsGeniePriority::P1,
                Severity::P2 => OpsGeniePriority::P2,
                Severity::P3 => OpsGeniePriority::P3,
                Severity::P4 => OpsGeniePriority::P4,
            })
    }

    fn tags(&self, event: &AlertEvent) -> Vec<String> {
        let ours = [
            "mcpulse".to_owned(),
            format!("severity:{}", event.severity.as_str()),
            format!("class:{}", event.class),
            format!("tenant:{}", event.tenant),
        ];
        let mut tags: Vec<String> = Vec::new();
        for tag in self.config.tags.iter().cloned().chain(ours) {
            let tag = truncate(&tag, MAX_TAG);
            if tags.len() < MAX_TAGS && !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        tags
    }
}

fn check_responder(r: &Responder) -> Result<(), ConfigError> {
    let given = [&r.id, &r.name, &r.username]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if given != 1 {
        return Err(ConfigError::new(
            "opsgenie",
            "responders",
            "each responder needs exactly one of id, name, username",
        ));
    }
    if r.username.is_some() && r.kind != ResponderType::User {
        return Err(ConfigError::new(
            "opsgenie",
            "responders",
            "username is for type user only",
        ));
    }
    Ok(())
}

/// The alias: the subject's dedup key.
fn alias(event: &AlertEvent) -> String {
    fit_key(&event.dedup_key, MAX_ALIAS)
}

fn description(event: &AlertEvent) -> String {
    let mut text = format!("{}\n{}\n", state_line(event), event.summary);
    for (label, value) in facts(event) {
        text.push_str(&format!("\n{label}: {value}"));
    }
    if let Some(evidence) = evidence(event) {
        text.push_str(&format!("\n\nEvidence:\n{evidence}"));
    }
    text
}

/// String map of the facts and the evidence, cut to 8000 characters in total (keys and
/// values counted; the evidence, last, is the one cut).
pub(crate) fn details(event: &AlertEvent) -> BTreeMap<String, String> {
    let mut entries: Vec<(String, String)> = facts(event)
        .into_iter()
        .map(|(k, v)| (k.to_lowercase().replace(' ', "_"), v))
        .collect();
    if !event.evidence.is_null() {
        entries.push(("evidence".into(), event.evidence.to_string()));
    }
    let mut budget = MAX_DETAILS_TOTAL;
    let mut details = BTreeMap::new();
    for (key, value) in entries {
        let room = budget.saturating_sub(chars(&key));
        if room == 0 {
            break;
        }
        let value = truncate(&value, room);
        budget -= chars(&key) + chars(&value);
        details.insert(key, value);
    }
    details
}

#[async_trait]
impl Receiver for OpsGenieReceiver {
    fn kind(&self) -> ReceiverKind {
        ReceiverKind::OpsGenie
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
                reason: "OpsGenie alerts open for open incidents and close only what they opened",
            });
        };
        send(
            &self.http,
            ReceiverKind::OpsGenie,
            &request,
            self.config.timeout,
            &self.redactor,
        )
        .await?;
        Ok(Outcome::Sent {
            handle: Some(SinkHandle::OpsGenie {
                alias: alias(event),
            }),
        })
    }
}

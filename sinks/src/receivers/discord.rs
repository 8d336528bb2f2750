//! Discord webhooks: the first event of an incident posts one embed
//! (`POST {webhook}?wait=true`, 200 with the message `id`); every later event edits that
//! message in place (`PATCH {webhook}/messages/{id}`), so one embed changes colour over
//! the outage. The role is mentioned on the trigger only; `allowed_mentions` never lets
//! text from an event ping anyone. A 404 means the webhook or message was deleted:
//! permanent.
//!
//! Forum channels (`forum: true`): each incident opens its own thread (`thread_name`);
//! with `thread_after`, a long outage's updates are also posted as replies in it.

use std::time::Duration;

use async_trait::async_trait;
use http::Method;
use mcpulse_schemas::{AlertAction, AlertEvent, Severity};
use serde::Deserialize;
use serde_json::{Value, json};

use super::describe::{Change, change, evidence, facts, state_line, title};
use super::http::{HttpClient, PlannedRequest, check_url, send};
use super::text::{chars, truncate};
use super::{
    ConfigError, DeliveryError, Outcome, Receiver, ReceiverKind, Redactor, RenderedRequest, Secret,
    SinkHandle, default_timeout,
};

/// Discord's documented limits.
pub const MAX_CONTENT: usize = 2000;
pub const MAX_TITLE: usize = 256;
pub const MAX_DESCRIPTION: usize = 4096;
pub const MAX_FIELDS: usize = 25;
pub const MAX_FIELD_NAME: usize = 256;
pub const MAX_FIELD_VALUE: usize = 1024;
pub const MAX_FOOTER: usize = 2048;
pub const MAX_EMBED_TOTAL: usize = 6000;
pub const MAX_THREAD_NAME: usize = 100;
pub const MAX_USERNAME: usize = 80;

/// Embed colours.
const RED: u32 = 0xE7_4C_3C;
const ORANGE: u32 = 0xE6_7E_22;
const YELLOW: u32 = 0xF1_C4_0F;
const BLUE: u32 = 0x34_98_DB;
const GREEN: u32 = 0x2E_CC_71;
const GREY: u32 = 0x95_A5_A6;
const BLURPLE_GREY: u32 = 0x99_AA_B5;

/// `discord:` receiver config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// The channel webhook's URL, `https://discord.com/api/webhooks/{id}/{token}`.
    /// Secret (the token in it): give it as `${ENV}`.
    pub webhook_url: Secret,
    /// Role mentioned (`<@&id>`) on the trigger message only; edits never mention.
    #[serde(default)]
    pub mention_role_id: Option<String>,
    /// The webhook posts into a forum (or media) channel: each incident opens its own
    /// thread, named after it. Default false.
    #[serde(default)]
    pub forum: bool,
    /// With `forum`: once an incident has been open this long, its updates and resolve
    /// are also posted as replies in its thread, so whoever follows it is notified
    /// (edits notify no one). Default: off.
    #[serde(default, with = "humantime_serde")]
    pub thread_after: Option<Duration>,
    /// Name the messages are posted under (≤80 characters). Default: the webhook's own.
    #[serde(default)]
    pub username: Option<String>,
    /// Timeout of one request. Default 10s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// Delivers to one Discord webhook.
#[derive(Debug)]
pub struct DiscordReceiver {
    config: DiscordConfig,
    /// The webhook URL without trailing slash (a secret: it holds the token).
    base: Secret,
    destination: String,
    http: HttpClient,
    redactor: Redactor,
}

impl DiscordReceiver {
    pub fn new(config: DiscordConfig, http: HttpClient) -> Result<Self, ConfigError> {
        let url = config.webhook_url.expose();
        let parsed = check_url("discord", "webhook_url", url)?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(ConfigError::new(
                "discord",
                "webhook_url",
                "must not have a query",
            ));
        }
        let segments: Vec<&str> = parsed
            .path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let (id, token) = match segments.as_slice() {
            [.., "webhooks", id, token] if is_snowflake(id) && !token.is_empty() => (*id, *token),
            _ => {
                return Err(ConfigError::new(
                    "discord",
                    "webhook_url",
                    "expected …/api/webhooks/{id}/{token}",
                ));
            }
        };
        if let Some(role) = &config.mention_role_id
            && !is_snowflake(role)
        {
            return Err(ConfigError::new(
                "discord",
                "mention_role_id",
                "must be a numeric role id",
            ));
        }
        if config.thread_after.is_some() && !config.forum {
            return Err(ConfigError::new(
                "discord",
                "thread_after",
                "needs forum: true (webhooks start threads only in forum channels)",
            ));
        }
        if let Some(name) = &config.username
            && (name.is_empty() || chars(name) > MAX_USERNAME)
        {
            return Err(ConfigError::new(
                "discord",
                "username",
                "1 to 80 characters",
            ));
        }
        let destination = format!("discord:webhook/{id}");
        let redactor = Redactor::new([token]);
        let base = Secret::new(url.trim_end_matches('/'));
        Ok(DiscordReceiver {
            config,
            base,
            destination,
            http,
            redactor,
        })
    }

    /// The requests of this transition: a post, or an edit (plus, in a long outage's
    /// forum thread, a reply).
    fn plan(&self, event: &AlertEvent, handle: Option<&SinkHandle>) -> Vec<PlannedRequest> {
        let Some(SinkHandle::Discord {
            message_id,
            thread_id,
        }) = handle
        else {
            return vec![self.post(event)];
        };
        let mut url = format!("{}/messages/{message_id}", self.base.expose());
        if let Some(thread) = thread_id {
            url.push_str(&format!("?thread_id={thread}"));
        }
        let body = json!({
            "content": "",
            "embeds": [embed(event)],
            "allowed_mentions": {"parse": []},
        });
        let mut requests = vec![PlannedRequest::json(Method::PATCH, url, &body)];
        if let Some(thread) = thread_id
            && self.long_outage(event)
        {
            let body = json!({
                "content": truncate(&format!("**{}** {}", state_line(event), event.summary), MAX_CONTENT),
                "allowed_mentions": {"parse": []},
            });
            let url = format!("{}?wait=true&thread_id={thread}", self.base.expose());
            requests.push(PlannedRequest::json(
                Method::POST,
                url,
                &self.with_username(body),
            ));
        }
        requests
    }

    fn post(&self, event: &AlertEvent) -> PlannedRequest {
        let mut body = json!({
            "embeds": [embed(event)],
            "allowed_mentions": {"parse": []},
        });
        if let Some(role) = &self.config.mention_role_id
            && event.action == AlertAction::Trigger
        {
            body["content"] = json!(format!("<@&{role}>"));
            body["allowed_mentions"] = json!({"parse": [], "roles": [role]});
        }
        if self.config.forum {
            body["thread_name"] = json!(truncate(&title(event), MAX_THREAD_NAME));
        }
        let url = format!("{}?wait=true", self.base.expose());
        PlannedRequest::json(Method::POST, url, &self.with_username(body))
    }

    fn with_username(&self, mut body: Value) -> Value {
        if let Some(name) = &self.config.username {
            body["username"] = json!(name);
        }
        body
    }

    fn long_outage(&self, event: &AlertEvent) -> bool {
        let Some(after) = self.config.thread_after else {
            return false;
        };
        let open_for = (event.time - event.opened_at).to_std().unwrap_or_default();
        open_for >= after && change(event) != Change::Blip
    }
}

fn is_snowflake(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The incident's colour: red P1, orange P2, yellow P3, blue P4 while open; green when
/// resolved, grey when suppressed or a blip.
pub fn colour(event: &AlertEvent) -> u32 {
    match change(event) {
        Change::Resolve => GREEN,
        Change::Suppress => GREY,
        Change::Blip => BLURPLE_GREY,
        Change::Open => match event.severity {
            Severity::P1 => RED,
            Severity::P2 => ORANGE,
            Severity::P3 => YELLOW,
            Severity::P4 => BLUE,
        },
    }
}

/// One embed within every Discord limit: per-field caps first, then the 6000-character
/// total (the description shrinks, then trailing fields go).
pub(crate) fn embed(event: &AlertEvent) -> Value {
    let title = truncate(
        &format!("{} — {}", title(event), state_line(event)),
        MAX_TITLE,
    );
    let footer = truncate(
        &format!("mcpulse · incident {}", event.incident_id),
        MAX_FOOTER,
    );
    let mut fields: Vec<(String, String)> = facts(event)
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .take(MAX_FIELDS)
        .map(|(k, v)| (truncate(k, MAX_FIELD_NAME), truncate(&v, MAX_FIELD_VALUE)))
        .collect();
    let fixed = chars(&title) + chars(&footer);
    let fields_len =
        |f: &[(String, String)]| f.iter().map(|(k, v)| chars(k) + chars(v)).sum::<usize>();
    while fixed + fields_len(&fields) > MAX_EMBED_TOTAL {
        fields.pop();
    }
    let room = MAX_EMBED_TOTAL - fixed - fields_len(&fields);
    let description = description(event, room.min(MAX_DESCRIPTION));
    json!({
        "title": title,
        "description": description,
        "color": colour(event),
        "fields": fields
            .into_iter()
            .map(|(name, value)| json!({"name": name, "value": value, "inline": true}))
            .collect::<Vec<_>>(),
        "footer": {"text": footer},
        "timestamp": event.time.to_rfc3339(),
    })
}

/// The summary, then the evidence in a code block cut so the block stays closed; at
/// most `max` characters.
fn description(event: &AlertEvent, max: usize) -> String {
    let summary = truncate(&event.summary, max);
    let Some(evidence) = evidence(event) else {
        return summary;
    };
    let (open, close) = ("\n```json\n", "\n```");
    let room = max.saturating_sub(chars(&summary) + chars(open) + chars(close));
    if room < 20 {
        return summary;
    }
    format!("{summary}{open}{}{close}", truncate(&evidence, room))
}

/// The message id (and forum thread) of a post's answer.
fn posted_handle(reply: &Value, forum: bool) -> Result<SinkHandle, DeliveryError> {
    let message_id = reply
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| DeliveryError::permanent("Discord answered without a message id"))?;
    let thread_id = if forum {
        reply
            .get("channel_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    } else {
        None
    };
    Ok(SinkHandle::Discord {
        message_id: message_id.to_owned(),
        thread_id,
    })
}

#[async_trait]
impl Receiver for DiscordReceiver {
    fn kind(&self) -> ReceiverKind {
        ReceiverKind::Discord
    }

    fn destination(&self) -> &str {
        &self.destination
    }

    fn render(&self, event: &AlertEvent, handle: Option<&SinkHandle>) -> Vec<RenderedRequest> {
        self.plan(event, handle)
            .iter()
            .map(|r| r.render(&self.redactor))
            .collect()
    }

    async fn deliver(
        &self,
        event: &AlertEvent,
        handle: Option<&SinkHandle>,
    ) -> Result<Outcome, DeliveryError> {
        let mut new_handle = match handle {
            Some(h @ SinkHandle::Discord { .. }) => Some(h.clone()),
            _ => None,
        };
        for request in self.plan(event, handle) {
            let reply = send(
                &self.http,
                ReceiverKind::Discord,
                &request,
                self.config.timeout,
                &self.redactor,
            )
            .await?;
            let is_first_post = request.method == Method::POST && new_handle.is_none();
            if is_first_post {
                let json = reply.json().unwrap_or(Value::Null);
                new_handle = Some(posted_handle(&json, self.config.forum)?);
            }
        }
        Ok(Outcome::Sent { handle: new_handle })
    }
}

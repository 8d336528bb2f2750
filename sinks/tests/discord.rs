//! Discord webhook contract: one message per incident, posted with `?wait=true` and then
//! edited in place (PATCH of the same id) through trigger → update → resolve; the role
//! mention only on the trigger; every embed limit; 404 means gone; 429 `retry_after`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{MockServer, Recorded, Reply, Validator, check, later, trigger};
use mcpulse_schemas::{AlertAction, AlertStatus};
use mcpulse_sinks::receivers::{
    DiscordConfig, DiscordReceiver, HttpClient, Outcome, Receiver, SinkHandle,
};
use serde_json::{Value, json};

const WEBHOOK_ID: &str = "1178000000000000001";
const TOKEN: &str = "xT0k3n-abcdefghijklmnopqrstuvwxyz0123456789_ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const ROLE: &str = "998877665544332211";

/// Messages the stand-in has created (so a PATCH of an unknown id is a 404, as Discord's).
type Messages = Arc<Mutex<Vec<String>>>;

fn validator(messages: Messages) -> Validator {
    Arc::new(move |r: &Recorded| {
        let mut v = Vec::new();
        let prefix = format!("/api/webhooks/{WEBHOOK_ID}/{TOKEN}");
        let Some(rest) = r.path.strip_prefix(&prefix) else {
            return Err(vec![format!("path {} is not this webhook", r.path)]);
        };
        check::json_content_type(&mut v, r);
        let query = r.query.clone().unwrap_or_default();
        let thread_id = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("thread_id="))
            .map(str::to_owned);
        let b = &r.body;
        let editing = match (r.method.as_str(), rest) {
            ("POST", "") => {
                if !query.split('&').any(|kv| kv == "wait=true") {
                    v.push("POST without wait=true returns no message id".into());
                }
                if b.get("content").is_none() && b.get("embeds").is_none() {
                    v.push("a message needs content or embeds".into());
                }
                if b.get("thread_name").is_some() && thread_id.is_some() {
                    v.push("thread_name and thread_id together".into());
                }
                false
            }
            ("PATCH", rest) => {
                let id = rest.strip_prefix("/messages/").unwrap_or("");
                if !messages.lock().unwrap().iter().any(|m| m == id) {
                    return Ok((404, json!({"message": "Unknown Message", "code": 10008})));
                }
                if b.get("thread_name").is_some() {
                    v.push("thread_name on an edit".into());
                }
                true
            }
            (m, rest) => {
                v.push(format!("unexpected {m} {rest}"));
                false
            }
        };
        validate_message(&mut v, b, editing);
        if !v.is_empty() {
            return Err(v);
        }
        let id = if editing {
            r.path.rsplit('/').next().unwrap().to_owned()
        } else {
            let mut m = messages.lock().unwrap();
            let id = format!("{}", 1_300_000_000_000_000_000u64 + m.len() as u64);
            m.push(id.clone());
            id
        };
        let channel = if b.get("thread_name").is_some() {
            id.clone()
        } else {
            thread_id.unwrap_or_else(|| "555".into())
        };
        Ok((
            200,
            json!({"id": id, "channel_id": channel, "type": 0, "content": b["content"], "embeds": b["embeds"]}),
        ))
    })
}

/// Discord's documented message and embed limits.
fn validate_message(v: &mut Vec<String>, b: &Value, editing: bool) {
    check::only_keys(
        v,
        b,
        "message",
        &[
            "content",
            "username",
            "avatar_url",
            "tts",
            "embeds",
            "allowed_mentions",
            "flags",
            "thread_name",
            "components",
            "attachments",
        ],
    );
    check::string(v, b, "content", false, 2000);
    check::string(v, b, "username", false, 80);
    check::string(v, b, "thread_name", false, 100);
    let embeds = b
        .get("embeds")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if embeds.len() > 10 {
        v.push("more than 10 embeds".into());
    }
    let mut total = 0;
    for e in &embeds {
        check::only_keys(
            v,
            e,
            "embed",
            &[
                "title",
                "type",
                "description",
                "url",
                "timestamp",
                "color",
                "footer",
                "image",
                "thumbnail",
                "author",
                "fields",
            ],
        );
        check::string(v, e, "title", false, 256);
        check::string(v, e, "description", false, 4096);
        let len = |x: &Value| x.as_str().map_or(0, |s| s.chars().count());
        total += len(&e["title"])
            + len(&e["description"])
            + len(&e["footer"]["text"])
            + len(&e["author"]["name"]);
        check::string(v, &e["footer"], "text", false, 2048);
        if e.get("color")
            .is_some_and(|c| c.as_u64().is_none_or(|c| c > 0xFFFFFF))
        {
            v.push("color must be an integer 0..=0xFFFFFF".into());
        }
        if let Some(ts) = e.get("timestamp")
            && ts
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_none()
        {
            v.push("timestamp must be ISO 8601".into());
        }
        let fields = e
            .get("fields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if fields.len() > 25 {
            v.push(format!("{} fields, over 25", fields.len()));
        }
        for f in &fields {
            check::string(v, f, "name", true, 256);
            check::string(v, f, "value", true, 1024);
            total += len(&f["name"]) + len(&f["value"]);
        }
    }
    if total > 6000 {
        v.push(format!("embeds total {total} characters, over 6000"));
    }
    match b.get("allowed_mentions") {
        None => v.push("no allowed_mentions: text could ping anyone".into()),
        Some(am) => {
            check::only_keys(
                v,
                am,
                "allowed_mentions",
                &["parse", "roles", "users", "replied_user"],
            );
            let parse: Vec<&str> = am["parse"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if am.get("roles").is_some() && parse.contains(&"roles") {
                v.push("allowed_mentions: roles with parse roles".into());
            }
            if parse
                .iter()
                .any(|p| !["roles", "users", "everyone"].contains(p))
            {
                v.push(format!("allowed_mentions.parse {parse:?}"));
            }
        }
    }
    let mentions = b["content"].as_str().is_some_and(|c| c.contains("<@&"));
    if editing && mentions {
        v.push("an edit carries a mention".into());
    }
}

async fn setup(extra: &str) -> (MockServer, DiscordReceiver) {
    let server = MockServer::start(validator(Messages::default())).await;
    let config: DiscordConfig = serde_yaml_ng::from_str(&format!(
        "webhook_url: {}/api/webhooks/{WEBHOOK_ID}/{TOKEN}\nmention_role_id: '{ROLE}'\ntimeout: 300ms\n{extra}",
        server.url
    ))
    .unwrap();
    let receiver = DiscordReceiver::new(config, HttpClient::new().unwrap()).unwrap();
    (server, receiver)
}

fn handle_of(outcome: Outcome) -> SinkHandle {
    match outcome {
        Outcome::Sent { handle: Some(h) } => h,
        other => panic!("expected a handle, got {other:?}"),
    }
}

#[tokio::test]
async fn one_message_edited_in_place_with_the_mention_only_on_the_trigger() {
    let (server, dc) = setup("").await;
    let h1 = handle_of(dc.deliver(&trigger(), None).await.unwrap());
    let h2 = handle_of(
        dc.deliver(
            &later(AlertAction::Update, AlertStatus::Flapping, 4),
            Some(&h1),
        )
        .await
        .unwrap(),
    );
    let h3 = handle_of(
        dc.deliver(
            &later(AlertAction::Resolve, AlertStatus::Resolved, 20),
            Some(&h2),
        )
        .await
        .unwrap(),
    );
    assert_eq!(h1, h2);
    assert_eq!(h2, h3);
    let SinkHandle::Discord {
        message_id,
        thread_id,
    } = &h1
    else {
        panic!("{h1:?}")
    };
    assert_eq!(thread_id, &None);
    server.assert_no_violations();

    let reqs = server.requests();
    let methods: Vec<&str> = reqs.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["POST", "PATCH", "PATCH"]);
    assert_eq!(reqs[0].query.as_deref(), Some("wait=true"));
    for r in &reqs[1..] {
        assert!(
            r.path.ends_with(&format!("/messages/{message_id}")),
            "{}",
            r.path
        );
        assert!(!r.raw_body.contains("<@&"));
        assert_eq!(r.body["allowed_mentions"], json!({"parse": []}));
    }
    assert_eq!(reqs[0].body["content"], format!("<@&{ROLE}>"));
    assert_eq!(
        reqs[0].body["allowed_mentions"],
        json!({"parse": [], "roles": [ROLE]})
    );
    let colours: Vec<u64> = reqs
        .iter()
        .map(|r| r.body["embeds"][0]["color"].as_u64().unwrap())
        .collect();
    assert_eq!(
        colours,
        [0xE74C3C, 0xE74C3C, 0x2ECC71],
        "red P1 open, still red flapping, green resolved"
    );
    assert!(
        reqs[2].body["embeds"][0]["title"]
            .as_str()
            .unwrap()
            .contains("RESOLVED after 20m")
    );
}

#[tokio::test]
async fn only_a_trigger_mentions_and_suppressed_is_grey() {
    let (server, dc) = setup("").await;
    // First event of an incident that is not a trigger (a storm member never paged).
    let suppress = later(AlertAction::Suppress, AlertStatus::Suppressed, 1);
    dc.deliver(&suppress, None).await.unwrap();
    server.assert_no_violations();
    let b = &server.requests()[0].body;
    assert!(b.get("content").is_none());
    assert_eq!(b["allowed_mentions"], json!({"parse": []}));
    assert_eq!(b["embeds"][0]["color"], 0x95A5A6);
}

#[tokio::test]
async fn huge_events_fit_every_embed_limit() {
    let (server, dc) = setup("").await;
    let mut e = trigger();
    e.summary = "s".repeat(10_000);
    e.reason = Some("r".repeat(5_000));
    e.regions = (0..400).map(|i| format!("region-{i}")).collect();
    e.server = Some("w".repeat(3_000));
    e.evidence = json!({"x": "y".repeat(20_000)});
    dc.deliver(&e, None).await.unwrap();
    server.assert_no_violations();
}

#[tokio::test]
async fn a_deleted_message_or_webhook_is_permanent() {
    let (server, dc) = setup("").await;
    let gone = SinkHandle::Discord {
        message_id: "42".into(),
        thread_id: None,
    };
    let err = dc
        .deliver(
            &later(AlertAction::Update, AlertStatus::Open, 3),
            Some(&gone),
        )
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.reason().contains("404") && err.reason().contains("gone"),
        "{err}"
    );
    assert!(!err.reason().contains(TOKEN));
    server.script([Reply::Status(
        404,
        r#"{"message": "Unknown Webhook", "code": 10015}"#.into(),
    )]);
    assert!(
        !dc.deliver(&trigger(), None)
            .await
            .unwrap_err()
            .is_retryable()
    );
}

#[tokio::test]
async fn rate_limit_retry_after_from_the_json_body() {
    let (server, dc) = setup("").await;
    server.script([Reply::RateLimited {
        retry_after: "1".into(),
        body: r#"{"message": "You are being rate limited.", "retry_after": 3.25, "global": false}"#
            .into(),
    }]);
    let err = dc.deliver(&trigger(), None).await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_millis(3250)));
    server.script([Reply::Slow(Duration::from_secs(2)), Reply::Drop]);
    assert!(
        dc.deliver(&trigger(), None)
            .await
            .unwrap_err()
            .is_retryable()
    );
    assert!(
        dc.deliver(&trigger(), None)
            .await
            .unwrap_err()
            .is_retryable()
    );
}

#[tokio::test]
async fn forum_threads_for_long_outages() {
    let (server, dc) = setup("forum: true\nthread_after: 30m").await;
    let h = handle_of(dc.deliver(&trigger(), None).await.unwrap());
    let SinkHandle::Discord {
        message_id,
        thread_id: Some(thread),
    } = &h
    else {
        panic!("{h:?}")
    };
    // Short outage so far: edit only.
    dc.deliver(&later(AlertAction::Update, AlertStatus::Open, 10), Some(&h))
        .await
        .unwrap();
    // Long: edit, and a reply in the thread.
    dc.deliver(
        &later(AlertAction::Resolve, AlertStatus::Resolved, 45),
        Some(&h),
    )
    .await
    .unwrap();
    server.assert_no_violations();
    let reqs = server.requests();
    let shape: Vec<(String, Option<String>)> = reqs
        .iter()
        .map(|r| (r.method.to_string(), r.query.clone()))
        .collect();
    assert_eq!(
        shape,
        [
            ("POST".into(), Some("wait=true".into())),
            ("PATCH".into(), Some(format!("thread_id={thread}"))),
            ("PATCH".into(), Some(format!("thread_id={thread}"))),
            ("POST".into(), Some(format!("wait=true&thread_id={thread}"))),
        ]
    );
    assert_eq!(reqs[0].body["thread_name"], "[P1] acme/weather unreachable");
    assert!(reqs[1].path.ends_with(&format!("/messages/{message_id}")));
    assert!(
        reqs[3].body["content"]
            .as_str()
            .unwrap()
            .contains("RESOLVED after 45m")
    );
}

#[tokio::test]
async fn render_hides_the_token() {
    let (_server, dc) = setup("").await;
    let rendered = dc.render(&trigger(), None);
    assert_eq!(rendered.len(), 1);
    assert!(
        rendered[0]
            .url_redacted
            .ends_with(&format!("/api/webhooks/{WEBHOOK_ID}/<redacted>?wait=true"))
    );
    assert!(!format!("{rendered:?}").contains(TOKEN));
    assert!(!format!("{dc:?}").contains(TOKEN));
    assert_eq!(dc.destination(), format!("discord:webhook/{WEBHOOK_ID}"));
}

#[test]
fn config_checks() {
    let http = HttpClient::new().unwrap();
    let parse = |y: &str| serde_yaml_ng::from_str::<DiscordConfig>(y).unwrap();
    assert!(
        DiscordReceiver::new(
            parse("webhook_url: https://discord.com/api/webhooks/x/y"),
            http.clone()
        )
        .is_err()
    );
    assert!(
        DiscordReceiver::new(
            parse("webhook_url: https://discord.com/api/webhooks/1/y\nthread_after: 1h"),
            http.clone()
        )
        .is_err()
    );
    assert!(
        DiscordReceiver::new(
            parse("webhook_url: https://discord.com/api/webhooks/1/y\nmention_role_id: ops"),
            http.clone()
        )
        .is_err()
    );
    assert!(
        DiscordReceiver::new(
            parse("webhook_url: https://discord.com/api/webhooks/1/y"),
            http
        )
        .is_ok()
    );
    assert!(serde_yaml_ng::from_str::<DiscordConfig>("webhook_url: x\nmention: 1").is_err());
}

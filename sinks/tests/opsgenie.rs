//! OpsGenie Alert API contract: create with the alias, close by alias (URL-encoded),
//! `GenieKey` auth, documented field limits; US/EU base URLs.

mod common;

use std::sync::Arc;

use common::{MockServer, Recorded, Reply, Validator, check, later, trigger};
use mcpulse_schemas::{AlertAction, AlertStatus, Severity};
use mcpulse_sinks::receivers::{
    HttpClient, OpsGenieConfig, OpsGenieReceiver, OpsGenieRegion, Outcome, Receiver, SinkHandle,
};
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

const KEY: &str = "0b3c1f2e-6a0d-4c1b-9a55-2f1e9d7c3b11";

fn validator() -> Validator {
    Arc::new(|r: &Recorded| {
        let mut v = Vec::new();
        if r.header("authorization") != Some(&format!("GenieKey {KEY}")) {
            v.push(format!(
                "Authorization must be GenieKey <key>, got {:?}",
                r.header("authorization")
            ));
        }
        check::json_content_type(&mut v, r);
        if r.method != "POST" {
            v.push(format!("method {} (only POST is used)", r.method));
        }
        let segments: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["v2", "alerts"] => validate_create(&mut v, &r.body),
            ["v2", "alerts", identifier, "close"] => {
                if r.query.as_deref() != Some("identifierType=alias") {
                    v.push(format!(
                        "close needs identifierType=alias, got {:?}",
                        r.query
                    ));
                }
                let alias = percent_decode_str(identifier).decode_utf8_lossy();
                if alias.chars().count() > 512 || alias.is_empty() {
                    v.push("alias is 1..512 characters".into());
                }
                check::only_keys(&mut v, &r.body, "close", &["user", "source", "note"]);
                check::string(&mut v, &r.body, "source", false, 100);
                check::string(&mut v, &r.body, "note", false, 25_000);
            }
            _ => v.push(format!("unknown path {}", r.path)),
        }
        if v.is_empty() {
            Ok((
                202,
                json!({"result": "Request will be processed", "took": 0.107, "requestId": "43a29c5c-3dbf-4fa4-9c26-f4f71023e120"}),
            ))
        } else {
            Err(v)
        }
    })
}

fn validate_create(v: &mut Vec<String>, b: &Value) {
    check::only_keys(
        v,
        b,
        "alert",
        &[
            "message",
            "alias",
            "description",
            "responders",
            "visibleTo",
            "actions",
            "tags",
            "details",
            "entity",
            "source",
            "priority",
            "user",
            "note",
        ],
    );
    check::string(v, b, "message", true, 130);
    check::string(v, b, "alias", false, 512);
    check::string(v, b, "description", false, 15_000);
    check::string(v, b, "entity", false, 512);
    check::string(v, b, "source", false, 100);
    if b.get("priority").is_some() {
        check::one_of(v, b, "priority", &["P1", "P2", "P3", "P4", "P5"]);
    }
    if let Some(tags) = b.get("tags") {
        let tags = tags.as_array().cloned().unwrap_or_default();
        if tags.len() > 20 {
            v.push(format!("{} tags, over 20", tags.len()));
        }
        for t in tags {
            if t.as_str().is_none_or(|t| t.chars().count() > 50) {
                v.push(format!("tag {t} is not a string of at most 50 characters"));
            }
        }
    }
    if let Some(details) = b.get("details") {
        match details.as_object() {
            Some(map) => {
                let total: usize = map
                    .iter()
                    .map(|(k, v)| k.chars().count() + v.as_str().map_or(0, |s| s.chars().count()))
                    .sum();
                if total > 8000 {
                    v.push(format!("details total {total} characters, over 8000"));
                }
                if map.values().any(|x| !x.is_string()) {
                    v.push("details values must be strings".into());
                }
            }
            None => v.push("details must be an object".into()),
        }
    }
    for r in b
        .get("responders")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check::one_of(v, r, "type", &["team", "user", "escalation", "schedule"]);
        let ids = ["id", "name", "username"]
            .iter()
            .filter(|k| r.get(**k).is_some())
            .count();
        if ids != 1 {
            v.push(format!("responder {r} needs one of id, name, username"));
        }
    }
}

async fn setup(extra: &str) -> (MockServer, OpsGenieReceiver) {
    let server = MockServer::start(validator()).await;
    let config: OpsGenieConfig = serde_yaml_ng::from_str(&format!(
        "api_key: {KEY}\nurl: {}\ntimeout: 300ms\n{extra}",
        server.url
    ))
    .unwrap();
    let receiver = OpsGenieReceiver::new(config, HttpClient::new().unwrap()).unwrap();
    (server, receiver)
}

#[tokio::test]
async fn creates_with_alias_and_closes_by_alias() {
    let (server, og) = setup(
        "responders: [{type: team, name: sre}, {type: user, username: ana@example.com}]\n\
         tags: [mcp, prod]\npriority: {P1: P2}",
    )
    .await;
    let h = match og.deliver(&trigger(), None).await.unwrap() {
        Outcome::Sent { handle: Some(h) } => h,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        h,
        SinkHandle::OpsGenie {
            alias: "mcpulse/acme/weather/unreachable".into()
        }
    );
    og.deliver(
        &later(AlertAction::Resolve, AlertStatus::Resolved, 9),
        Some(&h),
    )
    .await
    .unwrap();
    server.assert_no_violations();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    let create = &reqs[0].body;
    assert_eq!(reqs[0].path, "/v2/alerts");
    assert_eq!(create["alias"], "mcpulse/acme/weather/unreachable");
    assert_eq!(create["priority"], "P2");
    assert_eq!(create["entity"], "weather");
    assert_eq!(create["source"], "mcpulse");
    assert_eq!(
        create["responders"],
        json!([{"type": "team", "name": "sre"}, {"type": "user", "username": "ana@example.com"}])
    );
    assert_eq!(create["tags"][0], "mcp");
    assert!(
        create["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("severity:P1"))
    );
    assert!(
        create["message"]
            .as_str()
            .unwrap()
            .starts_with("[P1] acme/weather unreachable")
    );
    assert_eq!(create["details"]["tenant"], "acme");
    // `/` in the alias is encoded, so the alias stays one path segment.
    assert_eq!(
        reqs[1].path,
        "/v2/alerts/mcpulse%2Facme%2Fweather%2Funreachable/close"
    );
    assert_eq!(reqs[1].query.as_deref(), Some("identifierType=alias"));
}

#[tokio::test]
async fn limits_are_respected() {
    let (server, og) = setup(&format!(
        "tags: [{}]",
        (0..20)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .await;
    let mut e = trigger();
    e.summary = "s".repeat(500);
    e.evidence = json!({"blob": "x".repeat(40_000)});
    e.severity = Severity::P4;
    e.action = AlertAction::Update;
    og.deliver(&e, None).await.unwrap();
    server.assert_no_violations();
    let b = &server.requests()[0].body;
    assert_eq!(b["message"].as_str().unwrap().chars().count(), 130);
    assert_eq!(b["priority"], "P4");
    assert_eq!(b["tags"].as_array().unwrap().len(), 20);
    assert_eq!(b["description"].as_str().unwrap().chars().count(), 15_000);
}

#[tokio::test]
async fn blips_and_unopened_closes_send_nothing() {
    let (server, og) = setup("").await;
    let blip = later(AlertAction::Blip, AlertStatus::Resolved, 1);
    assert!(matches!(
        og.deliver(&blip, None).await.unwrap(),
        Outcome::Skipped { .. }
    ));
    let suppress = later(AlertAction::Suppress, AlertStatus::Suppressed, 1);
    assert!(matches!(
        og.deliver(&suppress, None).await.unwrap(),
        Outcome::Skipped { .. }
    ));
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn rate_limit_and_auth_errors() {
    let (server, og) = setup("").await;
    server.script([
        Reply::RateLimited {
            retry_after: "2".into(),
            body: r#"{"message":"You are making too many requests!","took":0.0,"requestId":"x"}"#
                .into(),
        },
        Reply::Status(
            422,
            r#"{"message":"Request body is not processable."}"#.into(),
        ),
        Reply::Status(401, r#"{"message":"Key format is not valid!"}"#.into()),
    ]);
    let err = og.deliver(&trigger(), None).await.unwrap_err();
    assert!(err.is_retryable() && err.retry_after() == Some(std::time::Duration::from_secs(2)));
    assert!(
        !og.deliver(&trigger(), None)
            .await
            .unwrap_err()
            .is_retryable()
    );
    let err = og.deliver(&trigger(), None).await.unwrap_err();
    assert!(!err.is_retryable() && err.reason().contains("401"));
    assert!(!err.reason().contains(KEY));
}

#[test]
fn region_base_urls() {
    assert_eq!(OpsGenieRegion::Us.base_url(), "https://api.opsgenie.com");
    assert_eq!(OpsGenieRegion::Eu.base_url(), "https://api.eu.opsgenie.com");
    let config: OpsGenieConfig =
        serde_yaml_ng::from_str(&format!("api_key: {KEY}\nregion: eu")).unwrap();
    let og = OpsGenieReceiver::new(config, HttpClient::new().unwrap()).unwrap();
    let rendered = og.render(&trigger(), None);
    assert_eq!(
        rendered[0].url_redacted,
        "https://api.eu.opsgenie.com/v2/alerts"
    );
    assert!(
        rendered[0]
            .headers_redacted
            .contains(&("Authorization".to_owned(), "GenieKey <redacted>".to_owned()))
    );
    let handle = SinkHandle::OpsGenie {
        alias: "mcpulse/acme/weather/unreachable".into(),
    };
    let close = og.render(
        &later(AlertAction::Resolve, AlertStatus::Resolved, 5),
        Some(&handle),
    );
    assert_eq!(
        close[0].url_redacted,
        "https://api.eu.opsgenie.com/v2/alerts/mcpulse%2Facme%2Fweather%2Funreachable/close?identifierType=alias"
    );
    let us: OpsGenieConfig = serde_yaml_ng::from_str(&format!("api_key: {KEY}")).unwrap();
    let og = OpsGenieReceiver::new(us, HttpClient::new().unwrap()).unwrap();
    assert_eq!(
        og.render(&trigger(), None)[0].url_redacted,
        "https://api.opsgenie.com/v2/alerts"
    );
    assert!(
        serde_yaml_ng::from_str::<OpsGenieConfig>(&format!("api_key: {KEY}\nregion: apac"))
            .is_err()
    );
    let bad: OpsGenieConfig =
        serde_yaml_ng::from_str(&format!("api_key: {KEY}\nresponders: [{{type: team}}]")).unwrap();
    assert!(OpsGenieReceiver::new(bad, HttpClient::new().unwrap()).is_err());
}

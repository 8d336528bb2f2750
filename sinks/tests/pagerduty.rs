//! PagerDuty Events API v2 contract: a local stand-in validates every event and answers
//! as scripted; the receiver's requests and decisions are checked.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{MockServer, Recorded, Reply, Validator, check, later, trigger};
use mcpulse_schemas::{AlertAction, AlertStatus, Severity};
use mcpulse_sinks::receivers::classify::{Decision, decide};
use mcpulse_sinks::receivers::{
    DeliveryError, HttpClient, Outcome, PagerDutyConfig, PagerDutyLink, PagerDutyReceiver,
    Receiver, ReceiverKind, Secret, SinkHandle,
};
use serde_json::{Value, json};

const KEY: &str = "R0UT1NGKEY0123456789abcdefABCDEF";

/// The Events API v2 contract for `POST /v2/enqueue`.
fn validator() -> Validator {
    Arc::new(|r: &Recorded| {
        let mut v = Vec::new();
        if r.method != "POST" || r.path != "/v2/enqueue" {
            v.push(format!(
                "{} {}: expected POST /v2/enqueue",
                r.method, r.path
            ));
        }
        check::json_content_type(&mut v, r);
        if r.raw_body.len() > 512 * 1024 {
            v.push(format!("event is {} bytes, over 512 KB", r.raw_body.len()));
        }
        let b = &r.body;
        check::only_keys(
            &mut v,
            b,
            "event",
            &[
                "routing_key",
                "event_action",
                "dedup_key",
                "payload",
                "links",
                "images",
                "client",
                "client_url",
            ],
        );
        check::string(&mut v, b, "routing_key", true, 32);
        if b["routing_key"] != KEY {
            v.push("wrong routing_key".into());
        }
        check::one_of(
            &mut v,
            b,
            "event_action",
            &["trigger", "acknowledge", "resolve"],
        );
        let action = b["event_action"].as_str().unwrap_or("");
        check::string(&mut v, b, "dedup_key", action != "trigger", 255);
        if action == "trigger" {
            let p = &b["payload"];
            check::only_keys(
                &mut v,
                p,
                "payload",
                &[
                    "summary",
                    "source",
                    "severity",
                    "timestamp",
                    "component",
                    "group",
                    "class",
                    "custom_details",
                ],
            );
            check::string(&mut v, p, "summary", true, 1024);
            check::string(&mut v, p, "source", true, usize::MAX);
            check::one_of(
                &mut v,
                p,
                "severity",
                &["critical", "error", "warning", "info"],
            );
            if let Some(ts) = p.get("timestamp")
                && ts
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_none()
            {
                v.push(format!("timestamp {ts} is not ISO 8601"));
            }
            for key in ["component", "group", "class"] {
                check::string(&mut v, p, key, false, usize::MAX);
            }
            if p.get("custom_details").is_some_and(|d| !d.is_object()) {
                v.push("custom_details must be an object".into());
            }
        }
        if let Some(links) = b.get("links") {
            for link in links.as_array().into_iter().flatten() {
                check::only_keys(&mut v, link, "link", &["href", "text"]);
                check::string(&mut v, link, "href", true, usize::MAX);
            }
        }
        for key in ["client", "client_url"] {
            check::string(&mut v, b, key, false, usize::MAX);
        }
        if v.is_empty() {
            Ok((
                202,
                json!({"status": "success", "message": "Event processed", "dedup_key": b["dedup_key"]}),
            ))
        } else {
            Err(v)
        }
    })
}

fn config(url: &str) -> PagerDutyConfig {
    serde_yaml_ng::from_str(&format!(
        "routing_key: {KEY}\nurl: {url}\nclient_url: https://mcpulse.example.com\ntimeout: 300ms\n\
         links: [{{href: 'https://grafana.example.com/d/mcp?var-server={{server}}', text: Dashboard}}]"
    ))
    .unwrap()
}

async fn setup() -> (MockServer, PagerDutyReceiver) {
    let server = MockServer::start(validator()).await;
    let receiver = PagerDutyReceiver::new(config(&server.url), HttpClient::new().unwrap()).unwrap();
    (server, receiver)
}

fn handle_of(outcome: Outcome) -> SinkHandle {
    match outcome {
        Outcome::Sent { handle: Some(h) } => h,
        other => panic!("expected a handle, got {other:?}"),
    }
}

#[tokio::test]
async fn trigger_update_resolve_share_one_dedup_key() {
    let (server, pd) = setup().await;
    let h = handle_of(pd.deliver(&trigger(), None).await.unwrap());
    assert_eq!(
        h,
        SinkHandle::PagerDuty {
            dedup_key: "mcpulse/acme/weather/unreachable".into()
        }
    );
    let mut update = later(AlertAction::Update, AlertStatus::Flapping, 5);
    update.severity = Severity::P2;
    let h = handle_of(pd.deliver(&update, Some(&h)).await.unwrap());
    let resolve = later(AlertAction::Resolve, AlertStatus::Resolved, 12);
    pd.deliver(&resolve, Some(&h)).await.unwrap();

    server.assert_no_violations();
    let reqs = server.requests();
    let actions: Vec<&str> = reqs
        .iter()
        .map(|r| r.body["event_action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "trigger", "resolve"]);
    for r in &reqs {
        assert_eq!(r.body["dedup_key"], "mcpulse/acme/weather/unreachable");
    }
    let first = &reqs[0].body;
    assert_eq!(first["payload"]["severity"], "critical");
    assert_eq!(reqs[1].body["payload"]["severity"], "error");
    assert_eq!(first["payload"]["source"], "weather");
    assert_eq!(first["payload"]["component"], "weather");
    assert_eq!(first["payload"]["group"], "acme");
    assert_eq!(first["payload"]["class"], "unreachable");
    assert_eq!(first["payload"]["timestamp"], "2026-11-21T10:00:00+00:00");
    assert_eq!(first["payload"]["custom_details"]["incident_id"], "3f2a9c");
    assert_eq!(first["client"], "mcpulse");
    assert_eq!(first["client_url"], "https://mcpulse.example.com");
    assert_eq!(
        first["links"],
        json!([{"href": "https://grafana.example.com/d/mcp?var-server=weather", "text": "Dashboard"}])
    );
}

#[tokio::test]
async fn blips_and_unpaged_suppressions_send_nothing() {
    let (server, pd) = setup().await;
    let mut blip = later(AlertAction::Blip, AlertStatus::Resolved, 2);
    blip.severity = Severity::P4;
    assert!(matches!(
        pd.deliver(&blip, None).await.unwrap(),
        Outcome::Skipped { .. }
    ));
    let suppress = later(AlertAction::Suppress, AlertStatus::Suppressed, 1);
    assert!(matches!(
        pd.deliver(&suppress, None).await.unwrap(),
        Outcome::Skipped { .. }
    ));
    // A resolve of an incident that never paged here must not close a later one.
    let resolve = later(AlertAction::Resolve, AlertStatus::Resolved, 3);
    assert!(matches!(
        pd.deliver(&resolve, None).await.unwrap(),
        Outcome::Skipped { .. }
    ));
    assert!(pd.render(&blip, None).is_empty());
    assert!(server.requests().is_empty());

    // A member that had paged is resolved when a storm takes it over.
    let h = handle_of(pd.deliver(&trigger(), None).await.unwrap());
    pd.deliver(&suppress, Some(&h)).await.unwrap();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].body["event_action"], "resolve");
    server.assert_no_violations();
}

#[tokio::test]
async fn long_summary_is_cut_and_huge_evidence_dropped() {
    let (server, pd) = setup().await;
    let mut e = trigger();
    e.summary = "é".repeat(3000);
    e.evidence = json!({"blob": "x".repeat(600 * 1024)});
    e.dedup_key = "k".repeat(400);
    pd.deliver(&e, None).await.unwrap();
    server.assert_no_violations();
    let body = &server.requests()[0].body;
    assert_eq!(
        body["payload"]["summary"].as_str().unwrap().chars().count(),
        1024
    );
    assert!(
        body["payload"]["custom_details"]["evidence"]
            .as_str()
            .unwrap()
            .contains("dropped")
    );
    assert!(
        body["dedup_key"]
            .as_str()
            .unwrap()
            .starts_with("mcpulse-sha256-")
    );
}

#[tokio::test]
async fn answers_map_to_retry_decisions() {
    let (server, pd) = setup().await;
    let e = trigger();
    server.script([
        Reply::Status(
            400,
            r#"{"status":"invalid event","message":"Event object is invalid"}"#.into(),
        ),
        Reply::RateLimited {
            retry_after: "7".into(),
            body: String::new(),
        },
        Reply::Status(500, "oops".into()),
        Reply::Status(503, String::new()),
        Reply::Slow(Duration::from_secs(2)),
        Reply::Drop,
    ]);
    let err = pd.deliver(&e, None).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.reason().contains("400") && err.reason().contains("Event object is invalid"));
    let err = pd.deliver(&e, None).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)), "{err}");
    assert!(pd.deliver(&e, None).await.unwrap_err().is_retryable());
    assert!(pd.deliver(&e, None).await.unwrap_err().is_retryable());
    let err = pd.deliver(&e, None).await.unwrap_err();
    assert!(
        err.is_retryable() && err.reason().starts_with("timeout"),
        "{err}"
    );
    let err = pd.deliver(&e, None).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(server.dropped(), 1);
    // Nothing listening at all.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let nowhere = PagerDutyReceiver::new(config(&closed), HttpClient::new().unwrap()).unwrap();
    let err = nowhere.deliver(&e, None).await.unwrap_err();
    assert!(
        err.is_retryable() && err.reason().starts_with("connection failed"),
        "{err}"
    );
    server.assert_no_violations();
}

#[tokio::test]
async fn every_status_code_gets_the_table_decision() {
    let (server, pd) = setup().await;
    for code in [
        200, 201, 202, 204, 400, 401, 403, 404, 405, 408, 409, 413, 422, 429, 500, 501, 502, 503,
        504,
    ] {
        server.script([Reply::Status(code, String::new())]);
        let result = pd.deliver(&trigger(), None).await;
        match decide(ReceiverKind::PagerDuty, code) {
            Decision::Delivered => assert!(result.is_ok(), "{code}: {result:?}"),
            Decision::Retry(_) => assert!(
                matches!(result, Err(DeliveryError::Retryable { .. })),
                "{code}: {result:?}"
            ),
            Decision::Permanent(_) => assert!(
                matches!(result, Err(DeliveryError::Permanent { .. })),
                "{code}: {result:?}"
            ),
        }
    }
}

#[tokio::test]
async fn render_is_the_sent_request_with_the_key_redacted() {
    let (server, pd) = setup().await;
    let rendered = pd.render(&trigger(), None);
    assert_eq!(rendered.len(), 1);
    pd.deliver(&trigger(), None).await.unwrap();
    let sent = &server.requests()[0];
    let mut expected: Value = sent.body.clone();
    expected["routing_key"] = json!("<redacted>");
    assert_eq!(rendered[0].body, expected);
    assert_eq!(rendered[0].method, "POST");
    assert_eq!(
        rendered[0].url_redacted,
        format!("{}/v2/enqueue", server.url)
    );
}

#[test]
fn config_rejects_unknown_fields_and_hides_the_key() {
    let err =
        serde_yaml_ng::from_str::<PagerDutyConfig>("routing_key: abc\nroutingkey: x").unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
    let c = PagerDutyConfig {
        routing_key: Secret::new(KEY),
        url: "https://events.pagerduty.com".into(),
        client: None,
        client_url: None,
        links: vec![PagerDutyLink {
            href: "https://x".into(),
            text: "x".into(),
        }],
        timeout: Duration::from_secs(1),
    };
    assert!(!format!("{c:?}").contains(KEY));
    let r = PagerDutyReceiver::new(c, HttpClient::new().unwrap()).unwrap();
    assert!(!format!("{r:?}").contains(KEY));
    assert!(
        r.destination()
            .starts_with("pagerduty:events.pagerduty.com:")
    );
}

//! Generic webhook contract: the AlertEvent as JSON, signed with HMAC-SHA256 over
//! "{timestamp}.{body}", verified here the way a receiving service would.

mod common;

use std::sync::Arc;

use common::{MockServer, Recorded, Reply, Validator, check, trigger};
use hmac::{Hmac, Mac};
use mcpulse_schemas::AlertEvent;
use mcpulse_sinks::receivers::{HttpClient, Outcome, Receiver, WebhookConfig, WebhookReceiver};
use serde_json::json;
use sha2::Sha256;

const SECRET: &str = "whsec-9f8e7d6c5b4a39281706";
const TOKEN: &str = "tok3n-in-the-path-77";
const AUTH: &str = "Bearer header-secret-55";

/// How a receiving service verifies a delivery.
fn validator() -> Validator {
    Arc::new(|r: &Recorded| {
        let mut v = Vec::new();
        if r.method != "POST" || r.path != format!("/hooks/{TOKEN}") {
            v.push(format!("{} {}", r.method, r.path));
        }
        check::json_content_type(&mut v, r);
        let ts = r.header("x-mcpulse-timestamp").unwrap_or("");
        let Ok(ts_num) = ts.parse::<i64>() else {
            return Err(vec!["X-Mcpulse-Timestamp is not unix seconds".into()]);
        };
        if (chrono::Utc::now().timestamp() - ts_num).abs() > 300 {
            v.push("timestamp older than 5 minutes".into());
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{ts}.{}", r.raw_body).as_bytes());
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        if r.header("x-mcpulse-signature") != Some(expected.as_str()) {
            v.push("bad signature".into());
        }
        if r.header("authorization") != Some(AUTH) {
            v.push("configured header missing".into());
        }
        match serde_json::from_str::<AlertEvent>(&r.raw_body) {
            Ok(e) if Some(e.event_id.as_str()) == r.header("x-mcpulse-event-id") => {}
            Ok(_) => v.push("X-Mcpulse-Event-Id differs from the body".into()),
            Err(e) => v.push(format!("body is not an AlertEvent: {e}")),
        }
        if v.is_empty() {
            Ok((204, json!(null)))
        } else {
            Err(v)
        }
    })
}

async fn setup() -> (MockServer, WebhookReceiver) {
    let server = MockServer::start(validator()).await;
    let config: WebhookConfig = serde_yaml_ng::from_str(&format!(
        "url: {}/hooks/{TOKEN}\nsecret: {SECRET}\nheaders: {{Authorization: '{AUTH}'}}\ntimeout: 300ms",
        server.url
    ))
    .unwrap();
    (
        server,
        WebhookReceiver::new(config, HttpClient::new().unwrap()).unwrap(),
    )
}

#[tokio::test]
async fn delivers_a_verifiable_signed_event() {
    let (server, wh) = setup().await;
    let outcome = wh.deliver(&trigger(), None).await.unwrap();
    assert_eq!(outcome, Outcome::Sent { handle: None });
    server.assert_no_violations();
    let sent: AlertEvent = serde_json::from_str(&server.requests()[0].raw_body).unwrap();
    assert_eq!(sent, trigger());
}

#[tokio::test]
async fn failures_are_classified() {
    let (server, wh) = setup().await;
    server.script([
        Reply::Status(410, "gone".into()),
        Reply::Status(502, String::new()),
        Reply::Drop,
    ]);
    assert!(
        !wh.deliver(&trigger(), None)
            .await
            .unwrap_err()
            .is_retryable()
    );
    assert!(
        wh.deliver(&trigger(), None)
            .await
            .unwrap_err()
            .is_retryable()
    );
    assert!(
        wh.deliver(&trigger(), None)
            .await
            .unwrap_err()
            .is_retryable()
    );
}

#[tokio::test]
async fn render_hides_path_secret_and_headers() {
    let (server, wh) = setup().await;
    let r = &wh.render(&trigger(), None)[0];
    assert_eq!(r.url_redacted, format!("{}/<redacted>", server.url));
    let text = format!("{r:?}");
    for secret in [SECRET, TOKEN, AUTH] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(
        r.headers_redacted
            .contains(&("Authorization".into(), "<redacted>".into()))
    );
    assert!(
        r.headers_redacted
            .iter()
            .any(|(k, v)| k == "X-Mcpulse-Signature" && v.starts_with("sha256="))
    );
}

#[test]
fn config_checks() {
    let http = HttpClient::new().unwrap();
    let short: WebhookConfig =
        serde_yaml_ng::from_str("url: https://x.example.com/h\nsecret: short").unwrap();
    assert!(WebhookReceiver::new(short, http.clone()).is_err());
    let reserved: WebhookConfig = serde_yaml_ng::from_str(
        "url: https://x.example.com/h\nsecret: 0123456789abcdef\nheaders: {X-Mcpulse-Signature: x}",
    )
    .unwrap();
    assert!(WebhookReceiver::new(reserved, http).is_err());
}

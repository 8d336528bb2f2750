//! No receiver secret appears in any error, `Debug` output or rendered request: not when
//! the server echoes it back, not in connection or timeout errors (whose URL holds the
//! Discord token), not in config errors.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{MockServer, Reply, later, trigger};
use mcpulse_schemas::{AlertAction, AlertStatus};
use mcpulse_sinks::receivers::{HttpClient, Receiver, ReceiverConfig, ReceiverKind, SinkHandle};
use serde_json::json;

const PD_KEY: &str = "PDk3y0123456789abcdefABCDEF01234";
const OG_KEY: &str = "0ps-g3n1e-key-1111-2222-333344445555";
const DC_TOKEN: &str = "d1sc0rdT0ken_abcdefghijklmnopqrstuvwxyz-0123456789";
const WH_SECRET: &str = "w3bh00k-hmac-secret-value";
const WH_PATH: &str = "p4th-t0ken-9876";
const WH_HEADER: &str = "Bearer h3ader-t0ken-5432";
const SMTP_PASSWORD: &str = "smtp-s3cret-pa55";

const ALL: &[&str] = &[
    PD_KEY,
    OG_KEY,
    DC_TOKEN,
    WH_SECRET,
    WH_PATH,
    WH_HEADER,
    SMTP_PASSWORD,
];

fn configs(base: &str) -> Vec<(ReceiverKind, String)> {
    let port: u16 = base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(587);
    vec![
        (
            ReceiverKind::PagerDuty,
            format!("routing_key: {PD_KEY}\nurl: {base}\ntimeout: 300ms"),
        ),
        (
            ReceiverKind::OpsGenie,
            format!("api_key: {OG_KEY}\nurl: {base}\ntimeout: 300ms"),
        ),
        (
            ReceiverKind::Discord,
            format!("webhook_url: {base}/api/webhooks/123/{DC_TOKEN}\ntimeout: 300ms"),
        ),
        (
            ReceiverKind::Webhook,
            format!(
                "url: {base}/in/{WH_PATH}\nsecret: {WH_SECRET}\nheaders: {{Authorization: '{WH_HEADER}'}}\ntimeout: 300ms"
            ),
        ),
        (
            ReceiverKind::Email,
            format!(
                "smtp_host: 127.0.0.1\nport: {port}\nusername: u\npassword: {SMTP_PASSWORD}\nfrom: a@example.com\nto: [b@example.com]\ntimeout: 2s"
            ),
        ),
    ]
}

fn build(base: &str) -> Vec<Box<dyn Receiver>> {
    let http = HttpClient::new().unwrap();
    configs(base)
        .into_iter()
        .map(|(kind, yaml)| {
            let config =
                ReceiverConfig::from_yaml(kind, serde_yaml_ng::from_str(&yaml).unwrap()).unwrap();
            assert_no_secret(&format!("{config:?}"));
            config.build(&http).unwrap()
        })
        .collect()
}

fn assert_no_secret(text: &str) {
    for secret in ALL {
        assert!(!text.contains(secret), "secret {secret} leaked in: {text}");
    }
}

/// A server that echoes the whole request (URL, headers, body) in its error.
async fn echo_server() -> MockServer {
    MockServer::start(Arc::new(|r| {
        Ok((400, json!({"message": "invalid", "echo": {"path": r.path, "headers": format!("{:?}", r.headers), "body": r.raw_body}})))
    }))
    .await
}

#[tokio::test]
async fn errors_debug_and_renders_never_show_a_secret() {
    let server = echo_server().await;
    // The echoed answer, as a 400 (permanent) and as a 500 (retryable).
    for status in [400u16, 500] {
        for r in build(&server.url) {
            if r.kind() == ReceiverKind::Email {
                continue;
            }
            server.script([Reply::Status(status, String::new())]);
            let err = r.deliver(&trigger(), None).await.unwrap_err();
            assert_no_secret(&format!("{err} {err:?}"));
        }
    }
    for r in build(&server.url) {
        if r.kind() == ReceiverKind::Email {
            continue;
        }
        // The server echoes; our own error text must still be clean.
        let err = r.deliver(&trigger(), None).await.unwrap_err();
        assert!(
            err.reason().contains("echo") || err.reason().contains("invalid"),
            "{err}"
        );
        assert_no_secret(&err.to_string());
    }

    // Connection refused and timeouts: the URL with the token is in reqwest's error.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for r in build(&closed) {
        let err = r.deliver(&trigger(), None).await.unwrap_err();
        assert!(err.is_retryable(), "{}: {err}", r.kind().as_str());
        assert_no_secret(&format!("{err} {err:?}"));
    }
    let slow = echo_server().await;
    for r in build(&slow.url) {
        if r.kind() == ReceiverKind::Email {
            continue;
        }
        slow.script([Reply::Slow(Duration::from_secs(2))]);
        let err = r.deliver(&trigger(), None).await.unwrap_err();
        assert!(err.reason().starts_with("timeout"), "{err}");
        assert_no_secret(&format!("{err} {err:?}"));
    }

    // Debug and render of every receiver, for every kind of transition and handle.
    let handles = [
        None,
        Some(SinkHandle::PagerDuty {
            dedup_key: "k".into(),
        }),
        Some(SinkHandle::OpsGenie { alias: "k".into() }),
        Some(SinkHandle::Discord {
            message_id: "1".into(),
            thread_id: Some("2".into()),
        }),
        Some(SinkHandle::Email {
            root_message_id: "<a@mcpulse>".into(),
            last_message_id: "<b@mcpulse>".into(),
            subject: "s".into(),
        }),
    ];
    let events = [
        trigger(),
        later(AlertAction::Update, AlertStatus::Flapping, 3),
        later(AlertAction::Suppress, AlertStatus::Suppressed, 4),
        later(AlertAction::Resolve, AlertStatus::Resolved, 90),
    ];
    for r in build("https://provider.example.com") {
        assert_no_secret(&format!("{r:?} {}", r.destination()));
        for event in &events {
            for handle in &handles {
                let rendered = r.render(event, handle.as_ref());
                assert_no_secret(&serde_json::to_string(&rendered).unwrap());
                assert_no_secret(&format!("{rendered:?}"));
            }
        }
    }
}

#[test]
fn config_errors_never_show_a_secret() {
    let http = HttpClient::new().unwrap();
    let bad = [
        (
            ReceiverKind::Discord,
            format!("webhook_url: 'not a url {DC_TOKEN}'"),
        ),
        (
            ReceiverKind::Discord,
            format!("webhook_url: 'https://discord.com/hooks/{DC_TOKEN}'"),
        ),
        (
            ReceiverKind::Webhook,
            format!("url: 'ftp://x/{WH_PATH}'\nsecret: {WH_SECRET}"),
        ),
        (
            ReceiverKind::Webhook,
            format!("url: https://x.example.com/\nsecret: {}", &WH_SECRET[..8]),
        ),
        (
            ReceiverKind::PagerDuty,
            format!("routing_key: {PD_KEY}\nurl: 'https://u:{OG_KEY}@x.example.com'"),
        ),
    ];
    for (kind, yaml) in bad {
        let config =
            ReceiverConfig::from_yaml(kind, serde_yaml_ng::from_str(&yaml).unwrap()).unwrap();
        let err = config.build(&http).unwrap_err();
        assert_no_secret(&format!("{err} {err:?}"));
    }
    // A secret of the wrong type is refused without being quoted.
    let err = ReceiverConfig::from_yaml(
        ReceiverKind::PagerDuty,
        serde_yaml_ng::from_str("routing_key: 12345678901234567890").unwrap(),
    )
    .unwrap_err();
    assert!(!err.to_string().contains("12345678901234567890"), "{err}");
}

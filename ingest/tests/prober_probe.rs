//! Whole probes ([`Prober::probe`]: resolve, check, sequence, result) against the fault
//! server on loopback: certificates (self-signed, expiring, expired), redirects (followed,
//! re-checked, looping, credentials kept to their origin) and the tool list sent only
//! when its hash changes.

mod common;

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use common::fault_server::FaultServer;
use mcpulse_ingest::prober::probe::{Prober, ProberSettings};
use mcpulse_ingest::prober::target_guard::TargetPolicy;
use mcpulse_ingest::prober::targets::{Credential, Target, TransportHint};
use mcpulse_ingest::prober::timed_http::TlsSettings;
use mcpulse_schemas::probe::{FailureReason, Phase, ProbeResult, ProtocolEra};
use rustls::pki_types::CertificateDer;
use url::Url;

const TOKEN: &str = "s3cret-probe-token";

fn settings() -> ProberSettings {
    let mut settings = ProberSettings::new("test");
    settings.policy = TargetPolicy {
        allow_loopback: true,
        ..Default::default()
    };
    settings
}

fn target(url: &str) -> Target {
    Target {
        tenant: "acme".into(),
        server: "fault".into(),
        url: Url::parse(url).unwrap(),
        transport: TransportHint::Auto,
        credential: Some(Credential::bearer(TOKEN).unwrap()),
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(5),
        labels: Default::default(),
    }
}

async fn probe(prober: &Prober, url: &str) -> ProbeResult {
    let result = prober.probe(&target(url)).await.expect("probed");
    let json = serde_json::to_string(&result).unwrap();
    assert!(
        !json.contains(TOKEN),
        "the credential leaked into the result: {json}"
    );
    result
}

struct TestCert {
    der: CertificateDer<'static>,
    key: Vec<u8>,
}

/// A self-signed certificate for `localhost`, valid `from`..`until` (days from today).
fn cert(from: i64, until: i64) -> TestCert {
    use chrono::Datelike;
    let today = Utc::now().date_naive();
    let day = |offset: i64| -> NaiveDate { today + chrono::Duration::days(offset) };
    let ymd = |d: NaiveDate| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = ymd(day(from));
    params.not_after = ymd(day(until));
    let cert = params.self_signed(&key).unwrap();
    TestCert {
        der: cert.der().clone(),
        key: key.serialize_der(),
    }
}

async fn tls_server(cert: &TestCert) -> FaultServer {
    FaultServer::start_tls(vec![cert.der.clone()], cert.key.clone()).await
}

fn trusting(cert: &TestCert) -> Prober {
    let mut settings = settings();
    settings.tls = TlsSettings::with_extra_roots(std::slice::from_ref(&cert.der)).unwrap();
    Prober::new(settings)
}

#[tokio::test]
async fn a_self_signed_certificate_is_a_tls_error() {
    let cert = cert(-1, 60);
    let server = tls_server(&cert).await;
    let result = probe(&Prober::new(settings()), &server.url("good")).await;
    assert!(!result.ok);
    assert_eq!(result.failure_reason, Some(FailureReason::TlsError));
    assert_eq!(result.failure_phase, Some(Phase::Tls));
    let detail = result.failure_detail.unwrap();
    assert!(detail.to_lowercase().contains("issuer"), "{detail}");
}

#[tokio::test]
async fn a_trusted_certificate_probes_and_reports_its_expiry() {
    let cert = cert(-1, 60);
    let server = tls_server(&cert).await;
    let result = probe(&trusting(&cert), &server.url("good")).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.failure_reason, None);
    assert_eq!(result.protocol_era, Some(ProtocolEra::StreamableHttp));
    assert!(result.phases.tls_ms.is_some());
    let days = (result.tls_expires_at.unwrap() - Utc::now()).num_days();
    assert!((58..=60).contains(&days), "{days} days to expiry");
}

#[tokio::test]
async fn an_expiring_certificate_is_a_tls_expiring_warning() {
    let cert = cert(-1, 5);
    let server = tls_server(&cert).await;
    let result = probe(&trusting(&cert), &server.url("good")).await;
    assert!(result.ok, "an expiring certificate still works: {result:?}");
    assert_eq!(result.failure_reason, Some(FailureReason::TlsExpiring));
    let detail = result.failure_detail.unwrap();
    assert!(detail.contains("expires in 4 days"), "{detail}");
}

#[tokio::test]
async fn an_expired_certificate_is_a_tls_error() {
    let cert = cert(-30, -1);
    let server = tls_server(&cert).await;
    let result = probe(&trusting(&cert), &server.url("good")).await;
    assert!(!result.ok);
    assert_eq!(result.failure_reason, Some(FailureReason::TlsError));
    let detail = result.failure_detail.unwrap();
    assert!(detail.to_lowercase().contains("expired"), "{detail}");
}

#[tokio::test]
async fn a_redirect_is_followed_on_the_same_origin_with_the_credential() {
    let server = FaultServer::start().await;
    let result = probe(&Prober::new(settings()), &server.url("redirect")).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.protocol_era, Some(ProtocolEra::StreamableHttp));
    assert_eq!(result.tool_count, Some(2));
    // The result names the target, not where it redirected.
    assert_eq!(
        result.url.as_deref(),
        Some(format!("http://{}/redirect/mcp", server.addr).as_str())
    );
    let bearer = format!("Bearer {TOKEN}");
    for (mode, auth) in server.authorizations() {
        assert_eq!(auth.as_deref(), Some(bearer.as_str()), "{mode}");
    }
}

#[tokio::test]
async fn a_redirect_to_another_origin_drops_the_credential() {
    let first = FaultServer::start().await;
    let second = FaultServer::start().await;
    let url = format!("{}?to={}", first.url("redirect-to"), second.url("good"));
    let result = probe(&Prober::new(settings()), &url).await;
    assert!(result.ok, "{result:?}");
    assert!(
        first
            .authorizations()
            .iter()
            .all(|(_, auth)| auth.is_some())
    );
    let seen = second.authorizations();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|(_, auth)| auth.is_none()),
        "credential sent across origins: {seen:?}"
    );
}

#[tokio::test]
async fn a_redirect_to_a_forbidden_address_is_refused_before_connecting() {
    let server = FaultServer::start().await;
    let result = probe(&Prober::new(settings()), &server.url("redirect-metadata")).await;
    assert!(!result.ok);
    assert_eq!(result.failure_reason, Some(FailureReason::NotJsonrpc));
    let detail = result.failure_detail.unwrap();
    assert!(
        detail.contains("after 1 redirect(s)") && detail.contains("169.254.169.254"),
        "{detail}"
    );
}

#[tokio::test]
async fn a_redirect_loop_stops_at_max_redirects() {
    let server = FaultServer::start().await;
    let mut settings = settings();
    settings.max_redirects = 2;
    let result = probe(&Prober::new(settings), &server.url("redirect-loop")).await;
    assert!(!result.ok);
    assert_eq!(result.failure_reason, Some(FailureReason::NotJsonrpc));
    assert_eq!(result.http_status, Some(307));
    assert!(
        result.failure_detail.unwrap().contains("redirect to"),
        "the detail says it was a redirect"
    );
    // The first request and two followed redirects, per era tried (the redirect
    // stops the sequence at the first era).
    assert_eq!(server.authorizations().len(), 3);
}

#[tokio::test]
async fn the_tool_list_is_sent_only_when_its_hash_changes() {
    let server = FaultServer::start().await;
    let prober = Prober::new(settings());
    let first = probe(&prober, &server.url("good")).await;
    let second = probe(&prober, &server.url("good")).await;
    assert_eq!(first.tools_hash, second.tools_hash);
    assert!(first.tools_hash.is_some());
    let tools = first.tools.expect("the first probe carries the tool list");
    assert_eq!(tools.len(), 2);
    assert_eq!(tools[0]["name"], "tool0");
    assert_eq!(second.tools, None, "an unchanged list is not repeated");
    assert_eq!(second.tool_count, Some(2));
    // Another server id of the same tenant has its own memory.
    let mut other = target(&server.url("good"));
    other.server = "other".into();
    assert!(prober.probe(&other).await.unwrap().tools.is_some());
}

#[tokio::test]
async fn a_refused_target_is_not_probed() {
    let server = FaultServer::start().await;
    let prober = Prober::new(ProberSettings::new("test"));
    let err = prober
        .probe(&target(&server.url("good")))
        .await
        .unwrap_err();
    assert!(err.reason.contains("loopback"), "{err}");
    assert!(server.authorizations().is_empty(), "nothing was sent");
}

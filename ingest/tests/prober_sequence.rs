//! The probe sequence over the real HTTP client against the fault server on loopback:
//! each era is recognised and each failure gets its exact failure_reason.

mod common;

use std::time::Duration;

use common::fault_server::FaultServer;
use http::HeaderMap;
use mcpulse_ingest::prober::http_transport::HttpTransport;
use mcpulse_ingest::prober::sequence::{self, Outcome, SequenceConfig};
use mcpulse_ingest::prober::timed_http::{Endpoint, TlsSettings};
use mcpulse_schemas::probe::{FailureReason, Phase, ProtocolEra};
use url::Url;

async fn probe(url: &str, timeout: Duration) -> (Outcome, HttpTransport) {
    let url = Url::parse(url).unwrap();
    let endpoint = Endpoint {
        scheme_https: false,
        host: url.host_str().unwrap().to_string(),
        port: url.port().unwrap(),
        addrs: vec![
            format!("{}:{}", url.host_str().unwrap(), url.port().unwrap())
                .parse()
                .unwrap(),
        ],
        dns_ms: Some(0.0),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut transport = HttpTransport::new(endpoint, TlsSettings::webpki_roots(), deadline);
    let config = SequenceConfig {
        eras: SequenceConfig::auto(None),
        max_pages: 20,
        headers: HeaderMap::new(),
    };
    let outcome = sequence::run(&mut transport, &url, &config).await;
    (outcome, transport)
}

fn tool_names(outcome: &Outcome) -> Vec<String> {
    outcome
        .tools
        .as_ref()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn every_era_is_recognised() {
    let server = FaultServer::start().await;
    for (mode, era, version, tools) in [
        ("modern", ProtocolEra::Modern, "2026-07-28", 2),
        ("good", ProtocolEra::StreamableHttp, "2025-11-25", 2),
        ("good-sse", ProtocolEra::StreamableHttp, "2025-11-25", 2),
        ("sse", ProtocolEra::HttpSse, "2024-11-05", 3),
    ] {
        let (outcome, transport) = probe(&server.url(mode), Duration::from_secs(5)).await;
        assert!(outcome.failure.is_none(), "{mode}: {:?}", outcome.failure);
        assert_eq!(outcome.era, Some(era), "{mode}");
        assert_eq!(outcome.protocol_version.as_deref(), Some(version), "{mode}");
        assert_eq!(tool_names(&outcome).len(), tools, "{mode}");
        let phases = transport.phases();
        assert!(
            phases.connect_ms.is_some() && phases.first_byte_ms.is_some(),
            "{mode}: {phases:?}"
        );
        assert!(
            outcome.initialize_ms.is_some() && outcome.tools_list_ms.is_some(),
            "{mode}"
        );
    }
}

#[tokio::test]
async fn each_fault_has_its_failure_reason() {
    let server = FaultServer::start().await;
    let cases: &[(&str, FailureReason, Option<Phase>)] = &[
        ("500", FailureReason::Http5xx, None),
        ("html", FailureReason::NotJsonrpc, None),
        (
            "wrong-id",
            FailureReason::NotJsonrpc,
            Some(Phase::Initialize),
        ),
        ("bad-version", FailureReason::ProtocolVersionMismatch, None),
        ("401", FailureReason::AuthRequired, None),
        ("401-bare", FailureReason::AuthMisconfigured, None),
        (
            "endless",
            FailureReason::ToolsListError,
            Some(Phase::ToolsList),
        ),
        (
            "session-404",
            FailureReason::SessionError,
            Some(Phase::ToolsList),
        ),
        (
            "hang-initialize",
            FailureReason::Timeout,
            Some(Phase::Initialize),
        ),
        ("hang-tools", FailureReason::Timeout, Some(Phase::ToolsList)),
    ];
    for (mode, reason, phase) in cases {
        let started = std::time::Instant::now();
        let (outcome, _) = probe(&server.url(mode), Duration::from_millis(1500)).await;
        let failure = outcome
            .failure
            .unwrap_or_else(|| panic!("{mode}: no failure"));
        assert_eq!(failure.reason, *reason, "{mode}: {failure:?}");
        if let Some(phase) = phase {
            assert_eq!(failure.phase, *phase, "{mode}: {failure:?}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{mode} took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_closed_port_is_tcp_refused() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (outcome, _) = probe(
        &format!("http://127.0.0.1:{port}/mcp"),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(outcome.failure.unwrap().reason, FailureReason::TcpRefused);
}

//! mcpulse's prober against real MCP servers on loopback: the Python `mcp` SDK over
//! Streamable HTTP (session, stateless, JSON answers) and over HTTP+SSE,
//! `@modelcontextprotocol/server-everything` over both, and rmcp in session and stateless
//! modes. Each must come back `ok` with the era and version it speaks and its tools.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::mcp_servers::{McpServer, ServerOptions, Transport};
use mcpulse_ingest::prober::probe::{Prober, ProberSettings};
use mcpulse_ingest::prober::target_guard::TargetPolicy;
use mcpulse_ingest::prober::targets::{Target, TransportHint};
use mcpulse_schemas::probe::{ProbeResult, ProtocolEra};

fn prober() -> Prober {
    let mut settings = ProberSettings::new("test-region");
    settings.policy = TargetPolicy {
        allow_loopback: true,
        ..TargetPolicy::default()
    };
    Prober::new(settings)
}

fn target(url: &str) -> Target {
    Target {
        tenant: "acme".into(),
        server: "srv".into(),
        url: url.parse().unwrap(),
        transport: TransportHint::Auto,
        credential: None,
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(10),
        labels: BTreeMap::new(),
    }
}

async fn probe(server: &McpServer) -> ProbeResult {
    let result = prober().probe(&target(server.url())).await.expect("probed");
    assert!(
        result.ok,
        "{}: {:?} {:?} {:?}\n{}",
        server.name(),
        result.failure_reason,
        result.failure_phase,
        result.failure_detail,
        server.log_tail()
    );
    let now = chrono::Utc::now();
    result
        .validate(now - chrono::Duration::minutes(5), now)
        .expect("a valid ProbeResult");
    assert!(
        result.tool_count.unwrap() > 0,
        "{}: no tools",
        server.name()
    );
    assert_eq!(result.tools_hash.as_ref().map(String::len), Some(64));
    assert!(result.phases.connect_ms.is_some() && result.phases.first_byte_ms.is_some());
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_server() {
    for options in [
        ServerOptions::default(),
        ServerOptions {
            stateless: true,
            json_response: true,
        },
    ] {
        let server = tokio::task::spawn_blocking(move || {
            McpServer::python(Transport::StreamableHttp, options)
        })
        .await
        .unwrap();
        let result = probe(&server).await;
        // mcp 2.3 speaks the modern protocol.
        assert_eq!(
            result.protocol_era,
            Some(ProtocolEra::Modern),
            "{options:?}"
        );
        assert_eq!(result.tool_count, Some(3));
    }
    let server =
        tokio::task::spawn_blocking(|| McpServer::python(Transport::Sse, ServerOptions::default()))
            .await
            .unwrap();
    let result = probe(&server).await;
    assert_eq!(result.protocol_era, Some(ProtocolEra::HttpSse));
    assert_eq!(result.tool_count, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything() {
    let server = tokio::task::spawn_blocking(|| McpServer::everything(Transport::StreamableHttp))
        .await
        .unwrap();
    let result = probe(&server).await;
    assert_eq!(result.protocol_era, Some(ProtocolEra::StreamableHttp));
    let server = tokio::task::spawn_blocking(|| McpServer::everything(Transport::Sse))
        .await
        .unwrap();
    let result = probe(&server).await;
    assert_eq!(result.protocol_era, Some(ProtocolEra::HttpSse));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_server() {
    for stateful in [true, false] {
        let server = tokio::task::spawn_blocking(move || McpServer::rmcp(stateful))
            .await
            .unwrap();
        let result = probe(&server).await;
        assert!(result.protocol_era.is_some(), "stateful={stateful}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tool_list_is_sent_when_its_hash_changes() {
    let server = tokio::task::spawn_blocking(|| {
        McpServer::python(Transport::StreamableHttp, ServerOptions::default())
    })
    .await
    .unwrap();
    let prober = prober();
    let first = prober.probe(&target(server.url())).await.unwrap();
    let second = prober.probe(&target(server.url())).await.unwrap();
    assert!(
        first.tools.is_some(),
        "the first probe carries the tool list"
    );
    assert!(
        second.tools.is_none(),
        "an unchanged list is not sent again"
    );
    assert_eq!(first.tools_hash, second.tools_hash);
}

/// `mcpulse probe --once URL` prints the report and exits 0 for a healthy server, 1 with
/// the failure_reason for a dead one; untrusted loopback targets are refused by default.
#[test]
fn probe_once_prints_a_report() {
    let server = McpServer::python(Transport::StreamableHttp, ServerOptions::default());
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mcpulse"))
            .arg("probe")
            .args(args)
            .output()
            .expect("mcpulse runs")
    };
    let out = run(&[
        "--once",
        server.url(),
        "--allow-loopback",
        "--region",
        "eu-west",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "(region eu-west)",
        "result       OK",
        "modern 2026-07-28",
        "connect",
        "tools        3 (sha256 ",
        "add, echo, weather",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }

    let refused = run(&["--once", server.url()]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("loopback"),
        "{refused:?}"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = run(&[
        "--once",
        &format!("http://127.0.0.1:{port}/mcp"),
        "--allow-loopback",
    ]);
    assert_eq!(dead.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&dead.stdout).contains("FAILED: tcp_refused"),
        "{dead:?}"
    );
}

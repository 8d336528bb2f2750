//! Helpers of the archive end-to-end tests (`archive_maintenance`, `s3_archive`): the
//! `mcpulse` CLI against a config, and probe results and spans sent to a running one.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use super::{ACME_TOKEN, Mcpulse, attr, http, otlp_request};

/// `mcpulse ARGS --config CONFIG` with `env`, and none of the machine's AWS credentials or
/// an armed failpoint (a test arms one through `env`).
pub fn mcpulse(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcpulse"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("ACME_TOKEN", ACME_TOKEN)
        .env_remove("MCPULSE_FAILPOINT")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Start of the minute `minutes_ago` minutes before now.
pub fn minute(minutes_ago: i64) -> DateTime<Utc> {
    let now = Utc::now().timestamp();
    DateTime::from_timestamp((now / 60 - minutes_ago) * 60, 0).unwrap()
}

/// A probe result of `server` from `region` started at `at`.
pub fn probe_at(server: &str, region: &str, at: DateTime<Utc>, failing: bool) -> Value {
    let mut p = json!({
        "server": server, "region": region, "ok": !failing,
        "started_at": at.to_rfc3339(),
        "url": format!("https://{server}.example-mcp.com/mcp"),
    });
    if failing {
        p["failure_reason"] = json!("tcp_refused");
    }
    p
}

/// A probe result 10 s into the minute `minutes_ago` minutes before now.
pub fn probe(server: &str, region: &str, minutes_ago: i64, failing: bool) -> Value {
    probe_at(
        server,
        region,
        minute(minutes_ago) + TimeDelta::seconds(10),
        failing,
    )
}

/// Posts probe results to `/v1/probes` with `token`.
pub fn post_probes(m: &Mcpulse, token: &str, probes: Vec<Value>) {
    let resp = http()
        .post(m.url("/v1/probes"))
        .bearer_auth(token)
        .json(&probes)
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text());
}

/// Posts three `tools/call lookup` spans of `service`, 20 s into the minute
/// `minutes_ago` minutes before now, over OTLP/HTTP with `token`. `trace` is the first
/// byte of their trace ids (tests that share a process keep theirs apart).
pub fn post_spans(m: &Mcpulse, token: &str, service: &str, minutes_ago: i64, trace: u8) {
    use opentelemetry_proto::tonic::trace::v1::Span;
    let start = (minute(minutes_ago) + TimeDelta::seconds(20))
        .timestamp_nanos_opt()
        .unwrap() as u64;
    let spans = (0..3u64)
        .map(|i| Span {
            trace_id: [[trace; 8], (minutes_ago as u64 * 10 + i).to_be_bytes()].concat(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            name: "tools/call lookup".into(),
            start_time_unix_nano: start + i,
            end_time_unix_nano: start + i + 2_000_000,
            attributes: vec![
                attr("mcp.method.name", "tools/call"),
                attr("gen_ai.tool.name", "lookup"),
            ],
            ..Default::default()
        })
        .collect();
    let resp = http()
        .post(m.otlp_url())
        .header("content-type", "application/x-protobuf")
        .bearer_auth(token)
        .body(otlp_request(Some(service), spans))
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text());
}

/// Polls `done` every 300 ms until it holds, failing with `what` and the log of `m`
/// after `timeout`.
pub fn wait_until(what: &str, m: &Mcpulse, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

//! The roles as processes on the embedded log: the split roles refuse it (it is
//! single-process), `mcpulse run` shows both archiver groups' lag on `/metrics`, and
//! `mcpulse bus status` reads the committed offsets from the log once `run` has exited (and
//! says why it cannot while `run` holds the log).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ACME_TOKEN, Mcpulse, attr, config_yaml, http, now_ns, otlp_request};
use opentelemetry_proto::tonic::trace::v1::Span;
use reqwest::StatusCode;

const SINGLE_PROCESS: &str =
    "the embedded log is single-process: use `mcpulse run`, or set bus.kind: kafka";

/// Runs `mcpulse ARGS --config CONFIG`, killing it (and failing) after `timeout`.
fn mcpulse(args: &[&str], config: &Path, timeout: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcpulse"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("ACME_TOKEN", ACME_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mcpulse");
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "mcpulse {args:?} still running after {timeout:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn split_roles_refuse_the_embedded_log_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("mcpulse.yaml");
    std::fs::write(&config, config_yaml(&data, "bus:\n  kind: embedded\n")).unwrap();
    for role in ["ingest", "process", "serve"] {
        let out = mcpulse(&[role], &config, Duration::from_secs(10));
        assert!(!out.status.success(), "{role} succeeded");
        let err = stderr(&out);
        assert!(err.contains(SINGLE_PROCESS), "{role}: {err}");
        assert!(err.contains(&format!("`mcpulse {role}`")), "{role}: {err}");
        assert_eq!(err.lines().count(), 1, "{role}: one clear line: {err}");
    }
    // Nothing was opened or created.
    assert!(!data.exists(), "the data_dir was created");
}

/// `count` spans of one request, each with a distinct id.
fn spans(first: u64, count: u64) -> Vec<u8> {
    let now = now_ns();
    let spans = (first..first + count)
        .map(|i| Span {
            trace_id: [[7u8; 8], i.to_be_bytes()].concat(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            name: "tools/call weather".into(),
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000,
            attributes: vec![
                attr("mcp.method.name", "tools/call"),
                attr("gen_ai.tool.name", "weather"),
            ],
            ..Default::default()
        })
        .collect();
    otlp_request(Some(&format!("svc-{first}")), spans)
}

/// The lag gauge of `group` on `/metrics`, summed over its partitions (`None` until the
/// group appears).
fn metrics_lag(m: &Mcpulse, group: &str) -> Option<f64> {
    let text = m.metrics();
    let prefix = format!("mcpulse_bus_consumer_lag{{group=\"{group}\"");
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[test]
fn bus_status_shows_what_run_committed() {
    let mut m = Mcpulse::start("");
    // Six span requests (with different services, so different keys and partitions) and
    // one probe result.
    const REQUESTS: u64 = 6;
    for r in 0..REQUESTS {
        let resp = http()
            .post(m.otlp_url())
            .header("content-type", "application/x-protobuf")
            .bearer_auth(ACME_TOKEN)
            .body(spans(r * 10, 10))
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let probe = serde_json::json!({"server": "weather", "region": "eu-west",
        "started_at": chrono::Utc::now().to_rfc3339(), "ok": true});
    let resp = http()
        .post(m.url("/v1/probes"))
        .header("content-type", "application/json")
        .bearer_auth(ACME_TOKEN)
        .body(probe.to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        m.wait_count("SELECT count(*) AS n FROM spans", 60),
        60,
        "{}",
        m.log()
    );
    assert_eq!(m.wait_count("SELECT count(*) AS n FROM probes", 1), 1);

    // `/metrics` shows both archiver groups' offsets, and their lag drains to 0.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = metrics_lag(&m, "mcpulse-archive-spans");
        let probes = metrics_lag(&m, "mcpulse-archive-probes");
        if spans == Some(0.0) && probes == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lag on /metrics: spans {spans:?}, probes {probes:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = m.metrics();
    for family in ["mcpulse_bus_end_offset", "mcpulse_bus_committed_offset"] {
        for group in ["mcpulse-archive-spans", "mcpulse-archive-probes"] {
            assert!(
                text.contains(&format!("{family}{{group=\"{group}\",topic=")),
                "{family} {group}: {text}"
            );
        }
    }

    // While `run` holds the embedded log, `bus status` says so and where to look instead.
    let out = mcpulse(&["bus", "status"], &m.config, Duration::from_secs(20));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("in use by another process")
            && err.contains(&format!("curl -s http://{}/metrics", m.api)),
        "{err}"
    );

    assert!(m.terminate().success(), "{}", m.log());

    let out = mcpulse(
        &["bus", "status", "--format", "json"],
        &m.config,
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let groups: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let group = |name: &str| {
        groups
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == name)
            .unwrap_or_else(|| panic!("no {name} in {groups}"))
            .clone()
    };
    let spans = group("mcpulse-archive-spans");
    let partitions = spans["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 4, "{spans}");
    assert!(
        partitions.iter().all(|p| p["topic"] == "mcpulse.spans.v1"
            && p["lag"] == 0
            && (p["committed"] == p["end_offset"]
                || (p["end_offset"] == 0 && p["committed"].is_null()))),
        "{spans}"
    );
    assert_eq!(spans["end_offset"], REQUESTS, "{spans}");
    assert_eq!(spans["committed"], REQUESTS, "{spans}");
    assert_eq!(spans["lag"], 0, "{spans}");
    let probes = group("mcpulse-archive-probes");
    assert_eq!(
        (&probes["end_offset"], &probes["committed"], &probes["lag"]),
        (&1.into(), &1.into(), &0.into()),
        "{probes}"
    );

    // The table: a row per partition and a total per group; `--group` picks groups.
    let out = mcpulse(
        &["bus", "status", "--group", "mcpulse-archive-spans"],
        &m.config,
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 1 + 4 + 1, "{table}");
    assert_eq!(
        lines[0],
        ["GROUP", "TOPIC", "PARTITION", "END", "COMMITTED", "LAG"],
        "{table}"
    );
    assert_eq!(
        lines[5],
        ["mcpulse-archive-spans", "(total)", "6", "6", "0"],
        "{table}"
    );
}

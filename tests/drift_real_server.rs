//! Schema drift end to end (issue 5, "Tests that must exist"): a real MCP server (the
//! Python SDK server of tests/python/mcp_server.py) restarted with a changed tool list
//! gives exactly one confirmed drift with the right classes; a server answering two
//! versions in turn gives one `fleet_inconsistent` and never a drift.
//!
//! The built-in prober probes a target at most every 10 s, too slow for many rounds, so
//! the tests drive the real prober by hand: `mcpulse probe --once URL --json` (one probe,
//! the `ProbeResult` with `tools_hash` and the canonical `tools`), then `POST /v1/probes`
//! of that result to a running `mcpulse run`, whose drift operator consumes the probes
//! topic. `probe --once` names the server after the URL's host, so each test renames it
//! before posting.
//!
//! The drift operator counts in probe rounds: results whose `started_at` falls in the same
//! `drift.round` (1 minute) are one round, and probes posted back to back would all be one.
//! So each posted result gets a `started_at` of its own minute ([`Rounds`]), as the
//! prober's 1-minute interval would give it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as TimeDelta, Utc};
use common::mcp_servers::{McpServer, PythonOptions, Transport};
use common::{ACME_TOKEN, Mcpulse, http};
use serde_json::Value;

/// Drift rows are written every 300 ms (the archive flushes as often, see the harness).
const EXTRA: &str = "drift:\n  flush_interval: 300ms\n";

/// How long rows may take to show up.
const ROWS_TIMEOUT: Duration = Duration::from_secs(30);

/// Long enough for a few drift and archive flushes: rows that were going to be written
/// are by then.
const SETTLE: Duration = Duration::from_millis(1500);

/// A Python SDK server over Streamable HTTP with tool list `tools` (`v1`, `v2`,
/// `alternate`), on `port` (0: a free one).
fn python_server(tools: &str, port: u16) -> McpServer {
    let port = port.to_string();
    McpServer::python_with_args(
        Transport::StreamableHttp,
        PythonOptions::default(),
        &["--tools", tools, "--port", &port],
    )
}

/// One probe of `url` by the real prober (`mcpulse probe --once --json`): the result,
/// which must be a success with a tool list.
fn probe_once(url: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_mcpulse"))
        .args(["probe", "--once", url, "--allow-loopback", "--json"])
        .args(["--region", "eu-west"])
        .output()
        .expect("run mcpulse probe --once");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe --once {url} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("probe --once printed no JSON ({e}):\n{stdout}"));
    assert_eq!(result["ok"], true, "{result:#}");
    assert!(result["tools_hash"].is_string(), "{result:#}");
    assert!(result["tools"].is_array(), "no canonical tools: {result:#}");
    result
}

/// The probe rounds of a test: one minute each (the default `drift.round`), counting up
/// from an hour ago (well within the accepted event-time window).
struct Rounds {
    base: DateTime<Utc>,
    next: i64,
}

impl Rounds {
    fn new() -> Self {
        Self {
            base: Utc::now() - TimeDelta::hours(1),
            next: 0,
        }
    }

    /// The `started_at` of the next round: a minute after the previous one's.
    fn next_start(&mut self) -> DateTime<Utc> {
        let at = self.base + TimeDelta::minutes(self.next);
        self.next += 1;
        at
    }
}

/// Probes `url` once, posts the result as server `server` (tenant acme) in the next of
/// `rounds`, and returns `(tools_hash, tool_count)` of the probe.
fn probe_and_post(m: &Mcpulse, url: &str, server: &str, rounds: &mut Rounds) -> (String, u64) {
    let mut result = probe_once(url);
    result["server"] = Value::from(server);
    result["started_at"] = Value::from(rounds.next_start().to_rfc3339());
    let resp = http()
        .post(m.url("/v1/probes"))
        .header("content-type", "application/json")
        .bearer_auth(ACME_TOKEN)
        .body(result.to_string())
        .send()
        .expect("POST /v1/probes");
    let status = resp.status();
    let body = resp.text().unwrap_or_default();
    assert!(status.is_success(), "POST /v1/probes: {status}: {body}");
    (
        result["tools_hash"].as_str().unwrap().to_string(),
        result["tool_count"]
            .as_u64()
            .unwrap_or_else(|| panic!("no tool_count: {result:#}")),
    )
}

/// The value of an unlabelled counter of `/metrics`.
fn metric(m: &Mcpulse, name: &str) -> u64 {
    let text = m.metrics();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

/// Waits until the drift operator has seen `n` observations (probe results with a hash).
fn wait_observations(m: &Mcpulse, n: u64) {
    let deadline = Instant::now() + ROWS_TIMEOUT;
    loop {
        let seen = metric(m, "mcpulse_drift_observations_total");
        if seen >= n {
            assert_eq!(seen, n, "more observations than probes posted");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the drift operator saw {seen} of {n} probe results within {ROWS_TIMEOUT:?}:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `drift` rows of `server`, oldest first.
fn drift_rows(m: &Mcpulse, server: &str) -> Vec<Value> {
    m.query(&format!(
        "SELECT kind, old_hash, new_hash, worst, breaking, additive, cosmetic, changes, \
         old_tool_count, new_tool_count, detail FROM drift WHERE server = '{server}' \
         ORDER BY time"
    ))
}

/// Polls until `server` has at least one `drift` row, then lets pending flushes land and
/// returns all its rows.
fn wait_drift_rows(m: &Mcpulse, server: &str) -> Vec<Value> {
    let deadline = Instant::now() + ROWS_TIMEOUT;
    while drift_rows(m, server).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no drift row for {server} within {ROWS_TIMEOUT:?}:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(SETTLE);
    drift_rows(m, server)
}

#[test]
fn a_server_restarted_with_a_changed_tool_list_gives_one_classified_drift() {
    let server_id = "python-restarted";
    let m = Mcpulse::start(EXTRA);
    let mut rounds = Rounds::new();

    // v1: add, echo, weather. Three rounds confirm it as the baseline: no row.
    let mut server = python_server("v1", 0);
    let url = server.url().to_string();
    let port = server.addr().port();
    let v1: Vec<(String, u64)> = (0..3)
        .map(|_| probe_and_post(&m, &url, server_id, &mut rounds))
        .collect();
    let v1_hash = v1[0].0.clone();
    for (hash, count) in &v1 {
        assert_eq!(hash, &v1_hash, "v1 hashes differ between probes: {v1:?}");
        assert_eq!(*count, 3);
    }
    wait_observations(&m, 3);
    assert_eq!(metric(&m, "mcpulse_drift_baselines_total"), 1);
    assert_eq!(metric(&m, "mcpulse_drift_changes_total"), 0);
    assert_eq!(metric(&m, "mcpulse_drift_fleet_inconsistent_total"), 0);
    std::thread::sleep(SETTLE);
    assert_eq!(
        drift_rows(&m, server_id),
        Vec::<Value>::new(),
        "a baseline writes no row"
    );

    // Restart as v2 on the same URL: echo removed, add.c required, weather reworded.
    server.kill();
    let server = python_server("v2", port);
    assert_eq!(server.url(), url, "v2 must answer on the same URL");
    let v2: Vec<(String, u64)> = (0..3)
        .map(|_| probe_and_post(&m, &url, server_id, &mut rounds))
        .collect();
    let v2_hash = v2[0].0.clone();
    assert_ne!(v2_hash, v1_hash, "the v2 tool list must hash differently");
    for (hash, count) in &v2 {
        assert_eq!(hash, &v2_hash, "v2 hashes differ between probes: {v2:?}");
        assert_eq!(*count, 2);
    }

    wait_observations(&m, 6);
    let rows = wait_drift_rows(&m, server_id);
    assert_eq!(metric(&m, "mcpulse_drift_baselines_total"), 1);
    assert_eq!(metric(&m, "mcpulse_drift_changes_total"), 1);
    assert_eq!(metric(&m, "mcpulse_drift_fleet_inconsistent_total"), 0);
    assert_eq!(rows.len(), 1, "exactly one confirmed drift: {rows:#?}");
    let row = &rows[0];
    println!("drift row: {row:#}");
    assert_eq!(row["kind"], "schema_drift", "{row:#}");
    assert_eq!(row["old_hash"], v1_hash.as_str(), "{row:#}");
    assert_eq!(row["new_hash"], v2_hash.as_str(), "{row:#}");
    assert_eq!(row["worst"], "breaking", "{row:#}");
    assert_eq!(row["old_tool_count"], 3, "{row:#}");
    assert_eq!(row["new_tool_count"], 2, "{row:#}");

    let changes: Vec<Value> = serde_json::from_str(
        row["changes"]
            .as_str()
            .unwrap_or_else(|| panic!("changes is not a JSON text: {row:#}")),
    )
    .expect("changes is a JSON list");
    let mut seen: Vec<(String, String, String, String)> = changes
        .iter()
        .map(|c| {
            let field = |k: &str| c[k].as_str().unwrap_or("").to_string();
            (field("class"), field("kind"), field("tool"), field("path"))
        })
        .collect();
    seen.sort();
    // Exactly what the Python SDK's v2 list differs in (its generated input schemas
    // carry titles, e.g. `"title": "C"` for the new parameter, which belong to it):
    let mut expected: Vec<(String, String, String, String)> = [
        ("breaking", "required_param_added", "add", "c"),
        ("breaking", "tool_removed", "echo", ""),
        ("cosmetic", "description_changed", "weather", ""),
    ]
    .iter()
    .map(|(class, kind, tool, path)| {
        (
            class.to_string(),
            kind.to_string(),
            tool.to_string(),
            path.to_string(),
        )
    })
    .collect();
    expected.sort();
    assert_eq!(seen, expected, "changes: {changes:#?}");
    assert_eq!(row["breaking"], 2, "{row:#}");
    assert_eq!(row["additive"], 0, "{row:#}");
    assert_eq!(row["cosmetic"], 1, "{row:#}");
    drop(server);
}

#[test]
fn a_server_alternating_between_versions_is_one_fleet_inconsistency() {
    let server_id = "python-alternating";
    let m = Mcpulse::start(EXTRA);
    let mut rounds = Rounds::new();

    // Every tools/list answers the other version: each probe sees the other list.
    let server = python_server("alternate", 0);
    let url = server.url().to_string();
    let probes: Vec<(String, u64)> = (0..10)
        .map(|_| probe_and_post(&m, &url, server_id, &mut rounds))
        .collect();
    let (a, b) = (probes[0].0.clone(), probes[1].0.clone());
    assert_ne!(a, b, "the server did not alternate: {probes:?}");
    for (i, (hash, count)) in probes.iter().enumerate() {
        let (want_hash, want_count) = if i % 2 == 0 { (&a, 3) } else { (&b, 2) };
        assert_eq!(hash, want_hash, "probe {i} of {probes:?}");
        assert_eq!(*count, want_count, "probe {i} of {probes:?}");
    }

    wait_observations(&m, 10);
    let rows = wait_drift_rows(&m, server_id);
    assert_eq!(
        rows.len(),
        1,
        "one fleet_inconsistent and nothing else: {rows:#?}"
    );
    let row = &rows[0];
    println!("drift row: {row:#}");
    assert_eq!(row["kind"], "fleet_inconsistent", "{row:#}");
    assert_eq!(
        row["detail"],
        format!("alternating between 2 versions: {a}, {b}").as_str(),
        "{row:#}"
    );
    // Nothing was ever stable, so nothing was confirmed: no old hash, no baseline.
    assert_eq!(row["old_hash"], Value::Null, "{row:#}");
    assert_eq!(row["changes"], Value::Null, "{row:#}");
    assert_eq!(metric(&m, "mcpulse_drift_baselines_total"), 0);
    assert_eq!(metric(&m, "mcpulse_drift_changes_total"), 0);
    assert_eq!(metric(&m, "mcpulse_drift_fleet_inconsistent_total"), 1);

    // Still alternating: reported once, never a drift.
    for _ in 0..3 {
        probe_and_post(&m, &url, server_id, &mut rounds);
    }
    wait_observations(&m, 13);
    std::thread::sleep(SETTLE);
    let after = drift_rows(&m, server_id);
    assert_eq!(after, rows, "more alternation must add nothing");
    assert_eq!(metric(&m, "mcpulse_drift_changes_total"), 0);
    assert_eq!(metric(&m, "mcpulse_drift_fleet_inconsistent_total"), 1);
}

//! The incident pipeline inside `mcpulse run`: probe results posted to the probe API
//! become verdicts, one incident (trigger, then resolve with its duration) on
//! `alerts.v1` and in the `alerts` table, visible to its tenant only; a `kill -9` and
//! restart does not trigger it again.

mod common;

use std::time::{Duration, Instant};

use common::{ACME_TOKEN, GLOBEX_TOKEN, Mcpulse, http};
use serde_json::{Value, json};

const CONFIG: &str = "incidents:\n  flush_interval: 200ms\n  storm: { hold: 0s }\n";

/// Start of the minute `minutes_ago` minutes before now.
fn minute(minutes_ago: i64) -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now().timestamp();
    chrono::DateTime::from_timestamp((now / 60 - minutes_ago) * 60, 0).unwrap()
}

fn probe(server: &str, region: &str, minutes_ago: i64, failing: bool) -> Value {
    let t = minute(minutes_ago) + chrono::Duration::seconds(10);
    let mut p = json!({
        "server": server, "region": region, "started_at": t.to_rfc3339(),
        "url": "https://weather.acme-mcp.com/mcp", "ok": !failing,
    });
    if failing {
        p["failure_reason"] = json!("tcp_refused");
        p["failure_detail"] = json!("connect to 198.51.100.20:443 refused");
    }
    p
}

fn post(m: &Mcpulse, token: &str, probes: Vec<Value>) {
    let response = http()
        .post(m.url("/v1/probes"))
        .bearer_auth(token)
        .json(&probes)
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.text());
}

/// Minutes -12..-7 fail in both regions, -6..-1 are healthy.
fn outage() -> Vec<Value> {
    let mut probes = Vec::new();
    for ago in (1..=12).rev() {
        for region in ["eu-west", "us-east"] {
            probes.push(probe("weather", region, ago, ago >= 7));
        }
    }
    probes
}

fn alerts(m: &Mcpulse) -> Vec<Value> {
    m.query("SELECT action, status, server, class, severity, scope, duration_s, incident_id, event_id, evidence, summary FROM alerts ORDER BY time, action")
}

fn wait_for(m: &Mcpulse, action: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = alerts(m);
        if rows.iter().any(|r| r["action"] == action) || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn probe_results_become_one_incident_that_resolves_with_its_duration() {
    let mut m = Mcpulse::start(CONFIG);
    post(&m, ACME_TOKEN, outage());
    // Another tenant's healthy server: no incident, and it must not see acme's.
    post(
        &m,
        GLOBEX_TOKEN,
        (1..=12)
            .map(|ago| probe("maps", "eu-west", ago, false))
            .collect(),
    );
    let rows = wait_for(&m, "resolve");
    let actions: Vec<&str> = rows.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["trigger", "resolve"], "{rows:#?}");
    let (trigger, resolve) = (&rows[0], &rows[1]);
    assert_eq!(trigger["server"], "weather");
    assert_eq!(trigger["class"], "unreachable");
    assert_eq!(trigger["severity"], "P1");
    assert_eq!(trigger["scope"], "global");
    assert_eq!(trigger["incident_id"], resolve["incident_id"]);
    assert_eq!(resolve["duration_s"], 360, "six failing minutes");
    for r in &rows {
        let text = r.to_string();
        assert!(
            !text.contains("198.51.100.20"),
            "an upstream address leaked: {text}"
        );
    }

    // Tenancy: globex's SQL sees no alerts row of acme.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcpulse"))
        .args([
            "query", "--format", "json", "--tenant", "globex", "--config",
        ])
        .arg(&m.config)
        .arg("SELECT count(*) AS n FROM alerts")
        .env("ACME_TOKEN", ACME_TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(n[0]["n"], 0);

    let metrics = m.metrics();
    assert!(
        metrics.contains("mcpulse_alert_events_total{action=\"trigger\"} 1"),
        "{metrics}"
    );

    // A crash and restart replays nothing new: no second trigger, no duplicate row.
    m.kill9();
    m.spawn();
    post(&m, ACME_TOKEN, vec![probe("weather", "eu-west", 0, false)]);
    std::thread::sleep(Duration::from_secs(3));
    let again = alerts(&m);
    let ids: std::collections::BTreeSet<&str> = again
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        again.len(),
        "duplicate rows after a restart: {again:#?}"
    );
    assert_eq!(
        again.iter().filter(|r| r["action"] == "trigger").count(),
        1,
        "{again:#?}"
    );
}

//! `mcpulse routes backtest`: an outage posted to a real `mcpulse run` becomes an
//! incident in the `alerts` table; the backtest replays it through candidate routes
//! files and counts, per receiver, what each would have sent.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ACME_TOKEN, Mcpulse, http};
use serde_json::{Value, json};

const CONFIG: &str = "incidents:\n  flush_interval: 200ms\n  storm: { hold: 0s }\n";
const PD_KEY: &str = "pd-SECRET-routing-key-0123456789";

const ROUTES: &str = r#"receivers:
  - name: pages
    pagerduty: {routing_key: "${PD_KEY}"}
  - name: acme-chat
    tenant: acme
    discord: {webhook_url: "https://discord.com/api/webhooks/1/${PD_KEY}"}
  - name: globex-hook
    tenant: globex
    webhook: {url: "https://hooks.example.com/globex", secret: "0123456789abcdef0123"}
  - name: noc
    webhook: {url: "https://hooks.example.com/noc", secret: "0123456789abcdef0123"}
route:
  id: root
  receiver: noc
  routes:
    - id: acme
      tenant: acme
      receiver: acme-chat
      routes:
        - {id: acme-pages, matchers: ['severity =~ "P1|P2"'], receiver: pages, continue: true}
        - {id: acme-chat, mute_time_intervals: [MUTE]}
    - id: globex
      tenant: globex
      receiver: globex-hook
operator_routes: {id: ops, receiver: noc}
time_intervals:
  - name: always
    intervals: [{weekdays: ["monday:sunday"]}]
  - name: never
    intervals: [{months: ["february"], days_of_month: ["30"]}]
"#;

/// Start of the minute `minutes_ago` minutes before now, plus 10 seconds.
fn minute(minutes_ago: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let t = chrono::DateTime::from_timestamp((now / 60 - minutes_ago) * 60 + 10, 0).unwrap();
    t.to_rfc3339()
}

/// Minutes -12..-7 fail in both regions, -6..-1 are healthy: one incident, resolved.
fn outage() -> Vec<Value> {
    let mut probes = Vec::new();
    for ago in (1..=12).rev() {
        for region in ["eu-west", "us-east"] {
            let failing = ago >= 7;
            let mut p = json!({
                "server": "weather", "region": region, "started_at": minute(ago),
                "url": "https://weather.acme-mcp.com/mcp", "ok": !failing,
            });
            if failing {
                p["failure_reason"] = json!("tcp_refused");
            }
            probes.push(p);
        }
    }
    probes
}

fn backtest(m: &Mcpulse, routes: &Path, format: &str) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mcpulse"))
        .args(["routes", "backtest"])
        .arg(routes)
        .args(["--since", "1h", "--format", format, "--config"])
        .arg(&m.config)
        .env("ACME_TOKEN", ACME_TOKEN)
        .env("PD_KEY", PD_KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stdout.contains(PD_KEY) && !stderr.contains(PD_KEY),
        "{stdout}{stderr}"
    );
    (stdout, stderr)
}

fn receiver<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["receiver"] == name)
        .unwrap_or_else(|| panic!("no receiver {name} in {report:#}"))
}

#[test]
fn backtest_counts_what_each_receiver_would_have_sent() {
    let mut m = Mcpulse::start(CONFIG);
    let response = http()
        .post(m.url("/v1/probes"))
        .bearer_auth(ACME_TOKEN)
        .json(&outage())
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.text());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = m.query("SELECT action FROM alerts WHERE action = 'resolve'");
        if !rows.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no resolve in alerts:\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let actions = m.query("SELECT action, severity FROM alerts ORDER BY time, action");
    assert_eq!(
        actions,
        [
            json!({"action": "trigger", "severity": "P1"}),
            json!({"action": "resolve", "severity": "P1"})
        ]
    );
    m.terminate();

    let dir = tempfile::tempdir().unwrap();
    let candidate = dir.path().join("routes.yaml");
    std::fs::write(&candidate, ROUTES.replace("MUTE", "never")).unwrap();
    let (json, _) = backtest(&m, &candidate, "json");
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (report["events"].as_u64(), report["tenants"].as_u64()),
        (Some(2), Some(1))
    );
    for name in ["pages", "acme-chat"] {
        let r = receiver(&report, name);
        assert_eq!(r["would_send"]["total"], 2, "{name}: {r:#}");
        assert_eq!(
            r["would_send"]["by_action"],
            json!({"trigger": 1, "resolve": 1}),
            "{name}"
        );
        assert_eq!(r["would_send"]["by_severity"], json!({"P1": 2}), "{name}");
    }
    for name in ["globex-hook", "noc"] {
        assert_eq!(receiver(&report, name)["would_send"]["total"], 0, "{name}");
    }
    // Nothing was delivered in this run (no routes configured): every notification the
    // candidate would send is only in the candidate.
    let pages = receiver(&report, "pages");
    assert_eq!(pages["was_sent"]["total"], 0);
    assert_eq!(pages["only_in_candidate"], 2);
    assert_eq!(pages["only_in_current"], 0);

    let (table, stderr) = backtest(&m, &candidate, "table");
    assert!(stderr.contains("reading alerts from"), "{stderr}");
    if report["notifications_history"] == false {
        assert!(table.contains("no notifications history"), "{table}");
    }
    let line = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name}:\n{table}"))
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
    };
    // WOULD SEND, WAS SENT, ONLY IN CANDIDATE, ONLY IN CURRENT, MUTED, SILENCED, NOTHING TO SEND
    assert_eq!(
        line("pages"),
        ["2", "0", "2", "0", "0", "0", "0"],
        "{table}"
    );

    // A candidate that mutes acme's chat around the clock sends it nothing.
    std::fs::write(&candidate, ROUTES.replace("MUTE", "always")).unwrap();
    let (json, _) = backtest(&m, &candidate, "json");
    let report: Value = serde_json::from_str(&json).unwrap();
    let chat = receiver(&report, "acme-chat");
    assert_eq!(
        (chat["would_send"]["total"].as_u64(), chat["muted"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(receiver(&report, "pages")["would_send"]["total"], 2);
}

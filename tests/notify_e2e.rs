//! Notifications inside the real `mcpulse run`: probe results of a failing server become
//! one incident, delivered to a PagerDuty stand-in (one trigger, then its resolve) and a
//! Discord stand-in (one message, then its edit) — once, even when the process is
//! `kill -9`ed after sending and before committing; a 500 is retried, a slow receiver
//! holds up no other, a 400 is dead-lettered; every attempt is a row of the
//! `notifications` table; no receiver secret appears in the log, the rows or the
//! dead-letter topic.

mod common;
mod stand_ins;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{ACME_TOKEN, Mcpulse, http};
use serde_json::{Value, json};
use stand_ins::{StandIn, actions};

const PD_KEY: &str = "e2e-pd-r0uting-key-0123456789abcd";
const PD_KEY_2: &str = "e2e-pd-second-key-0123456789abcd";
const HOOK_TOKEN: &str = "e2e-hook-t0ken-abcdefghijklmnopqrstuvwxyz";
const WEBHOOK_ID: &str = "112233445566778899";

/// Fast incidents (see incidents_e2e.rs) and fast notification flushes and retries.
fn config(routes: &Path) -> String {
    format!(
        "incidents:\n  flush_interval: 200ms\n  storm: {{ hold: 0s }}\nnotify:\n  routes: {}\n  flush_interval: 300ms\n  table_interval: 300ms\n  retry: {{ base: 200ms, cap: 1s, max_attempts: 4 }}\n",
        routes.display()
    )
}

fn env() -> Vec<(&'static str, String)> {
    vec![
        ("E2E_PD_KEY", PD_KEY.to_owned()),
        ("E2E_PD_KEY_2", PD_KEY_2.to_owned()),
        ("E2E_HOOK_TOKEN", HOOK_TOKEN.to_owned()),
    ]
}

fn start(routes: &Path, failpoint: Option<&str>) -> Mcpulse {
    let env = env();
    let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if let Some(fp) = failpoint {
        vars.push(("MCPULSE_FAILPOINT", fp));
    }
    Mcpulse::start_with_env(&config(routes), &vars)
}

fn pagerduty_block(url: &str, key_var: &str) -> String {
    format!("{{ routing_key: \"${{{key_var}}}\", url: \"{url}\" }}")
}

fn discord_block(url: &str) -> String {
    format!("{{ webhook_url: \"{url}/api/webhooks/{WEBHOOK_ID}/${{E2E_HOOK_TOKEN}}\" }}")
}

/// Start of the minute `minutes_ago` minutes before now.
fn minute(minutes_ago: i64) -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now().timestamp();
    chrono::DateTime::from_timestamp((now / 60 - minutes_ago) * 60, 0).unwrap()
}

fn probe(region: &str, minutes_ago: i64, failing: bool) -> Value {
    let t = minute(minutes_ago) + chrono::Duration::seconds(10);
    let mut p = json!({
        "server": "weather", "region": region, "started_at": t.to_rfc3339(),
        "url": "https://weather.acme-mcp.com/mcp", "ok": !failing,
    });
    if failing {
        p["failure_reason"] = json!("tcp_refused");
    }
    p
}

/// Minutes -12..-7 fail in both regions, -6..-1 are healthy: one trigger, one resolve.
fn post_outage(m: &Mcpulse) {
    let mut probes = Vec::new();
    for ago in (1..=12).rev() {
        for region in ["eu-west", "us-east"] {
            probes.push(probe(region, ago, ago >= 7));
        }
    }
    let response = http()
        .post(m.url("/v1/probes"))
        .bearer_auth(ACME_TOKEN)
        .json(&probes)
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.text());
}

/// Rows of the notifications table, oldest attempt first.
fn notifications(m: &Mcpulse) -> Vec<Value> {
    m.query(
        "SELECT receiver, integration, destination, action, attempt, status, error, route_id, event_id, latency_ms \
         FROM notifications ORDER BY attempted_at, integration",
    )
}

fn wait_rows(m: &Mcpulse, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = notifications(m);
        if rows.len() >= n || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [PD_KEY, PD_KEY_2, HOOK_TOKEN] {
        assert!(
            !text.contains(secret),
            "a receiver secret in {what}: {text}"
        );
    }
}

/// (status, integration, action) of each row, sorted.
fn summary(rows: &[Value]) -> Vec<String> {
    let mut s: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {} {} #{}",
                r["integration"].as_str().unwrap(),
                r["action"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
                r["attempt"]
            )
        })
        .collect();
    s.sort();
    s
}

#[test]
fn an_incident_reaches_pagerduty_and_discord_once_even_across_a_kill_9() {
    let pd = StandIn::pagerduty();
    let discord = StandIn::discord();
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        format!(
            "receivers:\n  - name: oncall\n    pagerduty: {}\n    discord: {}\nroute:\n  id: root\n  receiver: oncall\n",
            pagerduty_block(&pd.url, "E2E_PD_KEY"),
            discord_block(&discord.url)
        ),
    )
    .unwrap();

    // Dies right after the fourth notification (trigger and resolve, to both) is on
    // record, before the offsets are committed.
    let mut m = start(&routes, Some("notify.after_send:4"));
    post_outage(&m);
    let status = m.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "the failpoint aborts");
    assert!(
        m.log().contains("failpoint notify.after_send: aborting"),
        "{}",
        m.log()
    );
    assert_eq!(actions(&pd.hits()), ["trigger", "resolve"]);
    assert_eq!(discord.hits().len(), 2);

    // Restarted: the replay finds every notification on record and sends nothing.
    m.spawn_with_env(
        &env()
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    );
    let rows = wait_rows(&m, 4);
    std::thread::sleep(Duration::from_secs(2));
    let pd_hits = pd.hits();
    assert_eq!(
        actions(&pd_hits),
        ["trigger", "resolve"],
        "one trigger, one resolve"
    );
    assert_eq!(
        pd_hits[0].body["dedup_key"],
        "mcpulse/acme/weather/unreachable"
    );
    assert_eq!(pd_hits[0].body["payload"]["severity"], "critical");
    let d = discord.hits();
    assert_eq!(d.len(), 2, "one message, then its edit: {d:#?}");
    assert_eq!(d[0].method, "POST");
    assert_eq!(d[1].method, "PATCH");
    assert_eq!(
        d[1].path,
        format!("/api/webhooks/{WEBHOOK_ID}/{HOOK_TOKEN}/messages/1300000000000000000")
    );

    assert_eq!(
        summary(&rows),
        [
            "discord resolve sent #1",
            "discord trigger sent #1",
            "pagerduty resolve sent #1",
            "pagerduty trigger sent #1",
        ],
        "{rows:#?}"
    );
    assert!(
        rows.iter()
            .all(|r| r["receiver"] == "oncall" && r["route_id"] == "root")
    );
    assert_no_secret(
        "the notifications table",
        &serde_json::to_string(&rows).unwrap(),
    );

    let metrics = m.metrics();
    assert!(
        metrics.contains("mcpulse_processor_records_total{operator=\"notify\"}"),
        "{metrics}"
    );
    m.terminate();
    assert_no_secret("the log", &m.log());
}

#[test]
fn a_discord_message_sent_before_a_crash_is_edited_not_posted_again() {
    let discord = StandIn::discord();
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        format!(
            "receivers:\n  - name: chat\n    discord: {}\nroute:\n  id: root\n  receiver: chat\n",
            discord_block(&discord.url)
        ),
    )
    .unwrap();
    // Dies right after the trigger's message is on record; the resolve is not sent yet.
    let mut m = start(&routes, Some("notify.after_send:1"));
    post_outage(&m);
    m.wait_exit(Duration::from_secs(60));
    assert!(
        m.log().contains("failpoint notify.after_send: aborting"),
        "{}",
        m.log()
    );
    assert_eq!(discord.hits().len(), 1);
    m.spawn_with_env(
        &env()
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    );
    let d = discord.wait_for(2, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let d2 = discord.hits();
    assert_eq!(d2.len(), 2, "{d:#?}");
    assert_eq!(
        (d2[0].method.as_str(), d2[1].method.as_str()),
        ("POST", "PATCH")
    );
    assert!(d2[1].path.ends_with("/messages/1300000000000000000"));
    assert_eq!(d2[1].status, 200);
}

#[test]
fn failures_are_retried_or_dead_lettered_and_a_slow_receiver_holds_up_no_other() {
    let slow = StandIn::discord();
    slow.script([(200, Duration::from_secs(4))]);
    let flaky = StandIn::pagerduty();
    flaky.script([(500, Duration::ZERO)]);
    let broken = StandIn::pagerduty();
    broken.script([(400, Duration::ZERO)]);
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        format!(
            "receivers:\n  - name: team\n    discord: {}\n    pagerduty:\n      - {}\n      - {}\nroute:\n  id: root\n  receiver: team\n",
            discord_block(&slow.url),
            pagerduty_block(&flaky.url, "E2E_PD_KEY"),
            pagerduty_block(&broken.url, "E2E_PD_KEY_2"),
        ),
    )
    .unwrap();
    let mut m = start(&routes, None);
    post_outage(&m);

    // The slow Discord answers its first post after 4 s; PagerDuty is not held up.
    let flaky_hits = flaky.wait_for(3, Duration::from_secs(60));
    let slow_hits = slow.wait_for(2, Duration::from_secs(30));
    assert_eq!(
        actions(&flaky_hits),
        ["trigger", "trigger", "resolve"],
        "500 then retried"
    );
    assert_eq!((flaky_hits[0].status, flaky_hits[1].status), (500, 202));
    let first_post = &slow_hits[0];
    assert!(
        flaky_hits[1].answered.unwrap() < first_post.answered.unwrap(),
        "PagerDuty's retry waited for Discord"
    );
    assert!(first_post.answered.unwrap() - first_post.received >= Duration::from_secs(4));
    assert_eq!(slow_hits[1].method, "PATCH");

    // The 400 is not retried: dead-lettered. Its resolve is skipped (it never paged).
    let broken_hits = broken.wait_for(1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(broken.hits().len(), 1, "{broken_hits:#?}");
    let rows = wait_rows(&m, 7);
    let s = summary(&rows);
    assert_eq!(
        s,
        [
            "discord resolve sent #1",
            "discord trigger sent #1",
            "pagerduty resolve sent #1",
            "pagerduty resolve skipped #1",
            "pagerduty trigger failed #1",
            "pagerduty trigger retry #1",
            "pagerduty trigger sent #2",
        ],
        "{rows:#?}"
    );
    let failed = rows.iter().find(|r| r["status"] == "failed").unwrap();
    assert!(
        failed["error"].as_str().unwrap().contains("HTTP 400"),
        "{failed}"
    );
    let metrics = m.metrics();
    assert!(
        metrics.contains("mcpulse_notifications_dead_lettered_total 1"),
        "{metrics}"
    );
    assert_no_secret(
        "the notifications table",
        &serde_json::to_string(&rows).unwrap(),
    );

    m.terminate();
    let log = m.log();
    assert_no_secret("the log", &log);
    let dead = dead_letters(&m.data_dir());
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_no_secret("the dead-letter topic", &format!("{dead:?}"));
    assert_eq!(dead[0]["body"]["receiver"], "team");
    assert_eq!(dead[0]["body"]["integration"], "pagerduty");
    assert_eq!(dead[0]["body"]["event"]["action"], "trigger");
    assert!(
        dead[0]["error"].as_str().unwrap().contains("HTTP 400"),
        "{dead:#?}"
    );
}

/// The dead-letter topic of a stopped instance: body and error header of each message.
fn dead_letters(data_dir: &Path) -> Vec<Value> {
    use mcpulse_bus::embedded::{EmbeddedBus, EmbeddedConfig};
    use mcpulse_bus::{Bus, ConsumerEvent};
    use mcpulse_schemas::topics::HEADER_DLQ_ERROR;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let bus = EmbeddedBus::open(EmbeddedConfig::new(data_dir.join("log"))).unwrap();
        let mut consumer = bus
            .consumer("test-reader", &["mcpulse.dlq.v1".to_string()])
            .await
            .unwrap();
        let mut out = Vec::new();
        for _ in 0..6 {
            if let ConsumerEvent::Records(records) =
                consumer.poll(Duration::from_millis(500)).await.unwrap()
            {
                for r in records {
                    out.push(json!({
                        "body": serde_json::from_slice::<Value>(&r.value).unwrap_or(Value::Null),
                        "error": String::from_utf8_lossy(r.header(HEADER_DLQ_ERROR).map(|v| v.as_ref()).unwrap_or(b"")),
                    }));
                }
            }
        }
        consumer.close().await.unwrap();
        bus.shutdown().await.unwrap();
        out
    })
}

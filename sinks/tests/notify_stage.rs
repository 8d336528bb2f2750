//! The notify operator against local PagerDuty and Discord stand-ins, on a real embedded
//! log and archive: each transition delivered once per integration (updates edit in
//! place), a crash after sending and a replay do not send again, retries then dead
//! letters, a slow destination does not hold up another, muted and silenced
//! notifications are recorded and not sent, repeats of open incidents, and the routes
//! file reloaded when it changes.

mod common;
mod notify_harness;

use std::time::{Duration, Instant};

use common::{Reply, later, trigger};
use mcpulse_processors::Operator;
use mcpulse_schemas::topics::{HEADER_DLQ_ERROR, HEADER_DLQ_OFFSET, HEADER_DLQ_TOPIC};
use mcpulse_schemas::{AlertAction, AlertStatus};
use notify_harness::{ALERTS, DLQ, HOOK_TOKEN, PD_KEY, Stage, calls, pd_actions};
use serde_json::Value;

const BOTH: &str = "route:\n  id: root\n  receiver: both\n";

fn resolve() -> mcpulse_schemas::AlertEvent {
    later(AlertAction::Resolve, AlertStatus::Resolved, 12)
}

fn statuses(rows: &[Value]) -> Vec<String> {
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

#[tokio::test]
async fn each_transition_goes_once_to_each_integration_and_updates_edit_in_place() {
    let stage = Stage::start(BOTH).await;
    // The trigger is appended twice (a replay of the incident stage after a crash
    // re-appends events with the same ids).
    stage.append(&[trigger(), trigger(), resolve()]).await;
    let records = stage.read(ALERTS, 3).await;
    let mut op = stage.operator(stage.config());
    for r in &records {
        op.process(r).await.unwrap();
    }
    stage.settle().await;
    let commits = op.flush(None, true).await.unwrap();
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0].1, 3, "every record's notifications finished");

    assert_eq!(pd_actions(&stage.pd.requests()), ["trigger", "resolve"]);
    let discord = calls(&stage.discord.requests());
    assert_eq!(discord.len(), 2, "{discord:?}");
    assert_eq!(discord[0].0, "POST");
    assert_eq!(discord[1].0, "PATCH");
    assert!(
        discord[1].1.ends_with("/messages/1300000000000000000"),
        "{discord:?}"
    );
    stage.pd.assert_no_violations();
    stage.discord.assert_no_violations();

    let rows = stage.rows();
    assert_eq!(
        statuses(&rows),
        [
            "discord resolve sent #1",
            "discord trigger sent #1",
            "pagerduty resolve sent #1",
            "pagerduty trigger sent #1",
        ]
    );
    for r in &rows {
        assert_eq!(r["receiver"], "both");
        assert_eq!(r["route_id"], "root");
        assert!(r["latency_ms"].as_f64().unwrap() >= 0.0);
        let text = r.to_string();
        assert!(
            !text.contains(PD_KEY) && !text.contains(HOOK_TOKEN),
            "{text}"
        );
    }
    assert!(
        stage.journal().is_empty(),
        "the checkpoint folded the journal in"
    );

    // A restart from the checkpoint (the commit lagging it) sends nothing again.
    drop(op);
    let mut op = stage.operator(stage.config());
    for r in &records {
        op.process(r).await.unwrap();
    }
    stage.settle().await;
    op.flush(None, true).await.unwrap();
    assert_eq!(stage.pd.requests().len(), 2);
    assert_eq!(stage.discord.requests().len(), 2);
    assert_eq!(stage.rows().len(), 4, "no row twice");
}

#[tokio::test]
async fn a_crash_after_sending_and_before_the_checkpoint_sends_nothing_twice() {
    let stage = Stage::start(BOTH).await;
    stage.append(&[trigger(), resolve()]).await;
    let records = stage.read(ALERTS, 2).await;
    let config = mcpulse_sinks::notify::NotifyConfig {
        flush_interval: Duration::from_secs(3600),
        ..stage.config()
    };
    // First run: the trigger goes out to both, then the process dies before any
    // checkpoint or commit.
    let mut op = stage.operator(config.clone());
    op.process(&records[0]).await.unwrap();
    stage.settle().await;
    drop(op);
    assert_eq!(stage.journal().len(), 2, "both sends on record");
    assert_eq!(stage.pd.requests().len(), 1);
    assert_eq!(stage.discord.requests().len(), 1);

    // The replay reads both records again from the last commit (none).
    let mut op = stage.operator(config);
    for r in &records {
        op.process(r).await.unwrap();
    }
    stage.settle().await;
    let commits = op.flush(None, true).await.unwrap();
    assert_eq!(commits[0].1, 2);
    assert_eq!(pd_actions(&stage.pd.requests()), ["trigger", "resolve"]);
    let discord = calls(&stage.discord.requests());
    assert_eq!(discord.len(), 2, "one message, then its edit: {discord:?}");
    assert_eq!(
        (discord[0].0.as_str(), discord[1].0.as_str()),
        ("POST", "PATCH")
    );
    assert_eq!(
        stage.rows().len(),
        4,
        "the first run's attempts come from the journal"
    );
    assert!(stage.journal().is_empty());
}

#[tokio::test]
async fn retryable_failures_are_retried_and_permanent_ones_dead_lettered() {
    let stage = Stage::start(BOTH).await;
    stage.pd.script([Reply::Status(500, "{}".into())]);
    stage.discord.script([Reply::Status(
        400,
        format!("{{\"message\": \"bad {HOOK_TOKEN}\"}}"),
    )]);
    stage.append(&[trigger()]).await;
    let records = stage.read(ALERTS, 1).await;
    let mut op = stage.operator(stage.config());
    op.process(&records[0]).await.unwrap();
    stage.settle().await;
    let commits = op.flush(None, true).await.unwrap();
    assert_eq!(commits[0].1, 1, "dead-lettered counts as finished");

    assert_eq!(pd_actions(&stage.pd.requests()), ["trigger", "trigger"]);
    assert_eq!(stage.discord.requests().len(), 1, "a 400 is not retried");
    let rows = stage.rows();
    assert_eq!(
        statuses(&rows),
        [
            "discord trigger failed #1",
            "pagerduty trigger retry #1",
            "pagerduty trigger sent #2",
        ]
    );
    let failed = rows.iter().find(|r| r["status"] == "failed").unwrap();
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("400"), "{error}");
    assert!(!error.contains(HOOK_TOKEN), "{error}");

    let dlq = stage.read(DLQ, 1).await;
    let record = &dlq[0];
    assert_eq!(record.key.as_deref(), Some(trigger().key().as_bytes()));
    assert_eq!(
        record.header(HEADER_DLQ_TOPIC).unwrap().as_ref(),
        ALERTS.as_bytes()
    );
    assert_eq!(record.header(HEADER_DLQ_OFFSET).unwrap().as_ref(), b"0");
    let header = String::from_utf8(record.header(HEADER_DLQ_ERROR).unwrap().to_vec()).unwrap();
    assert!(
        header.contains("chat") || header.contains("both"),
        "{header}"
    );
    let body: Value = serde_json::from_slice(&record.value).unwrap();
    assert_eq!(body["receiver"], "both");
    assert_eq!(body["integration"], "discord");
    assert_eq!(body["event"]["event_id"], "ev-trigger");
    let all = format!("{header} {body}");
    assert!(!all.contains(HOOK_TOKEN) && !all.contains(PD_KEY), "{all}");
    assert_eq!(
        stage
            .metrics
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_slow_destination_does_not_hold_up_another() {
    let stage = Stage::start(BOTH).await;
    stage.discord.script([Reply::Slow(Duration::from_secs(3))]);
    stage.append(&[trigger()]).await;
    let records = stage.read(ALERTS, 1).await;
    let mut op = stage.operator(stage.config());
    let start = Instant::now();
    op.process(&records[0]).await.unwrap();
    while stage.pd.requests().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(2), "PagerDuty waited");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pd_after = start.elapsed();
    // PagerDuty is done while Discord is still answering.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let flushed = op.flush(None, false).await.unwrap();
    assert!(
        flushed.is_empty(),
        "the record is not committed before Discord finished"
    );
    stage.settle().await;
    let discord_after = start.elapsed();
    assert!(
        pd_after < Duration::from_secs(1) && discord_after >= Duration::from_secs(3),
        "pagerduty {pd_after:?}, discord {discord_after:?}"
    );
    assert_eq!(op.flush(None, true).await.unwrap()[0].1, 1);
}

#[tokio::test]
async fn muted_and_silenced_notifications_are_recorded_and_not_sent() {
    let routing = "route:\n  id: root\n  receiver: chat\n  routes:\n    - id: night\n      matchers: [\"server = maps\"]\n      receiver: oncall\n      mute_time_intervals: [always]\ntime_intervals:\n  - name: always\n    intervals: [{ weekdays: [\"monday:sunday\"] }]\n";
    let stage = Stage::start(routing).await;
    std::fs::write(
        stage.silences_path(),
        r#"{"silences": [{"id": "s1", "matchers": ["server = weather"], "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2099-01-01T00:00:00Z", "created_by": "ana", "comment": "maintenance"}]}"#,
    )
    .unwrap();
    let silenced = trigger();
    let mut muted = trigger();
    muted.incident_id = "maps-1".into();
    muted.event_id = "ev-maps".into();
    muted.server = Some("maps".into());
    stage.append(&[silenced, muted]).await;
    let records = stage.read(ALERTS, 2).await;
    let mut op = stage.operator(stage.config());
    for r in &records {
        op.process(r).await.unwrap();
    }
    assert_eq!(op.flush(None, true).await.unwrap()[0].1, 2);
    assert!(stage.pd.requests().is_empty() && stage.discord.requests().is_empty());
    let rows = stage.rows();
    let mut seen: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap().to_owned(),
                r["route_id"].as_str().unwrap().to_owned(),
                r["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "muted".to_owned(),
                "night".to_owned(),
                "muted: time interval always is active".to_owned()
            ),
            (
                "silenced".to_owned(),
                "root".to_owned(),
                "silenced by s1".to_owned()
            ),
        ]
    );
    assert!(rows.iter().all(|r| r["attempt"] == 0));
}

#[tokio::test]
async fn an_open_incident_is_repeated_after_its_repeat_interval_until_it_resolves() {
    let stage =
        Stage::start("route:\n  id: root\n  receiver: oncall\n  repeat_interval: 1s\n").await;
    stage.append(&[trigger(), resolve()]).await;
    let records = stage.read(ALERTS, 2).await;
    let mut op = stage.operator(stage.config());
    op.process(&records[0]).await.unwrap();
    stage.settle().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while stage.pd.requests().len() < 2 {
        assert!(Instant::now() < deadline, "no repeat");
        tokio::time::sleep(Duration::from_millis(60)).await;
        op.flush(None, false).await.unwrap();
    }
    stage.settle().await;
    op.process(&records[1]).await.unwrap();
    stage.settle().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    op.flush(None, true).await.unwrap();
    op.flush(None, true).await.unwrap();
    stage.settle().await;
    assert_eq!(
        pd_actions(&stage.pd.requests()),
        ["trigger", "trigger", "resolve"],
        "one repeat, none after the resolve"
    );
    let repeats: Vec<Value> = stage
        .rows()
        .into_iter()
        .filter(|r| r["repeat"] == true)
        .collect();
    assert_eq!(repeats.len(), 1, "{repeats:?}");
    assert_eq!(repeats[0]["status"], "sent");
}

#[tokio::test]
async fn a_changed_routes_file_is_picked_up_and_a_broken_one_ignored() {
    let stage = Stage::start("route:\n  id: root\n  receiver: oncall\n").await;
    let config = mcpulse_sinks::notify::NotifyConfig {
        reload_interval: Duration::from_millis(1),
        ..stage.config()
    };
    let mut op = stage.operator(config);
    stage.write_routes("route:\n  id: root\n  receiver: chat\n");
    tokio::time::sleep(Duration::from_millis(20)).await;
    op.flush(None, true).await.unwrap();
    std::fs::write(&stage.routes, "receivers: [").unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    op.flush(None, true).await.unwrap();
    stage.append(&[trigger()]).await;
    let records = stage.read(ALERTS, 1).await;
    op.process(&records[0]).await.unwrap();
    stage.settle().await;
    assert!(stage.pd.requests().is_empty());
    assert_eq!(stage.discord.requests().len(), 1);
    let m = &stage.metrics;
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        (m.reloads.load(Relaxed), m.reload_errors.load(Relaxed)),
        (1, 1)
    );
}

/// Incident `n` of acme (a distinct server), as the incident stage would send it.
fn incident(n: usize, action: AlertAction, status: AlertStatus) -> mcpulse_schemas::AlertEvent {
    let mut e = later(action, status, n as i64);
    e.incident_id = format!("inc-{n}");
    e.event_id = format!("ev-{n}-{}", action.as_str());
    e.dedup_key = format!("mcpulse/acme/server{n}/unreachable");
    e.server = Some(format!("server{n}"));
    e
}

#[tokio::test]
async fn past_the_tenant_budget_new_incidents_fold_into_one_digest() {
    let stage = Stage::start("route:\n  id: root\n  receiver: oncall\n").await;
    let mut events: Vec<_> = (0..4)
        .map(|n| incident(n, AlertAction::Trigger, AlertStatus::Open))
        .collect();
    // The admitted incident's resolve goes out; a folded one's joins the digest.
    events.push(incident(0, AlertAction::Resolve, AlertStatus::Resolved));
    events.push(incident(3, AlertAction::Resolve, AlertStatus::Resolved));
    stage.append(&events).await;
    let records = stage.read(ALERTS, events.len()).await;
    let mut config = stage.config();
    config.budget.per_tenant = 1;
    config.budget.digest_interval = Duration::from_millis(300);
    let mut op = stage.operator(config.clone());
    for r in &records {
        op.process(r).await.unwrap();
    }
    stage.settle().await;
    op.flush(None, true).await.unwrap();
    stage.settle().await;
    assert_eq!(
        pd_actions(&stage.pd.requests()),
        ["trigger", "resolve"],
        "only the first incident pages before the digest"
    );

    // A restart before the digest is due keeps what was folded (checkpointed).
    drop(op);
    let mut op = stage.operator(config);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while stage.pd.requests().len() < 3 {
        assert!(Instant::now() < deadline, "no digest");
        // A restarted operator loads its partition on the first record: feed the last
        // one again (already finished: skipped), then flush.
        op.process(records.last().unwrap()).await.unwrap();
        op.flush(None, true).await.unwrap();
        stage.settle().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    op.flush(None, true).await.unwrap();
    stage.settle().await;
    let requests = stage.pd.requests();
    assert_eq!(requests.len(), 3, "one digest, sent once");
    stage.pd.assert_no_violations();
    let digest = &requests[2].body;
    assert_eq!(digest["event_action"], "trigger");
    let summary = digest["payload"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("Digest: 4 notifications of 3 incidents held back"),
        "{summary}"
    );
    assert_eq!(digest["payload"]["class"], "digest");

    let rows = stage.rows();
    let folded = rows.iter().filter(|r| r["status"] == "folded").count();
    assert_eq!(folded, 4, "three triggers and one resolve folded: {rows:?}");
    assert!(
        rows.iter().any(|r| r["status"] == "sent"
            && r["action"] == "trigger"
            && r["incident_id"]
                .as_str()
                .is_some_and(|i| i.starts_with("digest-"))),
        "the digest's row: {rows:?}"
    );
    assert_eq!(
        stage
            .metrics
            .digests
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

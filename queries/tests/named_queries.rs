//! Every named query over generated archive rows, asserting the figures it must give
//! (and that a tenant's run sees only its rows).

mod fixture;

use std::collections::BTreeMap;

use chrono::Duration;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::DataType;
use fixture::{Archive, hour_ago, ts};
use mcpulse_queries::{QueryEngine, Request, Scope};
use mcpulse_schemas::Table;
use serde_json::json;

fn tenant(t: &str) -> Scope {
    Scope::Tenant(t.into())
}

async fn named(
    engine: &QueryEngine,
    scope: &Scope,
    name: &str,
    params: &[(&str, &str)],
) -> RecordBatch {
    let request = Request::Named {
        name: name.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    let result = engine
        .stream(scope, &request, None)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    concat_batches(&result.schema, &result.batches).unwrap()
}

fn text(batch: &RecordBatch, column: &str, row: usize) -> Option<String> {
    let a = cast(batch.column_by_name(column).unwrap(), &DataType::Utf8).unwrap();
    let a = a.as_string::<i32>();
    (!a.is_null(row)).then(|| a.value(row).to_string())
}

fn float(batch: &RecordBatch, column: &str, row: usize) -> f64 {
    let a = cast(batch.column_by_name(column).unwrap(), &DataType::Float64).unwrap();
    a.as_primitive::<datafusion::arrow::datatypes::Float64Type>()
        .value(row)
}

fn close(actual: f64, expected: f64, tolerance: f64) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{actual} is not {expected} ± {tolerance}"
    );
}

#[tokio::test]
async fn uptime_30d_per_server_from_probes() {
    let mut archive = Archive::new();
    let mut rows = Vec::new();
    for minute in 0..100 {
        for region in ["eu-west", "us-east", "ap-south"] {
            let ok = !(region == "eu-west" && minute < 10);
            rows.push(json!({"time": ts(hour_ago(3, minute)), "server": "weather", "region": region, "ok": ok}));
        }
    }
    for i in 0..50 {
        rows.push(json!({"time": ts(hour_ago(5, i)), "server": "broken", "region": "eu-west", "ok": i % 2 == 0}));
    }
    // Outside the 30 days: not counted.
    for i in 0..20 {
        rows.push(json!({"time": ts(hour_ago(40 * 24, i)), "server": "weather", "region": "eu-west", "ok": false}));
    }
    archive.write(Table::Probes, "acme", rows);
    archive.write(
        Table::Probes,
        "globex",
        (0..10)
            .map(|i| json!({"time": ts(hour_ago(2, i)), "server": "weather", "region": "eu-west", "ok": false}))
            .collect(),
    );
    let engine = archive.engine();
    let b = named(&engine, &tenant("acme"), "uptime_30d", &[]).await;
    assert_eq!(b.num_rows(), 2);
    assert_eq!(text(&b, "server", 0).as_deref(), Some("broken"));
    close(float(&b, "uptime_pct", 0), 50.0, 1e-9);
    assert_eq!(text(&b, "server", 1).as_deref(), Some("weather"));
    assert_eq!(float(&b, "probes", 1), 300.0);
    assert_eq!(float(&b, "failed_probes", 1), 10.0);
    assert_eq!(float(&b, "regions", 1), 3.0);
    close(float(&b, "uptime_pct", 1), 290.0 / 3.0, 1e-9);

    let one = named(&engine, &Scope::All, "uptime_30d", &[("server", "weather")]).await;
    assert_eq!(one.num_rows(), 1);
    assert_eq!(
        float(&one, "probes", 0),
        310.0,
        "operators see both tenants"
    );
    let week = named(
        &engine,
        &tenant("globex"),
        "uptime_30d",
        &[("window", "7d")],
    )
    .await;
    assert_eq!(week.num_rows(), 1);
    close(float(&week, "uptime_pct", 0), 0.0, 1e-9);
}

#[tokio::test]
async fn tool_latency_hourly_merges_histograms() {
    let mut archive = Archive::new();
    let uniform: Vec<f64> = (1..=100).map(f64::from).collect();
    let mut rows = Vec::new();
    // Hour A: 1..100 ms spread over 4 minutes; hour B: all 200 ms.
    for (m, chunk) in uniform.chunks(25).enumerate() {
        rows.push(json!({"time": ts(hour_ago(3, 10 + m as i64)), "source": "spans", "server": "weather", "tool": "forecast",
            "calls": 25, "errors": if m == 0 { 5 } else { 0 }, "error_rate": 0.0, "overflow": false, "revision": 0, "latency_ms": chunk}));
    }
    for m in 0..2 {
        rows.push(json!({"time": ts(hour_ago(2, 10 + m)), "source": "spans", "server": "weather", "tool": "forecast",
            "calls": 50, "errors": 0, "error_rate": 0.0, "overflow": false, "revision": 0, "latency_ms": vec![200.0; 50]}));
    }
    rows.push(json!({"time": ts(hour_ago(2, 20)), "source": "probes", "server": "weather", "region": "eu-west",
        "calls": 1, "errors": 0, "error_rate": 0.0, "overflow": false, "revision": 0, "latency_ms": [5000.0]}));
    archive.write(Table::Signals, "acme", rows);
    let engine = archive.engine();
    let b = named(
        &engine,
        &tenant("acme"),
        "tool_latency_hourly",
        &[("tool", "forecast")],
    )
    .await;
    assert_eq!(b.num_rows(), 2, "one row per hour");
    assert_eq!(float(&b, "calls", 0), 100.0);
    assert_eq!(float(&b, "errors", 0), 5.0);
    close(float(&b, "p50_ms", 0), 50.0, 1.0);
    close(float(&b, "p95_ms", 0), 95.0, 1.5);
    close(float(&b, "p99_ms", 0), 99.0, 1.5);
    assert_eq!(float(&b, "calls", 1), 100.0);
    close(float(&b, "p99_ms", 1), 200.0, 2.0);
    let t0 = text(&b, "hour_start", 0).unwrap();
    assert!(t0.ends_with(":00:00Z") || t0.contains(":00:00"), "{t0}");
    let other = named(&engine, &tenant("globex"), "tool_latency_hourly", &[]).await;
    assert_eq!(other.num_rows(), 0);
}

#[tokio::test]
async fn error_budget_burn_against_the_objective() {
    let mut archive = Archive::new();
    let now = chrono::Utc::now();
    let row = |t: chrono::DateTime<chrono::Utc>, calls: i64, errors: i64| {
        json!({"time": ts(t), "source": "spans", "server": "api", "tool": "search", "calls": calls, "errors": errors,
            "error_rate": 0.0, "overflow": false, "revision": 0})
    };
    archive.write(
        Table::Signals,
        "acme",
        vec![
            row(now - Duration::hours(5), 900, 1),
            row(now - Duration::minutes(10), 100, 1),
        ],
    );
    let engine = archive.engine();
    let b = named(
        &engine,
        &tenant("acme"),
        "error_budget_burn",
        &[("server", "api")],
    )
    .await;
    assert_eq!(b.num_rows(), 1);
    assert_eq!(float(&b, "calls", 0), 1000.0);
    close(float(&b, "error_rate", 0), 0.002, 1e-12);
    close(float(&b, "budget_used_pct", 0), 200.0, 1e-6);
    close(float(&b, "budget_left_pct", 0), -100.0, 1e-6);
    close(float(&b, "burn_rate_1h", 0), 10.0, 1e-6);
    let looser = named(
        &engine,
        &tenant("acme"),
        "error_budget_burn",
        &[("slo", "99")],
    )
    .await;
    close(float(&looser, "budget_used_pct", 0), 20.0, 1e-6);
}

fn alert(
    time: chrono::DateTime<chrono::Utc>,
    incident: &str,
    action: &str,
    server: &str,
    opened: chrono::DateTime<chrono::Utc>,
) -> serde_json::Value {
    json!({"time": ts(time), "event_id": format!("{incident}-{action}"), "incident_id": incident,
        "dedup_key": format!("mcpulse/acme/{server}/unreachable"), "action": action,
        "status": if action == "resolve" { "resolved" } else { "open" }, "server": server,
        "class": "unreachable", "severity": "P1", "scope": "global", "opened_at": ts(opened), "summary": "x"})
}

#[tokio::test]
async fn mttd_and_mttr_per_server() {
    let mut archive = Archive::new();
    let t0 = hour_ago(6, 0);
    let t1 = hour_ago(4, 0);
    let mut resolve1 = alert(t0 + Duration::minutes(10), "i1", "resolve", "weather", t0);
    resolve1["duration_s"] = json!(600);
    let mut resolve2 = alert(t1 + Duration::minutes(20), "i2", "resolve", "weather", t1);
    resolve2["duration_s"] = json!(1200);
    let mut blip = alert(t1 + Duration::minutes(2), "i3", "blip", "weather", t1);
    blip["duration_s"] = json!(60);
    archive.write(
        Table::Alerts,
        "acme",
        vec![
            alert(t0 + Duration::minutes(4), "i1", "trigger", "weather", t0),
            resolve1,
            alert(t1 + Duration::minutes(2), "i2", "trigger", "weather", t1),
            alert(t1 + Duration::minutes(5), "i2", "update", "weather", t1),
            resolve2,
            blip,
            alert(t1, "i4", "trigger", "api", t1 - Duration::minutes(3)),
        ],
    );
    let engine = archive.engine();
    let b = named(&engine, &tenant("acme"), "mttd_mttr", &[]).await;
    assert_eq!(b.num_rows(), 2);
    // Ordered by MTTR, unresolved (NULL) last.
    assert_eq!(text(&b, "server", 0).as_deref(), Some("weather"));
    assert_eq!(float(&b, "incidents", 0), 2.0);
    assert_eq!(float(&b, "resolved", 0), 2.0);
    close(float(&b, "mttd_s", 0), 180.0, 1e-6);
    close(float(&b, "mttr_s", 0), 900.0, 1e-6);
    assert_eq!(float(&b, "longest_s", 0), 1200.0);
    assert_eq!(text(&b, "server", 1).as_deref(), Some("api"));
    close(float(&b, "mttd_s", 1), 180.0, 1e-6);
    assert_eq!(text(&b, "mttr_s", 1), None);
}

#[tokio::test]
async fn drift_timeline_newest_first() {
    let mut archive = Archive::new();
    let row = |t, server: &str, worst: &str, breaking: i32| {
        json!({"time": ts(t), "server": server, "kind": "schema_drift", "worst": worst, "breaking": breaking,
            "additive": 1, "cosmetic": 0, "old_tool_count": 3, "new_tool_count": 4, "old_hash": "a", "new_hash": "b"})
    };
    archive.write(
        Table::Drift,
        "acme",
        vec![
            row(hour_ago(30, 0), "weather", "additive", 0),
            row(hour_ago(2, 0), "weather", "breaking", 2),
            row(hour_ago(1, 0), "search", "cosmetic", 0),
        ],
    );
    let engine = archive.engine();
    let b = named(
        &engine,
        &tenant("acme"),
        "drift_timeline",
        &[("server", "weather")],
    )
    .await;
    assert_eq!(b.num_rows(), 2);
    assert_eq!(text(&b, "worst", 0).as_deref(), Some("breaking"));
    assert_eq!(float(&b, "breaking", 0), 2.0);
    assert_eq!(text(&b, "worst", 1).as_deref(), Some("additive"));
    let day = named(
        &engine,
        &tenant("acme"),
        "drift_timeline",
        &[("window", "1d")],
    )
    .await;
    assert_eq!(day.num_rows(), 2, "the 30-hour-old change is out");
}

#[tokio::test]
async fn storms_and_their_members() {
    let mut archive = Archive::new();
    let t = hour_ago(2, 0);
    let mut storm = alert(t + Duration::minutes(5), "storm-1", "trigger", "", t);
    storm["class"] = json!("storm");
    storm["reason"] = json!("unreachable");
    storm["storm_provider"] = json!("render");
    storm["storm_region"] = json!("global");
    storm["storm_tenants"] = json!(3);
    storm["storm_members"] = json!(4);
    let mut cleared = storm.clone();
    cleared["action"] = json!("resolve");
    cleared["event_id"] = json!("storm-1-resolve");
    cleared["time"] = json!(ts(t + Duration::minutes(40)));
    cleared["resolved_at"] = json!(ts(t + Duration::minutes(35)));
    archive.write(Table::Alerts, "_operator", vec![storm, cleared]);
    let member = |tenant: &str, server: &str, n: i64| {
        let mut m = alert(
            t + Duration::minutes(5 + n),
            &format!("{tenant}-{server}"),
            "suppress",
            server,
            t,
        );
        m["status"] = json!("suppressed");
        m["storm_id"] = json!("storm-1");
        (tenant.to_string(), m)
    };
    for (tenant, row) in [
        member("acme", "weather", 0),
        member("acme", "weather", 1),
        member("globex", "api", 0),
        member("initech", "x", 2),
    ] {
        archive.write(Table::Alerts, &tenant, vec![row]);
    }
    let engine = archive.engine();
    let all = named(&engine, &Scope::All, "storms", &[]).await;
    assert_eq!(all.num_rows(), 1);
    assert_eq!(text(&all, "storm_id", 0).as_deref(), Some("storm-1"));
    assert_eq!(text(&all, "provider", 0).as_deref(), Some("render"));
    assert_eq!(text(&all, "class", 0).as_deref(), Some("unreachable"));
    assert_eq!(float(&all, "tenants", 0), 3.0);
    assert_eq!(float(&all, "members_seen", 0), 3.0);
    assert_eq!(
        text(&all, "member_servers", 0).as_deref(),
        Some("acme/weather, globex/api, initech/x")
    );
    assert!(text(&all, "cleared_at", 0).is_some());
    let acme = named(&engine, &tenant("acme"), "storms", &[]).await;
    assert_eq!(acme.num_rows(), 1);
    assert_eq!(
        text(&acme, "provider", 0),
        None,
        "the storm itself is the operators'"
    );
    assert_eq!(float(&acme, "members_seen", 0), 1.0);
    assert_eq!(
        text(&acme, "member_servers", 0).as_deref(),
        Some("acme/weather")
    );
}

#[tokio::test]
async fn notification_delivery_per_receiver() {
    let mut archive = Archive::new();
    let t = hour_ago(3, 0);
    let n = |event: &str,
             receiver: &str,
             integration: &str,
             attempt: i32,
             status: &str,
             latency: Option<f64>| {
        json!({"time": ts(t), "attempted_at": ts(t + Duration::seconds(attempt as i64)), "event_id": event,
            "incident_id": "i", "dedup_key": "d", "action": "trigger", "repeat": false, "server": "weather",
            "severity": "P1", "route_id": "r", "receiver": receiver, "integration": integration,
            "destination": format!("{integration}:x"), "attempt": attempt, "status": status, "latency_ms": latency})
    };
    archive.write(
        Table::Notifications,
        "acme",
        vec![
            n("e1", "oncall", "pagerduty", 1, "retry", Some(30.0)),
            n("e1", "oncall", "pagerduty", 2, "sent", Some(100.0)),
            n("e2", "oncall", "pagerduty", 1, "sent", Some(100.0)),
            n("e3", "oncall", "pagerduty", 1, "retry", Some(30.0)),
            n("e3", "oncall", "pagerduty", 2, "retry", Some(30.0)),
            n("e3", "oncall", "pagerduty", 3, "failed", Some(30.0)),
            n("e1", "chat", "discord", 1, "sent", Some(50.0)),
            n("e2", "chat", "discord", 0, "muted", None),
        ],
    );
    let engine = archive.engine();
    let b = named(&engine, &tenant("acme"), "notification_delivery", &[]).await;
    assert_eq!(b.num_rows(), 2);
    assert_eq!(text(&b, "receiver", 0).as_deref(), Some("chat"));
    assert_eq!(float(&b, "delivered", 0), 1.0);
    assert_eq!(float(&b, "not_sent", 0), 1.0);
    close(float(&b, "success_pct", 0), 100.0, 1e-9);
    assert_eq!(text(&b, "receiver", 1).as_deref(), Some("oncall"));
    assert_eq!(float(&b, "delivered", 1), 2.0);
    assert_eq!(float(&b, "failed", 1), 1.0);
    assert_eq!(float(&b, "retries", 1), 3.0);
    close(float(&b, "success_pct", 1), 200.0 / 3.0, 1e-9);
    close(float(&b, "p95_latency_ms", 1), 100.0, 1e-6);
    let only = named(
        &engine,
        &tenant("acme"),
        "notification_delivery",
        &[("receiver", "chat")],
    )
    .await;
    assert_eq!(only.num_rows(), 1);
}

#[tokio::test]
async fn bad_parameters_are_refused_by_name() {
    let archive = Archive::new();
    let engine = archive.engine();
    let run = |params: &[(&str, &str)]| {
        let request = Request::Named {
            name: "uptime_30d".into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let engine = engine.clone();
        async move {
            engine
                .stream(&Scope::All, &request, None)
                .await
                .err()
                .unwrap()
                .to_string()
        }
    };
    assert!(
        run(&[("nope", "1")])
            .await
            .contains("unknown parameter \"nope\"")
    );
    assert!(
        run(&[("window", "x")])
            .await
            .contains("parameter \"window\" (interval)")
    );
    // A value is bound, never spliced into the SQL: quotes and comments are just text.
    let request = Request::Named {
        name: "uptime_30d".into(),
        params: [("server".to_string(), "x' OR '1'='1' --".to_string())].into(),
    };
    let rows = engine
        .stream(&Scope::All, &request, None)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(rows.num_rows(), 0);
}

/// Footers are cached between an engine's queries: an object rewritten under the same
/// name (a replayed flush, a compaction rerun) is read afresh, never through its old footer.
#[tokio::test]
async fn cached_footers_follow_a_rewritten_object() {
    let mut archive = Archive::new();
    let probe = |i: i64| json!({"time": ts(hour_ago(2, i)), "server": "weather", "region": "eu-west", "ok": true});
    archive.write(Table::Probes, "acme", (0..3).map(probe).collect());
    let engine = archive.engine();
    let count = "SELECT count(*) AS n, sum(CASE WHEN ok THEN 1 ELSE 0 END) AS ok FROM probes";
    let n = |b: &RecordBatch| (float(b, "n", 0), float(b, "ok", 0));
    let first = sql(&engine, count).await;
    assert_eq!(n(&first), (3.0, 3.0));
    // The same object, rewritten with other rows.
    let written: Vec<_> = walk(archive.dir.path());
    assert_eq!(written.len(), 1, "{written:?}");
    let old = std::fs::read(&written[0]).unwrap();
    let mut again = Archive::new();
    again.write(
        Table::Probes,
        "acme",
        (0..7)
            .map(|i| json!({"time": ts(hour_ago(2, i)), "server": "weather", "region": "eu-west", "ok": i < 2}))
            .collect(),
    );
    let new = std::fs::read(&walk(again.dir.path())[0]).unwrap();
    assert_ne!(old.len(), new.len());
    std::fs::write(&written[0], new).unwrap();
    let second = sql(&engine, count).await;
    assert_eq!(n(&second), (7.0, 2.0));
}

async fn sql(engine: &QueryEngine, sql: &str) -> RecordBatch {
    let result = engine.execute(&Scope::All, sql).await.unwrap();
    concat_batches(&result.schema, &result.batches).unwrap()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out
}

/// The text of a plan (`EXPLAIN`'s physical plan rows, joined).
async fn physical_plan(engine: &QueryEngine, query: &str) -> String {
    let result = engine
        .execute(&Scope::All, &format!("EXPLAIN {query}"))
        .await
        .unwrap();
    let batch = concat_batches(&result.schema, &result.batches).unwrap();
    (0..batch.num_rows())
        .filter(|&i| text(&batch, "plan_type", i).as_deref() == Some("physical_plan"))
        .filter_map(|i| text(&batch, "plan", i))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The small tables (tens of rows per object) are read without a per-object pruning
/// predicate, their filters applied to the rows; the large ones keep pruning by statistics.
/// Both give the same rows.
#[tokio::test]
async fn small_tables_filter_rows_instead_of_pruning_objects() {
    let mut archive = Archive::new();
    let t0 = hour_ago(5, 0);
    let rows: Vec<_> = (0..4)
        .flat_map(|h| {
            let t = t0 + Duration::hours(h);
            [
                alert(t, &format!("i{h}"), "trigger", "weather", t),
                alert(
                    t + Duration::minutes(9),
                    &format!("i{h}"),
                    "resolve",
                    "api",
                    t,
                ),
            ]
        })
        .collect();
    archive.write(Table::Alerts, "acme", rows);
    let probe = |i: i64| json!({"time": ts(hour_ago(2, i)), "server": if i % 2 == 0 { "weather" } else { "api" }, "region": "eu-west", "ok": true});
    archive.write(Table::Probes, "acme", (0..6).map(probe).collect());
    let engine = archive.engine();

    let small = "SELECT count(*) AS n FROM alerts WHERE action = 'resolve' AND server = 'api' AND time >= now() - INTERVAL '1 day'";
    let plan = physical_plan(&engine, small).await;
    let scan = plan
        .lines()
        .find(|l| l.contains("DataSourceExec"))
        .unwrap_or_else(|| panic!("no scan in {plan}"));
    assert!(!scan.contains("predicate="), "{scan}");
    assert!(plan.contains("FilterExec"), "{plan}");
    assert_eq!(float(&sql(&engine, small).await, "n", 0), 4.0);

    let large = "SELECT count(*) AS n FROM probes WHERE server = 'api' AND time >= now() - INTERVAL '1 day'";
    let plan = physical_plan(&engine, large).await;
    assert!(plan.contains("predicate="), "{plan}");
    assert_eq!(float(&sql(&engine, large).await, "n", 0), 3.0);
}

/// Small objects are kept whole between an engine's queries: one rewritten under the same
/// name is read afresh, and one removed is no longer read.
#[tokio::test]
async fn cached_small_objects_follow_the_archive() {
    let mut archive = Archive::new();
    let t0 = hour_ago(3, 0);
    archive.write(
        Table::Alerts,
        "acme",
        vec![alert(t0, "i1", "trigger", "weather", t0)],
    );
    archive.write(
        Table::Alerts,
        "acme",
        vec![alert(t0 + Duration::hours(1), "i2", "trigger", "api", t0)],
    );
    let engine = archive.engine();
    let count = "SELECT count(*) AS n, count(DISTINCT incident_id) AS incidents FROM alerts";
    let n = |b: &RecordBatch| (float(b, "n", 0), float(b, "incidents", 0));
    assert_eq!(n(&sql(&engine, count).await), (2.0, 2.0));
    // Served from memory now; the same answer.
    assert_eq!(n(&sql(&engine, count).await), (2.0, 2.0));

    let written = walk(archive.dir.path());
    assert_eq!(written.len(), 2, "{written:?}");
    let mut again = Archive::new();
    again.write(
        Table::Alerts,
        "acme",
        (0..5)
            .map(|i| alert(t0, &format!("r{i}"), "trigger", "weather", t0))
            .collect(),
    );
    let rewritten = &written[0];
    std::fs::write(
        rewritten,
        std::fs::read(&walk(again.dir.path())[0]).unwrap(),
    )
    .unwrap();
    assert_eq!(n(&sql(&engine, count).await), (6.0, 6.0));
    std::fs::remove_file(&written[1]).unwrap();
    assert_eq!(n(&sql(&engine, count).await), (5.0, 5.0));
}

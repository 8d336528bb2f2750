//! `POST /api/v1/query` of a running `mcpulse run`: formats by `format` or `Accept`
//! (JSON, CSV, NDJSON, Arrow IPC), named queries with parameters, the row limit, and
//! large results streamed.

mod common;

use common::{ACME_TOKEN, GLOBEX_TOKEN, Mcpulse, http};
use reqwest::StatusCode;

fn post(m: &Mcpulse, body: serde_json::Value, accept: Option<&str>) -> reqwest::blocking::Response {
    let mut req = http()
        .post(m.url("/api/v1/query"))
        .bearer_auth(ACME_TOKEN)
        .json(&body);
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    req.send().unwrap()
}

#[test]
fn formats_named_queries_limits_and_streaming() {
    let m = Mcpulse::start("");
    let now = chrono::Utc::now().to_rfc3339();
    for (token, server, ok) in [
        (ACME_TOKEN, "weather", true),
        (ACME_TOKEN, "weather", false),
        (ACME_TOKEN, "search", true),
        (GLOBEX_TOKEN, "weather", false),
    ] {
        let resp = http()
            .post(m.url("/v1/probes"))
            .bearer_auth(token)
            .json(&serde_json::json!({"server": server, "region": "eu-west", "ok": ok, "started_at": now,
                "failure_reason": if ok { None } else { Some("tcp_refused") }}))
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert_eq!(m.wait_count("SELECT count(*) AS n FROM probes", 4), 4);

    // Accept decides without a format field.
    let sql = serde_json::json!({"sql": "SELECT server, count(*) AS n FROM probes GROUP BY server ORDER BY server"});
    let resp = post(&m, sql.clone(), Some("text/csv"));
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(resp.text().unwrap(), "server,n\nsearch,1\nweather,2\n");
    // Arrow IPC stream: continuation marker first, end-of-stream marker last.
    let resp = post(&m, sql.clone(), Some("application/vnd.apache.arrow.stream"));
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = resp.bytes().unwrap();
    assert_eq!(&bytes[..4], &[0xff; 4]);
    assert_eq!(
        &bytes[bytes.len() - 8..],
        &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]
    );
    // The format field wins over Accept.
    let mut with_format = sql.clone();
    with_format["format"] = "ndjson".into();
    let resp = post(&m, with_format, Some("text/csv"));
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    assert_eq!(resp.text().unwrap().lines().count(), 2);

    // A named query with parameters; tenant-scoped like any SQL.
    let resp = post(
        &m,
        serde_json::json!({"named": "uptime_30d", "params": {"server": "weather", "window": "1d"}}),
        None,
    );
    assert_eq!(resp.status(), StatusCode::OK);
    let rows: Vec<serde_json::Value> = resp.json().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0]["probes"], 2,
        "globex's probe is not acme's: {rows:?}"
    );
    assert_eq!(rows[0]["uptime_pct"], 50.0);
    let resp = post(
        &m,
        serde_json::json!({"named": "uptime_30d", "params": {"sever": "x"}}),
        None,
    );
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        resp.text()
            .unwrap()
            .contains("unknown parameter \\\"sever\\\"")
    );
    let resp = post(&m, serde_json::json!({"named": "nope"}), None);
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // The row limit of a request.
    let resp = post(
        &m,
        serde_json::json!({"sql": "SELECT * FROM probes", "max_rows": 1}),
        None,
    );
    assert_eq!(resp.headers()["x-mcpulse-truncated"], "true");
    assert_eq!(resp.json::<Vec<serde_json::Value>>().unwrap().len(), 1);

    // A large result streams, cut at query.max_rows (100000 by default).
    let resp = post(
        &m,
        serde_json::json!({"sql": "SELECT value, 'padding-padding-padding' AS p FROM generate_series(1, 300000)", "format": "ndjson"}),
        None,
    );
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-mcpulse-streamed"], "true");
    assert_eq!(resp.headers()["x-mcpulse-row-limit"], "100000");
    let text = resp.text().unwrap();
    assert_eq!(text.lines().count(), 100_000);
    assert!(text.lines().last().unwrap().contains("\"value\":100000"));
}

#[test]
fn cli_named_queries() {
    let m = Mcpulse::start("");
    let resp = http()
        .post(m.url("/v1/probes"))
        .bearer_auth(ACME_TOKEN)
        .json(
            &serde_json::json!({"server": "weather", "region": "eu-west", "ok": true,
            "started_at": chrono::Utc::now().to_rfc3339()}),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(m.wait_count("SELECT count(*) AS n FROM probes", 1), 1);
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mcpulse"))
            .arg("--config")
            .arg(&m.config)
            .arg("query")
            .args(args)
            .env("ACME_TOKEN", ACME_TOKEN)
            .output()
            .unwrap()
    };
    let list = cli(&["--list-named"]);
    assert!(list.status.success());
    let list = String::from_utf8(list.stdout).unwrap();
    for name in [
        "uptime_30d",
        "tool_latency_hourly",
        "error_budget_burn",
        "mttd_mttr",
        "drift_timeline",
        "storms",
        "notification_delivery",
    ] {
        assert!(list.contains(name), "{list}");
    }
    let out = cli(&[
        "--named",
        "uptime_30d",
        "--param",
        "server=weather",
        "--format",
        "csv",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.starts_with("server,probes,ok_probes,"), "{csv}");
    assert!(csv.contains("\nweather,1,1,0,100.0,1,"), "{csv}");
    let out = cli(&["--named", "uptime_30d", "--param", "nope=1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown parameter \"nope\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["--named", "uptime_30d", "--param", "window"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected NAME=VALUE"));
}

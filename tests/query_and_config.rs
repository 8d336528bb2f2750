//! SQL over the archive: the CLI's formats, tenant scoping over HTTP (whatever the SQL),
//! operators seeing everything, read-only statements; and `mcpulse config check`.

mod common;

use std::process::Command;

use common::{ACME_TOKEN, GLOBEX_TOKEN, Mcpulse, OPERATOR_TOKEN, http};
use reqwest::StatusCode;

fn probe(server: &str) -> String {
    serde_json::json!({"server": server, "region": "us-east", "started_at": chrono::Utc::now().to_rfc3339(), "ok": true})
        .to_string()
}

fn sql(m: &Mcpulse, token: &str, sql: &str) -> (StatusCode, serde_json::Value) {
    let resp = http()
        .post(m.url("/api/v1/query"))
        .bearer_auth(token)
        .json(&serde_json::json!({"sql": sql, "format": "json"}))
        .send()
        .unwrap();
    let status = resp.status();
    (status, resp.json().unwrap())
}

#[test]
fn tenants_see_only_their_rows_whatever_the_sql() {
    let m = Mcpulse::start("");
    for (token, server) in [(ACME_TOKEN, "acme-server"), (GLOBEX_TOKEN, "globex-server")] {
        let resp = http()
            .post(m.url("/v1/probes"))
            .header("content-type", "application/json")
            .bearer_auth(token)
            .body(probe(server))
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert_eq!(m.wait_count("SELECT count(*) AS n FROM probes", 2), 2);

    // The process's own metrics, and health.
    let metrics = http()
        .get(m.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("mcpulse_ingest_probes_accepted_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcpulse_archive_rows_total{operator=\"archive-probes\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE mcpulse_bus_consumer_lag gauge"),
        "{metrics}"
    );
    assert_eq!(
        http().get(m.url("/readyz")).send().unwrap().status(),
        StatusCode::OK
    );

    let (status, rows) = sql(&m, ACME_TOKEN, "SELECT tenant, server FROM probes");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        rows,
        serde_json::json!([{"tenant": "acme", "server": "acme-server"}])
    );
    for attempt in [
        "SELECT server FROM probes WHERE tenant = 'globex'",
        "SELECT server FROM probes WHERE tenant <> 'acme' OR true",
        "SELECT p.server FROM probes p JOIN probes q ON p.server = q.server WHERE q.tenant = 'globex'",
        "SELECT server FROM (SELECT * FROM probes) WHERE server LIKE 'globex%'",
    ] {
        let (status, rows) = sql(&m, ACME_TOKEN, attempt);
        assert_eq!(status, StatusCode::OK, "{attempt}: {rows}");
        assert!(
            !rows.to_string().contains("globex"),
            "{attempt} leaked: {rows}"
        );
    }
    // DDL that could point at another tenant's folder is refused.
    let (status, body) = sql(
        &m,
        ACME_TOKEN,
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/'",
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = sql(
        &m,
        ACME_TOKEN,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        serde_json::json!([
            {"table_name": "alerts"},
            {"table_name": "drift"},
            {"table_name": "notifications"},
            {"table_name": "probes"},
            {"table_name": "signals"},
            {"table_name": "spans"}
        ])
    );

    let (status, rows) = sql(
        &m,
        OPERATOR_TOKEN,
        "SELECT tenant, count(*) AS n FROM probes GROUP BY tenant ORDER BY tenant",
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        rows,
        serde_json::json!([{"tenant": "acme", "n": 1}, {"tenant": "globex", "n": 1}])
    );

    let (status, body) = sql(&m, "nope-nope-nope", "SELECT 1");
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = sql(&m, ACME_TOKEN, "SELEC 1");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("sql"),
        "{body}"
    );

    // The CLI: table (default), CSV, and tenant scoping.
    let out = Command::new(env!("CARGO_BIN_EXE_mcpulse"))
        .args(["query", "--config"])
        .arg(&m.config)
        .arg("SELECT tenant, server FROM probes ORDER BY tenant")
        .env("ACME_TOKEN", ACME_TOKEN)
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("| tenant | server        |"), "{table}");
    assert!(table.contains("| globex | globex-server |"), "{table}");
    let out = Command::new(env!("CARGO_BIN_EXE_mcpulse"))
        .args(["query", "--format", "csv", "--tenant", "globex", "--config"])
        .arg(&m.config)
        .arg("SELECT server FROM probes")
        .env("ACME_TOKEN", ACME_TOKEN)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "server\nglobex-server\n"
    );
    let out = m.query_cli("SELECT nope FROM probes");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[test]
fn config_check_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let check = |yaml: &str| {
        let path = dir.path().join("mcpulse.yaml");
        std::fs::write(&path, yaml).unwrap();
        Command::new(env!("CARGO_BIN_EXE_mcpulse"))
            .args(["config", "check"])
            .arg(&path)
            .env("SECRET_TOKEN", "super-secret-token")
            .output()
            .unwrap()
    };
    let ok = check("auth:\n  tenants:\n    - id: acme\n      tokens: [\"${SECRET_TOKEN}\"]\n");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok (1 tenant(s)"));
    for (yaml, field) in [
        (
            "auth:\n  anonymous_tenant: demo\narchive:\n  flush_intervall: 2s\n",
            "flush_intervall",
        ),
        (
            "auth:\n  anonymous_tenant: demo\nlisten:\n  api: 'not an address'\n",
            "listen.api",
        ),
        (
            "auth:\n  anonymous_tenant: demo\narchive:\n  flush_interval: soon\n",
            "archive.flush_interval",
        ),
        (
            "auth:\n  tenants:\n    - id: 'a b'\n      tokens: [\"${SECRET_TOKEN}\"]\n",
            "auth.tenants[0].id",
        ),
        (
            "auth:\n  tenants:\n    - id: acme\n      tokens: [\"${UNSET_VARIABLE_X}\"]\n",
            "UNSET_VARIABLE_X",
        ),
        (
            "auth:\n  anonymous_tenant: demo\n  tenants:\n    - id: acme\n      tokenz: [\"${SECRET_TOKEN}\"]\n",
            "tokenz",
        ),
        ("{}\n", "auth"),
    ] {
        let out = check(yaml);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{yaml} passed");
        assert!(
            err.contains(field),
            "{yaml}: error does not name {field}: {err}"
        );
        assert!(!err.contains("super-secret-token"), "secret leaked: {err}");
    }
}

//! The PostgreSQL wire protocol endpoint of a running `mcpulse run`, through real
//! clients: Debian's `psql` and Python's psycopg (libpq). Grafana's start-up and catalog
//! queries, Grafana-expanded time macros, a named query, typed results, SQL errors with
//! their SQLSTATE on a connection that stays usable, a bad password (28P01), and a
//! tenant that cannot read another tenant's rows by any SQL.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};

use common::{ACME_TOKEN, GLOBEX_TOKEN, Mcpulse, OPERATOR_TOKEN, http, python, repo_path};

fn start() -> (Mcpulse, SocketAddr) {
    let m = Mcpulse::start("query:\n  pg_listen: 127.0.0.1:0\n");
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m.data_dir().join("ready.json")).unwrap())
            .unwrap();
    let pg: SocketAddr = ready["pg"]
        .as_str()
        .unwrap_or_else(|| panic!("no pg listener in ready.json: {ready}"))
        .parse()
        .unwrap();
    let now = chrono::Utc::now();
    for (token, server, ok) in [
        (ACME_TOKEN, "acme-weather", true),
        (ACME_TOKEN, "acme-weather", true),
        (ACME_TOKEN, "acme-weather", false),
        (GLOBEX_TOKEN, "globex-secret", true),
        (GLOBEX_TOKEN, "globex-secret", false),
    ] {
        let body = serde_json::json!({"server": server, "region": "eu-west", "ok": ok,
            "started_at": now.to_rfc3339(), "failure_reason": if ok { None } else { Some("tcp_refused") },
            "http_status": 200, "phases": {"dns_ms": 1.0}, "labels": {"team": "a"}});
        let resp = http()
            .post(m.url("/v1/probes"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .unwrap();
        assert!(resp.status().is_success(), "{:?}", resp.text());
    }
    assert_eq!(m.wait_count("SELECT count(*) AS n FROM probes", 5), 5);
    (m, pg)
}

fn psql(pg: SocketAddr, token: &str, args: &[&str]) -> Output {
    Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-U",
            "grafana",
            "-d",
            "mcpulse",
        ])
        .args(["-p", &pg.port().to_string()])
        .args(args)
        .env("PGPASSWORD", token)
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql (Debian's postgresql-client) must be installed: bash scripts/test-deps.sh")
}

fn psql_ok(pg: SocketAddr, token: &str, sql: &str) -> String {
    let out = psql(pg, token, &["-v", "ON_ERROR_STOP=1", "-c", sql]);
    assert!(
        out.status.success(),
        "psql failed on {sql}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn psql_grafana_queries_and_tenant_isolation() {
    let (m, pg) = start();
    assert!(psql_ok(pg, ACME_TOKEN, "SELECT version()").contains("PostgreSQL 16.6"));
    assert_eq!(
        psql_ok(pg, ACME_TOKEN, "SHOW server_version").trim(),
        "16.6"
    );
    assert_eq!(psql_ok(pg, ACME_TOKEN, "SELECT 1").trim(), "1");
    assert_eq!(
        psql_ok(
            pg,
            ACME_TOKEN,
            "SELECT current_setting('server_version_num')::int/100 as version"
        )
        .trim(),
        "1600"
    );
    // Session statements clients send are accepted.
    psql_ok(
        pg,
        ACME_TOKEN,
        "SET application_name = 'grafana'; SET extra_float_digits = 3; BEGIN; COMMIT",
    );
    // Grafana's table list (older form, with the search-path subquery) and columns.
    let tables = psql_ok(
        pg,
        ACME_TOKEN,
        "select quote_ident(table_name) as \"table\" from information_schema.tables \
         where quote_ident(table_schema) not in ('information_schema','pg_catalog','_timescaledb_cache') \
         and table_type = 'BASE TABLE' and quote_ident(table_schema) IN ( \
           SELECT CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END \
           FROM generate_series(array_lower(string_to_array(current_setting('search_path'),','),1), \
             array_upper(string_to_array(current_setting('search_path'),','),1)) as i, \
           string_to_array(current_setting('search_path'),',') s) order by 1",
    );
    assert_eq!(
        tables.lines().collect::<Vec<_>>(),
        vec![
            "alerts",
            "drift",
            "notifications",
            "probes",
            "signals",
            "spans"
        ]
    );
    let columns = psql_ok(
        pg,
        ACME_TOKEN,
        "select quote_ident(column_name) as \"column\", data_type as \"type\" \
         from information_schema.columns where quote_ident(table_name) = 'probes'",
    );
    assert!(columns.contains("failure_reason|"), "{columns}");
    // A panel's SQL after Grafana expanded $__timeFilter and $__timeGroupAlias.
    let from = (chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
    let to = (chrono::Utc::now() + chrono::Duration::minutes(5)).format("%Y-%m-%dT%H:%M:%SZ");
    let series = psql_ok(
        pg,
        ACME_TOKEN,
        &format!(
            "SELECT floor(extract(epoch from time)/60)*60 AS \"time\", count(*) AS probes \
             FROM probes WHERE time BETWEEN '{from}' AND '{to}' GROUP BY 1 ORDER BY 1"
        ),
    );
    let total: i64 = series
        .lines()
        .map(|l| l.split('|').nth(1).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 3, "{series}");
    // A named query, as a table function.
    let uptime = psql_ok(
        pg,
        ACME_TOKEN,
        "SELECT server, probes, ok_probes FROM uptime_30d()",
    );
    assert_eq!(uptime.trim(), "acme-weather|3|2");

    // Tenant acme cannot see globex's rows, whatever it tries.
    for sql in [
        "SELECT DISTINCT server FROM probes",
        "SELECT count(*) FROM probes WHERE tenant = 'globex'",
        "SELECT * FROM probes p FULL OUTER JOIN probes q ON p.tenant <> q.tenant",
        "SELECT server FROM probes WHERE server IN (SELECT server FROM probes WHERE tenant = 'globex')",
        "SELECT table_name, table_type FROM information_schema.tables",
        "SELECT * FROM uptime_30d('globex-secret')",
    ] {
        let out = psql(pg, ACME_TOKEN, &["-c", sql]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains("globex"), "{sql} leaked: {text}");
    }
    assert_eq!(
        psql_ok(
            pg,
            ACME_TOKEN,
            "SELECT count(*) FROM probes WHERE tenant = 'globex'"
        )
        .trim(),
        "0"
    );
    assert_eq!(
        psql_ok(pg, ACME_TOKEN, "SELECT count(*) FROM probes").trim(),
        "3"
    );
    assert_eq!(
        psql_ok(pg, OPERATOR_TOKEN, "SELECT count(*) FROM probes").trim(),
        "5"
    );
    // EXPLAIN names archive paths: operators only.
    let explain = psql(pg, ACME_TOKEN, &["-c", "EXPLAIN SELECT * FROM probes"]);
    assert!(!explain.status.success());

    // A SQL error is an ERROR with its SQLSTATE; the connection goes on.
    let out = psql(
        pg,
        ACME_TOKEN,
        &[
            "-c",
            "\\set VERBOSITY verbose",
            "-c",
            "SELECT nope FROM probes",
            "-c",
            "SELECT 42",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ERROR:  42703"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("42"));
    let out = psql(
        pg,
        ACME_TOKEN,
        &["-v", "VERBOSITY=verbose", "-c", "DROP TABLE probes"],
    );
    assert!(!out.status.success());

    // A wrong password.
    let out = psql(pg, "wrong-token-0123456789", &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("authentication failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(m);
}

/// The ErrorResponse fields of a start-up with a wrong password, straight off the wire.
#[test]
fn wrong_password_is_28p01() {
    let (_m, pg) = start();
    let mut s = TcpStream::connect(pg).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut body = Vec::new();
    body.extend(196608i32.to_be_bytes());
    for kv in ["user", "grafana", "database", "mcpulse", ""] {
        body.extend(kv.as_bytes());
        body.push(0);
    }
    let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    msg.extend(body);
    s.write_all(&msg).unwrap();
    let (tag, payload) = read_message(&mut s);
    assert_eq!(tag, b'R');
    assert_eq!(
        &payload[..4],
        &3i32.to_be_bytes(),
        "cleartext password asked"
    );
    let password = b"wrong-token-0123456789\0";
    let mut msg = vec![b'p'];
    msg.extend(((password.len() + 4) as i32).to_be_bytes());
    msg.extend(password);
    s.write_all(&msg).unwrap();
    let (tag, payload) = read_message(&mut s);
    assert_eq!(tag, b'E');
    let fields: Vec<(u8, String)> = payload
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| (f[0], String::from_utf8_lossy(&f[1..]).to_string()))
        .collect();
    assert!(fields.contains(&(b'C', "28P01".to_string())), "{fields:?}");
}

fn read_message(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).unwrap();
    let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
    let mut payload = vec![0u8; len - 4];
    s.read_exact(&mut payload).unwrap();
    (head[0], payload)
}

#[test]
fn psycopg_connects_runs_grafana_queries_and_cannot_cross_tenants() {
    let (_m, pg) = start();
    let out = Command::new(python())
        .arg(repo_path("tests/python/pg_client.py"))
        .args(["127.0.0.1", &pg.port().to_string()])
        .env("ACME_TOKEN", ACME_TOKEN)
        .env("OPERATOR_TOKEN", OPERATOR_TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_client.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["server_version"], 160006, "{r}");
    assert!(
        r["version"]
            .as_str()
            .unwrap()
            .starts_with("PostgreSQL 16.6")
    );
    assert_eq!(r["pg_version"], 1600);
    assert_eq!(r["timescaledb"], serde_json::json!([]));
    assert_eq!(
        r["tables"],
        serde_json::json!([
            "alerts",
            "drift",
            "notifications",
            "probes",
            "signals",
            "spans"
        ])
    );
    let columns = r["columns"].as_array().unwrap();
    assert!(columns.iter().any(|c| c[0] == "failure_reason"), "{r}");
    assert_eq!(r["databases"], serde_json::json!([["mcpulse"]]));
    let named = &r["named"][0];
    assert_eq!(named[0], "acme-weather");
    assert_eq!(named[1], 3);
    assert_eq!(named[2], 2);
    assert!((named[3].as_f64().unwrap() - 200.0 / 3.0).abs() < 1e-9);
    assert_eq!(r["bound"], serde_json::json!([["acme-weather", 2]]));
    let typed = &r["typed"][0];
    assert!(
        typed[0].as_str().unwrap().contains("+00:00"),
        "timestamptz: {typed}"
    );
    assert_eq!(typed[2], 200);
    assert!(typed[4].as_str().unwrap().contains("team"), "{typed}");
    assert_eq!(
        r["leaks"],
        serde_json::json!({}),
        "tenant acme saw globex rows"
    );
    assert_eq!(r["file_read"], "42P01");
    assert_eq!(r["sql_error"], "42703");
    assert_eq!(r["after_error"], serde_json::json!([[1]]));
    assert_eq!(
        r["operator_servers"],
        serde_json::json!(["acme-weather", "globex-secret"])
    );
    assert!(
        r["bad_password"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{r}"
    );
}

/// Grafana's expansion of its PostgreSQL macros and template variables, as the data
/// source does it before sending the SQL.
fn expand_grafana(sql: &str, from: &str, to: &str, server: &str) -> String {
    let mut out = sql.replace("$server", server);
    while let Some(at) = out.find("$__") {
        let open = at + out[at..].find('(').unwrap();
        let close = open + out[open..].find(')').unwrap();
        let name = &out[at + 3..open];
        let args: Vec<String> = out[open + 1..close]
            .split(',')
            .map(|a| a.trim().to_string())
            .collect();
        let seconds = |interval: &str| -> u64 {
            humantime::parse_duration(interval.trim_matches('\''))
                .unwrap()
                .as_secs()
        };
        let replacement = match name {
            "timeFilter" => format!("{} BETWEEN '{from}' AND '{to}'", args[0]),
            "timeFrom" => format!("'{from}'"),
            "timeTo" => format!("'{to}'"),
            "timeGroup" => format!(
                "floor(extract(epoch from {})/{s})*{s}",
                args[0],
                s = seconds(&args[1])
            ),
            "timeGroupAlias" => format!(
                "floor(extract(epoch from {})/{s})*{s} AS \"time\"",
                args[0],
                s = seconds(&args[1])
            ),
            other => panic!("macro $__{other} not expanded by this test"),
        };
        out.replace_range(at..=close, &replacement);
    }
    out
}

#[test]
fn grafana_dashboards_parse_and_every_sql_target_runs() {
    let (_m, pg) = start();
    let from = (chrono::Utc::now() - chrono::Duration::hours(6))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let to = (chrono::Utc::now() + chrono::Duration::minutes(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let dir = repo_path("deploy/grafana/dashboards");
    let mut ran = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut sqls: Vec<String> = Vec::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                if let Some(sql) = target["rawSql"].as_str() {
                    sqls.push(sql.to_string());
                } else {
                    assert!(target["expr"].is_string(), "{}: {target}", path.display());
                }
            }
        }
        for var in dashboard["templating"]["list"].as_array().unwrap() {
            sqls.push(var["query"].as_str().unwrap().to_string());
        }
        for sql in sqls {
            let expanded = expand_grafana(&sql, &from, &to, "acme-weather");
            for token in [ACME_TOKEN, OPERATOR_TOKEN] {
                psql_ok(pg, token, &expanded);
            }
            ran += 1;
        }
    }
    assert!(ran >= 15, "only {ran} SQL targets");
}

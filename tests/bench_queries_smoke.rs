//! `bench-queries` at a tiny size (8 servers, 2 tenants, one day): the history is
//! generated with the archive's writers, every named query runs through mcpulse's engine
//! as operator and tenant, DuckDB runs the same queries over the same files and returns
//! as many rows, and the figures and ratios are printed; `--reuse` then runs over the
//! same dataset without generating it again. Figures are not checked (performance lives
//! in the benchmark, not in timed tests).
//!
//! DuckDB comes from the test venv (scripts/test-deps.sh: duckdb, numpy, pyarrow); without
//! it, and only outside CI, the mcpulse side runs alone (`--no-duckdb`).

mod common;

use std::path::PathBuf;
use std::process::Command;

/// The test venv's Python; outside it, `python3` (which may lack DuckDB).
fn python() -> String {
    common::venv_python().map_or_else(|| "python3".into(), |p| p.to_string_lossy().into_owned())
}

fn has_duckdb(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import duckdb, numpy, pyarrow"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_bench-queries"))
        .args(args)
        .output()
        .expect("running bench-queries");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench-queries failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

#[test]
fn bench_queries_runs_at_a_tiny_size() {
    let python = python();
    let with_duckdb = has_duckdb(&python);
    if !with_duckdb {
        assert!(
            std::env::var_os("CI").is_none(),
            "{python} cannot import duckdb, numpy and pyarrow: scripts/test-deps.sh installs them"
        );
        eprintln!("no duckdb for {python}: running the mcpulse side only");
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("history");
    let data = data.to_str().unwrap();
    let mut args = vec![
        "--servers",
        "8",
        "--tenants",
        "2",
        "--days",
        "1",
        "--runs",
        "1",
        "--data",
        data,
        "--python",
        &python,
    ];
    if !with_duckdb {
        args.push("--no-duckdb");
    }
    let stdout = run(&args);
    assert!(
        stdout.contains("dataset: 1 days x 8 servers, 2 tenants"),
        "{stdout}"
    );
    // Every table has rows: 8 servers x 3 regions x 1,440 minutes of probes.
    let probes = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("probes "))
        .unwrap_or_else(|| panic!("no probes line:\n{stdout}"));
    assert!(probes.contains(" 34560 rows"), "{probes}");
    for table in ["signals", "alerts", "notifications"] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{table} ")))
            .unwrap_or_else(|| panic!("no {table} line:\n{stdout}"));
        assert!(!line.contains(" 0 rows"), "{line}");
    }
    for query in [
        "uptime_30d",
        "tool_latency_hourly",
        "error_budget_burn",
        "mttd_mttr",
        "drift_timeline",
        "storms",
        "notification_delivery",
    ] {
        for scope in ["operator", "tenant"] {
            let line = stdout
                .lines()
                .find(|l| l.starts_with(query) && l.contains(scope))
                .unwrap_or_else(|| panic!("no figures for {query} ({scope}):\n{stdout}"));
            if with_duckdb {
                assert!(!line.contains("DuckDB returned"), "{line}");
            }
        }
    }
    assert!(stdout.contains("targets met:"), "{stdout}");
    // The uptime of every server: 8 rows as operator.
    let uptime = stdout
        .lines()
        .find(|l| l.starts_with("uptime_30d") && l.contains("operator"))
        .unwrap();
    assert!(uptime.split_whitespace().nth(2) == Some("8"), "{uptime}");

    // Again over the same files, without generating them.
    let stdout = run(&[
        "--reuse",
        "--data",
        data,
        "--runs",
        "1",
        "--only",
        "uptime_30d",
        "--no-duckdb",
    ]);
    assert!(stdout.contains("dataset: 1 days x 8 servers"), "{stdout}");
    assert!(stdout.contains("targets met:"), "{stdout}");
}

/// DuckDB's side refuses a query whose SQL is not what its translation was written from,
/// so a changed `queries/named/*.sql` cannot be timed against a stale DuckDB copy.
#[test]
fn duckdb_side_refuses_a_stale_translation() {
    use std::io::Write as _;
    let python = python();
    if !has_duckdb(&python) {
        assert!(
            std::env::var_os("CI").is_none(),
            "{python} cannot import duckdb, numpy and pyarrow: scripts/test-deps.sh installs them"
        );
        return;
    }
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/bin/bench_queries/duckdb_side.py");
    let uptime = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("queries/named/uptime_30d.sql"),
    )
    .unwrap();
    let job = |sql: &str| {
        serde_json::json!({
            "root": "/nonexistent", "tenant": "t", "runs": 1, "threads": 1,
            "queries": [], "params": {}, "sql": {"uptime_30d": sql},
        })
        .to_string()
    };
    let run = |input: String| {
        let mut child = Command::new(&python)
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    // The SQL as shipped: accepted (no query asked for, so nothing runs).
    let out = run(job(&uptime));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same query edited: refused, by name.
    let out = run(job(
        &uptime.replace("ORDER BY uptime_pct", "ORDER BY server")
    ));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("uptime_30d") && stderr.contains("TRANSLATED_FROM"),
        "{stderr}"
    );
}

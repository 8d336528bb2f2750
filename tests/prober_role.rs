//! The built-in prober inside `mcpulse run`: targets.yaml with real MCP servers and a
//! dead one, results archived per tenant and region and queryable in `probes` (the tool
//! list kept only when its hash changes), credentials from `${ENV}` never logged, the
//! targets file reloaded without a restart, and the prober on `/metrics`.

mod common;

use std::time::{Duration, Instant};

use common::Mcpulse;
use common::mcp_servers::McpServer;

const MCP_TOKEN: &str = "globex-mcp-secret-42";

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn targets_yaml(rmcp: &McpServer, down_port: u16, extra: &str) -> String {
    format!(
        r#"policy:
  allow_loopback: true
defaults:
  interval: 10s
  timeout: 5s
tenants:
  acme:
    - server: tools
      url: {url}
      labels: {{team: maps}}
    - server: down
      url: http://127.0.0.1:{down_port}/mcp
{extra}  globex:
    - server: secret
      url: {url}
      credential: "${{GLOBEX_MCP_TOKEN}}"
"#,
        url = rmcp.url()
    )
}

/// Polls `sql` until it returns at least `n` rows (at most `within`).
fn rows_within(m: &Mcpulse, sql: &str, n: usize, within: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let rows = m.query(sql);
        if rows.len() >= n || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_prober_inside_run_archives_results_per_tenant_and_region() {
    let rmcp = McpServer::rmcp(true);
    let down = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets.yaml");
    std::fs::write(&targets, targets_yaml(&rmcp, down, "")).unwrap();
    let m = Mcpulse::start_with_env(
        &format!(
            "prober:\n  targets: {}\n  region: eu-west\n  reload_interval: 1s\n",
            targets.display()
        ),
        &[("GLOBEX_MCP_TOKEN", MCP_TOKEN)],
    );
    let window = Duration::from_secs(25);

    // The first round: every target once (first probes are spread over the 10 s interval).
    let first = rows_within(
        &m,
        "SELECT tenant, server, region, ok, failure_reason, protocol_era, tool_count, tools_hash, tools, labels FROM probes ORDER BY time",
        3,
        window,
    );
    assert!(first.len() >= 3, "{first:?}\n{}", m.log());
    let row = |tenant: &str, server: &str| {
        first
            .iter()
            .find(|r| r["tenant"] == tenant && r["server"] == server)
            .unwrap_or_else(|| panic!("no {tenant}/{server} in {first:?}"))
            .clone()
    };
    let tools = row("acme", "tools");
    assert_eq!(tools["region"], "eu-west");
    assert_eq!(tools["ok"], true, "{tools}");
    assert!(tools["protocol_era"].is_string(), "{tools}");
    assert!(tools["tool_count"].as_i64().unwrap() > 0);
    let listed: Vec<serde_json::Value> = serde_json::from_str(
        tools["tools"]
            .as_str()
            .expect("the first probe lists the tools"),
    )
    .unwrap();
    assert_eq!(listed.len() as i64, tools["tool_count"].as_i64().unwrap());
    assert!(tools["labels"].to_string().contains("maps"), "{tools}");
    let down_row = row("acme", "down");
    assert_eq!(down_row["ok"], false);
    assert_eq!(down_row["failure_reason"], "tcp_refused");
    let secret = row("globex", "secret");
    assert_eq!(secret["ok"], true, "{secret}");

    // A tenant's token sees only its own targets.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcpulse"))
        .args(["query", "--format", "json", "--tenant", "acme", "--config"])
        .arg(&m.config)
        .arg("SELECT DISTINCT server FROM probes")
        .env("ACME_TOKEN", common::ACME_TOKEN)
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(seen.contains("tools") && !seen.contains("secret"), "{seen}");

    // The second round of the same server: same hash, no tool list.
    let again = rows_within(
        &m,
        "SELECT tools_hash, tools FROM probes WHERE tenant = 'acme' AND server = 'tools' ORDER BY time",
        2,
        window,
    );
    assert!(again.len() >= 2, "{again:?}\n{}", m.log());
    assert_eq!(again[1]["tools_hash"], again[0]["tools_hash"]);
    assert!(again[1]["tools"].is_null(), "{:?}", again[1]);

    // The targets file is reloaded: a new target gets probed, a broken file is refused
    // while the running list keeps going.
    std::fs::write(
        &targets,
        targets_yaml(
            &rmcp,
            down,
            &format!("    - server: added\n      url: {}\n", rmcp.url()),
        ),
    )
    .unwrap();
    let added = rows_within(
        &m,
        "SELECT ok FROM probes WHERE server = 'added'",
        1,
        window,
    );
    assert_eq!(added.len(), 1, "{}", m.log());
    std::fs::write(
        &targets,
        "tenants:\n  acme:\n    - server: x\n      urll: nope\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let text = m.metrics();
        if text.contains("mcpulse_prober_reload_errors_total 1") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        metrics.contains("mcpulse_prober_reload_errors_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcpulse_prober_targets{region=\"eu-west\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcpulse_prober_reloads_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcpulse_prober_failed_total{reason=\"tcp_refused\"}"),
        "{metrics}"
    );
    let log = m.log();
    assert!(
        log.contains("urll"),
        "the reload error names the field:\n{log}"
    );
    assert!(
        !log.contains(MCP_TOKEN),
        "the credential leaked into the log"
    );
}

#[test]
fn a_broken_targets_file_stops_start_up_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets.yaml");
    std::fs::write(
        &targets,
        "tenants:\n  acme:\n    - server: a\n      url: http://example.com/mcp\n      interval: 1s\n",
    )
    .unwrap();
    let config = dir.path().join("mcpulse.yaml");
    std::fs::write(
        &config,
        common::config_yaml(
            &dir.path().join("data"),
            &format!("prober:\n  targets: {}\n", targets.display()),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcpulse"))
        .args(["run", "--config"])
        .arg(&config)
        .env("ACME_TOKEN", common::ACME_TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("prober.targets") && stderr.contains("tenants.acme[0].interval"),
        "{stderr}"
    );
    // `config check` reports the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcpulse"))
        .args(["config", "check"])
        .arg(&config)
        .env("ACME_TOKEN", common::ACME_TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tenants.acme[0].interval"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn probe_without_once_needs_a_shared_log() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcpulse"))
        .args(["probe", "--region", "eu-west", "--targets", "targets.yaml"])
        .current_dir(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("embedded log") && stderr.contains("prober.targets"),
        "{stderr}"
    );
}

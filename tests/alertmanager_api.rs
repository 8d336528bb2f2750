//! Alerts in the Alertmanager API v2 format (`POST /api/v2/alerts`) through the real
//! `mcpulse run`: each alert becomes an `external` incident delivered to a local
//! PagerDuty stand-in once per transition (trigger, then resolve) — re-sends do not
//! double it — routed on its labels; and the real Prometheus (Debian's
//! `/usr/bin/prometheus`) with an always-firing rule and bearer authorization gets its
//! alert to the receiver through mcpulse, resolved once Prometheus stops re-sending it.
//!
//! Alerts of several tenants naming one upstream provider (`provider` label) correlate
//! into one storm: the operator is paged once, no tenant is.
//!
//! The Prometheus test skips (with a message) when `/usr/bin/prometheus` is absent and
//! `CI` is not set; with `CI` set it fails instead.

mod common;
mod stand_ins;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ACME_TOKEN, GLOBEX_TOKEN, Mcpulse, OPERATOR_TOKEN, http};
use serde_json::{Value, json};
use stand_ins::{Hit, StandIn, actions};

const PD_KEY: &str = "e2e-pd-r0uting-key-0123456789abcd";
const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Fast incident flushes; event time follows the wall clock after 1 s without input, so
/// an alert Prometheus stops re-sending resolves seconds after its `endsAt`.
fn config(routes: &Path) -> String {
    format!(
        "incidents:\n  flush_interval: 200ms\n  idle_timeout: 1s\n  allowed_lateness: 1s\n\
         notify:\n  routes: {}\n  flush_interval: 300ms\n  table_interval: 300ms\n  retry: {{ base: 200ms, cap: 1s, max_attempts: 4 }}\n",
        routes.display()
    )
}

/// Alerts labelled `team=mcp` go to `team`, everything else to `catchall`.
fn routes(dir: &Path, team: &StandIn, catchall: &StandIn) -> PathBuf {
    let path = dir.join("routes.yaml");
    std::fs::write(
        &path,
        format!(
            "receivers:\n\
             \x20 - name: catchall\n    pagerduty: {{ routing_key: \"${{E2E_PD_KEY}}\", url: \"{}\" }}\n\
             \x20 - name: mcp-team\n    pagerduty: {{ routing_key: \"${{E2E_PD_KEY}}\", url: \"{}\" }}\n\
             route:\n  id: root\n  receiver: catchall\n  routes:\n\
             \x20   - id: mcp\n      matchers: [\"class = external\", \"labels.team = mcp\"]\n      receiver: mcp-team\n",
            catchall.url, team.url
        ),
    )
    .unwrap();
    path
}

fn start(routes: &Path) -> Mcpulse {
    Mcpulse::start_with_env(&config(routes), &[("E2E_PD_KEY", PD_KEY)])
}

fn post(m: &Mcpulse, token: Option<&str>, body: &Value) -> (u16, String) {
    let mut request = http().post(m.url("/api/v2/alerts")).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    // Errors are `{"error": "..."}`: the message, unescaped.
    let text = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(body)) => body
            .get("error")
            .and_then(Value::as_str)
            .map_or(text.clone(), str::to_owned),
        _ => text,
    };
    (status, text)
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The alert as Prometheus sends it while firing: `endsAt` a few minutes ahead.
fn firing(started: chrono::DateTime<chrono::Utc>) -> Value {
    json!([{
        "labels": {"alertname": "McpToolErrors", "severity": "critical", "team": "mcp",
                   "instance": "10.0.0.7:9100", "job": "weather"},
        "annotations": {"summary": "weather tool errors above 5% on 10.0.0.7:9100"},
        "startsAt": rfc3339(started),
        "endsAt": rfc3339(chrono::Utc::now() + chrono::Duration::minutes(4)),
        "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=errors",
    }])
}

/// No new request reaches `receiver` for `quiet`.
fn assert_stays(receiver: &StandIn, n: usize, quiet: Duration, what: &str) {
    std::thread::sleep(quiet);
    let hits = receiver.hits();
    assert_eq!(hits.len(), n, "{what}: {:#?}", bodies(&hits));
}

fn bodies(hits: &[Hit]) -> Vec<&Value> {
    hits.iter().map(|h| &h.body).collect()
}

#[test]
fn alerts_reach_the_receiver_once_per_transition_routed_on_their_labels() {
    let team = StandIn::pagerduty();
    let catchall = StandIn::pagerduty();
    let dir = tempfile::tempdir().unwrap();
    let m = start(&routes(dir.path(), &team, &catchall));
    let started = chrono::Utc::now() - chrono::Duration::minutes(1);

    // Firing: 200 with an empty body, as Alertmanager answers; one trigger.
    let (status, body) = post(&m, Some(ACME_TOKEN), &firing(started));
    assert_eq!((status, body.as_str()), (200, ""));
    let hits = team.wait_for(1, Duration::from_secs(30));
    assert_eq!(actions(&hits), ["trigger"], "{:#?}", bodies(&hits));
    let trigger = &hits[0].body;
    let dedup_key = trigger["dedup_key"].as_str().unwrap().to_owned();
    assert!(
        dedup_key.starts_with("mcpulse/acme/external/"),
        "{dedup_key}"
    );
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert!(
        trigger["payload"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("McpToolErrors: weather tool errors above 5%"),
        "{trigger}"
    );
    assert!(
        !hits[0].raw.contains("10.0.0.7") && !hits[0].raw.contains("127.0.0.1"),
        "no IP address leaves mcpulse: {}",
        hits[0].raw
    );

    // Prometheus re-sends a firing alert every resend interval: no second page.
    for _ in 0..3 {
        assert_eq!(post(&m, Some(ACME_TOKEN), &firing(started)).0, 200);
    }
    assert_stays(&team, 1, Duration::from_secs(3), "re-sends update in place");

    // Resolved (endsAt in the past): one resolve of the same incident; its re-sends
    // (Prometheus keeps sending resolved alerts for a while) nothing more.
    let mut resolved = firing(started);
    resolved[0]["endsAt"] = json!(rfc3339(chrono::Utc::now() - chrono::Duration::seconds(1)));
    assert_eq!(post(&m, Some(ACME_TOKEN), &resolved).0, 200);
    let hits = team.wait_for(2, Duration::from_secs(30));
    assert_eq!(
        actions(&hits),
        ["trigger", "resolve"],
        "{:#?}",
        bodies(&hits)
    );
    assert_eq!(hits[1].body["dedup_key"], dedup_key.as_str());
    for _ in 0..2 {
        assert_eq!(post(&m, Some(ACME_TOKEN), &resolved).0, 200);
    }
    assert_stays(&team, 2, Duration::from_secs(2), "one resolve");

    // Other labels route elsewhere, with the severity label mapped (warning → P3).
    let other = json!([{"labels": {"alertname": "DiskFilling", "severity": "warning"}}]);
    assert_eq!(post(&m, Some(ACME_TOKEN), &other).0, 200);
    let hits = catchall.wait_for(1, Duration::from_secs(30));
    assert_eq!(actions(&hits), ["trigger"], "{:#?}", bodies(&hits));
    assert_eq!(hits[0].body["payload"]["severity"], "warning");
    assert_ne!(hits[0].body["dedup_key"], dedup_key.as_str());
    assert_eq!(team.hits().len(), 2, "the team route saw only its alert");

    // The edges: no token 401, an operator's 403, bad input 400 naming the field.
    assert_eq!(post(&m, None, &other).0, 401);
    assert_eq!(post(&m, Some("not-a-token-at-all"), &other).0, 401);
    assert_eq!(post(&m, Some(OPERATOR_TOKEN), &other).0, 403);
    let (status, body) = post(&m, Some(ACME_TOKEN), &json!([{"annotations": {}}]));
    assert_eq!(status, 400);
    assert!(body.contains("alert [0] field labels: required"), "{body}");
    let (status, body) = post(
        &m,
        Some(ACME_TOKEN),
        &json!([{"labels": {"alertname": "X"}, "endsAt": "tomorrow"}]),
    );
    assert_eq!(status, 400);
    assert!(body.contains("field endsAt: invalid timestamp"), "{body}");
    let (status, body) = post(
        &m,
        Some(ACME_TOKEN),
        &json!([{"labels": {"bad-name": "X"}}]),
    );
    assert_eq!(status, 400);
    assert!(body.contains("invalid name \"bad-name\""), "{body}");
    assert_stays(
        &catchall,
        1,
        Duration::from_secs(1),
        "refused alerts page nobody",
    );
    assert!(
        m.metrics()
            .contains("mcpulse_ingest_alerts_accepted_total 8"),
        "{}",
        m.metrics()
    );
}

#[test]
fn alerts_of_one_provider_from_several_tenants_page_the_operator_once_as_a_storm() {
    let tenants = StandIn::pagerduty();
    let noc = StandIn::pagerduty();
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        format!(
            "receivers:\n\
             \x20 - name: tenants\n    pagerduty: {{ routing_key: \"${{E2E_PD_KEY}}\", url: \"{}\" }}\n\
             \x20 - name: noc\n    pagerduty: {{ routing_key: \"${{E2E_PD_KEY}}\", url: \"{}\" }}\n\
             route:\n  id: root\n  receiver: tenants\n\
             operator_routes:\n  id: operator\n  receiver: noc\n",
            tenants.url, noc.url
        ),
    )
    .unwrap();
    // Two tenants are enough for a storm here (the floor's minimum); triggers are held
    // 5 s in case one forms.
    let config = config(&routes).replacen(
        "incidents:\n",
        "incidents:\n  storm: { min_tenants: 2, hold: 5s }\n",
        1,
    );
    let m = Mcpulse::start_with_env(&config, &[("E2E_PD_KEY", PD_KEY)]);
    let upstream = |instance: &str| {
        json!([{
            "labels": {"alertname": "UpstreamApiDown", "severity": "critical",
                       "provider": "aws", "region": "us-east-1", "instance": instance},
            "annotations": {"summary": format!("calls to the upstream API fail on {instance}")},
        }])
    };
    assert_eq!(post(&m, Some(ACME_TOKEN), &upstream("acme-mcp-1")).0, 200);
    assert_eq!(
        post(&m, Some(GLOBEX_TOKEN), &upstream("globex-mcp-7")).0,
        200
    );

    // One page, for the operator: the storm, naming the provider and no tenant.
    let hits = noc.wait_for(1, Duration::from_secs(30));
    assert_eq!(actions(&hits), ["trigger"], "{:#?}", bodies(&hits));
    let storm = &hits[0];
    assert!(
        storm.body["payload"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("Upstream outage: aws external (us-east-1): 2 tenants"),
        "{}",
        storm.body
    );
    for tenant_text in ["acme", "globex"] {
        assert!(!storm.raw.contains(tenant_text), "{}", storm.raw);
    }
    // No tenant is paged: their triggers were held, then folded into the storm.
    assert_stays(
        &tenants,
        0,
        Duration::from_secs(8),
        "storm members page nobody",
    );
    assert_stays(&noc, 1, Duration::from_secs(0), "one storm page");

    // The history keeps both members, suppressed and linked to the storm.
    let sql = "SELECT count(DISTINCT tenant) AS n FROM alerts \
               WHERE class = 'external' AND action = 'suppress' AND storm_id IS NOT NULL";
    assert_eq!(m.wait_count(sql, 2), 2);

    // An alert naming no provider is no storm member: it pages its tenant at once.
    let alone = json!([{"labels": {"alertname": "DiskFilling", "severity": "warning"}}]);
    assert_eq!(post(&m, Some(ACME_TOKEN), &alone).0, 200);
    let hits = tenants.wait_for(1, Duration::from_secs(30));
    assert_eq!(actions(&hits), ["trigger"], "{:#?}", bodies(&hits));
    assert!(
        hits[0].body["dedup_key"]
            .as_str()
            .unwrap()
            .starts_with("mcpulse/acme/external/")
    );
}

/// `/usr/bin/prometheus`, or `None` (skip) when it is absent and `CI` is not set.
fn prometheus_binary() -> Option<PathBuf> {
    let path = PathBuf::from(PROMETHEUS);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{PROMETHEUS} is missing and CI is set: install it (apt package `prometheus`, \
         see scripts/test-deps.sh)"
    );
    eprintln!(
        "SKIPPED prometheus_alerts_reach_the_receiver_through_mcpulse: {PROMETHEUS} not \
         found (apt-get install prometheus, or bash scripts/test-deps.sh); set CI=true to \
         make this a failure"
    );
    None
}

/// A Prometheus process, killed on drop.
struct Prometheus {
    child: Option<Child>,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus evaluating `vector(1) > 0` every second and sending its alert to
    /// `api` with the acme bearer token, re-sending every second.
    fn start(binary: &Path, dir: &Path, api: std::net::SocketAddr) -> Prometheus {
        std::fs::write(
            dir.join("rules.yml"),
            "groups:\n  - name: e2e\n    interval: 1s\n    rules:\n\
             \x20     - alert: AlwaysFiring\n        expr: vector(1) > 0\n\
             \x20       labels: { severity: critical, team: mcp }\n\
             \x20       annotations: { summary: \"always firing\" }\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  evaluation_interval: 1s\n  scrape_interval: 1m\n\
                 rule_files: [rules.yml]\n\
                 alerting:\n  alertmanagers:\n    - api_version: v2\n      scheme: http\n\
                 \x20     timeout: 5s\n\
                 \x20     authorization: {{ type: Bearer, credentials: \"{ACME_TOKEN}\" }}\n\
                 \x20     static_configs: [{{ targets: [\"{api}\"] }}]\n"
            ),
        )
        .unwrap();
        let log = dir.join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--rules.alert.resend-delay=1s")
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn prometheus_alerts_reach_the_receiver_through_mcpulse() {
    let Some(binary) = prometheus_binary() else {
        return;
    };
    let team = StandIn::pagerduty();
    let catchall = StandIn::pagerduty();
    let dir = tempfile::tempdir().unwrap();
    let m = start(&routes(dir.path(), &team, &catchall));
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let mut prometheus = Prometheus::start(&binary, &prom_dir, m.api);

    let hits = team.wait_for(1, Duration::from_secs(60));
    assert_eq!(
        actions(&hits),
        ["trigger"],
        "Prometheus' alert did not reach the receiver: {:#?}\nprometheus log:\n{}\nmcpulse log:\n{}",
        bodies(&hits),
        prometheus.log(),
        m.log()
    );
    let trigger = &hits[0].body;
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert!(
        trigger["payload"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("AlwaysFiring: always firing"),
        "{trigger}"
    );
    let dedup_key = trigger["dedup_key"].as_str().unwrap().to_owned();
    assert!(
        dedup_key.starts_with("mcpulse/acme/external/"),
        "{dedup_key}"
    );

    // Prometheus re-sends every second (resend-delay 1s): still one trigger.
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        assert_eq!(team.hits().len(), 1, "{:#?}", bodies(&team.hits()));
        std::thread::sleep(Duration::from_millis(200));
    }
    let accepted = m
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix("mcpulse_ingest_alerts_accepted_total "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(accepted >= 3, "Prometheus re-sent it ({accepted} received)");

    // Prometheus goes away: the alert is not re-sent past its endsAt (4 s after the
    // last send) and resolves, once.
    prometheus.kill();
    let hits = team.wait_for(2, Duration::from_secs(60));
    assert_eq!(
        actions(&hits),
        ["trigger", "resolve"],
        "{:#?}\nmcpulse log:\n{}",
        bodies(&hits),
        m.log()
    );
    assert_eq!(hits[1].body["dedup_key"], dedup_key.as_str());
    assert_stays(&team, 2, Duration::from_secs(2), "one resolve");
    assert!(
        catchall.hits().is_empty(),
        "{:#?}",
        bodies(&catchall.hits())
    );
}

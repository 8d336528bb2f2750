//! Live golden signals through the real Prometheus: `mcpulse run` reads spans (OTLP/HTTP)
//! and probe results (the probe API); Debian's `/usr/bin/prometheus` scrapes its
//! `/metrics` every second — as an operator, as tenant acme, and without a token — and
//! PromQL through Prometheus' HTTP API (`/api/v1/query`) returns calls and errors per
//! tool, latency quantiles from the histogram buckets, availability 0 for a failing
//! server and 1 for a healthy one, the open incident of the failing server by severity,
//! each tenant's series to its own token only, and the cardinality cap folding a flood of
//! tool names into one `__other__` series.
//!
//! Skips (with a message) when `/usr/bin/prometheus` is absent and `CI` is not set; with
//! `CI` set it fails instead.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::archive::post_probes;
use common::{ACME_TOKEN, GLOBEX_TOKEN, Mcpulse, OPERATOR_TOKEN, attr, http, now_ns, otlp_request};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Value, json};

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Fast incident closes, no storm hold; a cap of 50 tool series.
const CONFIG: &str = "incidents:\n  flush_interval: 200ms\n  storm: { hold: 0s }\n\
                      metrics:\n  max_series: 50\n";

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
        "SKIPPED prometheus_scrapes_live_golden_signals: {PROMETHEUS} not found \
         (apt-get install prometheus, or bash scripts/test-deps.sh); set CI=true to make \
         this a failure"
    );
    None
}

/// A Prometheus process scraping mcpulse, killed on drop.
struct Prometheus {
    child: Option<Child>,
    log: PathBuf,
    addr: SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus scraping `api`'s `/metrics` every second in three jobs:
    /// `operator` (operator token), `acme` (acme's token) and `anonymous` (no token).
    fn start(binary: &Path, dir: &Path, api: SocketAddr) -> Prometheus {
        let job = |name: &str, token: Option<&str>| {
            let auth = token
                .map(|t| format!("    authorization: {{ type: Bearer, credentials: \"{t}\" }}\n"))
                .unwrap_or_default();
            format!(
                "  - job_name: {name}\n    metrics_path: /metrics\n{auth}\
                 \x20   static_configs: [{{ targets: [\"{api}\"] }}]\n"
            )
        };
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n{}{}{}",
                job("operator", Some(OPERATOR_TOKEN)),
                job("acme", Some(ACME_TOKEN)),
                job("anonymous", None)
            ),
        )
        .unwrap();
        let log = dir.join("prometheus.log");
        let addr = free_port();
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            child: Some(child),
            log,
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = http()
                .get(format!("http://{addr}/-/ready"))
                .send()
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return prometheus;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after 60s:\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The result vector of an instant PromQL query.
    fn query(&self, promql: &str) -> Vec<Value> {
        let response: Value = http()
            .get(
                reqwest::Url::parse_with_params(
                    &format!("http://{}/api/v1/query", self.addr),
                    [("query", promql)],
                )
                .unwrap(),
            )
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(response["status"], "success", "{promql}: {response}");
        response["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls `promql` until `done` accepts its result vector (60 s at most).
    fn wait(&self, m: &Mcpulse, promql: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let result = self.query(promql);
            if done(&result) {
                return result;
            }
            if Instant::now() > deadline {
                panic!(
                    "{promql}: still {result:#?} after 60s\n/metrics:\n{}\nprometheus log:\n{}\nmcpulse log:\n{}",
                    m.metrics(),
                    self.log(),
                    m.log()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The single value of `promql`, once it equals `expected`.
    fn wait_value(&self, m: &Mcpulse, promql: &str, expected: f64) {
        self.wait(m, promql, |r| r.len() == 1 && value(&r[0]) == expected);
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The sample value of one element of a result vector.
fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

/// `n` tool calls of `tool` on `server`, each `latency` long and ending now; the first
/// `errors` of them failed (`error.type`).
fn calls(server: &str, tool: &str, n: u64, errors: u64, latency: Duration) -> Vec<u8> {
    let end = now_ns();
    let spans = (0..n)
        .map(|i| {
            let mut attributes = vec![
                attr("mcp.method.name", "tools/call"),
                attr("gen_ai.tool.name", tool),
            ];
            if i < errors {
                attributes.push(attr("error.type", "tool_error"));
            }
            Span {
                trace_id: [[9u8; 8], i.to_be_bytes()].concat(),
                span_id: (i + 1).to_be_bytes().to_vec(),
                name: format!("tools/call {tool}"),
                kind: 2,
                start_time_unix_nano: end - latency.as_nanos() as u64,
                end_time_unix_nano: end,
                attributes,
                ..Default::default()
            }
        })
        .collect();
    otlp_request(Some(server), spans)
}

fn post_spans(m: &Mcpulse, token: &str, body: Vec<u8>) {
    let response = http()
        .post(m.otlp_url())
        .header("content-type", "application/x-protobuf")
        .bearer_auth(token)
        .body(body)
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.text());
}

/// Start of the minute `minutes_ago` minutes before now.
fn minute(minutes_ago: i64) -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now().timestamp();
    chrono::DateTime::from_timestamp((now / 60 - minutes_ago) * 60, 0).unwrap()
}

fn probe(server: &str, region: &str, minutes_ago: i64, failing: bool) -> Value {
    let t = minute(minutes_ago) + chrono::Duration::seconds(10);
    let mut p = json!({
        "server": server, "region": region, "started_at": t.to_rfc3339(),
        "url": format!("https://{server}.acme-mcp.com/mcp"), "ok": !failing,
        "total_ms": 120.0,
    });
    if failing {
        p["failure_reason"] = json!("tcp_refused");
    }
    p
}

#[test]
fn prometheus_scrapes_live_golden_signals() {
    let Some(binary) = prometheus_binary() else {
        return;
    };
    let m = Mcpulse::start(CONFIG);
    let dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(&binary, dir.path(), m.api);

    // acme: `forecast` 20 calls of 40 ms (2 failed), `alerts` 10 calls of 2 s; globex:
    // `route` 5 calls of 300 ms.
    post_spans(
        &m,
        ACME_TOKEN,
        calls("weather", "forecast", 20, 2, Duration::from_millis(40)),
    );
    post_spans(
        &m,
        ACME_TOKEN,
        calls("weather", "alerts", 10, 0, Duration::from_secs(2)),
    );
    post_spans(
        &m,
        GLOBEX_TOKEN,
        calls("maps", "route", 5, 0, Duration::from_millis(300)),
    );
    // Probes: acme's `weather` refused from both regions for the last 8 minutes (an
    // incident), acme's `search` healthy.
    let mut probes = Vec::new();
    for ago in (1..=8).rev() {
        for region in ["eu-west", "us-east"] {
            probes.push(probe("weather", region, ago, true));
            probes.push(probe("search", region, ago, false));
        }
    }
    post_probes(&m, ACME_TOKEN, probes);

    // Every scrape target parses (a text-format error would make `up` 0).
    for job in ["operator", "acme", "anonymous"] {
        prometheus.wait_value(&m, &format!("up{{job=\"{job}\"}}"), 1.0);
    }

    // Calls and errors per tool.
    let forecast =
        r#"job="operator",tenant="acme",server="weather",method="tools/call",tool="forecast""#;
    prometheus.wait_value(&m, &format!("mcpulse_tool_calls_total{{{forecast}}}"), 20.0);
    prometheus.wait_value(&m, &format!("mcpulse_tool_errors_total{{{forecast}}}"), 2.0);
    let per_tool = prometheus.wait(
        &m,
        r#"sum by (tenant, server, tool) (mcpulse_tool_calls_total{job="operator"})"#,
        |r| r.len() == 3,
    );
    let mut got: Vec<(String, f64)> = per_tool
        .iter()
        .map(|s| {
            let l = &s["metric"];
            (
                format!(
                    "{}/{}/{}",
                    l["tenant"].as_str().unwrap(),
                    l["server"].as_str().unwrap(),
                    l["tool"].as_str().unwrap()
                ),
                value(s),
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("acme/weather/alerts".to_string(), 10.0),
            ("acme/weather/forecast".to_string(), 20.0),
            ("globex/maps/route".to_string(), 5.0),
        ]
    );

    // Latency quantiles over the cumulative buckets: 40 ms calls sit in (0.025, 0.05],
    // 2 s calls in (1, 2.5].
    let quantile = |q: f64, tool: &str| {
        let promql = format!(
            "histogram_quantile({q}, sum by (le) (mcpulse_tool_call_duration_seconds_bucket{{job=\"operator\",server=\"weather\",tool=\"{tool}\"}}))"
        );
        value(&prometheus.wait(&m, &promql, |r| r.len() == 1)[0])
    };
    let p50 = quantile(0.5, "forecast");
    assert!(p50 > 0.025 && p50 <= 0.05, "p50 of forecast: {p50}");
    let p99 = quantile(0.99, "alerts");
    assert!(p99 > 1.0 && p99 <= 2.5, "p99 of alerts: {p99}");
    let sum = prometheus.query(&format!(
        "mcpulse_tool_call_duration_seconds_sum{{{forecast}}}"
    ));
    assert!((value(&sum[0]) - 0.8).abs() < 1e-6, "{sum:#?}");
    prometheus.wait_value(
        &m,
        &format!("mcpulse_tool_call_duration_seconds_count{{{forecast}}}"),
        20.0,
    );

    // Availability: the latest probe of `weather` failed in both regions, `search`'s
    // passed.
    let up = prometheus.wait(
        &m,
        r#"mcpulse_server_up{job="operator",tenant="acme",server="weather"}"#,
        |r| r.len() == 2,
    );
    assert!(up.iter().all(|s| value(s) == 0.0), "{up:#?}");
    prometheus.wait_value(
        &m,
        r#"min by (server) (mcpulse_server_up{job="operator",server="search"})"#,
        1.0,
    );
    prometheus.wait_value(
        &m,
        r#"sum(mcpulse_server_probe_failures_total{job="operator",server="weather"}) / sum(mcpulse_server_probes_total{job="operator",server="weather"})"#,
        1.0,
    );

    // The open incident of `weather`, by severity.
    let open = prometheus.wait(
        &m,
        r#"sum by (tenant, server, severity) (mcpulse_server_incidents_open{job="operator"})"#,
        |r| !r.is_empty(),
    );
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(open[0]["metric"]["server"], "weather");
    assert_eq!(open[0]["metric"]["severity"], "P1");
    assert_eq!(value(&open[0]), 1.0);

    // Tenancy: acme's token sees acme's series only; no token sees none.
    let acme = prometheus.wait(
        &m,
        r#"count by (tenant) (mcpulse_tool_calls_total{job="acme"})"#,
        |r| !r.is_empty(),
    );
    assert_eq!(acme.len(), 1, "{acme:#?}");
    assert_eq!(acme[0]["metric"]["tenant"], "acme");
    assert_eq!(value(&acme[0]), 2.0);
    assert!(
        prometheus
            .query(r#"{job="anonymous",tenant!=""}"#)
            .is_empty(),
        "an anonymous scrape saw tenant series"
    );
    prometheus.wait_value(
        &m,
        r#"mcpulse_live_series{job="anonymous",kind="tool"}"#,
        3.0,
    );

    // The cap (metrics.max_series: 50): 100 more tool names from globex's spans keep 47
    // of them and fold the other 53 calls into one __other__ series.
    let flood: Vec<Span> = (0..100u64)
        .map(|i| Span {
            trace_id: [[5u8; 8], i.to_be_bytes()].concat(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            name: "tools/call".into(),
            kind: 2,
            start_time_unix_nano: now_ns() - 1_000_000,
            end_time_unix_nano: now_ns(),
            attributes: vec![
                attr("mcp.method.name", "tools/call"),
                attr("gen_ai.tool.name", &format!("generated-tool-{i:03}")),
            ],
            ..Default::default()
        })
        .collect();
    post_spans(&m, GLOBEX_TOKEN, otlp_request(Some("noisy"), flood));
    prometheus.wait_value(
        &m,
        r#"mcpulse_live_series{job="operator",kind="tool"}"#,
        51.0,
    );
    prometheus.wait_value(
        &m,
        r#"count(mcpulse_tool_calls_total{job="operator"})"#,
        51.0,
    );
    prometheus.wait_value(
        &m,
        r#"mcpulse_tool_calls_total{job="operator",tenant="__other__",server="__other__",tool="__other__"}"#,
        53.0,
    );
    prometheus.wait_value(
        &m,
        r#"mcpulse_live_series_folded_total{job="operator",kind="tool"}"#,
        53.0,
    );
    // The overflow series mixes tenants: not in acme's view.
    assert!(
        prometheus
            .query(r#"mcpulse_tool_calls_total{job="acme",tenant="__other__"}"#)
            .is_empty()
    );

    // Every Prometheus target of the shipped dashboards is valid PromQL, and those over
    // the live families find series.
    let mut checked = 0;
    for entry in std::fs::read_dir(common::repo_path("deploy/grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                let expr = expr.replace("$server", "weather");
                let live = ["mcpulse_tool_", "mcpulse_server_", "mcpulse_live_"]
                    .iter()
                    .any(|family| expr.contains(family));
                if live {
                    prometheus.wait(&m, &expr, |r| !r.is_empty());
                } else {
                    prometheus.query(&expr);
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} Prometheus targets found");

    // A wrong token is refused rather than silently scoped.
    let refused = http()
        .get(m.url("/metrics"))
        .bearer_auth("not-a-valid-token")
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
}

//! `mcpulse notify` as its own process on a real Kafka-protocol broker (tansu), next to
//! `mcpulse ingest` and `mcpulse process`: probe results posted to ingest become an
//! incident in the process role, and the notify role delivers it to a PagerDuty stand-in
//! once — also after the notify process is `kill -9`ed and restarted. `mcpulse notify`
//! refuses the embedded log and a configuration without routes.

mod common;
mod stand_ins;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kafka::Tansu;
use common::{ACME_TOKEN, config_yaml, http};
use serde_json::{Value, json};
use stand_ins::{StandIn, actions};

const PD_KEY: &str = "kafka-pd-r0uting-key-0123456789ab";

/// One `mcpulse ROLE` process (killed on drop).
struct Proc {
    role: &'static str,
    config: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    ready: Value,
}

impl Proc {
    fn start(root: &Path, role: &'static str, extra: &str) -> Proc {
        let dir = root.join(role);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("mcpulse.yaml");
        std::fs::write(&config, config_yaml(&dir.join("data"), extra)).unwrap();
        let mut proc = Proc {
            role,
            config,
            data_dir: dir.join("data"),
            log: root.join(format!("{role}.log")),
            child: None,
            ready: Value::Null,
        };
        proc.spawn();
        proc
    }

    fn spawn(&mut self) {
        let ready = self.data_dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_mcpulse"))
                .arg(self.role)
                .arg("--config")
                .arg(&self.config)
                .env("ACME_TOKEN", ACME_TOKEN)
                .env("KAFKA_E2E_PD_KEY", PD_KEY)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start mcpulse"),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
            {
                self.ready = v;
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "mcpulse {} exited with {status}:\n{}",
                    self.role,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mcpulse {} not ready:\n{}",
                self.role,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn api(&self) -> String {
        format!("http://{}", self.ready["api"].as_str().unwrap())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn probes() -> Vec<Value> {
    let now = chrono::Utc::now().timestamp();
    let mut probes = Vec::new();
    for ago in (1..=12).rev() {
        let t = chrono::DateTime::from_timestamp((now / 60 - ago) * 60 + 10, 0).unwrap();
        for region in ["eu-west", "us-east"] {
            let mut p = json!({
                "server": "weather", "region": region, "started_at": t.to_rfc3339(),
                "url": "https://weather.acme-mcp.com/mcp", "ok": ago < 7,
            });
            if ago >= 7 {
                p["failure_reason"] = json!("tcp_refused");
            }
            probes.push(p);
        }
    }
    probes
}

#[test]
fn the_notify_role_delivers_from_kafka_once_across_a_kill_9() {
    let tansu = Tansu::start();
    let pd = StandIn::pagerduty();
    let root = tempfile::tempdir().unwrap();
    let routes = root.path().join("routes.yaml");
    std::fs::write(
        &routes,
        format!(
            "receivers:\n  - name: oncall\n    pagerduty: {{ routing_key: \"${{KAFKA_E2E_PD_KEY}}\", url: \"{}\" }}\nroute:\n  id: root\n  receiver: oncall\n",
            pd.url
        ),
    )
    .unwrap();
    std::fs::create_dir_all(root.path().join("archive")).unwrap();
    let extra = format!(
        "bus:\n  kind: kafka\n  brokers: [\"{}\"]\n  partitions: 2\n  producer_options:\n    batch.num.messages: 1\n\
         archive:\n  url: file://{}\n  flush_interval: 300ms\n\
         incidents:\n  flush_interval: 200ms\n  storm: {{ hold: 0s }}\n\
         notify:\n  routes: {}\n  flush_interval: 200ms\n  table_interval: 200ms\n",
        tansu.bootstrap(),
        root.path().join("archive").display(),
        routes.display()
    );
    let ingest = Proc::start(root.path(), "ingest", &extra);
    let _process = Proc::start(root.path(), "process", &extra);
    let mut notify = Proc::start(root.path(), "notify", &extra);
    assert_eq!(notify.ready["role"], "notify");

    let response = http()
        .post(format!("{}/v1/probes", ingest.api()))
        .bearer_auth(ACME_TOKEN)
        .json(&probes())
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.text());
    let hits = pd.wait_for(2, Duration::from_secs(90));
    assert_eq!(actions(&hits), ["trigger", "resolve"], "{}", notify.log());

    // The notify process dies and comes back: it replays nothing it already sent.
    notify.kill9();
    notify.spawn();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        actions(&pd.hits()),
        ["trigger", "resolve"],
        "{}",
        notify.log()
    );
    let metrics = http()
        .get(format!("{}/metrics", notify.api()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("mcpulse_role_info{role=\"notify\""),
        "{metrics}"
    );
    assert!(!notify.log().contains(PD_KEY));
}

#[test]
fn the_notify_role_refuses_the_embedded_log_and_a_missing_routes_file() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &str| {
        let config = dir.path().join("mcpulse.yaml");
        std::fs::write(&config, config_yaml(&dir.path().join("data"), extra)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_mcpulse"))
            .args(["notify", "--config"])
            .arg(&config)
            .env("ACME_TOKEN", ACME_TOKEN)
            .output()
            .unwrap()
    };
    let out = run("notify:\n  routes: routes.yaml\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the embedded log is single-process"), "{err}");
    let out = run("bus:\n  kind: kafka\n  brokers: [\"127.0.0.1:1\"]\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("set notify.routes"), "{err}");
}

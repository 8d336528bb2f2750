//! Harness of the end-to-end tests: starts the real `mcpulse` binary on free loopback
//! ports with a temporary data directory, and talks to it like a user would.

#![allow(dead_code)]

pub mod archive;
pub mod kafka;
pub mod mcp_servers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const ACME_TOKEN: &str = "acme-token-0123456789";
pub const GLOBEX_TOKEN: &str = "globex-token-0123456789";
pub const OPERATOR_TOKEN: &str = "operator-token-0123456789";

/// A running `mcpulse run`.
pub struct Mcpulse {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub api: SocketAddr,
}

/// The configuration every test starts from; `extra` is appended (top-level YAML keys).
pub fn config_yaml(data_dir: &Path, extra: &str) -> String {
    format!(
        r#"data_dir: {data}
listen:
  otlp_grpc: 127.0.0.1:0
  otlp_http: 127.0.0.1:0
  api: 127.0.0.1:0
auth:
  tenants:
    - id: acme
      tokens: ["${{ACME_TOKEN}}"]
    - id: globex
      tokens: ["{GLOBEX_TOKEN}"]
  operators:
    - name: ops
      tokens: ["{OPERATOR_TOKEN}"]
{extra}"#,
        data = data_dir.display()
    )
}

impl Mcpulse {
    /// Starts mcpulse with the default test configuration plus `extra` YAML. Archive
    /// flushes are fast so data is queryable within a second.
    pub fn start(extra: &str) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// Like [`Mcpulse::start`], with extra environment variables for the process.
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Self {
        let mut m = Self::prepare(extra);
        m.spawn_with_env(env);
        m
    }

    /// The data directory and configuration of [`Mcpulse::start`], without starting the
    /// process (to put files in the archive or run CLI commands first; then `spawn`).
    pub fn prepare(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let extra = if extra.contains("archive:") {
            extra.to_string()
        } else {
            format!("archive:\n  flush_interval: 300ms\n{extra}")
        };
        let config = dir.path().join("mcpulse.yaml");
        std::fs::write(&config, config_yaml(&dir.path().join("data"), &extra)).unwrap();
        Mcpulse {
            dir,
            config,
            child: None,
            otlp_grpc: "0.0.0.0:0".parse().unwrap(),
            otlp_http: "0.0.0.0:0".parse().unwrap(),
            api: "0.0.0.0:0".parse().unwrap(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// (Re)starts the process on the same data directory and waits until it is ready.
    pub fn spawn(&mut self) {
        self.spawn_with_env(&[]);
    }

    /// Like [`Mcpulse::spawn`], with extra environment variables (e.g. a failpoint).
    pub fn spawn_with_env(&mut self, env: &[(&str, &str)]) {
        let ready = self.data_dir().join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mcpulse.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mcpulse"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("ACME_TOKEN", ACME_TOKEN)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mcpulse");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            {
                self.otlp_grpc = v["otlp_grpc"].as_str().unwrap().parse().unwrap();
                self.otlp_http = v["otlp_http"].as_str().unwrap().parse().unwrap();
                self.api = v["api"].as_str().unwrap().parse().unwrap();
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "mcpulse exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mcpulse not ready after 60s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mcpulse.log")).unwrap_or_default()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Waits for the process to exit by itself (e.g. at a failpoint).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("mcpulse did not exit within {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        unsafe_sigterm(child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "mcpulse did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `mcpulse query --format json SQL` against this instance's archive.
    pub fn query_cli(&self, sql: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mcpulse"))
            .args(["query", "--format", "json", "--config"])
            .arg(&self.config)
            .arg(sql)
            .env("ACME_TOKEN", ACME_TOKEN)
            .output()
            .expect("run mcpulse query")
    }

    /// Rows of `sql` (JSON objects), via the CLI.
    pub fn query(&self, sql: &str) -> Vec<serde_json::Value> {
        let out = self.query_cli(sql);
        assert!(
            out.status.success(),
            "query failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Polls `sql` (which returns one row with column `n`) until it reaches `expected`.
    pub fn wait_count(&self, sql: &str, expected: i64) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n = self.query(sql)[0]["n"].as_i64().unwrap();
            if n >= expected || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `GET /metrics` of the API port.
    pub fn metrics(&self) -> String {
        http()
            .get(self.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    pub fn otlp_url(&self) -> String {
        format!("http://{}/v1/traces", self.otlp_http)
    }
}

impl Drop for Mcpulse {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn unsafe_sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// The Python of the test virtualenv (made by scripts/test-deps.sh).
pub fn python() -> PathBuf {
    venv_python().unwrap_or_else(|| {
        panic!(
            "no test virtualenv at {}: run `bash scripts/test-deps.sh` (the README test command does)",
            venv().display()
        )
    })
}

/// The test virtualenv (`$MCPULSE_VENV`, default `~/.cache/mcpulse/venv`).
fn venv() -> PathBuf {
    std::env::var_os("MCPULSE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/mcpulse/venv")
        })
}

/// `$MCPULSE_PYTHON`, else the test virtualenv's interpreter if there is one.
pub fn venv_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MCPULSE_PYTHON") {
        return Some(PathBuf::from(p));
    }
    Some(venv().join("bin/python")).filter(|p| p.exists())
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A blocking HTTP client with a short timeout.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A string attribute.
pub fn attr(key: &str, value: &str) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// An encoded `ExportTraceServiceRequest` of `spans` from `service` (no service.name when `None`).
pub fn otlp_request(
    service: Option<&str>,
    spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use prost::Message;
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: service.map(|s| Resource {
                attributes: vec![attr("service.name", s)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

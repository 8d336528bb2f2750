//! The roles as separate processes on a real Kafka-protocol broker (tansu, one per test):
//! a processor killed with `kill -9` mid-stream loses and doubles nothing, records an
//! outside producer (an OpenTelemetry Collector's Kafka exporter) writes are archived
//! under the right tenant or dead-lettered with their origin, unreachable or lost brokers
//! give prompt, clear (and, at ingest, retryable) errors, and the archivers' lag shows on
//! `/metrics` and in `mcpulse bus status`; probers in two regions (`mcpulse probe
//! --region`) give multi-region results for the same targets.
//!
//! Every configuration sets `bus.producer_options.batch.num.messages: 1`: tansu 0.6 mishandles
//! fetches inside multi-record batches (see `tests/common/kafka.rs`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use common::kafka::Tansu;
use common::{
    ACME_TOKEN, OPERATOR_TOKEN, attr, config_yaml, http, now_ns, otlp_request, python, repo_path,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::Value;

const GROUP_SPANS: &str = "mcpulse-archive-spans";
const SPANS_TOPIC: &str = "mcpulse.spans.v1";
const PROBES_TOPIC: &str = "mcpulse.probes.v1";
const DLQ_TOPIC: &str = "mcpulse.dlq.v1";

// ---------------------------------------------------------------------------------------
// Harness: one broker, one shared archive, one configuration and data_dir per process.
// ---------------------------------------------------------------------------------------

/// What differs between the tests' deployments.
struct Setup {
    partitions: u32,
    /// Extra lines of `bus:` (two-space indented).
    bus: &'static str,
    /// Extra lines of `archive:` (two-space indented).
    archive: &'static str,
    /// Extra top-level YAML.
    extra: &'static str,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            partitions: 4,
            bus: "",
            archive: "",
            extra: "",
        }
    }
}

/// A deployment on one tansu broker: every process gets its own data_dir, all share the
/// archive directory.
struct Cluster {
    root: tempfile::TempDir,
    tansu: Tansu,
    brokers: String,
    setup: Setup,
}

impl Cluster {
    fn start(setup: Setup) -> Cluster {
        let tansu = Tansu::start();
        let brokers = tansu.bootstrap();
        Cluster::on_brokers(tansu, brokers, setup)
    }

    /// Like [`Cluster::start`], but the configurations name `brokers` (e.g. a closed port).
    fn on_brokers(tansu: Tansu, brokers: String, setup: Setup) -> Cluster {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("archive")).unwrap();
        Cluster {
            root,
            tansu,
            brokers,
            setup,
        }
    }

    fn archive_dir(&self) -> PathBuf {
        self.root.path().join("archive")
    }

    /// Writes the configuration of process `name` (its data_dir is `{root}/{name}/data`).
    fn config(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let extra = format!(
            "bus:\n  kind: kafka\n  brokers: [\"{brokers}\"]\n  partitions: {partitions}\n  \
             producer_options:\n    batch.num.messages: 1\n{bus}\
             archive:\n  url: file://{archive}\n  flush_interval: 300ms\n{archive_extra}\
             query:\n  max_rows: 1000000\n{extra}",
            brokers = self.brokers,
            partitions = self.setup.partitions,
            bus = self.setup.bus,
            archive = self.archive_dir().display(),
            archive_extra = self.setup.archive,
            extra = self.setup.extra,
        );
        let config = dir.join("mcpulse.yaml");
        std::fs::write(&config, config_yaml(&dir.join("data"), &extra)).unwrap();
        config
    }

    /// Starts `mcpulse ROLE` as process `name` and waits until it is ready.
    fn spawn(&self, role: &'static str, name: &str) -> Proc {
        self.spawn_with_args(role, name, &[])
    }

    /// Starts `mcpulse ROLE ARGS…` as process `name` and waits until it is ready.
    fn spawn_with_args(&self, role: &'static str, name: &str, args: &[&str]) -> Proc {
        let mut proc = Proc {
            role,
            args: args.iter().map(|a| a.to_string()).collect(),
            name: name.to_string(),
            config: self.config(name),
            data_dir: self.root.path().join(name).join("data"),
            log: self.root.path().join(format!("{name}.log")),
            child: None,
            ready: Value::Null,
        };
        proc.spawn();
        proc
    }

    /// Runs `mcpulse ARGS --config C` (a CLI command, with its own configuration),
    /// failing after `timeout`.
    fn cli(&self, args: &[&str], timeout: Duration) -> Output {
        run_mcpulse(args, &self.config("cli"), timeout)
    }

    /// Rows of `sql` over the shared archive (`mcpulse query --format json`).
    fn query(&self, sql: &str) -> Vec<Value> {
        let out = self.cli(&["query", "--format", "json", sql], Duration::from_secs(60));
        assert!(
            out.status.success(),
            "query {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// `SELECT count(*) AS n ...`.
    fn count(&self, sql: &str) -> u64 {
        self.query(sql)[0]["n"].as_u64().expect("a count")
    }

    /// Polls `sql` (one row, column `n`) until it reaches `expected` or `timeout` passes;
    /// returns the last value.
    fn wait_count(&self, sql: &str, expected: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.count(sql);
            if n >= expected || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `mcpulse bus status --format json`: group name → its JSON.
    fn bus_status(&self) -> BTreeMap<String, Value> {
        let out = self.cli(
            &["bus", "status", "--format", "json"],
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "bus status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let groups: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "bus status printed bad JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        groups
            .as_array()
            .expect("an array of groups")
            .iter()
            .map(|g| (g["group"].as_str().unwrap().to_string(), g.clone()))
            .collect()
    }

    /// Every message of `topic`, read from the beginning by a plain Kafka client
    /// (`tests/python/read_topic.py`), once at least `min` are there (or after 20 s).
    fn read_topic(&self, topic: &str, min: usize) -> Vec<Value> {
        let out = Command::new(python())
            .arg(repo_path("tests/python/read_topic.py"))
            .args(["--bootstrap", &self.brokers, "--topic", topic])
            .args(["--min", &min.to_string(), "--timeout", "20"])
            .stdin(Stdio::null())
            .output()
            .expect("run read_topic.py");
        assert!(
            out.status.success(),
            "read_topic.py failed: {}\n--- tansu log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.tansu.log_tail()
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("read_topic.py prints JSON");
        v["messages"].as_array().unwrap().clone()
    }

    /// Runs `tests/python/produce_otlp.py ARGS` against the broker; returns its summary.
    fn produce(&self, args: &[&str]) -> Value {
        let out = Command::new(python())
            .arg(repo_path("tests/python/produce_otlp.py"))
            .args(["--bootstrap", &self.brokers])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run produce_otlp.py");
        assert!(
            out.status.success(),
            "produce_otlp.py {args:?} failed: {}\n--- tansu log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.tansu.log_tail()
        );
        serde_json::from_slice(&out.stdout).expect("produce_otlp.py prints JSON")
    }
}

/// Runs `mcpulse ARGS --config CONFIG`, killing it (and failing) after `timeout`.
fn run_mcpulse(args: &[&str], config: &Path, timeout: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcpulse"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("ACME_TOKEN", ACME_TOKEN)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mcpulse");
    // Read the pipes while waiting, so a chatty child never blocks on a full pipe.
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let (stdout, stderr) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mcpulse {args:?} still running after {timeout:?}:\n{}",
                String::from_utf8_lossy(&stderr.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// One `mcpulse ROLE` process (killed on drop).
struct Proc {
    role: &'static str,
    /// Arguments after the role.
    args: Vec<String>,
    name: String,
    config: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    ready: Value,
}

impl Proc {
    /// (Re)starts the process on its data_dir and waits until it wrote its ready file.
    fn spawn(&mut self) {
        self.spawn_with_env(&[]);
    }

    /// Like [`Proc::spawn`], with extra environment variables (e.g. a failpoint).
    fn spawn_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let ready = self.data_dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mcpulse"))
            .arg(self.role)
            .args(&self.args)
            .arg("--config")
            .arg(&self.config)
            .env("ACME_TOKEN", ACME_TOKEN)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mcpulse");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
            {
                assert_eq!(v["role"], self.role, "{v}");
                self.ready = v;
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "mcpulse {} ({}) exited with {status} before it was ready:\n{}",
                    self.role,
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mcpulse {} ({}) not ready after 60s:\n{}",
                self.role,
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A listener from the ready file (`otlp_grpc`, `otlp_http`, `api`).
    fn addr(&self, listener: &str) -> SocketAddr {
        self.ready[listener]
            .as_str()
            .unwrap_or_else(|| panic!("{} has no {listener}: {}", self.name, self.ready))
            .parse()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /metrics` of the API port.
    fn metrics(&self) -> String {
        http()
            .get(format!("http://{}/metrics", self.addr("api")))
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("/metrics of {}: {e}", self.name))
    }

    /// `kill -9`.
    fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Waits (at most `timeout`) for the process to exit by itself.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mcpulse {} ({}) did not exit within {timeout:?}:\n{}",
                    self.role,
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits (at most `timeout`) for the exit.
    fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mcpulse {} ({}) did not stop within {timeout:?} of SIGTERM:\n{}",
                    self.role,
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

/// The value of the sample `name{labels...}` on a `/metrics` page (labels given as
/// `key="value"` pairs that must all be on the line), summed over matching lines.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let prefix = format!("{name}{{");
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Per partition of `group` on `/metrics`: (end offset, committed offset, lag).
fn metrics_partitions(text: &str, group: &str) -> BTreeMap<u32, (u64, u64, u64)> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        for (i, family) in [
            "mcpulse_bus_end_offset",
            "mcpulse_bus_committed_offset",
            "mcpulse_bus_consumer_lag",
        ]
        .iter()
        .enumerate()
        {
            let Some(rest) = line.strip_prefix(&format!("{family}{{")) else {
                continue;
            };
            if !rest.contains(&format!("group=\"{group}\"")) {
                continue;
            }
            let partition: u32 = rest
                .split("partition=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no partition label: {line}"));
            let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            let entry = out.entry(partition).or_insert((0, 0, 0));
            match i {
                0 => entry.0 = value as u64,
                1 => entry.1 = value as u64,
                _ => entry.2 = value as u64,
            }
        }
    }
    out
}

/// Per partition of a group in `bus status --format json`: (end offset, committed, lag).
fn status_partitions(group: &Value) -> BTreeMap<u32, (u64, Option<u64>, u64)> {
    group["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("no partitions: {group}"))
        .iter()
        .map(|p| {
            assert_eq!(p["topic"], SPANS_TOPIC, "{group}");
            (
                p["partition"].as_u64().unwrap() as u32,
                (
                    p["end_offset"].as_u64().unwrap(),
                    p["committed"].as_u64(),
                    p["lag"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// An OTLP request of `count` spans with ids `first..first + count` (span id `first + i`,
/// as 16 hex digits in the archive) from `service`.
fn spans_request(first: u64, count: u64, service: &str) -> Vec<u8> {
    let now = now_ns();
    let spans = (first..first + count)
        .map(|id| Span {
            trace_id: [[0x5a; 8], id.to_be_bytes()].concat(),
            span_id: id.to_be_bytes().to_vec(),
            name: "tools/call kafka".into(),
            kind: 2,
            start_time_unix_nano: now,
            end_time_unix_nano: now + 5_000,
            attributes: vec![
                attr("mcp.method.name", "tools/call"),
                attr("gen_ai.tool.name", "kafka"),
            ],
            ..Default::default()
        })
        .collect();
    otlp_request(Some(service), spans)
}

fn span_hex(id: u64) -> String {
    format!("{id:016x}")
}

/// POSTs an OTLP/protobuf body to `/v1/traces` as tenant acme.
fn post_otlp(
    client: &reqwest::blocking::Client,
    http_addr: SocketAddr,
    body: Vec<u8>,
) -> reqwest::Result<reqwest::blocking::Response> {
    client
        .post(format!("http://{http_addr}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .bearer_auth(ACME_TOKEN)
        .body(body)
        .send()
}

/// Runs `tests/python/send_spans.py` (the real OpenTelemetry SDK exporter) once; returns
/// the span ids it printed (every one acknowledged by ingest), or the failure.
fn python_exporter(
    protocol: &str,
    endpoint: &str,
    count: u32,
    run_id: &str,
) -> Result<Vec<String>, String> {
    let out = Command::new(python())
        .arg(repo_path("tests/python/send_spans.py"))
        .args(["--protocol", protocol, "--endpoint", endpoint])
        .args(["--token", ACME_TOKEN, "--count", &count.to_string()])
        .args(["--batch-size", "50", "--timeout", "10"])
        .args(["--service", &format!("py-{run_id}"), "--run-id", run_id])
        .stdin(Stdio::null())
        .output()
        .expect("run send_spans.py");
    if !out.status.success() {
        return Err(format!(
            "send_spans.py {protocol} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("send_spans.py prints JSON");
    Ok(v["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["span_id"].as_str().unwrap().to_string())
        .collect())
}

/// Raw-bytes gRPC codec: sends an already encoded request, decodes the response.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        buf.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, tonic::Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        Ok(Some(
            ExportTraceServiceResponse::decode(bytes)
                .map_err(|e| tonic::Status::internal(e.to_string()))?,
        ))
    }
}

/// One OTLP/gRPC export as tenant acme, with a 30 s deadline on the client side.
fn grpc_export(
    addr: SocketAddr,
    body: Vec<u8>,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let mut request = tonic::Request::new(Bytes::from(body));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {ACME_TOKEN}").parse().unwrap(),
        );
        let path = http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        );
        grpc.unary(request, path, RawCodec)
            .await
            .map(tonic::Response::into_inner)
    })
}

/// How many lines of a process's log say it was assigned partitions of `topic` (the
/// Kafka consumer and the runtime both log it).
fn assigned_lines(log: &str, topic: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("partitions assigned") && l.contains(topic))
        .count()
}

/// Waits until `check` holds, polling every 200 ms; fails with `what()` after `timeout`.
fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "after {timeout:?}: {}", what());
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------
// 1. kill -9 of a processor mid-stream
// ---------------------------------------------------------------------------------------

/// Span ids of the Rust senders: this prefix in the top byte, then a counter.
const RUST_IDS: u64 = 0x7e00_0000_0000_0000;
const SPANS_PER_REQUEST: u64 = 20;

#[test]
fn spans_survive_a_killed_processor_exactly_once() {
    let started = Instant::now();
    let cluster = Cluster::start(Setup {
        partitions: 4,
        bus: "  session_timeout: 6s\n  delivery_timeout: 10s\n",
        // Windows close soon after the load stops, so the totals can be checked.
        extra: "signals:\n  allowed_lateness: 2s\n  idle_timeout: 3s\n  flush_interval: 500ms\n",
        ..Setup::default()
    });
    let mut ingest = cluster.spawn("ingest", "ingest");
    // process-1 first, so that it leads both groups (see below), then process-2.
    let mut p1 = cluster.spawn("process", "process-1");
    wait_until(
        Duration::from_secs(30),
        || {
            let log = p1.log();
            assigned_lines(&log, SPANS_TOPIC) > 0 && assigned_lines(&log, PROBES_TOPIC) > 0
        },
        || format!("process-1 got no partitions:\n{}", p1.log()),
    );
    let mut p2 = cluster.spawn("process", "process-2");
    let http_addr = ingest.addr("otlp_http");
    let grpc_addr = ingest.addr("otlp_grpc");

    // The load: two threads of OTLP/HTTP requests (20 spans each, 8 services so every
    // partition gets some), and the real Python SDK exporter over all three protocols,
    // until `stop`. Only spans the receiver acknowledged count.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let refused: Arc<Mutex<Vec<String>>> = Arc::default();
    let next_id = Arc::new(AtomicU64::new(RUST_IDS));
    let acked_requests = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for sender in 0..2u64 {
        let (stop, acked, refused, next_id, acked_requests) = (
            stop.clone(),
            acked.clone(),
            refused.clone(),
            next_id.clone(),
            acked_requests.clone(),
        );
        senders.push(std::thread::spawn(move || {
            let client = http();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let first = next_id.fetch_add(SPANS_PER_REQUEST, Ordering::Relaxed);
                let service = format!("svc-{}", (sender * 4 + n) % 8);
                n += 1;
                match post_otlp(
                    &client,
                    http_addr,
                    spans_request(first, SPANS_PER_REQUEST, &service),
                ) {
                    Ok(r) if r.status() == StatusCode::OK => {
                        acked
                            .lock()
                            .unwrap()
                            .extend((first..first + SPANS_PER_REQUEST).map(span_hex));
                        acked_requests.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        let status = r.status();
                        refused
                            .lock()
                            .unwrap()
                            .push(format!("{status}: {}", r.text().unwrap_or_default()));
                    }
                    Err(e) => refused.lock().unwrap().push(format!("request failed: {e}")),
                }
                std::thread::sleep(Duration::from_millis(15));
            }
        }));
    }
    let python_acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let python_failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let python_runs = Arc::new(AtomicU64::new(0));
    {
        let (stop, python_acked, python_failures, python_runs) = (
            stop.clone(),
            python_acked.clone(),
            python_failures.clone(),
            python_runs.clone(),
        );
        senders.push(std::thread::spawn(move || {
            let protocols = [
                ("http/protobuf", format!("http://{http_addr}")),
                ("grpc", format!("http://{grpc_addr}")),
                ("http/json", format!("http://{http_addr}")),
            ];
            let mut run = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let (protocol, endpoint) = &protocols[run % protocols.len()];
                match python_exporter(protocol, endpoint, 150, &format!("kill9-{run}")) {
                    Ok(ids) => python_acked.lock().unwrap().extend(ids),
                    Err(e) => python_failures.lock().unwrap().push(e),
                }
                python_runs.fetch_add(1, Ordering::Relaxed);
                run += 1;
            }
        }));
    }
    let records = |p: &Proc| {
        metric(
            &p.metrics(),
            "mcpulse_processor_records_total",
            &[("operator", "archive-spans")],
        )
        .unwrap_or(0.0)
    };

    // Both members consume (the group has settled with partitions on each), and some of
    // the Python exporter's spans are through.
    wait_until(
        Duration::from_secs(60),
        || records(&p1) > 0.0 && records(&p2) > 0.0 && python_runs.load(Ordering::Relaxed) >= 1,
        || {
            format!(
                "both processors should consume: p1 {}, p2 {}, python runs {}\n--- p1:\n{}\n--- p2:\n{}",
                records(&p1),
                records(&p2),
                python_runs.load(Ordering::Relaxed),
                p1.log(),
                p2.log()
            )
        },
    );
    // Mid-stream: kill -9 one member while it has partitions and records in flight.
    // It is process-2, the member that is not the group leader: tansu 0.6's group
    // coordinator never re-forms a group whose *leader* died (the survivors' JoinGroup
    // keeps naming the dead leader, their SyncGroup fails with REBALANCE_IN_PROGRESS, then
    // UNKNOWN_MEMBER_ID, forever), which real Kafka does. Which member dies does not
    // matter to mcpulse: either way the survivor takes over uncommitted partitions.
    let before_kill = acked_requests.load(Ordering::Relaxed);
    let p1_log_at_kill = p1.log().len();
    p2.kill9();
    eprintln!(
        "[{:?}] killed process-2 after {before_kill} acknowledged requests",
        started.elapsed()
    );

    // The survivor takes the dead member's partitions once its session times out (6 s);
    // ingest keeps acknowledging meanwhile.
    let p1_before = records(&p1);
    wait_until(
        Duration::from_secs(40),
        || assigned_lines(&p1.log()[p1_log_at_kill..], SPANS_TOPIC) > 0,
        || format!("process-1 never took over the partitions:\n{}", p1.log()),
    );
    eprintln!(
        "[{:?}] process-1 took over (records {p1_before} -> {})",
        started.elapsed(),
        records(&p1)
    );

    // The killed member comes back (same data_dir), gets partitions again, and this time
    // dies at the worst moment: the objects of a cut written, its offsets not committed.
    p2.spawn_with_env(&[("MCPULSE_FAILPOINT", "runtime.before_commit:3")]);
    let p1_log_at_abort = p1.log().len();
    let status = p2.wait_exit(Duration::from_secs(60));
    assert!(
        !status.success()
            && p2
                .log()
                .contains("failpoint runtime.before_commit: aborting"),
        "the failpoint did not fire ({status}):\n{}",
        p2.log()
    );
    eprintln!(
        "[{:?}] process-2 aborted before a commit",
        started.elapsed()
    );
    wait_until(
        Duration::from_secs(40),
        || assigned_lines(&p1.log()[p1_log_at_abort..], SPANS_TOPIC) > 0,
        || {
            format!(
                "process-1 never took over the partitions again:\n{}",
                p1.log()
            )
        },
    );
    eprintln!("[{:?}] process-1 took over again", started.elapsed());

    // And back for good.
    p2.spawn();
    wait_until(
        Duration::from_secs(60),
        || records(&p2) > 0.0,
        || format!("the restarted process-2 consumes nothing:\n{}", p2.log()),
    );
    eprintln!("[{:?}] process-2 back and consuming", started.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    let refused = refused.lock().unwrap().clone();
    assert!(
        refused.is_empty(),
        "ingest refused requests while a processor died: {refused:?}\n--- ingest:\n{}",
        ingest.log()
    );
    let python_failures = python_failures.lock().unwrap().clone();
    assert!(
        python_failures.is_empty(),
        "the Python exporter failed: {python_failures:?}\n--- ingest:\n{}",
        ingest.log()
    );
    let python_acked = python_acked.lock().unwrap().clone();
    let mut acked = acked.lock().unwrap().clone();
    let rust_acked = acked.len();
    assert!(
        python_acked.len() >= 150,
        "python acked {}",
        python_acked.len()
    );
    acked.extend(python_acked.iter().cloned());
    assert_eq!(
        acked.len(),
        rust_acked + python_acked.len(),
        "ids are unique"
    );
    eprintln!(
        "[{:?}] acknowledged {} spans ({} OTLP/HTTP requests, {} spans from {} Python exporter runs)",
        started.elapsed(),
        acked.len(),
        acked_requests.load(Ordering::Relaxed),
        python_acked.len(),
        python_runs.load(Ordering::Relaxed),
    );

    // Nothing lost: every acknowledged span reaches the archive...
    let wanted = acked.len() as u64;
    let n = cluster.wait_count(
        "SELECT count(*) AS n FROM spans",
        wanted,
        Duration::from_secs(60),
    );
    // ...and nothing doubled, whatever the dead member had written but not committed.
    let doubled = cluster.query(
        "SELECT span_id, count(*) AS n FROM spans GROUP BY span_id HAVING count(*) > 1 \
         ORDER BY span_id LIMIT 20",
    );
    assert!(
        doubled.is_empty(),
        "span ids archived more than once: {doubled:?}\n--- p1:\n{}\n--- p2:\n{}",
        p1.log(),
        p2.log()
    );
    let archived: BTreeSet<String> = cluster
        .query("SELECT span_id FROM spans")
        .iter()
        .map(|r| r["span_id"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = acked.difference(&archived).take(10).collect();
    let extra: Vec<&String> = archived.difference(&acked).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && n == wanted,
        "archive holds {n} spans, {wanted} acknowledged; missing e.g. {missing:?}, \
         unexpected e.g. {extra:?}\n--- p1:\n{}\n--- p2:\n{}",
        p1.log(),
        p2.log()
    );
    assert_eq!(
        cluster.count("SELECT count(*) AS n FROM spans WHERE tenant = 'acme'"),
        wanted
    );
    eprintln!("[{:?}] archive complete, no duplicates", started.elapsed());

    // The signals operator, whose partitions also moved when process-2 died (its state
    // restored from the checkpoint, the uncommitted records replayed), counted every MCP
    // call exactly once.
    let calls = cluster.count(
        "SELECT count(*) AS n FROM spans WHERE mcp_method_name IS NOT NULL OR gen_ai_tool_name IS NOT NULL",
    );
    let sql =
        "SELECT CAST(COALESCE(sum(calls), 0) AS BIGINT) AS n FROM signals WHERE source = 'spans'";
    let counted = cluster.wait_count(sql, calls, Duration::from_secs(90));
    // Settle: nothing more may arrive.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        (counted, cluster.count(sql)),
        (calls, calls),
        "signals counted {counted} calls, the archive holds {calls}\n--- p1:\n{}\n--- p2:\n{}",
        p1.log(),
        p2.log()
    );
    eprintln!(
        "[{:?}] signals complete: {calls} calls, none doubled",
        started.elapsed()
    );

    // The serve role answers over the same shared archive.
    let mut serve = cluster.spawn("serve", "serve");
    for token in [OPERATOR_TOKEN, ACME_TOKEN] {
        let rows: Vec<Value> = http()
            .post(format!("http://{}/api/v1/query", serve.addr("api")))
            .bearer_auth(token)
            .json(&serde_json::json!({"sql": "SELECT count(*) AS n FROM spans", "format": "json"}))
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("POST /api/v1/query: {e}\n{}", serve.log()));
        assert_eq!(rows[0]["n"].as_u64(), Some(wanted), "{rows:?}");
    }

    // A clean stop of everything: each exits 0 after draining.
    for proc in [&mut serve, &mut ingest, &mut p1, &mut p2] {
        let status = proc.terminate(Duration::from_secs(30));
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            proc.name,
            proc.log()
        );
    }
    // The group committed everything: committed == end offset on every partition.
    let status = cluster.bus_status();
    let spans = &status[GROUP_SPANS];
    let partitions = status_partitions(spans);
    assert_eq!(partitions.len(), 4, "{spans}");
    for (p, (end, committed, lag)) in &partitions {
        assert!(*end > 0, "partition {p} got nothing: {spans}");
        assert_eq!(
            (Some(*end), *lag),
            (*committed, 0),
            "partition {p}: {spans}"
        );
    }
    assert_eq!(spans["lag"], 0, "{spans}");
    eprintln!("[{:?}] done", started.elapsed());
}

// ---------------------------------------------------------------------------------------
// 2. An OpenTelemetry Collector's Kafka exporter writing to the span topic directly
// ---------------------------------------------------------------------------------------

#[test]
fn collector_style_producer_is_archived() {
    // One partition: the order of good and undecodable messages is the order produced.
    let cluster = Cluster::start(Setup {
        partitions: 1,
        bus: "",
        archive: "  default_tenant: collector\n",
        ..Setup::default()
    });
    let mut run = cluster.spawn("run", "run");
    let mut expected: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let span_ids = |summary: &Value| -> Vec<String> {
        summary["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["span_id"].as_str().unwrap().to_string())
            .collect()
    };
    // Offsets 0-9: no tenant header (→ archive.default_tenant).
    let a = cluster.produce(&["--topic", SPANS_TOPIC, "--messages", "10", "--spans", "4"]);
    expected
        .entry("collector")
        .or_default()
        .extend(span_ids(&a));
    // 10-14: tenant acme by header; then 15-17: undecodable, with that header too.
    let b = cluster.produce(&[
        "--topic",
        SPANS_TOPIC,
        "--messages",
        "5",
        "--spans",
        "3",
        "--header",
        "mcpulse-tenant=acme",
        "--garbage",
        "3",
        "--key",
        "trace-id",
    ]);
    expected.entry("acme").or_default().extend(span_ids(&b));
    // 18: a tenant header that is not a valid tenant id (dead-lettered).
    cluster.produce(&[
        "--topic",
        SPANS_TOPIC,
        "--messages",
        "1",
        "--header",
        "mcpulse-tenant=not a tenant!",
    ]);
    // 19-28: after all of that, good messages again: the partition must keep moving.
    let c = cluster.produce(&["--topic", SPANS_TOPIC, "--messages", "10", "--spans", "2"]);
    expected
        .entry("collector")
        .or_default()
        .extend(span_ids(&c));
    assert_eq!(expected["collector"].len(), 60);
    assert_eq!(expected["acme"].len(), 15);

    let total = cluster.wait_count(
        "SELECT count(*) AS n FROM spans",
        75,
        Duration::from_secs(60),
    );
    assert_eq!(total, 75, "{}", run.log());
    for (tenant, ids) in &expected {
        let archived: BTreeSet<String> = cluster
            .query(&format!(
                "SELECT span_id FROM spans WHERE tenant = '{tenant}'"
            ))
            .iter()
            .map(|r| r["span_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(&archived, ids, "tenant {tenant}");
    }
    let tenants = cluster.query("SELECT DISTINCT tenant FROM spans ORDER BY tenant");
    assert_eq!(
        tenants,
        vec![
            serde_json::json!({"tenant": "acme"}),
            serde_json::json!({"tenant": "collector"})
        ]
    );
    // The spans of the last run (produced after the undecodable ones) are all there, with
    // their attributes.
    let last_run = c["run_id"].as_str().unwrap();
    assert_eq!(
        cluster.count(&format!(
            "SELECT count(*) AS n FROM spans WHERE attributes['mcpulse.test.run_id'] = '{last_run}' \
             AND tenant = 'collector' AND service_name = 'mcpulse-test-server'"
        )),
        20
    );

    // The three undecodable messages and the one with a bad tenant are on the dead-letter
    // topic, with their origin, the error, and their own headers.
    wait_until(
        Duration::from_secs(30),
        || {
            metric(
                &run.metrics(),
                "mcpulse_processor_dead_lettered_total",
                &[("operator", "archive-spans")],
            ) == Some(4.0)
        },
        || {
            format!(
                "dead-letter count:\n{}\n--- log:\n{}",
                run.metrics(),
                run.log()
            )
        },
    );
    let dlq = cluster.read_topic(DLQ_TOPIC, 4);
    assert_eq!(dlq.len(), 4, "{dlq:#?}");
    let header = |m: &Value, key: &str| -> Option<String> {
        m["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == key)
            .and_then(|h| h[1].as_str().map(str::to_owned))
    };
    let garbage = b"\xff\x00 this is not an ExportTraceServiceRequest";
    for (m, offset) in dlq.iter().zip(15..) {
        assert_eq!(
            header(m, "mcpulse-dlq-topic").as_deref(),
            Some(SPANS_TOPIC),
            "{m}"
        );
        assert_eq!(
            header(m, "mcpulse-dlq-partition").as_deref(),
            Some("0"),
            "{m}"
        );
        let origin: u64 = header(m, "mcpulse-dlq-offset").unwrap().parse().unwrap();
        let error = header(m, "mcpulse-dlq-error").unwrap_or_default();
        assert!(!error.is_empty(), "{m}");
        if offset < 18 {
            assert_eq!(origin, offset, "{m}");
            assert_eq!(header(m, "mcpulse-tenant").as_deref(), Some("acme"), "{m}");
            let hex: String = garbage.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(m["value_hex"], hex, "{m}");
            assert!(m["key"].is_string(), "the original key is kept: {m}");
        } else {
            assert_eq!(origin, 18, "{m}");
            assert_eq!(
                header(m, "mcpulse-tenant").as_deref(),
                Some("not a tenant!"),
                "{m}"
            );
            assert!(error.contains("tenant"), "{error}");
        }
    }

    // The partition moved past everything: committed == end.
    let status = run.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{}", run.log());
    let status = cluster.bus_status();
    let spans = &status[GROUP_SPANS];
    assert_eq!(
        status_partitions(spans),
        BTreeMap::from([(0, (29, Some(29), 0))]),
        "{spans}"
    );
}

/// Without `archive.default_tenant`, a record with no tenant header has no owner: it is
/// dead-lettered (and the partition moves on), never archived under a guessed tenant.
#[test]
fn headerless_records_without_a_default_tenant_are_dead_lettered() {
    let cluster = Cluster::start(Setup {
        partitions: 1,
        ..Setup::default()
    });
    let mut process = cluster.spawn("process", "process");
    // Offsets 0-1: no header; 2: tenant acme.
    cluster.produce(&["--topic", SPANS_TOPIC, "--messages", "2", "--spans", "3"]);
    let acme = cluster.produce(&[
        "--topic",
        SPANS_TOPIC,
        "--messages",
        "1",
        "--spans",
        "4",
        "--header",
        "mcpulse-tenant=acme",
    ]);
    assert_eq!(
        cluster.wait_count(
            "SELECT count(*) AS n FROM spans",
            4,
            Duration::from_secs(30)
        ),
        4,
        "{}",
        process.log()
    );
    let run_id = acme["run_id"].as_str().unwrap();
    assert_eq!(
        cluster.count(&format!(
            "SELECT count(*) AS n FROM spans WHERE tenant = 'acme' \
             AND attributes['mcpulse.test.run_id'] = '{run_id}'"
        )),
        4
    );
    wait_until(
        Duration::from_secs(30),
        || {
            metric(
                &process.metrics(),
                "mcpulse_processor_dead_lettered_total",
                &[("operator", "archive-spans")],
            ) == Some(2.0)
        },
        || format!("{}\n--- log:\n{}", process.metrics(), process.log()),
    );
    let dlq = cluster.read_topic(DLQ_TOPIC, 2);
    let offsets: Vec<Option<String>> = dlq
        .iter()
        .map(|m| {
            m["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h[0] == "mcpulse-dlq-offset")
                .and_then(|h| h[1].as_str().map(str::to_owned))
        })
        .collect();
    assert_eq!(
        offsets,
        [Some("0".to_string()), Some("1".to_string())],
        "{dlq:#?}"
    );
    for m in &dlq {
        let error = m["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == "mcpulse-dlq-error")
            .and_then(|h| h[1].as_str())
            .unwrap_or_default()
            .to_string();
        assert!(error.contains("tenant"), "the error names the cause: {m}");
    }
    let status = process.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{}", process.log());
    assert_eq!(
        status_partitions(&cluster.bus_status()[GROUP_SPANS]),
        BTreeMap::from([(0, (3, Some(3), 0))])
    );
}

// ---------------------------------------------------------------------------------------
// 3. Brokers that are not there
// ---------------------------------------------------------------------------------------

#[test]
fn unreachable_brokers_fail_fast_with_the_reason() {
    // A loopback port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcpulse.yaml");
    let extra = format!(
        "bus:\n  kind: kafka\n  brokers: [\"127.0.0.1:{port}\"]\n  request_timeout: 2s\n  \
         producer_options:\n    batch.num.messages: 1\n"
    );
    std::fs::write(&config, config_yaml(&dir.path().join("data"), &extra)).unwrap();
    for role in ["process", "ingest"] {
        let started = Instant::now();
        let out = run_mcpulse(&[role], &config, Duration::from_secs(30));
        let elapsed = started.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{role} succeeded:\n{err}");
        assert!(
            elapsed < Duration::from_secs(10),
            "{role} took {elapsed:?} to give up:\n{err}"
        );
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("mcpulse: ") && last.contains(&format!("127.0.0.1:{port}")),
            "{role}: the error names the broker: {err}"
        );
        assert!(
            last.to_lowercase().contains("connection refused"),
            "{role}: the error gives the reason: {err}"
        );
        eprintln!("{role} gave up after {elapsed:?}: {last}");
    }
}

// ---------------------------------------------------------------------------------------
// 4. The broker goes away under ingest
// ---------------------------------------------------------------------------------------

#[test]
fn broker_outage_gives_retryable_errors() {
    let mut cluster = Cluster::start(Setup {
        partitions: 2,
        bus: "  delivery_timeout: 2s\n  request_timeout: 2s\n",
        ..Setup::default()
    });
    let mut ingest = cluster.spawn("ingest", "ingest");
    let http_addr = ingest.addr("otlp_http");
    let grpc_addr = ingest.addr("otlp_grpc");
    let client = http();
    let resp = post_otlp(&client, http_addr, spans_request(1, 5, "before")).unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{}", ingest.log());
    let reply = grpc_export(grpc_addr, spans_request(100, 5, "before-grpc"));
    assert!(reply.is_ok(), "{reply:?}\n{}", ingest.log());

    cluster.tansu.kill();

    // OTLP/HTTP: a retryable answer with Retry-After, promptly (not a hang, not a 200).
    let started = Instant::now();
    let resp = post_otlp(&client, http_addr, spans_request(200, 5, "during")).unwrap();
    let elapsed = started.elapsed();
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.bytes().unwrap();
    eprintln!(
        "OTLP/HTTP during the outage: {status} after {elapsed:?}, Retry-After {retry_after:?}"
    );
    assert!(
        status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS,
        "{status}: {body:?}\n{}",
        ingest.log()
    );
    assert!(
        retry_after
            .as_deref()
            .is_some_and(|s| s.parse::<u64>().is_ok()),
        "Retry-After: {retry_after:?}"
    );
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");

    // OTLP/gRPC: UNAVAILABLE.
    let started = Instant::now();
    let reply = grpc_export(grpc_addr, spans_request(300, 5, "during-grpc"));
    let elapsed = started.elapsed();
    eprintln!("OTLP/gRPC during the outage after {elapsed:?}: {reply:?}");
    let status = reply.expect_err("an export during the outage succeeded");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");

    // And it still stops on SIGTERM.
    let status = ingest.terminate(Duration::from_secs(30));
    eprintln!("ingest exited with {status} after the outage");
}

/// `bus.delivery_timeout` is "the longest a produce waits; past it ingest answers
/// retryably": during an outage every request is answered within it (plus librdkafka's
/// one-second timeout scan), not only the first.
#[test]
fn outage_answers_within_the_delivery_timeout() {
    let mut cluster = Cluster::start(Setup {
        partitions: 2,
        bus: "  delivery_timeout: 2s\n  request_timeout: 2s\n",
        ..Setup::default()
    });
    let ingest = cluster.spawn("ingest", "ingest");
    let http_addr = ingest.addr("otlp_http");
    let client = http();
    let resp = post_otlp(&client, http_addr, spans_request(1, 5, "before")).unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{}", ingest.log());
    cluster.tansu.kill();
    let mut answers = Vec::new();
    for i in 0..4 {
        let started = Instant::now();
        let resp = post_otlp(&client, http_addr, spans_request(100 + i * 10, 5, "during")).unwrap();
        answers.push((resp.status(), started.elapsed()));
    }
    eprintln!("during the outage: {answers:?}");
    assert!(
        answers.iter().all(
            |(status, elapsed)| *status == StatusCode::SERVICE_UNAVAILABLE
                && *elapsed < Duration::from_secs(4)
        ),
        "every answer within delivery_timeout (2 s) + 2 s: {answers:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 5. Lag on /metrics and in `bus status`
// ---------------------------------------------------------------------------------------

#[test]
fn lag_is_visible() {
    let cluster = Cluster::start(Setup::default());
    let mut ingest = cluster.spawn("ingest", "ingest");
    let http_addr = ingest.addr("otlp_http");
    let client = http();
    // Eight requests from eight services (keys), before any archiver runs.
    const REQUESTS: u64 = 8;
    for r in 0..REQUESTS {
        let resp = post_otlp(
            &client,
            http_addr,
            spans_request(r * 10 + 1, 10, &format!("svc-{r}")),
        )
        .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{}", ingest.log());
    }

    // Nothing consumed yet: the whole backlog is lag, on ingest's /metrics and in
    // `bus status` (never committed).
    wait_until(
        Duration::from_secs(20),
        || {
            metric(
                &ingest.metrics(),
                "mcpulse_bus_consumer_lag",
                &[("group", GROUP_SPANS)],
            ) == Some(REQUESTS as f64)
        },
        || format!("ingest /metrics:\n{}", ingest.metrics()),
    );
    let status = cluster.bus_status();
    let spans = &status[GROUP_SPANS];
    let before = status_partitions(spans);
    assert_eq!(before.len(), 4, "{spans}");
    assert!(
        before
            .values()
            .all(|(end, committed, lag)| committed.is_none() && lag == end),
        "{spans}"
    );
    assert_eq!(
        (&spans["end_offset"], &spans["lag"]),
        (&REQUESTS.into(), &REQUESTS.into()),
        "{spans}"
    );
    let on_ingest = metrics_partitions(&ingest.metrics(), GROUP_SPANS);
    assert_eq!(
        on_ingest,
        before
            .iter()
            .map(|(p, (end, _, lag))| (*p, (*end, 0, *lag)))
            .collect(),
        "ingest /metrics vs bus status"
    );

    // A processor archives it all: its /metrics shows every partition committed up to
    // its end, lag 0, and `bus status` agrees.
    let mut process = cluster.spawn("process", "process");
    assert_eq!(
        cluster.wait_count(
            "SELECT count(*) AS n FROM spans",
            REQUESTS * 10,
            Duration::from_secs(30)
        ),
        REQUESTS * 10
    );
    wait_until(
        Duration::from_secs(30),
        || {
            let parts = metrics_partitions(&process.metrics(), GROUP_SPANS);
            parts.len() == 4
                && parts.iter().all(|(p, (end, committed, lag))| {
                    *end == before[p].0 && committed == end && *lag == 0
                })
        },
        || format!("process /metrics:\n{}", process.metrics()),
    );
    let text = process.metrics();
    for family in [
        "mcpulse_bus_end_offset",
        "mcpulse_bus_committed_offset",
        "mcpulse_bus_consumer_lag",
    ] {
        for p in 0..4 {
            assert!(
                text.contains(&format!(
                    "{family}{{group=\"{GROUP_SPANS}\",topic=\"{SPANS_TOPIC}\",partition=\"{p}\"}}"
                )),
                "{family} partition {p}:\n{text}"
            );
        }
        assert!(
            text.contains(&format!("{family}{{group=\"mcpulse-archive-probes\"")),
            "{family} of the probe archiver:\n{text}"
        );
    }
    let status = cluster.bus_status();
    let spans = &status[GROUP_SPANS];
    let after = status_partitions(spans);
    let on_process = metrics_partitions(&text, GROUP_SPANS);
    assert_eq!(
        on_process,
        after
            .iter()
            .map(|(p, (end, committed, lag))| (*p, (*end, committed.unwrap_or(0), *lag)))
            .collect(),
        "process /metrics vs bus status: {spans}"
    );
    assert!(
        after
            .values()
            .all(|(end, committed, lag)| *committed == Some(*end) && *lag == 0),
        "{spans}"
    );
    assert_eq!(
        (&spans["committed"], &spans["lag"]),
        (&REQUESTS.into(), &0.into()),
        "{spans}"
    );
    // Ingest sees the drained lag too (it drives backpressure).
    wait_until(
        Duration::from_secs(10),
        || {
            metric(
                &ingest.metrics(),
                "mcpulse_bus_consumer_lag",
                &[("group", GROUP_SPANS)],
            ) == Some(0.0)
        },
        || format!("ingest /metrics:\n{}", ingest.metrics()),
    );
    for proc in [&mut process, &mut ingest] {
        let status = proc.terminate(Duration::from_secs(30));
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            proc.name,
            proc.log()
        );
    }
}

#[test]
fn probers_in_two_regions_probe_the_same_targets() {
    let cluster = Cluster::start(Setup::default());
    let rmcp = common::mcp_servers::McpServer::rmcp(false);
    let targets = cluster.root.path().join("targets.yaml");
    std::fs::write(
        &targets,
        format!(
            "policy: {{allow_loopback: true}}\ndefaults: {{interval: 10s, timeout: 5s}}\ntenants:\n  acme:\n    - server: tools\n      url: {}\n",
            rmcp.url()
        ),
    )
    .unwrap();
    let targets = targets.to_str().unwrap();
    let _process = cluster.spawn("process", "process");
    let mut eu = cluster.spawn_with_args(
        "probe",
        "probe-eu",
        &["--region", "eu-west", "--targets", targets],
    );
    let mut us = cluster.spawn_with_args(
        "probe",
        "probe-us",
        &["--region", "us-east", "--targets", targets],
    );
    let sql = "SELECT DISTINCT region FROM probes WHERE tenant = 'acme' AND server = 'tools' AND ok ORDER BY region";
    let deadline = Instant::now() + Duration::from_secs(60);
    let regions = loop {
        let regions: Vec<String> = cluster
            .query(sql)
            .iter()
            .map(|r| r["region"].as_str().unwrap().to_string())
            .collect();
        if regions.len() == 2 || Instant::now() > deadline {
            break regions;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        regions,
        ["eu-west", "us-east"],
        "{}\n{}",
        eu.log(),
        us.log()
    );
    let metrics = eu.metrics();
    assert_eq!(
        metric(&metrics, "mcpulse_prober_targets", &[("region", "eu-west")]),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        eu.terminate(Duration::from_secs(30)).success(),
        "{}",
        eu.log()
    );
    assert!(
        us.terminate(Duration::from_secs(30)).success(),
        "{}",
        us.log()
    );
}

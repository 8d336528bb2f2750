//! A real Kafka-protocol broker for the Kafka end-to-end tests: tansu (crates.io), run
//! on a free loopback port with in-memory storage, one per test.
//!
//! scripts/test-deps.sh installs the binary and scripts/test.sh exports its path as
//! `MCPULSE_TANSU` (when unset, the default install location is tried).
//!
//! Known limits of tansu 0.6.0's in-memory storage that tests must respect:
//! - A Fetch at an offset *inside* a multi-record batch returns only the batches that
//!   start at or after it (the rest of that batch is skipped), and ListOffsets(latest)
//!   is the last batch's base offset + 1. Producers writing to tansu should send one
//!   record per batch (librdkafka `batch.num.messages=1`), as `produce_otlp.py` does.
//! - Topics are not created on produce: create them first (CreateTopics works).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a broker may take to answer its first metadata request.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running tansu broker; killed on drop.
pub struct Tansu {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// The tansu binary: `$MCPULSE_TANSU`, else where scripts/test-deps.sh installs it.
pub fn tansu_binary() -> PathBuf {
    let path = match std::env::var_os("MCPULSE_TANSU") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => std::env::var_os("MCPULSE_TOOLS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/mcpulse/tools")
            })
            .join("bin/tansu"),
    };
    assert!(
        path.is_file(),
        "no tansu broker at {} (MCPULSE_TANSU={:?}): run the tests with `bash scripts/test.sh`, \
         which installs it (scripts/test-deps.sh) and exports MCPULSE_TANSU",
        path.display(),
        std::env::var_os("MCPULSE_TANSU"),
    );
    path
}

impl Tansu {
    /// Starts a broker on a free loopback port and waits (at most 30 s) until it answers a
    /// Kafka metadata request. Panics with the broker's log when it does not.
    pub fn start() -> Tansu {
        let binary = tansu_binary();
        // The port is free when picked but could be taken before tansu binds it: retry.
        let mut last_failure = String::new();
        for _ in 0..3 {
            match Tansu::try_start(&binary) {
                Ok(tansu) => return tansu,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("{last_failure}");
    }

    fn try_start(binary: &Path) -> Result<Tansu, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let url = format!("tcp://{addr}");
        let log = std::fs::File::create(dir.path().join("tansu.log")).expect("tansu log");
        let child = Command::new(binary)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .args(["--cluster-id", "mcpulse-test"])
            // tansu reads these too; never let the environment point it elsewhere.
            .env_remove("CLUSTER_ID")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .env_remove("SCHEMA_REGISTRY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env(
                "RUST_LOG",
                std::env::var("MCPULSE_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("tansu log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut tansu = Tansu {
            child: Some(child),
            addr,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        // First the listener (cheap), then a real metadata round trip.
        loop {
            if let Some(status) = tansu.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!(
                    "tansu exited with {status} before accepting connections on {addr}:\n{}",
                    tansu.log_tail()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "tansu did not accept connections on {addr} within {START_TIMEOUT:?}:\n{}",
                    tansu.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        if let Err(e) = tansu.try_ping(wait) {
            panic!("{e}");
        }
        Ok(tansu)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker's log so far (its last 8 KiB).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read(self.dir.path().join("tansu.log")).unwrap_or_default();
        let start = text.len().saturating_sub(8192);
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// A Kafka metadata round trip through a real client (`tests/python/kafka_ping.py`),
    /// retried for up to `wait`; returns what it printed (brokers, topics, cluster id).
    pub fn ping(&self, wait: Duration) -> serde_json::Value {
        self.try_ping(wait).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_ping(&self, wait: Duration) -> Result<serde_json::Value, String> {
        let out = Command::new(super::python())
            .arg(super::repo_path("tests/python/kafka_ping.py"))
            .args(["--bootstrap", &self.bootstrap()])
            .args(["--wait", &format!("{:.1}", wait.as_secs_f64())])
            .stdin(Stdio::null())
            .output()
            .expect("run kafka_ping.py");
        if !out.status.success() {
            return Err(format!(
                "tansu on {} did not answer a Kafka metadata request: {}\n--- tansu log:\n{}",
                self.addr,
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log_tail()
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "kafka_ping.py printed bad JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Kills the broker now (its in-memory data is gone).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

//! A tansu broker (in-memory storage, free loopback port) for the Kafka mode, killed when
//! dropped (and by the kernel if the benchmark dies first).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};

/// How long the broker may take to answer its first metadata request.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running tansu broker.
pub struct Tansu {
    child: Child,
    addr: SocketAddr,
    pub version: String,
    dir: tempfile::TempDir,
}

/// `$MCPULSE_TANSU`, else where scripts/test-deps.sh installs tansu.
pub fn default_binary() -> PathBuf {
    match std::env::var_os("MCPULSE_TANSU") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => std::env::var_os("MCPULSE_TOOLS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/mcpulse/tools")
            })
            .join("bin/tansu"),
    }
}

impl Tansu {
    /// Starts `binary` on a free loopback port and waits until it answers a metadata
    /// request (retrying on another port if the picked one was taken meanwhile).
    pub fn start(binary: &Path) -> anyhow::Result<Tansu> {
        anyhow::ensure!(
            binary.is_file(),
            "no tansu binary at {} (install it with `bash scripts/test-deps.sh`, or pass --tansu PATH)",
            binary.display()
        );
        let version = Command::new(binary)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let mut failure = None;
        for _ in 0..3 {
            match Tansu::try_start(binary, &version) {
                Ok(tansu) => return Ok(tansu),
                Err(e) => failure = Some(e),
            }
        }
        Err(failure.expect("three attempts"))
    }

    fn try_start(binary: &Path, version: &str) -> anyhow::Result<Tansu> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let url = format!("tcp://{addr}");
        let log = std::fs::File::create(dir.path().join("tansu.log"))?;
        let mut command = Command::new(binary);
        command
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .args(["--cluster-id", "mcpulse-bench"])
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
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the child is killed if the benchmark dies
        // (it is spawned from the main thread, which lives as long as the process).
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut tansu = Tansu {
            child,
            addr,
            version: version.to_string(),
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = tansu.child.try_wait()? {
                anyhow::bail!(
                    "tansu exited with {status} before listening on {addr}:\n{}",
                    tansu.log_tail()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "tansu did not listen on {addr} within {START_TIMEOUT:?}:\n{}",
                tansu.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let probe: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", tansu.bootstrap())
            .create()?;
        probe
            .fetch_metadata(None, deadline.saturating_duration_since(Instant::now()))
            .with_context(|| {
                format!(
                    "tansu on {addr} did not answer a metadata request:\n{}",
                    tansu.log_tail()
                )
            })?;
        Ok(tansu)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The broker's log so far (its last 8 KiB).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read(self.dir.path().join("tansu.log")).unwrap_or_default();
        let start = text.len().saturating_sub(8192);
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// CPU time (user + system) the broker used so far.
    pub fn cpu_time(&self) -> Duration {
        process_cpu_time(self.pid()).unwrap_or_default()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of process `pid` from `/proc/{pid}/stat`.
fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis((utime + stime) * 1000 / ticks))
}

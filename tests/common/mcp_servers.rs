//! Real MCP servers for the prober's end-to-end tests, each started on a free loopback
//! port and killed on drop:
//!
//! - [`McpServer::python`]: `tests/python/mcp_server.py`, on the official Python SDK
//!   (`mcp` 2.x, pinned in tests/python/requirements.txt), over Streamable HTTP
//!   (session or stateless mode, SSE or JSON answers) or HTTP+SSE (2024-11-05). Three
//!   tools: `add`, `echo`, `weather` (a changed or alternating list with
//!   [`McpServer::python_with_args`] and `--tools v2|alternate`).
//! - [`McpServer::everything`]: `@modelcontextprotocol/server-everything` (npm, on the
//!   TypeScript SDK), over Streamable HTTP (session mode) or HTTP+SSE.
//! - [`McpServer::rmcp`]: `mcpulse-rmcp-test-server` (workspace member
//!   tests/rmcp-server, on rmcp, the official Rust SDK), over Streamable HTTP in session
//!   or stateless mode. Same three tools as the Python server.
//!
//! scripts/test-deps.sh installs both (the venv and `npm install --prefix`);
//! scripts/test.sh exports `MCPULSE_PYTHON` and `MCPULSE_NPM_PREFIX` (when unset, the
//! default install locations are tried). `MCPULSE_EVERYTHING` may name the server's
//! entry script (`dist/index.js`) directly and `MCPULSE_NODE` the node binary. The rmcp
//! server binary is built by `cargo test --workspace` (or `cargo build -p
//! mcpulse-rmcp-test-server`) next to the test executables; `MCPULSE_RMCP_SERVER` may
//! name it directly.
//!
//! Streamable HTTP answers in SSE form may start with a priming event without data
//! (rmcp in session mode sends `id: 0`, `retry: 3000`, empty `data:`): skip those.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a server may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The protocol version the smoke tests and helpers ask for in `initialize`.
pub const PROTOCOL_VERSION: &str = "2025-06-18";

/// Which MCP HTTP transport a server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Streamable HTTP (2025-03-26 and later): one endpoint, `…/mcp`.
    StreamableHttp,
    /// HTTP+SSE (2024-11-05): `GET …/sse`, then POSTs to the `endpoint` it announces.
    Sse,
}

/// Options of the Python and rmcp servers (Streamable HTTP only; ignored for SSE).
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerOptions {
    /// Stateless mode: no `Mcp-Session-Id`, every request stands alone.
    pub stateless: bool,
    /// Answer POSTs with `application/json` instead of an SSE stream.
    pub json_response: bool,
}

pub type PythonOptions = ServerOptions;

/// A running MCP server; killed on drop.
pub struct McpServer {
    child: Option<Child>,
    url: String,
    addr: SocketAddr,
    name: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Patches `http.Server.prototype.listen` so that a bare `listen(port)` (what
/// server-everything's express app does, on every interface) binds 127.0.0.1 only.
const NODE_LOOPBACK_PRELOAD: &str = r#"import http from "node:http";
const listen = http.Server.prototype.listen;
http.Server.prototype.listen = function (...args) {
  const port = args[0];
  if (typeof port === "number" || (typeof port === "string" && /^[0-9]+$/.test(port))) {
    if (typeof args[1] === "string") args[1] = "127.0.0.1";
    else args.splice(1, 0, "127.0.0.1");
  }
  return listen.apply(this, args);
};
"#;

/// server-everything's entry script: `$MCPULSE_EVERYTHING`, else under
/// `$MCPULSE_NPM_PREFIX` (default `~/.cache/mcpulse/npm`).
pub fn everything_entry() -> PathBuf {
    let path = match std::env::var_os("MCPULSE_EVERYTHING") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => std::env::var_os("MCPULSE_NPM_PREFIX")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/mcpulse/npm")
            })
            .join("node_modules/@modelcontextprotocol/server-everything/dist/index.js"),
    };
    assert!(
        path.is_file(),
        "no @modelcontextprotocol/server-everything at {} (MCPULSE_NPM_PREFIX={:?}): run the \
         tests with `bash scripts/test.sh`, which installs it (scripts/test-deps.sh, needs \
         node and npm) and exports MCPULSE_NPM_PREFIX",
        path.display(),
        std::env::var_os("MCPULSE_NPM_PREFIX"),
    );
    path
}

/// The rmcp test server: `$MCPULSE_RMCP_SERVER`, else beside the test executables
/// (`target/<profile>/mcpulse-rmcp-test-server`, built by `cargo test --workspace`).
pub fn rmcp_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MCPULSE_RMCP_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable under target/<profile>/deps");
    let path = profile_dir.join(format!(
        "mcpulse-rmcp-test-server{}",
        std::env::consts::EXE_SUFFIX
    ));
    assert!(
        path.is_file(),
        "no rmcp test server at {}: build it with `cargo build -p mcpulse-rmcp-test-server` \
         (`cargo test --workspace`, as scripts/test.sh runs it, builds it too) or set \
         MCPULSE_RMCP_SERVER",
        path.display()
    );
    path
}

fn node_binary() -> PathBuf {
    std::env::var_os("MCPULSE_NODE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("node"))
}

impl McpServer {
    /// Starts `tests/python/mcp_server.py` on a free loopback port (the script binds
    /// port 0 itself) and waits, at most 30 s, for its `READY <url>` line.
    pub fn python(transport: Transport, options: PythonOptions) -> McpServer {
        McpServer::python_with_args(transport, options, &[])
    }

    /// Like [`McpServer::python`], with more command-line arguments for the script after
    /// the others, e.g. `["--tools", "v2"]` (the tool list, see the script's docs) or
    /// `["--port", "PORT"]` to bind a given port instead of a free one (the last `--port`
    /// wins), e.g. to restart a server on the same URL.
    pub fn python_with_args(
        transport: Transport,
        options: PythonOptions,
        extra_args: &[&str],
    ) -> McpServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log).expect("server log");
        let mut cmd = Command::new(super::python());
        cmd.arg(super::repo_path("tests/python/mcp_server.py"))
            .args(["--port", "0"])
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let name = match transport {
            Transport::StreamableHttp => {
                cmd.args(["--transport", "streamable-http"]);
                if options.stateless {
                    cmd.arg("--stateless");
                }
                if options.json_response {
                    cmd.arg("--json-response");
                }
                format!(
                    "python mcp server (streamable-http{}{})",
                    if options.stateless { ", stateless" } else { "" },
                    if options.json_response { ", json" } else { "" }
                )
            }
            Transport::Sse => {
                cmd.args(["--transport", "sse"]);
                "python mcp server (sse)".to_string()
            }
        };
        cmd.args(extra_args);
        let name = if extra_args.is_empty() {
            name
        } else {
            format!("{name} {}", extra_args.join(" "))
        };
        McpServer::spawn_until_ready(cmd, name, dir, log)
    }

    /// Starts `mcpulse-rmcp-test-server` (Streamable HTTP) on a free loopback port: in
    /// session mode when `stateful`, else stateless. Waits at most 30 s for `READY`.
    pub fn rmcp(stateful: bool) -> McpServer {
        McpServer::rmcp_with(ServerOptions {
            stateless: !stateful,
            json_response: false,
        })
    }

    /// Like [`McpServer::rmcp`] with all options (rmcp answers in JSON only when
    /// stateless).
    pub fn rmcp_with(options: ServerOptions) -> McpServer {
        let binary = rmcp_server_binary();
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log).expect("server log");
        let mut cmd = Command::new(&binary);
        cmd.args(["--port", "0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        if options.stateless {
            cmd.arg("--stateless");
        }
        if options.json_response {
            cmd.arg("--json-response");
        }
        let name = format!(
            "rmcp mcp server ({}{})",
            if options.stateless {
                "stateless"
            } else {
                "session"
            },
            if options.json_response { ", json" } else { "" }
        );
        McpServer::spawn_until_ready(cmd, name, dir, log)
    }

    /// Spawns `cmd` (stdout piped) and waits for its `READY <url>` line.
    fn spawn_until_ready(
        mut cmd: Command,
        name: String,
        dir: tempfile::TempDir,
        log: PathBuf,
    ) -> McpServer {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        // Read stdout on a thread (it keeps draining until the server exits).
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more: keep draining so the server never blocks.
                    continue;
                }
            }
        });
        let mut server = McpServer {
            child: Some(child),
            url: String::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            name,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("READY ") {
                        server.set_url(url.trim());
                        return server;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: it exited (checked below) or is about to.
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{} exited with {status} before it was ready:\n{}",
                    server.name,
                    server.log_tail()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} not ready (no READY line) within {START_TIMEOUT:?}:\n{}",
                    server.name,
                    server.log_tail()
                );
            }
        }
    }

    /// Starts `@modelcontextprotocol/server-everything` (`node dist/index.js
    /// streamableHttp|sse` with `PORT`, bound to 127.0.0.1 by a preload) on a free port,
    /// and waits, at most 30 s, until it says it listens and accepts a TCP connection.
    pub fn everything(transport: Transport) -> McpServer {
        let entry = everything_entry();
        let mut last_failure = String::new();
        // The port is free when picked but could be taken before node binds it: retry.
        for _ in 0..3 {
            match McpServer::try_everything(&entry, transport) {
                Ok(server) => return server,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("{last_failure}");
    }

    fn try_everything(entry: &std::path::Path, transport: Transport) -> Result<McpServer, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let preload = dir.path().join("loopback.mjs");
        std::fs::write(&preload, NODE_LOOPBACK_PRELOAD).expect("write node preload");
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log).expect("server log");
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let (arg, path, ready_marker) = match transport {
            Transport::StreamableHttp => ("streamableHttp", "/mcp", "listening on port"),
            Transport::Sse => ("sse", "/sse", "running on port"),
        };
        let name = format!("server-everything ({arg})");
        let child = Command::new(node_binary())
            .arg("--import")
            .arg(&preload)
            .arg(entry)
            .arg(arg)
            .env("PORT", port.to_string())
            .env_remove("NODE_OPTIONS")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("server log"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} with {:?}: {e}", node_binary()));
        let mut server = McpServer {
            child: Some(child),
            url: format!("http://{addr}{path}"),
            addr,
            name,
            log,
            _dir: dir,
        };
        let marker = format!("{ready_marker} {port}");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                // Most likely the port was taken meanwhile (EADDRINUSE): the caller retries.
                return Err(format!(
                    "{} exited with {status} before it was ready on {addr}:\n{}",
                    server.name,
                    server.log_tail()
                ));
            }
            // Its own "listening" line first (so a stranger on the port does not count).
            if server.log_tail().contains(&marker)
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} not listening on {addr} within {START_TIMEOUT:?}:\n{}",
                    server.name,
                    server.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn set_url(&mut self, url: &str) {
        self.url = url.to_string();
        let authority = url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("{} printed a bad URL: {url}", self.name));
        self.addr = authority
            .parse()
            .unwrap_or_else(|e| panic!("{} printed a bad URL {url}: {e}", self.name));
    }

    /// The MCP endpoint: `http://127.0.0.1:PORT/mcp` (Streamable HTTP) or
    /// `http://127.0.0.1:PORT/sse` (HTTP+SSE).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `http://127.0.0.1:PORT` (no path).
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// E.g. "python mcp server (streamable-http, stateless)", for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's stderr (and node's stdout) so far: its last 8 KiB.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(8192);
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// Kills the server now (connections to it are then refused).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for McpServer {
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

/// The JSON-RPC `initialize` request the helpers send (id 1).
pub fn initialize_request() -> serde_json::Value {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "mcpulse-tests", "version": "0.0.0" }
        }
    })
}

/// Reads a Server-Sent Events stream event by event (`event`, `data` joined by '\n'),
/// from any blocking reader (a `reqwest::blocking::Response`).
pub struct SseReader<R> {
    lines: BufReader<R>,
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    /// `message` when the stream named none.
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

impl<R: std::io::Read> SseReader<R> {
    pub fn new(reader: R) -> Self {
        SseReader {
            lines: BufReader::new(reader),
        }
    }

    /// The next event, `None` at the end of the stream. Comments and events without
    /// data are skipped.
    pub fn next_event(&mut self) -> std::io::Result<Option<SseEvent>> {
        let mut ev = SseEvent::default();
        let mut data: Vec<String> = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if self.lines.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if !data.is_empty() {
                    ev.data = data.join("\n");
                    if ev.event.is_empty() {
                        ev.event = "message".into();
                    }
                    return Ok(Some(ev));
                }
                ev = SseEvent::default();
                continue;
            }
            if l.starts_with(':') {
                continue;
            }
            let (field, value) = match l.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (l, ""),
            };
            match field {
                "event" => ev.event = value.to_string(),
                "data" => data.push(value.to_string()),
                "id" => ev.id = Some(value.to_string()),
                _ => {}
            }
        }
    }
}

/// Reads the JSON-RPC message with `id` from a Streamable HTTP POST's answer, which is
/// either `application/json` or an SSE stream (stops reading at that message).
pub fn jsonrpc_response(resp: reqwest::blocking::Response, id: i64) -> serde_json::Value {
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        let body = resp.text().expect("read JSON body");
        return serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {body}"));
    }
    assert!(
        content_type.starts_with("text/event-stream"),
        "answer is neither JSON nor SSE: content-type {content_type:?}"
    );
    let mut events = SseReader::new(resp);
    while let Some(ev) = events.next_event().expect("read SSE answer") {
        // Skip named events and priming events without data.
        if ev.event != "message" || ev.data.trim().is_empty() {
            continue;
        }
        let msg: serde_json::Value = serde_json::from_str(&ev.data)
            .unwrap_or_else(|e| panic!("SSE message is not JSON ({e}): {}", ev.data));
        if msg["id"].as_i64() == Some(id) {
            return msg;
        }
    }
    panic!("SSE answer ended without a JSON-RPC message with id {id}");
}

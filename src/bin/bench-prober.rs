//! Prober benchmark: probes N local MCP endpoints once through the scheduler's
//! `run_once` and prints wall time, probes/s, the prober's CPU time per probe and peak RSS.
//!
//! ```sh
//! cargo run --release --bin bench-prober -- [--targets 2000] [--max-concurrency 256] [--ports 8]
//! ```
//!
//! The endpoints (legacy Streamable HTTP: `server/discover` refused as the SDKs do,
//! initialize with a session id, initialized 202, one page of tools, DELETE; a distinct
//! path per target, spread over `--ports` listeners on 127.0.0.1) run in a child
//! process (`bench-prober --serve`), so the CPU time and RSS printed are the prober's
//! alone. Targets use `transport: auto`, as `targets.yaml` does by default.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;
use mcpulse_ingest::prober::probe::{Prober, ProberSettings};
use mcpulse_ingest::prober::scheduler::{DiscardSink, Scheduler};
use mcpulse_ingest::prober::target_guard::TargetPolicy;
use mcpulse_ingest::prober::targets::{Target, TransportHint};
use serde_json::{Value, json};

#[path = "bench_support/mod.rs"]
mod bench_support;
use bench_support::{peak_rss_mb, process_cpu};

#[derive(Parser)]
struct Args {
    /// Targets to probe.
    #[arg(long, default_value_t = 2000)]
    targets: usize,
    /// Most probes in flight.
    #[arg(long, default_value_t = 256)]
    max_concurrency: usize,
    /// Listeners the endpoints are spread over.
    #[arg(long, default_value_t = 8)]
    ports: usize,
    /// Per-probe timeout in seconds.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    /// Serve the endpoints (the child process) instead of probing them.
    #[arg(long, hide = true)]
    serve: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.serve {
        return serve(args.ports);
    }
    bench(args)
}

// ---- the endpoints (child process) ----

fn serve(ports: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut addrs = Vec::new();
        for _ in 0..ports {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(listener.local_addr()?.port().to_string());
            let app = Router::new().route("/t/{id}/mcp", post(rpc).delete(end_session));
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
        }
        println!("PORTS {}", addrs.join(","));
        // Serve until the parent closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin()
                .read_line(&mut line)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                line.clear();
            }
        })
        .await?;
        Ok(())
    })
}

async fn end_session() -> StatusCode {
    StatusCode::OK
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn rpc(Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let rpc_id = message["id"].clone();
    match message["method"].as_str().unwrap_or_default() {
        "server/discover" => json_response(
            StatusCode::BAD_REQUEST,
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": "Bad Request: No valid session ID provided"}}),
        ),
        "initialize" => {
            let version = message
                .pointer("/params/protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or("2025-06-18")
                .to_string();
            let mut response = json_response(
                StatusCode::OK,
                json!({"jsonrpc": "2.0", "id": rpc_id, "result": {"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": {"name": format!("bench-{id}"), "version": "1"}}}),
            );
            response.headers_mut().insert(
                "mcp-session-id",
                HeaderValue::from_str(&format!("session-{id}")).expect("a valid header"),
            );
            response
        }
        "notifications/initialized" => StatusCode::ACCEPTED.into_response(),
        "tools/list" => {
            if headers.get("mcp-session-id").is_none() {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": "Bad Request: missing session"}}),
                );
            }
            json_response(
                StatusCode::OK,
                json!({"jsonrpc": "2.0", "id": rpc_id, "result": {"tools": [
                    {"name": "search", "description": "Searches things", "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}},
                    {"name": "fetch", "description": "Fetches a thing", "inputSchema": {"type": "object", "properties": {"id": {"type": "string"}}}},
                ]}}),
            )
        }
        _ => json_response(
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": rpc_id, "error": {"code": -32601, "message": "method not found"}}),
        ),
    }
}

// ---- the prober (parent process) ----

fn bench(args: Args) -> anyhow::Result<()> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve", "--ports", &args.ports.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let ports: Vec<u16> = line
        .trim()
        .strip_prefix("PORTS ")
        .ok_or_else(|| anyhow::anyhow!("the server child printed {line:?}"))?
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;

    let targets: Vec<Target> = (0..args.targets)
        .map(|i| Target {
            tenant: "bench".into(),
            server: format!("s{i}"),
            url: format!("http://127.0.0.1:{}/t/{i}/mcp", ports[i % ports.len()])
                .parse()
                .expect("a valid URL"),
            transport: TransportHint::Auto,
            credential: None,
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(args.timeout_secs),
            labels: Default::default(),
        })
        .collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut settings = ProberSettings::new("bench");
    settings.policy = TargetPolicy {
        allow_loopback: true,
        ..Default::default()
    };
    let scheduler = Scheduler::new(
        Arc::new(Prober::new(settings)),
        Arc::new(DiscardSink),
        args.max_concurrency,
    );
    let n = targets.len();
    let cpu_before = process_cpu();
    let started = Instant::now();
    let results = runtime.block_on(scheduler.run_once(targets));
    let wall = started.elapsed();
    let cpu = process_cpu() - cpu_before;
    drop(child.stdin.take());
    let _ = child.wait();

    let ok = results
        .iter()
        .filter(|(_, r)| r.as_ref().is_ok_and(|r| r.ok))
        .count();
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    for (_, r) in &results {
        match r {
            Ok(r) if r.ok => {}
            Ok(r) => {
                *failures
                    .entry(format!("{:?}", r.failure_reason))
                    .or_default() += 1
            }
            Err(e) => *failures.entry(format!("not probed: {e}")).or_default() += 1,
        }
    }
    let mut totals: Vec<f64> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok()?.total_ms)
        .collect();
    totals.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        totals
            .get(((totals.len() as f64 * p) as usize).min(totals.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };

    println!(
        "targets: {n} over {} ports, max_concurrency {}",
        ports.len(),
        args.max_concurrency
    );
    println!("wall time: {:.3} s (target < 10 s)", wall.as_secs_f64());
    println!("probes/s: {:.0}", n as f64 / wall.as_secs_f64());
    println!(
        "prober CPU: {:.3} s total, {:.3} ms per probe (servers run in a child process, not counted)",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 / n.max(1) as f64
    );
    println!(
        "probe total_ms: p50 {:.1}, p99 {:.1}, max {:.1}",
        pct(0.5),
        pct(0.99),
        totals.last().copied().unwrap_or(0.0)
    );
    println!("peak RSS: {:.0} MB", peak_rss_mb());
    if ok == n {
        println!("check: all {n} ok");
    } else {
        println!("check: FAILED: {ok} of {n} ok; failures: {failures:?}");
        std::process::exit(1);
    }
    Ok(())
}

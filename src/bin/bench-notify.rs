//! Benchmark of notification delivery (issue 7): an incident event appended to
//! `alerts.v1` → the HTTP request a local webhook sink receives, with 1,000 receivers, and
//! in the same run Prometheus Alertmanager (Debian's `prometheus-alertmanager`,
//! `group_wait: 0s`) delivering the same alerts to the same sink.
//!
//! mcpulse side: the notification stage as `mcpulse run` starts it (the embedded log, the
//! `mcpulse-notify` consumer group, the processors' runtime, the notification log
//! journaled per send and checkpointed, rows of the `notifications` table written, offsets
//! committed) with a generated `routes.yaml`: 1,000 signed `webhook` receivers, each a
//! tenant section `tenant: tN` → receiver `rN` → `http://127.0.0.1:PORT/r/N`. Trigger
//! events of distinct incidents, spread over the 1,000 tenants, are appended to
//! `alerts.v1` as the incident stage does. Latency = sink receive time − the time the
//! append returned (the embedded log acknowledges a send once it is fsynced, which is also
//! when consumers can see it: the event is in `alerts.v1`); the figure counted from the
//! call of the append (the log's fsync included) is printed too.
//!
//! Alertmanager side: one `prometheus-alertmanager` on loopback (temp storage, no cluster)
//! with the same 1,000 receivers (`webhook_configs` → `http://127.0.0.1:PORT/am/N`), one
//! child route per tenant label, `group_by: ['...']` (every alert its own notification, as
//! mcpulse sends one per incident), `group_wait: 0s`; the same alerts are posted to
//! `/api/v2/alerts`. Latency = sink receive time − the time the POST was started.
//!
//! Each system runs a warm-up (one alert per receiver: connections opened, not measured),
//! a paced phase at a fixed rate below both systems' saturation (latency) and a flat-out
//! phase (throughput = notifications received / (last receive − first send)). The phases
//! run one after the other, never overlapping, on the same sink (its own thread).
//!
//! ```sh
//! cargo run --release --bin bench-notify [-- --events 20000 --receivers 1000 --rate 200 --paced-events 2000]
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use bytes::Bytes;
use chrono::Utc;
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mcpulse::Config;
use mcpulse::archive_store::ArchiveLocation;
use mcpulse::roles::{BoundAddrs, Supervisor, notify::start_notify, open_bus};
use mcpulse_bus::{Message, Producer};
use mcpulse_schemas::{AlertAction, AlertEvent, AlertStatus, Severity};
use serde::Deserialize;
use serde_json::json;

#[path = "bench_support/mod.rs"]
mod bench_support;
use bench_support::{peak_rss_mb, process_cpu, thread_cpu};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Alerts of the flat-out (throughput) phase, per system.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Webhook receivers (and tenants): alerts are spread over all of them.
    #[arg(long, default_value_t = 1_000)]
    receivers: usize,
    /// Alerts per second of the paced (latency) phase.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Alerts of the paced phase, per system.
    #[arg(long, default_value_t = 2_000)]
    paced_events: usize,
    /// Alerts per append (mcpulse) or per POST (Alertmanager) in the flat-out phase.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// POSTs to Alertmanager in flight at once in the flat-out phase.
    #[arg(long, default_value_t = 4)]
    posts_in_flight: usize,
    /// The Alertmanager binary.
    #[arg(long, default_value = "/usr/bin/prometheus-alertmanager")]
    alertmanager: PathBuf,
    /// Alertmanager's `group_interval`. It only paces updates to a group that already
    /// notified; every alert here is its own group and is never updated, so a long one
    /// only spares Alertmanager re-running its pipeline for every idle group mid-run.
    #[arg(long, default_value = "5m")]
    am_group_interval: String,
    /// Longest wait for a phase's notifications after its last alert was sent.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// `notify.flush_interval` of the stage (rows written, log checkpointed, offsets
    /// committed); default: the production default.
    #[arg(long, default_value = "1s")]
    flush_interval: String,
    /// Only the mcpulse side (for profiling): no Alertmanager, no ratios.
    #[arg(long)]
    no_alertmanager: bool,
}

// ---- the webhook sink ----

/// What the sink saw, by global alert id.
struct Sink {
    base: Instant,
    receivers: usize,
    /// Receive time (ns since `base`, +1 so 0 means none) of each alert id.
    received_at: Vec<AtomicU64>,
    duplicates: AtomicU64,
    misrouted: AtomicU64,
    unknown: AtomicU64,
    /// CPU time of the sink's thread, ns.
    cpu_ns: AtomicU64,
}

impl Sink {
    fn ns(&self, at: Instant) -> u64 {
        at.duration_since(self.base).as_nanos() as u64 + 1
    }

    fn record(&self, path: &str, id: Option<usize>, now: u64) {
        let Some(id) = id.filter(|&i| i < self.received_at.len()) else {
            self.unknown.fetch_add(1, Relaxed);
            return;
        };
        let expected = id % self.receivers;
        let receiver = path
            .rsplit('/')
            .next()
            .and_then(|s| s.parse::<usize>().ok());
        if receiver != Some(expected) {
            self.misrouted.fetch_add(1, Relaxed);
        }
        if self.received_at[id]
            .compare_exchange(0, now, Relaxed, Relaxed)
            .is_err()
        {
            self.duplicates.fetch_add(1, Relaxed);
        }
    }

    /// Alerts of `ids` received so far.
    fn count(&self, ids: &Range<usize>) -> usize {
        self.received_at[ids.clone()]
            .iter()
            .filter(|t| t.load(Relaxed) != 0)
            .count()
    }
}

/// mcpulse's webhook body (the alert event) or Alertmanager's (`alerts[]`).
#[derive(Deserialize)]
struct HookBody {
    incident_id: Option<String>,
    alerts: Option<Vec<AmAlert>>,
}

#[derive(Deserialize)]
struct AmAlert {
    labels: HashMap<String, String>,
}

async fn hook(State(sink): State<Arc<Sink>>, uri: Uri, body: Bytes) -> StatusCode {
    let now = sink.ns(Instant::now());
    let path = uri.path();
    match serde_json::from_slice::<HookBody>(&body) {
        Ok(HookBody {
            incident_id: Some(id),
            ..
        }) => sink.record(path, id.strip_prefix('b').and_then(|s| s.parse().ok()), now),
        Ok(HookBody {
            alerts: Some(alerts),
            ..
        }) => {
            for alert in &alerts {
                let id = alert.labels.get("bench_id").and_then(|s| s.parse().ok());
                sink.record(path, id, now);
            }
        }
        _ => {
            sink.unknown.fetch_add(1, Relaxed);
        }
    }
    sink.cpu_ns.store(thread_cpu().as_nanos() as u64, Relaxed);
    StatusCode::OK
}

/// Serves the sink on its own thread (a single-threaded runtime), returns its address.
fn start_sink(sink: Arc<Sink>) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("webhook-sink".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("sink runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = Router::new().fallback(hook).with_state(sink);
                let _ = axum::serve(listener, app).await;
            });
        })?;
    Ok(addr)
}

// ---- alerts ----

fn tenant(id: usize, receivers: usize) -> String {
    format!("t{}", id % receivers)
}

/// The trigger of incident `b{id}`, as the incident stage appends it.
fn alert_message(id: usize, receivers: usize, tenant_header: &str) -> Message {
    let now = Utc::now();
    let tenant = tenant(id, receivers);
    let event = AlertEvent {
        event_id: format!("ev-b{id}-trigger"),
        incident_id: format!("b{id}"),
        dedup_key: format!("mcpulse/{tenant}/s{id}/unreachable"),
        action: AlertAction::Trigger,
        status: AlertStatus::Open,
        tenant: tenant.clone(),
        server: Some(format!("s{id}")),
        class: "unreachable".into(),
        severity: Severity::P1,
        scope: "global".into(),
        reason: Some("tcp_refused".into()),
        regions: vec!["eu-west".into(), "us-east".into()],
        time: now,
        opened_at: now,
        resolved_at: None,
        duration_s: None,
        storm_id: None,
        storm: None,
        provider_outage: None,
        summary: format!("s{id} unreachable from 2 of 2 regions"),
        evidence: json!({"detail": "tcp_refused from eu-west, us-east"}),
    };
    Message::new(
        Some(Bytes::from(event.key())),
        serde_json::to_vec(&event).expect("an event serializes"),
    )
    .with_header(tenant_header, tenant)
}

/// The same alert in Alertmanager's API format (one element of the POSTed array).
fn am_alert(id: usize, receivers: usize) -> String {
    json!({
        "labels": {
            "alertname": "McpServerUnreachable",
            "tenant": tenant(id, receivers),
            "server": format!("s{id}"),
            "class": "unreachable",
            "severity": "P1",
            "bench_id": id.to_string(),
        },
        "annotations": {"summary": format!("s{id} unreachable from 2 of 2 regions")},
        "startsAt": Utc::now().to_rfc3339(),
    })
    .to_string()
}

fn routes_yaml(receivers: usize, sink: SocketAddr) -> String {
    let mut y = String::from("receivers:\n");
    y += &format!(
        "  - name: unrouted\n    webhook: {{ url: \"http://{sink}/unrouted\", secret: \"bench-hmac-secret-0123456789\" }}\n"
    );
    for i in 0..receivers {
        y += &format!(
            "  - name: r{i}\n    tenant: t{i}\n    webhook: {{ url: \"http://{sink}/r/{i}\", secret: \"bench-hmac-secret-0123456789\" }}\n"
        );
    }
    y += "route:\n  id: root\n  receiver: unrouted\n  routes:\n";
    for i in 0..receivers {
        y += &format!("    - {{ id: t{i}, tenant: t{i}, receiver: r{i} }}\n");
    }
    y
}

fn alertmanager_yaml(receivers: usize, sink: SocketAddr, group_interval: &str) -> String {
    let mut y = format!(
        "route:\n  receiver: unrouted\n  group_by: ['...']\n  group_wait: 0s\n  group_interval: {group_interval}\n  repeat_interval: 4h\n  routes:\n"
    );
    for i in 0..receivers {
        y += &format!("    - {{ receiver: r{i}, matchers: ['tenant=\"t{i}\"'] }}\n");
    }
    y += &format!(
        "receivers:\n  - name: unrouted\n    webhook_configs: [{{ url: 'http://{sink}/unrouted', send_resolved: false }}]\n"
    );
    for i in 0..receivers {
        y += &format!(
            "  - name: r{i}\n    webhook_configs: [{{ url: 'http://{sink}/am/{i}', send_resolved: false }}]\n"
        );
    }
    y
}

// ---- phases ----

/// When every alert id was sent (ns since the sink's base, +1).
struct Sent {
    /// The origin of its latency: for mcpulse when the append returned (the event is
    /// durable in `alerts.v1` and visible to consumers from that moment), for
    /// Alertmanager when its POST started.
    origin: Vec<AtomicU64>,
    /// When the append (mcpulse) or POST (Alertmanager) was called.
    called: Vec<AtomicU64>,
}

/// How alerts of a phase are sent.
#[derive(Clone, Copy)]
enum Pace {
    /// `rate` alerts per second, each tick sending those due.
    Rate(f64),
    /// As fast as they are taken, `batch` at a time.
    FlatOut(usize),
}

/// The batches of a phase, in order, yielded when due.
struct Schedule {
    ids: Range<usize>,
    pace: Pace,
    start: Instant,
    next: usize,
}

impl Schedule {
    fn new(ids: Range<usize>, pace: Pace) -> Self {
        Schedule {
            next: ids.start,
            ids,
            pace,
            start: Instant::now(),
        }
    }

    /// The next batch, after waiting until it is due; `None` at the end.
    async fn next_batch(&mut self) -> Option<Range<usize>> {
        if self.next >= self.ids.end {
            return None;
        }
        let end = match self.pace {
            Pace::FlatOut(batch) => (self.next + batch).min(self.ids.end),
            Pace::Rate(rate) => {
                let k = (self.next - self.ids.start) as f64;
                let due = self.start + Duration::from_secs_f64(k / rate);
                tokio::time::sleep_until(due.into()).await;
                let elapsed = self.start.elapsed().as_secs_f64();
                let due_count = (elapsed * rate).floor() as usize + 1;
                (self.ids.start + due_count).clamp(self.next + 1, self.ids.end)
            }
        };
        let batch = self.next..end;
        self.next = end;
        Some(batch)
    }
}

/// Figures of one phase.
struct Figures {
    label: String,
    sent: usize,
    received: usize,
    latency_us: Histogram<u64>,
    /// From the append's call (mcpulse: includes the log's durable append).
    from_call_us: Histogram<u64>,
    wall: Duration,
    cpu: Duration,
}

impl Figures {
    fn throughput(&self) -> f64 {
        self.received as f64 / self.wall.as_secs_f64()
    }

    fn p(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    fn print(&self, cpu_what: &str) {
        println!(
            "  {:<34} {} of {} delivered in {:.2} s: {:.0} notifications/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {cpu_what} CPU {:.2} s ({:.0} us per notification)",
            self.label,
            self.received,
            self.sent,
            self.wall.as_secs_f64(),
            self.throughput(),
            self.p(0.5),
            self.p(0.99),
            self.latency_us.max() as f64 / 1000.0,
            self.cpu.as_secs_f64(),
            self.cpu.as_secs_f64() * 1e6 / self.received.max(1) as f64,
        );
    }

    fn print_from_call(&self) {
        let ms = |q| self.from_call_us.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "  {:<34} counted from the call of the append instead (the log's fsync included): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            "",
            ms(0.5),
            ms(0.99),
            self.from_call_us.max() as f64 / 1000.0
        );
    }
}

/// Waits (bounded) for the alerts of `ids` to reach the sink, then measures the phase.
async fn settle(
    label: &str,
    sink: &Sink,
    sent: &Sent,
    ids: Range<usize>,
    timeout: Duration,
    cpu: impl Fn() -> Duration,
    cpu_before: Duration,
) -> Figures {
    let n = ids.len();
    let deadline = Instant::now() + timeout;
    let mut last = (0, Instant::now());
    loop {
        let got = sink.count(&ids);
        if got >= n {
            break;
        }
        if got != last.0 {
            last = (got, Instant::now());
        }
        if Instant::now() >= deadline || last.1.elapsed() > Duration::from_secs(15) {
            eprintln!("{label}: {got} of {n} notifications arrived; giving up waiting");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = cpu().saturating_sub(cpu_before);
    // Microseconds, 1 us to 1 hour.
    let histogram = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram");
    let (mut latency_us, mut from_call_us) = (histogram(), histogram());
    let (mut first_sent, mut last_received, mut received) = (u64::MAX, 0u64, 0usize);
    for id in ids {
        let (o, c) = (sent.origin[id].load(Relaxed), sent.called[id].load(Relaxed));
        let r = sink.received_at[id].load(Relaxed);
        if c != 0 {
            first_sent = first_sent.min(c);
        }
        if r != 0 && o != 0 {
            received += 1;
            last_received = last_received.max(r);
            latency_us.saturating_record((r.saturating_sub(o) / 1000).max(1));
            from_call_us.saturating_record((r.saturating_sub(c) / 1000).max(1));
        }
    }
    Figures {
        label: label.to_string(),
        sent: n,
        received,
        latency_us,
        from_call_us,
        wall: Duration::from_nanos(last_received.saturating_sub(first_sent).max(1)),
        cpu,
    }
}

// ---- mcpulse ----

struct Mcpulse {
    producer: Arc<dyn Producer>,
    topic: String,
    tenant_header: String,
    receivers: usize,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    supervisor: tokio::task::JoinHandle<anyhow::Result<()>>,
    archive: PathBuf,
}

impl Mcpulse {
    /// The notification stage as `mcpulse run` starts it, on a fresh data dir.
    async fn start(
        dir: &Path,
        receivers: usize,
        sink: SocketAddr,
        flush_interval: &str,
    ) -> anyhow::Result<Mcpulse> {
        let routes = dir.join("routes.yaml");
        std::fs::write(&routes, routes_yaml(receivers, sink))?;
        let yaml = format!(
            "data_dir: {}\nauth:\n  anonymous_tenant: default\nnotify:\n  routes: {}\n  flush_interval: {flush_interval}\n",
            dir.join("data").display(),
            routes.display()
        );
        let config = Config::parse(&yaml, |_| None).map_err(|e| anyhow::anyhow!(e.0))?;
        let bus = open_bus(&config).await?;
        let archive = ArchiveLocation::open(&config)?;
        let mut roles = Supervisor::new("notify", &config)?;
        start_notify(&config, &bus, &archive, &mut roles).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let supervisor = tokio::spawn(roles.run(
            BoundAddrs {
                role: "notify",
                ..BoundAddrs::default()
            },
            Some(bus.clone()),
            "bench-notify".into(),
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Mcpulse {
            producer: bus.producer(),
            topic: config.topics.alerts(),
            tenant_header: config.archive.tenant_header.clone(),
            receivers,
            stop: Some(stop),
            supervisor,
            archive: dir.join("data").join("archive"),
        })
    }

    /// Appends the alerts of `ids` to `alerts.v1` at `pace`, stamping each send.
    async fn feed(
        &self,
        ids: Range<usize>,
        pace: Pace,
        sink: &Sink,
        sent: &Sent,
    ) -> anyhow::Result<()> {
        // Encoded beforehand: serializing events is the incident stage's work.
        let mut messages: Vec<Option<Message>> = ids
            .clone()
            .map(|id| Some(alert_message(id, self.receivers, &self.tenant_header)))
            .collect();
        let base = ids.start;
        let mut schedule = Schedule::new(ids, pace);
        while let Some(batch) = schedule.next_batch().await {
            let msgs: Vec<Message> = batch
                .clone()
                .map(|id| messages[id - base].take().expect("sent once"))
                .collect();
            let at = sink.ns(Instant::now());
            for id in batch.clone() {
                sent.called[id].store(at, Relaxed);
            }
            let mut tries = 0;
            let mut msgs = Some(msgs);
            loop {
                match self
                    .producer
                    .send(&self.topic, msgs.take().expect("kept"))
                    .await
                {
                    Ok(_) => {
                        let at = sink.ns(Instant::now());
                        for id in batch.clone() {
                            sent.origin[id].store(at, Relaxed);
                        }
                        break;
                    }
                    Err(e) if e.is_retryable() && tries < 500 => {
                        tries += 1;
                        // The log refused the batch as a whole: rebuild it.
                        msgs = Some(
                            batch
                                .clone()
                                .map(|id| alert_message(id, self.receivers, &self.tenant_header))
                                .collect(),
                        );
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => return Err(e).context("appending to alerts.v1"),
                }
            }
        }
        Ok(())
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), self.supervisor)
            .await
            .context("the notification stage did not drain within 60 s")??
    }
}

// ---- Alertmanager ----

/// The Alertmanager child process, killed when dropped.
struct Alertmanager {
    child: Child,
    url: String,
    client: Client<HttpConnector, Full<Bytes>>,
    receivers: usize,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Alertmanager {
    async fn start(
        binary: &Path,
        dir: &Path,
        receivers: usize,
        sink: SocketAddr,
        group_interval: &str,
    ) -> anyhow::Result<Alertmanager> {
        let config = dir.join("alertmanager.yml");
        std::fs::write(&config, alertmanager_yaml(receivers, sink, group_interval))?;
        let storage = dir.join("am-data");
        std::fs::create_dir_all(&storage)?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.join("alertmanager.log"))?;
        let mut command = Command::new(binary);
        mcpulse::alloc::default_huge_pages_for_child(&mut command);
        let child = command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut am = Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
            receivers,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = am.child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("alertmanager.log")).unwrap_or_default();
                bail!("alertmanager exited ({status}) before it was ready:\n{log}");
            }
            let ready = async {
                let uri: Uri = format!("{}/-/ready", am.url).parse()?;
                let resp = am.client.get(uri).await?;
                anyhow::Ok(resp.status() == StatusCode::OK)
            };
            if matches!(
                tokio::time::timeout(Duration::from_secs(1), ready).await,
                Ok(Ok(true))
            ) {
                return Ok(am);
            }
            if Instant::now() >= deadline {
                bail!("alertmanager not ready on {} within 30 s", am.url);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn post(&self, body: String) -> anyhow::Result<()> {
        let request = http::Request::post(format!("{}/api/v2/alerts", self.url))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .context("POST /api/v2/alerts timed out")??;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "POST /api/v2/alerts: {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// POSTs the alerts of `ids` at `pace` (flat out: `in_flight` POSTs at once), stamping
    /// each POST's start.
    async fn feed(
        &self,
        ids: Range<usize>,
        pace: Pace,
        in_flight: usize,
        sink: &Sink,
        sent: &Sent,
    ) -> anyhow::Result<()> {
        let base = ids.start;
        let alerts: Vec<String> = ids.clone().map(|id| am_alert(id, self.receivers)).collect();
        let body = |batch: &Range<usize>| {
            let parts: Vec<&str> = batch.clone().map(|id| alerts[id - base].as_str()).collect();
            format!("[{}]", parts.join(","))
        };
        let post = |batch: Range<usize>, body: String| async move {
            let at = sink.ns(Instant::now());
            for id in batch {
                sent.origin[id].store(at, Relaxed);
                sent.called[id].store(at, Relaxed);
            }
            self.post(body).await
        };
        let mut schedule = Schedule::new(ids, pace);
        match pace {
            Pace::Rate(_) => {
                while let Some(batch) = schedule.next_batch().await {
                    let b = body(&batch);
                    post(batch, b).await?;
                }
            }
            Pace::FlatOut(_) => {
                let mut batches = Vec::new();
                while let Some(batch) = schedule.next_batch().await {
                    let b = body(&batch);
                    batches.push((batch, b));
                }
                let mut posts = futures::stream::iter(batches)
                    .map(|(batch, b)| post(batch, b))
                    .buffer_unordered(in_flight.max(1));
                while let Some(result) = posts.next().await {
                    result?;
                }
            }
        }
        Ok(())
    }

    /// CPU time (user + system) and peak RSS (MB) of the process.
    fn usage(&self) -> (Duration, f64) {
        let pid = self.child.id();
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                // Fields after the parenthesised command name; utime and stime are 14 and 15.
                let rest = s.rsplit_once(')')?.1;
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
            })
            .map(|t| Duration::from_secs_f64(t / ticks))
            .unwrap_or_default();
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0);
        (cpu, rss)
    }
}

// ---- main ----

fn main() -> ExitCode {
    // The allocator as `mcpulse run` sets it up (main.rs); Alertmanager is started with
    // the system's defaults again.
    mcpulse::alloc::tune();
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    if !args.no_alertmanager && !args.alertmanager.exists() {
        eprintln!(
            "bench-notify: {} not found: install Debian's prometheus-alertmanager (scripts/test-deps.sh does), pass --alertmanager PATH, or --no-alertmanager for the mcpulse side alone",
            args.alertmanager.display()
        );
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(bench(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("bench-notify: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every phase; `Ok(false)` if a notification was lost, duplicated or misrouted.
async fn bench(args: Args) -> anyhow::Result<bool> {
    anyhow::ensure!(args.receivers > 0, "--receivers must be at least 1");
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    let r = args.receivers;
    // Global alert ids: per system a warm-up (one per receiver), a paced and a flat-out range.
    let per_system = r + args.paced_events + args.events;
    let ranges = |system: usize| {
        let base = system * per_system;
        (
            base..base + r,
            base + r..base + r + args.paced_events,
            base + r + args.paced_events..base + per_system,
        )
    };
    let total = 2 * per_system;
    let sink = Arc::new(Sink {
        base: Instant::now(),
        receivers: r,
        received_at: (0..total).map(|_| AtomicU64::new(0)).collect(),
        duplicates: AtomicU64::new(0),
        misrouted: AtomicU64::new(0),
        unknown: AtomicU64::new(0),
        cpu_ns: AtomicU64::new(0),
    });
    let stamps = || (0..total).map(|_| AtomicU64::new(0)).collect();
    let sent = Sent {
        origin: stamps(),
        called: stamps(),
    };
    let addr = start_sink(sink.clone())?;
    let timeout = Duration::from_secs(args.timeout_secs);
    let dir = tempfile::tempdir()?;
    println!(
        "notification delivery: {r} webhook receivers on a local sink ({addr}); per system {} warm-up alerts (one per receiver, not measured), {} paced at {}/s, {} flat out (batches of {})",
        r, args.paced_events, args.rate, args.events, args.batch
    );
    let sink_cpu = || Duration::from_nanos(sink.cpu_ns.load(Relaxed));
    // This process minus the sink's thread: the notification stage (and the feeder).
    let own_cpu = || process_cpu().saturating_sub(sink_cpu());

    // mcpulse.
    let (warm, paced, flat) = ranges(0);
    let started = Instant::now();
    let mcpulse = Mcpulse::start(dir.path(), r, addr, &args.flush_interval).await?;
    println!(
        "mcpulse: notification stage started in {:.2} s (routes.yaml with {r} receivers, embedded log, archive in a temp dir, notify.flush_interval {})",
        started.elapsed().as_secs_f64(),
        args.flush_interval
    );
    mcpulse
        .feed(warm.clone(), Pace::FlatOut(args.batch), &sink, &sent)
        .await?;
    let c0 = own_cpu();
    settle("mcpulse warm-up", &sink, &sent, warm, timeout, &own_cpu, c0).await;
    let c0 = own_cpu();
    mcpulse
        .feed(paced.clone(), Pace::Rate(args.rate), &sink, &sent)
        .await?;
    let m_paced = settle(
        &format!("paced ({}/s)", args.rate),
        &sink,
        &sent,
        paced,
        timeout,
        &own_cpu,
        c0,
    )
    .await;
    let c0 = own_cpu();
    mcpulse
        .feed(flat.clone(), Pace::FlatOut(args.batch), &sink, &sent)
        .await?;
    let m_flat = settle("flat out", &sink, &sent, flat, timeout, &own_cpu, c0).await;
    let archive = mcpulse.archive.clone();
    mcpulse.stop().await?;
    let row_files = count_files(&archive.join("notifications"), "parquet");
    let checkpoints = count_files(&archive.join("_state").join("notify"), "json");
    println!("mcpulse (the notify stage in this process; CPU excludes the sink's thread):");
    m_paced.print("stage");
    m_paced.print_from_call();
    m_flat.print("stage");
    println!(
        "  notifications table: {row_files} Parquet objects; notification log: {checkpoints} checkpoint files; peak RSS of this process {:.0} MB",
        peak_rss_mb()
    );

    let mut ok = true;
    if !args.no_alertmanager {
        let (warm, paced, flat) = ranges(1);
        let started = Instant::now();
        let am = Alertmanager::start(
            &args.alertmanager,
            dir.path(),
            r,
            addr,
            &args.am_group_interval,
        )
        .await?;
        println!(
            "alertmanager: {} ready in {:.2} s (group_by ['...'], group_wait 0s, group_interval {}, no cluster)",
            args.alertmanager.display(),
            started.elapsed().as_secs_f64(),
            args.am_group_interval
        );
        let am_cpu = || am.usage().0;
        am.feed(warm.clone(), Pace::FlatOut(args.batch), 1, &sink, &sent)
            .await?;
        let c0 = am_cpu();
        settle(
            "alertmanager warm-up",
            &sink,
            &sent,
            warm,
            timeout,
            &am_cpu,
            c0,
        )
        .await;
        let c0 = am_cpu();
        am.feed(paced.clone(), Pace::Rate(args.rate), 1, &sink, &sent)
            .await?;
        let a_paced = settle(
            &format!("paced ({}/s)", args.rate),
            &sink,
            &sent,
            paced,
            timeout,
            &am_cpu,
            c0,
        )
        .await;
        let c0 = am_cpu();
        am.feed(
            flat.clone(),
            Pace::FlatOut(args.batch),
            args.posts_in_flight,
            &sink,
            &sent,
        )
        .await?;
        let a_flat = settle("flat out", &sink, &sent, flat, timeout, &am_cpu, c0).await;
        let (_, am_rss) = am.usage();
        drop(am);
        println!("alertmanager (its own process):");
        a_paced.print("alertmanager");
        a_flat.print("alertmanager");
        println!("  peak RSS of alertmanager {am_rss:.0} MB");

        let p99 = m_paced.p(0.99) / a_paced.p(0.99);
        let p50 = m_paced.p(0.5) / a_paced.p(0.5);
        let tput = m_flat.throughput() / a_flat.throughput();
        println!("ratios (mcpulse / alertmanager):");
        println!(
            "  p99 latency at {}/s: {:.3} ({:.2} ms / {:.2} ms) (target: <= 0.25) {}",
            args.rate,
            p99,
            m_paced.p(0.99),
            a_paced.p(0.99),
            if p99 <= 0.25 { "met" } else { "NOT MET" }
        );
        println!("  p50 latency at {}/s: {:.3}", args.rate, p50);
        println!(
            "  flat-out throughput: {:.1}x ({:.0} / {:.0} notifications/s) (target: >= 5x) {}",
            tput,
            m_flat.throughput(),
            a_flat.throughput(),
            if tput >= 5.0 { "met" } else { "NOT MET" }
        );
        ok &= a_paced.received == a_paced.sent && a_flat.received == a_flat.sent;
    }
    ok &= m_paced.received == m_paced.sent && m_flat.received == m_flat.sent;
    let (dup, mis, unk) = (
        sink.duplicates.load(Relaxed),
        sink.misrouted.load(Relaxed),
        sink.unknown.load(Relaxed),
    );
    println!(
        "sink: {dup} duplicate, {mis} misrouted, {unk} unrecognised requests; sink thread CPU {:.2} s",
        sink_cpu().as_secs_f64()
    );
    ok &= dup == 0 && mis == 0 && unk == 0;
    if !ok {
        eprintln!("bench-notify: notifications were lost, duplicated or misrouted (see above)");
    }
    Ok(ok)
}

fn count_files(dir: &Path, ext: &str) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == ext) {
                n += 1;
            }
        }
    }
    n
}

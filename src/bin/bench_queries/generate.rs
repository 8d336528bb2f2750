//! The benchmark's history: `days` of a fleet of `servers` MCP servers spread over
//! `tenants` tenants, probed every minute from three regions, written with the archive's
//! own writers ([`TableWriter`] over [`ParquetEncoder`], [`PartitionKey`] folders) so the
//! objects are the production ones: zstd, (server, time) sort, row groups, footer
//! statistics and time bounds.
//!
//! Every table is filled the way the pipeline fills it:
//!
//! * `probes`: `ProbeResult`s decoded by the archiver's own [`ProbesFormat`] (the JSON a
//!   prober sends), failing while the server has an outage seen from that region;
//! * `signals`: the signals operator's row builder ([`signals::table::batches`]) over
//!   1-minute windows: one per (server, region) from the probes, one per (server, tool,
//!   method) with calls for the instrumented servers, with real HdrHistograms;
//! * `alerts`: the incident stage's rows ([`incidents::rows::batches`]) of the outages —
//!   blips, triggers, updates, resolves, and storms with their suppressed members;
//! * `drift`: the drift operator's rows ([`drift::to_batch`]) of tool-list changes;
//! * `notifications`: the notification stage's rows ([`notify::rows::batches`]) of each
//!   transition routed to the tenant's receivers, with retries and failures.
//!
//! Each hour folder holds one object per table, as compaction leaves a closed hour.
//! Everything derives from a seed: the same arguments give the same rows.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use mcpulse_bus::TopicPartition;
use mcpulse_processors::archive::{
    ArchiveConfig, ArchiveTarget, PartitionKey, PartitionedRows, ProbesFormat, TableFormat,
    TableWriter, file_name,
};
use mcpulse_processors::drift::{DriftRow, to_batch as drift_batch};
use mcpulse_processors::incidents::rows::batches as alert_batches;
use mcpulse_processors::signals::row::{SeriesKey, SignalRow, SignalSource};
use mcpulse_processors::signals::table::batches as signal_batches;
use mcpulse_processors::stats::RuntimeStats;
use mcpulse_schemas::alert::OPERATOR_TENANT;
use mcpulse_schemas::{
    AlertAction, AlertEvent, AlertStatus, FailureReason, Finding, Phase, ProbeResult, ProtocolEra,
    Severity, StormSummary, Table,
};
use mcpulse_sinks::notify::rows::{Addressee, NotificationRow, Status, batches as note_batches};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

pub const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-southeast"];
const PROVIDERS: [&str; 6] = ["render", "fly", "vercel", "aws", "gcp", "cloudflare"];

/// What to generate.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Spec {
    pub servers: usize,
    pub days: u32,
    pub tenants: usize,
    pub seed: u64,
    /// The first minute after the history (minutes since the epoch): the generation time.
    pub end_minute: i64,
}

impl Spec {
    pub fn start_minute(&self) -> i64 {
        self.end_minute - i64::from(self.days) * 1440
    }
}

/// What was written (kept in `dataset.json` beside the tables).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Written {
    pub rows: BTreeMap<String, u64>,
    pub files: BTreeMap<String, u64>,
    pub bytes: BTreeMap<String, u64>,
    pub seconds: f64,
    pub threads: usize,
}

/// `dataset.json`: the spec and what was written; present only once generation finished.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dataset {
    pub spec: Spec,
    pub written: Written,
    /// The tenant with the most servers (the one the tenant-scoped runs use).
    pub largest_tenant: String,
}

pub const DATASET_FILE: &str = "dataset.json";

// ---------------------------------------------------------------------------------------
// Randomness: SplitMix64, seeded per subject so every unit of work is reproducible alone.
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, parts: &[u64]) -> Self {
        let mut r = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
        for p in parts {
            r.0 ^= p.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            r.next();
        }
        r
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.f() < p
    }

    pub fn normal(&mut self) -> f64 {
        let u1 = self.f().max(1e-12);
        let u2 = self.f();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal around `median` with shape `sigma`.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda > 30.0 {
            return (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64;
        }
        let limit = (-lambda).exp();
        let mut k = 0;
        let mut p = self.f();
        while p > limit {
            k += 1;
            p *= self.f();
        }
        k
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------------------
// The fleet.
// ---------------------------------------------------------------------------------------

pub struct Server {
    pub id: usize,
    pub tenant: usize,
    pub name: String,
    url: String,
    provider: usize,
    /// Median probe time from each region, ms.
    rtt_ms: [f64; 3],
    /// Server processing time, ms.
    work_ms: f64,
    era: ProtocolEra,
    version: &'static str,
    team: String,
    /// Tools and their mean calls per minute (instrumented servers only call tools in
    /// `signals`; every server lists them to the prober).
    tools: Vec<(String, f64, f64)>,
    instrumented: bool,
    /// Minute-of-day offset of the tenant's busy hours.
    tz_minutes: i64,
    tls_rotation_days: i64,
}

/// A stretch of failing probes of one server from some regions.
#[derive(Clone, Debug)]
pub struct Outage {
    pub start: i64,
    /// First healthy minute.
    pub end: i64,
    /// Regions failing (bit per region).
    pub regions: u8,
    pub reason: FailureReason,
    /// The storm it belongs to.
    pub storm: Option<usize>,
}

/// A tool-list change of one server.
#[derive(Clone, Debug)]
struct ToolChange {
    minute: i64,
    /// Version of the tool list from this minute on.
    version: u32,
}

struct Storm {
    start: i64,
    end: i64,
    provider: usize,
    region: Option<usize>,
    reason: FailureReason,
    id: String,
}

pub struct World {
    pub spec: Spec,
    pub tenants: Vec<String>,
    pub servers: Vec<Server>,
    pub by_tenant: Vec<Vec<usize>>,
    /// Per server, sorted by start.
    outages: Vec<Vec<Outage>>,
    changes: Vec<Vec<ToolChange>>,
    /// The rows of the small tables, per (tenant index, day); storms under tenant index
    /// `tenants.len()` (the operator partition).
    small: HashMap<(usize, i64), SmallRows>,
}

#[derive(Default)]
struct SmallRows {
    alerts: Vec<AlertEvent>,
    drift: Vec<DriftRow>,
    notes: Vec<NotificationRow>,
}

fn minute_time(minute: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(minute * 60, 0)
        .single()
        .expect("in range")
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

const WORDS: [&str; 24] = [
    "weather",
    "search",
    "github",
    "jira",
    "slack",
    "files",
    "calendar",
    "maps",
    "billing",
    "crm",
    "docs",
    "vector",
    "browser",
    "sql",
    "mail",
    "notes",
    "deploy",
    "logs",
    "ci",
    "k8s",
    "pay",
    "shop",
    "translate",
    "images",
];
const VERBS: [&str; 12] = [
    "get",
    "list",
    "search",
    "create",
    "update",
    "delete",
    "run",
    "fetch",
    "send",
    "query",
    "summarize",
    "export",
];

impl World {
    pub fn new(spec: Spec) -> Self {
        let seed = spec.seed;
        let tenants: Vec<String> = (0..spec.tenants)
            .map(|t| format!("tenant-{t:03}"))
            .collect();
        // A few large tenants and a long tail: weight 1/(t+1)^0.7, every tenant at least one.
        let weights: Vec<f64> = (0..spec.tenants)
            .map(|t| 1.0 / ((t + 1) as f64).powf(0.7))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut by_tenant: Vec<Vec<usize>> = vec![Vec::new(); spec.tenants];
        let mut servers = Vec::with_capacity(spec.servers);
        let mut quota: Vec<usize> = weights
            .iter()
            .map(|w| ((w / total) * spec.servers as f64).floor().max(1.0) as usize)
            .collect();
        // Hand out what rounding left (or take back what the minimum of one added).
        let mut assigned: usize = quota.iter().sum();
        let mut t = 0;
        while assigned < spec.servers {
            quota[t % spec.tenants] += 1;
            assigned += 1;
            t += 1;
        }
        while assigned > spec.servers {
            if let Some(i) = (0..spec.tenants).rev().find(|&i| quota[i] > 1) {
                quota[i] -= 1;
                assigned -= 1;
            } else {
                break;
            }
        }
        let mut id = 0;
        for (tenant, &n) in quota.iter().enumerate() {
            let mut trng = Rng::new(seed, &[1, tenant as u64]);
            let tz_minutes = trng.below(24) as i64 * 60;
            for _ in 0..n {
                if id >= spec.servers {
                    break;
                }
                let mut r = Rng::new(seed, &[2, id as u64]);
                let word = WORDS[id % WORDS.len()];
                let name = format!("{word}-{id:04}");
                let provider = r.below(PROVIDERS.len() as u64) as usize;
                let home = r.below(3) as usize;
                let rtt_ms = std::array::from_fn(|region| {
                    if region == home {
                        r.lognormal(12.0, 0.4)
                    } else {
                        r.lognormal(90.0, 0.4)
                    }
                });
                let n_tools = 2 + r.below(8) as usize;
                let tools = (0..n_tools)
                    .map(|k| {
                        let tool = format!("{}_{}", VERBS[(id + k * 5) % VERBS.len()], word);
                        let rate = r.lognormal(0.25, 1.2).min(60.0);
                        let median_ms = r.lognormal(60.0, 0.9);
                        (tool, rate, median_ms)
                    })
                    .collect();
                let era = match r.below(10) {
                    0..=3 => ProtocolEra::Modern,
                    4..=8 => ProtocolEra::StreamableHttp,
                    _ => ProtocolEra::HttpSse,
                };
                let version = match era {
                    ProtocolEra::Modern => "2026-07-28",
                    ProtocolEra::StreamableHttp => {
                        *r.pick(&["2025-03-26", "2025-06-18", "2025-11-25"])
                    }
                    ProtocolEra::HttpSse => "2024-11-05",
                };
                servers.push(Server {
                    id,
                    tenant,
                    url: format!("https://{name}.{}.example.com/mcp", PROVIDERS[provider]),
                    name,
                    provider,
                    rtt_ms,
                    work_ms: r.lognormal(25.0, 0.8),
                    era,
                    version,
                    team: format!("team-{}", r.below(4)),
                    tools,
                    instrumented: r.chance(0.6),
                    tz_minutes,
                    tls_rotation_days: 60 + r.below(30) as i64,
                });
                by_tenant[tenant].push(id);
                id += 1;
            }
        }
        let mut world = World {
            spec,
            tenants,
            servers,
            by_tenant,
            outages: Vec::new(),
            changes: Vec::new(),
            small: HashMap::new(),
        };
        world.plan_outages();
        world.plan_changes();
        world
    }

    pub fn largest_tenant(&self) -> usize {
        (0..self.tenants.len())
            .max_by_key(|&t| (self.by_tenant[t].len(), std::cmp::Reverse(t)))
            .unwrap_or(0)
    }

    fn plan_outages(&mut self) {
        let spec = &self.spec;
        let (start, end) = (spec.start_minute(), spec.end_minute);
        let span = (end - start) as u64;
        let mut outages: Vec<Vec<Outage>> = vec![Vec::new(); self.servers.len()];
        let reasons = [
            (FailureReason::TcpRefused, 25),
            (FailureReason::Timeout, 25),
            (FailureReason::Http5xx, 25),
            (FailureReason::InitializeError, 10),
            (FailureReason::DnsFailure, 5),
            (FailureReason::TlsError, 5),
            (FailureReason::ConnectTimeout, 5),
        ];
        let pick_reason = |r: &mut Rng| {
            let mut x = r.below(100);
            for (reason, w) in reasons {
                if x < w {
                    return reason;
                }
                x -= w;
            }
            FailureReason::TcpRefused
        };
        for (i, server) in self.servers.iter().enumerate() {
            let mut r = Rng::new(spec.seed, &[3, server.id as u64]);
            // Most servers are solid, some flaky: 0.1 to ~3 outages a day.
            let per_day = r.lognormal(0.6, 1.0).min(4.0);
            let n = r.poisson(per_day * f64::from(spec.days));
            for _ in 0..n {
                let s = start + r.below(span) as i64;
                let minutes = if r.chance(0.3) {
                    1 + r.below(2) as i64 // a blip
                } else {
                    r.lognormal(14.0, 1.0).clamp(4.0, 360.0) as i64
                };
                let regions = if r.chance(0.6) {
                    0b111
                } else {
                    1 << r.below(3)
                };
                outages[i].push(Outage {
                    start: s,
                    end: (s + minutes).min(end),
                    regions,
                    reason: pick_reason(&mut r),
                    storm: None,
                });
            }
        }
        // Storms: a provider (in one region or everywhere) failing for many servers at once.
        let mut r = Rng::new(spec.seed, &[4]);
        let n_storms = (spec.days as usize / 5).max(1);
        let mut storms = Vec::new();
        for k in 0..n_storms {
            let s = start + r.below(span.saturating_sub(120).max(1)) as i64;
            let storm = Storm {
                start: s,
                end: (s + 15 + r.below(75) as i64).min(end),
                provider: r.below(PROVIDERS.len() as u64) as usize,
                region: r.chance(0.5).then(|| r.below(3) as usize),
                reason: *r.pick(&[
                    FailureReason::ConnectTimeout,
                    FailureReason::Http5xx,
                    FailureReason::TcpRefused,
                ]),
                id: Finding::derive_id(&["storm", &k.to_string(), &s.to_string()]),
            };
            for (i, server) in self.servers.iter().enumerate() {
                if server.provider == storm.provider && r.chance(0.9) {
                    outages[i].push(Outage {
                        start: storm.start + r.below(3) as i64,
                        end: storm.end - r.below(3) as i64,
                        regions: storm.region.map_or(0b111, |g| 1 << g),
                        reason: storm.reason,
                        storm: Some(storms.len()),
                    });
                }
            }
            storms.push(storm);
        }
        for list in &mut outages {
            list.sort_by_key(|o| o.start);
        }
        // The alert transitions and their notifications.
        let mut small: HashMap<(usize, i64), SmallRows> = HashMap::new();
        let day_of = |t: DateTime<Utc>| t.timestamp().div_euclid(86_400);
        let add_alert =
            |small: &mut HashMap<(usize, i64), SmallRows>, tenant: usize, e: AlertEvent| {
                small
                    .entry((tenant, day_of(e.time)))
                    .or_default()
                    .alerts
                    .push(e);
            };
        let operator = self.tenants.len();
        for (k, storm) in storms.iter().enumerate() {
            let members: Vec<usize> = (0..self.servers.len())
                .filter(|&i| outages[i].iter().any(|o| o.storm == Some(k)))
                .collect();
            let tenants: std::collections::BTreeSet<usize> =
                members.iter().map(|&i| self.servers[i].tenant).collect();
            let summary = StormSummary {
                provider: PROVIDERS[storm.provider].to_string(),
                region: storm
                    .region
                    .map_or("global".into(), |g| REGIONS[g].to_string()),
                tenants: tenants.len() as u64,
                members: members.len() as u64,
            };
            let opened = minute_time(storm.start);
            let dedup = format!(
                "mcpulse/{OPERATOR_TENANT}/storm/{}/{}",
                summary.provider, summary.region
            );
            let ev = |action: AlertAction, status: AlertStatus, at: DateTime<Utc>| {
                let resolved = (action == AlertAction::Resolve).then_some(at);
                AlertEvent {
                    event_id: Finding::derive_id(&[&storm.id, action.as_str(), &rfc3339(at)]),
                    incident_id: storm.id.clone(),
                    dedup_key: dedup.clone(),
                    action,
                    status,
                    tenant: OPERATOR_TENANT.to_string(),
                    server: None,
                    class: "storm".into(),
                    severity: Severity::P1,
                    scope: if storm.region.is_some() {
                        "regional"
                    } else {
                        "global"
                    }
                    .into(),
                    reason: Some(reason_str(storm.reason).into()),
                    regions: storm
                        .region
                        .map_or(REGIONS.iter().map(|r| r.to_string()).collect(), |g| {
                            vec![REGIONS[g].to_string()]
                        }),
                    time: at,
                    opened_at: opened,
                    resolved_at: resolved,
                    duration_s: resolved.map(|r| (r - opened).num_seconds() as u64),
                    storm_id: None,
                    storm: Some(summary.clone()),
                    provider_outage: None,
                    summary: format!(
                        "Storm: {} {} failing for {} servers of {} tenants",
                        summary.provider, summary.region, summary.members, summary.tenants
                    ),
                    evidence: serde_json::json!({"members": summary.members, "tenants": summary.tenants}),
                }
            };
            let trigger = ev(
                AlertAction::Trigger,
                AlertStatus::Open,
                opened + chrono::Duration::minutes(3),
            );
            let update = ev(
                AlertAction::Update,
                AlertStatus::Open,
                opened + chrono::Duration::minutes(5),
            );
            let resolve = ev(
                AlertAction::Resolve,
                AlertStatus::Resolved,
                minute_time(storm.end) + chrono::Duration::minutes(2),
            );
            for e in [trigger, update, resolve] {
                add_alert(&mut small, operator, e);
            }
        }
        // Per server outage: blips (P4), incidents (trigger, update, resolve), storm members
        // (suppress, resolve).
        for (i, server) in self.servers.iter().enumerate() {
            let tenant = &self.tenants[server.tenant];
            let mut r = Rng::new(spec.seed, &[5, server.id as u64]);
            for o in &outages[i] {
                let class = class_of(o.reason);
                let global = o.regions.count_ones() >= 2;
                let dedup = format!("mcpulse/{tenant}/{}/{class}", server.name);
                let opened = minute_time(o.start);
                let incident = Finding::derive_id(&[&dedup, &rfc3339(opened)]);
                let regions: Vec<String> = (0..3)
                    .filter(|g| o.regions & (1 << g) != 0)
                    .map(|g| REGIONS[g].to_string())
                    .collect();
                let severity = match (class, global) {
                    ("unreachable" | "tls" | "protocol", true) => Severity::P1,
                    _ => Severity::P2,
                };
                let minutes = o.end - o.start;
                let ev = |action: AlertAction,
                          status: AlertStatus,
                          at: DateTime<Utc>,
                          severity: Severity| {
                    let resolved =
                        matches!(action, AlertAction::Resolve | AlertAction::Blip).then_some(at);
                    AlertEvent {
                        event_id: Finding::derive_id(&[&incident, action.as_str(), &rfc3339(at)]),
                        incident_id: incident.clone(),
                        dedup_key: dedup.clone(),
                        action,
                        status,
                        tenant: tenant.clone(),
                        server: Some(server.name.clone()),
                        class: class.into(),
                        severity,
                        scope: if global { "global" } else { "regional" }.into(),
                        reason: Some(reason_str(o.reason).into()),
                        regions: regions.clone(),
                        time: at,
                        opened_at: opened,
                        resolved_at: resolved,
                        duration_s: resolved.map(|r| (r - opened).num_seconds() as u64),
                        storm_id: o.storm.map(|k| storms[k].id.clone()),
                        storm: None,
                        provider_outage: None,
                        summary: format!(
                            "{} {class} from {} ({})",
                            server.name,
                            regions.join(", "),
                            reason_str(o.reason)
                        ),
                        evidence: serde_json::json!({
                            "minute": rfc3339(at),
                            "failing": regions,
                            "regions": 3,
                            "reason": reason_str(o.reason),
                        }),
                    }
                };
                let detect = chrono::Duration::seconds(180 + r.below(60) as i64);
                let resolve_at =
                    minute_time(o.end) + chrono::Duration::seconds(120 + r.below(60) as i64);
                let events = if o.storm.is_some() {
                    vec![
                        ev(
                            AlertAction::Suppress,
                            AlertStatus::Suppressed,
                            opened + detect,
                            severity,
                        ),
                        ev(
                            AlertAction::Resolve,
                            AlertStatus::Resolved,
                            resolve_at,
                            severity,
                        ),
                    ]
                } else if minutes < 3 {
                    vec![ev(
                        AlertAction::Blip,
                        AlertStatus::Resolved,
                        minute_time(o.end) + chrono::Duration::seconds(30),
                        Severity::P4,
                    )]
                } else {
                    let mut v = vec![ev(
                        AlertAction::Trigger,
                        AlertStatus::Open,
                        opened + detect,
                        severity,
                    )];
                    if minutes > 30 && r.chance(0.4) {
                        let mid = opened + chrono::Duration::minutes(minutes / 2);
                        v.push(ev(
                            AlertAction::Update,
                            AlertStatus::Flapping,
                            mid,
                            severity,
                        ));
                    }
                    v.push(ev(
                        AlertAction::Resolve,
                        AlertStatus::Resolved,
                        resolve_at,
                        severity,
                    ));
                    v
                };
                for e in events {
                    for note in notifications(&e, server, &mut r) {
                        small
                            .entry((server.tenant, day_of(note.time)))
                            .or_default()
                            .notes
                            .push(note);
                    }
                    add_alert(&mut small, server.tenant, e);
                }
            }
        }
        self.outages = outages;
        self.small = small;
    }

    fn plan_changes(&mut self) {
        let spec = &self.spec;
        let span = (spec.end_minute - spec.start_minute()) as u64;
        let mut changes = Vec::with_capacity(self.servers.len());
        for server in &self.servers {
            let mut r = Rng::new(spec.seed, &[6, server.id as u64]);
            let n = r.poisson(f64::from(spec.days) / 12.0);
            let mut minutes: Vec<i64> = (0..n)
                .map(|_| spec.start_minute() + 1 + r.below(span - 1) as i64)
                .collect();
            minutes.sort_unstable();
            let list: Vec<ToolChange> = minutes
                .iter()
                .enumerate()
                .map(|(k, &minute)| ToolChange {
                    minute,
                    version: k as u32 + 1,
                })
                .collect();
            let tenant = &self.tenants[server.tenant];
            for c in &list {
                let time = minute_time(c.minute) + chrono::Duration::minutes(2);
                let (old, new) = (c.version - 1, c.version);
                let kind_roll = r.below(10);
                let (worst, b, a, cos) = match kind_roll {
                    0..=2 => ("breaking", 1 + r.below(2) as i32, r.below(2) as i32, 0),
                    3..=7 => ("additive", 0, 1 + r.below(3) as i32, r.below(2) as i32),
                    _ => ("cosmetic", 0, 0, 1 + r.below(3) as i32),
                };
                let tool = &server.tools[r.below(server.tools.len() as u64) as usize].0;
                let changes_json = serde_json::json!([
                    {"tool": tool, "kind": if worst == "breaking" { "required_parameter_added" } else if worst == "additive" { "optional_parameter_added" } else { "description_changed" }, "class": worst, "path": format!("{tool}.inputSchema.properties.options")}
                ])
                .to_string();
                let n_tools = server.tools.len() as i32;
                let row = DriftRow {
                    tenant: tenant.clone(),
                    time,
                    server: server.name.clone(),
                    kind: "schema_drift".into(),
                    old_hash: Some(tools_hash(server, old)),
                    new_hash: Some(tools_hash(server, new)),
                    worst: Some(worst.into()),
                    breaking: Some(b),
                    additive: Some(a),
                    cosmetic: Some(cos),
                    changes_json: Some(changes_json),
                    old_tool_count: Some(n_tools),
                    new_tool_count: Some(n_tools),
                    detail: Some(format!("{b} breaking, {a} additive, {cos} cosmetic")),
                };
                let day = time.timestamp().div_euclid(86_400);
                self.small
                    .entry((server.tenant, day))
                    .or_default()
                    .drift
                    .push(row.clone());
                // Now and then the regions disagree for a while before converging.
                if r.chance(0.15) {
                    let mut fleet = row;
                    fleet.kind = "fleet_inconsistent".into();
                    fleet.time = time + chrono::Duration::minutes(1);
                    fleet.worst = None;
                    fleet.breaking = None;
                    fleet.additive = None;
                    fleet.cosmetic = None;
                    fleet.changes_json = None;
                    fleet.detail = Some("regions report different tool lists".into());
                    self.small
                        .entry((server.tenant, day))
                        .or_default()
                        .drift
                        .push(fleet);
                }
            }
            changes.push(list);
        }
        self.changes = changes;
    }

    /// Units of work: (tenant index, day); the operator partition is `tenants.len()`.
    pub fn units(&self) -> Vec<(usize, i64)> {
        let first_day = self.spec.start_minute().div_euclid(1440);
        let last_day = (self.spec.end_minute - 1).div_euclid(1440);
        let mut units = Vec::new();
        for day in first_day..=last_day {
            for t in 0..self.tenants.len() {
                units.push((t, day));
            }
        }
        let operator = self.tenants.len();
        let mut extra: Vec<(usize, i64)> = self
            .small
            .keys()
            .filter(|(t, _)| *t == operator)
            .copied()
            .collect();
        extra.sort_unstable();
        units.extend(extra);
        units
    }
}

fn reason_str(r: FailureReason) -> &'static str {
    match r {
        FailureReason::DnsFailure => "dns_failure",
        FailureReason::TcpRefused => "tcp_refused",
        FailureReason::ConnectTimeout => "connect_timeout",
        FailureReason::TlsError => "tls_error",
        FailureReason::Http5xx => "http_5xx",
        FailureReason::InitializeError => "initialize_error",
        FailureReason::Timeout => "timeout",
        _ => "protocol_version_mismatch",
    }
}

fn class_of(r: FailureReason) -> &'static str {
    match r {
        FailureReason::DnsFailure | FailureReason::TcpRefused | FailureReason::ConnectTimeout => {
            "unreachable"
        }
        FailureReason::TlsError => "tls",
        FailureReason::Http5xx => "server_error",
        FailureReason::Timeout => "timeout",
        _ => "protocol",
    }
}

fn tools_hash(server: &Server, version: u32) -> String {
    let a = Finding::derive_id(&["tools", &server.name, &version.to_string()]);
    let b = Finding::derive_id(&["tools2", &server.name, &version.to_string()]);
    format!("{a}{b}")
}

/// The notifications of one transition: the tenant's routes by severity, each receiver
/// delivered once (sometimes after retries, rarely dead-lettered), muted or silenced now
/// and then.
fn notifications(e: &AlertEvent, server: &Server, r: &mut Rng) -> Vec<NotificationRow> {
    let tenant = &e.tenant;
    let mut to: Vec<Addressee> = Vec::new();
    let route = |receiver: String, integration: &str, destination: String| Addressee {
        route_id: format!("{receiver}-route"),
        receiver,
        integration: integration.into(),
        destination,
    };
    match e.action {
        AlertAction::Blip => {}
        AlertAction::Suppress => to.push(route(
            format!("{tenant}-chat"),
            "discord",
            format!("discord:webhook/{}", server.tenant * 7 + 1000),
        )),
        _ => {
            if matches!(e.severity, Severity::P1 | Severity::P2) {
                if server.tenant.is_multiple_of(3) {
                    to.push(route(
                        format!("{tenant}-oncall"),
                        "opsgenie",
                        format!("opsgenie:api.opsgenie.com:{:08x}", server.tenant * 31),
                    ));
                } else {
                    to.push(route(
                        format!("{tenant}-oncall"),
                        "pagerduty",
                        format!("pagerduty:events.pagerduty.com:{:08x}", server.tenant * 17),
                    ));
                }
            }
            to.push(route(
                format!("{tenant}-chat"),
                "discord",
                format!("discord:webhook/{}", server.tenant * 7 + 1000),
            ));
            if e.severity == Severity::P1 {
                to.push(route(
                    format!("{}-{tenant}", server.team),
                    "email",
                    format!(
                        "email:smtp.example.com:{}@{tenant}.example.com",
                        server.team
                    ),
                ));
            }
        }
    }
    let mut out = Vec::new();
    for addressee in to {
        let base = NotificationRow {
            tenant: tenant.clone(),
            time: e.time,
            attempted_at: e.time,
            event_id: e.event_id.clone(),
            incident_id: e.incident_id.clone(),
            dedup_key: e.dedup_key.clone(),
            action: e.action.as_str().to_string(),
            repeat: false,
            server: server.name.clone(),
            severity: e.severity.as_str().to_string(),
            to: addressee,
            attempt: 0,
            status: Status::Sent,
            latency_ms: None,
            error: None,
        };
        let roll = r.below(1000);
        let statuses: &[Status] = if roll < 15 {
            &[Status::Muted]
        } else if roll < 30 {
            &[Status::Silenced]
        } else if roll < 35 {
            &[
                Status::Retry,
                Status::Retry,
                Status::Retry,
                Status::Retry,
                Status::Failed,
            ]
        } else if roll < 90 {
            &[Status::Retry, Status::Sent]
        } else {
            &[Status::Sent]
        };
        let mut at = e.time + chrono::Duration::milliseconds(5 + r.below(200) as i64);
        for (k, &status) in statuses.iter().enumerate() {
            let mut row = base.clone();
            row.status = status;
            if matches!(status, Status::Muted | Status::Silenced) {
                row.error = Some(format!("{} by the route's time intervals", status.as_str()));
            } else {
                let latency = r.lognormal(180.0, 0.7);
                row.attempt = k as u32 + 1;
                row.latency_ms = Some(latency);
                row.attempted_at = at;
                at += chrono::Duration::milliseconds(latency as i64 + (1000 << k.min(6)));
                if status != Status::Sent {
                    row.error = Some("HTTP 503 from the receiver".into());
                }
            }
            out.push(row);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Rows of one hour of one tenant.
// ---------------------------------------------------------------------------------------

/// The outage of `outages` failing `region` at `minute`, if any.
fn failing(outages: &[&Outage], region: usize, minute: i64) -> Option<FailureReason> {
    outages
        .iter()
        .find(|o| o.start <= minute && minute < o.end && o.regions & (1 << region) != 0)
        .map(|o| o.reason)
}

fn canonical_tools(server: &Server, version: u32) -> Vec<serde_json::Value> {
    let mut tools: Vec<serde_json::Value> = server
        .tools
        .iter()
        .enumerate()
        .map(|(k, (name, _, _))| {
            let mut properties = serde_json::json!({
                "query": {"type": "string", "description": "What to look for"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100},
            });
            if version > 0 && k == (version as usize % server.tools.len()) {
                properties["options"] = serde_json::json!({"type": "object", "description": format!("added in v{version}")});
            }
            serde_json::json!({
                "name": name,
                "description": format!("{} for {}", name.replace('_', " "), server.name),
                "inputSchema": {"type": "object", "properties": properties, "required": ["query"]},
            })
        })
        .collect();
    tools.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    tools
}

impl World {
    /// One probe result, as a prober in `region` would send it, with its timings in
    /// whole milliseconds: at a prober's full precision the seven timing columns (which
    /// no named query reads) are incompressible and would take most of the disk (~10 GB
    /// for a month of 1,000 servers instead of ~3 GB).
    fn probe(
        &self,
        server: &Server,
        region: usize,
        minute: i64,
        outage: Option<FailureReason>,
        r: &mut Rng,
    ) -> ProbeResult {
        let mut p = self.probe_precise(server, region, minute, outage, r);
        let ph = &mut p.phases;
        for v in [
            &mut ph.dns_ms,
            &mut ph.connect_ms,
            &mut ph.tls_ms,
            &mut ph.first_byte_ms,
            &mut ph.initialize_ms,
            &mut ph.tools_list_ms,
            &mut p.total_ms,
        ] {
            *v = v.map(f64::round);
        }
        p
    }

    fn probe_precise(
        &self,
        server: &Server,
        region: usize,
        minute: i64,
        outage: Option<FailureReason>,
        r: &mut Rng,
    ) -> ProbeResult {
        let tenant = &self.tenants[server.tenant];
        let offset_ms = ((server.id * 7 + region * 20) % 60) as i64 * 1000 + r.below(900) as i64;
        let started_at = Utc
            .timestamp_millis_opt(minute * 60_000 + offset_ms)
            .single()
            .expect("in range");
        let mut p = ProbeResult::new(server.name.clone(), REGIONS[region], started_at);
        p.probe_id = Some(format!(
            "{tenant}/{}/{}/{}",
            server.name,
            REGIONS[region],
            started_at.timestamp_millis()
        ));
        p.url = Some(server.url.clone());
        p.labels = BTreeMap::from([
            ("env".to_string(), "prod".to_string()),
            ("team".to_string(), server.team.clone()),
        ]);
        p.prober = Some(format!("prober-{}-1", REGIONS[region]));
        let rtt = server.rtt_ms[region] * r.lognormal(1.0, 0.15);
        let dns = if r.chance(0.05) {
            r.lognormal(15.0, 0.5)
        } else {
            r.lognormal(0.4, 0.3)
        };
        p.phases.dns_ms = Some(dns);
        let timeout_ms = 10_000.0;
        match outage {
            Some(reason @ FailureReason::DnsFailure) => {
                p.failure_reason = Some(reason);
                p.failure_phase = Some(Phase::Dns);
                p.failure_detail = Some(format!("no such host: {}", server.name));
                p.total_ms = Some(dns + 2.0);
                return p;
            }
            Some(reason @ (FailureReason::TcpRefused | FailureReason::ConnectTimeout)) => {
                p.failure_reason = Some(reason);
                p.failure_phase = Some(Phase::Connect);
                if reason == FailureReason::TcpRefused {
                    p.failure_detail = Some("connection refused".into());
                    p.total_ms = Some(dns + rtt);
                } else {
                    p.failure_detail = Some("connect timed out".into());
                    p.total_ms = Some(timeout_ms);
                }
                return p;
            }
            _ => {}
        }
        p.phases.connect_ms = Some(rtt);
        if outage == Some(FailureReason::TlsError) {
            p.failure_reason = Some(FailureReason::TlsError);
            p.failure_phase = Some(Phase::Tls);
            p.failure_detail = Some("certificate has expired".into());
            p.total_ms = Some(dns + rtt * 2.0);
            return p;
        }
        let tls = rtt * 2.0 * r.lognormal(1.0, 0.1);
        p.phases.tls_ms = Some(tls);
        let day = minute.div_euclid(1440);
        let expires_day = (day / server.tls_rotation_days + 1) * server.tls_rotation_days;
        p.tls_expires_at = Utc.timestamp_opt(expires_day * 86_400, 0).single();
        let work = server.work_ms * r.lognormal(1.0, 0.35);
        let first_byte = rtt + work;
        p.phases.first_byte_ms = Some(first_byte);
        p.protocol_era = Some(server.era);
        match outage {
            Some(FailureReason::Http5xx) => {
                p.failure_reason = Some(FailureReason::Http5xx);
                p.failure_phase = Some(if server.era == ProtocolEra::Modern {
                    Phase::Discover
                } else {
                    Phase::Initialize
                });
                p.http_status = Some(*r.pick(&[502, 503, 504]));
                p.failure_detail = Some("HTTP 503 Service Unavailable".into());
                p.total_ms = Some(dns + rtt + tls + first_byte);
                return p;
            }
            Some(FailureReason::Timeout) => {
                p.failure_reason = Some(FailureReason::Timeout);
                p.failure_phase = Some(Phase::ToolsList);
                p.failure_detail = Some("no answer to tools/list within 10s".into());
                p.total_ms = Some(timeout_ms);
                return p;
            }
            Some(other) => {
                p.failure_reason = Some(other);
                p.failure_phase = Some(Phase::Initialize);
                p.http_status = Some(200);
                p.jsonrpc_error_code = Some(-32603);
                p.failure_detail = Some("initialize: internal error".into());
                p.total_ms = Some(dns + rtt + tls + first_byte);
                return p;
            }
            None => {}
        }
        p.ok = true;
        p.http_status = Some(200);
        p.protocol_version = Some(server.version.to_string());
        let init = rtt + work * r.lognormal(0.6, 0.2);
        p.phases.initialize_ms = Some(init);
        let list = rtt + work * r.lognormal(1.2, 0.3);
        p.phases.tools_list_ms = Some(list);
        p.total_ms = Some(dns + rtt + tls + first_byte + init + list);
        let changes = &self.changes[server.id];
        let version = changes.iter().take_while(|c| c.minute <= minute).count() as u32;
        p.tool_count = Some(server.tools.len() as u32);
        p.tools_hash = Some(tools_hash(server, version));
        let changed_now = changes.iter().any(|c| c.minute == minute);
        if changed_now || minute == self.spec.start_minute() {
            p.tools = Some(canonical_tools(server, version));
        }
        p
    }

    /// The probes and signals rows of `tenant` in the hour starting at `hour_minute`.
    #[allow(clippy::type_complexity)]
    fn hour(
        &self,
        tenant: usize,
        hour_minute: i64,
    ) -> (
        PartitionedRows<<ProbesFormat as TableFormat>::Builder>,
        Vec<SignalRow>,
        u64,
    ) {
        let tenant_name = &self.tenants[tenant];
        let from = hour_minute.max(self.spec.start_minute());
        let to = (hour_minute + 60).min(self.spec.end_minute);
        let mut probes = PartitionedRows::default();
        let mut signals = Vec::new();
        let mut n_probes = 0;
        for &s in &self.by_tenant[tenant] {
            let server = &self.servers[s];
            let outages: Vec<&Outage> = self.outages[s]
                .iter()
                .filter(|o| o.start < to && o.end > from)
                .collect();
            let mut r = Rng::new(self.spec.seed, &[7, s as u64, hour_minute as u64]);
            for (region, region_name) in REGIONS.iter().enumerate() {
                for minute in from..to {
                    let outage = failing(&outages, region, minute);
                    let probe = self.probe(server, region, minute, outage, &mut r);
                    let json = serde_json::to_vec(&probe).expect("probe results serialize");
                    ProbesFormat
                        .decode_into(tenant_name, &json, &mut probes)
                        .expect("the archiver decodes what a prober sends");
                    n_probes += 1;
                    // The signals operator's window of this (server, region, minute).
                    let mut row = SignalRow::new(
                        SeriesKey {
                            source: SignalSource::Probes,
                            tenant: tenant_name.clone(),
                            server: server.name.clone(),
                            tool: None,
                            method: None,
                            region: Some(region_name.to_string()),
                        },
                        minute,
                    );
                    row.calls = 1;
                    row.errors = u64::from(!probe.ok);
                    let us = probe.total_ms.map_or(0, |ms| (ms * 1000.0) as u64).max(1);
                    let _ = row.latency.record(us);
                    signals.push(row);
                }
            }
            if !server.instrumented {
                continue;
            }
            // Tool calls seen as spans: one window per (tool, method) and minute with calls.
            let series = server
                .tools
                .iter()
                .map(|(tool, rate, median)| (Some(tool.as_str()), "tools/call", *rate, *median))
                .chain(std::iter::once((None, "tools/list", 0.08, 8.0)));
            for (tool, method, rate, median_ms) in series {
                for minute in from..to {
                    let local = (minute + server.tz_minutes).rem_euclid(1440) as f64;
                    let diurnal =
                        1.0 + 0.7 * (std::f64::consts::TAU * (local / 1440.0 - 0.25)).sin();
                    let calls = r.poisson(rate * diurnal);
                    if calls == 0 {
                        continue;
                    }
                    let down = outages.iter().any(|o| o.start <= minute && minute < o.end);
                    let p_err = if down { 0.6 } else { 0.003 };
                    let errors = (0..calls.min(64)).filter(|_| r.chance(p_err)).count() as u64
                        * calls.div_ceil(64);
                    let mut row = SignalRow::new(
                        SeriesKey {
                            source: SignalSource::Spans,
                            tenant: tenant_name.clone(),
                            server: server.name.clone(),
                            tool: tool.map(str::to_string),
                            method: Some(method.to_string()),
                            region: None,
                        },
                        minute,
                    );
                    row.calls = calls;
                    row.errors = errors.min(calls);
                    let samples = calls.min(8);
                    for k in 0..samples {
                        let weight = calls / samples + u64::from(k < calls % samples);
                        let ms = r.lognormal(median_ms, 0.6);
                        let us = ((ms * 1000.0) as u64).max(1);
                        let _ = row.latency.record_n(us, weight);
                    }
                    row.peak_in_flight = Some(1 + calls / 8 + r.below(2));
                    signals.push(row);
                }
            }
        }
        (probes, signals, n_probes)
    }
}

// ---------------------------------------------------------------------------------------
// Writing, in parallel.
// ---------------------------------------------------------------------------------------

struct Writers {
    tables: Vec<(Table, TableWriter, Arc<RuntimeStats>)>,
}

impl Writers {
    fn new(root: &FsPath) -> Self {
        let target = ArchiveTarget {
            store: Arc::new(LocalFileSystem::new()),
            root: ObjectPath::from(root.to_string_lossy().trim_start_matches('/')),
            // Generated history needs no fsync per object: the bytes are the same.
            local_root: None,
        };
        let tables = [
            Table::Probes,
            Table::Signals,
            Table::Alerts,
            Table::Drift,
            Table::Notifications,
        ]
        .into_iter()
        .map(|table| {
            let stats = Arc::new(RuntimeStats::default());
            let writer = TableWriter::new(
                table,
                ArchiveConfig::default(),
                target.clone(),
                stats.clone(),
            );
            (table, writer, stats)
        })
        .collect();
        Self { tables }
    }

    fn get(&self, table: Table) -> &TableWriter {
        &self
            .tables
            .iter()
            .find(|(t, _, _)| *t == table)
            .expect("a writer per table")
            .1
    }
}

fn object_name(table: Table, tenant: usize, first_minute: i64, rows: usize) -> String {
    let topic = match table {
        Table::Probes => "mcpulse.probes.v1",
        Table::Signals | Table::Drift => "mcpulse.findings.v1",
        _ => "mcpulse.alerts.v1",
    };
    let tp = TopicPartition::new(topic, (tenant % 12) as u32);
    let first = first_minute as u64 * 10_000;
    file_name(&tp, first, first + rows.max(1) as u64 - 1)
}

/// Writes one unit: every hour of `tenant` on `day`, and the day's small tables.
/// CPU time of the phases of generation: rows, probes objects, signal batches, signal
/// objects (ns, summed over threads).
static PHASES: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

async fn write_unit(world: &World, writers: &Writers, tenant: usize, day: i64) -> u64 {
    let mut rows = 0u64;
    if tenant < world.tenants.len() {
        for hour in 0..24 {
            let hour_minute = day * 1440 + hour * 60;
            if hour_minute + 60 <= world.spec.start_minute() || hour_minute >= world.spec.end_minute
            {
                continue;
            }
            let t0 = Instant::now();
            let (probes, signals, n) = world.hour(tenant, hour_minute);
            rows += n + signals.len() as u64;
            let files = probes.finish().expect("probe rows build");
            let t1 = Instant::now();
            let name = object_name(Table::Probes, tenant, hour_minute, n as usize);
            writers
                .get(Table::Probes)
                .write(&name, &files)
                .await
                .expect("writing probes");
            let t2 = Instant::now();
            let files = signal_batches(&signals).expect("signal rows build");
            let t3 = Instant::now();
            let name = object_name(Table::Signals, tenant, hour_minute, signals.len());
            writers
                .get(Table::Signals)
                .write(&name, &files)
                .await
                .expect("writing signals");
            let t4 = Instant::now();
            for (i, d) in [t1 - t0, t2 - t1, t3 - t2, t4 - t3].into_iter().enumerate() {
                PHASES[i].fetch_add(d.as_nanos() as u64, Relaxed);
            }
        }
    }
    // One object per hour folder of a small table.
    macro_rules! write_small {
        ($table:expr, $files:expr) => {
            for file in $files {
                let minute = file.0.day * 1440 + i64::from(file.0.hour) * 60;
                let name = object_name($table, tenant, minute, file.1.num_rows());
                writers
                    .get($table)
                    .write(&name, std::slice::from_ref(&file))
                    .await
                    .unwrap_or_else(|e| panic!("writing {}: {e}", $table.name()));
            }
        };
    }
    if let Some(small) = world.small.get(&(tenant, day)) {
        rows += (small.alerts.len() + small.drift.len() + small.notes.len()) as u64;
        let alerts = alert_batches(&small.alerts).expect("alert rows build");
        write_small!(Table::Alerts, alerts);
        let mut drift: BTreeMap<PartitionKey, Vec<DriftRow>> = BTreeMap::new();
        for row in &small.drift {
            let ns = row.time.timestamp_nanos_opt().expect("in range");
            drift
                .entry(PartitionKey::at(&row.tenant, ns))
                .or_default()
                .push(row.clone());
        }
        let drift: Vec<_> = drift
            .into_iter()
            .map(|(key, rows)| (key, drift_batch(&rows).expect("drift rows build")))
            .collect();
        write_small!(Table::Drift, drift);
        let notes = note_batches(&small.notes).expect("notification rows build");
        write_small!(Table::Notifications, notes);
    }
    rows
}

/// Generates the dataset into `dir` (emptied first) on `threads` threads; gives up past
/// `budget`. Returns what `dataset.json` records.
pub fn generate(
    dir: &FsPath,
    spec: Spec,
    threads: usize,
    budget: Duration,
) -> anyhow::Result<Dataset> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let dir: PathBuf = dir.canonicalize()?;
    let started = Instant::now();
    let world = World::new(spec.clone());
    let units = world.units();
    eprintln!(
        "generating {} days x {} servers ({} tenants, {} regions) into {}: {} units on {threads} threads (world planned in {:.1}s)",
        spec.days,
        world.servers.len(),
        world.tenants.len(),
        REGIONS.len(),
        dir.display(),
        units.len(),
        started.elapsed().as_secs_f64()
    );
    let writers = Writers::new(&dir);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let rows = AtomicU64::new(0);
    let over = AtomicBool::new(false);
    let last_report = Mutex::new(Instant::now());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                loop {
                    if started.elapsed() > budget {
                        over.store(true, Relaxed);
                        return;
                    }
                    let i = next.fetch_add(1, Relaxed);
                    let Some(&(tenant, day)) = units.get(i) else {
                        return;
                    };
                    let n = rt.block_on(write_unit(&world, &writers, tenant, day));
                    rows.fetch_add(n, Relaxed);
                    let finished = done.fetch_add(1, Relaxed) + 1;
                    let mut last = last_report.lock().expect("not poisoned");
                    if last.elapsed() >= Duration::from_secs(15) || finished == units.len() {
                        *last = Instant::now();
                        let secs = started.elapsed().as_secs_f64();
                        let eta = secs / finished as f64 * (units.len() - finished) as f64;
                        eprintln!(
                            "  {finished}/{} units, {:.1}M rows, {secs:.0}s elapsed, ~{eta:.0}s to go",
                            units.len(),
                            rows.load(Relaxed) as f64 / 1e6
                        );
                    }
                }
            });
        }
    });
    if over.load(Relaxed) {
        anyhow::bail!(
            "generation stopped after {:.0}s (the time budget, --max-generate-secs); {} of {} units written. Use fewer --servers/--days or a larger budget",
            started.elapsed().as_secs_f64(),
            done.load(Relaxed),
            units.len()
        );
    }
    let phase = |i: usize| PHASES[i].load(Relaxed) as f64 / 1e9;
    eprintln!(
        "generation time by phase (summed over threads): building rows {:.0}s, encoding probes {:.0}s, signal batches {:.0}s, encoding signals {:.0}s",
        phase(0),
        phase(1),
        phase(2),
        phase(3)
    );
    let mut written = Written {
        seconds: started.elapsed().as_secs_f64(),
        threads,
        ..Written::default()
    };
    for (table, _, stats) in &writers.tables {
        let name = table.name().to_string();
        written
            .rows
            .insert(name.clone(), stats.rows_written.load(Relaxed));
        written
            .files
            .insert(name.clone(), stats.files_written.load(Relaxed));
        written
            .bytes
            .insert(name, stats.bytes_written.load(Relaxed));
    }
    let dataset = Dataset {
        spec,
        written,
        largest_tenant: world.tenants[world.largest_tenant()].clone(),
    };
    std::fs::write(dir.join(DATASET_FILE), serde_json::to_vec_pretty(&dataset)?)?;
    Ok(dataset)
}

/// The dataset in `dir`, if its generation finished.
pub fn load(dir: &FsPath) -> anyhow::Result<Dataset> {
    let path = dir.join(DATASET_FILE);
    let bytes = std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (no finished dataset there: run without --reuse to generate one)",
            path.display()
        )
    })?;
    Ok(serde_json::from_slice(&bytes)?)
}

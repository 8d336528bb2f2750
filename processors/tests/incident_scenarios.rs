//! Scenario replays of the incident pipeline (issue 6 "Tests that must exist"): each file
//! in `tests/scenarios/` describes servers, their regions and when and how they fail;
//! the probe results it implies go through the verdict stage and the incident stage, each
//! a checkpointed [`StatefulOperator`], and the `alerts.v1` stream that comes out must
//! match the file's expected events exactly (as a multiset of matchers with counts, plus
//! per-incident order).
//!
//! Every scenario also runs with a crash in the middle: both stages lose what they had
//! not checkpointed, restart from their checkpoints and are fed the log again from their
//! committed offsets (the verdicts the verdict stage re-emits are appended again, as on a
//! real log). The stream after the crash, with the redelivered events dropped by
//! `event_id`, must be the same stream, and no incident may get a second trigger.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use mcpulse_bus::{BusError, Delivery, Header, Message, Producer, Record, TopicPartition};
use mcpulse_processors::Operator;
use mcpulse_processors::archive::{ArchiveConfig, ArchiveTarget};
use mcpulse_processors::incidents::fleet::FleetView;
use mcpulse_processors::incidents::{
    IncidentContext, IncidentLogic, IncidentMetrics, IncidentsConfig, VerdictContext, VerdictLogic,
    VerdictMetrics,
};
use mcpulse_processors::operator::OperatorError;
use mcpulse_processors::stateful::{FindingsOutput, PartitionLogic, StatefulOperator};
use mcpulse_processors::stats::RuntimeStats;
use mcpulse_queries::{QueryConfig, QueryEngine, Scope};
use mcpulse_schemas::alert::OPERATOR_TENANT;
use mcpulse_schemas::{AlertAction, AlertEvent, FailureReason, ProbeResult, Table};
use serde::Deserialize;

const PROBES: &str = "mcpulse.probes.v1";
const FINDINGS: &str = "mcpulse.findings.v1";
const ALERTS: &str = "mcpulse.alerts.v1";

// ---------------------------------------------------------------------------------------
// Scenario files

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    /// Length in minutes.
    minutes: u32,
    /// Seconds between two probes of one region (default 60).
    #[serde(default = "default_interval")]
    interval_s: u32,
    /// The minute whose probes are being processed when the crash happens.
    crash_at: u32,
    /// `incidents:` settings (defaults otherwise).
    #[serde(default)]
    config: Option<serde_json::Value>,
    servers: Vec<ServerSpec>,
    expect: Vec<Matcher>,
}

fn default_interval() -> u32 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSpec {
    /// `{i}` is replaced by the index when `count` is given.
    tenant: String,
    #[serde(default = "one")]
    count: u32,
    server: String,
    url: String,
    regions: Vec<String>,
    #[serde(default)]
    failures: Vec<Failure>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Failure {
    /// Minutes from the start: failing in `[from, to)`.
    from: u32,
    to: u32,
    reason: FailureReason,
    /// Regions failing (default: all).
    #[serde(default)]
    regions: Option<Vec<String>>,
    /// A repeating pattern: down for the first `down_s` of every `period_s` from `from`.
    #[serde(default)]
    period_s: Option<u32>,
    #[serde(default)]
    down_s: Option<u32>,
    /// The probe's failure_detail (may quote an address, which must not leave).
    #[serde(default)]
    detail: Option<String>,
}

/// Expected events: every given field must equal; `count` events match it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Matcher {
    /// Exact, or a prefix ending in `*`.
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    class: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    regions: Option<Vec<String>>,
    #[serde(default)]
    duration_s: Option<u64>,
    /// Minutes from the start.
    #[serde(default)]
    opened_at: Option<i64>,
    #[serde(default)]
    time: Option<i64>,
    /// Whether the event links a storm (`storm_id`).
    #[serde(default)]
    storm: Option<bool>,
    /// A storm event's member count.
    #[serde(default)]
    storm_members: Option<u64>,
    #[serde(default = "one")]
    count: u32,
}

impl Matcher {
    fn matches(&self, e: &AlertEvent, start: DateTime<Utc>) -> bool {
        let minutes = |t: DateTime<Utc>| (t - start).num_minutes();
        let eq = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
        let tenant_ok = match self.tenant.as_deref() {
            None => true,
            Some(p) if p.ends_with('*') => e.tenant.starts_with(&p[..p.len() - 1]),
            Some(t) => t == e.tenant,
        };
        tenant_ok
            && eq(&self.server, e.server.as_deref().unwrap_or(""))
            && eq(&self.class, &e.class)
            && eq(&self.action, e.action.as_str())
            && eq(&self.status, e.status.as_str())
            && eq(&self.severity, e.severity.as_str())
            && eq(&self.scope, &e.scope)
            && self.regions.as_ref().is_none_or(|r| *r == e.regions)
            && self.duration_s.is_none_or(|d| e.duration_s == Some(d))
            && self.opened_at.is_none_or(|m| minutes(e.opened_at) == m)
            && self.time.is_none_or(|m| minutes(e.time) == m)
            && self.storm.is_none_or(|s| s == e.storm_id.is_some())
            && self
                .storm_members
                .is_none_or(|n| e.storm.as_ref().is_some_and(|s| s.members == n))
    }
}

fn scenarios() -> Vec<(String, Scenario)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            let scenario =
                serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, scenario)
        })
        .collect()
}

/// A fixed start well in the past (event times are never clamped as future).
fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap()
}

/// The probe results of the scenario, by minute.
fn probes(s: &Scenario) -> Vec<Vec<(String, ProbeResult)>> {
    let start = start();
    let mut minutes: Vec<Vec<(String, ProbeResult)>> = vec![Vec::new(); s.minutes as usize];
    for spec in &s.servers {
        for i in 0..spec.count {
            let fill = |t: &str| t.replace("{i}", &i.to_string());
            let tenant = fill(&spec.tenant);
            for (minute, out) in minutes.iter_mut().enumerate() {
                for k in 0..(60 / s.interval_s) {
                    for (r, region) in spec.regions.iter().enumerate() {
                        let second = minute as u32 * 60 + k * s.interval_s + r as u32 * 5;
                        let t = start + chrono::Duration::seconds(second as i64);
                        let mut p = ProbeResult::new(fill(&spec.server), region.clone(), t);
                        p.url = Some(fill(&spec.url));
                        p.probe_id = Some(format!("{tenant}/{}/{region}/{second}", p.server));
                        p.prober = Some(format!("prober-{region}-10.0.0.{r}"));
                        let failing = spec.failures.iter().find(|f| {
                            let in_range = (f.from * 60..f.to * 60).contains(&second);
                            let in_region = f.regions.as_ref().is_none_or(|rs| rs.contains(region));
                            let down = || match (f.period_s, f.down_s) {
                                (Some(period), Some(down)) => {
                                    (second - f.from * 60) % period < down
                                }
                                _ => true,
                            };
                            in_range && in_region && down()
                        });
                        match failing {
                            Some(f) => {
                                p.failure_reason = Some(f.reason);
                                p.failure_detail = f.detail.clone();
                            }
                            None => {
                                p.ok = true;
                                p.total_ms = Some(120.0);
                            }
                        }
                        out.push((tenant.clone(), p));
                    }
                }
            }
        }
    }
    for minute in &mut minutes {
        minute.sort_by_key(|(_, p)| p.started_at);
    }
    minutes
}

// ---------------------------------------------------------------------------------------
// The two stages, wired through an in-memory log

/// An append-only topic: what a stage produced, as the next stage reads it.
#[derive(Default)]
struct Topic(Mutex<Vec<Message>>, AtomicBool);

#[async_trait]
impl Producer for Topic {
    async fn send(&self, _topic: &str, messages: Vec<Message>) -> Result<Vec<Delivery>, BusError> {
        let mut log = self.0.lock().unwrap();
        let first = log.len() as u64;
        let n = messages.len();
        log.extend(messages);
        if self.1.swap(false, Relaxed) {
            // Appended, but the producer dies before it can say so.
            return Err(BusError::Unavailable("crash after append".into()));
        }
        Ok((0..n)
            .map(|i| Delivery {
                partition: 0,
                offset: first + i as u64,
            })
            .collect())
    }
}

impl Topic {
    fn len(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }

    fn record(&self, topic: &str, offset: u64) -> Record {
        let m = self.0.lock().unwrap()[offset as usize].clone();
        Record {
            topic: topic.into(),
            partition: 0,
            offset,
            key: m.key,
            value: m.value,
            headers: m.headers,
            timestamp_ms: 0,
        }
    }

    fn events(&self) -> Vec<AlertEvent> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|m| serde_json::from_slice(&m.value).unwrap())
            .collect()
    }
}

fn config_of(s: &Scenario) -> IncidentsConfig {
    let config: IncidentsConfig = match &s.config {
        Some(v) => serde_json::from_value(v.clone()).unwrap(),
        None => IncidentsConfig::default(),
    };
    config.validate().unwrap();
    config
}

struct Pipeline {
    _dir: tempfile::TempDir,
    target: ArchiveTarget,
    config: IncidentsConfig,
    probes: Arc<Topic>,
    findings: Arc<Topic>,
    alerts: Arc<Topic>,
    verdict: StatefulOperator<VerdictLogic>,
    incidents: StatefulOperator<IncidentLogic>,
    /// Next offset to feed each stage, and what each last reported as committed.
    verdict_next: u64,
    incidents_next: u64,
    verdict_committed: u64,
    incidents_committed: u64,
}

fn operator<L: PartitionLogic>(
    name: &'static str,
    context: L::Context,
    target: &ArchiveTarget,
    out: Arc<Topic>,
) -> StatefulOperator<L> {
    StatefulOperator::new(
        name,
        context,
        Table::Alerts,
        target.clone(),
        ArchiveConfig::default(),
        FindingsOutput {
            producer: out,
            topic: FINDINGS.into(),
            alerts_topic: ALERTS.into(),
        },
        Arc::new(RuntimeStats::default()),
    )
    .with_flush_interval(Duration::ZERO)
}

impl Pipeline {
    fn new(config: IncidentsConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let target = common::target(dir.path());
        let findings = Arc::new(Topic::default());
        let alerts = Arc::new(Topic::default());
        let (verdict, incidents) = Self::stages(&config, &target, &findings, &alerts);
        Self {
            _dir: dir,
            target,
            config,
            probes: Arc::new(Topic::default()),
            findings,
            alerts,
            verdict,
            incidents,
            verdict_next: 0,
            incidents_next: 0,
            verdict_committed: 0,
            incidents_committed: 0,
        }
    }

    /// Both stages as a freshly started process builds them (state from checkpoints).
    fn stages(
        config: &IncidentsConfig,
        target: &ArchiveTarget,
        findings: &Arc<Topic>,
        alerts: &Arc<Topic>,
    ) -> (
        StatefulOperator<VerdictLogic>,
        StatefulOperator<IncidentLogic>,
    ) {
        let fleet = Arc::new(FleetView::new(60));
        let verdict = VerdictContext {
            settings: config.verdict(),
            fleet: fleet.clone(),
            metrics: Arc::new(VerdictMetrics::default()),
        };
        let incidents = IncidentContext {
            engine: config.engine(),
            settings: config.verdict(),
            metrics: Arc::new(IncidentMetrics::default()),
            fleet,
        };
        (
            operator("verdict", verdict, target, findings.clone()),
            operator("incidents", incidents, target, alerts.clone()),
        )
    }

    /// Appends a minute of probes to the log.
    async fn append(&self, minute: &[(String, ProbeResult)]) {
        let messages = minute
            .iter()
            .map(|(tenant, p)| {
                let mut m = Message::new(None, serde_json::to_vec(p).unwrap());
                m.headers = vec![Header::new("mcpulse-tenant", tenant.clone())];
                m
            })
            .collect();
        self.probes.send(PROBES, messages).await.unwrap();
    }

    /// Feeds each stage what its topic holds beyond what it took; flushes when asked.
    /// An error is a flush that failed (the stage must be restarted).
    async fn pump(&mut self, flush: bool) -> Result<(), OperatorError> {
        while self.verdict_next < self.probes.len() {
            let r = self.probes.record(PROBES, self.verdict_next);
            self.verdict.process(&r).await.unwrap();
            self.verdict_next += 1;
        }
        if flush {
            for (_, offset) in self.verdict.flush(None, true).await? {
                self.verdict_committed = offset;
            }
        }
        while self.incidents_next < self.findings.len() {
            let r = self.findings.record(FINDINGS, self.incidents_next);
            self.incidents.process(&r).await.unwrap();
            self.incidents_next += 1;
        }
        if flush {
            for (_, offset) in self.incidents.flush(None, true).await? {
                self.incidents_committed = offset;
            }
        }
        Ok(())
    }

    /// Kills both stages (everything not checkpointed is lost) and starts them again,
    /// reading from their committed offsets.
    fn crash(&mut self) {
        let (verdict, incidents) =
            Self::stages(&self.config, &self.target, &self.findings, &self.alerts);
        self.verdict = verdict;
        self.incidents = incidents;
        self.verdict_next = self.verdict_committed;
        self.incidents_next = self.incidents_committed;
    }

    fn events(&self) -> Vec<AlertEvent> {
        self.alerts.events()
    }

    async fn alert_rows(&self) -> (u64, u64) {
        let root = url::Url::from_directory_path(self.target.local_root.clone().unwrap()).unwrap();
        let catalog = mcpulse_queries::ArchiveCatalog::new(
            root,
            Arc::new(object_store::local::LocalFileSystem::new()),
        );
        let engine = QueryEngine::new(catalog, QueryConfig::default());
        let result = engine
            .execute(
                &Scope::All,
                "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM alerts",
            )
            .await
            .unwrap();
        let bytes = mcpulse_queries::OutputFormat::Json
            .render(&result.schema, &result.batches)
            .unwrap();
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
        (
            rows[0]["n"].as_u64().unwrap(),
            rows[0]["d"].as_u64().unwrap(),
        )
    }
}

/// Where a crash strikes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Crash {
    None,
    /// The verdict stage emitted and checkpointed, the incident stage took the verdicts
    /// in; neither committed, and the incident stage lost its state.
    BeforeCheckpoint,
    /// Both stages appended their output, then died before checkpointing: each replays
    /// its unfinished flush and appends the same messages again.
    AfterOutput,
}

/// Runs the scenario with a crash while it processes minute `crash_at`.
async fn run(s: &Scenario, crash: Crash) -> Pipeline {
    let mut p = Pipeline::new(config_of(s));
    for (minute, probes) in probes(s).iter().enumerate() {
        p.append(probes).await;
        if minute as u32 == s.crash_at {
            match crash {
                Crash::None => {}
                Crash::BeforeCheckpoint => {
                    p.pump(false).await.unwrap();
                    p.verdict.flush(None, true).await.unwrap();
                    p.pump(false).await.unwrap();
                    p.crash();
                }
                Crash::AfterOutput => {
                    // The next flush of each stage that has output appends it and dies.
                    p.findings.1.store(true, Relaxed);
                    p.alerts.1.store(true, Relaxed);
                }
            }
        }
        while p.pump(true).await.is_err() {
            assert_eq!(crash, Crash::AfterOutput, "a flush failed");
            p.crash();
        }
    }
    p
}

fn dedup(events: Vec<AlertEvent>) -> Vec<AlertEvent> {
    let mut seen = BTreeSet::new();
    events
        .into_iter()
        .filter(|e| seen.insert(e.event_id.clone()))
        .collect()
}

/// The expected stream: every matcher's count consumed, every event matched.
fn check_expected(name: &str, s: &Scenario, events: &[AlertEvent]) {
    let start = start();
    let mut left: Vec<u32> = s.expect.iter().map(|m| m.count).collect();
    let mut unmatched = Vec::new();
    for e in events {
        match s
            .expect
            .iter()
            .enumerate()
            .find(|(i, m)| left[*i] > 0 && m.matches(e, start))
        {
            Some((i, _)) => left[i] -= 1,
            None => unmatched.push(e),
        }
    }
    let missing: Vec<String> = s
        .expect
        .iter()
        .zip(&left)
        .filter(|(_, n)| **n > 0)
        .map(|(m, n)| format!("{n} more of {m:?}"))
        .collect();
    let summary: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {} {}/{} {} {} {} opened+{} t+{} dur={:?} storm={}",
                e.action.as_str(),
                e.status.as_str(),
                e.tenant,
                e.server.as_deref().unwrap_or("-"),
                e.class,
                e.severity.as_str(),
                e.scope,
                (e.opened_at - start).num_minutes(),
                (e.time - start).num_minutes(),
                e.duration_s,
                e.storm_id.is_some()
            )
        })
        .collect();
    assert!(
        unmatched.is_empty() && missing.is_empty(),
        "{name}: unexpected events {:#?}\nmissing {missing:#?}\nstream:\n{}",
        unmatched.iter().map(|e| &e.summary).collect::<Vec<_>>(),
        summary.join("\n")
    );
}

/// What must hold of any stream: boundaries, one trigger per incident at most, order,
/// and no page for a suppressed member.
fn check_invariants(name: &str, events: &[AlertEvent]) {
    let mut by_incident: BTreeMap<&str, Vec<&AlertEvent>> = BTreeMap::new();
    for e in events {
        e.check_boundaries()
            .unwrap_or_else(|err| panic!("{name}: {err}: {e:?}"));
        let text = serde_json::to_string(e).unwrap();
        assert!(
            !text.contains("203.0.113.7"),
            "{name}: an address leaked: {text}"
        );
        assert!(
            !text.contains("prober-"),
            "{name}: a prober name leaked: {text}"
        );
        if e.tenant == OPERATOR_TENANT {
            assert!(e.server.is_none() && e.storm.is_some(), "{name}: {e:?}");
            for t in ["\"t1\"", "\"u1\"", "t1-api"] {
                assert!(
                    !text.contains(t),
                    "{name}: a storm event names a member: {text}"
                );
            }
        }
        by_incident.entry(&e.incident_id).or_default().push(e);
    }
    for (id, evs) in by_incident {
        let triggers = evs
            .iter()
            .filter(|e| e.action == AlertAction::Trigger)
            .count();
        assert!(
            triggers <= 1,
            "{name}: incident {id} triggered {triggers} times"
        );
        let suppressed = evs.iter().position(|e| e.action == AlertAction::Suppress);
        let trigger = evs.iter().position(|e| e.action == AlertAction::Trigger);
        if let (Some(s), Some(t)) = (suppressed, trigger) {
            assert!(t < s, "{name}: incident {id} paged after it was suppressed");
        }
        if let Some(r) = evs.iter().position(|e| e.action == AlertAction::Resolve) {
            assert_eq!(
                r,
                evs.len() - 1,
                "{name}: incident {id} has events after its resolve"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_produce_their_expected_incident_streams() {
    let all = scenarios();
    assert!(all.len() >= 6, "the scenario files are missing");
    for (name, s) in &all {
        let p = run(s, Crash::None).await;
        let events = p.events();
        check_invariants(name, &events);
        check_expected(name, s, &events);
        assert_eq!(
            dedup(events.clone()).len(),
            events.len(),
            "{name}: event ids repeat without a crash"
        );
        let (rows, distinct) = p.alert_rows().await;
        assert_eq!(
            (rows, distinct),
            (events.len() as u64, events.len() as u64),
            "{name}: alerts table"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_scenario_produces_the_same_stream() {
    let mut redelivered = 0;
    for ((name, s), crash) in scenarios()
        .iter()
        .flat_map(|s| [(s, Crash::BeforeCheckpoint), (s, Crash::AfterOutput)])
    {
        let name = &format!("{name} ({crash:?})");
        let clean = run(s, Crash::None).await.events();
        let p = run(s, crash).await;
        let crashed = p.events();
        redelivered += crashed.len() - dedup(crashed.clone()).len();
        check_invariants(name, &dedup(crashed.clone()));
        let ids = |evs: &[AlertEvent]| evs.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(&dedup(crashed.clone())),
            ids(&clean),
            "{name}: the stream after a crash differs"
        );
        assert_eq!(dedup(crashed), clean, "{name}: same ids, different content");
        // The alerts table was rewritten in place, never doubled.
        let (rows, distinct) = p.alert_rows().await;
        assert_eq!(rows, distinct, "{name}: duplicate rows in the alerts table");
        assert_eq!(distinct, clean.len() as u64, "{name}: alerts table");
    }
    assert!(redelivered > 0, "no crash replayed an unfinished flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opted_in_tenants_get_a_provider_notice_naming_no_one_else() {
    let (_, mut s) = scenarios()
        .into_iter()
        .find(|(n, _)| n == "provider_storm")
        .unwrap();
    s.config = Some(serde_json::json!({"provider_notices": ["t7"]}));
    let events = run(&s, Crash::None).await.events();
    check_invariants("provider_storm+notices", &events);
    let suppress: Vec<&AlertEvent> = events
        .iter()
        .filter(|e| e.action == AlertAction::Suppress)
        .collect();
    assert_eq!(suppress.len(), 40);
    for e in suppress {
        match e.tenant.as_str() {
            "t7" => {
                let notice = e.provider_outage.as_ref().expect("t7 opted in");
                assert_eq!(notice.provider, "render");
                assert_eq!(notice.region, "global");
                assert_eq!(notice.class, "unreachable");
                let text = serde_json::to_string(e).unwrap();
                assert!(!text.contains("t8") && !text.contains("\"t1\""), "{text}");
            }
            _ => assert!(e.provider_outage.is_none(), "{e:?}"),
        }
    }
}

#[test]
fn a_record_whose_tenant_header_disagrees_with_its_payload_is_refused() {
    let context = IncidentContext {
        engine: IncidentsConfig::default().engine(),
        settings: IncidentsConfig::default().verdict(),
        metrics: Arc::new(IncidentMetrics::default()),
        fleet: Arc::new(FleetView::new(60)),
    };
    let tp = TopicPartition::new(FINDINGS, 0);
    let mut logic = IncidentLogic::restore(&context, &tp, None);
    let finding = serde_json::json!({
        "id": "f", "kind": "error_rate_elevated", "status": "firing", "tenant": "acme",
        "server": "weather", "severity": "P2", "time": "2026-11-21T10:05:00Z",
        "window_start": "2026-11-21T10:00:00Z", "window_end": "2026-11-21T10:05:00Z",
        "summary": "errors", "evidence": {}, "source": "signals"
    });
    let record = Record {
        topic: FINDINGS.into(),
        partition: 0,
        offset: 0,
        key: None,
        value: Bytes::from(finding.to_string()),
        headers: vec![Header::new("mcpulse-tenant", "mallory")],
        timestamp_ms: 0,
    };
    let err = logic.process("mallory", &record).unwrap_err();
    assert!(err.contains("tenant"), "{err}");
}

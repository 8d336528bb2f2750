//! `mcpulse admin delete` reaching running analytic operators: a deletion request
//! recorded in the archive is picked up by the stateful shell, which drops the tenant's
//! (or server's) state in memory at its next flush and checkpoints without it — for
//! logic rebuilt from its snapshot (signals) and logic that forgets in place (the verdict
//! stage, whose open minutes are not in its snapshot) — and applies a request it missed
//! to a checkpoint written before it when that checkpoint loads.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use mcpulse_bus::{BusError, Delivery, Header, Message, Producer, Record, TopicPartition};
use mcpulse_processors::Operator;
use mcpulse_processors::archive::ArchiveTarget;
use mcpulse_processors::archive::maintenance::{DeletionRequest, ledger};
use mcpulse_processors::forget::Forget;
use mcpulse_processors::incidents::fleet::FleetView;
use mcpulse_processors::incidents::{
    IncidentsConfig, VerdictContext, VerdictLogic, VerdictMetrics,
};
use mcpulse_processors::signals::{SignalsConfig, SignalsContext, SignalsLogic};
use mcpulse_processors::stateful::{FindingsOutput, PartitionLogic, StatefulOperator};
use mcpulse_processors::stats::RuntimeStats;
use mcpulse_schemas::Table;
use object_store::ObjectStoreExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use serde_json::{Value, json};

const PROBES: &str = "mcpulse.probes.v1";

/// Accepts whatever the operators append.
struct Sink;

#[async_trait]
impl Producer for Sink {
    async fn send(&self, _topic: &str, messages: Vec<Message>) -> Result<Vec<Delivery>, BusError> {
        Ok(messages
            .iter()
            .enumerate()
            .map(|(i, _)| Delivery {
                partition: 0,
                offset: i as u64,
            })
            .collect())
    }
}

fn target() -> ArchiveTarget {
    ArchiveTarget {
        store: Arc::new(InMemory::new()),
        root: Path::from("archive"),
        local_root: None,
    }
}

fn findings() -> FindingsOutput {
    FindingsOutput {
        producer: Arc::new(Sink),
        topic: "mcpulse.findings.v1".into(),
        alerts_topic: "mcpulse.alerts.v1".into(),
    }
}

/// Probe results of three servers (two tenants) for the minutes before now, failing for
/// acme's.
fn records() -> Vec<Record> {
    let now = Utc::now().timestamp();
    let start = DateTime::from_timestamp((now / 60 - 8) * 60, 0).unwrap();
    let mut out = Vec::new();
    for minute in 0..8 {
        for (tenant, server) in [
            ("acme", "weather"),
            ("acme", "search"),
            ("globex", "weather"),
        ] {
            for region in ["eu-west", "us-east"] {
                let failing = tenant == "acme";
                let probe = json!({
                    "server": server, "region": region, "ok": !failing,
                    "failure_reason": if failing { Some("tcp_refused") } else { None },
                    "url": format!("https://{server}.{tenant}.example/mcp"),
                    "started_at": (start + TimeDelta::minutes(minute) + TimeDelta::seconds(5)).to_rfc3339(),
                });
                out.push(Record {
                    topic: PROBES.into(),
                    partition: 0,
                    offset: out.len() as u64,
                    key: Some(Bytes::from(format!("{tenant}/{server}"))),
                    value: Bytes::from(probe.to_string()),
                    headers: vec![Header::new("mcpulse-tenant", tenant)],
                    timestamp_ms: 0,
                });
            }
        }
    }
    out
}

async fn checkpoint(target: &ArchiveTarget, operator: &str) -> Value {
    let path = target
        .root
        .clone()
        .join("_state")
        .join(operator)
        .join(PROBES)
        .join("0.checkpoint.json");
    let bytes = target
        .store
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Whether `value` still holds something `forget` would remove (or, for a tenant, names
/// it anywhere).
fn holds(forget: &Forget, value: &Value) -> bool {
    let mut copy = value.clone();
    forget.scrub(&mut copy) || (forget.server.is_none() && !forget.mentions(value).is_empty())
}

async fn run<L: PartitionLogic>(
    name: &'static str,
    context: impl Fn() -> L::Context,
    table: Table,
    snapshot_state: impl Fn(&L) -> Value,
) {
    let target = target();
    let make = || {
        StatefulOperator::<L>::new(
            name,
            context(),
            table,
            target.clone(),
            Default::default(),
            findings(),
            Arc::new(RuntimeStats::default()),
        )
        .with_flush_interval(Duration::ZERO)
        .with_deletions(Duration::ZERO)
    };
    let tp = TopicPartition::new(PROBES.to_string(), 0);
    let mut op = make();
    for record in records() {
        op.process(&record).await.unwrap();
    }
    op.flush(None, true).await.unwrap();
    let before = checkpoint(&target, name).await;
    let search = Forget::server("acme", "search");
    let acme = Forget::tenant("acme");
    assert!(
        holds(&search, &before["state"]),
        "{name}: no state of acme/search to forget: {before}"
    );

    let live = snapshot_state(op.logic(&tp).unwrap());
    assert!(
        holds(&search, &live),
        "{name}: no acme/search in memory: {live}"
    );

    // A server: gone from memory and from the next checkpoint; the rest stays.
    let request = DeletionRequest::new("acme", Some("search"), Utc::now());
    ledger::record(&target, &request).await.unwrap();
    op.flush(None, false).await.unwrap();
    let live = snapshot_state(op.logic(&tp).unwrap());
    assert!(
        !holds(&search, &live),
        "{name}: acme/search still in memory: {live}"
    );
    let after = checkpoint(&target, name).await;
    assert!(
        !holds(&search, &after["state"]),
        "{name}: acme/search checkpointed: {after}"
    );
    assert!(
        holds(&Forget::server("acme", "weather"), &after["state"]),
        "{name}: {after}"
    );
    assert_eq!(after["forgotten"], json!([request.id]));

    // A tenant, missed by a process that stopped before looking: a checkpoint from
    // before the request loses it when it loads, at the first flush.
    let request = DeletionRequest::new("acme", None, Utc::now() + TimeDelta::seconds(1));
    ledger::record(&target, &request).await.unwrap();
    drop(op);
    let mut op = make();
    let more = records();
    // Records past the checkpoint: one of globex, so the partition loads.
    let mut record = more.last().unwrap().clone();
    record.offset = more.len() as u64 + 100;
    record.headers = vec![Header::new("mcpulse-tenant", "globex")];
    op.process(&record).await.unwrap();
    op.flush(None, false).await.unwrap();
    let live = snapshot_state(op.logic(&tp).unwrap());
    assert!(!holds(&acme, &live), "{name}: acme still in memory: {live}");
    let after = checkpoint(&target, name).await;
    assert!(
        !holds(&acme, &after["state"]),
        "{name}: acme checkpointed: {after}"
    );
    assert!(
        holds(&Forget::tenant("globex"), &after["state"]),
        "{name}: globex's state must stay: {after}"
    );
}

#[tokio::test]
async fn signals_forget_a_server_then_a_tenant() {
    run::<SignalsLogic>(
        "signals",
        || {
            SignalsContext::new(
                SignalsConfig::default(),
                "mcpulse.spans.v1".into(),
                PROBES.into(),
            )
            .unwrap()
        },
        Table::Signals,
        |logic| serde_json::to_value(logic.snapshot()).unwrap(),
    )
    .await;
}

#[tokio::test]
async fn the_verdict_stage_forgets_in_place() {
    let config = IncidentsConfig::default();
    let fleet = Arc::new(FleetView::new(10));
    run::<VerdictLogic>(
        "verdict",
        || VerdictContext {
            settings: config.verdict(),
            fleet: fleet.clone(),
            metrics: Arc::new(VerdictMetrics::default()),
        },
        Table::Alerts,
        // The snapshot leaves the open minutes out: look at them too.
        |logic| {
            let open: Vec<Value> = logic
                .open_servers()
                .into_iter()
                .map(|(tenant, server)| json!({"tenant": tenant, "server": server}))
                .collect();
            json!({"snapshot": logic.snapshot(), "open": open})
        },
    )
    .await;
}

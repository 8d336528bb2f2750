//! The notify operator on a real embedded log and archive folder, delivering to local
//! PagerDuty and Discord stand-ins: the tests drive it record by record (as the runtime
//! does) so they can stop it anywhere, like a crash.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mcpulse_bus::embedded::{EmbeddedBus, EmbeddedConfig};
use mcpulse_bus::{Bus, ConsumerEvent, DynBus, Message, Record, TopicSpec};
use mcpulse_processors::archive::{ArchiveConfig, ArchiveTarget};
use mcpulse_processors::stats::RuntimeStats;
use mcpulse_schemas::AlertEvent;
use mcpulse_schemas::topics::HEADER_TENANT;
use mcpulse_sinks::delivery::RetryPolicy;
use mcpulse_sinks::notify::{NotifyConfig, NotifyMetrics, NotifyOperator, NotifySetup};
use serde_json::{Value, json};

use crate::common::{MockServer, Recorded, Validator};

pub const ALERTS: &str = "t.alerts.v1";
pub const DLQ: &str = "t.dlq.v1";
pub const PD_KEY: &str = "pd-r0ut1ng-key-0123456789abcdef";
pub const WEBHOOK_ID: &str = "123456789012345678";
pub const HOOK_TOKEN: &str = "hook-t0ken-abcdefghijklmnopqrstuvwxyz";

/// PagerDuty's answer to an accepted event.
pub fn pagerduty() -> Validator {
    Arc::new(|r: &Recorded| {
        if r.path != "/v2/enqueue" {
            return Err(vec![format!("unexpected path {}", r.path)]);
        }
        Ok((
            202,
            json!({"status": "success", "message": "Event processed", "dedup_key": r.body["dedup_key"]}),
        ))
    })
}

/// A Discord webhook that creates messages on POST (`?wait=true`) and edits known ones
/// on PATCH (404 for an unknown id, as Discord).
pub fn discord() -> Validator {
    let messages: Arc<Mutex<Vec<String>>> = Arc::default();
    Arc::new(move |r: &Recorded| {
        let prefix = format!("/api/webhooks/{WEBHOOK_ID}/{HOOK_TOKEN}");
        let Some(rest) = r.path.strip_prefix(&prefix) else {
            return Err(vec![format!("path {} is not this webhook", r.path)]);
        };
        let mut known = messages.lock().unwrap();
        match (r.method.as_str(), rest) {
            ("POST", "") => {
                let id = format!("{}", 1_300_000_000_000_000_000u64 + known.len() as u64);
                known.push(id.clone());
                Ok((200, json!({"id": id, "channel_id": "42"})))
            }
            ("PATCH", rest) => {
                let id = rest.strip_prefix("/messages/").unwrap_or("");
                if known.iter().any(|m| m == id) {
                    Ok((200, json!({"id": id, "channel_id": "42"})))
                } else {
                    Ok((404, json!({"message": "Unknown Message", "code": 10008})))
                }
            }
            (m, rest) => Err(vec![format!("unexpected {m} {rest}")]),
        }
    })
}

/// The log, the archive folder, the stand-ins and a routes file.
pub struct Stage {
    pub dir: tempfile::TempDir,
    pub bus: DynBus,
    pub pd: MockServer,
    pub discord: MockServer,
    pub metrics: Arc<NotifyMetrics>,
    pub stats: Arc<RuntimeStats>,
    pub routes: PathBuf,
    groups: std::sync::atomic::AtomicU32,
}

impl Stage {
    /// Receivers `oncall` (PagerDuty), `chat` (Discord) and `both`, then `routing` (the
    /// `route:` section and anything after it).
    pub async fn start(routing: &str) -> Stage {
        let dir = tempfile::tempdir().unwrap();
        let bus = EmbeddedBus::open(EmbeddedConfig::new(dir.path().join("log"))).unwrap();
        let spec = |name: &str| TopicSpec {
            name: name.into(),
            partitions: 1,
            replication: 1,
        };
        bus.ensure_topics(&[spec(ALERTS), spec(DLQ)]).await.unwrap();
        let pd = MockServer::start(pagerduty()).await;
        let discord = MockServer::start(discord()).await;
        let stage = Stage {
            routes: dir.path().join("routes.yaml"),
            dir,
            bus,
            pd,
            discord,
            metrics: Arc::default(),
            stats: Arc::default(),
            groups: Default::default(),
        };
        stage.write_routes(routing);
        stage
    }

    /// Rewrites the routes file with the same receivers.
    pub fn write_routes(&self, routing: &str) {
        let pd = format!(
            "{{ routing_key: \"{PD_KEY}\", url: \"{}\", timeout: 5s }}",
            self.pd.url
        );
        let hook = format!(
            "{{ webhook_url: \"{}/api/webhooks/{WEBHOOK_ID}/{HOOK_TOKEN}\", timeout: 5s }}",
            self.discord.url
        );
        let yaml = format!(
            "receivers:\n  - name: oncall\n    pagerduty: {pd}\n  - name: chat\n    discord: {hook}\n  - name: both\n    pagerduty: {pd}\n    discord: {hook}\n{routing}"
        );
        std::fs::write(&self.routes, yaml).unwrap();
    }

    /// Fast retries and flushes, no reloads.
    pub fn config(&self) -> NotifyConfig {
        NotifyConfig {
            routes: Some(self.routes.clone()),
            flush_interval: Duration::from_millis(50),
            reload_interval: Duration::ZERO,
            retry: RetryPolicy {
                base: Duration::from_millis(10),
                cap: Duration::from_millis(50),
                max_attempts: 3,
            },
            ..NotifyConfig::default()
        }
    }

    pub fn silences_path(&self) -> PathBuf {
        self.dir.path().join("silences.json")
    }

    pub fn archive(&self) -> PathBuf {
        self.dir.path().join("archive")
    }

    pub fn operator(&self, config: NotifyConfig) -> NotifyOperator {
        std::fs::create_dir_all(self.archive()).unwrap();
        let local = self.archive().canonicalize().unwrap();
        let target = ArchiveTarget {
            store: Arc::new(object_store::local::LocalFileSystem::new()),
            root: object_store::path::Path::from(local.to_string_lossy().trim_start_matches('/')),
            local_root: Some(local),
        };
        NotifyOperator::new(NotifySetup {
            config,
            silences: self.silences_path(),
            archive: ArchiveConfig::default(),
            target,
            producer: self.bus.producer(),
            dlq_topic: DLQ.into(),
            metrics: self.metrics.clone(),
            stats: self.stats.clone(),
            deletion_poll: None,
        })
        .unwrap()
    }

    /// Appends events to the alerts topic as the incident stage does.
    pub async fn append(&self, events: &[AlertEvent]) {
        let messages = events
            .iter()
            .map(|e| {
                Message::new(Some(Bytes::from(e.key())), serde_json::to_vec(e).unwrap())
                    .with_header(HEADER_TENANT, e.tenant.clone())
            })
            .collect();
        self.bus.producer().send(ALERTS, messages).await.unwrap();
    }

    /// The first `n` records of `topic`, read by a fresh consumer group.
    pub async fn read(&self, topic: &str, n: usize) -> Vec<Record> {
        let group = format!("reader-{}", self.groups.fetch_add(1, Relaxed));
        let mut consumer = self
            .bus
            .consumer(&group, &[topic.to_string()])
            .await
            .unwrap();
        let mut records = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while records.len() < n {
            assert!(
                Instant::now() < deadline,
                "read {} of {n} records of {topic}",
                records.len()
            );
            if let ConsumerEvent::Records(r) =
                consumer.poll(Duration::from_millis(500)).await.unwrap()
            {
                records.extend(r);
            }
        }
        consumer.close().await.unwrap();
        records
    }

    /// Waits until no notification is queued or being delivered.
    pub async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.metrics.in_flight.load(Relaxed) > 0 {
            assert!(Instant::now() < deadline, "notifications still in flight");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every row of the `notifications` table, as JSON objects.
    pub fn rows(&self) -> Vec<Value> {
        let mut rows = Vec::new();
        for file in files(&self.archive().join("notifications"), "parquet") {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(&file).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                for i in 0..batch.num_rows() {
                    let mut row = row_json(&batch, i);
                    row["file"] = json!(file.file_name().unwrap().to_string_lossy());
                    rows.push(row);
                }
            }
        }
        rows
    }

    /// Journal entries (lines of journal objects) not yet folded into a checkpoint.
    pub fn journal(&self) -> Vec<String> {
        files(&self.archive().join("_state/notify").join(ALERTS), "ndjson")
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".journal/"))
            .flat_map(|p| {
                let text = std::fs::read_to_string(p).unwrap();
                text.lines().map(str::to_owned).collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Row `i` of `batch` as a JSON object (timestamps left out).
fn row_json(batch: &arrow::array::RecordBatch, i: usize) -> Value {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Float64Type, Int32Type};
    let mut row = serde_json::Map::new();
    for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
        let value = if col.is_null(i) {
            Value::Null
        } else {
            match field.data_type() {
                DataType::Utf8 => json!(col.as_string::<i32>().value(i)),
                DataType::Int32 => json!(col.as_primitive::<Int32Type>().value(i)),
                DataType::Float64 => json!(col.as_primitive::<Float64Type>().value(i)),
                DataType::Boolean => json!(col.as_boolean().value(i)),
                _ => continue,
            }
        };
        row.insert(field.name().clone(), value);
    }
    Value::Object(row)
}

/// Files with extension `ext` under `dir`, sorted.
pub fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == ext) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// (method, path) of each request a stand-in received.
pub fn calls(requests: &[Recorded]) -> Vec<(String, String)> {
    requests
        .iter()
        .map(|r| (r.method.to_string(), r.path.clone()))
        .collect()
}

/// `event_action` of each PagerDuty request.
pub fn pd_actions(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.body["event_action"].as_str().unwrap_or("?").to_owned())
        .collect()
}

//! The embedded log: a durable, single-node implementation of [`Bus`] for running
//! mcpulse on one machine with no services.
//!
//! Layout under [`EmbeddedConfig::dir`]:
//!
//! ```text
//! .lock                                  held while a process has the log open
//! {topic}/topic.json                     {"partitions": N}
//! {topic}/{partition}/{base:020}.log     segments of record frames (see record.rs)
//! {topic}/{partition}/{base:020}.index   sparse index of a sealed segment (a cache)
//! _groups/{group}.json                   committed offsets of a consumer group
//! ```
//!
//! Durability: a send returns once its records are written and fsynced (group commit by
//! one writer thread per partition), so an acknowledged message survives `kill -9`. On
//! open, a torn or corrupt tail of a partition's last segment (never acknowledged) is cut
//! off. Committed offsets are written to a temporary file, fsynced and renamed.
//!
//! Topics that do not exist are created on first use by a send or a consumer, with
//! `default_partitions` partitions, like Kafka's `auto.create.topics.enable`; use
//! [`Bus::ensure_topics`] to choose the partition count. `status` of an unknown topic
//! fails with `UnknownTopic` (it creates nothing).
//!
//! Consumer groups live in memory (membership, assignment; see `group.rs` for the
//! cooperative handoff) except for their committed offsets.

mod config;
mod consumer;
mod fsutil;
mod group;
mod partition;
mod producer;
mod record;
mod retention;
mod segment;
mod writer;

pub use config::EmbeddedConfig;
pub use consumer::EmbeddedConsumer;
pub use producer::EmbeddedProducer;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use self::fsutil::{GROUPS_DIR, create_dir_durable, io_error, validate_topic_name, write_atomic};
use self::group::Group;
use self::partition::PartitionLog;
use self::retention::Retention;
use self::writer::WriterHandle;
use crate::{
    Bus, BusError, Consumer, GroupStatus, Offset, PartitionStatus, Producer, TopicPartition,
    TopicSpec,
};

/// The embedded durable log. Open it with [`EmbeddedBus::open`].
pub struct EmbeddedBus {
    inner: Arc<BusInner>,
}

/// Offsets and size of one partition of the embedded log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// First offset still stored (retention moves it forward).
    pub start_offset: Offset,
    /// Offset the next appended record gets.
    pub end_offset: Offset,
    /// Number of segment files.
    pub segments: usize,
}

/// State shared by the bus, its producers and consumers.
pub(crate) struct BusInner {
    config: EmbeddedConfig,
    registry: Arc<Registry>,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    closed: AtomicBool,
    /// Bytes queued for appending but not yet durable.
    pending: Arc<AtomicU64>,
    retention: Mutex<Option<Retention>>,
    /// Held (locked) while the log is open.
    _lock: File,
}

/// The open topics.
pub(crate) struct Registry {
    topics: RwLock<HashMap<String, Arc<Topic>>>,
}

/// One topic: its partitions' logs and writers.
pub(crate) struct Topic {
    partitions: Vec<PartitionHandle>,
    round_robin: AtomicU32,
}

struct PartitionHandle {
    log: Arc<PartitionLog>,
    writer: WriterHandle,
}

/// `{topic}/topic.json`.
#[derive(Serialize, Deserialize)]
struct TopicFile {
    partitions: u32,
}

impl EmbeddedBus {
    /// Opens the log in `config.dir`, creating it when missing and recovering the topics
    /// found there (cutting off unacknowledged torn tails). Fails with `Unavailable` when
    /// another process (or another open `EmbeddedBus`) has the directory open.
    pub fn open(config: EmbeddedConfig) -> Result<Arc<EmbeddedBus>, BusError> {
        config.validate()?;
        let dir = config.dir.clone();
        create_dir_durable(&dir)?;
        let lock_path = dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error("opening", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(BusError::Unavailable(format!(
                    "the log in {} is open in another process",
                    dir.display()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(io_error("locking", &lock_path, e)),
        }
        create_dir_durable(&dir.join(GROUPS_DIR))?;
        let pending = Arc::new(AtomicU64::new(0));
        let mut topics = HashMap::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io_error("listing", &dir, e))? {
            let entry = entry.map_err(|e| io_error("listing", &dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !entry.path().is_dir() || validate_topic_name(&name).is_err() {
                continue;
            }
            let meta_path = entry.path().join("topic.json");
            let partitions = match std::fs::read(&meta_path) {
                Ok(data) => {
                    serde_json::from_slice::<TopicFile>(&data)
                        .map_err(|e| BusError::Corrupt(format!("{}: {e}", meta_path.display())))?
                        .partitions
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(topic = %name, "ignoring a topic directory without topic.json (creation interrupted)");
                    continue;
                }
                Err(e) => return Err(io_error("reading", &meta_path, e)),
            };
            let topic = Topic::open(&dir, &name, partitions, &config, &pending)?;
            topics.insert(name, Arc::new(topic));
        }
        let registry = Arc::new(Registry {
            topics: RwLock::new(topics),
        });
        let retention = Retention::spawn(Arc::clone(&registry), config.retention)?;
        let inner = BusInner {
            config,
            registry,
            groups: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            pending,
            retention: Mutex::new(Some(retention)),
            _lock: lock,
        };
        Ok(Arc::new(EmbeddedBus {
            inner: Arc::new(inner),
        }))
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &EmbeddedConfig {
        &self.inner.config
    }

    /// A producer handle (the concrete type of [`Bus::producer`]).
    pub fn embedded_producer(&self) -> EmbeddedProducer {
        EmbeddedProducer::new(Arc::clone(&self.inner))
    }

    /// Applies retention now (it also runs in the background); returns how many segments
    /// were deleted.
    pub fn enforce_retention(&self) -> Result<usize, BusError> {
        retention::enforce(&self.inner.registry, self.inner.config.retention)
    }

    /// Offsets and segment count of a partition, if its topic exists.
    pub fn partition_info(&self, tp: &TopicPartition) -> Option<PartitionInfo> {
        let log = self.inner.partition_log(tp)?;
        Some(PartitionInfo {
            start_offset: log.start_offset(),
            end_offset: log.end_offset(),
            segments: log.segment_count(),
        })
    }

    /// The partition count of each existing topic.
    pub fn topics(&self) -> BTreeMap<String, u32> {
        self.inner
            .registry
            .topics
            .read()
            .iter()
            .map(|(name, t)| (name.clone(), t.partitions.len() as u32))
            .collect()
    }

    /// Bytes accepted by `send` that are not yet durable.
    pub fn pending_bytes(&self) -> u64 {
        self.inner.pending.load(Ordering::Acquire)
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), BusError> {
        self.inner.check_open()?;
        for spec in topics {
            let topic = self.inner.topic_or_create(&spec.name, spec.partitions)?;
            let actual = topic.partitions.len() as u32;
            if actual != spec.partitions {
                return Err(BusError::PartitionMismatch {
                    topic: spec.name.clone(),
                    expected: spec.partitions,
                    actual,
                });
            }
        }
        Ok(())
    }

    fn producer(&self) -> Arc<dyn Producer> {
        Arc::new(self.embedded_producer())
    }

    async fn consumer(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Consumer>, BusError> {
        self.inner.check_open()?;
        let mut subscription = BTreeMap::new();
        for name in topics {
            let topic = self
                .inner
                .topic_or_create(name, self.inner.config.default_partitions)?;
            subscription.insert(name.clone(), topic.partitions.len() as u32);
        }
        let group = self.inner.group(group)?;
        let (member, notify) = group.join(subscription);
        Ok(Box::new(EmbeddedConsumer::new(
            Arc::clone(&self.inner),
            group,
            member,
            notify,
        )))
    }

    async fn status(&self, group: &str, topics: &[String]) -> Result<GroupStatus, BusError> {
        let group = self.inner.group(group)?;
        let mut partitions = Vec::new();
        for name in topics {
            let topic = self
                .inner
                .registry
                .get(name)
                .ok_or_else(|| BusError::UnknownTopic(name.clone()))?;
            for (p, handle) in topic.partitions.iter().enumerate() {
                let tp = TopicPartition::new(name.clone(), p as u32);
                partitions.push(PartitionStatus {
                    topic: name.clone(),
                    partition: p as u32,
                    end_offset: handle.log.end_offset(),
                    committed: group.committed(&tp),
                });
            }
        }
        Ok(GroupStatus {
            group: group.name.clone(),
            partitions,
        })
    }

    async fn shutdown(&self) -> Result<(), BusError> {
        self.inner.closed.store(true, Ordering::Release);
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.stop_background())
            .await
            .map_err(|e| BusError::Unavailable(format!("log shutdown task failed: {e}")))
    }
}

impl BusInner {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn check_open(&self) -> Result<(), BusError> {
        if self.is_closed() {
            Err(BusError::Closed)
        } else {
            Ok(())
        }
    }

    /// The log of `tp`, if its topic exists.
    pub(crate) fn partition_log(&self, tp: &TopicPartition) -> Option<Arc<PartitionLog>> {
        let topic = self.registry.get(&tp.topic)?;
        topic
            .partitions
            .get(tp.partition as usize)
            .map(|p| Arc::clone(&p.log))
    }

    /// The topic `name`, created with `partitions` partitions when missing.
    pub(crate) fn topic_or_create(
        &self,
        name: &str,
        partitions: u32,
    ) -> Result<Arc<Topic>, BusError> {
        if let Some(topic) = self.registry.get(name) {
            return Ok(topic);
        }
        validate_topic_name(name)?;
        if partitions == 0 {
            return Err(BusError::Config(format!(
                "topic {name:?} needs at least one partition"
            )));
        }
        let mut topics = self.registry.topics.write();
        if let Some(topic) = topics.get(name) {
            return Ok(Arc::clone(topic));
        }
        self.check_open()?;
        let topic = Arc::new(Topic::create(
            &self.config.dir,
            name,
            partitions,
            &self.config,
            &self.pending,
        )?);
        tracing::info!(topic = name, partitions, "created topic");
        topics.insert(name.to_owned(), Arc::clone(&topic));
        Ok(topic)
    }

    /// The group `name`, loading its committed offsets on first use.
    pub(crate) fn group(&self, name: &str) -> Result<Arc<Group>, BusError> {
        let mut groups = self.groups.lock();
        if let Some(group) = groups.get(name) {
            return Ok(Arc::clone(group));
        }
        let group = Arc::new(Group::load(
            &self.config.dir.join(GROUPS_DIR),
            name,
            self.config.rebalance_timeout,
        )?);
        groups.insert(name.to_owned(), Arc::clone(&group));
        Ok(group)
    }

    /// Reserves room for `bytes` of appends, or fails fast with `Saturated`.
    pub(crate) fn reserve_pending(&self, bytes: u64) -> Result<(), BusError> {
        let max = self.config.max_pending_bytes;
        let mut current = self.pending.load(Ordering::Acquire);
        loop {
            if current > 0 && current.saturating_add(bytes) > max {
                return Err(BusError::Saturated(format!(
                    "{current} bytes already waiting to be written (limit {max})"
                )));
            }
            match self.pending.compare_exchange_weak(
                current,
                current + bytes,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    /// Stops retention and the writers (after they finish what is queued). Idempotent.
    fn stop_background(&self) {
        if let Some(retention) = self.retention.lock().take() {
            retention.stop();
        }
        let topics: Vec<Arc<Topic>> = self.registry.topics.read().values().cloned().collect();
        for topic in topics {
            for partition in &topic.partitions {
                partition.writer.stop();
            }
        }
    }
}

impl Drop for BusInner {
    /// Dropping the last handle without `shutdown` stops the background threads too, so
    /// the directory can be reopened; it is no different from a crash for the data.
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        self.stop_background();
    }
}

impl Registry {
    fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    /// Every partition log.
    pub(crate) fn logs(&self) -> Vec<Arc<PartitionLog>> {
        let topics = self.topics.read();
        topics
            .values()
            .flat_map(|t| t.partitions.iter().map(|p| Arc::clone(&p.log)))
            .collect()
    }
}

impl Topic {
    /// Creates the topic's directories and first segments, then `topic.json`, which makes
    /// the topic exist.
    fn create(
        dir: &Path,
        name: &str,
        partitions: u32,
        config: &EmbeddedConfig,
        pending: &Arc<AtomicU64>,
    ) -> Result<Topic, BusError> {
        let topic_dir = dir.join(name);
        create_dir_durable(&topic_dir)?;
        let topic = Self::open(dir, name, partitions, config, pending)?;
        let meta = serde_json::to_vec(&TopicFile { partitions })
            .map_err(|e| BusError::Unavailable(format!("encoding topic metadata: {e}")))?;
        write_atomic(&topic_dir.join("topic.json"), &meta)?;
        Ok(topic)
    }

    /// Opens (recovering) the partitions of an existing topic and starts their writers.
    fn open(
        dir: &Path,
        name: &str,
        partitions: u32,
        config: &EmbeddedConfig,
        pending: &Arc<AtomicU64>,
    ) -> Result<Topic, BusError> {
        if partitions == 0 {
            return Err(BusError::Corrupt(format!(
                "topic {name:?} has 0 partitions"
            )));
        }
        let topic_name: Arc<str> = Arc::from(name);
        let mut handles = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let log = PartitionLog::open(
                Arc::clone(&topic_name),
                p,
                dir.join(name).join(p.to_string()),
            )?;
            let writer =
                WriterHandle::spawn(Arc::clone(&log), config.segment_bytes, Arc::clone(pending))?;
            handles.push(PartitionHandle { log, writer });
        }
        Ok(Topic {
            partitions: handles,
            round_robin: AtomicU32::new(0),
        })
    }

    /// The next partition counter for unkeyed messages.
    pub(crate) fn next_round_robin(&self) -> u32 {
        self.round_robin.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;

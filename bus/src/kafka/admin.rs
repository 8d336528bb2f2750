//! Topic creation and validation, and group offsets, through the admin API.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};

use super::context::ClientCtx;
use super::errors::bus_error;
use super::{KafkaConfig, client_config};
use crate::{BusError, GroupStatus, PartitionStatus, TopicSpec};

/// What the cluster says about one topic.
struct TopicInfo {
    partitions: u32,
    /// The fewest replicas any of its partitions has.
    replication: u16,
}

/// Admin requests of one bus; blocking librdkafka calls run on the blocking pool.
pub(crate) struct Admin {
    client: AdminClient<ClientCtx>,
    context: ClientCtx,
    config: KafkaConfig,
    /// One offsets reader per group asked about (they never join the group).
    readers: Mutex<HashMap<String, Arc<BaseConsumer<ClientCtx>>>>,
}

impl Admin {
    pub(crate) fn new(config: &KafkaConfig, context: ClientCtx) -> Result<Self, BusError> {
        let client = client_config::common(config)
            .create_with_context(context.clone())
            .map_err(|e| BusError::Config(format!("kafka admin client: {e}")))?;
        Ok(Self {
            client,
            context,
            config: config.clone(),
            readers: Mutex::new(HashMap::new()),
        })
    }

    /// Partition counts of every topic in the cluster (asking for all topics never
    /// auto-creates one).
    pub(crate) fn topic_partitions(&self) -> Result<BTreeMap<String, u32>, BusError> {
        Ok(self
            .topics()?
            .into_iter()
            .map(|(name, t)| (name, t.partitions))
            .collect())
    }

    /// Partition count and replication factor of every topic in the cluster.
    fn topics(&self) -> Result<BTreeMap<String, TopicInfo>, BusError> {
        let metadata = self
            .client
            .inner()
            .fetch_metadata(None, self.config.request_timeout)
            .map_err(|e| self.unreachable(&e.to_string()))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| {
                let info = TopicInfo {
                    partitions: t.partitions().len() as u32,
                    replication: t
                        .partitions()
                        .iter()
                        .map(|p| p.replicas().len())
                        .min()
                        .unwrap_or(0) as u16,
                };
                (t.name().to_string(), info)
            })
            .collect())
    }

    /// The start-up error for brokers that do not answer, with librdkafka's reason.
    pub(crate) fn unreachable(&self, error: &str) -> BusError {
        let reason = self
            .context
            .diagnostics
            .last_error()
            .unwrap_or_else(|| error.to_string());
        BusError::Unavailable(format!(
            "cannot reach Kafka brokers {} within {:?}: {reason}",
            self.config.bootstrap_servers(),
            self.config.request_timeout
        ))
    }

    pub(crate) async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), BusError> {
        let existing = self.topics()?;
        for spec in topics {
            match existing.get(&spec.name) {
                Some(info) if info.replication < spec.replication => {
                    tracing::warn!(
                        topic = %spec.name,
                        replication = info.replication,
                        configured = spec.replication,
                        "existing topic has fewer replicas than configured; mcpulse does not change it"
                    );
                }
                _ => {}
            }
        }
        let missing: Vec<&TopicSpec> = topics
            .iter()
            .filter(|t| !existing.contains_key(&t.name))
            .collect();
        if !missing.is_empty() {
            let max_message_bytes = self.config.max_message_bytes.to_string();
            let new_topics: Vec<NewTopic<'_>> = missing
                .iter()
                .map(|t| {
                    NewTopic::new(
                        &t.name,
                        t.partitions as i32,
                        TopicReplication::Fixed(t.replication as i32),
                    )
                    .set("max.message.bytes", &max_message_bytes)
                })
                .collect();
            let options = AdminOptions::new()
                .request_timeout(Some(self.config.request_timeout))
                .operation_timeout(Some(self.config.request_timeout));
            let results = self
                .client
                .create_topics(&new_topics, &options)
                .await
                .map_err(|e| bus_error("creating topics", &e))?;
            for result in results {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        return Err(BusError::Config(format!("creating topic {name:?}: {code}")));
                    }
                }
            }
            tracing::info!(topics = ?missing.iter().map(|t| &t.name).collect::<Vec<_>>(), "created Kafka topics");
        }
        // Created topics take a moment to show in metadata everywhere.
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let existing = self.topic_partitions()?;
            let mut pending = None;
            for spec in topics {
                match existing.get(&spec.name) {
                    Some(&actual) if actual == spec.partitions => {}
                    Some(&actual) if !missing.iter().any(|m| m.name == spec.name) => {
                        return Err(BusError::PartitionMismatch {
                            topic: spec.name.clone(),
                            expected: spec.partitions,
                            actual,
                        });
                    }
                    _ => pending = Some(spec.name.clone()),
                }
            }
            match pending {
                None => return Ok(()),
                Some(name) if Instant::now() >= deadline => {
                    return Err(BusError::Unavailable(format!(
                        "topic {name:?} was created but does not show in metadata"
                    )));
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub(crate) fn status(&self, group: &str, topics: &[String]) -> Result<GroupStatus, BusError> {
        let existing = self.topic_partitions()?;
        let reader = self.reader(group)?;
        let timeout = self.config.request_timeout;
        let mut tpl = TopicPartitionList::new();
        let mut partitions = Vec::new();
        for topic in topics {
            let count = *existing
                .get(topic)
                .ok_or_else(|| BusError::UnknownTopic(topic.clone()))?;
            for p in 0..count {
                tpl.add_partition(topic, p as i32);
                let (_low, high) = self
                    .client
                    .inner()
                    .fetch_watermarks(topic, p as i32, timeout)
                    .map_err(|e| bus_error(&format!("end offset of {topic}[{p}]"), &e))?;
                partitions.push(PartitionStatus {
                    topic: topic.clone(),
                    partition: p,
                    end_offset: high.max(0) as u64,
                    committed: None,
                });
            }
        }
        let committed = reader
            .committed_offsets(tpl, timeout)
            .map_err(|e| bus_error(&format!("committed offsets of group {group}"), &e))?;
        for status in &mut partitions {
            if let Some(KafkaOffset::Offset(o)) = committed
                .find_partition(&status.topic, status.partition as i32)
                .map(|elem| elem.offset())
            {
                status.committed = Some(o.max(0) as u64);
            }
        }
        Ok(GroupStatus {
            group: group.to_string(),
            partitions,
        })
    }

    fn reader(&self, group: &str) -> Result<Arc<BaseConsumer<ClientCtx>>, BusError> {
        let mut readers = self.readers.lock();
        if let Some(reader) = readers.get(group) {
            return Ok(reader.clone());
        }
        let reader: BaseConsumer<ClientCtx> = client_config::offsets_reader(&self.config, group)
            .create_with_context(self.context.clone())
            .map_err(|e| BusError::Config(format!("kafka offsets reader: {e}")))?;
        let reader = Arc::new(reader);
        readers.insert(group.to_string(), reader.clone());
        Ok(reader)
    }
}

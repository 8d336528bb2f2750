//! The Kafka backend of the log, on rdkafka (bundled librdkafka).
//!
//! - Producer: idempotent (`enable.idempotence=true`, `acks=all`), Java-compatible
//!   murmur2 partitioning (the same partition [`crate::partition_for_key`] gives), and a
//!   send returns only once every message has its delivery report.
//! - Consumer: `enable.auto.commit=false`, `enable.auto.offset.store=false`,
//!   cooperative-sticky assignment; offsets are committed only by the caller, for output
//!   it made durable; revocations go through the trait's Revoked → commit → next-poll
//!   handshake (see [`consumer`]).
//! - Admin: topics created on start with the configured partitions and replication, or
//!   validated; group status from committed offsets and high watermarks.

mod admin;
pub mod client_config;
mod config;
mod consumer;
mod context;
mod errors;
pub mod mock;
mod producer;

pub use config::{KafkaConfig, RESERVED_OPTIONS, is_secret_option};

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use async_trait::async_trait;
use rdkafka::producer::FutureProducer;

use crate::{Bus, BusError, Consumer, GroupStatus, Producer, TopicSpec};
use admin::Admin;
use context::ClientCtx;
use producer::{KafkaProducer, ProducerHandle};

/// A Kafka cluster as the log.
pub struct KafkaBus {
    config: KafkaConfig,
    context: ClientCtx,
    producer: Arc<KafkaProducer>,
    admin: Arc<Admin>,
}

impl KafkaBus {
    /// Connects to the brokers, waiting at most `request_timeout` for their metadata.
    /// Unreachable brokers give [`BusError::Unavailable`] naming them and librdkafka's
    /// reason.
    pub async fn connect(config: KafkaConfig) -> Result<Arc<Self>, BusError> {
        config.validate().map_err(BusError::Config)?;
        let context = ClientCtx::default();
        let inner: FutureProducer<ClientCtx> = client_config::producer(&config)
            .create_with_context(context.clone())
            .map_err(|e| BusError::Config(format!("kafka producer: {e}")))?;
        let admin = Arc::new(Admin::new(&config, context.clone())?);
        let probe = admin.clone();
        tokio::task::spawn_blocking(move || probe.topic_partitions())
            .await
            .map_err(|e| BusError::Unavailable(format!("metadata task: {e}")))??;
        tracing::info!(brokers = %config.bootstrap_servers(), "connected to Kafka");
        Ok(Arc::new(Self {
            config,
            context,
            producer: Arc::new(KafkaProducer {
                inner,
                closed: AtomicBool::new(false),
            }),
            admin,
        }))
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), BusError> {
        self.admin.ensure_topics(topics).await
    }

    fn producer(&self) -> Arc<dyn Producer> {
        Arc::new(ProducerHandle(self.producer.clone()))
    }

    async fn consumer(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Consumer>, BusError> {
        let consumer = consumer::KafkaConsumer::start(
            &self.config,
            self.context.diagnostics.clone(),
            group,
            topics,
        )?;
        Ok(Box::new(consumer))
    }

    async fn status(&self, group: &str, topics: &[String]) -> Result<GroupStatus, BusError> {
        let admin = self.admin.clone();
        let (group, topics) = (group.to_string(), topics.to_vec());
        tokio::task::spawn_blocking(move || admin.status(&group, &topics))
            .await
            .map_err(|e| BusError::Unavailable(format!("status task: {e}")))?
    }

    async fn shutdown(&self) -> Result<(), BusError> {
        let producer = self.producer.clone();
        let timeout = self.config.delivery_timeout;
        tokio::task::spawn_blocking(move || producer.close(timeout))
            .await
            .map_err(|e| BusError::Unavailable(format!("shutdown task: {e}")))?
    }
}

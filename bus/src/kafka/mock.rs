//! librdkafka's in-process mock cluster as a [`Bus`], for tests: consumer groups,
//! commits, the idempotent producer, and fault injection (broker down, request errors,
//! leader changes) without a broker to install.

use std::sync::Arc;

use super::{KafkaBus, KafkaConfig};
use crate::{Bus, BusError, Consumer, DynBus, GroupStatus, Producer, TopicSpec};
use async_trait::async_trait;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// A mock cluster that can be shared across tasks.
pub struct MockKafka(MockCluster<'static, DefaultProducerContext>);

// SAFETY: every mock-cluster call posts an op to the cluster's own thread and waits for
// its answer (`rd_kafka_op_req` on `mcluster->ops`); librdkafka makes them thread-safe.
unsafe impl Send for MockKafka {}
unsafe impl Sync for MockKafka {}

impl MockKafka {
    /// Starts a mock cluster of `brokers` brokers (it stops when dropped).
    pub fn new(brokers: i32) -> Arc<Self> {
        Arc::new(MockKafka(MockCluster::new(brokers).expect("mock cluster")))
    }

    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.0
    }

    /// A client configuration for the cluster (short session timeout for quick
    /// rebalances).
    pub fn config(&self) -> KafkaConfig {
        let mut config = KafkaConfig::new(self.0.bootstrap_servers());
        config.session_timeout = std::time::Duration::from_secs(6);
        config
    }

    /// A bus on the mock cluster.
    pub async fn bus(self: &Arc<Self>) -> DynBus {
        self.bus_with(self.config()).await
    }

    pub async fn bus_with(self: &Arc<Self>, config: KafkaConfig) -> DynBus {
        let inner = KafkaBus::connect(config).await.expect("connect");
        Arc::new(MockTopics {
            inner,
            mock: self.clone(),
        })
    }
}

/// The mock broker has no CreateTopics API: topics are created through the mock cluster,
/// then validated by the backend's own `ensure_topics`.
struct MockTopics {
    inner: Arc<KafkaBus>,
    mock: Arc<MockKafka>,
}

#[async_trait]
impl Bus for MockTopics {
    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), BusError> {
        for spec in topics {
            // Fails harmlessly when the topic exists; the validation below decides.
            let _ = self.mock.0.create_topic(
                &spec.name,
                spec.partitions as i32,
                spec.replication as i32,
            );
        }
        self.inner.ensure_topics(topics).await
    }

    fn producer(&self) -> Arc<dyn Producer> {
        self.inner.producer()
    }

    async fn consumer(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Consumer>, BusError> {
        self.inner.consumer(group, topics).await
    }

    async fn status(&self, group: &str, topics: &[String]) -> Result<GroupStatus, BusError> {
        self.inner.status(group, topics).await
    }

    async fn shutdown(&self) -> Result<(), BusError> {
        self.inner.shutdown().await
    }
}

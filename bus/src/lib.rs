//! The log: the `Producer`/`Consumer` abstraction every mcpulse role talks to, and its
//! backends. The embedded backend ([`embedded`]) is a durable single-node log for running
//! on one machine with no services; the Kafka backend ([`kafka`]) runs the same contract on a Kafka cluster.
//!
//! The bus knows nothing about event types: messages are keys, values and headers.
//! Delivery is at-least-once: a consumer commits the offset *after* what it produced from
//! a message is durable, and after a crash it is redelivered everything past its last
//! commit.

mod error;
mod partitioner;
mod types;

pub mod conformance;
pub mod embedded;
pub mod kafka;

pub use error::BusError;
pub use partitioner::partition_for_key;
pub use types::{
    ConsumerEvent, Delivery, GroupStatus, Header, Message, Offset, Partition, PartitionStatus,
    Record, TopicPartition, TopicSpec,
};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

/// Appends messages to topics.
#[async_trait]
pub trait Producer: Send + Sync {
    /// Appends `messages` to `topic`, each to the partition its key hashes to (or round
    /// robin when it has none). Returns only once every message is durable: for the
    /// embedded log, fsynced; for Kafka, acknowledged in a delivery report. On error none
    /// of the messages may be assumed written (some may have been: callers retry the whole
    /// call, consumers are idempotent).
    async fn send(&self, topic: &str, messages: Vec<Message>) -> Result<Vec<Delivery>, BusError>;
}

/// Reads topics as a member of a consumer group.
#[async_trait]
pub trait Consumer: Send {
    /// Waits up to `timeout` for the next event. Rebalances surface as
    /// [`ConsumerEvent::Assigned`] / [`ConsumerEvent::Revoked`]; on `Revoked` the caller
    /// finishes and commits work for those partitions *before* its next `poll`, after which
    /// they belong to another member. `Records(vec![])` means the timeout passed.
    async fn poll(&mut self, timeout: Duration) -> Result<ConsumerEvent, BusError>;

    /// Durably records, per partition, the next offset to consume. Fails with
    /// [`BusError::NotAssigned`] for a partition this member no longer owns (a stale
    /// acknowledgement from a previous assignment), and never moves an offset backwards.
    async fn commit(&mut self, offsets: &[(TopicPartition, Offset)]) -> Result<(), BusError>;

    /// The partitions this member may commit now: those assigned to it, plus those the
    /// last `poll` reported [`ConsumerEvent::Revoked`] (committable until the next poll).
    fn assignment(&self) -> Vec<TopicPartition>;

    /// Stops fetching from a partition (e.g. while the next stage is failing) without
    /// giving it up; `resume` starts again from `offset`.
    fn pause(&mut self, tp: &TopicPartition) -> Result<(), BusError>;

    /// Resumes fetching a paused partition from `offset` (the first not yet processed).
    fn resume(&mut self, tp: &TopicPartition, offset: Offset) -> Result<(), BusError>;

    /// Leaves the group, handing its partitions to the remaining members.
    async fn close(self: Box<Self>) -> Result<(), BusError>;
}

/// A log backend: creates producers and consumers and reports offsets.
#[async_trait]
pub trait Bus: Send + Sync {
    /// Creates the topics that are missing; validates the partition count of those that exist.
    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), BusError>;

    /// A producer handle (cheap to clone).
    fn producer(&self) -> Arc<dyn Producer>;

    /// Joins consumer group `group` subscribed to `topics`.
    async fn consumer(&self, group: &str, topics: &[String])
    -> Result<Box<dyn Consumer>, BusError>;

    /// Per partition of `topics`: end offset and the committed offset of `group`.
    async fn status(&self, group: &str, topics: &[String]) -> Result<GroupStatus, BusError>;

    /// Waits for in-flight appends to be durable and stops background work.
    async fn shutdown(&self) -> Result<(), BusError>;
}

/// Shared handle to a log backend.
pub type DynBus = Arc<dyn Bus>;

/// Default timeout a runtime uses between polls when idle.
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_millis(200);

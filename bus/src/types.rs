//! Plain data types of the log.

use bytes::Bytes;

/// Partition number within a topic.
pub type Partition = u32;
/// Position of a message in a partition; the first message is 0.
pub type Offset = u64;

/// A topic and one of its partitions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: Partition,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: Partition) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// A message header (Kafka record header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Bytes,
}

impl Header {
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// A message to append.
#[derive(Clone, Debug, Default)]
pub struct Message {
    /// Partitioning key; messages with the same key land in the same partition, in order.
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<Header>,
    /// Producer timestamp in Unix milliseconds; the log's append time when `None`.
    pub timestamp_ms: Option<i64>,
}

impl Message {
    pub fn new(key: Option<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            key,
            value: value.into(),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }
}

/// Where an appended message landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub partition: Partition,
    pub offset: Offset,
}

/// A message read from the log.
#[derive(Clone, Debug)]
pub struct Record {
    pub topic: String,
    pub partition: Partition,
    pub offset: Offset,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<Header>,
    pub timestamp_ms: i64,
}

impl Record {
    /// The first header named `key`.
    pub fn header(&self, key: &str) -> Option<&Bytes> {
        self.headers.iter().find(|h| h.key == key).map(|h| &h.value)
    }

    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), self.partition)
    }
}

/// What a consumer's `poll` returns.
#[derive(Debug)]
pub enum ConsumerEvent {
    /// Messages in offset order per partition (possibly empty when the poll timed out).
    Records(Vec<Record>),
    /// Partitions newly assigned to this member; reading starts at the committed offset.
    Assigned(Vec<TopicPartition>),
    /// Partitions being taken away: finish and commit their work before the next poll.
    Revoked(Vec<TopicPartition>),
}

/// A topic to create or validate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
    /// Replication factor (ignored by the embedded log).
    pub replication: u16,
}

/// Offsets of one partition as seen by one consumer group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: Partition,
    /// Offset the next appended message will get.
    pub end_offset: Offset,
    /// Next offset the group will consume, if it ever committed.
    pub committed: Option<Offset>,
}

impl PartitionStatus {
    /// Messages appended but not yet committed by the group.
    pub fn lag(&self) -> u64 {
        self.end_offset.saturating_sub(self.committed.unwrap_or(0))
    }
}

/// Offsets of a group across the partitions of its topics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStatus {
    pub group: String,
    pub partitions: Vec<PartitionStatus>,
}

impl GroupStatus {
    pub fn total_lag(&self) -> u64 {
        self.partitions.iter().map(PartitionStatus::lag).sum()
    }
}

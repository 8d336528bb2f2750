//! The contract between the runtime and a stateful operator.

use async_trait::async_trait;
use mcpulse_bus::{Offset, Record, TopicPartition};

/// Why an operator could not handle a record or make its output durable.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The record cannot be decoded; it goes to the dead-letter topic and is skipped.
    #[error("undecodable record: {0}")]
    Decode(String),
    /// The next stage (object store, log) failed in a way that may pass; the runtime
    /// keeps the state, backs off and tries again without moving offsets.
    #[error("retryable failure: {0}")]
    Retryable(String),
    /// A failure retrying cannot fix (bad configuration, a bug); the runtime stops.
    #[error("fatal failure: {0}")]
    Fatal(String),
}

impl OperatorError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, OperatorError::Retryable(_))
    }
}

/// A stateful stream operator driven by [`crate::Runtime`].
///
/// The runtime hands records over in offset order per partition. The operator buffers
/// what it produces and, when flushed, makes it durable and reports per partition the
/// next offset whose output (and everything before it) is durable; the runtime commits
/// exactly those offsets.
#[async_trait]
pub trait Operator: Send {
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;

    /// Takes one record. `Decode` errors send the record to the dead-letter topic, after
    /// which the runtime calls [`Operator::skip`].
    async fn process(&mut self, record: &Record) -> Result<(), OperatorError>;

    /// Marks a record as handled without output (it was dead-lettered).
    fn skip(&mut self, tp: &TopicPartition, offset: Offset);

    /// Whether some buffered output is due (size, age or a recorded cut point reached).
    fn flush_due(&self) -> bool;

    /// Makes durable the output that is due, or all of it when `all` is set (shutdown,
    /// revocation), optionally only for `partitions`. Returns the offsets to commit.
    async fn flush(
        &mut self,
        partitions: Option<&[TopicPartition]>,
        all: bool,
    ) -> Result<Vec<(TopicPartition, Offset)>, OperatorError>;

    /// Forgets the state of partitions that were revoked (after they were flushed).
    fn release(&mut self, partitions: &[TopicPartition]);
}

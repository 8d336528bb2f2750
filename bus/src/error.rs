//! Errors of the log, each saying whether retrying can help.

use crate::TopicPartition;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The log cannot take more right now (write queue full); retry after a pause.
    #[error("the log is saturated: {0}")]
    Saturated(String),
    /// The backend is temporarily unreachable or failing (broker down, disk I/O error).
    #[error("the log is unavailable: {0}")]
    Unavailable(String),
    #[error("I/O error in the log: {0}")]
    Io(#[from] std::io::Error),
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} exists with {actual} partitions, configured {expected}")]
    PartitionMismatch {
        topic: String,
        expected: u32,
        actual: u32,
    },
    /// A commit (or other operation) on a partition this member does not own: a stale
    /// acknowledgement from an earlier assignment generation.
    #[error("partition {0} is not assigned to this consumer")]
    NotAssigned(TopicPartition),
    /// Stored log data failed its checksum beyond the recoverable tail.
    #[error("corrupt log data: {0}")]
    Corrupt(String),
    /// The log refused this message for what it is (too large, invalid); sending the same
    /// message again cannot succeed.
    #[error("the log refused the message: {0}")]
    Rejected(String),
    #[error("invalid log configuration: {0}")]
    Config(String),
    #[error("the log is shut down")]
    Closed,
}

impl BusError {
    /// Whether the same call may succeed if retried later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            BusError::Saturated(_) | BusError::Unavailable(_) | BusError::Io(_)
        )
    }
}

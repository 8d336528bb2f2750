//! librdkafka errors as [`BusError`]s, each saying whether a retry can help.

use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};

use crate::BusError;

/// Maps an error of a produce, commit or admin call.
pub(crate) fn bus_error(context: &str, error: &KafkaError) -> BusError {
    let message = format!("{context}: {error}");
    match error.rdkafka_error_code() {
        Some(Code::QueueFull) => BusError::Saturated(message),
        Some(Code::MessageSizeTooLarge | Code::InvalidMessageSize | Code::InvalidRecord) => {
            BusError::Rejected(message)
        }
        Some(
            Code::TopicAuthorizationFailed
            | Code::GroupAuthorizationFailed
            | Code::ClusterAuthorizationFailed
            | Code::SaslAuthenticationFailed
            | Code::Authentication
            | Code::InvalidArgument
            | Code::InvalidConfig
            | Code::UnsupportedVersion
            | Code::UnsupportedFeature
            | Code::Fatal,
        ) => BusError::Config(message),
        _ => BusError::Unavailable(message),
    }
}

/// Maps the error of a commit. A commit refused because the group is mid-rebalance or
/// this member's generation just ended (IllegalGeneration, UnknownMemberId, ...) is a
/// group-wide condition, not a verdict on any one partition: the member rejoins, keeps
/// most partitions under cooperative assignment, and the commit can be retried. Whether a
/// partition is still this member's is decided by the handle's own assignment, which
/// answers [`BusError::NotAssigned`] once a revocation has passed.
pub(crate) fn commit_error(error: &KafkaError) -> BusError {
    match error.rdkafka_error_code() {
        Some(
            Code::IllegalGeneration
            | Code::UnknownMemberId
            | Code::FencedInstanceId
            | Code::StaleMemberEpoch
            | Code::RebalanceInProgress,
        ) => BusError::Unavailable(format!(
            "commit refused while the group rebalances ({error}); retry after the next poll"
        )),
        _ => bus_error("commit", error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_or_not() {
        let full = KafkaError::MessageProduction(Code::QueueFull);
        assert!(bus_error("send", &full).is_retryable());
        let timeout = KafkaError::MessageProduction(Code::MessageTimedOut);
        assert!(bus_error("send", &timeout).is_retryable());
        let large = KafkaError::MessageProduction(Code::MessageSizeTooLarge);
        assert!(!bus_error("send", &large).is_retryable());
        let generation = KafkaError::ConsumerCommit(Code::IllegalGeneration);
        assert!(commit_error(&generation).is_retryable());
    }
}

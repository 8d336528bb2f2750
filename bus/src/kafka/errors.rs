//! librdkafka errors as [`BusError`]s, each saying whether a retry can help.

use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};

use crate::{BusError, TopicPartition};

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

/// Maps the error of a commit: a commit refused because this member's generation is over
/// (it was thrown out of the group, its partitions are someone else's) is a stale
/// acknowledgement, [`BusError::NotAssigned`].
pub(crate) fn commit_error(error: &KafkaError, first: &TopicPartition) -> BusError {
    match error.rdkafka_error_code() {
        Some(
            Code::IllegalGeneration
            | Code::UnknownMemberId
            | Code::FencedInstanceId
            | Code::StaleMemberEpoch
            | Code::UnknownTopicOrPartition,
        ) => BusError::NotAssigned(first.clone()),
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
        let tp = TopicPartition::new("t", 1);
        assert!(matches!(commit_error(&generation, &tp), BusError::NotAssigned(p) if p == tp));
    }
}

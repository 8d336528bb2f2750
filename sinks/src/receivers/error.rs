//! Errors of receivers: a delivery error says whether retrying can help; a config error
//! names the receiver and field. Neither ever carries a secret (texts pass a
//! [`Redactor`](super::Redactor) before they are built).

use std::time::Duration;

/// Why a delivery failed, and whether to try again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Trying again later can succeed: a network error, a timeout, 408, 429, 5xx, an SMTP
    /// 4xx reply. `retry_after` is the server's own hint (`Retry-After`, Discord's
    /// `retry_after`): wait at least that long.
    #[error("retryable: {reason}")]
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Will fail the same way again (4xx other than 408/429, SMTP 5xx, a webhook that is
    /// gone): dead-letter the notification with this reason.
    #[error("permanent: {reason}")]
    Permanent { reason: String },
}

impl DeliveryError {
    pub fn retryable(reason: impl Into<String>) -> Self {
        DeliveryError::Retryable {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        DeliveryError::Permanent {
            reason: reason.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, DeliveryError::Retryable { .. })
    }

    /// The server's minimum wait, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Retryable { retry_after, .. } => *retry_after,
            DeliveryError::Permanent { .. } => None,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            DeliveryError::Retryable { reason, .. } | DeliveryError::Permanent { reason } => reason,
        }
    }
}

/// A receiver config that cannot work. Never includes a secret's value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{receiver}.{field}: {message}")]
pub struct ConfigError {
    /// `pagerduty`, `opsgenie`, `discord`, `email` or `webhook` (`http` for the shared
    /// HTTP client).
    pub receiver: &'static str,
    /// The offending field.
    pub field: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(receiver: &'static str, field: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            receiver,
            field,
            message: message.into(),
        }
    }
}

//! What a request can fail with, and how each failure is reported over HTTP and gRPC.

use std::time::Duration;

use http::StatusCode;
use mcpulse_bus::BusError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Too much in flight right now; retry shortly (HTTP 503, gRPC UNAVAILABLE).
    #[error("{message}")]
    Busy {
        message: String,
        retry_after: Duration,
    },
    /// The archive is behind the log; retry later (HTTP 429, gRPC RESOURCE_EXHAUSTED).
    #[error("{message}")]
    Backlogged {
        message: String,
        retry_after: Duration,
    },
    /// The log failed; the request may be retried (HTTP 503, gRPC UNAVAILABLE).
    #[error("{source}")]
    Log {
        #[source]
        source: BusError,
        retry_after: Duration,
    },
}

impl IngestError {
    /// Whether the client should retry the same request.
    pub fn is_retryable(&self) -> bool {
        match self {
            IngestError::Busy { .. } | IngestError::Backlogged { .. } => true,
            IngestError::Log { source, .. } => source.is_retryable(),
            _ => false,
        }
    }

    /// The delay clients are told to wait before retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            IngestError::Busy { retry_after, .. } | IngestError::Backlogged { retry_after, .. } => {
                Some(*retry_after)
            }
            IngestError::Log {
                retry_after,
                source,
            } if source.is_retryable() => Some(*retry_after),
            _ => None,
        }
    }

    pub fn http_status(&self) -> StatusCode {
        match self {
            IngestError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            IngestError::Forbidden(_) => StatusCode::FORBIDDEN,
            IngestError::BadRequest(_) => StatusCode::BAD_REQUEST,
            IngestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::Backlogged { .. } => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Log { source, .. } if source.is_retryable() => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            IngestError::Log { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            IngestError::Unauthenticated(_) => tonic::Code::Unauthenticated,
            IngestError::Forbidden(_) => tonic::Code::PermissionDenied,
            IngestError::BadRequest(_) | IngestError::UnsupportedMediaType(_) => {
                tonic::Code::InvalidArgument
            }
            IngestError::PayloadTooLarge(_) => tonic::Code::ResourceExhausted,
            IngestError::Busy { .. } => tonic::Code::Unavailable,
            IngestError::Backlogged { .. } => tonic::Code::ResourceExhausted,
            IngestError::Log { source, .. } if source.is_retryable() => tonic::Code::Unavailable,
            IngestError::Log { .. } => tonic::Code::Internal,
        }
    }

    pub(crate) fn from_bus(source: BusError, retry_after: Duration) -> Self {
        match source {
            // Kafka refuses a message above its size limit: the same request can never
            // succeed, the client must send smaller batches.
            BusError::Rejected(reason) => IngestError::PayloadTooLarge(format!(
                "the log refused the request ({reason}); send smaller batches"
            )),
            source => IngestError::Log {
                source,
                retry_after,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_errors_map_to_retryable_or_final_statuses() {
        let retry = Duration::from_secs(1);
        let down = IngestError::from_bus(BusError::Unavailable("broker down".into()), retry);
        assert!(down.is_retryable());
        assert_eq!(down.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(down.grpc_code(), tonic::Code::Unavailable);
        assert_eq!(down.retry_after(), Some(retry));

        let too_large =
            IngestError::from_bus(BusError::Rejected("message too large".into()), retry);
        assert!(!too_large.is_retryable());
        assert_eq!(too_large.http_status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            too_large.to_string().contains("smaller batches"),
            "{too_large}"
        );
    }
}

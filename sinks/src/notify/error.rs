//! Errors of the notification stage: whether retrying can help, and never a secret
//! (texts are redacted before they are built).

use mcpulse_processors::OperatorError;

/// Why the stage cannot start, load a file or make its output durable.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A routes or silences file cannot be used (fix the file; retrying will not help).
    #[error("{0}")]
    Config(String),
    /// The archive (checkpoints, journal, rows) or the log failed in a way that may pass.
    #[error("{0}")]
    Retryable(String),
    /// State that cannot be read back (a corrupt checkpoint): stop rather than resend.
    #[error("{0}")]
    Fatal(String),
}

impl NotifyError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, NotifyError::Retryable(_))
    }
}

impl From<NotifyError> for OperatorError {
    fn from(e: NotifyError) -> Self {
        match e {
            NotifyError::Retryable(m) => OperatorError::Retryable(m),
            NotifyError::Config(m) | NotifyError::Fatal(m) => OperatorError::Fatal(m),
        }
    }
}

impl From<OperatorError> for NotifyError {
    fn from(e: OperatorError) -> Self {
        match e {
            OperatorError::Retryable(m) => NotifyError::Retryable(m),
            OperatorError::Decode(m) | OperatorError::Fatal(m) => NotifyError::Fatal(m),
        }
    }
}

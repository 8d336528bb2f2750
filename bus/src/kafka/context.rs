//! librdkafka's callbacks: logs go to `tracing`, and the last error is kept so start-up
//! failures can say *why* the brokers are unreachable.

use std::sync::Arc;

use parking_lot::Mutex;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// What librdkafka last complained about.
#[derive(Debug, Default)]
pub(crate) struct Diagnostics {
    last_error: Mutex<Option<String>>,
}

impl Diagnostics {
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    fn record(&self, message: String) {
        *self.last_error.lock() = Some(message);
    }
}

/// The context of producers, admin clients and status consumers.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientCtx {
    pub(crate) diagnostics: Arc<Diagnostics>,
}

impl ClientContext for ClientCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_line(&self.diagnostics, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, reason, "kafka client error");
        // "All broker connections are down" follows the specific failure (connection
        // refused, TLS, authentication): keep the specific one.
        let generic = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        if !generic || self.diagnostics.last_error().is_none() {
            self.diagnostics.record(format!("{error}: {reason}"));
        }
    }
}

impl ConsumerContext for ClientCtx {}

pub(crate) fn log_line(
    diagnostics: &Diagnostics,
    level: RDKafkaLogLevel,
    fac: &str,
    message: &str,
) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::warn!(target: "librdkafka", facility = fac, "{message}");
            diagnostics.record(message.to_string());
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", facility = fac, "{message}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", facility = fac, "{message}")
        }
        RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "librdkafka", facility = fac, "{message}")
        }
    }
}

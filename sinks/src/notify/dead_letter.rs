//! Notifications that failed for good go to the dead-letter topic (`dlq.v1`), keyed like
//! the alert (`{tenant}/{incident_id}`): the event, the receiver and why, with the origin
//! and the error in the usual `mcpulse-dlq-*` headers. Nothing holds a secret: receiver
//! errors are redacted where they are made, and again with the routes file's values.

use std::sync::Arc;

use bytes::Bytes;
use mcpulse_bus::{BusError, Message, Producer};
use mcpulse_schemas::topics::{
    HEADER_CONTENT_TYPE, HEADER_DLQ_ERROR, HEADER_DLQ_OFFSET, HEADER_DLQ_PARTITION,
    HEADER_DLQ_TOPIC, HEADER_TENANT,
};
use serde_json::json;

use crate::receivers::DeliveryError;

use super::dispatch::Job;

/// Header naming the receiver a dead-lettered notification was for.
pub const HEADER_DLQ_RECEIVER: &str = "mcpulse-dlq-receiver";

/// Writes failed notifications to the dead-letter topic.
#[derive(Clone)]
pub struct DeadLetterOut {
    producer: Arc<dyn Producer>,
    topic: String,
}

impl DeadLetterOut {
    pub fn new(producer: Arc<dyn Producer>, topic: String) -> Self {
        DeadLetterOut { producer, topic }
    }

    /// Appends the failed notification durably.
    pub async fn send(
        &self,
        job: &Job,
        error: &DeliveryError,
        attempts: u32,
    ) -> Result<(), BusError> {
        self.producer
            .send(&self.topic, vec![message(job, error, attempts)])
            .await
            .map(|_| ())
    }
}

/// The dead-letter message of a failed notification.
pub fn message(job: &Job, error: &DeliveryError, attempts: u32) -> Message {
    let reason = job.redactor.scrub(&error.to_string());
    let value = json!({
        "event": &*job.event,
        "route_id": job.to.route_id,
        "receiver": job.to.receiver,
        "integration": job.to.integration,
        "destination": job.to.destination,
        "repeat": job.repeat,
        "attempts": attempts,
        "retryable": error.is_retryable(),
        "error": reason,
    });
    let mut message = Message::new(
        Some(Bytes::from(job.event.key())),
        serde_json::to_vec(&value).expect("JSON values serialize"),
    )
    .with_header(HEADER_TENANT, job.event.tenant.clone())
    .with_header(HEADER_CONTENT_TYPE, "application/json")
    .with_header(HEADER_DLQ_TOPIC, job.part.tp.topic.clone())
    .with_header(HEADER_DLQ_PARTITION, job.part.tp.partition.to_string())
    .with_header(HEADER_DLQ_RECEIVER, job.to.receiver.clone())
    .with_header(
        HEADER_DLQ_ERROR,
        format!(
            "notification to {} ({}) failed after {attempts} attempt(s): {reason}",
            job.to.receiver, job.to.integration
        ),
    );
    if let Some(offset) = job.offset {
        message = message.with_header(HEADER_DLQ_OFFSET, offset.to_string());
    }
    message
}

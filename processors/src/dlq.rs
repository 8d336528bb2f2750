//! The dead-letter topic: records that could not be decoded, with their origin and the
//! reason in headers, so nothing undecodable is dropped silently.

use std::sync::Arc;

use bytes::Bytes;
use mcpulse_bus::{BusError, Message, Producer, Record};
use mcpulse_schemas::topics::{
    HEADER_DLQ_ERROR, HEADER_DLQ_OFFSET, HEADER_DLQ_PARTITION, HEADER_DLQ_TOPIC,
};

/// Writes undecodable records to the dead-letter topic.
#[derive(Clone)]
pub struct DeadLetters {
    producer: Arc<dyn Producer>,
    topic: String,
}

impl DeadLetters {
    pub fn new(producer: Arc<dyn Producer>, topic: String) -> Self {
        Self { producer, topic }
    }

    /// Appends `record` to the dead-letter topic, durably, with the original key, value and
    /// headers plus the origin and `error`.
    pub async fn send(&self, record: &Record, error: &str) -> Result<(), BusError> {
        let mut message = Message::new(record.key.clone(), record.value.clone());
        message.headers = record.headers.clone();
        message.timestamp_ms = Some(record.timestamp_ms);
        let message = message
            .with_header(HEADER_DLQ_TOPIC, Bytes::from(record.topic.clone()))
            .with_header(
                HEADER_DLQ_PARTITION,
                Bytes::from(record.partition.to_string()),
            )
            .with_header(HEADER_DLQ_OFFSET, Bytes::from(record.offset.to_string()))
            .with_header(HEADER_DLQ_ERROR, Bytes::from(error.to_string()));
        self.producer
            .send(&self.topic, vec![message])
            .await
            .map(|_| ())
    }
}

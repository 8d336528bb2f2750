//! Appends through librdkafka's idempotent producer; a send returns once every message
//! has its delivery report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};

use super::context::ClientCtx;
use super::errors::bus_error;
use crate::{BusError, Delivery, Message, Producer};

/// How long a send waits for room in librdkafka's queue before answering `Saturated`.
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(2);

/// The producer shared by every handle of one bus.
pub(crate) struct KafkaProducer {
    pub(crate) inner: FutureProducer<ClientCtx>,
    pub(crate) closed: AtomicBool,
}

impl KafkaProducer {
    /// Waits for queued messages to be delivered, then refuses new sends.
    pub(crate) fn close(&self, timeout: Duration) -> Result<(), BusError> {
        self.closed.store(true, Ordering::SeqCst);
        self.inner
            .flush(timeout)
            .map_err(|e| bus_error("flushing the producer", &e))
    }
}

/// A cheap handle on the shared producer.
#[derive(Clone)]
pub(crate) struct ProducerHandle(pub(crate) Arc<KafkaProducer>);

#[async_trait]
impl Producer for ProducerHandle {
    async fn send(&self, topic: &str, messages: Vec<Message>) -> Result<Vec<Delivery>, BusError> {
        let producer = &self.0;
        if producer.closed.load(Ordering::SeqCst) {
            return Err(BusError::Closed);
        }
        let mut reports = Vec::with_capacity(messages.len());
        for message in &messages {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(&message.value[..]);
            if let Some(key) = &message.key {
                record = record.key(&key[..]);
            }
            if let Some(ts) = message.timestamp_ms {
                record = record.timestamp(ts);
            }
            if !message.headers.is_empty() {
                let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
                for h in &message.headers {
                    headers = headers.insert(KafkaHeader {
                        key: &h.key,
                        value: Some(&h.value[..]),
                    });
                }
                record = record.headers(headers);
            }
            let started = Instant::now();
            loop {
                match producer.inner.send_result(record) {
                    Ok(report) => {
                        reports.push(report);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if started.elapsed() < QUEUE_FULL_WAIT =>
                    {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((error, _)) => {
                        return Err(bus_error(&format!("producing to {topic}"), &error));
                    }
                }
            }
        }
        let mut deliveries = Vec::with_capacity(reports.len());
        for report in futures::future::join_all(reports).await {
            match report {
                Ok(Ok(delivery)) => deliveries.push(Delivery {
                    partition: delivery.partition as u32,
                    offset: delivery.offset as u64,
                }),
                Ok(Err((error, _))) => {
                    return Err(bus_error(&format!("delivery to {topic}"), &error));
                }
                Err(_canceled) => return Err(BusError::Closed),
            }
        }
        Ok(deliveries)
    }
}

//! The embedded log's producer: routes messages to partitions and waits for the
//! partitions' writers to make them durable.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::BusInner;
use super::fsutil::now_ms;
use super::record::{self, MAX_BODY_LEN};
use super::writer::AppendRequest;
use crate::{BusError, Delivery, Message, Offset, Producer, partition_for_key};

/// Appends to an `EmbeddedBus` (see [`Producer`]). Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedProducer {
    bus: Arc<BusInner>,
}

impl EmbeddedProducer {
    pub(crate) fn new(bus: Arc<BusInner>) -> Self {
        Self { bus }
    }
}

#[async_trait]
impl Producer for EmbeddedProducer {
    /// Unknown topics are created with `default_partitions`. Fails fast with `Saturated`
    /// when more than `max_pending_bytes` are waiting to become durable.
    async fn send(&self, topic: &str, messages: Vec<Message>) -> Result<Vec<Delivery>, BusError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        self.bus.check_open()?;
        let topic = self
            .bus
            .topic_or_create(topic, self.bus.config.default_partitions)?;
        let n = topic.partitions.len() as u32;

        // Route: (partition, index within that partition's batch) per message.
        let mut placement = Vec::with_capacity(messages.len());
        let mut batches: Vec<(Vec<Message>, u64)> = (0..n).map(|_| (Vec::new(), 0)).collect();
        let mut total = 0u64;
        for msg in messages {
            let body = record::body_len(&msg);
            if body > MAX_BODY_LEN {
                return Err(BusError::Config(format!(
                    "message of {body} bytes exceeds the embedded log's limit of {MAX_BODY_LEN}"
                )));
            }
            let partition = match &msg.key {
                Some(key) => partition_for_key(key, n),
                None => topic.next_round_robin() % n,
            };
            let batch = &mut batches[partition as usize];
            placement.push((partition, batch.0.len() as u64));
            let bytes = record::frame_len(&msg) as u64;
            batch.1 += bytes;
            total += bytes;
            batch.0.push(msg);
        }

        self.bus.reserve_pending(total)?;
        let timestamp_ms = now_ms();
        let mut replies: Vec<(usize, oneshot::Receiver<Result<Offset, BusError>>)> = Vec::new();
        let mut error = None;
        for (p, (messages, bytes)) in batches.into_iter().enumerate() {
            if messages.is_empty() {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            let request = AppendRequest {
                messages,
                timestamp_ms,
                bytes,
                reply,
            };
            match topic.partitions[p].writer.append(request) {
                Ok(()) => replies.push((p, rx)),
                Err(e) => {
                    self.bus.pending.fetch_sub(bytes, Ordering::AcqRel);
                    error.get_or_insert(e);
                }
            }
        }
        let mut first = vec![0; n as usize];
        for (p, rx) in replies {
            match rx.await {
                Ok(Ok(offset)) => first[p] = offset,
                Ok(Err(e)) => {
                    error.get_or_insert(e);
                }
                Err(_) => {
                    error.get_or_insert(BusError::Closed);
                }
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        Ok(placement
            .into_iter()
            .map(|(partition, i)| Delivery {
                partition,
                offset: first[partition as usize] + i,
            })
            .collect())
    }
}

//! What every receiver shares: the log producer, the limits, admission control and the
//! counters, and how a receiver appends to the log.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcpulse_bus::{Message, Producer};

use crate::stats::IngestStats;
use crate::{Backpressure, IngestConfig, IngestError};

/// The shared parts of the receivers.
#[derive(Clone)]
pub struct Edge {
    producer: Arc<dyn Producer>,
    config: IngestConfig,
    pressure: Backpressure,
    stats: Arc<IngestStats>,
}

impl Edge {
    pub fn new(
        producer: Arc<dyn Producer>,
        config: IngestConfig,
        pressure: Backpressure,
        stats: Arc<IngestStats>,
    ) -> Self {
        Self {
            producer,
            config,
            pressure,
            stats,
        }
    }

    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    pub fn pressure(&self) -> &Backpressure {
        &self.pressure
    }

    pub fn stats(&self) -> &Arc<IngestStats> {
        &self.stats
    }

    /// The accepted range of event times `[now - max_age, now + max_future]`, in Unix ns.
    pub fn window_ns(&self) -> (u64, u64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let earliest = now.saturating_sub(self.config.max_age).as_nanos() as u64;
        let latest = (now + self.config.max_future).as_nanos() as u64;
        (earliest, latest)
    }

    /// Appends `messages` to `topic`; returns once all are durable.
    pub async fn append(&self, topic: &str, messages: Vec<Message>) -> Result<(), IngestError> {
        self.producer
            .send(topic, messages)
            .await
            .map(drop)
            .map_err(|e| IngestError::from_bus(e, self.pressure.retry_after()))
    }
}

//! The stream runtime: consume → operate → make durable → commit.
//!
//! One runtime drives one operator as one member of a consumer group. Offsets are
//! committed only for output the operator reports durable; when flushing fails with a
//! retryable error the runtime stops consuming and retries with backoff instead of
//! skipping ahead, so nothing is lost and nothing is committed early.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use mcpulse_bus::{BusError, Consumer, ConsumerEvent, Offset, TopicPartition};
use serde::Deserialize;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::dlq::DeadLetters;
use crate::operator::{Operator, OperatorError};
use crate::stats::RuntimeStats;

/// Tuning of a runtime.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// How long one poll waits for records before checking whether a flush is due.
    #[serde(with = "humantime_serde")]
    pub poll_timeout: Duration,
    /// First pause after a failed flush; doubles up to `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    /// Longest pause between flush retries.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            poll_timeout: Duration::from_millis(200),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Why a runtime stopped.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("log error in {operator}: {source}")]
    Bus {
        operator: &'static str,
        #[source]
        source: BusError,
    },
    #[error("operator {operator} failed: {source}")]
    Operator {
        operator: &'static str,
        #[source]
        source: OperatorError,
    },
}

/// Drives one operator over one consumer.
pub struct Runtime {
    consumer: Box<dyn Consumer>,
    operator: Box<dyn Operator>,
    dead_letters: DeadLetters,
    config: RuntimeConfig,
    stats: Arc<RuntimeStats>,
}

impl Runtime {
    pub fn new(
        consumer: Box<dyn Consumer>,
        operator: Box<dyn Operator>,
        dead_letters: DeadLetters,
        config: RuntimeConfig,
        stats: Arc<RuntimeStats>,
    ) -> Self {
        Self {
            consumer,
            operator,
            dead_letters,
            config,
            stats,
        }
    }

    /// Runs until `shutdown` turns true, then flushes everything, commits and leaves the group.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), RuntimeError> {
        let name = self.operator.name();
        info!(operator = name, "runtime started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let event = tokio::select! {
                event = self.consumer.poll(self.config.poll_timeout) => event,
                _ = shutdown.changed() => continue,
            };
            match event.map_err(|source| RuntimeError::Bus {
                operator: name,
                source,
            })? {
                ConsumerEvent::Records(records) => {
                    for record in &records {
                        self.stats.records.fetch_add(1, Relaxed);
                        let mut backoff = Backoff::new(&self.config);
                        loop {
                            match self.operator.process(record).await {
                                Ok(()) => break,
                                Err(OperatorError::Decode(reason)) => {
                                    self.dead_letter(record, &reason, &mut shutdown).await?;
                                    break;
                                }
                                // Retried in place: nothing after this record is processed
                                // (or committed) until it succeeds.
                                Err(OperatorError::Retryable(reason)) if !*shutdown.borrow() => {
                                    warn!(operator = name, %reason, delay = ?backoff.next, "processing failed, retrying");
                                    backoff.wait().await;
                                }
                                Err(source) => {
                                    return Err(RuntimeError::Operator {
                                        operator: name,
                                        source,
                                    });
                                }
                            }
                        }
                    }
                    if self.operator.flush_due() {
                        self.flush_and_commit(None, false, &mut shutdown).await?;
                    }
                }
                ConsumerEvent::Assigned(partitions) => {
                    info!(operator = name, ?partitions, "partitions assigned");
                }
                ConsumerEvent::Revoked(partitions) => {
                    info!(
                        operator = name,
                        ?partitions,
                        "partitions revoked: flushing and committing"
                    );
                    self.flush_and_commit(Some(&partitions), true, &mut shutdown)
                        .await?;
                    self.operator.release(&partitions);
                }
            }
        }
        info!(operator = name, "draining: flushing buffered output");
        let mut never = watch::channel(false).1;
        self.flush_and_commit(None, true, &mut never).await?;
        self.consumer
            .close()
            .await
            .map_err(|source| RuntimeError::Bus {
                operator: name,
                source,
            })?;
        info!(operator = name, "runtime stopped");
        Ok(())
    }

    async fn dead_letter(
        &mut self,
        record: &mcpulse_bus::Record,
        reason: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), RuntimeError> {
        let name = self.operator.name();
        warn!(operator = name, topic = %record.topic, partition = record.partition, offset = record.offset, %reason, "dead-lettering record");
        let mut backoff = Backoff::new(&self.config);
        loop {
            match self.dead_letters.send(record, reason).await {
                Ok(()) => break,
                Err(e) if e.is_retryable() && !*shutdown.borrow() => {
                    warn!(operator = name, error = %e, "dead-letter write failed, retrying");
                    backoff.wait().await;
                }
                Err(source) => {
                    return Err(RuntimeError::Bus {
                        operator: name,
                        source,
                    });
                }
            }
        }
        self.stats.dead_lettered.fetch_add(1, Relaxed);
        self.operator.skip(&record.topic_partition(), record.offset);
        Ok(())
    }

    /// Flushes (retrying retryable failures with backoff, without consuming further) and
    /// commits the offsets the operator reports durable.
    async fn flush_and_commit(
        &mut self,
        partitions: Option<&[TopicPartition]>,
        all: bool,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), RuntimeError> {
        let name = self.operator.name();
        let mut backoff = Backoff::new(&self.config);
        let offsets = loop {
            match self.operator.flush(partitions, all).await {
                Ok(offsets) => break offsets,
                Err(e) if e.is_retryable() => {
                    self.stats.flush_errors.fetch_add(1, Relaxed);
                    if *shutdown.borrow() && !all {
                        // Shutting down: the final `all` flush retries once more; what
                        // stays unflushed is redelivered after restart.
                        return Ok(());
                    }
                    warn!(operator = name, error = %e, delay = ?backoff.next, "flush failed, retrying");
                    backoff.wait().await;
                }
                Err(source) => {
                    return Err(RuntimeError::Operator {
                        operator: name,
                        source,
                    });
                }
            }
        };
        self.stats.flushes.fetch_add(1, Relaxed);
        if !offsets.is_empty() {
            crate::failpoint::hit("runtime.before_commit");
        }
        self.commit(offsets).await
    }

    async fn commit(
        &mut self,
        mut offsets: Vec<(TopicPartition, Offset)>,
    ) -> Result<(), RuntimeError> {
        let assigned = self.consumer.assignment();
        offsets.retain(|(tp, _)| assigned.contains(tp));
        if offsets.is_empty() {
            return Ok(());
        }
        let name = self.operator.name();
        debug!(operator = name, ?offsets, "committing");
        match self.consumer.commit(&offsets).await {
            Ok(()) => {
                self.stats.commits.fetch_add(1, Relaxed);
                Ok(())
            }
            // The partition moved to another member meanwhile: its new owner replays from
            // the last commit and rewrites the same objects, so the stale commit is dropped.
            Err(BusError::NotAssigned(tp)) => {
                warn!(operator = name, partition = %tp, "dropping stale commit for a partition no longer owned");
                Ok(())
            }
            Err(source) => Err(RuntimeError::Bus {
                operator: name,
                source,
            }),
        }
    }
}

/// Exponential backoff between retries.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(config: &RuntimeConfig) -> Self {
        Self {
            next: config.min_backoff,
            max: config.max_backoff,
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }
}

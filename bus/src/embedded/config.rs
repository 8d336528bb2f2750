//! Configuration of the embedded log.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::BusError;

/// Configuration of the embedded log (`EmbeddedBus`).
///
/// Durations are written as humantime strings in configuration files (`"24h"`, `"90s"`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// Directory holding the topics (`{dir}/{topic}/{partition}/*.log`) and the committed
    /// offsets of consumer groups (`{dir}/_groups/*.json`). Created when missing; one
    /// process at a time may open it (it is locked while open).
    pub dir: PathBuf,
    /// Partitions of a topic created implicitly, i.e. by a send to, or a consumer of, a
    /// topic that does not exist yet (like Kafka's `auto.create.topics.enable`).
    /// `ensure_topics` uses the partition count of its spec instead.
    pub default_partitions: u32,
    /// Size in bytes at which a partition's active segment file is sealed and a new one
    /// started. Retention deletes whole segments, so this is also its granularity.
    pub segment_bytes: u64,
    /// How long records are kept: a sealed segment is deleted once its newest record was
    /// appended longer ago than this. The active segment is never deleted. Consumers
    /// positioned before the first remaining record continue from it.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Bytes queued for appending but not yet durable, across all partitions. A `send`
    /// that would exceed it fails at once with `BusError::Saturated` (retryable) instead
    /// of queueing more. A single send larger than this is accepted when nothing else is
    /// pending.
    pub max_pending_bytes: u64,
    /// How long a member told `Revoked` may keep those partitions without polling again
    /// before they are handed to their new owner anyway (its later commits for them then
    /// fail with `BusError::NotAssigned`).
    #[serde(with = "humantime_serde")]
    pub rebalance_timeout: Duration,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("data/log"),
            default_partitions: 4,
            segment_bytes: 64 << 20,
            retention: Duration::from_secs(24 * 3600),
            max_pending_bytes: 64 << 20,
            rebalance_timeout: Duration::from_secs(60),
        }
    }
}

impl EmbeddedConfig {
    /// The defaults, with the log kept in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            ..Self::default()
        }
    }

    /// Rejects values the log cannot work with.
    pub fn validate(&self) -> Result<(), BusError> {
        if self.dir.as_os_str().is_empty() {
            return Err(BusError::Config("embedded log: `dir` is empty".into()));
        }
        if self.default_partitions == 0 {
            return Err(BusError::Config(
                "embedded log: `default_partitions` must be at least 1".into(),
            ));
        }
        if self.segment_bytes < 1024 {
            return Err(BusError::Config(
                "embedded log: `segment_bytes` must be at least 1024".into(),
            ));
        }
        if self.max_pending_bytes == 0 {
            return Err(BusError::Config(
                "embedded log: `max_pending_bytes` must be positive".into(),
            ));
        }
        if self.retention.is_zero() {
            return Err(BusError::Config(
                "embedded log: `retention` must be positive".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_humantime_and_defaults() {
        let config: EmbeddedConfig = serde_json::from_str(
            r#"{"dir": "/tmp/x", "retention": "2h", "default_partitions": 8}"#,
        )
        .unwrap();
        assert_eq!(config.dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.retention, Duration::from_secs(7200));
        assert_eq!(config.default_partitions, 8);
        assert_eq!(config.segment_bytes, 64 << 20);
        assert_eq!(config.rebalance_timeout, Duration::from_secs(60));
        config.validate().unwrap();
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        assert!(serde_json::from_str::<EmbeddedConfig>(r#"{"dirr": "x"}"#).is_err());
        let config = EmbeddedConfig {
            default_partitions: 0,
            ..EmbeddedConfig::new("x")
        };
        assert!(matches!(config.validate(), Err(BusError::Config(_))));
    }
}

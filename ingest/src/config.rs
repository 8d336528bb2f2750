//! Limits of the edges (`ingest:` in mcpulse.yaml).

use std::time::Duration;

use serde::Deserialize;

/// Request limits and the accepted time window.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest request body accepted as sent on the wire (compressed), in bytes.
    pub max_request_bytes: usize,
    /// Largest request body after decompression, in bytes (guards against zip bombs).
    pub max_decompressed_bytes: usize,
    /// Request bytes being processed at once; beyond it requests get 503 / UNAVAILABLE
    /// with a retry hint.
    pub max_inflight_bytes: usize,
    /// Messages the archiver may lag behind the log; beyond it requests get 429 /
    /// RESOURCE_EXHAUSTED with a retry hint.
    pub max_backlog_messages: u64,
    /// Spans or probe results older than this are rejected.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Spans or probe results further than this in the future are rejected.
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// Seconds clients are told to wait in `Retry-After` / RetryInfo when saturated.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 << 20,
            max_decompressed_bytes: 64 << 20,
            max_inflight_bytes: 256 << 20,
            max_backlog_messages: 100_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_future: Duration::from_secs(3600),
            retry_after: Duration::from_secs(1),
        }
    }
}

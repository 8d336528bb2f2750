//! Archive settings (`archive:` in mcpulse.yaml).

use std::time::Duration;

use serde::Deserialize;

/// How the archiver batches and writes Parquet.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Where the archive lives: a `file://` URL or a plain path (default: `archive/` under
    /// the data directory).
    pub url: Option<String>,
    /// Flush a partition's batch once its oldest row has waited this long (keeps data
    /// queryable within seconds).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Flush a partition's batch once it holds this many rows.
    pub flush_rows: usize,
    /// Flush a partition's batch once its decoded rows take about this many bytes.
    pub flush_bytes: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// zstd compression level (1 fastest … 22 smallest).
    pub zstd_level: i32,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            url: None,
            flush_interval: Duration::from_secs(2),
            flush_rows: 131_072,
            flush_bytes: 16 << 20,
            row_group_rows: 131_072,
            zstd_level: 1,
        }
    }
}

//! Archive settings (`archive:` in mcpulse.yaml).

use std::time::Duration;

use mcpulse_schemas::topics::{HEADER_TENANT, TENANT_ID_RULE, valid_tenant_id};
use serde::Deserialize;

use super::maintenance::{MaintenanceConfig, RetentionConfig};
use super::s3::S3Config;

/// How the archiver batches and writes Parquet.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Where the archive lives: a `file://` URL, a plain path (default: `archive/` under
    /// the data directory) or `s3://bucket/prefix` (AWS S3 or an S3-compatible store, see
    /// `s3`).
    pub url: Option<String>,
    /// How to reach an `s3://` archive: region, endpoint, credentials, timeouts.
    pub s3: S3Config,
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
    /// Objects of fewer rows than this are written uncompressed: a reader sets up a zstd
    /// context per column chunk, which for a few dozen rows (a tenant's day of alerts)
    /// costs more than the bytes saved (default 1024: a small tenant's hour of probes,
    /// a few thousand rows, still compresses — uncompressed, a month of hour objects took
    /// more than twice the disk). 0 compresses every object.
    pub compress_min_rows: usize,
    /// Message header naming a record's tenant (default `mcpulse-tenant`, which ingest
    /// sets from the credential). Change it when outside producers put the tenant in
    /// another header.
    pub tenant_header: String,
    /// Tenant of records without the tenant header, e.g. spans an OpenTelemetry
    /// Collector's Kafka exporter writes straight to the spans topic. Without it such
    /// records are dead-lettered.
    pub default_tenant: Option<String>,
    /// Compaction, deletion of replaced objects and sweeps after `mcpulse admin delete`.
    pub maintenance: MaintenanceConfig,
    /// How long each table keeps rows, per tenant (default: forever).
    pub retention: RetentionConfig,
}

impl ArchiveConfig {
    /// Checks the tenant settings; the error names the field.
    pub fn validate_tenancy(&self) -> Result<(), String> {
        let header = &self.tenant_header;
        if header.is_empty() || header.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "archive.tenant_header: {header:?} must be a non-empty header name without spaces"
            ));
        }
        if let Some(tenant) = &self.default_tenant
            && !valid_tenant_id(tenant)
        {
            return Err(format!(
                "archive.default_tenant: {tenant:?} {TENANT_ID_RULE}"
            ));
        }
        Ok(())
    }
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            url: None,
            s3: S3Config::default(),
            flush_interval: Duration::from_secs(2),
            flush_rows: 131_072,
            flush_bytes: 16 << 20,
            row_group_rows: 131_072,
            zstd_level: 1,
            compress_min_rows: 1024,
            tenant_header: HEADER_TENANT.to_string(),
            default_tenant: None,
            maintenance: MaintenanceConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

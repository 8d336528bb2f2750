//! Counters of the runtime and its operators, exposed on `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use mcpulse_schemas::metrics::{MetricsSource, PromWriter};

/// Counters of one runtime (one operator in one consumer group).
#[derive(Debug, Default)]
pub struct RuntimeStats {
    pub records: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Records an analytic operator could not use (counted and skipped; the archivers
    /// dead-letter them).
    pub skipped_records: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_errors: AtomicU64,
    pub commits: AtomicU64,
    /// Commits that failed retryably (retried later).
    pub commit_errors: AtomicU64,
    /// Records whose processing or dead-letter write failed retryably (retried).
    pub process_errors: AtomicU64,
    /// Times consumption was paused because the next stage failed.
    pub stalls: AtomicU64,
    /// Partitions paused right now (a gauge).
    pub paused_partitions: AtomicU64,
    /// Partitions given up (revoked, or at shutdown) with buffered output that could not
    /// be made durable: their next owner replays it from the last commit.
    pub released_uncommitted: AtomicU64,
    pub rows_written: AtomicU64,
    pub files_written: AtomicU64,
    pub bytes_written: AtomicU64,
}

/// A runtime's counters with the operator name they are reported under.
pub struct NamedStats {
    pub operator: &'static str,
    pub stats: std::sync::Arc<RuntimeStats>,
}

impl MetricsSource for NamedStats {
    fn render(&self, out: &mut PromWriter) {
        let l = [("operator", self.operator)];
        let s = &self.stats;
        out.counter(
            "mcpulse_processor_records_total",
            "Records consumed from the log.",
            &l,
            s.records.load(Relaxed),
        );
        out.counter(
            "mcpulse_processor_dead_lettered_total",
            "Records that could not be decoded and went to the dead-letter topic.",
            &l,
            s.dead_lettered.load(Relaxed),
        );
        out.counter(
            "mcpulse_processor_skipped_records_total",
            "Records an analytic operator could not use (undecodable, no tenant); counted and skipped.",
            &l,
            s.skipped_records.load(Relaxed),
        );
        out.counter(
            "mcpulse_processor_flushes_total",
            "Flushes that made output durable.",
            &l,
            s.flushes.load(Relaxed),
        );
        out.counter(
            "mcpulse_processor_flush_errors_total",
            "Flushes that failed and were retried.",
            &l,
            s.flush_errors.load(Relaxed),
        );
        out.counter(
            "mcpulse_processor_commits_total",
            "Offset commits.",
            &l,
            s.commits.load(Relaxed),
        );
        out.counter(
            "mcpulse_processor_commit_errors_total",
            "Offset commits that failed and were retried later.",
            &l,
            s.commit_errors.load(Relaxed),
        );
        out.counter(
            "mcpulse_processor_process_errors_total",
            "Records whose processing or dead-letter write failed and was retried.",
            &l,
            s.process_errors.load(Relaxed),
        );
        out.counter(
            "mcpulse_processor_stalls_total",
            "Times consumption was paused because the next stage was failing.",
            &l,
            s.stalls.load(Relaxed),
        );
        out.gauge(
            "mcpulse_processor_paused_partitions",
            "Partitions whose consumption is paused while the next stage is failing.",
            &l,
            s.paused_partitions.load(Relaxed) as f64,
        );
        out.counter(
            "mcpulse_processor_released_uncommitted_total",
            "Partitions released (revoked or at shutdown) with output that could not be made durable; their next owner replays it.",
            &l,
            s.released_uncommitted.load(Relaxed),
        );
        out.counter(
            "mcpulse_archive_rows_total",
            "Rows written to the archive.",
            &l,
            s.rows_written.load(Relaxed),
        );
        out.counter(
            "mcpulse_archive_files_total",
            "Parquet files written.",
            &l,
            s.files_written.load(Relaxed),
        );
        out.counter(
            "mcpulse_archive_bytes_total",
            "Parquet bytes written.",
            &l,
            s.bytes_written.load(Relaxed),
        );
    }
}

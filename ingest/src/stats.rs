//! Counters of the edges, exposed on `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use mcpulse_schemas::metrics::{MetricsSource, PromWriter};

#[derive(Debug, Default)]
pub struct IngestStats {
    pub spans_accepted: AtomicU64,
    pub spans_rejected: AtomicU64,
    pub probes_accepted: AtomicU64,
    /// Alerts received on the Alertmanager API (`POST /api/v2/alerts`).
    pub alerts_accepted: AtomicU64,
    pub requests_refused: AtomicU64,
    pub requests_throttled: AtomicU64,
}

impl MetricsSource for IngestStats {
    fn render(&self, out: &mut PromWriter) {
        out.counter(
            "mcpulse_ingest_spans_accepted_total",
            "Spans made durable in the log.",
            &[],
            self.spans_accepted.load(Relaxed),
        );
        out.counter(
            "mcpulse_ingest_spans_rejected_total",
            "Spans rejected (partial success).",
            &[],
            self.spans_rejected.load(Relaxed),
        );
        out.counter(
            "mcpulse_ingest_probes_accepted_total",
            "Probe results made durable in the log.",
            &[],
            self.probes_accepted.load(Relaxed),
        );
        out.counter(
            "mcpulse_ingest_alerts_accepted_total",
            "Alerts received on the Alertmanager API made durable in the log.",
            &[],
            self.alerts_accepted.load(Relaxed),
        );
        out.counter(
            "mcpulse_ingest_requests_refused_total",
            "Requests refused as invalid or unauthenticated.",
            &[],
            self.requests_refused.load(Relaxed),
        );
        out.counter(
            "mcpulse_ingest_requests_throttled_total",
            "Requests refused with a retryable status because mcpulse was saturated.",
            &[],
            self.requests_throttled.load(Relaxed),
        );
    }
}

//! Counters and gauges of the notification stage, on `/metrics`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};

use mcpulse_schemas::metrics::{MetricsSource, PromWriter};

use super::rows::Status;

/// Metrics of the stage (all partitions of the process).
#[derive(Debug, Default)]
pub struct NotifyMetrics {
    /// Rows of the `notifications` table by [`Status::ALL`] index.
    pub notifications: [AtomicU64; Status::ALL.len()],
    /// Notifications written to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Notifications re-sent after their route's repeat_interval.
    pub repeats: AtomicU64,
    /// Digests of notifications folded by the per-tenant budget, queued for sending.
    pub digests: AtomicU64,
    /// Notifications not sent again because the log shows them finished (replays).
    pub deduplicated: AtomicU64,
    /// Notifications queued or being delivered.
    pub in_flight: AtomicI64,
    /// Routes or silences files reloaded, and reloads refused (the old file kept).
    pub reloads: AtomicU64,
    pub reload_errors: AtomicU64,
}

impl NotifyMetrics {
    pub fn count(&self, status: Status) {
        let i = Status::ALL
            .iter()
            .position(|s| *s == status)
            .expect("listed");
        self.notifications[i].fetch_add(1, Relaxed);
    }
}

impl MetricsSource for NotifyMetrics {
    fn render(&self, out: &mut PromWriter) {
        for (i, status) in Status::ALL.iter().enumerate() {
            out.counter(
                "mcpulse_notifications_total",
                "Notification attempts and decisions, by status (as in the notifications table).",
                &[("status", status.as_str())],
                self.notifications[i].load(Relaxed),
            );
        }
        out.counter(
            "mcpulse_notifications_dead_lettered_total",
            "Notifications that failed for good and went to the dead-letter topic.",
            &[],
            self.dead_lettered.load(Relaxed),
        );
        out.counter(
            "mcpulse_notifications_repeated_total",
            "Notifications re-sent after their route's repeat_interval.",
            &[],
            self.repeats.load(Relaxed),
        );
        out.counter(
            "mcpulse_notification_digests_total",
            "Digests of notifications folded by the per-tenant budget, queued for sending.",
            &[],
            self.digests.load(Relaxed),
        );
        out.counter(
            "mcpulse_notifications_deduplicated_total",
            "Notifications not sent again because the notification log shows them finished.",
            &[],
            self.deduplicated.load(Relaxed),
        );
        out.gauge(
            "mcpulse_notifications_in_flight",
            "Notifications queued or being delivered.",
            &[],
            self.in_flight.load(Relaxed).max(0) as f64,
        );
        out.counter(
            "mcpulse_notify_reloads_total",
            "Routes or silences files reloaded after a change.",
            &[],
            self.reloads.load(Relaxed),
        );
        out.counter(
            "mcpulse_notify_reload_errors_total",
            "Changed routes or silences files that did not load (the previous one is kept).",
            &[],
            self.reload_errors.load(Relaxed),
        );
    }
}

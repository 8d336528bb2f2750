//! Rows of the `notifications` table: one per delivery attempt, or per decision not to
//! deliver (muted, silenced), grouped by hive partition (the event's tenant and the hour
//! of the transition's time, so a replay writes where the first run did).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, RecordBatch, StringBuilder,
    TimestampNanosecondBuilder,
};
use chrono::{DateTime, Utc};
use mcpulse_processors::archive::PartitionKey;
use mcpulse_schemas::{AlertEvent, Table};
use serde::{Deserialize, Serialize};

/// What became of one attempt or decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Delivered.
    Sent,
    /// Failed retryably; another attempt follows.
    Retry,
    /// Failed for good (permanent, or attempts used up): dead-lettered.
    Failed,
    /// Nothing to send for this transition there (e.g. a blip at PagerDuty).
    Skipped,
    /// The route's time intervals mute it now.
    Muted,
    /// A silence matches the event.
    Silenced,
    /// Past the tenant's notification budget: folded into the integration's digest.
    Folded,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Sent,
        Status::Retry,
        Status::Failed,
        Status::Skipped,
        Status::Muted,
        Status::Silenced,
        Status::Folded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Retry => "retry",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Muted => "muted",
            Status::Silenced => "silenced",
            Status::Folded => "folded",
        }
    }
}

/// Who a notification was for: the route that took the event and the integration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addressee {
    pub route_id: String,
    pub receiver: String,
    /// `pagerduty`, `opsgenie`, `discord`, `email` or `webhook`.
    pub integration: String,
    /// Without secrets.
    pub destination: String,
}

/// One row of the `notifications` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotificationRow {
    pub tenant: String,
    /// The transition's time.
    pub time: DateTime<Utc>,
    pub attempted_at: DateTime<Utc>,
    pub event_id: String,
    pub incident_id: String,
    pub dedup_key: String,
    pub action: String,
    pub repeat: bool,
    pub server: String,
    pub severity: String,
    pub to: Addressee,
    /// 0 for decisions.
    pub attempt: u32,
    pub status: Status,
    pub latency_ms: Option<f64>,
    /// Redacted.
    pub error: Option<String>,
}

impl NotificationRow {
    /// A row about `event` for `to`; the attempt fields are filled by the caller.
    pub fn new(event: &AlertEvent, to: &Addressee, status: Status) -> Self {
        NotificationRow {
            tenant: event.tenant.clone(),
            time: event.time,
            attempted_at: Utc::now(),
            event_id: event.event_id.clone(),
            incident_id: event.incident_id.clone(),
            dedup_key: event.dedup_key.clone(),
            action: event.action.as_str().to_owned(),
            repeat: false,
            server: event.server.clone().unwrap_or_default(),
            severity: event.severity.as_str().to_owned(),
            to: to.clone(),
            attempt: 0,
            status,
            latency_ms: None,
            error: None,
        }
    }

    /// Sets the attempt number, its latency (the attempt started `latency` ago) and error.
    pub fn attempt(mut self, number: u32, latency: Duration, error: Option<String>) -> Self {
        self.attempt = number;
        self.latency_ms = Some(latency.as_secs_f64() * 1000.0);
        self.attempted_at = Utc::now() - chrono::Duration::from_std(latency).unwrap_or_default();
        self.error = error;
        self
    }

    pub fn with_error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }
}

fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// One batch per (tenant, date, hour).
pub fn batches<'a>(
    rows: impl IntoIterator<Item = &'a NotificationRow>,
) -> arrow::error::Result<Vec<(PartitionKey, RecordBatch)>> {
    let mut groups: BTreeMap<PartitionKey, Vec<&NotificationRow>> = BTreeMap::new();
    for r in rows {
        groups
            .entry(PartitionKey::at(&r.tenant, ns(r.time)))
            .or_default()
            .push(r);
    }
    groups
        .into_iter()
        .map(|(key, rows)| batch(&rows).map(|b| (key, b)))
        .collect()
}

fn batch(rows: &[&NotificationRow]) -> arrow::error::Result<RecordBatch> {
    let ts = || TimestampNanosecondBuilder::new().with_timezone("UTC");
    let (mut time, mut attempted) = (ts(), ts());
    // event_id … severity, then route_id … destination.
    let mut head: Vec<StringBuilder> = (0..4).map(|_| StringBuilder::new()).collect();
    let mut repeat = BooleanBuilder::new();
    let mut mid: Vec<StringBuilder> = (0..6).map(|_| StringBuilder::new()).collect();
    let mut attempt = Int32Builder::new();
    let mut status = StringBuilder::new();
    let mut latency = Float64Builder::new();
    let mut error = StringBuilder::new();
    for r in rows {
        time.append_value(ns(r.time));
        attempted.append_value(ns(r.attempted_at));
        for (b, v) in head
            .iter_mut()
            .zip([&r.event_id, &r.incident_id, &r.dedup_key, &r.action])
        {
            b.append_value(v);
        }
        repeat.append_value(r.repeat);
        for (b, v) in mid.iter_mut().zip([
            &r.server,
            &r.severity,
            &r.to.route_id,
            &r.to.receiver,
            &r.to.integration,
            &r.to.destination,
        ]) {
            b.append_value(v);
        }
        attempt.append_value(i32::try_from(r.attempt).unwrap_or(i32::MAX));
        status.append_value(r.status.as_str());
        latency.append_option(r.latency_ms);
        error.append_option(r.error.as_deref());
    }
    let finish = |b: &mut StringBuilder| Arc::new(b.finish()) as ArrayRef;
    let mut columns: Vec<ArrayRef> = vec![Arc::new(time.finish()), Arc::new(attempted.finish())];
    columns.extend(head.iter_mut().map(finish));
    columns.push(Arc::new(repeat.finish()));
    columns.extend(mid.iter_mut().map(finish));
    columns.push(Arc::new(attempt.finish()));
    columns.push(Arc::new(status.finish()));
    columns.push(Arc::new(latency.finish()));
    columns.push(Arc::new(error.finish()));
    RecordBatch::try_new(Table::Notifications.schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::testutil::event;

    #[test]
    fn rows_become_batches_of_the_notifications_table() {
        let to = Addressee {
            route_id: "root".into(),
            receiver: "oncall".into(),
            integration: "pagerduty".into(),
            destination: "pagerduty:events.pagerduty.com:abcd".into(),
        };
        let e = event("acme", "i1", "e1");
        let sent =
            NotificationRow::new(&e, &to, Status::Sent).attempt(2, Duration::from_millis(40), None);
        let muted = NotificationRow::new(&e, &to, Status::Muted).with_error("muted: weekends");
        let batches = batches(&[sent, muted]).unwrap();
        assert_eq!(batches.len(), 1);
        let (key, b) = &batches[0];
        assert_eq!(key.tenant, "acme");
        assert_eq!(b.schema(), Table::Notifications.schema());
        assert_eq!(b.num_rows(), 2);
        let status = b
            .column_by_name("status")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        assert_eq!((status.value(0), status.value(1)), ("sent", "muted"));
        let receiver = b
            .column_by_name("receiver")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        assert_eq!(receiver.value(0), "oncall");
    }
}

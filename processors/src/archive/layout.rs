//! Where archive objects live: `{root}/{table}/tenant={t}/date={YYYY-MM-DD}/hour={HH}/{name}.parquet`.
//!
//! File names derive from the input (topic, partition, first and last offset), never from
//! the clock, so replaying the same offsets rewrites the same objects.

use chrono::{DateTime, Datelike, Utc};
use mcpulse_bus::{Offset, TopicPartition};
use mcpulse_schemas::Table;
use object_store::path::Path;

/// The hive partition a row belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    pub tenant: String,
    /// Days since the Unix epoch and hour of day of the row's event time (UTC).
    pub day: i64,
    pub hour: u32,
}

impl PartitionKey {
    /// The partition of an event at `time_ns` nanoseconds since the epoch.
    pub fn at(tenant: &str, time_ns: i64) -> Self {
        const HOUR_NS: i64 = 3_600_000_000_000;
        let hours = time_ns.div_euclid(HOUR_NS);
        Self {
            tenant: tenant.to_string(),
            day: hours.div_euclid(24),
            hour: hours.rem_euclid(24) as u32,
        }
    }

    /// `YYYY-MM-DD`.
    pub fn date(&self) -> String {
        let t = DateTime::<Utc>::from_timestamp(self.day * 86_400, 0).unwrap_or_default();
        format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day())
    }

    /// The hour folder `tenant=…/date=…/hour=…` under a table.
    pub fn dir(&self, root: &Path, table: Table) -> Path {
        let hour = format!("hour={:02}", self.hour);
        let tenant = format!("tenant={}", self.tenant);
        let date = format!("date={}", self.date());
        root.clone()
            .join(table.name())
            .join(tenant.as_str())
            .join(date.as_str())
            .join(hour.as_str())
    }
}

/// Deterministic object name of the rows of `tp` offsets `first..=last`.
pub fn file_name(tp: &TopicPartition, first: Offset, last: Offset) -> String {
    format!(
        "{}-{}-{:020}-{:020}.parquet",
        tp.topic, tp.partition, first, last
    )
}

/// Manifest object recording the cut in progress of a partition (see [`super::manifest`]).
pub fn manifest_path(root: &Path, tp: &TopicPartition) -> Path {
    root.clone()
        .join("_manifests")
        .join("archiver")
        .join(tp.topic.as_str())
        .join(format!("{}.json", tp.partition).as_str())
}

/// A UTC time as RFC 3339 with nanoseconds, for footer metadata.
pub fn rfc3339_ns(time_ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(time_ns)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_key_folders() {
        // 2026-11-21T13:45:00Z
        let t = DateTime::parse_from_rfc3339("2026-11-21T13:45:00Z")
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap();
        let key = PartitionKey::at("acme", t);
        assert_eq!(key.date(), "2026-11-21");
        assert_eq!(key.hour, 13);
        assert_eq!(
            key.dir(&Path::from("archive"), Table::Spans).as_ref(),
            "archive/spans/tenant=acme/date=2026-11-21/hour=13"
        );
        let before_epoch = PartitionKey::at("acme", -1);
        assert_eq!(before_epoch.date(), "1969-12-31");
        assert_eq!(before_epoch.hour, 23);
    }

    #[test]
    fn file_names_sort_by_offset_and_depend_only_on_input() {
        let tp = TopicPartition::new("mcpulse.spans.v1", 3);
        assert_eq!(file_name(&tp, 0, 99), file_name(&tp, 0, 99));
        assert!(file_name(&tp, 9, 10) < file_name(&tp, 10, 11));
    }
}

//! `archive.maintenance` (compaction, deletion of replaced objects, sweeps after a
//! delete) and `archive.retention` (how long each table keeps rows, per tenant).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use mcpulse_schemas::Table;
use mcpulse_schemas::topics::{TENANT_ID_RULE, valid_tenant_id};
use serde::{Deserialize, Deserializer};

/// How the archive is maintained.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// Run compaction, retention and the sweeps after `mcpulse admin delete` every
    /// `interval` inside `mcpulse run` and `mcpulse process`. Turn it off on all but one
    /// `process` instance to save the work (several are safe: each step is idempotent
    /// and manifests are created, never overwritten).
    pub enabled: bool,
    /// Time between two maintenance passes.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Compact an hour folder once its hour ended at least this long ago, when writers
    /// are done with it (rows arriving later land in new small objects, compacted by a
    /// later pass).
    #[serde(with = "humantime_serde")]
    pub compact_after: Duration,
    /// Compact a closed day once it ended at least this long ago: the small objects of its
    /// hour folders (and of its day folder) are merged into its day folder, `hour=day`,
    /// so queries over weeks open one object per day instead of one per hour. Until then
    /// the day's hour folders are compacted one by one (`compact_after`).
    #[serde(with = "humantime_serde")]
    pub day_compact_after: Duration,
    /// Compact a folder once it holds at least this many small objects (objects of fewer
    /// than half `target_rows` rows).
    pub min_files: usize,
    /// Most rows in one compacted object (row groups of `archive.row_group_rows`).
    pub target_rows: u64,
    /// Most objects merged into one: the merge holds one batch of each in memory.
    pub max_merge_files: usize,
    /// Objects replaced by compaction are deleted this long after the manifest that
    /// replaced them, so queries that listed them before can still read them. Keep it
    /// above `query.timeout`.
    #[serde(with = "humantime_serde")]
    pub delete_delay: Duration,
    /// After `mcpulse admin delete`, for this long each pass deletes again the rows of
    /// the deleted tenant (or server) with event time before the delete that stages had
    /// in flight and wrote after it.
    #[serde(with = "humantime_serde")]
    pub deletion_sweep: Duration,
    /// How often the running analytic operators look for new deletion requests (they
    /// then drop the tenant's or server's state).
    #[serde(with = "humantime_serde")]
    pub deletion_poll: Duration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(300),
            compact_after: Duration::from_secs(3600),
            day_compact_after: Duration::from_secs(2 * 3600),
            min_files: 2,
            target_rows: 1 << 20,
            max_merge_files: 256,
            delete_delay: Duration::from_secs(600),
            deletion_sweep: Duration::from_secs(3600),
            deletion_poll: Duration::from_secs(5),
        }
    }
}

impl MaintenanceConfig {
    /// Checks what serde cannot; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval.is_zero() {
            return Err("archive.maintenance.interval: must be positive".into());
        }
        if self.deletion_poll.is_zero() {
            return Err("archive.maintenance.deletion_poll: must be positive".into());
        }
        if self.min_files < 2 {
            return Err("archive.maintenance.min_files: must be at least 2".into());
        }
        if self.target_rows == 0 {
            return Err("archive.maintenance.target_rows: must be positive".into());
        }
        if self.max_merge_files < 2 {
            return Err("archive.maintenance.max_merge_files: must be at least 2".into());
        }
        Ok(())
    }
}

/// How long rows are kept: a duration, or `forever`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    Forever,
    For(Duration),
}

impl<'de> Deserialize<'de> for Keep {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.trim() == "forever" {
            return Ok(Keep::Forever);
        }
        match humantime_serde::re::humantime::parse_duration(text.trim()) {
            Ok(d) if !d.is_zero() => Ok(Keep::For(d)),
            Ok(_) => Err(serde::de::Error::custom(
                "a retention must be positive (or `forever`)",
            )),
            Err(e) => Err(serde::de::Error::custom(format!(
                "{text:?} is not a duration like 30d or 12h, nor `forever`: {e}"
            ))),
        }
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keep::Forever => f.write_str("forever"),
            Keep::For(d) => write!(f, "{}", humantime_serde::re::humantime::format_duration(*d)),
        }
    }
}

/// A retention per table (unset: the next level decides).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TableRetention {
    /// OTLP spans.
    pub spans: Option<Keep>,
    /// Probe results.
    pub probes: Option<Keep>,
    /// One-minute golden-signal rollups.
    pub signals: Option<Keep>,
    /// Schema drift events.
    pub drift: Option<Keep>,
    /// Incident transitions.
    pub alerts: Option<Keep>,
    /// Notification attempts.
    pub notifications: Option<Keep>,
}

impl TableRetention {
    pub fn get(&self, table: Table) -> Option<Keep> {
        match table {
            Table::Spans => self.spans,
            Table::Probes => self.probes,
            Table::Signals => self.signals,
            Table::Drift => self.drift,
            Table::Alerts => self.alerts,
            Table::Notifications => self.notifications,
        }
    }
}

/// `archive.retention`: hour folders whose hour ended longer ago than the retention of
/// their table (and tenant) are deleted. Unset everywhere: rows are kept forever.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Per table, for every tenant: e.g. `spans: 7d`, `probes: 90d`.
    pub tables: TableRetention,
    /// Per tenant, overriding `tables` for the tables it names (`forever` keeps that
    /// tenant's rows of the table however short the table's retention).
    pub tenants: BTreeMap<String, TableRetention>,
}

impl RetentionConfig {
    /// How long `tenant`'s rows of `table` are kept.
    pub fn keep(&self, table: Table, tenant: &str) -> Keep {
        self.tenants
            .get(tenant)
            .and_then(|t| t.get(table))
            .or(self.tables.get(table))
            .unwrap_or(Keep::Forever)
    }

    /// Whether any table of any tenant has a finite retention.
    pub fn is_active(&self) -> bool {
        let finite = |r: &TableRetention| {
            Table::ALL
                .iter()
                .any(|t| matches!(r.get(*t), Some(Keep::For(_))))
        };
        finite(&self.tables) || self.tenants.values().any(finite)
    }

    /// Checks the tenant ids; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for tenant in self.tenants.keys() {
            if !valid_tenant_id(tenant) {
                return Err(format!(
                    "archive.retention.tenants: {tenant:?} {TENANT_ID_RULE}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<RetentionConfig, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn retention_per_table_and_tenant() {
        let r = parse(
            "tables: {spans: 7d, probes: 90d}\ntenants:\n  acme: {spans: 30d, probes: forever}\n",
        )
        .unwrap();
        r.validate().unwrap();
        let days = |d: u64| Keep::For(Duration::from_secs(d * 86_400));
        assert_eq!(r.keep(Table::Spans, "globex"), days(7));
        assert_eq!(r.keep(Table::Spans, "acme"), days(30));
        assert_eq!(r.keep(Table::Probes, "acme"), Keep::Forever);
        assert_eq!(r.keep(Table::Probes, "globex"), days(90));
        assert_eq!(r.keep(Table::Signals, "acme"), Keep::Forever);
        assert!(r.is_active());
        assert!(!RetentionConfig::default().is_active());
    }

    #[test]
    fn retention_errors_name_the_field() {
        let err = parse("tables: {span: 7d}\n").unwrap_err();
        assert!(err.contains("unknown field `span`"), "{err}");
        let err = parse("tables: {spans: 7 parsecs}\n").unwrap_err();
        assert!(err.contains("not a duration"), "{err}");
        let err = parse("tables: {spans: 0s}\n").unwrap_err();
        assert!(err.contains("positive"), "{err}");
        let err = parse("tenant: {}\n").unwrap_err();
        assert!(err.contains("unknown field `tenant`"), "{err}");
        let err = parse("tenants:\n  \"a/b\": {spans: 1d}\n")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.starts_with("archive.retention.tenants"), "{err}");
    }

    #[test]
    fn maintenance_defaults_and_errors() {
        MaintenanceConfig::default().validate().unwrap();
        let c: MaintenanceConfig = serde_yaml_ng::from_str("min_files: 1\n").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("archive.maintenance.min_files")
        );
        let err = serde_yaml_ng::from_str::<MaintenanceConfig>("delay: 1s\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `delay`"), "{err}");
    }
}

//! [`DriftEvent`] → rows of the `drift` table ([`Table::Drift`]).
//!
//! One row per `Drift` (kind `schema_drift`) and per `FleetInconsistent` (kind
//! `fleet_inconsistent`); a `Baseline` has no row. The tenant is not a column (it is the
//! hive partition), but each [`DriftRow`] carries it so the caller can group rows by
//! partition before [`to_batch`].
//!
//! Columns of a `schema_drift` row: `old_hash`/`new_hash`; `worst` (`breaking`, `additive`,
//! `cosmetic`, null when the changes are unknown or empty); the per-class counts and
//! `changes` (the full classified list as JSON), all null when the changes are unknown
//! (a canonical list was missing); the tool counts when the lists are known; `detail`, a
//! short text (`2 breaking, 1 additive`).
//!
//! A `fleet_inconsistent` row has `old_hash` = the confirmed hash at the time (if any),
//! `new_hash`, `worst`, counts and `changes` null, and `detail` naming the alternating
//! hashes in first-seen order (`alternating between 2 versions: <h1>, <h2>`).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use arrow::error::{ArrowError, Result};
use chrono::{DateTime, Utc};
use mcpulse_schemas::{FindingKind, Table};

use super::diff::worst;
use super::tracker::{DriftEvent, class_counts, class_name, counts_text};

/// One row of the `drift` table, plus its tenant (the partition).
#[derive(Clone, Debug, PartialEq)]
pub struct DriftRow {
    /// Hive partition, not a column.
    pub tenant: String,
    pub time: DateTime<Utc>,
    pub server: String,
    /// `schema_drift` or `fleet_inconsistent`.
    pub kind: String,
    pub old_hash: Option<String>,
    pub new_hash: Option<String>,
    /// `breaking`, `additive` or `cosmetic`; null when unknown or no change was classified.
    pub worst: Option<String>,
    pub breaking: Option<i32>,
    pub additive: Option<i32>,
    pub cosmetic: Option<i32>,
    /// JSON list of the classified changes (all of them).
    pub changes_json: Option<String>,
    pub old_tool_count: Option<i32>,
    pub new_tool_count: Option<i32>,
    pub detail: Option<String>,
}

/// The row of an event; `None` for a baseline.
pub fn row_of(tenant: &str, server: &str, event: &DriftEvent) -> Option<DriftRow> {
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    match event {
        DriftEvent::Baseline { .. } => None,
        DriftEvent::Drift {
            time,
            old_hash,
            new_hash,
            changes,
            old_tool_count,
            new_tool_count,
        } => {
            let (worst, counts, changes_json, detail) = match changes {
                Some(changes) => {
                    let (b, a, c) = class_counts(changes);
                    let detail = if changes.is_empty() {
                        "hash changed without a classified change".to_owned()
                    } else {
                        counts_text(changes)
                    };
                    (
                        worst(changes).map(|w| class_name(w).to_owned()),
                        Some((count(b), count(a), count(c))),
                        // A Vec<Change> always serializes.
                        serde_json::to_string(changes).ok(),
                        detail,
                    )
                }
                None => (
                    None,
                    None,
                    None,
                    "tool list unknown: changes not classified".to_owned(),
                ),
            };
            Some(DriftRow {
                tenant: tenant.to_owned(),
                time: *time,
                server: server.to_owned(),
                kind: FindingKind::SchemaDrift.as_str().to_owned(),
                old_hash: Some(old_hash.clone()),
                new_hash: Some(new_hash.clone()),
                worst,
                breaking: counts.map(|c| c.0),
                additive: counts.map(|c| c.1),
                cosmetic: counts.map(|c| c.2),
                changes_json,
                old_tool_count: old_tool_count.map(count),
                new_tool_count: new_tool_count.map(count),
                detail: Some(detail),
            })
        }
        DriftEvent::FleetInconsistent {
            time,
            hashes,
            confirmed,
        } => Some(DriftRow {
            tenant: tenant.to_owned(),
            time: *time,
            server: server.to_owned(),
            kind: FindingKind::FleetInconsistent.as_str().to_owned(),
            old_hash: confirmed.clone(),
            new_hash: None,
            worst: None,
            breaking: None,
            additive: None,
            cosmetic: None,
            changes_json: None,
            old_tool_count: None,
            new_tool_count: None,
            detail: Some(format!(
                "alternating between {} versions: {}",
                hashes.len(),
                hashes.join(", ")
            )),
        }),
    }
}

/// The rows as one batch of exactly [`Table::Drift`]'s schema (tenants are ignored: group
/// rows by tenant first).
pub fn to_batch(rows: &[DriftRow]) -> Result<RecordBatch> {
    let n = rows.len();
    let mut time = TimestampNanosecondBuilder::with_capacity(n);
    let strings = || StringBuilder::with_capacity(n, n * 16);
    let (mut server, mut kind, mut old_hash, mut new_hash, mut worst) =
        (strings(), strings(), strings(), strings(), strings());
    let (mut changes, mut detail) = (strings(), strings());
    let ints = || Int32Builder::with_capacity(n);
    let (mut breaking, mut additive, mut cosmetic, mut old_count, mut new_count) =
        (ints(), ints(), ints(), ints(), ints());
    for row in rows {
        let nanos = row.time.timestamp_nanos_opt().ok_or_else(|| {
            ArrowError::InvalidArgumentError(format!("timestamp {} out of range", row.time))
        })?;
        time.append_value(nanos);
        server.append_value(&row.server);
        kind.append_value(&row.kind);
        old_hash.append_option(row.old_hash.as_deref());
        new_hash.append_option(row.new_hash.as_deref());
        worst.append_option(row.worst.as_deref());
        breaking.append_option(row.breaking);
        additive.append_option(row.additive);
        cosmetic.append_option(row.cosmetic);
        changes.append_option(row.changes_json.as_deref());
        old_count.append_option(row.old_tool_count);
        new_count.append_option(row.new_tool_count);
        detail.append_option(row.detail.as_deref());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish().with_timezone("UTC")),
        Arc::new(server.finish()),
        Arc::new(kind.finish()),
        Arc::new(old_hash.finish()),
        Arc::new(new_hash.finish()),
        Arc::new(worst.finish()),
        Arc::new(breaking.finish()),
        Arc::new(additive.finish()),
        Arc::new(cosmetic.finish()),
        Arc::new(changes.finish()),
        Arc::new(old_count.finish()),
        Arc::new(new_count.finish()),
        Arc::new(detail.finish()),
    ];
    RecordBatch::try_new(Table::Drift.schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{Change, ChangeKind};
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, TimestampNanosecondType};
    use chrono::TimeZone;
    use mcpulse_schemas::tables::drift as col;

    fn t() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 10, 5, 0).unwrap()
    }

    fn events() -> Vec<DriftEvent> {
        vec![
            DriftEvent::Baseline {
                time: t(),
                hash: "h0".into(),
                tool_count: Some(1),
            },
            DriftEvent::Drift {
                time: t(),
                old_hash: "h1".into(),
                new_hash: "h2".into(),
                changes: Some(vec![
                    Change::new(ChangeKind::ToolRemoved, "forecast", None, "tool removed"),
                    Change::new(
                        ChangeKind::RequiredParamAdded,
                        "alerts",
                        Some("units".into()),
                        "added as required",
                    ),
                    Change::new(ChangeKind::ToolAdded, "radar", None, "tool added"),
                ]),
                old_tool_count: Some(2),
                new_tool_count: Some(2),
            },
            DriftEvent::Drift {
                time: t(),
                old_hash: "h2".into(),
                new_hash: "h3".into(),
                changes: None,
                old_tool_count: Some(2),
                new_tool_count: None,
            },
            DriftEvent::FleetInconsistent {
                time: t(),
                hashes: vec!["h3".into(), "h4".into()],
                confirmed: Some("h3".into()),
            },
        ]
    }

    #[test]
    fn rows_of_events() {
        let rows: Vec<DriftRow> = events()
            .iter()
            .filter_map(|e| row_of("acme", "weather", e))
            .collect();
        assert_eq!(rows.len(), 3, "no row for the baseline");
        let d = &rows[0];
        assert_eq!(
            (d.tenant.as_str(), d.server.as_str(), d.kind.as_str()),
            ("acme", "weather", "schema_drift")
        );
        assert_eq!(d.worst.as_deref(), Some("breaking"));
        assert_eq!(
            (d.breaking, d.additive, d.cosmetic),
            (Some(2), Some(1), Some(0))
        );
        assert_eq!(d.detail.as_deref(), Some("2 breaking, 1 additive"));
        let changes: Vec<Change> = serde_json::from_str(d.changes_json.as_ref().unwrap()).unwrap();
        assert_eq!(changes.len(), 3);
        let u = &rows[1];
        assert_eq!(
            (u.worst.as_ref(), u.breaking, u.changes_json.as_ref()),
            (None, None, None)
        );
        assert_eq!((u.old_tool_count, u.new_tool_count), (Some(2), None));
        let f = &rows[2];
        assert_eq!(f.kind, "fleet_inconsistent");
        assert_eq!(
            (f.old_hash.as_deref(), f.new_hash.as_deref()),
            (Some("h3"), None)
        );
        assert_eq!(
            f.detail.as_deref(),
            Some("alternating between 2 versions: h3, h4")
        );
    }

    #[test]
    fn batch_has_the_table_schema_and_values() {
        let rows: Vec<DriftRow> = events()
            .iter()
            .filter_map(|e| row_of("acme", "weather", e))
            .collect();
        let batch = to_batch(&rows).unwrap();
        assert_eq!(batch.schema(), Table::Drift.schema());
        assert_eq!(batch.num_rows(), 3);
        let s = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        let i = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_primitive::<Int32Type>()
                .clone()
        };
        let time = batch
            .column_by_name(col::TIME)
            .unwrap()
            .as_primitive::<TimestampNanosecondType>();
        assert_eq!(time.value(0), t().timestamp_nanos_opt().unwrap());
        assert_eq!(s(col::SERVER).value(2), "weather");
        assert_eq!(s(col::KIND).value(0), "schema_drift");
        assert_eq!(s(col::KIND).value(2), "fleet_inconsistent");
        assert_eq!(s(col::OLD_HASH).value(0), "h1");
        assert_eq!(s(col::NEW_HASH).value(0), "h2");
        assert!(s(col::NEW_HASH).is_null(2));
        assert_eq!(s(col::WORST).value(0), "breaking");
        assert!(s(col::WORST).is_null(1));
        assert_eq!(i(col::BREAKING).value(0), 2);
        assert_eq!(i(col::ADDITIVE).value(0), 1);
        assert_eq!(i(col::COSMETIC).value(0), 0);
        assert!(i(col::BREAKING).is_null(1));
        assert!(s(col::CHANGES).value(0).contains("required_param_added"));
        assert!(s(col::CHANGES).is_null(1));
        assert_eq!(i(col::OLD_TOOL_COUNT).value(1), 2);
        assert!(i(col::NEW_TOOL_COUNT).is_null(1));
        assert!(s(col::DETAIL).value(1).contains("not classified"));

        let empty = to_batch(&[]).unwrap();
        assert_eq!(empty.schema(), Table::Drift.schema());
        assert_eq!(empty.num_rows(), 0);
    }
}

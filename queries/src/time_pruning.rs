//! Pruning hour folders from bounds on the event time.
//!
//! Files live under `date=YYYY-MM-DD/hour=HH` of their rows' event time (UTC), but SQL
//! filters on the time column (`start_time > now() - INTERVAL '1 hour'`) say nothing
//! about those partition columns, so DataFusion would open every file's footer. This
//! wrapper derives the equivalent partition predicates from such bounds and hands them to
//! the listing table with the original filters, so only the folders that can hold
//! matching rows are listed. The derived predicates are implied by the originals, so
//! results never change. A date's day folder (`hour=day`, a closed day compacted) may
//! hold rows of any hour of its date, so it is kept whenever its date is.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Timelike, Utc};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::datasource::listing::ListingTable;
use datafusion::error::Result;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{col, lit};
use mcpulse_schemas::folder_manifest::DAY_HOUR;

use crate::unpruned_scan::UnprunedScan;

/// A listing table whose scans also prune `date`/`hour` folders from time bounds.
#[derive(Debug)]
pub struct TimePrunedTable {
    inner: Arc<ListingTable>,
    time_column: &'static str,
    object_pruning: bool,
}

impl TimePrunedTable {
    pub fn new(inner: Arc<ListingTable>, time_column: &'static str) -> Self {
        Self {
            inner,
            time_column,
            object_pruning: true,
        }
    }

    /// Whether filters reach the Parquet scan (to prune objects, row groups and pages by
    /// their statistics). Off, the scan is an [`UnprunedScan`]: folders are still pruned
    /// at listing, and the filters are applied to the rows read.
    pub fn with_object_pruning(mut self, on: bool) -> Self {
        self.object_pruning = on;
        self
    }

    fn bounds(&self, filter: &Expr) -> Vec<Expr> {
        partition_bounds(filter, self.time_column)
    }
}

#[async_trait]
impl TableProvider for TimePrunedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let inner = self.inner.supports_filters_pushdown(filters)?;
        Ok(inner
            .into_iter()
            .zip(filters)
            .map(|(support, filter)| match support {
                // Time bounds must reach `scan` to be turned into folder pruning; they
                // are still re-checked on the rows (Inexact).
                TableProviderFilterPushDown::Unsupported if !self.bounds(filter).is_empty() => {
                    TableProviderFilterPushDown::Inexact
                }
                other => other,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut all = filters.to_vec();
        all.extend(filters.iter().flat_map(|f| self.bounds(f)));
        if self.object_pruning {
            return self.inner.scan(state, projection, &all, limit).await;
        }
        // Only what the listing applies exactly (predicates on the folder columns); the
        // others stay in the `FilterExec` above.
        let refs: Vec<&Expr> = all.iter().collect();
        let exact: Vec<Expr> = self
            .inner
            .supports_filters_pushdown(&refs)?
            .into_iter()
            .zip(&all)
            .filter(|(support, _)| *support == TableProviderFilterPushDown::Exact)
            .map(|(_, filter)| filter.clone())
            .collect();
        let scan = self.inner.scan(state, projection, &exact, limit).await?;
        Ok(Arc::new(UnprunedScan::new(scan)))
    }
}

/// Partition predicates implied by `filter` when it bounds `time_column` by a constant.
pub fn partition_bounds(filter: &Expr, time_column: &str) -> Vec<Expr> {
    match filter {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            let mut out = partition_bounds(left, time_column);
            out.extend(partition_bounds(right, time_column));
            out
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, time) = match (is_time(left, time_column), is_time(right, time_column)) {
                (true, false) => (*op, timestamp(right)),
                (false, true) => (op.swap().unwrap_or(*op), timestamp(left)),
                _ => return Vec::new(),
            };
            let Some(t) = time else { return Vec::new() };
            match op {
                Operator::Gt | Operator::GtEq => vec![at_or_after(t)],
                Operator::Lt | Operator::LtEq => vec![at_or_before(t)],
                Operator::Eq => vec![at_or_after(t), at_or_before(t)],
                _ => Vec::new(),
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_time(expr, time_column) => [
            timestamp(low).map(at_or_after),
            timestamp(high).map(at_or_before),
        ]
        .into_iter()
        .flatten()
        .collect(),
        _ => Vec::new(),
    }
}

fn is_time(expr: &Expr, time_column: &str) -> bool {
    matches!(expr, Expr::Column(c) if c.name == time_column)
}

/// The constant timestamp of a literal, in any unit.
fn timestamp(expr: &Expr) -> Option<DateTime<Utc>> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(DateTime::from_timestamp_nanos(*v)),
        ScalarValue::TimestampMicrosecond(Some(v), _) => DateTime::from_timestamp_micros(*v),
        ScalarValue::TimestampMillisecond(Some(v), _) => DateTime::from_timestamp_millis(*v),
        ScalarValue::TimestampSecond(Some(v), _) => DateTime::from_timestamp(*v, 0),
        _ => None,
    }
}

fn date_hour(t: DateTime<Utc>) -> (String, String) {
    (t.format("%Y-%m-%d").to_string(), format!("{:02}", t.hour()))
}

/// `t`'s date's day folder.
fn day_folder() -> Expr {
    col("hour").eq(lit(DAY_HOUR))
}

/// Rows at or after `t` live in folders at or after `t`'s (date, hour), or in its date's
/// day folder.
fn at_or_after(t: DateTime<Utc>) -> Expr {
    let (date, hour) = date_hour(t);
    col("date").gt(lit(date.clone())).or(col("date")
        .eq(lit(date))
        .and(col("hour").gt_eq(lit(hour)).or(day_folder())))
}

/// Rows at or before `t` live in folders at or before `t`'s (date, hour), or in its date's
/// day folder.
fn at_or_before(t: DateTime<Utc>) -> Expr {
    let (date, hour) = date_hour(t);
    col("date").lt(lit(date.clone())).or(col("date")
        .eq(lit(date))
        .and(col("hour").lt_eq(lit(hour)).or(day_folder())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Expr {
        let t = DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap();
        lit(ScalarValue::TimestampNanosecond(
            Some(t),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn derives_folder_bounds_from_time_bounds() {
        let f = col("start_time").gt_eq(ts("2026-11-21T13:45:00Z"));
        assert_eq!(
            partition_bounds(&f, "start_time"),
            vec![at_or_after(
                DateTime::parse_from_rfc3339("2026-11-21T13:45:00Z")
                    .unwrap()
                    .to_utc()
            )]
        );
        let swapped = ts("2026-11-21T13:45:00Z").gt(col("start_time"));
        let bounds = partition_bounds(&swapped, "start_time");
        assert_eq!(bounds.len(), 1);
        assert!(
            bounds[0].to_string().contains("<= Utf8(\"13\")"),
            "{}",
            bounds[0]
        );
        let both = col("start_time")
            .gt(ts("2026-11-20T23:00:00Z"))
            .and(col("start_time").lt(ts("2026-11-21T01:00:00Z")));
        assert_eq!(partition_bounds(&both, "start_time").len(), 2);
        let between = Expr::Between(Between::new(
            Box::new(col("time")),
            false,
            Box::new(ts("2026-11-20T23:00:00Z")),
            Box::new(ts("2026-11-21T01:00:00Z")),
        ));
        assert_eq!(partition_bounds(&between, "time").len(), 2);
    }

    #[test]
    fn ignores_what_it_cannot_use() {
        assert!(
            partition_bounds(
                &col("end_time").gt(ts("2026-11-21T13:45:00Z")),
                "start_time"
            )
            .is_empty()
        );
        assert!(
            partition_bounds(
                &col("start_time").not_eq(ts("2026-11-21T13:45:00Z")),
                "start_time"
            )
            .is_empty()
        );
        let or = col("start_time")
            .gt(ts("2026-11-21T13:45:00Z"))
            .or(col("name").eq(lit("x")));
        assert!(partition_bounds(&or, "start_time").is_empty());
    }
}

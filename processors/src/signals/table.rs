//! Closed windows as rows of the `signals` table, grouped by hive partition.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use mcpulse_schemas::{Table, latency_hist};

use super::row::{SignalRow, SignalSource};
use crate::archive::PartitionKey;

/// The quantiles stored as plain columns (the histogram has them all).
const QUANTILES: [f64; 4] = [0.5, 0.9, 0.95, 0.99];

/// Builds one batch per (tenant, date, hour) from `rows`.
pub fn batches(rows: &[SignalRow]) -> arrow::error::Result<Vec<(PartitionKey, RecordBatch)>> {
    let mut groups: BTreeMap<PartitionKey, Vec<&SignalRow>> = BTreeMap::new();
    for row in rows {
        let key = PartitionKey::at(&row.key.tenant, row.minute * 60_000_000_000);
        groups.entry(key).or_default().push(row);
    }
    groups
        .into_iter()
        .map(|(key, rows)| batch(&rows).map(|b| (key, b)))
        .collect()
}

fn batch(rows: &[&SignalRow]) -> arrow::error::Result<RecordBatch> {
    let n = rows.len();
    let mut time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut source = StringBuilder::new();
    let mut server = StringBuilder::new();
    let mut tool = StringBuilder::new();
    let mut method = StringBuilder::new();
    let mut region = StringBuilder::new();
    let mut calls = Int64Builder::with_capacity(n);
    let mut errors = Int64Builder::with_capacity(n);
    let mut error_rate = Float64Builder::with_capacity(n);
    let mut hist = BinaryBuilder::new();
    let mut quantiles: Vec<Float64Builder> = (0..QUANTILES.len())
        .map(|_| Float64Builder::with_capacity(n))
        .collect();
    let mut max = Float64Builder::with_capacity(n);
    let mut peak = Int64Builder::with_capacity(n);
    let mut availability = Float64Builder::with_capacity(n);
    let mut overflow = BooleanBuilder::with_capacity(n);
    let mut revision = Int32Builder::with_capacity(n);
    for row in rows {
        time.append_value(row.minute * 60_000_000_000);
        source.append_value(row.key.source.as_str());
        server.append_value(&row.key.server);
        tool.append_option(row.key.tool.as_deref());
        method.append_option(row.key.method.as_deref());
        region.append_option(row.key.region.as_deref());
        calls.append_value(row.calls as i64);
        errors.append_value(row.errors as i64);
        error_rate.append_value(row.error_rate());
        hist.append_value(latency_hist::encode(&row.latency));
        for (builder, q) in quantiles.iter_mut().zip(QUANTILES) {
            builder.append_option(row.quantile_ms(q));
        }
        max.append_option(latency_hist::max_ms(&row.latency));
        peak.append_option(row.peak_in_flight.map(|p| p as i64));
        availability.append_option(match row.key.source {
            SignalSource::Probes if row.calls > 0 => Some(1.0 - row.error_rate()),
            _ => None,
        });
        overflow.append_value(row.overflow);
        revision.append_value(0);
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(source.finish()),
        Arc::new(server.finish()),
        Arc::new(tool.finish()),
        Arc::new(method.finish()),
        Arc::new(region.finish()),
        Arc::new(calls.finish()),
        Arc::new(errors.finish()),
        Arc::new(error_rate.finish()),
        Arc::new(hist.finish()),
    ];
    for mut builder in quantiles {
        columns.push(Arc::new(builder.finish()));
    }
    columns.push(Arc::new(max.finish()));
    columns.push(Arc::new(peak.finish()));
    columns.push(Arc::new(availability.finish()));
    columns.push(Arc::new(overflow.finish()));
    columns.push(Arc::new(revision.finish()));
    RecordBatch::try_new(Table::Signals.schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::row::SeriesKey;

    fn row(tenant: &str, minute: i64, source: SignalSource) -> SignalRow {
        let key = SeriesKey {
            source,
            tenant: tenant.into(),
            server: "weather".into(),
            tool: (source == SignalSource::Spans).then(|| "forecast".into()),
            method: (source == SignalSource::Spans).then(|| "tools/call".into()),
            region: (source == SignalSource::Probes).then(|| "eu".into()),
        };
        let mut r = SignalRow::new(key, minute);
        r.calls = 4;
        r.errors = 1;
        for ms in [10.0, 20.0, 30.0, 40.0] {
            latency_hist::record_ms(&mut r.latency, ms);
        }
        r.peak_in_flight = (source == SignalSource::Spans).then_some(2);
        r
    }

    #[test]
    fn rows_group_by_tenant_and_hour_with_the_table_schema() {
        let rows = vec![
            row("acme", 60, SignalSource::Spans),
            row("acme", 61, SignalSource::Probes),
            row("acme", 120, SignalSource::Spans),
            row("globex", 60, SignalSource::Spans),
        ];
        let batches = batches(&rows).unwrap();
        assert_eq!(batches.len(), 3);
        let (key, first) = &batches[0];
        assert_eq!((key.tenant.as_str(), key.hour), ("acme", 1));
        assert_eq!(first.num_rows(), 2);
        assert_eq!(first.schema(), Table::Signals.schema());
        let availability = first
            .column_by_name("availability")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::Float64Array>()
            .unwrap();
        assert!(arrow::array::Array::is_null(availability, 0));
        assert_eq!(availability.value(1), 0.75);
    }
}

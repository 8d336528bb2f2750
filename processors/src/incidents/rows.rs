//! Incident transitions as rows of the `alerts` table, grouped by hive partition (the
//! event's tenant — `_operator` for storms — and the hour of its time).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use chrono::{DateTime, Utc};
use mcpulse_schemas::{AlertEvent, Table};

use crate::archive::PartitionKey;

fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// One batch per (tenant, date, hour).
pub fn batches(events: &[AlertEvent]) -> arrow::error::Result<Vec<(PartitionKey, RecordBatch)>> {
    let mut groups: BTreeMap<PartitionKey, Vec<&AlertEvent>> = BTreeMap::new();
    for e in events {
        groups
            .entry(PartitionKey::at(&e.tenant, ns(e.time)))
            .or_default()
            .push(e);
    }
    groups
        .into_iter()
        .map(|(key, events)| batch(&events).map(|b| (key, b)))
        .collect()
}

fn batch(events: &[&AlertEvent]) -> arrow::error::Result<RecordBatch> {
    let ts = || TimestampNanosecondBuilder::new().with_timezone("UTC");
    let (mut time, mut opened, mut resolved) = (ts(), ts(), ts());
    let mut strings: Vec<StringBuilder> = (0..12).map(|_| StringBuilder::new()).collect();
    let mut storm: Vec<StringBuilder> = (0..3).map(|_| StringBuilder::new()).collect();
    let (mut duration, mut tenants, mut members) = (
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
    );
    let mut evidence = StringBuilder::new();
    for e in events {
        time.append_value(ns(e.time));
        let values: [Option<String>; 12] = [
            Some(e.event_id.clone()),
            Some(e.incident_id.clone()),
            Some(e.dedup_key.clone()),
            Some(e.action.as_str().to_string()),
            Some(e.status.as_str().to_string()),
            Some(e.server.clone().unwrap_or_default()),
            Some(e.class.clone()),
            Some(e.severity.as_str().to_string()),
            Some(e.scope.clone()),
            e.reason.clone(),
            (!e.regions.is_empty()).then(|| e.regions.join(",")),
            None,
        ];
        for (b, v) in strings.iter_mut().zip(values).take(11) {
            b.append_option(v);
        }
        opened.append_value(ns(e.opened_at));
        resolved.append_option(e.resolved_at.map(ns));
        duration.append_option(e.duration_s.map(|d| d as i64));
        storm[0].append_option(e.storm_id.as_deref());
        storm[1].append_option(e.storm.as_ref().map(|s| s.provider.as_str()));
        storm[2].append_option(e.storm.as_ref().map(|s| s.region.as_str()));
        tenants.append_option(e.storm.as_ref().map(|s| s.tenants as i64));
        members.append_option(e.storm.as_ref().map(|s| s.members as i64));
        strings[11].append_value(&e.summary);
        evidence.append_value(e.evidence.to_string());
    }
    let mut s = strings
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut next = || s.next().expect("12 string columns");
    let mut st = storm
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef);
    let mut storm_col = || st.next().expect("3 storm columns");
    let columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        next(), // event_id
        next(), // incident_id
        next(), // dedup_key
        next(), // action
        next(), // status
        next(), // server
        next(), // class
        next(), // severity
        next(), // scope
        next(), // reason
        next(), // regions
        Arc::new(opened.finish()),
        Arc::new(resolved.finish()),
        Arc::new(duration.finish()),
        storm_col(), // storm_id
        storm_col(), // storm_provider
        storm_col(), // storm_region
        Arc::new(tenants.finish()),
        Arc::new(members.finish()),
        next(), // summary
        Arc::new(evidence.finish()),
    ];
    RecordBatch::try_new(Table::Alerts.schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpulse_schemas::alert::{AlertAction, AlertStatus, OPERATOR_TENANT, StormSummary};
    use mcpulse_schemas::finding::Severity;

    fn event(tenant: &str, storm: bool) -> AlertEvent {
        let t = DateTime::parse_from_rfc3339("2026-11-21T10:05:00Z")
            .unwrap()
            .with_timezone(&Utc);
        AlertEvent {
            event_id: "e1".into(),
            incident_id: "i1".into(),
            dedup_key: "mcpulse/acme/weather/unreachable".into(),
            action: AlertAction::Resolve,
            status: AlertStatus::Resolved,
            tenant: tenant.into(),
            server: (!storm).then(|| "weather".into()),
            class: "unreachable".into(),
            severity: Severity::P1,
            scope: "global".into(),
            reason: Some("tcp_refused".into()),
            regions: vec!["eu".into(), "us".into()],
            time: t,
            opened_at: t - chrono::Duration::minutes(10),
            resolved_at: Some(t),
            duration_s: Some(600),
            storm_id: None,
            storm: storm.then(|| StormSummary {
                provider: "render".into(),
                region: "global".into(),
                tenants: 40,
                members: 40,
            }),
            provider_outage: None,
            summary: "resolved after 10m".into(),
            evidence: serde_json::json!({"healthy": 2}),
        }
    }

    #[test]
    fn events_become_rows_of_the_alerts_table() {
        let batches = batches(&[event("acme", false), event(OPERATOR_TENANT, true)]).unwrap();
        assert_eq!(batches.len(), 2);
        for (_, b) in &batches {
            assert_eq!(b.schema(), Table::Alerts.schema());
            assert_eq!(b.num_rows(), 1);
        }
        let (key, acme) = batches.iter().find(|(k, _)| k.tenant == "acme").unwrap();
        assert_eq!(key.hour, 10);
        let col = |name: &str| {
            acme.column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap()
                .value(0)
                .to_string()
        };
        assert_eq!(col("action"), "resolve");
        assert_eq!(col("status"), "resolved");
        assert_eq!(col("severity"), "P1");
        assert_eq!(col("regions"), "eu,us");
        assert_eq!(col("summary"), "resolved after 10m");
    }
}

//! The archived history `routes backtest` replays: incident transitions from `alerts`
//! and, when the archive has it, what was delivered from `notifications`. Every tenant's
//! rows (the CLI reads the archive directly, as an operator).

use chrono::{DateTime, Utc};
use futures::StreamExt;
use mcpulse_queries::{OutputFormat, QueryEngine, Scope};
use mcpulse_schemas::{AlertEvent, StormSummary};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::Config;
use crate::archive_store::ArchiveLocation;

/// Reading the history failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{0}")]
    Archive(String),
    #[error("query on {table} failed: {message}")]
    Query {
        table: &'static str,
        message: String,
    },
    #[error("{table}: a row does not decode: {message}")]
    Row {
        table: &'static str,
        message: String,
    },
}

/// One delivery the notify stage recorded as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub receiver: String,
    pub event_id: String,
    pub action: String,
}

/// The archive, opened for reading as an operator.
pub struct History {
    location: ArchiveLocation,
    engine: QueryEngine,
}

impl History {
    pub fn open(config: &Config) -> Result<History, HistoryError> {
        let location =
            ArchiveLocation::open(config).map_err(|e| HistoryError::Archive(e.to_string()))?;
        let engine = QueryEngine::new(location.catalog(), config.query.clone());
        Ok(History { location, engine })
    }

    /// Every incident transition with `since <= time < until`, in time order (one per
    /// event id).
    pub async fn alerts(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<AlertEvent>, HistoryError> {
        let sql = format!(
            "SELECT tenant, CAST(time AS BIGINT) AS time_ns, event_id, incident_id, dedup_key, \
             action, status, server, class, severity, scope, reason, regions, \
             CAST(opened_at AS BIGINT) AS opened_ns, CAST(resolved_at AS BIGINT) AS resolved_ns, \
             duration_s, storm_id, storm_provider, storm_region, storm_tenants, storm_members, \
             summary, evidence FROM alerts {} ORDER BY time, event_id",
            window("time", since, until)
        );
        let rows: Vec<AlertRow> = self.rows("alerts", &sql).await?;
        let mut seen = std::collections::HashSet::new();
        rows.into_iter()
            .filter(|r| seen.insert(r.event_id.clone()))
            .map(AlertRow::into_event)
            .collect()
    }

    /// Deliveries recorded as sent with `since <= time < until`, or `None` when the
    /// archive has no `notifications` table (no notify stage has written one yet).
    pub async fn sent(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<Vec<Sent>>, HistoryError> {
        if !self.has_table("notifications").await? {
            return Ok(None);
        }
        let sql = format!(
            "SELECT DISTINCT receiver, event_id, action FROM notifications {} AND status = 'sent'",
            window("time", since, until)
        );
        let rows: Vec<SentRow> = self.rows("notifications", &sql).await?;
        Ok(Some(
            rows.into_iter()
                .map(|r| Sent {
                    receiver: r.receiver,
                    event_id: r.event_id,
                    action: r.action,
                })
                .collect(),
        ))
    }

    /// Whether the query engine knows `table` and the archive holds at least one file
    /// of it.
    async fn has_table(&self, table: &'static str) -> Result<bool, HistoryError> {
        let ctx = self
            .engine
            .context(&Scope::All)
            .map_err(|e| HistoryError::Archive(e.to_string()))?;
        if !ctx.table_exist(table).unwrap_or(false) {
            return Ok(false);
        }
        let prefix = self.location.target.root.clone().join(table);
        let first = self.location.target.store.list(Some(&prefix)).next().await;
        match first {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(HistoryError::Archive(e.to_string())),
        }
    }

    /// Every row of `sql` (no row limit), decoded through JSON.
    async fn rows<T: DeserializeOwned>(
        &self,
        table: &'static str,
        sql: &str,
    ) -> Result<Vec<T>, HistoryError> {
        let query = |e: &dyn std::fmt::Display| HistoryError::Query {
            table,
            message: e.to_string(),
        };
        let ctx = self.engine.context(&Scope::All).map_err(|e| query(&e))?;
        let batches = ctx
            .sql(sql)
            .await
            .map_err(|e| query(&e))?
            .collect()
            .await
            .map_err(|e| query(&e))?;
        let Some(first) = batches.first() else {
            return Ok(Vec::new());
        };
        let json = OutputFormat::Json
            .render(&first.schema(), &batches)
            .map_err(|e| query(&e))?;
        serde_json::from_slice(&json).map_err(|e| HistoryError::Row {
            table,
            message: e.to_string(),
        })
    }
}

/// `WHERE column >= since AND column < until`.
fn window(column: &str, since: DateTime<Utc>, until: DateTime<Utc>) -> String {
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    format!(
        "WHERE {column} >= TIMESTAMP '{}' AND {column} < TIMESTAMP '{}'",
        ts(since),
        ts(until)
    )
}

/// A string column holding a serde enum (`trigger`, `P1`, …).
fn enum_of<T: DeserializeOwned>(value: &str) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::Value::String(value.to_string()))
}

#[derive(Deserialize)]
struct SentRow {
    receiver: String,
    event_id: String,
    action: String,
}

/// One `alerts` row as the query returns it (nulls are absent).
#[derive(Deserialize)]
struct AlertRow {
    tenant: String,
    time_ns: i64,
    event_id: String,
    incident_id: String,
    dedup_key: String,
    action: String,
    status: String,
    #[serde(default)]
    server: Option<String>,
    class: String,
    severity: String,
    scope: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    regions: Option<String>,
    opened_ns: i64,
    #[serde(default)]
    resolved_ns: Option<i64>,
    #[serde(default)]
    duration_s: Option<i64>,
    #[serde(default)]
    storm_id: Option<String>,
    #[serde(default)]
    storm_provider: Option<String>,
    #[serde(default)]
    storm_region: Option<String>,
    #[serde(default)]
    storm_tenants: Option<i64>,
    #[serde(default)]
    storm_members: Option<i64>,
    summary: String,
    #[serde(default)]
    evidence: Option<String>,
}

impl AlertRow {
    fn into_event(self) -> Result<AlertEvent, HistoryError> {
        let row_error = |what: &str, e: &dyn std::fmt::Display| HistoryError::Row {
            table: "alerts",
            message: format!("event {}: {what}: {e}", self.event_id),
        };
        let storm = match (&self.storm_provider, &self.storm_region) {
            (Some(provider), Some(region)) => Some(StormSummary {
                provider: provider.clone(),
                region: region.clone(),
                tenants: self.storm_tenants.unwrap_or(0).max(0) as u64,
                members: self.storm_members.unwrap_or(0).max(0) as u64,
            }),
            _ => None,
        };
        let evidence = match &self.evidence {
            Some(text) => serde_json::from_str(text).map_err(|e| row_error("evidence", &e))?,
            None => serde_json::Value::Null,
        };
        Ok(AlertEvent {
            action: enum_of(&self.action).map_err(|e| row_error("action", &e))?,
            status: enum_of(&self.status).map_err(|e| row_error("status", &e))?,
            severity: enum_of(&self.severity).map_err(|e| row_error("severity", &e))?,
            event_id: self.event_id.clone(),
            incident_id: self.incident_id,
            dedup_key: self.dedup_key,
            tenant: self.tenant,
            server: self.server.filter(|s| !s.is_empty()),
            class: self.class,
            scope: self.scope,
            reason: self.reason,
            regions: self
                .regions
                .map(|r| r.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            time: DateTime::from_timestamp_nanos(self.time_ns),
            opened_at: DateTime::from_timestamp_nanos(self.opened_ns),
            resolved_at: self.resolved_ns.map(DateTime::from_timestamp_nanos),
            duration_s: self.duration_s.map(|d| d.max(0) as u64),
            storm_id: self.storm_id,
            storm,
            provider_outage: None,
            summary: self.summary,
            evidence,
        })
    }
}

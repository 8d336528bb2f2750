//! Arrow schemas of the archive tables.
//!
//! Every table is stored as Parquet under
//! `{root}/{table}/tenant={t}/date={YYYY-MM-DD}/hour={HH}/{name}.parquet`; `tenant`, `date`
//! and `hour` are hive partition columns taken from the path, so they are not stored in
//! the files themselves (the tenant is also recorded in each file's footer metadata).
//! Once a day is closed its small hourly objects are compacted into its day folder,
//! `hour=day` (see [`crate::folder_manifest`]): the `hour` column then reads `day`, so
//! filter on the time column, not on `hour`.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Partition columns, in path order.
pub const PARTITION_COLUMNS: [&str; 3] = ["tenant", "date", "hour"];
/// Footer metadata key naming the tenant of a file.
pub const META_TENANT: &str = "mcpulse.tenant";
/// Footer metadata keys with the min/max event time of a file (RFC 3339).
pub const META_MIN_TIME: &str = "mcpulse.min_time";
pub const META_MAX_TIME: &str = "mcpulse.max_time";

/// The archive tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    Spans,
    Probes,
    /// One-minute golden-signal rollups (from spans and from probes).
    Signals,
    /// Confirmed tool-list changes and inconsistent fleets.
    Drift,
    /// Incident transitions (what `alerts.v1` carries).
    Alerts,
    /// Every notification decision and delivery attempt (muted, silenced, sent, retried,
    /// failed, skipped).
    Notifications,
}

impl Table {
    pub const ALL: [Table; 6] = [
        Table::Spans,
        Table::Probes,
        Table::Signals,
        Table::Drift,
        Table::Alerts,
        Table::Notifications,
    ];

    /// Table (and folder) name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Spans => "spans",
            Table::Probes => "probes",
            Table::Signals => "signals",
            Table::Drift => "drift",
            Table::Alerts => "alerts",
            Table::Notifications => "notifications",
        }
    }

    /// Schema of the stored files (without partition columns).
    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Spans => SPANS.clone(),
            Table::Probes => PROBES.clone(),
            Table::Signals => SIGNALS.clone(),
            Table::Drift => DRIFT.clone(),
            Table::Alerts => ALERTS.clone(),
            Table::Notifications => NOTIFICATIONS.clone(),
        }
    }

    /// The event-time column that decides a row's date/hour partition.
    pub fn time_column(self) -> &'static str {
        match self {
            Table::Spans => spans::START_TIME,
            Table::Probes => probes::TIME,
            Table::Signals => signals::TIME,
            Table::Drift => drift::TIME,
            Table::Alerts => alerts::TIME,
            Table::Notifications => notifications::TIME,
        }
    }

    /// The column rows are sorted by before the time column ("server").
    pub fn server_column(self) -> &'static str {
        match self {
            Table::Spans => spans::SERVICE_NAME,
            Table::Probes => probes::SERVER,
            Table::Signals => signals::SERVER,
            Table::Drift => drift::SERVER,
            Table::Alerts => alerts::SERVER,
            Table::Notifications => notifications::SERVER,
        }
    }
}

/// Timestamps are nanoseconds since the Unix epoch, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// `Map<Utf8, Utf8>` with the field names Arrow and Parquet use by default.
pub fn string_map_type() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Utf8, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// Column names of `spans`.
pub mod spans {
    pub const TRACE_ID: &str = "trace_id";
    pub const SPAN_ID: &str = "span_id";
    pub const PARENT_SPAN_ID: &str = "parent_span_id";
    pub const TRACE_STATE: &str = "trace_state";
    pub const NAME: &str = "name";
    pub const KIND: &str = "kind";
    pub const START_TIME: &str = "start_time";
    pub const END_TIME: &str = "end_time";
    pub const DURATION_NS: &str = "duration_ns";
    pub const STATUS_CODE: &str = "status_code";
    pub const STATUS_MESSAGE: &str = "status_message";
    pub const SERVICE_NAME: &str = "service_name";
    pub const MCP_METHOD_NAME: &str = "mcp_method_name";
    pub const GEN_AI_TOOL_NAME: &str = "gen_ai_tool_name";
    pub const MCP_SESSION_ID: &str = "mcp_session_id";
    pub const MCP_PROTOCOL_VERSION: &str = "mcp_protocol_version";
    pub const ERROR_TYPE: &str = "error_type";
    pub const JSONRPC_REQUEST_ID: &str = "jsonrpc_request_id";
    pub const NETWORK_TRANSPORT: &str = "network_transport";
    pub const SCOPE_NAME: &str = "scope_name";
    pub const SCOPE_VERSION: &str = "scope_version";
    pub const RESOURCE_ATTRIBUTES: &str = "resource_attributes";
    pub const SCOPE_ATTRIBUTES: &str = "scope_attributes";
    pub const ATTRIBUTES: &str = "attributes";
    pub const EVENTS: &str = "events";
    pub const LINKS: &str = "links";

    /// Span attributes promoted to their own typed columns (attribute key, column), in
    /// schema order. They are not repeated in the `attributes` map.
    pub const PROMOTED_ATTRIBUTES: [(&str, &str); 7] = [
        ("mcp.method.name", MCP_METHOD_NAME),
        ("gen_ai.tool.name", GEN_AI_TOOL_NAME),
        ("mcp.session.id", MCP_SESSION_ID),
        ("mcp.protocol.version", MCP_PROTOCOL_VERSION),
        ("error.type", ERROR_TYPE),
        ("jsonrpc.request.id", JSONRPC_REQUEST_ID),
        ("network.transport", NETWORK_TRANSPORT),
    ];

    /// The resource attribute that names the service (promoted to `service_name`).
    pub const SERVICE_NAME_ATTRIBUTE: &str = "service.name";
}

/// Column names of `probes`.
pub mod probes {
    pub const TIME: &str = "time";
    pub const PROBE_ID: &str = "probe_id";
    pub const SERVER: &str = "server";
    pub const URL: &str = "url";
    pub const REGION: &str = "region";
    pub const OK: &str = "ok";
    pub const FAILURE_REASON: &str = "failure_reason";
    pub const FAILURE_PHASE: &str = "failure_phase";
    pub const FAILURE_DETAIL: &str = "failure_detail";
    pub const HTTP_STATUS: &str = "http_status";
    pub const JSONRPC_ERROR_CODE: &str = "jsonrpc_error_code";
    pub const PROTOCOL_ERA: &str = "protocol_era";
    pub const PROTOCOL_VERSION: &str = "protocol_version";
    pub const DNS_MS: &str = "dns_ms";
    pub const CONNECT_MS: &str = "connect_ms";
    pub const TLS_MS: &str = "tls_ms";
    pub const FIRST_BYTE_MS: &str = "first_byte_ms";
    pub const INITIALIZE_MS: &str = "initialize_ms";
    pub const TOOLS_LIST_MS: &str = "tools_list_ms";
    pub const TOTAL_MS: &str = "total_ms";
    pub const TOOL_COUNT: &str = "tool_count";
    pub const TOOLS_HASH: &str = "tools_hash";
    pub const TOOLS: &str = "tools";
    pub const TLS_EXPIRES_AT: &str = "tls_expires_at";
    pub const LABELS: &str = "labels";
    pub const PROBER: &str = "prober";
}

/// Column names of `signals`: one row per series and event-time minute.
pub mod signals {
    /// Start of the minute (UTC).
    pub const TIME: &str = "time";
    /// `spans` (calls to a tool/method) or `probes` (probe results of one region).
    pub const SOURCE: &str = "source";
    pub const SERVER: &str = "server";
    /// `gen_ai.tool.name` of the spans (spans rows).
    pub const TOOL: &str = "tool";
    /// `mcp.method.name` of the spans (spans rows).
    pub const METHOD: &str = "method";
    /// Probing region (probes rows).
    pub const REGION: &str = "region";
    /// Calls (spans rows) or probes run (probes rows).
    pub const CALLS: &str = "calls";
    /// Failed calls (status ERROR or `error.type` set) or failed probes.
    pub const ERRORS: &str = "errors";
    pub const ERROR_RATE: &str = "error_rate";
    /// Serialized HdrHistogram (V2) of latencies in microseconds: merge with
    /// `hdr_merge`, read with `hdr_quantile`.
    pub const LATENCY_HIST: &str = "latency_hist";
    pub const P50_MS: &str = "p50_ms";
    pub const P90_MS: &str = "p90_ms";
    pub const P95_MS: &str = "p95_ms";
    pub const P99_MS: &str = "p99_ms";
    pub const MAX_MS: &str = "max_ms";
    /// Peak calls in flight at once during the minute (spans rows).
    pub const PEAK_IN_FLIGHT: &str = "peak_in_flight";
    /// Share of successful probes (probes rows).
    pub const AVAILABILITY: &str = "availability";
    /// The row folds series beyond the tenant's cardinality cap.
    pub const OVERFLOW: &str = "overflow";
    /// 0 for the row written when the window closed.
    pub const REVISION: &str = "revision";
}

/// Column names of `drift`: one row per confirmed tool-list change or inconsistent fleet.
pub mod drift {
    /// Event time of the probe that confirmed it.
    pub const TIME: &str = "time";
    pub const SERVER: &str = "server";
    /// `schema_drift` or `fleet_inconsistent`.
    pub const KIND: &str = "kind";
    pub const OLD_HASH: &str = "old_hash";
    pub const NEW_HASH: &str = "new_hash";
    /// `breaking`, `additive` or `cosmetic` (the worst change), null when unknown.
    pub const WORST: &str = "worst";
    pub const BREAKING: &str = "breaking";
    pub const ADDITIVE: &str = "additive";
    pub const COSMETIC: &str = "cosmetic";
    /// JSON list of the classified changes.
    pub const CHANGES: &str = "changes";
    pub const OLD_TOOL_COUNT: &str = "old_tool_count";
    pub const NEW_TOOL_COUNT: &str = "new_tool_count";
    /// What explains the row (e.g. the alternating hashes of an inconsistent fleet).
    pub const DETAIL: &str = "detail";
}

/// Column names of `alerts`: one row per incident transition (see `alert::AlertEvent`).
pub mod alerts {
    pub const TIME: &str = "time";
    pub const EVENT_ID: &str = "event_id";
    pub const INCIDENT_ID: &str = "incident_id";
    pub const DEDUP_KEY: &str = "dedup_key";
    /// `trigger`, `update`, `resolve` or `blip`.
    pub const ACTION: &str = "action";
    /// `open`, `flapping`, `suppressed` or `resolved`.
    pub const STATUS: &str = "status";
    /// The server (empty for storms, whose tenant is `_operator`).
    pub const SERVER: &str = "server";
    pub const CLASS: &str = "class";
    pub const SEVERITY: &str = "severity";
    pub const SCOPE: &str = "scope";
    pub const REASON: &str = "reason";
    /// Failing regions, comma-separated.
    pub const REGIONS: &str = "regions";
    pub const OPENED_AT: &str = "opened_at";
    pub const RESOLVED_AT: &str = "resolved_at";
    pub const DURATION_S: &str = "duration_s";
    pub const STORM_ID: &str = "storm_id";
    pub const STORM_PROVIDER: &str = "storm_provider";
    pub const STORM_REGION: &str = "storm_region";
    pub const STORM_TENANTS: &str = "storm_tenants";
    pub const STORM_MEMBERS: &str = "storm_members";
    pub const SUMMARY: &str = "summary";
    /// JSON of what caused the transition.
    pub const EVIDENCE: &str = "evidence";
}

/// Column names of `notifications`: one row per delivery attempt, or per decision not to
/// deliver (muted, silenced), of one incident transition to one receiver integration.
pub mod notifications {
    /// Time of the transition (the `alerts.v1` event's `time`): decides the partition, so
    /// a replay writes its rows where the first run did.
    pub const TIME: &str = "time";
    /// When the attempt started (or the decision was taken).
    pub const ATTEMPTED_AT: &str = "attempted_at";
    pub const EVENT_ID: &str = "event_id";
    pub const INCIDENT_ID: &str = "incident_id";
    pub const DEDUP_KEY: &str = "dedup_key";
    /// The transition: `trigger`, `update`, `resolve`, `blip` or `suppress`.
    pub const ACTION: &str = "action";
    /// Whether this is a re-send of the last notification after the route's
    /// `repeat_interval`.
    pub const REPEAT: &str = "repeat";
    /// The server (empty for storms).
    pub const SERVER: &str = "server";
    pub const SEVERITY: &str = "severity";
    /// The route that took the event (its stable id).
    pub const ROUTE_ID: &str = "route_id";
    /// The receiver's name in routes.yaml.
    pub const RECEIVER: &str = "receiver";
    /// `pagerduty`, `opsgenie`, `discord`, `email` or `webhook`.
    pub const INTEGRATION: &str = "integration";
    /// The destination without secrets (`pagerduty:<host>:<key hash>`, `discord:webhook/<id>`).
    pub const DESTINATION: &str = "destination";
    /// 1-based attempt number; 0 for decisions that made no attempt (muted, silenced).
    pub const ATTEMPT: &str = "attempt";
    /// `sent`, `retry` (failed, will be retried), `failed` (dead-lettered), `skipped`
    /// (nothing to send for this transition there), `muted` or `silenced`.
    pub const STATUS: &str = "status";
    /// Time spent in the attempt (null for decisions).
    pub const LATENCY_MS: &str = "latency_ms";
    /// Why it failed, was skipped, muted or silenced (secrets redacted).
    pub const ERROR: &str = "error";
}

static NOTIFICATIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    use notifications::*;
    let s = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        Field::new(TIME, timestamp_type(), false),
        Field::new(ATTEMPTED_AT, timestamp_type(), false),
        s(EVENT_ID, false),
        s(INCIDENT_ID, false),
        s(DEDUP_KEY, false),
        s(ACTION, false),
        Field::new(REPEAT, DataType::Boolean, false),
        s(SERVER, false),
        s(SEVERITY, false),
        s(ROUTE_ID, false),
        s(RECEIVER, false),
        s(INTEGRATION, false),
        s(DESTINATION, false),
        Field::new(ATTEMPT, DataType::Int32, false),
        s(STATUS, false),
        Field::new(LATENCY_MS, DataType::Float64, true),
        s(ERROR, true),
    ]))
});

static ALERTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    use alerts::*;
    let s = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let n = |name: &str| Field::new(name, DataType::Int64, true);
    Arc::new(Schema::new(vec![
        Field::new(TIME, timestamp_type(), false),
        s(EVENT_ID, false),
        s(INCIDENT_ID, false),
        s(DEDUP_KEY, false),
        s(ACTION, false),
        s(STATUS, false),
        s(SERVER, false),
        s(CLASS, false),
        s(SEVERITY, false),
        s(SCOPE, false),
        s(REASON, true),
        s(REGIONS, true),
        Field::new(OPENED_AT, timestamp_type(), false),
        Field::new(RESOLVED_AT, timestamp_type(), true),
        n(DURATION_S),
        s(STORM_ID, true),
        s(STORM_PROVIDER, true),
        s(STORM_REGION, true),
        n(STORM_TENANTS),
        n(STORM_MEMBERS),
        s(SUMMARY, false),
        s(EVIDENCE, true),
    ]))
});

static SIGNALS: LazyLock<SchemaRef> = LazyLock::new(|| {
    use signals::*;
    let s = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let ms = |name: &str| Field::new(name, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        Field::new(TIME, timestamp_type(), false),
        s(SOURCE, false),
        s(SERVER, false),
        s(TOOL, true),
        s(METHOD, true),
        s(REGION, true),
        Field::new(CALLS, DataType::Int64, false),
        Field::new(ERRORS, DataType::Int64, false),
        Field::new(ERROR_RATE, DataType::Float64, false),
        Field::new(LATENCY_HIST, DataType::Binary, true),
        ms(P50_MS),
        ms(P90_MS),
        ms(P95_MS),
        ms(P99_MS),
        ms(MAX_MS),
        Field::new(PEAK_IN_FLIGHT, DataType::Int64, true),
        Field::new(AVAILABILITY, DataType::Float64, true),
        Field::new(OVERFLOW, DataType::Boolean, false),
        Field::new(REVISION, DataType::Int32, false),
    ]))
});

static DRIFT: LazyLock<SchemaRef> = LazyLock::new(|| {
    use drift::*;
    let s = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let n = |name: &str| Field::new(name, DataType::Int32, true);
    Arc::new(Schema::new(vec![
        Field::new(TIME, timestamp_type(), false),
        s(SERVER, false),
        s(KIND, false),
        s(OLD_HASH, true),
        s(NEW_HASH, true),
        s(WORST, true),
        n(BREAKING),
        n(ADDITIVE),
        n(COSMETIC),
        s(CHANGES, true),
        n(OLD_TOOL_COUNT),
        n(NEW_TOOL_COUNT),
        s(DETAIL, true),
    ]))
});

static SPANS: LazyLock<SchemaRef> = LazyLock::new(|| {
    use spans::*;
    let s = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let event = Field::new(
        "item",
        DataType::Struct(Fields::from(vec![
            Field::new("time", timestamp_type(), false),
            s("name", false),
            Field::new("attributes", string_map_type(), false),
        ])),
        true,
    );
    let link = Field::new(
        "item",
        DataType::Struct(Fields::from(vec![
            s("trace_id", false),
            s("span_id", false),
            s("trace_state", true),
            Field::new("attributes", string_map_type(), false),
        ])),
        true,
    );
    let mut fields = vec![
        s(TRACE_ID, false),
        s(SPAN_ID, false),
        s(PARENT_SPAN_ID, true),
        s(TRACE_STATE, true),
        s(NAME, false),
        s(KIND, false),
        Field::new(START_TIME, timestamp_type(), false),
        Field::new(END_TIME, timestamp_type(), false),
        Field::new(DURATION_NS, DataType::Int64, false),
        s(STATUS_CODE, false),
        s(STATUS_MESSAGE, true),
        s(SERVICE_NAME, false),
    ];
    fields.extend(PROMOTED_ATTRIBUTES.iter().map(|(_, col)| s(col, true)));
    fields.extend([
        s(SCOPE_NAME, true),
        s(SCOPE_VERSION, true),
        Field::new(RESOURCE_ATTRIBUTES, string_map_type(), false),
        Field::new(SCOPE_ATTRIBUTES, string_map_type(), false),
        Field::new(ATTRIBUTES, string_map_type(), false),
        Field::new(EVENTS, DataType::List(Arc::new(event)), false),
        Field::new(LINKS, DataType::List(Arc::new(link)), false),
    ]);
    Arc::new(Schema::new(fields))
});

static PROBES: LazyLock<SchemaRef> = LazyLock::new(|| {
    use probes::*;
    let s = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let ms = |name: &str| Field::new(name, DataType::Float64, true);
    Arc::new(Schema::new(vec![
        Field::new(TIME, timestamp_type(), false),
        s(PROBE_ID, true),
        s(SERVER, false),
        s(URL, true),
        s(REGION, false),
        Field::new(OK, DataType::Boolean, false),
        s(FAILURE_REASON, true),
        s(FAILURE_PHASE, true),
        s(FAILURE_DETAIL, true),
        Field::new(HTTP_STATUS, DataType::Int32, true),
        Field::new(JSONRPC_ERROR_CODE, DataType::Int64, true),
        s(PROTOCOL_ERA, true),
        s(PROTOCOL_VERSION, true),
        ms(DNS_MS),
        ms(CONNECT_MS),
        ms(TLS_MS),
        ms(FIRST_BYTE_MS),
        ms(INITIALIZE_MS),
        ms(TOOLS_LIST_MS),
        ms(TOTAL_MS),
        Field::new(TOOL_COUNT, DataType::Int32, true),
        s(TOOLS_HASH, true),
        s(TOOLS, true),
        Field::new(TLS_EXPIRES_AT, timestamp_type(), true),
        Field::new(LABELS, string_map_type(), false),
        s(PROBER, true),
    ]))
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_schema_promotes_mcp_attributes() {
        let schema = Table::Spans.schema();
        for (_, col) in spans::PROMOTED_ATTRIBUTES {
            assert_eq!(
                schema.field_with_name(col).unwrap().data_type(),
                &DataType::Utf8
            );
        }
        assert_eq!(
            schema.field_with_name("start_time").unwrap().data_type(),
            &timestamp_type()
        );
        assert!(matches!(
            schema.field_with_name("events").unwrap().data_type(),
            DataType::List(_)
        ));
    }

    #[test]
    fn no_table_stores_partition_columns() {
        for table in Table::ALL {
            for col in PARTITION_COLUMNS {
                assert!(
                    table.schema().field_with_name(col).is_err(),
                    "{} stores {col}",
                    table.name()
                );
            }
            assert!(table.schema().field_with_name(table.time_column()).is_ok());
            assert!(
                table
                    .schema()
                    .field_with_name(table.server_column())
                    .is_ok()
            );
        }
    }
}

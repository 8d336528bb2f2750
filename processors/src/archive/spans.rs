//! `spans.v1` → the `spans` table: one row per span, MCP attributes promoted to columns.

use std::fmt::Write;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Builder, ListArray, RecordBatch, StringBuilder, StructArray,
    TimestampNanosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field};
use arrow::error::ArrowError;
use mcpulse_schemas::Table;
use mcpulse_schemas::tables::spans::{PROMOTED_ATTRIBUTES, SERVICE_NAME_ATTRIBUTE};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use super::columns::{BatchBuilder, StringMapBuilder};
use super::layout::PartitionKey;
use super::table_format::{PartitionedRows, TableFormat};
use crate::operator::OperatorError;

/// Decodes OTLP `ExportTraceServiceRequest` protobuf records into span rows.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpansFormat;

impl TableFormat for SpansFormat {
    type Builder = SpanRows;

    fn table(&self) -> Table {
        Table::Spans
    }

    fn decode_into(
        &self,
        tenant: &str,
        value: &[u8],
        out: &mut PartitionedRows<SpanRows>,
    ) -> Result<usize, OperatorError> {
        let request = ExportTraceServiceRequest::decode(value).map_err(|e| {
            OperatorError::Decode(format!("invalid OTLP ExportTraceServiceRequest: {e}"))
        })?;
        Ok(self.append_request(tenant, &request, out))
    }
}

impl SpansFormat {
    /// Appends the spans of a decoded request (infallible: every span becomes a row).
    pub fn append_request(
        &self,
        tenant: &str,
        request: &ExportTraceServiceRequest,
        out: &mut PartitionedRows<SpanRows>,
    ) -> usize {
        const HOUR_NS: i64 = 3_600_000_000_000;
        let mut rows = 0;
        let mut scratch = String::new();
        // Spans of a request mostly share an hour: look its builder up once per run.
        let mut current: Option<(i64, &mut SpanRows)> = None;
        for resource_spans in &request.resource_spans {
            let resource_attrs = resource_spans
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            let service = resource_attrs
                .iter()
                .find(|kv| kv.key == SERVICE_NAME_ATTRIBUTE)
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(Value::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
                    _ => None,
                })
                .unwrap_or("unknown_service");
            for scope_spans in &resource_spans.scope_spans {
                let scope = scope_spans.scope.as_ref();
                for span in &scope_spans.spans {
                    let start = span.start_time_unix_nano as i64;
                    let hour = start.div_euclid(HOUR_NS);
                    if current.as_ref().map(|(h, _)| *h) != Some(hour) {
                        current = Some((hour, out.get_mut(&PartitionKey::at(tenant, start))));
                    }
                    let (_, builder) = current.as_mut().expect("set above");
                    builder.append(service, resource_attrs, scope, span, &mut scratch);
                    rows += 1;
                }
            }
        }
        rows
    }
}

/// Column builders of the `spans` table.
pub struct SpanRows {
    rows: usize,
    bytes: usize,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    name: StringBuilder,
    kind: StringBuilder,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    service_name: StringBuilder,
    promoted: [StringBuilder; PROMOTED_ATTRIBUTES.len()],
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    resource_attributes: StringMapBuilder,
    scope_attributes: StringMapBuilder,
    attributes: StringMapBuilder,
    events: EventColumns,
    links: LinkColumns,
}

impl Default for SpanRows {
    fn default() -> Self {
        Self {
            rows: 0,
            bytes: 0,
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            parent_span_id: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            name: StringBuilder::new(),
            kind: StringBuilder::new(),
            start_time: TimestampNanosecondBuilder::new(),
            end_time: TimestampNanosecondBuilder::new(),
            duration_ns: Int64Builder::new(),
            status_code: StringBuilder::new(),
            status_message: StringBuilder::new(),
            service_name: StringBuilder::new(),
            promoted: std::array::from_fn(|_| StringBuilder::new()),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            resource_attributes: StringMapBuilder::default(),
            scope_attributes: StringMapBuilder::default(),
            attributes: StringMapBuilder::default(),
            events: EventColumns::default(),
            links: LinkColumns::default(),
        }
    }
}

impl SpanRows {
    fn append(
        &mut self,
        service: &str,
        resource_attrs: &[KeyValue],
        scope: Option<&opentelemetry_proto::tonic::common::v1::InstrumentationScope>,
        span: &Span,
        scratch: &mut String,
    ) {
        self.rows += 1;
        self.bytes += 256 + span.name.len() + span.attributes.len() * 48 + span.events.len() * 64;
        append_hex(&mut self.trace_id, &span.trace_id);
        append_hex(&mut self.span_id, &span.span_id);
        if span.parent_span_id.is_empty() {
            self.parent_span_id.append_null();
        } else {
            append_hex(&mut self.parent_span_id, &span.parent_span_id);
        }
        append_opt(&mut self.trace_state, &span.trace_state);
        self.name.append_value(&span.name);
        self.kind.append_value(span_kind(span.kind));
        let start = span.start_time_unix_nano as i64;
        let end = span.end_time_unix_nano as i64;
        self.start_time.append_value(start);
        self.end_time.append_value(end);
        self.duration_ns
            .append_value(end.saturating_sub(start).max(0));
        let status = span.status.as_ref();
        self.status_code
            .append_value(status_code(status.map(|s| s.code).unwrap_or(0)));
        append_opt(
            &mut self.status_message,
            status.map(|s| s.message.as_str()).unwrap_or(""),
        );
        self.service_name.append_value(service);

        let mut promoted: [Option<&AnyValue>; PROMOTED_ATTRIBUTES.len()] =
            [None; PROMOTED_ATTRIBUTES.len()];
        for kv in &span.attributes {
            let Some(value) = kv.value.as_ref() else {
                continue;
            };
            match promoted_index(&kv.key) {
                Some(i) => promoted[i] = Some(value),
                None => {
                    any_value_to_string(value, scratch);
                    self.attributes.insert(&kv.key, scratch);
                }
            }
        }
        self.attributes.end_row();
        for (builder, value) in self.promoted.iter_mut().zip(promoted) {
            match value {
                Some(v) => {
                    any_value_to_string(v, scratch);
                    builder.append_value(scratch.as_str());
                }
                None => builder.append_null(),
            }
        }

        append_opt(
            &mut self.scope_name,
            scope.map(|s| s.name.as_str()).unwrap_or(""),
        );
        append_opt(
            &mut self.scope_version,
            scope.map(|s| s.version.as_str()).unwrap_or(""),
        );
        for kv in resource_attrs
            .iter()
            .filter(|kv| kv.key != SERVICE_NAME_ATTRIBUTE)
        {
            append_entry(&mut self.resource_attributes, kv, scratch);
        }
        self.resource_attributes.end_row();
        for kv in scope.map(|s| s.attributes.as_slice()).unwrap_or(&[]) {
            append_entry(&mut self.scope_attributes, kv, scratch);
        }
        self.scope_attributes.end_row();

        for event in &span.events {
            self.events.time.append_value(event.time_unix_nano as i64);
            self.events.name.append_value(&event.name);
            for kv in &event.attributes {
                append_entry(&mut self.events.attributes, kv, scratch);
            }
            self.events.attributes.end_row();
        }
        self.events
            .offsets
            .push(self.events.offsets.last().copied().unwrap_or(0) + span.events.len() as i32);

        for link in &span.links {
            append_hex(&mut self.links.trace_id, &link.trace_id);
            append_hex(&mut self.links.span_id, &link.span_id);
            append_opt(&mut self.links.trace_state, &link.trace_state);
            for kv in &link.attributes {
                append_entry(&mut self.links.attributes, kv, scratch);
            }
            self.links.attributes.end_row();
        }
        self.links
            .offsets
            .push(self.links.offsets.last().copied().unwrap_or(0) + span.links.len() as i32);
    }
}

impl BatchBuilder for SpanRows {
    fn rows(&self) -> usize {
        self.rows
    }

    fn bytes(&self) -> usize {
        self.bytes
    }

    fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let schema = Table::Spans.schema();
        let field_of = |name: &str| -> Result<Arc<Field>, ArrowError> {
            match schema.field_with_name(name)?.data_type() {
                DataType::List(item) => Ok(item.clone()),
                other => Err(ArrowError::SchemaError(format!(
                    "{name} is {other}, not a list"
                ))),
            }
        };
        let utc = |b: &mut TimestampNanosecondBuilder| -> ArrayRef {
            Arc::new(b.finish().with_timezone("UTC"))
        };
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            utc(&mut self.start_time),
            utc(&mut self.end_time),
            Arc::new(self.duration_ns.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            Arc::new(self.service_name.finish()),
        ];
        columns.extend(
            self.promoted
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.extend([
            Arc::new(self.scope_name.finish()) as ArrayRef,
            Arc::new(self.scope_version.finish()),
            self.resource_attributes.finish(),
            self.scope_attributes.finish(),
            self.attributes.finish(),
            self.events
                .finish(field_of(mcpulse_schemas::tables::spans::EVENTS)?)?,
            self.links
                .finish(field_of(mcpulse_schemas::tables::spans::LINKS)?)?,
        ]);
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(schema, columns)
    }
}

struct EventColumns {
    offsets: Vec<i32>,
    time: TimestampNanosecondBuilder,
    name: StringBuilder,
    attributes: StringMapBuilder,
}

impl Default for EventColumns {
    fn default() -> Self {
        Self {
            offsets: vec![0],
            time: TimestampNanosecondBuilder::new(),
            name: StringBuilder::new(),
            attributes: StringMapBuilder::default(),
        }
    }
}

impl EventColumns {
    fn finish(&mut self, item: Arc<Field>) -> Result<ArrayRef, ArrowError> {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish().with_timezone("UTC")),
            Arc::new(self.name.finish()),
            self.attributes.finish(),
        ];
        list_of_structs(item, &mut self.offsets, children)
    }
}

struct LinkColumns {
    offsets: Vec<i32>,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    trace_state: StringBuilder,
    attributes: StringMapBuilder,
}

impl Default for LinkColumns {
    fn default() -> Self {
        Self {
            offsets: vec![0],
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            attributes: StringMapBuilder::default(),
        }
    }
}

impl LinkColumns {
    fn finish(&mut self, item: Arc<Field>) -> Result<ArrayRef, ArrowError> {
        let children: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.trace_state.finish()),
            self.attributes.finish(),
        ];
        list_of_structs(item, &mut self.offsets, children)
    }
}

/// A `List<Struct>` column from the struct's child columns and the list offsets (which
/// are reset for the next batch).
fn list_of_structs(
    item: Arc<Field>,
    offsets: &mut Vec<i32>,
    children: Vec<ArrayRef>,
) -> Result<ArrayRef, ArrowError> {
    let DataType::Struct(fields) = item.data_type() else {
        return Err(ArrowError::SchemaError(format!(
            "list item {} is not a struct",
            item.name()
        )));
    };
    let values = StructArray::try_new(fields.clone(), children, None)?;
    let offsets = OffsetBuffer::new(std::mem::replace(offsets, vec![0]).into());
    Ok(Arc::new(ListArray::try_new(
        item,
        offsets,
        Arc::new(values),
        None,
    )?))
}

fn append_opt(builder: &mut StringBuilder, value: &str) {
    if value.is_empty() {
        builder.append_null()
    } else {
        builder.append_value(value)
    }
}

fn append_hex(builder: &mut StringBuilder, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 64];
    let n = bytes.len().min(32);
    for (i, b) in bytes[..n].iter().enumerate() {
        buf[2 * i] = DIGITS[(b >> 4) as usize];
        buf[2 * i + 1] = DIGITS[(b & 0xf) as usize];
    }
    builder.append_value(std::str::from_utf8(&buf[..2 * n]).expect("hex digits are ASCII"));
}

fn append_entry(map: &mut StringMapBuilder, kv: &KeyValue, scratch: &mut String) {
    match &kv.value {
        Some(v) => any_value_to_string(v, scratch),
        None => scratch.clear(),
    }
    map.insert(&kv.key, scratch);
}

/// Renders an attribute value as text: strings as they are, scalars in their usual form,
/// arrays and key-value lists as JSON.
pub fn any_value_to_string(value: &AnyValue, out: &mut String) {
    out.clear();
    match &value.value {
        Some(Value::StringValue(s)) => out.push_str(s),
        Some(Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(Value::DoubleValue(d)) => {
            let _ = write!(out, "{d}");
        }
        Some(Value::BytesValue(b)) => {
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
        }
        Some(other) => out.push_str(&any_value_json(other).to_string()),
        None => {}
    }
}

fn any_value_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::StringValue(s) => J::String(s.clone()),
        Value::BoolValue(b) => J::Bool(*b),
        Value::IntValue(i) => J::from(*i),
        Value::DoubleValue(d) => J::from(*d),
        Value::BytesValue(b) => J::String(hex::encode(b)),
        // An index into a profile's string table; meaningless without it.
        Value::StringValueStrindex(i) => J::from(*i),
        Value::ArrayValue(a) => J::Array(
            a.values
                .iter()
                .map(|v| v.value.as_ref().map(any_value_json).unwrap_or(J::Null))
                .collect(),
        ),
        Value::KvlistValue(kv) => J::Object(
            kv.values
                .iter()
                .map(|kv| {
                    let v = kv
                        .value
                        .as_ref()
                        .and_then(|v| v.value.as_ref())
                        .map(any_value_json)
                        .unwrap_or(J::Null);
                    (kv.key.clone(), v)
                })
                .collect(),
        ),
    }
}

/// The index in [`PROMOTED_ATTRIBUTES`] of a promoted attribute key.
fn promoted_index(key: &str) -> Option<usize> {
    let i = match key {
        "mcp.method.name" => 0,
        "gen_ai.tool.name" => 1,
        "mcp.session.id" => 2,
        "mcp.protocol.version" => 3,
        "error.type" => 4,
        "jsonrpc.request.id" => 5,
        "network.transport" => 6,
        _ => return None,
    };
    debug_assert_eq!(PROMOTED_ATTRIBUTES[i].0, key);
    Some(i)
}

fn span_kind(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn status_code(code: i32) -> &'static str {
    match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

//! `probes.v1` → the `probes` table: one row per `ProbeResult`.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampNanosecondBuilder,
};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};
use mcpulse_schemas::{ProbeResult, Table};

use super::columns::{BatchBuilder, StringMapBuilder};
use super::layout::PartitionKey;
use super::table_format::{PartitionedRows, TableFormat};
use crate::operator::OperatorError;

/// Decodes `ProbeResult` JSON records into probe rows.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProbesFormat;

impl TableFormat for ProbesFormat {
    type Builder = ProbeRows;

    fn table(&self) -> Table {
        Table::Probes
    }

    fn decode_into(
        &self,
        tenant: &str,
        value: &[u8],
        out: &mut PartitionedRows<ProbeRows>,
    ) -> Result<usize, OperatorError> {
        let probe: ProbeResult = serde_json::from_slice(value)
            .map_err(|e| OperatorError::Decode(format!("invalid ProbeResult JSON: {e}")))?;
        let time = nanos(probe.started_at)?;
        out.get_mut(&PartitionKey::at(tenant, time))
            .append(&probe, time)?;
        Ok(1)
    }
}

fn nanos(t: DateTime<Utc>) -> Result<i64, OperatorError> {
    t.timestamp_nanos_opt()
        .ok_or_else(|| OperatorError::Decode(format!("timestamp {t} out of range")))
}

/// Column builders of the `probes` table.
#[derive(Default)]
pub struct ProbeRows {
    rows: usize,
    bytes: usize,
    time: TimestampNanosecondBuilder,
    probe_id: StringBuilder,
    server: StringBuilder,
    url: StringBuilder,
    region: StringBuilder,
    ok: BooleanBuilder,
    failure_reason: StringBuilder,
    failure_phase: StringBuilder,
    failure_detail: StringBuilder,
    http_status: Int32Builder,
    jsonrpc_error_code: Int64Builder,
    protocol_era: StringBuilder,
    protocol_version: StringBuilder,
    timings: [Float64Builder; 7],
    tool_count: Int32Builder,
    tools_hash: StringBuilder,
    tools: StringBuilder,
    tls_expires_at: TimestampNanosecondBuilder,
    labels: StringMapBuilder,
    prober: StringBuilder,
}

impl ProbeRows {
    fn append(&mut self, p: &ProbeResult, time: i64) -> Result<(), OperatorError> {
        let tls_expires_at = p.tls_expires_at.map(nanos).transpose()?;
        let tools = p
            .tools
            .as_ref()
            .map(|t| serde_json::to_string(t).expect("JSON values serialize"));
        self.rows += 1;
        self.bytes += 512 + tools.as_ref().map_or(0, String::len);
        self.time.append_value(time);
        self.probe_id.append_option(p.probe_id.as_deref());
        self.server.append_value(&p.server);
        self.url.append_option(p.url.as_deref());
        self.region.append_value(&p.region);
        self.ok.append_value(p.ok);
        self.failure_reason
            .append_option(p.failure_reason.map(|r| r.as_str()));
        self.failure_phase
            .append_option(p.failure_phase.map(|r| r.as_str()));
        self.failure_detail
            .append_option(p.failure_detail.as_deref());
        self.http_status.append_option(p.http_status.map(i32::from));
        self.jsonrpc_error_code.append_option(p.jsonrpc_error_code);
        self.protocol_era
            .append_option(p.protocol_era.map(|e| e.as_str()));
        self.protocol_version
            .append_option(p.protocol_version.as_deref());
        let ph = &p.phases;
        let values = [
            ph.dns_ms,
            ph.connect_ms,
            ph.tls_ms,
            ph.first_byte_ms,
            ph.initialize_ms,
            ph.tools_list_ms,
            p.total_ms,
        ];
        for (builder, value) in self.timings.iter_mut().zip(values) {
            builder.append_option(value);
        }
        self.tool_count
            .append_option(p.tool_count.map(|c| c.min(i32::MAX as u32) as i32));
        self.tools_hash.append_option(p.tools_hash.as_deref());
        self.tools.append_option(tools);
        self.tls_expires_at.append_option(tls_expires_at);
        for (k, v) in &p.labels {
            self.labels.insert(k, v);
        }
        self.labels.end_row();
        self.prober.append_option(p.prober.as_deref());
        Ok(())
    }
}

impl BatchBuilder for ProbeRows {
    fn rows(&self) -> usize {
        self.rows
    }

    fn bytes(&self) -> usize {
        self.bytes
    }

    fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let utc = |b: &mut TimestampNanosecondBuilder| -> ArrayRef {
            Arc::new(b.finish().with_timezone("UTC"))
        };
        let mut columns: Vec<ArrayRef> = vec![
            utc(&mut self.time),
            Arc::new(self.probe_id.finish()),
            Arc::new(self.server.finish()),
            Arc::new(self.url.finish()),
            Arc::new(self.region.finish()),
            Arc::new(self.ok.finish()),
            Arc::new(self.failure_reason.finish()),
            Arc::new(self.failure_phase.finish()),
            Arc::new(self.failure_detail.finish()),
            Arc::new(self.http_status.finish()),
            Arc::new(self.jsonrpc_error_code.finish()),
            Arc::new(self.protocol_era.finish()),
            Arc::new(self.protocol_version.finish()),
        ];
        columns.extend(
            self.timings
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        columns.extend([
            Arc::new(self.tool_count.finish()) as ArrayRef,
            Arc::new(self.tools_hash.finish()),
            Arc::new(self.tools.finish()),
            utc(&mut self.tls_expires_at),
            self.labels.finish(),
            Arc::new(self.prober.finish()),
        ]);
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(Table::Probes.schema(), columns)
    }
}

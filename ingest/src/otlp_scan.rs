//! A validating scan of an encoded `ExportTraceServiceRequest` that builds nothing.
//!
//! The edge must refuse what the archiver could not decode (malformed protobuf, invalid
//! UTF-8 in a string field) and check each span's ids and timestamps, but it does not
//! need the decoded request: when every span is valid, the bytes are forwarded to the log
//! as received (or cut into per-service messages by concatenating whole `ResourceSpans`
//! fields, which is itself a valid encoding). Decoding into prost's owned types would
//! allocate every attribute twice per span on the hot path; this scan walks the wire
//! format once with the OTLP trace schema and allocates only the service names.
//!
//! It is stricter than prost in one corner: deprecated protobuf groups are refused.

use std::ops::Range;

use mcpulse_schemas::tables::spans::SERVICE_NAME_ATTRIBUTE;

/// Nesting allowed for `AnyValue` arrays and key-value lists (prost's recursion limit).
const MAX_DEPTH: u32 = 100;

/// One `ResourceSpans` of the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceSpansScan {
    /// Byte range of the whole field (tag, length and payload) in the request.
    pub field: Range<usize>,
    /// `service.name` of the resource, when it is a non-empty string.
    pub service: Option<String>,
    pub spans: u64,
}

/// What the scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestScan {
    pub resource_spans: Vec<ResourceSpansScan>,
    /// Spans that fail the edge's checks (bad ids, timestamps outside the window).
    pub invalid_spans: u64,
}

impl RequestScan {
    pub fn spans(&self) -> u64 {
        self.resource_spans.iter().map(|r| r.spans).sum()
    }
}

/// Why the bytes are not an `ExportTraceServiceRequest`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScanError(String);

type Result<T> = std::result::Result<T, ScanError>;

fn err<T>(message: impl Into<String>) -> Result<T> {
    Err(ScanError(message.into()))
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return err("truncated varint");
            };
            self.pos += 1;
            if i == 9 && byte > 1 {
                return err("invalid varint");
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        err("invalid varint")
    }

    fn key(&mut self) -> Result<(u64, u8)> {
        let key = self.varint()?;
        let (tag, wire) = (key >> 3, (key & 7) as u8);
        if tag == 0 || tag > u64::from(u32::MAX >> 3) {
            return err(format!("invalid field tag {tag}"));
        }
        Ok((tag, wire))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.varint()? as usize;
        let end = self.pos.checked_add(len).filter(|e| *e <= self.buf.len());
        let Some(end) = end else {
            return err("length-delimited field runs past the end of the buffer");
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn fixed64(&mut self) -> Result<u64> {
        let Some(bytes) = self.buf.get(self.pos..self.pos + 8) else {
            return err("truncated fixed64");
        };
        self.pos += 8;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }

    fn skip(&mut self, wire: u8) -> Result<()> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.fixed64().map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => {
                if self.pos + 4 > self.buf.len() {
                    return err("truncated fixed32");
                }
                self.pos += 4;
                Ok(())
            }
            3 | 4 => err("protobuf groups are not supported"),
            other => err(format!("invalid wire type {other}")),
        }
    }

    /// Reads a field whose wire type must be `expected`.
    fn expect(&self, field: &str, wire: u8, expected: u8) -> Result<()> {
        if wire == expected {
            Ok(())
        } else {
            err(format!(
                "{field}: invalid wire type {wire}, expected {expected}"
            ))
        }
    }

    /// Skips a known scalar field, checking its wire type as prost would.
    fn scalar(&mut self, field: &str, wire: u8, expected: u8) -> Result<()> {
        self.expect(field, wire, expected)?;
        self.skip(wire)
    }

    fn string(&mut self, field: &str, wire: u8) -> Result<&'a str> {
        self.expect(field, wire, LEN)?;
        std::str::from_utf8(self.bytes()?).or_else(|_| {
            err(format!(
                "{field}: invalid string value: data is not UTF-8 encoded"
            ))
        })
    }

    fn message(&mut self, field: &str, wire: u8) -> Result<Reader<'a>> {
        self.expect(field, wire, LEN)?;
        Ok(Reader::new(self.bytes()?))
    }
}

/// Scans `buf`; `[earliest, latest]` is the accepted window of span start times (Unix ns).
pub fn scan_request(buf: &[u8], earliest: u64, latest: u64) -> Result<RequestScan> {
    let mut out = RequestScan::default();
    let mut r = Reader::new(buf);
    while !r.done() {
        let start = r.pos;
        let (tag, wire) = r.key()?;
        if tag == 1 {
            let mut rs = r.message("resource_spans", wire)?;
            let (service, spans) =
                scan_resource_spans(&mut rs, earliest, latest, &mut out.invalid_spans)?;
            out.resource_spans.push(ResourceSpansScan {
                field: start..r.pos,
                service,
                spans,
            });
        } else {
            r.skip(wire)?;
        }
    }
    Ok(out)
}

fn scan_resource_spans(
    r: &mut Reader<'_>,
    earliest: u64,
    latest: u64,
    invalid: &mut u64,
) -> Result<(Option<String>, u64)> {
    let mut service = None;
    let mut spans = 0;
    while !r.done() {
        match r.key()? {
            (1, wire) => {
                service = None;
                let mut resource = r.message("resource", wire)?;
                while !resource.done() {
                    match resource.key()? {
                        (1, wire) => {
                            let mut kv = resource.message("resource.attributes", wire)?;
                            if let Some(name) = scan_key_value(&mut kv, 0)? {
                                service = Some(name);
                            }
                        }
                        (2, wire) => {
                            resource.scalar("resource.dropped_attributes_count", wire, VARINT)?
                        }
                        (3, wire) => {
                            scan_entity_ref(&mut resource.message("resource.entity_refs", wire)?)?
                        }
                        (_, wire) => resource.skip(wire)?,
                    }
                }
            }
            (2, wire) => {
                let mut ss = r.message("scope_spans", wire)?;
                while !ss.done() {
                    match ss.key()? {
                        (1, wire) => scan_scope(&mut ss.message("scope", wire)?)?,
                        (2, wire) => {
                            let mut span = ss.message("span", wire)?;
                            spans += 1;
                            if !scan_span(&mut span, earliest, latest)? {
                                *invalid += 1;
                            }
                        }
                        (3, wire) => drop(ss.string("scope_spans.schema_url", wire)?),
                        (_, wire) => ss.skip(wire)?,
                    }
                }
            }
            (3, wire) => drop(r.string("resource_spans.schema_url", wire)?),
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok((service, spans))
}

fn scan_entity_ref(r: &mut Reader<'_>) -> Result<()> {
    while !r.done() {
        match r.key()? {
            (1..=4, wire) => drop(r.string("entity_ref", wire)?),
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok(())
}

fn scan_scope(r: &mut Reader<'_>) -> Result<()> {
    while !r.done() {
        match r.key()? {
            (1 | 2, wire) => drop(r.string("scope", wire)?),
            (3, wire) => drop(scan_key_value(
                &mut r.message("scope.attributes", wire)?,
                0,
            )?),
            (4, wire) => r.scalar("scope.dropped_attributes_count", wire, VARINT)?,
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok(())
}

/// Checks one span; returns whether it passes the edge's checks.
fn scan_span(r: &mut Reader<'_>, earliest: u64, latest: u64) -> Result<bool> {
    let (mut trace_id, mut span_id, mut parent): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
    let (mut start, mut end) = (0u64, 0u64);
    while !r.done() {
        match r.key()? {
            (1, wire) => {
                r.expect("span.trace_id", wire, LEN)?;
                trace_id = r.bytes()?;
            }
            (2, wire) => {
                r.expect("span.span_id", wire, LEN)?;
                span_id = r.bytes()?;
            }
            (4, wire) => {
                r.expect("span.parent_span_id", wire, LEN)?;
                parent = r.bytes()?;
            }
            (3 | 5, wire) => drop(r.string("span", wire)?),
            (6 | 10 | 12 | 14, wire) => r.scalar("span", wire, VARINT)?,
            (16, wire) => r.scalar("span.flags", wire, FIXED32)?,
            (7, wire) => {
                r.expect("span.start_time_unix_nano", wire, FIXED64)?;
                start = r.fixed64()?;
            }
            (8, wire) => {
                r.expect("span.end_time_unix_nano", wire, FIXED64)?;
                end = r.fixed64()?;
            }
            (9, wire) => drop(scan_key_value(&mut r.message("span.attributes", wire)?, 0)?),
            (11, wire) => {
                let mut event = r.message("span.events", wire)?;
                while !event.done() {
                    match event.key()? {
                        (1, wire) => event.scalar("event.time_unix_nano", wire, FIXED64)?,
                        (2, wire) => drop(event.string("event.name", wire)?),
                        (4, wire) => {
                            event.scalar("event.dropped_attributes_count", wire, VARINT)?
                        }
                        (3, wire) => drop(scan_key_value(
                            &mut event.message("event.attributes", wire)?,
                            0,
                        )?),
                        (_, wire) => event.skip(wire)?,
                    }
                }
            }
            (13, wire) => {
                let mut link = r.message("span.links", wire)?;
                while !link.done() {
                    match link.key()? {
                        (1 | 2, wire) => link.scalar("link.id", wire, LEN)?,
                        (3, wire) => drop(link.string("link.trace_state", wire)?),
                        (5, wire) => link.scalar("link.dropped_attributes_count", wire, VARINT)?,
                        (6, wire) => link.scalar("link.flags", wire, FIXED32)?,
                        (4, wire) => drop(scan_key_value(
                            &mut link.message("link.attributes", wire)?,
                            0,
                        )?),
                        (_, wire) => link.skip(wire)?,
                    }
                }
            }
            (15, wire) => {
                let mut status = r.message("span.status", wire)?;
                while !status.done() {
                    match status.key()? {
                        (2, wire) => drop(status.string("status.message", wire)?),
                        (3, wire) => status.scalar("status.code", wire, VARINT)?,
                        (_, wire) => status.skip(wire)?,
                    }
                }
            }
            (_, wire) => r.skip(wire)?,
        }
    }
    let nonzero = |id: &[u8]| id.iter().any(|b| *b != 0);
    Ok(trace_id.len() == 16
        && nonzero(trace_id)
        && span_id.len() == 8
        && nonzero(span_id)
        && (parent.is_empty() || parent.len() == 8)
        && (earliest..=latest).contains(&start)
        && end >= start)
}

/// Checks a `KeyValue`; returns the value when it is `service.name` with a non-empty string.
fn scan_key_value(r: &mut Reader<'_>, depth: u32) -> Result<Option<String>> {
    let mut key = "";
    let mut string_value = None;
    while !r.done() {
        match r.key()? {
            (1, wire) => key = r.string("key_value.key", wire)?,
            (2, wire) => {
                string_value = scan_any_value(&mut r.message("key_value.value", wire)?, depth + 1)?
            }
            (3, wire) => r.scalar("key_value.key_strindex", wire, VARINT)?,
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok(string_value
        .filter(|v: &&str| key == SERVICE_NAME_ATTRIBUTE && !v.is_empty())
        .map(str::to_string))
}

/// Checks an `AnyValue`; returns its string value if it is one.
fn scan_any_value<'a>(r: &mut Reader<'a>, depth: u32) -> Result<Option<&'a str>> {
    if depth > MAX_DEPTH {
        return err("recursion limit reached");
    }
    let mut string = None;
    while !r.done() {
        match r.key()? {
            (1, wire) => string = Some(r.string("any_value.string_value", wire)?),
            (5, wire) => {
                let mut array = r.message("any_value.array_value", wire)?;
                while !array.done() {
                    match array.key()? {
                        (1, wire) => drop(scan_any_value(
                            &mut array.message("array_value.values", wire)?,
                            depth + 1,
                        )?),
                        (_, wire) => array.skip(wire)?,
                    }
                }
                string = None;
            }
            (6, wire) => {
                let mut list = r.message("any_value.kvlist_value", wire)?;
                while !list.done() {
                    match list.key()? {
                        (1, wire) => drop(scan_key_value(
                            &mut list.message("kvlist_value.values", wire)?,
                            depth + 1,
                        )?),
                        (_, wire) => list.skip(wire)?,
                    }
                }
                string = None;
            }
            (2 | 3 | 8, wire) => {
                r.scalar("any_value", wire, VARINT)?;
                string = None;
            }
            (4, wire) => {
                r.scalar("any_value.double_value", wire, FIXED64)?;
                string = None;
            }
            (7, wire) => {
                r.scalar("any_value.bytes_value", wire, LEN)?;
                string = None;
            }
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok(string)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{
        ResourceSpans, ScopeSpans, Span, Status, span::Event,
    };
    use prost::Message;

    use super::*;

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn sample() -> ExportTraceServiceRequest {
        let span = |i: u8, start: u64| Span {
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            name: format!("tools/call t{i}"),
            start_time_unix_nano: start,
            end_time_unix_nano: start + 5,
            attributes: vec![
                kv("gen_ai.tool.name", Value::StringValue("t".into())),
                kv("n", Value::IntValue(3)),
                kv(
                    "nested",
                    Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(Value::KvlistValue(KeyValueList {
                                values: vec![kv("x", Value::BoolValue(true))],
                            })),
                        }],
                    }),
                ),
            ],
            events: vec![Event {
                name: "e".into(),
                time_unix_nano: start,
                ..Default::default()
            }],
            status: Some(Status {
                message: "boom".into(),
                code: 2,
            }),
            ..Default::default()
        };
        let rs = |service: &str, spans: Vec<Span>| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue(service.into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                rs("a", vec![span(1, 100), span(2, 200)]),
                rs("b", vec![span(3, 300)]),
            ],
        }
    }

    #[test]
    fn finds_services_field_ranges_and_counts() {
        let req = sample();
        let bytes = req.encode_to_vec();
        let scan = scan_request(&bytes, 0, u64::MAX).unwrap();
        assert_eq!(scan.invalid_spans, 0);
        assert_eq!(scan.spans(), 3);
        assert_eq!(
            scan.resource_spans
                .iter()
                .map(|r| r.service.clone())
                .collect::<Vec<_>>(),
            [Some("a".into()), Some("b".into())]
        );
        // Each field range is itself a valid request holding just that ResourceSpans.
        for (i, rs) in scan.resource_spans.iter().enumerate() {
            let one = ExportTraceServiceRequest::decode(&bytes[rs.field.clone()]).unwrap();
            assert_eq!(one.resource_spans, vec![req.resource_spans[i].clone()]);
        }
    }

    #[test]
    fn counts_spans_that_fail_the_checks() {
        let mut req = sample();
        req.resource_spans[0].scope_spans[0].spans[0].span_id = vec![0; 8];
        req.resource_spans[1].scope_spans[0].spans[0].end_time_unix_nano = 1;
        let scan = scan_request(&req.encode_to_vec(), 0, u64::MAX).unwrap();
        assert_eq!(scan.invalid_spans, 2);
        let scan = scan_request(&sample().encode_to_vec(), 150, 250).unwrap();
        assert_eq!(
            scan.invalid_spans, 2,
            "start times 100 and 300 are outside 150..=250"
        );
    }

    /// Every prefix and every single-byte corruption: the scan accepts only what prost
    /// decodes (it may refuse a little more, never less).
    #[test]
    fn never_accepts_what_prost_refuses() {
        let bytes = sample().encode_to_vec();
        let mut checked = 0;
        let mut check = |candidate: &[u8]| {
            if scan_request(candidate, 0, u64::MAX).is_ok() {
                assert!(
                    ExportTraceServiceRequest::decode(candidate).is_ok(),
                    "accepted {candidate:?}"
                );
            }
            checked += 1;
        };
        for len in 0..bytes.len() {
            check(&bytes[..len]);
        }
        for i in 0..bytes.len() {
            for value in [0x00, 0x01, 0x07, 0x0a, 0x7f, 0x80, 0xc3, 0xff] {
                let mut corrupted = bytes.clone();
                corrupted[i] = value;
                check(&corrupted);
            }
        }
        assert!(checked > 1000);
    }

    #[test]
    fn refuses_invalid_utf8_in_string_fields() {
        let mut req = sample();
        req.resource_spans[0].scope_spans[0].spans[0].name = "NAME".into();
        let mut bytes = req.encode_to_vec();
        let at = bytes.windows(4).position(|w| w == b"NAME").unwrap();
        bytes[at] = 0xff;
        assert!(ExportTraceServiceRequest::decode(bytes.as_slice()).is_err());
        assert!(
            scan_request(&bytes, 0, u64::MAX)
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
    }
}

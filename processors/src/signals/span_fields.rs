//! A zero-copy scan of an encoded `ExportTraceServiceRequest` (the value of a record on
//! the spans topic) that extracts only what the golden signals need from each span.
//!
//! Decoding the request into prost's owned types allocates every id, name, key and value
//! of every span; the signals operator needs three strings, two timestamps and one bit.
//! This scan walks the wire format once, borrows the strings it returns from the input
//! and allocates nothing beyond the caller's reusable output vector.
//!
//! What it checks. Every message it walks (the request, `ResourceSpans`, `Resource`,
//! `ScopeSpans`, `Span`, `Status`, the `KeyValue`s of resource and span attributes, and the
//! `AnyValue`s of the attributes it reads) is checked field by field like prost would:
//! valid keys and varints, known fields with the wire type of their schema, lengths inside
//! their parent, no groups (refused, as at the ingest edge). The strings it returns must be
//! UTF-8. Fields it does not read (ids, names, scopes, events, links, the values of other
//! attributes) are only skipped as length-delimited blobs: their contents were checked by
//! the ingest edge (`ingest/src/otlp_scan.rs`) before the record reached the log, so this
//! scan accepts a little more than prost would, never less, and never panics.
//!
//! Semantics follow protobuf decoding: a repeated singular field's last occurrence wins,
//! repeated message fields merge (two `Resource` fields concatenate their attributes, two
//! `Status` fields merge so a later code overrides an earlier one), and when an attribute
//! key appears more than once the last one wins. The resource is read before the spans of
//! its `ResourceSpans` are emitted, wherever it appears on the wire.

use std::fmt;

/// Resource attribute naming the server unless configured otherwise.
pub const DEFAULT_SERVER_ATTRIBUTE: &str = "service.name";
/// Span attribute naming the tool.
pub const TOOL_ATTRIBUTE: &str = "gen_ai.tool.name";
/// Span attribute naming the MCP method.
pub const METHOD_ATTRIBUTE: &str = "mcp.method.name";
/// Span attribute that marks a failed call when it has a non-empty value.
pub const ERROR_TYPE_ATTRIBUTE: &str = "error.type";
/// `Status.code` of a failed span (`STATUS_CODE_ERROR`).
pub const STATUS_CODE_ERROR: i32 = 2;

/// What the signals operator needs from one span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanFields<'a> {
    /// The resource attribute named by the caller (default `service.name`), when its
    /// value is a string (possibly empty).
    pub server: Option<&'a str>,
    /// Span attribute `gen_ai.tool.name`, when its value is a string.
    pub tool: Option<&'a str>,
    /// Span attribute `mcp.method.name`, when its value is a string.
    pub method: Option<&'a str>,
    /// `start_time_unix_nano` (0 when absent).
    pub start_ns: u64,
    /// `end_time_unix_nano` (0 when absent).
    pub end_ns: u64,
    /// `status.code` is ERROR, or the span attribute `error.type` has a non-empty value:
    /// a non-empty string or bytes, an array or key-value list with at least one entry,
    /// or any bool, int or double. An empty string, an unset value and a
    /// `string_value_strindex` (profiling only, to be treated as absent) do not count.
    pub is_error: bool,
}

/// Why the bytes are not a well-formed `ExportTraceServiceRequest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed OTLP ExportTraceServiceRequest at byte {offset}: {what}")]
pub struct ScanError {
    /// Offset in the request where the problem was found.
    pub offset: usize,
    /// What is wrong there.
    pub what: &'static str,
}

type Result<T> = std::result::Result<T, ScanError>;

/// Scans `buf` and puts the fields of every span of every `ResourceSpans` and `ScopeSpans`
/// into `out`, in wire order. `server_attribute` is the resource attribute key naming the
/// server (usually [`DEFAULT_SERVER_ATTRIBUTE`]).
///
/// All or nothing: `out` is cleared first, and on `Err` it is left empty, so a malformed
/// record is discarded whole. Reuse `out` across records to avoid allocating.
pub fn scan_spans<'a>(
    buf: &'a [u8],
    server_attribute: &str,
    out: &mut Vec<SpanFields<'a>>,
) -> std::result::Result<(), ScanError> {
    out.clear();
    scan_request(Reader::new(buf), server_attribute.as_bytes(), out).map_err(|e| {
        out.clear();
        ScanError {
            offset: e.offset - buf.as_ptr() as usize,
            ..e
        }
    })
}

/// A reusable output buffer for callers whose records do not outlive one scan (the
/// lifetime of [`scan_spans`]'s `out` ties it to one buffer): it keeps the allocation
/// across records of different lifetimes.
#[derive(Debug, Default)]
pub struct SpanScratch {
    spans: Vec<SpanFields<'static>>,
}

impl SpanScratch {
    /// Scans `buf` like [`scan_spans`] and, when it is well-formed, passes all its spans to
    /// `f` at once.
    pub fn scan<R>(
        &mut self,
        buf: &[u8],
        server_attribute: &str,
        f: impl FnOnce(&[SpanFields<'_>]) -> R,
    ) -> std::result::Result<R, ScanError> {
        let mut spans: Vec<SpanFields<'_>> = std::mem::take(&mut self.spans);
        let result = scan_spans(buf, server_attribute, &mut spans).map(|()| f(&spans));
        spans.clear();
        // Same layout, empty: the standard library collects in place, keeping the allocation.
        self.spans = spans.into_iter().map(|_| unreachable!()).collect();
        result
    }
}

// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;
/// In a table of expected wire types: a field number the schema does not define.
const UNKNOWN: u8 = u8::MAX;
const X: u8 = UNKNOWN;

const fn key(tag: u32, wire: u8) -> u32 {
    (tag << 3) | wire as u32
}

/// The schema of a message walked: the expected wire type by field number (index 0 unused;
/// fields past the end are unknown), so a known field with the wrong wire type is refused
/// as prost would, and the error to report then.
struct Schema {
    wires: &'static [u8],
    mismatch: &'static str,
}

const REQUEST: Schema = Schema {
    wires: &[X, LEN],
    mismatch: "ExportTraceServiceRequest: known field with the wrong wire type",
};
const RESOURCE_SPANS: Schema = Schema {
    wires: &[X, LEN, LEN, LEN],
    mismatch: "ResourceSpans: known field with the wrong wire type",
};
const RESOURCE: Schema = Schema {
    wires: &[X, LEN, VARINT, LEN],
    mismatch: "Resource: known field with the wrong wire type",
};
const SCOPE_SPANS: Schema = Schema {
    wires: &[X, LEN, LEN, LEN],
    mismatch: "ScopeSpans: known field with the wrong wire type",
};
#[rustfmt::skip]
const SPAN: Schema = Schema {
    wires: &[
        X, LEN, LEN, LEN, LEN, LEN, VARINT, FIXED64, FIXED64, LEN, VARINT, LEN, VARINT, LEN,
        VARINT, LEN, FIXED32,
    ],
    mismatch: "Span: known field with the wrong wire type",
};
const STATUS: Schema = Schema {
    wires: &[X, X, LEN, VARINT],
    mismatch: "Status: known field with the wrong wire type",
};
const KEY_VALUE: Schema = Schema {
    wires: &[X, LEN, LEN, VARINT],
    mismatch: "KeyValue: known field with the wrong wire type",
};
const ANY_VALUE: Schema = Schema {
    wires: &[X, LEN, VARINT, VARINT, FIXED64, LEN, LEN, LEN, VARINT],
    mismatch: "AnyValue: known field with the wrong wire type",
};
const ARRAY_VALUE: Schema = Schema {
    wires: &[X, LEN],
    mismatch: "ArrayValue: known field with the wrong wire type",
};
const KEY_VALUE_LIST: Schema = Schema {
    wires: &[X, LEN],
    mismatch: "KeyValueList: known field with the wrong wire type",
};

const REQUEST_RESOURCE_SPANS: u32 = key(1, LEN);
const RESOURCE_SPANS_RESOURCE: u32 = key(1, LEN);
const RESOURCE_SPANS_SCOPE_SPANS: u32 = key(2, LEN);
const RESOURCE_ATTRIBUTES: u32 = key(1, LEN);
const SCOPE_SPANS_SPAN: u32 = key(2, LEN);
const SPAN_TRACE_ID: u32 = key(1, LEN);
const SPAN_SPAN_ID: u32 = key(2, LEN);
const SPAN_TRACE_STATE: u32 = key(3, LEN);
const SPAN_PARENT_SPAN_ID: u32 = key(4, LEN);
const SPAN_NAME: u32 = key(5, LEN);
const SPAN_KIND: u32 = key(6, VARINT);
const SPAN_START: u32 = key(7, FIXED64);
const SPAN_END: u32 = key(8, FIXED64);
const SPAN_ATTRIBUTES: u32 = key(9, LEN);
const SPAN_STATUS: u32 = key(15, LEN);
const STATUS_CODE: u32 = key(3, VARINT);
const KEY_VALUE_KEY: u32 = key(1, LEN);
const KEY_VALUE_VALUE: u32 = key(2, LEN);
const ANY_STRING: u32 = key(1, LEN);
const ANY_BOOL: u32 = key(2, VARINT);
const ANY_INT: u32 = key(3, VARINT);
const ANY_DOUBLE: u32 = key(4, FIXED64);
const ANY_ARRAY: u32 = key(5, LEN);
const ANY_KVLIST: u32 = key(6, LEN);
const ANY_BYTES: u32 = key(7, LEN);
const ANY_STRINDEX: u32 = key(8, VARINT);
const LIST_VALUES: u32 = key(1, LEN);

/// Fails at `at`, a suffix of the request: inside the scan, `offset` holds its address,
/// which [`scan_spans`] turns into an offset in the request.
#[cold]
#[inline(never)]
fn fail<T>(at: &[u8], what: &'static str) -> Result<T> {
    Err(ScanError {
        offset: at.as_ptr() as usize,
        what,
    })
}

/// A cursor over the rest of one message; a sub-slice of the request.
#[derive(Clone, Copy)]
struct Reader<'a> {
    rest: &'a [u8],
}

impl fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reader({} bytes left)", self.rest.len())
    }
}

impl<'a> Reader<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Self { rest }
    }

    #[inline(always)]
    fn more(&self) -> bool {
        !self.rest.is_empty()
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64> {
        match *self.rest {
            [b0, ref tail @ ..] if b0 < 0x80 => {
                self.rest = tail;
                Ok(u64::from(b0))
            }
            [b0, b1, ref tail @ ..] if b1 < 0x80 => {
                self.rest = tail;
                Ok(u64::from(b0 & 0x7f) | (u64::from(b1) << 7))
            }
            _ => self.varint_slow(),
        }
    }

    #[inline(never)]
    fn varint_slow(&mut self) -> Result<u64> {
        let start = self.rest;
        let mut value = 0u64;
        for i in 0..10 {
            let Some((&byte, tail)) = self.rest.split_first() else {
                return fail(start, "truncated varint");
            };
            self.rest = tail;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                if i == 9 && byte > 1 {
                    return fail(start, "varint overflows 64 bits");
                }
                return Ok(value);
            }
        }
        fail(start, "varint longer than 10 bytes")
    }

    /// A field key (`tag << 3 | wire type`), checked: tag at least 1, key within 32 bits.
    #[inline(always)]
    fn key(&mut self) -> Result<u32> {
        let start = self.rest;
        let key = self.varint()?;
        if key < 8 || key > u64::from(u32::MAX) {
            return fail(start, "invalid field key");
        }
        Ok(key as u32)
    }

    /// The payload of a length-delimited field whose key was just read.
    #[inline(always)]
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let start = self.rest;
        let len = self.varint()?;
        if len > self.rest.len() as u64 {
            return fail(
                start,
                "length-delimited field runs past the end of its message",
            );
        }
        let (payload, rest) = self.rest.split_at(len as usize);
        self.rest = rest;
        Ok(payload)
    }

    /// An embedded message whose key was just read.
    #[inline(always)]
    fn message(&mut self) -> Result<Reader<'a>> {
        self.bytes().map(Reader::new)
    }

    #[inline(always)]
    fn fixed64(&mut self) -> Result<u64> {
        match self.rest.split_first_chunk::<8>() {
            Some((bytes, rest)) => {
                self.rest = rest;
                Ok(u64::from_le_bytes(*bytes))
            }
            None => fail(self.rest, "truncated fixed64"),
        }
    }

    /// Skips the value of a field the caller does not read, after checking its wire type
    /// against the message's schema.
    #[inline(always)]
    fn skip_field(&mut self, key: u32, schema: &Schema) -> Result<()> {
        let wire = (key & 7) as u8;
        if let Some(&expected) = schema.wires.get((key >> 3) as usize)
            && expected != UNKNOWN
            && expected != wire
        {
            return fail(self.rest, schema.mismatch);
        }
        self.skip(wire)
    }

    #[inline(always)]
    fn skip(&mut self, wire: u8) -> Result<()> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.fixed64().map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => match self.rest.split_first_chunk::<4>() {
                Some((_, rest)) => {
                    self.rest = rest;
                    Ok(())
                }
                None => fail(self.rest, "truncated fixed32"),
            },
            3 | 4 => fail(self.rest, "protobuf groups are not supported"),
            _ => fail(self.rest, "invalid wire type"),
        }
    }
}

fn scan_request<'a>(
    mut r: Reader<'a>,
    server_key: &[u8],
    out: &mut Vec<SpanFields<'a>>,
) -> Result<()> {
    while r.more() {
        let key = r.key()?;
        if key == REQUEST_RESOURCE_SPANS {
            scan_resource_spans(r.message()?, server_key, out)?;
        } else {
            r.skip_field(key, &REQUEST)?;
        }
    }
    Ok(())
}

/// Two passes over the (small) top level of the `ResourceSpans`: the resource first,
/// wherever it is, then the spans.
fn scan_resource_spans<'a>(
    r: Reader<'a>,
    server_key: &[u8],
    out: &mut Vec<SpanFields<'a>>,
) -> Result<()> {
    let mut server = None;
    let mut pass = r;
    while pass.more() {
        let key = pass.key()?;
        if key == RESOURCE_SPANS_RESOURCE {
            scan_resource(pass.message()?, server_key, &mut server)?;
        } else {
            pass.skip_field(key, &RESOURCE_SPANS)?;
        }
    }
    let mut pass = r;
    while pass.more() {
        let key = pass.key()?;
        if key == RESOURCE_SPANS_SCOPE_SPANS {
            scan_scope_spans(pass.message()?, server, out)?;
        } else {
            pass.skip_field(key, &RESOURCE_SPANS)?;
        }
    }
    Ok(())
}

/// Updates `server` from the resource's attributes; repeated `Resource` fields merge, so
/// `server` carries over from the previous one.
fn scan_resource<'a>(
    mut r: Reader<'a>,
    server_key: &[u8],
    server: &mut Option<&'a str>,
) -> Result<()> {
    while r.more() {
        let key = r.key()?;
        if key == RESOURCE_ATTRIBUTES {
            let kv = KeyValue::scan(r.message()?)?;
            if kv.key == server_key {
                *server = kv.value()?.string();
            }
        } else {
            r.skip_field(key, &RESOURCE)?;
        }
    }
    Ok(())
}

fn scan_scope_spans<'a>(
    mut r: Reader<'a>,
    server: Option<&'a str>,
    out: &mut Vec<SpanFields<'a>>,
) -> Result<()> {
    let mut recent = Recent::default();
    while r.more() {
        let key = r.key()?;
        if key == SCOPE_SPANS_SPAN {
            out.push(scan_span(r.message()?, server, &mut recent)?);
        } else {
            r.skip_field(key, &SCOPE_SPANS)?;
        }
    }
    Ok(())
}

#[inline(always)]
fn scan_span<'a>(
    mut r: Reader<'a>,
    server: Option<&'a str>,
    recent: &mut Recent<'a>,
) -> Result<SpanFields<'a>> {
    let mut fields = SpanFields {
        server,
        ..SpanFields::default()
    };
    let mut code = 0i32;
    let mut error_type = false;
    while r.more() {
        let key = r.key()?;
        match key {
            SPAN_TRACE_ID | SPAN_SPAN_ID | SPAN_TRACE_STATE | SPAN_PARENT_SPAN_ID | SPAN_NAME => {
                r.bytes()?;
            }
            SPAN_KIND => {
                r.varint()?;
            }
            SPAN_START => fields.start_ns = r.fixed64()?,
            SPAN_END => fields.end_ns = r.fixed64()?,
            SPAN_ATTRIBUTES => {
                scan_span_attribute(r.bytes()?, &mut fields, &mut error_type, recent)?;
            }
            SPAN_STATUS => scan_status(r.message()?, &mut code)?,
            _ => r.skip_field(key, &SPAN)?,
        }
    }
    fields.is_error = code == STATUS_CODE_ERROR || error_type;
    Ok(fields)
}

/// What a span attribute is to the signals.
#[derive(Clone, Copy)]
enum Attribute {
    Tool,
    Method,
    ErrorType,
    Other,
}

#[inline(always)]
fn attribute(key: &[u8]) -> Attribute {
    match key {
        b"gen_ai.tool.name" => Attribute::Tool,
        b"mcp.method.name" => Attribute::Method,
        b"error.type" => Attribute::ErrorType,
        _ => Attribute::Other,
    }
}

/// Reads one span attribute (a `KeyValue` payload) into `fields` and `error_type`.
#[inline(always)]
fn scan_span_attribute<'a>(
    kv: &'a [u8],
    fields: &mut SpanFields<'a>,
    error_type: &mut bool,
    recent: &mut Recent<'a>,
) -> Result<()> {
    // Fast path for the encoding every SDK produces: the key, then one value, both shorter
    // than 128 bytes. Reads the same as the general path below.
    if let [0x0a, key_len, ref rest @ ..] = *kv
        && key_len < 0x80
        && let Some((key, [0x12, value_len, value @ ..])) = rest.split_at_checked(key_len as usize)
        && *value_len < 0x80
        && value.len() == usize::from(*value_len)
    {
        match attribute(key) {
            Attribute::Other => {}
            Attribute::Tool => fields.tool = any_value_string(value, &mut recent.tool)?,
            Attribute::Method => fields.method = any_value_string(value, &mut recent.method)?,
            Attribute::ErrorType => {
                let mut v = Value::Unset;
                scan_any_value(Reader::new(value), &mut v)?;
                *error_type = v.is_non_empty();
            }
        }
        return Ok(());
    }
    let kv = KeyValue::scan(Reader::new(kv))?;
    match attribute(kv.key) {
        Attribute::Other => {}
        Attribute::Tool => fields.tool = kv.value()?.string(),
        Attribute::Method => fields.method = kv.value()?.string(),
        Attribute::ErrorType => *error_type = kv.value()?.is_non_empty(),
    }
    Ok(())
}

/// The last tool and method names checked for UTF-8 in this scope: spans of one scope
/// mostly repeat a few, and comparing bytes is cheaper than validating them again. A
/// repeated name is returned as the earlier `&str`: same text, same buffer.
#[derive(Default)]
struct Recent<'a> {
    tool: &'a str,
    method: &'a str,
}

/// The string of an `AnyValue` payload, if it is one; `recent` is the last one returned.
#[inline(always)]
fn any_value_string<'a>(payload: &'a [u8], recent: &mut &'a str) -> Result<Option<&'a str>> {
    // Fast path: nothing but a short string_value.
    if let [0x0a, len, ref s @ ..] = *payload
        && len < 0x80
        && s.len() == usize::from(len)
    {
        if s == recent.as_bytes() {
            return Ok(Some(*recent));
        }
        return match std::str::from_utf8(s) {
            Ok(s) => {
                *recent = s;
                Ok(Some(s))
            }
            Err(_) => fail(payload, "string attribute value is not UTF-8"),
        };
    }
    let mut v = Value::Unset;
    scan_any_value(Reader::new(payload), &mut v)?;
    Ok(v.string())
}

/// Updates `code`; repeated `Status` fields merge, so a status without a code keeps the
/// previous one.
fn scan_status(mut r: Reader<'_>, code: &mut i32) -> Result<()> {
    while r.more() {
        let key = r.key()?;
        if key == STATUS_CODE {
            // An enum is an int32 on the wire: prost keeps the low 32 bits.
            *code = r.varint()? as i32;
        } else {
            r.skip_field(key, &STATUS)?;
        }
    }
    Ok(())
}

/// A `KeyValue` whose framing has been checked; its value is read only on demand.
struct KeyValue<'a> {
    /// The last `key` field (not checked for UTF-8: it is only compared with keys).
    key: &'a [u8],
    /// The whole message, to merge several `value` fields.
    message: Reader<'a>,
    /// The payload of the last `value` field.
    last_value: Option<Reader<'a>>,
    /// How many `value` fields there are (more than one merge).
    values: u32,
}

impl<'a> KeyValue<'a> {
    fn scan(message: Reader<'a>) -> Result<Self> {
        let mut kv = KeyValue {
            key: &[],
            message,
            last_value: None,
            values: 0,
        };
        let mut r = message;
        while r.more() {
            let key = r.key()?;
            match key {
                KEY_VALUE_KEY => kv.key = r.bytes()?,
                KEY_VALUE_VALUE => {
                    kv.last_value = Some(r.message()?);
                    kv.values += 1;
                }
                _ => r.skip_field(key, &KEY_VALUE)?,
            }
        }
        Ok(kv)
    }

    /// The value, as prost would decode it (several `value` fields merge).
    fn value(&self) -> Result<Value<'a>> {
        let mut value = Value::Unset;
        match self.last_value {
            None => {}
            Some(payload) if self.values == 1 => scan_any_value(payload, &mut value)?,
            Some(_) => {
                let mut r = self.message;
                while r.more() {
                    let key = r.key()?;
                    if key == KEY_VALUE_VALUE {
                        scan_any_value(r.message()?, &mut value)?;
                    } else {
                        r.skip_field(key, &KEY_VALUE)?;
                    }
                }
            }
        }
        Ok(value)
    }
}

/// The part of an `AnyValue` the signals care about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value<'a> {
    Unset,
    String(&'a str),
    /// bool, int or double.
    Scalar,
    /// Whether the bytes are non-empty.
    Bytes(bool),
    /// Number of entries.
    Array(u64),
    /// Number of entries.
    Kvlist(u64),
    /// `string_value_strindex`: profiling only, treated as absent.
    Strindex,
}

impl<'a> Value<'a> {
    fn string(self) -> Option<&'a str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    fn is_non_empty(self) -> bool {
        match self {
            Value::Unset | Value::Strindex => false,
            Value::String(s) => !s.is_empty(),
            Value::Scalar => true,
            Value::Bytes(non_empty) => non_empty,
            Value::Array(n) | Value::Kvlist(n) => n > 0,
        }
    }
}

/// Merges one `AnyValue` payload into `value`: the last member of the oneof wins, and two
/// arrays (or two lists) in a row concatenate, as in prost.
fn scan_any_value<'a>(mut r: Reader<'a>, value: &mut Value<'a>) -> Result<()> {
    while r.more() {
        let key = r.key()?;
        match key {
            ANY_STRING => {
                let start = r.rest;
                match std::str::from_utf8(r.bytes()?) {
                    Ok(s) => *value = Value::String(s),
                    Err(_) => return fail(start, "string attribute value is not UTF-8"),
                }
            }
            ANY_BOOL | ANY_INT => {
                r.varint()?;
                *value = Value::Scalar;
            }
            ANY_DOUBLE => {
                r.fixed64()?;
                *value = Value::Scalar;
            }
            ANY_STRINDEX => {
                r.varint()?;
                *value = Value::Strindex;
            }
            ANY_BYTES => *value = Value::Bytes(!r.bytes()?.is_empty()),
            ANY_ARRAY => {
                let n = count_entries(r.message()?, &ARRAY_VALUE)?;
                *value = match *value {
                    Value::Array(m) => Value::Array(m + n),
                    _ => Value::Array(n),
                };
            }
            ANY_KVLIST => {
                let n = count_entries(r.message()?, &KEY_VALUE_LIST)?;
                *value = match *value {
                    Value::Kvlist(m) => Value::Kvlist(m + n),
                    _ => Value::Kvlist(n),
                };
            }
            _ => r.skip_field(key, &ANY_VALUE)?,
        }
    }
    Ok(())
}

/// Counts the `values` (field 1) of an `ArrayValue` or `KeyValueList` without reading them.
fn count_entries(mut r: Reader<'_>, schema: &Schema) -> Result<u64> {
    let mut n = 0;
    while r.more() {
        let key = r.key()?;
        if key == LIST_VALUES {
            r.bytes()?;
            n += 1;
        } else {
            r.skip_field(key, schema)?;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValue as PbKeyValue, KeyValueList,
        any_value::Value as PbValue,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{
        ResourceSpans, ScopeSpans, Span, Status,
        span::{Event, Link},
    };
    use prost::Message;

    use super::*;

    /// Owned copy of [`SpanFields`], for comparisons.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    struct Owned {
        server: Option<String>,
        tool: Option<String>,
        method: Option<String>,
        start_ns: u64,
        end_ns: u64,
        is_error: bool,
    }

    fn owned(fields: &[SpanFields<'_>]) -> Vec<Owned> {
        fields
            .iter()
            .map(|f| Owned {
                server: f.server.map(str::to_string),
                tool: f.tool.map(str::to_string),
                method: f.method.map(str::to_string),
                start_ns: f.start_ns,
                end_ns: f.end_ns,
                is_error: f.is_error,
            })
            .collect()
    }

    fn scan(buf: &[u8], server_key: &str) -> Result<Vec<Owned>> {
        let mut out = Vec::new();
        scan_spans(buf, server_key, &mut out)?;
        Ok(owned(&out))
    }

    /// The same extraction from prost's decoded request.
    fn reference(bytes: &[u8], server_key: &str) -> Vec<Owned> {
        let req = ExportTraceServiceRequest::decode(bytes).expect("prost decodes it");
        fn last<'v>(attrs: &'v [PbKeyValue], key: &str) -> Option<&'v PbValue> {
            attrs
                .iter()
                .rev()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| v.value.as_ref())
        }
        fn string(v: Option<&PbValue>) -> Option<String> {
            match v {
                Some(PbValue::StringValue(s)) => Some(s.clone()),
                _ => None,
            }
        }
        fn non_empty(v: Option<&PbValue>) -> bool {
            match v {
                None | Some(PbValue::StringValueStrindex(_)) => false,
                Some(PbValue::StringValue(s)) => !s.is_empty(),
                Some(PbValue::BytesValue(b)) => !b.is_empty(),
                Some(PbValue::ArrayValue(a)) => !a.values.is_empty(),
                Some(PbValue::KvlistValue(l)) => !l.values.is_empty(),
                Some(PbValue::BoolValue(_) | PbValue::IntValue(_) | PbValue::DoubleValue(_)) => {
                    true
                }
            }
        }
        let mut out = Vec::new();
        for rs in &req.resource_spans {
            let server = rs
                .resource
                .as_ref()
                .and_then(|r| string(last(&r.attributes, server_key)));
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    out.push(Owned {
                        server: server.clone(),
                        tool: string(last(&span.attributes, TOOL_ATTRIBUTE)),
                        method: string(last(&span.attributes, METHOD_ATTRIBUTE)),
                        start_ns: span.start_time_unix_nano,
                        end_ns: span.end_time_unix_nano,
                        is_error: span.status.as_ref().is_some_and(|s| s.code == 2)
                            || non_empty(last(&span.attributes, ERROR_TYPE_ATTRIBUTE)),
                    });
                }
            }
        }
        out
    }

    fn kv(k: &str, v: PbValue) -> PbKeyValue {
        PbKeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn s(v: &str) -> PbValue {
        PbValue::StringValue(v.into())
    }

    fn span(tool: Option<&str>, method: Option<&str>, start: u64, dur: u64) -> Span {
        let mut attributes = vec![kv("mcp.session.id", s("sess-1"))];
        if let Some(t) = tool {
            attributes.push(kv(TOOL_ATTRIBUTE, s(t)));
        }
        if let Some(m) = method {
            attributes.push(kv(METHOD_ATTRIBUTE, s(m)));
        }
        attributes.push(kv("n", PbValue::IntValue(7)));
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "tools/call x".into(),
            start_time_unix_nano: start,
            end_time_unix_nano: start + dur,
            attributes,
            flags: 0x100,
            ..Default::default()
        }
    }

    fn resource_spans(attrs: Vec<PbKeyValue>, scopes: Vec<Vec<Span>>) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: attrs,
                ..Default::default()
            }),
            scope_spans: scopes
                .into_iter()
                .map(|spans| ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "scope".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn sample() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![
                resource_spans(
                    vec![
                        kv("host.name", s("h")),
                        kv("service.name", s("weather")),
                        kv("srv", s("custom-weather")),
                    ],
                    vec![
                        vec![
                            span(Some("forecast"), Some("tools/call"), 100, 10),
                            span(None, Some("tools/list"), 200, 20),
                        ],
                        vec![span(Some("alerts"), Some("tools/call"), 300, 30)],
                    ],
                ),
                resource_spans(
                    vec![kv("service.name", s("files"))],
                    vec![vec![span(Some("read"), Some("tools/call"), 400, 40)]],
                ),
            ],
        }
    }

    fn expected(
        server: Option<&str>,
        tool: Option<&str>,
        method: Option<&str>,
        start: u64,
        end: u64,
        is_error: bool,
    ) -> Owned {
        Owned {
            server: server.map(Into::into),
            tool: tool.map(Into::into),
            method: method.map(Into::into),
            start_ns: start,
            end_ns: end,
            is_error,
        }
    }

    #[test]
    fn multiple_resources_scopes_and_spans() {
        let bytes = sample().encode_to_vec();
        let got = scan(&bytes, DEFAULT_SERVER_ATTRIBUTE).unwrap();
        let w = Some("weather");
        assert_eq!(
            got,
            vec![
                expected(w, Some("forecast"), Some("tools/call"), 100, 110, false),
                expected(w, None, Some("tools/list"), 200, 220, false),
                expected(w, Some("alerts"), Some("tools/call"), 300, 330, false),
                expected(
                    Some("files"),
                    Some("read"),
                    Some("tools/call"),
                    400,
                    440,
                    false
                ),
            ]
        );
        assert_eq!(got, reference(&bytes, DEFAULT_SERVER_ATTRIBUTE));
    }

    #[test]
    fn custom_server_attribute() {
        let bytes = sample().encode_to_vec();
        let got = scan(&bytes, "srv").unwrap();
        let servers: Vec<_> = got.iter().map(|f| f.server.as_deref()).collect();
        assert_eq!(
            servers,
            [
                Some("custom-weather"),
                Some("custom-weather"),
                Some("custom-weather"),
                None
            ]
        );
        assert_eq!(got, reference(&bytes, "srv"));
    }

    #[test]
    fn missing_attributes_and_resource() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: None,
                    scope_spans: vec![ScopeSpans {
                        spans: vec![Span::default()],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                resource_spans(vec![], vec![vec![span(None, None, 5, 1)]]),
            ],
        };
        let got = scan(&req.encode_to_vec(), DEFAULT_SERVER_ATTRIBUTE).unwrap();
        assert_eq!(
            got,
            vec![Owned::default(), expected(None, None, None, 5, 6, false)]
        );
    }

    #[test]
    fn non_string_values_are_absent() {
        let mut sp = span(None, None, 1, 1);
        sp.attributes.push(kv(TOOL_ATTRIBUTE, PbValue::IntValue(3)));
        sp.attributes
            .push(kv(METHOD_ATTRIBUTE, PbValue::BytesValue(b"x".to_vec())));
        let req = ExportTraceServiceRequest {
            resource_spans: vec![resource_spans(
                vec![kv("service.name", PbValue::BoolValue(true))],
                vec![vec![sp]],
            )],
        };
        let bytes = req.encode_to_vec();
        let got = scan(&bytes, DEFAULT_SERVER_ATTRIBUTE).unwrap();
        assert_eq!(got, vec![expected(None, None, None, 1, 2, false)]);
        assert_eq!(got, reference(&bytes, DEFAULT_SERVER_ATTRIBUTE));
    }

    #[test]
    fn last_duplicate_wins() {
        let mut sp = span(Some("first"), Some("m1"), 1, 1);
        sp.attributes.push(kv(TOOL_ATTRIBUTE, s("second")));
        sp.attributes
            .push(kv(METHOD_ATTRIBUTE, PbValue::IntValue(1)));
        sp.attributes.push(kv(ERROR_TYPE_ATTRIBUTE, s("boom")));
        sp.attributes.push(kv(ERROR_TYPE_ATTRIBUTE, s("")));
        let mut bytes = ExportTraceServiceRequest {
            resource_spans: vec![resource_spans(
                vec![kv("service.name", s("a"))],
                vec![vec![sp]],
            )],
        }
        .encode_to_vec();
        let got = scan(&bytes, DEFAULT_SERVER_ATTRIBUTE).unwrap();
        assert_eq!(
            got,
            vec![expected(Some("a"), Some("second"), None, 1, 2, false)]
        );
        assert_eq!(got, reference(&bytes, DEFAULT_SERVER_ATTRIBUTE));

        // A second Resource and a second Status appended to the messages merge into them.
        let resource = Resource {
            attributes: vec![kv("service.name", s("b"))],
            ..Default::default()
        }
        .encode_to_vec();
        let status = Status {
            code: 2,
            ..Default::default()
        }
        .encode_to_vec();
        let status_field = field(15, &status);
        let scope = field(
            2,
            &[span(None, None, 0, 0).encode_to_vec(), status_field].concat(),
        );
        let rs = [field(1, &resource), field(2, &scope)].concat();
        bytes.extend(field(1, &rs));
        let got = scan(&bytes, DEFAULT_SERVER_ATTRIBUTE).unwrap();
        assert_eq!(got, reference(&bytes, DEFAULT_SERVER_ATTRIBUTE));
        assert_eq!(got[1], expected(Some("b"), None, None, 0, 0, true));
    }

    fn error_span(status: Option<i32>, error_type: Option<PbValue>) -> Span {
        let mut sp = span(Some("t"), Some("tools/call"), 10, 5);
        sp.status = status.map(|code| Status {
            message: "m".into(),
            code,
        });
        if let Some(v) = error_type {
            sp.attributes.push(kv(ERROR_TYPE_ATTRIBUTE, v));
        }
        sp
    }

    #[test]
    fn errors_from_status_and_error_type() {
        let cases = [
            (error_span(None, None), false),
            (error_span(Some(0), None), false),
            (error_span(Some(1), None), false),
            (error_span(Some(2), None), true),
            (error_span(None, Some(s("tool_error"))), true),
            (error_span(None, Some(PbValue::IntValue(500))), true),
            (error_span(None, Some(PbValue::IntValue(0))), true),
            (error_span(None, Some(s(""))), false),
            (error_span(Some(1), Some(s(""))), false),
            (error_span(Some(2), Some(s(""))), true),
            (error_span(None, Some(PbValue::BytesValue(vec![]))), false),
            (
                error_span(
                    None,
                    Some(PbValue::ArrayValue(ArrayValue { values: vec![] })),
                ),
                false,
            ),
            (
                error_span(
                    None,
                    Some(PbValue::KvlistValue(KeyValueList {
                        values: vec![kv("a", s("b"))],
                    })),
                ),
                true,
            ),
            (
                error_span(None, Some(PbValue::StringValueStrindex(4))),
                false,
            ),
        ];
        for (i, (sp, is_error)) in cases.into_iter().enumerate() {
            let bytes = ExportTraceServiceRequest {
                resource_spans: vec![resource_spans(vec![], vec![vec![sp]])],
            }
            .encode_to_vec();
            let got = scan(&bytes, DEFAULT_SERVER_ATTRIBUTE).unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].is_error, is_error, "case {i}");
            assert_eq!(got, reference(&bytes, DEFAULT_SERVER_ATTRIBUTE), "case {i}");
        }
    }

    /// Tag and length-delimited payload.
    fn field(tag: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn resource_after_scope_spans() {
        let resource = Resource {
            attributes: vec![kv("service.name", s("late"))],
            ..Default::default()
        };
        let scope = ScopeSpans {
            spans: vec![span(Some("t"), None, 1, 2), span(None, Some("m"), 3, 4)],
            ..Default::default()
        };
        let rs = [
            field(2, &scope.encode_to_vec()),
            field(3, b"https://schema"),
            field(1, &resource.encode_to_vec()),
        ]
        .concat();
        let bytes = field(1, &rs);
        let got = scan(&bytes, DEFAULT_SERVER_ATTRIBUTE).unwrap();
        assert_eq!(
            got,
            vec![
                expected(Some("late"), Some("t"), None, 1, 3, false),
                expected(Some("late"), None, Some("m"), 3, 7, false),
            ]
        );
        assert_eq!(got, reference(&bytes, DEFAULT_SERVER_ATTRIBUTE));
    }

    /// Unknown fields of every wire type, with small and large field numbers.
    fn unknowns() -> Vec<u8> {
        use prost::encoding::{WireType, encode_key, encode_varint};
        let mut out = Vec::new();
        for tag in [20, 1000, 536_870_911] {
            encode_key(tag, WireType::Varint, &mut out);
            encode_varint(u64::MAX, &mut out);
            encode_key(tag, WireType::SixtyFourBit, &mut out);
            out.extend_from_slice(&[0xff; 8]);
            encode_key(tag, WireType::LengthDelimited, &mut out);
            encode_varint(3, &mut out);
            out.extend_from_slice(&[0xff, 0x80, 0x00]);
            encode_key(tag, WireType::ThirtyTwoBit, &mut out);
            out.extend_from_slice(&[0xff; 4]);
        }
        out
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let u = unknowns();
        let any = |v: PbValue| [AnyValue { value: Some(v) }.encode_to_vec(), u.clone()].concat();
        let kv = |k: &str, v: PbValue| {
            [
                u.clone(),
                field(1, k.as_bytes()),
                u.clone(),
                field(2, &any(v)),
                u.clone(),
            ]
            .concat()
        };
        let status = [
            u.clone(),
            Status {
                message: "x".into(),
                code: 2,
            }
            .encode_to_vec(),
            u.clone(),
        ]
        .concat();
        let span = [
            u.clone(),
            span(None, None, 50, 5).encode_to_vec(),
            u.clone(),
            field(9, &kv(TOOL_ATTRIBUTE, s("tool"))),
            u.clone(),
            field(9, &kv(METHOD_ATTRIBUTE, s("method"))),
            field(15, &status),
            u.clone(),
        ]
        .concat();
        let scope = [
            u.clone(),
            field(1, &InstrumentationScope::default().encode_to_vec()),
            field(2, &span),
            u.clone(),
            field(2, &span),
        ]
        .concat();
        let resource = [
            u.clone(),
            field(1, &kv("service.name", s("srv"))),
            u.clone(),
        ]
        .concat();
        let rs = [
            u.clone(),
            field(2, &scope),
            u.clone(),
            field(1, &resource),
            u.clone(),
        ]
        .concat();
        let bytes = [u.clone(), field(1, &rs), u.clone(), field(1, &rs), u].concat();
        let got = scan(&bytes, DEFAULT_SERVER_ATTRIBUTE).unwrap();
        let one = expected(Some("srv"), Some("tool"), Some("method"), 50, 55, true);
        assert_eq!(got, vec![one.clone(), one.clone(), one.clone(), one]);
        assert_eq!(got, reference(&bytes, DEFAULT_SERVER_ATTRIBUTE));
    }

    #[test]
    fn groups_and_bad_wire_types_are_refused() {
        // A group at the top level.
        assert!(scan(&[0x0b, 0x0c], DEFAULT_SERVER_ATTRIBUTE).is_err());
        // Wire types 6 and 7.
        assert!(scan(&[0x0e], DEFAULT_SERVER_ATTRIBUTE).is_err());
        assert!(scan(&[0x0f], DEFAULT_SERVER_ATTRIBUTE).is_err());
        // Field 0.
        assert!(scan(&[0x02, 0x00], DEFAULT_SERVER_ATTRIBUTE).is_err());
        // resource_spans as a varint.
        assert!(scan(&[0x08, 0x01], DEFAULT_SERVER_ATTRIBUTE).is_err());
        // start_time_unix_nano as a varint in a span.
        let span = [0x38, 0x01];
        let bytes = field(1, &field(2, &field(2, &span)));
        let err = scan(&bytes, DEFAULT_SERVER_ATTRIBUTE).unwrap_err();
        assert!(err.to_string().contains("Span"), "{err}");
        assert!(ExportTraceServiceRequest::decode(bytes.as_slice()).is_err());
    }

    /// Byte offsets right after each complete top-level field.
    fn top_level_boundaries(bytes: &[u8]) -> Vec<usize> {
        let mut r = Reader::new(bytes);
        let mut out = vec![0];
        while r.more() {
            let key = r.key().unwrap();
            r.skip(key as u8 & 7).unwrap();
            out.push(bytes.len() - r.rest.len());
        }
        out
    }

    #[test]
    fn every_truncation_is_refused() {
        let mut req = sample();
        req.resource_spans[0].scope_spans[0].spans[0].status = Some(Status {
            message: "boom".into(),
            code: 2,
        });
        req.resource_spans[1].scope_spans[0].spans[0].events = vec![Event {
            name: "e".into(),
            ..Default::default()
        }];
        req.resource_spans[1].scope_spans[0].spans[0].links = vec![Link {
            trace_id: vec![3; 16],
            ..Default::default()
        }];
        let bytes = req.encode_to_vec();
        let full = scan(&bytes, DEFAULT_SERVER_ATTRIBUTE).unwrap();
        let boundaries = top_level_boundaries(&bytes);
        assert_eq!(boundaries.len(), 3);
        let mut out = vec![SpanFields::default(); 3];
        for len in 0..bytes.len() {
            let prefix = &bytes[..len];
            let result = scan_spans(prefix, DEFAULT_SERVER_ATTRIBUTE, &mut out);
            if boundaries.contains(&len) {
                // Cutting between whole ResourceSpans leaves a valid, shorter request.
                result.unwrap();
                assert_eq!(owned(&out), &full[..out.len()]);
                assert_eq!(owned(&out), reference(prefix, DEFAULT_SERVER_ATTRIBUTE));
            } else {
                let err = result.unwrap_err();
                assert!(err.offset <= len, "{err} for length {len}");
                assert!(out.is_empty(), "a refused request yields no spans");
                assert!(ExportTraceServiceRequest::decode(prefix).is_err());
            }
        }
    }

    /// Every single-byte corruption: never panics, and when prost also accepts the bytes
    /// the results agree.
    #[test]
    fn corruptions_never_panic_and_agree_with_prost() {
        let bytes = sample().encode_to_vec();
        let mut agreed = 0;
        for i in 0..bytes.len() {
            for value in [0x00, 0x01, 0x07, 0x0a, 0x12, 0x7f, 0x80, 0xc3, 0xff] {
                let mut corrupted = bytes.clone();
                corrupted[i] = value;
                let got = scan(&corrupted, DEFAULT_SERVER_ATTRIBUTE);
                if let (Ok(got), true) = (
                    got,
                    ExportTraceServiceRequest::decode(corrupted.as_slice()).is_ok(),
                ) {
                    assert_eq!(got, reference(&corrupted, DEFAULT_SERVER_ATTRIBUTE));
                    agreed += 1;
                }
            }
        }
        assert!(agreed > 100);
    }

    #[test]
    fn invalid_utf8_in_tool_name_is_refused() {
        let mut req = sample();
        req.resource_spans[0].scope_spans[0].spans[0].attributes[1] = kv(TOOL_ATTRIBUTE, s("TOOL"));
        let mut bytes = req.encode_to_vec();
        let at = bytes.windows(4).position(|w| w == b"TOOL").unwrap();
        bytes[at] = 0xff;
        let mut out = Vec::new();
        let err = scan_spans(&bytes, DEFAULT_SERVER_ATTRIBUTE, &mut out).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
        assert!(out.is_empty());
        assert!(ExportTraceServiceRequest::decode(bytes.as_slice()).is_err());
    }

    #[test]
    fn scratch_keeps_its_allocation() {
        let mut scratch = SpanScratch::default();
        let bytes = sample().encode_to_vec();
        assert_eq!(
            scratch.scan(&bytes, "service.name", |s| s.len()).unwrap(),
            4
        );
        let capacity = scratch.spans.capacity();
        assert!(capacity >= 4);
        for _ in 0..3 {
            let bytes = sample().encode_to_vec();
            let got = scratch.scan(&bytes, "service.name", owned).unwrap();
            assert_eq!(got, reference(&bytes, "service.name"));
            assert_eq!(scratch.spans.capacity(), capacity);
        }
        assert!(scratch.scan(&bytes[..10], "service.name", owned).is_err());
        assert_eq!(scratch.spans.capacity(), capacity);
    }

    #[test]
    fn empty_request() {
        let mut out = vec![SpanFields::default()];
        scan_spans(&[], DEFAULT_SERVER_ATTRIBUTE, &mut out).unwrap();
        assert!(out.is_empty());
        let empty = ExportTraceServiceRequest::default().encode_to_vec();
        scan_spans(&empty, DEFAULT_SERVER_ATTRIBUTE, &mut out).unwrap();
        assert!(out.is_empty());
        // ResourceSpans and ScopeSpans without spans.
        let req = ExportTraceServiceRequest {
            resource_spans: vec![resource_spans(
                vec![kv("service.name", s("x"))],
                vec![vec![]],
            )],
        };
        let bytes = req.encode_to_vec();
        let mut out = vec![SpanFields::default()];
        scan_spans(&bytes, DEFAULT_SERVER_ATTRIBUTE, &mut out).unwrap();
        assert!(out.is_empty());
    }

    /// SplitMix64.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }

        fn pick<'s>(&mut self, items: &[&'s str]) -> &'s str {
            items[self.below(items.len() as u64) as usize]
        }
    }

    fn random_value(rng: &mut Rng, depth: u32) -> Option<AnyValue> {
        let value = match rng.below(if depth > 1 { 7 } else { 11 }) {
            0 => return None,
            1 => None,
            2 => Some(PbValue::StringValue(String::new())),
            3 => Some(PbValue::StringValue(
                rng.pick(&["calc", "tools/call", "timeout", "é✓", "x"])
                    .into(),
            )),
            4 => Some(PbValue::StringValue("é".repeat(rng.below(200) as usize))),
            5 => Some(PbValue::IntValue(rng.next() as i64 >> rng.below(64))),
            6 => Some(PbValue::BoolValue(rng.chance(50))),
            7 => Some(PbValue::DoubleValue(rng.below(1000) as f64 / 7.0)),
            8 => Some(PbValue::BytesValue(vec![0xff; rng.below(3) as usize])),
            9 => Some(PbValue::ArrayValue(ArrayValue {
                values: (0..rng.below(3))
                    .map(|_| random_value(rng, depth + 1).unwrap_or_default())
                    .collect(),
            })),
            10 => Some(PbValue::KvlistValue(KeyValueList {
                values: (0..rng.below(3))
                    .map(|_| random_kv(rng, depth + 1))
                    .collect(),
            })),
            _ => unreachable!(),
        };
        Some(AnyValue { value })
    }

    fn random_kv(rng: &mut Rng, depth: u32) -> PbKeyValue {
        PbKeyValue {
            key: rng
                .pick(&[
                    TOOL_ATTRIBUTE,
                    METHOD_ATTRIBUTE,
                    ERROR_TYPE_ATTRIBUTE,
                    "service.name",
                    "custom.server",
                    "mcp.session.id",
                    "",
                    "gen_ai.tool.names",
                ])
                .into(),
            value: random_value(rng, depth),
            ..Default::default()
        }
    }

    fn random_request(rng: &mut Rng) -> ExportTraceServiceRequest {
        let attrs = |rng: &mut Rng, max| (0..rng.below(max)).map(|_| random_kv(rng, 0)).collect();
        ExportTraceServiceRequest {
            resource_spans: (0..rng.below(4))
                .map(|_| ResourceSpans {
                    resource: rng.chance(85).then(|| Resource {
                        attributes: attrs(rng, 6),
                        dropped_attributes_count: rng.below(3) as u32,
                        ..Default::default()
                    }),
                    scope_spans: (0..rng.below(4))
                        .map(|_| ScopeSpans {
                            scope: rng.chance(50).then(|| InstrumentationScope {
                                name: "s".into(),
                                version: "1".into(),
                                attributes: attrs(rng, 2),
                                ..Default::default()
                            }),
                            spans: (0..rng.below(5))
                                .map(|_| Span {
                                    trace_id: vec![rng.below(256) as u8; 16],
                                    span_id: vec![7; 8],
                                    parent_span_id: if rng.chance(50) {
                                        vec![8; 8]
                                    } else {
                                        vec![]
                                    },
                                    name: "n".repeat(rng.below(200) as usize),
                                    kind: rng.below(6) as i32,
                                    start_time_unix_nano: rng.next() >> rng.below(64),
                                    end_time_unix_nano: rng.next() >> rng.below(64),
                                    attributes: attrs(rng, 10),
                                    status: rng.chance(60).then(|| Status {
                                        message: if rng.chance(50) {
                                            "err".into()
                                        } else {
                                            String::new()
                                        },
                                        code: rng.below(3) as i32,
                                    }),
                                    events: (0..rng.below(2))
                                        .map(|_| Event {
                                            name: "ev".into(),
                                            attributes: attrs(rng, 2),
                                            ..Default::default()
                                        })
                                        .collect(),
                                    links: (0..rng.below(2))
                                        .map(|_| Link {
                                            trace_id: vec![1; 16],
                                            span_id: vec![1; 8],
                                            ..Default::default()
                                        })
                                        .collect(),
                                    flags: rng.below(1024) as u32,
                                    ..Default::default()
                                })
                                .collect(),
                            schema_url: if rng.chance(20) {
                                "u".into()
                            } else {
                                String::new()
                            },
                        })
                        .collect(),
                    schema_url: if rng.chance(20) {
                        "u".into()
                    } else {
                        String::new()
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn random_requests_match_prost() {
        let mut rng = Rng(0x5eed);
        let mut scratch = SpanScratch::default();
        let (mut spans, mut tools, mut methods, mut servers, mut errors) = (0, 0, 0, 0, 0);
        for i in 0..200 {
            let bytes = random_request(&mut rng).encode_to_vec();
            for server_key in [DEFAULT_SERVER_ATTRIBUTE, "custom.server"] {
                let got = scratch.scan(&bytes, server_key, owned).unwrap();
                assert_eq!(got, reference(&bytes, server_key), "request {i}");
                spans += got.len();
                tools += got.iter().filter(|f| f.tool.is_some()).count();
                methods += got.iter().filter(|f| f.method.is_some()).count();
                servers += got.iter().filter(|f| f.server.is_some()).count();
                errors += got.iter().filter(|f| f.is_error).count();
            }
        }
        assert!(spans > 1000, "{spans}");
        // Every case is exercised both ways.
        for n in [tools, methods, servers, errors] {
            assert!(n > spans / 20 && n < spans - spans / 20, "{n} of {spans}");
        }
    }
}

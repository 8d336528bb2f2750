//! Throughput of `scan_spans` against the baseline of a full prost decode plus the same
//! extraction, on realistic MCP span batches. A plain timing loop, no harness:
//! `cargo bench -p mcpulse-processors --bench span_fields`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use mcpulse_processors::signals::span_fields::{
    DEFAULT_SERVER_ATTRIBUTE, ERROR_TYPE_ATTRIBUTE, METHOD_ATTRIBUTE, SpanFields, TOOL_ATTRIBUTE,
    scan_spans,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

const REQUESTS: usize = 1_000;
const SPANS_PER_REQUEST: usize = 100;
const RUN: Duration = Duration::from_secs(3);

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: impl Into<String>) -> Value {
    Value::StringValue(v.into())
}

/// xorshift64*, for varied ids and values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn request(rng: &mut Rng, i: usize) -> Vec<u8> {
    let server = format!("mcp-server-{}", i % 50);
    let resource = Resource {
        attributes: vec![
            kv("service.name", s(server)),
            kv("service.version", s("1.4.2")),
            kv("telemetry.sdk.name", s("opentelemetry")),
            kv("telemetry.sdk.language", s("python")),
            kv("telemetry.sdk.version", s("1.27.0")),
            kv(
                "host.name",
                s(format!("ip-10-0-{}-{}.ec2.internal", i % 7, i % 251)),
            ),
        ],
        ..Default::default()
    };
    let tools = [
        "get_forecast",
        "search_files",
        "read_file",
        "create_issue",
        "query_db",
    ];
    let spans = (0..SPANS_PER_REQUEST)
        .map(|j| {
            let start = 1_763_700_000_000_000_000 + (i * SPANS_PER_REQUEST + j) as u64 * 1_000_000;
            let tool = tools[j % tools.len()];
            let failed = rng.next().is_multiple_of(20);
            let mut attributes = vec![
                kv("mcp.method.name", s("tools/call")),
                kv("gen_ai.tool.name", s(tool)),
                kv("gen_ai.operation.name", s("execute_tool")),
                kv("mcp.session.id", s(format!("{:032x}", rng.next()))),
                kv("jsonrpc.request.id", Value::IntValue(j as i64)),
                kv("network.transport", s("tcp")),
                kv("mcp.protocol.version", s("2025-06-18")),
                kv("server.port", Value::IntValue(8080)),
            ];
            if failed {
                attributes[7] = kv("error.type", s("tool_error"));
            }
            Span {
                trace_id: rng.bytes(16),
                span_id: rng.bytes(8),
                parent_span_id: rng.bytes(8),
                name: format!("tools/call {tool}"),
                kind: 2,
                start_time_unix_nano: start,
                end_time_unix_nano: start + rng.next() % 2_000_000_000,
                attributes,
                status: failed.then(|| Status {
                    message: "tool failed".into(),
                    code: 2,
                }),
                flags: 0x301,
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "opentelemetry.instrumentation.mcp".into(),
                    version: "0.1.0".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Runs `pass` (one pass over all requests, returning the spans seen) for about [`RUN`];
/// returns spans per second over the whole run. Also prints the rate of the fastest pass,
/// which is what one uncontended core does when the machine is shared.
fn measure(name: &str, mut pass: impl FnMut() -> usize) -> f64 {
    // Warm up.
    pass();
    let started = Instant::now();
    let (mut spans, mut passes, mut best) = (0usize, 0usize, f64::MAX);
    while started.elapsed() < RUN {
        let t = Instant::now();
        let n = pass();
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
        spans += n;
        passes += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = spans as f64 / elapsed;
    println!(
        "{name:<24} {rate:>12.0} spans/s ({:>6.1} ns/span) over {passes} passes of {} spans; \
         fastest pass {:>12.0} spans/s ({:>6.1} ns/span)",
        1e9 / rate,
        spans / passes,
        1.0 / best,
        best * 1e9,
    );
    rate
}

/// The baseline: what the operator would do without the scan.
fn prost_fields(req: &ExportTraceServiceRequest, mut f: impl FnMut(SpanFields<'_>)) {
    fn last<'v>(attrs: &'v [KeyValue], key: &str) -> Option<&'v Value> {
        attrs
            .iter()
            .rev()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }
    fn string(v: Option<&Value>) -> Option<&str> {
        match v {
            Some(Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }
    for rs in &req.resource_spans {
        let server = rs
            .resource
            .as_ref()
            .and_then(|r| string(last(&r.attributes, DEFAULT_SERVER_ATTRIBUTE)));
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let error_type = match last(&span.attributes, ERROR_TYPE_ATTRIBUTE) {
                    None | Some(Value::StringValueStrindex(_)) => false,
                    Some(Value::StringValue(s)) => !s.is_empty(),
                    Some(Value::BytesValue(b)) => !b.is_empty(),
                    Some(Value::ArrayValue(a)) => !a.values.is_empty(),
                    Some(Value::KvlistValue(l)) => !l.values.is_empty(),
                    Some(_) => true,
                };
                f(SpanFields {
                    server,
                    tool: string(last(&span.attributes, TOOL_ATTRIBUTE)),
                    method: string(last(&span.attributes, METHOD_ATTRIBUTE)),
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                    is_error: span.status.as_ref().is_some_and(|s| s.code == 2) || error_type,
                });
            }
        }
    }
}

fn main() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let requests: Vec<Vec<u8>> = (0..REQUESTS).map(|i| request(&mut rng, i)).collect();
    let bytes: usize = requests.iter().map(Vec::len).sum();
    println!(
        "{REQUESTS} requests x {SPANS_PER_REQUEST} spans, {} bytes/span on average",
        bytes / (REQUESTS * SPANS_PER_REQUEST)
    );

    // Both paths must agree before timing them.
    let mut out = Vec::new();
    let mut errors = 0;
    for r in &requests {
        scan_spans(r, DEFAULT_SERVER_ATTRIBUTE, &mut out).expect("valid request");
        let req = ExportTraceServiceRequest::decode(r.as_slice()).expect("valid request");
        let mut i = 0;
        prost_fields(&req, |f| {
            assert_eq!(f, out[i]);
            i += 1;
        });
        assert_eq!(i, out.len());
        errors += out.iter().filter(|f| f.is_error).count();
    }
    println!("(checked: scan and prost agree; {errors} error spans)");

    let scan = measure("scan_spans", || {
        let mut n = 0;
        for r in &requests {
            scan_spans(black_box(r), DEFAULT_SERVER_ATTRIBUTE, &mut out).expect("valid");
            n += black_box(&out).len();
        }
        n
    });
    if std::env::var_os("SCAN_ONLY").is_some() {
        return;
    }
    let prost = measure("prost decode + extract", || {
        let mut n = 0;
        for r in &requests {
            let req = ExportTraceServiceRequest::decode(black_box(r.as_slice())).expect("valid");
            prost_fields(&req, |f| {
                black_box(f);
                n += 1;
            });
        }
        n
    });
    println!("ratio scan/prost: {:.1}x", scan / prost);
}

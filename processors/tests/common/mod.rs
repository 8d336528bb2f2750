//! Helpers shared by the archiver tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use mcpulse_processors::archive::ArchiveTarget;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;

/// An OTLP request of `n` MCP tool-call spans of service `svc`, with span ids
/// `first_id + 1 ..= first_id + n`, timestamped now.
pub fn request(first_id: u64, n: u64) -> Bytes {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let spans = (first_id..first_id + n)
        .map(|id| Span {
            trace_id: [[1u8; 8], id.to_be_bytes()].concat(),
            span_id: (id + 1).to_be_bytes().to_vec(),
            name: "tools/call x".into(),
            kind: 2,
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1000,
            attributes: vec![
                kv("gen_ai.tool.name", "x"),
                kv("mcp.method.name", "tools/call"),
            ],
            ..Default::default()
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "svc")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Bytes::from(req.encode_to_vec())
}

/// An archive under `dir/archive` on the local file system.
pub fn target(dir: &Path) -> ArchiveTarget {
    let root = dir.join("archive");
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    ArchiveTarget {
        store: Arc::new(LocalFileSystem::new()),
        root: ObjectPath::from(root.to_string_lossy().trim_start_matches('/')),
        local_root: Some(root),
    }
}

//! OTLP/gRPC status codes: authentication, malformed messages, partial success, and
//! RESOURCE_EXHAUSTED with a RetryInfo hint when the archive is behind.

mod common;

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use common::{ACME_TOKEN, Mcpulse, now_ns, otlp_request};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_types::StatusExt;

/// Sends raw bytes as the request message; decodes the response with prost.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        Ok(Some(
            ExportTraceServiceResponse::decode(bytes)
                .map_err(|e| tonic::Status::internal(e.to_string()))?,
        ))
    }
}

async fn export(
    m: &Mcpulse,
    token: Option<&str>,
    body: Vec<u8>,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", m.otlp_grpc))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(Bytes::from(body));
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    grpc.unary(request, path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

fn request(starts: &[u64]) -> Vec<u8> {
    let spans = starts
        .iter()
        .enumerate()
        .map(|(i, start)| Span {
            trace_id: vec![3; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: "tools/call grpc".into(),
            start_time_unix_nano: *start,
            end_time_unix_nano: *start + 10,
            ..Default::default()
        })
        .collect();
    otlp_request(None, spans)
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_status_codes_follow_otlp() {
    let m = Mcpulse::start("");
    let err = export(&m, None, request(&[now_ns()])).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = export(&m, Some("wrong-token-123"), request(&[now_ns()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = export(&m, Some(ACME_TOKEN), b"\x0a\xff\xff\xff\x0f".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("invalid ExportTraceServiceRequest"),
        "{}",
        err.message()
    );

    let ok = export(&m, Some(ACME_TOKEN), request(&[now_ns()]))
        .await
        .unwrap();
    assert_eq!(ok.partial_success, None);
    let old = now_ns() - 40 * 24 * 3600 * 1_000_000_000;
    let partial = export(&m, Some(ACME_TOKEN), request(&[now_ns(), old]))
        .await
        .unwrap();
    let partial = partial.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial
            .error_message
            .contains("outside the accepted window")
    );
    let n = tokio::task::spawn_blocking(move || {
        let n = m.wait_count(
            "SELECT count(*) AS n FROM spans WHERE name = 'tools/call grpc'",
            2,
        );
        (n, m)
    })
    .await
    .unwrap();
    assert_eq!(n.0, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_saturation_is_retryable_with_retry_info() {
    let m = Mcpulse::start(
        "archive:\n  flush_interval: 60s\ningest:\n  max_backlog_messages: 0\n  retry_after: 2s\n",
    );
    export(&m, Some(ACME_TOKEN), request(&[now_ns()]))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let err = loop {
        match export(&m, Some(ACME_TOKEN), request(&[now_ns()])).await {
            Err(e) => break e,
            Ok(_) => assert!(std::time::Instant::now() < deadline, "never throttled"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let retry = err.get_details_retry_info().expect("RetryInfo detail");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(4)));
}

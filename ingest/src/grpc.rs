//! OTLP/gRPC receiver (`opentelemetry.proto.collector.trace.v1.TraceService/Export`).
//!
//! The service hands the request message to the handler undecoded: the handler decodes
//! it itself, so malformed protobuf answers INVALID_ARGUMENT (tonic's own codec would say
//! INTERNAL), and a request that needs no splitting is forwarded to the log as received.
//! Saturation answers UNAVAILABLE or RESOURCE_EXHAUSTED with a `RetryInfo` detail, which
//! OTLP clients treat as retryable.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message as _;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{Authenticator, IngestError, TraceIngest};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The OTLP/gRPC trace service, for `tonic::transport::Server::add_service`.
#[derive(Clone)]
pub struct TraceGrpcService {
    handler: Arc<ExportHandler>,
    max_decoding_message_size: usize,
}

/// A tonic service for the OTLP/gRPC port, accepting gzip and the configured size limit.
pub fn trace_service(traces: TraceIngest, auth: Arc<Authenticator>) -> TraceGrpcService {
    let max_decoding_message_size = traces.config().max_decompressed_bytes;
    TraceGrpcService {
        handler: Arc::new(ExportHandler { traces, auth }),
        max_decoding_message_size,
    }
}

impl NamedService for TraceGrpcService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<B> Service<http::Request<B>> for TraceGrpcService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async {
                Ok(Status::unimplemented("only TraceService/Export is served").into_http())
            });
        }
        let handler = self.handler.clone();
        let max = self.max_decoding_message_size;
        Box::pin(async move {
            let mut gzip = EnabledCompressionEncodings::default();
            gzip.enable(CompressionEncoding::Gzip);
            let mut grpc = Grpc::new(RawRequestCodec)
                .apply_compression_config(gzip, gzip)
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.unary(Export(handler), request).await)
        })
    }
}

struct ExportHandler {
    traces: TraceIngest,
    auth: Arc<Authenticator>,
}

struct Export(Arc<ExportHandler>);

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<ExportTraceServiceResponse>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let handler = self.0.clone();
        Box::pin(async move {
            match handler.export(request).await {
                Ok(outcome) => Ok(Response::new(ExportTraceServiceResponse {
                    partial_success: (outcome.rejected > 0).then_some(ExportTracePartialSuccess {
                        rejected_spans: outcome.rejected as i64,
                        error_message: outcome.message,
                    }),
                })),
                Err(err) => Err(handler.status(err)),
            }
        })
    }
}

impl ExportHandler {
    async fn export(&self, request: Request<Bytes>) -> Result<crate::ExportOutcome, IngestError> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes().to_vec());
        let principal = self.auth.authenticate(authorization.as_deref())?;
        let tenant = principal.tenant()?;
        let body = request.into_inner();
        let _permit = self.traces.pressure().admit(body.len())?;
        self.traces.export_protobuf(tenant, body).await
    }

    fn status(&self, err: IngestError) -> Status {
        let stats = self.traces.stats();
        if err.is_retryable() {
            stats.requests_throttled.fetch_add(1, Relaxed);
        } else {
            stats.requests_refused.fetch_add(1, Relaxed);
        }
        match err.retry_after() {
            Some(delay) => Status::with_error_details(
                err.grpc_code(),
                err.to_string(),
                ErrorDetails::with_retry_info(Some(delay)),
            ),
            None => Status::new(err.grpc_code(), err.to_string()),
        }
    }
}

/// Decodes requests to their raw bytes and encodes responses with prost.
#[derive(Clone, Copy, Default)]
struct RawRequestCodec;

impl Codec for RawRequestCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding the response: {e}")))
    }
}

struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

//! OTLP/gRPC receiver (`opentelemetry.proto.collector.trace.v1.TraceService/Export`).
//!
//! Saturation answers UNAVAILABLE or RESOURCE_EXHAUSTED with a `RetryInfo` detail, which
//! OTLP clients treat as retryable; invalid input answers INVALID_ARGUMENT.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{Authenticator, IngestError, TraceIngest};

/// The gRPC trace service.
pub struct GrpcTraces {
    traces: TraceIngest,
    auth: Arc<Authenticator>,
}

/// A tonic service for the OTLP/gRPC port, accepting gzip and the configured size limit.
pub fn trace_service(
    traces: TraceIngest,
    auth: Arc<Authenticator>,
) -> TraceServiceServer<GrpcTraces> {
    let limit = traces.config().max_decompressed_bytes;
    TraceServiceServer::new(GrpcTraces { traces, auth })
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(limit)
}

#[tonic::async_trait]
impl TraceService for GrpcTraces {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let result = async {
            let principal = self.auth.authenticate(
                request
                    .metadata()
                    .get("authorization")
                    .map(|v| v.as_bytes()),
            )?;
            let tenant = principal.tenant()?.to_string();
            let message = request.into_inner();
            let _permit = self.traces.pressure().admit(message.encoded_len())?;
            self.traces.export(&tenant, message, None).await
        }
        .await;
        match result {
            Ok(outcome) => Ok(Response::new(ExportTraceServiceResponse {
                partial_success: (outcome.rejected > 0).then(|| ExportTracePartialSuccess {
                    rejected_spans: outcome.rejected as i64,
                    error_message: outcome.message,
                }),
            })),
            Err(err) => Err(self.status(err)),
        }
    }
}

impl GrpcTraces {
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

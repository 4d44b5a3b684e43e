//! OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//!
//! The request is taken as raw bytes and decoded with the lenient decoder, so invalid
//! UTF-8 in one attribute does not fail the whole export as the generated codec would.
//! Requests may be compressed with gzip or zstd ([`accepted_encodings`]).

use std::{
    convert::Infallible,
    future::Future,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tokio::net::TcpListener;
use tonic::{
    body::Body,
    codec::{
        Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf,
        Encoder,
    },
    codegen::{http, BoxFuture, Service, StdError},
    server::{Grpc, NamedService, UnaryService},
    Status,
};

use super::{DecodeNotes, Ingest};
use crate::{metrics::Receiver, IngestError};

/// The gRPC method path of OTLP trace export.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Serves OTLP/gRPC and the agent protocol on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    ingest: Ingest,
    store: caracal_store::Store,
    max_request_bytes: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let agent = super::agent::AgentReportService::new(ingest.clone(), store, max_request_bytes);
    tonic::transport::Server::builder()
        .add_service(TraceExportService::new(ingest, max_request_bytes))
        .add_service(agent)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// The request compressions the gRPC services accept: gzip and zstd.
pub fn accepted_encodings() -> EnabledCompressionEncodings {
    let mut encodings = EnabledCompressionEncodings::default();
    encodings.enable(CompressionEncoding::Gzip);
    encodings.enable(CompressionEncoding::Zstd);
    encodings
}

/// The trace export service.
#[derive(Debug, Clone)]
pub struct TraceExportService {
    ingest: Ingest,
    max_request_bytes: usize,
}

impl TraceExportService {
    /// A service feeding `ingest`.
    pub fn new(ingest: Ingest, max_request_bytes: usize) -> Self {
        Self {
            ingest,
            max_request_bytes,
        }
    }
}

impl NamedService for TraceExportService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<B> Service<http::Request<B>> for TraceExportService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(
                async move { Ok(Status::unimplemented("unknown method").into_http()) },
            );
        }
        let service = self.clone();
        let metrics = service.ingest.metrics().clone();
        let limit = service.max_request_bytes;
        Box::pin(unary_call(
            RawRequestCodec,
            ExportHandler(service),
            request,
            metrics,
            Receiver::OtlpGrpc,
            limit,
        ))
    }
}

/// Serves one unary call: counts the request, accepts gzip and zstd bodies up to
/// `limit` bytes, runs `handler`, and maps tonic's size refusal (see
/// [`out_of_range_as_resource_exhausted`]).
pub(crate) async fn unary_call<C, H, B>(
    codec: C,
    handler: H,
    request: http::Request<B>,
    metrics: crate::metrics::CollectorMetrics,
    receiver: Receiver,
    limit: usize,
) -> Result<http::Response<Body>, Infallible>
where
    C: Codec,
    C::Decode: Send,
    H: UnaryService<C::Decode, Response = C::Encode>,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    metrics.record_request(receiver);
    let mut grpc = Grpc::new(codec)
        .apply_compression_config(accepted_encodings(), EnabledCompressionEncodings::default())
        .apply_max_message_size_config(Some(limit), None);
    let response = grpc.unary(handler, request).await;
    Ok(out_of_range_as_resource_exhausted(
        response, &metrics, receiver, limit,
    ))
}

/// tonic refuses an oversized message with `OUT_OF_RANGE`, which OTLP clients retry
/// forever; the handler itself never answers `OUT_OF_RANGE`, so any such answer is the
/// size check, and becomes the non-retryable `RESOURCE_EXHAUSTED` OTLP expects (and a
/// `too_large` refusal in `metrics`).
pub(crate) fn out_of_range_as_resource_exhausted(
    mut response: http::Response<Body>,
    metrics: &crate::metrics::CollectorMetrics,
    receiver: Receiver,
    limit: usize,
) -> http::Response<Body> {
    let out_of_range = http::HeaderValue::from(tonic::Code::OutOfRange as i32);
    let headers = response.headers_mut();
    if headers.get(Status::GRPC_STATUS) == Some(&out_of_range) {
        headers.insert(
            Status::GRPC_STATUS,
            http::HeaderValue::from(tonic::Code::ResourceExhausted as i32),
        );
        let error = IngestError::TooLarge {
            size: limit.saturating_add(1),
            limit,
        };
        metrics.record_refused(receiver, &error);
    }
    response
}

struct ExportHandler(TraceExportService);

impl UnaryService<Bytes> for ExportHandler {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let ingest = self.0.ingest.clone();
        Box::pin(async move {
            let tenant = ingest.tenant_for(super::grpc_authorization(request.metadata()));
            let body = request.into_inner();
            let exported = async {
                let tenant = tenant?;
                let decoding = ingest.reserve_decoding(body.len()).await?;
                let decoded =
                    caracal_model::lenient::decode_export_request(&body).map_err(|error| {
                        IngestError::Malformed(format!("invalid protobuf: {error}"))
                    })?;
                drop(decoding);
                let notes = DecodeNotes::invalid_utf8(decoded.num_invalid_utf8);
                ingest.export(&tenant, decoded.request, notes).await
            };
            let outcome = exported.await.map_err(|error| {
                ingest.metrics().record_refused(Receiver::OtlpGrpc, &error);
                if error.is_retryable() {
                    tracing::warn!(%error, "otlp/grpc export failed");
                }
                error.to_status()
            })?;
            let partial_success = outcome.into_partial_success();
            Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success,
            }))
        })
    }
}

/// Encodes responses with prost and hands request bodies over undecoded.
#[derive(Debug, Clone, Copy, Default)]
struct RawRequestCodec;

impl Codec for RawRequestCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

#[derive(Debug)]
struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(
        &mut self,
        item: Self::Item,
        destination: &mut EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        item.encode(destination)
            .map_err(|error| Status::internal(format!("cannot encode response: {error}")))
    }
}

#[derive(Debug)]
struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, source: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let length = source.remaining();
        Ok(Some(source.copy_to_bytes(length)))
    }
}

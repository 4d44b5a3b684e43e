//! OTLP/HTTP receiver: `POST /v1/traces` with protobuf or JSON bodies, optionally gzip
//! or zstd, and `GET /metrics` (the collector's own metrics).
//!
//! Responses use the request's content type, as the OTLP specification asks: an
//! `ExportTraceServiceResponse` (with `partial_success` when spans were refused) on
//! success, a `google.rpc.Status` on failure, with `Retry-After` on retryable errors.

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, DefaultBodyLimit, State},
    http::{header, HeaderMap},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use super::{
    authorization,
    body::RawBody,
    http::{decode_off_thread, error_response, ErrorFormat},
    otlp_json::decode_json,
    DecodeNotes, ExportOutcome, Ingest,
};
use crate::{metrics::Receiver, IngestError};

#[derive(Debug, Clone)]
struct HttpState {
    ingest: Ingest,
    max_request_bytes: usize,
}

/// The body encodings OTLP/HTTP allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn errors(self) -> ErrorFormat {
        match self {
            Self::Protobuf => ErrorFormat::Protobuf,
            Self::Json => ErrorFormat::Json,
        }
    }
}

/// The OTLP/HTTP routes, and `GET /metrics`.
pub fn router(ingest: Ingest, max_request_bytes: usize) -> Router {
    let metrics = crate::metrics::router(ingest.metrics().clone());
    Router::new()
        .route("/v1/traces", post(export_traces))
        .with_state(HttpState {
            ingest,
            max_request_bytes,
        })
        // Compressed bodies are limited here, decompressed ones in `decode_content`.
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .merge(metrics)
}

fn request_format(headers: &HeaderMap) -> Result<Format, IngestError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        _ => Err(IngestError::UnsupportedMedia(format!(
            "content type {content_type:?} is not supported (use application/x-protobuf or application/json)"
        ))),
    }
}

async fn export_traces(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let metrics = state.ingest.metrics();
    metrics.record_request(Receiver::OtlpHttp);
    let format = match request_format(&headers) {
        Ok(format) => format,
        Err(error) => {
            return error_response(metrics, Receiver::OtlpHttp, ErrorFormat::Json, &error)
        }
    };
    match handle(&state, &headers, format, body).await {
        Ok(outcome) => success_response(format, outcome),
        Err(error) => error_response(metrics, Receiver::OtlpHttp, format.errors(), &error),
    }
}

async fn handle(
    state: &HttpState,
    headers: &HeaderMap,
    format: Format,
    body: Result<Bytes, BytesRejection>,
) -> Result<ExportOutcome, IngestError> {
    let limit = state.max_request_bytes;
    let tenant = state.ingest.tenant_for(authorization(headers))?;
    let raw = RawBody::new(headers, body, limit)?;
    let decoding = state.ingest.reserve_decoding(raw.estimated_size()).await?;
    let (request, notes) = decode_off_thread(raw.estimated_size(), move || {
        decode_request(format, &raw.decode(limit)?)
    })
    .await?;
    drop(decoding);
    state.ingest.export(&tenant, request, notes).await
}

fn decode_request(
    format: Format,
    body: &[u8],
) -> Result<(ExportTraceServiceRequest, DecodeNotes), IngestError> {
    match format {
        Format::Protobuf => caracal_model::lenient::decode_export_request(body)
            .map(|decoded| {
                (
                    decoded.request,
                    DecodeNotes::invalid_utf8(decoded.num_invalid_utf8),
                )
            })
            .map_err(|error| IngestError::Malformed(format!("invalid protobuf: {error}"))),
        Format::Json => decode_json(body),
    }
}

fn success_response(format: Format, outcome: ExportOutcome) -> Response {
    let partial_success = outcome.into_partial_success();
    let response = ExportTraceServiceResponse { partial_success };
    match format {
        Format::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            response.encode_to_vec(),
        )
            .into_response(),
        Format::Json => {
            let body = serde_json::to_vec(&response).unwrap_or_else(|_| b"{}".to_vec());
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}

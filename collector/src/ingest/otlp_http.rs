//! OTLP/HTTP receiver: `POST /v1/traces` with protobuf or JSON bodies, optionally gzip.
//!
//! Responses use the request's content type, as the OTLP specification asks: an
//! `ExportTraceServiceResponse` (with `partial_success` when spans were refused) on
//! success, a `google.rpc.Status` on failure, with `Retry-After` on retryable errors.

use std::future::Future;

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, FailedToBufferBody},
        DefaultBodyLimit, State,
    },
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::net::TcpListener;

use super::{body::decode_content, ExportOutcome, Ingest, DEFAULT_TENANT};
use crate::{error::RETRY_AFTER_SECONDS, IngestError};

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

/// `google.rpc.Status`, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The OTLP/HTTP routes.
pub fn router(ingest: Ingest, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/v1/traces", post(export_traces))
        .with_state(HttpState {
            ingest,
            max_request_bytes,
        })
        // Compressed bodies are limited here, decompressed ones in `decode_content`.
        .layer(DefaultBodyLimit::max(max_request_bytes))
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
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
    let format = match request_format(&headers) {
        Ok(format) => format,
        Err(error) => return error_response(Format::Json, &error),
    };
    let body = match body {
        Ok(body) => body,
        Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            let limit = state.max_request_bytes;
            let error = IngestError::TooLarge {
                size: limit + 1,
                limit,
            };
            return error_response(format, &error);
        }
        Err(rejection) => {
            let error = IngestError::Malformed(format!("cannot read body: {rejection}"));
            return error_response(format, &error);
        }
    };
    match handle(&state, &headers, format, body).await {
        Ok(outcome) => success_response(format, outcome),
        Err(error) => error_response(format, &error),
    }
}

async fn handle(
    state: &HttpState,
    headers: &HeaderMap,
    format: Format,
    body: Bytes,
) -> Result<ExportOutcome, IngestError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok());
    let body = decode_content(encoding, body, state.max_request_bytes)?;
    let (request, num_invalid_utf8) = decode_request(format, &body)?;
    state
        .ingest
        .export(DEFAULT_TENANT, request, num_invalid_utf8)
        .await
}

fn decode_request(
    format: Format,
    body: &[u8],
) -> Result<(ExportTraceServiceRequest, u64), IngestError> {
    match format {
        Format::Protobuf => caracal_model::lenient::decode_export_request(body)
            .map(|decoded| (decoded.request, decoded.num_invalid_utf8))
            .map_err(|error| IngestError::Malformed(format!("invalid protobuf: {error}"))),
        Format::Json => serde_json::from_slice::<ExportTraceServiceRequest>(body)
            .map(|request| (request, 0))
            .map_err(|error| IngestError::Malformed(format!("invalid OTLP JSON: {error}"))),
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

fn error_response(format: Format, error: &IngestError) -> Response {
    let status = error.http_status();
    if status.is_server_error() {
        tracing::warn!(%error, "otlp/http request failed");
    } else {
        tracing::debug!(%error, "otlp/http request refused");
    }
    let rpc_status = RpcStatus {
        code: error.to_status().code() as i32,
        message: error.to_string(),
    };
    let mut response = match format {
        Format::Protobuf => (
            status,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            rpc_status.encode_to_vec(),
        )
            .into_response(),
        Format::Json => (
            status,
            axum::Json(serde_json::json!({"code": rpc_status.code, "message": rpc_status.message})),
        )
            .into_response(),
    };
    if error.is_retryable() || status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    response
}

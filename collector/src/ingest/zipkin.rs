//! Zipkin v2 receiver: `POST /api/v2/spans` with a JSON list of spans, as Zipkin's own
//! server takes them (Brave, zipkin-go, Envoy and OpenTelemetry's Zipkin exporters send
//! this), optionally gzip or zstd.
//!
//! The spans are converted to OTLP ([`decode`]) and go through [`Ingest::export`] like
//! OTLP's, so validation, partial rejection, batching, aggregates and dependency edges
//! all apply. The answer is Zipkin's `202 Accepted`, with a JSON body counting what was
//! stored and refused: `{"accepted": 5, "rejected": 1, "message": "rejected 1 spans: 1
//! invalid_span_id"}`. A body that is not a JSON array gets 400 and a JSON error; Zipkin's
//! protobuf and thrift encodings get 415.

pub mod decode;

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, DefaultBodyLimit, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};

use super::{
    authorization,
    body::RawBody,
    http::{decode_off_thread, error_response, ErrorFormat},
    ExportOutcome, Ingest,
};
use crate::{metrics::Receiver, IngestError};

/// The path Zipkin v2 reporters post to.
pub const SPANS_PATH: &str = "/api/v2/spans";

#[derive(Debug, Clone)]
struct ZipkinState {
    ingest: Ingest,
    max_request_bytes: usize,
}

/// The Zipkin routes.
pub fn router(ingest: Ingest, max_request_bytes: usize) -> Router {
    Router::new()
        .route(SPANS_PATH, post(receive_spans))
        .with_state(ZipkinState {
            ingest,
            max_request_bytes,
        })
        // Compressed bodies are limited here, decompressed ones in `decode_content`.
        .layer(DefaultBodyLimit::max(max_request_bytes))
}

async fn receive_spans(
    State(state): State<ZipkinState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let metrics = state.ingest.metrics();
    metrics.record_request(Receiver::Zipkin);
    match handle(&state, &headers, body).await {
        Ok(outcome) => (StatusCode::ACCEPTED, Json(outcome)).into_response(),
        Err(error) => error_response(metrics, Receiver::Zipkin, ErrorFormat::Json, &error),
    }
}

async fn handle(
    state: &ZipkinState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<ExportOutcome, IngestError> {
    check_content_type(headers)?;
    let tenant = state.ingest.tenant_for(authorization(headers))?;
    let limit = state.max_request_bytes;
    let raw = RawBody::new(headers, body, limit)?;
    let decoding = state.ingest.reserve_decoding(raw.estimated_size()).await?;
    let (request, notes) = decode_off_thread(raw.estimated_size(), move || {
        decode::decode_spans(&raw.decode(limit)?)
    })
    .await?;
    drop(decoding);
    state.ingest.export(&tenant, request, notes).await
}

/// Zipkin's server reads anything but its binary encodings as JSON; so does this one.
fn check_content_type(headers: &HeaderMap) -> Result<(), IngestError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.contains("protobuf") || content_type.contains("thrift") {
        return Err(IngestError::UnsupportedMedia(format!(
            "content type {content_type:?} is not supported (send Zipkin v2 JSON as application/json)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_binary_encodings_are_refused() {
        let check = |content_type: Option<&str>, expected_ok: bool| {
            let mut headers = HeaderMap::new();
            if let Some(content_type) = content_type {
                headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
            }
            assert_eq!(
                check_content_type(&headers).is_ok(),
                expected_ok,
                "{content_type:?}"
            );
        };
        check(None, true);
        check(Some("application/json"), true);
        check(Some("application/json; charset=utf-8"), true);
        check(Some("text/plain"), true);
        check(Some("application/x-protobuf"), false);
        check(Some("application/x-thrift"), false);
    }
}

//! What the HTTP receivers (OTLP/HTTP, Zipkin) share besides body decoding
//! ([`super::body`]): serving, running decoders off the async threads, and error
//! responses.
//!
//! Every refused request gets the status [`IngestError::http_status`] names, a
//! `google.rpc.Status` body (protobuf or JSON, as the request asked), `Retry-After` when
//! retrying may help, and one count in `caracal_refused_requests_total`.

use std::future::Future;

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Router,
};
use prost::Message;
use tokio::net::TcpListener;

use crate::{
    error::RETRY_AFTER_SECONDS,
    metrics::{CollectorMetrics, Receiver},
    IngestError,
};

/// Bodies at least this large are decompressed and decoded on the blocking pool, so a
/// large request never stalls the async threads (smaller ones take well under 500 µs).
pub const OFF_THREAD_DECODE_BYTES: usize = 64 * 1024;

/// How an error body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorFormat {
    /// A protobuf `google.rpc.Status`.
    Protobuf,
    /// The same as JSON: `{"code": <gRPC code>, "message": "..."}`.
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

/// Runs `decode` on the blocking pool when `num_bytes` is large, inline otherwise.
pub async fn decode_off_thread<T, F>(num_bytes: usize, decode: F) -> Result<T, IngestError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, IngestError> + Send + 'static,
{
    if num_bytes < OFF_THREAD_DECODE_BYTES {
        return decode();
    }
    match tokio::task::spawn_blocking(decode).await {
        Ok(result) => result,
        Err(error) => {
            tracing::error!(%error, "decoder task failed");
            Err(IngestError::Malformed("cannot decode body".into()))
        }
    }
}

/// The response to a request `receiver` refused with `error`, counted in `metrics`.
pub fn error_response(
    metrics: &CollectorMetrics,
    receiver: Receiver,
    format: ErrorFormat,
    error: &IngestError,
) -> Response {
    metrics.record_refused(receiver, error);
    let status = error.http_status();
    if status.is_server_error() {
        tracing::warn!(%error, receiver = receiver.label(), "request failed");
    } else {
        tracing::debug!(%error, receiver = receiver.label(), "request refused");
    }
    let rpc_status = RpcStatus {
        code: error.to_status().code() as i32,
        message: error.to_string(),
    };
    let mut response = match format {
        ErrorFormat::Protobuf => (
            status,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            rpc_status.encode_to_vec(),
        )
            .into_response(),
        ErrorFormat::Json => (
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn check(error: IngestError, status: u16, retry_after: bool, body: &str) {
        let metrics = CollectorMetrics::new();
        let response = error_response(&metrics, Receiver::Zipkin, ErrorFormat::Json, &error);
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(
            response.headers().contains_key(header::RETRY_AFTER),
            retry_after
        );
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), body);
        assert!(metrics.encode().contains(&format!(
            "caracal_refused_requests_total{{receiver=\"zipkin\",reason=\"{}\"}} 1",
            error.label()
        )));
    }

    #[tokio::test]
    async fn errors_map_to_statuses_bodies_and_counts() {
        check(
            IngestError::Malformed("invalid Zipkin JSON".into()),
            400,
            false,
            r#"{"code":3,"message":"malformed request: invalid Zipkin JSON"}"#,
        )
        .await;
        check(
            IngestError::TooLarge { size: 2, limit: 1 },
            413,
            false,
            r#"{"code":8,"message":"request of 2 bytes exceeds the limit of 1 bytes"}"#,
        )
        .await;
        check(
            IngestError::Overloaded,
            429,
            true,
            r#"{"code":8,"message":"collector overloaded, retry later"}"#,
        )
        .await;
        check(
            IngestError::StorageUnavailable,
            503,
            true,
            r#"{"code":14,"message":"storage unavailable, retry later"}"#,
        )
        .await;
    }

    #[tokio::test]
    async fn large_bodies_decode_on_the_blocking_pool() {
        let thread = |num_bytes| decode_off_thread(num_bytes, || Ok(std::thread::current().id()));
        let here = std::thread::current().id();
        assert_eq!(thread(10).await.unwrap(), here);
        assert_ne!(thread(OFF_THREAD_DECODE_BYTES).await.unwrap(), here);
    }
}

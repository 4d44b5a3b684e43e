//! Caracal's collector: receives spans, keeps bad input out, and writes in batches to
//! ClickHouse together with the RED aggregates and dependency edges computed from them.
//!
//! Layout:
//! - [`config`]: [`CollectorConfig`], the collector's part of Caracal's configuration.
//! - [`ingest`]: the receivers (OTLP/gRPC, OTLP/HTTP, Zipkin v2, the agent protocol) and
//!   the [`ingest::Ingest`] handle they share: validation, partial success, hand-off to
//!   the writer.
//! - [`sink`]: the batch writer task: flattens spans into rows, inserts with the
//!   clickhouse crate's `Inserter`, acknowledges requests once their rows are stored.
//! - [`aggregate`]: per-10-second RED aggregates and dependency edges from raw spans.
//! - [`metrics`]: [`CollectorMetrics`], the collector's own metrics, and `GET /metrics`.
//!
//! **Architecture invariant:** a request is acknowledged only after its spans are in
//! ClickHouse or in the durable spool; a batch neither takes fails its requests with a
//! retryable error.
//!
//! **Architecture invariant:** one bad span never costs the good spans of its request;
//! rejections are reported through OTLP `partial_success`.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod aggregate;
pub mod config;
pub mod error;
pub mod ingest;
pub mod metrics;
pub mod sink;

use std::future::Future;

pub use config::CollectorConfig;
pub use error::IngestError;
pub use metrics::CollectorMetrics;
use tokio::net::TcpListener;

/// The collector's listeners, bound by the caller (so tests can use port 0).
#[derive(Debug)]
pub struct Listeners {
    /// OTLP/gRPC and the agent protocol.
    pub otlp_grpc: TcpListener,
    /// OTLP/HTTP, and `GET /metrics`.
    pub otlp_http: TcpListener,
    /// Zipkin v2 JSON.
    pub zipkin: TcpListener,
}

/// Runs the collector until `shutdown` resolves, then drains in-memory batches.
///
/// `metrics` is created by the caller, so it can serve them elsewhere too
/// ([`metrics::router`]); the collector serves them on its OTLP/HTTP listener.
pub async fn run(
    config: CollectorConfig,
    store: caracal_store::Store,
    listeners: Listeners,
    metrics: CollectorMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tokens = config.ingest_tokens.clone();
    config.check_exposure().map_err(std::io::Error::other)?;
    let (ingest, writer) =
        sink::start(store.clone(), &config, &tokens, metrics).map_err(std::io::Error::other)?;
    let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
    let wait_stop = move || {
        let mut receiver = stop_receiver.clone();
        async move {
            let _ = receiver.wait_for(|stopped| *stopped).await;
        }
    };
    let grpc = tokio::spawn(ingest::otlp_grpc::serve(
        listeners.otlp_grpc,
        ingest.clone(),
        store,
        config.max_request_bytes,
        wait_stop(),
    ));
    let http = tokio::spawn(ingest::http::serve(
        listeners.otlp_http,
        ingest::otlp_http::router(ingest.clone(), config.max_request_bytes),
        wait_stop(),
    ));
    let zipkin = tokio::spawn(ingest::http::serve(
        listeners.zipkin,
        ingest::zipkin::router(ingest.clone(), config.max_request_bytes),
        wait_stop(),
    ));
    shutdown.await;
    let _ = stop_sender.send(true);
    let _ = grpc.await;
    let _ = http.await;
    let _ = zipkin.await;
    drop(ingest);
    let _ = writer.await;
    Ok(())
}

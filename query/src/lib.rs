//! Caracal's query service: the Jaeger query API v1, RED metrics, health, and the UI.
//!
//! Layout:
//! - [`config`]: the service's settings, [`QueryConfig`].
//! - [`api`]: the HTTP routes, one module per family, and their error type.
//! - [`duration`]: Go duration strings, as Jaeger's API takes them.
//!
//! **Architecture invariant:** query never writes spans; it only reads the store.
//!
//! **API boundary:** the JSON shapes of `/api/*` are Jaeger's (`{"data", "errors", ...}`)
//! so Grafana's Jaeger data source and the Jaeger UI work against Caracal unchanged.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod api;
pub mod config;
pub mod duration;

use std::future::Future;

use axum::Router;
pub use config::QueryConfig;
use tokio::net::TcpListener;

/// Shared state of every route.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The store to read.
    pub store: caracal_store::Store,
    /// Settings.
    pub config: QueryConfig,
}

/// The query service's routes, including the UI.
pub fn router(state: AppState) -> Router {
    api::router(state)
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

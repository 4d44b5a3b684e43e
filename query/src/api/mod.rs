//! HTTP routes.

pub mod error;
pub mod metrics;
pub mod services;
pub mod traces;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{Html, IntoResponse, Response},
    routing::get,
    Router,
};
use serde::Serialize;
use tower_http::services::ServeDir;

use crate::AppState;

/// The caller's tenant: from `Authorization: Bearer <token>` when query tokens are
/// configured (else 401), the default tenant when none are. Every data route takes
/// it, so no query reads another tenant's rows.
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

impl axum::extract::FromRequestParts<AppState> for Tenant {
    type Rejection = error::ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|value| value.as_bytes());
        let tenant = state.config.tokens.tenant_for(authorization)?;
        Ok(Self(tenant.to_owned()))
    }
}

impl std::ops::Deref for Tenant {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// Jaeger's response envelope.
#[derive(Debug, Serialize)]
pub struct Envelope<T: Serialize> {
    /// The payload.
    pub data: T,
    /// Number of items (Jaeger fills it for lists).
    pub total: usize,
    /// Always 0.
    pub limit: usize,
    /// Always 0.
    pub offset: usize,
    /// Errors; `null` on success.
    pub errors: Option<Vec<error::JaegerError>>,
}

impl<T: Serialize> Envelope<T> {
    /// A successful response carrying `data`.
    pub fn ok(data: T, total: usize) -> Self {
        Self {
            data,
            total,
            limit: 0,
            offset: 0,
            errors: None,
        }
    }
}

/// Every route of the query service.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/healthz", get(healthz))
        .route("/api/services", get(services::list_services))
        .route(
            "/api/services/{service}/operations",
            get(services::service_operations),
        )
        .route("/api/operations", get(services::operations))
        .route("/api/dependencies", get(services::dependencies))
        .route("/api/traces", get(traces::search))
        .route("/api/traces/{trace_id}", get(traces::get_trace))
        .route("/api/v1/metrics", get(metrics::metrics))
        .route("/api/v1/instances", get(metrics::instances))
        .with_state(state.clone());
    // Files of the built UI; any other path gets index.html (client-side routes), read
    // per request so a UI built after start is picked up.
    let ui_dir = state.config.ui_dir.clone();
    let index = get(move || ui_index(ui_dir.join("index.html")));
    api.fallback_service(ServeDir::new(&state.config.ui_dir).fallback(index))
}

async fn ui_index(path: std::path::PathBuf) -> Response {
    match tokio::fs::read(&path).await {
        Ok(page) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response(),
        Err(_) => Html(
            "<!doctype html><title>Caracal</title><h1>Caracal</h1>\
             <p>The web UI is not built. Run <code>scripts/build-ui.sh</code>, or use the API: \
             <a href=\"/api/services\">/api/services</a>.</p>",
        )
        .into_response(),
    }
}

/// 200 when ClickHouse answers and the schema is current, 503 otherwise.
async fn healthz(State(state): State<AppState>) -> Response {
    let check = async {
        state.store.ping().await?;
        state.store.check_schema().await
    };
    match check.await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {error}\n"),
        )
            .into_response(),
    }
}

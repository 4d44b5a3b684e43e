//! Services, operations and dependencies.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::{
    extract::{rejection::QueryRejection, Path, Query, State},
    Json,
};
use caracal_model::span::SpanKind;
use serde::{Deserialize, Serialize};

use super::{error::ApiError, Envelope, Tenant};
use crate::AppState;

/// `GET /api/services`: every service name.
pub async fn list_services(
    State(state): State<AppState>,
    tenant: Tenant,
) -> Result<Json<Envelope<Vec<String>>>, ApiError> {
    let services = state.store.services(&tenant).await?;
    let total = services.len();
    Ok(Json(Envelope::ok(services, total)))
}

/// `GET /api/services/{service}/operations`: operation names of a service.
pub async fn service_operations(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(service): Path<String>,
) -> Result<Json<Envelope<Vec<String>>>, ApiError> {
    let mut names: Vec<String> = state
        .store
        .operations(&tenant, &service, None)
        .await?
        .into_iter()
        .map(|operation| operation.operation)
        .collect();
    names.dedup();
    let total = names.len();
    Ok(Json(Envelope::ok(names, total)))
}

/// Parameters of `GET /api/operations`.
#[derive(Debug, Deserialize)]
pub struct OperationsParams {
    service: Option<String>,
    #[serde(rename = "spanKind")]
    span_kind: Option<String>,
}

/// One operation in Jaeger's shape.
#[derive(Debug, Serialize)]
pub struct OperationView {
    name: String,
    #[serde(rename = "spanKind")]
    span_kind: &'static str,
}

/// `GET /api/operations?service=&spanKind=`: operations with their span kind.
pub async fn operations(
    State(state): State<AppState>,
    tenant: Tenant,
    params: Result<Query<OperationsParams>, QueryRejection>,
) -> Result<Json<Envelope<Vec<OperationView>>>, ApiError> {
    let Query(params) = params?;
    let service = params
        .service
        .filter(|service| !service.is_empty())
        .ok_or_else(|| ApiError::BadRequest("parameter 'service' is required".into()))?;
    let kind = match params.span_kind.as_deref() {
        None | Some("") => None,
        Some(name) => Some(
            SpanKind::from_jaeger_name(name)
                .ok_or_else(|| ApiError::BadRequest(format!("unknown spanKind {name:?}")))?
                as u8,
        ),
    };
    let operations: Vec<OperationView> = state
        .store
        .operations(&tenant, &service, kind)
        .await?
        .into_iter()
        .map(|operation| OperationView {
            name: operation.operation,
            span_kind: SpanKind::from_otlp(i32::from(operation.kind)).jaeger_name(),
        })
        .collect();
    let total = operations.len();
    Ok(Json(Envelope::ok(operations, total)))
}

/// Parameters of `GET /api/dependencies`.
#[derive(Debug, Deserialize)]
pub struct DependenciesParams {
    #[serde(rename = "endTs")]
    end_ts: Option<u64>,
    lookback: Option<u64>,
}

/// One edge in Jaeger's shape, plus Caracal's extra fields.
#[derive(Debug, Serialize)]
pub struct DependencyView {
    parent: String,
    child: String,
    #[serde(rename = "callCount")]
    call_count: u64,
    #[serde(rename = "errorCount")]
    error_count: u64,
    #[serde(rename = "childType")]
    child_type: String,
}

/// Default dependency window: one day, in milliseconds.
const DEFAULT_LOOKBACK_MS: u64 = 86_400_000;

/// `GET /api/dependencies?endTs=&lookback=` (milliseconds): service call edges.
pub async fn dependencies(
    State(state): State<AppState>,
    tenant: Tenant,
    params: Result<Query<DependenciesParams>, QueryRejection>,
) -> Result<Json<Envelope<Vec<DependencyView>>>, ApiError> {
    let Query(params) = params?;
    let end_ms = params.end_ts.unwrap_or_else(now_ms);
    let lookback_ms = params.lookback.unwrap_or(DEFAULT_LOOKBACK_MS);
    let start = to_seconds(end_ms.saturating_sub(lookback_ms));
    let end = to_seconds(end_ms).saturating_add(1);
    let edges: Vec<DependencyView> = state
        .store
        .dependencies(&tenant, start, end)
        .await?
        .into_iter()
        .map(|edge| DependencyView {
            parent: edge.parent,
            child: edge.child,
            call_count: edge.calls,
            error_count: edge.errors,
            child_type: edge.child_type,
        })
        .collect();
    let total = edges.len();
    Ok(Json(Envelope::ok(edges, total)))
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Milliseconds to Unix seconds, clamped to what ClickHouse `DateTime` holds.
pub fn to_seconds(millis: u64) -> u32 {
    (millis / 1_000).min(u64::from(u32::MAX)) as u32
}

//! `GET /api/v1/metrics`: RED metrics with exact-merge percentiles, for a service or one
//! of its instances; `GET /api/v1/instances`: a service's instances.

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    Json,
};
use caracal_model::histogram::LatencyHistogram;
use caracal_store::reader::{InstanceSummary, MetricsFilter, MetricsPoint};
use serde::{Deserialize, Serialize};

use super::{
    error::ApiError,
    services::{now_ms, to_seconds},
    Tenant,
};
use crate::AppState;

/// Parameters: start and end in Unix milliseconds, step in seconds (a multiple of 10;
/// of 60 with `instance`, whose tables start at one-minute resolution).
#[derive(Debug, Deserialize)]
pub struct MetricsParams {
    service: Option<String>,
    /// One instance of the service (CAT's per-machine view).
    instance: Option<String>,
    operation: Option<String>,
    start: Option<u64>,
    end: Option<u64>,
    step: Option<u32>,
    #[serde(rename = "spanKind")]
    span_kind: Option<String>,
}

/// One step (or the whole window) of RED metrics.
#[derive(Debug, Serialize, PartialEq)]
pub struct MetricsView {
    /// Step start, Unix milliseconds.
    pub ts: u64,
    /// Spans.
    pub count: u64,
    /// Failed spans.
    pub errors: u64,
    /// Shortest, in microseconds.
    pub min_us: f64,
    /// Mean, in microseconds.
    pub avg_us: f64,
    /// Longest, in microseconds.
    pub max_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 95th percentile.
    pub p95_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
}

/// The response.
#[derive(Debug, Serialize)]
pub struct MetricsResponse {
    /// One entry per step that has data.
    pub series: Vec<MetricsView>,
    /// The whole window.
    pub total: MetricsView,
}

/// Default step when none is given, in seconds.
const DEFAULT_STEP_SECONDS: u32 = 60;

/// Merged numbers of several points.
#[derive(Debug, Default)]
struct Merged {
    count: u64,
    errors: u64,
    sum_ns: u64,
    min_ns: u64,
    max_ns: u64,
    histogram: LatencyHistogram,
}

impl Merged {
    fn add(&mut self, point: &MetricsPoint) {
        if point.count == 0 {
            return;
        }
        self.min_ns = if self.count == 0 {
            point.min_ns
        } else {
            self.min_ns.min(point.min_ns)
        };
        self.max_ns = self.max_ns.max(point.max_ns);
        self.count += point.count;
        self.errors += point.errors;
        self.sum_ns = self.sum_ns.saturating_add(point.sum_ns);
        for (key, count) in point.hist_keys.iter().zip(&point.hist_counts) {
            self.histogram.record_bucket(*key, *count);
        }
    }

    fn view(&self, ts_ms: u64) -> MetricsView {
        let micros = |nanos: u64| nanos as f64 / 1_000.0;
        let quantile = |q: f64| micros(self.histogram.quantile(q));
        MetricsView {
            ts: ts_ms,
            count: self.count,
            errors: self.errors,
            min_us: micros(self.min_ns),
            avg_us: if self.count == 0 {
                0.0
            } else {
                micros(self.sum_ns) / self.count as f64
            },
            max_us: micros(self.max_ns),
            p50_us: quantile(0.5),
            p90_us: quantile(0.9),
            p95_us: quantile(0.95),
            p99_us: quantile(0.99),
            p999_us: quantile(0.999),
        }
    }
}

/// The `service` parameter, which must be given and not empty.
fn required_service(service: Option<String>) -> Result<String, ApiError> {
    service
        .filter(|service| !service.is_empty())
        .ok_or_else(|| ApiError::BadRequest("parameter 'service' is required".into()))
}

/// `GET /api/v1/metrics?service=&instance=&operation=&start=&end=&step=`.
pub async fn metrics(
    State(state): State<AppState>,
    tenant: Tenant,
    params: Result<Query<MetricsParams>, QueryRejection>,
) -> Result<Json<MetricsResponse>, ApiError> {
    let Query(params) = params?;
    let service = required_service(params.service)?;
    let (Some(start_ms), Some(end_ms)) = (params.start, params.end) else {
        return Err(ApiError::BadRequest(
            "parameters 'start' and 'end' (Unix ms) are required".into(),
        ));
    };
    if start_ms >= end_ms {
        return Err(ApiError::BadRequest("'start' must be before 'end'".into()));
    }
    let kind = match params.span_kind.as_deref() {
        None | Some("") => None,
        Some(name) => Some(
            caracal_model::span::SpanKind::from_jaeger_name(name)
                .ok_or_else(|| ApiError::BadRequest(format!("unknown spanKind {name:?}")))?
                as u8,
        ),
    };
    let filter = MetricsFilter {
        service: &service,
        instance: params.instance.as_deref().filter(|name| !name.is_empty()),
        operation: params.operation.as_deref().filter(|op| !op.is_empty()),
        kind,
    };
    // Per-instance rows are kept by the minute, a service's by 10 seconds.
    let bucket = filter.finest_step();
    let step = params.step.unwrap_or(DEFAULT_STEP_SECONDS);
    if step == 0 || step % bucket != 0 {
        let detail = if filter.instance.is_some() {
            " with 'instance'"
        } else {
            ""
        };
        return Err(ApiError::BadRequest(format!(
            "'step' must be a positive multiple of {bucket} seconds{detail}"
        )));
    }
    // A bucket that starts before `start` is included whole, so windows need no alignment.
    let start = to_seconds(start_ms) / bucket * bucket;
    let end = to_seconds(end_ms.saturating_add(999));
    let points = state
        .store
        .span_metrics(&tenant, &filter, (start, end, step))
        .await?;
    let mut total = Merged::default();
    let series = points
        .iter()
        .map(|point| {
            total.add(point);
            let mut one = Merged::default();
            one.add(point);
            one.view(u64::from(point.ts) * 1_000)
        })
        .collect();
    Ok(Json(MetricsResponse {
        series,
        total: total.view(start_ms),
    }))
}

/// Parameters of `GET /api/v1/instances`: start and end in Unix milliseconds, by default
/// the last hour.
#[derive(Debug, Deserialize)]
pub struct InstancesParams {
    service: Option<String>,
    start: Option<u64>,
    end: Option<u64>,
}

/// The response of `GET /api/v1/instances`.
#[derive(Debug, Serialize)]
pub struct InstancesResponse {
    /// Each named instance with its spans and failed spans in the window, by name.
    pub instances: Vec<InstanceSummary>,
}

/// Default window of `GET /api/v1/instances`: one hour, in milliseconds.
const DEFAULT_INSTANCES_WINDOW_MS: u64 = 3_600_000;

/// `GET /api/v1/instances?service=&start=&end=`: the instances of a service (CAT's
/// machine list), for `instance=` of `/api/v1/metrics`.
pub async fn instances(
    State(state): State<AppState>,
    tenant: Tenant,
    params: Result<Query<InstancesParams>, QueryRejection>,
) -> Result<Json<InstancesResponse>, ApiError> {
    let Query(params) = params?;
    let service = required_service(params.service)?;
    let end_ms = params.end.unwrap_or_else(now_ms);
    let start_ms = params
        .start
        .unwrap_or(end_ms.saturating_sub(DEFAULT_INSTANCES_WINDOW_MS));
    if start_ms >= end_ms {
        return Err(ApiError::BadRequest("'start' must be before 'end'".into()));
    }
    let window = (to_seconds(start_ms), to_seconds(end_ms.saturating_add(999)));
    let instances = state.store.instances(&tenant, &service, window).await?;
    Ok(Json(InstancesResponse { instances }))
}

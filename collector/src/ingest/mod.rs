//! Receivers and the shared ingest path.
//!
//! Every receiver decodes its protocol into an OTLP `ExportTraceServiceRequest`, then
//! calls [`Ingest::export`], which validates, hands the request to the writer and waits
//! until its spans are stored.
//!
//! Layout:
//! - [`otlp_grpc`], [`otlp_http`], [`zipkin`], [`agent`]: one receiver per protocol.
//! - [`http`], [`body`]: what the HTTP receivers share (body limits, content encodings,
//!   error responses).
//! - [`validate`]: per-span validation and the partial-success message.

pub mod agent;
pub mod body;
pub mod http;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod otlp_json;
pub mod validate;
pub mod zipkin;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest,
};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

pub use self::validate::DecodeNotes;
use crate::{metrics::CollectorMetrics, sink::spool::SpoolUsage, IngestError};

use caracal_model::tenant::TokenTable;
pub use caracal_model::tenant::DEFAULT_TENANT;

/// How long a request may wait for room in the writer queue before it is refused.
const ENQUEUE_TIMEOUT: Duration = Duration::from_millis(500);

/// The memory bound is counted in units of this many bytes.
const MEMORY_UNIT_BYTES: u64 = 1024;

/// How long a request may wait for its turn to be decoded before it is refused.
const DECODE_WAIT: Duration = Duration::from_secs(5);

/// A request's share of the memory bound, held until it is answered.
pub type MemoryPermit = OwnedSemaphorePermit;

/// What the ingest path checks before handing a request to the writer.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Spans starting further in the future are refused.
    pub max_future_skew: Duration,
    /// Attribute count and length limits.
    pub attribute_limits: validate::AttributeLimits,
    /// Larger requests are refused.
    pub max_spans_per_request: usize,
    /// Bound on the protobuf size of requests held by the writer.
    pub max_memory_bytes: u64,
    /// Bound on the request bytes being decoded at once (decoded spans can take up to
    /// about 130 times their wire size for adversarial input, 3 for real spans).
    pub max_decoding_bytes: u64,
    /// The spool's size, when there is one: requests are refused while it is full.
    pub spool: Option<SpoolUsage>,
    /// Ingest tokens; empty means one open default tenant.
    pub tokens: TokenTable,
}

/// A validated request on its way to the writer.
#[derive(Debug)]
pub struct WriteRequest {
    /// Owner of the spans.
    pub tenant: String,
    /// Spans, all valid.
    pub request: ExportTraceServiceRequest,
    /// Number of spans in `request`.
    pub num_spans: usize,
    /// Whether the spans count in RED aggregates and dependency edges (false for spans
    /// an agent already counted in its own aggregates).
    pub count_in_aggregates: bool,
    /// Told once the spans are stored (or not).
    pub ack: oneshot::Sender<Result<(), IngestError>>,
    /// The request's share of the memory bound.
    pub permit: MemoryPermit,
}

/// What happened to an accepted request (also the body of Zipkin's `202 Accepted`).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExportOutcome {
    /// Spans stored.
    pub accepted: u64,
    /// Spans refused, with the reasons in `message`.
    pub rejected: u64,
    /// Why spans were refused or repaired; empty when all is well.
    pub message: String,
}

impl ExportOutcome {
    /// OTLP `partial_success`: set when spans were refused or repaired.
    pub fn into_partial_success(self) -> Option<ExportTracePartialSuccess> {
        let is_partial = self.rejected > 0 || !self.message.is_empty();
        is_partial.then_some(ExportTracePartialSuccess {
            rejected_spans: self.rejected as i64,
            error_message: self.message,
        })
    }
}

/// The shared ingest path: cheap to clone, one per receiver.
#[derive(Debug, Clone)]
pub struct Ingest {
    queue: mpsc::Sender<WriteRequest>,
    settings: Arc<IngestSettings>,
    /// Units of the memory bound not held by any request.
    memory: Budget,
    /// Units of the decoding bound not held by any request being decoded.
    decoding: Budget,
    metrics: CollectorMetrics,
}

impl Ingest {
    /// An ingest path feeding `queue`, counting in `metrics`.
    pub fn new(
        queue: mpsc::Sender<WriteRequest>,
        settings: IngestSettings,
        metrics: CollectorMetrics,
    ) -> Self {
        Self {
            queue,
            memory: Budget::new(settings.max_memory_bytes),
            decoding: Budget::new(settings.max_decoding_bytes),
            settings: Arc::new(settings),
            metrics,
        }
    }

    /// Reserves `request`'s share of the memory bound, waiting a little for room.
    async fn reserve_memory(
        &self,
        request: &ExportTraceServiceRequest,
    ) -> Result<MemoryPermit, IngestError> {
        self.memory
            .reserve(request.encoded_len() as u64, ENQUEUE_TIMEOUT)
            .await
    }

    /// Reserves room to decode a body of about `num_bytes`; hold the permit while
    /// decoding, so what decoding allocates stays bounded whatever the input.
    pub async fn reserve_decoding(&self, num_bytes: usize) -> Result<MemoryPermit, IngestError> {
        self.decoding.reserve(num_bytes as u64, DECODE_WAIT).await
    }

    /// The metrics every receiver counts in.
    pub fn metrics(&self) -> &CollectorMetrics {
        &self.metrics
    }

    /// The tenant of a request with this `Authorization` header (or gRPC
    /// `authorization` metadata) value.
    pub fn tenant_for(&self, authorization: Option<&[u8]>) -> Result<String, IngestError> {
        Ok(self.settings.tokens.tenant_for(authorization)?.to_owned())
    }

    /// The latest span start or agent bucket accepted: now plus the allowed clock skew,
    /// Unix nanoseconds.
    pub fn max_accepted_time_ns(&self) -> u64 {
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        now_ns.saturating_add(self.settings.max_future_skew.as_nanos() as u64)
    }

    /// Validates, stores and reports on one export request; `notes` carry what the
    /// decoder already repaired or refused.
    pub async fn export(
        &self,
        tenant: &str,
        request: ExportTraceServiceRequest,
        notes: DecodeNotes,
    ) -> Result<ExportOutcome, IngestError> {
        self.export_spans(tenant, request, notes, true).await
    }

    /// Like [`Ingest::export`], choosing whether the spans count in aggregates.
    pub async fn export_spans(
        &self,
        tenant: &str,
        mut request: ExportTraceServiceRequest,
        notes: DecodeNotes,
        count_in_aggregates: bool,
    ) -> Result<ExportOutcome, IngestError> {
        let num_spans = count_spans(&request);
        if num_spans > self.settings.max_spans_per_request {
            return Err(IngestError::TooManySpans {
                count: num_spans,
                limit: self.settings.max_spans_per_request,
            });
        }
        if self
            .settings
            .spool
            .as_ref()
            .is_some_and(SpoolUsage::is_full)
        {
            return Err(IngestError::SpoolFull);
        }
        let mut report = validate::validate(
            &mut request,
            self.max_accepted_time_ns(),
            &self.settings.attribute_limits,
        );
        report.add_malformed(&notes);
        self.metrics.record_validated(&report, &notes);
        let outcome = ExportOutcome {
            accepted: report.num_accepted as u64,
            rejected: report.num_rejected(),
            message: report.message(&notes),
        };
        if report.num_accepted == 0 {
            return Ok(outcome);
        }
        let permit = self.reserve_memory(&request).await?;
        let (ack, stored) = oneshot::channel();
        let write = WriteRequest {
            tenant: tenant.to_owned(),
            request,
            num_spans: report.num_accepted,
            count_in_aggregates,
            ack,
            permit,
        };
        // Counted before sending, so the writer's decrement never comes first.
        self.metrics.queue_entered();
        let refused = match tokio::time::timeout(ENQUEUE_TIMEOUT, self.queue.send(write)).await {
            Ok(Ok(())) => None,
            Err(_elapsed) => Some(IngestError::Overloaded),
            Ok(Err(_closed)) => Some(IngestError::ShuttingDown),
        };
        if let Some(error) = refused {
            self.metrics.queue_left();
            return Err(error);
        }
        match stored.await {
            Ok(Ok(())) => {
                self.metrics.record_accepted(outcome.accepted);
                Ok(outcome)
            }
            Ok(Err(error)) => Err(error),
            Err(_dropped) => Err(IngestError::ShuttingDown),
        }
    }
}

/// Spans in a request.
pub fn count_spans(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|resource_spans| &resource_spans.scope_spans)
        .map(|scope_spans| scope_spans.spans.len())
        .sum()
}

/// The `authorization` metadata of a gRPC request, as bytes.
pub fn grpc_authorization(metadata: &tonic::metadata::MetadataMap) -> Option<&[u8]> {
    metadata.get("authorization").map(|value| value.as_bytes())
}

/// The `Authorization` header of an HTTP request, as bytes.
pub fn authorization(headers: &axum::http::HeaderMap) -> Option<&[u8]> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .map(|value| value.as_bytes())
}

/// A bound in bytes, counted in [`MEMORY_UNIT_BYTES`] units.
#[derive(Debug, Clone)]
struct Budget {
    units: Arc<Semaphore>,
    total_units: u32,
}

impl Budget {
    fn new(max_bytes: u64) -> Self {
        let total_units = (max_bytes / MEMORY_UNIT_BYTES).clamp(1, u64::from(u32::MAX >> 3)) as u32;
        Self {
            units: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
        }
    }

    /// Takes `num_bytes` of the budget (all of it, at most), waiting up to `wait`.
    async fn reserve(&self, num_bytes: u64, wait: Duration) -> Result<MemoryPermit, IngestError> {
        let units = num_bytes
            .div_ceil(MEMORY_UNIT_BYTES)
            .clamp(1, u64::from(self.total_units)) as u32;
        let acquire = self.units.clone().acquire_many_owned(units);
        match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(IngestError::ShuttingDown),
            Err(_elapsed) => Err(IngestError::Overloaded),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_budget_refuses_beyond_its_bound_and_frees_on_drop() {
        let budget = Budget::new(64 * 1024);
        let wait = Duration::from_millis(50);
        let first = budget.reserve(48 * 1024, wait).await.unwrap();
        assert!(matches!(
            budget.reserve(32 * 1024, wait).await,
            Err(IngestError::Overloaded)
        ));
        // Larger than the whole bound: waits for all of it.
        assert!(budget.reserve(1 << 30, wait).await.is_err());
        drop(first);
        let whole = budget.reserve(1 << 30, wait).await.unwrap();
        assert_eq!(whole.num_permits(), 64);
    }
}

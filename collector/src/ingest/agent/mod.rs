//! The agent receiver: `caracal.agent.v1.AgentService/Report` on the OTLP/gRPC port.
//!
//! An agent's aggregates go to the same input tables as the collector's own (merged in
//! ClickHouse with every other host's data for the bucket); client aggregates naming a
//! peer become dependency edges; kept spans go through the normal span path but are not
//! counted again; events, metrics and heartbeats go to their own tables. A report seen
//! again (same instance and sequence, after a retry) is acknowledged without storing.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use caracal_proto::{AgentReport, ReportResponse, REPORT_PATH, SERVICE_NAME};
use caracal_store::Store;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tonic::{
    body::Body,
    codegen::{http, BoxFuture, Service, StdError},
    server::{NamedService, UnaryService},
    Status,
};

use self::rows::{refuse_invalid_rows, ReportRows};
use super::{DecodeNotes, Ingest};
use crate::{
    metrics::{InsertTable, Receiver},
    IngestError,
};

pub mod rows;

/// Sequences remembered per agent instance for duplicate detection.
const REMEMBERED_SEQUENCES: usize = 64;
/// Agent instances remembered; beyond this the table starts over.
const REMEMBERED_INSTANCES: usize = 100_000;

/// Recently stored reports, by instance.
#[derive(Debug, Default)]
struct SeenReports {
    by_instance: HashMap<String, VecDeque<u64>>,
}

impl SeenReports {
    fn contains(&self, instance: &str, sequence: u64) -> bool {
        self.by_instance
            .get(instance)
            .is_some_and(|sequences| sequences.contains(&sequence))
    }

    fn insert(&mut self, instance: &str, sequence: u64) {
        if self.by_instance.len() >= REMEMBERED_INSTANCES
            && !self.by_instance.contains_key(instance)
        {
            self.by_instance.clear();
        }
        let sequences = self.by_instance.entry(instance.to_owned()).or_default();
        if sequences.len() == REMEMBERED_SEQUENCES {
            sequences.pop_front();
        }
        sequences.push_back(sequence);
    }
}

/// The agent report service.
#[derive(Debug, Clone)]
pub struct AgentReportService {
    ingest: Ingest,
    store: Store,
    max_request_bytes: usize,
    seen: Arc<Mutex<SeenReports>>,
}

impl AgentReportService {
    /// A service storing through `ingest` (kept spans) and `store` (everything else).
    pub fn new(ingest: Ingest, store: Store, max_request_bytes: usize) -> Self {
        Self {
            ingest,
            store,
            max_request_bytes,
            seen: Arc::default(),
        }
    }

    fn already_stored(&self, instance: &str, report: &AgentReport) -> bool {
        self.seen
            .lock()
            .is_ok_and(|seen| seen.contains(instance, report.sequence))
    }

    fn remember(&self, instance: &str, report: &AgentReport) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(instance, report.sequence);
        }
    }

    /// Stores one report of `tenant`.
    pub async fn store_report(
        &self,
        tenant: &str,
        mut report: AgentReport,
    ) -> Result<ReportResponse, Status> {
        // Instances are remembered per tenant: one tenant cannot mask another's reports.
        let instance = format!("{tenant}/{}", report.instance);
        if self.already_stored(&instance, &report) {
            return Ok(ReportResponse {
                stored: false,
                ..ReportResponse::default()
            });
        }
        let max_time_s = self.ingest.max_accepted_time_ns() / 1_000_000_000;
        let validation = refuse_invalid_rows(&mut report, max_time_s);
        let mut response = ReportResponse {
            stored: true,
            rejected: validation.num_rejected(),
            error_message: validation.message(),
        };
        if !report.kept_spans.is_empty() {
            let spans = ExportTraceServiceRequest {
                resource_spans: std::mem::take(&mut report.kept_spans),
            };
            let outcome = self
                .ingest
                .export_spans(tenant, spans, DecodeNotes::default(), false)
                .await
                .map_err(|error| {
                    self.ingest
                        .metrics()
                        .record_refused(Receiver::Agent, &error);
                    error.to_status()
                })?;
            response.rejected += outcome.rejected;
            if !outcome.message.is_empty() {
                if !response.error_message.is_empty() {
                    response.error_message.push_str("; ");
                }
                response.error_message.push_str(&outcome.message);
            }
        }
        let rows = ReportRows::from_report(tenant, &report);
        let stored = async {
            self.store
                .insert_rows("span_metrics_input", &rows.metrics)
                .await?;
            self.store
                .insert_rows("dependency_input", &rows.edges)
                .await?;
            self.store.insert_rows("agent_events", &rows.events).await?;
            self.store
                .insert_rows("agent_metrics", &rows.metric_values)
                .await?;
            self.store
                .insert_rows("agent_heartbeats", &rows.heartbeats)
                .await
        };
        if let Err(error) = stored.await {
            tracing::warn!(%error, instance = %report.instance, "cannot store agent report");
            let metrics = self.ingest.metrics();
            metrics.record_insert_error(InsertTable::Agent);
            metrics.record_refused(Receiver::Agent, &IngestError::StorageUnavailable);
            return Err(IngestError::StorageUnavailable.to_status());
        }
        // Counted once stored: a report refused for now is sent again, and its bad rows
        // with it.
        self.ingest.metrics().record_rejected_rows(&validation);
        self.remember(&instance, &report);
        Ok(response)
    }
}

impl NamedService for AgentReportService {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for AgentReportService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != REPORT_PATH {
            return Box::pin(
                async move { Ok(Status::unimplemented("unknown method").into_http()) },
            );
        }
        let service = self.clone();
        let metrics = service.ingest.metrics().clone();
        let limit = service.max_request_bytes;
        let codec = tonic_prost::ProstCodec::<ReportResponse, AgentReport>::default();
        Box::pin(super::otlp_grpc::unary_call(
            codec,
            ReportHandler(service),
            request,
            metrics,
            Receiver::Agent,
            limit,
        ))
    }
}

struct ReportHandler(AgentReportService);

impl UnaryService<AgentReport> for ReportHandler {
    type Response = ReportResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, Status>;

    fn call(&mut self, request: tonic::Request<AgentReport>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            let tenant = service
                .ingest
                .tenant_for(super::grpc_authorization(request.metadata()))
                .map_err(|error| {
                    service
                        .ingest
                        .metrics()
                        .record_refused(Receiver::Agent, &error);
                    error.to_status()
                })?;
            service
                .store_report(&tenant, request.into_inner())
                .await
                .map(tonic::Response::new)
        })
    }
}

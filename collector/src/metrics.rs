//! Self-monitoring: the collector's own metrics, served as `GET /metrics` in the
//! Prometheus (OpenMetrics) text format.
//!
//! Naming rules (after vector's instrumentation spec):
//! - Every name MUST start with `caracal_` and MUST read `<namespace>_<name>_<unit>`, with
//!   `_total` after it for counters (`caracal_received_spans_total`).
//! - Dimensions MUST be labels with a small, closed set of values (`receiver`, `reason`,
//!   `table`), never ids, service names or other user input.
//! - Handles MUST be registered once, in [`CollectorMetrics::new`]; hot paths SHOULD
//!   update them once per request or batch, never once per span.
//! - Series with a label SHOULD be created at registration, so they show at 0 from the
//!   first scrape; only `caracal_refused_requests_total` (receiver × reason) is created on
//!   first use.
//!
//! [`CollectorMetrics`] is cheap to clone (an [`Arc`] inside) and shared by the receivers,
//! the ingest path and the writer. The caller of [`crate::run`] creates it, so the same
//! registry can also be served on another address ([`router`]), as `caracal up` does on
//! the query service's.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::{Registry, Unit},
};

use crate::{
    ingest::{
        agent::rows::{RowRejectReason, RowValidation},
        validate::{DecodeNotes, RejectReason, ValidationReport},
    },
    IngestError,
};

/// The content type of the OpenMetrics text format, which Prometheus scrapes natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A receiver, as the `receiver` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Receiver {
    /// OTLP over gRPC.
    OtlpGrpc,
    /// OTLP over HTTP.
    OtlpHttp,
    /// Zipkin v2 JSON over HTTP.
    Zipkin,
    /// The Caracal agent protocol (gRPC).
    Agent,
}

impl Receiver {
    /// Every receiver, in label order.
    pub const ALL: [Self; 4] = [Self::OtlpGrpc, Self::OtlpHttp, Self::Zipkin, Self::Agent];

    /// Stable label, used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::OtlpGrpc => "otlp_grpc",
            Self::OtlpHttp => "otlp_http",
            Self::Zipkin => "zipkin",
            Self::Agent => "agent",
        }
    }
}

/// A table the collector inserts into, as the `table` label of insert errors names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InsertTable {
    /// `spans` and `spans_by_trace`, written together.
    Spans,
    /// `span_metrics_input`.
    SpanMetrics,
    /// `dependency_input`.
    Dependencies,
    /// The agent tables (aggregates, events, metrics, heartbeats of one report).
    Agent,
}

impl InsertTable {
    const ALL: [Self; 4] = [
        Self::Spans,
        Self::SpanMetrics,
        Self::Dependencies,
        Self::Agent,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Spans => "spans",
            Self::SpanMetrics => "span_metrics",
            Self::Dependencies => "dependencies",
            Self::Agent => "agent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReceiverLabels {
    receiver: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusedLabels {
    receiver: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TableLabels {
    table: &'static str,
}

/// The collector's metric handles and the registry holding them.
#[derive(Debug, Clone)]
pub struct CollectorMetrics {
    inner: Arc<Handles>,
}

#[derive(Debug)]
struct Handles {
    registry: Registry,
    received_spans: Counter,
    accepted_spans: Counter,
    /// Indexed like [`RejectReason::ALL`].
    rejected_spans: Vec<Counter>,
    /// Indexed like [`RowRejectReason::ALL`].
    rejected_agent_rows: Vec<Counter>,
    /// Indexed like [`Receiver::ALL`].
    requests: Vec<Counter>,
    refused_requests: Family<RefusedLabels, Counter>,
    /// Indexed like [`InsertTable::ALL`].
    insert_errors: Vec<Counter>,
    inserted_rows: Counter,
    insert_duration: Histogram,
    batch_rows: Histogram,
    queue_depth: Gauge,
    inserts_in_flight: Gauge,
    spooled_spans: Counter,
    replayed_spans: Counter,
    /// Indexed like [`SPOOL_ERRORS`].
    spool_errors: Vec<Counter>,
    spool_bytes: Gauge,
    spool_batches: Gauge,
    /// Indexed like [`REPAIRS`].
    repairs: Vec<Counter>,
}

/// What the collector mends instead of refusing, as the `repair` label of
/// `caracal_repaired_total` names it: keys and values cut to the length limit,
/// attributes dropped over the count limit, spans ending before they start (stored with
/// duration 0), strings with invalid UTF-8 (replaced with U+FFFD).
pub const REPAIRS: [&str; 4] = [
    "truncated_attribute",
    "dropped_attribute",
    "negative_duration",
    "invalid_utf8",
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RepairLabels {
    repair: &'static str,
}

/// Spool troubles, as the `reason` label of `caracal_spool_errors_total` names them.
pub const SPOOL_ERRORS: [&str; 3] = ["full", "io", "corrupt"];

/// One handle per label value of `family`, resolved up front, so every series shows (at
/// 0) from the first scrape and updates take no lock.
fn labelled<L, T>(
    family: &Family<L, Counter>,
    values: &[T],
    labels: impl Fn(T) -> L,
) -> Vec<Counter>
where
    L: Clone + std::hash::Hash + Eq,
    T: Copy,
{
    values
        .iter()
        .map(|value| family.get_or_create_owned(&labels(*value)))
        .collect()
}

/// The handle of `value`, `handles` being indexed like `all`.
fn counter_for<'a, T: PartialEq>(
    handles: &'a [Counter],
    all: &[T],
    value: &T,
) -> Option<&'a Counter> {
    all.iter()
        .position(|candidate| candidate == value)
        .and_then(|index| handles.get(index))
}

impl CollectorMetrics {
    /// Registers every metric, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("caracal");
        let spans = Unit::Other("spans".into());
        let requests = Unit::Other("requests".into());
        let rows = Unit::Other("rows".into());

        let received_spans = Counter::default();
        registry.register_with_unit(
            "received",
            "Spans decoded from requests, valid or not",
            spans.clone(),
            received_spans.clone(),
        );
        let accepted_spans = Counter::default();
        registry.register_with_unit(
            "accepted",
            "Spans stored in ClickHouse and acknowledged",
            spans.clone(),
            accepted_spans.clone(),
        );
        let rejected_family = Family::<ReasonLabels, Counter>::default();
        registry.register_with_unit(
            "rejected",
            "Spans refused one by one, by reason",
            spans,
            rejected_family.clone(),
        );
        let rejected_spans = labelled(&rejected_family, &RejectReason::ALL, |reason| {
            ReasonLabels {
                reason: reason.label(),
            }
        });
        let rejected_rows_family = Family::<ReasonLabels, Counter>::default();
        registry.register_with_unit(
            "agent_rejected",
            "Rows of agent reports (aggregates, events, metrics, heartbeats) refused one by one, by reason",
            rows.clone(),
            rejected_rows_family.clone(),
        );
        let rejected_agent_rows =
            labelled(&rejected_rows_family, &RowRejectReason::ALL, |reason| {
                ReasonLabels {
                    reason: reason.label(),
                }
            });
        let requests_family = Family::<ReceiverLabels, Counter>::default();
        registry.register_with_unit(
            "received",
            "Requests received, by receiver",
            requests.clone(),
            requests_family.clone(),
        );
        let request_counters = labelled(&requests_family, &Receiver::ALL, |receiver| {
            ReceiverLabels {
                receiver: receiver.label(),
            }
        });
        let refused_requests = Family::<RefusedLabels, Counter>::default();
        registry.register_with_unit(
            "refused",
            "Requests refused as a whole, by receiver and reason",
            requests,
            refused_requests.clone(),
        );
        let errors_family = Family::<TableLabels, Counter>::default();
        registry.register(
            "clickhouse_insert_errors",
            "Inserts ClickHouse did not accept, by table",
            errors_family.clone(),
        );
        let insert_errors = labelled(&errors_family, &InsertTable::ALL, |table| TableLabels {
            table: table.label(),
        });
        let inserted_rows = Counter::default();
        registry.register_with_unit(
            "inserted",
            "Span rows ClickHouse accepted",
            rows.clone(),
            inserted_rows.clone(),
        );
        // 1 ms to about 33 s.
        let insert_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register_with_unit(
            "insert_duration",
            "Time from cutting a span batch to ClickHouse confirming it",
            Unit::Seconds,
            insert_duration.clone(),
        );
        // 1 to about 1 million rows.
        let batch_rows = Histogram::new(exponential_buckets(1.0, 4.0, 11));
        registry.register_with_unit(
            "batch_size",
            "Span rows per insert",
            rows,
            batch_rows.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register_with_unit(
            "writer_queue_depth",
            "Validated requests waiting for the writer",
            Unit::Other("requests".into()),
            queue_depth.clone(),
        );
        let inserts_in_flight = Gauge::default();
        registry.register(
            "inserts_in_flight",
            "Span inserts being finished by ClickHouse",
            inserts_in_flight.clone(),
        );
        let spooled_spans = Counter::default();
        registry.register_with_unit(
            "spooled",
            "Spans written to the spool because ClickHouse did not take them (or while the spool held older spans)",
            Unit::Other("spans".into()),
            spooled_spans.clone(),
        );
        let replayed_spans = Counter::default();
        registry.register_with_unit(
            "replayed",
            "Spooled spans inserted into ClickHouse",
            Unit::Other("spans".into()),
            replayed_spans.clone(),
        );
        let spool_errors_family = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "spool_errors",
            "Batches the spool could not take (full, io) or gave back damaged (corrupt)",
            spool_errors_family.clone(),
        );
        let spool_errors = labelled(&spool_errors_family, &SPOOL_ERRORS, |reason| ReasonLabels {
            reason,
        });
        let repairs_family = Family::<RepairLabels, Counter>::default();
        registry.register(
            "repaired",
            "Things mended in accepted spans instead of refusing them, by repair",
            repairs_family.clone(),
        );
        let repairs = labelled(&repairs_family, &REPAIRS, |repair| RepairLabels { repair });
        let spool_bytes = Gauge::default();
        registry.register_with_unit(
            "spool",
            "Bytes of batches waiting in the spool",
            Unit::Bytes,
            spool_bytes.clone(),
        );
        let spool_batches = Gauge::default();
        registry.register(
            "spool_batches",
            "Batches waiting in the spool",
            spool_batches.clone(),
        );
        Self {
            inner: Arc::new(Handles {
                registry,
                received_spans,
                accepted_spans,
                rejected_spans,
                rejected_agent_rows,
                requests: request_counters,
                refused_requests,
                insert_errors,
                inserted_rows,
                insert_duration,
                batch_rows,
                queue_depth,
                inserts_in_flight,
                spooled_spans,
                replayed_spans,
                spool_errors,
                spool_bytes,
                spool_batches,
                repairs,
            }),
        }
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        if let Err(error) = encode(&mut text, &self.inner.registry) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        text
    }

    /// Counts one request reaching `receiver`.
    pub fn record_request(&self, receiver: Receiver) {
        if let Some(counter) = counter_for(&self.inner.requests, &Receiver::ALL, &receiver) {
            counter.inc();
        }
    }

    /// Counts one request refused as a whole.
    pub fn record_refused(&self, receiver: Receiver, error: &IngestError) {
        self.inner
            .refused_requests
            .get_or_create(&RefusedLabels {
                receiver: receiver.label(),
                reason: error.label(),
            })
            .inc();
    }

    /// Counts the spans of one validated request: `num_accepted` valid ones and the
    /// refused ones by reason.
    pub fn record_validated(&self, report: &ValidationReport, notes: &DecodeNotes) {
        let repairs = [
            report.num_truncated,
            report.num_attributes_dropped,
            report.num_negative_durations,
            notes.num_invalid_utf8,
        ];
        for (counter, count) in self.inner.repairs.iter().zip(repairs) {
            counter.inc_by(count);
        }
        let mut num_received = report.num_accepted as u64;
        for (reason, count) in &report.rejected {
            num_received += count;
            if let Some(counter) =
                counter_for(&self.inner.rejected_spans, &RejectReason::ALL, reason)
            {
                counter.inc_by(*count);
            }
        }
        self.inner.received_spans.inc_by(num_received);
    }

    /// Counts the rows of an agent report refused one by one.
    pub fn record_rejected_rows(&self, validation: &RowValidation) {
        for (reason, count) in &validation.rejected {
            if let Some(counter) = counter_for(
                &self.inner.rejected_agent_rows,
                &RowRejectReason::ALL,
                reason,
            ) {
                counter.inc_by(*count);
            }
        }
    }

    /// Counts spans stored and acknowledged.
    pub fn record_accepted(&self, num_spans: u64) {
        self.inner.accepted_spans.inc_by(num_spans);
    }

    /// A request entered the writer queue (or is about to).
    pub fn queue_entered(&self) {
        self.inner.queue_depth.inc();
    }

    /// A request left the writer queue (taken by the writer, or never enqueued).
    pub fn queue_left(&self) {
        self.inner.queue_depth.dec();
    }

    /// Records a span batch handed to ClickHouse.
    pub fn record_batch(&self, num_rows: u64) {
        self.inner.batch_rows.observe(num_rows as f64);
    }

    /// Records a finished span insert: its duration, and its rows when it succeeded.
    pub fn record_insert(&self, elapsed: Duration, stored_rows: Option<u64>) {
        self.inner.insert_duration.observe(elapsed.as_secs_f64());
        match stored_rows {
            Some(rows) => {
                self.inner.inserted_rows.inc_by(rows);
            }
            None => self.record_insert_error(InsertTable::Spans),
        }
    }

    /// Counts an insert ClickHouse did not take.
    pub fn record_insert_error(&self, table: InsertTable) {
        if let Some(counter) = counter_for(&self.inner.insert_errors, &InsertTable::ALL, &table) {
            counter.inc();
        }
    }

    /// Counts spans written to the spool.
    pub fn record_spooled(&self, num_spans: u64) {
        self.inner.spooled_spans.inc_by(num_spans);
    }

    /// Counts spooled spans ClickHouse took.
    pub fn record_replayed(&self, num_spans: u64) {
        self.inner.replayed_spans.inc_by(num_spans);
    }

    /// Counts a spool trouble, `reason` one of [`SPOOL_ERRORS`].
    pub fn record_spool_error(&self, reason: &'static str) {
        if let Some(counter) = counter_for(&self.inner.spool_errors, &SPOOL_ERRORS, &reason) {
            counter.inc();
        }
    }

    /// Sets the spool's size.
    pub fn set_spool_size(&self, bytes: u64, num_batches: usize) {
        self.inner
            .spool_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.inner
            .spool_batches
            .set(i64::try_from(num_batches).unwrap_or(i64::MAX));
    }

    /// Sets the number of span inserts in flight.
    pub fn set_inserts_in_flight(&self, num_inserts: usize) {
        self.inner
            .inserts_in_flight
            .set(i64::try_from(num_inserts).unwrap_or(i64::MAX));
    }
}

impl Default for CollectorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `GET /metrics`, serving `metrics`; merge it into any router.
pub fn router(metrics: CollectorMetrics) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<CollectorMetrics>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample named `name` with exactly `labels`, from the text format.
    fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
        let series = if labels.is_empty() {
            name.to_owned()
        } else {
            format!("{name}{{{labels}}}")
        };
        text.lines().find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == series).then(|| value.parse().ok()).flatten()
        })
    }

    #[test]
    fn names_follow_the_convention_and_values_add_up() {
        let metrics = CollectorMetrics::new();
        metrics.record_request(Receiver::Zipkin);
        metrics.record_request(Receiver::Zipkin);
        let rejected = [
            (RejectReason::InvalidTraceId, 2),
            (RejectReason::MalformedSpan, 1),
        ]
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>();
        let report = ValidationReport {
            num_accepted: 5,
            rejected,
            num_truncated: 3,
            ..ValidationReport::default()
        };
        metrics.record_validated(&report, &DecodeNotes::invalid_utf8(2));
        metrics.record_accepted(5);
        metrics.record_refused(Receiver::OtlpHttp, &IngestError::Malformed("x".into()));
        metrics.record_batch(5);
        metrics.record_insert(Duration::from_millis(3), Some(5));
        metrics.record_insert(Duration::from_millis(3), None);
        metrics.queue_entered();
        metrics.set_inserts_in_flight(2);

        let text = metrics.encode();
        let check = |name: &str, labels: &str, expected: f64| {
            assert_eq!(
                sample(&text, name, labels),
                Some(expected),
                "{name}{{{labels}}} in\n{text}"
            );
        };
        check("caracal_received_spans_total", "", 8.0);
        check("caracal_accepted_spans_total", "", 5.0);
        check(
            "caracal_rejected_spans_total",
            "reason=\"invalid_trace_id\"",
            2.0,
        );
        check(
            "caracal_rejected_spans_total",
            "reason=\"malformed_span\"",
            1.0,
        );
        check(
            "caracal_rejected_spans_total",
            "reason=\"invalid_span_id\"",
            0.0,
        );
        check(
            "caracal_received_requests_total",
            "receiver=\"zipkin\"",
            2.0,
        );
        check("caracal_received_requests_total", "receiver=\"agent\"", 0.0);
        check(
            "caracal_refused_requests_total",
            "receiver=\"otlp_http\",reason=\"malformed\"",
            1.0,
        );
        check(
            "caracal_clickhouse_insert_errors_total",
            "table=\"spans\"",
            1.0,
        );
        check("caracal_inserted_rows_total", "", 5.0);
        check(
            "caracal_repaired_total",
            "repair=\"truncated_attribute\"",
            3.0,
        );
        check("caracal_repaired_total", "repair=\"invalid_utf8\"", 2.0);
        check(
            "caracal_repaired_total",
            "repair=\"dropped_attribute\"",
            0.0,
        );
        check("caracal_insert_duration_seconds_count", "", 2.0);
        check("caracal_batch_size_rows_count", "", 1.0);
        check("caracal_batch_size_rows_bucket", "le=\"16.0\"", 1.0);
        check("caracal_writer_queue_depth_requests", "", 1.0);
        check("caracal_inserts_in_flight", "", 2.0);
        assert!(text.ends_with("# EOF\n"));
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            assert!(line.starts_with("caracal_"), "{line}");
        }
    }
}

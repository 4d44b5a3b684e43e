//! The batch writer task.
//!
//! It owns the current `spans` and `spans_by_trace` inserters and writes each request's
//! spans into both (flattened rows for search, span blobs for trace by id). When the
//! batch is full (rows, bytes) or old enough (period), the inserter is handed to a
//! background task that ends the insert, and a fresh one takes new requests, so
//! serializing the next batch overlaps with ClickHouse storing the previous one (at most
//! [`MAX_INSERTS_IN_FLIGHT`]). The requests of a batch are acknowledged once ClickHouse
//! has accepted it; its aggregates are applied only then, and written to the aggregate
//! input tables on their own period.
//!
//! Metrics are updated per request taken from the queue and per batch: batch size when
//! a batch is cut, insert duration and rows (or an error) when it is finished.

use std::time::{Duration, Instant};

use caracal_model::{
    blob::SpanBlobEncoder,
    bucket::unix_seconds,
    span::{SpanKind, StatusCode},
};
use caracal_store::{
    clickhouse::inserter::Inserter,
    rows::{DependencyRow, SpanMetricsRow, SpanRow, TraceSpanRow},
    Store,
};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinSet,
};

use super::flatten::{remote_target, Flattener};
use crate::{
    aggregate::{Aggregator, SpanSample},
    ingest::WriteRequest,
    metrics::{CollectorMetrics, InsertTable},
    CollectorConfig, IngestError,
};

/// Aggregate rows kept for retry when ClickHouse is down; beyond this the oldest go.
const MAX_RETAINED_AGGREGATE_ROWS: usize = 1_000_000;

/// Inserts being finished in the background while the next batch fills.
pub const MAX_INSERTS_IN_FLIGHT: usize = 2;

type Ack = oneshot::Sender<Result<(), IngestError>>;

/// A finished insert and the requests riding on it.
struct InsertOutcome {
    /// Span rows stored, or why not.
    result: Result<u64, caracal_store::clickhouse::error::Error>,
    /// From cutting the batch to ClickHouse's answer.
    elapsed: Duration,
    acks: Vec<Ack>,
    samples: Vec<SpanSample>,
}

/// The writer task's state.
pub struct Writer {
    store: Store,
    inserter: Inserter<SpanRow<'static>>,
    /// The same batch as span blobs for `spans_by_trace`.
    trace_inserter: Inserter<TraceSpanRow<'static>>,
    blobs: SpanBlobEncoder,
    max_rows: u64,
    max_bytes: u64,
    period: Duration,
    aggregate_period: Duration,
    /// Requests whose rows are in the current insert.
    pending_acks: Vec<Ack>,
    /// Inserts being ended in the background.
    in_flight: JoinSet<InsertOutcome>,
    /// Samples of the current insert, applied on success.
    pending_samples: Vec<SpanSample>,
    aggregator: Aggregator,
    unsent_metrics: Vec<SpanMetricsRow>,
    unsent_edges: Vec<DependencyRow>,
    /// The aggregate write in progress; it hands back the rows it could not write.
    aggregate_flush: Option<tokio::task::JoinHandle<AggregateRows>>,
    metrics: CollectorMetrics,
}

/// Aggregate rows not yet written.
type AggregateRows = (Vec<SpanMetricsRow>, Vec<DependencyRow>);

impl std::fmt::Debug for Writer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Writer")
            .field("pending_requests", &self.pending_acks.len())
            .finish_non_exhaustive()
    }
}

fn span_id_number(bytes: &[u8]) -> u64 {
    bytes.try_into().map_or(0, u64::from_be_bytes)
}

impl Writer {
    /// A writer for `store`, counting in `metrics`.
    pub fn new(store: Store, config: &CollectorConfig, metrics: CollectorMetrics) -> Self {
        let period = Duration::from_millis(config.batch_period_ms.max(1));
        let mut writer = Self {
            inserter: new_inserter(
                &store,
                config.batch_max_rows,
                config.batch_max_bytes,
                period,
            ),
            trace_inserter: new_trace_inserter(&store),
            blobs: SpanBlobEncoder::default(),
            store,
            max_rows: config.batch_max_rows,
            max_bytes: config.batch_max_bytes,
            period,
            aggregate_period: Duration::from_millis(config.aggregate_flush_ms.max(100)),
            pending_acks: Vec::new(),
            in_flight: JoinSet::new(),
            pending_samples: Vec::new(),
            aggregator: Aggregator::default(),
            unsent_metrics: Vec::new(),
            unsent_edges: Vec::new(),
            aggregate_flush: None,
            metrics,
        };
        writer.pending_samples.reserve(1024);
        writer
    }

    /// Runs until every sender is dropped, then commits and flushes what it holds.
    pub async fn run(mut self, mut requests: mpsc::Receiver<WriteRequest>) {
        let mut aggregate_tick = tokio::time::interval(self.aggregate_period);
        aggregate_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let time_left = self.inserter.time_left().unwrap_or(self.period);
            tokio::select! {
                biased;
                Some(finished) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    self.finish(finished);
                }
                message = requests.recv() => match message {
                    Some(request) => {
                        self.metrics.queue_left();
                        self.write(request).await;
                        if self.batch_is_due() {
                            self.send_batch().await;
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep(time_left), if !self.pending_acks.is_empty() => {
                    self.send_batch().await;
                }
                _ = aggregate_tick.tick() => self.flush_aggregates(false).await,
            }
        }
        self.send_batch().await;
        while let Some(finished) = self.in_flight.join_next().await {
            self.finish(finished);
        }
        self.flush_aggregates(true).await;
    }

    fn batch_is_due(&mut self) -> bool {
        let pending = self.inserter.pending();
        pending.rows >= self.max_rows
            || pending.bytes >= self.max_bytes
            || self.inserter.time_left().is_some_and(|left| left.is_zero())
    }

    /// Hands the current insert to a background task and starts a new one.
    async fn send_batch(&mut self) {
        if self.pending_acks.is_empty() {
            return;
        }
        while self.in_flight.len() >= MAX_INSERTS_IN_FLIGHT {
            match self.in_flight.join_next().await {
                Some(finished) => self.finish(finished),
                None => break,
            }
        }
        let fresh = new_inserter(&self.store, self.max_rows, self.max_bytes, self.period);
        let inserter = std::mem::replace(&mut self.inserter, fresh);
        let trace_inserter =
            std::mem::replace(&mut self.trace_inserter, new_trace_inserter(&self.store));
        let acks = std::mem::take(&mut self.pending_acks);
        let samples = std::mem::replace(&mut self.pending_samples, Vec::with_capacity(1024));
        self.metrics.record_batch(inserter.pending().rows);
        self.in_flight.spawn(async move {
            let started = Instant::now();
            let (spans, traces) = tokio::join!(inserter.end(), trace_inserter.end());
            let result = match (spans, traces) {
                (Ok(quantities), Ok(_)) => Ok(quantities.rows),
                (Err(error), _) | (_, Err(error)) => Err(error),
            };
            InsertOutcome {
                result,
                elapsed: started.elapsed(),
                acks,
                samples,
            }
        });
        self.metrics.set_inserts_in_flight(self.in_flight.len());
    }

    /// Acknowledges the requests of a finished insert and counts its spans.
    fn finish(&mut self, finished: Result<InsertOutcome, tokio::task::JoinError>) {
        self.metrics.set_inserts_in_flight(self.in_flight.len());
        let Ok(outcome) = finished else {
            tracing::error!("insert task failed");
            return;
        };
        let stored_rows = outcome.result.as_ref().ok().copied();
        self.metrics.record_insert(outcome.elapsed, stored_rows);
        match outcome.result {
            Ok(_rows) => {
                for sample in &outcome.samples {
                    self.aggregator.apply(sample);
                }
                for ack in outcome.acks {
                    let _ = ack.send(Ok(()));
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot insert spans into clickhouse");
                for ack in outcome.acks {
                    let _ = ack.send(Err(IngestError::StorageUnavailable));
                }
            }
        }
    }

    async fn write(&mut self, request: WriteRequest) {
        let WriteRequest {
            tenant,
            request,
            ack,
            count_in_aggregates,
            ..
        } = request;
        let tenant_id = self.aggregator.interner.intern(&tenant);
        let mut flattener = Flattener::default();
        let mut result = Ok(());
        'outer: for resource_spans in &request.resource_spans {
            flattener.set_resource(resource_spans);
            self.blobs.set_resource(resource_spans);
            let service = self.aggregator.interner.intern(flattener.service_name());
            for scope_spans in &resource_spans.scope_spans {
                flattener.set_scope(scope_spans.scope.as_ref());
                self.blobs.set_scope(scope_spans);
                for span in &scope_spans.spans {
                    let row = flattener.row(&tenant, span);
                    let trace_row = TraceSpanRow {
                        tenant: &tenant,
                        trace_id: row.trace_id,
                        start: unix_seconds(span.start_time_unix_nano),
                        start_ns: span.start_time_unix_nano,
                        span: self.blobs.encode(span),
                    };
                    let written = match self.inserter.write(&row).await {
                        Ok(()) => self.trace_inserter.write(&trace_row).await,
                        Err(error) => Err(error),
                    };
                    if let Err(error) = written {
                        result = Err(error);
                        break 'outer;
                    }
                    if !count_in_aggregates {
                        continue;
                    }
                    let interner = &mut self.aggregator.interner;
                    self.pending_samples.push(SpanSample {
                        tenant: tenant_id,
                        service,
                        operation: interner.intern(&span.name),
                        kind: SpanKind::from_otlp(span.kind),
                        status: StatusCode::from_otlp(
                            span.status.as_ref().map_or(0, |status| status.code),
                        ),
                        start_ns: span.start_time_unix_nano,
                        duration_ns: span
                            .end_time_unix_nano
                            .saturating_sub(span.start_time_unix_nano),
                        span_id: span_id_number(&span.span_id),
                        parent_span_id: span_id_number(&span.parent_span_id),
                        remote: remote_target(span)
                            .map(|(child_type, name)| (child_type, interner.intern(name))),
                    });
                }
            }
        }
        self.pending_acks.push(ack);
        if let Err(error) = result {
            tracing::warn!(%error, "cannot write spans to clickhouse");
            self.metrics.record_insert_error(InsertTable::Spans);
            self.fail_pending();
        }
    }

    /// Fails every request of the current insert and starts a fresh one.
    fn fail_pending(&mut self) {
        for ack in self.pending_acks.drain(..) {
            let _ = ack.send(Err(IngestError::StorageUnavailable));
        }
        self.pending_samples.clear();
        self.inserter = new_inserter(&self.store, self.max_rows, self.max_bytes, self.period);
        self.trace_inserter = new_trace_inserter(&self.store);
    }

    /// Drains the aggregator and writes its rows in the background, one flush at a
    /// time; rows that fail are kept (bounded) and retried with the next flush.
    async fn flush_aggregates(&mut self, is_final: bool) {
        if let Some(flush) = self.aggregate_flush.take() {
            if !flush.is_finished() && !is_final {
                self.aggregate_flush = Some(flush);
                return;
            }
            self.finish_aggregate_flush(flush.await);
        }
        let (metrics, edges) = self.aggregator.drain(is_final);
        self.unsent_metrics.extend(metrics);
        self.unsent_edges.extend(edges);
        if self.unsent_metrics.is_empty() && self.unsent_edges.is_empty() {
            return;
        }
        let store = self.store.clone();
        let counters = self.metrics.clone();
        let metrics = std::mem::take(&mut self.unsent_metrics);
        let edges = std::mem::take(&mut self.unsent_edges);
        let flush = tokio::spawn(async move {
            let metrics_result = store.insert_rows("span_metrics_input", &metrics).await;
            let metrics = match metrics_result {
                Ok(()) => Vec::new(),
                Err(error) => {
                    tracing::warn!(%error, rows = metrics.len(), "cannot write span metrics, will retry");
                    counters.record_insert_error(InsertTable::SpanMetrics);
                    metrics
                }
            };
            let edges = match store.insert_rows("dependency_input", &edges).await {
                Ok(()) => Vec::new(),
                Err(error) => {
                    tracing::warn!(%error, rows = edges.len(), "cannot write dependencies, will retry");
                    counters.record_insert_error(InsertTable::Dependencies);
                    edges
                }
            };
            (metrics, edges)
        });
        if is_final {
            self.finish_aggregate_flush(flush.await);
        } else {
            self.aggregate_flush = Some(flush);
        }
    }

    fn finish_aggregate_flush(&mut self, finished: Result<AggregateRows, tokio::task::JoinError>) {
        if let Ok((mut metrics, mut edges)) = finished {
            metrics.append(&mut self.unsent_metrics);
            edges.append(&mut self.unsent_edges);
            trim_oldest(&mut metrics);
            trim_oldest(&mut edges);
            self.unsent_metrics = metrics;
            self.unsent_edges = edges;
        }
    }
}

fn trim_oldest<T>(rows: &mut Vec<T>) {
    if rows.len() > MAX_RETAINED_AGGREGATE_ROWS {
        let excess = rows.len() - MAX_RETAINED_AGGREGATE_ROWS;
        tracing::warn!(
            dropped = excess,
            "aggregate retry buffer full, dropping oldest rows"
        );
        rows.drain(..excess);
    }
}

fn new_inserter(
    store: &Store,
    max_rows: u64,
    max_bytes: u64,
    period: Duration,
) -> Inserter<SpanRow<'static>> {
    store
        .client()
        .inserter::<SpanRow<'static>>("spans")
        .with_max_rows(max_rows)
        .with_max_bytes(max_bytes)
        .with_period(Some(period))
}

/// The `spans_by_trace` inserter; its batches are cut together with the `spans` one.
fn new_trace_inserter(store: &Store) -> Inserter<TraceSpanRow<'static>> {
    store
        .client()
        .inserter::<TraceSpanRow<'static>>("spans_by_trace")
}

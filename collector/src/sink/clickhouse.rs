//! The batch writer task.
//!
//! It owns the current [`Batch`]: a `spans` and a `spans_by_trace` inserter that each
//! request's spans are written into (flattened rows for search, span blobs for trace by
//! id). When the batch is full (rows, bytes) or old enough (period), it is handed to a
//! background task that ends the insert, and a fresh one takes new requests, so
//! serializing the next batch overlaps with ClickHouse storing the previous one (at most
//! [`MAX_INSERTS_IN_FLIGHT`]). A batch's aggregates are applied only once ClickHouse
//! has its spans, and written to the aggregate input tables on their own period.
//!
//! With a [`Spool`], a batch ClickHouse does not take (error or timeout) is written to
//! the spool, and its requests are acknowledged once it is there. While the spool holds
//! anything, new batches go straight to the spool behind it (keeping the order), and
//! the writer replays the oldest spooled batches, one insert at a time, backing off
//! while ClickHouse still fails. Replayed spans go through the same flattening and
//! aggregation as direct ones. Without a spool, a failed batch fails its requests with
//! a retryable error and the clients' retries are the durability.
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

use super::{
    flatten::{remote_target, Flattener},
    spool::{Spool, SpoolError, SpoolFile, SpooledRequest},
};
use crate::{
    aggregate::{Aggregator, SpanSample},
    ingest::{count_spans, MemoryPermit, WriteRequest},
    metrics::{CollectorMetrics, InsertTable},
    CollectorConfig, IngestError,
};

/// Aggregate rows kept for retry when ClickHouse is down; beyond this the oldest go.
const MAX_RETAINED_AGGREGATE_ROWS: usize = 1_000_000;

/// Inserts being finished in the background while the next batch fills.
pub const MAX_INSERTS_IN_FLIGHT: usize = 2;

/// First wait before replaying again after a failed replay; doubles up to the maximum.
const REPLAY_BACKOFF_MIN: Duration = Duration::from_millis(500);
const REPLAY_BACKOFF_MAX: Duration = Duration::from_secs(10);

type Ack = oneshot::Sender<Result<(), IngestError>>;

/// One insert into `spans` and `spans_by_trace`, and what rides on it.
struct Batch {
    spans: Inserter<SpanRow<'static>>,
    traces: Inserter<TraceSpanRow<'static>>,
    riders: Riders,
}

/// What rides on a batch's insert.
#[derive(Default)]
struct Riders {
    /// Whether the batch goes to ClickHouse; a batch started while the spool holds
    /// data goes to the spool behind it, without rows.
    direct: bool,
    acks: Vec<Ack>,
    /// The requests' share of the memory bound, released once they are answered.
    permits: Vec<MemoryPermit>,
    /// Aggregate samples, applied once the spans are stored.
    samples: Vec<SpanSample>,
    /// The requests, kept (when there is a spool) to be spooled if ClickHouse fails.
    requests: Vec<SpooledRequest>,
    /// Spooled batches this insert replays; deleted once it is stored.
    replayed: Vec<SpoolFile>,
    num_spans: u64,
}

impl Riders {
    fn is_empty(&self) -> bool {
        self.acks.is_empty() && self.replayed.is_empty()
    }
}

/// A finished insert and what rode on it.
struct InsertOutcome {
    /// Span rows stored, or why not.
    result: Result<u64, caracal_store::clickhouse::error::Error>,
    /// From cutting the batch to ClickHouse's answer.
    elapsed: Duration,
    riders: Riders,
}

/// The writer task's state.
pub struct Writer {
    store: Store,
    batch: Batch,
    blobs: SpanBlobEncoder,
    max_rows: u64,
    max_bytes: u64,
    period: Duration,
    insert_timeout: Duration,
    aggregate_period: Duration,
    /// Inserts being ended in the background.
    in_flight: JoinSet<InsertOutcome>,
    spool: Option<Spool>,
    /// Whether a replay insert is in flight.
    replaying: bool,
    /// When the next replay may start, and the wait after the next failure.
    replay_at: tokio::time::Instant,
    replay_backoff: Duration,
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
            .field("pending_requests", &self.batch.riders.acks.len())
            .field("spool", &self.spool)
            .finish_non_exhaustive()
    }
}

fn span_id_number(bytes: &[u8]) -> u64 {
    bytes.try_into().map_or(0, u64::from_be_bytes)
}

impl Writer {
    /// A writer for `store`, spooling to `spool` when ClickHouse fails, counting in
    /// `metrics`.
    pub fn new(
        store: Store,
        config: &CollectorConfig,
        spool: Option<Spool>,
        metrics: CollectorMetrics,
    ) -> Self {
        let period = Duration::from_millis(config.batch_period_ms.max(1));
        let mut writer = Self {
            batch: Batch {
                spans: store.client().inserter("spans"),
                traces: store.client().inserter("spans_by_trace"),
                riders: Riders::default(),
            },
            blobs: SpanBlobEncoder::default(),
            store,
            max_rows: config.batch_max_rows,
            max_bytes: config.batch_max_bytes,
            period,
            insert_timeout: Duration::from_millis(config.insert_timeout_ms.max(1)),
            aggregate_period: Duration::from_millis(config.aggregate_flush_ms.max(100)),
            in_flight: JoinSet::new(),
            spool,
            replaying: false,
            replay_at: tokio::time::Instant::now(),
            replay_backoff: REPLAY_BACKOFF_MIN,
            aggregator: Aggregator::default(),
            unsent_metrics: Vec::new(),
            unsent_edges: Vec::new(),
            aggregate_flush: None,
            metrics,
        };
        writer.batch = writer.new_batch(true);
        writer.publish_spool_size();
        writer
    }

    fn new_batch(&self, direct: bool) -> Batch {
        let timeouts = (Some(self.insert_timeout), Some(self.insert_timeout));
        Batch {
            spans: self
                .store
                .client()
                .inserter::<SpanRow<'static>>("spans")
                .with_max_rows(self.max_rows)
                .with_max_bytes(self.max_bytes)
                .with_period(Some(self.period))
                .with_timeouts(timeouts.0, timeouts.1),
            traces: self
                .store
                .client()
                .inserter::<TraceSpanRow<'static>>("spans_by_trace")
                .with_timeouts(timeouts.0, timeouts.1),
            riders: Riders {
                direct,
                samples: Vec::with_capacity(if direct { 1024 } else { 0 }),
                ..Riders::default()
            },
        }
    }

    fn spool_is_empty(&self) -> bool {
        self.spool.as_ref().is_none_or(Spool::is_empty)
    }

    /// Runs until every sender is dropped, then commits and flushes what it holds;
    /// what ClickHouse does not take then stays in the spool for the next start.
    pub async fn run(mut self, mut requests: mpsc::Receiver<WriteRequest>) {
        let mut aggregate_tick = tokio::time::interval(self.aggregate_period);
        aggregate_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let time_left = self.batch.spans.time_left().unwrap_or(self.period);
            let replay_wanted = !self.replaying && !self.spool_is_empty();
            tokio::select! {
                biased;
                Some(finished) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    self.finish(finished).await;
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
                _ = tokio::time::sleep(time_left), if !self.batch.riders.is_empty() => {
                    self.send_batch().await;
                }
                _ = tokio::time::sleep_until(self.replay_at), if replay_wanted => {
                    self.replay().await;
                }
                _ = aggregate_tick.tick() => self.flush_aggregates(false).await,
            }
        }
        self.send_batch().await;
        while let Some(finished) = self.in_flight.join_next().await {
            self.finish(finished).await;
        }
        self.flush_aggregates(true).await;
    }

    fn batch_is_due(&mut self) -> bool {
        let pending = self.batch.spans.pending();
        pending.rows >= self.max_rows
            || pending.bytes >= self.max_bytes
            || self
                .batch
                .spans
                .time_left()
                .is_some_and(|left| left.is_zero())
    }

    /// Hands the current batch to ClickHouse (a background insert) or to the spool, and
    /// starts a new one.
    async fn send_batch(&mut self) {
        if self.batch.riders.is_empty() {
            return;
        }
        let direct = self.spool_is_empty();
        let fresh = self.new_batch(direct);
        let batch = std::mem::replace(&mut self.batch, fresh);
        if batch.riders.direct {
            self.insert(batch).await;
        } else {
            self.spool_batch(batch.riders).await;
        }
    }

    /// Ends `batch`'s insert in the background.
    async fn insert(&mut self, batch: Batch) {
        while self.in_flight.len() >= MAX_INSERTS_IN_FLIGHT {
            match self.in_flight.join_next().await {
                Some(finished) => self.finish(finished).await,
                None => break,
            }
        }
        self.metrics.record_batch(batch.spans.pending().rows);
        let Batch {
            spans,
            traces,
            riders,
        } = batch;
        self.in_flight.spawn(async move {
            let started = Instant::now();
            let (spans, traces) = tokio::join!(spans.end(), traces.end());
            let result = match (spans, traces) {
                (Ok(quantities), Ok(_)) => Ok(quantities.rows),
                (Err(error), _) | (_, Err(error)) => Err(error),
            };
            InsertOutcome {
                result,
                elapsed: started.elapsed(),
                riders,
            }
        });
        self.metrics.set_inserts_in_flight(self.in_flight.len());
    }

    /// Acknowledges the requests of a finished insert and counts its spans, or spools
    /// them if ClickHouse did not take them.
    async fn finish(&mut self, finished: Result<InsertOutcome, tokio::task::JoinError>) {
        self.metrics.set_inserts_in_flight(self.in_flight.len());
        let Ok(outcome) = finished else {
            tracing::error!("insert task failed");
            return;
        };
        let stored_rows = outcome.result.as_ref().ok().copied();
        self.metrics.record_insert(outcome.elapsed, stored_rows);
        let mut riders = outcome.riders;
        let is_replay = !riders.replayed.is_empty();
        match outcome.result {
            Ok(_rows) => {
                for sample in &riders.samples {
                    self.aggregator.apply(sample);
                }
                for ack in riders.acks.drain(..) {
                    let _ = ack.send(Ok(()));
                }
                if is_replay {
                    self.finish_replay(&riders).await;
                }
            }
            Err(error) if is_replay => {
                tracing::warn!(%error, retry_in = ?self.replay_backoff, "cannot replay spooled spans into clickhouse");
                self.replaying = false;
                self.back_off_replay();
            }
            Err(error) => {
                tracing::warn!(%error, "cannot insert spans into clickhouse");
                self.spool_batch(riders).await;
            }
        }
    }

    async fn finish_replay(&mut self, riders: &Riders) {
        self.replaying = false;
        self.replay_backoff = REPLAY_BACKOFF_MIN;
        self.metrics.record_replayed(riders.num_spans);
        if let Some(spool) = self.spool.as_mut() {
            if let Err(error) = spool.remove(&riders.replayed).await {
                tracing::error!(%error, "cannot delete replayed spool batches");
            }
        }
        self.publish_spool_size();
    }

    fn back_off_replay(&mut self) {
        self.replay_at = tokio::time::Instant::now() + self.replay_backoff;
        self.replay_backoff = (self.replay_backoff * 2).min(REPLAY_BACKOFF_MAX);
    }

    /// Writes a batch ClickHouse did not take (or that queued behind the spool) to the
    /// spool and acknowledges its requests, or fails them if there is no room.
    async fn spool_batch(&mut self, mut riders: Riders) {
        let Some(spool) = self.spool.as_mut() else {
            for ack in riders.acks.drain(..) {
                let _ = ack.send(Err(IngestError::StorageUnavailable));
            }
            return;
        };
        let num_requests = riders.requests.len();
        let outcome = match spool.append(&riders.requests).await {
            Ok(file) => {
                tracing::debug!(
                    sequence = file.sequence,
                    bytes = file.bytes,
                    num_requests,
                    "spooled batch"
                );
                self.metrics.record_spooled(riders.num_spans);
                Ok(())
            }
            Err(error @ SpoolError::Full { .. }) => {
                tracing::warn!(%error, "refusing spans");
                self.metrics.record_spool_error("full");
                Err(IngestError::SpoolFull)
            }
            Err(error) => {
                tracing::error!(%error, "cannot spool spans");
                self.metrics.record_spool_error("io");
                Err(IngestError::StorageUnavailable)
            }
        };
        for ack in riders.acks.drain(..) {
            let _ = ack.send(outcome.clone());
        }
        self.publish_spool_size();
    }

    fn publish_spool_size(&self) {
        if let Some(spool) = &self.spool {
            self.metrics
                .set_spool_size(spool.usage().bytes(), spool.len());
        }
    }

    /// Starts inserting the oldest spooled batches, as one insert.
    async fn replay(&mut self) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        let files = spool.oldest(self.max_bytes);
        let mut requests = Vec::new();
        let mut readable = Vec::new();
        for file in files {
            match spool.read(file).await {
                Ok(batch) => {
                    requests.extend(batch);
                    readable.push(file);
                }
                Err(error @ SpoolError::Corrupt { .. }) => {
                    tracing::error!(%error, "moving corrupt batch out of the spool");
                    self.metrics.record_spool_error("corrupt");
                    if let Err(error) = spool.quarantine(file).await {
                        tracing::error!(%error, "cannot move corrupt spool batch");
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "cannot read spool batch");
                    self.metrics.record_spool_error("io");
                    break;
                }
            }
        }
        self.publish_spool_size();
        if readable.is_empty() {
            self.back_off_replay();
            return;
        }
        let mut batch = self.new_batch(true);
        batch.riders.replayed = readable;
        for request in requests {
            let written =
                write_rows(&mut batch, &mut self.blobs, &mut self.aggregator, &request).await;
            if let Err(error) = written {
                tracing::warn!(%error, retry_in = ?self.replay_backoff, "cannot replay spooled spans into clickhouse");
                self.back_off_replay();
                return;
            }
        }
        self.replaying = true;
        self.insert(batch).await;
    }

    async fn write(&mut self, request: WriteRequest) {
        let WriteRequest {
            tenant,
            request,
            ack,
            count_in_aggregates,
            permit,
            ..
        } = request;
        if self.batch.riders.is_empty() {
            self.batch.riders.direct = self.spool_is_empty();
        }
        let request = SpooledRequest {
            tenant,
            count_in_aggregates,
            request,
        };
        let riders = &mut self.batch.riders;
        riders.acks.push(ack);
        riders.permits.push(permit);
        if !riders.direct {
            riders.num_spans += count_spans(&request.request) as u64;
            riders.requests.push(request);
            return;
        }
        let written = write_rows(
            &mut self.batch,
            &mut self.blobs,
            &mut self.aggregator,
            &request,
        )
        .await;
        if self.spool.is_some() {
            self.batch.riders.requests.push(request);
        }
        if let Err(error) = written {
            tracing::warn!(%error, "cannot write spans to clickhouse");
            self.metrics.record_insert_error(InsertTable::Spans);
            let fresh = self.new_batch(true);
            let failed = std::mem::replace(&mut self.batch, fresh);
            self.spool_batch(failed.riders).await;
        }
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

/// Flattens one request's spans into `batch`'s rows and aggregate samples.
async fn write_rows(
    batch: &mut Batch,
    blobs: &mut SpanBlobEncoder,
    aggregator: &mut Aggregator,
    spooled: &SpooledRequest,
) -> Result<(), caracal_store::clickhouse::error::Error> {
    let tenant = spooled.tenant.as_str();
    let tenant_id = aggregator.interner.intern(tenant);
    let mut flattener = Flattener::default();
    for resource_spans in &spooled.request.resource_spans {
        flattener.set_resource(resource_spans);
        blobs.set_resource(resource_spans);
        let service = aggregator.interner.intern(flattener.service_name());
        let instance = aggregator.interner.intern(flattener.instance());
        for scope_spans in &resource_spans.scope_spans {
            flattener.set_scope(scope_spans.scope.as_ref());
            blobs.set_scope(scope_spans);
            for span in &scope_spans.spans {
                let row = flattener.row(tenant, span);
                let trace_row = TraceSpanRow {
                    tenant,
                    trace_id: row.trace_id,
                    start: unix_seconds(span.start_time_unix_nano),
                    start_ns: span.start_time_unix_nano,
                    span: blobs.encode(span),
                };
                batch.spans.write(&row).await?;
                batch.traces.write(&trace_row).await?;
                batch.riders.num_spans += 1;
                if !spooled.count_in_aggregates {
                    continue;
                }
                let interner = &mut aggregator.interner;
                batch.riders.samples.push(SpanSample {
                    tenant: tenant_id,
                    service,
                    instance,
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
    Ok(())
}

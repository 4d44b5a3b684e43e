//! The batch writer task.
//!
//! It owns the `spans` inserter (bounded by rows, bytes and time), flattens each request
//! into rows, and acknowledges the requests of an insert once ClickHouse has accepted it.
//! Aggregates of a batch are applied only after its insert succeeded, then written to
//! the aggregate input tables on their own period.

use std::time::Duration;

use caracal_model::span::{SpanKind, StatusCode};
use caracal_store::{
    clickhouse::inserter::Inserter,
    rows::{DependencyRow, SpanMetricsRow, SpanRow},
    Store,
};
use tokio::sync::{mpsc, oneshot};

use super::flatten::{remote_target, Flattener};
use crate::{
    aggregate::{Aggregator, SpanSample},
    ingest::WriteRequest,
    CollectorConfig, IngestError,
};

/// Aggregate rows kept for retry when ClickHouse is down; beyond this the oldest go.
const MAX_RETAINED_AGGREGATE_ROWS: usize = 1_000_000;

/// The writer task's state.
pub struct Writer {
    store: Store,
    inserter: Inserter<SpanRow<'static>>,
    max_rows: u64,
    max_bytes: u64,
    period: Duration,
    aggregate_period: Duration,
    /// Requests whose rows are in the current insert.
    pending_acks: Vec<oneshot::Sender<Result<(), IngestError>>>,
    /// Samples of the current insert, applied on success.
    pending_samples: Vec<SpanSample>,
    aggregator: Aggregator,
    unsent_metrics: Vec<SpanMetricsRow>,
    unsent_edges: Vec<DependencyRow>,
}

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
    /// A writer for `store`.
    pub fn new(store: Store, config: &CollectorConfig) -> Self {
        let period = Duration::from_millis(config.batch_period_ms.max(1));
        let mut writer = Self {
            inserter: new_inserter(
                &store,
                config.batch_max_rows,
                config.batch_max_bytes,
                period,
            ),
            store,
            max_rows: config.batch_max_rows,
            max_bytes: config.batch_max_bytes,
            period,
            aggregate_period: Duration::from_millis(config.aggregate_flush_ms.max(100)),
            pending_acks: Vec::new(),
            pending_samples: Vec::new(),
            aggregator: Aggregator::default(),
            unsent_metrics: Vec::new(),
            unsent_edges: Vec::new(),
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
                message = requests.recv() => match message {
                    Some(request) => {
                        self.write(request).await;
                        self.commit(false).await;
                    }
                    None => break,
                },
                _ = tokio::time::sleep(time_left), if !self.pending_acks.is_empty() => {
                    self.commit(false).await;
                }
                _ = aggregate_tick.tick() => self.flush_aggregates(false).await,
            }
        }
        self.commit(true).await;
        self.flush_aggregates(true).await;
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
            let service = self.aggregator.interner.intern(flattener.service_name());
            for scope_spans in &resource_spans.scope_spans {
                flattener.set_scope(scope_spans.scope.as_ref());
                for span in &scope_spans.spans {
                    let row = flattener.row(&tenant, span);
                    if let Err(error) = self.inserter.write(&row).await {
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
            self.fail_pending();
        }
    }

    /// Sends the insert if a limit is reached (or `force`), then acknowledges.
    async fn commit(&mut self, force: bool) {
        if self.pending_acks.is_empty() {
            return;
        }
        let result = if force {
            self.inserter.force_commit().await
        } else {
            self.inserter.commit().await
        };
        match result {
            Ok(quantities) if quantities.rows > 0 || force => {
                for sample in self.pending_samples.drain(..) {
                    self.aggregator.apply(&sample);
                }
                for ack in self.pending_acks.drain(..) {
                    let _ = ack.send(Ok(()));
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot insert spans into clickhouse");
                self.fail_pending();
            }
        }
    }

    /// Fails every request of the current insert and starts a fresh one.
    fn fail_pending(&mut self) {
        for ack in self.pending_acks.drain(..) {
            let _ = ack.send(Err(IngestError::StorageUnavailable));
        }
        self.pending_samples.clear();
        self.inserter = new_inserter(&self.store, self.max_rows, self.max_bytes, self.period);
    }

    async fn flush_aggregates(&mut self, is_final: bool) {
        let (metrics, edges) = self.aggregator.drain(is_final);
        self.unsent_metrics.extend(metrics);
        self.unsent_edges.extend(edges);
        if !self.unsent_metrics.is_empty() {
            match self
                .store
                .insert_rows("span_metrics_input", &self.unsent_metrics)
                .await
            {
                Ok(()) => self.unsent_metrics.clear(),
                Err(error) => {
                    tracing::warn!(%error, rows = self.unsent_metrics.len(), "cannot write span metrics, will retry");
                    trim_oldest(&mut self.unsent_metrics);
                }
            }
        }
        if !self.unsent_edges.is_empty() {
            match self
                .store
                .insert_rows("dependency_input", &self.unsent_edges)
                .await
            {
                Ok(()) => self.unsent_edges.clear(),
                Err(error) => {
                    tracing::warn!(%error, rows = self.unsent_edges.len(), "cannot write dependencies, will retry");
                    trim_oldest(&mut self.unsent_edges);
                }
            }
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

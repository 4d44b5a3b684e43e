//! The writer: from validated requests to rows in ClickHouse.

pub mod clickhouse;
pub mod flatten;

use std::time::Duration;

use tokio::{sync::mpsc, task::JoinHandle};

use crate::{ingest::Ingest, metrics::CollectorMetrics, CollectorConfig};

/// Starts the writer task; returns the ingest handle receivers use and the task, which
/// ends (after a final flush) once every ingest handle is dropped.
pub fn start(
    store: caracal_store::Store,
    config: &CollectorConfig,
    metrics: CollectorMetrics,
) -> (Ingest, JoinHandle<()>) {
    let (queue, requests) = mpsc::channel(config.queue_capacity.max(1));
    let max_future_skew = Duration::from_secs(config.max_future_skew_secs);
    let ingest = Ingest::new(queue, max_future_skew, metrics.clone());
    let writer = clickhouse::Writer::new(store, config, metrics);
    (ingest, tokio::spawn(writer.run(requests)))
}

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
    let limits = crate::ingest::validate::AttributeLimits {
        max_attributes: config.max_attributes_per_span,
        max_key_bytes: config.max_attribute_key_bytes,
        max_value_bytes: config.max_attribute_value_bytes,
    };
    let ingest = Ingest::new(queue, max_future_skew, limits, metrics.clone());
    let writer = clickhouse::Writer::new(store, config, metrics);
    (ingest, tokio::spawn(writer.run(requests)))
}

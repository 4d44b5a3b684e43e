//! The writer: from validated requests to rows in ClickHouse.

pub mod clickhouse;
pub mod flatten;

use std::time::Duration;

use tokio::{sync::mpsc, task::JoinHandle};

use crate::{ingest::Ingest, CollectorConfig};

/// Starts the writer task; returns the ingest handle receivers use and the task, which
/// ends (after a final flush) once every ingest handle is dropped.
pub fn start(store: caracal_store::Store, config: &CollectorConfig) -> (Ingest, JoinHandle<()>) {
    let (queue, requests) = mpsc::channel(config.queue_capacity.max(1));
    let ingest = Ingest::new(queue, Duration::from_secs(config.max_future_skew_secs));
    let writer = clickhouse::Writer::new(store, config);
    (ingest, tokio::spawn(writer.run(requests)))
}

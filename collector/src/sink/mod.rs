//! The writer: from validated requests to rows in ClickHouse, through the spool when
//! ClickHouse cannot take them.

pub mod clickhouse;
pub mod flatten;
pub mod spool;

use std::time::Duration;

use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    ingest::{Ingest, IngestSettings},
    metrics::CollectorMetrics,
    CollectorConfig,
};

/// Starts the writer task; returns the ingest handle receivers use and the task, which
/// ends (after a final flush) once every ingest handle is dropped.
pub fn start(
    store: caracal_store::Store,
    config: &CollectorConfig,
    tokens: &caracal_model::tenant::TokenTable,
    metrics: CollectorMetrics,
) -> Result<(Ingest, JoinHandle<()>), spool::SpoolError> {
    let spool = config
        .spool_dir
        .as_ref()
        .map(|dir| {
            spool::Spool::open(&spool::SpoolConfig {
                dir: dir.clone(),
                max_bytes: config.spool_max_bytes,
                fsync: config.spool_fsync,
            })
        })
        .transpose()?;
    let (queue, requests) = mpsc::channel(config.queue_capacity.max(1));
    let settings = IngestSettings {
        max_future_skew: Duration::from_secs(config.max_future_skew_secs),
        attribute_limits: crate::ingest::validate::AttributeLimits {
            max_attributes: config.max_attributes_per_span,
            max_key_bytes: config.max_attribute_key_bytes,
            max_value_bytes: config.max_attribute_value_bytes,
        },
        max_spans_per_request: config.max_spans_per_request,
        max_memory_bytes: config.max_memory_bytes,
        max_decoding_bytes: config.max_request_bytes as u64,
        spool: spool.as_ref().map(spool::Spool::usage),
        tokens: tokens.clone(),
    };
    let ingest = Ingest::new(queue, settings, metrics.clone());
    let writer = clickhouse::Writer::new(store, config, spool, metrics);
    Ok((ingest, tokio::spawn(writer.run(requests))))
}

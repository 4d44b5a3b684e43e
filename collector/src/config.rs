//! The collector's configuration.

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

pub use crate::sink::spool::FsyncPolicy;

/// Default OTLP/gRPC address.
pub const DEFAULT_OTLP_GRPC_ADDR: &str = "127.0.0.1:4317";
/// Default OTLP/HTTP address.
pub const DEFAULT_OTLP_HTTP_ADDR: &str = "127.0.0.1:4318";
/// Default Zipkin address.
pub const DEFAULT_ZIPKIN_ADDR: &str = "127.0.0.1:9411";
/// Default spool directory, relative to the working directory.
pub const DEFAULT_SPOOL_DIR: &str = ".caracal/spool";
/// Default largest accepted request body, after decompression: 16 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Collector settings; every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// OTLP/gRPC listen address (`CARACAL_OTLP_GRPC_ADDR`).
    pub otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address (`CARACAL_OTLP_HTTP_ADDR`).
    pub otlp_http_addr: SocketAddr,
    /// Zipkin v2 listen address (`CARACAL_ZIPKIN_ADDR`).
    pub zipkin_addr: SocketAddr,
    /// Largest request body in bytes, compressed or not; larger requests get 413.
    pub max_request_bytes: usize,
    /// An insert is sent once it holds this many rows.
    pub batch_max_rows: u64,
    /// An insert is sent once it holds this many serialized bytes.
    pub batch_max_bytes: u64,
    /// An insert is sent at the latest this many milliseconds after its first row.
    pub batch_period_ms: u64,
    /// Requests waiting for the writer; when full, new requests are refused as retryable.
    pub queue_capacity: usize,
    /// How often aggregates and dependency edges are written, in milliseconds.
    pub aggregate_flush_ms: u64,
    /// Spans starting more than this many seconds in the future are rejected.
    pub max_future_skew_secs: u64,
    /// Attributes kept per span, event, link, resource and scope; the rest are dropped
    /// and counted in OTLP's `dropped_attributes_count`.
    pub max_attributes_per_span: usize,
    /// Longest attribute key in bytes; longer keys are cut and marked `…[truncated]`.
    pub max_attribute_key_bytes: usize,
    /// Longest string or bytes attribute value; longer values are cut and marked.
    pub max_attribute_value_bytes: usize,
    /// Most spans in one request; larger requests are refused (413 / RESOURCE_EXHAUSTED).
    pub max_spans_per_request: usize,
    /// Bound on accepted requests held in memory (queued, batched or being inserted),
    /// counted as their protobuf size; beyond it new requests are refused as
    /// retryable. Decoded spans take about three times their protobuf size.
    pub max_memory_bytes: u64,
    /// Where batches ClickHouse does not take are kept until it does
    /// (`CARACAL_SPOOL_DIR`); without one, such batches fail their requests with a
    /// retryable error.
    pub spool_dir: Option<PathBuf>,
    /// Bound on the spool's size; when full, requests are refused as retryable.
    pub spool_max_bytes: u64,
    /// When spooled batches are forced to disk: `always` (before acknowledging) or
    /// `never` (left to the OS).
    pub spool_fsync: FsyncPolicy,
    /// An insert that takes longer fails (and its batch is spooled), in milliseconds.
    pub insert_timeout_ms: u64,
    /// Ingest tokens (`Authorization: Bearer <token>` on HTTP, `authorization`
    /// metadata on gRPC) and their tenants (`CARACAL_INGEST_TOKENS` as
    /// `token=tenant,...`). Without any, everything is the default tenant and the
    /// receivers may listen on loopback addresses only.
    pub ingest_tokens: caracal_model::tenant::TokenTable,
    /// Allow listening beyond loopback without ingest tokens (anyone who can connect
    /// can then write).
    pub allow_unauthenticated_remote: bool,
}

impl CollectorConfig {
    /// Refuses receivers on non-loopback addresses without ingest tokens (unless
    /// explicitly allowed).
    pub fn check_exposure(&self) -> Result<(), String> {
        [self.otlp_grpc_addr, self.otlp_http_addr, self.zipkin_addr]
            .into_iter()
            .try_for_each(|address| {
                caracal_model::tenant::check_exposure(
                    &self.ingest_tokens,
                    self.allow_unauthenticated_remote,
                    address,
                    "collector.ingest_tokens (CARACAL_INGEST_TOKENS)",
                )
            })
    }
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            otlp_grpc_addr: DEFAULT_OTLP_GRPC_ADDR.parse().expect("valid default"),
            otlp_http_addr: DEFAULT_OTLP_HTTP_ADDR.parse().expect("valid default"),
            zipkin_addr: DEFAULT_ZIPKIN_ADDR.parse().expect("valid default"),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            batch_max_rows: 100_000,
            batch_max_bytes: 64 * 1024 * 1024,
            batch_period_ms: 300,
            queue_capacity: 1024,
            aggregate_flush_ms: 5_000,
            max_future_skew_secs: 86_400,
            max_attributes_per_span: 128,
            max_attribute_key_bytes: 256,
            max_attribute_value_bytes: 16 * 1024,
            max_spans_per_request: 100_000,
            max_memory_bytes: 256 * 1024 * 1024,
            spool_dir: Some(PathBuf::from(DEFAULT_SPOOL_DIR)),
            spool_max_bytes: 1024 * 1024 * 1024,
            spool_fsync: FsyncPolicy::Always,
            insert_timeout_ms: 30_000,
            ingest_tokens: caracal_model::tenant::TokenTable::default(),
            allow_unauthenticated_remote: false,
        }
    }
}

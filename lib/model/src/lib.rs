//! Caracal's domain model: the vocabulary every other crate speaks.
//!
//! Layout:
//! - [`ids`]: trace and span ids, their validation and hex form.
//! - [`attributes`]: OTLP attribute values flattened into the columnar
//!   `(key, value-as-text, type)` form that storage and tag search use.
//! - [`span`]: span kinds and status codes with their OTLP numbers and Jaeger names.
//! - [`histogram`]: the latency histogram scheme shared by agent, collector and query
//!   (HdrHistogram, 2 significant digits, sparse `bucket -> count` maps that merge exactly).
//! - [`blob`]: a span with its resource and scope as one OTLP protobuf blob.
//! - [`bucket`]: the 10-second aggregation buckets.
//! - [`lenient`]: a protobuf decoder for OTLP trace exports that survives invalid UTF-8.
//! - [`tenant`]: tenants and the bearer tokens that name them.
//!
//! **Architecture invariant:** this crate does no I/O and knows nothing of tokio,
//! HTTP or ClickHouse.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod attributes;
pub mod blob;
pub mod bucket;
pub mod histogram;
pub mod ids;
pub mod lenient;
pub mod span;
pub mod tenant;

pub use opentelemetry_proto::tonic as otlp;

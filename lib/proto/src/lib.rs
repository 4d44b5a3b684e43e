//! The agent protocol, `caracal.agent.v1`: one [`AgentReport`] per agent per reporting
//! interval, sent as a gRPC unary call to [`REPORT_PATH`] on the collector's OTLP/gRPC
//! port (gzip-compressed), answered by a [`ReportResponse`].
//!
//! The messages are written as prost structs (the same code `prost-build` would generate
//! from `caracal/agent/v1/report.proto`, kept beside this file as the schema of record),
//! so building needs no `protoc`. Field numbers are a contract: never reuse one.
//!
//! **Architecture invariant:** a report is idempotent by `(instance, sequence)`: the
//! collector may see a report twice after a retry and must store it once.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// gRPC method path of [`AgentReport`] delivery.
pub const REPORT_PATH: &str = "/caracal.agent.v1.AgentService/Report";

/// gRPC service name.
pub const SERVICE_NAME: &str = "caracal.agent.v1.AgentService";

/// The highest count one histogram bucket of one [`Aggregate`] may carry: the agent's
/// buckets saturate there, and the collector refuses a row above it (low enough that
/// summing many rows cannot overflow).
pub const MAX_BUCKET_COUNT: u64 = (1 << 48) - 1;

/// Everything one agent instance has to say about one interval.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AgentReport {
    /// Service name, as OTel's `service.name`.
    #[prost(string, tag = "1")]
    pub service: String,
    /// Unique id of this agent instance (process), stable for its life.
    #[prost(string, tag = "2")]
    pub instance: String,
    /// Host name.
    #[prost(string, tag = "3")]
    pub host: String,
    /// Increases by one per report of this instance; with `instance`, the dedup key.
    #[prost(uint64, tag = "4")]
    pub sequence: u64,
    /// Transaction and span aggregates.
    #[prost(message, repeated, tag = "5")]
    pub aggregates: Vec<Aggregate>,
    /// Event counts.
    #[prost(message, repeated, tag = "6")]
    pub events: Vec<EventCount>,
    /// Metric values.
    #[prost(message, repeated, tag = "7")]
    pub metrics: Vec<MetricValue>,
    /// Whole traces the agent decided to keep (errors, slow, sampled), as OTLP.
    /// They are already counted in `aggregates` and must not be counted again.
    #[prost(message, repeated, tag = "8")]
    pub kept_spans: Vec<ResourceSpans>,
    /// Process and agent health.
    #[prost(message, optional, tag = "9")]
    pub heartbeat: Option<Heartbeat>,
}

/// One (type or kind, name, status) key of one 10-second bucket.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Aggregate {
    /// Start of the 10-second bucket, Unix seconds.
    #[prost(uint32, tag = "1")]
    pub bucket: u32,
    /// Operation: the CAT transaction `type/name` or the span name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// OTLP span kind number.
    #[prost(uint32, tag = "3")]
    pub kind: u32,
    /// OTLP status code number (0 unset, 1 ok, 2 error).
    #[prost(uint32, tag = "4")]
    pub status: u32,
    /// Recorded spans.
    #[prost(uint64, tag = "5")]
    pub count: u64,
    /// Failed spans.
    #[prost(uint64, tag = "6")]
    pub errors: u64,
    /// Sum of durations, nanoseconds.
    #[prost(uint64, tag = "7")]
    pub sum_ns: u64,
    /// Shortest duration.
    #[prost(uint64, tag = "8")]
    pub min_ns: u64,
    /// Longest duration.
    #[prost(uint64, tag = "9")]
    pub max_ns: u64,
    /// Latency histogram bucket keys (HdrHistogram, 2 significant digits, ns).
    #[prost(uint64, repeated, tag = "10")]
    pub hist_keys: Vec<u64>,
    /// Counts per key.
    #[prost(uint64, repeated, tag = "11")]
    pub hist_counts: Vec<u64>,
    /// For client and producer spans: what was called (a service, database, queue or
    /// peer), so the collector can record the dependency edge `service -> peer`.
    #[prost(string, tag = "12")]
    pub peer: String,
    /// What `peer` is: `service`, `database`, `messaging` or `peer`.
    #[prost(string, tag = "13")]
    pub peer_type: String,
}

/// A CAT event counter of one bucket.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventCount {
    /// Start of the 10-second bucket, Unix seconds.
    #[prost(uint32, tag = "1")]
    pub bucket: u32,
    /// Event type.
    #[prost(string, tag = "2")]
    pub event_type: String,
    /// Event name.
    #[prost(string, tag = "3")]
    pub name: String,
    /// OTLP status code number.
    #[prost(uint32, tag = "4")]
    pub status: u32,
    /// Occurrences.
    #[prost(uint64, tag = "5")]
    pub count: u64,
}

/// What a metric measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricKind {
    /// A count that adds up.
    Counter = 0,
    /// Durations in nanoseconds; `sum / count` is the mean.
    Duration = 1,
    /// A level; the last value in the bucket wins.
    Gauge = 2,
}

/// A metric of one bucket.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricValue {
    /// Start of the 10-second bucket, Unix seconds.
    #[prost(uint32, tag = "1")]
    pub bucket: u32,
    /// Metric name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// What it measures.
    #[prost(enumeration = "MetricKind", tag = "3")]
    pub kind: i32,
    /// Sum of values (counter, duration) or the last value (gauge).
    #[prost(double, tag = "4")]
    pub value: f64,
    /// Number of recordings.
    #[prost(uint64, tag = "5")]
    pub count: u64,
}

/// Health of the instrumented process and of the agent itself.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Heartbeat {
    /// Unix milliseconds when taken.
    #[prost(uint64, tag = "1")]
    pub time_unix_ms: u64,
    /// Process CPU time used, seconds.
    #[prost(double, tag = "2")]
    pub cpu_seconds: f64,
    /// Resident memory, bytes.
    #[prost(uint64, tag = "3")]
    pub rss_bytes: u64,
    /// Threads.
    #[prost(uint32, tag = "4")]
    pub threads: u32,
    /// Open file descriptors.
    #[prost(uint32, tag = "5")]
    pub open_fds: u32,
    /// Spans and transactions recorded since start.
    #[prost(uint64, tag = "6")]
    pub recorded: u64,
    /// Spans kept (sent whole) since start.
    #[prost(uint64, tag = "7")]
    pub kept: u64,
    /// Spans dropped (queue full) since start.
    #[prost(uint64, tag = "8")]
    pub dropped_spans: u64,
    /// Reports dropped (memory bound while the collector was unreachable) since start.
    #[prost(uint64, tag = "9")]
    pub dropped_reports: u64,
    /// Reports waiting to be sent.
    #[prost(uint64, tag = "10")]
    pub queue_depth: u64,
    /// Compressed bytes sent since start.
    #[prost(uint64, tag = "11")]
    pub bytes_sent: u64,
    /// Keys folded into the `other` overflow key since start (cardinality cap).
    #[prost(uint64, tag = "12")]
    pub overflowed: u64,
}

/// The collector's answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReportResponse {
    /// False when the report was a duplicate already stored.
    #[prost(bool, tag = "1")]
    pub stored: bool,
    /// Rows (aggregates, event counts, metric values, the heartbeat) and kept spans
    /// refused one by one; the rest of the report was stored.
    #[prost(uint64, tag = "2")]
    pub rejected: u64,
    /// Why, by reason; empty when nothing was refused.
    #[prost(string, tag = "3")]
    pub error_message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn report_round_trips() {
        let report = AgentReport {
            service: "orders".into(),
            instance: "i-1".into(),
            sequence: 7,
            aggregates: vec![Aggregate {
                bucket: 10,
                name: "GET /".into(),
                count: 3,
                hist_keys: vec![1, 2],
                hist_counts: vec![1, 2],
                ..Default::default()
            }],
            metrics: vec![MetricValue {
                name: "queue".into(),
                kind: MetricKind::Gauge as i32,
                value: 3.5,
                count: 1,
                bucket: 10,
            }],
            heartbeat: Some(Heartbeat {
                rss_bytes: 1 << 20,
                ..Default::default()
            }),
            ..Default::default()
        };
        let decoded = AgentReport::decode(report.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, report);
    }
}

//! Row types, one per table, in column order.
//!
//! Written rows borrow (no copies of span text on the ingest path); read rows own.
//! Every type has a round-trip test against the real server in `tests/it`.

use std::borrow::Cow;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

/// One span as written to `spans`, the table trace search reads.
#[derive(Debug, Row, Serialize)]
#[allow(missing_docs)]
pub struct SpanRow<'a> {
    pub tenant: &'a str,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// All zero for a root span.
    pub parent_span_id: [u8; 8],
    pub trace_state: &'a str,
    pub flags: u32,
    pub service_name: &'a str,
    pub name: &'a str,
    pub kind: u8,
    pub status_code: u8,
    pub status_message: &'a str,
    /// Unix seconds of the start, for partitioning and the primary key.
    pub start: u32,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub attr_keys: &'a [&'a str],
    pub attr_values: &'a [Cow<'a, str>],
    pub attr_types: &'a [u8],
    pub dropped_attributes_count: u32,
    pub resource_keys: &'a [&'a str],
    pub resource_values: &'a [Cow<'a, str>],
    pub resource_types: &'a [u8],
    pub scope_name: &'a str,
    pub scope_version: &'a str,
    pub scope_keys: &'a [&'a str],
    pub scope_values: &'a [Cow<'a, str>],
    pub scope_types: &'a [u8],
    pub events_time_ns: &'a [u64],
    pub events_name: &'a [&'a str],
    pub events_dropped_attributes_count: &'a [u32],
    pub event_attr_index: &'a [u16],
    pub event_attr_keys: &'a [&'a str],
    pub event_attr_values: &'a [Cow<'a, str>],
    pub event_attr_types: &'a [u8],
    pub dropped_events_count: u32,
    pub links_trace_id: &'a [[u8; 16]],
    pub links_span_id: &'a [[u8; 8]],
    pub links_trace_state: &'a [&'a str],
    pub links_flags: &'a [u32],
    pub links_dropped_attributes_count: &'a [u32],
    pub link_attr_index: &'a [u16],
    pub link_attr_keys: &'a [&'a str],
    pub link_attr_values: &'a [Cow<'a, str>],
    pub link_attr_types: &'a [u8],
    pub dropped_links_count: u32,
}

/// One span as written to `spans_by_trace`: the span blob of
/// `caracal_model::blob`, keyed by trace.
#[derive(Debug, Row, Serialize)]
#[allow(missing_docs)]
pub struct TraceSpanRow<'a> {
    pub tenant: &'a str,
    pub trace_id: [u8; 16],
    /// Unix seconds of the start, for partitioning.
    pub start: u32,
    pub start_ns: u64,
    #[serde(with = "serde_bytes")]
    pub span: &'a [u8],
}

/// One span read back from `spans_by_trace`.
#[derive(Debug, Clone, Row, Deserialize, PartialEq)]
#[allow(missing_docs)]
pub struct StoredTraceSpan {
    pub trace_id: [u8; 16],
    #[serde(with = "serde_bytes")]
    pub span: Vec<u8>,
}

/// One aggregate row for `span_metrics_input` (folded into every resolution by views).
#[derive(Debug, Clone, Row, Serialize, Deserialize, PartialEq)]
#[allow(missing_docs)]
pub struct SpanMetricsRow {
    pub tenant: String,
    /// Start of the 10-second bucket, Unix seconds.
    pub bucket: u32,
    pub service: String,
    /// The instance that recorded the spans (`''` when unknown), for the per-instance
    /// tables.
    pub instance: String,
    pub operation: String,
    pub kind: u8,
    pub status: u8,
    pub count: u64,
    pub errors: u64,
    pub sum_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
    pub hist_keys: Vec<u64>,
    pub hist_counts: Vec<u64>,
}

/// One edge row for `dependency_input`.
#[derive(Debug, Clone, Row, Serialize, Deserialize, PartialEq)]
#[allow(missing_docs)]
pub struct DependencyRow {
    pub tenant: String,
    pub bucket: u32,
    pub parent: String,
    pub child: String,
    /// `service`, `database`, `messaging` or `peer`.
    pub child_type: String,
    pub calls: u64,
    pub errors: u64,
    pub sum_ns: u64,
    pub hist_keys: Vec<u64>,
    pub hist_counts: Vec<u64>,
}

/// One CAT event count for `agent_events`.
#[derive(Debug, Clone, Row, Serialize, Deserialize, PartialEq)]
#[allow(missing_docs)]
pub struct AgentEventRow {
    pub tenant: String,
    pub bucket: u32,
    pub service: String,
    pub event_type: String,
    pub name: String,
    pub status: u8,
    pub count: u64,
}

/// One metric value for `agent_metrics`.
#[derive(Debug, Clone, Row, Serialize, Deserialize, PartialEq)]
#[allow(missing_docs)]
pub struct AgentMetricRow {
    pub tenant: String,
    pub bucket: u32,
    pub service: String,
    pub name: String,
    pub kind: u8,
    pub value: f64,
    pub count: u64,
}

/// One heartbeat for `agent_heartbeats`.
#[derive(Debug, Clone, Row, Serialize, Deserialize, PartialEq)]
#[allow(missing_docs)]
pub struct AgentHeartbeatRow {
    pub tenant: String,
    pub time: u32,
    pub service: String,
    pub instance: String,
    pub host: String,
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub threads: u32,
    pub open_fds: u32,
    pub recorded: u64,
    pub kept: u64,
    pub dropped_spans: u64,
    pub dropped_reports: u64,
    pub queue_depth: u64,
    pub bytes_sent: u64,
    pub overflowed: u64,
}

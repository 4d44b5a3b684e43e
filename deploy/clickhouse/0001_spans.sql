-- Every span with every OTLP field, ordered for search by service, operation and time.
-- The key ends with the span's identity, so copies of one span (a spool replay of a
-- batch ClickHouse had stored after all, a client's retry) collapse when parts merge:
-- searches return trace ids and are not affected by a copy in between.
-- Attributes are parallel arrays: key, value as text (what tag search compares) and
-- value type (see caracal_model::attributes::ValueType).
-- Event and link attributes are flattened, with *_attr_index naming their event or link.
CREATE TABLE IF NOT EXISTS ${database}.spans
(
    tenant LowCardinality(String),
    trace_id FixedString(16),
    span_id FixedString(8),
    parent_span_id FixedString(8),
    trace_state String,
    flags UInt32,
    service_name LowCardinality(String),
    name LowCardinality(String),
    kind UInt8,
    status_code UInt8,
    status_message String,
    start DateTime,
    start_ns UInt64,
    duration_ns UInt64,
    attr_keys Array(String),
    attr_values Array(String),
    attr_types Array(UInt8),
    dropped_attributes_count UInt32,
    resource_keys Array(String),
    resource_values Array(String),
    resource_types Array(UInt8),
    scope_name LowCardinality(String),
    scope_version LowCardinality(String),
    scope_keys Array(String),
    scope_values Array(String),
    scope_types Array(UInt8),
    events_time_ns Array(UInt64),
    events_name Array(String),
    events_dropped_attributes_count Array(UInt32),
    event_attr_index Array(UInt16),
    event_attr_keys Array(String),
    event_attr_values Array(String),
    event_attr_types Array(UInt8),
    dropped_events_count UInt32,
    links_trace_id Array(FixedString(16)),
    links_span_id Array(FixedString(8)),
    links_trace_state Array(String),
    links_flags Array(UInt32),
    links_dropped_attributes_count Array(UInt32),
    link_attr_index Array(UInt16),
    link_attr_keys Array(String),
    link_attr_values Array(String),
    link_attr_types Array(UInt8),
    dropped_links_count UInt32
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(start)
ORDER BY (tenant, service_name, name, start, trace_id, span_id, kind);

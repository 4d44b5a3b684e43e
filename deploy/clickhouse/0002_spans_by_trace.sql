-- Every span again, ordered by trace id, as one self-contained blob: an OTLP
-- ResourceSpans (protobuf) holding the span with its resource and scope. Fetching a
-- trace reads two small columns of a few granules instead of every column of `spans`,
-- which is what makes trace by id fast. Written by the collector together with `spans`.
-- Copies of one span (same blob) collapse when parts merge; the reader drops copies
-- that are still there.
CREATE TABLE IF NOT EXISTS ${database}.spans_by_trace
(
    tenant LowCardinality(String),
    trace_id FixedString(16),
    start DateTime,
    start_ns UInt64,
    span String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(start)
ORDER BY (tenant, trace_id, start_ns, cityHash64(span))
SETTINGS index_granularity = 1024;

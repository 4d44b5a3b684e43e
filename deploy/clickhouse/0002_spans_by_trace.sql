-- The same spans ordered by trace id, so fetching a trace reads one small granule per
-- day partition instead of scanning. Filled by a materialized view on every insert into
-- spans. Small granules: a trace is a handful of rows, and every column of its granule
-- is read.
CREATE TABLE IF NOT EXISTS ${database}.spans_by_trace AS ${database}.spans
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(start)
ORDER BY (tenant, trace_id, start_ns)
SETTINGS index_granularity = 512;

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.spans_by_trace_mv
TO ${database}.spans_by_trace
AS SELECT * FROM ${database}.spans;

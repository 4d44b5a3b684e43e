-- Service dependency edges per time bucket: caller service -> callee, where the callee
-- is another service (a parent span in one service with a child in another) or a
-- database, cache or queue named by db.system, messaging.system or peer.service on a
-- client or producer span. Same input + rollup scheme as span_metrics.
CREATE TABLE IF NOT EXISTS ${database}.dependency_input
(
    tenant LowCardinality(String),
    bucket DateTime,
    parent LowCardinality(String),
    child LowCardinality(String),
    child_type LowCardinality(String),
    calls UInt64,
    errors UInt64,
    sum_ns UInt64,
    hist_keys Array(UInt64),
    hist_counts Array(UInt64)
)
ENGINE = Null;

CREATE TABLE IF NOT EXISTS ${database}.dependencies_10s
(
    tenant LowCardinality(String),
    ts DateTime,
    parent LowCardinality(String),
    child LowCardinality(String),
    child_type LowCardinality(String),
    calls AggregateFunction(sum, UInt64),
    errors AggregateFunction(sum, UInt64),
    sum_ns AggregateFunction(sum, UInt64),
    hist AggregateFunction(sumMap, Array(UInt64), Array(UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (tenant, parent, child, child_type, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.dependencies_10s_mv
TO ${database}.dependencies_10s
AS SELECT
    tenant,
    bucket AS ts,
    parent,
    child,
    child_type,
    sumState(calls) AS calls,
    sumState(errors) AS errors,
    sumState(sum_ns) AS sum_ns,
    sumMapState(hist_keys, hist_counts) AS hist
FROM ${database}.dependency_input
GROUP BY tenant, ts, parent, child, child_type;

CREATE TABLE IF NOT EXISTS ${database}.dependencies_1m
(
    tenant LowCardinality(String),
    ts DateTime,
    parent LowCardinality(String),
    child LowCardinality(String),
    child_type LowCardinality(String),
    calls AggregateFunction(sum, UInt64),
    errors AggregateFunction(sum, UInt64),
    sum_ns AggregateFunction(sum, UInt64),
    hist AggregateFunction(sumMap, Array(UInt64), Array(UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (tenant, parent, child, child_type, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.dependencies_1m_mv
TO ${database}.dependencies_1m
AS SELECT
    tenant,
    toStartOfMinute(bucket) AS ts,
    parent,
    child,
    child_type,
    sumState(calls) AS calls,
    sumState(errors) AS errors,
    sumState(sum_ns) AS sum_ns,
    sumMapState(hist_keys, hist_counts) AS hist
FROM ${database}.dependency_input
GROUP BY tenant, ts, parent, child, child_type;

CREATE TABLE IF NOT EXISTS ${database}.dependencies_1h
(
    tenant LowCardinality(String),
    ts DateTime,
    parent LowCardinality(String),
    child LowCardinality(String),
    child_type LowCardinality(String),
    calls AggregateFunction(sum, UInt64),
    errors AggregateFunction(sum, UInt64),
    sum_ns AggregateFunction(sum, UInt64),
    hist AggregateFunction(sumMap, Array(UInt64), Array(UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, parent, child, child_type, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.dependencies_1h_mv
TO ${database}.dependencies_1h
AS SELECT
    tenant,
    toStartOfHour(bucket) AS ts,
    parent,
    child,
    child_type,
    sumState(calls) AS calls,
    sumState(errors) AS errors,
    sumState(sum_ns) AS sum_ns,
    sumMapState(hist_keys, hist_counts) AS hist
FROM ${database}.dependency_input
GROUP BY tenant, ts, parent, child, child_type;

CREATE TABLE IF NOT EXISTS ${database}.dependencies_1d
(
    tenant LowCardinality(String),
    ts DateTime,
    parent LowCardinality(String),
    child LowCardinality(String),
    child_type LowCardinality(String),
    calls AggregateFunction(sum, UInt64),
    errors AggregateFunction(sum, UInt64),
    sum_ns AggregateFunction(sum, UInt64),
    hist AggregateFunction(sumMap, Array(UInt64), Array(UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, parent, child, child_type, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.dependencies_1d_mv
TO ${database}.dependencies_1d
AS SELECT
    tenant,
    toDateTime(toDate(bucket)) AS ts,
    parent,
    child,
    child_type,
    sumState(calls) AS calls,
    sumState(errors) AS errors,
    sumState(sum_ns) AS sum_ns,
    sumMapState(hist_keys, hist_counts) AS hist
FROM ${database}.dependency_input
GROUP BY tenant, ts, parent, child, child_type;

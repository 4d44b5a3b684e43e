-- RED aggregates per (service, operation, kind, status) and time bucket.
-- The collector (from raw spans) and agents (pre-aggregated) insert plain rows into
-- span_metrics_input, a Null table; materialized views fold them into one
-- AggregatingMergeTree per resolution (10 s, 1 min, 1 h, 1 day), each with its own
-- retention. Latency histograms are sparse HdrHistogram maps (bucket key -> count,
-- 2 significant digits, nanoseconds) merged exactly with sumMap.
CREATE TABLE IF NOT EXISTS ${database}.span_metrics_input
(
    tenant LowCardinality(String),
    bucket DateTime,
    service LowCardinality(String),
    operation LowCardinality(String),
    kind UInt8,
    status UInt8,
    count UInt64,
    errors UInt64,
    sum_ns UInt64,
    min_ns UInt64,
    max_ns UInt64,
    hist_keys Array(UInt64),
    hist_counts Array(UInt64)
)
ENGINE = Null;

CREATE TABLE IF NOT EXISTS ${database}.span_metrics_10s
(
    tenant LowCardinality(String),
    ts DateTime,
    service LowCardinality(String),
    operation LowCardinality(String),
    kind UInt8,
    status UInt8,
    count AggregateFunction(sum, UInt64),
    errors AggregateFunction(sum, UInt64),
    sum_ns AggregateFunction(sum, UInt64),
    min_ns AggregateFunction(min, UInt64),
    max_ns AggregateFunction(max, UInt64),
    hist AggregateFunction(sumMap, Array(UInt64), Array(UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (tenant, service, operation, kind, status, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.span_metrics_10s_mv
TO ${database}.span_metrics_10s
AS SELECT
    tenant,
    bucket AS ts,
    service,
    operation,
    kind,
    status,
    sumState(count) AS count,
    sumState(errors) AS errors,
    sumState(sum_ns) AS sum_ns,
    minState(min_ns) AS min_ns,
    maxState(max_ns) AS max_ns,
    sumMapState(hist_keys, hist_counts) AS hist
FROM ${database}.span_metrics_input
GROUP BY tenant, ts, service, operation, kind, status;

CREATE TABLE IF NOT EXISTS ${database}.span_metrics_1m
(
    tenant LowCardinality(String),
    ts DateTime,
    service LowCardinality(String),
    operation LowCardinality(String),
    kind UInt8,
    status UInt8,
    count AggregateFunction(sum, UInt64),
    errors AggregateFunction(sum, UInt64),
    sum_ns AggregateFunction(sum, UInt64),
    min_ns AggregateFunction(min, UInt64),
    max_ns AggregateFunction(max, UInt64),
    hist AggregateFunction(sumMap, Array(UInt64), Array(UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (tenant, service, operation, kind, status, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.span_metrics_1m_mv
TO ${database}.span_metrics_1m
AS SELECT
    tenant,
    toStartOfMinute(bucket) AS ts,
    service,
    operation,
    kind,
    status,
    sumState(count) AS count,
    sumState(errors) AS errors,
    sumState(sum_ns) AS sum_ns,
    minState(min_ns) AS min_ns,
    maxState(max_ns) AS max_ns,
    sumMapState(hist_keys, hist_counts) AS hist
FROM ${database}.span_metrics_input
GROUP BY tenant, ts, service, operation, kind, status;

CREATE TABLE IF NOT EXISTS ${database}.span_metrics_1h
(
    tenant LowCardinality(String),
    ts DateTime,
    service LowCardinality(String),
    operation LowCardinality(String),
    kind UInt8,
    status UInt8,
    count AggregateFunction(sum, UInt64),
    errors AggregateFunction(sum, UInt64),
    sum_ns AggregateFunction(sum, UInt64),
    min_ns AggregateFunction(min, UInt64),
    max_ns AggregateFunction(max, UInt64),
    hist AggregateFunction(sumMap, Array(UInt64), Array(UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, service, operation, kind, status, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.span_metrics_1h_mv
TO ${database}.span_metrics_1h
AS SELECT
    tenant,
    toStartOfHour(bucket) AS ts,
    service,
    operation,
    kind,
    status,
    sumState(count) AS count,
    sumState(errors) AS errors,
    sumState(sum_ns) AS sum_ns,
    minState(min_ns) AS min_ns,
    maxState(max_ns) AS max_ns,
    sumMapState(hist_keys, hist_counts) AS hist
FROM ${database}.span_metrics_input
GROUP BY tenant, ts, service, operation, kind, status;

CREATE TABLE IF NOT EXISTS ${database}.span_metrics_1d
(
    tenant LowCardinality(String),
    ts DateTime,
    service LowCardinality(String),
    operation LowCardinality(String),
    kind UInt8,
    status UInt8,
    count AggregateFunction(sum, UInt64),
    errors AggregateFunction(sum, UInt64),
    sum_ns AggregateFunction(sum, UInt64),
    min_ns AggregateFunction(min, UInt64),
    max_ns AggregateFunction(max, UInt64),
    hist AggregateFunction(sumMap, Array(UInt64), Array(UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, service, operation, kind, status, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.span_metrics_1d_mv
TO ${database}.span_metrics_1d
AS SELECT
    tenant,
    toDateTime(toDate(bucket)) AS ts,
    service,
    operation,
    kind,
    status,
    sumState(count) AS count,
    sumState(errors) AS errors,
    sumState(sum_ns) AS sum_ns,
    minState(min_ns) AS min_ns,
    maxState(max_ns) AS max_ns,
    sumMapState(hist_keys, hist_counts) AS hist
FROM ${database}.span_metrics_input
GROUP BY tenant, ts, service, operation, kind, status;

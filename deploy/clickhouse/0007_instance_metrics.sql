-- RED aggregates per instance (CAT's per-machine report): the same rows as the service
-- aggregates, also grouped by the instance that recorded them (an agent's instance, or
-- an OTLP resource's service.instance.id, else host.name; '' when neither is set).
-- Kept at 1 minute and 1 hour only: per-instance 10-second rows would multiply the
-- largest table by the fleet size. Rows written before this migration have instance ''.
--
-- ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS: the migration runner treats
-- "column already exists" from an ADD COLUMN as done, so a re-run is harmless.
ALTER TABLE ${database}.span_metrics_input ADD COLUMN instance LowCardinality(String) DEFAULT '';

CREATE TABLE IF NOT EXISTS ${database}.span_metrics_instance_1m
(
    tenant LowCardinality(String),
    ts DateTime,
    service LowCardinality(String),
    instance LowCardinality(String),
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
ORDER BY (tenant, service, instance, operation, kind, status, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.span_metrics_instance_1m_mv
TO ${database}.span_metrics_instance_1m
AS SELECT
    tenant,
    toStartOfMinute(bucket) AS ts,
    service,
    instance,
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
GROUP BY tenant, ts, service, instance, operation, kind, status;

CREATE TABLE IF NOT EXISTS ${database}.span_metrics_instance_1h
(
    tenant LowCardinality(String),
    ts DateTime,
    service LowCardinality(String),
    instance LowCardinality(String),
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
ORDER BY (tenant, service, instance, operation, kind, status, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.span_metrics_instance_1h_mv
TO ${database}.span_metrics_instance_1h
AS SELECT
    tenant,
    toStartOfHour(bucket) AS ts,
    service,
    instance,
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
GROUP BY tenant, ts, service, instance, operation, kind, status;

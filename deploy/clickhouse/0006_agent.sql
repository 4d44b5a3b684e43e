-- What agents report besides span aggregates: CAT event counts, metrics, and one
-- heartbeat per process per interval. Event and metric tables sum per key and bucket.
CREATE TABLE IF NOT EXISTS ${database}.agent_events
(
    tenant LowCardinality(String),
    bucket DateTime,
    service LowCardinality(String),
    event_type LowCardinality(String),
    name LowCardinality(String),
    status UInt8,
    count UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(bucket)
ORDER BY (tenant, service, event_type, name, status, bucket);

CREATE TABLE IF NOT EXISTS ${database}.agent_metrics
(
    tenant LowCardinality(String),
    bucket DateTime,
    service LowCardinality(String),
    name LowCardinality(String),
    kind UInt8,
    value Float64,
    count UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(bucket)
ORDER BY (tenant, service, name, kind, bucket);

CREATE TABLE IF NOT EXISTS ${database}.agent_heartbeats
(
    tenant LowCardinality(String),
    time DateTime,
    service LowCardinality(String),
    instance String,
    host LowCardinality(String),
    cpu_seconds Float64,
    rss_bytes UInt64,
    threads UInt32,
    open_fds UInt32,
    recorded UInt64,
    kept UInt64,
    dropped_spans UInt64,
    dropped_reports UInt64,
    queue_depth UInt64,
    bytes_sent UInt64,
    overflowed UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (tenant, service, instance, time);

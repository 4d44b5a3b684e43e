-- Services and their operations with span kind, with when each was last seen.
-- Fed from span_metrics_input, so agent aggregates and raw spans both register here.
CREATE TABLE IF NOT EXISTS ${database}.operations
(
    tenant LowCardinality(String),
    service LowCardinality(String),
    operation LowCardinality(String),
    kind UInt8,
    last_seen DateTime
)
ENGINE = ReplacingMergeTree(last_seen)
ORDER BY (tenant, service, operation, kind);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.operations_mv
TO ${database}.operations
AS SELECT
    tenant,
    service,
    operation,
    kind,
    max(bucket) AS last_seen
FROM ${database}.span_metrics_input
GROUP BY tenant, service, operation, kind;

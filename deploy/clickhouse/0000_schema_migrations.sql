-- Which migrations have been applied; written by `caracal migrate`.
CREATE TABLE IF NOT EXISTS ${database}.schema_migrations
(
    version UInt32,
    name String,
    applied_at DateTime
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version;

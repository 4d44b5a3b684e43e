//! Every SQL statement Caracal sends, rendered with sample values, so a test can run
//! them all on another ClickHouse version (current ClickHouse, through chDB).

use clickhouse::Row as _;

use crate::{
    migrate, reader, retention,
    rows::{SpanMetricsRow, StoredTraceSpan},
};

/// Every statement for `database`, in an order that runs on an empty server: schema
/// first, then reads and maintenance.
pub fn sql_catalog(database: &str) -> Vec<String> {
    let fields = StoredTraceSpan::COLUMN_NAMES.join(", ");
    let mut statements = vec![format!("CREATE DATABASE IF NOT EXISTS {database}")];
    for migration in migrate::MIGRATIONS {
        statements.extend(migrate::statements(migration, database));
    }
    let tenant = "default";
    let bind = |sql: &str, values: &[reader::BindValue]| {
        reader::BoundSql {
            sql: sql.to_owned(),
            binds: values.to_vec(),
        }
        .render(&fields)
    };
    statements.push(bind(
        &migrate::record_migration_sql(database),
        &[
            reader::BindValue::Number(0),
            reader::BindValue::Text("0000_schema_migrations.sql".into()),
        ],
    ));
    statements.push(bind(
        migrate::SCHEMA_TABLE_EXISTS_SQL,
        &[reader::BindValue::Text(database.into())],
    ));
    statements.push(migrate::schema_version_sql(database));
    // An aggregate row as the collector writes it (its columns, in its order), through
    // every view of the input table.
    statements.push(format!(
        "INSERT INTO {database}.span_metrics_input ({}) VALUES ('{tenant}', \
         toDateTime(1699920000), 'svc', 'svc-1', 'op', 2, 0, 2, 0, 15, 5, 10, [5, 10], [1, 1])",
        SpanMetricsRow::COLUMN_NAMES.join(", ")
    ));

    let mut search = reader::TraceQuery {
        tenant: tenant.into(),
        service: Some("svc".into()),
        operation: Some("op's".into()),
        span_kind: Some(2),
        tags: vec![
            ("error".into(), "true".into()),
            ("span.kind".into(), "server".into()),
            ("otel.status_code".into(), "ERROR".into()),
            ("otel.status_description".into(), "boom".into()),
            ("otel.scope.name".into(), "lib".into()),
            ("otel.scope.version".into(), "1.0".into()),
            ("http.status_code".into(), "200".into()),
        ],
        start_ns: 1_700_000_000_000_000_000,
        end_ns: 1_700_000_100_000_000_000,
        min_duration_ns: Some(1_000),
        max_duration_ns: Some(1_000_000),
        limit: 20,
    };
    statements.push(reader::trace_search_sql(database, &search).render(&fields));
    search.service = None;
    search.operation = None;
    search.tags.clear();
    statements.push(reader::trace_search_sql(database, &search).render(&fields));
    statements.push(reader::get_traces_sql(database, tenant, &[[1; 16], [2; 16]]).render(&fields));
    statements.push(reader::services_sql(database, tenant).render(&fields));
    statements.push(reader::operations_sql(database, tenant, "svc", Some(2)).render(&fields));
    statements.push(reader::operations_sql(database, tenant, "svc", None).render(&fields));
    for (start, end) in [
        (1_700_000_000, 1_700_000_600),
        (1_699_920_000, 1_700_006_400),
    ] {
        statements.push(reader::dependencies_sql(database, tenant, start, end).render(&fields));
    }
    let service = reader::MetricsFilter {
        service: "svc",
        instance: None,
        operation: Some("op"),
        kind: Some(2),
    };
    let instance = reader::MetricsFilter {
        instance: Some("svc-1"),
        ..service
    };
    for (filter, resolutions, table) in [
        (service, &reader::RESOLUTIONS[..], "span_metrics"),
        (
            instance,
            &reader::INSTANCE_RESOLUTIONS[..],
            "span_metrics_instance",
        ),
    ] {
        for (suffix, seconds) in resolutions {
            let start = 1_699_920_000 - 1_699_920_000 % seconds;
            let window = (start, start + seconds * 10, (*seconds).max(10));
            let sql = reader::span_metrics_sql(database, tenant, &filter, window);
            assert!(
                sql.sql.contains(&format!("{table}_{suffix} ")),
                "resolution {suffix} of {table}"
            );
            statements.push(sql.render(&fields));
        }
    }
    for (start, end) in [
        (1_699_920_000, 1_699_923_600),
        (1_699_920_030, 1_699_920_600),
    ] {
        statements.push(reader::instances_sql(database, tenant, "svc", start, end).render(&fields));
    }
    statements.push(bind(
        retention::PARTITIONS_SQL,
        &[
            reader::BindValue::Text(database.into()),
            reader::BindValue::Text("spans".into()),
        ],
    ));
    statements.push(retention::drop_partition_sql(database, "spans", "20170101"));
    statements.push(retention::drop_partition_sql(
        database,
        "span_metrics_1h",
        "201701",
    ));
    statements
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_complete_and_bound() {
        let statements = sql_catalog("db");
        assert!(statements.len() > 30);
        for statement in &statements {
            assert!(!statement.contains("${database}"), "{statement}");
            assert!(!statement.contains("?fields"), "{statement}");
        }
        assert!(statements
            .iter()
            .any(|statement| statement.contains("'op\\'s'")));
    }
}

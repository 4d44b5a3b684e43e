//! Schema migrations: the DDL files of `deploy/clickhouse/`, applied in order.
//!
//! Each file is one migration, numbered by its prefix. Statements inside a file are
//! separated by `;` at the end of a line, and `${database}` stands for the database name.
//! Every statement is idempotent (`IF NOT EXISTS`, or an `ADD COLUMN` whose "already
//! exists" error counts as done, as ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`),
//! so two processes migrating at once, or a migration interrupted halfway, are harmless:
//! the next run applies what is missing.

use crate::{Result, Store};

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version: the file's number.
    pub version: u32,
    /// File name.
    pub name: &'static str,
    /// The file's SQL.
    pub sql: &'static str,
}

macro_rules! migrations {
    ($($version:literal => $file:literal),* $(,)?) => {
        /// Every migration, in order.
        pub const MIGRATIONS: &[Migration] = &[
            $(Migration {
                version: $version,
                name: $file,
                sql: include_str!(concat!("../../../deploy/clickhouse/", $file)),
            }),*
        ];
    };
}

migrations! {
    0 => "0000_schema_migrations.sql",
    1 => "0001_spans.sql",
    2 => "0002_spans_by_trace.sql",
    3 => "0003_span_metrics.sql",
    4 => "0004_dependencies.sql",
    5 => "0005_operations.sql",
    6 => "0006_agent.sql",
    7 => "0007_instance_metrics.sql",
}

/// Whether the migrations table exists; bind the database name.
pub const SCHEMA_TABLE_EXISTS_SQL: &str =
    "SELECT count() > 0 FROM system.tables WHERE database = ? AND name = 'schema_migrations'";

/// How many migrations are recorded, and the highest.
pub fn schema_version_sql(database: &str) -> String {
    format!("SELECT count(), max(version) FROM {database}.schema_migrations")
}

/// Records one migration; bind version and name.
pub fn record_migration_sql(database: &str) -> String {
    format!(
        "INSERT INTO {database}.schema_migrations (version, name, applied_at) SELECT ?, ?, now()"
    )
}

/// The schema version this build needs.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

/// The statements of a migration with the database name filled in.
pub fn statements(migration: &Migration, database: &str) -> Vec<String> {
    migration
        .sql
        .split(";\n")
        .map(|statement| statement.trim().trim_end_matches(';').trim())
        .filter(|statement| {
            statement
                .lines()
                .any(|line| !line.trim().is_empty() && !line.trim_start().starts_with("--"))
        })
        .map(|statement| statement.replace("${database}", database))
        .collect()
}

/// Whether `error` says that the column `statement` adds is there already: the statement
/// ran before (an interrupted or concurrent migration), so it is done. The message is
/// "Cannot add column …: column with this name already exists" on 18.16 (code 44) and
/// on current ClickHouse (code 15, `DUPLICATE_COLUMN`).
fn adds_existing_column(statement: &str, error: &clickhouse::error::Error) -> bool {
    let message = error.to_string();
    statement.contains(" ADD COLUMN ")
        && message.contains("Cannot add column")
        && message.contains("column with this name already exists")
}

impl Store {
    /// Creates the database if needed and applies every migration not yet recorded.
    /// Returns the versions applied.
    pub async fn migrate(&self) -> Result<Vec<u32>> {
        let database = self.database();
        self.server_client
            .query(&format!("CREATE DATABASE IF NOT EXISTS {database}"))
            .execute()
            .await?;
        let current = self.schema_version().await?;
        let mut applied = Vec::new();
        for migration in MIGRATIONS {
            if current.is_some_and(|version| migration.version <= version) {
                continue;
            }
            for statement in statements(migration, database) {
                match self.client.query(&statement).execute().await {
                    Err(error) if adds_existing_column(&statement, &error) => {}
                    result => result?,
                }
            }
            self.client
                .query(&record_migration_sql(database))
                .bind(migration.version)
                .bind(migration.name)
                .execute()
                .await?;
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "applied migration"
            );
            applied.push(migration.version);
        }
        Ok(applied)
    }

    /// The highest applied migration, or `None` on an empty database.
    pub async fn schema_version(&self) -> Result<Option<u32>> {
        let database = self.database();
        let exists: u8 = self
            .server_client
            .query(SCHEMA_TABLE_EXISTS_SQL)
            .bind(database)
            .fetch_one()
            .await?;
        if exists == 0 {
            return Ok(None);
        }
        let (num_rows, version): (u64, u32) = self
            .client
            .query(&schema_version_sql(database))
            .fetch_one()
            .await?;
        Ok((num_rows > 0).then_some(version))
    }

    /// Ok when ClickHouse answers and the schema is at [`latest_version`].
    pub async fn check_schema(&self) -> Result<()> {
        let expected = latest_version();
        match self.schema_version().await? {
            Some(found) if found >= expected => Ok(()),
            found => Err(crate::Error::SchemaOutdated {
                found: found.unwrap_or(0),
                expected,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_deploy_is_a_migration_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/clickhouse");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|migration| migration.name).collect();
        assert_eq!(files, listed);
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index);
            assert!(migration.name.starts_with(&format!("{index:04}_")));
        }
    }

    #[test]
    fn statements_split_and_fill_database() {
        let migration = &MIGRATIONS[3];
        let statements = statements(migration, "db1");
        assert_eq!(statements.len(), 9, "input table, 4 rollups, 4 views");
        assert!(statements[2]
            .starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS db1.span_metrics_10s_mv"));
        assert!(statements
            .iter()
            .all(|statement| !statement.contains("${database}")));
    }

    #[test]
    fn only_an_existing_column_counts_as_done() {
        // As 18.16 and current ClickHouse (26.9) word it.
        let exists_18_16 = clickhouse::error::Error::BadResponse(
            "Code: 44, e.displayText() = DB::Exception: Cannot add column instance: column \
             with this name already exists, e.what() = DB::Exception"
                .into(),
        );
        let exists_current = clickhouse::error::Error::BadResponse(
            "Code: 15. DB::Exception: Cannot add column `instance`: column with this name \
             already exists. (DUPLICATE_COLUMN) (version 26.9.2.1)"
                .into(),
        );
        let other = clickhouse::error::Error::BadResponse(
            "Code: 60, e.displayText() = DB::Exception: Table db.x doesn't exist".into(),
        );
        let add = "ALTER TABLE db.span_metrics_input ADD COLUMN instance String DEFAULT ''";
        assert!(adds_existing_column(add, &exists_18_16));
        assert!(adds_existing_column(add, &exists_current));
        assert!(!adds_existing_column(add, &other));
        assert!(!adds_existing_column(
            "CREATE TABLE IF NOT EXISTS db.x (a UInt8)",
            &exists_18_16
        ));
    }
}

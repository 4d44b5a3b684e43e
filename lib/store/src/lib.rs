//! Caracal's ClickHouse storage.
//!
//! Layout:
//! - [`catalog`]: every SQL statement with sample values, for cross-version checks.
//! - [`migrate`]: applies the versioned DDL files of `deploy/clickhouse/` and reports the
//!   schema version.
//! - [`rows`]: the row types written to and read from each table.
//! - [`reader`]: trace search, trace by id, services and operations, dependencies and
//!   RED metrics.
//! - [`retention`]: drops day partitions older than each table's retention.
//!
//! **Architecture invariant:** DDL lives only in `deploy/clickhouse`; this crate embeds
//! those files and never writes DDL of its own.
//!
//! **Architecture invariant:** every value in SQL is bound with `?` (escaped by the
//! client) or is an identifier checked by [`validate_identifier`]; SQL is never built by
//! formatting untrusted text.
//!
//! ClickHouse compatibility: everything here runs on ClickHouse 18.16 (Debian's package)
//! and on current releases. The client runs with validation off (plain `RowBinary`),
//! because 18.16 lacks `RowBinaryWithNamesAndTypes`.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod catalog;
pub mod migrate;
pub mod reader;
pub mod retention;
pub mod rows;

use std::time::Duration;

pub use clickhouse;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// ClickHouse could not be reached or answered with an error.
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// A database or table name contains characters outside `[A-Za-z0-9_]`.
    #[error("invalid identifier {0:?}: use letters, digits and underscores")]
    InvalidIdentifier(String),
    /// The schema in ClickHouse is older than this build expects.
    #[error("schema version {found} is older than {expected}: run `caracal migrate`")]
    SchemaOutdated {
        /// Version found in ClickHouse.
        found: u32,
        /// Version this build needs.
        expected: u32,
    },
}

/// Result with the storage [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where ClickHouse is and how to log in.
#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    /// HTTP URL, for example `http://127.0.0.1:8123`.
    pub url: String,
    /// Database holding Caracal's tables.
    pub database: String,
    /// User name.
    pub user: String,
    /// Password; never logged.
    pub password: String,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".to_owned(),
            database: "caracal".to_owned(),
            user: "default".to_owned(),
            password: String::new(),
        }
    }
}

/// Timeout for one query; keeps a hung server from hanging the caller.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A handle to Caracal's database: cheap to clone, shared by writers and readers.
#[derive(Clone)]
pub struct Store {
    /// Client whose default database is Caracal's (inserts name bare tables).
    client: clickhouse::Client,
    /// Client with no default database, for creating it.
    server_client: clickhouse::Client,
    database: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Store")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects lazily (no request is made until the first query).
    pub fn new(config: &ClickHouseConfig) -> Result<Self> {
        validate_identifier(&config.database)?;
        let client = clickhouse::Client::default()
            .with_url(&config.url)
            .with_user(&config.user)
            .with_password(&config.password)
            .with_validation(false)
            // Without it, an error raised mid-stream is appended to a 200 response.
            .with_setting("wait_end_of_query", "1")
            .with_setting("max_execution_time", QUERY_TIMEOUT.as_secs().to_string());
        Ok(Self {
            server_client: client.clone(),
            client: client.with_database(&config.database),
            database: config.database.clone(),
        })
    }

    /// The underlying client, for writers.
    pub fn client(&self) -> &clickhouse::Client {
        &self.client
    }

    /// The database name (a valid identifier).
    pub fn database(&self) -> &str {
        &self.database
    }

    /// `database.table`, for SQL text.
    pub fn table(&self, table: &str) -> String {
        format!("{}.{}", self.database, table)
    }

    /// Drops Caracal's whole database (tests and `caracal` tooling only).
    pub async fn drop_database(&self) -> Result<()> {
        let sql = format!("DROP DATABASE IF EXISTS {}", self.database);
        self.server_client.query(&sql).execute().await?;
        Ok(())
    }

    /// Inserts rows into a table of Caracal's database in one statement.
    pub async fn insert_rows<T>(&self, table: &str, rows: &[T]) -> Result<()>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self.client.insert::<T>(table).await?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Checks that ClickHouse answers.
    pub async fn ping(&self) -> Result<()> {
        self.server_client.query("SELECT 1").execute().await?;
        Ok(())
    }
}

/// Accepts `[A-Za-z_][A-Za-z0-9_]*`, the only identifiers Caracal puts into SQL text.
pub fn validate_identifier(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_');
    if first_ok
        && chars.all(|rest| rest.is_ascii_alphanumeric() || rest == '_')
        && name.len() <= 128
    {
        Ok(())
    } else {
        Err(Error::InvalidIdentifier(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(validate_identifier("caracal_test_1").is_ok());
        for bad in ["", "1abc", "a-b", "a;DROP", "a.b", "a b"] {
            assert!(validate_identifier(bad).is_err(), "{bad}");
        }
    }
}

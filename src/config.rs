//! Caracal's configuration: one typed struct, from a TOML file, then `CARACAL_*`
//! environment variables and command-line flags (flags and variables are declared
//! together in `main.rs`; a flag wins over its variable, both win over the file).

use std::path::Path;

use anyhow::Context as _;
use caracal_collector::CollectorConfig;
use caracal_query::QueryConfig;
use caracal_store::{retention::RetentionConfig, ClickHouseConfig};
use serde::Deserialize;

/// The current config file format version.
pub const CONFIG_VERSION: u32 = 1;

/// Everything Caracal can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaracalConfig {
    /// Format version of the file (1).
    pub version: u32,
    /// ClickHouse connection.
    pub clickhouse: ClickHouseSection,
    /// Collector settings.
    pub collector: CollectorConfig,
    /// Query settings.
    pub query: QueryConfig,
    /// Retention per table family.
    pub retention: RetentionConfig,
}

impl Default for CaracalConfig {
    fn default() -> Self {
        Self {
            version: CONFIG_VERSION,
            clickhouse: ClickHouseSection::default(),
            collector: CollectorConfig::default(),
            query: QueryConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

/// The `[clickhouse]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseSection {
    /// HTTP URL (`CARACAL_CLICKHOUSE_URL`).
    pub url: String,
    /// Database (`CARACAL_CLICKHOUSE_DATABASE`).
    pub database: String,
    /// User (`CARACAL_CLICKHOUSE_USER`).
    pub user: String,
    /// Password (`CARACAL_CLICKHOUSE_PASSWORD`); never printed.
    pub password: String,
}

impl Default for ClickHouseSection {
    fn default() -> Self {
        let defaults = ClickHouseConfig::default();
        Self {
            url: defaults.url,
            database: defaults.database,
            user: defaults.user,
            password: defaults.password,
        }
    }
}

impl ClickHouseSection {
    /// The store's connection settings.
    pub fn to_store_config(&self) -> ClickHouseConfig {
        ClickHouseConfig {
            url: self.url.clone(),
            database: self.database.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
        }
    }
}

impl CaracalConfig {
    /// Reads a TOML file; unknown keys are errors.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read config file {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses TOML text and checks the version.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text)?;
        anyhow::ensure!(
            config.version == CONFIG_VERSION,
            "config version {} is not supported (expected {CONFIG_VERSION})",
            config.version
        );
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_configs_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/config");
        let mut num_files = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .extension()
                .is_some_and(|extension| extension == "toml")
            {
                CaracalConfig::from_file(&path).unwrap();
                num_files += 1;
            }
        }
        assert!(num_files > 0);
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(CaracalConfig::from_toml("version = 1\n[collector]\nbogus = 1\n").is_err());
        assert!(CaracalConfig::from_toml("version = 2\n").is_err());
        let config = CaracalConfig::from_toml("[query]\nhttp_addr = \"127.0.0.1:9999\"\n").unwrap();
        assert_eq!(config.query.http_addr.port(), 9999);
        assert_eq!(config.collector.otlp_grpc_addr.port(), 4317);
    }

    #[test]
    fn tokens_are_read_and_checked_with_the_file() {
        let config = CaracalConfig::from_toml(
            "[[collector.ingest_tokens]]\ntoken = \"in-1\"\ntenant = \"team-a\"\n\
             [[query.tokens]]\ntoken = \"q-1\"\ntenant = \"team-a\"\n",
        )
        .unwrap();
        assert_eq!(
            config
                .collector
                .ingest_tokens
                .tenant_for(Some(b"Bearer in-1")),
            Ok("team-a")
        );
        assert_eq!(
            config.query.tokens.tenant_for(Some(b"Bearer q-1")),
            Ok("team-a")
        );
        let invalid = "[[collector.ingest_tokens]]\ntoken = \"in-1\"\ntenant = \"a b\"\n";
        let error = format!("{:#}", CaracalConfig::from_toml(invalid).unwrap_err());
        assert!(error.contains("tenant must be"), "{error}");
        assert!(!error.contains("in-1"), "{error}");
    }
}

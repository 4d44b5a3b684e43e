//! The query service's configuration.

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

/// Default address of the query API and UI.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";

/// Query settings; every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Listen address of the API and UI (`CARACAL_HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// Folder of the built web UI; when missing, `/` explains how to build it.
    pub ui_dir: PathBuf,
    /// Traces returned by a search when the request names no limit.
    pub default_limit: u32,
    /// Largest limit a search may ask for.
    pub max_limit: u32,
    /// Search window when the request names no start, in seconds.
    pub default_lookback_secs: u64,
    /// Query tokens (`Authorization: Bearer <token>`) and their tenants
    /// (`CARACAL_QUERY_TOKENS` as `token=tenant,...`): every query answers from the
    /// caller's tenant only. Without any, everything is the default tenant and the
    /// service may listen on a loopback address only.
    pub tokens: caracal_model::tenant::TokenTable,
    /// Allow listening beyond loopback without query tokens.
    pub allow_unauthenticated_remote: bool,
}

impl QueryConfig {
    /// Refuses to serve data on a non-loopback `address` without query tokens (unless
    /// explicitly allowed).
    pub fn check_exposure(&self) -> Result<(), String> {
        caracal_model::tenant::check_exposure(
            &self.tokens,
            self.allow_unauthenticated_remote,
            self.http_addr,
            "query.tokens (CARACAL_QUERY_TOKENS)",
        )
    }
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            http_addr: DEFAULT_HTTP_ADDR.parse().expect("valid default"),
            ui_dir: PathBuf::from("ui/dist"),
            default_limit: 20,
            max_limit: 1_500,
            default_lookback_secs: 2 * 86_400,
            tokens: caracal_model::tenant::TokenTable::default(),
            allow_unauthenticated_remote: false,
        }
    }
}

//! Tenants and the tokens that name them.
//!
//! A [`TokenTable`] maps bearer tokens to tenants. It is built from configuration
//! ([`TokenEntry`] list, or the `token=tenant,...` text of an environment variable), is
//! compared in constant time, and never prints a token: its `Debug` shows tenants only.
//! With an empty table every caller is [`DEFAULT_TENANT`].

use serde::Deserialize;
use subtle::ConstantTimeEq as _;

/// Tenant that owns data when no tokens are configured.
pub const DEFAULT_TENANT: &str = "default";

/// Longest tenant name; tenants are labels, not payloads.
pub const MAX_TENANT_LEN: usize = 64;

/// One configured token.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// The secret a client presents as `Authorization: Bearer <token>`.
    pub token: String,
    /// The tenant it stands for.
    pub tenant: String,
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TokenEntry")
            .field("token", &"<redacted>")
            .field("tenant", &self.tenant)
            .finish()
    }
}

/// Why a token table could not be built, or a caller not identified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TenantError {
    /// A configured entry is unusable.
    #[error("invalid token entry {index}: {reason}")]
    InvalidEntry {
        /// Position in the configuration (0-based).
        index: usize,
        /// What is wrong (never the token itself).
        reason: &'static str,
    },
    /// Tokens are configured and the request carries none.
    #[error("missing bearer token")]
    MissingToken,
    /// The request's token is not configured.
    #[error("unknown bearer token")]
    UnknownToken,
}

/// Bearer tokens and their tenants; in configuration, a list of [`TokenEntry`]
/// (checked when the configuration is read).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<TokenEntry>")]
pub struct TokenTable {
    entries: Vec<TokenEntry>,
}

impl TryFrom<Vec<TokenEntry>> for TokenTable {
    type Error = TenantError;

    fn try_from(entries: Vec<TokenEntry>) -> Result<Self, Self::Error> {
        Self::new(entries)
    }
}

impl std::fmt::Debug for TokenTable {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_list()
            .entries(self.entries.iter().map(|entry| &entry.tenant))
            .finish()
    }
}

impl TokenTable {
    /// A table of `entries`: tokens non-empty, unique and printable, tenants
    /// `[A-Za-z0-9_.-]{1,64}`.
    pub fn new(entries: Vec<TokenEntry>) -> Result<Self, TenantError> {
        for (index, entry) in entries.iter().enumerate() {
            let invalid = |reason| TenantError::InvalidEntry { index, reason };
            if entry.token.is_empty() {
                return Err(invalid("empty token"));
            }
            if !entry.token.bytes().all(|byte| byte.is_ascii_graphic()) {
                return Err(invalid("token has spaces or non-ASCII characters"));
            }
            if !is_valid_tenant(&entry.tenant) {
                return Err(invalid("tenant must be 1-64 of A-Z a-z 0-9 _ . -"));
            }
            if entries[..index]
                .iter()
                .any(|other| other.token == entry.token)
            {
                return Err(invalid("token listed twice"));
            }
        }
        Ok(Self { entries })
    }

    /// Parses `token=tenant[,token=tenant...]` (an environment variable's form).
    pub fn parse(text: &str) -> Result<Self, TenantError> {
        let entries = text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .enumerate()
            .map(|(index, item)| {
                let (token, tenant) = item.rsplit_once('=').ok_or(TenantError::InvalidEntry {
                    index,
                    reason: "expected token=tenant",
                })?;
                Ok(TokenEntry {
                    token: token.trim().to_owned(),
                    tenant: tenant.trim().to_owned(),
                })
            })
            .collect::<Result<Vec<_>, TenantError>>()?;
        Self::new(entries)
    }

    /// Whether no tokens are configured (everything is [`DEFAULT_TENANT`]).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tenant of a request with this `Authorization` header value (or gRPC
    /// `authorization` metadata), if any.
    pub fn tenant_for(&self, authorization: Option<&[u8]>) -> Result<&str, TenantError> {
        if self.entries.is_empty() {
            return Ok(DEFAULT_TENANT);
        }
        let token = authorization
            .and_then(bearer_token)
            .ok_or(TenantError::MissingToken)?;
        // Every entry is compared, in constant time, so timing tells nothing.
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.token.as_bytes().ct_eq(token)) {
                found = Some(entry.tenant.as_str());
            }
        }
        found.ok_or(TenantError::UnknownToken)
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
        .filter(|token| !token.is_empty())
}

/// Refuses a non-loopback `address` when `tokens` is empty, unless
/// `allow_unauthenticated_remote`: without tokens, anyone who can connect is the
/// default tenant. `setting` names the token setting for the message.
pub fn check_exposure(
    tokens: &TokenTable,
    allow_unauthenticated_remote: bool,
    address: std::net::SocketAddr,
    setting: &str,
) -> Result<(), String> {
    if tokens.is_empty() && !allow_unauthenticated_remote && !address.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {address} without tokens: configure {setting}, listen on \
             a loopback address, or set allow_unauthenticated_remote"
        ));
    }
    Ok(())
}

/// Whether `tenant` is a usable tenant name.
pub fn is_valid_tenant(tenant: &str) -> bool {
    (1..=MAX_TENANT_LEN).contains(&tenant.len())
        && tenant
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_tenants() {
        let table = TokenTable::parse("s3cret-a=team-a, s3cret-b=team-b").unwrap();
        assert_eq!(table.tenant_for(Some(b"Bearer s3cret-a")), Ok("team-a"));
        assert_eq!(table.tenant_for(Some(b"bearer s3cret-b ")), Ok("team-b"));
        assert_eq!(table.tenant_for(None), Err(TenantError::MissingToken));
        assert_eq!(
            table.tenant_for(Some(b"Basic s3cret-a")),
            Err(TenantError::MissingToken)
        );
        assert_eq!(
            table.tenant_for(Some(b"Bearer s3cret")),
            Err(TenantError::UnknownToken)
        );
        assert_eq!(TokenTable::default().tenant_for(None), Ok(DEFAULT_TENANT));
    }

    #[test]
    fn bad_entries_are_refused_without_echoing_the_token() {
        for text in ["=team", "zq9=", "zq9=bad tenant", "zq9=a,zq9=b", "zq9"] {
            let error = TokenTable::parse(text).unwrap_err();
            assert!(!error.to_string().contains("zq9"), "{error}");
        }
        let table = TokenTable::parse("hunter2=ops").unwrap();
        assert!(!format!("{table:?}").contains("hunter2"));
        let entry = TokenEntry {
            token: "hunter2".into(),
            tenant: "ops".into(),
        };
        assert!(!format!("{entry:?}").contains("hunter2"));
    }
}

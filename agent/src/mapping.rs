//! How CAT transaction types map to OpenTelemetry span kinds and dependency peers.
//!
//! | CAT type (any case)            | span kind | peer type   |
//! |--------------------------------|-----------|-------------|
//! | `URL`                          | SERVER    | none        |
//! | `Call`, `RPC`                  | CLIENT    | `service`   |
//! | `SQL`, `Cache`                 | CLIENT    | `database`  |
//! | `MQ`                           | CLIENT    | `messaging` |
//! | anything else                  | INTERNAL  | none        |
//!
//! For a client type, the part of the transaction name before its first `:` names the
//! peer: `Call` `orders:POST /orders` calls the service `orders`, `SQL`
//! `postgresql:INSERT orders` uses the database `postgresql` (which is also the span's
//! `db.system` unless a `db.system` data key says otherwise). The aggregate name is the
//! whole transaction name. [`Transaction::set_peer`](crate::Transaction::set_peer) and
//! [`Transaction::set_kind`](crate::Transaction::set_kind) override both rules.

use caracal_model::span::SpanKind;

/// What a client aggregate's peer is, as the collector's dependency edges label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PeerType {
    /// No peer: server and internal work.
    None,
    /// Another instrumented service.
    Service,
    /// A database or cache.
    Database,
    /// A message system.
    Messaging,
}

impl PeerType {
    /// The label the collector stores (`Aggregate::peer_type`); empty for none.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Service => "service",
            Self::Database => "database",
            Self::Messaging => "messaging",
        }
    }
}

/// The span kind of a CAT type.
pub(crate) fn kind_of(span_type: &str) -> SpanKind {
    if span_type.eq_ignore_ascii_case("URL") {
        SpanKind::Server
    } else if peer_type_of(span_type) != PeerType::None {
        SpanKind::Client
    } else {
        SpanKind::Internal
    }
}

/// The kind of peer a CAT type calls.
pub(crate) fn peer_type_of(span_type: &str) -> PeerType {
    const TABLE: [(&str, PeerType); 5] = [
        ("Call", PeerType::Service),
        ("RPC", PeerType::Service),
        ("SQL", PeerType::Database),
        ("Cache", PeerType::Database),
        ("MQ", PeerType::Messaging),
    ];
    TABLE
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(span_type))
        .map_or(PeerType::None, |(_, peer_type)| *peer_type)
}

/// The peer named by a client transaction name: the text before the first `:`.
pub(crate) fn peer_of(name: &str) -> &str {
    name.split_once(':').map_or("", |(peer, _)| peer.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(span_type: &str, name: &str, expected: (SpanKind, PeerType, &str)) {
        let peer_type = peer_type_of(span_type);
        let peer = if peer_type == PeerType::None {
            ""
        } else {
            peer_of(name)
        };
        assert_eq!(
            (kind_of(span_type), peer_type, peer),
            expected,
            "{span_type} {name}"
        );
    }

    #[test]
    fn maps_cat_types() {
        check("URL", "GET /", (SpanKind::Server, PeerType::None, ""));
        check("url", "GET /", (SpanKind::Server, PeerType::None, ""));
        check(
            "Call",
            "orders:POST /orders",
            (SpanKind::Client, PeerType::Service, "orders"),
        );
        check(
            "RPC",
            "Orders.create",
            (SpanKind::Client, PeerType::Service, ""),
        );
        check(
            "SQL",
            "postgresql:SELECT",
            (SpanKind::Client, PeerType::Database, "postgresql"),
        );
        check(
            "Cache",
            "redis:GET cart",
            (SpanKind::Client, PeerType::Database, "redis"),
        );
        check(
            "MQ",
            "kafka:orders",
            (SpanKind::Client, PeerType::Messaging, "kafka"),
        );
        check("Job", "a:b", (SpanKind::Internal, PeerType::None, ""));
    }
}

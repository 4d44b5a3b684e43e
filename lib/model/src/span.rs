//! Span kinds and status codes, with their OTLP numbers and Jaeger names.

/// OTLP span kinds, stored as their OTLP number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SpanKind {
    /// Not set by the instrumentation.
    Unspecified = 0,
    /// Work inside one service.
    Internal = 1,
    /// Handling of an incoming request.
    Server = 2,
    /// An outgoing request.
    Client = 3,
    /// Sending a message.
    Producer = 4,
    /// Receiving a message.
    Consumer = 5,
}

impl SpanKind {
    /// All kinds, in OTLP order.
    pub const ALL: [SpanKind; 6] = [
        Self::Unspecified,
        Self::Internal,
        Self::Server,
        Self::Client,
        Self::Producer,
        Self::Consumer,
    ];

    /// Reads an OTLP kind number; unknown numbers read as unspecified.
    pub fn from_otlp(number: i32) -> Self {
        match number {
            1 => Self::Internal,
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Unspecified,
        }
    }

    /// Lowercase name as Jaeger shows it in the `span.kind` tag and `spanKind` parameter.
    /// Unspecified is the empty string.
    pub fn jaeger_name(self) -> &'static str {
        match self {
            Self::Unspecified => "",
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }

    /// Parses a Jaeger kind name (case-insensitive, `unspecified` allowed).
    pub fn from_jaeger_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        if lower == "unspecified" {
            return Some(Self::Unspecified);
        }
        Self::ALL
            .into_iter()
            .find(|kind| kind.jaeger_name() == lower)
    }
}

/// OTLP status codes, stored as their OTLP number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StatusCode {
    /// Not set.
    Unset = 0,
    /// Explicitly OK.
    Ok = 1,
    /// Failed.
    Error = 2,
}

impl StatusCode {
    /// Reads an OTLP status number; unknown numbers read as unset.
    pub fn from_otlp(number: i32) -> Self {
        match number {
            1 => Self::Ok,
            2 => Self::Error,
            _ => Self::Unset,
        }
    }

    /// The `otel.status_code` tag value Jaeger shows (`OK`, `ERROR`; unset has none).
    pub fn otel_name(self) -> Option<&'static str> {
        match self {
            Self::Unset => None,
            Self::Ok => Some("OK"),
            Self::Error => Some("ERROR"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_jaeger_names() {
        for kind in SpanKind::ALL {
            assert_eq!(SpanKind::from_otlp(kind as i32), kind);
            if kind != SpanKind::Unspecified {
                assert_eq!(SpanKind::from_jaeger_name(kind.jaeger_name()), Some(kind));
            }
        }
        assert_eq!(SpanKind::from_jaeger_name("SERVER"), Some(SpanKind::Server));
        assert_eq!(SpanKind::from_jaeger_name("bogus"), None);
    }
}

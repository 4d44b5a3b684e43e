//! Errors a receiver reports to its client, mapped once to gRPC and HTTP.

/// Why a whole request was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The body could not be decoded.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The body is larger than the configured limit.
    #[error("request of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size seen (at least).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The content type or encoding is not supported.
    #[error("unsupported media: {0}")]
    UnsupportedMedia(String),
    /// The request holds more spans than the configured limit.
    #[error("request of {count} spans exceeds the limit of {limit} spans per request")]
    TooManySpans {
        /// Spans in the request.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The writer queue or the memory bound is full: retry later.
    #[error("collector overloaded, retry later")]
    Overloaded,
    /// ClickHouse is not taking data and the spool is full: retry later.
    #[error("spool full while storage is unavailable, retry later")]
    SpoolFull,
    /// ClickHouse did not take the data: retry later.
    #[error("storage unavailable, retry later")]
    StorageUnavailable,
    /// The collector is shutting down.
    #[error("collector shutting down")]
    ShuttingDown,
    /// Ingest tokens are configured and the request's is missing or unknown.
    #[error("unauthenticated: {0}")]
    Unauthenticated(#[from] caracal_model::tenant::TenantError),
}

/// Seconds a client should wait before retrying a retryable error.
pub const RETRY_AFTER_SECONDS: u64 = 1;

impl IngestError {
    /// Stable label, used in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::TooLarge { .. } => "too_large",
            Self::TooManySpans { .. } => "too_many_spans",
            Self::UnsupportedMedia(_) => "unsupported_media",
            Self::Overloaded => "overloaded",
            Self::SpoolFull => "spool_full",
            Self::StorageUnavailable => "storage_unavailable",
            Self::ShuttingDown => "shutting_down",
            Self::Unauthenticated(_) => "unauthenticated",
        }
    }

    /// Whether the client should retry the same request.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Overloaded | Self::SpoolFull | Self::StorageUnavailable | Self::ShuttingDown
        )
    }

    /// The gRPC status; retryable ones carry a `google.rpc.RetryInfo` detail saying
    /// when to retry, which OTLP exporters honour.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Code;
        let message = self.to_string();
        let code = match self {
            Self::Malformed(_) | Self::UnsupportedMedia(_) => Code::InvalidArgument,
            Self::TooLarge { .. } | Self::TooManySpans { .. } => Code::ResourceExhausted,
            Self::Overloaded | Self::SpoolFull => Code::ResourceExhausted,
            Self::StorageUnavailable | Self::ShuttingDown => Code::Unavailable,
            Self::Unauthenticated(_) => Code::Unauthenticated,
        };
        if !self.is_retryable() {
            return tonic::Status::new(code, message);
        }
        let details = tonic_types::ErrorDetails::with_retry_info(Some(
            std::time::Duration::from_secs(RETRY_AFTER_SECONDS),
        ));
        <tonic::Status as tonic_types::StatusExt>::with_error_details(code, message, details)
    }

    /// The HTTP status.
    pub fn http_status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. } | Self::TooManySpans { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Overloaded | Self::SpoolFull => StatusCode::TOO_MANY_REQUESTS,
            Self::StorageUnavailable | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        }
    }
}

//! Errors a receiver reports to its client, mapped once to gRPC and HTTP.

/// Why a whole request was not accepted.
#[derive(Debug, thiserror::Error)]
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
    /// The writer queue is full: retry later.
    #[error("collector overloaded, retry later")]
    Overloaded,
    /// ClickHouse did not take the data: retry later.
    #[error("storage unavailable, retry later")]
    StorageUnavailable,
    /// The collector is shutting down.
    #[error("collector shutting down")]
    ShuttingDown,
}

/// Seconds a client should wait before retrying a retryable error.
pub const RETRY_AFTER_SECONDS: u64 = 1;

impl IngestError {
    /// Stable label, used in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::TooLarge { .. } => "too_large",
            Self::UnsupportedMedia(_) => "unsupported_media",
            Self::Overloaded => "overloaded",
            Self::StorageUnavailable => "storage_unavailable",
            Self::ShuttingDown => "shutting_down",
        }
    }

    /// Whether the client should retry the same request.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Overloaded | Self::StorageUnavailable | Self::ShuttingDown
        )
    }

    /// The gRPC status.
    pub fn to_status(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            Self::Malformed(_) => tonic::Status::invalid_argument(message),
            Self::TooLarge { .. } => tonic::Status::resource_exhausted(message),
            Self::UnsupportedMedia(_) => tonic::Status::invalid_argument(message),
            Self::Overloaded => tonic::Status::resource_exhausted(message),
            Self::StorageUnavailable | Self::ShuttingDown => tonic::Status::unavailable(message),
        }
    }

    /// The HTTP status.
    pub fn http_status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Self::StorageUnavailable | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

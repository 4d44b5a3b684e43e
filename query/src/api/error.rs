//! The API's error type: 4xx show their detail, 5xx are logged and hidden.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

use super::Envelope;

/// One error in Jaeger's envelope.
#[derive(Debug, Serialize)]
pub struct JaegerError {
    /// HTTP status code.
    pub code: u16,
    /// Message.
    pub msg: String,
}

/// What went wrong serving a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is wrong; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// Nothing matches.
    #[error("{0}")]
    NotFound(String),
    /// Query tokens are configured and the request's is missing or unknown.
    #[error("unauthenticated: {0}")]
    Unauthenticated(#[from] caracal_model::tenant::TenantError),
    /// The store failed.
    #[error("storage error")]
    Store(#[from] caracal_store::Error),
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Store(error) => {
                tracing::error!(%error, "query failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = Envelope {
            data: serde_json::Value::Null,
            total: 0,
            limit: 0,
            offset: 0,
            errors: Some(vec![JaegerError {
                code: status.as_u16(),
                msg: self.to_string(),
            }]),
        };
        (status, Json(body)).into_response()
    }
}

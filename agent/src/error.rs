//! The agent's one error type.
//!
//! Recording never fails: transactions, events and metrics return nothing, and a failure
//! on the background side is counted and warned about once. Only [`Agent::shutdown`],
//! [`GrpcExporter::new`] and [`ReportExporter::export`] return this enum.
//!
//! [`Agent::shutdown`]: crate::Agent::shutdown
//! [`GrpcExporter::new`]: crate::exporter::GrpcExporter::new
//! [`ReportExporter::export`]: crate::exporter::ReportExporter::export

use std::error::Error as StdError;

/// `Result` with the agent's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong outside the recording path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// [`Agent::shutdown`](crate::Agent::shutdown) was already called.
    #[error("agent is already shut down")]
    AlreadyShutDown,
    /// The timeout passed before every pending report was delivered.
    #[error("shutdown timed out with {num_pending_reports} reports undelivered")]
    ShutdownTimeout {
        /// Reports still waiting (they are lost).
        num_pending_reports: usize,
    },
    /// The background reporter is not running (it failed to start or stopped).
    #[error("agent reporter is not running")]
    ReporterGone,
    /// A collector address could not be parsed.
    #[error("invalid collector address {address:?}")]
    InvalidAddress {
        /// The address as given.
        address: String,
    },
    /// The ingest token cannot be sent as gRPC metadata (it must be printable ASCII).
    #[error("invalid ingest token (it must be printable ASCII)")]
    InvalidToken,
    /// A report could not be delivered.
    #[error("failed to export report")]
    Export(#[source] Box<dyn StdError + Send + Sync>),
}

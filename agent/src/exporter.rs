//! Where reports go: the collectors over gRPC, or anything implementing
//! [`ReportExporter`] (such as the [`InMemoryExporter`] of tests).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use caracal_proto::{AgentReport, ReportResponse, REPORT_PATH};
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};
use crate::registry::lock;

/// Time allowed to open a connection to one collector.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Time allowed for one report call, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

/// The future [`ReportExporter::export`] returns.
pub type ExportFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// Delivers reports.
///
/// Contract:
/// - `export` is called by the agent's reporter only, one call at a time, on its own
///   current-thread tokio runtime; it may await I/O and timers.
/// - The reporter may drop the future before it completes (at an interval boundary or
///   a shutdown deadline); the report then counts as not delivered and is retried.
/// - An `Ok` means the report is stored or will be; an `Err` means it must be retried.
///   Delivery may therefore happen twice: receivers dedup by `(instance, sequence)`.
/// - It must not panic; if it does, the reporter stops (the application is unaffected).
pub trait ReportExporter: Send + Sync + fmt::Debug + 'static {
    /// Delivers one report.
    fn export<'a>(&'a self, report: &'a AgentReport) -> ExportFuture<'a>;
}

/// Sends reports to Caracal collectors with the unary gRPC call
/// [`REPORT_PATH`], gzip-compressed, failing over from one address to the next.
#[derive(Debug)]
pub struct GrpcExporter {
    collectors: Vec<Collector>,
    /// `Bearer <token>`, sent as `authorization` metadata.
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    /// Index of the collector that answered last; tried first.
    current: AtomicUsize,
}

#[derive(Debug)]
struct Collector {
    address: String,
    channel: Channel,
}

impl GrpcExporter {
    /// An exporter for `addrs` (`host:port`, or a URI with `http://`). Connections are
    /// opened lazily, so this must run inside a tokio runtime but does no I/O.
    pub fn new(addrs: &[String]) -> Result<Self> {
        let collectors = addrs
            .iter()
            .map(|address| {
                let uri = if address.contains("://") {
                    address.clone()
                } else {
                    format!("http://{address}")
                };
                let endpoint = Endpoint::from_shared(uri)
                    .map_err(|_| Error::InvalidAddress {
                        address: address.clone(),
                    })?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(REQUEST_TIMEOUT)
                    .tcp_nodelay(true);
                Ok(Collector {
                    address: address.clone(),
                    channel: endpoint.connect_lazy(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if collectors.is_empty() {
            return Err(Error::InvalidAddress {
                address: String::new(),
            });
        }
        Ok(Self {
            collectors,
            authorization: None,
            current: AtomicUsize::new(0),
        })
    }

    /// Sends `token` as `authorization: Bearer <token>` with every report.
    pub fn with_token(mut self, token: &str) -> Result<Self> {
        let mut value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            format!("Bearer {token}")
                .parse()
                .map_err(|_| Error::InvalidToken)?;
        value.set_sensitive(true);
        self.authorization = Some(value);
        Ok(self)
    }

    async fn send(&self, collector: &Collector, report: &AgentReport) -> Result<()> {
        let mut grpc = tonic::client::Grpc::new(collector.channel.clone())
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip);
        let call = async {
            grpc.ready()
                .await
                .map_err(|error| Error::Export(error.into()))?;
            let codec = tonic_prost::ProstCodec::<AgentReport, ReportResponse>::default();
            let mut request = tonic::Request::new(report.clone());
            if let Some(authorization) = &self.authorization {
                request
                    .metadata_mut()
                    .insert("authorization", authorization.clone());
            }
            grpc.unary(request, PathAndQuery::from_static(REPORT_PATH), codec)
                .await
                .map_err(|status| Error::Export(status.into()))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
            Ok(Ok(response)) => {
                let response = response.into_inner();
                // Stored except for the refused parts: a bug to see, not to retry.
                if response.rejected > 0 {
                    tracing::warn!(
                        collector = %collector.address,
                        rejected = response.rejected,
                        message = %response.error_message,
                        "collector refused part of a report"
                    );
                }
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            Err(elapsed) => Err(Error::Export(elapsed.into())),
        }
    }
}

impl ReportExporter for GrpcExporter {
    fn export<'a>(&'a self, report: &'a AgentReport) -> ExportFuture<'a> {
        Box::pin(async move {
            let first = self.current.load(Ordering::Relaxed);
            let mut last_error = None;
            for offset in 0..self.collectors.len() {
                let index = (first + offset) % self.collectors.len();
                let collector = &self.collectors[index];
                match self.send(collector, report).await {
                    Ok(()) => {
                        self.current.store(index, Ordering::Relaxed);
                        return Ok(());
                    }
                    Err(error) => {
                        tracing::debug!(collector = %collector.address, %error, "collector did not take the report");
                        last_error = Some(error);
                    }
                }
            }
            Err(last_error.unwrap_or(Error::ReporterGone))
        })
    }
}

/// Keeps every report in memory: for tests and examples without a collector.
///
/// Clones share the same reports. [`InMemoryExporter::set_failing`] makes exports fail,
/// to exercise retries and the memory bound.
#[derive(Debug, Clone, Default)]
pub struct InMemoryExporter {
    reports: Arc<Mutex<Vec<AgentReport>>>,
    failing: Arc<AtomicBool>,
}

/// The error an [`InMemoryExporter`] fails with.
#[derive(Debug, thiserror::Error)]
#[error("in-memory exporter set to fail")]
struct InMemoryFailure;

impl InMemoryExporter {
    /// An exporter with no reports that accepts everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Copies of the reports received so far, oldest first.
    pub fn reports(&self) -> Vec<AgentReport> {
        lock(&self.reports).clone()
    }

    /// Removes and returns the reports received so far.
    pub fn take_reports(&self) -> Vec<AgentReport> {
        std::mem::take(&mut *lock(&self.reports))
    }

    /// Makes further exports fail (`true`) or succeed (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }
}

impl ReportExporter for InMemoryExporter {
    fn export<'a>(&'a self, report: &'a AgentReport) -> ExportFuture<'a> {
        Box::pin(async move {
            if self.failing.load(Ordering::Relaxed) {
                return Err(Error::Export(InMemoryFailure.into()));
            }
            lock(&self.reports).push(report.clone());
            Ok(())
        })
    }
}

/// A collector stand-in serving the report method over real gRPC (tests only).
#[cfg(test)]
pub(crate) mod fake_collector {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::task::{Context, Poll};

    use caracal_proto::SERVICE_NAME;
    use tonic::codec::EnabledCompressionEncodings;
    use tonic::codegen::{http, BoxFuture, Service, StdError};
    use tonic::server::{Grpc, NamedService, UnaryService};

    use super::*;

    /// Reports received, each with whether it arrived gzip-compressed.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct FakeCollector {
        pub(crate) received: Arc<Mutex<Vec<(AgentReport, bool)>>>,
    }

    impl NamedService for FakeCollector {
        const NAME: &'static str = SERVICE_NAME;
    }

    impl<B> Service<http::Request<B>> for FakeCollector
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<B>) -> Self::Future {
            assert_eq!(request.uri().path(), REPORT_PATH);
            let gzip = request
                .headers()
                .get("grpc-encoding")
                .is_some_and(|value| value == "gzip");
            let handler = Handler {
                collector: self.clone(),
                gzip,
            };
            Box::pin(async move {
                let mut encodings = EnabledCompressionEncodings::default();
                encodings.enable(CompressionEncoding::Gzip);
                let mut grpc =
                    Grpc::new(tonic_prost::ProstCodec::<ReportResponse, AgentReport>::default())
                        .apply_compression_config(
                            encodings,
                            EnabledCompressionEncodings::default(),
                        );
                Ok(grpc.unary(handler, request).await)
            })
        }
    }

    struct Handler {
        collector: FakeCollector,
        gzip: bool,
    }

    impl UnaryService<AgentReport> for Handler {
        type Response = ReportResponse;
        type Future = BoxFuture<tonic::Response<ReportResponse>, tonic::Status>;

        fn call(&mut self, request: tonic::Request<AgentReport>) -> Self::Future {
            lock(&self.collector.received).push((request.into_inner(), self.gzip));
            Box::pin(async {
                Ok(tonic::Response::new(ReportResponse {
                    stored: true,
                    ..ReportResponse::default()
                }))
            })
        }
    }

    /// Serves a fake collector on a free loopback port until the runtime ends.
    pub(crate) async fn start() -> (FakeCollector, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let collector = FakeCollector::default();
        let service = collector.clone();
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        (collector, address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grpc_exporter_sends_gzip_and_fails_over() {
        let (collector, address) = fake_collector::start().await;
        let exporter = GrpcExporter::new(&["127.0.0.1:1".to_owned(), address.to_string()]).unwrap();
        let report = AgentReport {
            sequence: 9,
            service: "orders".into(),
            ..Default::default()
        };
        exporter.export(&report).await.unwrap();
        assert_eq!(
            exporter.current.load(Ordering::Relaxed),
            1,
            "the live collector is tried first next"
        );
        exporter.export(&report).await.unwrap();
        let received = lock(&collector.received).clone();
        assert_eq!(received, [(report.clone(), true), (report, true)]);
    }

    #[tokio::test]
    async fn grpc_exporter_fails_over_and_reports_errors() {
        assert!(matches!(
            GrpcExporter::new(&["bad address with spaces".into()]),
            Err(Error::InvalidAddress { .. })
        ));
        assert!(GrpcExporter::new(&[]).is_err());
        // Two addresses where nothing listens: both are tried and the error comes back.
        let addrs = vec!["127.0.0.1:1".to_owned(), "http://127.0.0.1:1".to_owned()];
        let exporter = GrpcExporter::new(&addrs).unwrap();
        let report = AgentReport::default();
        assert!(matches!(
            exporter.export(&report).await,
            Err(Error::Export(_))
        ));
    }

    #[tokio::test]
    async fn in_memory_exporter_keeps_reports_or_fails() {
        let exporter = InMemoryExporter::new();
        let report = AgentReport {
            sequence: 3,
            ..Default::default()
        };
        exporter.export(&report).await.unwrap();
        exporter.set_failing(true);
        assert!(exporter.export(&report).await.is_err());
        assert_eq!(exporter.take_reports(), [report]);
        assert!(exporter.reports().is_empty());
    }
}

//! Test support: a real ClickHouse with one database per test, and Caracal's collector
//! and query service started in process on ports the OS picks.
//!
//! Layout:
//! - [`clickhouse_url`], [`ensure_clickhouse`], [`test_store`]: the real server, started
//!   through `deploy/clickhouse.sh` when nothing answers, and a fresh database per test.
//! - [`TestStack`]: collector + query on port 0, stopped on drop; [`metric_value`] reads
//!   its `/metrics`.
//! - [`fixtures_dir`]: the shared fixtures (`../shared/fixtures`).
//! - [`OutageProxy`]: a TCP forwarder to ClickHouse that a test cuts to play an outage.
//! - [`otlp`]: OTLP request builders; [`wait_for`]: polling until a probe answers.
//!
//! Tests stay silent unless `TEST_LOG` is set.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

use std::{net::SocketAddr, path::PathBuf, process::Command, sync::OnceLock, time::Duration};

use caracal_store::{ClickHouseConfig, Store};

pub mod otlp;
mod proxy;
pub use proxy::OutageProxy;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shared fixtures: `CARACAL_FIXTURES`, or `../shared/fixtures` beside the checkout.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("CARACAL_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/fixtures"))
}

/// ClickHouse's HTTP URL: `CARACAL_CLICKHOUSE_URL` or the local default.
pub fn clickhouse_url() -> String {
    std::env::var("CARACAL_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".to_owned())
}

fn pings(url: &str) -> bool {
    let Some(host_port) = url.strip_prefix("http://") else {
        return false;
    };
    let host_port = host_port.trim_end_matches('/');
    let Ok(mut stream) = std::net::TcpStream::connect(host_port) else {
        return false;
    };
    use std::io::{Read, Write};
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /ping HTTP/1.0\r\nHost: {host_port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
}

/// Makes sure ClickHouse answers, starting it with `deploy/clickhouse.sh start` if not.
///
/// # Panics
/// When the server cannot be started: every test using it needs it.
pub fn ensure_clickhouse() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let url = clickhouse_url();
        if pings(&url) {
            return;
        }
        let status = Command::new("bash")
            .arg(repo_root().join("deploy/clickhouse.sh"))
            .arg("start")
            .status()
            .expect("failed to run deploy/clickhouse.sh");
        assert!(status.success(), "deploy/clickhouse.sh start failed");
        assert!(pings(&url), "clickhouse does not answer at {url}");
    });
}

/// A store on a fresh, migrated database named after the test.
pub async fn test_store(test_name: &str) -> Store {
    ensure_clickhouse();
    init_logging();
    let database = format!("test_{test_name}");
    let config = ClickHouseConfig {
        url: clickhouse_url(),
        database: database.clone(),
        ..ClickHouseConfig::default()
    };
    let store = Store::new(&config).expect("valid test database name");
    store.drop_database().await.expect("drop test database");
    store.migrate().await.expect("migrate test database");
    store
}

fn init_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,hyper=info,h2=info",
            ))
            .with_test_writer()
            .try_init();
    }
}

/// The value of one series in a Prometheus text scrape: `series` is the name with its
/// labels as the text shows them (`caracal_received_requests_total{receiver="zipkin"}`).
pub fn metric_value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == series).then(|| value.parse().ok()).flatten()
    })
}

/// Collector and query service running in this process, wired as `caracal up` wires
/// them (the collector's metrics are served on the query address too).
#[derive(Debug)]
pub struct TestStack {
    /// OTLP/gRPC address.
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP address (also `GET /metrics`).
    pub otlp_http: SocketAddr,
    /// Zipkin v2 address.
    pub zipkin: SocketAddr,
    /// Query API address (also `GET /metrics`).
    pub query: SocketAddr,
    /// The store both use.
    pub store: Store,
    /// The collector's metrics.
    pub metrics: caracal_collector::CollectorMetrics,
    stop: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
    http: reqwest::Client,
    spool_dir: Option<std::path::PathBuf>,
}

/// Polls `probe` every 100 ms until it answers, for at most `timeout`.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Collector settings for tests: short batch and aggregate periods, and a spool
/// directory of its own (removed when the [`TestStack`] using it is dropped, unless it
/// holds batches for a later stack).
pub fn test_collector_config() -> caracal_collector::CollectorConfig {
    static NEXT_SPOOL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let number = NEXT_SPOOL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let spool_dir = std::env::temp_dir().join(format!(
        "caracal-test-spool-{}-{number}",
        std::process::id()
    ));
    caracal_collector::CollectorConfig {
        batch_period_ms: 50,
        aggregate_flush_ms: 200,
        spool_dir: Some(spool_dir),
        ..Default::default()
    }
}

async fn local_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port")
}

impl TestStack {
    /// Starts collector and query on `store` with test-friendly timings.
    pub async fn start(store: Store) -> Self {
        Self::start_with(store, test_collector_config()).await
    }

    /// Starts collector and query with the given collector settings.
    pub async fn start_with(
        store: Store,
        collector_config: caracal_collector::CollectorConfig,
    ) -> Self {
        let grpc = local_listener().await;
        Self::start_with_grpc(store, collector_config, grpc).await
    }

    /// Starts collector and query with test-friendly timings, the collector's OTLP/gRPC
    /// (and agent) receiver on `otlp_grpc`: for a collector coming back on a known port.
    pub async fn start_on(store: Store, otlp_grpc: TcpListener) -> Self {
        Self::start_with_grpc(store, test_collector_config(), otlp_grpc).await
    }

    async fn start_with_grpc(
        store: Store,
        collector_config: caracal_collector::CollectorConfig,
        grpc: TcpListener,
    ) -> Self {
        let http = local_listener().await;
        let zipkin = local_listener().await;
        let query = local_listener().await;
        let address = |listener: &TcpListener| listener.local_addr().expect("local addr");
        let (otlp_grpc, otlp_http, zipkin_addr, query_addr) = (
            address(&grpc),
            address(&http),
            address(&zipkin),
            address(&query),
        );
        let metrics = caracal_collector::CollectorMetrics::new();
        let spool_dir = collector_config.spool_dir.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let (query_stop, query_stopped) = oneshot::channel::<()>();
        let collector = tokio::spawn({
            let store = store.clone();
            let metrics = metrics.clone();
            async move {
                let listeners = caracal_collector::Listeners {
                    otlp_grpc: grpc,
                    otlp_http: http,
                    zipkin,
                };
                let shutdown = async move {
                    let _ = stopped.await;
                    let _ = query_stop.send(());
                };
                caracal_collector::run(collector_config, store, listeners, metrics, shutdown)
                    .await
                    .expect("collector runs");
            }
        });
        let query_task = tokio::spawn({
            let router = caracal_query::router(caracal_query::AppState {
                store: store.clone(),
                config: caracal_query::QueryConfig::default(),
            })
            .merge(caracal_collector::metrics::router(metrics.clone()));
            async move {
                caracal_query::serve(query, router, async move {
                    let _ = query_stopped.await;
                })
                .await
                .expect("query serves");
            }
        });
        Self {
            otlp_grpc,
            otlp_http,
            zipkin: zipkin_addr,
            query: query_addr,
            store,
            metrics,
            stop: Some(stop),
            tasks: vec![collector, query_task],
            http: reqwest::Client::new(),
            spool_dir,
        }
    }

    /// POSTs an OTLP/HTTP body; returns status and body.
    pub async fn post_otlp(&self, content_type: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let response = self
            .http
            .post(format!("http://{}/v1/traces", self.otlp_http))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("otlp/http request");
        let status = response.status().as_u16();
        (status, response.bytes().await.expect("body").to_vec())
    }

    /// POSTs a Zipkin v2 body to `/api/v2/spans`, with a `Content-Encoding` if given;
    /// returns status and JSON.
    pub async fn post_zipkin(
        &self,
        body: Vec<u8>,
        encoding_opt: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .post(format!("http://{}/api/v2/spans", self.zipkin))
            .header("content-type", "application/json")
            .body(body);
        if let Some(encoding) = encoding_opt {
            request = request.header("content-encoding", encoding);
        }
        let response = request.send().await.expect("zipkin request");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    /// GETs `/metrics` from `address` (the OTLP/HTTP or the query address); returns
    /// status, content type and the text.
    pub async fn scrape_metrics(&self, address: SocketAddr) -> (u16, String, String) {
        let response = self
            .http
            .get(format!("http://{address}/metrics"))
            .send()
            .await
            .expect("metrics request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (
            status,
            content_type,
            response.text().await.expect("metrics text"),
        )
    }

    /// The HTTP client the helpers use, for requests they do not cover.
    pub fn http_client(&self) -> &reqwest::Client {
        &self.http
    }

    /// GETs a query API path; returns status and JSON.
    pub async fn get_json(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> (u16, serde_json::Value) {
        let response = self
            .http
            .get(format!("http://{}{}", self.query, path))
            .query(params)
            .send()
            .await
            .expect("query request");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    /// Stops both services, draining the collector.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // An empty spool goes; one holding batches stays for the next stack on it.
        if let Some(dir) = &self.spool_dir {
            let holds_batches = std::fs::read_dir(dir).is_ok_and(|mut entries| {
                entries.any(|entry| {
                    entry.is_ok_and(|entry| {
                        entry.path().extension().is_some_and(|ext| ext == "batch")
                    })
                })
            });
            if !holds_batches {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

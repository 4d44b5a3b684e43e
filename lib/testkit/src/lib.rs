//! Test support: a real ClickHouse with one database per test, and Caracal's collector
//! and query service started in process on ports the OS picks.
//!
//! Layout:
//! - [`clickhouse_url`], [`ensure_clickhouse`], [`test_store`]: the real server, started
//!   through `deploy/clickhouse.sh` when nothing answers, and a fresh database per test.
//! - [`TestStack`]: collector + query on port 0, stopped on drop.
//! - [`fixtures_dir`]: the shared fixtures (`../shared/fixtures`).
//!
//! Tests stay silent unless `TEST_LOG` is set.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

use std::{net::SocketAddr, path::PathBuf, process::Command, sync::OnceLock, time::Duration};

use caracal_store::{ClickHouseConfig, Store};
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

/// Collector and query service running in this process.
#[derive(Debug)]
pub struct TestStack {
    /// OTLP/gRPC address.
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP address.
    pub otlp_http: SocketAddr,
    /// Query API address.
    pub query: SocketAddr,
    /// The store both use.
    pub store: Store,
    stop: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
    http: reqwest::Client,
}

async fn local_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port")
}

impl TestStack {
    /// Starts collector and query on `store` with test-friendly timings.
    pub async fn start(store: Store) -> Self {
        let collector_config = caracal_collector::CollectorConfig {
            batch_period_ms: 50,
            aggregate_flush_ms: 200,
            ..Default::default()
        };
        Self::start_with(store, collector_config).await
    }

    /// Starts collector and query with the given collector settings.
    pub async fn start_with(
        store: Store,
        collector_config: caracal_collector::CollectorConfig,
    ) -> Self {
        let grpc = local_listener().await;
        let http = local_listener().await;
        let query = local_listener().await;
        let addresses = (
            grpc.local_addr().expect("local addr"),
            http.local_addr().expect("local addr"),
            query.local_addr().expect("local addr"),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let (query_stop, query_stopped) = oneshot::channel::<()>();
        let collector = tokio::spawn({
            let store = store.clone();
            async move {
                let listeners = caracal_collector::Listeners {
                    otlp_grpc: grpc,
                    otlp_http: http,
                };
                let shutdown = async move {
                    let _ = stopped.await;
                    let _ = query_stop.send(());
                };
                caracal_collector::run(collector_config, store, listeners, shutdown)
                    .await
                    .expect("collector runs");
            }
        });
        let query_task = tokio::spawn({
            let router = caracal_query::router(caracal_query::AppState {
                store: store.clone(),
                config: caracal_query::QueryConfig::default(),
            });
            async move {
                caracal_query::serve(query, router, async move {
                    let _ = query_stopped.await;
                })
                .await
                .expect("query serves");
            }
        });
        Self {
            otlp_grpc: addresses.0,
            otlp_http: addresses.1,
            query: addresses.2,
            store,
            stop: Some(stop),
            tasks: vec![collector, query_task],
            http: reqwest::Client::new(),
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
    }
}

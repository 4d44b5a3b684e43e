//! `caracal`: one binary, one subcommand per role.
//!
//! Layout:
//! - `main.rs`: the command line, logging, signals and role wiring.
//! - `config.rs`: the typed configuration (file, then environment and flags).

mod bench;
mod config;

use std::{future::Future, path::PathBuf, time::Duration};

use anyhow::Context as _;
use caracal_model::tenant::TokenTable;
use caracal_store::Store;
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use crate::config::CaracalConfig;

/// Caracal: CAT-style distributed tracing and monitoring on ClickHouse.
///
/// Services send spans with OpenTelemetry (OTLP gRPC on 4317, OTLP HTTP on 4318), Zipkin
/// (v2 JSON on 9411) or the Caracal agent; the collector batches them into ClickHouse; the
/// query service answers the Jaeger-compatible API and serves the web UI on 8080.
#[derive(Debug, Parser)]
#[command(name = "caracal", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    options: CommonOptions,
    #[command(subcommand)]
    command: Command,
}

/// Settings shared by every role. Each flag also reads its environment variable; a flag
/// wins over the variable, and both win over the config file.
#[derive(Debug, Args)]
struct CommonOptions {
    /// TOML config file (see deploy/config/caracal.toml for every key and default).
    #[arg(long, global = true, env = "CARACAL_CONFIG")]
    config: Option<PathBuf>,
    /// ClickHouse HTTP URL [default: http://127.0.0.1:8123].
    #[arg(long, global = true, env = "CARACAL_CLICKHOUSE_URL")]
    clickhouse_url: Option<String>,
    /// ClickHouse database [default: caracal].
    #[arg(long, global = true, env = "CARACAL_CLICKHOUSE_DATABASE")]
    clickhouse_database: Option<String>,
    /// ClickHouse user [default: default].
    #[arg(long, global = true, env = "CARACAL_CLICKHOUSE_USER")]
    clickhouse_user: Option<String>,
    /// ClickHouse password [default: empty].
    #[arg(
        long,
        global = true,
        env = "CARACAL_CLICKHOUSE_PASSWORD",
        hide_env_values = true
    )]
    clickhouse_password: Option<String>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317].
    #[arg(long, global = true, env = "CARACAL_OTLP_GRPC_ADDR")]
    otlp_grpc_addr: Option<std::net::SocketAddr>,
    /// OTLP/HTTP listen address [default: 127.0.0.1:4318].
    #[arg(long, global = true, env = "CARACAL_OTLP_HTTP_ADDR")]
    otlp_http_addr: Option<std::net::SocketAddr>,
    /// Zipkin v2 listen address [default: 127.0.0.1:9411].
    #[arg(long, global = true, env = "CARACAL_ZIPKIN_ADDR")]
    zipkin_addr: Option<std::net::SocketAddr>,
    /// Query API and UI listen address [default: 127.0.0.1:8080].
    #[arg(long, global = true, env = "CARACAL_HTTP_ADDR")]
    http_addr: Option<std::net::SocketAddr>,
    /// Folder of the built web UI [default: ui/dist].
    #[arg(long, global = true, env = "CARACAL_UI_DIR")]
    ui_dir: Option<PathBuf>,
    /// Ingest tokens as `token=tenant,...` [default: none: one open tenant, loopback
    /// only].
    #[arg(
        long,
        global = true,
        env = "CARACAL_INGEST_TOKENS",
        hide_env_values = true
    )]
    ingest_tokens: Option<String>,
    /// Query tokens as `token=tenant,...` [default: none: one open tenant, loopback
    /// only].
    #[arg(
        long,
        global = true,
        env = "CARACAL_QUERY_TOKENS",
        hide_env_values = true
    )]
    query_tokens: Option<String>,
    /// Folder of the collector's durable spool [default: .caracal/spool].
    #[arg(long, global = true, env = "CARACAL_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run collector, query API and UI in one process (applies migrations first).
    ///
    /// Listens on the OTLP gRPC and HTTP, Zipkin and query/UI addresses, writes to
    /// ClickHouse, and drops expired partitions in the background; `GET /metrics` on the
    /// query address. Stops cleanly on Ctrl-C or SIGTERM, flushing in-memory batches.
    Up,
    /// Run only the collector (OTLP and Zipkin receivers, ClickHouse writer; metrics at
    /// `GET /metrics` on the OTLP/HTTP address).
    Collector,
    /// Run only the query API and UI.
    Query,
    /// Create the database and apply schema migrations, then exit.
    Migrate,
    /// Run a small system instrumented with the Caracal agent (gateway, orders, payments,
    /// inventory; two instances each; a database and a cache; errors and slow calls at
    /// known rates), sending to the collector at CARACAL_OTLP_GRPC_ADDR until stopped.
    Demo,
    /// Print every SQL statement Caracal sends, with sample values, as a JSON array
    /// (used to check the SQL on current ClickHouse through chDB).
    #[command(hide = true)]
    SqlCatalog,
    /// Measure throughput, storage and latency on this machine (build with --release).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// OTLP -> ClickHouse spans/s against a raw insert of the same rows, bytes per span
    /// on disk, and trace-by-id and search latency through the query API.
    Ingest(bench::IngestBenchOptions),
    /// The agent at a steady rate: process memory, and wire bytes per minute against
    /// sending every span as OTLP.
    Agent(bench::AgentBenchOptions),
    /// Caracal's collector and rotel (an OpenTelemetry collector in Rust) side by side on
    /// the same OTLP load: spans/s and spans per CPU-second, without and with ClickHouse.
    Rotel(bench::RotelBenchOptions),
}

impl CommonOptions {
    fn resolve(&self) -> anyhow::Result<CaracalConfig> {
        let mut config = match &self.config {
            Some(path) => CaracalConfig::from_file(path)?,
            None => CaracalConfig::default(),
        };
        let overrides = [
            (&self.clickhouse_url, &mut config.clickhouse.url),
            (&self.clickhouse_database, &mut config.clickhouse.database),
            (&self.clickhouse_user, &mut config.clickhouse.user),
            (&self.clickhouse_password, &mut config.clickhouse.password),
        ];
        for (value, target) in overrides {
            if let Some(value) = value {
                target.clone_from(value);
            }
        }
        if let Some(addr) = self.otlp_grpc_addr {
            config.collector.otlp_grpc_addr = addr;
        }
        if let Some(addr) = self.otlp_http_addr {
            config.collector.otlp_http_addr = addr;
        }
        if let Some(addr) = self.zipkin_addr {
            config.collector.zipkin_addr = addr;
        }
        if let Some(addr) = self.http_addr {
            config.query.http_addr = addr;
        }
        if let Some(dir) = &self.ui_dir {
            config.query.ui_dir.clone_from(dir);
        }
        if let Some(dir) = &self.spool_dir {
            config.collector.spool_dir = Some(dir.clone());
        }
        if let Some(text) = &self.ingest_tokens {
            config.collector.ingest_tokens =
                TokenTable::parse(text).context("invalid CARACAL_INGEST_TOKENS")?;
        }
        if let Some(text) = &self.query_tokens {
            config.query.tokens =
                TokenTable::parse(text).context("invalid CARACAL_QUERY_TOKENS")?;
        }
        Ok(config)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CARACAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = cli.options.resolve()?;
    config
        .collector
        .check_exposure()
        .map_err(anyhow::Error::msg)?;
    config.query.check_exposure().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(run(cli.command, config))
}

async fn run(command: Command, config: CaracalConfig) -> anyhow::Result<()> {
    let store =
        Store::new(&config.clickhouse.to_store_config()).context("invalid clickhouse settings")?;
    match command {
        Command::Bench(BenchCommand::Agent(options)) => {
            tokio::task::spawn_blocking(move || bench::agent(options)).await?
        }
        Command::Bench(BenchCommand::Ingest(options)) => {
            bench::ingest(&config.clickhouse.to_store_config(), options).await
        }
        Command::Bench(BenchCommand::Rotel(options)) => {
            bench::rotel(&config.clickhouse.to_store_config(), options).await
        }
        Command::Demo => {
            let collector = config.collector.otlp_grpc_addr.to_string();
            tracing::info!(%collector, "demo traffic started");
            caracal_agent::demo::run(vec![collector], shutdown_signal()).await;
            Ok(())
        }
        Command::SqlCatalog => {
            let catalog = caracal_store::catalog::sql_catalog(store.database());
            #[allow(clippy::print_stdout)]
            {
                println!("{}", serde_json::to_string_pretty(&catalog)?);
            }
            Ok(())
        }
        Command::Migrate => {
            let applied = migrate(&store).await?;
            tracing::info!(?applied, database = store.database(), "schema is current");
            Ok(())
        }
        Command::Up => {
            migrate(&store).await?;
            let metrics = caracal_collector::CollectorMetrics::new();
            let collector = start_collector(&config, &store, metrics.clone()).await?;
            // One address for people and scrapers: the collector's metrics are served on
            // the query address too.
            let query = start_query(&config, &store, Some(metrics)).await?;
            let retention = tokio::spawn(run_retention(store.clone(), config.retention.clone()));
            announce(&config, true, true);
            shutdown_signal().await;
            tracing::info!("shutting down");
            retention.abort();
            stop_all(vec![collector, query]).await
        }
        Command::Collector => {
            migrate(&store).await?;
            let metrics = caracal_collector::CollectorMetrics::new();
            let collector = start_collector(&config, &store, metrics).await?;
            let retention = tokio::spawn(run_retention(store.clone(), config.retention.clone()));
            announce(&config, true, false);
            shutdown_signal().await;
            retention.abort();
            stop_all(vec![collector]).await
        }
        Command::Query => {
            let query = start_query(&config, &store, None).await?;
            announce(&config, false, true);
            shutdown_signal().await;
            stop_all(vec![query]).await
        }
    }
}

/// A running role: its stop switch and its task.
struct Role {
    name: &'static str,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn stop_all(roles: Vec<Role>) -> anyhow::Result<()> {
    for role in &roles {
        tracing::debug!(role = role.name, "stopping");
    }
    let mut tasks = Vec::new();
    for role in roles {
        let _ = role.stop.send(());
        tasks.push((role.name, role.task));
    }
    for (name, task) in tasks {
        task.await
            .with_context(|| format!("{name} panicked"))?
            .with_context(|| format!("{name} failed"))?;
    }
    Ok(())
}

fn stop_switch() -> (
    tokio::sync::oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (sender, receiver) = tokio::sync::oneshot::channel::<()>();
    (sender, async move {
        let _ = receiver.await;
    })
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to listen on {addr} for {what}"))
}

async fn start_collector(
    config: &CaracalConfig,
    store: &Store,
    metrics: caracal_collector::CollectorMetrics,
) -> anyhow::Result<Role> {
    let listeners = caracal_collector::Listeners {
        otlp_grpc: bind(config.collector.otlp_grpc_addr, "OTLP/gRPC").await?,
        otlp_http: bind(config.collector.otlp_http_addr, "OTLP/HTTP").await?,
        zipkin: bind(config.collector.zipkin_addr, "Zipkin").await?,
    };
    let (stop, stopped) = stop_switch();
    let task = tokio::spawn(caracal_collector::run(
        config.collector.clone(),
        store.clone(),
        listeners,
        metrics,
        stopped,
    ));
    Ok(Role {
        name: "collector",
        stop,
        task,
    })
}

/// Starts the query service; with `metrics_opt`, it also serves `GET /metrics`.
async fn start_query(
    config: &CaracalConfig,
    store: &Store,
    metrics_opt: Option<caracal_collector::CollectorMetrics>,
) -> anyhow::Result<Role> {
    let listener = bind(config.query.http_addr, "the query API").await?;
    let mut router = caracal_query::router(caracal_query::AppState {
        store: store.clone(),
        config: config.query.clone(),
    });
    if let Some(metrics) = metrics_opt {
        router = router.merge(caracal_collector::metrics::router(metrics));
    }
    let (stop, stopped) = stop_switch();
    let task = tokio::spawn(caracal_query::serve(listener, router, stopped));
    Ok(Role {
        name: "query",
        stop,
        task,
    })
}

/// Applies migrations, waiting up to a minute for ClickHouse to answer.
async fn migrate(store: &Store) -> anyhow::Result<Vec<u32>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match store.ping().await {
            Ok(()) => break,
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%error, "waiting for clickhouse");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error).context("clickhouse did not answer within 60 s"),
        }
    }
    store
        .migrate()
        .await
        .context("failed to apply schema migrations")
}

async fn run_retention(store: Store, retention: caracal_store::retention::RetentionConfig) {
    let mut tick = tokio::time::interval(Duration::from_secs(retention.interval_secs.max(60)));
    loop {
        tick.tick().await;
        let today = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs())
            / 86_400) as i64;
        let dropped = store.apply_retention(&retention, today).await;
        if dropped > 0 {
            tracing::info!(dropped, "retention dropped expired partitions");
        }
    }
}

#[allow(clippy::print_stdout)]
fn announce(config: &CaracalConfig, collector: bool, query: bool) {
    if collector {
        println!("caracal: OTLP/gRPC on {}", config.collector.otlp_grpc_addr);
        println!(
            "caracal: OTLP/HTTP on http://{}/v1/traces",
            config.collector.otlp_http_addr
        );
        println!(
            "caracal: Zipkin v2 on http://{}/api/v2/spans",
            config.collector.zipkin_addr
        );
    }
    if query {
        println!("caracal: UI and API on http://{}/", config.query.http_addr);
    }
    let metrics_addr = if query {
        config.query.http_addr
    } else {
        config.collector.otlp_http_addr
    };
    if collector {
        println!("caracal: metrics on http://{metrics_addr}/metrics");
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

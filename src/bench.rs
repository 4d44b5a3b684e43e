//! `caracal bench`: measured figures for docs/benchmarks.md, on this machine.
//!
//! `caracal bench ingest` generates a realistic span mix (20 services, 200 operations,
//! 2-6 attributes per span, random 16-byte trace ids, 10-span traces, started in the
//! last five minutes), then in one run:
//! 1. inserts the same rows (`spans` and `spans_by_trace`) straight into ClickHouse with
//!    the clickhouse crate's inserter (the baseline: no protocol, no decoding, no
//!    validation, no aggregates);
//! 2. sends the same spans as OTLP/HTTP protobuf to an in-process collector, timing until
//!    every request is acknowledged (acknowledged = stored);
//! 3. reports spans/s of both and their ratio, bytes per span on disk per table after
//!    merges, and trace-by-id and search latencies (p50/p99) through the query API.
//!
//! `caracal bench rotel` sends the same load to rotel (another OpenTelemetry collector
//! in Rust, run by hand from its PyPI package, never in CI) and to `caracal collector`,
//! each a child process, and reports spans/s and spans per CPU-second of each: with
//! rotel's blackhole exporter, with both writing to a ClickHouse stand-in that drops
//! inserts, and into the real ClickHouse against a raw insert of the same rows.
//!
//! `caracal bench agent` measures the agent's memory and wire bytes at a steady rate.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use caracal_collector::sink::flatten::Flattener;
use caracal_model::blob::SpanBlobEncoder;
use caracal_store::{
    rows::{SpanRow, TraceSpanRow},
    ClickHouseConfig, Store,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value::Value, AnyValue, InstrumentationScope, KeyValue},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status},
};
use prost::Message;
use tokio::net::TcpListener;

const NUM_SERVICES: u64 = 20;
const OPERATIONS_PER_SERVICE: u64 = 10;
const SPANS_PER_TRACE: u64 = 10;
const SPANS_PER_REQUEST: u64 = 1_000;

/// A small, fast, deterministic generator (SplitMix64), so runs are comparable.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// One request's worth of spans, grouped by service as SDKs send them.
fn generate_request(
    random: &mut Random,
    first_trace: u64,
    now_ns: u64,
    window_ns: u64,
) -> (ExportTraceServiceRequest, Vec<[u8; 16]>) {
    let num_traces = SPANS_PER_REQUEST / SPANS_PER_TRACE;
    let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); NUM_SERVICES as usize];
    let mut trace_ids = Vec::new();
    for trace_index in 0..num_traces {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&random.next().to_be_bytes());
        trace_id[8..].copy_from_slice(&(first_trace + trace_index).to_be_bytes());
        trace_ids.push(trace_id);
        let trace_start = now_ns - random.below(window_ns);
        let mut parent = Vec::new();
        for depth in 0..SPANS_PER_TRACE {
            let service = random.below(NUM_SERVICES);
            let operation = random.below(OPERATIONS_PER_SERVICE);
            let span_id = random.next().max(1).to_be_bytes().to_vec();
            let duration =
                50_000 + random.below(5_000_000) * (1 + u64::from(random.below(100) == 0) * 50);
            let mut attributes = vec![
                attribute(
                    "http.method",
                    Value::StringValue(["GET", "POST", "PUT"][random.below(3) as usize].into()),
                ),
                attribute(
                    "http.status_code",
                    Value::IntValue([200, 200, 200, 201, 404, 500][random.below(6) as usize]),
                ),
            ];
            for extra in 0..random.below(5) {
                let key =
                    ["user.id", "region", "db.statement", "retry", "cache.hit"][extra as usize];
                let value = match extra {
                    0 => Value::StringValue(format!("user-{}", random.below(10_000))),
                    1 => Value::StringValue(
                        ["eu-west", "us-east", "ap-south"][random.below(3) as usize].into(),
                    ),
                    2 => Value::StringValue("SELECT * FROM orders WHERE id = ?".into()),
                    3 => Value::IntValue(random.below(3) as i64),
                    _ => Value::BoolValue(random.below(2) == 0),
                };
                attributes.push(attribute(key, value));
            }
            let is_error = random.below(50) == 0;
            by_service[service as usize].push(Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.clone(),
                parent_span_id: parent.clone(),
                name: format!("svc{service}-op{operation}"),
                kind: if depth == 0 {
                    2
                } else {
                    1 + (random.below(3) as i32)
                },
                start_time_unix_nano: trace_start + depth * 10_000,
                end_time_unix_nano: trace_start + depth * 10_000 + duration,
                attributes,
                status: is_error.then(|| Status {
                    code: 2,
                    message: "internal error".into(),
                }),
                ..Default::default()
            });
            parent = span_id;
        }
    }
    let resource_spans = by_service
        .into_iter()
        .enumerate()
        .filter(|(_, spans)| !spans.is_empty())
        .map(|(service, spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    attribute(
                        "service.name",
                        Value::StringValue(format!("service-{service}")),
                    ),
                    attribute(
                        "host.name",
                        Value::StringValue(format!("host-{}", service % 4)),
                    ),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "bench".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    (ExportTraceServiceRequest { resource_spans }, trace_ids)
}

/// Options of `caracal bench ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestBenchOptions {
    /// Spans per phase (the raw insert and the end-to-end run each store this many).
    #[arg(long, default_value_t = 1_000_000)]
    spans: u64,
    /// Concurrent OTLP/HTTP clients (each waits for its export to be stored, as SDKs do).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Searches and trace fetches timed per query kind.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Keep the benchmark databases afterwards.
    #[arg(long)]
    keep: bool,
}

fn percentile(sorted: &[Duration], quantile: f64) -> Duration {
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

async fn bench_store(base: &ClickHouseConfig, name: &str) -> anyhow::Result<Store> {
    let store = Store::new(&ClickHouseConfig {
        database: name.to_owned(),
        ..base.clone()
    })?;
    store.drop_database().await?;
    store.migrate().await?;
    Ok(store)
}

/// The benchmark's load: OTLP export requests, each also encoded once as protobuf.
struct Load {
    requests: Vec<ExportTraceServiceRequest>,
    encoded: Vec<bytes::Bytes>,
    trace_ids: Vec<[u8; 16]>,
    num_spans: u64,
    /// When the spans were generated; they started in the five minutes before.
    now_ns: u64,
}

/// Generates about `spans` spans in requests of [`SPANS_PER_REQUEST`], and prints their
/// size on the wire.
#[allow(clippy::print_stdout)]
fn generate_load(spans: u64) -> anyhow::Result<Load> {
    let num_requests = spans.div_ceil(SPANS_PER_REQUEST);
    let now_ns = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    // Live traffic: spans started in the last five minutes (a backfill spread over hours
    // would multiply the 10-second aggregate keys far beyond what a live system sees).
    let window_ns = 300_000_000_000;
    let num_spans = num_requests * SPANS_PER_REQUEST;
    println!("generating {num_spans} spans in {num_requests} requests of {SPANS_PER_REQUEST}");
    let mut random = Random(42);
    let mut requests = Vec::new();
    let mut trace_ids = Vec::new();
    for index in 0..num_requests {
        let (request, ids) = generate_request(&mut random, index * 1_000_000, now_ns, window_ns);
        requests.push(request);
        trace_ids.extend(ids);
    }
    let encoded: Vec<bytes::Bytes> = requests
        .iter()
        .map(|request| request.encode_to_vec().into())
        .collect();
    let wire_bytes: usize = encoded.iter().map(|body| body.len()).sum();
    println!(
        "OTLP protobuf: {:.1} bytes/span on the wire (uncompressed)",
        wire_bytes as f64 / num_spans as f64
    );
    Ok(Load {
        requests,
        encoded,
        trace_ids,
        num_spans,
        now_ns,
    })
}

/// Inserts the rows Caracal's collector would write for `requests` (`spans` and
/// `spans_by_trace`) straight into ClickHouse with the clickhouse crate's inserter, in
/// 100k-row batches: no protocol, no decoding, no validation, no aggregates.
async fn raw_insert(
    store: &Store,
    requests: &[ExportTraceServiceRequest],
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut inserter = store
        .client()
        .inserter::<SpanRow<'static>>("spans")
        .with_max_rows(100_000)
        .with_period(Some(Duration::from_secs(1)));
    let mut trace_inserter = store
        .client()
        .inserter::<TraceSpanRow<'static>>("spans_by_trace")
        .with_max_rows(100_000)
        .with_period(Some(Duration::from_secs(1)));
    let mut blobs = SpanBlobEncoder::default();
    for request in requests {
        let mut flattener = Flattener::default();
        for resource_spans in &request.resource_spans {
            flattener.set_resource(resource_spans);
            blobs.set_resource(resource_spans);
            for scope_spans in &resource_spans.scope_spans {
                flattener.set_scope(scope_spans.scope.as_ref());
                blobs.set_scope(scope_spans);
                for span in &scope_spans.spans {
                    let row = flattener.row("default", span);
                    inserter.write(&row).await?;
                    let trace_row = TraceSpanRow {
                        tenant: "default",
                        trace_id: row.trace_id,
                        start: row.start,
                        start_ns: row.start_ns,
                        span: blobs.encode(span),
                    };
                    trace_inserter.write(&trace_row).await?;
                }
            }
        }
        inserter.commit().await?;
        trace_inserter.commit().await?;
    }
    inserter.end().await?;
    trace_inserter.end().await?;
    Ok(started.elapsed())
}

/// Posts every body to `http://{addr}/v1/traces` as OTLP/HTTP protobuf from `clients`
/// concurrent clients; each waits for its answer before sending the next, as SDK
/// exporters do. Fails on the first answer other than 200.
async fn send_otlp_http(
    addr: SocketAddr,
    bodies: Vec<bytes::Bytes>,
    clients: usize,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let queue = Arc::new(std::sync::Mutex::new(bodies.into_iter()));
    let url = format!("http://{addr}/v1/traces");
    let mut senders = Vec::new();
    for _ in 0..clients.max(1) {
        let (client, queue, url) = (client.clone(), queue.clone(), url.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let next = queue
                    .lock()
                    .map_err(|_| anyhow::anyhow!("queue poisoned"))?
                    .next();
                let Some(body) = next else {
                    return anyhow::Ok(());
                };
                let response = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status() == 200,
                    "export failed: {}",
                    response.status()
                );
            }
        }));
    }
    for sender in senders {
        sender.await??;
    }
    Ok(())
}

/// Runs the ingest benchmark and prints its figures.
#[allow(clippy::print_stdout)]
pub async fn ingest(base: &ClickHouseConfig, options: IngestBenchOptions) -> anyhow::Result<()> {
    let Load {
        requests,
        encoded,
        trace_ids,
        num_spans,
        now_ns,
    } = generate_load(options.spans)?;

    // 1. Raw insert of the same rows.
    let raw = bench_store(base, "bench_raw").await?;
    let raw_elapsed = raw_insert(&raw, &requests).await?;
    let num_spans = num_spans as f64;
    let raw_rate = num_spans / raw_elapsed.as_secs_f64();
    println!(
        "raw insert (clickhouse crate, same rows): {raw_rate:>10.0} spans/s ({:.1} s)",
        raw_elapsed.as_secs_f64()
    );

    // 2. End to end through OTLP/HTTP into an in-process collector.
    let e2e = bench_store(base, "bench_e2e").await?;
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let zipkin = TcpListener::bind("127.0.0.1:0").await?;
    let http_addr = http.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(caracal_collector::run(
        caracal_collector::CollectorConfig::default(),
        e2e.clone(),
        caracal_collector::Listeners {
            otlp_grpc: grpc,
            otlp_http: http,
            zipkin,
        },
        caracal_collector::CollectorMetrics::new(),
        async move {
            let _ = stopped.await;
        },
    ));
    let started = Instant::now();
    send_otlp_http(http_addr, encoded, options.clients).await?;
    let e2e_elapsed = started.elapsed();
    let e2e_rate = num_spans / e2e_elapsed.as_secs_f64();
    println!("end to end (OTLP/HTTP -> collector -> ClickHouse, acknowledged): {e2e_rate:>10.0} spans/s ({:.1} s)", e2e_elapsed.as_secs_f64());
    println!(
        "ratio end-to-end / raw insert: {:.2} (target >= 0.5)",
        e2e_rate / raw_rate
    );
    let _ = stop.send(());
    collector.await??;

    // 3. Bytes on disk per span, after merges.
    let stored: u64 = e2e
        .client()
        .query("SELECT count() FROM spans")
        .fetch_one()
        .await?;
    println!("stored spans: {stored}");
    for table in ["spans", "spans_by_trace"] {
        e2e.client()
            .query(&format!("OPTIMIZE TABLE {table} FINAL"))
            .execute()
            .await
            .context("optimize")?;
    }
    let sizes: Vec<(String, u64, u64)> = e2e
        .client()
        .query("SELECT table, sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts WHERE database = ? AND active GROUP BY table ORDER BY table")
        .bind(e2e.database())
        .fetch_all()
        .await?;
    let mut total = 0;
    for (table, bytes, uncompressed) in &sizes {
        total += bytes;
        println!(
            "  {table:<22} {:>8.1} B/span on disk ({:.1} B/span uncompressed)",
            *bytes as f64 / stored as f64,
            *uncompressed as f64 / stored as f64
        );
    }
    let span_tables: u64 = sizes
        .iter()
        .filter(|(table, _, _)| table.starts_with("spans"))
        .map(|(_, bytes, _)| bytes)
        .sum();
    let main: u64 = sizes
        .iter()
        .filter(|(table, _, _)| table == "spans")
        .map(|(_, bytes, _)| bytes)
        .sum();
    println!("bytes/span on disk: {:.1} (spans table), {:.1} (spans + trace-id copy), {:.1} (all tables)", main as f64 / stored as f64, span_tables as f64 / stored as f64, total as f64 / stored as f64);

    // 4. Query latency through the query API.
    let client = reqwest::Client::new();
    let query_listener = TcpListener::bind("127.0.0.1:0").await?;
    let query_addr = query_listener.local_addr()?;
    let router = caracal_query::router(caracal_query::AppState {
        store: e2e.clone(),
        config: caracal_query::QueryConfig::default(),
    });
    let (query_stop, query_stopped) = tokio::sync::oneshot::channel::<()>();
    let query = tokio::spawn(caracal_query::serve(query_listener, router, async move {
        let _ = query_stopped.await;
    }));
    let mut pick = Random(7);
    let mut by_id = Vec::new();
    for _ in 0..options.queries {
        let trace_id = trace_ids[pick.below(trace_ids.len() as u64) as usize];
        let url = format!(
            "http://{query_addr}/api/traces/{}",
            caracal_model::ids::TraceId(trace_id).to_hex()
        );
        let started = Instant::now();
        let response = client.get(url).send().await?;
        anyhow::ensure!(response.status() == 200, "trace by id failed");
        let body: serde_json::Value = response.json().await?;
        by_id.push(started.elapsed());
        anyhow::ensure!(
            body["data"][0]["spans"].as_array().map_or(0, Vec::len) == SPANS_PER_TRACE as usize,
            "incomplete trace"
        );
    }
    let end_us = now_ns / 1_000;
    let start_us = end_us - 3_600_000_000;
    let searches: [(&str, Vec<(&str, String)>); 4] = [
        ("service, last hour", vec![]),
        ("service + operation", vec![("operation", String::new())]),
        (
            "service + tag",
            vec![("tags", r#"{"http.status_code":"500"}"#.to_owned())],
        ),
        (
            "service + minDuration",
            vec![("minDuration", "100ms".to_owned())],
        ),
    ];
    let mut lines = vec![summarize("trace by id", &mut by_id)];
    for (label, extra) in searches {
        let mut timings = Vec::new();
        for _ in 0..options.queries {
            let service = pick.below(NUM_SERVICES);
            let mut params = vec![
                ("service", format!("service-{service}")),
                ("start", start_us.to_string()),
                ("end", end_us.to_string()),
                ("limit", "20".to_owned()),
            ];
            for (key, value) in &extra {
                let value = if value.is_empty() {
                    format!("svc{service}-op{}", pick.below(OPERATIONS_PER_SERVICE))
                } else {
                    value.clone()
                };
                params.push((key, value));
            }
            let started = Instant::now();
            let response = client
                .get(format!("http://{query_addr}/api/traces"))
                .query(&params)
                .send()
                .await?;
            anyhow::ensure!(
                response.status() == 200,
                "search failed: {}",
                response.text().await?
            );
            let _: serde_json::Value = response.json().await?;
            timings.push(started.elapsed());
        }
        lines.push(summarize(label, &mut timings));
    }
    println!(
        "query latency at {stored} spans ({} samples each):",
        options.queries
    );
    for line in lines {
        println!("  {line}");
    }
    let _ = query_stop.send(());
    query.await??;
    if !options.keep {
        raw.drop_database().await?;
        e2e.drop_database().await?;
    }
    Ok(())
}

fn summarize(label: &str, timings: &mut [Duration]) -> String {
    timings.sort_unstable();
    format!(
        "{label:<24} p50 {:>7.2} ms   p99 {:>7.2} ms",
        millis(percentile(timings, 0.5)),
        millis(percentile(timings, 0.99))
    )
}

/// Options of `caracal bench agent`.
#[derive(Debug, clap::Args)]
pub struct AgentBenchOptions {
    /// Transactions per second to record.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Distinct operations.
    #[arg(long, default_value_t = 1_000)]
    operations: u64,
    /// How long to run, in seconds (a minute gives six reports).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

/// Counts what the agent would put on the wire.
#[derive(Debug, Default)]
struct WireCounters {
    reports: std::sync::atomic::AtomicU64,
    encoded_bytes: std::sync::atomic::AtomicU64,
    gzip_bytes: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct CountingExporter(Arc<WireCounters>);

impl caracal_agent::exporter::ReportExporter for CountingExporter {
    fn export<'a>(
        &'a self,
        report: &'a caracal_proto::AgentReport,
    ) -> caracal_agent::exporter::ExportFuture<'a> {
        use std::sync::atomic::Ordering::Relaxed;
        let encoded = report.encode_to_vec();
        self.0.reports.fetch_add(1, Relaxed);
        self.0
            .encoded_bytes
            .fetch_add(encoded.len() as u64, Relaxed);
        self.0.gzip_bytes.fetch_add(gzip_len(&encoded), Relaxed);
        Box::pin(async { Ok(()) })
    }
}

fn gzip_len(bytes: &[u8]) -> u64 {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = encoder.write_all(bytes);
    encoder
        .finish()
        .map_or(0, |compressed| compressed.len() as u64)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kilobytes| kilobytes.parse::<u64>().ok())
        })
        .map_or(0, |kilobytes| kilobytes * 1_024)
}

/// Runs the agent at a steady rate and prints its memory and wire bytes, against sending
/// every span as OTLP.
#[allow(clippy::print_stdout)]
pub fn agent(options: AgentBenchOptions) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = Arc::new(WireCounters::default());
    let rss_before = rss_bytes();
    let agent = caracal_agent::Agent::builder()
        .service_name("bench")
        .sample_ratio(0.0)
        .exporter(CountingExporter(counters.clone()))
        .start();
    let names: Vec<String> = (0..options.operations)
        .map(|index| format!("GET /api/v1/resource-{index}"))
        .collect();
    let mut random = Random(3);
    let started = Instant::now();
    let tick = Duration::from_millis(10);
    let per_tick = (options.rate / 100).max(1);
    let mut recorded = 0u64;
    let mut peak_rss = 0;
    while started.elapsed() < Duration::from_secs(options.seconds) {
        let tick_started = Instant::now();
        for _ in 0..per_tick {
            let name = &names[random.below(options.operations) as usize];
            agent
                .transaction("URL", name)
                .finish_with_duration(Duration::from_micros(200 + random.below(50_000)));
            recorded += 1;
        }
        if recorded % (options.rate * 5) < per_tick {
            peak_rss = peak_rss.max(rss_bytes());
        }
        std::thread::sleep(tick.saturating_sub(tick_started.elapsed()));
    }
    peak_rss = peak_rss.max(rss_bytes());
    agent.shutdown(Duration::from_secs(5))?;
    let elapsed = started.elapsed().as_secs_f64();

    // The same spans sent one by one as OTLP, in 512-span gzip-compressed batches.
    let mut otlp_spans = Vec::new();
    for index in 0..512u64 {
        otlp_spans.push(Span {
            trace_id: random.next().to_be_bytes().repeat(2),
            span_id: random.next().to_be_bytes().to_vec(),
            name: names[(index % options.operations) as usize].clone(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + index * 1_000_000,
            end_time_unix_nano: 1_700_000_000_000_000_000 + index * 1_000_000 + 5_000_000,
            attributes: vec![attribute("http.method", Value::StringValue("GET".into()))],
            ..Default::default()
        });
    }
    let batch = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attribute(
                    "service.name",
                    Value::StringValue("bench".into()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: otlp_spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let otlp_gzip_per_span = gzip_len(&batch) as f64 / 512.0;
    let per_minute = 60.0 / elapsed;
    let agent_gzip_per_minute = counters.gzip_bytes.load(Relaxed) as f64 * per_minute;
    let otlp_per_minute = recorded as f64 * otlp_gzip_per_span * per_minute;
    println!(
        "recorded {recorded} transactions over {elapsed:.0} s ({:.0}/s), {} operations",
        recorded as f64 / elapsed,
        options.operations
    );
    println!("reports sent: {}", counters.reports.load(Relaxed));
    println!(
        "process RSS: {:.1} MB before the agent, {:.1} MB peak while recording (agent share {:.1} MB)",
        rss_before as f64 / 1e6,
        peak_rss as f64 / 1e6,
        peak_rss.saturating_sub(rss_before) as f64 / 1e6
    );
    println!(
        "wire bytes per minute: agent {:.0} kB gzip ({:.0} kB encoded); every span as OTLP {:.0} kB gzip; ratio {:.4}",
        agent_gzip_per_minute / 1e3,
        counters.encoded_bytes.load(Relaxed) as f64 * per_minute / 1e3,
        otlp_per_minute / 1e3,
        agent_gzip_per_minute / otlp_per_minute
    );
    Ok(())
}

/// Options of `caracal bench rotel`.
#[derive(Debug, clap::Args)]
pub struct RotelBenchOptions {
    /// The rotel executable. `pip install rotel` ships it as `rotel/rotel-agent` in the
    /// environment's site-packages.
    #[arg(long, env = "ROTEL_BIN")]
    rotel_bin: PathBuf,
    /// Spans sent to each collector in each phase.
    #[arg(long, default_value_t = 1_000_000)]
    spans: u64,
    /// Concurrent OTLP/HTTP clients (each waits for its export to be answered).
    #[arg(long, default_value_t = 64)]
    clients: usize,
}

/// Linux reports process times in ticks of `USER_HZ`, which its ABI fixes at 100.
const USER_HZ: u64 = 100;
/// Longest wait for a collector to listen, or to finish its work after the load.
const PEER_TIMEOUT: Duration = Duration::from_secs(60);
/// A collector counts as idle when it used at most this much CPU in [`SETTLE_TICK`].
const IDLE_CPU: Duration = Duration::from_millis(10);
const SETTLE_TICK: Duration = Duration::from_millis(250);
/// CPU is read at least this long after the load, so Caracal's aggregate flush (every
/// 5 s by default) is counted as part of the work.
const MIN_SETTLE: Duration = Duration::from_secs(6);
/// Database of rotel's `otel_traces` table in the end-to-end phase.
const ROTEL_DATABASE: &str = "bench_rotel";

/// User and system CPU time of a process or thread, from its `stat` file in `/proc`.
fn cpu_time(stat_path: &Path) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(stat_path)
        .with_context(|| format!("failed to read {}", stat_path.display()))?;
    // The command name (field 2) is in parentheses and may hold spaces and parentheses:
    // the fields after the last ')' start with field 3 (state).
    let (_, after_name) = stat
        .rsplit_once(')')
        .with_context(|| format!("malformed {}", stat_path.display()))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| {
        fields
            .get(number - 3)
            .and_then(|value| value.parse::<u64>().ok())
            .with_context(|| format!("no field {number} in {}", stat_path.display()))
    };
    // Fields 14 and 15: utime and stime.
    let ticks = field(14)? + field(15)?;
    Ok(Duration::from_millis(ticks * 1_000 / USER_HZ))
}

fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    cpu_time(Path::new(&format!("/proc/{pid}/stat")))
}

/// A free port on 127.0.0.1 (released for the child to bind; a race only on a busy box).
fn free_local_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("failed to find a port")?;
    Ok(listener.local_addr()?)
}

/// A collector under test, run as a child process so that its CPU time is its own.
struct Peer {
    name: &'static str,
    child: tokio::process::Child,
    pid: u32,
    otlp_http: SocketAddr,
    log_path: PathBuf,
    /// A working directory of its own, removed when it stops.
    work_dir_opt: Option<PathBuf>,
}

impl Peer {
    /// Starts `program` with its output in a log file, and waits until `otlp_http`
    /// accepts connections.
    async fn start(
        name: &'static str,
        mut command: tokio::process::Command,
        otlp_http: SocketAddr,
    ) -> anyhow::Result<Self> {
        let log_path =
            std::env::temp_dir().join(format!("caracal-bench-{name}-{}.log", std::process::id()));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("failed to create {}", log_path.display()))?;
        let mut child = command
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("failed to start {name}"))?;
        let pid = child.id().context("child exited at once")?;
        let deadline = Instant::now() + PEER_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "{name} exited with {status}; its log: {}",
                    log_path.display()
                );
            }
            if tokio::net::TcpStream::connect(otlp_http).await.is_ok() {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{name} did not listen on {otlp_http} within {PEER_TIMEOUT:?}; its log: {}",
                log_path.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self {
            name,
            child,
            pid,
            otlp_http,
            log_path,
            work_dir_opt: None,
        })
    }

    /// rotel with `exporter_args` after its receiver flags; `clickhouse_password` goes
    /// through the environment, so it never shows in a process list.
    async fn rotel(
        bin: &Path,
        exporter_args: &[&str],
        clickhouse_password: &str,
    ) -> anyhow::Result<Self> {
        let otlp_grpc = free_local_addr()?;
        let otlp_http = free_local_addr()?;
        let mut command = tokio::process::Command::new(bin);
        command
            .arg("start")
            .args(["--otlp-grpc-endpoint", &otlp_grpc.to_string()])
            .args(["--otlp-http-endpoint", &otlp_http.to_string()])
            .args(exporter_args);
        if !clickhouse_password.is_empty() {
            command.env("ROTEL_CLICKHOUSE_EXPORTER_PASSWORD", clickhouse_password);
        }
        Self::start("rotel", command, otlp_http).await
    }

    /// `caracal collector` (this executable) with default settings, writing to
    /// `clickhouse`, in a working directory of its own (its spool goes there, not into a
    /// checkout's `.caracal/`).
    async fn caracal(clickhouse: &ClickHouseConfig) -> anyhow::Result<Self> {
        let otlp_http = free_local_addr()?;
        let work_dir =
            std::env::temp_dir().join(format!("caracal-bench-collector-{}", std::process::id()));
        std::fs::create_dir_all(&work_dir)
            .with_context(|| format!("failed to create {}", work_dir.display()))?;
        let mut command = tokio::process::Command::new(
            std::env::current_exe().context("failed to find the caracal executable")?,
        );
        command
            .arg("collector")
            .current_dir(&work_dir)
            .env_remove("CARACAL_CONFIG")
            .env("CARACAL_LOG", "warn")
            .env("CARACAL_CLICKHOUSE_URL", &clickhouse.url)
            .env("CARACAL_CLICKHOUSE_DATABASE", &clickhouse.database)
            .env("CARACAL_CLICKHOUSE_USER", &clickhouse.user)
            .env("CARACAL_CLICKHOUSE_PASSWORD", &clickhouse.password)
            .env("CARACAL_OTLP_GRPC_ADDR", free_local_addr()?.to_string())
            .env("CARACAL_OTLP_HTTP_ADDR", otlp_http.to_string())
            .env("CARACAL_ZIPKIN_ADDR", free_local_addr()?.to_string());
        let mut peer = Self::start("caracal", command, otlp_http).await?;
        peer.work_dir_opt = Some(work_dir);
        Ok(peer)
    }

    fn cpu(&self) -> anyhow::Result<Duration> {
        process_cpu(self.pid)
    }

    /// Waits until the collector is idle (its queues drained and batches written), and at
    /// least [`MIN_SETTLE`] after `load_done`; returns its CPU time then.
    async fn settled_cpu(&self, load_done: Instant) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + PEER_TIMEOUT;
        let mut last = self.cpu()?;
        let mut idle_ticks = 0;
        loop {
            tokio::time::sleep(SETTLE_TICK).await;
            let now = self.cpu()?;
            idle_ticks = if now.saturating_sub(last) <= IDLE_CPU {
                idle_ticks + 1
            } else {
                0
            };
            last = now;
            if idle_ticks >= 2 && load_done.elapsed() >= MIN_SETTLE {
                return Ok(now);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} was still busy {PEER_TIMEOUT:?} after the load",
                self.name
            );
        }
    }

    /// The last line of the collector's log that mentions a failure, without colours.
    fn last_failure_logged(&self) -> Option<String> {
        let log = std::fs::read_to_string(&self.log_path).ok()?;
        log.lines().rev().map(strip_ansi).find(|line| {
            let lower = line.to_ascii_lowercase();
            lower.contains("fail") || lower.contains("error")
        })
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        self.child
            .kill()
            .await
            .with_context(|| format!("failed to stop {}", self.name))?;
        let _ = std::fs::remove_file(&self.log_path);
        if let Some(work_dir) = &self.work_dir_opt {
            let _ = std::fs::remove_dir_all(work_dir);
        }
        Ok(())
    }
}

fn strip_ansi(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(character) = chars.next() {
        if character == '\u{1b}' {
            // A CSI sequence: ESC '[' parameters, ended by a letter.
            for code in chars.by_ref() {
                if code.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(character);
        }
    }
    plain
}

/// One collector's figures for one phase.
#[derive(Debug, Clone, Copy)]
struct PeerRun {
    num_spans: u64,
    /// From the first request to the last span handed on (acknowledged, or received by
    /// the sink, or counted in ClickHouse).
    wall: Duration,
    /// CPU time of the collector process over the phase, after it settled.
    cpu: Duration,
}

impl PeerRun {
    fn wall_rate(&self) -> f64 {
        self.num_spans as f64 / self.wall.as_secs_f64()
    }

    /// Spans per CPU-second of the collector: its throughput per core.
    fn cpu_rate(&self) -> f64 {
        self.num_spans as f64 / self.cpu.as_secs_f64().max(f64::EPSILON)
    }

    fn line(&self, label: &str) -> String {
        format!(
            "{label:<34} {:>9.0} spans/s wall, {:>5.2} CPU-s, {:>9.0} spans per CPU-second",
            self.wall_rate(),
            self.cpu.as_secs_f64(),
            self.cpu_rate()
        )
    }
}

/// Sends the load to `peer` and measures it; `finished` tells when the last span was
/// handed on, once the collector settled (`None`: when the last request was answered).
async fn run_peer(
    peer: &Peer,
    load: &Load,
    clients: usize,
    finished: impl FnOnce() -> Option<Instant>,
) -> anyhow::Result<PeerRun> {
    let cpu_before = peer.cpu()?;
    let started = Instant::now();
    send_otlp_http(peer.otlp_http, load.encoded.clone(), clients)
        .await
        .with_context(|| format!("sending to {} failed", peer.name))?;
    let answered = Instant::now();
    let cpu_after = peer.settled_cpu(answered).await?;
    let done = finished().unwrap_or(answered).max(answered);
    Ok(PeerRun {
        num_spans: load.num_spans,
        wall: done - started,
        cpu: cpu_after.saturating_sub(cpu_before),
    })
}

/// What the ClickHouse stand-in does with an `INSERT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InsertMode {
    /// Reads the data and drops it, answering 200 as ClickHouse does on success.
    Drop,
    /// Forwards it to the real server, like every other query.
    Forward,
}

/// What the stand-in saw.
#[derive(Debug, Default)]
struct StandInCounters {
    inserts: std::sync::atomic::AtomicU64,
    /// Insert bodies as sent (compressed when the client compresses).
    wire_bytes: std::sync::atomic::AtomicU64,
    /// Insert data after decompression: RowBinary bytes.
    row_bytes: std::sync::atomic::AtomicU64,
    last_insert: std::sync::Mutex<Option<Instant>>,
    /// The last error the real server answered to a forwarded insert.
    last_error: std::sync::Mutex<Option<String>>,
}

impl StandInCounters {
    fn last_insert(&self) -> Option<Instant> {
        self.last_insert.lock().ok().and_then(|last| *last)
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|last| last.clone())
    }
}

/// An HTTP server that speaks enough of ClickHouse's HTTP interface for a collector: it
/// drops or forwards `INSERT ... FORMAT RowBinary` data (the query in the URL, the data
/// in the body) and forwards every other query (schema checks at startup) to the real
/// server. Dropping inserts measures a collector's own work (receive, decode, build rows,
/// compress, send) without the server's, which would share the same cores.
///
/// It serves each connection on a thread of its own: its CPU time is the benchmark
/// process's, not a collector's.
struct ClickHouseStandIn {
    addr: SocketAddr,
    counters: Arc<StandInCounters>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

struct StandInState {
    upstream: String,
    mode: InsertMode,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    counters: Arc<StandInCounters>,
}

/// One HTTP/1.1 request, body read in full.
struct HttpRequest {
    method: String,
    target: String,
    /// Lowercase names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl ClickHouseStandIn {
    fn start(upstream: &str, mode: InsertMode) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .context("failed to listen for the clickhouse stand-in")?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(StandInCounters::default());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let state = Arc::new(StandInState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            mode,
            client: reqwest::Client::new(),
            runtime: tokio::runtime::Handle::current(),
            counters: counters.clone(),
        });
        let stopping = stop.clone();
        std::thread::Builder::new()
            .name("clickhouse-stand-in".to_owned())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let state = state.clone();
                    std::thread::spawn(move || {
                        if let Err(error) = serve_stand_in_connection(stream, &state) {
                            tracing::debug!(%error, "clickhouse stand-in connection ended");
                        }
                    });
                }
            })
            .context("failed to start the clickhouse stand-in")?;
        Ok(Self {
            addr,
            counters,
            stop,
        })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ClickHouseStandIn {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

fn serve_stand_in_connection(
    stream: std::net::TcpStream,
    state: &StandInState,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut reader = std::io::BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    while let Some(request) = read_http_request(&mut reader)? {
        let response = state.answer(request);
        writer.write_all(&response)?;
    }
    Ok(())
}

/// Reads one request; `None` when the client closed the connection.
fn read_http_request(reader: &mut impl std::io::BufRead) -> anyhow::Result<Option<HttpRequest>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        anyhow::bail!("malformed request line {line:?}");
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    loop {
        line.clear();
        anyhow::ensure!(reader.read_line(&mut line)? > 0, "connection closed");
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("malformed header {header:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut request = HttpRequest {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if request
        .header("transfer-encoding")
        .is_some_and(|value| value.eq_ignore_ascii_case("chunked"))
    {
        request.body = read_chunked_body(reader)?;
    } else if let Some(length) = request.header("content-length") {
        let length: usize = length.parse().context("malformed content-length")?;
        request.body = vec![0; length];
        reader.read_exact(&mut request.body)?;
    }
    Ok(Some(request))
}

fn read_chunked_body(reader: &mut impl std::io::BufRead) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size_text = line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("malformed chunk size {size_text:?}"))?;
        if size == 0 {
            // Trailer lines, then an empty line.
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        reader.read_line(&mut line)?;
    }
}

/// Uncompressed bytes in a body of ClickHouse compressed blocks (`decompress=1`): each
/// block is a 16-byte checksum, a method byte, the block's compressed size (with its
/// 9-byte header) and its uncompressed size, both little-endian `u32`, then the data.
fn compressed_blocks_len(body: &[u8]) -> u64 {
    let mut offset = 0;
    let mut total = 0;
    while let Some(header) = body.get(offset + 16..offset + 25) {
        let compressed = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
        let uncompressed = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
        total += u64::from(uncompressed);
        offset += 16 + (compressed as usize).max(9);
    }
    total
}

impl StandInState {
    /// The response to `request`, as bytes on the wire.
    fn answer(&self, request: HttpRequest) -> Vec<u8> {
        use std::sync::atomic::Ordering::Relaxed;
        let url = reqwest::Url::parse(&format!("http://stand-in{}", request.target)).ok();
        let param = |name: &str| {
            url.as_ref().and_then(|url| {
                url.query_pairs()
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| value.into_owned())
            })
        };
        let is_insert = param("query").is_some_and(|query| {
            query
                .trim_start()
                .get(..6)
                .is_some_and(|word| word.eq_ignore_ascii_case("insert"))
        });
        if is_insert {
            let wire = request.body.len() as u64;
            let rows = if param("decompress").as_deref() == Some("1") {
                compressed_blocks_len(&request.body)
            } else {
                wire
            };
            self.counters.inserts.fetch_add(1, Relaxed);
            self.counters.wire_bytes.fetch_add(wire, Relaxed);
            self.counters.row_bytes.fetch_add(rows, Relaxed);
            if self.mode == InsertMode::Drop {
                self.note_insert();
                return http_response(200, "OK", &[], b"");
            }
        }
        match self.runtime.block_on(self.forward(&request)) {
            Ok((status, headers, body)) => {
                if status == 200 {
                    if is_insert {
                        self.note_insert();
                    }
                } else if is_insert {
                    if let Ok(mut last_error) = self.counters.last_error.lock() {
                        *last_error = Some(String::from_utf8_lossy(&body).trim().to_owned());
                    }
                }
                let reason = reqwest::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|status| status.canonical_reason())
                    .unwrap_or("");
                http_response(status, reason, &headers, &body)
            }
            Err(error) => {
                let message = format!("clickhouse stand-in: {error:#}");
                http_response(502, "Bad Gateway", &[], message.as_bytes())
            }
        }
    }

    fn note_insert(&self) {
        if let Ok(mut last) = self.counters.last_insert.lock() {
            *last = Some(Instant::now());
        }
    }

    async fn forward(
        &self,
        request: &HttpRequest,
    ) -> anyhow::Result<(u16, Vec<(String, String)>, bytes::Bytes)> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())?;
        // The length is always given: ClickHouse refuses a POST with neither it nor
        // chunked encoding, which an empty body would otherwise have.
        let mut upstream = self
            .client
            .request(method, format!("{}{}", self.upstream, request.target))
            .header("content-length", request.body.len())
            .body(request.body.clone());
        for (name, value) in &request.headers {
            if !matches!(
                name.as_str(),
                "host" | "content-length" | "transfer-encoding" | "connection"
            ) {
                upstream = upstream.header(name.as_str(), value.as_str());
            }
        }
        let response = upstream.send().await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter(|(name, _)| {
                !matches!(
                    name.as_str(),
                    "content-length" | "transfer-encoding" | "connection" | "keep-alive"
                )
            })
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();
        Ok((status, headers, response.bytes().await?))
    }
}

fn http_response(status: u16, reason: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut response = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = response.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// rotel's ClickHouse exporter writes `otel_traces` in the OpenTelemetry Collector's
/// schema; this is that table on a current server (Map, DateTime64, LowCardinality).
const OTEL_TRACES_DDL: &str = "CREATE TABLE {table} (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested(
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)),
    Links Nested(
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String))
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))";

/// The closest table ClickHouse 18.16 can hold: the same RowBinary encoding for every
/// column but the maps, where 18.16 has neither `Map` nor an unflattened
/// `Array(Tuple(String, String))` (it splits that into `ResourceAttributes.1` and `.2`,
/// so rotel's insert names a column that does not exist).
const OTEL_TRACES_DDL_18_16: &str = "CREATE TABLE {table} (
    Timestamp UInt64,
    TraceId String,
    SpanId String,
    ParentSpanId String,
    TraceState String,
    SpanName LowCardinality(String),
    SpanKind LowCardinality(String),
    ServiceName LowCardinality(String),
    ResourceAttributes Array(Tuple(String, String)),
    ScopeName String,
    ScopeVersion String,
    SpanAttributes Array(Tuple(String, String)),
    Duration Int64,
    StatusCode LowCardinality(String),
    StatusMessage String,
    Events Nested(
        Timestamp UInt64,
        Name LowCardinality(String),
        Attributes Array(Tuple(String, String))),
    Links Nested(
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Array(Tuple(String, String)))
) ENGINE = MergeTree
PARTITION BY toDate(toDateTime(intDiv(Timestamp, 1000000000)))
ORDER BY (ServiceName, SpanName, intDiv(Timestamp, 1000000000))";

/// How rotel's ClickHouse exporter fared against the real server.
enum RotelStorage {
    Stored(PeerRun),
    /// Nothing was stored; the server's error, as the stand-in saw it.
    Refused(String),
}

/// The exporter flags for rotel's ClickHouse exporter writing to `url`. Inserts are
/// synchronous (`async_insert` is rotel's default, a setting 18.16 does not know), so
/// that a stored span means the same as for Caracal.
fn rotel_clickhouse_args<'a>(url: &'a str, database: &'a str, user: &'a str) -> Vec<&'a str> {
    vec![
        "--exporter",
        "clickhouse",
        "--clickhouse-exporter-endpoint",
        url,
        "--clickhouse-exporter-database",
        database,
        "--clickhouse-exporter-user",
        user,
        "--clickhouse-exporter-async-insert",
        "false",
    ]
}

async fn count_rows(store: &Store, table: &str) -> anyhow::Result<u64> {
    Ok(store
        .client()
        .query(&format!("SELECT count() FROM {table}"))
        .fetch_one()
        .await?)
}

/// rotel's ClickHouse exporter into the real server: one request first, through a
/// forwarding stand-in that keeps the server's error; then, if it was stored, the whole
/// load straight to the server, timed until every span is counted in the table.
async fn rotel_into_clickhouse(
    options: &RotelBenchOptions,
    base: &ClickHouseConfig,
    server_version: &str,
    load: &Load,
) -> anyhow::Result<RotelStorage> {
    let admin = Store::new(&ClickHouseConfig {
        database: "default".to_owned(),
        ..base.clone()
    })?;
    let store = Store::new(&ClickHouseConfig {
        database: ROTEL_DATABASE.to_owned(),
        ..base.clone()
    })?;
    store.drop_database().await?;
    admin
        .client()
        .query(&format!("CREATE DATABASE {ROTEL_DATABASE}"))
        .execute()
        .await?;
    let major: u32 = server_version
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or(0);
    // Map became a regular type in 21.x; DateTime64 came in 20.1.
    let ddl = if major >= 22 {
        OTEL_TRACES_DDL
    } else {
        OTEL_TRACES_DDL_18_16
    };
    let table = format!("{ROTEL_DATABASE}.otel_traces");
    admin
        .client()
        .query(&ddl.replace("{table}", &table))
        .execute()
        .await
        .context("failed to create rotel's table")?;

    let probe = ClickHouseStandIn::start(&base.url, InsertMode::Forward)?;
    let probe_url = probe.url();
    let peer = Peer::rotel(
        &options.rotel_bin,
        &rotel_clickhouse_args(&probe_url, ROTEL_DATABASE, &base.user),
        &base.password,
    )
    .await?;
    let first = load.encoded.first().cloned().into_iter().collect();
    send_otlp_http(peer.otlp_http, first, 1).await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let probe_spans = load.num_spans.min(SPANS_PER_REQUEST);
    while count_rows(&store, &table).await? < probe_spans && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = count_rows(&store, &table).await?;
    let logged = peer.last_failure_logged();
    peer.stop().await?;
    if stored < probe_spans {
        store.drop_database().await?;
        let reason = probe
            .counters
            .last_error()
            .or(logged)
            .unwrap_or_else(|| "no error seen".to_owned());
        return Ok(RotelStorage::Refused(reason));
    }
    drop(probe);

    admin
        .client()
        .query(&format!("TRUNCATE TABLE {table}"))
        .execute()
        .await?;
    let peer = Peer::rotel(
        &options.rotel_bin,
        &rotel_clickhouse_args(&base.url, ROTEL_DATABASE, &base.user),
        &base.password,
    )
    .await?;
    let cpu_before = peer.cpu()?;
    let started = Instant::now();
    send_otlp_http(peer.otlp_http, load.encoded.clone(), options.clients).await?;
    let answered = Instant::now();
    let deadline = answered + PEER_TIMEOUT;
    while count_rows(&store, &table).await? < load.num_spans {
        anyhow::ensure!(
            Instant::now() < deadline,
            "rotel stored {} of {} spans",
            count_rows(&store, &table).await?,
            load.num_spans
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed();
    let cpu_after = peer.settled_cpu(answered).await?;
    peer.stop().await?;
    store.drop_database().await?;
    Ok(RotelStorage::Stored(PeerRun {
        num_spans: load.num_spans,
        wall,
        cpu: cpu_after.saturating_sub(cpu_before),
    }))
}

/// CPU time of decoding every body with prost on this thread: the floor both collectors
/// share (rotel and Caracal both decode OTLP with prost).
fn decode_cpu(bodies: &[bytes::Bytes]) -> anyhow::Result<Duration> {
    let thread_stat = Path::new("/proc/thread-self/stat");
    let before = cpu_time(thread_stat)?;
    for body in bodies {
        let request = ExportTraceServiceRequest::decode(body.as_ref())?;
        std::hint::black_box(request);
    }
    Ok(cpu_time(thread_stat)?.saturating_sub(before))
}

async fn rotel_version(bin: &Path) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(bin)
        .arg("--version")
        .output()
        .await
        .with_context(|| format!("failed to run {}", bin.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} --version failed",
        bin.display()
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Runs Caracal's collector and rotel side by side on the same OTLP/HTTP load and prints
/// spans per second, spans per CPU-second of each collector process, and their ratios.
#[allow(clippy::print_stdout)]
pub async fn rotel(base: &ClickHouseConfig, options: RotelBenchOptions) -> anyhow::Result<()> {
    let rotel_version = rotel_version(&options.rotel_bin).await?;
    let admin = Store::new(&ClickHouseConfig {
        database: "default".to_owned(),
        ..base.clone()
    })?;
    let server_version: String = admin
        .client()
        .query("SELECT version()")
        .fetch_one()
        .await
        .context("clickhouse did not answer")?;
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "{rotel_version} against caracal {}, ClickHouse {server_version}, {cores} cores, {} clients",
        env!("CARGO_PKG_VERSION"),
        options.clients
    );
    let load = generate_load(options.spans)?;

    println!("\n1. protobuf decode alone (prost, one thread, in this process)");
    let bodies = load.encoded.clone();
    let decode = tokio::task::spawn_blocking(move || decode_cpu(&bodies)).await??;
    println!(
        "  {:<34} {:>9.0} spans per CPU-second",
        "decode",
        load.num_spans as f64 / decode.as_secs_f64().max(f64::EPSILON)
    );

    println!("\n2. receive + decode, no storage");
    let peer = Peer::rotel(&options.rotel_bin, &["--exporter", "blackhole"], "").await?;
    let blackhole = run_peer(&peer, &load, options.clients, || None).await?;
    peer.stop().await?;
    println!("  {}", blackhole.line("rotel, blackhole exporter"));

    println!(
        "\n3. receive + decode + rows + lz4 + HTTP to a ClickHouse stand-in that drops inserts"
    );
    let null_base = ClickHouseConfig {
        database: "bench_peer_null".to_owned(),
        ..base.clone()
    };
    // Caracal's schema checks at startup go through to the real server.
    let null_store = bench_store(base, &null_base.database).await?;
    let stand_in = ClickHouseStandIn::start(&base.url, InsertMode::Drop)?;
    let stand_in_url = stand_in.url();
    let peer = Peer::rotel(
        &options.rotel_bin,
        &rotel_clickhouse_args(&stand_in_url, ROTEL_DATABASE, &base.user),
        &base.password,
    )
    .await?;
    let counters = stand_in.counters.clone();
    let rotel_null = run_peer(&peer, &load, options.clients, || counters.last_insert()).await?;
    peer.stop().await?;
    let rotel_sink = sink_figures(&stand_in.counters, load.num_spans);
    drop(stand_in);
    let stand_in = ClickHouseStandIn::start(&base.url, InsertMode::Drop)?;
    let peer = Peer::caracal(&ClickHouseConfig {
        url: stand_in.url(),
        ..null_base.clone()
    })
    .await?;
    let caracal_null = run_peer(&peer, &load, options.clients, || None).await?;
    peer.stop().await?;
    let caracal_sink = sink_figures(&stand_in.counters, load.num_spans);
    drop(stand_in);
    null_store.drop_database().await?;
    println!(
        "  {}\n  {:<34} {rotel_sink}",
        rotel_null.line("rotel, clickhouse exporter"),
        ""
    );
    println!(
        "  {}\n  {:<34} {caracal_sink}",
        caracal_null.line("caracal collector"),
        ""
    );
    println!(
        "  ratio caracal / rotel: {:.2} spans per CPU-second, {:.2} spans/s wall",
        caracal_null.cpu_rate() / rotel_null.cpu_rate(),
        caracal_null.wall_rate() / rotel_null.wall_rate()
    );

    println!(
        "\n4. into ClickHouse {server_version}, stored (counted, or acknowledged after the insert)"
    );
    let raw = bench_store(base, "bench_peer_raw").await?;
    let raw_elapsed = raw_insert(&raw, &load.requests).await?;
    raw.drop_database().await?;
    let raw_rate = load.num_spans as f64 / raw_elapsed.as_secs_f64();
    println!(
        "  {:<34} {raw_rate:>9.0} spans/s wall",
        "raw insert of Caracal's rows"
    );
    let e2e_base = ClickHouseConfig {
        database: "bench_peer_e2e".to_owned(),
        ..base.clone()
    };
    let e2e = bench_store(base, &e2e_base.database).await?;
    let peer = Peer::caracal(&e2e_base).await?;
    let caracal_e2e = run_peer(&peer, &load, options.clients, || None).await?;
    peer.stop().await?;
    let stored = count_rows(&e2e, "spans").await?;
    e2e.drop_database().await?;
    anyhow::ensure!(
        stored == load.num_spans,
        "caracal stored {stored} of {} spans",
        load.num_spans
    );
    println!(
        "  {}\n  {:<34} ratio to the raw insert {:.2}",
        caracal_e2e.line("caracal collector, end to end"),
        "",
        caracal_e2e.wall_rate() / raw_rate
    );
    match rotel_into_clickhouse(&options, base, &server_version, &load).await? {
        RotelStorage::Stored(rotel_e2e) => {
            println!(
                "  {}\n  {:<34} ratio caracal / rotel {:.2} spans/s wall, {:.2} spans per CPU-second",
                rotel_e2e.line("rotel, clickhouse exporter"),
                "",
                caracal_e2e.wall_rate() / rotel_e2e.wall_rate(),
                caracal_e2e.cpu_rate() / rotel_e2e.cpu_rate()
            );
        }
        RotelStorage::Refused(reason) => {
            println!(
                "  {:<34} nothing stored; ClickHouse {server_version} answered: {reason}",
                "rotel, clickhouse exporter"
            );
        }
    }
    Ok(())
}

fn sink_figures(counters: &StandInCounters, num_spans: u64) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let per_span = |bytes: u64| bytes as f64 / num_spans as f64;
    format!(
        "{} inserts, {:.0} B/span RowBinary, {:.0} B/span on the wire",
        counters.inserts.load(Relaxed),
        per_span(counters.row_bytes.load(Relaxed)),
        per_span(counters.wire_bytes.load(Relaxed))
    )
}

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

use std::{
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

/// Runs the ingest benchmark and prints its figures.
#[allow(clippy::print_stdout)]
pub async fn ingest(base: &ClickHouseConfig, options: IngestBenchOptions) -> anyhow::Result<()> {
    let num_requests = options.spans.div_ceil(SPANS_PER_REQUEST);
    let now_ns = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    // Live traffic: spans started in the last five minutes (a backfill spread over hours
    // would multiply the 10-second aggregate keys far beyond what a live system sees).
    let window_ns = 300_000_000_000;
    println!(
        "generating {} spans in {num_requests} requests of {SPANS_PER_REQUEST}",
        num_requests * SPANS_PER_REQUEST
    );
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
        wire_bytes as f64 / (num_requests * SPANS_PER_REQUEST) as f64
    );

    // 1. Raw insert of the same rows.
    let raw = bench_store(base, "bench_raw").await?;
    let started = Instant::now();
    let mut inserter = raw
        .client()
        .inserter::<SpanRow<'static>>("spans")
        .with_max_rows(100_000)
        .with_period(Some(Duration::from_secs(1)));
    let mut trace_inserter = raw
        .client()
        .inserter::<TraceSpanRow<'static>>("spans_by_trace")
        .with_max_rows(100_000)
        .with_period(Some(Duration::from_secs(1)));
    let mut blobs = SpanBlobEncoder::default();
    for request in &requests {
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
    let raw_elapsed = started.elapsed();
    let num_spans = (num_requests * SPANS_PER_REQUEST) as f64;
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
    let client = reqwest::Client::new();
    let queue = Arc::new(std::sync::Mutex::new(encoded.into_iter()));
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..options.clients.max(1) {
        let (client, queue) = (client.clone(), queue.clone());
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
                    .post(format!("http://{http_addr}/v1/traces"))
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

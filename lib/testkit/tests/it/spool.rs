//! The durable spool, in process: ClickHouse (behind an [`OutageProxy`]) goes away,
//! accepted spans are spooled and acknowledged, and replayed exactly once when it comes
//! back, aggregates included; spooled batches survive a restart; a client's retry of a
//! stored request does not show twice.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use caracal_store::{ClickHouseConfig, Store};
use caracal_testkit::{
    metric_value, otlp::export_request, test_collector_config, test_store, OutageProxy, TestStack,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, trace::v1::Span,
};
use prost::Message;

const SPANS_PER_TRACE: u64 = 50;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// One trace of `SPANS_PER_TRACE` spans of service `spooled`, operation `op`.
fn trace_request(trace: u128, start_ns: u64) -> ExportTraceServiceRequest {
    let spans = (1..=SPANS_PER_TRACE)
        .map(|id| Span {
            trace_id: trace.to_be_bytes().to_vec(),
            span_id: (trace as u64 * 1_000 + id).to_be_bytes().to_vec(),
            name: "op".into(),
            kind: 2,
            start_time_unix_nano: start_ns + id * 1_000,
            end_time_unix_nano: start_ns + id * 1_000 + 5_000_000,
            ..Default::default()
        })
        .collect();
    export_request("spooled", spans)
}

async fn export(stack: &TestStack, request: &ExportTraceServiceRequest) {
    let (status, body) = stack
        .post_otlp("application/x-protobuf", request.encode_to_vec())
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

async fn wait_for<T>(what: &str, probe: impl AsyncFnMut() -> Option<T>) -> T {
    caracal_testkit::wait_for(what, Duration::from_secs(40), probe).await
}

async fn metric(stack: &TestStack, series: &str) -> f64 {
    let (_, _, text) = stack.scrape_metrics(stack.query).await;
    metric_value(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Spans of a trace through the query API.
async fn trace_span_count(stack: &TestStack, trace: u128) -> usize {
    let (status, body) = stack
        .get_json(&format!("/api/traces/{trace:032x}"), &[])
        .await;
    if status != 200 {
        return 0;
    }
    body["data"][0]["spans"].as_array().map_or(0, Vec::len)
}

/// `(rows, distinct span ids)` of `spans` and of `spans_by_trace` after collapsing copies.
async fn stored_counts(store: &Store) -> [(u64, u64); 2] {
    let mut counts = [(0, 0); 2];
    for (index, (table, id)) in [
        ("spans", "span_id"),
        ("spans_by_trace", "concat(trace_id, toString(start_ns))"),
    ]
    .into_iter()
    .enumerate()
    {
        counts[index] = store
            .client()
            .query(&format!(
                "SELECT count(), uniqExact({id}) FROM {table} FINAL"
            ))
            .fetch_one::<(u64, u64)>()
            .await
            .unwrap();
    }
    counts
}

fn proxied_store(store: &Store, proxy: &OutageProxy) -> Store {
    Store::new(&ClickHouseConfig {
        url: proxy.url(),
        database: store.database().to_owned(),
        ..ClickHouseConfig::default()
    })
    .unwrap()
}

async fn clickhouse_address() -> std::net::SocketAddr {
    let url = caracal_testkit::clickhouse_url();
    let host_port = url.trim_start_matches("http://").trim_end_matches('/');
    let mut addresses = tokio::net::lookup_host(host_port).await.unwrap();
    addresses.next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_spools_and_replays_exactly_once() {
    let store = test_store("spool_outage").await;
    let proxy = OutageProxy::start(clickhouse_address().await).await;
    let config = test_collector_config();
    let spool_dir = config.spool_dir.clone().unwrap();
    let stack = TestStack::start_with(proxied_store(&store, &proxy), config.clone()).await;
    let start = now_ns() - 60_000_000_000;

    export(&stack, &trace_request(1, start)).await;
    assert_eq!(metric(&stack, "caracal_spooled_spans_total").await, 0.0);

    proxy.cut();
    for trace in 2..=6 {
        export(&stack, &trace_request(trace, start + trace as u64)).await;
    }
    assert_eq!(
        metric(&stack, "caracal_spooled_spans_total").await,
        (5 * SPANS_PER_TRACE) as f64,
        "every span accepted during the outage is spooled"
    );
    assert!(metric(&stack, "caracal_spool_batches").await >= 1.0);
    assert!(metric(&stack, "caracal_spool_bytes").await > 0.0);

    proxy.restore();
    wait_for("the spool to drain", async || {
        (metric(&stack, "caracal_spool_batches").await == 0.0).then_some(())
    })
    .await;
    assert_eq!(
        metric(&stack, "caracal_replayed_spans_total").await,
        (5 * SPANS_PER_TRACE) as f64
    );
    for trace in 1..=6 {
        assert_eq!(
            trace_span_count(&stack, trace).await,
            SPANS_PER_TRACE as usize,
            "trace {trace}"
        );
    }
    let total = 6 * SPANS_PER_TRACE;
    assert_eq!(stored_counts(&store).await, [(total, total); 2]);

    // The aggregates count every span once, whether it was stored directly or replayed.
    let params = [
        ("service", "spooled".to_owned()),
        ("start", ((start / 1_000_000_000 - 60) * 1_000).to_string()),
        ("end", ((start / 1_000_000_000 + 60) * 1_000).to_string()),
        ("step", "60".to_owned()),
    ];
    wait_for("aggregates of every span", async || {
        let (status, body) = stack.get_json("/api/v1/metrics", &params).await;
        assert_eq!(status, 200, "{body}");
        (body["total"]["count"] == total).then_some(())
    })
    .await;

    // Spooled batches survive a restart: cut, export, stop (the batch stays on disk),
    // start a new collector on the same spool with ClickHouse back.
    proxy.cut();
    export(&stack, &trace_request(7, start + 7)).await;
    stack.stop().await;
    let files = std::fs::read_dir(&spool_dir)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|entry| entry.path().extension().is_some_and(|ext| ext == "batch"))
        })
        .count();
    assert!(
        files >= 1,
        "the stopped collector left its batch in the spool"
    );
    proxy.restore();
    let stack = TestStack::start_with(proxied_store(&store, &proxy), config).await;
    let total = 7 * SPANS_PER_TRACE;
    // Both tables' inserts of the replay end independently: wait for both.
    wait_for("trace 7 after the restart", async || {
        (stored_counts(&store).await == [(total, total); 2]).then_some(())
    })
    .await;
    assert_eq!(trace_span_count(&stack, 7).await, SPANS_PER_TRACE as usize);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_shows_once() {
    let store = test_store("spool_retry_dedup").await;
    let stack = TestStack::start(store.clone()).await;
    let request = trace_request(42, now_ns() - 10_000_000_000);
    export(&stack, &request).await;
    export(&stack, &request).await;
    assert_eq!(
        trace_span_count(&stack, 42).await,
        SPANS_PER_TRACE as usize,
        "trace by id drops the copies"
    );
    let (search_status, search) = stack
        .get_json(
            "/api/traces",
            &[
                ("service", "spooled".to_owned()),
                ("lookback", "1h".to_owned()),
            ],
        )
        .await;
    assert_eq!(search_status, 200, "{search}");
    assert_eq!(search["data"].as_array().map(Vec::len), Some(1));
    store
        .client()
        .query("OPTIMIZE TABLE spans FINAL")
        .execute()
        .await
        .unwrap();
    store
        .client()
        .query("OPTIMIZE TABLE spans_by_trace FINAL")
        .execute()
        .await
        .unwrap();
    let raw: u64 = store
        .client()
        .query("SELECT count() FROM spans")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(raw, SPANS_PER_TRACE, "merges collapse the copies");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_clickhouse_times_out_into_the_spool() {
    let store = test_store("spool_hung").await;
    let proxy = OutageProxy::start(clickhouse_address().await).await;
    let config = caracal_collector::CollectorConfig {
        insert_timeout_ms: 1_000,
        ..test_collector_config()
    };
    let stack = TestStack::start_with(proxied_store(&store, &proxy), config).await;
    let start = now_ns() - 60_000_000_000;
    proxy.stall();
    let started = std::time::Instant::now();
    export(&stack, &trace_request(1, start)).await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "acknowledged after {waited:?}: the insert timeout did not spool the batch"
    );
    assert_eq!(
        metric(&stack, "caracal_spooled_spans_total").await,
        SPANS_PER_TRACE as f64
    );
    proxy.restore();
    wait_for("the replay", async || {
        (stored_counts(&store).await == [(SPANS_PER_TRACE, SPANS_PER_TRACE); 2]).then_some(())
    })
    .await;
    stack.stop().await;
}

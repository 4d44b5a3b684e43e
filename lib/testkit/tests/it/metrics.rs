//! `GET /metrics`: the collector's counters after real traffic, served on the OTLP/HTTP
//! address and on the query address alike.

use std::time::{SystemTime, UNIX_EPOCH};

use caracal_testkit::{metric_value, test_store, TestStack};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message;
use serde_json::json;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn span(trace: u128, id: u64) -> Span {
    let start = now_ns() - 1_000_000_000;
    Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        name: "metered".into(),
        start_time_unix_nano: start,
        end_time_unix_nano: start + 1_000,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Checks each `(series, value)` in a scrape.
fn check(scrape: &str, expected: &[(&str, f64)]) {
    for (series, value) in expected {
        assert_eq!(
            metric_value(scrape, series),
            Some(*value),
            "{series} in\n{scrape}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_requests_spans_and_batches() {
    let stack = TestStack::start(test_store("metrics_counters").await).await;
    let mut zero_trace = span(0xfeed, 4);
    zero_trace.trace_id = vec![0; 16];
    let spans = vec![
        span(0xfeed, 1),
        span(0xfeed, 2),
        span(0xfeed, 3),
        zero_trace,
    ];
    let (status, _) = stack
        .post_otlp("application/x-protobuf", request(spans))
        .await;
    assert_eq!(status, 200);
    let (status, _) = stack
        .post_otlp("application/x-protobuf", b"\x0a\x10garbage".to_vec())
        .await;
    assert_eq!(status, 400);
    let zipkin = json!([{"traceId": "beef", "id": "1", "name": "z",
        "timestamp": now_ns() / 1_000 - 1_000_000, "duration": 5,
        "localEndpoint": {"serviceName": "metered"}},
        {"traceId": "beef", "id": "0"}]);
    let (status, response) = stack
        .post_zipkin(serde_json::to_vec(&zipkin).unwrap(), None)
        .await;
    assert_eq!(status, 202, "{response}");

    let (status, content_type, scrape) = stack.scrape_metrics(stack.otlp_http).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    check(
        &scrape,
        &[
            (
                "caracal_received_requests_total{receiver=\"otlp_http\"}",
                2.0,
            ),
            ("caracal_received_requests_total{receiver=\"zipkin\"}", 1.0),
            (
                "caracal_received_requests_total{receiver=\"otlp_grpc\"}",
                0.0,
            ),
            (
                "caracal_refused_requests_total{receiver=\"otlp_http\",reason=\"malformed\"}",
                1.0,
            ),
            ("caracal_received_spans_total", 6.0),
            ("caracal_accepted_spans_total", 4.0),
            (
                "caracal_rejected_spans_total{reason=\"invalid_trace_id\"}",
                1.0,
            ),
            (
                "caracal_rejected_spans_total{reason=\"invalid_span_id\"}",
                1.0,
            ),
            (
                "caracal_rejected_spans_total{reason=\"malformed_span\"}",
                0.0,
            ),
            ("caracal_inserted_rows_total", 4.0),
            ("caracal_batch_size_rows_sum", 4.0),
            (
                "caracal_clickhouse_insert_errors_total{table=\"spans\"}",
                0.0,
            ),
            ("caracal_writer_queue_depth_requests", 0.0),
            ("caracal_inserts_in_flight", 0.0),
        ],
    );
    let num_batches = metric_value(&scrape, "caracal_batch_size_rows_count").unwrap();
    assert!((1.0..=2.0).contains(&num_batches), "{num_batches}");
    assert_eq!(
        metric_value(&scrape, "caracal_insert_duration_seconds_count"),
        Some(num_batches)
    );

    // `caracal up` serves the same registry on the query address.
    let (status, _, on_query) = stack.scrape_metrics(stack.query).await;
    assert_eq!(status, 200);
    assert_eq!(
        metric_value(&on_query, "caracal_accepted_spans_total"),
        Some(4.0)
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_inserts_are_counted() {
    let store = test_store("metrics_insert_errors").await;
    // Without a spool, a failed insert fails its requests (with one, they are spooled:
    // see spool.rs).
    let config = caracal_collector::CollectorConfig {
        spool_dir: None,
        ..caracal_testkit::test_collector_config()
    };
    let stack = TestStack::start_with(store.clone(), config).await;
    store.drop_database().await.unwrap();
    let (status, _) = stack
        .post_otlp("application/x-protobuf", request(vec![span(0xdead, 1)]))
        .await;
    assert_eq!(status, 503);
    let (_, _, scrape) = stack.scrape_metrics(stack.otlp_http).await;
    check(
        &scrape,
        &[
            ("caracal_clickhouse_insert_errors_total{table=\"spans\"}", 1.0),
            (
                "caracal_refused_requests_total{receiver=\"otlp_http\",reason=\"storage_unavailable\"}",
                1.0,
            ),
            ("caracal_received_spans_total", 1.0),
            ("caracal_accepted_spans_total", 0.0),
            ("caracal_inserted_rows_total", 0.0),
        ],
    );
    stack.stop().await;
}

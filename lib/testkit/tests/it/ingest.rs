//! Ingest through OTLP/HTTP protobuf: partial success, repaired UTF-8, zstd bodies over
//! HTTP and gRPC, and the RED aggregates and dependency edges computed from the stored
//! spans.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use caracal_testkit::{
    otlp::{resource_spans, string_attribute},
    test_store, TestStack,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::KeyValue,
    trace::v1::{span::SpanKind, status::StatusCode, Span, Status},
};
use prost::Message;
use serde_json::Value;

struct SpanSpec {
    trace: u128,
    id: u64,
    parent: u64,
    name: &'static str,
    kind: SpanKind,
    start_ns: u64,
    duration_ns: u64,
    error: bool,
}

fn span(spec: SpanSpec, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: spec.trace.to_be_bytes().to_vec(),
        span_id: spec.id.to_be_bytes().to_vec(),
        parent_span_id: if spec.parent == 0 {
            Vec::new()
        } else {
            spec.parent.to_be_bytes().to_vec()
        },
        name: spec.name.into(),
        kind: spec.kind as i32,
        start_time_unix_nano: spec.start_ns,
        end_time_unix_nano: spec.start_ns + spec.duration_ns,
        attributes,
        status: spec.error.then(|| Status {
            code: StatusCode::Error as i32,
            message: "boom".into(),
        }),
        ..Default::default()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

async fn export(
    stack: &TestStack,
    request: &ExportTraceServiceRequest,
) -> ExportTraceServiceResponse {
    let (status, body) = stack
        .post_otlp("application/x-protobuf", request.encode_to_vec())
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    ExportTraceServiceResponse::decode(body.as_slice()).unwrap()
}

async fn wait_for<T>(what: &str, probe: impl AsyncFnMut() -> Option<T>) -> T {
    caracal_testkit::wait_for(what, Duration::from_secs(20), probe).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_spans_are_refused_and_good_ones_kept() {
    let stack = TestStack::start(test_store("ingest_partial").await).await;
    let start = now_ns() - 1_000_000_000;
    let good = |id| SpanSpec {
        trace: 0xabc,
        id,
        parent: 0,
        name: "good",
        kind: SpanKind::Server,
        start_ns: start,
        duration_ns: 1_000,
        error: false,
    };
    let mut zero_trace = span(good(2), vec![]);
    zero_trace.trace_id = vec![0; 16];
    let mut short_span_id = span(good(3), vec![]);
    short_span_id.span_id = vec![1, 2, 3];
    let mut invalid_utf8 = span(good(4), vec![string_attribute("note", "MARK")]);
    invalid_utf8.name = "repaired".into();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(
            "partial",
            vec![
                span(good(1), vec![]),
                zero_trace,
                short_span_id,
                invalid_utf8,
            ],
        )],
    };
    let mut bytes = request.encode_to_vec();
    let marker = bytes
        .windows(4)
        .position(|window| window == b"MARK")
        .unwrap();
    bytes[marker + 1] = 0xC3; // a lone lead byte: invalid UTF-8
    let (status, body) = stack.post_otlp("application/x-protobuf", bytes).await;
    assert_eq!(status, 200);
    let response = ExportTraceServiceResponse::decode(body.as_slice()).unwrap();
    let partial = response.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial.error_message.contains("invalid_trace_id"),
        "{}",
        partial.error_message
    );
    assert!(
        partial.error_message.contains("invalid UTF-8"),
        "{}",
        partial.error_message
    );

    let (status, trace) = stack
        .get_json(&format!("/api/traces/{:032x}", 0xabc), &[])
        .await;
    assert_eq!(status, 200);
    let spans = trace["data"][0]["spans"].as_array().unwrap();
    let names: Vec<&str> = spans
        .iter()
        .map(|span| span["operationName"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"repaired"));
    let repaired = spans
        .iter()
        .find(|span| span["operationName"] == "repaired")
        .unwrap();
    assert_eq!(
        repaired["tags"][0]["value"],
        Value::String("M\u{fffd}RK".into())
    );
    stack.stop().await;
}

fn exact_quantile(sorted: &[u64], quantile: f64) -> f64 {
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1] as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_and_dependencies_are_exact() {
    let stack = TestStack::start(test_store("ingest_aggregates").await).await;
    // Align to a minute so the whole load falls into one queried window.
    let minute_ns = 60_000_000_000;
    let window_start = (now_ns() / minute_ns - 1) * minute_ns;
    let mut durations = Vec::new();
    let mut gateway = Vec::new();
    let mut orders = Vec::new();
    let num_traces = 600u64;
    for index in 0..num_traces {
        let trace = 0x1000 + u128::from(index);
        let start = window_start + index * 50_000_000;
        // A skewed distribution: most fast, a long tail.
        let duration = 200_000 + (index * index * 7_919) % 80_000_000;
        durations.push(duration);
        let base = index * 10;
        gateway.push(span(
            SpanSpec {
                trace,
                id: base + 1,
                parent: 0,
                name: "GET /checkout",
                kind: SpanKind::Server,
                start_ns: start,
                duration_ns: duration + 2_000_000,
                error: false,
            },
            vec![],
        ));
        gateway.push(span(
            SpanSpec {
                trace,
                id: base + 2,
                parent: base + 1,
                name: "POST orders",
                kind: SpanKind::Client,
                start_ns: start + 500_000,
                duration_ns: duration + 1_000_000,
                error: false,
            },
            vec![],
        ));
        orders.push(span(
            SpanSpec {
                trace,
                id: base + 3,
                parent: base + 2,
                name: "POST /orders",
                kind: SpanKind::Server,
                start_ns: start + 700_000,
                duration_ns: duration,
                error: index % 10 == 0,
            },
            vec![],
        ));
        orders.push(span(
            SpanSpec {
                trace,
                id: base + 4,
                parent: base + 3,
                name: "INSERT orders",
                kind: SpanKind::Client,
                start_ns: start + 800_000,
                duration_ns: 100_000,
                error: false,
            },
            vec![string_attribute("db.system", "postgresql")],
        ));
    }
    // Children before parents in one request, parents in a later one: edges still match.
    export(
        &stack,
        &ExportTraceServiceRequest {
            resource_spans: vec![resource_spans("orders", orders)],
        },
    )
    .await;
    export(
        &stack,
        &ExportTraceServiceRequest {
            resource_spans: vec![resource_spans("gateway", gateway)],
        },
    )
    .await;

    let start_ms = window_start / 1_000_000;
    let end_ms = start_ms + 120_000;
    let params = vec![
        ("service", "orders".to_owned()),
        ("operation", "POST /orders".to_owned()),
        ("start", start_ms.to_string()),
        ("end", end_ms.to_string()),
        ("step", "60".to_owned()),
    ];
    let metrics = wait_for("metrics", async || {
        let (status, body) = stack.get_json("/api/v1/metrics", &params).await;
        assert_eq!(status, 200, "{body}");
        (body["total"]["count"] == num_traces).then_some(body)
    })
    .await;
    let total = &metrics["total"];
    assert_eq!(total["errors"], num_traces / 10);
    durations.sort_unstable();
    for (field, quantile) in [
        ("p50_us", 0.5),
        ("p90_us", 0.9),
        ("p99_us", 0.99),
        ("p999_us", 0.999),
    ] {
        let exact = exact_quantile(&durations, quantile) / 1_000.0;
        let reported = total[field].as_f64().unwrap();
        assert!(
            (reported - exact).abs() / exact < 0.01,
            "{field}: {reported} vs exact {exact}"
        );
    }
    assert_eq!(
        total["min_us"].as_f64().unwrap(),
        durations[0] as f64 / 1_000.0
    );
    assert_eq!(
        total["max_us"].as_f64().unwrap(),
        *durations.last().unwrap() as f64 / 1_000.0
    );
    let series_count: u64 = metrics["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|point| point["count"].as_u64().unwrap())
        .sum();
    assert_eq!(series_count, num_traces);

    let dependency_params = vec![
        ("endTs", (end_ms + 60_000).to_string()),
        ("lookback", "600000".to_owned()),
    ];
    let edges = wait_for("dependencies", async || {
        let (_, body) = stack
            .get_json("/api/dependencies", &dependency_params)
            .await;
        let edges: Vec<(String, String, u64)> = body["data"]
            .as_array()?
            .iter()
            .map(|edge| {
                (
                    edge["parent"].as_str().unwrap().to_owned(),
                    edge["child"].as_str().unwrap().to_owned(),
                    edge["callCount"].as_u64().unwrap(),
                )
            })
            .collect();
        (edges.len() == 2 && edges.iter().all(|edge| edge.2 == num_traces)).then_some(edges)
    })
    .await;
    assert_eq!(
        edges,
        vec![
            ("gateway".to_owned(), "orders".to_owned(), num_traces),
            ("orders".to_owned(), "postgresql".to_owned(), num_traces),
        ]
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_bodies_are_accepted_over_http_and_grpc() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use tonic::codec::CompressionEncoding;

    let stack = TestStack::start(test_store("ingest_zstd").await).await;
    let start = now_ns() - 1_000_000_000;
    let request_for = |trace: u128| ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(
            "zstd",
            vec![span(
                SpanSpec {
                    trace,
                    id: 1,
                    parent: 0,
                    name: "compressed",
                    kind: SpanKind::Server,
                    start_ns: start,
                    duration_ns: 1_000,
                    error: false,
                },
                vec![],
            )],
        )],
    };

    let body = zstd::stream::encode_all(request_for(0x25d1).encode_to_vec().as_slice(), 3).unwrap();
    let response = stack
        .http_client()
        .post(format!("http://{}/v1/traces", stack.otlp_http))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "zstd")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    let mut client = TraceServiceClient::connect(format!("http://{}", stack.otlp_grpc))
        .await
        .unwrap()
        .send_compressed(CompressionEncoding::Zstd);
    let response = client.export(request_for(0x25d2)).await.unwrap();
    assert_eq!(response.into_inner().partial_success, None);

    for trace in [0x25d1u128, 0x25d2] {
        let (status, body) = stack
            .get_json(&format!("/api/traces/{trace:032x}"), &[])
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"][0]["spans"][0]["operationName"], "compressed");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_span_limit_are_refused_whole() {
    let config = caracal_collector::CollectorConfig {
        max_spans_per_request: 10,
        ..caracal_testkit::test_collector_config()
    };
    let stack = TestStack::start_with(test_store("ingest_span_limit").await, config).await;
    let start = now_ns() - 1_000_000_000;
    let request = |count: u64| ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(
            "limited",
            (1..=count)
                .map(|id| {
                    span(
                        SpanSpec {
                            trace: 0x5a,
                            id,
                            parent: 0,
                            name: "limited",
                            kind: SpanKind::Server,
                            start_ns: start,
                            duration_ns: 1_000,
                            error: false,
                        },
                        vec![],
                    )
                })
                .collect(),
        )],
    };
    let (status, body) = stack
        .post_otlp("application/x-protobuf", request(11).encode_to_vec())
        .await;
    assert_eq!(status, 413);
    let status_body = String::from_utf8_lossy(&body);
    assert!(
        status_body.contains("11 spans exceeds the limit of 10"),
        "{status_body}"
    );
    export(&stack, &request(10)).await;
    stack.stop().await;
}

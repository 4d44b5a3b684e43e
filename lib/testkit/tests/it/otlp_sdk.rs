//! The Rust OpenTelemetry SDK as the client, with its own OTLP/gRPC exporter
//! (`opentelemetry-otlp`: batch processor, gzip): what a service instrumented with the
//! `opentelemetry` API sends arrives whole, and is found by search and in the RED
//! metrics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use caracal_testkit::{test_store, wait_for, TestStack};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Compression, WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde_json::Value;

/// Requests the service handles; every third one fails.
const NUM_REQUESTS: u64 = 30;

fn provider(stack: &TestStack) -> SdkTracerProvider {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", stack.otlp_grpc))
        .with_compression(Compression::Gzip)
        .with_timeout(Duration::from_secs(10))
        .build()
        .expect("the OTLP exporter builds");
    SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name("checkout")
                .with_attribute(KeyValue::new("deployment.environment", "test"))
                .build(),
        )
        .with_batch_exporter(exporter)
        .build()
}

/// One request: a SERVER span with a CLIENT child (failing every third time, with an
/// exception event) and an INTERNAL child. Returns the trace id in hex.
fn handle_request(provider: &SdkTracerProvider, index: u64) -> String {
    use opentelemetry::trace::TracerProvider as _;
    let tracer = provider.tracer("checkout-handler");
    let root = tracer
        .span_builder("POST /checkout")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.response.status_code", 200),
            KeyValue::new("request.index", index as i64),
        ])
        .start(&tracer);
    let trace_id = root.span_context().trace_id().to_string();
    let context = Context::current_with_span(root);
    let mut call = tracer
        .span_builder("charge")
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("peer.service", "payments")])
        .start_with_context(&tracer, &context);
    if index.is_multiple_of(3) {
        call.add_event(
            "exception",
            vec![
                KeyValue::new("exception.type", "CardDeclined"),
                KeyValue::new("exception.message", "card declined"),
            ],
        );
        call.set_status(Status::error("card declined"));
    }
    call.end();
    tracer
        .span_builder("render receipt")
        .with_kind(SpanKind::Internal)
        .start_with_context(&tracer, &context)
        .end();
    context.span().end();
    trace_id
}

fn tag<'v>(span: &'v Value, key: &str) -> Option<&'v Value> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|tag| tag["key"] == key)
        .map(|tag| &tag["value"])
}

fn span_named<'v>(trace: &'v Value, name: &str) -> &'v Value {
    trace["spans"]
        .as_array()
        .and_then(|spans| spans.iter().find(|span| span["operationName"] == name))
        .unwrap_or_else(|| panic!("no span {name} in {trace}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_the_rust_sdk_exporter_arrive_whole() {
    let stack = TestStack::start(test_store("otlp_rust_sdk").await).await;
    let start_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let provider = provider(&stack);
    let trace_ids: Vec<String> = (0..NUM_REQUESTS)
        .map(|index| handle_request(&provider, index))
        .collect();
    // The batch processor exports on its own thread; flushing blocks until it has.
    let provider = tokio::task::spawn_blocking(move || {
        provider.force_flush().expect("the exporter delivers");
        provider
    })
    .await
    .unwrap();

    // A failed request's trace, whole.
    let failed = &trace_ids[0];
    let trace = wait_for(
        "the failed request's trace",
        Duration::from_secs(30),
        async || {
            let (status, body) = stack.get_json(&format!("/api/traces/{failed}"), &[]).await;
            (status == 200 && body["data"][0]["spans"].as_array()?.len() == 3)
                .then(|| body["data"][0].clone())
        },
    )
    .await;
    let root = span_named(&trace, "POST /checkout");
    let call = span_named(&trace, "charge");
    let render = span_named(&trace, "render receipt");
    assert_eq!(root["references"], serde_json::json!([]));
    for child in [call, render] {
        assert_eq!(child["references"][0]["refType"], "CHILD_OF");
        assert_eq!(child["references"][0]["spanID"], root["spanID"]);
    }
    assert_eq!(tag(root, "span.kind"), Some(&Value::from("server")));
    assert_eq!(tag(call, "span.kind"), Some(&Value::from("client")));
    assert_eq!(
        tag(root, "http.response.status_code"),
        Some(&Value::from(200))
    );
    assert_eq!(tag(root, "request.index"), Some(&Value::from(0)));
    assert_eq!(tag(call, "peer.service"), Some(&Value::from("payments")));
    assert_eq!(tag(call, "error"), Some(&Value::from(true)));
    assert_eq!(
        tag(call, "otel.status_description"),
        Some(&Value::from("card declined"))
    );
    assert_eq!(
        tag(root, "otel.scope.name"),
        Some(&Value::from("checkout-handler"))
    );
    let fields = &call["logs"][0]["fields"];
    assert!(
        fields
            .as_array()
            .is_some_and(|fields| fields.iter().any(|field| field["value"] == "CardDeclined")),
        "{fields}"
    );
    let process = &trace["processes"][root["processID"].as_str().unwrap()];
    assert_eq!(process["serviceName"], "checkout");
    assert!(
        process["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|tag| tag["key"] == "deployment.environment" && tag["value"] == "test"),
        "{process}"
    );
    assert!(root["duration"].as_u64().unwrap() >= call["duration"].as_u64().unwrap());

    // Every request is found by search, and the failed ones by the error tag.
    let end_ms = start_ms + 120_000;
    let search = |tags: Option<&'static str>| {
        let mut params = vec![
            ("service", "checkout".to_owned()),
            ("start", (start_ms * 1_000 - 60_000_000).to_string()),
            ("end", (end_ms * 1_000).to_string()),
            ("limit", "100".to_owned()),
        ];
        if let Some(tags) = tags {
            params.push(("tags", tags.to_owned()));
        }
        params
    };
    let found = wait_for(
        "every request's trace",
        Duration::from_secs(30),
        async || {
            let (_, body) = stack.get_json("/api/traces", &search(None)).await;
            let found = body["data"].as_array()?.len() as u64;
            (found == NUM_REQUESTS).then_some(found)
        },
    )
    .await;
    assert_eq!(found, NUM_REQUESTS);
    let (status, body) = stack
        .get_json("/api/traces", &search(Some(r#"{"error":"true"}"#)))
        .await;
    assert_eq!(status, 200, "{body}");
    let mut failed_found: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|trace| trace["traceID"].as_str().unwrap())
        .collect();
    failed_found.sort_unstable();
    let mut failed_sent: Vec<&str> = trace_ids.iter().step_by(3).map(String::as_str).collect();
    failed_sent.sort_unstable();
    assert_eq!(failed_found, failed_sent);

    // RED metrics of the client operation: every call counted, a third failed.
    let params = [
        ("service", "checkout".to_owned()),
        ("operation", "charge".to_owned()),
        ("start", (start_ms - 60_000).to_string()),
        ("end", end_ms.to_string()),
        ("step", "60".to_owned()),
    ];
    let total = wait_for(
        "the calls' aggregates",
        Duration::from_secs(30),
        async || {
            let (_, body) = stack.get_json("/api/v1/metrics", &params).await;
            (body["total"]["count"] == NUM_REQUESTS).then(|| body["total"].clone())
        },
    )
    .await;
    assert_eq!(total["errors"], NUM_REQUESTS / 3);

    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .expect("the provider shuts down");
    stack.stop().await;
}

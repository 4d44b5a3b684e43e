//! Stateless scaling: two collectors write to one ClickHouse database; what either
//! stores, both query services answer; an agent given both addresses fails over when
//! the first stops, and every count arrives exactly once (no report lost, none stored
//! twice), kept spans included.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use caracal_agent::Agent;
use caracal_testkit::{otlp::export_request, test_store, TestStack};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, trace::v1::Span,
};
use prost::Message;

const SERVICE: &str = "scaled-app";
/// Transactions recorded while both collectors run, then after the first one stops.
const NUM_BEFORE: u64 = 300;
const NUM_AFTER: u64 = 200;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn one_span_request(trace: u128, name: &str) -> ExportTraceServiceRequest {
    let start = unix_ms() * 1_000_000 - 1_000_000_000;
    export_request(
        "scaled-otlp",
        vec![Span {
            trace_id: trace.to_be_bytes().to_vec(),
            span_id: 7u64.to_be_bytes().to_vec(),
            name: name.into(),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1_000_000,
            ..Default::default()
        }],
    )
}

async fn span_names(stack: &TestStack, trace: u128) -> Vec<String> {
    let (status, body) = stack
        .get_json(&format!("/api/traces/{trace:032x}"), &[])
        .await;
    if status != 200 {
        return Vec::new();
    }
    body["data"][0]["spans"]
        .as_array()
        .map(|spans| {
            spans
                .iter()
                .filter_map(|span| span["operationName"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn counts(stack: &TestStack, start_ms: u64) -> (Option<u64>, Option<u64>) {
    let mut found = [None, None];
    for (slot, operation) in found.iter_mut().zip(["GET /before", "GET /after"]) {
        let params = [
            ("service", SERVICE.to_owned()),
            ("operation", operation.to_owned()),
            ("start", start_ms.to_string()),
            ("end", (unix_ms() + 20_000).to_string()),
            ("step", "60".to_owned()),
        ];
        let (status, body) = stack.get_json("/api/v1/metrics", &params).await;
        assert_eq!(status, 200, "{body}");
        *slot = body["total"]["count"].as_u64();
    }
    (found[0], found[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_share_one_store_and_an_agent_fails_over() {
    let store = test_store("two_collectors").await;
    let first = TestStack::start(store.clone()).await;
    let second = TestStack::start(store.clone()).await;

    // Each collector stores what it receives; both query services see both.
    for (stack, trace, name) in [(&first, 0xa1, "via first"), (&second, 0xb2, "via second")] {
        let (status, body) = stack
            .post_otlp(
                "application/x-protobuf",
                one_span_request(trace, name).encode_to_vec(),
            )
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    for stack in [&first, &second] {
        assert_eq!(span_names(stack, 0xa1).await, ["via first"]);
        assert_eq!(span_names(stack, 0xb2).await, ["via second"]);
    }

    // An agent reports to the first collector, then to the second once it stops.
    let start_ms = unix_ms() - 20_000;
    let agent = Agent::builder()
        .service_name(SERVICE)
        .instance("scaled-app-1")
        .collector_addrs([first.otlp_grpc.to_string(), second.otlp_grpc.to_string()])
        .sample_ratio(1.0)
        .start();
    let record = |name: &'static str, count: u64| {
        for index in 0..count {
            agent
                .transaction("URL", name)
                .finish_with_duration(Duration::from_micros(200 + index));
        }
    };
    record("GET /before", NUM_BEFORE);
    let deadline = Instant::now() + Duration::from_secs(40);
    while counts(&first, start_ms).await.0 != Some(NUM_BEFORE) {
        assert!(Instant::now() < deadline, "first report never arrived");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    first.stop().await;
    record("GET /after", NUM_AFTER);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let arrived = counts(&second, start_ms).await;
        if arrived == (Some(NUM_BEFORE), Some(NUM_AFTER)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counts {arrived:?}; agent {:?}",
            agent.stats()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every transaction was kept (sample ratio 1): each span is stored once.
    let stored: u64 = store
        .client()
        .query("SELECT count() FROM spans FINAL WHERE service_name = ?")
        .bind(SERVICE)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(stored, NUM_BEFORE + NUM_AFTER);
    let stats = agent.stats();
    assert_eq!(stats.dropped_reports, 0, "{stats:?}");
    let agent_for_shutdown = agent.clone();
    tokio::task::spawn_blocking(move || agent_for_shutdown.shutdown(Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("shutdown flushes");
    second.stop().await;
}

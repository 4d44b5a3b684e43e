//! Bad rows in an agent report: each is refused alone, the answer says how many and
//! why, and everything else in the report is stored.

use std::time::{SystemTime, UNIX_EPOCH};

use caracal_proto::{
    AgentReport, Aggregate, EventCount, Heartbeat, MetricKind, MetricValue, ReportResponse,
    REPORT_PATH,
};
use caracal_testkit::{metric_value, test_store, TestStack};
use opentelemetry_proto::tonic::{
    common::v1::{any_value, AnyValue, KeyValue},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use tonic::codegen::http::uri::PathAndQuery;

const SERVICE: &str = "rows-app";

fn now_s() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

/// A consistent aggregate of `bucket`: 3 failed calls of 1, 1 and 2 ms.
fn aggregate(bucket: u32, name: &str) -> Aggregate {
    Aggregate {
        bucket,
        name: name.into(),
        kind: 2,
        status: 2,
        count: 3,
        errors: 3,
        sum_ns: 4_000_000,
        min_ns: 1_000_000,
        max_ns: 2_000_000,
        hist_keys: vec![1_000_000, 2_000_000],
        hist_counts: vec![2, 1],
        ..Aggregate::default()
    }
}

fn kept_span(trace_id: Vec<u8>, start_s: u32) -> Span {
    let start_ns = u64::from(start_s) * 1_000_000_000;
    Span {
        trace_id,
        span_id: 7u64.to_be_bytes().to_vec(),
        name: "GET /kept".into(),
        kind: 2,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: start_ns + 2_000_000,
        ..Span::default()
    }
}

/// One good row of each kind, and bad ones beside them.
fn report(bucket: u32) -> AgentReport {
    let resource = Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(SERVICE.into())),
            }),
            ..KeyValue::default()
        }],
        ..Resource::default()
    };
    AgentReport {
        service: SERVICE.into(),
        instance: "rows-1".into(),
        host: "test".into(),
        sequence: 1,
        aggregates: vec![
            aggregate(bucket, "GET /good"),
            // A bucket in 2100, and one off the 10-second grid.
            aggregate(4_102_444_800, "GET /good"),
            aggregate(bucket + 3, "GET /good"),
            Aggregate {
                errors: 4,
                ..aggregate(bucket, "GET /good")
            },
            Aggregate {
                hist_counts: vec![2, 2],
                ..aggregate(bucket, "GET /good")
            },
            Aggregate {
                status: 7,
                ..aggregate(bucket, "GET /good")
            },
            // Errors on a row that is not an ERROR row; a maximum beyond the histogram;
            // keys out of order; a sum below three calls of the minimum.
            Aggregate {
                status: 0,
                ..aggregate(bucket, "GET /good")
            },
            Aggregate {
                max_ns: u64::MAX,
                ..aggregate(bucket, "GET /good")
            },
            Aggregate {
                hist_keys: vec![2_000_000, 1_000_000],
                hist_counts: vec![1, 2],
                ..aggregate(bucket, "GET /good")
            },
            Aggregate {
                sum_ns: 1,
                ..aggregate(bucket, "GET /good")
            },
        ],
        events: vec![
            EventCount {
                bucket,
                event_type: "Cache".into(),
                name: "hit".into(),
                status: 0,
                count: 5,
            },
            EventCount {
                bucket,
                event_type: "Cache".into(),
                name: "miss".into(),
                status: 0,
                count: 0,
            },
        ],
        metrics: vec![
            MetricValue {
                bucket,
                name: "pool.size".into(),
                kind: MetricKind::Gauge as i32,
                value: 8.0,
                count: 1,
            },
            MetricValue {
                bucket,
                name: "pool.wait".into(),
                kind: MetricKind::Duration as i32,
                value: f64::NAN,
                count: 1,
            },
        ],
        kept_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    kept_span(0x5eed_u128.to_be_bytes().to_vec(), bucket),
                    kept_span(vec![0; 16], bucket),
                ],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
        heartbeat: Some(Heartbeat {
            time_unix_ms: 0,
            rss_bytes: 1,
            ..Heartbeat::default()
        }),
    }
}

async fn send(stack: &TestStack, report: AgentReport) -> ReportResponse {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", stack.otlp_grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<AgentReport, ReportResponse>::default();
    grpc.unary(
        tonic::Request::new(report),
        PathAndQuery::from_static(REPORT_PATH),
        codec,
    )
    .await
    .expect("the report is taken")
    .into_inner()
}

async fn count_rows(stack: &TestStack, table: &str) -> u64 {
    stack
        .store
        .client()
        .query(&format!(
            "SELECT count() FROM {table} WHERE tenant = 'default' AND service = ?"
        ))
        .bind(SERVICE)
        .fetch_one()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_refused_one_by_one_and_the_rest_stored() {
    let stack = TestStack::start(test_store("agent_bad_rows").await).await;
    let bucket = (now_s() - 60) / 10 * 10;

    let response = send(&stack, report(bucket)).await;
    assert!(response.stored);
    // 9 aggregates, 1 event, 1 metric, the heartbeat, 1 kept span.
    assert_eq!(response.rejected, 13, "{}", response.error_message);
    for part in [
        "rejected 12 agent rows:",
        "3 time_out_of_range",
        "1 unknown_enum_value",
        "7 inconsistent_counts",
        "1 non_finite_value",
        "rejected 1 spans: 1 invalid_trace_id",
    ] {
        assert!(
            response.error_message.contains(part),
            "{part:?} in {:?}",
            response.error_message
        );
    }

    let start_ms = (u64::from(bucket) - 60) * 1_000;
    let end_ms = (u64::from(bucket) + 60) * 1_000;
    let (status, body) = stack
        .get_json(
            "/api/v1/metrics",
            &[
                ("service", SERVICE.to_owned()),
                ("start", start_ms.to_string()),
                ("end", end_ms.to_string()),
                ("step", "10".to_owned()),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let total = &body["total"];
    assert_eq!(total["count"], 3, "{body}");
    assert_eq!(total["errors"], 3, "{body}");
    assert_eq!(total["max_us"], 2_000.0, "{body}");
    assert_eq!(count_rows(&stack, "agent_events").await, 1);
    assert_eq!(count_rows(&stack, "agent_metrics").await, 1);
    assert_eq!(count_rows(&stack, "agent_heartbeats").await, 0);
    let kept: u64 = stack
        .store
        .client()
        .query("SELECT count() FROM spans WHERE tenant = 'default' AND service_name = ?")
        .bind(SERVICE)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(kept, 1);

    let (_, _, scrape) = stack.scrape_metrics(stack.otlp_http).await;
    for (reason, count) in [
        ("time_out_of_range", 3.0),
        ("unknown_enum_value", 1.0),
        ("inconsistent_counts", 7.0),
        ("non_finite_value", 1.0),
    ] {
        let series = format!("caracal_agent_rejected_rows_total{{reason=\"{reason}\"}}");
        assert_eq!(metric_value(&scrape, &series), Some(count), "{series}");
    }

    // A report with nothing wrong is answered without a message.
    let mut clean = report(bucket);
    clean.sequence = 2;
    clean.aggregates.truncate(1);
    clean.events.truncate(1);
    clean.metrics.truncate(1);
    clean.kept_spans.clear();
    clean.heartbeat = None;
    let response = send(&stack, clean).await;
    assert!(response.stored);
    assert_eq!(response.rejected, 0);
    assert_eq!(response.error_message, "");
    stack.stop().await;
}

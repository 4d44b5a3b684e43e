//! Agents report through the real collector: counts are exact and percentiles of every
//! merged window (one instance, all instances; one minute, one hour) are within 1% of
//! the exact values of the raw durations.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use caracal_agent::Agent;
use caracal_testkit::{test_store, TestStack};
use serde_json::Value;

fn exact_quantile(sorted: &[u64], quantile: f64) -> f64 {
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1] as f64
}

/// A skewed, deterministic latency distribution in nanoseconds (mostly milliseconds,
/// with a long tail), different per seed.
fn durations(seed: u64, count: usize) -> Vec<u64> {
    let mut state = seed;
    (0..count)
        .map(|index| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let base = 500_000 + (state >> 35) % 20_000_000;
            if index % 100 == 0 {
                base * 20
            } else {
                base
            }
        })
        .collect()
}

fn start_agent(stack: &TestStack, service: &str, instance: &str) -> Agent {
    Agent::builder()
        .service_name(service)
        .instance(instance)
        .collector_addrs([stack.otlp_grpc.to_string()])
        .sample_ratio(0.0)
        .start()
}

fn record(agent: &Agent, durations: &[u64]) {
    for nanos in durations {
        agent
            .transaction("URL", "GET /checkout")
            .finish_with_duration(Duration::from_nanos(*nanos));
    }
}

async fn metrics(stack: &TestStack, service: &str, start_ms: u64, end_ms: u64, step: u64) -> Value {
    let params = [
        ("service", service.to_owned()),
        ("operation", "GET /checkout".to_owned()),
        ("start", start_ms.to_string()),
        ("end", end_ms.to_string()),
        ("step", step.to_string()),
    ];
    let (status, body) = stack.get_json("/api/v1/metrics", &params).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn check_window(label: &str, body: &Value, raw: &mut [u64]) {
    raw.sort_unstable();
    let total = &body["total"];
    assert_eq!(
        total["count"].as_u64(),
        Some(raw.len() as u64),
        "{label}: {body}"
    );
    for (field, quantile) in [
        ("p50_us", 0.5),
        ("p90_us", 0.9),
        ("p99_us", 0.99),
        ("p999_us", 0.999),
    ] {
        let exact = exact_quantile(raw, quantile) / 1_000.0;
        let reported = total[field].as_f64().unwrap();
        assert!(
            (reported - exact).abs() / exact < 0.01,
            "{label} {field}: {reported} vs exact {exact}"
        );
    }
    // The agent's clock runs on between `finish_with_duration` and the end: microseconds.
    let max = total["max_us"].as_f64().unwrap();
    let exact_max = *raw.last().unwrap() as f64 / 1_000.0;
    assert!(
        (max - exact_max).abs() / exact_max < 0.001,
        "{label} max: {max} vs {exact_max}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_aggregates_merge_exactly_across_instances_and_rollups() {
    let stack = TestStack::start(test_store("agent_metrics").await).await;
    // Stay inside one minute: if it is about to end, start at the next one.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    if now.as_secs() % 60 > 50 {
        tokio::time::sleep(Duration::from_secs(61 - now.as_secs() % 60)).await;
    }
    let minute_start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60
        * 60;

    let solo = start_agent(&stack, "solo", "solo-1");
    let mut solo_raw = durations(1, 3_000);
    record(&solo, &solo_raw);
    let mut fleet_raw = Vec::new();
    let mut fleet = Vec::new();
    for instance in 0..3 {
        let agent = start_agent(&stack, "fleet", &format!("fleet-{instance}"));
        let raw = durations(10 + instance, 2_000 + 500 * instance as usize);
        record(&agent, &raw);
        fleet_raw.extend(raw);
        fleet.push(agent);
    }
    let agents: Vec<Agent> = std::iter::once(solo).chain(fleet).collect();
    tokio::task::spawn_blocking(move || {
        for agent in agents {
            agent
                .shutdown(Duration::from_secs(10))
                .expect("agent flushes");
        }
    })
    .await
    .unwrap();

    let minute = (minute_start * 1_000, (minute_start + 60) * 1_000);
    let hour_start = minute_start / 3_600 * 3_600;
    let hour = (hour_start * 1_000, (hour_start + 3_600) * 1_000);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let body = metrics(&stack, "fleet", minute.0, minute.1, 60).await;
        if body["total"]["count"].as_u64() == Some(fleet_raw.len() as u64) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fleet metrics incomplete: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    check_window(
        "solo, one minute",
        &metrics(&stack, "solo", minute.0, minute.1, 60).await,
        &mut solo_raw,
    );
    check_window(
        "solo, one hour",
        &metrics(&stack, "solo", hour.0, hour.1, 3_600).await,
        &mut solo_raw,
    );
    check_window(
        "all instances, one minute",
        &metrics(&stack, "fleet", minute.0, minute.1, 60).await,
        &mut fleet_raw,
    );
    check_window(
        "all instances, one hour",
        &metrics(&stack, "fleet", hour.0, hour.1, 3_600).await,
        &mut fleet_raw,
    );
    stack.stop().await;
}

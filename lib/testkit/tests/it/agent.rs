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

/// `/api/v1/metrics` for the fleet's operation: all instances, or one.
async fn metrics(
    stack: &TestStack,
    instance: Option<&str>,
    (start_ms, end_ms): (u64, u64),
    step: u64,
) -> Value {
    let mut params = vec![
        ("service", "fleet".to_owned()),
        ("operation", "GET /checkout".to_owned()),
        ("start", start_ms.to_string()),
        ("end", end_ms.to_string()),
        ("step", step.to_string()),
    ];
    params.extend(instance.map(|name| ("instance", name.to_owned())));
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

    // Four instances of one service, each with its own latency distribution.
    let mut raw_by_instance = Vec::new();
    let mut agents = Vec::new();
    for instance in 0..4 {
        let name = format!("fleet-{instance}");
        let agent = start_agent(&stack, "fleet", &name);
        let raw = durations(10 + instance, 2_000 + 500 * instance as usize);
        record(&agent, &raw);
        raw_by_instance.push((name, raw));
        agents.push(agent);
    }
    let mut fleet_raw: Vec<u64> = raw_by_instance
        .iter()
        .flat_map(|(_, raw)| raw.iter().copied())
        .collect();
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
    // One insert fills every rollup, one table after another: wait until each window
    // the checks read (all instances and each one, by the minute and by the hour) holds
    // every span.
    let windows: Vec<(Option<&str>, usize)> = std::iter::once((None, fleet_raw.len()))
        .chain(
            raw_by_instance
                .iter()
                .map(|(name, raw)| (Some(name.as_str()), raw.len())),
        )
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut incomplete = Vec::new();
        for (instance, expected) in &windows {
            for (window, step) in [(minute, 60), (hour, 3_600)] {
                let body = metrics(&stack, *instance, window, step).await;
                if body["total"]["count"].as_u64() != Some(*expected as u64) {
                    incomplete.push(format!("{instance:?} step {step}: {}", body["total"]));
                }
            }
        }
        if incomplete.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics incomplete: {incomplete:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (name, raw) in &mut raw_by_instance {
        let instance = Some(name.as_str());
        check_window(
            &format!("{name}, one minute"),
            &metrics(&stack, instance, minute, 60).await,
            raw,
        );
        check_window(
            &format!("{name}, one hour"),
            &metrics(&stack, instance, hour, 3_600).await,
            raw,
        );
    }
    check_window(
        "all instances, one minute",
        &metrics(&stack, None, minute, 60).await,
        &mut fleet_raw,
    );
    check_window(
        "all instances, one hour",
        &metrics(&stack, None, hour, 3_600).await,
        &mut fleet_raw,
    );
    // The fleet's instances, each with its exact count.
    let params = [
        ("service", "fleet".to_owned()),
        ("start", hour.0.to_string()),
        ("end", hour.1.to_string()),
    ];
    let (status, body) = stack.get_json("/api/v1/instances", &params).await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<(String, u64)> = body["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|row| {
            let name = row["instance"].as_str().unwrap_or_default().to_owned();
            (name, row["count"].as_u64().unwrap_or_default())
        })
        .collect();
    let expected: Vec<(String, u64)> = raw_by_instance
        .iter()
        .map(|(name, raw)| (name.clone(), raw.len() as u64))
        .collect();
    assert_eq!(listed, expected, "{body}");
    // An instance the fleet does not have has no data, and a step finer than the
    // per-instance tables is refused.
    let absent = metrics(&stack, Some("fleet-9"), hour, 3_600).await;
    assert_eq!(absent["total"]["count"].as_u64(), Some(0), "{absent}");
    let params = [
        ("service", "fleet".to_owned()),
        ("instance", "fleet-0".to_owned()),
        ("start", minute.0.to_string()),
        ("end", minute.1.to_string()),
        ("step", "10".to_owned()),
    ];
    let (status, body) = stack.get_json("/api/v1/metrics", &params).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string()
            .contains("multiple of 60 seconds with 'instance'"),
        "{body}"
    );
    stack.stop().await;
}

//! Fault test: the collector goes down for a while (`CARACAL_OUTAGE_SECS`, default 120)
//! and comes back on the same port. The instrumented app's recording latency does not
//! change, nothing panics, and every count recorded during the outage arrives once the
//! collector is back, without a report dropped (the outage fits the memory bound).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use caracal_agent::Agent;
use caracal_testkit::{test_store, TestStack};
use tokio::net::TcpListener;

/// Default length of the outage, as in the agent issue's fault test.
const DEFAULT_OUTAGE_SECS: u64 = 120;
/// Recording with the collector up, for the latency baseline.
const BASELINE: Duration = Duration::from_secs(5);
/// Transactions per batch; the app sleeps between batches to keep CPU use low.
const BATCH_SIZE: usize = 10;
const BATCH_PAUSE: Duration = Duration::from_millis(5);
/// How long the agent may take to deliver the backlog once the collector is back
/// (one interval, plus the longest backoff, plus slack).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

const BEFORE: &str = "GET /before-outage";
const DURING: &str = "GET /during-outage";

const PHASE_BASELINE: u8 = 0;
const PHASE_OUTAGE: u8 = 1;
const PHASE_STOP: u8 = 2;

/// Per-transaction recording latencies (nanoseconds) and counts, by phase.
#[derive(Debug, Default)]
struct Recorded {
    baseline_ns: Vec<u64>,
    outage_ns: Vec<u64>,
}

/// The app: records batches of transactions at a steady rate, timing each recording,
/// until told to stop.
fn run_app(agent: &Agent, phase: &AtomicU8) -> Recorded {
    let mut recorded = Recorded::default();
    loop {
        let current = phase.load(Ordering::Acquire);
        let (name, latencies) = match current {
            PHASE_BASELINE => (BEFORE, &mut recorded.baseline_ns),
            PHASE_OUTAGE => (DURING, &mut recorded.outage_ns),
            _ => return recorded,
        };
        for index in 0..BATCH_SIZE {
            let started = Instant::now();
            agent
                .transaction("URL", name)
                .finish_with_duration(Duration::from_micros(100 + index as u64));
            latencies.push(started.elapsed().as_nanos() as u64);
        }
        std::thread::sleep(BATCH_PAUSE);
    }
}

fn p99(latencies: &mut [u64]) -> u64 {
    latencies.sort_unstable();
    latencies[(latencies.len() * 99).div_ceil(100) - 1]
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn count(stack: &TestStack, operation: &str, start_ms: u64) -> Option<u64> {
    let params = [
        ("service", "outage-app".to_owned()),
        ("operation", operation.to_owned()),
        ("start", start_ms.to_string()),
        ("end", (unix_ms() + 20_000).to_string()),
        ("step", "60".to_owned()),
    ];
    let (status, body) = stack.get_json("/api/v1/metrics", &params).await;
    assert_eq!(status, 200, "{body}");
    body["total"]["count"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_survives_a_collector_outage_and_delivers_the_backlog() {
    let test_started = Instant::now();
    let outage = Duration::from_secs(
        std::env::var("CARACAL_OUTAGE_SECS")
            .ok()
            .and_then(|secs| secs.parse().ok())
            .unwrap_or(DEFAULT_OUTAGE_SECS),
    );
    let store = test_store("agent_outage").await;
    let start_ms = unix_ms() - 20_000;
    let first = TestStack::start(store.clone()).await;
    let collector_addr = first.otlp_grpc;
    let agent = Agent::builder()
        .service_name("outage-app")
        .instance("outage-app-1")
        .collector_addrs([collector_addr.to_string()])
        .sample_ratio(0.0)
        .start();

    let phase = Arc::new(AtomicU8::new(PHASE_BASELINE));
    let app = std::thread::spawn({
        let agent = agent.clone();
        let phase = Arc::clone(&phase);
        move || run_app(&agent, &phase)
    });

    tokio::time::sleep(BASELINE).await;
    first.stop().await;
    phase.store(PHASE_OUTAGE, Ordering::Release);
    tokio::time::sleep(outage).await;
    phase.store(PHASE_STOP, Ordering::Release);
    let mut recorded = tokio::task::spawn_blocking(move || app.join())
        .await
        .unwrap()
        .expect("the app never panics");
    if outage >= Duration::from_secs(20) {
        // At least one interval ended during the outage.
        let stats = agent.stats();
        assert!(
            stats.pending_reports > 0,
            "reports wait for the collector: {stats:?}"
        );
    }

    // The collector comes back on the same port.
    let listener = TcpListener::bind(collector_addr)
        .await
        .expect("rebind the collector's port");
    let second = TestStack::start_on(store, listener).await;
    let (num_before, num_during) = (
        recorded.baseline_ns.len() as u64,
        recorded.outage_ns.len() as u64,
    );
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let arrived = (
            count(&second, BEFORE, start_ms).await,
            count(&second, DURING, start_ms).await,
        );
        if arrived == (Some(num_before), Some(num_during)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counts {arrived:?}, expected ({num_before}, {num_during}); agent {:?}",
            agent.stats()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stats = agent.stats();
    assert_eq!(stats.dropped_reports, 0, "{stats:?}");

    let baseline_p99 = p99(&mut recorded.baseline_ns);
    let outage_p99 = p99(&mut recorded.outage_ns);
    if std::env::var_os("TEST_LOG").is_some() {
        eprintln!(
            "outage {outage:?}: {num_before} before, {num_during} during; recording p99 \
             {baseline_p99} ns before, {outage_p99} ns during; total {:?}",
            test_started.elapsed()
        );
    }
    assert!(
        outage_p99 < 2 * baseline_p99 + 20_000,
        "recording p99 {outage_p99} ns during the outage vs {baseline_p99} ns before"
    );

    let agent_for_shutdown = agent.clone();
    tokio::task::spawn_blocking(move || agent_for_shutdown.shutdown(Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("shutdown flushes");
    second.stop().await;
}

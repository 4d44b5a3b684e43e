//! Agent tenancy: an agent with an ingest token reports into its tenant; one without a
//! token is refused (its reports wait, nothing is stored), and the default tenant sees
//! neither.

use std::time::Duration;

use caracal_agent::Agent;
use caracal_model::tenant::TokenTable;
use caracal_testkit::{test_collector_config, test_store, wait_for, TestStack};

const NUM_TOKEN: u64 = 50;

async fn stored_spans(stack: &TestStack, tenant: &str, service: &str) -> u64 {
    stack
        .store
        .client()
        .query("SELECT count() FROM spans FINAL WHERE tenant = ? AND service_name = ?")
        .bind(tenant)
        .bind(service)
        .fetch_one()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_tokens_choose_the_tenant() {
    let config = caracal_collector::CollectorConfig {
        ingest_tokens: TokenTable::parse("agent-s3cret=team-a").unwrap(),
        ..test_collector_config()
    };
    let stack = TestStack::start_with(test_store("agent_tenancy").await, config).await;
    let with_token = Agent::builder()
        .service_name("tenant-app")
        .collector_addrs([stack.otlp_grpc.to_string()])
        .token("agent-s3cret")
        .sample_ratio(1.0)
        .start();
    let without_token = Agent::builder()
        .service_name("anon-app")
        .collector_addrs([stack.otlp_grpc.to_string()])
        .sample_ratio(1.0)
        .start();
    for index in 0..NUM_TOKEN {
        with_token
            .transaction("URL", "GET /tenant")
            .finish_with_duration(Duration::from_micros(100 + index));
        without_token
            .transaction("URL", "GET /anon")
            .finish_with_duration(Duration::from_micros(100 + index));
    }
    wait_for(
        "the token agent's spans",
        Duration::from_secs(40),
        async || (stored_spans(&stack, "team-a", "tenant-app").await == NUM_TOKEN).then_some(()),
    )
    .await;
    wait_for(
        "the anonymous agent's refused report",
        Duration::from_secs(20),
        async || (without_token.stats().pending_reports > 0).then_some(()),
    )
    .await;
    assert_eq!(stored_spans(&stack, "team-a", "anon-app").await, 0);
    assert_eq!(stored_spans(&stack, "default", "anon-app").await, 0);
    assert_eq!(stored_spans(&stack, "default", "tenant-app").await, 0);
    // The query service has no tokens: it answers for the default tenant only.
    let (status, services) = stack.get_json("/api/services", &[]).await;
    assert_eq!(status, 200, "{services}");
    assert_eq!(services["data"], serde_json::json!([]));
    assert!(!format!("{:?}", with_token).contains("agent-s3cret"));
    for agent in [with_token, without_token] {
        tokio::task::spawn_blocking(move || agent.shutdown(Duration::from_millis(200)))
            .await
            .unwrap()
            .ok();
    }
    stack.stop().await;
}

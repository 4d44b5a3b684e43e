//! Smoke test of the real `caracal` executable: `caracal up` starts, becomes healthy,
//! ingests an OTLP/JSON fixture, answers the Jaeger API, and stops cleanly on SIGTERM.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn caracal_up_serves_and_stops_cleanly() {
    caracal_testkit::ensure_clickhouse();
    let database = format!("smoke_{}", std::process::id());
    let (grpc, otlp_http, http, zipkin) = (free_port(), free_port(), free_port(), free_port());
    let mut running = Running {
        child: Command::new(env!("CARGO_BIN_EXE_caracal"))
            .arg("up")
            .env("CARACAL_CLICKHOUSE_URL", caracal_testkit::clickhouse_url())
            .env("CARACAL_CLICKHOUSE_DATABASE", &database)
            .env("CARACAL_OTLP_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
            .env("CARACAL_OTLP_HTTP_ADDR", format!("127.0.0.1:{otlp_http}"))
            .env("CARACAL_HTTP_ADDR", format!("127.0.0.1:{http}"))
            .env("CARACAL_ZIPKIN_ADDR", format!("127.0.0.1:{zipkin}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start caracal"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = client
            .get(format!("http://127.0.0.1:{http}/healthz"))
            .send()
            .await;
        if health.is_ok_and(|response| response.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "caracal did not become healthy");
        assert!(
            running.child.try_wait().unwrap().is_none(),
            "caracal exited early"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let fixture = caracal_testkit::fixtures_dir().join("otlp-json/example_trace.json");
    let response = client
        .post(format!("http://127.0.0.1:{otlp_http}/v1/traces"))
        .header("content-type", "application/json")
        .body(std::fs::read(fixture).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let trace: serde_json::Value = client
        .get(format!(
            "http://127.0.0.1:{http}/api/traces/00000000000000000000000000000011"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(trace["data"][0]["spans"].as_array().unwrap().len(), 5);

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(running.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = running.child.wait().unwrap();
    assert!(exit.success(), "caracal exited with {exit}");
    let store = caracal_store::Store::new(&caracal_store::ClickHouseConfig {
        url: caracal_testkit::clickhouse_url(),
        database,
        ..Default::default()
    })
    .unwrap();
    store.drop_database().await.unwrap();
}

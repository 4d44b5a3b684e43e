//! CAT-style instrumentation of a small request handler.
//!
//! Run against a collector (default `127.0.0.1:4317`):
//!
//! ```sh
//! CARACAL_OTLP_GRPC_ADDR=127.0.0.1:4317 cargo run -p caracal-agent --example cat_style
//! ```
//!
//! Without a collector it still runs, and says that its report was not delivered.

#![allow(clippy::print_stdout)] // An example talks to the person running it.

use std::time::{Duration, Instant};

use caracal_agent::{Agent, TraceContext};

/// What a failed downstream call returns.
#[derive(Debug, thiserror::Error)]
#[error("stock service timed out")]
struct StockTimeout;

fn main() {
    // Defaults, then CARACAL_* environment variables, then these calls.
    let agent = Agent::builder()
        .service_name("cat-style-example")
        .slow_threshold("GET /report", Duration::from_millis(20))
        .start();

    let started = Instant::now();
    let mut index = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        handle(&agent, index);
        index += 1;
        std::thread::sleep(Duration::from_millis(5));
    }

    let result = agent.shutdown(Duration::from_secs(3));
    let stats = agent.stats();
    match result {
        Ok(()) => println!(
            "delivered: {index} requests, {} bytes sent",
            stats.bytes_sent
        ),
        Err(error) => println!(
            "not delivered ({error}): {index} requests recorded, {} reports pending",
            stats.pending_reports
        ),
    }
    println!("{stats:?}");
}

/// One request: a server transaction with a query, a cache read and a downstream call.
fn handle(agent: &Agent, index: u64) {
    // An incoming request may carry a W3C traceparent header.
    let incoming = [(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    )];
    let parent = if index.is_multiple_of(10) {
        TraceContext::extract(incoming)
    } else {
        None
    };
    let route = if index.is_multiple_of(50) {
        "GET /report"
    } else {
        "GET /orders/{id}"
    };
    let request = agent.transaction_with_parent("URL", route, parent.as_ref());
    request.add_data("http.route", route);
    {
        // Literal type and name: `transaction!` resolves them once for this call site.
        let query = caracal_agent::transaction!(agent, "SQL", "postgresql:SELECT orders");
        query.add_data("db.statement", "SELECT * FROM orders WHERE id = $1");
        std::thread::sleep(Duration::from_micros(300));
    }
    {
        let _read = caracal_agent::transaction!(agent, "Cache", "redis:GET order");
        agent.event(
            "Cache",
            if index.is_multiple_of(4) {
                "miss"
            } else {
                "hit"
            },
        );
    }
    {
        let call = agent.transaction("Call", "stock:GET /stock");
        let mut headers: Vec<(String, String)> = Vec::new();
        call.inject(&mut headers); // would go on the outgoing request
        if index % 100 == 7 {
            agent.record_error(&StockTimeout); // marks `call` failed: the trace is kept
        }
    }
    if route == "GET /report" {
        std::thread::sleep(Duration::from_millis(25)); // slower than its threshold: kept
    }
    agent.counter("orders.read", 1);
    agent.gauge("pool.idle", (index % 8) as f64);
}

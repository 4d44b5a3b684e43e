//! A service instrumented with `tracing`, bridged to OpenTelemetry by
//! `tracing-opentelemetry`, with the Caracal agent as the SDK's span processor and
//! sampler: every span is aggregated, and only the traces worth keeping are sent.
//!
//! ```sh
//! CARACAL_OTLP_GRPC_ADDR=127.0.0.1:4317 cargo run -p caracal-agent --example tracing
//! ```
//!
//! Without a collector it still runs, and says that its report was not delivered.

#![allow(clippy::print_stdout)] // An example talks to the person running it.

use std::time::{Duration, Instant};

use caracal_agent::Agent;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;

/// One request: a SERVER span with a database call and a call to payments.
#[tracing::instrument(fields(otel.name = "GET /orders/{id}", otel.kind = "server"))]
fn handle(order_id: u64) {
    {
        let query = tracing::info_span!(
            "SELECT orders",
            otel.kind = "client",
            db.system = "postgresql",
            otel.status_code = tracing::field::Empty,
        )
        .entered();
        std::thread::sleep(Duration::from_micros(300));
        if order_id % 100 == 7 {
            query.record("otel.status_code", "ERROR"); // this trace is kept
        }
    }
    let _call = tracing::info_span!(
        "POST /charge",
        otel.kind = "client",
        peer.service = "payments"
    )
    .entered();
}

fn main() {
    let agent = Agent::builder().service_name("tracing-example").start();
    let provider = SdkTracerProvider::builder()
        .with_sampler(agent.sampler())
        .with_span_processor(agent.span_processor())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("tracing-example")));

    let started = Instant::now();
    let mut num_requests = 0u64;
    tracing::subscriber::with_default(subscriber, || {
        while started.elapsed() < Duration::from_secs(2) {
            handle(num_requests);
            num_requests += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    });

    // Shutting the provider down shuts the agent down, flushing its last report.
    let result = provider.shutdown();
    let stats = agent.stats();
    match result {
        Ok(()) => println!(
            "delivered: {num_requests} requests, {} spans kept, {} bytes sent",
            stats.kept_spans, stats.bytes_sent
        ),
        Err(error) => println!(
            "recorded {num_requests} requests ({} spans kept) but could not deliver: {error}",
            stats.kept_spans
        ),
    }
}

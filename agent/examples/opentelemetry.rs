//! A service instrumented with the OpenTelemetry API, with the Caracal agent as its SDK
//! span processor and sampler: spans are aggregated in the process, and only the traces
//! worth keeping (errors, slow, the sampled share) are sent whole.
//!
//! ```sh
//! CARACAL_OTLP_GRPC_ADDR=127.0.0.1:4317 cargo run -p caracal-agent --example opentelemetry
//! ```
//!
//! Without a collector it still runs, and says that its report was not delivered.

#![allow(clippy::print_stdout)] // An example talks to the person running it.

use std::time::{Duration, Instant};

use caracal_agent::Agent;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::SdkTracerProvider;

fn main() {
    let agent = Agent::builder().service_name("otel-example").start();
    let provider = SdkTracerProvider::builder()
        .with_sampler(agent.sampler())
        .with_span_processor(agent.span_processor())
        .build();
    let tracer = provider.tracer("otel-example");

    let started = Instant::now();
    let mut index = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        tracer.in_span("GET /orders/{id}", |context| {
            let mut query = tracer
                .span_builder("SELECT orders")
                .with_kind(SpanKind::Client)
                .with_attributes([KeyValue::new("db.system", "postgresql")])
                .start_with_context(&tracer, &context);
            std::thread::sleep(Duration::from_micros(300));
            if index % 100 == 7 {
                query.set_status(Status::error("deadlock detected")); // this trace is kept
            }
            query.end();
            let mut call = tracer
                .span_builder("POST /charge")
                .with_kind(SpanKind::Client)
                .with_attributes([KeyValue::new("peer.service", "payments")])
                .start_with_context(&tracer, &context);
            // The sampled flag of this context says whether payments should keep its part.
            let _inject_sampled = call.span_context().is_sampled();
            call.end();
        });
        index += 1;
        std::thread::sleep(Duration::from_millis(5));
    }

    // Shutting the provider down shuts the agent down, flushing its last report.
    let result = provider.shutdown();
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

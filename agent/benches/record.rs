//! Cost of recording one span: the Caracal agent (aggregated only, nothing kept) side
//! by side with the OpenTelemetry SDK (tracer, `BatchSpanProcessor`, and either its
//! OTLP/gRPC exporter sending to a local OTLP receiver that discards, or an exporter
//! that discards), and heap allocations per span after warm-up, counted by a global
//! allocator. Two clock baselines show what timing a span costs on the machine: two
//! `Instant::now()` reads, and the two TSC reads the agent makes.
//!
//! ```sh
//! cargo bench -p caracal-agent --bench record
//! ```

#![allow(clippy::print_stdout)] // A benchmark reports to the person running it.

use std::alloc::System;
use std::hint::black_box;
use std::time::{Duration, Instant};

use caracal_agent::exporter::InMemoryExporter;
use caracal_agent::Agent;
use criterion::{criterion_group, criterion_main, Criterion};
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Spans recorded per allocation measurement.
const NUM_MEASURED_SPANS: u64 = 100_000;

/// Discards every batch, so only the SDK's own cost is measured.
#[derive(Debug)]
struct DiscardExporter;

impl SpanExporter for DiscardExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        drop(batch);
        Ok(())
    }
}

/// Operations the bench records.
const OPERATIONS: [&str; 2] = ["GET /orders/{id}", "GET /payments/{id}"];

/// An agent that keeps nothing: no sampled share, and thresholds no span reaches (a
/// learned p99 threshold would keep 1% of the spans, and the bench measures spans
/// that are only aggregated).
fn caracal_agent() -> Agent {
    OPERATIONS
        .into_iter()
        .fold(Agent::builder(), |builder, name| {
            builder.slow_threshold(name, Duration::from_secs(60))
        })
        .service_name("bench")
        .sample_ratio(0.0)
        .exporter(InMemoryExporter::new())
        .start()
}

fn otel_batch() -> (SdkTracerProvider, SdkTracer) {
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(DiscardExporter).build())
        .build();
    let tracer = provider.tracer("bench");
    (provider, tracer)
}

/// An OTLP/gRPC receiver that accepts every request and keeps nothing: the other end
/// of the SDK's OTLP exporter.
struct DiscardingReceiver;

#[tonic::async_trait]
impl TraceService for DiscardingReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        drop(request);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The SDK as a service would set it up: `BatchSpanProcessor` and the OTLP/gRPC
/// exporter (gzip), sending to a [`DiscardingReceiver`] on loopback served by
/// `runtime`.
fn otel_batch_otlp(runtime: &tokio::runtime::Runtime) -> (SdkTracerProvider, SdkTracer) {
    let exporter = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("the port's address");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(DiscardingReceiver))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://{address}"))
            .with_compression(opentelemetry_otlp::Compression::Gzip)
            .build()
            .expect("the OTLP exporter builds")
    });
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("bench");
    (provider, tracer)
}

fn otel_caracal(agent: &Agent) -> (SdkTracerProvider, SdkTracer) {
    let provider = SdkTracerProvider::builder()
        .with_sampler(agent.sampler())
        .with_span_processor(agent.span_processor())
        .build();
    let tracer = provider.tracer("bench");
    (provider, tracer)
}

/// Heap allocations (and reallocations) per call of `record`, after a warm-up.
fn allocations_per_span(mut record: impl FnMut()) -> f64 {
    for _ in 0..NUM_MEASURED_SPANS {
        record();
    }
    let region = Region::new(GLOBAL);
    for _ in 0..NUM_MEASURED_SPANS {
        record();
    }
    let change = region.change();
    (change.allocations + change.reallocations) as f64 / NUM_MEASURED_SPANS as f64
}

fn record(criterion: &mut Criterion) {
    let agent = caracal_agent();
    let (_batch_provider, batch_tracer) = otel_batch();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (otlp_provider, otlp_tracer) = otel_batch_otlp(&runtime);
    let (_caracal_provider, caracal_tracer) = otel_caracal(&agent);

    let mut group = criterion.benchmark_group("span");
    group.bench_function("caracal_agent_transaction", |bencher| {
        bencher.iter(|| agent.transaction("URL", black_box(OPERATIONS[0])).finish());
    });
    group.bench_function("caracal_agent_transaction_macro", |bencher| {
        bencher.iter(|| {
            caracal_agent::transaction!(*black_box(&agent), "URL", "GET /orders/{id}").finish()
        });
    });
    let handle = agent.operation("URL", OPERATIONS[0]);
    group.bench_function("caracal_agent_operation_handle", |bencher| {
        bencher.iter(|| black_box(&handle).transaction().finish());
    });
    group.bench_function("caracal_agent_two_threads_one_operation", |bencher| {
        // Both cores record the same operation: the time per span each thread sees.
        bencher.iter_custom(|iterations| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| {
                        for _ in 0..iterations {
                            black_box(&handle).transaction().finish();
                        }
                    });
                }
            });
            start.elapsed()
        });
    });
    let other_handle = agent.operation("URL", OPERATIONS[1]);
    group.bench_function("caracal_agent_two_threads_two_operations", |bencher| {
        // Each core records its own operation: what parallel recording costs without
        // sharing an operation.
        bencher.iter_custom(|iterations| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for handle in [&handle, &other_handle] {
                    scope.spawn(move || {
                        for _ in 0..iterations {
                            black_box(handle).transaction().finish();
                        }
                    });
                }
            });
            start.elapsed()
        });
    });
    group.bench_function("opentelemetry_sdk_batch", |bencher| {
        bencher.iter(|| batch_tracer.start(black_box("GET /orders/{id}")).end());
    });
    group.bench_function("opentelemetry_sdk_batch_otlp", |bencher| {
        bencher.iter(|| otlp_tracer.start(black_box("GET /orders/{id}")).end());
    });
    group.bench_function("opentelemetry_sdk_caracal_processor", |bencher| {
        bencher.iter(|| caracal_tracer.start(black_box("GET /orders/{id}")).end());
    });
    group.finish();

    let mut group = criterion.benchmark_group("clock");
    group.bench_function("two_instant_now", |bencher| {
        bencher.iter(|| {
            let start = Instant::now();
            black_box(start);
            Instant::now().saturating_duration_since(start)
        });
    });
    let clock = quanta::Clock::new();
    group.bench_function("two_tsc_reads", |bencher| {
        bencher.iter(|| {
            let start = clock.raw();
            black_box(start);
            clock.delta_as_nanos(start, clock.raw())
        });
    });
    group.finish();

    println!(
        "allocations per span after warm-up: caracal_agent_transaction {:.3}, caracal_agent_transaction_macro {:.3}, caracal_agent_operation_handle {:.3}, opentelemetry_sdk_batch {:.3}, opentelemetry_sdk_batch_otlp {:.3}, opentelemetry_sdk_caracal_processor {:.3}",
        allocations_per_span(|| agent.transaction("URL", "GET /orders/{id}").finish()),
        allocations_per_span(|| caracal_agent::transaction!(agent, "URL", "GET /orders/{id}").finish()),
        allocations_per_span(|| handle.transaction().finish()),
        allocations_per_span(|| batch_tracer.start("GET /orders/{id}").end()),
        allocations_per_span(|| otlp_tracer.start("GET /orders/{id}").end()),
        allocations_per_span(|| caracal_tracer.start("GET /orders/{id}").end()),
    );
    let stats = agent.stats();
    println!(
        "caracal agent: {} spans recorded (as of the last report), {} kept, {} dropped",
        stats.recorded, stats.kept_spans, stats.dropped_spans
    );
    let _ = agent.shutdown(Duration::from_millis(100));
    // The exporter's channel lives on the runtime: shut the SDK down before it.
    let _ = otlp_provider.shutdown();
    drop(runtime);
}

criterion_group!(benches, record);
criterion_main!(benches);

//! OpenTelemetry integration (feature `opentelemetry`, on by default): a service
//! instrumented with the `opentelemetry` API (or `tracing` through
//! `tracing-opentelemetry`) gets the same aggregation and trace keeping as CAT-style
//! transactions.
//!
//! - [`CaracalSpanProcessor`] aggregates every ended span (by span name, kind, status,
//!   and for client and producer spans the peer named by `peer.service`, `db.system`
//!   or `messaging.system`) and buffers the spans of each trace until its local root
//!   (a span without a parent, or with a remote one) ends; the trace is then kept whole
//!   if a span failed, was slow, or was sampled.
//! - [`CaracalSampler`] makes the head decision the W3C sampled flag carries: a sampled
//!   parent or a trace id in the sampled share is *recorded and sampled*, anything else
//!   is *recorded only*, so every span still reaches the processor and counts stay
//!   exact, while propagated `traceparent`s say whether the trace is kept. With another
//!   sampler, spans it drops are not counted.
//!
//! Kept spans are reported under the agent's service name, not the SDK resource's.
//!
//! ```no_run
//! use caracal_agent::Agent;
//! use opentelemetry::trace::{Tracer, TracerProvider};
//! use opentelemetry_sdk::trace::SdkTracerProvider;
//!
//! let agent = Agent::builder().service_name("orders").start();
//! let provider = SdkTracerProvider::builder()
//!     .with_sampler(agent.sampler())
//!     .with_span_processor(agent.span_processor())
//!     .build();
//! let tracer = provider.tracer("orders");
//! tracer.in_span("GET /orders/{id}", |_context| { /* ... */ });
//! let _ = provider.shutdown(); // shuts the agent down too, flushing its report
//! ```

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use caracal_model::ids::TraceId;
use caracal_model::span::{SpanKind, StatusCode};
use opentelemetry::trace::{self as otel_trace, TraceContextExt as _};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    SamplingDecision, SamplingResult, ShouldSample, SpanData, SpanProcessor,
};

use crate::context::{ratio_threshold, trace_id_rank};
use crate::error::Error;
use crate::mapping::PeerType;
use crate::registry::{lock, OperationKey};
use crate::Agent;

/// Shards of the pending-trace table (fewer collisions between threads).
const NUM_SHARDS: usize = 16;
/// A trace whose local root has not ended after this long is decided anyway.
const PENDING_TRACE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a shard looks for timed-out traces.
const SWEEP_PERIOD: Duration = Duration::from_secs(10);
/// Traces buffered per shard; beyond, spans of new traces are aggregated only.
const MAX_TRACES_PER_SHARD: usize = 4_096;

impl Agent {
    /// A span processor feeding this agent (see [`crate::otel`]).
    pub fn span_processor(&self) -> CaracalSpanProcessor {
        CaracalSpanProcessor {
            agent: self.clone(),
            shards: (0..NUM_SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
        }
    }

    /// A sampler applying this agent's sampled share (see [`crate::otel`]).
    pub fn sampler(&self) -> CaracalSampler {
        CaracalSampler {
            threshold: ratio_threshold(self.config().sample_ratio),
        }
    }
}

/// Records every span and samples the agent's share, honouring a sampled parent.
#[derive(Debug, Clone)]
pub struct CaracalSampler {
    threshold: u64,
}

impl ShouldSample for CaracalSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: otel_trace::TraceId,
        _name: &str,
        _span_kind: &otel_trace::SpanKind,
        _attributes: &[KeyValue],
        _links: &[otel_trace::Link],
    ) -> SamplingResult {
        let parent = parent_context
            .map(|context| context.span().span_context().clone())
            .filter(otel_trace::SpanContext::is_valid);
        let sampled = parent
            .as_ref()
            .is_some_and(otel_trace::SpanContext::is_sampled)
            || trace_id_rank(&TraceId(trace_id.to_bytes())) < self.threshold;
        SamplingResult {
            decision: if sampled {
                SamplingDecision::RecordAndSample
            } else {
                SamplingDecision::RecordOnly
            },
            attributes: Vec::new(),
            trace_state: parent
                .map(|parent| parent.trace_state().clone())
                .unwrap_or_default(),
        }
    }
}

/// Spans of traces whose local root has not ended yet.
#[derive(Debug)]
struct Shard {
    traces: HashMap<[u8; 16], PendingTrace>,
    last_sweep: Instant,
}

impl Shard {
    fn new() -> Self {
        Self {
            traces: HashMap::new(),
            last_sweep: Instant::now(),
        }
    }
}

#[derive(Debug)]
struct PendingTrace {
    spans: Vec<SpanData>,
    keep: bool,
    num_unbuffered: u64,
    first_seen: Instant,
}

/// An `opentelemetry_sdk` span processor that aggregates spans and keeps the traces
/// worth keeping, through an [`Agent`] (see [`crate::otel`]).
///
/// `on_end` takes one short lock of a shard of pending traces (not a global one) and
/// the aggregation hot path of the agent; it never blocks on I/O.
#[derive(Debug)]
pub struct CaracalSpanProcessor {
    agent: Agent,
    shards: Box<[Mutex<Shard>]>,
}

/// The peer a client or producer span names, from its attributes.
fn peer_of(span: &SpanData) -> (&str, PeerType) {
    for attribute in &span.attributes {
        let peer_type = match attribute.key.as_str() {
            "peer.service" => PeerType::Service,
            "db.system" | "db.system.name" => PeerType::Database,
            "messaging.system" => PeerType::Messaging,
            _ => continue,
        };
        if let Value::String(value) = &attribute.value {
            return (value.as_str(), peer_type);
        }
    }
    ("", PeerType::None)
}

fn kind_of(kind: &otel_trace::SpanKind) -> SpanKind {
    match kind {
        otel_trace::SpanKind::Client => SpanKind::Client,
        otel_trace::SpanKind::Server => SpanKind::Server,
        otel_trace::SpanKind::Producer => SpanKind::Producer,
        otel_trace::SpanKind::Consumer => SpanKind::Consumer,
        otel_trace::SpanKind::Internal => SpanKind::Internal,
    }
}

impl CaracalSpanProcessor {
    /// Queues a decided trace's spans for the next report.
    fn keep(&self, spans: Vec<SpanData>, num_unbuffered: u64) {
        let shared = self.agent.shared();
        let num_spans = spans.len();
        let mut kept = lock(&shared.kept);
        if kept.len() + num_spans > shared.config.max_kept_spans {
            drop(kept);
            shared
                .counters
                .dropped_spans
                .fetch_add(num_spans as u64 + num_unbuffered, Ordering::Relaxed);
            return;
        }
        kept.extend(
            spans
                .into_iter()
                .map(opentelemetry_proto::tonic::trace::v1::Span::from),
        );
        drop(kept);
        shared
            .counters
            .record_kept(num_spans as u64, num_unbuffered);
    }

    /// Decides traces pending for longer than `older_than`, keeping those to keep.
    fn sweep(&self, shard: &mut Shard, older_than: Duration) {
        shard.last_sweep = Instant::now();
        let expired: Vec<_> = shard
            .traces
            .iter()
            .filter(|(_, trace)| trace.first_seen.elapsed() >= older_than)
            .map(|(trace_id, _)| *trace_id)
            .collect();
        for trace_id in expired {
            if let Some(trace) = shard.traces.remove(&trace_id) {
                if trace.keep {
                    self.keep(trace.spans, trace.num_unbuffered);
                }
            }
        }
    }
}

impl SpanProcessor for CaracalSpanProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _context: &Context) {}

    fn on_end(&self, span: SpanData) {
        let shared = self.agent.shared();
        let kind = kind_of(&span.span_kind);
        let (peer, peer_type) = match kind {
            SpanKind::Client | SpanKind::Producer => peer_of(&span),
            _ => ("", PeerType::None),
        };
        let operation = shared.registry.operation(OperationKey {
            kind,
            span_type: "",
            name: &span.name,
            peer,
            peer_type,
        });
        let duration_ns = span
            .end_time
            .duration_since(span.start_time)
            .map_or(0, |duration| {
                u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
            });
        let status = match span.status {
            otel_trace::Status::Unset => StatusCode::Unset,
            otel_trace::Status::Ok => StatusCode::Ok,
            otel_trace::Status::Error { .. } => StatusCode::Error,
        };
        crate::trace::record_ended(shared, &operation, status, duration_ns);
        let keep = status == StatusCode::Error
            || operation.is_slow(duration_ns)
            || span.span_context.is_sampled();
        let trace_id = span.span_context.trace_id().to_bytes();
        let is_local_root =
            span.parent_span_id == otel_trace::SpanId::INVALID || span.parent_span_is_remote;
        let mut shard = lock(&self.shards[usize::from(trace_id[15]) % NUM_SHARDS]);
        if is_local_root {
            let pending = shard.traces.remove(&trace_id);
            drop(shard);
            let (mut spans, keep, num_unbuffered) = match pending {
                Some(pending) => (pending.spans, keep || pending.keep, pending.num_unbuffered),
                None => (Vec::new(), keep, 0),
            };
            if keep {
                spans.push(span);
                self.keep(spans, num_unbuffered);
            }
            return;
        }
        if shard.last_sweep.elapsed() >= SWEEP_PERIOD {
            self.sweep(&mut shard, PENDING_TRACE_TIMEOUT);
        }
        if !shard.traces.contains_key(&trace_id) && shard.traces.len() >= MAX_TRACES_PER_SHARD {
            return;
        }
        let max_spans = shared.config.max_spans_per_trace;
        let pending = shard
            .traces
            .entry(trace_id)
            .or_insert_with(|| PendingTrace {
                spans: Vec::new(),
                keep: false,
                num_unbuffered: 0,
                first_seen: Instant::now(),
            });
        pending.keep |= keep;
        if pending.spans.len() < max_spans {
            pending.spans.push(span);
        } else {
            pending.num_unbuffered += 1;
        }
    }

    /// Reports go out every interval; there is nothing to flush sooner.
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// Decides every pending trace, then shuts the agent down (flushing its report).
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            self.sweep(&mut shard, Duration::ZERO);
        }
        match self.agent.shutdown(timeout) {
            Ok(()) => Ok(()),
            Err(Error::AlreadyShutDown) => Err(OTelSdkError::AlreadyShutdown),
            Err(Error::ShutdownTimeout { .. }) => Err(OTelSdkError::Timeout(timeout)),
            Err(error) => Err(OTelSdkError::InternalFailure(error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{
        Span as _, SpanKind as OtelKind, Status, Tracer as _, TracerProvider as _,
    };
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;
    use crate::agent::testing::{self, builder, drain};

    fn provider_of(agent: &Agent) -> SdkTracerProvider {
        SdkTracerProvider::builder()
            .with_sampler(agent.sampler())
            .with_span_processor(agent.span_processor())
            .build()
    }

    #[test]
    fn spans_are_aggregated_and_failed_traces_kept_whole() {
        let agent = testing::agent(builder().sample_ratio(0.0));
        let provider = provider_of(&agent);
        let tracer = provider.tracer("test");
        for fail in [false, true, false] {
            tracer.in_span("GET /orders", |context| {
                let mut query = tracer
                    .span_builder("SELECT orders")
                    .with_kind(OtelKind::Client)
                    .with_attributes([KeyValue::new("db.system", "postgresql")])
                    .start_with_context(&tracer, &context);
                if fail {
                    query.set_status(Status::error("deadlock"));
                }
                query.end();
                assert!(
                    !context.span().span_context().is_sampled(),
                    "not sampled: downstream is told"
                );
            });
        }
        let (report, kept) = drain(&agent);
        let counts: Vec<_> = report
            .aggregates
            .iter()
            .map(|aggregate| {
                (
                    aggregate.name.as_str(),
                    aggregate.status,
                    aggregate.count,
                    aggregate.peer.as_str(),
                )
            })
            .collect();
        assert_eq!(
            counts,
            [
                ("GET /orders", 0, 3, ""),
                ("SELECT orders", 0, 2, "postgresql"),
                ("SELECT orders", 2, 1, "postgresql")
            ]
        );
        let names: Vec<_> = kept.iter().map(|span| span.name.as_str()).collect();
        assert_eq!(names, ["SELECT orders", "GET /orders"]);
        assert_eq!(kept[0].trace_id, kept[1].trace_id);
        assert_eq!(kept[0].parent_span_id, kept[1].span_id);
    }

    #[test]
    fn sampler_honours_the_ratio_and_a_sampled_parent() {
        let agent = testing::agent(builder().sample_ratio(1.0));
        let provider = provider_of(&agent);
        let tracer = provider.tracer("test");
        tracer.in_span("sampled", |context| {
            assert!(context.span().span_context().is_sampled())
        });
        let (_, kept) = drain(&agent);
        assert_eq!(kept.len(), 1);

        let agent = testing::agent(builder().sample_ratio(0.0));
        let provider = provider_of(&agent);
        let tracer = provider.tracer("test");
        let remote = otel_trace::SpanContext::new(
            otel_trace::TraceId::from_bytes([7; 16]),
            otel_trace::SpanId::from_bytes([3; 8]),
            otel_trace::TraceFlags::SAMPLED,
            true,
            Default::default(),
        );
        let parent = Context::new().with_remote_span_context(remote);
        let mut span = tracer.start_with_context("from upstream", &parent);
        assert!(span.span_context().is_sampled());
        span.end();
        tracer.in_span("alone", |_| {});
        let (report, kept) = drain(&agent);
        assert_eq!(report.aggregates.len(), 2);
        let names: Vec<_> = kept.iter().map(|span| span.name.as_str()).collect();
        assert_eq!(names, ["from upstream"]);
        assert_eq!(kept[0].parent_span_id, [3; 8]);
    }

    #[test]
    fn orphans_are_decided_at_shutdown() {
        let agent = testing::agent(builder().sample_ratio(0.0));
        let processor = agent.span_processor();
        let root = otel_trace::SpanContext::new(
            otel_trace::TraceId::from_bytes([5; 16]),
            otel_trace::SpanId::from_bytes([6; 8]),
            otel_trace::TraceFlags::default(),
            false,
            Default::default(),
        );
        // A failed child whose (local) root never ends.
        processor.on_end(span_data("child", root));
        assert!(drain(&agent).1.is_empty(), "waiting for the root");
        let _ = processor.shutdown_with_timeout(Duration::from_millis(10));
        assert_eq!(drain(&agent).1.len(), 1);
    }

    fn span_data(name: &'static str, parent: otel_trace::SpanContext) -> SpanData {
        let now = std::time::SystemTime::now();
        SpanData {
            span_context: otel_trace::SpanContext::new(
                parent.trace_id(),
                otel_trace::SpanId::from_bytes([9; 8]),
                otel_trace::TraceFlags::default(),
                false,
                Default::default(),
            ),
            parent_span_id: parent.span_id(),
            parent_span_is_remote: false,
            span_kind: OtelKind::Internal,
            name: name.into(),
            start_time: now,
            end_time: now,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::error("lost"),
            instrumentation_scope: Default::default(),
        }
    }
}

//! Caracal's instrumentation SDK: CAT-style transactions, events and metrics,
//! aggregated in the process and reported every 10 seconds to a Caracal collector.
//!
//! Like Ctrip's and Dianping's CAT clients, the agent does the counting where the work
//! happens: every transaction ends up in a per-operation aggregate (count, errors, sum,
//! min, max and a latency histogram with the same 2-significant-digit scheme the
//! collector stores, so percentiles stay exact whatever is sampled), and only traces
//! worth reading are sent whole: those with an error, those slower than their
//! operation's threshold, and a small share of the rest.
//!
//! Layout:
//! - [`agent`]: the [`Agent`] facade the application calls.
//! - [`config`]: [`AgentBuilder`] and [`AgentConfig`]: defaults, then `CARACAL_*`
//!   environment variables, then code.
//! - [`mapping`]: how CAT types map to span kinds and dependency peers.
//! - [`context`]: W3C `traceparent` propagation ([`TraceContext`]).
//! - `trace`: [`Transaction`] guards, the per-thread span buffers and the keep decision.
//! - `registry`: the double-buffered aggregation tables (interned keys, cardinality cap).
//! - `histogram`: the latency histogram the hot path records into (the model's buckets,
//!   counted in a small hash table).
//! - `reporter`: the background thread that swaps buffers, builds reports and delivers
//!   them with retries, failover and a memory bound.
//! - [`exporter`]: [`ReportExporter`](exporter::ReportExporter), the gRPC exporter and
//!   an in-memory one for tests.
//! - [`detached`]: [`DetachedTransaction`], a transaction that may cross threads (async
//!   code), and [`Agent::record_completed`].
//! - `http` (feature `http`, default): [`http::AgentLayer`], a tower layer recording
//!   SERVER transactions, and (feature `reqwest`, default) a `reqwest` helper recording
//!   CLIENT ones, with `traceparent` propagation.
//! - `otel` (feature `opentelemetry`, default): a span processor and sampler that plug
//!   the agent into the OpenTelemetry SDK.
//! - [`demo`]: a simulated multi-service system for `caracal demo`.
//! - [`error`]: the one error type, returned only by shutdown and exporters.
//!
//! **Architecture invariant:** the agent never blocks the caller on I/O. Recording takes
//! no lock for a known operation once the thread has its span ring (locks are taken
//! when interning a new key, when a thread registers its ring, and when a ring is full:
//! the thread then drains the rings, bounded work), allocates nothing for a known key
//! once warm, never returns an error and never panics; all I/O happens on the
//! reporter's own thread.
//!
//! The hot path of a transaction, for a known name: one thread-local access at each
//! end, the operation from the call site ([`transaction!`]) or handle
//! ([`OperationHandle`]), or by name from a per-thread cache of recently used
//! operations (else a hash lookup by borrowed `&str` under a shared read lock), two TSC
//! clock reads (`quanta`, under half the cost of `Instant::now()`), a push and pop on
//! the thread's span buffer, and at the end a push of `(operation slot, status,
//! duration)`, packed in one word, into the thread's span ring (`rtrb`, a wait-free
//! single-producer ring: plain stores, no read-modify-write). The agent's drainer
//! thread drains every ring every 10 ms, or every 100 µs while a thread fills its ring
//! fast, and the reporter before each swap, adding the spans to the active buffer under
//! each operation's mutex, a run of spans at a time; a thread whose ring is still full
//! drains the rings itself. So threads recording one hot operation never contend for
//! its lock, and no reference count is touched unless the span's record must outlive it
//! (nested or kept).
//!
//! # Getting started
//!
//! ```
//! use std::time::Duration;
//! use caracal_agent::Agent;
//!
//! // Defaults, then CARACAL_SERVICE_NAME, CARACAL_OTLP_GRPC_ADDR, ..., then code.
//! let agent = Agent::builder().service_name("checkout").start();
//!
//! {
//!     let request = agent.transaction("URL", "POST /checkout");
//!     {
//!         // Nested on the same thread: a child of `request`.
//!         let query = agent.transaction("SQL", "postgresql:SELECT cart");
//!         query.add_data("db.statement", "SELECT * FROM cart WHERE id = $1");
//!     }
//!     {
//!         let call = agent.transaction("Call", "payments:POST /charge");
//!         let mut headers: Vec<(String, String)> = Vec::new();
//!         call.inject(&mut headers); // traceparent for the payments service
//!         # let failed = true;
//!         if failed {
//!             call.set_status_error("card declined"); // this trace will be kept whole
//!         }
//!     }
//!     agent.event("Checkout", "placed");
//!     agent.counter("checkout.items", 3);
//! } // `request` ends here and the trace is decided.
//!
//! // Names known at compile time: `transaction!` resolves them once per call site, so
//! // later transactions there skip the name lookup.
//! for _ in 0..3 {
//!     let _read = caracal_agent::transaction!(agent, "Cache", "redis:GET cart");
//! }
//!
//! // Names made at run time but reused in a hot loop: resolve them once by hand.
//! let query = agent.operation("SQL", "postgresql:SELECT stock");
//! for _ in 0..3 {
//!     let _query = query.transaction();
//! }
//!
//! // Flush what was recorded (without a collector this reports the delivery failure).
//! let _ = agent.shutdown(Duration::from_millis(100));
//! ```

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod agent;
pub mod config;
pub mod context;
pub mod demo;
pub mod detached;
mod drainer;
pub mod error;
pub mod exporter;
mod histogram;
#[cfg(feature = "http")]
pub mod http;
pub mod mapping;
#[cfg(feature = "opentelemetry")]
pub mod otel;
mod process;
mod registry;
mod reporter;
mod trace;

pub use agent::{Agent, AgentStats, Callsite, OperationHandle};
pub use caracal_model::span::{SpanKind, StatusCode};
pub use config::{AgentBuilder, AgentConfig};
pub use context::TraceContext;
pub use detached::DetachedTransaction;
pub use error::{Error, Result};
#[cfg(feature = "opentelemetry")]
pub use otel::{CaracalSampler, CaracalSpanProcessor};
pub use trace::Transaction;

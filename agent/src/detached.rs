//! Transactions not bound to a thread, for async code: a request handled by a
//! multi-threaded runtime moves between threads, so it cannot hold a [`Transaction`]
//! guard across an `.await`.
//!
//! A [`DetachedTransaction`] carries its own trace and span ids, start time and status,
//! and is aggregated and (if worth keeping) queued whole when it ends, like a
//! [`Transaction`] that is the only span of its local trace. It decides alone: it is
//! kept when it failed, was slow, its parent was sampled, or its trace id falls in the
//! sampled share. Spans started from its [`context`](DetachedTransaction::context) get
//! the sampled flag, so a kept request keeps its downstream calls; a request that fails
//! after a call ended does not keep that call (an unsampled trace may be partial).
//!
//! [`Transaction`]: crate::Transaction

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caracal_model::ids::{SpanId, TraceId};
use caracal_model::span::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};

use crate::agent::{operation_key, Agent};
use crate::context::{self, TraceContext};
use crate::mapping::PeerType;
use crate::registry::{lock, Operation};
use crate::trace::string_attribute;

/// OTLP span flags: the W3C sampled bit.
const FLAG_SAMPLED: u32 = 0x01;

/// A transaction that may move between threads and ends when
/// [`finish`](Self::finish)ed or dropped (see [`crate::detached`]).
#[derive(Debug)]
#[must_use = "a transaction ends when dropped; bind it to a variable"]
pub struct DetachedTransaction {
    agent: Agent,
    operation: Arc<Operation>,
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: Option<SpanId>,
    /// Kept so far: a sampled parent or the sampled share.
    keep: bool,
    start: Instant,
    /// Set once the transaction is recorded.
    ended: bool,
    failed: bool,
    status_message: Option<String>,
}

impl Agent {
    /// Starts a transaction that is not bound to this thread, as a child of `parent`
    /// (an incoming `traceparent`, or the context of another transaction), or as the
    /// root of a new trace. It ignores the thread's open [`crate::Transaction`]s.
    pub fn detached_transaction(
        &self,
        span_type: &str,
        name: &str,
        parent: Option<&TraceContext>,
    ) -> DetachedTransaction {
        let shared = self.shared();
        let operation = shared.registry.operation(operation_key(span_type, name));
        let trace_id = parent.map_or_else(context::new_trace_id, |parent| parent.trace_id);
        let keep = parent.is_some_and(|parent| parent.sampled)
            || context::trace_id_rank(&trace_id) < shared.sample_threshold;
        DetachedTransaction {
            agent: self.clone(),
            operation,
            trace_id,
            span_id: context::new_span_id(),
            parent_span_id: parent.map(|parent| parent.span_id),
            keep,
            start: Instant::now(),
            ended: false,
            failed: false,
            status_message: None,
        }
    }

    /// Records a transaction that already happened: started at `start`, lasting
    /// `duration`, with `status` (an [`StatusCode::Error`] keeps it whole). Returns its
    /// context. For work timed elsewhere, such as a request future that completed on
    /// another thread.
    pub fn record_completed(
        &self,
        span_type: &str,
        name: &str,
        parent: Option<&TraceContext>,
        start: Instant,
        duration: Duration,
        status: StatusCode,
    ) -> TraceContext {
        let mut transaction = self.detached_transaction(span_type, name, parent);
        transaction.start = start;
        if status == StatusCode::Error {
            transaction.failed = true;
        }
        let context = transaction.context();
        transaction.end(start.checked_add(duration).unwrap_or(start));
        context
    }
}

impl DetachedTransaction {
    /// This transaction's place in the trace, to pass to a callee.
    pub fn context(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: self.span_id,
            sampled: self.keep,
        }
    }

    /// Marks the transaction failed (status ERROR); it will be kept.
    pub fn set_status_error(&mut self, message: impl Into<String>) {
        self.failed = true;
        self.status_message = Some(message.into());
    }

    /// Restarts the clock (for work prepared before it actually began).
    #[cfg(feature = "reqwest")]
    pub(crate) fn restart(&mut self) {
        self.start = Instant::now();
    }

    /// Ends the transaction now (the same as dropping it).
    pub fn finish(mut self) {
        self.end(Instant::now());
    }

    /// Aggregates the transaction as ended at `end` and keeps it if worth keeping.
    fn end(&mut self, end: Instant) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let shared = self.agent.shared();
        let duration_ns =
            u64::try_from(end.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        let status = if self.failed {
            StatusCode::Error
        } else {
            StatusCode::Unset
        };
        crate::trace::record_ended(shared, &self.operation, status, duration_ns);
        if !(self.keep || self.failed || self.operation.is_slow(duration_ns)) {
            return;
        }
        let span = self.take_otlp(duration_ns);
        let shared = self.agent.shared();
        let mut kept = lock(&shared.kept);
        if kept.len() >= shared.config.max_kept_spans {
            drop(kept);
            shared
                .counters
                .dropped_spans
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        kept.push(span);
        drop(kept);
        shared.counters.kept_spans.fetch_add(1, Ordering::Relaxed);
    }

    fn take_otlp(&mut self, duration_ns: u64) -> Span {
        let operation = &self.operation;
        let start_unix_ns = self.agent.shared().clock.unix_nanos(self.start);
        let mut attributes = Vec::with_capacity(2);
        if !operation.span_type.is_empty() {
            attributes.push(string_attribute("cat.type", &operation.span_type));
        }
        let peer_key = match operation.peer_type {
            PeerType::Service => Some("peer.service"),
            PeerType::Database => Some("db.system"),
            PeerType::Messaging => Some("messaging.system"),
            PeerType::None => None,
        };
        if let Some(peer_key) = peer_key.filter(|_| !operation.peer.is_empty()) {
            attributes.push(string_attribute(peer_key, &operation.peer));
        }
        Span {
            trace_id: self.trace_id.0.to_vec(),
            span_id: self.span_id.0.to_vec(),
            parent_span_id: self
                .parent_span_id
                .map(|id| id.0.to_vec())
                .unwrap_or_default(),
            flags: FLAG_SAMPLED,
            name: operation.name.to_string(),
            kind: operation.kind as i32,
            start_time_unix_nano: start_unix_ns,
            end_time_unix_nano: start_unix_ns.saturating_add(duration_ns),
            attributes,
            status: Some(Status {
                code: if self.failed {
                    StatusCode::Error as i32
                } else {
                    StatusCode::Unset as i32
                },
                message: self.status_message.take().unwrap_or_default(),
            }),
            ..Default::default()
        }
    }
}

impl Drop for DetachedTransaction {
    fn drop(&mut self) {
        self.end(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::testing::{agent, builder, drain};

    #[test]
    fn detached_transactions_join_the_parent_and_keep_when_sampled_or_failed() {
        let agent = agent(builder());
        let parent = TraceContext {
            trace_id: context::new_trace_id(),
            span_id: context::new_span_id(),
            sampled: true,
        };
        let server = agent.detached_transaction("URL", "GET /a", Some(&parent));
        let server_context = server.context();
        assert_eq!(
            (server_context.trace_id, server_context.sampled),
            (parent.trace_id, true)
        );
        // Moves to another thread and ends there.
        std::thread::spawn(move || server.finish()).join().unwrap();
        // Unsampled and fine: only counted.
        agent.detached_transaction("URL", "GET /a", None).finish();
        let start = Instant::now();
        let failed = agent.record_completed(
            "Call",
            "payments:POST /charge",
            None,
            start,
            Duration::from_millis(3),
            StatusCode::Error,
        );
        let (report, kept) = drain(&agent);
        let counts: Vec<_> = report
            .aggregates
            .iter()
            .map(|aggregate| (aggregate.name.as_str(), aggregate.status, aggregate.count))
            .collect();
        assert_eq!(
            counts,
            [("GET /a", 0, 2), ("payments:POST /charge", 2, 1)],
            "{report:?}"
        );
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept[0].trace_id, parent.trace_id.0);
        assert_eq!(kept[0].parent_span_id, parent.span_id.0);
        assert_eq!(kept[1].trace_id, failed.trace_id.0);
        assert_eq!(
            kept[1].end_time_unix_nano - kept[1].start_time_unix_nano,
            3_000_000
        );
        assert_eq!(kept[1].status.as_ref().unwrap().code, 2);
    }
}

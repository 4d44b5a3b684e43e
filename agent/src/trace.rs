//! Transactions, the per-thread span buffers, and the keep decision.
//!
//! Each thread holds, per agent, one *local trace*: the stack of open transactions and
//! a buffer of fixed-size records of the spans that ended while the trace could still
//! be kept (ids, timing, status; their operations, attached data and exceptions live in
//! side vectors, so clearing the buffer costs nothing). Open spans are known by their
//! sequence number in the local trace; trace and span ids are made only when something
//! needs them (a child span, a propagated context, a record, ratio sampling), so a
//! transaction that ends alone and unkept costs no id and no record. When the last open
//! transaction of the local trace ends, the trace is decided:
//! - kept whole if any span failed, any span was slower than its operation's threshold,
//!   the remote parent was sampled, or the trace id falls in the sampled share;
//! - otherwise forgotten (every span was already aggregated when it ended).
//!
//! Kept traces become OTLP spans queued for the next report. The record buffer is
//! cleared, not freed, so a thread that keeps nothing and attaches no data allocates
//! nothing once its buffer has grown to its deepest trace.
//!
//! Each thread also remembers the last few operations it started, so that
//! [`Agent::transaction`](crate::Agent::transaction) usually finds its operation without
//! touching the shared tables, and borrows it from there until the transaction ends.
//!
//! Transactions are timed in clock ticks (see [`WallClock`](crate::agent::WallClock)):
//! one read when the transaction starts, one when it ends, and ticks are mapped to Unix
//! time only for kept spans.

use std::backtrace::Backtrace;
use std::cell::RefCell;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use caracal_model::ids::{SpanId, TraceId};
use caracal_model::span::{SpanKind, StatusCode};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, Span, Status};

use crate::agent::{operation_key, ClockReading, Shared};
use crate::context::{self, TraceContext};
use crate::mapping::PeerType;
use crate::registry::{lock, same_text, Operation, OperationKey, SpanRing};

/// OTLP span flags: the W3C sampled bit.
const FLAG_SAMPLED: u32 = 0x01;
/// OTLP span flags: whether the parent is remote is known.
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
/// OTLP span flags: the parent is remote.
const FLAG_IS_REMOTE: u32 = 0x200;

/// Operations remembered per thread by [`OperationCache`].
const NUM_CACHED_OPERATIONS: usize = 8;

thread_local! {
    static LOCAL: RefCell<ThreadState> = const { RefCell::new(ThreadState::new()) };
}

/// What a thread keeps: its local trace per agent and its recently used operations,
/// behind one thread-local so that starting or ending a transaction touches it once.
#[derive(Debug)]
struct ThreadState {
    traces: Vec<LocalTrace>,
    operations: OperationCache,
}

impl ThreadState {
    const fn new() -> Self {
        Self {
            traces: Vec::new(),
            operations: OperationCache::new(),
        }
    }
}

/// Runs `apply` on this thread's state, if the thread-local is usable (not during
/// thread teardown, not re-entered).
fn with_state<R>(apply: impl FnOnce(&mut ThreadState) -> R) -> Option<R> {
    LOCAL
        .try_with(|state| {
            let mut state = state.try_borrow_mut().ok()?;
            Some(apply(&mut state))
        })
        .ok()
        .flatten()
}

/// The operations this thread used last, per agent: a hit skips the tables' lock and
/// the hash, and a transaction started by name borrows the entry instead of cloning
/// its `Arc` (two atomic read-modify-writes saved). Holding an operation here also
/// keeps it from being evicted as idle.
#[derive(Debug)]
struct OperationCache {
    entries: [Option<CachedOperation>; NUM_CACHED_OPERATIONS],
    /// Where the next miss goes (round robin, skipping pinned entries).
    next: usize,
}

#[derive(Debug)]
struct CachedOperation {
    agent_id: u64,
    operation: Arc<Operation>,
    /// Open transactions of this thread started from this entry; a pinned entry is
    /// never replaced.
    num_pins: u32,
}

impl OperationCache {
    const fn new() -> Self {
        Self {
            entries: [const { None }; NUM_CACHED_OPERATIONS],
            next: 0,
        }
    }

    /// The operation of CAT type `span_type` named `name`, pinned in the cache (found,
    /// or looked up and cached), or owned when every entry is pinned or the name was
    /// folded into an overflow entry.
    ///
    /// Entries are matched by type and name alone: kind and peer follow from them (see
    /// [`operation_key`]), and only operations of exactly that key are cached.
    fn pin(&mut self, shared: &Shared, span_type: &str, name: &str) -> OperationRef<'static> {
        let hit = self
            .entries
            .iter_mut()
            .enumerate()
            .find_map(|(slot, entry)| {
                let entry = entry.as_mut()?;
                let found = entry.agent_id == shared.id
                    && same_text(&entry.operation.name, name)
                    && same_text(&entry.operation.span_type, span_type);
                found.then(|| {
                    entry.num_pins += 1;
                    slot
                })
            });
        if let Some(slot) = hit {
            return OperationRef::Cached(slot);
        }
        let key = operation_key(span_type, name);
        let operation = shared.registry.operation(key);
        if !operation.matches_key(key) {
            // An overflow entry: looking the name up again counts it again.
            return OperationRef::Owned(operation);
        }
        let free = (0..NUM_CACHED_OPERATIONS)
            .map(|offset| (self.next + offset) % NUM_CACHED_OPERATIONS)
            .find(|&slot| {
                self.entries[slot]
                    .as_ref()
                    .is_none_or(|entry| entry.num_pins == 0)
            });
        let Some(slot) = free else {
            return OperationRef::Owned(operation);
        };
        self.next = (slot + 1) % NUM_CACHED_OPERATIONS;
        self.entries[slot] = Some(CachedOperation {
            agent_id: shared.id,
            operation,
            num_pins: 1,
        });
        OperationRef::Cached(slot)
    }

    /// The operation pinned at `slot`.
    fn get(&self, slot: usize) -> Option<&Arc<Operation>> {
        self.entries
            .get(slot)?
            .as_ref()
            .map(|entry| &entry.operation)
    }

    fn unpin(&mut self, slot: usize) {
        if let Some(Some(entry)) = self.entries.get_mut(slot) {
            entry.num_pins = entry.num_pins.saturating_sub(1);
        }
    }
}

/// The open part of one trace, for one agent, on one thread.
///
/// Ids and span records are made only when needed: a span that ends while its trace
/// can no longer be kept (the last open span of an unkept trace) never gets a span id
/// nor a record, and a trace that is not ratio-sampled gets its trace id only when
/// something asks for it (a child, a propagated context, keeping).
#[derive(Debug)]
struct LocalTrace {
    agent_id: u64,
    /// Made on first need (see [`LocalTrace::trace_id`]).
    trace_id: Option<TraceId>,
    /// Span of another process this trace continues, if any.
    remote_parent: Option<SpanId>,
    /// Whether the trace is kept so far; also the sampled flag sent downstream.
    keep: bool,
    /// Spans opened in this local trace so far; the next one's sequence number.
    num_opened: u64,
    /// Spans not buffered because the trace outgrew its buffer.
    num_unbuffered: u64,
    open: Vec<OpenSpan>,
    /// Ended spans of a trace that may still be kept. Plain data, so that clearing it
    /// is free: what owns memory lives in `operations` and `extras`.
    spans: Vec<SpanRecord>,
    /// Operations of the ended spans in `spans`.
    operations: Vec<Arc<Operation>>,
    /// Attached data, status messages and exceptions of open or buffered spans.
    extras: Vec<SpanExtra>,
    /// Where this thread's ended spans go to be aggregated.
    ring: SpanRing,
}

impl LocalTrace {
    /// Forgets the buffered spans, keeping the allocations.
    #[inline]
    fn clear_spans(&mut self) {
        self.spans.clear();
        if !(self.operations.is_empty() && self.extras.is_empty()) {
            self.clear_owned();
        }
    }

    /// Drops the operations and extras of the buffered spans (only kept, nested or
    /// annotated spans have any).
    #[cold]
    #[inline(never)]
    fn clear_owned(&mut self) {
        self.operations.clear();
        self.extras.clear();
    }

    /// The trace id, made now if nothing needed it before.
    fn trace_id(&mut self) -> TraceId {
        *self.trace_id.get_or_insert_with(context::new_trace_id)
    }

    /// The context a child of open span `seq` (the innermost when `None`) would have.
    fn context_of(&mut self, seq: Option<u64>) -> Option<TraceContext> {
        let span_id = find_open(&mut self.open, seq)?.span_id();
        Some(TraceContext {
            trace_id: self.trace_id(),
            span_id,
            sampled: self.keep,
        })
    }

    /// The extra part of open span `seq` (the innermost when `None`), created on first
    /// use; `None` for a span that will not be buffered.
    fn extra_mut(&mut self, seq: Option<u64>) -> Option<&mut SpanExtra> {
        let open = find_open(&mut self.open, seq)?;
        if !open.buffered {
            return None;
        }
        let extra = *open.extra.get_or_insert(self.extras.len());
        if extra == self.extras.len() {
            self.extras.push(SpanExtra::default());
        }
        self.extras.get_mut(extra)
    }
}

/// Open span `seq` of `open`, or the innermost when `None`.
fn find_open(open: &mut [OpenSpan], seq: Option<u64>) -> Option<&mut OpenSpan> {
    match seq {
        Some(seq) => open.iter_mut().rfind(|open| open.seq == seq),
        None => open.last_mut(),
    }
}

#[derive(Debug, Clone, Copy)]
struct OpenSpan {
    /// Which span of the local trace this is, in opening order.
    seq: u64,
    /// Made on first need (see [`OpenSpan::span_id`]).
    span_id: Option<SpanId>,
    parent_span_id: Option<SpanId>,
    /// Index in [`LocalTrace::extras`].
    extra: Option<usize>,
    /// Whether the span gets a record when it ends (false once the trace has opened
    /// `max_spans_per_trace` spans).
    buffered: bool,
    failed: bool,
}

impl OpenSpan {
    /// The span id, made now if nothing needed it before.
    fn span_id(&mut self) -> SpanId {
        *self.span_id.get_or_insert_with(context::new_span_id)
    }
}

/// An ended span of a trace that may still be kept: fixed size, the rare parts in the
/// trace's side vectors.
#[derive(Debug, Clone, Copy)]
struct SpanRecord {
    /// Opening order, the order spans are sent in.
    seq: u64,
    span_id: SpanId,
    parent_span_id: Option<SpanId>,
    /// Index in [`LocalTrace::operations`].
    operation: usize,
    /// Clock ticks (see [`WallClock::ticks`](crate::agent::WallClock::ticks)) at the end.
    end_ticks: u64,
    duration_ns: u64,
    /// Index in [`LocalTrace::extras`].
    extra: Option<usize>,
    failed: bool,
}

#[derive(Debug, Default)]
struct SpanExtra {
    data: Vec<(String, String)>,
    status_message: Option<String>,
    exceptions: Vec<ExceptionRecord>,
}

#[derive(Debug)]
struct ExceptionRecord {
    time: Instant,
    type_name: &'static str,
    message: String,
    stacktrace: Option<String>,
}

/// Runs `apply` on this thread's local trace of `agent_id`, if there is one and the
/// thread-local is usable.
fn with_trace<R>(agent_id: u64, apply: impl FnOnce(&mut LocalTrace) -> R) -> Option<R> {
    with_state(|state| {
        let trace = state
            .traces
            .iter_mut()
            .find(|trace| trace.agent_id == agent_id)?;
        Some(apply(trace))
    })
    .flatten()
}

/// This thread's local trace of the agent, created (with its span ring) at first use.
#[inline]
fn trace_of<'t>(traces: &'t mut Vec<LocalTrace>, shared: &Shared) -> &'t mut LocalTrace {
    let position = match traces.iter().position(|trace| trace.agent_id == shared.id) {
        Some(position) => position,
        None => add_trace(traces, shared),
    };
    &mut traces[position]
}

/// Adds the local trace of an agent this thread has not recorded for yet; returns its
/// position.
#[cold]
#[inline(never)]
fn add_trace(traces: &mut Vec<LocalTrace>, shared: &Shared) -> usize {
    // Forget the traces of agents that are gone (their rings' readers are).
    traces.retain(|trace| !(trace.open.is_empty() && trace.ring.is_abandoned()));
    traces.push(LocalTrace {
        agent_id: shared.id,
        trace_id: None,
        remote_parent: None,
        keep: false,
        num_opened: 0,
        num_unbuffered: 0,
        open: Vec::new(),
        spans: Vec::new(),
        operations: Vec::new(),
        extras: Vec::new(),
        ring: shared.registry.new_ring(),
    });
    traces.len() - 1
}

/// Aggregates a span that ended outside the thread's transaction stack (an
/// OpenTelemetry span, a detached transaction) through this thread's span ring.
pub(crate) fn record_ended(
    shared: &Shared,
    operation: &Operation,
    status: StatusCode,
    duration_ns: u64,
) {
    let recorded = with_state(|state| {
        let trace = trace_of(&mut state.traces, shared);
        shared
            .registry
            .record_via(&mut trace.ring, operation, status, duration_ns);
    });
    if recorded.is_none() {
        shared
            .registry
            .record_operation(operation, status, duration_ns);
    }
}

/// Opens a span in this thread's local trace of the agent, starting the local trace if
/// none is open. Returns the span's sequence number in the local trace.
#[inline]
fn open_span(
    traces: &mut Vec<LocalTrace>,
    shared: &Shared,
    remote_parent: Option<&TraceContext>,
) -> u64 {
    let trace = trace_of(traces, shared);
    if trace.open.is_empty() {
        trace.clear_spans();
        trace.num_opened = 0;
        trace.num_unbuffered = 0;
        match remote_parent {
            Some(parent) => {
                trace.trace_id = Some(parent.trace_id);
                trace.remote_parent = Some(parent.span_id);
                trace.keep = parent.sampled;
            }
            None => {
                trace.trace_id = None;
                trace.remote_parent = None;
                trace.keep = false;
            }
        }
        if shared.sample_threshold > 0 {
            let trace_id = trace.trace_id();
            trace.keep |= context::trace_id_rank(&trace_id) < shared.sample_threshold;
        }
    }
    let parent_span_id = match trace.open.last_mut() {
        Some(parent) => Some(parent.span_id()),
        None => trace.remote_parent,
    };
    let seq = trace.num_opened;
    trace.num_opened += 1;
    let buffered = seq < shared.config.max_spans_per_trace as u64;
    if !buffered {
        trace.num_unbuffered += 1;
    }
    trace.open.push(OpenSpan {
        seq,
        span_id: None,
        parent_span_id,
        extra: None,
        buffered,
        failed: false,
    });
    seq
}

/// Where an open transaction is.
#[derive(Debug, Clone, Copy)]
enum SpanPlace {
    /// Open span `seq` of this thread's local trace.
    Local(u64),
    /// Opened without a usable thread-local (thread teardown): aggregated only, in no
    /// trace.
    Standalone,
}

/// The operation of an open transaction: borrowed from an
/// [`OperationHandle`](crate::OperationHandle), pinned in the thread's
/// [`OperationCache`], or owned.
#[derive(Debug)]
pub(crate) enum OperationRef<'a> {
    Borrowed(&'a Arc<Operation>),
    /// A slot of this thread's operation cache, unpinned when the transaction ends.
    Cached(usize),
    Owned(Arc<Operation>),
}

impl OperationRef<'_> {
    /// The operation as an owned `Arc` (unpinning a cached one), or `None` if it was
    /// pinned in a thread-local that is no longer usable.
    fn into_arc(self) -> Option<Arc<Operation>> {
        match self {
            Self::Borrowed(operation) => Some(Arc::clone(operation)),
            Self::Cached(slot) => with_state(|state| {
                let operation = state.operations.get(slot).cloned();
                state.operations.unpin(slot);
                operation
            })
            .flatten(),
            Self::Owned(operation) => Some(operation),
        }
    }
}

/// Closes a span: aggregates it, and decides the trace if it was the last open span of
/// its local trace. `end_ticks` is the clock reading at the end, `duration_ns` the
/// span's duration.
fn close_span(
    shared: &Shared,
    place: SpanPlace,
    operation: OperationRef<'_>,
    end_ticks: u64,
    duration_ns: u64,
) {
    let mut operation = Some(operation);
    let SpanPlace::Local(seq) = place else {
        return record_unplaced(shared, operation, duration_ns);
    };
    with_state(|state| {
        let ThreadState {
            traces, operations, ..
        } = state;
        let resolved = match &operation {
            Some(OperationRef::Borrowed(borrowed)) => *borrowed,
            Some(OperationRef::Owned(owned)) => owned,
            Some(OperationRef::Cached(slot)) => operations.get(*slot)?,
            None => return None,
        };
        let mut trace = traces.iter_mut().find(|trace| trace.agent_id == shared.id);
        // The common case: the only open span of a trace that is not kept ends well and
        // in time. It is aggregated and forgotten: no record, no keep decision to make.
        if let Some(trace) = trace.as_deref_mut() {
            if let [only] = trace.open.as_slice() {
                if only.seq == seq && !only.failed && !trace.keep && !resolved.is_slow(duration_ns)
                {
                    shared.registry.record_via(
                        &mut trace.ring,
                        resolved,
                        StatusCode::Unset,
                        duration_ns,
                    );
                    trace.open.clear();
                    trace.clear_spans();
                    if let Some(OperationRef::Cached(slot)) = operation.take() {
                        operations.unpin(slot);
                    }
                    return Some(());
                }
            }
        }
        let open = trace.and_then(|trace| {
            let position = trace.open.iter().rposition(|open| open.seq == seq)?;
            let open = if position + 1 == trace.open.len() {
                trace.open.pop()?
            } else {
                trace.open.remove(position)
            };
            Some((trace, open))
        });
        let Some((trace, mut open)) = open else {
            // Defensive (a transaction stays in its local trace until it ends):
            // aggregate only.
            shared
                .registry
                .record_operation(resolved, StatusCode::Unset, duration_ns);
            if let Some(OperationRef::Cached(slot)) = operation.take() {
                operations.unpin(slot);
            }
            return Some(());
        };
        let status = if open.failed {
            StatusCode::Error
        } else {
            StatusCode::Unset
        };
        shared
            .registry
            .record_via(&mut trace.ring, resolved, status, duration_ns);
        if open.failed || resolved.is_slow(duration_ns) {
            trace.keep = true;
        }
        // The record is needed only if the trace may still be kept.
        let needed = trace.keep || !trace.open.is_empty();
        match operation.take() {
            Some(operation) if needed && open.buffered => {
                let operation = match operation {
                    OperationRef::Owned(owned) => owned,
                    OperationRef::Borrowed(borrowed) => Arc::clone(borrowed),
                    OperationRef::Cached(slot) => {
                        let cached = operations.get(slot).cloned()?;
                        operations.unpin(slot);
                        cached
                    }
                };
                trace.operations.push(operation);
                trace.spans.push(SpanRecord {
                    seq: open.seq,
                    span_id: open.span_id(),
                    parent_span_id: open.parent_span_id,
                    operation: trace.operations.len() - 1,
                    end_ticks,
                    duration_ns,
                    extra: open.extra,
                    failed: open.failed,
                });
            }
            Some(OperationRef::Cached(slot)) => operations.unpin(slot),
            _ => {}
        }
        if trace.open.is_empty() {
            if trace.keep {
                keep_trace(shared, trace);
            }
            trace.clear_spans();
        }
        Some(())
    });
    if operation.is_some() {
        record_unplaced(shared, operation, duration_ns);
    }
}

/// Aggregates a span that could not be closed in a local trace (no usable
/// thread-local): the operation, if not taken, is recorded directly (a cached one is
/// lost with the thread-local).
#[cold]
#[inline(never)]
fn record_unplaced(shared: &Shared, operation: Option<OperationRef<'_>>, duration_ns: u64) {
    match operation {
        Some(OperationRef::Borrowed(operation)) => {
            shared
                .registry
                .record_operation(operation, StatusCode::Unset, duration_ns);
        }
        Some(OperationRef::Owned(operation)) => {
            shared
                .registry
                .record_operation(&operation, StatusCode::Unset, duration_ns);
        }
        Some(OperationRef::Cached(_)) | None => {}
    }
}

/// Converts a decided local trace to OTLP (spans in opening order) and queues it for
/// the next report.
fn keep_trace(shared: &Shared, trace: &mut LocalTrace) {
    let num_spans = trace.spans.len();
    let mut kept = lock(&shared.kept);
    if kept.len() + num_spans > shared.config.max_kept_spans {
        drop(kept);
        let num_dropped = num_spans as u64 + trace.num_unbuffered;
        shared
            .counters
            .dropped_spans
            .fetch_add(num_dropped, Ordering::Relaxed);
        return;
    }
    let now = shared.clock.reading();
    let trace_id = trace.trace_id();
    trace.spans.sort_unstable_by_key(|record| record.seq);
    kept.extend(
        trace
            .spans
            .iter()
            .filter_map(|record| to_otlp(shared, trace, trace_id, record, &now)),
    );
    drop(kept);
    shared
        .counters
        .record_kept(num_spans as u64, trace.num_unbuffered);
}

pub(crate) fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn to_otlp(
    shared: &Shared,
    trace: &LocalTrace,
    trace_id: TraceId,
    record: &SpanRecord,
    now: &ClockReading,
) -> Option<Span> {
    let operation = trace.operations.get(record.operation)?;
    let end_unix_ns = shared.clock.unix_nanos_of_ticks(now, record.end_ticks);
    let start_unix_ns = end_unix_ns.saturating_sub(record.duration_ns);
    let extra = record.extra.and_then(|index| trace.extras.get(index));
    let data = extra.map_or(&[][..], |extra| &extra.data[..]);
    let mut attributes = Vec::with_capacity(data.len() + 2);
    if !operation.span_type.is_empty() {
        attributes.push(string_attribute("cat.type", &operation.span_type));
    }
    attributes.extend(data.iter().map(|(key, value)| string_attribute(key, value)));
    let peer_key = match operation.peer_type {
        PeerType::Service => Some("peer.service"),
        PeerType::Database => Some("db.system"),
        PeerType::Messaging => Some("messaging.system"),
        PeerType::None => None,
    };
    if let Some(peer_key) = peer_key {
        if !operation.peer.is_empty() && !data.iter().any(|(key, _)| key == peer_key) {
            attributes.push(string_attribute(peer_key, &operation.peer));
        }
    }
    let events = extra
        .map(|extra| {
            extra
                .exceptions
                .iter()
                .map(|exception| {
                    let mut attributes = vec![
                        string_attribute("exception.type", exception.type_name),
                        string_attribute("exception.message", &exception.message),
                    ];
                    if let Some(stacktrace) = &exception.stacktrace {
                        attributes.push(string_attribute("exception.stacktrace", stacktrace));
                    }
                    span::Event {
                        time_unix_nano: shared.clock.unix_nanos(exception.time),
                        name: "exception".to_owned(),
                        attributes,
                        dropped_attributes_count: 0,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let is_remote = record.parent_span_id.is_some() && record.parent_span_id == trace.remote_parent;
    Some(Span {
        trace_id: trace_id.0.to_vec(),
        span_id: record.span_id.0.to_vec(),
        parent_span_id: record
            .parent_span_id
            .map(|id| id.0.to_vec())
            .unwrap_or_default(),
        flags: FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | if is_remote { FLAG_IS_REMOTE } else { 0 },
        name: operation.name.to_string(),
        kind: operation.kind as i32,
        start_time_unix_nano: start_unix_ns,
        end_time_unix_nano: end_unix_ns,
        attributes,
        events,
        status: Some(Status {
            code: if record.failed {
                StatusCode::Error as i32
            } else {
                StatusCode::Unset as i32
            },
            message: extra
                .and_then(|extra| extra.status_message.clone())
                .unwrap_or_default(),
        }),
        ..Default::default()
    })
}

/// Runs `apply` on the extra part of open span `seq` (the innermost when `None`), if
/// it is buffered.
fn with_open_extra<R>(
    agent_id: u64,
    seq: Option<u64>,
    apply: impl FnOnce(&mut SpanExtra) -> R,
) -> Option<R> {
    with_trace(agent_id, |trace| trace.extra_mut(seq).map(apply)).flatten()
}

/// Marks open span `seq` (the innermost when `None`) failed, and so its trace kept,
/// with an optional status message and exception. Returns whether the span was found.
fn fail_span(
    agent_id: u64,
    seq: Option<u64>,
    message: Option<String>,
    exception: impl FnOnce() -> Option<ExceptionRecord>,
) -> bool {
    with_trace(agent_id, |trace| {
        find_open(&mut trace.open, seq)?.failed = true;
        trace.keep = true;
        let Some(extra) = trace.extra_mut(seq) else {
            return Some(());
        };
        if message.is_some() {
            extra.status_message = message;
        }
        if let Some(exception) = exception() {
            if extra.status_message.is_none() {
                extra.status_message = Some(exception.message.clone());
            }
            extra.exceptions.push(exception);
        }
        Some(())
    })
    .flatten()
    .is_some()
}

/// The context a child of the innermost open span would have.
pub(crate) fn current_context(shared: &Shared) -> Option<TraceContext> {
    with_trace(shared.id, |trace| trace.context_of(None)).flatten()
}

/// Records an error on the innermost open transaction (see [`crate::Agent::record_error`]).
pub(crate) fn record_error<E: StdError + ?Sized>(shared: &Shared, error: &E) {
    let type_name = std::any::type_name::<E>();
    shared
        .registry
        .count_event("Error", short_type_name(type_name), StatusCode::Error);
    // The error's own code (`Display`, `source`) runs before the thread's state is
    // borrowed: it may use the agent itself (a context for a log line, say).
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    fail_span(shared.id, None, None, || {
        let capture = shared
            .backtraces_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        Some(ExceptionRecord {
            time: Instant::now(),
            type_name,
            message,
            stacktrace: capture.then(|| Backtrace::force_capture().to_string()),
        })
    });
}

/// The last path segment of a type name, generics dropped: `a::b::Error<T>` -> `Error`.
fn short_type_name(type_name: &str) -> &str {
    let base = type_name.split('<').next().unwrap_or(type_name);
    base.rsplit("::")
        .next()
        .unwrap_or(base)
        .trim_start_matches("dyn ")
}

/// A CAT transaction: a timed unit of work, ended (and recorded) when dropped.
///
/// Transactions opened while another of the same agent is open on the same thread
/// become its children. The guard is neither `Send` nor `Sync`: it belongs to the
/// thread's trace, so do not hold one across an `.await` of a multi-threaded runtime.
#[derive(Debug)]
#[must_use = "a transaction ends when dropped; bind it to a variable"]
pub struct Transaction<'a> {
    shared: &'a Shared,
    /// Taken when the transaction ends.
    operation: Option<OperationRef<'a>>,
    place: SpanPlace,
    /// Clock ticks at the start.
    start_ticks: u64,
    /// The duration to record instead of the measured one.
    fixed_duration_ns: Option<u64>,
    _not_send: PhantomData<*const ()>,
}

impl<'a> Transaction<'a> {
    /// Starts a transaction of a resolved operation.
    #[inline]
    pub(crate) fn start(
        shared: &'a Shared,
        operation: &'a Arc<Operation>,
        remote_parent: Option<&TraceContext>,
    ) -> Self {
        Self::start_ref(shared, OperationRef::Borrowed(operation), remote_parent)
    }

    /// Starts a transaction of an operation the caller owns (for example an overflow
    /// entry, which is not cached).
    pub(crate) fn start_owned(
        shared: &'a Shared,
        operation: Arc<Operation>,
        remote_parent: Option<&TraceContext>,
    ) -> Self {
        Self::start_ref(shared, OperationRef::Owned(operation), remote_parent)
    }

    #[inline]
    fn start_ref(
        shared: &'a Shared,
        operation: OperationRef<'a>,
        remote_parent: Option<&TraceContext>,
    ) -> Self {
        let place = with_state(|state| {
            SpanPlace::Local(open_span(&mut state.traces, shared, remote_parent))
        })
        .unwrap_or(SpanPlace::Standalone);
        Self::started(shared, operation, place)
    }

    /// Starts a transaction of CAT type `span_type` named `name`, whose operation is
    /// found in the thread's cache of operations if it is there.
    pub(crate) fn start_named(
        shared: &'a Shared,
        span_type: &str,
        name: &str,
        remote_parent: Option<&TraceContext>,
    ) -> Self {
        let started = with_state(|state| {
            let operation = state.operations.pin(shared, span_type, name);
            let seq = open_span(&mut state.traces, shared, remote_parent);
            (operation, SpanPlace::Local(seq))
        });
        let (operation, place) = started.unwrap_or_else(|| {
            (
                OperationRef::Owned(shared.registry.operation(operation_key(span_type, name))),
                SpanPlace::Standalone,
            )
        });
        Self::started(shared, operation, place)
    }

    /// Reads the clock last, so that the bookkeeping above is not timed.
    fn started(shared: &'a Shared, operation: OperationRef<'a>, place: SpanPlace) -> Self {
        Self {
            shared,
            operation: Some(operation),
            place,
            start_ticks: shared.clock.ticks(),
            fixed_duration_ns: None,
            _not_send: PhantomData,
        }
    }

    /// Marks the transaction failed (status ERROR); its whole trace will be kept.
    pub fn set_status_error(&self, message: impl Into<String>) {
        if let SpanPlace::Local(seq) = self.place {
            fail_span(self.shared.id, Some(seq), Some(message.into()), || None);
        }
    }

    /// Attaches a key-value pair (a span attribute if the trace is kept).
    pub fn add_data(&self, key: impl Into<String>, value: impl Into<String>) {
        if let SpanPlace::Local(seq) = self.place {
            let (key, value) = (key.into(), value.into());
            with_open_extra(self.shared.id, Some(seq), |extra| {
                extra.data.push((key, value));
            });
        }
    }

    /// Overrides the span kind the CAT type implied.
    pub fn set_kind(&mut self, kind: SpanKind) {
        self.rekey(Some(kind), None);
    }

    /// Names the peer (service, database, queue) a client transaction calls, instead of
    /// the prefix of its name.
    pub fn set_peer(&mut self, peer: &str) {
        self.rekey(None, Some(peer));
    }

    fn rekey(&mut self, kind: Option<SpanKind>, peer: Option<&str>) {
        let Some(operation) = self.operation.take().and_then(OperationRef::into_arc) else {
            return;
        };
        let peer_type = match (peer, operation.peer_type) {
            (Some(_), PeerType::None) => PeerType::Service,
            (_, peer_type) => peer_type,
        };
        let key = OperationKey {
            kind: kind.unwrap_or(operation.kind),
            span_type: &operation.span_type,
            name: &operation.name,
            peer: peer.unwrap_or(&operation.peer),
            peer_type,
        };
        self.operation = Some(OperationRef::Owned(self.shared.registry.operation(key)));
    }

    /// This transaction's place in the trace, to pass to a callee.
    ///
    /// Ids are made the first time something needs them, so this is the first call
    /// that may cost an id.
    pub fn context(&self) -> TraceContext {
        match self.place {
            SpanPlace::Local(seq) => {
                with_trace(self.shared.id, |trace| trace.context_of(Some(seq))).flatten()
            }
            SpanPlace::Standalone => None,
        }
        // In no trace (opened while the thread was being torn down): a new one.
        .unwrap_or_else(|| TraceContext {
            trace_id: context::new_trace_id(),
            span_id: context::new_span_id(),
            sampled: false,
        })
    }

    /// Appends the `traceparent` header for a call made inside this transaction.
    pub fn inject(&self, headers: &mut impl Extend<(String, String)>) {
        self.context().inject(headers);
    }

    /// Ends the transaction now (the same as dropping it).
    #[inline]
    pub fn finish(self) {}

    /// Ends the transaction now, recording it as having lasted `duration`: for work
    /// timed elsewhere (a queue wait reported by the broker, a replayed log).
    pub fn finish_with_duration(mut self, duration: std::time::Duration) {
        self.fixed_duration_ns = Some(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
    }
}

impl Drop for Transaction<'_> {
    #[inline]
    fn drop(&mut self) {
        let end_ticks = self.shared.clock.ticks();
        if let Some(operation) = self.operation.take() {
            let duration_ns = self
                .fixed_duration_ns
                .unwrap_or_else(|| self.shared.clock.nanos_between(self.start_ticks, end_ticks));
            close_span(self.shared, self.place, operation, end_ticks, duration_ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use caracal_model::histogram::LatencyHistogram;
    use caracal_proto::Aggregate;

    use super::*;
    use crate::agent::testing::{agent, builder, drain};
    use crate::Agent;

    fn attribute<'s>(span: &'s Span, key: &str) -> Option<&'s str> {
        span.attributes
            .iter()
            .find(|attribute| attribute.key == key)
            .and_then(
                |attribute| match attribute.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(value) => Some(value.as_str()),
                    _ => None,
                },
            )
    }

    fn aggregate<'r>(aggregates: &'r [Aggregate], name: &str, status: StatusCode) -> &'r Aggregate {
        aggregates
            .iter()
            .find(|aggregate| aggregate.name == name && aggregate.status == status as u32)
            .unwrap_or_else(|| panic!("no aggregate {name} {status:?} in {aggregates:?}"))
    }

    /// A request with a query and a call, the call failing or not.
    fn request(agent: &Agent, fail: bool) {
        let root = agent.transaction("URL", "GET /orders");
        root.add_data("http.route", "/orders");
        agent
            .transaction("SQL", "postgresql:SELECT orders")
            .finish();
        let call = agent.transaction("Call", "payments:POST /charge");
        if fail {
            call.set_status_error("declined");
        }
    }

    #[test]
    fn errors_are_kept_whole_and_counted_once() {
        let agent = agent(builder());
        request(&agent, false);
        request(&agent, true);
        let (report, kept) = drain(&agent);
        assert_eq!(
            aggregate(&report.aggregates, "GET /orders", StatusCode::Unset).count,
            2
        );
        assert_eq!(
            aggregate(
                &report.aggregates,
                "postgresql:SELECT orders",
                StatusCode::Unset
            )
            .count,
            2
        );
        let calls = aggregate(
            &report.aggregates,
            "payments:POST /charge",
            StatusCode::Unset,
        );
        assert_eq!(
            (calls.count, calls.peer.as_str(), calls.peer_type.as_str()),
            (1, "payments", "service")
        );
        let failed = aggregate(
            &report.aggregates,
            "payments:POST /charge",
            StatusCode::Error,
        );
        assert_eq!(
            (failed.count, failed.errors, failed.kind),
            (1, 1, SpanKind::Client as u32)
        );

        // Only the failed request's trace is kept, with all three spans.
        assert_eq!(kept.len(), 3, "{kept:?}");
        let [sql, call, root] = [&kept[1], &kept[2], &kept[0]];
        assert!(kept.iter().all(|span| span.trace_id == root.trace_id));
        assert!(root.parent_span_id.is_empty());
        assert_eq!(sql.parent_span_id, root.span_id);
        assert_eq!(call.parent_span_id, root.span_id);
        assert_eq!(
            (root.name.as_str(), root.kind),
            ("GET /orders", SpanKind::Server as i32)
        );
        assert_eq!(attribute(root, "http.route"), Some("/orders"));
        assert_eq!(attribute(sql, "db.system"), Some("postgresql"));
        assert_eq!(attribute(sql, "cat.type"), Some("SQL"));
        assert_eq!(attribute(call, "peer.service"), Some("payments"));
        let status = call.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "declined"));
        assert!(root.start_time_unix_nano <= sql.start_time_unix_nano);
        assert!(sql.end_time_unix_nano <= call.start_time_unix_nano);
        assert!(call.end_time_unix_nano <= root.end_time_unix_nano);
        assert_eq!(agent.stats().kept_spans, 3);
    }

    #[test]
    fn slow_traces_are_kept() {
        let agent = agent(builder().slow_threshold("GET /slow", Duration::from_millis(2)));
        agent
            .transaction("URL", "GET /slow")
            .finish_with_duration(Duration::from_millis(1));
        {
            let _root = agent.transaction("Job", "nightly");
            agent
                .transaction("URL", "GET /slow")
                .finish_with_duration(Duration::from_millis(5));
        }
        let (report, kept) = drain(&agent);
        assert_eq!(
            aggregate(&report.aggregates, "GET /slow", StatusCode::Unset).count,
            2
        );
        let names: Vec<_> = kept.iter().map(|span| span.name.as_str()).collect();
        assert_eq!(names, ["nightly", "GET /slow"]);
    }

    #[test]
    fn learned_thresholds_keep_the_slowest() {
        let agent = agent(builder().learn_min_count(100));
        for millis in 1..=200 {
            agent
                .transaction("URL", "GET /")
                .finish_with_duration(Duration::from_micros(millis * 100));
        }
        let (_, kept) = drain(&agent);
        assert!(
            kept.is_empty(),
            "nothing is slow before a threshold is learned"
        );
        for millis in [1, 19, 50] {
            agent
                .transaction("URL", "GET /")
                .finish_with_duration(Duration::from_millis(millis));
        }
        let (_, kept) = drain(&agent);
        assert_eq!(
            kept.len(),
            1,
            "only the 50 ms request exceeds the learned p99 (~19.8 ms)"
        );
    }

    #[test]
    fn sampled_share_is_roughly_the_ratio_and_the_rest_only_counted() {
        let agent = agent(builder().sample_ratio(0.1).max_kept_spans(100_000));
        for _ in 0..10_000 {
            agent.transaction("URL", "GET /").finish();
        }
        let (report, kept) = drain(&agent);
        assert_eq!(
            aggregate(&report.aggregates, "GET /", StatusCode::Unset).count,
            10_000
        );
        assert!((850..1_150).contains(&kept.len()), "{}", kept.len());
        assert!(kept.iter().all(|span| span.flags & FLAG_SAMPLED != 0));

        let agent = agent_without_sampling();
        for _ in 0..1_000 {
            request(&agent, false);
        }
        let (report, kept) = drain(&agent);
        assert!(kept.is_empty());
        assert_eq!(
            aggregate(&report.aggregates, "GET /orders", StatusCode::Unset).count,
            1_000
        );
        assert_eq!(agent.stats().kept_spans, 0);
    }

    fn agent_without_sampling() -> Agent {
        agent(builder().sample_ratio(0.0))
    }

    #[test]
    fn remote_context_is_joined_and_sampled_parent_forces_keeping() {
        let agent = agent_without_sampling();
        let parent = TraceContext {
            trace_id: context::new_trace_id(),
            span_id: context::new_span_id(),
            sampled: true,
        };
        {
            let server = agent.transaction_with_parent("URL", "POST /orders", Some(&parent));
            let context = server.context();
            assert_eq!((context.trace_id, context.sampled), (parent.trace_id, true));
            assert_ne!(context.span_id, parent.span_id);
            // A remote context inside an open trace is ignored: the span nests.
            let nested = agent.transaction_with_parent(
                "URL",
                "inner",
                Some(&TraceContext {
                    sampled: false,
                    ..parent
                }),
            );
            assert_eq!(nested.context().trace_id, parent.trace_id);
        }
        let unsampled = TraceContext {
            sampled: false,
            ..parent
        };
        agent
            .transaction_with_parent("URL", "POST /orders", Some(&unsampled))
            .finish();
        let (_, kept) = drain(&agent);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].parent_span_id, parent.span_id.0);
        assert_eq!(
            kept[0].flags,
            FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE
        );
        assert_eq!(kept[1].parent_span_id, kept[0].span_id);
        assert_eq!(kept[1].flags, FLAG_SAMPLED | FLAG_HAS_IS_REMOTE);
    }

    #[test]
    fn keep_decision_so_far_is_propagated() {
        let agent = agent_without_sampling();
        let root = agent.transaction("URL", "GET /");
        let mut headers: Vec<(String, String)> = Vec::new();
        agent.inject(&mut headers);
        assert!(headers[0].1.ends_with("-00"), "{headers:?}");
        root.set_status_error("boom");
        let call = agent.transaction("Call", "orders:GET /");
        let header = call.context().to_traceparent();
        assert!(header.ends_with("-01"));
        let parsed = TraceContext::from_traceparent(&header).unwrap();
        assert_eq!(parsed, agent.current_context().unwrap());
        drop(call);
        drop(root);
        assert!(agent.current_context().is_none());
    }

    #[derive(Debug, thiserror::Error)]
    #[error("card declined")]
    struct Declined(#[source] std::io::Error);

    #[test]
    fn record_error_fails_the_transaction_with_an_exception_event() {
        let agent = agent_without_sampling();
        agent.record_error(&Declined(std::io::Error::other("gateway said no")));
        {
            let _root = agent.transaction("URL", "POST /pay");
            let error: Box<dyn StdError> =
                Box::new(Declined(std::io::Error::other("gateway said no")));
            agent.record_error(&*error);
            agent.record_error(&Declined(std::io::Error::other("again")));
        }
        let (report, kept) = drain(&agent);
        let mut events: Vec<_> = report
            .events
            .iter()
            .map(|event| (event.event_type.as_str(), event.name.as_str(), event.count))
            .collect();
        events.sort();
        assert_eq!(events, [("Error", "Declined", 2), ("Error", "Error", 1)]);
        assert_eq!(
            aggregate(&report.aggregates, "POST /pay", StatusCode::Error).count,
            1
        );
        let [span] = kept.as_slice() else {
            panic!("{kept:?}")
        };
        assert_eq!(span.events.len(), 2);
        let exception = &span.events[1];
        assert_eq!(exception.name, "exception");
        let get = |key: &str| {
            exception
                .attributes
                .iter()
                .find(|attribute| attribute.key == key)
                .map(|attribute| format!("{:?}", attribute.value))
        };
        assert!(get("exception.type").unwrap().contains("Declined"));
        assert!(get("exception.message")
            .unwrap()
            .contains("card declined: again"));
        assert!(get("exception.stacktrace").is_some());
        assert_eq!(
            span.status.as_ref().unwrap().message,
            "card declined: gateway said no"
        );
    }

    /// An error whose message names the span it happened in, through the agent.
    #[derive(Debug)]
    struct Traced<'a>(&'a Agent);

    impl std::fmt::Display for Traced<'_> {
        fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let span = self
                .0
                .current_context()
                .map(|context| context.span_id.to_hex());
            write!(formatter, "failed in {}", span.unwrap_or_default())
        }
    }

    impl StdError for Traced<'_> {}

    #[test]
    fn an_error_may_use_the_agent_while_it_is_recorded() {
        let agent = agent_without_sampling();
        let root = agent.transaction("URL", "GET /traced");
        let span_id = root.context().span_id.to_hex();
        agent.record_error(&Traced(&agent));
        drop(root);
        let (_, kept) = drain(&agent);
        let [span] = kept.as_slice() else {
            panic!("{kept:?}")
        };
        assert_eq!(
            span.status.as_ref().unwrap().message,
            format!("failed in {span_id}")
        );
        assert_eq!(const_hex_of(&span.span_id), span_id);
    }

    fn const_hex_of(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn out_of_order_ends_and_several_agents_per_thread() {
        let first = agent_without_sampling();
        let second = agent(builder().sample_ratio(1.0));
        let parent = first.transaction("URL", "a");
        let child = first.transaction("Job", "b");
        let other = second.transaction("URL", "c");
        assert_ne!(other.context().trace_id, parent.context().trace_id);
        drop(parent);
        let grandchild = first.transaction("Job", "d");
        assert_eq!(grandchild.context().trace_id, child.context().trace_id);
        drop(child);
        drop(grandchild);
        drop(other);
        let (report, kept) = drain(&first);
        assert_eq!(report.aggregates.len(), 3);
        assert!(kept.is_empty());
        let (_, kept) = drain(&second);
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn cached_operations_are_told_apart_by_type_and_name() {
        let agent = agent_without_sampling();
        let long = "GET /a/route/long/enough/to/take/several/words/{id}";
        let keys = [
            ("URL", "GET /a"),
            ("Job", "GET /a"),
            ("URL", "GET /b"),
            ("URL", "GET /abcdefg"),
            ("URL", "GET /abcdefh"),
            ("URL", long),
            ("Job", long),
            ("URL", "x"),
            ("URL", ""),
        ];
        assert!(keys.len() > NUM_CACHED_OPERATIONS);
        // More keys than cache entries, nested and not, so entries are replaced (not
        // while pinned) and matched again.
        for round in 1..=3 {
            for (span_type, name) in keys {
                let _outer = agent.transaction(span_type, name);
                for (inner_type, inner_name) in keys.iter().take(round) {
                    agent.transaction(inner_type, inner_name).finish();
                }
            }
        }
        let (report, _) = drain(&agent);
        for (index, (span_type, name)) in keys.iter().enumerate() {
            // Once a round as the outer transaction; as an inner one under each outer
            // one, in the rounds that reach its index.
            let inner_rounds = 3u64.saturating_sub(index as u64);
            let row = report
                .aggregates
                .iter()
                .find(|row| {
                    row.name == *name && row.kind == crate::mapping::kind_of(span_type) as u32
                })
                .unwrap_or_else(|| panic!("no row for {span_type} {name}"));
            assert_eq!(
                row.count,
                3 + inner_rounds * keys.len() as u64,
                "{span_type} {name}"
            );
        }
    }

    /// A request through call sites: a root, a query and a call that fails if asked.
    fn request_through_call_sites(agent: &Agent, fail: bool) {
        let _root = crate::transaction!(agent, "URL", "GET /callsite");
        crate::transaction!(agent, "SQL", "postgresql:SELECT callsite").finish();
        let call = crate::transaction!(agent, "Call", "payments:POST /callsite");
        if fail {
            call.set_status_error("declined");
        }
    }

    #[test]
    fn call_sites_record_like_names_for_every_agent() {
        let first = agent_without_sampling();
        let second = agent_without_sampling();
        // The call sites resolve for `first`; `second` gets its transactions by name.
        for agent in [&first, &second, &first, &second, &first] {
            request_through_call_sites(agent, false);
        }
        request_through_call_sites(&second, true);
        let (report, kept) = drain(&first);
        assert!(kept.is_empty());
        for name in [
            "GET /callsite",
            "postgresql:SELECT callsite",
            "payments:POST /callsite",
        ] {
            assert_eq!(
                aggregate(&report.aggregates, name, StatusCode::Unset).count,
                3
            );
        }
        let query = aggregate(
            &report.aggregates,
            "postgresql:SELECT callsite",
            StatusCode::Unset,
        );
        assert_eq!(
            (query.kind, query.peer.as_str()),
            (SpanKind::Client as u32, "postgresql")
        );
        let (report, kept) = drain(&second);
        assert_eq!(
            aggregate(&report.aggregates, "GET /callsite", StatusCode::Unset).count,
            3
        );
        assert_eq!(
            aggregate(
                &report.aggregates,
                "payments:POST /callsite",
                StatusCode::Error
            )
            .count,
            1
        );
        // The failed request is kept whole, nested as it ran.
        assert_eq!(kept.len(), 3);
        let root = kept
            .iter()
            .find(|span| span.name == "GET /callsite")
            .unwrap();
        assert!(kept
            .iter()
            .filter(|span| span.name != "GET /callsite")
            .all(|span| span.parent_span_id == root.span_id && span.trace_id == root.trace_id));

        // A remote parent given to a call site is joined.
        let parent = TraceContext {
            trace_id: context::new_trace_id(),
            span_id: context::new_span_id(),
            sampled: true,
        };
        crate::transaction!(first, "URL", "GET /callsite/child", Some(&parent)).finish();
        let (_, kept) = drain(&first);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].trace_id, parent.trace_id.0.to_vec());
        assert_eq!(kept[0].parent_span_id, parent.span_id.0.to_vec());
    }

    #[test]
    fn call_site_past_the_cardinality_cap_folds_into_other_each_time() {
        let agent = agent(builder().max_keys(1));
        agent.transaction("URL", "GET /known").finish();
        for _ in 0..3 {
            crate::transaction!(agent, "URL", "GET /overflowing").finish();
        }
        let (report, _) = drain(&agent);
        assert_eq!(
            aggregate(&report.aggregates, "other", StatusCode::Unset).count,
            3
        );
        assert_eq!(agent.shared().registry.overflowed(), 3);
    }

    #[test]
    fn ids_made_on_demand_are_the_ones_sent() {
        let agent = agent_without_sampling();
        let parent = agent.transaction("URL", "a");
        let child = agent.transaction("Job", "b");
        let parent_context = parent.context();
        let child_context = child.context();
        assert_eq!(parent.context(), parent_context, "ids are made once");
        assert_eq!(child_context.trace_id, parent_context.trace_id);
        // The parent ends first; the child then fails, which keeps the trace.
        drop(parent);
        child.set_status_error("late failure");
        drop(child);
        let (_, kept) = drain(&agent);
        let [parent_span, child_span] = kept.as_slice() else {
            panic!("{kept:?}")
        };
        assert_eq!(parent_span.name, "a", "spans are sent in opening order");
        assert_eq!(parent_span.trace_id, parent_context.trace_id.0);
        assert_eq!(parent_span.span_id, parent_context.span_id.0);
        assert_eq!(child_span.span_id, child_context.span_id.0);
        assert_eq!(child_span.parent_span_id, parent_context.span_id.0);

        // A trace nobody asked ids of still gets valid, linked ones when kept.
        {
            let root = agent.transaction("URL", "c");
            agent.transaction("SQL", "d").finish();
            root.set_status_error("boom");
        }
        let (_, kept) = drain(&agent);
        let [root, query] = kept.as_slice() else {
            panic!("{kept:?}")
        };
        assert_eq!(root.trace_id.len(), 16);
        assert!(root.trace_id.iter().any(|byte| *byte != 0));
        assert_eq!(query.trace_id, root.trace_id);
        assert_eq!(query.parent_span_id, root.span_id);
        assert_ne!(query.span_id, root.span_id);
    }

    #[test]
    fn kind_and_peer_can_be_overridden_and_traces_are_bounded() {
        let agent = agent(builder().max_spans_per_trace(3).sample_ratio(1.0));
        {
            let _root = agent.transaction("URL", "GET /");
            for _ in 0..5 {
                let mut call = agent.transaction("Remote", "inventory.reserve");
                call.set_kind(SpanKind::Producer);
                call.set_peer("inventory");
            }
        }
        let (report, kept) = drain(&agent);
        let call = aggregate(&report.aggregates, "inventory.reserve", StatusCode::Unset);
        assert_eq!(
            (call.count, call.kind, call.peer.as_str()),
            (5, SpanKind::Producer as u32, "inventory")
        );
        assert_eq!(kept.len(), 3);
        assert_eq!(agent.stats().dropped_spans, 3);
    }

    #[test]
    fn kept_spans_are_capped_per_report() {
        let agent = agent(builder().sample_ratio(1.0).max_kept_spans(4));
        for _ in 0..3 {
            request(&agent, false);
        }
        let (_, kept) = drain(&agent);
        assert_eq!(kept.len(), 3);
        assert_eq!(agent.stats().dropped_spans, 6);
    }

    #[test]
    fn percentiles_are_within_one_percent_of_exact() {
        let agent = agent_without_sampling();
        // A log-normal-ish distribution from 100 µs to ~1 s, deterministic.
        let mut durations: Vec<u64> = (0..20_000u64)
            .map(|index| {
                let spread = (index * 7_919 % 20_000) as f64 / 20_000.0;
                (100_000.0 * (spread * 9.2).exp()) as u64
            })
            .collect();
        for nanos in &durations {
            agent
                .transaction("URL", "GET /")
                .finish_with_duration(Duration::from_nanos(*nanos));
        }
        let (report, _) = drain(&agent);
        let aggregate = aggregate(&report.aggregates, "GET /", StatusCode::Unset);
        assert_eq!(aggregate.count, durations.len() as u64);
        let histogram = LatencyHistogram::from_sparse(&aggregate.hist_keys, &aggregate.hist_counts);
        durations.sort_unstable();
        for quantile in [0.5, 0.9, 0.99, 0.999] {
            let rank = ((quantile * durations.len() as f64).ceil() as usize).max(1);
            let exact = durations[rank - 1] as f64;
            let estimate = histogram.quantile(quantile) as f64;
            assert!(
                (estimate - exact).abs() / exact < 0.01,
                "p{quantile}: {estimate} vs {exact}"
            );
        }
        assert!(aggregate.min_ns >= durations[0] && aggregate.max_ns >= *durations.last().unwrap());
    }
}

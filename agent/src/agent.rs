//! The [`Agent`] facade: what the application calls.

use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use caracal_model::span::StatusCode;
use caracal_proto::MetricKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::mpsc;

use crate::config::{AgentBuilder, AgentConfig};
use crate::context::{self, TraceContext};
use crate::error::{Error, Result};
use crate::mapping;
use crate::registry::{lock, Operation, OperationKey, Registry, ThresholdConfig};
use crate::reporter::{Command, Reporter};
use crate::trace::{self, Transaction};

/// Extra time [`Agent::shutdown`] waits for the reporter's answer past its timeout.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Process-wide counter giving each agent its own slot in the thread-local traces.
static NEXT_AGENT_ID: AtomicU64 = AtomicU64::new(1);

/// The agent's clocks: cheap ticks for timing transactions, and Unix time without a
/// system call per span.
///
/// Ticks come from `quanta`: the TSC (`rdtsc`, a few nanoseconds where `Instant::now()`
/// costs tens), scaled to nanoseconds by a ratio calibrated once per process against the
/// monotonic clock, or the monotonic clock itself where the CPU has no invariant TSC.
/// A reading before another is ordered only on one thread: a transaction starts and
/// ends on the same thread, and a negative difference counts as zero.
#[derive(Debug, Clone)]
pub(crate) struct WallClock {
    anchor: Instant,
    anchor_unix_ns: u64,
    ticks: quanta::Clock,
}

/// Ticks and `Instant` read together, to map ticks to Unix time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClockReading {
    ticks: u64,
    instant: Instant,
}

impl WallClock {
    fn now() -> Self {
        let anchor_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            });
        Self {
            anchor: Instant::now(),
            anchor_unix_ns,
            ticks: quanta::Clock::new(),
        }
    }

    /// The current ticks (meaningful only as a difference, see [`Self::nanos_between`]).
    #[inline]
    pub(crate) fn ticks(&self) -> u64 {
        self.ticks.raw()
    }

    /// Nanoseconds from `start` to `end` ticks (zero if `end` is not later).
    #[inline]
    pub(crate) fn nanos_between(&self, start: u64, end: u64) -> u64 {
        self.ticks.delta_as_nanos(start, end)
    }

    /// Reads ticks and `Instant` now.
    pub(crate) fn reading(&self) -> ClockReading {
        ClockReading {
            ticks: self.ticks(),
            instant: Instant::now(),
        }
    }

    /// Unix nanoseconds of `instant`.
    pub(crate) fn unix_nanos(&self, instant: Instant) -> u64 {
        let nanos = |duration: Duration| u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        match instant.checked_duration_since(self.anchor) {
            Some(after) => self.anchor_unix_ns.saturating_add(nanos(after)),
            None => self
                .anchor_unix_ns
                .saturating_sub(nanos(self.anchor.saturating_duration_since(instant))),
        }
    }

    /// Unix nanoseconds of `ticks`, read shortly before or after `now`.
    pub(crate) fn unix_nanos_of_ticks(&self, now: &ClockReading, ticks: u64) -> u64 {
        let now_unix_ns = self.unix_nanos(now.instant);
        if ticks <= now.ticks {
            now_unix_ns.saturating_sub(self.nanos_between(ticks, now.ticks))
        } else {
            now_unix_ns.saturating_add(self.nanos_between(now.ticks, ticks))
        }
    }
}

/// The aggregation key of a CAT transaction: kind and peer follow from the type and
/// the name (see [`crate::mapping`]).
pub(crate) fn operation_key<'a>(span_type: &'a str, name: &'a str) -> OperationKey<'a> {
    let peer_type = mapping::peer_type_of(span_type);
    OperationKey {
        kind: mapping::kind_of(span_type),
        span_type,
        name,
        peer: if peer_type == mapping::PeerType::None {
            ""
        } else {
            mapping::peer_of(name)
        },
        peer_type,
    }
}

/// The agent's own counters, reported in every heartbeat.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) recorded: AtomicU64,
    pub(crate) kept_spans: AtomicU64,
    pub(crate) dropped_spans: AtomicU64,
    pub(crate) dropped_reports: AtomicU64,
    pub(crate) pending_reports: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) reports_sent: AtomicU64,
}

impl Counters {
    /// Counts the spans of a kept trace: those queued and those its buffer had no
    /// room for.
    pub(crate) fn record_kept(&self, num_kept: u64, num_dropped: u64) {
        self.kept_spans.fetch_add(num_kept, Ordering::Relaxed);
        self.dropped_spans.fetch_add(num_dropped, Ordering::Relaxed);
    }
}

/// State shared by the application threads and the reporter.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Key of this agent in the thread-local traces.
    pub(crate) id: u64,
    pub(crate) config: AgentConfig,
    pub(crate) registry: Registry,
    /// Spans of kept traces, waiting for the next report.
    pub(crate) kept: Mutex<Vec<Span>>,
    pub(crate) counters: Counters,
    /// Traces whose id ranks below this are kept (the sampled share).
    pub(crate) sample_threshold: u64,
    pub(crate) clock: WallClock,
    /// Backtraces [`Agent::record_error`] may still capture this interval.
    pub(crate) backtraces_left: AtomicU32,
}

/// A snapshot of the agent's own counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct AgentStats {
    /// Transactions and spans aggregated, as of the last report.
    pub recorded: u64,
    /// Spans kept (queued whole) since start.
    pub kept_spans: u64,
    /// Kept spans dropped (per-report cap, per-trace buffer) since start.
    pub dropped_spans: u64,
    /// Reports dropped by the memory bound since start.
    pub dropped_reports: u64,
    /// Reports waiting for a collector.
    pub pending_reports: u64,
    /// Reports delivered since start.
    pub reports_sent: u64,
    /// Encoded bytes of delivered reports since start (before gzip).
    pub bytes_sent: u64,
    /// Recordings folded into an `other` key since start.
    pub overflowed: u64,
}

/// A transaction type and name resolved once by [`Agent::operation`].
///
/// Cheap to clone. While a handle lives, its operation keeps its aggregation slot (it
/// is never evicted as idle).
#[derive(Debug, Clone)]
pub struct OperationHandle {
    agent: Agent,
    operation: Arc<Operation>,
}

impl OperationHandle {
    /// Starts a transaction of this operation (see [`Agent::transaction`]).
    #[inline]
    pub fn transaction(&self) -> Transaction<'_> {
        Transaction::start(self.agent.shared(), &self.operation, None)
    }

    /// Starts a transaction continuing a remote trace (see
    /// [`Agent::transaction_with_parent`]).
    pub fn transaction_with_parent(&self, parent: Option<&TraceContext>) -> Transaction<'_> {
        Transaction::start(self.agent.shared(), &self.operation, parent)
    }

    /// The agent this handle records into.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }
}

/// A call site of [`transaction!`](crate::transaction!): its type and name, and the
/// operation they resolve to for the first agent that starts a transaction there.
///
/// A transaction started through a call site the agent has resolved costs what one
/// started from an [`OperationHandle`] costs: no name lookup at all. Another agent
/// starting a transaction at the same call site (tests, a second agent in one process)
/// gets it by name, as [`Agent::transaction`] would. The resolved operation is held for
/// the life of the process, so it is never evicted as idle; call sites are few (one per
/// place in the code), so the cardinality cap is not at risk.
#[derive(Debug)]
pub struct Callsite {
    span_type: &'static str,
    name: &'static str,
    /// The agent id and its operation.
    resolved: OnceLock<(u64, Arc<Operation>)>,
}

impl Callsite {
    /// A call site of CAT type `span_type` named `name`; made by
    /// [`transaction!`](crate::transaction!).
    #[doc(hidden)]
    pub const fn new(span_type: &'static str, name: &'static str) -> Self {
        Self {
            span_type,
            name,
            resolved: OnceLock::new(),
        }
    }

    /// Starts a transaction of this call site's operation in `agent`.
    #[inline]
    pub fn transaction<'a>(&'static self, agent: &'a Agent) -> Transaction<'a> {
        self.transaction_with_parent(agent, None)
    }

    /// Starts a transaction continuing a remote trace (see
    /// [`Agent::transaction_with_parent`]).
    #[inline]
    pub fn transaction_with_parent<'a>(
        &'static self,
        agent: &'a Agent,
        parent: Option<&TraceContext>,
    ) -> Transaction<'a> {
        let shared = agent.shared();
        match self.resolved.get() {
            Some((agent_id, operation)) if *agent_id == shared.id => {
                Transaction::start(shared, operation, parent)
            }
            _ => self.resolve(agent, parent),
        }
    }

    /// The first transaction of an agent at this call site: resolves the operation, and
    /// caches it if no agent did before and it is the operation's own entry (an overflow
    /// entry is looked up, and counted, each time, as by name).
    #[cold]
    #[inline(never)]
    fn resolve<'a>(
        &'static self,
        agent: &'a Agent,
        parent: Option<&TraceContext>,
    ) -> Transaction<'a> {
        let shared = agent.shared();
        if self.resolved.get().is_some() {
            return agent.transaction_with_parent(self.span_type, self.name, parent);
        }
        let key = operation_key(self.span_type, self.name);
        let operation = shared.registry.operation(key);
        if !operation.matches_key(key) {
            return Transaction::start_owned(shared, operation, parent);
        }
        let resolved = self
            .resolved
            .get_or_init(|| (shared.id, Arc::clone(&operation)));
        if resolved.0 == shared.id {
            Transaction::start(shared, &resolved.1, parent)
        } else {
            // Another agent resolved it first, on another thread.
            Transaction::start_owned(shared, operation, parent)
        }
    }
}

/// Starts a transaction whose CAT type and name are literals, resolving them once per
/// call site: as cheap as an [`OperationHandle`], as short as [`Agent::transaction`].
///
/// ```
/// # use caracal_agent::{exporter::InMemoryExporter, Agent};
/// # let agent = Agent::builder().exporter(InMemoryExporter::new()).start();
/// let _request = caracal_agent::transaction!(agent, "URL", "GET /orders/{id}");
/// // With a remote parent (an incoming `traceparent`):
/// # let parent = None;
/// let _child = caracal_agent::transaction!(agent, "Call", "payments:POST /charge", parent);
/// ```
///
/// The type and name must be literals; for names made at run time use
/// [`Agent::transaction`] or an [`OperationHandle`].
#[macro_export]
macro_rules! transaction {
    ($agent:expr, $span_type:literal, $name:literal $(,)?) => {{
        static CALLSITE: $crate::Callsite = $crate::Callsite::new($span_type, $name);
        CALLSITE.transaction(&$agent)
    }};
    ($agent:expr, $span_type:literal, $name:literal, $parent:expr $(,)?) => {{
        static CALLSITE: $crate::Callsite = $crate::Callsite::new($span_type, $name);
        CALLSITE.transaction_with_parent(&$agent, $parent)
    }};
}

/// Handle to the reporter, dropped with the last [`Agent`] clone.
#[derive(Debug)]
struct AgentInner {
    shared: Arc<Shared>,
    control: mpsc::UnboundedSender<Command>,
    shut_down: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A Caracal agent: records transactions, events and metrics, aggregates them per
/// 10-second interval, keeps whole traces worth keeping, and reports in the background.
///
/// Cheap to clone (clones share everything). Recording never blocks on I/O, never
/// returns an error, and never panics. Dropping the last clone stops the reporter after
/// a short best-effort flush; call [`Agent::shutdown`] to flush with a deadline.
#[derive(Debug, Clone)]
pub struct Agent {
    inner: Arc<AgentInner>,
}

impl Agent {
    /// A builder with the defaults, overridden by the `CARACAL_*` environment variables
    /// (see [`crate::config`]).
    pub fn builder() -> AgentBuilder {
        AgentBuilder::from_process_env()
    }

    /// Builds the agent and its (not yet running) reporter.
    pub(crate) fn build(builder: AgentBuilder) -> (Self, Reporter) {
        let AgentBuilder { config, exporter } = builder;
        let thresholds = ThresholdConfig {
            configured_ns: config
                .slow_thresholds
                .iter()
                .map(|(name, threshold)| {
                    (
                        name.clone(),
                        u64::try_from(threshold.as_nanos()).unwrap_or(u64::MAX),
                    )
                })
                .collect(),
            learn_min_count: config.learn_min_count,
        };
        let shared = Arc::new(Shared {
            id: NEXT_AGENT_ID.fetch_add(1, Ordering::Relaxed),
            registry: Registry::new(config.max_keys, thresholds),
            kept: Mutex::new(Vec::new()),
            counters: Counters::default(),
            sample_threshold: context::ratio_threshold(config.sample_ratio),
            clock: WallClock::now(),
            backtraces_left: AtomicU32::new(config.max_backtraces),
            config,
        });
        let (control, commands) = mpsc::unbounded_channel();
        let reporter = Reporter::new(Arc::clone(&shared), commands, exporter);
        let agent = Self {
            inner: Arc::new(AgentInner {
                shared,
                control,
                shut_down: AtomicBool::new(false),
                thread: Mutex::new(None),
            }),
        };
        (agent, reporter)
    }

    /// Builds the agent and starts the reporter on its own thread.
    pub(crate) fn start(builder: AgentBuilder) -> Self {
        let (agent, reporter) = Self::build(builder);
        match reporter.spawn() {
            Ok(thread) => *lock(&agent.inner.thread) = Some(thread),
            Err(error) => {
                tracing::warn!(%error, "failed to start the agent reporter; nothing will be reported")
            }
        }
        agent
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The configuration in force.
    pub fn config(&self) -> &AgentConfig {
        &self.shared().config
    }

    /// Starts a transaction of CAT type `span_type` (`URL`, `Call`, `SQL`, ...; see
    /// [`crate::mapping`]) named `name`. It ends when the returned guard drops.
    #[inline]
    pub fn transaction(&self, span_type: &str, name: &str) -> Transaction<'_> {
        self.transaction_with_parent(span_type, name, None)
    }

    /// Starts a transaction continuing a remote trace (for example from an incoming
    /// `traceparent`): if no transaction of this agent is open on this thread, the new
    /// one joins `parent`'s trace as its child, and a sampled parent forces the trace to
    /// be kept. Otherwise `parent` is ignored and the transaction nests as usual.
    pub fn transaction_with_parent(
        &self,
        span_type: &str,
        name: &str,
        parent: Option<&TraceContext>,
    ) -> Transaction<'_> {
        Transaction::start_named(self.shared(), span_type, name, parent)
    }

    /// Resolves a transaction type and name once, for code that starts many
    /// transactions of the same operation: [`OperationHandle::transaction`] then skips
    /// the name lookup (the cheapest way to record).
    pub fn operation(&self, span_type: &str, name: &str) -> OperationHandle {
        OperationHandle {
            operation: self
                .shared()
                .registry
                .operation(operation_key(span_type, name)),
            agent: self.clone(),
        }
    }

    /// Counts one event (status unset).
    pub fn event(&self, event_type: &str, name: &str) {
        self.event_with_status(event_type, name, StatusCode::Unset);
    }

    /// Counts one event with a status.
    pub fn event_with_status(&self, event_type: &str, name: &str, status: StatusCode) {
        self.shared().registry.count_event(event_type, name, status);
    }

    /// Adds `count` to a counter.
    pub fn counter(&self, name: &str, count: u64) {
        self.shared()
            .registry
            .record_metric(name, MetricKind::Counter, count as f64);
    }

    /// Adds one duration to a duration metric (summed in nanoseconds, with a count).
    pub fn duration(&self, name: &str, duration: Duration) {
        self.shared().registry.record_metric(
            name,
            MetricKind::Duration,
            duration.as_nanos() as f64,
        );
    }

    /// Sets a gauge (the last value of the interval is reported). A value that is not a
    /// finite number (a ratio of zero to zero, say) is ignored: the gauge keeps its last
    /// finite value, and a collector would refuse the row anyway.
    pub fn gauge(&self, name: &str, value: f64) {
        if value.is_finite() {
            self.shared()
                .registry
                .record_metric(name, MetricKind::Gauge, value);
        }
    }

    /// Records an error: counts an `Error` event named after the error's type, marks the
    /// innermost open transaction of this agent on this thread failed (so its trace is
    /// kept), and attaches an OpenTelemetry `exception` event with the type, the message
    /// (with its `source()` chain) and a backtrace (at most
    /// [`AgentConfig::max_backtraces`] per interval, as capturing one is slow).
    pub fn record_error<E: StdError + ?Sized>(&self, error: &E) {
        trace::record_error(self.shared(), error);
    }

    /// The context of the innermost open transaction of this agent on this thread.
    pub fn current_context(&self) -> Option<TraceContext> {
        trace::current_context(self.shared())
    }

    /// Appends the `traceparent` header of the innermost open transaction, if any.
    pub fn inject(&self, headers: &mut impl Extend<(String, String)>) {
        if let Some(context) = self.current_context() {
            context.inject(headers);
        }
    }

    /// A snapshot of the agent's counters.
    pub fn stats(&self) -> AgentStats {
        let counters = &self.shared().counters;
        AgentStats {
            recorded: counters.recorded.load(Ordering::Relaxed),
            kept_spans: counters.kept_spans.load(Ordering::Relaxed),
            dropped_spans: counters.dropped_spans.load(Ordering::Relaxed),
            dropped_reports: counters.dropped_reports.load(Ordering::Relaxed),
            pending_reports: counters.pending_reports.load(Ordering::Relaxed),
            reports_sent: counters.reports_sent.load(Ordering::Relaxed),
            bytes_sent: counters.bytes_sent.load(Ordering::Relaxed),
            overflowed: self.shared().registry.overflowed(),
        }
    }

    /// Reports what was recorded since the last report and waits up to `timeout` for
    /// every pending report to be delivered. Recording still works afterwards but is no
    /// longer reported.
    ///
    /// Blocks the calling thread: in async code, call it from `spawn_blocking`.
    pub fn shutdown(&self, timeout: Duration) -> Result<()> {
        if self.inner.shut_down.swap(true, Ordering::AcqRel) {
            return Err(Error::AlreadyShutDown);
        }
        let (reply, answer) = std::sync::mpsc::channel();
        self.inner
            .control
            .send(Command::Shutdown { timeout, reply })
            .map_err(|_| Error::ReporterGone)?;
        let answer = answer.recv_timeout(timeout + SHUTDOWN_GRACE);
        if answer.is_ok() {
            // The reporter answers just before its thread ends.
            if let Some(thread) = lock(&self.inner.thread).take() {
                let _ = thread.join();
            }
        }
        match answer {
            Ok(result) => result,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(Error::ShutdownTimeout {
                num_pending_reports: self.stats().pending_reports as usize,
            }),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(Error::ReporterGone),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for unit tests: an agent without a running reporter, drained by hand.

    use std::collections::HashMap;

    use caracal_proto::AgentReport;
    use opentelemetry_proto::tonic::trace::v1::Span;

    use super::*;

    /// A builder ignoring the process environment.
    pub(crate) fn builder() -> AgentBuilder {
        AgentBuilder::from_env(&HashMap::new())
            .service_name("test")
            .instance("test-1")
            .host("test-host")
            .sample_ratio(0.0)
    }

    /// An agent whose reporter never runs.
    pub(crate) fn agent(builder: AgentBuilder) -> Agent {
        Agent::build(builder).0
    }

    /// Swaps and drains the buffers into a report (aggregates sorted by name and
    /// status), and takes the kept spans.
    pub(crate) fn drain(agent: &Agent) -> (AgentReport, Vec<Span>) {
        let shared = agent.shared();
        let epoch = shared.registry.swap();
        let mut report = AgentReport::default();
        shared.registry.drain(epoch, 0, &mut report);
        report
            .aggregates
            .sort_by(|a, b| (&a.name, a.status).cmp(&(&b.name, b.status)));
        let kept = std::mem::take(&mut *lock(&shared.kept));
        (report, kept)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{agent, builder, drain};

    #[test]
    fn gauges_ignore_values_that_are_not_finite() {
        let agent = agent(builder());
        agent.gauge("hit_ratio", 0.5);
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            agent.gauge("hit_ratio", value);
            agent.gauge("never_finite", value);
        }
        let (report, _) = drain(&agent);
        let values: Vec<_> = report
            .metrics
            .iter()
            .map(|metric| (metric.name.as_str(), metric.value, metric.count))
            .collect();
        assert_eq!(values, [("hit_ratio", 0.5, 1)]);
    }
}

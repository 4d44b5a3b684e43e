//! The background reporter: swaps the buffers at each interval boundary, builds the
//! report, and delivers pending reports with retries, failover and a memory bound.
//!
//! It runs on its own thread, on a current-thread tokio runtime, so the application's
//! threads (and runtime, if any) never wait for it. A panic inside it is caught and
//! ends reporting; it never reaches the application.
//!
//! Timeline of one interval `[t, t + 10 s)`: at `t + 10 s` the reporter swaps the
//! buffers, drains the idle one into the report of bucket `t`, appends the kept spans
//! and a heartbeat, and queues the report. Delivery of the queue (oldest first) may take
//! until the next boundary; it is then interrupted and resumed after the next swap, so
//! swaps are never late because of I/O. A failed delivery is retried after an
//! exponential backoff with jitter. The queue is bounded by encoded bytes; when full,
//! the oldest reports are dropped and counted in the next heartbeats.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use caracal_model::bucket::{bucket_start, BUCKET_SECONDS};
use caracal_proto::{AgentReport, Heartbeat};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::agent::Shared;
use crate::drainer::RingDrainer;
use crate::error::{Error, Result};
use crate::exporter::{GrpcExporter, ReportExporter};
use crate::process;
use crate::registry::lock;
use crate::trace::string_attribute;

/// Length of one reporting interval: the stored 10-second bucket.
pub(crate) const INTERVAL: Duration = Duration::from_secs(BUCKET_SECONDS as u64);
/// First retry delay after a failed delivery.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Flush time when the last agent handle is dropped without [`crate::Agent::shutdown`].
const DROP_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Name of the reporter thread.
const THREAD_NAME: &str = "caracal-agent";
/// A request from the application to the reporter.
#[derive(Debug)]
pub(crate) enum Command {
    /// Report now, deliver until `timeout`, answer, and stop.
    Shutdown {
        timeout: Duration,
        reply: std::sync::mpsc::Sender<Result<()>>,
    },
}

/// Reports waiting for delivery, bounded by their encoded size.
#[derive(Debug)]
pub(crate) struct PendingReports {
    reports: VecDeque<(AgentReport, usize)>,
    num_bytes: usize,
    max_bytes: usize,
}

impl PendingReports {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            reports: VecDeque::new(),
            num_bytes: 0,
            max_bytes,
        }
    }

    /// Queues a report, then drops the oldest ones while over the bound (the newest is
    /// always kept). Returns the number dropped.
    pub(crate) fn push(&mut self, report: AgentReport) -> usize {
        let len = report.encoded_len();
        self.reports.push_back((report, len));
        self.num_bytes += len;
        let mut num_dropped = 0;
        while self.num_bytes > self.max_bytes && self.reports.len() > 1 {
            if let Some((_, len)) = self.reports.pop_front() {
                self.num_bytes -= len;
                num_dropped += 1;
            }
        }
        num_dropped
    }

    fn front(&self) -> Option<&AgentReport> {
        self.reports.front().map(|(report, _)| report)
    }

    /// Removes the oldest report; returns its encoded size.
    fn pop(&mut self) -> usize {
        let len = self.reports.pop_front().map_or(0, |(_, len)| len);
        self.num_bytes -= len;
        len
    }

    pub(crate) fn len(&self) -> usize {
        self.reports.len()
    }

    fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }
}

/// Exponential backoff with "equal jitter": half the delay fixed, half random.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: INITIAL_BACKOFF,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        let half = base / 2;
        let jitter_ns = crate::context::random_u64() % (half.as_nanos() as u64 + 1);
        half + Duration::from_nanos(jitter_ns)
    }

    fn reset(&mut self) {
        self.next = INITIAL_BACKOFF;
    }
}

/// Maps Unix time to tokio instants, so paused time in tests moves the interval clock.
#[derive(Debug, Clone, Copy)]
struct ReporterClock {
    start: Instant,
    start_unix_ns: u64,
}

impl ReporterClock {
    fn now_unix_ns(&self) -> u64 {
        self.start_unix_ns + self.start.elapsed().as_nanos() as u64
    }

    fn instant_at(&self, unix_ns: u64) -> Instant {
        self.start + Duration::from_nanos(unix_ns.saturating_sub(self.start_unix_ns))
    }
}

fn interval_ns() -> u64 {
    INTERVAL.as_nanos() as u64
}

/// The first interval boundary strictly after `unix_ns`.
fn next_boundary(unix_ns: u64) -> u64 {
    (unix_ns / interval_ns() + 1) * interval_ns()
}

/// The reporter of one agent, before it runs.
#[derive(Debug)]
pub(crate) struct Reporter {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    exporter: Option<Arc<dyn ReportExporter>>,
    /// Unix time to start the clock at instead of now (tests).
    start_unix_ns: Option<u64>,
}

/// The reporter's working state.
#[derive(Debug)]
struct ReporterState {
    shared: Arc<Shared>,
    exporter: Arc<dyn ReportExporter>,
    pending: PendingReports,
    sequence: u64,
    backoff: Backoff,
    /// When to try delivery again after a failure.
    retry_at: Option<Instant>,
    /// Whether the last delivery failed (to warn once per outage).
    failing: bool,
    clock: ReporterClock,
}

impl Reporter {
    pub(crate) fn new(
        shared: Arc<Shared>,
        commands: mpsc::UnboundedReceiver<Command>,
        exporter: Option<Arc<dyn ReportExporter>>,
    ) -> Self {
        Self {
            shared,
            commands,
            exporter,
            start_unix_ns: None,
        }
    }

    /// Starts the clock at `unix_ns` instead of the current time (tests).
    #[cfg(test)]
    pub(crate) fn with_start_unix_ns(mut self, unix_ns: u64) -> Self {
        self.start_unix_ns = Some(unix_ns);
        self
    }

    /// Runs the reporter on a new thread with its own runtime.
    pub(crate) fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || {
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match runtime {
                        Ok(runtime) => runtime.block_on(self.run()),
                        Err(error) => tracing::warn!(%error, "failed to start the agent runtime"),
                    }
                }));
                if outcome.is_err() {
                    tracing::error!("agent reporter panicked; reporting stopped");
                }
            })
    }

    /// Reports every interval until shut down or until every agent handle is dropped.
    pub(crate) async fn run(self) {
        let Self {
            shared,
            mut commands,
            exporter,
            start_unix_ns,
        } = self;
        let exporter = match exporter {
            Some(exporter) => exporter,
            None => match GrpcExporter::new(&shared.config.collector_addrs).and_then(|exporter| {
                match &shared.config.token {
                    Some(token) => exporter.with_token(&token.0),
                    None => Ok(exporter),
                }
            }) {
                Ok(exporter) => Arc::new(exporter),
                Err(error) => {
                    tracing::warn!(%error, "no usable collector address; nothing will be reported");
                    return;
                }
            },
        };
        // Dropped (stopped and joined) when reporting ends; without it, threads drain
        // their rings when full.
        let _ring_drainer = RingDrainer::spawn(Arc::clone(&shared))
            .inspect_err(|error| tracing::warn!(%error, "failed to start the agent ring drainer"))
            .ok();
        let start_unix_ns = start_unix_ns.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos() as u64)
        });
        let mut state = ReporterState {
            pending: PendingReports::new(shared.config.max_pending_bytes),
            shared,
            exporter,
            sequence: 1,
            backoff: Backoff::new(),
            retry_at: None,
            failing: false,
            clock: ReporterClock {
                start: Instant::now(),
                start_unix_ns,
            },
        };
        let mut boundary = next_boundary(state.clock.now_unix_ns());
        loop {
            let boundary_at = state.clock.instant_at(boundary);
            let wake_at = match state.retry_at {
                Some(retry_at) if !state.pending.is_empty() => retry_at.min(boundary_at),
                _ => boundary_at,
            };
            let command = tokio::select! {
                biased;
                command = commands.recv() => Some(command),
                () = tokio::time::sleep_until(wake_at) => None,
            };
            if let Some(command) = command {
                return state.finish(command).await;
            }
            let now_unix_ns = state.clock.now_unix_ns();
            if now_unix_ns >= boundary {
                state.collect(bucket_start(boundary - interval_ns()));
                boundary = next_boundary(now_unix_ns);
                state.retry_at = None;
            }
            if state.pending.is_empty()
                || state
                    .retry_at
                    .is_some_and(|retry_at| Instant::now() < retry_at)
            {
                continue;
            }
            let deliver_until = state.clock.instant_at(boundary);
            let command = tokio::select! {
                biased;
                command = commands.recv() => Some(command),
                _ = tokio::time::timeout_at(deliver_until, state.deliver()) => None,
            };
            if let Some(command) = command {
                return state.finish(command).await;
            }
        }
    }
}

impl ReporterState {
    /// Swaps the buffers and queues the report of `bucket`.
    fn collect(&mut self, bucket: u32) {
        let shared = &*self.shared;
        let epoch = shared.registry.swap();
        let config = &shared.config;
        let mut report = AgentReport {
            service: config.service_name.clone(),
            instance: config.instance.clone(),
            host: config.host.clone(),
            sequence: self.sequence,
            ..Default::default()
        };
        self.sequence += 1;
        let stats = shared.registry.drain(epoch, bucket, &mut report);
        shared
            .counters
            .recorded
            .fetch_add(stats.num_recorded, Ordering::Relaxed);
        shared
            .backtraces_left
            .store(config.max_backtraces, Ordering::Relaxed);
        let spans = std::mem::take(&mut *lock(&shared.kept));
        if !spans.is_empty() {
            report.kept_spans.push(self.resource_spans(spans));
        }
        let process = process::sample();
        let counters = &shared.counters;
        report.heartbeat = Some(Heartbeat {
            time_unix_ms: self.clock.now_unix_ns() / 1_000_000,
            cpu_seconds: process.cpu_seconds,
            rss_bytes: process.rss_bytes,
            threads: process.threads,
            open_fds: process.open_fds,
            recorded: counters.recorded.load(Ordering::Relaxed),
            kept: counters.kept_spans.load(Ordering::Relaxed),
            dropped_spans: counters.dropped_spans.load(Ordering::Relaxed),
            dropped_reports: counters.dropped_reports.load(Ordering::Relaxed),
            queue_depth: self.pending.len() as u64,
            bytes_sent: counters.bytes_sent.load(Ordering::Relaxed),
            overflowed: shared.registry.overflowed(),
        });
        let num_dropped = self.pending.push(report);
        if num_dropped > 0 {
            counters
                .dropped_reports
                .fetch_add(num_dropped as u64, Ordering::Relaxed);
            tracing::debug!(num_dropped, "dropped the oldest undelivered agent reports");
        }
        counters
            .pending_reports
            .store(self.pending.len() as u64, Ordering::Relaxed);
    }

    fn resource_spans(
        &self,
        spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
    ) -> ResourceSpans {
        let config = &self.shared.config;
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string_attribute("service.name", &config.service_name),
                    string_attribute("service.instance.id", &config.instance),
                    string_attribute("host.name", &config.host),
                    string_attribute("telemetry.sdk.name", "caracal-agent"),
                    string_attribute("telemetry.sdk.language", "rust"),
                    string_attribute("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "caracal-agent".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }
    }

    /// Delivers pending reports, oldest first, until the queue is empty or one fails
    /// (which schedules a retry). May be cancelled at any await; a report leaves the
    /// queue only once delivered.
    async fn deliver(&mut self) {
        while let Some(report) = self.pending.front() {
            match self.exporter.export(report).await {
                Ok(()) => {
                    let len = self.pending.pop();
                    let counters = &self.shared.counters;
                    counters.bytes_sent.fetch_add(len as u64, Ordering::Relaxed);
                    counters.reports_sent.fetch_add(1, Ordering::Relaxed);
                    counters
                        .pending_reports
                        .store(self.pending.len() as u64, Ordering::Relaxed);
                    self.backoff.reset();
                    self.retry_at = None;
                    if self.failing {
                        self.failing = false;
                        tracing::info!("collector reachable again; agent reports delivered");
                    }
                }
                Err(error) => {
                    if !self.failing {
                        self.failing = true;
                        tracing::warn!(%error, num_pending = self.pending.len(), "cannot deliver agent reports; holding them and retrying");
                    }
                    self.retry_at = Some(Instant::now() + self.backoff.next_delay());
                    return;
                }
            }
        }
    }

    /// Reports the current partial interval, delivers until the deadline, and answers.
    async fn finish(mut self, command: Option<Command>) {
        let (timeout, reply) = match command {
            Some(Command::Shutdown { timeout, reply }) => (timeout, Some(reply)),
            None => (DROP_FLUSH_TIMEOUT, None),
        };
        let deadline = Instant::now() + timeout;
        self.collect(bucket_start(self.clock.now_unix_ns()));
        self.retry_at = None;
        while !self.pending.is_empty() && Instant::now() < deadline {
            if self.retry_at.is_some() {
                let retry_at = self.retry_at.unwrap_or(deadline).min(deadline);
                tokio::time::sleep_until(retry_at).await;
                continue;
            }
            let _ = tokio::time::timeout_at(deadline, self.deliver()).await;
            if self.retry_at.is_some_and(|retry_at| retry_at >= deadline) {
                break;
            }
        }
        let result = if self.pending.is_empty() {
            Ok(())
        } else {
            Err(Error::ShutdownTimeout {
                num_pending_reports: self.pending.len(),
            })
        };
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use caracal_model::bucket::NANOS_PER_SECOND;

    use super::*;
    use crate::agent::testing;
    use crate::exporter::InMemoryExporter;
    use crate::Agent;

    /// 5 s into the bucket starting at Unix second 1_700_000_000.
    const START_UNIX_NS: u64 = 1_700_000_005 * NANOS_PER_SECOND;
    const FIRST_BUCKET: u32 = 1_700_000_000;

    fn start(
        builder: crate::AgentBuilder,
    ) -> (Agent, InMemoryExporter, tokio::task::JoinHandle<()>) {
        let exporter = InMemoryExporter::new();
        let (agent, reporter) = Agent::build(builder.exporter(exporter.clone()));
        let task = tokio::spawn(reporter.with_start_unix_ns(START_UNIX_NS).run());
        (agent, exporter, task)
    }

    fn count(report: &AgentReport) -> u64 {
        report
            .aggregates
            .iter()
            .map(|aggregate| aggregate.count)
            .sum()
    }

    #[tokio::test(start_paused = true)]
    async fn reports_every_interval_with_the_buffers_swapped() {
        let (agent, exporter, task) = start(testing::builder().sample_ratio(1.0));
        for _ in 0..3 {
            agent.transaction("URL", "GET /").finish();
        }
        agent.gauge("queue", 2.0);
        tokio::time::sleep(Duration::from_secs(6)).await;
        let reports = exporter.take_reports();
        let [first] = reports.as_slice() else {
            panic!("{reports:?}")
        };
        assert_eq!((first.sequence, count(first)), (1, 3));
        assert!(first
            .aggregates
            .iter()
            .all(|aggregate| aggregate.bucket == FIRST_BUCKET));
        assert_eq!(first.kept_spans[0].scope_spans[0].spans.len(), 3);
        assert_eq!(first.metrics.len(), 1);
        assert_eq!(
            (first.service.as_str(), first.instance.as_str()),
            ("test", "test-1")
        );
        let heartbeat = first.heartbeat.as_ref().unwrap();
        assert_eq!(
            (heartbeat.recorded, heartbeat.kept, heartbeat.queue_depth),
            (3, 3, 0)
        );
        assert!(heartbeat.rss_bytes > 0);

        for _ in 0..2 {
            agent.transaction("URL", "GET /").finish();
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let reports = exporter.take_reports();
        let [second, third] = reports.as_slice() else {
            panic!("{reports:?}")
        };
        assert_eq!((second.sequence, count(second)), (2, 2));
        assert!(second
            .aggregates
            .iter()
            .all(|aggregate| aggregate.bucket == FIRST_BUCKET + 10));
        assert!(second.metrics.is_empty());
        assert_eq!(second.heartbeat.as_ref().unwrap().recorded, 5);
        assert!(second.heartbeat.as_ref().unwrap().bytes_sent > 0);
        assert_eq!((third.sequence, count(third)), (3, 0));
        assert!(
            third.heartbeat.is_some(),
            "an idle interval still sends a heartbeat"
        );

        // Dropping the last handle flushes the partial interval and stops the reporter.
        agent.transaction("URL", "GET /").finish();
        drop(agent);
        task.await.unwrap();
        let reports = exporter.take_reports();
        assert_eq!(reports.iter().map(count).collect::<Vec<_>>(), [1]);
        assert_eq!(reports[0].aggregates[0].bucket, FIRST_BUCKET + 30);
    }

    #[tokio::test(start_paused = true)]
    async fn holds_reports_while_failing_then_drops_oldest_and_counts() {
        let one_report = 90;
        let (agent, exporter, task) = start(testing::builder().max_pending_bytes(3 * one_report));
        exporter.set_failing(true);
        for _ in 0..6 {
            agent.transaction("URL", "GET /").finish();
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        assert!(exporter.reports().is_empty());
        let stats = agent.stats();
        assert!(
            stats.dropped_reports >= 1 && stats.pending_reports >= 1,
            "{stats:?}"
        );
        assert_eq!(stats.dropped_reports + stats.pending_reports, 6);

        exporter.set_failing(false);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let reports = exporter.take_reports();
        let sequences: Vec<u64> = reports.iter().map(|report| report.sequence).collect();
        // The report of the recovery interval may push one more out before delivery.
        let first_kept = agent.stats().dropped_reports + 1;
        assert_eq!(
            sequences,
            (first_kept..=7).collect::<Vec<_>>(),
            "oldest dropped, rest in order"
        );
        assert!(reports[..reports.len() - 1]
            .iter()
            .all(|report| count(report) == 1));
        let last = reports.last().unwrap().heartbeat.as_ref().unwrap();
        assert_eq!(
            last.dropped_reports, stats.dropped_reports,
            "drops are reported later"
        );
        assert_eq!(agent.stats().pending_reports, 0);
        drop(agent);
        task.await.unwrap();
    }

    #[test]
    fn delivers_to_a_collector_over_grpc_with_failover() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (collector, address) = runtime.block_on(crate::exporter::fake_collector::start());
        let agent = testing::builder()
            .collector_addrs(["127.0.0.1:1".to_owned(), address.to_string()])
            .sample_ratio(1.0)
            .start();
        {
            let _request = agent.transaction("URL", "GET /");
            agent.transaction("SQL", "postgresql:SELECT").finish();
        }
        agent.shutdown(Duration::from_secs(10)).unwrap();
        let received = lock(&collector.received).clone();
        let [(report, gzip)] = received.as_slice() else {
            panic!("{received:?}")
        };
        assert!(gzip);
        assert_eq!(count(report), 2);
        assert_eq!(report.kept_spans[0].scope_spans[0].spans.len(), 2);
        assert_eq!(agent.stats().reports_sent, 1);
    }

    #[test]
    fn shutdown_flushes_through_the_reporter_thread() {
        let exporter = InMemoryExporter::new();
        let agent = testing::builder().exporter(exporter.clone()).start();
        for _ in 0..4 {
            agent.transaction("URL", "GET /").finish();
        }
        agent.shutdown(Duration::from_secs(5)).unwrap();
        assert_eq!(exporter.reports().iter().map(count).sum::<u64>(), 4);
        assert!(matches!(
            agent.shutdown(Duration::from_secs(1)),
            Err(Error::AlreadyShutDown)
        ));

        let failing = InMemoryExporter::new();
        failing.set_failing(true);
        let agent = testing::builder().exporter(failing).start();
        let result = agent.shutdown(Duration::from_millis(300));
        assert!(
            matches!(
                result,
                Err(Error::ShutdownTimeout {
                    num_pending_reports: 1
                })
            ),
            "{result:?}"
        );
    }

    fn report(sequence: u64, padding: usize) -> AgentReport {
        AgentReport {
            sequence,
            service: "x".repeat(padding),
            ..Default::default()
        }
    }

    #[test]
    fn pending_reports_drop_oldest_first() {
        let one = report(1, 100).encoded_len();
        let mut pending = PendingReports::new(3 * one);
        for sequence in 1..=3 {
            assert_eq!(pending.push(report(sequence, 100)), 0);
        }
        assert_eq!(pending.push(report(4, 100)), 1);
        assert_eq!(pending.push(report(5, 150)), 2);
        let sequences: Vec<_> = pending
            .reports
            .iter()
            .map(|(report, _)| report.sequence)
            .collect();
        assert_eq!(sequences, [4, 5]);
        // A report larger than the bound on its own is still held (the newest always is).
        assert_eq!(pending.push(report(6, 10 * one)), 2);
        assert_eq!(pending.len(), 1);
        assert_eq!(
            pending.pop(),
            pending.num_bytes + report(6, 10 * one).encoded_len()
        );
        assert!(pending.is_empty() && pending.num_bytes == 0);
    }

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<_> = (0..8).map(|_| backoff.next_delay()).collect();
        for (index, delay) in delays.iter().enumerate() {
            let base = (INITIAL_BACKOFF * 2u32.pow(index as u32)).min(MAX_BACKOFF);
            assert!(*delay >= base / 2 && *delay <= base, "{index}: {delay:?}");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= INITIAL_BACKOFF);
    }

    #[test]
    fn boundaries_are_aligned() {
        let second = caracal_model::bucket::NANOS_PER_SECOND;
        assert_eq!(next_boundary(5 * second), 10 * second);
        assert_eq!(next_boundary(10 * second), 20 * second);
        assert_eq!(bucket_start(next_boundary(15 * second) - interval_ns()), 10);
    }
}

//! RED aggregates and dependency edges computed from raw spans.
//!
//! The writer turns every stored span into a compact [`SpanSample`] (interned names, no
//! text), and applies a batch's samples only once the batch is in ClickHouse, so a
//! retried request is never counted twice. [`Aggregator::drain`] produces rows for
//! `span_metrics_input` and `dependency_input`; merging across collectors and time
//! happens in ClickHouse.
//!
//! Dependency edges: a span whose parent belongs to another service is a call from the
//! parent's service to the span's service. Children often arrive before their parents
//! (a server span ends before the client span around it), so both sides wait for each
//! other in two generations of maps that rotate every [`EDGE_WINDOW`]. A client or
//! producer span naming `db.system` or `messaging.system` is also an edge, to that
//! database or queue. A client span naming `peer.service` becomes an edge to that peer
//! only if no span of another service turns up as its child within the window: when the
//! peer is instrumented, the service-to-service edge already counts the call.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use caracal_model::{
    bucket::bucket_start,
    histogram::SparseHistogram,
    span::{SpanKind, StatusCode},
};
use caracal_store::rows::{DependencyRow, SpanMetricsRow};

/// How long one side of a cross-service call waits for the other.
pub const EDGE_WINDOW: Duration = Duration::from_secs(30);

/// Most spans remembered per generation for edge matching; beyond it, a generation
/// rotates early (bounded memory wins over late matches).
pub const MAX_REMEMBERED_SPANS: usize = 500_000;

/// Interned text id.
pub type NameId = u32;

/// Strings seen in spans, interned so aggregation allocates nothing per span.
#[derive(Debug, Default)]
pub struct Interner {
    ids: HashMap<Box<str>, NameId>,
    names: Vec<Box<str>>,
}

impl Interner {
    /// The id of `name`, allocating only the first time it is seen.
    pub fn intern(&mut self, name: &str) -> NameId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.names.len() as NameId;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    /// The text of an id.
    pub fn name(&self, id: NameId) -> &str {
        self.names.get(id as usize).map_or("", |name| name)
    }
}

/// What kind of thing a dependency's child is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChildType {
    /// Another instrumented service.
    Service,
    /// A database (`db.system`).
    Database,
    /// A message system (`messaging.system`).
    Messaging,
    /// An uninstrumented peer (`peer.service`).
    Peer,
}

impl ChildType {
    /// The stored label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Database => "database",
            Self::Messaging => "messaging",
            Self::Peer => "peer",
        }
    }
}

/// The part of a span that aggregation needs.
#[derive(Debug, Clone, Copy)]
pub struct SpanSample {
    /// Tenant.
    pub tenant: NameId,
    /// Service.
    pub service: NameId,
    /// Instance (`service.instance.id`, else `host.name`, else empty).
    pub instance: NameId,
    /// Operation.
    pub operation: NameId,
    /// OTLP kind.
    pub kind: SpanKind,
    /// OTLP status.
    pub status: StatusCode,
    /// Start, Unix nanoseconds.
    pub start_ns: u64,
    /// Duration.
    pub duration_ns: u64,
    /// Span id.
    pub span_id: u64,
    /// Parent span id, 0 for roots.
    pub parent_span_id: u64,
    /// Database, queue or peer this client span calls, if it names one.
    pub remote: Option<(ChildType, NameId)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct MetricKey {
    tenant: NameId,
    bucket: u32,
    service: NameId,
    instance: NameId,
    operation: NameId,
    kind: u8,
    status: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct EdgeKey {
    tenant: NameId,
    bucket: u32,
    parent: NameId,
    child: NameId,
    child_type: ChildType,
}

#[derive(Debug, Default)]
struct Totals {
    count: u64,
    errors: u64,
    sum_ns: u64,
    min_ns: u64,
    max_ns: u64,
    histogram: SparseHistogram,
}

impl Totals {
    fn record(&mut self, duration_ns: u64, is_error: bool) {
        self.min_ns = if self.count == 0 {
            duration_ns
        } else {
            self.min_ns.min(duration_ns)
        };
        self.max_ns = self.max_ns.max(duration_ns);
        self.count += 1;
        self.errors += u64::from(is_error);
        self.sum_ns = self.sum_ns.saturating_add(duration_ns);
        self.histogram.record(duration_ns);
    }
}

/// A child span waiting for its parent.
#[derive(Debug, Clone, Copy)]
struct WaitingChild {
    service: NameId,
    start_ns: u64,
    duration_ns: u64,
    is_error: bool,
}

/// A client call naming `peer.service`, waiting to see whether the peer is instrumented.
#[derive(Debug, Clone, Copy)]
struct PeerCall {
    bucket: u32,
    service: NameId,
    peer: NameId,
    duration_ns: u64,
    is_error: bool,
}

/// Two generations of a map, so entries live between one and two windows.
#[derive(Debug)]
struct Generations<V> {
    current: HashMap<(NameId, u64), V>,
    previous: HashMap<(NameId, u64), V>,
    rotated_at: Instant,
}

impl<V> Generations<V> {
    fn new() -> Self {
        Self {
            current: HashMap::new(),
            previous: HashMap::new(),
            rotated_at: Instant::now(),
        }
    }

    fn remove(&mut self, key: &(NameId, u64)) -> Option<V> {
        self.current
            .remove(key)
            .or_else(|| self.previous.remove(key))
    }

    /// Removes the key from both generations.
    fn remove_all(&mut self, key: &(NameId, u64)) -> (Option<V>, Option<V>) {
        (self.current.remove(key), self.previous.remove(key))
    }

    fn get(&self, key: &(NameId, u64)) -> Option<&V> {
        self.current.get(key).or_else(|| self.previous.get(key))
    }

    /// Inserts; when the current generation is full it rotates early and returns the
    /// entries that expired.
    fn insert(&mut self, key: (NameId, u64), value: V) -> HashMap<(NameId, u64), V> {
        let expired = if self.current.len() >= MAX_REMEMBERED_SPANS {
            self.rotate()
        } else {
            HashMap::new()
        };
        self.current.insert(key, value);
        expired
    }

    /// Rotates when the window has passed; returns the entries that expired.
    fn rotate_if_due(&mut self, now: Instant) -> HashMap<(NameId, u64), V> {
        if now.duration_since(self.rotated_at) >= EDGE_WINDOW {
            self.rotate()
        } else {
            HashMap::new()
        }
    }

    /// Starts a new generation; returns the entries of the one that expired.
    fn rotate(&mut self) -> HashMap<(NameId, u64), V> {
        self.rotated_at = Instant::now();
        std::mem::replace(&mut self.previous, std::mem::take(&mut self.current))
    }

    /// Takes every entry of both generations.
    fn take_all(&mut self) -> impl Iterator<Item = ((NameId, u64), V)> {
        let current = std::mem::take(&mut self.current);
        let previous = std::mem::take(&mut self.previous);
        current.into_iter().chain(previous)
    }
}

/// Aggregates of applied samples, drained into rows on each flush.
#[derive(Debug)]
pub struct Aggregator {
    /// Names used by samples.
    pub interner: Interner,
    metrics: HashMap<MetricKey, Totals>,
    edges: HashMap<EdgeKey, Totals>,
    /// Service of recently seen spans, by (tenant, span id).
    seen: Generations<NameId>,
    /// Children whose parent has not been seen yet, by (tenant, parent span id).
    waiting: Generations<Vec<WaitingChild>>,
    /// Client calls naming `peer.service`, by (tenant, span id).
    peer_calls: Generations<PeerCall>,
}

impl Default for Aggregator {
    fn default() -> Self {
        Self {
            interner: Interner::default(),
            metrics: HashMap::new(),
            edges: HashMap::new(),
            seen: Generations::new(),
            waiting: Generations::new(),
            peer_calls: Generations::new(),
        }
    }
}

impl Aggregator {
    /// Counts one stored span.
    pub fn apply(&mut self, sample: &SpanSample) {
        let is_error = sample.status == StatusCode::Error;
        let bucket = bucket_start(sample.start_ns);
        self.metrics
            .entry(MetricKey {
                tenant: sample.tenant,
                bucket,
                service: sample.service,
                instance: sample.instance,
                operation: sample.operation,
                kind: sample.kind as u8,
                status: sample.status as u8,
            })
            .or_default()
            .record(sample.duration_ns, is_error);

        // This span may be the parent of children that arrived first.
        let mut has_remote_child = false;
        let (current, previous) = self.waiting.remove_all(&(sample.tenant, sample.span_id));
        for child in current.into_iter().chain(previous).flatten() {
            if child.service != sample.service {
                has_remote_child = true;
                self.add_edge(
                    EdgeKey {
                        tenant: sample.tenant,
                        bucket: bucket_start(child.start_ns),
                        parent: sample.service,
                        child: child.service,
                        child_type: ChildType::Service,
                    },
                    child.duration_ns,
                    child.is_error,
                );
            }
        }
        let is_outgoing = matches!(sample.kind, SpanKind::Client | SpanKind::Producer);
        match sample.remote {
            Some((ChildType::Peer, peer)) if is_outgoing && !has_remote_child => {
                let call = PeerCall {
                    bucket,
                    service: sample.service,
                    peer,
                    duration_ns: sample.duration_ns,
                    is_error,
                };
                let expired = self
                    .peer_calls
                    .insert((sample.tenant, sample.span_id), call);
                self.emit_peer_calls(expired);
            }
            Some((child_type, child)) if is_outgoing && child_type != ChildType::Peer => {
                let key = EdgeKey {
                    tenant: sample.tenant,
                    bucket,
                    parent: sample.service,
                    child,
                    child_type,
                };
                self.add_edge(key, sample.duration_ns, is_error);
            }
            _ => {}
        }
        self.seen
            .insert((sample.tenant, sample.span_id), sample.service);
        if sample.parent_span_id == 0 {
            return;
        }
        let parent_key = (sample.tenant, sample.parent_span_id);
        match self.seen.get(&parent_key).copied() {
            Some(parent_service) => {
                if parent_service != sample.service {
                    // The parent's peer call reached an instrumented service.
                    self.peer_calls.remove(&parent_key);
                    let key = EdgeKey {
                        tenant: sample.tenant,
                        bucket,
                        parent: parent_service,
                        child: sample.service,
                        child_type: ChildType::Service,
                    };
                    self.add_edge(key, sample.duration_ns, is_error);
                }
            }
            None => {
                let child = WaitingChild {
                    service: sample.service,
                    start_ns: sample.start_ns,
                    duration_ns: sample.duration_ns,
                    is_error,
                };
                if let Some(children) = self.waiting.current.get_mut(&parent_key) {
                    children.push(child);
                } else {
                    let _expired = self.waiting.insert(parent_key, vec![child]);
                }
            }
        }
    }

    /// Peer calls whose window passed without an instrumented child are edges to the peer.
    fn emit_peer_calls(&mut self, calls: impl IntoIterator<Item = ((NameId, u64), PeerCall)>) {
        for ((tenant, _), call) in calls {
            let key = EdgeKey {
                tenant,
                bucket: call.bucket,
                parent: call.service,
                child: call.peer,
                child_type: ChildType::Peer,
            };
            self.add_edge(key, call.duration_ns, call.is_error);
        }
    }

    fn add_edge(&mut self, key: EdgeKey, duration_ns: u64, is_error: bool) {
        self.edges
            .entry(key)
            .or_default()
            .record(duration_ns, is_error);
    }

    /// Takes every aggregate as rows, leaving the aggregator empty. Edge matching state
    /// is kept and expires by age, unless `is_final` (at shutdown), when pending peer
    /// calls become edges at once.
    pub fn drain(&mut self, is_final: bool) -> (Vec<SpanMetricsRow>, Vec<DependencyRow>) {
        let now = Instant::now();
        self.seen.rotate_if_due(now);
        self.waiting.rotate_if_due(now);
        let expired = self.peer_calls.rotate_if_due(now);
        self.emit_peer_calls(expired);
        if is_final {
            let pending: Vec<_> = self.peer_calls.take_all().collect();
            self.emit_peer_calls(pending);
        }
        let interner = &self.interner;
        let metrics = self
            .metrics
            .drain()
            .map(|(key, totals)| {
                let (mut hist_keys, mut hist_counts) = (Vec::new(), Vec::new());
                totals
                    .histogram
                    .write_sparse(&mut hist_keys, &mut hist_counts);
                SpanMetricsRow {
                    tenant: interner.name(key.tenant).to_owned(),
                    bucket: key.bucket,
                    service: interner.name(key.service).to_owned(),
                    instance: interner.name(key.instance).to_owned(),
                    operation: interner.name(key.operation).to_owned(),
                    kind: key.kind,
                    status: key.status,
                    count: totals.count,
                    errors: totals.errors,
                    sum_ns: totals.sum_ns,
                    min_ns: totals.min_ns,
                    max_ns: totals.max_ns,
                    hist_keys,
                    hist_counts,
                }
            })
            .collect();
        let edges = self
            .edges
            .drain()
            .map(|(key, totals)| {
                let (mut hist_keys, mut hist_counts) = (Vec::new(), Vec::new());
                totals
                    .histogram
                    .write_sparse(&mut hist_keys, &mut hist_counts);
                DependencyRow {
                    tenant: interner.name(key.tenant).to_owned(),
                    bucket: key.bucket,
                    parent: interner.name(key.parent).to_owned(),
                    child: interner.name(key.child).to_owned(),
                    child_type: key.child_type.label().to_owned(),
                    calls: totals.count,
                    errors: totals.errors,
                    sum_ns: totals.sum_ns,
                    hist_keys,
                    hist_counts,
                }
            })
            .collect();
        (metrics, edges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(
        aggregator: &mut Aggregator,
        service: &str,
        kind: SpanKind,
        span_id: u64,
        parent: u64,
    ) -> SpanSample {
        SpanSample {
            tenant: aggregator.interner.intern("t"),
            service: aggregator.interner.intern(service),
            instance: aggregator.interner.intern(&format!("{service}-1")),
            operation: aggregator.interner.intern("op"),
            kind,
            status: StatusCode::Unset,
            start_ns: 1_700_000_000_000_000_000,
            duration_ns: 1_000,
            span_id,
            parent_span_id: parent,
            remote: None,
        }
    }

    fn edges(aggregator: &mut Aggregator) -> Vec<(String, String, String, u64)> {
        let (_, rows) = aggregator.drain(true);
        let mut edges: Vec<_> = rows
            .into_iter()
            .map(|row| (row.parent, row.child, row.child_type, row.calls))
            .collect();
        edges.sort();
        edges
    }

    #[test]
    fn edges_match_in_either_order() {
        let mut aggregator = Aggregator::default();
        // Child first (usual for server spans), then parent.
        let child = sample(&mut aggregator, "orders", SpanKind::Server, 2, 1);
        aggregator.apply(&child);
        let parent = sample(&mut aggregator, "gateway", SpanKind::Client, 1, 0);
        aggregator.apply(&parent);
        // Parent first, then child.
        let parent = sample(&mut aggregator, "orders", SpanKind::Client, 3, 2);
        aggregator.apply(&parent);
        let child = sample(&mut aggregator, "payments", SpanKind::Server, 4, 3);
        aggregator.apply(&child);
        // Same-service parent: no edge.
        let internal = sample(&mut aggregator, "payments", SpanKind::Internal, 5, 4);
        aggregator.apply(&internal);
        // Database call.
        let mut db = sample(&mut aggregator, "payments", SpanKind::Client, 6, 4);
        db.remote = Some((
            ChildType::Database,
            aggregator.interner.intern("postgresql"),
        ));
        aggregator.apply(&db);
        assert_eq!(
            edges(&mut aggregator),
            vec![
                ("gateway".into(), "orders".into(), "service".into(), 1),
                ("orders".into(), "payments".into(), "service".into(), 1),
                ("payments".into(), "postgresql".into(), "database".into(), 1),
            ]
        );
    }

    #[test]
    fn peer_service_is_an_edge_only_when_the_peer_is_not_instrumented() {
        let mut aggregator = Aggregator::default();
        let peer = aggregator.interner.intern("orders");
        let mut instrumented = sample(&mut aggregator, "gateway", SpanKind::Client, 1, 0);
        instrumented.remote = Some((ChildType::Peer, peer));
        aggregator.apply(&instrumented);
        let server = sample(&mut aggregator, "orders", SpanKind::Server, 2, 1);
        aggregator.apply(&server);
        let external = aggregator.interner.intern("stripe");
        let mut uninstrumented = sample(&mut aggregator, "gateway", SpanKind::Client, 3, 0);
        uninstrumented.remote = Some((ChildType::Peer, external));
        aggregator.apply(&uninstrumented);
        // Child first, then the client span naming its peer.
        let early_child = sample(&mut aggregator, "orders", SpanKind::Server, 5, 4);
        aggregator.apply(&early_child);
        let mut late_parent = sample(&mut aggregator, "gateway", SpanKind::Client, 4, 0);
        late_parent.remote = Some((ChildType::Peer, peer));
        aggregator.apply(&late_parent);
        assert_eq!(
            edges(&mut aggregator),
            vec![
                ("gateway".into(), "orders".into(), "service".into(), 2),
                ("gateway".into(), "stripe".into(), "peer".into(), 1),
            ]
        );
    }

    #[test]
    fn children_waiting_across_a_rotation_all_match() {
        let mut aggregator = Aggregator::default();
        let first = sample(&mut aggregator, "x", SpanKind::Server, 2, 1);
        aggregator.apply(&first);
        aggregator.waiting.rotate();
        aggregator.seen.rotate();
        let second = sample(&mut aggregator, "x", SpanKind::Server, 3, 1);
        aggregator.apply(&second);
        let parent = sample(&mut aggregator, "g", SpanKind::Client, 1, 0);
        aggregator.apply(&parent);
        assert_eq!(
            edges(&mut aggregator),
            vec![("g".into(), "x".into(), "service".into(), 2)]
        );
    }

    #[test]
    fn metrics_count_errors_and_extremes() {
        let mut aggregator = Aggregator::default();
        for (duration, status) in [
            (10, StatusCode::Unset),
            (30, StatusCode::Unset),
            (20, StatusCode::Error),
        ] {
            let mut one = sample(&mut aggregator, "svc", SpanKind::Server, duration, 0);
            one.duration_ns = duration;
            one.status = status;
            aggregator.apply(&one);
        }
        let (mut metrics, _) = aggregator.drain(false);
        metrics.sort_by_key(|row| row.status);
        assert_eq!(metrics.len(), 2);
        assert_eq!(
            (
                metrics[0].count,
                metrics[0].min_ns,
                metrics[0].max_ns,
                metrics[0].errors
            ),
            (2, 10, 30, 0)
        );
        assert_eq!((metrics[1].count, metrics[1].errors), (1, 1));
        assert_eq!(metrics[0].hist_counts.iter().sum::<u64>(), 2);
        assert!(aggregator.drain(false).0.is_empty());
    }

    #[test]
    fn metrics_are_kept_apart_per_instance() {
        let mut aggregator = Aggregator::default();
        for (instance, duration) in [("a", 10), ("b", 20), ("a", 30)] {
            let mut one = sample(&mut aggregator, "svc", SpanKind::Server, duration, 0);
            one.instance = aggregator.interner.intern(instance);
            one.duration_ns = duration;
            aggregator.apply(&one);
        }
        let (mut metrics, _) = aggregator.drain(false);
        metrics.sort_by(|left, right| left.instance.cmp(&right.instance));
        let rows: Vec<_> = metrics
            .iter()
            .map(|row| (row.instance.as_str(), row.count, row.min_ns, row.max_ns))
            .collect();
        assert_eq!(rows, [("a", 2, 10, 30), ("b", 1, 20, 20)]);
    }
}

//! The aggregation tables: interned keys, two buffers, and the swap between them.
//!
//! A [`Registry`] holds three tables (operations, events, metrics). Each entry is
//! interned once, behind an [`Arc`], and carries two buffers of totals, one per
//! reporting interval parity. The application records into the *active* buffer; at each
//! interval boundary the reporter [swaps](Registry::swap) the active index, then
//! [drains](Registry::drain) the now idle buffer into an [`AgentReport`] and clears it,
//! keeping its allocations (histogram bucket tables, table capacity).
//!
//! Hot path, for a known key: a hash lookup by borrowed `&str` key under a shared read
//! lock of the tables (never exclusive; skipped altogether with an
//! [`OperationHandle`](crate::OperationHandle) or the thread's operation cache). An
//! ended span is then pushed into the recording thread's span ring
//! ([`Registry::record_via`]) as `(slot, status, duration)`: each interned operation
//! has a slot number, and the aggregator ([`Registry::drain_rings`], on the reporter's
//! thread every few milliseconds and before every swap) resolves it and adds the span
//! under the entry's per-buffer mutex, which therefore only the aggregator and rare
//! direct recorders take. Events and metrics take the mutex (or an atomic add)
//! directly. Nothing is allocated once every histogram has seen the buckets of its
//! values. A new key takes the write lock once to insert.
//!
//! **Architecture invariant:** once [`Registry::drain`] has read a buffer, nothing is
//! written to it until it becomes active again. Events and metrics read the active
//! index under the tables' read lock, which the swap takes exclusively. Operations
//! (the hot path) read an epoch counter instead and check, under the entry's mutex,
//! that the drain of that epoch has not happened yet; if it has, they retry with the
//! new epoch.
//!
//! Cardinality is capped per table: once a table holds `max_keys` entries, unknown keys
//! are folded into an overflow entry named [`OVERFLOW_NAME`] (one per span kind, event
//! status or metric kind), and [`Registry::overflowed`] counts the folded recordings.
//! Entries idle for [`EVICT_AFTER_INTERVALS`] intervals are removed. An evicted
//! operation's slot is freed only by the next ring drain, since a ring may still hold
//! a span of it; such a span is recorded into the operation interned anew.

use std::collections::HashMap as StdHashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError,
};

use caracal_model::histogram::LatencyHistogram;
use caracal_model::span::{SpanKind, StatusCode};
use caracal_proto::{AgentReport, Aggregate, EventCount, MetricKind, MetricValue};
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::histogram::BucketCounts;
use crate::mapping::PeerType;

/// Name of the entries that over-cap keys are folded into.
pub(crate) const OVERFLOW_NAME: &str = "other";
/// Intervals without a recording after which an entry is forgotten.
pub(crate) const EVICT_AFTER_INTERVALS: u32 = 30;
/// Buffers per entry: the active one and the one being drained.
const NUM_BUFFERS: usize = 2;
/// OTLP status codes: unset, ok, error.
const NUM_STATUSES: usize = 3;
/// Threshold meaning "no operation is slow".
const NO_THRESHOLD: u64 = u64::MAX;
/// Quantile of the previous interval used as the learned slow threshold.
const LEARNED_QUANTILE: f64 = 0.99;

/// Epoch of the first interval.
const FIRST_EPOCH: u64 = 1;

/// The buffer an epoch records into.
fn buffer_of(epoch: u64) -> usize {
    (epoch % NUM_BUFFERS as u64) as usize
}

/// String equality for the short names of the hot path, inline and without a byte loop
/// (a `memcmp` call per field costs more than the comparison itself): whole words, the
/// last one overlapping the one before it.
#[inline]
pub(crate) fn same_text(left: &str, right: &str) -> bool {
    let (left, right) = (left.as_bytes(), right.as_bytes());
    let len = left.len();
    if len != right.len() {
        return false;
    }
    match len {
        8.. => {
            let last = len - 8;
            let mut at = 0;
            while at < last {
                if word::<8>(left, at) != word::<8>(right, at) {
                    return false;
                }
                at += 8;
            }
            word::<8>(left, last) == word::<8>(right, last)
        }
        4..=7 => {
            word::<4>(left, 0) == word::<4>(right, 0)
                && word::<4>(left, len - 4) == word::<4>(right, len - 4)
        }
        2..=3 => {
            word::<2>(left, 0) == word::<2>(right, 0)
                && word::<2>(left, len - 2) == word::<2>(right, len - 2)
        }
        _ => left.first() == right.first(),
    }
}

/// The `WIDTH` bytes of `bytes` from `at` as a number (zero past the end, which the
/// callers never reach), for comparisons.
#[inline(always)]
fn word<const WIDTH: usize>(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(part) = bytes.get(at..at + WIDTH) {
        word[..WIDTH].copy_from_slice(part);
    }
    u64::from_ne_bytes(word)
}

/// Locks a mutex, ignoring poisoning (totals stay meaningful after a panic elsewhere).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// An interned table entry.
trait Entry {
    /// The borrowed form of the entry's key, used for lookups.
    type Key<'a>: Hash + Copy;
    /// References the registry itself holds to a live entry (the table's, and for
    /// operations the slot's): more means someone outside uses it.
    const REGISTRY_REFERENCES: usize = 1;

    /// Builds the entry of a new key (allocates its strings).
    fn new(key: Self::Key<'_>) -> Self;
    /// Whether the entry is the one of `key`.
    fn matches(&self, key: Self::Key<'_>) -> bool;
    /// Hash of the entry's own key.
    fn rehash(&self, hasher: &DefaultHashBuilder) -> u64;
    /// The overflow key that replaces `key` once the table is full.
    fn overflow<'a>(key: Self::Key<'a>) -> Self::Key<'a>;
    /// Intervals in a row the entry recorded nothing.
    fn idle_intervals(&self) -> &AtomicU32;
    /// Whether the active buffer holds nothing.
    fn is_empty(&self, active: usize) -> bool;
}

/// One table of interned entries.
#[derive(Debug)]
struct Table<T> {
    entries: HashTable<Arc<T>>,
}

impl<T: Entry> Table<T> {
    fn new() -> Self {
        Self {
            entries: HashTable::new(),
        }
    }

    fn find(&self, hash: u64, key: T::Key<'_>) -> Option<&Arc<T>> {
        self.entries.find(hash, |entry| entry.matches(key))
    }

    fn insert(&mut self, hasher: &DefaultHashBuilder, hash: u64, entry: T) -> &Arc<T> {
        self.entries
            .insert_unique(hash, Arc::new(entry), |entry| entry.rehash(hasher))
            .into_mut()
    }
}

/// Running totals of one operation, status and buffer.
#[derive(Debug, Default)]
struct Totals {
    count: u64,
    sum_ns: u64,
    min_ns: u64,
    max_ns: u64,
    /// Allocated at the first recording and kept (cleared) from then on.
    histogram: BucketCounts,
    /// The last epoch drained from this buffer; a recorder holding that epoch (or an
    /// older one) is late and must record into the current buffer instead.
    drained_epoch: u64,
}

impl Totals {
    fn record(&mut self, nanos: u64) {
        if self.count == 0 {
            self.min_ns = nanos;
            self.max_ns = nanos;
        } else {
            self.min_ns = self.min_ns.min(nanos);
            self.max_ns = self.max_ns.max(nanos);
        }
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(nanos);
        self.histogram.record(nanos);
    }

    /// Zeroes the totals; the histogram was drained already.
    fn clear(&mut self) {
        self.count = 0;
        self.sum_ns = 0;
        self.min_ns = 0;
        self.max_ns = 0;
    }
}

/// The borrowed key of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct OperationKey<'a> {
    /// OTLP span kind.
    pub(crate) kind: SpanKind,
    /// CAT type (empty for OpenTelemetry spans).
    pub(crate) span_type: &'a str,
    /// Operation name.
    pub(crate) name: &'a str,
    /// What a client span calls; empty otherwise.
    pub(crate) peer: &'a str,
    /// What `peer` is.
    pub(crate) peer_type: PeerType,
}

/// An interned operation: its identity, slow threshold, and totals per buffer and status.
#[derive(Debug)]
pub(crate) struct Operation {
    pub(crate) kind: SpanKind,
    pub(crate) span_type: Box<str>,
    pub(crate) name: Box<str>,
    pub(crate) peer: Box<str>,
    pub(crate) peer_type: PeerType,
    /// Durations above this many nanoseconds make a trace slow.
    slow_threshold_ns: AtomicU64,
    idle_intervals: AtomicU32,
    /// Index in the registry's slots, which is how span rings name the operation
    /// (set while the tables are locked for the insertion, before anyone else sees it).
    slot: AtomicU32,
    /// Evicted from the table: rings may still name it until their next drain.
    retired: AtomicBool,
    totals: [[Mutex<Totals>; NUM_STATUSES]; NUM_BUFFERS],
}

impl Operation {
    fn key(&self) -> OperationKey<'_> {
        OperationKey {
            kind: self.kind,
            span_type: &self.span_type,
            name: &self.name,
            peer: &self.peer,
            peer_type: self.peer_type,
        }
    }

    /// Whether this is the operation of `key` (cheapest comparisons first).
    pub(crate) fn matches_key(&self, key: OperationKey<'_>) -> bool {
        self.kind == key.kind
            && self.peer_type == key.peer_type
            && same_text(&self.name, key.name)
            && same_text(&self.span_type, key.span_type)
            && same_text(&self.peer, key.peer)
    }

    /// How a [`RecordedSpan`] names this operation.
    #[inline]
    pub(crate) fn slot(&self) -> u32 {
        self.slot.load(Ordering::Relaxed)
    }

    /// Whether a span of this operation lasting `nanos` is slow.
    pub(crate) fn is_slow(&self, nanos: u64) -> bool {
        nanos > self.slow_threshold_ns.load(Ordering::Relaxed)
    }

    /// The current slow threshold, if any.
    #[cfg(test)]
    pub(crate) fn slow_threshold_ns(&self) -> Option<u64> {
        let threshold = self.slow_threshold_ns.load(Ordering::Relaxed);
        (threshold != NO_THRESHOLD).then_some(threshold)
    }
}

impl Entry for Operation {
    type Key<'a> = OperationKey<'a>;
    const REGISTRY_REFERENCES: usize = 2;

    fn new(key: OperationKey<'_>) -> Self {
        Self {
            kind: key.kind,
            span_type: key.span_type.into(),
            name: key.name.into(),
            peer: key.peer.into(),
            peer_type: key.peer_type,
            slow_threshold_ns: AtomicU64::new(NO_THRESHOLD),
            idle_intervals: AtomicU32::new(0),
            slot: AtomicU32::new(u32::MAX),
            retired: AtomicBool::new(false),
            totals: Default::default(),
        }
    }

    fn matches(&self, key: OperationKey<'_>) -> bool {
        self.matches_key(key)
    }

    fn rehash(&self, hasher: &DefaultHashBuilder) -> u64 {
        hasher.hash_one(self.key())
    }

    fn overflow<'a>(key: Self::Key<'a>) -> Self::Key<'a> {
        OperationKey {
            kind: key.kind,
            span_type: "",
            name: OVERFLOW_NAME,
            peer: "",
            peer_type: PeerType::None,
        }
    }

    fn idle_intervals(&self) -> &AtomicU32 {
        &self.idle_intervals
    }

    fn is_empty(&self, active: usize) -> bool {
        self.totals[active]
            .iter()
            .all(|totals| lock(totals).count == 0)
    }
}

/// The borrowed key of an event counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct EventKey<'a> {
    event_type: &'a str,
    name: &'a str,
    status: u8,
}

/// An interned event counter.
#[derive(Debug)]
struct EventCounter {
    event_type: Box<str>,
    name: Box<str>,
    status: u8,
    idle_intervals: AtomicU32,
    counts: [AtomicU64; NUM_BUFFERS],
}

impl Entry for EventCounter {
    type Key<'a> = EventKey<'a>;

    fn new(key: EventKey<'_>) -> Self {
        Self {
            event_type: key.event_type.into(),
            name: key.name.into(),
            status: key.status,
            idle_intervals: AtomicU32::new(0),
            counts: Default::default(),
        }
    }

    fn matches(&self, key: EventKey<'_>) -> bool {
        *self.event_type == *key.event_type && *self.name == *key.name && self.status == key.status
    }

    fn rehash(&self, hasher: &DefaultHashBuilder) -> u64 {
        hasher.hash_one(EventKey {
            event_type: &self.event_type,
            name: &self.name,
            status: self.status,
        })
    }

    fn overflow<'a>(key: Self::Key<'a>) -> Self::Key<'a> {
        EventKey {
            event_type: OVERFLOW_NAME,
            name: OVERFLOW_NAME,
            status: key.status,
        }
    }

    fn idle_intervals(&self) -> &AtomicU32 {
        &self.idle_intervals
    }

    fn is_empty(&self, active: usize) -> bool {
        self.counts[active].load(Ordering::Relaxed) == 0
    }
}

/// The borrowed key of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct MetricKey<'a> {
    name: &'a str,
    kind: MetricKind,
}

/// Sum (or last value) and number of recordings of one metric and buffer.
#[derive(Debug, Default)]
struct MetricTotals {
    value: f64,
    count: u64,
}

/// An interned metric.
#[derive(Debug)]
struct Metric {
    name: Box<str>,
    kind: MetricKind,
    idle_intervals: AtomicU32,
    totals: [Mutex<MetricTotals>; NUM_BUFFERS],
}

impl Entry for Metric {
    type Key<'a> = MetricKey<'a>;

    fn new(key: MetricKey<'_>) -> Self {
        Self {
            name: key.name.into(),
            kind: key.kind,
            idle_intervals: AtomicU32::new(0),
            totals: Default::default(),
        }
    }

    fn matches(&self, key: MetricKey<'_>) -> bool {
        *self.name == *key.name && self.kind == key.kind
    }

    fn rehash(&self, hasher: &DefaultHashBuilder) -> u64 {
        hasher.hash_one(MetricKey {
            name: &self.name,
            kind: self.kind,
        })
    }

    fn overflow<'a>(key: Self::Key<'a>) -> Self::Key<'a> {
        MetricKey {
            name: OVERFLOW_NAME,
            kind: key.kind,
        }
    }

    fn idle_intervals(&self) -> &AtomicU32 {
        &self.idle_intervals
    }

    fn is_empty(&self, active: usize) -> bool {
        lock(&self.totals[active]).count == 0
    }
}

/// Everything behind the tables lock.
#[derive(Debug)]
struct Tables {
    /// Index of the buffer the application records into.
    active: usize,
    operations: Table<Operation>,
    events: Table<EventCounter>,
    metrics: Table<Metric>,
}

/// Picks one table out of [`Tables`].
trait Select<T> {
    fn table(tables: &Tables) -> &Table<T>;
    fn table_mut(tables: &mut Tables) -> &mut Table<T>;
}

macro_rules! select {
    ($entry:ty, $field:ident) => {
        impl Select<$entry> for Tables {
            fn table(tables: &Tables) -> &Table<$entry> {
                &tables.$field
            }
            fn table_mut(tables: &mut Tables) -> &mut Table<$entry> {
                &mut tables.$field
            }
        }
    };
}

select!(Operation, operations);
select!(EventCounter, events);
select!(Metric, metrics);

/// How slow thresholds are set.
#[derive(Debug, Clone, Default)]
pub(crate) struct ThresholdConfig {
    /// Fixed thresholds by operation name, nanoseconds; never learned.
    pub(crate) configured_ns: StdHashMap<String, u64>,
    /// Recordings an interval needs before its p99 becomes the learned threshold.
    pub(crate) learn_min_count: u64,
}

/// A span that ended on an application thread, on its way to the aggregator, packed in
/// one word so that a ring push moves a register: the operation's
/// [slot](Operation::slot) in the low [`SLOT_BITS`], the status in the next two bits,
/// the duration in nanoseconds in the top [`NANOS_BITS`]. A span that does not fit (a
/// duration over 18 minutes, a slot beyond 4 million) is recorded directly instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordedSpan(u64);

/// Bits of a [`RecordedSpan`] holding the slot.
const SLOT_BITS: u32 = 22;
/// Bits of a [`RecordedSpan`] holding the slot and the status: the aggregation key.
const KEY_BITS: u32 = SLOT_BITS + 2;
/// Bits of a [`RecordedSpan`] holding the duration.
const NANOS_BITS: u32 = u64::BITS - KEY_BITS;

impl RecordedSpan {
    #[inline]
    fn new(slot: u32, status: StatusCode, nanos: u64) -> Option<Self> {
        (slot >> SLOT_BITS == 0 && nanos >> NANOS_BITS == 0).then_some(Self(
            nanos << KEY_BITS | (status as u64) << SLOT_BITS | u64::from(slot),
        ))
    }

    fn slot(self) -> usize {
        (self.0 & ((1 << SLOT_BITS) - 1)) as usize
    }

    fn status(self) -> StatusCode {
        match (self.0 >> SLOT_BITS) & 0b11 {
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }

    fn nanos(self) -> u64 {
        self.0 >> KEY_BITS
    }

    /// Whether both spans are of the same operation and status.
    fn same_key(self, other: Self) -> bool {
        (self.0 ^ other.0) & ((1 << KEY_BITS) - 1) == 0
    }
}

/// The sending end of a span ring: one per recording thread and agent.
pub(crate) type SpanRing = rtrb::Producer<RecordedSpan>;

/// Spans a ring holds (64 KiB); when it is full (the drainer is late), the thread drains
/// the rings itself, or records directly if the drainer is draining them.
pub(crate) const RING_CAPACITY: usize = 8_192;

/// Operations by slot, for the aggregator to resolve the spans of the rings.
#[derive(Debug, Default)]
struct Slots {
    operations: Vec<Option<Arc<Operation>>>,
    free: Vec<u32>,
    /// Slots of evicted operations: freed by the next ring drain, once no ring can
    /// still name them.
    retired: Vec<u32>,
}

impl Slots {
    fn assign(&mut self, operation: &Arc<Operation>) {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.operations.push(None);
                u32::try_from(self.operations.len() - 1).unwrap_or(u32::MAX)
            }
        };
        if let Some(entry) = self.operations.get_mut(slot as usize) {
            *entry = Some(Arc::clone(operation));
        }
        operation.slot.store(slot, Ordering::Relaxed);
    }
}

/// The aggregation tables of one agent.
#[derive(Debug)]
pub(crate) struct Registry {
    tables: RwLock<Tables>,
    slots: Mutex<Slots>,
    /// The receiving ends of the threads' span rings.
    rings: Mutex<Vec<rtrb::Consumer<RecordedSpan>>>,
    hasher: DefaultHashBuilder,
    max_keys: usize,
    thresholds: ThresholdConfig,
    overflowed: AtomicU64,
    /// Number of the current interval; its parity is the active buffer. Starts at 1 so
    /// that 0 means "never drained".
    epoch: AtomicU64,
}

/// What one drain produced besides the report's rows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DrainStats {
    /// Transactions and spans recorded in the drained interval.
    pub(crate) num_recorded: u64,
    /// Entries forgotten because they were idle.
    pub(crate) num_evicted: usize,
}

impl Registry {
    /// Empty tables holding at most `max_keys` keys each (plus overflow entries).
    pub(crate) fn new(max_keys: usize, thresholds: ThresholdConfig) -> Self {
        Self {
            tables: RwLock::new(Tables {
                active: buffer_of(FIRST_EPOCH),
                operations: Table::new(),
                events: Table::new(),
                metrics: Table::new(),
            }),
            slots: Mutex::default(),
            rings: Mutex::default(),
            hasher: DefaultHashBuilder::default(),
            max_keys,
            thresholds,
            overflowed: AtomicU64::new(0),
            epoch: AtomicU64::new(FIRST_EPOCH),
        }
    }

    /// Recordings folded into an overflow entry since start.
    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Finds or interns the entry of `key`, then applies `apply` to it and the active
    /// buffer index while the tables are still locked (shared, unless the key is new).
    /// `init` runs once on a newly interned entry.
    fn with_entry<T, R>(
        &self,
        key: T::Key<'_>,
        init: impl FnOnce(&Arc<T>),
        apply: impl FnOnce(&Arc<T>, usize) -> R,
    ) -> R
    where
        T: Entry,
        Tables: Select<T>,
    {
        let hash = self.hasher.hash_one(key);
        let overflow = T::overflow(key);
        {
            let tables = read(&self.tables);
            let table = <Tables as Select<T>>::table(&tables);
            if let Some(entry) = table.find(hash, key) {
                return apply(entry, tables.active);
            }
            if table.entries.len() >= self.max_keys {
                self.overflowed.fetch_add(1, Ordering::Relaxed);
                if let Some(entry) = table.find(self.hasher.hash_one(overflow), overflow) {
                    return apply(entry, tables.active);
                }
            }
        }
        let mut tables = write(&self.tables);
        let active = tables.active;
        let table = <Tables as Select<T>>::table_mut(&mut tables);
        // Another thread may have inserted the key, or filled the table, meanwhile.
        let (key, hash) = if table.find(hash, key).is_none() && table.entries.len() >= self.max_keys
        {
            (overflow, self.hasher.hash_one(overflow))
        } else {
            (key, hash)
        };
        let entry = match table.find(hash, key).cloned() {
            Some(entry) => entry,
            None => {
                let entry = table.insert(&self.hasher, hash, T::new(key));
                init(entry);
                Arc::clone(entry)
            }
        };
        apply(&entry, active)
    }

    /// The interned operation of `key` (or its overflow entry).
    pub(crate) fn operation(&self, key: OperationKey<'_>) -> Arc<Operation> {
        self.with_entry::<Operation, _>(
            key,
            |operation| {
                if let Some(threshold) = self.thresholds.configured_ns.get(&*operation.name) {
                    operation
                        .slow_threshold_ns
                        .store(*threshold, Ordering::Relaxed);
                }
                lock(&self.slots).assign(operation);
            },
            |operation, _| Arc::clone(operation),
        )
    }

    /// Adds one span of `operation` to the active buffer.
    ///
    /// Lock-free apart from the entry's own mutex: the buffer is picked from the epoch,
    /// and a recorder that raced with a swap (its buffer was drained after it read the
    /// epoch) retries with the new epoch, so nothing is lost or reported late.
    pub(crate) fn record_operation(&self, operation: &Operation, status: StatusCode, nanos: u64) {
        self.record_run(operation, status, nanos, || None);
    }

    /// Adds a run of spans of one operation and status (`first`, then what `next`
    /// yields) under one lock of the entry.
    fn record_run(
        &self,
        operation: &Operation,
        status: StatusCode,
        first: u64,
        mut next: impl FnMut() -> Option<u64>,
    ) {
        loop {
            let epoch = self.epoch.load(Ordering::Acquire);
            let mut totals = lock(&operation.totals[buffer_of(epoch)][status as usize]);
            if totals.drained_epoch < epoch {
                totals.record(first);
                while let Some(nanos) = next() {
                    totals.record(nanos);
                }
                return;
            }
        }
    }

    /// A new span ring for a recording thread (see [`Registry::record_via`]).
    ///
    /// Drains the rings first, which also drops those of threads that have ended: a
    /// thread-per-request server adds a ring per request thread, and without a reporter
    /// draining (no collector address, or after shutdown) nothing else would.
    pub(crate) fn new_ring(&self) -> SpanRing {
        let (producer, consumer) = rtrb::RingBuffer::new(RING_CAPACITY);
        let mut rings = lock(&self.rings);
        self.drain_locked(&mut rings);
        rings.push(consumer);
        producer
    }

    /// Records one span of `operation` through the thread's `ring`: a few plain stores,
    /// no lock, nothing shared written but the ring's own tail. The aggregator adds it
    /// to the active buffer at its next [drain](Registry::drain_rings); a full ring
    /// (the aggregator is late) is handled by [`Registry::record_when_full`].
    #[inline]
    pub(crate) fn record_via(
        &self,
        ring: &mut SpanRing,
        operation: &Operation,
        status: StatusCode,
        nanos: u64,
    ) {
        match RecordedSpan::new(operation.slot(), status, nanos) {
            Some(span) => {
                if let Err(rtrb::PushError::Full(span)) = ring.push(span) {
                    self.record_when_full(ring, operation, span);
                }
            }
            None => self.record_unpackable(operation, status, nanos),
        }
    }

    /// Records a span too long (or of a slot too high) for a [`RecordedSpan`].
    #[cold]
    #[inline(never)]
    fn record_unpackable(&self, operation: &Operation, status: StatusCode, nanos: u64) {
        self.record_operation(operation, status, nanos);
    }

    /// The ring of this thread is full: drain every ring here and now (once per ring's
    /// worth of spans, when the thread records faster than the reporter drains), unless
    /// the reporter is draining, in which case the span is recorded directly.
    #[cold]
    #[inline(never)]
    fn record_when_full(&self, ring: &mut SpanRing, operation: &Operation, span: RecordedSpan) {
        // A lock poisoned by a panic elsewhere is used all the same, as everywhere in
        // the agent (see [`lock`]).
        let rings = match self.rings.try_lock() {
            Ok(rings) => Some(rings),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        if let Some(mut rings) = rings {
            self.drain_locked(&mut rings);
            drop(rings);
            if ring.push(span).is_ok() {
                return;
            }
        }
        self.record_operation(operation, span.status(), span.nanos());
    }

    /// Adds every span waiting in the rings to the active buffer, and frees the slots
    /// of operations evicted before this drain (no ring can name them any more: an
    /// operation is evicted only once nobody outside the registry holds it, and its
    /// spans were pushed before that). Runs every few milliseconds on the reporter's
    /// thread, and before every [swap](Registry::swap).
    ///
    /// Returns the most spans one ring held.
    pub(crate) fn drain_rings(&self) -> usize {
        self.drain_locked(&mut lock(&self.rings))
    }

    fn drain_locked(&self, rings: &mut Vec<rtrb::Consumer<RecordedSpan>>) -> usize {
        let mut orphans = Vec::new();
        let mut fullest_ring = 0;
        {
            let mut slots = lock(&self.slots);
            let retired = std::mem::take(&mut slots.retired);
            for ring in rings.iter_mut() {
                let Ok(chunk) = ring.read_chunk(ring.slots()) else {
                    continue;
                };
                fullest_ring = fullest_ring.max(chunk.len());
                let (first, second) = chunk.as_slices();
                let mut spans = first.iter().chain(second).peekable();
                while let Some(span) = spans.next() {
                    match slots.operations.get(span.slot()) {
                        Some(Some(operation)) if !operation.retired.load(Ordering::Relaxed) => {
                            // Consecutive spans of one operation and status: one lock.
                            self.record_run(operation, span.status(), span.nanos(), || {
                                spans
                                    .next_if(|next| next.same_key(*span))
                                    .map(|next| next.nanos())
                            });
                        }
                        Some(Some(operation)) => orphans.push((Arc::clone(operation), *span)),
                        // Unreachable: a slot is freed only after the drain following
                        // its operation's eviction.
                        Some(None) | None => {}
                    }
                }
                chunk.commit_all();
            }
            for slot in retired {
                if let Some(entry) = slots.operations.get_mut(slot as usize) {
                    *entry = None;
                    slots.free.push(slot);
                }
            }
        }
        rings.retain(|ring| {
            // `is_abandoned` reads the producer's reference count with a relaxed load:
            // the fence orders the emptiness check after the producer's last push.
            !(ring.is_abandoned() && {
                std::sync::atomic::fence(Ordering::Acquire);
                ring.is_empty()
            })
        });
        // A span of an operation evicted after it ended: record it into the operation
        // interned anew for the same key.
        for (retired, span) in orphans {
            let operation = self.operation(retired.key());
            self.record_operation(&operation, span.status(), span.nanos());
        }
        fullest_ring
    }

    /// Counts one event.
    pub(crate) fn count_event(&self, event_type: &str, name: &str, status: StatusCode) {
        let key = EventKey {
            event_type,
            name,
            status: status as u8,
        };
        self.with_entry::<EventCounter, _>(
            key,
            |_| {},
            |counter, active| {
                counter.counts[active].fetch_add(1, Ordering::Relaxed);
            },
        );
    }

    /// Adds a metric value (the last one wins for gauges).
    pub(crate) fn record_metric(&self, name: &str, kind: MetricKind, value: f64) {
        self.with_entry::<Metric, _>(
            MetricKey { name, kind },
            |_| {},
            |metric, active| {
                let mut totals = lock(&metric.totals[active]);
                totals.count += 1;
                match kind {
                    MetricKind::Gauge => totals.value = value,
                    MetricKind::Counter | MetricKind::Duration => totals.value += value,
                }
            },
        );
    }

    /// Makes the other buffer active and returns the epoch to drain.
    pub(crate) fn swap(&self) -> u64 {
        self.drain_rings();
        let mut tables = write(&self.tables);
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel);
        tables.active = buffer_of(epoch + 1);
        epoch
    }

    /// Moves the totals of `epoch` into `report` as rows of `bucket`, clears them
    /// (keeping allocations), learns slow thresholds, and forgets long-idle entries.
    /// Call it only with the epoch [`Registry::swap`] returned.
    pub(crate) fn drain(&self, epoch: u64, bucket: u32, report: &mut AgentReport) -> DrainStats {
        let idle = buffer_of(epoch);
        let (operations, events, metrics) = {
            let tables = read(&self.tables);
            (
                tables
                    .operations
                    .entries
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>(),
                tables.events.entries.iter().cloned().collect::<Vec<_>>(),
                tables.metrics.entries.iter().cloned().collect::<Vec<_>>(),
            )
        };
        let mut stats = DrainStats::default();
        let mut merged = LatencyHistogram::new();
        let mut buckets = Vec::new();
        let mut num_idle = 0;
        for operation in &operations {
            merged.clear();
            for (status, totals) in operation.totals[idle].iter().enumerate() {
                let mut totals = lock(totals);
                totals.drained_epoch = epoch;
                if totals.count == 0 {
                    continue;
                }
                let mut aggregate = Aggregate {
                    bucket,
                    name: operation.name.to_string(),
                    kind: operation.kind as u32,
                    status: status as u32,
                    count: totals.count,
                    errors: if status == StatusCode::Error as usize {
                        totals.count
                    } else {
                        0
                    },
                    sum_ns: totals.sum_ns,
                    min_ns: totals.min_ns,
                    max_ns: totals.max_ns,
                    peer: operation.peer.to_string(),
                    peer_type: if operation.peer.is_empty() {
                        String::new()
                    } else {
                        operation.peer_type.label().to_owned()
                    },
                    ..Default::default()
                };
                buckets.clear();
                totals.histogram.drain_sorted(&mut buckets);
                for &(key, count) in &buckets {
                    aggregate.hist_keys.push(key);
                    aggregate.hist_counts.push(count);
                    merged.record_bucket(key, count);
                }
                stats.num_recorded += totals.count;
                report.aggregates.push(aggregate);
                totals.clear();
            }
            if !self.thresholds.configured_ns.contains_key(&*operation.name) {
                let threshold = if merged.len() >= self.thresholds.learn_min_count.max(1) {
                    merged.quantile(LEARNED_QUANTILE)
                } else {
                    NO_THRESHOLD
                };
                operation
                    .slow_threshold_ns
                    .store(threshold, Ordering::Relaxed);
            }
            num_idle += usize::from(track_idle(&**operation, merged.is_empty()));
        }
        for counter in &events {
            let count = counter.counts[idle].swap(0, Ordering::Relaxed);
            if count > 0 {
                report.events.push(EventCount {
                    bucket,
                    event_type: counter.event_type.to_string(),
                    name: counter.name.to_string(),
                    status: u32::from(counter.status),
                    count,
                });
            }
            num_idle += usize::from(track_idle(&**counter, count == 0));
        }
        for metric in &metrics {
            let mut totals = lock(&metric.totals[idle]);
            if totals.count > 0 {
                report.metrics.push(MetricValue {
                    bucket,
                    name: metric.name.to_string(),
                    kind: metric.kind as i32,
                    value: totals.value,
                    count: totals.count,
                });
            }
            let was_empty = totals.count == 0;
            *totals = MetricTotals::default();
            drop(totals);
            num_idle += usize::from(track_idle(&**metric, was_empty));
        }
        // The snapshot holds one reference per entry; the table holds the other.
        drop((operations, events, metrics));
        if num_idle > 0 {
            stats.num_evicted = self.evict_idle();
        }
        stats
    }

    /// Forgets entries idle for long enough that nobody references outside the table.
    fn evict_idle(&self) -> usize {
        let mut tables = write(&self.tables);
        let active = tables.active;
        let before = tables.operations.entries.len()
            + tables.events.entries.len()
            + tables.metrics.entries.len();
        let mut slots = lock(&self.slots);
        tables.operations.entries.retain(|operation| {
            let evict = is_evictable(operation, active);
            if evict {
                operation.retired.store(true, Ordering::Relaxed);
                slots.retired.push(operation.slot());
            }
            !evict
        });
        drop(slots);
        tables
            .events
            .entries
            .retain(|entry| !is_evictable(entry, active));
        tables
            .metrics
            .entries
            .retain(|entry| !is_evictable(entry, active));
        before
            - (tables.operations.entries.len()
                + tables.events.entries.len()
                + tables.metrics.entries.len())
    }

    /// Number of interned operations (test helper).
    #[cfg(test)]
    pub(crate) fn num_operations(&self) -> usize {
        read(&self.tables).operations.entries.len()
    }
}

/// Counts idle intervals; returns whether the entry is now old enough to forget.
fn track_idle<T: Entry>(entry: &T, was_empty: bool) -> bool {
    if was_empty {
        entry.idle_intervals().fetch_add(1, Ordering::Relaxed) + 1 >= EVICT_AFTER_INTERVALS
    } else {
        entry.idle_intervals().store(0, Ordering::Relaxed);
        false
    }
}

/// Whether an entry can be dropped: idle for long, empty, and referenced only by the
/// table (an open transaction holds its operation).
fn is_evictable<T: Entry>(entry: &Arc<T>, active: usize) -> bool {
    entry.idle_intervals().load(Ordering::Relaxed) >= EVICT_AFTER_INTERVALS
        && Arc::strong_count(entry) == T::REGISTRY_REFERENCES
        && {
            // `strong_count` is a relaxed load: the fence orders what follows (and the
            // next ring drain) after the last holder's span push and release.
            std::sync::atomic::fence(Ordering::Acquire);
            entry.is_empty(active)
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max_keys: usize) -> Registry {
        Registry::new(
            max_keys,
            ThresholdConfig {
                learn_min_count: 100,
                ..Default::default()
            },
        )
    }

    fn key(name: &str) -> OperationKey<'_> {
        OperationKey {
            kind: SpanKind::Server,
            span_type: "URL",
            name,
            peer: "",
            peer_type: PeerType::None,
        }
    }

    fn drain(registry: &Registry, bucket: u32) -> (AgentReport, DrainStats) {
        let epoch = registry.swap();
        let mut report = AgentReport::default();
        let stats = registry.drain(epoch, bucket, &mut report);
        report
            .aggregates
            .sort_by(|a, b| (&a.name, a.status).cmp(&(&b.name, b.status)));
        (report, stats)
    }

    #[test]
    fn counts_are_exact_and_buffers_alternate() {
        let registry = registry(10);
        let operation = registry.operation(key("GET /"));
        for nanos in [5, 10, 15] {
            registry.record_operation(&operation, StatusCode::Unset, nanos);
        }
        registry.record_operation(&operation, StatusCode::Error, 100);
        registry.count_event("Cache", "miss", StatusCode::Unset);
        registry.count_event("Cache", "miss", StatusCode::Unset);
        registry.record_metric("queue", MetricKind::Gauge, 3.0);
        registry.record_metric("queue", MetricKind::Gauge, 4.0);
        registry.record_metric("bytes", MetricKind::Counter, 2.0);
        registry.record_metric("bytes", MetricKind::Counter, 5.0);

        let (report, stats) = drain(&registry, 100);
        assert_eq!(stats.num_recorded, 4);
        let [ok, error] = report.aggregates.as_slice() else {
            panic!("{report:?}")
        };
        assert_eq!(
            (ok.bucket, ok.count, ok.errors, ok.sum_ns, ok.min_ns, ok.max_ns, ok.kind),
            (100, 3, 0, 30, 5, 15, SpanKind::Server as u32)
        );
        assert_eq!(
            (ok.hist_keys.clone(), ok.hist_counts.clone()),
            (vec![5, 10, 15], vec![1, 1, 1])
        );
        assert_eq!((error.status, error.count, error.errors), (2, 1, 1));
        assert_eq!(report.events[0].count, 2);
        let mut metrics: Vec<_> = report
            .metrics
            .iter()
            .map(|metric| (metric.name.as_str(), metric.value, metric.count))
            .collect();
        metrics.sort_by(|a, b| a.0.cmp(b.0));
        assert_eq!(metrics, [("bytes", 7.0, 2), ("queue", 4.0, 2)]);

        // The drained buffer is empty; the next interval starts from zero.
        registry.record_operation(&operation, StatusCode::Unset, 7);
        let (report, stats) = drain(&registry, 110);
        assert_eq!(stats.num_recorded, 1);
        assert_eq!(report.aggregates.len(), 1);
        assert_eq!(
            (report.aggregates[0].bucket, report.aggregates[0].count),
            (110, 1)
        );
        assert!(report.events.is_empty() && report.metrics.is_empty());
        let (report, _) = drain(&registry, 120);
        assert!(report.aggregates.is_empty());
    }

    #[test]
    fn compares_text() {
        let text = "GET /orders/{id}/items?page=1&size=20 HTTP/1.1";
        for len in 0..=text.len() {
            let left = &text[..len];
            // Another copy: equal by content, not by address.
            let copy = String::from(left);
            assert!(same_text(left, &copy), "{left}");
            assert!(!same_text(left, &text[..len.saturating_sub(1)]) || len == 0);
            // Every position is compared: one byte changed anywhere makes a difference.
            for position in 0..len {
                let mut changed = left.as_bytes().to_vec();
                changed[position] ^= 0x01;
                let changed = String::from_utf8(changed).expect("ASCII stays UTF-8");
                assert!(!same_text(left, &changed), "{left} {changed}");
            }
        }
    }

    #[test]
    fn recording_during_swaps_loses_nothing() {
        let registry = registry(10);
        let operation = registry.operation(key("GET /"));
        let num_per_thread = 100_000u64;
        let mut total = 0;
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        for nanos in 0..num_per_thread {
                            registry.record_operation(&operation, StatusCode::Unset, nanos);
                        }
                    })
                })
                .collect();
            while writers.iter().any(|writer| !writer.is_finished()) {
                total += drain(&registry, 0).1.num_recorded;
            }
        });
        total += drain(&registry, 0).1.num_recorded;
        total += drain(&registry, 0).1.num_recorded;
        assert_eq!(total, 2 * num_per_thread);
    }

    #[test]
    fn spans_through_rings_are_counted_once_whatever_the_swaps() {
        let registry = registry(10);
        let operation = registry.operation(key("GET /"));
        // More spans per thread than a ring holds, so each thread also drains in place.
        let num_per_thread = 20 * RING_CAPACITY as u64;
        let mut total = 0;
        let mut sum_ns = 0;
        let mut collect = |report: AgentReport, stats: DrainStats| {
            total += stats.num_recorded;
            sum_ns += report.aggregates.iter().map(|row| row.sum_ns).sum::<u64>();
        };
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        let mut ring = registry.new_ring();
                        for nanos in 1..=num_per_thread {
                            registry.record_via(&mut ring, &operation, StatusCode::Unset, nanos);
                        }
                    })
                })
                .collect();
            while writers.iter().any(|writer| !writer.is_finished()) {
                let (report, stats) = drain(&registry, 0);
                collect(report, stats);
            }
        });
        let (report, stats) = drain(&registry, 0);
        collect(report, stats);
        assert_eq!(total, 2 * num_per_thread);
        assert_eq!(sum_ns, num_per_thread * (num_per_thread + 1));
        assert!(
            lock(&registry.rings).is_empty(),
            "rings of ended threads are dropped"
        );
    }

    #[test]
    fn rings_of_ended_threads_are_dropped_without_a_reporter() {
        let registry = registry(10);
        let operation = registry.operation(key("GET /"));
        // A thread per request, each recording a few spans and ending; nobody drains.
        for _ in 0..100 {
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    let mut ring = registry.new_ring();
                    for nanos in 1..=3 {
                        registry.record_via(&mut ring, &operation, StatusCode::Unset, nanos);
                    }
                });
            });
        }
        // Each new ring drained the ones before it.
        assert_eq!(lock(&registry.rings).len(), 1);
        let (_, stats) = drain(&registry, 0);
        assert_eq!(stats.num_recorded, 300);
        assert!(lock(&registry.rings).is_empty());
    }

    #[test]
    fn a_full_ring_is_drained_even_after_a_panic_poisoned_the_rings_lock() {
        let registry = registry(10);
        let operation = registry.operation(key("GET /"));
        let mut ring = registry.new_ring();
        let poisoned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _rings = registry.rings.lock();
            panic!("a drain that panics");
        }));
        assert!(poisoned.is_err() && registry.rings.is_poisoned());
        for nanos in 0..=RING_CAPACITY as u64 {
            registry.record_via(&mut ring, &operation, StatusCode::Unset, nanos);
        }
        // The span that found the ring full drained it, and went in after.
        assert_eq!(ring.slots(), RING_CAPACITY - 1);
        let (_, stats) = drain(&registry, 0);
        assert_eq!(stats.num_recorded, RING_CAPACITY as u64 + 1);
    }

    #[test]
    fn a_span_of_an_evicted_operation_still_counts_and_slots_are_reused() {
        let registry = registry(10);
        let mut ring = registry.new_ring();
        let operation = registry.operation(key("late"));
        let slot = operation.slot();
        for _ in 0..=EVICT_AFTER_INTERVALS {
            drain(&registry, 0);
        }
        // The span ends after the operation's last idle interval, and the handle that
        // recorded it is gone before the drain that evicts the operation.
        registry.record_via(&mut ring, &operation, StatusCode::Error, 7);
        drop(operation);
        assert_eq!(registry.evict_idle(), 1);
        assert_eq!(registry.num_operations(), 0);
        let (report, _) = drain(&registry, 0);
        let rows: Vec<_> = report
            .aggregates
            .iter()
            .map(|row| (row.name.as_str(), row.status, row.count, row.sum_ns))
            .collect();
        assert_eq!(rows, [("late", StatusCode::Error as u32, 1, 7)]);
        // The ring drain freed the evicted slot before re-interning the operation, which
        // took the slot again.
        let reinterned = registry.operation(key("late"));
        assert_eq!(reinterned.slot(), slot);
        assert_eq!(lock(&registry.slots).operations.len(), 1);
    }

    #[test]
    fn recorded_spans_pack_and_spans_too_long_to_pack_are_recorded_directly() {
        let max_nanos = (1u64 << NANOS_BITS) - 1;
        for (slot, status, nanos) in [
            (0, StatusCode::Unset, 0),
            ((1 << SLOT_BITS) - 1, StatusCode::Error, max_nanos),
            (7, StatusCode::Ok, 1_234_567),
        ] {
            let span = RecordedSpan::new(slot, status, nanos).expect("fits");
            assert_eq!(
                (span.slot(), span.status(), span.nanos()),
                (slot as usize, status, nanos)
            );
        }
        assert_eq!(
            RecordedSpan::new(1 << SLOT_BITS, StatusCode::Unset, 1),
            None
        );
        assert_eq!(RecordedSpan::new(1, StatusCode::Unset, max_nanos + 1), None);
        let same = RecordedSpan::new(3, StatusCode::Error, 10).expect("fits");
        assert!(same.same_key(RecordedSpan::new(3, StatusCode::Error, 99).expect("fits")));
        assert!(!same.same_key(RecordedSpan::new(3, StatusCode::Ok, 10).expect("fits")));
        assert!(!same.same_key(RecordedSpan::new(4, StatusCode::Error, 10).expect("fits")));

        // An hour-long span does not fit in a ring entry: it is aggregated all the same.
        let registry = registry(10);
        let mut ring = registry.new_ring();
        let operation = registry.operation(key("batch job"));
        let hour_ns = 3_600_000_000_000;
        registry.record_via(&mut ring, &operation, StatusCode::Unset, hour_ns);
        registry.record_via(&mut ring, &operation, StatusCode::Unset, 5);
        let (report, _) = drain(&registry, 0);
        let row = &report.aggregates[0];
        assert_eq!((row.count, row.min_ns, row.max_ns), (2, 5, hour_ns));
    }

    #[test]
    fn overflow_folds_new_keys_and_counts_them() {
        let registry = registry(2);
        for name in ["a", "b", "c", "d"] {
            let operation = registry.operation(key(name));
            registry.record_operation(&operation, StatusCode::Unset, 1);
        }
        let known = registry.operation(key("a"));
        registry.record_operation(&known, StatusCode::Unset, 1);
        assert_eq!(registry.overflowed(), 2);
        let (report, _) = drain(&registry, 0);
        let names: Vec<_> = report
            .aggregates
            .iter()
            .map(|aggregate| (aggregate.name.as_str(), aggregate.count))
            .collect();
        assert_eq!(names, [("a", 2), ("b", 1), ("other", 2)]);
        for index in 0..5 {
            registry.count_event("E", &index.to_string(), StatusCode::Unset);
        }
        let (report, _) = drain(&registry, 0);
        assert_eq!(report.events.len(), 3);
        assert_eq!(registry.overflowed(), 5);
    }

    #[test]
    fn thresholds_are_learned_from_p99_or_configured() {
        let mut thresholds = ThresholdConfig {
            learn_min_count: 100,
            ..Default::default()
        };
        thresholds.configured_ns.insert("fixed".into(), 5_000);
        let registry = Registry::new(10, thresholds);
        let learned = registry.operation(key("learned"));
        let fixed = registry.operation(key("fixed"));
        let sparse = registry.operation(key("sparse"));
        assert_eq!(fixed.slow_threshold_ns(), Some(5_000));
        for nanos in 1..=1000u64 {
            registry.record_operation(&learned, StatusCode::Unset, nanos * 1_000);
            registry.record_operation(&fixed, StatusCode::Unset, nanos * 1_000);
        }
        registry.record_operation(&sparse, StatusCode::Unset, 1_000);
        assert_eq!(learned.slow_threshold_ns(), None);
        drain(&registry, 0);
        let p99 = learned.slow_threshold_ns().expect("learned");
        assert!((985_000..=995_000).contains(&p99), "{p99}");
        assert!(learned.is_slow(1_000_000) && !learned.is_slow(900_000));
        assert_eq!(fixed.slow_threshold_ns(), Some(5_000));
        assert_eq!(sparse.slow_threshold_ns(), None);
    }

    #[test]
    fn idle_entries_are_evicted_unless_referenced() {
        let registry = registry(10);
        let held = registry.operation(key("held"));
        drop(registry.operation(key("dropped")));
        registry.count_event("E", "e", StatusCode::Unset);
        let mut evicted = 0;
        for _ in 0..=EVICT_AFTER_INTERVALS {
            evicted += drain(&registry, 0).1.num_evicted;
        }
        assert_eq!(evicted, 2);
        assert_eq!(registry.num_operations(), 1);
        registry.record_operation(&held, StatusCode::Unset, 1);
        assert_eq!(drain(&registry, 0).0.aggregates.len(), 1);
    }
}

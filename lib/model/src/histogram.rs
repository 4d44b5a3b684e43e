//! Latency histograms that merge exactly.
//!
//! Every latency distribution in Caracal is an HdrHistogram of nanoseconds with two
//! significant digits. On the wire and in ClickHouse it travels as a sparse map from
//! bucket key (the lowest value the bucket holds) to count, so histograms from any number
//! of hosts and time buckets merge by adding counts per key (`sumMap` in ClickHouse).
//! Any quantile read from a merge is within 1% of the exact value, because a bucket is
//! at most 1/128 of its lowest value wide and the median of the bucket is reported.

use hdrhistogram::Histogram;

/// Significant decimal digits kept by every latency histogram.
pub const SIGNIFICANT_DIGITS: u8 = 2;

/// A latency histogram in nanoseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    inner: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram that grows to any `u64` value.
    pub fn new() -> Self {
        let mut inner = Histogram::new(SIGNIFICANT_DIGITS).expect("2 significant digits are valid");
        inner.auto(true);
        Self { inner }
    }

    /// Records one duration; values beyond the range are clamped, never an error.
    pub fn record(&mut self, nanos: u64) {
        // `saturating_record` clamps to the current bound instead of growing, so grow
        // first and clamp only when growing is impossible.
        if self.inner.record(nanos).is_err() {
            self.inner.saturating_record(nanos);
        }
    }

    /// Records `count` durations of the bucket starting at `key`.
    pub fn record_bucket(&mut self, key: u64, count: u64) {
        // Auto-resizing histograms only fail on counts overflowing u64.
        let _ = self.inner.record_n(key, count);
    }

    /// Adds another histogram.
    pub fn add(&mut self, other: &LatencyHistogram) {
        let _ = self.inner.add(&other.inner);
    }

    /// Adds a sparse histogram.
    pub fn add_sparse(&mut self, other: &SparseHistogram) {
        for (key, count) in other.buckets() {
            self.record_bucket(key, count);
        }
    }

    /// Number of recorded values.
    pub fn len(&self) -> u64 {
        self.inner.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Forgets every value, keeping the allocation.
    pub fn clear(&mut self) {
        self.inner.reset();
    }

    /// Appends the sparse `(bucket key, count)` form, keys ascending.
    pub fn write_sparse(&self, keys: &mut Vec<u64>, counts: &mut Vec<u64>) {
        for bucket in self.inner.iter_recorded() {
            keys.push(self.inner.lowest_equivalent(bucket.value_iterated_to()));
            counts.push(bucket.count_at_value());
        }
    }

    /// Rebuilds a histogram from its sparse form (for example a `sumMap` result).
    pub fn from_sparse(keys: &[u64], counts: &[u64]) -> Self {
        let mut histogram = Self::new();
        for (key, count) in keys.iter().zip(counts) {
            histogram.record_bucket(*key, *count);
        }
        histogram
    }

    /// The value at quantile `quantile` (0.0 to 1.0): the middle of the bucket holding
    /// that rank. Zero when empty.
    pub fn quantile(&self, quantile: f64) -> u64 {
        if self.inner.is_empty() {
            return 0;
        }
        let value = self.inner.value_at_quantile(quantile.clamp(0.0, 1.0));
        self.inner.median_equivalent(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_quantile(sorted: &[u64], quantile: f64) -> u64 {
        let rank = ((quantile * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    #[test]
    fn merged_sparse_quantiles_are_within_one_percent() {
        let mut values = Vec::new();
        let mut parts = vec![
            LatencyHistogram::new(),
            LatencyHistogram::new(),
            LatencyHistogram::new(),
        ];
        let mut state: u64 = 42;
        for index in 0..30_000u64 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let value = 1_000 + (state >> 33) % 5_000_000_000 / (1 + index % 7);
            values.push(value);
            parts[(index % 3) as usize].record(value);
        }
        let (mut keys, mut counts) = (Vec::new(), Vec::new());
        for part in &parts {
            part.write_sparse(&mut keys, &mut counts);
        }
        let merged = LatencyHistogram::from_sparse(&keys, &counts);
        values.sort_unstable();
        assert_eq!(merged.len(), values.len() as u64);
        for quantile in [0.5, 0.9, 0.95, 0.99, 0.999] {
            let exact = exact_quantile(&values, quantile) as f64;
            let estimate = merged.quantile(quantile) as f64;
            assert!(
                (estimate - exact).abs() / exact < 0.01,
                "q{quantile}: {estimate} vs {exact}"
            );
        }
    }

    #[test]
    fn small_values_are_exact_and_huge_values_do_not_fail() {
        let mut histogram = LatencyHistogram::new();
        histogram.record(7);
        histogram.record(u64::MAX);
        assert_eq!(histogram.quantile(0.5), 7);
        assert_eq!(histogram.len(), 2);
        assert_eq!(LatencyHistogram::new().quantile(0.5), 0);
    }
}

/// The key of the bucket holding `nanos`: the lowest value that bucket holds, in the
/// scheme every [`LatencyHistogram`] uses.
pub fn bucket_key(nanos: u64) -> u64 {
    static SCHEME: std::sync::OnceLock<Histogram<u8>> = std::sync::OnceLock::new();
    SCHEME
        .get_or_init(|| Histogram::new(SIGNIFICANT_DIGITS).expect("2 significant digits are valid"))
        .lowest_equivalent(nanos)
}

/// A histogram kept as its sparse `(bucket key, count)` pairs, sorted by key.
///
/// Same buckets as [`LatencyHistogram`], but its size follows the number of distinct
/// buckets seen (a few dozen for a typical operation) instead of the value range (tens of
/// kilobytes for a dense HdrHistogram reaching seconds), so aggregating many keys stays
/// small. Read quantiles by converting with [`LatencyHistogram::from_sparse`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseHistogram {
    buckets: Vec<(u64, u64)>,
}

impl SparseHistogram {
    /// Records one duration.
    pub fn record(&mut self, nanos: u64) {
        self.record_bucket(bucket_key(nanos), 1);
    }

    /// Adds `count` to the bucket starting at `key`.
    pub fn record_bucket(&mut self, key: u64, count: u64) {
        match self
            .buckets
            .binary_search_by_key(&key, |(bucket, _)| *bucket)
        {
            Ok(index) => self.buckets[index].1 += count,
            Err(index) => self.buckets.insert(index, (key, count)),
        }
    }

    /// Number of recorded values.
    pub fn len(&self) -> u64 {
        self.buckets.iter().map(|(_, count)| count).sum()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Forgets every value, keeping the allocation.
    pub fn clear(&mut self) {
        self.buckets.clear();
    }

    /// The `(bucket key, count)` pairs, keys ascending.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.buckets.iter().copied()
    }

    /// Appends the sparse form, keys ascending.
    pub fn write_sparse(&self, keys: &mut Vec<u64>, counts: &mut Vec<u64>) {
        for (key, count) in &self.buckets {
            keys.push(*key);
            counts.push(*count);
        }
    }
}

#[cfg(test)]
mod sparse_tests {
    use super::*;

    #[test]
    fn sparse_matches_dense() {
        let mut sparse = SparseHistogram::default();
        let mut dense = LatencyHistogram::new();
        for value in [
            1,
            7,
            255,
            256,
            1_000,
            1_003,
            5_000_000,
            5_010_000,
            3_600_000_000_000,
        ] {
            sparse.record(value);
            dense.record(value);
        }
        let (mut sparse_keys, mut sparse_counts) = (Vec::new(), Vec::new());
        sparse.write_sparse(&mut sparse_keys, &mut sparse_counts);
        let (mut dense_keys, mut dense_counts) = (Vec::new(), Vec::new());
        dense.write_sparse(&mut dense_keys, &mut dense_counts);
        assert_eq!((sparse_keys, sparse_counts), (dense_keys, dense_counts));
        assert_eq!(sparse.len(), 9);
        sparse.clear();
        assert!(sparse.is_empty());
    }
}

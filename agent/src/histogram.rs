//! The latency histogram of one operation, status and interval, as the hot path
//! records it.
//!
//! Same buckets as [`caracal_model::histogram`] (HdrHistogram with 2 significant
//! digits: values below 256 exact, then 128 buckets per power of two), but the bucket
//! of a value is computed with a few shifts instead of through a shared dense
//! histogram, and the counts live in a small open-addressing table instead of a sorted
//! vector: a binary search by key mispredicts a branch or two per level on every
//! recording, where the durations of one operation fall into a contiguous run of
//! buckets that an identity hash lays out without collisions. The reporter sorts the
//! few dozen buckets once per interval.

use caracal_model::histogram::SIGNIFICANT_DIGITS;

// The bucket arithmetic below is that of 2 significant digits.
const _: () = assert!(SIGNIFICANT_DIGITS == 2);

/// Buckets per power of two above the exact range (half the sub-bucket count).
const HALF_SUB_BUCKETS: u32 = 128;
/// Bits of a slot holding the count; the bits above hold the bucket index plus one.
const COUNT_BITS: u32 = 48;
/// The largest count a slot holds: the protocol's cap on a bucket's count.
const MAX_COUNT: u64 = (1 << COUNT_BITS) - 1;
const _: () = assert!(MAX_COUNT == caracal_proto::MAX_BUCKET_COUNT);
/// Slots of a table's first allocation.
const MIN_SLOTS: usize = 16;

/// The index of the bucket holding `nanos`: 0 to 7,423, ascending with the value.
#[inline]
fn bucket_index(nanos: u64) -> u32 {
    // 0 below 256, else the number of low bits the bucket ignores.
    let magnitude = 56 - (nanos | 0xff).leading_zeros();
    magnitude * HALF_SUB_BUCKETS + (nanos >> magnitude) as u32
}

/// The lowest value of the bucket at `index` (its key in reports).
fn bucket_key(index: u32) -> u64 {
    let magnitude = (index / HALF_SUB_BUCKETS).saturating_sub(1);
    u64::from(index - magnitude * HALF_SUB_BUCKETS) << magnitude
}

/// Counts per bucket, for one interval.
///
/// Allocates only when a value falls into a bucket it has not seen since it was
/// created (the table doubles at half load); [`BucketCounts::drain_sorted`] keeps the
/// allocation.
#[derive(Debug, Default)]
pub(crate) struct BucketCounts {
    /// Linear probing from the bucket index, power-of-two length (or empty). A slot
    /// packs the bucket index plus one above [`COUNT_BITS`] (0 for an empty slot) and
    /// the count below.
    slots: Vec<u64>,
    /// Occupied slots.
    len: usize,
}

impl BucketCounts {
    /// Counts one value.
    #[inline]
    pub(crate) fn record(&mut self, nanos: u64) {
        let tag = u64::from(bucket_index(nanos)) + 1;
        if self.slots.is_empty() {
            self.slots.resize(MIN_SLOTS, 0);
        }
        let mask = self.slots.len() - 1;
        let mut position = tag as usize & mask;
        loop {
            let slot = self.slots[position];
            if slot >> COUNT_BITS == tag {
                if slot & MAX_COUNT != MAX_COUNT {
                    self.slots[position] = slot + 1;
                }
                return;
            }
            if slot == 0 {
                self.slots[position] = tag << COUNT_BITS | 1;
                self.len += 1;
                if self.len * 2 > self.slots.len() {
                    self.grow();
                }
                return;
            }
            position = (position + 1) & mask;
        }
    }

    /// Appends the `(bucket key, count)` pairs to `buckets`, keys ascending, and
    /// forgets them (keeping the allocation).
    pub(crate) fn drain_sorted(&mut self, buckets: &mut Vec<(u64, u64)>) {
        let start = buckets.len();
        for slot in &mut self.slots {
            if *slot != 0 {
                let index = (*slot >> COUNT_BITS) as u32 - 1;
                buckets.push((bucket_key(index), *slot & MAX_COUNT));
                *slot = 0;
            }
        }
        buckets[start..].sort_unstable_by_key(|(key, _)| *key);
        self.len = 0;
    }

    /// Doubles the table.
    #[cold]
    fn grow(&mut self) {
        let num_slots = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![0; num_slots]);
        let mask = self.slots.len() - 1;
        for slot in old.into_iter().filter(|slot| *slot != 0) {
            let mut position = (slot >> COUNT_BITS) as usize & mask;
            while self.slots[position] != 0 {
                position = (position + 1) & mask;
            }
            self.slots[position] = slot;
        }
    }
}

#[cfg(test)]
mod tests {
    use caracal_model::histogram::{bucket_key as model_bucket_key, SparseHistogram};

    use super::*;

    /// Values around every power of two, and a pseudo-random spread.
    fn values() -> Vec<u64> {
        let mut values: Vec<u64> = (0..5_000).collect();
        for shift in 8..64 {
            let power = 1u64 << shift;
            values.extend([power - 1, power, power + 1, power + power / 3]);
        }
        values.push(u64::MAX);
        let mut state: u64 = 7;
        for _ in 0..100_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            values.push(state >> (state % 64));
        }
        values
    }

    #[test]
    fn buckets_are_those_of_the_model() {
        for value in values() {
            let index = bucket_index(value);
            assert!(index < 7_424, "{value}");
            assert_eq!(bucket_key(index), model_bucket_key(value), "{value}");
        }
    }

    #[test]
    fn counts_match_the_sparse_histogram_and_drain_keeps_the_allocation() {
        let mut counts = BucketCounts::default();
        let mut sparse = SparseHistogram::default();
        for value in values() {
            counts.record(value);
            sparse.record(value);
        }
        let mut drained = Vec::new();
        counts.drain_sorted(&mut drained);
        assert_eq!(drained, sparse.buckets().collect::<Vec<_>>());
        assert_eq!(counts.len, 0);
        let capacity = counts.slots.len();
        counts.record(5);
        counts.record(5);
        counts.record(1_000_000);
        drained.clear();
        counts.drain_sorted(&mut drained);
        assert_eq!(drained, [(5, 2), (999_424, 1)]);
        assert_eq!(counts.slots.len(), capacity);
    }
}

//! A latency histogram with about 1.5 % precision over nanoseconds to hours, cheap to record
//! and to merge across subscribers and worker processes.
//!
//! Values below 128 ns have a bucket each; above, every power of two is split in 64 buckets.

use serde::{Deserialize, Serialize};

/// Buckets per power of two above the linear range.
const SUB_BUCKETS: u32 = 64;
/// Values below this have a bucket each.
const LINEAR: u64 = 128;
/// Enough buckets for values up to 2^48 ns (three days).
const BUCKETS: usize = (LINEAR as usize) + 42 * SUB_BUCKETS as usize;

/// Counts of values (nanoseconds) per bucket, plus the exact maximum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn bucket_of(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros(); // >= 7
    let mantissa = (value >> (exponent - 6)) as u32 & (SUB_BUCKETS - 1);
    let bucket =
        LINEAR as usize + (exponent - 7) as usize * SUB_BUCKETS as usize + mantissa as usize;
    bucket.min(BUCKETS - 1)
}

/// The largest value that falls in `bucket`.
fn upper_bound(bucket: usize) -> u64 {
    if bucket < LINEAR as usize {
        return bucket as u64;
    }
    let offset = bucket - LINEAR as usize;
    let exponent = (offset / SUB_BUCKETS as usize) as u32 + 7;
    let mantissa = (offset % SUB_BUCKETS as usize) as u64;
    let step = 1u64 << (exponent - 6);
    (1u64 << exponent) + (mantissa + 1) * step - 1
}

impl Histogram {
    /// Counts one value.
    pub fn record(&mut self, value: u64) {
        self.counts[bucket_of(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// Adds every value counted by `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Number of values counted.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The largest value counted.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value below which a fraction `quantile` (0.0..=1.0) of the values fall (the upper
    /// bound of its bucket, never above the maximum); 0 when empty.
    pub fn quantile(&self, quantile: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((quantile * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return upper_bound(bucket).min(self.max);
            }
        }
        self.max
    }

    /// The non-empty buckets, for sending to another process.
    pub fn to_sparse(&self) -> SparseHistogram {
        SparseHistogram {
            buckets: self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, count)| **count > 0)
                .map(|(bucket, count)| (bucket as u32, *count))
                .collect(),
            max: self.max,
        }
    }

    /// Rebuilds a histogram sent by another process; unknown buckets are clamped to the last.
    pub fn from_sparse(sparse: &SparseHistogram) -> Histogram {
        let mut histogram = Histogram::default();
        for &(bucket, count) in &sparse.buckets {
            histogram.counts[(bucket as usize).min(BUCKETS - 1)] += count;
            histogram.total += count;
        }
        histogram.max = sparse.max;
        histogram
    }
}

/// A histogram's non-empty buckets, as `(bucket, count)` pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SparseHistogram {
    buckets: Vec<(u32, u64)>,
    max: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_values_within_two_percent() {
        for value in [
            0,
            1,
            127,
            128,
            129,
            1000,
            65_432,
            1_000_000,
            123_456_789_012,
        ] {
            let bucket = bucket_of(value);
            let upper = upper_bound(bucket);
            assert!(upper >= value, "{value} above its bucket's bound {upper}");
            assert!(
                upper - value <= value / 50,
                "{value}: bound {upper} too coarse"
            );
            if bucket > 0 {
                assert!(
                    upper_bound(bucket - 1) < value,
                    "{value} also fits the bucket below"
                );
            }
        }
    }

    #[test]
    fn quantiles_merge_and_survive_the_sparse_form() {
        let mut low = Histogram::default();
        let mut high = Histogram::default();
        for value in 1..=900 {
            low.record(value * 1000);
        }
        for value in 901..=1000 {
            high.record(value * 1000);
        }
        low.merge(&Histogram::from_sparse(&high.to_sparse()));
        assert_eq!(low.len(), 1000);
        assert_eq!(low.max(), 1_000_000);
        let p50 = low.quantile(0.5);
        assert!((500_000..=510_000).contains(&p50), "{p50}");
        assert_eq!(low.quantile(1.0), 1_000_000);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }
}

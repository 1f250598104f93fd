//! A histogram's state: observations counted into buckets, as the supervisor keeps reload
//! durations (and hands them over in an upgrade in place) and the metrics show them.

use serde::{Deserialize, Serialize};

/// Observations counted into buckets by upper bound (`+Inf` implied above the last one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Upper bounds of the buckets, increasing.
    bounds: Vec<f64>,
    /// Observations per bucket (not cumulative), one per bound.
    counts: Vec<u64>,
    /// Sum of all observations.
    sum: f64,
    /// Number of observations (including those above the last bound).
    count: u64,
}

impl Histogram {
    /// An empty histogram with these bucket bounds (sorted, duplicates and non-finite ones
    /// dropped).
    pub fn new(bounds: &[f64]) -> Histogram {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        Histogram {
            counts: vec![0; bounds.len()],
            bounds,
            sum: 0.0,
            count: 0,
        }
    }

    /// Counts one observation.
    pub fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    /// How many observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of the observations.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Each bucket's upper bound and the observations at or below it (cumulative).
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bounds
            .iter()
            .zip(&self.counts)
            .scan(0, |total, (bound, count)| {
                *total += count;
                Some((*bound, *total))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_sorted_and_cumulative() {
        let mut h = Histogram::new(&[0.1, 0.01, 1.0, f64::NAN, 1.0]);
        for v in [0.005, 0.05, 0.05, 0.5, 7.0] {
            h.observe(v);
        }
        let buckets: Vec<(f64, u64)> = h.cumulative().collect();
        assert_eq!(buckets, [(0.01, 1), (0.1, 3), (1.0, 4)]);
        assert_eq!((h.count(), h.sum()), (5, 7.605));
    }
}

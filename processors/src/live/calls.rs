//! The live value of one tool-call series: calls, errors and a latency histogram with
//! fixed bucket bounds (Prometheus' classic histogram: cumulated when rendered).

/// Calls, errors and latencies of one (tenant, server, method, tool) since the series
/// appeared.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolCalls {
    pub calls: u64,
    pub errors: u64,
    /// Calls per bucket (not cumulative): `buckets[i]` counts latencies in
    /// `(bounds[i-1], bounds[i]]`; slower calls than the last bound are only in `calls`.
    pub buckets: Vec<u64>,
    /// Sum of latencies in microseconds.
    pub sum_us: u64,
}

impl ToolCalls {
    /// Counts one call of `latency_us` against the bucket upper bounds `bounds_us`
    /// (ascending).
    pub fn record(&mut self, bounds_us: &[u64], latency_us: u64, error: bool) {
        if self.buckets.len() != bounds_us.len() {
            self.buckets.resize(bounds_us.len(), 0);
        }
        self.calls += 1;
        self.errors += u64::from(error);
        self.sum_us = self.sum_us.saturating_add(latency_us);
        // `le` is inclusive: the first bound at or above the latency.
        let i = bounds_us.partition_point(|b| *b < latency_us);
        if let Some(bucket) = self.buckets.get_mut(i) {
            *bucket += 1;
        }
    }

    /// `(upper bound in seconds, cumulative count)` per bucket, for the text format.
    pub fn cumulative(&self, bounds_s: &[f64]) -> Vec<(f64, u64)> {
        let mut running = 0;
        bounds_s
            .iter()
            .enumerate()
            .map(|(i, le)| {
                running += self.buckets.get(i).copied().unwrap_or(0);
                (*le, running)
            })
            .collect()
    }

    /// Sum of latencies in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds_and_cumulate() {
        let bounds_us = [100_000, 1_000_000];
        let mut t = ToolCalls::default();
        t.record(&bounds_us, 100_000, false); // exactly 0.1 s: in le=0.1
        t.record(&bounds_us, 100_001, true);
        t.record(&bounds_us, 5_000_000, false); // only in +Inf
        assert_eq!((t.calls, t.errors), (3, 1));
        assert_eq!(t.cumulative(&[0.1, 1.0]), [(0.1, 1), (1.0, 2)]);
        assert!((t.sum_seconds() - 5.200001).abs() < 1e-9);
    }
}

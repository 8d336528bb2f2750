//! `metrics:` in `mcpulse.yaml`: the live golden signals on `/metrics`.
//!
//! ```yaml
//! metrics:
//!   live_signals: true           # per-series calls, errors, latency, availability, incidents
//!   max_series: 10000            # label sets per kind (tool calls, probes, incidents);
//!                                # beyond: folded into one __other__ series
//!   max_label_length: 128        # longer server/tool/method/region values are cut (bytes)
//!   latency_buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
//!   retire_after: 1h             # a series without values this long leaves /metrics
//! ```

use std::time::Duration;

use serde::Deserialize;

/// Most histogram buckets accepted (each is one line per series on every scrape).
pub const MAX_BUCKETS: usize = 40;

/// `metrics:` — the live golden signals the signals and incident stages expose on
/// `/metrics`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LiveMetricsConfig {
    /// Expose the live series (default true). The process's own counters are always on
    /// `/metrics`.
    pub live_signals: bool,
    /// Label sets kept per kind of series — tool calls (tenant, server, method, tool),
    /// probes (tenant, server, region) and open incidents (tenant, server, severity);
    /// values of label sets beyond it are folded into one series whose labels are
    /// `__other__` (default 10000).
    pub max_series: usize,
    /// Label values taken from spans and probe results (server, tool, method, region)
    /// are cut to this many bytes (default 128).
    pub max_label_length: usize,
    /// Upper bounds of the latency histogram buckets, in seconds, ascending (`+Inf` is
    /// implied).
    pub latency_buckets: Vec<f64>,
    /// A series that received nothing for this long is dropped from `/metrics` and frees
    /// its place under the cap (default 1h; at least 1m).
    #[serde(with = "humantime_serde")]
    pub retire_after: Duration,
}

impl Default for LiveMetricsConfig {
    fn default() -> Self {
        Self {
            live_signals: true,
            max_series: 10_000,
            max_label_length: 128,
            latency_buckets: vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ],
            retire_after: Duration::from_secs(3600),
        }
    }
}

impl LiveMetricsConfig {
    /// Checks what serde cannot; errors name the field under `metrics.`.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_series == 0 {
            return Err("metrics.max_series: must be positive".into());
        }
        if self.max_label_length < 16 {
            return Err("metrics.max_label_length: at least 16".into());
        }
        if self.latency_buckets.is_empty() || self.latency_buckets.len() > MAX_BUCKETS {
            return Err(format!(
                "metrics.latency_buckets: between 1 and {MAX_BUCKETS} bounds"
            ));
        }
        for (i, b) in self.latency_buckets.iter().enumerate() {
            if !b.is_finite() || *b <= 0.0 {
                return Err(format!(
                    "metrics.latency_buckets[{i}]: {b} is not a positive number of seconds"
                ));
            }
            if i > 0 && *b <= self.latency_buckets[i - 1] {
                return Err(format!(
                    "metrics.latency_buckets[{i}]: {b} is not above the bound before it"
                ));
            }
        }
        if self.retire_after < Duration::from_secs(60) {
            return Err("metrics.retire_after: at least 1m".into());
        }
        Ok(())
    }

    /// The bucket bounds in microseconds (what latencies are recorded in).
    pub fn bucket_bounds_us(&self) -> Vec<u64> {
        self.latency_buckets
            .iter()
            .map(|s| (s * 1e6).round() as u64)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_unknown_fields_are_refused() {
        LiveMetricsConfig::default().validate().unwrap();
        let parsed: LiveMetricsConfig =
            serde_yaml_ng::from_str("max_series: 50\nretire_after: 10m\n").unwrap();
        assert_eq!(parsed.max_series, 50);
        assert_eq!(parsed.retire_after, Duration::from_secs(600));
        let err = serde_yaml_ng::from_str::<LiveMetricsConfig>("max_serie: 5\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let bad = |c: LiveMetricsConfig| c.validate().unwrap_err();
        let err = bad(LiveMetricsConfig {
            max_series: 0,
            ..LiveMetricsConfig::default()
        });
        assert!(err.starts_with("metrics.max_series"), "{err}");
        let err = bad(LiveMetricsConfig {
            latency_buckets: vec![0.1, 0.1],
            ..LiveMetricsConfig::default()
        });
        assert!(err.starts_with("metrics.latency_buckets[1]"), "{err}");
        let err = bad(LiveMetricsConfig {
            latency_buckets: vec![-1.0],
            ..LiveMetricsConfig::default()
        });
        assert!(err.starts_with("metrics.latency_buckets[0]"), "{err}");
        let err = bad(LiveMetricsConfig {
            retire_after: Duration::from_secs(5),
            ..LiveMetricsConfig::default()
        });
        assert!(err.starts_with("metrics.retire_after"), "{err}");
    }
}

//! One closed window of one series: the unit the table writer and the rules consume.

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use mcpulse_schemas::latency_hist;
use serde::{Deserialize, Serialize};

/// Where a series' values come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalSource {
    /// Calls seen as spans (keyed by tool and method).
    Spans,
    /// Probe results (keyed by region).
    Probes,
}

impl SignalSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SignalSource::Spans => "spans",
            SignalSource::Probes => "probes",
        }
    }
}

/// The identity of a series.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    pub source: SignalSource,
    pub tenant: String,
    pub server: String,
    /// `gen_ai.tool.name` (spans series).
    pub tool: Option<String>,
    /// `mcp.method.name` (spans series).
    pub method: Option<String>,
    /// Probing region (probes series).
    pub region: Option<String>,
}

/// Minutes since the Unix epoch (the window of an event time).
pub type Minute = i64;

/// The minute an event time (ns since the epoch) falls in.
pub fn minute_of(time_ns: i64) -> Minute {
    time_ns.div_euclid(60_000_000_000)
}

/// The start of `minute`.
pub fn minute_start(minute: Minute) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(minute * 60, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// One closed one-minute window of one series.
#[derive(Clone, Debug)]
pub struct SignalRow {
    pub minute: Minute,
    pub key: SeriesKey,
    /// Calls (spans) or probes run (probes).
    pub calls: u64,
    /// Failed calls or failed probes.
    pub errors: u64,
    /// Latencies in microseconds (see [`latency_hist`]).
    pub latency: Histogram<u64>,
    /// Peak calls in flight at once (spans series).
    pub peak_in_flight: Option<u64>,
    /// The row folds series beyond the tenant's cardinality cap.
    pub overflow: bool,
}

impl SignalRow {
    /// An empty window of `key`.
    pub fn new(key: SeriesKey, minute: Minute) -> Self {
        Self {
            minute,
            key,
            calls: 0,
            errors: 0,
            latency: latency_hist::new_histogram(),
            peak_in_flight: None,
            overflow: false,
        }
    }

    /// Errors over calls (0 without calls).
    pub fn error_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.errors as f64 / self.calls as f64
        }
    }

    /// The latency at quantile `q` in milliseconds (`None` without values).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        latency_hist::quantile_ms(&self.latency, q)
    }

    /// Start of the window.
    pub fn start(&self) -> DateTime<Utc> {
        minute_start(self.minute)
    }
}

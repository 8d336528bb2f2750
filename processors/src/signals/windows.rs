//! Open one-minute windows per series, with the per-tenant cardinality cap.
//!
//! Series are interned: a span's (tenant, server, tool, method) is hashed once and
//! looked up without allocating, so the hot path costs one hash, one probe and a few
//! additions. Each series keeps its open windows (usually one or two minutes) in a small
//! vector. Memory is bounded by the number of open series, not by the number of spans.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use hdrhistogram::Histogram;
use mcpulse_schemas::latency_hist;
use serde::{Deserialize, Serialize};

use super::row::{Minute, SeriesKey, SignalRow, SignalSource};

/// Resolution of the in-flight sweep inside a minute (100 ms).
pub const SLOT_NS: u64 = 100_000_000;
/// Slots per minute.
pub const SLOTS: usize = 600;
const MINUTE_NS: u64 = 60_000_000_000;

/// The server name of the per-tenant overflow series.
pub const OVERFLOW_SERVER: &str = "__overflow__";

/// A small, fast, non-cryptographic hasher (FxHash) for interning lookups.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let v = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(SEED);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(SEED);
        }
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

fn key_hash(
    source: SignalSource,
    tenant: &str,
    server: &str,
    a: Option<&str>,
    b: Option<&str>,
) -> u64 {
    let mut h = FxHasher::default();
    h.write(&[source as u8]);
    for part in [Some(tenant), Some(server), a, b] {
        match part {
            Some(s) => {
                h.write(s.as_bytes());
                h.write(&[0xff]);
            }
            None => h.write(&[0xfe]),
        }
    }
    h.finish()
}

/// An empty window histogram (the codec's bounds, 32-bit counts).
fn new_window_histogram() -> Histogram<u32> {
    let mut h = Histogram::new_with_bounds(
        latency_hist::LOWEST,
        latency_hist::INITIAL_HIGHEST,
        latency_hist::SIGFIG,
    )
    .expect("the codec's bounds are valid");
    h.auto(true);
    h
}

/// The 64-bit histogram rows and the codec use.
fn widen(h: &Histogram<u32>) -> Histogram<u64> {
    let mut out = latency_hist::new_histogram();
    for v in h.iter_recorded() {
        // Auto-resizing: recording a value the source held cannot fail.
        let _ = out.record_n(v.value_iterated_to(), u64::from(v.count_at_value()));
    }
    out
}

/// Back to 32-bit counts (a checkpoint's histograms).
fn narrow(h: &Histogram<u64>) -> Result<Histogram<u32>, String> {
    let mut out = new_window_histogram();
    for v in h.iter_recorded() {
        let count = u32::try_from(v.count_at_value())
            .map_err(|_| "latency: a count exceeds 32 bits".to_string())?;
        out.record_n(v.value_iterated_to(), count)
            .map_err(|e| format!("latency: {e:?}"))?;
    }
    Ok(out)
}

/// One open window of one series.
#[derive(Clone, Debug)]
pub struct Window {
    pub minute: Minute,
    pub calls: u64,
    pub errors: u64,
    /// Latencies in microseconds, with 32-bit counts (half the memory of the 64-bit
    /// histograms rows carry; a window never sees 4 billion calls of one value).
    pub latency: Histogram<u32>,
    /// Difference array of calls in flight per 100 ms slot (allocated from the second
    /// call on; one call alone peaks at 1).
    pub in_flight: Option<Box<[i32]>>,
    /// Slot range of the first call, kept until the sweep array exists.
    first_call: Option<(u16, u16)>,
}

impl Window {
    fn new(minute: Minute) -> Self {
        Self {
            minute,
            calls: 0,
            errors: 0,
            latency: new_window_histogram(),
            in_flight: None,
            first_call: None,
        }
    }

    /// Adds one call running over slots `from..=to` of this minute.
    fn add_in_flight(&mut self, from: u16, to: u16) {
        match (&mut self.in_flight, self.first_call) {
            (Some(diff), _) => {
                diff[from as usize] += 1;
                if (to as usize) + 1 < SLOTS {
                    diff[to as usize + 1] -= 1;
                }
            }
            (None, None) => self.first_call = Some((from, to)),
            (None, Some(first)) => {
                let mut diff = vec![0i32; SLOTS].into_boxed_slice();
                for (f, t) in [first, (from, to)] {
                    diff[f as usize] += 1;
                    if (t as usize) + 1 < SLOTS {
                        diff[t as usize + 1] -= 1;
                    }
                }
                self.in_flight = Some(diff);
            }
        }
    }

    /// The most calls in flight in any 100 ms slot.
    pub fn peak_in_flight(&self) -> u64 {
        match (&self.in_flight, self.first_call) {
            (Some(diff), _) => {
                let mut running = 0i64;
                let mut peak = 0i64;
                for d in diff.iter() {
                    running += i64::from(*d);
                    peak = peak.max(running);
                }
                peak.max(0) as u64
            }
            (None, Some(_)) => 1,
            (None, None) => 0,
        }
    }
}

/// One interned series and its open windows.
#[derive(Clone, Debug)]
struct Series {
    key: SeriesKey,
    hash: u64,
    overflow: bool,
    windows: Vec<Window>,
    /// The last minute a value arrived (for retiring idle series).
    last_minute: Minute,
}

/// What a span or probe contributes to its window.
pub struct Observation<'a> {
    pub source: SignalSource,
    pub tenant: &'a str,
    pub server: &'a str,
    /// Tool (spans) or region (probes).
    pub a: Option<&'a str>,
    /// Method (spans).
    pub b: Option<&'a str>,
    /// Event time deciding the window: the end of a call (a call counts in the minute it
    /// completed, like a Prometheus histogram), the start of a probe.
    pub time_ns: u64,
    /// Start of the call, for the in-flight sweep (spans), or `None`.
    pub start_ns: Option<u64>,
    pub latency_us: u64,
    pub error: bool,
}

/// Outcome of [`Windows::add`].
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    /// Counted in its window.
    Counted,
    /// Counted in the tenant's overflow series (the cap was reached).
    Overflow,
    /// Its minute is already closed: not counted.
    Late,
}

/// All open windows of one log partition.
#[derive(Default)]
pub struct Windows {
    series: Vec<Series>,
    /// Free slots of `series` (retired series).
    free: Vec<u32>,
    by_hash: FxMap<u64, Vec<u32>>,
    per_tenant: HashMap<String, usize>,
    /// Windows of minutes below this are closed.
    closed_before: Minute,
    max_series_per_tenant: usize,
}

impl Windows {
    pub fn new(max_series_per_tenant: usize, closed_before: Minute) -> Self {
        Self {
            max_series_per_tenant: max_series_per_tenant.max(1),
            closed_before,
            ..Self::default()
        }
    }

    /// Minutes below this are closed.
    pub fn closed_before(&self) -> Minute {
        self.closed_before
    }

    /// Series currently interned.
    pub fn series_count(&self) -> usize {
        self.series.len() - self.free.len()
    }

    /// Open windows.
    pub fn open_windows(&self) -> usize {
        self.series.iter().map(|s| s.windows.len()).sum()
    }

    fn find(
        &self,
        hash: u64,
        source: SignalSource,
        tenant: &str,
        server: &str,
        a: Option<&str>,
        b: Option<&str>,
    ) -> Option<u32> {
        self.by_hash.get(&hash)?.iter().copied().find(|&id| {
            let k = &self.series[id as usize].key;
            k.source == source
                && k.tenant == tenant
                && k.server == server
                && match source {
                    SignalSource::Spans => k.tool.as_deref() == a && k.method.as_deref() == b,
                    SignalSource::Probes => k.region.as_deref() == a,
                }
        })
    }

    fn intern(&mut self, key: SeriesKey, hash: u64, overflow: bool, minute: Minute) -> u32 {
        *self.per_tenant.entry(key.tenant.clone()).or_default() += 1;
        let series = Series {
            key,
            hash,
            overflow,
            windows: Vec::new(),
            last_minute: minute,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.series[id as usize] = series;
                id
            }
            None => {
                self.series.push(series);
                (self.series.len() - 1) as u32
            }
        };
        self.by_hash.entry(hash).or_default().push(id);
        id
    }

    fn series_id(&mut self, o: &Observation<'_>, minute: Minute) -> (u32, bool) {
        let hash = key_hash(o.source, o.tenant, o.server, o.a, o.b);
        if let Some(id) = self.find(hash, o.source, o.tenant, o.server, o.a, o.b) {
            return (id, self.series[id as usize].overflow);
        }
        let count = self.per_tenant.get(o.tenant).copied().unwrap_or(0);
        if count < self.max_series_per_tenant {
            let key = match o.source {
                SignalSource::Spans => SeriesKey {
                    source: o.source,
                    tenant: o.tenant.to_string(),
                    server: o.server.to_string(),
                    tool: o.a.map(str::to_string),
                    method: o.b.map(str::to_string),
                    region: None,
                },
                SignalSource::Probes => SeriesKey {
                    source: o.source,
                    tenant: o.tenant.to_string(),
                    server: o.server.to_string(),
                    tool: None,
                    method: None,
                    region: o.a.map(str::to_string),
                },
            };
            return (self.intern(key, hash, false, minute), false);
        }
        // Over the cap: the tenant's overflow series (allowed beyond the cap: one more).
        let hash = key_hash(o.source, o.tenant, OVERFLOW_SERVER, None, None);
        if let Some(id) = self.find(hash, o.source, o.tenant, OVERFLOW_SERVER, None, None) {
            return (id, true);
        }
        let key = SeriesKey {
            source: o.source,
            tenant: o.tenant.to_string(),
            server: OVERFLOW_SERVER.to_string(),
            tool: None,
            method: None,
            region: None,
        };
        (self.intern(key, hash, true, minute), true)
    }

    /// Adds one call or probe to the window of its minute.
    pub fn add(&mut self, o: &Observation<'_>) -> Added {
        let minute = (o.time_ns / MINUTE_NS) as Minute;
        if minute < self.closed_before {
            return Added::Late;
        }
        let (id, overflow) = self.series_id(o, minute);
        let series = &mut self.series[id as usize];
        series.last_minute = series.last_minute.max(minute);
        let window = match series.windows.iter().position(|w| w.minute == minute) {
            Some(i) => &mut series.windows[i],
            None => {
                series.windows.push(Window::new(minute));
                series.windows.last_mut().expect("pushed")
            }
        };
        window.calls += 1;
        window.errors += u64::from(o.error);
        // Saturating record: auto-resize is on, and values beyond u64 cannot occur.
        let _ = window
            .latency
            .record(o.latency_us.max(latency_hist::LOWEST));
        if let Some(start_ns) = o.start_ns {
            // The part of the call inside its completion minute.
            let minute_start = minute as u64 * MINUTE_NS;
            let from = (start_ns.saturating_sub(minute_start) / SLOT_NS).min(SLOTS as u64 - 1);
            let to = ((o.time_ns - minute_start) / SLOT_NS).min(SLOTS as u64 - 1);
            window.add_in_flight(from.min(to) as u16, to as u16);
        }
        if overflow {
            Added::Overflow
        } else {
            Added::Counted
        }
    }

    /// Closes every window of a minute below `closed_before` and returns them as rows
    /// sorted by (series, minute); retires series idle for more than `retire_after`
    /// minutes.
    pub fn close(&mut self, closed_before: Minute, retire_after: Minute) -> Vec<SignalRow> {
        if closed_before <= self.closed_before {
            return Vec::new();
        }
        self.closed_before = closed_before;
        let mut rows = Vec::new();
        for series in &mut self.series {
            if series.windows.is_empty() {
                continue;
            }
            let mut i = 0;
            while i < series.windows.len() {
                if series.windows[i].minute < closed_before {
                    let w = series.windows.swap_remove(i);
                    rows.push(SignalRow {
                        minute: w.minute,
                        key: series.key.clone(),
                        calls: w.calls,
                        errors: w.errors,
                        peak_in_flight: match series.key.source {
                            SignalSource::Spans => Some(w.peak_in_flight()),
                            SignalSource::Probes => None,
                        },
                        latency: widen(&w.latency),
                        overflow: series.overflow,
                    });
                } else {
                    i += 1;
                }
            }
        }
        // Retire idle series so their slots (and the tenant's cap) free up.
        for id in 0..self.series.len() {
            let s = &self.series[id];
            if s.windows.is_empty()
                && s.last_minute + retire_after < closed_before
                // Retired slots have an empty tenant (tenant ids are never empty).
                && !s.key.tenant.is_empty()
            {
                let hash = s.hash;
                let tenant = s.key.tenant.clone();
                if let Some(ids) = self.by_hash.get_mut(&hash) {
                    ids.retain(|&x| x != id as u32);
                    if ids.is_empty() {
                        self.by_hash.remove(&hash);
                    }
                }
                if let Some(n) = self.per_tenant.get_mut(&tenant) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_tenant.remove(&tenant);
                    }
                }
                self.series[id].key.tenant = String::new();
                self.free.push(id as u32);
            }
        }
        rows.sort_by(|a, b| (&a.key, a.minute).cmp(&(&b.key, b.minute)));
        rows
    }

    /// The open windows, for a checkpoint (deterministic order).
    pub fn snapshot(&self) -> Vec<WindowState> {
        let mut out: Vec<WindowState> = self
            .series
            .iter()
            .filter(|s| !s.key.tenant.is_empty())
            .flat_map(|s| {
                s.windows.iter().map(move |w| WindowState {
                    key: s.key.clone(),
                    overflow: s.overflow,
                    minute: w.minute,
                    last_minute: s.last_minute,
                    calls: w.calls,
                    errors: w.errors,
                    latency: hex::encode(latency_hist::encode(&widen(&w.latency))),
                    in_flight: w.in_flight.as_ref().map(|d| {
                        d.iter()
                            .enumerate()
                            .filter(|(_, v)| **v != 0)
                            .map(|(i, v)| (i as u16, *v))
                            .collect()
                    }),
                    first_call: w.first_call,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.key, a.minute).cmp(&(&b.key, b.minute)));
        out
    }

    /// Rebuilds the windows from a checkpoint.
    pub fn restore(
        max_series_per_tenant: usize,
        closed_before: Minute,
        windows: Vec<WindowState>,
    ) -> Result<Self, String> {
        let mut out = Self::new(max_series_per_tenant, closed_before);
        for w in windows {
            let (a, b) = match w.key.source {
                SignalSource::Spans => (w.key.tool.clone(), w.key.method.clone()),
                SignalSource::Probes => (w.key.region.clone(), None),
            };
            let hash = key_hash(
                w.key.source,
                &w.key.tenant,
                &w.key.server,
                a.as_deref(),
                b.as_deref(),
            );
            let id = match out.find(
                hash,
                w.key.source,
                &w.key.tenant,
                &w.key.server,
                a.as_deref(),
                b.as_deref(),
            ) {
                Some(id) => id,
                None => out.intern(w.key.clone(), hash, w.overflow, w.last_minute),
            };
            let bytes = hex::decode(&w.latency).map_err(|e| format!("latency: {e}"))?;
            let latency =
                narrow(&latency_hist::decode(&bytes).map_err(|e| format!("latency: {e}"))?)?;
            let in_flight = match w.in_flight {
                Some(entries) => {
                    let mut diff = vec![0i32; SLOTS].into_boxed_slice();
                    for (slot, v) in entries {
                        *diff
                            .get_mut(slot as usize)
                            .ok_or_else(|| format!("in_flight slot {slot} out of range"))? = v;
                    }
                    Some(diff)
                }
                None => None,
            };
            out.series[id as usize].windows.push(Window {
                minute: w.minute,
                calls: w.calls,
                errors: w.errors,
                latency,
                in_flight,
                first_call: w.first_call,
            });
        }
        Ok(out)
    }
}

/// One open window in a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    pub key: SeriesKey,
    pub overflow: bool,
    pub minute: Minute,
    pub last_minute: Minute,
    pub calls: u64,
    pub errors: u64,
    /// Hex of the V2-encoded histogram.
    pub latency: String,
    /// The non-zero entries of the in-flight difference array: (slot, delta).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<Vec<(u16, i32)>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_call: Option<(u16, u16)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = MINUTE_NS;

    fn span<'a>(
        tenant: &'a str,
        server: &'a str,
        tool: &'a str,
        start_ns: u64,
        ms: u64,
        error: bool,
    ) -> Observation<'a> {
        Observation {
            source: SignalSource::Spans,
            tenant,
            server,
            a: Some(tool),
            b: Some("tools/call"),
            time_ns: start_ns + ms * 1_000_000,
            start_ns: Some(start_ns),
            latency_us: ms * 1000,
            error,
        }
    }

    #[test]
    fn counts_errors_and_latency_per_series_and_minute() {
        let mut w = Windows::new(100, 0);
        for i in 0..100u64 {
            assert_eq!(
                w.add(&span(
                    "acme",
                    "weather",
                    "forecast",
                    10 * M + i * 100_000_000,
                    i + 1,
                    i % 10 == 0
                )),
                Added::Counted
            );
        }
        w.add(&span("acme", "weather", "alerts", 10 * M, 5, false));
        w.add(&span("acme", "weather", "forecast", 11 * M, 5, false));
        assert_eq!(w.series_count(), 2);
        let rows = w.close(11, 60);
        assert_eq!(rows.len(), 2, "minute 11 stays open");
        let forecast = rows
            .iter()
            .find(|r| r.key.tool.as_deref() == Some("forecast"))
            .unwrap();
        assert_eq!((forecast.calls, forecast.errors), (100, 10));
        let p50 = forecast.quantile_ms(0.5).unwrap();
        assert!((49.9..=51.1).contains(&p50), "{p50}");
        assert_eq!(forecast.quantile_ms(1.0).map(|v| v.round()), Some(100.0));
        assert_eq!(w.open_windows(), 1);
        // Late: minute 10 is closed now.
        assert_eq!(
            w.add(&span("acme", "weather", "forecast", 10 * M, 5, false)),
            Added::Late
        );
    }

    #[test]
    fn peak_in_flight_sweeps_overlaps() {
        let mut w = Windows::new(100, 0);
        // Three calls overlapping around 1.0–1.5 s, one later alone.
        w.add(&span("t", "s", "x", M, 1500, false));
        w.add(&span("t", "s", "x", M + 200_000_000, 1000, false));
        w.add(&span("t", "s", "x", M + 900_000_000, 300, false));
        w.add(&span("t", "s", "x", M + 10_000_000_000, 100, false));
        let rows = w.close(2, 60);
        assert_eq!(rows[0].peak_in_flight, Some(3));
        let mut single = Windows::new(100, 0);
        single.add(&span("t", "s", "x", M, 1500, false));
        assert_eq!(single.close(2, 60)[0].peak_in_flight, Some(1));
    }

    #[test]
    fn the_cap_folds_new_series_into_overflow() {
        let mut w = Windows::new(2, 0);
        assert_eq!(w.add(&span("t", "s", "a", M, 1, false)), Added::Counted);
        assert_eq!(w.add(&span("t", "s", "b", M, 1, false)), Added::Counted);
        assert_eq!(w.add(&span("t", "s", "c", M, 1, false)), Added::Overflow);
        assert_eq!(w.add(&span("t", "s", "d", M, 1, true)), Added::Overflow);
        // Known series keep counting; another tenant has its own cap.
        assert_eq!(w.add(&span("t", "s", "a", M, 1, false)), Added::Counted);
        assert_eq!(w.add(&span("u", "s", "c", M, 1, false)), Added::Counted);
        let rows = w.close(2, 60);
        let overflow = rows.iter().find(|r| r.overflow).unwrap();
        assert_eq!(overflow.key.server, OVERFLOW_SERVER);
        assert_eq!((overflow.calls, overflow.errors), (2, 1));
    }

    #[test]
    fn idle_series_retire_and_free_the_cap() {
        let mut w = Windows::new(1, 0);
        w.add(&span("t", "s", "a", M, 1, false));
        w.close(2, 5);
        assert_eq!(w.series_count(), 1);
        w.close(10, 5);
        assert_eq!(w.series_count(), 0);
        assert_eq!(
            w.add(&span("t", "s", "b", 10 * M, 1, false)),
            Added::Counted
        );
    }

    #[test]
    fn snapshot_round_trip_preserves_windows() {
        let mut w = Windows::new(100, 0);
        for i in 0..50u64 {
            w.add(&span(
                "acme",
                "weather",
                "forecast",
                5 * M + i * 1_000_000_000,
                i + 1,
                i == 3,
            ));
        }
        w.add(&span("acme", "weather", "single", 5 * M, 7, false));
        w.add(&Observation {
            source: SignalSource::Probes,
            tenant: "acme",
            server: "weather",
            a: Some("eu-west"),
            b: None,
            time_ns: 5 * M,
            start_ns: None,
            latency_us: 40_000,
            error: false,
        });
        let state = w.snapshot();
        let json = serde_json::to_string(&state).unwrap();
        let back: Vec<WindowState> = serde_json::from_str(&json).unwrap();
        let mut restored = Windows::restore(100, 0, back).unwrap();
        let a = w.close(6, 60);
        let b = restored.close(6, 60);
        assert_eq!(a.len(), 3);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.key, y.key);
            assert_eq!(
                (x.calls, x.errors, x.peak_in_flight),
                (y.calls, y.errors, y.peak_in_flight)
            );
            assert_eq!(x.latency, y.latency);
        }
    }
}

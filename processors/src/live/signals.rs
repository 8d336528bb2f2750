//! The live golden signals of the process, fed by the signals operator as it reads spans
//! and probe results (every partition of the process shares one [`LiveSignals`]), and
//! rendered on `/metrics`:
//!
//! | family | type | labels |
//! |---|---|---|
//! | `mcpulse_tool_calls_total` | counter | tenant, server, method, tool |
//! | `mcpulse_tool_errors_total` | counter | tenant, server, method, tool |
//! | `mcpulse_tool_call_duration_seconds` | histogram | tenant, server, method, tool, le |
//! | `mcpulse_server_up` | gauge | tenant, server, region |
//! | `mcpulse_server_probes_total` | counter | tenant, server, region |
//! | `mcpulse_server_probe_failures_total` | counter | tenant, server, region |
//! | `mcpulse_server_last_probe_timestamp_seconds` | gauge | tenant, server, region |
//!
//! plus, without tenant labels, `mcpulse_live_series{kind}`,
//! `mcpulse_live_series_limit{kind}` and `mcpulse_live_series_folded_total{kind}`.
//!
//! Values count from the moment the process read them (late spans included, as the
//! archive does), so a restart starts the counters again (Prometheus' `rate()` handles
//! the reset) and a record replayed after a crash is counted again (at least once).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use mcpulse_schemas::metrics::{MetricsSource, PromWriter, Viewer};

use super::calls::ToolCalls;
use super::config::LiveMetricsConfig;
use super::probes::Availability;
use super::table::SeriesTable;

const TOOL_LABELS: [&str; 4] = ["tenant", "server", "method", "tool"];
const PROBE_LABELS: [&str; 3] = ["tenant", "server", "region"];

/// The live tool-call and probe series of the process.
pub struct LiveSignals {
    started: Instant,
    max_series: usize,
    bounds_us: Vec<u64>,
    bounds_s: Vec<f64>,
    calls: Mutex<SeriesTable<4, ToolCalls>>,
    probes: Mutex<SeriesTable<3, Availability>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere leaves counters that are still counters.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LiveSignals {
    pub fn new(config: &LiveMetricsConfig) -> Self {
        let retire_s = config.retire_after.as_secs();
        Self {
            started: Instant::now(),
            max_series: config.max_series,
            bounds_us: config.bucket_bounds_us(),
            bounds_s: config.latency_buckets.clone(),
            calls: Mutex::new(SeriesTable::new(
                config.max_series,
                config.max_label_length,
                retire_s,
            )),
            probes: Mutex::new(SeriesTable::new(
                config.max_series,
                config.max_label_length,
                retire_s,
            )),
        }
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Takes the tool-call series for a batch of calls (one lock per batch).
    pub fn calls(&self) -> CallsBatch<'_> {
        CallsBatch {
            table: lock(&self.calls),
            bounds_us: &self.bounds_us,
            now: self.now(),
        }
    }

    /// Counts one probe result of `server` from `region`, started at `started_ns`.
    pub fn probe(&self, tenant: &str, server: &str, region: &str, started_ns: i64, ok: bool) {
        let now = self.now();
        lock(&self.probes)
            .get([tenant, server, region], now)
            .record(started_ns, ok);
    }

    fn render_calls(&self, out: &mut PromWriter) {
        let viewer = out.viewer().clone();
        let (snapshot, held, folded) = {
            let table = lock(&self.calls);
            let snapshot = table.snapshot(|t| viewer.may_see(t), viewer == Viewer::Operator);
            (snapshot, table.len(), table.folded())
        };
        let series = snapshot.sorted();
        let all: Vec<(Vec<(&str, &str)>, &ToolCalls)> = series
            .iter()
            .map(|(v, c)| (labels(&TOOL_LABELS, v), c))
            .collect();
        for (l, c) in &all {
            out.counter(
                "mcpulse_tool_calls_total",
                "MCP calls read from spans, by tenant, server, method and tool.",
                l,
                c.calls,
            );
        }
        for (l, c) in &all {
            out.counter(
                "mcpulse_tool_errors_total",
                "MCP calls that failed (span status ERROR or error.type set).",
                l,
                c.errors,
            );
        }
        for (l, c) in &all {
            out.histogram(
                "mcpulse_tool_call_duration_seconds",
                "Duration of MCP calls (span end - start).",
                l,
                &c.cumulative(&self.bounds_s),
                c.sum_seconds(),
                c.calls,
            );
        }
        meta(out, "tool", held, self.max_series, folded);
    }

    fn render_probes(&self, out: &mut PromWriter) {
        let viewer = out.viewer().clone();
        let (snapshot, held, folded) = {
            let table = lock(&self.probes);
            let snapshot = table.snapshot(|t| viewer.may_see(t), viewer == Viewer::Operator);
            (snapshot, table.len(), table.folded())
        };
        let series = snapshot.sorted();
        let all: Vec<(Vec<(&str, &str)>, &Availability)> = series
            .iter()
            .map(|(v, a)| (labels(&PROBE_LABELS, v), a))
            .collect();
        for (l, a) in &all {
            out.gauge(
                "mcpulse_server_up",
                "1 when the latest probe result of the server from the region passed, else 0.",
                l,
                if a.up { 1.0 } else { 0.0 },
            );
        }
        for (l, a) in &all {
            out.counter(
                "mcpulse_server_probes_total",
                "Probe results read, by tenant, server and region.",
                l,
                a.probes,
            );
        }
        for (l, a) in &all {
            out.counter(
                "mcpulse_server_probe_failures_total",
                "Probe results that failed, by tenant, server and region.",
                l,
                a.failures,
            );
        }
        for (l, a) in &all {
            out.gauge(
                "mcpulse_server_last_probe_timestamp_seconds",
                "Start of the latest probe result (Unix seconds).",
                l,
                a.latest_seconds(),
            );
        }
        meta(out, "probe", held, self.max_series, folded);
    }
}

/// (name, value) label pairs of one series.
fn labels<'a, const N: usize>(
    names: &[&'static str; N],
    values: &'a [Arc<str>; N],
) -> Vec<(&'static str, &'a str)> {
    names
        .iter()
        .copied()
        .zip(values.iter().map(|v| &**v))
        .collect()
}

/// The tool-call series, locked for a batch of calls.
pub struct CallsBatch<'a> {
    table: MutexGuard<'a, SeriesTable<4, ToolCalls>>,
    bounds_us: &'a [u64],
    now: u64,
}

impl CallsBatch<'_> {
    /// Counts one call.
    pub fn record(
        &mut self,
        tenant: &str,
        server: &str,
        method: &str,
        tool: &str,
        latency_us: u64,
        error: bool,
    ) {
        self.table
            .get([tenant, server, method, tool], self.now)
            .record(self.bounds_us, latency_us, error);
    }
}

/// The cap's own series of one kind (no tenant labels: every viewer sees them).
pub(super) fn meta(out: &mut PromWriter, kind: &str, held: usize, limit: usize, folded: u64) {
    out.gauge(
        "mcpulse_live_series",
        "Live label sets held per kind (tool, probe, incident), the overflow series included.",
        &[("kind", kind)],
        held as f64,
    );
    out.gauge(
        "mcpulse_live_series_limit",
        "The cap on live label sets per kind (metrics.max_series).",
        &[("kind", kind)],
        limit as f64,
    );
    out.counter(
        "mcpulse_live_series_folded_total",
        "Distinct label sets folded into the __other__ series because the cap was reached.",
        &[("kind", kind)],
        folded,
    );
}

impl MetricsSource for LiveSignals {
    fn render(&self, out: &mut PromWriter) {
        let now = self.now();
        lock(&self.calls).retire(now);
        lock(&self.probes).retire(now);
        self.render_calls(out);
        self.render_probes(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(max_series: usize) -> LiveSignals {
        LiveSignals::new(&LiveMetricsConfig {
            max_series,
            latency_buckets: vec![0.1, 1.0],
            ..LiveMetricsConfig::default()
        })
    }

    fn render(live: &LiveSignals, viewer: Viewer) -> String {
        let mut out = PromWriter::for_viewer(viewer);
        live.render(&mut out);
        out.finish()
    }

    #[test]
    fn calls_and_probes_render_as_prometheus_families() {
        let l = live(100);
        {
            let mut calls = l.calls();
            calls.record("acme", "weather", "tools/call", "forecast", 50_000, false);
            calls.record("acme", "weather", "tools/call", "forecast", 500_000, true);
        }
        l.probe(
            "acme",
            "weather",
            "eu-west",
            1_700_000_000_000_000_000,
            false,
        );
        let text = render(&l, Viewer::Operator);
        let series = r#"{tenant="acme",server="weather",method="tools/call",tool="forecast""#;
        for line in [
            format!("mcpulse_tool_calls_total{series}}} 2"),
            format!("mcpulse_tool_errors_total{series}}} 1"),
            format!("mcpulse_tool_call_duration_seconds_bucket{series},le=\"0.1\"}} 1"),
            format!("mcpulse_tool_call_duration_seconds_bucket{series},le=\"1\"}} 2"),
            format!("mcpulse_tool_call_duration_seconds_bucket{series},le=\"+Inf\"}} 2"),
            format!("mcpulse_tool_call_duration_seconds_sum{series}}} 0.55"),
            format!("mcpulse_tool_call_duration_seconds_count{series}}} 2"),
            r#"mcpulse_server_up{tenant="acme",server="weather",region="eu-west"} 0"#.into(),
            r#"mcpulse_server_probe_failures_total{tenant="acme",server="weather",region="eu-west"} 1"#.into(),
            r#"mcpulse_server_last_probe_timestamp_seconds{tenant="acme",server="weather",region="eu-west"} 1700000000"#.into(),
            r#"mcpulse_live_series{kind="tool"} 1"#.into(),
            r#"mcpulse_live_series_limit{kind="probe"} 100"#.into(),
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line} missing:\n{text}");
        }
        assert_eq!(
            text.matches("# TYPE mcpulse_tool_call_duration_seconds histogram")
                .count(),
            1
        );
    }

    #[test]
    fn tenants_see_their_own_series_and_anonymous_scrapes_none() {
        let l = live(100);
        {
            let mut calls = l.calls();
            calls.record("acme", "weather", "tools/call", "forecast", 1, false);
            calls.record("globex", "maps", "tools/call", "route", 1, false);
        }
        let acme = render(&l, Viewer::Tenant("acme".into()));
        assert!(acme.contains("tenant=\"acme\""), "{acme}");
        assert!(!acme.contains("globex"), "{acme}");
        let public = render(&l, Viewer::Public);
        assert!(!public.contains("tenant="), "{public}");
        assert!(
            public.contains("mcpulse_live_series{kind=\"tool\"} 2\n"),
            "{public}"
        );
    }

    /// The cardinality cap: 1,000 distinct tool names from untrusted spans against a cap
    /// of 10 keep 10 series plus one `__other__` series holding every other call.
    #[test]
    fn the_cap_folds_extra_series_into_one_other_series_and_counts_them() {
        let l = live(10);
        {
            let mut calls = l.calls();
            for round in 0..2 {
                for i in 0..1000 {
                    let tool = format!("tool-{i:04}\"\n{}", "x".repeat(round * 500));
                    calls.record("acme", "weather", "tools/call", &tool, 1_000, false);
                }
            }
        }
        let text = render(&l, Viewer::Operator);
        let calls: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("mcpulse_tool_calls_total{"))
            .collect();
        assert_eq!(calls.len(), 11, "{calls:#?}");
        let other = r#"mcpulse_tool_calls_total{tenant="__other__",server="__other__",method="__other__",tool="__other__"} "#;
        let folded_calls: u64 = calls
            .iter()
            .find_map(|l| l.strip_prefix(other))
            .expect("the overflow series")
            .parse()
            .unwrap();
        assert_eq!(folded_calls, 2000 - 10, "every call counted somewhere");
        assert!(
            text.contains("mcpulse_live_series{kind=\"tool\"} 11\n"),
            "{text}"
        );
        let folded: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("mcpulse_live_series_folded_total{kind=\"tool\"} "))
            .unwrap()
            .parse()
            .unwrap();
        // 1,990 distinct label sets (the long second-round names are cut to 128 bytes,
        // distinct still), counted exactly.
        assert_eq!(folded, 1990);
        // Names are escaped and bounded: a raw newline would start a line of its own.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("mcpulse_"), "{line}");
            assert!(line.len() < 4 * 128 * 2 + 200, "{line}");
        }
        assert!(text.contains(r#"tool="tool-0000\"�"#), "{text}");
    }
}

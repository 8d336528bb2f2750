//! Prometheus text exposition: a small writer each component renders its own counters
//! with, so `/metrics` is assembled from the parts without a global registry.
//!
//! Series labelled with a tenant are rendered only for a scrape allowed to see that
//! tenant: the writer carries the [`Viewer`] of the request, and sources of such series
//! ask it with [`Viewer::may_see`].

use std::fmt::Write;

/// Something that can render its metrics.
pub trait MetricsSource: Send + Sync {
    fn render(&self, out: &mut PromWriter);
}

/// Who is scraping: decides which tenant-labelled series are rendered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Viewer {
    /// An operator (or an in-process caller): every tenant's series.
    #[default]
    Operator,
    /// A tenant's token: that tenant's series only.
    Tenant(String),
    /// No credential: no tenant-labelled series at all.
    Public,
}

impl Viewer {
    /// Whether series of `tenant` may be rendered for this viewer.
    pub fn may_see(&self, tenant: &str) -> bool {
        match self {
            Viewer::Operator => true,
            Viewer::Tenant(t) => t == tenant,
            Viewer::Public => false,
        }
    }
}

/// Accumulates the Prometheus text format (version 0.0.4).
#[derive(Default)]
pub struct PromWriter {
    text: String,
    declared: std::collections::HashSet<String>,
    viewer: Viewer,
}

/// Kind of metric family.
#[derive(Clone, Copy)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

impl PromWriter {
    /// A writer rendering tenant-labelled series for `viewer` only.
    pub fn for_viewer(viewer: Viewer) -> Self {
        Self {
            viewer,
            ..Self::default()
        }
    }

    /// Whose series this scrape may see.
    pub fn viewer(&self) -> &Viewer {
        &self.viewer
    }

    fn declare(&mut self, name: &str, kind: MetricKind, help: &str) {
        if !self.declared.contains(name) {
            self.declared.insert(name.to_string());
            let _ = writeln!(self.text, "# HELP {name} {help}");
            let _ = writeln!(self.text, "# TYPE {name} {}", kind.as_str());
        }
    }

    fn line(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        extra: Option<(&str, &str)>,
        value: f64,
    ) {
        self.text.push_str(name);
        if !labels.is_empty() || extra.is_some() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().chain(extra.as_ref()).enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(k);
                self.text.push_str("=\"");
                push_escaped(&mut self.text, v);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// Writes one sample, declaring its family (HELP and TYPE) the first time it is seen.
    pub fn sample(
        &mut self,
        name: &str,
        kind: MetricKind,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        self.declare(name, kind, help);
        self.line(name, labels, None, value);
    }

    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.sample(name, MetricKind::Counter, help, labels, value as f64);
    }

    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(name, MetricKind::Gauge, help, labels, value);
    }

    /// Writes one histogram series: `{name}_bucket` for each `(upper bound, cumulative
    /// count)` in `buckets` (ascending) and `le="+Inf"` (= `count`), then `{name}_sum`
    /// and `{name}_count`.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        self.declare(name, MetricKind::Histogram, help);
        let bucket = format!("{name}_bucket");
        let mut le = String::new();
        for (bound, cumulative) in buckets {
            le.clear();
            let _ = write!(le, "{bound}");
            self.line(&bucket, labels, Some(("le", &le)), *cumulative as f64);
        }
        self.line(&bucket, labels, Some(("le", "+Inf")), count as f64);
        self.line(&format!("{name}_sum"), labels, None, sum);
        self.line(&format!("{name}_count"), labels, None, count as f64);
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// Appends a label value with `\`, `"` and newlines escaped.
fn push_escaped(out: &mut String, v: &str) {
    if !v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declares_each_family_once_and_escapes_labels() {
        let mut w = PromWriter::default();
        w.counter("x_total", "Things.", &[("t", "a\"b")], 3);
        w.counter("x_total", "Things.", &[("t", "c")], 4);
        let text = w.finish();
        assert_eq!(text.matches("# TYPE x_total counter").count(), 1);
        assert!(text.contains("x_total{t=\"a\\\"b\"} 3\n"), "{text}");
        assert!(text.contains("x_total{t=\"c\"} 4\n"));
        let mut w = PromWriter::default();
        w.gauge("y", "Y.", &[("t", "a\\b\nc")], 1.0);
        assert!(w.finish().contains("y{t=\"a\\\\b\\nc\"} 1\n"));
    }

    #[test]
    fn histograms_write_cumulative_buckets_sum_and_count() {
        let mut w = PromWriter::default();
        w.histogram(
            "d_seconds",
            "Durations.",
            &[("tool", "x")],
            &[(0.005, 1), (2.5, 3)],
            4.25,
            4,
        );
        let text = w.finish();
        assert_eq!(
            text,
            "# HELP d_seconds Durations.\n# TYPE d_seconds histogram\n\
             d_seconds_bucket{tool=\"x\",le=\"0.005\"} 1\n\
             d_seconds_bucket{tool=\"x\",le=\"2.5\"} 3\n\
             d_seconds_bucket{tool=\"x\",le=\"+Inf\"} 4\n\
             d_seconds_sum{tool=\"x\"} 4.25\nd_seconds_count{tool=\"x\"} 4\n"
        );
    }

    #[test]
    fn viewers_see_their_own_tenant_only() {
        assert!(Viewer::Operator.may_see("acme"));
        assert!(Viewer::Tenant("acme".into()).may_see("acme"));
        assert!(!Viewer::Tenant("acme".into()).may_see("globex"));
        assert!(!Viewer::Public.may_see("acme"));
        let w = PromWriter::for_viewer(Viewer::Public);
        assert_eq!(w.viewer(), &Viewer::Public);
    }
}

//! Prometheus text exposition: a small writer each component renders its own counters
//! with, so `/metrics` is assembled from the parts without a global registry.

use std::fmt::Write;

/// Something that can render its metrics.
pub trait MetricsSource: Send + Sync {
    fn render(&self, out: &mut PromWriter);
}

/// Accumulates the Prometheus text format (version 0.0.4).
#[derive(Default)]
pub struct PromWriter {
    text: String,
    declared: std::collections::HashSet<String>,
}

/// Kind of metric family.
#[derive(Clone, Copy)]
pub enum MetricKind {
    Counter,
    Gauge,
}

impl PromWriter {
    /// Writes one sample, declaring its family (HELP and TYPE) the first time it is seen.
    pub fn sample(
        &mut self,
        name: &str,
        kind: MetricKind,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        if self.declared.insert(name.to_string()) {
            let kind = match kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
            };
            let _ = writeln!(self.text, "# HELP {name} {help}");
            let _ = writeln!(self.text, "# TYPE {name} {kind}");
        }
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.sample(name, MetricKind::Counter, help, labels, value as f64);
    }

    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(name, MetricKind::Gauge, help, labels, value);
    }

    pub fn finish(self) -> String {
        self.text
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
    }
}

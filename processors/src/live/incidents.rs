//! Open incidents per (tenant, server, severity), live on `/metrics` as
//! `mcpulse_server_incidents_open`. Each partition of the incident stage reports what its
//! engine holds open after every close; a released partition takes its incidents with
//! it (the new owner reports them once it has restored them). Alerts received on the
//! Alertmanager API count under their `server` label (else their `alertname`), as their
//! incidents do; an incident without a server would have `server=""`.
//!
//! The cap applies when rendering: label sets past `max_series` (in label order) are
//! summed into `{tenant="__other__",server="__other__",severity=...}`.

use std::collections::{BTreeMap, HashMap};
use std::hash::RandomState;
use std::sync::{Mutex, PoisonError};

use mcpulse_schemas::AlertEvent;
use mcpulse_schemas::metrics::{MetricsSource, PromWriter, Viewer};

use super::config::LiveMetricsConfig;
use super::labels::{FoldedKeys, OTHER, sanitize};
use super::signals::meta;
use super::table::hash_labels;

/// (tenant, server, severity) → open incidents.
pub type OpenCounts = BTreeMap<(String, String, &'static str), u64>;

/// The open incidents of every partition of the process.
pub struct LiveIncidents {
    max_series: usize,
    max_label_length: usize,
    partitions: Mutex<HashMap<String, OpenCounts>>,
    folded: Mutex<FoldedKeys>,
    keys: RandomState,
}

impl std::fmt::Debug for LiveIncidents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveIncidents")
            .field("max_series", &self.max_series)
            .finish_non_exhaustive()
    }
}

impl LiveIncidents {
    pub fn new(config: &LiveMetricsConfig) -> Self {
        Self {
            max_series: config.max_series,
            max_label_length: config.max_label_length,
            partitions: Mutex::new(HashMap::new()),
            folded: Mutex::new(FoldedKeys::default()),
            keys: RandomState::new(),
        }
    }

    /// Counts what is open, by (tenant, server, severity), label values sanitized.
    pub fn count<'a>(&self, open: impl Iterator<Item = &'a AlertEvent>) -> OpenCounts {
        let mut counts = OpenCounts::new();
        for e in open {
            let server = e.server.as_deref().unwrap_or("");
            let key = (
                sanitize(&e.tenant, self.max_label_length).into_owned(),
                sanitize(server, self.max_label_length).into_owned(),
                e.severity.as_str(),
            );
            *counts.entry(key).or_default() += 1;
        }
        counts
    }

    /// What `partition` holds open now (replacing what it reported before).
    pub fn report(&self, partition: &str, counts: OpenCounts) {
        let mut partitions = self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if counts.is_empty() {
            partitions.remove(partition);
        } else {
            partitions.insert(partition.to_string(), counts);
        }
    }

    /// `partition` was released: its incidents are no longer this process's.
    pub fn release(&self, partition: &str) {
        self.report(partition, OpenCounts::new());
    }

    /// Every partition's counts summed, capped: (label sets kept, overflow per severity).
    fn merged(&self) -> (OpenCounts, BTreeMap<&'static str, u64>) {
        let mut all = OpenCounts::new();
        for counts in self
            .partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            for (key, n) in counts {
                *all.entry(key.clone()).or_default() += n;
            }
        }
        let mut overflow = BTreeMap::new();
        if all.len() > self.max_series {
            let first_past = all.keys().nth(self.max_series).cloned().expect("longer");
            let past = all.split_off(&first_past);
            let mut folded = self.folded.lock().unwrap_or_else(PoisonError::into_inner);
            for ((tenant, server, severity), n) in past {
                folded.note(hash_labels(&self.keys, &[&tenant, &server, severity]));
                *overflow.entry(severity).or_default() += n;
            }
        }
        (all, overflow)
    }
}

impl MetricsSource for LiveIncidents {
    fn render(&self, out: &mut PromWriter) {
        let (kept, overflow) = self.merged();
        let help =
            "Open incidents (flapping and suppressed included) by tenant, server and severity.";
        let viewer = out.viewer().clone();
        for ((tenant, server, severity), n) in &kept {
            if viewer.may_see(tenant) {
                out.gauge(
                    "mcpulse_server_incidents_open",
                    help,
                    &[
                        ("tenant", tenant),
                        ("server", server),
                        ("severity", severity),
                    ],
                    *n as f64,
                );
            }
        }
        if viewer == Viewer::Operator {
            for (severity, n) in &overflow {
                out.gauge(
                    "mcpulse_server_incidents_open",
                    help,
                    &[("tenant", OTHER), ("server", OTHER), ("severity", severity)],
                    *n as f64,
                );
            }
        }
        let held = kept.len() + overflow.len();
        let folded = self
            .folded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .count();
        meta(out, "incident", held, self.max_series, folded);
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use mcpulse_schemas::{AlertAction, AlertStatus, Severity};

    use super::*;

    fn incident(tenant: &str, server: Option<&str>, severity: Severity) -> AlertEvent {
        let mut e: AlertEvent = serde_json::from_value(serde_json::json!({
            "event_id": "e", "incident_id": "i", "dedup_key": "d",
            "action": "trigger", "status": "open", "tenant": tenant, "class": "unreachable",
            "severity": "P1", "scope": "global", "time": Utc::now(), "opened_at": Utc::now(),
            "summary": "s", "evidence": {},
        }))
        .expect("an alert event");
        e.server = server.map(str::to_string);
        e.severity = severity;
        e.action = AlertAction::Trigger;
        e.status = AlertStatus::Open;
        e
    }

    fn render(live: &LiveIncidents, viewer: Viewer) -> String {
        let mut out = PromWriter::for_viewer(viewer);
        live.render(&mut out);
        out.finish()
    }

    #[test]
    fn partitions_add_up_and_released_ones_leave() {
        let live = LiveIncidents::new(&LiveMetricsConfig::default());
        let p0 = [
            incident("acme", Some("weather"), Severity::P1),
            incident("acme", Some("weather"), Severity::P3),
            incident("acme", None, Severity::P3),
        ];
        let p1 = [incident("acme", Some("weather"), Severity::P1)];
        live.report("findings-0", live.count(p0.iter()));
        live.report("findings-1", live.count(p1.iter()));
        let text = render(&live, Viewer::Tenant("acme".into()));
        for line in [
            r#"mcpulse_server_incidents_open{tenant="acme",server="weather",severity="P1"} 2"#,
            r#"mcpulse_server_incidents_open{tenant="acme",server="weather",severity="P3"} 1"#,
            r#"mcpulse_server_incidents_open{tenant="acme",server="",severity="P3"} 1"#,
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line}:\n{text}");
        }
        assert!(!render(&live, Viewer::Tenant("globex".into())).contains("tenant="));
        live.release("findings-0");
        let text = render(&live, Viewer::Operator);
        assert!(
            text.contains(r#"{tenant="acme",server="weather",severity="P1"} 1"#),
            "{text}"
        );
        assert!(!text.contains("P3"), "{text}");
    }

    #[test]
    fn past_the_cap_label_sets_fold_per_severity() {
        let live = LiveIncidents::new(&LiveMetricsConfig {
            max_series: 2,
            ..LiveMetricsConfig::default()
        });
        let open: Vec<AlertEvent> = (0..5)
            .map(|i| incident("acme", Some(&format!("s{i}")), Severity::P2))
            .collect();
        live.report("findings-0", live.count(open.iter()));
        let text = render(&live, Viewer::Operator);
        let open_lines = text
            .lines()
            .filter(|l| l.starts_with("mcpulse_server_incidents_open{"))
            .count();
        assert_eq!(open_lines, 3, "{text}");
        assert!(
            text.contains(
                r#"mcpulse_server_incidents_open{tenant="__other__",server="__other__",severity="P2"} 3"#
            ),
            "{text}"
        );
        assert!(text.contains("mcpulse_live_series_folded_total{kind=\"incident\"} 3\n"));
        // A tenant never sees the overflow series (it mixes tenants).
        let acme = render(&live, Viewer::Tenant("acme".into()));
        assert!(!acme.contains("tenant=\"__other__\""), "{acme}");
    }
}

//! Consumer lag of the processor groups, read from the log every half second: shown on
//! `/metrics` and, in ingest, turned into backpressure.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcpulse_bus::{DynBus, GroupStatus};
use mcpulse_ingest::Backpressure;
use mcpulse_schemas::metrics::{MetricsSource, PromWriter};
use tracing::{debug, info, warn};

use super::GROUP_ARCHIVE_SPANS;

/// The last status of each watched group, for `/metrics`.
#[derive(Default)]
pub struct LagMetrics {
    last: Mutex<BTreeMap<String, GroupStatus>>,
}

impl LagMetrics {
    /// The last status read for `group`.
    pub fn get(&self, group: &str) -> Option<GroupStatus> {
        self.last.lock().expect("not poisoned").get(group).cloned()
    }

    fn set(&self, status: GroupStatus) {
        self.last
            .lock()
            .expect("not poisoned")
            .insert(status.group.clone(), status);
    }
}

impl MetricsSource for LagMetrics {
    fn render(&self, out: &mut PromWriter) {
        let last = self.last.lock().expect("not poisoned").clone();
        for status in last.values() {
            for p in &status.partitions {
                let partition = p.partition.to_string();
                let labels = [
                    ("group", status.group.as_str()),
                    ("topic", p.topic.as_str()),
                    ("partition", partition.as_str()),
                ];
                out.gauge(
                    "mcpulse_bus_end_offset",
                    "Next offset of the partition.",
                    &labels,
                    p.end_offset as f64,
                );
                out.gauge(
                    "mcpulse_bus_committed_offset",
                    "Committed offset of the group (0 before its first commit).",
                    &labels,
                    p.committed.unwrap_or(0) as f64,
                );
                out.gauge(
                    "mcpulse_bus_consumer_lag",
                    "Messages not yet committed by the group.",
                    &labels,
                    p.lag() as f64,
                );
            }
        }
    }
}

/// Reads the status of every `(group, topics)` every 500 ms into `lag`; when `pressure` is
/// given, the span archiver's total lag becomes ingest's backlog. Runs until aborted.
pub async fn watch_lag(
    bus: DynBus,
    groups: Vec<(String, Vec<String>)>,
    lag: Arc<LagMetrics>,
    pressure: Option<Backpressure>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the last read of each group failed (log a failure once, not every tick).
    let mut failing = vec![false; groups.len()];
    loop {
        tick.tick().await;
        for ((group, topics), failing) in groups.iter().zip(failing.iter_mut()) {
            match bus.status(group, topics).await {
                Ok(status) => {
                    if *failing {
                        info!(group, "reading consumer lag works again");
                        *failing = false;
                    }
                    if group == GROUP_ARCHIVE_SPANS
                        && let Some(pressure) = &pressure
                    {
                        pressure.set_backlog(status.total_lag());
                    }
                    lag.set(status);
                }
                Err(e) if *failing => debug!(group, error = %e, "reading consumer lag failed"),
                Err(e) => {
                    warn!(group, error = %e, "reading consumer lag failed");
                    *failing = true;
                }
            }
        }
    }
}

//! Which tenants are active: the denominator of the storm rule ("more than 10% of active
//! tenants"). The verdict stage marks a tenant active whenever one of its probe results
//! arrives; the incident stage reads the count.
//!
//! The view is shared by the operators of one process. On a multi-process Kafka
//! deployment each process counts the tenants of the probe partitions it owns, so
//! run the verdict and incident stages in the same processes (they are, in
//! `mcpulse process`) and size partitions so each process sees a representative share.

use std::collections::HashMap;
use std::sync::Mutex;

/// Tenants active within [`FleetView::window_minutes`] of the latest minute seen.
#[derive(Debug)]
pub struct FleetView {
    last_seen: Mutex<HashMap<String, i64>>,
    window_minutes: i64,
}

impl Default for FleetView {
    fn default() -> Self {
        Self::new(60)
    }
}

impl FleetView {
    pub fn new(window_minutes: i64) -> Self {
        Self {
            last_seen: Mutex::new(HashMap::new()),
            window_minutes: window_minutes.max(1),
        }
    }

    /// How many minutes a tenant stays active after its last probe.
    pub fn window_minutes(&self) -> i64 {
        self.window_minutes
    }

    /// Marks `tenant` active at `minute` (minutes since the epoch).
    pub fn touch(&self, tenant: &str, minute: i64) {
        let mut seen = self.last_seen.lock().expect("not poisoned");
        match seen.get_mut(tenant) {
            Some(m) => *m = (*m).max(minute),
            None => {
                seen.insert(tenant.to_string(), minute);
            }
        }
    }

    /// Tenants seen within the window before `minute` (forgetting older ones).
    pub fn active(&self, minute: i64) -> usize {
        let mut seen = self.last_seen.lock().expect("not poisoned");
        let since = minute - self.window_minutes;
        seen.retain(|_, m| *m > since);
        seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_tenants_seen_within_the_window() {
        let fleet = FleetView::new(60);
        fleet.touch("a", 100);
        fleet.touch("b", 130);
        fleet.touch("a", 90);
        assert_eq!(fleet.active(140), 2);
        assert_eq!(fleet.active(165), 1, "a was last seen at 100");
        assert_eq!(fleet.active(200), 0);
    }
}

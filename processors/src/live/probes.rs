//! The live value of one probe series (tenant, server, region): whether the latest
//! probe result passed, and how many passed and failed.

/// Availability of one server from one region.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Availability {
    /// The latest result (by its start time) passed.
    pub up: bool,
    /// Start of the latest result, in nanoseconds since the epoch.
    pub latest_ns: Option<i64>,
    pub probes: u64,
    pub failures: u64,
}

impl Availability {
    /// Counts one result started at `started_ns`; an older result than the latest
    /// (a replay, a late external prober) is counted but does not change `up`.
    pub fn record(&mut self, started_ns: i64, ok: bool) {
        self.probes += 1;
        self.failures += u64::from(!ok);
        if self.latest_ns.is_none_or(|latest| started_ns >= latest) {
            self.latest_ns = Some(started_ns);
            self.up = ok;
        }
    }

    /// Start of the latest result in seconds since the epoch (0 before any).
    pub fn latest_seconds(&self) -> f64 {
        self.latest_ns.map_or(0.0, |ns| ns as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_result_decides_up() {
        let mut a = Availability::default();
        a.record(2_000_000_000, false);
        assert!(!a.up);
        a.record(1_000_000_000, true); // older: counted, up unchanged
        assert!(!a.up);
        a.record(3_000_000_000, true);
        assert!(a.up);
        assert_eq!((a.probes, a.failures), (3, 1));
        assert_eq!(a.latest_seconds(), 3.0);
    }
}

//! `notify:` in `mcpulse.yaml`: the stage that delivers `alerts.v1` to the receivers of
//! `routes.yaml`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::budget::BudgetConfig;
use crate::delivery::{BreakerConfig, DeliveryPolicy, RateLimit, RetryPolicy};

/// Settings of the notification stage. Unknown fields are refused; durations in
/// humantime (`500ms`, `10s`, `7d`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Run the stage when `routes` is set. Default true.
    pub enabled: bool,
    /// The routes file (receivers and the routing tree). Without it the stage does not
    /// run: nothing is delivered.
    pub routes: Option<PathBuf>,
    /// How often the routes and silences files are checked for changes (a changed routes
    /// file that does not load is logged and the previous one kept). `0s`: never.
    /// Default 10s.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// How often the notification log is checkpointed (in the background, while
    /// delivery goes on) and offsets are committed; the attempts finished since the last
    /// flush are spooled with it, as one object. Default 1s.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// How often the spooled attempts are written to the `notifications` table (one
    /// Parquet object per tenant and hour; they are also written on shutdown, when
    /// partitions move, and once `table_rows` are spooled). Longer means fewer, bigger
    /// objects; shorter, fresher history. Default 1m.
    #[serde(with = "humantime_serde")]
    pub table_interval: Duration,
    /// Spooled attempts that make the stage write them out before `table_interval`.
    /// Default 100000.
    pub table_rows: usize,
    /// Retries of one notification to one destination: exponential backoff with full
    /// jitter, at least the server's `Retry-After`; past `max_attempts` it is
    /// dead-lettered.
    pub retry: RetryPolicy,
    /// Circuit breaker of each destination.
    pub breaker: BreakerConfig,
    /// Token bucket of each destination (`per_minute`, `burst`). Default: none.
    pub rate_limit: Option<RateLimit>,
    /// Notifications queued or being delivered at once before the stage stops reading
    /// `alerts.v1` (backpressure). Default 10000.
    pub max_in_flight: usize,
    /// On shutdown or when partitions move, how long to wait for deliveries in progress
    /// before leaving them to be redone by the next owner. Default 10s.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// A resolved incident is forgotten by the notification log this long after its last
    /// event. Default 7d.
    #[serde(with = "humantime_serde")]
    pub nflog_retention: Duration,
    /// An incident still open is forgotten after this long without an event (so a
    /// never-resolved incident cannot hold memory forever). Default 30d.
    #[serde(with = "humantime_serde")]
    pub nflog_open_retention: Duration,
    /// Per-tenant notification budget: past it, new incidents fold into a digest per
    /// receiver integration sent once per `digest_interval` (see `budget.rs`). Default:
    /// no budget.
    pub budget: BudgetConfig,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            enabled: true,
            routes: None,
            reload_interval: Duration::from_secs(10),
            flush_interval: Duration::from_secs(1),
            table_interval: Duration::from_secs(60),
            table_rows: 100_000,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            rate_limit: None,
            max_in_flight: 10_000,
            drain_timeout: Duration::from_secs(10),
            nflog_retention: Duration::from_secs(7 * 86_400),
            nflog_open_retention: Duration::from_secs(30 * 86_400),
            budget: BudgetConfig::default(),
        }
    }
}

impl NotifyConfig {
    /// Whether the stage runs with this configuration.
    pub fn active(&self) -> bool {
        self.enabled && self.routes.is_some()
    }

    /// Retry, breaker and rate limit as one policy.
    pub fn delivery_policy(&self) -> DeliveryPolicy {
        DeliveryPolicy {
            retry: self.retry.clone(),
            breaker: self.breaker.clone(),
            rate_limit: self.rate_limit.clone(),
        }
    }

    /// Checks what serde cannot; errors name the field (under `notify.`).
    pub fn validate(&self) -> Result<(), String> {
        let positive = |field: &str, d: Duration| {
            if d.is_zero() {
                Err(format!("notify.{field}: must be more than zero"))
            } else {
                Ok(())
            }
        };
        positive("flush_interval", self.flush_interval)?;
        positive("table_interval", self.table_interval)?;
        if self.table_rows == 0 {
            return Err("notify.table_rows: must be at least 1".into());
        }
        positive("retry.base", self.retry.base)?;
        positive("breaker.cooldown", self.breaker.cooldown)?;
        positive("nflog_retention", self.nflog_retention)?;
        positive("nflog_open_retention", self.nflog_open_retention)?;
        if self.retry.max_attempts == 0 {
            return Err("notify.retry.max_attempts: must be at least 1".into());
        }
        if self.retry.cap < self.retry.base {
            return Err("notify.retry.cap: must not be less than retry.base".into());
        }
        if self.breaker.failure_threshold == 0 {
            return Err("notify.breaker.failure_threshold: must be at least 1".into());
        }
        if let Some(limit) = &self.rate_limit
            && !(limit.per_minute.is_finite() && limit.per_minute > 0.0)
        {
            return Err("notify.rate_limit.per_minute: must be a positive number".into());
        }
        if self.max_in_flight == 0 {
            return Err("notify.max_in_flight: must be at least 1".into());
        }
        self.budget.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_until_a_routes_file_is_named() {
        let c: NotifyConfig = serde_yaml_ng::from_str("{}").unwrap();
        assert_eq!(c, NotifyConfig::default());
        assert!(!c.active());
        c.validate().unwrap();
        let c: NotifyConfig = serde_yaml_ng::from_str(
            "routes: routes.yaml\nflush_interval: 200ms\nretry: {base: 100ms, max_attempts: 3}\nrate_limit: {per_minute: 120}\n",
        )
        .unwrap();
        assert!(c.active());
        assert_eq!(c.retry.max_attempts, 3);
        assert_eq!(c.delivery_policy().rate_limit.unwrap().burst, 10);
    }

    #[test]
    fn refuses_unknown_fields_and_bad_values() {
        assert!(serde_yaml_ng::from_str::<NotifyConfig>("route: x").is_err());
        let c: NotifyConfig = serde_yaml_ng::from_str("retry: {max_attempts: 0}").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("notify.retry.max_attempts")
        );
        let c: NotifyConfig = serde_yaml_ng::from_str("flush_interval: 0s").unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("notify.flush_interval")
        );
        let c: NotifyConfig = serde_yaml_ng::from_str("rate_limit: {per_minute: 0}").unwrap();
        assert!(c.validate().unwrap_err().starts_with("notify.rate_limit"));
    }
}

//! `signals:` in `mcpulse.yaml`.
//!
//! ```yaml
//! signals:
//!   enabled: true
//!   server_attribute: service.name   # resource attribute naming a span's server
//!   allowed_lateness: 30s            # watermark = max event time seen − this
//!   idle_timeout: 60s                # an idle partition's watermark then follows the clock
//!   max_series_per_tenant: 10000     # beyond: folded into the tenant's overflow series
//!   flush_interval: 5s               # how often windows are closed and state checkpointed
//!   retire_after: 1h                 # a series without calls this long is forgotten
//!   rules: [...]                     # default: the three standard rules (see rules.rs)
//!   rules_file: rules.yaml           # or: the rules in their own file (`rules:` list)
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::rules::{Rule, RulesConfig};

/// `signals:` — the golden-signals operator.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SignalsConfig {
    /// Run the operator (default true).
    pub enabled: bool,
    /// Resource attribute naming the server of a span (default `service.name`).
    pub server_attribute: String,
    /// How long after an event time its minute stays open (default 30s).
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// After this long without records, a partition's watermark follows the wall clock,
    /// so an idle partition does not hold its windows open forever (default 60s).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Series (server, tool, method or server, region) per tenant before new ones fold
    /// into the tenant's `__overflow__` series (default 10000).
    pub max_series_per_tenant: usize,
    /// How often windows are closed, rows written and state checkpointed (default 5s).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// A series without values for this long is forgotten (default 1h).
    #[serde(with = "humantime_serde")]
    pub retire_after: Duration,
    /// The alert rules (default: tool error rate > 5% for 5m, p95 tool latency > 10s for
    /// 5m, traffic dropping to zero after steady traffic).
    pub rules: Vec<Rule>,
    /// A YAML file with a `rules:` list, used instead of `rules`.
    pub rules_file: Option<PathBuf>,
}

impl Default for SignalsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            server_attribute: "service.name".into(),
            allowed_lateness: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_series_per_tenant: 10_000,
            flush_interval: Duration::from_secs(5),
            retire_after: Duration::from_secs(3600),
            rules: RulesConfig::default().rules,
            rules_file: None,
        }
    }
}

impl SignalsConfig {
    /// Checks what serde cannot; errors name the field under `signals.`.
    pub fn validate(&self) -> Result<(), String> {
        if self.server_attribute.trim().is_empty() {
            return Err("signals.server_attribute: must not be empty".into());
        }
        if self.max_series_per_tenant == 0 {
            return Err("signals.max_series_per_tenant: must be positive".into());
        }
        if self.flush_interval < Duration::from_millis(100) {
            return Err("signals.flush_interval: at least 100ms".into());
        }
        if self.retire_after < Duration::from_secs(60) {
            return Err("signals.retire_after: at least 1m".into());
        }
        self.rules_config()
            .map(|_| ())
            .map_err(|e| format!("signals.{e}"))
    }

    /// The rules: from `rules_file` when set, else `rules`; validated.
    pub fn rules_config(&self) -> Result<RulesConfig, String> {
        let config = match &self.rules_file {
            Some(path) => load_rules(path)?,
            None => RulesConfig {
                rules: self.rules.clone(),
            },
        };
        config.validate()?;
        Ok(config)
    }
}

/// Reads a rules file: a YAML document with a `rules:` list.
pub fn load_rules(path: &std::path::Path) -> Result<RulesConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("rules_file: cannot read {}: {e}", path.display()))?;
    let deserializer = serde_yaml_ng::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let at = e.path().to_string();
        format!("rules_file: {}: {at}: {}", path.display(), e.into_inner())
    })
}

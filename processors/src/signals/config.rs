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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_carry_the_standard_rules() {
        let config = SignalsConfig::default();
        config.validate().unwrap();
        let names: Vec<String> = config
            .rules_config()
            .unwrap()
            .rules
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(
            names,
            ["tool-error-rate", "tool-latency-p95", "traffic-drop"]
        );
    }

    #[test]
    fn a_rules_file_replaces_the_rules_and_its_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("rules.yaml");
        std::fs::write(
            &good,
            "rules:\n  - name: slow\n    kind: latency\n    quantile: 0.99\n    threshold: 2s\n    for: 3m\n",
        )
        .unwrap();
        let config = SignalsConfig {
            rules_file: Some(good),
            ..SignalsConfig::default()
        };
        config.validate().unwrap();
        assert_eq!(config.rules_config().unwrap().rules.len(), 1);

        let bad = dir.path().join("bad.yaml");
        std::fs::write(
            &bad,
            "rules:\n  - name: x\n    kind: error_rate\n    treshold: 0.1\n",
        )
        .unwrap();
        let err = SignalsConfig {
            rules_file: Some(bad),
            ..SignalsConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(
            err.starts_with("signals.rules_file:")
                && err.contains("rules[0]")
                && err.contains("treshold"),
            "{err}"
        );

        let missing = SignalsConfig {
            rules_file: Some(dir.path().join("nope.yaml")),
            ..SignalsConfig::default()
        };
        assert!(missing.validate().unwrap_err().contains("cannot read"));
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = SignalsConfig {
            max_series_per_tenant: 0,
            ..SignalsConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.starts_with("signals.max_series_per_tenant"), "{err}");
        let parsed: Result<SignalsConfig, _> = serde_yaml_ng::from_str("server_attr: x\n");
        assert!(parsed.unwrap_err().to_string().contains("unknown field"));
    }
}

//! `incidents:` in `mcpulse.yaml`: the verdict and incident stages, severity, dedup,
//! flapping and storm correlation.
//!
//! ```yaml
//! incidents:
//!   enabled: true
//!   blip_window: { p1: 3m, p2: 3m, p3: 3m }   # a failure must persist this long to open
//!   resolve_after: 2                           # healthy verdict minutes that resolve
//!   flapping: { max_cycles: 3, window: 30m, quiet: 15m }
//!   severity:                                  # overrides, before the defaults
//!     - { class: timeout, scope: global, severity: P1 }
//!   storm: { window: 5m, min_tenants: 3, min_share: 0.10, clear_after: 5m, hold: 2m }
//!   providers:                                 # added to the built-in hosting table
//!     - { suffix: mcp.example-cloud.com, provider: example-cloud }
//!   provider_notices: [acme]                   # tenants told about upstream outages
//!   external:                                  # alerts received on POST /api/v2/alerts
//!     resolve_timeout: 5m
//!     severities: { sev1: P1 }
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use mcpulse_schemas::topics::valid_tenant_id;
use serde::{Deserialize, Serialize};

use super::engine::EngineConfig;
use super::external::ExternalConfig;
use super::incident::{BlipWindows, FlappingConfig, IncidentConfig, SeverityOverride};
use super::provider::{ProviderEntry, ProviderTable};
use super::storm::StormConfig;
use super::verdict_stage::VerdictSettings;

/// See the module docs. Unknown fields are refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentsConfig {
    /// Run the verdict and incident stages (default true).
    pub enabled: bool,
    /// How often each stage writes its output and checkpoints (default 1s).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// How long after the latest probe's time a verdict minute stays open for late
    /// results of other regions (default 30s).
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// After this long without input a stage's event time follows the wall clock, so
    /// minutes close, held triggers go out and storms clear (default 60s).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long after a server last failed with a class its verdicts keep going to that
    /// class's incident, so it can resolve (default 2h).
    #[serde(with = "humantime_serde")]
    pub follow_for: Duration,
    /// Tenants seen within this window count as active (the storm share rule's
    /// denominator; default 60m).
    #[serde(with = "humantime_serde")]
    pub active_window: Duration,
    /// How long a failure must persist to open, per severity (default 3m each); one that
    /// recovers sooner is a blip (a P4 row, never paged).
    pub blip_window: BlipWindows,
    /// Healthy verdict minutes after the last failing one that resolve (default 2).
    pub resolve_after: u32,
    /// Flapping detection (default: the 3rd open within 30m is held open as flapping,
    /// resolved after 15m quiet).
    pub flapping: FlappingConfig,
    /// Severity overrides (`{class, scope?, severity}`), tried before the defaults.
    pub severity: Vec<SeverityOverride>,
    /// Storm correlation.
    pub storm: StormConfig,
    /// Hosting providers by host suffix, added to (and overriding) the built-in table.
    pub providers: Vec<ProviderEntry>,
    /// Tenants that want an "upstream provider outage" notice on their suppressed
    /// incidents (it names the provider, never another tenant).
    pub provider_notices: Vec<String>,
    /// Alerts received on the Alertmanager API (`POST /api/v2/alerts`): resolve timeout
    /// and severity mapping.
    pub external: ExternalConfig,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        let lifecycle = IncidentConfig::default();
        let verdict = VerdictSettings::default();
        Self {
            enabled: true,
            flush_interval: Duration::from_secs(1),
            allowed_lateness: verdict.allowed_lateness,
            idle_timeout: verdict.idle_timeout,
            follow_for: verdict.follow_for,
            active_window: Duration::from_secs(3600),
            blip_window: lifecycle.blip_window,
            resolve_after: lifecycle.resolve_after,
            flapping: lifecycle.flapping,
            severity: lifecycle.severity,
            storm: StormConfig::default(),
            providers: Vec::new(),
            provider_notices: Vec::new(),
            external: ExternalConfig::default(),
        }
    }
}

impl IncidentsConfig {
    /// The incident state machine's part.
    pub fn lifecycle(&self) -> IncidentConfig {
        IncidentConfig {
            blip_window: self.blip_window.clone(),
            resolve_after: self.resolve_after,
            flapping: self.flapping.clone(),
            severity: self.severity.clone(),
        }
    }

    /// What the incident engine needs.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            incident: self.lifecycle(),
            storm: self.storm.clone(),
            provider_notices: self
                .provider_notices
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>(),
            external: self.external.clone(),
        }
    }

    /// What the verdict stage needs.
    pub fn verdict(&self) -> VerdictSettings {
        VerdictSettings {
            providers: ProviderTable::new(self.providers.clone()),
            allowed_lateness: self.allowed_lateness,
            idle_timeout: self.idle_timeout,
            follow_for: self.follow_for,
        }
    }

    /// Checks what serde cannot; errors name the field (`incidents.storm.window: …`).
    pub fn validate(&self) -> Result<(), String> {
        self.lifecycle().validate()?;
        self.storm
            .validate()
            .map_err(|e| format!("incidents.{e}"))?;
        ProviderTable::new(self.providers.clone()).validate()?;
        self.external.validate()?;
        for (i, tenant) in self.provider_notices.iter().enumerate() {
            if !valid_tenant_id(tenant) {
                return Err(format!(
                    "incidents.provider_notices[{i}]: {tenant:?} is not a valid tenant id"
                ));
            }
        }
        let positive = [
            ("flush_interval", self.flush_interval),
            ("idle_timeout", self.idle_timeout),
            ("active_window", self.active_window),
        ];
        for (name, value) in positive {
            if value < Duration::from_millis(10) {
                return Err(format!("incidents.{name}: must be at least 10ms"));
            }
        }
        if self.allowed_lateness > Duration::from_secs(3600) {
            return Err("incidents.allowed_lateness: at most 1h".into());
        }
        if self.follow_for < Duration::from_secs(60) {
            return Err("incidents.follow_for: at least 1m".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<IncidentsConfig, String> {
        let config: IncidentsConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = parse("{}").unwrap();
        assert!(c.enabled);
        assert_eq!(c.resolve_after, 2);
        assert_eq!(c.storm.min_tenants, 3);
        assert_eq!(c.blip_window.p1, Duration::from_secs(180));
    }

    #[test]
    fn a_full_section_parses() {
        let c = parse(
            "blip_window: {p1: 1m, p2: 3m, p3: 5m}\nresolve_after: 3\n\
             flapping: {max_cycles: 4, window: 1h, quiet: 10m}\n\
             severity: [{class: timeout, scope: global, severity: P1}]\n\
             storm: {window: 10m, min_tenants: 5, min_share: 0.2, clear_after: 3m, hold: 1m}\n\
             providers: [{suffix: mcp.example-cloud.com, provider: example-cloud}]\n\
             provider_notices: [acme]\n\
             external: {resolve_timeout: 10m, severities: {sev1: P1}}\n",
        )
        .unwrap();
        assert_eq!(
            c.engine().external.resolve_timeout,
            Duration::from_secs(600)
        );
        assert_eq!(c.engine().incident.resolve_after, 3);
        assert!(c.engine().provider_notices.contains("acme"));
        assert_eq!(
            c.verdict().providers.provider_of("x.mcp.example-cloud.com"),
            "example-cloud"
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert!(parse("bogus: 1").unwrap_err().contains("bogus"));
        assert!(
            parse("resolve_after: 0")
                .unwrap_err()
                .contains("incidents.resolve_after")
        );
        assert!(
            parse("storm: {min_tenants: 1}")
                .unwrap_err()
                .contains("incidents.storm.min_tenants")
        );
        assert!(
            parse("provider_notices: ['../x']")
                .unwrap_err()
                .contains("incidents.provider_notices[0]")
        );
        assert!(
            parse("storm: {hold: 10m}")
                .unwrap_err()
                .contains("incidents.storm.hold")
        );
    }
}

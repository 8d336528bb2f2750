//! `prober:` in `mcpulse.yaml` — the built-in prober of `mcpulse run`, `mcpulse ingest`
//! and `mcpulse probe`.
//!
//! ```yaml
//! prober:
//!   targets: targets.yaml        # the servers to probe; no prober runs without it
//!   region: eu-west              # region label of every result (`--region` overrides)
//!   max_concurrency: 200         # probes in flight at once
//!   tls_expiring_within: 14d     # a certificate expiring sooner is `tls_expiring`
//!   latency_degraded_after: 5s   # a slower successful probe is `latency_degraded`
//!   max_pages: 100               # most `tools/list` pages followed
//!   max_redirects: 3             # redirects followed (each target re-checked)
//!   ca_certs: []                 # PEM files of extra trust anchors (a private CA)
//!   reload_interval: 10s         # how often targets.yaml is checked for changes (0s: never)
//! ```

use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

use super::probe::ProberSettings;
use super::timed_http::TlsSettings;

/// `prober:` — settings of the built-in prober.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ProberConfig {
    /// `targets.yaml`: the servers to probe, per tenant (relative paths are relative to
    /// the working directory). Without it no prober runs in `mcpulse run`/`ingest`.
    pub targets: Option<PathBuf>,
    /// Region label of every result (default `local`): run one prober per region.
    pub region: String,
    /// Most probes in flight at once (default 200).
    pub max_concurrency: usize,
    /// A certificate expiring sooner than this is `tls_expiring` (default 14 days).
    #[serde(with = "humantime_serde")]
    pub tls_expiring_within: Duration,
    /// A successful probe slower than this is `latency_degraded` (default 5s).
    #[serde(with = "humantime_serde")]
    pub latency_degraded_after: Duration,
    /// Most `tools/list` pages followed before `tools_list_error` (default 100).
    pub max_pages: u32,
    /// Most HTTP redirects (307/308, and 301/302/303 on the first request) followed per
    /// probe; every redirect target is resolved and checked against the policy again
    /// (default 3; 0 treats a redirect as a failure).
    pub max_redirects: u32,
    /// PEM files whose certificates are trusted besides the Mozilla roots.
    pub ca_certs: Vec<PathBuf>,
    /// How often `targets` is re-read; a changed file replaces the target list without
    /// a restart, a broken one is logged and the old list kept (default 10s; 0s: never).
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for ProberConfig {
    fn default() -> Self {
        Self {
            targets: None,
            region: "local".into(),
            max_concurrency: 200,
            tls_expiring_within: Duration::from_secs(14 * 86_400),
            latency_degraded_after: Duration::from_secs(5),
            max_pages: 100,
            max_redirects: 3,
            ca_certs: Vec::new(),
            reload_interval: Duration::from_secs(10),
        }
    }
}

/// The longest region label.
pub const MAX_REGION_LEN: usize = 64;

/// Checks a region label: 1–64 of `A-Z a-z 0-9 . _ -`.
pub fn validate_region(region: &str) -> Result<(), String> {
    if region.is_empty()
        || region.len() > MAX_REGION_LEN
        || !region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!(
            "{region:?} is not a region label (1-{MAX_REGION_LEN} of A-Z a-z 0-9 . _ -)"
        ));
    }
    Ok(())
}

impl ProberConfig {
    /// Checks what serde cannot; errors name the field under `prober.`.
    pub fn validate(&self) -> Result<(), String> {
        validate_region(&self.region).map_err(|e| format!("prober.region: {e}"))?;
        if self.max_concurrency == 0 || self.max_concurrency > 10_000 {
            return Err("prober.max_concurrency: must be between 1 and 10000".into());
        }
        if self.max_pages == 0 {
            return Err("prober.max_pages: must be positive".into());
        }
        if self.max_redirects > 10 {
            return Err("prober.max_redirects: at most 10".into());
        }
        if !self.reload_interval.is_zero() && self.reload_interval < Duration::from_secs(1) {
            return Err("prober.reload_interval: at least 1s (or 0s to never reload)".into());
        }
        Ok(())
    }

    /// The prober's settings for `region` (the policy comes from `targets.yaml`), reading
    /// `ca_certs`.
    pub fn settings(&self, region: &str) -> Result<ProberSettings, String> {
        let mut settings = ProberSettings::new(region);
        settings.tls_expiring_within = self.tls_expiring_within;
        settings.latency_degraded_after = self.latency_degraded_after;
        settings.max_pages = self.max_pages;
        settings.max_redirects = self.max_redirects;
        if !self.ca_certs.is_empty() {
            let mut extra = Vec::new();
            for (i, path) in self.ca_certs.iter().enumerate() {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("prober.ca_certs[{i}]: {}: {e}", path.display()))?;
                if certs.is_empty() {
                    return Err(format!(
                        "prober.ca_certs[{i}]: {}: no PEM certificate in the file",
                        path.display()
                    ));
                }
                extra.extend(certs);
            }
            settings.tls = TlsSettings::with_extra_roots(&extra)
                .map_err(|e| format!("prober.ca_certs: {e}"))?;
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<ProberConfig, String> {
        let config: ProberConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_need_no_fields() {
        let config = parse("{}").unwrap();
        assert_eq!(config, ProberConfig::default());
        assert_eq!(config.targets, None);
        assert_eq!(config.region, "local");
    }

    #[test]
    fn fields_parse() {
        let config = parse(
            "targets: t.yaml\nregion: eu-west\nmax_concurrency: 10\ntls_expiring_within: 7d\nreload_interval: 0s\nmax_redirects: 0\n",
        )
        .unwrap();
        assert_eq!(config.targets, Some(PathBuf::from("t.yaml")));
        assert_eq!(config.region, "eu-west");
        assert_eq!(config.max_concurrency, 10);
        assert_eq!(config.tls_expiring_within, Duration::from_secs(7 * 86_400));
        assert!(config.reload_interval.is_zero());
        assert_eq!(config.max_redirects, 0);
    }

    #[test]
    fn bad_values_name_the_field() {
        assert!(parse("regions: x").unwrap_err().contains("unknown field"));
        assert!(
            parse("region: 'eu west'")
                .unwrap_err()
                .starts_with("prober.region:")
        );
        assert!(
            parse("max_concurrency: 0")
                .unwrap_err()
                .starts_with("prober.max_concurrency:")
        );
        assert!(
            parse("reload_interval: 10ms")
                .unwrap_err()
                .starts_with("prober.reload_interval:")
        );
        assert!(
            parse("max_redirects: 11")
                .unwrap_err()
                .starts_with("prober.max_redirects:")
        );
    }

    #[test]
    fn ca_certs_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let config = ProberConfig {
            ca_certs: vec![empty],
            ..ProberConfig::default()
        };
        let err = config.settings("local").unwrap_err();
        assert!(err.starts_with("prober.ca_certs[0]:"), "{err}");

        let missing = ProberConfig {
            ca_certs: vec![dir.path().join("missing.pem")],
            ..ProberConfig::default()
        };
        assert!(
            missing
                .settings("local")
                .unwrap_err()
                .starts_with("prober.ca_certs[0]:")
        );

        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, cert.cert.pem()).unwrap();
        let config = ProberConfig {
            ca_certs: vec![good],
            ..ProberConfig::default()
        };
        assert_eq!(config.settings("eu").unwrap().region, "eu");
    }
}

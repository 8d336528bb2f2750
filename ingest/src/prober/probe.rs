//! One probe of one target, start to finish: resolve and check the address, run the
//! protocol sequence over the timed HTTP client, and turn what happened into a
//! [`ProbeResult`] — the era and version, every phase's timing, the tool count and hash
//! (with the canonical tool list when the hash changed), the certificate's expiry, and
//! the failure_reason with its phase and detail.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use http::HeaderMap;
use mcpulse_schemas::probe::{FailureReason, Phase, ProbeResult, ProtocolEra};
use std::sync::Mutex;
use tokio::time::Instant;

use super::http_transport::HttpTransport;
use super::mcp::ProtocolFailure;
use super::sequence::{self, SequenceConfig};
use super::target_guard::{self, GuardError, TargetPolicy};
use super::targets::Target;
use super::timed_http::{Endpoint, TlsSettings};
use super::tool_hash;

/// Settings of a prober.
#[derive(Clone, Debug)]
pub struct ProberSettings {
    /// Region label of every result.
    pub region: String,
    /// Identity of this prober in results.
    pub prober: String,
    /// Which addresses targets may resolve to.
    pub policy: TargetPolicy,
    /// Trust anchors for https targets.
    pub tls: TlsSettings,
    /// A certificate expiring sooner than this is `tls_expiring` (a warning on success).
    pub tls_expiring_within: Duration,
    /// A successful probe slower than this is `latency_degraded` (a warning).
    pub latency_degraded_after: Duration,
    /// Most `tools/list` pages followed.
    pub max_pages: u32,
    /// Most redirects followed per probe (each target resolved and checked again).
    pub max_redirects: u32,
}

impl ProberSettings {
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            prober: format!("mcpulse/{}", env!("CARGO_PKG_VERSION")),
            policy: TargetPolicy::default(),
            tls: TlsSettings::webpki_roots(),
            tls_expiring_within: Duration::from_secs(14 * 86_400),
            latency_degraded_after: Duration::from_secs(5),
            max_pages: 100,
            max_redirects: 3,
        }
    }
}

/// Why a target was not probed at all (configuration, not the server's health).
#[derive(Debug, thiserror::Error)]
#[error("{target}: not probed: {reason}")]
pub struct NotProbed {
    pub target: String,
    pub reason: String,
}

/// Probes targets; remembers per origin the era that worked and per target the last
/// tool-list hash.
pub struct Prober {
    settings: ProberSettings,
    eras: Mutex<HashMap<String, ProtocolEra>>,
    hashes: Mutex<HashMap<(String, String), String>>,
}

impl Prober {
    pub fn new(settings: ProberSettings) -> Self {
        Self {
            settings,
            eras: Mutex::new(HashMap::new()),
            hashes: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &ProberSettings {
        &self.settings
    }

    /// Probes `target` once, within its timeout.
    pub async fn probe(&self, target: &Target) -> Result<ProbeResult, NotProbed> {
        let started_at = Utc::now();
        let started = Instant::now();
        let deadline = started + target.timeout;
        let origin = target.url.origin().ascii_serialization();
        let mut result = ProbeResult::new(&target.server, &self.settings.region, started_at);
        result.probe_id = Some(format!(
            "{}/{}/{}/{}",
            target.tenant,
            target.server,
            self.settings.region,
            started_at.timestamp_millis()
        ));
        result.url = Some(target_guard::redact_url(&target.url));
        result.labels = target.labels.clone();
        result.prober = Some(self.settings.prober.clone());

        let mut url = target.url.clone();
        let mut headers = HeaderMap::new();
        if let Some(credential) = &target.credential {
            headers.insert(credential.header_name().clone(), credential.value().clone());
        }
        let mut redirects = 0;
        let (transport, outcome) = loop {
            let resolved = match target_guard::resolve_checked(
                &url,
                &self.settings.policy,
                deadline.saturating_duration_since(Instant::now()),
            )
            .await
            {
                Ok(resolved) => resolved,
                Err(e) => {
                    let (reason, phase) = match e.failure_reason() {
                        Some(found) => found,
                        // The target itself is refused: configuration, not health.
                        None if redirects == 0 => return Err(not_probed(target, &e)),
                        // A redirect somewhere the policy forbids: the endpoint does not
                        // serve MCP where the prober may go.
                        None => (FailureReason::NotJsonrpc, Some(Phase::Connect)),
                    };
                    result.failure_reason = Some(reason);
                    result.failure_phase = phase;
                    result.failure_detail = Some(if redirects == 0 {
                        e.to_string()
                    } else {
                        format!("after {redirects} redirect(s): {e}")
                    });
                    result.total_ms = Some(ms(started));
                    return Ok(result);
                }
            };
            if redirects == 0 {
                result.phases.dns_ms = Some(resolved.dns_ms);
            }
            let endpoint = Endpoint {
                scheme_https: url.scheme() == "https",
                host: resolved.host.clone(),
                port: resolved.port,
                addrs: resolved.addrs.clone(),
                dns_ms: Some(resolved.dns_ms),
            };
            let mut transport = HttpTransport::new(endpoint, self.settings.tls.clone(), deadline);
            let eras = match target.transport.era() {
                Some(era) => vec![era],
                None => SequenceConfig::auto(
                    self.eras
                        .lock()
                        .expect("not poisoned")
                        .get(&origin)
                        .copied(),
                ),
            };
            let config = SequenceConfig {
                eras,
                max_pages: self.settings.max_pages,
                headers: headers.clone(),
            };
            let outcome = sequence::run(&mut transport, &url, &config).await;
            let next = outcome
                .failure
                .as_ref()
                .and_then(|f| f.redirect.as_deref())
                .map(|location| url.join(location));
            match next {
                Some(Ok(next)) if redirects < self.settings.max_redirects => {
                    if !matches!(next.scheme(), "http" | "https") {
                        break (transport, outcome);
                    }
                    if next.origin() != url.origin() {
                        // Like browsers and curl: credentials never follow a redirect to
                        // another origin.
                        headers.clear();
                    }
                    redirects += 1;
                    url = next;
                }
                _ => break (transport, outcome),
            }
        };
        let total = started.elapsed();

        let phases = transport.phases();
        result.phases.connect_ms = phases.connect_ms;
        result.phases.tls_ms = phases.tls_ms;
        result.phases.first_byte_ms = phases.first_byte_ms;
        result.phases.initialize_ms = outcome.initialize_ms;
        result.phases.tools_list_ms = outcome.tools_list_ms;
        result.tls_expires_at = transport.tls_expires_at();
        result.total_ms = Some(total.as_secs_f64() * 1000.0);
        result.protocol_era = outcome.era;
        result.protocol_version = outcome.protocol_version.clone();

        if let Some(tools) = &outcome.tools {
            let canonical = tool_hash::canonical_tools(tools);
            let hash = tool_hash::tools_hash(tools);
            result.tool_count = Some(canonical.len() as u32);
            let key = (target.tenant.clone(), target.server.clone());
            let changed = self
                .hashes
                .lock()
                .expect("not poisoned")
                .insert(key, hash.clone())
                .as_ref()
                != Some(&hash);
            if changed {
                result.tools = Some(canonical);
            }
            result.tools_hash = Some(hash);
        }
        match outcome.failure {
            Some(failure) => self.fail(&mut result, failure),
            None => {
                result.ok = true;
                if let Some(era) = outcome.era {
                    self.eras.lock().expect("not poisoned").insert(origin, era);
                }
                self.warn(&mut result, total);
            }
        }
        Ok(result)
    }

    fn fail(&self, result: &mut ProbeResult, failure: ProtocolFailure) {
        result.ok = false;
        result.failure_reason = Some(failure.reason);
        result.failure_phase = Some(failure.phase);
        result.failure_detail = Some(failure.detail);
        result.http_status = failure.http_status;
        result.jsonrpc_error_code = failure.jsonrpc_error_code;
    }

    /// Warnings on a successful probe: the certificate expiring soon comes first (it
    /// turns into an outage on a known date), then latency.
    fn warn(&self, result: &mut ProbeResult, total: Duration) {
        if let Some(expires) = result.tls_expires_at {
            let left = expires - Utc::now();
            let within = chrono::Duration::from_std(self.settings.tls_expiring_within)
                .unwrap_or(chrono::Duration::MAX);
            if left < within {
                result.failure_reason = Some(FailureReason::TlsExpiring);
                result.failure_detail = Some(format!(
                    "the certificate expires in {} days ({expires})",
                    left.num_days()
                ));
                return;
            }
        }
        if total > self.settings.latency_degraded_after {
            result.failure_reason = Some(FailureReason::LatencyDegraded);
            result.failure_detail = Some(format!(
                "the probe took {:.0} ms (threshold {} ms)",
                total.as_secs_f64() * 1000.0,
                self.settings.latency_degraded_after.as_millis()
            ));
        }
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn not_probed(target: &Target, e: &GuardError) -> NotProbed {
    NotProbed {
        target: format!("{}/{}", target.tenant, target.server),
        reason: e.to_string(),
    }
}

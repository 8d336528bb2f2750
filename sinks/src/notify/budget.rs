//! Per-tenant notification budgets and digests (`notify.budget`).
//!
//! A tenant may page for at most `per_tenant` new incidents per `window` (aligned to the
//! epoch, wall clock). The decision is taken once per incident, on its first notification
//! (its trigger), and kept in the notification log:
//!
//! * an **admitted** incident is notified as usual, every transition, to every receiver
//!   its routes reach — an update or resolve of an incident that paged always goes out,
//!   so no provider is left with an alert that never closes;
//! * a **folded** incident is not sent: each of its transitions (trigger, updates,
//!   resolve) is recorded as `folded` in the `notifications` table and added to the
//!   digest of that receiver integration. A digest is sent once per `digest_interval`
//!   after its first entry: one notification listing what was folded (subject, severity,
//!   what happened, when), with the highest severity folded.
//!
//! Storm notices (tenant `_operator`) are never budgeted. Budget counts and pending
//! digests are part of the checkpointed notification log. A digest due stays in the log
//! until its notification finished (sent, skipped or dead-lettered), so a crash before
//! then sends it after the restart; its event id is derived from its integration and
//! start, so the journal of a digest that did go out stops a second one.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mcpulse_schemas::alert::OPERATOR_TENANT;
use mcpulse_schemas::{AlertAction, AlertEvent, AlertStatus, Severity};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The class of digest notifications.
pub const DIGEST_CLASS: &str = "digest";
/// Entries listed in one digest's summary (all of them are in its evidence, up to
/// [`MAX_ENTRIES`]).
const SUMMARY_ENTRIES: usize = 10;
/// Entries kept per digest; later ones are only counted.
const MAX_ENTRIES: usize = 500;

/// `notify.budget` in `mcpulse.yaml`. Unknown fields are refused.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// New incidents a tenant may page for per `window`; later ones fold into digests.
    /// `0` (the default): no budget.
    pub per_tenant: u32,
    /// Per-tenant overrides of `per_tenant` (`0`: no budget for that tenant).
    pub tenants: BTreeMap<String, u32>,
    /// The budget window (aligned to the epoch). Default 1h.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// A digest goes out this long after its first folded notification. Default 15m.
    #[serde(with = "humantime_serde")]
    pub digest_interval: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            per_tenant: 0,
            tenants: BTreeMap::new(),
            window: Duration::from_secs(3600),
            digest_interval: Duration::from_secs(15 * 60),
        }
    }
}

impl BudgetConfig {
    /// The budget of `tenant` (`None`: unlimited).
    pub fn limit(&self, tenant: &str) -> Option<u32> {
        if tenant == OPERATOR_TENANT {
            return None;
        }
        let limit = self.tenants.get(tenant).copied().unwrap_or(self.per_tenant);
        (limit > 0).then_some(limit)
    }

    /// Checks what serde cannot; errors name the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.window.is_zero() {
            return Err("notify.budget.window: must be more than zero".into());
        }
        if self.digest_interval.is_zero() {
            return Err("notify.budget.digest_interval: must be more than zero".into());
        }
        Ok(())
    }
}

/// The budget decision of one incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    Admitted,
    Folded,
}

/// A tenant's count in its current window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct TenantWindow {
    start: DateTime<Utc>,
    admitted: u32,
}

/// One folded transition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    pub incident_id: String,
    pub subject: String,
    pub severity: Severity,
    pub action: AlertAction,
    pub status: AlertStatus,
    pub time: DateTime<Utc>,
}

/// The digest being collected for one integration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDigest {
    pub tenant: String,
    pub route_id: String,
    /// When its first entry was folded (wall clock).
    pub since: DateTime<Utc>,
    pub entries: Vec<DigestEntry>,
    /// Entries past [`MAX_ENTRIES`], only counted.
    #[serde(default)]
    pub dropped: u64,
}

/// A digest due: to send to integration `key` by route `route_id`.
#[derive(Clone, Debug, PartialEq)]
pub struct DueDigest {
    pub key: String,
    pub route_id: String,
    pub event: AlertEvent,
}

/// A digest due whose notification has not finished yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Sending {
    key: String,
    digest: PendingDigest,
    /// Queued by this process (a restored one is queued again).
    #[serde(skip)]
    queued: bool,
}

/// Budget counts and pending digests of one log partition (part of the checkpointed
/// notification log).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetLog {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    windows: BTreeMap<String, TenantWindow>,
    /// Being collected, by integration key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    digests: BTreeMap<String, PendingDigest>,
    /// Due, by digest event id, until their notification finished.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    sending: BTreeMap<String, Sending>,
}

fn window_start(now: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    let secs = window.as_secs().max(1) as i64;
    let t = now.timestamp();
    DateTime::from_timestamp(t - t.rem_euclid(secs), 0).unwrap_or(now)
}

impl BudgetLog {
    /// Drops what concerns a deleted tenant (`server: None`) or one of its servers
    /// (`mcpulse admin delete`): its budget window, and its digests or their entries
    /// (the servers are named in the entries' subjects' incidents, which the caller has
    /// forgotten: entries of those incidents go). Returns whether anything changed.
    pub fn forget(&mut self, tenant: &str, incidents: &dyn Fn(&str) -> bool, whole: bool) -> bool {
        let before = (self.windows.len(), self.digests.len(), self.sending.len());
        let mut changed = false;
        if whole {
            self.windows.remove(tenant);
            self.digests.retain(|_, d| d.tenant != tenant);
            self.sending.retain(|_, s| s.digest.tenant != tenant);
        } else {
            let mut prune = |d: &mut PendingDigest| {
                if d.tenant == tenant {
                    let n = d.entries.len();
                    d.entries.retain(|e| !incidents(&e.incident_id));
                    changed |= d.entries.len() != n;
                }
                !(d.tenant == tenant && d.entries.is_empty() && d.dropped == 0)
            };
            self.digests.retain(|_, d| prune(d));
            self.sending.retain(|_, s| prune(&mut s.digest));
        }
        changed || before != (self.windows.len(), self.digests.len(), self.sending.len())
    }

    /// Takes one new incident of `tenant` at `now` against its budget: admitted while
    /// the window has room.
    pub fn admit(&mut self, config: &BudgetConfig, tenant: &str, now: DateTime<Utc>) -> Admission {
        let Some(limit) = config.limit(tenant) else {
            return Admission::Admitted;
        };
        let start = window_start(now, config.window);
        let window = self
            .windows
            .entry(tenant.to_owned())
            .or_insert(TenantWindow { start, admitted: 0 });
        if window.start != start {
            *window = TenantWindow { start, admitted: 0 };
        }
        if window.admitted < limit {
            window.admitted += 1;
            Admission::Admitted
        } else {
            Admission::Folded
        }
    }

    /// Adds a folded transition to the digest of integration `key`.
    pub fn fold(&mut self, key: &str, route_id: &str, event: &AlertEvent, now: DateTime<Utc>) {
        let digest = self
            .digests
            .entry(key.to_owned())
            .or_insert_with(|| PendingDigest {
                tenant: event.tenant.clone(),
                route_id: route_id.to_owned(),
                since: now,
                entries: Vec::new(),
                dropped: 0,
            });
        if digest.entries.len() >= MAX_ENTRIES {
            digest.dropped += 1;
            return;
        }
        digest.entries.push(DigestEntry {
            incident_id: event.incident_id.clone(),
            subject: match &event.server {
                Some(server) => format!("{server} {}", event.class),
                None => event.class.clone(),
            },
            severity: event.severity,
            action: event.action,
            status: event.status,
            time: event.time,
        });
    }

    /// Digests to queue at `now`: those collected for at least `digest_interval`, and
    /// those due before a restart whose notification had not finished. They stay in the
    /// log until [`finished`](Self::finished).
    pub fn due(&mut self, config: &BudgetConfig, now: DateTime<Utc>) -> Vec<DueDigest> {
        let interval =
            chrono::Duration::from_std(config.digest_interval).unwrap_or(chrono::Duration::MAX);
        let keys: Vec<String> = self
            .digests
            .iter()
            .filter(|(_, d)| now - d.since >= interval)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let digest = self.digests.remove(&key).expect("listed");
            let id = digest_id(&key, &digest);
            self.sending.insert(
                id,
                Sending {
                    key,
                    digest,
                    queued: false,
                },
            );
        }
        let mut due = Vec::new();
        for sending in self.sending.values_mut().filter(|s| !s.queued) {
            sending.queued = true;
            due.push(DueDigest {
                event: digest_event(&sending.key, &sending.digest, config, now),
                route_id: sending.digest.route_id.clone(),
                key: sending.key.clone(),
            });
        }
        // Forget windows that ended.
        let start = window_start(now, config.window);
        self.windows.retain(|_, w| w.start >= start);
        due
    }

    /// The notification of digest `event_id` finished: forget it.
    pub fn finished(&mut self, event_id: &str) {
        self.sending.remove(event_id);
    }

    /// Digests being collected or due and not finished (tests, status).
    pub fn pending(&self) -> usize {
        self.digests.len() + self.sending.len()
    }
}

/// The event id of a digest: from its integration and start.
fn digest_id(key: &str, digest: &PendingDigest) -> String {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update(b"\0");
    h.update(digest.since.to_rfc3339().as_bytes());
    format!("digest-{}", hex::encode(&h.finalize()[..12]))
}

/// The notification of a digest: a trigger of class `digest` at the highest folded
/// severity, its summary listing the first entries, its evidence all of them.
fn digest_event(
    key: &str,
    digest: &PendingDigest,
    config: &BudgetConfig,
    now: DateTime<Utc>,
) -> AlertEvent {
    let id = digest_id(key, digest);
    let folded = digest.entries.len() as u64 + digest.dropped;
    let severity = digest
        .entries
        .iter()
        .map(|e| e.severity)
        .min()
        .unwrap_or(Severity::P4);
    let incidents: std::collections::BTreeSet<&str> = digest
        .entries
        .iter()
        .map(|e| e.incident_id.as_str())
        .collect();
    let limit = config.limit(&digest.tenant).unwrap_or(0);
    let mut summary = format!(
        "Digest: {folded} notification{} of {} incident{} held back by the notification budget ({limit} per {})",
        if folded == 1 { "" } else { "s" },
        incidents.len(),
        if incidents.len() == 1 { "" } else { "s" },
        humantime::format_duration(config.window),
    );
    for e in digest.entries.iter().take(SUMMARY_ENTRIES) {
        summary.push_str(&format!(
            "; [{}] {} {} at {}",
            e.severity.as_str(),
            e.subject,
            e.action.as_str(),
            e.time.format("%H:%M UTC")
        ));
    }
    if folded > SUMMARY_ENTRIES as u64 {
        summary.push_str(&format!("; and {} more", folded - SUMMARY_ENTRIES as u64));
    }
    AlertEvent {
        event_id: id.clone(),
        incident_id: id.clone(),
        dedup_key: id,
        action: AlertAction::Trigger,
        status: AlertStatus::Open,
        tenant: digest.tenant.clone(),
        server: None,
        class: DIGEST_CLASS.into(),
        severity,
        scope: DIGEST_CLASS.into(),
        reason: None,
        regions: Vec::new(),
        time: now,
        opened_at: digest.since,
        resolved_at: None,
        duration_s: None,
        storm_id: None,
        storm: None,
        provider_outage: None,
        summary,
        evidence: serde_json::json!({
            "folded": folded,
            "since": digest.since,
            "entries": digest.entries,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::testutil::{at, event};

    fn config(per_tenant: u32) -> BudgetConfig {
        BudgetConfig {
            per_tenant,
            ..BudgetConfig::default()
        }
    }

    #[test]
    fn admits_up_to_the_budget_per_window_then_folds() {
        let c = config(2);
        let mut log = BudgetLog::default();
        let t = at("2026-11-21T10:05:00Z");
        assert_eq!(log.admit(&c, "acme", t), Admission::Admitted);
        assert_eq!(log.admit(&c, "acme", t), Admission::Admitted);
        assert_eq!(log.admit(&c, "acme", t), Admission::Folded);
        assert_eq!(
            log.admit(&c, "globex", t),
            Admission::Admitted,
            "per tenant"
        );
        assert_eq!(
            log.admit(&c, "acme", at("2026-11-21T11:00:00Z")),
            Admission::Admitted,
            "a new window"
        );
    }

    #[test]
    fn no_budget_by_default_for_overridden_tenants_and_storms() {
        let mut log = BudgetLog::default();
        let t = at("2026-11-21T10:05:00Z");
        for _ in 0..100 {
            assert_eq!(log.admit(&config(0), "acme", t), Admission::Admitted);
        }
        let mut c = config(1);
        c.tenants.insert("big".into(), 0);
        for _ in 0..5 {
            assert_eq!(log.admit(&c, "big", t), Admission::Admitted);
            assert_eq!(log.admit(&c, OPERATOR_TENANT, t), Admission::Admitted);
        }
    }

    #[test]
    fn a_digest_is_due_one_interval_after_its_first_entry_and_lists_what_folded() {
        let c = config(1);
        let mut log = BudgetLog::default();
        let t0 = at("2026-11-21T10:00:00Z");
        let mut e = event("acme", "inc-1", "e1");
        e.severity = Severity::P2;
        log.fold("ops/pd", "root", &e, t0);
        let mut e2 = event("acme", "inc-2", "e2");
        e2.time = at("2026-11-21T10:01:00Z");
        log.fold("ops/pd", "root", &e2, t0 + chrono::Duration::minutes(1));
        assert!(log.due(&c, t0 + chrono::Duration::minutes(14)).is_empty());
        let due = log.due(&c, t0 + chrono::Duration::minutes(15));
        assert_eq!(due.len(), 1);
        let d = &due[0];
        assert_eq!((d.key.as_str(), d.route_id.as_str()), ("ops/pd", "root"));
        assert_eq!(d.event.class, DIGEST_CLASS);
        assert_eq!(d.event.severity, Severity::P1, "the highest folded");
        assert_eq!(d.event.tenant, "acme");
        assert!(
            d.event
                .summary
                .starts_with("Digest: 2 notifications of 2 incidents"),
            "{}",
            d.event.summary
        );
        assert_eq!(d.event.evidence["entries"].as_array().unwrap().len(), 2);
        d.event.check_boundaries().unwrap();
        assert!(
            log.due(&c, t0 + chrono::Duration::minutes(16)).is_empty(),
            "queued once"
        );
        assert_eq!(log.pending(), 1, "kept until its notification finished");
        // A restart before it finished queues it again, with the same id.
        let mut restored: BudgetLog =
            serde_json::from_value(serde_json::to_value(&log).unwrap()).unwrap();
        let requeued = restored.due(&c, t0 + chrono::Duration::minutes(17));
        assert_eq!(requeued[0].event.event_id, d.event.event_id);
        log.finished(&d.event.event_id);
        assert_eq!(log.pending(), 0);
        // The same digest start gives the same id (a replay does not send it twice).
        let mut again = BudgetLog::default();
        again.fold("ops/pd", "root", &e, t0);
        again.fold("ops/pd", "root", &e2, t0 + chrono::Duration::minutes(1));
        assert_eq!(
            again.due(&c, t0 + chrono::Duration::minutes(20))[0]
                .event
                .event_id,
            d.event.event_id
        );
    }

    #[test]
    fn config_refuses_unknown_fields_and_zero_intervals() {
        assert!(serde_yaml_ng::from_str::<BudgetConfig>("per_tenants: 3").is_err());
        let c: BudgetConfig =
            serde_yaml_ng::from_str("per_tenant: 20\nwindow: 30m\ndigest_interval: 0s").unwrap();
        assert_eq!(c.per_tenant, 20);
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("notify.budget.digest_interval")
        );
    }
}

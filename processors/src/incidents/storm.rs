//! Storm correlation (DESIGN.md "Storm correlation"; issue 6): incidents of probe classes
//! that open within a window and share an upstream [`Cause`] (hosting provider of the
//! endpoint host, region or `global`, failure class) across enough tenants collapse into
//! one storm. Pure logic, no I/O; the caller turns [`StormEvent`]s into `alerts.v1`
//! transitions.
//!
//! # What the caller feeds
//!
//! Every opening and resolution of an incident whose class
//! [correlates](super::types::FailureClass::correlates) (probe classes, and external
//! alerts whose labels name a provider), with its cause, in
//! event time (the minute start of the verdict), non-decreasing over the sequence of calls
//! (a time earlier than the latest seen is treated as the latest seen). All incidents of
//! one cause are routed to one owner, so one correlator sees every candidate of a cause.
//! [`StormCorrelator::advance`] moves event time on without an incident (e.g. on the
//! partition's watermark), so storms clear even when nothing else happens; every other
//! call advances time too, and the events due are the same whichever call makes time
//! move (their times are the times they were due, not the time of the call).
//!
//! # Rules
//!
//! - **Candidates.** Per cause, the openings of the last `window`: an opening at `t`
//!   counts at time `now` while `now - t < window` (with minute starts and the default
//!   5m, five minute starts). A candidate whose incident resolves stops counting (a
//!   resolved incident is no evidence of an ongoing shared outage). An opening of an
//!   incident already tracked as open (a replay) is ignored.
//! - **Opening.** When, after an opening, the candidates of its cause span at least
//!   `min_tenants` distinct tenants and more than `min_share` × the active tenants (the
//!   count the caller passes with that opening), a storm opens: [`StormEvent::Open`]
//!   (`opened_at` = the earliest candidate opening), then one [`StormEvent::Suppress`] per
//!   candidate in opening order. The candidates become the storm's members and the
//!   window is emptied. A tenant with many servers counts once toward the tenants.
//! - **Growing.** While the storm is open, each opening of its cause joins it:
//!   [`StormEvent::Suppress`], then [`StormEvent::Grow`] with the new counts when they
//!   changed (a member that resolved and opens again is suppressed again, without a
//!   `Grow`). Counts are of every member that joined (resolved or not).
//! - **Clearing.** The storm *subsides* when fewer than `min_tenants` distinct tenants
//!   have a member still open (this includes all members resolved), and *clears* once it
//!   has stayed subsided for `clear_after`: [`StormEvent::Clear`] at
//!   `cleared_at = subsided_at + clear_after`, then one [`StormEvent::ResolveMember`] per
//!   member still open (once each: the correlator forgets them). An opening that brings
//!   the tenants still failing back to `min_tenants` ends the subsidence. Sustaining
//!   needs only `min_tenants`, not `min_share` (hysteresis: 35 of 300 tenants still down
//!   is still the storm). The members resolved by a clear are no longer a shared outage;
//!   if they are still failing the incident pipeline opens them again as ordinary
//!   incidents that page their tenants (and that may correlate into a new storm).
//! - **Below the floor** (fewer than `min_tenants` tenants, or not more than `min_share`
//!   of the active tenants): no event; the incidents stay normal.
//! - **Storm ids** are stable: `Finding::derive_id(["storm", cause.key(), opened_at])`
//!   with `opened_at` as RFC 3339 in UTC (`2026-11-21T10:00:00Z`), so a replay produces
//!   the same id. A new storm of the same cause opens after the previous one cleared, so
//!   its `opened_at` (and id) differ.
//!
//! # Members that paged before the storm
//!
//! The storm opens on the opening that crosses the floor, so the members that opened
//! before it were already opened (and, unless held, triggered): `Suppress` for them is an
//! update ("suppressed, linked to storm"), and their pages were sent. With the defaults a
//! storm over 300 active tenants needs 31 tenants, so up to 30 tenants could be paged
//! before the storm forms. To avoid that, the caller can hold the trigger of a new
//! probe-class incident for [`StormCorrelator::hold_for`] (`hold`, default 2m) of event
//! time: if a `Suppress` for it arrives meanwhile it never pages; otherwise it triggers
//! when the hold expires (late by at most `hold`). Provider outages hit their tenants
//! within a probe round or two, so a short hold catches most members; `hold: 0s`
//! disables it.
//!
//! # Payload boundaries
//!
//! [`StormEvent::Open`], [`StormEvent::Grow`] and [`StormEvent::Clear`] (what goes to
//! operator routes) carry the storm id, its cause and counts, never a tenant or server.
//! Only [`StormEvent::Suppress`] and [`StormEvent::ResolveMember`] name a member, for the
//! caller to update that tenant's own incident. [`StormCorrelator::provider_notice`] is
//! what a tenant that opted in to "upstream provider outage" notices may see: the cause
//! and when it started, nothing of other tenants.
//!
//! # Memory
//!
//! Per cause, only the openings within the window and the open storm's members; a cause
//! with neither is forgotten. The whole state serializes (checkpointed with offsets), and
//! a restored correlator produces exactly the events the original would have.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use mcpulse_schemas::Finding;
use serde::{Deserialize, Serialize};

use super::types::{Cause, FailureClass, IncidentKey};

/// `storm:` (under `incidents:` in `mcpulse.yaml`).
///
/// ```yaml
/// storm:
///   enabled: true
///   window: 5m         # openings within this correlate
///   min_tenants: 3     # at least this many distinct tenants
///   min_share: 0.10    # and more than this share of the active tenants
///   clear_after: 5m    # clears after fewer than min_tenants tenants fail for this long
///   hold: 2m           # hint: hold triggers of probe-class incidents this long
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StormConfig {
    /// Correlate incidents into storms (default true). When false no storm opens; storms
    /// already open still clear.
    pub enabled: bool,
    /// Openings of one cause within this correlate (default 5m, at least 1m, at most 1h).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Distinct tenants needed to open a storm, and to keep it from subsiding (default 3,
    /// at least 2).
    pub min_tenants: usize,
    /// The storm's tenants must be more than this share of the active tenants to open it
    /// (default 0.10; 0 ≤ share < 1).
    pub min_share: f64,
    /// A storm clears after fewer than `min_tenants` tenants have had an open member for
    /// this long (default 5m, at least 1m).
    #[serde(with = "humantime_serde")]
    pub clear_after: Duration,
    /// How long the caller should hold the trigger of a new probe-class incident in case
    /// a storm forms around it (default 2m; 0 disables; at most `window`).
    #[serde(with = "humantime_serde")]
    pub hold: Duration,
}

impl Default for StormConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(300),
            min_tenants: 3,
            min_share: 0.10,
            clear_after: Duration::from_secs(300),
            hold: Duration::from_secs(120),
        }
    }
}

impl StormConfig {
    /// Checks what serde cannot; the error names the field (`storm.min_tenants: …`).
    pub fn validate(&self) -> Result<(), String> {
        if self.window < Duration::from_secs(60) {
            return Err("storm.window: at least 1m (event times are minute starts)".into());
        }
        if self.window > Duration::from_secs(3600) {
            return Err("storm.window: at most 1h".into());
        }
        if self.min_tenants < 2 {
            return Err(
                "storm.min_tenants: at least 2 (a storm is shared by several tenants)".into(),
            );
        }
        if !(self.min_share.is_finite() && (0.0..1.0).contains(&self.min_share)) {
            return Err(format!(
                "storm.min_share: must be at least 0 and less than 1 (got {})",
                self.min_share
            ));
        }
        if self.clear_after < Duration::from_secs(60) {
            return Err("storm.clear_after: at least 1m".into());
        }
        if self.clear_after > Duration::from_secs(24 * 3600) {
            return Err("storm.clear_after: at most 24h".into());
        }
        if self.hold > self.window {
            return Err(format!(
                "storm.hold: at most window ({})",
                humantime_serde::re::humantime::format_duration(self.window)
            ));
        }
        Ok(())
    }
}

/// What the correlator decided. Open/Grow/Clear name no tenant or server; Suppress and
/// ResolveMember name the one member they are about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StormEvent {
    /// A storm opened (one notice to operator routes).
    Open {
        storm_id: String,
        cause: Cause,
        /// The earliest member opening.
        opened_at: DateTime<Utc>,
        /// Distinct tenants of the members.
        tenants: u64,
        members: u64,
    },
    /// This member incident is part of the storm: suppress it (no page for its tenant)
    /// and link it to the storm. For a member opened before the storm this is an update.
    Suppress {
        storm_id: String,
        member: IncidentKey,
    },
    /// The storm's counts changed (after the `Suppress` of a new member).
    Grow {
        storm_id: String,
        cause: Cause,
        tenants: u64,
        members: u64,
    },
    /// The storm cleared; `ResolveMember` events for its members still open follow.
    Clear {
        storm_id: String,
        cause: Cause,
        opened_at: DateTime<Utc>,
        /// When fewer than `min_tenants` tenants were left failing.
        subsided_at: DateTime<Utc>,
        /// `subsided_at + clear_after`.
        cleared_at: DateTime<Utc>,
        /// `cleared_at - opened_at`, in seconds.
        duration_s: u64,
        tenants: u64,
        members: u64,
    },
    /// Resolve this member incident: its storm cleared while it was still open.
    ResolveMember {
        storm_id: String,
        member: IncidentKey,
        /// The storm's `cleared_at`.
        resolved_at: DateTime<Utc>,
    },
}

/// What a tenant that opted in to "upstream provider outage" notices may be told about a
/// storm: its cause and start, nothing of other tenants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderNotice {
    pub provider: String,
    pub region: String,
    pub class: FailureClass,
    pub opened_at: DateTime<Utc>,
}

/// The storm correlator of one partition (see the module docs). Serializable: checkpoint
/// it with the offsets it has consumed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StormCorrelator {
    config: StormConfig,
    /// The latest event time seen; expiries have been processed up to it.
    now: Option<DateTime<Utc>>,
    /// Causes with candidates or an open storm.
    #[serde(with = "pairs")]
    causes: BTreeMap<Cause, CauseState>,
    /// The cause of every open incident tracked (candidates and open storm members).
    #[serde(with = "pairs")]
    open: BTreeMap<IncidentKey, Cause>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct CauseState {
    /// Openings within the window, oldest first (empty while a storm is open).
    candidates: VecDeque<Candidate>,
    /// Candidates per tenant.
    candidate_tenants: BTreeMap<String, u32>,
    storm: Option<Storm>,
}

impl CauseState {
    fn is_empty(&self) -> bool {
        self.candidates.is_empty() && self.storm.is_none()
    }

    fn forget_candidate_tenant(&mut self, tenant: &str) {
        if let Some(n) = self.candidate_tenants.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                self.candidate_tenants.remove(tenant);
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Candidate {
    key: IncidentKey,
    at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Storm {
    id: String,
    opened_at: DateTime<Utc>,
    /// Every member that joined, and whether its incident is still open.
    #[serde(with = "pairs")]
    members: BTreeMap<IncidentKey, bool>,
    /// Members per tenant (all that joined).
    tenants: BTreeMap<String, u32>,
    /// Open members per tenant.
    failing: BTreeMap<String, u32>,
    /// Since when fewer than `min_tenants` tenants have an open member.
    subsided_at: Option<DateTime<Utc>>,
}

impl Storm {
    /// Adds (or reopens) a member; whether the counts changed.
    fn join(&mut self, key: &IncidentKey) -> bool {
        *self.failing.entry(key.tenant.clone()).or_insert(0) += 1;
        match self.members.insert(key.clone(), true) {
            Some(_) => false,
            None => {
                *self.tenants.entry(key.tenant.clone()).or_insert(0) += 1;
                true
            }
        }
    }

    fn counts(&self) -> (u64, u64) {
        (self.tenants.len() as u64, self.members.len() as u64)
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// The stable id of the storm of `cause` that opened at `opened_at`.
pub fn storm_id(cause: &Cause, opened_at: DateTime<Utc>) -> String {
    Finding::derive_id(&[
        "storm",
        &cause.key(),
        &opened_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    ])
}

impl StormCorrelator {
    /// An empty correlator (the config should have been validated).
    pub fn new(config: StormConfig) -> Self {
        Self {
            config,
            now: None,
            causes: BTreeMap::new(),
            open: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &StormConfig {
        &self.config
    }

    /// Applies a (changed) config, e.g. after restoring a checkpoint taken under an older
    /// one. A shorter window or `clear_after` takes effect when time next advances.
    pub fn set_config(&mut self, config: StormConfig) {
        self.config = config;
    }

    /// How long the caller should hold the trigger of a new probe-class incident so that
    /// a storm forming around it can suppress it before it pages (zero when disabled).
    pub fn hold_for(&self) -> Duration {
        if self.config.enabled {
            self.config.hold
        } else {
            Duration::ZERO
        }
    }

    /// An incident of a probe class opened at `at` (event time); `active_tenants` is the
    /// number of tenants currently active (the share rule's denominator).
    pub fn incident_opened(
        &mut self,
        key: &IncidentKey,
        cause: &Cause,
        at: DateTime<Utc>,
        active_tenants: usize,
    ) -> Vec<StormEvent> {
        let (at, mut events) = self.tick(at);
        if !self.config.enabled || !cause.class.correlates() || self.open.contains_key(key) {
            return events;
        }
        self.open.insert(key.clone(), cause.clone());
        let state = self.causes.entry(cause.clone()).or_default();

        if let Some(storm) = &mut state.storm {
            let grew = storm.join(key);
            if storm.subsided_at.is_some() && storm.failing.len() >= self.config.min_tenants {
                storm.subsided_at = None;
            }
            events.push(StormEvent::Suppress {
                storm_id: storm.id.clone(),
                member: key.clone(),
            });
            if grew {
                let (tenants, members) = storm.counts();
                events.push(StormEvent::Grow {
                    storm_id: storm.id.clone(),
                    cause: cause.clone(),
                    tenants,
                    members,
                });
            }
            return events;
        }

        state.candidates.push_back(Candidate {
            key: key.clone(),
            at,
        });
        *state
            .candidate_tenants
            .entry(key.tenant.clone())
            .or_insert(0) += 1;
        let tenants = state.candidate_tenants.len();
        let floor = tenants >= self.config.min_tenants
            && tenants as f64 > self.config.min_share * active_tenants as f64;
        if !floor {
            return events;
        }

        let opened_at = state.candidates.front().map_or(at, |c| c.at);
        let id = storm_id(cause, opened_at);
        let mut storm = Storm {
            id: id.clone(),
            opened_at,
            members: BTreeMap::new(),
            tenants: BTreeMap::new(),
            failing: BTreeMap::new(),
            subsided_at: None,
        };
        let candidates = std::mem::take(&mut state.candidates);
        state.candidate_tenants.clear();
        for candidate in &candidates {
            storm.join(&candidate.key);
        }
        let (tenants, members) = storm.counts();
        events.push(StormEvent::Open {
            storm_id: id.clone(),
            cause: cause.clone(),
            opened_at,
            tenants,
            members,
        });
        events.extend(candidates.into_iter().map(|c| StormEvent::Suppress {
            storm_id: id.clone(),
            member: c.key,
        }));
        state.storm = Some(storm);
        events
    }

    /// An incident resolved at `at` (event time). Unknown incidents are ignored.
    pub fn incident_resolved(&mut self, key: &IncidentKey, at: DateTime<Utc>) -> Vec<StormEvent> {
        let (at, events) = self.tick(at);
        let Some(cause) = self.open.remove(key) else {
            return events;
        };
        let Some(state) = self.causes.get_mut(&cause) else {
            return events;
        };
        if let Some(storm) = &mut state.storm {
            if storm.members.get_mut(key).is_some_and(|open| {
                let was = *open;
                *open = false;
                was
            }) {
                if let Some(n) = storm.failing.get_mut(&key.tenant) {
                    *n -= 1;
                    if *n == 0 {
                        storm.failing.remove(&key.tenant);
                    }
                }
                if storm.subsided_at.is_none() && storm.failing.len() < self.config.min_tenants {
                    storm.subsided_at = Some(at);
                }
            }
        } else if let Some(i) = state.candidates.iter().position(|c| &c.key == key) {
            state.candidates.remove(i);
            state.forget_candidate_tenant(&key.tenant);
        }
        if state.is_empty() {
            self.causes.remove(&cause);
        }
        events
    }

    /// Moves event time to `now`: candidates leave their window, subsided storms clear.
    pub fn advance(&mut self, now: DateTime<Utc>) -> Vec<StormEvent> {
        self.tick(now).1
    }

    /// The storm `key` is an open member of.
    pub fn storm_of(&self, key: &IncidentKey) -> Option<&str> {
        let storm = self.causes.get(self.open.get(key)?)?.storm.as_ref()?;
        storm.members.contains_key(key).then_some(storm.id.as_str())
    }

    /// What an opted-in tenant may be told about an open storm.
    pub fn provider_notice(&self, storm_id: &str) -> Option<ProviderNotice> {
        self.causes.iter().find_map(|(cause, state)| {
            let storm = state.storm.as_ref()?;
            (storm.id == storm_id).then(|| ProviderNotice {
                provider: cause.provider.clone(),
                region: cause.region.clone(),
                class: cause.class,
                opened_at: storm.opened_at,
            })
        })
    }

    /// Storms currently open.
    pub fn open_storms(&self) -> usize {
        self.causes.values().filter(|s| s.storm.is_some()).count()
    }

    /// Open incidents tracked (candidates and open storm members): the size of the state.
    pub fn tracked_incidents(&self) -> usize {
        self.open.len()
    }

    /// Clamps `at` to the latest time seen and, when time moved, processes what fell due.
    fn tick(&mut self, at: DateTime<Utc>) -> (DateTime<Utc>, Vec<StormEvent>) {
        if let Some(now) = self.now
            && at <= now
        {
            return (now, Vec::new());
        }
        self.now = Some(at);
        (at, self.sweep(at))
    }

    fn sweep(&mut self, now: DateTime<Utc>) -> Vec<StormEvent> {
        let window = delta(self.config.window);
        let clear_after = delta(self.config.clear_after);
        let mut events = Vec::new();
        let Self { causes, open, .. } = self;
        for (cause, state) in causes.iter_mut() {
            while let Some(front) = state.candidates.front()
                && now.signed_duration_since(front.at) >= window
            {
                let Some(candidate) = state.candidates.pop_front() else {
                    break;
                };
                state.forget_candidate_tenant(&candidate.key.tenant);
                open.remove(&candidate.key);
            }
            let due = state.storm.as_ref().and_then(|s| {
                let subsided_at = s.subsided_at?;
                let cleared_at = subsided_at.checked_add_signed(clear_after)?;
                (now >= cleared_at).then_some((subsided_at, cleared_at))
            });
            let Some((subsided_at, cleared_at)) = due else {
                continue;
            };
            let Some(storm) = state.storm.take() else {
                continue;
            };
            let (tenants, members) = storm.counts();
            events.push(StormEvent::Clear {
                storm_id: storm.id.clone(),
                cause: cause.clone(),
                opened_at: storm.opened_at,
                subsided_at,
                cleared_at,
                duration_s: u64::try_from((cleared_at - storm.opened_at).num_seconds())
                    .unwrap_or(0),
                tenants,
                members,
            });
            for (member, still_open) in storm.members {
                if still_open {
                    open.remove(&member);
                    events.push(StormEvent::ResolveMember {
                        storm_id: storm.id.clone(),
                        member,
                        resolved_at: cleared_at,
                    });
                }
            }
        }
        causes.retain(|_, state| !state.is_empty());
        events
    }
}

/// Maps with non-string keys as JSON arrays of `[key, value]` pairs.
pub(crate) mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K, V, S>(map: &BTreeMap<K, V>, serializer: S) -> Result<S::Ok, S::Error>
    where
        K: Serialize,
        V: Serialize,
        S: Serializer,
    {
        serializer.collect_seq(map)
    }

    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(minute: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + TimeDelta::minutes(minute)
    }

    fn key(tenant: &str, server: &str) -> IncidentKey {
        IncidentKey {
            tenant: tenant.into(),
            server: server.into(),
            class: FailureClass::Unreachable,
        }
    }

    fn cause(provider: &str, region: &str, class: FailureClass) -> Cause {
        Cause {
            provider: provider.into(),
            region: region.into(),
            class,
        }
    }

    fn render() -> Cause {
        cause("onrender.com", "global", FailureClass::Unreachable)
    }

    fn correlator() -> StormCorrelator {
        StormCorrelator::new(StormConfig::default())
    }

    fn opens(events: &[StormEvent]) -> Vec<&StormEvent> {
        events
            .iter()
            .filter(|e| matches!(e, StormEvent::Open { .. }))
            .collect()
    }

    fn suppressed(events: &[StormEvent]) -> Vec<IncidentKey> {
        events
            .iter()
            .filter_map(|e| match e {
                StormEvent::Suppress { member, .. } => Some(member.clone()),
                _ => None,
            })
            .collect()
    }

    fn resolved(events: &[StormEvent]) -> Vec<IncidentKey> {
        events
            .iter()
            .filter_map(|e| match e {
                StormEvent::ResolveMember { member, .. } => Some(member.clone()),
                _ => None,
            })
            .collect()
    }

    /// Opens one incident per tenant `tenant-{i}` (server `srv-{i}`) at `minute`.
    fn open_tenants(
        c: &mut StormCorrelator,
        tenants: std::ops::Range<usize>,
        minute: i64,
        active: usize,
    ) -> Vec<StormEvent> {
        let mut events = Vec::new();
        for i in tenants {
            events.extend(c.incident_opened(
                &key(&format!("tenant-{i:02}"), &format!("srv-{i:02}")),
                &render(),
                t(minute),
                active,
            ));
        }
        events
    }

    #[test]
    fn provider_outage_of_40_tenants_is_one_storm_and_unrelated_failures_stay_normal() {
        let mut c = correlator();
        let mut events = Vec::new();
        let unrelated = [
            (
                key("other-a", "api"),
                cause("railway.app", "global", FailureClass::Unreachable),
            ),
            (
                key("other-b", "api"),
                cause("onrender.com", "eu-west", FailureClass::Unreachable),
            ),
            (
                IncidentKey {
                    class: FailureClass::Tls,
                    ..key("other-c", "api")
                },
                cause("onrender.com", "global", FailureClass::Tls),
            ),
        ];
        // 40 tenants within 2 minutes, the unrelated failures interleaved.
        for i in 0..40usize {
            let minute = (i / 14) as i64; // minutes 0, 1, 2
            events.extend(c.incident_opened(
                &key(&format!("tenant-{i:02}"), &format!("srv-{i:02}")),
                &render(),
                t(minute),
                300,
            ));
            if i % 13 == 5 {
                let (k, cause) = &unrelated[i / 13];
                events.extend(c.incident_opened(k, cause, t(minute), 300));
            }
        }
        events.extend(c.advance(t(3)));

        let open = opens(&events);
        assert_eq!(open.len(), 1, "{events:#?}");
        let StormEvent::Open {
            storm_id,
            cause: open_cause,
            opened_at,
            tenants,
            members,
        } = open[0]
        else {
            unreachable!()
        };
        assert_eq!(open_cause, &render());
        assert_eq!(*opened_at, t(0));
        // More than 10% of 300 active tenants: the 31st tenant opens it.
        assert_eq!((*tenants, *members), (31, 31));
        assert_eq!(
            storm_id,
            &Finding::derive_id(&[
                "storm",
                "onrender.com/global/unreachable",
                "2026-11-21T10:00:00Z"
            ])
        );

        let members = suppressed(&events);
        assert_eq!(members.len(), 40);
        let distinct: std::collections::BTreeSet<_> = members.iter().collect();
        assert_eq!(distinct.len(), 40);
        for (k, _) in &unrelated {
            assert!(!members.contains(k), "{k:?} suppressed");
            assert_eq!(c.storm_of(k), None);
        }
        for m in &members {
            assert_eq!(c.storm_of(m), Some(storm_id.as_str()));
        }
        let last_grow = events
            .iter()
            .rev()
            .find_map(|e| match e {
                StormEvent::Grow {
                    tenants, members, ..
                } => Some((*tenants, *members)),
                _ => None,
            })
            .unwrap();
        assert_eq!(last_grow, (40, 40));
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, StormEvent::Grow { .. }))
                .count(),
            9
        );
        // The Open comes before every Suppress, and each Grow follows its Suppress.
        let open_at = events
            .iter()
            .position(|e| matches!(e, StormEvent::Open { .. }))
            .unwrap();
        assert!(
            events[..open_at]
                .iter()
                .all(|e| !matches!(e, StormEvent::Suppress { .. }))
        );
        assert!(matches!(events[open_at + 1], StormEvent::Suppress { .. }));
        assert_eq!(c.open_storms(), 1);
        // The unrelated failures are still tracked as candidates of their own causes.
        assert_eq!(c.tracked_incidents(), 43);
        // ... until their window passes.
        c.advance(t(10));
        assert_eq!(c.tracked_incidents(), 40);
    }

    #[test]
    fn storm_ids_are_stable_and_documented() {
        assert_eq!(
            storm_id(&render(), t(0)),
            Finding::derive_id(&[
                "storm",
                "onrender.com/global/unreachable",
                "2026-11-21T10:00:00Z"
            ])
        );
        // Same openings in another order within the minute: same storm, same id.
        let mut a = correlator();
        let mut b = correlator();
        let ea = open_tenants(&mut a, 0..3, 0, 10);
        let mut eb = Vec::new();
        for i in [2usize, 0, 1] {
            eb.extend(open_tenants(&mut b, i..i + 1, 0, 10));
        }
        let id = |events: &[StormEvent]| match opens(events)[0] {
            StormEvent::Open { storm_id, .. } => storm_id.clone(),
            _ => unreachable!(),
        };
        assert_eq!(id(&ea), id(&eb));
        assert_eq!(id(&ea), storm_id(&render(), t(0)));
        // A different cause or start is a different storm.
        assert_ne!(storm_id(&render(), t(0)), storm_id(&render(), t(1)));
        assert_ne!(
            storm_id(&render(), t(0)),
            storm_id(&cause("fly.dev", "global", FailureClass::Unreachable), t(0))
        );
    }

    #[test]
    fn below_the_tenant_floor_nothing_happens() {
        let mut c = correlator();
        // Two tenants, even if they are all the active tenants and have many servers.
        let mut events = Vec::new();
        for s in 0..5 {
            events.extend(c.incident_opened(&key("a", &format!("s{s}")), &render(), t(0), 2));
            events.extend(c.incident_opened(&key("b", &format!("s{s}")), &render(), t(1), 2));
        }
        events.extend(c.advance(t(30)));
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(c.tracked_incidents(), 0);
        assert_eq!(c.open_storms(), 0);
    }

    #[test]
    fn the_share_rule_needs_more_than_ten_percent_of_active_tenants() {
        // 3 of 50 (6%): nothing.
        let mut c = correlator();
        assert!(open_tenants(&mut c, 0..3, 0, 50).is_empty());
        // 3 of 30 (exactly 10%): not more than 10%, nothing.
        let mut c = correlator();
        assert!(open_tenants(&mut c, 0..3, 0, 30).is_empty());
        // 3 of 20 (15%): a storm.
        let mut c = correlator();
        let events = open_tenants(&mut c, 0..3, 0, 20);
        assert_eq!(opens(&events).len(), 1);
        assert_eq!(suppressed(&events).len(), 3);
        // 3 of 50 first, then a 4th... the share is checked with the opening's count:
        // 6 of 50 (12%) opens it.
        let mut c = correlator();
        assert!(open_tenants(&mut c, 0..5, 0, 50).is_empty());
        let events = open_tenants(&mut c, 5..6, 1, 50);
        assert_eq!(opens(&events).len(), 1);
        assert_eq!(suppressed(&events).len(), 6);
    }

    #[test]
    fn openings_spread_beyond_the_window_do_not_correlate() {
        let mut c = correlator();
        let mut events = open_tenants(&mut c, 0..1, 0, 10);
        events.extend(open_tenants(&mut c, 1..2, 3, 10));
        // At minute 5 the opening of minute 0 left the 5-minute window.
        events.extend(open_tenants(&mut c, 2..3, 5, 10));
        events.extend(open_tenants(&mut c, 3..4, 10, 10));
        events.extend(c.advance(t(30)));
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(c.tracked_incidents(), 0);

        // Within the window (minutes 0 and 4) they do.
        let mut c = correlator();
        let mut events = open_tenants(&mut c, 0..1, 0, 10);
        events.extend(open_tenants(&mut c, 1..3, 4, 10));
        assert_eq!(opens(&events).len(), 1);
        match opens(&events)[0] {
            StormEvent::Open { opened_at, .. } => assert_eq!(*opened_at, t(0)),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_tenant_with_many_servers_counts_once() {
        let mut c = correlator();
        let mut events = Vec::new();
        for s in 0..5 {
            events.extend(c.incident_opened(&key("big", &format!("s{s}")), &render(), t(0), 10));
        }
        events.extend(c.incident_opened(&key("small", "s"), &render(), t(0), 10));
        assert!(events.is_empty());
        let events = c.incident_opened(&key("third", "s"), &render(), t(1), 10);
        match &events[0] {
            StormEvent::Open {
                tenants, members, ..
            } => assert_eq!((*tenants, *members), (3, 7)),
            e => panic!("{e:?}"),
        }
        assert_eq!(suppressed(&events).len(), 7);
        // Another server of a member tenant grows members, not tenants.
        let events = c.incident_opened(&key("big", "s9"), &render(), t(2), 10);
        assert!(matches!(
            events[1],
            StormEvent::Grow {
                tenants: 3,
                members: 8,
                ..
            }
        ));
    }

    #[test]
    fn resolved_candidates_and_replayed_openings_do_not_count() {
        let mut c = correlator();
        assert!(open_tenants(&mut c, 0..2, 0, 10).is_empty());
        assert!(
            c.incident_resolved(&key("tenant-00", "srv-00"), t(1))
                .is_empty()
        );
        // Reopening counts again, a replayed opening (already open) does not.
        assert!(open_tenants(&mut c, 1..2, 1, 10).is_empty());
        assert!(open_tenants(&mut c, 2..3, 1, 10).is_empty());
        assert_eq!(c.tracked_incidents(), 2);
        let events = open_tenants(&mut c, 0..1, 2, 10);
        assert_eq!(opens(&events).len(), 1);
        match &events[0] {
            StormEvent::Open {
                opened_at,
                tenants,
                members,
                ..
            } => {
                // The earliest opening still counting (tenant-01 at minute 0).
                assert_eq!(*opened_at, t(0));
                assert_eq!((*tenants, *members), (3, 3));
            }
            e => panic!("{e:?}"),
        }
        // A replayed opening of a member is not suppressed twice.
        assert!(open_tenants(&mut c, 0..1, 2, 10).is_empty());
    }

    #[test]
    fn the_storm_clears_once_and_resolves_the_members_still_open() {
        let mut c = correlator();
        let events = open_tenants(&mut c, 0..3, 0, 10);
        let id = storm_id(&render(), t(0));
        assert_eq!(opens(&events).len(), 1);
        // Two of three resolve at minute 10: one tenant left failing, below the floor.
        assert!(
            c.incident_resolved(&key("tenant-00", "srv-00"), t(10))
                .is_empty()
        );
        assert!(
            c.incident_resolved(&key("tenant-01", "srv-01"), t(10))
                .is_empty()
        );
        assert!(c.advance(t(14)).is_empty());
        let events = c.advance(t(15));
        assert_eq!(
            events,
            vec![
                StormEvent::Clear {
                    storm_id: id.clone(),
                    cause: render(),
                    opened_at: t(0),
                    subsided_at: t(10),
                    cleared_at: t(15),
                    duration_s: 15 * 60,
                    tenants: 3,
                    members: 3,
                },
                StormEvent::ResolveMember {
                    storm_id: id.clone(),
                    member: key("tenant-02", "srv-02"),
                    resolved_at: t(15),
                },
            ]
        );
        assert_eq!(c.open_storms(), 0);
        assert_eq!(c.tracked_incidents(), 0);
        assert_eq!(c.provider_notice(&id), None);
        // Once: nothing more, and the member's own resolution later is ignored.
        assert!(c.advance(t(30)).is_empty());
        assert!(
            c.incident_resolved(&key("tenant-02", "srv-02"), t(31))
                .is_empty()
        );
        // A new opening after the clear is an ordinary candidate again.
        assert!(open_tenants(&mut c, 2..3, 32, 10).is_empty());
        assert_eq!(c.storm_of(&key("tenant-02", "srv-02")), None);
    }

    #[test]
    fn a_clear_falls_due_on_any_call_with_the_time_it_was_due() {
        let mut c = correlator();
        open_tenants(&mut c, 0..3, 0, 10);
        for i in 0..3 {
            c.incident_resolved(
                &key(&format!("tenant-{i:02}"), &format!("srv-{i:02}")),
                t(2),
            );
        }
        // No advance: the next opening (another cause, much later) carries the clear.
        let other = cause("fly.dev", "global", FailureClass::Unreachable);
        let events = c.incident_opened(&key("x", "y"), &other, t(40), 10);
        assert_eq!(events.len(), 1);
        match &events[0] {
            StormEvent::Clear {
                cleared_at,
                duration_s,
                ..
            } => {
                assert_eq!(*cleared_at, t(7));
                assert_eq!(*duration_s, 7 * 60);
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn new_members_end_the_subsidence_and_reopened_members_are_suppressed_without_growing() {
        let mut c = correlator();
        open_tenants(&mut c, 0..4, 0, 10);
        // 4 → 2 tenants failing: subsided at minute 5.
        c.incident_resolved(&key("tenant-00", "srv-00"), t(4));
        assert!(
            c.incident_resolved(&key("tenant-01", "srv-01"), t(5))
                .is_empty()
        );
        // A reopened member: suppressed, counts unchanged, back to 3 failing.
        let events = open_tenants(&mut c, 0..1, 8, 10);
        assert_eq!(
            events,
            vec![StormEvent::Suppress {
                storm_id: storm_id(&render(), t(0)),
                member: key("tenant-00", "srv-00"),
            }]
        );
        // Past the original clear time: still open.
        assert!(c.advance(t(20)).is_empty());
        assert_eq!(c.open_storms(), 1);
        // A new tenant joins: Suppress + Grow.
        let events = open_tenants(&mut c, 9..10, 21, 10);
        assert_eq!(events.len(), 2);
        assert!(matches!(
            events[1],
            StormEvent::Grow {
                tenants: 5,
                members: 5,
                ..
            }
        ));
        // All resolve: clears clear_after later, with no member left to resolve.
        for i in [0usize, 2, 3, 9] {
            c.incident_resolved(
                &key(&format!("tenant-{i:02}"), &format!("srv-{i:02}")),
                t(30),
            );
        }
        let events = c.advance(t(35));
        assert_eq!(events.len(), 1);
        assert!(matches!(
            events[0],
            StormEvent::Clear {
                tenants: 5,
                members: 5,
                duration_s: 2100,
                ..
            }
        ));
    }

    #[test]
    fn serde_round_trip_mid_window_and_mid_storm_gives_identical_events() {
        type Step = Box<dyn Fn(&mut StormCorrelator) -> Vec<StormEvent>>;
        let mut steps: Vec<Step> = Vec::new();
        for i in 0..6usize {
            steps.push(Box::new(move |c| {
                open_tenants(c, i..i + 1, (i / 2) as i64, 40)
            }));
        }
        steps.push(Box::new(|c| {
            c.incident_resolved(&key("tenant-01", "srv-01"), t(3))
        }));
        steps.push(Box::new(|c| {
            c.incident_opened(
                &key("tenant-01", "other"),
                &cause("vercel.app", "us-east", FailureClass::Timeout),
                t(3),
                40,
            )
        }));
        for i in 6..9usize {
            steps.push(Box::new(move |c| open_tenants(c, i..i + 1, 4, 40)));
        }
        for i in 0..9usize {
            steps.push(Box::new(move |c| {
                c.incident_resolved(
                    &key(&format!("tenant-{i:02}"), &format!("srv-{i:02}")),
                    t(20),
                )
            }));
        }
        steps.push(Box::new(|c| c.advance(t(24))));
        steps.push(Box::new(|c| c.advance(t(25))));
        steps.push(Box::new(|c| c.advance(t(60))));

        let mut reference = correlator();
        let expected: Vec<Vec<StormEvent>> = steps.iter().map(|s| s(&mut reference)).collect();
        assert_eq!(
            expected
                .iter()
                .flatten()
                .filter(|e| matches!(e, StormEvent::Open { .. }))
                .count(),
            1
        );
        assert_eq!(
            expected
                .iter()
                .flatten()
                .filter(|e| matches!(e, StormEvent::Clear { .. }))
                .count(),
            1
        );
        for cut in 0..steps.len() {
            let mut c = correlator();
            for s in &steps[..cut] {
                s(&mut c);
            }
            let json = serde_json::to_string(&c).unwrap();
            let mut restored: StormCorrelator = serde_json::from_str(&json).unwrap();
            assert_eq!(restored, c, "cut {cut}");
            for (i, s) in steps.iter().enumerate().skip(cut) {
                assert_eq!(s(&mut restored), expected[i], "cut {cut}, step {i}");
            }
        }
    }

    #[test]
    fn storm_payloads_name_no_tenant_or_server() {
        let mut c = correlator();
        let mut events = open_tenants(&mut c, 0..12, 0, 40);
        let id = storm_id(&render(), t(0));
        for i in 0..12 {
            events.extend(c.incident_resolved(
                &key(&format!("tenant-{i:02}"), &format!("srv-{i:02}")),
                t(5),
            ));
        }
        let notice = c.provider_notice(&id).unwrap();
        assert_eq!(
            notice,
            ProviderNotice {
                provider: "onrender.com".into(),
                region: "global".into(),
                class: FailureClass::Unreachable,
                opened_at: t(0),
            }
        );
        assert_eq!(c.provider_notice("nope"), None);
        let mut c2 = correlator();
        open_tenants(&mut c2, 0..3, 0, 10);
        c2.incident_resolved(&key("tenant-00", "srv-00"), t(1));
        c2.incident_resolved(&key("tenant-01", "srv-01"), t(1));
        events.extend(c2.advance(t(10)));
        events.extend(c.advance(t(10)));

        let mut kinds = std::collections::BTreeSet::new();
        let mut texts = vec![serde_json::to_string(&notice).unwrap()];
        for e in &events {
            let json = serde_json::to_value(e).unwrap();
            let kind = json["event"].as_str().unwrap().to_string();
            if matches!(
                e,
                StormEvent::Open { .. } | StormEvent::Grow { .. } | StormEvent::Clear { .. }
            ) {
                texts.push(json.to_string());
            } else {
                // Members name exactly their own tenant.
                let text = json.to_string();
                assert_eq!(text.matches("tenant-").count(), 1, "{text}");
            }
            kinds.insert(kind);
        }
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            ["clear", "grow", "open", "resolve_member", "suppress"]
        );
        for text in texts {
            assert!(!text.contains("tenant-"), "{text}");
            assert!(!text.contains("srv-"), "{text}");
        }
    }

    #[test]
    fn event_json_shape() {
        let e = StormEvent::Suppress {
            storm_id: "s".into(),
            member: key("acme", "weather"),
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "event": "suppress",
                "storm_id": "s",
                "member": {"tenant": "acme", "server": "weather", "class": "unreachable"},
            })
        );
        assert_eq!(serde_json::from_value::<StormEvent>(json).unwrap(), e);
    }

    #[test]
    fn memory_stays_bounded_by_the_window_and_open_storms() {
        let mut c = correlator();
        // A steady trickle of unrelated single-tenant failures (never a storm): only the
        // window's openings are kept.
        for minute in 0..600i64 {
            for j in 0..2 {
                let tenant = format!("t{minute}-{j}");
                let k = key(&tenant, "s");
                let provider = if j == 0 { "fly.dev" } else { "railway.app" };
                let cs = cause(provider, "global", FailureClass::Unreachable);
                assert!(c.incident_opened(&k, &cs, t(minute), 10_000).is_empty());
            }
            assert!(c.tracked_incidents() <= 10, "{}", c.tracked_incidents());
        }
        c.advance(t(700));
        assert_eq!(c.tracked_incidents(), 0);
        assert!(c.causes.is_empty());
    }

    #[test]
    fn time_never_goes_back_and_disabled_correlates_nothing() {
        let mut c = correlator();
        open_tenants(&mut c, 0..2, 10, 10);
        // An opening stamped earlier counts as at the latest time seen.
        let events = open_tenants(&mut c, 2..3, 2, 10);
        match &events[0] {
            StormEvent::Open { opened_at, .. } => assert_eq!(*opened_at, t(10)),
            e => panic!("{e:?}"),
        }

        let mut c = StormCorrelator::new(StormConfig {
            enabled: false,
            ..StormConfig::default()
        });
        assert!(open_tenants(&mut c, 0..30, 0, 10).is_empty());
        assert_eq!(c.tracked_incidents(), 0);
        assert_eq!(c.hold_for(), Duration::ZERO);

        // Disabling while a storm is open: it still clears and resolves its members.
        let mut c = correlator();
        assert_eq!(c.hold_for(), Duration::from_secs(120));
        open_tenants(&mut c, 0..3, 0, 10);
        c.set_config(StormConfig {
            enabled: false,
            ..StormConfig::default()
        });
        assert!(open_tenants(&mut c, 3..4, 1, 10).is_empty());
        c.incident_resolved(&key("tenant-00", "srv-00"), t(2));
        let events = c.advance(t(7));
        assert_eq!(resolved(&events).len(), 2);
        assert!(matches!(events[0], StormEvent::Clear { members: 3, .. }));

        // Findings' classes have no provider: ignored.
        let mut c = correlator();
        let finding = cause("onrender.com", "global", FailureClass::ErrorRate);
        for i in 0..5 {
            assert!(
                c.incident_opened(&key(&format!("t{i}"), "s"), &finding, t(0), 10)
                    .is_empty()
            );
        }
    }

    #[test]
    fn config_defaults_yaml_and_validation_name_the_field() {
        let config = StormConfig::default();
        config.validate().unwrap();
        let parsed: StormConfig = serde_yaml_ng::from_str(
            "window: 10m\nmin_tenants: 5\nmin_share: 0.2\nclear_after: 15m\nhold: 1m\n",
        )
        .unwrap();
        assert_eq!(parsed.window, Duration::from_secs(600));
        assert_eq!(parsed.min_tenants, 5);
        assert_eq!(parsed.clear_after, Duration::from_secs(900));
        assert!(parsed.enabled);
        parsed.validate().unwrap();
        assert_eq!(
            serde_yaml_ng::from_str::<StormConfig>("{}").unwrap(),
            StormConfig::default()
        );
        assert!(serde_yaml_ng::from_str::<StormConfig>("windows: 5m").is_err());

        let bad = |f: fn(&mut StormConfig), field: &str| {
            let mut c = StormConfig::default();
            f(&mut c);
            let err = c.validate().unwrap_err();
            assert!(err.starts_with(&format!("storm.{field}: ")), "{err}");
        };
        bad(|c| c.window = Duration::from_secs(30), "window");
        bad(|c| c.window = Duration::from_secs(7200), "window");
        bad(|c| c.min_tenants = 1, "min_tenants");
        bad(|c| c.min_share = 1.0, "min_share");
        bad(|c| c.min_share = -0.1, "min_share");
        bad(|c| c.min_share = f64::NAN, "min_share");
        bad(|c| c.clear_after = Duration::from_secs(10), "clear_after");
        bad(|c| c.hold = Duration::from_secs(600), "hold");
        let mut ok = StormConfig {
            min_share: 0.0,
            hold: Duration::ZERO,
            ..StormConfig::default()
        };
        ok.validate().unwrap();
        ok.hold = ok.window;
        ok.validate().unwrap();
    }
}

//! The notification log (nflog): per incident and receiver integration, the sink handle
//! the provider knows the incident by (PagerDuty dedup key, OpsGenie alias, Discord
//! message id, email Message-ID), the transitions (event ids) whose notification there
//! is finished, and the last one sent (for `repeat_interval`).
//!
//! It is what makes delivery effectively once: a replayed event whose id is already
//! finished for an integration is not sent there again, and an update finds the handle
//! of the message to edit. Checkpointed per log partition with the offset it covers
//! (see [`super::store`]) as [`Segment`]s: now and then all of it, and at every other
//! checkpoint only the incidents that changed since the previous one, so a checkpoint
//! costs what changed, not the size of the log. Memory is bounded by forgetting
//! incidents after a retention. Each incident's entry is shared copy-on-write, so the
//! segment a checkpoint takes (under the partition's lock) copies pointers, not
//! incidents, and only the incidents that change while it is written in the background
//! are copied.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mcpulse_schemas::{AlertAction, AlertEvent, AlertStatus};
use serde::{Deserialize, Serialize};

use super::budget::{Admission, BudgetConfig, BudgetLog, DIGEST_CLASS};
use crate::receivers::SinkHandle;

/// How the notification of one transition to one integration finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Finished {
    /// Delivered; `handle` (when `Some`) replaces the recorded one.
    Sent { handle: Option<SinkHandle> },
    /// Nothing to send for this transition there.
    Skipped,
    /// Failed for good and written to the dead-letter topic.
    DeadLettered,
    /// The route was muted by a time interval.
    Muted,
    /// A silence matched.
    Silenced,
    /// Past the tenant's notification budget: added to the integration's digest.
    Folded,
}

/// The last notification sent to an integration, and when to repeat it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSent {
    pub event_id: String,
    /// Wall-clock time of the send (or of the last repeat).
    pub at: DateTime<Utc>,
    pub route_id: String,
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Duration,
}

/// What the log knows of one incident at one integration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetLog {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<SinkHandle>,
    /// Event ids whose notification here is finished (a handful per incident).
    #[serde(default)]
    pub done: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sent: Option<LastSent>,
}

/// What the log knows of one incident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentLog {
    /// The latest transition seen (what a repeat re-sends).
    pub last_event: AlertEvent,
    /// By integration key (`{receiver}/{destination}`).
    pub targets: BTreeMap<String, TargetLog>,
    /// The notification budget's decision, taken on its first notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<Admission>,
}

impl IncidentLog {
    /// Whether the incident is open and pages (not resolved, a blip or suppressed).
    pub fn is_open(&self) -> bool {
        is_open(&self.last_event)
    }

    fn last_activity(&self) -> DateTime<Utc> {
        self.targets
            .values()
            .filter_map(|t| t.last_sent.as_ref().map(|s| s.at))
            .fold(self.last_event.time, DateTime::max)
    }
}

/// Whether a transition leaves its incident open and paging (a digest is sent once:
/// never open).
pub fn is_open(event: &AlertEvent) -> bool {
    matches!(event.action, AlertAction::Trigger | AlertAction::Update)
        && matches!(event.status, AlertStatus::Open | AlertStatus::Flapping)
        && event.class != DIGEST_CLASS
}

/// A notification to re-send because its route's `repeat_interval` passed.
#[derive(Clone, Debug, PartialEq)]
pub struct Repeat {
    pub event: AlertEvent,
    pub key: String,
    pub route_id: String,
    pub repeat_interval: Duration,
}

/// The notification log of one log partition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Nflog {
    /// By incident id.
    incidents: BTreeMap<String, Arc<IncidentLog>>,
    /// Notification budget counts and pending digests.
    budget: BudgetLog,
    /// Incidents changed since the last segment was taken.
    changed: BTreeSet<String>,
    /// Incidents forgotten since the last segment was taken.
    removed: BTreeSet<String>,
    /// No repeat is due before this (`None`: not known, scan at the next call); saves
    /// [`Nflog::repeats_due`] a walk over every incident at every flush.
    next_repeat: Option<DateTime<Utc>>,
}

/// A checkpointed piece of a notification log: all of it (`full`), or the incidents
/// that changed and were forgotten since the previous piece. The budget, small, is in
/// every piece.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Segment {
    pub full: bool,
    #[serde(with = "shared_entries")]
    incidents: BTreeMap<String, Arc<IncidentLog>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    removed: Vec<String>,
    #[serde(default)]
    budget: BudgetLog,
}

impl Segment {
    /// Incidents it holds.
    pub fn len(&self) -> usize {
        self.incidents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty() && self.removed.is_empty()
    }
}

impl Nflog {
    pub fn len(&self) -> usize {
        self.incidents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty()
    }

    pub fn incident(&self, incident_id: &str) -> Option<&IncidentLog> {
        self.incidents.get(incident_id).map(|log| &**log)
    }

    /// Incidents changed or forgotten since the last segment was taken.
    pub fn changes(&self) -> usize {
        self.changed.len() + self.removed.len()
    }

    /// Takes a segment: the whole log (`full`), or what changed since the last one.
    pub fn segment(&mut self, full: bool) -> Segment {
        let incidents = if full {
            self.incidents.clone()
        } else {
            self.changed
                .iter()
                .filter_map(|id| Some((id.clone(), self.incidents.get(id)?.clone())))
                .collect()
        };
        let removed = std::mem::take(&mut self.removed);
        self.changed.clear();
        Segment {
            full,
            incidents,
            removed: if full {
                Vec::new()
            } else {
                removed.into_iter().collect()
            },
            budget: self.budget.clone(),
        }
    }

    /// Forgets a deleted tenant (`server: None`) or one of its servers (`mcpulse admin
    /// delete`): their incidents and budget. Returns how many incidents went.
    pub fn forget(&mut self, tenant: &str, server: Option<&str>) -> usize {
        let gone: BTreeSet<String> = self
            .incidents
            .iter()
            .filter(|(_, log)| {
                let e = &log.last_event;
                e.tenant == tenant && server.is_none_or(|s| e.server.as_deref() == Some(s))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.incidents.remove(id);
            self.changed.remove(id);
            self.removed.insert(id.clone());
        }
        self.budget
            .forget(tenant, &|id| gone.contains(id), server.is_none());
        gone.len()
    }

    /// Rebuilds a log from its segments, oldest (a full one) first.
    pub fn from_segments(segments: impl IntoIterator<Item = Segment>) -> Self {
        let mut log = Nflog::default();
        for segment in segments {
            if segment.full {
                log.incidents.clear();
            }
            for id in segment.removed {
                log.incidents.remove(&id);
            }
            log.incidents.extend(segment.incidents);
            log.budget = segment.budget;
        }
        log
    }

    /// The entry of `incident_id`, to change (marked changed).
    fn entry_mut(&mut self, incident_id: &str) -> Option<&mut IncidentLog> {
        let log = self.incidents.get_mut(incident_id)?;
        if !self.changed.contains(incident_id) {
            self.changed.insert(incident_id.to_owned());
        }
        Some(Arc::make_mut(log))
    }

    /// Takes note of a transition (the latest one by time is what a repeat re-sends).
    /// A transition that closes the incident is kept without its evidence: it is never
    /// re-sent, only remembered until the retention forgets it.
    pub fn observe(&mut self, event: &AlertEvent) {
        let stored = || {
            let mut e = event.clone();
            if !is_open(event) {
                e.evidence = serde_json::Value::Null;
            }
            e
        };
        match self.incidents.get(&event.incident_id) {
            Some(log) => {
                if event.time >= log.last_event.time && event.event_id != log.last_event.event_id {
                    let log = self.entry_mut(&event.incident_id).expect("present");
                    log.last_event = stored();
                    // Open again, or closed: what is due to repeat is not known.
                    self.next_repeat = None;
                }
            }
            None => {
                self.incidents.insert(
                    event.incident_id.clone(),
                    Arc::new(IncidentLog {
                        last_event: stored(),
                        targets: BTreeMap::new(),
                        admission: None,
                    }),
                );
                self.removed.remove(&event.incident_id);
                self.changed.insert(event.incident_id.clone());
            }
        }
    }

    /// The budget decision of `event`'s incident: taken (and kept) on the first
    /// notification of a new incident, its trigger; an incident that already notified
    /// somewhere, a digest, or a tenant without a budget is admitted.
    pub fn admission(
        &mut self,
        event: &AlertEvent,
        config: &BudgetConfig,
        now: DateTime<Utc>,
    ) -> Admission {
        self.observe(event);
        let log = &self.incidents[&event.incident_id];
        if let Some(decided) = log.admission {
            return decided;
        }
        if event.class == DIGEST_CLASS || config.limit(&event.tenant).is_none() {
            return Admission::Admitted;
        }
        let notified = log
            .targets
            .values()
            .any(|t| t.handle.is_some() || t.last_sent.is_some());
        let decided = if event.action == AlertAction::Trigger && !notified {
            self.budget.admit(config, &event.tenant, now)
        } else {
            Admission::Admitted
        };
        let log = self.entry_mut(&event.incident_id).expect("observed above");
        log.admission = Some(decided);
        decided
    }

    /// Budget counts and pending digests.
    pub fn budget_mut(&mut self) -> &mut BudgetLog {
        &mut self.budget
    }

    fn target(&self, incident_id: &str, key: &str) -> Option<&TargetLog> {
        self.incidents.get(incident_id)?.targets.get(key)
    }

    /// Whether the notification of `event_id` to integration `key` is finished.
    pub fn is_done(&self, incident_id: &str, key: &str, event_id: &str) -> bool {
        self.target(incident_id, key)
            .is_some_and(|t| t.done.iter().any(|d| d == event_id))
    }

    /// The handle the last delivery of this incident at `key` returned.
    pub fn handle(&self, incident_id: &str, key: &str) -> Option<SinkHandle> {
        self.target(incident_id, key)?.handle.clone()
    }

    /// Records that the notification of `event` to `key` finished as `outcome`
    /// (`sent`: what to repeat, when it was sent). Idempotent.
    pub fn finish(
        &mut self,
        event: &AlertEvent,
        key: &str,
        outcome: &Finished,
        sent: Option<LastSent>,
    ) {
        self.observe(event);
        let log = self.entry_mut(&event.incident_id).expect("observed above");
        let target = log.targets.entry(key.to_owned()).or_default();
        if !target.done.contains(&event.event_id) {
            target.done.push(event.event_id.clone());
        }
        if let Finished::Sent {
            handle: Some(handle),
        } = outcome
        {
            target.handle = Some(handle.clone());
        }
        let repeat_at = sent.as_ref().and_then(|sent| {
            let interval = chrono::Duration::from_std(sent.repeat_interval).ok()?;
            (!sent.repeat_interval.is_zero()).then(|| sent.at.checked_add_signed(interval))
        });
        if let Some(sent) = sent {
            target.last_sent = Some(sent);
        }
        if event.class == DIGEST_CLASS {
            self.budget.finished(&event.event_id);
        }
        if let (Some(due), Some(next)) = (repeat_at, self.next_repeat) {
            self.next_repeat = due.map(|d| d.min(next));
        }
    }

    /// The notifications whose `repeat_interval` passed at `now` for incidents still
    /// open: their last transition, re-sent to each integration that got a notification.
    /// Each is marked as repeated at `now`, so it is due again one interval later.
    pub fn repeats_due(&mut self, now: DateTime<Utc>) -> Vec<Repeat> {
        let mut due = Vec::new();
        if self.next_repeat.is_some_and(|next| now < next) {
            return due;
        }
        let mut next: Option<DateTime<Utc>> = None;
        for (id, log) in self.incidents.iter_mut() {
            if is_open(&log.last_event) {
                for sent in log.targets.values().filter_map(|t| t.last_sent.as_ref()) {
                    if !repeat_due(sent, now) && !sent.repeat_interval.is_zero() {
                        let at = chrono::Duration::from_std(sent.repeat_interval)
                            .ok()
                            .and_then(|d| sent.at.checked_add_signed(d));
                        next = match (next, at) {
                            (Some(n), Some(a)) => Some(n.min(a)),
                            (n, a) => n.or(a),
                        };
                    }
                }
            }
            let any_due = is_open(&log.last_event)
                && log.targets.values().any(|t| {
                    t.last_sent
                        .as_ref()
                        .is_some_and(|sent| repeat_due(sent, now))
                });
            if !any_due {
                continue;
            }
            self.changed.insert(id.clone());
            let log = Arc::make_mut(log);
            for (key, target) in &mut log.targets {
                let Some(sent) = &mut target.last_sent else {
                    continue;
                };
                if !repeat_due(sent, now) {
                    continue;
                }
                sent.at = now;
                let again = chrono::Duration::from_std(sent.repeat_interval)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d));
                next = match (next, again) {
                    (Some(n), Some(a)) => Some(n.min(a)),
                    (n, a) => n.or(a),
                };
                due.push(Repeat {
                    event: log.last_event.clone(),
                    key: key.clone(),
                    route_id: sent.route_id.clone(),
                    repeat_interval: sent.repeat_interval,
                });
            }
        }
        // Nothing to repeat: no scan until something is sent with a repeat interval.
        self.next_repeat = Some(next.unwrap_or(DateTime::<Utc>::MAX_UTC));
        due
    }

    /// Forgets incidents resolved (or otherwise closed) with no activity for
    /// `retention`, and any incident with none for `open_retention`; returns how many.
    pub fn prune(
        &mut self,
        now: DateTime<Utc>,
        retention: Duration,
        open_retention: Duration,
    ) -> usize {
        let before = self.incidents.len();
        let age = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let (closed_cutoff, open_cutoff) = (
            now.checked_sub_signed(age(retention)),
            now.checked_sub_signed(age(open_retention)),
        );
        let (changed, removed) = (&mut self.changed, &mut self.removed);
        self.incidents.retain(|id, log| {
            let last = log.last_activity();
            let cutoff = if log.is_open() {
                open_cutoff
            } else {
                closed_cutoff
            };
            let keep = cutoff.is_none_or(|c| last >= c);
            if !keep {
                changed.remove(id);
                removed.insert(id.clone());
            }
            keep
        });
        before - self.incidents.len()
    }
}

/// Whether `sent` is to be repeated at `now`.
fn repeat_due(sent: &LastSent, now: DateTime<Utc>) -> bool {
    let interval =
        chrono::Duration::from_std(sent.repeat_interval).unwrap_or(chrono::Duration::MAX);
    !sent.repeat_interval.is_zero() && now - sent.at >= interval
}

/// Serializes the shared entries as plain ones (the checkpoint format does not change).
mod shared_entries {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::IncidentLog;

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Arc<IncidentLog>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(map.iter().map(|(k, v)| (k, &**v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Arc<IncidentLog>>, D::Error> {
        let plain = BTreeMap::<String, IncidentLog>::deserialize(d)?;
        Ok(plain.into_iter().map(|(k, v)| (k, Arc::new(v))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::testutil::{at, event, resolved};

    fn sent(event_id: &str, at_: &str, interval_s: u64) -> Option<LastSent> {
        Some(LastSent {
            event_id: event_id.into(),
            at: at(at_),
            route_id: "root".into(),
            repeat_interval: Duration::from_secs(interval_s),
        })
    }

    #[test]
    fn records_finished_event_ids_and_the_latest_handle() {
        let mut log = Nflog::default();
        let trigger = event("acme", "i1", "e1");
        assert!(!log.is_done("i1", "oncall/pd", "e1"));
        let handle = SinkHandle::Discord {
            message_id: "42".into(),
            thread_id: None,
        };
        let outcome = Finished::Sent {
            handle: Some(handle.clone()),
        };
        log.finish(
            &trigger,
            "oncall/pd",
            &outcome,
            sent("e1", "2026-11-21T10:00:05Z", 3600),
        );
        log.finish(&trigger, "oncall/pd", &outcome, None);
        assert!(log.is_done("i1", "oncall/pd", "e1"));
        assert!(!log.is_done("i1", "chat/discord", "e1"));
        assert_eq!(log.handle("i1", "oncall/pd"), Some(handle.clone()));
        let t = &log.incident("i1").unwrap().targets["oncall/pd"];
        assert_eq!(t.done, ["e1"], "idempotent");
        // A send without a handle keeps the recorded one.
        let update = event("acme", "i1", "e2");
        log.finish(&update, "oncall/pd", &Finished::Sent { handle: None }, None);
        assert_eq!(log.handle("i1", "oncall/pd"), Some(handle));
        // Round trip.
        let json = serde_json::to_string(&log.segment(true)).unwrap();
        let back = Nflog::from_segments([serde_json::from_str::<Segment>(&json).unwrap()]);
        assert_eq!(back, log);
    }

    #[test]
    fn a_segment_holds_what_changed_since_the_last_one_and_segments_rebuild_the_log() {
        let round_trip = |s: &Segment| {
            serde_json::from_str::<Segment>(&serde_json::to_string(s).unwrap()).unwrap()
        };
        let mut log = Nflog::default();
        for i in 0..5 {
            let e = event("acme", &format!("i{i}"), &format!("e{i}"));
            log.finish(&e, "k", &Finished::Skipped, None);
        }
        let full = log.segment(true);
        assert_eq!((full.full, full.len(), log.changes()), (true, 5, 0));

        // One incident changes, one closes long ago and is forgotten, one is new.
        let update = event("acme", "i1", "e1b");
        log.finish(&update, "k", &Finished::Skipped, None);
        let mut old = resolved("acme", "i2", "e2b", 1);
        old.time = at("2026-01-01T00:00:00Z");
        Arc::make_mut(log.incidents.get_mut("i2").unwrap()).last_event = old;
        assert_eq!(
            log.prune(
                at("2026-11-21T10:00:00Z"),
                Duration::from_secs(86400),
                Duration::MAX
            ),
            1
        );
        log.observe(&event("acme", "i9", "e9"));
        assert_eq!(log.changes(), 3);
        let delta = log.segment(false);
        assert_eq!(
            (delta.full, delta.len(), delta.removed.clone()),
            (false, 2, vec!["i2".to_owned()])
        );
        assert_eq!(log.changes(), 0, "taken");
        assert!(log.segment(false).is_empty(), "nothing changed since");

        let back = Nflog::from_segments([round_trip(&full), round_trip(&delta)]);
        assert_eq!(back, log);
        assert!(back.is_done("i1", "k", "e1b") && back.incident("i2").is_none());
        assert!(back.incident("i9").is_some());
    }

    #[test]
    fn repeats_the_last_transition_of_open_incidents_once_per_interval() {
        let mut log = Nflog::default();
        let trigger = event("acme", "i1", "e1");
        let sent_outcome = Finished::Sent { handle: None };
        log.finish(
            &trigger,
            "k",
            &sent_outcome,
            sent("e1", "2026-11-21T10:00:00Z", 3600),
        );
        assert!(log.repeats_due(at("2026-11-21T10:59:59Z")).is_empty());
        let due = log.repeats_due(at("2026-11-21T11:00:00Z"));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].event.event_id, "e1");
        assert_eq!(due[0].key, "k");
        assert!(log.repeats_due(at("2026-11-21T11:30:00Z")).is_empty());
        assert_eq!(log.repeats_due(at("2026-11-21T12:00:00Z")).len(), 1);
        // Resolved: never repeated (and kept without its evidence).
        let mut resolve = resolved("acme", "i1", "e9", 70);
        resolve.evidence = serde_json::json!({"healthy": 2});
        log.observe(&resolve);
        assert_eq!(
            log.incident("i1").unwrap().last_event.evidence,
            serde_json::Value::Null
        );
        assert!(log.repeats_due(at("2026-11-22T12:00:00Z")).is_empty());
    }

    #[test]
    fn forgets_closed_incidents_after_the_retention_and_open_ones_much_later() {
        let mut log = Nflog::default();
        log.observe(&resolved("acme", "closed", "e1", 10));
        log.observe(&event("acme", "open", "e2"));
        let day = Duration::from_secs(86_400);
        assert_eq!(log.prune(at("2026-11-25T10:00:00Z"), 7 * day, 30 * day), 0);
        assert_eq!(log.prune(at("2026-11-28T10:11:00Z"), 7 * day, 30 * day), 1);
        assert!(log.incident("closed").is_none() && log.incident("open").is_some());
        assert_eq!(log.prune(at("2026-12-22T10:00:00Z"), 7 * day, 30 * day), 1);
        assert!(log.is_empty());
    }
}

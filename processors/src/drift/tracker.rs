//! The per-server state machine of the schema-drift operator: confirmation of tool-list
//! hashes, `fleet_inconsistent` detection, and the findings both produce.
//!
//! # Input
//!
//! A [`ServerTracker`] holds the state of one (tenant, server). It is fed
//! [`Observation`]s: probe results **that carry a `tools_hash`** (a failed probe without a
//! hash is not an observation; the caller filters), from every region, in log order. The
//! probes topic is keyed by tenant/server, so one partition sees all of a server's probes
//! in order, and replaying the same observations from a checkpointed tracker gives the same
//! events (the tracker never reads the clock; event times are the observations' times).
//!
//! An observation carries the canonical tool list (`tools`) only when the prober that sent
//! it saw its own last hash for the server change, so a hash may be known without its list.
//! The tracker keeps the list of every hash it was sent, at most
//! [`DriftConfig::max_known_lists`] of them, evicting the least recently *observed* hash
//! first but never the confirmed one. [`ServerTracker::remember_tools`] lets the caller seed
//! a list (e.g. from the archive after a cold start).
//!
//! # Confirmation
//!
//! The *run* is the number of consecutive observations (all regions together) of the same
//! hash. A hash different from the confirmed one is **confirmed** when its run reaches
//! [`DriftConfig::confirm_rounds`]; it then becomes the confirmed hash and the tracker emits
//! [`DriftEvent::Baseline`] (nothing was confirmed before: the first list ever seen — no row,
//! no finding) or [`DriftEvent::Drift`] with the classified diff of the two canonical lists
//! ([`diff_tools`]), or `changes: None` when either list is unknown.
//!
//! Examples (`confirm_rounds: 2`): `A A B B` → Baseline(A), Drift(A→B);
//! `A A B B A A` → Baseline(A), Drift(A→B), Drift(B→A) (a real rollback is two drifts).
//!
//! # Alternation (`fleet_inconsistent`)
//!
//! The tracker keeps the hashes of the last [`DriftConfig::inconsistency_window`]
//! observations *since the last reset* (see below) and counts the *switches* in them
//! (adjacent observations with different hashes). When the count reaches
//! [`DriftConfig::inconsistency_switches`], the tracker emits
//! [`DriftEvent::FleetInconsistent`] — once — and enters the **inconsistent** state:
//!
//! * no further `FleetInconsistent` is emitted while inconsistent;
//! * confirming a new hash needs a run of `stable_rounds = max(confirm_rounds, 2)` instead of
//!   `confirm_rounds`, so a flip-flop never yields drifts (with `confirm_rounds: 1` a
//!   single observation would otherwise confirm every flip);
//! * the state ends when some hash has a run of `stable_rounds` ("the server has been
//!   stable"): if that hash is not the confirmed one, this is the confirmation and the
//!   `Drift` (or `Baseline`) is emitted — the fleet converged on a new version, which must
//!   not go unreported; either way `FleetInconsistent` is re-armed.
//!
//! The switch history is **reset** (to just the current hash) when a run of
//! `stable_rounds` observations either confirmed a new hash or ended the inconsistent state.
//! Hence switches before a confirmation never count towards alternation, so deploy and
//! rollback (`A A B B A A`) are two drifts, not an inconsistency. Being stable on the
//! *already confirmed* hash does not reset the history, so a fleet where one instance in
//! three serves another version (`A A B A A B A A`, confirmed A) is still reported.
//!
//! Within one observation the alternation check comes first, then confirmation. The
//! observation that reaches the switch threshold is itself a switch (its run is 1), so at
//! most one event is emitted per observation.
//!
//! Examples (`confirm_rounds: 2`, defaults otherwise):
//!
//! * `A A B A B A B A B` → Baseline(A) at the 2nd, FleetInconsistent(\[A, B\]) at the 5th,
//!   nothing else; if it continues `… B B`, Drift(A→B) and re-armed.
//! * eu and us probing in turn, eu still on A while us serves B (`A A A B A B A B`) →
//!   Baseline(A), one FleetInconsistent.
//! * With `confirm_rounds: 1`, `A B A B A B` → Baseline(A), Drift(A→B), Drift(B→A), then
//!   FleetInconsistent at the third switch and no drift until a hash is seen twice in a
//!   row. (Instant confirmation cannot know a flip-flop is coming.)
//!
//! A list that changes on every probe (`A B C D`, e.g. a timestamp in a description) never
//! confirms anything; it is reported as `FleetInconsistent` too, since otherwise it would go
//! unreported.
//!
//! ## Known limits
//!
//! * Counting is per observation, not per probe round: with many regions, the rounds in
//!   which a rolling deploy has reached some instances but not others can alone add up to
//!   `inconsistency_switches`, so raise `inconsistency_window`/`inconsistency_switches`
//!   with the number of regions if rolling deploys should not be reported.
//! * A flip-flop slower than the confirmation (`A A B B A A B B`) is a series of confirmed
//!   drifts, by definition.
//! * A fleet that keeps briefly agreeing (runs of `stable_rounds`) while alternating re-arms
//!   and is reported again after the next `inconsistency_switches` switches; the incident
//!   operator's per-(tenant, server, class) dedup folds these into one incident.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use mcpulse_schemas::{Finding, FindingKind, FindingStatus, Severity};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::diff::{Change, ChangeClass, diff_tools, worst};

/// Largest accepted `inconsistency_window` (bounds the checkpointed state).
const MAX_WINDOW: u32 = 1000;
/// Largest accepted `max_known_lists` (each list can be large).
const MAX_KNOWN_LISTS: usize = 64;
/// Changes listed in a finding's evidence (the `drift` row keeps all of them).
const EVIDENCE_CHANGES: usize = 50;
/// Longest finding summary, in characters.
const SUMMARY_CHARS: usize = 300;
/// Hash prefix shown in summaries.
const SHORT_HASH: usize = 12;

/// `drift:` in `mcpulse.yaml`.
///
/// ```yaml
/// drift:
///   confirm_rounds: 2          # consecutive observations of a new hash that confirm it
///   inconsistency_window: 8    # last observations considered for alternation
///   inconsistency_switches: 3  # hash switches in that window that mean an inconsistent fleet
///   max_known_lists: 4         # canonical tool lists kept per server
/// ```
///
/// Observations are counted over all regions together: with N regions one probe round is
/// N observations, so scale `inconsistency_window` and `inconsistency_switches` with N if
/// the region count is large (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Run the drift operator (default true).
    pub enabled: bool,
    /// How often drift rows and findings are written and state checkpointed (default 2s).
    #[serde(with = "humantime_serde")]
    pub flush_interval: std::time::Duration,
    /// Consecutive observations (all regions) of a new hash that confirm it (default 2).
    pub confirm_rounds: u32,
    /// How many of the last observations are considered for alternation (default 8).
    pub inconsistency_window: u32,
    /// Hash switches within the window that mean an inconsistent fleet (default 3).
    pub inconsistency_switches: u32,
    /// Canonical tool lists kept per server; the least recently observed goes first, never
    /// the confirmed one (default 4).
    pub max_known_lists: usize,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            flush_interval: std::time::Duration::from_secs(2),
            confirm_rounds: 2,
            inconsistency_window: 8,
            inconsistency_switches: 3,
            max_known_lists: 4,
        }
    }
}

impl DriftConfig {
    /// Checks the bounds; the error names the field (`drift.confirm_rounds: …`).
    pub fn validate(&self) -> Result<(), String> {
        if self.confirm_rounds < 1 {
            return Err("drift.confirm_rounds: must be at least 1".into());
        }
        if self.inconsistency_switches < 2 {
            return Err(
                "drift.inconsistency_switches: must be at least 2 (one switch is a change, \
                 not an alternation)"
                    .into(),
            );
        }
        if self.inconsistency_window > MAX_WINDOW {
            return Err(format!(
                "drift.inconsistency_window: must be at most {MAX_WINDOW}"
            ));
        }
        if self.inconsistency_window <= self.inconsistency_switches {
            return Err(format!(
                "drift.inconsistency_window: must be greater than inconsistency_switches ({}): \
                 {} switches need {} observations",
                self.inconsistency_switches,
                self.inconsistency_switches,
                u64::from(self.inconsistency_switches) + 1
            ));
        }
        if self.max_known_lists < 2 {
            return Err(
                "drift.max_known_lists: must be at least 2 (the confirmed list and a new one)"
                    .into(),
            );
        }
        if self.max_known_lists > MAX_KNOWN_LISTS {
            return Err(format!(
                "drift.max_known_lists: must be at most {MAX_KNOWN_LISTS}"
            ));
        }
        Ok(())
    }

    /// Run length that counts as "stable" (ends the inconsistent state, resets the history).
    fn stable_rounds(&self) -> u32 {
        self.confirm_rounds.max(2)
    }
}

/// One probe result with a tool-list hash, for one (tenant, server).
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    /// The probe's event time (`started_at`).
    pub time: DateTime<Utc>,
    /// The probing region (not used for decisions: all regions count alike).
    pub region: &'a str,
    /// The probe's `tools_hash`.
    pub hash: &'a str,
    /// The canonical tool list, when the probe carried it.
    pub tools: Option<&'a [Value]>,
}

/// What an observation made happen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DriftEvent {
    /// The first hash ever confirmed for the server: the baseline. No drift row, no
    /// finding (the caller may log it).
    Baseline {
        time: DateTime<Utc>,
        hash: String,
        /// Tools in the list, when the list is known.
        tool_count: Option<usize>,
    },
    /// A confirmed change of the tool list.
    Drift {
        time: DateTime<Utc>,
        old_hash: String,
        new_hash: String,
        /// The classified changes; `None` when either canonical list is unknown.
        changes: Option<Vec<Change>>,
        old_tool_count: Option<usize>,
        new_tool_count: Option<usize>,
    },
    /// The hash alternates: instances (or regions) disagree.
    FleetInconsistent {
        time: DateTime<Utc>,
        /// The distinct hashes in the alternation, in first-seen order.
        hashes: Vec<String>,
        /// The confirmed hash at the time, if any.
        confirmed: Option<String>,
    },
}

impl DriftEvent {
    /// Event time of the observation that caused it.
    pub fn time(&self) -> DateTime<Utc> {
        match self {
            DriftEvent::Baseline { time, .. }
            | DriftEvent::Drift { time, .. }
            | DriftEvent::FleetInconsistent { time, .. } => *time,
        }
    }
}

/// A canonical tool list kept for a hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct KnownList {
    hash: String,
    tools: Vec<Value>,
}

/// The drift state of one (tenant, server); checkpointable as JSON (see the module docs).
///
/// Fields missing from a checkpoint take their empty value, so state written by an older
/// version still restores; unknown fields are rejected.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTracker {
    /// The confirmed hash.
    confirmed: Option<String>,
    /// Hash of the current run of identical observations.
    run_hash: Option<String>,
    /// Length of the current run (saturating).
    run_len: u32,
    /// The current run confirmed a hash or ended an inconsistency, and the switch history
    /// is to be reset once the run is `stable_rounds` long.
    reset_pending: bool,
    /// Hashes of the last observations since the last reset, oldest first.
    recent: VecDeque<String>,
    /// `FleetInconsistent` was emitted and not re-armed yet.
    inconsistent: bool,
    /// Known canonical lists, least recently observed first.
    lists: Vec<KnownList>,
}

impl ServerTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The confirmed hash, if any.
    pub fn confirmed_hash(&self) -> Option<&str> {
        self.confirmed.as_deref()
    }

    /// Whether a `FleetInconsistent` was emitted and the server has not been stable since.
    pub fn is_inconsistent(&self) -> bool {
        self.inconsistent
    }

    /// The canonical tool list of `hash`, if kept.
    pub fn known_tools(&self, hash: &str) -> Option<&[Value]> {
        self.lists
            .iter()
            .find(|l| l.hash == hash)
            .map(|l| l.tools.as_slice())
    }

    /// Keeps `tools` as the canonical list of `hash` (most recent), evicting as configured.
    pub fn remember_tools(&mut self, hash: &str, tools: &[Value], config: &DriftConfig) {
        match self.lists.iter().position(|l| l.hash == hash) {
            Some(i) => {
                let mut entry = self.lists.remove(i);
                tools.clone_into(&mut entry.tools);
                self.lists.push(entry);
            }
            None => self.lists.push(KnownList {
                hash: hash.to_owned(),
                tools: tools.to_vec(),
            }),
        }
        self.evict(config);
    }

    /// Feeds one observation; returns what it caused (at most one event in practice).
    pub fn observe(&mut self, obs: Observation<'_>, config: &DriftConfig) -> Vec<DriftEvent> {
        let hash = obs.hash;
        match obs.tools {
            Some(tools) => self.remember_tools(hash, tools, config),
            None => {
                self.touch(hash);
                // Also applies a lowered `max_known_lists` after a restart.
                self.evict(config);
            }
        }

        if self.run_hash.as_deref() == Some(hash) {
            self.run_len = self.run_len.saturating_add(1);
        } else {
            self.run_hash = Some(hash.to_owned());
            self.run_len = 1;
            self.reset_pending = false;
        }
        self.recent.push_back(hash.to_owned());
        let window = config.inconsistency_window.max(1) as usize;
        while self.recent.len() > window {
            self.recent.pop_front();
        }

        let mut events = Vec::new();
        let stable = config.stable_rounds();

        // 1. Alternation, before confirmation.
        if !self.inconsistent && switches(&self.recent) >= config.inconsistency_switches as usize {
            self.inconsistent = true;
            events.push(DriftEvent::FleetInconsistent {
                time: obs.time,
                hashes: distinct(&self.recent),
                confirmed: self.confirmed.clone(),
            });
        }

        // 2. Confirmation (longer while inconsistent).
        let needed = if self.inconsistent {
            stable
        } else {
            config.confirm_rounds.max(1)
        };
        if self.run_len >= needed && self.confirmed.as_deref() != Some(hash) {
            let new_tools = self.known_tools(hash);
            let new_tool_count = new_tools.map(<[Value]>::len);
            let event = match self.confirmed.as_deref() {
                None => DriftEvent::Baseline {
                    time: obs.time,
                    hash: hash.to_owned(),
                    tool_count: new_tool_count,
                },
                Some(old) => {
                    let old_tools = self.known_tools(old);
                    let changes = match (old_tools, new_tools) {
                        (Some(o), Some(n)) => Some(diff_tools(o, n)),
                        _ => None,
                    };
                    DriftEvent::Drift {
                        time: obs.time,
                        old_hash: old.to_owned(),
                        new_hash: hash.to_owned(),
                        changes,
                        old_tool_count: old_tools.map(<[Value]>::len),
                        new_tool_count,
                    }
                }
            };
            events.push(event);
            self.confirmed = Some(hash.to_owned());
            self.reset_pending = true;
        }

        // 3. Stability ends the inconsistent state and resets the switch history.
        if self.run_len >= stable {
            if self.inconsistent {
                self.inconsistent = false;
                self.reset_pending = true;
            }
            if self.reset_pending {
                self.reset_pending = false;
                self.recent.clear();
                self.recent.push_back(hash.to_owned());
            }
        }
        events
    }

    /// Marks `hash`'s list (if kept) as the most recently observed.
    fn touch(&mut self, hash: &str) {
        if let Some(i) = self.lists.iter().position(|l| l.hash == hash)
            && i + 1 != self.lists.len()
        {
            let entry = self.lists.remove(i);
            self.lists.push(entry);
        }
    }

    fn evict(&mut self, config: &DriftConfig) {
        let max = config.max_known_lists.max(1);
        while self.lists.len() > max {
            let confirmed = self.confirmed.as_deref();
            match self
                .lists
                .iter()
                .position(|l| Some(l.hash.as_str()) != confirmed)
            {
                Some(i) => {
                    self.lists.remove(i);
                }
                None => break,
            }
        }
    }
}

/// Adjacent observations with different hashes.
fn switches(recent: &VecDeque<String>) -> usize {
    recent
        .iter()
        .zip(recent.iter().skip(1))
        .filter(|(a, b)| a != b)
        .count()
}

/// Distinct hashes in first-seen order.
fn distinct(recent: &VecDeque<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for h in recent {
        if !out.contains(h) {
            out.push(h.clone());
        }
    }
    out
}

/// Changes per class: (breaking, additive, cosmetic).
pub fn class_counts(changes: &[Change]) -> (usize, usize, usize) {
    changes
        .iter()
        .fold((0, 0, 0), |(b, a, c), change| match change.class {
            ChangeClass::Breaking => (b + 1, a, c),
            ChangeClass::Additive => (b, a + 1, c),
            ChangeClass::Cosmetic => (b, a, c + 1),
        })
}

/// `breaking`, `additive` or `cosmetic`.
pub fn class_name(class: ChangeClass) -> &'static str {
    match class {
        ChangeClass::Breaking => "breaking",
        ChangeClass::Additive => "additive",
        ChangeClass::Cosmetic => "cosmetic",
    }
}

/// The suggested severity of a drift: by the worst change (breaking P2, additive P3,
/// cosmetic P4); P3 when the changes are unknown (a list was missing); P4 when the hash
/// changed but the diff found nothing (only what the diff ignores changed).
pub fn drift_severity(changes: Option<&[Change]>) -> Severity {
    match changes {
        None => Severity::P3,
        Some(changes) => match worst(changes) {
            Some(ChangeClass::Breaking) => Severity::P2,
            Some(ChangeClass::Additive) => Severity::P3,
            Some(ChangeClass::Cosmetic) | None => Severity::P4,
        },
    }
}

/// The finding of an event: `schema_drift` for a drift, `fleet_inconsistent` for an
/// alternation, none for a baseline. One finding per event; ids are derived from the
/// event (replaying gives the same ids).
pub fn to_finding(tenant: &str, server: &str, event: &DriftEvent) -> Option<Finding> {
    match event {
        DriftEvent::Baseline { .. } => None,
        DriftEvent::Drift {
            time,
            old_hash,
            new_hash,
            changes,
            old_tool_count,
            new_tool_count,
        } => {
            let time_s = time.to_rfc3339();
            let id = Finding::derive_id(&[
                FindingKind::SchemaDrift.as_str(),
                tenant,
                server,
                old_hash,
                new_hash,
                &time_s,
            ]);
            let severity = drift_severity(changes.as_deref());
            let summary = truncate(&drift_summary(
                server,
                old_hash,
                new_hash,
                changes.as_deref(),
            ));
            let evidence = match changes {
                Some(changes) => {
                    let (breaking, additive, cosmetic) = class_counts(changes);
                    json!({
                        "old_hash": old_hash,
                        "new_hash": new_hash,
                        "worst": worst(changes).map(class_name),
                        "counts": {"breaking": breaking, "additive": additive, "cosmetic": cosmetic},
                        "change_count": changes.len(),
                        "changes": &changes[..changes.len().min(EVIDENCE_CHANGES)],
                        "changes_truncated": changes.len() > EVIDENCE_CHANGES,
                        "old_tool_count": old_tool_count,
                        "new_tool_count": new_tool_count,
                    })
                }
                None => json!({
                    "old_hash": old_hash,
                    "new_hash": new_hash,
                    "worst": null,
                    "counts": null,
                    "changes": null,
                    "old_tool_count": old_tool_count,
                    "new_tool_count": new_tool_count,
                    "note": "tool list of a hash unknown to the operator; changes not classified",
                }),
            };
            Some(finding(
                id,
                FindingKind::SchemaDrift,
                tenant,
                server,
                severity,
                *time,
                summary,
                evidence,
            ))
        }
        DriftEvent::FleetInconsistent {
            time,
            hashes,
            confirmed,
        } => {
            let mut sorted = hashes.clone();
            sorted.sort();
            let time_s = time.to_rfc3339();
            let id = Finding::derive_id(&[
                FindingKind::FleetInconsistent.as_str(),
                tenant,
                server,
                &sorted.join(","),
                &time_s,
            ]);
            let shown: Vec<&str> = hashes.iter().map(|h| short(h)).collect();
            let summary = truncate(&format!(
                "{server}: tool list alternates between {} versions ({}): instances or regions \
                 serve different tool lists",
                hashes.len(),
                shown.join(", ")
            ));
            let evidence = json!({"hashes": hashes, "confirmed": confirmed});
            Some(finding(
                id,
                FindingKind::FleetInconsistent,
                tenant,
                server,
                Severity::P3,
                *time,
                summary,
                evidence,
            ))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn finding(
    id: String,
    kind: FindingKind,
    tenant: &str,
    server: &str,
    severity: Severity,
    time: DateTime<Utc>,
    summary: String,
    evidence: Value,
) -> Finding {
    Finding {
        id,
        kind,
        status: FindingStatus::Firing,
        tenant: tenant.to_owned(),
        server: server.to_owned(),
        tool: None,
        method: None,
        region: None,
        severity,
        time,
        window_start: time,
        window_end: time,
        summary,
        evidence,
        source: "drift".into(),
    }
}

/// `weather: tool list changed (2 breaking, 1 additive): tool removed: forecast; …`
pub(crate) fn drift_summary(
    server: &str,
    old_hash: &str,
    new_hash: &str,
    changes: Option<&[Change]>,
) -> String {
    match changes {
        None => format!(
            "{server}: tool list changed ({} → {}); changes not classified (tool list unknown)",
            short(old_hash),
            short(new_hash)
        ),
        Some([]) => format!(
            "{server}: tool list hash changed ({} → {}) without a classified change",
            short(old_hash),
            short(new_hash)
        ),
        Some(changes) => {
            let mut out = format!("{server}: tool list changed ({}): ", counts_text(changes));
            // Worst first, keeping the diff's order within a class.
            let mut ordered: Vec<&Change> = changes.iter().collect();
            ordered.sort_by_key(|c| std::cmp::Reverse(c.class));
            let parts: Vec<String> = ordered.iter().map(|c| change_text(c)).collect();
            out.push_str(&parts.join("; "));
            out
        }
    }
}

/// `2 breaking, 1 additive` (zero classes left out).
pub(crate) fn counts_text(changes: &[Change]) -> String {
    let (b, a, c) = class_counts(changes);
    [(b, "breaking"), (a, "additive"), (c, "cosmetic")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, name)| format!("{n} {name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `tool removed: forecast`, `required param added: forecast.units`.
fn change_text(change: &Change) -> String {
    let kind = serde_json::to_value(change.kind)
        .ok()
        .and_then(|v| v.as_str().map(|s| s.replace('_', " ")))
        .unwrap_or_else(|| format!("{:?}", change.kind));
    match &change.path {
        Some(path) => format!("{kind}: {}.{path}", change.tool),
        None => format!("{kind}: {}", change.tool),
    }
}

fn short(hash: &str) -> &str {
    match hash.char_indices().nth(SHORT_HASH) {
        Some((i, _)) => &hash[..i],
        None => hash,
    }
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(SUMMARY_CHARS - 1) {
        Some((i, _)) if s[i..].chars().nth(1).is_some() => format!("{}…", &s[..i]),
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::ChangeKind;
    use chrono::TimeZone;

    fn t(i: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap() + chrono::Duration::seconds(30 * i)
    }

    fn cfg(confirm_rounds: u32) -> DriftConfig {
        DriftConfig {
            confirm_rounds,
            ..DriftConfig::default()
        }
    }

    /// Feeds `seq` (one char per observation, regions alternating eu/us, no lists) and
    /// returns the events with the index of the observation that caused them.
    fn run(
        tracker: &mut ServerTracker,
        seq: &str,
        start: i64,
        config: &DriftConfig,
    ) -> Vec<(i64, DriftEvent)> {
        let mut out = Vec::new();
        for (i, c) in seq.chars().filter(|c| !c.is_whitespace()).enumerate() {
            let i = start + i as i64;
            let hash = c.to_string();
            let region = if i % 2 == 0 { "eu" } else { "us" };
            let obs = Observation {
                time: t(i),
                region,
                hash: &hash,
                tools: None,
            };
            out.extend(tracker.observe(obs, config).into_iter().map(|e| (i, e)));
        }
        out
    }

    /// A compact rendering: `B(A)@1`, `D(A>B)@3`, `F(AB)@4`.
    fn names(events: &[(i64, DriftEvent)]) -> Vec<String> {
        events
            .iter()
            .map(|(i, e)| match e {
                DriftEvent::Baseline { hash, .. } => format!("B({hash})@{i}"),
                DriftEvent::Drift {
                    old_hash, new_hash, ..
                } => format!("D({old_hash}>{new_hash})@{i}"),
                DriftEvent::FleetInconsistent { hashes, .. } => {
                    format!("F({})@{i}", hashes.concat())
                }
            })
            .collect()
    }

    fn seq(s: &str, config: &DriftConfig) -> Vec<String> {
        names(&run(&mut ServerTracker::new(), s, 0, config))
    }

    #[test]
    fn baseline_then_drift() {
        assert_eq!(seq("AABB", &cfg(2)), ["B(A)@1", "D(A>B)@3"]);
        assert_eq!(seq("A", &cfg(2)), Vec::<String>::new());
        assert_eq!(seq("AAAAAA", &cfg(2)), ["B(A)@1"]);
    }

    #[test]
    fn rollback_is_two_drifts() {
        assert_eq!(seq("AABBAA", &cfg(2)), ["B(A)@1", "D(A>B)@3", "D(B>A)@5"]);
    }

    #[test]
    fn flip_flop_is_one_fleet_inconsistent_and_no_drift() {
        assert_eq!(seq("AABABABAB", &cfg(2)), ["B(A)@1", "F(AB)@4"]);
        // However long it goes on.
        let long = format!("AA{}", "BA".repeat(50));
        assert_eq!(seq(&long, &cfg(2)), ["B(A)@1", "F(AB)@4"]);
    }

    #[test]
    fn single_blips_do_not_confirm() {
        // One B, then back: no drift, not yet an alternation.
        assert_eq!(seq("AAABAAAA", &cfg(2)), ["B(A)@1"]);
    }

    #[test]
    fn inconsistency_ends_with_stability_and_rearms() {
        let config = cfg(2);
        let mut tracker = ServerTracker::new();
        // Converging on the new version: the drift is reported.
        let events = run(&mut tracker, "AABABAB B", 0, &config);
        assert_eq!(names(&events), ["B(A)@1", "F(AB)@4", "D(A>B)@7"]);
        assert!(!tracker.is_inconsistent());
        assert_eq!(tracker.confirmed_hash(), Some("B"));
        // Re-armed: a new flip-flop is reported again, once.
        let events = run(&mut tracker, "ABABABAB", 8, &config);
        assert_eq!(names(&events), ["F(BA)@10"]);

        // Settling back on the confirmed version re-arms without a drift.
        let mut tracker = ServerTracker::new();
        let events = run(&mut tracker, "AABABA A BABAB", 0, &config);
        assert_eq!(names(&events), ["B(A)@1", "F(AB)@4", "F(AB)@9"]);
    }

    #[test]
    fn lagging_region_is_one_fleet_inconsistent() {
        // eu (even) still on A, us (odd) already on B, for a long time.
        let mut s = String::from("AA");
        for _ in 0..20 {
            s.push_str("AB");
        }
        let config = cfg(2);
        let mut tracker = ServerTracker::new();
        let events = run(&mut tracker, &s, 0, &config);
        assert_eq!(names(&events), ["B(A)@1", "F(AB)@5"]);
        match &events[1].1 {
            DriftEvent::FleetInconsistent {
                hashes, confirmed, ..
            } => {
                assert_eq!(hashes, &["A", "B"]);
                assert_eq!(confirmed.as_deref(), Some("A"));
            }
            other => panic!("{other:?}"),
        }
        // The rollout completes in eu: one drift.
        let events = run(&mut tracker, "BB", 42, &config);
        assert_eq!(names(&events), ["D(A>B)@42"]);
    }

    #[test]
    fn flaky_minority_instance_is_reported() {
        // One instance in three serves B, confirmed A.
        assert_eq!(seq("AA BAA BAA BAA", &cfg(2)), ["B(A)@1", "F(AB)@5"]);
    }

    #[test]
    fn churning_list_is_reported() {
        assert_eq!(seq("AABCD", &cfg(2)), ["B(A)@1", "F(ABCD)@4"]);
        assert_eq!(seq("AABCDD", &cfg(2))[2], "D(A>D)@5");
    }

    #[test]
    fn confirm_rounds_one_and_three() {
        // Every change is a drift immediately...
        assert_eq!(seq("ABB", &cfg(1)), ["B(A)@0", "D(A>B)@1"]);
        // ...until alternation: then one FleetInconsistent, and drifts wait for stability.
        assert_eq!(
            seq("ABABABAB", &cfg(1)),
            ["B(A)@0", "D(A>B)@1", "D(B>A)@2", "F(AB)@3"]
        );
        assert_eq!(
            seq("ABABABABB", &cfg(1)),
            ["B(A)@0", "D(A>B)@1", "D(B>A)@2", "F(AB)@3", "D(A>B)@8"]
        );
        // A deploy and a rollback some time apart do not count as alternation.
        assert_eq!(
            seq("AABBBBAAAA", &cfg(1)),
            ["B(A)@0", "D(A>B)@2", "D(B>A)@6"]
        );
        assert_eq!(seq("AAABBBCC", &cfg(3)), ["B(A)@2", "D(A>B)@5"]);
    }

    fn tool(name: &str, required: &[&str], desc: &str) -> Value {
        let props: serde_json::Map<String, Value> = required
            .iter()
            .map(|p| (p.to_string(), json!({"type": "string"})))
            .collect();
        json!({
            "name": name,
            "description": desc,
            "inputSchema": {"type": "object", "properties": props, "required": required},
        })
    }

    fn obs<'a>(i: i64, hash: &'a str, tools: Option<&'a [Value]>) -> Observation<'a> {
        Observation {
            time: t(i),
            region: "eu",
            hash,
            tools,
        }
    }

    #[test]
    fn drift_carries_the_classified_diff() {
        let config = DriftConfig::default();
        let v1 = vec![
            tool("forecast", &["city"], "Forecast"),
            tool("alerts", &["region"], "Alerts"),
        ];
        let v2 = vec![
            tool("forecast", &["city", "units"], "Weather forecast"),
            tool("radar", &[], "Radar"),
        ];
        let mut tr = ServerTracker::new();
        assert!(tr.observe(obs(0, "h1", Some(&v1)), &config).is_empty());
        let ev = tr.observe(obs(1, "h1", None), &config);
        assert_eq!(
            ev,
            [DriftEvent::Baseline {
                time: t(1),
                hash: "h1".into(),
                tool_count: Some(2)
            }]
        );
        assert!(tr.observe(obs(2, "h2", Some(&v2)), &config).is_empty());
        let ev = tr.observe(obs(3, "h2", None), &config);
        let DriftEvent::Drift {
            time,
            old_hash,
            new_hash,
            changes,
            old_tool_count,
            new_tool_count,
        } = &ev[0]
        else {
            panic!("{ev:?}")
        };
        assert_eq!(
            (*time, old_hash.as_str(), new_hash.as_str()),
            (t(3), "h1", "h2")
        );
        assert_eq!((*old_tool_count, *new_tool_count), (Some(2), Some(2)));
        let changes = changes.as_ref().unwrap();
        assert_eq!(changes, &diff_tools(&v1, &v2));
        let kinds: Vec<ChangeKind> = changes.iter().map(|c| c.kind).collect();
        assert!(kinds.contains(&ChangeKind::ToolRemoved));
        assert!(kinds.contains(&ChangeKind::ToolAdded));
        assert!(kinds.contains(&ChangeKind::RequiredParamAdded));
        assert!(kinds.contains(&ChangeKind::DescriptionChanged));
    }

    #[test]
    fn missing_lists_give_unknown_changes() {
        let config = DriftConfig::default();
        let v1 = vec![tool("forecast", &["city"], "Forecast")];
        // New list unknown (the prober that sent it restarted, say).
        let mut tr = ServerTracker::new();
        tr.observe(obs(0, "h1", Some(&v1)), &config);
        tr.observe(obs(1, "h1", None), &config);
        tr.observe(obs(2, "h2", None), &config);
        let ev = tr.observe(obs(3, "h2", None), &config);
        assert_eq!(
            ev,
            [DriftEvent::Drift {
                time: t(3),
                old_hash: "h1".into(),
                new_hash: "h2".into(),
                changes: None,
                old_tool_count: Some(1),
                new_tool_count: None,
            }]
        );
        // Old list unknown (the operator started after it was sent).
        let mut tr = ServerTracker::new();
        tr.observe(obs(0, "h1", None), &config);
        tr.observe(obs(1, "h1", None), &config);
        tr.observe(obs(2, "h2", Some(&v1)), &config);
        let ev = tr.observe(obs(3, "h2", None), &config);
        assert!(matches!(
            &ev[0],
            DriftEvent::Drift {
                changes: None,
                old_tool_count: None,
                new_tool_count: Some(1),
                ..
            }
        ));
        // A list sent by a region that saw it before the confirming ones is used.
        let mut tr = ServerTracker::new();
        tr.remember_tools("h1", &v1, &config);
        tr.observe(obs(0, "h1", None), &config);
        tr.observe(obs(1, "h1", None), &config);
        let v2 = vec![];
        tr.observe(obs(2, "h2", Some(&v2)), &config);
        let ev = tr.observe(obs(3, "h2", None), &config);
        assert!(matches!(&ev[0], DriftEvent::Drift { changes: Some(c), .. } if c.len() == 1));
    }

    #[test]
    fn known_lists_are_bounded_and_keep_the_confirmed_one() {
        let config = DriftConfig {
            max_known_lists: 2,
            ..DriftConfig::default()
        };
        let list = |n: &str| vec![tool(n, &[], n)];
        let (l1, l2, l3, l4) = (list("a"), list("b"), list("c"), list("d"));
        let mut tr = ServerTracker::new();
        tr.observe(obs(0, "h1", Some(&l1)), &config);
        tr.observe(obs(1, "h1", None), &config);
        assert_eq!(tr.confirmed_hash(), Some("h1"));
        tr.observe(obs(2, "h2", Some(&l2)), &config);
        tr.observe(obs(3, "h3", Some(&l3)), &config);
        tr.observe(obs(4, "h4", Some(&l4)), &config);
        // h1 is confirmed (and least recently seen) but kept; h2, h3 were evicted.
        assert_eq!(tr.known_tools("h1"), Some(l1.as_slice()));
        assert_eq!(tr.known_tools("h2"), None);
        assert_eq!(tr.known_tools("h3"), None);
        assert_eq!(tr.known_tools("h4"), Some(l4.as_slice()));
        assert_eq!(tr.lists.len(), 2);

        // Least recently observed goes first: observing h1 again (no list) protects it
        // even once it is no longer confirmed.
        let config = DriftConfig {
            max_known_lists: 3,
            ..DriftConfig::default()
        };
        let mut tr = ServerTracker::new();
        tr.observe(obs(0, "h1", Some(&l1)), &config);
        tr.observe(obs(1, "h2", Some(&l2)), &config);
        tr.observe(obs(2, "h3", Some(&l3)), &config);
        tr.observe(obs(3, "h1", None), &config);
        tr.observe(obs(4, "h4", Some(&l4)), &config);
        assert!(tr.known_tools("h1").is_some());
        assert!(tr.known_tools("h2").is_none());
        assert!(tr.known_tools("h3").is_some());
        // A re-sent list replaces the kept one.
        tr.remember_tools("h3", &l1, &config);
        assert_eq!(tr.known_tools("h3"), Some(l1.as_slice()));
        assert_eq!(tr.lists.len(), 3);
    }

    #[test]
    fn checkpoint_mid_confirmation_replays_identically() {
        let config = DriftConfig::default();
        let v1 = vec![tool("forecast", &["city"], "Forecast")];
        let v2 = vec![tool("forecast", &["city", "units"], "Forecast")];
        type Step<'a> = (&'a str, Option<&'a [Value]>);
        let steps: Vec<Step> = vec![
            ("h1", Some(&v1)),
            ("h1", None),
            ("h2", Some(&v2)), // checkpoint after this one: mid-confirmation
            ("h2", None),
            ("h1", None),
            ("h2", None),
            ("h1", None),
            ("h2", None),
            ("h2", None),
        ];
        for cut in 0..=steps.len() {
            let mut straight = ServerTracker::new();
            let mut all = Vec::new();
            for (i, (h, tools)) in steps.iter().enumerate() {
                all.extend(straight.observe(obs(i as i64, h, *tools), &config));
            }
            let mut first = ServerTracker::new();
            let mut replayed = Vec::new();
            for (i, (h, tools)) in steps[..cut].iter().enumerate() {
                replayed.extend(first.observe(obs(i as i64, h, *tools), &config));
            }
            let json = serde_json::to_string(&first).unwrap();
            let mut restored: ServerTracker = serde_json::from_str(&json).unwrap();
            assert_eq!(restored, first);
            for (i, (h, tools)) in steps.iter().enumerate().skip(cut) {
                replayed.extend(restored.observe(obs(i as i64, h, *tools), &config));
            }
            assert_eq!(replayed, all, "checkpoint after {cut} observations");
            assert_eq!(restored, straight);
        }
        // The sequence itself: baseline, drift h1→h2 (classified), then the flip-flop.
        let mut tr = ServerTracker::new();
        let events: Vec<DriftEvent> = steps
            .iter()
            .enumerate()
            .flat_map(|(i, (h, tools))| tr.observe(obs(i as i64, h, *tools), &config))
            .collect();
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(matches!(&events[2], DriftEvent::FleetInconsistent { .. }));
        assert!(matches!(&events[1], DriftEvent::Drift { changes: Some(c), .. } if !c.is_empty()));
    }

    #[test]
    fn state_checkpoint_rejects_unknown_fields_and_defaults_missing_ones() {
        let err = serde_json::from_str::<ServerTracker>(r#"{"bogus": 1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let old: ServerTracker = serde_json::from_str(r#"{"confirmed": "h1"}"#).unwrap();
        assert_eq!(old.confirmed_hash(), Some("h1"));
        assert_eq!(
            serde_json::from_str::<ServerTracker>("{}").unwrap(),
            ServerTracker::new()
        );
    }

    #[test]
    fn config_defaults_and_validation() {
        let config: DriftConfig = serde_yaml_ng::from_str("{}").unwrap();
        assert_eq!(config, DriftConfig::default());
        assert_eq!(
            (
                config.confirm_rounds,
                config.inconsistency_window,
                config.inconsistency_switches,
                config.max_known_lists
            ),
            (2, 8, 3, 4)
        );
        config.validate().unwrap();
        let partial: DriftConfig = serde_yaml_ng::from_str("confirm_rounds: 3").unwrap();
        assert_eq!(partial.confirm_rounds, 3);
        assert_eq!(partial.inconsistency_window, 8);
        assert!(serde_yaml_ng::from_str::<DriftConfig>("confirm_round: 3").is_err());

        let bad = |f: fn(&mut DriftConfig), field: &str| {
            let mut c = DriftConfig::default();
            f(&mut c);
            let err = c.validate().unwrap_err();
            assert!(err.starts_with(&format!("drift.{field}: ")), "{err}");
        };
        bad(|c| c.confirm_rounds = 0, "confirm_rounds");
        bad(|c| c.inconsistency_switches = 1, "inconsistency_switches");
        bad(|c| c.inconsistency_window = 3, "inconsistency_window");
        bad(|c| c.inconsistency_window = 100_000, "inconsistency_window");
        bad(|c| c.max_known_lists = 1, "max_known_lists");
        bad(|c| c.max_known_lists = 1000, "max_known_lists");
        cfg(1).validate().unwrap();
    }

    fn drift_event(changes: Option<Vec<Change>>) -> DriftEvent {
        DriftEvent::Drift {
            time: t(3),
            old_hash: "a".repeat(64),
            new_hash: "b".repeat(64),
            changes,
            old_tool_count: Some(2),
            new_tool_count: Some(2),
        }
    }

    #[test]
    fn findings_severity_follows_the_worst_change() {
        use ChangeKind::*;
        let c = |kind, tool: &str| Change::new(kind, tool, None, "x");
        let breaking = vec![
            c(ToolRemoved, "forecast"),
            c(ToolAdded, "radar"),
            c(DescriptionChanged, "alerts"),
        ];
        let f = to_finding("acme", "weather", &drift_event(Some(breaking))).unwrap();
        assert_eq!(f.kind, FindingKind::SchemaDrift);
        assert_eq!(f.status, FindingStatus::Firing);
        assert_eq!(f.severity, Severity::P2);
        assert_eq!(f.source, "drift");
        assert_eq!((f.tenant.as_str(), f.server.as_str()), ("acme", "weather"));
        assert_eq!((f.time, f.window_start, f.window_end), (t(3), t(3), t(3)));
        assert_eq!(
            f.summary,
            "weather: tool list changed (1 breaking, 1 additive, 1 cosmetic): \
             tool removed: forecast; tool added: radar; description changed: alerts"
        );
        assert_eq!(f.evidence["worst"], "breaking");
        assert_eq!(f.evidence["counts"]["breaking"], 1);
        assert_eq!(f.evidence["changes"][0]["kind"], "tool_removed");
        assert_eq!(f.evidence["old_hash"], "a".repeat(64));

        let sev = |changes: Option<Vec<Change>>| {
            to_finding("acme", "weather", &drift_event(changes))
                .unwrap()
                .severity
        };
        assert_eq!(sev(Some(vec![c(ToolAdded, "radar")])), Severity::P3);
        assert_eq!(sev(Some(vec![c(TitleChanged, "radar")])), Severity::P4);
        assert_eq!(sev(Some(vec![])), Severity::P4);
        assert_eq!(sev(None), Severity::P3);
        let unknown = to_finding("acme", "weather", &drift_event(None)).unwrap();
        assert!(
            unknown.summary.contains("not classified"),
            "{}",
            unknown.summary
        );
        assert!(unknown.evidence["changes"].is_null());

        let baseline = DriftEvent::Baseline {
            time: t(1),
            hash: "a".into(),
            tool_count: None,
        };
        assert!(to_finding("acme", "weather", &baseline).is_none());
    }

    #[test]
    fn finding_ids_are_stable_and_distinct() {
        let e = drift_event(None);
        let a = to_finding("acme", "weather", &e).unwrap();
        // Same event, different content → same id (derived from identity, not changes).
        let b = to_finding(
            "acme",
            "weather",
            &drift_event(Some(vec![Change::new(
                ChangeKind::ToolAdded,
                "x",
                None,
                "",
            )])),
        )
        .unwrap();
        assert_eq!(a.id, b.id);
        assert_eq!(
            a.id,
            Finding::derive_id(&[
                "schema_drift",
                "acme",
                "weather",
                &"a".repeat(64),
                &"b".repeat(64),
                &t(3).to_rfc3339()
            ])
        );
        assert_ne!(a.id, to_finding("other", "weather", &e).unwrap().id);
        let fi = |hashes: &[&str]| DriftEvent::FleetInconsistent {
            time: t(4),
            hashes: hashes.iter().map(|s| s.to_string()).collect(),
            confirmed: Some("a".into()),
        };
        let f1 = to_finding("acme", "weather", &fi(&["a", "b"])).unwrap();
        let f2 = to_finding("acme", "weather", &fi(&["b", "a"])).unwrap();
        assert_eq!(f1.id, f2.id, "hash order does not matter");
        assert_eq!(
            f1.id,
            Finding::derive_id(&[
                "fleet_inconsistent",
                "acme",
                "weather",
                "a,b",
                &t(4).to_rfc3339()
            ])
        );
        assert_ne!(f1.id, a.id);
        assert_eq!(f1.kind, FindingKind::FleetInconsistent);
        assert_eq!(f1.severity, Severity::P3);
        assert_eq!(f1.evidence["hashes"], json!(["a", "b"]));
        assert_eq!(f1.evidence["confirmed"], "a");
        assert!(
            f1.summary
                .starts_with("weather: tool list alternates between 2 versions")
        );
        // The finding round-trips through its JSON shape.
        let back: Finding = serde_json::from_value(serde_json::to_value(&f1).unwrap()).unwrap();
        assert_eq!(back, f1);
    }

    #[test]
    fn summary_and_evidence_are_capped() {
        let many: Vec<Change> = (0..120)
            .map(|i| Change::new(ChangeKind::ToolRemoved, format!("tool_{i}"), None, "x"))
            .collect();
        let f = to_finding("acme", "weather", &drift_event(Some(many))).unwrap();
        assert_eq!(f.summary.chars().count(), SUMMARY_CHARS);
        assert!(f.summary.ends_with('…'));
        assert_eq!(
            f.evidence["changes"].as_array().unwrap().len(),
            EVIDENCE_CHANGES
        );
        assert_eq!(f.evidence["change_count"], 120);
        assert_eq!(f.evidence["changes_truncated"], true);
        // Multi-byte text is cut on a character boundary.
        let s = "é".repeat(400);
        assert_eq!(truncate(&s).chars().count(), SUMMARY_CHARS);
        assert_eq!(truncate("short"), "short");
        assert_eq!(
            truncate(&"x".repeat(SUMMARY_CHARS)),
            "x".repeat(SUMMARY_CHARS)
        );
    }

    #[test]
    fn events_serialize_with_a_tag() {
        let e = drift_event(Some(vec![Change::new(
            ChangeKind::ToolAdded,
            "x",
            None,
            "",
        )]));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["event"], "drift");
        let back: DriftEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }
}

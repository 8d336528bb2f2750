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
//! # Rounds
//!
//! Decisions are made per **probe round**, not per observation. Event time is cut into
//! buckets of [`DriftConfig::round`] (default 1 minute, the prober's default interval),
//! aligned on multiples of `round` since the Unix epoch (UTC); the observations whose
//! `started_at` falls in one bucket — every region's result of that probe round — form
//! one round. A round is **unanimous** on a hash when all its observations carry that
//! hash, and **mixed** when they disagree. Buckets without observations are skipped: the
//! round before and the round after one are consecutive (a failed probe, which has no
//! hash, does not break a run).
//!
//! A round stays open until an observation of a later bucket starts the next one. An
//! observation of an earlier bucket than the open round's (a late result) counts in the
//! open round: a closed round is never reopened. Decisions are taken on every
//! observation against the open round as seen so far, so a round becoming mixed later
//! does not undo a confirmation it already gave.
//!
//! Set `round` to the probe interval: with a longer interval than `round`, regions probing
//! at different times land in different rounds, and each round is one region's result.
//!
//! # Confirmation
//!
//! The *run* is the number of consecutive rounds (ending with the open round) that were
//! unanimous on the same hash; a mixed round breaks it (run 0). A hash different from the
//! confirmed one is **confirmed** when its run reaches [`DriftConfig::confirm_rounds`] —
//! the new hash must be the *only* hash seen in that many consecutive rounds, so a change
//! that only some regions see is never confirmed while they disagree (that is an
//! alternation, below). It then becomes the confirmed hash and the tracker emits
//! [`DriftEvent::Baseline`] (nothing was confirmed before: the first list ever seen — no
//! row, no finding) or [`DriftEvent::Drift`] with the classified diff of the two canonical
//! lists ([`diff_tools`]), or `changes: None` when either list is unknown.
//!
//! Examples (`confirm_rounds: 2`; one letter per observation, a space between rounds):
//! `AA AA BB BB` → Baseline(A) at the first observation of the 2nd round, Drift(A→B) at
//! the first of the 4th; two regions reporting B in the *same* round (`AA BB`) confirm
//! nothing. `A A B B A A` → Baseline(A), Drift(A→B), Drift(B→A) (a real rollback is two
//! drifts).
//!
//! # Alternation (`fleet_inconsistent`)
//!
//! Alternation is counted in rounds too. The tracker keeps the hashes of the last
//! [`DriftConfig::inconsistency_window`] rounds (the open one included) *since the last
//! reset* (see below) and counts the **switches** in them: a round is a switch when it is
//! mixed (regions disagree within the round) or when it differs from the round before it
//! in the window (the fleet moved to another hash; a mixed round differs from every
//! other). When the count reaches [`DriftConfig::inconsistency_switches`], the tracker
//! emits [`DriftEvent::FleetInconsistent`] — once — and enters the **inconsistent** state:
//!
//! * no further `FleetInconsistent` is emitted while inconsistent;
//! * confirming a new hash needs a run of `stable_rounds = max(confirm_rounds, 2)` rounds
//!   instead of `confirm_rounds`, so a flip-flop never yields drifts (with
//!   `confirm_rounds: 1` a single round would otherwise confirm every flip);
//! * the state ends when some hash has a run of `stable_rounds` ("the server has been
//!   stable"): if that hash is not the confirmed one, this is the confirmation and the
//!   `Drift` (or `Baseline`) is emitted — the fleet converged on a new version, which must
//!   not go unreported; either way `FleetInconsistent` is re-armed.
//!
//! The switch history is **reset** (to just the open round) when a run of `stable_rounds`
//! rounds either confirmed a new hash or ended the inconsistent state. Hence switches
//! before a confirmation never count towards alternation, so deploy and rollback
//! (`A A B B A A`) are two drifts, not an inconsistency. Being stable on the *already
//! confirmed* hash does not reset the history, so a fleet where one instance in three
//! serves another version now and then (`A A AB A A AB`, confirmed A) is still reported.
//!
//! Within one observation the alternation check comes first, then confirmation. The
//! observation that reaches the switch threshold either starts a round that differs from
//! the previous one (run 1) or makes the open round mixed (run 0), so at most one event is
//! emitted per observation.
//!
//! Examples (`confirm_rounds: 2`, defaults otherwise):
//!
//! * `A A B A B A B A B` (the whole fleet flips every round) → Baseline(A) in the 2nd
//!   round, FleetInconsistent(\[A, B\]) in the 5th, nothing else; if it continues `… B B`,
//!   Drift(A→B) and re-armed.
//! * eu still on A while us serves B, every round (`AA AA AB AB AB …`) → Baseline(A), one
//!   FleetInconsistent (switches: the two mixed rounds and the round after), and
//!   Drift(A→B) once eu serves B too for two rounds (`… BB BB`).
//! * A rolling deploy that reaches the regions within one round (`AA AA AB BB BB`) → one
//!   Drift(A→B), no inconsistency (two switches: the mixed round and the one after it).
//! * With `confirm_rounds: 1`, `A B A B A B` → Baseline(A), Drift(A→B), Drift(B→A), then
//!   FleetInconsistent at the third switch and no drift until a hash is the only one in
//!   two rounds in a row. (Instant confirmation cannot know a flip-flop is coming.)
//!
//! A list that changes every round (`A B C D`, e.g. a timestamp in a description) never
//! confirms anything; it is reported as `FleetInconsistent` too, since otherwise it would
//! go unreported.
//!
//! # State
//!
//! The state is bounded: at most `inconsistency_window` rounds of at most
//! [`MAX_ROUND_HASHES`] distinct hashes each (further hashes of an already mixed round
//! are not kept; the round is mixed either way), and `max_known_lists` tool lists. It is
//! checkpointed as JSON; fields added since (the open round's bucket) default when
//! missing, and a checkpoint from before rounds existed loads with each remembered
//! observation as one round.
//!
//! ## Known limits
//!
//! * A rolling deploy during which the regions disagree for `inconsistency_switches - 1`
//!   rounds or more (2 with the defaults, i.e. 2 minutes) is reported as
//!   `FleetInconsistent` (and as a drift once it converges): raise
//!   `inconsistency_switches` if such deploys are normal.
//! * A flip-flop slower than the confirmation (`A A B B A A B B`) is a series of confirmed
//!   drifts, by definition.
//! * A fleet that keeps briefly agreeing (runs of `stable_rounds`) while alternating re-arms
//!   and is reported again after the next `inconsistency_switches` switches; the incident
//!   operator's per-(tenant, server, class) dedup folds these into one incident.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mcpulse_schemas::{Finding, FindingKind, FindingStatus, Severity};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::diff::{Change, ChangeClass, diff_tools, worst};

/// Largest accepted `inconsistency_window` (bounds the checkpointed state).
const MAX_WINDOW: u32 = 1000;
/// Largest accepted `max_known_lists` (each list can be large).
const MAX_KNOWN_LISTS: usize = 64;
/// Distinct hashes kept per round (bounds the checkpointed state; a round with two is
/// already mixed).
pub const MAX_ROUND_HASHES: usize = 8;
/// Shortest accepted `round`.
const MIN_ROUND: Duration = Duration::from_secs(1);
/// Longest accepted `round` (the prober's longest interval).
const MAX_ROUND: Duration = Duration::from_secs(24 * 3600);
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
///   round: 1m                  # probe results whose start falls in one such bucket = one round
///   confirm_rounds: 2          # consecutive rounds with only the new hash that confirm it
///   inconsistency_window: 8    # last rounds considered for alternation
///   inconsistency_switches: 3  # switching or mixed rounds in that window = an inconsistent fleet
///   max_known_lists: 4         # canonical tool lists kept per server
/// ```
///
/// A *round* is every region's probe results whose `started_at` falls in the same bucket
/// of `round` (aligned on multiples of `round` since the epoch); set it to the probe
/// interval. Confirmation and alternation are both counted in rounds (see the module
/// docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Run the drift operator (default true).
    pub enabled: bool,
    /// How often drift rows and findings are written and state checkpointed (default 2s).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Length of a probe round: observations whose `started_at` falls in the same bucket
    /// of this length (all regions) are one round (default 1m, the prober's default
    /// interval; 1s to 24h).
    #[serde(with = "humantime_serde")]
    pub round: Duration,
    /// Consecutive rounds in which a new hash is the only one seen that confirm it
    /// (default 2).
    pub confirm_rounds: u32,
    /// How many of the last rounds are considered for alternation (default 8).
    pub inconsistency_window: u32,
    /// Switches within the window that mean an inconsistent fleet; a round is a switch when
    /// it is mixed or differs from the round before (default 3).
    pub inconsistency_switches: u32,
    /// Canonical tool lists kept per server; the least recently observed goes first, never
    /// the confirmed one (default 4).
    pub max_known_lists: usize,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            flush_interval: Duration::from_secs(2),
            round: Duration::from_secs(60),
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
        if self.round < MIN_ROUND || self.round > MAX_ROUND {
            return Err(format!(
                "drift.round: must be between {} and {} (got {})",
                humantime_serde::re::humantime::format_duration(MIN_ROUND),
                humantime_serde::re::humantime::format_duration(MAX_ROUND),
                humantime_serde::re::humantime::format_duration(self.round)
            ));
        }
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
                 {} switches between rounds need {} rounds",
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

    /// The round (bucket index) of an event time: whole `round`s since the epoch.
    pub fn round_of(&self, time: DateTime<Utc>) -> i64 {
        let len = i64::try_from(self.round.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        time.timestamp_millis().div_euclid(len)
    }
}

/// One probe result with a tool-list hash, for one (tenant, server).
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    /// The probe's event time (`started_at`): decides its round.
    pub time: DateTime<Utc>,
    /// The probing region (not used for decisions: all regions count alike, and the
    /// observations of a round are compared whichever region sent them).
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

/// The distinct hashes of one round, in first-seen order: one when the round is
/// unanimous, more when it is mixed (at most [`MAX_ROUND_HASHES`]).
///
/// Checkpointed as a plain string when unanimous and as a list otherwise, so a checkpoint
/// from before rounds (one string per observation) loads as one round per observation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RoundRepr", into = "RoundRepr")]
struct Round(Vec<String>);

#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum RoundRepr {
    One(String),
    Many(Vec<String>),
}

impl From<RoundRepr> for Round {
    fn from(repr: RoundRepr) -> Self {
        match repr {
            RoundRepr::One(hash) => Round(vec![hash]),
            RoundRepr::Many(mut hashes) => {
                hashes.truncate(MAX_ROUND_HASHES);
                Round(hashes)
            }
        }
    }
}

impl From<Round> for RoundRepr {
    fn from(round: Round) -> Self {
        match <[String; 1]>::try_from(round.0) {
            Ok([hash]) => RoundRepr::One(hash),
            Err(hashes) => RoundRepr::Many(hashes),
        }
    }
}

impl Round {
    fn is_mixed(&self) -> bool {
        self.0.len() > 1
    }
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
    /// Hash of the current run of unanimous rounds.
    run_hash: Option<String>,
    /// Consecutive rounds unanimous on `run_hash`, ending with the open round (saturating;
    /// 0 while the open round is mixed).
    run_len: u32,
    /// The current run confirmed a hash or ended an inconsistency, and the switch history
    /// is to be reset once the run is `stable_rounds` long.
    reset_pending: bool,
    /// The rounds since the last reset, oldest first, at most `inconsistency_window`; the
    /// last one is the open round.
    recent: VecDeque<Round>,
    /// Bucket index ([`DriftConfig::round_of`]) of the open round; `None` before the first
    /// observation (and in a checkpoint from before rounds: the next observation opens one).
    #[serde(default)]
    round: Option<i64>,
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
        self.add_to_round(config.round_of(obs.time), hash, config);

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

        // 2. Confirmation (longer while inconsistent). A run is only ever of `hash`: an
        // observation of another hash started a new run or broke it (run 0).
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

        // 3. Stability ends the inconsistent state and resets the switch history to the
        // open round.
        if self.run_len >= stable {
            if self.inconsistent {
                self.inconsistent = false;
                self.reset_pending = true;
            }
            if self.reset_pending {
                self.reset_pending = false;
                let open = self.recent.pop_back();
                self.recent.clear();
                self.recent.extend(open);
            }
        }
        events
    }

    /// Counts `hash` in round `round`: opens that round if it is later than the open one,
    /// else (same or earlier bucket) adds it to the open round. Updates the run.
    fn add_to_round(&mut self, round: i64, hash: &str, config: &DriftConfig) {
        let open = match self.round {
            Some(current) if round <= current => self.recent.back_mut(),
            _ => None,
        };
        match open {
            Some(open) => {
                if !open.0.iter().any(|h| h == hash) {
                    if open.0.len() < MAX_ROUND_HASHES {
                        open.0.push(hash.to_owned());
                    }
                    // The round is mixed: no hash has a run through it.
                    self.run_len = 0;
                    self.reset_pending = false;
                }
            }
            None => {
                // A new round (or the first after a restore from an older checkpoint).
                if self.round.is_none_or(|current| round > current) {
                    self.round = Some(round);
                }
                if self.run_len > 0 && self.run_hash.as_deref() == Some(hash) {
                    self.run_len = self.run_len.saturating_add(1);
                } else {
                    self.run_hash = Some(hash.to_owned());
                    self.run_len = 1;
                    self.reset_pending = false;
                }
                self.recent.push_back(Round(vec![hash.to_owned()]));
                let window = config.inconsistency_window.max(1) as usize;
                while self.recent.len() > window {
                    self.recent.pop_front();
                }
            }
        }
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

/// Switches in the rounds: mixed rounds, and rounds that differ from the one before.
fn switches(recent: &VecDeque<Round>) -> usize {
    let mut previous: Option<&Round> = None;
    let mut count = 0;
    for round in recent {
        if round.is_mixed() || previous.is_some_and(|p| p != round) {
            count += 1;
        }
        previous = Some(round);
    }
    count
}

/// Distinct hashes of the rounds in first-seen order.
fn distinct(recent: &VecDeque<Round>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for h in recent.iter().flat_map(|r| &r.0) {
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

    /// The start of round `i` (default 1-minute rounds).
    fn t(i: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap() + chrono::Duration::minutes(i)
    }

    fn cfg(confirm_rounds: u32) -> DriftConfig {
        DriftConfig {
            confirm_rounds,
            ..DriftConfig::default()
        }
    }

    /// Feeds `seq`, one whitespace-separated token per probe round (rounds `start`,
    /// `start + 1`, …), one character per observation in the round (the hash; region `r0`,
    /// `r1`, … a second apart, no lists), and returns the events with where they happened:
    /// `round` for the round's first observation, `round.j` for its `j`th.
    fn run(
        tracker: &mut ServerTracker,
        seq: &str,
        start: i64,
        config: &DriftConfig,
    ) -> Vec<(String, DriftEvent)> {
        let mut out = Vec::new();
        for (r, round) in seq.split_whitespace().enumerate() {
            let r = start + r as i64;
            for (j, c) in round.chars().enumerate() {
                let hash = c.to_string();
                let region = format!("r{j}");
                let obs = Observation {
                    time: t(r) + chrono::Duration::seconds(j as i64),
                    region: &region,
                    hash: &hash,
                    tools: None,
                };
                let at = if j == 0 {
                    r.to_string()
                } else {
                    format!("{r}.{j}")
                };
                out.extend(
                    tracker
                        .observe(obs, config)
                        .into_iter()
                        .map(|e| (at.clone(), e)),
                );
            }
        }
        out
    }

    /// A compact rendering: `B(A)@1`, `D(A>B)@3`, `F(AB)@4.1`.
    fn names(events: &[(String, DriftEvent)]) -> Vec<String> {
        events
            .iter()
            .map(|(at, e)| match e {
                DriftEvent::Baseline { hash, .. } => format!("B({hash})@{at}"),
                DriftEvent::Drift {
                    old_hash, new_hash, ..
                } => format!("D({old_hash}>{new_hash})@{at}"),
                DriftEvent::FleetInconsistent { hashes, .. } => {
                    format!("F({})@{at}", hashes.concat())
                }
            })
            .collect()
    }

    fn seq(s: &str, config: &DriftConfig) -> Vec<String> {
        names(&run(&mut ServerTracker::new(), s, 0, config))
    }

    #[test]
    fn baseline_then_drift() {
        assert_eq!(seq("A A B B", &cfg(2)), ["B(A)@1", "D(A>B)@3"]);
        assert_eq!(seq("A", &cfg(2)), Vec::<String>::new());
        assert_eq!(seq("A A A A A A", &cfg(2)), ["B(A)@1"]);
    }

    #[test]
    fn regions_in_the_same_round_do_not_confirm() {
        // Two regions reporting the new hash in the same minute are one round.
        let config = cfg(2);
        let mut tracker = ServerTracker::new();
        assert_eq!(
            names(&run(&mut tracker, "AA", 0, &config)),
            Vec::<String>::new()
        );
        assert_eq!(tracker.confirmed_hash(), None);
        // The next round confirms, at its first observation.
        assert_eq!(names(&run(&mut tracker, "AA", 1, &config)), ["B(A)@1"]);
        assert_eq!(tracker.confirmed_hash(), Some("A"));
        assert!(run(&mut tracker, "BB", 2, &config).is_empty());
        assert_eq!(tracker.confirmed_hash(), Some("A"));
        assert_eq!(names(&run(&mut tracker, "BB", 3, &config)), ["D(A>B)@3"]);
        assert_eq!(tracker.confirmed_hash(), Some("B"));

        // However many regions (or probes) in one round.
        assert_eq!(seq("AAAAAAAA", &config), Vec::<String>::new());
        assert_eq!(seq("AAAA AAAA BBBB", &config), ["B(A)@1"]);
        // Within a minute, whatever the offsets: 10:00:00 and 10:00:59 are one round,
        // 10:01:00 the next.
        let mut tracker = ServerTracker::new();
        let at = |s: i64| Observation {
            time: t(0) + chrono::Duration::seconds(s),
            region: "eu",
            hash: "A",
            tools: None,
        };
        assert!(tracker.observe(at(0), &config).is_empty());
        assert!(tracker.observe(at(59), &config).is_empty());
        assert_eq!(tracker.observe(at(60), &config).len(), 1);

        // The round length is configurable: with 30 s rounds the same probes are two rounds.
        let half = DriftConfig {
            round: Duration::from_secs(30),
            ..config.clone()
        };
        let mut tracker = ServerTracker::new();
        assert!(tracker.observe(at(0), &half).is_empty());
        assert_eq!(tracker.observe(at(30), &half).len(), 1);
    }

    #[test]
    fn a_mixed_round_breaks_the_run() {
        // A round where one region still sees A does not count for B.
        assert_eq!(seq("AA AA BB AB", &cfg(2)), ["B(A)@1"]);
        // (With the default 3 switches, `BB AB BB` would be an alternation: raise it.)
        let config = DriftConfig {
            inconsistency_switches: 4,
            ..cfg(2)
        };
        assert_eq!(seq("AA AA BB AB BB", &config), ["B(A)@1"]);
        assert_eq!(seq("AA AA BB AB BB BB", &config), ["B(A)@1", "D(A>B)@5"]);
        // A region that turns up later in the round makes it mixed too, after the fact:
        // a confirmation already given by the round stands.
        assert_eq!(seq("AA AA BB BA", &cfg(2)), ["B(A)@1", "D(A>B)@3"]);
    }

    #[test]
    fn late_observations_count_in_the_open_round() {
        let config = cfg(2);
        let mut tracker = ServerTracker::new();
        run(&mut tracker, "A A", 0, &config);
        assert_eq!(tracker.confirmed_hash(), Some("A"));
        // Round 2 opened with B; a result of round 1 arriving now (A) makes round 2 mixed.
        run(&mut tracker, "B", 2, &config);
        let late = Observation {
            time: t(1) + chrono::Duration::seconds(30),
            region: "us",
            hash: "A",
            tools: None,
        };
        assert!(tracker.observe(late, &config).is_empty());
        assert_eq!(tracker.round, Some(config.round_of(t(2))));
        assert_eq!(tracker.run_len, 0);
        // So the next B round is the first of the run, the one after confirms.
        assert!(run(&mut tracker, "B", 3, &config).is_empty());
        assert_eq!(names(&run(&mut tracker, "B", 4, &config)), ["D(A>B)@4"]);
    }

    #[test]
    fn skipped_rounds_do_not_break_a_run() {
        // Rounds 0 and 5 (nothing in between, e.g. failed probes) are consecutive.
        let config = cfg(2);
        let mut tracker = ServerTracker::new();
        assert!(run(&mut tracker, "A", 0, &config).is_empty());
        assert_eq!(names(&run(&mut tracker, "A", 5, &config)), ["B(A)@5"]);
    }

    #[test]
    fn rollback_is_two_drifts() {
        assert_eq!(
            seq("A A B B A A", &cfg(2)),
            ["B(A)@1", "D(A>B)@3", "D(B>A)@5"]
        );
        assert_eq!(
            seq("AA AA BB BB AA AA", &cfg(2)),
            ["B(A)@1", "D(A>B)@3", "D(B>A)@5"]
        );
    }

    #[test]
    fn flip_flop_is_one_fleet_inconsistent_and_no_drift() {
        assert_eq!(seq("A A B A B A B A B", &cfg(2)), ["B(A)@1", "F(AB)@4"]);
        // However long it goes on.
        let long = format!("A A{}", " B A".repeat(50));
        assert_eq!(seq(&long, &cfg(2)), ["B(A)@1", "F(AB)@4"]);
        // The whole fleet (two regions) flipping together: the same, in rounds.
        let fleet = format!("AA AA{}", " BB AA".repeat(20));
        assert_eq!(seq(&fleet, &cfg(2)), ["B(A)@1", "F(AB)@4"]);
    }

    #[test]
    fn alternating_fleet_is_reported_once() {
        // Two regions alternating between the versions within every round (an LB in
        // front of two versions): mixed rounds, reported once however long it lasts.
        let s = format!("AB{}", " AB BA".repeat(20));
        let events = seq(&s, &cfg(2));
        assert_eq!(events, ["F(AB)@2"]);
        // After a baseline.
        let s = format!("AA AA{}", " BA".repeat(20));
        assert_eq!(seq(&s, &cfg(2)), ["B(A)@1", "F(AB)@4"]);
    }

    #[test]
    fn single_blips_do_not_confirm() {
        // One B round, then back: no drift, not yet an alternation.
        assert_eq!(seq("A A A B A A A A", &cfg(2)), ["B(A)@1"]);
        // One region seeing B for one round.
        assert_eq!(seq("AA AA AA AB AA AA AA", &cfg(2)), ["B(A)@1"]);
    }

    #[test]
    fn rolling_deploy_within_a_round_is_one_drift() {
        assert_eq!(seq("AA AA AB BB BB", &cfg(2)), ["B(A)@1", "D(A>B)@4"]);
        // Disagreeing for two rounds is an inconsistency (see the known limits).
        assert_eq!(
            seq("AA AA AB AB BB BB", &cfg(2)),
            ["B(A)@1", "F(AB)@4", "D(A>B)@5"]
        );
    }

    #[test]
    fn inconsistency_ends_with_stability_and_rearms() {
        let config = cfg(2);
        let mut tracker = ServerTracker::new();
        // Converging on the new version: the drift is reported.
        let events = run(&mut tracker, "A A B A B A B B", 0, &config);
        assert_eq!(names(&events), ["B(A)@1", "F(AB)@4", "D(A>B)@7"]);
        assert!(!tracker.is_inconsistent());
        assert_eq!(tracker.confirmed_hash(), Some("B"));
        // Re-armed: a new flip-flop is reported again, once.
        let events = run(&mut tracker, "A B A B A B A B", 8, &config);
        assert_eq!(names(&events), ["F(BA)@10"]);

        // Settling back on the confirmed version re-arms without a drift.
        let mut tracker = ServerTracker::new();
        let events = run(&mut tracker, "A A B A B A A B A B A B", 0, &config);
        assert_eq!(names(&events), ["B(A)@1", "F(AB)@4", "F(AB)@9"]);
    }

    #[test]
    fn lagging_region_is_one_fleet_inconsistent() {
        // eu (r0) still on A, us (r1) already on B, for a long time: mixed rounds.
        let s = format!("AA AA{}", " AB".repeat(20));
        let config = cfg(2);
        let mut tracker = ServerTracker::new();
        let events = run(&mut tracker, &s, 0, &config);
        // Switches: round 2 (mixed), round 3 (A differs from the mixed round 2, then mixed
        // itself), round 4 (likewise): reported at round 4's first observation.
        assert_eq!(names(&events), ["B(A)@1", "F(AB)@4"]);
        match &events[1].1 {
            DriftEvent::FleetInconsistent {
                hashes, confirmed, ..
            } => {
                assert_eq!(hashes, &["A", "B"]);
                assert_eq!(confirmed.as_deref(), Some("A"));
            }
            other => panic!("{other:?}"),
        }
        // The rollout completes in eu: one drift, once B is the only hash for two rounds.
        let events = run(&mut tracker, "BB BB", 42, &config);
        assert_eq!(names(&events), ["D(A>B)@43"]);
    }

    #[test]
    fn flaky_minority_instance_is_reported() {
        // One region in three now and then sees B, confirmed A.
        assert_eq!(
            seq("AAA AAA ABA AAA AAB AAA", &cfg(2)),
            ["B(A)@1", "F(AB)@4.2"]
        );
    }

    #[test]
    fn churning_list_is_reported() {
        assert_eq!(seq("A A B C D", &cfg(2)), ["B(A)@1", "F(ABCD)@4"]);
        assert_eq!(seq("A A B C D D", &cfg(2))[2], "D(A>D)@5");
    }

    #[test]
    fn round_hashes_are_bounded() {
        let config = cfg(2);
        let mut tracker = ServerTracker::new();
        let many: String = ('a'..='z').collect();
        run(&mut tracker, &many, 0, &config);
        assert_eq!(tracker.recent.len(), 1);
        assert_eq!(tracker.recent[0].0.len(), MAX_ROUND_HASHES);
        assert_eq!(tracker.run_len, 0);
        // The window is bounded in rounds.
        let rounds = vec![many.as_str(); 50].join(" ");
        run(&mut tracker, &rounds, 1, &config);
        assert_eq!(tracker.recent.len(), config.inconsistency_window as usize);
    }

    #[test]
    fn confirm_rounds_one_and_three() {
        // Every change is a drift immediately...
        assert_eq!(seq("A B B", &cfg(1)), ["B(A)@0", "D(A>B)@1"]);
        // ...until alternation: then one FleetInconsistent, and drifts wait for stability.
        assert_eq!(
            seq("A B A B A B A B", &cfg(1)),
            ["B(A)@0", "D(A>B)@1", "D(B>A)@2", "F(AB)@3"]
        );
        assert_eq!(
            seq("A B A B A B A B B", &cfg(1)),
            ["B(A)@0", "D(A>B)@1", "D(B>A)@2", "F(AB)@3", "D(A>B)@8"]
        );
        // A deploy and a rollback some time apart do not count as alternation.
        assert_eq!(
            seq("A A B B B B A A A A", &cfg(1)),
            ["B(A)@0", "D(A>B)@2", "D(B>A)@6"]
        );
        assert_eq!(seq("A A A B B B C C", &cfg(3)), ["B(A)@2", "D(A>B)@5"]);
        assert_eq!(seq("AA AA AA BB BB", &cfg(3)), ["B(A)@2"]);
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
        // (round, hash, list): two regions, so cuts fall both between and within rounds.
        type Step<'a> = (i64, &'a str, Option<&'a [Value]>);
        let steps: Vec<Step> = vec![
            (0, "h1", Some(&v1)),
            (0, "h1", None),
            (1, "h1", None),
            (1, "h1", None),
            (2, "h2", Some(&v2)), // mid-confirmation from here
            (2, "h2", None),
            (3, "h2", None),
            (3, "h2", None),
            (4, "h1", None), // then the fleet disagrees, round after round
            (4, "h2", None),
            (5, "h2", None),
            (5, "h1", None),
            (6, "h1", None),
            (6, "h2", None),
            (7, "h2", None),
            (7, "h2", None),
            (8, "h2", None),
        ];
        let feed = |tr: &mut ServerTracker, steps: &[Step], first: usize| {
            let mut events = Vec::new();
            for (i, (round, h, tools)) in steps.iter().enumerate() {
                let obs = Observation {
                    time: t(*round) + chrono::Duration::seconds((first + i) as i64 % 2),
                    region: if (first + i).is_multiple_of(2) {
                        "eu"
                    } else {
                        "us"
                    },
                    hash: h,
                    tools: *tools,
                };
                events.extend(tr.observe(obs, &config));
            }
            events
        };
        let mut straight = ServerTracker::new();
        let all = feed(&mut straight, &steps, 0);
        for cut in 0..=steps.len() {
            let mut first = ServerTracker::new();
            let mut replayed = feed(&mut first, &steps[..cut], 0);
            let json = serde_json::to_string(&first).unwrap();
            let mut restored: ServerTracker = serde_json::from_str(&json).unwrap();
            assert_eq!(restored, first);
            replayed.extend(feed(&mut restored, &steps[cut..], cut));
            assert_eq!(replayed, all, "checkpoint after {cut} observations");
            assert_eq!(restored, straight);
        }
        // The sequence itself: baseline, drift h1→h2 (classified), then one
        // inconsistency, and no drift back.
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(matches!(&all[0], DriftEvent::Baseline { time, .. } if *time == t(1)));
        assert!(
            matches!(&all[1], DriftEvent::Drift { changes: Some(c), time, .. }
            if !c.is_empty() && *time == t(3))
        );
        assert!(matches!(&all[2], DriftEvent::FleetInconsistent { .. }));
        assert_eq!(straight.confirmed_hash(), Some("h2"));
    }

    #[test]
    fn state_checkpoint_rejects_unknown_fields_and_defaults_missing_ones() {
        let err = serde_json::from_str::<ServerTracker>(r#"{"bogus": 1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let old: ServerTracker = serde_json::from_str(r#"{"confirmed": "h1"}"#).unwrap();
        assert_eq!(old.confirmed_hash(), Some("h1"));
        // A checkpoint from before rounds: one hash per observation, no open round. Each
        // remembered observation loads as a round; the next observation opens a round.
        let mut old: ServerTracker = serde_json::from_str(
            r#"{"confirmed": "h1", "run_hash": "h2", "run_len": 1, "reset_pending": false,
                "recent": ["h1", "h2"], "inconsistent": false, "lists": []}"#,
        )
        .unwrap();
        assert_eq!(old.round, None);
        assert_eq!(
            old.recent,
            [Round(vec!["h1".into()]), Round(vec!["h2".into()])]
        );
        let config = DriftConfig::default();
        let ev = old.observe(obs(0, "h2", None), &config);
        assert!(matches!(&ev[..], [DriftEvent::Drift { new_hash, .. }] if new_hash == "h2"));
        // A mixed round is checkpointed as a list, a unanimous one as a string.
        let mut tr = ServerTracker::new();
        run(&mut tr, "A BA", 0, &config);
        let json = serde_json::to_value(&tr).unwrap();
        assert_eq!(json["recent"], json!(["A", ["B", "A"]]));
        assert_eq!(json["round"], config.round_of(t(1)));
        let back: ServerTracker = serde_json::from_value(json).unwrap();
        assert_eq!(back, tr);
        assert_eq!(
            serde_json::from_str::<ServerTracker>("{}").unwrap(),
            ServerTracker::new()
        );
    }

    #[test]
    fn config_defaults_and_validation() {
        let config: DriftConfig = serde_yaml_ng::from_str("{}").unwrap();
        assert_eq!(config, DriftConfig::default());
        assert_eq!(config.round, Duration::from_secs(60));
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
        let rounds: DriftConfig = serde_yaml_ng::from_str("round: 30s").unwrap();
        assert_eq!(rounds.round, Duration::from_secs(30));
        rounds.validate().unwrap();

        let bad = |f: fn(&mut DriftConfig), field: &str| {
            let mut c = DriftConfig::default();
            f(&mut c);
            let err = c.validate().unwrap_err();
            assert!(err.starts_with(&format!("drift.{field}: ")), "{err}");
        };
        bad(|c| c.round = Duration::ZERO, "round");
        bad(|c| c.round = Duration::from_millis(500), "round");
        bad(|c| c.round = Duration::from_secs(2 * 24 * 3600), "round");
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

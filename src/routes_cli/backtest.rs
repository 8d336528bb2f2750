//! `mcpulse routes backtest FILE --since 7d`: every archived incident transition of the
//! window routed through a candidate routes file at its own time, counted per receiver,
//! and compared with what the notify stage recorded as sent.
//!
//! A receiver "would send" an event when a route takes it to the receiver unmuted and
//! unsilenced, and at least one of its integrations makes a request for it — given what
//! the receiver already got for the incident (PagerDuty never pages a blip and resolves
//! only what it paged). An incident whose first event in the window is a follow-up
//! (update, resolve, suppress) is assumed to have been delivered before the window.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use mcpulse_schemas::AlertEvent;
use mcpulse_schemas::alert::OPERATOR_TENANT;
use mcpulse_sinks::routes::{RoutesFile, SilenceSet, explain};
use serde::Serialize;

use super::history::Sent;
use super::integrations::Integrations;
use super::{payloads, table};

const ACTIONS: [&str; 5] = ["trigger", "update", "resolve", "blip", "suppress"];
const SEVERITIES: [&str; 4] = ["P1", "P2", "P3", "P4"];

/// Notifications counted by action and by severity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub total: u64,
    pub by_action: BTreeMap<String, u64>,
    pub by_severity: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, action: &str, severity: &str) {
        self.total += 1;
        *self.by_action.entry(action.to_string()).or_default() += 1;
        *self.by_severity.entry(severity.to_string()).or_default() += 1;
    }
}

/// One receiver's comparison.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReceiverDiff {
    pub receiver: String,
    /// Whether the candidate file has this receiver (else it only appears in history).
    pub in_candidate: bool,
    /// What the candidate file would have sent.
    pub would_send: Tally,
    /// What was sent (the `notifications` table, status `sent`).
    pub was_sent: Tally,
    /// Events the candidate would send here that were not sent here.
    pub only_in_candidate: u64,
    /// Events sent here that the candidate would not send here.
    pub only_in_current: u64,
    /// Routed here but muted by a time interval at the time.
    pub muted: u64,
    /// Routed here but silenced at the time.
    pub silenced: u64,
    /// Routed here, but no integration makes a request for the transition.
    pub nothing_to_send: u64,
}

/// The result of a backtest.
#[derive(Clone, Debug, Serialize)]
pub struct Backtest {
    pub file: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Incident transitions in the window.
    pub events: u64,
    pub tenants: u64,
    pub storm_notices: u64,
    /// Events no route takes.
    pub unrouted: u64,
    /// Whether the archive has a `notifications` history (else "was sent" is 0).
    pub notifications_history: bool,
    pub receivers: Vec<ReceiverDiff>,
}

/// The window and what to compare with.
pub struct Inputs<'a> {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub events: &'a [AlertEvent],
    pub silences: Option<&'a SilenceSet>,
    /// `None`: no notifications history.
    pub sent: Option<&'a [Sent]>,
}

/// Replays `inputs.events` (in time order) through `file`.
pub fn run(file: &RoutesFile, integrations: &Integrations, inputs: &Inputs) -> Backtest {
    let mut diffs: BTreeMap<String, ReceiverDiff> = BTreeMap::new();
    let mut candidate: HashSet<(String, String)> = HashSet::new();
    let mut simulation = Simulation::default();
    let mut unrouted = 0;
    for event in inputs.events {
        let decision = explain(file, event, event.time, inputs.silences);
        let assume_earlier = simulation.first_sight(event) && payloads::follows_a_delivery(event);
        if decision.matches.is_empty() {
            unrouted += 1;
            continue;
        }
        let mut receivers: Vec<&str> = Vec::new();
        for m in &decision.matches {
            if !receivers.contains(&m.receiver.as_str()) {
                receivers.push(&m.receiver);
            }
        }
        for receiver in receivers {
            let diff = diffs.entry(receiver.to_string()).or_default();
            let unmuted = decision
                .matches
                .iter()
                .any(|m| m.receiver == receiver && !m.is_muted());
            if decision.silenced_by.is_some() {
                diff.silenced += 1;
            } else if !unmuted {
                diff.muted += 1;
            } else if simulation.deliver(integrations, receiver, event, assume_earlier) {
                diff.would_send
                    .add(event.action.as_str(), event.severity.as_str());
                candidate.insert((receiver.to_string(), event.event_id.clone()));
            } else {
                diff.nothing_to_send += 1;
            }
        }
    }

    let severity_of: HashMap<&str, &str> = inputs
        .events
        .iter()
        .map(|e| (e.event_id.as_str(), e.severity.as_str()))
        .collect();
    let mut current: HashSet<(String, String)> = HashSet::new();
    for sent in inputs.sent.unwrap_or_default() {
        if !current.insert((sent.receiver.clone(), sent.event_id.clone())) {
            continue;
        }
        let severity = severity_of.get(sent.event_id.as_str()).unwrap_or(&"?");
        diffs
            .entry(sent.receiver.clone())
            .or_default()
            .was_sent
            .add(&sent.action, severity);
    }
    for (receiver, _) in candidate.difference(&current) {
        diffs.entry(receiver.clone()).or_default().only_in_candidate += 1;
    }
    for (receiver, _) in current.difference(&candidate) {
        diffs.entry(receiver.clone()).or_default().only_in_current += 1;
    }

    // The candidate's receivers in file order, then receivers only history knows.
    let mut receivers = Vec::new();
    for r in file.receivers() {
        let mut diff = diffs.remove(&r.name).unwrap_or_default();
        diff.receiver = r.name.clone();
        diff.in_candidate = true;
        receivers.push(diff);
    }
    for (name, mut diff) in diffs {
        diff.receiver = name;
        receivers.push(diff);
    }
    let tenants: BTreeSet<&str> = inputs
        .events
        .iter()
        .filter(|e| e.tenant != OPERATOR_TENANT)
        .map(|e| e.tenant.as_str())
        .collect();
    Backtest {
        file: file.file().to_string(),
        since: inputs.since,
        until: inputs.until,
        events: inputs.events.len() as u64,
        tenants: tenants.len() as u64,
        storm_notices: inputs
            .events
            .iter()
            .filter(|e| e.tenant == OPERATOR_TENANT)
            .count() as u64,
        unrouted,
        notifications_history: inputs.sent.is_some(),
        receivers,
    }
}

/// What each integration of each receiver holds per incident as the replay goes.
#[derive(Default)]
struct Simulation {
    /// (receiver, integration index, incident id) that got something.
    delivered: HashSet<(String, usize, String)>,
    /// Incidents seen so far (tenant, incident id).
    seen: HashSet<(String, String)>,
}

impl Simulation {
    /// Whether this is the first event of its incident in the window.
    fn first_sight(&mut self, event: &AlertEvent) -> bool {
        self.seen
            .insert((event.tenant.clone(), event.incident_id.clone()))
    }

    /// Whether any integration of `receiver` makes a request for `event`; records it.
    fn deliver(
        &mut self,
        integrations: &Integrations,
        receiver: &str,
        event: &AlertEvent,
        assume_earlier: bool,
    ) -> bool {
        let mut any = false;
        for (i, integration) in integrations.of(receiver).iter().enumerate() {
            let key = (receiver.to_string(), i, event.incident_id.clone());
            let before = assume_earlier || self.delivered.contains(&key);
            if !payloads::render(integration, event, before).is_empty() {
                any = true;
                self.delivered.insert(key);
            }
        }
        any
    }
}

impl fmt::Display for Backtest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "backtest of {}: {} incident events from {} to {} ({} tenants, {} storm notices); \
             {} taken by no route",
            self.file,
            self.events,
            self.since.to_rfc3339_opts(SecondsFormat::Secs, true),
            self.until.to_rfc3339_opts(SecondsFormat::Secs, true),
            self.tenants,
            self.storm_notices,
            self.unrouted
        )?;
        match self.notifications_history {
            true => writeln!(f, "was sent: the notifications table (status sent)")?,
            false => writeln!(
                f,
                "no notifications history: the archive has no notifications table yet, so \
                 \"was sent\" counts as 0"
            )?,
        }
        writeln!(f)?;
        let rows: Vec<Vec<String>> = self
            .receivers
            .iter()
            .map(|r| {
                vec![
                    self.name(r),
                    r.would_send.total.to_string(),
                    r.was_sent.total.to_string(),
                    r.only_in_candidate.to_string(),
                    r.only_in_current.to_string(),
                    r.muted.to_string(),
                    r.silenced.to_string(),
                    r.nothing_to_send.to_string(),
                ]
            })
            .collect();
        f.write_str(&table::render(
            &[
                "RECEIVER",
                "WOULD SEND",
                "WAS SENT",
                "ONLY IN CANDIDATE",
                "ONLY IN CURRENT",
                "MUTED",
                "SILENCED",
                "NOTHING TO SEND",
            ],
            &rows,
        ))?;
        writeln!(f)?;
        writeln!(f, "would send, by action and severity:")?;
        f.write_str(&self.breakdown(|r| &r.would_send))?;
        if self.notifications_history {
            writeln!(f)?;
            writeln!(f, "was sent, by action and severity:")?;
            f.write_str(&self.breakdown(|r| &r.was_sent))?;
        }
        Ok(())
    }
}

impl Backtest {
    fn name(&self, r: &ReceiverDiff) -> String {
        match r.in_candidate {
            true => r.receiver.clone(),
            false => format!("{} (not in {})", r.receiver, self.file),
        }
    }

    fn breakdown(&self, tally: impl Fn(&ReceiverDiff) -> &Tally) -> String {
        let mut headers = vec!["RECEIVER"];
        headers.extend(ACTIONS);
        headers.extend(SEVERITIES);
        let count = |map: &BTreeMap<String, u64>, key: &str| map.get(key).copied().unwrap_or(0);
        let rows: Vec<Vec<String>> = self
            .receivers
            .iter()
            .map(|r| {
                let t = tally(r);
                let mut row = vec![self.name(r)];
                row.extend(ACTIONS.iter().map(|a| count(&t.by_action, a).to_string()));
                row.extend(
                    SEVERITIES
                        .iter()
                        .map(|s| count(&t.by_severity, s).to_string()),
                );
                row
            })
            .collect();
        table::render(&headers, &rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpulse_schemas::{AlertAction, AlertStatus, Severity};

    const FILE: &str = "receivers:
  - name: pages
    pagerduty: {routing_key: \"${PD_KEY}\"}
  - name: chat
    tenant: acme
    discord: {webhook_url: \"https://discord.com/api/webhooks/1/${PD_KEY}\"}
route:
  id: root
  receiver: pages
  routes:
    - id: acme
      tenant: acme
      receiver: chat
      routes:
        - {id: acme-pages, matchers: [class = unreachable], receiver: pages, continue: true}
        - {id: acme-chat}
";

    fn event(id: &str, incident: &str, action: AlertAction, severity: Severity) -> AlertEvent {
        let t = DateTime::parse_from_rfc3339("2026-01-14T10:00:00Z")
            .unwrap()
            .to_utc();
        AlertEvent {
            event_id: id.into(),
            incident_id: incident.into(),
            dedup_key: format!("mcpulse/acme/{incident}/unreachable"),
            action,
            status: match action {
                AlertAction::Resolve | AlertAction::Blip => AlertStatus::Resolved,
                _ => AlertStatus::Open,
            },
            tenant: "acme".into(),
            server: Some(incident.into()),
            class: "unreachable".into(),
            severity,
            scope: "global".into(),
            reason: None,
            regions: Vec::new(),
            time: t,
            opened_at: t,
            resolved_at: None,
            duration_s: None,
            storm_id: None,
            storm: None,
            provider_outage: None,
            summary: "s".into(),
            evidence: serde_json::json!({}),
        }
    }

    fn sent(receiver: &str, event_id: &str, action: &str) -> Sent {
        Sent {
            receiver: receiver.into(),
            event_id: event_id.into(),
            action: action.into(),
        }
    }

    #[test]
    fn counts_per_receiver_and_diffs_with_what_was_sent() {
        let file = RoutesFile::parse(FILE, |_| Some("s3cr3t-0123456789".into())).unwrap();
        let integrations = Integrations::build(&file).unwrap();
        let events = [
            event("e1", "weather", AlertAction::Trigger, Severity::P1),
            event("e2", "weather", AlertAction::Resolve, Severity::P1),
            // PagerDuty never pages a blip; Discord posts it.
            event("e3", "maps", AlertAction::Blip, Severity::P4),
            // A resolve whose trigger came before the window: PagerDuty resolves it.
            event("e4", "files", AlertAction::Resolve, Severity::P1),
        ];
        let history = [
            sent("pages", "e1", "trigger"),
            sent("pages", "e1", "trigger"),
            sent("old-pager", "e2", "resolve"),
            sent("chat", "e3", "blip"),
        ];
        let report = run(
            &file,
            &integrations,
            &Inputs {
                since: events[0].time,
                until: events[0].time,
                events: &events,
                silences: None,
                sent: Some(&history),
            },
        );
        let by_name = |name: &str| {
            report
                .receivers
                .iter()
                .find(|r| r.receiver == name)
                .unwrap()
        };
        let pages = by_name("pages");
        assert_eq!(pages.would_send.total, 3, "{pages:#?}");
        assert_eq!(pages.would_send.by_action["resolve"], 2);
        assert_eq!(pages.nothing_to_send, 1, "the blip");
        assert_eq!(
            (
                pages.was_sent.total,
                pages.only_in_candidate,
                pages.only_in_current
            ),
            (1, 2, 0)
        );
        let chat = by_name("chat");
        assert_eq!(chat.would_send.total, 4);
        assert_eq!(chat.would_send.by_severity["P4"], 1);
        assert_eq!((chat.was_sent.total, chat.only_in_candidate), (1, 3));
        let old = by_name("old-pager");
        assert!(!old.in_candidate);
        assert_eq!((old.was_sent.total, old.only_in_current), (1, 1));
        assert_eq!(old.was_sent.by_severity["P1"], 1);
        let text = report.to_string();
        assert!(text.contains("old-pager (not in routes.yaml)"), "{text}");
        assert!(!text.contains("no notifications history"), "{text}");
    }
}

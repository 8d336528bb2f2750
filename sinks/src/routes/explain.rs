//! `mcpulse routes test`: what a candidate routes file does with one event, printable.

use std::fmt;

use chrono::{DateTime, Utc};
use mcpulse_schemas::AlertEvent;

use super::RoutesFile;
use super::silence::{Silence, SilenceSet};
use super::tree::{RouteMatch, Tree};

/// The routing decision for one event at one time.
#[derive(Clone, Debug)]
pub struct RoutingDecision {
    /// One line describing the event's routable fields.
    pub event: String,
    pub at: DateTime<Utc>,
    /// The tree it went through (`None`: a storm and no `operator_routes`).
    pub tree: Option<Tree>,
    /// Every route that took it, muted ones included.
    pub matches: Vec<RouteMatch>,
    /// The silence that stops every notification of it, if any.
    pub silenced_by: Option<Silence>,
    /// Receiver name → its integration kinds, for display.
    kinds: Vec<(String, String)>,
    secrets: Vec<String>,
}

impl RoutingDecision {
    /// The matches that would actually notify: not muted, and nothing if silenced.
    pub fn deliveries(&self) -> Vec<&RouteMatch> {
        if self.silenced_by.is_some() {
            return Vec::new();
        }
        self.matches.iter().filter(|m| !m.is_muted()).collect()
    }
}

/// Routes `event` through `file` at `now`, with `silences` if given.
pub fn explain(
    file: &RoutesFile,
    event: &AlertEvent,
    now: DateTime<Utc>,
    silences: Option<&SilenceSet>,
) -> RoutingDecision {
    let matches = file.route(event, now);
    let kinds = matches
        .iter()
        .filter_map(|m| file.receiver(&m.receiver))
        .map(|r| (r.name.clone(), r.kinds()))
        .collect();
    RoutingDecision {
        event: describe_event(event),
        at: now,
        tree: file.tree_for(event).map(|r| r.tree),
        matches,
        silenced_by: silences.and_then(|s| s.silenced_by(event, now)).cloned(),
        kinds,
        secrets: file.secrets().to_vec(),
    }
}

fn describe_event(e: &AlertEvent) -> String {
    let mut text = format!(
        "tenant={} server={} class={} severity={} scope={} action={} status={}",
        e.tenant,
        e.server.as_deref().unwrap_or("-"),
        e.class,
        e.severity.as_str(),
        e.scope,
        e.action.as_str(),
        e.status.as_str()
    );
    if !e.regions.is_empty() {
        text.push_str(&format!(" regions={}", e.regions.join(",")));
    }
    text
}

impl fmt::Display for RoutingDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = format!("event: {}\nat: {}\n", self.event, self.at.to_rfc3339());
        text.push_str(match self.tree {
            Some(Tree::Tenants) => "tree: route (tenant incidents)\n",
            Some(Tree::Operator) => "tree: operator_routes (operator events)\n",
            None => "tree: none (an operator event, and the file has no operator_routes)\n",
        });
        if self.matches.is_empty() {
            text.push_str("no route takes this event: nothing is sent\n");
        }
        for m in &self.matches {
            let kinds = self
                .kinds
                .iter()
                .find(|(name, _)| *name == m.receiver)
                .map_or("", |(_, kinds)| kinds.as_str());
            text.push_str(&format!(
                "→ {} [{kinds}] by route {} ({})\n    group {}, repeat every {}\n",
                m.receiver,
                m.route_id,
                m.trail.join(" > "),
                m.group_key,
                humantime::format_duration(m.repeat_interval)
            ));
            if let Some(mute) = &m.muted {
                text.push_str(&format!("    {mute}: not sent now\n"));
            }
        }
        if let Some(s) = &self.silenced_by {
            text.push_str(&format!(
                "silenced by {} until {} ({}: {}): nothing is sent\n",
                s.id,
                s.ends_at.to_rfc3339(),
                s.created_by,
                s.comment
            ));
        }
        f.write_str(&mcpulse_schemas::env::scrub(text, &self.secrets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::silence::Silence;
    use crate::routes::testutil::{at, event, storm};

    const FILE: &str = "receivers:
  - name: oncall
    pagerduty: {routing_key: \"${PD_KEY}\"}
  - name: chat
    discord: {webhook_url: \"https://discord.example/${PD_KEY}\"}
    email: {to: [\"${PD_KEY}@example.com\"]}
route:
  id: root
  receiver: chat
  routes:
    - id: acme
      tenant: acme
      routes:
        - {id: acme-pages, matchers: [\"severity =~ \\\"P1|P2\\\"\"], receiver: oncall, continue: true, mute_time_intervals: [weekends]}
        - {id: acme-chat, receiver: chat}
time_intervals:
  - name: weekends
    intervals: [{weekdays: [\"saturday:sunday\"]}]
";

    fn file() -> RoutesFile {
        RoutesFile::parse(FILE, |_| Some("s3cr3t".into())).unwrap()
    }

    #[test]
    fn prints_each_receiver_its_route_group_and_mute() {
        let f = file();
        let d = explain(
            &f,
            &event("acme", "weather"),
            at("2026-01-17T10:00:00Z"),
            None,
        );
        let text = d.to_string();
        let expected = "event: tenant=acme server=weather class=unreachable severity=P1 scope=global action=trigger status=open regions=eu-west,us-east
at: 2026-01-17T10:00:00+00:00
tree: route (tenant incidents)
→ oncall [pagerduty] by route acme-pages (root > acme > acme-pages)
    group acme-pages:{tenant=\"acme\"}, repeat every 4h
    muted: time interval weekends is active: not sent now
→ chat [discord, email] by route acme-chat (root > acme > acme-chat)
    group acme-chat:{tenant=\"acme\"}, repeat every 4h
";
        assert_eq!(text, expected);
        let sent: Vec<&str> = d.deliveries().iter().map(|m| m.receiver.as_str()).collect();
        assert_eq!(sent, ["chat"]);
        assert!(!text.contains("s3cr3t"));
    }

    #[test]
    fn says_when_nothing_is_sent() {
        let f = file();
        let d = explain(&f, &storm(), at("2026-01-14T10:00:00Z"), None);
        assert!(d.matches.is_empty() && d.tree.is_none());
        let text = d.to_string();
        assert!(
            text.contains("tree: none") && text.contains("nothing is sent"),
            "{text}"
        );

        let mut silences = SilenceSet::new();
        silences
            .add(Silence {
                id: "s1".into(),
                tenant: Some("acme".into()),
                matchers: serde_yaml_ng::from_str("[server = weather]").unwrap(),
                starts_at: at("2026-01-14T00:00:00Z"),
                ends_at: at("2026-01-15T00:00:00Z"),
                created_by: "ana".into(),
                comment: "migration".into(),
            })
            .unwrap();
        let d = explain(
            &f,
            &event("acme", "weather"),
            at("2026-01-14T10:00:00Z"),
            Some(&silences),
        );
        assert_eq!(d.matches.len(), 2);
        assert!(d.deliveries().is_empty());
        assert!(d.to_string().ends_with(
            "silenced by s1 until 2026-01-15T00:00:00+00:00 (ana: migration): nothing is sent\n"
        ));
    }

    #[test]
    fn secrets_in_names_are_redacted_from_the_output() {
        let f = RoutesFile::parse(
            "receivers:\n  - {name: \"${K}\", webhook: {url: u}}\nroute: {id: root, receiver: \"${K}\"}\n",
            |_| Some("s3cr3t".into()),
        )
        .unwrap();
        let text = explain(&f, &event("acme", "w"), at("2026-01-14T10:00:00Z"), None).to_string();
        assert!(
            text.contains("→ *** [webhook]") && !text.contains("s3cr3t"),
            "{text}"
        );
        let report = crate::routes::check(&f).to_string();
        assert!(!report.contains("s3cr3t"), "{report}");
    }
}

//! The compiled routing tree and how an event goes through it.
//!
//! Alertmanager's rules: depth first; a route matches when its matchers hold; its children
//! are tried in order and the first that matches wins unless it has `continue: true`; a
//! route none of whose children match delivers to its own receiver. Made safer: a route
//! inside a tenant's section matches only that tenant's events, and a route of the tenant
//! tree never matches an operator event (nor an operator route a tenant's), whatever the
//! matchers say — checked on every route, not only at the top.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mcpulse_schemas::AlertEvent;
use mcpulse_schemas::alert::OPERATOR_TENANT;

use super::fields::{Field, GroupField};
use super::matcher::Matchers;
use super::time_interval::TimeInterval;

/// Which tree a route is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tree {
    /// `route:` — tenants' incidents.
    Tenants,
    /// `operator_routes:` — operator events (storms).
    Operator,
}

/// A route with its inherited settings resolved.
#[derive(Clone, Debug)]
pub struct Route {
    pub id: String,
    /// Where it is in the file (`route.routes[0]`).
    pub path: String,
    /// Line of its `id`.
    pub line: Option<usize>,
    pub tree: Tree,
    /// The tenant whose section it is in (its own `tenant:` or an ancestor's).
    pub tenant: Option<String>,
    pub matchers: Matchers,
    pub receiver: String,
    pub group_by: Vec<GroupField>,
    pub repeat_interval: Duration,
    pub mute_time_intervals: Vec<String>,
    pub active_time_intervals: Vec<String>,
    pub continue_matching: bool,
    /// Its children, in file order. Set only by the compiler, together with `children`
    /// (the index of their positions), so the two never disagree.
    pub(super) routes: Vec<Route>,
    /// Which of `routes` an event of a given tenant can reach (see [`ChildIndex`]).
    pub(super) children: ChildIndex,
}

/// The positions of a route's children by the tenant section they are in, so an event
/// tries only the children it can match (its tenant's and those of no section) instead of
/// every tenant's: a file with a section per tenant routes in time independent of the
/// number of tenants. Positions keep the file's order, which decides the first match.
#[derive(Clone, Debug, Default)]
pub(super) struct ChildIndex {
    by_tenant: HashMap<String, Vec<usize>>,
    /// Children outside any tenant section (they check the tenant themselves).
    open: Vec<usize>,
}

impl ChildIndex {
    pub(super) fn new(children: &[Route]) -> Self {
        let mut index = ChildIndex::default();
        for (i, child) in children.iter().enumerate() {
            match &child.tenant {
                Some(t) => index.by_tenant.entry(t.clone()).or_default().push(i),
                None => index.open.push(i),
            }
        }
        index
    }

    /// The positions `tenant`'s events may match, in order.
    fn for_tenant<'a>(&'a self, tenant: &str) -> impl Iterator<Item = usize> + 'a {
        let own = self.by_tenant.get(tenant).map_or(&[][..], Vec::as_slice);
        merge_sorted(own, &self.open)
    }
}

/// The union of two ascending position lists, ascending.
fn merge_sorted<'a>(a: &'a [usize], b: &'a [usize]) -> impl Iterator<Item = usize> + 'a {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || match (a.get(i), b.get(j)) {
        (Some(&x), Some(&y)) if x <= y => {
            i += 1;
            Some(x)
        }
        (_, Some(&y)) => {
            j += 1;
            Some(y)
        }
        (Some(&x), None) => {
            i += 1;
            Some(x)
        }
        (None, None) => None,
    })
}

/// Why a matched route delivers nothing right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mute {
    /// One of its `mute_time_intervals` is active.
    During(String),
    /// None of its `active_time_intervals` is active.
    Outside(Vec<String>),
}

impl fmt::Display for Mute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mute::During(name) => write!(f, "muted: time interval {name} is active"),
            Mute::Outside(names) => {
                write!(
                    f,
                    "muted: outside active time intervals {}",
                    names.join(", ")
                )
            }
        }
    }
}

/// One delivery decision for an event: which route took it and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMatch {
    pub route_id: String,
    /// Route ids from the top route down to this one.
    pub trail: Vec<String>,
    pub receiver: String,
    /// `route_id:{tenant="acme",server="weather"}`: the tenant, then the `group_by` fields.
    pub group_key: String,
    pub repeat_interval: Duration,
    /// Set when a time interval mutes the route at the routing time.
    pub muted: Option<Mute>,
}

impl RouteMatch {
    pub fn is_muted(&self) -> bool {
        self.muted.is_some()
    }
}

impl Route {
    /// Whether the event may reach this route (tree and tenant) and its matchers hold.
    pub fn matches(&self, event: &AlertEvent) -> bool {
        let operator_event = event.tenant == OPERATOR_TENANT;
        let tree_ok = operator_event == (self.tree == Tree::Operator);
        let tenant_ok = self.tenant.as_deref().is_none_or(|t| t == event.tenant);
        tree_ok && tenant_ok && self.matchers.matches(event)
    }

    /// The routes that take `event`, in order, each with its trail of ids (empty when
    /// this route does not match).
    pub fn matching<'a>(&'a self, event: &AlertEvent) -> Vec<(Vec<&'a str>, &'a Route)> {
        let mut out = Vec::new();
        self.collect(event, &mut Vec::new(), &mut out);
        out
    }

    fn collect<'a>(
        &'a self,
        event: &AlertEvent,
        trail: &mut Vec<&'a str>,
        out: &mut Vec<(Vec<&'a str>, &'a Route)>,
    ) -> bool {
        if !self.matches(event) {
            return false;
        }
        trail.push(&self.id);
        let before = out.len();
        for i in self.children.for_tenant(&event.tenant) {
            let child = &self.routes[i];
            if child.collect(event, trail, out) && !child.continue_matching {
                break;
            }
        }
        if out.len() == before {
            out.push((trail.clone(), self));
        }
        trail.pop();
        true
    }

    /// This route and every route under it, depth first.
    pub fn walk(&self) -> Vec<&Route> {
        let mut out = vec![self];
        for child in &self.routes {
            out.extend(child.walk());
        }
        out
    }

    /// The group key of `event` on this route. The tenant always comes first, so a group
    /// never holds two tenants' incidents.
    pub fn group_key(&self, event: &AlertEvent) -> String {
        let tenant = GroupField::Field(Field::Tenant);
        let fields = std::iter::once(&tenant).chain(self.group_by.iter().filter(|f| **f != tenant));
        let labels: Vec<String> = fields
            .map(|f| format!("{f}={:?}", f.value(event)))
            .collect();
        format!("{}:{{{}}}", self.id, labels.join(","))
    }

    /// Whether a time interval mutes the route at `now` (`lookup` finds intervals by name;
    /// names were checked when the file was loaded).
    pub fn mute_at<'t>(
        &self,
        now: DateTime<Utc>,
        lookup: impl Fn(&str) -> Option<&'t TimeInterval>,
    ) -> Option<Mute> {
        let active = |name: &String| lookup(name).is_some_and(|i| i.contains(now));
        if let Some(name) = self.mute_time_intervals.iter().find(|n| active(n)) {
            return Some(Mute::During(name.clone()));
        }
        if !self.active_time_intervals.is_empty() && !self.active_time_intervals.iter().any(active)
        {
            return Some(Mute::Outside(self.active_time_intervals.clone()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mcpulse_schemas::{AlertStatus, Severity};

    use crate::routes::RoutesFile;
    use crate::routes::testutil::{at, event, storm};

    const RECEIVERS: &str = "receivers:
  - {name: default, webhook: {url: http://d}}
  - {name: pager, pagerduty: {routing_key: k}}
  - {name: chat, discord: {webhook_url: http://c}}
  - {name: mail, email: {to: [a@example.com]}}
  - {name: acme-chat, tenant: acme, discord: {webhook_url: http://a}}
  - {name: noc, webhook: {url: http://n}}
";

    fn file(routes: &str) -> RoutesFile {
        RoutesFile::parse(&format!("{RECEIVERS}{routes}"), |_| None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// (route id, receiver) of each match.
    fn routed(f: &RoutesFile, e: &mcpulse_schemas::AlertEvent) -> Vec<(String, String)> {
        f.route(e, at("2026-01-14T10:00:00Z"))
            .into_iter()
            .map(|m| (m.route_id, m.receiver))
            .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn first_matching_child_wins_and_the_parent_catches_the_rest() {
        let f = file(
            "route:
  id: root
  receiver: default
  routes:
    - {id: p1, matchers: [severity = P1], receiver: pager}
    - {id: p1-too, matchers: [severity = P1], receiver: chat}
    - {id: weather, matchers: [server = weather], receiver: chat}
",
        );
        let mut e = event("acme", "weather");
        assert_eq!(routed(&f, &e), pairs(&[("p1", "pager")]));
        e.severity = Severity::P3;
        assert_eq!(routed(&f, &e), pairs(&[("weather", "chat")]));
        e.server = Some("files".into());
        assert_eq!(routed(&f, &e), pairs(&[("root", "default")]));
    }

    #[test]
    fn tenant_sections_and_open_routes_keep_the_file_order() {
        // Sections of two tenants interleaved with routes of no section: an event tries
        // its tenant's sections and the open routes in file order, never another
        // tenant's section.
        let f = RoutesFile::parse(
            "receivers:
  - {name: default, webhook: {url: http://d}}
  - {name: noc, webhook: {url: http://n}}
  - {name: acme-hook, tenant: acme, webhook: {url: http://a}}
  - {name: beta-hook, tenant: beta, webhook: {url: http://b}}
route:
  id: root
  receiver: default
  routes:
    - {id: beta-all, tenant: beta, receiver: beta-hook, continue: true}
    - {id: p1-open, matchers: [severity = P1], receiver: noc, continue: true}
    - {id: acme-all, tenant: acme, receiver: acme-hook, continue: true}
    - {id: weather-open, matchers: [server = weather], receiver: noc}
    - {id: acme-late, tenant: acme, receiver: acme-hook}
",
            |_| None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut e = event("acme", "weather");
        assert_eq!(
            routed(&f, &e),
            pairs(&[
                ("p1-open", "noc"),
                ("acme-all", "acme-hook"),
                ("weather-open", "noc")
            ])
        );
        e.server = Some("files".into());
        assert_eq!(
            routed(&f, &e),
            pairs(&[
                ("p1-open", "noc"),
                ("acme-all", "acme-hook"),
                ("acme-late", "acme-hook")
            ])
        );
        e.tenant = "beta".into();
        assert_eq!(
            routed(&f, &e),
            pairs(&[("beta-all", "beta-hook"), ("p1-open", "noc")])
        );
        e.tenant = "gamma".into();
        e.severity = Severity::P3;
        assert_eq!(routed(&f, &e), pairs(&[("root", "default")]));
    }

    #[test]
    fn merge_keeps_ascending_order() {
        let merged: Vec<usize> = super::merge_sorted(&[0, 3, 4, 9], &[1, 2, 5]).collect();
        assert_eq!(merged, vec![0, 1, 2, 3, 4, 5, 9]);
        assert_eq!(super::merge_sorted(&[], &[]).count(), 0);
    }

    #[test]
    fn continue_keeps_trying_siblings() {
        let f = file(
            "route:
  id: root
  receiver: default
  routes:
    - {id: all-to-mail, receiver: mail, continue: true}
    - {id: p1, matchers: [severity = P1], receiver: pager, continue: true}
    - {id: weather, matchers: [server = weather], receiver: chat}
    - {id: never-reached, receiver: noc}
",
        );
        let e = event("acme", "weather");
        assert_eq!(
            routed(&f, &e),
            pairs(&[
                ("all-to-mail", "mail"),
                ("p1", "pager"),
                ("weather", "chat")
            ])
        );
        // Only continue routes matched: the search reaches the catch-all.
        let e = event("acme", "files");
        assert_eq!(
            routed(&f, &e),
            pairs(&[
                ("all-to-mail", "mail"),
                ("p1", "pager"),
                ("never-reached", "noc")
            ])
        );
    }

    #[test]
    fn depth_first_with_a_parent_catching_what_its_children_do_not() {
        let f = file(
            "route:
  id: root
  receiver: default
  routes:
    - id: p1
      matchers: [severity = P1]
      receiver: pager
      routes:
        - {id: p1-weather, matchers: [server = weather], receiver: chat}
        - {id: p1-files, matchers: [server = files], receiver: mail}
    - {id: fallback, receiver: noc}
",
        );
        assert_eq!(
            routed(&f, &event("acme", "weather")),
            pairs(&[("p1-weather", "chat")])
        );
        assert_eq!(
            routed(&f, &event("acme", "search")),
            pairs(&[("p1", "pager")])
        );
        let mut p2 = event("acme", "weather");
        p2.severity = Severity::P2;
        assert_eq!(routed(&f, &p2), pairs(&[("fallback", "noc")]));
        let m = &f.route(&event("acme", "files"), at("2026-01-14T10:00:00Z"))[0];
        assert_eq!(m.trail, ["root", "p1", "p1-files"]);
    }

    #[test]
    fn settings_are_inherited_unless_set() {
        let f = file(
            "route:
  id: root
  receiver: default
  group_by: [server]
  repeat_interval: 1h
  mute_time_intervals: [weekends]
  routes:
    - id: a
      matchers: [severity = P1]
      routes:
        - id: b
          matchers: [server = weather]
          receiver: pager
          group_by: [class, region]
          repeat_interval: 10m
          mute_time_intervals: []
time_intervals:
  - name: weekends
    intervals: [{weekdays: [\"saturday:sunday\"]}]
",
        );
        let a = f.route_by_id("a").unwrap();
        assert_eq!(a.receiver, "default");
        assert_eq!(a.repeat_interval, Duration::from_secs(3600));
        assert_eq!(a.mute_time_intervals, ["weekends"]);
        let b = f.route_by_id("b").unwrap();
        assert_eq!(b.repeat_interval, Duration::from_secs(600));
        assert!(b.mute_time_intervals.is_empty());
        assert_eq!(f.route_tree().repeat_interval, Duration::from_secs(3600));

        let e = event("acme", "weather");
        let saturday = at("2026-01-17T10:00:00Z");
        let m = f.route(&e, saturday);
        assert_eq!(m[0].route_id, "b");
        assert_eq!(
            m[0].group_key,
            r#"b:{tenant="acme",class="unreachable",region="eu-west,us-east"}"#
        );
        assert!(!m[0].is_muted(), "b cleared the inherited mute");
        let mut other = e.clone();
        other.server = Some("files".into());
        let m = f.route(&other, saturday);
        assert_eq!(m[0].route_id, "a");
        assert_eq!(m[0].group_key, r#"a:{tenant="acme",server="files"}"#);
        assert_eq!(m[0].muted, Some(super::Mute::During("weekends".into())));
        assert!(!f.route(&other, at("2026-01-14T10:00:00Z"))[0].is_muted());
    }

    #[test]
    fn default_repeat_interval_and_group_key_always_hold_the_tenant() {
        let f = file("route: {id: root, receiver: default}\n");
        let m = &f.route(&event("acme", "weather"), at("2026-01-14T10:00:00Z"))[0];
        assert_eq!(m.repeat_interval, Duration::from_secs(4 * 3600));
        assert_eq!(m.group_key, r#"root:{tenant="acme"}"#);
        let f = file("route: {id: root, receiver: default, group_by: [tenant, incident]}\n");
        let m = &f.route(&event("acme", "weather"), at("2026-01-14T10:00:00Z"))[0];
        assert_eq!(
            m.group_key,
            r#"root:{tenant="acme",incident="mcpulse/acme/weather/unreachable"}"#
        );
    }

    #[test]
    fn active_time_intervals_mute_outside_them_across_time_zones() {
        let f = file(
            "route:
  id: root
  receiver: default
  routes:
    - id: paris-office
      receiver: chat
      active_time_intervals: [paris-hours, tokyo-hours]
time_intervals:
  - name: paris-hours
    time_zone: Europe/Paris
    intervals: [{weekdays: [\"monday:friday\"], times: [{start_time: \"09:00\", end_time: \"18:00\"}]}]
  - name: tokyo-hours
    time_zone: Asia/Tokyo
    intervals: [{weekdays: [\"monday:friday\"], times: [{start_time: \"09:00\", end_time: \"18:00\"}]}]
",
        );
        let e = event("acme", "weather");
        let muted = |t: &str| f.route(&e, at(t))[0].muted.clone();
        assert_eq!(muted("2026-01-14T10:00:00Z"), None); // 11:00 Paris
        assert_eq!(muted("2026-01-14T01:00:00Z"), None); // 10:00 Tokyo
        assert_eq!(
            muted("2026-01-14T20:00:00Z"), // 21:00 Paris, 05:00 Tokyo
            Some(super::Mute::Outside(vec![
                "paris-hours".into(),
                "tokyo-hours".into()
            ]))
        );
        // 17:30 UTC on 2026-03-27 is 18:30 Paris (winter), on 2026-03-30 19:30 (summer).
        assert!(muted("2026-03-27T16:30:00Z").is_none());
        assert!(muted("2026-03-30T16:30:00Z").is_some());
    }

    const TENANTS: &str = "route:
  id: root
  receiver: default
  routes:
    - id: acme
      tenant: acme
      receiver: acme-chat
      routes:
        - id: acme-all-tenants
          matchers: ['tenant =~ \".*\"']
          receiver: pager
    - id: everyone-p1
      matchers: [severity = P1]
      receiver: noc
operator_routes:
  id: operator
  receiver: mail
  routes:
    - {id: storms, matchers: [class = storm], receiver: noc}
";

    #[test]
    fn a_tenant_section_only_sees_its_tenant_whatever_its_matchers() {
        let f = file(TENANTS);
        assert_eq!(
            routed(&f, &event("acme", "weather")),
            pairs(&[("acme-all-tenants", "pager")])
        );
        // `tenant =~ ".*"` inside acme's section does not see globex.
        assert_eq!(
            routed(&f, &event("globex", "weather")),
            pairs(&[("everyone-p1", "noc")])
        );
        let mut p3 = event("globex", "weather");
        p3.severity = Severity::P3;
        assert_eq!(routed(&f, &p3), pairs(&[("root", "default")]));
        // Even asked directly, a route of acme's section refuses globex's events.
        let inner = f.route_by_id("acme-all-tenants").unwrap();
        assert!(inner.matches(&event("acme", "x")));
        assert!(!inner.matches(&event("globex", "x")));
        assert!(inner.matching(&event("globex", "x")).is_empty());
    }

    #[test]
    fn storms_reach_operator_routes_only() {
        let f = file(TENANTS);
        assert_eq!(routed(&f, &storm()), pairs(&[("storms", "noc")]));
        let mut other_operator_event = storm();
        other_operator_event.class = "budget".into();
        assert_eq!(
            routed(&f, &other_operator_event),
            pairs(&[("operator", "mail")])
        );
        // No route of the tenant tree matches a storm, not even its top route…
        for route in f.route_tree().walk() {
            assert!(!route.matches(&storm()), "{} matched a storm", route.id);
        }
        // …and no operator route matches a tenant's incident.
        for route in f.operator_tree().unwrap().walk() {
            assert!(!route.matches(&event("acme", "weather")), "{}", route.id);
        }
        // Without operator routes, storms go nowhere.
        let f = file("route: {id: root, receiver: default}\n");
        assert!(f.route(&storm(), at("2026-01-14T10:00:00Z")).is_empty());
    }

    #[test]
    fn a_tenant_owned_file_routes_nothing_of_other_tenants() {
        let f = file("route: {id: acme-root, tenant: acme, receiver: acme-chat}\n");
        assert_eq!(
            routed(&f, &event("acme", "w")),
            pairs(&[("acme-root", "acme-chat")])
        );
        assert!(routed(&f, &event("globex", "w")).is_empty());
        assert!(routed(&f, &storm()).is_empty());
    }

    #[test]
    fn every_field_can_be_matched() {
        let f = file(
            "route:
  id: root
  receiver: default
  routes:
    - id: all
      receiver: pager
      matchers:
        - tenant = acme
        - server != files
        - {severity: [P1, P2]}
        - class =~ \"unre.*\"
        - scope = global
        - action = trigger
        - status !~ \"resolved|suppressed\"
        - region = us-east
        - labels.team = \"\"
",
        );
        let e = event("acme", "weather");
        assert_eq!(routed(&f, &e), pairs(&[("all", "pager")]));
        let mut resolved = e.clone();
        resolved.status = AlertStatus::Resolved;
        assert_eq!(routed(&f, &resolved), pairs(&[("root", "default")]));
        let mut eu_only = e.clone();
        eu_only.regions = vec!["eu-west".into()];
        assert_eq!(routed(&f, &eu_only), pairs(&[("root", "default")]));
    }
}

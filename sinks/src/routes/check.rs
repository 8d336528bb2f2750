//! `mcpulse routes check`: what a routes file holds and what in it looks wrong though it
//! parses (a route that can never match, an unused receiver, storms with no route…).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use super::RoutesFile;
use super::fields::Field;
use super::matcher::{MatchOp, Matcher};
use super::tree::Route;

/// Something that parses but is probably a mistake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub line: Option<usize>,
    /// The field it is about (`route.routes[2]`).
    pub path: String,
    pub message: String,
}

/// What `routes check` prints.
#[derive(Clone, Debug)]
pub struct CheckReport {
    pub file: String,
    /// Routes in the tenant tree (`route:`), the top one included.
    pub routes: usize,
    /// Routes in the operator tree (`operator_routes:`).
    pub operator_routes: usize,
    pub receivers: usize,
    /// Integration blocks over all receivers.
    pub integrations: usize,
    pub time_intervals: usize,
    /// Tenants with their own section, sorted.
    pub tenants: Vec<String>,
    pub warnings: Vec<Warning>,
    secrets: Vec<String>,
}

/// Describes `file` and lists its warnings.
pub fn check(file: &RoutesFile) -> CheckReport {
    let mut warnings = Vec::new();
    never_matching(file.route_tree(), &mut warnings);
    match file.operator_tree() {
        Some(tree) => never_matching(tree, &mut warnings),
        None => warnings.push(Warning {
            line: None,
            path: "operator_routes".into(),
            message: "missing: storm notices (tenant _operator) have no route and will not \
                      be delivered"
                .into(),
        }),
    }
    unused_and_shared(file, &mut warnings);
    CheckReport {
        file: file.file().to_string(),
        routes: file.route_tree().walk().len(),
        operator_routes: file.operator_tree().map_or(0, |t| t.walk().len()),
        receivers: file.receivers().len(),
        integrations: file.receivers().iter().map(|r| r.integrations.len()).sum(),
        time_intervals: file.time_intervals().len(),
        tenants: file
            .routes()
            .iter()
            .filter_map(|r| r.tenant.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        warnings,
        secrets: file.secrets().to_vec(),
    }
}

/// Warns about each child route that can never match (and not about its descendants).
fn never_matching(route: &Route, warnings: &mut Vec<Warning>) {
    for (j, child) in route.routes.iter().enumerate() {
        let reason = contradiction(child).or_else(|| {
            route.routes[..j]
                .iter()
                .find(|earlier| shadows(earlier, child))
                .map(|earlier| {
                    format!(
                        "route {:?}{} before it takes every event this one could get and has \
                         no `continue: true`",
                        earlier.id,
                        earlier
                            .line
                            .map(|l| format!(" (line {l})"))
                            .unwrap_or_default()
                    )
                })
        });
        match reason {
            Some(reason) => warnings.push(Warning {
                line: child.line,
                path: child.path.clone(),
                message: format!("route {:?} can never match: {reason}", child.id),
            }),
            None => never_matching(child, warnings),
        }
    }
}

/// Whether `earlier` (a sibling before `later`) takes every event `later` could match:
/// it does not continue, sees at least `later`'s tenants, and its matchers are a subset
/// of `later`'s.
fn shadows(earlier: &Route, later: &Route) -> bool {
    let scope_covers = earlier.tenant.is_none() || earlier.tenant == later.tenant;
    !earlier.continue_matching
        && scope_covers
        && contradiction(earlier).is_none()
        && earlier
            .matchers
            .iter()
            .all(|m| later.matchers.iter().any(|n| n == m))
}

/// Why the route's own matchers can never all hold, if they cannot: on one single-valued
/// field with a finite set of candidates (an enumerated field, or the values of an
/// equality), no candidate satisfies every matcher of that field.
fn contradiction(route: &Route) -> Option<String> {
    let mut by_field: BTreeMap<&Field, Vec<&Matcher>> = BTreeMap::new();
    for m in route.matchers.iter().filter(|m| !m.field.is_multi_valued()) {
        by_field.entry(&m.field).or_default().push(m);
    }
    by_field.into_iter().find_map(|(field, matchers)| {
        let candidates: Vec<&str> = match field.allowed_values() {
            Some(values) => values.to_vec(),
            None => matchers.iter().find_map(|m| match &m.op {
                MatchOp::Equal(v) => Some(vec![v.as_str()]),
                MatchOp::OneOf(vs) => Some(vs.iter().map(String::as_str).collect()),
                _ => None,
            })?,
        };
        let possible = candidates
            .iter()
            .any(|v| matchers.iter().all(|m| m.matches_value(v)));
        (!possible).then(|| {
            let shown: Vec<String> = matchers.iter().map(|m| format!("`{m}`")).collect();
            format!("no {field} satisfies {}", shown.join(" and "))
        })
    })
}

fn unused_and_shared(file: &RoutesFile, warnings: &mut Vec<Warning>) {
    let routes = file.routes();
    let used_receivers: HashSet<&str> = routes.iter().map(|r| r.receiver.as_str()).collect();
    for (i, receiver) in file.receivers().iter().enumerate() {
        let path = format!("receivers[{i}]");
        if !used_receivers.contains(receiver.name.as_str()) {
            warnings.push(Warning {
                line: receiver.line,
                path,
                message: format!("receiver {:?} is not used by any route", receiver.name),
            });
            continue;
        }
        let tenants: BTreeSet<&str> = routes
            .iter()
            .filter(|r| r.receiver == receiver.name)
            .filter_map(|r| r.tenant.as_deref())
            .collect();
        if tenants.len() > 1 {
            let tenants: Vec<&str> = tenants.into_iter().collect();
            warnings.push(Warning {
                line: receiver.line,
                path,
                message: format!(
                    "receiver {:?} gets the incidents of several tenants ({}): give each \
                     tenant its own receiver, with `tenant:` set",
                    receiver.name,
                    tenants.join(", ")
                ),
            });
        }
    }
    let used_intervals: HashSet<&str> = routes
        .iter()
        .flat_map(|r| r.mute_time_intervals.iter().chain(&r.active_time_intervals))
        .map(String::as_str)
        .collect();
    for (i, interval) in file.time_intervals().iter().enumerate() {
        let path = format!("time_intervals[{i}]");
        let (used, empty) = (
            used_intervals.contains(interval.name.as_str()),
            interval.intervals.is_empty(),
        );
        let message = match (used, empty) {
            (false, _) => format!("time interval {:?} is not used by any route", interval.name),
            (true, true) => format!(
                "time interval {:?} has no intervals: it is never active (it never mutes, \
                 and as an active interval it always mutes)",
                interval.name
            ),
            (true, false) => continue,
        };
        warnings.push(Warning {
            line: file.locate(&path),
            path,
            message,
        });
    }
}

impl Warning {
    /// `file:line: warning: path: message`, as compilers print them.
    pub fn display_in(&self, file: &str) -> String {
        let line = self.line.map(|l| format!(":{l}")).unwrap_or_default();
        format!("{file}{line}: warning: {}: {}", self.path, self.message)
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenants = match self.tenants.is_empty() {
            true => "none".to_string(),
            false => self.tenants.join(", "),
        };
        let mut text = format!(
            "{}: ok — {} routes, {} operator routes, {} receivers ({} integrations), {} time \
             intervals; tenant sections: {}\n",
            self.file,
            self.routes,
            self.operator_routes,
            self.receivers,
            self.integrations,
            self.time_intervals,
            tenants
        );
        for w in &self.warnings {
            text.push_str(&w.display_in(&self.file));
            text.push('\n');
        }
        f.write_str(&mcpulse_schemas::env::scrub(text, &self.secrets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(yaml: &str) -> CheckReport {
        check(&RoutesFile::parse(yaml, |_| Some("s3cr3t-value".into())).unwrap())
    }

    const RECEIVERS: &str = "receivers:\n  - name: a\n    webhook: {url: \"${HOOK}\"}\n  - name: b\n    email: {to: [x@example.com]}\n";

    #[test]
    fn counts_and_a_clean_file_has_no_warnings() {
        let r = report(&format!(
            "{RECEIVERS}route:\n  id: root\n  receiver: a\n  routes:\n    - {{id: acme, tenant: acme, receiver: b}}\noperator_routes: {{id: ops, receiver: a}}\n"
        ));
        assert_eq!(
            (r.routes, r.operator_routes, r.receivers, r.integrations),
            (2, 1, 2, 2)
        );
        assert_eq!(r.tenants, ["acme"]);
        assert!(r.warnings.is_empty(), "{r}");
        let text = r.to_string();
        assert!(
            text.starts_with("routes.yaml: ok — 2 routes, 1 operator routes"),
            "{text}"
        );
        assert!(!text.contains("s3cr3t"), "{text}");
    }

    #[test]
    fn warns_about_routes_that_can_never_match() {
        let r = report(&format!(
            "{RECEIVERS}route:
  id: root
  receiver: a
  routes:
    - id: p1-and-p2
      matchers: [severity = P1, severity = P2]
      receiver: b
    - id: server-conflict
      matchers: [server = x, server = y]
    - id: catch-p1
      matchers: [severity = P1]
    - id: shadowed
      matchers: [severity = P1, server = web]
    - id: acme
      tenant: acme
      routes:
        - id: impossible-regex
          matchers: ['severity =~ \"P[5-9]\"']
    - id: catch-all
    - id: after-catch-all
      matchers: [class = tls]
operator_routes: {{id: ops, receiver: a}}
"
        ));
        let by_route: Vec<(&str, usize)> = r
            .warnings
            .iter()
            .map(|w| (w.message.split('"').nth(1).unwrap(), w.line.unwrap()))
            .collect();
        assert_eq!(
            by_route,
            [
                ("p1-and-p2", 10),
                ("server-conflict", 13),
                ("shadowed", 17),
                ("impossible-regex", 22),
                ("after-catch-all", 25),
            ],
            "{r}"
        );
        let text = r.to_string();
        assert!(
            text.contains("no severity satisfies `severity = P1` and `severity = P2`"),
            "{text}"
        );
        assert!(
            text.contains("route \"catch-p1\" (line 15) before it"),
            "{text}"
        );
        assert!(
            text.contains("routes.yaml:10: warning: route.routes[0]: route \"p1-and-p2\""),
            "{text}"
        );
    }

    #[test]
    fn warns_about_unused_shared_and_missing_things() {
        let r = report(&format!(
            "{RECEIVERS}  - name: unused\n    discord: {{webhook_url: x}}
route:
  id: root
  receiver: a
  mute_time_intervals: [never]
  routes:
    - {{id: acme, tenant: acme, receiver: b}}
    - {{id: globex, tenant: globex, receiver: b}}
time_intervals:
  - name: never
  - name: spare
    intervals: [{{}}]
"
        ));
        let text = r.to_string();
        for want in [
            "operator_routes: missing: storm notices",
            "receiver \"unused\" is not used",
            "receiver \"b\" gets the incidents of several tenants (acme, globex)",
            "time interval \"never\" has no intervals",
            "time interval \"spare\" is not used",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
        assert_eq!(r.warnings.len(), 5, "{text}");
    }
}

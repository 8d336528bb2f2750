//! Turns the file as written ([`FileConfig`]) into a [`RoutesFile`]: checks names and
//! references, applies inheritance, and enforces tenant isolation. Every error names the
//! line and field it is about.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mcpulse_schemas::alert::OPERATOR_TENANT;
use mcpulse_schemas::topics::valid_tenant_id;

use super::config::{FileConfig, ReceiverConfig, RouteConfig};
use super::error::{ErrorKind, RoutesError};
use super::fields::{Field, GroupField};
use super::locate::Lines;
use super::matcher::MatchOp;
use super::receiver::{Integration, IntegrationKind, Receiver};
use super::time_interval::TimeInterval;
use super::tree::{ChildIndex, Route, Tree};

/// Alertmanager's default `repeat_interval`.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);

/// What [`compile`] produces.
pub(crate) struct Compiled {
    pub receivers: Vec<Receiver>,
    pub route: Route,
    pub operator_routes: Option<Route>,
    pub time_intervals: Vec<TimeInterval>,
}

/// Checks and resolves `config`; `source` is the file's text (for lines), `file` its name.
pub(crate) fn compile(
    file: &str,
    source: &str,
    config: FileConfig,
) -> Result<Compiled, RoutesError> {
    let mut c = Compiler {
        file,
        lines: Lines::new(source),
        receivers: HashMap::new(),
        intervals: HashSet::new(),
        route_ids: HashMap::new(),
    };
    let receivers = config
        .receivers
        .into_iter()
        .enumerate()
        .map(|(i, r)| c.receiver(i, r))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, interval) in config.time_intervals.iter().enumerate() {
        let path = format!("time_intervals[{i}].name");
        c.check_name(&path, "time interval name", &interval.name)?;
        if !c.intervals.insert(interval.name.clone()) {
            return Err(c.error(
                path,
                ErrorKind::DuplicateTimeInterval(interval.name.clone()),
            ));
        }
    }
    let route = c.route(config.route, "route".into(), None, Tree::Tenants)?;
    let operator_routes = config
        .operator_routes
        .map(|r| c.route(r, "operator_routes".into(), None, Tree::Operator))
        .transpose()?;
    Ok(Compiled {
        receivers,
        route,
        operator_routes,
        time_intervals: config.time_intervals,
    })
}

struct Compiler<'a> {
    file: &'a str,
    /// The file's lines, for the line an error names.
    lines: Lines<'a>,
    /// Receiver name → its owning tenant.
    receivers: HashMap<String, Option<String>>,
    intervals: HashSet<String>,
    /// Route id → line of its first definition.
    route_ids: HashMap<String, usize>,
}

/// What a route passes down to its children.
struct Inherited {
    receiver: String,
    group_by: Vec<GroupField>,
    repeat_interval: Duration,
    mute: Vec<String>,
    active: Vec<String>,
    /// The tenant section it is in, and the id of the route that opened it.
    owner: Option<Owner>,
}

/// A tenant section: the tenant and the id of the route that opened it.
#[derive(Clone)]
struct Owner {
    tenant: String,
    route: String,
}

impl Compiler<'_> {
    fn error(&self, path: String, kind: ErrorKind) -> RoutesError {
        RoutesError {
            file: self.file.to_string(),
            line: self.lines.line_of(&path),
            path,
            kind,
        }
    }

    fn check_name(&self, path: &str, what: &'static str, name: &str) -> Result<(), RoutesError> {
        let ok = (1..=128).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@/".contains(&b));
        if ok {
            return Ok(());
        }
        Err(self.error(
            path.to_string(),
            ErrorKind::BadName {
                what,
                name: name.to_string(),
            },
        ))
    }

    fn check_tenant(&self, path: String, tenant: &str) -> Result<(), RoutesError> {
        if tenant == OPERATOR_TENANT {
            return Err(self.error(path, ErrorKind::OperatorTenant(tenant.to_string())));
        }
        if !valid_tenant_id(tenant) {
            return Err(self.error(path, ErrorKind::BadTenant(tenant.to_string())));
        }
        Ok(())
    }

    fn receiver(&mut self, index: usize, config: ReceiverConfig) -> Result<Receiver, RoutesError> {
        let at = format!("receivers[{index}]");
        self.check_name(&format!("{at}.name"), "receiver name", &config.name)?;
        if let Some(tenant) = &config.tenant {
            self.check_tenant(format!("{at}.tenant"), tenant)?;
        }
        if self.receivers.contains_key(&config.name) {
            let kind = ErrorKind::DuplicateReceiver(config.name.clone());
            return Err(self.error(format!("{at}.name"), kind));
        }
        self.receivers
            .insert(config.name.clone(), config.tenant.clone());
        let kinds = [
            (IntegrationKind::PagerDuty, config.pagerduty),
            (IntegrationKind::OpsGenie, config.opsgenie),
            (IntegrationKind::Discord, config.discord),
            (IntegrationKind::Email, config.email),
            (IntegrationKind::Webhook, config.webhook),
        ];
        let mut integrations = Vec::new();
        for (kind, blocks) in kinds {
            let Some(blocks) = blocks else { continue };
            for (j, block) in blocks.blocks.into_iter().enumerate() {
                let path = match blocks.listed {
                    true => format!("{at}.{kind}[{j}]"),
                    false => format!("{at}.{kind}"),
                };
                integrations.push(Integration {
                    kind,
                    config: block,
                    line: self.lines.line_of(&path),
                    path,
                });
            }
        }
        if integrations.is_empty() {
            return Err(self.error(at, ErrorKind::EmptyReceiver));
        }
        Ok(Receiver {
            line: self.lines.line_of(&format!("{at}.name")),
            name: config.name,
            tenant: config.tenant,
            integrations,
        })
    }

    fn route(
        &mut self,
        config: RouteConfig,
        path: String,
        parent: Option<&Inherited>,
        tree: Tree,
    ) -> Result<Route, RoutesError> {
        let at = |field: &str| format!("{path}.{field}");
        self.check_name(&at("id"), "route id", &config.id)?;
        let line = self.lines.line_of(&at("id"));
        if let Some(first_line) = self.route_ids.get(&config.id) {
            let kind = ErrorKind::DuplicateRouteId {
                id: config.id.clone(),
                first_line: *first_line,
            };
            return Err(self.error(at("id"), kind));
        }
        self.route_ids.insert(config.id.clone(), line.unwrap_or(0));
        if parent.is_none() {
            if !config.matchers.is_empty() {
                return Err(self.error(at("matchers"), ErrorKind::TopRouteMatchers));
            }
            if config.continue_matching {
                return Err(self.error(at("continue"), ErrorKind::TopRouteContinue));
            }
        }
        let owner = self.owner(&config, &path, parent, tree)?;
        let owner_tenant = owner.as_ref().map(|o| o.tenant.as_str());
        self.check_tenant_matchers(&config, &path, owner_tenant, tree)?;

        let receiver = match (config.receiver, parent) {
            (Some(name), _) => {
                self.check_receiver(at("receiver"), &name, owner_tenant)?;
                name
            }
            (None, Some(p)) => p.receiver.clone(),
            (None, None) => return Err(self.error(at("id"), ErrorKind::MissingReceiver)),
        };
        let repeat_interval = match (config.repeat_interval, parent) {
            (Some(d), _) if d.is_zero() => {
                return Err(self.error(at("repeat_interval"), ErrorKind::ZeroDuration));
            }
            (Some(d), _) => d,
            (None, Some(p)) => p.repeat_interval,
            (None, None) => DEFAULT_REPEAT_INTERVAL,
        };
        for (field, names) in [
            ("mute_time_intervals", &config.mute_time_intervals),
            ("active_time_intervals", &config.active_time_intervals),
        ] {
            for (i, name) in names.iter().flatten().enumerate() {
                if !self.intervals.contains(name) {
                    let kind = ErrorKind::UnknownTimeInterval(name.clone());
                    return Err(self.error(at(&format!("{field}[{i}]")), kind));
                }
            }
        }
        let inherited = Inherited {
            receiver,
            group_by: config
                .group_by
                .unwrap_or_else(|| parent.map(|p| p.group_by.clone()).unwrap_or_default()),
            repeat_interval,
            mute: config
                .mute_time_intervals
                .unwrap_or_else(|| parent.map(|p| p.mute.clone()).unwrap_or_default()),
            active: config
                .active_time_intervals
                .unwrap_or_else(|| parent.map(|p| p.active.clone()).unwrap_or_default()),
            owner,
        };
        let routes = config
            .routes
            .into_iter()
            .enumerate()
            .map(|(i, child)| {
                self.route(child, format!("{path}.routes[{i}]"), Some(&inherited), tree)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let children = ChildIndex::new(&routes);
        Ok(Route {
            id: config.id,
            path,
            line,
            tree,
            tenant: inherited.owner.map(|o| o.tenant),
            matchers: config.matchers,
            receiver: inherited.receiver,
            group_by: inherited.group_by,
            repeat_interval,
            mute_time_intervals: inherited.mute,
            active_time_intervals: inherited.active,
            continue_matching: config.continue_matching,
            routes,
            children,
        })
    }

    /// The tenant section the route is in: its own `tenant:` (checked) or its parent's.
    fn owner(
        &self,
        config: &RouteConfig,
        path: &str,
        parent: Option<&Inherited>,
        tree: Tree,
    ) -> Result<Option<Owner>, RoutesError> {
        let inherited = parent.and_then(|p| p.owner.clone());
        let Some(tenant) = &config.tenant else {
            return Ok(inherited);
        };
        let at = format!("{path}.tenant");
        if tree == Tree::Operator {
            return Err(self.error(at, ErrorKind::TenantInOperatorRoutes));
        }
        self.check_tenant(at.clone(), tenant)?;
        if let Some(outer) = inherited {
            let kind = ErrorKind::NestedTenant {
                owner: outer.tenant,
                owner_route: outer.route,
            };
            return Err(self.error(at, kind));
        }
        Ok(Some(Owner {
            tenant: tenant.clone(),
            route: config.id.clone(),
        }))
    }

    /// Refuses a `tenant` matcher that can never hold where the route is: inside a
    /// tenant's section it is decided by that tenant alone; in the operator tree by
    /// `_operator`; and the tenant tree never sees `_operator`.
    fn check_tenant_matchers(
        &self,
        config: &RouteConfig,
        path: &str,
        owner: Option<&str>,
        tree: Tree,
    ) -> Result<(), RoutesError> {
        let tenant = match (tree, owner) {
            (Tree::Operator, _) => OPERATOR_TENANT,
            (Tree::Tenants, Some(t)) => t,
            (Tree::Tenants, None) => {
                for m in config.matchers.iter().filter(|m| m.field == Field::Tenant) {
                    let only_operator = match &m.op {
                        MatchOp::Equal(v) => v == OPERATOR_TENANT,
                        MatchOp::OneOf(vs) => vs.iter().all(|v| v == OPERATOR_TENANT),
                        _ => false,
                    };
                    if only_operator {
                        let kind = ErrorKind::OperatorTenant(OPERATOR_TENANT.to_string());
                        return Err(self.error(format!("{path}.matchers"), kind));
                    }
                }
                return Ok(());
            }
        };
        for m in config.matchers.iter().filter(|m| m.field == Field::Tenant) {
            if !m.matches_value(tenant) {
                let kind = ErrorKind::TenantMatcherNeverHolds {
                    matcher: m.to_string(),
                    tenant: tenant.to_string(),
                };
                return Err(self.error(format!("{path}.matchers"), kind));
            }
        }
        Ok(())
    }

    fn check_receiver(
        &self,
        path: String,
        name: &str,
        owner: Option<&str>,
    ) -> Result<(), RoutesError> {
        match self.receivers.get(name) {
            None => Err(self.error(path, ErrorKind::UnknownReceiver(name.to_string()))),
            Some(Some(receiver_tenant)) if owner != Some(receiver_tenant.as_str()) => {
                let kind = ErrorKind::ReceiverOfAnotherTenant {
                    receiver: name.to_string(),
                    owner: receiver_tenant.clone(),
                };
                Err(self.error(path, kind))
            }
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::routes::{ErrorKind, RoutesFile};

    const RECEIVERS: &str = "receivers:
  - name: chat
    discord: {webhook_url: \"${DISCORD_URL}\"}
  - name: acme-pager
    tenant: acme
    pagerduty: {routing_key: \"${PD_KEY}\"}
";

    fn env(name: &str) -> Option<String> {
        match name {
            "DISCORD_URL" => Some("https://discord.example/hook/s3cr3t-d".into()),
            "PD_KEY" => Some("s3cr3t-pd-key".into()),
            _ => None,
        }
    }

    /// The error of `RECEIVERS` + `rest`, as displayed.
    fn error(rest: &str) -> String {
        let err = RoutesFile::parse(&format!("{RECEIVERS}{rest}"), env).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("s3cr3t"), "a secret in {text}");
        text
    }

    #[test]
    fn references_must_exist() {
        assert_eq!(
            error(
                "route:\n  id: root\n  receiver: chat\n  routes:\n    - id: a\n      receiver: pager\n"
            ),
            "routes.yaml:12: route.routes[0].receiver: unknown receiver \"pager\""
        );
        assert_eq!(
            error("route:\n  id: root\n  receiver: chat\n  mute_time_intervals: [nights]\n"),
            "routes.yaml:10: route.mute_time_intervals[0]: unknown time interval \"nights\""
        );
        assert_eq!(
            error(
                "route:\n  id: root\n  receiver: chat\n  routes:\n    - id: a\n      active_time_intervals:\n        - x\n"
            ),
            "routes.yaml:13: route.routes[0].active_time_intervals[0]: unknown time interval \"x\""
        );
    }

    #[test]
    fn names_and_ids_are_unique() {
        assert_eq!(
            error(
                "route:\n  id: root\n  receiver: chat\n  routes:\n    - id: a\n    - id: b\n      routes:\n        - id: a\n"
            ),
            "routes.yaml:14: route.routes[1].routes[0].id: duplicate route id \"a\" (also at line 11)"
        );
        assert_eq!(
            error(
                "route: {id: root, receiver: chat}\noperator_routes: {id: root, receiver: chat}\n"
            ),
            "routes.yaml:8: operator_routes.id: duplicate route id \"root\" (also at line 7)"
        );
        let dup = RoutesFile::parse(
            &format!("{RECEIVERS}  - name: chat\n    email: {{to: [a@b.c]}}\nroute: {{id: r, receiver: chat}}\n"),
            env,
        )
        .unwrap_err();
        assert_eq!(dup.kind, ErrorKind::DuplicateReceiver("chat".into()));
        assert_eq!(
            (dup.line, dup.path.as_str()),
            (Some(7), "receivers[2].name")
        );
        assert_eq!(
            error("route: {id: r, receiver: chat}\ntime_intervals:\n  - name: n\n  - name: n\n"),
            "routes.yaml:10: time_intervals[1].name: duplicate time interval \"n\""
        );
        assert!(
            error("route: {id: \"a b\", receiver: chat}\n")
                .contains("route.id: \"a b\" is not a valid route id")
        );
    }

    #[test]
    fn the_top_route_is_a_catch_all_with_a_receiver() {
        assert_eq!(
            error("route:\n  id: root\n"),
            "routes.yaml:8: route.id: the top route needs a receiver (the default of every route under it)"
        );
        assert!(
            error("route:\n  id: root\n  receiver: chat\n  matchers: [severity = P1]\n")
                .starts_with("routes.yaml:10: route.matchers: the top route sees every event")
        );
        assert!(
            error("route:\n  id: root\n  receiver: chat\n  continue: true\n")
                .starts_with("routes.yaml:10: route.continue: the top route cannot")
        );
        assert_eq!(
            error("route:\n  id: root\n  receiver: chat\n  repeat_interval: 0s\n"),
            "routes.yaml:10: route.repeat_interval: must be more than zero"
        );
    }

    #[test]
    fn receivers_need_an_integration_and_a_valid_tenant() {
        let err = RoutesFile::parse(
            "receivers:\n  - name: empty\nroute: {id: r, receiver: empty}\n",
            env,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "routes.yaml:2: receivers[0]: receiver has no integration: add one of pagerduty, opsgenie, discord, email, webhook"
        );
        let err = RoutesFile::parse(
            "receivers:\n  - name: x\n    tenant: _operator\n    webhook: {url: u}\nroute: {id: r, receiver: x}\n",
            env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("routes.yaml:3: receivers[0].tenant: \"_operator\" is reserved"),
            "{err}"
        );
    }

    #[test]
    fn tenant_sections_cannot_nest_or_be_in_operator_routes() {
        assert_eq!(
            error(
                "route:\n  id: root\n  receiver: chat\n  routes:\n    - id: acme\n      tenant: acme\n      routes:\n        - id: sneaky\n          tenant: globex\n"
            ),
            "routes.yaml:15: route.routes[0].routes[0].tenant: this route is already inside tenant \"acme\"'s routes (route \"acme\"): a tenant's routes cannot contain another tenant section"
        );
        assert_eq!(
            error(
                "route: {id: root, receiver: chat}\noperator_routes:\n  id: ops\n  receiver: chat\n  routes:\n    - {id: t, tenant: acme}\n"
            ),
            "routes.yaml:12: operator_routes.routes[0].tenant: operator routes see only operator events (storms): they cannot belong to a tenant"
        );
        assert!(
            error("route: {id: root, receiver: chat, tenant: _operator}\n")
                .contains("route.tenant: \"_operator\" is reserved for operator events")
        );
        assert!(
            error("route: {id: root, receiver: chat, tenant: \"ac/me\"}\n")
                .contains("is not a valid tenant id")
        );
    }

    #[test]
    fn a_tenant_section_cannot_match_another_tenant() {
        let matchers = [
            "\"tenant = globex\"",
            "\"tenant != acme\"",
            "'tenant =~ \"glo.*\"'",
            "{tenant: [globex, initech]}",
        ];
        for matcher in matchers {
            let text = error(&format!(
                "route:\n  id: root\n  receiver: chat\n  routes:\n    - id: acme\n      tenant: acme\n      routes:\n        - id: steal\n          matchers: [{matcher}]\n"
            ));
            assert!(
                text.starts_with("routes.yaml:15: route.routes[0].routes[0].matchers: matcher `")
                    && text.contains("can never hold: this route only ever sees events of tenant \"acme\" (tenant isolation"),
                "{matcher}: {text}"
            );
        }
        // The same matcher that includes acme is allowed (and still only sees acme).
        RoutesFile::parse(
            &format!("{RECEIVERS}route:\n  id: root\n  receiver: chat\n  routes:\n    - id: acme\n      tenant: acme\n      matchers: [\"tenant =~ \\\".*\\\"\"]\n"),
            env,
        )
        .unwrap();
    }

    #[test]
    fn the_tenant_tree_cannot_ask_for_storms_and_operator_routes_cannot_ask_for_tenants() {
        assert!(error("route:\n  id: root\n  receiver: chat\n  routes:\n    - {id: s, matchers: [tenant = _operator]}\n")
            .starts_with("routes.yaml:11: route.routes[0].matchers: \"_operator\" is reserved for operator events"));
        assert!(error("route: {id: root, receiver: chat}\noperator_routes:\n  id: ops\n  receiver: chat\n  routes:\n    - {id: a, matchers: [tenant = acme]}\n")
            .contains("operator_routes.routes[0].matchers: matcher `tenant = acme` can never hold: this route only ever sees events of tenant \"_operator\""));
    }

    #[test]
    fn a_tenant_receiver_serves_only_its_tenant_section() {
        assert_eq!(
            error("route: {id: root, receiver: acme-pager}\n"),
            "routes.yaml:7: route.receiver: receiver \"acme-pager\" belongs to tenant \"acme\": only routes inside that tenant's section (`tenant: acme`) can use it"
        );
        assert!(error("route:\n  id: root\n  receiver: chat\n  routes:\n    - id: globex\n      tenant: globex\n      receiver: acme-pager\n")
            .starts_with("routes.yaml:13: route.routes[0].receiver: receiver \"acme-pager\" belongs to tenant \"acme\""));
        assert!(error("route: {id: root, receiver: chat}\noperator_routes: {id: o, receiver: acme-pager}\n")
            .contains("operator_routes.receiver: receiver \"acme-pager\" belongs to tenant \"acme\""));
        let ok = RoutesFile::parse(
            &format!("{RECEIVERS}route:\n  id: root\n  receiver: chat\n  routes:\n    - id: acme\n      tenant: acme\n      receiver: acme-pager\n      routes: [{{id: p1, matchers: [severity = P1]}}]\n"),
            env,
        )
        .unwrap();
        assert_eq!(ok.route_by_id("p1").unwrap().receiver, "acme-pager");
    }
}

//! `routes.yaml`: which incidents go to which receivers.
//!
//! A routing tree Alertmanager users will recognise, made safer:
//!
//! ```yaml
//! receivers:
//!   - name: oncall
//!     pagerduty: { routing_key: "${PD_KEY}" }   # one or more of pagerduty, opsgenie,
//!   - name: acme-chat                            # discord, email, webhook (each a mapping
//!     tenant: acme                               # or a list of mappings)
//!     discord: { webhook_url: "${ACME_DISCORD}" }
//!   - name: noc
//!     email: { to: ["noc@example.com"] }
//! route:                           # the tenant tree: every tenant's incidents, never storms
//!   id: root                       # stable unique id (groups and state are keyed by it)
//!   receiver: oncall               # required here; inherited below
//!   group_by: [server]             # inherited; the tenant is always in the group key
//!   repeat_interval: 4h            # inherited (default 4h)
//!   routes:
//!     - id: acme
//!       tenant: acme               # acme's section: this subtree only sees acme's events
//!       receiver: acme-chat        # a receiver with `tenant: acme` only works in here
//!       routes:
//!         - id: acme-pages
//!           matchers:              # all must hold: `f = v`, `f != v`, `f =~ "re"`,
//!             - severity =~ "P1|P2"   # `f !~ "re"`, or the list form {f: [v1, v2]}
//!           receiver: oncall
//!           continue: true         # keep trying later siblings
//!           mute_time_intervals: [weekends]        # inherited; [] clears
//!           active_time_intervals: [business-hours] # inherited; [] clears
//! operator_routes:                 # the operator tree: storms (tenant _operator) only
//!   id: operator
//!   receiver: noc
//! time_intervals:
//!   - name: business-hours
//!     time_zone: Europe/Paris
//!     intervals: [{ weekdays: ["monday:friday"], times: [{start_time: "09:00", end_time: "18:00"}] }]
//!   - name: weekends
//!     intervals: [{ weekdays: ["saturday:sunday"] }]
//! ```
//!
//! Matchable fields: tenant, server, severity, class, scope, action, status, region (any
//! of the event's regions) and `labels.<name>` (the labels of alerts received on the
//! Alertmanager API; empty on other events). Tenant isolation cannot be configured away: a route inside `tenant: X` only
//! ever sees X's events and a `tenant` matcher that could only hold for another tenant is
//! an error; tenant sections do not nest; storms reach `operator_routes` only, which holds
//! no tenant section; a receiver with `tenant: X` can only be used inside X's section.
//!
//! Differences from Alertmanager: time intervals are inherited like the other settings;
//! `group_wait`/`group_interval` are not part of routing; silences
//! ([`silence::SilenceSet`]) can be scoped to a tenant.

mod check;
mod compile;
mod config;
mod de;
mod error;
mod explain;
mod fields;
mod locate;
mod matcher;
mod parse;
mod receiver;
mod silence;
mod time_interval;
mod tree;

#[cfg(test)]
mod testutil;

use std::fmt;
use std::path::Path;

use chrono::{DateTime, Utc};
use mcpulse_schemas::AlertEvent;
use mcpulse_schemas::alert::OPERATOR_TENANT;

pub use check::{CheckReport, Warning, check};
pub use compile::DEFAULT_REPEAT_INTERVAL;
pub use error::{ErrorKind, RoutesError};
pub use explain::{RoutingDecision, explain};
pub use fields::{Field, GroupField};
pub use matcher::{MatchOp, Matcher, Matchers, Pattern};
pub use receiver::{Integration, IntegrationKind, Receiver};
pub use silence::{Silence, SilenceError, SilenceSet, SilenceState};
pub use time_interval::{Interval, TimeInterval, TimeRange, TimeZone};
pub use tree::{Mute, Route, RouteMatch, Tree};

/// A loaded, checked routes file.
#[derive(Clone, Debug)]
pub struct RoutesFile {
    file: String,
    /// The text as written (before `${ENV}` substitution: no secret values), for lines.
    source: String,
    receivers: Vec<Receiver>,
    route: Route,
    operator_routes: Option<Route>,
    time_intervals: Vec<TimeInterval>,
    secrets: Secrets,
}

/// The substituted `${ENV}` values; `Debug` shows only how many.
#[derive(Clone)]
struct Secrets(Vec<String>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} secret values>", self.0.len())
    }
}

impl RoutesFile {
    /// Parses a routes file named `routes.yaml` (the name errors show); `env` looks up
    /// `${NAME}` references.
    pub fn parse(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<RoutesFile, RoutesError> {
        Self::parse_named("routes.yaml", text, env)
    }

    /// Like [`RoutesFile::parse`], naming the file `file` in errors.
    pub fn parse_named(
        file: &str,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<RoutesFile, RoutesError> {
        parse::parse(file, text, env)
    }

    /// Reads and parses `path`, with `${NAME}` from the process environment.
    pub fn load(path: &Path) -> Result<RoutesFile, RoutesError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RoutesError {
            file: file.clone(),
            line: None,
            path: String::new(),
            kind: ErrorKind::Read(e.to_string()),
        })?;
        Self::parse_named(&file, &text, |name| std::env::var(name).ok())
    }

    /// The file name errors and reports use.
    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn receivers(&self) -> &[Receiver] {
        &self.receivers
    }

    pub fn receiver(&self, name: &str) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.name == name)
    }

    /// The top of the tenant tree (`route:`).
    pub fn route_tree(&self) -> &Route {
        &self.route
    }

    /// The top of the operator tree (`operator_routes:`), if any.
    pub fn operator_tree(&self) -> Option<&Route> {
        self.operator_routes.as_ref()
    }

    /// Every route of both trees, depth first (tenant tree first).
    pub fn routes(&self) -> Vec<&Route> {
        let mut all = self.route.walk();
        if let Some(operator) = &self.operator_routes {
            all.extend(operator.walk());
        }
        all
    }

    pub fn route_by_id(&self, id: &str) -> Option<&Route> {
        self.routes().into_iter().find(|r| r.id == id)
    }

    pub fn time_intervals(&self) -> &[TimeInterval] {
        &self.time_intervals
    }

    pub fn time_interval(&self, name: &str) -> Option<&TimeInterval> {
        self.time_intervals.iter().find(|i| i.name == name)
    }

    /// The values substituted for `${ENV}` references, to redact from any output.
    pub fn secrets(&self) -> &[String] {
        &self.secrets.0
    }

    /// `text` with every secret value replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        mcpulse_schemas::env::scrub(text.to_string(), &self.secrets.0)
    }

    /// The line of a field path in the file (`receivers[0].pagerduty.routing_key`), or of
    /// its nearest ancestor: for errors found in receiver blocks by the delivery code.
    pub fn locate(&self, path: &str) -> Option<usize> {
        locate::line_of(&self.source, path)
    }

    /// The tree an event goes through: operator events (storms) the operator tree, every
    /// other event the tenant tree.
    pub fn tree_for(&self, event: &AlertEvent) -> Option<&Route> {
        if event.tenant == OPERATOR_TENANT {
            self.operator_routes.as_ref()
        } else {
            Some(&self.route)
        }
    }

    /// Routes `event` at time `now` (time intervals are evaluated at `now`): one entry
    /// per route that takes it, in tree order. Empty when nothing takes it (a storm
    /// without operator routes, or a tenant-owned top route and another tenant's event).
    /// Silences are separate: see [`SilenceSet::is_silenced`].
    pub fn route(&self, event: &AlertEvent, now: DateTime<Utc>) -> Vec<RouteMatch> {
        let Some(tree) = self.tree_for(event) else {
            return Vec::new();
        };
        tree.matching(event)
            .into_iter()
            .map(|(trail, route)| RouteMatch {
                route_id: route.id.clone(),
                trail: trail.into_iter().map(str::to_string).collect(),
                receiver: route.receiver.clone(),
                group_key: route.group_key(event),
                repeat_interval: route.repeat_interval,
                muted: route.mute_at(now, |name| self.time_interval(name)),
            })
            .collect()
    }
}

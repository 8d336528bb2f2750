//! The shape of `routes.yaml` as written (before names are resolved and inheritance is
//! applied by [`super::compile`]). Unknown fields are refused everywhere.

use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::{Mapping, Value};

use super::fields::GroupField;
use super::matcher::Matchers;
use super::time_interval::TimeInterval;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    /// Named destinations routes deliver to.
    #[serde(default)]
    pub receivers: Vec<ReceiverConfig>,
    /// The tree tenants' incidents go through. It never sees operator events (storms).
    pub route: RouteConfig,
    /// The tree operator events (storms, tenant `_operator`) go through, and nothing else.
    /// No route in it may belong to a tenant. Without it, storm notices are not delivered.
    #[serde(default)]
    pub operator_routes: Option<RouteConfig>,
    /// Named time intervals for `mute_time_intervals` / `active_time_intervals`.
    #[serde(default)]
    pub time_intervals: Vec<TimeInterval>,
}

/// One receiver: a name and one or more integrations. The integration blocks are kept as
/// YAML values here; the delivery code parses each kind's own fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReceiverConfig {
    /// The name routes use in `receiver:`.
    pub name: String,
    /// When set, the receiver belongs to this tenant: only routes inside that tenant's
    /// section may use it, so it can never get another tenant's incidents.
    #[serde(default)]
    pub tenant: Option<String>,
    /// PagerDuty Events API v2 (a mapping, or a list of them for several services).
    #[serde(default)]
    pub pagerduty: Option<Blocks>,
    /// OpsGenie Alert API.
    #[serde(default)]
    pub opsgenie: Option<Blocks>,
    /// Discord webhook.
    #[serde(default)]
    pub discord: Option<Blocks>,
    /// Email over SMTP.
    #[serde(default)]
    pub email: Option<Blocks>,
    /// Generic signed JSON webhook.
    #[serde(default)]
    pub webhook: Option<Blocks>,
}

/// One route. Fields marked "inherited" take the parent's value when absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteConfig {
    /// Stable, unique id (state such as open incidents and groups is keyed by it, so
    /// moving or editing a route keeps them).
    pub id: String,
    /// Makes this route and everything under it tenant `tenant`'s section: it only ever
    /// sees that tenant's events, whatever its matchers say.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Conditions that must all hold for the route to match (none: matches every event
    /// the route can see).
    #[serde(default)]
    pub matchers: Matchers,
    /// Where matching events go (inherited; required on the top route).
    #[serde(default)]
    pub receiver: Option<String>,
    /// Fields whose values split events into groups (inherited; default none). The
    /// tenant is always part of the group key, so a group never mixes tenants.
    #[serde(default)]
    pub group_by: Option<Vec<GroupField>>,
    /// How long before a still-open incident is notified again (inherited; default 4h).
    #[serde(default, with = "humantime_serde")]
    pub repeat_interval: Option<Duration>,
    /// Keep trying the following sibling routes after this one matched (default false).
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    /// Named time intervals during which the route is muted (inherited; `[]` clears).
    #[serde(default)]
    pub mute_time_intervals: Option<Vec<String>>,
    /// Named time intervals outside of which the route is muted (inherited; `[]` clears).
    #[serde(default)]
    pub active_time_intervals: Option<Vec<String>>,
    /// Child routes, tried in order.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// A receiver's blocks of one kind: a mapping or a list of mappings.
#[derive(Debug)]
pub(crate) struct Blocks {
    pub blocks: Vec<Value>,
    /// Written as a list (so each block's path has an index).
    pub listed: bool,
}

impl<'de> Deserialize<'de> for Blocks {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BlocksVisitor;
        impl<'de> Visitor<'de> for BlocksVisitor {
            type Value = Blocks;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping or a list of mappings")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Blocks, A::Error> {
                let block = Mapping::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Blocks {
                    blocks: vec![Value::Mapping(block)],
                    listed: false,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Blocks, A::Error> {
                let mut out = Vec::new();
                while let Some(block) = seq.next_element::<Mapping>()? {
                    out.push(Value::Mapping(block));
                }
                if out.is_empty() {
                    return Err(de::Error::custom("empty list of integrations"));
                }
                Ok(Blocks {
                    blocks: out,
                    listed: true,
                })
            }
        }
        deserializer.deserialize_any(BlocksVisitor)
    }
}

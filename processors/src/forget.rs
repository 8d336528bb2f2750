//! Removing a tenant (or one of its servers) from stored state, for `mcpulse admin
//! delete`.
//!
//! Operator state is checkpointed as JSON, and every operator keys what it keeps by
//! tenant and server in one of a few shapes. [`Forget::scrub`] removes, anywhere in a
//! JSON document, the smallest *removable* unit — an array element or an object entry —
//! that belongs to the target:
//!
//! * an entry whose key is the tenant, or starts with `tenant/` (`tenant/server` keys);
//!   for a server, `tenant/server` or `tenant/server/…`, or the server itself inside
//!   something of the tenant (a map keyed by tenant, then by server);
//! * an element or entry that is an object whose `tenant` (and, for a server, `server`)
//!   field matches, directly or in one of its direct child objects (`{key: {tenant,
//!   server, …}, …}`, `{last_event: {tenant, …}, …}`);
//! * a `[key, value]` pair (maps serialized as lists of pairs) whose key matches;
//! * a string element equal to the tenant (lists of tenant ids), or `tenant/server`.
//!
//! Containers are examined top-down, so a unit is removed whole before anything inside
//! it is looked at, and shared structures (a storm with members of many tenants) lose
//! only the members. Callers deserialize the result into the operator's state type to be
//! sure nothing required was removed, and [`Forget::mentions`] finds what might remain.

use serde_json::{Map, Value};

/// What to forget: a tenant, or one server of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Forget {
    pub tenant: String,
    pub server: Option<String>,
}

impl Forget {
    pub fn tenant(tenant: &str) -> Self {
        Self {
            tenant: tenant.to_string(),
            server: None,
        }
    }

    pub fn server(tenant: &str, server: &str) -> Self {
        Self {
            tenant: tenant.to_string(),
            server: Some(server.to_string()),
        }
    }

    /// Removes every unit of `value` that belongs to the target; whether anything was.
    pub fn scrub(&self, value: &mut Value) -> bool {
        self.prune(value, false)
    }

    /// Whether `value` as a whole belongs to the target (e.g. one journal entry).
    pub fn owns(&self, value: &Value) -> bool {
        self.owned(value, false)
    }

    /// JSON pointers of the places in `value` that still name the tenant (a string or a
    /// key equal to it or starting with `tenant/`), for tenant deletes: what the scrub
    /// could not remove.
    pub fn mentions(&self, value: &Value) -> Vec<String> {
        let mut out = Vec::new();
        self.find(value, String::new(), &mut out);
        out
    }

    fn names_tenant(&self, text: &str) -> bool {
        text == self.tenant
            || text
                .strip_prefix(self.tenant.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }

    fn find(&self, value: &Value, at: String, out: &mut Vec<String>) {
        match value {
            Value::String(s) if self.names_tenant(s) => out.push(at),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.find(item, format!("{at}/{i}"), out);
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    let here = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                    if self.names_tenant(k) {
                        out.push(here.clone());
                    }
                    self.find(v, here, out);
                }
            }
            _ => {}
        }
    }

    /// Whether a key (of a map, or of a pair) names the target.
    fn key_matches(&self, key: &str, in_tenant: bool) -> bool {
        match &self.server {
            None => self.names_tenant(key),
            Some(server) => {
                let full = format!("{}/{server}", self.tenant);
                key == full
                    || key
                        .strip_prefix(full.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
                    || (in_tenant && key == server)
            }
        }
    }

    /// The (tenant, server) an object names, itself or through a direct child object.
    fn identity(map: &Map<String, Value>) -> (Option<&str>, Option<&str>) {
        let own = (
            map.get("tenant").and_then(Value::as_str),
            map.get("server").and_then(Value::as_str),
        );
        if own.0.is_some() {
            return own;
        }
        for child in map.values() {
            if let Value::Object(child) = child
                && let Some(tenant) = child.get("tenant").and_then(Value::as_str)
            {
                let server = own.1.or(child.get("server").and_then(Value::as_str));
                return (Some(tenant), server);
            }
        }
        own
    }

    /// Whether a whole element (or entry value) belongs to the target.
    fn owned(&self, value: &Value, in_tenant: bool) -> bool {
        match value {
            Value::String(s) => match &self.server {
                None => self.names_tenant(s),
                Some(_) => self.key_matches(s, in_tenant),
            },
            Value::Object(map) => {
                let (tenant, server) = Self::identity(map);
                let tenant_ok = match tenant {
                    Some(t) => t == self.tenant,
                    None => in_tenant && self.server.is_some(),
                };
                match &self.server {
                    None => tenant_ok,
                    Some(s) => tenant_ok && server == Some(s.as_str()),
                }
            }
            // A `[key, value]` pair: its key decides.
            Value::Array(pair) if pair.len() == 2 => match &pair[0] {
                Value::String(key) => self.key_matches(key, in_tenant),
                key @ Value::Object(_) => self.owned(key, in_tenant),
                _ => false,
            },
            _ => false,
        }
    }

    fn prune(&self, value: &mut Value, in_tenant: bool) -> bool {
        match value {
            Value::Array(items) => {
                let before = items.len();
                items.retain(|item| !self.owned(item, in_tenant));
                let mut changed = items.len() != before;
                for item in items.iter_mut() {
                    changed |= self.prune(item, in_tenant);
                }
                changed
            }
            Value::Object(map) => {
                let here = in_tenant
                    || map.get("tenant").and_then(Value::as_str) == Some(self.tenant.as_str());
                let before = map.len();
                // Fields holding plain values (`tenant`, `server`, …) are never removed:
                // only entries keyed by the target or whose value is a unit of it.
                // Nor are lists: a list is pruned inside, never removed whole.
                map.retain(|key, v| {
                    !(self.key_matches(key, here)
                        || (matches!(v, Value::Object(_)) && self.owned(v, here)))
                });
                let mut changed = map.len() != before;
                for (key, v) in map.iter_mut() {
                    let inside = here || (self.server.is_some() && key == &self.tenant);
                    changed |= self.prune(v, inside);
                }
                changed
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tenant_state_in_every_shape_goes() {
        let mut state = json!({
            "seq": 3,
            "trackers": [[{"tenant": "acme", "server": "a", "class": "down"}, {"phase": "open"}],
                         [{"tenant": "globex", "server": "g", "class": "down"}, {"phase": "open"}]],
            "recent": {"acme/a": {"down": 1}, "globex/g": {"down": 2}, "acmeX/z": {}},
            "tenants": {"acme": 5, "globex": 6},
            "windows": [{"key": {"tenant": "acme", "server": "a"}, "calls": 1},
                        {"key": {"tenant": "globex", "server": "g"}, "calls": 2}],
            "incidents": {"i1": {"last_event": {"tenant": "acme"}, "targets": {}},
                          "i2": {"last_event": {"tenant": "globex"}, "targets": {}}},
            "storm": {"members": [[{"tenant": "acme", "server": "a"}, true],
                                  [{"tenant": "globex", "server": "g"}, true]],
                      "tenants": {"acme": 1, "globex": 1}, "ids": ["acme", "globex"]},
            "buckets": [{"tenant": "acme", "server": "a"}, {"tenant": "globex", "server": "g"}]
        });
        let forget = Forget::tenant("acme");
        assert!(forget.scrub(&mut state));
        assert_eq!(
            state,
            json!({
                "seq": 3,
                "trackers": [[{"tenant": "globex", "server": "g", "class": "down"}, {"phase": "open"}]],
                "recent": {"globex/g": {"down": 2}, "acmeX/z": {}},
                "tenants": {"globex": 6},
                "windows": [{"key": {"tenant": "globex", "server": "g"}, "calls": 2}],
                "incidents": {"i2": {"last_event": {"tenant": "globex"}, "targets": {}}},
                "storm": {"members": [[{"tenant": "globex", "server": "g"}, true]],
                          "tenants": {"globex": 1}, "ids": ["globex"]},
                "buckets": [{"tenant": "globex", "server": "g"}]
            })
        );
        assert!(forget.mentions(&state).is_empty());
        assert!(!forget.scrub(&mut state), "idempotent");
    }

    #[test]
    fn a_server_goes_and_the_tenant_stays() {
        let mut state = json!({
            "recent": {"acme/a": 1, "acme/b": 2, "globex/a": 3},
            "nested": {"acme": {"a": 1, "b": 2}, "globex": {"a": 3}},
            "buckets": [{"tenant": "acme", "server": "a"}, {"tenant": "acme", "server": "b"},
                        {"tenant": "globex", "server": "a"}],
            "tenants": {"acme": 1},
            "members": [[{"tenant": "acme", "server": "a"}, true], [{"tenant": "acme", "server": "b"}, true]],
            "event": {"tenant": "acme", "server": "b", "labels": {"x": "a"}}
        });
        let forget = Forget::server("acme", "a");
        assert!(forget.scrub(&mut state));
        assert_eq!(
            state,
            json!({
                "recent": {"acme/b": 2, "globex/a": 3},
                "nested": {"acme": {"b": 2}, "globex": {"a": 3}},
                "buckets": [{"tenant": "acme", "server": "b"}, {"tenant": "globex", "server": "a"}],
                "tenants": {"acme": 1},
                "members": [[{"tenant": "acme", "server": "b"}, true]],
                "event": {"tenant": "acme", "server": "b", "labels": {"x": "a"}}
            })
        );
    }

    #[test]
    fn whole_documents_and_leftovers() {
        let forget = Forget::tenant("acme");
        assert!(forget.owns(&json!({"event": {"tenant": "acme"}, "key": "x"})));
        assert!(!forget.owns(&json!({"event": {"tenant": "globex"}})));
        let left = json!({"a": {"b": ["acme"]}, "acme/x": 1});
        assert_eq!(forget.mentions(&left), ["/a/b/0", "/acme~1x"]);
    }
}

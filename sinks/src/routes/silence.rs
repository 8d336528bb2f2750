//! Silences: matchers that stop notifications for a while, created at run time (CLI or
//! HTTP API) and persisted by the caller as JSON.
//!
//! A silence is pending before `starts_at`, active from `starts_at` until `ends_at`
//! (exclusive), then expired: an expired silence never matches again. A silence with a
//! `tenant` only silences that tenant's events. As in Alertmanager, at least one matcher
//! must not match the empty string, so a silence cannot silence everything by accident.

use chrono::{DateTime, Utc};
use mcpulse_schemas::AlertEvent;
use serde::{Deserialize, Serialize};

use super::matcher::Matchers;

/// One silence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Silence {
    /// Unique id (chosen by the caller, e.g. a UUID).
    pub id: String,
    /// When set, only this tenant's events are silenced (a tenant's own silences).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// All must hold for an event to be silenced (same forms as in routes).
    pub matchers: Matchers,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Who created it.
    pub created_by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
}

/// Where a silence is in its life at some time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl Silence {
    pub fn state_at(&self, now: DateTime<Utc>) -> SilenceState {
        if now < self.starts_at {
            SilenceState::Pending
        } else if now < self.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }

    /// Whether the silence is active at `now` and silences `event`.
    pub fn silences(&self, event: &AlertEvent, now: DateTime<Utc>) -> bool {
        self.state_at(now) == SilenceState::Active
            && self.tenant.as_deref().is_none_or(|t| t == event.tenant)
            && self.matchers.matches(event)
    }

    fn validate(&self) -> Result<(), SilenceError> {
        if self.id.trim().is_empty() {
            return Err(SilenceError::Invalid("id must not be empty".into()));
        }
        if self.created_by.trim().is_empty() {
            return Err(SilenceError::Invalid("created_by must not be empty".into()));
        }
        if self.ends_at <= self.starts_at {
            return Err(SilenceError::Invalid(
                "ends_at must be after starts_at".into(),
            ));
        }
        if self.matchers.iter().all(|m| m.matches_empty()) {
            return Err(SilenceError::Invalid(
                "at least one matcher must not match the empty string (a silence cannot \
                 match everything)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A silence operation that cannot be done.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SilenceError {
    #[error("invalid silence: {0}")]
    Invalid(String),
    #[error("a silence with id {0:?} already exists")]
    DuplicateId(String),
    #[error("no silence with id {0:?}")]
    NotFound(String),
    #[error("silence {0:?} has already expired")]
    AlreadyExpired(String),
}

/// Every silence, current and past (until [`SilenceSet::forget_expired_before`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceSet {
    silences: Vec<Silence>,
}

impl SilenceSet {
    pub fn new() -> SilenceSet {
        SilenceSet::default()
    }

    /// Adds a silence (checked: unique id, a creator, an end after its start, and a
    /// matcher that does not match everything).
    pub fn add(&mut self, silence: Silence) -> Result<(), SilenceError> {
        silence.validate()?;
        if self.get(&silence.id).is_some() {
            return Err(SilenceError::DuplicateId(silence.id));
        }
        self.silences.push(silence);
        Ok(())
    }

    /// Ends a silence at `now` (a pending one never starts).
    pub fn expire(&mut self, id: &str, now: DateTime<Utc>) -> Result<(), SilenceError> {
        let silence = self
            .silences
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or_else(|| SilenceError::NotFound(id.to_string()))?;
        match silence.state_at(now) {
            SilenceState::Expired => return Err(SilenceError::AlreadyExpired(id.to_string())),
            SilenceState::Pending => silence.starts_at = now,
            SilenceState::Active => {}
        }
        silence.ends_at = now;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&Silence> {
        self.silences.iter().find(|s| s.id == id)
    }

    /// Every silence, in the order added.
    pub fn list(&self) -> &[Silence] {
        &self.silences
    }

    /// The silences active at `now`.
    pub fn active_at(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Silence> {
        self.silences
            .iter()
            .filter(move |s| s.state_at(now) == SilenceState::Active)
    }

    /// The first active silence that silences `event` at `now`.
    pub fn silenced_by(&self, event: &AlertEvent, now: DateTime<Utc>) -> Option<&Silence> {
        self.silences.iter().find(|s| s.silences(event, now))
    }

    /// Whether an active silence silences `event` at `now`.
    pub fn is_silenced(&self, event: &AlertEvent, now: DateTime<Utc>) -> bool {
        self.silenced_by(event, now).is_some()
    }

    /// Drops silences that ended before `cutoff`; returns how many.
    pub fn forget_expired_before(&mut self, cutoff: DateTime<Utc>) -> usize {
        let before = self.silences.len();
        self.silences.retain(|s| s.ends_at >= cutoff);
        before - self.silences.len()
    }

    /// Drops the silences of `tenant` (`mcpulse admin delete --tenant`); operator
    /// silences (no tenant) stay. Returns how many.
    pub fn forget_tenant(&mut self, tenant: &str) -> usize {
        let before = self.silences.len();
        self.silences
            .retain(|s| s.tenant.as_deref() != Some(tenant));
        before - self.silences.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::testutil::{at, event};
    use chrono::Duration;

    fn silence(id: &str, matchers: &str, from: &str, to: &str) -> Silence {
        Silence {
            id: id.into(),
            tenant: None,
            matchers: serde_yaml_ng::from_str(matchers).unwrap(),
            starts_at: at(from),
            ends_at: at(to),
            created_by: "ana".into(),
            comment: "maintenance".into(),
        }
    }

    #[test]
    fn silences_only_while_active_and_matching() {
        let mut set = SilenceSet::new();
        set.add(silence(
            "s1",
            "[server = weather]",
            "2026-01-01T10:00:00Z",
            "2026-01-01T12:00:00Z",
        ))
        .unwrap();
        let e = event("acme", "weather");
        assert!(!set.is_silenced(&e, at("2026-01-01T09:59:59Z")));
        assert!(set.is_silenced(&e, at("2026-01-01T10:00:00Z")));
        assert_eq!(
            set.silenced_by(&e, at("2026-01-01T11:00:00Z")).unwrap().id,
            "s1"
        );
        assert!(!set.is_silenced(&e, at("2026-01-01T12:00:00Z")));
        assert!(!set.is_silenced(&event("acme", "files"), at("2026-01-01T11:00:00Z")));
        assert_eq!(set.active_at(at("2026-01-01T11:00:00Z")).count(), 1);
        assert_eq!(set.active_at(at("2026-01-01T13:00:00Z")).count(), 0);
    }

    #[test]
    fn expired_silences_stop_matching() {
        let mut set = SilenceSet::new();
        set.add(silence(
            "s1",
            "[tenant = acme]",
            "2026-01-01T10:00:00Z",
            "2026-01-02T10:00:00Z",
        ))
        .unwrap();
        set.add(silence(
            "s2",
            "[tenant = acme]",
            "2026-01-03T10:00:00Z",
            "2026-01-04T10:00:00Z",
        ))
        .unwrap();
        let now = at("2026-01-01T11:00:00Z");
        let e = event("acme", "weather");
        assert!(set.is_silenced(&e, now));
        set.expire("s1", now).unwrap();
        assert!(!set.is_silenced(&e, now));
        assert!(!set.is_silenced(&e, now + Duration::hours(1)));
        assert_eq!(
            set.expire("s1", now + Duration::hours(1)),
            Err(SilenceError::AlreadyExpired("s1".into()))
        );
        // A pending silence expired now never starts.
        set.expire("s2", now).unwrap();
        assert!(!set.is_silenced(&e, at("2026-01-03T12:00:00Z")));
        assert_eq!(
            set.expire("nope", now),
            Err(SilenceError::NotFound("nope".into()))
        );
        assert_eq!(set.list().len(), 2);
        assert_eq!(set.forget_expired_before(now + Duration::minutes(1)), 2);
        assert!(set.list().is_empty());
    }

    #[test]
    fn tenant_silences_only_touch_their_tenant() {
        let mut set = SilenceSet::new();
        let mut s = silence(
            "s1",
            "[severity =~ \"P1|P2\"]",
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
        );
        s.tenant = Some("acme".into());
        set.add(s).unwrap();
        let now = at("2026-01-01T01:00:00Z");
        assert!(set.is_silenced(&event("acme", "weather"), now));
        assert!(!set.is_silenced(&event("globex", "weather"), now));
    }

    #[test]
    fn refuses_invalid_silences() {
        let mut set = SilenceSet::new();
        let ok = silence(
            "s1",
            "[server = w]",
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
        );
        set.add(ok.clone()).unwrap();
        assert_eq!(
            set.add(ok.clone()),
            Err(SilenceError::DuplicateId("s1".into()))
        );
        let mut backwards = ok.clone();
        backwards.id = "s2".into();
        backwards.ends_at = backwards.starts_at;
        assert!(
            matches!(set.add(backwards), Err(SilenceError::Invalid(m)) if m.contains("ends_at"))
        );
        let everything = silence(
            "s3",
            "[server =~ \".*\"]",
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
        );
        assert!(
            matches!(set.add(everything), Err(SilenceError::Invalid(m)) if m.contains("empty string"))
        );
        let none = silence("s4", "[]", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z");
        assert!(set.add(none).is_err());
        let mut anonymous = ok;
        anonymous.id = "s5".into();
        anonymous.created_by = " ".into();
        assert!(set.add(anonymous).is_err());
    }

    #[test]
    fn round_trips_through_json() {
        let mut set = SilenceSet::new();
        let mut s = silence(
            "s1",
            "[\"server =~ \\\"a|b\\\"\", {severity: [P1, P2]}]",
            "2026-01-01T00:00:00Z",
            "2026-01-02T00:00:00Z",
        );
        s.tenant = Some("acme".into());
        set.add(s).unwrap();
        let json = serde_json::to_string(&set).unwrap();
        assert!(
            json.contains(r#""matchers":["server =~ \"a|b\"",{"severity":["P1","P2"]}]"#),
            "{json}"
        );
        let back: SilenceSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
        assert!(serde_json::from_str::<SilenceSet>(r#"{"silences":[],"x":1}"#).is_err());
    }
}

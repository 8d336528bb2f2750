//! `targets.yaml`: the MCP servers the prober checks, per tenant.
//!
//! ```yaml
//! defaults:                      # optional; applies to every target
//!   interval: 60s                # time between probes (at least 10s)
//!   timeout: 10s                 # deadline of one whole probe (> 0, at most interval)
//!   transport: auto              # auto | modern | streamable_http | sse
//!   labels: {env: prod}          # merged under each target's labels
//! policy:                        # which internal addresses may be probed (operator setting)
//!   allow_loopback: false
//!   allow_private: false
//!   allow_cidrs: []
//!   deny_cidrs: []
//! tenants:
//!   acme:                        # tenant id: 1-64 of A-Z a-z 0-9 _ -
//!     - server: weather          # server id, unique per tenant: 1-128 of A-Z a-z 0-9 . _ -
//!       url: https://weather.example.com/mcp   # http/https, no user:pass@
//!       transport: auto
//!       credential: "${ACME_WEATHER_TOKEN}"    # sent as `Authorization: Bearer …`
//!       # or: credential: {header: X-Api-Key, value: "${ACME_WEATHER_KEY}"}
//!       interval: 60s
//!       timeout: 10s
//!       labels: {team: maps}
//! ```
//!
//! `${NAME}` is replaced by the environment variable before parsing (`$${` is a literal
//! `${`); a missing variable is an error naming it. Because the substitution is textual,
//! quote references (`"${TOKEN}"`) so a value containing `: ` or `#` stays one string. Unknown fields are refused and every
//! error names the field path and, where known, the line; values substituted from the
//! environment are scrubbed from error messages. Credentials never show in `Debug`.
//! Keep secrets in `${ENV}` references rather than in the file: the parser cannot tell a
//! literal token from a substituted one.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use mcpulse_schemas::ProtocolEra;
use mcpulse_schemas::env::{interpolate, scrub};
use mcpulse_schemas::topics::{TENANT_ID_RULE, valid_tenant_id};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use url::Url;

use super::target_guard::{TargetPolicy, parse_target_url, redact_url};

/// The shortest allowed probe interval.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// The longest allowed probe interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// At most this many labels per target (after merging the defaults).
pub const MAX_LABELS: usize = 32;

/// Which transport to probe a server with.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum TransportHint {
    /// Try the modern protocol, then legacy Streamable HTTP, then HTTP+SSE.
    #[default]
    Auto,
    /// Only the modern protocol (2026-07-28: `server/discover`, no handshake).
    Modern,
    /// Only legacy Streamable HTTP (2025-03-26 … 2025-11-25: initialize, sessions).
    StreamableHttp,
    /// Only the HTTP+SSE transport of 2024-11-05 (`url` is the SSE endpoint).
    #[serde(alias = "http_sse")]
    Sse,
}

impl TransportHint {
    /// The one era to try, or `None` for `auto`.
    pub fn era(self) -> Option<ProtocolEra> {
        match self {
            TransportHint::Auto => None,
            TransportHint::Modern => Some(ProtocolEra::Modern),
            TransportHint::StreamableHttp => Some(ProtocolEra::StreamableHttp),
            TransportHint::Sse => Some(ProtocolEra::HttpSse),
        }
    }
}

/// The header a target's credential is sent in. `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    header: HeaderName,
    value: HeaderValue,
}

/// Headers the prober sets itself; a credential cannot replace them.
const RESERVED_HEADERS: [&str; 11] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "accept",
    "origin",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "last-event-id",
];

impl Credential {
    /// `Authorization: Bearer <token>`. Errors never contain the token.
    pub fn bearer(token: &str) -> Result<Self, String> {
        if token.is_empty() {
            return Err("the token is empty".into());
        }
        if token.len() >= 7 && token[..7].eq_ignore_ascii_case("bearer ") {
            return Err(
                "give the token only (the prober sends `Authorization: Bearer <token>`)".into(),
            );
        }
        Self::header(
            http::header::AUTHORIZATION.as_str(),
            &format!("Bearer {token}"),
        )
    }

    /// `<header>: <value>`. Errors name the header, never the value.
    pub fn header(header: &str, value: &str) -> Result<Self, String> {
        let name = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| format!("header {header:?} is not a valid header name"))?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(format!(
                "header {:?} is set by the prober and cannot carry a credential",
                name.as_str()
            ));
        }
        if value.is_empty() {
            return Err("the value is empty".into());
        }
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            "the value is not a valid header value (control characters or non-ASCII)".to_string()
        })?;
        value.set_sensitive(true);
        Ok(Self {
            header: name,
            value: value.clone(),
        })
    }

    /// The header name (lowercase).
    pub fn header_name(&self) -> &HeaderName {
        &self.header
    }

    /// The header value, marked sensitive (HTTP/2 HPACK will not index it). Never log it.
    pub fn value(&self) -> &HeaderValue {
        &self.value
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("header", &self.header.as_str())
            .field("value", &format_args!("***"))
            .finish()
    }
}

impl<'de> Deserialize<'de> for Credential {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct HeaderForm {
            header: String,
            value: String,
        }

        struct CredentialVisitor;

        const EXPECTED: &str = "a token string or {header, value}";

        impl<'de> Visitor<'de> for CredentialVisitor {
            type Value = Credential;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Credential, E> {
                Credential::bearer(v).map_err(E::custom)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Credential, A::Error> {
                let form = HeaderForm::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Credential::header(&form.header, &form.value).map_err(de::Error::custom)
            }

            // Scalars that are not strings: refuse without echoing them.
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Credential, E> {
                Err(E::custom(format!("expected {EXPECTED}")))
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Credential, E> {
                Err(E::custom(format!(
                    "expected {EXPECTED} (quote numeric tokens)"
                )))
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Credential, E> {
                Err(E::custom(format!(
                    "expected {EXPECTED} (quote numeric tokens)"
                )))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Credential, E> {
                Err(E::custom(format!(
                    "expected {EXPECTED} (quote numeric tokens)"
                )))
            }
        }

        deserializer.deserialize_any(CredentialVisitor)
    }
}

/// `defaults:` — values every target inherits unless it sets its own.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Time between two probes of a target (default 60s, at least 10s, at most 24h).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Deadline of one whole probe (default 10s; more than 0, at most the interval).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Transport to probe with (default `auto`).
    pub transport: TransportHint,
    /// Labels of every target; a target's own labels win on the same key.
    #[serde(deserialize_with = "unique_map")]
    pub labels: BTreeMap<String, String>,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            transport: TransportHint::Auto,
            labels: BTreeMap::new(),
        }
    }
}

/// One entry of a tenant's list, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetSpec {
    server: String,
    url: String,
    #[serde(default)]
    transport: Option<TransportHint>,
    #[serde(default)]
    credential: Option<Credential>,
    #[serde(default, with = "humantime_serde")]
    interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "unique_map")]
    labels: BTreeMap<String, String>,
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    policy: TargetPolicy,
    #[serde(default, deserialize_with = "unique_map")]
    tenants: BTreeMap<String, Vec<TargetSpec>>,
}

/// A string-keyed map refusing duplicate keys (YAML parsers keep the last one silently).
fn unique_map<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct UniqueMap<V>(std::marker::PhantomData<V>);

    impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueMap<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<String, V>()? {
                if out.contains_key(&k) {
                    return Err(de::Error::custom(format!("key {k:?} appears twice")));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_map(UniqueMap(std::marker::PhantomData))
}

/// One server to probe: what the scheduler runs.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// The tenant that owns the server.
    pub tenant: String,
    /// The server id, unique within the tenant.
    pub server: String,
    /// The MCP endpoint (http/https, no userinfo). May carry a query: log it with
    /// [`redact_url`] only.
    pub url: Url,
    /// Transport to probe with.
    pub transport: TransportHint,
    /// The credential to send, if any.
    pub credential: Option<Credential>,
    /// Time between probes.
    pub interval: Duration,
    /// Deadline of one probe.
    pub timeout: Duration,
    /// The defaults' labels overlaid with the target's.
    pub labels: BTreeMap<String, String>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("tenant", &self.tenant)
            .field("server", &self.server)
            .field("url", &redact_url(&self.url))
            .field("transport", &self.transport)
            .field("credential", &self.credential)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("labels", &self.labels)
            .finish()
    }
}

/// A parsed and validated `targets.yaml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetsFile {
    /// The defaults as written (already applied to `targets`).
    pub defaults: Defaults,
    /// Which addresses targets may resolve to.
    pub policy: TargetPolicy,
    /// Every target, sorted by tenant, then in file order.
    pub targets: Vec<Target>,
}

/// An error in `targets.yaml`: the field at fault, its line when known, and what is
/// wrong. Never contains a value substituted from the environment.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct TargetsError {
    /// The field, like `tenants.acme[0].timeout` (`None` for file-level errors).
    pub path: Option<String>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for TargetsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, self.line) {
            (Some(path), Some(line)) => write!(f, "{path} (line {line}): {}", self.message),
            (Some(path), None) => write!(f, "{path}: {}", self.message),
            (None, Some(line)) => write!(f, "line {line}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

/// Reads and validates a `targets.yaml`, substituting `${NAME}` from the process
/// environment. Errors start with the file name.
pub fn load_targets(path: &Path) -> Result<TargetsFile, TargetsError> {
    let text = std::fs::read_to_string(path).map_err(|e| TargetsError {
        path: None,
        line: None,
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    parse_targets(&text, |name| std::env::var(name).ok()).map_err(|mut e| {
        e.message = format!("{}: {}", path.display(), e.message);
        e
    })
}

/// Parses `targets.yaml` text, substituting `${NAME}` from `env`, and validates it.
pub fn parse_targets(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<TargetsFile, TargetsError> {
    let (expanded, secrets) = interpolate(text, env).map_err(|e| TargetsError {
        path: None,
        line: None,
        message: e.0,
    })?;
    let hide = |s: String| scrub(s, &secrets);

    let deserializer = serde_yaml_ng::Deserializer::from_str(&expanded);
    let spec: FileSpec = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let location = inner.location();
        let mut message = inner.to_string();
        if let Some(loc) = &location {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_string();
            }
        }
        // serde_yaml_ng prefixes its own (parent) path: the path is shown once, in front.
        if let Some((head, tail)) = message.split_once(": ")
            && !head.is_empty()
            && path.starts_with(head)
        {
            message = tail.to_string();
        }
        TargetsError {
            path: (path != ".").then(|| hide(path)),
            line: location.map(|l| l.line()),
            message: hide(message),
        }
    })?;

    validate(spec).map_err(|(segments, message)| TargetsError {
        path: Some(hide(render_path(&segments))),
        line: line_of(&expanded, &segments),
        message: hide(message),
    })
}

/// A step of a field path, for errors found after deserialisation.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

fn render_path(segments: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segments {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

type Invalid = (Vec<Seg>, String);

fn check_timing(
    base: &[Seg],
    interval: Duration,
    timeout: Duration,
    interval_set_here: bool,
) -> Result<(), Invalid> {
    let at = |field: &str| {
        let mut p = base.to_vec();
        p.push(key(field));
        p
    };
    if interval < MIN_INTERVAL || interval > MAX_INTERVAL {
        return Err((
            at("interval"),
            format!(
                "must be between {} and {} (got {})",
                humantime_serde::re::humantime::format_duration(MIN_INTERVAL),
                humantime_serde::re::humantime::format_duration(MAX_INTERVAL),
                humantime_serde::re::humantime::format_duration(interval)
            ),
        ));
    }
    if timeout.is_zero() {
        return Err((at("timeout"), "must be more than 0".into()));
    }
    if timeout > interval {
        let whence = if interval_set_here {
            "the interval"
        } else {
            "the interval (from defaults)"
        };
        return Err((
            at("timeout"),
            format!(
                "must not exceed {whence} ({} > {})",
                humantime_serde::re::humantime::format_duration(timeout),
                humantime_serde::re::humantime::format_duration(interval)
            ),
        ));
    }
    Ok(())
}

fn check_labels(base: &[Seg], labels: &BTreeMap<String, String>) -> Result<(), Invalid> {
    for (k, v) in labels {
        let at = || {
            let mut p = base.to_vec();
            p.push(key("labels"));
            p.push(key(k));
            p
        };
        if k.is_empty()
            || k.len() > 64
            || !k
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err((
                at(),
                "label names must be 1-64 characters of A-Z a-z 0-9 . _ -".into(),
            ));
        }
        if v.len() > 256 {
            return Err((at(), "label values must be at most 256 bytes".into()));
        }
    }
    Ok(())
}

fn valid_server_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn validate(spec: FileSpec) -> Result<TargetsFile, Invalid> {
    let FileSpec {
        defaults,
        policy,
        tenants,
    } = spec;
    let defaults_path = [key("defaults")];
    check_timing(&defaults_path, defaults.interval, defaults.timeout, true)?;
    check_labels(&defaults_path, &defaults.labels)?;

    let mut targets = Vec::new();
    for (tenant, list) in tenants {
        let tenant_path = vec![key("tenants"), key(&tenant)];
        if !valid_tenant_id(&tenant) {
            return Err((
                tenant_path,
                format!("tenant id {tenant:?} is invalid: {TENANT_ID_RULE}"),
            ));
        }
        let mut seen = HashSet::new();
        for (index, spec) in list.into_iter().enumerate() {
            let mut base = tenant_path.clone();
            base.push(Seg::Index(index));
            let at = |field: &str| {
                let mut p = base.clone();
                p.push(key(field));
                p
            };
            if !valid_server_id(&spec.server) {
                return Err((
                    at("server"),
                    "server ids must be 1-128 characters of A-Z a-z 0-9 . _ -".into(),
                ));
            }
            if !seen.insert(spec.server.clone()) {
                return Err((
                    at("server"),
                    format!(
                        "server {:?} is listed twice for tenant {tenant:?}",
                        spec.server
                    ),
                ));
            }
            let url = parse_target_url(&spec.url).map_err(|e| (at("url"), e.to_string()))?;
            let interval = spec.interval.unwrap_or(defaults.interval);
            let timeout = spec.timeout.unwrap_or(defaults.timeout);
            check_timing(&base, interval, timeout, spec.interval.is_some())?;
            check_labels(&base, &spec.labels)?;
            let mut labels = defaults.labels.clone();
            labels.extend(spec.labels);
            if labels.len() > MAX_LABELS {
                return Err((
                    at("labels"),
                    format!("at most {MAX_LABELS} labels (defaults included)"),
                ));
            }
            targets.push(Target {
                tenant: tenant.clone(),
                server: spec.server,
                url,
                transport: spec.transport.unwrap_or(defaults.transport),
                credential: spec.credential,
                interval,
                timeout,
                labels,
            });
        }
    }
    Ok(TargetsFile {
        defaults,
        policy,
        targets,
    })
}

/// The line of the node at `path` in `text`, found by walking the document with a visitor
/// that fails on that node (serde_yaml_ng marks errors with the node's position).
fn line_of(text: &str, path: &[Seg]) -> Option<usize> {
    const MARKER: &str = "\u{1}mcpulse-locate";
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    let err = Locate {
        path,
        marker: MARKER,
    }
    .deserialize(deserializer)
    .err()?;
    if !err.to_string().contains(MARKER) {
        return None;
    }
    err.location().map(|l| l.line())
}

struct Locate<'a> {
    path: &'a [Seg],
    marker: &'static str,
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(de::Error::custom(self.marker));
        };
        let Seg::Key(want) = first else {
            return Ok(());
        };
        // A matching last key fails inside the key's own deserialisation, so the error
        // carries the key's position (its value may be a block on later lines).
        let key_seed = || KeySeed {
            want,
            fail_on_match: rest.is_empty(),
            marker: self.marker,
        };
        while let Some(matched) = map.next_key_seed(key_seed())? {
            if matched {
                return map.next_value_seed(Locate {
                    path: rest,
                    marker: self.marker,
                });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(de::Error::custom(self.marker));
        };
        let Seg::Index(want) = first else {
            return Ok(());
        };
        let mut index = 0;
        loop {
            if index == *want {
                return match seq.next_element_seed(Locate {
                    path: rest,
                    marker: self.marker,
                })? {
                    Some(()) | None => Ok(()),
                };
            }
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
}

/// Deserialises a map key, telling whether it is `want` (failing instead when
/// `fail_on_match`).
struct KeySeed<'a> {
    want: &'a str,
    fail_on_match: bool,
    marker: &'static str,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        if v != self.want {
            Ok(false)
        } else if self.fail_on_match {
            Err(E::custom(self.marker))
        } else {
            Ok(true)
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

impl Locate<'_> {
    fn scalar<E: de::Error>(self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(E::custom(self.marker))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "ACME_WEATHER_TOKEN" => Some("tok-weather-123".into()),
            "ACME_MAPS_KEY" => Some("key-maps-456".into()),
            "SECRET" => Some("s3cr3t-value".into()),
            _ => None,
        }
    }

    const FULL: &str = r#"
defaults:
  interval: 2m
  timeout: 15s
  labels: {env: prod, team: core}
policy:
  allow_private: true
  allow_cidrs: [169.254.10.0/24]
tenants:
  acme:
    - server: weather
      url: https://weather.example.com/mcp
      credential: "${ACME_WEATHER_TOKEN}"
      labels: {team: maps}
    - server: maps.v2
      url: http://10.0.0.7:8080/mcp?region=eu
      transport: streamable_http
      credential: {header: X-Api-Key, value: "${ACME_MAPS_KEY}"}
      interval: 30s
      timeout: 5s
  globex:
    - server: legacy
      url: https://legacy.globex.example/sse
      transport: sse
"#;

    #[test]
    fn parses_a_full_file() {
        let file = parse_targets(FULL, env).unwrap();
        assert!(file.policy.allow_private && !file.policy.allow_loopback);
        assert_eq!(file.policy.allow_cidrs.len(), 1);
        assert_eq!(file.targets.len(), 3);

        let weather = &file.targets[0];
        assert_eq!(
            (weather.tenant.as_str(), weather.server.as_str()),
            ("acme", "weather")
        );
        assert_eq!(weather.url.as_str(), "https://weather.example.com/mcp");
        assert_eq!(weather.transport, TransportHint::Auto);
        assert_eq!(weather.interval, Duration::from_secs(120));
        assert_eq!(weather.timeout, Duration::from_secs(15));
        assert_eq!(weather.labels["team"], "maps");
        assert_eq!(weather.labels["env"], "prod");
        let credential = weather.credential.as_ref().unwrap();
        assert_eq!(credential.header_name().as_str(), "authorization");
        assert_eq!(
            credential.value().to_str().unwrap(),
            "Bearer tok-weather-123"
        );
        assert!(credential.value().is_sensitive());

        let maps = &file.targets[1];
        assert_eq!(maps.transport, TransportHint::StreamableHttp);
        assert_eq!(maps.transport.era(), Some(ProtocolEra::StreamableHttp));
        assert_eq!(
            (maps.interval, maps.timeout),
            (Duration::from_secs(30), Duration::from_secs(5))
        );
        let credential = maps.credential.as_ref().unwrap();
        assert_eq!(credential.header_name().as_str(), "x-api-key");
        assert_eq!(credential.value().to_str().unwrap(), "key-maps-456");

        let legacy = &file.targets[2];
        assert_eq!(legacy.tenant, "globex");
        assert_eq!(legacy.transport, TransportHint::Sse);
        assert!(legacy.credential.is_none());
        assert_eq!(legacy.labels.len(), 2);

        // Debug shows neither credentials nor query strings.
        let debug = format!("{file:?}");
        assert!(
            !debug.contains("tok-weather-123") && !debug.contains("key-maps-456"),
            "{debug}"
        );
        assert!(!debug.contains("region=eu"), "{debug}");
        assert!(
            debug.contains("***") && debug.contains("http://10.0.0.7:8080/mcp"),
            "{debug}"
        );
    }

    #[test]
    fn empty_file_and_defaults() {
        let file = parse_targets("{}", env).unwrap();
        assert!(file.targets.is_empty());
        assert_eq!(file.defaults, Defaults::default());
        assert_eq!(file.policy, TargetPolicy::default());
    }

    fn error(text: &str) -> TargetsError {
        parse_targets(text, env).unwrap_err()
    }

    #[test]
    fn serde_errors_name_field_and_line() {
        let e = error(
            "tenants:\n  acme:\n    - server: a\n      url: https://a.example/\n      intervall: 30s\n",
        );
        assert_eq!(e.path.as_deref(), Some("tenants.acme[0].intervall"), "{e}");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("unknown field"), "{e}");
        assert!(
            e.to_string()
                .starts_with("tenants.acme[0].intervall (line 5): "),
            "{e}"
        );

        let e = error(
            "tenants:\n  acme:\n    - server: a\n      url: https://a.example/\n      interval: soon\n",
        );
        assert_eq!(e.path.as_deref(), Some("tenants.acme[0].interval"), "{e}");
        assert_eq!(e.line, Some(5), "{e}");

        let e = error("policy:\n  allow_cidrs: [10.0.0.0/99]\n");
        assert_eq!(e.path.as_deref(), Some("policy.allow_cidrs"), "{e}");
        assert_eq!(e.line, Some(2), "{e}");

        let e = error("defaults:\n  transport: carrier-pigeon\n");
        assert_eq!(e.path.as_deref(), Some("defaults.transport"), "{e}");

        let e = error("tenants:\n  acme:\n    - url: https://a.example/\n");
        assert!(e.message.contains("server"), "{e}");
        assert!(
            e.path.as_deref().unwrap().starts_with("tenants.acme[0]"),
            "{e}"
        );
    }

    #[test]
    fn validation_errors_name_field_and_line() {
        let e = error(
            "tenants:\n  acme:\n    - server: a\n      url: https://a.example/\n      interval: 5s\n      timeout: 1s\n",
        );
        assert_eq!(e.path.as_deref(), Some("tenants.acme[0].interval"), "{e}");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("between 10s"), "{e}");

        let e = error(
            "defaults:\n  interval: 30s\ntenants:\n  acme:\n    - server: a\n      url: https://a.example/\n      timeout: 45s\n",
        );
        assert_eq!(e.path.as_deref(), Some("tenants.acme[0].timeout"), "{e}");
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.message.contains("from defaults"), "{e}");

        let e = error(
            "tenants:\n  acme:\n    - server: a\n      url: https://a.example/\n      timeout: 0s\n",
        );
        assert_eq!(e.path.as_deref(), Some("tenants.acme[0].timeout"), "{e}");

        let e = error("defaults:\n  timeout: 2m\n");
        assert_eq!(e.path.as_deref(), Some("defaults.timeout"), "{e}");
        assert_eq!(e.line, Some(2), "{e}");

        let e = error("tenants:\n  acme:\n    - server: a\n      url: ftp://a.example/\n");
        assert_eq!(e.path.as_deref(), Some("tenants.acme[0].url"), "{e}");
        assert_eq!(e.line, Some(4), "{e}");

        let e =
            error("tenants:\n  acme:\n    - server: a\n      url: https://bob:pw123@a.example/\n");
        assert_eq!(e.path.as_deref(), Some("tenants.acme[0].url"), "{e}");
        assert!(
            e.message.contains("credentials") && !e.to_string().contains("pw123"),
            "{e}"
        );

        let e = error("tenants:\n  acme:\n    - server: \"a b\"\n      url: https://a.example/\n");
        assert_eq!(e.path.as_deref(), Some("tenants.acme[0].server"), "{e}");
        assert_eq!(e.line, Some(3), "{e}");

        let e = error(
            "tenants:\n  acme:\n    - server: a\n      url: https://a.example/\n      labels: {\"bad key\": x}\n",
        );
        assert_eq!(
            e.path.as_deref(),
            Some("tenants.acme[0].labels.bad key"),
            "{e}"
        );

        let e = error(
            "tenants:\n  ok:\n    - server: a\n      url: https://a.example/\n  \"bad/tenant\":\n    - server: a\n      url: https://a.example/\n",
        );
        assert_eq!(e.path.as_deref(), Some("tenants.bad/tenant"), "{e}");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("tenant id"), "{e}");
    }

    #[test]
    fn duplicate_server_is_refused() {
        let e = error(
            "tenants:\n  acme:\n    - server: a\n      url: https://a.example/\n    - server: b\n      url: https://b.example/\n    - server: a\n      url: https://c.example/\n",
        );
        assert_eq!(e.path.as_deref(), Some("tenants.acme[2].server"), "{e}");
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.message.contains("twice"), "{e}");
        // A tenant listed twice (YAML would silently keep the last one).
        let e = error(
            "tenants:\n  acme:\n    - server: a\n      url: https://a.example/\n  acme:\n    - server: b\n      url: https://b.example/\n",
        );
        assert_eq!(e.path.as_deref(), Some("tenants"), "{e}");
        assert!(e.message.contains("\"acme\" appears twice"), "{e}");
        let e = error("defaults:\n  labels: {a: x, a: y}\n");
        assert!(e.message.contains("appears twice"), "{e}");
        // The same server id under another tenant is fine.
        parse_targets("tenants:\n  a:\n    - server: x\n      url: https://a.example/\n  b:\n    - server: x\n      url: https://a.example/\n", env).unwrap();
    }

    #[test]
    fn missing_variable_is_named() {
        let e = error(
            "tenants:\n  acme:\n    - server: a\n      url: https://a.example/\n      credential: ${NOPE_TOKEN}\n",
        );
        assert!(
            e.message.contains("NOPE_TOKEN") && e.message.contains("line 5"),
            "{e}"
        );
    }

    #[test]
    fn secrets_are_scrubbed_from_errors() {
        // A secret in a field that does not take a string.
        let e = error("defaults:\n  interval: \"${SECRET}\"\n");
        assert_eq!(e.path.as_deref(), Some("defaults.interval"), "{e}");
        assert!(!e.to_string().contains("s3cr3t-value"), "{e}");
        // A secret as an unknown key, and as a label value that is too long.
        let e = error(
            "tenants:\n  acme:\n    - server: a\n      url: https://a.example/\n      ${SECRET}: 1\n",
        );
        assert!(!e.to_string().contains("s3cr3t-value"), "{e}");
        let e = error(
            "tenants:\n  acme:\n    - server: \"${SECRET}!\"\n      url: https://a.example/\n",
        );
        assert!(!e.to_string().contains("s3cr3t-value"), "{e}");
        let e = error(
            "tenants:\n  acme:\n    - server: a\n      url: \"https://a.example/?k=${SECRET}\"\n      transport: nope\n",
        );
        assert!(!e.to_string().contains("s3cr3t-value"), "{e}");
        // A credential given as a number is refused without echoing it.
        let e = error(
            "tenants:\n  acme:\n    - server: a\n      url: https://a.example/\n      credential: 123456789\n",
        );
        assert!(
            e.message.contains("quote") && !e.to_string().contains("123456789"),
            "{e}"
        );
    }

    #[test]
    fn credentials_are_validated() {
        let e = error(
            "tenants:\n  acme:\n    - server: a\n      url: https://a.example/\n      credential: \"Bearer ${SECRET}\"\n",
        );
        assert!(e.message.contains("token only"), "{e}");
        assert!(!e.to_string().contains("s3cr3t-value"), "{e}");
        assert_eq!(e.line, Some(5), "{e}");
        let e = error(
            "tenants:\n  acme:\n    - server: a\n      url: https://a.example/\n      credential: {header: Host, value: x}\n",
        );
        assert!(e.message.contains("set by the prober"), "{e}");
        let e = error(
            "tenants:\n  acme:\n    - server: a\n      url: https://a.example/\n      credential: {header: X-Key, value: x, extra: 1}\n",
        );
        assert!(e.message.contains("unknown field"), "{e}");
        assert!(Credential::bearer("").is_err());
        let err = Credential::header("X-Key", "line\nbreak").unwrap_err();
        assert!(!err.contains("break"), "{err}");
        let debug = format!("{:?}", Credential::bearer("abc-secret").unwrap());
        assert_eq!(
            debug,
            "Credential { header: \"authorization\", value: *** }"
        );
    }
}

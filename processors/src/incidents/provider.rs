//! Which hosting provider an endpoint host belongs to: the `provider` of a storm's
//! upstream cause (DESIGN.md "Storm correlation").
//!
//! ```yaml
//! incidents:
//!   providers:                       # added to (and overriding) the built-in table
//!     - suffix: mcp.example-cloud.com
//!       provider: example-cloud
//!     - suffix: fly.dev              # same suffix as a built-in entry: this one wins
//!       provider: fly-io
//! ```
//!
//! # Matching
//!
//! The host is lowercased and a trailing dot removed. A suffix matches whole DNS labels
//! only: `x.onrender.com` and `onrender.com` are `render`, `evilonrender.com` is not. When
//! several suffixes match, the longest wins (`x.up.railway.app` matches both
//! `up.railway.app` and `railway.app`). For the same suffix a configured entry beats the
//! built-in one, and among configured entries the first one wins.
//!
//! A host no entry matches is self-hosted: `self:` followed by its registrable-ish domain —
//! the last two labels, or the last three when the TLD has two letters and the
//! second-to-last label is a common second level (`co`, `com`, `org`, `net`, `ac`, `gov`,
//! `edu`, `mil`, `ne`, `or`, `go`): `a.b.example.co.uk` → `self:example.co.uk`,
//! `mcp.example.com` → `self:example.com`. This is not the Public Suffix List, only
//! enough for grouping the incidents of one organisation's own hosts.
//!
//! IP literals (v4 in any of the forms URL parsers accept, v6 with or without brackets)
//! and `localhost` are `self:ip`: **the output never contains an IP address**, because
//! it ends up in payloads, which must not carry upstream IPs. Hosts that are not host
//! names at all (empty, spaces, `/`, `@`, …) are `unknown`.
//!
//! Provider names are 1–64 characters of `[a-z0-9._-]`, so they can never collide with
//! the `self:…` names or contain an address.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// The provider of hosts that are IP literals or `localhost`.
pub const SELF_IP: &str = "self:ip";
/// The provider of what is not a host name or URL.
pub const UNKNOWN: &str = "unknown";

/// The built-in suffix → provider table.
pub const DEFAULT_PROVIDERS: &[(&str, &str)] = &[
    ("onrender.com", "render"),
    ("railway.app", "railway"),
    ("up.railway.app", "railway"),
    ("fly.dev", "fly"),
    ("vercel.app", "vercel"),
    ("workers.dev", "cloudflare-workers"),
    ("pages.dev", "cloudflare-pages"),
    ("trycloudflare.com", "cloudflare-tunnel"),
    ("herokuapp.com", "heroku"),
    ("netlify.app", "netlify"),
    ("run.app", "google-cloud-run"),
    ("appspot.com", "google-app-engine"),
    ("cloudfunctions.net", "google-cloud-functions"),
    ("azurewebsites.net", "azure-app-service"),
    ("azurecontainerapps.io", "azure-container-apps"),
    ("amazonaws.com", "aws"),
    ("on.aws", "aws"),
    ("modal.run", "modal"),
    ("replit.app", "replit"),
    ("repl.co", "replit"),
    ("deno.dev", "deno-deploy"),
    ("smithery.ai", "smithery"),
    ("koyeb.app", "koyeb"),
    ("ondigitalocean.app", "digitalocean-app-platform"),
    ("hf.space", "huggingface-spaces"),
    ("ngrok.app", "ngrok"),
    ("ngrok-free.app", "ngrok"),
    ("ngrok.io", "ngrok"),
];

/// Second-level labels under two-letter TLDs that are not registrable on their own
/// (`example.co.uk`, `example.com.au`).
const SECOND_LEVELS: &[&str] = &[
    "co", "com", "org", "net", "ac", "gov", "edu", "mil", "ne", "or", "go",
];

/// One configured `incidents.providers` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    /// DNS suffix, matched on whole labels (`onrender.com`; a leading dot is ignored).
    pub suffix: String,
    /// Provider name: 1–64 characters of `[a-z0-9._-]` (`render`).
    pub provider: String,
}

impl ProviderEntry {
    pub fn new(suffix: impl Into<String>, provider: impl Into<String>) -> Self {
        Self {
            suffix: suffix.into(),
            provider: provider.into(),
        }
    }

    /// Checks the entry; the error names the field (`suffix: …` or `provider: …`).
    pub fn validate(&self) -> Result<(), String> {
        let suffix = self.suffix.trim();
        if suffix.is_empty() {
            return Err("suffix: must not be empty".into());
        }
        if suffix.contains("://") {
            return Err(format!(
                "suffix: {suffix:?} is a URL; give the host suffix only (onrender.com)"
            ));
        }
        if suffix.contains('/') {
            return Err(format!(
                "suffix: {suffix:?} contains '/'; give the host suffix only (onrender.com)"
            ));
        }
        let normalized = normalize_suffix(suffix);
        if normalized.is_empty() {
            return Err(format!("suffix: {suffix:?} has no labels"));
        }
        if normalized.split('.').any(str::is_empty) {
            return Err(format!("suffix: {suffix:?} has an empty label"));
        }
        if let Some(c) = normalized
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!(
                "suffix: {suffix:?} contains {c:?} (letters, digits, '-', '_' and '.' only)"
            ));
        }
        if is_ip_like(&normalized) {
            return Err(format!(
                "suffix: {suffix:?} is an IP address, not a DNS suffix"
            ));
        }
        let provider = &self.provider;
        if provider.is_empty() || provider.len() > 64 {
            return Err(format!(
                "provider: {provider:?} must be 1-64 characters long"
            ));
        }
        if let Some(c) = provider
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
        {
            return Err(format!(
                "provider: {provider:?} contains {c:?} (a-z, 0-9, '.', '_' and '-' only)"
            ));
        }
        Ok(())
    }
}

/// Suffix → provider, the configured entries over the built-in [`DEFAULT_PROVIDERS`].
///
/// In YAML it is the list of configured entries (`incidents.providers`); the built-in entries
/// always apply underneath, so [`ProviderTable::default()`] (no entries) knows the common
/// hosting providers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "Vec<ProviderEntry>", into = "Vec<ProviderEntry>")]
pub struct ProviderTable {
    /// The configured entries, as given.
    entries: Vec<ProviderEntry>,
    /// Normalized suffix → provider: configured entries, then the built-in ones.
    index: HashMap<String, String>,
}

impl Default for ProviderTable {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl PartialEq for ProviderTable {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for ProviderTable {}

impl From<Vec<ProviderEntry>> for ProviderTable {
    fn from(entries: Vec<ProviderEntry>) -> Self {
        Self::new(entries)
    }
}

impl From<ProviderTable> for Vec<ProviderEntry> {
    fn from(table: ProviderTable) -> Self {
        table.entries
    }
}

impl ProviderTable {
    /// The table of the configured `entries` over the built-in ones (call
    /// [`validate`](Self::validate) to check the entries).
    pub fn new(entries: Vec<ProviderEntry>) -> Self {
        let mut index = HashMap::with_capacity(entries.len() + DEFAULT_PROVIDERS.len());
        for entry in &entries {
            index
                .entry(normalize_suffix(&entry.suffix))
                .or_insert_with(|| entry.provider.clone());
        }
        for (suffix, provider) in DEFAULT_PROVIDERS {
            index
                .entry((*suffix).to_string())
                .or_insert_with(|| (*provider).to_string());
        }
        Self { entries, index }
    }

    /// The configured entries (without the built-in ones).
    pub fn entries(&self) -> &[ProviderEntry] {
        &self.entries
    }

    /// Checks the configured entries; the error names the field
    /// (`incidents.providers[2].suffix: …`).
    pub fn validate(&self) -> Result<(), String> {
        for (i, entry) in self.entries.iter().enumerate() {
            entry
                .validate()
                .map_err(|e| format!("incidents.providers[{i}].{e}"))?;
        }
        Ok(())
    }

    /// The provider of `host` (a host name or IP literal, without port): a provider name,
    /// `self:<domain>`, [`SELF_IP`] or [`UNKNOWN`]; never an IP address.
    pub fn provider_of(&self, host: &str) -> String {
        let host = host.trim();
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.starts_with('[') || host.contains(':') || host.contains('%') {
            // IPv6 (bracketed, bare, or with a zone id): never echo it.
            return SELF_IP.into();
        }
        let host = host.to_lowercase();
        if host == "localhost" || host.ends_with(".localhost") || is_ip_like(&host) {
            return SELF_IP.into();
        }
        if host.is_empty()
            || host.split('.').any(str::is_empty)
            || host.chars().any(|c| {
                c.is_ascii() && !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            })
        {
            return UNKNOWN.into();
        }
        // Longest suffix first: the whole host, then without its first label, ...
        let mut rest = host.as_str();
        loop {
            if let Some(provider) = self.index.get(rest) {
                return provider.clone();
            }
            match rest.split_once('.') {
                Some((_, tail)) => rest = tail,
                None => break,
            }
        }
        format!("self:{}", registrable_domain(&host))
    }

    /// The provider of the host of an `http(s)://` URL (ports, IPv6 brackets and userinfo
    /// handled); [`UNKNOWN`] when it is not one.
    pub fn provider_of_url(&self, url: &str) -> String {
        match host_of_url(url) {
            Some(host) => self.provider_of(host),
            None => UNKNOWN.into(),
        }
    }
}

/// Lowercase, without surrounding whitespace and a leading or trailing dot.
fn normalize_suffix(suffix: &str) -> String {
    let suffix = suffix.trim();
    let suffix = suffix.strip_prefix('.').unwrap_or(suffix);
    let suffix = suffix.strip_suffix('.').unwrap_or(suffix);
    suffix.to_lowercase()
}

/// Whether `host` (lowercase, no brackets) is an IP address to a URL parser: a valid
/// IPv4/IPv6 literal, or a name whose last label is a number (`127.1`, `0x7f000001`,
/// `10.0.0.010`), which WHATWG URL parsers read as IPv4.
fn is_ip_like(host: &str) -> bool {
    if host.parse::<Ipv4Addr>().is_ok() || host.parse::<Ipv6Addr>().is_ok() {
        return true;
    }
    let last = host.rsplit('.').next().unwrap_or(host);
    if last.is_empty() {
        return false;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match last.strip_prefix("0x") {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// The last two labels, or three under a two-letter TLD with a common second level.
fn registrable_domain(host: &str) -> &str {
    let labels: Vec<&str> = host.split('.').collect();
    let n = labels.len();
    let keep = if n >= 3
        && labels[n - 1].len() == 2
        && labels[n - 1].bytes().all(|b| b.is_ascii_alphabetic())
        && SECOND_LEVELS.contains(&labels[n - 2])
    {
        3
    } else {
        2
    };
    if n <= keep {
        return host;
    }
    let skip: usize = labels[..n - keep].iter().map(|l| l.len() + 1).sum();
    &host[skip..]
}

/// The host of an `http(s)://` URL: brackets kept for IPv6, port and userinfo removed.
fn host_of_url(url: &str) -> Option<&str> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // Userinfo should already be gone; drop it anyway (it is never a host).
    let authority = match authority.rfind('@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']')?;
        let after = &authority[close + 1..];
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (&authority[..=close], port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if let Some(port) = port
        && !port.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if host.is_empty() {
        return None;
    }
    // A bare IPv6 literal (colons without brackets) is not a URL host: `rsplit_once`
    // left colons in it.
    if !host.starts_with('[') && host.contains(':') {
        return None;
    }
    Some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ProviderTable {
        ProviderTable::default()
    }

    #[test]
    fn defaults_know_the_common_hosting_providers() {
        let t = table();
        let cases = [
            ("weather.onrender.com", "render"),
            ("x.railway.app", "railway"),
            ("x.up.railway.app", "railway"),
            ("x.fly.dev", "fly"),
            ("x.vercel.app", "vercel"),
            ("x.acme.workers.dev", "cloudflare-workers"),
            ("x.pages.dev", "cloudflare-pages"),
            ("x.herokuapp.com", "heroku"),
            ("x.netlify.app", "netlify"),
            ("svc-abc123-uc.a.run.app", "google-cloud-run"),
            ("x.azurewebsites.net", "azure-app-service"),
            ("abc.execute-api.us-east-1.amazonaws.com", "aws"),
            ("x--y.modal.run", "modal"),
            ("x.replit.app", "replit"),
            ("x.deno.dev", "deno-deploy"),
            ("server.smithery.ai", "smithery"),
        ];
        for (host, provider) in cases {
            assert_eq!(t.provider_of(host), provider, "{host}");
        }
        t.validate().unwrap();
        for (suffix, provider) in DEFAULT_PROVIDERS {
            ProviderEntry::new(*suffix, *provider)
                .validate()
                .unwrap_or_else(|e| panic!("{suffix}: {e}"));
        }
    }

    #[test]
    fn suffixes_match_whole_labels_only() {
        let t = table();
        assert_eq!(t.provider_of("x.onrender.com"), "render");
        assert_eq!(t.provider_of("onrender.com"), "render");
        assert_eq!(t.provider_of("a.b.c.onrender.com"), "render");
        assert_eq!(t.provider_of("evilonrender.com"), "self:evilonrender.com");
        assert_eq!(t.provider_of("x.evilonrender.com"), "self:evilonrender.com");
        assert_eq!(t.provider_of("onrender.com.evil.net"), "self:evil.net");
        assert_eq!(t.provider_of("notfly.dev"), "self:notfly.dev");
    }

    #[test]
    fn case_and_trailing_dot_are_ignored() {
        let t = table();
        assert_eq!(t.provider_of("Weather.OnRender.COM"), "render");
        assert_eq!(t.provider_of("weather.onrender.com."), "render");
        assert_eq!(t.provider_of("MCP.Example.COM."), "self:example.com");
        assert_eq!(t.provider_of(" x.fly.dev "), "fly");
    }

    #[test]
    fn the_longest_suffix_wins() {
        let t = ProviderTable::new(vec![
            ProviderEntry::new("onrender.com", "render"),
            ProviderEntry::new("eu.onrender.com", "render-eu"),
        ]);
        assert_eq!(t.provider_of("x.eu.onrender.com"), "render-eu");
        assert_eq!(t.provider_of("eu.onrender.com"), "render-eu");
        assert_eq!(t.provider_of("x.us.onrender.com"), "render");
        // A configured longer suffix under a built-in one, and the other way round.
        let t = ProviderTable::new(vec![ProviderEntry::new("com", "dot-com")]);
        assert_eq!(t.provider_of("x.herokuapp.com"), "heroku");
        assert_eq!(t.provider_of("example.com"), "dot-com");
    }

    #[test]
    fn configured_entries_add_and_override() {
        let t = ProviderTable::new(vec![
            ProviderEntry::new(".MCP.Example-Cloud.com", "example-cloud"),
            ProviderEntry::new("fly.dev", "fly-io"),
            ProviderEntry::new("fly.dev", "ignored-second"),
        ]);
        t.validate().unwrap();
        assert_eq!(t.provider_of("a.mcp.example-cloud.com"), "example-cloud");
        assert_eq!(t.provider_of("example-cloud.com"), "self:example-cloud.com");
        assert_eq!(t.provider_of("x.fly.dev"), "fly-io");
        assert_eq!(t.provider_of("x.onrender.com"), "render");
        assert_eq!(t.entries().len(), 3);
    }

    #[test]
    fn ip_literals_and_localhost_never_leak() {
        let t = table();
        let hosts = [
            "10.1.2.3",
            "192.168.0.1.",
            "127.1",
            "0x7f000001",
            "0x7f.0.0.1",
            "10.0.0.010",
            "2001:db8::1",
            "[2001:db8::1]",
            "[::1]",
            "::ffff:10.0.0.1",
            "fe80::1%eth0",
            "localhost",
            "LOCALHOST.",
            "api.localhost",
        ];
        for host in hosts {
            let provider = t.provider_of(host);
            assert_eq!(provider, SELF_IP, "{host}");
        }
        // Even a configured numeric suffix cannot turn an IP into something else.
        let t = ProviderTable::new(vec![ProviderEntry::new("0.1", "zero")]);
        assert!(t.validate().is_err());
        assert_eq!(t.provider_of("10.0.0.1"), SELF_IP);
    }

    #[test]
    fn self_hosted_domains_are_registrable_ish() {
        let t = table();
        assert_eq!(t.provider_of("a.b.example.co.uk"), "self:example.co.uk");
        assert_eq!(t.provider_of("example.co.uk"), "self:example.co.uk");
        assert_eq!(t.provider_of("mcp.example.com.au"), "self:example.com.au");
        assert_eq!(t.provider_of("x.example.ac.jp"), "self:example.ac.jp");
        assert_eq!(t.provider_of("mcp.acme.io"), "self:acme.io");
        assert_eq!(t.provider_of("acme.io"), "self:acme.io");
        // A three-letter TLD keeps two labels even with a `co` before it.
        assert_eq!(t.provider_of("a.b.co.com"), "self:co.com");
        // `co.uk` alone has no room for a third label.
        assert_eq!(t.provider_of("co.uk"), "self:co.uk");
        assert_eq!(t.provider_of("intranet"), "self:intranet");
        assert_eq!(t.provider_of("x.münchen.de"), "self:münchen.de");
    }

    #[test]
    fn what_is_not_a_host_is_unknown() {
        let t = table();
        for host in ["", ".", "a..b", "a b.com", "a/b.com", "user@x.com"] {
            assert_eq!(t.provider_of(host), UNKNOWN, "{host:?}");
        }
    }

    #[test]
    fn urls_give_their_host() {
        let t = table();
        let cases = [
            ("https://weather.onrender.com/mcp", "render"),
            ("https://weather.onrender.com:8443/mcp", "render"),
            ("HTTP://X.FLY.DEV", "fly"),
            ("http://x.fly.dev?x=1", "fly"),
            ("http://x.fly.dev#frag", "fly"),
            ("https://x.fly.dev./mcp", "fly"),
            ("https://user:pw@x.vercel.app/mcp", "vercel"),
            ("https://mcp.example.co.uk/sse", "self:example.co.uk"),
            ("http://10.0.0.5:8080/mcp", SELF_IP),
            ("http://[2001:db8::5]:8080/mcp", SELF_IP),
            ("http://[::1]/mcp", SELF_IP),
            ("http://localhost:3000/mcp", SELF_IP),
            ("ftp://x.fly.dev/", UNKNOWN),
            ("x.fly.dev/mcp", UNKNOWN),
            ("https:///mcp", UNKNOWN),
            ("https://x.fly.dev:port/", UNKNOWN),
            ("http://[2001:db8::5/mcp", UNKNOWN),
            ("http://[2001:db8::5]x/mcp", UNKNOWN),
            ("http://2001:db8::5/mcp", UNKNOWN),
            ("", UNKNOWN),
        ];
        for (url, provider) in cases {
            assert_eq!(t.provider_of_url(url), provider, "{url}");
        }
    }

    #[test]
    fn url_hosts_agree_with_the_url_crate() {
        let urls = [
            "https://weather.onrender.com/mcp",
            "https://Weather.OnRender.com:8443/mcp?x=1",
            "http://user@x.fly.dev/",
            "http://10.0.0.5:8080/mcp",
            "http://[2001:db8::5]:8080/mcp",
            "https://a.b.example.co.uk/sse#x",
        ];
        let t = table();
        for raw in urls {
            let parsed = url::Url::parse(raw).unwrap();
            let expected = match parsed.host().unwrap() {
                url::Host::Domain(d) => t.provider_of(d),
                url::Host::Ipv4(_) | url::Host::Ipv6(_) => SELF_IP.to_string(),
            };
            assert_eq!(t.provider_of_url(raw), expected, "{raw}");
        }
    }

    #[test]
    fn no_output_contains_an_address() {
        let t = table();
        let inputs = [
            "http://10.0.0.5/",
            "http://[fe80::1%25eth0]/",
            "http://0x0a000005/",
            "http://167772165/",
            "http://10.0.5/",
        ];
        for input in inputs {
            let out = t.provider_of_url(input);
            assert!(out == SELF_IP || out == UNKNOWN, "{input} gave {out}");
        }
    }

    #[test]
    fn config_deserializes_and_validates_with_field_names() {
        let yaml = "- suffix: mcp.example-cloud.com\n  provider: example-cloud\n";
        let t: ProviderTable = serde_yaml_ng::from_str(yaml).unwrap();
        t.validate().unwrap();
        assert_eq!(t.provider_of("a.mcp.example-cloud.com"), "example-cloud");
        assert_eq!(t.provider_of("x.onrender.com"), "render");
        let back = serde_json::to_value(&t).unwrap();
        assert_eq!(
            back,
            serde_json::json!([{"suffix": "mcp.example-cloud.com", "provider": "example-cloud"}])
        );

        let unknown_field = "- suffix: a.com\n  provider: a\n  region: x\n";
        assert!(serde_yaml_ng::from_str::<ProviderTable>(unknown_field).is_err());

        let bad = |entries: Vec<ProviderEntry>| ProviderTable::new(entries).validate().unwrap_err();
        let ok = ProviderEntry::new("a.com", "a");
        let err = bad(vec![
            ok.clone(),
            ok.clone(),
            ProviderEntry::new("https://x.com", "x"),
        ]);
        assert!(err.starts_with("incidents.providers[2].suffix: "), "{err}");
        for suffix in [
            "",
            "  ",
            ".",
            "x.com/mcp",
            "a..b",
            "a b.com",
            "x.com:443",
            "10.0.0.1",
        ] {
            let err = bad(vec![ProviderEntry::new(suffix, "x")]);
            assert!(
                err.starts_with("incidents.providers[0].suffix: "),
                "{suffix:?}: {err}"
            );
        }
        let long = "x".repeat(65);
        for provider in ["", "Render", "self:x", "a b", "a/b", long.as_str()] {
            let err = bad(vec![ProviderEntry::new("a.com", provider)]);
            assert!(
                err.starts_with("incidents.providers[0].provider: "),
                "{provider:?}: {err}"
            );
        }
        ProviderEntry::new("a.com", "x".repeat(64))
            .validate()
            .unwrap();
        ProviderEntry::new("a.com", "google-cloud_run.v2")
            .validate()
            .unwrap();
    }
}

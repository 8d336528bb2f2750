//! Guarding the prober against server-side request forgery.
//!
//! Target URLs come from users, so before connecting the prober resolves the host once and
//! checks **every** address against a [`TargetPolicy`]: loopback, private, link-local,
//! shared (CGNAT), multicast, broadcast, documentation and reserved ranges and cloud
//! metadata endpoints are refused unless the operator allows them. If any resolved address
//! is forbidden the target is refused (the good ones are not picked: a name that resolves
//! to both public and internal addresses is an attack or a misconfiguration). The caller
//! must connect only to [`Resolved::addrs`] — never resolve the name again — so DNS
//! rebinding cannot swap in another address between the check and the connection. A
//! redirect's target is a new URL and goes through [`resolve_checked`] again.
//!
//! URLs with credentials (`https://user:pass@host/`) are refused, and errors render URLs
//! with [`redact_url`] (`scheme://host:port/path`: no userinfo, query or fragment, which
//! may carry tokens).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use mcpulse_schemas::{FailureReason, Phase};
use serde::{Deserialize, Deserializer};
use url::{Host, Url};

/// Which internal addresses the prober may connect to (`policy:` in `targets.yaml`; an
/// operator setting). By default only public unicast addresses are allowed.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TargetPolicy {
    /// Allow loopback addresses (127.0.0.0/8, ::1, and their IPv4-mapped forms). For
    /// tests and single-host setups.
    pub allow_loopback: bool,
    /// Allow private addresses: RFC 1918 (10/8, 172.16/12, 192.168/16), shared address
    /// space 100.64/10 (CGNAT, Tailscale), unique-local fc00::/7, the deprecated site-local
    /// fec0::/10 and the local-use NAT64 prefix 64:ff9b:1::/48. Cloud metadata addresses
    /// in these ranges stay refused.
    pub allow_private: bool,
    /// Networks (`10.1.0.0/16`, `fd12::/64`, or a bare address meaning a single host)
    /// allowed whatever their class (link-local, reserved, …). A cloud metadata address
    /// (169.254.169.254, 169.254.170.2, fd00:ec2::254, 100.100.100.200) is allowed only
    /// by an entry naming exactly that host (`/32` or `/128`), never by a wider network.
    #[serde(deserialize_with = "deserialize_nets")]
    pub allow_cidrs: Vec<IpNet>,
    /// Networks always refused, even if allowed above (deny wins).
    #[serde(deserialize_with = "deserialize_nets")]
    pub deny_cidrs: Vec<IpNet>,
}

fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is not a network (like 10.0.0.0/8) or an address"))
}

fn deserialize_nets<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|s| parse_net(s).map_err(serde::de::Error::custom))
        .collect()
}

/// The kind of an address, as far as the policy is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrClass {
    /// Public unicast: always allowed (unless in `deny_cidrs`).
    Public,
    /// Loopback: allowed with `allow_loopback`.
    Loopback,
    /// Private, shared (CGNAT) or unique-local: allowed with `allow_private`.
    Private,
    /// Link-local (169.254/16, fe80::/10): only `allow_cidrs`.
    LinkLocal,
    /// A cloud metadata endpoint: only an exact `allow_cidrs` host entry.
    Metadata,
    /// 0.0.0.0, `::` (connecting to them reaches the local host): only `allow_cidrs`.
    Unspecified,
    /// Multicast: only `allow_cidrs`.
    Multicast,
    /// 255.255.255.255: only `allow_cidrs`.
    Broadcast,
    /// Documentation ranges (192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32,
    /// 3fff::/20): only `allow_cidrs`.
    Documentation,
    /// Other special-purpose or unallocated ranges (0/8, 192.0.0/24, 198.18/15,
    /// 240/4, Teredo, IPv6 outside 2000::/3, …): only `allow_cidrs`.
    Reserved,
}

impl AddrClass {
    fn describe(self) -> &'static str {
        match self {
            AddrClass::Public => "public",
            AddrClass::Loopback => "a loopback address (policy.allow_loopback allows it)",
            AddrClass::Private => "a private address (policy.allow_private allows it)",
            AddrClass::LinkLocal => "a link-local address (only policy.allow_cidrs allows it)",
            AddrClass::Metadata => {
                "a cloud metadata address (only an exact policy.allow_cidrs host entry allows it)"
            }
            AddrClass::Unspecified => "an unspecified address (only policy.allow_cidrs allows it)",
            AddrClass::Multicast => "a multicast address (only policy.allow_cidrs allows it)",
            AddrClass::Broadcast => "a broadcast address (only policy.allow_cidrs allows it)",
            AddrClass::Documentation => {
                "a documentation address (only policy.allow_cidrs allows it)"
            }
            AddrClass::Reserved => "a reserved address (only policy.allow_cidrs allows it)",
        }
    }
}

const METADATA_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, OpenStack, …
    Ipv4Addr::new(169, 254, 170, 2),   // AWS ECS task credentials
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
];
const METADATA_V6: [Ipv6Addr; 1] = [
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254), // AWS IMDS over IPv6
];

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    let [a, b, c, d, e, f, g, h] = net;
    u128::from(ip) & mask == u128::from(Ipv6Addr::new(a, b, c, d, e, f, g, h)) & mask
}

/// The class of an IPv4 address.
pub fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    if METADATA_V4.contains(&ip) {
        AddrClass::Metadata
    } else if ip.is_unspecified() {
        AddrClass::Unspecified
    } else if in_v4(ip, [0, 0, 0, 0], 8) {
        AddrClass::Reserved
    } else if ip.is_loopback() {
        AddrClass::Loopback
    } else if ip.is_private() || in_v4(ip, [100, 64, 0, 0], 10) {
        AddrClass::Private
    } else if ip.is_link_local() {
        AddrClass::LinkLocal
    } else if ip.is_broadcast() {
        AddrClass::Broadcast
    } else if ip.is_multicast() {
        AddrClass::Multicast
    } else if ip.is_documentation() {
        AddrClass::Documentation
    } else if in_v4(ip, [192, 0, 0, 0], 24)
        || in_v4(ip, [192, 88, 99, 0], 24)
        || in_v4(ip, [198, 18, 0, 0], 15)
        || in_v4(ip, [240, 0, 0, 0], 4)
    {
        AddrClass::Reserved
    } else {
        AddrClass::Public
    }
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped (::ffff:0:0/96),
/// IPv4-compatible (::/96, deprecated), NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from(bits as u32);
    if in_v6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96)
        || in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96)
        || (in_v6(ip, [0; 8], 96) && bits > 1)
    {
        Some(low32)
    } else if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        Some(Ipv4Addr::from((bits >> 80) as u32))
    } else {
        None
    }
}

/// The class of an IPv6 address (addresses embedding an IPv4 address take its class).
pub fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    if METADATA_V6.contains(&ip) {
        return AddrClass::Metadata;
    }
    if ip.is_unspecified() {
        return AddrClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddrClass::Loopback;
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    if in_v6(ip, [0xfc00, 0, 0, 0, 0, 0, 0, 0], 7)
        || in_v6(ip, [0xfec0, 0, 0, 0, 0, 0, 0, 0], 10)
        || in_v6(ip, [0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48)
    {
        AddrClass::Private
    } else if in_v6(ip, [0xfe80, 0, 0, 0, 0, 0, 0, 0], 10) {
        AddrClass::LinkLocal
    } else if ip.is_multicast() {
        AddrClass::Multicast
    } else if in_v6(ip, [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32)
        || in_v6(ip, [0x3fff, 0, 0, 0, 0, 0, 0, 0], 20)
    {
        AddrClass::Documentation
    } else if in_v6(ip, [0x2001, 0, 0, 0, 0, 0, 0, 0], 23)
        || !in_v6(ip, [0x2000, 0, 0, 0, 0, 0, 0, 0], 3)
    {
        // 2001::/23: IETF protocol assignments (Teredo, benchmarking, ORCHID, …);
        // outside 2000::/3: not global unicast (::ffff:0:0:0/96, 100::/64, …).
        AddrClass::Reserved
    } else {
        AddrClass::Public
    }
}

/// The class of an address.
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

impl TargetPolicy {
    /// Checks one address. `Err` holds the reason (naming the address and its class).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        // The address and, for IPv6 forms of an IPv4 address, that IPv4 address: both
        // are matched against the operator's networks.
        let mut forms = vec![ip];
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = embedded_v4(v6)
        {
            forms.push(IpAddr::V4(v4));
        }
        if self
            .deny_cidrs
            .iter()
            .any(|net| forms.iter().any(|f| net.contains(f)))
        {
            return Err(format!("{ip} is in policy.deny_cidrs"));
        }
        let class = classify(ip);
        let allowed_by_cidr = self.allow_cidrs.iter().any(|net| {
            forms.iter().any(|f| {
                net.contains(f)
                    && (class != AddrClass::Metadata || net.prefix_len() == net.max_prefix_len())
            })
        });
        let allowed = allowed_by_cidr
            || match class {
                AddrClass::Public => true,
                AddrClass::Loopback => self.allow_loopback,
                AddrClass::Private => self.allow_private,
                _ => false,
            };
        if allowed {
            Ok(())
        } else {
            Err(format!("{ip} is {}", class.describe()))
        }
    }
}

/// Why a target was not resolved or not allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The URL is unusable (scheme, credentials, no host). Never echoes the URL.
    #[error("invalid target URL: {0}")]
    InvalidUrl(String),
    /// The name did not resolve (failure_reason `dns_failure`).
    #[error("dns lookup failed: {0}")]
    Dns(String),
    /// The lookup did not finish in time (failure_reason `timeout`, phase `dns`).
    #[error("dns lookup of {host} timed out after {after_ms} ms")]
    DnsTimeout {
        /// The name looked up.
        host: String,
        /// The deadline.
        after_ms: u64,
    },
    /// The policy refuses the target: a configuration matter, not a server failure.
    #[error("target refused: {reason}")]
    Refused {
        /// What was refused and which setting would allow it.
        reason: String,
    },
}

impl GuardError {
    /// The probe failure this error is, if any: `Refused` and `InvalidUrl` are not server
    /// failures (the probe is not run) and give `None`.
    pub fn failure_reason(&self) -> Option<(FailureReason, Option<Phase>)> {
        match self {
            GuardError::Dns(_) => Some((FailureReason::DnsFailure, Some(Phase::Dns))),
            GuardError::DnsTimeout { .. } => Some((FailureReason::Timeout, Some(Phase::Dns))),
            GuardError::InvalidUrl(_) | GuardError::Refused { .. } => None,
        }
    }
}

/// `scheme://host:port/path` of `url`: without userinfo, query and fragment (they may
/// carry credentials), for logs, errors and results. The port is always shown (the
/// scheme's default when the URL has none).
pub fn redact_url(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

/// Checks what can be checked without resolving: `http`/`https` only, no credentials in
/// the URL, a host. Errors never echo the URL.
pub fn check_url(url: &Url) -> Result<(), GuardError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(GuardError::InvalidUrl(format!(
            "scheme {:?} is not supported (use http or https)",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(GuardError::InvalidUrl(
            "credentials in the URL are refused (use the target's credential field)".into(),
        ));
    }
    if url.host().is_none() {
        return Err(GuardError::InvalidUrl("the URL has no host".into()));
    }
    Ok(())
}

/// Parses a target URL and applies [`check_url`]. Errors never echo the text.
pub fn parse_target_url(text: &str) -> Result<Url, GuardError> {
    let url = Url::parse(text.trim()).map_err(|e| GuardError::InvalidUrl(e.to_string()))?;
    check_url(&url)?;
    Ok(url)
}

/// A target's checked addresses: connect only to these.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// The URL's host: a domain name, or an IP address without brackets.
    pub host: String,
    /// The URL's port (or the scheme's default).
    pub port: u16,
    /// Every address the name resolved to (resolver order, duplicates removed), all
    /// allowed by the policy.
    pub addrs: Vec<SocketAddr>,
    /// Time spent in the DNS lookup, in milliseconds (0 for IP-literal hosts).
    pub dns_ms: f64,
}

/// Resolves `url`'s host (system resolver, bounded by `dns_timeout`) and checks every
/// address against `policy`. IP-literal hosts skip DNS.
pub async fn resolve_checked(
    url: &Url,
    policy: &TargetPolicy,
    dns_timeout: Duration,
) -> Result<Resolved, GuardError> {
    check_url(url)?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| GuardError::InvalidUrl("the URL has no port".into()))?;
    let (host, addrs, dns_ms) = match url.host() {
        Some(Host::Ipv4(ip)) => (ip.to_string(), vec![SocketAddr::new(ip.into(), port)], 0.0),
        Some(Host::Ipv6(ip)) => (ip.to_string(), vec![SocketAddr::new(ip.into(), port)], 0.0),
        Some(Host::Domain(name)) => {
            let start = Instant::now();
            let lookup = tokio::time::timeout(dns_timeout, tokio::net::lookup_host((name, port)));
            let result = lookup.await;
            let dns_ms = start.elapsed().as_secs_f64() * 1000.0;
            let found = match result {
                Err(_) => {
                    return Err(GuardError::DnsTimeout {
                        host: name.to_string(),
                        after_ms: dns_timeout.as_millis() as u64,
                    });
                }
                Ok(Err(e)) => return Err(GuardError::Dns(format!("{name}: {e}"))),
                Ok(Ok(found)) => found,
            };
            let mut addrs: Vec<SocketAddr> = Vec::new();
            for addr in found {
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
            if addrs.is_empty() {
                return Err(GuardError::Dns(format!("{name}: no addresses")));
            }
            (name.to_string(), addrs, dns_ms)
        }
        None => return Err(GuardError::InvalidUrl("the URL has no host".into())),
    };
    for addr in &addrs {
        policy
            .check_ip(addr.ip())
            .map_err(|reason| GuardError::Refused {
                reason: if host == addr.ip().to_string() {
                    reason
                } else {
                    format!("{host} resolves to {reason}")
                },
            })?;
    }
    Ok(Resolved {
        host,
        port,
        addrs,
        dns_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(yaml: &str) -> TargetPolicy {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn classifies_ranges() {
        let cases = [
            ("8.8.8.8", AddrClass::Public),
            ("1.1.1.1", AddrClass::Public),
            ("127.0.0.1", AddrClass::Loopback),
            ("127.255.0.9", AddrClass::Loopback),
            ("::1", AddrClass::Loopback),
            ("0.0.0.0", AddrClass::Unspecified),
            ("::", AddrClass::Unspecified),
            ("0.1.2.3", AddrClass::Reserved),
            ("10.1.2.3", AddrClass::Private),
            ("172.16.0.1", AddrClass::Private),
            ("172.31.255.255", AddrClass::Private),
            ("172.32.0.1", AddrClass::Public),
            ("192.168.1.1", AddrClass::Private),
            ("100.64.0.1", AddrClass::Private),
            ("100.127.255.255", AddrClass::Private),
            ("100.128.0.1", AddrClass::Public),
            ("fc00::1", AddrClass::Private),
            ("fd12:3456::1", AddrClass::Private),
            ("169.254.1.1", AddrClass::LinkLocal),
            ("fe80::1", AddrClass::LinkLocal),
            ("169.254.169.254", AddrClass::Metadata),
            ("169.254.170.2", AddrClass::Metadata),
            ("100.100.100.200", AddrClass::Metadata),
            ("fd00:ec2::254", AddrClass::Metadata),
            ("224.0.0.1", AddrClass::Multicast),
            ("ff02::1", AddrClass::Multicast),
            ("255.255.255.255", AddrClass::Broadcast),
            ("192.0.2.1", AddrClass::Documentation),
            ("198.51.100.1", AddrClass::Documentation),
            ("203.0.113.1", AddrClass::Documentation),
            ("2001:db8::1", AddrClass::Documentation),
            ("240.0.0.1", AddrClass::Reserved),
            ("198.18.0.1", AddrClass::Reserved),
            ("192.0.0.8", AddrClass::Reserved),
            ("2001::1", AddrClass::Reserved),
            ("100::1", AddrClass::Reserved),
            ("2606:4700::1111", AddrClass::Public),
            // IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms take the IPv4 class.
            ("::ffff:127.0.0.1", AddrClass::Loopback),
            ("::ffff:10.0.0.1", AddrClass::Private),
            ("::ffff:169.254.169.254", AddrClass::Metadata),
            ("::ffff:8.8.8.8", AddrClass::Public),
            ("::127.0.0.1", AddrClass::Loopback),
            ("64:ff9b::a9fe:a9fe", AddrClass::Metadata),
            ("64:ff9b::7f00:1", AddrClass::Loopback),
            ("64:ff9b::808:808", AddrClass::Public),
            ("64:ff9b:1::1", AddrClass::Private),
            ("2002:7f00:1::1", AddrClass::Loopback),
            ("2002:c0a8:101::1", AddrClass::Private),
        ];
        for (addr, class) in cases {
            assert_eq!(classify(ip(addr)), class, "{addr}");
        }
    }

    #[test]
    fn default_policy_refuses_every_internal_range() {
        let p = TargetPolicy::default();
        for addr in [
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.0.1",
            "100.64.1.1",
            "fd00::1",
            "169.254.0.1",
            "fe80::1",
            "169.254.169.254",
            "fd00:ec2::254",
            "100.100.100.200",
            "224.0.0.251",
            "255.255.255.255",
            "192.0.2.7",
            "2001:db8::7",
            "::ffff:127.0.0.1",
            "::ffff:192.168.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            let err = p.check_ip(ip(addr)).unwrap_err();
            assert!(err.starts_with(addr), "{err}");
        }
        p.check_ip(ip("93.184.215.14")).unwrap();
        p.check_ip(ip("2606:2800:21f:cb07:6820:80da:af6b:8b2c"))
            .unwrap();
    }

    #[test]
    fn flags_and_cidrs_allow() {
        let p = policy("allow_loopback: true");
        p.check_ip(ip("127.0.0.1")).unwrap();
        p.check_ip(ip("::1")).unwrap();
        p.check_ip(ip("::ffff:127.0.0.1")).unwrap();
        assert!(p.check_ip(ip("10.0.0.1")).is_err());

        let p = policy("allow_private: true");
        p.check_ip(ip("10.0.0.1")).unwrap();
        p.check_ip(ip("fd12::1")).unwrap();
        p.check_ip(ip("100.64.0.1")).unwrap();
        assert!(p.check_ip(ip("127.0.0.1")).is_err());
        // Metadata stays refused even when its range is allowed.
        let err = p.check_ip(ip("100.100.100.200")).unwrap_err();
        assert!(err.contains("metadata"), "{err}");
        assert!(p.check_ip(ip("fd00:ec2::254")).is_err());

        let p = policy("allow_cidrs: [169.254.0.0/16, 192.0.2.0/24]");
        p.check_ip(ip("169.254.10.1")).unwrap();
        p.check_ip(ip("::ffff:192.0.2.1")).unwrap();
        assert!(p.check_ip(ip("169.254.169.254")).is_err());
        let p = policy("allow_cidrs: [169.254.169.254]");
        p.check_ip(ip("169.254.169.254")).unwrap();

        let p = policy("allow_private: true\ndeny_cidrs: [10.9.0.0/16]");
        p.check_ip(ip("10.8.0.1")).unwrap();
        let err = p.check_ip(ip("10.9.0.1")).unwrap_err();
        assert!(err.contains("deny_cidrs"), "{err}");
        let p = policy("deny_cidrs: [8.8.8.0/24]");
        assert!(p.check_ip(ip("::ffff:8.8.8.8")).is_err());
    }

    #[test]
    fn policy_rejects_bad_fields() {
        let err = serde_yaml_ng::from_str::<TargetPolicy>("allow_cidrs: [nope]").unwrap_err();
        assert!(err.to_string().contains("not a network"), "{err}");
        assert!(serde_yaml_ng::from_str::<TargetPolicy>("allow_everything: true").is_err());
    }

    #[test]
    fn urls_are_checked_and_redacted() {
        let err = parse_target_url("https://alice:hunter2@example.com/mcp").unwrap_err();
        assert!(matches!(err, GuardError::InvalidUrl(_)));
        let text = err.to_string();
        assert!(
            text.contains("credentials") && !text.contains("hunter2") && !text.contains("alice")
        );
        let err = parse_target_url("https://tok3n@example.com/").unwrap_err();
        assert!(!err.to_string().contains("tok3n"));
        let err = parse_target_url("ftp://example.com/").unwrap_err();
        assert!(err.to_string().contains("scheme"), "{err}");
        assert!(
            parse_target_url("not a url ?key=s3cret")
                .unwrap_err()
                .to_string()
                .find("s3cret")
                .is_none()
        );

        let url = Url::parse("https://u:p@example.com/mcp/v1?api_key=s3cret#frag").unwrap();
        assert_eq!(redact_url(&url), "https://example.com:443/mcp/v1");
        let url = Url::parse("http://[::1]:8080/mcp?x=1").unwrap();
        assert_eq!(redact_url(&url), "http://[::1]:8080/mcp");
    }

    #[tokio::test]
    async fn ip_literals_skip_dns() {
        let allow = policy("allow_loopback: true");
        let url = Url::parse("http://127.0.0.1:9/mcp").unwrap();
        let r = resolve_checked(&url, &allow, T).await.unwrap();
        assert_eq!(r.addrs, vec!["127.0.0.1:9".parse::<SocketAddr>().unwrap()]);
        assert_eq!((r.host.as_str(), r.port, r.dns_ms), ("127.0.0.1", 9, 0.0));

        let url = Url::parse("http://[::1]/mcp").unwrap();
        let r = resolve_checked(&url, &allow, T).await.unwrap();
        assert_eq!(r.addrs, vec!["[::1]:80".parse::<SocketAddr>().unwrap()]);
        assert_eq!(r.host, "::1");

        let err = resolve_checked(&url, &TargetPolicy::default(), T)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, GuardError::Refused { reason } if reason.contains("loopback")),
            "{err}"
        );
        assert_eq!(err.failure_reason(), None);

        // WHATWG URL parsing normalises odd IPv4 spellings; they are still loopback.
        let url = Url::parse("http://0x7f.1/").unwrap();
        assert!(
            resolve_checked(&url, &TargetPolicy::default(), T)
                .await
                .is_err()
        );
        let url = Url::parse("http://[::ffff:169.254.169.254]/").unwrap();
        let err = resolve_checked(&url, &allow, T).await.unwrap_err();
        assert!(err.to_string().contains("metadata"), "{err}");

        let url = Url::parse("https://93.184.215.14/").unwrap();
        let r = resolve_checked(&url, &TargetPolicy::default(), T)
            .await
            .unwrap();
        assert_eq!(r.port, 443);
    }

    #[tokio::test]
    async fn localhost_is_refused_by_default() {
        let url = Url::parse("http://localhost:8080/mcp").unwrap();
        let err = resolve_checked(&url, &TargetPolicy::default(), T)
            .await
            .unwrap_err();
        let GuardError::Refused { reason } = &err else {
            panic!("{err:?}");
        };
        assert!(reason.starts_with("localhost resolves to"), "{reason}");
        let r = resolve_checked(&url, &policy("allow_loopback: true"), T)
            .await
            .unwrap();
        assert!(
            !r.addrs.is_empty()
                && r.addrs
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.port() == 8080)
        );
        assert!(r.dns_ms >= 0.0);
    }

    #[tokio::test]
    async fn dns_failure_is_typed() {
        let url = Url::parse("https://nonexistent.invalid/mcp?token=s3cret").unwrap();
        let err = resolve_checked(&url, &TargetPolicy::default(), T)
            .await
            .unwrap_err();
        match &err {
            GuardError::Dns(message) => {
                assert!(message.contains("nonexistent.invalid"), "{message}")
            }
            // A resolver that is configured but unreachable hangs until the deadline.
            GuardError::DnsTimeout { .. } => {}
            other => panic!("{other:?}"),
        }
        assert!(!err.to_string().contains("s3cret"));
        assert!(err.failure_reason().is_some());

        let err = resolve_checked(&url, &TargetPolicy::default(), Duration::ZERO).await;
        assert!(err.is_err());
        assert_eq!(
            GuardError::DnsTimeout {
                host: "x".into(),
                after_ms: 1
            }
            .failure_reason(),
            Some((FailureReason::Timeout, Some(Phase::Dns)))
        );
        assert_eq!(
            GuardError::Dns("x".into()).failure_reason(),
            Some((FailureReason::DnsFailure, Some(Phase::Dns)))
        );
    }
}

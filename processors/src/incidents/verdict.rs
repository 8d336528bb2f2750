//! The verdict stage: probe results of one event-time minute of one (tenant, server),
//! across regions, become one [`Verdict`] (issue 6 "Verdict"; DESIGN.md "Severity").
//!
//! # Buckets
//!
//! [`VerdictAggregator::observe`] puts a probe into the bucket of (tenant, server, minute
//! of `started_at`). A bucket keeps one result per region: when a region reports more than
//! once in a minute, its **worst** result stays — a failure beats a warning, a warning
//! beats a non-outage failure (`auth_required`), which beats a success; between results of
//! the same rank the later one (by `started_at`, then by arrival) stays.
//!
//! [`VerdictAggregator::close`] turns every bucket of a minute before its argument into a
//! verdict, sorted by (tenant, server, minute). A probe of a minute that was already closed
//! is late: it is counted ([`VerdictAggregator::late`]) and dropped. Memory is one small
//! entry per region of each open bucket; closed buckets are forgotten.
//!
//! # Checkpoints replay open minutes
//!
//! Open buckets are not checkpointed: the aggregator remembers the log offset of the
//! first probe of each open minute ([`VerdictAggregator::replay_from`]), the checkpoint
//! covers only what is before it, and a restart replays the open minutes from the log.
//! Probes of minutes closed by then are late again and dropped, so the rebuilt buckets
//! are exactly the ones the crashed process had. Buckets of probes observed without an
//! offset, or restored from a checkpoint that carried them, are checkpointed whole.
//!
//! # Rules
//!
//! Per region, the kept result is:
//!
//! * **failing** when `ok` is false and its `failure_reason` has a class
//!   ([`FailureClass::of_reason`]) — whatever the reason, so `ok: false` with
//!   `latency_degraded` is a (latency) failure;
//! * **not an outage** when `ok` is false with `auth_required` (alive and protected) or,
//!   for results that skipped validation, without any reason: the region counts as
//!   succeeding and the detail names it;
//! * a **warning** when `ok` is true with `latency_degraded` or `tls_expiring`;
//! * **ok** otherwise.
//!
//! With F failing regions out of N that probed, the scope is **global** when F ≥ 2, or when
//! N < 2 and F = N ≥ 1 (one region probing, and failing); **regional** when 1 ≤ F and not
//! global (exactly one region failing while at least one other succeeds); **degraded**
//! when F = 0 and some region warned; **healthy** otherwise.
//!
//! The reason of a global or regional verdict is the most common reason among the failing
//! regions, ties broken by the taxonomy order ([`FailureReason::ALL`]); its class is
//! [`FailureClass::of_reason`] of that reason. A degraded verdict's reason is
//! `latency_degraded` when any region was slow (a slow server is felt now, a certificate
//! expiring later), else `tls_expiring`. A healthy verdict has neither.
//!
//! The detail is one line naming reasons and regions only — never an address, a prober id
//! or a probe's `failure_detail` (which may quote either):
//! `tcp_refused from eu-west, us-east (2 of 3 regions)`,
//! `latency_degraded from us-east (1 of 3 regions)`,
//! `ok from eu-west (1 of 2 regions); auth_required from us-east (not an outage)`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use mcpulse_schemas::probe::{FailureReason, ProbeResult};
use serde::{Deserialize, Serialize};

use super::provider::UNKNOWN;
use super::types::{FailureClass, Scope, Verdict};

/// The start of the minute `t` lies in.
pub fn minute_start(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(60), 0).unwrap_or(t)
}

/// What a region's result means for the verdict, ordered from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// `ok: false` that is not an outage: `auth_required`, or no reason at all.
    NotAnOutage(Option<FailureReason>),
    Warning(FailureReason),
    Failing(FailureReason),
}

impl Outcome {
    fn rank(self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::NotAnOutage(_) => 1,
            Outcome::Warning(_) => 2,
            Outcome::Failing(_) => 3,
        }
    }
}

/// The part of a probe result a verdict needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RegionResult {
    ok: bool,
    reason: Option<FailureReason>,
    started_at: DateTime<Utc>,
}

impl RegionResult {
    fn outcome(&self) -> Outcome {
        match (self.ok, self.reason) {
            (false, Some(reason)) if FailureClass::of_reason(reason).is_some() => {
                Outcome::Failing(reason)
            }
            (false, reason) => Outcome::NotAnOutage(reason),
            (true, Some(reason)) if reason.is_warning() => Outcome::Warning(reason),
            (true, _) => Outcome::Ok,
        }
    }

    /// Whether `self` replaces `kept` as the region's result of the minute.
    fn supersedes(&self, kept: &RegionResult) -> bool {
        let (new, old) = (self.outcome().rank(), kept.outcome().rank());
        new > old || (new == old && self.started_at >= kept.started_at)
    }
}

/// One open (tenant, server, minute).
#[derive(Clone, Debug, Default)]
struct Bucket {
    provider: String,
    /// One result per region, sorted by region.
    regions: Vec<(String, RegionResult)>,
    /// Every probe of it came with a log offset (so a restart can replay it, and the
    /// checkpoint leaves it out); false for buckets restored from a checkpoint.
    replayable: bool,
}

impl Bucket {
    fn observe(&mut self, region: &str, result: RegionResult, provider: &str) {
        if self.provider.is_empty() || (self.provider == UNKNOWN && provider != UNKNOWN) {
            self.provider = provider.to_owned();
        }
        match self
            .regions
            .binary_search_by(|(r, _)| r.as_str().cmp(region))
        {
            Ok(i) => {
                if result.supersedes(&self.regions[i].1) {
                    self.regions[i].1 = result;
                }
            }
            Err(i) => self.regions.insert(i, (region.to_owned(), result)),
        }
    }

    /// Every region succeeded (or failed without an outage): a healthy verdict.
    fn is_quiet(&self) -> bool {
        self.regions
            .iter()
            .all(|(_, r)| matches!(r.outcome(), Outcome::Ok | Outcome::NotAnOutage(_)))
    }
}

/// The fields of a probe result a verdict needs (borrowed: the stage decodes only these).
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    pub server: &'a str,
    pub region: &'a str,
    pub started_at: DateTime<Utc>,
    pub ok: bool,
    pub failure_reason: Option<FailureReason>,
}

impl<'a> From<&'a ProbeResult> for Observation<'a> {
    fn from(p: &'a ProbeResult) -> Self {
        Self {
            server: &p.server,
            region: &p.region,
            started_at: p.started_at,
            ok: p.ok,
            failure_reason: p.failure_reason,
        }
    }
}

/// Checkpointed state of a [`VerdictAggregator`] (JSON-friendly).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VerdictState {
    /// Open buckets, sorted by (tenant, server, minute).
    #[serde(default)]
    pub buckets: Vec<BucketState>,
    /// Minutes before this are closed (the greatest `close` argument so far).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_before: Option<DateTime<Utc>>,
    /// Late probes dropped so far.
    #[serde(default)]
    pub late: u64,
}

/// One open bucket in a [`VerdictState`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketState {
    pub tenant: String,
    pub server: String,
    pub minute: DateTime<Utc>,
    pub provider: String,
    /// The kept result of each region, sorted by region.
    pub regions: Vec<RegionState>,
}

/// The kept result of one region in a [`BucketState`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionState {
    pub region: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<FailureReason>,
    pub started_at: DateTime<Utc>,
}

type Minutes = BTreeMap<DateTime<Utc>, Bucket>;

/// The per-partition state of the verdict stage (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct VerdictAggregator {
    /// tenant → server → minute → bucket (hashed: one lookup per probe is the hot path;
    /// verdicts and checkpoints are sorted when they are produced).
    tenants: HashMap<String, HashMap<String, Minutes>>,
    open: usize,
    /// Per open minute, the log offset of its first probe (see "Checkpoints replay open
    /// minutes").
    first_offsets: BTreeMap<DateTime<Utc>, u64>,
    closed_before: Option<DateTime<Utc>>,
    late: u64,
}

impl VerdictAggregator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Buffers `probe` of `tenant` in its minute; `provider` is the endpoint's hosting
    /// provider ([`ProviderTable::provider_of_url`](super::provider::ProviderTable)), kept
    /// from the first probe of the bucket (a later known provider replaces `unknown`).
    /// A probe of an already closed minute is counted as late and dropped.
    pub fn observe(&mut self, tenant: &str, probe: &ProbeResult, provider: &str) {
        self.observe_at(tenant, probe.into(), provider, None);
    }

    /// [`observe`](Self::observe) of the probe at log `offset` (remembered as the first
    /// offset of its minute, for [`replay_from`](Self::replay_from)).
    pub fn observe_at(
        &mut self,
        tenant: &str,
        probe: Observation<'_>,
        provider: &str,
        offset: Option<u64>,
    ) {
        let minute = minute_start(probe.started_at);
        if self.closed_before.is_some_and(|closed| minute < closed) {
            self.late += 1;
            return;
        }
        if let Some(offset) = offset {
            let first = self.first_offsets.entry(minute).or_insert(offset);
            *first = (*first).min(offset);
        }
        let result = RegionResult {
            ok: probe.ok,
            reason: probe.failure_reason,
            started_at: probe.started_at,
        };
        let bucket = self.bucket(tenant, probe.server, minute);
        if bucket.regions.is_empty() {
            bucket.replayable = offset.is_some();
        } else if offset.is_none() {
            bucket.replayable = false;
        }
        bucket.observe(probe.region, result, provider);
    }

    /// The offset from which the log must be replayed to rebuild the open buckets the
    /// checkpoint ([`state`](Self::state)) leaves out; `None` when none is open.
    pub fn replay_from(&self) -> Option<u64> {
        self.first_offsets.values().min().copied()
    }

    /// The bucket of (tenant, server, minute), created if needed.
    fn bucket(&mut self, tenant: &str, server: &str, minute: DateTime<Utc>) -> &mut Bucket {
        if !self.tenants.contains_key(tenant) {
            self.tenants.insert(tenant.to_owned(), HashMap::new());
        }
        let servers = self.tenants.get_mut(tenant).expect("inserted above");
        if !servers.contains_key(server) {
            servers.insert(server.to_owned(), BTreeMap::new());
        }
        let minutes = servers.get_mut(server).expect("inserted above");
        match minutes.entry(minute) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                self.open += 1;
                entry.insert(Bucket::default())
            }
        }
    }

    /// Closes every bucket of a minute before `closed_before` (a minute boundary: the
    /// watermark's minute) into a verdict, sorted by (tenant, server, minute); later probes
    /// of those minutes are late.
    pub fn close(&mut self, closed_before: DateTime<Utc>) -> Vec<Verdict> {
        self.close_where(closed_before, |_, _| true).1
    }

    /// [`close`](Self::close), deciding in full only the verdicts that matter: failing or
    /// degraded ones, and healthy ones of a (tenant, server) for which `wanted` is true
    /// (most servers are healthy and followed by nobody: they cost a count). Returns the
    /// number of verdicts decided (all of them) and the ones built.
    pub fn close_where(
        &mut self,
        closed_before: DateTime<Utc>,
        mut wanted: impl FnMut(&str, &str) -> bool,
    ) -> (usize, Vec<Verdict>) {
        self.closed_before = Some(match self.closed_before {
            Some(previous) => previous.max(closed_before),
            None => closed_before,
        });
        self.first_offsets = self.first_offsets.split_off(&closed_before);
        let mut decided = 0;
        let mut verdicts = Vec::new();
        for (tenant, servers) in &mut self.tenants {
            for (server, minutes) in servers.iter_mut() {
                // A failing minute makes the server's later minutes of this close wanted
                // too (the incident it opens needs them to resolve).
                let mut followed = None;
                while let Some(entry) = minutes.first_entry() {
                    if *entry.key() >= closed_before {
                        break;
                    }
                    let (minute, bucket) = entry.remove_entry();
                    self.open -= 1;
                    decided += 1;
                    let quiet = bucket.is_quiet();
                    if !quiet {
                        followed = Some(true);
                    }
                    if !quiet || *followed.get_or_insert_with(|| wanted(tenant, server)) {
                        verdicts.push(decide(tenant, server, minute, &bucket));
                    }
                }
            }
            servers.retain(|_, minutes| !minutes.is_empty());
        }
        self.tenants.retain(|_, servers| !servers.is_empty());
        verdicts.sort_by(|a, b| {
            (&a.tenant, &a.server, a.minute).cmp(&(&b.tenant, &b.server, b.minute))
        });
        (decided, verdicts)
    }

    /// Probes dropped because their minute was already closed.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Drops the open buckets of `tenant` (only of its `server` when given): `mcpulse
    /// admin delete`.
    pub fn forget(&mut self, tenant: &str, server: Option<&str>) {
        let removed = match server {
            None => self
                .tenants
                .remove(tenant)
                .map_or(0, |servers| servers.values().map(BTreeMap::len).sum()),
            Some(server) => {
                let Some(servers) = self.tenants.get_mut(tenant) else {
                    return;
                };
                let removed = servers.remove(server).map_or(0, |m| m.len());
                if servers.is_empty() {
                    self.tenants.remove(tenant);
                }
                removed
            }
        };
        self.open -= removed;
    }

    /// The (tenant, server) of every open bucket.
    pub fn open_servers(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = self
            .tenants
            .iter()
            .flat_map(|(t, servers)| {
                servers
                    .iter()
                    .filter(|(_, minutes)| !minutes.is_empty())
                    .map(move |(s, _)| (t.as_str(), s.as_str()))
            })
            .collect();
        out.sort();
        out
    }

    /// Buckets not yet closed.
    pub fn open_buckets(&self) -> usize {
        self.open
    }

    /// Minutes before this are closed.
    pub fn closed_before(&self) -> Option<DateTime<Utc>> {
        self.closed_before
    }

    /// The state to checkpoint: everything but the open buckets whose probes can be
    /// replayed from [`replay_from`](Self::replay_from) (see "Checkpoints replay open
    /// minutes").
    pub fn state(&self) -> VerdictState {
        let mut buckets = Vec::new();
        for (tenant, servers) in &self.tenants {
            for (server, minutes) in servers {
                for (minute, bucket) in minutes {
                    if bucket.replayable {
                        continue;
                    }
                    buckets.push(BucketState {
                        tenant: tenant.clone(),
                        server: server.clone(),
                        minute: *minute,
                        provider: bucket.provider.clone(),
                        regions: bucket
                            .regions
                            .iter()
                            .map(|(region, result)| RegionState {
                                region: region.clone(),
                                ok: result.ok,
                                failure_reason: result.reason,
                                started_at: result.started_at,
                            })
                            .collect(),
                    });
                }
            }
        }
        buckets.sort_by(|a, b| {
            (&a.tenant, &a.server, a.minute).cmp(&(&b.tenant, &b.server, b.minute))
        });
        VerdictState {
            buckets,
            closed_before: self.closed_before,
            late: self.late,
        }
    }

    /// An aggregator continuing from a checkpointed `state`.
    pub fn restore(state: VerdictState) -> Self {
        let mut aggregator = Self {
            closed_before: state.closed_before,
            late: state.late,
            ..Self::default()
        };
        for b in state.buckets {
            let minute = minute_start(b.minute);
            let bucket = aggregator.bucket(&b.tenant, &b.server, minute);
            for r in b.regions {
                let result = RegionResult {
                    ok: r.ok,
                    reason: r.failure_reason,
                    started_at: r.started_at,
                };
                bucket.observe(&r.region, result, &b.provider);
            }
            if bucket.provider.is_empty() {
                bucket.provider = b.provider;
            }
            bucket.replayable = false;
        }
        aggregator
    }
}

/// Position of `reason` in the taxonomy order.
fn taxonomy_index(reason: FailureReason) -> usize {
    FailureReason::ALL
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(usize::MAX)
}

/// `(reason, regions)` groups, most regions first, ties in taxonomy order.
fn group<'a>(results: &[(&'a str, FailureReason)]) -> Vec<(FailureReason, Vec<&'a str>)> {
    let mut groups: Vec<(FailureReason, Vec<&'a str>)> = Vec::new();
    for &(region, reason) in results {
        match groups.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, regions)) => regions.push(region),
            None => groups.push((reason, vec![region])),
        }
    }
    groups.sort_by(|(a, ra), (b, rb)| {
        rb.len()
            .cmp(&ra.len())
            .then(taxonomy_index(*a).cmp(&taxonomy_index(*b)))
    });
    groups
}

fn write_groups(out: &mut String, groups: &[(FailureReason, Vec<&str>)]) {
    for (i, (reason, regions)) in groups.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let _ = write!(out, "{} from {}", reason.as_str(), regions.join(", "));
    }
}

fn of_regions(k: usize, n: usize) -> String {
    format!("({k} of {n} region{})", if n == 1 { "" } else { "s" })
}

/// The verdict of one closed bucket.
fn decide(tenant: &str, server: &str, minute: DateTime<Utc>, bucket: &Bucket) -> Verdict {
    let mut failing: Vec<(&str, FailureReason)> = Vec::new();
    let mut warnings: Vec<(&str, FailureReason)> = Vec::new();
    let mut auth: Vec<&str> = Vec::new();
    let mut reasonless: Vec<&str> = Vec::new();
    let mut oks: Vec<&str> = Vec::new();
    for (region, result) in &bucket.regions {
        match result.outcome() {
            Outcome::Failing(reason) => failing.push((region, reason)),
            Outcome::Warning(reason) => warnings.push((region, reason)),
            Outcome::NotAnOutage(Some(_)) => auth.push(region),
            Outcome::NotAnOutage(None) => reasonless.push(region),
            Outcome::Ok => oks.push(region),
        }
    }
    let n = bucket.regions.len();
    let f = failing.len();
    let scope = if f >= 2 || (n < 2 && f == n && n >= 1) {
        Scope::Global
    } else if f >= 1 {
        Scope::Regional
    } else if !warnings.is_empty() {
        Scope::Degraded
    } else {
        Scope::Healthy
    };

    let mut detail = String::new();
    let reason = match scope {
        Scope::Global | Scope::Regional => {
            let groups = group(&failing);
            write_groups(&mut detail, &groups);
            let _ = write!(detail, " {}", of_regions(f, n));
            groups.first().map(|(reason, _)| *reason)
        }
        Scope::Degraded => {
            let groups = group(&warnings);
            write_groups(&mut detail, &groups);
            let _ = write!(detail, " {}", of_regions(warnings.len(), n));
            let slow = warnings
                .iter()
                .any(|(_, r)| *r == FailureReason::LatencyDegraded);
            Some(if slow {
                FailureReason::LatencyDegraded
            } else {
                FailureReason::TlsExpiring
            })
        }
        Scope::Healthy => {
            if !oks.is_empty() {
                let _ = write!(
                    detail,
                    "ok from {} {}",
                    oks.join(", "),
                    of_regions(oks.len(), n)
                );
            }
            None
        }
    };
    let mut note = |text: String| {
        if !detail.is_empty() {
            detail.push_str("; ");
        }
        detail.push_str(&text);
    };
    if !auth.is_empty() {
        note(format!(
            "{} from {} (not an outage)",
            FailureReason::AuthRequired.as_str(),
            auth.join(", ")
        ));
    }
    if !reasonless.is_empty() {
        note(format!(
            "failed without a failure_reason from {} (not counted)",
            reasonless.join(", ")
        ));
    }

    Verdict {
        tenant: tenant.to_owned(),
        server: server.to_owned(),
        minute,
        scope,
        class: reason.and_then(FailureClass::of_reason),
        reason,
        failing_regions: failing.iter().map(|(r, _)| (*r).to_owned()).collect(),
        regions: bucket.regions.iter().map(|(r, _)| r.clone()).collect(),
        provider: bucket.provider.clone(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureReason as R;
    use chrono::TimeZone;

    fn at(min: u32, sec: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 12, min, sec).unwrap()
    }

    fn probe(server: &str, region: &str, t: DateTime<Utc>, reason: Option<R>) -> ProbeResult {
        let mut p = ProbeResult::new(server, region, t);
        p.url = Some(format!("https://{server}.onrender.com/mcp"));
        p.ok = reason.is_none_or(R::is_warning);
        p.failure_reason = reason;
        p
    }

    fn ok(server: &str, region: &str, t: DateTime<Utc>) -> ProbeResult {
        probe(server, region, t, None)
    }

    fn fail(server: &str, region: &str, t: DateTime<Utc>, reason: R) -> ProbeResult {
        let mut p = probe(server, region, t, Some(reason));
        p.ok = false;
        p
    }

    fn warn(server: &str, region: &str, t: DateTime<Utc>, reason: R) -> ProbeResult {
        let mut p = probe(server, region, t, Some(reason));
        p.ok = true;
        p
    }

    /// The one verdict of `probes` (tenant `acme`, provider `render`).
    fn one(probes: &[ProbeResult]) -> Verdict {
        let mut agg = VerdictAggregator::new();
        for p in probes {
            agg.observe("acme", p, "render");
        }
        let mut verdicts = agg.close(at(59, 0));
        assert_eq!(verdicts.len(), 1, "{verdicts:?}");
        assert_eq!(agg.open_buckets(), 0);
        verdicts.pop().unwrap()
    }

    #[test]
    fn two_of_three_failing_is_global() {
        let t = at(0, 10);
        let v = one(&[
            fail("w", "us-east", t, R::TcpRefused),
            fail("w", "eu-west", t, R::TcpRefused),
            ok("w", "ap-south", t),
        ]);
        assert_eq!(v.scope, Scope::Global);
        assert_eq!(v.class, Some(FailureClass::Unreachable));
        assert_eq!(v.reason, Some(R::TcpRefused));
        assert_eq!(v.failing_regions, ["eu-west", "us-east"]);
        assert_eq!(v.regions, ["ap-south", "eu-west", "us-east"]);
        assert_eq!(
            v.detail,
            "tcp_refused from eu-west, us-east (2 of 3 regions)"
        );
        assert_eq!(v.provider, "render");
        assert_eq!(v.tenant, "acme");
        assert_eq!(v.server, "w");
        assert_eq!(v.minute, at(0, 0));
    }

    #[test]
    fn one_of_three_failing_is_regional() {
        let t = at(0, 10);
        let v = one(&[
            ok("w", "us-east", t),
            fail("w", "eu-west", t, R::Http5xx),
            ok("w", "ap-south", t),
        ]);
        assert_eq!(v.scope, Scope::Regional);
        assert_eq!(v.class, Some(FailureClass::ServerError));
        assert_eq!(v.reason, Some(R::Http5xx));
        assert_eq!(v.failing_regions, ["eu-west"]);
        assert_eq!(v.detail, "http_5xx from eu-west (1 of 3 regions)");
    }

    #[test]
    fn one_of_two_failing_is_regional() {
        let t = at(0, 10);
        let v = one(&[ok("w", "us-east", t), fail("w", "eu-west", t, R::TlsError)]);
        assert_eq!(v.scope, Scope::Regional);
        assert_eq!(v.class, Some(FailureClass::Tls));
    }

    #[test]
    fn a_single_region_failing_alone_is_global() {
        let v = one(&[fail("w", "us-east", at(0, 5), R::DnsFailure)]);
        assert_eq!(v.scope, Scope::Global);
        assert_eq!(v.class, Some(FailureClass::Unreachable));
        assert_eq!(v.failing_regions, ["us-east"]);
        assert_eq!(v.detail, "dns_failure from us-east (1 of 1 region)");
    }

    #[test]
    fn two_regions_both_failing_is_global() {
        let t = at(0, 10);
        let v = one(&[
            fail("w", "us-east", t, R::NotJsonrpc),
            fail("w", "eu-west", t, R::NotJsonrpc),
        ]);
        assert_eq!(v.scope, Scope::Global);
        assert_eq!(v.class, Some(FailureClass::Protocol));
        assert_eq!(
            v.detail,
            "not_jsonrpc from eu-west, us-east (2 of 2 regions)"
        );
    }

    #[test]
    fn two_failing_out_of_many_is_global() {
        let t = at(0, 10);
        let mut probes: Vec<ProbeResult> = (0..6).map(|i| ok("w", &format!("r{i}"), t)).collect();
        probes.push(fail("w", "r6", t, R::Timeout));
        probes.push(fail("w", "r7", t, R::Timeout));
        let v = one(&probes);
        assert_eq!(v.scope, Scope::Global);
        assert_eq!(v.class, Some(FailureClass::Timeout));
        assert_eq!(v.detail, "timeout from r6, r7 (2 of 8 regions)");
    }

    #[test]
    fn auth_required_is_not_an_outage() {
        let t = at(0, 10);
        let v = one(&[fail("w", "us-east", t, R::AuthRequired)]);
        assert_eq!(v.scope, Scope::Healthy);
        assert_eq!(v.class, None);
        assert_eq!(v.reason, None);
        assert!(v.failing_regions.is_empty());
        assert_eq!(v.regions, ["us-east"]);
        assert_eq!(v.detail, "auth_required from us-east (not an outage)");

        // It counts as a succeeding region: one other failing region is regional.
        let v = one(&[
            fail("w", "us-east", t, R::AuthRequired),
            fail("w", "eu-west", t, R::TcpRefused),
        ]);
        assert_eq!(v.scope, Scope::Regional);
        assert_eq!(
            v.detail,
            "tcp_refused from eu-west (1 of 2 regions); auth_required from us-east (not an outage)"
        );

        let v = one(&[
            ok("w", "eu-west", t),
            fail("w", "us-east", t, R::AuthRequired),
        ]);
        assert_eq!(v.scope, Scope::Healthy);
        assert_eq!(
            v.detail,
            "ok from eu-west (1 of 2 regions); auth_required from us-east (not an outage)"
        );
    }

    #[test]
    fn a_failure_without_reason_is_not_counted() {
        let t = at(0, 10);
        let mut bare = ProbeResult::new("w", "us-east", t);
        bare.ok = false;
        let v = one(&[bare.clone(), ok("w", "eu-west", t)]);
        assert_eq!(v.scope, Scope::Healthy);
        assert_eq!(
            v.detail,
            "ok from eu-west (1 of 2 regions); failed without a failure_reason from us-east (not counted)"
        );
    }

    #[test]
    fn warnings_are_degraded() {
        let t = at(0, 10);
        let v = one(&[
            warn("w", "us-east", t, R::LatencyDegraded),
            ok("w", "eu-west", t),
            ok("w", "ap-south", t),
        ]);
        assert_eq!(v.scope, Scope::Degraded);
        assert_eq!(v.class, Some(FailureClass::Latency));
        assert_eq!(v.reason, Some(R::LatencyDegraded));
        assert!(v.failing_regions.is_empty());
        assert_eq!(v.detail, "latency_degraded from us-east (1 of 3 regions)");

        let v = one(&[
            warn("w", "us-east", t, R::TlsExpiring),
            warn("w", "eu-west", t, R::TlsExpiring),
        ]);
        assert_eq!(v.scope, Scope::Degraded);
        assert_eq!(v.class, Some(FailureClass::CertificateExpiring));
        assert_eq!(v.reason, Some(R::TlsExpiring));

        // Slow beats expiring, even when fewer regions are slow.
        let v = one(&[
            warn("w", "us-east", t, R::TlsExpiring),
            warn("w", "eu-west", t, R::TlsExpiring),
            warn("w", "ap-south", t, R::LatencyDegraded),
        ]);
        assert_eq!(v.reason, Some(R::LatencyDegraded));
        assert_eq!(v.class, Some(FailureClass::Latency));
        assert_eq!(
            v.detail,
            "tls_expiring from eu-west, us-east; latency_degraded from ap-south (3 of 3 regions)"
        );

        // A failure outranks warnings elsewhere.
        let v = one(&[
            warn("w", "us-east", t, R::LatencyDegraded),
            fail("w", "eu-west", t, R::Http5xx),
        ]);
        assert_eq!(v.scope, Scope::Regional);
        assert_eq!(v.class, Some(FailureClass::ServerError));
    }

    #[test]
    fn all_ok_is_healthy() {
        let t = at(0, 10);
        let v = one(&[ok("w", "us-east", t), ok("w", "eu-west", t)]);
        assert_eq!(v.scope, Scope::Healthy);
        assert_eq!(v.class, None);
        assert_eq!(v.reason, None);
        assert_eq!(v.detail, "ok from eu-west, us-east (2 of 2 regions)");
        // ok: true with a non-warning reason (invalid) is still ok.
        let mut odd = ok("w", "us-east", t);
        odd.failure_reason = Some(R::TcpRefused);
        assert_eq!(one(&[odd]).scope, Scope::Healthy);
    }

    #[test]
    fn the_most_common_reason_decides() {
        let t = at(0, 10);
        let v = one(&[
            fail("w", "a", t, R::Timeout),
            fail("w", "b", t, R::Http5xx),
            fail("w", "c", t, R::Http5xx),
        ]);
        assert_eq!(v.reason, Some(R::Http5xx));
        assert_eq!(v.class, Some(FailureClass::ServerError));
        assert_eq!(
            v.detail,
            "http_5xx from b, c; timeout from a (3 of 3 regions)"
        );
    }

    #[test]
    fn ties_follow_the_taxonomy_order() {
        let t = at(0, 10);
        // Timeout comes after TcpRefused in FailureReason::ALL, whatever the region order.
        let v = one(&[
            fail("w", "a", t, R::Timeout),
            fail("w", "b", t, R::TcpRefused),
        ]);
        assert_eq!(v.reason, Some(R::TcpRefused));
        assert_eq!(v.class, Some(FailureClass::Unreachable));
        assert_eq!(
            v.detail,
            "tcp_refused from b; timeout from a (2 of 2 regions)"
        );
        let v = one(&[
            fail("w", "a", t, R::TcpRefused),
            fail("w", "b", t, R::Timeout),
        ]);
        assert_eq!(v.reason, Some(R::TcpRefused));
        let v = one(&[
            fail("w", "a", t, R::ToolsListError),
            fail("w", "b", t, R::DnsFailure),
            fail("w", "c", t, R::ToolsListError),
            fail("w", "d", t, R::DnsFailure),
        ]);
        assert_eq!(v.reason, Some(R::DnsFailure));
    }

    #[test]
    fn a_region_keeps_its_worst_result_of_the_minute() {
        // Failure beats ok, whatever the order.
        let v = one(&[
            fail("w", "us-east", at(0, 5), R::TcpRefused),
            ok("w", "us-east", at(0, 35)),
        ]);
        assert_eq!(v.scope, Scope::Global);
        assert_eq!(v.regions, ["us-east"]);
        let v = one(&[
            ok("w", "us-east", at(0, 5)),
            fail("w", "us-east", at(0, 35), R::TcpRefused),
        ]);
        assert_eq!(v.scope, Scope::Global);
        // Warning beats ok; failure beats warning.
        let v = one(&[
            warn("w", "us-east", at(0, 5), R::LatencyDegraded),
            ok("w", "us-east", at(0, 35)),
        ]);
        assert_eq!(v.scope, Scope::Degraded);
        let v = one(&[
            fail("w", "us-east", at(0, 50), R::Http5xx),
            warn("w", "us-east", at(0, 5), R::LatencyDegraded),
        ]);
        assert_eq!(v.reason, Some(R::Http5xx));
        // Among failures, the later one (by started_at, not arrival).
        let v = one(&[
            fail("w", "us-east", at(0, 40), R::Timeout),
            fail("w", "us-east", at(0, 10), R::TcpRefused),
        ]);
        assert_eq!(v.reason, Some(R::Timeout));
        // Same started_at: the later arrival.
        let v = one(&[
            fail("w", "us-east", at(0, 10), R::TcpRefused),
            fail("w", "us-east", at(0, 10), R::Http5xx),
        ]);
        assert_eq!(v.reason, Some(R::Http5xx));
        // auth_required does not hide a failure.
        let v = one(&[
            fail("w", "us-east", at(0, 10), R::TcpRefused),
            fail("w", "us-east", at(0, 20), R::AuthRequired),
        ]);
        assert_eq!(v.reason, Some(R::TcpRefused));
        // Two results of one region still make one region: with another ok, regional.
        let v = one(&[
            fail("w", "us-east", at(0, 10), R::TcpRefused),
            fail("w", "us-east", at(0, 40), R::TcpRefused),
            ok("w", "eu-west", at(0, 10)),
        ]);
        assert_eq!(v.scope, Scope::Regional);
        assert_eq!(v.detail, "tcp_refused from us-east (1 of 2 regions)");
    }

    #[test]
    fn minutes_close_in_order_and_late_probes_are_dropped() {
        let mut agg = VerdictAggregator::new();
        agg.observe(
            "acme",
            &fail("w", "us-east", at(0, 10), R::TcpRefused),
            "render",
        );
        agg.observe("acme", &ok("w", "us-east", at(1, 10)), "render");
        agg.observe("acme", &ok("w", "us-east", at(2, 59)), "render");
        assert_eq!(agg.open_buckets(), 3);

        let closed = agg.close(at(2, 0));
        let minutes: Vec<_> = closed.iter().map(|v| v.minute).collect();
        assert_eq!(minutes, [at(0, 0), at(1, 0)]);
        assert_eq!(closed[0].scope, Scope::Global);
        assert_eq!(closed[1].scope, Scope::Healthy);
        assert_eq!(agg.open_buckets(), 1);
        assert_eq!(agg.closed_before(), Some(at(2, 0)));

        // Late: minute 1 is closed.
        agg.observe(
            "acme",
            &fail("w", "eu-west", at(1, 59), R::TcpRefused),
            "render",
        );
        assert_eq!(agg.late(), 1);
        assert_eq!(agg.open_buckets(), 1);
        // Minute 2 is still open.
        agg.observe(
            "acme",
            &fail("w", "eu-west", at(2, 0), R::TcpRefused),
            "render",
        );
        assert_eq!(agg.late(), 1);

        // Closing again at the same or an earlier boundary yields nothing new.
        assert!(agg.close(at(2, 0)).is_empty());
        assert!(agg.close(at(1, 0)).is_empty());
        assert_eq!(agg.closed_before(), Some(at(2, 0)));
        agg.observe("acme", &ok("w", "eu-west", at(1, 30)), "render");
        assert_eq!(agg.late(), 2);

        let closed = agg.close(at(3, 0));
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].scope, Scope::Regional);
        assert_eq!(agg.open_buckets(), 0);
        assert!(agg.state().buckets.is_empty());
        assert!(agg.close(at(10, 0)).is_empty());
    }

    #[test]
    fn verdicts_are_sorted_by_tenant_server_minute() {
        let mut agg = VerdictAggregator::new();
        let inputs = [
            ("zeta", "b", at(1, 0)),
            ("acme", "z", at(0, 30)),
            ("zeta", "a", at(0, 0)),
            ("acme", "a", at(1, 10)),
            ("acme", "a", at(0, 20)),
            ("beta", "m", at(0, 0)),
        ];
        for (tenant, server, t) in inputs {
            agg.observe(tenant, &ok(server, "us-east", t), "render");
        }
        let keys: Vec<_> = agg
            .close(at(5, 0))
            .into_iter()
            .map(|v| (v.tenant, v.server, v.minute))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys.len(), 6);
        assert_eq!(keys[0], ("acme".into(), "a".into(), at(0, 0)));
    }

    #[test]
    fn tenants_and_servers_do_not_mix() {
        let t = at(0, 10);
        let mut agg = VerdictAggregator::new();
        agg.observe("acme", &fail("w", "us-east", t, R::TcpRefused), "render");
        agg.observe("beta", &ok("w", "eu-west", t), "fly");
        agg.observe("acme", &ok("v", "eu-west", t), "render");
        let v = agg.close(at(1, 0));
        assert_eq!(v.len(), 3);
        assert_eq!((v[0].server.as_str(), v[0].scope), ("v", Scope::Healthy));
        assert_eq!((v[1].server.as_str(), v[1].scope), ("w", Scope::Global));
        assert_eq!((v[2].tenant.as_str(), v[2].scope), ("beta", Scope::Healthy));
        assert_eq!(v[2].provider, "fly");
    }

    #[test]
    fn the_first_known_provider_is_kept() {
        let t = at(0, 10);
        let mut agg = VerdictAggregator::new();
        agg.observe("acme", &ok("w", "us-east", t), UNKNOWN);
        agg.observe("acme", &ok("w", "eu-west", t), "render");
        agg.observe("acme", &ok("w", "ap-south", t), "fly");
        assert_eq!(agg.close(at(1, 0))[0].provider, "render");
    }

    #[test]
    fn details_carry_no_addresses_or_prober_internals() {
        let t = at(0, 10);
        let mut p = fail("w", "us-east", t, R::TcpRefused);
        p.url = Some("http://10.1.2.3:8080/mcp".into());
        p.failure_detail = Some("connect to 10.1.2.3:8080 refused".into());
        p.probe_id = Some("probe-7f3a".into());
        let v = one(&[p]);
        assert!(!v.detail.contains("10.1.2.3"), "{}", v.detail);
        assert!(!v.detail.contains("probe-7f3a"), "{}", v.detail);
        let json = serde_json::to_string(&v).unwrap();
        assert!(!json.contains("10.1.2.3"), "{json}");
    }

    fn scenario() -> Vec<(&'static str, ProbeResult)> {
        vec![
            ("acme", fail("w", "us-east", at(0, 10), R::TcpRefused)),
            ("acme", fail("w", "eu-west", at(0, 12), R::ConnectTimeout)),
            ("acme", ok("w", "ap-south", at(0, 14))),
            ("acme", warn("v", "us-east", at(0, 20), R::TlsExpiring)),
            ("beta", fail("x", "us-east", at(1, 5), R::AuthRequired)),
            ("acme", fail("w", "us-east", at(1, 10), R::Timeout)),
            ("acme", ok("w", "eu-west", at(1, 11))),
            ("acme", fail("w", "us-east", at(1, 40), R::Http5xx)),
            ("beta", ok("x", "eu-west", at(2, 0))),
            ("acme", ok("w", "us-east", at(2, 30))),
        ]
    }

    #[test]
    fn state_round_trip_gives_identical_verdicts() {
        let events = scenario();
        for split in 0..=events.len() {
            let mut straight = VerdictAggregator::new();
            let mut expected = Vec::new();
            for (i, (tenant, p)) in events.iter().enumerate() {
                if i == 6 {
                    expected.extend(straight.close(at(1, 0)));
                }
                straight.observe(tenant, p, "render");
            }
            straight.observe("acme", &ok("w", "us-east", at(0, 59)), "render"); // late
            expected.extend(straight.close(at(3, 0)));

            let mut agg = VerdictAggregator::new();
            let mut got = Vec::new();
            for (i, (tenant, p)) in events.iter().enumerate() {
                if i == split {
                    let json = serde_json::to_string(&agg.state()).unwrap();
                    let state: VerdictState = serde_json::from_str(&json).unwrap();
                    assert_eq!(state, agg.state());
                    let open = agg.open_buckets();
                    agg = VerdictAggregator::restore(state);
                    assert_eq!(agg.open_buckets(), open);
                }
                if i == 6 {
                    got.extend(agg.close(at(1, 0)));
                }
                agg.observe(tenant, p, "render");
            }
            agg.observe("acme", &ok("w", "us-east", at(0, 59)), "render");
            let json = serde_json::to_string(&agg.state()).unwrap();
            let mut agg = VerdictAggregator::restore(serde_json::from_str(&json).unwrap());
            got.extend(agg.close(at(3, 0)));
            assert_eq!(got, expected, "split at {split}");
            assert_eq!(agg.late(), straight.late());
            assert_eq!(agg.late(), 1);
        }
    }

    #[test]
    fn state_is_json_friendly() {
        let mut agg = VerdictAggregator::new();
        agg.observe(
            "acme",
            &fail("w", "us-east", at(0, 10), R::Http5xx),
            "render",
        );
        agg.close(at(0, 0));
        let json = serde_json::to_value(agg.state()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "buckets": [{
                    "tenant": "acme",
                    "server": "w",
                    "minute": "2026-11-21T12:00:00Z",
                    "provider": "render",
                    "regions": [{
                        "region": "us-east",
                        "ok": false,
                        "failure_reason": "http_5xx",
                        "started_at": "2026-11-21T12:00:10Z",
                    }],
                }],
                "closed_before": "2026-11-21T12:00:00Z",
                "late": 0,
            })
        );
        let empty: VerdictState = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, VerdictState::default());
    }

    #[test]
    fn open_minutes_are_replayed_from_their_first_offset_not_checkpointed() {
        let mut agg = VerdictAggregator::new();
        let at_offset = |agg: &mut VerdictAggregator, p: &ProbeResult, offset: u64| {
            agg.observe_at("acme", p.into(), "render", Some(offset));
        };
        at_offset(&mut agg, &ok("w", "us-east", at(0, 10)), 5);
        at_offset(&mut agg, &fail("w", "eu-west", at(0, 20), R::TcpRefused), 3);
        at_offset(&mut agg, &fail("w", "us-east", at(1, 10), R::TcpRefused), 9);
        assert_eq!(agg.replay_from(), Some(3));
        assert!(agg.state().buckets.is_empty(), "open minutes are replayed");
        assert_eq!(agg.close(at(1, 0)).len(), 1);
        assert_eq!(agg.replay_from(), Some(9));

        // A restart from the checkpoint replays offsets 9.. and decides the same.
        let mut restored = VerdictAggregator::restore(agg.state());
        at_offset(
            &mut restored,
            &fail("w", "us-east", at(1, 10), R::TcpRefused),
            9,
        );
        assert_eq!(restored.close(at(2, 0)), agg.close(at(2, 0)));
        assert_eq!(restored.replay_from(), None);
        assert_eq!(agg.replay_from(), None);

        // Probes observed without an offset cannot be replayed: they are checkpointed.
        agg.observe("acme", &ok("w", "us-east", at(2, 10)), "render");
        assert_eq!(agg.state().buckets.len(), 1);
    }

    #[test]
    fn close_where_builds_quiet_verdicts_only_when_wanted() {
        let mut agg = VerdictAggregator::new();
        agg.observe("acme", &ok("quiet", "us-east", at(0, 10)), "render");
        agg.observe("acme", &ok("followed", "us-east", at(0, 10)), "render");
        agg.observe(
            "acme",
            &warn("slow", "us-east", at(0, 10), R::LatencyDegraded),
            "render",
        );
        agg.observe(
            "acme",
            &fail("down", "us-east", at(0, 10), R::TcpRefused),
            "render",
        );
        let (decided, verdicts) = agg.close_where(at(1, 0), |_, server| server == "followed");
        assert_eq!(decided, 4);
        let servers: Vec<&str> = verdicts.iter().map(|v| v.server.as_str()).collect();
        assert_eq!(servers, ["down", "followed", "slow"]);

        // Closed in one go, the healthy minutes after a failing one are built: the
        // incident it opens needs them to resolve.
        agg.observe(
            "acme",
            &fail("w", "us-east", at(1, 10), R::TcpRefused),
            "render",
        );
        agg.observe("acme", &ok("w", "us-east", at(2, 10)), "render");
        agg.observe("acme", &ok("w", "us-east", at(3, 10)), "render");
        let (decided, verdicts) = agg.close_where(at(4, 0), |_, _| false);
        assert_eq!((decided, verdicts.len()), (3, 3));
    }

    #[test]
    fn minute_start_truncates() {
        assert_eq!(minute_start(at(3, 59)), at(3, 0));
        assert_eq!(minute_start(at(3, 0)), at(3, 0));
        let before_epoch = Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 30).unwrap();
        assert_eq!(
            minute_start(before_epoch),
            Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 0).unwrap()
        );
        let with_nanos = at(3, 10) + chrono::Duration::milliseconds(999);
        assert_eq!(minute_start(with_nanos), at(3, 0));
    }
}

//! Consumer groups: membership, partition assignment with cooperative handoff, and
//! durable committed offsets.
//!
//! **Assignment** is sticky and balanced: a partition stays with the member it was
//! assigned to while that member is subscribed to its topic; unowned partitions go to the
//! eligible member with the fewest (ties: the oldest member); then partitions move from
//! members with at least two more than another eligible member until balanced. The
//! result depends only on the membership history, so it is deterministic.
//!
//! **Handoff** is cooperative: a partition moving away from a member is first revoked
//! (a `Revoked` event queued for it); the member may still commit it until its next
//! `poll` after receiving that event, and only that poll releases it to its new owner,
//! which then gets an `Assigned` event and starts from the committed offset. A member
//! that does not poll within the rebalance timeout loses its revoked partitions anyway.
//! A member that leaves releases its partitions at once.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::fsutil::{escape_file_name, io_error, write_atomic};
use crate::{BusError, Offset, TopicPartition};

/// Identifies a member within its group (join order).
pub(crate) type MemberId = u64;

/// A rebalance event for one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GroupEvent {
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>),
}

/// One consumer group of the embedded log.
pub(crate) struct Group {
    pub name: String,
    path: PathBuf,
    rebalance_timeout: Duration,
    state: Mutex<GroupState>,
    /// Serializes writes of the offsets file (held across the blocking write).
    write_lock: Mutex<()>,
}

#[derive(Default)]
struct GroupState {
    committed: BTreeMap<TopicPartition, Offset>,
    members: BTreeMap<MemberId, Member>,
    next_member: MemberId,
    /// Where each partition should be; it gets there once released by its old owner.
    target: BTreeMap<TopicPartition, MemberId>,
}

struct Member {
    /// Subscribed topics and their partition counts.
    topics: BTreeMap<String, u32>,
    /// Partitions this member holds (the `Assigned` event may still be queued).
    owned: BTreeSet<TopicPartition>,
    /// Partitions taken away but not released yet: still committable.
    revoking: BTreeMap<TopicPartition, Revoking>,
    events: VecDeque<GroupEvent>,
    notify: Arc<Notify>,
}

struct Revoking {
    /// The `Revoked` event reached the member: its next poll releases the partition.
    delivered: bool,
    /// Released regardless after this.
    deadline: Instant,
}

/// The offsets file: `{dir}/_groups/{group}.json`.
#[derive(Serialize, Deserialize)]
struct OffsetsFile {
    group: String,
    offsets: Vec<CommittedOffset>,
}

#[derive(Serialize, Deserialize)]
struct CommittedOffset {
    topic: String,
    partition: u32,
    offset: Offset,
}

impl Group {
    /// Loads the group's committed offsets from `groups_dir`, if it has any.
    pub fn load(
        groups_dir: &Path,
        name: &str,
        rebalance_timeout: Duration,
    ) -> Result<Group, BusError> {
        let path = groups_dir.join(format!("{}.json", escape_file_name(name)));
        let mut committed = BTreeMap::new();
        match std::fs::read(&path) {
            Ok(data) => {
                let file: OffsetsFile = serde_json::from_slice(&data).map_err(|e| {
                    BusError::Corrupt(format!("offsets file {}: {e}", path.display()))
                })?;
                for c in file.offsets {
                    committed.insert(TopicPartition::new(c.topic, c.partition), c.offset);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("reading", &path, e)),
        }
        Ok(Group {
            name: name.to_owned(),
            path,
            rebalance_timeout,
            state: Mutex::new(GroupState {
                committed,
                ..GroupState::default()
            }),
            write_lock: Mutex::new(()),
        })
    }

    /// Adds a member subscribed to `topics` (name → partition count) and rebalances.
    pub fn join(&self, topics: BTreeMap<String, u32>) -> (MemberId, Arc<Notify>) {
        let mut state = self.state.lock();
        let id = state.next_member;
        state.next_member += 1;
        let notify = Arc::new(Notify::new());
        let member = Member {
            topics,
            owned: BTreeSet::new(),
            revoking: BTreeMap::new(),
            events: VecDeque::new(),
            notify: Arc::clone(&notify),
        };
        state.members.insert(id, member);
        state.reconcile(Instant::now(), self.rebalance_timeout);
        (id, notify)
    }

    /// Removes a member; its partitions go to the others at once.
    pub fn leave(&self, id: MemberId) {
        let mut state = self.state.lock();
        if state.members.remove(&id).is_some() {
            state.reconcile(Instant::now(), self.rebalance_timeout);
        }
    }

    /// The member's next rebalance event. Called at each poll: first releases the
    /// partitions whose `Revoked` event an earlier poll delivered (and any past their
    /// deadline), handing them to their new owners.
    pub fn next_event(&self, id: MemberId) -> Option<GroupEvent> {
        let mut state = self.state.lock();
        let now = Instant::now();
        let mut released = false;
        for (&member_id, member) in state.members.iter_mut() {
            member.revoking.retain(|_, r| {
                let free = (member_id == id && r.delivered) || r.deadline <= now;
                released |= free;
                !free
            });
        }
        if released {
            state.reconcile(now, self.rebalance_timeout);
        }
        let member = state.members.get_mut(&id)?;
        let event = member.events.pop_front()?;
        if let GroupEvent::Revoked(partitions) = &event {
            for tp in partitions {
                if let Some(r) = member.revoking.get_mut(tp) {
                    r.delivered = true;
                }
            }
        }
        Some(event)
    }

    /// The earliest forced release of a revoked partition, to wake waiting members.
    pub fn next_deadline(&self) -> Option<Instant> {
        let state = self.state.lock();
        state
            .members
            .values()
            .flat_map(|m| m.revoking.values().map(|r| r.deadline))
            .min()
    }

    /// The committed offset of `tp`.
    pub fn committed(&self, tp: &TopicPartition) -> Option<Offset> {
        self.state.lock().committed.get(tp).copied()
    }

    /// Durably records `offsets` for member `id` (blocking: writes and fsyncs the offsets
    /// file). Offsets never move backwards; partitions the member neither owns nor is
    /// still allowed to commit after a revoke fail with `NotAssigned`.
    pub fn commit(
        &self,
        id: MemberId,
        offsets: &[(TopicPartition, Offset)],
    ) -> Result<(), BusError> {
        {
            let state = self.state.lock();
            let member = state.members.get(&id).ok_or(BusError::Closed)?;
            if let Some((tp, _)) = offsets
                .iter()
                .find(|(tp, _)| !member.owned.contains(tp) && !member.revoking.contains_key(tp))
            {
                return Err(BusError::NotAssigned(tp.clone()));
            }
        }
        let _writing = self.write_lock.lock();
        let merged = {
            let state = self.state.lock();
            let mut merged = state.committed.clone();
            let mut changed = false;
            for (tp, offset) in offsets {
                let entry = merged.entry(tp.clone()).or_insert(0);
                if *offset > *entry || (*offset == 0 && !state.committed.contains_key(tp)) {
                    *entry = *offset;
                    changed = true;
                }
            }
            if !changed {
                return Ok(());
            }
            merged
        };
        let file = OffsetsFile {
            group: self.name.clone(),
            offsets: merged
                .iter()
                .map(|(tp, &offset)| CommittedOffset {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset,
                })
                .collect(),
        };
        let data = serde_json::to_vec_pretty(&file).map_err(|e| {
            BusError::Unavailable(format!("encoding offsets of group {}: {e}", self.name))
        })?;
        write_atomic(&self.path, &data)?;
        self.state.lock().committed = merged;
        Ok(())
    }
}

impl GroupState {
    /// Recomputes the target assignment, revokes what moves away, and assigns the
    /// partitions nobody holds.
    fn reconcile(&mut self, now: Instant, timeout: Duration) {
        let subscriptions: BTreeMap<MemberId, &BTreeMap<String, u32>> = self
            .members
            .iter()
            .map(|(&id, m)| (id, &m.topics))
            .collect();
        self.target = compute_target(&subscriptions, &self.target);
        for (&id, member) in self.members.iter_mut() {
            let lost: Vec<TopicPartition> = member
                .owned
                .iter()
                .filter(|tp| self.target.get(*tp) != Some(&id))
                .cloned()
                .collect();
            if lost.is_empty() {
                continue;
            }
            for tp in &lost {
                member.owned.remove(tp);
                member.revoking.insert(
                    tp.clone(),
                    Revoking {
                        delivered: false,
                        deadline: now + timeout,
                    },
                );
            }
            member.events.push_back(GroupEvent::Revoked(lost));
            member.notify.notify_one();
        }
        let busy: BTreeSet<&TopicPartition> = self
            .members
            .values()
            .flat_map(|m| m.owned.iter().chain(m.revoking.keys()))
            .collect();
        let mut gains: BTreeMap<MemberId, Vec<TopicPartition>> = BTreeMap::new();
        for (tp, id) in &self.target {
            if !busy.contains(tp) {
                gains.entry(*id).or_default().push(tp.clone());
            }
        }
        for (id, partitions) in gains {
            if let Some(member) = self.members.get_mut(&id) {
                member.owned.extend(partitions.iter().cloned());
                member.events.push_back(GroupEvent::Assigned(partitions));
                member.notify.notify_one();
            }
        }
    }
}

/// The sticky, balanced assignment of every subscribed partition (see the module docs).
fn compute_target(
    members: &BTreeMap<MemberId, &BTreeMap<String, u32>>,
    previous: &BTreeMap<TopicPartition, MemberId>,
) -> BTreeMap<TopicPartition, MemberId> {
    let mut eligible: BTreeMap<TopicPartition, Vec<MemberId>> = BTreeMap::new();
    for (&id, topics) in members {
        for (topic, &partitions) in topics.iter() {
            for p in 0..partitions {
                eligible
                    .entry(TopicPartition::new(topic.clone(), p))
                    .or_default()
                    .push(id);
            }
        }
    }
    let mut count: BTreeMap<MemberId, usize> = members.keys().map(|&id| (id, 0)).collect();
    let mut target = BTreeMap::new();
    for (tp, ids) in &eligible {
        if let Some(&owner) = previous.get(tp).filter(|owner| ids.contains(owner)) {
            target.insert(tp.clone(), owner);
            *count.entry(owner).or_default() += 1;
        }
    }
    for (tp, ids) in &eligible {
        if target.contains_key(tp) {
            continue;
        }
        if let Some(&owner) = ids.iter().min_by_key(|id| (count[id], **id)) {
            target.insert(tp.clone(), owner);
            *count.entry(owner).or_default() += 1;
        }
    }
    // Each move lowers the sum of squared counts, so this terminates.
    loop {
        let mut order: Vec<MemberId> = count.keys().copied().collect();
        order.sort_by_key(|id| (Reverse(count[id]), *id));
        let moved = order.iter().find_map(|&high| {
            order.iter().rev().find_map(|&low| {
                if count[&high] <= count[&low] + 1 {
                    return None;
                }
                target
                    .iter()
                    .rev()
                    .find(|(tp, owner)| **owner == high && eligible[*tp].contains(&low))
                    .map(|(tp, _)| (tp.clone(), high, low))
            })
        });
        let Some((tp, high, low)) = moved else { break };
        target.insert(tp, low);
        *count.entry(high).or_default() -= 1;
        *count.entry(low).or_default() += 1;
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tps(topic: &str, ps: &[u32]) -> Vec<TopicPartition> {
        ps.iter().map(|&p| TopicPartition::new(topic, p)).collect()
    }

    fn subs(n: u32) -> BTreeMap<String, u32> {
        BTreeMap::from([("t".to_string(), n)])
    }

    fn group(timeout: Duration) -> (tempfile::TempDir, Group) {
        let dir = tempfile::tempdir().unwrap();
        let group = Group::load(dir.path(), "g", timeout).unwrap();
        (dir, group)
    }

    #[test]
    fn target_is_balanced_and_sticky() {
        let a = subs(4);
        let members = BTreeMap::from([(0, &a)]);
        let first = compute_target(&members, &BTreeMap::new());
        assert!(first.values().all(|&m| m == 0));
        let members = BTreeMap::from([(0, &a), (1, &a)]);
        let second = compute_target(&members, &first);
        assert_eq!(second.values().filter(|&&m| m == 0).count(), 2);
        assert_eq!(second.values().filter(|&&m| m == 1).count(), 2);
        // Only member 0's surplus moved, and it is deterministic.
        assert_eq!(second, compute_target(&members, &first));
        let b = BTreeMap::from([("other".to_string(), 2)]);
        let members = BTreeMap::from([(0, &a), (1, &b)]);
        let mixed = compute_target(&members, &second);
        assert_eq!(mixed.len(), 6);
        assert!(mixed.iter().all(|(tp, &m)| (tp.topic == "t") == (m == 0)));
    }

    #[test]
    fn handoff_waits_for_the_revoking_members_next_poll() {
        let (_dir, group) = group(Duration::from_secs(60));
        let (a, _) = group.join(subs(2));
        assert_eq!(
            group.next_event(a),
            Some(GroupEvent::Assigned(tps("t", &[0, 1])))
        );
        let (b, _) = group.join(subs(2));
        assert_eq!(group.next_event(b), None, "nothing free until a releases");
        let Some(GroupEvent::Revoked(revoked)) = group.next_event(a) else {
            panic!("a not revoked")
        };
        assert_eq!(revoked.len(), 1);
        group.commit(a, &[(revoked[0].clone(), 5)]).unwrap();
        assert_eq!(group.next_event(a), None, "a's poll releases");
        assert_eq!(
            group.next_event(b),
            Some(GroupEvent::Assigned(revoked.clone()))
        );
        assert_eq!(group.committed(&revoked[0]), Some(5));
        assert!(matches!(
            group.commit(a, &[(revoked[0].clone(), 6)]),
            Err(BusError::NotAssigned(_))
        ));
        group.leave(b);
        assert_eq!(group.next_event(a), Some(GroupEvent::Assigned(revoked)));
    }

    #[test]
    fn revoked_partitions_are_released_after_the_timeout() {
        let (_dir, group) = group(Duration::ZERO);
        let (a, _) = group.join(subs(2));
        group.next_event(a);
        let (b, _) = group.join(subs(2));
        // a never polls: b's poll releases the expired revoke.
        assert!(matches!(group.next_event(b), Some(GroupEvent::Assigned(v)) if v.len() == 1));
    }

    #[test]
    fn commits_are_durable_and_monotonic() {
        let (dir, group) = group(Duration::from_secs(60));
        let (a, _) = group.join(subs(1));
        let tp = TopicPartition::new("t", 0);
        group.commit(a, &[(tp.clone(), 10)]).unwrap();
        group.commit(a, &[(tp.clone(), 4)]).unwrap();
        assert_eq!(group.committed(&tp), Some(10));
        let reloaded = Group::load(dir.path(), "g", Duration::from_secs(1)).unwrap();
        assert_eq!(reloaded.committed(&tp), Some(10));
        assert!(matches!(
            group.commit(a, &[(TopicPartition::new("t", 1), 1)]),
            Err(BusError::NotAssigned(tp)) if tp.partition == 1
        ));
    }
}

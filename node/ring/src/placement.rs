//! Replica sets, descriptors and placements (vnode → replica set), with their invariants
//! and counting helpers.
//!
//! A [`Placement`] is used twice: as the *current* placement (built from the descriptors
//! the groups reported, so every set carries its group's [`ConfEpoch`]) and as the
//! *target* a strategy computes (epochs copied from the current placement, or zero).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kvlab_types::NodeId;
use serde::{Deserialize, Serialize};

use crate::hash::{RingLayout, VnodeId};

/// The largest replication factor accepted (Raft groups of more than 7 voters buy no
/// availability worth their write cost).
pub const MAX_REPLICATION_FACTOR: usize = 7;

/// A group's configuration epoch: +1 for every applied conf-change entry (wave 2 §1.2
/// P5). Operator steps carry the epoch they expect, so a step planned against an older
/// configuration is refused at apply time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct ConfEpoch(pub u64);

impl ConfEpoch {
    /// The next epoch (saturating).
    pub fn next(self) -> ConfEpoch {
        ConfEpoch(self.0.saturating_add(1))
    }
}

impl fmt::Debug for ConfEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}
impl fmt::Display for ConfEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// The members of one vnode's Raft group.
///
/// `voters` is the voter set in effect; while the group is in a joint configuration
/// (between `EnterJoint` and `LeaveJoint`) `outgoing` holds the old voter set and both
/// must agree for a decision; otherwise `outgoing` is empty. The epoch lives here rather
/// than only in [`Descriptor`] so that a *current* [`Placement`] built from descriptors
/// carries each group's epoch to the planner (every operator records the epoch it
/// expects). In a *target* placement the epoch is informational.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Default)]
pub struct ReplicaSet {
    /// The voters (the incoming set while joint).
    pub voters: BTreeSet<NodeId>,
    /// The outgoing voters while in a joint configuration; empty otherwise.
    pub outgoing: BTreeSet<NodeId>,
    /// Learners: receive the log, never vote.
    pub learners: BTreeSet<NodeId>,
    /// The configuration epoch this set was reported at.
    pub conf_epoch: ConfEpoch,
}

impl ReplicaSet {
    /// A plain (non-joint) set of voters without learners, at epoch 0.
    pub fn of_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        ReplicaSet {
            voters: voters.into_iter().collect(),
            ..ReplicaSet::default()
        }
    }

    /// Whether the group is between `EnterJoint` and `LeaveJoint`.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Whether `n` holds a replica (voter, outgoing voter or learner).
    pub fn contains(&self, n: NodeId) -> bool {
        self.voters.contains(&n) || self.outgoing.contains(&n) || self.learners.contains(&n)
    }

    /// Every node holding a replica, once each, in id order.
    pub fn nodes(&self) -> BTreeSet<NodeId> {
        self.voters
            .iter()
            .chain(&self.outgoing)
            .chain(&self.learners)
            .copied()
            .collect()
    }

    /// Whether the voters alive by `alive` can still decide (a majority of `voters`, and
    /// of `outgoing` too while joint).
    pub fn has_quorum(&self, alive: impl Fn(NodeId) -> bool) -> bool {
        let majority = |set: &BTreeSet<NodeId>| {
            set.is_empty() || set.iter().filter(|n| alive(**n)).count() > set.len() / 2
        };
        !self.voters.is_empty() && majority(&self.voters) && majority(&self.outgoing)
    }

    /// The same members (voters, outgoing, learners), ignoring the epoch.
    pub fn same_members(&self, other: &ReplicaSet) -> bool {
        self.voters == other.voters
            && self.outgoing == other.outgoing
            && self.learners == other.learners
    }
}

/// What a group reports about itself: the vnode, its members and their epoch (wave 2
/// §1.2 P1). `range_version` stays 0 in wave 2; it is reserved for splitting vnodes, so
/// that request and error formats need not change then.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Descriptor {
    /// The vnode (and so the group, [`crate::vnode_group`]).
    pub vnode: VnodeId,
    /// Members and configuration epoch.
    pub replicas: ReplicaSet,
    /// Range version: always 0 in wave 2.
    pub range_version: u64,
}

impl Descriptor {
    /// A descriptor for `vnode`.
    pub fn new(vnode: VnodeId, replicas: ReplicaSet) -> Self {
        Descriptor {
            vnode,
            replicas,
            range_version: 0,
        }
    }

    /// The configuration epoch.
    pub fn conf_epoch(&self) -> ConfEpoch {
        self.replicas.conf_epoch
    }
}

/// A broken placement invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The replication factor is not in `1..=MAX_REPLICATION_FACTOR`.
    #[error("replication factor {0} must be in 1..={MAX_REPLICATION_FACTOR}")]
    BadReplicationFactor(usize),
    /// A vnode of the layout has no replica set.
    #[error("{0} has no replica set")]
    MissingVnode(VnodeId),
    /// A replica set names a vnode outside the layout.
    #[error("{0} is outside the ring of {1} vnodes")]
    VnodeOutOfRange(VnodeId, u32),
    /// A vnode does not have exactly RF distinct voters.
    #[error("{vnode} has {voters} voters, replication factor is {rf}")]
    WrongVoterCount {
        /// The vnode.
        vnode: VnodeId,
        /// Its voters.
        voters: usize,
        /// The replication factor.
        rf: usize,
    },
    /// A node appears twice in one vnode (voter and learner at once).
    #[error("{node} appears twice in {vnode}")]
    DuplicateNode {
        /// The vnode.
        vnode: VnodeId,
        /// The node.
        node: NodeId,
    },
    /// A vnode is in a joint configuration where a plain one is required (a target).
    #[error("{0} is in a joint configuration")]
    Joint(VnodeId),
}

/// Where every vnode's replicas are: vnode → [`ReplicaSet`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Placement {
    layout: RingLayout,
    sets: BTreeMap<VnodeId, ReplicaSet>,
}

impl Placement {
    /// An empty placement for `layout` (no vnode has a replica set yet).
    pub fn new(layout: RingLayout) -> Self {
        Placement {
            layout,
            sets: BTreeMap::new(),
        }
    }

    /// Builds a placement from descriptors (the newest per vnode is the caller's job).
    /// Descriptors outside the layout are skipped and returned.
    pub fn from_descriptors<'a>(
        layout: RingLayout,
        descriptors: impl IntoIterator<Item = &'a Descriptor>,
    ) -> (Self, Vec<VnodeId>) {
        let mut p = Placement::new(layout);
        let mut skipped = Vec::new();
        for d in descriptors {
            if p.insert(d.vnode, d.replicas.clone()).is_err() {
                skipped.push(d.vnode);
            }
        }
        (p, skipped)
    }

    /// The layout.
    pub fn layout(&self) -> RingLayout {
        self.layout
    }

    /// Sets vnode `v`'s replica set, returning the previous one. Refused for a vnode
    /// outside the layout.
    pub fn insert(
        &mut self,
        v: VnodeId,
        set: ReplicaSet,
    ) -> Result<Option<ReplicaSet>, PlacementError> {
        if !self.layout.contains(v) {
            return Err(PlacementError::VnodeOutOfRange(
                v,
                self.layout.vnode_count(),
            ));
        }
        Ok(self.sets.insert(v, set))
    }

    /// Vnode `v`'s replica set, if known.
    pub fn get(&self, v: VnodeId) -> Option<&ReplicaSet> {
        self.sets.get(&v)
    }

    /// Vnode `v`'s replica set for changing, if known.
    pub fn get_mut(&mut self, v: VnodeId) -> Option<&mut ReplicaSet> {
        self.sets.get_mut(&v)
    }

    /// Every known (vnode, replica set), in vnode order.
    pub fn iter(&self) -> impl Iterator<Item = (VnodeId, &ReplicaSet)> {
        self.sets.iter().map(|(v, s)| (*v, s))
    }

    /// How many vnodes have a replica set.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// Whether no vnode has a replica set.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Checks the invariants of a complete, settled placement: every vnode of the layout
    /// has exactly `rf` distinct voters, none is joint, and no node appears twice in one
    /// vnode.
    pub fn check(&self, rf: usize) -> Result<(), PlacementError> {
        check_rf(rf)?;
        // A decoded placement may carry sets outside its layout.
        if let Some(v) = self.sets.keys().find(|v| !self.layout.contains(**v)) {
            return Err(PlacementError::VnodeOutOfRange(
                *v,
                self.layout.vnode_count(),
            ));
        }
        for v in self.layout.vnodes() {
            let Some(set) = self.sets.get(&v) else {
                return Err(PlacementError::MissingVnode(v));
            };
            if set.is_joint() {
                return Err(PlacementError::Joint(v));
            }
            if set.voters.len() != rf {
                return Err(PlacementError::WrongVoterCount {
                    vnode: v,
                    voters: set.voters.len(),
                    rf,
                });
            }
            if let Some(n) = set.voters.intersection(&set.learners).next() {
                return Err(PlacementError::DuplicateNode { vnode: v, node: *n });
            }
        }
        Ok(())
    }

    /// Voter replicas per node (nodes holding none are absent).
    pub fn replicas_per_node(&self) -> BTreeMap<NodeId, usize> {
        let mut counts = BTreeMap::new();
        for set in self.sets.values() {
            for n in &set.voters {
                *counts.entry(*n).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Voter replicas per node, with every node of `nodes` present (zero if it holds
    /// none); nodes outside `nodes` that hold replicas are included too.
    pub fn replicas_per_node_of<'a>(
        &self,
        nodes: impl IntoIterator<Item = &'a NodeId>,
    ) -> BTreeMap<NodeId, usize> {
        let mut counts = self.replicas_per_node();
        for n in nodes {
            counts.entry(*n).or_insert(0);
        }
        counts
    }

    /// Leaders per node, given which node leads each vnode; leaders that are not a
    /// voter of their vnode in this placement are not counted.
    pub fn leaders_per_node(&self, leaders: &BTreeMap<VnodeId, NodeId>) -> BTreeMap<NodeId, usize> {
        let mut counts = BTreeMap::new();
        for (v, l) in leaders {
            if self.sets.get(v).is_some_and(|s| s.voters.contains(l)) {
                *counts.entry(*l).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The vnodes where `n` is a voter.
    pub fn vnodes_of(&self, n: NodeId) -> impl Iterator<Item = VnodeId> + '_ {
        self.sets
            .iter()
            .filter(move |(_, s)| s.voters.contains(&n))
            .map(|(v, _)| *v)
    }

    /// Every node that holds a replica (voter, outgoing or learner) somewhere.
    pub fn nodes(&self) -> BTreeSet<NodeId> {
        self.sets.values().flat_map(|s| s.nodes()).collect()
    }

    /// How many voter replicas `to` has that `self` has not: the replicas that must be
    /// created (each one a snapshot) to go from `self` to `to`.
    pub fn moved_replicas_to(&self, to: &Placement) -> usize {
        to.sets
            .iter()
            .map(|(v, t)| match self.sets.get(v) {
                Some(s) => t.voters.difference(&s.voters).count(),
                None => t.voters.len(),
            })
            .sum()
    }

    /// The bytes those new replicas carry, given each vnode's size.
    pub fn moved_bytes_to(&self, to: &Placement, vnode_bytes: impl Fn(VnodeId) -> u64) -> u64 {
        to.sets
            .iter()
            .map(|(v, t)| {
                let new = match self.sets.get(v) {
                    Some(s) => t.voters.difference(&s.voters).count(),
                    None => t.voters.len(),
                };
                (new as u64).saturating_mul(vnode_bytes(*v))
            })
            .fold(0u64, u64::saturating_add)
    }
}

/// Checks a replication factor.
pub fn check_rf(rf: usize) -> Result<(), PlacementError> {
    if rf == 0 || rf > MAX_REPLICATION_FACTOR {
        return Err(PlacementError::BadReplicationFactor(rf));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u32) -> NodeId {
        NodeId(i)
    }

    #[test]
    fn check_finds_each_broken_invariant() {
        let l = RingLayout::new(2).unwrap();
        let mut p = Placement::new(l);
        p.insert(VnodeId(0), ReplicaSet::of_voters([n(1), n(2), n(3)]))
            .unwrap();
        assert_eq!(p.check(3), Err(PlacementError::MissingVnode(VnodeId(1))));
        p.insert(VnodeId(1), ReplicaSet::of_voters([n(1), n(2)]))
            .unwrap();
        assert!(matches!(
            p.check(3),
            Err(PlacementError::WrongVoterCount { voters: 2, .. })
        ));
        let mut dup = ReplicaSet::of_voters([n(1), n(2), n(4)]);
        dup.learners.insert(n(4));
        p.insert(VnodeId(1), dup).unwrap();
        assert_eq!(
            p.check(3),
            Err(PlacementError::DuplicateNode {
                vnode: VnodeId(1),
                node: n(4)
            })
        );
        p.insert(VnodeId(1), ReplicaSet::of_voters([n(1), n(2), n(4)]))
            .unwrap();
        assert_eq!(p.check(3), Ok(()));
        assert!(p.insert(VnodeId(2), ReplicaSet::default()).is_err());
        assert_eq!(p.check(0), Err(PlacementError::BadReplicationFactor(0)));
    }

    #[test]
    fn counts_and_moves() {
        let l = RingLayout::new(2).unwrap();
        let mut a = Placement::new(l);
        a.insert(VnodeId(0), ReplicaSet::of_voters([n(1), n(2), n(3)]))
            .unwrap();
        a.insert(VnodeId(1), ReplicaSet::of_voters([n(1), n(2), n(3)]))
            .unwrap();
        let mut b = a.clone();
        b.insert(VnodeId(1), ReplicaSet::of_voters([n(1), n(2), n(4)]))
            .unwrap();
        assert_eq!(a.moved_replicas_to(&b), 1);
        assert_eq!(a.moved_bytes_to(&b, |_| 10), 10);
        assert_eq!(b.replicas_per_node()[&n(1)], 2);
        assert_eq!(b.replicas_per_node_of(&[n(9)])[&n(9)], 0);
        let leaders = BTreeMap::from([(VnodeId(0), n(1)), (VnodeId(1), n(3))]);
        assert_eq!(b.leaders_per_node(&leaders), BTreeMap::from([(n(1), 1)]));
        assert_eq!(b.vnodes_of(n(4)).collect::<Vec<_>>(), [VnodeId(1)]);
    }

    #[test]
    fn quorum_needs_both_halves_of_a_joint_config() {
        let mut s = ReplicaSet::of_voters([n(1), n(2), n(4)]);
        s.outgoing = [n(1), n(2), n(3)].into();
        assert!(s.has_quorum(|x| x != n(3)));
        assert!(!s.has_quorum(|x| x == n(1) || x == n(4)));
        assert!(!ReplicaSet::default().has_quorum(|_| true));
    }
}

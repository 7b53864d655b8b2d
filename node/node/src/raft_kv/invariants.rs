//! Raft's safety invariants, checked from outside a running cluster of [`RaftKv`] nodes
//! (a simulator looks at every node between events).
//!
//! The checker remembers what it saw across the whole run, so a violation is found even
//! when the two facts that contradict each other were never true at the same instant:
//!
//! * **election safety** (Raft §5.2): at most one leader per term of a group — from
//!   typed [`NodeEvent::LeaderElected`] events (every election, however short-lived) and
//!   from the nodes' roles;
//! * **committed entries never change** (leader completeness and state machine safety,
//!   §5.4): once a node reports index `i` committed with some entry, every node that
//!   later reports `i` committed holds the same entry (same term, kind and data);
//! * **log matching** on committed prefixes (§5.3): two nodes never hold different
//!   committed entries at the same index;
//! * **state machines apply the same sequence** (§5.4.3): two replicas that applied up
//!   to the same index hold identical stores (compared by [`RaftKv::store_digest`]).
//!
//! Every group of a node is checked on its own (terms and indexes are per group).
//! Everything it remembers is bounded by the run: one record per committed index and per
//! applied index observed, and committed entries still in a node's log are re-read only
//! within [`RECHECK_COMMITTED_WINDOW`] of its commit index.

use std::collections::BTreeMap;
use std::fmt;

use kvlab_raft::{RaftGroup, Role};
use kvlab_types::{GroupId, NodeEvent, NodeId};
use serde::Serialize;

use super::RaftKv;

/// What the checker reads inside a node that runs Raft groups: the `raft` system's
/// [`RaftKv`] and the composed system's `KvlabNode` both show their groups this way.
pub trait RaftNodeView {
    /// The groups the node runs a replica of.
    fn group_ids(&self) -> Vec<GroupId>;
    /// The Raft member of `group`.
    fn raft(&self, group: GroupId) -> Option<&RaftGroup>;
    /// A digest of the entry at `index` of `group`'s log (term, kind, data).
    fn entry_digest(&self, group: GroupId, index: u64) -> Option<u64>;
    /// The last index applied to `group`'s state machine.
    fn applied_index_of(&self, group: GroupId) -> u64;
    /// A digest of `group`'s state machine at its applied index.
    fn store_digest(&self, group: GroupId) -> u64;
}

impl RaftNodeView for RaftKv {
    fn group_ids(&self) -> Vec<GroupId> {
        RaftKv::group_ids(self).collect()
    }
    fn raft(&self, group: GroupId) -> Option<&RaftGroup> {
        RaftKv::raft(self, group)
    }
    fn entry_digest(&self, group: GroupId, index: u64) -> Option<u64> {
        RaftKv::entry_digest(self, group, index)
    }
    fn applied_index_of(&self, group: GroupId) -> u64 {
        RaftKv::applied_index_of(self, group)
    }
    fn store_digest(&self, group: GroupId) -> u64 {
        RaftKv::store_digest(self, group)
    }
}

/// How often a simulation runner should call [`InvariantChecker::observe`] on every up
/// node, in simulated milliseconds.
pub const INVARIANT_CHECK_INTERVAL_MS: u64 = 100;

/// At each observation, committed entries this far below a node's commit index (and
/// still in its log) are compared again with what was first recorded, so that a
/// committed entry that a node later overwrites is caught; older ones were checked when
/// they were younger.
pub const RECHECK_COMMITTED_WINDOW: u64 = 512;

/// One broken invariant: which, where, and the evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InvariantViolation {
    /// `election_safety`, `committed_entry_changed`, `log_matching` or
    /// `state_machine_safety`.
    pub invariant: &'static str,
    /// The group concerned.
    pub group: GroupId,
    /// The node whose state contradicts what was seen before.
    pub node: NodeId,
    /// The node that showed the earlier, contradicting fact (may be `node` itself).
    pub other_node: Option<NodeId>,
    /// The term concerned, if any.
    pub term: Option<u64>,
    /// The log index concerned, if any.
    pub index: Option<u64>,
    /// The evidence, for a person.
    pub detail: String,
}

impl fmt::Display for InvariantViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} violated in {} at {}",
            self.invariant, self.group, self.node
        )?;
        if let Some(o) = self.other_node {
            write!(f, " (against {o})")?;
        }
        if let Some(t) = self.term {
            write!(f, " term={t}")?;
        }
        if let Some(i) = self.index {
            write!(f, " index={i}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// A committed entry as first seen.
#[derive(Clone, Copy, Debug)]
struct SeenEntry {
    term: u64,
    digest: u64,
    node: NodeId,
}

/// What the checker remembers of one group.
#[derive(Debug, Default)]
struct GroupMemory {
    leaders_by_term: BTreeMap<u64, NodeId>,
    committed: BTreeMap<u64, SeenEntry>,
    applied: BTreeMap<u64, (u64, NodeId)>,
    /// Per node, the highest commit index already compared in full.
    checked_commit: BTreeMap<NodeId, u64>,
}

/// Remembers what the cluster showed so far and reports the first contradiction. See
/// [the module docs](self).
#[derive(Debug, Default)]
pub struct InvariantChecker {
    groups: BTreeMap<GroupId, GroupMemory>,
    observations: u64,
}

impl InvariantChecker {
    /// An empty checker.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many node observations were made.
    pub fn observations(&self) -> u64 {
        self.observations
    }

    /// How many (group, term) pairs had a leader seen.
    pub fn terms_with_leader(&self) -> usize {
        self.groups.values().map(|g| g.leaders_by_term.len()).sum()
    }

    /// Takes a node's event into account: [`NodeEvent::LeaderElected`] feeds election
    /// safety. The event is matched by type, never by its text.
    pub fn on_event(&mut self, node: NodeId, event: &NodeEvent) -> Result<(), InvariantViolation> {
        match *event {
            NodeEvent::LeaderElected { group, term } => self.leader_seen(group, node, term),
            _ => Ok(()),
        }
    }

    fn leader_seen(
        &mut self,
        group: GroupId,
        node: NodeId,
        term: u64,
    ) -> Result<(), InvariantViolation> {
        let memory = self.groups.entry(group).or_default();
        match memory.leaders_by_term.get(&term) {
            Some(&other) if other != node => Err(InvariantViolation {
                invariant: "election_safety",
                group,
                node,
                other_node: Some(other),
                term: Some(term),
                index: None,
                detail: format!("{node} and {other} were both leader of term {term}"),
            }),
            Some(_) => Ok(()),
            None => {
                memory.leaders_by_term.insert(term, node);
                Ok(())
            }
        }
    }

    /// Looks at every group of one up node and compares it with everything seen so far.
    pub fn observe(
        &mut self,
        id: NodeId,
        node: &impl RaftNodeView,
    ) -> Result<(), InvariantViolation> {
        self.observations += 1;
        // A node that failed to recover runs no group and serves nothing.
        for group in node.group_ids() {
            self.observe_group(id, node, group)?;
        }
        Ok(())
    }

    fn observe_group(
        &mut self,
        id: NodeId,
        node: &impl RaftNodeView,
        group: GroupId,
    ) -> Result<(), InvariantViolation> {
        let Some(g) = node.raft(group) else {
            return Ok(());
        };
        if g.role() == Role::Leader {
            self.leader_seen(group, id, g.term())?;
        }
        let memory = self.groups.entry(group).or_default();
        let commit = g.commit_index();
        let checked = memory.checked_commit.get(&id).copied().unwrap_or(0);
        let from = checked
            .min(commit.saturating_sub(RECHECK_COMMITTED_WINDOW))
            .max(g.first_index())
            .max(1);
        for index in from..=commit {
            let (Some(term), Some(digest)) = (g.term_at(index), node.entry_digest(group, index))
            else {
                continue;
            };
            let seen = *memory.committed.entry(index).or_insert(SeenEntry {
                term,
                digest,
                node: id,
            });
            if seen.term != term || seen.digest != digest {
                let invariant = if seen.node == id {
                    "committed_entry_changed"
                } else {
                    "log_matching"
                };
                return Err(InvariantViolation {
                    invariant,
                    group,
                    node: id,
                    other_node: Some(seen.node),
                    term: Some(term),
                    index: Some(index),
                    detail: format!(
                        "committed entry {index}: {id} holds term {term} (digest {digest:016x}), {} held term {} (digest {:016x})",
                        seen.node, seen.term, seen.digest
                    ),
                });
            }
        }
        memory.checked_commit.insert(id, commit.max(checked));
        let applied = node.applied_index_of(group);
        if applied == 0 {
            return Ok(());
        }
        let digest = node.store_digest(group);
        match memory.applied.get(&applied) {
            None => {
                memory.applied.insert(applied, (digest, id));
                Ok(())
            }
            Some(&(d, other)) if d != digest => Err(InvariantViolation {
                invariant: "state_machine_safety",
                group,
                node: id,
                other_node: Some(other),
                term: None,
                index: Some(applied),
                detail: format!(
                    "after applying up to {applied}, {id}'s store has digest {digest:016x} but {other}'s had {d:016x}"
                ),
            }),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elected(group: u64, term: u64) -> NodeEvent {
        NodeEvent::LeaderElected {
            group: GroupId(group),
            term,
        }
    }

    #[test]
    fn two_leaders_of_one_term_violate_election_safety() {
        let mut c = InvariantChecker::new();
        c.on_event(NodeId(1), &elected(0, 3)).expect("first leader");
        c.on_event(NodeId(1), &elected(0, 3))
            .expect("same leader again");
        c.on_event(NodeId(2), &elected(0, 4)).expect("next term");
        let v = c
            .on_event(NodeId(2), &elected(0, 3))
            .expect_err("second leader");
        assert_eq!(v.invariant, "election_safety");
        assert_eq!(
            (v.group, v.node, v.other_node, v.term),
            (GroupId(0), NodeId(2), Some(NodeId(1)), Some(3))
        );
    }

    #[test]
    fn terms_are_per_group() {
        let mut c = InvariantChecker::new();
        c.on_event(NodeId(1), &elected(0, 3)).unwrap();
        c.on_event(NodeId(2), &elected(1, 3))
            .expect("another group's leader of the same term is no violation");
        assert!(c.on_event(NodeId(2), &elected(0, 3)).is_err());
    }

    #[test]
    fn the_checker_reads_typed_fields_so_the_event_text_does_not_matter() {
        // The event's Display and Debug text play no part: a type with the same fields
        // and any formatting is checked the same. Only other kinds are ignored.
        let mut c = InvariantChecker::new();
        let follower = NodeEvent::BecameFollower {
            group: GroupId(0),
            term: 3,
            leader: Some(NodeId(1)),
        };
        c.on_event(NodeId(2), &follower).unwrap();
        c.on_event(NodeId(1), &elected(0, 3)).unwrap();
        assert!(c.on_event(NodeId(3), &elected(0, 3)).is_err());
    }
}

//! Raft's safety invariants, checked from outside a running cluster of [`RaftKv`] nodes
//! (a simulator looks at every node between events).
//!
//! The checker remembers what it saw across the whole run, so a violation is found even
//! when the two facts that contradict each other were never true at the same instant:
//!
//! * **election safety** (Raft §5.2): at most one leader per term — from `leader_elected`
//!   events (every election, however short-lived) and from the nodes' roles;
//! * **committed entries never change** (leader completeness and state machine safety,
//!   §5.4): once a node reports index `i` committed with some entry, every node that
//!   later reports `i` committed holds the same entry (same term, kind and data);
//! * **log matching** on committed prefixes (§5.3): two nodes never hold different
//!   committed entries at the same index;
//! * **state machines apply the same sequence** (§5.4.3): two replicas that applied up
//!   to the same index hold identical stores (compared by [`RaftKv::store_digest`]).
//!
//! Everything it remembers is bounded by the run: one record per committed index and per
//! applied index observed, and committed entries still in a node's log are re-read only
//! within [`RECHECK_COMMITTED_WINDOW`] of its commit index.

use std::collections::BTreeMap;
use std::fmt;

use kvlab_raft::Role;
use kvlab_types::{NodeEvent, NodeId};
use serde::Serialize;

use super::RaftKv;

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
        write!(f, "{} violated at {}", self.invariant, self.node)?;
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

/// Remembers what the cluster showed so far and reports the first contradiction. See
/// [the module docs](self).
#[derive(Debug, Default)]
pub struct InvariantChecker {
    leaders_by_term: BTreeMap<u64, NodeId>,
    committed: BTreeMap<u64, SeenEntry>,
    applied: BTreeMap<u64, (u64, NodeId)>,
    /// Per node, the highest commit index already compared in full.
    checked_commit: BTreeMap<NodeId, u64>,
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

    /// How many terms had a leader seen.
    pub fn terms_with_leader(&self) -> usize {
        self.leaders_by_term.len()
    }

    /// Takes a node's event into account: `leader_elected` events (detail
    /// `... BecameLeader { term: N }`) feed election safety.
    pub fn on_event(&mut self, node: NodeId, event: &NodeEvent) -> Result<(), InvariantViolation> {
        if event.kind != "leader_elected" {
            return Ok(());
        }
        match term_in(&event.detail) {
            Some(term) => self.leader_seen(node, term),
            None => Ok(()),
        }
    }

    fn leader_seen(&mut self, node: NodeId, term: u64) -> Result<(), InvariantViolation> {
        match self.leaders_by_term.get(&term) {
            Some(&other) if other != node => Err(InvariantViolation {
                invariant: "election_safety",
                node,
                other_node: Some(other),
                term: Some(term),
                index: None,
                detail: format!("{node} and {other} were both leader of term {term}"),
            }),
            Some(_) => Ok(()),
            None => {
                self.leaders_by_term.insert(term, node);
                Ok(())
            }
        }
    }

    /// Looks at one running node and compares it with everything seen before.
    pub fn observe(&mut self, id: NodeId, node: &RaftKv) -> Result<(), InvariantViolation> {
        self.observations += 1;
        let Some(g) = node.group() else {
            return Ok(()); // a node that failed to recover serves nothing
        };
        if g.role() == Role::Leader {
            self.leader_seen(id, g.term())?;
        }
        let commit = g.commit_index();
        let checked = self.checked_commit.get(&id).copied().unwrap_or(0);
        let from = checked
            .min(commit.saturating_sub(RECHECK_COMMITTED_WINDOW))
            .max(g.first_index())
            .max(1);
        for index in from..=commit {
            let (Some(term), Some(digest)) = (g.term_at(index), node.entry_digest(index)) else {
                continue;
            };
            match self.committed.get(&index) {
                None => {
                    self.committed.insert(
                        index,
                        SeenEntry {
                            term,
                            digest,
                            node: id,
                        },
                    );
                }
                Some(seen) if seen.term != term || seen.digest != digest => {
                    let invariant = if seen.node == id {
                        "committed_entry_changed"
                    } else {
                        "log_matching"
                    };
                    return Err(InvariantViolation {
                        invariant,
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
                Some(_) => {}
            }
        }
        self.checked_commit.insert(id, commit.max(checked));
        let applied = node.applied_index();
        if applied > 0 {
            let digest = node.store_digest();
            match self.applied.get(&applied) {
                None => {
                    self.applied.insert(applied, (digest, id));
                }
                Some(&(d, other)) if d != digest => {
                    return Err(InvariantViolation {
                        invariant: "state_machine_safety",
                        node: id,
                        other_node: Some(other),
                        term: None,
                        index: Some(applied),
                        detail: format!(
                            "after applying up to {applied}, {id}'s store has digest {digest:016x} but {other}'s had {d:016x}"
                        ),
                    });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// The number after `term: ` or `term=` in an event's detail.
fn term_in(detail: &str) -> Option<u64> {
    let rest = detail
        .split_once("term: ")
        .or_else(|| detail.split_once("term="))?
        .1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elected(term: u64) -> NodeEvent {
        NodeEvent {
            kind: "leader_elected".into(),
            detail: format!("group=0 BecameLeader {{ term: {term} }}"),
        }
    }

    #[test]
    fn two_leaders_of_one_term_violate_election_safety() {
        let mut c = InvariantChecker::new();
        c.on_event(NodeId(1), &elected(3)).expect("first leader");
        c.on_event(NodeId(1), &elected(3))
            .expect("same leader again");
        c.on_event(NodeId(2), &elected(4)).expect("next term");
        let v = c
            .on_event(NodeId(2), &elected(3))
            .expect_err("second leader");
        assert_eq!(v.invariant, "election_safety");
        assert_eq!(
            (v.node, v.other_node, v.term),
            (NodeId(2), Some(NodeId(1)), Some(3))
        );
    }

    #[test]
    fn term_is_read_from_either_detail_style() {
        assert_eq!(term_in("group=0 BecameLeader { term: 12 }"), Some(12));
        assert_eq!(term_in("term=7 x"), Some(7));
        assert_eq!(term_in("no term here"), None);
    }
}

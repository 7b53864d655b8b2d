//! The membership reconciler's rule: from the leader's view of the group and the target
//! (every node a voter, except those an active `membership` fault removed and the
//! spares kept as learners), the one admin command to send next.
//!
//! The reconciler does not wait for a pending change to commit before it sends the
//! next: Raft itself must refuse a second change while one is uncommitted (thesis §4.1;
//! the leader's view already shows the appended configuration, so the next command is
//! the next step), and a refused command is simply sent again a round later. That is
//! how the swarm catches `unsafe_allow_concurrent_conf_changes`: an impatient operator
//! is exactly what the rule protects against.

use std::collections::BTreeSet;

use kvlab_node::inspect::MembershipStatus;
use kvlab_types::{AdminAction, NodeId};

/// How the current `replace-voter` swap is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(super) enum SwapWay {
    /// Add the spare as a voter, then remove the old voter (two single-server changes).
    #[default]
    OneAtATime,
    /// One joint configuration, `EnterJoint { promote, demote }`, left automatically or
    /// by a `LeaveJoint` of the reconciler's.
    Joint { auto_leave: bool },
}

/// What the group should look like.
pub(super) struct Target<'a> {
    /// Every node of the cluster.
    pub nodes: &'a [NodeId],
    /// Out of the group entirely (active `membership` faults).
    pub removed: &'a BTreeSet<NodeId>,
    /// Learners, not voters.
    pub spares: &'a BTreeSet<NodeId>,
    /// Gone for good: never promoted, never waited for, never added (a dead voter
    /// stays, as an operator would leave it until it is replaced).
    pub retired: &'a BTreeSet<NodeId>,
    pub swap: SwapWay,
}

/// The reconciler's next move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Send(AdminAction),
    /// A learner is still catching up: look again later.
    Wait,
    /// The group is as it should be.
    Done,
}

impl Target<'_> {
    fn votes(&self, n: &NodeId) -> bool {
        !self.removed.contains(n) && !self.spares.contains(n)
    }

    /// A node that should vote and can catch up.
    fn may_vote(&self, n: &NodeId) -> bool {
        self.votes(n) && !self.retired.contains(n)
    }

    /// The next command for a group the leader sees as `m`.
    pub(super) fn next_step(&self, m: &MembershipStatus) -> Step {
        if m.joint {
            return Step::Send(AdminAction::LeaveJoint);
        }
        let voter_out = m.voters.iter().copied().find(|n| !self.votes(n));
        let promote = m.caught_up.iter().copied().find(|n| self.may_vote(n));
        let catching_up = m.learners.iter().any(|n| self.may_vote(n));
        match (voter_out, promote) {
            (Some(x), Some(y)) if self.spares.contains(&x) => {
                return Step::Send(match self.swap {
                    SwapWay::Joint { auto_leave } => AdminAction::EnterJoint {
                        promote: y,
                        demote: x,
                        auto_leave,
                    },
                    SwapWay::OneAtATime => AdminAction::AddVoter(y),
                });
            }
            // A swap waits for its replacement to catch up (below).
            (Some(x), _) if !(self.spares.contains(&x) && catching_up) => {
                return Step::Send(AdminAction::RemoveNode(x));
            }
            (None, Some(y)) => return Step::Send(AdminAction::AddVoter(y)),
            _ => {}
        }
        if let Some(&x) = m.learners.iter().find(|n| self.removed.contains(n)) {
            return Step::Send(AdminAction::RemoveNode(x));
        }
        let member = |n: &NodeId| m.voters.contains(n) || m.learners.contains(n);
        let outside = self
            .nodes
            .iter()
            .copied()
            .find(|n| !self.removed.contains(n) && !self.retired.contains(n) && !member(n));
        match outside {
            Some(x) => Step::Send(AdminAction::AddLearner(x)),
            None if catching_up => Step::Wait,
            None => Step::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u32]) -> Vec<NodeId> {
        v.iter().copied().map(NodeId).collect()
    }

    fn status(voters: &[u32], learners: &[u32], caught_up: &[u32]) -> MembershipStatus {
        MembershipStatus {
            voters: ids(voters),
            learners: ids(learners),
            caught_up: ids(caught_up),
            change_pending: false,
            joint: false,
        }
    }

    fn step(removed: &[u32], spares: &[u32], swap: SwapWay, m: &MembershipStatus) -> Step {
        let nodes = ids(&[1, 2, 3, 4]);
        let removed: BTreeSet<NodeId> = ids(removed).into_iter().collect();
        let spares: BTreeSet<NodeId> = ids(spares).into_iter().collect();
        let retired: BTreeSet<NodeId> = m.learners.iter().copied().filter(|n| n.0 == 9).collect();
        Target {
            nodes: &nodes,
            removed: &removed,
            spares: &spares,
            retired: &retired,
            swap,
        }
        .next_step(m)
    }

    #[test]
    fn a_swap_one_server_at_a_time_adds_then_removes_then_readds_as_learner() {
        use AdminAction::*;
        let way = SwapWay::OneAtATime;
        // n4 was the spare; a replace-voter made n3 the spare.
        let s = |m| step(&[], &[3], way, &m);
        assert_eq!(s(status(&[1, 2, 3], &[4], &[])), Step::Wait);
        assert_eq!(
            s(status(&[1, 2, 3], &[4], &[4])),
            Step::Send(AddVoter(NodeId(4)))
        );
        // Sent without waiting for AddVoter(n4) to commit: Raft must refuse it then.
        let mut pending = status(&[1, 2, 3, 4], &[], &[]);
        pending.change_pending = true;
        assert_eq!(s(pending), Step::Send(RemoveNode(NodeId(3))));
        assert_eq!(
            s(status(&[1, 2, 4], &[], &[])),
            Step::Send(AddLearner(NodeId(3)))
        );
        assert_eq!(s(status(&[1, 2, 4], &[3], &[])), Step::Done);
    }

    #[test]
    fn a_joint_swap_enters_and_leaves_a_joint_configuration() {
        let way = SwapWay::Joint { auto_leave: false };
        let enter = AdminAction::EnterJoint {
            promote: NodeId(4),
            demote: NodeId(3),
            auto_leave: false,
        };
        assert_eq!(
            step(&[], &[3], way, &status(&[1, 2, 3], &[4], &[4])),
            Step::Send(enter)
        );
        let mut joint = status(&[1, 2, 4], &[], &[]);
        joint.joint = true;
        assert_eq!(
            step(&[], &[3], way, &joint),
            Step::Send(AdminAction::LeaveJoint)
        );
        assert_eq!(
            step(&[], &[3], way, &status(&[1, 2, 4], &[3], &[3])),
            Step::Done
        );
    }

    #[test]
    fn removed_nodes_leave_and_come_back_as_learners_then_voters() {
        use AdminAction::*;
        let way = SwapWay::OneAtATime;
        let m = status(&[1, 2, 3, 4], &[], &[]);
        assert_eq!(step(&[2], &[], way, &m), Step::Send(RemoveNode(NodeId(2))));
        let m = status(&[1, 3, 4], &[2], &[2]);
        assert_eq!(step(&[2], &[], way, &m), Step::Send(RemoveNode(NodeId(2))));
        let m = status(&[1, 3, 4], &[], &[]);
        assert_eq!(step(&[], &[], way, &m), Step::Send(AddLearner(NodeId(2))));
        let m = status(&[1, 3, 4], &[2], &[2]);
        assert_eq!(step(&[], &[], way, &m), Step::Send(AddVoter(NodeId(2))));
        // A spare that is still a voter with nobody to swap in is removed, then re-added
        // as a learner.
        let m = status(&[1, 2, 3, 4], &[], &[]);
        assert_eq!(step(&[], &[4], way, &m), Step::Send(RemoveNode(NodeId(4))));
    }

    #[test]
    fn a_learner_lost_for_good_is_neither_waited_for_nor_blocks_the_rest() {
        use AdminAction::*;
        // Swarm seed 386: n9 (here) died as a learner; the reconciler waited for it to
        // catch up forever and never re-added a node whose removal had ended.
        let way = SwapWay::OneAtATime;
        let m = status(&[1, 2, 3], &[9], &[]);
        assert_eq!(step(&[], &[], way, &m), Step::Send(AddLearner(NodeId(4))));
        let m = status(&[1, 2, 3], &[4, 9], &[]);
        assert_eq!(step(&[], &[], way, &m), Step::Wait);
        // A spare voter is removed rather than waiting for a dead replacement.
        let m = status(&[1, 2, 3, 4], &[9], &[]);
        assert_eq!(step(&[], &[4], way, &m), Step::Send(RemoveNode(NodeId(4))));
        let m = status(&[1, 2, 3], &[4, 9], &[4]);
        assert_eq!(step(&[], &[4], way, &m), Step::Done);
    }
}

//! Operators (PD's word): a planned change of one vnode's group, as a list of steps the
//! group leader carries out one at a time, recorded in the meta group before it runs.
//!
//! Moving a replica from X to Y with joint consensus (wave 2 §2.2 M2):
//!
//! ```text
//! AddLearner(Y) → [TransferLeader(Z) if X leads] → EnterJoint{promote Y, demote X} → LeaveJoint → RemoveLearner(X)
//! ```
//!
//! and in `single-step` mode, one voter at a time, add before remove (what kvlab-raft's
//! single-server changes can do today):
//!
//! ```text
//! AddLearner(Y) → AddVoter(Y) → [TransferLeader(Z) if X leads] → RemoveNode(X)
//! ```
//!
//! Every step has a *postcondition* on the group's reported [`ReplicaSet`] (and leader)
//! — [`Step::is_done`]. The meta leader advances an operator when the descriptor the
//! group reports satisfies the current step; it re-sends the step otherwise. A re-sent
//! step is harmless because it carries the epoch it expects ([`StepCommand`]) and the
//! group refuses a step whose epoch no longer matches, or skips one already done.

use std::collections::BTreeSet;
use std::fmt;

use kvlab_types::{AdminAction, NodeId, Time};
use serde::{Deserialize, Serialize};

use crate::hash::VnodeId;
use crate::placement::{ConfEpoch, ReplicaSet};
use crate::plan::PlacementBug;

/// The most steps one operator may have (a move has at most five).
pub const MAX_OPERATOR_STEPS: usize = 8;

/// Identifies an operator; unique within a cluster's meta state, increasing.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct OperatorId(pub u64);

impl fmt::Debug for OperatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op{}", self.0)
    }
}
impl fmt::Display for OperatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op{}", self.0)
    }
}

/// Why an operator exists, in scheduling priority (PD's replica-checker order): the
/// derived order is the priority, most urgent first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperatorKind {
    /// Replace a voter on a Down node.
    ReplaceDown,
    /// Add a voter to a group with fewer than RF.
    MakeUpReplica,
    /// Tidy a group an earlier operator left untidy: leave a joint configuration, remove
    /// a learner or an extra voter (PD's remove-extra-replica / remove-orphan-peer). Not
    /// in wave 2's list; it is how a cancelled operator's leftovers are cleaned up.
    Cleanup,
    /// Move a replica off a Draining node.
    DrainNode,
    /// Move a replica from an over-full node to an under-full one.
    Rebalance,
    /// Move a group's leadership (leader balance).
    TransferLeader,
}

impl OperatorKind {
    /// The name used in events and reports.
    pub fn name(self) -> &'static str {
        match self {
            OperatorKind::ReplaceDown => "replace-down",
            OperatorKind::MakeUpReplica => "make-up-replica",
            OperatorKind::Cleanup => "cleanup",
            OperatorKind::DrainNode => "drain-node",
            OperatorKind::Rebalance => "rebalance",
            OperatorKind::TransferLeader => "transfer-leader",
        }
    }
}

/// One membership change (or leadership transfer) of a group, carried out by its leader.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Step {
    /// Add the node as a learner; the leader sends it a snapshot (under the node's
    /// snapshot limiter).
    AddLearner(NodeId),
    /// Enter a joint configuration: the learners in `promote` become voters and the
    /// voters in `demote` become learners; decisions need a majority of both the old and
    /// the new voter sets until `LeaveJoint`. The leader proposes it only once every
    /// promoted learner's match index is within `learner_catchup_max_lag_entries` of the
    /// commit index.
    EnterJoint {
        /// Learners to make voters.
        promote: BTreeSet<NodeId>,
        /// Voters to make learners.
        demote: BTreeSet<NodeId>,
    },
    /// Leave the joint configuration for the new voter set.
    LeaveJoint,
    /// Remove a learner (a demoted voter, or an orphan).
    RemoveLearner(NodeId),
    /// Hand leadership to the node (it must be a voter). Changes no configuration.
    TransferLeader(NodeId),
    /// Make the node a voter (promote the learner): one voter change, safe without a
    /// joint configuration. Single-step moves use it, and so do both modes when a group
    /// short of RF voters gains one (`MakeUpReplica`: nobody leaves).
    AddVoter(NodeId),
    /// Remove the node (voter or learner): one voter change. Single-step moves use it,
    /// and so does `Cleanup` for a voter beyond RF.
    RemoveNode(NodeId),
    /// **Teaching bug only** (`two-voters-without-joint`): add one voter and remove
    /// another in a single non-joint configuration change. With RF = 3, `{a,b,c}` →
    /// `{a,b,y}` lets the old majority `{b,c}` and the new majority `{a,y}` decide
    /// separately — two leaders, two histories. Never planned otherwise.
    SwapVoters {
        /// The voter added.
        add: NodeId,
        /// The voter removed.
        remove: NodeId,
    },
}

impl Step {
    /// Whether the step is a configuration change (raises the group's `conf_epoch` by
    /// one when applied); only [`Step::TransferLeader`] is not.
    pub fn changes_conf(&self) -> bool {
        !matches!(self, Step::TransferLeader(_))
    }

    /// The step's postcondition on the group's members and leader: true once the step
    /// has taken effect (or its effect is already there, which makes re-sending
    /// harmless). [`Step::EnterJoint`] counts as done after the group has also left the
    /// joint configuration (etcd's auto-leave may do both before a report).
    pub fn is_done(&self, set: &ReplicaSet, leader: Option<NodeId>) -> bool {
        match self {
            Step::AddLearner(n) => set.learners.contains(n) || set.voters.contains(n),
            Step::EnterJoint { promote, demote } => {
                promote.is_subset(&set.voters) && demote.is_disjoint(&set.voters)
            }
            Step::LeaveJoint => !set.is_joint(),
            Step::RemoveLearner(n) | Step::RemoveNode(n) => !set.contains(*n),
            Step::TransferLeader(n) => leader == Some(*n),
            Step::AddVoter(n) => set.voters.contains(n) && !set.is_joint(),
            Step::SwapVoters { add, remove } => {
                set.voters.contains(add) && !set.voters.contains(remove)
            }
        }
    }

    /// The step as a kvlab-types admin action, for steps that kvlab-raft's single-server
    /// changes can carry out today (`AddLearner`, `AddVoter`, `RemoveNode`,
    /// `RemoveLearner`, `TransferLeader`); `None` for the joint steps and the bug step.
    pub fn admin_action(&self) -> Option<AdminAction> {
        match self {
            Step::AddLearner(n) => Some(AdminAction::AddLearner(*n)),
            Step::AddVoter(n) => Some(AdminAction::AddVoter(*n)),
            Step::RemoveNode(n) | Step::RemoveLearner(n) => Some(AdminAction::RemoveNode(*n)),
            Step::TransferLeader(n) => Some(AdminAction::TransferLeader(*n)),
            Step::EnterJoint { .. } | Step::LeaveJoint | Step::SwapVoters { .. } => None,
        }
    }

    /// Nodes this step turns into voters.
    pub fn voters_added(&self) -> BTreeSet<NodeId> {
        match self {
            Step::EnterJoint { promote, .. } => promote.clone(),
            Step::AddVoter(n) | Step::SwapVoters { add: n, .. } => [*n].into(),
            _ => BTreeSet::new(),
        }
    }

    /// Nodes this step takes out of the voter set (`RemoveNode` counts even if the node
    /// is only a learner: the planner uses it for voters).
    pub fn voters_removed(&self) -> BTreeSet<NodeId> {
        match self {
            Step::EnterJoint { demote, .. } => demote.clone(),
            Step::RemoveNode(n) | Step::SwapVoters { remove: n, .. } => [*n].into(),
            _ => BTreeSet::new(),
        }
    }

    /// Whether this is a non-joint step that changes more than one voter at once (only
    /// the `two-voters-without-joint` bug plans one).
    pub fn changes_two_voters_without_joint(&self) -> bool {
        !matches!(self, Step::EnterJoint { .. })
            && self.voters_added().len() + self.voters_removed().len() > 1
    }
}

/// Why an operator was cancelled.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CancelReason {
    /// Its deadline passed (`scheduler.operator_timeout_ms`).
    TimedOut,
    /// The group's epoch moved to a configuration that is not the current step's result:
    /// someone else changed the group, so the plan is stale.
    EpochMoved,
    /// An operator (person) asked.
    Admin,
    /// A node it adds became unfit (Suspect, Down, Draining or Removed) before the step
    /// that needs it.
    TargetUnfit,
}

/// Where an operator is in its life.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum OperatorState {
    /// Steps remain.
    Running,
    /// Every step is done.
    Done,
    /// Stopped before the end; a `Cleanup` operator tidies what it left.
    Cancelled(CancelReason),
}

/// A planned change of one vnode's group (wave 2 §2.2 M2).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Operator {
    /// Its id (unique, increasing; see [`crate::meta::MetaCmd::CreateOperator`]).
    pub id: OperatorId,
    /// The vnode whose group changes.
    pub vnode: VnodeId,
    /// Why.
    pub kind: OperatorKind,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The index of the step under way (`steps.len()` once done).
    pub current_step: usize,
    /// The group's configuration epoch the current step expects: the epoch at creation,
    /// then the epoch reported after each configuration step.
    pub expected_conf_epoch: ConfEpoch,
    /// When the operator was planned (the proposing meta leader's clock).
    pub created_at: Time,
    /// When it is cancelled if not done.
    pub deadline: Time,
    /// Running, done or cancelled.
    pub state: OperatorState,
}

/// What the meta leader sends to a vnode's group leader: run this step of this operator.
///
/// The group leader executing it must:
/// 1. skip it (and just report its descriptor) if [`Step::is_done`] already holds;
/// 2. refuse it if `expected_conf_epoch` is `Some(e)` and the group's epoch is not `e` —
///    at proposal time, and again **at apply time** in the state machine, so a stale
///    meta leader or a duplicated step can never apply a change twice or on top of a
///    different configuration (wave 2 §1.2 P5). `None` only under the
///    `skip-epoch-check` teaching bug;
/// 3. for `EnterJoint`/`AddVoter`, wait until the promoted learners have caught up;
/// 4. for a step that demotes or removes itself while leading, transfer leadership first.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct StepCommand {
    /// The operator.
    pub operator: OperatorId,
    /// The vnode (its group is [`crate::vnode_group`]).
    pub vnode: VnodeId,
    /// The step's index in the operator.
    pub step_index: usize,
    /// The step.
    pub step: Step,
    /// The epoch the group must be at (precondition), `None` under `skip-epoch-check`.
    pub expected_conf_epoch: Option<ConfEpoch>,
}

impl Operator {
    /// Whether steps remain and it was not cancelled.
    pub fn is_running(&self) -> bool {
        self.state == OperatorState::Running
    }

    /// The step under way.
    pub fn current(&self) -> Option<&Step> {
        if self.is_running() {
            self.steps.get(self.current_step)
        } else {
            None
        }
    }

    /// The command for the step under way; with the `skip-epoch-check` bug it carries
    /// no epoch precondition.
    pub fn command(&self, bug: PlacementBug) -> Option<StepCommand> {
        let step = self.current()?.clone();
        Some(StepCommand {
            operator: self.id,
            vnode: self.vnode,
            step_index: self.current_step,
            step,
            expected_conf_epoch: (bug != PlacementBug::SkipEpochCheck)
                .then_some(self.expected_conf_epoch),
        })
    }

    /// Nodes that receive a new replica (a learner is added: one snapshot each).
    pub fn added_nodes(&self) -> BTreeSet<NodeId> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::AddLearner(n) => Some(*n),
                _ => None,
            })
            .collect()
    }

    /// Nodes that lose their replica.
    pub fn removed_nodes(&self) -> BTreeSet<NodeId> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::RemoveNode(n) | Step::RemoveLearner(n) => Some(*n),
                Step::SwapVoters { remove, .. } => Some(*remove),
                _ => None,
            })
            .collect()
    }

    /// Whether a step that entered a joint configuration is done (the group may be
    /// joint until `LeaveJoint`).
    pub fn entered_joint(&self) -> bool {
        self.steps[..self.current_step.min(self.steps.len())]
            .iter()
            .any(|s| matches!(s, Step::EnterJoint { .. }))
    }

    /// Checks the shape of an operator received in a command (decoded from the log):
    /// some steps, at most [`MAX_OPERATOR_STEPS`], not started, running, a deadline not
    /// before its creation.
    pub fn check_new(&self) -> Result<(), &'static str> {
        if self.steps.is_empty() {
            return Err("no steps");
        }
        if self.steps.len() > MAX_OPERATOR_STEPS {
            return Err("too many steps");
        }
        if self.current_step != 0 || self.state != OperatorState::Running {
            return Err("not a new operator");
        }
        if self.deadline < self.created_at {
            return Err("deadline before creation");
        }
        Ok(())
    }
}

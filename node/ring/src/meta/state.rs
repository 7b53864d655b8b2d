//! [`MetaState`]: what the meta group replicates — members, the newest descriptor per
//! vnode, the target placement and the operators.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use kvlab_types::{NodeId, Time};
use serde::{Deserialize, Serialize};

use crate::hash::{RingLayout, VnodeId};
use crate::operator::{Operator, OperatorId, StepCommand};
use crate::placement::{Descriptor, Placement, check_rf};
use crate::plan::PlacementBug;
use crate::strategy::Eligibility;

/// Finished (done or cancelled) operators kept for status pages and tests; older ones
/// are dropped (their counts stay in [`MetaCounters`]).
pub const FINISHED_OPERATORS_KEPT: usize = 256;

/// A member's state in the meta group (wave 2 §2.2 M1).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Serving; may receive and give replicas.
    Up,
    /// SWIM or a group leader doubts it. Keeps its replicas, receives none, and no new
    /// operator removes its replicas; operators under way finish.
    Suspect,
    /// Dead for `replace_down_after_ms` (with Raft evidence if required): its replicas
    /// are replaced.
    Down,
    /// Being emptied on purpose: every replica on it gets a `DrainNode` move.
    Draining,
    /// Drained (holds nothing); ignored by placement. May register again.
    Removed,
}

impl NodeState {
    /// The name used in events (`up`, `suspect`, …).
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Suspect => "suspect",
            NodeState::Down => "down",
            NodeState::Draining => "draining",
            NodeState::Removed => "removed",
        }
    }

    /// Whether its voters count towards a group's quorum for planning (Up, Suspect and
    /// Draining nodes are presumed to run).
    pub fn is_alive(self) -> bool {
        matches!(
            self,
            NodeState::Up | NodeState::Suspect | NodeState::Draining
        )
    }

    /// What a strategy may do with the node: Up is active, Suspect frozen, the others
    /// hold nothing in a target.
    pub fn eligibility(self) -> Option<Eligibility> {
        match self {
            NodeState::Up => Some(Eligibility::Active),
            NodeState::Suspect => Some(Eligibility::Frozen),
            NodeState::Down | NodeState::Draining | NodeState::Removed => None,
        }
    }

    /// Which replicas a vnode gives up first: dead ones, then draining, then the rest.
    pub(crate) fn removal_rank(self) -> u8 {
        match self {
            NodeState::Down | NodeState::Removed => 0,
            NodeState::Draining => 1,
            NodeState::Up | NodeState::Suspect => 2,
        }
    }

    /// Whether the M1 table allows `self → to` (plus `Down → Draining`, so a dead node
    /// can be decommissioned, and `Removed → Up` only through `RegisterNode`).
    pub fn may_become(self, to: NodeState) -> bool {
        use NodeState::*;
        matches!(
            (self, to),
            (Up, Suspect)
                | (Suspect, Up)
                | (Suspect, Down)
                | (Down, Suspect)
                | (Up | Suspect | Down, Draining)
                | (Draining, Removed)
        )
    }
}

/// One member of the cluster as meta records it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Member {
    /// Its address for clients and peers, if it gave one.
    pub address: Option<String>,
    /// Its state.
    pub state: NodeState,
    /// When it entered that state (the proposer's clock).
    pub since: Time,
    /// The SWIM incarnation it registered with (the highest seen).
    pub incarnation: u64,
}

/// The newest descriptor of a vnode and its leader hint.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DescriptorRecord {
    /// The newest descriptor (highest `conf_epoch`).
    pub descriptor: Descriptor,
    /// The leader that reported it (or a later one at the same epoch).
    pub leader: Option<NodeId>,
    /// That leader's Raft term.
    pub leader_term: u64,
    /// When it was recorded.
    pub reported_at: Time,
}

/// What the state machine counted (replicated, so every replica agrees).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct MetaCounters {
    /// Commands applied (any outcome).
    pub commands_applied: u64,
    /// Commands rejected (a bug or a stale/hostile proposer; see `MetaReject`).
    pub commands_rejected: u64,
    /// Descriptor reports ignored because an equal or newer epoch was recorded.
    pub stale_reports_ignored: u64,
    /// Reports with the recorded epoch but other members: two configurations with one
    /// epoch, a safety violation somewhere.
    pub conflicting_reports: u64,
    /// Operators created.
    pub operators_created: u64,
    /// Operators finished with every step done.
    pub operators_done: u64,
    /// Operators cancelled for any reason (timed out included).
    pub operators_cancelled: u64,
    /// Operators cancelled because their deadline passed.
    pub operators_timed_out: u64,
    /// The most operators ever running at once.
    pub operators_inflight_max: u64,
}

/// The meta group's replicated state (wave 2 §1.2 P3).
///
/// Change it only through [`MetaState::apply`] (in `command.rs`), so every replica that
/// applies the same log holds the same state; a snapshot is the whole state encoded
/// ([`MetaState::encode_snapshot`]).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MetaState {
    pub(super) layout: RingLayout,
    pub(super) replication_factor: u8,
    pub(super) members: BTreeMap<NodeId, Member>,
    pub(super) descriptors: BTreeMap<VnodeId, DescriptorRecord>,
    pub(super) target: Option<Placement>,
    pub(super) operators: BTreeMap<OperatorId, Operator>,
    pub(super) finished: VecDeque<Operator>,
    pub(super) next_operator_id: OperatorId,
    pub(super) counters: MetaCounters,
}

/// Why a [`MetaState`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaInitError {
    /// The replication factor is out of range.
    #[error("replication factor {0} is out of range")]
    BadReplicationFactor(usize),
    /// The initial placement is for another ring or breaks an invariant.
    #[error("initial placement: {0}")]
    BadPlacement(#[from] crate::placement::PlacementError),
    /// The initial placement has no vnode or names nodes that are not members.
    #[error("initial placement names {0}, which is not a member")]
    UnknownNode(NodeId),
}

impl MetaState {
    /// The state a new cluster boots with: `members` Up since `now`, and one descriptor
    /// per vnode from `initial` at epoch 0 (what every node created its groups with, see
    /// [`crate::initial_placement`]). Leaders are unknown until groups report.
    pub fn bootstrap(
        replication_factor: usize,
        members: &[(NodeId, Option<String>)],
        initial: &Placement,
        now: Time,
    ) -> Result<Self, MetaInitError> {
        check_rf(replication_factor)
            .map_err(|_| MetaInitError::BadReplicationFactor(replication_factor))?;
        initial.check(replication_factor)?;
        let members: BTreeMap<NodeId, Member> = members
            .iter()
            .map(|(n, address)| {
                let m = Member {
                    address: address.clone(),
                    state: NodeState::Up,
                    since: now,
                    incarnation: 0,
                };
                (*n, m)
            })
            .collect();
        if let Some(n) = initial
            .nodes()
            .into_iter()
            .find(|n| !members.contains_key(n))
        {
            return Err(MetaInitError::UnknownNode(n));
        }
        let descriptors = initial
            .iter()
            .map(|(v, set)| {
                let rec = DescriptorRecord {
                    descriptor: Descriptor::new(v, set.clone()),
                    leader: None,
                    leader_term: 0,
                    reported_at: now,
                };
                (v, rec)
            })
            .collect();
        Ok(MetaState {
            layout: initial.layout(),
            replication_factor: replication_factor as u8,
            members,
            descriptors,
            target: Some(initial.clone()),
            operators: BTreeMap::new(),
            finished: VecDeque::new(),
            next_operator_id: OperatorId(1),
            counters: MetaCounters::default(),
        })
    }

    /// The ring.
    pub fn layout(&self) -> RingLayout {
        self.layout
    }

    /// Voters per vnode.
    pub fn replication_factor(&self) -> usize {
        usize::from(self.replication_factor)
    }

    /// Every member.
    pub fn members(&self) -> &BTreeMap<NodeId, Member> {
        &self.members
    }

    /// One member.
    pub fn member(&self, n: NodeId) -> Option<&Member> {
        self.members.get(&n)
    }

    /// Member states (what the planner calls health).
    pub fn health(&self) -> BTreeMap<NodeId, NodeState> {
        self.members.iter().map(|(n, m)| (*n, m.state)).collect()
    }

    /// The newest descriptor of every vnode that has one, with its leader hint.
    pub fn descriptors(&self) -> &BTreeMap<VnodeId, DescriptorRecord> {
        &self.descriptors
    }

    /// One vnode's newest descriptor record.
    pub fn descriptor(&self, v: VnodeId) -> Option<&DescriptorRecord> {
        self.descriptors.get(&v)
    }

    /// The leader hint of every vnode that has one (the gateway's route cache fills
    /// from [`MetaState::descriptors`]).
    pub fn leaders(&self) -> BTreeMap<VnodeId, NodeId> {
        self.descriptors
            .iter()
            .filter_map(|(v, r)| r.leader.map(|l| (*v, l)))
            .collect()
    }

    /// The current placement, from the newest descriptors (epochs included).
    pub fn current_placement(&self) -> Placement {
        let (p, _) = Placement::from_descriptors(
            self.layout,
            self.descriptors.values().map(|r| &r.descriptor),
        );
        p
    }

    /// The last target placement recorded.
    pub fn target(&self) -> Option<&Placement> {
        self.target.as_ref()
    }

    /// Running operators, by id.
    pub fn operators(&self) -> &BTreeMap<OperatorId, Operator> {
        &self.operators
    }

    /// The running operator of vnode `v`, if any.
    pub fn operator_of(&self, v: VnodeId) -> Option<&Operator> {
        self.operators.values().find(|o| o.vnode == v)
    }

    /// The vnodes with a running operator.
    pub fn busy_vnodes(&self) -> BTreeSet<VnodeId> {
        self.operators.values().map(|o| o.vnode).collect()
    }

    /// The last finished operators, oldest first (at most [`FINISHED_OPERATORS_KEPT`]).
    pub fn finished_operators(&self) -> &VecDeque<Operator> {
        &self.finished
    }

    /// The id the next created operator must have at least.
    pub fn next_operator_id(&self) -> OperatorId {
        self.next_operator_id
    }

    /// Replicated counters.
    pub fn counters(&self) -> &MetaCounters {
        &self.counters
    }

    /// Whether `n` holds a replica (voter, outgoing voter or learner) in any recorded
    /// descriptor.
    pub fn holds_replicas(&self, n: NodeId) -> bool {
        self.descriptors
            .values()
            .any(|r| r.descriptor.replicas.contains(n))
    }

    /// The step every running operator waits for, as commands for the vnodes' leaders.
    /// The meta leader (re)sends them every schedule interval; re-sending is harmless
    /// (see [`StepCommand`]).
    pub fn step_commands(&self, bug: PlacementBug) -> Vec<StepCommand> {
        self.operators
            .values()
            .filter_map(|o| o.command(bug))
            .collect()
    }

    /// Checks a decoded state's invariants (a snapshot from disk or the network).
    pub fn check(&self) -> Result<(), String> {
        check_rf(self.replication_factor()).map_err(|e| e.to_string())?;
        for (v, r) in &self.descriptors {
            if *v != r.descriptor.vnode || !self.layout.contains(*v) {
                return Err(format!(
                    "descriptor under {v} is for {}",
                    r.descriptor.vnode
                ));
            }
        }
        if let Some((n, _)) = self.members.iter().find(|(_, m)| {
            m.address
                .as_ref()
                .is_some_and(|a| a.len() > super::MAX_ADDRESS_BYTES)
        }) {
            return Err(format!("address of {n} is too long"));
        }
        let mut busy = BTreeSet::new();
        for (id, o) in &self.operators {
            if !self.layout.contains(o.vnode) {
                return Err(format!(
                    "operator {id} is for {}, outside the ring",
                    o.vnode
                ));
            }
            if *id != o.id || !o.is_running() || *id >= self.next_operator_id {
                return Err(format!("operator {id} is inconsistent"));
            }
            if !busy.insert(o.vnode) {
                return Err(format!("two running operators on {}", o.vnode));
            }
        }
        if let Some(t) = &self.target
            && t.layout() != self.layout
        {
            return Err("target is for another ring".into());
        }
        if self.finished.len() > FINISHED_OPERATORS_KEPT {
            return Err("too many finished operators".into());
        }
        Ok(())
    }
}

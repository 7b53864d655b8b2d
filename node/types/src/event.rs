//! [`NodeEvent`]: what a node reports about itself for a run's `events.jsonl` — leader
//! changes, membership changes, recoveries. Every event is a typed value with structured
//! fields (group, term, member, incarnation, …), so observers and invariant checks match
//! on fields, never on text: renaming a `Debug` format cannot silence a check.
//!
//! In JSON an event is an object whose `kind` names the variant and whose other keys are
//! its fields: `{"kind":"leader_elected","group":0,"term":4}`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{AdminCommand, GroupId, NodeId};

/// A change of a replication group's membership, as events name it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipChange {
    /// The node joined as a learner (receives the log, does not vote).
    AddLearner(NodeId),
    /// The node became a voter.
    AddVoter(NodeId),
    /// The node left the group.
    RemoveNode(NodeId),
    /// The group entered a joint configuration (Raft thesis §4.3): the voters before
    /// it became the outgoing voters, and until [`MembershipChange::LeaveJoint`] every
    /// decision needs a majority of the outgoing and of the incoming voters.
    EnterJoint {
        /// Nodes that became incoming voters.
        add_voters: Vec<NodeId>,
        /// Voters demoted: outgoing voters now, learners after the leave.
        demote_voters: Vec<NodeId>,
        /// Nodes that joined as learners.
        add_learners: Vec<NodeId>,
        /// Nodes removed (a removed voter stays an outgoing voter until the leave).
        remove: Vec<NodeId>,
        /// Whether the leader leaves the joint configuration by itself once the entry
        /// is committed.
        auto_leave: bool,
    },
    /// The group left its joint configuration: only the incoming voters vote now.
    LeaveJoint,
}

/// Something a node reports about itself. It changes nothing in the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeEvent {
    // ----- Raft, per group ---------------------------------------------------------
    /// Started a (pre-)election.
    #[serde(rename = "raft_election_started")]
    ElectionStarted {
        /// The group.
        group: GroupId,
        /// The term campaigned for.
        term: u64,
        /// Whether this is a PreVote round (the term does not change yet).
        pre_vote: bool,
    },
    /// Won the election of `term`.
    LeaderElected {
        /// The group.
        group: GroupId,
        /// The term led.
        term: u64,
    },
    /// Became a follower.
    #[serde(rename = "raft_became_follower")]
    BecameFollower {
        /// The group.
        group: GroupId,
        /// The current term.
        term: u64,
        /// The leader followed, if known.
        leader: Option<NodeId>,
    },
    /// A leader stepped down because a quorum was silent for an election timeout.
    #[serde(rename = "raft_leader_lost_quorum")]
    LeaderLostQuorum {
        /// The group.
        group: GroupId,
        /// The term it led.
        term: u64,
    },
    /// Received TimeoutNow from the leader and started an election at once.
    #[serde(rename = "raft_transfer_timeout_now")]
    TransferTimeoutNow {
        /// The group.
        group: GroupId,
        /// The term before the election.
        term: u64,
    },
    /// Began streaming a snapshot to a lagging follower.
    #[serde(rename = "raft_snapshot_send")]
    SnapshotSendStarted {
        /// The group.
        group: GroupId,
        /// The follower.
        to: NodeId,
        /// The snapshot's index.
        index: u64,
    },
    /// Installed a snapshot received from the leader.
    #[serde(rename = "raft_snapshot_installed")]
    SnapshotInstalled {
        /// The group.
        group: GroupId,
        /// The snapshot's index.
        index: u64,
        /// The snapshot's term.
        term: u64,
    },
    /// The configuration in effect on this node changed (an entry was appended, a
    /// conflicting one truncated away, or a snapshot brought a new one).
    ConfigChanged {
        /// The group.
        group: GroupId,
        /// The index of the configuration entry now in effect (0: bootstrap/snapshot).
        index: u64,
        /// The change that entry carries, when it came from one.
        change: Option<MembershipChange>,
        /// The voters now (the incoming voters while joint).
        voters: Vec<NodeId>,
        /// The outgoing voters while the configuration is joint, else empty (absent in
        /// events written before joint consensus).
        #[serde(default)]
        voters_outgoing: Vec<NodeId>,
        /// The learners now.
        learners: Vec<NodeId>,
    },
    /// A configuration entry was applied (committed) here.
    ConfigCommitted {
        /// The group.
        group: GroupId,
        /// The entry's index.
        index: u64,
        /// The entry's term.
        term: u64,
        /// The voters after it.
        voters: Vec<NodeId>,
        /// The learners after it.
        learners: Vec<NodeId>,
    },
    /// A leader removed from the configuration stepped down once its removal committed
    /// (thesis §4.2.2).
    #[serde(rename = "raft_leader_removed")]
    LeaderRemoved {
        /// The group.
        group: GroupId,
        /// The term it led.
        term: u64,
    },
    /// A leader told this node it is not a member of the configuration at `conf_index`.
    NodeRemoved {
        /// The group.
        group: GroupId,
        /// The leader that said so.
        told_by: NodeId,
        /// The leader's configuration entry.
        conf_index: u64,
        /// This node's configuration entry in effect.
        local_conf_index: u64,
    },
    /// A committed entry could not be decoded as a command; every replica skips it.
    BadCommand {
        /// The group.
        group: GroupId,
        /// The entry's index.
        index: u64,
        /// The decoder's complaint.
        reason: String,
    },
    /// A peer message was refused before it reached the protocol state (a term or index
    /// out of range, a sender that disagrees with the transport, …). Counted, never
    /// applied. Refusals can come in floods, so a node reports only some of them (kvlab's
    /// systems: the 1st, 2nd, 4th, 8th, … refusal); `refused_total` counts them all.
    MessageRefused {
        /// The claimed sender.
        from: NodeId,
        /// Why.
        reason: String,
        /// Messages this node refused so far, this one included.
        refused_total: u64,
    },
    /// A group's term reached the ceiling (kvlab-raft's `MAX_TERM`), or its log the
    /// highest index (`MAX_INDEX`): this node no longer campaigns in it. Only forged or
    /// corrupted values get here; reported once.
    #[serde(rename = "raft_exhausted")]
    RaftExhausted {
        /// The group.
        group: GroupId,
        /// The term.
        term: u64,
        /// The last index of the log.
        last_index: u64,
    },

    // ----- operator commands -------------------------------------------------------
    /// An admin command was proposed to the group's log.
    AdminProposed {
        /// The command.
        command: AdminCommand,
        /// The entry's index (0 for a leader transfer, which has no entry).
        index: u64,
        /// The entry's term.
        term: u64,
    },
    /// An admin command was refused (this node does not lead, a change is pending, …).
    AdminRefused {
        /// The command.
        command: AdminCommand,
        /// The leader this node knows of.
        leader: Option<NodeId>,
        /// Why.
        reason: String,
    },
    /// The system takes no admin commands.
    AdminUnsupported {
        /// The command.
        command: AdminCommand,
    },

    // ----- node life ---------------------------------------------------------------
    /// The node (re)started from its durable state.
    NodeStarted {
        /// The system's role or name for a person (`raft`, `holder`, `primary`, …).
        role: String,
        /// Records replayed from the write-ahead log.
        records: u64,
        /// Whether a snapshot was loaded.
        snapshot: bool,
        /// The Raft term (0 where there is none).
        term: u64,
        /// The last applied index (0 where there is none).
        applied: u64,
    },
    /// The node cannot rebuild its durable state and refuses to serve.
    RecoveryFailed {
        /// Why.
        reason: String,
    },
    /// A storage operation failed and the node stopped (reported by the driver).
    StorageError {
        /// The storage's error.
        reason: String,
    },

    /// A timer fired. Reported by test and example protocols (the simulator's own tests
    /// time timers with it); kvlab's systems do not report their timers.
    TimerFired {
        /// The timer.
        timer: crate::TimerId,
    },

    // ----- SWIM --------------------------------------------------------------------
    /// A member this node did not know is alive.
    MemberJoined {
        /// The member.
        member: NodeId,
        /// Its incarnation.
        incarnation: u64,
        /// Its address.
        address: String,
    },
    /// A member is suspected.
    MemberSuspect {
        /// The member.
        member: NodeId,
        /// The incarnation suspected.
        incarnation: u64,
        /// Who suspected it first.
        from: NodeId,
    },
    /// A suspected, dead or left member is alive again.
    MemberAlive {
        /// The member.
        member: NodeId,
        /// Its new incarnation.
        incarnation: u64,
    },
    /// A member was declared dead.
    MemberDead {
        /// The member.
        member: NodeId,
        /// The incarnation declared dead.
        incarnation: u64,
        /// Who declared it.
        from: NodeId,
    },
    /// A member left on purpose.
    MemberLeft {
        /// The member.
        member: NodeId,
        /// Its incarnation when leaving.
        incarnation: u64,
    },
    /// A member came back at another address.
    MemberAddressChanged {
        /// The member.
        member: NodeId,
        /// The incarnation that brought the new address.
        incarnation: u64,
        /// The address it had.
        old_address: String,
        /// The address it has now.
        address: String,
    },
    /// A dead or left member was forgotten.
    MemberReclaimed {
        /// The member.
        member: NodeId,
        /// Its last known incarnation.
        incarnation: u64,
    },
    /// This member refuted a suspicion by raising its incarnation.
    MemberRefuted {
        /// This member.
        member: NodeId,
        /// Its new incarnation.
        incarnation: u64,
        /// Whether someone accused it (as opposed to a stale rumour).
        accused: bool,
    },
    /// This member's incarnation reached the ceiling (kvlab-swim's `MAX_INCARNATION`):
    /// it can no longer refute a suspicion at that incarnation. Only forged or corrupted
    /// incarnations get here; reported once.
    #[serde(rename = "member_incarnation_exhausted")]
    IncarnationExhausted {
        /// This member.
        member: NodeId,
        /// Its incarnation.
        incarnation: u64,
    },
    /// Joining through the seeds failed after every attempt.
    SwimJoinFailed {
        /// Attempts made.
        attempts: u32,
        /// The seeds tried.
        seeds: Vec<NodeId>,
    },

    // ----- the ring (the composed `kvlab` system) ----------------------------------
    /// This node now hosts a replica of `group`.
    ReplicaCreated {
        /// The group (a vnode's, or the metadata group).
        group: GroupId,
        /// Why it exists.
        cause: ReplicaCause,
    },
    /// This node destroyed its replica of `group`: the group's configuration at
    /// `conf_epoch` (recorded by the metadata group) no longer lists this node.
    ReplicaDestroyed {
        /// The group.
        group: GroupId,
        /// The epoch of the configuration that removed it (kept as a tombstone).
        conf_epoch: u64,
    },
    /// The metadata group applied a new operator (every metadata replica reports it;
    /// `meta_index` is the log index, the same on each, so observers deduplicate by it).
    OperatorCreated {
        /// The metadata log index.
        meta_index: u64,
        /// The operator's id.
        operator: u64,
        /// The vnode's group.
        group: GroupId,
        /// Its kind, for a person (`add-replica`, `rebalance`, …).
        operator_kind: String,
        /// Its steps, for a person.
        steps: Vec<String>,
    },
    /// An operator moved past a step (`done` when no step is left).
    OperatorAdvanced {
        /// The metadata log index.
        meta_index: u64,
        /// The operator.
        operator: u64,
        /// The vnode's group.
        group: GroupId,
        /// The step now under way (the step count when done).
        step: u32,
        /// Whether every step is done.
        done: bool,
    },
    /// An operator was cancelled.
    OperatorCancelled {
        /// The metadata log index.
        meta_index: u64,
        /// The operator.
        operator: u64,
        /// The vnode's group.
        group: GroupId,
        /// Why, for a person (`timed-out`, `epoch-moved`, …).
        reason: String,
    },
    /// The metadata group changed a node's state (`up`, `suspect`, `down`, `draining`,
    /// `removed`).
    RingNodeState {
        /// The metadata log index.
        meta_index: u64,
        /// The node.
        member: NodeId,
        /// Its new state, for a person.
        state: String,
    },
    /// This node finished sending a snapshot of `group` to `to` (a replica being
    /// created or caught up): data moved over the network.
    SnapshotSent {
        /// The group.
        group: GroupId,
        /// The receiver.
        to: NodeId,
        /// The snapshot's index.
        index: u64,
        /// Its size in bytes.
        bytes: u64,
    },
    // ----- transactions (the composed `kvlab` system) ------------------------------
    /// A step of a multi-group (2PC) transaction at one replica of one of its groups:
    /// a PREPARE applied with a YES vote, a decision applied, or the group's resolver
    /// asking the home about it. Every replica reports what it applies (the first report
    /// of a step is the earliest); the harness measures in-doubt and recovery times and
    /// aims the `kill-gateway` and `partition-home-group` faults with them.
    TxnStep {
        /// The transaction.
        txn: TxnRef,
        /// The group where the step happened.
        group: GroupId,
        /// The transaction's home group (holds its record).
        home: GroupId,
        /// What happened.
        step: TxnStepKind,
        /// The group's voters as this replica sees them; only on the home's
        /// [`TxnStepKind::Prepared`] (the replicas `partition-home-group` cuts off).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        voters: Vec<NodeId>,
    },
    /// A group leader refused or deferred a step the metadata leader asked for.
    StepRefused {
        /// The group.
        group: GroupId,
        /// The operator.
        operator: u64,
        /// Why.
        reason: String,
    },
}

/// A transaction's id in events: the gateway that coordinates it, the gateway's boot
/// epoch and a counter (kvlab-txn's `TxnId`, which this crate cannot name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxnRef {
    /// The gateway (coordinator) node.
    pub node: NodeId,
    /// Its boot epoch when it started the transaction.
    pub boot_epoch: u64,
    /// Its counter.
    pub seq: u64,
}

/// What [`NodeEvent::TxnStep`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxnStepKind {
    /// A PREPARE applied with a YES vote: the group holds the transaction's locks and
    /// buffered writes until a decision applies (at the home: the `Pending` record).
    Prepared,
    /// A Commit applied (at the home: the CAS `Pending → Committed`); locks released.
    Committed,
    /// An Abort applied; locks released.
    Aborted,
    /// The group's leader found the transaction prepared for `txn.resolve_after_ms` and
    /// asked the home for its decision (a resolver invocation).
    ResolveAsked,
}

/// A point of two-phase commit at which the `kill-gateway` fault crashes a
/// transaction's coordinator (the gateway).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxnFaultPoint {
    /// The home applied the PREPARE (its record is `Pending`) and its YES vote is on
    /// its way: the coordinator dies before it can decide.
    AfterPrepare,
    /// The home applied the Commit (its record is `Committed`) and its answer is on its
    /// way: the coordinator dies before it tells the other participants.
    AfterDecision,
}

impl TxnFaultPoint {
    /// The name in specs and events (`after-prepare`, `after-decision`).
    pub fn name(self) -> &'static str {
        match self {
            TxnFaultPoint::AfterPrepare => "after-prepare",
            TxnFaultPoint::AfterDecision => "after-decision",
        }
    }
}

/// Why a node hosts a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaCause {
    /// The node is in the group's bootstrap configuration (the initial placement).
    Bootstrap,
    /// Rebuilt from the node's durable state at boot.
    Recovered,
    /// A leader of the group contacted this node (it is being added).
    Contacted,
}

impl NodeEvent {
    /// The event's `kind` in `events.jsonl` (the serde tag).
    pub fn kind(&self) -> &'static str {
        match self {
            NodeEvent::ElectionStarted { .. } => "raft_election_started",
            NodeEvent::LeaderElected { .. } => "leader_elected",
            NodeEvent::BecameFollower { .. } => "raft_became_follower",
            NodeEvent::LeaderLostQuorum { .. } => "raft_leader_lost_quorum",
            NodeEvent::TransferTimeoutNow { .. } => "raft_transfer_timeout_now",
            NodeEvent::SnapshotSendStarted { .. } => "raft_snapshot_send",
            NodeEvent::SnapshotInstalled { .. } => "raft_snapshot_installed",
            NodeEvent::ConfigChanged { .. } => "config_changed",
            NodeEvent::ConfigCommitted { .. } => "config_committed",
            NodeEvent::LeaderRemoved { .. } => "raft_leader_removed",
            NodeEvent::NodeRemoved { .. } => "node_removed",
            NodeEvent::BadCommand { .. } => "bad_command",
            NodeEvent::MessageRefused { .. } => "message_refused",
            NodeEvent::RaftExhausted { .. } => "raft_exhausted",
            NodeEvent::AdminProposed { .. } => "admin_proposed",
            NodeEvent::AdminRefused { .. } => "admin_refused",
            NodeEvent::AdminUnsupported { .. } => "admin_unsupported",
            NodeEvent::NodeStarted { .. } => "node_started",
            NodeEvent::RecoveryFailed { .. } => "recovery_failed",
            NodeEvent::StorageError { .. } => "storage_error",
            NodeEvent::TimerFired { .. } => "timer_fired",
            NodeEvent::MemberJoined { .. } => "member_joined",
            NodeEvent::MemberSuspect { .. } => "member_suspect",
            NodeEvent::MemberAlive { .. } => "member_alive",
            NodeEvent::MemberDead { .. } => "member_dead",
            NodeEvent::MemberLeft { .. } => "member_left",
            NodeEvent::MemberAddressChanged { .. } => "member_address_changed",
            NodeEvent::MemberReclaimed { .. } => "member_reclaimed",
            NodeEvent::MemberRefuted { .. } => "member_refuted",
            NodeEvent::IncarnationExhausted { .. } => "member_incarnation_exhausted",
            NodeEvent::SwimJoinFailed { .. } => "swim_join_failed",
            NodeEvent::ReplicaCreated { .. } => "replica_created",
            NodeEvent::ReplicaDestroyed { .. } => "replica_destroyed",
            NodeEvent::OperatorCreated { .. } => "operator_created",
            NodeEvent::OperatorAdvanced { .. } => "operator_advanced",
            NodeEvent::OperatorCancelled { .. } => "operator_cancelled",
            NodeEvent::RingNodeState { .. } => "ring_node_state",
            NodeEvent::StepRefused { .. } => "step_refused",
            NodeEvent::SnapshotSent { .. } => "snapshot_sent",
            NodeEvent::TxnStep { .. } => "txn_step",
        }
    }

    /// The replication group the event concerns, if it concerns one.
    pub fn group(&self) -> Option<GroupId> {
        match self {
            NodeEvent::ElectionStarted { group, .. }
            | NodeEvent::LeaderElected { group, .. }
            | NodeEvent::BecameFollower { group, .. }
            | NodeEvent::LeaderLostQuorum { group, .. }
            | NodeEvent::TransferTimeoutNow { group, .. }
            | NodeEvent::SnapshotSendStarted { group, .. }
            | NodeEvent::SnapshotInstalled { group, .. }
            | NodeEvent::ConfigChanged { group, .. }
            | NodeEvent::ConfigCommitted { group, .. }
            | NodeEvent::LeaderRemoved { group, .. }
            | NodeEvent::NodeRemoved { group, .. }
            | NodeEvent::BadCommand { group, .. }
            | NodeEvent::RaftExhausted { group, .. }
            | NodeEvent::ReplicaCreated { group, .. }
            | NodeEvent::ReplicaDestroyed { group, .. }
            | NodeEvent::OperatorCreated { group, .. }
            | NodeEvent::OperatorAdvanced { group, .. }
            | NodeEvent::OperatorCancelled { group, .. }
            | NodeEvent::StepRefused { group, .. }
            | NodeEvent::SnapshotSent { group, .. }
            | NodeEvent::TxnStep { group, .. } => Some(*group),
            NodeEvent::AdminProposed { command, .. }
            | NodeEvent::AdminRefused { command, .. }
            | NodeEvent::AdminUnsupported { command } => Some(command.group),
            _ => None,
        }
    }

    /// The SWIM member the event is about, with the incarnation it names.
    pub fn member(&self) -> Option<(NodeId, u64)> {
        match self {
            NodeEvent::MemberJoined {
                member,
                incarnation,
                ..
            }
            | NodeEvent::MemberSuspect {
                member,
                incarnation,
                ..
            }
            | NodeEvent::MemberAlive {
                member,
                incarnation,
            }
            | NodeEvent::MemberDead {
                member,
                incarnation,
                ..
            }
            | NodeEvent::MemberLeft {
                member,
                incarnation,
            }
            | NodeEvent::MemberAddressChanged {
                member,
                incarnation,
                ..
            }
            | NodeEvent::MemberReclaimed {
                member,
                incarnation,
            }
            | NodeEvent::MemberRefuted {
                member,
                incarnation,
                ..
            }
            | NodeEvent::IncarnationExhausted {
                member,
                incarnation,
            } => Some((*member, *incarnation)),
            _ => None,
        }
    }
}

/// The event for a person: its variant and fields (`LeaderElected { group: g0, term: 4 }`).
impl fmt::Display for NodeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_the_serde_tag_of_every_variant() {
        let g = GroupId(1);
        let n = NodeId(2);
        let cmd = AdminCommand {
            group: g,
            action: crate::AdminAction::TransferLeader(n),
        };
        let all = vec![
            NodeEvent::ElectionStarted {
                group: g,
                term: 1,
                pre_vote: true,
            },
            NodeEvent::LeaderElected { group: g, term: 1 },
            NodeEvent::BecameFollower {
                group: g,
                term: 1,
                leader: Some(n),
            },
            NodeEvent::LeaderLostQuorum { group: g, term: 1 },
            NodeEvent::TransferTimeoutNow { group: g, term: 1 },
            NodeEvent::SnapshotSendStarted {
                group: g,
                to: n,
                index: 1,
            },
            NodeEvent::SnapshotInstalled {
                group: g,
                index: 1,
                term: 1,
            },
            NodeEvent::ConfigChanged {
                group: g,
                index: 1,
                change: Some(MembershipChange::AddVoter(n)),
                voters: vec![n],
                voters_outgoing: vec![],
                learners: vec![],
            },
            NodeEvent::ConfigCommitted {
                group: g,
                index: 1,
                term: 1,
                voters: vec![n],
                learners: vec![],
            },
            NodeEvent::LeaderRemoved { group: g, term: 1 },
            NodeEvent::NodeRemoved {
                group: g,
                told_by: n,
                conf_index: 1,
                local_conf_index: 0,
            },
            NodeEvent::BadCommand {
                group: g,
                index: 1,
                reason: "x".into(),
            },
            NodeEvent::MessageRefused {
                from: n,
                reason: "x".into(),
                refused_total: 1,
            },
            NodeEvent::RaftExhausted {
                group: g,
                term: 1,
                last_index: 1,
            },
            NodeEvent::AdminProposed {
                command: cmd,
                index: 1,
                term: 1,
            },
            NodeEvent::AdminRefused {
                command: cmd,
                leader: None,
                reason: "x".into(),
            },
            NodeEvent::AdminUnsupported { command: cmd },
            NodeEvent::NodeStarted {
                role: "raft".into(),
                records: 1,
                snapshot: false,
                term: 1,
                applied: 1,
            },
            NodeEvent::RecoveryFailed { reason: "x".into() },
            NodeEvent::StorageError { reason: "x".into() },
            NodeEvent::TimerFired {
                timer: crate::TimerId::new(crate::TimerSpace::Test, 1),
            },
            NodeEvent::MemberJoined {
                member: n,
                incarnation: 1,
                address: "a".into(),
            },
            NodeEvent::MemberSuspect {
                member: n,
                incarnation: 1,
                from: n,
            },
            NodeEvent::MemberAlive {
                member: n,
                incarnation: 1,
            },
            NodeEvent::MemberDead {
                member: n,
                incarnation: 1,
                from: n,
            },
            NodeEvent::MemberLeft {
                member: n,
                incarnation: 1,
            },
            NodeEvent::MemberAddressChanged {
                member: n,
                incarnation: 1,
                old_address: "a".into(),
                address: "b".into(),
            },
            NodeEvent::MemberReclaimed {
                member: n,
                incarnation: 1,
            },
            NodeEvent::MemberRefuted {
                member: n,
                incarnation: 1,
                accused: true,
            },
            NodeEvent::IncarnationExhausted {
                member: n,
                incarnation: 1,
            },
            NodeEvent::SwimJoinFailed {
                attempts: 3,
                seeds: vec![n],
            },
            NodeEvent::ReplicaCreated {
                group: g,
                cause: ReplicaCause::Contacted,
            },
            NodeEvent::ReplicaDestroyed {
                group: g,
                conf_epoch: 2,
            },
            NodeEvent::OperatorCreated {
                meta_index: 1,
                operator: 1,
                group: g,
                operator_kind: "rebalance".into(),
                steps: vec!["add-learner n4".into()],
            },
            NodeEvent::OperatorAdvanced {
                meta_index: 1,
                operator: 1,
                group: g,
                step: 1,
                done: false,
            },
            NodeEvent::OperatorCancelled {
                meta_index: 1,
                operator: 1,
                group: g,
                reason: "timed-out".into(),
            },
            NodeEvent::RingNodeState {
                meta_index: 1,
                member: n,
                state: "down".into(),
            },
            NodeEvent::StepRefused {
                group: g,
                operator: 1,
                reason: "x".into(),
            },
            NodeEvent::SnapshotSent {
                group: g,
                to: n,
                index: 3,
                bytes: 100,
            },
            NodeEvent::TxnStep {
                txn: TxnRef {
                    node: n,
                    boot_epoch: 1,
                    seq: 2,
                },
                group: g,
                home: g,
                step: TxnStepKind::Prepared,
                voters: vec![n],
            },
        ];
        for e in all {
            let json = serde_json::to_value(&e).unwrap();
            assert_eq!(json["kind"], e.kind(), "{e:?}");
            let back: NodeEvent = serde_json::from_value(json).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn fields_are_typed_not_text() {
        let e = NodeEvent::LeaderElected {
            group: GroupId(3),
            term: 9,
        };
        assert_eq!(e.group(), Some(GroupId(3)));
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(s, r#"{"kind":"leader_elected","group":3,"term":9}"#);
        let m = NodeEvent::MemberDead {
            member: NodeId(4),
            incarnation: 2,
            from: NodeId(1),
        };
        assert_eq!(m.member(), Some((NodeId(4), 2)));
    }
}

//! [`MetaCmd`]: the meta group's log commands, and [`MetaState::apply`], its
//! deterministic state machine. Commands come from a log (possibly proposed by a stale
//! leader, possibly duplicated), so every one is validated: a bad one is a typed
//! [`MetaReject`] or a harmless [`Ignored`], counted, never a panic.

use kvlab_types::{NodeId, Time};
use serde::{Deserialize, Serialize};

use super::state::{DescriptorRecord, FINISHED_OPERATORS_KEPT, Member, MetaState, NodeState};
use crate::hash::VnodeId;
use crate::operator::{CancelReason, Operator, OperatorId, OperatorKind, OperatorState};
use crate::placement::{ConfEpoch, Descriptor, MAX_REPLICATION_FACTOR, Placement};

/// The longest member address accepted (bytes).
pub const MAX_ADDRESS_BYTES: usize = 256;
/// The most nodes a reported descriptor may name (voters, outgoing and learners
/// together): a joint move of RF = 7 needs 8.
pub const MAX_DESCRIPTOR_NODES: usize = 2 * MAX_REPLICATION_FACTOR + 2;
/// The largest encoded [`MetaEntry`] accepted by [`MetaEntry::decode`] (bytes).
pub const MAX_META_ENTRY_BYTES: usize = 4 << 20;
/// The largest encoded snapshot accepted by [`MetaState::decode_snapshot`] (bytes).
pub const MAX_META_SNAPSHOT_BYTES: usize = 64 << 20;
/// The first byte of every encoded entry and snapshot; a different one is refused.
pub const META_FORMAT_VERSION: u8 = 1;

/// A command of the meta group's log.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum MetaCmd {
    /// A node announces itself (address, SWIM incarnation). New → Up; a Removed node
    /// comes back Up and empty; a known node updates its address and incarnation.
    RegisterNode {
        /// The node.
        node: NodeId,
        /// Its address, if any.
        address: Option<String>,
        /// Its SWIM incarnation.
        incarnation: u64,
    },
    /// A state transition of the M1 table (wave 2 §2.2), decided by the meta leader's
    /// scheduler or by an admin (drain).
    SetNodeState {
        /// The node.
        node: NodeId,
        /// Its new state.
        state: NodeState,
    },
    /// A group leader's descriptor, forwarded by the meta leader. Recorded if its epoch
    /// is newer than the recorded one (PD's `check`); an equal epoch with the same
    /// members only refreshes the leader hint (higher term wins); older is ignored.
    ReportDescriptor {
        /// The descriptor.
        descriptor: Descriptor,
        /// The leader that reported it.
        leader: NodeId,
        /// The leader's Raft term.
        term: u64,
    },
    /// Record the target placement the scheduler computed.
    SetTarget(Placement),
    /// Record a new operator. Its id must be at least `next_operator_id` (a lower one is a
    /// duplicate or a stale proposal: ignored); its vnode must have no running operator
    /// and its `expected_conf_epoch` must be the recorded descriptor's epoch.
    CreateOperator(Operator),
    /// Advance operator `id` past step `from_step` — and past every following step whose
    /// postcondition the recorded descriptor already meets. Refused unless the recorded
    /// descriptor (and leader hint) meets step `from_step`'s postcondition.
    AdvanceOperator {
        /// The operator.
        id: OperatorId,
        /// The step the proposer saw done.
        from_step: usize,
    },
    /// Stop operator `id`.
    CancelOperator {
        /// The operator.
        id: OperatorId,
        /// Why.
        reason: CancelReason,
    },
}

/// One entry of the meta log: a command and the proposer's time. Replicas apply with
/// `at`, never their own clock, so every replica computes the same state.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MetaEntry {
    /// The proposing meta leader's time.
    pub at: Time,
    /// The command.
    pub cmd: MetaCmd,
}

/// Why a log entry or snapshot could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaCodecError {
    /// Empty input.
    #[error("empty meta entry or snapshot")]
    Empty,
    /// Larger than the bound.
    #[error("{len} bytes exceed the bound of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// An unknown format version byte.
    #[error("format version {0} (expected {META_FORMAT_VERSION})")]
    Version(u8),
    /// Postcard could not decode it.
    #[error("decode: {0}")]
    Decode(String),
    /// It decoded, but breaks an invariant.
    #[error("invalid state: {0}")]
    Invalid(String),
}

fn encode_versioned<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![META_FORMAT_VERSION];
    // Serializing plain data into a Vec cannot fail: every type here has a derived,
    // infallible Serialize and postcard's Vec flavor grows as needed.
    let body = postcard::to_allocvec(value).expect("postcard encodes owned plain data");
    out.extend_from_slice(&body);
    out
}

fn decode_versioned<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    max: usize,
) -> Result<T, MetaCodecError> {
    let (&version, body) = bytes.split_first().ok_or(MetaCodecError::Empty)?;
    if bytes.len() > max {
        return Err(MetaCodecError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    if version != META_FORMAT_VERSION {
        return Err(MetaCodecError::Version(version));
    }
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| MetaCodecError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(MetaCodecError::Decode(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

impl MetaEntry {
    /// The entry as log bytes (a version byte, then postcard).
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(self)
    }

    /// An entry from log bytes; a typed error for anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, MetaCodecError> {
        decode_versioned(bytes, MAX_META_ENTRY_BYTES)
    }
}

impl MetaState {
    /// The whole state as snapshot bytes.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        encode_versioned(self)
    }

    /// A state from snapshot bytes, invariants checked.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<Self, MetaCodecError> {
        let s: MetaState = decode_versioned(bytes, MAX_META_SNAPSHOT_BYTES)?;
        s.check().map_err(MetaCodecError::Invalid)?;
        Ok(s)
    }
}

/// A command that changed nothing and needs nothing: a duplicate, a stale report.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Ignored {
    /// The node is already registered with this address and incarnation.
    AlreadyRegistered(NodeId),
    /// The node is already in that state.
    SameState(NodeId),
    /// A descriptor older than the recorded one (PD's `check`).
    StaleDescriptor {
        /// The vnode.
        vnode: VnodeId,
        /// The reported epoch.
        reported: ConfEpoch,
        /// The recorded epoch.
        recorded: ConfEpoch,
    },
    /// The recorded descriptor and leader hint already say this.
    DuplicateDescriptor(VnodeId),
    /// The target is already recorded.
    SameTarget,
    /// An operator id below `next_operator_id`: a duplicate or stale proposal.
    DuplicateOperator(OperatorId),
    /// The operator is finished already.
    OperatorNotRunning(OperatorId),
    /// The operator is past that step already.
    StepAlreadyAdvanced(OperatorId),
}

/// A command the state machine refused: a correct meta leader does not propose these,
/// so each is counted and worth investigating.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, thiserror::Error)]
pub enum MetaReject {
    /// The node is not a member.
    #[error("{0} is not a member")]
    UnknownNode(NodeId),
    /// The address is longer than [`MAX_ADDRESS_BYTES`].
    #[error("address of {0} is too long")]
    AddressTooLong(NodeId),
    /// The M1 table has no such transition.
    #[error("{node}: {from:?} → {to:?} is not a transition")]
    InvalidTransition {
        /// The node.
        node: NodeId,
        /// Its state.
        from: NodeState,
        /// The state asked for.
        to: NodeState,
    },
    /// A Draining node still holds replicas and cannot become Removed.
    #[error("{0} still holds replicas")]
    StillHoldsReplicas(NodeId),
    /// The vnode is not in the ring.
    #[error("{0} is outside the ring")]
    VnodeOutOfRange(VnodeId),
    /// A descriptor that cannot be a group's configuration.
    #[error("bad descriptor for {vnode}: {reason}")]
    BadDescriptor {
        /// The vnode.
        vnode: VnodeId,
        /// What is wrong.
        reason: &'static str,
    },
    /// The recorded epoch with other members: two configurations share one epoch.
    #[error("{vnode}: another configuration at {epoch}")]
    ConflictingDescriptor {
        /// The vnode.
        vnode: VnodeId,
        /// The epoch.
        epoch: ConfEpoch,
    },
    /// A target for another ring, or one that breaks placement invariants.
    #[error("bad target: {0}")]
    BadTarget(String),
    /// An operator that is malformed.
    #[error("bad operator: {0}")]
    BadOperator(&'static str),
    /// The vnode already has a running operator.
    #[error("{vnode} already runs {running}")]
    VnodeBusy {
        /// The vnode.
        vnode: VnodeId,
        /// Its running operator.
        running: OperatorId,
    },
    /// No descriptor is recorded for the vnode.
    #[error("no descriptor for {0}")]
    NoDescriptor(VnodeId),
    /// The operator was planned against another epoch.
    #[error("{vnode}: operator expects {expected}, recorded {recorded}")]
    EpochMismatch {
        /// The vnode.
        vnode: VnodeId,
        /// What the operator expects.
        expected: ConfEpoch,
        /// What is recorded.
        recorded: ConfEpoch,
    },
    /// No such operator (running or recently finished).
    #[error("no operator {0}")]
    UnknownOperator(OperatorId),
    /// Asked to advance from a step it has not reached.
    #[error("{id} is at step {at}, not {from}")]
    StepNotReached {
        /// The operator.
        id: OperatorId,
        /// Its current step.
        at: usize,
        /// The step named.
        from: usize,
    },
    /// The recorded descriptor does not show the step done.
    #[error("{id}: step {step} is not done")]
    StepNotDone {
        /// The operator.
        id: OperatorId,
        /// The step.
        step: usize,
    },
}

/// What applying a command did, for events (`node_state`, `operator_created`,
/// `operator_step`, `operator_done`, `operator_cancelled`) and tests.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub enum MetaOutcome {
    /// A node became a member (or came back after Removed).
    NodeRegistered(NodeId),
    /// A member's address or incarnation changed.
    NodeUpdated(NodeId),
    /// A member changed state.
    NodeStateChanged {
        /// The node.
        node: NodeId,
        /// Its old state.
        from: NodeState,
        /// Its new state.
        to: NodeState,
    },
    /// A newer descriptor was recorded.
    DescriptorRecorded {
        /// The vnode.
        vnode: VnodeId,
        /// Its epoch.
        conf_epoch: ConfEpoch,
    },
    /// A newer leader hint was recorded at the same epoch.
    LeaderRecorded {
        /// The vnode.
        vnode: VnodeId,
        /// The leader.
        leader: NodeId,
        /// Its term.
        term: u64,
    },
    /// The target was recorded.
    TargetRecorded,
    /// An operator was created.
    OperatorCreated {
        /// Its id.
        id: OperatorId,
        /// Its vnode.
        vnode: VnodeId,
        /// Its kind.
        kind: OperatorKind,
    },
    /// An operator moved on; `done` when it has no step left.
    OperatorAdvanced {
        /// The operator.
        id: OperatorId,
        /// Its vnode.
        vnode: VnodeId,
        /// The step now under way (`steps.len()` when done).
        step: usize,
        /// Whether every step is done.
        done: bool,
    },
    /// An operator was cancelled.
    OperatorCancelled {
        /// The operator.
        id: OperatorId,
        /// Its vnode.
        vnode: VnodeId,
        /// Why.
        reason: CancelReason,
    },
    /// Nothing to do.
    Ignored(Ignored),
    /// Refused.
    Rejected(MetaReject),
}

impl MetaState {
    /// Applies one log entry (its command at its time).
    pub fn apply_entry(&mut self, entry: &MetaEntry) -> MetaOutcome {
        self.apply(entry.cmd.clone(), entry.at)
    }

    /// Applies one command. `now` must be the same on every replica: the time carried by
    /// the log entry ([`MetaEntry::at`]), never the applying node's clock. Deterministic:
    /// the same state and command give the same state and outcome.
    pub fn apply(&mut self, cmd: MetaCmd, now: Time) -> MetaOutcome {
        self.counters.commands_applied += 1;
        let outcome = match cmd {
            MetaCmd::RegisterNode {
                node,
                address,
                incarnation,
            } => self.register(node, address, incarnation, now),
            MetaCmd::SetNodeState { node, state } => self.set_state(node, state, now),
            MetaCmd::ReportDescriptor {
                descriptor,
                leader,
                term,
            } => self.report(descriptor, leader, term, now),
            MetaCmd::SetTarget(p) => self.set_target(p),
            MetaCmd::CreateOperator(op) => self.create(op),
            MetaCmd::AdvanceOperator { id, from_step } => self.advance(id, from_step),
            MetaCmd::CancelOperator { id, reason } => self.cancel(id, reason),
        };
        match &outcome {
            MetaOutcome::Rejected(_) => self.counters.commands_rejected += 1,
            MetaOutcome::Ignored(Ignored::StaleDescriptor { .. }) => {
                self.counters.stale_reports_ignored += 1
            }
            _ => {}
        }
        outcome
    }

    fn register(
        &mut self,
        node: NodeId,
        address: Option<String>,
        incarnation: u64,
        now: Time,
    ) -> MetaOutcome {
        if address
            .as_ref()
            .is_some_and(|a| a.len() > MAX_ADDRESS_BYTES)
        {
            return MetaOutcome::Rejected(MetaReject::AddressTooLong(node));
        }
        match self.members.get_mut(&node) {
            None => {
                self.members.insert(
                    node,
                    Member {
                        address,
                        state: NodeState::Up,
                        since: now,
                        incarnation,
                    },
                );
                MetaOutcome::NodeRegistered(node)
            }
            Some(m) if m.state == NodeState::Removed => {
                *m = Member {
                    address,
                    state: NodeState::Up,
                    since: now,
                    incarnation: incarnation.max(m.incarnation),
                };
                MetaOutcome::NodeRegistered(node)
            }
            Some(m) => {
                let address = address.or_else(|| m.address.clone());
                let incarnation = incarnation.max(m.incarnation);
                if m.address == address && m.incarnation == incarnation {
                    return MetaOutcome::Ignored(Ignored::AlreadyRegistered(node));
                }
                m.address = address;
                m.incarnation = incarnation;
                MetaOutcome::NodeUpdated(node)
            }
        }
    }

    fn set_state(&mut self, node: NodeId, to: NodeState, now: Time) -> MetaOutcome {
        let holds = self.holds_replicas(node);
        let Some(m) = self.members.get_mut(&node) else {
            return MetaOutcome::Rejected(MetaReject::UnknownNode(node));
        };
        let from = m.state;
        if from == to {
            return MetaOutcome::Ignored(Ignored::SameState(node));
        }
        if !from.may_become(to) {
            return MetaOutcome::Rejected(MetaReject::InvalidTransition { node, from, to });
        }
        if to == NodeState::Removed && holds {
            return MetaOutcome::Rejected(MetaReject::StillHoldsReplicas(node));
        }
        m.state = to;
        m.since = now;
        MetaOutcome::NodeStateChanged { node, from, to }
    }

    fn report(&mut self, d: Descriptor, leader: NodeId, term: u64, now: Time) -> MetaOutcome {
        let vnode = d.vnode;
        if !self.layout.contains(vnode) {
            return MetaOutcome::Rejected(MetaReject::VnodeOutOfRange(vnode));
        }
        let bad = |reason| MetaOutcome::Rejected(MetaReject::BadDescriptor { vnode, reason });
        let r = &d.replicas;
        if r.voters.is_empty() {
            return bad("no voters");
        }
        if r.voters.len() + r.outgoing.len() + r.learners.len() > MAX_DESCRIPTOR_NODES {
            return bad("too many nodes");
        }
        if !r.voters.is_disjoint(&r.learners) || !r.outgoing.is_disjoint(&r.learners) {
            return bad("a learner is also a voter");
        }
        if d.range_version != 0 {
            return bad("range_version must be 0 in wave 2");
        }
        let record = DescriptorRecord {
            descriptor: d,
            leader: Some(leader),
            leader_term: term,
            reported_at: now,
        };
        let Some(old) = self.descriptors.get_mut(&vnode) else {
            let conf_epoch = record.descriptor.conf_epoch();
            self.descriptors.insert(vnode, record);
            return MetaOutcome::DescriptorRecorded { vnode, conf_epoch };
        };
        let (reported, recorded) = (record.descriptor.conf_epoch(), old.descriptor.conf_epoch());
        if reported < recorded {
            return MetaOutcome::Ignored(Ignored::StaleDescriptor {
                vnode,
                reported,
                recorded,
            });
        }
        if reported > recorded {
            *old = record;
            return MetaOutcome::DescriptorRecorded {
                vnode,
                conf_epoch: reported,
            };
        }
        if !old
            .descriptor
            .replicas
            .same_members(&record.descriptor.replicas)
        {
            self.counters.conflicting_reports += 1;
            return MetaOutcome::Rejected(MetaReject::ConflictingDescriptor {
                vnode,
                epoch: reported,
            });
        }
        if term > old.leader_term || old.leader.is_none() {
            old.leader = Some(leader);
            old.leader_term = term;
            old.reported_at = now;
            return MetaOutcome::LeaderRecorded {
                vnode,
                leader,
                term,
            };
        }
        MetaOutcome::Ignored(Ignored::DuplicateDescriptor(vnode))
    }

    fn set_target(&mut self, p: Placement) -> MetaOutcome {
        if p.layout() != self.layout {
            return MetaOutcome::Rejected(MetaReject::BadTarget("another ring".into()));
        }
        if let Err(e) = p.check(self.replication_factor()) {
            return MetaOutcome::Rejected(MetaReject::BadTarget(e.to_string()));
        }
        if self.target.as_ref() == Some(&p) {
            return MetaOutcome::Ignored(Ignored::SameTarget);
        }
        self.target = Some(p);
        MetaOutcome::TargetRecorded
    }

    fn create(&mut self, op: Operator) -> MetaOutcome {
        if let Err(reason) = op.check_new() {
            return MetaOutcome::Rejected(MetaReject::BadOperator(reason));
        }
        if op.id < self.next_operator_id {
            return MetaOutcome::Ignored(Ignored::DuplicateOperator(op.id));
        }
        let vnode = op.vnode;
        if !self.layout.contains(vnode) {
            return MetaOutcome::Rejected(MetaReject::VnodeOutOfRange(vnode));
        }
        if let Some(running) = self.operator_of(vnode) {
            return MetaOutcome::Rejected(MetaReject::VnodeBusy {
                vnode,
                running: running.id,
            });
        }
        let Some(rec) = self.descriptors.get(&vnode) else {
            return MetaOutcome::Rejected(MetaReject::NoDescriptor(vnode));
        };
        let recorded = rec.descriptor.conf_epoch();
        if op.expected_conf_epoch != recorded {
            return MetaOutcome::Rejected(MetaReject::EpochMismatch {
                vnode,
                expected: op.expected_conf_epoch,
                recorded,
            });
        }
        let (id, kind) = (op.id, op.kind);
        self.next_operator_id = OperatorId(id.0.saturating_add(1));
        self.operators.insert(id, op);
        self.counters.operators_created += 1;
        self.counters.operators_inflight_max = self
            .counters
            .operators_inflight_max
            .max(self.operators.len() as u64);
        MetaOutcome::OperatorCreated { id, vnode, kind }
    }

    fn not_running(&self, id: OperatorId) -> MetaOutcome {
        if self.finished.iter().any(|o| o.id == id) {
            MetaOutcome::Ignored(Ignored::OperatorNotRunning(id))
        } else if id < self.next_operator_id {
            // Finished long ago (dropped from the kept list) or never accepted.
            MetaOutcome::Ignored(Ignored::OperatorNotRunning(id))
        } else {
            MetaOutcome::Rejected(MetaReject::UnknownOperator(id))
        }
    }

    fn advance(&mut self, id: OperatorId, from_step: usize) -> MetaOutcome {
        let Some(op) = self.operators.get(&id) else {
            return self.not_running(id);
        };
        if op.current_step > from_step {
            return MetaOutcome::Ignored(Ignored::StepAlreadyAdvanced(id));
        }
        if op.current_step < from_step {
            return MetaOutcome::Rejected(MetaReject::StepNotReached {
                id,
                at: op.current_step,
                from: from_step,
            });
        }
        let Some(rec) = self.descriptors.get(&op.vnode) else {
            return MetaOutcome::Rejected(MetaReject::NoDescriptor(op.vnode));
        };
        let (set, leader) = (rec.descriptor.replicas.clone(), rec.leader);
        let mut op = self.operators.remove(&id).expect("looked up above");
        let start = op.current_step;
        while op.current_step < op.steps.len() && op.steps[op.current_step].is_done(&set, leader) {
            op.current_step += 1;
        }
        if op.current_step == start {
            self.operators.insert(id, op);
            return MetaOutcome::Rejected(MetaReject::StepNotDone { id, step: start });
        }
        op.expected_conf_epoch = set.conf_epoch;
        let (vnode, step) = (op.vnode, op.current_step);
        let done = step == op.steps.len();
        if done {
            op.state = OperatorState::Done;
            self.counters.operators_done += 1;
            self.finish(op);
        } else {
            self.operators.insert(id, op);
        }
        MetaOutcome::OperatorAdvanced {
            id,
            vnode,
            step,
            done,
        }
    }

    fn cancel(&mut self, id: OperatorId, reason: CancelReason) -> MetaOutcome {
        let Some(mut op) = self.operators.remove(&id) else {
            return self.not_running(id);
        };
        op.state = OperatorState::Cancelled(reason);
        self.counters.operators_cancelled += 1;
        if reason == CancelReason::TimedOut {
            self.counters.operators_timed_out += 1;
        }
        let vnode = op.vnode;
        self.finish(op);
        MetaOutcome::OperatorCancelled { id, vnode, reason }
    }

    fn finish(&mut self, op: Operator) {
        if self.finished.len() == FINISHED_OPERATORS_KEPT {
            self.finished.pop_front();
        }
        self.finished.push_back(op);
    }
}

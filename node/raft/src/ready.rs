//! [`Ready`]: everything one batch of input asked the caller to do, and the order in
//! which it must be done.

use kvlab_types::{MembershipChange, NodeEvent, NodeId, Out};
use serde::{Deserialize, Serialize};

use crate::GroupId;
use crate::message::RaftMessage;
use crate::storage::{ConfChange, Entry, RaftRecord, Snapshot, WalRecord};

/// A linearizable read point granted by ReadIndex: serve the read identified by `ctx`
/// once the state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadState {
    /// The caller's identifier passed to [`crate::RaftGroup::read_index`].
    pub ctx: u64,
    /// The commit index at the time leadership was confirmed.
    pub index: u64,
}

/// Something worth recording in a run's `events.jsonl` (as a [`NodeEvent`] of the
/// group, see [`RaftEvent::into_node_event`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "ConfigChanged carries a Copy ConfChange; events are rare"
)]
pub enum RaftEvent {
    /// Started a (pre-)election for `term`.
    ElectionStarted {
        /// The term campaigned for.
        term: u64,
        /// Whether it is a PreVote round.
        pre_vote: bool,
    },
    /// Won the election of `term`.
    BecameLeader {
        /// The term led.
        term: u64,
    },
    /// Became a follower (of `leader`, if known).
    BecameFollower {
        /// The current term.
        term: u64,
        /// The leader followed, if known.
        leader: Option<NodeId>,
    },
    /// A leader stepped down because a quorum was silent for an election timeout.
    SteppedDownNoQuorum {
        /// The term it led.
        term: u64,
    },
    /// Received TimeoutNow from the leader and started an election at once.
    TransferTimeoutNow {
        /// The term before the election.
        term: u64,
    },
    /// Began streaming a snapshot to a lagging follower.
    SnapshotSendStarted {
        /// The follower.
        to: NodeId,
        /// The snapshot's index.
        index: u64,
    },
    /// Installed a snapshot received from the leader.
    SnapshotInstalled {
        /// The snapshot's index.
        index: u64,
        /// The snapshot's term.
        term: u64,
    },
    /// The configuration in effect here changed: a configuration entry was appended, a
    /// conflicting one was truncated away, or a snapshot brought a new one. Query
    /// [`crate::RaftGroup::conf_state`] for every set.
    ConfigChanged {
        /// The index of the configuration entry now in effect (0: snapshot/bootstrap).
        index: u64,
        /// The change that entry carries, when the new configuration came from one.
        change: Option<ConfChange>,
        /// The voters of the new configuration (the incoming voters while joint).
        voters: Vec<NodeId>,
        /// The outgoing voters while the new configuration is joint (thesis §4.3),
        /// else empty. A voter the joint change demoted is here (it still votes) and
        /// joins `learners` when the joint configuration is left.
        voters_outgoing: Vec<NodeId>,
        /// The learners of the new configuration.
        learners: Vec<NodeId>,
    },
    /// A leader removed from the voters (removed, or demoted to learner by a joint
    /// change) stepped down once the configuration without it committed (thesis
    /// §4.2.2; after a joint change, when `LeaveJoint` committed).
    SteppedDownRemoved {
        /// The term it led.
        term: u64,
    },
    /// The term reached [`crate::MAX_TERM`], or the log [`crate::MAX_INDEX`]: this node
    /// no longer campaigns (a leader could not append its no-op). Reported once.
    Exhausted {
        /// The term.
        term: u64,
        /// The last index of the log.
        last_index: u64,
    },
}

impl RaftEvent {
    /// The node event this is, for `group`.
    pub fn into_node_event(self, group: GroupId) -> NodeEvent {
        match self {
            RaftEvent::ElectionStarted { term, pre_vote } => NodeEvent::ElectionStarted {
                group,
                term,
                pre_vote,
            },
            RaftEvent::BecameLeader { term } => NodeEvent::LeaderElected { group, term },
            RaftEvent::BecameFollower { term, leader } => NodeEvent::BecameFollower {
                group,
                term,
                leader,
            },
            RaftEvent::SteppedDownNoQuorum { term } => NodeEvent::LeaderLostQuorum { group, term },
            RaftEvent::TransferTimeoutNow { term } => NodeEvent::TransferTimeoutNow { group, term },
            RaftEvent::SnapshotSendStarted { to, index } => {
                NodeEvent::SnapshotSendStarted { group, to, index }
            }
            RaftEvent::SnapshotInstalled { index, term } => {
                NodeEvent::SnapshotInstalled { group, index, term }
            }
            RaftEvent::ConfigChanged {
                index,
                change,
                voters,
                voters_outgoing,
                learners,
            } => NodeEvent::ConfigChanged {
                group,
                index,
                change: change.map(MembershipChange::from),
                voters,
                voters_outgoing,
                learners,
            },
            RaftEvent::SteppedDownRemoved { term } => NodeEvent::LeaderRemoved { group, term },
            RaftEvent::Exhausted { term, last_index } => NodeEvent::RaftExhausted {
                group,
                term,
                last_index,
            },
        }
    }
}

impl From<ConfChange> for MembershipChange {
    fn from(c: ConfChange) -> Self {
        match c {
            ConfChange::AddLearner(n) => MembershipChange::AddLearner(n),
            ConfChange::AddVoter(n) => MembershipChange::AddVoter(n),
            ConfChange::RemoveNode(n) => MembershipChange::RemoveNode(n),
            ConfChange::EnterJoint(j) => MembershipChange::EnterJoint {
                add_voters: j.add_voters.as_slice().to_vec(),
                demote_voters: j.demote_voters.as_slice().to_vec(),
                add_learners: j.add_learners.as_slice().to_vec(),
                remove: j.remove.as_slice().to_vec(),
                auto_leave: j.auto_leave,
            },
            ConfChange::LeaveJoint => MembershipChange::LeaveJoint,
        }
    }
}

/// What the caller must do after feeding a [`crate::RaftGroup`] input, **in this order**:
///
/// 0. send [`Ready::early_messages`] (they promise nothing about this node's disk: a
///    leader's AppendEntries under [`crate::RaftConfig::parallel_leader_append`]);
/// 1. append [`Ready::records`] to the WAL, in order;
/// 2. make them durable (`Sync`) — also when there are none, as a barrier behind earlier
///    unsynced writes, whenever anything is sent or applied below;
/// 3. send [`Ready::messages`] (only after step 2 is durable: votes and acknowledgements
///    promise that the state they describe survives a crash, Raft §5.2/§5.3);
/// 4. restore the state machine from [`Ready::restore`] if set;
/// 5. apply [`Ready::committed_entries`] in order (skipping [`crate::EntryKind::Noop`]
///    and [`crate::EntryKind::ConfChange`], which only inform the caller);
/// 6. serve [`Ready::read_states`] once applied up to their index; fail
///    [`Ready::aborted_reads`].
///
/// When [`Ready::apply_before_sync`] is set, steps 4–6 may come first, before step 0:
/// nothing they reveal depends on this node's unsynced records.
///
/// [`Ready::emit_effects`] performs steps 0–3 as kvlab [`kvlab_types::Effect`]s; a
/// caller that does 4–6 after it has its replies behind the `Sync`, waiting for it too.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// The group this batch belongs to.
    pub group: GroupId,
    /// Messages that may leave before the records are durable: a leader's
    /// AppendEntries when [`crate::RaftConfig::parallel_leader_append`] is on (thesis
    /// §10.2.1). Their entries need not be durable here, and the commit index they carry
    /// counts this node only up to what its own syncs made durable.
    pub early_messages: Vec<RaftMessage>,
    /// WAL records to persist, in order.
    pub records: Vec<RaftRecord>,
    /// Messages to send after the records are durable.
    pub messages: Vec<RaftMessage>,
    /// A snapshot received from the leader (or found at recovery) to load into the state
    /// machine before applying `committed_entries`.
    pub restore: Option<Snapshot>,
    /// Committed entries to apply, in log order, contiguous after the last batch.
    pub committed_entries: Vec<Entry>,
    /// ReadIndex requests whose leadership check succeeded.
    pub read_states: Vec<ReadState>,
    /// ReadIndex requests dropped because this node stopped leading: answer them with
    /// an error so the client retries elsewhere.
    pub aborted_reads: Vec<u64>,
    /// Events for the run log.
    pub events: Vec<RaftEvent>,
    /// Steps 4–6 (restore, apply, serve reads) need not wait for this batch's `Sync`:
    /// set under [`crate::RaftConfig::parallel_leader_append`], where every replica
    /// counted towards a commit, the leader included, had made the entry durable first,
    /// so a committed entry is on a quorum's disks whatever this node's own disk holds
    /// (and a read point rests on a quorum's answers, not on this node's disk). The
    /// caller applies and answers clients without waiting for an fsync it does not need
    /// (etcd applies in parallel with its WAL write the same way); the `Sync` then
    /// covers only the records and the messages. Off, the leader counts its own entries
    /// before they are durable, and applying must wait.
    pub apply_before_sync: bool,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.early_messages.is_empty()
            && self.messages.is_empty()
            && self.restore.is_none()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.aborted_reads.is_empty()
            && self.events.is_empty()
    }

    /// Whether a `Sync` must precede the sends and applies of this batch. A `Sync` with
    /// nothing new to flush is a barrier behind earlier unsynced records, which the
    /// leader counted as its own replica and a follower may already acknowledge.
    pub fn needs_sync(&self) -> bool {
        !self.records.is_empty()
            || !self.messages.is_empty()
            || self.restore.is_some()
            || !self.committed_entries.is_empty()
            || !self.read_states.is_empty()
    }

    /// Performs steps 0–3 of the contract as effects: `Send` each early message, `Persist`
    /// each record (encoded as a [`WalRecord`] of this group), `Sync` if
    /// [`Ready::needs_sync`], `Send` each message wrapped into the node's message type by
    /// `wrap`, then an `Event` per event. Takes early messages, records, messages and
    /// events out of `self`; the rest is left for the caller.
    pub fn emit_effects<M>(&mut self, out: &mut Out<M>, wrap: impl FnMut(RaftMessage) -> M) {
        let group = self.group;
        self.emit_effects_saving_snapshots(out, wrap, |out, snap| {
            out.persist(
                group,
                WalRecord {
                    group,
                    record: RaftRecord::Snapshot(snap),
                }
                .encode(),
            );
        });
    }

    /// [`Ready::emit_effects`], except that a [`RaftRecord::Snapshot`] is handed to
    /// `save_snapshot` at its place among the records instead of being persisted as one
    /// log record. A snapshot is as large as the state machine, and a log record has a
    /// size limit (kvlab-storage's `MAX_RECORD_BYTES`); a caller that keeps a group's
    /// snapshot in its own durable file (`Effect::SaveSnapshot`) saves it there, with
    /// every entry after it and the hard state, which together stand for the records
    /// persisted so far. `save_snapshot` runs before the `Sync` and the sends, as the
    /// record would have: a follower acknowledges an installed snapshot only once it is
    /// durable.
    pub fn emit_effects_saving_snapshots<M>(
        &mut self,
        out: &mut Out<M>,
        mut wrap: impl FnMut(RaftMessage) -> M,
        mut save_snapshot: impl FnMut(&mut Out<M>, Snapshot),
    ) {
        let needs_sync = self.needs_sync();
        for msg in self.early_messages.drain(..) {
            let to = msg.to;
            out.send(to, wrap(msg));
        }
        for record in self.records.drain(..) {
            match record {
                RaftRecord::Snapshot(snap) => save_snapshot(out, snap),
                record => out.persist(
                    self.group,
                    WalRecord {
                        group: self.group,
                        record,
                    }
                    .encode(),
                ),
            }
        }
        if needs_sync {
            out.sync();
        }
        for msg in self.messages.drain(..) {
            let to = msg.to;
            out.send(to, wrap(msg));
        }
        for ev in self.events.drain(..) {
            out.event(ev.into_node_event(self.group));
        }
    }
}

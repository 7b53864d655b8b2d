//! # kvlab-raft
//!
//! Raft consensus (Ongaro & Ousterhout 2014; Ongaro's thesis 2014) as a **sans-IO
//! library** in the style of etcd-io/raft and tikv/raft-rs: a [`RaftGroup`] only computes.
//! It never sends, reads a clock, touches a disk or spawns anything; all randomness (the
//! election timeout) comes from the caller's seeded [`kvlab_types::Rng`].
//!
//! **Must never depend on:** any kvlab crate but `kvlab-types`, tokio, tarpc, the
//! filesystem or the network.
//!
//! ## Many groups per node
//!
//! A node runs one [`RaftGroup`] per partition. Every [`RaftMessage`] and every
//! [`WalRecord`] carries its [`GroupId`], so groups share one connection and one WAL.
//!
//! ## The driver contract (design "b": an etcd-style [`Ready`])
//!
//! Inputs are [`RaftGroup::tick`] (logical time: the caller calls it from a timer, so
//! tests drive time exactly), [`RaftGroup::step`] (a message), [`RaftGroup::propose`],
//! [`RaftGroup::propose_conf_change`], [`RaftGroup::read_index`],
//! [`RaftGroup::transfer_leader`] and [`RaftGroup::compact`]. After inputs, [`RaftGroup::ready`] returns a [`Ready`]: WAL
//! records, messages, entries to apply, read states. Its documentation gives the order;
//! [`Ready::emit_effects`] turns the persist/send part into kvlab effects
//! (`Persist…, Sync, Send…`), so messages that promise durable state wait for the sync.
//! After a crash, [`RecoveredState::from_records`] replays the WAL and
//! [`RaftGroup::recover`] resumes; a WAL that lost its unsynced tail is handled (the log
//! is shorter, term/vote may be older — safe because nothing depending on them was sent).
//!
//! ```
//! use kvlab_raft::*;
//! use kvlab_types::{seeded_rng, NodeId, Out};
//!
//! let mut rng = seeded_rng(1);
//! // A single-voter group elects itself on its first election timeout.
//! let mut g = RaftGroup::new(GroupId(7), NodeId(1), &[NodeId(1)], RaftConfig::default(), &mut rng)?;
//! while g.role() != Role::Leader {
//!     g.tick(&mut rng);
//! }
//! let at = g.propose(b"set x=1".to_vec())?;
//! let mut rd = g.ready();
//! let mut out: Out<RaftMessage> = Out::new();
//! rd.emit_effects(&mut out, |m| m); // Persist(records…), Sync
//! let applied: Vec<_> = rd.committed_entries.iter().filter(|e| e.kind == EntryKind::Normal).collect();
//! assert_eq!(applied[0].index, at.index);
//! assert_eq!(applied[0].data, b"set x=1");
//! # Ok::<(), RaftError>(())
//! ```
//!
//! ## What is here
//!
//! Elections with randomized timeouts, PreVote and CheckQuorum with leader lease;
//! replication with probe/replicate/snapshot flow control, bounded in-flight messages and
//! batch sizes, fast backtracking with conflict hints; commitment of current-term entries
//! only (§5.4.2); ReadIndex and optional lease reads; leader transfer; log compaction and
//! chunked InstallSnapshot; crash recovery; membership changes with learners, one server
//! at a time or several at once through joint consensus. Four deliberately broken
//! switches in [`RaftConfig`] exist for showing that the simulation catches bugs.
//!
//! ## Hostile input and limits
//!
//! A peer message is validated before it touches the state ([`RaftMessage::validate`]
//! for what needs no state, then the group's checks against its log and term): terms
//! within [`MAX_TERM`] and at most [`MAX_TERM_JUMP`] ahead, indexes within
//! [`MAX_INDEX`], entries contiguous with sane terms and at most
//! [`RaftConfig::max_entry_bytes`], no acknowledgement of what the leader never sent. A
//! refused message changes nothing (not even the term) and is returned as
//! [`RaftError::MalformedMessage`] with its [`MessageDefect`], and counted in
//! [`RaftStats`]; honest peers never send one, under any fault. (A term more than
//! `MAX_TERM_JUMP` ahead is refused too, but moves the receiver's term that far towards
//! it, so that a forgery accepted by one node cannot strand the others behind it.) So term and index
//! arithmetic never overflows, and a node whose term or log reached the ceiling stops
//! campaigning ([`RaftEvent::Exhausted`]) instead of panicking. What the crate
//! asserts (and keeps asserting in release) are its *own* invariants — a commit index
//! within the log, a persistence cursor within it — never properties of input.
//!
//! Sizes are bounded end to end: [`RaftGroup::propose`] refuses an entry over
//! `max_entry_bytes` ([`RaftError::EntryTooLarge`]) so every entry fits one
//! AppendEntries; messages stay within [`RaftConfig::max_message_bytes`] and WAL
//! entry records within `max_bytes_per_msg` — the driver sizes its transport frame and
//! WAL record limit by them. A snapshot record carries the whole state machine image
//! and is bounded only by `max_snapshot_bytes`.
//!
//! ## Membership changes (thesis §4.1–4.2: single-server changes)
//!
//! [`RaftGroup::propose_conf_change`] appends one [`ConfChange`] — `AddLearner`,
//! `AddVoter` (promotes a learner, or adds a newcomer directly) or `RemoveNode` — as an
//! [`EntryKind::ConfChange`] entry (the joint steps `EnterJoint` and `LeaveJoint` are
//! described in the next section). Rules:
//!
//! * **Takes effect on append**, on every node, committed or not (thesis §4.1); a
//!   truncated configuration entry rolls the configuration back. The leader therefore
//!   replicates to and counts the new set at once.
//! * **One at a time**: a leader refuses a change while another is uncommitted
//!   ([`RaftError::ConfChangeInProgress`]) and before it committed an entry of its own
//!   term ([`RaftError::NoCommitInTerm`], the 2015 single-server-change fix). Any
//!   majority of the old set then overlaps any majority of the new one.
//! * **Learners** receive the log (and snapshots) but never campaign, are never asked
//!   for votes, and count neither for commitment, CheckQuorum, ReadIndex nor leases.
//! * **Removing the leader**: it keeps leading a configuration without itself (its own
//!   replica no longer counts) until the removal commits, then steps down
//!   ([`RaftEvent::SteppedDownRemoved`]). A node removed by an entry not yet committed
//!   in its log may still campaign (counting only the new voters), so that a removed
//!   leader holding the only up-to-date log can finish its own removal. A removed node
//!   usually never learns of its removal (the leader stops sending to it at once);
//!   PreVote and CheckQuorum keep its elections from disrupting the group, and the
//!   caller stops it when it applies the committed `RemoveNode`.
//! * **Where the configuration lives**: not in the hard state. It is the bootstrap voter
//!   list passed to [`RaftGroup::new`] / [`RaftGroup::recover`] (the configuration at
//!   index 0 — a node joining later passes the *same* bootstrap list and is an outsider
//!   until a change adds it), replaced by [`SnapshotMeta::conf`] when a snapshot exists,
//!   with every configuration entry of the log applied on top.
//! * The caller sees committed changes in [`Ready::committed_entries`] (kind
//!   [`EntryKind::ConfChange`], decode with [`Entry::conf_change`]) and every change of
//!   the configuration in effect as [`RaftEvent::ConfigChanged`] (`config_changed`).
//! * Senders are not checked against the configuration; messages from non-members are
//!   processed (a joining node must accept its leader) and their votes are not counted.
//!
//! ## Joint consensus (thesis §4.3; etcd raft's `ConfChangeV2`)
//!
//! To change several voters in one step — the wave-2 operator replaces voter X by Y with
//! `AddLearner(Y)`, catch-up, `EnterJoint{promote Y, demote X}`, `LeaveJoint`, then
//! `RemoveNode(X)` — propose [`ConfChange::EnterJoint`] with a [`JointChange`]
//! (`add_voters`, `demote_voters`, `add_learners`, `remove`, `auto_leave`; for the
//! replacement, [`JointChange::replace_voter`]), then [`ConfChange::LeaveJoint`].
//!
//! * **The joint configuration** `C_old,new` ([`ConfState`]): `voters` are the incoming
//!   voters, `voters_outgoing` the voters before the change, `learners_next` the voters
//!   it demoted — they still vote in the outgoing set and become learners on the leave
//!   (etcd's `LearnersNext`). A removed voter is an outgoing voter until the leave.
//!   [`RaftGroup::voters`] are the incoming voters; see also
//!   [`RaftGroup::voters_outgoing`], [`RaftGroup::learners_next`],
//!   [`RaftGroup::is_joint`] and [`RaftGroup::is_member`].
//! * **The quorum rule**: while joint, every decision needs a majority of the incoming
//!   voters **and** a majority of the outgoing voters — commitment (the commit index is
//!   the smaller of the two sets' majority match indexes), elections (a candidate asks
//!   both sets; it wins when both majorities granted and loses when a majority of
//!   either refused), CheckQuorum, ReadIndex and the lease. This is etcd raft's
//!   `quorum/joint.go` (`JointConfig.CommittedIndex`, `JointConfig.VoteResult`). So no
//!   decision of `C_old,new` avoids a majority of `C_old` (what nodes that have not
//!   appended the joint entry still decide with) or of `C_new` (what nodes that appended
//!   `LeaveJoint` decide with).
//! * **The rules of single-server changes hold too**: a change takes effect on append (a
//!   truncated joint entry rolls the configuration back), one change is in flight at a
//!   time (`LeaveJoint` waits for the joint entry to commit), and a leader changes
//!   nothing before it committed in its term. While joint only `LeaveJoint` applies;
//!   `EnterJoint` only outside a joint configuration; the incoming voters may not be
//!   empty; and [`MAX_MEMBERS`] bounds the members of both sets together.
//! * **Auto-leave**: with `auto_leave` the leader proposes `LeaveJoint` itself as soon as
//!   the joint entry is committed (etcd's `autoLeave`); a new leader does so once it has
//!   committed in its term.
//! * **A leader outside the incoming voters** (demoted or removed by the joint change)
//!   keeps leading — it is an outgoing voter and counts for the outgoing majority, not
//!   for the incoming one — until `LeaveJoint` commits, then steps down
//!   ([`RaftEvent::SteppedDownRemoved`], thesis §4.2.2). To spare the group that
//!   election, the caller transfers leadership to an incoming voter first (as the wave-2
//!   operator does); while joint, [`RaftGroup::transfer_leader`] refuses an outgoing-only
//!   target. Learners never vote; a demoted voter is a learner of `C_new`.
//! * **Durability**: the joint state is rebuilt from the configuration entries of the
//!   WAL and from [`SnapshotMeta::conf`], which carries the whole [`ConfState`]. Snapshot
//!   records are written in WAL format 2 (see [`RaftRecord`]); the format-1 records of
//!   older builds still replay, and single-server entries keep their encoding. Messages
//!   carry the larger [`SnapshotMeta`] (hence [`MESSAGE_OVERHEAD_BYTES`] of 512), so the
//!   members of a group must all run a build with joint consensus.
//! * **Events**: [`RaftEvent::ConfigChanged`] carries `voters_outgoing`, and the change
//!   maps to kvlab-types' `MembershipChange::EnterJoint` / `LeaveJoint`.
//! * **Mapping to etcd**: `EnterJoint` is a `ConfChangeV2` with transition
//!   `ConfChangeTransitionJointExplicit` (`JointImplicit` with `auto_leave`) whose changes
//!   are `ConfChangeAddNode` (`add_voters`), `ConfChangeAddLearnerNode` (`add_learners`,
//!   and `demote_voters` for voters) and `ConfChangeRemoveNode` (`remove`); `LeaveJoint`
//!   is the empty `ConfChangeV2`. etcd's `ConfChangeTransitionAuto` (a simple change when
//!   one suffices) is the caller's choice of a single-server change here.
//!
//! ```
//! use kvlab_raft::*;
//! use kvlab_types::{seeded_rng, NodeId};
//!
//! // Voters {1, 2, 3}, learner 4: replace voter 3 by 4, leaving automatically.
//! let conf = ConfState {
//!     voters: MemberSet::from_slice(&[NodeId(1), NodeId(2), NodeId(3)]).unwrap(),
//!     learners: MemberSet::from_slice(&[NodeId(4)]).unwrap(),
//!     ..ConfState::default()
//! };
//! let enter = ConfChange::EnterJoint(
//!     JointChange::replace_voter(NodeId(4), NodeId(3)).with_auto_leave(true),
//! );
//! let joint = conf.apply(enter).unwrap();
//! assert!(joint.is_joint());
//! assert_eq!(joint.voters.as_slice(), &[NodeId(1), NodeId(2), NodeId(4)]); // C_new
//! assert_eq!(joint.voters_outgoing.as_slice(), &[NodeId(1), NodeId(2), NodeId(3)]); // C_old
//! assert_eq!(joint.learners_next.as_slice(), &[NodeId(3)]); // votes in C_old until the leave
//! let after = joint.apply(ConfChange::LeaveJoint).unwrap();
//! assert!(!after.is_joint());
//! assert_eq!(after.learners.as_slice(), &[NodeId(3)]);
//!
//! // On a group the change is a proposal, in effect on append. Here the incoming voters
//! // {1, 2} need node 2 as well, so the joint entry waits for it; once it commits, the
//! // leader appends the LeaveJoint by itself (auto_leave).
//! let mut rng = seeded_rng(1);
//! let mut g = RaftGroup::new(GroupId(7), NodeId(1), &[NodeId(1)], RaftConfig::default(), &mut rng)?;
//! while g.role() != Role::Leader {
//!     g.tick(&mut rng);
//! }
//! g.propose_conf_change(ConfChange::AddLearner(NodeId(2)))?;
//! let promote = JointChange {
//!     add_voters: MemberSet::from_slice(&[NodeId(2)]).unwrap(),
//!     auto_leave: true,
//!     ..JointChange::default()
//! };
//! let at = g.propose_conf_change(ConfChange::EnterJoint(promote))?;
//! assert!(g.is_joint(), "1 alone is no majority of the incoming voters {{1, 2}}");
//! assert_eq!(g.voters_outgoing(), &[NodeId(1)]);
//! assert!(g.commit_index() < at.index);
//! # Ok::<(), RaftError>(())
//! ```
//!
//! ## Lease reads (off by default; need bounded clock drift)
//!
//! With [`RaftConfig::lease_reads`], [`RaftGroup::read_index`] answers at once — a
//! [`ReadState`] at the commit index in the next [`Ready`], no message — while
//! [`RaftGroup::has_lease`] holds: an entry of the leader's term is committed and a
//! quorum of voters acknowledged a heartbeat the leader *sent* less than `lease_ticks`
//! ago by its own tick count. Otherwise it falls back to ReadIndex. Why it is safe: a
//! voter that acknowledged that heartbeat ignores vote requests for `election_ticks` of
//! its own ticks after receiving it (CheckQuorum), so no new leader can be elected
//! before `send + election_ticks`, and `lease_ticks < election_ticks`. Why it needs
//! bounded drift: ticks are local time. If a follower's clock runs fast — in the
//! simulator, clock drift makes its timer tick more often — its `election_ticks` pass
//! in less real time than the leader's `lease_ticks`; it times out early, a new leader
//! is elected and commits writes while the old leader, partitioned, still believes its
//! lease and serves reads that miss them (`tests/lease.rs` shows exactly this at 4x
//! drift). The lease tolerates followers up to `election_ticks / lease_ticks` times
//! faster than the leader (1.25x with the default 8 of 10). A leader transfer revokes
//! the lease for the term (transfer votes bypass the voters' lease), and a restarted
//! node refuses votes for `election_ticks` after recovery (it forgot when it last
//! acknowledged a leader).

use kvlab_types::NodeId;

mod config;
mod log;
mod message;
mod progress;
mod raft;
mod ready;
mod storage;

pub use config::{MAX_ELECTION_TICKS, RaftConfig};
pub use message::{
    AppendResult, MAX_INDEX, MAX_TERM, MAX_TERM_JUMP, MESSAGE_OVERHEAD_BYTES, MessageBody,
    MessageDefect, RaftMessage,
};
pub use progress::{PeerProgress, ProgressState};
pub use raft::{EntryId, RaftGroup, RaftStats, Role};
pub use ready::{RaftEvent, ReadState, Ready};
pub use storage::{
    ConfChange, ConfState, ENTRY_OVERHEAD_BYTES, Entry, EntryKind, HardState, JointChange,
    MAX_MEMBERS, MemberSet, RaftRecord, RecoveredState, Snapshot, SnapshotMeta, WalRecord,
};

/// Identifies a Raft group (one per partition, plus a metadata group); defined in
/// kvlab-types because a node's durable state is kept per group.
pub use kvlab_types::GroupId;

/// Everything that can go wrong at this crate's boundary. Protocol-level staleness (an
/// old term, a duplicate) is not an error: it is handled silently as Raft prescribes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    /// A configuration field is out of range.
    #[error("invalid raft config: field `{field}`: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A WAL record could not be decoded or replayed.
    #[error("corrupt raft WAL record #{position}: {reason}")]
    CorruptRecord {
        /// The record's position in the WAL.
        position: usize,
        /// Why.
        reason: String,
    },
    /// Entries do not continue the log.
    #[error("log gap: entries start at index {first_index} but the log ends at {last_index}")]
    LogGap {
        /// First index of the offending entries.
        first_index: u64,
        /// Last index of the log.
        last_index: u64,
    },
    /// A message would overwrite a committed entry: the sender violates Raft safety.
    #[error("entry {index} conflicts with the log but index {committed} is committed")]
    CommittedEntryConflict {
        /// The conflicting index.
        index: u64,
        /// The local commit index.
        committed: u64,
    },
    /// A message was refused before it reached the protocol state: a value out of
    /// range, inconsistent with the rest of the message, or implausible against this
    /// node's state (see [`MessageDefect`]). Nothing of it was adopted, not even its term.
    #[error("malformed raft message from {from}: {defect}")]
    MalformedMessage {
        /// The claimed sender.
        from: NodeId,
        /// What is wrong with it.
        defect: MessageDefect,
    },
    /// A proposal's data is larger than [`RaftConfig::max_entry_bytes`]: it could not be
    /// replicated in one message, so it never enters the log. Surely not applied.
    #[error("entry of {len_bytes} bytes exceeds max_entry_bytes ({max_bytes})")]
    EntryTooLarge {
        /// The proposal's data length.
        len_bytes: usize,
        /// `max_entry_bytes`.
        max_bytes: usize,
    },
    /// The log reached [`MAX_INDEX`] (only forged entries or snapshots get there): no
    /// entry can be appended.
    #[error("the log reached MAX_INDEX ({MAX_INDEX}) at {last_index}")]
    LogExhausted {
        /// The last index.
        last_index: u64,
    },
    /// The durable state found at recovery is impossible for a correct node (a term above
    /// [`MAX_TERM`], a commit index beyond the log): the group refuses to start from it.
    #[error("invalid recovered raft state: {reason}")]
    InvalidRecoveredState {
        /// Why.
        reason: String,
    },
    /// A message for another group was delivered here.
    #[error("message for group {found:?} delivered to group {expected:?}")]
    WrongGroup {
        /// This group.
        expected: GroupId,
        /// The message's group.
        found: GroupId,
    },
    /// A message from a non-member, to another node, or from ourselves.
    #[error("message from {from} to {to} does not belong here")]
    UnknownPeer {
        /// The sender.
        from: NodeId,
        /// The addressee.
        to: NodeId,
    },
    /// Only the leader can do this; `leader` is the one this node knows of.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The known leader, for redirection.
        leader: Option<NodeId>,
    },
    /// Proposals are refused while leadership is handed to `to`.
    #[error("leader transfer to {to} in progress")]
    TransferInProgress {
        /// The transfer target.
        to: NodeId,
    },
    /// The leader holds `limit` uncommitted entries already.
    #[error("too many uncommitted entries (limit {limit})")]
    TooManyUncommitted {
        /// `max_uncommitted_entries`.
        limit: usize,
    },
    /// A leader transfer to itself or a non-voter.
    #[error("cannot transfer leadership to {to}")]
    InvalidTransferTarget {
        /// The requested target.
        to: NodeId,
    },
    /// A membership change was proposed while another one is not yet committed (changes
    /// are applied one at a time, thesis §4.1).
    #[error("configuration change at index {index} is not committed yet")]
    ConfChangeInProgress {
        /// The index of the uncommitted change.
        index: u64,
    },
    /// A leader cannot change membership before it committed an entry of its own term
    /// (the fix to single-server changes in Ongaro's raft-dev post of 2015).
    #[error("leader of term {term} has not committed an entry of its term yet")]
    NoCommitInTerm {
        /// The leader's term.
        term: u64,
    },
    /// A membership change that does not apply to the current configuration.
    #[error("invalid configuration change {change:?}: {reason}")]
    InvalidConfChange {
        /// The change (boxed: a joint change is a few hundred bytes, and every
        /// `Result` of this crate would carry them).
        change: Box<ConfChange>,
        /// Why it does not apply.
        reason: String,
    },
    /// Compaction index outside `(snapshot_index, applied]`.
    #[error("cannot compact to {index}: snapshot at {snapshot_index}, applied {applied}")]
    InvalidCompaction {
        /// The requested index.
        index: u64,
        /// The current snapshot index.
        snapshot_index: u64,
        /// The applied index.
        applied: u64,
    },
}

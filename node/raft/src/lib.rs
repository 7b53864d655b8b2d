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
//! [`RaftGroup::read_index`], [`RaftGroup::transfer_leader`] and
//! [`RaftGroup::compact`]. After inputs, [`RaftGroup::ready`] returns a [`Ready`]: WAL
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
//! only (§5.4.2); ReadIndex; leader transfer; log compaction and chunked InstallSnapshot;
//! crash recovery. Membership changes are **not** implemented: the voter set is fixed at
//! construction. Two deliberately broken switches in [`RaftConfig`] exist for showing that
//! the simulation catches bugs.

use std::fmt;

use kvlab_types::NodeId;
use serde::{Deserialize, Serialize};

mod config;
mod log;
mod message;
mod progress;
mod raft;
mod ready;
mod storage;

pub use config::RaftConfig;
pub use message::{AppendResult, MessageBody, RaftMessage};
pub use progress::{PeerProgress, ProgressState};
pub use raft::{EntryId, RaftGroup, Role};
pub use ready::{RaftEvent, ReadState, Ready};
pub use storage::{
    ENTRY_OVERHEAD_BYTES, Entry, EntryKind, HardState, RaftRecord, RecoveredState, Snapshot,
    SnapshotMeta, WalRecord,
};

/// Identifies a Raft group (one per partition, plus a metadata group).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct GroupId(pub u64);

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.0)
    }
}

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
    /// A message is internally inconsistent.
    #[error("malformed raft message: {reason}")]
    MalformedMessage {
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

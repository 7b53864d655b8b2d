//! The messages Raft peers exchange. Every message names its group, so one node can run
//! many groups over one connection.

use serde::{Deserialize, Serialize};

use crate::GroupId;
use crate::storage::{Entry, SnapshotMeta};
use kvlab_types::NodeId;

/// One Raft message between two members of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftMessage {
    /// The group this message belongs to.
    pub group: GroupId,
    /// The sender.
    pub from: NodeId,
    /// The intended receiver.
    pub to: NodeId,
    /// The sender's term (for a granted pre-vote: the term the candidate would use).
    pub term: u64,
    /// What the message says.
    pub body: MessageBody,
}

/// The outcome of an AppendEntries on the follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResult {
    /// The follower's log now matches the leader's up to `match_index`.
    Accepted {
        /// The last index known to match the leader's log.
        match_index: u64,
    },
    /// The follower lacks `(prev_log_index, prev_log_term)`. The hint lets the leader
    /// skip a whole conflicting term per round trip instead of one entry (Raft §5.3, the
    /// "fast backtracking" optimisation).
    Rejected {
        /// The `prev_log_index` of the rejected request.
        prev_log_index: u64,
        /// The largest index at which the follower's log may agree with the leader.
        conflict_hint_index: u64,
        /// The follower's term at `conflict_hint_index`.
        conflict_hint_term: u64,
    },
}

/// The payload of a [`RaftMessage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// RequestVote (Raft §5.2) or, with `pre_vote`, the PreVote probe (thesis §9.6).
    RequestVote {
        /// A PreVote: asks "would you vote for me?" without anyone changing term.
        pre_vote: bool,
        /// The candidate's last log index (§5.4.1).
        last_log_index: u64,
        /// The candidate's last log term (§5.4.1).
        last_log_term: u64,
        /// Sent on the leader's behalf during a leader transfer: voters ignore their
        /// leader lease (thesis §3.10).
        leader_transfer: bool,
    },
    /// The answer to a RequestVote.
    RequestVoteResponse {
        /// Answers a PreVote.
        pre_vote: bool,
        /// Whether the vote is granted.
        granted: bool,
    },
    /// AppendEntries (Raft §5.3): replicate entries after `(prev_log_index,
    /// prev_log_term)` and announce the commit index.
    AppendEntries {
        /// The index just before `entries`.
        prev_log_index: u64,
        /// The term at `prev_log_index`.
        prev_log_term: u64,
        /// The entries to store (may be empty: a probe).
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: u64,
    },
    /// The answer to an AppendEntries or a completed InstallSnapshot.
    AppendEntriesResponse {
        /// What happened.
        result: AppendResult,
    },
    /// A heartbeat: asserts leadership and carries a commit index the follower is known
    /// to hold (`min(match, commit)`) and the leader's latest ReadIndex round.
    Heartbeat {
        /// Commit index the follower may adopt.
        leader_commit: u64,
        /// The ReadIndex round this heartbeat confirms (thesis §6.4).
        read_round: u64,
    },
    /// The answer to a heartbeat, echoing its read round.
    HeartbeatResponse {
        /// The echoed ReadIndex round.
        read_round: u64,
    },
    /// One chunk of a snapshot (Raft §7, Figure 13), at most `snapshot_chunk_bytes`.
    InstallSnapshot {
        /// Which snapshot.
        snapshot: SnapshotMeta,
        /// Byte offset of `data` in the snapshot.
        offset: u64,
        /// The chunk.
        data: Vec<u8>,
        /// Whether this is the last chunk.
        done: bool,
    },
    /// Acknowledges snapshot chunks received so far (the next offset wanted).
    InstallSnapshotResponse {
        /// Which snapshot.
        snapshot: SnapshotMeta,
        /// The next byte offset the follower wants.
        next_offset: u64,
    },
    /// Tells the leader-transfer target to start an election at once (thesis §3.10).
    TimeoutNow,
}

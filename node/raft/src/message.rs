//! The messages Raft peers exchange. Every message names its group, so one node can run
//! many groups over one connection.
//!
//! ## Hostile input
//!
//! Every value in a message comes off the wire and may be anything: a bug, a corrupted
//! packet that passed the transport's checksum, a replay, or a forgery. Before a message
//! reaches the protocol state, [`RaftMessage::validate`] checks what can be checked
//! without state (terms and indexes within [`MAX_TERM`] and [`MAX_INDEX`], the terms a
//! message carries never above its own term, entries contiguous with non-decreasing
//! terms and within `max_entry_bytes`, snapshot chunks within `max_snapshot_bytes`), and
//! [`crate::RaftGroup::step`] checks the rest against its state (a term at most
//! [`MAX_TERM_JUMP`] ahead, a commit index within the log, an acknowledgement of
//! nothing it sent). A message that fails is refused whole — no field of it is adopted,
//! not even its term — with [`crate::RaftError::MalformedMessage`] naming the
//! [`MessageDefect`], and counted in [`crate::RaftStats`]. (One exception to "nothing
//! changes": a term more than `MAX_TERM_JUMP` ahead makes the receiver raise its own
//! term by `MAX_TERM_JUMP`, see there.)
//!
//! Raft is not Byzantine fault tolerant: a well-formed forgery from a member (a plausible
//! term, a snapshot with made-up data) can still mislead a replica. What the bounds
//! guarantee is that no message can overflow the arithmetic on terms and indexes, panic
//! a node, or push the group's term to the ceiling in one step: a node adopts at most
//! [`MAX_TERM_JUMP`] more terms per message, and the ceiling [`MAX_TERM`] is `2^31`
//! such jumps away.

use serde::{Deserialize, Serialize};

use crate::GroupId;
use crate::config::RaftConfig;
use crate::storage::{Entry, EntryKind, SnapshotMeta};
use kvlab_types::NodeId;

/// The highest term a node adopts from a message or campaigns into. A message with a
/// higher term is refused; a node whose own term reached it stops campaigning (it
/// reports [`crate::RaftEvent::Exhausted`]) instead of overflowing. Half the `u64`
/// range, so `term + 1` can never overflow anywhere.
pub const MAX_TERM: u64 = u64::MAX / 2;

/// How far ahead of the receiver's term a message's term may be. Terms grow by one per
/// election, so an honest peer is never `2^32` elections ahead (at ten elections a
/// second that takes 13 years). A message further ahead is refused (its term is not
/// adopted); the receiver only raises its own term by this much towards it, as it
/// would for any higher term — so a node left behind by an earlier forgery catches up
/// in steps instead of being stranded, and reaching [`MAX_TERM`] takes `2^31` accepted
/// forgeries in a row instead of one.
pub const MAX_TERM_JUMP: u64 = 1 << 32;

/// The highest log index (and commit index, snapshot index, acknowledged index) a
/// message may name, and the highest a log grows to: a node whose log reached it stops
/// campaigning and proposing (only forged snapshots or entries get there). Half the
/// `u64` range, so `index + 1` and `index + entries.len()` never overflow.
pub const MAX_INDEX: u64 = u64::MAX / 2;

/// An upper bound on the postcard-encoded size of a [`RaftMessage`] beyond its entries'
/// [`Entry::size_bytes`] (AppendEntries) or its chunk's data (InstallSnapshot): the
/// group, sender, receiver, term, body tag, the fixed fields and the snapshot metadata
/// with four full member sets (a joint configuration: voters, learners, outgoing voters,
/// demoted voters), every integer at its longest varint. See
/// [`RaftConfig::max_message_bytes`].
pub const MESSAGE_OVERHEAD_BYTES: usize = 512;

/// Why a message was refused before it reached the protocol state. Each variant names
/// the offending value, so a counted refusal can be explained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MessageDefect {
    /// A [`MessageBody::LocalAppended`] that a node did not send itself.
    #[error("LocalAppended is only ever sent by a node to itself")]
    LocalFromPeer,
    /// The message's term is above [`MAX_TERM`].
    #[error("term {term} is above MAX_TERM ({MAX_TERM})")]
    TermAboveMax {
        /// The message's term.
        term: u64,
    },
    /// The message's term is more than [`MAX_TERM_JUMP`] ahead of the receiver's (which
    /// raised its own term by `MAX_TERM_JUMP` towards it).
    #[error("term {term} is more than MAX_TERM_JUMP ({MAX_TERM_JUMP}) ahead of term {local_term}")]
    TermJump {
        /// The message's term.
        term: u64,
        /// The receiver's term.
        local_term: u64,
    },
    /// An index field is above [`MAX_INDEX`].
    #[error("{field} {index} is above MAX_INDEX ({MAX_INDEX})")]
    IndexAboveMax {
        /// The field.
        field: &'static str,
        /// Its value.
        index: u64,
    },
    /// A term the message carries (an entry's, a log term, a snapshot's) is above the
    /// message's own term: no honest sender holds an entry from its future.
    #[error("{field} {inner} is above the message's term {term}")]
    TermAboveMessageTerm {
        /// The field.
        field: &'static str,
        /// Its value.
        inner: u64,
        /// The message's term.
        term: u64,
    },
    /// An entry or snapshot claims term 0, which no leader ever has.
    #[error("{field} has term 0 at index {index}")]
    ZeroTerm {
        /// The field.
        field: &'static str,
        /// The index it names.
        index: u64,
    },
    /// The entries of an AppendEntries do not continue `prev_log_index` one by one.
    #[error("entry {index} at offset {offset} does not follow index {prev_log_index}")]
    EntriesNotContiguous {
        /// The message's `prev_log_index`.
        prev_log_index: u64,
        /// The position of the offending entry.
        offset: usize,
        /// Its index.
        index: u64,
    },
    /// Entry terms decrease along the message (a log's terms never do).
    #[error("entry {index} has term {term}, below the term {previous_term} before it")]
    EntryTermsDecrease {
        /// The offending entry's index.
        index: u64,
        /// Its term.
        term: u64,
        /// The term of the entry (or `prev_log_term`) before it.
        previous_term: u64,
    },
    /// An entry carries more than `max_entry_bytes` of data: this node could never
    /// replicate it if it became leader.
    #[error("entry {index} carries {len_bytes} bytes, above max_entry_bytes ({max_bytes})")]
    EntryTooLarge {
        /// The entry's index.
        index: u64,
        /// Its data length.
        len_bytes: usize,
        /// `max_entry_bytes`.
        max_bytes: usize,
    },
    /// A rejection's conflict hint is beyond the index it rejects.
    #[error("conflict hint {hint} is beyond the rejected index {prev_log_index}")]
    HintAboveRejected {
        /// The hint.
        hint: u64,
        /// The rejected `prev_log_index`.
        prev_log_index: u64,
    },
    /// A snapshot's configuration is not well formed ([`crate::ConfState::is_well_formed`]:
    /// an unsorted, duplicate or overfull set, a voter that is also a learner, joint
    /// fields outside a joint configuration, a demoted voter that is not outgoing).
    #[error("snapshot {index}: malformed configuration")]
    MalformedConfiguration {
        /// The snapshot's index.
        index: u64,
    },
    /// A configuration entry's data is not a well-formed [`crate::ConfChange`] (it does
    /// not decode, or a joint change names nobody or one node twice): no leader
    /// proposes one.
    #[error("entry {index}: malformed configuration change")]
    MalformedConfChange {
        /// The entry's index.
        index: u64,
    },
    /// A snapshot chunk ends beyond `max_snapshot_bytes`.
    #[error(
        "snapshot chunk at offset {offset} of {len_bytes} bytes ends beyond max_snapshot_bytes ({max_bytes})"
    )]
    SnapshotTooLarge {
        /// The chunk's offset.
        offset: u64,
        /// The chunk's length.
        len_bytes: usize,
        /// `max_snapshot_bytes`.
        max_bytes: usize,
    },
    /// A commit index beyond the receiver's log: the leader only announces a commit
    /// index the follower is known to hold.
    #[error("commit index {commit} is beyond the last log index {last_index}")]
    CommitBeyondLog {
        /// The announced commit index.
        commit: u64,
        /// The receiver's last index.
        last_index: u64,
    },
    /// An acknowledgement or rejection of an index beyond the leader's log, which the
    /// leader never sent in its term.
    #[error("{field} {index} is beyond the leader's last index {last_index}")]
    BeyondLeaderLog {
        /// The field.
        field: &'static str,
        /// Its value.
        index: u64,
        /// The leader's last index.
        last_index: u64,
    },
    /// A heartbeat response echoes a ReadIndex round the leader never sent.
    #[error("read round {round} was never sent (latest {latest})")]
    ReadRoundNotSent {
        /// The echoed round.
        round: u64,
        /// The leader's latest round.
        latest: u64,
    },
    /// A snapshot acknowledgement beyond the snapshot's data.
    #[error("snapshot offset {offset} is beyond the snapshot's {len_bytes} bytes")]
    SnapshotOffsetBeyondData {
        /// The acknowledged offset.
        offset: u64,
        /// The snapshot's length.
        len_bytes: u64,
    },
}

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
        /// Which snapshot (boxed: a joint configuration makes the meta a few hundred
        /// bytes, which every message would otherwise carry in memory; the encoding is
        /// the same).
        snapshot: Box<SnapshotMeta>,
        /// Byte offset of `data` in the snapshot.
        offset: u64,
        /// The chunk (one byte string, as [`crate::Entry::data`]).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Whether this is the last chunk.
        done: bool,
    },
    /// Acknowledges snapshot chunks received so far (the next offset wanted).
    InstallSnapshotResponse {
        /// Which snapshot (boxed, as in `InstallSnapshot`).
        snapshot: Box<SnapshotMeta>,
        /// The next byte offset the follower wants.
        next_offset: u64,
    },
    /// Tells the leader-transfer target to start an election at once (thesis §3.10).
    TimeoutNow,
    /// From a leader to itself, sent after a `Sync`: its log is durable up to `index`, so
    /// it may count itself towards committing entries up to there (thesis §10.2.1; only
    /// with [`crate::RaftConfig::parallel_leader_append`]).
    LocalAppended {
        /// The leader's last index when the sync was issued.
        index: u64,
    },
}

impl RaftMessage {
    /// Checks everything about the message that needs no protocol state (see the
    /// [crate docs](crate#hostile-input-and-limits)): the term within [`MAX_TERM`], every index within
    /// [`MAX_INDEX`], every term it carries at most its own, AppendEntries entries
    /// contiguous after `prev_log_index` with non-decreasing terms and at most
    /// `cfg.max_entry_bytes` of data each, a rejection's hint at most the index it
    /// rejects, a snapshot's configuration well formed and its chunk within
    /// `cfg.max_snapshot_bytes`. [`crate::RaftGroup::step`] calls it first.
    pub fn validate(&self, cfg: &RaftConfig) -> Result<(), MessageDefect> {
        let term = self.term;
        if term > MAX_TERM {
            return Err(MessageDefect::TermAboveMax { term });
        }
        let index = check_index;
        let inner_term = |field: &'static str, inner: u64| check_inner_term(field, inner, term);
        match &self.body {
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => {
                index("last_log_index", *last_log_index)?;
                inner_term("last_log_term", *last_log_term)?;
            }
            MessageBody::RequestVoteResponse { .. } | MessageBody::TimeoutNow => {}
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                index("prev_log_index", *prev_log_index)?;
                index("leader_commit", *leader_commit)?;
                inner_term("prev_log_term", *prev_log_term)?;
                validate_entries(*prev_log_index, *prev_log_term, entries, term, cfg)?;
            }
            MessageBody::AppendEntriesResponse { result } => match *result {
                AppendResult::Accepted { match_index } => index("match_index", match_index)?,
                AppendResult::Rejected {
                    prev_log_index,
                    conflict_hint_index,
                    conflict_hint_term,
                } => {
                    index("prev_log_index", prev_log_index)?;
                    if conflict_hint_index > prev_log_index {
                        return Err(MessageDefect::HintAboveRejected {
                            hint: conflict_hint_index,
                            prev_log_index,
                        });
                    }
                    inner_term("conflict_hint_term", conflict_hint_term)?;
                }
            },
            MessageBody::Heartbeat { leader_commit, .. } => {
                index("leader_commit", *leader_commit)?;
            }
            MessageBody::HeartbeatResponse { .. } => {}
            MessageBody::LocalAppended { index: i } => {
                index("local appended index", *i)?;
                if self.from != self.to {
                    return Err(MessageDefect::LocalFromPeer);
                }
            }
            MessageBody::InstallSnapshot {
                snapshot,
                offset,
                data,
                ..
            } => {
                validate_snapshot_meta(snapshot, term)?;
                let too_large = MessageDefect::SnapshotTooLarge {
                    offset: *offset,
                    len_bytes: data.len(),
                    max_bytes: cfg.max_snapshot_bytes,
                };
                let end = usize::try_from(*offset)
                    .ok()
                    .and_then(|o| o.checked_add(data.len()));
                if end.is_none_or(|end| end > cfg.max_snapshot_bytes) {
                    return Err(too_large);
                }
            }
            MessageBody::InstallSnapshotResponse { snapshot, .. } => {
                validate_snapshot_meta(snapshot, term)?;
            }
        }
        Ok(())
    }
}

/// An index within [`MAX_INDEX`].
fn check_index(field: &'static str, index: u64) -> Result<(), MessageDefect> {
    if index > MAX_INDEX {
        Err(MessageDefect::IndexAboveMax { field, index })
    } else {
        Ok(())
    }
}

/// A term a message carries inside it (of a log entry, say) is at most the message's.
fn check_inner_term(field: &'static str, inner: u64, term: u64) -> Result<(), MessageDefect> {
    if inner > term {
        Err(MessageDefect::TermAboveMessageTerm { field, inner, term })
    } else {
        Ok(())
    }
}

/// An AppendEntries' entries: contiguous after `prev_log_index`, terms non-zero,
/// non-decreasing from `prev_log_term` and at most the message's `term`, data within
/// `max_entry_bytes`, configuration changes well formed.
fn validate_entries(
    prev_log_index: u64,
    prev_log_term: u64,
    entries: &[Entry],
    term: u64,
    cfg: &RaftConfig,
) -> Result<(), MessageDefect> {
    // prev_log_index <= MAX_INDEX, so the last index below cannot overflow
    // while it stays within MAX_INDEX.
    let mut previous_term = prev_log_term;
    for (offset, e) in entries.iter().enumerate() {
        let expected = (offset as u64)
            .checked_add(1)
            .and_then(|k| prev_log_index.checked_add(k))
            .filter(|&i| i <= MAX_INDEX);
        if expected != Some(e.index) {
            return Err(MessageDefect::EntriesNotContiguous {
                prev_log_index,
                offset,
                index: e.index,
            });
        }
        check_inner_term("entry term", e.term, term)?;
        if e.term == 0 {
            return Err(MessageDefect::ZeroTerm {
                field: "entry",
                index: e.index,
            });
        }
        if e.term < previous_term {
            return Err(MessageDefect::EntryTermsDecrease {
                index: e.index,
                term: e.term,
                previous_term,
            });
        }
        previous_term = e.term;
        if e.data.len() > cfg.max_entry_bytes {
            return Err(MessageDefect::EntryTooLarge {
                index: e.index,
                len_bytes: e.data.len(),
                max_bytes: cfg.max_entry_bytes,
            });
        }
        if e.kind == EntryKind::ConfChange && !e.conf_change().is_some_and(|c| c.is_well_formed()) {
            return Err(MessageDefect::MalformedConfChange { index: e.index });
        }
    }
    Ok(())
}

/// A snapshot's position within bounds and below the message's term, and its
/// configuration in the canonical shape lookups assume.
fn validate_snapshot_meta(meta: &SnapshotMeta, term: u64) -> Result<(), MessageDefect> {
    if meta.index > MAX_INDEX {
        return Err(MessageDefect::IndexAboveMax {
            field: "snapshot index",
            index: meta.index,
        });
    }
    if meta.term > term {
        return Err(MessageDefect::TermAboveMessageTerm {
            field: "snapshot term",
            inner: meta.term,
            term,
        });
    }
    if meta.index > 0 && meta.term == 0 {
        return Err(MessageDefect::ZeroTerm {
            field: "snapshot",
            index: meta.index,
        });
    }
    if !meta.conf.is_well_formed() {
        return Err(MessageDefect::MalformedConfiguration { index: meta.index });
    }
    Ok(())
}

//! Tuning of one Raft group. Every limit is named here, with its unit last.

use serde::{Deserialize, Serialize};

use crate::RaftError;
use crate::message::MESSAGE_OVERHEAD_BYTES;
use crate::storage::ENTRY_OVERHEAD_BYTES;

/// The longest `election_ticks` accepted: timeouts are drawn from `[e, 2e)`, so `2e` must
/// fit a `u32`.
pub const MAX_ELECTION_TICKS: u32 = u32::MAX / 2;

/// Configuration of a Raft group. Time is counted in logical ticks: the caller calls
/// [`crate::RaftGroup::tick`] from a timer (e.g. every 10 ms), so tests drive time exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// Minimum election timeout in ticks; each timeout is drawn uniformly from
    /// `[election_ticks, 2 * election_ticks)` with the caller's seeded RNG (Raft §5.2).
    pub election_ticks: u32,
    /// A leader sends heartbeats every this many ticks. Must be below `election_ticks`.
    pub heartbeat_ticks: u32,
    /// Run a PreVote round before a real election so that a partitioned node does not
    /// disrupt the cluster with inflated terms (thesis §9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum for `election_ticks` steps down, and
    /// followers that heard from a leader in that window ignore vote requests (thesis
    /// §6.2, the "leader lease" that keeps removed or partitioned nodes from disrupting).
    pub check_quorum: bool,
    /// Most AppendEntries in flight to one follower in replicate state. Small by
    /// default (4), because the window is also how proposals are batched under load:
    /// while it is open each proposal leaves at once in its own AppendEntries (lowest
    /// latency when load is light); once it is full, new entries wait and leave
    /// together in one message when an acknowledgement frees a slot. Measured on the
    /// `raft` system, 3 nodes on loopback, 64 clients: a window of 256 sent one message
    /// per put (about 250 µs of CPU per put), a window of 4 cut that to about 145 µs and
    /// raised throughput by 1.5x; 2 raised p99. etcd and raft-rs default to 256 but
    /// batch proposals before they reach Raft.
    pub max_inflight_msgs: usize,
    /// Most entries in one AppendEntries.
    pub max_entries_per_msg: usize,
    /// The leader writes its log in parallel with replication (Raft thesis §10.2.1): it
    /// sends AppendEntries before its own new entries are durable
    /// ([`crate::Ready::early_messages`]) and counts itself towards a commit only up to
    /// the index its own sync reached, which it learns from a message it sends itself
    /// after the `Sync` ([`crate::MessageBody::LocalAppended`]). Off: the leader counts
    /// its entries at once and every message waits for its sync (the one-fsync-then-send
    /// path). A follower always persists before it acknowledges.
    pub parallel_leader_append: bool,
    /// Most entry bytes ([`crate::Entry::size_bytes`], data plus
    /// [`crate::ENTRY_OVERHEAD_BYTES`]) in one AppendEntries, and in one
    /// [`crate::RaftRecord::Entries`] WAL record. Every entry fits (see
    /// `max_entry_bytes`), so a message never exceeds it; with the fixed fields the whole
    /// message stays within [`RaftConfig::max_message_bytes`], which must fit the
    /// transport's frame (kvlab-transport's default frame is 1 MiB) and the WAL's record
    /// limit (kvlab-storage's `MAX_RECORD_BYTES`, 4 MiB).
    pub max_bytes_per_msg: usize,
    /// Most data bytes in one entry. [`crate::RaftGroup::propose`] refuses a larger
    /// command with [`RaftError::EntryTooLarge`] before it enters the log, and a follower
    /// refuses an AppendEntries carrying one: an entry that could not be replicated in
    /// one message would stall the group forever. At most `max_bytes_per_msg -
    /// ENTRY_OVERHEAD_BYTES`.
    pub max_entry_bytes: usize,
    /// Most entries the leader holds uncommitted; proposals beyond are refused, which is
    /// how back-pressure reaches clients.
    pub max_uncommitted_entries: usize,
    /// Most committed entries handed out for application in one [`crate::Ready`].
    pub max_apply_entries_per_ready: usize,
    /// Bytes of snapshot data in one InstallSnapshot message.
    pub snapshot_chunk_bytes: usize,
    /// Largest snapshot a follower accepts (chunks beyond are dropped and counted).
    pub max_snapshot_bytes: usize,
    /// Serve [`crate::RaftGroup::read_index`] from a **leader lease** (thesis §6.4.1)
    /// instead of a heartbeat round: a leader whose heartbeat, sent less than
    /// `lease_ticks` ago by its own clock, was acknowledged by a quorum, and that has
    /// committed an entry of its term, grants the read at its commit index at once.
    /// Off by default. Requires `check_quorum`, because the lease rests on voters that
    /// heard from the leader refusing to vote for `election_ticks` of *their* clocks.
    /// **Safe only under bounded clock drift**: if a follower's clock runs faster than
    /// the leader's by more than `election_ticks / lease_ticks`, it times out early (in
    /// real time), a new leader is elected and commits writes while the old leader still
    /// believes its lease and serves stale reads. A restarted node also refuses votes for
    /// `election_ticks` after recovery in this mode, since it forgot when it last heard
    /// from a leader. A leader transfer revokes the lease for the rest of the term.
    pub lease_reads: bool,
    /// Length of the leader lease in the leader's ticks; must be below `election_ticks`
    /// with a margin for clock drift (e.g. 8 of 10 tolerates followers running up to 25 %
    /// fast).
    pub lease_ticks: u32,
    /// **Deliberately broken, tests only.** Lets a leader commit an entry of an earlier
    /// term by counting replicas, the mistake Raft §5.4.2 / Figure 8 warns against. The
    /// randomized simulation must catch it.
    pub unsafe_commit_previous_term_by_count: bool,
    /// **Deliberately broken, tests only.** Lets a leader propose a membership change
    /// while another one is uncommitted, so two configurations whose majorities need not
    /// overlap can both be in effect (thesis §4.1). The membership simulation must catch it.
    pub unsafe_allow_concurrent_conf_changes: bool,
    /// **Deliberately broken, tests only.** With `parallel_leader_append`, counts the
    /// leader's own entries towards a commit as soon as they are appended, before its
    /// sync returns, while its AppendEntries already left: a leader that crashes before
    /// its fsync may have let an entry commit that only a minority holds (thesis
    /// §10.2.1 is why the leader must wait for its own disk).
    pub unsafe_count_leader_before_sync: bool,
    /// **Deliberately broken, tests only.** Persists the hard state without the vote, so
    /// a node that crashes after voting can vote again in the same term (Raft §5.2,
    /// Figure 2: `votedFor` is persistent state). The randomized simulation must catch it.
    pub unsafe_skip_vote_persist: bool,
    /// **Deliberately broken, tests only.** While joint (thesis §4.3), commits entries
    /// and wins elections with a majority of the *incoming* voters alone, ignoring the
    /// outgoing majority — so the old configuration can elect a leader, or commit,
    /// without overlapping a decision of the new one. The joint-consensus simulation
    /// must catch it.
    pub unsafe_joint_single_majority: bool,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            election_ticks: 10,
            heartbeat_ticks: 1,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 4,
            max_entries_per_msg: 256,
            parallel_leader_append: false,
            max_bytes_per_msg: 512 << 10,
            max_entry_bytes: 64 << 10,
            max_uncommitted_entries: 65_536,
            max_apply_entries_per_ready: 4096,
            snapshot_chunk_bytes: 64 << 10,
            max_snapshot_bytes: 1 << 30,
            lease_reads: false,
            lease_ticks: 8,
            unsafe_commit_previous_term_by_count: false,
            unsafe_allow_concurrent_conf_changes: false,
            unsafe_skip_vote_persist: false,
            unsafe_count_leader_before_sync: false,
            unsafe_joint_single_majority: false,
        }
    }
}

impl RaftConfig {
    /// Checks the configuration once, naming the offending field.
    pub fn validate(&self) -> Result<(), RaftError> {
        let bad = |field: &'static str, reason: &str| {
            Err(RaftError::InvalidConfig {
                field,
                reason: reason.to_string(),
            })
        };
        if self.election_ticks < 2 || self.election_ticks > MAX_ELECTION_TICKS {
            return bad(
                "election_ticks",
                &format!("must be in 2..={MAX_ELECTION_TICKS} (MAX_ELECTION_TICKS)"),
            );
        }
        if self.heartbeat_ticks == 0 || self.heartbeat_ticks >= self.election_ticks {
            return bad(
                "heartbeat_ticks",
                "must be at least 1 and below election_ticks",
            );
        }
        if self.lease_reads {
            if !self.check_quorum {
                return bad("lease_reads", "requires check_quorum");
            }
            if self.lease_ticks == 0 || self.lease_ticks >= self.election_ticks {
                return bad("lease_ticks", "must be at least 1 and below election_ticks");
            }
        }
        let positive = [
            ("max_inflight_msgs", self.max_inflight_msgs),
            ("max_entries_per_msg", self.max_entries_per_msg),
            ("max_bytes_per_msg", self.max_bytes_per_msg),
            ("max_uncommitted_entries", self.max_uncommitted_entries),
            (
                "max_apply_entries_per_ready",
                self.max_apply_entries_per_ready,
            ),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
            ("max_snapshot_bytes", self.max_snapshot_bytes),
        ];
        for (field, v) in positive {
            if v == 0 {
                return bad(field, "must be positive");
            }
        }
        if self.max_entry_bytes == 0
            || self.max_entry_bytes > self.max_bytes_per_msg.saturating_sub(ENTRY_OVERHEAD_BYTES)
        {
            return bad(
                "max_entry_bytes",
                "must be positive and at most max_bytes_per_msg - ENTRY_OVERHEAD_BYTES, so \
                 that every entry fits one AppendEntries",
            );
        }
        if self.max_message_bytes_checked().is_none() {
            return bad(
                "max_bytes_per_msg",
                "max_bytes_per_msg or snapshot_chunk_bytes plus MESSAGE_OVERHEAD_BYTES overflows",
            );
        }
        Ok(())
    }

    /// An upper bound on the encoded size (postcard) of any message a group with this
    /// configuration sends: the larger of `max_bytes_per_msg` (an AppendEntries'
    /// entries) and `snapshot_chunk_bytes` (an InstallSnapshot's data), plus
    /// [`crate::MESSAGE_OVERHEAD_BYTES`]. A driver's transport must carry frames of this
    /// size plus its own envelope; the defaults give 512 KiB + 512 bytes.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes_checked().unwrap_or(usize::MAX)
    }

    fn max_message_bytes_checked(&self) -> Option<usize> {
        self.max_bytes_per_msg
            .max(self.snapshot_chunk_bytes)
            .checked_add(MESSAGE_OVERHEAD_BYTES)
    }
}

//! What Raft keeps on disk: the hard state, log entries and snapshots, the WAL records
//! that carry them, and the replay that rebuilds a group's durable state after a crash.

use serde::{Deserialize, Serialize};

use crate::message::MAX_INDEX;
use crate::{GroupId, RaftError};
use kvlab_types::NodeId;

/// The state Raft must persist before it speaks (Raft §5.1, Figure 2 "persistent state"):
/// the current term and the vote cast in it, plus the commit index as a recovery hint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: u64,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// A commit index known when the record was written. Only a hint: it is never ahead
    /// of entries persisted before it, so replaying it cannot commit a lost entry.
    pub commit: u64,
}

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A client command: opaque bytes for the caller's state machine.
    Normal,
    /// The empty entry a new leader appends so that it can commit entries of earlier
    /// terms (Raft §5.4.2, §8). The state machine skips it.
    Noop,
    /// A membership change: `data` is a postcard-encoded [`ConfChange`] (decode it with
    /// [`Entry::conf_change`]). It takes effect on every node as soon as it is appended to
    /// that node's log (thesis §4.1); the state machine needs nothing from it, but the
    /// caller sees it when it commits, e.g. to start or stop the member's process.
    ConfChange,
}

/// One single-server membership change (Ongaro's thesis §4.1, §4.2.1). Changes are
/// applied one at a time: a leader refuses a second change while one is uncommitted, so
/// every majority of the old configuration overlaps every majority of the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConfChange {
    /// Adds a non-voting member that receives the log (to catch up before it votes,
    /// thesis §4.2.1). It never campaigns and never counts for commitment or elections.
    AddLearner(NodeId),
    /// Makes a node a voter: promotes a learner (the normal path, after it caught up) or
    /// adds a new node directly as a voter (allowed, but it stalls commitment until the
    /// newcomer catches up).
    AddVoter(NodeId),
    /// Removes a voter or learner. A leader that removes itself keeps leading until the
    /// removal commits, then steps down (thesis §4.2.2).
    RemoveNode(NodeId),
}

impl ConfChange {
    /// The node the change is about.
    pub fn node(&self) -> NodeId {
        match *self {
            ConfChange::AddLearner(n) | ConfChange::AddVoter(n) | ConfChange::RemoveNode(n) => n,
        }
    }

    /// Encodes the change as the data of an [`EntryKind::ConfChange`] entry.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding a small plain enum into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// Most members (voters plus learners) a group may have. A fixed bound keeps
/// [`MemberSet`] — and with it [`SnapshotMeta`] — a `Copy` value type.
pub const MAX_MEMBERS: usize = 16;

/// A sorted, duplicate-free set of at most [`MAX_MEMBERS`] nodes, stored inline so that
/// it is `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct MemberSet {
    len: u8,
    ids: [NodeId; MAX_MEMBERS],
}

impl std::fmt::Debug for MemberSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.as_slice()).finish()
    }
}

impl MemberSet {
    /// The set of `ids` (sorted and deduplicated); `None` if more than [`MAX_MEMBERS`].
    pub fn from_slice(ids: &[NodeId]) -> Option<MemberSet> {
        let mut v = ids.to_vec();
        v.sort();
        v.dedup();
        if v.len() > MAX_MEMBERS {
            return None;
        }
        let mut set = MemberSet::default();
        set.ids[..v.len()].copy_from_slice(&v);
        set.len = v.len() as u8;
        Some(set)
    }

    /// The members, sorted.
    pub fn as_slice(&self) -> &[NodeId] {
        &self.ids[..(self.len as usize).min(MAX_MEMBERS)]
    }

    /// Whether `n` is a member.
    pub fn contains(&self, n: NodeId) -> bool {
        self.as_slice().binary_search(&n).is_ok()
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether there is no member.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the set is what [`MemberSet::from_slice`] builds: a length within
    /// [`MAX_MEMBERS`], sorted and duplicate-free members, unused slots zeroed. A set
    /// decoded from the network may be anything; lookups assume this shape.
    pub fn is_well_formed(&self) -> bool {
        let len = self.len as usize;
        len <= MAX_MEMBERS
            && self.ids[..len].windows(2).all(|w| w[0] < w[1])
            && self.ids[len..].iter().all(|&n| n == NodeId::default())
    }
}

/// A group's membership: who votes and who only receives the log. Carried in every
/// [`SnapshotMeta`] so that a node restored from a snapshot knows its configuration.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ConfState {
    /// The voters.
    pub voters: MemberSet,
    /// The learners (never also voters).
    pub learners: MemberSet,
}

impl ConfState {
    /// Whether both sets are well formed and disjoint (no node both votes and learns).
    pub fn is_well_formed(&self) -> bool {
        self.voters.is_well_formed()
            && self.learners.is_well_formed()
            && !self
                .learners
                .as_slice()
                .iter()
                .any(|&l| self.voters.contains(l))
    }

    /// The configuration after `change`, or why the change does not apply to this one.
    pub fn apply(&self, change: ConfChange) -> Result<ConfState, String> {
        let n = change.node();
        let (is_voter, is_learner) = (self.voters.contains(n), self.learners.contains(n));
        let mut voters = self.voters.as_slice().to_vec();
        let mut learners = self.learners.as_slice().to_vec();
        match change {
            ConfChange::AddLearner(_) => {
                if is_voter || is_learner {
                    return Err(format!("{n} is already a member"));
                }
                learners.push(n);
            }
            ConfChange::AddVoter(_) => {
                if is_voter {
                    return Err(format!("{n} is already a voter"));
                }
                learners.retain(|&l| l != n);
                voters.push(n);
            }
            ConfChange::RemoveNode(_) => {
                if !is_voter && !is_learner {
                    return Err(format!("{n} is not a member"));
                }
                if is_voter && voters.len() == 1 {
                    return Err(format!("{n} is the last voter"));
                }
                voters.retain(|&v| v != n);
                learners.retain(|&l| l != n);
            }
        }
        if voters.len() + learners.len() > MAX_MEMBERS {
            return Err(format!("more than {MAX_MEMBERS} members"));
        }
        Ok(ConfState {
            voters: MemberSet::from_slice(&voters).unwrap_or_default(),
            learners: MemberSet::from_slice(&learners).unwrap_or_default(),
        })
    }
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: u64,
    /// The entry's position in the log, starting at 1.
    pub index: u64,
    /// Whether this is a client command or a leader's no-op.
    pub kind: EntryKind,
    /// The command bytes (empty for a no-op).
    pub data: Vec<u8>,
}

/// A fixed per-entry overhead counted against message byte budgets, so that a stream of
/// empty commands is bounded too. It is an upper bound on what postcard spends on an
/// entry besides its data (term and index at up to 10 bytes each, the kind, the data
/// length at up to 10 bytes), so [`Entry::size_bytes`] bounds an entry's encoded size.
pub const ENTRY_OVERHEAD_BYTES: usize = 32;

impl Entry {
    /// Bytes this entry counts against `max_bytes_per_msg`.
    pub fn size_bytes(&self) -> usize {
        self.data.len() + ENTRY_OVERHEAD_BYTES
    }

    /// The membership change this entry carries, if it is a (well-formed)
    /// [`EntryKind::ConfChange`] entry.
    pub fn conf_change(&self) -> Option<ConfChange> {
        if self.kind != EntryKind::ConfChange {
            return None;
        }
        postcard::from_bytes(&self.data).ok()
    }
}

/// The position of the last entry a snapshot covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log index the snapshot includes (0: the empty initial snapshot).
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// The configuration in effect at `index` (every configuration entry up to `index`
    /// applied). An empty voter set means "the bootstrap configuration the group was
    /// created with" (e.g. a meta built with `..Default::default()`).
    pub conf: ConfState,
}

/// A snapshot of the caller's state machine after applying every entry up to
/// `meta.index`. The bytes are opaque to Raft.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Where the snapshot sits in the log.
    pub meta: SnapshotMeta,
    /// The state machine image.
    pub data: Vec<u8>,
}

/// One record of a group's write-ahead log. Replaying records in order rebuilds the
/// group's durable state; see [`RecoveredState::from_records`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftRecord {
    /// Replaces the hard state.
    HardState(HardState),
    /// Appends entries, first discarding every entry at or after the first one's index
    /// (that is how a follower's conflicting suffix is truncated, Raft §5.3).
    Entries(Vec<Entry>),
    /// Installs a snapshot: entries it covers are discarded; later entries are kept only
    /// if the log agrees with the snapshot at its index (Raft §7).
    Snapshot(Snapshot),
}

/// A [`RaftRecord`] tagged with its group, so that many groups can share one WAL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRecord {
    /// The group the record belongs to.
    pub group: GroupId,
    /// The record.
    pub record: RaftRecord,
}

impl WalRecord {
    /// Encodes the record with postcard, for [`kvlab_types::Effect::Persist`].
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain owned data into a Vec cannot fail: no I/O, no size limit.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a record written by [`WalRecord::encode`]; `position` (the record's place
    /// in the WAL) goes into the error so that a corrupt record can be found.
    pub fn decode(bytes: &[u8], position: usize) -> Result<WalRecord, RaftError> {
        postcard::from_bytes(bytes).map_err(|e| RaftError::CorruptRecord {
            position,
            reason: e.to_string(),
        })
    }
}

/// The durable state of one group as found after a (re)start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredState {
    /// The last persisted hard state (default: term 0, no vote).
    pub hard_state: HardState,
    /// The latest installed snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// The log after the snapshot, contiguous, starting at the snapshot index + 1.
    pub entries: Vec<Entry>,
}

impl RecoveredState {
    /// Replays a group's records in the order they were persisted. A WAL that lost its
    /// unsynced tail simply yields a shorter log and possibly an older hard state; that is
    /// safe because nothing depending on lost records was ever sent.
    pub fn from_records(
        records: impl IntoIterator<Item = RaftRecord>,
    ) -> Result<RecoveredState, RaftError> {
        let mut st = RecoveredState::default();
        for (position, record) in records.into_iter().enumerate() {
            // Indexes beyond MAX_INDEX were never accepted from the network; refusing
            // them here keeps the replay's arithmetic from overflowing on a record an
            // older build may have written.
            let beyond = |index: u64| {
                Err(RaftError::CorruptRecord {
                    position,
                    reason: format!("index {index} is above MAX_INDEX ({MAX_INDEX})"),
                })
            };
            match record {
                RaftRecord::HardState(hs) => st.hard_state = hs,
                RaftRecord::Entries(ents) => {
                    if let Some(e) = ents.iter().find(|e| e.index > MAX_INDEX) {
                        return beyond(e.index);
                    }
                    st.replay_entries(position, ents)?
                }
                RaftRecord::Snapshot(snap) => {
                    if snap.meta.index > MAX_INDEX {
                        return beyond(snap.meta.index);
                    }
                    st.replay_snapshot(snap)
                }
            }
        }
        Ok(st)
    }

    /// Decodes and replays the records of `group` from a WAL shared by many groups,
    /// skipping other groups' records.
    pub fn from_wal(group: GroupId, wal: &[Vec<u8>]) -> Result<RecoveredState, RaftError> {
        let mut mine = Vec::new();
        for (position, bytes) in wal.iter().enumerate() {
            let rec = WalRecord::decode(bytes, position)?;
            if rec.group == group {
                mine.push(rec.record);
            }
        }
        RecoveredState::from_records(mine)
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot.as_ref().map(|s| s.meta).unwrap_or_default()
    }

    fn last_index(&self) -> u64 {
        self.snapshot_meta().index + self.entries.len() as u64
    }

    fn replay_entries(&mut self, position: usize, ents: Vec<Entry>) -> Result<(), RaftError> {
        let Some(first) = ents.first().map(|e| e.index) else {
            return Ok(());
        };
        for (k, e) in ents.iter().enumerate() {
            if e.index != first + k as u64 {
                return Err(RaftError::CorruptRecord {
                    position,
                    reason: format!(
                        "entries not contiguous: index {} at offset {k} after {first}",
                        e.index
                    ),
                });
            }
        }
        if first > self.last_index() + 1 {
            return Err(RaftError::CorruptRecord {
                position,
                reason: format!(
                    "entries start at {first} but the log ends at {}",
                    self.last_index()
                ),
            });
        }
        let snap_index = self.snapshot_meta().index;
        let keep_from = first.max(snap_index + 1);
        self.entries.truncate((keep_from - snap_index - 1) as usize);
        self.entries
            .extend(ents.into_iter().filter(|e| e.index > snap_index));
        Ok(())
    }

    fn replay_snapshot(&mut self, snap: Snapshot) {
        let old = self.snapshot_meta();
        let idx = snap.meta.index;
        if self.snapshot.is_some() && idx <= old.index {
            // An older snapshot than the one installed adds nothing.
            return;
        }
        let agrees = idx > old.index
            && idx <= self.last_index()
            && self.entries[(idx - old.index - 1) as usize].term == snap.meta.term;
        if agrees {
            self.entries.drain(..(idx - old.index) as usize);
        } else {
            self.entries.clear();
        }
        self.snapshot = Some(snap);
    }
}

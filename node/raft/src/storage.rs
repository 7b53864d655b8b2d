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

/// One membership change: a single-server change (Ongaro's thesis §4.1, §4.2.1) or one
/// of the two steps of joint consensus (thesis §4.3). Changes are applied one at a time:
/// a leader refuses a new change while the previous one is uncommitted, so every
/// majority of a configuration overlaps every majority of the next one — for a joint
/// configuration, because it needs a majority of the old voters *and* one of the new.
///
/// Encoding: postcard, variants in this order. New variants are only ever appended, so
/// an entry written by an older build still decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "a plain Copy value like the MemberSets it holds; changes are rare"
)]
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
    /// Enters the joint configuration `C_old,new` (thesis §4.3): the voters in effect
    /// become the *outgoing* voters, the voters after `JointChange` the *incoming* ones,
    /// and until [`ConfChange::LeaveJoint`] every decision needs a majority of each.
    /// etcd raft: a `ConfChangeV2` with several changes and transition
    /// `JointExplicit` (or `JointImplicit` with [`JointChange::auto_leave`]).
    EnterJoint(JointChange),
    /// Leaves the joint configuration for `C_new`, the incoming voters alone; voters
    /// the joint change demoted become learners (etcd: an empty `ConfChangeV2`).
    LeaveJoint,
}

impl ConfChange {
    /// The node a single-server change is about (`None` for the joint steps).
    pub fn node(&self) -> Option<NodeId> {
        match *self {
            ConfChange::AddLearner(n) | ConfChange::AddVoter(n) | ConfChange::RemoveNode(n) => {
                Some(n)
            }
            ConfChange::EnterJoint(_) | ConfChange::LeaveJoint => None,
        }
    }

    /// Whether the change could have been proposed by some leader: a joint change must
    /// name somebody and nobody twice (see [`JointChange::is_well_formed`]). Whether it
    /// applies depends on the configuration ([`ConfState::apply`]).
    pub fn is_well_formed(&self) -> bool {
        match self {
            ConfChange::EnterJoint(j) => j.is_well_formed(),
            _ => true,
        }
    }

    /// Encodes the change as the data of an [`EntryKind::ConfChange`] entry.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding a small plain value into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// The changes that one [`ConfChange::EnterJoint`] makes, from the configuration in
/// effect (which must not be joint) to the incoming one. A node appears in at most one
/// set, and at least one set is non-empty.
///
/// Mapping to etcd raft's `ConfChangeV2.Changes`: `add_voters` are `ConfChangeAddNode`,
/// `add_learners` are `ConfChangeAddLearnerNode` of non-members, `demote_voters` are
/// `ConfChangeAddLearnerNode` of voters (etcd's `LearnersNext`), `remove` are
/// `ConfChangeRemoveNode`; `auto_leave` chooses `ConfChangeTransitionJointImplicit`
/// over `JointExplicit`. (etcd's `ConfChangeTransitionAuto`, which picks a simple change
/// when one suffices, is the caller's choice here: propose a single-server change.)
///
/// Sets are encoded as plain sorted lists; a list that is unsorted, has duplicates or
/// more than [`MAX_MEMBERS`] entries does not decode.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct JointChange {
    /// Nodes that become voters of the incoming configuration: learners promoted (the
    /// normal path, after they caught up) or newcomers.
    #[serde(with = "member_list")]
    pub add_voters: MemberSet,
    /// Voters that leave the incoming voters and become learners when the joint
    /// configuration is left. While joint they are outgoing voters (they still count
    /// for the outgoing majority) listed in [`ConfState::learners_next`].
    #[serde(with = "member_list")]
    pub demote_voters: MemberSet,
    /// Non-members added as learners.
    #[serde(with = "member_list")]
    pub add_learners: MemberSet,
    /// Members removed: a learner at once, a voter from the incoming voters (it stays
    /// an outgoing voter until the joint configuration is left).
    #[serde(with = "member_list")]
    pub remove: MemberSet,
    /// Whether the leader proposes [`ConfChange::LeaveJoint`] by itself as soon as this
    /// entry is committed (etcd's `AutoLeave`).
    pub auto_leave: bool,
}

impl JointChange {
    /// Replaces voter `demote` by `promote` (normally a caught-up learner): `promote`
    /// becomes a voter, `demote` a learner once the joint configuration is left (the
    /// wave-2 operator step `EnterJoint{promote Y, demote X}`; remove X afterwards with
    /// [`ConfChange::RemoveNode`]). `auto_leave` is off.
    pub fn replace_voter(promote: NodeId, demote: NodeId) -> JointChange {
        JointChange {
            add_voters: MemberSet::from_slice(&[promote]).unwrap_or_default(),
            demote_voters: MemberSet::from_slice(&[demote]).unwrap_or_default(),
            ..JointChange::default()
        }
    }

    /// The same change with [`JointChange::auto_leave`] set to `auto_leave`.
    pub fn with_auto_leave(self, auto_leave: bool) -> JointChange {
        JointChange { auto_leave, ..self }
    }

    /// Whether the change names nobody.
    pub fn is_empty(&self) -> bool {
        self.add_voters.is_empty()
            && self.demote_voters.is_empty()
            && self.add_learners.is_empty()
            && self.remove.is_empty()
    }

    /// Why the change is malformed whatever the configuration: a set not in canonical
    /// shape, no node named, or a node named in two sets.
    pub fn defect(&self) -> Option<String> {
        let sets = [
            self.add_voters,
            self.demote_voters,
            self.add_learners,
            self.remove,
        ];
        if !sets.iter().all(MemberSet::is_well_formed) {
            return Some("a set of the joint change is malformed".into());
        }
        if self.is_empty() {
            return Some("the joint change changes nothing".into());
        }
        for (k, a) in sets.iter().enumerate() {
            for b in &sets[k + 1..] {
                if let Some(n) = a.as_slice().iter().find(|&&n| b.contains(n)) {
                    return Some(format!("{n} is named twice in the joint change"));
                }
            }
        }
        None
    }

    /// Whether [`JointChange::defect`] finds nothing.
    pub fn is_well_formed(&self) -> bool {
        self.defect().is_none()
    }
}

/// Serde for a [`MemberSet`] as a plain sorted list (compact for small sets, and a
/// decoded list is in the canonical shape or refused).
mod member_list {
    use super::{MAX_MEMBERS, MemberSet};
    use kvlab_types::NodeId;
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(set: &MemberSet, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(set.as_slice())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MemberSet, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = MemberSet;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    "a sorted list of at most {MAX_MEMBERS} distinct node ids"
                )
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MemberSet, A::Error> {
                let mut ids: Vec<NodeId> = Vec::new();
                while let Some(id) = seq.next_element::<NodeId>()? {
                    if ids.len() == MAX_MEMBERS {
                        return Err(A::Error::custom(format!("more than {MAX_MEMBERS} members")));
                    }
                    if ids.last().is_some_and(|&last| last >= id) {
                        return Err(A::Error::custom("members not sorted or duplicated"));
                    }
                    ids.push(id);
                }
                MemberSet::from_slice(&ids).ok_or_else(|| A::Error::custom("too many members"))
            }
        }
        d.deserialize_seq(List)
    }
}

/// Most members (voters, outgoing voters and learners together) a group may have. A
/// fixed bound keeps [`MemberSet`] — and with it [`SnapshotMeta`] — a `Copy` value type.
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

    /// Whether no node is in both sets.
    pub fn is_disjoint(&self, other: &MemberSet) -> bool {
        !self.as_slice().iter().any(|&n| other.contains(n))
    }

    /// Whether every member is also in `other`.
    pub fn is_subset(&self, other: &MemberSet) -> bool {
        self.as_slice().iter().all(|&n| other.contains(n))
    }
}

/// A group's membership: who votes and who only receives the log. Carried in every
/// [`SnapshotMeta`] so that a node restored from a snapshot knows its configuration.
///
/// Outside joint consensus `voters_outgoing` and `learners_next` are empty and the
/// configuration is simply `voters` plus `learners`. In a joint configuration
/// (thesis §4.3, between [`ConfChange::EnterJoint`] and [`ConfChange::LeaveJoint`]),
/// `voters` are the incoming voters `C_new`, `voters_outgoing` the outgoing ones
/// `C_old`, and every decision — commitment, elections, CheckQuorum, ReadIndex, lease —
/// needs a majority of each (etcd raft's `quorum.JointConfig`). The invariants, as in
/// etcd's `confchange` package: `learners` share no node with either voter set;
/// `learners_next` (voters demoted by the joint change) are outgoing voters that are not
/// incoming voters; the union of all sets has at most [`MAX_MEMBERS`] nodes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ConfState {
    /// The voters (the incoming voters while joint).
    pub voters: MemberSet,
    /// The learners (never also voters, incoming or outgoing).
    pub learners: MemberSet,
    /// The outgoing voters while joint (the voters before [`ConfChange::EnterJoint`]);
    /// empty when not joint.
    pub voters_outgoing: MemberSet,
    /// Outgoing voters that become learners when the joint configuration is left (the
    /// voters a [`JointChange`] demoted; etcd's `LearnersNext`). Empty when not joint.
    pub learners_next: MemberSet,
    /// Whether the leader leaves the joint configuration by itself once the joint entry
    /// is committed (etcd's `AutoLeave`). False when not joint.
    pub auto_leave: bool,
}

impl ConfState {
    /// Whether this is a joint configuration (there are outgoing voters).
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Whether `n` votes: an incoming or (while joint) an outgoing voter.
    pub fn is_voter(&self, n: NodeId) -> bool {
        self.voters.contains(n) || self.voters_outgoing.contains(n)
    }

    /// Whether `n` is a member: a voter (incoming or outgoing) or a learner.
    pub fn is_member(&self, n: NodeId) -> bool {
        self.is_voter(n) || self.learners.contains(n)
    }

    /// Every member (voters, outgoing voters and learners), sorted, without duplicates.
    pub fn members(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .voters
            .as_slice()
            .iter()
            .chain(self.voters_outgoing.as_slice())
            .chain(self.learners.as_slice())
            .copied()
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Whether the sets are well formed and satisfy the invariants above (no node both
    /// votes and learns, demoted voters among the outgoing voters only, nothing joint
    /// outside a joint configuration, at most [`MAX_MEMBERS`] members). A configuration
    /// decoded from the network may be anything; lookups assume this shape.
    pub fn is_well_formed(&self) -> bool {
        let sets = [
            self.voters,
            self.learners,
            self.voters_outgoing,
            self.learners_next,
        ];
        sets.iter().all(MemberSet::is_well_formed)
            && self.learners.is_disjoint(&self.voters)
            && self.learners.is_disjoint(&self.voters_outgoing)
            && self.learners_next.is_subset(&self.voters_outgoing)
            && self.learners_next.is_disjoint(&self.voters)
            && (self.is_joint() || !self.auto_leave)
            && (!self.voters.is_empty() || *self == ConfState::default())
            && self.members().len() <= MAX_MEMBERS
    }

    /// The configuration after `change`, or why the change does not apply to this one.
    /// Single-server changes and [`ConfChange::EnterJoint`] apply only outside a joint
    /// configuration, [`ConfChange::LeaveJoint`] only inside one (as in etcd).
    pub fn apply(&self, change: ConfChange) -> Result<ConfState, String> {
        let mut voters = self.voters.as_slice().to_vec();
        let mut learners = self.learners.as_slice().to_vec();
        let mut voters_outgoing = self.voters_outgoing.as_slice().to_vec();
        let mut learners_next = self.learners_next.as_slice().to_vec();
        let mut auto_leave = self.auto_leave;
        let joint_first = "the configuration is joint: leave it first";
        match change {
            ConfChange::AddLearner(n) => {
                if self.is_joint() {
                    return Err(joint_first.into());
                }
                if self.is_member(n) {
                    return Err(format!("{n} is already a member"));
                }
                learners.push(n);
            }
            ConfChange::AddVoter(n) => {
                if self.is_joint() {
                    return Err(joint_first.into());
                }
                if self.voters.contains(n) {
                    return Err(format!("{n} is already a voter"));
                }
                learners.retain(|&l| l != n);
                voters.push(n);
            }
            ConfChange::RemoveNode(n) => {
                if self.is_joint() {
                    return Err(joint_first.into());
                }
                if !self.is_member(n) {
                    return Err(format!("{n} is not a member"));
                }
                if self.voters.contains(n) && voters.len() == 1 {
                    return Err(format!("{n} is the last voter"));
                }
                voters.retain(|&v| v != n);
                learners.retain(|&l| l != n);
            }
            ConfChange::EnterJoint(j) => {
                if self.is_joint() {
                    return Err("already joint: leave the joint configuration first".into());
                }
                if let Some(defect) = j.defect() {
                    return Err(defect);
                }
                voters_outgoing = voters.clone();
                for &n in j.add_voters.as_slice() {
                    if self.voters.contains(n) {
                        return Err(format!("{n} is already a voter"));
                    }
                    learners.retain(|&l| l != n);
                    voters.push(n);
                }
                for &n in j.demote_voters.as_slice() {
                    if !self.voters.contains(n) {
                        return Err(format!("{n} is not a voter, so it cannot be demoted"));
                    }
                    voters.retain(|&v| v != n);
                    learners_next.push(n);
                }
                for &n in j.add_learners.as_slice() {
                    if self.is_member(n) {
                        return Err(format!("{n} is already a member"));
                    }
                    learners.push(n);
                }
                for &n in j.remove.as_slice() {
                    if !self.is_member(n) {
                        return Err(format!("{n} is not a member"));
                    }
                    voters.retain(|&v| v != n);
                    learners.retain(|&l| l != n);
                }
                if voters.is_empty() {
                    return Err("the incoming configuration would have no voter".into());
                }
                auto_leave = j.auto_leave;
            }
            ConfChange::LeaveJoint => {
                if !self.is_joint() {
                    return Err("not in a joint configuration".into());
                }
                learners.append(&mut learners_next);
                voters_outgoing.clear();
                auto_leave = false;
            }
        }
        let set = |ids: &[NodeId]| MemberSet::from_slice(ids).ok_or(());
        let next = (|| {
            Ok::<_, ()>(ConfState {
                voters: set(&voters)?,
                learners: set(&learners)?,
                voters_outgoing: set(&voters_outgoing)?,
                learners_next: set(&learners_next)?,
                auto_leave,
            })
        })();
        match next {
            Ok(c) if c.members().len() <= MAX_MEMBERS => Ok(c),
            _ => Err(format!("more than {MAX_MEMBERS} members")),
        }
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
    /// The command bytes (empty for a no-op). Serialized as one byte string: postcard
    /// writes the same bytes as for a sequence of `u8`, without a call per byte.
    #[serde(with = "serde_bytes")]
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
    /// The state machine image (one byte string, as [`Entry::data`]).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// One record of a group's write-ahead log. Replaying records in order rebuilds the
/// group's durable state; see [`RecoveredState::from_records`].
///
/// **Encoding** (postcard, the WAL format): variant 0 `HardState`, 1 `Entries`, 2 a
/// snapshot of format 1 (before joint consensus: a [`ConfState`] of voters and learners
/// only), 3 a snapshot of format 2 (the full [`ConfState`], joint fields included).
/// This build writes format 2 and reads both, so a WAL written before joint consensus
/// still replays (its snapshots come back with empty joint fields); an older build
/// cannot read a format-2 snapshot record. Variants are only ever appended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "the snapshot's meta holds four inline member sets; records are few per Ready"
)]
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

/// The wire form [`RaftRecord`] is written in (borrowed, so that encoding a large
/// snapshot does not copy it). The variant order is the WAL format.
#[derive(Serialize)]
enum RaftRecordOut<'a> {
    HardState(&'a HardState),
    Entries(&'a [Entry]),
    /// Format-1 snapshots are read, never written.
    #[allow(dead_code)]
    SnapshotV1(()),
    Snapshot(&'a Snapshot),
}

/// The wire form [`RaftRecord`] is read from: every format ever written.
#[derive(Deserialize)]
enum RaftRecordIn {
    HardState(HardState),
    Entries(Vec<Entry>),
    SnapshotV1(SnapshotV1),
    Snapshot(Snapshot),
}

/// A snapshot record as written before joint consensus.
#[derive(Deserialize)]
struct SnapshotV1 {
    meta: SnapshotMetaV1,
    data: Vec<u8>,
}

#[derive(Deserialize)]
struct SnapshotMetaV1 {
    index: u64,
    term: u64,
    conf: ConfStateV1,
}

#[derive(Deserialize)]
struct ConfStateV1 {
    voters: MemberSet,
    learners: MemberSet,
}

impl Serialize for RaftRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RaftRecord::HardState(hs) => RaftRecordOut::HardState(hs),
            RaftRecord::Entries(ents) => RaftRecordOut::Entries(ents),
            RaftRecord::Snapshot(snap) => RaftRecordOut::Snapshot(snap),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RaftRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match RaftRecordIn::deserialize(d)? {
            RaftRecordIn::HardState(hs) => RaftRecord::HardState(hs),
            RaftRecordIn::Entries(ents) => RaftRecord::Entries(ents),
            RaftRecordIn::Snapshot(snap) => RaftRecord::Snapshot(snap),
            RaftRecordIn::SnapshotV1(v1) => RaftRecord::Snapshot(Snapshot {
                meta: SnapshotMeta {
                    index: v1.meta.index,
                    term: v1.meta.term,
                    conf: ConfState {
                        voters: v1.meta.conf.voters,
                        learners: v1.meta.conf.learners,
                        ..ConfState::default()
                    },
                },
                data: v1.data,
            }),
        })
    }
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

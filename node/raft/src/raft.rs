//! The Raft state machine of one group: roles, elections, replication, commitment,
//! ReadIndex, leader transfer and snapshots. It only computes; [`RaftGroup::ready`] hands
//! the caller what to persist, send and apply.

use std::collections::{BTreeMap, VecDeque};

use kvlab_types::{NodeId, Rng};
use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::config::RaftConfig;
use crate::log::RaftLog;
use crate::message::{
    AppendResult, MAX_INDEX, MAX_TERM, MAX_TERM_JUMP, MessageBody, MessageDefect, RaftMessage,
};
use crate::progress::{PeerProgress, Progress, ProgressState};
use crate::ready::{RaftEvent, ReadState, Ready};
use crate::storage::{
    ConfChange, ConfState, Entry, EntryKind, HardState, MemberSet, RaftRecord, RecoveredState,
    Snapshot, SnapshotMeta,
};
use crate::{GroupId, RaftError};

/// The role of a node in its group (Raft §5.1, plus the PreVote phase of thesis §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks peers whether they would vote for it, without changing terms.
    PreCandidate,
    /// Campaigns for votes in a new term.
    Candidate,
    /// Replicates its log to followers.
    Leader,
}

/// The position of an entry in the log: proposals are identified by it. A proposal
/// succeeded iff the entry applied at `index` has term `term`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryId {
    /// The leader term the entry was proposed in.
    pub term: u64,
    /// The log index it was given.
    pub index: u64,
}

/// What a group counted, for metrics and tests. Every drop of a peer message is here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftStats {
    /// Peer messages dropped for any reason: refused (below), for another group or
    /// node, or impossible against the log (they would overwrite a committed entry).
    pub messages_dropped: u64,
    /// Of those, messages refused as [`RaftError::MalformedMessage`]: a value out of
    /// range, inconsistent or implausible (see [`MessageDefect`]). Nothing of them was
    /// adopted. Zero in any run without forged or corrupted messages.
    pub messages_refused: u64,
    /// Election timeouts that did not start a campaign because the term is at
    /// [`MAX_TERM`] or the log at [`MAX_INDEX`].
    pub campaigns_refused_exhausted: u64,
    /// Proposals refused because their data exceeds [`RaftConfig::max_entry_bytes`].
    pub proposals_too_large: u64,
}

/// Where an election stands (etcd `quorum.VoteResult`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VoteOutcome {
    /// Not decided yet.
    Pending,
    /// A majority of every deciding voter set granted.
    Won,
    /// A majority of some deciding voter set refused.
    Lost,
}

#[derive(Clone, Debug)]
struct PendingRead {
    ctx: u64,
    index: u64,
    round: u64,
}

#[derive(Clone, Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// One Raft group on one node: the whole protocol, sans I/O.
///
/// Drive it with [`RaftGroup::tick`] (from a timer), [`RaftGroup::step`] (for each
/// message received), [`RaftGroup::propose`], [`RaftGroup::read_index`],
/// [`RaftGroup::transfer_leader`] and [`RaftGroup::compact`]; after any of them, take
/// [`RaftGroup::ready`] and carry it out in the order its documentation gives.
#[derive(Debug)]
pub struct RaftGroup {
    group: GroupId,
    id: NodeId,
    /// The configuration the group was created with (in effect at index 0).
    bootstrap: ConfState,
    /// The configuration in effect: the latest configuration entry in the log (applied
    /// on append, thesis §4.1), else the snapshot's, else `bootstrap`.
    conf: ConfState,
    /// Index and term of the configuration entry in effect (0: none in the log).
    conf_index: u64,
    conf_term: u64,
    /// Whether this node was a voter (incoming or outgoing) in the configuration before
    /// the one in effect.
    voter_before_latest_conf: bool,
    cfg: RaftConfig,

    term: u64,
    vote: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    log: RaftLog,

    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_ticks: u32,

    votes: BTreeMap<NodeId, bool>,
    progress: BTreeMap<NodeId, Progress>,
    transferee: Option<NodeId>,
    read_round: u64,
    pending_reads: VecDeque<PendingRead>,
    reads_awaiting_commit: Vec<u64>,
    broadcast_pending: bool,
    /// `parallel_leader_append`: the highest index a [`MessageBody::LocalAppended`] was
    /// sent for in this leadership (0 when none).
    self_ack_sent: u64,
    /// `parallel_leader_append`: send a `LocalAppended` again with the next Ready (the
    /// last one may have been lost on the way back).
    self_ack_due: bool,

    msgs: Vec<RaftMessage>,
    read_states: Vec<ReadState>,
    aborted_reads: Vec<u64>,
    events: Vec<RaftEvent>,
    last_hard_state: HardState,
    pending_snapshot_record: Option<Snapshot>,
    pending_restore: Option<Snapshot>,
    incoming_snapshot: Option<IncomingSnapshot>,
    stats: RaftStats,
    /// Whether [`RaftEvent::Exhausted`] was reported (it is, once).
    exhausted_reported: bool,

    /// Ticks since this node became leader (the leader's own clock, for the lease).
    leader_ticks: u64,
    /// Lease mode: (heartbeat round, `leader_ticks` when it was sent), oldest first.
    lease_rounds: VecDeque<(u64, u64)>,
    /// Lease mode: a leader transfer this term lets voters ignore their lease, so the
    /// leader's own lease cannot be trusted any more.
    lease_revoked: bool,
    /// Lease mode: ticks left during which a restarted node refuses to vote, because it
    /// forgot when it last heard from a leader that may still hold a lease.
    vote_guard_ticks: u32,
}

impl RaftGroup {
    /// A fresh member `id` of group `group` whose bootstrap voters are `voters` (the
    /// configuration at index 0, at most [`crate::MAX_MEMBERS`]). Every node of the
    /// group passes the same list, including a node that joins later through a
    /// membership change (it is outside the group, silent, until a change adds it).
    pub fn new(
        group: GroupId,
        id: NodeId,
        voters: &[NodeId],
        config: RaftConfig,
        rng: &mut Rng,
    ) -> Result<RaftGroup, RaftError> {
        RaftGroup::recover(group, id, voters, config, RecoveredState::default(), rng)
    }

    /// Rebuilds a member from what survived in durable storage (see
    /// [`RecoveredState::from_records`]). `voters` is the bootstrap configuration as for
    /// [`RaftGroup::new`]; the configuration in effect is rebuilt from it, the snapshot's
    /// [`SnapshotMeta::conf`] and the configuration entries of the recovered log. It comes back as a follower of no leader; the
    /// first [`Ready`] restores the snapshot (if any) and re-applies the committed entries
    /// the hard state's commit hint covers.
    pub fn recover(
        group: GroupId,
        id: NodeId,
        voters: &[NodeId],
        config: RaftConfig,
        state: RecoveredState,
        rng: &mut Rng,
    ) -> Result<RaftGroup, RaftError> {
        config.validate()?;
        let Some(bootstrap_voters) = MemberSet::from_slice(voters) else {
            return Err(RaftError::InvalidConfig {
                field: "voters",
                reason: format!("more than {} members", crate::MAX_MEMBERS),
            });
        };
        if bootstrap_voters.is_empty() {
            return Err(RaftError::InvalidConfig {
                field: "voters",
                reason: "a group needs at least one voter".into(),
            });
        }
        let bootstrap = ConfState {
            voters: bootstrap_voters,
            ..ConfState::default()
        };
        let snapshot = state.snapshot.unwrap_or_default();
        let base = snapshot.meta.index;
        if base > MAX_INDEX || state.entries.len() as u64 > MAX_INDEX - base.min(MAX_INDEX) {
            return Err(RaftError::InvalidRecoveredState {
                reason: format!(
                    "snapshot index {base} with {} entries goes beyond MAX_INDEX ({MAX_INDEX})",
                    state.entries.len()
                ),
            });
        }
        for (k, e) in state.entries.iter().enumerate() {
            if e.index != base + 1 + k as u64 {
                return Err(RaftError::LogGap {
                    first_index: e.index,
                    last_index: base + k as u64,
                });
            }
        }
        let hs = state.hard_state;
        let last_index = base + state.entries.len() as u64;
        let invalid = |reason: String| Err(RaftError::InvalidRecoveredState { reason });
        if hs.term > MAX_TERM {
            // Only a forged term adopted by an older build gets here.
            return invalid(format!("term {} is above MAX_TERM ({MAX_TERM})", hs.term));
        }
        if hs.commit > last_index {
            // The commit hint is persisted after the entries it covers, so a lost tail
            // takes the hint with it; one beyond the log means the records are not ours.
            return invalid(format!(
                "commit index {} is beyond the last index {last_index}",
                hs.commit
            ));
        }
        let pending_restore = (base > 0).then(|| snapshot.clone());
        let log = RaftLog::new(snapshot, state.entries, hs.commit);
        // Only a node that took part in some term can have acknowledged a leader's
        // heartbeat (its answer waited for the term to be durable).
        let vote_guard_ticks = if config.lease_reads && hs.term > 0 {
            config.election_ticks
        } else {
            0
        };
        let mut g = RaftGroup {
            group,
            id,
            bootstrap,
            conf: bootstrap,
            conf_index: 0,
            conf_term: 0,
            voter_before_latest_conf: false,
            cfg: config,
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: None,
            log,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_ticks: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            transferee: None,
            read_round: 0,
            pending_reads: VecDeque::new(),
            reads_awaiting_commit: Vec::new(),
            broadcast_pending: false,
            self_ack_sent: 0,
            self_ack_due: false,
            msgs: Vec::new(),
            read_states: Vec::new(),
            aborted_reads: Vec::new(),
            events: Vec::new(),
            last_hard_state: hs,
            pending_snapshot_record: None,
            pending_restore,
            incoming_snapshot: None,
            stats: RaftStats::default(),
            exhausted_reported: false,
            leader_ticks: 0,
            lease_rounds: VecDeque::new(),
            lease_revoked: false,
            vote_guard_ticks,
        };
        let (conf, prev, conf_index, conf_term) = g.conf_upto(u64::MAX);
        g.conf = conf;
        g.conf_index = conf_index;
        g.conf_term = conf_term;
        g.voter_before_latest_conf = prev.is_voter(id);
        g.reset_timers(rng);
        Ok(g)
    }

    // ----- accessors -------------------------------------------------------------------

    /// The group this member belongs to.
    pub fn group(&self) -> GroupId {
        self.group
    }
    /// This member's node.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }
    /// The vote cast in the current term.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }
    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The leader this member currently follows (itself when leading).
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// The voters of the configuration in effect here, sorted (while joint: the
    /// incoming voters, see [`RaftGroup::voters_outgoing`]).
    pub fn voters(&self) -> &[NodeId] {
        self.conf.voters.as_slice()
    }
    /// The outgoing voters of a joint configuration (thesis §4.3), sorted; empty when
    /// the configuration in effect is not joint.
    pub fn voters_outgoing(&self) -> &[NodeId] {
        self.conf.voters_outgoing.as_slice()
    }
    /// The learners (non-voting members that receive the log) of the configuration in
    /// effect here, sorted. Voters demoted by a joint change are not among them until
    /// the joint configuration is left: see [`RaftGroup::learners_next`].
    pub fn learners(&self) -> &[NodeId] {
        self.conf.learners.as_slice()
    }
    /// The outgoing voters a joint change demoted: they vote in the outgoing
    /// configuration and become learners when it is left (etcd's `LearnersNext`).
    pub fn learners_next(&self) -> &[NodeId] {
        self.conf.learners_next.as_slice()
    }
    /// Whether the configuration in effect here is joint (thesis §4.3).
    pub fn is_joint(&self) -> bool {
        self.conf.is_joint()
    }
    /// Whether `n` is a member of the configuration in effect here: a voter (incoming
    /// or outgoing) or a learner.
    pub fn is_member(&self, n: NodeId) -> bool {
        self.conf.is_member(n)
    }
    /// The configuration in effect here (it takes effect when its entry is appended,
    /// not when it commits: thesis §4.1).
    pub fn conf_state(&self) -> ConfState {
        self.conf
    }
    /// The index of the configuration entry in effect (0 when the configuration comes
    /// from the snapshot or the bootstrap voters). A change is pending while it is above
    /// [`RaftGroup::commit_index`].
    pub fn conf_index(&self) -> u64 {
        self.conf_index
    }
    /// Whether this leader may serve reads from its lease now ([`RaftConfig::lease_reads`]):
    /// a quorum of voters (while joint, of each voter set) acknowledged a heartbeat sent
    /// less than `lease_ticks` ago (by this node's clock), no leader transfer happened
    /// this term, and an entry of this term is committed.
    pub fn has_lease(&self) -> bool {
        if !self.cfg.lease_reads
            || self.role != Role::Leader
            || self.lease_revoked
            || self.log.term(self.log.committed) != Some(self.term)
        {
            return false;
        }
        let now = self.leader_ticks;
        // The lease dates from the oldest heartbeat a majority needs, in each set.
        let start = [self.conf.voters, self.conf.voters_outgoing]
            .iter()
            .filter(|set| !set.is_empty())
            .map(|set| self.lease_start(set.as_slice(), now))
            .min()
            .flatten();
        start.is_some_and(|start| now < start + u64::from(self.cfg.lease_ticks))
    }

    /// When (in `leader_ticks`) the heartbeat was sent whose acknowledgements give `set`
    /// a majority: the majority-th latest send any voter of `set` acknowledged (the
    /// leader counts as acknowledging now). `None` without such a majority.
    fn lease_start(&self, set: &[NodeId], now: u64) -> Option<u64> {
        let mut sent: Vec<u64> = set
            .iter()
            .filter_map(|&v| {
                if v == self.id {
                    return Some(now);
                }
                let round = self.progress.get(&v)?.read_round_acked;
                let k = self
                    .lease_rounds
                    .binary_search_by_key(&round, |&(r, _)| r)
                    .ok()?;
                Some(self.lease_rounds[k].1)
            })
            .collect();
        let majority = set.len() / 2 + 1;
        if sent.len() < majority {
            return None;
        }
        sent.sort_unstable_by(|a, b| b.cmp(a));
        Some(sent[majority - 1])
    }
    /// The highest committed index known here.
    pub fn commit_index(&self) -> u64 {
        self.log.committed
    }
    /// The highest index handed out for application.
    pub fn applied_index(&self) -> u64 {
        self.log.applied
    }
    /// The last index of the log.
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }
    /// The first index still in the log (entries before it are in the snapshot).
    pub fn first_index(&self) -> u64 {
        self.log.first_index()
    }
    /// The term of the entry at `index`, if the log (or its snapshot base) still has it.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.log.term(index)
    }
    /// The entry at `index`, if still in the log.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        self.log.entry(index)
    }
    /// The current snapshot's position (index 0 when there is none).
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.log.snapshot.meta
    }
    /// The hard state as it is in memory now (persisted by the next [`Ready`]).
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }
    /// The leader's view of `peer` (None unless leading).
    pub fn progress(&self, peer: NodeId) -> Option<PeerProgress> {
        if self.role != Role::Leader {
            return None;
        }
        self.progress.get(&peer).map(Progress::view)
    }
    /// The target of an ongoing leader transfer.
    pub fn transferee(&self) -> Option<NodeId> {
        self.transferee
    }
    /// Messages dropped because they were malformed, addressed elsewhere or over a limit
    /// (the same as [`RaftStats::messages_dropped`]).
    pub fn dropped_messages(&self) -> u64 {
        self.stats.messages_dropped
    }
    /// What this group counted: dropped and refused messages, refused campaigns and
    /// proposals.
    pub fn stats(&self) -> RaftStats {
        self.stats
    }
    /// The configuration.
    pub fn config(&self) -> &RaftConfig {
        &self.cfg
    }

    /// Whether `n` votes in the configuration in effect (incoming or outgoing voter).
    fn is_voter(&self, n: NodeId) -> bool {
        self.conf.is_voter(n)
    }

    /// Every voter but this node (incoming and outgoing), sorted: whom to ask for votes.
    fn peers(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .conf
            .voters
            .as_slice()
            .iter()
            .chain(self.conf.voters_outgoing.as_slice())
            .copied()
            .filter(|&n| n != self.id)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Everyone the leader replicates to: every member but itself, sorted.
    fn replicas(&self) -> Vec<NodeId> {
        let mut v = self.conf.members();
        v.retain(|&n| n != self.id);
        v
    }

    /// **The quorum rule** (thesis §4.3; etcd raft `quorum/joint.go`): whether `yes`
    /// holds for a majority of the voters and, while joint, *also* for a majority of
    /// the outgoing voters. CheckQuorum and ReadIndex decide with it, the lease with the
    /// same rule in [`RaftGroup::has_lease`], elections with [`RaftGroup::joint_vote`]
    /// and commitment with [`RaftGroup::joint_committed_index`].
    fn joint_majority(&self, yes: impl Fn(NodeId) -> bool) -> bool {
        let majority = |set: &MemberSet| {
            let s = set.as_slice();
            s.is_empty() || s.iter().filter(|&&n| yes(n)).count() > s.len() / 2
        };
        majority(&self.conf.voters) && majority(&self.conf.voters_outgoing)
    }

    /// Whether `acked` holds, by the leader's view of its followers, for a majority of
    /// each voter set (the leader counts itself wherever it is a voter).
    fn quorum_acked(&self, acked: impl Fn(&Progress) -> bool) -> bool {
        self.joint_majority(|n| n == self.id || self.progress.get(&n).is_some_and(&acked))
    }

    /// The voter sets whose majorities decide commitment and elections: the incoming
    /// voters and, while joint, the outgoing ones — or, with the deliberately broken
    /// [`RaftConfig::unsafe_joint_single_majority`], the incoming voters only.
    fn deciding_sets(&self) -> Vec<MemberSet> {
        if self.conf.is_joint() && !self.cfg.unsafe_joint_single_majority {
            vec![self.conf.voters, self.conf.voters_outgoing]
        } else {
            vec![self.conf.voters]
        }
    }

    /// The outcome of the votes collected so far: won once a majority of every
    /// deciding set granted, lost once a majority of some set refused (etcd
    /// `JointConfig.VoteResult`). Only votes of voters count.
    fn joint_vote(&self) -> VoteOutcome {
        let mut outcome = VoteOutcome::Won;
        for set in self.deciding_sets() {
            let s = set.as_slice();
            let majority = s.len() / 2 + 1;
            let granted = s
                .iter()
                .filter(|n| self.votes.get(n) == Some(&true))
                .count();
            let refused = s
                .iter()
                .filter(|n| self.votes.get(n) == Some(&false))
                .count();
            if refused >= majority {
                return VoteOutcome::Lost;
            }
            if granted < majority {
                outcome = VoteOutcome::Pending;
            }
        }
        outcome
    }

    /// The highest index a majority of every deciding set holds: the minimum over the
    /// sets of each one's majority match index (etcd `JointConfig.CommittedIndex`).
    fn joint_committed_index(&self) -> u64 {
        self.deciding_sets()
            .iter()
            .map(|set| {
                let mut matched: Vec<u64> = set
                    .as_slice()
                    .iter()
                    .map(|n| self.progress.get(n).map_or(0, |p| p.match_index))
                    .collect();
                matched.sort_unstable_by(|a, b| b.cmp(a));
                // A set is never empty here: the incoming voters never are, the
                // outgoing set is used only while joint.
                matched.get(matched.len() / 2).copied().unwrap_or(0)
            })
            .min()
            .unwrap_or(0)
    }

    // ----- membership --------------------------------------------------------------------

    /// The configuration after every configuration entry up to `index`, the one before
    /// the last such entry, and that entry's index and term (0, 0 if none is in the log).
    fn conf_upto(&self, index: u64) -> (ConfState, ConfState, u64, u64) {
        let meta = self.log.snapshot.meta;
        let mut conf = if meta.conf.voters.is_empty() {
            self.bootstrap
        } else {
            meta.conf
        };
        let (mut at, mut at_term) = (0, 0);
        let mut prev = conf;
        for e in self.log.entries.iter().take_while(|e| e.index <= index) {
            if e.kind != EntryKind::ConfChange {
                continue;
            }
            prev = conf;
            // Every node skips an inapplicable change the same way, so configurations
            // stay identical; the leader never proposes one.
            if let Some(next) = e.conf_change().and_then(|c| conf.apply(c).ok()) {
                conf = next;
            }
            (at, at_term) = (e.index, e.term);
        }
        (conf, prev, at, at_term)
    }

    /// Whether this node may start an election: it is a voter of the configuration in
    /// effect (incoming or, while joint, outgoing), or that configuration removed it
    /// but is not committed here yet. The
    /// latter matters: a leader that removed itself and lost leadership before the
    /// removal committed may hold the only up-to-date log among the remaining voters;
    /// it must be able to win again (counting only the new configuration's votes), commit
    /// its removal and step down, or the group deadlocks (as LogCabin does, thesis §4.2.2).
    fn can_campaign(&self) -> bool {
        self.is_voter(self.id)
            || (self.voter_before_latest_conf && self.conf_index > self.log.committed)
    }

    /// Recomputes the configuration in effect from the snapshot and the log (after an
    /// append that carried or truncated a configuration entry, a snapshot install or a
    /// compaction), and adjusts the leader's progress map.
    fn recompute_config(&mut self) {
        let (conf, prev, at, at_term) = self.conf_upto(u64::MAX);
        self.voter_before_latest_conf = prev.is_voter(self.id);
        let change = if at != 0 && (at, at_term) != (self.conf_index, self.conf_term) {
            self.log.entry(at).and_then(Entry::conf_change)
        } else {
            None
        };
        self.conf_index = at;
        self.conf_term = at_term;
        if conf == self.conf {
            return;
        }
        self.conf = conf;
        self.events.push(RaftEvent::ConfigChanged {
            index: at,
            change,
            voters: self.voters().to_vec(),
            voters_outgoing: self.voters_outgoing().to_vec(),
            learners: self.learners().to_vec(),
        });
        if self.role == Role::Leader {
            let next = self.log.last_index() + 1;
            let members = self.replicas();
            let me = self.id;
            self.progress
                .retain(|n, _| *n == me || members.binary_search(n).is_ok());
            for n in members {
                self.progress
                    .entry(n)
                    .or_insert_with(|| Progress::new(next));
            }
            if self
                .transferee
                .is_some_and(|t| !self.conf.voters.contains(t))
            {
                self.transferee = None;
            }
        }
    }

    /// Thesis §4.2.2: a leader that is not a voter of the configuration steps down
    /// once that configuration is committed. A leader that a joint change demotes or
    /// removes is an outgoing voter while joint, so it keeps leading through the joint
    /// configuration and steps down when `LeaveJoint` commits.
    fn maybe_step_down_removed(&mut self, rng: &mut Rng) {
        if self.role == Role::Leader
            && !self.conf.is_joint()
            && !self.conf.voters.contains(self.id)
            && self.conf_index <= self.log.committed
        {
            self.events
                .push(RaftEvent::SteppedDownRemoved { term: self.term });
            let term = self.term;
            self.become_follower(term, None, rng);
        }
    }

    // ----- output ----------------------------------------------------------------------

    fn send(&mut self, to: NodeId, term: u64, body: MessageBody) {
        self.msgs.push(RaftMessage {
            group: self.group,
            from: self.id,
            to,
            term,
            body,
        });
    }

    /// Whether the term or vote to persist differ from what was last persisted (the
    /// commit index alone does not make a `Ready`: see [`RaftGroup::ready`]).
    fn term_or_vote_changed(&self) -> bool {
        let hs = self.persisted_hard_state();
        hs.term != self.last_hard_state.term || hs.vote != self.last_hard_state.vote
    }

    fn persisted_hard_state(&self) -> HardState {
        let mut hs = self.hard_state();
        if self.cfg.unsafe_skip_vote_persist {
            hs.vote = None;
        }
        hs
    }

    /// Whether [`RaftGroup::ready`] has anything for the caller.
    pub fn has_ready(&self) -> bool {
        self.broadcast_pending
            || self.self_ack_due
            || !self.msgs.is_empty()
            || self.log.has_unstable()
            || self.log.has_committed_to_apply()
            || self.term_or_vote_changed()
            || self.pending_snapshot_record.is_some()
            || self.pending_restore.is_some()
            || !self.read_states.is_empty()
            || !self.aborted_reads.is_empty()
            || !self.events.is_empty()
    }

    /// Takes everything the caller must now do: persist [`Ready::records`], make them
    /// durable, then send [`Ready::messages`], restore [`Ready::restore`] and apply
    /// [`Ready::committed_entries`] in order. The group assumes the caller does all of
    /// it (a crash in between is a crash of the group too).
    pub fn ready(&mut self) -> Ready {
        if self.broadcast_pending {
            self.broadcast_pending = false;
            self.bcast_append();
        }
        let mut records = Vec::new();
        let hs = self.persisted_hard_state();
        // Term and vote go before the entries: a durable entry of term T then always
        // comes with a durable term >= T. The commit hint goes after the entries, so it
        // never covers an entry that was lost with the tail.
        if hs.term != self.last_hard_state.term || hs.vote != self.last_hard_state.vote {
            let early = HardState {
                commit: self.last_hard_state.commit,
                ..hs
            };
            records.push(RaftRecord::HardState(early));
            self.last_hard_state = early;
        }
        if let Some(s) = self.pending_snapshot_record.take() {
            records.push(RaftRecord::Snapshot(s));
        }
        // One record per message-sized batch, so that no record outgrows what one
        // AppendEntries carries (and the WAL's record limit with it).
        let mut batch: Vec<Entry> = Vec::new();
        let mut batch_bytes = 0usize;
        for e in self.log.take_unstable() {
            let size = e.size_bytes();
            if !batch.is_empty() && batch_bytes.saturating_add(size) > self.cfg.max_bytes_per_msg {
                records.push(RaftRecord::Entries(std::mem::take(&mut batch)));
                batch_bytes = 0;
            }
            batch_bytes = batch_bytes.saturating_add(size);
            batch.push(e);
        }
        if !batch.is_empty() {
            records.push(RaftRecord::Entries(batch));
        }
        // The commit hint rides with other records and is never written alone: a
        // commit-only change is not worth an fsync (etcd's `MustSync` is false for it),
        // and a write of its own would hold the WAL's writer while the next entries
        // wait. It is recovered as it was written last; the group learns the rest again.
        if hs != self.last_hard_state && !records.is_empty() {
            records.push(RaftRecord::HardState(hs));
            self.last_hard_state = hs;
        }
        let restore = self.pending_restore.take();
        let committed_entries = self
            .log
            .take_committed(self.cfg.max_apply_entries_per_ready);
        let (early_messages, messages) = self.split_messages();
        Ready {
            group: self.group,
            early_messages,
            records,
            messages,
            restore,
            committed_entries,
            read_states: std::mem::take(&mut self.read_states),
            aborted_reads: std::mem::take(&mut self.aborted_reads),
            events: std::mem::take(&mut self.events),
            // (`unsafe_count_leader_before_sync` breaks the premise on purpose.)
            apply_before_sync: self.cfg.parallel_leader_append,
        }
    }

    /// Splits the outgoing messages into those that may leave before this Ready's
    /// records are durable and the rest, and adds the leader's `LocalAppended` to itself
    /// (after the sync) when its log grew. Without `parallel_leader_append` every message
    /// waits for the sync.
    fn split_messages(&mut self) -> (Vec<RaftMessage>, Vec<RaftMessage>) {
        let msgs = std::mem::take(&mut self.msgs);
        if !self.cfg.parallel_leader_append || self.role != Role::Leader {
            return (Vec::new(), msgs);
        }
        let last_index = self.log.last_index();
        if last_index > self.self_ack_sent || self.self_ack_due {
            // Every entry up to `last_index` is in this Ready's records or an earlier
            // one's, so the sync this message waits for makes all of them durable.
            self.self_ack_due = false;
            self.self_ack_sent = last_index;
            let (id, term) = (self.id, self.term);
            self.send(id, term, MessageBody::LocalAppended { index: last_index });
        }
        // A leader's AppendEntries promises nothing about its own disk: its term was
        // durable before it campaigned, and the commit index it carries counts this node
        // only up to a sync that completed. Everything else keeps the sync-then-send order.
        let (early, mut rest): (Vec<_>, Vec<_>) = msgs
            .into_iter()
            .partition(|m| m.to != self.id && matches!(m.body, MessageBody::AppendEntries { .. }));
        rest.append(&mut self.msgs);
        (early, rest)
    }

    /// `LocalAppended`: this leader's log is durable up to `index`; count itself.
    fn handle_local_appended(&mut self, index: u64) {
        if self.role != Role::Leader {
            return;
        }
        let id = self.id;
        let Some(me) = self.progress.get_mut(&id) else {
            return;
        };
        // check_message: within the log.
        if me.maybe_update(index) && self.maybe_commit() {
            self.bcast_append();
        }
    }

    // ----- role changes ----------------------------------------------------------------

    fn reset_timers(&mut self, rng: &mut Rng) {
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let base = self.cfg.election_ticks;
        self.randomized_election_ticks = rng.random_range(base..2 * base);
    }

    fn reset(&mut self, term: u64, rng: &mut Rng) {
        if self.term != term {
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.reset_timers(rng);
        self.votes.clear();
        self.progress.clear();
        self.transferee = None;
        self.broadcast_pending = false;
        self.abort_reads();
    }

    fn abort_reads(&mut self) {
        self.aborted_reads
            .extend(self.pending_reads.drain(..).map(|r| r.ctx));
        self.aborted_reads.append(&mut self.reads_awaiting_commit);
    }

    fn become_follower(&mut self, term: u64, leader: Option<NodeId>, rng: &mut Rng) {
        let was = (self.role, self.leader, self.term);
        self.reset(term, rng);
        self.role = Role::Follower;
        self.leader = leader;
        if was != (self.role, self.leader, self.term) {
            self.events.push(RaftEvent::BecameFollower {
                term: self.term,
                leader,
            });
        }
    }

    /// A vote request of a later term: the node adopts the term (Raft §5.1) as a
    /// follower of no leader, but a follower or candidate keeps its election timer
    /// running. Figure 2 restarts the timer only on hearing from the current leader or
    /// on granting a vote ([`Self::handle_request_vote`] does the latter); restarting it
    /// on every request would let candidates with stale logs, whose votes the others
    /// refuse, keep resetting the one node that could win, and a group needing every
    /// live voter could go without a leader for many timeouts (swarm seed 4098: five
    /// nodes, two lost, PreVote off). A leader stepping down starts a fresh timer.
    fn adopt_term_keeping_timer(&mut self, term: u64, rng: &mut Rng) {
        let keep = (self.role != Role::Leader)
            .then_some((self.election_elapsed, self.randomized_election_ticks));
        self.become_follower(term, None, rng);
        if let Some((elapsed, timeout)) = keep {
            self.election_elapsed = elapsed;
            self.randomized_election_ticks = timeout;
        }
    }

    fn campaign(&mut self, pre_vote: bool, leader_transfer: bool, rng: &mut Rng) {
        if !self.can_campaign() {
            return;
        }
        let last_index = self.log.last_index();
        if self.term >= MAX_TERM || last_index >= MAX_INDEX {
            // No term is left to campaign for, or no index for the new leader's no-op.
            // Only forged values get here (messages beyond the bounds are refused, and
            // each may raise the term by at most MAX_TERM_JUMP): stay a follower and
            // say so once.
            self.stats.campaigns_refused_exhausted += 1;
            self.election_elapsed = 0;
            if !self.exhausted_reported {
                self.exhausted_reported = true;
                self.events.push(RaftEvent::Exhausted {
                    term: self.term,
                    last_index,
                });
            }
            return;
        }
        let vote_term = if pre_vote {
            let term = self.term;
            self.reset(term, rng);
            self.role = Role::PreCandidate;
            self.term + 1
        } else {
            let term = self.term + 1;
            self.reset(term, rng);
            self.role = Role::Candidate;
            self.vote = Some(self.id);
            self.term
        };
        self.events.push(RaftEvent::ElectionStarted {
            term: vote_term,
            pre_vote,
        });
        // Counted only where this node is a voter (joint_vote).
        self.votes.insert(self.id, true);
        if self.joint_vote() == VoteOutcome::Won {
            // A single-voter group wins at once.
            if pre_vote {
                self.campaign(false, leader_transfer, rng);
            } else {
                self.become_leader();
            }
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for to in self.peers() {
            self.send(
                to,
                vote_term,
                MessageBody::RequestVote {
                    pre_vote,
                    last_log_index,
                    last_log_term,
                    leader_transfer,
                },
            );
        }
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.read_round = 0;
        self.leader_ticks = 0;
        self.lease_rounds.clear();
        self.lease_revoked = false;
        self.self_ack_sent = 0;
        self.self_ack_due = false;
        let next = self.log.last_index() + 1;
        let mut members = self.replicas();
        members.push(self.id);
        self.progress = members.iter().map(|&n| (n, Progress::new(next))).collect();
        if let Some(me) = self.progress.get_mut(&self.id) {
            me.become_replicate();
            me.recent_active = true;
        }
        self.events
            .push(RaftEvent::BecameLeader { term: self.term });
        // Raft §8: a new leader commits a no-op of its own term, which commits the
        // entries of earlier terms it holds (§5.4.2) and enables ReadIndex.
        self.append_entry(EntryKind::Noop, Vec::new());
        self.bcast_append();
    }

    fn append_entry(&mut self, kind: EntryKind, data: Vec<u8>) -> EntryId {
        let id = EntryId {
            term: self.term,
            index: self.log.last_index() + 1,
        };
        let entry = Entry {
            term: id.term,
            index: id.index,
            kind,
            data,
        };
        // The new index is last + 1 > committed, so this cannot fail.
        let appended = self.log.append(std::slice::from_ref(&entry));
        assert!(appended.is_ok(), "leader append failed: {appended:?}");
        if kind == EntryKind::ConfChange {
            // Thesis §4.1: a configuration takes effect as soon as it is in the log.
            self.recompute_config();
        }
        // With parallel_leader_append the leader counts itself only once its sync
        // returns (`LocalAppended`), never for an entry a crash could still take.
        if !self.cfg.parallel_leader_append || self.cfg.unsafe_count_leader_before_sync {
            let last = self.log.last_index();
            if let Some(me) = self.progress.get_mut(&self.id) {
                me.maybe_update(last);
            }
            self.maybe_commit();
        }
        id
    }

    // ----- inputs ----------------------------------------------------------------------

    /// Advances logical time by one tick: followers and candidates start an election
    /// when their randomized timeout expires (Raft §5.2); a leader sends heartbeats and,
    /// with CheckQuorum, steps down if it has not heard from a quorum (thesis §6.2).
    pub fn tick(&mut self, rng: &mut Rng) {
        self.vote_guard_ticks = self.vote_guard_ticks.saturating_sub(1);
        if self.role == Role::Leader {
            self.maybe_step_down_removed(rng);
        }
        if self.role == Role::Leader {
            self.leader_ticks = self.leader_ticks.saturating_add(1);
            self.heartbeat_elapsed += 1;
            self.election_elapsed += 1;
            if self.election_elapsed >= self.cfg.election_ticks {
                self.election_elapsed = 0;
                if self.cfg.check_quorum {
                    if !self.quorum_acked(|p| p.recent_active) {
                        self.events
                            .push(RaftEvent::SteppedDownNoQuorum { term: self.term });
                        let term = self.term;
                        self.become_follower(term, None, rng);
                        return;
                    }
                    let me = self.id;
                    for (n, p) in self.progress.iter_mut() {
                        p.recent_active = *n == me;
                    }
                }
                // A transfer that did not finish within an election timeout is abandoned.
                self.transferee = None;
            }
            // An automatic leave refused earlier (e.g. during a transfer) is retried.
            self.maybe_auto_leave();
            if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
                self.heartbeat_elapsed = 0;
                if self.cfg.lease_reads {
                    // Every heartbeat is a new round, so its acknowledgements date the
                    // lease from the moment it was sent.
                    self.read_round += 1;
                }
                self.bcast_heartbeat();
                let own_match = self.progress.get(&self.id).map_or(0, |p| p.match_index);
                if self.cfg.parallel_leader_append && own_match < self.self_ack_sent {
                    // The LocalAppended may have been lost: ask again after a sync.
                    self.self_ack_due = true;
                }
            }
        } else {
            // A learner or a removed node ticks forever without campaigning: saturate.
            self.election_elapsed = self.election_elapsed.saturating_add(1);
            if self.election_elapsed >= self.randomized_election_ticks && self.can_campaign() {
                self.campaign(self.cfg.pre_vote, false, rng);
            }
        }
    }

    /// Proposes a client command. Only a leader accepts; the command is committed iff
    /// the entry later applied at the returned index carries the returned term. A
    /// command larger than [`RaftConfig::max_entry_bytes`] is refused
    /// ([`RaftError::EntryTooLarge`]) and never enters the log.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<EntryId, RaftError> {
        if data.len() > self.cfg.max_entry_bytes {
            self.stats.proposals_too_large += 1;
            return Err(RaftError::EntryTooLarge {
                len_bytes: data.len(),
                max_bytes: self.cfg.max_entry_bytes,
            });
        }
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if let Some(to) = self.transferee {
            return Err(RaftError::TransferInProgress { to });
        }
        let last_index = self.log.last_index();
        if last_index >= MAX_INDEX {
            return Err(RaftError::LogExhausted { last_index });
        }
        let uncommitted = last_index - self.log.committed;
        if uncommitted >= self.cfg.max_uncommitted_entries as u64 {
            return Err(RaftError::TooManyUncommitted {
                limit: self.cfg.max_uncommitted_entries,
            });
        }
        let id = self.append_entry(EntryKind::Normal, data);
        self.broadcast_pending = true;
        Ok(id)
    }

    /// Asks for a linearizable read point (thesis §6.4, ReadIndex). When the leader has
    /// confirmed with a quorum that it is still leader, a [`ReadState`] with `ctx` and the
    /// read index appears in a later [`Ready`]; the caller serves the read once it has
    /// applied up to that index. Reads aborted by a step-down appear in
    /// [`Ready::aborted_reads`].
    pub fn read_index(&mut self, ctx: u64) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if self.log.term(self.log.committed) != Some(self.term) {
            // Until its no-op commits, the leader's commit index may be stale (§6.4 step 1).
            self.reads_awaiting_commit.push(ctx);
            return Ok(());
        }
        self.start_read(ctx);
        Ok(())
    }

    fn start_read(&mut self, ctx: u64) {
        if self.has_lease() || self.joint_majority(|n| n == self.id) {
            self.read_states.push(ReadState {
                ctx,
                index: self.log.committed,
            });
            return;
        }
        self.read_round += 1;
        self.pending_reads.push_back(PendingRead {
            ctx,
            index: self.log.committed,
            round: self.read_round,
        });
        self.bcast_heartbeat();
    }

    fn release_reads(&mut self) {
        while let Some(front) = self.pending_reads.front() {
            let round = front.round;
            if !self.quorum_acked(|p| p.read_round_acked >= round) {
                break;
            }
            let r = self.pending_reads.pop_front().expect("front exists");
            self.read_states.push(ReadState {
                ctx: r.ctx,
                index: r.index,
            });
        }
    }

    /// Hands leadership to `to` (thesis §3.10): the leader stops taking proposals, brings
    /// `to` up to date, then tells it to campaign at once. Abandoned after an election
    /// timeout.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        // Only an incoming voter: an outgoing one would step down after LeaveJoint.
        if to == self.id || !self.conf.voters.contains(to) {
            return Err(RaftError::InvalidTransferTarget { to });
        }
        self.transferee = Some(to);
        self.lease_revoked = true;
        self.election_elapsed = 0;
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            let term = self.term;
            self.send(to, term, MessageBody::TimeoutNow);
        } else {
            self.send_append(to, true);
        }
        Ok(())
    }

    /// Compacts the log up to `index` (which must already be applied), keeping `data` —
    /// the caller's state machine image at `index` — as the snapshot (Raft §7). Lagging
    /// followers will be sent it in chunks.
    /// The snapshot's meta records the configuration in effect at `index`.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), RaftError> {
        let (conf, _, _, _) = self.conf_upto(index);
        let snap = self.log.compact(index, data, conf)?;
        self.pending_snapshot_record = Some(snap);
        self.recompute_config();
        Ok(())
    }

    /// Proposes a membership change: a single-server change (thesis §4.1) or a step of
    /// joint consensus (thesis §4.3: [`ConfChange::EnterJoint`], then
    /// [`ConfChange::LeaveJoint`] — or let the leader leave by itself with
    /// [`crate::JointChange::auto_leave`]). It takes effect on the leader at once (the
    /// entry is appended) and on each follower when it appends the entry; the caller
    /// sees the entry in [`Ready::committed_entries`] with [`EntryKind::ConfChange`]
    /// once it commits. Refused while another change is uncommitted (so `LeaveJoint`
    /// waits for the joint entry to commit), before the leader committed an entry of its
    /// term, during a leader transfer, or if the change does not apply to the
    /// configuration in effect ([`ConfState::apply`]: adding a member twice, removing a
    /// non-member or the last voter, a single-server change or `EnterJoint` while joint,
    /// `LeaveJoint` while not joint, a joint change leaving no incoming voter, more than
    /// [`crate::MAX_MEMBERS`] members). A change whose encoding exceeds
    /// [`RaftConfig::max_entry_bytes`] is refused like any proposal
    /// ([`RaftError::EntryTooLarge`]).
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<EntryId, RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: self.leader,
            });
        }
        if let Some(to) = self.transferee {
            return Err(RaftError::TransferInProgress { to });
        }
        if self.conf_index > self.log.committed && !self.cfg.unsafe_allow_concurrent_conf_changes {
            return Err(RaftError::ConfChangeInProgress {
                index: self.conf_index,
            });
        }
        if self.log.term(self.log.committed) != Some(self.term) {
            return Err(RaftError::NoCommitInTerm { term: self.term });
        }
        let last_index = self.log.last_index();
        if last_index >= MAX_INDEX {
            return Err(RaftError::LogExhausted { last_index });
        }
        let uncommitted = last_index - self.log.committed;
        if uncommitted >= self.cfg.max_uncommitted_entries as u64 {
            return Err(RaftError::TooManyUncommitted {
                limit: self.cfg.max_uncommitted_entries,
            });
        }
        self.conf
            .apply(change)
            .map_err(|reason| RaftError::InvalidConfChange {
                change: Box::new(change),
                reason,
            })?;
        let data = change.encode();
        if data.len() > self.cfg.max_entry_bytes {
            self.stats.proposals_too_large += 1;
            return Err(RaftError::EntryTooLarge {
                len_bytes: data.len(),
                max_bytes: self.cfg.max_entry_bytes,
            });
        }
        let id = self.append_entry(EntryKind::ConfChange, data);
        self.broadcast_pending = true;
        Ok(id)
    }

    /// Handles a message from a peer. Errors are messages that cannot belong here
    /// (another group, another recipient, an unknown sender, an impossible log) and
    /// messages refused as malformed or implausible ([`RaftError::MalformedMessage`],
    /// see [`MessageDefect`]: nothing of those is adopted, not even the term); the group
    /// counts them in [`RaftGroup::stats`] and the caller drops them. Protocol-level
    /// staleness is handled silently.
    pub fn step(&mut self, msg: RaftMessage, rng: &mut Rng) -> Result<(), RaftError> {
        if msg.group != self.group {
            self.stats.messages_dropped += 1;
            return Err(RaftError::WrongGroup {
                expected: self.group,
                found: msg.group,
            });
        }
        // Senders are not checked against the configuration: a joining node hears from a
        // leader it does not know yet, a leader hears from learners, and a removed
        // node's stale messages are harmless (responses from non-members are ignored,
        // votes from non-voters are not counted).
        // Only a LocalAppended comes from this node itself (and only from it: see
        // check_message).
        let from_self_ok = matches!(msg.body, MessageBody::LocalAppended { .. });
        if msg.to != self.id || (msg.from == self.id && !from_self_ok) {
            self.stats.messages_dropped += 1;
            return Err(RaftError::UnknownPeer {
                from: msg.from,
                to: msg.to,
            });
        }
        if let Err(defect) = self.check_message(&msg) {
            self.stats.messages_dropped += 1;
            self.stats.messages_refused += 1;
            if let MessageDefect::TermJump { .. } = defect {
                self.step_towards(&msg, rng);
            }
            return Err(RaftError::MalformedMessage {
                from: msg.from,
                defect,
            });
        }
        let res = self.step_inner(msg, rng);
        if res.is_err() {
            self.stats.messages_dropped += 1;
        }
        self.maybe_step_down_removed(rng);
        res
    }

    /// Thesis §4.2.3 (CheckQuorum): a node that heard from a live leader within the
    /// election timeout (or, in lease mode, restarted less than one ago) ignores vote
    /// requests of later terms.
    fn in_lease(&self) -> bool {
        self.cfg.check_quorum
            && ((self.leader.is_some() && self.election_elapsed < self.cfg.election_ticks)
                || self.vote_guard_ticks > 0)
    }

    /// A message refused for a term more than [`MAX_TERM_JUMP`] ahead: nothing of it is
    /// adopted, but if its term would have made this node adopt it (Raft §5.1: a node
    /// that sees a higher term updates its own), the node raises its term by
    /// `MAX_TERM_JUMP` towards it and becomes a follower of no leader. A bare refusal
    /// would strand a node that honestly fell that far behind — which only an earlier
    /// forgery, accepted by a peer, can cause — while raising a term is always safe. So
    /// lags close in bounded steps, and a forger needs `2^31` accepted messages to push
    /// a group to [`MAX_TERM`].
    fn step_towards(&mut self, m: &RaftMessage, rng: &mut Rng) {
        let would_adopt = match m.body {
            MessageBody::RequestVote {
                pre_vote,
                leader_transfer,
                ..
            } => !pre_vote && (leader_transfer || !self.in_lease()),
            MessageBody::RequestVoteResponse {
                pre_vote: true,
                granted: true,
            } => false,
            _ => true,
        };
        if would_adopt {
            let term = self.term.saturating_add(MAX_TERM_JUMP).min(MAX_TERM);
            self.become_follower(term, None, rng);
        }
    }

    /// Everything that must hold before a message may touch the state: the stateless
    /// checks of [`RaftMessage::validate`], a term at most [`MAX_TERM_JUMP`] ahead, and,
    /// for a message that will be acted on, values that an honest peer derives from what
    /// this node sent or holds. Each rule is a fact about honest peers, so a refusal
    /// only ever drops a forged or corrupted message:
    ///
    /// * a heartbeat's commit index is `min(commit, match)`, and the follower acknowledged
    ///   `match` only once it was durable in its log, so it is within the log (§5.3);
    /// * a follower acknowledges (or rejects at) an index the leader sent it in this
    ///   term, and a leader's log only grows within its term (Leader Append-Only, §5.3);
    /// * a heartbeat response echoes a round this leader sent in this term;
    /// * a snapshot acknowledgement names an offset within the snapshot it was sent.
    fn check_message(&self, m: &RaftMessage) -> Result<(), MessageDefect> {
        m.validate(&self.cfg)?;
        if m.term > self.term.saturating_add(MAX_TERM_JUMP) {
            return Err(MessageDefect::TermJump {
                term: m.term,
                local_term: self.term,
            });
        }
        if m.term < self.term {
            // Stale: at most answered with our term, never applied.
            return Ok(());
        }
        let last_index = self.log.last_index();
        let leading = self.role == Role::Leader && m.term == self.term;
        match &m.body {
            MessageBody::Heartbeat { leader_commit, .. } if *leader_commit > last_index => {
                Err(MessageDefect::CommitBeyondLog {
                    commit: *leader_commit,
                    last_index,
                })
            }
            MessageBody::AppendEntriesResponse { result } if leading => {
                let (field, index) = match *result {
                    AppendResult::Accepted { match_index } => ("match_index", match_index),
                    AppendResult::Rejected { prev_log_index, .. } => {
                        ("rejected prev_log_index", prev_log_index)
                    }
                };
                if index > last_index {
                    return Err(MessageDefect::BeyondLeaderLog {
                        field,
                        index,
                        last_index,
                    });
                }
                Ok(())
            }
            MessageBody::LocalAppended { index } => {
                if m.from != self.id {
                    return Err(MessageDefect::LocalFromPeer);
                }
                if leading && *index > last_index {
                    return Err(MessageDefect::BeyondLeaderLog {
                        field: "local appended index",
                        index: *index,
                        last_index,
                    });
                }
                Ok(())
            }
            MessageBody::HeartbeatResponse { read_round } if leading => {
                if *read_round > self.read_round {
                    return Err(MessageDefect::ReadRoundNotSent {
                        round: *read_round,
                        latest: self.read_round,
                    });
                }
                Ok(())
            }
            MessageBody::InstallSnapshotResponse {
                snapshot,
                next_offset,
            } if leading && **snapshot == self.log.snapshot.meta => {
                let len_bytes = self.log.snapshot.data.len() as u64;
                if *next_offset > len_bytes {
                    return Err(MessageDefect::SnapshotOffsetBeyondData {
                        offset: *next_offset,
                        len_bytes,
                    });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn step_inner(&mut self, m: RaftMessage, rng: &mut Rng) -> Result<(), RaftError> {
        if m.term > self.term {
            if !self.on_later_term(&m, rng) {
                return Ok(());
            }
        } else if m.term < self.term {
            self.on_stale_term(&m);
            return Ok(());
        }
        self.dispatch(m, rng)
    }

    /// A message of a later term (Raft §5.1: adopt it), before it is handled. Returns
    /// whether to handle it: a vote request that a node in its leader's lease ignores is
    /// dropped here.
    fn on_later_term(&mut self, m: &RaftMessage, rng: &mut Rng) -> bool {
        match &m.body {
            MessageBody::RequestVote {
                pre_vote,
                leader_transfer,
                ..
            } => {
                if self.in_lease() && !leader_transfer {
                    // Thesis §4.2.3: a node that hears from a live leader ignores
                    // disruptive vote requests.
                    return false;
                }
                if !pre_vote {
                    self.adopt_term_keeping_timer(m.term, rng);
                }
            }
            MessageBody::RequestVoteResponse {
                pre_vote: true,
                granted: true,
            } => {}
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(m.term, Some(m.from), rng)
            }
            _ => self.become_follower(m.term, None, rng),
        }
        true
    }

    /// A message of an earlier term: dropped, except that a stale leader or pre-candidate
    /// is told the current term.
    fn on_stale_term(&mut self, m: &RaftMessage) {
        match &m.body {
            MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. }
                if self.cfg.check_quorum || self.cfg.pre_vote =>
            {
                // A stale leader (e.g. back from a partition) must learn the new
                // term, or with PreVote/CheckQuorum it would never step down.
                let term = self.term;
                self.send(
                    m.from,
                    term,
                    MessageBody::HeartbeatResponse { read_round: 0 },
                );
            }
            MessageBody::RequestVote { pre_vote: true, .. } => {
                let term = self.term;
                self.send(
                    m.from,
                    term,
                    MessageBody::RequestVoteResponse {
                        pre_vote: true,
                        granted: false,
                    },
                );
            }
            _ => {}
        }
    }

    /// A message of the current term, by kind.
    fn dispatch(&mut self, m: RaftMessage, rng: &mut Rng) -> Result<(), RaftError> {
        match m.body {
            MessageBody::RequestVote {
                pre_vote,
                last_log_index,
                last_log_term,
                ..
            } => {
                self.handle_request_vote(m.from, m.term, pre_vote, last_log_index, last_log_term);
                Ok(())
            }
            MessageBody::RequestVoteResponse { pre_vote, granted } => {
                self.handle_vote_response(m.from, pre_vote, granted, rng);
                Ok(())
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.follow(m.from, rng);
                self.handle_append_entries(
                    m.from,
                    prev_log_index,
                    prev_log_term,
                    &entries,
                    leader_commit,
                )
            }
            MessageBody::Heartbeat {
                leader_commit,
                read_round,
            } => {
                self.follow(m.from, rng);
                // check_message: within the log.
                self.log.commit_to(leader_commit);
                let term = self.term;
                self.send(m.from, term, MessageBody::HeartbeatResponse { read_round });
                Ok(())
            }
            MessageBody::InstallSnapshot {
                snapshot,
                offset,
                data,
                done,
            } => {
                self.follow(m.from, rng);
                self.handle_install_snapshot(m.from, *snapshot, offset, data, done);
                Ok(())
            }
            MessageBody::TimeoutNow => {
                // Only the leader we follow may hand leadership over.
                if self.role == Role::Follower && self.leader == Some(m.from) {
                    self.events
                        .push(RaftEvent::TransferTimeoutNow { term: self.term });
                    self.campaign(false, true, rng);
                }
                Ok(())
            }
            MessageBody::AppendEntriesResponse { result } => {
                if self.role == Role::Leader {
                    self.handle_append_response(m.from, result);
                }
                Ok(())
            }
            MessageBody::LocalAppended { index } => {
                self.handle_local_appended(index);
                Ok(())
            }
            MessageBody::HeartbeatResponse { read_round } => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_response(m.from, read_round);
                }
                Ok(())
            }
            MessageBody::InstallSnapshotResponse {
                snapshot,
                next_offset,
            } => {
                if self.role == Role::Leader {
                    self.handle_snapshot_response(m.from, *snapshot, next_offset);
                }
                Ok(())
            }
        }
    }

    /// A message from the leader of the current term: a candidate steps down (Raft
    /// §5.2) and the election timer restarts.
    fn follow(&mut self, leader: NodeId, rng: &mut Rng) {
        if self.role != Role::Follower || self.leader != Some(leader) {
            let term = self.term;
            self.become_follower(term, Some(leader), rng);
        }
        self.election_elapsed = 0;
    }

    // ----- elections -------------------------------------------------------------------

    fn handle_request_vote(
        &mut self,
        from: NodeId,
        msg_term: u64,
        pre_vote: bool,
        last_log_index: u64,
        last_log_term: u64,
    ) {
        // Raft §5.2: one vote per term, first come first served; thesis §9.6: a pre-vote
        // for a later term commits to nothing.
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && msg_term > self.term);
        // Raft §5.4.1: only for a candidate whose log is at least as up-to-date.
        let granted = can_vote && self.log.is_up_to_date(last_log_index, last_log_term);
        if granted {
            if !pre_vote {
                self.vote = Some(from);
                self.election_elapsed = 0;
            }
            self.send(
                from,
                msg_term,
                MessageBody::RequestVoteResponse {
                    pre_vote,
                    granted: true,
                },
            );
        } else {
            let term = self.term;
            self.send(
                from,
                term,
                MessageBody::RequestVoteResponse {
                    pre_vote,
                    granted: false,
                },
            );
        }
    }

    fn handle_vote_response(&mut self, from: NodeId, pre_vote: bool, granted: bool, rng: &mut Rng) {
        let expected = if pre_vote {
            Role::PreCandidate
        } else {
            Role::Candidate
        };
        if self.role != expected {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        match self.joint_vote() {
            VoteOutcome::Won if pre_vote => self.campaign(false, false, rng),
            VoteOutcome::Won => self.become_leader(),
            VoteOutcome::Lost => {
                let term = self.term;
                self.become_follower(term, None, rng);
            }
            VoteOutcome::Pending => {}
        }
    }

    // ----- replication: follower side ---------------------------------------------------

    fn handle_append_entries(
        &mut self,
        leader: NodeId,
        prev_log_index: u64,
        prev_log_term: u64,
        entries: &[Entry],
        leader_commit: u64,
    ) -> Result<(), RaftError> {
        let term = self.term;
        if prev_log_index < self.log.committed {
            // Everything up to our commit index already matches the leader (§5.4.3).
            let match_index = self.log.committed;
            self.send(
                leader,
                term,
                MessageBody::AppendEntriesResponse {
                    result: AppendResult::Accepted { match_index },
                },
            );
            return Ok(());
        }
        match self
            .log
            .maybe_append(prev_log_index, prev_log_term, leader_commit, entries)?
        {
            Some(match_index) => {
                let conf_entry_lost =
                    self.conf_index > 0 && self.log.term(self.conf_index) != Some(self.conf_term);
                if conf_entry_lost || entries.iter().any(|e| e.kind == EntryKind::ConfChange) {
                    self.recompute_config();
                }
                self.send(
                    leader,
                    term,
                    MessageBody::AppendEntriesResponse {
                        result: AppendResult::Accepted { match_index },
                    },
                )
            }
            None => {
                let hint = prev_log_index.min(self.log.last_index());
                let conflict_hint_index = self.log.find_conflict_by_term(hint, prev_log_term);
                let conflict_hint_term = self.log.term(conflict_hint_index).unwrap_or(0);
                self.send(
                    leader,
                    term,
                    MessageBody::AppendEntriesResponse {
                        result: AppendResult::Rejected {
                            prev_log_index,
                            conflict_hint_index,
                            conflict_hint_term,
                        },
                    },
                );
            }
        }
        Ok(())
    }

    fn handle_install_snapshot(
        &mut self,
        leader: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) {
        let term = self.term;
        if meta.index <= self.log.committed {
            // We already hold everything it covers.
            self.incoming_snapshot = None;
            let match_index = self.log.committed;
            self.send(
                leader,
                term,
                MessageBody::AppendEntriesResponse {
                    result: AppendResult::Accepted { match_index },
                },
            );
            return;
        }
        if offset == 0 {
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta,
                data: Vec::new(),
            });
        }
        let Some(inc) = self.incoming_snapshot.as_mut().filter(|i| i.meta == meta) else {
            self.send(
                leader,
                term,
                MessageBody::InstallSnapshotResponse {
                    snapshot: Box::new(meta),
                    next_offset: 0,
                },
            );
            return;
        };
        if offset != inc.data.len() as u64 {
            let next_offset = inc.data.len() as u64;
            self.send(
                leader,
                term,
                MessageBody::InstallSnapshotResponse {
                    snapshot: Box::new(meta),
                    next_offset,
                },
            );
            return;
        }
        // validate: offset + data.len() <= max_snapshot_bytes, and offset == data.len().
        inc.data.extend_from_slice(&data);
        if !done {
            let next_offset = inc.data.len() as u64;
            self.send(
                leader,
                term,
                MessageBody::InstallSnapshotResponse {
                    snapshot: Box::new(meta),
                    next_offset,
                },
            );
            return;
        }
        let inc = self.incoming_snapshot.take().expect("checked above");
        if self.log.match_term(meta.index, meta.term) {
            // Our log already holds the snapshot's last entry: keep the suffix (§7).
            self.log.commit_to(meta.index);
        } else {
            let snap = Snapshot {
                meta,
                data: inc.data,
            };
            self.log.restore(snap.clone());
            self.recompute_config();
            self.pending_snapshot_record = Some(snap.clone());
            self.pending_restore = Some(snap);
            self.events.push(RaftEvent::SnapshotInstalled {
                index: meta.index,
                term: meta.term,
            });
        }
        // Either way our log now agrees with the leader's up to the snapshot's index.
        self.send(
            leader,
            term,
            MessageBody::AppendEntriesResponse {
                result: AppendResult::Accepted {
                    match_index: meta.index,
                },
            },
        );
    }

    // ----- replication: leader side -----------------------------------------------------

    fn bcast_append(&mut self) {
        let peers = self.replicas();
        for to in peers {
            self.send_append(to, true);
        }
    }

    fn bcast_heartbeat(&mut self) {
        let peers = self.replicas();
        let (term, round, commit) = (self.term, self.read_round, self.log.committed);
        if self.cfg.lease_reads && self.lease_rounds.back().map(|r| r.0) != Some(round) {
            let now = self.leader_ticks;
            self.lease_rounds.push_back((round, now));
            let lease = u64::from(self.cfg.lease_ticks);
            // Rounds sent a whole lease ago can no longer start a valid lease.
            while self
                .lease_rounds
                .front()
                .is_some_and(|&(_, sent)| sent + lease <= now)
            {
                self.lease_rounds.pop_front();
            }
        }
        for to in peers {
            let Some(pr) = self.progress.get_mut(&to) else {
                continue;
            };
            pr.progressed_since_heartbeat = false;
            // Only a commit index the follower is known to hold: its log beyond
            // `match_index` may still diverge from ours.
            let leader_commit = commit.min(pr.match_index);
            self.send(
                to,
                term,
                MessageBody::Heartbeat {
                    leader_commit,
                    read_round: round,
                },
            );
        }
    }

    /// Sends the next AppendEntries (or snapshot chunk) to `to` if its flow control
    /// allows. `send_if_empty`: also when there are no new entries (to carry the commit
    /// index or probe).
    fn send_append(&mut self, to: NodeId, send_if_empty: bool) {
        let max_inflight = self.cfg.max_inflight_msgs;
        let Some(pr) = self.progress.get(&to) else {
            return;
        };
        if pr.is_paused(max_inflight) {
            return;
        }
        let next = pr.next_index;
        assert!(next >= 1, "next_index 0 for {to}");
        let prev_log_index = next - 1;
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            // The entries it needs were compacted: switch to a snapshot (Raft §7).
            let meta = self.log.snapshot.meta;
            if let Some(pr) = self.progress.get_mut(&to) {
                pr.become_snapshot(meta);
            }
            self.events.push(RaftEvent::SnapshotSendStarted {
                to,
                index: meta.index,
            });
            self.send_snapshot_chunk(to);
            return;
        };
        let entries = self.log.slice(
            next,
            self.log.last_index() + 1,
            self.cfg.max_entries_per_msg,
            self.cfg.max_bytes_per_msg,
        );
        if entries.is_empty() && !send_if_empty {
            return;
        }
        let last = entries.last().map(|e| e.index);
        let leader_commit = self.log.committed;
        let term = self.term;
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.sent_entries(last);
        }
        self.send(
            to,
            term,
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            },
        );
    }

    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let Some(pr) = self.progress.get(&to) else {
            return;
        };
        let snap = &self.log.snapshot;
        let meta = pr.snapshot;
        if meta != snap.meta {
            // The snapshot changed while we were sending: start over with the new one.
            let new = snap.meta;
            if let Some(pr) = self.progress.get_mut(&to) {
                pr.become_snapshot(new);
            }
            return self.send_snapshot_chunk(to);
        }
        // Acknowledged offsets beyond the data are refused in check_message.
        let start = usize::try_from(pr.snapshot_offset).unwrap_or(usize::MAX);
        assert!(
            start <= snap.data.len(),
            "snapshot offset {start} beyond {} bytes",
            snap.data.len()
        );
        let end = start
            .saturating_add(self.cfg.snapshot_chunk_bytes)
            .min(snap.data.len());
        let data = snap.data[start..end].to_vec();
        let done = end == snap.data.len();
        let term = self.term;
        self.send(
            to,
            term,
            MessageBody::InstallSnapshot {
                snapshot: Box::new(meta),
                offset: start as u64,
                data,
                done,
            },
        );
    }

    fn handle_append_response(&mut self, from: NodeId, result: AppendResult) {
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        match result {
            AppendResult::Accepted { match_index } => {
                // check_message: match_index <= last_index.
                let old_state = pr.state;
                if !pr.maybe_update(match_index) && old_state != ProgressState::Probe {
                    return;
                }
                match pr.state {
                    ProgressState::Probe => pr.become_replicate(),
                    ProgressState::Snapshot if pr.match_index >= pr.snapshot.index => {
                        pr.become_replicate()
                    }
                    _ => {}
                }
                let caught_up = pr.match_index == last_index;
                if self.maybe_commit() {
                    self.bcast_append();
                }
                // Keep the pipeline full.
                while self.progress.get(&from).is_some_and(|p| {
                    !p.is_paused(self.cfg.max_inflight_msgs) && p.next_index <= last_index
                }) {
                    self.send_append(from, false);
                }
                if caught_up && self.transferee == Some(from) {
                    let term = self.term;
                    self.send(from, term, MessageBody::TimeoutNow);
                }
            }
            AppendResult::Rejected {
                prev_log_index,
                conflict_hint_index,
                conflict_hint_term,
            } => {
                // Skip the follower's whole conflicting term at once: the leader's
                // last index whose term is at most the follower's term at the hint.
                let hint = if conflict_hint_term > 0 {
                    self.log
                        .find_conflict_by_term(conflict_hint_index, conflict_hint_term)
                } else {
                    conflict_hint_index
                };
                let pr = self.progress.get_mut(&from).expect("looked up above");
                if pr.maybe_decr_to(prev_log_index, hint) {
                    self.send_append(from, true);
                }
            }
        }
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        let last_index = self.log.last_index();
        let max_inflight = self.cfg.max_inflight_msgs;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.read_round_acked = pr.read_round_acked.max(read_round);
        let resend = match pr.state {
            // Stop-and-wait snapshot streaming: resend the chunk in case it was lost.
            ProgressState::Snapshot => true,
            ProgressState::Probe => {
                pr.probe_sent = false;
                pr.match_index < last_index
            }
            ProgressState::Replicate => {
                // No progress for a whole heartbeat interval while entries are
                // outstanding: they were probably lost. Re-probe from the match index.
                let stalled = pr.match_index < last_index && !pr.progressed_since_heartbeat;
                if stalled {
                    pr.become_probe();
                } else if pr.inflights.len() >= max_inflight {
                    pr.inflights.pop_front();
                }
                stalled
            }
        };
        if resend {
            if self.progress.get(&from).map(|p| p.state) == Some(ProgressState::Snapshot) {
                self.send_snapshot_chunk(from);
            } else {
                self.send_append(from, true);
            }
        }
        self.release_reads();
    }

    fn handle_snapshot_response(&mut self, from: NodeId, meta: SnapshotMeta, next_offset: u64) {
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if pr.state != ProgressState::Snapshot || pr.snapshot != meta {
            return;
        }
        pr.snapshot_offset = next_offset;
        self.send_snapshot_chunk(from);
    }

    /// Advances the commit index to the highest index a quorum holds, but only if that
    /// entry is from the current term (Raft §5.4.2: never commit an earlier term's entry
    /// by counting replicas). Returns whether it advanced.
    ///
    /// While joint the candidate is the highest index held by a majority of the
    /// incoming voters *and* a majority of the outgoing ones (thesis §4.3): the smaller
    /// of the two sets' majority indexes.
    fn maybe_commit(&mut self) -> bool {
        let candidate = self.joint_committed_index();
        if candidate <= self.log.committed {
            return false;
        }
        let current_term = self.log.term(candidate) == Some(self.term);
        if !current_term && !self.cfg.unsafe_commit_previous_term_by_count {
            return false;
        }
        self.log.commit_to(candidate);
        if self.log.term(self.log.committed) == Some(self.term) {
            let waiting = std::mem::take(&mut self.reads_awaiting_commit);
            for ctx in waiting {
                self.start_read(ctx);
            }
        }
        self.maybe_auto_leave();
        true
    }

    /// etcd's `autoLeave`: a leader in a joint configuration entered with
    /// [`crate::JointChange::auto_leave`] proposes [`ConfChange::LeaveJoint`] as soon as
    /// the joint entry is committed (and it committed an entry of its term, like any
    /// change). Called whenever the commit index advances and on every leader tick, so
    /// that a leave refused for a moment (a transfer, the uncommitted limit) is retried
    /// and a new leader finishes what its predecessor entered.
    fn maybe_auto_leave(&mut self) {
        if self.role != Role::Leader
            || !self.conf.is_joint()
            || !self.conf.auto_leave
            || self.conf_index > self.log.committed
        {
            return;
        }
        // Refused only for a moment (see above); the next tick or commit retries.
        let _ = self.propose_conf_change(ConfChange::LeaveJoint);
    }
}

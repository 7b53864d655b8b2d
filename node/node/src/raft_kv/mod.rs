//! `raft`: the replicated key-value system — [`KvStore`] replicated by Raft, as one
//! sans-IO [`Protocol`].
//!
//! ## Groups
//!
//! A node runs [`RaftKvConfig::groups`] Raft groups (one by default), every one over all
//! the nodes; a key belongs to group `fnv1a(key) mod groups` ([`RaftKv::group_of`]), so
//! every node routes a request to the same group. Each group has its own log, store,
//! leader and durable state (its own snapshot; its records share the node's WAL, see
//! kvlab-storage), and client requests, recovery and admin commands all name their
//! group. The ring of issue "composed node" replaces the fixed hash with placement.
//!
//! ## How a request is served
//!
//! * **Writes, cas, deletes** (and reads in [`ReadMode::Log`]): the leader proposes an
//!   encoded [`KvCommand`] and remembers the request by the entry's `(term, index)`. When
//!   the entry at that index is applied, the command runs against the [`KvStore`] (whose
//!   session table makes a retried request take effect at most once) and the proposer
//!   answers with the result if the applied entry carries the proposal's term, and with
//!   `Indeterminate` if another term's entry took the index (the request may still have
//!   been committed through a retry). A deposed leader keeps waiting for the entry until
//!   the request timeout, so that it can still give a definite answer if the entry
//!   survives; then it answers `Indeterminate`.
//! * **Reads** in [`ReadMode::ReadIndex`] (thesis §6.4): the leader asks
//!   [`kvlab_raft::RaftGroup::read_index`] for a read point, and serves the read from its
//!   store once it has applied up to that index. A read aborted by a step-down, or not
//!   served within the request timeout, is answered `Unavailable` (a read has no effect,
//!   so failing it is always safe).
//! * **On a follower**: a client request is forwarded once to the leader this node knows
//!   of (through [`Forwarder`], which answers `Indeterminate` when the leader does not
//!   answer within the forward timeout). A forwarded request that reaches a non-leader is
//!   not forwarded again (no forwarding loops): it is answered `Unavailable` with the
//!   leader as hint. With no known leader the answer is `Unavailable { hint: None }`.
//!   When the node learns of a new leader while a forward to the old one is pending, it
//!   forwards the request once more, to the new leader, instead of letting the client
//!   wait out the forward timeout: a leader crash then costs clients about an election,
//!   not `forward_timeout_ms`. Forwarding twice is safe because the store's session
//!   table applies a request id at most once, and the client gets the first answer.
//!
//! ## Durability and ordering
//!
//! After every input the node drains [`kvlab_raft::Ready`]s:
//! [`Ready::emit_effects_saving_snapshots`] emits `Persist…, Sync, Send…, Event…`, and
//! the node restores a snapshot, applies the committed entries and serves reads. With
//! `parallel_leader_append` (the default here) a committed entry is durable on a quorum
//! before anyone applies it, so the node applies and answers *before* that `Ready`'s
//! effects ([`kvlab_raft::Ready::apply_before_sync`]): an answer waits for the barriers
//! of earlier batches, never for the fsync of the commit-index record the same `Ready`
//! persists. Without it the leader counts its own unsynced entries, and every answer is
//! pushed after the `Sync` of the `Ready` that made it possible, so the driver releases
//! it only once the state it reveals is durable.
//!
//! Every `snapshot_every_entries` applied entries the node compacts its log into an
//! encoded [`KvStore`] and then replaces the group's durable snapshot
//! (`Effect::SaveSnapshot` of that group) with an image of the group's whole durable
//! Raft state (snapshot, remaining entries, hard state), so the WAL does not grow without
//! bound. A snapshot installed from the leader is saved the same way, before the `Sync`
//! that precedes the follower's answer. A snapshot is never one WAL record: it is as
//! large as the store, and a record is at most `MAX_RECORD_BYTES` (4 MiB). At boot each
//! group's image records are replayed before its WAL records.
//!
//! A node that cannot decode its durable state refuses to serve (every request is
//! answered `Unavailable`), reports a `recovery_failed` event and takes no part in
//! the protocol: answering from a state known to be incomplete could break
//! linearizability, and voting with a forgotten vote could break Raft.
//!
//! ## Membership (operator commands)
//!
//! [`Protocol::on_admin`] takes [`AdminCommand`]s for a group: on its leader, `AddLearner`,
//! `AddVoter` and `RemoveNode` become single-server configuration changes
//! ([`RaftGroup::propose_conf_change`]), `EnterJoint { promote, demote, auto_leave }` and
//! `LeaveJoint` the two steps of joint consensus (`ConfChange::EnterJoint` with
//! `JointChange::replace_voter`, `ConfChange::LeaveJoint`) and `TransferLeader` a leader
//! transfer. Any other
//! node **refuses** a command (event `admin_refused`, with the leader it knows as
//! `leader=`): the operator retries at the leader, so a command is never applied twice
//! through forwarding. Results are events: `admin_proposed` (entry index and term),
//! `config_changed` (on every node, when the configuration in effect changes),
//! `config_committed` (when a configuration entry is applied), `admin_refused`.
//!
//! A node that is not a member of the configuration in effect (never added, or
//! removed) serves no client (`Unavailable`, hint: the leader it knows). A removed node
//! usually never sees its own removal (the leader stops replicating to it at once), so
//! when a leader hears a vote request from a non-member it answers
//! [`RaftKvMsg::NotMember`]; the removed node then stops ticking its group (no more
//! campaigns) and refuses clients until its log has caught up past that configuration,
//! which happens only if it is added back.
//!
//! With [`RaftKvConfig::initial_voters`] `= k`, only the first `k` nodes (by id) are the
//! bootstrap voters; the others start as outsiders and join through `AddLearner` then
//! `AddVoter`, so experiments can grow and shrink the group.
//!
//! [`Ready::emit_effects_saving_snapshots`]: kvlab_raft::Ready::emit_effects_saving_snapshots

use std::collections::BTreeMap;
use std::time::Duration;

use kvlab_raft::{
    ConfChange, EntryId, GroupId, JointChange, MAX_INDEX, MessageBody, RaftConfig, RaftError,
    RaftGroup, RaftMessage, RecoveredState, Role,
};
use kvlab_types::{
    AdminAction, AdminCommand, ClientError, ClientRequest, ClientResponse, Cx, Effect,
    InvalidRequest, KvOp, MAX_REQUEST_BYTES, NodeEvent, NodeId, Out, Protocol, Recovery, RequestId,
    Time, TimerId, TimerSpace,
};
use serde::{Deserialize, Serialize};

use crate::etcd::EtcdRequest;
use crate::fnv1a;
use crate::forward::{ForwardMsg, Forwarder};
use crate::kv::KvStore;

pub mod invariants;

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;

pub use crate::replica::KvCommand;
use crate::replica::{
    Origin, Removal, Replica, ReplicaError, ReplicaTuning, decode_wal_image, indeterminate,
    invalid, read_ok, unavailable,
};

/// The group of a single-group node (every key's group when [`RaftKvConfig::groups`] is
/// 1).
pub const DEFAULT_GROUP: GroupId = GroupId::DEFAULT;

/// The timer that drives every group's [`RaftGroup::tick`]. The [`Forwarder`]'s timers
/// live in their own space.
pub const TICK_TIMER: TimerId = TimerId::new(TimerSpace::Node, 0);

/// The most client requests one node keeps waiting for a commit or a read point at
/// once (over all its groups); beyond it new requests are refused with `Unavailable`
/// instead of queued without bound.
pub const MAX_PENDING_REQUESTS: usize = 65_536;

/// The most Raft groups one `raft` node runs.
pub const MAX_GROUPS: u32 = 1024;

/// How reads are made linearizable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReadMode {
    /// ReadIndex (thesis §6.4): the leader confirms its leadership with a quorum
    /// round and serves the read locally once applied up to the commit index it had.
    #[default]
    ReadIndex,
    /// Reads are proposed and applied like writes: slower, the simplest correct way.
    Log,
}

/// Configuration of the `raft` system, the same on every node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftKvConfig {
    /// The Raft groups' tuning (election and heartbeat ticks, limits) and its
    /// deliberately broken switches (`unsafe_commit_previous_term_by_count`,
    /// `unsafe_skip_vote_persist`), passed through unchanged.
    pub raft: RaftConfig,
    /// The leader writes its log in parallel with replication (Raft thesis §10.2.1,
    /// [`RaftConfig::parallel_leader_append`]): its appends leave before its own fsync,
    /// and it counts itself only once that fsync returned. On by default here (the Raft
    /// library's own default is off); this field, not `raft.parallel_leader_append`,
    /// decides for the `raft` system, so a `[raft.raft]` table cannot turn it off by
    /// leaving it out.
    pub parallel_leader_append: bool,
    /// How many Raft groups the key space is split into (each over every node).
    pub groups: u32,
    /// Real time between two Raft ticks: the election timeout is
    /// `raft.election_ticks * tick_interval_ms` (randomized up to twice that).
    pub tick_interval_ms: u64,
    /// How long a follower waits for the leader's answer to a forwarded request before
    /// it tells the client the outcome is unknown.
    pub forward_timeout_ms: u64,
    /// How long the leader waits for a proposal to be applied, or a read to be served,
    /// before it answers `Indeterminate` (writes) or `Unavailable` (reads).
    pub request_timeout_ms: u64,
    /// How reads are served.
    pub read_mode: ReadMode,
    /// Compact a group's log into a snapshot every this many applied entries (0: never).
    pub snapshot_every_entries: u64,
    /// **Deliberately broken, tests only.** Every node answers reads at once from its own
    /// store, without a read point: a partitioned follower or a deposed leader returns
    /// stale values. The linearizability checker must catch it.
    pub unsafe_local_reads: bool,
    /// How many nodes (the first ones by id) are each group's bootstrap voters; the
    /// others start outside the groups and join through admin commands (`AddLearner`,
    /// then `AddVoter`). 0 (the default) or more than the cluster size: every node.
    pub initial_voters: u32,
}

impl Default for RaftKvConfig {
    fn default() -> Self {
        RaftKvConfig {
            raft: RaftConfig::default(),
            parallel_leader_append: true,
            groups: 1,
            tick_interval_ms: 10,
            forward_timeout_ms: 1_000,
            request_timeout_ms: 1_000,
            read_mode: ReadMode::ReadIndex,
            snapshot_every_entries: 1_000,
            unsafe_local_reads: false,
            initial_voters: 0,
        }
    }
}

impl RaftKvConfig {
    fn tuning(&self) -> ReplicaTuning {
        ReplicaTuning {
            snapshot_every_entries: self.snapshot_every_entries,
            skip_vote_persist: self.raft.unsafe_skip_vote_persist,
        }
    }

    /// Checks the configuration once, naming the offending field.
    pub fn validate(&self) -> Result<(), RaftKvError> {
        self.raft.validate().map_err(RaftKvError::Raft)?;
        for (field, v) in [
            ("tick_interval_ms", self.tick_interval_ms),
            ("forward_timeout_ms", self.forward_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
        ] {
            if v == 0 {
                return Err(RaftKvError::InvalidConfig {
                    field,
                    reason: "must be positive".into(),
                });
            }
        }
        if self.raft.max_entry_bytes < MAX_REQUEST_BYTES {
            // Every request that passes ClientRequest::validate must fit one entry, so
            // that Invalid only ever means "the request is too large", never "this
            // cluster is configured too small".
            return Err(RaftKvError::InvalidConfig {
                field: "raft.max_entry_bytes",
                reason: format!(
                    "must hold the largest valid request: at least {MAX_REQUEST_BYTES} \
                     (MAX_REQUEST_BYTES), got {}",
                    self.raft.max_entry_bytes
                ),
            });
        }
        if self.groups == 0 || self.groups > MAX_GROUPS {
            return Err(RaftKvError::InvalidConfig {
                field: "groups",
                reason: format!(
                    "must be in 1..={MAX_GROUPS} (MAX_GROUPS), got {}",
                    self.groups
                ),
            });
        }
        Ok(())
    }
}

/// What can go wrong at this module's boundary. None of it panics: a node that hits one
/// at boot refuses to serve and reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftKvError {
    /// A field of [`RaftKvConfig`] is out of range.
    #[error("invalid raft-kv config: field `{field}`: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The Raft layer refused (bad config, corrupt WAL record).
    #[error(transparent)]
    Raft(RaftError),
    /// A group's durable snapshot (its WAL image) cannot be decoded.
    #[error("cannot decode the durable snapshot of group {group}: {reason}")]
    CorruptSnapshot {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
    /// A group's replica cannot go on (a snapshot that does not decode).
    #[error(transparent)]
    Replica(ReplicaError),
}

/// The messages of the `raft` system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftKvMsg {
    /// A Raft message between members of a group.
    Raft(RaftMessage),
    /// A forwarded client request or its answer.
    Forward(ForwardMsg),
    /// A leader tells a node that asked for votes that it is not a member of the
    /// configuration in effect (entry `conf_index`): it was removed and should stop
    /// campaigning until its log reaches past that entry.
    NotMember {
        /// The group.
        group: GroupId,
        /// The index of the leader's configuration entry in effect.
        conf_index: u64,
    },
}

/// A request this node forwarded to its group's leader and is waiting on.
#[derive(Clone, Debug)]
struct PendingForward {
    group: GroupId,
    to: NodeId,
    req: ClientRequest,
    /// When the forwarder gives up on it (then it is forgotten here too).
    deadline: Time,
    /// Whether it was already re-forwarded once (it is never forwarded a third time).
    reforwarded: bool,
}

/// A node of the `raft` system. See [the module docs](self).
#[derive(Debug)]
pub struct RaftKv {
    id: NodeId,
    cfg: RaftKvConfig,
    groups: BTreeMap<GroupId, Replica<KvStore>>,
    forwarder: Forwarder,
    /// Local requests forwarded to a leader and not answered yet, for re-forwarding
    /// when the leader changes. Bounded by the forwarder's `MAX_PENDING_FORWARDS`.
    forwards: BTreeMap<RequestId, PendingForward>,
    /// The leader of each group this node knew after its last step, to notice a change.
    known_leaders: BTreeMap<GroupId, Option<NodeId>>,
    /// Set when boot could not rebuild the durable state: the node then refuses to serve.
    poisoned: Option<String>,
    next_read_ctx: u64,
    /// Messages from peers dropped (another group, a sender that disagrees with the
    /// transport, impossible logs, refused ones below).
    dropped_messages: u64,
    /// Of those, messages refused as malformed or implausible (a term or index out of
    /// range, a sender that disagrees with the transport): reported as
    /// `message_refused` events at the 1st, 2nd, 4th, 8th, … refusal.
    refused_messages: u64,
    /// A batched step ([`Cx::batched`]) proposed or asked for a read without draining
    /// the `Ready`s: [`Protocol::end_batch`] drains them once for the whole batch.
    drive_at_batch_end: bool,
}

impl RaftKv {
    /// The groups this node runs, in order (none on a node that failed to recover).
    pub fn group_ids(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }

    /// The group `key` belongs to: `fnv1a(key) mod groups`, the same on every node.
    pub fn group_of(&self, key: &str) -> GroupId {
        group_of_key(key, self.cfg.groups)
    }

    /// The Raft member of `group` (`None` if this node does not run it).
    pub fn raft(&self, group: GroupId) -> Option<&RaftGroup> {
        self.groups.get(&group).map(|g| &g.raft)
    }

    /// The Raft member of the default group (`None` on a node that failed to recover).
    pub fn group(&self) -> Option<&RaftGroup> {
        self.raft(DEFAULT_GROUP)
    }

    /// This node's role in the default group (`Follower` on a node that failed to
    /// recover).
    pub fn role(&self) -> Role {
        self.group().map_or(Role::Follower, RaftGroup::role)
    }

    /// Whether this node leads the default group.
    pub fn is_leader(&self) -> bool {
        self.role() == Role::Leader
    }

    /// The current term of the default group.
    pub fn term(&self) -> u64 {
        self.group().map_or(0, RaftGroup::term)
    }

    /// The leader this node follows in the default group, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.group().and_then(RaftGroup::leader)
    }

    /// The sum of every group's commit index (for status pages: it grows as any group
    /// commits).
    pub fn commit_index(&self) -> u64 {
        self.groups.values().map(|g| g.raft.commit_index()).sum()
    }

    /// The last index applied to `group`'s store.
    pub fn applied_index_of(&self, group: GroupId) -> u64 {
        self.groups.get(&group).map_or(0, |g| g.applied)
    }

    /// The sum of every group's applied index: two nodes that applied the same entries
    /// of every group report the same sum.
    pub fn applied_index(&self) -> u64 {
        self.groups.values().map(|g| g.applied).sum()
    }

    /// The state machine of `group`.
    pub fn store_of(&self, group: GroupId) -> Option<&KvStore> {
        self.groups.get(&group).map(|g| &g.machine)
    }

    /// Keys stored over every group.
    pub fn key_count(&self) -> usize {
        self.groups.values().map(|g| g.machine.len()).sum()
    }

    /// Why this node refuses to serve, if it does.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Requests waiting on this node for a commit or a read point.
    pub fn pending_requests(&self) -> usize {
        self.groups.values().map(Replica::pending).sum()
    }

    /// Peer messages dropped: refused (see [`RaftKv::refused_messages`]), for a group
    /// this node does not run, or stale.
    pub fn dropped_messages(&self) -> u64 {
        self.dropped_messages
    }

    /// Peer messages refused as malformed or implausible (a term above `MAX_TERM`, an
    /// index beyond the log, a sender field that disagrees with the transport, …).
    /// Zero in a run without forged or corrupted messages.
    pub fn refused_messages(&self) -> u64 {
        self.refused_messages
    }

    /// Counts a refused message and reports it when the count is a power of two, so a
    /// flood costs events logarithmic in its size.
    fn refuse(&mut self, from: NodeId, reason: String, out: &mut Out<RaftKvMsg>) {
        self.dropped_messages += 1;
        self.refused_messages += 1;
        if self.refused_messages.is_power_of_two() {
            out.event(NodeEvent::MessageRefused {
                from,
                reason,
                refused_total: self.refused_messages,
            });
        }
    }

    /// Whether this node serves `group`'s clients and takes part in it: it is a voter or
    /// learner of the configuration in effect, and no leader told it that it was removed
    /// by an entry its log has not reached.
    pub fn is_member_of(&self, group: GroupId) -> bool {
        self.groups
            .get(&group)
            .is_some_and(|g| g.is_member(self.id))
    }

    /// A digest (FNV-1a over the encoded store) of `group`'s state machine at its applied
    /// index. Two replicas that applied the same sequence of entries have the same
    /// digest; invariant checkers compare them by applied index.
    pub fn store_digest(&self, group: GroupId) -> u64 {
        self.store_of(group)
            .map_or(0, |kv| fnv1a(&kv.encode_image()))
    }

    /// A digest of the entry at `index` of `group`'s log (its term, kind and data), if
    /// the log still holds it; for log-matching checks.
    pub fn entry_digest(&self, group: GroupId, index: u64) -> Option<u64> {
        crate::replica::entry_digest(self.raft(group)?, index)
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.request_timeout_ms)
    }

    /// Builds every group from its durable state; an error poisons the node.
    fn recover_groups(
        &mut self,
        cx: &mut Cx<'_>,
        peers: &[NodeId],
        recovered: &Recovery,
    ) -> Result<(), RaftKvError> {
        self.cfg.validate()?;
        let bootstrap = bootstrap_voters(peers, self.cfg.initial_voters);
        for n in 0..u64::from(self.cfg.groups) {
            let group = GroupId(n);
            let durable = recovered.group(group);
            let mut wal: Vec<Vec<u8>> = Vec::new();
            if let Some(bytes) = &durable.snapshot {
                let records = decode_wal_image(bytes)
                    .map_err(|reason| RaftKvError::CorruptSnapshot { group, reason })?;
                wal.extend(records);
            }
            wal.extend(durable.records);
            let state = RecoveredState::from_wal(group, &wal).map_err(RaftKvError::Raft)?;
            let raft = RaftGroup::recover(
                group,
                cx.id,
                &bootstrap,
                RaftConfig {
                    parallel_leader_append: self.cfg.parallel_leader_append,
                    ..self.cfg.raft.clone()
                },
                state,
                cx.rng,
            )
            .map_err(RaftKvError::Raft)?;
            self.groups
                .insert(group, Replica::new(raft, KvStore::default()));
        }
        Ok(())
    }

    fn poison(&mut self, why: String, out: &mut Out<RaftKvMsg>) {
        out.event(NodeEvent::RecoveryFailed {
            reason: why.clone(),
        });
        for mut g in std::mem::take(&mut self.groups).into_values() {
            g.abandon("node lost its state");
            deliver(&mut g, out);
        }
        self.poisoned = Some(why);
    }

    /// Serves a request from a local client or forwarded by `origin`, in its group.
    fn serve(
        &mut self,
        cx: &mut Cx<'_>,
        req: ClientRequest,
        origin: Origin,
        out: &mut Out<RaftKvMsg>,
    ) {
        if let Err(reason) = req.validate() {
            // Refused at the edge, before it can reach a log (or a forward).
            respond(origin, invalid(req.id, reason), out);
            return;
        }
        if let Some(why) = &self.poisoned {
            let reason = format!("node cannot recover its durable state: {why}");
            respond(origin, unavailable(req.id, &reason, None), out);
            return;
        }
        if let KvOp::Etcd(_) = &req.op
            && self.cfg.groups != 1
        {
            // etcd's revisions are global: one group holds the whole etcd keyspace.
            respond(origin, invalid(req.id, InvalidRequest::EtcdNotServed), out);
            return;
        }
        if let KvOp::Txn { .. } = &req.op {
            respond(origin, invalid(req.id, InvalidRequest::TxnNotServed), out);
            return;
        }
        let group = self.group_of(req.op.key());
        let me = self.id;
        let Some(g) = self.groups.get_mut(&group) else {
            respond(origin, unavailable(req.id, "group not here", None), out);
            return;
        };
        if let (true, KvOp::Read { key }) = (self.cfg.unsafe_local_reads, &req.op) {
            let value = g.machine.get(key);
            respond(origin, read_ok(req.id, value), out);
            return;
        }
        if !g.is_member(me) {
            let hint = g.raft.leader().filter(|&l| l != me);
            let resp = unavailable(req.id, "this node is not a member of its group", hint);
            respond(origin, resp, out);
            return;
        }
        if let KvOp::Etcd(op) = &req.op
            && EtcdRequest::from_op(op).is_ok_and(|r| r.is_serializable_read())
        {
            // etcd's `serializable` range: this replica's state, no read point.
            let result = g.machine.query(&req.op);
            respond(origin, ClientResponse { id: req.id, result }, out);
            return;
        }
        if g.raft.role() != Role::Leader {
            let leader = g.raft.leader().filter(|&l| l != me);
            self.forward_or_refuse(cx.now, group, leader, req, origin, out);
            return;
        }
        if self.pending_requests() >= MAX_PENDING_REQUESTS {
            let reason = format!("too many requests pending ({MAX_PENDING_REQUESTS})");
            respond(origin, unavailable(req.id, &reason, None), out);
            return;
        }
        let deadline = cx.now + self.request_timeout();
        let ctx = self.next_read_ctx;
        let read_index = self.cfg.read_mode == ReadMode::ReadIndex;
        if let Some(g) = self.groups.get_mut(&group) {
            if g.start(req, origin, deadline, read_index, ctx) {
                self.next_read_ctx += 1;
            }
            deliver(g, out);
        }
    }

    /// A follower forwards a local client's request once to the group's leader; a
    /// forwarded request (or one with no leader known) is refused with a hint.
    fn forward_or_refuse(
        &mut self,
        now: Time,
        group: GroupId,
        leader: Option<NodeId>,
        req: ClientRequest,
        origin: Origin,
        out: &mut Out<RaftKvMsg>,
    ) {
        match (leader, origin) {
            (Some(leader), Origin::Local) => {
                let before = self.forwarder.pending();
                let id = req.id;
                self.forwarder
                    .forward(leader, req.clone(), out, RaftKvMsg::Forward);
                if self.forwarder.pending() > before {
                    let deadline = now + Duration::from_millis(self.cfg.forward_timeout_ms);
                    let pending = PendingForward {
                        group,
                        to: leader,
                        req,
                        deadline,
                        reforwarded: false,
                    };
                    self.forwards.insert(id, pending);
                }
            }
            (hint, _) => {
                let reason = match hint {
                    Some(_) => "not the leader (a forwarded request is not forwarded again)",
                    None => "no leader known",
                };
                respond(origin, unavailable(req.id, reason, hint), out);
            }
        }
    }

    /// After a client request was served: drains the `Ready`s now, or in a batched step
    /// once at the end of the batch, so that the batch's proposals and read requests go
    /// out together (one AppendEntries per follower, one ReadIndex round).
    fn drive_now_or_at_batch_end(&mut self, cx: &Cx<'_>, out: &mut Out<RaftKvMsg>) {
        if cx.batched {
            self.drive_at_batch_end = true;
        } else {
            self.drive(out);
        }
    }

    /// Drains every group's `Ready`s: effects first (persist, sync, send, events), then
    /// restore, apply, serve reads, and compact when due.
    fn drive(&mut self, out: &mut Out<RaftKvMsg>) {
        let mut poison = None;
        let tuning = self.cfg.tuning();
        for g in self.groups.values_mut() {
            let driven = g.drive(tuning, out, RaftKvMsg::Raft);
            deliver(g, out);
            if let Err(e) = driven {
                poison = Some(e.to_string());
                break;
            }
        }
        if let Some(why) = poison {
            self.poison(why, out);
        }
    }

    /// After a step: for every group whose leader changed to another node, forwards the
    /// requests still waiting on the old one to the new one (once per request).
    fn reforward_on_leader_change(&mut self, now: Time, out: &mut Out<RaftKvMsg>) {
        let timeout = Duration::from_millis(self.cfg.forward_timeout_ms);
        for (&group, g) in &self.groups {
            let leader = g.raft.leader();
            let known = self.known_leaders.entry(group).or_insert(None);
            if leader == *known {
                continue;
            }
            *known = leader;
            let Some(new) = leader else {
                continue; // no leader yet: the forwards wait
            };
            // When this node is the new leader it forwards to itself: the request comes
            // back as a forwarded one and is served here, through the same bookkeeping.
            for f in self.forwards.values_mut() {
                if f.group == group && f.to != new && !f.reforwarded {
                    self.forwarder
                        .forward(new, f.req.clone(), out, RaftKvMsg::Forward);
                    f.to = new;
                    f.reforwarded = true;
                    f.deadline = now + timeout;
                }
            }
        }
    }

    /// Answers every request whose deadline passed.
    fn expire(&mut self, now: Time, out: &mut Out<RaftKvMsg>) {
        self.forwards.retain(|_, f| f.deadline > now);
        for g in self.groups.values_mut() {
            g.expire(now);
            deliver(g, out);
        }
    }

    fn on_raft_message(
        &mut self,
        cx: &mut Cx<'_>,
        from: NodeId,
        m: RaftMessage,
        out: &mut Out<RaftKvMsg>,
    ) {
        if self.poisoned.is_some() {
            return;
        }
        if m.from != from {
            let reason = format!("raft message claims sender {} but came from {from}", m.from);
            self.refuse(from, reason, out);
            self.drive(out);
            return;
        }
        match self.groups.get_mut(&m.group) {
            Some(g) => {
                let asks_votes = matches!(m.body, MessageBody::RequestVote { .. });
                let group = m.group;
                match g.raft.step(m, cx.rng) {
                    Ok(()) => {}
                    Err(RaftError::MalformedMessage { from, defect }) => {
                        self.refuse(from, format!("group {group}: {defect}"), out);
                    }
                    Err(_) => self.dropped_messages += 1,
                }
                let Some(g) = self.groups.get_mut(&group) else {
                    return;
                };
                if asks_votes && g.raft.role() == Role::Leader && !g.raft.is_member(from) {
                    // A removed node campaigns because it never saw its removal.
                    let conf_index = g.raft.conf_index();
                    out.send(from, RaftKvMsg::NotMember { group, conf_index });
                }
            }
            // A message for a group this node does not run: dropped and counted.
            None => self.dropped_messages += 1,
        }
        self.drive(out);
        self.reforward_on_leader_change(cx.now, out);
    }

    fn on_forward_reply(
        &mut self,
        from: NodeId,
        mut resp: ClientResponse,
        out: &mut Out<RaftKvMsg>,
    ) {
        if let Some(f) = self.forwards.get(&resp.id)
            && f.reforwarded
            && matches!(resp.result, Err(ClientError::Unavailable { .. }))
        {
            // One copy was refused, but the other may still take effect: "surely did
            // not happen" would be a lie.
            if f.to != from {
                return; // the old leader's refusal: wait for the new one's answer
            }
            resp = indeterminate(
                resp.id,
                "refused after re-forwarding; the first copy may still commit",
            );
        }
        self.forwards.remove(&resp.id);
        self.forwarder.on_reply(resp, out);
    }

    fn on_not_member(
        &mut self,
        from: NodeId,
        group: GroupId,
        conf_index: u64,
        out: &mut Out<RaftKvMsg>,
    ) {
        if conf_index > MAX_INDEX {
            let reason =
                format!("group {group}: not-member conf_index {conf_index} is above MAX_INDEX");
            self.refuse(from, reason, out);
            return;
        }
        match self.groups.get_mut(&group) {
            // Only an answer to this node's own campaign: a leader sends it in reply to a
            // vote request, so a node that is not campaigning ignores it (stale, or
            // forged to silence a healthy member).
            Some(g)
                if g.raft.conf_index() < conf_index
                    && matches!(g.raft.role(), Role::PreCandidate | Role::Candidate) =>
            {
                if !g.told_removed() {
                    out.event(NodeEvent::NodeRemoved {
                        group,
                        told_by: from,
                        conf_index,
                        local_conf_index: g.raft.conf_index(),
                    });
                }
                let at = g
                    .removed_by_conf
                    .map_or(conf_index, |r| r.conf_index.max(conf_index));
                g.removed_by_conf = Some(Removal {
                    conf_index: at,
                    term: g.raft.term(),
                });
            }
            Some(_) => {}
            None => self.dropped_messages += 1,
        }
    }
}

/// The group `key` belongs to among `groups`: FNV-1a of its bytes, mod `groups`.
pub fn group_of_key(key: &str, groups: u32) -> GroupId {
    GroupId(fnv1a(key.as_bytes()) % u64::from(groups.max(1)))
}

/// The bootstrap voters: the first `initial_voters` of the sorted `peers` (all of them
/// when 0 or too many). Every node computes the same list.
fn bootstrap_voters(peers: &[NodeId], initial_voters: u32) -> Vec<NodeId> {
    let mut v = peers.to_vec();
    v.sort_unstable();
    let k = initial_voters as usize;
    if k > 0 && k < v.len() {
        v.truncate(k);
    }
    v
}

/// Delivers an answer to a local client (`Reply`) or to the node that forwarded the
/// request (`Send`); both wait behind any earlier `Sync` of the step.
fn respond(origin: Origin, resp: ClientResponse, out: &mut Out<RaftKvMsg>) {
    match origin {
        Origin::Local => out.push(Effect::Reply(resp)),
        Origin::Forwarded(to) => {
            out.send(to, RaftKvMsg::Forward(ForwardMsg::ForwardReply { resp }))
        }
    }
}

/// Delivers the answers `g` queued.
fn deliver(g: &mut Replica<KvStore>, out: &mut Out<RaftKvMsg>) {
    for (origin, resp) in g.take_answers() {
        respond(origin, resp, out);
    }
}

impl Protocol for RaftKv {
    type Msg = RaftKvMsg;
    type Config = RaftKvConfig;

    fn boot(
        cx: &mut Cx<'_>,
        config: &RaftKvConfig,
        peers: &[NodeId],
        recovered: Recovery,
        out: &mut Out<RaftKvMsg>,
    ) -> Self {
        let mut node = RaftKv {
            id: cx.id,
            cfg: config.clone(),
            groups: BTreeMap::new(),
            forwarder: Forwarder::new(Duration::from_millis(config.forward_timeout_ms)),
            forwards: BTreeMap::new(),
            known_leaders: BTreeMap::new(),
            poisoned: None,
            next_read_ctx: 0,
            dropped_messages: 0,
            refused_messages: 0,
            drive_at_batch_end: false,
        };
        if let Err(e) = node.recover_groups(cx, peers, &recovered) {
            node.poison(e.to_string(), out);
            return node;
        }
        // Restores the snapshots and re-applies what the commit hints cover.
        node.drive(out);
        out.event(NodeEvent::NodeStarted {
            role: "raft".into(),
            records: recovered.record_count() as u64,
            snapshot: recovered.groups.values().any(|g| g.snapshot.is_some()),
            term: node.term(),
            applied: node.applied_index(),
        });
        if node.poisoned.is_none() {
            out.set_timer(TICK_TIMER, Duration::from_millis(config.tick_interval_ms));
        }
        node
    }

    fn on_msg(&mut self, cx: &mut Cx<'_>, from: NodeId, msg: RaftKvMsg, out: &mut Out<RaftKvMsg>) {
        match msg {
            RaftKvMsg::Raft(m) => self.on_raft_message(cx, from, m, out),
            RaftKvMsg::Forward(ForwardMsg::Forward { req }) => {
                self.serve(cx, req, Origin::Forwarded(from), out);
                self.drive_now_or_at_batch_end(cx, out);
            }
            RaftKvMsg::Forward(ForwardMsg::ForwardReply { resp }) => {
                self.on_forward_reply(from, resp, out)
            }
            RaftKvMsg::NotMember { group, conf_index } => {
                self.on_not_member(from, group, conf_index, out)
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_>, timer: TimerId, out: &mut Out<RaftKvMsg>) {
        if timer != TICK_TIMER {
            self.forwarder.on_timer(timer, out);
            return;
        }
        if self.poisoned.is_some() {
            return;
        }
        for g in self.groups.values_mut() {
            if g.told_removed() {
                continue; // removed: no campaigns until added back
            }
            g.removed_by_conf = None;
            g.raft.tick(cx.rng);
        }
        self.drive(out);
        self.reforward_on_leader_change(cx.now, out);
        self.expire(cx.now, out);
        out.set_timer(TICK_TIMER, Duration::from_millis(self.cfg.tick_interval_ms));
    }

    fn on_client(&mut self, cx: &mut Cx<'_>, req: ClientRequest, out: &mut Out<RaftKvMsg>) {
        self.serve(cx, req, Origin::Local, out);
        self.drive_now_or_at_batch_end(cx, out);
    }

    fn end_batch(&mut self, _cx: &mut Cx<'_>, out: &mut Out<RaftKvMsg>) {
        if std::mem::take(&mut self.drive_at_batch_end) {
            self.drive(out);
        }
    }

    fn on_admin(&mut self, _cx: &mut Cx<'_>, cmd: AdminCommand, out: &mut Out<RaftKvMsg>) {
        let refuse = |reason: String, leader: Option<NodeId>, out: &mut Out<RaftKvMsg>| {
            out.event(NodeEvent::AdminRefused {
                command: cmd,
                leader,
                reason,
            });
        };
        if let Some(why) = &self.poisoned {
            refuse(format!("node cannot recover its state: {why}"), None, out);
            return;
        }
        if cmd.action == AdminAction::Drain {
            // The raft system has no ring to move replicas over.
            out.event(NodeEvent::AdminUnsupported { command: cmd });
            return;
        }
        let Some(g) = self.groups.get_mut(&cmd.group) else {
            refuse(
                format!("this node does not run group {}", cmd.group),
                None,
                out,
            );
            return;
        };
        let result = match cmd.action {
            AdminAction::AddLearner(n) => g.raft.propose_conf_change(ConfChange::AddLearner(n)),
            AdminAction::AddVoter(n) => g.raft.propose_conf_change(ConfChange::AddVoter(n)),
            AdminAction::RemoveNode(n) => g.raft.propose_conf_change(ConfChange::RemoveNode(n)),
            AdminAction::EnterJoint {
                promote,
                demote,
                auto_leave,
            } => g.raft.propose_conf_change(ConfChange::EnterJoint(
                JointChange::replace_voter(promote, demote).with_auto_leave(auto_leave),
            )),
            AdminAction::LeaveJoint => g.raft.propose_conf_change(ConfChange::LeaveJoint),
            AdminAction::TransferLeader(n) => g.raft.transfer_leader(n).map(|()| EntryId {
                term: g.raft.term(),
                index: 0,
            }),
            AdminAction::Drain => return,
        };
        match result {
            Ok(at) => out.event(NodeEvent::AdminProposed {
                command: cmd,
                index: at.index,
                term: at.term,
            }),
            Err(e) => refuse(e.to_string(), g.raft.leader(), out),
        }
        self.drive(out);
    }
}

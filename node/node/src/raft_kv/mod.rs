//! `raft`: the replicated key-value system — [`KvStore`] replicated by one
//! [`kvlab_raft::RaftGroup`] per group, as one sans-IO [`Protocol`].
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
//! After every input the node drains [`kvlab_raft::Ready`]s: [`Ready::emit_effects`]
//! emits `Persist…, Sync, Send…, Event…`, then the node restores a snapshot, applies the
//! committed entries and serves reads. Every reply is pushed after the `Sync` of the
//! `Ready` that made it possible, so the driver releases it only once the state it
//! reveals is durable.
//!
//! Every `snapshot_every_entries` applied entries the node compacts its log into an
//! encoded [`KvStore`] and then replaces its durable snapshot
//! (`Effect::SaveSnapshot`) with an image of its whole durable Raft state (snapshot,
//! remaining entries, hard state), so the WAL does not grow without bound. At boot the
//! image's records are replayed before the WAL's.
//!
//! A node that cannot decode its durable state refuses to serve (every request is
//! answered `Unavailable`), reports a `raft_kv_recovery_failed` event and takes no part in
//! the protocol: answering from a state known to be incomplete could break
//! linearizability, and voting with a forgotten vote could break Raft.
//!
//! ## Membership (operator commands)
//!
//! [`Protocol::on_admin`] takes [`AdminCommand`]s: on the leader, `AddLearner`,
//! `AddVoter` and `RemoveNode` become single-server configuration changes
//! ([`RaftGroup::propose_conf_change`]) and `TransferLeader` a leader transfer. Any other
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
//! [`Ready::emit_effects`]: kvlab_raft::Ready::emit_effects

use std::collections::BTreeMap;
use std::time::Duration;

use kvlab_raft::{
    ConfChange, EntryId, EntryKind, GroupId, HardState, MessageBody, RaftConfig, RaftError,
    RaftGroup, RaftMessage, RaftRecord, RecoveredState, Role, Snapshot, WalRecord,
};
use kvlab_types::{
    AdminCommand, ClientError, ClientRequest, ClientResponse, Cx, Effect, KvOp, NodeId, OpOutput,
    Out, Protocol, Recovery, RequestId, Time, TimerId,
};
use serde::{Deserialize, Serialize};

use crate::baseline::{BaselineMsg, Forwarder};
use crate::kv::{ApplyResult, KvStore};

pub mod invariants;

#[cfg(test)]
mod tests;

/// The group every node runs until the ring brings many groups.
pub const DEFAULT_GROUP: GroupId = GroupId(0);

/// The timer that drives [`RaftGroup::tick`]. Timer ids at or above `1 << 32` belong to
/// the [`Forwarder`].
pub const TICK_TIMER: TimerId = TimerId(0);

/// The most client requests one node keeps waiting for a commit or a read point at
/// once; beyond it new requests are refused with `Unavailable` instead of queued without
/// bound.
pub const MAX_PENDING_REQUESTS: usize = 65_536;

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
    /// The Raft group's tuning (election and heartbeat ticks, limits) and its two
    /// deliberately broken switches (`unsafe_commit_previous_term_by_count`,
    /// `unsafe_skip_vote_persist`), passed through unchanged.
    pub raft: RaftConfig,
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
    /// Compact the log into a snapshot every this many applied entries (0: never).
    pub snapshot_every_entries: u64,
    /// **Deliberately broken, tests only.** Every node answers reads at once from its own
    /// store, without a read point: a partitioned follower or a deposed leader returns
    /// stale values. The linearizability checker must catch it.
    pub unsafe_local_reads: bool,
    /// How many nodes (the first ones by id) are the group's bootstrap voters; the
    /// others start outside the group and join through admin commands (`AddLearner`,
    /// then `AddVoter`). 0 (the default) or more than the cluster size: every node.
    pub initial_voters: u32,
}

impl Default for RaftKvConfig {
    fn default() -> Self {
        RaftKvConfig {
            raft: RaftConfig::default(),
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
    /// The durable snapshot (the WAL image) cannot be decoded.
    #[error("cannot decode the durable snapshot: {reason}")]
    CorruptSnapshot {
        /// Why.
        reason: String,
    },
    /// A state-machine snapshot (an encoded [`KvStore`]) at `index` cannot be decoded.
    #[error("cannot decode the state-machine snapshot at index {index}: {reason}")]
    CorruptStateMachine {
        /// The snapshot's index.
        index: u64,
        /// Why.
        reason: String,
    },
}

/// The command a log entry carries: one client request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCommand {
    /// The request, for the session table.
    pub id: RequestId,
    /// The operation.
    pub op: KvOp,
}

impl KvCommand {
    /// Encodes the command with postcard.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain owned data into a Vec cannot fail: no I/O, no size limit.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a command written by [`KvCommand::encode`].
    pub fn decode(bytes: &[u8]) -> Result<KvCommand, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// The messages of the `raft` system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftKvMsg {
    /// A Raft message between members of a group.
    Raft(RaftMessage),
    /// A forwarded client request or its answer (only the `Forward` and `ForwardReply`
    /// variants are used).
    Client(BaselineMsg),
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

/// The durable snapshot this system saves: encoded [`WalRecord`]s that rebuild every
/// group's durable state as of the moment it was saved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct WalImage {
    records: Vec<Vec<u8>>,
}

/// Where the answer to a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// A client of this node.
    Local,
    /// A client of another node that forwarded the request.
    Forwarded(NodeId),
}

/// A request this node forwarded to the leader and is waiting on.
#[derive(Clone, Debug)]
struct PendingForward {
    to: NodeId,
    req: ClientRequest,
    /// When the forwarder gives up on it (then it is forgotten here too).
    deadline: Time,
    /// Whether it was already re-forwarded once (it is never forwarded a third time).
    reforwarded: bool,
}

/// A proposal waiting for its entry to be applied.
#[derive(Clone, Debug)]
struct PendingProposal {
    term: u64,
    id: RequestId,
    origin: Origin,
    deadline: Time,
}

/// A ReadIndex read waiting for its read point, then for the store to reach it.
#[derive(Clone, Debug)]
struct PendingRead {
    id: RequestId,
    key: String,
    origin: Origin,
    deadline: Time,
    /// The read point, once leadership was confirmed.
    index: Option<u64>,
}

/// One group on this node: the Raft member, the state machine it drives, and the
/// requests waiting on it.
#[derive(Debug)]
struct GroupState {
    raft: RaftGroup,
    kv: KvStore,
    /// The last index applied to `kv`.
    applied: u64,
    /// Proposals by log index.
    proposals: BTreeMap<u64, PendingProposal>,
    /// ReadIndex reads by context.
    reads: BTreeMap<u64, PendingRead>,
    /// The encoded store of a compaction whose snapshot record has not been emitted yet;
    /// the WAL image is saved right after it is.
    compaction_image_due: Option<Vec<u8>>,
    /// Set when a leader said this node is not a member of its configuration (entry at
    /// this index): until the local log reaches that entry, the node neither ticks its
    /// group (no campaigns) nor serves clients. Volatile: after a restart the node may
    /// campaign again until a leader tells it anew, which PreVote makes harmless.
    removed_by_conf: Option<u64>,
}

/// A node of the `raft` system. See [the module docs](self).
#[derive(Debug)]
pub struct RaftKv {
    id: NodeId,
    cfg: RaftKvConfig,
    groups: BTreeMap<GroupId, GroupState>,
    forwarder: Forwarder,
    /// Local requests forwarded to a leader and not answered yet, for re-forwarding
    /// when the leader changes. Bounded by the forwarder's `MAX_PENDING_FORWARDS`.
    forwards: BTreeMap<RequestId, PendingForward>,
    /// The leader this node knew after its last step, to notice a change.
    known_leader: Option<NodeId>,
    /// Set when boot could not rebuild the durable state: the node then refuses to serve.
    poisoned: Option<String>,
    next_read_ctx: u64,
    /// Messages from peers the Raft layer refused (another group, impossible logs).
    dropped_messages: u64,
}

impl RaftKv {
    /// The Raft member of the default group (`None` on a node that failed to recover).
    pub fn group(&self) -> Option<&RaftGroup> {
        self.groups.get(&DEFAULT_GROUP).map(|g| &g.raft)
    }

    /// This node's role in the default group (`Follower` on a node that failed to
    /// recover).
    pub fn role(&self) -> Role {
        self.group().map_or(Role::Follower, RaftGroup::role)
    }

    /// Whether this node leads its default group.
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

    /// The commit index of the default group.
    pub fn commit_index(&self) -> u64 {
        self.group().map_or(0, RaftGroup::commit_index)
    }

    /// The last index applied to the store of the default group.
    pub fn applied_index(&self) -> u64 {
        self.groups.get(&DEFAULT_GROUP).map_or(0, |g| g.applied)
    }

    /// The state machine of the default group.
    pub fn store(&self) -> Option<&KvStore> {
        self.groups.get(&DEFAULT_GROUP).map(|g| &g.kv)
    }

    /// Why this node refuses to serve, if it does.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Requests waiting on this node for a commit or a read point.
    pub fn pending_requests(&self) -> usize {
        self.groups
            .values()
            .map(|g| g.proposals.len() + g.reads.len())
            .sum()
    }

    /// Peer messages dropped because the Raft layer refused them.
    pub fn dropped_messages(&self) -> u64 {
        self.dropped_messages
    }

    /// Whether this node serves clients and takes part in its group: it is a voter or
    /// learner of the configuration in effect, and no leader told it that it was
    /// removed by an entry its log has not reached.
    pub fn is_member(&self) -> bool {
        self.groups
            .get(&DEFAULT_GROUP)
            .is_some_and(|g| g.is_member(self.id))
    }

    /// A digest (FNV-1a over the encoded store) of the default group's state machine at
    /// [`RaftKv::applied_index`]. Two replicas that applied the same sequence of entries
    /// have the same digest; invariant checkers compare them by applied index.
    pub fn store_digest(&self) -> u64 {
        self.store().map_or(0, |kv| {
            fnv1a(&postcard::to_allocvec(kv).unwrap_or_default())
        })
    }

    /// A digest of the entry at `index` of the default group's log (its term, kind and
    /// data), if the log still holds it; for log-matching checks.
    pub fn entry_digest(&self, index: u64) -> Option<u64> {
        let e = self.group()?.entry(index)?;
        let mut bytes = Vec::with_capacity(e.data.len() + 9);
        bytes.extend_from_slice(&e.term.to_le_bytes());
        bytes.push(e.kind as u8);
        bytes.extend_from_slice(&e.data);
        Some(fnv1a(&bytes))
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.request_timeout_ms)
    }

    /// Builds the groups from durable state; an error poisons the node.
    fn recover_groups(
        &mut self,
        cx: &mut Cx<'_>,
        peers: &[NodeId],
        recovered: &Recovery,
    ) -> Result<(), RaftKvError> {
        self.cfg.validate()?;
        let mut wal: Vec<Vec<u8>> = Vec::new();
        if let Some(bytes) = &recovered.snapshot {
            let image: WalImage =
                postcard::from_bytes(bytes).map_err(|e| RaftKvError::CorruptSnapshot {
                    reason: e.to_string(),
                })?;
            wal.extend(image.records);
        }
        wal.extend(recovered.records.iter().cloned());
        let state = RecoveredState::from_wal(DEFAULT_GROUP, &wal).map_err(RaftKvError::Raft)?;
        let bootstrap = bootstrap_voters(peers, self.cfg.initial_voters);
        let raft = RaftGroup::recover(
            DEFAULT_GROUP,
            cx.id,
            &bootstrap,
            self.cfg.raft.clone(),
            state,
            cx.rng,
        )
        .map_err(RaftKvError::Raft)?;
        self.groups.insert(
            DEFAULT_GROUP,
            GroupState {
                raft,
                kv: KvStore::default(),
                applied: 0,
                proposals: BTreeMap::new(),
                reads: BTreeMap::new(),
                compaction_image_due: None,
                removed_by_conf: None,
            },
        );
        Ok(())
    }

    fn poison(&mut self, why: String, out: &mut Out<RaftKvMsg>) {
        out.event("raft_kv_recovery_failed", why.clone());
        // Nothing waiting here can be answered any more: proposals may have committed,
        // reads had no effect.
        for g in std::mem::take(&mut self.groups).into_values() {
            for p in g.proposals.into_values() {
                respond(p.origin, indeterminate(p.id, "node lost its state"), out);
            }
            for r in g.reads.into_values() {
                respond(
                    r.origin,
                    unavailable(r.id, "node lost its state", None),
                    out,
                );
            }
        }
        self.poisoned = Some(why);
    }

    /// Serves a request from a local client or forwarded by `origin`.
    fn serve(
        &mut self,
        cx: &mut Cx<'_>,
        req: ClientRequest,
        origin: Origin,
        out: &mut Out<RaftKvMsg>,
    ) {
        if let Some(why) = &self.poisoned {
            let resp = ClientResponse {
                id: req.id,
                result: Err(ClientError::Unavailable {
                    reason: format!("node cannot recover its durable state: {why}"),
                    hint: None,
                }),
            };
            respond(origin, resp, out);
            return;
        }
        let deadline = cx.now + self.request_timeout();
        let read_mode = self.cfg.read_mode;
        let Some(g) = self.groups.get_mut(&DEFAULT_GROUP) else {
            return;
        };
        if let (true, KvOp::Read { key }) = (self.cfg.unsafe_local_reads, &req.op) {
            let value = g.kv.get(key);
            let resp = ClientResponse {
                id: req.id,
                result: Ok(OpOutput::Read(value)),
            };
            respond(origin, resp, out);
            return;
        }
        if !g.is_member(self.id) {
            let resp = unavailable(
                req.id,
                "this node is not a member of its group",
                g.raft.leader().filter(|&l| l != self.id),
            );
            respond(origin, resp, out);
            return;
        }
        if g.raft.role() != Role::Leader {
            let leader = g.raft.leader().filter(|&l| l != self.id);
            match (leader, origin) {
                (Some(leader), Origin::Local) => {
                    let mut scratch = Out::new();
                    let before = self.forwarder.pending();
                    let id = req.id;
                    self.forwarder.forward(leader, req.clone(), &mut scratch);
                    if self.forwarder.pending() > before {
                        let deadline = cx.now + Duration::from_millis(self.cfg.forward_timeout_ms);
                        self.forwards.insert(
                            id,
                            PendingForward {
                                to: leader,
                                req,
                                deadline,
                                reforwarded: false,
                            },
                        );
                    }
                    translate(scratch, out);
                }
                (hint, _) => {
                    let reason = match hint {
                        Some(_) => "not the leader (a forwarded request is not forwarded again)",
                        None => "no leader known",
                    };
                    let resp = ClientResponse {
                        id: req.id,
                        result: Err(ClientError::Unavailable {
                            reason: reason.into(),
                            hint,
                        }),
                    };
                    respond(origin, resp, out);
                }
            }
            return;
        }
        if g.proposals.len() + g.reads.len() >= MAX_PENDING_REQUESTS {
            let resp = ClientResponse {
                id: req.id,
                result: Err(ClientError::Unavailable {
                    reason: format!("too many requests pending ({MAX_PENDING_REQUESTS})"),
                    hint: None,
                }),
            };
            respond(origin, resp, out);
            return;
        }
        match (&req.op, read_mode) {
            (KvOp::Read { key }, ReadMode::ReadIndex) => {
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                match g.raft.read_index(ctx) {
                    Ok(()) => {
                        g.reads.insert(
                            ctx,
                            PendingRead {
                                id: req.id,
                                key: key.clone(),
                                origin,
                                deadline,
                                index: None,
                            },
                        );
                    }
                    Err(e) => respond(origin, refused(req.id, &e), out),
                }
            }
            _ => {
                let cmd = KvCommand {
                    id: req.id,
                    op: req.op,
                };
                match g.raft.propose(cmd.encode()) {
                    Ok(at) => {
                        let pending = PendingProposal {
                            term: at.term,
                            id: cmd.id,
                            origin,
                            deadline,
                        };
                        if let Some(old) = g.proposals.insert(at.index, pending) {
                            // An older term's proposal at this index was cut from the log.
                            respond(
                                old.origin,
                                indeterminate(old.id, "entry overwritten by a later term"),
                                out,
                            );
                        }
                    }
                    Err(e) => respond(origin, refused(cmd.id, &e), out),
                }
            }
        }
    }

    /// Drains every group's `Ready`s: effects first (persist, sync, send, events), then
    /// restore, apply, serve reads, and compact when due.
    fn drive(&mut self, out: &mut Out<RaftKvMsg>) {
        let mut poison = None;
        for g in self.groups.values_mut() {
            if let Err(e) = g.drive(&self.cfg, out) {
                poison = Some(e.to_string());
                break;
            }
        }
        if let Some(why) = poison {
            self.poison(why, out);
        }
    }

    /// After a step: if the leader changed to another node, forwards the requests still
    /// waiting on the old one to the new one (once per request).
    fn reforward_on_leader_change(&mut self, now: Time, out: &mut Out<RaftKvMsg>) {
        let leader = self.leader();
        if leader == self.known_leader {
            return;
        }
        self.known_leader = leader;
        let Some(new) = leader else {
            return; // no leader yet: the forwards wait
        };
        // When this node is the new leader it forwards to itself: the request comes back
        // as a forwarded one and is served here, through the same bookkeeping.
        let timeout = Duration::from_millis(self.cfg.forward_timeout_ms);
        let mut scratch = Out::new();
        for f in self.forwards.values_mut() {
            if f.to != new && !f.reforwarded {
                self.forwarder.forward(new, f.req.clone(), &mut scratch);
                f.to = new;
                f.reforwarded = true;
                f.deadline = now + timeout;
            }
        }
        translate(scratch, out);
    }

    /// Answers every request whose deadline passed.
    fn expire(&mut self, now: Time, out: &mut Out<RaftKvMsg>) {
        self.forwards.retain(|_, f| f.deadline > now);
        for g in self.groups.values_mut() {
            let expired: Vec<u64> = g
                .proposals
                .iter()
                .filter(|(_, p)| p.deadline <= now)
                .map(|(&i, _)| i)
                .collect();
            for i in expired {
                if let Some(p) = g.proposals.remove(&i) {
                    respond(
                        p.origin,
                        indeterminate(p.id, "not applied within the request timeout"),
                        out,
                    );
                }
            }
            let expired: Vec<u64> = g
                .reads
                .iter()
                .filter(|(_, r)| r.deadline <= now)
                .map(|(&c, _)| c)
                .collect();
            for c in expired {
                if let Some(r) = g.reads.remove(&c) {
                    respond(
                        r.origin,
                        unavailable(
                            r.id,
                            "read not served within the request timeout",
                            g.raft.leader(),
                        ),
                        out,
                    );
                }
            }
        }
    }
}

impl GroupState {
    fn is_member(&self, me: NodeId) -> bool {
        let listed = self.raft.voters().contains(&me) || self.raft.learners().contains(&me);
        listed && !self.told_removed()
    }

    /// Whether a leader told this node it was removed by an entry not yet in its log.
    fn told_removed(&self) -> bool {
        self.removed_by_conf
            .is_some_and(|at| self.raft.conf_index() < at)
    }

    fn drive(&mut self, cfg: &RaftKvConfig, out: &mut Out<RaftKvMsg>) -> Result<(), RaftKvError> {
        while self.raft.has_ready() {
            let mut rd = self.raft.ready();
            rd.emit_effects(out, RaftKvMsg::Raft);
            if let Some(kv_bytes) = self.compaction_image_due.take() {
                // The snapshot record went out with this Ready: everything the group holds
                // is now persisted, so an image of it may replace the durable snapshot.
                out.save_snapshot(self.wal_image(cfg, kv_bytes));
            }
            if let Some(snap) = rd.restore.take() {
                self.restore(snap, out)?;
            }
            for e in rd.committed_entries.drain(..) {
                self.apply_entry(e.index, e.term, e.kind, &e.data, out);
            }
            for rs in rd.read_states.drain(..) {
                if let Some(r) = self.reads.get_mut(&rs.ctx) {
                    r.index = Some(rs.index);
                }
            }
            for ctx in rd.aborted_reads.drain(..) {
                if let Some(r) = self.reads.remove(&ctx) {
                    let leader = self.raft.leader();
                    respond(
                        r.origin,
                        unavailable(r.id, "leadership lost before the read was served", leader),
                        out,
                    );
                }
            }
            self.serve_reads(out);
            self.maybe_compact(cfg)?;
        }
        Ok(())
    }

    fn restore(&mut self, snap: Snapshot, out: &mut Out<RaftKvMsg>) -> Result<(), RaftKvError> {
        let kv: KvStore =
            postcard::from_bytes(&snap.data).map_err(|e| RaftKvError::CorruptStateMachine {
                index: snap.meta.index,
                reason: e.to_string(),
            })?;
        self.kv = kv;
        self.applied = snap.meta.index;
        // Proposals the snapshot covers: whether they made it in is unknown here.
        let covered: Vec<u64> = self
            .proposals
            .range(..=snap.meta.index)
            .map(|(&i, _)| i)
            .collect();
        for i in covered {
            if let Some(p) = self.proposals.remove(&i) {
                respond(
                    p.origin,
                    indeterminate(p.id, "entry replaced by a snapshot"),
                    out,
                );
            }
        }
        Ok(())
    }

    fn apply_entry(
        &mut self,
        index: u64,
        term: u64,
        kind: EntryKind,
        data: &[u8],
        out: &mut Out<RaftKvMsg>,
    ) {
        self.applied = index;
        let result: Option<ApplyResult> = match kind {
            // A leader's no-op and a membership change carry nothing for the store.
            EntryKind::Noop => None,
            EntryKind::ConfChange => {
                out.event(
                    "config_committed",
                    format!(
                        "group={} index={index} term={term} change={:?} voters={:?} learners={:?}",
                        self.raft.group().0,
                        postcard::from_bytes::<ConfChange>(data).ok(),
                        self.raft.voters(),
                        self.raft.learners()
                    ),
                );
                None
            }
            EntryKind::Normal => match KvCommand::decode(data) {
                Ok(cmd) => Some(self.kv.apply(cmd.id, &cmd.op)),
                Err(e) => {
                    // Every replica has the same committed entry, so every replica skips
                    // it the same way and the stores stay identical.
                    out.event(
                        "raft_kv_bad_command",
                        format!("group={} index={index}: {e}", self.raft.group().0),
                    );
                    None
                }
            },
        };
        if let Some(p) = self.proposals.remove(&index) {
            let resp = match (p.term == term, result) {
                (true, Some(result)) => ClientResponse { id: p.id, result },
                (true, None) => indeterminate(p.id, "the proposed command could not be decoded"),
                (false, _) => indeterminate(p.id, "entry overwritten by a later term"),
            };
            respond(p.origin, resp, out);
        }
    }

    fn serve_reads(&mut self, out: &mut Out<RaftKvMsg>) {
        let applied = self.applied;
        let ready: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.index.is_some_and(|i| i <= applied))
            .map(|(&c, _)| c)
            .collect();
        for c in ready {
            if let Some(r) = self.reads.remove(&c) {
                let value = self.kv.get(&r.key);
                respond(
                    r.origin,
                    ClientResponse {
                        id: r.id,
                        result: Ok(OpOutput::Read(value)),
                    },
                    out,
                );
            }
        }
    }

    fn maybe_compact(&mut self, cfg: &RaftKvConfig) -> Result<(), RaftKvError> {
        let every = cfg.snapshot_every_entries;
        let base = self.raft.snapshot_meta().index;
        if every == 0 || self.applied < base + every || self.applied > self.raft.applied_index() {
            return Ok(());
        }
        let data =
            postcard::to_allocvec(&self.kv).map_err(|e| RaftKvError::CorruptStateMachine {
                index: self.applied,
                reason: e.to_string(),
            })?;
        self.raft
            .compact(self.applied, data.clone())
            .map_err(RaftKvError::Raft)?;
        self.compaction_image_due = Some(data);
        Ok(())
    }

    /// An encoded [`WalImage`] of this group's durable state: its snapshot (the store
    /// encoded as `kv_bytes` at the snapshot index), the entries after it and the hard
    /// state.
    fn wal_image(&self, cfg: &RaftKvConfig, kv_bytes: Vec<u8>) -> Vec<u8> {
        let group = self.raft.group();
        let meta = self.raft.snapshot_meta();
        let entries: Vec<_> = (meta.index + 1..=self.raft.last_index())
            .filter_map(|i| self.raft.entry(i).cloned())
            .collect();
        let mut hs: HardState = self.raft.hard_state();
        if cfg.raft.unsafe_skip_vote_persist {
            // The image must not make durable what the broken switch never persists.
            hs.vote = None;
        }
        let records = [
            RaftRecord::Snapshot(Snapshot {
                meta,
                data: kv_bytes,
            }),
            RaftRecord::Entries(entries),
            RaftRecord::HardState(hs),
        ]
        .into_iter()
        .map(|record| WalRecord { group, record }.encode())
        .collect();
        postcard::to_allocvec(&WalImage { records }).unwrap_or_default()
    }
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

/// FNV-1a, 64 bits: a fixed, portable hash for digests that runs compare.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Delivers an answer to a local client (`Reply`) or to the node that forwarded the
/// request (`Send`); both wait behind any earlier `Sync` of the step.
fn respond(origin: Origin, resp: ClientResponse, out: &mut Out<RaftKvMsg>) {
    match origin {
        Origin::Local => out.push(Effect::Reply(resp)),
        Origin::Forwarded(to) => {
            out.send(to, RaftKvMsg::Client(BaselineMsg::ForwardReply { resp }))
        }
    }
}

fn indeterminate(id: RequestId, reason: &str) -> ClientResponse {
    ClientResponse {
        id,
        result: Err(ClientError::Indeterminate {
            reason: reason.into(),
        }),
    }
}

fn unavailable(id: RequestId, reason: &str, hint: Option<NodeId>) -> ClientResponse {
    ClientResponse {
        id,
        result: Err(ClientError::Unavailable {
            reason: reason.into(),
            hint,
        }),
    }
}

/// A request the Raft layer refused before it entered the log: it surely did not take
/// effect.
fn refused(id: RequestId, e: &RaftError) -> ClientResponse {
    let hint = match e {
        RaftError::NotLeader { leader } => *leader,
        RaftError::TransferInProgress { to } => Some(*to),
        _ => None,
    };
    unavailable(id, &e.to_string(), hint)
}

/// Moves the [`Forwarder`]'s effects into this system's output, wrapping its messages.
fn translate(scratch: Out<BaselineMsg>, out: &mut Out<RaftKvMsg>) {
    let mut scratch = scratch;
    for e in scratch.drain() {
        out.push(match e {
            Effect::Send { to, msg } => Effect::Send {
                to,
                msg: RaftKvMsg::Client(msg),
            },
            Effect::SetTimer { timer, after } => Effect::SetTimer { timer, after },
            Effect::CancelTimer { timer } => Effect::CancelTimer { timer },
            Effect::Persist(r) => Effect::Persist(r),
            Effect::Sync => Effect::Sync,
            Effect::SaveSnapshot(d) => Effect::SaveSnapshot(d),
            Effect::Reply(r) => Effect::Reply(r),
            Effect::Event(ev) => Effect::Event(ev),
        });
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
            known_leader: None,
            poisoned: None,
            next_read_ctx: 0,
            dropped_messages: 0,
        };
        if let Err(e) = node.recover_groups(cx, peers, &recovered) {
            node.poison(e.to_string(), out);
            return node;
        }
        // Restores the snapshot and re-applies what the commit hint covers.
        node.drive(out);
        out.event(
            "raft_kv_started",
            format!(
                "records={} snapshot={} term={} applied={}",
                recovered.records.len(),
                recovered.snapshot.is_some(),
                node.term(),
                node.applied_index()
            ),
        );
        if node.poisoned.is_none() {
            out.set_timer(TICK_TIMER, Duration::from_millis(config.tick_interval_ms));
        }
        node
    }

    fn on_msg(&mut self, cx: &mut Cx<'_>, from: NodeId, msg: RaftKvMsg, out: &mut Out<RaftKvMsg>) {
        match msg {
            RaftKvMsg::Raft(m) => {
                if self.poisoned.is_some() {
                    return;
                }
                match self.groups.get_mut(&m.group) {
                    Some(g) if m.from == from => {
                        let asks_votes = matches!(m.body, MessageBody::RequestVote { .. });
                        let group = m.group;
                        if g.raft.step(m, cx.rng).is_err() {
                            self.dropped_messages += 1;
                        }
                        if asks_votes
                            && g.raft.role() == Role::Leader
                            && !g.raft.voters().contains(&from)
                            && !g.raft.learners().contains(&from)
                        {
                            // A removed node campaigns because it never saw its removal.
                            let conf_index = g.raft.conf_index();
                            out.send(from, RaftKvMsg::NotMember { group, conf_index });
                        }
                    }
                    // A message for a group this node does not run, or whose sender field
                    // disagrees with the transport: dropped and counted.
                    _ => self.dropped_messages += 1,
                }
                self.drive(out);
                self.reforward_on_leader_change(cx.now, out);
            }
            RaftKvMsg::Client(BaselineMsg::Forward { req }) => {
                self.serve(cx, req, Origin::Forwarded(from), out);
                self.drive(out);
            }
            RaftKvMsg::Client(BaselineMsg::ForwardReply { mut resp }) => {
                if let Some(f) = self.forwards.get(&resp.id)
                    && f.reforwarded
                    && matches!(resp.result, Err(ClientError::Unavailable { .. }))
                {
                    // One copy was refused, but the other may still take effect:
                    // "surely did not happen" would be a lie.
                    if f.to != from {
                        return; // the old leader's refusal: wait for the new one's answer
                    }
                    resp = indeterminate(
                        resp.id,
                        "refused after re-forwarding; the first copy may still commit",
                    );
                }
                self.forwards.remove(&resp.id);
                let mut scratch = Out::new();
                self.forwarder.on_reply(resp, &mut scratch);
                translate(scratch, out);
            }
            RaftKvMsg::Client(BaselineMsg::Replicate { .. }) => self.dropped_messages += 1,
            RaftKvMsg::NotMember { group, conf_index } => {
                let me = self.id;
                match self.groups.get_mut(&group) {
                    Some(g) if g.raft.conf_index() < conf_index => {
                        if !g.told_removed() {
                            out.event(
                                "node_removed",
                                format!(
                                    "group={} told by {from}: not in the configuration at index {conf_index} (local configuration at {}, member={})",
                                    group.0,
                                    g.raft.conf_index(),
                                    g.is_member(me)
                                ),
                            );
                        }
                        let at = g.removed_by_conf.map_or(conf_index, |a| a.max(conf_index));
                        g.removed_by_conf = Some(at);
                    }
                    Some(_) => {}
                    None => self.dropped_messages += 1,
                }
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_>, timer: TimerId, out: &mut Out<RaftKvMsg>) {
        if timer == TICK_TIMER {
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
            return;
        }
        let mut scratch = Out::new();
        self.forwarder.on_timer(timer, &mut scratch);
        translate(scratch, out);
    }

    fn on_client(&mut self, cx: &mut Cx<'_>, req: ClientRequest, out: &mut Out<RaftKvMsg>) {
        self.serve(cx, req, Origin::Local, out);
        self.drive(out);
    }

    fn on_admin(&mut self, _cx: &mut Cx<'_>, cmd: AdminCommand, out: &mut Out<RaftKvMsg>) {
        let refuse = |why: String, leader: Option<NodeId>, out: &mut Out<RaftKvMsg>| {
            let leader = leader.map_or_else(|| "none".to_string(), |l| l.to_string());
            out.event(
                "admin_refused",
                format!("command={cmd:?} leader={leader} reason={why}"),
            );
        };
        if let Some(why) = &self.poisoned {
            refuse(format!("node cannot recover its state: {why}"), None, out);
            return;
        }
        let Some(g) = self.groups.get_mut(&DEFAULT_GROUP) else {
            return;
        };
        let result = match cmd {
            AdminCommand::AddLearner(n) => g.raft.propose_conf_change(ConfChange::AddLearner(n)),
            AdminCommand::AddVoter(n) => g.raft.propose_conf_change(ConfChange::AddVoter(n)),
            AdminCommand::RemoveNode(n) => g.raft.propose_conf_change(ConfChange::RemoveNode(n)),
            AdminCommand::TransferLeader(n) => g.raft.transfer_leader(n).map(|()| EntryId {
                term: g.raft.term(),
                index: 0,
            }),
        };
        match result {
            Ok(at) => out.event(
                "admin_proposed",
                format!(
                    "group={} command={cmd:?} index={} term={}",
                    DEFAULT_GROUP.0, at.index, at.term
                ),
            ),
            Err(e) => refuse(e.to_string(), g.raft.leader(), out),
        }
        self.drive(out);
    }
}

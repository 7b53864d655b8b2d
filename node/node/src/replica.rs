//! One Raft replica on a node: the Raft member, the state machine it drives, and the
//! client requests waiting on it. [`Replica::drive`] is steps 1–6 of
//! [`kvlab_raft::Ready`]'s contract for one group; the `raft` system runs one replica per
//! group over every node, the composed `kvlab` system one per vnode it hosts plus one of
//! the metadata group.
//!
//! A replica never sends an answer itself: answers queue in [`Replica::take_answers`]
//! and the owner delivers them (to a local client, or to the node that forwarded the
//! request) after the effects of the same step, so after any `Sync` that made them
//! possible.
//!
//! ## The configuration epoch
//!
//! [`Replica::conf_epoch`] counts the configuration-change entries the replica applied
//! (every one, also one Raft found inapplicable and skipped, so every replica counts
//! alike). It travels inside snapshots ([`MachineImage`]), so a replica restored from a
//! snapshot knows it too. The composed node names group configurations by it (the ring's
//! `ConfEpoch`).

use std::collections::BTreeMap;
use std::fmt::Debug;

use kvlab_raft::{
    EntryKind, GroupId, HardState, RaftError, RaftGroup, RaftMessage, RaftRecord, Ready, Snapshot,
    WalRecord,
};
use kvlab_types::{
    ClientError, ClientRequest, ClientResponse, InvalidRequest, KvOp, NodeEvent, NodeId, OpOutput,
    Out, RequestId, Time, Value,
};
use serde::{Deserialize, Serialize};

use crate::kv::{ApplyResult, KvStore};

/// The state machine a replica drives.
pub(crate) trait StateMachine: Sized + Debug {
    /// Applies the normal entry `index` of `group`. Returns the result for the client
    /// that proposed it, if the entry carries a client command. A command that cannot be
    /// decoded is skipped the same way on every replica (and reported through `out`).
    fn apply_entry<M>(
        &mut self,
        group: GroupId,
        index: u64,
        term: u64,
        data: &[u8],
        out: &mut Out<M>,
    ) -> Option<ApplyResult>;
    /// The value of `key`, for a linearizable read served at the applied index.
    fn read(&self, key: &str) -> Option<Value>;
    /// Serves a read-only operation ([`KvOp::is_read_only`]) at the applied index, for
    /// a ReadIndex read.
    fn query(&self, op: &KvOp) -> ApplyResult {
        match op {
            KvOp::Read { key } => Ok(OpOutput::Read(self.read(key))),
            _ => Err(ClientError::Invalid {
                reason: InvalidRequest::EtcdNotServed,
            }),
        }
    }
    /// The machine's image, for snapshots.
    fn encode(&self) -> Vec<u8>;
    /// Rebuilds a machine from [`StateMachine::encode`]'s bytes.
    fn decode(bytes: &[u8]) -> Result<Self, String>;
    /// Replaces this machine by one rebuilt from a snapshot image, keeping what is not
    /// replicated (its configuration). By default, [`StateMachine::decode`].
    fn restore_from(&self, bytes: &[u8]) -> Result<Self, String> {
        Self::decode(bytes)
    }
}

impl StateMachine for KvStore {
    fn apply_entry<M>(
        &mut self,
        group: GroupId,
        index: u64,
        term: u64,
        data: &[u8],
        out: &mut Out<M>,
    ) -> Option<ApplyResult> {
        match KvCommand::decode(data) {
            Ok(cmd) => Some(self.apply_in_term(cmd.id, &cmd.op, term)),
            Err(e) => {
                // Every replica has the same committed entry, so every replica skips
                // it the same way and the stores stay identical.
                out.event(NodeEvent::BadCommand {
                    group,
                    index,
                    reason: e.to_string(),
                });
                None
            }
        }
    }

    fn read(&self, key: &str) -> Option<Value> {
        self.get(key)
    }

    fn query(&self, op: &KvOp) -> ApplyResult {
        KvStore::query(self, op)
    }

    fn encode(&self) -> Vec<u8> {
        self.encode_image()
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        KvStore::decode_image(bytes).map_err(|e| e.to_string())
    }
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

/// What a Raft snapshot's data holds: the configuration epoch at the snapshot's index
/// and the state machine's image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MachineImage {
    pub(crate) conf_epoch: u64,
    pub(crate) machine: Vec<u8>,
}

/// The durable snapshot of one group: encoded [`WalRecord`]s that rebuild the group's
/// durable state (snapshot, entries after it, hard state) as of the moment it was saved,
/// or, in the composed node, the tombstone of a destroyed replica (no records; the
/// configuration epoch that removed this node).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WalImage {
    pub(crate) records: Vec<Vec<u8>>,
    pub(crate) tombstone: Option<u64>,
}

impl WalImage {
    /// The tombstone of a replica removed by configuration epoch `conf_epoch`.
    pub(crate) fn tombstone(conf_epoch: u64) -> Self {
        WalImage {
            records: Vec::new(),
            tombstone: Some(conf_epoch),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        // Encoding plain owned data into a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// Why a replica cannot go on: its state (or a snapshot it received) does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    /// The Raft layer refused (bad config, corrupt WAL record).
    #[error(transparent)]
    Raft(RaftError),
    /// A state-machine snapshot at `index` cannot be decoded.
    #[error("cannot decode the state-machine snapshot at index {index}: {reason}")]
    CorruptStateMachine {
        /// The snapshot's index.
        index: u64,
        /// Why.
        reason: String,
    },
}

/// Where the answer to a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A client of this node.
    Local,
    /// A client of another node that forwarded (or routed) the request.
    Forwarded(NodeId),
}

/// An answer for the owner to deliver.
pub(crate) type Answer = (Origin, ClientResponse);

/// A proposal waiting for its entry to be applied.
#[derive(Clone, Debug)]
pub(crate) struct PendingProposal {
    pub(crate) term: u64,
    pub(crate) id: RequestId,
    pub(crate) origin: Origin,
    pub(crate) deadline: Time,
}

/// A ReadIndex read waiting for its read point, then for the store to reach it.
#[derive(Clone, Debug)]
pub(crate) struct PendingRead {
    pub(crate) id: RequestId,
    /// The read-only operation ([`KvOp::is_read_only`]).
    pub(crate) op: KvOp,
    pub(crate) origin: Origin,
    pub(crate) deadline: Time,
    /// The read point, once leadership was confirmed.
    pub(crate) index: Option<u64>,
}

/// What a leader told this node: it is not a member of its configuration, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Removal {
    /// The index of the leader's configuration entry that does not list this node.
    pub(crate) conf_index: u64,
    /// This node's term when it was told.
    pub(crate) term: u64,
}

/// How a replica compacts and what its image may make durable.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReplicaTuning {
    /// Compact every this many applied entries (0: never).
    pub(crate) snapshot_every_entries: u64,
    /// The `unsafe_skip_vote_persist` bug: images must not persist the vote either.
    pub(crate) skip_vote_persist: bool,
}

/// One replica: the Raft member, its state machine and the requests waiting on it.
#[derive(Debug)]
pub(crate) struct Replica<S> {
    pub(crate) raft: RaftGroup,
    pub(crate) machine: S,
    /// The last index applied to `machine`.
    pub(crate) applied: u64,
    /// Configuration-change entries applied (see the module docs).
    pub(crate) conf_epoch: u64,
    /// Proposals by log index.
    pub(crate) proposals: BTreeMap<u64, PendingProposal>,
    /// ReadIndex reads by context.
    pub(crate) reads: BTreeMap<u64, PendingRead>,
    /// Set when a leader said this node is not a member of its configuration: until the
    /// local log reaches that entry, or a leader of a later term replicates to this node
    /// (it was added back, or the claim was false), the node neither ticks the group (no
    /// campaigns) nor serves its clients. Volatile: after a restart the node may
    /// campaign again until a leader tells it anew, which PreVote makes harmless.
    pub(crate) removed_by_conf: Option<Removal>,
    answers: Vec<Answer>,
}

impl<S: StateMachine> Replica<S> {
    pub(crate) fn new(raft: RaftGroup, machine: S) -> Self {
        Replica {
            raft,
            machine,
            applied: 0,
            conf_epoch: 0,
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            removed_by_conf: None,
            answers: Vec::new(),
        }
    }

    /// The answers queued since the last call, in order.
    pub(crate) fn take_answers(&mut self) -> std::vec::Drain<'_, Answer> {
        self.answers.drain(..)
    }

    fn answer(&mut self, origin: Origin, resp: ClientResponse) {
        self.answers.push((origin, resp));
    }

    /// Requests waiting here for a commit or a read point.
    pub(crate) fn pending(&self) -> usize {
        self.proposals.len() + self.reads.len()
    }

    /// Starts serving `req` on this group's leader: a ReadIndex read (with read context
    /// `ctx`, when `read_index`) or a proposal. Returns whether `ctx` was used.
    pub(crate) fn start(
        &mut self,
        req: ClientRequest,
        origin: Origin,
        deadline: Time,
        read_index: bool,
        ctx: u64,
    ) -> bool {
        if read_index && req.op.is_read_only() {
            match self.raft.read_index(ctx) {
                Ok(()) => {
                    let read = PendingRead {
                        id: req.id,
                        op: req.op,
                        origin,
                        deadline,
                        index: None,
                    };
                    self.reads.insert(ctx, read);
                }
                Err(e) => self.answer(origin, refused(req.id, &e)),
            }
            return true;
        }
        let cmd = KvCommand {
            id: req.id,
            op: req.op,
        };
        self.propose(cmd.id, cmd.encode(), origin, deadline);
        false
    }

    /// Proposes `data` for request `id`; its answer comes when the entry is applied.
    pub(crate) fn propose(&mut self, id: RequestId, data: Vec<u8>, origin: Origin, deadline: Time) {
        match self.raft.propose(data) {
            Ok(at) => {
                let pending = PendingProposal {
                    term: at.term,
                    id,
                    origin,
                    deadline,
                };
                if let Some(old) = self.proposals.insert(at.index, pending) {
                    // An older term's proposal at this index was cut from the log.
                    let resp = indeterminate(old.id, "entry overwritten by a later term");
                    self.answer(old.origin, resp);
                }
            }
            Err(e) => self.answer(origin, refused(id, &e)),
        }
    }

    pub(crate) fn is_member(&self, me: NodeId) -> bool {
        // While joint, an outgoing voter (demoted or removed by the joint change) is
        // still a member: it votes, and may even lead, until the group leaves.
        self.raft.is_member(me) && !self.told_removed()
    }

    /// Whether a leader told this node it was removed by an entry not yet in its log,
    /// and no leader of a later term has replicated to it since.
    pub(crate) fn told_removed(&self) -> bool {
        self.removed_by_conf.is_some_and(|r| {
            let followed_since = self.raft.leader().is_some() && self.raft.term() > r.term;
            self.raft.conf_index() < r.conf_index && !followed_since
        })
    }

    /// Drains the group's `Ready`s: effects (persist, sync, send, events) and restore,
    /// apply, serve reads (first when [`Ready::apply_before_sync`], else after), then
    /// compact when due.
    pub(crate) fn drive<M>(
        &mut self,
        tuning: ReplicaTuning,
        out: &mut Out<M>,
        mut wrap: impl FnMut(RaftMessage) -> M,
    ) -> Result<(), ReplicaError> {
        while self.raft.has_ready() {
            let mut rd = self.raft.ready();
            // A snapshot (a compaction here, or one installed from the leader) becomes
            // the group's durable snapshot file, never one log record: it may be larger
            // than a record can be.
            // With `apply_before_sync` the answers go first, so that they wait for no
            // fsync of this batch's records (only for earlier barriers).
            if rd.apply_before_sync {
                self.apply_ready(&mut rd, out)?;
            }
            let group = self.raft.group();
            rd.emit_effects_saving_snapshots(out, &mut wrap, |out, snap| {
                out.save_snapshot(group, self.wal_image(tuning, snap));
            });
            if !rd.apply_before_sync {
                self.apply_ready(&mut rd, out)?;
            }
            self.maybe_compact(tuning)?;
        }
        Ok(())
    }

    /// Steps 4–6 of a `Ready`: restore, apply, serve and fail reads.
    fn apply_ready<M>(&mut self, rd: &mut Ready, out: &mut Out<M>) -> Result<(), ReplicaError> {
        if let Some(snap) = rd.restore.take() {
            self.restore(snap)?;
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
                let reason = "leadership lost before the read was served";
                self.answer(r.origin, unavailable(r.id, reason, leader));
            }
        }
        self.serve_reads();
        Ok(())
    }

    fn restore(&mut self, snap: Snapshot) -> Result<(), ReplicaError> {
        let corrupt = |reason: String| ReplicaError::CorruptStateMachine {
            index: snap.meta.index,
            reason,
        };
        let image: MachineImage =
            postcard::from_bytes(&snap.data).map_err(|e| corrupt(e.to_string()))?;
        self.machine = self.machine.restore_from(&image.machine).map_err(corrupt)?;
        self.conf_epoch = image.conf_epoch;
        self.applied = snap.meta.index;
        // Proposals the snapshot covers: whether they made it in is unknown here.
        let covered: Vec<u64> = self
            .proposals
            .range(..=snap.meta.index)
            .map(|(&i, _)| i)
            .collect();
        for i in covered {
            if let Some(p) = self.proposals.remove(&i) {
                self.answer(
                    p.origin,
                    indeterminate(p.id, "entry replaced by a snapshot"),
                );
            }
        }
        Ok(())
    }

    fn apply_entry<M>(
        &mut self,
        index: u64,
        term: u64,
        kind: EntryKind,
        data: &[u8],
        out: &mut Out<M>,
    ) {
        self.applied = index;
        let group = self.raft.group();
        let result: Option<ApplyResult> = match kind {
            // A leader's no-op carries nothing for the store.
            EntryKind::Noop => None,
            EntryKind::ConfChange => {
                self.conf_epoch += 1;
                out.event(NodeEvent::ConfigCommitted {
                    group,
                    index,
                    term,
                    voters: self.raft.voters().to_vec(),
                    learners: self.raft.learners().to_vec(),
                });
                None
            }
            EntryKind::Normal => self.machine.apply_entry(group, index, term, data, out),
        };
        if let Some(p) = self.proposals.remove(&index) {
            let resp = match (p.term == term, result) {
                (true, Some(result)) => ClientResponse { id: p.id, result },
                (true, None) => indeterminate(p.id, "the proposed command could not be decoded"),
                (false, _) => indeterminate(p.id, "entry overwritten by a later term"),
            };
            self.answer(p.origin, resp);
        }
    }

    fn serve_reads(&mut self) {
        let applied = self.applied;
        let ready: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.index.is_some_and(|i| i <= applied))
            .map(|(&c, _)| c)
            .collect();
        for c in ready {
            if let Some(r) = self.reads.remove(&c) {
                let result = self.machine.query(&r.op);
                self.answer(r.origin, ClientResponse { id: r.id, result });
            }
        }
    }

    /// A digest (FNV-1a) of the machine's image at the applied index.
    pub(crate) fn store_digest(&self) -> u64 {
        crate::fnv1a(&self.machine.encode())
    }

    /// The snapshot data of the machine as applied now.
    pub(crate) fn machine_image(&self) -> Vec<u8> {
        let image = MachineImage {
            conf_epoch: self.conf_epoch,
            machine: self.machine.encode(),
        };
        postcard::to_allocvec(&image).unwrap_or_default()
    }

    fn maybe_compact(&mut self, tuning: ReplicaTuning) -> Result<(), ReplicaError> {
        let every = tuning.snapshot_every_entries;
        let base = self.raft.snapshot_meta().index;
        if every == 0 || self.applied < base + every || self.applied > self.raft.applied_index() {
            return Ok(());
        }
        self.compact_now().map_err(ReplicaError::Raft)
    }

    /// Compacts the log up to the applied index now (its WAL image is saved with the
    /// next `Ready`, as for a periodic compaction).
    pub(crate) fn compact_now(&mut self) -> Result<(), RaftError> {
        let data = self.machine_image();
        self.raft.compact(self.applied, data)
    }

    /// An encoded [`WalImage`] of this group's durable state: `snap` (the group's
    /// snapshot, just taken or installed), every entry the log holds after it and the
    /// hard state. It stands for every record of the group persisted so far.
    fn wal_image(&self, tuning: ReplicaTuning, snap: Snapshot) -> Vec<u8> {
        let group = self.raft.group();
        let entries: Vec<_> = (snap.meta.index + 1..=self.raft.last_index())
            .filter_map(|i| self.raft.entry(i).cloned())
            .collect();
        let mut hs: HardState = self.raft.hard_state();
        if tuning.skip_vote_persist {
            // The image must not make durable what the broken switch never persists.
            hs.vote = None;
        }
        let records = [
            RaftRecord::Snapshot(snap),
            RaftRecord::Entries(entries),
            RaftRecord::HardState(hs),
        ]
        .into_iter()
        .map(|record| WalRecord { group, record }.encode())
        .collect();
        WalImage {
            records,
            tombstone: None,
        }
        .encode()
    }

    /// Answers every request of this group whose deadline passed.
    pub(crate) fn expire(&mut self, now: Time) {
        let expired: Vec<u64> = self
            .proposals
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&i, _)| i)
            .collect();
        for i in expired {
            if let Some(p) = self.proposals.remove(&i) {
                let reason = "not applied within the request timeout";
                self.answer(p.origin, indeterminate(p.id, reason));
            }
        }
        let expired: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(&c, _)| c)
            .collect();
        for c in expired {
            if let Some(r) = self.reads.remove(&c) {
                let reason = "read not served within the request timeout";
                let leader = self.raft.leader();
                self.answer(r.origin, unavailable(r.id, reason, leader));
            }
        }
    }

    /// Answers everything waiting here: the node lost (or gives up) this replica's state
    /// (proposals may have committed; reads had no effect).
    pub(crate) fn abandon(&mut self, why: &str) {
        for p in std::mem::take(&mut self.proposals).into_values() {
            self.answer(p.origin, indeterminate(p.id, why));
        }
        for r in std::mem::take(&mut self.reads).into_values() {
            self.answer(r.origin, unavailable(r.id, why, None));
        }
    }
}

/// A digest of the entry at `index` of `raft`'s log (its term, kind and data), if the
/// log still holds it; for log-matching checks.
pub(crate) fn entry_digest(raft: &RaftGroup, index: u64) -> Option<u64> {
    let e = raft.entry(index)?;
    let mut bytes = Vec::with_capacity(e.data.len() + 9);
    bytes.extend_from_slice(&e.term.to_le_bytes());
    bytes.push(e.kind as u8);
    bytes.extend_from_slice(&e.data);
    Some(crate::fnv1a(&bytes))
}

/// Decodes a group's durable snapshot (a [`WalImage`]) into its WAL records.
pub(crate) fn decode_wal_image(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    WalImage::decode(bytes)
        .map(|i| i.records)
        .map_err(|e| e.to_string())
}

pub(crate) fn read_ok(id: RequestId, value: Option<Value>) -> ClientResponse {
    ClientResponse {
        id,
        result: Ok(OpOutput::Read(value)),
    }
}

pub(crate) fn indeterminate(id: RequestId, reason: &str) -> ClientResponse {
    ClientResponse {
        id,
        result: Err(ClientError::Indeterminate {
            reason: reason.into(),
        }),
    }
}

pub(crate) fn unavailable(id: RequestId, reason: &str, hint: Option<NodeId>) -> ClientResponse {
    ClientResponse {
        id,
        result: Err(ClientError::Unavailable {
            reason: reason.into(),
            hint,
        }),
    }
}

pub(crate) fn invalid(id: RequestId, reason: InvalidRequest) -> ClientResponse {
    ClientResponse {
        id,
        result: Err(ClientError::Invalid { reason }),
    }
}

/// A request the Raft layer refused before it entered the log: it surely did not take
/// effect.
pub(crate) fn refused(id: RequestId, e: &RaftError) -> ClientResponse {
    if let RaftError::EntryTooLarge {
        len_bytes,
        max_bytes,
    } = *e
    {
        let reason = InvalidRequest::CommandTooLarge {
            len_bytes: len_bytes as u64,
            max_bytes: max_bytes as u64,
        };
        return invalid(id, reason);
    }
    let hint = match e {
        RaftError::NotLeader { leader } => *leader,
        RaftError::TransferInProgress { to } => Some(*to),
        _ => None,
    };
    unavailable(id, &e.to_string(), hint)
}

//! One Raft group on a node: the Raft member, the KV store it drives, and the requests
//! waiting on it. [`GroupState::drive`] is steps 1–6 of [`kvlab_raft::Ready`]'s contract
//! for this group.

use std::collections::BTreeMap;

use kvlab_raft::{EntryKind, HardState, RaftGroup, RaftRecord, Snapshot, WalRecord};
use kvlab_types::{
    ClientRequest, ClientResponse, KvOp, NodeEvent, NodeId, OpOutput, Out, RequestId, Time,
};
use serde::{Deserialize, Serialize};

use super::{
    KvCommand, Origin, RaftKvConfig, RaftKvError, RaftKvMsg, ReadMode, indeterminate, refused,
    respond, unavailable,
};
use crate::kv::{ApplyResult, KvStore};

/// The durable snapshot of one group: encoded [`WalRecord`]s that rebuild the group's
/// durable state (snapshot, entries after it, hard state) as of the moment it was saved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct WalImage {
    pub(super) records: Vec<Vec<u8>>,
}

/// A proposal waiting for its entry to be applied.
#[derive(Clone, Debug)]
pub(super) struct PendingProposal {
    pub(super) term: u64,
    pub(super) id: RequestId,
    pub(super) origin: Origin,
    pub(super) deadline: Time,
}

/// A ReadIndex read waiting for its read point, then for the store to reach it.
#[derive(Clone, Debug)]
pub(super) struct PendingRead {
    pub(super) id: RequestId,
    pub(super) key: String,
    pub(super) origin: Origin,
    pub(super) deadline: Time,
    /// The read point, once leadership was confirmed.
    pub(super) index: Option<u64>,
}

/// One group on this node: the Raft member, the state machine it drives, and the
/// requests waiting on it.
#[derive(Debug)]
pub(super) struct GroupState {
    pub(super) raft: RaftGroup,
    pub(super) kv: KvStore,
    /// The last index applied to `kv`.
    pub(super) applied: u64,
    /// Proposals by log index.
    pub(super) proposals: BTreeMap<u64, PendingProposal>,
    /// ReadIndex reads by context.
    pub(super) reads: BTreeMap<u64, PendingRead>,
    /// The encoded store of a compaction whose snapshot record has not been emitted yet;
    /// the WAL image is saved right after it is.
    pub(super) compaction_image_due: Option<Vec<u8>>,
    /// Set when a leader said this node is not a member of its configuration: until the
    /// local log reaches that entry, or a leader of a later term replicates to this node
    /// (it was added back, or the claim was false), the node neither ticks the group (no
    /// campaigns) nor serves its clients. Volatile: after a restart the node may
    /// campaign again until a leader tells it anew, which PreVote makes harmless.
    pub(super) removed_by_conf: Option<Removal>,
}

/// What a leader's `NotMember` said, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Removal {
    /// The index of the leader's configuration entry that does not list this node.
    pub(super) conf_index: u64,
    /// This node's term when it was told.
    pub(super) term: u64,
}

impl GroupState {
    pub(super) fn new(raft: RaftGroup) -> Self {
        GroupState {
            raft,
            kv: KvStore::default(),
            applied: 0,
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            compaction_image_due: None,
            removed_by_conf: None,
        }
    }

    /// Starts serving `req` on this group's leader: a ReadIndex read (with read context
    /// `ctx`) or a proposal. Returns whether `ctx` was used.
    pub(super) fn start(
        &mut self,
        req: ClientRequest,
        origin: Origin,
        deadline: Time,
        read_mode: ReadMode,
        ctx: u64,
        out: &mut Out<RaftKvMsg>,
    ) -> bool {
        if let (KvOp::Read { key }, ReadMode::ReadIndex) = (&req.op, read_mode) {
            match self.raft.read_index(ctx) {
                Ok(()) => {
                    let read = PendingRead {
                        id: req.id,
                        key: key.clone(),
                        origin,
                        deadline,
                        index: None,
                    };
                    self.reads.insert(ctx, read);
                }
                Err(e) => respond(origin, refused(req.id, &e), out),
            }
            return true;
        }
        let cmd = KvCommand {
            id: req.id,
            op: req.op,
        };
        match self.raft.propose(cmd.encode()) {
            Ok(at) => {
                let pending = PendingProposal {
                    term: at.term,
                    id: cmd.id,
                    origin,
                    deadline,
                };
                if let Some(old) = self.proposals.insert(at.index, pending) {
                    // An older term's proposal at this index was cut from the log.
                    let resp = indeterminate(old.id, "entry overwritten by a later term");
                    respond(old.origin, resp, out);
                }
            }
            Err(e) => respond(origin, refused(cmd.id, &e), out),
        }
        false
    }
    pub(super) fn is_member(&self, me: NodeId) -> bool {
        // While joint, an outgoing voter (demoted or removed by the joint change) is
        // still a member: it votes, and may even lead, until the group leaves.
        self.raft.is_member(me) && !self.told_removed()
    }

    /// Whether a leader told this node it was removed by an entry not yet in its log,
    /// and no leader of a later term has replicated to it since.
    pub(super) fn told_removed(&self) -> bool {
        self.removed_by_conf.is_some_and(|r| {
            let followed_since = self.raft.leader().is_some() && self.raft.term() > r.term;
            self.raft.conf_index() < r.conf_index && !followed_since
        })
    }

    pub(super) fn drive(
        &mut self,
        cfg: &RaftKvConfig,
        out: &mut Out<RaftKvMsg>,
    ) -> Result<(), RaftKvError> {
        while self.raft.has_ready() {
            let mut rd = self.raft.ready();
            rd.emit_effects(out, RaftKvMsg::Raft);
            if let Some(kv_bytes) = self.compaction_image_due.take() {
                // The snapshot record went out with this Ready: everything the group holds
                // is now persisted, so an image of it may replace the durable snapshot.
                out.save_snapshot(self.raft.group(), self.wal_image(cfg, kv_bytes));
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

    pub(super) fn restore(
        &mut self,
        snap: Snapshot,
        out: &mut Out<RaftKvMsg>,
    ) -> Result<(), RaftKvError> {
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

    pub(super) fn apply_entry(
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
                out.event(NodeEvent::ConfigCommitted {
                    group: self.raft.group(),
                    index,
                    term,
                    voters: self.raft.voters().to_vec(),
                    learners: self.raft.learners().to_vec(),
                });
                None
            }
            EntryKind::Normal => match KvCommand::decode(data) {
                Ok(cmd) => Some(self.kv.apply(cmd.id, &cmd.op)),
                Err(e) => {
                    // Every replica has the same committed entry, so every replica skips
                    // it the same way and the stores stay identical.
                    out.event(NodeEvent::BadCommand {
                        group: self.raft.group(),
                        index,
                        reason: e.to_string(),
                    });
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

    pub(super) fn serve_reads(&mut self, out: &mut Out<RaftKvMsg>) {
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

    pub(super) fn maybe_compact(&mut self, cfg: &RaftKvConfig) -> Result<(), RaftKvError> {
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
    pub(super) fn wal_image(&self, cfg: &RaftKvConfig, kv_bytes: Vec<u8>) -> Vec<u8> {
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

    /// Answers every request of this group whose deadline passed.
    pub(super) fn expire(&mut self, now: Time, out: &mut Out<RaftKvMsg>) {
        let expired: Vec<u64> = self
            .proposals
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&i, _)| i)
            .collect();
        for i in expired {
            if let Some(p) = self.proposals.remove(&i) {
                respond(
                    p.origin,
                    indeterminate(p.id, "not applied within the request timeout"),
                    out,
                );
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
                respond(
                    r.origin,
                    unavailable(
                        r.id,
                        "read not served within the request timeout",
                        self.raft.leader(),
                    ),
                    out,
                );
            }
        }
    }

    /// Answers everything waiting here: the node lost its state (proposals may have
    /// committed; reads had no effect).
    pub(super) fn abandon(self, out: &mut Out<RaftKvMsg>) {
        for p in self.proposals.into_values() {
            respond(p.origin, indeterminate(p.id, "node lost its state"), out);
        }
        for r in self.reads.into_values() {
            respond(
                r.origin,
                unavailable(r.id, "node lost its state", None),
                out,
            );
        }
    }
}

//! `kvlab`: the composed node — SWIM membership, a ring of vnodes, a metadata Raft group
//! and one Raft group per vnode, as one sans-IO [`Protocol`].
//!
//! ## The pieces on one node
//!
//! | piece | module | what it does |
//! |---|---|---|
//! | SWIM | [`kvlab_swim::Swim`] | membership and failure detection; feeds the meta leader's scheduler |
//! | vnode replicas | [`vnodes`] | one [`crate::replica::Replica`] of [`KvStore`] per hosted vnode; created, destroyed, tombstoned |
//! | meta | [`meta`] | on the meta voters: the replicated [`kvlab_ring::MetaState`]; on its leader, the scheduler |
//! | gateway | [`route`] | routes each client request to its vnode's leader, following hinted refusals |
//! | pacer | [`pace`] | limits the bytes and streams of snapshot chunks (data moving between nodes) |
//!
//! A key belongs to vnode `layout.vnode_of(key)` (the top bits of xxh3-64, fixed for the
//! life of the cluster); vnode `v` is Raft group `v`. The *placement* — which nodes hold
//! `v` — changes: every node boots with the same initial placement computed from
//! `[ring]` and the initial members, and after that only a vnode's own log changes its
//! members, one operator step at a time, each step checked against the group's
//! configuration epoch. Meta records what the groups report (intent and directory), never
//! the truth about a group's members.
//!
//! ## What flows where
//!
//! * Every node, every `meta.store_heartbeat_interval_ms` (and at once when a group it
//!   leads changes configuration or leader): a store report (hosted vnodes and bytes, led
//!   groups with descriptors and down peers) to every meta voter. The meta leader's
//!   scheduler reads them; its answer names replicas the node should destroy.
//! * The meta leader, every `meta.schedule_interval_ms`: proposes what its scheduler
//!   decided, and sends each running operator's step to the vnode's leader.
//! * A vnode leader carries out a step under the epoch precondition (see
//!   [`vnodes::Vnodes::execute`]); its next report shows the new configuration, and meta
//!   advances the operator.
//! * Clients talk to any node; its gateway routes the request ([`route`]).
//!
//! ## Where this differs from the design note (wave 2)
//!
//! * The epoch is checked when the leader proposes a step, not again when the entry is
//!   applied: kvlab-raft applies a configuration when the entry is appended and allows one
//!   change in flight, and the leader refuses a step while a configuration entry is
//!   unapplied, so the epoch it checked is the one the entry lands on.
//! * Joint consensus: this build's vnode groups run single-server changes; a joint step
//!   is refused (`scheduler.conf_change = "single-step"` plans without them).
//! * Replica garbage collection uses meta's answer to store reports plus tombstones
//!   carried by a log epoch on every Raft message (TiKV's region epoch in messages).

use std::collections::BTreeSet;
use std::time::Duration;

use kvlab_raft::{
    GroupId, MAX_INDEX, MessageBody, RaftError, RaftGroup, RaftMessage, RecoveredState, Role,
};
use kvlab_ring::meta::{MetaCmd, MetaState, NodeState, StoreReport, swim_observation};
use kvlab_ring::{
    META_GROUP, Placement, RingLayout, StepCommand, VnodeId, group_vnode, initial_placement,
};
use kvlab_swim::{SWIM_STATE, Swim, SwimMsg, recover_incarnation};
use kvlab_types::{
    AdminAction, AdminCommand, ClientRequest, ClientResponse, Cx, Effect, KvOp, Layer, NodeEvent,
    NodeId, Out, Protocol, Recovery, ReplicaCause, Scope, Time, TimerId, TimerSpace, log_shard,
};
use serde::{Deserialize, Serialize};

use crate::kv::KvStore;
use crate::raft_kv::ReadMode;
use crate::replica::{
    Origin, Removal, Replica, ReplicaTuning, decode_wal_image, invalid, unavailable,
};

mod config;
pub mod meta;
pub mod pace;
pub mod route;
pub mod txn;
pub mod txn_store;
pub mod vnodes;

#[cfg(test)]
mod broken_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod scope_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod txn_tests;

pub use config::{KvlabConfig, KvlabConfigError, MAX_ROUTE_ATTEMPTS};
use meta::{MetaMachine, MetaNode};
use pace::{Outgoing, Pacer};
use route::{Gateway, RouteAction, RouteDescriptor, RouteMsg, RouteRefusal};
use vnodes::{StepOutcome, VnodeEnv, Vnodes};

/// Ticks every Raft group, expires requests and retries routes.
pub const TICK_TIMER: TimerId = TimerId::new(TimerSpace::Node, 0);
/// Sends the store report.
pub const REPORT_TIMER: TimerId = TimerId::new(TimerSpace::Node, 1);
/// Runs the meta leader's scheduler.
pub const SCHEDULE_TIMER: TimerId = TimerId::new(TimerSpace::Node, 2);
/// Releases paced snapshot chunks.
pub const PACE_TIMER: TimerId = TimerId::new(TimerSpace::Node, 3);
/// How often held snapshot chunks are reconsidered.
const PACE_INTERVAL: Duration = Duration::from_millis(10);

/// The most requests waiting on one node's vnode leaders at once.
pub const MAX_PENDING_REQUESTS: usize = 65_536;

/// What nodes of the `kvlab` system send each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvlabMsg {
    /// SWIM.
    Swim(SwimMsg),
    /// Raft messages of vnode groups and of the meta group, each with its sender
    /// replica's log configuration epoch (see [`vnodes`]): everything one step sends to
    /// one node, batched (CockroachDB coalesces heartbeats the same way), at most
    /// [`MAX_RAFT_BATCH`] messages.
    Raft(Vec<RaftEnvelope>),
    /// A leader tells a campaigning node it is not a member of its configuration.
    NotMember {
        /// The group.
        group: GroupId,
        /// The leader's configuration entry in effect.
        conf_index: u64,
    },
    /// Client request routing.
    Route(RouteMsg),
    /// Between nodes and the meta group.
    Meta(MetaMsg),
    /// Transactions (see [`txn`]).
    Txn(kvlab_txn::TxnMsg),
    /// A node that does not lead `group` got a transaction message for its leader.
    TxnNotLeader {
        /// The group.
        group: GroupId,
        /// The leader the node knows of.
        leader: Option<NodeId>,
    },
}

/// One Raft message and its sender replica's log epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftEnvelope {
    /// The sender replica's log epoch.
    pub epoch: u64,
    /// The message.
    pub msg: RaftMessage,
}

/// The most Raft messages in one batch; a longer one is refused.
pub const MAX_RAFT_BATCH: usize = 4096;
/// A batch is closed once its messages' encoded size passes this many bytes.
const RAFT_BATCH_BYTES: usize = 1 << 20;

/// Messages to and from the meta group's voters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaMsg {
    /// A store heartbeat, with the log epoch of every hosted replica.
    Report {
        /// The report.
        report: StoreReport,
        /// `(vnode, log epoch)` of every hosted replica.
        epochs: Vec<(VnodeId, u64)>,
    },
    /// Steps for the groups the receiver leads.
    Steps(Vec<StepCommand>),
    /// A gateway asks for a vnode's directory entry.
    Lookup {
        /// The vnode.
        vnode: VnodeId,
    },
    /// The answer to `Lookup`.
    Directory {
        /// The vnode.
        vnode: VnodeId,
        /// What meta has recorded.
        descriptor: Option<RouteDescriptor>,
    },
    /// Replicas the receiver should destroy: `(vnode, epoch of the configuration that
    /// left it out)`.
    Gc {
        /// The replicas.
        replicas: Vec<(VnodeId, u64)>,
    },
    /// A node asks to be drained.
    Drain {
        /// The node.
        node: NodeId,
    },
}

/// Counters of one node, for status pages and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvlabCounters {
    /// Peer messages refused as malformed or implausible.
    pub refused_messages: u64,
    /// Peer messages dropped (for a group not here, stale).
    pub dropped_messages: u64,
    /// Step commands started by this node's leaders.
    pub steps_started: u64,
    /// Store reports sent.
    pub reports_sent: u64,
}

/// A node of the composed `kvlab` system. See [the module docs](self).
#[derive(Debug)]
pub struct KvlabNode {
    id: NodeId,
    cfg: KvlabConfig,
    layout: RingLayout,
    bootstrap: Placement,
    group_raft: kvlab_raft::RaftConfig,
    swim: Option<Swim>,
    vnodes: Vnodes,
    meta: Option<MetaNode>,
    gateway: Gateway,
    pacer: Pacer,
    /// Set when boot could not rebuild the durable state: the node then refuses to serve.
    poisoned: Option<String>,
    /// Asked to drain (admin `Drain`).
    draining: bool,
    /// Vnodes touched since their last drive.
    dirty: BTreeSet<VnodeId>,
    /// Whether the meta replica was touched since its last drive.
    meta_dirty: bool,
    /// A store report is due at the end of this step.
    report_due: bool,
    /// Rotates lookups over the meta voters.
    lookups: u64,
    /// Raft messages of this step, batched per destination (sent at its end).
    outbox: std::collections::BTreeMap<NodeId, Vec<(Vec<RaftEnvelope>, usize)>>,
    counters: KvlabCounters,
    /// The transaction gateway (coordinators) and local transaction messages.
    txn: txn::TxnGateway,
    /// The transaction state of the vnodes this node leads.
    txn_leaders: std::collections::BTreeMap<VnodeId, txn::LeaderTxn>,
}

impl KvlabNode {
    /// The ring layout.
    pub fn layout(&self) -> RingLayout {
        self.layout
    }

    /// The vnodes this node hosts a replica of.
    pub fn hosted(&self) -> impl Iterator<Item = VnodeId> + '_ {
        self.vnodes.replicas.keys().copied()
    }

    /// The Raft member of `v`'s replica here.
    pub fn raft(&self, v: VnodeId) -> Option<&RaftGroup> {
        self.vnodes.replicas.get(&v).map(|r| &r.r.raft)
    }

    /// The store of `v`'s replica here.
    pub fn store(&self, v: VnodeId) -> Option<&KvStore> {
        self.vnodes.replicas.get(&v).map(|r| &r.r.machine.kv)
    }

    /// The state machine (store and transaction state) of `v`'s replica here.
    pub fn vnode_store(&self, v: VnodeId) -> Option<&txn_store::VnodeStore> {
        self.vnodes.replicas.get(&v).map(|r| &r.r.machine)
    }

    /// The applied index and configuration epoch of `v`'s replica here.
    pub fn applied(&self, v: VnodeId) -> Option<(u64, u64)> {
        self.vnodes
            .replicas
            .get(&v)
            .map(|r| (r.r.applied, r.r.conf_epoch))
    }

    /// The applied configuration of `v`'s replica here, as the ring names it (`None`
    /// while a configuration change is in flight, or if not hosted).
    pub fn replica_set(&self, v: VnodeId) -> Option<kvlab_ring::ReplicaSet> {
        self.vnodes.replicas.get(&v)?.replica_set()
    }

    /// Whether this node is a member of `v`'s group as its replica here sees it.
    pub fn is_member_of(&self, v: VnodeId) -> bool {
        self.vnodes
            .replicas
            .get(&v)
            .is_some_and(|r| r.r.is_member(self.id))
    }

    /// Bytes of `v`'s state machine image here (what a snapshot of it carries).
    pub fn image_bytes(&self, v: VnodeId) -> Option<u64> {
        let r = self.vnodes.replicas.get(&v)?;
        Some(r.r.machine_image().len() as u64)
    }

    /// The vnodes whose replica here was destroyed, with the tombstone epoch.
    pub fn tombstones(&self) -> impl Iterator<Item = (VnodeId, u64)> + '_ {
        self.vnodes.tombstones.iter().map(|(v, e)| (*v, *e))
    }

    /// The meta replica's state, on a meta voter.
    pub fn meta_state(&self) -> Option<&MetaState> {
        self.meta.as_ref().map(MetaNode::state)
    }

    /// The placement scheduler's counters, on the meta leader (its current term only:
    /// a new leader starts a new scheduler).
    pub fn scheduler_counters(&self) -> Option<&kvlab_ring::meta::SchedulerCounters> {
        self.meta
            .as_ref()?
            .scheduler
            .as_ref()
            .map(|(_, s)| s.counters())
    }

    /// The meta group's Raft member, on a meta voter.
    pub fn meta_raft(&self) -> Option<&RaftGroup> {
        self.meta.as_ref().map(|m| &m.replica.raft)
    }

    /// SWIM's membership table.
    pub fn swim(&self) -> Option<&Swim> {
        self.swim.as_ref()
    }

    /// Why the node refuses to serve, if it does.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Counters.
    pub fn counters(&self) -> &KvlabCounters {
        &self.counters
    }

    /// Routing redirects this node's gateway followed.
    pub fn redirects(&self) -> u64 {
        self.gateway.redirects
    }

    /// Snapshot bytes this node sent (data moved off it).
    pub fn snapshot_bytes_sent(&self) -> u64 {
        self.pacer.bytes_sent
    }

    /// Vnode groups this node leads.
    pub fn led(&self) -> impl Iterator<Item = VnodeId> + '_ {
        self.vnodes
            .replicas
            .iter()
            .filter(|(_, r)| r.r.raft.role() == Role::Leader)
            .map(|(v, _)| *v)
    }

    fn tuning(&self) -> ReplicaTuning {
        ReplicaTuning {
            snapshot_every_entries: self.cfg.snapshot_every_entries,
            skip_vote_persist: self.cfg.raft.unsafe_skip_vote_persist,
        }
    }

    fn is_meta_voter(&self, n: NodeId) -> bool {
        self.cfg.meta.voters.contains(&n)
    }

    fn refuse(&mut self, from: NodeId, reason: String, out: &mut Out<KvlabMsg>) {
        self.counters.dropped_messages += 1;
        self.counters.refused_messages += 1;
        if self.counters.refused_messages.is_power_of_two() {
            out.event(NodeEvent::MessageRefused {
                from,
                reason,
                refused_total: self.counters.refused_messages,
            });
        }
    }

    // ----- boot --------------------------------------------------------------------

    fn recover(
        &mut self,
        cx: &mut Cx<'_>,
        recovered: &Recovery,
        out: &mut Out<KvlabMsg>,
    ) -> Result<(), String> {
        for (&group, durable) in &recovered.groups {
            if group == SWIM_STATE || group == META_GROUP {
                continue;
            }
            let v = group_vnode(group)
                .filter(|v| self.layout.contains(*v))
                .ok_or_else(|| format!("durable state of group {group}, outside the ring"))?;
            let env = VnodeEnv {
                me: self.id,
                raft: &self.group_raft,
                bootstrap: &self.bootstrap,
            };
            self.vnodes
                .recover(&env, v, durable.clone(), cx.now, cx.rng, out)?;
        }
        let env = VnodeEnv {
            me: self.id,
            raft: &self.group_raft,
            bootstrap: &self.bootstrap,
        };
        self.vnodes.bootstrap(&env, cx.now, cx.rng, out)?;
        if self.is_meta_voter(self.id) {
            self.meta = Some(self.recover_meta(cx, recovered, out)?);
        }
        self.dirty = self.vnodes.replicas.keys().copied().collect();
        self.meta_dirty = true;
        Ok(())
    }

    fn recover_meta(
        &self,
        cx: &mut Cx<'_>,
        recovered: &Recovery,
        out: &mut Out<KvlabMsg>,
    ) -> Result<MetaNode, String> {
        let durable = recovered.group(META_GROUP);
        let mut wal = Vec::new();
        if let Some(bytes) = &durable.snapshot {
            wal.extend(decode_wal_image(bytes).map_err(|e| format!("meta snapshot: {e}"))?);
        }
        wal.extend(durable.records);
        let state = RecoveredState::from_wal(META_GROUP, &wal).map_err(|e| e.to_string())?;
        let raft = RaftGroup::recover(
            META_GROUP,
            self.id,
            &self.cfg.meta.voters,
            self.group_raft.clone(),
            state,
            cx.rng,
        )
        .map_err(|e| e.to_string())?;
        let members: Vec<(NodeId, Option<String>)> = self
            .bootstrap
            .nodes()
            .into_iter()
            .map(|n| (n, None))
            .collect();
        let rf = self.cfg.replication_factor as usize;
        let state = MetaState::bootstrap(rf, &members, &self.bootstrap, Time::ZERO)
            .map_err(|e| format!("meta bootstrap: {e}"))?;
        out.event(NodeEvent::ReplicaCreated {
            group: META_GROUP,
            cause: if recovered.groups.contains_key(&META_GROUP) {
                ReplicaCause::Recovered
            } else {
                ReplicaCause::Bootstrap
            },
        });
        let machine = MetaMachine {
            state,
            bad_entries: 0,
        };
        Ok(MetaNode::new(
            Replica::new(raft, machine),
            self.cfg.ring_spec(),
        ))
    }

    fn start_swim(
        &mut self,
        cx: &mut Cx<'_>,
        recovered: &Recovery,
        initial: &[NodeId],
        out: &mut Out<KvlabMsg>,
    ) {
        let rec = recover_incarnation(recovered);
        let incarnation = rec
            .highest
            .map_or(0, |h| h.saturating_add(1).min(kvlab_swim::MAX_INCARNATION));
        let mut config = self.cfg.swim.clone();
        if config.seeds.is_empty() {
            config.seeds = initial
                .iter()
                .copied()
                .filter(|&p| p != self.id)
                .take(kvlab_swim::DEFAULT_SEED_COUNT)
                .collect();
        }
        let address = format!("{}/inc{incarnation}", self.id);
        match Swim::new(self.id, address, incarnation, config) {
            Ok(mut swim) => {
                let mut scratch = Out::new();
                swim.start(cx, &mut scratch);
                swim.drain_events();
                scratch.drain_into(out, KvlabMsg::Swim);
                self.swim = Some(swim);
            }
            Err(e) => out.event(NodeEvent::RecoveryFailed {
                reason: format!("invalid SWIM configuration: {e}"),
            }),
        }
    }

    // ----- the end of every step -------------------------------------------------------

    /// Drives the touched replicas, delivers answers, refreshes the route cache from
    /// first-hand knowledge, and sends a report if one is due.
    fn settle(&mut self, cx: &mut Cx<'_>, out: &mut Out<KvlabMsg>) {
        if self.poisoned.is_some() {
            return;
        }
        let tuning = self.tuning();
        let shards = cx.log_shards;
        let mut scratch: Out<RaftMessage> = Out::new();
        // Transaction messages to this node itself can propose entries, and entries
        // applied can answer this node's coordinators: two rounds, the rest next step.
        for _ in 0..2 {
            self.run_local_txn(cx, out);
            self.drive_dirty(cx, out);
        }
        if std::mem::take(&mut self.meta_dirty)
            && let Some(m) = self.meta.as_mut()
        {
            if let Err(e) = m.replica.drive(tuning, &mut scratch, |m| m) {
                out.event(NodeEvent::RecoveryFailed {
                    reason: format!("meta group: {e}"),
                });
            }
            m.replica.take_answers().for_each(drop);
            self.flush(cx.now, 0, &mut scratch, out);
        }
        self.vnodes.note_roles(cx.now);
        if self.report_due || self.vnodes.descriptors_changed() {
            self.report_due = false;
            self.send_report(cx, out);
        }
        if self.pacer.has_held() {
            out.set_timer(PACE_TIMER, PACE_INTERVAL);
        }
        self.send_batches(shards, out);
    }

    /// Drives the touched vnode replicas and delivers their answers.
    fn drive_dirty(&mut self, cx: &mut Cx<'_>, out: &mut Out<KvlabMsg>) {
        let tuning = self.tuning();
        let dirty = std::mem::take(&mut self.dirty);
        let mut scratch: Out<RaftMessage> = Out::new();
        let shards = cx.log_shards;
        for v in dirty {
            let Some(rep) = self.vnodes.replicas.get_mut(&v) else {
                continue;
            };
            if shards > 1 {
                // A vnode's records, syncs and answers concern its own log alone.
                let shard = log_shard(kvlab_ring::vnode_group(v), shards) as u32;
                out.push(Effect::Scope(Scope::Shard(shard)));
            }
            if let Err(e) = Vnodes::drive_one(rep, tuning, &mut scratch) {
                // A snapshot that does not decode: this replica cannot go on. It is
                // dropped (not the node): the group's leader re-sends a snapshot.
                out.event(NodeEvent::RecoveryFailed {
                    reason: format!("vnode {v}: {e}"),
                });
            }
            let epoch = rep.log_epoch();
            let answers: Vec<_> = rep.r.take_answers().collect();
            let applied_txn = std::mem::take(&mut rep.r.machine.applied_txn);
            let voters = match applied_txn.is_empty() {
                true => Vec::new(),
                false => rep.r.raft.voters().to_vec(),
            };
            let leader = rep.r.raft.leader();
            let conf_epoch = rep.r.conf_epoch;
            self.flush(cx.now, epoch, &mut scratch, out);
            for (origin, resp) in answers {
                self.deliver(cx, origin, resp, out);
            }
            self.report_txn_steps(v, &voters, &applied_txn, out);
            self.on_txn_applied(v, applied_txn, out);
            self.gateway.note_leader(v, leader, conf_epoch);
        }
        if shards > 1 {
            out.push(Effect::Scope(Scope::Node));
        }
    }

    /// Moves a replica's effects to `out`, wrapping its messages and pacing snapshot
    /// chunks.
    fn flush(
        &mut self,
        now: Time,
        epoch: u64,
        scratch: &mut Out<RaftMessage>,
        out: &mut Out<KvlabMsg>,
    ) {
        for e in scratch.drain() {
            match e {
                Effect::Send { to, msg } => {
                    if let Some(o) = self.pacer.offer(now, epoch, msg) {
                        self.send_raft(to, o, out);
                    }
                }
                other => {
                    out.push(other.map_msg(|msg| KvlabMsg::Raft(vec![RaftEnvelope { epoch, msg }])))
                }
            }
        }
    }

    /// Queues a Raft message for this step's batch to `to`, reporting a completed
    /// snapshot transfer.
    fn send_raft(&mut self, to: NodeId, (epoch, msg): Outgoing, out: &mut Out<KvlabMsg>) {
        if let Some((group, to, index, bytes)) = self.pacer.completes(&msg) {
            out.event(NodeEvent::SnapshotSent {
                group,
                to,
                index,
                bytes,
            });
        }
        let size = kvlab_types::Message::wire_size(&msg);
        let batches = self.outbox.entry(to).or_default();
        match batches.last_mut() {
            Some((b, bytes)) if b.len() < MAX_RAFT_BATCH && *bytes < RAFT_BATCH_BYTES => {
                b.push(RaftEnvelope { epoch, msg });
                *bytes += size;
            }
            _ => batches.push((vec![RaftEnvelope { epoch, msg }], size)),
        }
    }

    /// Sends this step's Raft batches (after every effect of the step, so after any
    /// sync the step issued). With several logs, each batch is split by log shard and
    /// sent in that shard's scope: a group's message depends on its own log alone, so
    /// it need not wait for another shard's disk.
    fn send_batches(&mut self, shards: usize, out: &mut Out<KvlabMsg>) {
        let outbox = std::mem::take(&mut self.outbox);
        if shards <= 1 {
            for (to, batches) in outbox {
                for (b, _) in batches {
                    out.send(to, KvlabMsg::Raft(b));
                }
            }
            return;
        }
        let mut by_shard: std::collections::BTreeMap<usize, Vec<(NodeId, Vec<RaftEnvelope>)>> =
            Default::default();
        for (to, batches) in outbox {
            for (b, _) in batches {
                let mut parts: std::collections::BTreeMap<usize, Vec<RaftEnvelope>> =
                    Default::default();
                for e in b {
                    parts
                        .entry(log_shard(e.msg.group, shards))
                        .or_default()
                        .push(e);
                }
                for (shard, part) in parts {
                    by_shard.entry(shard).or_default().push((to, part));
                }
            }
        }
        for (shard, sends) in by_shard {
            out.push(Effect::Scope(Scope::Shard(shard as u32)));
            for (to, b) in sends {
                out.send(to, KvlabMsg::Raft(b));
            }
        }
        out.push(Effect::Scope(Scope::Node));
    }

    fn send_report(&mut self, cx: &mut Cx<'_>, out: &mut Out<KvlabMsg>) {
        let down_after = Duration::from_millis(self.cfg.membership.peer_down_after_ms);
        let led = self.vnodes.led_groups(cx.now, down_after);
        let hosted_bytes = self
            .vnodes
            .replicas
            .iter()
            .filter(|(_, r)| r.initialized() && r.r.is_member(self.id))
            .map(|(v, r)| (*v, r.bytes()))
            .collect();
        let epochs: Vec<(VnodeId, u64)> = self
            .vnodes
            .replicas
            .iter()
            .map(|(v, r)| (*v, r.log_epoch()))
            .collect();
        let report = StoreReport {
            node: self.id,
            address: self.swim.as_ref().map(|s| s.address().to_string()),
            hosted_bytes,
            led,
        };
        self.counters.reports_sent += 1;
        for voter in self.cfg.meta.voters.clone() {
            if voter == self.id {
                self.on_report(cx, self.id, report.clone(), &epochs, out);
            } else {
                let msg = MetaMsg::Report {
                    report: report.clone(),
                    epochs: epochs.clone(),
                };
                out.send(voter, KvlabMsg::Meta(msg));
            }
        }
    }

    // ----- routing -----------------------------------------------------------------

    /// Serves `req` on `v`'s replica here if it leads the group, or says why not.
    fn serve_at_replica(
        &mut self,
        now: Time,
        v: VnodeId,
        req: ClientRequest,
        origin: Origin,
        req_epoch: u64,
    ) -> Result<(), RouteRefusal> {
        let me = self.id;
        let Some(rep) = self.vnodes.replicas.get_mut(&v) else {
            return Err(RouteRefusal::GroupNotHere);
        };
        if !rep.r.is_member(me) {
            return Err(RouteRefusal::GroupNotHere);
        }
        if rep.r.raft.role() != Role::Leader {
            let leader = rep.r.raft.leader().filter(|&l| l != me);
            if rep.r.conf_epoch > req_epoch {
                let descriptor = RouteDescriptor {
                    voters: rep.r.raft.voters().to_vec(),
                    epoch: rep.r.conf_epoch,
                    leader,
                };
                return Err(RouteRefusal::EpochNotMatch { descriptor });
            }
            return Err(RouteRefusal::NotLeader { leader });
        }
        let pending: usize = self.vnodes.replicas.values().map(|r| r.r.pending()).sum();
        if pending >= MAX_PENDING_REQUESTS {
            return Err(RouteRefusal::NotLeader { leader: None });
        }
        let deadline = now + Duration::from_millis(self.cfg.request_timeout_ms);
        let ctx = self.vnodes.next_read_ctx;
        let read_index = self.cfg.read_mode == ReadMode::ReadIndex;
        let Some(rep) = self.vnodes.replicas.get_mut(&v) else {
            return Err(RouteRefusal::GroupNotHere);
        };
        if rep.r.start(req, origin, deadline, read_index, ctx) {
            self.vnodes.next_read_ctx += 1;
        }
        self.dirty.insert(v);
        Ok(())
    }

    /// Carries out what the gateway decided.
    fn perform(&mut self, cx: &mut Cx<'_>, action: RouteAction, out: &mut Out<KvlabMsg>) {
        let mut queue = vec![action];
        while let Some(action) = queue.pop() {
            match action {
                RouteAction::Answer(resp) => out.push(Effect::Reply(resp)),
                RouteAction::Send {
                    to,
                    req,
                    attempt,
                    epoch,
                } if to == self.id => {
                    let (id, v) = (req.id, self.layout.vnode_of(req.op.key()));
                    // Served here, the answer comes back through the gateway like a
                    // remote one, so that a refusal is retried too.
                    let origin = Origin::Forwarded(self.id);
                    match self.serve_at_replica(cx.now, v, req, origin, epoch) {
                        Ok(()) => {}
                        Err(refusal) => {
                            // Back into the gateway as if another node had refused.
                            if let Some(next) =
                                self.gateway.on_refused(cx.now, to, id, attempt, refusal)
                            {
                                queue.push(next);
                            }
                        }
                    }
                }
                RouteAction::Send {
                    to,
                    req,
                    attempt,
                    epoch,
                } => out.send(
                    to,
                    KvlabMsg::Route(RouteMsg::Request {
                        req,
                        attempt,
                        epoch,
                    }),
                ),
                RouteAction::Lookup(vnode) => {
                    let voters = &self.cfg.meta.voters;
                    let to = voters[(self.lookups as usize) % voters.len()];
                    self.lookups += 1;
                    if to == self.id {
                        let descriptor = self.directory(vnode);
                        queue.extend(self.gateway.on_directory(cx.now, vnode, descriptor));
                    } else {
                        out.send(to, KvlabMsg::Meta(MetaMsg::Lookup { vnode }));
                    }
                }
            }
        }
    }

    /// Delivers a replica's answer: to the gateway that routed it (this node's own, or
    /// another's), or to a local client.
    fn deliver(
        &mut self,
        cx: &mut Cx<'_>,
        origin: Origin,
        resp: ClientResponse,
        out: &mut Out<KvlabMsg>,
    ) {
        match origin {
            Origin::Local => out.push(Effect::Reply(resp)),
            Origin::Forwarded(to) if to == self.id => {
                if let Some(a) = self.gateway.on_reply(cx.now, to, resp) {
                    self.perform(cx, a, out);
                }
            }
            Origin::Forwarded(to) => out.send(to, KvlabMsg::Route(RouteMsg::Reply { resp })),
        }
    }

    fn directory(&self, v: VnodeId) -> Option<RouteDescriptor> {
        let rec = self.meta_state()?.descriptor(v)?;
        Some(RouteDescriptor {
            voters: rec.descriptor.replicas.voters.iter().copied().collect(),
            epoch: rec.descriptor.conf_epoch().0,
            leader: rec.leader,
        })
    }

    fn on_route(&mut self, cx: &mut Cx<'_>, from: NodeId, msg: RouteMsg, out: &mut Out<KvlabMsg>) {
        match msg {
            RouteMsg::Request {
                req,
                attempt,
                epoch,
            } => {
                let id = req.id;
                if let Err(reason) = crate::validate_kv_only(&req) {
                    let resp = invalid(id, reason);
                    out.send(from, KvlabMsg::Route(RouteMsg::Reply { resp }));
                    return;
                }
                if self.poisoned.is_some() {
                    let refusal = RouteRefusal::GroupNotHere;
                    out.send(
                        from,
                        KvlabMsg::Route(RouteMsg::Refused {
                            id,
                            attempt,
                            refusal,
                        }),
                    );
                    return;
                }
                let v = self.layout.vnode_of(req.op.key());
                if let Err(refusal) =
                    self.serve_at_replica(cx.now, v, req, Origin::Forwarded(from), epoch)
                {
                    out.send(
                        from,
                        KvlabMsg::Route(RouteMsg::Refused {
                            id,
                            attempt,
                            refusal,
                        }),
                    );
                }
            }
            RouteMsg::Reply { resp } => {
                if let Some(a) = self.gateway.on_reply(cx.now, from, resp) {
                    self.perform(cx, a, out);
                }
            }
            RouteMsg::Refused {
                id,
                attempt,
                refusal,
            } => {
                if let RouteRefusal::EpochNotMatch { descriptor } = &refusal
                    && descriptor.voters.len() > kvlab_ring::meta::MAX_DESCRIPTOR_NODES
                {
                    self.refuse(from, "route descriptor with too many voters".into(), out);
                    return;
                }
                if let Some(a) = self.gateway.on_refused(cx.now, from, id, attempt, refusal) {
                    self.perform(cx, a, out);
                }
            }
        }
    }

    // ----- Raft --------------------------------------------------------------------

    fn on_raft(
        &mut self,
        cx: &mut Cx<'_>,
        from: NodeId,
        epoch: u64,
        m: RaftMessage,
        out: &mut Out<KvlabMsg>,
    ) {
        if m.from != from {
            let reason = format!("raft message claims sender {} but came from {from}", m.from);
            return self.refuse(from, reason, out);
        }
        if epoch > MAX_INDEX {
            return self.refuse(from, format!("log epoch {epoch} is above MAX_INDEX"), out);
        }
        let group = m.group;
        if group == META_GROUP {
            let Some(meta) = self.meta.as_mut() else {
                self.counters.dropped_messages += 1;
                return;
            };
            match meta.replica.raft.step(m, cx.rng) {
                Ok(()) => {}
                Err(RaftError::MalformedMessage { from, defect }) => {
                    self.refuse(from, format!("meta group: {defect}"), out)
                }
                Err(_) => self.counters.dropped_messages += 1,
            }
            self.meta_dirty = true;
            return;
        }
        let Some(v) = group_vnode(group).filter(|v| self.layout.contains(*v)) else {
            return self.refuse(from, format!("group {group} is outside the ring"), out);
        };
        let env = VnodeEnv {
            me: self.id,
            raft: &self.group_raft,
            bootstrap: &self.bootstrap,
        };
        let asks_votes = matches!(m.body, MessageBody::RequestVote { .. });
        let Some(rep) = self.vnodes.for_message(&env, v, &m, epoch, cx, out) else {
            self.counters.dropped_messages += 1;
            return;
        };
        match rep.r.raft.step(m, cx.rng) {
            Ok(()) => {}
            Err(RaftError::MalformedMessage { from, defect }) => {
                self.dirty.insert(v);
                return self.refuse(from, format!("group {group}: {defect}"), out);
            }
            Err(_) => self.counters.dropped_messages += 1,
        }
        let raft = &rep.r.raft;
        if asks_votes
            && raft.role() == Role::Leader
            && !raft.voters().contains(&from)
            && !raft.learners().contains(&from)
        {
            let conf_index = raft.conf_index();
            out.send(from, KvlabMsg::NotMember { group, conf_index });
        }
        self.dirty.insert(v);
    }

    fn on_not_member(
        &mut self,
        from: NodeId,
        group: GroupId,
        conf_index: u64,
        out: &mut Out<KvlabMsg>,
    ) {
        if conf_index > MAX_INDEX {
            let reason =
                format!("group {group}: not-member conf_index {conf_index} is above MAX_INDEX");
            return self.refuse(from, reason, out);
        }
        let Some(rep) = group_vnode(group).and_then(|v| self.vnodes.replicas.get_mut(&v)) else {
            self.counters.dropped_messages += 1;
            return;
        };
        let r = &mut rep.r;
        // Only an answer to this node's own campaign counts (see raft_kv).
        if r.raft.conf_index() < conf_index
            && matches!(r.raft.role(), Role::PreCandidate | Role::Candidate)
        {
            if !r.told_removed() {
                out.event(NodeEvent::NodeRemoved {
                    group,
                    told_by: from,
                    conf_index,
                    local_conf_index: r.raft.conf_index(),
                });
            }
            let at = r
                .removed_by_conf
                .map_or(conf_index, |x| x.conf_index.max(conf_index));
            r.removed_by_conf = Some(Removal {
                conf_index: at,
                term: r.raft.term(),
            });
        }
    }

    // ----- meta traffic ----------------------------------------------------------------

    fn on_report(
        &mut self,
        cx: &mut Cx<'_>,
        from: NodeId,
        report: StoreReport,
        epochs: &[(VnodeId, u64)],
        out: &mut Out<KvlabMsg>,
    ) {
        if report.node != from {
            let reason = format!("store report for {} came from {from}", report.node);
            return self.refuse(from, reason, out);
        }
        let Some(meta) = self.meta.as_mut() else {
            return;
        };
        let replicas = meta.on_report(cx.now, report, epochs);
        if replicas.is_empty() {
            return;
        }
        if from == self.id {
            self.on_gc(cx, &replicas, out);
        } else {
            out.send(from, KvlabMsg::Meta(MetaMsg::Gc { replicas }));
        }
    }

    fn on_gc(&mut self, cx: &mut Cx<'_>, replicas: &[(VnodeId, u64)], out: &mut Out<KvlabMsg>) {
        for &(v, conf_epoch) in replicas {
            if let Some(mut r) = self.vnodes.destroy_stale(v, conf_epoch, out) {
                r.abandon("the replica was moved away from this node");
                let answers: Vec<_> = r.take_answers().collect();
                for (origin, resp) in answers {
                    self.deliver(cx, origin, resp, out);
                }
                self.dirty.remove(&v);
            }
        }
    }

    fn on_steps(&mut self, cx: &mut Cx<'_>, cmds: Vec<StepCommand>, out: &mut Out<KvlabMsg>) {
        let lag = self.cfg.scheduler.learner_catchup_max_lag_entries;
        let swaps = self.cfg.swaps_voters();
        for cmd in cmds {
            if !self.layout.contains(cmd.vnode) {
                continue;
            }
            match self.vnodes.execute(&cmd, lag, swaps) {
                StepOutcome::AlreadyDone => self.report_due = true,
                StepOutcome::Started => self.counters.steps_started += 1,
                StepOutcome::Deferred(_) => {}
                StepOutcome::Refused(reason) => {
                    self.report_due = true;
                    out.event(NodeEvent::StepRefused {
                        group: kvlab_ring::vnode_group(cmd.vnode),
                        operator: cmd.operator.0,
                        reason,
                    });
                }
            }
            self.dirty.insert(cmd.vnode);
        }
        let _ = cx;
    }

    fn on_meta(&mut self, cx: &mut Cx<'_>, from: NodeId, msg: MetaMsg, out: &mut Out<KvlabMsg>) {
        let max = self.layout.vnode_count() as usize;
        match msg {
            MetaMsg::Report { report, epochs } => {
                if epochs.len() > max {
                    return self.refuse(
                        from,
                        "store report lists more vnodes than the ring".into(),
                        out,
                    );
                }
                self.on_report(cx, from, report, &epochs, out);
            }
            // The rest comes from meta voters only.
            _ if !self.is_meta_voter(from)
                && !matches!(msg, MetaMsg::Lookup { .. } | MetaMsg::Drain { .. }) =>
            {
                self.refuse(
                    from,
                    "meta traffic from a node that is not a meta voter".into(),
                    out,
                );
            }
            MetaMsg::Steps(cmds) => {
                if cmds.len() > max {
                    return self.refuse(from, "more steps than vnodes".into(), out);
                }
                self.on_steps(cx, cmds, out);
            }
            MetaMsg::Lookup { vnode } => {
                if self.meta.is_some() {
                    let descriptor = self.directory(vnode);
                    out.send(
                        from,
                        KvlabMsg::Meta(MetaMsg::Directory { vnode, descriptor }),
                    );
                }
            }
            MetaMsg::Directory { vnode, descriptor } => {
                if descriptor
                    .as_ref()
                    .is_some_and(|d| d.voters.len() > kvlab_ring::meta::MAX_DESCRIPTOR_NODES)
                {
                    return self.refuse(from, "directory with too many voters".into(), out);
                }
                for a in self.gateway.on_directory(cx.now, vnode, descriptor) {
                    self.perform(cx, a, out);
                }
            }
            MetaMsg::Gc { replicas } => {
                if replicas.len() > max {
                    return self.refuse(from, "gc lists more vnodes than the ring".into(), out);
                }
                self.on_gc(cx, &replicas, out);
            }
            MetaMsg::Drain { node } => {
                if node != from {
                    return self.refuse(from, format!("drain of {node} asked by {from}"), out);
                }
                self.propose_drain(cx.now, node);
            }
        }
    }

    fn propose_drain(&mut self, now: Time, node: NodeId) {
        if let Some(m) = self.meta.as_mut()
            && m.replica.raft.role() == Role::Leader
        {
            let state = m.state().member(node).map(|m| m.state);
            if state.is_some_and(|s| s.may_become(NodeState::Draining)) {
                m.propose(
                    now,
                    MetaCmd::SetNodeState {
                        node,
                        state: NodeState::Draining,
                    },
                );
                self.meta_dirty = true;
            }
        }
    }

    // ----- SWIM --------------------------------------------------------------------

    /// Runs `f` on SWIM with a scratch buffer, forwards its effects and feeds its
    /// membership events to the meta leader's scheduler.
    fn with_swim(
        &mut self,
        cx: &mut Cx<'_>,
        out: &mut Out<KvlabMsg>,
        f: impl FnOnce(&mut Swim, &mut Cx<'_>, &mut Out<SwimMsg>),
    ) {
        let Some(swim) = self.swim.as_mut() else {
            return;
        };
        let mut scratch = Out::new();
        f(swim, cx, &mut scratch);
        swim.drain_events();
        let observations: Vec<_> = scratch
            .effects()
            .iter()
            .filter_map(|e| match e {
                Effect::Event(ev) => swim_observation(ev),
                _ => None,
            })
            .collect();
        scratch.drain_into(out, KvlabMsg::Swim);
        if !observations.is_empty() {
            let down = swim
                .members()
                .filter(|m| !m.state.is_live())
                .map(|m| m.id)
                .collect();
            self.gateway.set_down(down);
        }
        if let Some(s) = self.meta.as_mut().and_then(MetaNode::running_scheduler) {
            for (member, status, incarnation) in observations {
                s.observe_swim(cx.now, member, status, incarnation);
            }
        }
    }

    // ----- timers ------------------------------------------------------------------

    fn on_tick(&mut self, cx: &mut Cx<'_>, out: &mut Out<KvlabMsg>) {
        self.vnodes.tick(cx.rng);
        if let Some(m) = self.meta.as_mut() {
            m.replica.removed_by_conf = None;
            m.replica.raft.tick(cx.rng);
            self.meta_dirty = true;
        }
        for rep in self.vnodes.replicas.values_mut() {
            rep.r.expire(cx.now);
        }
        self.dirty = self.vnodes.replicas.keys().copied().collect();
        for a in self.gateway.tick(cx.now) {
            self.perform(cx, a, out);
        }
        self.txn_tick(cx, out);
        let stale = Duration::from_millis(self.cfg.membership.stale_peer_check_ms);
        for v in self.vnodes.abandoned(cx.now, stale) {
            let epoch = self.vnodes.tombstones.get(&v).copied().unwrap_or(0);
            if let Some(mut r) = self.vnodes.destroy(v, epoch, out) {
                r.abandon("the replica was never initialized");
                let answers: Vec<_> = r.take_answers().collect();
                for (origin, resp) in answers {
                    self.deliver(cx, origin, resp, out);
                }
            }
        }
        out.set_timer(TICK_TIMER, Duration::from_millis(self.cfg.tick_interval_ms));
    }

    fn on_schedule(&mut self, cx: &mut Cx<'_>, out: &mut Out<KvlabMsg>) {
        let Some(meta) = self.meta.as_mut() else {
            return;
        };
        let steps = meta.schedule(cx.now, self.swim.as_ref());
        self.meta_dirty = true;
        let mut by_node: std::collections::BTreeMap<NodeId, Vec<StepCommand>> = Default::default();
        for (to, cmd) in steps {
            by_node.entry(to).or_default().push(cmd);
        }
        for (to, cmds) in by_node {
            if to == self.id {
                self.on_steps(cx, cmds, out);
            } else {
                out.send(to, KvlabMsg::Meta(MetaMsg::Steps(cmds)));
            }
        }
        out.set_timer(
            SCHEDULE_TIMER,
            Duration::from_millis(self.cfg.meta.schedule_interval_ms),
        );
    }

    fn on_report_timer(&mut self, cx: &mut Cx<'_>, out: &mut Out<KvlabMsg>) {
        self.report_due = true;
        if self.draining
            && self.vnodes.replicas.is_empty()
            && self.swim.as_ref().is_some_and(|s| !s.has_left())
        {
            self.with_swim(cx, out, |s, cx, o| s.leave(cx, o));
        }
        out.set_timer(
            REPORT_TIMER,
            Duration::from_millis(self.cfg.meta.store_heartbeat_interval_ms),
        );
    }
}

impl crate::raft_kv::invariants::RaftNodeView for KvlabNode {
    fn group_ids(&self) -> Vec<GroupId> {
        let vnodes = self
            .vnodes
            .replicas
            .keys()
            .map(|v| kvlab_ring::vnode_group(*v));
        vnodes
            .chain(self.meta.as_ref().map(|_| META_GROUP))
            .collect()
    }
    fn raft(&self, group: GroupId) -> Option<&RaftGroup> {
        if group == META_GROUP {
            return self.meta_raft();
        }
        KvlabNode::raft(self, group_vnode(group)?)
    }
    fn entry_digest(&self, group: GroupId, index: u64) -> Option<u64> {
        crate::replica::entry_digest(
            crate::raft_kv::invariants::RaftNodeView::raft(self, group)?,
            index,
        )
    }
    fn applied_index_of(&self, group: GroupId) -> u64 {
        if group == META_GROUP {
            return self.meta.as_ref().map_or(0, |m| m.replica.applied);
        }
        group_vnode(group)
            .and_then(|v| self.vnodes.replicas.get(&v))
            .map_or(0, |r| r.r.applied)
    }
    fn store_digest(&self, group: GroupId) -> u64 {
        if group == META_GROUP {
            return self.meta.as_ref().map_or(0, |m| m.replica.store_digest());
        }
        group_vnode(group)
            .and_then(|v| self.vnodes.replicas.get(&v))
            .map_or(0, |r| r.r.store_digest())
    }
}

impl Protocol for KvlabNode {
    type Msg = KvlabMsg;
    type Config = KvlabConfig;

    /// SWIM messages are the SWIM layer; a group's layer is its Raft messages (taken out
    /// of a batch, the rest of the batch goes on) and its `NotMember` answers. Routing
    /// and meta traffic belong to no layer (the meta group's Raft messages are group
    /// [`META_GROUP`]'s).
    fn split_layer(msg: KvlabMsg, layer: Layer) -> (Option<KvlabMsg>, Option<KvlabMsg>) {
        match (layer, msg) {
            (Layer::Swim, m @ KvlabMsg::Swim(_)) => (Some(m), None),
            (Layer::Group(g), KvlabMsg::Raft(batch)) => {
                let (inside, rest): (Vec<_>, Vec<_>) =
                    batch.into_iter().partition(|e| e.msg.group == g);
                let some = |v: Vec<RaftEnvelope>| (!v.is_empty()).then_some(KvlabMsg::Raft(v));
                (some(inside), some(rest))
            }
            (Layer::Group(g), m @ KvlabMsg::NotMember { group, .. }) if group == g => {
                (Some(m), None)
            }
            (_, m) => (None, Some(m)),
        }
    }

    fn boot(
        cx: &mut Cx<'_>,
        config: &KvlabConfig,
        peers: &[NodeId],
        recovered: Recovery,
        out: &mut Out<KvlabMsg>,
    ) -> Self {
        let initial = config.initial(peers);
        let checked = config
            .validate(peers)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let layout = config.layout().map_err(|e| e.to_string())?;
                let rf = config.replication_factor as usize;
                let strategy = config.ring.placement_strategy;
                let params = config.ring_spec().strategy_params();
                let bootstrap = initial_placement(strategy, layout, rf, &initial, params)
                    .map_err(|e| format!("initial placement: {e}"))?;
                Ok((layout, bootstrap))
            });
        let (layout, bootstrap, poisoned) = match checked {
            Ok((l, b)) => (l, b, None),
            Err(e) => {
                let layout = RingLayout::new(1).expect("1 is a valid vnode count");
                (layout, Placement::new(layout), Some(e))
            }
        };
        let mut group_raft = config.raft.clone();
        group_raft.snapshot_chunk_bytes = usize::try_from(config.snapshot.chunk_bytes)
            .unwrap_or(usize::MAX)
            .min(group_raft.snapshot_chunk_bytes.max(1));
        group_raft.unsafe_allow_concurrent_conf_changes |= config.swaps_voters();
        let gateway = Gateway::new(
            &bootstrap,
            config.max_route_attempts,
            Duration::from_millis(config.route_timeout_ms),
            Duration::from_millis(config.route_backoff_ms),
        );
        let mut node = KvlabNode {
            id: cx.id,
            cfg: config.clone(),
            layout,
            bootstrap,
            group_raft,
            swim: None,
            vnodes: Vnodes::default(),
            meta: None,
            gateway,
            pacer: Pacer::new(config.ring_spec().snapshot_rates(), cx.now),
            poisoned,
            draining: false,
            dirty: BTreeSet::new(),
            meta_dirty: false,
            report_due: false,
            lookups: 0,
            outbox: Default::default(),
            counters: KvlabCounters::default(),
            txn: txn::TxnGateway::default(),
            txn_leaders: Default::default(),
        };
        node.vnodes.txn_cfg = std::sync::Arc::new(config.txn_config());
        if node.poisoned.is_none()
            && let Err(e) = node.recover(cx, &recovered, out)
        {
            node.poisoned = Some(e);
        }
        if let Some(why) = node.poisoned.clone() {
            out.event(NodeEvent::RecoveryFailed { reason: why });
            node.vnodes = Vnodes::default();
            node.meta = None;
            return node;
        }
        node.start_swim(cx, &recovered, &initial, out);
        node.settle(cx, out);
        out.event(NodeEvent::NodeStarted {
            role: "kvlab".into(),
            records: recovered.record_count() as u64,
            snapshot: recovered.groups.values().any(|g| g.snapshot.is_some()),
            term: 0,
            applied: node.vnodes.replicas.values().map(|r| r.r.applied).sum(),
        });
        out.set_timer(TICK_TIMER, Duration::from_millis(config.tick_interval_ms));
        out.set_timer(
            REPORT_TIMER,
            Duration::from_millis(config.meta.store_heartbeat_interval_ms),
        );
        if node.meta.is_some() {
            out.set_timer(
                SCHEDULE_TIMER,
                Duration::from_millis(config.meta.schedule_interval_ms),
            );
        }
        node
    }

    fn on_msg(&mut self, cx: &mut Cx<'_>, from: NodeId, msg: KvlabMsg, out: &mut Out<KvlabMsg>) {
        if self.poisoned.is_some() {
            if let KvlabMsg::Route(RouteMsg::Request { req, attempt, .. }) = msg {
                let refusal = RouteRefusal::GroupNotHere;
                let id = req.id;
                out.send(
                    from,
                    KvlabMsg::Route(RouteMsg::Refused {
                        id,
                        attempt,
                        refusal,
                    }),
                );
            }
            return;
        }
        match msg {
            KvlabMsg::Swim(m) => self.with_swim(cx, out, |s, cx, o| s.handle_msg(cx, from, m, o)),
            KvlabMsg::Raft(batch) => {
                if batch.len() > MAX_RAFT_BATCH {
                    let reason = format!("a batch of {} raft messages", batch.len());
                    self.refuse(from, reason, out);
                } else {
                    for RaftEnvelope { epoch, msg } in batch {
                        self.on_raft(cx, from, epoch, msg, out);
                    }
                }
            }
            KvlabMsg::NotMember { group, conf_index } => {
                self.on_not_member(from, group, conf_index, out)
            }
            KvlabMsg::Route(m) => self.on_route(cx, from, m, out),
            KvlabMsg::Meta(m) => self.on_meta(cx, from, m, out),
            KvlabMsg::Txn(m) => self.on_txn(cx, from, m, out),
            KvlabMsg::TxnNotLeader { group, leader } => self.on_txn_not_leader(group, leader),
        }
        self.settle(cx, out);
    }

    fn on_timer(&mut self, cx: &mut Cx<'_>, timer: TimerId, out: &mut Out<KvlabMsg>) {
        if self.poisoned.is_some() {
            return;
        }
        if Swim::owns_timer(timer) {
            self.with_swim(cx, out, |s, cx, o| {
                s.handle_timer(cx, timer, o);
            });
        } else if timer == TICK_TIMER {
            self.on_tick(cx, out);
        } else if timer == REPORT_TIMER {
            self.on_report_timer(cx, out);
        } else if timer == SCHEDULE_TIMER {
            self.on_schedule(cx, out);
        } else if timer == PACE_TIMER {
            for o in self.pacer.release(cx.now) {
                let to = o.1.to;
                self.send_raft(to, o, out);
            }
        }
        self.settle(cx, out);
    }

    fn on_client(&mut self, cx: &mut Cx<'_>, req: ClientRequest, out: &mut Out<KvlabMsg>) {
        if let (KvOp::Txn { .. }, None) = (&req.op, &self.poisoned) {
            match req.validate() {
                Ok(()) => self.start_txn(cx, req, out),
                Err(reason) => out.push(Effect::Reply(invalid(req.id, reason))),
            }
            self.settle(cx, out);
            return;
        }
        if let Err(reason) = crate::validate_kv_only(&req) {
            out.push(Effect::Reply(invalid(req.id, reason)));
            return;
        }
        if let Some(why) = &self.poisoned {
            let reason = format!("node cannot recover its durable state: {why}");
            out.push(Effect::Reply(unavailable(req.id, &reason, None)));
            return;
        }
        let v = self.layout.vnode_of(req.op.key());
        let action = self.gateway.start(cx.now, req, v);
        self.perform(cx, action, out);
        self.settle(cx, out);
    }

    fn on_admin(&mut self, cx: &mut Cx<'_>, cmd: AdminCommand, out: &mut Out<KvlabMsg>) {
        if cmd.action != AdminAction::Drain || self.poisoned.is_some() {
            // Group membership is the scheduler's business here: operators go through
            // meta, never around it.
            out.event(NodeEvent::AdminUnsupported { command: cmd });
            return;
        }
        self.draining = true;
        out.event(NodeEvent::AdminProposed {
            command: cmd,
            index: 0,
            term: 0,
        });
        for voter in self.cfg.meta.voters.clone() {
            if voter == self.id {
                self.propose_drain(cx.now, self.id);
            } else {
                out.send(voter, KvlabMsg::Meta(MetaMsg::Drain { node: self.id }));
            }
        }
        self.settle(cx, out);
    }
}

//! Transactions on the composed node: kvlab-txn driven over the vnode Raft groups
//! (design note wave 2 §3.3; the table "How a node drives it" in kvlab-txn's crate docs
//! is the contract this module follows).
//!
//! | piece | where | state |
//! |---|---|---|
//! | [`Coordinator`] | the gateway (the node the client sent its `txn` to) | [`TxnGateway`], lost on a crash |
//! | [`kvlab_txn::ParticipantState`] | every vnode replica, in its state machine ([`super::txn_store`]) | replicated, in snapshots |
//! | [`LeaderPrecheck`], [`Resolver`] | a vnode's leader | [`LeaderTxn`], reset at every term |
//!
//! * A client's [`KvOp::Txn`] starts a [`Coordinator`]; its requests go, as
//!   [`KvlabMsg::Txn`], to each group's leader (this node's own replica if it leads; else
//!   the leader it knows of; else the group's voters in turn). A non-leader answers
//!   [`KvlabMsg::TxnNotLeader`] with the leader it knows of; the coordinator resends every
//!   `txn.decision_retry_ms` anyway.
//! * The leader pre-checks ([`LeaderPrecheck::admit`]) and proposes the entry in the
//!   group's log; when it applies, the leader sends the answer to the coordinator
//!   (`txn.node`), and wakes waiters (wait-die).
//! * The home is the first key's group; its leader answers `Resolve`s
//!   ([`home_resolve`]), and every leader runs a [`Resolver`] each tick.
//! * Messages to this node itself go through a local queue, run at the end of the step,
//!   unless the step has already emitted a `Sync`: a message written after it may rest
//!   on what that sync makes durable (a YES vote from a PREPARE a single-voter group
//!   committed and applied in this very step), so it goes through the driver, which
//!   holds it until the sync returns, as it does every send. Run locally, it would let
//!   this node's coordinator decide on a PREPARE that a crash before the fsync loses.
//!
//! History semantics: the client gets `ok` only once the home applied `Committed` (or
//! the 1PC entry applied), [`ClientError::TxnAborted`] (`fail`) only once the abort is
//! decided, and `Indeterminate` (`info`) for everything the coordinator cannot know.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use kvlab_raft::Role;
use kvlab_ring::{VnodeId, group_vnode, vnode_group};
use kvlab_txn::{
    Applied, CoordStep, Coordinator, Decision, EntryAnswer, GroupId, HomeResolve, LeaderPrecheck,
    MicroOp, OpResult, ResolveAction, Resolver, TxnEntry, TxnError, TxnId, TxnMsg, TxnOutcome,
    TxnValue, Vote, home_resolve,
};
use kvlab_types::{
    ClientError, ClientRequest, ClientResponse, Cx, Effect, InvalidRequest, KvOp, NodeEvent,
    NodeId, OpOutput, Out, RequestId, TxnMicroResult, TxnReadValue, TxnStepKind, TxnTiming,
};
use rand::Rng as _;

use super::txn_store::encode_txn_entry;
use super::{KvlabMsg, KvlabNode};
use crate::replica::{invalid, unavailable};

/// The most local transaction messages run in one step (the rest wait for the next).
const MAX_LOCAL_TXN_MSGS_PER_STEP: usize = 4096;

/// One transaction this gateway coordinates.
#[derive(Debug)]
struct Coord {
    c: Coordinator,
    /// The client's request.
    client: RequestId,
}

/// Counters of the transaction layer on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnCounters {
    /// Transactions started by this gateway.
    pub started: u64,
    /// Of those, touching more than one group (2PC).
    pub multi_group: u64,
    /// Outcomes given to clients: committed, aborted, unknown.
    pub committed: u64,
    /// See `committed`.
    pub aborted: u64,
    /// See `committed`.
    pub unknown: u64,
    /// PREPAREs and 1PCs a leader refused without a log entry (NO_WAIT pre-check).
    pub precheck_refused: u64,
    /// Questions this node's resolvers sent to homes.
    pub resolver_invocations: u64,
    /// Transaction messages refused as malformed.
    pub refused_messages: u64,
}

/// The gateway's side: coordinators of this node's clients' transactions, and the queue
/// of transaction messages to this node itself.
#[derive(Debug, Default)]
pub struct TxnGateway {
    /// This node's SWIM incarnation (raised at every start, persisted by SWIM).
    pub(crate) incarnation: u64,
    /// `(incarnation << 32) | 32 random bits`, drawn at the first transaction: unique
    /// across restarts even where the incarnation is not persisted.
    boot_epoch: Option<u64>,
    next_seq: u64,
    coords: BTreeMap<TxnId, Coord>,
    /// Rotates over a group's voters when its leader is unknown.
    rot: u64,
    pub(crate) local: VecDeque<TxnMsg>,
    /// Counters.
    pub counters: TxnCounters,
}

/// A vnode leader's transaction state for one term: not replicated.
#[derive(Debug, Default)]
pub(crate) struct LeaderTxn {
    term: u64,
    precheck: LeaderPrecheck,
    resolver: Resolver,
    /// Groups waiting for the home's decision on a transaction (resolves this leader
    /// proposed an entry for), with the node that asked for each (its leader then).
    waiters: BTreeMap<TxnId, BTreeSet<(GroupId, NodeId)>>,
}

fn to_result(r: &OpResult) -> TxnMicroResult {
    match r {
        OpResult::Read { value, .. } => TxnMicroResult::Read(value.as_ref().map(|v| match v {
            TxnValue::Register(x) => TxnReadValue::Register(*x),
            TxnValue::List(l) => TxnReadValue::List(l.clone()),
        })),
        OpResult::Appended { .. } | OpResult::Written { .. } => TxnMicroResult::Done,
    }
}

/// The client's answer for a coordinator's outcome.
fn response(id: RequestId, outcome: TxnOutcome, timing: TxnTiming) -> ClientResponse {
    let result = match outcome {
        TxnOutcome::Committed { results } => Ok(OpOutput::Txn {
            results: results.iter().map(to_result).collect(),
            timing,
        }),
        TxnOutcome::Aborted { reason } => Err(ClientError::TxnAborted {
            reason: format!("{reason:?}"),
        }),
        TxnOutcome::Unknown { reason } => Err(ClientError::Indeterminate { reason }),
    };
    ClientResponse { id, result }
}

impl KvlabNode {
    /// A client's `txn`: start its coordinator.
    pub(super) fn start_txn(
        &mut self,
        cx: &mut Cx<'_>,
        req: ClientRequest,
        out: &mut Out<KvlabMsg>,
    ) {
        let KvOp::Txn { ops } = &req.op else {
            return;
        };
        let cfg = self.vnodes.txn_cfg.clone();
        let t = &mut self.txn;
        if t.coords.len() >= cfg.max_inflight_per_gateway {
            let reason = "txn.max_inflight_per_gateway transactions under way here";
            out.push(Effect::Reply(unavailable(req.id, reason, None)));
            return;
        }
        let incarnation = t.incarnation;
        let epoch = *t
            .boot_epoch
            .get_or_insert_with(|| (incarnation << 32) | u64::from(cx.rng.next_u32()));
        t.next_seq += 1;
        let id = TxnId {
            node: self.id,
            boot_epoch: epoch,
            seq: t.next_seq,
        };
        let micro: Vec<MicroOp> = ops.to_vec();
        let layout = self.layout;
        let group_of = |k: &kvlab_types::Key| vnode_group(layout.vnode_of(k));
        match Coordinator::start(id, micro, &cfg, cx.now, group_of) {
            Err(e) => {
                let (n, max) = match e {
                    TxnError::Empty => (0, kvlab_txn::MAX_MICRO_OPS),
                    TxnError::TooManyOps { ops } => (ops, kvlab_txn::MAX_MICRO_OPS),
                    TxnError::TooManyKeys { keys, max } => (keys, max),
                };
                let shape = InvalidRequest::TxnShape {
                    ops: n as u64,
                    max_ops: max as u64,
                };
                out.push(Effect::Reply(invalid(req.id, shape)));
            }
            Ok((c, step)) => {
                self.txn.counters.started += 1;
                if c.groups().count() > 1 {
                    self.txn.counters.multi_group += 1;
                }
                self.txn.coords.insert(id, Coord { c, client: req.id });
                self.coord_step(id, step, out);
            }
        }
    }

    /// Sends a coordinator's requests and answers its client.
    fn coord_step(&mut self, txn: TxnId, step: CoordStep, out: &mut Out<KvlabMsg>) {
        for r in step.send {
            let msg = TxnMsg::Request {
                group: r.group,
                entry: r.entry,
            };
            self.send_to_group(r.group, msg, out);
        }
        if let Some(outcome) = step.outcome
            && let Some(c) = self.txn.coords.get(&txn)
        {
            let counters = &mut self.txn.counters;
            match &outcome {
                TxnOutcome::Committed { .. } => counters.committed += 1,
                TxnOutcome::Aborted { .. } => counters.aborted += 1,
                TxnOutcome::Unknown { .. } => counters.unknown += 1,
            }
            let timing = c.c.timing().unwrap_or_default();
            out.push(Effect::Reply(response(c.client, outcome, timing)));
        }
        if self.txn.coords.get(&txn).is_some_and(|c| c.c.is_done()) {
            self.txn.coords.remove(&txn);
        }
    }

    /// Where a message for `group`'s leader goes: this node (`None` if it leads), the
    /// leader it knows of, or the next voter in turn.
    fn txn_target(&mut self, v: VnodeId) -> Option<NodeId> {
        let me = self.id;
        if let Some(rep) = self.vnodes.replicas.get(&v)
            && rep.r.raft.role() == Role::Leader
            && rep.r.is_member(me)
        {
            return Some(me);
        }
        let d = self.gateway.cached(v)?;
        self.txn.rot += 1;
        // Every fourth message goes to a voter in turn even when a leader is cached: a
        // cached leader that crashed answers nothing, while a live voter that does not
        // lead answers with the leader it knows of (`TxnNotLeader`).
        let probe = self.txn.rot % 4 == 0;
        if let Some(l) = d
            .leader
            .filter(|&l| l != me && !probe && !self.gateway.is_down(l))
        {
            return Some(l);
        }
        let others: Vec<NodeId> = d.voters.iter().copied().filter(|&n| n != me).collect();
        if others.is_empty() {
            return None;
        }
        Some(others[(self.txn.rot % others.len() as u64) as usize])
    }

    fn send_to_group(&mut self, group: GroupId, msg: TxnMsg, out: &mut Out<KvlabMsg>) {
        let Some(v) = group_vnode(group).filter(|v| self.layout.contains(*v)) else {
            return;
        };
        // No route now: the coordinator or the resolver resends.
        if let Some(to) = self.txn_target(v) {
            self.send_to_node(to, msg, out);
        }
    }

    fn send_to_node(&mut self, to: NodeId, msg: TxnMsg, out: &mut Out<KvlabMsg>) {
        let after_sync = out.effects().iter().any(|e| matches!(e, Effect::Sync));
        if to == self.id && !after_sync {
            self.txn.local.push_back(msg);
        } else {
            out.send(to, KvlabMsg::Txn(msg));
        }
    }

    /// The leader state of `v` here, if this node leads it (reset at a new term).
    fn leader_txn(&mut self, v: VnodeId) -> Option<&mut LeaderTxn> {
        let rep = self.vnodes.replicas.get(&v)?;
        if rep.r.raft.role() != Role::Leader || !rep.r.is_member(self.id) {
            self.txn_leaders.remove(&v);
            return None;
        }
        let term = rep.r.raft.term();
        let l = self.txn_leaders.entry(v).or_default();
        if l.term != term {
            *l = LeaderTxn {
                term,
                ..LeaderTxn::default()
            };
        }
        Some(l)
    }

    /// Proposes a transaction entry in `v`'s log (this node leads it).
    fn propose_txn(&mut self, v: VnodeId, entry: &TxnEntry) {
        let Some(rep) = self.vnodes.replicas.get_mut(&v) else {
            return;
        };
        if rep.r.raft.propose(encode_txn_entry(entry)).is_err()
            && let Some(l) = self.txn_leaders.get_mut(&v)
        {
            l.precheck.on_applied(entry);
        }
        self.dirty.insert(v);
    }

    /// A transaction message from `from` (this node itself for the local queue).
    pub(super) fn on_txn(
        &mut self,
        cx: &mut Cx<'_>,
        from: NodeId,
        msg: TxnMsg,
        out: &mut Out<KvlabMsg>,
    ) {
        if let Err(e) = msg.validate(&self.vnodes.txn_cfg) {
            self.txn.counters.refused_messages += 1;
            return self.refuse(from, format!("transaction message: {e}"), out);
        }
        match msg {
            TxnMsg::Request { group, entry } => self.on_txn_request(cx, from, group, entry, out),
            TxnMsg::Answer { group, txn, answer } => {
                if let Some(c) = self.txn.coords.get_mut(&txn) {
                    let step = c.c.on_answer(group, &answer, cx.now);
                    self.coord_step(txn, step, out);
                }
            }
            TxnMsg::Resolve {
                home,
                txn,
                asker,
                reply_to,
            } => self.on_resolve(cx, from, (reply_to, asker), home, txn, out),
            TxnMsg::Resolved {
                group,
                txn,
                home,
                decision,
            } => {
                let Some(v) = group_vnode(group) else { return };
                if let Some(l) = self.leader_txn(v) {
                    let entry = l.resolver.on_decision(txn, home, decision);
                    self.propose_txn(v, &entry);
                }
            }
        }
    }

    /// The vnode of `group` if it is in the ring and hosted here, else a hint to `from`.
    /// The vnode of `group` if this node leads it; else `None`, after telling `from`
    /// which node leads it (if known).
    fn led_vnode(
        &mut self,
        from: NodeId,
        group: GroupId,
        out: &mut Out<KvlabMsg>,
    ) -> Option<VnodeId> {
        let v = group_vnode(group).filter(|v| self.layout.contains(*v))?;
        if self.leader_txn(v).is_some() {
            return Some(v);
        }
        let leader = self
            .vnodes
            .replicas
            .get(&v)
            .and_then(|r| r.r.raft.leader())
            .filter(|&l| l != self.id);
        if from != self.id {
            out.send(from, KvlabMsg::TxnNotLeader { group, leader });
        } else if let Some(l) = leader {
            self.gateway.hint_leader(v, Some(l));
        }
        None
    }

    /// The leader this node's replica of `group` follows, if it is neither this node nor
    /// `from` (where a message that reached a non-leader goes on, one hop).
    fn followed_leader(&self, group: GroupId, from: NodeId) -> Option<NodeId> {
        group_vnode(group)
            .and_then(|v| self.vnodes.replicas.get(&v))
            .and_then(|r| r.r.raft.leader())
            .filter(|&l| l != self.id && l != from)
    }

    fn on_txn_request(
        &mut self,
        cx: &mut Cx<'_>,
        from: NodeId,
        group: GroupId,
        mut entry: TxnEntry,
        out: &mut Out<KvlabMsg>,
    ) {
        let Some(v) = self.led_vnode(from, group, out) else {
            // A coordinator's request (one hop only: never a forwarded one) goes on to
            // the leader this replica follows.
            if let Some(l) = self
                .followed_leader(group, from)
                .filter(|_| from == entry.txn().node)
            {
                out.send(l, KvlabMsg::Txn(TxnMsg::Request { group, entry }));
            }
            return;
        };
        let cfg = self.vnodes.txn_cfg.clone();
        let empty = kvlab_txn::ParticipantState::new(group);
        let Some(rep) = self.vnodes.replicas.get(&v) else {
            return;
        };
        let state = rep.r.machine.participant().cloned().unwrap_or(empty);
        let Some(l) = self.txn_leaders.get_mut(&v) else {
            return;
        };
        match l.precheck.admit(&state, &cfg, &mut entry, cx.now) {
            Err(answer) => {
                self.txn.counters.precheck_refused += 1;
                let txn = entry.txn();
                let msg = TxnMsg::Answer { group, txn, answer };
                self.send_to_node(txn.node, msg, out);
            }
            Ok(()) => self.propose_txn(v, &entry),
        }
    }

    /// The home's leader answers `asker` (the node, its leader, that asked, and the
    /// group): the answer goes straight back to that node, which need not be in this
    /// node's route cache; if it no longer leads, its successor asks again. A home
    /// replica that does not lead passes a question that came straight from the asker
    /// on to the leader it follows (one hop, as coordinators' requests), and tells the
    /// asker which node leads: a question sent to a follower is not lost.
    fn on_resolve(
        &mut self,
        cx: &mut Cx<'_>,
        from: NodeId,
        (reply_to, asker): (NodeId, GroupId),
        home: GroupId,
        txn: TxnId,
        out: &mut Out<KvlabMsg>,
    ) {
        let Some(v) = group_vnode(home).filter(|v| self.layout.contains(*v)) else {
            return;
        };
        let cfg = self.vnodes.txn_cfg.clone();
        let Some(state) = self.vnodes.replicas.get(&v).map(|r| {
            r.r.machine
                .participant()
                .cloned()
                .unwrap_or_else(|| kvlab_txn::ParticipantState::new(home))
        }) else {
            return;
        };
        if self.led_vnode(from, home, out).is_none() {
            if let Some(l) = self
                .followed_leader(home, from)
                .filter(|_| from == reply_to)
            {
                let ask = TxnMsg::Resolve {
                    home,
                    txn,
                    asker,
                    reply_to,
                };
                out.send(l, KvlabMsg::Txn(ask));
            }
            return;
        }
        let Some(l) = self.txn_leaders.get_mut(&v) else {
            return;
        };
        match home_resolve(&state, &cfg, txn, cx.now) {
            HomeResolve::Answer(decision) => {
                let msg = TxnMsg::Resolved {
                    group: asker,
                    txn,
                    home,
                    decision,
                };
                self.send_to_node(reply_to, msg, out);
            }
            HomeResolve::RetryLater => {}
            HomeResolve::Propose(entry) => {
                l.waiters.entry(txn).or_default().insert((asker, reply_to));
                self.propose_txn(v, &entry);
            }
        }
    }

    /// Reports the 2PC steps `v`'s replica just applied ([`NodeEvent::TxnStep`]): every
    /// replica reports, so the harness sees a step at the first replica that applied it,
    /// whoever leads. `voters` (the group's) go with the home's `prepared`.
    pub(super) fn report_txn_steps(
        &self,
        v: VnodeId,
        voters: &[NodeId],
        applied: &[(TxnEntry, Applied)],
        out: &mut Out<KvlabMsg>,
    ) {
        let group = vnode_group(v);
        let state = self
            .vnodes
            .replicas
            .get(&v)
            .and_then(|r| r.r.machine.participant());
        let home_of = |t: &TxnId| state.and_then(|s| s.prepared().get(t)).map(|p| p.home);
        let mut report = |txn: TxnId, home: GroupId, step: TxnStepKind| {
            let voters = match (step, home == group) {
                (TxnStepKind::Prepared, true) => voters.to_vec(),
                _ => Vec::new(),
            };
            let txn = txn.into();
            out.event(NodeEvent::TxnStep {
                txn,
                group,
                home,
                step,
                voters,
            });
        };
        for (entry, a) in applied {
            match (entry, &a.answer) {
                (TxnEntry::Prepare(p), EntryAnswer::Vote(Vote::Yes { .. })) => {
                    report(p.txn, p.home, TxnStepKind::Prepared)
                }
                (
                    TxnEntry::Commit { txn, home } | TxnEntry::Abort { txn, home },
                    EntryAnswer::Decided(d),
                ) => {
                    let step = match d {
                        Decision::Commit => TxnStepKind::Committed,
                        Decision::Abort => TxnStepKind::Aborted,
                    };
                    report(*txn, *home, step)
                }
                _ => {}
            }
            for (w, vote) in &a.woken {
                if let (Vote::Yes { .. }, Some(home)) = (vote, home_of(w)) {
                    report(*w, home, TxnStepKind::Prepared);
                }
            }
        }
    }

    /// Transaction entries `v` applied: its leader answers their proposers, wakes
    /// waiters and tells groups waiting on a resolve.
    pub(super) fn on_txn_applied(
        &mut self,
        v: VnodeId,
        applied: Vec<(TxnEntry, Applied)>,
        out: &mut Out<KvlabMsg>,
    ) {
        if applied.is_empty() {
            return;
        }
        let group = vnode_group(v);
        let Some(l) = self.leader_txn(v) else {
            return;
        };
        let mut sends: Vec<(NodeId, TxnMsg)> = Vec::new();
        let mut resolved: Vec<(NodeId, TxnMsg)> = Vec::new();
        for (entry, a) in applied {
            l.precheck.on_applied(&entry);
            let txn = entry.txn();
            if let (
                TxnEntry::Commit { home, .. } | TxnEntry::Abort { home, .. },
                EntryAnswer::Decided(d),
            ) = (&entry, &a.answer)
                && let Some(askers) = l.waiters.remove(&txn)
            {
                for (asker, node) in askers {
                    resolved.push((node, resolved_msg(asker, txn, *home, *d)));
                }
            }
            for (w, vote) in a.woken {
                let answer = EntryAnswer::Vote(vote);
                sends.push((
                    w.node,
                    TxnMsg::Answer {
                        group,
                        txn: w,
                        answer,
                    },
                ));
            }
            let answer = a.answer;
            sends.push((txn.node, TxnMsg::Answer { group, txn, answer }));
        }
        for (to, msg) in sends {
            self.send_to_node(to, msg, out);
        }
        for (node, msg) in resolved {
            self.send_to_node(node, msg, out);
        }
    }

    /// Each tick: coordinators' timers, and every led group's resolver.
    pub(super) fn txn_tick(&mut self, cx: &mut Cx<'_>, out: &mut Out<KvlabMsg>) {
        let due: Vec<TxnId> = self
            .txn
            .coords
            .iter()
            .filter(|(_, c)| c.c.next_wakeup().is_some_and(|t| t <= cx.now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(c) = self.txn.coords.get_mut(&id) {
                let step = c.c.on_tick(cx.now);
                self.coord_step(id, step, out);
            }
        }
        let cfg = self.vnodes.txn_cfg.clone();
        let led: Vec<VnodeId> = self
            .vnodes
            .replicas
            .iter()
            .filter(|(_, r)| {
                r.r.machine
                    .participant()
                    .is_some_and(|p| !p.prepared().is_empty())
            })
            .map(|(v, _)| *v)
            .collect();
        for v in led {
            let Some(state) = self
                .vnodes
                .replicas
                .get(&v)
                .and_then(|r| r.r.machine.participant().cloned())
            else {
                continue;
            };
            let Some(l) = self.leader_txn(v) else {
                continue;
            };
            let actions = l.resolver.poll(&state, &cfg, cx.now);
            for a in actions {
                match a {
                    ResolveAction::AskHome { txn, home } => {
                        self.txn.counters.resolver_invocations += 1;
                        let asker = vnode_group(v);
                        out.event(NodeEvent::TxnStep {
                            txn: txn.into(),
                            group: asker,
                            home,
                            step: TxnStepKind::ResolveAsked,
                            voters: Vec::new(),
                        });
                        let reply_to = self.id;
                        let ask = TxnMsg::Resolve {
                            home,
                            txn,
                            asker,
                            reply_to,
                        };
                        self.send_to_group(home, ask, out);
                    }
                    ResolveAction::Propose(entry) => self.propose_txn(v, &entry),
                }
            }
        }
    }

    /// Runs the transaction messages this node sent itself.
    pub(super) fn run_local_txn(&mut self, cx: &mut Cx<'_>, out: &mut Out<KvlabMsg>) {
        for _ in 0..MAX_LOCAL_TXN_MSGS_PER_STEP {
            let Some(msg) = self.txn.local.pop_front() else {
                return;
            };
            let me = self.id;
            self.on_txn(cx, me, msg, out);
        }
    }

    /// A leader hint for `group` from a node that does not lead it.
    pub(super) fn on_txn_not_leader(&mut self, group: GroupId, leader: Option<NodeId>) {
        if let Some(v) = group_vnode(group).filter(|v| self.layout.contains(*v)) {
            self.gateway.hint_leader(v, leader);
        }
    }

    /// The transaction layer's counters on this node.
    pub fn txn_counters(&self) -> &TxnCounters {
        &self.txn.counters
    }
}

fn resolved_msg(asker: GroupId, txn: TxnId, home: GroupId, decision: Decision) -> TxnMsg {
    TxnMsg::Resolved {
        group: asker,
        txn,
        home,
        decision,
    }
}

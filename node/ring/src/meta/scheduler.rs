//! The [`Scheduler`]: runs on the meta leader every `meta.schedule_interval_ms`, looks at
//! the replicated [`MetaState`] and its own volatile observations (SWIM's view, store
//! heartbeats), and proposes [`MetaCmd`]s: node-state transitions (wave 2 §2.2 M1),
//! newer descriptors, the target placement, and operators to create, advance or cancel
//! (M2).
//!
//! It proposes; it never changes the state. Only applied commands do, on every meta
//! replica alike. Its own state is volatile on purpose: a new meta leader starts with
//! empty observations (so it waits a full `replace_down_after_ms` before declaring
//! anyone Down — conservative), full token buckets (as PD's store limits after a PD
//! leader change), and finds every operator in the replicated state, re-sending each
//! current step (harmless thanks to the epoch precondition).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kvlab_types::{NodeEvent, NodeId, Time};
use serde::{Deserialize, Serialize};

use super::command::MetaCmd;
use super::report::{ReportError, StoreReport, SwimStatus};
use super::state::{MetaState, NodeState};
use crate::config::RingSpec;
use crate::hash::VnodeId;
use crate::limits::{NodeBucket, NodeLimits};
use crate::operator::{CancelReason, OperatorId, OperatorKind, Step, StepCommand};
use crate::placement::{ConfEpoch, Placement};
use crate::plan::{Held, HoldReason, PlanInput, plan};
use crate::strategy::{Eligibility, StrategyError, StrategyInput, target_placement};

/// A store report counts for this many heartbeat intervals after it arrived; older
/// reports are ignored (their node may be gone).
pub const REPORT_FRESH_HEARTBEATS: u64 = 3;
/// A proposal is not repeated for this many schedule intervals (it is probably on its
/// way through the meta log); after that it is proposed again, in case it was lost.
pub const PROPOSAL_RESEND_INTERVALS: u64 = 5;

/// What the meta leader's SWIM says about one member, and since when.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SwimObservation {
    /// The status.
    pub status: SwimStatus,
    /// The incarnation it was reported with.
    pub incarnation: u64,
    /// When this (status, incarnation) was first observed.
    pub since: Time,
}

/// The SWIM observation a node event carries (`member_joined`, `member_alive`,
/// `member_address_changed`, `member_refuted` → alive; `member_suspect` → suspect;
/// `member_dead`, `member_reclaimed` → dead; `member_left` → left); `None` for any other
/// event. What the node passes to [`Scheduler::observe_swim`].
pub fn swim_observation(event: &NodeEvent) -> Option<(NodeId, SwimStatus, u64)> {
    let status = match event {
        NodeEvent::MemberJoined { .. }
        | NodeEvent::MemberAlive { .. }
        | NodeEvent::MemberAddressChanged { .. }
        | NodeEvent::MemberRefuted { .. } => SwimStatus::Alive,
        NodeEvent::MemberSuspect { .. } => SwimStatus::Suspect,
        NodeEvent::MemberDead { .. } | NodeEvent::MemberReclaimed { .. } => SwimStatus::Dead,
        NodeEvent::MemberLeft { .. } => SwimStatus::Left,
        _ => return None,
    };
    let (member, incarnation) = event.member()?;
    Some((member, status, incarnation))
}

/// What the scheduler counted (volatile, per meta leader term).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchedulerCounters {
    /// Ticks run.
    pub ticks: u64,
    /// Commands proposed.
    pub commands_proposed: u64,
    /// Store reports dropped for breaking a bound.
    pub reports_dropped: u64,
    /// SWIM observations dropped (an incarnation older than the one known).
    pub swim_stale_dropped: u64,
    /// Ticks where no target placement could be computed (too few eligible nodes).
    pub target_errors: u64,
    /// Hold decisions by reason name ([`hold_reason_name`]): one per wanted operator per
    /// tick, so an operator waiting ten ticks for a token counts ten.
    pub held: BTreeMap<&'static str, u64>,
}

/// A short name for a hold reason, for counters and reports.
pub fn hold_reason_name(reason: &HoldReason) -> &'static str {
    match reason {
        HoldReason::InflightCap => "inflight_cap",
        HoldReason::NodeLimit(_, NodeBucket::AddReplica) => "node_add_limit",
        HoldReason::NodeLimit(_, NodeBucket::RemoveReplica) => "node_remove_limit",
        HoldReason::NodeLimit(_, NodeBucket::LeaderTransfer) => "leader_transfer_limit",
        HoldReason::RebalanceOff => "rebalance_off",
        HoldReason::WithinTolerance => "within_tolerance",
        HoldReason::AntiThrash => "anti_thrash",
        HoldReason::NoQuorum => "no_quorum",
        HoldReason::TargetNotUp(_) => "target_not_up",
    }
}

/// A proposal the scheduler made recently (so it does not repeat it every tick).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum ProposalKey {
    Register(NodeId),
    SetState(NodeId, NodeState),
    Report(VnodeId, ConfEpoch, u64),
    Advance(OperatorId, usize),
    Cancel(OperatorId),
    Target,
}

#[derive(Clone, Debug)]
struct ReceivedReport {
    at: Time,
    report: StoreReport,
}

/// The meta leader's scheduler. Feed it with [`Scheduler::observe_swim`] and
/// [`Scheduler::observe_report`]; call [`Scheduler::tick`] every schedule interval and
/// propose what it returns to the meta group.
#[derive(Clone, Debug)]
pub struct Scheduler {
    spec: RingSpec,
    swim: BTreeMap<NodeId, SwimObservation>,
    reports: BTreeMap<NodeId, ReceivedReport>,
    limits: NodeLimits,
    proposed: BTreeMap<ProposalKey, Time>,
    /// Operators proposed but not yet in the state: id, when, and the node a leader
    /// transfer hands the vnode to (if it is one).
    pending_creates: BTreeMap<VnodeId, (OperatorId, Time, Option<NodeId>)>,
    next_operator_id: OperatorId,
    counters: SchedulerCounters,
    last_held: Vec<Held>,
    last_target: Option<Placement>,
    /// The target placement and the members it was computed for. It is kept while the
    /// members and their eligibility stay the same, not recomputed from the current
    /// placement each round: recomputing from a placement that is half-way there
    /// chose other vnodes to move, and three nodes joining 5 nodes over 64 vnodes
    /// moved 99 replicas where 72 suffice (`configs/ring-moves.toml`).
    target_for: Option<(BTreeMap<NodeId, Eligibility>, Placement)>,
    /// Per Suspect node: since when every reporting leader of its groups has listed it
    /// as a down peer without a break (see [`Scheduler::raft_evidence`]).
    evidence_since: BTreeMap<NodeId, Time>,
    /// Per group: the newest leader term reported and when it was first seen. A leader
    /// younger than `peer_down_after_ms` cannot know which peers are silent yet.
    leader_terms: BTreeMap<VnodeId, (u64, Time)>,
    /// The first tick: a member this node's SWIM has never seen counts as gone since then.
    started: Option<Time>,
}

impl Scheduler {
    /// A scheduler for a (validated) spec, with empty observations.
    pub fn new(spec: RingSpec) -> Self {
        let limits = NodeLimits::new(spec.node_rates());
        Scheduler {
            spec,
            swim: BTreeMap::new(),
            reports: BTreeMap::new(),
            limits,
            proposed: BTreeMap::new(),
            pending_creates: BTreeMap::new(),
            next_operator_id: OperatorId(0),
            counters: SchedulerCounters::default(),
            last_held: Vec::new(),
            last_target: None,
            target_for: None,
            evidence_since: BTreeMap::new(),
            leader_terms: BTreeMap::new(),
            started: None,
        }
    }

    /// The spec it runs with.
    pub fn spec(&self) -> &RingSpec {
        &self.spec
    }

    /// Records what SWIM says about `member`. A change of status or incarnation restarts
    /// the member's "since"; an incarnation lower than the known one is stale and
    /// dropped (counted).
    pub fn observe_swim(
        &mut self,
        now: Time,
        member: NodeId,
        status: SwimStatus,
        incarnation: u64,
    ) {
        match self.swim.get_mut(&member) {
            Some(o) if incarnation < o.incarnation => self.counters.swim_stale_dropped += 1,
            Some(o) if o.status == status && o.incarnation == incarnation => {}
            Some(o) => {
                *o = SwimObservation {
                    status,
                    incarnation,
                    since: now,
                }
            }
            None => {
                self.swim.insert(
                    member,
                    SwimObservation {
                        status,
                        incarnation,
                        since: now,
                    },
                );
            }
        }
    }

    /// Records a store heartbeat (the newest per node wins). A report that breaks a bound
    /// is dropped, counted and returned as an error.
    pub fn observe_report(&mut self, now: Time, report: StoreReport) -> Result<(), ReportError> {
        if let Err(e) = report.check() {
            self.counters.reports_dropped += 1;
            return Err(e);
        }
        self.reports
            .insert(report.node, ReceivedReport { at: now, report });
        Ok(())
    }

    /// The SWIM observation of a member.
    pub fn swim(&self, member: NodeId) -> Option<&SwimObservation> {
        self.swim.get(&member)
    }

    /// Counters.
    pub fn counters(&self) -> &SchedulerCounters {
        &self.counters
    }

    /// What the last tick's planner held back, and why.
    pub fn last_held(&self) -> &[Held] {
        &self.last_held
    }

    /// Token-bucket refusals per bucket kind.
    pub fn limit_refusals(&self) -> BTreeMap<NodeBucket, u64> {
        self.limits.refused()
    }

    /// The step commands to (re)send to group leaders now: every running operator's
    /// current step, with the epoch precondition unless the `skip-epoch-check` bug is on.
    pub fn step_commands(&self, state: &MetaState) -> Vec<StepCommand> {
        state.step_commands(self.spec.placement_bug)
    }

    /// How long a proposal is not repeated.
    fn resend_after(&self) -> Duration {
        Duration::from_millis(
            self.spec
                .meta
                .schedule_interval_ms
                .saturating_mul(PROPOSAL_RESEND_INTERVALS),
        )
    }

    fn fresh_reports(&self, now: Time) -> impl Iterator<Item = &StoreReport> {
        self.fresh_received(now).map(|r| &r.report)
    }

    /// The fresh reports with their arrival times.
    fn fresh_received(&self, now: Time) -> impl Iterator<Item = &ReceivedReport> {
        let window = Duration::from_millis(
            self.spec
                .meta
                .store_heartbeat_interval_ms
                .saturating_mul(REPORT_FRESH_HEARTBEATS),
        );
        self.reports
            .values()
            .filter(move |r| now.saturating_since(r.at) <= window)
    }

    /// Whether a fresh report from a group leader lists `n` as a down peer.
    fn down_reported(&self, n: NodeId, now: Time) -> bool {
        self.fresh_reports(now)
            .filter(|r| r.node != n)
            .any(|r| r.led.iter().any(|g| g.down_peers.contains(&n)))
    }

    /// Raft evidence that `n` is down: `Some(true)` when every settled current leader of
    /// a group with a replica on `n` (per fresh reports) lists it as a down peer and at
    /// least one such leader exists; `Some(false)` when one of them heard from `n`;
    /// `None` when no group has a settled leader (leaderless groups and leaders elected
    /// less than `peer_down_after_ms` ago have no say), which neither starts nor breaks
    /// a streak. A node holding no replica needs no evidence.
    fn raft_evidence(&self, n: NodeId, state: &MetaState, now: Time) -> Option<bool> {
        let vnodes: Vec<VnodeId> = state
            .descriptors()
            .iter()
            .filter(|(_, r)| r.descriptor.replicas.contains(n))
            .map(|(v, _)| *v)
            .collect();
        if vnodes.is_empty() {
            return Some(true);
        }
        let settle = Duration::from_millis(self.spec.membership.peer_down_after_ms);
        let mut leaders_heard = 0;
        for v in vnodes {
            let leader = self
                .fresh_received(now)
                .filter(|r| r.report.node != n)
                .filter_map(|r| Some((r.at, r.report.led_group(v)?)))
                .max_by_key(|(_, g)| g.term);
            // A leader elected less than `peer_down_after_ms` before it wrote the report
            // has no say yet: it cannot have timed out a silent peer. Judged at the
            // report's arrival, not now — a fresh report may be a few heartbeats old.
            let settled = |(at, g): &(Time, &crate::meta::LedGroup)| {
                self.leader_terms.get(&v).is_some_and(|(term, since)| {
                    g.term == *term && at.saturating_since(*since) >= settle
                })
            };
            if let Some((_, g)) = leader.filter(settled) {
                leaders_heard += 1;
                if !g.down_peers.contains(&n) {
                    return Some(false);
                }
            }
        }
        (leaders_heard > 0).then_some(true)
    }

    /// Positive evidence that `n` is alive, which a Suspect needs before it is Up again:
    /// it holds no replica, or it sent a fresh store report itself, or a settled leader
    /// of one of its groups heard from it. A new meta leader starts with no reports, and
    /// its own SWIM view may be young (a restarted node's SWIM takes every member for
    /// alive until it probes it): without this it marked a node killed for good Up at
    /// once, restarting the clock of its replacement (`ring-node-loss` seed 34).
    fn alive_evidence(&self, n: NodeId, state: &MetaState, now: Time) -> bool {
        let holds = state
            .descriptors()
            .values()
            .any(|r| r.descriptor.replicas.contains(n));
        !holds
            || self.fresh_reports(now).any(|r| r.node == n)
            || self.raft_evidence(n, state, now) == Some(false)
    }

    /// Whether the groups' leaders have heard nothing from `n` for the whole of
    /// `replace_down_after_ms`: Raft evidence without a break for that long, less the
    /// `peer_down_after_ms` a leader waits before it lists a silent peer. SWIM's "dead"
    /// outlives a short recovery (the node must learn it was declared dead and refute),
    /// so two short failures with a gap between them could otherwise add up to a
    /// replacement: seen in `ring-flap` seed 49 (a partition, 2 s of health in which
    /// the leaders heard from the node, then an isolation, each 2 s).
    fn silent_long(&self, n: NodeId, state: &MetaState, now: Time) -> bool {
        let m = &self.spec.membership;
        let need =
            Duration::from_millis(m.replace_down_after_ms.saturating_sub(m.peer_down_after_ms));
        let no_groups = !state
            .descriptors()
            .iter()
            .any(|(_, r)| r.descriptor.replicas.contains(n));
        no_groups
            || self
                .evidence_since
                .get(&n)
                .is_some_and(|t| now.saturating_since(*t) >= need)
    }

    /// Who leads each vnode once the leader transfers under way (running, or proposed
    /// and not yet applied) are done. Leader balance must plan from this, not from who
    /// leads now: counting a leadership on its way at its source made two rounds each
    /// move one more leadership off the same node, and the next rounds move them back
    /// (seen in `ring-node-loss`: group 0 handed n2 → n1 → n2 … every 0.5 s, ~100
    /// transfers a run, and the leader churn broke the Raft evidence a down node needs).
    fn leaders_after_transfers(&self, state: &MetaState) -> BTreeMap<VnodeId, NodeId> {
        let mut leaders = state.leaders();
        for op in state.operators().values() {
            if let Some(Step::TransferLeader(to)) = op.current() {
                leaders.insert(op.vnode, *to);
            }
        }
        for (v, (_, _, to)) in &self.pending_creates {
            if let Some(to) = to {
                leaders.insert(*v, *to);
            }
        }
        leaders
    }

    fn propose(&mut self, now: Time, key: ProposalKey, cmd: MetaCmd, out: &mut Vec<MetaCmd>) {
        let resend = self.resend_after();
        if let Some(at) = self.proposed.get(&key)
            && now.saturating_since(*at) < resend
        {
            return;
        }
        self.proposed.insert(key, now);
        out.push(cmd);
    }

    /// One scheduling round: the commands to propose to the meta group, in this order —
    /// registrations, newer descriptors, node-state transitions, operator advances and
    /// cancellations, the target, new operators. Deterministic: the same observations,
    /// state and `now` give the same commands.
    pub fn tick(&mut self, now: Time, state: &MetaState) -> Vec<MetaCmd> {
        self.counters.ticks += 1;
        self.started.get_or_insert(now);
        let mut out = Vec::new();
        // Forget proposals old enough to be re-sent, and creates the state has passed.
        let resend = self.resend_after();
        self.proposed
            .retain(|_, at| now.saturating_since(*at) < resend);
        let next_applied = state.next_operator_id();
        self.pending_creates
            .retain(|_, (id, at, _)| *id >= next_applied && now.saturating_since(*at) < resend);

        self.register_nodes(now, state, &mut out);
        self.forward_descriptors(now, state, &mut out);
        self.node_transitions(now, state, &mut out);
        self.follow_operators(now, state, &mut out);
        self.schedule(now, state, &mut out);

        self.counters.commands_proposed += out.len() as u64;
        out
    }

    /// Registers nodes that send store heartbeats but are not members (a node that
    /// joined SWIM and started its store). A Removed node comes back only by registering
    /// itself (an explicit `RegisterNode`), not through its heartbeats.
    fn register_nodes(&mut self, now: Time, state: &MetaState, out: &mut Vec<MetaCmd>) {
        let unknown: Vec<(NodeId, Option<String>)> = self
            .fresh_reports(now)
            .filter(|r| state.member(r.node).is_none())
            .map(|r| (r.node, r.address.clone()))
            .collect();
        for (node, address) in unknown {
            let incarnation = self.swim.get(&node).map_or(0, |o| o.incarnation);
            let cmd = MetaCmd::RegisterNode {
                node,
                address,
                incarnation,
            };
            self.propose(now, ProposalKey::Register(node), cmd, out);
        }
    }

    fn forward_descriptors(&mut self, now: Time, state: &MetaState, out: &mut Vec<MetaCmd>) {
        // The newest (epoch, term) per vnode among fresh reports.
        let mut best: BTreeMap<VnodeId, (ConfEpoch, u64, NodeId, crate::Descriptor)> =
            BTreeMap::new();
        for r in self.fresh_reports(now) {
            for g in &r.led {
                let v = g.descriptor.vnode;
                if !state.layout().contains(v) {
                    continue;
                }
                let key = (g.descriptor.conf_epoch(), g.term);
                if best.get(&v).is_none_or(|(e, t, _, _)| key > (*e, *t)) {
                    best.insert(v, (key.0, key.1, r.node, g.descriptor.clone()));
                }
            }
        }
        for (v, (epoch, term, leader, descriptor)) in best {
            let newer = match state.descriptor(v) {
                None => true,
                Some(rec) => {
                    let recorded = rec.descriptor.conf_epoch();
                    epoch > recorded
                        || (epoch == recorded
                            && (term > rec.leader_term || rec.leader.is_none())
                            && rec.descriptor.replicas.same_members(&descriptor.replicas))
                        // Same epoch, other members: forward it so meta counts the conflict.
                        || (epoch == recorded && !rec.descriptor.replicas.same_members(&descriptor.replicas))
                }
            };
            if newer {
                let cmd = MetaCmd::ReportDescriptor {
                    descriptor,
                    leader,
                    term,
                };
                self.propose(now, ProposalKey::Report(v, epoch, term), cmd, out);
            }
        }
    }

    fn node_transitions(&mut self, now: Time, state: &MetaState, out: &mut Vec<MetaCmd>) {
        let suspects: Vec<NodeId> = state
            .members()
            .iter()
            .filter(|(_, m)| m.state == NodeState::Suspect)
            .map(|(n, _)| *n)
            .collect();
        self.evidence_since.retain(|n, _| suspects.contains(n));
        let seen: Vec<(VnodeId, u64)> = self
            .fresh_reports(now)
            .flat_map(|r| r.led.iter().map(|g| (g.descriptor.vnode, g.term)))
            .collect();
        for (v, term) in seen {
            let e = self.leader_terms.entry(v).or_insert((term, now));
            if term > e.0 {
                *e = (term, now);
            }
        }
        for n in suspects {
            match self.raft_evidence(n, state, now) {
                Some(true) => {
                    self.evidence_since.entry(n).or_insert(now);
                }
                Some(false) => {
                    self.evidence_since.remove(&n);
                }
                None => {}
            }
        }
        let m = &self.spec.membership;
        let hold = Duration::from_millis(m.suspect_hold_ms);
        let replace = Duration::from_millis(m.replace_down_after_ms);
        let require_evidence = m.require_raft_evidence;
        let mut changes = Vec::new();
        for (&n, member) in state.members() {
            let obs = self.swim.get(&n).copied();
            let swim_alive = obs.is_none_or(|o| o.status == SwimStatus::Alive);
            let to = match member.state {
                NodeState::Up => {
                    (!swim_alive || self.down_reported(n, now)).then_some(NodeState::Suspect)
                }
                NodeState::Suspect => {
                    // A member this node's SWIM never saw (a meta leader that restarted
                    // after the member died learns of no dead member from its peers)
                    // counts as gone since this scheduler started, not as alive: else a
                    // node killed for good is never replaced (`ring-node-loss` seed 34).
                    let gone_since = match obs {
                        Some(o) if o.status.is_gone() => Some(o.since),
                        Some(_) => None,
                        None => self.started,
                    };
                    let dead_long = gone_since.is_some_and(|t| now.saturating_since(t) >= replace);
                    let swim_alive = obs.is_some_and(|o| o.status == SwimStatus::Alive);
                    let alive_since = obs.map_or(member.since, |o| o.since.max(member.since));
                    if dead_long && (!require_evidence || self.silent_long(n, state, now)) {
                        Some(NodeState::Down)
                    } else if swim_alive
                        && now.saturating_since(alive_since) >= hold
                        && !self.down_reported(n, now)
                        && (!require_evidence || self.alive_evidence(n, state, now))
                    {
                        Some(NodeState::Up)
                    } else {
                        None
                    }
                }
                NodeState::Down => obs
                    .is_some_and(|o| o.status == SwimStatus::Alive)
                    .then_some(NodeState::Suspect),
                NodeState::Draining => (!state.holds_replicas(n)).then_some(NodeState::Removed),
                NodeState::Removed => None,
            };
            if let Some(to) = to {
                changes.push((n, to));
            }
        }
        for (node, to) in changes {
            let cmd = MetaCmd::SetNodeState { node, state: to };
            self.propose(now, ProposalKey::SetState(node, to), cmd, out);
        }
    }

    fn follow_operators(&mut self, now: Time, state: &MetaState, out: &mut Vec<MetaCmd>) {
        let mut cmds = Vec::new();
        for op in state.operators().values() {
            let Some(step) = op.current() else { continue };
            if now >= op.deadline {
                let reason = CancelReason::TimedOut;
                cmds.push((
                    ProposalKey::Cancel(op.id),
                    MetaCmd::CancelOperator { id: op.id, reason },
                ));
                continue;
            }
            let Some(rec) = state.descriptor(op.vnode) else {
                continue;
            };
            let set = &rec.descriptor.replicas;
            if step.is_done(set, rec.leader) {
                let cmd = MetaCmd::AdvanceOperator {
                    id: op.id,
                    from_step: op.current_step,
                };
                cmds.push((ProposalKey::Advance(op.id, op.current_step), cmd));
                continue;
            }
            let moved = step.changes_conf() && set.conf_epoch > op.expected_conf_epoch;
            let unfit = needs_node(step).into_iter().any(|y| {
                matches!(
                    state.member(y).map(|m| m.state),
                    None | Some(NodeState::Down | NodeState::Draining | NodeState::Removed)
                )
            });
            let reason = if moved {
                Some(CancelReason::EpochMoved)
            } else if unfit {
                Some(CancelReason::TargetUnfit)
            } else {
                None
            };
            if let Some(reason) = reason {
                cmds.push((
                    ProposalKey::Cancel(op.id),
                    MetaCmd::CancelOperator { id: op.id, reason },
                ));
            }
        }
        for (key, cmd) in cmds {
            self.propose(now, key, cmd, out);
        }
    }

    /// The target for these members: the one already computed for the same members (or,
    /// on a new meta leader, the recorded target when it places replicas on exactly the
    /// active members), else a new one from the current placement.
    fn target_for_members(
        &mut self,
        state: &MetaState,
        members: &BTreeMap<NodeId, Eligibility>,
        current: &Placement,
    ) -> Result<Placement, StrategyError> {
        let rf = state.replication_factor();
        if self.target_for.is_none()
            && let Some(t) = state.target()
        {
            let active: BTreeSet<NodeId> = members
                .iter()
                .filter(|(_, e)| **e == Eligibility::Active)
                .map(|(n, _)| *n)
                .collect();
            if t.check(rf).is_ok() && t.nodes() == active {
                self.target_for = Some((members.clone(), t.clone()));
            }
        }
        if let Some((m, t)) = &self.target_for
            && m == members
        {
            return Ok(t.clone());
        }
        let t = target_placement(
            self.spec.ring.placement_strategy,
            &StrategyInput {
                layout: state.layout(),
                replication_factor: rf,
                members,
                current,
                params: self.spec.strategy_params(),
            },
        )?;
        self.target_for = Some((members.clone(), t.clone()));
        Ok(t)
    }

    fn schedule(&mut self, now: Time, state: &MetaState, out: &mut Vec<MetaCmd>) {
        let rf = state.replication_factor();
        let current = state.current_placement();
        let health = state.health();
        let members: BTreeMap<NodeId, Eligibility> = health
            .iter()
            .filter_map(|(n, s)| s.eligibility().map(|e| (*n, e)))
            .collect();
        let target = self.target_for_members(state, &members, &current);
        let target = match target {
            Ok(t) => {
                if state.target() != Some(&t) && self.last_target.as_ref() != Some(&t) {
                    self.last_target = Some(t.clone());
                    self.proposed.remove(&ProposalKey::Target);
                }
                if state.target() != Some(&t) {
                    self.propose(now, ProposalKey::Target, MetaCmd::SetTarget(t.clone()), out);
                }
                t
            }
            Err(_) => {
                // Too few eligible nodes: plan only tidying (the current placement is
                // its own target, so no replica moves).
                self.counters.target_errors += 1;
                current.clone()
            }
        };

        let mut inflight = state.busy_vnodes();
        inflight.extend(self.pending_creates.keys().copied());
        let next = OperatorId(state.next_operator_id().0.max(self.next_operator_id.0));
        let leaders = self.leaders_after_transfers(state);
        let input = PlanInput {
            current: &current,
            target: &target,
            health: &health,
            leaders: &leaders,
            inflight: &inflight,
            next_operator_id: next,
            now,
        };
        let config = self.spec.plan_config(rf);
        let p = plan(&input, &config, &mut self.limits);
        for h in &p.held {
            *self
                .counters
                .held
                .entry(hold_reason_name(&h.reason))
                .or_insert(0) += 1;
        }
        self.last_held = p.held;
        for op in p.operators {
            self.next_operator_id = OperatorId(op.id.0 + 1);
            let transfer_to = match op.steps.first() {
                Some(Step::TransferLeader(to)) if op.kind == OperatorKind::TransferLeader => {
                    Some(*to)
                }
                _ => None,
            };
            self.pending_creates
                .insert(op.vnode, (op.id, now, transfer_to));
            out.push(MetaCmd::CreateOperator(op));
        }
    }
}

/// The nodes a step needs to be fit (the ones it adds or promotes).
fn needs_node(step: &Step) -> BTreeSet<NodeId> {
    match step {
        Step::AddLearner(n)
        | Step::AddVoter(n)
        | Step::SwapVoters { add: n, .. }
        | Step::TransferLeader(n) => [*n].into(),
        Step::EnterJoint { promote, .. } => promote.clone(),
        _ => BTreeSet::new(),
    }
}

//! The nemesis: a seeded schedule of faults, applied to the cluster through
//! [`FaultControl`] and recorded as `fault_start` / `fault_end` events.
//!
//! The schedule's times and kinds are fixed up front from the spec (see
//! [`crate::spec::NemesisSpec`]); each fault's targets are drawn from the nemesis RNG
//! when it starts, knowing which nodes earlier faults left crashed or paused. Every fault
//! remembers how to undo itself (remove its own rules, restart, resume, reset the
//! clock), so overlapping faults never undo each other.
//!
//! Faults aimed at the leader (`crash-leader`, `isolate-leader`, `isolate-slow-leader`)
//! target the node the runner last saw elected ([`ClusterView::leader`]). Membership is
//! kept by a reconciler ([`Nemesis::maintain`]) when the system supports it: it drives the
//! group towards "every node a voter, except those an active `membership` fault
//! removed and the spares (`nemesis.spare_learners`) kept as learners", one admin
//! command per round through the leader, a round every [`MEMBERSHIP_RETRY_MS`],
//! without waiting for the previous change to commit (Raft must refuse it; see
//! `membership.rs`); a node comes back as a learner and is promoted once it caught up,
//! and `replace-voter` swaps a spare in for a voter, jointly or one server at a time.
//! The reconciler also grows a group that started with fewer voters, and it keeps
//! working in the liveness phase.

use std::collections::{BTreeMap, BTreeSet};

use kvlab_sim::{FaultRule, LatencyDist, RuleId};
use kvlab_types::{
    AdminAction, AdminCommand, GroupId, Layer, NodeId, Rng, Time, TxnFaultPoint, TxnRef,
    TxnStepKind,
};

use crate::cluster::{ClusterView, FaultControl, Restart};
use crate::error::FaultError;
use crate::events::{NemesisEvent, NemesisKind, RunEvent};
#[cfg(test)]
use crate::spec::ScheduledFault;
use crate::spec::{FaultKind, NemesisSpec, secs_to_ns};
use crate::workload::below;

mod membership;
mod txn;
use membership::{Step, SwapWay, Target};

/// How often the membership reconciler looks again while the group differs from its
/// target, and how long it waits before repeating a command that had no visible effect.
pub const MEMBERSHIP_RETRY_MS: u64 = 100;

/// How to undo one active fault.
#[derive(Clone, Debug)]
enum Undo {
    Rules(Vec<RuleId>),
    Restart(NodeId),
    Resume(NodeId),
    ResetDrift(NodeId),
    /// An `isolate-slow-leader` fault: remove the isolation rule, then reset the clock.
    RulesAndDrift(Vec<RuleId>, NodeId),
    /// A `membership` fault removed this node; at the end it may rejoin.
    Rejoin(NodeId),
    /// A `disk-fsync-error` fault: the disk works again, and the node restarts if the
    /// failure stopped it.
    DiskWorks(NodeId),
    /// A `disk-corrupt` fault damaged this crashed node's log: try to restart it; if its
    /// recovery refuses, it stays down for good.
    RestartDamaged(NodeId),
}

/// Installs `rule`; undoing the fault removes it.
fn one_rule(cluster: &mut dyn FaultControl, rule: FaultRule) -> Undo {
    Undo::Rules(vec![cluster.add_rule(rule)])
}

/// Cuts `a` off from `b` (both ways) with one rule; undoing the fault heals it.
fn partition(cluster: &mut dyn FaultControl, a: &[NodeId], b: &[NodeId]) -> Undo {
    one_rule(
        cluster,
        FaultRule::Partition {
            a: a.to_vec(),
            b: b.to_vec(),
        },
    )
}

/// What starting a fault did: how to undo it, what it did and to whom, or why it was
/// skipped.
enum Started {
    Done {
        undo: Undo,
        detail: String,
        node: Option<NodeId>,
    },
    Skip(&'static str),
}

/// Cuts every pair of nodes that are not neighbours in the ring `v`.
fn ring(cluster: &mut dyn FaultControl, v: &[NodeId]) -> Undo {
    let n = v.len();
    let mut rules = Vec::new();
    for i in 0..n {
        for j in (i + 1)..n {
            let adjacent = j == i + 1 || (i == 0 && j == n - 1);
            if !adjacent {
                rules.push(cluster.add_rule(FaultRule::Partition {
                    a: vec![v[i]],
                    b: vec![v[j]],
                }));
            }
        }
    }
    Undo::Rules(rules)
}

#[derive(Clone, Debug)]
struct ActiveFault {
    id: u64,
    kind: FaultKind,
    end: Time,
    undo: Undo,
}

#[derive(Clone, Debug)]
struct PlannedFault {
    id: u64,
    kind: FaultKind,
    start: Time,
    end: Time,
    /// Chosen nodes (`[[nemesis.schedule]]`); empty: drawn when the fault starts.
    targets: Vec<NodeId>,
    /// `kill-gateway`: the 2PC point a schedule entry chose.
    point: Option<TxnFaultPoint>,
}

/// The fault injector of one run.
#[derive(Debug)]
pub struct Nemesis {
    spec: NemesisSpec,
    nodes: Vec<NodeId>,
    rng: Rng,
    /// Faults not started yet, in start order.
    plan: std::collections::VecDeque<PlannedFault>,
    active: Vec<ActiveFault>,
    crashed: BTreeSet<NodeId>,
    paused: BTreeSet<NodeId>,
    drifted: BTreeSet<NodeId>,
    injected_by_kind: BTreeMap<String, u64>,
    skipped_by_kind: BTreeMap<String, u64>,
    /// Whether the system takes membership commands (see [`Nemesis::manage_membership`]).
    manage_membership: bool,
    /// Nodes that active `membership` faults keep out of the group.
    removed: BTreeSet<NodeId>,
    /// Nodes the reconciler keeps as learners (`nemesis.spare_learners`).
    spares: BTreeSet<NodeId>,
    /// How the latest `replace-voter` swap is made.
    swap: SwapWay,
    /// When the reconciler looks next (`None`: the group matched its target).
    next_maintenance: Option<Time>,
    /// The last command sent and when, so that it is not repeated too soon.
    last_command: Option<(AdminCommand, Time)>,
    admin_commands: u64,
    /// Nodes that have not booted yet (joiners before their `join`).
    absent: BTreeSet<NodeId>,
    /// Nodes gone for good (`kill-permanently`, `drain`): never restarted, never aimed
    /// at again, no longer a client's gateway.
    retired: BTreeSet<NodeId>,
    /// The composed node's vnode count (group ids `0..vnode_groups`); 0 for other
    /// systems, where `group-partition` is skipped.
    vnode_groups: u32,
    /// The side the partition being started cut off, for its `fault_start` event.
    last_side: Vec<NodeId>,
    /// How many nodes may be down for good at once and leave every replication group a
    /// quorum (0: the system keeps one copy; `disk-corrupt` is then skipped).
    max_lost_for_good: usize,
    /// Restarts refused by a node's storage.
    refused_to_start: u64,
    /// Nodes whose logs an active `disk-corrupt` fault damaged (retired at its end if
    /// their recovery refuses).
    damaged: BTreeSet<NodeId>,
    /// Transaction faults waiting for a transaction to reach their point (`txn.rs`).
    armed: Vec<txn::Armed>,
    /// The home steps already seen (a step is reported by every replica; the first
    /// report is the point).
    home_steps_seen: BTreeSet<(TxnRef, TxnStepKind)>,
}

/// The extra delay of `swim-delay`: beyond SWIM's probe timeouts, short of a Raft
/// election timeout's worth of trouble for anything else (nothing else is delayed).
const SWIM_DELAY_EXTRA: LatencyDist = LatencyDist::Uniform {
    min_ms: 200.0,
    max_ms: 800.0,
};

const NO_ELIGIBLE_NODE: &str = "no eligible node (all crashed or paused by overlapping faults)";

/// The faults of a safety phase from `start` to `safety_end`: the random ones (kinds
/// drawn from `rng`) and the scheduled ones, in start order, numbered from 1.
fn plan_faults(
    spec: &NemesisSpec,
    start: Time,
    safety_end: Time,
    rng: &mut Rng,
) -> std::collections::VecDeque<PlannedFault> {
    let mut plan = Vec::new();
    if !spec.faults.is_empty() {
        let first = start
            .as_nanos()
            .saturating_add(secs_to_ns(spec.start_after_s));
        let interval = secs_to_ns(spec.interval_s).max(1);
        let duration = secs_to_ns(spec.fault_duration_s);
        let mut at = first;
        while at < safety_end.as_nanos() {
            let kind = spec.faults[below(rng, spec.faults.len() as u64) as usize];
            plan.push(PlannedFault {
                id: 0,
                kind,
                start: Time(at),
                end: Time(at.saturating_add(duration)),
                targets: Vec::new(),
                point: None,
            });
            at = at.saturating_add(interval);
        }
    }
    for f in &spec.schedule {
        let at = start.as_nanos().saturating_add(secs_to_ns(f.at_s));
        let duration = match f.kind.is_permanent() {
            true => 0,
            false => secs_to_ns(f.duration_s.unwrap_or(spec.fault_duration_s)),
        };
        plan.push(PlannedFault {
            id: 0,
            kind: f.kind,
            start: Time(at),
            end: Time(at.saturating_add(duration)),
            targets: f.targets.iter().map(|&t| NodeId(t)).collect(),
            point: f.point,
        });
    }
    // Stable: random faults first among those starting at the same instant.
    plan.sort_by_key(|p| p.start);
    for (i, p) in plan.iter_mut().enumerate() {
        p.id = i as u64 + 1;
    }
    plan.into()
}

/// The event-and-summary name of a fault kind (`partition_halves`, `crash`, …).
pub fn fault_name(kind: FaultKind) -> String {
    kind.spec_name().replace('-', "_")
}

fn node_list(nodes: &[NodeId]) -> String {
    let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    format!("[{}]", names.join(" "))
}

impl Nemesis {
    /// Plans the faults of a safety phase that starts at `start` and ends at
    /// `safety_end` (fault times count from `start`).
    pub fn new(
        spec: &NemesisSpec,
        nodes: &[NodeId],
        start: Time,
        safety_end: Time,
        seed: u64,
    ) -> Self {
        let mut rng = kvlab_types::seeded_rng(seed);
        let plan = plan_faults(spec, start, safety_end, &mut rng);
        Nemesis {
            spec: spec.clone(),
            nodes: nodes.to_vec(),
            rng,
            plan,
            active: Vec::new(),
            crashed: BTreeSet::new(),
            paused: BTreeSet::new(),
            drifted: BTreeSet::new(),
            injected_by_kind: BTreeMap::new(),
            skipped_by_kind: BTreeMap::new(),
            manage_membership: false,
            removed: BTreeSet::new(),
            spares: nodes
                .iter()
                .rev()
                .take(spec.spare_learners as usize)
                .copied()
                .collect(),
            swap: SwapWay::default(),
            next_maintenance: None,
            last_command: None,
            admin_commands: 0,
            absent: BTreeSet::new(),
            retired: BTreeSet::new(),
            vnode_groups: 0,
            last_side: Vec::new(),
            max_lost_for_good: 0,
            refused_to_start: 0,
            damaged: BTreeSet::new(),
            armed: Vec::new(),
            home_steps_seen: BTreeSet::new(),
        }
    }

    /// Declares the composed node's vnode groups (`group-partition` aims at one).
    pub fn set_vnode_groups(&mut self, vnodes: u32) {
        self.vnode_groups = vnodes;
    }

    /// Declares how many nodes may be lost for good at once while every replication
    /// group keeps a quorum: `(nodes - 1) / 2` for one group over all nodes, `(rf - 1) / 2`
    /// for groups of `rf` replicas placed anywhere (the ring may not have replaced the
    /// first loss's replicas before the second), 0 for a system that keeps one copy
    /// (losing its disk loses data by design). `disk-corrupt` never exceeds it.
    pub fn set_max_lost_for_good(&mut self, n: usize) {
        self.max_lost_for_good = n;
    }

    /// [`Nemesis::set_max_lost_for_good`], lowered while the reconciler keeps fewer
    /// voters (nodes removed by `membership` faults, spares).
    fn lost_for_good_limit(&self) -> usize {
        if !self.manage_membership {
            return self.max_lost_for_good;
        }
        let voters = (self.nodes.len()).saturating_sub(self.removed.union(&self.spares).count());
        self.max_lost_for_good.min(voters.saturating_sub(1) / 2)
    }

    /// Declares the nodes that do not boot with the cluster (joiners): random faults
    /// leave them alone until a `join` fault starts them.
    pub fn set_absent(&mut self, absent: &[NodeId]) {
        self.absent = absent.iter().copied().collect();
    }

    /// The nodes clients may use: booted and not gone for good (crashed or paused
    /// nodes stay gateways; their clients see timeouts, as with a real crash).
    pub fn gateways(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .copied()
            .filter(|n| self.in_cluster(n))
            .collect()
    }

    /// Nodes gone for good: the cluster must not restart them when it heals.
    pub fn retired(&self) -> &BTreeSet<NodeId> {
        &self.retired
    }

    /// Booted and not gone for good.
    fn in_cluster(&self, n: &NodeId) -> bool {
        !self.absent.contains(n) && !self.retired.contains(n)
    }

    /// Turns the membership reconciler on (for systems that take admin commands): from
    /// now on it keeps every node a voter but those removed by `membership` faults.
    pub fn manage_membership(&mut self, now: Time) {
        self.manage_membership = true;
        self.next_maintenance = Some(now);
    }

    /// When [`Nemesis::maintain`] wants to run next, if the group differs from its
    /// target (it runs in every phase, unlike the fault schedule).
    pub fn next_maintenance(&self) -> Option<Time> {
        self.next_maintenance
    }

    /// Admin commands the reconciler sent.
    pub fn admin_commands(&self) -> u64 {
        self.admin_commands
    }

    /// One round of the membership reconciler, if due: compares the leader's view of
    /// the group with the target and sends at most one command to the leader.
    pub fn maintain(
        &mut self,
        now: Time,
        cluster: &mut dyn FaultControl,
        view: &ClusterView,
        events: &mut Vec<RunEvent>,
    ) -> Result<(), FaultError> {
        if !self.manage_membership || self.next_maintenance.is_none_or(|t| t > now) {
            return Ok(());
        }
        let retry = Time(now.as_nanos() + MEMBERSHIP_RETRY_MS * 1_000_000);
        self.next_maintenance = Some(retry);
        let (Some(leader), Some(m)) = (view.leader, view.membership.as_ref()) else {
            return Ok(()); // no leader known yet: look again later
        };
        let target = Target {
            nodes: &self.nodes,
            removed: &self.removed,
            spares: &self.spares,
            retired: &self.retired,
            swap: self.swap,
        };
        let cmd = match target.next_step(m) {
            Step::Send(action) => AdminCommand::default_group(action),
            Step::Wait => return Ok(()),
            Step::Done => {
                self.next_maintenance = None;
                return Ok(());
            }
        };
        let repeat_ns = MEMBERSHIP_RETRY_MS * 1_000_000 * 5;
        if let Some((last, at)) = self.last_command
            && last == cmd
            && now.as_nanos() < at.as_nanos() + repeat_ns
        {
            return Ok(()); // give the last command time to show
        }
        let delivered = cluster.admin(leader, cmd)?;
        self.last_command = Some((cmd, now));
        self.admin_commands += 1;
        events.push(RunEvent::nemesis(
            now,
            NemesisEvent {
                kind: NemesisKind::AdminCommand,
                node: Some(leader),
                fault_id: None,
                fault: None,
                detail: format!(
                    "{cmd:?} sent to {leader}{}",
                    if delivered { "" } else { " (not delivered)" }
                ),
                side: Vec::new(),
                point: None,
            },
        ));
        Ok(())
    }

    /// The next time a fault starts or ends, if any.
    pub fn next_wakeup(&self) -> Option<Time> {
        let start = self.plan.front().map(|p| p.start);
        let end = (self.active.iter().map(|a| a.end))
            .chain(self.armed.iter().map(|a| a.p.end))
            .min();
        match (start, end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ends every fault due by `now`, then starts every fault due by `now`.
    pub fn step(
        &mut self,
        now: Time,
        cluster: &mut dyn FaultControl,
        events: &mut Vec<RunEvent>,
    ) -> Result<(), FaultError> {
        self.step_with_view(now, cluster, &ClusterView::default(), events)
    }

    /// [`Nemesis::step`] knowing the leader and the membership, which `crash-leader`,
    /// `isolate-leader` and `membership` faults need (they are skipped without).
    pub fn step_with_view(
        &mut self,
        now: Time,
        cluster: &mut dyn FaultControl,
        view: &ClusterView,
        events: &mut Vec<RunEvent>,
    ) -> Result<(), FaultError> {
        // Ends first: a fault ending at the instant another starts frees its node.
        let mut due: Vec<(Time, u64)> = self
            .active
            .iter()
            .filter(|a| a.end <= now)
            .map(|a| (a.end, a.id))
            .collect();
        due.sort();
        for (_, id) in due {
            self.end_fault(id, now, "healed", cluster, events)?;
        }
        self.expire_armed(now, false, events);
        while self.plan.front().is_some_and(|p| p.start <= now) {
            let Some(p) = self.plan.pop_front() else {
                break;
            };
            self.start_fault(p, now, cluster, view, events)?;
        }
        Ok(())
    }

    /// Ends every active fault now and drops the rest of the plan (the start of the
    /// liveness phase).
    pub fn heal_all(
        &mut self,
        now: Time,
        cluster: &mut dyn FaultControl,
        events: &mut Vec<RunEvent>,
    ) -> Result<(), FaultError> {
        self.plan.clear();
        self.expire_armed(now, true, events);
        let mut ids: Vec<u64> = self.active.iter().map(|a| a.id).collect();
        ids.sort();
        for id in ids {
            self.end_fault(id, now, "healed for the liveness phase", cluster, events)?;
        }
        Ok(())
    }

    /// Faults injected so far, by kind name.
    pub fn injected_by_kind(&self) -> &BTreeMap<String, u64> {
        &self.injected_by_kind
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected_by_kind.values().sum()
    }

    /// Planned faults that were skipped: no node was eligible (every node already
    /// crashed or paused by overlapping faults), or no transaction reached a
    /// transaction fault's point in time.
    pub fn skipped(&self) -> u64 {
        self.skipped_by_kind.values().sum()
    }

    /// Skipped faults by kind name (a transaction fault is skipped when no transaction
    /// reached its point in time).
    pub fn skipped_by_kind(&self) -> &BTreeMap<String, u64> {
        &self.skipped_by_kind
    }

    /// Nodes whose storage refused to recover at a restart (`disk-corrupt`), retired.
    pub fn refused_to_start(&self) -> u64 {
        self.refused_to_start
    }

    fn shuffled_nodes(&mut self) -> Vec<NodeId> {
        let mut v = self.gateways();
        for i in (1..v.len()).rev() {
            let j = below(&mut self.rng, i as u64 + 1) as usize;
            v.swap(i, j);
        }
        v
    }

    /// A random node among those `eligible` accepts, if any.
    fn pick(&mut self, eligible: impl Fn(&NodeId) -> bool) -> Option<NodeId> {
        let candidates: Vec<NodeId> = self
            .nodes
            .iter()
            .copied()
            .filter(|n| self.in_cluster(n) && eligible(n))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[below(&mut self.rng, candidates.len() as u64) as usize])
    }

    /// One node drawn uniformly from those in the cluster (all of them when none is).
    fn any_node(&mut self) -> NodeId {
        let v = match self.gateways() {
            v if v.is_empty() => self.nodes.clone(),
            v => v,
        };
        v[below(&mut self.rng, v.len() as u64) as usize]
    }

    /// The scheduled target if there is one and `eligible` accepts it (`None` skips
    /// the fault), else a random eligible node.
    fn choose(&mut self, targets: &[NodeId], eligible: impl Fn(&NodeId) -> bool) -> Option<NodeId> {
        match targets.first() {
            Some(t) => (self.in_cluster(t) && eligible(t)).then_some(*t),
            None => self.pick(eligible),
        }
    }

    fn start_fault(
        &mut self,
        p: PlannedFault,
        now: Time,
        cluster: &mut dyn FaultControl,
        view: &ClusterView,
        events: &mut Vec<RunEvent>,
    ) -> Result<(), FaultError> {
        self.last_side.clear();
        let started = match p.kind {
            FaultKind::PartitionHalves
            | FaultKind::PartitionRandom
            | FaultKind::OneWay
            | FaultKind::Isolate
            | FaultKind::Bridge
            | FaultKind::Ring => self.start_partition(p.kind, &p.targets, cluster),
            FaultKind::Crash | FaultKind::Pause => self.start_stop(p.kind, &p.targets, cluster)?,
            FaultKind::ClockDrift => self.start_clock_drift(&p.targets, cluster)?,
            FaultKind::Loss | FaultKind::Duplicate | FaultKind::Reorder => {
                self.start_network_rule(p.kind, cluster)
            }
            FaultKind::CrashLeader | FaultKind::IsolateLeader | FaultKind::IsolateSlowLeader => {
                self.start_leader_fault(p.kind, cluster, view)?
            }
            FaultKind::Membership => self.start_membership(now, view),
            FaultKind::ReplaceVoter => self.start_replace_voter(now, view),
            FaultKind::Join | FaultKind::Drain | FaultKind::KillPermanently => {
                self.start_permanent(p.kind, &p.targets, cluster)?
            }
            FaultKind::SwimPartition | FaultKind::SwimDelay | FaultKind::GroupPartition => {
                self.start_layer_fault(p.kind, cluster)
            }
            FaultKind::DiskFsyncError => self.start_fsync_error(&p.targets, cluster)?,
            FaultKind::DiskCorrupt => self.start_disk_corrupt(&p.targets, cluster)?,
            FaultKind::ClockJump => self.start_clock_jump(&p.targets, cluster)?,
            FaultKind::KillGateway | FaultKind::PartitionHomeGroup => {
                self.arm(p);
                return Ok(());
            }
        };
        let (undo, detail, node) = match started {
            Started::Done { undo, detail, node } => (undo, detail, node),
            Started::Skip(why) => return self.skip(&p, now, events, why),
        };
        let end = p.end.max(now);
        self.record_start(&p, now, end, (undo, detail, node, None), events);
        Ok(())
    }

    /// Records a fault that started (`fault_start`), and remembers how to undo it
    /// until `end`.
    fn record_start(
        &mut self,
        p: &PlannedFault,
        now: Time,
        end: Time,
        (undo, detail, node, point): (Undo, String, Option<NodeId>, Option<TxnFaultPoint>),
        events: &mut Vec<RunEvent>,
    ) {
        let name = fault_name(p.kind);
        *self.injected_by_kind.entry(name.clone()).or_insert(0) += 1;
        events.push(RunEvent::nemesis(
            now,
            NemesisEvent {
                kind: NemesisKind::FaultStart,
                node,
                fault_id: Some(p.id),
                fault: Some(name),
                detail,
                side: std::mem::take(&mut self.last_side),
                point,
            },
        ));
        if p.kind.is_permanent() {
            return; // nothing to undo
        }
        self.active.push(ActiveFault {
            id: p.id,
            kind: p.kind,
            end,
            undo,
        });
    }

    /// A partition of some shape: always possible, cuts links with rules.
    fn start_partition(
        &mut self,
        kind: FaultKind,
        targets: &[NodeId],
        cluster: &mut dyn FaultControl,
    ) -> Started {
        let (undo, detail, node) = match kind {
            FaultKind::PartitionHalves | FaultKind::PartitionRandom if !targets.is_empty() => {
                let rest: Vec<NodeId> = self
                    .gateways()
                    .into_iter()
                    .filter(|n| !targets.contains(n))
                    .collect();
                let detail = format!("{} | {}", node_list(targets), node_list(&rest));
                self.last_side = targets.to_vec();
                (partition(cluster, targets, &rest), detail, None)
            }
            FaultKind::PartitionHalves => {
                let v = self.shuffled_nodes();
                let (minority, majority) = v.split_at(v.len() / 2);
                let detail = format!("{} | {}", node_list(minority), node_list(majority));
                self.last_side = minority.to_vec();
                (partition(cluster, minority, majority), detail, None)
            }
            FaultKind::PartitionRandom => {
                let v = self.shuffled_nodes();
                let cut = 1 + below(&mut self.rng, v.len() as u64 - 1) as usize;
                let (a, b) = v.split_at(cut);
                let detail = format!("{} | {}", node_list(a), node_list(b));
                self.last_side = a.to_vec();
                (partition(cluster, a, b), detail, None)
            }
            FaultKind::OneWay => {
                let x = targets.first().copied().unwrap_or_else(|| self.any_node());
                let others: Vec<NodeId> = self.nodes.iter().copied().filter(|&n| n != x).collect();
                let (rule, detail) = if below(&mut self.rng, 2) == 0 {
                    let detail = format!("{x} hears no one: {} -/-> {x}", node_list(&others));
                    let rule = FaultRule::OneWay {
                        from: others,
                        to: vec![x],
                    };
                    (rule, detail)
                } else {
                    let detail = format!("no one hears {x}: {x} -/-> {}", node_list(&others));
                    let rule = FaultRule::OneWay {
                        from: vec![x],
                        to: others,
                    };
                    (rule, detail)
                };
                (one_rule(cluster, rule), detail, Some(x))
            }
            FaultKind::Isolate => {
                let x = targets.first().copied().unwrap_or_else(|| self.any_node());
                let rule = FaultRule::Isolate { node: x };
                (one_rule(cluster, rule), format!("{x} isolated"), Some(x))
            }
            FaultKind::Bridge => {
                let (bridge, a, b) = if let Some((&bridge, side)) = targets.split_first() {
                    let rest: Vec<NodeId> = self
                        .gateways()
                        .into_iter()
                        .filter(|n| !targets.contains(n))
                        .collect();
                    (bridge, side.to_vec(), rest)
                } else {
                    let v = self.shuffled_nodes();
                    let rest = &v[1..];
                    let (a, b) = rest.split_at(rest.len() / 2);
                    (v[0], a.to_vec(), b.to_vec())
                };
                let detail = format!("{} | {} with bridge {bridge}", node_list(&a), node_list(&b));
                self.last_side = a.clone();
                (partition(cluster, &a, &b), detail, Some(bridge))
            }
            _ => {
                let v = if targets.is_empty() {
                    self.shuffled_nodes()
                } else {
                    targets.to_vec()
                };
                self.last_side = v.clone();
                (ring(cluster, &v), format!("ring {}", node_list(&v)), None)
            }
        };
        Started::Done { undo, detail, node }
    }

    /// Crash or pause one node that is neither crashed nor paused.
    fn start_stop(
        &mut self,
        kind: FaultKind,
        targets: &[NodeId],
        cluster: &mut dyn FaultControl,
    ) -> Result<Started, FaultError> {
        let (crashed, paused) = (self.crashed.clone(), self.paused.clone());
        let Some(x) = self.choose(targets, |n| !crashed.contains(n) && !paused.contains(n)) else {
            return Ok(Started::Skip(NO_ELIGIBLE_NODE));
        };
        let (undo, detail) = if kind == FaultKind::Crash {
            cluster.crash(x)?;
            self.crashed.insert(x);
            (Undo::Restart(x), format!("{x} crashed"))
        } else {
            cluster.pause(x)?;
            self.paused.insert(x);
            (Undo::Resume(x), format!("{x} paused"))
        };
        Ok(Started::Done {
            undo,
            detail,
            node: Some(x),
        })
    }

    /// Skew one node's clock by a random amount up to `clock_drift_ppm_max`.
    fn start_clock_drift(
        &mut self,
        targets: &[NodeId],
        cluster: &mut dyn FaultControl,
    ) -> Result<Started, FaultError> {
        let drifted = self.drifted.clone();
        let Some(x) = self.choose(targets, |n| !drifted.contains(n)) else {
            return Ok(Started::Skip(NO_ELIGIBLE_NODE));
        };
        let max = self.spec.clock_drift_ppm_max.max(1) as u64;
        let magnitude = 1 + below(&mut self.rng, max) as i64;
        let ppm = if below(&mut self.rng, 2) == 0 {
            magnitude
        } else {
            -magnitude
        };
        cluster.set_clock_drift(x, ppm)?;
        self.drifted.insert(x);
        Ok(Started::Done {
            undo: Undo::ResetDrift(x),
            detail: format!("{x} clock drift {ppm:+} ppm"),
            node: Some(x),
        })
    }

    /// Step one running node's clock forward by up to `clock_jump_ms_max`.
    fn start_clock_jump(
        &mut self,
        targets: &[NodeId],
        cluster: &mut dyn FaultControl,
    ) -> Result<Started, FaultError> {
        let crashed = self.crashed.clone();
        let Some(x) = self.choose(targets, |n| !crashed.contains(n)) else {
            return Ok(Started::Skip(NO_ELIGIBLE_NODE));
        };
        let max_us = (self.spec.clock_jump_ms_max * 1e3).max(1.0) as u64;
        let by = std::time::Duration::from_micros(1_000 + below(&mut self.rng, max_us));
        cluster.jump_clock(x, by)?;
        Ok(Started::Done {
            undo: Undo::Rules(Vec::new()),
            detail: format!("{x} clock steps forward {:.1} ms", by.as_secs_f64() * 1e3),
            node: Some(x),
        })
    }

    /// Make one running node's fsyncs fail until the fault ends. The node counts as
    /// crashed meanwhile (it stops at its next fsync), so that no other fault restarts
    /// it behind this one's back.
    fn start_fsync_error(
        &mut self,
        targets: &[NodeId],
        cluster: &mut dyn FaultControl,
    ) -> Result<Started, FaultError> {
        let (crashed, paused) = (self.crashed.clone(), self.paused.clone());
        let Some(x) = self.choose(targets, |n| !crashed.contains(n) && !paused.contains(n)) else {
            return Ok(Started::Skip(NO_ELIGIBLE_NODE));
        };
        cluster.fail_fsyncs(x, true)?;
        self.crashed.insert(x);
        Ok(Started::Done {
            undo: Undo::DiskWorks(x),
            detail: format!("{x} disk fails every fsync (EIO): the node stops at its next one"),
            node: Some(x),
        })
    }

    /// Crash one node and damage a synced byte of its log; at the end it restarts or,
    /// when its recovery refuses, stays down for good. Skipped where that could leave a
    /// group without a quorum or the data without a copy.
    fn start_disk_corrupt(
        &mut self,
        targets: &[NodeId],
        cluster: &mut dyn FaultControl,
    ) -> Result<Started, FaultError> {
        if self.max_lost_for_good == 0 {
            return Ok(Started::Skip(
                "the system keeps one copy of the data: a damaged disk loses it by design",
            ));
        }
        if self.manage_membership && self.next_maintenance.is_some() {
            // The reconciler has not seen the group reach its target: the voters may be
            // fewer than it counts (swarm seed 41: n1 removed and not re-added yet,
            // voters {n2, n3}, and n3 lost for good).
            return Ok(Started::Skip(
                "the group is being reconfigured: a node lost for good could take its quorum",
            ));
        }
        if self.retired.len() + self.damaged.len() + 1 > self.lost_for_good_limit() {
            return Ok(Started::Skip(
                "another node down for good could leave a group without a quorum",
            ));
        }
        let (crashed, paused) = (self.crashed.clone(), self.paused.clone());
        let Some(x) = self.choose(targets, |n| !crashed.contains(n) && !paused.contains(n)) else {
            return Ok(Started::Skip(NO_ELIGIBLE_NODE));
        };
        cluster.crash(x)?;
        self.crashed.insert(x);
        let (undo, detail) = match cluster.corrupt_log(x)? {
            Some(what) => {
                self.damaged.insert(x);
                (Undo::RestartDamaged(x), format!("{x} crashed; {what}"))
            }
            None => (
                Undo::Restart(x),
                format!(
                    "{x} crashed; its log holds no synced byte beyond a crash's reach yet, so it restarts undamaged"
                ),
            ),
        };
        Ok(Started::Done {
            undo,
            detail,
            node: Some(x),
        })
    }

    /// Extra loss, duplication or reordering of every message.
    fn start_network_rule(&mut self, kind: FaultKind, cluster: &mut dyn FaultControl) -> Started {
        let (rule, detail) = match kind {
            FaultKind::Loss => (
                FaultRule::Loss {
                    probability: self.spec.loss_probability,
                },
                format!("extra loss {}", self.spec.loss_probability),
            ),
            FaultKind::Duplicate => (
                FaultRule::Duplicate {
                    probability: self.spec.duplicate_probability,
                },
                format!("extra duplication {}", self.spec.duplicate_probability),
            ),
            _ => (
                FaultRule::Delay {
                    extra: LatencyDist::Uniform {
                        min_ms: 0.0,
                        max_ms: self.spec.reorder_window_ms,
                    },
                },
                format!(
                    "every message delayed by up to {} ms more",
                    self.spec.reorder_window_ms
                ),
            ),
        };
        Started::Done {
            undo: one_rule(cluster, rule),
            detail,
            node: None,
        }
    }

    /// A fault aimed at one layer of the composed node's traffic (SWIM, or one vnode
    /// group's Raft messages); skipped where there are no vnode groups to aim at.
    fn start_layer_fault(&mut self, kind: FaultKind, cluster: &mut dyn FaultControl) -> Started {
        let v = self.shuffled_nodes();
        let (minority, majority) = v.split_at(v.len() / 2);
        let halves = FaultRule::Partition {
            a: minority.to_vec(),
            b: majority.to_vec(),
        };
        let sides = format!("{} | {}", node_list(minority), node_list(majority));
        let (layer, apply, detail) = match kind {
            FaultKind::SwimPartition => (Layer::Swim, halves, format!("SWIM only: {sides}")),
            FaultKind::SwimDelay => (
                Layer::Swim,
                FaultRule::Delay {
                    extra: SWIM_DELAY_EXTRA,
                },
                "SWIM messages delayed by 200–800 ms more".into(),
            ),
            _ => {
                if self.vnode_groups == 0 {
                    return Started::Skip("no vnode groups (group-partition needs system = kvlab)");
                }
                let v = below(&mut self.rng, u64::from(self.vnode_groups));
                let detail = format!("vnode {v}'s group only: {sides}");
                (Layer::Group(GroupId(v)), halves, detail)
            }
        };
        let rule = FaultRule::Layered {
            layer,
            apply: Box::new(apply),
        };
        Started::Done {
            undo: one_rule(cluster, rule),
            detail,
            node: None,
        }
    }

    /// Crash, isolate, or slow and isolate the leader the runner last saw.
    fn start_leader_fault(
        &mut self,
        kind: FaultKind,
        cluster: &mut dyn FaultControl,
        view: &ClusterView,
    ) -> Result<Started, FaultError> {
        let Some(x) = view.leader else {
            return Ok(Started::Skip("no leader known"));
        };
        let (undo, detail) = match kind {
            FaultKind::CrashLeader => {
                if self.crashed.contains(&x) || self.paused.contains(&x) {
                    return Ok(Started::Skip("no live leader known"));
                }
                cluster.crash(x)?;
                self.crashed.insert(x);
                (Undo::Restart(x), format!("leader {x} crashed"))
            }
            FaultKind::IsolateLeader => {
                let rule = FaultRule::Isolate { node: x };
                (one_rule(cluster, rule), format!("leader {x} isolated"))
            }
            _ => {
                if self.drifted.contains(&x) {
                    return Ok(Started::Skip("the leader's clock is already drifted"));
                }
                let ppm = -self.spec.clock_drift_ppm_max;
                cluster.set_clock_drift(x, ppm)?;
                self.drifted.insert(x);
                let rule = cluster.add_rule(FaultRule::Isolate { node: x });
                (
                    Undo::RulesAndDrift(vec![rule], x),
                    format!("leader {x} isolated, clock drift {ppm:+} ppm"),
                )
            }
        };
        Ok(Started::Done {
            undo,
            detail,
            node: Some(x),
        })
    }

    /// A join, a drain or a node lost for good: never undone.
    fn start_permanent(
        &mut self,
        kind: FaultKind,
        targets: &[NodeId],
        cluster: &mut dyn FaultControl,
    ) -> Result<Started, FaultError> {
        if kind == FaultKind::Join {
            let Some(x) = targets
                .first()
                .or_else(|| self.absent.first())
                .copied()
                .filter(|n| self.absent.contains(n))
            else {
                return Ok(Started::Skip("no node left to join"));
            };
            cluster.start(x)?;
            self.absent.remove(&x);
            return Ok(Started::Done {
                undo: Undo::Rules(Vec::new()),
                detail: format!("{x} boots and joins"),
                node: Some(x),
            });
        }
        if self.gateways().len() <= 1 {
            return Ok(Started::Skip("it would leave no node in the cluster"));
        }
        let (crashed, paused) = (self.crashed.clone(), self.paused.clone());
        let Some(x) = self.choose(targets, |n| !crashed.contains(n) && !paused.contains(n)) else {
            return Ok(Started::Skip(NO_ELIGIBLE_NODE));
        };
        let detail = if kind == FaultKind::Drain {
            let delivered = cluster.admin(x, AdminCommand::default_group(AdminAction::Drain))?;
            if !delivered {
                return Ok(Started::Skip("the drain command was not delivered"));
            }
            format!("{x} drains: hands its replicas away, then leaves")
        } else {
            cluster.crash(x)?;
            format!("{x} killed for good (never restarted)")
        };
        self.retired.insert(x);
        Ok(Started::Done {
            undo: Undo::Rules(Vec::new()),
            detail,
            node: Some(x),
        })
    }

    /// Remove a random voter from the group; the reconciler re-adds it at the end.
    fn start_membership(&mut self, now: Time, view: &ClusterView) -> Started {
        let Some(m) = view.membership.as_ref().filter(|_| self.manage_membership) else {
            return Started::Skip("the system reports no membership");
        };
        let removed = self.removed.clone();
        let candidates: Vec<NodeId> = m
            .voters
            .iter()
            .copied()
            .filter(|n| !removed.contains(n))
            .collect();
        if candidates.len() < 3 {
            return Started::Skip("fewer than 3 voters to remove one from");
        }
        // The voters left must keep a live majority (a node lost for good still votes
        // in the configuration).
        let live_majority_without = |x: &NodeId| {
            let live = (candidates.iter())
                .filter(|n| *n != x && !self.retired.contains(n))
                .count();
            2 * live > candidates.len() - 1
        };
        let candidates: Vec<NodeId> = (candidates.iter().copied())
            .filter(live_majority_without)
            .collect();
        if candidates.is_empty() {
            return Started::Skip("no voter can go without losing the live majority");
        }
        let x = candidates[below(&mut self.rng, candidates.len() as u64) as usize];
        self.removed.insert(x);
        self.next_maintenance = Some(now);
        let role = if view.leader == Some(x) {
            "the leader"
        } else {
            "a voter"
        };
        Started::Done {
            undo: Undo::Rejoin(x),
            detail: format!(
                "remove {x} ({role}) from voters {}; re-added as learner at the end",
                node_list(&m.voters)
            ),
            node: Some(x),
        }
    }

    /// Make a random voter the spare of a caught-up spare learner, which takes its vote;
    /// the reconciler makes the swap in the way drawn here.
    fn start_replace_voter(&mut self, now: Time, view: &ClusterView) -> Started {
        let Some(m) = view.membership.as_ref().filter(|_| self.manage_membership) else {
            return Started::Skip("the system reports no membership");
        };
        let ready: Vec<NodeId> = (m.caught_up.iter().copied())
            .filter(|n| self.spares.contains(n) && !self.retired.contains(n))
            .collect();
        let voters: Vec<NodeId> = (m.voters.iter().copied())
            .filter(|n| !self.removed.contains(n) && !self.spares.contains(n))
            .collect();
        if m.joint || ready.is_empty() || voters.is_empty() {
            return Started::Skip("no caught-up spare learner, or a joint change is under way");
        }
        let y = ready[below(&mut self.rng, ready.len() as u64) as usize];
        let x = voters[below(&mut self.rng, voters.len() as u64) as usize];
        self.swap = match below(&mut self.rng, 3) {
            0 => SwapWay::OneAtATime,
            k => SwapWay::Joint { auto_leave: k == 1 },
        };
        self.spares.remove(&y);
        self.spares.insert(x);
        self.next_maintenance = Some(now);
        let role = if view.leader == Some(x) {
            "the leader"
        } else {
            "a voter"
        };
        let how = match self.swap {
            SwapWay::OneAtATime => "one server at a time (add, remove, re-add as learner)",
            SwapWay::Joint { auto_leave: true } => {
                "through a joint configuration, left automatically"
            }
            SwapWay::Joint { auto_leave: false } => {
                "through a joint configuration and a LeaveJoint"
            }
        };
        Started::Done {
            undo: Undo::Rules(Vec::new()),
            detail: format!(
                "replace {x} ({role}) by spare {y} in voters {}, {how}; {x} is the spare now",
                node_list(&m.voters)
            ),
            node: Some(x),
        }
    }

    fn skip(
        &mut self,
        p: &PlannedFault,
        now: Time,
        events: &mut Vec<RunEvent>,
        why: &str,
    ) -> Result<(), FaultError> {
        *self.skipped_by_kind.entry(fault_name(p.kind)).or_insert(0) += 1;
        events.push(RunEvent::nemesis(
            now,
            NemesisEvent {
                kind: NemesisKind::FaultSkipped,
                node: None,
                fault_id: Some(p.id),
                fault: Some(fault_name(p.kind)),
                detail: why.into(),
                side: Vec::new(),
                point: None,
            },
        ));
        Ok(())
    }

    /// Restarts `n` after a disk fault if it is down; a node whose storage refuses to
    /// recover is retired (never restarted, no longer a gateway). Returns the
    /// `fault_end` detail.
    fn restart_after_disk_fault(
        &mut self,
        n: NodeId,
        why: &str,
        cluster: &mut dyn FaultControl,
    ) -> Result<String, FaultError> {
        Ok(match cluster.restart_if_down(n)? {
            Restart::Restarted => format!("{why}; {n} restarted"),
            Restart::WasUp => format!("{why}; {n} had not stopped"),
            Restart::Refused(reason) => {
                self.retired.insert(n);
                self.refused_to_start += 1;
                format!("{why}; {n} refused to start and stays down: {reason}")
            }
        })
    }

    fn end_fault(
        &mut self,
        id: u64,
        now: Time,
        why: &str,
        cluster: &mut dyn FaultControl,
        events: &mut Vec<RunEvent>,
    ) -> Result<(), FaultError> {
        let Some(pos) = self.active.iter().position(|a| a.id == id) else {
            return Ok(());
        };
        let a = self.active.remove(pos);
        let mut detail = why.to_string();
        let node = match &a.undo {
            Undo::Rules(rules) => {
                for r in rules {
                    cluster.remove_rule(*r);
                }
                None
            }
            Undo::Restart(n) => {
                cluster.restart(*n)?;
                self.crashed.remove(n);
                Some(*n)
            }
            Undo::Resume(n) => {
                cluster.resume(*n)?;
                self.paused.remove(n);
                Some(*n)
            }
            Undo::ResetDrift(n) => {
                cluster.set_clock_drift(*n, 0)?;
                self.drifted.remove(n);
                Some(*n)
            }
            Undo::RulesAndDrift(rules, n) => {
                for r in rules {
                    cluster.remove_rule(*r);
                }
                cluster.set_clock_drift(*n, 0)?;
                self.drifted.remove(n);
                Some(*n)
            }
            Undo::Rejoin(n) => {
                self.removed.remove(n);
                if self.manage_membership {
                    self.next_maintenance = Some(now);
                }
                Some(*n)
            }
            Undo::DiskWorks(n) => {
                cluster.fail_fsyncs(*n, false)?;
                self.crashed.remove(n);
                detail = self.restart_after_disk_fault(*n, why, cluster)?;
                Some(*n)
            }
            Undo::RestartDamaged(n) => {
                self.crashed.remove(n);
                self.damaged.remove(n);
                detail = self.restart_after_disk_fault(*n, why, cluster)?;
                Some(*n)
            }
        };
        events.push(RunEvent::nemesis(
            now,
            NemesisEvent {
                kind: NemesisKind::FaultEnd,
                node,
                fault_id: Some(a.id),
                fault: Some(fault_name(a.kind)),
                detail,
                side: Vec::new(),
                point: None,
            },
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvlab_types::NodeEvent;

    /// Records what the nemesis asked for and keeps the set of active rules.
    #[derive(Debug, Default)]
    struct Recorder {
        rules: BTreeMap<RuleId, FaultRule>,
        /// Every rule ever added, in order.
        rules_added: Vec<FaultRule>,
        next: u64,
        log: Vec<String>,
        down: BTreeSet<NodeId>,
    }

    impl FaultControl for Recorder {
        fn add_rule(&mut self, rule: FaultRule) -> RuleId {
            let id = RuleId(self.next);
            self.next += 1;
            self.rules_added.push(rule.clone());
            self.rules.insert(id, rule);
            id
        }
        fn remove_rule(&mut self, rule: RuleId) {
            assert!(self.rules.remove(&rule).is_some(), "removed a rule twice");
        }
        fn crash(&mut self, node: NodeId) -> Result<(), FaultError> {
            assert!(self.down.insert(node), "crashed {node} twice");
            self.log.push(format!("crash {node}"));
            Ok(())
        }
        fn restart(&mut self, node: NodeId) -> Result<(), FaultError> {
            assert!(self.down.remove(&node), "restarted {node} while up");
            self.log.push(format!("restart {node}"));
            Ok(())
        }
        fn pause(&mut self, node: NodeId) -> Result<(), FaultError> {
            self.log.push(format!("pause {node}"));
            Ok(())
        }
        fn resume(&mut self, node: NodeId) -> Result<(), FaultError> {
            self.log.push(format!("resume {node}"));
            Ok(())
        }
        fn set_clock_drift(&mut self, node: NodeId, ppm: i64) -> Result<(), FaultError> {
            self.log.push(format!("drift {node} {ppm}"));
            Ok(())
        }
        fn start(&mut self, node: NodeId) -> Result<(), FaultError> {
            self.log.push(format!("start {node}"));
            Ok(())
        }
        fn admin(&mut self, node: NodeId, cmd: AdminCommand) -> Result<bool, FaultError> {
            self.log.push(format!("admin {node} {:?}", cmd.action));
            Ok(true)
        }
    }

    fn nodes(n: u32) -> Vec<NodeId> {
        (1..=n).map(NodeId).collect()
    }

    /// A nemesis injecting only `kind` into `n` nodes over a 10 s safety phase.
    fn one_kind(kind: FaultKind, n: u32, seed: u64) -> Nemesis {
        Nemesis::new(
            &spec(vec![kind]),
            &nodes(n),
            Time::ZERO,
            Time::from_secs(10),
            seed,
        )
    }

    fn spec(faults: Vec<FaultKind>) -> NemesisSpec {
        NemesisSpec {
            faults,
            start_after_s: 1.0,
            interval_s: 2.0,
            fault_duration_s: 1.0,
            ..NemesisSpec::default()
        }
    }

    /// Runs the nemesis over a safety phase and returns the events and the recorder.
    fn drive(
        spec: &NemesisSpec,
        n: u32,
        safety_s: u64,
        seed: u64,
    ) -> (Vec<RunEvent>, Recorder, Nemesis) {
        let mut nem = Nemesis::new(spec, &nodes(n), Time::ZERO, Time::from_secs(safety_s), seed);
        let mut rec = Recorder::default();
        let mut events = Vec::new();
        while let Some(t) = nem.next_wakeup() {
            if t >= Time::from_secs(safety_s) {
                break;
            }
            nem.step(t, &mut rec, &mut events).unwrap();
        }
        nem.heal_all(Time::from_secs(safety_s), &mut rec, &mut events)
            .unwrap();
        (events, rec, nem)
    }

    #[test]
    fn schedule_starts_after_quiet_period_every_interval() {
        let (events, rec, nem) = drive(&spec(vec![FaultKind::PartitionHalves]), 5, 10, 1);
        let starts: Vec<u64> = events
            .iter()
            .filter(|e| e.kind() == "fault_start")
            .map(|e| e.time_ns / 1_000_000)
            .collect();
        assert_eq!(starts, vec![1000, 3000, 5000, 7000, 9000]);
        assert_eq!(nem.injected(), 5);
        assert_eq!(nem.injected_by_kind()["partition_halves"], 5);
        // Every start has a matching end, and every rule is gone at the end.
        for s in events.iter().filter(|e| e.kind() == "fault_start") {
            assert!(events.iter().any(|e| e.kind() == "fault_end"
                && e.nemesis_event().map(|n| n.fault_id) == s.nemesis_event().map(|n| n.fault_id)));
        }
        assert!(rec.rules.is_empty());
    }

    #[test]
    fn partition_halves_splits_minority_from_majority() {
        let mut nem = one_kind(FaultKind::PartitionHalves, 5, 3);
        let mut rec = Recorder::default();
        let mut events = Vec::new();
        nem.step(Time::from_secs(1), &mut rec, &mut events).unwrap();
        let rule = rec.rules.values().next().unwrap();
        match rule {
            FaultRule::Partition { a, b } => {
                assert_eq!((a.len(), b.len()), (2, 3));
                let mut all: Vec<NodeId> = a.iter().chain(b).copied().collect();
                all.sort();
                assert_eq!(all, nodes(5));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ring_cuts_every_non_neighbour_pair() {
        let mut nem = one_kind(FaultKind::Ring, 5, 3);
        let mut rec = Recorder::default();
        let mut events = Vec::new();
        nem.step(Time::from_secs(1), &mut rec, &mut events).unwrap();
        // 5 nodes: 10 pairs, 5 of them neighbours in the ring.
        assert_eq!(rec.rules.len(), 5);
        let mut degree: BTreeMap<NodeId, usize> = BTreeMap::new();
        for r in rec.rules.values() {
            if let FaultRule::Partition { a, b } = r {
                *degree.entry(a[0]).or_default() += 1;
                *degree.entry(b[0]).or_default() += 1;
            }
        }
        // Each node is cut from exactly the 2 nodes that are not its neighbours.
        assert!(degree.values().all(|&d| d == 2), "{degree:?}");
    }

    #[test]
    fn bridge_node_is_in_neither_side() {
        let mut nem = one_kind(FaultKind::Bridge, 5, 8);
        let mut rec = Recorder::default();
        let mut events = Vec::new();
        nem.step(Time::from_secs(1), &mut rec, &mut events).unwrap();
        let bridge = events[0].node_id().unwrap();
        match rec.rules.values().next().unwrap() {
            FaultRule::Partition { a, b } => {
                assert_eq!((a.len(), b.len()), (2, 2));
                assert!(!a.contains(&bridge) && !b.contains(&bridge));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn crash_restarts_at_the_end_and_overlapping_crashes_pick_live_nodes() {
        let s = NemesisSpec {
            overlap: true,
            interval_s: 1.0,
            fault_duration_s: 2.5,
            ..spec(vec![FaultKind::Crash])
        };
        let (events, rec, nem) = drive(&s, 2, 8, 5);
        // With 2 nodes and up to 3 crashes overlapping, some are skipped, none doubled
        // (the recorder asserts that), and everything is restarted at the end.
        assert!(rec.down.is_empty());
        assert!(nem.skipped() > 0);
        assert!(events.iter().any(|e| e.kind() == "fault_skipped"));
        assert_eq!(
            rec.log.iter().filter(|l| l.starts_with("crash")).count(),
            rec.log.iter().filter(|l| l.starts_with("restart")).count()
        );
    }

    #[test]
    fn clock_drift_is_reset_when_the_fault_ends() {
        let (_, rec, _) = drive(&spec(vec![FaultKind::ClockDrift]), 3, 4, 2);
        let drifts: Vec<&String> = rec.log.iter().filter(|l| l.starts_with("drift")).collect();
        assert_eq!(drifts.len(), 4);
        assert!(
            drifts[1].ends_with(" 0") && drifts[3].ends_with(" 0"),
            "{drifts:?}"
        );
        assert!(!drifts[0].ends_with(" 0"));
    }

    /// A recorder that also takes admin commands.
    #[derive(Debug, Default)]
    struct AdminRecorder {
        inner: Recorder,
        commands: Vec<(NodeId, AdminCommand)>,
    }

    impl FaultControl for AdminRecorder {
        fn add_rule(&mut self, rule: FaultRule) -> RuleId {
            self.inner.add_rule(rule)
        }
        fn remove_rule(&mut self, rule: RuleId) {
            self.inner.remove_rule(rule)
        }
        fn crash(&mut self, node: NodeId) -> Result<(), FaultError> {
            self.inner.crash(node)
        }
        fn restart(&mut self, node: NodeId) -> Result<(), FaultError> {
            self.inner.restart(node)
        }
        fn pause(&mut self, node: NodeId) -> Result<(), FaultError> {
            self.inner.pause(node)
        }
        fn resume(&mut self, node: NodeId) -> Result<(), FaultError> {
            self.inner.resume(node)
        }
        fn set_clock_drift(&mut self, node: NodeId, ppm: i64) -> Result<(), FaultError> {
            self.inner.set_clock_drift(node, ppm)
        }
        fn admin(&mut self, node: NodeId, cmd: AdminCommand) -> Result<bool, FaultError> {
            self.commands.push((node, cmd));
            Ok(true)
        }
    }

    fn view(leader: u32, voters: &[u32], learners: &[u32], caught_up: &[u32]) -> ClusterView {
        let ids = |v: &[u32]| v.iter().copied().map(NodeId).collect::<Vec<_>>();
        ClusterView {
            leader: Some(NodeId(leader)),
            membership: Some(kvlab_node::inspect::MembershipStatus {
                voters: ids(voters),
                learners: ids(learners),
                caught_up: ids(caught_up),
                change_pending: false,
                joint: false,
            }),
        }
    }

    #[test]
    fn crash_leader_crashes_the_known_leader_and_skips_without_one() {
        let mut nem = one_kind(FaultKind::CrashLeader, 3, 1);
        let mut rec = Recorder::default();
        let mut events = Vec::new();
        nem.step(Time::from_secs(1), &mut rec, &mut events).unwrap();
        assert_eq!(nem.skipped(), 1, "no leader known: skipped");
        let v = view(2, &[1, 2, 3], &[], &[]);
        nem.step_with_view(Time::from_secs(3), &mut rec, &v, &mut events)
            .unwrap();
        assert_eq!(rec.log, vec!["crash n2".to_string()]);
        nem.step_with_view(Time::from_secs(4), &mut rec, &v, &mut events)
            .unwrap();
        assert_eq!(rec.log.last().map(String::as_str), Some("restart n2"));
    }

    #[test]
    fn isolate_leader_duplicate_and_reorder_install_rules_and_remove_them() {
        let v = view(3, &[1, 2, 3], &[], &[]);
        for (kind, expect) in [
            (FaultKind::IsolateLeader, "isolate"),
            (FaultKind::Duplicate, "duplicate"),
            (FaultKind::Reorder, "delay"),
        ] {
            let mut nem = one_kind(kind, 3, 1);
            let mut rec = Recorder::default();
            let mut events = Vec::new();
            nem.step_with_view(Time::from_secs(1), &mut rec, &v, &mut events)
                .unwrap();
            let rule = rec.rules.values().next().expect("a rule");
            assert_eq!(rule.name(), expect);
            if let FaultRule::Isolate { node } = rule {
                assert_eq!(*node, NodeId(3));
            }
            nem.step_with_view(Time::from_secs(2), &mut rec, &v, &mut events)
                .unwrap();
            assert!(rec.rules.is_empty(), "{kind:?} left a rule behind");
        }
    }

    #[test]
    fn isolate_slow_leader_slows_and_isolates_the_leader_then_undoes_both() {
        let v = view(2, &[1, 2, 3], &[], &[]);
        let s = NemesisSpec {
            clock_drift_ppm_max: 400_000,
            ..spec(vec![FaultKind::IsolateSlowLeader])
        };
        let mut nem = Nemesis::new(&s, &nodes(3), Time::ZERO, Time::from_secs(10), 1);
        let mut rec = Recorder::default();
        let mut events = Vec::new();
        nem.step_with_view(Time::from_secs(1), &mut rec, &v, &mut events)
            .unwrap();
        assert_eq!(rec.log, vec!["drift n2 -400000".to_string()]);
        let rule = rec.rules.values().next().expect("an isolation rule");
        assert_eq!(rule, &FaultRule::Isolate { node: NodeId(2) });
        nem.step_with_view(Time::from_secs(2), &mut rec, &v, &mut events)
            .unwrap();
        assert!(rec.rules.is_empty(), "the isolation was not healed");
        assert_eq!(rec.log.last().map(String::as_str), Some("drift n2 0"));
        // Without a known leader the fault is skipped.
        nem.step(Time::from_secs(3), &mut rec, &mut events).unwrap();
        assert_eq!(nem.skipped(), 1);
        assert_eq!(nem.injected_by_kind()["isolate_slow_leader"], 1);
    }

    #[test]
    fn no_node_is_lost_for_good_while_the_group_is_being_reconfigured() {
        // Swarm seed 41: a removed voter not re-added yet left voters {n2, n3}, and a
        // disk-corrupt fault then took n3 for good.
        let mut nem = one_kind(FaultKind::DiskCorrupt, 3, 1);
        nem.set_max_lost_for_good(1);
        nem.manage_membership(Time::ZERO);
        let mut rec = AdminRecorder::default();
        let mut events = Vec::new();
        nem.step(Time::from_secs(1), &mut rec, &mut events).unwrap();
        assert_eq!(nem.skipped(), 1);
        let why = events.last().map(|e| format!("{e:?}")).unwrap_or_default();
        assert!(why.contains("being reconfigured"), "{why}");
        assert!(
            rec.inner.log.is_empty(),
            "nothing crashed: {:?}",
            rec.inner.log
        );
        // Once the reconciler saw the group whole, the fault goes ahead (and reaches
        // the cluster, which here cannot damage a disk).
        let whole = view(1, &[1, 2, 3], &[], &[]);
        nem.maintain(Time::from_secs(2), &mut rec, &whole, &mut events)
            .unwrap();
        assert_eq!(nem.next_maintenance(), None);
        assert!(nem.step(Time::from_secs(3), &mut rec, &mut events).is_err());
    }

    #[test]
    fn membership_fault_removes_a_voter_then_re_adds_it_as_learner_and_promotes_it() {
        let mut nem = one_kind(FaultKind::Membership, 5, 4);
        nem.manage_membership(Time::ZERO);
        let mut rec = AdminRecorder::default();
        let mut events = Vec::new();
        let all = [1, 2, 3, 4, 5];
        // The group is whole: the reconciler has nothing to do and goes quiet.
        nem.maintain(Time::ZERO, &mut rec, &view(1, &all, &[], &[]), &mut events)
            .unwrap();
        assert!(rec.commands.is_empty());
        assert_eq!(nem.next_maintenance(), None);
        let t = Time::from_secs(1);
        nem.step_with_view(t, &mut rec, &view(1, &all, &[], &[]), &mut events)
            .unwrap();
        let x = events.last().unwrap().node_id().unwrap();
        nem.maintain(t, &mut rec, &view(1, &all, &[], &[]), &mut events)
            .unwrap();
        assert_eq!(
            rec.commands,
            vec![(
                NodeId(1),
                AdminCommand::default_group(AdminAction::RemoveNode(x))
            )]
        );
        let rest: Vec<u32> = all.iter().copied().filter(|&n| n != x.0).collect();
        // The fault ends: x comes back as a learner, then as a voter once caught up.
        let t = Time::from_secs(2);
        nem.step_with_view(t, &mut rec, &view(1, &rest, &[], &[]), &mut events)
            .unwrap();
        nem.maintain(t, &mut rec, &view(1, &rest, &[], &[]), &mut events)
            .unwrap();
        assert_eq!(
            rec.commands[1],
            (
                NodeId(1),
                AdminCommand::default_group(AdminAction::AddLearner(x))
            )
        );
        let t = Time::from_millis(2_100);
        nem.maintain(t, &mut rec, &view(1, &rest, &[x.0], &[]), &mut events)
            .unwrap();
        assert_eq!(
            rec.commands.len(),
            2,
            "a learner still catching up is not promoted"
        );
        let t = Time::from_millis(2_200);
        nem.maintain(t, &mut rec, &view(1, &rest, &[x.0], &[x.0]), &mut events)
            .unwrap();
        assert_eq!(
            rec.commands[2],
            (
                NodeId(1),
                AdminCommand::default_group(AdminAction::AddVoter(x))
            )
        );
        let t = Time::from_millis(2_300);
        nem.maintain(t, &mut rec, &view(1, &all, &[], &[]), &mut events)
            .unwrap();
        assert_eq!(nem.next_maintenance(), None);
        assert_eq!(nem.admin_commands(), 3);
    }

    #[test]
    fn membership_fault_is_skipped_without_membership_or_with_too_few_voters() {
        let mut nem = one_kind(FaultKind::Membership, 3, 4);
        let mut rec = AdminRecorder::default();
        let mut events = Vec::new();
        nem.step(Time::from_secs(1), &mut rec, &mut events).unwrap();
        nem.manage_membership(Time::from_secs(3));
        let v = view(1, &[1, 2], &[3], &[]);
        nem.step_with_view(Time::from_secs(3), &mut rec, &v, &mut events)
            .unwrap();
        assert_eq!(nem.skipped(), 2);
        assert_eq!(nem.injected(), 0);
    }

    fn home_step(gateway: u32, seq: u64, step: TxnStepKind, voters: &[u32]) -> NodeEvent {
        NodeEvent::TxnStep {
            txn: TxnRef {
                node: NodeId(gateway),
                boot_epoch: 1,
                seq,
            },
            group: GroupId(7),
            home: GroupId(7),
            step,
            voters: voters.iter().copied().map(NodeId).collect(),
        }
    }

    #[test]
    fn kill_gateway_waits_for_its_point_and_is_skipped_without_one() {
        let s = NemesisSpec {
            gateway_kill_point: crate::spec::GatewayKillPoint::AfterDecision,
            ..spec(vec![FaultKind::KillGateway])
        };
        let mut nem = Nemesis::new(&s, &nodes(5), Time::ZERO, Time::from_secs(4), 1);
        let (mut rec, mut events) = (Recorder::default(), Vec::new());
        nem.step(Time::from_secs(1), &mut rec, &mut events).unwrap();
        assert!(rec.log.is_empty() && events.is_empty(), "armed, not struck");
        let t = Time::from_millis(1_200);
        // Not its point; then its point reported by the gateway itself (it would hear
        // the answer at once); then by the home's leader, n4: n2 crashes there.
        let prepared = home_step(2, 1, TxnStepKind::Prepared, &[3, 4, 5]);
        nem.on_txn_step(t, NodeId(4), &prepared, &mut rec, &mut events)
            .unwrap();
        let committed = home_step(2, 2, TxnStepKind::Committed, &[]);
        nem.on_txn_step(t, NodeId(2), &committed, &mut rec, &mut events)
            .unwrap();
        assert!(rec.log.is_empty());
        let committed = home_step(2, 3, TxnStepKind::Committed, &[]);
        nem.on_txn_step(t, NodeId(4), &committed, &mut rec, &mut events)
            .unwrap();
        // A second report of the same step (a follower) strikes nothing more.
        nem.on_txn_step(t, NodeId(5), &committed, &mut rec, &mut events)
            .unwrap();
        assert_eq!(rec.log, vec!["crash n2".to_string()]);
        let start = events[0].nemesis_event().unwrap();
        assert_eq!(start.point, Some(TxnFaultPoint::AfterDecision));
        assert_eq!(start.node, Some(NodeId(2)));
        // It lasts the fault's duration from the strike; the next one finds no point.
        nem.step(Time::from_millis(2_200), &mut rec, &mut events)
            .unwrap();
        assert_eq!(rec.log.last().map(String::as_str), Some("restart n2"));
        nem.step(Time::from_secs(3), &mut rec, &mut events).unwrap();
        nem.step(Time::from_secs(4), &mut rec, &mut events).unwrap();
        assert_eq!((nem.injected(), nem.skipped()), (1, 1));
        assert_eq!(nem.skipped_by_kind()["kill_gateway"], 1);
    }

    #[test]
    fn partition_home_group_cuts_the_homes_voters_but_the_gateway_off_the_rest() {
        let mut nem = one_kind(FaultKind::PartitionHomeGroup, 5, 1);
        let (mut rec, mut events) = (Recorder::default(), Vec::new());
        nem.step(Time::from_secs(1), &mut rec, &mut events).unwrap();
        let prepared = home_step(3, 1, TxnStepKind::Prepared, &[1, 3, 4]);
        let t = Time::from_millis(1_100);
        nem.on_txn_step(t, NodeId(1), &prepared, &mut rec, &mut events)
            .unwrap();
        let rule = rec.rules.values().next().expect("a partition");
        assert_eq!(
            rule,
            &FaultRule::Partition {
                a: vec![NodeId(1), NodeId(4)],
                b: vec![NodeId(2), NodeId(3), NodeId(5)],
            }
        );
        nem.step(Time::from_millis(2_100), &mut rec, &mut events)
            .unwrap();
        assert!(rec.rules.is_empty(), "healed");
    }

    #[test]
    fn same_seed_same_faults() {
        let all = vec![
            FaultKind::PartitionRandom,
            FaultKind::OneWay,
            FaultKind::Isolate,
            FaultKind::Pause,
            FaultKind::Loss,
        ];
        let (a, _, _) = drive(&spec(all.clone()), 5, 30, 42);
        let (b, _, _) = drive(&spec(all.clone()), 5, 30, 42);
        let (c, _, _) = drive(&spec(all), 5, 30, 43);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    fn at(at_s: f64, kind: FaultKind, targets: &[u32], duration_s: Option<f64>) -> ScheduledFault {
        ScheduledFault {
            at_s,
            kind,
            targets: targets.to_vec(),
            duration_s,
            point: None,
        }
    }

    #[test]
    fn scheduled_faults_hit_their_targets_at_their_times() {
        let spec = NemesisSpec {
            schedule: vec![
                at(4.0, FaultKind::Pause, &[3], None),
                at(1.0, FaultKind::Crash, &[2], Some(2.5)),
                at(5.0, FaultKind::PartitionHalves, &[1, 4], Some(1.0)),
            ],
            ..spec(Vec::new())
        };
        let (events, rec, nem) = drive(&spec, 5, 10, 1);
        let at_ms = |kind: &str| -> Vec<(u64, String)> {
            events
                .iter()
                .filter(|e| e.kind() == kind)
                .filter_map(|e| Some((e.time_ns / 1_000_000, e.nemesis_event()?.detail.clone())))
                .collect()
        };
        assert_eq!(
            at_ms("fault_start"),
            vec![
                (1000, "n2 crashed".to_string()),
                (4000, "n3 paused".to_string()),
                (5000, "[n1 n4] | [n2 n3 n5]".to_string()),
            ]
        );
        let ends: Vec<u64> = at_ms("fault_end").iter().map(|(t, _)| *t).collect();
        assert_eq!(ends, vec![3500, 5000, 6000]);
        assert_eq!(
            rec.log[..2],
            ["crash n2".to_string(), "restart n2".to_string()]
        );
        assert_eq!(nem.injected(), 3);
        assert!(rec.rules.is_empty());
    }

    /// The pairs of nodes the partition rules added so far cut apart.
    fn cut_links(rec: &Recorder) -> BTreeSet<(NodeId, NodeId)> {
        let mut cut = BTreeSet::new();
        for rule in &rec.rules_added {
            if let FaultRule::Partition { a, b } = rule {
                for &x in a {
                    for &y in b {
                        cut.insert((x.min(y), x.max(y)));
                    }
                }
            }
        }
        cut
    }

    #[test]
    fn a_random_bridge_or_ring_replays_from_what_its_start_recorded() {
        // What `kvlab shrink` reads back: a bridge's node then its recorded side, a
        // ring's recorded order. As scheduled targets they cut the same links.
        for kind in [FaultKind::Bridge, FaultKind::Ring] {
            for seed in 1..20 {
                let (events, rec, _) = drive(&spec(vec![kind]), 6, 2, seed);
                let start = events
                    .iter()
                    .filter_map(|e| e.nemesis_event())
                    .find(|e| e.kind == NemesisKind::FaultStart)
                    .expect("a fault started");
                let mut targets: Vec<u32> = start.side.iter().map(|n| n.0).collect();
                if kind == FaultKind::Bridge {
                    targets.insert(0, start.node.expect("the bridge").0);
                }
                let replay = NemesisSpec {
                    schedule: vec![at(1.0, kind, &targets, Some(1.0))],
                    ..spec(Vec::new())
                };
                replay.schedule[0]
                    .validate("schedule[0]", 6)
                    .unwrap_or_else(|e| panic!("{kind:?} seed {seed}: {e:?}"));
                let (_, replayed, _) = drive(&replay, 6, 2, seed + 1000);
                assert_eq!(
                    cut_links(&replayed),
                    cut_links(&rec),
                    "{kind:?} seed {seed}"
                );
                assert!(!cut_links(&rec).is_empty());
            }
        }
    }

    #[test]
    fn a_scheduled_fault_on_a_busy_target_is_skipped() {
        let spec = NemesisSpec {
            schedule: vec![
                at(1.0, FaultKind::Crash, &[2], Some(3.0)),
                at(2.0, FaultKind::Pause, &[2], None),
            ],
            ..spec(Vec::new())
        };
        let (_, _, nem) = drive(&spec, 3, 10, 1);
        assert_eq!((nem.injected(), nem.skipped()), (1, 1));
    }

    #[test]
    fn joins_drains_and_permanent_kills_change_the_gateways_for_good() {
        let spec = NemesisSpec {
            faults: vec![FaultKind::Crash],
            schedule: vec![
                at(1.5, FaultKind::Join, &[], None),
                at(2.5, FaultKind::KillPermanently, &[2], None),
                at(4.5, FaultKind::Drain, &[3], None),
            ],
            ..spec(Vec::new())
        };
        let mut nem = Nemesis::new(&spec, &nodes(5), Time::ZERO, Time::from_secs(30), 9);
        nem.set_absent(&[NodeId(4), NodeId(5)]);
        assert_eq!(nem.gateways(), nodes(3));
        let mut rec = Recorder::default();
        let mut events = Vec::new();
        while let Some(t) = nem.next_wakeup().filter(|t| *t < Time::from_secs(30)) {
            let before = nem.gateways();
            let from = events.len();
            nem.step(t, &mut rec, &mut events).unwrap();
            // Random crashes aim only at nodes in the cluster (joined, not gone).
            for e in events[from..].iter().filter_map(|e| e.nemesis_event()) {
                if e.fault.as_deref() == Some("crash") && e.kind == NemesisKind::FaultStart {
                    assert!(before.contains(&e.node.unwrap()), "{e:?} not in {before:?}");
                }
            }
        }
        assert!(rec.log.contains(&"start n4".to_string()), "{:?}", rec.log);
        assert!(rec.log.contains(&"crash n2".to_string()));
        assert!(rec.log.contains(&"admin n3 Drain".to_string()));
        assert_eq!(nem.gateways(), vec![NodeId(1), NodeId(4)]);
        assert_eq!(nem.retired(), &[NodeId(2), NodeId(3)].into());
        nem.heal_all(Time::from_secs(30), &mut rec, &mut events)
            .unwrap();
        assert!(
            !rec.log.contains(&"restart n2".to_string()),
            "{:?}",
            rec.log
        );
    }
}

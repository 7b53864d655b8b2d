//! End-to-end scenarios of the meta state machine and scheduler over a fake cluster: the
//! groups are replica sets that carry out step commands at once (honouring the epoch
//! precondition and needing a live quorum), leaders are the lowest live voters, SWIM's
//! view and the store heartbeats are derived from which nodes run. Every command the
//! scheduler proposes is applied through its log encoding, as a meta replica would.
//!
//! These check wave 2 §8's "must show" items that need no real Raft: joins fill the new
//! node, a loss is replaced once and only after `replace_down_after_ms`, short pauses
//! move nothing, `require_raft_evidence` blocks SWIM false positives, drains end in
//! Removed, a meta leader change resumes operators, the scheduler is deterministic, and
//! the `remove-before-add` teaching bug runs groups below RF where the correct planner
//! never does.

use std::collections::{BTreeMap, BTreeSet};

use kvlab_ring::balance::{thrashing, within_band};
use kvlab_ring::meta::{
    LedGroup, MetaCmd, MetaEntry, MetaState, NodeState, Scheduler, StoreReport, SwimStatus,
};
use kvlab_ring::{
    ConfChangeMode, Descriptor, OperatorKind, PlacementBug, PlacementStrategy, ReplicaSet,
    RingSpec, Step, StepCommand, StrategyParams, VnodeId, initial_placement,
};
use kvlab_types::{NodeId, Time};

const TICK_MS: u64 = 200;

#[derive(Clone, Debug)]
struct Group {
    set: ReplicaSet,
    leader: Option<NodeId>,
    term: u64,
}

struct Sim {
    now: Time,
    spec: RingSpec,
    rf: usize,
    state: MetaState,
    sched: Scheduler,
    groups: BTreeMap<VnodeId, Group>,
    /// Nodes whose process runs (Raft hears them).
    running: BTreeSet<NodeId>,
    /// When a stopped node stopped.
    stopped_at: BTreeMap<NodeId, Time>,
    /// Nodes SWIM calls dead (usually the stopped ones; a false positive otherwise).
    swim_dead: BTreeSet<NodeId>,
    incarnation: BTreeMap<NodeId, u64>,
    /// Every applied meta entry, encoded.
    log: Vec<Vec<u8>>,
    /// Learners added (snapshots sent).
    snapshots: usize,
    /// Fewest voters any group had, over the run.
    min_voters: usize,
    /// Ticks during which some group had no live quorum.
    quorumless_ticks: usize,
    /// Replica count per node, per tick.
    series: BTreeMap<NodeId, Vec<f64>>,
    /// Whether any node was ever Down.
    ever_down: BTreeSet<NodeId>,
}

fn spec_with(f: impl FnOnce(&mut RingSpec)) -> RingSpec {
    let mut s = RingSpec::default();
    s.scheduler.leader_balance = false;
    f(&mut s);
    s.validate(3).expect("valid spec");
    s
}

impl Sim {
    fn new(nodes: u32, spec: RingSpec) -> Sim {
        let rf = 3;
        let ids: Vec<NodeId> = (1..=nodes).map(NodeId).collect();
        let layout = spec.layout().unwrap();
        let initial = initial_placement(
            spec.ring.placement_strategy,
            layout,
            rf,
            &ids,
            spec.strategy_params(),
        )
        .unwrap();
        let members: Vec<(NodeId, Option<String>)> = ids.iter().map(|n| (*n, None)).collect();
        let state = MetaState::bootstrap(rf, &members, &initial, Time::ZERO).unwrap();
        let groups = initial
            .iter()
            .map(|(v, s)| {
                let g = Group {
                    set: s.clone(),
                    leader: s.voters.iter().next().copied(),
                    term: 1,
                };
                (v, g)
            })
            .collect();
        Sim {
            now: Time::ZERO,
            sched: Scheduler::new(spec.clone()),
            spec,
            rf,
            state,
            groups,
            running: ids.iter().copied().collect(),
            stopped_at: BTreeMap::new(),
            swim_dead: BTreeSet::new(),
            incarnation: BTreeMap::new(),
            log: Vec::new(),
            snapshots: 0,
            min_voters: rf,
            quorumless_ticks: 0,
            series: BTreeMap::new(),
            ever_down: BTreeSet::new(),
        }
    }

    fn stop(&mut self, n: NodeId) {
        self.running.remove(&n);
        self.stopped_at.insert(n, self.now);
        self.swim_dead.insert(n);
    }

    fn start(&mut self, n: NodeId) {
        self.running.insert(n);
        self.stopped_at.remove(&n);
        self.swim_dead.remove(&n);
        *self.incarnation.entry(n).or_insert(0) += 1;
    }

    fn apply(&mut self, cmd: MetaCmd) {
        // Through the log encoding, as a meta replica applies it.
        let bytes = MetaEntry { at: self.now, cmd }.encode();
        let entry = MetaEntry::decode(&bytes).expect("own entries decode");
        self.state.apply_entry(&entry);
        self.log.push(bytes);
    }

    fn live_quorum(&self, set: &ReplicaSet) -> bool {
        set.has_quorum(|n| self.running.contains(&n))
    }

    fn elect(&mut self) {
        for g in self.groups.values_mut() {
            let ok = g
                .leader
                .is_some_and(|l| self.running.contains(&l) && g.set.voters.contains(&l));
            if ok {
                continue;
            }
            g.leader = None;
            if g.set.has_quorum(|n| self.running.contains(&n)) {
                g.leader = g
                    .set
                    .voters
                    .iter()
                    .find(|n| self.running.contains(n))
                    .copied();
                g.term += 1;
            }
        }
    }

    fn reports(&self) -> Vec<StoreReport> {
        let down_after = std::time::Duration::from_millis(self.spec.membership.peer_down_after_ms);
        self.running
            .iter()
            .map(|&node| {
                let hosted_bytes = self
                    .groups
                    .iter()
                    .filter(|(_, g)| g.set.contains(node))
                    .map(|(v, _)| (*v, 1 << 20))
                    .collect();
                let led = self
                    .groups
                    .iter()
                    .filter(|(_, g)| g.leader == Some(node))
                    .map(|(v, g)| LedGroup {
                        descriptor: Descriptor::new(*v, g.set.clone()),
                        term: g.term,
                        down_peers: g
                            .set
                            .nodes()
                            .into_iter()
                            .filter(|m| {
                                self.stopped_at
                                    .get(m)
                                    .is_some_and(|t| self.now.saturating_since(*t) >= down_after)
                            })
                            .collect(),
                    })
                    .collect();
                StoreReport {
                    node,
                    address: None,
                    hosted_bytes,
                    led,
                }
            })
            .collect()
    }

    /// The group leader carries out one step command, as wave 2 P5 prescribes.
    fn execute(&mut self, c: &StepCommand) {
        let Some(g) = self.groups.get(&c.vnode) else {
            return;
        };
        let Some(leader) = g.leader else { return };
        if !self.running.contains(&leader) {
            return;
        }
        if c.step.is_done(&g.set, g.leader) {
            return;
        }
        if let Some(e) = c.expected_conf_epoch
            && e != g.set.conf_epoch
        {
            return;
        }
        if c.step.changes_conf() && !self.live_quorum(&g.set) {
            return;
        }
        let g = self.groups.get_mut(&c.vnode).unwrap();
        let s = &mut g.set;
        match &c.step {
            Step::AddLearner(n) => {
                s.learners.insert(*n);
                self.snapshots += 1;
            }
            Step::AddVoter(n) => {
                s.learners.remove(n);
                s.voters.insert(*n);
            }
            Step::EnterJoint { promote, demote } => {
                s.outgoing = s.voters.clone();
                for n in promote {
                    s.learners.remove(n);
                    s.voters.insert(*n);
                }
                for n in demote {
                    s.voters.remove(n);
                }
            }
            Step::LeaveJoint => {
                let demoted: Vec<NodeId> = s.outgoing.difference(&s.voters).copied().collect();
                s.learners.extend(demoted);
                s.outgoing.clear();
            }
            Step::RemoveLearner(n) | Step::RemoveNode(n) => {
                s.voters.remove(n);
                s.learners.remove(n);
            }
            Step::SwapVoters { add, remove } => {
                s.learners.remove(add);
                s.voters.insert(*add);
                s.voters.remove(remove);
            }
            Step::TransferLeader(n) => {
                if self.running.contains(n) && s.voters.contains(n) {
                    g.leader = Some(*n);
                    g.term += 1;
                }
                return;
            }
        }
        s.conf_epoch = s.conf_epoch.next();
        if g.leader.is_some_and(|l| !g.set.voters.contains(&l)) {
            g.leader = None;
        }
    }

    fn step(&mut self) {
        self.now = self.now + std::time::Duration::from_millis(TICK_MS);
        self.elect();
        let members: BTreeSet<NodeId> = self
            .state
            .members()
            .keys()
            .copied()
            .chain(self.running.iter().copied())
            .collect();
        for n in members {
            let status = if self.swim_dead.contains(&n) {
                SwimStatus::Dead
            } else {
                SwimStatus::Alive
            };
            let inc = self.incarnation.get(&n).copied().unwrap_or(0);
            self.sched.observe_swim(self.now, n, status, inc);
        }
        for r in self.reports() {
            self.sched
                .observe_report(self.now, r)
                .expect("reports within bounds");
        }
        let cmds = self.sched.tick(self.now, &self.state);
        for c in cmds {
            self.apply(c);
        }
        for c in self.sched.step_commands(&self.state) {
            self.execute(&c);
        }
        // Observations.
        for g in self.groups.values() {
            self.min_voters = self.min_voters.min(g.set.voters.len());
        }
        if self.groups.values().any(|g| !self.live_quorum(&g.set)) {
            self.quorumless_ticks += 1;
        }
        let counts = self.voter_counts();
        for (n, c) in counts {
            self.series.entry(n).or_default().push(c as f64);
        }
        for (n, m) in self.state.members() {
            if m.state == NodeState::Down {
                self.ever_down.insert(*n);
            }
        }
    }

    fn run_for(&mut self, ms: u64) {
        for _ in 0..ms / TICK_MS {
            self.step();
        }
    }

    fn voter_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut c: BTreeMap<NodeId, usize> = self.running.iter().map(|n| (*n, 0)).collect();
        for g in self.groups.values() {
            for v in &g.set.voters {
                *c.entry(*v).or_insert(0) += 1;
            }
        }
        c
    }

    fn voters(&self) -> BTreeMap<VnodeId, BTreeSet<NodeId>> {
        self.groups
            .iter()
            .map(|(v, g)| (*v, g.set.voters.clone()))
            .collect()
    }

    /// Every group settled: RF voters on running nodes, not joint, no learners; and meta
    /// records exactly the groups' configurations (wave 2 §8 item 8's invariant).
    fn assert_settled(&self) {
        for (v, g) in &self.groups {
            assert_eq!(g.set.voters.len(), self.rf, "{v}: {:?}", g.set);
            assert!(
                !g.set.is_joint() && g.set.learners.is_empty(),
                "{v}: {:?}",
                g.set
            );
            assert!(
                g.set.voters.iter().all(|n| self.running.contains(n)),
                "{v}: {:?}",
                g.set
            );
            let rec = self.state.descriptor(*v).expect("recorded");
            assert_eq!(
                rec.descriptor.replicas, g.set,
                "{v}: meta disagrees with the group"
            );
        }
        assert!(
            self.state.operators().is_empty(),
            "{:?}",
            self.state.operators()
        );
        eprintln!(
            "settled at {}: snapshots {} counters {:?} sched {:?} refusals {:?}",
            self.now,
            self.snapshots,
            self.state.counters(),
            self.sched.counters(),
            self.sched.limit_refusals()
        );
    }

    fn operators_of(&self, kind: OperatorKind) -> usize {
        self.state
            .finished_operators()
            .iter()
            .filter(|o| o.kind == kind)
            .count()
            + self
                .state
                .operators()
                .values()
                .filter(|o| o.kind == kind)
                .count()
    }
}

fn within_tolerance(sim: &Sim, tol: f64) -> bool {
    let c: Vec<f64> = sim.voter_counts().values().map(|c| *c as f64).collect();
    within_band(&c, tol + 0.05)
}

#[test]
fn a_join_fills_the_new_node_without_thrashing_and_settles() {
    for mode in [ConfChangeMode::Joint, ConfChangeMode::SingleStep] {
        let mut sim = Sim::new(5, spec_with(|s| s.scheduler.conf_change = mode));
        sim.run_for(1000);
        sim.start(NodeId(6));
        sim.run_for(120_000);
        assert_eq!(
            sim.state.member(NodeId(6)).map(|m| m.state),
            Some(NodeState::Up)
        );
        sim.assert_settled();
        assert!(
            within_tolerance(&sim, 0.1),
            "{mode:?}: {:?}",
            sim.voter_counts()
        );
        // Optimum 64·3/6 = 32 new replicas; the tolerance band stops earlier.
        assert!(
            sim.snapshots >= 26 && sim.snapshots <= 32 + 5,
            "{mode:?}: {}",
            sim.snapshots
        );
        assert_eq!(sim.min_voters, 3, "{mode:?}: a group went below RF");
        assert_eq!(sim.quorumless_ticks, 0);
        // The newcomer only ever gains: no thrashing.
        assert_eq!(thrashing(&sim.series[&NodeId(6)]).tdtv, 0.0, "{mode:?}");
        assert_eq!(sim.state.counters().commands_rejected, 0, "{mode:?}");
        assert!(sim.state.counters().operators_done >= 26);
        assert!(sim.state.counters().operators_inflight_max <= 16);
    }
}

#[test]
fn a_lost_node_is_replaced_once_and_only_after_replace_down_after() {
    let mut sim = Sim::new(6, spec_with(|_| {}));
    sim.run_for(1000);
    let lost = NodeId(3);
    let lost_count = sim.voter_counts()[&lost];
    sim.stop(lost);
    // 10 s of SWIM "dead" are needed (and leader reports after 3 s).
    sim.run_for(9_600);
    assert_eq!(sim.operators_of(OperatorKind::ReplaceDown), 0);
    assert!(sim.ever_down.is_empty());
    sim.run_for(120_000);
    assert_eq!(sim.state.member(lost).unwrap().state, NodeState::Down);
    sim.assert_settled();
    assert!(
        sim.snapshots >= lost_count && sim.snapshots <= lost_count + 6,
        "moved {} for {lost_count} lost replicas",
        sim.snapshots
    );
    assert_eq!(sim.operators_of(OperatorKind::ReplaceDown), lost_count);
    assert_eq!(sim.quorumless_ticks, 0);
    assert!(sim.min_voters >= 3);
}

#[test]
fn short_pauses_never_make_a_node_down_or_move_replicas() {
    let mut sim = Sim::new(5, spec_with(|_| {}));
    sim.run_for(1000);
    let before = sim.voters();
    for _ in 0..10 {
        sim.stop(NodeId(2));
        sim.run_for(6_000); // shorter than replace_down_after_ms = 10 s
        sim.start(NodeId(2));
        sim.run_for(6_000);
    }
    sim.run_for(10_000);
    assert!(sim.ever_down.is_empty(), "{:?}", sim.ever_down);
    assert_eq!(sim.snapshots, 0);
    assert_eq!(sim.voters(), before);
    assert_eq!(sim.state.member(NodeId(2)).unwrap().state, NodeState::Up);
}

/// The same with random pause lengths (all shorter than `replace_down_after_ms`), random
/// gaps and a random node, over seeds.
#[test]
fn random_short_pauses_never_move_replicas() {
    for seed in 0..6u64 {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut sim = Sim::new(5, spec_with(|_| {}));
        sim.run_for(1000);
        let before = sim.voters();
        let node = NodeId(1 + next(5) as u32);
        for _ in 0..5 {
            sim.stop(node);
            sim.run_for(TICK_MS * (1 + next(48))); // up to 9.8 s < 10 s
            sim.start(node);
            sim.run_for(TICK_MS * (1 + next(40)));
        }
        sim.run_for(10_000);
        assert!(
            sim.ever_down.is_empty(),
            "seed {seed}: {:?} went Down",
            sim.ever_down
        );
        assert_eq!(sim.snapshots, 0, "seed {seed}");
        assert_eq!(sim.voters(), before, "seed {seed}");
    }
}

#[test]
fn require_raft_evidence_blocks_down_on_a_swim_false_positive() {
    for require in [true, false] {
        let mut sim = Sim::new(
            5,
            spec_with(|s| s.membership.require_raft_evidence = require),
        );
        sim.run_for(1000);
        // SWIM says dead; the process runs and its groups hear it.
        sim.swim_dead.insert(NodeId(4));
        sim.run_for(30_000);
        let down = sim.ever_down.contains(&NodeId(4));
        if require {
            assert!(!down);
            assert_eq!(sim.snapshots, 0);
            assert_eq!(
                sim.state.member(NodeId(4)).unwrap().state,
                NodeState::Suspect
            );
        } else {
            assert!(down, "without evidence SWIM alone declares it Down");
            assert!(sim.snapshots > 0);
        }
    }
}

#[test]
fn a_drained_node_ends_removed_and_empty() {
    let mut sim = Sim::new(5, spec_with(|_| {}));
    sim.run_for(1000);
    sim.apply(MetaCmd::SetNodeState {
        node: NodeId(5),
        state: NodeState::Draining,
    });
    sim.run_for(120_000);
    assert_eq!(
        sim.state.member(NodeId(5)).unwrap().state,
        NodeState::Removed
    );
    assert!(!sim.state.holds_replicas(NodeId(5)));
    assert!(sim.operators_of(OperatorKind::DrainNode) > 0);
    // The drained node still runs (a drain is not a kill): settle without it.
    sim.running.remove(&NodeId(5));
    sim.assert_settled();
    assert_eq!(sim.min_voters, 3);
}

#[test]
fn a_new_meta_leader_resumes_operators_from_the_replicated_state() {
    let mut sim = Sim::new(5, spec_with(|_| {}));
    sim.run_for(1000);
    sim.start(NodeId(6));
    sim.run_for(4_000);
    assert!(!sim.state.operators().is_empty(), "operators under way");
    // The meta leader fails: a new one restores the state from a snapshot and starts a
    // fresh scheduler (empty observations, full buckets).
    let snap = sim.state.encode_snapshot();
    sim.state = MetaState::decode_snapshot(&snap).unwrap();
    sim.sched = Scheduler::new(sim.spec.clone());
    let epochs_before: BTreeMap<VnodeId, u64> = sim
        .groups
        .iter()
        .map(|(v, g)| (*v, g.set.conf_epoch.0))
        .collect();
    sim.run_for(120_000);
    sim.assert_settled();
    for (v, e) in epochs_before {
        assert!(sim.groups[&v].set.conf_epoch.0 >= e);
    }
    assert!(within_tolerance(&sim, 0.1));
}

#[test]
fn the_scheduler_is_deterministic() {
    let run = || {
        let mut sim = Sim::new(6, spec_with(|s| s.scheduler.leader_balance = true));
        sim.run_for(1000);
        sim.stop(NodeId(2));
        sim.start(NodeId(7));
        sim.run_for(40_000);
        let voters = sim.voters();
        (sim.log, voters)
    };
    let (a, pa) = run();
    let (b, pb) = run();
    assert!(!a.is_empty());
    assert_eq!(a, b, "same inputs, same meta log");
    assert_eq!(pa, pb);
}

/// The `remove-before-add` teaching bug runs groups on RF−1 voters during moves; the
/// correct planner (joint or single-step) never does. With a second failure during such
/// a window a group loses its quorum (wave 2 §8 item 9 measures that in simulation).
#[test]
fn remove_before_add_runs_groups_below_rf() {
    let mut buggy = Sim::new(
        5,
        spec_with(|s| s.placement_bug = PlacementBug::RemoveBeforeAdd),
    );
    buggy.run_for(1000);
    buggy.start(NodeId(6));
    buggy.run_for(60_000);
    assert_eq!(buggy.min_voters, 2, "the bug must show");
    let mut good = Sim::new(5, spec_with(|_| {}));
    good.run_for(1000);
    good.start(NodeId(6));
    good.run_for(60_000);
    assert_eq!(good.min_voters, 3);
}

#[test]
fn every_strategy_converges_to_its_target_on_a_join() {
    for strategy in PlacementStrategy::ALL {
        let mut sim = Sim::new(
            5,
            spec_with(|s| {
                s.ring.placement_strategy = strategy;
                s.ring.vnode_count = 16;
                // Stateless strategies move what their hash says, band or not.
                s.scheduler.rebalance_tolerance_ratio = 0.0;
            }),
        );
        sim.run_for(1000);
        sim.start(NodeId(6));
        sim.run_for(120_000);
        sim.assert_settled();
        let target = initial_placement(
            strategy,
            sim.spec.layout().unwrap(),
            3,
            &(1..=6).map(NodeId).collect::<Vec<_>>(),
            StrategyParams::default(),
        )
        .unwrap();
        if strategy != PlacementStrategy::Balanced {
            for (v, t) in target.iter() {
                assert_eq!(sim.groups[&v].set.voters, t.voters, "{strategy:?} {v}");
            }
        }
        assert!(sim.state.counters().operators_done > 0, "{strategy:?}");
    }
}

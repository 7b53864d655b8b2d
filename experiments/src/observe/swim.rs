//! [`SwimObserver`] for `system = "swim"`: SWIM membership alone on the simulator, measured the way the SWIM
//! (Das, Gupta, Motivala 2002) and Lifeguard (Dadgar et al. 2018) papers measure it.
//!
//! There is no KV workload: `history.jsonl` is empty and the linearizability checker's
//! verdict is `not-applicable`. Instead the runner watches the members' events and
//! tables while the nemesis (`[nemesis]`, usually `faults = ["crash"]`: one member at a
//! time, restarted at the end of the fault with a new address) and the base network loss
//! (`[network] loss_probability`) do their work, and `[swim_experiment]` may make some
//! members *slow* (paused again and again, Lifeguard's overloaded process).
//!
//! Per crash it measures the time to the first suspicion (by anyone), to the first
//! `dead` declaration, and until every live member has declared the crashed one dead;
//! per restart, the time until every live member holds the new incarnation as alive.
//! Across the run: false positives (a live member, in its current incarnation, declared
//! dead), false suspicions, refutations, messages and bytes per member per second, and
//! the time the cluster takes to reach one view (every member sees every other alive),
//! first after the joins and again after the heal that opens the liveness phase.
//!
//! Everything lands in `summary.json` under `swim`, next to the paper's expected mean
//! first-detection time `T·e/(e−1)`; configured bounds (`max_false_positives`, …) are
//! checked and a bound exceeded fails the run (exit status 1).
//!
//! **Must never depend on:** the wall clock or unseeded randomness in anything written to
//! `events.jsonl` or `summary.json` (but `wall_time_s`); like the rest of the runner.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use kvlab_sim::{FaultRule, RuleId, SimStats};
use kvlab_swim::{MemberState, Swim, SwimNode};
use kvlab_types::{NodeEvent, NodeId, Time};
use serde::{Deserialize, Serialize};

use super::{Observer, ObserverReport, Violation};
use crate::cluster::Cluster;
use crate::events::{NemesisEvent, NemesisKind, Phase, RunEvent, RunnerEvent};
use crate::spec::swim::{SlowMode, SwimExperimentSpec};
use crate::spec::{Spec, secs_to_ns};
use crate::workload::LivenessReport;

/// How often the runner checks, during the joins, whether every member sees every other
/// alive (`initial_converged_s` is precise to this).
pub const INITIAL_VIEW_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Most per-crash records kept in `summary.json` (the percentiles cover every crash).
pub const MAX_CRASH_RECORDS: usize = 10_000;

/// Most false-positive records kept in `summary.json` (the counts cover all of them).
pub const MAX_FALSE_POSITIVE_RECORDS: usize = 1_000;

/// Count, mean and nearest-rank percentiles of a set of durations, in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SecondsStats {
    /// Samples.
    pub count: u64,
    /// Mean (0 when empty).
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl SecondsStats {
    /// The statistics of `samples` (any order); all zero when empty.
    pub fn of(samples: &[f64]) -> SecondsStats {
        if samples.is_empty() {
            return SecondsStats::default();
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let rank = |q: f64| s[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        SecondsStats {
            count: n as u64,
            mean: s.iter().sum::<f64>() / n as f64,
            p50: rank(0.50),
            p99: rank(0.99),
            max: s[n - 1],
        }
    }
}

/// What happened after one crash, in seconds since the start of the run (`*_at_s`) or
/// since the crash (`*_s`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CrashRecord {
    /// The crashed member.
    pub member: u32,
    /// The nemesis fault that crashed it.
    pub fault_id: Option<u64>,
    /// When it crashed.
    pub crashed_at_s: f64,
    /// When it was restarted, if it was.
    pub restarted_at_s: Option<f64>,
    /// Crash to the first suspicion by any member.
    pub first_suspicion_s: Option<f64>,
    /// Crash to the first `dead` declaration by any member.
    pub first_dead_s: Option<f64>,
    /// Crash until every live member had declared it dead (before its restart).
    pub dead_everywhere_s: Option<f64>,
    /// Members that declared it dead.
    pub declared_dead_by: u64,
    /// Restart until every live member held its new incarnation as alive.
    pub rejoined_everywhere_s: Option<f64>,
}

/// A live member declared dead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FalsePositive {
    /// When, seconds since the start.
    pub at_s: f64,
    /// The member declared dead.
    pub member: u32,
    /// Who declared it.
    pub observer: u32,
    /// `healthy` (neither slow, paused nor partitioned), `slow` (a slow member of
    /// `[swim_experiment]`), `paused` (paused by the nemesis) or `partitioned` (a
    /// partition was in force).
    pub cause: String,
}

/// Messages and bytes sent, per member per simulated second, over the steady state
/// (from `nemesis.start_after_s`, after the joins, to the end of the safety phase).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SwimLoad {
    /// Start of the window, seconds.
    pub from_s: f64,
    /// Length of the window, seconds.
    pub window_s: f64,
    /// Messages sent per member per second (all members, averaged).
    pub messages_per_member_per_s: f64,
    /// Encoded bytes sent per member per second.
    pub bytes_per_member_per_s: f64,
    /// Of those, push-pull's (anti-entropy messages without their piggybacked updates;
    /// kvlab-swim's `push_pull_bytes_sent`), where the backend shows the members
    /// (`null` otherwise). A member that restarted in the window counts from its
    /// restart only, so this slightly undercounts under crashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_pull_bytes_per_member_per_s: Option<f64>,
    /// The busiest member's messages per second.
    pub max_messages_per_member_per_s: f64,
    /// Messages sent over the whole run, per member per second.
    pub messages_per_member_per_s_whole_run: f64,
}

/// One bound of `[swim_experiment]` and whether the run met it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PropertyCheck {
    /// The bound's field name (`max_false_positives`, …).
    pub name: String,
    /// The configured bound.
    pub bound: f64,
    /// The measured value (`null` when it never happened, which fails the check).
    pub value: Option<f64>,
    /// Whether the run met the bound.
    pub ok: bool,
}

/// The `swim` section of `summary.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SwimSummary {
    /// Cluster size.
    pub members: u32,
    /// The protocol period `T`, ms.
    pub protocol_period_ms: u64,
    /// Lifeguard's local health multiplier, dynamic suspicion and buddy system, on/off.
    pub lifeguard: kvlab_swim::LifeguardConfig,
    /// The base network loss probability.
    pub loss_probability: f64,
    /// The slow members.
    pub slow_nodes: Vec<u32>,
    /// Crashes injected.
    pub crashes: u64,
    /// Crash to first suspicion by anyone.
    pub first_suspicion_s: SecondsStats,
    /// Crash to first `dead` declaration.
    pub first_dead_s: SecondsStats,
    /// Crash until every live member declared it dead.
    pub dead_everywhere_s: SecondsStats,
    /// Restart until every live member held the new incarnation as alive.
    pub rejoin_everywhere_s: SecondsStats,
    /// Crashes never suspected before their restart (or the end).
    pub crashes_undetected: u64,
    /// Crashes not known dead by every live member before their restart (or the end).
    pub crashes_not_dead_everywhere: u64,
    /// Restarts not alive everywhere by the end of the run.
    pub restarts_not_rejoined: u64,
    /// The SWIM paper's expected mean time to first detection, `T·e/(e−1)` (§3.1), s.
    pub expected_first_detection_s: f64,
    /// The measured mean time to first suspicion (the detection the paper means), s.
    pub measured_first_detection_mean_s: f64,
    /// Live members (in their current incarnation) declared dead, each declaration once.
    pub false_positives: u64,
    /// The same by cause: `healthy`, `slow`, `paused`, `partitioned`.
    pub false_positives_by_cause: BTreeMap<String, u64>,
    /// Live members suspected (each suspicion event once).
    pub false_suspicions: u64,
    /// The same by cause.
    pub false_suspicions_by_cause: BTreeMap<String, u64>,
    /// Times a member refuted a suspicion or death of itself.
    pub refutations: u64,
    /// Messages and bytes per member per second.
    pub load: SwimLoad,
    /// When every member first saw every other alive, s since the start (`null`: not
    /// before the first fault).
    pub initial_converged_s: Option<f64>,
    /// Heal to one view again, s (`null`: not within the liveness phase).
    pub converged_after_heal_s: Option<f64>,
    /// `member_joined` events of the initial joins left out of `events.jsonl`
    /// (`log_initial_joins = false`).
    pub initial_join_events_not_logged: u64,
    /// Every crash (at most `MAX_CRASH_RECORDS`).
    pub crash_records: Vec<CrashRecord>,
    /// The first `MAX_FALSE_POSITIVE_RECORDS` false positives.
    pub false_positive_records: Vec<FalsePositive>,
    /// The configured bounds and whether they held.
    pub checks: Vec<PropertyCheck>,
    /// Whether every configured bound held and the cluster converged after the heal.
    pub ok: bool,
}

/// The paper's expected mean first-detection time for protocol period `T` (SWIM §3.1:
/// with every member probing one random member per period, a failed member is first
/// probed after `T · 1/(1 − e^{−1}) = T·e/(e−1)` on average in a large group).
pub fn expected_first_detection_s(protocol_period_ms: u64) -> f64 {
    let e = std::f64::consts::E;
    protocol_period_ms as f64 / 1e3 * e / (e - 1.0)
}

/// Fault names (as in `events.jsonl`) that cut members off from each other.
const PARTITION_FAULTS: [&str; 6] = [
    "partition_halves",
    "partition_random",
    "one_way",
    "isolate",
    "bridge",
    "ring",
];

/// A crash being followed.
#[derive(Debug)]
struct OpenCrash {
    record: CrashRecord,
    crashed_at: Time,
    dead_by: BTreeSet<NodeId>,
    /// Set at restart: the incarnation the member came back with.
    rejoin: Option<(Time, u64)>,
}

/// Follows crashes, false positives and convergence from events and table samples.
#[derive(Debug, Default)]
struct Tracker {
    crashes: Vec<OpenCrash>,
    /// Member → index in `crashes` of its crash while it is down.
    down: BTreeMap<NodeId, usize>,
    /// Indices of restarted crashes whose rejoin is not complete.
    rejoining: BTreeSet<usize>,
    /// Members paused by the nemesis.
    paused: BTreeSet<NodeId>,
    /// Slow members.
    slow: BTreeSet<NodeId>,
    /// The incarnation each restarted member booted with (0 for the first boot): a
    /// claim about a lower one is about its previous life.
    boot_incarnation: BTreeMap<NodeId, u64>,
    /// Active partition-like faults.
    partitions: BTreeSet<u64>,
    false_positives: u64,
    false_positives_by_cause: BTreeMap<String, u64>,
    false_positive_records: Vec<FalsePositive>,
    false_suspicions: u64,
    false_suspicions_by_cause: BTreeMap<String, u64>,
    refutations: u64,
    crashes_injected: u64,
}

/// The SWIM member running on `id`, if the backend can show it and it runs.
fn swim_of(cluster: &dyn Cluster, id: NodeId) -> Option<&Swim> {
    cluster.protocol(id)?.downcast_ref::<SwimNode>()?.swim()
}

fn incarnation_of(cluster: &dyn Cluster, id: NodeId) -> Option<u64> {
    swim_of(cluster, id).map(Swim::incarnation)
}

impl Tracker {
    fn cause(&self, member: NodeId) -> &'static str {
        if self.slow.contains(&member) {
            "slow"
        } else if self.paused.contains(&member) {
            "paused"
        } else if !self.partitions.is_empty() {
            "partitioned"
        } else {
            "healthy"
        }
    }

    /// Whether `member`, named in an event with `incarnation`, is live in that
    /// incarnation (a claim about a previous life is a late, true detection). Crashes
    /// and restarts happen only between simulation steps, so `is_up` now is `is_up`
    /// when the event happened; the current incarnation is not (a refutation may have
    /// raised it since), hence the boot incarnation.
    fn is_live(&self, cluster: &dyn Cluster, member: NodeId, incarnation: u64) -> bool {
        cluster.is_up(member)
            && incarnation >= self.boot_incarnation.get(&member).copied().unwrap_or(0)
    }

    fn on_node_event(
        &mut self,
        cluster: &dyn Cluster,
        at: Time,
        observer: NodeId,
        event: &NodeEvent,
    ) {
        match *event {
            NodeEvent::MemberRefuted { .. } => self.refutations += 1,
            NodeEvent::MemberSuspect {
                member,
                incarnation,
                ..
            }
            | NodeEvent::MemberDead {
                member,
                incarnation,
                ..
            } => {
                let dead = matches!(event, NodeEvent::MemberDead { .. });
                if let Some(&i) = self.down.get(&member) {
                    let c = &mut self.crashes[i];
                    let since = at.saturating_since(c.crashed_at).as_secs_f64();
                    c.record.first_suspicion_s.get_or_insert(since);
                    if dead {
                        c.record.first_dead_s.get_or_insert(since);
                        c.dead_by.insert(observer);
                        c.record.declared_dead_by = c.dead_by.len() as u64;
                        if c.record.dead_everywhere_s.is_none()
                            && cluster
                                .nodes()
                                .iter()
                                .filter(|o| **o != member && cluster.is_up(**o))
                                .all(|o| c.dead_by.contains(o))
                        {
                            c.record.dead_everywhere_s = Some(since);
                        }
                    }
                } else if self.is_live(cluster, member, incarnation) {
                    let cause = self.cause(member).to_string();
                    if dead {
                        self.false_positives += 1;
                        *self
                            .false_positives_by_cause
                            .entry(cause.clone())
                            .or_default() += 1;
                        if self.false_positive_records.len() < MAX_FALSE_POSITIVE_RECORDS {
                            self.false_positive_records.push(FalsePositive {
                                at_s: at.as_secs_f64(),
                                member: member.0,
                                observer: observer.0,
                                cause,
                            });
                        }
                    } else {
                        self.false_suspicions += 1;
                        *self.false_suspicions_by_cause.entry(cause).or_default() += 1;
                    }
                }
            }
            _ => {}
        }
    }

    fn on_nemesis_event(&mut self, cluster: &dyn Cluster, at: Time, e: &NemesisEvent) {
        let fault = e.fault.as_deref().unwrap_or("");
        match (e.kind, fault, e.node) {
            (NemesisKind::FaultStart, "crash", Some(n)) => self.on_crash(n, e.fault_id, at),
            (NemesisKind::FaultEnd, "crash", Some(n)) => self.on_restart(cluster, n, at),
            (NemesisKind::FaultStart, "pause", Some(n)) => {
                self.paused.insert(n);
            }
            (NemesisKind::FaultEnd, "pause", Some(n)) => {
                self.paused.remove(&n);
            }
            (NemesisKind::FaultStart, f, _) if PARTITION_FAULTS.contains(&f) => {
                self.partitions.insert(e.fault_id.unwrap_or(0));
            }
            (NemesisKind::FaultEnd, f, _) if PARTITION_FAULTS.contains(&f) => {
                self.partitions.remove(&e.fault_id.unwrap_or(0));
            }
            _ => {}
        }
    }

    fn on_crash(&mut self, member: NodeId, fault_id: Option<u64>, at: Time) {
        self.crashes_injected += 1;
        if self.crashes.len() >= MAX_CRASH_RECORDS {
            return;
        }
        self.crashes.push(OpenCrash {
            record: CrashRecord {
                member: member.0,
                fault_id,
                crashed_at_s: at.as_secs_f64(),
                ..CrashRecord::default()
            },
            crashed_at: at,
            dead_by: BTreeSet::new(),
            rejoin: None,
        });
        self.down.insert(member, self.crashes.len() - 1);
    }

    fn on_restart(&mut self, cluster: &dyn Cluster, member: NodeId, at: Time) {
        let inc = incarnation_of(cluster, member);
        if let Some(inc) = inc {
            self.boot_incarnation.insert(member, inc);
        }
        let Some(i) = self.down.remove(&member) else {
            return;
        };
        let c = &mut self.crashes[i];
        c.record.restarted_at_s = Some(at.as_secs_f64());
        if let Some(inc) = inc {
            c.rejoin = Some((at, inc));
            self.rejoining.insert(i);
        }
    }

    /// Reads the tables: which restarted members are alive everywhere by now.
    fn sample_rejoins(&mut self, cluster: &dyn Cluster, now: Time) {
        let mut done = Vec::new();
        for &i in &self.rejoining {
            let c = &mut self.crashes[i];
            let Some((restarted, inc)) = c.rejoin else {
                continue;
            };
            let member = NodeId(c.record.member);
            if !cluster.is_up(member) {
                done.push(i);
                continue;
            }
            let everywhere = cluster
                .nodes()
                .iter()
                .filter(|o| **o != member && cluster.is_up(**o))
                .all(|o| {
                    swim_of(cluster, *o)
                        .and_then(|s| s.member(member))
                        .is_some_and(|m| m.state == MemberState::Alive && m.incarnation >= inc)
                });
            if everywhere {
                c.record.rejoined_everywhere_s =
                    Some(now.saturating_since(restarted).as_secs_f64());
                done.push(i);
            }
        }
        for i in done {
            self.rejoining.remove(&i);
        }
    }
}

/// Whether every live, running member sees exactly the live members as alive.
fn one_view(cluster: &dyn Cluster) -> bool {
    let up: BTreeSet<NodeId> = cluster
        .nodes()
        .iter()
        .copied()
        .filter(|n| cluster.is_up(*n))
        .collect();
    up.iter().all(|o| {
        let Some(swim) = swim_of(cluster, *o) else {
            return false;
        };
        let mut alive = 0usize;
        for m in swim.members() {
            if m.id == *o {
                continue;
            }
            let live = up.contains(&m.id);
            if (m.state == MemberState::Alive) != live {
                return false;
            }
            alive += usize::from(live);
        }
        alive + 1 == up.len()
    })
}

/// Slow members: slowed for `pause` of every `period`.
#[derive(Debug)]
struct Slow {
    nodes: Vec<NodeId>,
    mode: SlowMode,
    pause: Duration,
    period: Duration,
    next: Option<Time>,
    /// While slowed: the hold rule (hold mode), or `None` (pause mode).
    slowed: Option<Option<RuleId>>,
}

impl Slow {
    fn new(spec: &SwimExperimentSpec, start: Time) -> Slow {
        Slow {
            nodes: spec.slow_nodes.clone(),
            mode: spec.slow_mode,
            pause: Duration::from_millis(spec.slow_pause_ms),
            period: Duration::from_millis(spec.slow_period_ms),
            next: (!spec.slow_nodes.is_empty())
                .then(|| start + Duration::from_nanos(secs_to_ns(spec.slow_from_s))),
            slowed: None,
        }
    }

    /// Slows or releases the slow members if it is time.
    fn step(&mut self, now: Time, cluster: &mut dyn Cluster, tracker: &mut Tracker) {
        let Some(next) = self.next else { return };
        if now < next {
            return;
        }
        if self.slowed.is_some() {
            self.release(cluster);
            self.next = Some(next + (self.period - self.pause));
        } else {
            let rule = match self.mode {
                SlowMode::Pause => {
                    for n in &self.nodes {
                        // The simulator always pauses; nothing to report.
                        let _ = cluster.pause(*n);
                    }
                    None
                }
                SlowMode::HoldIncoming => {
                    let slow: BTreeSet<NodeId> = self.nodes.iter().copied().collect();
                    let from = cluster
                        .nodes()
                        .iter()
                        .copied()
                        .filter(|n| !slow.contains(n))
                        .collect();
                    Some(cluster.add_rule(FaultRule::Hold {
                        from,
                        to: self.nodes.clone(),
                    }))
                }
            };
            tracker.slow.extend(self.nodes.iter().copied());
            self.slowed = Some(rule);
            self.next = Some(next + self.pause);
        }
    }

    fn release(&mut self, cluster: &mut dyn Cluster) {
        match self.slowed.take() {
            Some(Some(rule)) => cluster.remove_rule(rule),
            Some(None) => {
                for n in &self.nodes {
                    let _ = cluster.resume(*n);
                }
            }
            None => {}
        }
    }

    /// Stops being slow (the heal).
    fn stop(&mut self, cluster: &mut dyn Cluster, tracker: &mut Tracker) {
        self.release(cluster);
        tracker.slow.clear();
        self.next = None;
    }
}

/// What the observer needs of the spec, copied once.
#[derive(Debug, Clone)]
struct SwimSetup {
    x: SwimExperimentSpec,
    members: u32,
    protocol_period_ms: u64,
    lifeguard: kvlab_swim::LifeguardConfig,
    loss_probability: f64,
}

/// Measures a `system = "swim"` run the way the SWIM and Lifeguard papers do (see the
/// module docs), and makes its slow members slow.
#[derive(Debug)]
pub struct SwimObserver {
    setup: SwimSetup,
    tracker: Tracker,
    slow: Slow,
    start: Time,
    /// When the first fault may start: the load window opens here.
    first_fault: Time,
    sample: Duration,
    next_sample: Time,
    next_initial_check: Time,
    in_safety: bool,
    initial_converged: Option<Time>,
    heal_at: Option<Time>,
    converged_after_heal: Option<Time>,
    joins_not_logged: u64,
    load_start: Option<(Time, SimStats)>,
    load_end: Option<(Time, SimStats)>,
    /// Each running member's push-pull bytes at the window's start and end.
    push_pull_start: Option<BTreeMap<NodeId, u64>>,
    push_pull_end: Option<BTreeMap<NodeId, u64>>,
}

/// Each running member's push-pull bytes sent so far, when the backend shows members.
fn push_pull_bytes(cluster: &dyn Cluster) -> Option<BTreeMap<NodeId, u64>> {
    let bytes: BTreeMap<NodeId, u64> = cluster
        .nodes()
        .iter()
        .filter_map(|&id| Some((id, swim_of(cluster, id)?.counters().push_pull_bytes_sent)))
        .collect();
    (!bytes.is_empty()).then_some(bytes)
}

impl SwimObserver {
    /// An observer for `spec`'s run whose safety phase runs from `start` to
    /// `safety_end`.
    pub fn new(spec: &Spec, start: Time, safety_end: Time) -> Self {
        let x = &spec.swim_experiment;
        let first_fault =
            (start + Duration::from_nanos(secs_to_ns(spec.nemesis.start_after_s))).min(safety_end);
        SwimObserver {
            setup: SwimSetup {
                x: x.clone(),
                members: spec.nodes,
                protocol_period_ms: spec.swim.protocol_period_ms,
                lifeguard: spec.swim.lifeguard.clone(),
                loss_probability: spec.network.loss_probability,
            },
            tracker: Tracker::default(),
            slow: Slow::new(x, start),
            start,
            first_fault,
            sample: Duration::from_millis(x.sample_interval_ms),
            next_sample: start,
            next_initial_check: start,
            in_safety: true,
            initial_converged: None,
            heal_at: None,
            converged_after_heal: None,
            joins_not_logged: 0,
            load_start: None,
            load_end: None,
            push_pull_start: None,
            push_pull_end: None,
        }
    }

    /// Whether the members' tables are being read: a rejoin to time, the joins to
    /// converge, or the heal to converge.
    fn sampling(&self) -> bool {
        !self.tracker.rejoining.is_empty()
            || (self.initial_converged.is_none() && self.in_safety)
            || (self.heal_at.is_some() && self.converged_after_heal.is_none())
    }

    fn sample_tables(&mut self, cluster: &dyn Cluster, now: Time, events: &mut Vec<RunEvent>) {
        self.next_sample = now + self.sample;
        self.tracker.sample_rejoins(cluster, now);
        // One view costs O(n²) to check: during the joins, once a second is enough.
        let check_initial = now >= self.next_initial_check;
        if check_initial {
            self.next_initial_check = now + INITIAL_VIEW_CHECK_INTERVAL;
        }
        if self.in_safety && self.initial_converged.is_none() && check_initial && one_view(cluster)
        {
            self.initial_converged = Some(now);
            events.push(RunEvent::runner(
                now,
                RunnerEvent::SwimConverged { after_heal_s: None },
            ));
        }
        if let Some(h) = self.heal_at
            && self.converged_after_heal.is_none()
            && one_view(cluster)
        {
            self.converged_after_heal = Some(now);
            events.push(RunEvent::runner(
                now,
                RunnerEvent::SwimConverged {
                    after_heal_s: Some(now.saturating_since(h).as_secs_f64()),
                },
            ));
        }
    }

    fn open_load_window(&mut self, cluster: &dyn Cluster, now: Time, events: &mut Vec<RunEvent>) {
        self.load_start = cluster.sim_stats().map(|s| (now, s));
        self.push_pull_start = push_pull_bytes(cluster);
        if self.initial_converged.is_none() {
            events.push(RunEvent::runner(
                now,
                RunnerEvent::Warning {
                    detail: "the members did not reach one view before the first fault: \
                             raise nemesis.start_after_s (detection times include the join \
                             storm)"
                        .into(),
                },
            ));
        }
    }

    /// Messages and bytes per member per second over the safety phase after the joins.
    fn load(&self, cluster: &dyn Cluster, end: Time) -> SwimLoad {
        let n = f64::from(self.setup.members);
        let load = match (&self.load_start, &self.load_end) {
            (Some((t0, s0)), Some((t1, s1))) if t1 > t0 => {
                let secs = t1.saturating_since(*t0).as_secs_f64();
                let busiest = s1
                    .per_node
                    .iter()
                    .map(|(id, ns)| {
                        let before = s0.per_node.get(id).map_or(0, |b| b.messages_sent);
                        ns.messages_sent.saturating_sub(before)
                    })
                    .max()
                    .unwrap_or(0);
                SwimLoad {
                    from_s: t0.as_secs_f64(),
                    window_s: secs,
                    messages_per_member_per_s: (s1.messages_sent - s0.messages_sent) as f64
                        / n
                        / secs,
                    bytes_per_member_per_s: (s1.bytes_sent - s0.bytes_sent) as f64 / n / secs,
                    push_pull_bytes_per_member_per_s: self.push_pull_load(n, secs),
                    max_messages_per_member_per_s: busiest as f64 / secs,
                    messages_per_member_per_s_whole_run: 0.0,
                }
            }
            _ => SwimLoad::default(),
        };
        let whole = cluster.sim_stats().map_or(0, |s| s.messages_sent);
        let run_s = end.saturating_since(self.start).as_secs_f64().max(1e-9);
        SwimLoad {
            messages_per_member_per_s_whole_run: whole as f64 / n / run_s,
            ..load
        }
    }

    /// Push-pull bytes per member per second over the load window: each member's
    /// counter at the end less the one at the start (all of it if the member restarted
    /// since, its counters starting again from zero).
    fn push_pull_load(&self, n: f64, secs: f64) -> Option<f64> {
        let (start, end) = (self.push_pull_start.as_ref()?, self.push_pull_end.as_ref()?);
        let total: u64 = end
            .iter()
            .map(|(id, &b1)| {
                let b0 = start.get(id).copied().unwrap_or(0);
                if b1 >= b0 { b1 - b0 } else { b1 }
            })
            .sum();
        Some(total as f64 / n / secs)
    }

    fn summary(&self, cluster: &dyn Cluster, end: Time) -> SwimSummary {
        let records: Vec<CrashRecord> = self
            .tracker
            .crashes
            .iter()
            .map(|c| c.record.clone())
            .collect();
        let collect = |f: fn(&CrashRecord) -> Option<f64>| -> Vec<f64> {
            records.iter().filter_map(f).collect()
        };
        let first_suspicion = collect(|r| r.first_suspicion_s);
        let dead_everywhere = collect(|r| r.dead_everywhere_s);
        let rejoin = collect(|r| r.rejoined_everywhere_s);
        let restarted = records
            .iter()
            .filter(|r| r.restarted_at_s.is_some())
            .count();
        let t = &self.tracker;
        let mut summary = SwimSummary {
            members: self.setup.members,
            protocol_period_ms: self.setup.protocol_period_ms,
            lifeguard: self.setup.lifeguard.clone(),
            loss_probability: self.setup.loss_probability,
            slow_nodes: self.setup.x.slow_nodes.iter().map(|n| n.0).collect(),
            crashes: t.crashes_injected,
            first_suspicion_s: SecondsStats::of(&first_suspicion),
            first_dead_s: SecondsStats::of(&collect(|r| r.first_dead_s)),
            dead_everywhere_s: SecondsStats::of(&dead_everywhere),
            rejoin_everywhere_s: SecondsStats::of(&rejoin),
            crashes_undetected: (records.len() - first_suspicion.len()) as u64,
            crashes_not_dead_everywhere: (records.len() - dead_everywhere.len()) as u64,
            restarts_not_rejoined: (restarted - rejoin.len()) as u64,
            expected_first_detection_s: expected_first_detection_s(self.setup.protocol_period_ms),
            measured_first_detection_mean_s: SecondsStats::of(&first_suspicion).mean,
            false_positives: t.false_positives,
            false_positives_by_cause: t.false_positives_by_cause.clone(),
            false_suspicions: t.false_suspicions,
            false_suspicions_by_cause: t.false_suspicions_by_cause.clone(),
            refutations: t.refutations,
            load: self.load(cluster, end),
            initial_converged_s: self
                .initial_converged
                .map(|c| c.saturating_since(self.start).as_secs_f64()),
            converged_after_heal_s: match (self.heal_at, self.converged_after_heal) {
                (Some(h), Some(c)) => Some(c.saturating_since(h).as_secs_f64()),
                _ => None,
            },
            initial_join_events_not_logged: self.joins_not_logged,
            crash_records: records,
            false_positive_records: t.false_positive_records.clone(),
            checks: Vec::new(),
            ok: false,
        };
        summary.checks = property_checks(&self.setup.x, &summary);
        summary.ok =
            summary.converged_after_heal_s.is_some() && summary.checks.iter().all(|c| c.ok);
        summary
    }
}

impl Observer for SwimObserver {
    fn next_wakeup(&self) -> Option<Time> {
        let mut due = Vec::with_capacity(3);
        if self.in_safety {
            due.extend(self.slow.next);
            if self.load_start.is_none() {
                due.push(self.first_fault);
            }
        }
        if self.sampling() {
            due.push(self.next_sample);
        }
        due.into_iter().min()
    }

    fn keep_event(&mut self, at: Time, event: &NodeEvent) -> bool {
        let joining = at < self.first_fault && matches!(event, NodeEvent::MemberJoined { .. });
        if joining && !self.setup.x.log_initial_joins {
            self.joins_not_logged += 1;
            return false;
        }
        true
    }

    fn on_node_event(
        &mut self,
        cluster: &dyn Cluster,
        at: Time,
        node: NodeId,
        event: &NodeEvent,
    ) -> Result<(), Violation> {
        self.tracker.on_node_event(cluster, at, node, event);
        Ok(())
    }

    fn on_nemesis_event(&mut self, cluster: &dyn Cluster, at: Time, event: &NemesisEvent) {
        self.tracker.on_nemesis_event(cluster, at, event);
    }

    fn on_wakeup(
        &mut self,
        cluster: &mut dyn Cluster,
        now: Time,
        events: &mut Vec<RunEvent>,
    ) -> Result<(), Violation> {
        if self.in_safety {
            if self.load_start.is_none() && now >= self.first_fault {
                self.open_load_window(cluster, now, events);
            }
            self.slow.step(now, cluster, &mut self.tracker);
        }
        if self.sampling() && now >= self.next_sample {
            self.sample_tables(cluster, now, events);
        }
        Ok(())
    }

    fn on_phase(
        &mut self,
        cluster: &mut dyn Cluster,
        at: Time,
        phase: Phase,
        events: &mut Vec<RunEvent>,
    ) {
        if phase == Phase::Safety && !self.setup.x.slow_nodes.is_empty() {
            let x = &self.setup.x;
            let names: Vec<String> = x.slow_nodes.iter().map(|n| n.to_string()).collect();
            events.push(RunEvent::runner(
                self.slow.next.unwrap_or(at),
                RunnerEvent::SlowMembers {
                    detail: format!(
                        "[{}] slow ({:?}) {} ms of every {} ms until the heal",
                        names.join(" "),
                        x.slow_mode,
                        x.slow_pause_ms,
                        x.slow_period_ms
                    ),
                },
            ));
        }
        if phase != Phase::Liveness {
            return;
        }
        self.in_safety = false;
        self.load_end = cluster.sim_stats().map(|s| (at, s));
        self.push_pull_end = push_pull_bytes(cluster);
        self.slow.stop(cluster, &mut self.tracker);
        // Members the heal restarted (not the nemesis) came back too.
        let down: Vec<NodeId> = self.tracker.down.keys().copied().collect();
        for n in down {
            if cluster.is_up(n) {
                self.tracker.on_restart(cluster, n, at);
            }
        }
        self.tracker.paused.clear();
        self.tracker.partitions.clear();
        self.heal_at = Some(at);
        self.next_sample = at;
    }

    fn finish(&mut self, cluster: &dyn Cluster, end: Time) -> ObserverReport {
        let swim = self.summary(cluster, end);
        let converged_ms = swim.converged_after_heal_s.map(|s| s * 1e3);
        ObserverReport {
            measured: "swim",
            liveness: Some(LivenessReport {
                ok: converged_ms.is_some(),
                first_ok_after_heal_ms: converged_ms,
                all_clients_ok_after_heal_ms: converged_ms,
                clients_with_progress: 0,
                clients: 0,
            }),
            property_failed: !swim.checks.iter().all(|c| c.ok),
            swim: Some(swim),
            ring: None,
            txn: None,
        }
    }
}

/// Checks the configured bounds of `[swim_experiment]` against a run's measurements.
pub fn property_checks(x: &SwimExperimentSpec, s: &SwimSummary) -> Vec<PropertyCheck> {
    let mut checks = Vec::new();
    let mut check = |name: &str, bound: f64, value: Option<f64>| {
        checks.push(PropertyCheck {
            name: name.into(),
            bound,
            ok: value.is_some_and(|v| v <= bound),
            value,
        });
    };
    if let Some(b) = x.max_false_positives {
        check(
            "max_false_positives",
            b as f64,
            Some(s.false_positives as f64),
        );
    }
    // A crash that was never known dead everywhere exceeds any bound.
    let worst = |stats: &SecondsStats, missing: u64| (missing == 0).then_some(stats.max);
    if let Some(b) = x.max_dead_everywhere_s {
        check(
            "max_dead_everywhere_s",
            b,
            worst(&s.dead_everywhere_s, s.crashes_not_dead_everywhere),
        );
    }
    if let Some(b) = x.max_rejoin_s {
        check(
            "max_rejoin_s",
            b,
            worst(&s.rejoin_everywhere_s, s.restarts_not_rejoined),
        );
    }
    if let Some(b) = x.max_converge_after_heal_s {
        check("max_converge_after_heal_s", b, s.converged_after_heal_s);
    }
    checks
}

/// Writes `summary.json`-ready numbers of a SWIM run for a person: one line.
pub fn one_line(s: &SwimSummary) -> String {
    let push_pull = s
        .load
        .push_pull_bytes_per_member_per_s
        .map(|b| format!(" ({b:.0} of them push-pull)"))
        .unwrap_or_default();
    format!(
        "{} crashes: first suspicion mean {:.2} s (paper T·e/(e−1) = {:.2} s) p99 {:.2} s; dead everywhere p50 {:.2} s p99 {:.2} s max {:.2} s; {} false positives; {:.2} msgs/member/s, {:.0} B/member/s{push_pull}",
        s.crashes,
        s.measured_first_detection_mean_s,
        s.expected_first_detection_s,
        s.first_suspicion_s.p99,
        s.dead_everywhere_s.p50,
        s.dead_everywhere_s.p99,
        s.dead_everywhere_s.max,
        s.false_positives,
        s.load.messages_per_member_per_s,
        s.load.bytes_per_member_per_s,
    )
}

/// Whether a run directory's summary is a SWIM run's (it has a `swim` section).
pub fn is_swim_run(dir: &Path) -> bool {
    std::fs::read(dir.join("summary.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v.get("swim").is_some_and(|s| s.is_object()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_first_detection_is_t_e_over_e_minus_one() {
        let v = expected_first_detection_s(1_000);
        assert!((v - 1.581_976_7).abs() < 1e-6, "{v}");
    }

    #[test]
    fn seconds_stats_use_nearest_rank_and_mean() {
        let s = SecondsStats::of(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!((s.count, s.p50, s.p99, s.max), (4, 2.0, 4.0, 4.0));
        assert!((s.mean - 2.5).abs() < 1e-12);
        assert_eq!(SecondsStats::of(&[]).count, 0);
    }

    #[test]
    fn a_missing_measurement_fails_its_bound() {
        let x = SwimExperimentSpec {
            max_dead_everywhere_s: Some(10.0),
            max_false_positives: Some(0),
            ..SwimExperimentSpec::default()
        };
        let mut s = SwimSummary {
            dead_everywhere_s: SecondsStats::of(&[3.0]),
            ..SwimSummary::default()
        };
        assert!(property_checks(&x, &s).iter().all(|c| c.ok));
        s.crashes_not_dead_everywhere = 1;
        s.false_positives = 1;
        let checks = property_checks(&x, &s);
        assert!(checks.iter().all(|c| !c.ok), "{checks:?}");
    }
}

//! `system = "swim"`: SWIM membership alone on the simulator, measured the way the SWIM
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

use indicatif::ProgressBar;
use kvlab_sim::{FaultRule, RuleId, Sim, SimOutput, SimStats};
use kvlab_swim::{MemberState, SwimNode};
use kvlab_types::{NodeEvent, NodeId, Time, derive_seed};
use serde::{Deserialize, Serialize};

use crate::error::ExperimentError;
use crate::events::{NemesisEvent, NemesisKind, Phase, RunEvent, RunnerEvent};
use crate::nemesis::Nemesis;
use crate::spec::{Spec, secs_to_ns};
use crate::summary::FaultCounts;

/// Most members a spec may mark slow.
pub const MAX_SLOW_NODES: usize = 64;
/// Shortest sampling interval of the members' tables, ms: sampling costs `O(n)` to
/// `O(n²)` lookups, so it must not run at every simulated microsecond.
pub const MIN_SAMPLE_INTERVAL_MS: u64 = 10;
/// How often the runner checks, during the joins, whether every member sees every other
/// alive (`initial_converged_s` is precise to this).
pub const INITIAL_VIEW_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Most per-crash records kept in `summary.json` (the percentiles cover every crash).
pub const MAX_CRASH_RECORDS: usize = 10_000;
/// Most false-positive records kept in `summary.json` (the counts cover all of them).
pub const MAX_FALSE_POSITIVE_RECORDS: usize = 1_000;

/// How a slow member is slow.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SlowMode {
    /// The whole process stops (`Sim::pause`): timers and messages wait together, so
    /// when it resumes it sees acks before the timeouts they beat.
    Pause,
    /// Its incoming messages are held (a `Hold` rule) while its timers keep running: it
    /// processes what others say late, as an overloaded process does (Lifeguard §II),
    /// so it misses acks and suspects healthy members.
    HoldIncoming,
}

/// The `[swim_experiment]` table: what a `system = "swim"` run does besides the
/// nemesis, and the bounds it must meet.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SwimExperimentSpec {
    /// Members that are slow: paused for `slow_pause_ms` out of every
    /// `slow_period_ms`, from `slow_from_s` to the end of the safety phase (Lifeguard's
    /// overloaded member, which answers late and misses its own acks).
    pub slow_nodes: Vec<NodeId>,
    /// How the slow members are slow.
    pub slow_mode: SlowMode,
    /// How long each pause of a slow member lasts, ms.
    pub slow_pause_ms: u64,
    /// A slow member is paused once per this period, ms.
    pub slow_period_ms: u64,
    /// When the slow members start being slow, seconds into the run.
    pub slow_from_s: f64,
    /// How often the runner reads the members' tables to time rejoins and convergence,
    /// ms (detection times come from events and are exact).
    pub sample_interval_ms: u64,
    /// Write the `member_joined` events of the initial joins (before
    /// `nemesis.start_after_s`) to `events.jsonl`. There are `n·(n−1)` of them; large
    /// clusters turn this off and the summary counts them instead.
    pub log_initial_joins: bool,
    /// Fail the run if more live members than this are declared dead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_false_positives: Option<u64>,
    /// Fail the run if a crash takes longer than this to be known dead by every live
    /// member (or never is, before its restart), seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_dead_everywhere_s: Option<f64>,
    /// Fail the run if a restarted member takes longer than this to be alive in every
    /// live member's table (or never is), seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rejoin_s: Option<f64>,
    /// Fail the run if, after the heal, the cluster takes longer than this to reach one
    /// view, seconds (it must in any case within `time.liveness_s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_converge_after_heal_s: Option<f64>,
}

impl Default for SwimExperimentSpec {
    fn default() -> Self {
        SwimExperimentSpec {
            slow_nodes: Vec::new(),
            slow_mode: SlowMode::HoldIncoming,
            slow_pause_ms: 800,
            slow_period_ms: 1_000,
            slow_from_s: 0.0,
            sample_interval_ms: 100,
            log_initial_joins: true,
            max_false_positives: None,
            max_dead_everywhere_s: None,
            max_rejoin_s: None,
            max_converge_after_heal_s: None,
        }
    }
}

impl SwimExperimentSpec {
    /// Checks every field for a cluster of `nodes` members; the error is the dotted
    /// field name and the reason.
    pub fn validate(&self, nodes: u32) -> Result<(), (String, String)> {
        let bad = |field: &str, reason: String| Err((format!("swim_experiment.{field}"), reason));
        if self.slow_nodes.len() > MAX_SLOW_NODES {
            return bad(
                "slow_nodes",
                format!(
                    "at most {MAX_SLOW_NODES} (MAX_SLOW_NODES), got {}",
                    self.slow_nodes.len()
                ),
            );
        }
        if let Some(n) = self.slow_nodes.iter().find(|n| n.0 == 0 || n.0 > nodes) {
            return bad(
                "slow_nodes",
                format!("must be node ids in 1..={nodes}, got {}", n.0),
            );
        }
        if !self.slow_nodes.is_empty() {
            if self.slow_period_ms == 0 {
                return bad("slow_period_ms", "must be > 0".into());
            }
            if self.slow_pause_ms == 0 || self.slow_pause_ms >= self.slow_period_ms {
                return bad(
                    "slow_pause_ms",
                    format!(
                        "must be > 0 and < slow_period_ms ({}), got {}",
                        self.slow_period_ms, self.slow_pause_ms
                    ),
                );
            }
        }
        if !self.slow_from_s.is_finite() || self.slow_from_s < 0.0 {
            return bad(
                "slow_from_s",
                format!(
                    "must be a finite number of seconds >= 0, got {}",
                    self.slow_from_s
                ),
            );
        }
        if self.sample_interval_ms < MIN_SAMPLE_INTERVAL_MS {
            return bad(
                "sample_interval_ms",
                format!(
                    "must be >= {MIN_SAMPLE_INTERVAL_MS} (MIN_SAMPLE_INTERVAL_MS), got {}",
                    self.sample_interval_ms
                ),
            );
        }
        for (field, v) in [
            ("max_dead_everywhere_s", self.max_dead_everywhere_s),
            ("max_rejoin_s", self.max_rejoin_s),
            ("max_converge_after_heal_s", self.max_converge_after_heal_s),
        ] {
            if let Some(v) = v
                && (!v.is_finite() || v <= 0.0)
            {
                return bad(
                    field,
                    format!("must be a finite number of seconds > 0, got {v}"),
                );
            }
        }
        Ok(())
    }
}

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

/// What a SWIM simulation produced.
#[derive(Debug)]
pub struct SwimRun {
    /// Faults, node events and phases, in time order.
    pub events: Vec<RunEvent>,
    /// The measurements.
    pub swim: SwimSummary,
    /// Faults injected.
    pub faults: FaultCounts,
    /// The simulator's counters.
    pub sim_stats: SimStats,
    /// Simulated time at the end of the liveness phase.
    pub end: Time,
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

fn incarnation_of(sim: &Sim<SwimNode>, id: NodeId) -> Option<u64> {
    sim.node(id)?.swim().map(|s| s.incarnation())
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
    fn is_live(&self, sim: &Sim<SwimNode>, member: NodeId, incarnation: u64) -> bool {
        sim.is_up(member) && incarnation >= self.boot_incarnation.get(&member).copied().unwrap_or(0)
    }

    fn on_node_event(
        &mut self,
        sim: &Sim<SwimNode>,
        nodes: &[NodeId],
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
                            && nodes
                                .iter()
                                .filter(|o| **o != member && sim.is_up(**o))
                                .all(|o| c.dead_by.contains(o))
                        {
                            c.record.dead_everywhere_s = Some(since);
                        }
                    }
                } else if self.is_live(sim, member, incarnation) {
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

    fn on_nemesis_event(&mut self, sim: &Sim<SwimNode>, at: Time, e: &NemesisEvent) {
        let fault = e.fault.as_deref().unwrap_or("");
        match (e.kind, fault, e.node) {
            (NemesisKind::FaultStart, "crash", Some(n)) => self.on_crash(n, e.fault_id, at),
            (NemesisKind::FaultEnd, "crash", Some(n)) => self.on_restart(sim, n, at),
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

    fn on_restart(&mut self, sim: &Sim<SwimNode>, member: NodeId, at: Time) {
        let inc = incarnation_of(sim, member);
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
    fn sample_rejoins(&mut self, sim: &Sim<SwimNode>, nodes: &[NodeId], now: Time) {
        let mut done = Vec::new();
        for &i in &self.rejoining {
            let c = &mut self.crashes[i];
            let Some((restarted, inc)) = c.rejoin else {
                continue;
            };
            let member = NodeId(c.record.member);
            if !sim.is_up(member) {
                done.push(i);
                continue;
            }
            let everywhere = nodes
                .iter()
                .filter(|o| **o != member && sim.is_up(**o))
                .all(|o| {
                    sim.node(*o)
                        .and_then(|p| p.swim())
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
fn one_view(sim: &Sim<SwimNode>, nodes: &[NodeId]) -> bool {
    let up: BTreeSet<NodeId> = nodes.iter().copied().filter(|n| sim.is_up(*n)).collect();
    up.iter().all(|o| {
        let Some(swim) = sim.node(*o).and_then(|p| p.swim()) else {
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
    fn new(spec: &SwimExperimentSpec) -> Slow {
        Slow {
            nodes: spec.slow_nodes.clone(),
            mode: spec.slow_mode,
            pause: Duration::from_millis(spec.slow_pause_ms),
            period: Duration::from_millis(spec.slow_period_ms),
            next: (!spec.slow_nodes.is_empty()).then(|| Time(secs_to_ns(spec.slow_from_s))),
            slowed: None,
        }
    }

    /// Slows or releases the slow members if it is time.
    fn step(&mut self, now: Time, sim: &mut Sim<SwimNode>, tracker: &mut Tracker) {
        let Some(next) = self.next else { return };
        if now < next {
            return;
        }
        if self.slowed.is_some() {
            self.release(sim);
            self.next = Some(next + (self.period - self.pause));
        } else {
            let rule = match self.mode {
                SlowMode::Pause => {
                    for n in &self.nodes {
                        sim.pause(*n);
                    }
                    None
                }
                SlowMode::HoldIncoming => {
                    let slow: BTreeSet<NodeId> = self.nodes.iter().copied().collect();
                    let from = sim
                        .node_ids()
                        .iter()
                        .copied()
                        .filter(|n| !slow.contains(n))
                        .collect();
                    Some(sim.add_rule(FaultRule::Hold {
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

    fn release(&mut self, sim: &mut Sim<SwimNode>) {
        match self.slowed.take() {
            Some(Some(rule)) => {
                sim.remove_rule(rule);
            }
            Some(None) => {
                for n in &self.nodes {
                    sim.resume(*n);
                }
            }
            None => {}
        }
    }

    /// Stops being slow (the heal).
    fn stop(&mut self, sim: &mut Sim<SwimNode>, tracker: &mut Tracker) {
        self.release(sim);
        tracker.slow.clear();
        self.next = None;
    }
}

fn min_time(a: Time, b: Option<Time>) -> Time {
    match b {
        Some(b) if b < a => b,
        _ => a,
    }
}

/// Runs `spec` (which must be `system = "swim"`) on the simulator with `seed`, through
/// the safety phase (nemesis, slow members) and the liveness phase (everything healed;
/// the cluster must reach one view), and measures it.
pub fn simulate_swim(
    spec: &Spec,
    seed: u64,
    progress: Option<&ProgressBar>,
) -> Result<SwimRun, ExperimentError> {
    let x = &spec.swim_experiment;
    let nodes: Vec<NodeId> = (1..=spec.nodes).map(NodeId).collect();
    let sim_err = |e: kvlab_sim::SimError| ExperimentError::Sim(e.to_string());
    let mut sim_config = spec.sim_config();
    // Bytes per member per second is one of the measurements.
    sim_config.network.measure_bytes = true;
    let mut sim =
        Sim::<SwimNode>::new(sim_config, seed, &nodes, spec.swim.clone()).map_err(sim_err)?;
    let safety_end = Time(secs_to_ns(spec.time.duration_s));
    let liveness_end =
        safety_end.saturating_add(Duration::from_nanos(secs_to_ns(spec.time.liveness_s)));
    let first_fault = Time(secs_to_ns(spec.nemesis.start_after_s)).min(safety_end);
    let mut nemesis = Nemesis::new(
        &spec.nemesis,
        &nodes,
        safety_end.as_nanos(),
        derive_seed(seed, "nemesis", 0),
    );
    let mut slow = Slow::new(x);
    let mut tracker = Tracker::default();
    let sample = Duration::from_millis(x.sample_interval_ms);
    let mut next_sample = Time::ZERO;
    let mut next_initial_check = Time::ZERO;
    let mut events = vec![RunEvent::phase(Time::ZERO, Phase::Safety)];
    if !x.slow_nodes.is_empty() {
        let names: Vec<String> = x.slow_nodes.iter().map(|n| n.to_string()).collect();
        events.push(RunEvent::runner(
            Time(secs_to_ns(x.slow_from_s)),
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
    let mut outputs: Vec<SimOutput> = Vec::new();
    let mut in_safety = true;
    let mut initial_converged: Option<Time> = None;
    let mut heal_at: Option<Time> = None;
    let mut converged_after_heal: Option<Time> = None;
    let mut joins_not_logged = 0u64;
    let mut load_start: Option<(Time, SimStats)> = None;
    let mut load_end: Option<(Time, SimStats)> = None;
    let mut last_progress_ms = 0;
    if let Some(pb) = progress {
        pb.set_length(liveness_end.as_nanos() / 1_000_000);
    }
    sim.drain_outputs(&mut outputs);
    loop {
        let phase_end = if in_safety { safety_end } else { liveness_end };
        let mut t = phase_end;
        if in_safety {
            t = min_time(t, nemesis.next_wakeup());
            t = min_time(t, slow.next);
            if load_start.is_none() {
                t = t.min(first_fault);
            }
        }
        let sampling = !tracker.rejoining.is_empty()
            || (initial_converged.is_none() && in_safety)
            || (heal_at.is_some() && converged_after_heal.is_none());
        if sampling {
            t = t.min(next_sample.max(sim.now()));
        }
        let t = t.max(sim.now());
        sim.run_until(t, &mut outputs).map_err(sim_err)?;
        for o in outputs.drain(..) {
            let SimOutput::Event { at, node, event } = o else {
                continue;
            };
            tracker.on_node_event(&sim, &nodes, at, node, &event);
            if !x.log_initial_joins
                && matches!(event, NodeEvent::MemberJoined { .. })
                && at < first_fault
            {
                joins_not_logged += 1;
                continue;
            }
            events.push(RunEvent::node(at, node, event));
        }
        if load_start.is_none() && t >= first_fault {
            load_start = Some((t, sim.stats().clone()));
            if initial_converged.is_none() {
                events.push(RunEvent::runner(
                    t,
                    RunnerEvent::Warning {
                        detail: "the members did not reach one view before the first fault: \
                                 raise nemesis.start_after_s (detection times include the join \
                                 storm)"
                            .into(),
                    },
                ));
            }
        }
        if in_safety {
            let before = events.len();
            nemesis
                .step(t, &mut sim, &mut events)
                .map_err(ExperimentError::Sim)?;
            for e in &events[before..] {
                if let Some(n) = e.nemesis_event() {
                    tracker.on_nemesis_event(&sim, e.at(), n);
                }
            }
            slow.step(t, &mut sim, &mut tracker);
        }
        if sampling && t >= next_sample {
            next_sample = t + sample;
            tracker.sample_rejoins(&sim, &nodes, t);
            // One view costs O(n²) to check: during the joins, once a second is enough.
            let check_initial = t >= next_initial_check;
            if check_initial {
                next_initial_check = t + INITIAL_VIEW_CHECK_INTERVAL;
            }
            if in_safety && initial_converged.is_none() && check_initial && one_view(&sim, &nodes) {
                initial_converged = Some(t);
                events.push(RunEvent::runner(
                    t,
                    RunnerEvent::SwimConverged { after_heal_s: None },
                ));
            }
            if let Some(h) = heal_at
                && converged_after_heal.is_none()
                && one_view(&sim, &nodes)
            {
                converged_after_heal = Some(t);
                events.push(RunEvent::runner(
                    t,
                    RunnerEvent::SwimConverged {
                        after_heal_s: Some(t.saturating_since(h).as_secs_f64()),
                    },
                ));
            }
        }
        if t == phase_end {
            if in_safety {
                in_safety = false;
                load_end = Some((t, sim.stats().clone()));
                let before = events.len();
                nemesis
                    .heal_all(t, &mut sim, &mut events)
                    .map_err(ExperimentError::Sim)?;
                for e in &events[before..] {
                    if let Some(n) = e.nemesis_event() {
                        tracker.on_nemesis_event(&sim, e.at(), n);
                    }
                }
                slow.stop(&mut sim, &mut tracker);
                // Belt and braces: whatever the nemesis did, the cluster is whole again.
                sim.heal();
                for &n in &nodes {
                    if !sim.is_up(n) {
                        sim.restart(n).map_err(sim_err)?;
                        tracker.on_restart(&sim, n, t);
                    }
                    sim.resume(n);
                    sim.set_clock_drift(n, 0);
                }
                tracker.paused.clear();
                tracker.partitions.clear();
                events.push(RunEvent::phase(t, Phase::Liveness));
                heal_at = Some(t);
                next_sample = t;
            } else {
                break;
            }
        }
        if let Some(pb) = progress {
            let ms = t.as_nanos() / 1_000_000;
            if ms >= last_progress_ms + 100 {
                last_progress_ms = ms;
                pb.set_position(ms.min(liveness_end.as_nanos() / 1_000_000));
            }
        }
    }
    events.sort_by_key(|e| e.time_ns);

    let stats = sim.stats().clone();
    let n = f64::from(spec.nodes);
    let load = match (&load_start, &load_end) {
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
                messages_per_member_per_s: (s1.messages_sent - s0.messages_sent) as f64 / n / secs,
                bytes_per_member_per_s: (s1.bytes_sent - s0.bytes_sent) as f64 / n / secs,
                max_messages_per_member_per_s: busiest as f64 / secs,
                messages_per_member_per_s_whole_run: 0.0,
            }
        }
        _ => SwimLoad::default(),
    };
    let load = SwimLoad {
        messages_per_member_per_s_whole_run: stats.messages_sent as f64
            / n
            / liveness_end.as_secs_f64().max(1e-9),
        ..load
    };

    let records: Vec<CrashRecord> = tracker.crashes.iter().map(|c| c.record.clone()).collect();
    let collect =
        |f: fn(&CrashRecord) -> Option<f64>| -> Vec<f64> { records.iter().filter_map(f).collect() };
    let first_suspicion = collect(|r| r.first_suspicion_s);
    let first_dead = collect(|r| r.first_dead_s);
    let dead_everywhere = collect(|r| r.dead_everywhere_s);
    let rejoin = collect(|r| r.rejoined_everywhere_s);
    let restarted = records
        .iter()
        .filter(|r| r.restarted_at_s.is_some())
        .count();
    let mut summary = SwimSummary {
        members: spec.nodes,
        protocol_period_ms: spec.swim.protocol_period_ms,
        lifeguard: spec.swim.lifeguard.clone(),
        loss_probability: spec.network.loss_probability,
        slow_nodes: x.slow_nodes.iter().map(|n| n.0).collect(),
        crashes: tracker.crashes_injected,
        first_suspicion_s: SecondsStats::of(&first_suspicion),
        first_dead_s: SecondsStats::of(&first_dead),
        dead_everywhere_s: SecondsStats::of(&dead_everywhere),
        rejoin_everywhere_s: SecondsStats::of(&rejoin),
        crashes_undetected: (records.len() - first_suspicion.len()) as u64,
        crashes_not_dead_everywhere: (records.len() - dead_everywhere.len()) as u64,
        restarts_not_rejoined: (restarted - rejoin.len()) as u64,
        expected_first_detection_s: expected_first_detection_s(spec.swim.protocol_period_ms),
        measured_first_detection_mean_s: SecondsStats::of(&first_suspicion).mean,
        false_positives: tracker.false_positives,
        false_positives_by_cause: tracker.false_positives_by_cause.clone(),
        false_suspicions: tracker.false_suspicions,
        false_suspicions_by_cause: tracker.false_suspicions_by_cause.clone(),
        refutations: tracker.refutations,
        load,
        initial_converged_s: initial_converged.map(Time::as_secs_f64),
        converged_after_heal_s: match (heal_at, converged_after_heal) {
            (Some(h), Some(c)) => Some(c.saturating_since(h).as_secs_f64()),
            _ => None,
        },
        initial_join_events_not_logged: joins_not_logged,
        crash_records: records,
        false_positive_records: tracker.false_positive_records.clone(),
        checks: Vec::new(),
        ok: false,
    };
    summary.checks = property_checks(x, &summary);
    summary.ok = summary.converged_after_heal_s.is_some() && summary.checks.iter().all(|c| c.ok);
    let faults = FaultCounts {
        injected: nemesis.injected(),
        by_kind: nemesis.injected_by_kind().clone(),
        skipped: nemesis.skipped(),
    };
    Ok(SwimRun {
        events,
        swim: summary,
        faults,
        sim_stats: stats,
        end: liveness_end,
    })
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
    format!(
        "{} crashes: first suspicion mean {:.2} s (paper T·e/(e−1) = {:.2} s) p99 {:.2} s; dead everywhere p50 {:.2} s p99 {:.2} s max {:.2} s; {} false positives; {:.2} msgs/member/s, {:.0} B/member/s",
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

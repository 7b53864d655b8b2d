//! The runner: one experiment on the simulator, from a validated spec and a seed to a
//! run directory and a verdict.
//!
//! 1. **Safety phase** (`time.duration_s`): the workload runs and the nemesis injects
//!    faults.
//! 2. **Liveness phase** (`time.liveness_s`): every fault is undone (rules removed,
//!    crashed nodes restarted, paused nodes resumed, clocks reset); every client must
//!    then complete an `ok` operation before the phase ends (closed loop; open loop:
//!    some client), or the run fails with "liveness: no progress within N s".
//! 3. **Drain:** no new operations; those in flight complete or time out (`info`).
//!
//! The simulator is advanced event by event (to the earliest of its next event, the
//! workload's next action, the nemesis's next action and the phase end), so a client
//! invokes its next operation at the very instant its previous reply arrived.
//!
//! Then the run directory is written: `spec.toml`, `meta.json`, `history.jsonl`,
//! `events.jsonl`, `summary.json`, `linearizability.html` (invalid runs), plots and
//! `report.html`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::ProgressBar;
use kvlab_checker::{CheckOptions, CheckReport, HistoryEvent, Verdict};
use kvlab_node::raft_kv::RaftKv;
use kvlab_node::raft_kv::invariants::{
    INVARIANT_CHECK_INTERVAL_MS, InvariantChecker, InvariantViolation,
};
use kvlab_sim::{FaultRule, RuleId, Sim, SimOutput, SimStats};
use kvlab_types::{AdminCommand, NodeEvent, NodeId, Protocol, Time, derive_seed};
use serde::Serialize;

use crate::error::ExperimentError;
use crate::events::{Phase, RunEvent, RunnerEvent};
use crate::nemesis::{ClusterControl, ClusterView, Membership, Nemesis};
use crate::spec::{Spec, SystemKind, secs_to_ns};
use crate::summary::{FaultCounts, OpCounts, OpStats, Summary};
use crate::workload::{LivenessReport, Workload, WorkloadCounters};

/// The commit this binary was built from (`git rev-parse HEAD` at build time, or
/// `unknown`).
pub const BUILD_COMMIT: &str = env!("KVLAB_COMMIT");
/// The compiler that built this binary (`rustc --version`, or `unknown`).
pub const BUILD_RUSTC: &str = env!("KVLAB_RUSTC");

impl<P: Protocol> ClusterControl for Sim<P> {
    fn add_rule(&mut self, rule: FaultRule) -> RuleId {
        Sim::add_rule(self, rule)
    }
    fn remove_rule(&mut self, rule: RuleId) {
        Sim::remove_rule(self, rule);
    }
    fn crash(&mut self, node: NodeId) -> Result<(), String> {
        Sim::crash(self, node);
        Ok(())
    }
    fn restart(&mut self, node: NodeId) -> Result<(), String> {
        Sim::restart(self, node).map_err(|e| e.to_string())
    }
    fn pause(&mut self, node: NodeId) -> Result<(), String> {
        Sim::pause(self, node);
        Ok(())
    }
    fn resume(&mut self, node: NodeId) -> Result<(), String> {
        Sim::resume(self, node);
        Ok(())
    }
    fn set_clock_drift(&mut self, node: NodeId, ppm: i64) -> Result<(), String> {
        Sim::set_clock_drift(self, node, ppm);
        Ok(())
    }
    fn admin(&mut self, node: NodeId, cmd: AdminCommand) -> Result<bool, String> {
        Sim::admin(self, node, cmd).map_err(|e| e.to_string())
    }
}

/// The `kind` of the runner event that records a broken invariant (and ends the run).
pub const INVARIANT_VIOLATED_EVENT: &str = "invariant_violated";

/// What a system lets the runner see inside its simulated nodes: safety invariants
/// checked during the run, and its group membership for the nemesis. The default
/// methods see nothing, for systems without either ([`NoObserver`]).
pub trait SimObserver<P: Protocol> {
    /// Whether [`SimObserver::check`] should run every
    /// [`INVARIANT_CHECK_INTERVAL_MS`] of simulated time.
    fn checks_invariants(&self) -> bool {
        false
    }
    /// Whether the system takes membership commands (then the nemesis reconciles
    /// membership and may inject `membership` faults).
    fn has_membership(&self) -> bool {
        false
    }
    /// Takes a node event into account (e.g. every `leader_elected`).
    fn on_event(&mut self, node: NodeId, event: &NodeEvent) -> Result<(), InvariantViolation> {
        let _ = (node, event);
        Ok(())
    }
    /// Inspects every up node.
    fn check(&mut self, sim: &Sim<P>) -> Result<(), InvariantViolation> {
        let _ = sim;
        Ok(())
    }
    /// The group's membership as `leader` sees it, if it leads.
    fn membership(&self, sim: &Sim<P>, leader: NodeId) -> Option<Membership> {
        let _ = (sim, leader);
        None
    }
}

/// The observer of systems the runner cannot look into.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl<P: Protocol> SimObserver<P> for NoObserver {}

/// A learner counts as caught up (and is promoted) when its match index is at most this
/// many entries behind the leader's commit index.
pub const LEARNER_CATCH_UP_LAG_ENTRIES: u64 = 16;

/// The observer of `system = "raft"`: Raft's invariants
/// ([`kvlab_node::raft_kv::invariants`]) and the group's membership.
#[derive(Debug, Default)]
pub struct RaftObserver {
    checker: InvariantChecker,
}

impl SimObserver<RaftKv> for RaftObserver {
    fn checks_invariants(&self) -> bool {
        true
    }
    fn has_membership(&self) -> bool {
        true
    }
    fn on_event(&mut self, node: NodeId, event: &NodeEvent) -> Result<(), InvariantViolation> {
        self.checker.on_event(node, event)
    }
    fn check(&mut self, sim: &Sim<RaftKv>) -> Result<(), InvariantViolation> {
        for &id in sim.node_ids() {
            if let Some(node) = sim.node(id) {
                self.checker.observe(id, node)?;
            }
        }
        Ok(())
    }
    fn membership(&self, sim: &Sim<RaftKv>, leader: NodeId) -> Option<Membership> {
        let node = sim.node(leader)?;
        if !node.is_leader() {
            return None;
        }
        let g = node.group()?;
        let commit = g.commit_index();
        let caught_up = g
            .learners()
            .iter()
            .copied()
            .filter(|&n| {
                g.progress(n)
                    .is_some_and(|p| p.match_index + LEARNER_CATCH_UP_LAG_ENTRIES >= commit)
            })
            .collect();
        Some(Membership {
            voters: g.voters().to_vec(),
            learners: g.learners().to_vec(),
            caught_up,
            change_pending: g.conf_index() > commit,
        })
    }
}

/// The leader the runner believes in: the node of the highest-term
/// [`NodeEvent::LeaderElected`] event of the default group it saw.
#[derive(Debug, Default)]
struct LeaderTracker {
    by_term: std::collections::BTreeMap<u64, NodeId>,
}

impl LeaderTracker {
    fn on_event(&mut self, node: NodeId, event: &NodeEvent) {
        if let NodeEvent::LeaderElected { group, term } = *event
            && group == kvlab_types::GroupId::DEFAULT
        {
            self.by_term.insert(term, node);
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.by_term.values().next_back().copied()
    }
}

/// What a simulation produced, before checking.
#[derive(Debug)]
pub struct SimRun {
    /// The clients' history, indexed by position.
    pub history: Vec<HistoryEvent>,
    /// Faults, node events and phases, in time order.
    pub events: Vec<RunEvent>,
    /// Workload counters.
    pub counters: WorkloadCounters,
    /// How the liveness phase went.
    pub liveness: LivenessReport,
    /// Faults injected.
    pub faults: FaultCounts,
    /// The simulator's counters.
    pub sim_stats: SimStats,
    /// Simulated time at the end of the liveness phase.
    pub workload_end: Time,
    /// `system = "swim"`: the SWIM measurements (the liveness report then says whether
    /// the cluster reached one view after the heal).
    pub swim: Option<crate::swim_exp::SwimSummary>,
}

fn min_time(a: Time, b: Option<Time>) -> Time {
    match b {
        Some(b) if b < a => b,
        _ => a,
    }
}

/// Runs the spec's system on the simulator with `seed` (the spec's own seed is
/// ignored), through the safety, liveness and drain phases. `progress`, if given, is
/// advanced in simulated milliseconds.
pub fn simulate(
    spec: &Spec,
    seed: u64,
    progress: Option<&ProgressBar>,
) -> Result<SimRun, ExperimentError> {
    match spec.system {
        SystemKind::Single => {
            simulate_with::<kvlab_node::baseline::Single>(spec, seed, spec.single.clone(), progress)
        }
        SystemKind::AsyncPrimary => simulate_with::<kvlab_node::baseline::AsyncPrimary>(
            spec,
            seed,
            spec.async_primary.clone(),
            progress,
        ),
        SystemKind::Raft => simulate_observed::<RaftKv>(
            spec,
            seed,
            spec.raft.clone(),
            progress,
            &mut RaftObserver::default(),
        ),
        SystemKind::Swim => crate::swim_exp::simulate_swim(spec, seed, progress).map(|r| {
            let converged_ms = r.swim.converged_after_heal_s.map(|s| s * 1e3);
            SimRun {
                history: Vec::new(),
                events: r.events,
                counters: WorkloadCounters::default(),
                liveness: LivenessReport {
                    ok: converged_ms.is_some(),
                    first_ok_after_heal_ms: converged_ms,
                    all_clients_ok_after_heal_ms: converged_ms,
                    clients_with_progress: 0,
                    clients: 0,
                },
                faults: r.faults,
                sim_stats: r.sim_stats,
                workload_end: r.end,
                swim: Some(r.swim),
            }
        }),
    }
}

/// [`simulate`] for one protocol type.
pub fn simulate_with<P: Protocol>(
    spec: &Spec,
    seed: u64,
    node_config: P::Config,
    progress: Option<&ProgressBar>,
) -> Result<SimRun, ExperimentError> {
    simulate_observed::<P>(spec, seed, node_config, progress, &mut NoObserver)
}

/// [`simulate_with`] with an observer that checks invariants every
/// [`INVARIANT_CHECK_INTERVAL_MS`] and reports membership to the nemesis. A violation
/// ends the run at once, recorded as a runner event [`INVARIANT_VIOLATED_EVENT`].
pub fn simulate_observed<P: Protocol>(
    spec: &Spec,
    seed: u64,
    node_config: P::Config,
    progress: Option<&ProgressBar>,
    observer: &mut dyn SimObserver<P>,
) -> Result<SimRun, ExperimentError> {
    let nodes: Vec<NodeId> = (1..=spec.nodes).map(NodeId).collect();
    let sim_err = |e: kvlab_sim::SimError| ExperimentError::Sim(e.to_string());
    let mut sim = Sim::<P>::new(spec.sim_config(), seed, &nodes, node_config).map_err(sim_err)?;
    let safety_end = Time(secs_to_ns(spec.time.duration_s));
    let liveness_end =
        safety_end.saturating_add(Duration::from_nanos(secs_to_ns(spec.time.liveness_s)));
    let mut workload = Workload::new(&spec.workload, &nodes, derive_seed(seed, "workload", 0));
    let mut nemesis = Nemesis::new(
        &spec.nemesis,
        &nodes,
        safety_end.as_nanos(),
        derive_seed(seed, "nemesis", 0),
    );
    let mut events = vec![RunEvent::phase(Time::ZERO, Phase::Safety)];
    let mut outputs: Vec<SimOutput> = Vec::new();
    let mut submits = Vec::new();
    let mut in_safety = true;
    let mut draining = false;
    let mut last_progress_ms = 0;
    if let Some(pb) = progress {
        pb.set_length(liveness_end.as_nanos() / 1_000_000);
    }
    sim.drain_outputs(&mut outputs);
    let mut leaders = LeaderTracker::default();
    if observer.has_membership() {
        nemesis.manage_membership(Time::ZERO);
    }
    let check_every = Duration::from_millis(INVARIANT_CHECK_INTERVAL_MS);
    let mut next_check = observer
        .checks_invariants()
        .then(|| Time::ZERO.saturating_add(check_every));
    loop {
        let phase_end = if in_safety { safety_end } else { liveness_end };
        let mut t = if draining { Time::MAX } else { phase_end };
        t = min_time(t, sim.next_event_time());
        t = min_time(t, workload.next_wakeup());
        if in_safety {
            t = min_time(t, nemesis.next_wakeup());
        }
        if !draining {
            t = min_time(t, nemesis.next_maintenance());
        }
        t = min_time(t, next_check);
        if draining && workload.in_flight() == 0 {
            break;
        }
        let t = t.max(sim.now());
        sim.run_until(t, &mut outputs).map_err(sim_err)?;
        let mut violation = None;
        for o in outputs.drain(..) {
            match o {
                SimOutput::Reply { at, response, .. } => workload.on_reply(at, response),
                SimOutput::Event { at, node, event } => {
                    leaders.on_event(node, &event);
                    if let Err(v) = observer.on_event(node, &event) {
                        violation = violation.or(Some(v));
                    }
                    events.push(RunEvent::node(at, node, event))
                }
            }
        }
        if let Some(due) = next_check
            && due <= t
        {
            if violation.is_none()
                && let Err(v) = observer.check(&sim)
            {
                violation = Some(v);
            }
            next_check = Some(t.saturating_add(check_every));
        }
        if let Some(v) = violation {
            events.push(RunEvent::runner(
                t,
                RunnerEvent::InvariantViolated {
                    node: v.node,
                    invariant: v.invariant.to_string(),
                    detail: v.to_string(),
                },
            ));
            break;
        }
        let nemesis_due = [nemesis.next_wakeup(), nemesis.next_maintenance()]
            .into_iter()
            .flatten()
            .any(|w| w <= t);
        let view = if nemesis_due {
            let leader = leaders.leader().filter(|&n| sim.is_up(n));
            ClusterView {
                leader,
                membership: leader.and_then(|l| observer.membership(&sim, l)),
            }
        } else {
            ClusterView::default()
        };
        if in_safety {
            nemesis
                .step_with_view(t, &mut sim, &view, &mut events)
                .map_err(ExperimentError::Sim)?;
        }
        if !draining {
            nemesis
                .maintain(t, &mut sim, &view, &mut events)
                .map_err(ExperimentError::Sim)?;
        }
        if !draining && t == phase_end {
            if in_safety {
                in_safety = false;
                nemesis
                    .heal_all(t, &mut sim, &mut events)
                    .map_err(ExperimentError::Sim)?;
                // Belt and braces: whatever the nemesis did, the cluster is whole again.
                sim.heal();
                for &n in &nodes {
                    if !sim.is_up(n) {
                        sim.restart(n).map_err(sim_err)?;
                    }
                    sim.resume(n);
                    sim.set_clock_drift(n, 0);
                }
                events.push(RunEvent::phase(t, Phase::Liveness));
                workload.mark_heal(t);
            } else {
                draining = true;
                workload.stop_issuing();
                events.push(RunEvent::phase(t, Phase::Drain));
            }
        }
        workload.step(t, &mut submits);
        for (node, req) in submits.drain(..) {
            sim.submit(node, req);
        }
        if let Some(pb) = progress {
            let ms = t.as_nanos() / 1_000_000;
            if ms >= last_progress_ms + 100 {
                last_progress_ms = ms;
                pb.set_position(ms.min(liveness_end.as_nanos() / 1_000_000));
            }
        }
    }
    let liveness = workload.liveness();
    let faults = FaultCounts {
        injected: nemesis.injected(),
        by_kind: nemesis.injected_by_kind().clone(),
        skipped: nemesis.skipped(),
    };
    let sim_stats = sim.stats().clone();
    let (history, counters) = workload.finish();
    events.sort_by_key(|e| e.time_ns);
    Ok(SimRun {
        history,
        events,
        counters,
        liveness,
        faults,
        sim_stats,
        workload_end: liveness_end,
        swim: None,
    })
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunVerdict {
    /// Linearizable and live.
    Valid,
    /// The checker could not decide within its budget (and nothing failed).
    Unknown,
    /// The cluster made no progress in the liveness phase.
    LivenessFailed,
    /// Not linearizable.
    Invalid,
    /// A property bound of the spec (e.g. SWIM's `max_false_positives`) was exceeded.
    PropertyFailed,
    /// A safety invariant checked during the simulation broke (the run stopped there).
    InvariantViolated,
}

impl RunVerdict {
    /// The name used in output and `summary.json`.
    pub fn name(self) -> &'static str {
        match self {
            RunVerdict::Valid => "valid",
            RunVerdict::Unknown => "unknown",
            RunVerdict::LivenessFailed => "liveness-failed",
            RunVerdict::Invalid => "invalid",
            RunVerdict::PropertyFailed => "property-failed",
            RunVerdict::InvariantViolated => "invariant_violated",
        }
    }

    /// The `kvlab run` exit status: 0 valid, 1 a check failed (invalid or liveness), 3
    /// unknown.
    pub fn exit_code(self) -> u8 {
        match self {
            RunVerdict::Valid => 0,
            RunVerdict::Invalid
            | RunVerdict::LivenessFailed
            | RunVerdict::PropertyFailed
            | RunVerdict::InvariantViolated => 1,
            RunVerdict::Unknown => 3,
        }
    }
}

/// When a run draws its plots and `report.html` (drawing costs more than a short
/// simulation, so a sweep over many seeds draws only what someone will look at).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportPolicy {
    /// Always.
    Always,
    /// Only when the verdict is not valid.
    OnFailure,
    /// Never.
    Never,
}

/// Options of one run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The run seed.
    pub seed: u64,
    /// The run directory to write (created if missing; files in it are replaced).
    pub run_dir: PathBuf,
    /// The spec file, for the reproduction command.
    pub spec_path: PathBuf,
    /// When to draw plots and `report.html`.
    pub report: ReportPolicy,
    /// Whether to show a progress bar over simulated time (hidden when stderr is not a
    /// terminal).
    pub progress: bool,
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// The run directory.
    pub run_dir: PathBuf,
    /// The verdict.
    pub verdict: RunVerdict,
    /// The first key the checker found not linearizable.
    pub failing_key: Option<String>,
    /// The checker's report.
    pub check: CheckReport,
    /// The numbers.
    pub summary: Summary,
    /// Why plotting failed, if it did (the run's verdict stands regardless).
    pub report_error: Option<String>,
}

impl RunOutcome {
    /// The command that replays this run.
    pub fn reproduce_command(&self, spec_path: &Path) -> String {
        format!(
            "kvlab run {} --seed {}",
            spec_path.display(),
            self.summary.seed
        )
    }
}

/// `meta.json`: where a run came from.
#[derive(Clone, Debug, Serialize)]
struct Meta<'a> {
    experiment: &'a str,
    commit: &'a str,
    seed: u64,
    backend: &'a str,
    transport: &'a str,
    kvlab_version: &'a str,
    rustc_version: &'a str,
    spec_file: String,
    reproduce: String,
    started_unix_s: u64,
    wall_time_s: f64,
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ExperimentError> {
    std::fs::write(path, bytes).map_err(|e| ExperimentError::io(path, e))
}

fn to_json_pretty<T: Serialize>(path: &Path, v: &T) -> Result<Vec<u8>, ExperimentError> {
    let mut s = serde_json::to_vec_pretty(v).map_err(|e| ExperimentError::Encode {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    s.push(b'\n');
    Ok(s)
}

/// Writes one JSON value per line.
pub fn write_events_jsonl(path: &Path, events: &[RunEvent]) -> Result<(), ExperimentError> {
    let mut buf = Vec::with_capacity(events.len() * 120);
    for e in events {
        serde_json::to_writer(&mut buf, e).map_err(|err| ExperimentError::Encode {
            path: path.to_path_buf(),
            message: err.to_string(),
        })?;
        buf.push(b'\n');
    }
    write_file(path, &buf)
}

/// Writes a history, one event per line.
pub fn write_history_jsonl(path: &Path, history: &[HistoryEvent]) -> Result<(), ExperimentError> {
    let file = std::fs::File::create(path).map_err(|e| ExperimentError::io(path, e))?;
    let mut w = std::io::BufWriter::new(file);
    kvlab_checker::write_jsonl(&mut w, history).map_err(|e| ExperimentError::Encode {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    w.flush().map_err(|e| ExperimentError::io(path, e))
}

/// Runs one experiment end to end: simulate, write the run directory, check, summarize,
/// and (if asked) draw the report.
pub fn run_experiment(spec: &Spec, opts: &RunOptions) -> Result<RunOutcome, ExperimentError> {
    let wall_start = std::time::Instant::now();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dir = &opts.run_dir;
    std::fs::create_dir_all(dir).map_err(|e| ExperimentError::io(dir, e))?;
    // Outputs of an earlier run in the same directory must not pass for this run's.
    for stale in ["report.html", "linearizability.html"] {
        let p = dir.join(stale);
        if p.is_file() {
            std::fs::remove_file(&p).map_err(|e| ExperimentError::io(&p, e))?;
        }
    }
    let plots = dir.join("plots");
    if plots.is_dir() {
        std::fs::remove_dir_all(&plots).map_err(|e| ExperimentError::io(&plots, e))?;
    }

    let pb = if opts.progress && spec.time.duration_s + spec.time.liveness_s > 2.0 {
        let pb = ProgressBar::new(0);
        pb.set_style(
            indicatif::ProgressStyle::with_template(match spec.backend {
                crate::local::BackendKind::Sim => {
                    "{prefix} [{bar:30}] {pos}/{len} simulated ms ({elapsed})"
                }
                crate::local::BackendKind::Local => {
                    "{prefix} [{bar:30}] {pos}/{len} ms ({elapsed})"
                }
            })
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb.set_prefix(format!("{} seed {}", spec.name, opts.seed));
        Some(pb)
    } else {
        None
    };
    let (backend, transport) = match spec.backend {
        crate::local::BackendKind::Sim => ("sim", "sim"),
        crate::local::BackendKind::Local => ("local", spec.transport.name()),
    };
    let run = match spec.backend {
        crate::local::BackendKind::Sim => simulate(spec, opts.seed, pb.as_ref()),
        crate::local::BackendKind::Local => {
            crate::local::run_local(spec, opts.seed, dir, pb.as_ref())
        }
    };
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    let run = run?;

    // The resolved spec, with the seed actually used.
    let mut resolved = spec.clone();
    resolved.seed = opts.seed;
    write_file(
        &dir.join("spec.toml"),
        resolved.to_toml_string()?.as_bytes(),
    )?;
    let history_path = dir.join("history.jsonl");
    write_history_jsonl(&history_path, &run.history)?;
    write_events_jsonl(&dir.join("events.jsonl"), &run.events)?;

    let check_opts = CheckOptions {
        model: spec.check.model.to_checker(),
        timeout: Some(Duration::from_secs_f64(spec.check.timeout_s)),
    };
    let check = kvlab_checker::check(&run.history, &check_opts).map_err(|e| {
        ExperimentError::Checker(format!("the runner wrote a malformed history: {e}"))
    })?;
    let failing_key = check.invalid_keys.first().cloned();
    let viz_path = dir.join("linearizability.html");
    let mut viz_error = None;
    if let Some(key) = &failing_key
        && let Err(e) =
            kvlab_checker::write_visualization(&run.history, &check_opts, Some(key), &viz_path)
    {
        viz_error = Some(format!("linearizability.html: {e}"));
    }

    let violation = run.events.iter().find(|e| {
        matches!(
            e.runner_event(),
            Some(RunnerEvent::InvariantViolated { .. })
        )
    });
    let verdict = match check.verdict {
        _ if violation.is_some() => RunVerdict::InvariantViolated,
        Verdict::Invalid => RunVerdict::Invalid,
        _ if !run.liveness.ok => RunVerdict::LivenessFailed,
        Verdict::Unknown => RunVerdict::Unknown,
        Verdict::Valid => RunVerdict::Valid,
    };
    // SWIM has no KV history: its verdict is its own properties.
    let verdict = match &run.swim {
        Some(_) if !run.liveness.ok => RunVerdict::LivenessFailed,
        Some(sw) if !sw.ok => RunVerdict::PropertyFailed,
        Some(_) => RunVerdict::Valid,
        None => verdict,
    };

    let stats = OpStats::from_history(&run.history);
    let duration_s = run.workload_end.as_secs_f64();
    let mut node_events = std::collections::BTreeMap::new();
    for (_, e) in run.events.iter().filter_map(RunEvent::node_event) {
        *node_events.entry(e.kind().to_string()).or_insert(0u64) += 1;
    }
    let run_id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut summary = Summary {
        experiment: spec.name.clone(),
        label: spec.label.clone(),
        run_id,
        seed: opts.seed,
        system: spec.system.name().into(),
        backend: backend.into(),
        transport: transport.into(),
        nodes: spec.nodes,
        duration_s,
        safety_s: spec.time.duration_s,
        liveness_s: spec.time.liveness_s,
        verdict: verdict.name().into(),
        ops: OpCounts {
            total: stats.counts.total,
            ok: stats.counts.ok,
            fail: stats.counts.fail,
            info: stats.counts.info,
            dropped_saturated: run.counters.dropped_saturated,
        },
        ops_by_f: stats.by_f.clone(),
        throughput_ok_per_s: if duration_s > 0.0 {
            stats.counts.ok as f64 / duration_s
        } else {
            0.0
        },
        latency_ms: stats.latency_ms.clone(),
        faults: run.faults.clone(),
        node_events,
        liveness: run.liveness.clone(),
        workload: run.counters.clone(),
        checker: serde_json::to_value(&check).unwrap_or(serde_json::Value::Null),
        sim: serde_json::to_value(&run.sim_stats).unwrap_or(serde_json::Value::Null),
        swim: run.swim.clone(),
        invariant_violation: violation.map(RunEvent::detail),
        wall_time_s: 0.0,
    };
    if run.swim.is_some() {
        summary.checker = serde_json::json!({
            "verdict": "not-applicable",
            "reason": "system = \"swim\" runs no KV workload; see the swim section",
        });
    }
    summary.wall_time_s = wall_start.elapsed().as_secs_f64();
    let summary_path = dir.join("summary.json");
    write_file(&summary_path, &to_json_pretty(&summary_path, &summary)?)?;

    let reproduce = format!(
        "kvlab run {} --seed {}{}",
        opts.spec_path.display(),
        opts.seed,
        match spec.backend {
            crate::local::BackendKind::Sim => String::new(),
            crate::local::BackendKind::Local => format!(" --backend local --transport {transport}"),
        }
    );
    let meta_path = dir.join("meta.json");
    let meta = Meta {
        experiment: &spec.name,
        commit: BUILD_COMMIT,
        seed: opts.seed,
        backend,
        transport,
        kvlab_version: env!("CARGO_PKG_VERSION"),
        rustc_version: BUILD_RUSTC,
        spec_file: opts.spec_path.display().to_string(),
        reproduce,
        started_unix_s,
        wall_time_s: wall_start.elapsed().as_secs_f64(),
    };
    write_file(&meta_path, &to_json_pretty(&meta_path, &meta)?)?;

    let mut report_error = viz_error;
    let render = match opts.report {
        ReportPolicy::Always => true,
        ReportPolicy::OnFailure => verdict != RunVerdict::Valid,
        ReportPolicy::Never => false,
    };
    if render && let Err(e) = render_report(dir) {
        let msg = e.to_string();
        report_error = Some(match report_error {
            Some(prev) => format!("{prev}; {msg}"),
            None => msg,
        });
    }

    let outcome = RunOutcome {
        run_dir: dir.clone(),
        verdict,
        failing_key,
        check,
        summary,
        report_error,
    };
    Ok(outcome)
}

/// Draws the plots and `report.html` of a run directory; returns the report's path.
pub fn render_report(dir: &Path) -> Result<PathBuf, ExperimentError> {
    crate::report::render_run(dir)
        .map(|r| r.report_html)
        .map_err(|e| ExperimentError::Report(e.to_string()))
}

/// Most seeds one `--seeds A..B` sweep may run.
pub const MAX_SEEDS_PER_SWEEP: u64 = 100_000;

/// Parses a seed range `A..B` (inclusive, as the CLI documents) or `A..=B`.
pub fn parse_seed_range(s: &str) -> Result<std::ops::RangeInclusive<u64>, ExperimentError> {
    let bad = |reason: &str| ExperimentError::BadArgument {
        arg: format!("--seeds {s}"),
        reason: reason.into(),
    };
    let (a, b) = s
        .split_once("..=")
        .or_else(|| s.split_once(".."))
        .ok_or_else(|| bad("expected A..B, an inclusive range of seeds such as 1..20"))?;
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|_| bad("the start is not a non-negative integer"))?;
    let b: u64 = b
        .trim()
        .parse()
        .map_err(|_| bad("the end is not a non-negative integer"))?;
    if a > b {
        return Err(bad("the start is larger than the end"));
    }
    if b > crate::spec::MAX_SEED {
        return Err(bad(&format!(
            "seeds must be at most {} (MAX_SEED)",
            crate::spec::MAX_SEED
        )));
    }
    if b - a >= MAX_SEEDS_PER_SWEEP {
        return Err(bad(&format!(
            "more than {MAX_SEEDS_PER_SWEEP} seeds (MAX_SEEDS_PER_SWEEP)"
        )));
    }
    Ok(a..=b)
}

/// The directory of one seed's run under `base` (`base/seed-<N>`).
pub fn seed_run_dir(base: &Path, seed: u64) -> PathBuf {
    base.join(format!("seed-{seed}"))
}

/// Runs every seed of `seeds` on `threads` worker threads, each into
/// `seed_run_dir(base, seed)`, and calls `on_done` once per seed **in seed order** as
/// results become available. Plots and reports are drawn for the first seed and for
/// every seed whose verdict is not valid.
pub fn run_sweep(
    spec: &Spec,
    spec_path: &Path,
    seeds: std::ops::RangeInclusive<u64>,
    base: &Path,
    threads: usize,
    mut on_done: impl FnMut(u64, Result<RunOutcome, ExperimentError>),
) {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc;

    let (first, last) = (*seeds.start(), *seeds.end());
    let next = AtomicU64::new(first);
    let (tx, rx) = mpsc::channel();
    let count = last - first + 1;
    let threads = threads.clamp(1, usize::try_from(count).unwrap_or(usize::MAX));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed > last || seed < first {
                        break;
                    }
                    let opts = RunOptions {
                        seed,
                        run_dir: seed_run_dir(base, seed),
                        spec_path: spec_path.to_path_buf(),
                        report: if seed == first {
                            ReportPolicy::Always
                        } else {
                            ReportPolicy::OnFailure
                        },
                        progress: false,
                    };
                    let result = run_experiment(spec, &opts);
                    if tx.send((seed, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut ready = BTreeMap::new();
        let mut expected = first;
        for (seed, result) in rx {
            ready.insert(seed, result);
            while let Some(r) = ready.remove(&expected) {
                on_done(expected, r);
                expected = expected.saturating_add(1);
            }
        }
    });
}

/// Draws comparison plots of several run directories into `out_dir`; returns the
/// comparison page's path.
pub fn render_comparison(run_dirs: &[PathBuf], out_dir: &Path) -> Result<PathBuf, ExperimentError> {
    crate::report::render_comparison(run_dirs, out_dir)
        .map_err(|e| ExperimentError::Report(e.to_string()))
}

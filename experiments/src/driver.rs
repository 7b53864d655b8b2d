//! The phase driver: the one loop every experiment runs, on every backend.
//!
//! 1. **Safety phase** (`time.duration_s`): the workload runs and the nemesis injects
//!    faults.
//! 2. **Liveness phase** (`time.liveness_s`): every fault is undone (the nemesis undoes
//!    its own, then the cluster heals whatever is left: rules removed, crashed nodes
//!    restarted, paused nodes resumed, clocks reset); every client must then complete an
//!    `ok` operation before the phase ends (closed loop; open loop: some client), or the
//!    run fails with "liveness: no progress within N s". A run without clients (SWIM)
//!    gets its liveness verdict from its observer.
//! 3. **Drain:** no new operations; those in flight complete or time out (`info`).
//!
//! The driver advances the cluster ([`Cluster::advance`]) to the earliest of the phase
//! end, the workload's next action, the nemesis's next action and the observers' next
//! wakeup; the cluster returns earlier when it produced output, so a client invokes its
//! next operation at the very instant its previous reply arrived. Node events go to the
//! observers (typed), then to `events.jsonl`; a violated invariant ends the run at once,
//! recorded as a runner event.

use std::time::Duration;

use indicatif::ProgressBar;
use kvlab_checker::HistoryEvent;
use kvlab_node::SystemKind;
use kvlab_types::{ClientRequest, NodeEvent, NodeId, Time, derive_seed};

use crate::cluster::{Cluster, ClusterOutput, ClusterView};
use crate::error::ExperimentError;
use crate::events::{Phase, RunEvent, RunnerEvent};
use crate::nemesis::Nemesis;
use crate::observe::{Observer, ObserverReport, Violation};
use crate::op_stats::OpStats;
use crate::spec::{PartitionsPerTxn, Spec, secs_to_ns};
use crate::summary::FaultCounts;
use crate::workload::{
    LivenessReport, MAX_HISTORY_OPERATIONS, Workload, WorkloadCounters, WorkloadOutcome,
};

/// Where the driver reports how far the run is: a progress bar on a terminal, a line now
/// and then otherwise ([`ProgressLine`]).
pub trait Progress {
    /// `done_ms` of `total_ms` milliseconds of the run's clock are behind.
    fn advanced(&self, done_ms: u64, total_ms: u64);
    /// The run is over.
    fn finish(&self) {}
}

impl Progress for ProgressBar {
    fn advanced(&self, done_ms: u64, total_ms: u64) {
        if self.length() != Some(total_ms) {
            self.set_length(total_ms);
        }
        self.set_position(done_ms.min(total_ms));
    }
    fn finish(&self) {
        self.finish_and_clear();
    }
}

/// How often a [`ProgressLine`] prints, in seconds of wall time.
pub const PROGRESS_LINE_INTERVAL_S: u64 = 10;

/// A progress report for logs: one line on stderr every
/// [`PROGRESS_LINE_INTERVAL_S`] of wall time (`name: 1234.5 of 86410.0 s (1.4%), 10 s
/// wall, about 690 s left`).
#[derive(Debug)]
pub struct ProgressLine {
    name: String,
    started: std::time::Instant,
    next: std::cell::Cell<u64>,
}

impl ProgressLine {
    /// A progress line labelled `name`.
    pub fn new(name: String) -> Self {
        ProgressLine {
            name,
            started: std::time::Instant::now(),
            next: std::cell::Cell::new(PROGRESS_LINE_INTERVAL_S),
        }
    }
}

impl Progress for ProgressLine {
    fn advanced(&self, done_ms: u64, total_ms: u64) {
        let wall = self.started.elapsed();
        if wall.as_secs() < self.next.get() || total_ms == 0 {
            return;
        }
        self.next.set(wall.as_secs() + PROGRESS_LINE_INTERVAL_S);
        let fraction = done_ms as f64 / total_ms as f64;
        let left = if fraction > 0.0 {
            wall.as_secs_f64() * (1.0 - fraction) / fraction
        } else {
            f64::NAN
        };
        eprintln!(
            "{}: {:.1} of {:.1} s ({:.1}%), {} s wall, about {:.0} s left",
            self.name,
            done_ms as f64 / 1e3,
            total_ms as f64 / 1e3,
            fraction * 100.0,
            wall.as_secs(),
            left
        );
    }
}

/// After the liveness phase and the workload's operation timeout, the drain may take
/// this much longer before the run is abandoned as stuck (defined with the workload,
/// whose final reads must fit in it).
pub use crate::workload::DRAIN_SLACK_MS;

/// What a run produced, before checking.
#[derive(Debug)]
pub struct Driven {
    /// The clients' history, when it was kept in memory (empty when it was streamed to
    /// the file [`drive`] was given).
    pub history: Vec<HistoryEvent>,
    /// History events recorded (kept or streamed).
    pub history_events: u64,
    /// Counts and latencies of the clients' operations.
    pub stats: OpStats,
    /// Committed transactions' phases and latencies (a transactional workload).
    pub txn_samples: Vec<crate::txn_stats::TxnPhaseSample>,
    /// Faults, node events and phases, in time order.
    pub events: Vec<RunEvent>,
    /// Workload counters.
    pub counters: WorkloadCounters,
    /// How the liveness phase went (the workload's, or an observer's for runs without
    /// clients).
    pub liveness: LivenessReport,
    /// Faults injected.
    pub faults: FaultCounts,
    /// When the safety phase began, on the cluster's clock.
    pub start: Time,
    /// When the liveness phase ended.
    pub end: Time,
    /// What each observer found.
    pub reports: Vec<ObserverReport>,
    /// The invariant that broke, if one did (the run stopped there).
    pub violation: Option<Violation>,
}

/// The phase boundaries of a run, on the cluster's clock.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    start: Time,
    safety_end: Time,
    liveness_end: Time,
    give_up: Time,
}

impl Schedule {
    fn new(spec: &Spec, start: Time) -> Self {
        let at = |s: f64| start + Duration::from_nanos(secs_to_ns(s));
        let liveness_end = at(spec.time.duration_s + spec.time.liveness_s);
        Schedule {
            start,
            safety_end: at(spec.time.duration_s),
            liveness_end,
            give_up: liveness_end
                + Duration::from_millis(spec.workload.timeout_ms.saturating_add(DRAIN_SLACK_MS)),
        }
    }
}

/// The state of one run being driven.
struct Driver<'a> {
    cluster: &'a mut dyn Cluster,
    observers: &'a mut [Box<dyn Observer>],
    workload: Option<Workload>,
    nemesis: Nemesis,
    schedule: Schedule,
    phase: Phase,
    events: Vec<RunEvent>,
    outputs: Vec<ClusterOutput>,
    submits: Vec<(NodeId, ClientRequest)>,
    violation: Option<Violation>,
    progress: Option<&'a dyn Progress>,
    last_progress_ms: u64,
}

/// Runs `spec` with `seed` on `cluster` through the safety, liveness and drain phases,
/// feeding `observers`; with `history_file`, the history is streamed there as the run
/// goes instead of kept in memory. The cluster's clock at the call is the start of the
/// safety phase. `progress`, if given, hears how many milliseconds of the cluster's clock are
/// behind.
pub fn drive(
    spec: &Spec,
    seed: u64,
    cluster: &mut dyn Cluster,
    observers: &mut [Box<dyn Observer>],
    progress: Option<&dyn Progress>,
    history_file: Option<&std::path::Path>,
) -> Result<Driven, ExperimentError> {
    let schedule = Schedule::new(spec, cluster.now());
    let nodes = cluster.nodes().to_vec();
    let workload = spec.system.serves_keys().then(|| {
        let w = Workload::new(
            &spec.workload,
            &nodes,
            schedule.start,
            derive_seed(seed, "workload", 0),
        );
        match spec.workload.partitions_per_txn {
            PartitionsPerTxn::Any => Ok(w),
            PartitionsPerTxn::Exactly(_) => spec
                .key_partitions()
                .map(|p| w.with_key_partitions(p))
                .map_err(|reason| ExperimentError::SpecInvalid {
                    file: "spec".into(),
                    field: "workload.partitions_per_txn".into(),
                    reason,
                }),
        }
    });
    let mut workload = workload.transpose()?;
    if let (Some(w), Some(path)) = (&mut workload, history_file) {
        w.stream_history_to(path)
            .map_err(|e| ExperimentError::io(path, e))?;
    }
    let mut nemesis = Nemesis::new(
        &spec.nemesis,
        &nodes,
        schedule.start,
        schedule.safety_end,
        derive_seed(seed, "nemesis", 0),
    );
    nemesis.set_absent(&spec.absent_nodes());
    nemesis.set_max_lost_for_good(match spec.system {
        SystemKind::Raft => (spec.nodes as usize).saturating_sub(1) / 2,
        SystemKind::Kvlab => {
            let rf = spec.kvlab.replication_factor as usize;
            rf.min(spec.kvlab.meta.voters.len()).saturating_sub(1) / 2
        }
        _ => 0,
    });
    if spec.system == SystemKind::Kvlab {
        nemesis.set_vnode_groups(spec.kvlab.ring.vnode_count);
    }
    if let Some(w) = &mut workload {
        w.set_gateways(&nemesis.gateways());
    }
    if spec.system == SystemKind::Raft && cluster.takes_admin_commands() {
        nemesis.manage_membership(schedule.start);
    }
    let driver = Driver {
        cluster,
        observers,
        workload,
        nemesis,
        schedule,
        phase: Phase::Safety,
        events: Vec::new(),
        outputs: Vec::new(),
        submits: Vec::new(),
        violation: None,
        progress,
        last_progress_ms: 0,
    };
    driver.run()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn earliest(a: Time, b: Option<Time>) -> Time {
    match b {
        Some(b) if b < a => b,
        _ => a,
    }
}

impl Driver<'_> {
    fn run(mut self) -> Result<Driven, ExperimentError> {
        let start = self.schedule.start;
        self.enter_phase(start, Phase::Safety);
        loop {
            if self.phase == Phase::Drain && self.in_flight() == 0 {
                break;
            }
            let deadline = self.deadline();
            self.cluster.advance(deadline, &mut self.outputs)?;
            let now = self.cluster.now();
            self.take_outputs(now)?;
            self.wake_observers(now);
            if let Some(v) = &self.violation {
                self.events.push(RunEvent::runner(
                    now,
                    RunnerEvent::InvariantViolated {
                        node: v.node,
                        invariant: v.invariant.clone(),
                        detail: v.detail.clone(),
                    },
                ));
                break;
            }
            self.step_nemesis(now)?;
            self.change_phase(now)?;
            self.step_workload(now);
            self.show_progress(now);
            if self.phase == Phase::Drain && now >= self.schedule.give_up {
                return Err(ExperimentError::Backend(format!(
                    "{} operations still in flight {} ms after the liveness phase ended",
                    self.in_flight(),
                    ms(now.saturating_since(self.schedule.liveness_end))
                )));
            }
        }
        self.finish()
    }

    fn in_flight(&self) -> usize {
        self.workload.as_ref().map_or(0, Workload::in_flight)
    }

    /// The earliest moment anyone must act.
    fn deadline(&self) -> Time {
        let s = &self.schedule;
        let mut t = match self.phase {
            Phase::Safety => s.safety_end,
            Phase::Liveness => s.liveness_end,
            Phase::Drain => s.give_up,
        };
        t = earliest(t, self.workload.as_ref().and_then(Workload::next_wakeup));
        if self.phase == Phase::Safety {
            t = earliest(t, self.nemesis.next_wakeup());
        }
        if self.phase != Phase::Drain {
            t = earliest(t, self.nemesis.next_maintenance());
        }
        for o in self.observers.iter() {
            t = earliest(t, o.next_wakeup());
        }
        t.max(self.cluster.now())
    }

    /// Replies to the workload; node events to the nemesis (a transaction's 2PC steps,
    /// which `kill-gateway` and `partition-home-group` wait for), the observers, then
    /// `events.jsonl`.
    fn take_outputs(&mut self, now: Time) -> Result<(), ExperimentError> {
        for o in std::mem::take(&mut self.outputs) {
            match o {
                ClusterOutput::Reply { at, response } => {
                    if let Some(w) = &mut self.workload {
                        w.on_reply(at, response);
                    }
                }
                ClusterOutput::Event { at, node, event } => {
                    if self.phase == Phase::Safety && matches!(event, NodeEvent::TxnStep { .. }) {
                        let before = self.events.len();
                        let (c, e) = (&mut *self.cluster, &mut self.events);
                        self.nemesis.on_txn_step(now, node, &event, c, e)?;
                        self.tell_observers_of_faults(before);
                    }
                    self.on_node_event(at, node, event)
                }
                ClusterOutput::Warning { at, detail } => self
                    .events
                    .push(RunEvent::runner(at, RunnerEvent::FaultError { detail })),
            }
        }
        Ok(())
    }

    fn on_node_event(&mut self, at: Time, node: NodeId, event: NodeEvent) {
        let mut keep = true;
        for o in self.observers.iter_mut() {
            if let Err(v) = o.on_node_event(&*self.cluster, at, node, &event) {
                self.violation.get_or_insert(v);
            }
            keep &= o.keep_event(at, &event);
        }
        if keep {
            self.events.push(RunEvent::node(at, node, event));
        }
    }

    fn wake_observers(&mut self, now: Time) {
        for o in self.observers.iter_mut() {
            if o.next_wakeup().is_some_and(|w| w <= now)
                && let Err(v) = o.on_wakeup(&mut *self.cluster, now, &mut self.events)
            {
                self.violation.get_or_insert(v);
            }
        }
    }

    /// Starts and ends due faults (safety phase) and reconciles membership (until the
    /// drain), with a view of the cluster taken only when something is due.
    fn step_nemesis(&mut self, now: Time) -> Result<(), ExperimentError> {
        let fault_due =
            self.phase == Phase::Safety && self.nemesis.next_wakeup().is_some_and(|w| w <= now);
        let maintenance_due =
            self.phase != Phase::Drain && self.nemesis.next_maintenance().is_some_and(|w| w <= now);
        if !fault_due && !maintenance_due {
            return Ok(());
        }
        let view: ClusterView = self.cluster.view();
        let before = self.events.len();
        if fault_due {
            self.nemesis
                .step_with_view(now, &mut *self.cluster, &view, &mut self.events)?;
        }
        if maintenance_due {
            self.nemesis
                .maintain(now, &mut *self.cluster, &view, &mut self.events)?;
        }
        self.tell_observers_of_faults(before);
        if let Some(w) = &mut self.workload {
            w.set_gateways(&self.nemesis.gateways());
        }
        Ok(())
    }

    /// Shows the observers the nemesis events pushed since `from`.
    fn tell_observers_of_faults(&mut self, from: usize) {
        for e in &self.events[from..] {
            if let Some(n) = e.nemesis_event() {
                for o in self.observers.iter_mut() {
                    o.on_nemesis_event(&*self.cluster, e.at(), n);
                }
            }
        }
    }

    /// Moves to the next phase when the current one is over.
    fn change_phase(&mut self, now: Time) -> Result<(), ExperimentError> {
        match self.phase {
            Phase::Safety if now >= self.schedule.safety_end => self.heal(now)?,
            Phase::Liveness if now >= self.schedule.liveness_end => {
                if let Some(w) = &mut self.workload {
                    w.stop_issuing();
                }
                self.enter_phase(now, Phase::Drain);
            }
            _ => {}
        }
        Ok(())
    }

    /// Ends the safety phase: every fault undone, by the nemesis and then by the cluster
    /// itself (belt and braces), and the liveness phase begins.
    fn heal(&mut self, now: Time) -> Result<(), ExperimentError> {
        let before = self.events.len();
        self.nemesis
            .heal_all(now, &mut *self.cluster, &mut self.events)?;
        self.tell_observers_of_faults(before);
        for detail in self.cluster.heal_all(self.nemesis.retired()) {
            self.events
                .push(RunEvent::runner(now, RunnerEvent::Warning { detail }));
        }
        if let Some(w) = &mut self.workload {
            // Healing may retire nodes (a damaged disk refused at its restart).
            w.set_gateways(&self.nemesis.gateways());
            w.mark_heal(now);
        }
        self.enter_phase(now, Phase::Liveness);
        Ok(())
    }

    fn enter_phase(&mut self, at: Time, phase: Phase) {
        self.phase = phase;
        self.events.push(RunEvent::phase(at, phase));
        for o in self.observers.iter_mut() {
            o.on_phase(&mut *self.cluster, at, phase, &mut self.events);
        }
    }

    fn step_workload(&mut self, now: Time) {
        let Some(w) = &mut self.workload else {
            return;
        };
        w.step(now, &mut self.submits);
        for (node, req) in self.submits.drain(..) {
            self.cluster.submit(node, req);
        }
    }

    fn show_progress(&mut self, now: Time) {
        let Some(pb) = self.progress else {
            return;
        };
        let done = ms(now.saturating_since(self.schedule.start));
        if done >= self.last_progress_ms + 100 {
            self.last_progress_ms = done;
            let total = ms(self
                .schedule
                .liveness_end
                .saturating_since(self.schedule.start));
            pb.advanced(done, total);
        }
    }

    fn finish(self) -> Result<Driven, ExperimentError> {
        let end = self.schedule.liveness_end;
        let reports: Vec<ObserverReport> = self
            .observers
            .iter_mut()
            .map(|o| o.finish(&*self.cluster, end))
            .collect();
        let observed_liveness = reports.iter().find_map(|r| r.liveness.clone());
        let (outcome, liveness) = match self.workload {
            Some(w) => {
                let liveness = w.liveness();
                (w.finish(), liveness)
            }
            None => (
                WorkloadOutcome::empty(),
                observed_liveness.unwrap_or_default(),
            ),
        };
        if let Some(e) = &outcome.write_error {
            return Err(ExperimentError::Backend(format!(
                "cannot write the history: {e}"
            )));
        }
        if outcome.capped {
            return Err(ExperimentError::LimitReached {
                what: "history operations (MAX_HISTORY_OPERATIONS)",
                limit: MAX_HISTORY_OPERATIONS,
                hint: "shorten time.duration_s or lower the load (workload.clients, workload.rate_per_s)"
                    .into(),
            });
        }
        let faults = FaultCounts {
            injected: self.nemesis.injected(),
            by_kind: self.nemesis.injected_by_kind().clone(),
            skipped: self.nemesis.skipped(),
            skipped_by_kind: self.nemesis.skipped_by_kind().clone(),
            refused_to_start: self.nemesis.refused_to_start(),
        };
        let mut events = self.events;
        events.sort_by_key(|e| e.time_ns);
        Ok(Driven {
            history: outcome.history,
            history_events: outcome.recorded,
            stats: outcome.stats,
            txn_samples: outcome.txn_samples,
            events,
            counters: outcome.counters,
            liveness,
            faults,
            start: self.schedule.start,
            end,
            reports,
            violation: self.violation,
        })
    }
}

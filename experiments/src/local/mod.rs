//! The `local` backend: the same experiment spec, run against real nodes on this machine
//! in real time instead of the simulator.
//!
//! - `transport = "udp"` or `"tarpc"`: one `kvlab node` **process** per node on
//!   127.0.0.1 ([`procs`]), each with a node config written into the run directory
//!   (`nodes/n<i>/node.toml`), its data directory and its log. Crashes are `SIGKILL` and
//!   a restart from the same data directory, pauses are `SIGSTOP` / `SIGCONT`, network
//!   faults are fault rules set through each node's admin endpoint.
//! - `transport = "mem"`: every node a task of this process over the in-process network
//!   ([`kvlab_server::LocalCluster`], [`mem`]); crashes abort the task, pauses stop its
//!   driver, network faults are the same fault rules.
//!
//! The workload ([`crate::workload::Workload`]) and the nemesis ([`crate::nemesis`]) are
//! the very ones the simulator runs: this module only replaces the simulator's clock by
//! the wall clock (nanoseconds since the run started) and its network by the clients of
//! the real nodes. An invocation is recorded before the request leaves and a completion
//! when the runner sees the answer, so every recorded interval contains the real one and
//! the checker's verdict stays sound.
//!
//! Every process this module starts is stopped before [`run_local`] returns, on success,
//! on error and on panic ([`procs::ProcessCluster`] kills what is left when dropped); a
//! node process also dies with the runner thread that started it (`--exit-with-parent`).
//! Every wait is bounded.
//!
//! **Must never depend on:** the simulator's internals (it shares only the spec types of
//! its fault rules with the nemesis).

pub mod mem;
pub mod procs;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use kvlab_server::{NodeStatus, SystemConfig};
use kvlab_sim::{FaultRule as SimRule, LatencyDist, RuleId};
use kvlab_transport::FaultRule;
use kvlab_types::{ClientRequest, ClientResponse, NodeId, Time, derive_seed};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::ExperimentError;
use crate::events::{Phase, RunEvent, RunnerEvent};
use crate::nemesis::{ClusterControl, ClusterView, Nemesis};
use crate::run::SimRun;
use crate::spec::{FaultKind, Spec, SystemKind, secs_to_ns};
use crate::summary::FaultCounts;
use crate::workload::Workload;

/// Most nodes a local run may start: each is a process (or a task) with its own sockets
/// and files on a machine shared with everything else.
pub const MAX_LOCAL_NODES: u32 = 16;
/// Longest startup or stop bound a spec may ask for.
pub const MAX_LOCAL_TIMEOUT_S: f64 = 600.0;
/// Bound on one admin status call while the run goes on (a paused process never
/// answers).
pub const STATUS_TIMEOUT_MS: u64 = 300;
/// Bound on setting one node's fault rules.
pub const SET_RULES_TIMEOUT_MS: u64 = 2_000;
/// After the last operation's timeout, the drain may take this much longer before the
/// run is abandoned as stuck.
pub const DRAIN_SLACK_MS: u64 = 10_000;
/// Bound on waiting, after the drain, for every node to apply the same log prefix
/// before the final statuses are recorded.
pub const CONVERGE_TIMEOUT_MS: u64 = 3_000;
/// Environment variable naming the `kvlab` executable to start nodes with (default: the
/// running executable).
pub const NODE_EXE_ENV: &str = "KVLAB_NODE_EXE";

/// Where the nodes of an experiment run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// The deterministic simulator (virtual time, one seed decides everything).
    #[default]
    Sim,
    /// Real nodes on this machine, real time (see [`crate::local`]).
    Local,
}

impl BackendKind {
    /// The name used in specs, on the command line and in `meta.json`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Sim => "sim",
            BackendKind::Local => "local",
        }
    }

    /// Parses `sim` or `local` (the `--backend` flag); `kind` is not available here.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "sim" => Ok(BackendKind::Sim),
            "local" => Ok(BackendKind::Local),
            "kind" => Err("the kind backend is not built yet: use sim or local".into()),
            other => Err(format!("unknown backend `{other}`: use sim or local")),
        }
    }
}

/// The peer transport of a `local` run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportChoice {
    /// Every node a task of the `kvlab` process, over tokio channels.
    Mem,
    /// One process per node, peers over UDP.
    Udp,
    /// One process per node, peers over tarpc (TCP).
    #[default]
    Tarpc,
}

impl TransportChoice {
    /// The name used in specs, on the command line and in `meta.json`.
    pub fn name(self) -> &'static str {
        match self {
            TransportChoice::Mem => "mem",
            TransportChoice::Udp => "udp",
            TransportChoice::Tarpc => "tarpc",
        }
    }

    /// Parses `mem`, `udp` or `tarpc` (the `--transport` flag).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "mem" => Ok(TransportChoice::Mem),
            "udp" => Ok(TransportChoice::Udp),
            "tarpc" => Ok(TransportChoice::Tarpc),
            other => Err(format!(
                "unknown transport `{other}`: use mem, udp or tarpc"
            )),
        }
    }
}

/// Options of `backend = "local"` (the `[local]` table of a spec).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSpec {
    /// Bound on starting the cluster (every node answering its admin endpoint and, for
    /// Raft, a leader elected) and on one node's restart.
    pub startup_timeout_s: f64,
    /// Bound on a node's graceful stop (`SIGTERM`) at the end of the run; then `SIGKILL`.
    pub stop_timeout_s: f64,
    /// Every node's storage (fsync policy: `batch` = group commit, fsync on).
    pub storage: kvlab_storage::StorageOptions,
}

impl Default for LocalSpec {
    fn default() -> Self {
        LocalSpec {
            startup_timeout_s: 20.0,
            stop_timeout_s: 5.0,
            storage: kvlab_storage::StorageOptions::default(),
        }
    }
}

/// Faults that have no meaning on real processes (yet): the reason names why.
fn unsupported_fault(kind: FaultKind) -> Option<&'static str> {
    match kind {
        FaultKind::ClockDrift | FaultKind::IsolateSlowLeader => {
            Some("a real process's clock cannot be skewed from outside")
        }
        FaultKind::Duplicate => Some("the transports' fault rules cannot duplicate messages"),
        FaultKind::Membership => Some("the admin endpoint takes no membership commands yet"),
        _ => None,
    }
}

/// Checks what `backend = "local"` needs of a spec; the error names the field.
pub fn validate(spec: &Spec) -> Result<(), (String, String)> {
    let l = &spec.local;
    for (field, v) in [
        ("local.startup_timeout_s", l.startup_timeout_s),
        ("local.stop_timeout_s", l.stop_timeout_s),
    ] {
        if !v.is_finite() || v <= 0.0 || v > MAX_LOCAL_TIMEOUT_S {
            return Err((
                field.into(),
                format!("must be in (0, {MAX_LOCAL_TIMEOUT_S}] s (MAX_LOCAL_TIMEOUT_S), got {v}"),
            ));
        }
    }
    if let Err(e) = l.storage.validate() {
        return Err((format!("local.storage.{}", e.field), e.reason));
    }
    if spec.backend != BackendKind::Local {
        return Ok(());
    }
    if spec.system == SystemKind::Swim {
        return Err((
            "backend".into(),
            "system = \"swim\" runs on the simulator only".into(),
        ));
    }
    if spec.nodes > MAX_LOCAL_NODES {
        return Err((
            "nodes".into(),
            format!(
                "backend = \"local\" starts at most {MAX_LOCAL_NODES} nodes (MAX_LOCAL_NODES), got {}",
                spec.nodes
            ),
        ));
    }
    for f in &spec.nemesis.faults {
        if let Some(why) = unsupported_fault(*f) {
            return Err((
                "nemesis.faults".into(),
                format!(
                    "`{}` is not supported with backend = \"local\": {why}",
                    f.spec_name()
                ),
            ));
        }
    }
    let request_timeout_ms = server_request_timeout_ms(spec);
    if request_timeout_ms > kvlab_server::MAX_CLIENT_REQUEST_TIMEOUT_MS {
        return Err((
            "workload.timeout_ms".into(),
            format!(
                "too large for a node's client request timeout (at most {} ms)",
                kvlab_server::MAX_CLIENT_REQUEST_TIMEOUT_MS
            ),
        ));
    }
    Ok(())
}

/// A node answers a client `Indeterminate` after this long: a little after the
/// workload's own timeout, so the workload's timeout is the one that counts.
fn server_request_timeout_ms(spec: &Spec) -> u64 {
    spec.workload.timeout_ms.saturating_add(500)
}

/// The system every node runs, from the spec.
pub(crate) fn system_config(spec: &Spec) -> Result<SystemConfig, ExperimentError> {
    Ok(match spec.system {
        SystemKind::Raft => SystemConfig::Raft(spec.raft.clone()),
        SystemKind::Single => SystemConfig::Single(spec.single.clone()),
        SystemKind::AsyncPrimary => SystemConfig::AsyncPrimary(spec.async_primary.clone()),
        SystemKind::Swim => {
            return Err(ExperimentError::Backend(
                "system = \"swim\" has no local backend".into(),
            ));
        }
    })
}

/// Driver options of every node of a local run.
pub(crate) fn server_options(spec: &Spec) -> kvlab_server::ServerOptions {
    kvlab_server::ServerOptions {
        client_request_timeout_ms: server_request_timeout_ms(spec),
        ..kvlab_server::ServerOptions::default()
    }
}

/// The run's clock: nanoseconds of wall time since the run started, monotonic.
#[derive(Clone, Copy, Debug)]
pub struct RunClock {
    start: Instant,
}

impl RunClock {
    /// Starts the clock now.
    pub fn start() -> Self {
        RunClock {
            start: Instant::now(),
        }
    }

    /// Time since the start.
    pub fn now(&self) -> Time {
        Time(u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

/// Where a node's protocol events start in its `events.jsonl`: the file's length when
/// the node (re)started and the run time it started at. A node's own event times count
/// from its start, so each incarnation is shifted by its start time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventSegment {
    pub(crate) offset_bytes: u64,
    pub(crate) started_ns: u64,
}

impl EventSegment {
    /// The segment a node starting now, writing `events_file`, will append.
    pub(crate) fn begin(events_file: &Path, clock: &RunClock) -> Self {
        EventSegment {
            offset_bytes: std::fs::metadata(events_file).map(|m| m.len()).unwrap_or(0),
            started_ns: clock.now().as_nanos(),
        }
    }
}

/// Reads the protocol events of one node from its `events.jsonl`, incarnation by
/// incarnation, as run events on the run's clock. Malformed lines (a torn tail after a
/// `SIGKILL`) are skipped and counted.
pub(crate) fn read_node_events(
    node: NodeId,
    events_file: &Path,
    segments: &[EventSegment],
    out: &mut Vec<RunEvent>,
) -> u64 {
    let Ok(bytes) = std::fs::read(events_file) else {
        return 0;
    };
    let mut malformed = 0;
    for (i, seg) in segments.iter().enumerate() {
        let start = usize::try_from(seg.offset_bytes).unwrap_or(usize::MAX);
        let end = segments
            .get(i + 1)
            .map(|s| usize::try_from(s.offset_bytes).unwrap_or(usize::MAX))
            .unwrap_or(bytes.len())
            .min(bytes.len());
        if start >= end {
            continue;
        }
        for line in bytes[start..end].split(|b| *b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<kvlab_server::EventRecord>(line) {
                Ok(r) => out.push(RunEvent::node(
                    Time(seg.started_ns.saturating_add(r.time_ns)),
                    node,
                    r.event,
                )),
                Err(_) => malformed += 1,
            }
        }
    }
    malformed
}

/// The running cluster, whichever way it runs.
#[derive(Debug)]
pub(crate) enum LiveCluster {
    /// One `kvlab node` process per node.
    Procs(procs::ProcessCluster),
    /// Every node a task of this process.
    Mem(mem::MemCluster),
}

impl LiveCluster {
    fn submit(
        &self,
        rt: &tokio::runtime::Handle,
        node: NodeId,
        req: ClientRequest,
        tx: mpsc::Sender<ClientResponse>,
    ) {
        match self {
            LiveCluster::Procs(c) => c.submit(rt, node, req, tx),
            LiveCluster::Mem(c) => c.submit(rt, node, req, tx),
        }
    }

    fn crash(&mut self, rt: &tokio::runtime::Handle, node: NodeId) -> Result<(), String> {
        match self {
            LiveCluster::Procs(c) => c.crash(node),
            LiveCluster::Mem(c) => c.crash(rt, node),
        }
    }

    fn restart(
        &mut self,
        rt: &tokio::runtime::Handle,
        node: NodeId,
        clock: &RunClock,
    ) -> Result<(), String> {
        match self {
            LiveCluster::Procs(c) => c.restart(rt, node, clock),
            LiveCluster::Mem(c) => c.restart(rt, node, clock),
        }
    }

    fn pause(&mut self, rt: &tokio::runtime::Handle, node: NodeId) -> Result<(), String> {
        match self {
            LiveCluster::Procs(c) => c.signal(node, nix::sys::signal::Signal::SIGSTOP),
            LiveCluster::Mem(c) => c.pause(rt, node),
        }
    }

    fn resume(&mut self, rt: &tokio::runtime::Handle, node: NodeId) -> Result<(), String> {
        match self {
            LiveCluster::Procs(c) => c.signal(node, nix::sys::signal::Signal::SIGCONT),
            LiveCluster::Mem(c) => c.resume(rt, node),
        }
    }

    fn set_rules(
        &mut self,
        rt: &tokio::runtime::Handle,
        node: NodeId,
        rules: Vec<FaultRule>,
    ) -> Result<(), String> {
        match self {
            LiveCluster::Procs(c) => c.set_rules(rt, node, rules),
            LiveCluster::Mem(c) => c.set_rules(node, rules),
        }
    }

    fn status(
        &self,
        rt: &tokio::runtime::Handle,
        node: NodeId,
        timeout: Duration,
    ) -> Option<NodeStatus> {
        match self {
            LiveCluster::Procs(c) => c.status(rt, node, timeout),
            LiveCluster::Mem(c) => c.status(rt, node, timeout),
        }
    }

    fn node_events(&self, out: &mut Vec<RunEvent>) -> u64 {
        match self {
            LiveCluster::Procs(c) => c.node_events(out),
            LiveCluster::Mem(c) => c.node_events(out),
        }
    }

    fn shutdown(self, rt: &tokio::runtime::Handle) -> Vec<String> {
        match self {
            LiveCluster::Procs(c) => c.shutdown(),
            LiveCluster::Mem(c) => c.shutdown(rt),
        }
    }
}

/// Turns the simulator's fault rules (what the nemesis speaks) into each node's
/// transport rules. Partitions cut both the sending and the receiving side, so messages
/// already in flight are dropped too. A `Delay` rule delays each (node, peer) link by a
/// fixed amount drawn once from its distribution (seeded by the rule), so messages on
/// different links overtake each other. `Duplicate` and `Hold` have no transport
/// counterpart; they are returned as unsupported.
pub fn transport_rules(
    rules: &BTreeMap<RuleId, SimRule>,
    nodes: &[NodeId],
    seed: u64,
) -> (BTreeMap<NodeId, Vec<FaultRule>>, Vec<String>) {
    let mut out: BTreeMap<NodeId, BTreeSet<OrdRule>> =
        nodes.iter().map(|n| (*n, BTreeSet::new())).collect();
    let mut unsupported = Vec::new();
    let mut add = |node: NodeId, rule: FaultRule| {
        if let Some(set) = out.get_mut(&node) {
            set.insert(OrdRule(rule));
        }
    };
    let cut = |a: NodeId, b: NodeId, add: &mut dyn FnMut(NodeId, FaultRule)| {
        if a != b {
            add(a, FaultRule::DropTo { peer: b });
            add(b, FaultRule::DropFrom { peer: a });
        }
    };
    for (id, rule) in rules {
        match rule {
            SimRule::Partition { a, b } => {
                for &x in a {
                    for &y in b {
                        cut(x, y, &mut add);
                        cut(y, x, &mut add);
                    }
                }
            }
            SimRule::OneWay { from, to } => {
                for &f in from {
                    for &t in to {
                        cut(f, t, &mut add);
                    }
                }
            }
            SimRule::Isolate { node } => {
                for &o in nodes {
                    cut(*node, o, &mut add);
                    cut(o, *node, &mut add);
                }
            }
            SimRule::Loss { probability } => {
                for &n in nodes {
                    add(
                        n,
                        FaultRule::Loss {
                            peer: None,
                            probability: probability.clamp(0.0, 1.0),
                        },
                    );
                }
            }
            SimRule::Delay { extra } => {
                let mut rng = kvlab_types::seeded_rng(derive_seed(seed, "local-delay", id.0));
                for &n in nodes {
                    for &p in nodes {
                        if n != p {
                            let delay_ms =
                                sample_ms(extra, &mut rng).min(kvlab_transport::MAX_FAULT_DELAY_MS);
                            add(n, FaultRule::DelayTo { peer: p, delay_ms });
                        }
                    }
                }
            }
            other => unsupported.push(format!(
                "fault rule `{}` has no transport counterpart",
                other.name()
            )),
        }
    }
    let out = out
        .into_iter()
        .map(|(n, set)| (n, set.into_iter().map(|r| r.0).collect()))
        .collect();
    (out, unsupported)
}

fn sample_ms(dist: &LatencyDist, rng: &mut kvlab_types::Rng) -> u64 {
    dist.sample_ns(rng).div_ceil(1_000_000)
}

/// A transport rule with a total order (by its display form), so a node's rule list is
/// deduplicated and always in the same order.
#[derive(Clone, Debug, PartialEq)]
struct OrdRule(FaultRule);

impl Eq for OrdRule {}
impl PartialOrd for OrdRule {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdRule {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.to_string().cmp(&other.0.to_string())
    }
}

/// The nemesis's handle on a live cluster: what the simulator does for a simulated run,
/// done to real nodes. Errors cannot travel through [`ClusterControl::add_rule`], so
/// they are collected and recorded as `fault_error` runner events.
#[derive(Debug)]
pub(crate) struct LocalControl {
    rt: tokio::runtime::Handle,
    cluster: LiveCluster,
    clock: RunClock,
    nodes: Vec<NodeId>,
    seed: u64,
    rules: BTreeMap<RuleId, SimRule>,
    next_rule: u64,
    /// The rules each node holds now, as last set (absent: unknown, set again).
    pushed: BTreeMap<NodeId, Vec<FaultRule>>,
    down: BTreeSet<NodeId>,
    paused: BTreeSet<NodeId>,
    errors: Vec<String>,
}

impl LocalControl {
    fn push_rules(&mut self) {
        let (wanted, unsupported) = transport_rules(&self.rules, &self.nodes, self.seed);
        self.errors.extend(unsupported);
        for (node, rules) in wanted {
            if self.down.contains(&node) || self.paused.contains(&node) {
                // Set when it restarts or resumes (a stopped process cannot answer).
                self.pushed.remove(&node);
                continue;
            }
            if self.pushed.get(&node) == Some(&rules) {
                continue;
            }
            match self.cluster.set_rules(&self.rt, node, rules.clone()) {
                Ok(()) => {
                    self.pushed.insert(node, rules);
                }
                Err(e) => {
                    self.pushed.remove(&node);
                    self.errors.push(format!("fault rules of {node}: {e}"));
                }
            }
        }
    }

    /// What the nemesis needs to know: the leader with the highest term among the nodes
    /// that answer (crashed and paused nodes are not asked).
    fn view(&self) -> ClusterView {
        let mut best: Option<(u64, NodeId)> = None;
        for &n in &self.nodes {
            if self.down.contains(&n) || self.paused.contains(&n) {
                continue;
            }
            let Some(s) =
                self.cluster
                    .status(&self.rt, n, Duration::from_millis(STATUS_TIMEOUT_MS))
            else {
                continue;
            };
            if s.protocol.role.as_deref() == Some("leader") {
                let term = s.protocol.term.unwrap_or(0);
                if best.is_none_or(|(t, _)| term > t) {
                    best = Some((term, n));
                }
            }
        }
        ClusterView {
            leader: best.map(|(_, n)| n),
            membership: None,
        }
    }

    /// Undoes everything, whatever the nemesis did: no rules, every node up and running.
    fn heal_everything(&mut self) {
        self.rules.clear();
        for n in self.paused.clone() {
            if let Err(e) = self.resume(n) {
                self.errors.push(e);
            }
        }
        for n in self.down.clone() {
            if let Err(e) = self.restart(n) {
                self.errors.push(e);
            }
        }
        self.push_rules();
    }

    fn take_errors(&mut self, at: Time, events: &mut Vec<RunEvent>) {
        for e in self.errors.drain(..) {
            tracing::warn!(error = %e, "local backend: a fault could not be applied");
            events.push(RunEvent::runner(at, RunnerEvent::FaultError { detail: e }));
        }
    }
}

impl ClusterControl for LocalControl {
    fn add_rule(&mut self, rule: SimRule) -> RuleId {
        let id = RuleId(self.next_rule);
        self.next_rule += 1;
        self.rules.insert(id, rule);
        self.push_rules();
        id
    }

    fn remove_rule(&mut self, rule: RuleId) {
        self.rules.remove(&rule);
        self.push_rules();
    }

    fn crash(&mut self, node: NodeId) -> Result<(), String> {
        self.cluster.crash(&self.rt, node)?;
        self.down.insert(node);
        self.paused.remove(&node);
        self.pushed.remove(&node);
        Ok(())
    }

    fn restart(&mut self, node: NodeId) -> Result<(), String> {
        self.cluster.restart(&self.rt, node, &self.clock)?;
        self.down.remove(&node);
        self.pushed.remove(&node);
        self.push_rules();
        Ok(())
    }

    fn pause(&mut self, node: NodeId) -> Result<(), String> {
        self.cluster.pause(&self.rt, node)?;
        self.paused.insert(node);
        Ok(())
    }

    fn resume(&mut self, node: NodeId) -> Result<(), String> {
        self.cluster.resume(&self.rt, node)?;
        self.paused.remove(&node);
        self.push_rules();
        Ok(())
    }

    fn set_clock_drift(&mut self, node: NodeId, ppm: i64) -> Result<(), String> {
        if ppm == 0 {
            return Ok(());
        }
        Err(format!(
            "cannot skew the clock of {node}: real processes read the machine's clock"
        ))
    }
}

/// Runs the spec against real nodes (`spec.transport` says how), writing the nodes'
/// configs, data and logs under `dir/nodes/`, and returns what the run produced, in the
/// same shape as a simulated run. Every node started is stopped before this returns.
pub fn run_local(
    spec: &Spec,
    seed: u64,
    dir: &Path,
    progress: Option<&ProgressBar>,
) -> Result<SimRun, ExperimentError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kvlab-local")
        .enable_all()
        .build()
        .map_err(|e| ExperimentError::Backend(format!("cannot start the tokio runtime: {e}")))?;
    let nodes: Vec<NodeId> = (1..=spec.nodes).map(NodeId).collect();
    let nodes_dir = dir.join("nodes");
    if nodes_dir.exists() {
        // A fresh cluster: data of an earlier run in this directory must not be
        // recovered into this one.
        std::fs::remove_dir_all(&nodes_dir).map_err(|e| ExperimentError::io(&nodes_dir, e))?;
    }
    std::fs::create_dir_all(&nodes_dir).map_err(|e| ExperimentError::io(&nodes_dir, e))?;
    let clock = RunClock::start();
    let cluster = match spec.transport {
        TransportChoice::Mem => LiveCluster::Mem(mem::MemCluster::start(
            rt.handle(),
            spec,
            seed,
            &nodes_dir,
            &clock,
        )?),
        t @ (TransportChoice::Udp | TransportChoice::Tarpc) => LiveCluster::Procs(
            procs::ProcessCluster::start(rt.handle(), spec, seed, t, &nodes_dir, &clock)?,
        ),
    };
    let mut control = LocalControl {
        rt: rt.handle().clone(),
        cluster,
        clock,
        nodes: nodes.clone(),
        seed,
        rules: BTreeMap::new(),
        next_rule: 0,
        pushed: BTreeMap::new(),
        down: BTreeSet::new(),
        paused: BTreeSet::new(),
        errors: Vec::new(),
    };
    let started = wait_for_leader(spec, &control);
    let driven = drive(spec, seed, &mut control, started, progress);
    let finals = final_statuses(&control);
    let LocalControl { cluster, .. } = control;
    let mut node_events = Vec::new();
    let malformed = cluster.node_events(&mut node_events);
    let pids = match &cluster {
        LiveCluster::Procs(c) => Some(c.pids()),
        LiveCluster::Mem(_) => None,
    };
    let stop_warnings = cluster.shutdown(rt.handle());
    drop(rt);
    write_nodes_json(dir, &finals, pids.as_deref(), &stop_warnings, malformed)?;
    let mut run = driven?;
    run.events.extend(node_events);
    run.events.sort_by_key(|e| e.time_ns);
    Ok(run)
}

/// Raft needs a leader before it serves: wait for one (bounded by the startup timeout)
/// so the measured phase starts with a working cluster. Returns the run time the
/// workload starts at (the run's clock already counts the cluster's start).
fn wait_for_leader(spec: &Spec, control: &LocalControl) -> Time {
    if spec.system != SystemKind::Raft {
        return control.clock.now();
    }
    let deadline = Instant::now() + Duration::from_secs_f64(spec.local.startup_timeout_s);
    while Instant::now() < deadline {
        if control.view().leader.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    control.clock.now()
}

/// The workload, the nemesis and the phases, in real time. `t0` is when the workload
/// starts; phase ends are counted from it.
fn drive(
    spec: &Spec,
    seed: u64,
    control: &mut LocalControl,
    t0: Time,
    progress: Option<&ProgressBar>,
) -> Result<SimRun, ExperimentError> {
    let nodes = control.nodes.clone();
    let clock = control.clock;
    let at = |s: f64| t0.saturating_add(Duration::from_nanos(secs_to_ns(s)));
    let safety_end = at(spec.time.duration_s);
    let liveness_end = at(spec.time.duration_s + spec.time.liveness_s);
    let give_up = liveness_end.saturating_add(Duration::from_millis(
        spec.workload.timeout_ms.saturating_add(DRAIN_SLACK_MS),
    ));
    let mut workload = Workload::new(&spec.workload, &nodes, derive_seed(seed, "workload", 0));
    let mut nemesis = Nemesis::new(
        &spec.nemesis,
        &nodes,
        secs_to_ns(spec.time.duration_s),
        derive_seed(seed, "nemesis", 0),
    );
    // The nemesis plans on times from zero; the workload's clock is the run's clock.
    let nemesis_time = |t: Time| Time(t.as_nanos().saturating_sub(t0.as_nanos()));
    let from_nemesis = |t: Time| t.saturating_add(Duration::from_nanos(t0.as_nanos()));
    let capacity = (spec.workload.clients as usize).saturating_mul(2).max(1024);
    let (tx, mut rx) = mpsc::channel::<ClientResponse>(capacity);
    let mut events = vec![
        RunEvent::runner(
            Time::ZERO,
            RunnerEvent::ClusterStarted {
                detail: format!(
                    "{} nodes over {} ({} ms to start)",
                    nodes.len(),
                    spec.transport.name(),
                    t0.as_nanos() / 1_000_000
                ),
            },
        ),
        RunEvent::phase(t0, Phase::Safety),
    ];
    // The simulator's workload starts at time zero: hold it until t0.
    let mut submits = Vec::new();
    let mut in_safety = true;
    let mut draining = false;
    if let Some(pb) = progress {
        pb.set_length(liveness_end.saturating_since(t0).as_millis() as u64);
    }
    let rt = control.rt.clone();
    loop {
        let now = clock.now();
        while let Ok(r) = rx.try_recv() {
            workload.on_reply(now, r);
        }
        if in_safety
            && nemesis
                .next_wakeup()
                .is_some_and(|w| from_nemesis(w) <= now)
        {
            let view = control.view();
            let before = events.len();
            nemesis
                .step_with_view(nemesis_time(now), control, &view, &mut events)
                .map_err(ExperimentError::Backend)?;
            for e in &mut events[before..] {
                e.time_ns = e.time_ns.saturating_add(t0.as_nanos());
            }
            control.take_errors(now, &mut events);
        }
        let now = clock.now();
        if !draining && now >= if in_safety { safety_end } else { liveness_end } {
            if in_safety {
                in_safety = false;
                let before = events.len();
                nemesis
                    .heal_all(nemesis_time(now), control, &mut events)
                    .map_err(ExperimentError::Backend)?;
                for e in &mut events[before..] {
                    e.time_ns = e.time_ns.saturating_add(t0.as_nanos());
                }
                control.heal_everything();
                control.take_errors(now, &mut events);
                let now = clock.now();
                events.push(RunEvent::phase(now, Phase::Liveness));
                workload.mark_heal(now);
            } else {
                draining = true;
                workload.stop_issuing();
                events.push(RunEvent::phase(now, Phase::Drain));
            }
        }
        let now = clock.now();
        workload.step(now, &mut submits);
        for (node, req) in submits.drain(..) {
            control.cluster.submit(&rt, node, req, tx.clone());
        }
        if draining && workload.in_flight() == 0 {
            break;
        }
        if now >= give_up {
            return Err(ExperimentError::Backend(format!(
                "{} operations still in flight {} ms after the liveness phase ended",
                workload.in_flight(),
                now.saturating_since(liveness_end).as_millis()
            )));
        }
        let mut wake = if draining {
            give_up
        } else if in_safety {
            safety_end
        } else {
            liveness_end
        };
        if let Some(w) = workload.next_wakeup() {
            wake = wake.min(w);
        }
        if in_safety && let Some(w) = nemesis.next_wakeup() {
            wake = wake.min(from_nemesis(w));
        }
        let wait = wake.saturating_since(clock.now());
        if !wait.is_zero()
            && let Ok(Some(r)) = rt.block_on(async { tokio::time::timeout(wait, rx.recv()).await })
        {
            workload.on_reply(clock.now(), r);
        }
        if let Some(pb) = progress {
            pb.set_position(clock.now().saturating_since(t0).as_millis() as u64);
        }
    }
    let liveness = workload.liveness();
    let faults = FaultCounts {
        injected: nemesis.injected(),
        by_kind: nemesis.injected_by_kind().clone(),
        skipped: nemesis.skipped(),
    };
    let (history, counters) = workload.finish();
    Ok(SimRun {
        history,
        events,
        counters,
        liveness,
        faults,
        sim_stats: kvlab_sim::SimStats::default(),
        // Throughput is counted over the workload's phases, not the cluster's start.
        workload_end: Time(liveness_end.as_nanos() - t0.as_nanos()),
        swim: None,
    })
}

/// Every node's status at the end, once the nodes applied the same log prefix (or
/// [`CONVERGE_TIMEOUT_MS`] passed): the proof that a restarted node rejoined.
#[derive(Debug, Serialize)]
struct FinalStatuses {
    /// Whether every node answered and reported the same applied index.
    converged: bool,
    /// The statuses, by node.
    nodes: BTreeMap<String, Option<NodeStatus>>,
}

fn final_statuses(control: &LocalControl) -> FinalStatuses {
    let deadline = Instant::now() + Duration::from_millis(CONVERGE_TIMEOUT_MS);
    loop {
        let statuses: BTreeMap<String, Option<NodeStatus>> = control
            .nodes
            .iter()
            .map(|&n| {
                let s = if control.down.contains(&n) || control.paused.contains(&n) {
                    None
                } else {
                    control.cluster.status(
                        &control.rt,
                        n,
                        Duration::from_millis(STATUS_TIMEOUT_MS * 3),
                    )
                };
                (n.to_string(), s)
            })
            .collect();
        let applied: BTreeSet<Option<u64>> = statuses
            .values()
            .map(|s| s.as_ref().and_then(|s| s.protocol.applied_index))
            .collect();
        let all_up = statuses.values().all(Option::is_some);
        let converged = all_up && applied.len() == 1;
        if converged || Instant::now() >= deadline {
            return FinalStatuses {
                converged,
                nodes: statuses,
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `nodes.json`: final statuses, every process id started, and what went wrong
/// stopping them.
fn write_nodes_json(
    dir: &Path,
    finals: &FinalStatuses,
    pids: Option<&[u32]>,
    stop_warnings: &[String],
    malformed_event_lines: u64,
) -> Result<(), ExperimentError> {
    #[derive(Serialize)]
    struct NodesJson<'a> {
        converged: bool,
        nodes: &'a BTreeMap<String, Option<NodeStatus>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pids: Option<&'a [u32]>,
        stop_warnings: &'a [String],
        malformed_event_lines: u64,
    }
    let path: PathBuf = dir.join("nodes.json");
    let v = NodesJson {
        converged: finals.converged,
        nodes: &finals.nodes,
        pids,
        stop_warnings,
        malformed_event_lines,
    };
    let mut bytes = serde_json::to_vec_pretty(&v).map_err(|e| ExperimentError::Encode {
        path: path.clone(),
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    std::fs::write(&path, bytes).map_err(|e| ExperimentError::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u32]) -> Vec<NodeId> {
        v.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn a_partition_cuts_both_directions_on_both_sides() {
        let mut rules = BTreeMap::new();
        rules.insert(
            RuleId(0),
            SimRule::Partition {
                a: ids(&[1]),
                b: ids(&[2, 3]),
            },
        );
        let (per_node, unsupported) = transport_rules(&rules, &ids(&[1, 2, 3]), 1);
        assert!(unsupported.is_empty());
        let n1: Vec<String> = per_node[&NodeId(1)].iter().map(|r| r.to_string()).collect();
        assert_eq!(
            n1,
            [
                "drop_from(n2)",
                "drop_from(n3)",
                "drop_to(n2)",
                "drop_to(n3)"
            ]
        );
        let n2: Vec<String> = per_node[&NodeId(2)].iter().map(|r| r.to_string()).collect();
        assert_eq!(n2, ["drop_from(n1)", "drop_to(n1)"]);
    }

    #[test]
    fn one_way_drops_only_from_senders_to_receivers() {
        let mut rules = BTreeMap::new();
        rules.insert(
            RuleId(0),
            SimRule::OneWay {
                from: ids(&[1]),
                to: ids(&[2]),
            },
        );
        let (per_node, _) = transport_rules(&rules, &ids(&[1, 2, 3]), 1);
        assert_eq!(
            per_node[&NodeId(1)],
            [FaultRule::DropTo { peer: NodeId(2) }]
        );
        assert_eq!(
            per_node[&NodeId(2)],
            [FaultRule::DropFrom { peer: NodeId(1) }]
        );
        assert!(per_node[&NodeId(3)].is_empty());
    }

    #[test]
    fn overlapping_rules_are_deduplicated_and_removal_restores_the_rest() {
        let mut rules = BTreeMap::new();
        rules.insert(RuleId(0), SimRule::Isolate { node: NodeId(1) });
        rules.insert(
            RuleId(1),
            SimRule::Partition {
                a: ids(&[1]),
                b: ids(&[2]),
            },
        );
        let (both, _) = transport_rules(&rules, &ids(&[1, 2]), 1);
        assert_eq!(both[&NodeId(1)].len(), 2);
        rules.remove(&RuleId(0));
        let (one, _) = transport_rules(&rules, &ids(&[1, 2]), 1);
        assert_eq!(one, both, "the partition alone cuts the same links");
        rules.clear();
        let (none, _) = transport_rules(&rules, &ids(&[1, 2]), 1);
        assert!(none.values().all(Vec::is_empty));
    }

    #[test]
    fn delay_draws_a_fixed_delay_per_link_from_the_rule_seed() {
        let mut rules = BTreeMap::new();
        rules.insert(
            RuleId(3),
            SimRule::Delay {
                extra: LatencyDist::Uniform {
                    min_ms: 1.0,
                    max_ms: 20.0,
                },
            },
        );
        let (a, _) = transport_rules(&rules, &ids(&[1, 2, 3]), 9);
        let (b, _) = transport_rules(&rules, &ids(&[1, 2, 3]), 9);
        assert_eq!(a, b);
        for r in a.values().flatten() {
            match r {
                FaultRule::DelayTo { delay_ms, .. } => assert!((1..=20).contains(delay_ms)),
                other => panic!("{other}"),
            }
        }
        rules.insert(RuleId(4), SimRule::Duplicate { probability: 0.5 });
        let (_, unsupported) = transport_rules(&rules, &ids(&[1, 2, 3]), 9);
        assert_eq!(unsupported.len(), 1);
    }

    #[test]
    fn local_backend_refuses_what_real_processes_cannot_do() {
        let base = "name = \"t\"\nsystem = \"raft\"\nnodes = 3\nbackend = \"local\"\n";
        let parse =
            |extra: &str| Spec::from_toml_str(&format!("{base}{extra}"), Path::new("t.toml"));
        let spec =
            parse("transport = \"udp\"\n[nemesis]\nfaults = [\"crash\", \"pause\"]\n").unwrap();
        assert_eq!(spec.transport, TransportChoice::Udp);
        for (extra, field) in [
            ("[nemesis]\nfaults = [\"clock-drift\"]\n", "nemesis.faults"),
            ("[nemesis]\nfaults = [\"duplicate\"]\n", "nemesis.faults"),
            (
                "[local]\nstartup_timeout_s = 0\n",
                "local.startup_timeout_s",
            ),
            (
                "[local]\nstorage = { segment_size_bytes = 1 }\n",
                "local.storage.segment_size_bytes",
            ),
        ] {
            match parse(extra) {
                Err(ExperimentError::SpecInvalid { field: f, .. }) => {
                    assert_eq!(f, field, "{extra}")
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
        let swim = Spec::from_toml_str(
            "name = \"t\"\nsystem = \"swim\"\nnodes = 3\nbackend = \"local\"\n",
            Path::new("t.toml"),
        );
        assert!(
            matches!(swim, Err(ExperimentError::SpecInvalid { field, .. }) if field == "backend")
        );
    }

    #[test]
    fn backend_and_transport_names_round_trip() {
        for b in [BackendKind::Sim, BackendKind::Local] {
            assert_eq!(BackendKind::parse(b.name()), Ok(b));
        }
        for t in [
            TransportChoice::Mem,
            TransportChoice::Udp,
            TransportChoice::Tarpc,
        ] {
            assert_eq!(TransportChoice::parse(t.name()), Ok(t));
        }
        assert!(BackendKind::parse("kind").is_err());
        assert!(TransportChoice::parse("quic").is_err());
    }
}

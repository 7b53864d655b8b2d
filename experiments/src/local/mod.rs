//! The `local` backend: the same experiment spec, run against real nodes on this machine
//! in real time instead of the simulator — one more implementation of [`Cluster`].
//!
//! - `transport = "udp"` or `"tarpc"`: one `kvlab node` **process** per node on
//!   127.0.0.1 ([`procs`]), each with a node config written into the run directory
//!   (`nodes/n<i>/node.toml`), its data directory and its log. Crashes are `SIGKILL` and
//!   a restart from the same data directory, pauses are `SIGSTOP` / `SIGCONT`, network
//!   faults are fault rules set through each node's admin endpoint ([`rules`]).
//! - `transport = "mem"`: every node a task of this process over the in-process network
//!   ([`kvlab_server::LocalCluster`], [`mem`]); crashes abort the task, pauses stop its
//!   driver, network faults are the same fault rules.
//! - `backend = "docker"`: one container per node on a private bridge network
//!   ([`docker`]); crashes `docker kill`, pauses `docker pause`, partitions iptables
//!   rules inside the containers' network namespaces, loss and delay the fault rules.
//!
//! The phase driver, workload, nemesis and observers are the very ones the simulator
//! runs: this module replaces the simulator's clock by the wall clock (nanoseconds since
//! the run started, [`RunClock`]) and its network by the clients of the real nodes. An
//! invocation is recorded before the request leaves and a completion when the runner
//! sees the answer, so every recorded interval contains the real one and the checker's
//! verdict stays sound. The nodes' events are read live from their event files
//! ([`events`]), so observers see them during the run.
//!
//! Every process this module starts is stopped by [`Cluster::finish`] or, failing that,
//! when the cluster is dropped ([`procs::ProcessCluster`] kills what is left); a node
//! process also dies with the runner thread that started it (`--exit-with-parent`).
//! Every wait is bounded.
//!
//! **Must never depend on:** the simulator's internals (it shares only the spec types of
//! its fault rules with the nemesis).

pub mod docker;
pub mod events;
pub mod mem;
pub mod procs;
pub mod rules;

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kvlab_server::{NodeStatus, SystemConfig};
use kvlab_sim::{FaultRule as SimRule, RuleId};
use kvlab_transport::FaultRule;
use kvlab_types::{ClientRequest, ClientResponse, NodeId, Time};
use serde::Serialize;
use tokio::sync::mpsc;

use events::EventTail;
pub use events::RunClock;
pub use rules::transport_rules;

use crate::cluster::{BackendReport, Cluster, ClusterOutput, ClusterView, FaultControl};
use crate::error::{ExperimentError, FaultAction, FaultError};
use crate::spec::{BackendKind, Spec, SystemKind, TransportChoice};

/// Bound on one admin status call while the run goes on (a paused process never
/// answers).
pub const STATUS_TIMEOUT_MS: u64 = 300;
/// Bound on setting one node's fault rules.
pub const SET_RULES_TIMEOUT_MS: u64 = 2_000;
/// Bound on waiting, after the drain, for every node to apply the same log prefix
/// before the final statuses are recorded.
pub const CONVERGE_TIMEOUT_MS: u64 = 3_000;
/// How often the nodes' event files are read while the cluster runs.
pub const EVENT_POLL_INTERVAL_MS: u64 = 50;
/// Environment variable naming the `kvlab` executable to start nodes with (default: the
/// running executable).
pub const NODE_EXE_ENV: &str = "KVLAB_NODE_EXE";

/// The system every node runs, from the spec.
pub(crate) fn system_config(spec: &Spec) -> Result<SystemConfig, ExperimentError> {
    Ok(match spec.system {
        SystemKind::Raft => SystemConfig::Raft(spec.raft.clone()),
        SystemKind::Single => SystemConfig::Single(spec.single.clone()),
        SystemKind::AsyncPrimary => SystemConfig::AsyncPrimary(spec.async_primary.clone()),
        SystemKind::Kvlab => SystemConfig::Kvlab(Box::new(spec.kvlab.clone())),
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
        client_request_timeout_ms: spec.server_request_timeout_ms(),
        workers: spec.local.workers,
        ..kvlab_server::ServerOptions::default()
    }
}

/// The running cluster, whichever way it runs.
#[derive(Debug)]
pub(crate) enum LiveCluster {
    /// One `kvlab node` process per node.
    Procs(procs::ProcessCluster),
    /// Every node a task of this process (boxed: it is much larger than the others).
    Mem(Box<mem::MemCluster>),
    /// One container per node (`backend = "docker"`).
    Docker(docker::DockerCluster),
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
            LiveCluster::Docker(c) => c.submit(rt, node, req, tx),
        }
    }

    fn crash(&mut self, rt: &tokio::runtime::Handle, node: NodeId) -> Result<(), String> {
        match self {
            LiveCluster::Procs(c) => c.crash(node),
            LiveCluster::Mem(c) => c.crash(rt, node),
            LiveCluster::Docker(c) => c.crash(node),
        }
    }

    fn restart(&mut self, rt: &tokio::runtime::Handle, node: NodeId) -> Result<(), String> {
        match self {
            LiveCluster::Procs(c) => c.restart(rt, node),
            LiveCluster::Mem(c) => c.restart(rt, node),
            LiveCluster::Docker(c) => c.restart(rt, node),
        }
    }

    fn pause(&mut self, rt: &tokio::runtime::Handle, node: NodeId) -> Result<(), String> {
        match self {
            LiveCluster::Procs(c) => c.signal(node, nix::sys::signal::Signal::SIGSTOP),
            LiveCluster::Mem(c) => c.pause(rt, node),
            LiveCluster::Docker(c) => c.pause(node),
        }
    }

    fn resume(&mut self, rt: &tokio::runtime::Handle, node: NodeId) -> Result<(), String> {
        match self {
            LiveCluster::Procs(c) => c.signal(node, nix::sys::signal::Signal::SIGCONT),
            LiveCluster::Mem(c) => c.resume(rt, node),
            LiveCluster::Docker(c) => c.resume(node),
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
            LiveCluster::Docker(c) => c.set_rules(rt, node, rules),
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
            LiveCluster::Docker(c) => c.status(rt, node, timeout),
        }
    }

    /// When `node` started on the run's clock, where it differs from when the cluster
    /// started (containers start one after the other, each in a good part of a second).
    fn booted_ns(&self, node: NodeId) -> Option<u64> {
        match self {
            LiveCluster::Procs(_) | LiveCluster::Mem(_) => None,
            LiveCluster::Docker(c) => c.booted_ns(node),
        }
    }

    fn events_file(&self, node: NodeId) -> std::path::PathBuf {
        match self {
            LiveCluster::Procs(c) => c.events_file(node),
            LiveCluster::Mem(c) => c.events_file(node),
            LiveCluster::Docker(c) => c.events_file(node),
        }
    }

    fn shutdown(self, rt: &tokio::runtime::Handle) -> Vec<String> {
        match self {
            LiveCluster::Procs(c) => c.shutdown(),
            LiveCluster::Mem(c) => c.shutdown(rt),
            LiveCluster::Docker(c) => c.shutdown(),
        }
    }
}

/// A cluster of real nodes on this machine. See [the module docs](self).
///
/// Errors of fault operations that cannot return one ([`FaultControl::add_rule`]) are
/// collected and reported as warnings ([`ClusterOutput::Warning`]) on the next advance.
#[derive(Debug)]
pub struct LocalCluster {
    backend: BackendKind,
    rt: tokio::runtime::Runtime,
    cluster: Option<LiveCluster>,
    clock: RunClock,
    nodes: Vec<NodeId>,
    seed: u64,
    dir: PathBuf,
    rules: BTreeMap<RuleId, SimRule>,
    next_rule: u64,
    /// The rules each node holds now, as last set (absent: unknown, set again).
    pushed: BTreeMap<NodeId, Vec<FaultRule>>,
    down: BTreeSet<NodeId>,
    /// Joiners not started yet (down, but not restarted by a heal).
    never_started: BTreeSet<NodeId>,
    paused: BTreeSet<NodeId>,
    errors: Vec<String>,
    replies_tx: mpsc::Sender<ClientResponse>,
    replies_rx: mpsc::Receiver<ClientResponse>,
    tails: BTreeMap<NodeId, EventTail>,
    next_event_poll: Instant,
}

impl LocalCluster {
    /// Starts the spec's nodes (`spec.transport` says how), writing their configs, data
    /// and logs under `dir/nodes/`, and returns once every node answers and, for Raft, a
    /// leader is elected (bounded by `local.startup_timeout_s`).
    pub fn start(spec: &Spec, seed: u64, dir: &Path) -> Result<Self, ExperimentError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kvlab-local")
            .enable_all()
            .build()
            .map_err(|e| {
                ExperimentError::Backend(format!("cannot start the tokio runtime: {e}"))
            })?;
        let nodes: Vec<NodeId> = (1..=spec.nodes).map(NodeId).collect();
        let nodes_dir = dir.join("nodes");
        if nodes_dir.exists() {
            // A fresh cluster: data of an earlier run in this directory must not be
            // recovered into this one.
            std::fs::remove_dir_all(&nodes_dir).map_err(|e| ExperimentError::io(&nodes_dir, e))?;
        }
        std::fs::create_dir_all(&nodes_dir).map_err(|e| ExperimentError::io(&nodes_dir, e))?;
        let absent: BTreeSet<NodeId> = spec.absent_nodes().into_iter().collect();
        // Node processes and containers can start a node later; mem tasks cannot.
        let startable_later = matches!(
            spec.transport,
            TransportChoice::Udp | TransportChoice::Tarpc
        );
        if !absent.is_empty() && !startable_later {
            return Err(ExperimentError::Backend(format!(
                "nodes {absent:?} join later (they are not kvlab.initial_members): joins need node processes or containers, --transport udp or tarpc"
            )));
        }
        let clock = RunClock::start();
        let booted_ns = clock.now().as_nanos();
        let cluster = match spec.transport {
            t if spec.backend == BackendKind::Docker => LiveCluster::Docker(
                docker::DockerCluster::start(rt.handle(), spec, seed, t, &nodes_dir, &clock)?,
            ),
            TransportChoice::Mem => LiveCluster::Mem(Box::new(mem::MemCluster::start(
                rt.handle(),
                spec,
                seed,
                &nodes_dir,
            )?)),
            t @ (TransportChoice::Udp | TransportChoice::Tarpc) => LiveCluster::Procs(
                procs::ProcessCluster::start(rt.handle(), spec, seed, t, &nodes_dir)?,
            ),
        };
        let tails = nodes
            .iter()
            .map(|&n| {
                let started_ns = cluster.booted_ns(n).unwrap_or(booted_ns);
                (
                    n,
                    EventTail::from_boot(n, cluster.events_file(n), started_ns),
                )
            })
            .collect();
        let capacity = (spec.workload.clients as usize).saturating_mul(2).max(1024);
        let (replies_tx, replies_rx) = mpsc::channel(capacity);
        let mut c = LocalCluster {
            backend: spec.backend,
            rt,
            cluster: Some(cluster),
            clock,
            nodes,
            seed,
            dir: dir.to_path_buf(),
            rules: BTreeMap::new(),
            next_rule: 0,
            pushed: BTreeMap::new(),
            down: absent.clone(),
            never_started: absent,
            paused: BTreeSet::new(),
            errors: Vec::new(),
            replies_tx,
            replies_rx,
            tails,
            next_event_poll: Instant::now(),
        };
        if spec.system == SystemKind::Raft {
            c.wait_for_leader(Duration::from_secs_f64(spec.local.startup_timeout_s));
        }
        Ok(c)
    }

    fn live(&self) -> &LiveCluster {
        self.cluster
            .as_ref()
            .expect("local backend invariant: the cluster runs until finish")
    }

    fn live_mut(&mut self) -> &mut LiveCluster {
        self.cluster
            .as_mut()
            .expect("local backend invariant: the cluster runs until finish")
    }

    /// Raft needs a leader before it serves: wait for one (bounded) so the measured
    /// phase starts with a working cluster.
    fn wait_for_leader(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.view().leader.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

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
            let handle = self.rt.handle().clone();
            match self.live_mut().set_rules(&handle, node, rules.clone()) {
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

    fn status(&self, node: NodeId, timeout: Duration) -> Option<NodeStatus> {
        if self.down.contains(&node) || self.paused.contains(&node) {
            return None;
        }
        self.live().status(self.rt.handle(), node, timeout)
    }

    /// Moves collected fault errors and new node events into `out`.
    fn collect(&mut self, out: &mut Vec<ClusterOutput>) {
        let at = self.clock.now();
        out.extend(
            self.errors
                .drain(..)
                .map(|detail| ClusterOutput::Warning { at, detail }),
        );
        if Instant::now() >= self.next_event_poll {
            self.next_event_poll = Instant::now() + Duration::from_millis(EVENT_POLL_INTERVAL_MS);
            for tail in self.tails.values_mut() {
                tail.poll(out);
            }
        }
    }

    /// Every node's status once they applied the same log prefix (bounded), the events
    /// they logged last, and the nodes stopped.
    fn stop(&mut self) -> Result<Vec<String>, ExperimentError> {
        let finals = final_statuses(self);
        let Some(cluster) = self.cluster.take() else {
            return Ok(Vec::new());
        };
        let pids = match &cluster {
            LiveCluster::Procs(c) => Some(c.pids()),
            LiveCluster::Mem(_) | LiveCluster::Docker(_) => None,
        };
        let docker = match &cluster {
            LiveCluster::Docker(c) => Some(c.describe()),
            LiveCluster::Procs(_) | LiveCluster::Mem(_) => None,
        };
        let warnings = cluster.shutdown(self.rt.handle());
        let malformed = self.tails.values().map(|t| t.malformed).sum();
        write_nodes_json(
            &self.dir,
            &finals,
            NodesExtra {
                pids: pids.as_deref(),
                docker,
            },
            &warnings,
            malformed,
        )?;
        Ok(warnings)
    }
}

impl FaultControl for LocalCluster {
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

    fn crash(&mut self, node: NodeId) -> Result<(), FaultError> {
        let handle = self.rt.handle().clone();
        self.live_mut()
            .crash(&handle, node)
            .map_err(|e| FaultError::new(FaultAction::Crash, node, e))?;
        self.down.insert(node);
        self.paused.remove(&node);
        self.pushed.remove(&node);
        Ok(())
    }

    fn restart(&mut self, node: NodeId) -> Result<(), FaultError> {
        if let Some(tail) = self.tails.get_mut(&node) {
            tail.restarted(&self.clock);
        }
        let handle = self.rt.handle().clone();
        self.live_mut()
            .restart(&handle, node)
            .map_err(|e| FaultError::new(FaultAction::Restart, node, e))?;
        self.down.remove(&node);
        self.pushed.remove(&node);
        self.push_rules();
        Ok(())
    }

    fn start(&mut self, node: NodeId) -> Result<(), FaultError> {
        if !self.never_started.contains(&node) {
            return Err(FaultError::new(
                FaultAction::Start,
                node,
                "it already started once",
            ));
        }
        self.restart(node)?;
        self.never_started.remove(&node);
        Ok(())
    }

    fn is_started(&self, node: NodeId) -> bool {
        !self.never_started.contains(&node)
    }

    fn pause(&mut self, node: NodeId) -> Result<(), FaultError> {
        let handle = self.rt.handle().clone();
        self.live_mut()
            .pause(&handle, node)
            .map_err(|e| FaultError::new(FaultAction::Pause, node, e))?;
        self.paused.insert(node);
        Ok(())
    }

    fn resume(&mut self, node: NodeId) -> Result<(), FaultError> {
        let handle = self.rt.handle().clone();
        self.live_mut()
            .resume(&handle, node)
            .map_err(|e| FaultError::new(FaultAction::Resume, node, e))?;
        self.paused.remove(&node);
        self.push_rules();
        Ok(())
    }

    fn set_clock_drift(&mut self, node: NodeId, ppm: i64) -> Result<(), FaultError> {
        if ppm == 0 {
            return Ok(());
        }
        Err(FaultError::new(
            FaultAction::SetClockDrift,
            node,
            "real processes read the machine's clock",
        ))
    }
}

impl Cluster for LocalCluster {
    fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    fn now(&self) -> Time {
        self.clock.now()
    }

    fn submit(&mut self, node: NodeId, req: ClientRequest) {
        let tx = self.replies_tx.clone();
        self.live().submit(self.rt.handle(), node, req, tx);
    }

    /// Waits (at most until `deadline`) for replies, and reads the nodes' events every
    /// [`EVENT_POLL_INTERVAL_MS`]; returns as soon as something came.
    fn advance(
        &mut self,
        deadline: Time,
        out: &mut Vec<ClusterOutput>,
    ) -> Result<(), ExperimentError> {
        loop {
            while let Ok(r) = self.replies_rx.try_recv() {
                out.push(ClusterOutput::Reply {
                    at: self.clock.now(),
                    response: r,
                });
            }
            self.collect(out);
            let now = self.clock.now();
            if !out.is_empty() || now >= deadline {
                return Ok(());
            }
            let poll = Duration::from_millis(EVENT_POLL_INTERVAL_MS);
            let wait = deadline.saturating_since(now).min(poll);
            let rx = &mut self.replies_rx;
            if let Ok(Some(r)) = self
                .rt
                .block_on(async { tokio::time::timeout(wait, rx.recv()).await })
            {
                out.push(ClusterOutput::Reply {
                    at: self.clock.now(),
                    response: r,
                });
            }
        }
    }

    fn is_up(&self, node: NodeId) -> bool {
        !self.down.contains(&node)
    }

    /// The leader with the highest term among the nodes that answer (crashed and paused
    /// nodes are not asked).
    fn view(&mut self) -> ClusterView {
        let timeout = Duration::from_millis(STATUS_TIMEOUT_MS);
        let statuses: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|&n| self.status(n, timeout).map(|s| (n, s.protocol)))
            .collect();
        ClusterView::from_statuses(statuses)
    }

    /// Undoes everything, whatever the nemesis did: no rules, every node up and running.
    fn heal_all(&mut self, retired: &BTreeSet<NodeId>) -> Vec<String> {
        self.rules.clear();
        for n in self.paused.clone() {
            if let Err(e) = self.resume(n) {
                self.errors.push(e.to_string());
            }
        }
        for n in self.down.clone() {
            if self.never_started.contains(&n) || retired.contains(&n) {
                continue; // a joiner the run never switched on, or a node gone for good
            }
            if let Err(e) = self.restart(n) {
                self.errors.push(e.to_string());
            }
        }
        self.push_rules();
        std::mem::take(&mut self.errors)
    }

    fn protocol(&self, _node: NodeId) -> Option<&dyn Any> {
        None
    }

    fn finish(&mut self) -> Result<BackendReport, ExperimentError> {
        Ok(BackendReport {
            sim_stats: None,
            warnings: self.stop()?,
        })
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // A run that failed before `finish` still stops every node it started.
        if let Some(cluster) = self.cluster.take() {
            let _ = cluster.shutdown(self.rt.handle());
        }
    }
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

fn final_statuses(control: &LocalCluster) -> FinalStatuses {
    let deadline = Instant::now() + Duration::from_millis(CONVERGE_TIMEOUT_MS);
    loop {
        let statuses: BTreeMap<String, Option<NodeStatus>> = control
            .nodes
            .iter()
            .map(|&n| {
                let s = control.status(n, Duration::from_millis(STATUS_TIMEOUT_MS * 3));
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

/// What `nodes.json` records of how the nodes ran, by backend.
struct NodesExtra<'a> {
    /// Every process id started (node processes).
    pids: Option<&'a [u32]>,
    /// The docker run: id, network, containers, link cuts.
    docker: Option<serde_json::Value>,
}

/// `nodes.json`: final statuses, every process id started (or the docker run), and what
/// went wrong stopping them.
fn write_nodes_json(
    dir: &Path,
    finals: &FinalStatuses,
    extra: NodesExtra<'_>,
    stop_warnings: &[String],
    malformed_event_lines: u64,
) -> Result<(), ExperimentError> {
    #[derive(Serialize)]
    struct NodesJson<'a> {
        converged: bool,
        nodes: &'a BTreeMap<String, Option<NodeStatus>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pids: Option<&'a [u32]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        docker: Option<serde_json::Value>,
        stop_warnings: &'a [String],
        malformed_event_lines: u64,
    }
    let path: PathBuf = dir.join("nodes.json");
    let v = NodesJson {
        converged: finals.converged,
        nodes: &finals.nodes,
        pids: extra.pids,
        docker: extra.docker,
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
            ("[local]\nworkers = 0\n", "local.workers"),
            ("[local]\nworkers = 17\n", "local.workers"),
        ] {
            match parse(extra) {
                Err(ExperimentError::SpecInvalid { field: f, .. }) => {
                    assert_eq!(f, field, "{extra}")
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
        for (backend, extra, field) in [
            ("docker", "transport = \"mem\"\n", "transport"),
            ("kind", "", "backend"),
        ] {
            let text = format!(
                "{}{extra}",
                base.replace("\"local\"", &format!("\"{backend}\""))
            );
            match Spec::from_toml_str(&text, Path::new("t.toml")) {
                Err(ExperimentError::SpecInvalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{backend}: {other:?}"),
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
        for b in [
            BackendKind::Sim,
            BackendKind::Local,
            BackendKind::Docker,
            BackendKind::Kind,
        ] {
            assert_eq!(BackendKind::parse(b.name()), Ok(b));
        }
        for t in [
            TransportChoice::Mem,
            TransportChoice::Udp,
            TransportChoice::Tarpc,
        ] {
            assert_eq!(TransportChoice::parse(t.name()), Ok(t));
        }
        assert!(BackendKind::parse("k8s").is_err());
        assert!(TransportChoice::parse("quic").is_err());
    }
}

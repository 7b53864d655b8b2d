//! Experiment specs: the TOML files under `configs/` parsed into typed, validated structs.
//!
//! Every table refuses unknown fields, so a misspelt knob is an error rather than a
//! silently ignored default. [`Spec::from_toml_str`] parses and validates; its errors
//! name the file, the line and column, and the field.
//!
//! ```toml
//! name = "quickstart"
//! system = "single"
//! nodes = 5
//! seed = 1
//! [time]
//! duration_s = 60
//! liveness_s = 10
//! [workload]
//! clients = 10
//! keys = 8
//! mix = { read = 0.5, write = 0.3, cas = 0.2 }
//! [nemesis]
//! faults = ["partition-halves", "crash", "pause"]
//! ```

use std::path::{Path, PathBuf};

use kvlab_types::TxnFaultPoint;
use serde::{Deserialize, Serialize};

use crate::error::ExperimentError;

pub mod backend;
pub mod ring;
pub mod swim;
mod validate;

pub use backend::{
    BackendKind, DEFAULT_NODE_IMAGE, DockerSpec, KindSpec, LocalSpec, TransportChoice,
};
pub use swim::SwimExperimentSpec;
pub use validate::{MAX_LOCAL_NODES, MAX_LOCAL_TIMEOUT_S};

/// Most nodes a spec may ask for: the nemesis builds pairwise rules, so cost grows with
/// the square of this.
pub const MAX_NODES: u32 = 64;
/// Most members a `system = "swim"` spec may ask for: SWIM alone is cheap per member
/// (constant load), and its experiments are about scale.
pub const MAX_SWIM_NODES: u32 = 10_000;
/// Most workload processes running at once (closed-loop clients or open-loop slots).
pub const MAX_CLIENTS: u32 = 10_000;
/// Most distinct keys a workload may address.
pub const MAX_KEYS: u32 = 1_000_000;
/// Longest simulated phase, in seconds (a day).
pub const MAX_PHASE_S: f64 = 86_400.0;
/// Largest open-loop arrival rate, in operations per simulated second.
pub const MAX_RATE_PER_S: f64 = 1_000_000.0;
/// Largest run seed: TOML integers are signed 64-bit, and `spec.toml` must be able to
/// record the seed a run used.
pub const MAX_SEED: u64 = i64::MAX as u64;
/// Largest clock drift the nemesis may inject, in parts per million (±50%).
pub const MAX_CLOCK_DRIFT_PPM: i64 = 500_000;

/// The largest `nemesis.clock_jump_ms_max`: one minute.
pub const MAX_CLOCK_JUMP_MS: f64 = 60_000.0;

/// Which system the nodes run (defined in kvlab-node, which knows every system).
pub use kvlab_node::SystemKind;

/// A whole experiment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The experiment's name; results go to `results/<name>/`.
    pub name: String,
    /// What the experiment shows, for a person.
    #[serde(default)]
    pub description: String,
    /// The system under test.
    pub system: SystemKind,
    /// Cluster size (node ids `1..=nodes`).
    #[serde(default = "default_nodes")]
    pub nodes: u32,
    /// The run seed; `--seed` overrides it. Every random choice derives from it.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// How long each phase lasts.
    #[serde(default)]
    pub time: TimeSpec,
    /// The clients.
    #[serde(default)]
    pub workload: WorkloadSpec,
    /// The faults.
    #[serde(default)]
    pub nemesis: NemesisSpec,
    /// The checker.
    #[serde(default)]
    pub check: CheckSpec,
    /// The simulated network (latency, loss, …), as `kvlab_sim::NetworkConfig`.
    #[serde(default)]
    pub network: kvlab_sim::NetworkConfig,
    /// The simulated disks, as `kvlab_sim::DiskConfig`.
    #[serde(default)]
    pub disk: kvlab_sim::DiskConfig,
    /// Limits of the simulator itself.
    #[serde(default)]
    pub sim: SimLimits,
    /// Configuration of `system = "single"`.
    #[serde(default)]
    pub single: kvlab_node::baseline::SingleConfig,
    /// Configuration of `system = "async-primary"`.
    #[serde(default)]
    pub async_primary: kvlab_node::baseline::AsyncPrimaryConfig,
    /// Configuration of `system = "raft"`.
    #[serde(default)]
    pub raft: kvlab_node::raft_kv::RaftKvConfig,
    /// Configuration of `system = "kvlab"` (the composed node): `[kvlab]` with its
    /// `[kvlab.ring]`, `[kvlab.meta]`, `[kvlab.membership]`, `[kvlab.scheduler]`,
    /// `[kvlab.snapshot]`, `[kvlab.raft]` and `[kvlab.swim]` tables.
    #[serde(default)]
    pub kvlab: kvlab_node::composed::KvlabConfig,
    /// What a `system = "kvlab"` run's ring must show (bounds on moves, operators,
    /// under-replication).
    #[serde(default)]
    pub ring_experiment: ring::RingExperimentSpec,
    /// Configuration of `system = "swim"`: every member's `kvlab_swim::SwimConfig`.
    #[serde(default)]
    pub swim: kvlab_swim::SwimConfig,
    /// What a `system = "swim"` run measures and which bounds it must meet.
    #[serde(default)]
    pub swim_experiment: SwimExperimentSpec,
    /// Where the nodes run: `sim` (the default) or `local` (real nodes on this machine,
    /// see [`crate::local`]); `kvlab run --backend` overrides it.
    #[serde(default)]
    pub backend: BackendKind,
    /// The transport of `backend = "local"`: `mem`, `udp` or `tarpc` (the default);
    /// `kvlab run --transport` overrides it. The simulator has its own network.
    #[serde(default)]
    pub transport: TransportChoice,
    /// Options of `backend = "local"` (startup and stop bounds, storage).
    #[serde(default)]
    pub local: LocalSpec,
    /// Options of `backend = "docker"` (image, bound on each docker command).
    #[serde(default)]
    pub docker: DockerSpec,
    /// Options of the kind deployment (`kvlab kind render`: namespace, image, limits).
    #[serde(default)]
    pub kind: KindSpec,
    /// A short name for this run in comparison tables and plots. `[[variant]]` sets it
    /// to the variant's `label`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Variants of this experiment: each `[[variant]]` is a partial spec (with a
    /// `label`) laid over the rest of the file; `kvlab run` then runs every variant and
    /// compares them (see [`crate::sweep`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variant: Vec<toml::Table>,
}

fn default_nodes() -> u32 {
    5
}
fn default_seed() -> u64 {
    1
}

/// Phase lengths, in simulated seconds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimeSpec {
    /// The safety phase: workload plus faults.
    pub duration_s: f64,
    /// The liveness phase: every fault healed, crashed nodes restarted, paused nodes
    /// resumed, drift reset; every client must then complete an operation within it.
    pub liveness_s: f64,
}

impl Default for TimeSpec {
    fn default() -> Self {
        TimeSpec {
            duration_s: 60.0,
            liveness_s: 10.0,
        }
    }
}

/// How operations arrive.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadMode {
    /// Each process issues its next operation when the previous one completed (plus
    /// think time): throughput adapts to latency.
    Closed,
    /// Operations arrive at `rate_per_s` (exponential gaps) whatever the latency; an
    /// arrival that finds every process busy is dropped and counted.
    Open,
}

/// How keys are drawn.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDistribution {
    /// Every key equally likely.
    Uniform,
    /// Key `k_i` with probability proportional to `1 / (i+1)^zipf_exponent`.
    Zipfian,
}

/// Relative weights of the operation types (they need not sum to 1).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OpMix {
    /// Weight of reads.
    pub read: f64,
    /// Weight of writes.
    pub write: f64,
    /// Weight of compare-and-sets.
    pub cas: f64,
}

impl Default for OpMix {
    fn default() -> Self {
        OpMix {
            read: 0.5,
            write: 0.3,
            cas: 0.2,
        }
    }
}

/// The clients.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadSpec {
    /// Closed loop: the number of clients. Open loop: the most operations in flight
    /// (arrivals beyond are dropped as `dropped_saturated`).
    pub clients: u32,
    /// Closed or open loop.
    pub mode: LoadMode,
    /// Open loop only: mean arrivals per simulated second.
    pub rate_per_s: f64,
    /// Number of keys `k0 .. k{keys-1}`.
    pub keys: u32,
    /// How keys are drawn.
    pub key_distribution: KeyDistribution,
    /// The zipfian exponent `s` (only with `key_distribution = "zipfian"`).
    pub zipf_exponent: f64,
    /// Operation mix.
    pub mix: OpMix,
    /// A client gives up on an operation after this long and records it as `info`.
    pub timeout_ms: u64,
    /// Closed loop only: pause between a completion and the next invocation.
    pub think_time_ms: u64,
    /// What the clients issue: single-key operations (`kv`, the default) or one-shot
    /// list-append transactions (`txn-list-append`; only `system = "kvlab"` serves
    /// them; the run is checked by the transaction checker).
    #[serde(skip_serializing_if = "WorkloadKind::is_kv")]
    pub kind: WorkloadKind,
    /// Transactions: the fewest micro-ops in one.
    #[serde(skip_serializing_if = "is_default_txn_ops_min")]
    pub txn_ops_min: u32,
    /// Transactions: the most micro-ops in one (at most `MAX_TXN_OPS`; keys are drawn
    /// per micro-op, so a transaction touches at most this many keys).
    #[serde(skip_serializing_if = "is_default_txn_ops_max")]
    pub txn_ops_max: u32,
    /// Transactions: the share of micro-ops that are reads (the rest append).
    #[serde(skip_serializing_if = "is_default_txn_read_fraction")]
    pub txn_read_fraction: f64,
    /// Transactions: how many partitions (vnode groups of `system = "kvlab"`) each
    /// touches: `"any"` (the default: keys drawn freely) or a number `N`, and then every
    /// transaction's keys fall in exactly `N` vnodes (design wave 2 §7, Deneva's
    /// `PART_PER_TXN`; needs `N <= txn_ops_min` and keys in at least `N` vnodes).
    #[serde(skip_serializing_if = "PartitionsPerTxn::is_any")]
    pub partitions_per_txn: PartitionsPerTxn,
}

/// `workload.partitions_per_txn`: `"any"` or a number of partitions.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum PartitionsPerTxn {
    /// Keys drawn from the key distribution, wherever they fall.
    #[default]
    Any,
    /// Exactly this many vnode groups per transaction.
    Exactly(u32),
}

impl PartitionsPerTxn {
    /// Whether it is `"any"`.
    pub fn is_any(&self) -> bool {
        *self == PartitionsPerTxn::Any
    }
}

impl Serialize for PartitionsPerTxn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PartitionsPerTxn::Any => s.serialize_str("any"),
            PartitionsPerTxn::Exactly(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for PartitionsPerTxn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(PartitionsPerTxn::Exactly(n)),
            Raw::Text(t) if t == "any" => Ok(PartitionsPerTxn::Any),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "expected \"any\" or a number of partitions, got \"{t}\""
            ))),
        }
    }
}

/// The name of key index `i` (`k0`, `k1`, …): the keys every workload uses.
pub fn key_name(i: u32) -> String {
    format!("k{i}")
}

/// The most micro-ops a generated transaction may have (the composed node's default
/// `txn.max_keys_per_txn`).
pub const MAX_TXN_OPS: u32 = 16;
const DEFAULT_TXN_OPS_MIN: u32 = 1;
const DEFAULT_TXN_OPS_MAX: u32 = 4;
const DEFAULT_TXN_READ_FRACTION: f64 = 0.5;

fn is_default_txn_ops_min(v: &u32) -> bool {
    *v == DEFAULT_TXN_OPS_MIN
}
fn is_default_txn_ops_max(v: &u32) -> bool {
    *v == DEFAULT_TXN_OPS_MAX
}
fn is_default_txn_read_fraction(v: &f64) -> bool {
    *v == DEFAULT_TXN_READ_FRACTION
}

/// What a workload's clients issue.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// Single-key read, write and cas (`[workload.mix]`), checked for per-key
    /// linearizability.
    #[default]
    Kv,
    /// One-shot transactions of list appends and reads (Elle's list-append), checked
    /// for strict serializability by the transaction checker.
    TxnListAppend,
}

impl WorkloadKind {
    /// Whether it is the single-key workload.
    pub fn is_kv(&self) -> bool {
        *self == WorkloadKind::Kv
    }
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            clients: 10,
            mode: LoadMode::Closed,
            rate_per_s: 100.0,
            keys: 8,
            key_distribution: KeyDistribution::Uniform,
            zipf_exponent: 1.0,
            mix: OpMix::default(),
            timeout_ms: 1000,
            think_time_ms: 0,
            kind: WorkloadKind::Kv,
            txn_ops_min: DEFAULT_TXN_OPS_MIN,
            txn_ops_max: DEFAULT_TXN_OPS_MAX,
            txn_read_fraction: DEFAULT_TXN_READ_FRACTION,
            partitions_per_txn: PartitionsPerTxn::Any,
        }
    }
}

/// One kind of fault the nemesis may inject.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Split the nodes into a random majority and minority.
    PartitionHalves,
    /// Split the nodes into two random non-empty groups of any sizes.
    PartitionRandom,
    /// One node stops hearing every other node, or stops being heard (random direction).
    OneWay,
    /// Cut one node off from everyone.
    Isolate,
    /// Two halves that cannot talk to each other, both connected to one bridge node.
    /// Scheduled with targets: the bridge, then one side (the rest is the other).
    Bridge,
    /// Nodes in a random ring; each talks only to its two neighbours. Scheduled with
    /// targets: the ring's nodes in order (nodes left out keep every link).
    Ring,
    /// Crash one node (losing unsynced writes); restart it when the fault ends.
    Crash,
    /// Pause one node (it keeps its state but does nothing); resume it at the end.
    Pause,
    /// Make one node's clock run fast or slow by a random amount up to
    /// `clock_drift_ppm_max`.
    ClockDrift,
    /// Drop an extra fraction `loss_probability` of all messages.
    Loss,
    /// Deliver an extra fraction `duplicate_probability` of all messages twice.
    Duplicate,
    /// Delay every message by an extra amount uniform in `[0, reorder_window_ms]`, so
    /// that messages overtake each other.
    Reorder,
    /// Crash the current leader (the latest node to report `leader_elected`); restart it
    /// when the fault ends. Skipped when no leader is known.
    CrashLeader,
    /// Cut the current leader off from everyone. Skipped when no leader is known.
    IsolateLeader,
    /// Cut the current leader off from the other nodes *and* make its clock run slow by
    /// `clock_drift_ppm_max` (its own clients still reach it, as with every partition).
    /// The targeted way to break Raft lease reads: the old leader's lease, counted in its
    /// slow ticks, outlasts the election timeout of the majority, which elects a new
    /// leader and commits writes while the old one still serves reads from its lease.
    /// Skipped when no leader is known or its clock is already drifted by another fault.
    IsolateSlowLeader,
    /// Remove a random voter (possibly the leader) from the replication group through
    /// admin commands; when the fault ends it is added back as a learner and promoted
    /// to voter once it caught up. Needs a system with membership (`raft`) and at least
    /// 3 voters; skipped otherwise.
    Membership,
    /// Swap a random voter (possibly the leader) for a spare learner, as an operator
    /// replacing a machine does: the membership reconciler makes the swap either in one
    /// joint configuration (thesis §4.3: `EnterJoint { promote, demote }`, left
    /// automatically or by its own `LeaveJoint`) or one server at a time (add the
    /// spare as a voter, then remove the old voter, then add it back as a learner),
    /// drawn per fault. The old voter is the new spare. Needs `system = "raft"` with
    /// `nemesis.spare_learners >= 1`; skipped on systems without membership. Permanent
    /// in effect (nothing to undo), but drawn like any other fault.
    ReplaceVoter,
    /// Boot a node that has not run yet (a `system = "kvlab"` node outside
    /// `kvlab.initial_members`): it joins through SWIM and the ring rebalances onto it.
    /// Permanent; only in `[[nemesis.schedule]]`.
    Join,
    /// Ask one node to leave for good: it hands every replica away, then leaves SWIM
    /// (`system = "kvlab"`). Clients stop using it. Permanent; only in
    /// `[[nemesis.schedule]]`.
    Drain,
    /// Crash one node and never restart it (a machine lost for good, its disk with it):
    /// the ring must replace its replicas. Clients stop using it. Permanent; only in
    /// `[[nemesis.schedule]]`.
    KillPermanently,
    /// Cut only SWIM traffic between a random majority and minority (`system = "kvlab"`;
    /// Raft, routing and meta traffic still flow): SWIM declares the far side dead, and
    /// the ring must not replace a replica on SWIM's word alone. Simulator only.
    SwimPartition,
    /// Delay only SWIM traffic by an extra 200–800 ms (`system = "kvlab"`): probes time
    /// out, SWIM suspects live nodes. Simulator only.
    SwimDelay,
    /// Cut one random vnode group's Raft traffic between a random majority and minority,
    /// leaving every other group alone (`system = "kvlab"`). Simulator only.
    GroupPartition,
    /// One node's disk fails every fsync (`EIO`) for the fault's duration: the node stops
    /// at its next fsync, as a server must (after a failed fsync the page cache's state
    /// is unknown: "fsyncgate"), losing what it had not synced and never sending what
    /// waited for that fsync; it restarts when the fault ends. Simulator only.
    DiskFsyncError,
    /// Crash one node and flip a bit of a synced write-ahead-log byte that no crash could
    /// have damaged (bit rot); when the fault ends the node restarts, its log's recovery
    /// refuses the damage (`[disk.storage] recovery = "strict"`, the default) and the node
    /// stays down for the rest of the run, as a real one would until an operator
    /// replaces its disk; clients stop using it. Only on replicated systems, and only
    /// while every group keeps a quorum: at most `(nodes - 1) / 2` nodes down for good
    /// on `raft`, `(min(replication_factor, meta voters) - 1) / 2` on `kvlab` (the ring
    /// may not have replaced the first loss's replicas before a second). With `recovery = "truncate-damaged"` the node restarts from its
    /// log cut at the damage instead, which can lose acknowledged data. Simulator only.
    DiskCorrupt,
    /// Step one node's clock forward by a random amount up to `clock_jump_ms_max` (a
    /// VM resumed after a pause or a migration): every timer due in between fires at
    /// once, and deadlines counted in the node's clock (SWIM's suspicion timeouts) expire
    /// early. Instantaneous: nothing to undo. Simulator only.
    ClockJump,
    /// Crash the gateway coordinating a multi-group transaction at a chosen point of
    /// two-phase commit (`nemesis.gateway_kill_point`, or a schedule entry's `point`):
    /// `after-prepare` — the home applied the PREPARE (record `Pending`) and its vote is
    /// on its way, so the coordinator never decides and the participants' resolvers must
    /// abort through the home once the record expires; `after-decision` — the home
    /// applied the Commit and its answer is on its way, so the coordinator never tells
    /// the other participants and their resolvers must learn `Committed` from the home.
    /// The fault waits, from its start until its planned end, for the first
    /// transaction (of the target gateway, if one is named) to reach the point, as the
    /// home's replicas report it (`txn_step` events), and crashes its gateway there;
    /// the node restarts `fault_duration_s` later. Skipped (counted) when no
    /// transaction reaches the point in time. Only `system = "kvlab"`; simulator only.
    KillGateway,
    /// Cut the home group of an in-flight transaction away from the rest, so that its
    /// coordinator cannot reach the decision record: at the first transaction whose
    /// home applies a PREPARE after the fault starts, the home's voters (without the
    /// transaction's gateway, if it is one of them: the home keeps a quorum) are
    /// partitioned from every other node; healed when the fault ends. Skipped (counted)
    /// when no transaction prepares in time. Only `system = "kvlab"`.
    PartitionHomeGroup,
}

impl FaultKind {
    /// The fault's name in specs (`partition-halves`).
    pub fn spec_name(self) -> &'static str {
        match self {
            FaultKind::PartitionHalves => "partition-halves",
            FaultKind::PartitionRandom => "partition-random",
            FaultKind::OneWay => "one-way",
            FaultKind::Isolate => "isolate",
            FaultKind::Bridge => "bridge",
            FaultKind::Ring => "ring",
            FaultKind::Crash => "crash",
            FaultKind::Pause => "pause",
            FaultKind::ClockDrift => "clock-drift",
            FaultKind::Loss => "loss",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Reorder => "reorder",
            FaultKind::CrashLeader => "crash-leader",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::IsolateSlowLeader => "isolate-slow-leader",
            FaultKind::Membership => "membership",
            FaultKind::ReplaceVoter => "replace-voter",
            FaultKind::Join => "join",
            FaultKind::Drain => "drain",
            FaultKind::KillPermanently => "kill-permanently",
            FaultKind::SwimPartition => "swim-partition",
            FaultKind::SwimDelay => "swim-delay",
            FaultKind::GroupPartition => "group-partition",
            FaultKind::DiskFsyncError => "disk-fsync-error",
            FaultKind::DiskCorrupt => "disk-corrupt",
            FaultKind::ClockJump => "clock-jump",
            FaultKind::KillGateway => "kill-gateway",
            FaultKind::PartitionHomeGroup => "partition-home-group",
        }
    }

    /// Whether the fault is never undone (a join, a drain, a node lost for good); such
    /// faults exist only in explicit schedules.
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            FaultKind::Join | FaultKind::Drain | FaultKind::KillPermanently
        )
    }

    /// How many nodes a scheduled fault of this kind may name in `targets` (an empty
    /// list always means "drawn at random"); `None`: the kind picks its own nodes.
    pub fn target_counts(self, nodes: u32) -> Option<std::ops::RangeInclusive<u32>> {
        match self {
            FaultKind::Crash
            | FaultKind::Pause
            | FaultKind::ClockDrift
            | FaultKind::Isolate
            | FaultKind::OneWay
            | FaultKind::Join
            | FaultKind::Drain
            | FaultKind::KillPermanently
            | FaultKind::DiskFsyncError
            | FaultKind::DiskCorrupt
            | FaultKind::ClockJump
            | FaultKind::KillGateway => Some(1..=1),
            // The side cut off from the rest.
            FaultKind::PartitionHalves | FaultKind::PartitionRandom => {
                Some(1..=nodes.saturating_sub(1))
            }
            // The bridge, then one side (the other side is every other node).
            FaultKind::Bridge => Some(2..=nodes.saturating_sub(1)),
            // The ring, in order (each talks only to its neighbours in it).
            FaultKind::Ring => Some(4..=nodes),
            _ => None,
        }
    }

    /// The fewest nodes the fault makes sense with.
    pub fn min_nodes(self) -> u32 {
        match self {
            FaultKind::Crash
            | FaultKind::Pause
            | FaultKind::ClockDrift
            | FaultKind::Loss
            | FaultKind::Duplicate
            | FaultKind::Reorder
            | FaultKind::CrashLeader
            | FaultKind::DiskFsyncError
            | FaultKind::ClockJump => 1,
            // One node down for good must leave a majority.
            FaultKind::DiskCorrupt => 3,
            FaultKind::IsolateLeader | FaultKind::IsolateSlowLeader => 2,
            FaultKind::Membership => 3,
            // Three voters and a spare.
            FaultKind::ReplaceVoter => 4,
            FaultKind::Join | FaultKind::Drain | FaultKind::KillPermanently => 2,
            FaultKind::PartitionHalves
            | FaultKind::PartitionRandom
            | FaultKind::OneWay
            | FaultKind::Isolate
            | FaultKind::SwimPartition
            | FaultKind::SwimDelay
            | FaultKind::GroupPartition
            | FaultKind::KillGateway
            | FaultKind::PartitionHomeGroup => 2,
            FaultKind::Bridge => 3,
            FaultKind::Ring => 4,
        }
    }
}

/// The fault schedule.
///
/// Fault `i` (from 0) starts at `start_after_s + i * interval_s` during the safety phase
/// and lasts `fault_duration_s`; its kind is drawn uniformly from `faults` and its
/// targets at random, all from the nemesis seed. With `fault_duration_s < interval_s`
/// (the default, and required unless `overlap = true`) one fault is active at a time;
/// with `overlap = true` faults may overlap, each undoing only its own rules (a node is
/// never crashed or paused twice at once). Every fault still active when the safety phase
/// ends is undone at the start of the liveness phase.
///
/// `[[nemesis.schedule]]` entries add faults at fixed times on chosen nodes (see
/// [`ScheduledFault`]); they run alongside the random ones, and the permanent kinds
/// (`join`, `drain`, `kill-permanently`) exist only there.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NemesisSpec {
    /// The kinds to draw from; empty means no faults.
    pub faults: Vec<FaultKind>,
    /// Quiet period before the first fault, so the cluster can settle.
    pub start_after_s: f64,
    /// Time between the starts of consecutive faults.
    pub interval_s: f64,
    /// How long each fault lasts.
    pub fault_duration_s: f64,
    /// Allow faults to overlap (`fault_duration_s >= interval_s`).
    pub overlap: bool,
    /// `loss` faults drop this fraction of messages.
    pub loss_probability: f64,
    /// `clock-drift` faults pick a drift uniformly in `±clock_drift_ppm_max`;
    /// `isolate-slow-leader` faults slow the leader's clock by exactly this much.
    pub clock_drift_ppm_max: i64,
    /// `duplicate` faults deliver this fraction of messages twice.
    pub duplicate_probability: f64,
    /// `reorder` faults delay each message by an extra amount uniform in
    /// `[0, reorder_window_ms]`.
    pub reorder_window_ms: f64,
    /// `clock-jump` faults step a clock forward by an amount uniform in
    /// `[1, clock_jump_ms_max]` ms.
    pub clock_jump_ms_max: f64,
    /// Where `kill-gateway` faults crash the coordinator: `after-prepare`,
    /// `after-decision`, or `any` (drawn per fault).
    pub gateway_kill_point: GatewayKillPoint,
    /// Faults at fixed times, on chosen nodes.
    pub schedule: Vec<ScheduledFault>,
    /// How many nodes the membership reconciler (`system = "raft"`) keeps as learners
    /// rather than voters: spares that `replace-voter` swaps in for a voter. At the
    /// start they are the highest-numbered nodes; set `raft.initial_voters` to
    /// `nodes - spare_learners` to start with them as learners already.
    pub spare_learners: u32,
}

/// One fault at a fixed time (`[[nemesis.schedule]]`):
///
/// ```toml
/// [[nemesis.schedule]]
/// at_s = 10.0          # seconds after the safety phase starts
/// kind = "crash"
/// targets = [2]        # optional: drawn at random when empty
/// duration_s = 4.0     # optional: nemesis.fault_duration_s; not for permanent kinds
/// ```
///
/// `targets` names the node of one-node faults, the side cut off by
/// `partition-halves` / `partition-random`, the bridge and then one side of `bridge`, or
/// the order of a `ring`; other kinds take no targets.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduledFault {
    /// When it starts, in seconds after the safety phase starts.
    pub at_s: f64,
    /// What it does.
    pub kind: FaultKind,
    /// The nodes it aims at, by number; empty: drawn at random.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<u32>,
    /// How long it lasts (default `nemesis.fault_duration_s`); permanent kinds take none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// `kill-gateway` only: the 2PC point (default `nemesis.gateway_kill_point`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<TxnFaultPoint>,
}

/// `nemesis.gateway_kill_point`: where `kill-gateway` crashes a coordinator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatewayKillPoint {
    /// Between the home's PREPARE and the decision.
    AfterPrepare,
    /// Between the home's commit and the other participants'.
    AfterDecision,
    /// Either, drawn per fault.
    #[default]
    Any,
}

impl Default for NemesisSpec {
    fn default() -> Self {
        NemesisSpec {
            faults: Vec::new(),
            start_after_s: 5.0,
            interval_s: 5.0,
            fault_duration_s: 3.0,
            overlap: false,
            loss_probability: 0.2,
            clock_drift_ppm_max: 100_000,
            duplicate_probability: 0.2,
            reorder_window_ms: 20.0,
            clock_jump_ms_max: 2_000.0,
            gateway_kill_point: GatewayKillPoint::Any,
            schedule: Vec::new(),
            spare_learners: 0,
        }
    }
}

/// The consistency model a history is checked against.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelName {
    /// One register (all operations on one key): read and write.
    Register,
    /// One register with compare-and-set.
    CasRegister,
    /// A map of independent registers with cas, checked key by key.
    Kv,
}

impl ModelName {
    /// The checker's model.
    pub fn to_checker(self) -> kvlab_checker::ModelKind {
        match self {
            ModelName::Register => kvlab_checker::ModelKind::Register,
            ModelName::CasRegister => kvlab_checker::ModelKind::CasRegister,
            ModelName::Kv => kvlab_checker::ModelKind::Kv,
        }
    }
}

/// The checker's settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckSpec {
    /// Model to check against.
    pub model: ModelName,
    /// Budget of the linearizability search; when it runs out the verdict is `unknown`.
    pub timeout_s: f64,
}

impl Default for CheckSpec {
    fn default() -> Self {
        CheckSpec {
            model: ModelName::Kv,
            timeout_s: 30.0,
        }
    }
}

/// Limits of the simulator.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SimLimits {
    /// Most events the simulator may process in one run before it gives up (a runaway
    /// protocol must not hang the run).
    pub max_events: u64,
    /// What each node's protocol sees as its number of log shards (as a server with
    /// `[local] workers` = this many): the composed node then scopes each vnode's
    /// effects and splits its Raft batches per shard. The simulator keeps one log.
    pub log_shards: usize,
}

impl Default for SimLimits {
    fn default() -> Self {
        SimLimits {
            max_events: kvlab_sim::SimConfig::default().max_events,
            log_shards: 1,
        }
    }
}

/// A value a spec refuses: the dotted path of the field and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field, e.g. `workload.mix.read`.
    pub field: String,
    /// Why the value is refused.
    pub reason: String,
}

/// Converts validated seconds into nanoseconds.
pub fn secs_to_ns(s: f64) -> u64 {
    (s * 1e9).round() as u64
}

impl Spec {
    /// The nodes that do not boot with the cluster (`system = "kvlab"` joiners: every
    /// node outside `kvlab.initial_members`); they stay down until a `join` fault
    /// starts them.
    pub fn absent_nodes(&self) -> Vec<kvlab_types::NodeId> {
        if self.system != SystemKind::Kvlab {
            return Vec::new();
        }
        let all: Vec<kvlab_types::NodeId> = (1..=self.nodes).map(kvlab_types::NodeId).collect();
        let initial = self.kvlab.initial(&all);
        all.into_iter().filter(|n| !initial.contains(n)).collect()
    }

    /// Reads, parses and validates a spec file.
    pub fn load(path: &Path) -> Result<Spec, ExperimentError> {
        let text = std::fs::read_to_string(path).map_err(|source| ExperimentError::SpecRead {
            file: path.to_path_buf(),
            source,
        })?;
        Spec::from_toml_str(&text, path)
    }

    /// Parses and validates spec text; `file` is only used in error messages.
    pub fn from_toml_str(text: &str, file: &Path) -> Result<Spec, ExperimentError> {
        let spec: Spec = toml::from_str(text).map_err(|e| parse_error(text, file, &e))?;
        spec.validate().map_err(
            |FieldError { field, reason }| ExperimentError::SpecInvalid {
                file: file.to_path_buf(),
                field,
                reason,
            },
        )?;
        Ok(spec)
    }

    /// The resolved spec (every default filled in) as TOML, for `spec.toml` in a run
    /// directory: parsing it back gives the same spec.
    pub fn to_toml_string(&self) -> Result<String, ExperimentError> {
        toml::to_string(self).map_err(|e| ExperimentError::Encode {
            path: PathBuf::from("spec.toml"),
            message: e.to_string(),
        })
    }

    /// The simulator configuration this spec asks for.
    pub fn sim_config(&self) -> kvlab_sim::SimConfig {
        kvlab_sim::SimConfig {
            network: self.network.clone(),
            disk: self.disk.clone(),
            max_events: self.sim.max_events,
            log_shards: self.sim.log_shards,
        }
    }
}

/// Turns a toml error into one that names the file, line, column and field.
fn parse_error(text: &str, file: &Path, e: &toml::de::Error) -> ExperimentError {
    let (line, column) = match e.span() {
        Some(span) => line_col(text, span.start),
        None => (1, 1),
    };
    let message = e.message().trim().to_string();
    // For an unknown field, toml's path names the table; the field is in the message.
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split_once('`'))
        .map(|(name, _)| name.to_string());
    let field = match (field_path(e), unknown) {
        (Some(table), Some(name)) => Some(format!("{table}.{name}")),
        (None, Some(name)) => Some(name),
        (path, None) => path,
    };
    ExperimentError::SpecParse {
        file: file.to_path_buf(),
        line,
        column,
        field,
        message,
    }
}

/// 1-based line and column (in characters) of byte offset `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

/// The dotted path of the field a toml error concerns. toml keeps the path private but
/// prints it (`in `a.b``) when the error has no source text attached, so we render a
/// copy without the source and read it back.
fn field_path(e: &toml::de::Error) -> Option<String> {
    let mut bare = e.clone();
    bare.set_input(None);
    let rendered = bare.to_string();
    rendered
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("in `").and_then(|r| r.strip_suffix('`')))
        .map(str::to_string)
        .filter(|s| !s.is_empty())
}

//! `summary.json`: the numbers of one run — operation counts by outcome and type,
//! throughput, latency percentiles, faults, node events, liveness, the checker's report
//! and the simulator's counters.
//!
//! Everything but `wall_time_s` and the checker's own timings (`checker.elapsed_ms`,
//! `checker.slowest_key*`, and, near its budget, what it decided in time) is a function
//! of the run's spec, seed and commit; maps are ordered.

use std::collections::BTreeMap;

use serde::Serialize;

pub use crate::op_stats::{LatencyStats, OpStats, OpStatsBuilder, OutcomeCounts};

use crate::workload::LivenessReport;

/// Counts of all operations, plus open-loop arrivals that were never invoked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OpCounts {
    /// Invocations.
    pub total: u64,
    /// Completed and took effect.
    pub ok: u64,
    /// Surely did not take effect.
    pub fail: u64,
    /// May or may not have taken effect.
    pub info: u64,
    /// Open-loop arrivals dropped because every process was busy.
    pub dropped_saturated: u64,
}

/// Faults the nemesis injected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    /// Faults injected.
    pub injected: u64,
    /// By kind (`partition_halves`, `crash`, …).
    pub by_kind: BTreeMap<String, u64>,
    /// Planned faults skipped because no node was eligible (or, for a transaction
    /// fault, no transaction reached its point in time).
    pub skipped: u64,
    /// Skipped faults by kind.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped_by_kind: BTreeMap<String, u64>,
    /// Nodes whose storage refused to recover at a restart (a `disk-corrupt` fault's
    /// damage found), retired for the rest of the run.
    pub refused_to_start: u64,
}

/// The whole of `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The spec's name.
    pub experiment: String,
    /// The run's label in comparisons (a `[[variant]]`'s label), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The run directory's name.
    pub run_id: String,
    /// The run seed.
    pub seed: u64,
    /// The system under test.
    pub system: String,
    /// Where the nodes ran (`sim`).
    pub backend: String,
    /// How they talked (`sim`).
    pub transport: String,
    /// Cluster size.
    pub nodes: u32,
    /// What the run measured: `kv` (a client history, checked), `raft-invariants`,
    /// `swim`. Reports and tables show what is listed here.
    pub measured: Vec<String>,
    /// Simulated seconds of workload (safety plus liveness phase).
    pub duration_s: f64,
    /// Simulated seconds of the safety phase (faults on).
    pub safety_s: f64,
    /// Simulated seconds of the liveness phase (faults healed, progress required).
    pub liveness_s: f64,
    /// The overall verdict: `valid`, `invalid`, `unknown` or `liveness-failed`.
    pub verdict: String,
    /// Operation counts by outcome.
    pub ops: OpCounts,
    /// Operation counts by type and outcome.
    pub ops_by_f: BTreeMap<String, OutcomeCounts>,
    /// `ok` operations per simulated second over `duration_s`.
    pub throughput_ok_per_s: f64,
    /// Latency percentiles of `ok` operations, overall and by type.
    pub latency_ms: BTreeMap<String, LatencyStats>,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Node events by kind (`leader_elected`, …).
    pub node_events: BTreeMap<String, u64>,
    /// The liveness phase.
    pub liveness: LivenessReport,
    /// Workload counters (late replies, malformed replies).
    pub workload: crate::workload::WorkloadCounters,
    /// The checker's report.
    pub checker: serde_json::Value,
    /// The transaction checker's verdict and the run's transactions, for a
    /// transactional workload (next to `checker`, which then has no single-key
    /// operations to check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<crate::isolation::IsolationSummary>,
    /// The simulator's counters.
    pub sim: serde_json::Value,
    /// `system = "swim"`: failure-detection latencies, false positives, load (see
    /// [`crate::observe::swim`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swim: Option<crate::observe::swim::SwimSummary>,
    /// `system = "kvlab"`: operators, data moved, replicas per node, leaderless time,
    /// under-replication (see [`crate::observe::ring`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring: Option<crate::observe::ring::RingSummary>,
    /// A transactional run (`system = "kvlab"`): two-phase commit's in-doubt times,
    /// coordinator recovery after gateway crashes, resolver invocations (see
    /// [`crate::observe::txn`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub txn_recovery: Option<crate::observe::txn::TxnRecoverySummary>,
    /// The safety invariant that broke during the simulation (verdict
    /// `invariant_violated`): which, at which node, term and index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invariant_violation: Option<String>,
    /// Real seconds the run took (the only non-deterministic field).
    pub wall_time_s: f64,
}

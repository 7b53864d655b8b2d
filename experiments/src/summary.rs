//! `summary.json`: the numbers of one run — operation counts by outcome and type,
//! throughput, latency percentiles, faults, node events, liveness, the checker's report
//! and the simulator's counters.
//!
//! Everything but `wall_time_s` and the checker's own timings (`checker.elapsed_ms`,
//! `checker.slowest_key*`, and, near its budget, what it decided in time) is a function
//! of the run's spec, seed and commit; maps are ordered.

use std::collections::BTreeMap;

use kvlab_checker::history::{EventType, HistoryEvent};
use serde::Serialize;

use crate::workload::LivenessReport;

/// Counts of operations by outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    /// Invocations.
    pub total: u64,
    /// Completed and took effect.
    pub ok: u64,
    /// Surely did not take effect.
    pub fail: u64,
    /// May or may not have taken effect (timeouts, indeterminate errors).
    pub info: u64,
}

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

/// Latency percentiles of `ok` operations, in milliseconds (nearest rank).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencyStats {
    /// Number of `ok` operations measured.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl LatencyStats {
    /// Percentiles of `latencies_ms` (any order). All zero when empty.
    pub fn from_samples(mut latencies_ms: Vec<f64>) -> Self {
        if latencies_ms.is_empty() {
            return LatencyStats::default();
        }
        latencies_ms.sort_by(f64::total_cmp);
        let n = latencies_ms.len();
        let rank = |q: f64| {
            let r = (q * n as f64).ceil() as usize;
            latencies_ms[r.clamp(1, n) - 1]
        };
        LatencyStats {
            count: n as u64,
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: latencies_ms[n - 1],
        }
    }
}

/// Operation statistics derived from a history alone.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OpStats {
    /// All operations by outcome.
    pub counts: OutcomeCounts,
    /// By operation type (`read`, `write`, `cas`).
    pub by_f: BTreeMap<String, OutcomeCounts>,
    /// Latency of `ok` operations: `all` and by type.
    pub latency_ms: BTreeMap<String, LatencyStats>,
    /// Invocations that never completed in the history.
    pub unfinished: u64,
}

impl OpStats {
    /// Pairs each completion with its process's pending invocation and counts.
    pub fn from_history(history: &[HistoryEvent]) -> Self {
        let mut stats = OpStats::default();
        let mut pending: BTreeMap<u64, &HistoryEvent> = BTreeMap::new();
        let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for e in history {
            if e.kind == EventType::Invoke {
                stats.counts.total += 1;
                stats.by_f.entry(e.f.name().to_string()).or_default().total += 1;
                pending.insert(e.process, e);
                continue;
            }
            let Some(inv) = pending.remove(&e.process) else {
                continue;
            };
            let f = inv.f.name().to_string();
            let per_f = stats.by_f.entry(f.clone()).or_default();
            match e.kind {
                EventType::Ok => {
                    stats.counts.ok += 1;
                    per_f.ok += 1;
                    let ms = e.time_ns.saturating_sub(inv.time_ns) as f64 / 1e6;
                    samples.entry("all".into()).or_default().push(ms);
                    samples.entry(f).or_default().push(ms);
                }
                EventType::Fail => {
                    stats.counts.fail += 1;
                    per_f.fail += 1;
                }
                EventType::Info => {
                    stats.counts.info += 1;
                    per_f.info += 1;
                }
                EventType::Invoke => {}
            }
        }
        stats.unfinished = pending.len() as u64;
        for name in ["all", "read", "write", "cas"] {
            samples.entry(name.into()).or_default();
        }
        stats.latency_ms = samples
            .into_iter()
            .map(|(k, v)| (k, LatencyStats::from_samples(v)))
            .collect();
        stats
    }
}

/// Faults the nemesis injected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    /// Faults injected.
    pub injected: u64,
    /// By kind (`partition_halves`, `crash`, …).
    pub by_kind: BTreeMap<String, u64>,
    /// Planned faults skipped because no node was eligible.
    pub skipped: u64,
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
    /// The simulator's counters.
    pub sim: serde_json::Value,
    /// `system = "swim"`: failure-detection latencies, false positives, load (see
    /// [`crate::observe::swim`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swim: Option<crate::observe::swim::SwimSummary>,
    /// The safety invariant that broke during the simulation (verdict
    /// `invariant_violated`): which, at which node, term and index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invariant_violation: Option<String>,
    /// Real seconds the run took (the only non-deterministic field).
    pub wall_time_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvlab_checker::history::OpFn;

    fn ev(time_ns: u64, process: u64, kind: EventType, f: OpFn) -> HistoryEvent {
        HistoryEvent {
            index: 0,
            time_ns,
            process,
            kind,
            f,
            key: Some("k0".into()),
            value: serde_json::Value::Null,
            node: None,
            error: None,
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let s = LatencyStats::from_samples((1..=100).map(f64::from).collect());
        assert_eq!(
            (s.count, s.p50, s.p90, s.p99, s.max),
            (100, 50.0, 90.0, 99.0, 100.0)
        );
        let one = LatencyStats::from_samples(vec![7.0]);
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
        assert_eq!(LatencyStats::from_samples(vec![]).count, 0);
    }

    #[test]
    fn op_stats_pair_completions_with_invocations_per_process() {
        let h = vec![
            ev(0, 0, EventType::Invoke, OpFn::Write),
            ev(1_000_000, 1, EventType::Invoke, OpFn::Read),
            ev(3_000_000, 0, EventType::Ok, OpFn::Write),
            ev(4_000_000, 1, EventType::Info, OpFn::Read),
            ev(5_000_000, 2, EventType::Invoke, OpFn::Cas),
            ev(6_000_000, 2, EventType::Fail, OpFn::Cas),
            ev(7_000_000, 3, EventType::Invoke, OpFn::Read),
        ];
        let s = OpStats::from_history(&h);
        assert_eq!(
            s.counts,
            OutcomeCounts {
                total: 4,
                ok: 1,
                fail: 1,
                info: 1
            }
        );
        assert_eq!(s.unfinished, 1);
        assert_eq!(s.by_f["read"].info, 1);
        assert_eq!(s.by_f["cas"].fail, 1);
        assert_eq!(s.latency_ms["write"].p50, 3.0);
        assert_eq!(s.latency_ms["all"].count, 1);
        assert_eq!(s.latency_ms["read"].count, 0);
    }
}

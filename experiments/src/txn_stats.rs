//! Commit latency of a transactional run, split into the coordinator's phases and
//! grouped by the number of partitions (vnode groups) a transaction touched (design
//! wave 2 §5.2).
//!
//! Every committed transaction's reply carries its [`TxnTiming`] (typed, measured by
//! the gateway's coordinator); the workload keeps one [`TxnPhaseSample`] per committed
//! transaction with the client's own latency next to it, and [`TxnCommitStats::new`]
//! turns them into percentiles by partitions touched: `1` (1PC), `2`, `3` and `4+`.
//!
//! What the phases mean (see [`TxnTiming`]): for 2PC, *prepare* is the coordinator's
//! start → the last YES vote (every participant's PREPARE applied in its group), and
//! *decide* is that → the home group applied `Committed`; a 1PC transaction's one entry
//! counts as its prepare, and its decide is 0. *Total* is the client's latency, invoke
//! → reply, so `prepare + decide <= total` for every sample (the difference is the trip
//! to and from the gateway).

use std::collections::BTreeMap;

use kvlab_types::TxnTiming;
use serde::Serialize;

use crate::op_stats::LatencyStats;

/// One committed transaction: its coordinator's phases and the client's latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnPhaseSample {
    /// The phases, from the reply.
    pub timing: TxnTiming,
    /// The client's latency (invoke → reply), nanoseconds.
    pub total_ns: u64,
}

/// Latency percentiles of one partition count, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PhaseLatency {
    /// The client's latency, invoke → reply.
    pub total: LatencyStats,
    /// The prepare phase at the coordinator.
    pub prepare: LatencyStats,
    /// The decide phase at the coordinator (all zero for 1PC).
    pub decide: LatencyStats,
}

/// `summary.json`'s commit numbers of a transactional run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TxnCommitStats {
    /// `aborted / (committed + aborted)` over the workload's transactions (the one-key
    /// final reads after the run left out): the share of decided transactions that
    /// aborted (0 when none is).
    pub abort_rate: f64,
    /// Committed transactions of the workload (final reads left out) per second over
    /// the run (safety plus liveness phase).
    pub goodput_per_s: f64,
    /// Latency of committed transactions by partitions touched: `1` (1PC), `2`, `3`,
    /// `4+`.
    pub latency_ms_by_partitions: BTreeMap<String, PhaseLatency>,
    /// Samples that break the split: `prepare + decide > total`, or a 1PC transaction
    /// with a decide phase. 0 unless the timings are wrong.
    pub split_inconsistent: u64,
}

/// The bucket of a transaction that touched `groups` partitions.
pub fn partitions_bucket(groups: u32) -> String {
    if groups >= 4 {
        "4+".into()
    } else {
        groups.to_string()
    }
}

impl TxnCommitStats {
    /// Abort rate, goodput and the phase percentiles of `samples` (the committed
    /// transactions of a run `duration_s` long that had `aborted` decided aborts).
    pub fn new(samples: &[TxnPhaseSample], aborted: usize, duration_s: f64) -> Self {
        let mut by: BTreeMap<String, [Vec<f64>; 3]> = BTreeMap::new();
        let ms = |ns: u64| ns as f64 / 1e6;
        let mut split_inconsistent = 0;
        for s in samples {
            let t = s.timing;
            let phases = t.prepare_ns.saturating_add(t.decide_ns);
            if phases > s.total_ns || (t.groups <= 1 && t.decide_ns > 0) {
                split_inconsistent += 1;
            }
            let b = by.entry(partitions_bucket(s.timing.groups)).or_default();
            b[0].push(ms(s.total_ns));
            b[1].push(ms(s.timing.prepare_ns));
            b[2].push(ms(s.timing.decide_ns));
        }
        let latency_ms_by_partitions = by
            .into_iter()
            .map(|(k, [total, prepare, decide])| {
                let l = PhaseLatency {
                    total: LatencyStats::from_samples(total),
                    prepare: LatencyStats::from_samples(prepare),
                    decide: LatencyStats::from_samples(decide),
                };
                (k, l)
            })
            .collect();
        let decided = samples.len() + aborted;
        TxnCommitStats {
            abort_rate: if decided == 0 {
                0.0
            } else {
                aborted as f64 / decided as f64
            },
            goodput_per_s: if duration_s > 0.0 {
                samples.len() as f64 / duration_s
            } else {
                0.0
            },
            latency_ms_by_partitions,
            split_inconsistent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(groups: u32, prepare_ms: u64, decide_ms: u64, total_ms: u64) -> TxnPhaseSample {
        TxnPhaseSample {
            timing: TxnTiming {
                groups,
                prepare_ns: prepare_ms * 1_000_000,
                decide_ns: decide_ms * 1_000_000,
            },
            total_ns: total_ms * 1_000_000,
        }
    }

    #[test]
    fn samples_are_grouped_by_partitions_with_four_and_more_together() {
        let samples = [
            sample(1, 2, 0, 3),
            sample(2, 4, 3, 8),
            sample(2, 6, 5, 12),
            sample(4, 9, 4, 14),
            sample(7, 11, 4, 16),
        ];
        let s = TxnCommitStats::new(&samples, 15, 2.0);
        assert_eq!((s.goodput_per_s, s.abort_rate), (2.5, 0.75));
        let keys: Vec<&str> = s
            .latency_ms_by_partitions
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["1", "2", "4+"]);
        let one = &s.latency_ms_by_partitions["1"];
        assert_eq!(
            (one.prepare.p50, one.decide.max, one.total.p50),
            (2.0, 0.0, 3.0)
        );
        let two = &s.latency_ms_by_partitions["2"];
        assert_eq!(
            (two.prepare.count, two.prepare.max, two.decide.max),
            (2, 6.0, 5.0)
        );
        assert_eq!(s.latency_ms_by_partitions["4+"].total.count, 2);
        assert_eq!(s.split_inconsistent, 0);
        let bad = [sample(2, 5, 5, 9), sample(1, 1, 1, 5)];
        assert_eq!(TxnCommitStats::new(&bad, 0, 1.0).split_inconsistent, 2);
        assert_eq!(TxnCommitStats::new(&[], 0, 0.0).goodput_per_s, 0.0);
    }
}

//! Operation statistics of a history: counts by outcome and type, latency percentiles of
//! `ok` operations. Built one event at a time ([`OpStatsBuilder`]), so a history the
//! runner streams to disk needs no copy in memory.

use std::collections::BTreeMap;

use kvlab_checker::history::{EventType, HistoryEvent, OpFn};
use serde::Serialize;

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
        let mut b = OpStatsBuilder::default();
        for e in history {
            b.add(e);
        }
        b.finish()
    }
}

/// [`OpStats`] built one event at a time, so a history streamed to disk needs no copy in
/// memory: it holds the open invocation of each process and one latency sample per `ok`
/// operation (and type).
#[derive(Clone, Debug, Default)]
pub struct OpStatsBuilder {
    stats: OpStats,
    /// Per process: the open invocation's time and operation type.
    pending: BTreeMap<u64, (u64, OpFn)>,
    samples: BTreeMap<&'static str, Vec<f64>>,
}

impl OpStatsBuilder {
    /// Takes one history event into account (in history order).
    pub fn add(&mut self, e: &HistoryEvent) {
        let stats = &mut self.stats;
        if e.kind == EventType::Invoke {
            stats.counts.total += 1;
            stats.by_f.entry(e.f.name().to_string()).or_default().total += 1;
            self.pending.insert(e.process, (e.time_ns, e.f));
            return;
        }
        let Some((invoked_ns, f)) = self.pending.remove(&e.process) else {
            return;
        };
        let per_f = stats.by_f.entry(f.name().to_string()).or_default();
        match e.kind {
            EventType::Ok => {
                stats.counts.ok += 1;
                per_f.ok += 1;
                let ms = e.time_ns.saturating_sub(invoked_ns) as f64 / 1e6;
                self.samples.entry("all").or_default().push(ms);
                self.samples.entry(f.name()).or_default().push(ms);
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

    /// Operations invoked so far.
    pub fn operations(&self) -> u64 {
        self.stats.counts.total
    }

    /// The statistics of every event added.
    pub fn finish(mut self) -> OpStats {
        self.stats.unfinished = self.pending.len() as u64;
        for name in ["all", "read", "write", "cas"] {
            self.samples.entry(name).or_default();
        }
        self.stats.latency_ms = self
            .samples
            .into_iter()
            .map(|(k, v)| (k.to_string(), LatencyStats::from_samples(v)))
            .collect();
        self.stats
    }
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

//! Numbers derived from operations: latency percentiles, the choice of points to draw when
//! a history is too long to draw them all, and completions per time bucket.

use kvlab_checker::history::OpFn;

use crate::data::{Op, Outcome};

/// The most operations the latency scatter plot draws; longer histories are downsampled
/// (and the plot and report say so).
pub const MAX_LATENCY_POINTS_DRAWN: usize = 20_000;

/// The most points one latency CDF line is drawn with.
pub(crate) const MAX_CDF_POINTS_PER_LINE: usize = 1_000;

/// The most buckets the throughput plot uses; the bucket width is the smallest round
/// width that stays under it (so a run shows 40 to 100 buckets while it lasts under 100 min).
pub(crate) const MAX_THROUGHPUT_BUCKETS: usize = 100;

/// Bucket widths the throughput plot chooses from, in seconds, smallest first.
const THROUGHPUT_BUCKET_WIDTHS_S: [f64; 12] = [
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];

/// Latency percentiles of a set of operations, in ms.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) struct LatencyStats {
    /// How many operations.
    pub(crate) count: u64,
    /// Median.
    pub(crate) p50_ms: f64,
    /// 90th percentile.
    pub(crate) p90_ms: f64,
    /// 99th percentile.
    pub(crate) p99_ms: f64,
    /// Slowest.
    pub(crate) max_ms: f64,
}

impl LatencyStats {
    /// Percentiles (nearest rank) of `latencies_ms`; `None` when it is empty.
    pub(crate) fn of(mut latencies_ms: Vec<f64>) -> Option<LatencyStats> {
        if latencies_ms.is_empty() {
            return None;
        }
        latencies_ms.sort_by(f64::total_cmp);
        Some(LatencyStats {
            count: latencies_ms.len() as u64,
            p50_ms: percentile_nearest_rank(&latencies_ms, 0.50),
            p90_ms: percentile_nearest_rank(&latencies_ms, 0.90),
            p99_ms: percentile_nearest_rank(&latencies_ms, 0.99),
            max_ms: latencies_ms[latencies_ms.len() - 1],
        })
    }
}

/// The nearest-rank percentile `q` (0..=1) of a sorted, non-empty slice.
pub(crate) fn percentile_nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latency percentiles of the `ok` operations, overall (`"all"`) and per function present,
/// in a fixed order: all, read, write, cas, delete, txn.
pub(crate) fn ok_latency_by_fn(ops: &[Op]) -> Vec<(String, LatencyStats)> {
    let mut rows = Vec::new();
    let all: Vec<f64> = ops
        .iter()
        .filter(|op| op.outcome == Outcome::Ok)
        .map(|op| op.latency_ms(0))
        .collect();
    if let Some(stats) = LatencyStats::of(all) {
        rows.push(("all".to_string(), stats));
    }
    for f in ALL_FNS {
        let of_f: Vec<f64> = ops
            .iter()
            .filter(|op| op.outcome == Outcome::Ok && op.f == f)
            .map(|op| op.latency_ms(0))
            .collect();
        if let Some(stats) = LatencyStats::of(of_f) {
            rows.push((f.name().to_string(), stats));
        }
    }
    rows
}

/// Every operation function, in the order tables and legends list them.
pub(crate) const ALL_FNS: [OpFn; 5] = [OpFn::Read, OpFn::Write, OpFn::Cas, OpFn::Delete, OpFn::Txn];

/// Chooses which operations the latency plot draws, at most `bound` of them, in
/// ascending index order. Every operation is kept when they fit. Otherwise, so that the
/// picture keeps what matters without distorting the mix of ok and fail: the `info`
/// operations (rare and the ones a reader looks for; up to a quarter of the bound, evenly
/// spread), the slowest operation of each of a quarter-bound's worth of time buckets (so
/// latency spikes survive), and an even stride over the rest (ok and fail alike, so
/// their proportions hold) to fill the bound.
pub(crate) fn downsample_latency_points(ops: &[Op], run_end_ns: u64, bound: usize) -> Vec<usize> {
    if ops.len() <= bound {
        return (0..ops.len()).collect();
    }
    let mut keep = vec![false; ops.len()];
    let mut kept = 0usize;
    let quarter = (bound / 4).max(1);

    let info: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].outcome == Outcome::Info)
        .collect();
    for i in even_stride(&info, quarter) {
        if !keep[i] {
            keep[i] = true;
            kept += 1;
        }
    }

    let span_ns = run_end_ns.max(1);
    let mut slowest_per_bucket: Vec<Option<usize>> = vec![None; quarter];
    for (i, op) in ops.iter().enumerate() {
        let bucket = ((op.invoke_ns as u128 * quarter as u128) / (span_ns as u128 + 1)) as usize;
        let slot = &mut slowest_per_bucket[bucket.min(quarter - 1)];
        let slower = slot.is_none_or(|j| op.latency_ms(run_end_ns) > ops[j].latency_ms(run_end_ns));
        if slower {
            *slot = Some(i);
        }
    }
    for i in slowest_per_bucket.into_iter().flatten() {
        if !keep[i] {
            keep[i] = true;
            kept += 1;
        }
    }

    let rest: Vec<usize> = (0..ops.len()).filter(|&i| !keep[i]).collect();
    for i in even_stride(&rest, bound.saturating_sub(kept)) {
        keep[i] = true;
    }
    (0..ops.len()).filter(|&i| keep[i]).collect()
}

/// At most `n` items of `items`, evenly spread, first one included.
fn even_stride(items: &[usize], n: usize) -> Vec<usize> {
    if items.len() <= n {
        return items.to_vec();
    }
    (0..n).map(|k| items[k * items.len() / n]).collect()
}

/// Completions counted per time bucket.
#[derive(Clone, Debug)]
pub(crate) struct Throughput {
    /// The bucket width in seconds.
    pub(crate) bucket_s: f64,
    /// Per bucket: completions with outcome ok, fail, info (indexed like `Outcome::ALL`).
    pub(crate) counts: Vec<[u64; 3]>,
}

/// Counts completions (not invokes; operations that never completed are not counted) per
/// bucket, with the smallest round bucket width that keeps the run within
/// `MAX_THROUGHPUT_BUCKETS` buckets.
pub(crate) fn throughput(ops: &[Op], run_end_ns: u64) -> Throughput {
    let run_s = (run_end_ns as f64 / 1e9).max(1e-3);
    let bucket_s = THROUGHPUT_BUCKET_WIDTHS_S
        .iter()
        .copied()
        .find(|w| run_s / w <= MAX_THROUGHPUT_BUCKETS as f64)
        .unwrap_or(run_s / MAX_THROUGHPUT_BUCKETS as f64);
    let n = ((run_s / bucket_s).ceil() as usize).clamp(1, MAX_THROUGHPUT_BUCKETS + 1);
    let mut counts = vec![[0u64; 3]; n];
    for op in ops {
        let Some(done_ns) = op.complete_ns else {
            continue;
        };
        let bucket = ((done_ns as f64 / 1e9) / bucket_s) as usize;
        let slot = outcome_slot(op.outcome);
        counts[bucket.min(n - 1)][slot] += 1;
    }
    Throughput { bucket_s, counts }
}

/// The index of an outcome in `Outcome::ALL`.
pub(crate) fn outcome_slot(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Ok => 0,
        Outcome::Fail => 1,
        Outcome::Info => 2,
    }
}

/// Points of a CDF of `latencies_ms` (unsorted): (latency, fraction of operations up to
/// this one counted at mid-rank, `(i + 0.5) / n`, so that no point sits at exactly 0 or 1
/// and a tail-percentile axis can show the slowest one). At most about
/// `MAX_CDF_POINTS_PER_LINE` points are kept, chosen so that neither axis of the CDF plot
/// (log latency, tail percentile `-log10(1 - p)`) has a gap wider than its range divided
/// by half that bound: the tail, where operations are few, keeps all its points.
pub(crate) fn cdf_points(mut latencies_ms: Vec<f64>) -> Vec<(f64, f64)> {
    latencies_ms.sort_by(f64::total_cmp);
    let n = latencies_ms.len();
    if n == 0 {
        return Vec::new();
    }
    let mid_rank = |i: usize| (i as f64 + 0.5) / n as f64;
    let tail = |i: usize| -(1.0 - mid_rank(i)).log10();
    let log_x = |i: usize| latencies_ms[i].max(1e-9).log10();
    let half = (MAX_CDF_POINTS_PER_LINE / 2) as f64;
    let tail_step = (tail(n - 1) - tail(0)) / half;
    let x_step = (log_x(n - 1) - log_x(0)) / half;
    let mut points = vec![(latencies_ms[0], mid_rank(0))];
    let mut last = 0;
    for (i, latency_ms) in latencies_ms.iter().enumerate().skip(1) {
        let far = tail(i) - tail(last) >= tail_step || log_x(i) - log_x(last) >= x_step;
        if far || i == n - 1 {
            points.push((*latency_ms, mid_rank(i)));
            last = i;
        }
    }
    points
}

/// The largest of 1, 2, 5 times a power of ten at or below `v` (> 0).
pub(crate) fn nice_floor(v: f64) -> f64 {
    let decade = 10f64.powf(v.log10().floor());
    [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|x| *x <= v * (1.0 + 1e-9))
        .unwrap_or(decade)
}

/// The smallest of 1, 2, 5 times a power of ten at or above `v` (> 0).
pub(crate) fn nice_ceil(v: f64) -> f64 {
    let decade = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|x| *x >= v * (1.0 - 1e-9))
        .unwrap_or(10.0 * decade)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(invoke_ms: u64, latency_ms: u64, outcome: Outcome) -> Op {
        Op {
            f: OpFn::Read,
            process: 0,
            index: 0,
            key: None,
            node: None,
            value: serde_json::Value::Null,
            error: None,
            invoke_ns: invoke_ms * 1_000_000,
            complete_ns: Some((invoke_ms + latency_ms) * 1_000_000),
            outcome,
        }
    }

    #[test]
    fn nearest_rank_percentiles_of_one_to_hundred() {
        let stats = LatencyStats::of((1..=100).map(f64::from).collect()).expect("non-empty");
        assert_eq!(stats.count, 100);
        assert_eq!(stats.p50_ms, 50.0);
        assert_eq!(stats.p90_ms, 90.0);
        assert_eq!(stats.p99_ms, 99.0);
        assert_eq!(stats.max_ms, 100.0);
        assert!(LatencyStats::of(Vec::new()).is_none());
    }

    #[test]
    fn short_history_is_drawn_whole() {
        let ops: Vec<Op> = (0..10).map(|i| op(i, 1, Outcome::Ok)).collect();
        assert_eq!(
            downsample_latency_points(&ops, 20_000_000, 100),
            (0..10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn downsampling_respects_the_bound_and_keeps_spikes_and_infos() {
        let mut ops: Vec<Op> = (0..50_000).map(|i| op(i, 1, Outcome::Ok)).collect();
        ops[31_337] = op(31_337, 5_000, Outcome::Ok);
        ops[7] = op(7, 2, Outcome::Info);
        for i in (100..50_000).step_by(10) {
            ops[i] = op(i as u64, 1, Outcome::Fail);
        }
        let kept = downsample_latency_points(&ops, 60_000_000_000, 1_000);
        assert!(kept.len() <= 1_000, "kept {}", kept.len());
        assert!(kept.len() >= 900, "kept only {}", kept.len());
        assert!(kept.contains(&31_337), "the latency spike was dropped");
        assert!(kept.contains(&7), "the info was dropped");
        let fails = kept
            .iter()
            .filter(|&&i| ops[i].outcome == Outcome::Fail)
            .count();
        let share = fails as f64 / kept.len() as f64;
        assert!(
            (0.08..0.12).contains(&share),
            "fail share {share} is not ~10%"
        );
        assert!(kept.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn throughput_counts_completions_per_bucket_by_outcome() {
        // A 10 s run gets 0.1 s buckets: the smallest round width giving at most 100 buckets.
        let ops = vec![
            op(0, 50, Outcome::Ok),
            op(0, 60, Outcome::Fail),
            op(9_000, 1_000, Outcome::Info),
        ];
        let t = throughput(&ops, 10_000_000_000);
        assert_eq!(t.bucket_s, 0.1);
        let total: [u64; 3] = t
            .counts
            .iter()
            .fold([0; 3], |a, c| [a[0] + c[0], a[1] + c[1], a[2] + c[2]]);
        assert_eq!(total, [1, 1, 1]);
        assert_eq!(t.counts[0], [1, 1, 0]);
        assert_eq!(t.counts[t.counts.len() - 1], [0, 0, 1]);
    }

    #[test]
    fn nice_bounds_are_one_two_five_steps() {
        assert_eq!(nice_ceil(1_000.0), 1_000.0);
        assert_eq!(nice_ceil(1_250.0), 2_000.0);
        assert_eq!(nice_ceil(0.3), 0.5);
        assert_eq!(nice_floor(0.6), 0.5);
        assert_eq!(nice_floor(0.19), 0.1);
        assert_eq!(nice_floor(20.0), 20.0);
    }

    #[test]
    fn cdf_is_bounded_keeps_the_tail_and_stays_below_one() {
        let points = cdf_points((0..10_001).map(f64::from).collect());
        let slowest: Vec<f64> = (9_981..10_001).map(f64::from).collect();
        assert!(
            slowest.iter().all(|x| points.iter().any(|p| p.0 == *x)),
            "the tail was thinned"
        );
        assert!(
            points.len() <= MAX_CDF_POINTS_PER_LINE + 2,
            "{} points",
            points.len()
        );
        assert!(
            points.len() >= MAX_CDF_POINTS_PER_LINE / 4,
            "{} points",
            points.len()
        );
        assert_eq!(
            points.last().copied(),
            Some((10_000.0, 10_000.5 / 10_001.0))
        );
        assert_eq!(points[0], (0.0, 0.5 / 10_001.0));
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1)
        );
    }
}

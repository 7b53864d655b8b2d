//! The figures of a transactional sweep (`[[variant]]`s of a `txn-list-append` spec):
//!
//! * **contention** (`txn-contention.{png,svg}`), when the variants differ in zipf θ:
//!   abort rate and goodput against θ, one line per micro-ops per transaction, one
//!   column per conflict policy (`configs/txn-contention.toml`);
//! * **latency** (`txn-latency.{png,svg}`), when they differ in `partitions_per_txn`:
//!   commit latency p50 and p99 against the partitions a transaction touched, split
//!   into prepare and decide, next to the model (dashed) when the spec's link and fsync
//!   latencies are constants (`configs/txn-latency.toml`).
//!
//! Numbers of several seeds of one variant are averaged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kvlab_report::{Line, LinePanel, render_line_panels};
use kvlab_sim::LatencyDist;
use serde::Serialize;

use crate::error::ExperimentError;
use crate::spec::{KeyDistribution, PartitionsPerTxn, Spec};
use crate::summary::Summary;
use crate::txn_stats::PhaseLatency;

/// A transactional run's row in `variants.json`: its sweep coordinates and numbers.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TxnRow {
    /// The zipf exponent θ (0 for uniform keys).
    pub zipf_theta: f64,
    /// Micro-ops per transaction (the most; the sweeps fix min = max).
    pub ops_per_txn: u32,
    /// `no-wait` or `wait-die`.
    pub conflict: String,
    /// `partitions_per_txn`, when fixed.
    pub partitions_per_txn: Option<u32>,
    /// Decided transactions that aborted.
    pub abort_rate: f64,
    /// Committed transactions per second.
    pub goodput_per_s: f64,
    /// Committed, aborted, unknown.
    pub committed: usize,
    /// …
    pub aborted: usize,
    /// …
    pub unknown: usize,
    /// Commit latency by partitions touched, by phase.
    pub latency_ms_by_partitions: BTreeMap<String, PhaseLatency>,
}

/// The row of a run of `spec` with `summary`, if it ran transactions.
pub fn txn_row(spec: &Spec, summary: &Summary) -> Option<TxnRow> {
    let i = summary.isolation.as_ref()?;
    let w = &spec.workload;
    Some(TxnRow {
        zipf_theta: match w.key_distribution {
            KeyDistribution::Uniform => 0.0,
            KeyDistribution::Zipfian => w.zipf_exponent,
        },
        ops_per_txn: w.txn_ops_max,
        conflict: serde_json::to_value(spec.kvlab.txn.conflict)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        partitions_per_txn: match w.partitions_per_txn {
            PartitionsPerTxn::Any => None,
            PartitionsPerTxn::Exactly(n) => Some(n),
        },
        abort_rate: i.commit.abort_rate,
        goodput_per_s: i.commit.goodput_per_s,
        committed: i.committed,
        aborted: i.aborted,
        unknown: i.unknown,
        latency_ms_by_partitions: i.commit.latency_ms_by_partitions.clone(),
    })
}

/// The mean of each `(key, value)` group, in key order.
fn means<K: Ord>(points: impl Iterator<Item = (K, f64)>) -> BTreeMap<K, f64> {
    let mut acc: BTreeMap<K, (f64, usize)> = BTreeMap::new();
    for (k, v) in points.filter(|(_, v)| v.is_finite()) {
        let e = acc.entry(k).or_default();
        e.0 += v;
        e.1 += 1;
    }
    acc.into_iter()
        .map(|(k, (s, n))| (k, s / n as f64))
        .collect()
}

/// θ keyed for ordering (thousandths).
fn theta_key(theta: f64) -> i64 {
    (theta * 1000.0).round() as i64
}

/// One column per policy: abort rate (top) and goodput (bottom) against θ.
fn contention_panels(rows: &[&TxnRow]) -> Vec<LinePanel> {
    let mut policies: Vec<&str> = rows.iter().map(|r| r.conflict.as_str()).collect();
    policies.sort_unstable();
    policies.dedup();
    let mut top = Vec::new();
    let mut bottom = Vec::new();
    for policy in &policies {
        let of = |metric: fn(&TxnRow) -> f64| -> Vec<Line> {
            let m = means(
                rows.iter()
                    .filter(|r| r.conflict == *policy)
                    .map(|r| ((r.ops_per_txn, theta_key(r.zipf_theta)), metric(r))),
            );
            let mut lines: BTreeMap<u32, Vec<(f64, f64)>> = BTreeMap::new();
            for ((ops, t), v) in m {
                lines.entry(ops).or_default().push((t as f64 / 1000.0, v));
            }
            lines
                .into_iter()
                .map(|(ops, points)| Line {
                    name: format!("{ops} ops/txn"),
                    points,
                    dashed: false,
                })
                .collect()
        };
        let panel = |what: &str, y: &str, lines| LinePanel {
            title: format!("{what} vs zipf θ ({policy})"),
            x_desc: "zipf θ".into(),
            y_desc: y.into(),
            lines,
        };
        top.push(panel(
            "abort rate",
            "aborted / decided",
            of(|r| r.abort_rate),
        ));
        bottom.push(panel("goodput", "committed txn/s", of(|r| r.goodput_per_s)));
    }
    top.extend(bottom);
    top
}

/// The model's prepare and decide times, ms, of a transaction over `n` partitions, when
/// the spec's node-to-node latency `L` and fsync `F` are constants: a Raft commit is the
/// leader's fsync, then a follower's append and fsync and its ack, `2L + 2F`; the
/// gateway's request to a group leader and the answer add `2L`. 1PC: one such step, all
/// prepare; 2PC: one for the PREPAREs (in parallel), one for the home's decision.
pub fn latency_model_ms(spec: &Spec, n: u32) -> Option<(f64, f64)> {
    let (LatencyDist::Constant { ms: l }, LatencyDist::Constant { ms: f }) =
        (&spec.network.latency, &spec.disk.fsync_latency)
    else {
        return None;
    };
    let step = 4.0 * l + 2.0 * f;
    Some(if n <= 1 { (step, 0.0) } else { (step, step) })
}

/// p50 and p99 of prepare, decide and the client's total against the partitions
/// touched, and the model.
fn latency_panels(rows: &[&TxnRow], spec: &Spec) -> Vec<LinePanel> {
    type Pick = fn(&PhaseLatency) -> f64;
    let series: [(&str, Pick); 6] = [
        ("prepare p50", |l| l.prepare.p50),
        ("prepare p99", |l| l.prepare.p99),
        ("decide p50", |l| l.decide.p50),
        ("decide p99", |l| l.decide.p99),
        ("total (client) p50", |l| l.total.p50),
        ("total (client) p99", |l| l.total.p99),
    ];
    let mut lines: Vec<Line> = series
        .iter()
        .map(|(name, pick)| {
            let m = means(rows.iter().filter_map(|r| {
                let n = r.partitions_per_txn?;
                let l = r
                    .latency_ms_by_partitions
                    .get(&crate::txn_stats::partitions_bucket(n))?;
                Some((n, pick(l)))
            }));
            Line {
                name: (*name).into(),
                points: m.into_iter().map(|(n, v)| (f64::from(n), v)).collect(),
                dashed: false,
            }
        })
        .collect();
    let mut ns: Vec<u32> = rows.iter().filter_map(|r| r.partitions_per_txn).collect();
    ns.sort_unstable();
    ns.dedup();
    let model: Vec<(u32, (f64, f64))> = ns
        .iter()
        .filter_map(|&n| Some((n, latency_model_ms(spec, n)?)))
        .collect();
    if !model.is_empty() {
        let pts =
            |f: fn((f64, f64)) -> f64| model.iter().map(|&(n, m)| (f64::from(n), f(m))).collect();
        lines.push(Line {
            name: "model prepare".into(),
            points: pts(|m| m.0),
            dashed: true,
        });
        lines.push(Line {
            name: "model decide".into(),
            points: pts(|m| m.1),
            dashed: true,
        });
    }
    vec![LinePanel {
        title: "commit latency by partitions touched (1 = 1PC)".into(),
        x_desc: "partitions per transaction".into(),
        y_desc: "ms".into(),
        lines,
    }]
}

/// Draws the transactional figures of a sweep into `dir` (none when the rows are not
/// transactional or vary in neither θ nor partitions); `spec` is the first variant's.
pub fn render_txn_sweep(
    rows: &[&TxnRow],
    spec: &Spec,
    dir: &Path,
) -> Result<Vec<PathBuf>, ExperimentError> {
    let varies = |f: fn(&TxnRow) -> i64| {
        rows.first()
            .is_some_and(|a| rows.iter().any(|r| f(r) != f(a)))
    };
    let mut files = Vec::new();
    let report = |e: kvlab_report::ReportError| ExperimentError::Report(e.to_string());
    if varies(|r| theta_key(r.zipf_theta)) {
        let panels = contention_panels(rows);
        let columns = panels.len() / 2;
        files.extend(render_line_panels(&panels, columns, dir, "txn-contention").map_err(report)?);
    }
    if varies(|r| i64::from(r.partitions_per_txn.unwrap_or(0))) {
        let panels = latency_panels(rows, spec);
        files.extend(render_line_panels(&panels, 1, dir, "txn-latency").map_err(report)?);
    }
    Ok(files)
}

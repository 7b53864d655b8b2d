//! The isolation check of a transactional run: the history read by the transaction
//! checker (`kvlab_checker::txn`, Elle-style), its verdict under strict
//! serializability, and what the run's transactions were (committed / aborted /
//! unknown, and how many groups each touched), for `summary.json`'s `isolation`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use kvlab_checker::check::Verdict;
use kvlab_checker::formats::HistoryFormat;
use kvlab_checker::txn::{
    TxnCheckOptions, TxnHistory, TxnModel, TxnReport, check_txn, read_txn_history_file,
};
use serde::Serialize;

use crate::error::ExperimentError;
use crate::spec::Spec;

/// `summary.json`'s `isolation`: the transaction checker's verdict next to the per-key
/// linearizability one.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IsolationSummary {
    /// `valid`, `invalid` or `unknown`.
    pub verdict: Verdict,
    /// The model checked (`strict-serializable`).
    pub model: String,
    /// Transactions invoked.
    pub txns: usize,
    /// Transactions that ended `ok`.
    pub committed: usize,
    /// Transactions that ended `fail` (the abort was decided).
    pub aborted: usize,
    /// Transactions that ended `info` or never completed.
    pub unknown: usize,
    /// Transactions whose keys span more than one vnode (2PC).
    pub multi_partition_txns: usize,
    /// `multi_partition_txns / txns`.
    pub multi_partition_share: f64,
    /// Transactions by the number of vnodes (partitions) they touch.
    pub by_partitions: BTreeMap<usize, usize>,
    /// Committed transactions by the number of vnodes they touch.
    pub committed_by_partitions: BTreeMap<usize, usize>,
    /// Abort rate, goodput, and the commit latency by partitions touched split into
    /// prepare and decide (see [`crate::txn_stats`]); filled in by the runner, which has
    /// the replies' timings.
    #[serde(flatten)]
    pub commit: crate::txn_stats::TxnCommitStats,
    /// The checker's full report (anomalies, their explanations, edge counts).
    pub report: TxnReport,
}

/// Checks the transaction history at `path` under strict serializability, with the
/// spec's checker budget.
pub fn check_isolation(spec: &Spec, path: &Path) -> Result<IsolationSummary, ExperimentError> {
    let history = read_txn_history_file(path, HistoryFormat::Jsonl).map_err(|e| {
        ExperimentError::Checker(format!("the runner wrote a malformed txn history: {e}"))
    })?;
    let options = TxnCheckOptions {
        timeout: Some(Duration::from_secs_f64(spec.check.timeout_s)),
        ..TxnCheckOptions::new(TxnModel::StrictSerializable)
    };
    let report = check_txn(&history, &options);
    let partitions = partitions_touched(spec, &history)?;
    let mut by_partitions = BTreeMap::new();
    let mut committed_by_partitions = BTreeMap::new();
    for (t, &p) in history.txns.iter().zip(&partitions) {
        *by_partitions.entry(p).or_insert(0) += 1;
        if t.status == kvlab_checker::txn::TxnStatus::Ok {
            *committed_by_partitions.entry(p).or_insert(0) += 1;
        }
    }
    let txns = history.txns.len();
    let multi = partitions.iter().filter(|&&p| p > 1).count();
    Ok(IsolationSummary {
        verdict: report.verdict,
        model: TxnModel::StrictSerializable.name().to_string(),
        txns,
        committed: report.ok,
        aborted: report.fail,
        unknown: report.info,
        multi_partition_txns: multi,
        multi_partition_share: if txns == 0 {
            0.0
        } else {
            multi as f64 / txns as f64
        },
        by_partitions,
        committed_by_partitions,
        commit: crate::txn_stats::TxnCommitStats::default(),
        report,
    })
}

/// For each transaction, the number of vnodes its keys fall in (the composed node's
/// ring layout of the spec).
fn partitions_touched(spec: &Spec, history: &TxnHistory) -> Result<Vec<usize>, ExperimentError> {
    let layout = spec
        .kvlab
        .layout()
        .map_err(|e| ExperimentError::Checker(format!("the spec's ring: {e}")))?;
    Ok(history
        .txns
        .iter()
        .map(|t| {
            t.mops
                .iter()
                .map(|m| layout.vnode_of(history.key_name(m.key())))
                .collect::<BTreeSet<_>>()
                .len()
        })
        .collect())
}

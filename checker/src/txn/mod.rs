//! The transaction-isolation checker: an Elle-style checker for list-append and
//! rw-register transaction histories (Kingsbury & Alvaro, "Elle: Inferring Isolation
//! Anomalies from Experimental Observations", VLDB 2020).
//!
//! From client observations only, it infers a dependency graph between transactions —
//! write-write (ww), write-read (wr) and read-write (rw, anti-dependency) edges, and for
//! strict serializability process and real-time order — finds its cycles and names the
//! anomaly class of each, and reports the anomalies that need no cycle.
//!
//! # Input
//!
//! [`read_txn_history`] detects the format from the first bytes (as
//! [`detect_format`](crate::detect_format) does) and reads it a line at a time:
//!
//! * **Jepsen/Elle EDN**: op maps, optionally in one vector,
//!   `{:type :ok, :f :txn, :value [[:append 3 1] [:r 4 [1 2]]], :process 0, :index 5, :time 123}`;
//!   `[:r k nil]` on invoke. `:index` is optional (ops are numbered in order), other
//!   keys are ignored, ops whose `:process` is a keyword (`:nemesis`) are skipped, and a
//!   completion with no `:process` at all (as in Elle's README) is a transaction of its
//!   own, invoked just before it completes.
//! * **kvlab JSONL**: one event a line,
//!   `{"index":5,"time_ns":123,"process":0,"type":"ok","f":"txn","value":[["append","k",1],["r","k",[1,2]]]}`;
//!   `type` is `invoke`, `ok`, `fail` or `info`; `f` is `txn`; a micro-op is `[f, key,
//!   value]` with `f` `"r"`, `"w"` or `"append"`, the key a string or an integer, the
//!   value an integer, a list of integers (a list-append read) or `null` (a read on
//!   invoke, or an empty/absent key on `ok`). Optional `node` and `error` fields.
//!
//! A history is **list-append** (appends, list reads) or **rw-register** (writes,
//! integer reads), never both. Appended elements and written values must be unique per
//! key (Elle's precondition; a repeat is an error). Jepsen's process discipline holds: a
//! process runs one transaction at a time and never invokes again after `info`; an
//! invoke still open at the end counts as `info`. `fail` transactions surely did not
//! happen; `info` ones may have. Every error ([`TxnError`]) names the line.
//!
//! # Inference
//!
//! * **List-append** ([`list_append`]): the longest read of each key is its version
//!   order; every other read must be a prefix of it (`incompatible-order` otherwise).
//!   ww joins the writers of consecutive elements, wr a transaction's external read (its
//!   first read of a key, before it appends to it) to the writer of the read's last
//!   element, rw that read to the writer of the next element. Appends no read shows get
//!   no edge, as in Elle.
//! * **rw-register** ([`register`]): weaker — see that module for what is inferred
//!   (wr from unique values; ww and rw only from transactions that read a key and then
//!   wrote it).
//! * **Process and real-time edges** ([`graph`]), under `strict-serializable` only:
//!   real-time order as a transitive reduction built with a frontier of completed
//!   transactions, about transactions × concurrency edges rather than transactions².
//!
//! # Cycles
//!
//! Tarjan's algorithm finds the strongly connected components of the graph of the edges
//! the model cares about; within each, [`cycles`] finds the shortest cycle of each class
//! by breadth-first search over (transaction, state of a small automaton over edge
//! kinds): **G0** (ww only), **G1c** (ww and wr, at least one wr), **G-single** (exactly
//! one rw), **G-nonadjacent** (several rw, none adjacent), **G2-item** (other cycles with
//! rw), each also in a **-process** and a **-realtime** form (a cycle that needs process
//! or real-time edges), searched only in components no data-only cycle explains.
//!
//! # Anomalies that need no cycle
//!
//! **G1a** (a read shows a `fail` transaction's write), **G1b** (a read ends in a
//! transaction's non-final append or write to the key), **internal** (a read disagrees
//! with the transaction's own earlier reads and writes), **future-read** (a read shows
//! an element the transaction appends only later; Elle: implies G1c), **duplicate-elements** (an
//! element twice in a read), **garbage-read** (a value nobody wrote),
//! **incompatible-order**, and the final-read checks for list-append. The final read of
//! a key is the latest read of it by an `ok` transaction invoked after every transaction
//! that appends (to any key) completed (`ok`, `fail` or `info`): a final phase with no
//! writer left, as kvlab's workloads end after healing. **lost-append** is an `ok` append
//! missing from it, **partial-txn** a transaction some but not all of whose appends (to
//! keys with a final read) are in them. These lean on real time: a history from a store
//! that promises only serializability may legally serve a stale read there, and an
//! `info` transaction that takes effect after its `info` completion, or one still open
//! at the end, may look partial. kvlab counts both against every model (wave 2 §3.4,
//! "durability"), which is stricter than Elle for such histories.
//!
//! # Models
//!
//! Transcribed from Elle's `consistency_model.clj` (each model's
//! `direct-proscribed-anomalies`, closed under the models it implies and the anomalies
//! that imply them); `lost-append`, `partial-txn` and `garbage-read` are kvlab's and are
//! forbidden everywhere (like G1a, which Elle's incompatible-order implies). ✗ =
//! forbidden:
//!
//! | anomaly | read-committed | snapshot-isolation | serializable | strict-serializable |
//! |---|---|---|---|---|
//! | G0, G1a, G1b, G1c, future-read, duplicate-elements, incompatible-order, garbage-read, lost-append, partial-txn | ✗ | ✗ | ✗ | ✗ |
//! | internal | | ✗ | ✗ | ✗ |
//! | G-single, G-nonadjacent | | ✗ | ✗ | ✗ |
//! | G2-item | | | ✗ | ✗ |
//! | every -process and -realtime form | | | | ✗ |
//!
//! The graph searched holds ww and wr edges under `read-committed`, ww, wr and rw under
//! `snapshot-isolation` and `serializable`, and process and real-time edges too under
//! `strict-serializable` (the default).
//!
//! # Verdicts, budgets, reports
//!
//! **invalid** when an anomaly the model forbids is found; **unknown** when the time or
//! memory budget ran out first ([`TxnCheckOptions`]); **valid** otherwise — never valid
//! after a budget ran out. The [`TxnReport`] counts anomalies of each class, explains up
//! to [`MAX_EXPLAINED_PER_KIND`] of each (the transactions with index, process, line and
//! micro-ops, and for a cycle each edge with why it exists), lists the models ruled out,
//! and is `serde::Serialize` for the HTML report.
//!
//! ```
//! use kvlab_checker::txn::{TxnCheckOptions, TxnModel, check_txn, read_txn_history};
//! use kvlab_checker::{HistoryFormat, Verdict};
//!
//! // Each transaction reads the other's append and not its own: G1c.
//! let edn = r#"
//! {:index 0 :type :invoke :process 0 :f :txn :value [[:append 1 1] [:r 2 nil]]}
//! {:index 1 :type :invoke :process 1 :f :txn :value [[:append 2 1] [:r 1 nil]]}
//! {:index 2 :type :ok :process 0 :f :txn :value [[:append 1 1] [:r 2 [1]]]}
//! {:index 3 :type :ok :process 1 :f :txn :value [[:append 2 1] [:r 1 [1]]]}
//! "#;
//! let history = read_txn_history(edn.as_bytes(), HistoryFormat::Auto)?;
//! let report = check_txn(&history, &TxnCheckOptions::new(TxnModel::Serializable));
//! assert_eq!(report.verdict, Verdict::Invalid);
//! assert_eq!(report.forbidden[0].name(), "G1c");
//! # Ok::<(), kvlab_checker::txn::TxnError>(())
//! ```
//!
//! Not done: the final-read checks for rw-register (not inferable from registers);
//! Elle's dirty-update, lost-update and predicate classes; rw-register
//! version orders from process and real-time order; a cross-check against the `adya`
//! crate; showing the report in `report.html` and running it from `kvlab run` (the
//! report is `Serialize` for that).

pub mod budget;
pub mod cycles;
pub mod explain;
pub mod graph;
pub mod history;
pub mod list_append;
pub mod model;
pub mod register;
pub mod report;

use std::time::{Duration, Instant};

pub use budget::Stop;
pub use history::{
    KeyId, Mop, ReadValue, Txn, TxnError, TxnHistory, TxnId, TxnStatus, Workload,
    looks_like_list_append, read_txn_history, read_txn_history_file,
};
pub use model::{AnomalyKind, TxnModel};
pub use report::{Anomaly, EdgeCounts, MAX_EXPLAINED_PER_KIND, Step, TxnRef, TxnReport};

use crate::check::Verdict;
use budget::Budget;
use explain::{Inferred, cycle_anomaly};
use graph::{EdgeList, Graph};
use report::Findings;

/// How to check a transaction history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnCheckOptions {
    /// The consistency model.
    pub model: TxnModel,
    /// The wall-clock budget; `None`: none.
    pub timeout: Option<Duration>,
    /// The most resident memory the process may reach; `None`: no limit.
    pub memory_limit_bytes: Option<u64>,
}

impl TxnCheckOptions {
    /// `model` without budgets.
    pub fn new(model: TxnModel) -> TxnCheckOptions {
        TxnCheckOptions {
            model,
            timeout: None,
            memory_limit_bytes: None,
        }
    }
}

/// Checks `history` under `options.model`; see the [module docs](self).
pub fn check_txn(history: &TxnHistory, options: &TxnCheckOptions) -> TxnReport {
    let started = Instant::now();
    let mut budget = Budget::new(
        options.timeout.map(|t| started + t),
        options.memory_limit_bytes,
    );
    let mut findings = Findings::new(options.model);
    let mut edges_found = EdgeCounts::default();
    let stopped = analyse(
        history,
        options.model,
        &mut budget,
        &mut findings,
        &mut edges_found,
    )
    .err();
    let count = |s: TxnStatus| history.txns.iter().filter(|t| t.status == s).count();
    // A forbidden class whose search was cut leaves its absence unknown.
    let cut = findings.cut.first().map(|(kind, txns)| {
        format!(
            "the search for {kind} in a component of {txns} transactions reached its work limit"
        )
    });
    let verdict = if findings.any_forbidden() {
        Verdict::Invalid
    } else if stopped.is_some() || cut.is_some() {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    let forbidden: Vec<AnomalyKind> = findings
        .counts
        .keys()
        .copied()
        .filter(|k| options.model.forbids(*k))
        .collect();
    // The models form a chain, so the weakest one ruled out implies the rest (Elle's
    // `:not` and `:also-not`).
    let mut also_not: Vec<TxnModel> = TxnModel::ALL
        .into_iter()
        .filter(|m| findings.counts.keys().any(|k| m.forbids(*k)))
        .collect();
    let not = if also_not.is_empty() {
        Vec::new()
    } else {
        vec![also_not.remove(0)]
    };
    TxnReport {
        verdict,
        model: options.model,
        workload: history.workload,
        ok: count(TxnStatus::Ok),
        info: count(TxnStatus::Info),
        fail: count(TxnStatus::Fail),
        edges: edges_found,
        anomaly_counts: findings.counts,
        forbidden,
        not,
        also_not,
        anomalies: findings.anomalies,
        unknown_reason: match verdict {
            Verdict::Unknown => stopped.map(|s| s.reason().to_owned()).or(cut),
            _ => None,
        },
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    }
}

/// Inference, graph and cycle search; stops at the first budget overrun.
fn analyse(
    history: &TxnHistory,
    model: TxnModel,
    budget: &mut Budget,
    findings: &mut Findings,
    counts: &mut EdgeCounts,
) -> Result<(), Stop> {
    budget.check_now()?;
    let mut edges = EdgeList::default();
    let inferred = match history.workload {
        Workload::ListAppend => {
            Inferred::List(list_append::infer(history, findings, &mut edges, budget)?)
        }
        Workload::RwRegister => {
            Inferred::Register(register::infer(history, findings, &mut edges, budget)?)
        }
    };
    let mask = model.edge_mask();
    if mask & graph::PROCESS != 0 {
        graph::add_process_edges(history, &mut edges);
        graph::add_realtime_edges(history, &mut edges, budget)?;
    }
    budget.check_now()?;
    let graph = Graph::build(history.txns.len(), edges);
    let [ww, wr, rw, process, realtime] = graph.count_kinds();
    *counts = EdgeCounts {
        ww,
        wr,
        rw,
        process,
        realtime,
    };
    let components = graph::strongly_connected(&graph, mask, budget)?;
    let mut memberships = cycles::Memberships::new(&graph);
    for c in &components {
        let work = cycles::WorkLimit::default();
        let result = cycles::search_component(&graph, c, &mut memberships, mask, work, budget)?;
        for (kind, cycle) in result.found {
            let count = findings.counts.entry(kind).or_insert(0);
            *count += 1;
            if *count <= MAX_EXPLAINED_PER_KIND {
                let anomaly = cycle_anomaly(history, &inferred, kind, model.forbids(kind), &cycle);
                findings.anomalies.push(anomaly);
            }
        }
        for kind in result.cut.into_iter().filter(|k| model.forbids(*k)) {
            findings.cut.push((kind, c.len()));
        }
    }
    Ok(())
}

//! What a transaction check found: the verdict, and every anomaly with the transactions
//! it names and, for a cycle, each edge with why it exists. Serializable for
//! `verdict.json` and the HTML report; [`Display`](fmt::Display) prints it for people.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::Serialize;

use super::history::{Mop, ReadValue, TxnHistory, TxnId, TxnStatus, Workload};
use super::model::{AnomalyKind, TxnModel};
use crate::check::Verdict;

/// The most anomalies of one kind a report explains; the rest are counted.
pub const MAX_EXPLAINED_PER_KIND: usize = 8;

/// The most characters of a transaction's micro-ops a report quotes.
pub const MAX_QUOTED_OPS_CHARS: usize = 240;

/// A transaction named in an anomaly.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TxnRef {
    /// Its name in the explanation: `T1`, `T2`, ….
    pub name: String,
    /// The `index` of its invoke.
    pub index: u64,
    /// The `index` of its completion, if it completed.
    pub complete_index: Option<u64>,
    /// The process that ran it.
    pub process: u64,
    /// How it ended.
    pub status: TxnStatus,
    /// The line of its invoke in the history file.
    pub line: usize,
    /// Its micro-ops, in EDN (with the values read).
    pub ops: String,
}

/// One edge of a cycle.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Step {
    /// The source transaction's name.
    pub from: String,
    /// The target transaction's name.
    pub to: String,
    /// The kind of dependency: `ww`, `wr`, `rw`, `process` or `realtime`.
    pub edge: &'static str,
    /// Why the edge exists, naming keys and values.
    pub why: String,
}

/// One anomaly, explained.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Anomaly {
    /// Its class.
    pub kind: AnomalyKind,
    /// Whether the model checked forbids it.
    pub forbidden: bool,
    /// The key it concerns, for anomalies of one key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The transactions it names.
    pub txns: Vec<TxnRef>,
    /// For a cycle: its edges, in order, the last returning to the first transaction.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cycle: Vec<Step>,
    /// The explanation, as text.
    pub explanation: String,
}

/// Counts of the dependency graph's edges, by kind.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct EdgeCounts {
    /// Write-write.
    pub ww: usize,
    /// Write-read.
    pub wr: usize,
    /// Read-write.
    pub rw: usize,
    /// Process order.
    pub process: usize,
    /// Real-time order (a transitive reduction).
    pub realtime: usize,
}

/// What a transaction check found.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TxnReport {
    /// Valid, invalid, or unknown (a budget ran out before an anomaly the model forbids
    /// was found).
    pub verdict: Verdict,
    /// The model checked.
    pub model: TxnModel,
    /// List-append or rw-register.
    pub workload: Workload,
    /// Transactions that committed.
    pub ok: usize,
    /// Transactions of unknown outcome.
    pub info: usize,
    /// Transactions that surely aborted.
    pub fail: usize,
    /// The dependency graph's edges.
    pub edges: EdgeCounts,
    /// How many anomalies of each class were found (all, explained or not).
    pub anomaly_counts: BTreeMap<AnomalyKind, usize>,
    /// The classes found that the model forbids.
    pub forbidden: Vec<AnomalyKind>,
    /// The weakest model of [`TxnModel::ALL`] the anomalies found rule out (Elle's
    /// `:not`; empty when none is).
    pub not: Vec<TxnModel>,
    /// The stronger models that rules out too (Elle's `:also-not`).
    pub also_not: Vec<TxnModel>,
    /// The anomalies, at most [`MAX_EXPLAINED_PER_KIND`] of each class.
    pub anomalies: Vec<Anomaly>,
    /// Why the check could not decide, when the verdict is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
    /// Wall-clock time of the check, in milliseconds.
    pub elapsed_ms: f64,
}

impl TxnReport {
    /// The anomalies of one class.
    pub fn of_kind(&self, kind: AnomalyKind) -> impl Iterator<Item = &Anomaly> {
        self.anomalies.iter().filter(move |a| a.kind == kind)
    }
}

/// Anomalies as they are found: counted by class, explained up to a bound.
#[derive(Debug)]
pub(crate) struct Findings {
    pub model: TxnModel,
    pub counts: BTreeMap<AnomalyKind, usize>,
    pub anomalies: Vec<Anomaly>,
    /// Forbidden classes whose cycle search was cut at its work limit, with the size of
    /// the component.
    pub cut: Vec<(AnomalyKind, usize)>,
}

impl Findings {
    pub(crate) fn new(model: TxnModel) -> Findings {
        Findings {
            model,
            counts: BTreeMap::new(),
            anomalies: Vec::new(),
            cut: Vec::new(),
        }
    }

    /// Records an anomaly of `kind` naming `txns`; `explain` runs only while the class
    /// has fewer than [`MAX_EXPLAINED_PER_KIND`] explained.
    pub(crate) fn add(
        &mut self,
        history: &TxnHistory,
        kind: AnomalyKind,
        key: Option<u32>,
        txns: &[TxnId],
        explain: impl FnOnce(&dyn Fn(TxnId) -> String) -> String,
    ) {
        let count = self.counts.entry(kind).or_insert(0);
        *count += 1;
        if *count > MAX_EXPLAINED_PER_KIND {
            return;
        }
        let refs = txn_refs(history, txns);
        let name = |id: TxnId| name_of(txns, id);
        let mut explanation = let_block(&refs);
        explanation.push_str(&explain(&name));
        self.anomalies.push(Anomaly {
            kind,
            forbidden: self.model.forbids(kind),
            key: key.map(|k| history.key_name(k).to_owned()),
            txns: refs,
            cycle: Vec::new(),
            explanation,
        });
    }

    /// Whether an anomaly the model forbids was found.
    pub(crate) fn any_forbidden(&self) -> bool {
        self.counts.keys().any(|k| self.model.forbids(*k))
    }
}

/// The name of `id` among `txns`: `T1` for the first.
pub(crate) fn name_of(txns: &[TxnId], id: TxnId) -> String {
    match txns.iter().position(|&t| t == id) {
        Some(i) => format!("T{}", i + 1),
        None => format!("txn {id}"),
    }
}

pub(crate) fn txn_refs(history: &TxnHistory, txns: &[TxnId]) -> Vec<TxnRef> {
    txns.iter()
        .enumerate()
        .map(|(i, &id)| {
            let t = &history.txns[id as usize];
            TxnRef {
                name: format!("T{}", i + 1),
                index: t.invoke_index,
                complete_index: t.complete_index,
                process: t.process,
                status: t.status,
                line: t.line,
                ops: render_ops(history, id),
            }
        })
        .collect()
}

pub(crate) fn let_block(refs: &[TxnRef]) -> String {
    let mut s = String::from("Let:\n");
    for r in refs {
        // Ops without a process (Elle's README) got one from the top of the range.
        let process = if r.process > u64::MAX / 2 {
            String::new()
        } else {
            format!(", :process {}", r.process)
        };
        let _ = writeln!(
            s,
            "  {} = {{:index {}{process}, :type :{}, :value {}}} (line {})",
            r.name,
            r.index,
            status_name(r.status),
            r.ops,
            r.line
        );
    }
    s
}

fn status_name(s: TxnStatus) -> &'static str {
    match s {
        TxnStatus::Ok => "ok",
        TxnStatus::Info => "info",
        TxnStatus::Fail => "fail",
    }
}

/// A list of elements as EDN: `[1 2 3]`.
pub(crate) fn list(elems: &[i64]) -> String {
    let mut s = String::from("[");
    for (i, e) in elems.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{e}");
    }
    s.push(']');
    s
}

/// A transaction's micro-ops as EDN, cut at [`MAX_QUOTED_OPS_CHARS`].
pub(crate) fn render_ops(history: &TxnHistory, id: TxnId) -> String {
    let mut s = String::from("[");
    for (i, m) in history.txns[id as usize].mops.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let k = history.key_name(m.key());
        let _ = match m {
            Mop::Append { elem, .. } => write!(s, "[:append {k} {elem}]"),
            Mop::Write { value, .. } => write!(s, "[:w {k} {value}]"),
            Mop::Read { value, .. } => match value {
                ReadValue::Unknown | ReadValue::Nil => write!(s, "[:r {k} nil]"),
                ReadValue::Int(v) => write!(s, "[:r {k} {v}]"),
                ReadValue::List(l) => write!(s, "[:r {k} {}]", list(l)),
            },
        };
        if s.chars().count() > MAX_QUOTED_OPS_CHARS {
            s = s.chars().take(MAX_QUOTED_OPS_CHARS).collect();
            s.push('…');
            return s;
        }
    }
    s.push(']');
    s
}

impl fmt::Display for TxnReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} under {} ({} history: {} ok, {} info, {} fail; edges ww {} wr {} rw {} process {} realtime {}; {:.1} ms)",
            self.verdict,
            self.model,
            self.workload.name(),
            self.ok,
            self.info,
            self.fail,
            self.edges.ww,
            self.edges.wr,
            self.edges.rw,
            self.edges.process,
            self.edges.realtime,
            self.elapsed_ms
        )?;
        if let Some(why) = &self.unknown_reason {
            writeln!(f, "unknown: {why}")?;
        }
        if !self.anomaly_counts.is_empty() {
            let counts: Vec<String> = self
                .anomaly_counts
                .iter()
                .map(|(k, n)| {
                    let mark = if self.model.forbids(*k) {
                        ""
                    } else {
                        " (allowed)"
                    };
                    format!("{k} ×{n}{mark}")
                })
                .collect();
            writeln!(f, "anomalies: {}", counts.join(", "))?;
        }
        if !self.not.is_empty() {
            let names = |v: &[TxnModel]| v.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ");
            write!(f, "not: {}", names(&self.not))?;
            if !self.also_not.is_empty() {
                write!(f, "; also not: {}", names(&self.also_not))?;
            }
            writeln!(f)?;
        }
        for a in &self.anomalies {
            let mark = if a.forbidden {
                ""
            } else {
                " (allowed by the model)"
            };
            writeln!(f, "\n{}{mark}:", a.kind)?;
            for line in a.explanation.lines() {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

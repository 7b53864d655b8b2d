//! Explanations of cycles, as Elle writes them: "Let T1 = …; Then: T1 < T2, because …;
//! However, Tn < T1, because …: a contradiction!" Each edge's reason is found again
//! from the history and the inferred version orders, only for the edges of a reported
//! cycle, so the graph itself stores no reasons.

use std::fmt::Write as _;

use super::cycles::Cycle;
use super::graph::{PROCESS, REALTIME, RW, WR, WW, kind_name};
use super::history::{Mop, ReadValue, TxnHistory, TxnId};
use super::list_append::ListAppend;
use super::model::AnomalyKind;
use super::register::{Register, external_reads};
use super::report::{Anomaly, Step, let_block, list, name_of, txn_refs};

/// What the inference knew, to explain edges with.
#[derive(Debug)]
pub(crate) enum Inferred {
    /// List-append version orders.
    List(ListAppend),
    /// rw-register writes.
    Register(Register),
}

/// The anomaly of `kind` shown by `cycle`, explained.
pub(crate) fn cycle_anomaly(
    history: &TxnHistory,
    inferred: &Inferred,
    kind: AnomalyKind,
    forbidden: bool,
    cycle: &Cycle,
) -> Anomaly {
    let txns = &cycle.nodes;
    let refs = txn_refs(history, txns);
    let name = |id: TxnId| name_of(txns, id);
    let mut steps = Vec::with_capacity(txns.len());
    let mut text = let_block(&refs);
    text.push_str("Then:\n");
    for i in 0..txns.len() {
        let (from, to, k) = (txns[i], txns[(i + 1) % txns.len()], cycle.kinds[i]);
        let why = edge_why(history, inferred, from, to, k, &name);
        let last = i + 1 == txns.len();
        let _ = writeln!(
            text,
            "  - {}{} < {}, because {why} ({}){}",
            if last { "However, " } else { "" },
            name(from),
            name(to),
            kind_name(k),
            if last { ": a contradiction!" } else { "." }
        );
        steps.push(Step {
            from: name(from),
            to: name(to),
            edge: kind_name(k),
            why,
        });
    }
    Anomaly {
        kind,
        forbidden,
        key: None,
        txns: refs,
        cycle: steps,
        explanation: text,
    }
}

/// Why the edge `from → to` of `kind` exists.
pub(crate) fn edge_why(
    history: &TxnHistory,
    inferred: &Inferred,
    from: TxnId,
    to: TxnId,
    kind: u8,
    name: &dyn Fn(TxnId) -> String,
) -> String {
    let (a, b) = (&history.txns[from as usize], &history.txns[to as usize]);
    let (fa, fb) = (name(from), name(to));
    match kind {
        PROCESS => format!(
            "{fa} completed before {fb} began on process {} (index {} < {})",
            a.process,
            a.complete_index.unwrap_or(a.invoke_index),
            b.invoke_index
        ),
        REALTIME => format!(
            "{fa} completed (index {}) before {fb} was invoked (index {})",
            a.complete_index.unwrap_or(a.invoke_index),
            b.invoke_index
        ),
        _ => match inferred {
            Inferred::List(la) => list_why(history, la, from, to, kind, &fa, &fb),
            Inferred::Register(reg) => register_why(history, reg, from, to, kind, &fa, &fb),
        }
        .unwrap_or_else(|| format!("of a {} dependency", kind_name(kind))),
    }
}

fn list_why(
    history: &TxnHistory,
    la: &ListAppend,
    from: TxnId,
    to: TxnId,
    kind: u8,
    fa: &str,
    fb: &str,
) -> Option<String> {
    let order = |key: u32| &la.orders[key as usize];
    let writer = |key: u32, e: i64| la.live_writer(history, key, e);
    match kind {
        WW => history.txns[to as usize].mops.iter().find_map(|m| {
            let Mop::Append { key, elem } = *m else {
                return None;
            };
            let pos = la.elems.get(&(key, elem))?.pos as usize;
            let prev = *order(key).get(pos.checked_sub(1)?)?;
            (writer(key, prev) == Some(from)).then(|| {
                format!(
                    "{fb} appended {elem} after {fa} appended {prev} to key {}",
                    history.key_name(key)
                )
            })
        }),
        WR => reads_of(history, to).into_iter().find_map(|(key, l)| {
            let last = *l.last()?;
            (writer(key, last) == Some(from)).then(|| {
                format!(
                    "{fb} read key {} as {}, which ends in {fa}'s append of {last}",
                    history.key_name(key),
                    list(l)
                )
            })
        }),
        RW => reads_of(history, from).into_iter().find_map(|(key, l)| {
            let next = *order(key).get(l.len())?;
            (order(key).starts_with(l) && writer(key, next) == Some(to)).then(|| {
                format!(
                    "{fa} read key {} as {}, which lacks {fb}'s append of {next}, the next element",
                    history.key_name(key),
                    list(l)
                )
            })
        }),
        _ => None,
    }
}

/// The list reads of a transaction, by key.
fn reads_of(history: &TxnHistory, id: TxnId) -> Vec<(u32, &[i64])> {
    history.txns[id as usize]
        .mops
        .iter()
        .filter_map(|m| match m {
            Mop::Read {
                key,
                value: ReadValue::List(l),
            } => Some((*key, &l[..])),
            Mop::Read {
                key,
                value: ReadValue::Nil,
            } => Some((*key, &[][..])),
            _ => None,
        })
        .collect()
}

fn register_why(
    history: &TxnHistory,
    reg: &Register,
    from: TxnId,
    to: TxnId,
    kind: u8,
    fa: &str,
    fb: &str,
) -> Option<String> {
    let writer = |key: u32, v: i64| reg.writes.get(&(key, v)).map(|w| w.writer);
    let show = |v: Option<i64>| v.map_or("nil".to_owned(), |v| v.to_string());
    let (to_reads, to_writes) = external_reads(history, to);
    match kind {
        WR => to_reads.iter().find_map(|&(key, v)| {
            (writer(key, v?) == Some(from)).then(|| {
                format!(
                    "{fb} read key {} = {}, written by {fa}",
                    history.key_name(key),
                    show(v)
                )
            })
        }),
        WW => to_reads.iter().find_map(|&(key, v)| {
            (to_writes.contains(&key) && writer(key, v?) == Some(from)).then(|| {
                format!(
                    "{fb} read key {} = {} written by {fa}, then wrote {}",
                    history.key_name(key),
                    show(v),
                    history.key_name(key)
                )
            })
        }),
        RW => {
            let (from_reads, _) = external_reads(history, from);
            let k = |key: u32| history.key_name(key);
            let after_same = from_reads.iter().find_map(|&(key, v)| {
                (to_writes.contains(&key) && to_reads.contains(&(key, v))).then(|| {
                    format!("{fa} read key {} = {}, and {fb} read that version too and then overwrote {}", k(key), show(v), k(key))
                })
            });
            after_same.or_else(|| {
                from_reads.iter().find_map(|&(key, v)| {
                    (v.is_none() && to_writes.contains(&key)).then(|| {
                        format!("{fa} read key {} = nil, its initial state, and {fb} wrote {}, a later version", k(key), k(key))
                    })
                })
            })
        }
        _ => None,
    }
}

//! rw-register inference: weaker than list-append, because a read shows one version, not
//! the history of the key. What is inferred (with written values unique per key):
//!
//! * **wr**: a transaction's external read of `k = v` (its first read of `k`, before it
//!   writes `k`) follows the unique writer of `v`; `nil` reads the initial version.
//! * **ww**: a transaction that externally read `k = v` and then wrote `k` installed a
//!   version after `v`: writer of `v` → it.
//! * **rw**: every external reader of `k = v` → every transaction that read `v` and then
//!   wrote `k` (a version after `v`, so after what the reader saw; when that version is
//!   not the very next one the edge is implied by a ww chain, and a cycle through it may
//!   be named with one class where a chain would give the same rw count); and every
//!   reader of `nil` (the initial version) → every `ok` writer of `k` (initial state).
//!
//! Blind writes (a write of a key the transaction did not read first) get no ww edge and
//! only the initial-state rw edges: their place in the version order is not observable
//! here. Garbage reads, G1a
//! (a value written by a failed transaction), G1b (a value its writer overwrote in the
//! same transaction) and `internal` are found as for list-append. The final-read checks
//! are not inferable from registers and are not run.

use super::budget::{Budget, Stop};
use super::graph::{EdgeList, RW, WR, WW};
use super::history::{KeyId, Mop, ReadValue, TxnHistory, TxnId, TxnStatus};
use super::list_append::FxMap;
use super::model::AnomalyKind;
use super::report::Findings;

/// A version of a key: `None` the initial (absent) one.
pub(crate) type Version = Option<i64>;

/// Who wrote a value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriteInfo {
    pub writer: TxnId,
    /// Whether the writer wrote the key again afterwards.
    pub intermediate: bool,
}

/// What rw-register inference knows.
#[derive(Debug, Default)]
pub(crate) struct Register {
    pub writes: FxMap<(KeyId, i64), WriteInfo>,
}

/// The external reads of a transaction (key, version) and the keys it writes.
pub(crate) fn external_reads(
    history: &TxnHistory,
    id: TxnId,
) -> (Vec<(KeyId, Version)>, Vec<KeyId>) {
    let (mut reads, mut writes): (Vec<(KeyId, Version)>, Vec<KeyId>) = (Vec::new(), Vec::new());
    for m in &history.txns[id as usize].mops {
        match m {
            Mop::Write { key, .. } => {
                if !writes.contains(key) {
                    writes.push(*key);
                }
            }
            Mop::Read { key, value } => {
                let v = match value {
                    ReadValue::Int(v) => Some(*v),
                    ReadValue::Nil => None,
                    _ => continue,
                };
                if !writes.contains(key) && !reads.iter().any(|(k, _)| k == key) {
                    reads.push((*key, v));
                }
            }
            Mop::Append { .. } => {}
        }
    }
    (reads, writes)
}

/// Runs the inference: anomalies into `findings`, edges into `edges`.
pub(crate) fn infer(
    history: &TxnHistory,
    findings: &mut Findings,
    edges: &mut EdgeList,
    budget: &mut Budget,
) -> Result<Register, Stop> {
    let mut reg = Register::default();
    for (id, txn) in history.txns.iter().enumerate() {
        budget.tick()?;
        let mut later: Vec<KeyId> = Vec::new();
        for m in txn.mops.iter().rev() {
            if let Mop::Write { key, value } = *m {
                let intermediate = later.contains(&key);
                later.push(key);
                reg.writes.insert(
                    (key, value),
                    WriteInfo {
                        writer: id as TxnId,
                        intermediate,
                    },
                );
            }
        }
    }
    let mut readers: FxMap<(KeyId, Version), Vec<TxnId>> = FxMap::default();
    let mut overwriters: FxMap<(KeyId, Version), Vec<TxnId>> = FxMap::default();
    for id in 0..history.txns.len() as TxnId {
        budget.tick()?;
        if history.txns[id as usize].status != TxnStatus::Ok {
            continue;
        }
        internal(history, id, findings);
        let (reads, writes) = external_reads(history, id);
        for (key, v) in reads {
            readers.entry((key, v)).or_default().push(id);
            if writes.contains(&key) {
                overwriters.entry((key, v)).or_default().push(id);
            }
            if let Some(v) = v {
                read_from(history, &reg, id, key, v, findings, edges);
            }
        }
    }
    // Sorted, so that edges and explanations do not depend on hash order.
    let mut versions: Vec<_> = overwriters.into_iter().collect();
    versions.sort_unstable();
    for ((key, v), over) in versions {
        budget.tick()?;
        if let Some(v) = v
            && let Some(w) = reg.writes.get(&(key, v))
            && history.txns[w.writer as usize].status != TxnStatus::Fail
        {
            for &o in &over {
                edges.add(w.writer, o, WW);
            }
        }
        for &r in readers.get(&(key, v)).map_or(&[][..], Vec::as_slice) {
            for &o in &over {
                budget.tick()?;
                edges.add(r, o, RW);
            }
        }
    }
    initial_state_edges(history, &readers, edges, budget)?;
    Ok(reg)
}

/// Every version of a key follows its initial (absent) one, so a transaction that read
/// `nil` anti-depends on every `ok` transaction that wrote the key (Elle's initial-state
/// inference).
fn initial_state_edges(
    history: &TxnHistory,
    readers: &FxMap<(KeyId, Version), Vec<TxnId>>,
    edges: &mut EdgeList,
    budget: &mut Budget,
) -> Result<(), Stop> {
    let mut writers: Vec<Vec<TxnId>> = vec![Vec::new(); history.keys.len()];
    for (id, txn) in history.txns.iter().enumerate() {
        if txn.status == TxnStatus::Ok {
            for m in &txn.mops {
                if let Mop::Write { key, .. } = *m
                    && writers[key as usize].last() != Some(&(id as TxnId))
                {
                    writers[key as usize].push(id as TxnId);
                }
            }
        }
    }
    for (key, ws) in writers.iter().enumerate() {
        for &r in readers
            .get(&(key as KeyId, None))
            .map_or(&[][..], Vec::as_slice)
        {
            for &w in ws {
                budget.tick()?;
                edges.add(r, w, RW);
            }
        }
    }
    Ok(())
}

/// The wr edge of an external read of `key = v` by `id`, or the anomaly it shows.
fn read_from(
    history: &TxnHistory,
    reg: &Register,
    id: TxnId,
    key: KeyId,
    v: i64,
    findings: &mut Findings,
    edges: &mut EdgeList,
) {
    let k = history.key_name(key);
    match reg.writes.get(&(key, v)) {
        None => findings.add(history, AnomalyKind::GarbageRead, Some(key), &[id], |_| {
            format!("Then: T1 read key {k} = {v}, but no transaction ever wrote {v} to {k}.\n")
        }),
        Some(w) if history.txns[w.writer as usize].status == TxnStatus::Fail => {
            findings.add(
                history,
                AnomalyKind::G1a,
                Some(key),
                &[id, w.writer],
                |_| {
                    format!(
                        "Then: T1 read key {k} = {v}, written by T2; but T2 failed (aborted).\n"
                    )
                },
            );
        }
        Some(w) if w.intermediate && w.writer != id => {
            findings.add(history, AnomalyKind::G1b, Some(key), &[id, w.writer], |_| {
                format!("Then: T1 read key {k} = {v}, which T2 wrote and then overwrote in the same transaction: an intermediate version.\n")
            });
        }
        Some(w) => edges.add(w.writer, id, WR),
    }
}

/// `internal`: a read must return the transaction's own last write of the key, or its
/// own earlier read when it has not written since.
fn internal(history: &TxnHistory, id: TxnId, findings: &mut Findings) {
    let mut known: Vec<(KeyId, Version)> = Vec::new();
    for m in &history.txns[id as usize].mops {
        let (key, v, is_read) = match m {
            Mop::Write { key, value } => (*key, Some(*value), false),
            Mop::Read { key, value } => match value {
                ReadValue::Int(v) => (*key, Some(*v), true),
                ReadValue::Nil => (*key, None, true),
                _ => continue,
            },
            Mop::Append { .. } => continue,
        };
        let slot = known.iter().position(|(k, _)| *k == key);
        if is_read
            && let Some(i) = slot
            && known[i].1 != v
        {
            let (k, expected) = (history.key_name(key), known[i].1);
            let show = |v: Version| v.map_or("nil".to_owned(), |v| v.to_string());
            findings.add(history, AnomalyKind::Internal, Some(key), &[id], |_| {
                format!(
                    "Then: T1 read key {k} = {}, but its own earlier operations on {k} mean it should have read {}.\n",
                    show(v),
                    show(expected)
                )
            });
        }
        match slot {
            Some(i) => known[i].1 = v,
            None => known.push((key, v)),
        }
    }
}

//! List-append inference, after Elle: every read of a key returns the whole list, so the
//! longest read of a key is a prefix of its version order, and each element has one
//! writer. From these come the non-cycle anomalies (internal, incompatible-order,
//! duplicate-elements, garbage reads, G1a, G1b, the final-read checks) and the ww, wr
//! and rw edges.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::budget::{Budget, Stop};
use super::graph::{EdgeList, RW, WR, WW};
use super::history::{KeyId, Mop, ReadValue, TxnHistory, TxnId, TxnStatus};
use super::model::AnomalyKind;
use super::report::{Findings, list};

/// A fast, fixed hasher (FxHash's multiply-rotate) for integer keys; never iterated for
/// output, so its order does not matter.
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_i64(&mut self, x: i64) {
        self.write_u64(x as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map with the [`FxHasher`].
pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Where one appended element is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ElemInfo {
    /// The transaction that appended it.
    pub writer: TxnId,
    /// Its position in its key's version order; `u32::MAX` if no read shows it.
    pub pos: u32,
    /// Whether its writer appended to the same key again after it.
    pub intermediate: bool,
}

/// What list-append inference knows: the version order of each key and every element.
#[derive(Debug, Default)]
pub(crate) struct ListAppend {
    /// Per key, the longest read (empty if never read).
    pub orders: Vec<Box<[i64]>>,
    /// Every appended element.
    pub elems: FxMap<(KeyId, i64), ElemInfo>,
    /// Per key, the `ok` transactions that appended to it an element no read shows
    /// (sorted, without repeats): such an element follows every element read, so they
    /// follow every read of the key and the last observed writer.
    pub unobserved: Vec<Vec<TxnId>>,
}

impl ListAppend {
    /// The writer of `elem` in `key`, if it has one that did not fail.
    pub(crate) fn live_writer(&self, history: &TxnHistory, key: KeyId, elem: i64) -> Option<TxnId> {
        let info = self.elems.get(&(key, elem))?;
        (history.txns[info.writer as usize].status != TxnStatus::Fail).then_some(info.writer)
    }
}

/// The read `key` of an `ok` transaction returned: `None` if it is not a list read.
fn read_list(value: &ReadValue) -> Option<&[i64]> {
    match value {
        ReadValue::Nil => Some(&[]),
        ReadValue::List(l) => Some(l),
        _ => None,
    }
}

/// Runs the whole inference: anomalies into `findings`, edges into `edges`.
pub(crate) fn infer(
    history: &TxnHistory,
    findings: &mut Findings,
    edges: &mut EdgeList,
    budget: &mut Budget,
) -> Result<ListAppend, Stop> {
    let mut la = ListAppend {
        orders: vec![Box::default(); history.keys.len()],
        elems: index_appends(history, budget)?,
        unobserved: Vec::new(),
    };
    version_orders(history, &mut la, findings, budget)?;
    la.unobserved = unobserved_appends(history, &la, budget)?;
    for key in 0..history.keys.len() as KeyId {
        budget.tick()?;
        ww_edges(history, &la, key, edges);
    }
    for id in 0..history.txns.len() as TxnId {
        budget.tick()?;
        if history.txns[id as usize].status == TxnStatus::Ok {
            internal(history, id, findings);
            read_edges(history, &la, id, findings, edges);
        }
    }
    final_reads(history, &la, findings, budget)?;
    Ok(la)
}

/// Every appended element with its writer, and whether it is an intermediate append.
fn index_appends(
    history: &TxnHistory,
    budget: &mut Budget,
) -> Result<FxMap<(KeyId, i64), ElemInfo>, Stop> {
    let mut elems = FxMap::default();
    let mut later: Vec<KeyId> = Vec::new();
    for (id, txn) in history.txns.iter().enumerate() {
        budget.tick()?;
        later.clear();
        for m in txn.mops.iter().rev() {
            if let Mop::Append { key, elem } = *m {
                let intermediate = later.contains(&key);
                if !intermediate {
                    later.push(key);
                }
                elems.insert(
                    (key, elem),
                    ElemInfo {
                        writer: id as TxnId,
                        pos: u32::MAX,
                        intermediate,
                    },
                );
            }
        }
    }
    Ok(elems)
}

/// The longest read of each key; reads that are not its prefixes are
/// `incompatible-order`; elements are placed in the order, and checked (duplicates,
/// garbage, aborted writers).
fn version_orders(
    history: &TxnHistory,
    la: &mut ListAppend,
    findings: &mut Findings,
    budget: &mut Budget,
) -> Result<(), Stop> {
    let mut longest: Vec<Option<(TxnId, usize)>> = vec![None; history.keys.len()];
    for_each_read(history, budget, |id, i, key, l| {
        let best = &mut longest[key as usize];
        let len = |(t, m): (TxnId, usize)| read_at(history, t, m).len();
        if best.is_none_or(|b| l.len() > len(b)) {
            *best = Some((id, i));
        }
    })?;
    for (key, best) in longest.iter().enumerate() {
        if let Some((t, m)) = *best {
            let order = read_at(history, t, m);
            check_elements(history, la, key as KeyId, t, order, findings);
            la.orders[key] = order.into();
            for (pos, e) in order.iter().enumerate() {
                if let Some(info) = la.elems.get_mut(&(key as KeyId, *e))
                    && info.pos == u32::MAX
                {
                    info.pos = pos as u32;
                }
            }
        }
    }
    let mut incompatible: Vec<(TxnId, usize, KeyId)> = Vec::new();
    for_each_read(history, budget, |id, i, key, l| {
        if !la.orders[key as usize].starts_with(l) {
            incompatible.push((id, i, key));
        }
    })?;
    for (id, i, key) in incompatible {
        let (t, m) = longest[key as usize].unwrap_or((id, i));
        let (a, b) = (read_at(history, t, m), read_at(history, id, i));
        findings.add(history, AnomalyKind::IncompatibleOrder, Some(key), &[t, id], |_| {
            format!(
                "Then: T1 read key {k} as {} and T2 read it as {}; neither is a prefix of the other, so no one order of appends to {k} gives both reads.\n",
                list(a),
                list(b),
                k = history.key_name(key)
            )
        });
        check_elements(history, la, key, id, b, findings);
    }
    Ok(())
}

/// Calls `f(txn, mop index, key, list)` for every list read of every `ok` transaction.
fn for_each_read(
    history: &TxnHistory,
    budget: &mut Budget,
    mut f: impl FnMut(TxnId, usize, KeyId, &[i64]),
) -> Result<(), Stop> {
    for (id, txn) in history.txns.iter().enumerate() {
        budget.tick()?;
        if txn.status != TxnStatus::Ok {
            continue;
        }
        for (i, m) in txn.mops.iter().enumerate() {
            if let Mop::Read { key, value } = m
                && let Some(l) = read_list(value)
            {
                f(id as TxnId, i, *key, l);
            }
        }
    }
    Ok(())
}

fn read_at(history: &TxnHistory, id: TxnId, mop: usize) -> &[i64] {
    match &history.txns[id as usize].mops[mop] {
        Mop::Read { value, .. } => read_list(value).unwrap_or(&[]),
        _ => &[],
    }
}

/// Duplicates, garbage and aborted elements in the read `l` of `key` by `reader`.
fn check_elements(
    history: &TxnHistory,
    la: &ListAppend,
    key: KeyId,
    reader: TxnId,
    l: &[i64],
    findings: &mut Findings,
) {
    let k = history.key_name(key);
    let mut seen: FxMap<i64, ()> = FxMap::default();
    for &e in l {
        if seen.insert(e, ()).is_some() {
            findings.add(history, AnomalyKind::DuplicateElements, Some(key), &[reader], |_| {
                format!("Then: T1 read key {k} as {}, where {e} appears more than once: an append was applied twice.\n", list(l))
            });
        }
        match la.elems.get(&(key, e)) {
            None => findings.add(history, AnomalyKind::GarbageRead, Some(key), &[reader], |_| {
                format!("Then: T1 read key {k} as {}, but no transaction ever appended {e} to {k}.\n", list(l))
            }),
            Some(info) if history.txns[info.writer as usize].status == TxnStatus::Fail => {
                findings.add(history, AnomalyKind::G1a, Some(key), &[reader, info.writer], |_| {
                    format!("Then: T1 read key {k} as {}, which holds {e}, appended by T2; but T2 failed (aborted), so T1 read an aborted write.\n", list(l))
                });
            }
            Some(_) => {}
        }
    }
}

/// Per key, the `ok` writers of elements no read shows.
fn unobserved_appends(
    history: &TxnHistory,
    la: &ListAppend,
    budget: &mut Budget,
) -> Result<Vec<Vec<TxnId>>, Stop> {
    let mut out: Vec<Vec<TxnId>> = vec![Vec::new(); history.keys.len()];
    for (id, txn) in history.txns.iter().enumerate() {
        budget.tick()?;
        if txn.status != TxnStatus::Ok {
            continue;
        }
        for m in &txn.mops {
            if let Mop::Append { key, elem } = *m
                && la
                    .elems
                    .get(&(key, elem))
                    .is_some_and(|i| i.pos == u32::MAX)
                && out[key as usize].last() != Some(&(id as TxnId))
            {
                out[key as usize].push(id as TxnId);
            }
        }
    }
    Ok(out)
}

/// ww edges: the writers of consecutive elements of a key's version order, and the
/// last observed writer to each `ok` writer of an element no read shows.
fn ww_edges(history: &TxnHistory, la: &ListAppend, key: KeyId, edges: &mut EdgeList) {
    let order = &la.orders[key as usize];
    let mut prev: Option<TxnId> = None;
    for &e in order.iter() {
        let w = la.live_writer(history, key, e);
        if let (Some(a), Some(b)) = (prev, w) {
            edges.add(a, b, WW);
        }
        prev = w;
    }
    if let Some(last) = prev {
        for &w in &la.unobserved[key as usize] {
            edges.add(last, w, WW);
        }
    }
}

/// wr and rw edges from the external reads of `id` (its first read of a key, before it
/// appends to it), and G1b from any of its reads.
fn read_edges(
    history: &TxnHistory,
    la: &ListAppend,
    id: TxnId,
    findings: &mut Findings,
    edges: &mut EdgeList,
) {
    let mut touched: Vec<KeyId> = Vec::new();
    for m in &history.txns[id as usize].mops {
        let (key, l) = match m {
            Mop::Append { key, .. } => {
                touched.push(*key);
                continue;
            }
            Mop::Read { key, value } => (*key, read_list(value).unwrap_or(&[])),
            Mop::Write { .. } => continue,
        };
        if let Some(&last) = l.last()
            && let Some(info) = la.elems.get(&(key, last))
            && info.intermediate
            && info.writer != id
        {
            let k = history.key_name(key);
            findings.add(history, AnomalyKind::G1b, Some(key), &[id, info.writer], |_| {
                format!("Then: T1 read key {k} as {}, ending in {last}; but T2 appended to {k} again after {last}, so T1 read an intermediate state of T2.\n", list(l))
            });
        }
        if touched.contains(&key) {
            continue;
        }
        touched.push(key);
        let order = &la.orders[key as usize];
        if !order.starts_with(l) {
            continue;
        }
        if let Some(&last) = l.last()
            && let Some(w) = la.live_writer(history, key, last)
        {
            edges.add(w, id, WR);
        }
        if let Some(&next) = order.get(l.len())
            && let Some(w) = la.live_writer(history, key, next)
        {
            edges.add(id, w, RW);
        }
        for &w in &la.unobserved[key as usize] {
            edges.add(id, w, RW);
        }
    }
}

/// What a transaction knows of a key from its own operations.
enum Known {
    /// The whole list (after a read).
    Whole(Vec<i64>),
    /// Only its own appends, which must end the list.
    Suffix(Vec<i64>),
}

/// `internal`: a read must show the transaction's own earlier read plus its appends
/// since (or end with its appends, when it has not read the key before).
fn internal(history: &TxnHistory, id: TxnId, findings: &mut Findings) {
    let mut known: Vec<(KeyId, Known)> = Vec::new();
    let mops = &history.txns[id as usize].mops;
    for (i, m) in mops.iter().enumerate() {
        if let Mop::Read { key, value } = m
            && let Some(l) = read_list(value)
        {
            future_read(history, id, i, *key, l, findings);
        }
        let key = m.key();
        let slot = known.iter().position(|(k, _)| *k == key);
        match m {
            Mop::Append { elem, .. } => match slot {
                Some(i) => match &mut known[i].1 {
                    Known::Whole(l) | Known::Suffix(l) => l.push(*elem),
                },
                None => known.push((key, Known::Suffix(vec![*elem]))),
            },
            Mop::Read { value, .. } => {
                let Some(l) = read_list(value) else { continue };
                let expected = slot.and_then(|i| match &known[i].1 {
                    Known::Whole(w) if w.as_slice() != l => Some(list(w)),
                    Known::Suffix(s) if !l.ends_with(s) => {
                        Some(format!("a list ending in {}", list(s)))
                    }
                    _ => None,
                });
                if let Some(expected) = expected {
                    let k = history.key_name(key);
                    findings.add(history, AnomalyKind::Internal, Some(key), &[id], |_| {
                        format!("Then: T1 read key {k} as {}, but its own earlier operations on {k} mean it should have read {expected}.\n", list(l))
                    });
                }
                let whole = Known::Whole(l.to_vec());
                match slot {
                    Some(i) => known[i].1 = whole,
                    None => known.push((key, whole)),
                }
            }
            Mop::Write { .. } => {}
        }
    }
}

/// `future-read`: the read at mop `i` shows an element the transaction appends later.
fn future_read(
    history: &TxnHistory,
    id: TxnId,
    i: usize,
    key: KeyId,
    l: &[i64],
    findings: &mut Findings,
) {
    let later = history.txns[id as usize].mops[i + 1..]
        .iter()
        .find_map(|m| match *m {
            Mop::Append { key: k, elem } if k == key && l.contains(&elem) => Some(elem),
            _ => None,
        });
    if let Some(e) = later {
        let k = history.key_name(key);
        findings.add(history, AnomalyKind::FutureRead, Some(key), &[id], |_| {
            format!(
                "Then: T1 read key {k} as {}, which holds {e}, an element T1 appends only later.\n",
                list(l)
            )
        });
    }
}

/// The final read of each key: the latest read of it by an `ok` transaction invoked
/// after every transaction that appends (to any key) had completed (`ok`, `fail` or
/// `info`) — the final phase of a workload, with no writer left. `lost-append`: an `ok`
/// append missing from it; `partial-txn`: a transaction some but not all of whose
/// appends (to keys with a final read) are in them.
fn final_reads(
    history: &TxnHistory,
    la: &ListAppend,
    findings: &mut Findings,
    budget: &mut Budget,
) -> Result<(), Stop> {
    let n = history.txns.len();
    let (mut invoked, mut completed) = (vec![0usize; n], vec![usize::MAX; n]);
    for (pos, &e) in history.order.iter().enumerate() {
        if e % 2 == 0 {
            invoked[(e / 2) as usize] = pos;
        } else {
            completed[(e / 2) as usize] = pos;
        }
    }
    // The final phase starts when the last transaction that appends anything has
    // completed. One still open at the end has no completion to wait for; it may take
    // effect later, and is read as it stands.
    let quiescent = history
        .txns
        .iter()
        .enumerate()
        .filter(|(id, t)| {
            completed[*id] != usize::MAX && t.mops.iter().any(|m| matches!(m, Mop::Append { .. }))
        })
        .map(|(id, _)| completed[id])
        .max()
        .unwrap_or(0);
    // Per key: the final read's length (a prefix of the version order), or None.
    let mut final_len: Vec<Option<(usize, usize)>> = vec![None; history.keys.len()];
    for_each_read(history, budget, |id, _, key, l| {
        let at = invoked[id as usize];
        let slot = &mut final_len[key as usize];
        if at > quiescent
            && slot.is_none_or(|(best, _)| at >= best)
            && la.orders[key as usize].starts_with(l)
        {
            *slot = Some((at, l.len()));
        }
    })?;
    for id in 0..n as TxnId {
        budget.tick()?;
        final_check(history, la, id, &final_len, findings);
    }
    Ok(())
}

fn final_check(
    history: &TxnHistory,
    la: &ListAppend,
    id: TxnId,
    final_len: &[Option<(usize, usize)>],
    findings: &mut Findings,
) {
    let txn = &history.txns[id as usize];
    if txn.status == TxnStatus::Fail {
        return;
    }
    let (mut present, mut missing) = (Vec::new(), Vec::new());
    for m in &txn.mops {
        let Mop::Append { key, elem } = *m else {
            continue;
        };
        let Some((_, len)) = final_len[key as usize] else {
            continue;
        };
        let pos = la.elems.get(&(key, elem)).map_or(u32::MAX, |i| i.pos);
        if (pos as usize) < len {
            present.push((key, elem));
        } else {
            missing.push((key, elem));
            if txn.status == TxnStatus::Ok {
                let k = history.key_name(key);
                findings.add(history, AnomalyKind::LostAppend, Some(key), &[id], |_| {
                    format!("Then: T1 committed the append of {elem} to key {k}, but the final read of {k}, invoked after T1 completed, is {} and lacks it.\n", list(&la.orders[key as usize][..len]))
                });
            }
        }
    }
    if !present.is_empty() && !missing.is_empty() {
        let show = |v: &[(KeyId, i64)]| {
            v.iter()
                .map(|(k, e)| format!("{e} to {}", history.key_name(*k)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        findings.add(history, AnomalyKind::PartialTxn, None, &[id], |_| {
            format!(
                "Then: the final reads show T1's appends of {} but not of {}: T1 took effect in part.\n",
                show(&present),
                show(&missing)
            )
        });
    }
}

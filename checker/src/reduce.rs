//! The exact reductions every key's operations go through before any engine runs (under
//! `register`, `cas-register` and `kv`; not on a key with appends). Each keeps the verdict
//! of every history; the tests below compare kvlab's search with and without each one on
//! thousands of small histories, values repeated or not.
//!
//! 1. **Info operations nothing that happens can observe are dropped.** A value is
//!    *needed* when an `ok` read returns it, an `ok` cas expects it, or an `info` cas
//!    whose own value is needed expects it (a least fixpoint). An `info` write, cas or
//!    delete whose value is not needed is dropped. Proof: take a linearization with it.
//!    Every operation that reads from it is itself dropped (it observes a value that is
//!    not needed), so removing all of them leaves every kept read its source; an `info`
//!    cas that was a no-op while the dropped write's value was current moves to the end,
//!    where an `info` operation is always accepted. Conversely the dropped operations can
//!    always be placed last. This extends the older rule (drop what no kept operation
//!    observes) to chains of `info` cas nobody certain reads.
//! 2. **Info operations that must have happened are bounded by their first observer.**
//!    An `info` write or cas whose value `v` no other operation writes, and that an `ok`
//!    read or `ok` cas observes, took effect before that observer completed: its return
//!    time becomes the earliest completion among `ok` observers of `v` (unless that is
//!    before its invoke: the history is then invalid anyway). Proof: in any
//!    linearization the last write before an observer of `v` wrote `v`, and only this
//!    operation writes `v`, so it precedes every observer `r`; any operation invoked
//!    after `r` completed follows `r`, hence follows it too, so every linearization of
//!    the original satisfies the new real-time edges. The converse is immediate (an
//!    earlier return only adds edges). It is what keeps crashed clients from holding
//!    operations open to the end of the history, which is what defeats the searches.
//!
//! The reads-from engine ([`crate::reads_from`]) draws the same conclusions on its own;
//! the reductions make them available to the search engines on keys whose values repeat.

use std::collections::{HashMap, HashSet};

use porcupine_rs::Operation;

use crate::model::{KeyModel, KeyOp, Val};

/// A key's operations after the reductions, with what they did.
#[derive(Debug)]
pub(crate) struct Reduced {
    /// What is left, in the order given.
    pub ops: Vec<Operation<KeyModel>>,
    /// Info operations dropped by rule 1.
    pub dropped: usize,
    /// Info operations bounded by rule 2.
    pub bounded: usize,
}

fn uncertain(op: &Operation<KeyModel>) -> bool {
    op.metadata.as_ref().is_some_and(|m| m.uncertain)
}

/// Runs both reductions (none on a key with appends: an append after a dropped write would
/// expose it).
pub(crate) fn reduce(ops: Vec<Operation<KeyModel>>) -> Reduced {
    if ops.iter().any(|o| matches!(o.op, KeyOp::Append(_))) {
        return Reduced {
            ops,
            dropped: 0,
            bounded: 0,
        };
    }
    let before = ops.len();
    let mut ops = drop_unneeded_info(ops);
    let dropped = before - ops.len();
    let bounded = bound_observed_info(&mut ops, true);
    Reduced {
        ops,
        dropped,
        bounded,
    }
}

/// Rule 1's needed values.
fn needed_values(ops: &[Operation<KeyModel>]) -> HashSet<Option<&Val>> {
    let mut needed: HashSet<Option<&Val>> = HashSet::new();
    // An info cas whose value is needed makes its expected value needed.
    let mut expects_of_info_cas: HashMap<&Val, Vec<Option<&Val>>> = HashMap::new();
    let mut work: Vec<Option<&Val>> = Vec::new();
    for op in ops {
        match (&op.op, uncertain(op)) {
            (KeyOp::Read(v), false) => work.push(v.as_ref()),
            (KeyOp::Cas { expected, .. }, false) => work.push(expected.as_ref()),
            (KeyOp::Cas { expected, new, .. }, true) => expects_of_info_cas
                .entry(new)
                .or_default()
                .push(expected.as_ref()),
            _ => {}
        }
    }
    while let Some(v) = work.pop() {
        if !needed.insert(v) {
            continue;
        }
        if let Some(v) = v
            && let Some(expected) = expects_of_info_cas.remove(v)
        {
            work.extend(expected);
        }
    }
    needed
}

/// Rule 1.
fn drop_unneeded_info(ops: Vec<Operation<KeyModel>>) -> Vec<Operation<KeyModel>> {
    let keep: Vec<bool> = {
        let needed = needed_values(&ops);
        ops.iter()
            .map(|op| {
                !uncertain(op)
                    || match &op.op {
                        KeyOp::Read(_) | KeyOp::Append(_) => true,
                        KeyOp::Write(v) | KeyOp::Cas { new: v, .. } => needed.contains(&Some(v)),
                        KeyOp::Delete => needed.contains(&None),
                    }
            })
            .collect()
    };
    ops.into_iter()
        .zip(keep)
        .filter_map(|(op, keep)| keep.then_some(op))
        .collect()
}

/// Rule 2; returns how many operations it bounded. `unique_only: false` drops the
/// condition that only one operation writes the value (unsound: the tests show it).
fn bound_observed_info(ops: &mut [Operation<KeyModel>], unique_only: bool) -> usize {
    let bounds: Vec<(usize, i64, Option<u64>)> = {
        let mut writers: HashMap<&Val, usize> = HashMap::new();
        // The earliest completion among `ok` observers of a value, and its index.
        let mut first_seen: HashMap<&Val, (i64, Option<u64>)> = HashMap::new();
        for op in ops.iter() {
            if let KeyOp::Write(v) | KeyOp::Cas { new: v, .. } = &op.op {
                *writers.entry(v).or_default() += 1;
            }
            let observed = match &op.op {
                KeyOp::Read(Some(v))
                | KeyOp::Cas {
                    expected: Some(v), ..
                } if !uncertain(op) => v,
                _ => continue,
            };
            let at = (
                op.return_time,
                op.metadata.as_ref().and_then(|m| m.complete_index),
            );
            first_seen
                .entry(observed)
                .and_modify(|e| {
                    if at.0 < e.0 {
                        *e = at;
                    }
                })
                .or_insert(at);
        }
        ops.iter()
            .enumerate()
            .filter(|(_, op)| uncertain(op))
            .filter_map(|(i, op)| {
                let (KeyOp::Write(v) | KeyOp::Cas { new: v, .. }) = &op.op else {
                    return None;
                };
                if unique_only && writers.get(v) != Some(&1) {
                    return None;
                }
                let &(ret, index) = first_seen.get(v)?;
                // An observer that completed before the write began makes the history
                // invalid whatever the bound; leave that to the engines.
                (ret < op.return_time && ret > op.call_time).then_some((i, ret, index))
            })
            .collect()
    };
    for &(i, ret, index) in &bounds {
        ops[i].return_time = ret;
        if let Some(m) = ops[i].metadata.as_mut() {
            m.bounded_by = index;
        }
    }
    bounds.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Limits;
    use crate::engine::{EngineVerdict, search};
    use crate::model::OpOrigin;

    /// SplitMix64, for reproducible random histories.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    const END: i64 = 1_000;

    /// A random single-key history of `n` operations: intervals on a small time line,
    /// values from `values` (few: they repeat), a third of the writes and cas `info`.
    fn random_ops(rng: &mut Rng, n: usize, values: u64) -> Vec<Operation<KeyModel>> {
        let val = |rng: &mut Rng| Val::Int(rng.below(values) as i64);
        (0..n)
            .map(|i| {
                let call = rng.below(20) as i64 * 2;
                let ret = call + 1 + rng.below(8) as i64 * 2;
                let (op, info) = match rng.below(5) {
                    0 | 1 => (KeyOp::Read((rng.below(4) > 0).then(|| val(rng))), false),
                    2 => (KeyOp::Write(val(rng)), rng.below(3) == 0),
                    3 => {
                        let info = rng.below(3) == 0;
                        (
                            KeyOp::Cas {
                                expected: (rng.below(4) > 0).then(|| val(rng)),
                                new: val(rng),
                                uncertain: info,
                            },
                            info,
                        )
                    }
                    _ => (KeyOp::Delete, rng.below(3) == 0),
                };
                Operation {
                    client_id: Some(i as u32),
                    call_time: call,
                    return_time: if info { END } else { ret },
                    op,
                    metadata: Some(OpOrigin {
                        process: i as u64,
                        invoke_index: call as u64,
                        complete_index: Some(ret as u64),
                        uncertain: info,
                        node: None,
                        bounded_by: None,
                    }),
                }
            })
            .collect()
    }

    fn linearizable(ops: &[Operation<KeyModel>]) -> bool {
        let limits = Limits {
            deadline: None,
            memory_limit_bytes: None,
            cancel: None,
            abort: None,
        };
        match search(ops, &limits, u64::MAX).verdict {
            EngineVerdict::Linearizable => true,
            EngineVerdict::NotLinearizable => false,
            EngineVerdict::Stopped(r) => panic!("stopped: {r:?}"),
        }
    }

    /// Runs `reduction` on many random histories; returns (cases it changed, cases whose
    /// verdict it changed).
    fn compare(
        reduction: impl Fn(Vec<Operation<KeyModel>>) -> (Vec<Operation<KeyModel>>, bool),
    ) -> (usize, usize) {
        let mut rng = Rng(15);
        let (mut changed, mut flipped) = (0, 0);
        for case in 0..3000 {
            let values = if case % 2 == 0 { 3 } else { 40 };
            let ops = random_ops(&mut rng, 3 + case % 6, values);
            let before = linearizable(&ops);
            let (after_ops, did) = reduction(ops);
            if did {
                changed += 1;
                if linearizable(&after_ops) != before {
                    flipped += 1;
                }
            }
        }
        (changed, flipped)
    }

    #[test]
    fn dropping_unneeded_info_operations_keeps_every_verdict() {
        let (changed, flipped) = compare(|ops| {
            let n = ops.len();
            let after = drop_unneeded_info(ops);
            let did = after.len() != n;
            (after, did)
        });
        assert!(
            changed > 300,
            "the rule must apply often to mean something: {changed}"
        );
        assert_eq!(flipped, 0);
    }

    #[test]
    fn bounding_observed_info_operations_keeps_every_verdict() {
        let (changed, flipped) = compare(|mut ops| {
            let did = bound_observed_info(&mut ops, true) > 0;
            (ops, did)
        });
        assert!(
            changed > 200,
            "the rule must apply often to mean something: {changed}"
        );
        assert_eq!(flipped, 0);
    }

    #[test]
    fn both_reductions_together_keep_every_verdict() {
        let (changed, flipped) = compare(|ops| {
            let r = reduce(ops);
            let did = r.dropped + r.bounded > 0;
            (r.ops, did)
        });
        assert!(changed > 600, "{changed}");
        assert_eq!(flipped, 0);
    }

    #[test]
    fn bounding_without_unique_values_would_change_a_verdict() {
        // The comparison above can fail: bounding an info write whose value another
        // operation also writes is wrong. write 1; read 1; info write 1; write 2; read 1:
        // the last read sees the info write, which took effect after write 2 — bounding
        // it by the first read of 1 (which read the ok write) makes the history invalid.
        let mut rng = Rng(3);
        let mut ops = random_ops(&mut rng, 5, 3);
        let spec: [(i64, i64, KeyOp, bool); 5] = [
            (0, 1, KeyOp::Write(Val::Int(1)), false),
            (2, 5, KeyOp::Read(Some(Val::Int(1))), false),
            (3, END, KeyOp::Write(Val::Int(1)), true),
            (6, 7, KeyOp::Write(Val::Int(2)), false),
            (8, 9, KeyOp::Read(Some(Val::Int(1))), false),
        ];
        for (op, (call, ret, key_op, info)) in ops.iter_mut().zip(spec) {
            (op.call_time, op.return_time, op.op) = (call, ret, key_op);
            op.metadata.as_mut().expect("set").uncertain = info;
        }
        assert!(linearizable(&ops));
        let mut sound = ops.clone();
        assert_eq!(
            bound_observed_info(&mut sound, true),
            0,
            "1 has two writers"
        );
        let mut unsound = ops;
        assert_eq!(bound_observed_info(&mut unsound, false), 1);
        assert!(
            !linearizable(&unsound),
            "the unsound bound flips the verdict"
        );
    }

    #[test]
    fn an_info_cas_chain_nobody_certain_reads_is_dropped_whole() {
        let mut rng = Rng(1);
        let mut ops = random_ops(&mut rng, 3, 3);
        // write 7 (info), cas 7→8 (info), read 1 (ok): 7 and 8 are not needed.
        ops[0].op = KeyOp::Write(Val::Int(7));
        ops[1].op = KeyOp::Cas {
            expected: Some(Val::Int(7)),
            new: Val::Int(8),
            uncertain: true,
        };
        ops[2].op = KeyOp::Read(None);
        for (i, info) in [(0, true), (1, true), (2, false)] {
            ops[i].metadata.as_mut().expect("set").uncertain = info;
        }
        assert_eq!(reduce(ops).dropped, 2);
    }
}

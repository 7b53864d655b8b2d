//! The checker agrees with a naive, independent search on thousands of small random
//! single-key histories (linearizable or not), including fails, info operations, cas
//! and deletes, with repeated values and with unique ones — which also exercises the
//! reductions that run before the engines (dropping info operations nothing certain
//! observes, bounding those that must have happened). The reads-from engine must decide
//! every history whose observed values have one writer each, and be right whenever it
//! decides one whose values repeat.

mod common;

use common::{Hist, SplitMix};
use kvlab_checker::{CheckConfig, Engine, ModelKind, OpFn, Verdict, check_with};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
enum Op {
    Read(Option<i64>),
    Write(i64),
    Cas(Option<i64>, i64),
    Delete,
}

#[derive(Clone, Copy, Debug)]
struct Timed {
    op: Op,
    call: usize,
    /// `None`: info, returns at infinity.
    ret: Option<usize>,
}

/// Jepsen semantics stated directly: ok operations happen; info operations (except
/// reads, which say nothing) may or may not happen; fails never happen. Tries every
/// subset of info operations and every real-time-respecting order.
fn brute_linearizable(ops: &[Timed]) -> bool {
    let must: Vec<Timed> = ops.iter().copied().filter(|t| t.ret.is_some()).collect();
    let maybe: Vec<Timed> = ops.iter().copied().filter(|t| t.ret.is_none()).collect();
    (0u32..1 << maybe.len()).any(|mask| {
        let mut chosen = must.clone();
        chosen.extend(
            maybe
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, t)| *t),
        );
        let mut placed = vec![false; chosen.len()];
        search(&chosen, &mut placed, None)
    })
}

fn search(ops: &[Timed], placed: &mut [bool], state: Option<i64>) -> bool {
    if placed.iter().all(|&p| p) {
        return true;
    }
    for i in 0..ops.len() {
        if placed[i] {
            continue;
        }
        // Every unplaced operation that returned before `i` was called must go first.
        let blocked = (0..ops.len())
            .any(|j| j != i && !placed[j] && ops[j].ret.is_some_and(|r| r < ops[i].call));
        if blocked {
            continue;
        }
        let next = match ops[i].op {
            Op::Read(v) if v == state => state,
            Op::Read(_) => continue,
            Op::Write(v) => Some(v),
            Op::Cas(e, n) if e == state => Some(n),
            Op::Cas(..) => continue,
            Op::Delete => None,
        };
        placed[i] = true;
        if search(ops, placed, next) {
            placed[i] = false;
            return true;
        }
        placed[i] = false;
    }
    false
}

/// Where values come from: a few that repeat, or a counter (every write its own value;
/// reads and cas pick among values written so far, absent, and one never written).
struct Values {
    unique: bool,
    written: Vec<i64>,
    next: i64,
}

impl Values {
    fn new(unique: bool) -> Self {
        Values {
            unique,
            written: Vec::new(),
            next: 1,
        }
    }
    /// A value to write.
    fn fresh(&mut self, rng: &mut SplitMix) -> i64 {
        let v = if self.unique {
            self.next += 1;
            self.next
        } else {
            1 + rng.below(3) as i64
        };
        self.written.push(v);
        v
    }
    /// A value to read or expect (`None`: absent).
    fn seen(&mut self, rng: &mut SplitMix) -> Option<i64> {
        if rng.chance(0.25) {
            return None;
        }
        if !self.unique {
            return Some(1 + rng.below(3) as i64);
        }
        match rng.below(self.written.len() as u64 + 1) as usize {
            i if i < self.written.len() => Some(self.written[self.written.len() - 1 - i]),
            _ => Some(-1),
        }
    }
}

/// A random structurally valid single-key history and its operations for the oracle.
fn random_history(rng: &mut SplitMix, operations: usize, unique: bool) -> (Hist, Vec<Timed>) {
    let mut values = Values::new(unique);
    let mut h = Hist::new();
    let mut timed = Vec::new();
    let mut processes: Vec<u64> = vec![0, 1, 2];
    let mut next_process = 3;
    // Per slot: (f, args, call position, oracle op) of the open operation.
    let mut open: Vec<Option<(OpFn, Value, usize, Op)>> = vec![None; 3];
    let mut invoked = 0;
    while invoked < operations || open.iter().any(Option::is_some) {
        let slot = rng.below(3) as usize;
        let p = processes[slot];
        match open[slot].take() {
            None if invoked < operations => {
                invoked += 1;
                let (f, args, op) = match rng.below(4) {
                    0 => (OpFn::Read, Value::Null, Op::Read(None)),
                    1 => {
                        let v = values.fresh(rng);
                        (OpFn::Write, json!(v), Op::Write(v))
                    }
                    2 => {
                        let e = values.seen(rng);
                        let n = values.fresh(rng);
                        (OpFn::Cas, json!([e, n]), Op::Cas(e, n))
                    }
                    _ => (OpFn::Delete, Value::Null, Op::Delete),
                };
                let call = h.events.len();
                h.invoke(p, f, "k", args.clone());
                open[slot] = Some((f, args, call, op));
            }
            None => {}
            Some((f, args, call, op)) => {
                let ret = h.events.len();
                let roll = rng.below(10);
                if roll < 6 || (roll < 7 && f == OpFn::Read) {
                    let op = if let Op::Read(_) = op {
                        let v = values.seen(rng);
                        h.ok(p, f, "k", json!(v));
                        Op::Read(v)
                    } else {
                        h.ok(p, f, "k", args);
                        op
                    };
                    timed.push(Timed {
                        op,
                        call,
                        ret: Some(ret),
                    });
                } else if roll < 8 {
                    h.fail(p, f, "k", args);
                } else {
                    h.info(p, f, "k", if f == OpFn::Read { Value::Null } else { args });
                    if f != OpFn::Read {
                        timed.push(Timed {
                            op,
                            call,
                            ret: None,
                        });
                    }
                    processes[slot] = next_process;
                    next_process += 1;
                }
            }
        }
    }
    (h, timed)
}

fn verdict(h: &Hist, engine: Engine) -> Verdict {
    check_with(
        &h.events,
        &CheckConfig {
            model: ModelKind::Kv,
            timeout: None,
            memory_limit_bytes: None,
            engine,
            stop_at_first_invalid: true,
        },
    )
    .expect("well formed")
    .verdict
}

/// Whether every value an operation observes (an ok read, any cas) has one writer (the
/// initial value counting as the writer of absent, so not with deletes).
fn observed_values_unique(timed: &[Timed]) -> bool {
    let mut writers: std::collections::BTreeMap<Option<i64>, usize> = Default::default();
    writers.insert(None, 1);
    for t in timed {
        match t.op {
            Op::Write(v) | Op::Cas(_, v) => *writers.entry(Some(v)).or_default() += 1,
            Op::Delete => *writers.entry(None).or_default() += 1,
            Op::Read(_) => {}
        }
    }
    timed.iter().all(|t| match t.op {
        Op::Read(v) | Op::Cas(v, _) => writers.get(&v).copied().unwrap_or(0) <= 1,
        _ => true,
    })
}

/// Checks `cases` random histories against the oracle; returns (valid, invalid,
/// decided by the reads-from engine alone).
fn agree_with_brute_force(seed: u64, cases: usize, unique: bool) -> (usize, usize, usize) {
    let mut rng = SplitMix::new(seed);
    let (mut valid, mut invalid, mut decided) = (0, 0, 0);
    for case in 0..cases {
        let ops = 2 + (case % 6);
        let (h, timed) = random_history(&mut rng, ops, unique);
        let expected = brute_linearizable(&timed);
        let expected_verdict = if expected {
            Verdict::Valid
        } else {
            Verdict::Invalid
        };
        // Each search engine alone, and the race, against the oracle.
        for engine in [Engine::Race, Engine::Porcupine, Engine::Kvlab] {
            let got = verdict(&h, engine);
            assert_eq!(
                got,
                expected_verdict,
                "case {case}: {engine} says {got:?}, brute force says {expected}\n{}",
                h.jsonl()
            );
        }
        // The reads-from engine alone: never wrong; undecided only where values repeat.
        let got = verdict(&h, Engine::ReadsFrom);
        if got == Verdict::Unknown {
            assert!(
                !observed_values_unique(&timed),
                "case {case}: reads-from undecided on unique values\n{}",
                h.jsonl()
            );
        } else {
            decided += 1;
            assert_eq!(
                got,
                expected_verdict,
                "case {case}: reads-from says {got:?}, brute force says {expected}\n{}",
                h.jsonl()
            );
        }
        if expected { valid += 1 } else { invalid += 1 }
    }
    (valid, invalid, decided)
}

#[test]
fn checker_agrees_with_brute_force_on_small_random_histories() {
    let (valid, invalid, decided) = agree_with_brute_force(42, 3000, false);
    eprintln!(
        "repeated values: {valid} valid, {invalid} invalid, {decided} decided by reads-from alone"
    );
    // Both answers must be well represented for the comparison to mean something.
    assert!(
        valid > 300 && invalid > 300,
        "valid {valid}, invalid {invalid}"
    );
}

#[test]
fn every_engine_agrees_with_brute_force_on_unique_value_histories() {
    let (valid, invalid, decided) = agree_with_brute_force(7, 3000, true);
    eprintln!(
        "unique values: {valid} valid, {invalid} invalid, {decided} decided by reads-from alone"
    );
    assert!(
        valid > 300 && invalid > 300,
        "valid {valid}, invalid {invalid}"
    );
    // Deletes make absent a repeated value; everything else the engine decides.
    assert!(decided > 2500, "reads-from decided only {decided} of 3000");
}

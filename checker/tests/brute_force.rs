//! The checker agrees with a naive, independent search on thousands of small random
//! single-key histories (linearizable or not), including fails, info operations, cas
//! and deletes with repeated values — which also exercises the reduction that drops
//! unobserved info operations.

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

fn small_value(rng: &mut SplitMix) -> i64 {
    1 + rng.below(3) as i64
}

fn maybe_value(rng: &mut SplitMix) -> Option<i64> {
    if rng.chance(0.25) {
        None
    } else {
        Some(small_value(rng))
    }
}

/// A random structurally valid single-key history and its operations for the oracle.
fn random_history(rng: &mut SplitMix, operations: usize) -> (Hist, Vec<Timed>) {
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
                        let v = small_value(rng);
                        (OpFn::Write, json!(v), Op::Write(v))
                    }
                    2 => {
                        let (e, n) = (maybe_value(rng), small_value(rng));
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
                        let v = maybe_value(rng);
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

#[test]
fn checker_agrees_with_brute_force_on_small_random_histories() {
    let mut rng = SplitMix::new(42);
    let (mut valid, mut invalid) = (0, 0);
    for case in 0..3000 {
        let ops = 2 + (case % 6);
        let (h, timed) = random_history(&mut rng, ops);
        let expected = brute_linearizable(&timed);
        // Each engine alone, and the race, against the oracle.
        for engine in Engine::ALL {
            let r = check_with(
                &h.events,
                &CheckConfig {
                    model: ModelKind::Kv,
                    timeout: None,
                    memory_limit_bytes: None,
                    engine,
                    stop_at_first_invalid: true,
                },
            )
            .expect("well formed");
            let got = r.verdict == Verdict::Valid;
            assert_eq!(
                got,
                expected,
                "case {case}: {engine} says {:?}, brute force says {expected}\n{}",
                r.verdict,
                h.jsonl()
            );
        }
        if expected { valid += 1 } else { invalid += 1 }
    }
    // Both answers must be well represented for the comparison to mean something.
    assert!(
        valid > 300 && invalid > 300,
        "valid {valid}, invalid {invalid}"
    );
}

//! kvlab's own search engine, which races porcupine-rs (see [`crate::check`](mod@crate::check)).
//!
//! It is the Wing & Gong search as porcupine-rs runs it — pick an operation that may be
//! linearized now, apply it to the model, recurse, undo on failure, and remember the
//! configurations (set of linearized operations, state) already refuted — with the
//! changes that make it survive many concurrent clients on one key:
//!
//! * **Reads are linearized at once.** An operation that never changes the state (a
//!   read, a read-only transaction) and that the current state accepts, among those that
//!   may be linearized now, is linearized immediately and never branched on. Proof: take
//!   any linearization of the rest that places it later; moving it to the front keeps
//!   real-time order (it may be linearized now, so nothing left must precede it) and
//!   every state (it changes none, and the current state accepts it). So a configuration
//!   succeeds iff it succeeds after the read; on failure the search backtracks past it.
//! * **A compact memo.** A configuration is remembered as a 128-bit Zobrist hash of the
//!   set of linearized operations plus the exact model state: about 50 bytes whatever the
//!   history's length, where porcupine-rs keeps a bitset of all operations (`n/8` bytes)
//!   per entry. Two different sets collide with probability about `m²/2¹²⁹` for `m`
//!   remembered configurations (below 10⁻²⁰ for a billion); a collision could only make
//!   the engine miss a linearization, and the race's other engine still has its say.
//! * **A bounded memo.** At the memory share it is given the memo stops growing: the search
//!   stays correct, only slower, and the time budget still applies.
//! * **Dancing links.** Unlinearized operations sit in a doubly linked list in call
//!   order, and a min-tree of their return times gives the earliest pending return, so a
//!   step costs the size of the concurrency window, not of the history.
//!
//! The info-operation reductions (info reads dropped, info writes nothing certain observes
//! dropped, info writes that must have happened bounded by their first observer) run
//! before every engine: see [`crate::reduce`].

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use porcupine_rs::Operation;

use crate::budget::{Limits, POLL_EVERY_STEPS, StopReason};
use crate::model::SearchModel;

/// Bytes one remembered configuration costs, beyond the state, counting the hash table's
/// spare capacity.
const MEMO_ENTRY_OVERHEAD_BYTES: usize = 40;

/// The longest partial linearization is copied when it grows by at least this fraction
/// of its length (so copying costs `O(n log n)` overall, not `O(n²)`).
const SNAPSHOT_GROWTH_DIVISOR: usize = 32;

/// The most operations named as "could not be linearized next".
pub const MAX_STUCK_OPS_REPORTED: usize = 8;

/// How a search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EngineVerdict {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    NotLinearizable,
    /// The search stopped before deciding.
    Stopped(StopReason),
}

/// The answer of [`search`], with what it explored.
#[derive(Clone, Debug)]
pub(crate) struct EngineResult {
    /// The verdict.
    pub verdict: EngineVerdict,
    /// Model steps taken.
    pub steps: u64,
    /// Configurations remembered.
    pub memo_entries: usize,
    /// The memo reached its bound and stopped growing.
    pub memo_full: bool,
    /// The most operations linearized at once.
    pub max_depth: usize,
    /// A longest partial linearization found (positions in the input), possibly a few
    /// percent shorter than `max_depth` (see [`SNAPSHOT_GROWTH_DIVISOR`]).
    pub longest: Vec<usize>,
    /// At the deepest dead end: the operations that could have been linearized next but
    /// that the state refused, earliest return first (positions in the input).
    pub stuck: Vec<usize>,
}

/// FxHash: the fast multiplicative hasher of rustc; keys here are already random (Zobrist
/// hashes) or small states, so a cryptographic hasher only costs time.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// SplitMix64, for the Zobrist keys (fixed seed: runs are reproducible).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A min-tree over return times: the earliest return among unlinearized operations.
struct MinTree {
    size: usize,
    tree: Vec<i64>,
}

impl MinTree {
    fn new(values: &[i64]) -> Self {
        let size = values.len().next_power_of_two().max(1);
        let mut tree = vec![i64::MAX; 2 * size];
        tree[size..size + values.len()].copy_from_slice(values);
        for i in (1..size).rev() {
            tree[i] = tree[2 * i].min(tree[2 * i + 1]);
        }
        MinTree { size, tree }
    }
    fn set(&mut self, i: usize, value: i64) {
        let mut at = self.size + i;
        self.tree[at] = value;
        while at > 1 {
            at /= 2;
            self.tree[at] = self.tree[2 * at].min(self.tree[2 * at + 1]);
        }
    }
    fn min(&self) -> i64 {
        self.tree[1]
    }
}

struct Frame<S> {
    op: usize,
    prev: S,
    greedy: bool,
}

/// Decides whether `ops` (one partition) is linearizable under `M`, within `limits`;
/// the memo takes at most `memo_limit_bytes`.
pub(crate) fn search<M: SearchModel>(
    ops: &[Operation<M>],
    limits: &Limits<'_>,
    memo_limit_bytes: u64,
) -> EngineResult {
    let n = ops.len();
    // Positions sorted by call time; `order[i]` is the input position of the i-th.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (ops[i].call_time, ops[i].return_time));
    let call: Vec<i64> = order.iter().map(|&i| ops[i].call_time).collect();
    let ret: Vec<i64> = order.iter().map(|&i| ops[i].return_time).collect();
    let read_only: Vec<bool> = order.iter().map(|&i| M::read_only(&ops[i].op)).collect();
    let mut seed = 0x6b76_6c61_625f_7a6f_u64;
    let zobrist: Vec<(u64, u64)> = (0..n)
        .map(|_| (splitmix(&mut seed), splitmix(&mut seed)))
        .collect();
    // Dancing links over 0..n with the head at `n`.
    let head = n;
    let mut next: Vec<usize> = (1..=n).chain(std::iter::once(0)).collect();
    let mut prev: Vec<usize> = std::iter::once(n).chain(0..n).collect();
    next[head] = if n == 0 { head } else { 0 };
    prev[head] = if n == 0 { head } else { n - 1 };
    if n > 0 {
        next[n - 1] = head;
    }
    let mut tree = MinTree::new(&ret);

    let entry_bytes = (MEMO_ENTRY_OVERHEAD_BYTES + std::mem::size_of::<M::State>()) as u64;
    let mut memo_bytes: u64 = 0;
    let mut memo: HashSet<(u64, u64, M::State), BuildHasherDefault<FxHasher>> = HashSet::default();
    let mut memo_full = false;

    let mut state = M::init();
    let mut hash = (0u64, 0u64);
    let mut frames: Vec<Frame<M::State>> = Vec::new();
    let mut remaining = n;
    let mut cursor = next[head];
    let mut fresh = true;
    let mut steps: u64 = 0;
    let mut polls: u32 = 0;
    let mut longest: Vec<usize> = Vec::new();
    let mut max_depth = 0usize;
    let mut stuck: Vec<usize> = Vec::new();
    let mut stuck_depth = 0usize;

    macro_rules! lift {
        ($j:expr) => {{
            let j = $j;
            next[prev[j]] = next[j];
            prev[next[j]] = prev[j];
            tree.set(j, i64::MAX);
            hash = (hash.0 ^ zobrist[j].0, hash.1 ^ zobrist[j].1);
            remaining -= 1;
        }};
    }

    let finish = |verdict,
                  steps,
                  memo: &HashSet<_, _>,
                  memo_full,
                  max_depth,
                  longest: Vec<usize>,
                  stuck: Vec<usize>| {
        EngineResult {
            verdict,
            steps,
            memo_entries: memo.len(),
            memo_full,
            max_depth,
            longest: longest.into_iter().map(|i: usize| order[i]).collect(),
            stuck: stuck.into_iter().map(|i: usize| order[i]).collect(),
        }
    };

    'outer: loop {
        polls += 1;
        if polls % POLL_EVERY_STEPS == 0 {
            let stop = limits.poll_fast().or_else(|| {
                if polls % (POLL_EVERY_STEPS * 64) == 0 {
                    limits.poll_memory()
                } else {
                    None
                }
            });
            if let Some(reason) = stop {
                return finish(
                    EngineVerdict::Stopped(reason),
                    steps,
                    &memo,
                    memo_full,
                    max_depth,
                    longest,
                    stuck,
                );
            }
        }
        if remaining == 0 {
            let all: Vec<usize> = frames.iter().map(|f| f.op).collect();
            return finish(
                EngineVerdict::Linearizable,
                steps,
                &memo,
                memo_full,
                n,
                all,
                Vec::new(),
            );
        }
        if fresh {
            // Linearize every read the state accepts, among those that may go now.
            'greedy: loop {
                let min_ret = tree.min();
                let mut j = next[head];
                while j != head && call[j] < min_ret {
                    if read_only[j] {
                        steps += 1;
                        let (ok, _) = M::step(&state, &ops[order[j]].op);
                        if ok {
                            lift!(j);
                            frames.push(Frame {
                                op: j,
                                prev: state.clone(),
                                greedy: true,
                            });
                            if remaining == 0 {
                                continue 'outer;
                            }
                            continue 'greedy;
                        }
                    }
                    j = next[j];
                }
                break;
            }
            if frames.len() > max_depth {
                max_depth = frames.len();
                if max_depth >= longest.len() + 1 + longest.len() / SNAPSHOT_GROWTH_DIVISOR {
                    longest = frames.iter().map(|f| f.op).collect();
                }
            }
            cursor = next[head];
        }
        let min_ret = tree.min();
        let mut j = cursor;
        while j != head && call[j] < min_ret {
            // A read the state accepted was linearized above; others cannot go now.
            if !read_only[j] {
                steps += 1;
                let (ok, new_state) = M::step(&state, &ops[order[j]].op);
                if ok {
                    let h = (hash.0 ^ zobrist[j].0, hash.1 ^ zobrist[j].1);
                    let key = (h.0, h.1, new_state);
                    let cost = entry_bytes + M::state_heap_bytes(&key.2) as u64;
                    let new = if memo_full || memo_bytes + cost > memo_limit_bytes {
                        memo_full = true;
                        !memo.contains(&key)
                    } else {
                        let inserted = memo.insert(key.clone());
                        if inserted {
                            memo_bytes += cost;
                        }
                        inserted
                    };
                    if new {
                        lift!(j);
                        let prev_state = std::mem::replace(&mut state, key.2);
                        frames.push(Frame {
                            op: j,
                            prev: prev_state,
                            greedy: false,
                        });
                        fresh = true;
                        continue 'outer;
                    }
                }
            }
            j = next[j];
        }
        // A dead end: remember the deepest one for the explanation.
        if frames.len() >= stuck_depth {
            stuck_depth = frames.len();
            stuck.clear();
            let mut candidates: Vec<usize> = Vec::new();
            let mut k = next[head];
            while k != head && call[k] < min_ret {
                candidates.push(k);
                k = next[k];
            }
            candidates.sort_by_key(|&k| ret[k]);
            stuck.extend(candidates.into_iter().take(MAX_STUCK_OPS_REPORTED));
        }
        // Backtrack: undo greedy reads, then the last choice, and try its successors.
        loop {
            let Some(frame) = frames.pop() else {
                return finish(
                    EngineVerdict::NotLinearizable,
                    steps,
                    &memo,
                    memo_full,
                    max_depth,
                    longest,
                    stuck,
                );
            };
            let j = frame.op;
            next[prev[j]] = j;
            prev[next[j]] = j;
            tree.set(j, ret[j]);
            hash = (hash.0 ^ zobrist[j].0, hash.1 ^ zobrist[j].1);
            remaining += 1;
            state = frame.prev;
            if !frame.greedy {
                cursor = next[j];
                fresh = false;
                continue 'outer;
            }
        }
    }
}

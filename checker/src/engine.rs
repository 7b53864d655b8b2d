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

type Memo<S> = HashSet<(u64, u64, S), BuildHasherDefault<FxHasher>>;

/// The search over one partition: the operations sorted by call time (`order[i]` is the
/// input position of the i-th), the ones not linearized yet as dancing links over
/// `0..n` with the head at `n`, a min-tree of their return times, and the stack of
/// choices made.
struct Search<'a, M: SearchModel> {
    ops: &'a [Operation<M>],
    order: Vec<usize>,
    call: Vec<i64>,
    ret: Vec<i64>,
    read_only: Vec<bool>,
    zobrist: Vec<(u64, u64)>,
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
    tree: MinTree,
    entry_bytes: u64,
    memo_limit_bytes: u64,
    memo_bytes: u64,
    memo: Memo<M::State>,
    memo_full: bool,
    state: M::State,
    /// Zobrist hash of the set linearized so far.
    hash: (u64, u64),
    frames: Vec<Frame<M::State>>,
    remaining: usize,
    steps: u64,
    longest: Vec<usize>,
    max_depth: usize,
    stuck: Vec<usize>,
    stuck_depth: usize,
}

/// Decides whether `ops` (one partition) is linearizable under `M`, within `limits`;
/// the memo takes at most `memo_limit_bytes`.
pub(crate) fn search<M: SearchModel>(
    ops: &[Operation<M>],
    limits: &Limits<'_>,
    memo_limit_bytes: u64,
) -> EngineResult {
    let mut s = Search::new(ops, memo_limit_bytes);
    let mut cursor = s.next[s.head];
    let mut fresh = true;
    let mut polls: u32 = 0;
    loop {
        polls += 1;
        if polls % POLL_EVERY_STEPS == 0
            && let Some(reason) = poll(limits, polls)
        {
            return s.finish(EngineVerdict::Stopped(reason));
        }
        if fresh {
            s.greedy_reads();
            s.note_depth();
            cursor = s.next[s.head];
        }
        if s.remaining == 0 {
            s.max_depth = ops.len();
            s.longest = s.frames.iter().map(|f| f.op).collect();
            s.stuck.clear();
            return s.finish(EngineVerdict::Linearizable);
        }
        if s.try_from(cursor) {
            fresh = true;
            continue;
        }
        s.note_dead_end();
        match s.backtrack() {
            Some(c) => {
                cursor = c;
                fresh = false;
            }
            None => return s.finish(EngineVerdict::NotLinearizable),
        }
    }
}

/// The budget's verdict at poll number `polls` (memory is looked at less often).
fn poll(limits: &Limits<'_>, polls: u32) -> Option<StopReason> {
    limits.poll_fast().or_else(|| {
        if polls % (POLL_EVERY_STEPS * 64) == 0 {
            limits.poll_memory()
        } else {
            None
        }
    })
}

impl<'a, M: SearchModel> Search<'a, M> {
    fn new(ops: &'a [Operation<M>], memo_limit_bytes: u64) -> Self {
        let n = ops.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (ops[i].call_time, ops[i].return_time));
        let call: Vec<i64> = order.iter().map(|&i| ops[i].call_time).collect();
        let ret: Vec<i64> = order.iter().map(|&i| ops[i].return_time).collect();
        let read_only: Vec<bool> = order.iter().map(|&i| M::read_only(&ops[i].op)).collect();
        let mut seed = 0x6b76_6c61_625f_7a6f_u64;
        let zobrist: Vec<(u64, u64)> = (0..n)
            .map(|_| (splitmix(&mut seed), splitmix(&mut seed)))
            .collect();
        let head = n;
        let mut next: Vec<usize> = (1..=n).chain(std::iter::once(0)).collect();
        let mut prev: Vec<usize> = std::iter::once(n).chain(0..n).collect();
        next[head] = if n == 0 { head } else { 0 };
        prev[head] = if n == 0 { head } else { n - 1 };
        if n > 0 {
            next[n - 1] = head;
        }
        let tree = MinTree::new(&ret);
        Search {
            ops,
            order,
            call,
            ret,
            read_only,
            zobrist,
            next,
            prev,
            head,
            tree,
            entry_bytes: (MEMO_ENTRY_OVERHEAD_BYTES + std::mem::size_of::<M::State>()) as u64,
            memo_limit_bytes,
            memo_bytes: 0,
            memo: Memo::default(),
            memo_full: false,
            state: M::init(),
            hash: (0, 0),
            frames: Vec::new(),
            remaining: n,
            steps: 0,
            longest: Vec::new(),
            max_depth: 0,
            stuck: Vec::new(),
            stuck_depth: 0,
        }
    }

    /// Takes operation `j` out of the candidates (it is linearized next).
    fn lift(&mut self, j: usize) {
        let (next, prev) = (self.next[j], self.prev[j]);
        self.next[prev] = next;
        self.prev[next] = prev;
        self.tree.set(j, i64::MAX);
        self.hash = (
            self.hash.0 ^ self.zobrist[j].0,
            self.hash.1 ^ self.zobrist[j].1,
        );
        self.remaining -= 1;
    }

    /// Puts operation `j` back among the candidates.
    fn unlift(&mut self, j: usize) {
        let (next, prev) = (self.next[j], self.prev[j]);
        self.next[prev] = j;
        self.prev[next] = j;
        self.tree.set(j, self.ret[j]);
        self.hash = (
            self.hash.0 ^ self.zobrist[j].0,
            self.hash.1 ^ self.zobrist[j].1,
        );
        self.remaining += 1;
    }

    /// Linearizes every read the state accepts, among those that may go now.
    fn greedy_reads(&mut self) {
        'greedy: loop {
            let min_ret = self.tree.min();
            let mut j = self.next[self.head];
            while j != self.head && self.call[j] < min_ret {
                if self.read_only[j] {
                    self.steps += 1;
                    let (ok, _) = M::step(&self.state, &self.ops[self.order[j]].op);
                    if ok {
                        self.lift(j);
                        self.frames.push(Frame {
                            op: j,
                            prev: self.state.clone(),
                            greedy: true,
                        });
                        if self.remaining == 0 {
                            return;
                        }
                        continue 'greedy;
                    }
                }
                j = self.next[j];
            }
            return;
        }
    }

    /// Remembers the deepest linearization reached, for the explanation.
    fn note_depth(&mut self) {
        if self.frames.len() > self.max_depth {
            self.max_depth = self.frames.len();
            let longest = self.longest.len();
            if self.max_depth >= longest + 1 + longest / SNAPSHOT_GROWTH_DIVISOR {
                self.longest = self.frames.iter().map(|f| f.op).collect();
            }
        }
    }

    /// Tries the writes that may go now, from `cursor` on (reads the state accepted went
    /// greedily; others cannot go now); linearizes the first one that leads somewhere
    /// new and says whether there was one.
    fn try_from(&mut self, cursor: usize) -> bool {
        let min_ret = self.tree.min();
        let mut j = cursor;
        while j != self.head && self.call[j] < min_ret {
            if !self.read_only[j] {
                self.steps += 1;
                let (ok, new_state) = M::step(&self.state, &self.ops[self.order[j]].op);
                if ok && let Some(new_state) = self.admit(j, new_state) {
                    self.lift(j);
                    let prev = std::mem::replace(&mut self.state, new_state);
                    self.frames.push(Frame {
                        op: j,
                        prev,
                        greedy: false,
                    });
                    return true;
                }
            }
            j = self.next[j];
        }
        false
    }

    /// Whether linearizing `j` next, reaching `new_state`, is a configuration not seen
    /// before (memoized while the memo has room; once full, only looked up).
    fn admit(&mut self, j: usize, new_state: M::State) -> Option<M::State> {
        let h = (
            self.hash.0 ^ self.zobrist[j].0,
            self.hash.1 ^ self.zobrist[j].1,
        );
        let key = (h.0, h.1, new_state);
        let cost = self.entry_bytes + M::state_heap_bytes(&key.2) as u64;
        let new = if self.memo_full || self.memo_bytes + cost > self.memo_limit_bytes {
            self.memo_full = true;
            !self.memo.contains(&key)
        } else {
            let inserted = self.memo.insert(key.clone());
            if inserted {
                self.memo_bytes += cost;
            }
            inserted
        };
        new.then_some(key.2)
    }

    /// A dead end: remembers the deepest one's candidates for the explanation.
    fn note_dead_end(&mut self) {
        if self.frames.len() < self.stuck_depth {
            return;
        }
        self.stuck_depth = self.frames.len();
        let min_ret = self.tree.min();
        let mut candidates: Vec<usize> = Vec::new();
        let mut k = self.next[self.head];
        while k != self.head && self.call[k] < min_ret {
            candidates.push(k);
            k = self.next[k];
        }
        candidates.sort_by_key(|&k| self.ret[k]);
        self.stuck.clear();
        self.stuck
            .extend(candidates.into_iter().take(MAX_STUCK_OPS_REPORTED));
    }

    /// Undoes greedy reads, then the last choice; returns where to try its successors,
    /// or `None` when no choice is left.
    fn backtrack(&mut self) -> Option<usize> {
        loop {
            let frame = self.frames.pop()?;
            let j = frame.op;
            self.unlift(j);
            self.state = frame.prev;
            if !frame.greedy {
                return Some(self.next[j]);
            }
        }
    }

    fn finish(self, verdict: EngineVerdict) -> EngineResult {
        let order = &self.order;
        EngineResult {
            verdict,
            steps: self.steps,
            memo_entries: self.memo.len(),
            memo_full: self.memo_full,
            max_depth: self.max_depth,
            longest: self.longest.iter().map(|&i| order[i]).collect(),
            stuck: self.stuck.iter().map(|&i| order[i]).collect(),
        }
    }
}

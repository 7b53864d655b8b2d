//! kvlab's third engine, for registers (`register`, `cas-register`, `kv` without appends):
//! when written values are unique it decides a key in `O(n log n)` from the reads-from
//! relation instead of searching, and it explains an invalid key with the few operations
//! that prove it.
//!
//! Verifying linearizability of a register history is NP-complete in general, but
//! polynomial when every read is mapped to the write it read from (Gibbons & Korach,
//! "Testing shared memories", SIAM J. Comput. 26(4), 1997). Jepsen register tests that
//! write unique values hand that map over for free: a read of 7 read the write of 7. The
//! search engines (Knossos, porcupine-rs, kvlab's [`engine`](crate::engine)) do not use it,
//! which is why a hot key with many crashed clients defeats them.
//!
//! ## The argument
//!
//! The operations of one key, fails and info reads dropped (and reduced: see
//! [`crate::reduce`]): an `ok` operation happened between its invoke and its completion; an
//! `info` one may have happened at any time after its invoke. The key starts absent: a
//! virtual write `init` precedes everything (after a cut it writes the cut's value: see
//! "Cutting"). An operation *observes* a value (an `ok` read returns it, a cas expects
//! it) and *writes* one (write, cas, delete: absent).
//!
//! 1. **Sources.** The last write before an observer `o` writes the value `o` observes,
//!    so it began before `o` completed, and it is not a write `w` that some write surely
//!    happening overwrote before `o` began (an `ok` write invoked after `w` completed and
//!    completed before `o` was invoked comes between `w` and `o` in every
//!    linearization). If exactly one writer of
//!    the value is left, it is `o`'s *source* in every linearization; if none, `o` is
//!    impossible. This holds whatever values repeat, so the argument below needs only that
//!    every observer has one possible source — true when written values are unique, and
//!    often when they are not (reads of absent after deletes, …).
//! 2. **What must happen.** An `ok` operation happens; the source of an operation that
//!    happens happens (an `info` write read by an `ok` read took effect). The other `info`
//!    operations can be left out: nothing that happens reads from them, so removing them
//!    from a linearization leaves every remaining read its source, and they can always be
//!    put back at the end, where an `info` operation is always accepted.
//! 3. **Blocks.** In a linearization of the operations that happen, a write and the
//!    operations whose source it is (reads, and at most one cas) form one contiguous run:
//!    no write fits between a write and an operation it is the source of (the source is
//!    the last write before it), so the cas comes after every such read (a read after it
//!    would have the cas as its last write), and a second cas with the same source would
//!    have the first as its last write. So a plain write (or `init`), the cas whose source
//!    it is, the cas whose source that one is, … and all their reads form a *block*: a
//!    contiguous run in a fixed order. A cas whose chain never reaches a plain write (a
//!    cycle of cas) cannot happen.
//! 4. **Order of blocks.** For a block `B` let `f(B)` be the earliest completion and `s(B)`
//!    the latest invoke among its operations. `B` must precede `C` when `f(B) < s(C)` (one
//!    of `B`'s operations completed before one of `C`'s began): `B → C`. A linearization
//!    exists iff (a) inside each block the fixed order respects real time (no read
//!    completes before its write is invoked, and for runs `i < j` of one chain, no
//!    operation of run `j` completes before one of run `i` begins: `f_j ≥ s_i`), and (b)
//!    `→` is acyclic. Then the blocks concatenated in a topological order are a
//!    linearization: each block starts with a plain write, so it is legal from any state,
//!    and two operations of different blocks break real time only along an edge that
//!    points backwards.
//! 5. **Acyclicity in one sort.** Let `k(B) = min(f(B), s(B))`. If `B → C` and not
//!    `C → B`, then `k(B) ≤ k(C)`: if `s(B) ≤ f(B)`, then `k(B) = s(B) ≤ f(C)` (no
//!    `C → B`) and `s(B) ≤ f(B) < s(C)`; if `f(B) < s(B)`, then `k(B) = f(B) < s(C)` and
//!    `f(B) < s(B) ≤ f(C)`. Distinct blocks have distinct `k` (each is the position of one
//!    of the block's own events). So without 2-cycles `k`-order is a topological order.
//!    The engine walks the blocks in `k`-order keeping `M`, the latest invoke seen: a block
//!    `Y` with `f(Y) < M` is the only way the walk fails, and then the block `X` that set
//!    `M` has `k(X) ≤ k(Y) ≤ f(Y) < s(X)`, so `k(X) = f(X) < s(Y)`: `X → Y` and `Y → X`.
//!    Hence `→` is acyclic iff the walk passes, and a failure names four operations:
//!    `x1` (completed at `f(X)`) before `y2` (invoked at `s(Y)`), `y1` before `x2`.
//!
//! This is Gibbons & Korach's zone criterion (forward zones `[f, s]` must not overlap; a
//! backward zone must not lie inside a forward one), extended from single writes to cas
//! chains and to `info` operations. Knossos's and porcupine's models agree with it on
//! every history both decide (the checker's tests compare them).
//!
//! The engine never answers valid on the argument alone: it builds the linearization,
//! replays it through the model and checks it against real time first. An invalid answer
//! names the rule broken and the operations that break it.
//!
//! ## Repeated values
//!
//! When an observer still has several possible sources the problem is NP-complete again.
//! The engine then picks, for each such observer, the writer invoked last before the
//! observer completed,
//! builds the same linearization and answers valid if it replays; otherwise it is unsure
//! and the search engines decide. Findings that stay certain whatever the values: an `ok`
//! operation observing a value no operation writes, or completing before every writer of
//! its value was invoked, or after every one of them was overwritten (step 1).
//!
//! ## Deciding while reading
//!
//! `retire` decides the oldest blocks of a key while the history is still being read,
//! so that memory holds the recent operations of a key rather than all of them (see
//! [`crate::check`](mod@crate::check)). At a moment when every operation of the key not
//! yet read, or still open, was invoked at or after `safe`:
//!
//! * A block `X` is *dead* when some other block `Z` has `f(X) < s(Z)` and `f(Z) < safe`:
//!   any later operation joining `X` (reading one of its values) would give `X ↔ Z`, so it
//!   is invalid, and so is any later read of a value whose write was retired. No later
//!   operation can read from a dead block, whatever values later writes repeat.
//! * Blocks not yet dead, and blocks to come, have `k ≥ E`, where `E` is `safe` or the
//!   least `min(f, s)` of a live block or invoke of an operation still waiting for its
//!   source. The dead blocks with `k < E` are therefore the first blocks of the `k`-order
//!   for good: they are walked (internal order, `M`), replayed, and forgotten; `M` and the
//!   two operations that set it are carried.
//! * While an observer has several possible sources, which one it reads from can change
//!   the blocks and their order, so no block is retired: the key is cut instead (below).
//! * What is left is decided at the end after the carry: `M` (nothing left may complete
//!   before it), whether `init` was retired, and the value the retired part leaves. If
//!   this engine is unsure of it, the search engines take it from that value: the retired
//!   operations come first in some linearization if there is any, so the key is
//!   linearizable iff no certain operation left completed before `M` and what is left
//!   linearizes from that value. A verdict never depends on what was retired.
//!
//! ## Cutting
//!
//! Reads of absent, when deletes repeat it (and an `info` delete stays a possible
//! source to the end of the history), are the common case of several possible sources.
//! A *cut* is a certain write or delete `w`, completed before `safe`, such that every
//! other certain operation read so far completed before `w` began or began after it
//! completed; every operation still open or not yet read began after it completed. Let
//! `P` be the certain operations before `w`, `I` the `info` operations invoked before `w`
//! completed, `S` the rest. In every linearization `P` comes before `w` and `S` after it.
//!
//! * `F ⊆ I`: the `info` operations that are the only possible source of an operation of
//!   `P` (or of one in `F`); in every linearization they come before `w`.
//! * `D ⊆ I \ F`: the `info` deletes. An `info` operation constrains only its invoke, so
//!   of two `info` deletes the earlier invoked can stand in for the other anywhere; and
//!   after `w` (which completes after every one of them began) they are all alike.
//! * `k`: the least number such that `P ∪ F` with the `k` earliest of `D` (each optional)
//!   linearizes after the carry — known for sure, by this engine or by a bounded search
//!   from the carry's value; if some smaller `k` is not known to fail, there is no cut.
//!
//! The cut retires `w`, `P`, `F` and those `k` deletes, and the carry becomes: the key's
//! value is `w`'s (the new `init`, live), `M` none. Exact: if the key is linearizable, a
//! linearization puts `w` after `P`, `F` and some `j ≥ k` of the `info` deletes
//! (replacing them with the `j` earliest still linearizes the part before `w`, and `k`
//! is least), so its part after `w` is a linearization of what is left from `w`'s
//! value, using at most `|D| - k` deletes of `D`, which are all alike there. Conversely a
//! linearization of the part before `w`, then `w`, then one of what is left from `w`'s
//! value is one of the key: each `info` operation is used once, and real time holds
//! (what is left began after `w` completed, or is `info`; `w` completed after `M`, which
//! the cut requires). Otherwise the key keeps its operations until the next attempt
//! (needing more than [`MAX_SPARE_DELETES`], a search out of budget, or values that
//! repeat elsewhere: a certain violation is found at the end).

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use porcupine_rs::{Model, Operation};

use crate::check::OpRef;
use crate::engine::FxHasher;
use crate::model::{KeyModel, KeyOp, Val, key_step};

/// The most operations a violation names (the members of a cycle of cas beyond it are
/// left out).
const MAX_NAMED_OPS: usize = 8;

/// An operation that observes a value: no source.
const NOT_OBSERVER: u32 = u32::MAX;
/// No operation writes the value it observes (or every writer began after it ended).
const NO_SOURCE: u32 = u32::MAX - 1;
/// Its writer is still open (while reading): the source is not known yet.
const PENDING: u32 = u32::MAX - 2;
/// No successor, no block.
const NONE: u32 = u32::MAX;

/// What the retired part of a key leaves for the rest of its check.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Carry {
    /// The block of the initial value was retired: nothing can read it any more.
    pub init_retired: bool,
    /// `M`: the latest invoke among retired operations (`i64::MIN`: none).
    pub max_inv: i64,
    /// The two operations of the retired block that set `M`: its earliest completion and
    /// its latest invoke (for explanations).
    pub max_inv_refs: Option<(OpRef, OpRef)>,
    /// Operations retired.
    pub retired_ops: usize,
    /// Blocks retired.
    pub retired_blocks: usize,
    /// The key's value after the retired operations (`None`: absent). While `init` is
    /// live it is the value `init` writes: absent at first, the cut write's after a cut.
    pub state: Option<Val>,
    /// Cuts made (see "Cutting").
    pub cuts: usize,
}

impl Default for Carry {
    fn default() -> Self {
        Carry {
            init_retired: false,
            max_inv: i64::MIN,
            max_inv_refs: None,
            retired_ops: 0,
            retired_blocks: 0,
            state: None,
            cuts: 0,
        }
    }
}

/// Which rule an invalid key breaks (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ViolationKind {
    /// An operation observes a value no operation (still readable) wrote.
    NeverWritten,
    /// An operation completed before the write of the value it observes began.
    ObservedBeforeWritten,
    /// Two cas operations expect the value of one write.
    CasConflict,
    /// Cas operations expect each other's values, with no plain write to start from.
    CasCycle,
    /// Inside a chain, an operation completed before an earlier one of the chain began.
    ChainOrder,
    /// Two blocks must each come before the other (a stale read, a lost write, …).
    Overwritten,
}

impl ViolationKind {
    /// A short name, for the HTML view.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ViolationKind::NeverWritten => "value never written",
            ViolationKind::ObservedBeforeWritten => "observed before written",
            ViolationKind::CasConflict => "two cas on one value",
            ViolationKind::CasCycle => "cycle of cas",
            ViolationKind::ChainOrder => "out of order in a cas chain",
            ViolationKind::Overwritten => "value already overwritten",
        }
    }
}

/// Why a key is not linearizable, with the operations that show it.
#[derive(Clone, Debug)]
pub(crate) struct Violation {
    /// The rule broken.
    pub kind: ViolationKind,
    /// The operations involved (positions in the key's operations), in the order the
    /// sentence names them.
    pub ops: Vec<usize>,
    /// Retired operations involved (no longer in the key's operations).
    pub retired: Vec<OpRef>,
    /// What is wrong, for a person.
    pub sentence: String,
    /// A linearization of the blocks that come before the conflict (positions).
    pub partial: Vec<usize>,
    /// Orders the conflict rules out, each cut where it breaks (after `partial` or the
    /// part of it that fits): the chain at fault after the others, and for two chains
    /// that must each come first, the other way round too. For the HTML view.
    pub attempts: Vec<Vec<usize>>,
}

impl Violation {
    /// Leaves out `init` (position `n`, not an operation of the key) where it is named.
    fn keep_positions_below(&mut self, n: usize) {
        self.ops.retain(|&i| i < n);
        self.partial.retain(|&i| i < n);
        for a in &mut self.attempts {
            a.retain(|&i| i < n);
        }
    }

    fn new(kind: ViolationKind, ops: Vec<usize>, sentence: String) -> Self {
        Violation {
            kind,
            ops,
            retired: Vec::new(),
            sentence,
            partial: Vec::new(),
            attempts: Vec::new(),
        }
    }
}

/// The answer of [`decide`].
#[derive(Clone, Debug)]
pub(crate) enum Decision {
    /// A linearization (positions in the key's operations), replayed and checked.
    Linearizable(Vec<usize>),
    /// Not linearizable.
    Violated(Violation),
    /// Not decided: why (values repeat and the canonical choice failed, appends, …).
    Unsure(String),
}

/// What [`retire`] did.
#[derive(Clone, Debug)]
pub(crate) enum Retired {
    /// Nothing could be retired yet.
    Nothing,
    /// These operations (positions) are decided and may be forgotten.
    Ops { positions: Vec<usize> },
    /// The key is not linearizable.
    Violated(Violation),
}

/// Where the history stands while it is read (see "Deciding while reading").
#[derive(Clone, Copy, Debug)]
pub(crate) struct Horizon<'a> {
    /// Every operation of the key not yet in the slice was invoked at or after this.
    pub safe: i64,
    /// The values written by the key's operations still open (`None`: a delete).
    pub open_writes: &'a [Option<Val>],
}

/// One operation as the engine sees it.
#[derive(Clone, Copy, Debug)]
struct Node<'a> {
    inv: i64,
    ret: i64,
    certain: bool,
    /// The value it observes (`Some(None)`: absent).
    observes: Option<Option<&'a Val>>,
    /// The value it writes (`Some(None)`: a delete).
    writes: Option<Option<&'a Val>>,
}

impl Node<'_> {
    fn plain_writer(&self) -> bool {
        self.writes.is_some() && self.observes.is_none()
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A run: a writer and the reads of its value.
#[derive(Clone, Copy, Debug)]
struct Cluster {
    writer: u32,
    /// Its readers: `readers[from..to]` of the analysis.
    from: u32,
    to: u32,
    f: i64,
    f_op: u32,
    s: i64,
    s_op: u32,
}

/// A chain of runs: `clusters[first..first + len]` of the analysis.
#[derive(Clone, Copy, Debug)]
struct Block {
    first: u32,
    len: u32,
    f: i64,
    f_op: u32,
    s: i64,
    s_op: u32,
}

impl Block {
    fn k(&self) -> i64 {
        self.f.min(self.s)
    }
}

/// Why an analysis stopped.
enum Stop {
    Violated(Box<Violation>),
    Unsure(String),
}

/// The reads-from structure of one key's operations.
struct Analysis<'a> {
    ops: &'a [Operation<KeyModel>],
    /// `nodes[n]` is `init`.
    nodes: Vec<Node<'a>>,
    n: usize,
    init_live: bool,
    src: Vec<u32>,
    /// An observer whose every possible source began after it ended, or that has none.
    impossible: Vec<bool>,
    included: Vec<bool>,
    /// The history is read to its end (not [`retire`]).
    complete: bool,
    /// Observed values with several possible writers.
    ambiguous: usize,
    /// Observers that had a writer of their value overwritten for sure before they began:
    /// the latest such writer, and a write that overwrote it.
    overwritten: FxMap<u32, (u32, u32)>,
    /// Observers whose source is still open, and everything hanging from them.
    pending: Vec<u32>,
    succ: Vec<u32>,
    readers: Vec<u32>,
    clusters: Vec<Cluster>,
    blocks: Vec<Block>,
    /// Block of each writer (`NONE`: not in a block).
    block_of: Vec<u32>,
    carry_max_inv_refs: Option<(OpRef, OpRef)>,
    /// The key's value before `ops` (the carry's).
    start: &'a Option<Val>,
}

/// Decides `ops` (every remaining operation of one key, the history read to its end),
/// after a retired prefix described by `carry`.
pub(crate) fn decide(ops: &[Operation<KeyModel>], carry: &Carry) -> Decision {
    let mut decision = decide_once(ops, carry);
    // An operation that can read nothing: show how everything else linearizes.
    if let Decision::Violated(v) = &mut decision
        && v.partial.is_empty()
        && matches!(
            v.kind,
            ViolationKind::NeverWritten
                | ViolationKind::ObservedBeforeWritten
                | ViolationKind::Overwritten
        )
        && let Some(&culprit) = v.ops.first()
    {
        // Without it, an info operation bounded by its first observer may lose the
        // reason for its bound: it is open to the end again.
        let rest: Vec<Operation<KeyModel>> = ops
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != culprit)
            .map(|(_, o)| {
                let mut o = o.clone();
                if o.metadata.as_ref().is_some_and(|m| m.bounded_by.is_some()) {
                    o.return_time = i64::MAX;
                }
                o
            })
            .collect();
        if let Decision::Linearizable(order) = decide_once(&rest, carry) {
            v.partial = order
                .into_iter()
                .map(|i| if i >= culprit { i + 1 } else { i })
                .collect();
        }
    }
    if let Decision::Violated(v) = &mut decision {
        v.keep_positions_below(ops.len());
    }
    decision
}

fn decide_once(ops: &[Operation<KeyModel>], carry: &Carry) -> Decision {
    let a = match Analysis::new(ops, carry, None) {
        Ok(a) => a,
        Err(Stop::Unsure(why)) => return Decision::Unsure(why),
        Err(Stop::Violated(v)) => return Decision::Violated(*v),
    };
    let order: Vec<u32> = sorted_blocks(&a.blocks);
    let mut mark = Mark::from_carry(carry);
    for (i, &b) in order.iter().enumerate() {
        if let Err(found) = a.walk_block(b, &mut mark) {
            return a.certain_or_unsure(found, b, &order[..i], carry);
        }
    }
    let mut linearization = Vec::with_capacity(ops.len());
    for &b in &order {
        a.push_block(b, &mut linearization);
    }
    // Operations that need not happen go last, where they are always accepted.
    let mut left_out: Vec<usize> = (0..a.n)
        .filter(|&i| !a.included[i] && a.nodes[i].writes.is_some())
        .collect();
    left_out.sort_by_key(|&i| a.nodes[i].inv);
    linearization.extend(left_out);
    match replay(ops, &linearization, carry) {
        Ok(_) => Decision::Linearizable(linearization),
        Err(at) => {
            debug_assert!(
                a.ambiguous > 0,
                "a proved linearization failed at {at}: {linearization:?} of {ops:?}"
            );
            Decision::Unsure(if a.ambiguous > 0 {
                format!(
                    "{} observed values have several writers, and the linearization built from the latest writer of each did not replay",
                    a.ambiguous
                )
            } else {
                "the linearization the engine built did not replay (an engine bug)".to_owned()
            })
        }
    }
}

/// Retires the blocks of `ops` (the operations of one key read so far, all complete) that
/// are decided for good (see "Deciding while reading"), or, when an observer has several
/// possible sources, everything before a cut (see "Cutting"); updates `carry`.
pub(crate) fn retire(
    ops: &[Operation<KeyModel>],
    carry: &mut Carry,
    horizon: &Horizon<'_>,
) -> Retired {
    match retire_once(ops, carry, horizon) {
        Retired::Violated(mut v) => {
            v.keep_positions_below(ops.len());
            Retired::Violated(v)
        }
        other => other,
    }
}

fn retire_once(ops: &[Operation<KeyModel>], carry: &mut Carry, horizon: &Horizon<'_>) -> Retired {
    let before = carry.clone();
    let a = match Analysis::new(ops, &before, Some(horizon)) {
        Ok(a) => a,
        Err(Stop::Violated(v)) => return Retired::Violated(*v),
        Err(Stop::Unsure(_)) => return Retired::Nothing,
    };
    // An observer with several possible sources: which one it reads from may decide how
    // the blocks order, so no block is certain to come first; cut instead.
    if a.ambiguous > 0 {
        return retire_at_cut(ops, carry, horizon.safe);
    }
    // E: no live block and no block to come has a smaller k.
    let dead = a.dead_blocks(horizon.safe);
    let mut bound = horizon.safe;
    for (b, block) in a.blocks.iter().enumerate() {
        if !dead[b] {
            bound = bound.min(block.k());
        }
    }
    for &p in &a.pending {
        bound = bound.min(a.nodes[p as usize].inv);
    }
    let order = sorted_blocks(&a.blocks);
    let take = order
        .iter()
        .take_while(|&&b| dead[b as usize] && a.blocks[b as usize].k() < bound)
        .count();
    if take == 0 {
        return Retired::Nothing;
    }
    a.retire_blocks(&order[..take], carry)
}

/// Retires the operations of `ops` (a key's, read so far) before a cut, when there is one
/// (see "Cutting"): the latest certain write or delete that every other certain operation
/// either completed before or began after, that completed before `safe`, and whose
/// operations before it are known to linearize after the carry on their own.
fn retire_at_cut(ops: &[Operation<KeyModel>], carry: &mut Carry, safe: i64) -> Retired {
    // A cut write that completed before a retired operation began: the rest of the key
    // would not know; the key is decided whole at the end (invalid).
    let Some(w) = latest_cut(ops, safe).filter(|&w| ops[w].return_time > carry.max_inv) else {
        return Retired::Nothing;
    };
    let Some(mut positions) = before_cut(ops, carry, w) else {
        return Retired::Nothing;
    };
    carry.retired_ops += positions.len() + 1;
    carry.cuts += 1;
    carry.state = match &ops[w].op {
        KeyOp::Write(v) => Some(v.clone()),
        _ => None,
    };
    carry.init_retired = false;
    carry.max_inv = i64::MIN;
    carry.max_inv_refs = None;
    positions.push(w);
    positions.sort_unstable();
    Retired::Ops { positions }
}

fn uncertain(op: &Operation<KeyModel>) -> bool {
    op.metadata.as_ref().is_some_and(|m| m.uncertain)
}

/// The latest cut write of `ops` completed before `safe` (position), if any: a certain
/// write or delete such that every other certain operation completed before it began or
/// began after it completed.
fn latest_cut(ops: &[Operation<KeyModel>], safe: i64) -> Option<usize> {
    let mut certain: Vec<usize> = (0..ops.len()).filter(|&i| !uncertain(&ops[i])).collect();
    certain.sort_unstable_by_key(|&i| ops[i].call_time);
    let mut best = None;
    let mut latest_ret = i64::MIN;
    for (j, &i) in certain.iter().enumerate() {
        let op = &ops[i];
        let next_inv = certain.get(j + 1).map_or(i64::MAX, |&k| ops[k].call_time);
        if matches!(op.op, KeyOp::Write(_) | KeyOp::Delete)
            && op.return_time < safe
            && latest_ret < op.call_time
            && op.return_time < next_inv
        {
            best = Some(i);
        }
        latest_ret = latest_ret.max(op.return_time);
    }
    best
}

/// What a cut at `w` retires besides `w` (positions), if the part before it is known to
/// linearize (see "Cutting"): the certain operations completed before `w` began, the
/// `info` operations invoked before `w` completed that are the only possible source of
/// one of them (or of such an `info` operation), and the fewest `info` deletes, earliest
/// invoked first, that it needs besides. `None`: not known.
fn before_cut(ops: &[Operation<KeyModel>], carry: &Carry, w: usize) -> Option<Vec<usize>> {
    let (w_inv, w_ret) = (ops[w].call_time, ops[w].return_time);
    let window: Vec<usize> = (0..ops.len())
        .filter(|&i| {
            i != w
                && if uncertain(&ops[i]) {
                    ops[i].call_time < w_ret
                } else {
                    ops[i].return_time < w_inv
                }
        })
        .collect();
    let window_ops: Vec<Operation<KeyModel>> = window.iter().map(|&i| ops[i].clone()).collect();
    // Without a horizon's open writes, an observer with one possible source has it, and
    // `included` closes the certain operations under "the only possible source of".
    let quiet = Horizon {
        safe: i64::MAX,
        open_writes: &[],
    };
    let included = Analysis::new(&window_ops, carry, Some(&quiet))
        .ok()?
        .included;
    let part: Vec<usize> = (0..window.len()).filter(|&j| included[j]).collect();
    let mut spare: Vec<usize> = (0..window.len())
        .filter(|&j| !included[j] && matches!(window_ops[j].op, KeyOp::Delete))
        .collect();
    spare.sort_by_key(|&j| window_ops[j].call_time);
    for k in 0..=spare.len().min(MAX_SPARE_DELETES) {
        let mut chosen: Vec<usize> = part.iter().chain(&spare[..k]).copied().collect();
        chosen.sort_unstable();
        let chosen_ops: Vec<Operation<KeyModel>> =
            chosen.iter().map(|&j| window_ops[j].clone()).collect();
        if linearizes_after(&chosen_ops, carry)? {
            return Some(chosen.iter().map(|&j| window[j]).collect());
        }
    }
    None
}

/// The most `info` deletes a cut gives the part before it (see "Cutting").
const MAX_SPARE_DELETES: usize = 4;

/// The most time the search gets to decide the part before a cut that the reads-from
/// engine was unsure of (the cut waits for the next attempt when it runs out).
const CUT_SEARCH_BUDGET: std::time::Duration = std::time::Duration::from_millis(50);

/// The memo the search gets there.
const CUT_SEARCH_MEMO_BYTES: u64 = 16 << 20;

/// Whether `ops` (the part of a key before a cut) linearize after the carry, by the
/// reads-from engine, else by kvlab's search from the carry's state; `None`: not known
/// (the search ran out of budget).
fn linearizes_after(ops: &[Operation<KeyModel>], carry: &Carry) -> Option<bool> {
    match decide(ops, carry) {
        Decision::Linearizable(_) => Some(true),
        Decision::Violated(_) => Some(false),
        Decision::Unsure(_) => {
            if completed_before_retired(ops, carry).is_some() {
                return Some(false);
            }
            // Info operations return after everything else.
            let end = ops
                .iter()
                .flat_map(|o| [o.call_time, o.return_time])
                .filter(|&t| t != i64::MAX)
                .max()
                .unwrap_or(0);
            let mut ext = with_start(ops, carry);
            for o in &mut ext {
                o.return_time = o.return_time.min(end.saturating_add(1));
            }
            let limits = crate::budget::Limits {
                deadline: std::time::Instant::now().checked_add(CUT_SEARCH_BUDGET),
                memory_limit_bytes: None,
                cancel: None,
                abort: None,
            };
            match crate::engine::search(&ext, &limits, CUT_SEARCH_MEMO_BYTES).verdict {
                crate::engine::EngineVerdict::Linearizable => Some(true),
                crate::engine::EngineVerdict::NotLinearizable => Some(false),
                crate::engine::EngineVerdict::Stopped(_) => None,
            }
        }
    }
}

/// `ops` (what is left of a key) after an operation that sets the carry's state before
/// every one of them, for the search engines: a linearization of the result is one of
/// `ops` from that state. Positions shift by one.
pub(crate) fn with_start(ops: &[Operation<KeyModel>], carry: &Carry) -> Vec<Operation<KeyModel>> {
    let first = ops.iter().map(|o| o.call_time).min().unwrap_or(0);
    let start = Operation {
        client_id: None,
        call_time: first.saturating_sub(2),
        return_time: first.saturating_sub(1),
        op: match &carry.state {
            Some(v) => KeyOp::Write(v.clone()),
            None => KeyOp::Delete,
        },
        metadata: Some(crate::model::OpOrigin {
            process: 0,
            invoke_index: 0,
            complete_index: None,
            uncertain: false,
            node: None,
            bounded_by: None,
        }),
    };
    let mut out = Vec::with_capacity(ops.len() + 1);
    out.push(start);
    out.extend_from_slice(ops);
    out
}

/// A certain operation of `ops` (what is left of a key) that completed before a retired
/// one began: the key is then not linearizable (the retired operations come first in a
/// linearization, if there is one), and this says why.
pub(crate) fn completed_before_retired(
    ops: &[Operation<KeyModel>],
    carry: &Carry,
) -> Option<Violation> {
    let (i, op) = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| !uncertain(o))
        .min_by_key(|(_, o)| o.return_time)?;
    if op.return_time >= carry.max_inv {
        return None;
    }
    let who = crate::check::op_ref(op);
    let (retired, what) = match &carry.max_inv_refs {
        Some((_, b)) => (vec![b.clone()], b.to_string()),
        None => (Vec::new(), "an operation already decided".to_owned()),
    };
    let mut v = Violation::new(
        ViolationKind::Overwritten,
        vec![i],
        format!(
            "{who} completed before {what} began, but the operations already decided come first in any linearization"
        ),
    );
    v.retired = retired;
    Some(v)
}

impl Analysis<'_> {
    /// Walks, replays and retires the blocks `order` (the first of the `k`-order, all
    /// dead); updates `carry`.
    fn retire_blocks(&self, order: &[u32], carry: &mut Carry) -> Retired {
        let ops = self.ops;
        let mut mark = Mark::from_carry(carry);
        for (i, &b) in order.iter().enumerate() {
            if let Err(found) = self.walk_block(b, &mut mark) {
                return match self.certain_or_unsure(found, b, &order[..i], carry) {
                    Decision::Violated(v) => Retired::Violated(v),
                    _ => Retired::Nothing,
                };
            }
        }
        let mut positions = Vec::new();
        for &b in order {
            self.push_block(b, &mut positions);
        }
        let Ok((max_inv, state)) = replay(ops, &positions, carry) else {
            debug_assert!(false, "a retired prefix failed to replay");
            return Retired::Nothing;
        };
        // Info cas operations left out stay, even when their source is retired: one that
        // expects a value written again later (absent, by a later delete) may still take
        // effect after that write.
        carry.retired_ops += positions.len();
        carry.retired_blocks += order.len();
        carry.max_inv = max_inv;
        carry.state = state;
        if let MarkRefs::Block(b) = mark.refs {
            let block = &self.blocks[b as usize];
            carry.max_inv_refs = Some((self.op_ref(block.f_op), self.op_ref(block.s_op)));
        } else if let MarkRefs::Carried = mark.refs {
            carry.max_inv_refs = self.carry_max_inv_refs.clone();
        }
        if self.init_live && order.iter().any(|&b| self.is_init_block(b)) {
            carry.init_retired = true;
        }
        positions.sort_unstable();
        Retired::Ops { positions }
    }
}

/// The block order of the module docs: by `k`, ties (none in practice) by block.
fn sorted_blocks(blocks: &[Block]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..blocks.len() as u32).collect();
    order.sort_by_key(|&b| (blocks[b as usize].k(), b));
    order
}

/// Replays `order` through the model from the carry's state and checks real time
/// (nothing in it may complete before an earlier one was invoked, nor before the carry's
/// `max_inv`); returns the latest invoke and the state reached, or the position where it
/// fails.
fn replay(
    ops: &[Operation<KeyModel>],
    order: &[usize],
    carry: &Carry,
) -> Result<(i64, Option<Val>), usize> {
    let mut state: Option<Val> = carry.state.clone();
    let mut latest = carry.max_inv;
    for &i in order {
        let op = &ops[i];
        if op.return_time < latest {
            return Err(i);
        }
        let (ok, next) = key_step(&state, &op.op);
        if !ok {
            return Err(i);
        }
        state = next;
        latest = latest.max(op.call_time);
    }
    Ok((latest, state))
}

/// The longest prefix of `order` that replays (see [`replay`]).
fn legal_prefix(ops: &[Operation<KeyModel>], order: &[usize], carry: &Carry) -> Vec<usize> {
    match replay(ops, order, carry) {
        Ok(_) => order.to_vec(),
        Err(at) => {
            let cut = order.iter().position(|&i| i == at).unwrap_or(order.len());
            order[..cut].to_vec()
        }
    }
}

/// Who set `M`.
#[derive(Clone, Copy, Debug)]
enum MarkRefs {
    None,
    Carried,
    Block(u32),
}

/// `M` of the walk, and who set it.
#[derive(Clone, Copy, Debug)]
struct Mark {
    value: i64,
    refs: MarkRefs,
}

impl Mark {
    fn from_carry(carry: &Carry) -> Self {
        Mark {
            value: carry.max_inv,
            refs: if carry.max_inv_refs.is_some() {
                MarkRefs::Carried
            } else {
                MarkRefs::None
            },
        }
    }
}

fn node_of(op: &Operation<KeyModel>) -> Node<'_> {
    let certain = !op.metadata.as_ref().is_some_and(|m| m.uncertain);
    let (observes, writes) = match &op.op {
        KeyOp::Read(v) if certain => (Some(v.as_ref()), None),
        KeyOp::Read(_) => (None, None),
        KeyOp::Write(v) => (None, Some(Some(v))),
        KeyOp::Cas { expected, new, .. } => (Some(expected.as_ref()), Some(Some(new))),
        KeyOp::Delete => (None, Some(None)),
        KeyOp::Append(_) => (None, None),
    };
    Node {
        inv: op.call_time,
        ret: op.return_time,
        certain,
        observes,
        writes,
    }
}

/// Writes that surely happened, by completion: which writes a later operation can no
/// longer read. A writer `w` cannot be the source of an operation `o` if some write `x`
/// that surely happened began after `w` completed and completed before `o` began: `x`
/// comes between them in every linearization, whatever values repeat.
struct Overwriters {
    /// Completion times, ascending.
    ret: Vec<i64>,
    /// For each prefix, the latest invoke among its writes, and that write.
    latest: Vec<(i64, u32)>,
}

impl Overwriters {
    fn new(nodes: &[Node<'_>]) -> Self {
        let mut writes: Vec<(i64, i64, u32)> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.certain && n.writes.is_some())
            .map(|(i, n)| (n.ret, n.inv, i as u32))
            .collect();
        writes.sort_unstable();
        let mut latest = Vec::with_capacity(writes.len());
        let mut best = (i64::MIN, NONE);
        for &(_, inv, i) in &writes {
            if inv > best.0 {
                best = (inv, i);
            }
            latest.push(best);
        }
        Overwriters {
            ret: writes.iter().map(|w| w.0).collect(),
            latest,
        }
    }

    /// The latest invoke among writes completed before `t`, and that write: every writer
    /// completed before it is overwritten for an operation invoked at `t`.
    fn before(&self, t: i64) -> Option<(i64, u32)> {
        let k = self.ret.partition_point(|&r| r < t);
        (k > 0).then(|| self.latest[k - 1])
    }
}

/// The writers of one value.
enum Writers {
    One(u32),
    Many(Vec<u32>),
}

impl<'a> Analysis<'a> {
    fn new(
        ops: &'a [Operation<KeyModel>],
        carry: &'a Carry,
        horizon: Option<&Horizon<'_>>,
    ) -> Result<Self, Stop> {
        if ops.iter().any(|o| matches!(o.op, KeyOp::Append(_))) {
            return Err(Stop::Unsure(
                "the key has appends, whose values are not single writes".to_owned(),
            ));
        }
        let n = ops.len();
        let mut nodes: Vec<Node<'a>> = ops.iter().map(node_of).collect();
        // `init`: the value the key starts from (absent, or what a cut left).
        nodes.push(Node {
            inv: -1,
            ret: -1,
            certain: true,
            observes: None,
            writes: Some(carry.state.as_ref()),
        });
        let mut a = Analysis {
            ops,
            nodes,
            n,
            init_live: !carry.init_retired,
            complete: horizon.is_none(),
            src: vec![NOT_OBSERVER; n + 1],
            impossible: vec![false; n + 1],
            included: vec![false; n + 1],
            ambiguous: 0,
            overwritten: FxMap::default(),
            pending: Vec::new(),
            succ: vec![NONE; n + 1],
            readers: Vec::new(),
            clusters: Vec::new(),
            blocks: Vec::new(),
            block_of: vec![NONE; n + 1],
            carry_max_inv_refs: carry.max_inv_refs.clone(),
            start: &carry.state,
        };
        a.assign_sources(
            horizon.map_or(&[][..], |h| h.open_writes),
            horizon.is_none(),
        );
        a.include()?;
        a.link()?;
        a.build_blocks()?;
        Ok(a)
    }

    /// Whether some observer's source was chosen rather than known (deciding a whole key
    /// whose observed values repeat): a violation may then be the choice's fault. While
    /// reading, such observers wait instead, so every finding is certain.
    fn guessing(&self) -> bool {
        self.complete && self.ambiguous > 0
    }

    fn op_ref(&self, i: u32) -> OpRef {
        if i as usize == self.n {
            let description = match self.start {
                None => "the initial value (absent)".to_owned(),
                Some(_) => format!(
                    "{} (left by the operations already decided)",
                    describe_value(self.start.as_ref())
                ),
            };
            return OpRef {
                process: 0,
                invoke_index: 0,
                complete_index: None,
                description,
            };
        }
        crate::check::op_ref(&self.ops[i as usize])
    }

    fn is_init_block(&self, b: u32) -> bool {
        let block = &self.blocks[b as usize];
        self.clusters[block.first as usize].writer as usize == self.n
    }

    /// Step 1: the source of every observer.
    fn assign_sources(&mut self, open_writes: &[Option<Val>], complete: bool) {
        let n = self.n;
        let mut writers: FxMap<Option<&'a Val>, Writers> = FxMap::default();
        for (i, node) in self.nodes[..n].iter().enumerate() {
            if let Some(v) = node.writes {
                writers
                    .entry(v)
                    .and_modify(|w| match w {
                        Writers::One(first) => *w = Writers::Many(vec![*first, i as u32]),
                        Writers::Many(list) => list.push(i as u32),
                    })
                    .or_insert(Writers::One(i as u32));
            }
        }
        let overwritten = Overwriters::new(&self.nodes[..n]);
        let mut many: Vec<u32> = Vec::new();
        for i in 0..n {
            let Some(v) = self.nodes[i].observes else {
                continue;
            };
            // The possible sources: writers of `v` but `i`, `init` for absent, open writers;
            // less those overwritten for sure before `i` began.
            many.clear();
            match writers.get(&v) {
                None => {}
                Some(Writers::One(w)) => many.push(*w),
                Some(Writers::Many(list)) => many.extend_from_slice(list),
            }
            many.retain(|&w| w as usize != i);
            if self.init_live && self.nodes[n].writes == Some(v) {
                many.push(n as u32);
            }
            if let Some((latest, x)) = overwritten.before(self.nodes[i].inv) {
                let last_dead = many
                    .iter()
                    .copied()
                    .filter(|&w| self.nodes[w as usize].ret < latest)
                    .max_by_key(|&w| self.nodes[w as usize].inv);
                many.retain(|&w| self.nodes[w as usize].ret >= latest);
                if let Some(w) = last_dead {
                    self.overwritten.insert(i as u32, (w, x));
                }
            }
            // Real time: a writer invoked after the observer completed is not its source
            // (when every writer was, the observer is impossible: below).
            let ret = self.nodes[i].ret;
            if many.iter().any(|&w| self.nodes[w as usize].inv < ret) {
                many.retain(|&w| self.nodes[w as usize].inv < ret);
            }
            let open = open_writes.iter().filter(|w| w.as_ref() == v).count();
            match (many.len() + open, open) {
                (0, _) => {
                    self.src[i] = NO_SOURCE;
                    self.impossible[i] = true;
                }
                (1, 1) => self.src[i] = PENDING,
                (1, _) => {
                    let w = many[0];
                    self.src[i] = w;
                    self.impossible[i] = ret < self.nodes[w as usize].inv;
                }
                _ => {
                    self.ambiguous += 1;
                    // The writer invoked last before the observer ended; none such: every
                    // writer began after it ended, whatever the choice.
                    let best = many
                        .iter()
                        .copied()
                        .filter(|&w| self.nodes[w as usize].inv < ret)
                        .max_by_key(|&w| self.nodes[w as usize].inv);
                    match best {
                        Some(w) if complete => self.src[i] = w,
                        Some(_) => self.src[i] = PENDING,
                        None if open > 0 => self.src[i] = PENDING,
                        None => {
                            self.src[i] = many
                                .iter()
                                .copied()
                                .min_by_key(|&w| self.nodes[w as usize].inv)
                                .unwrap_or(NO_SOURCE);
                            self.impossible[i] = true;
                        }
                    }
                }
            }
        }
    }

    /// Step 2: what must happen, from the `ok` operations through their sources.
    fn include(&mut self) -> Result<(), Stop> {
        let n = self.n;
        let mut stack: Vec<u32> = Vec::new();
        for i in 0..n {
            let node = &self.nodes[i];
            if node.certain && (node.observes.is_some() || node.writes.is_some()) {
                self.included[i] = true;
                if node.observes.is_some() {
                    stack.push(i as u32);
                }
            }
        }
        if self.init_live {
            self.included[n] = true;
        }
        while let Some(o) = stack.pop() {
            let o_us = o as usize;
            if self.impossible[o_us] {
                let v = self.never_or_before(o);
                return Err(if !self.guessing() || self.nodes[o_us].certain {
                    Stop::Violated(Box::new(v))
                } else {
                    Stop::Unsure(format!(
                        "{} observed values have several writers, and a writer chosen for one of them cannot have taken effect",
                        self.ambiguous
                    ))
                });
            }
            let s = self.src[o_us];
            if s == PENDING {
                self.pending.push(o);
                continue;
            }
            let s_us = s as usize;
            if !self.included[s_us] {
                self.included[s_us] = true;
                if self.nodes[s_us].observes.is_some() {
                    stack.push(s);
                }
            }
        }
        Ok(())
    }

    fn never_or_before(&self, o: u32) -> Violation {
        let node = &self.nodes[o as usize];
        let value = describe_value(node.observes.flatten());
        let who = self.named(o);
        let s = self.src[o as usize];
        if s == NO_SOURCE
            && let Some(&(w, x)) = self.overwritten.get(&o)
        {
            return Violation::new(
                ViolationKind::Overwritten,
                vec![o as usize, w as usize, x as usize],
                format!(
                    "{who} observes {value}, but {} (the last write of it that {who} could see) was overwritten by {}, which began after it completed and completed before {who} began",
                    self.named(w),
                    self.named(x)
                ),
            );
        }
        if s == NO_SOURCE {
            let gone = if !self.init_live && node.observes == Some(None) {
                " (the initial value was overwritten before it began)"
            } else {
                ""
            };
            Violation::new(
                ViolationKind::NeverWritten,
                vec![o as usize],
                format!(
                    "{who} observes {value}, which no operation that could still be read wrote{gone}"
                ),
            )
        } else {
            let mut ops = vec![o as usize, s as usize];
            let earlier = match self.overwritten.get(&o) {
                Some(&(w, x)) => {
                    ops.extend([w as usize, x as usize]);
                    format!(
                        " (and the writes of it before, the last {}, were overwritten before it began, by {})",
                        self.named(w),
                        self.named(x)
                    )
                }
                None => String::new(),
            };
            Violation::new(
                ViolationKind::ObservedBeforeWritten,
                ops,
                format!(
                    "{who} observes {value}, but it completed before {} (which writes {value}) began{earlier}",
                    self.named(s)
                ),
            )
        }
    }

    /// An operation by name, marked when it is an `info` one that had to happen.
    fn named(&self, i: u32) -> String {
        let r = self.op_ref(i);
        if (i as usize) < self.n && !self.nodes[i as usize].certain {
            format!("{r} [info, but a later operation observes what it wrote, so it took effect]")
        } else {
            r.to_string()
        }
    }

    /// Step 3a: readers and successors.
    fn link(&mut self) -> Result<(), Stop> {
        let n = self.n;
        let mut pairs: Vec<(u32, i64, u32)> = Vec::new();
        for o in 0..n {
            let s = self.src[o];
            if !self.included[o] || s as usize > n {
                continue;
            }
            if self.nodes[o].writes.is_none() {
                pairs.push((s, self.nodes[o].inv, o as u32));
            } else if self.succ[s as usize] != NONE {
                let first = self.succ[s as usize];
                if self.guessing() {
                    return Err(Stop::Unsure(format!(
                        "{} observed values have several writers, and two cas operations were given the same one",
                        self.ambiguous
                    )));
                }
                let value = describe_value(self.nodes[s as usize].writes.flatten());
                return Err(Stop::Violated(Box::new(Violation::new(
                    ViolationKind::CasConflict,
                    vec![first as usize, o, s as usize],
                    format!(
                        "{} and {} both replaced {value} (written by {}), but only one operation can directly follow a write: whichever came second would have seen the other's value",
                        self.named(first),
                        self.named(o as u32),
                        self.named(s)
                    ),
                ))));
            } else {
                self.succ[s as usize] = o as u32;
            }
        }
        pairs.sort_unstable();
        self.readers = pairs.iter().map(|p| p.2).collect();
        self.build_clusters();
        Ok(())
    }

    /// The readers of writer `w` (positions in `readers`), by invoke.
    fn readers_of(&self, w: u32) -> (u32, u32) {
        let from = self.readers.partition_point(|&r| self.src[r as usize] < w);
        let to = self.readers.partition_point(|&r| self.src[r as usize] <= w);
        (from as u32, to as u32)
    }

    fn build_clusters(&mut self) {
        let n = self.n;
        self.clusters.clear();
        for w in 0..=n {
            if !self.included[w] || self.nodes[w].writes.is_none() {
                continue;
            }
            let (from, to) = self.readers_of(w as u32);
            let node = &self.nodes[w];
            let mut c = Cluster {
                writer: w as u32,
                from,
                to,
                f: node.ret,
                f_op: w as u32,
                s: node.inv,
                s_op: w as u32,
            };
            for &r in &self.readers[from as usize..to as usize] {
                let rn = &self.nodes[r as usize];
                if rn.ret < c.f {
                    (c.f, c.f_op) = (rn.ret, r);
                }
                if rn.inv > c.s {
                    (c.s, c.s_op) = (rn.inv, r);
                }
            }
            // Clusters are indexed by writer through `block_of` until blocks are built.
            self.block_of[w] = self.clusters.len() as u32;
            self.clusters.push(c);
        }
    }

    /// Step 3b: chains from plain writes (and `init`); what no chain reaches is a cycle
    /// of cas, or hangs from an open writer.
    fn build_blocks(&mut self) -> Result<(), Stop> {
        let n = self.n;
        let cluster_of = std::mem::replace(&mut self.block_of, vec![NONE; n + 1]);
        let mut ordered: Vec<Cluster> = Vec::with_capacity(self.clusters.len());
        for root in 0..=n {
            if !self.included[root] || !self.nodes[root].plain_writer() {
                continue;
            }
            let block_id = self.blocks.len() as u32;
            let first = ordered.len() as u32;
            let mut cur = root as u32;
            loop {
                ordered.push(self.clusters[cluster_of[cur as usize] as usize]);
                self.block_of[cur as usize] = block_id;
                cur = self.succ[cur as usize];
                if cur == NONE {
                    break;
                }
            }
            let clusters = &ordered[first as usize..];
            let mut block = Block {
                first,
                len: clusters.len() as u32,
                f: i64::MAX,
                f_op: NONE,
                s: i64::MIN,
                s_op: NONE,
            };
            for c in clusters {
                if c.f < block.f {
                    (block.f, block.f_op) = (c.f, c.f_op);
                }
                if c.s > block.s {
                    (block.s, block.s_op) = (c.s, c.s_op);
                }
            }
            self.blocks.push(block);
        }
        self.clusters = ordered;
        // Included writers outside every block.
        let mut seen = vec![false; n + 1];
        for w in 0..n {
            if !self.included[w] || self.nodes[w].writes.is_none() || self.block_of[w] != NONE {
                continue;
            }
            if seen[w] {
                continue;
            }
            // Walk back through sources: to an open writer (pending) or around a cycle.
            let mut walk: Vec<u32> = Vec::new();
            let mut on_walk: FxMap<u32, usize> = FxMap::default();
            let mut cur = w as u32;
            let cycle_start = loop {
                if cur as usize > n || seen[cur as usize] {
                    break None;
                }
                if let Some(&at) = on_walk.get(&cur) {
                    break Some(at);
                }
                on_walk.insert(cur, walk.len());
                walk.push(cur);
                cur = self.src[cur as usize];
            };
            for &x in &walk {
                seen[x as usize] = true;
            }
            match cycle_start {
                None => self.mark_pending_chain(&walk),
                Some(at) => return Err(self.cycle(&walk[at..])),
            }
        }
        Ok(())
    }

    /// Everything hanging from writers whose chain waits for an open writer: the writers,
    /// their readers, and what follows them.
    fn mark_pending_chain(&mut self, walk: &[u32]) {
        for &x in walk {
            let mut cur = x;
            while cur != NONE {
                self.pending.push(cur);
                let (from, to) = self.readers_of(cur);
                let readers = self.readers[from as usize..to as usize].to_vec();
                self.pending.extend(readers);
                cur = self.succ[cur as usize];
            }
        }
    }

    fn cycle(&self, members: &[u32]) -> Stop {
        if self.guessing() {
            return Stop::Unsure(format!(
                "{} observed values have several writers, and the writers chosen form a cycle of cas",
                self.ambiguous
            ));
        }
        let named: Vec<String> = members
            .iter()
            .take(MAX_NAMED_OPS)
            .map(|&c| self.named(c))
            .collect();
        let more = members.len().saturating_sub(MAX_NAMED_OPS);
        let more = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        Stop::Violated(Box::new(Violation::new(
            ViolationKind::CasCycle,
            members
                .iter()
                .take(MAX_NAMED_OPS)
                .map(|&c| c as usize)
                .collect(),
            format!(
                "{}{more} each expect the value another of them wrote, and no plain write starts the chain: none of them can go first",
                named.join(", ")
            ),
        )))
    }

    /// The blocks that are dead at `safe` (see "Deciding while reading").
    fn dead_blocks(&self, safe: i64) -> Vec<bool> {
        // The two latest `s` among blocks with a completion before `safe`.
        let (mut best, mut second) = ((i64::MIN, NONE), (i64::MIN, NONE));
        for (b, block) in self.blocks.iter().enumerate() {
            if block.f < safe {
                let entry = (block.s, b as u32);
                if entry.0 > best.0 {
                    second = best;
                    best = entry;
                } else if entry.0 > second.0 {
                    second = entry;
                }
            }
        }
        self.blocks
            .iter()
            .enumerate()
            .map(|(b, block)| {
                let other = if best.1 == b as u32 { second.0 } else { best.0 };
                block.f < other
            })
            .collect()
    }

    /// Step 4 and 5 for one block: its chain in real time, then `M`. A violation comes
    /// with the block that set `M`, when that is the other block at fault.
    fn walk_block(&self, b: u32, mark: &mut Mark) -> Result<(), (Box<Violation>, Option<u32>)> {
        let block = &self.blocks[b as usize];
        let clusters = &self.clusters[block.first as usize..(block.first + block.len) as usize];
        let mut latest: Option<(i64, u32, usize)> = None;
        for (j, c) in clusters.iter().enumerate() {
            if let Some((s, s_op, i)) = latest
                && c.f < s
            {
                let replaced_by = clusters[i + 1].writer;
                let value =
                    describe_value(self.nodes[clusters[i].writer as usize].writes.flatten());
                let v = Violation::new(
                    ViolationKind::ChainOrder,
                    vec![s_op as usize, c.f_op as usize, replaced_by as usize],
                    format!(
                        "{} writes or reads {value}, which {} replaced, so it comes before that cas and before {}, which comes later in the same chain; but {} completed before {} began",
                        self.named(s_op),
                        self.named(replaced_by),
                        self.named(c.f_op),
                        self.named(c.f_op),
                        self.named(s_op)
                    ),
                );
                return Err((Box::new(v), None));
            }
            if latest.is_none_or(|(s, ..)| c.s > s) {
                latest = Some((c.s, c.s_op, j));
            }
        }
        if block.f < mark.value {
            let x = match mark.refs {
                MarkRefs::Block(x) => Some(x),
                _ => None,
            };
            return Err((Box::new(self.overwritten(b, mark)), x));
        }
        if block.s > mark.value {
            *mark = Mark {
                value: block.s,
                refs: MarkRefs::Block(b),
            };
        }
        Ok(())
    }

    fn overwritten(&self, y: u32, mark: &Mark) -> Violation {
        let yb = &self.blocks[y as usize];
        let y_root = self.clusters[yb.first as usize].writer;
        let (x1, x2, x_root, mut ops, retired) = match mark.refs {
            MarkRefs::Block(x) => {
                let xb = &self.blocks[x as usize];
                let root = self.clusters[xb.first as usize].writer;
                (
                    self.named(xb.f_op),
                    self.named(xb.s_op),
                    Some(self.named(root)),
                    vec![xb.f_op as usize, xb.s_op as usize],
                    Vec::new(),
                )
            }
            MarkRefs::Carried | MarkRefs::None => {
                let (a, b) = self.carry_max_inv_refs.clone().unwrap_or_else(|| {
                    let unknown = OpRef {
                        process: 0,
                        invoke_index: 0,
                        complete_index: None,
                        description: "an operation already decided".to_owned(),
                    };
                    (unknown.clone(), unknown)
                });
                (a.to_string(), b.to_string(), None, Vec::new(), vec![a, b])
            }
        };
        ops.extend([yb.s_op as usize, yb.f_op as usize]);
        ops.retain(|&i| i < self.n);
        let mut seen_ops = Vec::with_capacity(ops.len());
        ops.retain(|&i| {
            let new = !seen_ops.contains(&i);
            seen_ops.push(i);
            new
        });
        let x_part = x_root.map_or_else(
            || "the operations already decided".to_owned(),
            |r| format!("the chain that starts with {r}"),
        );
        let mut v = Violation::new(
            ViolationKind::Overwritten,
            ops,
            format!(
                "{x_part} and the chain that starts with {} must each come before the other: {x1} completed before {} began, and {} completed before {x2} began (so one of them sees a value the other chain had already overwritten)",
                self.named(y_root),
                self.named(yb.s_op),
                self.named(yb.f_op)
            ),
        );
        v.retired = retired;
        v
    }

    /// A violation found by the walk at block `y` (with `x`, the other block at fault),
    /// with the blocks walked before it as the partial linearization and the orders it
    /// rules out; unsure when values repeat (the choice of writers may be to blame).
    fn certain_or_unsure(
        &self,
        (v, x): (Box<Violation>, Option<u32>),
        y: u32,
        before: &[u32],
        carry: &Carry,
    ) -> Decision {
        if self.guessing() {
            return Decision::Unsure(format!(
                "{} observed values have several writers, and the linearization built from the latest writer of each fails: {}",
                self.ambiguous, v.sentence
            ));
        }
        let mut v = *v;
        for &b in before {
            self.push_block(b, &mut v.partial);
        }
        let mut walked = v.partial.clone();
        self.push_block(y, &mut walked);
        v.attempts.push(legal_prefix(self.ops, &walked, carry));
        if let Some(x) = x {
            let mut swapped = Vec::new();
            for &b in before.iter().filter(|&&b| b != x) {
                self.push_block(b, &mut swapped);
            }
            self.push_block(y, &mut swapped);
            self.push_block(x, &mut swapped);
            v.attempts.push(legal_prefix(self.ops, &swapped, carry));
        }
        Decision::Violated(v)
    }

    /// Appends the block's operations in linearization order (positions).
    fn push_block(&self, b: u32, out: &mut Vec<usize>) {
        let block = &self.blocks[b as usize];
        for c in &self.clusters[block.first as usize..(block.first + block.len) as usize] {
            if (c.writer as usize) < self.n {
                out.push(c.writer as usize);
            }
            out.extend(
                self.readers[c.from as usize..c.to as usize]
                    .iter()
                    .map(|&r| r as usize),
            );
        }
    }
}

fn describe_value(v: Option<&Val>) -> String {
    match v {
        None => "absent".to_owned(),
        Some(v) => format!("the value {}", KeyModel::describe_state(&Some(v.clone()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OpOrigin;

    /// (call, return, op, info) → operations, as the lowering makes them.
    fn ops(spec: &[(i64, i64, KeyOp, bool)]) -> Vec<Operation<KeyModel>> {
        spec.iter()
            .enumerate()
            .map(|(i, (call, ret, op, info))| Operation {
                client_id: Some(i as u32),
                call_time: *call,
                return_time: if *info { 1_000 } else { *ret },
                op: op.clone(),
                metadata: Some(OpOrigin {
                    process: i as u64,
                    invoke_index: *call as u64,
                    complete_index: Some(*ret as u64),
                    uncertain: *info,
                    node: None,
                    bounded_by: None,
                }),
            })
            .collect()
    }

    fn w(v: i64) -> KeyOp {
        KeyOp::Write(Val::Int(v))
    }
    fn r(v: Option<i64>) -> KeyOp {
        KeyOp::Read(v.map(Val::Int))
    }
    fn cas(e: Option<i64>, n: i64) -> KeyOp {
        KeyOp::Cas {
            expected: e.map(Val::Int),
            new: Val::Int(n),
            uncertain: false,
        }
    }

    fn kind(d: &Decision) -> Option<ViolationKind> {
        match d {
            Decision::Violated(v) => Some(v.kind),
            _ => None,
        }
    }

    #[test]
    fn sequential_writes_and_reads_are_linearizable_in_their_order() {
        let h = ops(&[
            (0, 1, r(None), false),
            (2, 3, w(1), false),
            (4, 5, r(Some(1)), false),
            (6, 7, cas(Some(1), 2), false),
            (8, 9, r(Some(2)), false),
        ]);
        match decide(&h, &Carry::default()) {
            Decision::Linearizable(order) => assert_eq!(order, vec![0, 1, 2, 3, 4]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stale_read_names_both_chains() {
        // write 1, then write 2, then a read of 1: overwritten.
        let h = ops(&[
            (0, 1, w(1), false),
            (2, 3, w(2), false),
            (4, 5, r(Some(1)), false),
        ]);
        let d = decide(&h, &Carry::default());
        assert_eq!(kind(&d), Some(ViolationKind::Overwritten), "{d:?}");
        if let Decision::Violated(v) = d {
            assert!(v.ops.contains(&2) && v.ops.contains(&1), "{v:?}");
        }
    }

    #[test]
    fn read_of_the_initial_value_after_a_write_completed_is_overwritten() {
        let h = ops(&[(0, 1, w(1), false), (2, 3, r(None), false)]);
        assert_eq!(
            kind(&decide(&h, &Carry::default())),
            Some(ViolationKind::Overwritten)
        );
    }

    #[test]
    fn each_structural_rule_is_caught() {
        let never = ops(&[(0, 1, w(1), false), (2, 3, r(Some(9)), false)]);
        assert_eq!(
            kind(&decide(&never, &Carry::default())),
            Some(ViolationKind::NeverWritten)
        );
        let before = ops(&[(0, 1, r(Some(1)), false), (2, 3, w(1), false)]);
        assert_eq!(
            kind(&decide(&before, &Carry::default())),
            Some(ViolationKind::ObservedBeforeWritten)
        );
        let conflict = ops(&[
            (0, 1, w(1), false),
            (2, 5, cas(Some(1), 2), false),
            (3, 6, cas(Some(1), 3), false),
        ]);
        assert_eq!(
            kind(&decide(&conflict, &Carry::default())),
            Some(ViolationKind::CasConflict)
        );
        let cycle = ops(&[
            (0, 5, cas(Some(2), 1), false),
            (1, 6, cas(Some(1), 2), false),
        ]);
        assert_eq!(
            kind(&decide(&cycle, &Carry::default())),
            Some(ViolationKind::CasCycle)
        );
        // cas(1→2) completes, then a read of 1 begins: the read must precede the cas (the
        // cas overlaps the write, so no completed write overwrote 1 before the read).
        let chain = ops(&[
            (0, 3, w(1), false),
            (1, 4, cas(Some(1), 2), false),
            (5, 6, r(Some(1)), false),
        ]);
        let d = decide(&chain, &Carry::default());
        assert_eq!(kind(&d), Some(ViolationKind::ChainOrder), "{d:?}");
    }

    #[test]
    fn an_info_write_read_later_took_effect_and_one_never_read_is_left_out() {
        let h = ops(&[
            (0, 1, w(1), false),
            (2, 0, w(2), true),
            (3, 0, w(3), true),
            (4, 5, r(Some(1)), false),
            (6, 7, r(Some(2)), false),
        ]);
        match decide(&h, &Carry::default()) {
            Decision::Linearizable(order) => {
                assert_eq!(order, vec![0, 3, 1, 4, 2], "write 3 goes last, unread")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_writer_overwritten_before_an_observer_began_is_not_its_source() {
        // Two writes of 1; the first is overwritten by write 2 before the read begins, so
        // the read's source is the second, whatever values repeat.
        let h = ops(&[
            (0, 1, w(1), false),
            (2, 3, w(2), false),
            (4, 20, w(1), false),
            (5, 6, r(Some(1)), false),
            (7, 8, r(Some(2)), false),
        ]);
        let d = decide(&h, &Carry::default());
        assert_eq!(kind(&d), Some(ViolationKind::Overwritten), "{d:?}");
        // The same without the second write of 1: the read names the write that
        // overwrote its value.
        let h = ops(&[
            (0, 1, w(1), false),
            (2, 3, w(2), false),
            (5, 6, r(Some(1)), false),
        ]);
        match decide(&h, &Carry::default()) {
            Decision::Violated(v) => assert_eq!(v.ops, vec![2, 0, 1]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn repeated_values_are_decided_when_the_latest_writer_works_and_unsure_otherwise() {
        let fine = ops(&[
            (0, 1, w(1), false),
            (2, 3, w(1), false),
            (4, 5, r(Some(1)), false),
        ]);
        assert!(matches!(
            decide(&fine, &Carry::default()),
            Decision::Linearizable(_)
        ));
        // The latest writer of 1 before the read of 1 (the long write) conflicts with
        // write 2, and the other one overlaps write 2: the engine does not know whether
        // another choice works, so it is unsure (never invalid on a guess).
        let hard = ops(&[
            (0, 3, w(1), false),
            (1, 4, w(2), false),
            (5, 20, w(1), false),
            (6, 7, r(Some(1)), false),
            (8, 9, r(Some(2)), false),
        ]);
        assert!(
            matches!(decide(&hard, &Carry::default()), Decision::Unsure(_)),
            "{:?}",
            decide(&hard, &Carry::default())
        );
        // A value nobody writes is invalid whatever repeats.
        let never = ops(&[
            (0, 1, w(1), false),
            (2, 3, w(1), false),
            (4, 5, r(Some(5)), false),
        ]);
        assert_eq!(
            kind(&decide(&never, &Carry::default())),
            Some(ViolationKind::NeverWritten)
        );
    }

    #[test]
    fn retiring_forgets_dead_blocks_and_keeps_the_rest() {
        let h = ops(&[
            (0, 1, w(1), false),
            (2, 3, r(Some(1)), false),
            (4, 5, w(2), false),
            (6, 7, r(Some(2)), false),
            (8, 9, w(3), false),
        ]);
        let mut carry = Carry::default();
        let horizon = Horizon {
            safe: 10,
            open_writes: &[],
        };
        match retire(&h, &mut carry, &horizon) {
            // init, write 1 (+ read) and write 2 (+ read) are dead; write 3 is not.
            Retired::Ops { positions, .. } => assert_eq!(positions, vec![0, 1, 2, 3]),
            other => panic!("{other:?}"),
        }
        assert!(carry.init_retired);
        assert_eq!(carry.max_inv, 6);
        // What is left is decided on its own, after the carry.
        let rest = vec![h[4].clone()];
        assert!(matches!(decide(&rest, &carry), Decision::Linearizable(_)));
        // A later read of a retired value is invalid.
        let mut late = rest.clone();
        late.extend(ops(&[(11, 12, r(Some(1)), false)]));
        assert_eq!(
            kind(&decide(&late, &carry)),
            Some(ViolationKind::NeverWritten)
        );
    }

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

    /// A random history as the reader sees it: `n` operations with distinct event
    /// positions (each invoke and completion its own), by `clients` clients, on a register
    /// that applies each operation when it is invoked; values unique (`values == 0`) or
    /// from a few; one read in eight returns some other recent value (so some histories
    /// are not linearizable); a share of writes and cas end in info (applied or not), a
    /// cas that does not match fails (and is left out, as the lowering drops it).
    fn random_history(
        rng: &mut Rng,
        n: usize,
        clients: usize,
        values: u64,
    ) -> Vec<(Operation<KeyModel>, i64)> {
        random_history_with(rng, n, clients, values, 9)
    }

    /// [`random_history`] with deletes from `delete_from` of ten (writes and cas below).
    fn random_history_with(
        rng: &mut Rng,
        n: usize,
        clients: usize,
        values: u64,
        delete_from: u64,
    ) -> Vec<(Operation<KeyModel>, i64)> {
        let mut out: Vec<(Operation<KeyModel>, i64)> = Vec::new();
        // Per client: (invoke time, op, info, keep).
        let mut open: Vec<Option<(i64, KeyOp, bool, bool)>> = vec![None; clients];
        let mut state: Option<i64> = None;
        let mut written: Vec<i64> = vec![1];
        let mut next = 1;
        let (mut t, mut started) = (0i64, 0);
        while started < n || open.iter().any(Option::is_some) {
            let c = rng.below(clients as u64) as usize;
            match open[c].take() {
                None if started < n => {
                    started += 1;
                    let value = if values == 0 {
                        next += 1;
                        next
                    } else {
                        rng.below(values) as i64
                    };
                    let other = |rng: &mut Rng, written: &[i64]| -> Option<i64> {
                        (rng.below(5) > 0).then(|| {
                            written[written.len()
                                - 1
                                - rng.below(written.len().min(4) as u64) as usize]
                        })
                    };
                    let info = rng.below(6) == 0;
                    let applies = !info || rng.below(2) == 0;
                    let roll = rng.below(10);
                    let roll = match roll {
                        0..=4 => roll,
                        _ if roll >= delete_from => 9,
                        _ if roll + 1 == delete_from => 8,
                        _ => 5,
                    };
                    let (op, keep) = match roll {
                        0..=4 => {
                            let seen = if rng.below(8) == 0 {
                                other(rng, &written)
                            } else {
                                state
                            };
                            (KeyOp::Read(seen.map(Val::Int)), !info)
                        }
                        5..=7 => {
                            written.push(value);
                            if applies {
                                state = Some(value);
                            }
                            (KeyOp::Write(Val::Int(value)), true)
                        }
                        8 => {
                            written.push(value);
                            let expected = if rng.below(3) > 0 {
                                state
                            } else {
                                other(rng, &written)
                            };
                            let matches = expected == state;
                            if matches && applies {
                                state = Some(value);
                            }
                            let op = KeyOp::Cas {
                                expected: expected.map(Val::Int),
                                new: Val::Int(value),
                                uncertain: info,
                            };
                            (op, info || matches)
                        }
                        _ => {
                            if applies {
                                state = None;
                            }
                            (KeyOp::Delete, true)
                        }
                    };
                    open[c] = Some((t, op, info, keep));
                    t += 1;
                }
                None => {}
                Some((call, op, info, keep)) => {
                    if keep {
                        let metadata = Some(OpOrigin {
                            process: c as u64,
                            invoke_index: call as u64,
                            complete_index: Some(t as u64),
                            uncertain: info,
                            node: None,
                            bounded_by: None,
                        });
                        let return_time = if info { i64::MAX } else { t };
                        out.push((
                            Operation {
                                client_id: Some(c as u32),
                                call_time: call,
                                return_time,
                                op,
                                metadata,
                            },
                            t,
                        ));
                    }
                    t += 1;
                }
            }
        }
        out
    }

    fn exact(ops: &[Operation<KeyModel>]) -> bool {
        let limits = crate::budget::Limits {
            deadline: None,
            memory_limit_bytes: None,
            cancel: None,
            abort: None,
        };
        matches!(
            crate::engine::search(ops, &limits, u64::MAX).verdict,
            crate::engine::EngineVerdict::Linearizable
        )
    }

    /// What [`streamed`] saw.
    #[derive(Debug, Default)]
    struct Streamed {
        /// The verdict (the reads-from engine's on what is left, else the search's from
        /// the carry, as the checker does).
        valid: bool,
        retired: usize,
        cuts: usize,
        /// The most operations held at once.
        peak: usize,
    }

    /// Feeds a history to `retire` completion by completion, as the reader does, then
    /// decides the rest.
    fn streamed(history: &[(Operation<KeyModel>, i64)], end: i64) -> Streamed {
        let mut carry = Carry::default();
        let mut buffer: Vec<Operation<KeyModel>> = Vec::new();
        let mut peak = 0;
        for (k, (op, completed_at)) in history.iter().enumerate() {
            buffer.push(op.clone());
            peak = peak.max(buffer.len());
            let now = completed_at + 1;
            // Operations invoked before now and completing later are open.
            let later = &history[k + 1..];
            let open: Vec<&Operation<KeyModel>> = later
                .iter()
                .map(|(o, _)| o)
                .filter(|o| o.call_time < now)
                .collect();
            let safe = open.iter().map(|o| o.call_time).fold(now, i64::min);
            let open_writes: Vec<Option<Val>> = open
                .iter()
                .filter_map(|o| match &o.op {
                    KeyOp::Write(v) | KeyOp::Cas { new: v, .. } => Some(Some(v.clone())),
                    KeyOp::Delete => Some(None),
                    _ => None,
                })
                .collect();
            let horizon = Horizon {
                safe,
                open_writes: &open_writes,
            };
            match retire(&buffer, &mut carry, &horizon) {
                Retired::Nothing => {}
                Retired::Ops { positions, .. } => {
                    let mut i = 0;
                    buffer.retain(|_| {
                        let keep = !positions.contains(&i);
                        i += 1;
                        keep
                    });
                }
                Retired::Violated(_) => {
                    return Streamed {
                        valid: false,
                        retired: carry.retired_ops,
                        cuts: carry.cuts,
                        peak,
                    };
                }
            }
        }
        for op in &mut buffer {
            if op.return_time == i64::MAX {
                op.return_time = end;
            }
        }
        buffer.sort_by_key(|o| o.call_time);
        let valid = match decide(&buffer, &carry) {
            Decision::Linearizable(_) => true,
            Decision::Violated(_) => false,
            Decision::Unsure(_) => {
                completed_before_retired(&buffer, &carry).is_none()
                    && exact(&with_start(&buffer, &carry))
            }
        };
        Streamed {
            valid,
            retired: carry.retired_ops,
            cuts: carry.cuts,
            peak,
        }
    }

    /// What [`compare_streamed`] counted.
    #[derive(Debug, Default)]
    struct Tally {
        retired: usize,
        cut: usize,
        invalid: usize,
        valid: usize,
    }

    /// Checks one random history (`what` names it) offline and streamed against the
    /// search: never wrong offline, the same answer streamed, whatever was retired.
    fn compare_streamed(what: &str, history: &[(Operation<KeyModel>, i64)], tally: &mut Tally) {
        let end = history.iter().map(|(_, t)| *t).max().unwrap_or(0) + 1;
        let all: Vec<Operation<KeyModel>> = history
            .iter()
            .map(|(o, _)| {
                let mut o = o.clone();
                if o.return_time == i64::MAX {
                    o.return_time = end;
                }
                o
            })
            .collect();
        let expected = exact(&all);
        match decide(&all, &Carry::default()) {
            Decision::Linearizable(_) => assert!(expected, "{what}: {all:#?}"),
            Decision::Violated(v) => assert!(!expected, "{what}: {v:?}\n{all:#?}"),
            Decision::Unsure(_) => {}
        }
        let s = streamed(history, end);
        assert_eq!(s.valid, expected, "{what} ({s:?}): {all:#?}");
        tally.retired += usize::from(s.retired > 0);
        tally.cut += usize::from(s.cuts > 0);
        tally.invalid += usize::from(!expected);
        tally.valid += usize::from(expected);
    }

    #[test]
    fn deciding_while_reading_agrees_with_the_search_on_random_histories() {
        let mut rng = Rng(2024);
        let mut tally = Tally::default();
        for case in 0..4000 {
            let values = [0, 0, 3, 8][case % 4];
            let clients = 1 + case % 4;
            let history = random_history(&mut rng, 4 + case % 9, clients, values);
            // Offline on unique values without deletes: always decided.
            if values == 0 && !history.iter().any(|(o, _)| matches!(o.op, KeyOp::Delete)) {
                let all: Vec<_> = history.iter().map(|(o, _)| o.clone()).collect();
                let d = decide(&all, &Carry::default());
                assert!(!matches!(d, Decision::Unsure(_)), "case {case}: {d:?}");
            }
            compare_streamed(&format!("case {case}"), &history, &mut tally);
        }
        eprintln!("{tally:?}");
        assert!(
            tally.retired > 1500,
            "retirement must happen often: {tally:?}"
        );
        assert!(tally.invalid > 500 && tally.valid > 500, "{tally:?}");
    }

    /// Keys with many deletes: absent is written again and again, reads of it have
    /// several possible sources (`info` deletes stay possible to the end), and what is
    /// decided while reading is decided at cuts.
    #[test]
    fn deciding_while_reading_with_deletes_agrees_with_the_search() {
        let mut tally = Tally::default();
        for seed in 0..60u64 {
            let mut rng = Rng(seed);
            for case in 0..100 {
                let values = [0, 0, 2, 8][case % 4];
                let clients = 1 + case % 6;
                let n = 6 + case % 17;
                let deletes_from = [6, 7, 8][seed as usize % 3];
                let history = random_history_with(&mut rng, n, clients, values, deletes_from);
                compare_streamed(&format!("seed {seed} case {case}"), &history, &mut tally);
            }
        }
        eprintln!("{tally:?}");
        assert!(tally.cut > 400, "cuts must happen often: {tally:?}");
        assert!(tally.invalid > 400 && tally.valid > 400, "{tally:?}");
    }

    /// Two `info` deletes never complete; three reads of absent, each after a write that
    /// completed before it began, need three deletes: invalid. The first cut must give
    /// the part before it one of the two (either would do) and leave only the other.
    #[test]
    fn a_cut_takes_the_info_deletes_the_part_before_it_needs() {
        let op = |call: i64, ret: i64, op: KeyOp, info: bool| {
            let mut o = ops(&[(call, ret, op, info)]).remove(0);
            o.client_id = Some(u32::from(info) + call as u32 % 2);
            if info {
                o.return_time = i64::MAX;
            }
            (o, ret)
        };
        let mut history = vec![op(0, 1, KeyOp::Delete, true), op(2, 3, KeyOp::Delete, true)];
        for (t, v) in [(4, 1), (8, 2), (12, 3)] {
            history.push(op(t, t + 1, w(v), false));
            history.push(op(t + 2, t + 3, r(None), false));
        }
        history.push(op(16, 17, w(4), false));
        let s = streamed(&history, 18);
        assert!(!s.valid && s.cuts > 0, "{s:?}");
        // Without the last read of absent, two deletes are enough.
        history.remove(history.len() - 2);
        let s = streamed(&history, 18);
        assert!(s.valid && s.cuts > 0, "{s:?}");
    }

    /// One client writes, reads, deletes and reads absent for ever, after an `info`
    /// delete that never completes: every later read of absent could read from it, and
    /// yet the key holds a few operations at a time, not the history.
    #[test]
    fn a_long_key_with_deletes_and_an_open_delete_holds_few_operations() {
        let op = |call: i64, ret: i64, op: KeyOp, info: bool| Operation {
            client_id: Some(u32::from(info)),
            call_time: call,
            return_time: if info { i64::MAX } else { ret },
            op,
            metadata: Some(OpOrigin {
                process: u64::from(info),
                invoke_index: call as u64,
                complete_index: Some(ret as u64),
                uncertain: info,
                node: None,
                bounded_by: None,
            }),
        };
        let mut history = vec![(op(0, 1, KeyOp::Delete, true), 1)];
        let mut t = 2;
        for v in 0..5_000i64 {
            for o in [w(v), r(Some(v)), KeyOp::Delete, r(None), r(None)] {
                history.push((op(t, t + 1, o, false), t + 1));
                t += 2;
            }
        }
        let s = streamed(&history, t);
        assert!(s.valid, "{s:?}");
        assert!(s.cuts > 1_000, "{s:?}");
        assert!(s.peak < 20, "a few operations held at a time: {s:?}");
        // A stale read of absent at the end is found.
        history.push((op(t, t + 1, r(None), false), t + 1));
        history.push((op(t + 2, t + 3, w(-1), false), t + 3));
        history.push((op(t + 4, t + 5, r(None), false), t + 5));
        let s = streamed(&history, t + 6);
        assert!(s.valid, "the open delete can take effect last: {s:?}");
        history.push((op(t + 6, t + 7, r(Some(-1)), false), t + 7));
        let s = streamed(&history, t + 8);
        assert!(!s.valid, "{s:?}");
    }
}

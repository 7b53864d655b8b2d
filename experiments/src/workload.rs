//! Jepsen-style clients: logical processes that each have at most one operation in
//! flight, and a history of every invocation and completion.
//!
//! The workload knows nothing about the cluster: the runner asks it when it next needs
//! to act ([`Workload::next_wakeup`]), calls [`Workload::step`] at that time to collect
//! the requests to submit, and hands it every reply ([`Workload::on_reply`]). All of its
//! randomness comes from one seeded RNG, so the same seed gives the same operations.
//!
//! * **Closed loop:** `clients` processes; each issues its next operation when the
//!   previous one completed, plus `think_time_ms`.
//! * **Open loop:** operations arrive at `rate_per_s` with exponential gaps and are given
//!   to the lowest-numbered free slot; with none free (`clients` operations already in
//!   flight, the bound) the arrival is dropped and counted as `dropped_saturated`.
//! * **Outcomes:** a success is `ok`; a definite error (cas mismatch, unavailable) is
//!   `fail`; an indeterminate error or no reply within `timeout_ms` is `info`, and the
//!   process is retired: its slot continues as process `p + clients`, as in Jepsen, and a
//!   late reply to the abandoned operation is ignored.

use std::collections::{BTreeMap, VecDeque};

use kvlab_checker::history::{EventType, HistoryEvent, OpFn};
use kvlab_types::{
    ClientError, ClientRequest, ClientResponse, KvOp, NodeId, OpOutput, RequestId, Rng, Time,
    TxnMicroOp, Value,
};
use rand::Rng as _;
use serde_json::json;

use crate::spec::{KeyDistribution, LoadMode, PartitionsPerTxn, WorkloadKind, WorkloadSpec};

/// How many recently written or read values per key a cas may pick its expected value
/// from. Small, so that a fair share of cas operations succeed.
pub const RECENT_VALUES_PER_KEY: usize = 4;

/// A uniform float in `[0, 1)` from 53 random bits: portable and exactly reproducible.
pub fn unit_f64(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform integer in `0..n` (`n > 0`) by multiply-shift; the bias is below `n / 2^64`.
pub fn below(rng: &mut Rng, n: u64) -> u64 {
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

/// Draws key indices, uniformly or from a zipfian distribution (a precomputed CDF
/// searched by bisection, so one draw costs `O(log keys)`).
#[derive(Clone, Debug)]
pub struct KeySampler {
    keys: u32,
    /// `cdf[i]` = probability of a key index `<= i`; empty for uniform.
    cdf: Vec<f64>,
}

impl KeySampler {
    /// A sampler over `keys` keys (`keys > 0`).
    pub fn new(keys: u32, distribution: KeyDistribution, zipf_exponent: f64) -> Self {
        let cdf = match distribution {
            KeyDistribution::Uniform => Vec::new(),
            KeyDistribution::Zipfian => {
                let weights: Vec<f64> = (1..=keys)
                    .map(|i| 1.0 / f64::from(i).powf(zipf_exponent))
                    .collect();
                let total: f64 = weights.iter().sum();
                let mut acc = 0.0;
                let mut cdf: Vec<f64> = weights
                    .iter()
                    .map(|w| {
                        acc += w / total;
                        acc
                    })
                    .collect();
                // Rounding may leave the last entry a hair below 1.
                if let Some(last) = cdf.last_mut() {
                    *last = 1.0;
                }
                cdf
            }
        };
        KeySampler { keys, cdf }
    }

    /// Draws a key index in `0..keys`.
    pub fn sample(&self, rng: &mut Rng) -> u32 {
        if self.cdf.is_empty() {
            return below(rng, u64::from(self.keys)) as u32;
        }
        let u = unit_f64(rng);
        // The first index whose cumulative probability exceeds u.
        let i = self.cdf.partition_point(|&c| c <= u);
        i.min(self.cdf.len() - 1) as u32
    }
}

/// After the liveness phase and the workload's operation timeout, the drain may take
/// this much longer before the run is abandoned as stuck (real clusters only: the
/// simulator's timeouts always fire). A transactional workload's final reads run in it.
pub const DRAIN_SLACK_MS: u64 = 10_000;

pub use crate::spec::key_name;

/// What one slot (a closed-loop client or an open-loop concurrency slot) is doing.
#[derive(Clone, Debug)]
enum SlotState {
    /// Free; in closed mode it invokes its next operation at `ready_at`.
    Idle { ready_at: Time },
    /// Waiting for the reply to its operation.
    Busy,
}

#[derive(Clone, Debug)]
struct Slot {
    /// The current process id (`slot`, then `slot + clients`, … after each `info`).
    process: u64,
    /// Next request sequence number of the current process.
    next_seq: u64,
    state: SlotState,
    /// First `ok` completion after the liveness phase began.
    first_ok_after_heal: Option<Time>,
}

/// An operation in flight.
#[derive(Clone, Debug)]
struct InFlight {
    slot: usize,
    key_index: u32,
    op: KvOp,
    node: NodeId,
    invoked_at: Time,
    deadline: Time,
    /// A final read (transactional workloads, after the liveness phase).
    final_read: bool,
}

/// Transactional workloads: after the clients stop, a read of every key appended to,
/// once nothing else is in flight: the final reads the txn checker's `lost-append` and
/// `partial-txn` checks rely on (design note wave 2 §3.4, step 7). A read that fails is
/// retried until `until`.
#[derive(Debug, Default)]
struct FinalReads {
    /// Keys appended to during the run (by index).
    appended: std::collections::BTreeSet<u32>,
    /// Keys still to read.
    due: VecDeque<u32>,
    /// No final read is invoked after this (set when the clients stop).
    until: Option<Time>,
}

/// Counters of the workload, for `summary.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkloadCounters {
    /// Open-loop arrivals that found every slot busy.
    pub dropped_saturated: u64,
    /// Replies to operations that had already timed out (or were never sent).
    pub late_replies_ignored: u64,
    /// Replies whose output did not fit the operation (a read answered `Done`, …);
    /// recorded as `info`.
    pub malformed_replies: u64,
    /// Whether the workload stopped issuing at [`MAX_HISTORY_OPERATIONS`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub capped_at_max_operations: bool,
}

/// How the liveness phase went for the clients.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct LivenessReport {
    /// Whether the liveness requirement held: in closed mode every client completed an
    /// `ok` operation after the heal (or got the state machine's own answer: a cas that
    /// found another value, which under contention may be all a client ever gets); in
    /// open mode at least one did.
    pub ok: bool,
    /// Milliseconds from the heal to the first `ok` completion, if any.
    pub first_ok_after_heal_ms: Option<f64>,
    /// Milliseconds from the heal until every client had an `ok` completion, if all did.
    pub all_clients_ok_after_heal_ms: Option<f64>,
    /// Clients (slots) that had an `ok` completion after the heal.
    pub clients_with_progress: u32,
    /// Clients (slots) in total.
    pub clients: u32,
}

/// The clients of one run and the history they produce.
#[derive(Debug)]
pub struct Workload {
    spec: WorkloadSpec,
    /// The nodes clients send to (process `p` uses `gateways[p % len]`): every node,
    /// less joiners not booted yet and nodes gone for good.
    gateways: Vec<NodeId>,
    rng: Rng,
    keys: KeySampler,
    slots: Vec<Slot>,
    in_flight: BTreeMap<RequestId, InFlight>,
    /// Open loop: the next arrival.
    next_arrival: Option<Time>,
    /// Values recently written to or read from each key (by key index).
    recent: Vec<VecDeque<Option<Value>>>,
    next_value: Value,
    issuing: bool,
    final_reads: FinalReads,
    heal_at: Option<Time>,
    history: HistoryLog,
    counters: WorkloadCounters,
    /// Committed transactions' phases (final reads left out), for `summary.json`.
    txn_samples: Vec<crate::txn_stats::TxnPhaseSample>,
    /// The partition (vnode) of each key index, when transactions must touch exactly
    /// `partitions_per_txn` of them.
    key_partitions: Option<Vec<u32>>,
}

/// How many times a key is redrawn from the key distribution for a transaction that
/// must touch a given number of partitions, before it is drawn uniformly among the keys
/// that fit.
const MAX_KEY_REDRAWS: u32 = 64;

/// The most operations one run may invoke. The checker keeps each operation's search
/// input in memory (about 120 bytes each: 1.2 GB per 10 million, measured), so a run
/// that would go past this stops with an error naming the limit instead of growing
/// without bound.
pub const MAX_HISTORY_OPERATIONS: u64 = 10_000_000;

/// Where the history goes: kept in memory (tests, small runs), or streamed to a file as
/// the run goes (the runner), with its statistics kept either way.
#[derive(Debug, Default)]
struct HistoryLog {
    kept: Vec<HistoryEvent>,
    stream: Option<std::io::BufWriter<std::fs::File>>,
    recorded: u64,
    last_time_ns: u64,
    write_error: Option<String>,
    stats: crate::op_stats::OpStatsBuilder,
}

impl HistoryLog {
    fn push(&mut self, mut e: HistoryEvent) {
        e.index = self.recorded;
        debug_assert!(self.last_time_ns <= e.time_ns, "history out of time order");
        self.last_time_ns = e.time_ns;
        self.recorded += 1;
        self.stats.add(&e);
        match &mut self.stream {
            None => self.kept.push(e),
            Some(w) if self.write_error.is_none() => {
                let written = serde_json::to_writer(&mut *w, &e)
                    .map_err(std::io::Error::from)
                    .and_then(|()| std::io::Write::write_all(w, b"\n"));
                if let Err(err) = written {
                    self.write_error = Some(err.to_string());
                }
            }
            Some(_) => {}
        }
    }
}

impl WorkloadOutcome {
    /// The outcome of a run without clients.
    pub fn empty() -> Self {
        WorkloadOutcome {
            history: Vec::new(),
            recorded: 0,
            stats: crate::op_stats::OpStats::default(),
            counters: WorkloadCounters::default(),
            write_error: None,
            capped: false,
            txn_samples: Vec::new(),
        }
    }
}

/// What a finished workload produced.
#[derive(Debug)]
pub struct WorkloadOutcome {
    /// The history, when it was kept in memory (empty when it was streamed to a file).
    pub history: Vec<HistoryEvent>,
    /// Events recorded (kept or streamed).
    pub recorded: u64,
    /// Counts and latencies of the operations.
    pub stats: crate::op_stats::OpStats,
    /// The workload's counters.
    pub counters: WorkloadCounters,
    /// Why streaming the history failed, if it did.
    pub write_error: Option<String>,
    /// Whether the workload stopped issuing at [`MAX_HISTORY_OPERATIONS`].
    pub capped: bool,
    /// One per committed transaction (final reads left out): its coordinator's phases
    /// and the client's latency.
    pub txn_samples: Vec<crate::txn_stats::TxnPhaseSample>,
}

impl Workload {
    /// A workload over `nodes` (non-empty) that starts issuing at `start`.
    pub fn new(spec: &WorkloadSpec, nodes: &[NodeId], start: Time, seed: u64) -> Self {
        let mut rng = kvlab_types::seeded_rng(seed);
        let slots = (0..spec.clients)
            .map(|i| Slot {
                process: u64::from(i),
                next_seq: 1,
                state: SlotState::Idle { ready_at: start },
                first_ok_after_heal: None,
            })
            .collect();
        let next_arrival = match spec.mode {
            LoadMode::Closed => None,
            LoadMode::Open => Some(start.saturating_add(exp_gap(&mut rng, spec.rate_per_s))),
        };
        Workload {
            keys: KeySampler::new(spec.keys, spec.key_distribution, spec.zipf_exponent),
            spec: spec.clone(),
            gateways: nodes.to_vec(),
            rng,
            slots,
            in_flight: BTreeMap::new(),
            next_arrival,
            recent: vec![VecDeque::new(); spec.keys as usize],
            next_value: 1,
            issuing: true,
            final_reads: FinalReads::default(),
            heal_at: None,
            history: HistoryLog::default(),
            counters: WorkloadCounters::default(),
            txn_samples: Vec::new(),
            key_partitions: None,
        }
    }

    /// Gives the partition (vnode) of every key index, so that with
    /// `partitions_per_txn = N` every transaction touches exactly `N` of them.
    pub fn with_key_partitions(mut self, partitions: Vec<u32>) -> Self {
        self.key_partitions = Some(partitions);
        self
    }

    /// The earliest time the workload must act: an invocation due or a timeout. `None`
    /// when it waits only for replies (or for nothing).
    pub fn next_wakeup(&self) -> Option<Time> {
        let mut t: Option<Time> = self.in_flight.values().map(|f| f.deadline).min();
        // Final reads wait for every other operation (whose deadline is counted above).
        if !self.final_reads.due.is_empty() && self.in_flight.values().all(|f| f.final_read) {
            let idle = self.slots.iter().filter_map(|s| match s.state {
                SlotState::Idle { ready_at } => Some(ready_at),
                SlotState::Busy => None,
            });
            t = t.into_iter().chain(idle).min();
        }
        if self.issuing {
            let due = match self.spec.mode {
                LoadMode::Closed => self
                    .slots
                    .iter()
                    .filter_map(|s| match s.state {
                        SlotState::Idle { ready_at } => Some(ready_at),
                        SlotState::Busy => None,
                    })
                    .min(),
                LoadMode::Open => self.next_arrival,
            };
            t = match (t, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        t
    }

    /// Acts at `now`: times out overdue operations, then invokes every operation that is
    /// due, pushing `(node, request)` pairs for the runner to submit.
    pub fn step(&mut self, now: Time, submit: &mut Vec<(NodeId, ClientRequest)>) {
        self.expire(now);
        if self.issuing && self.history.stats.operations() >= MAX_HISTORY_OPERATIONS {
            self.issuing = false;
            self.counters.capped_at_max_operations = true;
        }
        if !self.issuing {
            self.final_reads_step(now, submit);
            return;
        }
        match self.spec.mode {
            LoadMode::Closed => {
                for slot in 0..self.slots.len() {
                    if let SlotState::Idle { ready_at } = self.slots[slot].state
                        && ready_at <= now
                    {
                        submit.push(self.invoke(slot, now));
                    }
                }
            }
            LoadMode::Open => {
                while let Some(arrival) = self.next_arrival.filter(|&a| a <= now) {
                    let free = self
                        .slots
                        .iter()
                        .position(|s| matches!(s.state, SlotState::Idle { .. }));
                    match free {
                        Some(slot) => submit.push(self.invoke(slot, now)),
                        None => self.counters.dropped_saturated += 1,
                    }
                    let gap = exp_gap(&mut self.rng, self.spec.rate_per_s);
                    // A zero gap (rounding) must still advance, or the loop would spin.
                    let next = arrival.saturating_add(gap).max(Time(arrival.0 + 1));
                    self.next_arrival = Some(next);
                }
            }
        }
    }

    /// Records operations whose deadline passed by `now` as `info` and retires their
    /// processes.
    fn expire(&mut self, now: Time) {
        let overdue: Vec<RequestId> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        // Record in deadline order (then request order) so the history stays sorted by time.
        let mut overdue: Vec<(Time, RequestId)> = overdue
            .into_iter()
            .map(|id| (self.in_flight[&id].deadline, id))
            .collect();
        overdue.sort();
        for (deadline, id) in overdue {
            if let Some(f) = self.in_flight.remove(&id) {
                let error = format!("timeout after {} ms", self.spec.timeout_ms);
                self.complete(f, id, deadline, EventType::Info, None, Some(error));
            }
        }
    }

    /// Handles a node's reply that the client received at `at`.
    pub fn on_reply(&mut self, at: Time, response: ClientResponse) {
        // A reply that arrives after the deadline lost the race with the timeout.
        self.expire(at);
        let Some(f) = self.in_flight.remove(&response.id) else {
            self.counters.late_replies_ignored += 1;
            return;
        };
        let id = response.id;
        match (response.result, &f.op) {
            (Ok(OpOutput::Read(v)), KvOp::Read { .. }) => {
                self.complete(f, id, at, EventType::Ok, Some(json!(v)), None)
            }
            (Ok(OpOutput::Done), KvOp::Write { .. } | KvOp::Cas { .. } | KvOp::Delete { .. }) => {
                self.complete(f, id, at, EventType::Ok, None, None)
            }
            (Ok(OpOutput::Txn { results, timing }), KvOp::Txn { ops })
                if results.len() == ops.len() =>
            {
                if !f.final_read {
                    self.txn_samples.push(crate::txn_stats::TxnPhaseSample {
                        timing,
                        total_ns: at.saturating_since(f.invoked_at).as_nanos() as u64,
                    });
                }
                let value = txn_value(ops, Some(&results));
                self.complete(f, id, at, EventType::Ok, Some(value), None)
            }
            (Ok(out), _) => {
                self.counters.malformed_replies += 1;
                let error = format!("reply {out:?} does not fit the operation");
                self.complete(f, id, at, EventType::Info, None, Some(error))
            }
            (Err(e @ ClientError::Indeterminate { .. }), _) => {
                self.complete(f, id, at, EventType::Info, None, Some(e.to_string()))
            }
            (Err(e), _) => {
                // A cas that found another value is the state machine's answer: the
                // system works, the client lost a race. Progress, though not `ok`.
                // So is a transaction aborted by a conflict (NO_WAIT under contention).
                let answered = matches!(
                    e,
                    ClientError::CasMismatch { .. } | ClientError::TxnAborted { .. }
                );
                let slot = f.slot;
                self.complete(f, id, at, EventType::Fail, None, Some(e.to_string()));
                if answered {
                    self.note_progress(slot, at);
                }
            }
        }
    }

    /// Client `slot` got an answer from the state machine at `at`.
    fn note_progress(&mut self, slot: usize, at: Time) {
        let s = &mut self.slots[slot];
        if self.heal_at.is_some_and(|h| at >= h) && s.first_ok_after_heal.is_none() {
            s.first_ok_after_heal = Some(at);
        }
    }

    /// Stops invoking new operations (operations in flight still complete or time out).
    pub fn stop_issuing(&mut self) {
        self.issuing = false;
    }

    /// Marks the start of the liveness phase: from now on, progress is tracked per
    /// client.
    pub fn mark_heal(&mut self, now: Time) {
        self.heal_at = Some(now);
        for s in &mut self.slots {
            s.first_ok_after_heal = None;
        }
    }

    /// Whether every client (closed loop) or some client (open loop) had an `ok` since
    /// [`Workload::mark_heal`].
    pub fn liveness_satisfied(&self) -> bool {
        self.liveness().ok
    }

    /// How the liveness phase went so far.
    pub fn liveness(&self) -> LivenessReport {
        let heal = self.heal_at.unwrap_or(Time::ZERO);
        let oks: Vec<Time> = self
            .slots
            .iter()
            .filter_map(|s| s.first_ok_after_heal)
            .collect();
        let ms = |t: Time| t.saturating_since(heal).as_secs_f64() * 1e3;
        let all = oks.len() == self.slots.len();
        let ok = self.heal_at.is_some()
            && match self.spec.mode {
                LoadMode::Closed => all,
                LoadMode::Open => !oks.is_empty(),
            };
        LivenessReport {
            ok,
            first_ok_after_heal_ms: oks.iter().min().map(|&t| ms(t)),
            all_clients_ok_after_heal_ms: if all {
                oks.iter().max().map(|&t| ms(t))
            } else {
                None
            },
            clients_with_progress: oks.len() as u32,
            clients: self.slots.len() as u32,
        }
    }

    /// Sets the nodes clients send to from now on (ignored when empty). A client whose
    /// node left moves to another, as a real client reconnects.
    pub fn set_gateways(&mut self, gateways: &[NodeId]) {
        if !gateways.is_empty() {
            self.gateways = gateways.to_vec();
        }
    }

    /// Number of operations in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len() + self.final_reads.due.len()
    }

    /// Streams the history to a new file at `path` instead of keeping it in memory
    /// (call before the first step).
    pub fn stream_history_to(&mut self, path: &std::path::Path) -> std::io::Result<()> {
        let file = std::fs::File::create(path)?;
        self.history.stream = Some(std::io::BufWriter::with_capacity(1 << 16, file));
        Ok(())
    }

    /// The history kept in memory so far (empty when it is streamed).
    pub fn history(&self) -> &[HistoryEvent] {
        &self.history.kept
    }

    /// The counters so far.
    pub fn counters(&self) -> &WorkloadCounters {
        &self.counters
    }

    /// Ends the workload (flushing a streamed history).
    pub fn finish(self) -> WorkloadOutcome {
        let mut h = self.history;
        if let Some(mut w) = h.stream.take()
            && let Err(e) = std::io::Write::flush(&mut w)
        {
            h.write_error.get_or_insert(e.to_string());
        }
        WorkloadOutcome {
            history: h.kept,
            recorded: h.recorded,
            stats: h.stats.finish(),
            capped: self.counters.capped_at_max_operations,
            counters: self.counters,
            write_error: h.write_error,
            txn_samples: self.txn_samples,
        }
    }

    /// Draws the next operation for `slot`, records its invocation and returns the
    /// request to submit.
    fn invoke(&mut self, slot: usize, now: Time) -> (NodeId, ClientRequest) {
        let (key_index, op) = match self.spec.kind {
            WorkloadKind::Kv => self.draw_kv_op(),
            WorkloadKind::TxnListAppend => (0, self.draw_txn()),
        };
        self.record_invoke(slot, now, key_index, op)
    }

    /// A list-append transaction: `txn_ops_min..=txn_ops_max` micro-ops, each on a key
    /// drawn from the key distribution, a read with probability `txn_read_fraction`,
    /// else an append of a fresh (so unique) element.
    fn draw_txn(&mut self) -> KvOp {
        let (lo, hi) = (self.spec.txn_ops_min, self.spec.txn_ops_max);
        let n = lo + below(&mut self.rng, u64::from(hi - lo + 1)) as u32;
        let fixed = match self.spec.partitions_per_txn {
            PartitionsPerTxn::Exactly(k) => self.keys_in_partitions(n, k),
            PartitionsPerTxn::Any => None,
        };
        let ops = (0..n as usize)
            .map(|i| {
                let index = match fixed.as_ref().and_then(|f| f.get(i)) {
                    Some(&k) => k,
                    None => self.keys.sample(&mut self.rng),
                };
                let key = key_name(index);
                if unit_f64(&mut self.rng) < self.spec.txn_read_fraction {
                    TxnMicroOp::Read { key }
                } else {
                    self.final_reads.appended.insert(index);
                    let value = self.fresh_value();
                    TxnMicroOp::Append { key, value }
                }
            })
            .collect();
        KvOp::Txn { ops }
    }

    /// `n` key indices that fall in exactly `k` partitions (`k <= n`, and the keys span
    /// at least `k`: the spec's validation): each drawn from the key distribution and
    /// redrawn while it does not fit — a new partition while fewer than `k` are chosen,
    /// one of the chosen ones after, and a new one when the remaining micro-ops are just
    /// enough to reach `k`. `None` without the keys' partitions.
    fn keys_in_partitions(&mut self, n: u32, k: u32) -> Option<Vec<u32>> {
        let parts = self.key_partitions.as_ref()?;
        let (n, k) = (n as usize, k as usize);
        let mut chosen: Vec<u32> = Vec::with_capacity(k);
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            let must_open = k.saturating_sub(chosen.len()) >= n - i;
            let fits = |key: u32, chosen: &[u32]| {
                let Some(p) = parts.get(key as usize) else {
                    return false;
                };
                let known = chosen.contains(p);
                if must_open {
                    !known
                } else {
                    known || chosen.len() < k
                }
            };
            let mut pick = None;
            for _ in 0..MAX_KEY_REDRAWS {
                let key = self.keys.sample(&mut self.rng);
                if fits(key, &chosen) {
                    pick = Some(key);
                    break;
                }
            }
            let key = pick.unwrap_or_else(|| {
                let fitting: Vec<u32> = (0..self.spec.keys).filter(|&x| fits(x, &chosen)).collect();
                let at = below(&mut self.rng, fitting.len().max(1) as u64) as usize;
                fitting.get(at).copied().unwrap_or(0)
            });
            if let Some(&p) = parts.get(key as usize)
                && !chosen.contains(&p)
            {
                chosen.push(p);
            }
            keys.push(key);
        }
        Some(keys)
    }

    /// A single-key operation from `[workload.mix]`, with its key index.
    fn draw_kv_op(&mut self) -> (u32, KvOp) {
        let key_index = self.keys.sample(&mut self.rng);
        let key = key_name(key_index);
        let mix = &self.spec.mix;
        let total = mix.read + mix.write + mix.cas;
        let u = unit_f64(&mut self.rng) * total;
        let op = if u < mix.read {
            KvOp::Read { key }
        } else if u < mix.read + mix.write || mix.cas <= 0.0 {
            let value = self.fresh_value();
            self.remember(key_index, Some(value));
            KvOp::Write { key, value }
        } else {
            let recent = &self.recent[key_index as usize];
            let expected = if recent.is_empty() {
                None
            } else {
                recent[below(&mut self.rng, recent.len() as u64) as usize]
            };
            let new = self.fresh_value();
            KvOp::Cas { key, expected, new }
        };
        (key_index, op)
    }

    /// After the clients stopped (transactional workloads): once nothing else is in
    /// flight, each idle client reads one key still due, until every key appended to
    /// was read `ok` or the window closed (it leaves the drain a full request timeout
    /// before [`DRAIN_SLACK_MS`] runs out).
    fn final_reads_step(&mut self, now: Time, submit: &mut Vec<(NodeId, ClientRequest)>) {
        if self.spec.kind != WorkloadKind::TxnListAppend {
            return;
        }
        let timeout = std::time::Duration::from_millis(self.spec.timeout_ms);
        let until = *self.final_reads.until.get_or_insert_with(|| {
            let window = DRAIN_SLACK_MS
                .saturating_sub(self.spec.timeout_ms)
                .saturating_sub(1_000);
            let due: VecDeque<u32> = self.final_reads.appended.iter().copied().collect();
            self.final_reads.due = due;
            now.saturating_add(timeout)
                .saturating_add(std::time::Duration::from_millis(window))
        });
        if now > until {
            self.final_reads.due.clear();
            return;
        }
        if self.in_flight.values().any(|f| !f.final_read) {
            return;
        }
        for slot in 0..self.slots.len() {
            let SlotState::Idle { ready_at } = self.slots[slot].state else {
                continue;
            };
            if ready_at > now {
                continue;
            }
            let Some(key_index) = self.final_reads.due.pop_front() else {
                return;
            };
            let op = KvOp::Txn {
                ops: vec![TxnMicroOp::Read {
                    key: key_name(key_index),
                }],
            };
            let (node, req) = self.record_invoke(slot, now, key_index, op);
            if let Some(f) = self.in_flight.get_mut(&req.id) {
                f.final_read = true;
            }
            submit.push((node, req));
        }
    }

    /// Records the invocation of `op` by `slot` and returns the request to submit.
    fn record_invoke(
        &mut self,
        slot: usize,
        now: Time,
        key_index: u32,
        op: KvOp,
    ) -> (NodeId, ClientRequest) {
        let s = &mut self.slots[slot];
        let process = s.process;
        let id = RequestId {
            client: process,
            seq: s.next_seq,
        };
        s.next_seq += 1;
        s.state = SlotState::Busy;
        let node = self.gateways[(process % self.gateways.len() as u64) as usize];
        let (f, key, value) = history_fields(&op);
        self.push_event(HistoryEvent {
            index: 0,
            time_ns: now.as_nanos(),
            process,
            kind: EventType::Invoke,
            f,
            key: (f != OpFn::Txn).then_some(key),
            value,
            node: Some(node.0),
            error: None,
        });
        let deadline = now.saturating_add(std::time::Duration::from_millis(self.spec.timeout_ms));
        self.in_flight.insert(
            id,
            InFlight {
                slot,
                key_index,
                op: op.clone(),
                node,
                invoked_at: now,
                deadline,
                final_read: false,
            },
        );
        (node, ClientRequest { id, op })
    }

    /// Records the completion of `f` at `at` and frees (or retires) its slot.
    fn complete(
        &mut self,
        f: InFlight,
        id: RequestId,
        at: Time,
        kind: EventType,
        read_value: Option<serde_json::Value>,
        error: Option<String>,
    ) {
        debug_assert!(at >= f.invoked_at, "completion before invocation");
        if f.final_read && kind != EventType::Ok {
            self.final_reads.due.push_back(f.key_index);
        }
        let (fname, key, mut value) = history_fields(&f.op);
        if let Some(v) = read_value {
            value = v;
        }
        if kind == EventType::Ok {
            match &f.op {
                KvOp::Read { .. } => {
                    let v = value.as_i64();
                    self.remember(f.key_index, v);
                }
                KvOp::Cas { new, .. } => self.remember(f.key_index, Some(*new)),
                _ => {}
            }
        }
        self.push_event(HistoryEvent {
            index: 0,
            time_ns: at.as_nanos(),
            process: id.client,
            kind,
            f: fname,
            key: (fname != OpFn::Txn).then_some(key),
            value,
            node: Some(f.node.0),
            error,
        });
        let clients = u64::from(self.spec.clients);
        let think = std::time::Duration::from_millis(self.spec.think_time_ms);
        let s = &mut self.slots[f.slot];
        if kind == EventType::Info {
            s.process += clients;
            s.next_seq = 1;
        }
        s.state = SlotState::Idle {
            ready_at: at.saturating_add(think),
        };
        if kind == EventType::Ok {
            self.note_progress(f.slot, at);
        }
    }

    fn push_event(&mut self, e: HistoryEvent) {
        self.history.push(e);
    }

    fn fresh_value(&mut self) -> Value {
        let v = self.next_value;
        self.next_value += 1;
        v
    }

    fn remember(&mut self, key_index: u32, v: Option<Value>) {
        let r = &mut self.recent[key_index as usize];
        if r.contains(&v) {
            return;
        }
        if r.len() == RECENT_VALUES_PER_KEY {
            r.pop_front();
        }
        r.push_back(v);
    }
}

/// The `f`, `key` and invocation `value` of an operation in the history format.
fn history_fields(op: &KvOp) -> (OpFn, String, serde_json::Value) {
    match op {
        KvOp::Read { key } => (OpFn::Read, key.clone(), serde_json::Value::Null),
        KvOp::Write { key, value } => (OpFn::Write, key.clone(), json!(value)),
        KvOp::Cas { key, expected, new } => (OpFn::Cas, key.clone(), json!([expected, new])),
        KvOp::Delete { key } => (OpFn::Delete, key.clone(), serde_json::Value::Null),
        // Workloads never issue etcd requests (etcd clients record their own histories);
        // recorded as a txn whose value names the request kind, which no model accepts.
        KvOp::Etcd(op) => (
            OpFn::Txn,
            String::new(),
            json!({ "etcd": format!("{:?}", op.kind) }),
        ),
        KvOp::Txn { ops } => (OpFn::Txn, String::new(), txn_value(ops, None)),
    }
}

/// A transaction's micro-ops in the txn checker's JSONL shape (`[f, key, value]`, `f`
/// `"r"`, `"append"` or `"w"`): reads `null` on invoke, or what they read (`results`,
/// a committed transaction's, one per micro-op).
pub fn txn_value(
    ops: &[kvlab_types::TxnMicroOp],
    results: Option<&[kvlab_types::TxnMicroResult]>,
) -> serde_json::Value {
    use kvlab_types::{TxnMicroOp, TxnMicroResult, TxnReadValue};
    let mops: Vec<serde_json::Value> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| match op {
            TxnMicroOp::Read { key } => {
                let read = match results.and_then(|r| r.get(i)) {
                    Some(TxnMicroResult::Read(Some(TxnReadValue::List(l)))) => json!(l),
                    Some(TxnMicroResult::Read(Some(TxnReadValue::Register(v)))) => json!(v),
                    _ => serde_json::Value::Null,
                };
                json!(["r", key, read])
            }
            TxnMicroOp::Append { key, value } => json!(["append", key, value]),
            TxnMicroOp::Write { key, value } => json!(["w", key, value]),
        })
        .collect();
    serde_json::Value::Array(mops)
}

/// An exponential gap with mean `1 / rate_per_s` seconds.
fn exp_gap(rng: &mut Rng, rate_per_s: f64) -> std::time::Duration {
    let u = unit_f64(rng);
    let s = -(1.0 - u).ln() / rate_per_s;
    std::time::Duration::from_nanos((s * 1e9).round().clamp(0.0, 1e18) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::OpMix;

    fn spec(clients: u32) -> WorkloadSpec {
        WorkloadSpec {
            clients,
            timeout_ms: 100,
            ..WorkloadSpec::default()
        }
    }

    fn nodes() -> Vec<NodeId> {
        vec![NodeId(1), NodeId(2), NodeId(3)]
    }

    #[test]
    fn zipfian_sampler_prefers_low_keys_and_stays_in_range() {
        let s = KeySampler::new(10, KeyDistribution::Zipfian, 1.2);
        let mut rng = kvlab_types::seeded_rng(3);
        let mut counts = [0u32; 10];
        for _ in 0..20_000 {
            counts[s.sample(&mut rng) as usize] += 1;
        }
        assert!(
            counts[0] > counts[1] && counts[1] > counts[5] && counts[5] > counts[9],
            "{counts:?}"
        );
        // 1 / H(10, 1.2) ≈ 0.39 of the draws go to k0.
        assert!((7_000..9_000).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn zipfian_sampler_with_theta_zero_is_uniform() {
        let s = KeySampler::new(10, KeyDistribution::Zipfian, 0.0);
        let mut rng = kvlab_types::seeded_rng(3);
        let mut counts = [0u32; 10];
        for _ in 0..20_000 {
            counts[s.sample(&mut rng) as usize] += 1;
        }
        // 2,000 expected per key; a binomial's sd is ~42.
        assert!(
            counts.iter().all(|c| (1_800..2_200).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn uniform_sampler_covers_every_key() {
        let s = KeySampler::new(4, KeyDistribution::Uniform, 1.0);
        let mut rng = kvlab_types::seeded_rng(3);
        let mut seen = [false; 4];
        for _ in 0..200 {
            seen[s.sample(&mut rng) as usize] = true;
        }
        assert_eq!(seen, [true; 4]);
    }

    #[test]
    fn closed_loop_invokes_one_op_per_client_and_routes_by_process() {
        let mut w = Workload::new(&spec(4), &nodes(), Time::ZERO, 1);
        let mut out = Vec::new();
        w.step(Time::ZERO, &mut out);
        assert_eq!(out.len(), 4);
        let routed: Vec<(u64, u32)> = out.iter().map(|(n, r)| (r.id.client, n.0)).collect();
        assert_eq!(routed, vec![(0, 1), (1, 2), (2, 3), (3, 1)]);
        // Nothing more until a reply or a timeout.
        out.clear();
        w.step(Time::from_millis(1), &mut out);
        assert!(out.is_empty());
        assert_eq!(w.next_wakeup(), Some(Time::from_millis(100)));
        assert_eq!(w.history().len(), 4);
    }

    #[test]
    fn timeout_records_info_and_retires_the_process() {
        let mut w = Workload::new(&spec(2), &nodes(), Time::ZERO, 1);
        let mut out = Vec::new();
        w.step(Time::ZERO, &mut out);
        let first = out[0].1.clone();
        out.clear();
        w.step(Time::from_millis(100), &mut out);
        // Both timed out; both slots continue as new processes 2 and 3.
        let infos = w
            .history()
            .iter()
            .filter(|e| e.kind == EventType::Info)
            .count();
        assert_eq!(infos, 2);
        let procs: Vec<u64> = out.iter().map(|(_, r)| r.id.client).collect();
        assert_eq!(procs, vec![2, 3]);
        // A late reply to the abandoned op is ignored.
        let before = w.history().len();
        w.on_reply(
            Time::from_millis(150),
            ClientResponse {
                id: first.id,
                result: Ok(OpOutput::Done),
            },
        );
        assert_eq!(w.history().len(), before);
        assert_eq!(w.counters().late_replies_ignored, 1);
    }

    #[test]
    fn outcomes_map_to_ok_fail_and_info() {
        let mut w = Workload::new(
            &WorkloadSpec {
                mix: OpMix {
                    read: 1.0,
                    write: 0.0,
                    cas: 0.0,
                },
                ..spec(3)
            },
            &nodes(),
            Time::ZERO,
            1,
        );
        let mut out = Vec::new();
        w.step(Time::ZERO, &mut out);
        let ids: Vec<RequestId> = out.iter().map(|(_, r)| r.id).collect();
        let t = Time::from_millis(5);
        w.on_reply(
            t,
            ClientResponse {
                id: ids[0],
                result: Ok(OpOutput::Read(Some(7))),
            },
        );
        w.on_reply(
            t,
            ClientResponse {
                id: ids[1],
                result: Err(ClientError::Unavailable {
                    reason: "no".into(),
                    hint: None,
                }),
            },
        );
        w.on_reply(
            t,
            ClientResponse {
                id: ids[2],
                result: Err(ClientError::Indeterminate {
                    reason: "lost".into(),
                }),
            },
        );
        let kinds: Vec<EventType> = w.history()[3..].iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![EventType::Ok, EventType::Fail, EventType::Info]);
        assert_eq!(w.history()[3].value, json!(7));
        // Indices are positions.
        assert!(
            w.history()
                .iter()
                .enumerate()
                .all(|(i, e)| e.index == i as u64)
        );
    }

    #[test]
    fn written_values_are_unique_and_cas_expects_a_recent_value() {
        let mut w = Workload::new(
            &WorkloadSpec {
                keys: 1,
                mix: OpMix {
                    read: 0.0,
                    write: 1.0,
                    cas: 1.0,
                },
                ..spec(1)
            },
            &nodes(),
            Time::ZERO,
            9,
        );
        let mut written = Vec::new();
        let mut cas_expected_written = 0;
        let mut cas_total = 0;
        let mut now = Time::ZERO;
        for _ in 0..200 {
            let mut out = Vec::new();
            w.step(now, &mut out);
            for (_, req) in out {
                match req.op {
                    KvOp::Write { value, .. } => written.push(value),
                    KvOp::Cas { expected, new, .. } => {
                        cas_total += 1;
                        if expected.is_some_and(|e| written.contains(&e)) {
                            cas_expected_written += 1;
                        }
                        written.push(new);
                    }
                    _ => {}
                }
                now = Time(now.0 + 1_000_000);
                w.on_reply(
                    now,
                    ClientResponse {
                        id: req.id,
                        result: Ok(OpOutput::Done),
                    },
                );
            }
        }
        let mut sorted = written.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), written.len(), "values repeat");
        assert!(
            cas_total > 50 && cas_expected_written * 10 > cas_total * 8,
            "{cas_expected_written}/{cas_total}"
        );
    }

    #[test]
    fn open_loop_drops_arrivals_when_every_slot_is_busy() {
        let mut w = Workload::new(
            &WorkloadSpec {
                mode: LoadMode::Open,
                rate_per_s: 1000.0,
                timeout_ms: 10_000,
                ..spec(2)
            },
            &nodes(),
            Time::ZERO,
            4,
        );
        let mut out = Vec::new();
        // Never reply: after ~1 s of arrivals only 2 were taken, the rest dropped.
        let mut now = Time::ZERO;
        while now < Time::from_secs(1) {
            now = w.next_wakeup().unwrap();
            w.step(now, &mut out);
        }
        assert_eq!(out.len(), 2);
        let dropped = w.counters().dropped_saturated;
        assert!((900..1100).contains(&dropped), "{dropped}");
    }

    #[test]
    fn liveness_needs_every_closed_loop_client_to_progress_after_heal() {
        let mut w = Workload::new(&spec(2), &nodes(), Time::ZERO, 1);
        let mut out = Vec::new();
        w.step(Time::ZERO, &mut out);
        w.mark_heal(Time::from_millis(1));
        assert!(!w.liveness_satisfied());
        let ids: Vec<RequestId> = out.iter().map(|(_, r)| r.id).collect();
        let reply = |id| ClientResponse {
            id,
            result: match &out.iter().find(|(_, r)| r.id == id).unwrap().1.op {
                KvOp::Read { .. } => Ok(OpOutput::Read(None)),
                _ => Ok(OpOutput::Done),
            },
        };
        w.on_reply(Time::from_millis(3), reply(ids[0]));
        assert!(!w.liveness_satisfied());
        w.on_reply(Time::from_millis(5), reply(ids[1]));
        let l = w.liveness();
        assert!(l.ok);
        assert_eq!(l.first_ok_after_heal_ms, Some(2.0));
        assert_eq!(l.all_clients_ok_after_heal_ms, Some(4.0));
    }

    /// Under contention a client may get nothing but lost cas races after the heal:
    /// that is the state machine answering, which counts as progress; a refusal
    /// (`Unavailable`) does not.
    #[test]
    fn a_lost_cas_race_is_progress_and_a_refusal_is_not() {
        let mut w = Workload::new(&spec(2), &nodes(), Time::ZERO, 1);
        let mut out = Vec::new();
        w.step(Time::ZERO, &mut out);
        w.mark_heal(Time::from_millis(1));
        let ids: Vec<RequestId> = out.iter().map(|(_, r)| r.id).collect();
        let fail = |id, e| ClientResponse { id, result: Err(e) };
        w.on_reply(
            Time::from_millis(3),
            fail(ids[0], ClientError::CasMismatch { current: Some(7) }),
        );
        w.on_reply(
            Time::from_millis(4),
            fail(
                ids[1],
                ClientError::Unavailable {
                    reason: "no leader".into(),
                    hint: None,
                },
            ),
        );
        let l = w.liveness();
        assert!(!l.ok);
        assert_eq!(l.clients_with_progress, 1);
        assert_eq!(l.first_ok_after_heal_ms, Some(2.0));
    }

    #[test]
    fn same_seed_same_operations() {
        let ops = |seed| {
            let mut w = Workload::new(&spec(5), &nodes(), Time::ZERO, seed);
            let mut out = Vec::new();
            w.step(Time::ZERO, &mut out);
            out
        };
        assert_eq!(ops(11), ops(11));
        assert_ne!(ops(11), ops(12));
    }
}

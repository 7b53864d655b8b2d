//! The simulator proper: nodes, the virtual clock, the event loop and the effect executor.

use std::cell::OnceCell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use kvlab_types::{
    AdminCommand, ClientRequest, ClientResponse, Cx, Disposition, Effect, Message, NodeEvent,
    NodeId, Out, Protocol, Recovery, Rng, StepOrder, Time, TimerId, derive_seed, seeded_rng,
};
use serde::{Deserialize, Serialize};

use crate::config::{LatencyDist, SimConfig, chance};
use crate::disk::{LogCorruption, NodeDisk};
use crate::error::SimError;
use crate::queue::EventQueue;
use crate::rules::{FaultRule, RuleId, Verdict, clamp_probability};
use crate::stats::{NodeStats, SimStats};
use kvlab_codec::{CodecError, Envelope, MAX_FRAME_BYTES_LIMIT, PeerKey};
use rand::RngExt;

/// The largest clock drift [`Sim::set_clock_drift`] accepts, in parts per million (a
/// clock running at half or one and a half times real speed). Larger values are clamped:
/// a clock rate must stay positive.
pub const MAX_CLOCK_DRIFT_PPM: i64 = 500_000;

/// Something the simulated cluster produced that the outside world sees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SimOutput {
    /// A reply reached the client that sent the request to `node`.
    Reply {
        /// When the reply reaches the client (global virtual time).
        at: Time,
        /// The node that answered.
        node: NodeId,
        /// The answer.
        response: ClientResponse,
    },
    /// A node reported an event (`Effect::Event`), or the simulator reports one about
    /// it: `storage_error` when a storage operation failed and the node was stopped.
    Event {
        /// When the node reported it (global virtual time).
        at: Time,
        /// The reporting node.
        node: NodeId,
        /// The event.
        event: NodeEvent,
    },
}

impl SimOutput {
    /// The global virtual time of the output.
    pub fn at(&self) -> Time {
        match self {
            SimOutput::Reply { at, .. } | SimOutput::Event { at, .. } => *at,
        }
    }
}

/// One scheduled event. Node indices are positions in `Sim::slots`.
#[derive(Debug)]
enum Event<M> {
    /// A node-to-node message arrives; `incarnation` is the receiver's at send time.
    Deliver {
        from: NodeId,
        to: usize,
        incarnation: u64,
        msg: M,
    },
    /// A client request arrives at a node.
    ClientArrive { node: usize, req: ClientRequest },
    /// A timer deadline passed; stale unless `generation` is still the armed one.
    Timer {
        node: usize,
        timer: TimerId,
        generation: u64,
    },
    /// An fsync completed.
    SyncDone {
        node: usize,
        incarnation: u64,
        sync_seq: u64,
    },
    /// An operator's command reaches a node (deferred while it is paused).
    Admin { node: usize, cmd: AdminCommand },
    /// A reply reaches its client.
    ReplyArrive {
        node: NodeId,
        response: ClientResponse,
    },
}

/// A Send or Reply that waits for a sync of its node.
#[derive(Debug)]
enum Gated<M> {
    Send { to: NodeId, msg: M },
    Reply(ClientResponse),
}

/// A message a hold rule keeps back.
#[derive(Debug)]
struct HeldMessage<M> {
    from: NodeId,
    to: usize,
    incarnation: u64,
    msg: M,
}

/// A node's local clock: `local = anchor_local + (global - anchor_global) * rate`, with
/// `rate = 1 + drift_ppm / 1e6`. Re-anchored whenever the drift changes, so it is
/// continuous, except for forward steps ([`Sim::jump_clock`]); it never goes backwards.
#[derive(Clone, Copy, Debug, Default)]
struct LocalClock {
    anchor_global_ns: u64,
    anchor_local_ns: u64,
    drift_ppm: i64,
}

impl LocalClock {
    fn rate_ppm(&self) -> u128 {
        // drift_ppm is clamped to [-MAX_CLOCK_DRIFT_PPM, MAX_CLOCK_DRIFT_PPM].
        (1_000_000 + self.drift_ppm) as u128
    }

    fn local_at(&self, global_ns: u64) -> u64 {
        let elapsed = global_ns.saturating_sub(self.anchor_global_ns);
        let scaled = if self.drift_ppm == 0 {
            u128::from(elapsed)
        } else {
            u128::from(elapsed) * self.rate_ppm() / 1_000_000
        };
        self.anchor_local_ns
            .saturating_add(u64::try_from(scaled).unwrap_or(u64::MAX))
    }

    /// The first global instant at which the local clock reads at least `local_ns`.
    fn global_at(&self, local_ns: u64) -> u64 {
        let elapsed = local_ns.saturating_sub(self.anchor_local_ns);
        let scaled = if self.drift_ppm == 0 {
            u128::from(elapsed)
        } else {
            (u128::from(elapsed) * 1_000_000).div_ceil(self.rate_ppm())
        };
        self.anchor_global_ns
            .saturating_add(u64::try_from(scaled).unwrap_or(u64::MAX))
    }

    fn set_drift(&mut self, global_ns: u64, drift_ppm: i64) {
        self.anchor_local_ns = self.local_at(global_ns);
        self.anchor_global_ns = global_ns;
        self.drift_ppm = drift_ppm;
    }

    /// Steps the clock forward by `by_ns` at `global_ns`; the rate is unchanged.
    fn jump(&mut self, global_ns: u64, by_ns: u64) {
        self.anchor_local_ns = self.local_at(global_ns).saturating_add(by_ns);
        self.anchor_global_ns = global_ns;
    }
}

/// An armed timer.
#[derive(Clone, Copy, Debug)]
struct ArmedTimer {
    generation: u64,
    local_deadline_ns: u64,
}

/// One simulated node: the protocol value (absent while crashed) and everything the
/// machine around it keeps.
#[derive(Debug)]
struct Slot<P: Protocol> {
    id: NodeId,
    proto: Option<P>,
    /// Booted at least once (false for an absent node until [`Sim::start`]).
    started: bool,
    paused: bool,
    /// Bumped at every crash; messages sent to an older incarnation are dropped.
    incarnation: u64,
    restarts: u64,
    rng: Rng,
    clock: LocalClock,
    timers: BTreeMap<TimerId, ArmedTimer>,
    next_timer_generation: u64,
    /// Events that arrived while paused, in arrival order.
    deferred: VecDeque<Event<P::Msg>>,
    /// Sends and replies waiting for the sync numbered by the first field.
    gated: VecDeque<(u64, Gated<P::Msg>)>,
    syncs_issued: u64,
    last_sync_done_ns: u64,
    disk: NodeDisk,
    disk_rng: Rng,
    stats: NodeStats,
}

/// The effect of the active rules and the configured network, precomputed whenever the
/// rules change so that a message costs no rule walk when no rule is active.
#[derive(Clone, Copy, Debug, Default)]
struct RuleSummary {
    /// A partition, one-way, isolate or hold rule is active.
    link_rules: bool,
    /// A delay rule is active.
    delay_rules: bool,
    /// A layered rule is active.
    layer_rules: bool,
    /// Combined loss probability (configuration and loss rules).
    loss_p: f64,
    /// Combined duplication probability (configuration and duplicate rules).
    duplicate_p: f64,
}

/// The input of one protocol step.
enum Input<M> {
    Msg(NodeId, M),
    Timer(TimerId),
    Client(ClientRequest),
    Admin(AdminCommand),
}

/// A deterministic discrete-event simulation of a cluster of `P` nodes.
///
/// One seed decides everything: network delays, loss, duplication, reordering, disk
/// latency and crash damage, and every node's randomness. Sub-seeds are
/// `derive_seed(seed, "network", 0)`, `("client", 0)`, `("node", id)` and
/// `("disk", id)`. A node's RNG is reseeded at each restart from
/// `derive_seed(derive_seed(seed, "node", id), "incarnation", restarts)`, so an
/// incarnation's randomness does not depend on how much the previous one drew.
pub struct Sim<P: Protocol> {
    config: SimConfig,
    seed: u64,
    node_config: P::Config,
    /// Node ids, sorted; `slots[i]` is node `peers[i]`.
    peers: Vec<NodeId>,
    slots: Vec<Slot<P>>,
    queue: EventQueue<Event<P::Msg>>,
    now: Time,
    net_rng: Rng,
    client_rng: Rng,
    /// The run's cluster key: what corrupted frames are made and checked with.
    peer_key: PeerKey,
    rules: BTreeMap<RuleId, FaultRule>,
    next_rule_id: u64,
    summary: RuleSummary,
    held: Vec<HeldMessage<P::Msg>>,
    /// Reused output buffer of protocol steps.
    out: Out<P::Msg>,
    /// Outputs not yet handed to the caller.
    pending: Vec<SimOutput>,
    /// Cluster-wide counters; `per_node` stays empty here (nodes keep their own).
    stats: SimStats,
    /// `stats` with `per_node` filled in, built lazily by [`Sim::stats`].
    stats_view: OnceCell<SimStats>,
}

impl<P: Protocol> fmt::Debug for Sim<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let up: Vec<NodeId> = self
            .slots
            .iter()
            .filter(|s| s.proto.is_some())
            .map(|s| s.id)
            .collect();
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .field("nodes", &self.peers)
            .field("up", &up)
            .field("queued_events", &self.queue.len())
            .field("rules", &self.rules)
            .field("held_messages", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl<P: Protocol> Sim<P> {
    /// Builds a cluster of `nodes` (booted at time zero, in id order, each with empty
    /// storage) after validating `config`.
    pub fn new(
        config: SimConfig,
        seed: u64,
        nodes: &[NodeId],
        node_config: P::Config,
    ) -> Result<Self, SimError> {
        Self::new_with_absent(config, seed, nodes, &[], node_config)
    }

    /// Like [`Sim::new`], but the nodes in `absent` do not boot: they are machines not
    /// yet switched on (joiners), down until [`Sim::start`] boots them for the first
    /// time. Every node, absent or not, is in the peer list each node boots with.
    pub fn new_with_absent(
        config: SimConfig,
        seed: u64,
        nodes: &[NodeId],
        absent: &[NodeId],
        node_config: P::Config,
    ) -> Result<Self, SimError> {
        config.validate()?;
        if let Some(&n) = absent.iter().find(|n| !nodes.contains(n)) {
            return Err(SimError::UnknownNode(n));
        }
        if nodes.is_empty() {
            return Err(SimError::NoNodes);
        }
        let mut peers = nodes.to_vec();
        peers.sort_unstable();
        if let Some(w) = peers.windows(2).find(|w| w[0] == w[1]) {
            return Err(SimError::DuplicateNode(w[0]));
        }
        let slots = peers
            .iter()
            .map(|&id| Slot {
                id,
                proto: None,
                started: false,
                paused: false,
                incarnation: 0,
                restarts: 0,
                rng: seeded_rng(derive_seed(seed, "node", u64::from(id.0))),
                clock: LocalClock::default(),
                timers: BTreeMap::new(),
                next_timer_generation: 0,
                deferred: VecDeque::new(),
                gated: VecDeque::new(),
                syncs_issued: 0,
                last_sync_done_ns: 0,
                disk: NodeDisk::new(id),
                disk_rng: seeded_rng(derive_seed(seed, "disk", u64::from(id.0))),
                stats: NodeStats::default(),
            })
            .collect();
        let mut sim = Sim {
            net_rng: seeded_rng(derive_seed(seed, "network", 0)),
            client_rng: seeded_rng(derive_seed(seed, "client", 0)),
            peer_key: PeerKey::derive(&derive_seed(seed, "cluster-secret", 0).to_le_bytes()),
            config,
            seed,
            node_config,
            peers,
            slots,
            queue: EventQueue::default(),
            now: Time::ZERO,
            rules: BTreeMap::new(),
            next_rule_id: 0,
            summary: RuleSummary::default(),
            held: Vec::new(),
            out: Out::new(),
            pending: Vec::new(),
            stats: SimStats::default(),
            stats_view: OnceCell::new(),
        };
        sim.recompute_rule_summary();
        for idx in 0..sim.slots.len() {
            if !absent.contains(&sim.slots[idx].id) {
                sim.boot(idx)?;
                sim.slots[idx].started = true;
            }
        }
        sim.invalidate_stats();
        Ok(sim)
    }

    /// Boots a node that never ran (one of [`Sim::new_with_absent`]'s `absent`), on an
    /// empty disk: a machine switched on for the first time, not a restart.
    pub fn start(&mut self, node: NodeId) -> Result<(), SimError> {
        let idx = self.index_of(node).ok_or(SimError::UnknownNode(node))?;
        if self.slots[idx].started {
            return Err(SimError::AlreadyStarted(node));
        }
        let booted = self.boot(idx);
        if booted.is_ok() {
            self.slots[idx].started = true;
        }
        self.invalidate_stats();
        booted
    }

    /// Whether `node` was ever booted (an absent node that [`Sim::start`] has not booted
    /// yet is not).
    pub fn is_started(&self, node: NodeId) -> bool {
        self.index_of(node).is_some_and(|i| self.slots[i].started)
    }

    /// The current global virtual time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// The seed of the run, for a reproduction command.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The validated configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The node ids, sorted.
    pub fn node_ids(&self) -> &[NodeId] {
        &self.peers
    }

    /// A client sends `req` to `node`; it arrives after the client latency. It is lost if
    /// the node is down when it arrives, and waits if the node is paused. A request to a
    /// node outside the simulation is counted in `client_requests_unknown_node`.
    pub fn submit(&mut self, node: NodeId, req: ClientRequest) {
        self.invalidate_stats();
        self.stats.client_requests_submitted += 1;
        let Some(idx) = self.index_of(node) else {
            self.stats.client_requests_unknown_node += 1;
            return;
        };
        let delay = self
            .config
            .network
            .client_latency
            .sample_ns(&mut self.client_rng);
        let at = self.now.0.saturating_add(delay);
        self.queue.push(at, Event::ClientArrive { node: idx, req });
    }

    /// Delivers `msg` to `to` as if `from` had sent it — a forged, corrupted or replayed
    /// packet — at the current instant, as the next event (a paused node when it
    /// resumes). It bypasses latency and every fault rule, and is counted like any
    /// delivered message. Returns `Ok(false)`, and the message is lost, if `to` is down.
    /// For hostile-input tests: nothing in a run's spec can inject.
    pub fn inject(&mut self, from: NodeId, to: NodeId, msg: P::Msg) -> Result<bool, SimError> {
        let idx = self.index_of(to).ok_or(SimError::UnknownNode(to))?;
        let slot = &self.slots[idx];
        if slot.proto.is_none() {
            return Ok(false);
        }
        let incarnation = slot.incarnation;
        self.invalidate_stats();
        self.stats.messages_in_flight += 1;
        self.queue.push(
            self.now.0,
            Event::Deliver {
                from,
                to: idx,
                incarnation,
                msg,
            },
        );
        Ok(true)
    }

    /// An operator sends `cmd` to `node` ([`Protocol::on_admin`]); the node handles it at
    /// the current instant, as the next event (a paused node when it resumes). Returns
    /// `Ok(false)`, and the command is lost, if the node is down, as an admin request to a
    /// dead process is; the node reports what it did through events.
    pub fn admin(&mut self, node: NodeId, cmd: AdminCommand) -> Result<bool, SimError> {
        let idx = self.index_of(node).ok_or(SimError::UnknownNode(node))?;
        if self.slots[idx].proto.is_none() {
            return Ok(false);
        }
        self.invalidate_stats();
        self.queue.push(self.now.0, Event::Admin { node: idx, cmd });
        Ok(true)
    }

    /// Processes every event with time `<= deadline` in `(time, seq)` order and appends
    /// what the cluster produced to `out`; the clock then reads `deadline`.
    ///
    /// Stops with [`SimError::EventBudgetExhausted`] (the clock at the last processed
    /// event, the outputs so far appended) when `max_events` is reached, and refuses a
    /// deadline in the past.
    pub fn run_until(&mut self, deadline: Time, out: &mut Vec<SimOutput>) -> Result<(), SimError> {
        if deadline < self.now {
            return Err(SimError::DeadlineInPast {
                now: self.now,
                deadline,
            });
        }
        let result = self.process_until(deadline);
        if result.is_ok() {
            self.now = deadline;
        }
        out.append(&mut self.pending);
        self.invalidate_stats();
        result
    }

    /// Moves outputs produced outside [`Sim::run_until`] (events of booting nodes) into
    /// `out`; `run_until` does this too.
    pub fn drain_outputs(&mut self, out: &mut Vec<SimOutput>) {
        out.append(&mut self.pending);
    }

    /// The time of the next scheduled event, if any (stale timers included).
    pub fn next_event_time(&self) -> Option<Time> {
        self.queue.peek_time().map(Time)
    }

    /// Adds a fault rule; it applies, with every other active rule, to messages sent from
    /// now on.
    pub fn add_rule(&mut self, rule: FaultRule) -> RuleId {
        self.invalidate_stats();
        let id = RuleId(self.next_rule_id);
        self.next_rule_id += 1;
        self.rules.insert(id, rule);
        self.recompute_rule_summary();
        id
    }

    /// Removes a rule; returns whether it was active. Messages held only by this rule are
    /// sent now, in their original order, through the rules still active.
    pub fn remove_rule(&mut self, id: RuleId) -> bool {
        let Some(rule) = self.rules.remove(&id) else {
            return false;
        };
        self.recompute_rule_summary();
        if matches!(rule, FaultRule::Hold { .. }) {
            self.release_held();
        }
        self.invalidate_stats();
        true
    }

    /// The active rules, in the order they were added.
    pub fn rules(&self) -> impl Iterator<Item = (RuleId, &FaultRule)> {
        self.rules.iter().map(|(id, r)| (*id, r))
    }

    /// Removes every rule and sends every held message.
    pub fn heal(&mut self) {
        self.rules.clear();
        self.recompute_rule_summary();
        self.release_held();
        self.invalidate_stats();
    }

    /// Crashes `node`: its volatile state, timers, deferred events and the sends waiting
    /// for a sync are lost, messages in flight to it will be dropped on arrival, and its
    /// disk loses part of what was not synced. A no-op if the node is down or unknown.
    pub fn crash(&mut self, node: NodeId) {
        if let Some(idx) = self.index_of(node) {
            self.crash_idx(idx);
        }
        self.invalidate_stats();
    }

    /// Restarts a crashed node: recovers its storage and boots a fresh protocol value
    /// with what survived. If the storage cannot be recovered the node stays down and
    /// the error names the damaged file.
    pub fn restart(&mut self, node: NodeId) -> Result<(), SimError> {
        let idx = self.index_of(node).ok_or(SimError::UnknownNode(node))?;
        let slot = &mut self.slots[idx];
        if slot.proto.is_some() {
            return Err(SimError::NodeNotCrashed(node));
        }
        if !slot.started {
            return Err(SimError::NeverStarted(node));
        }
        let node_seed = derive_seed(self.seed, "node", u64::from(node.0));
        slot.rng = seeded_rng(derive_seed(node_seed, "incarnation", slot.restarts + 1));
        let booted = self.boot(idx);
        if booted.is_ok() {
            let slot = &mut self.slots[idx];
            slot.restarts += 1;
            slot.stats.restarts += 1;
            self.stats.restarts += 1;
        }
        self.invalidate_stats();
        booted
    }

    /// Pauses `node` (a stopped process): nothing runs on it; messages, client requests,
    /// timers and sync completions for it wait and are processed at [`Sim::resume`].
    /// A no-op if the node is down or unknown.
    pub fn pause(&mut self, node: NodeId) {
        self.invalidate_stats();
        if let Some(idx) = self.index_of(node)
            && self.slots[idx].proto.is_some()
        {
            self.slots[idx].paused = true;
        }
    }

    /// Resumes a paused node: what waited is processed from now on, in arrival order
    /// (timers that expired meanwhile fire then).
    pub fn resume(&mut self, node: NodeId) {
        self.invalidate_stats();
        let Some(idx) = self.index_of(node) else {
            return;
        };
        let slot = &mut self.slots[idx];
        if !slot.paused {
            return;
        }
        slot.paused = false;
        for ev in slot.deferred.drain(..) {
            self.queue.push(self.now.0, ev);
        }
    }

    /// Whether `node` is paused.
    pub fn is_paused(&self, node: NodeId) -> bool {
        self.index_of(node).is_some_and(|i| self.slots[i].paused)
    }

    /// Sets `node`'s clock rate to `1 + drift_ppm / 1e6` from now on (clamped to
    /// ±[`MAX_CLOCK_DRIFT_PPM`]). Its local clock stays continuous, and armed timers keep
    /// their local deadlines, so they fire earlier or later in global time.
    pub fn set_clock_drift(&mut self, node: NodeId, drift_ppm: i64) {
        self.invalidate_stats();
        let Some(idx) = self.index_of(node) else {
            return;
        };
        let now = self.now.0;
        self.slots[idx].clock.set_drift(
            now,
            drift_ppm.clamp(-MAX_CLOCK_DRIFT_PPM, MAX_CLOCK_DRIFT_PPM),
        );
        self.reschedule_timers(idx);
    }

    /// Steps `node`'s clock forward by `by` at once: a VM resumed after a pause or a live
    /// migration, whose monotonic clock catches up in one step. Armed timers keep their
    /// local deadlines, so every timer due within `by` fires now, and deadlines a
    /// protocol computes from its clock (SWIM's suspicion timeouts) expire early. A
    /// clock never steps back: the time a node reads is monotonic (`Instant` in the
    /// server), so a backward step is not something a kvlab node can observe.
    pub fn jump_clock(&mut self, node: NodeId, by: Duration) {
        self.invalidate_stats();
        let Some(idx) = self.index_of(node) else {
            return;
        };
        let now = self.now.0;
        let by_ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.slots[idx].clock.jump(now, by_ns);
        self.reschedule_timers(idx);
    }

    /// Re-queues every armed timer of the node at `idx` at the global instant its local
    /// deadline now falls on (after its clock changed); older queue entries go stale.
    fn reschedule_timers(&mut self, idx: usize) {
        let now = self.now.0;
        let slot = &mut self.slots[idx];
        for (&timer, armed) in slot.timers.iter_mut() {
            slot.next_timer_generation += 1;
            armed.generation = slot.next_timer_generation;
            let at = slot.clock.global_at(armed.local_deadline_ns).max(now);
            self.queue.push(
                at,
                Event::Timer {
                    node: idx,
                    timer,
                    generation: armed.generation,
                },
            );
        }
    }

    /// Makes every fsync of `node`'s disk fail (`on`) or succeed again (a disk returning
    /// `EIO`). The node stops at its next sync, as a server does (see `fail_stop`): what
    /// it had not synced is lost, what it held behind the sync is never sent. The disk
    /// keeps failing across restarts until switched off.
    pub fn set_failing_syncs(&mut self, node: NodeId, on: bool) {
        if let Some(idx) = self.index_of(node) {
            self.slots[idx].disk.set_failing_syncs(on);
        }
    }

    /// Flips a bit of a synced write-ahead-log byte of the crashed `node` where recovery
    /// must notice it (see [`NodeDisk::corrupt_synced_log`]); the next
    /// [`Sim::restart`] then fails with the damage named, unless the spec's recovery
    /// mode is `truncate-damaged`. `Ok(None)` when the log holds no such byte yet.
    pub fn corrupt_synced_log(&mut self, node: NodeId) -> Result<Option<LogCorruption>, SimError> {
        let idx = self.index_of(node).ok_or(SimError::UnknownNode(node))?;
        let slot = &mut self.slots[idx];
        if slot.proto.is_some() {
            return Err(SimError::NodeNotCrashed(node));
        }
        Ok(slot
            .disk
            .corrupt_synced_log(&mut slot.disk_rng, &self.config.disk.storage))
    }

    /// The local clock of `node` now (its drifted view), if the node exists.
    pub fn local_time(&self, node: NodeId) -> Option<Time> {
        self.index_of(node)
            .map(|i| Time(self.slots[i].clock.local_at(self.now.0)))
    }

    /// The protocol value of `node`, for invariant checks; `None` if crashed or unknown.
    pub fn node(&self, id: NodeId) -> Option<&P> {
        self.index_of(id).and_then(|i| self.slots[i].proto.as_ref())
    }

    /// Whether `id` is a running (possibly paused) node.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.node(id).is_some()
    }

    /// What happened so far. Assembled on the first call after a change (O(nodes)), so
    /// calling [`Sim::run_until`] often costs nothing extra.
    pub fn stats(&self) -> &SimStats {
        self.stats_view.get_or_init(|| self.assemble_stats())
    }

    /// Messages currently kept back by hold rules.
    pub fn held_messages(&self) -> usize {
        self.held.len()
    }

    // ----- internals -------------------------------------------------------------------

    fn index_of(&self, id: NodeId) -> Option<usize> {
        self.peers.binary_search(&id).ok()
    }

    /// Forgets the assembled statistics; every `&mut self` entry point calls it, so
    /// [`Sim::stats`] always reflects the current state.
    fn invalidate_stats(&mut self) {
        self.stats_view.take();
    }

    /// The cluster counters with the per-node counters (and their disks') filled in.
    fn assemble_stats(&self) -> SimStats {
        let mut view = self.stats.clone();
        for slot in &self.slots {
            let fs = slot.disk.fs_stats();
            let mut node = slot.stats.clone();
            node.disk_bytes_written = fs.bytes_written;
            node.disk_file_syncs = fs.file_syncs;
            node.disk_unsynced_bytes_lost = fs.unsynced_bytes_lost;
            node.disk_torn_writes = fs.torn_writes;
            node.disk_syncs_failed = fs.syncs_failed;
            view.per_node.insert(slot.id, node);
        }
        view
    }

    fn recompute_rule_summary(&mut self) {
        let net = &self.config.network;
        let mut keep = 1.0 - clamp_probability(net.loss_probability);
        let mut no_dup = 1.0 - clamp_probability(net.duplicate_probability);
        let mut s = RuleSummary::default();
        for rule in self.rules.values() {
            match rule {
                FaultRule::Partition { .. }
                | FaultRule::OneWay { .. }
                | FaultRule::Isolate { .. }
                | FaultRule::Hold { .. } => s.link_rules = true,
                FaultRule::Loss { probability } => keep *= 1.0 - clamp_probability(*probability),
                FaultRule::Duplicate { probability } => {
                    no_dup *= 1.0 - clamp_probability(*probability)
                }
                FaultRule::Delay { .. } => s.delay_rules = true,
                FaultRule::Layered { .. } => s.layer_rules = true,
            }
        }
        s.loss_p = 1.0 - keep;
        s.duplicate_p = 1.0 - no_dup;
        self.summary = s;
    }

    fn process_until(&mut self, deadline: Time) -> Result<(), SimError> {
        while let Some(t) = self.queue.peek_time() {
            if t > deadline.0 {
                break;
            }
            if self.stats.events_processed >= self.config.max_events {
                return Err(SimError::EventBudgetExhausted {
                    max_events: self.config.max_events,
                    at: Time(t),
                });
            }
            let Some((t, ev)) = self.queue.pop() else {
                break;
            };
            assert!(
                t >= self.now.0,
                "simulator invariant: virtual time went backwards ({t} < {})",
                self.now.0
            );
            self.now = Time(t);
            self.stats.events_processed += 1;
            self.dispatch(ev);
        }
        Ok(())
    }

    fn dispatch(&mut self, ev: Event<P::Msg>) {
        match ev {
            Event::Deliver {
                from,
                to,
                incarnation,
                msg,
            } => {
                let slot = &mut self.slots[to];
                if slot.proto.is_none() || slot.incarnation != incarnation {
                    self.stats.messages_in_flight -= 1;
                    self.stats.messages_dropped_by_crash += 1;
                } else if slot.paused {
                    slot.deferred.push_back(Event::Deliver {
                        from,
                        to,
                        incarnation,
                        msg,
                    });
                } else {
                    self.stats.messages_in_flight -= 1;
                    self.stats.messages_delivered += 1;
                    slot.stats.messages_delivered += 1;
                    self.step(to, Input::Msg(from, msg));
                }
            }
            Event::ClientArrive { node, req } => {
                let slot = &mut self.slots[node];
                if slot.proto.is_none() {
                    slot.stats.client_requests_lost += 1;
                    self.stats.client_requests_lost += 1;
                } else if slot.paused {
                    slot.deferred.push_back(Event::ClientArrive { node, req });
                } else {
                    slot.stats.client_requests_delivered += 1;
                    self.step(node, Input::Client(req));
                }
            }
            Event::Timer {
                node,
                timer,
                generation,
            } => self.on_timer(node, timer, generation),
            Event::SyncDone {
                node,
                incarnation,
                sync_seq,
            } => self.on_sync_done(node, incarnation, sync_seq),
            Event::Admin { node, cmd } => {
                let slot = &mut self.slots[node];
                if slot.proto.is_none() {
                    return; // crashed before it could act: the command is lost
                }
                if slot.paused {
                    slot.deferred.push_back(Event::Admin { node, cmd });
                    return;
                }
                self.step(node, Input::Admin(cmd));
            }
            Event::ReplyArrive { node, response } => {
                self.stats.client_replies_delivered += 1;
                self.pending.push(SimOutput::Reply {
                    at: self.now,
                    node,
                    response,
                });
            }
        }
    }

    /// A timer fires, unless it was re-armed, cancelled or cleared by a crash since; a
    /// paused node's waits for its resume.
    fn on_timer(&mut self, node: usize, timer: TimerId, generation: u64) {
        let slot = &mut self.slots[node];
        let armed = slot
            .timers
            .get(&timer)
            .is_some_and(|a| a.generation == generation);
        if !armed || slot.proto.is_none() {
            return; // re-armed, cancelled, or cleared by a crash
        }
        if slot.paused {
            slot.deferred.push_back(Event::Timer {
                node,
                timer,
                generation,
            });
            return;
        }
        slot.timers.remove(&timer);
        slot.stats.timers_fired += 1;
        self.stats.timers_fired += 1;
        self.step(node, Input::Timer(timer));
    }

    /// A node's fsync returns: its records so far are durable, and the sends and replies
    /// gated on that sync leave (unless a crash came first; a paused node's waits).
    fn on_sync_done(&mut self, node: usize, incarnation: u64, sync_seq: u64) {
        let slot = &mut self.slots[node];
        if slot.proto.is_none() || slot.incarnation != incarnation {
            return; // the crash already decided what the disk kept
        }
        if slot.paused {
            slot.deferred.push_back(Event::SyncDone {
                node,
                incarnation,
                sync_seq,
            });
            return;
        }
        // The fsync covers every record written so far; records appended after the
        // Sync effect may become durable early, which a real disk may do too.
        if let Err(e) = slot.disk.sync() {
            self.fail_stop(node, &e);
            return;
        }
        slot.stats.syncs += 1;
        self.stats.syncs += 1;
        while self.slots[node]
            .gated
            .front()
            .is_some_and(|(seq, _)| *seq <= sync_seq)
        {
            let Some((_, gated)) = self.slots[node].gated.pop_front() else {
                break;
            };
            match gated {
                Gated::Send { to, msg } => self.send_from(node, to, msg),
                Gated::Reply(r) => self.reply_from(node, r),
            }
        }
    }

    /// Boots (or reboots) the node at `idx` from its disk.
    fn boot(&mut self, idx: usize) -> Result<(), SimError> {
        let node = self.slots[idx].id;
        let recovery: Recovery = self.slots[idx]
            .disk
            .open(&self.config.disk.storage)
            .map_err(|source| SimError::Storage { node, source })?;
        let mut out = std::mem::take(&mut self.out);
        let now = self.now.0;
        let slot = &mut self.slots[idx];
        let local = Time(slot.clock.local_at(now));
        let mut cx = Cx::new(slot.id, local, &mut slot.rng).with_log_shards(self.config.log_shards);
        slot.proto = Some(P::boot(
            &mut cx,
            &self.node_config,
            &self.peers,
            recovery,
            &mut out,
        ));
        self.apply_effects(idx, &mut out);
        self.out = out;
        Ok(())
    }

    /// Runs one protocol step on a running, unpaused node and executes its effects.
    fn step(&mut self, idx: usize, input: Input<P::Msg>) {
        let mut out = std::mem::take(&mut self.out);
        let now = self.now.0;
        let slot = &mut self.slots[idx];
        let local = Time(slot.clock.local_at(now));
        let Slot { id, proto, rng, .. } = slot;
        let Some(p) = proto.as_mut() else {
            self.out = out;
            return;
        };
        let mut cx = Cx::new(*id, local, rng).with_log_shards(self.config.log_shards);
        match input {
            Input::Msg(from, msg) => p.on_msg(&mut cx, from, msg, &mut out),
            Input::Timer(t) => p.on_timer(&mut cx, t, &mut out),
            Input::Client(req) => p.on_client(&mut cx, req, &mut out),
            Input::Admin(cmd) => p.on_admin(&mut cx, cmd, &mut out),
        }
        self.apply_effects(idx, &mut out);
        self.out = out;
    }

    /// Executes the effects of one step in order. Sends and replies after a `Sync` wait
    /// for that sync (the last one before them).
    fn apply_effects(&mut self, idx: usize, out: &mut Out<P::Msg>) {
        let mut gate: u64 = 0;
        let mut order = StepOrder::new(self.slots[idx].id, P::SENDS_UNSYNCED_STATE);
        for effect in out.drain() {
            match order.classify(&effect) {
                Disposition::IssueSync => {
                    gate = self.issue_sync(idx);
                    continue;
                }
                Disposition::HoldForSync => {
                    let held = match effect {
                        Effect::Send { to, msg } => Gated::Send { to, msg },
                        Effect::Reply(r) => Gated::Reply(r),
                        _ => unreachable!("only sends and replies are held"),
                    };
                    self.slots[idx].gated.push_back((gate, held));
                    continue;
                }
                Disposition::Run => {}
            }
            match effect {
                Effect::Send { to, msg } => self.send_from(idx, to, msg),
                Effect::Reply(r) => self.reply_from(idx, r),
                Effect::SetTimer { timer, after } => self.arm_timer(idx, timer, after),
                Effect::CancelTimer { timer } => {
                    self.slots[idx].timers.remove(&timer);
                }
                Effect::Persist { group, record } => {
                    let slot = &mut self.slots[idx];
                    slot.stats.records_persisted += 1;
                    if let Err(e) = slot.disk.persist(group, &record) {
                        self.fail_stop(idx, &e);
                        break;
                    }
                }
                Effect::Sync => {}
                Effect::SaveSnapshot { group, data } => {
                    let slot = &mut self.slots[idx];
                    slot.stats.snapshots_saved += 1;
                    if let Err(e) = slot.disk.save_snapshot(group, &data) {
                        self.fail_stop(idx, &e);
                        break;
                    }
                }
                // One log per simulated node: scopes change nothing here.
                Effect::Scope(_) => {}
                Effect::Event(event) => {
                    let slot = &mut self.slots[idx];
                    slot.stats.events_reported += 1;
                    self.pending.push(SimOutput::Event {
                        at: self.now,
                        node: slot.id,
                        event,
                    });
                }
            }
        }
    }

    fn issue_sync(&mut self, idx: usize) -> u64 {
        let now = self.now.0;
        let latency_ns = self
            .config
            .disk
            .fsync_latency
            .sample_ns(&mut self.slots[idx].disk_rng);
        let slot = &mut self.slots[idx];
        slot.syncs_issued += 1;
        // A node's fsyncs complete in the order they were issued.
        let at = now.saturating_add(latency_ns).max(slot.last_sync_done_ns);
        slot.last_sync_done_ns = at;
        self.queue.push(
            at,
            Event::SyncDone {
                node: idx,
                incarnation: slot.incarnation,
                sync_seq: slot.syncs_issued,
            },
        );
        slot.syncs_issued
    }

    fn arm_timer(&mut self, idx: usize, timer: TimerId, after: Duration) {
        let now = self.now.0;
        let slot = &mut self.slots[idx];
        let after_ns = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
        let local_deadline_ns = slot.clock.local_at(now).saturating_add(after_ns);
        slot.next_timer_generation += 1;
        let generation = slot.next_timer_generation;
        slot.timers.insert(
            timer,
            ArmedTimer {
                generation,
                local_deadline_ns,
            },
        );
        let at = slot.clock.global_at(local_deadline_ns).max(now);
        self.queue.push(
            at,
            Event::Timer {
                node: idx,
                timer,
                generation,
            },
        );
    }

    fn reply_from(&mut self, idx: usize, response: ClientResponse) {
        let slot = &mut self.slots[idx];
        slot.stats.replies_sent += 1;
        let node = slot.id;
        let delay = self
            .config
            .network
            .client_latency
            .sample_ns(&mut self.client_rng);
        self.queue.push(
            self.now.0.saturating_add(delay),
            Event::ReplyArrive { node, response },
        );
    }

    fn send_from(&mut self, idx: usize, to: NodeId, msg: P::Msg) {
        self.stats.messages_sent += 1;
        self.slots[idx].stats.messages_sent += 1;
        if self.config.network.measure_bytes {
            self.stats.bytes_sent += msg.wire_size() as u64;
        }
        let Some(to_idx) = self.index_of(to) else {
            self.stats.messages_dropped_unknown_node += 1;
            return;
        };
        let from = self.slots[idx].id;
        let incarnation = self.slots[to_idx].incarnation;
        self.transmit(from, to_idx, incarnation, msg);
    }

    /// Puts a message on the wire through the active rules and the network model:
    /// first the layered rules, each on its layer's part of the message, then the
    /// others on what is left.
    fn transmit(&mut self, from: NodeId, to: usize, incarnation: u64, msg: P::Msg) {
        let to_id = self.slots[to].id;
        let msg = if self.summary.layer_rules && from != to_id {
            match self.apply_layer_rules(from, to, incarnation, msg) {
                Some(rest) => rest,
                None => return,
            }
        } else {
            msg
        };
        self.transmit_whole(from, to, incarnation, msg, 0);
    }

    /// Splits off each layered rule's part of `msg`: dropped if the rule cuts the link
    /// or loses it, sent on its own (later, for a delay) otherwise. Returns what no
    /// layered rule claimed.
    fn apply_layer_rules(
        &mut self,
        from: NodeId,
        to: usize,
        incarnation: u64,
        msg: P::Msg,
    ) -> Option<P::Msg> {
        let to_id = self.slots[to].id;
        let layered: Vec<(kvlab_types::Layer, FaultRule)> = self
            .rules
            .values()
            .filter_map(|r| match r {
                FaultRule::Layered { layer, apply } => Some((*layer, (**apply).clone())),
                _ => None,
            })
            .collect();
        let mut rest = Some(msg);
        for (layer, rule) in layered {
            let Some(m) = rest.take() else { break };
            let (inside, outside) = P::split_layer(m, layer);
            rest = outside;
            let Some(part) = inside else { continue };
            let extra = match &rule {
                FaultRule::Loss { probability } => {
                    if chance(&mut self.net_rng, clamp_probability(*probability)) {
                        self.stats.messages_dropped_by_rule += 1;
                        continue;
                    }
                    0
                }
                FaultRule::Delay { extra } => extra.sample_ns(&mut self.net_rng),
                r if r.cuts(from, to_id) => {
                    self.stats.messages_dropped_by_rule += 1;
                    continue;
                }
                _ => 0,
            };
            self.transmit_whole(from, to, incarnation, part, extra);
        }
        rest
    }

    /// Puts a whole message through the link rules and the network model, `extra_ns`
    /// later than the network alone would.
    fn transmit_whole(
        &mut self,
        from: NodeId,
        to: usize,
        incarnation: u64,
        msg: P::Msg,
        extra_ns: u64,
    ) {
        let to_id = self.slots[to].id;
        if self.summary.link_rules && from != to_id {
            let verdict = self.link_verdict(from, to_id);
            if verdict.cut {
                self.stats.messages_dropped_by_rule += 1;
                return;
            }
            if verdict.held {
                if self.in_flight_full() {
                    self.stats.messages_dropped_by_bound += 1;
                    return;
                }
                self.stats.messages_held += 1;
                self.stats.messages_in_flight += 1;
                self.held.push(HeldMessage {
                    from,
                    to,
                    incarnation,
                    msg,
                });
                return;
            }
        }
        if chance(&mut self.net_rng, self.summary.loss_p) {
            self.stats.messages_dropped_by_loss += 1;
            return;
        }
        if chance(&mut self.net_rng, self.config.network.corrupt_probability) {
            self.corrupt_on_the_wire(from, to_id, &msg);
            return;
        }
        if chance(&mut self.net_rng, self.config.network.forge_probability) {
            self.forge_towards(to_id, &msg);
        }
        if chance(&mut self.net_rng, self.summary.duplicate_p) {
            self.stats.messages_duplicated += 1;
            self.schedule_delivery(from, to, incarnation, msg.clone(), extra_ns);
        }
        self.schedule_delivery(from, to, incarnation, msg, extra_ns);
    }

    /// Encodes `msg` as the real peer frame, flips one random bit, and decodes it as the
    /// receiver would: it must be rejected (a single flipped bit is always caught by the
    /// frame's CRC-32). The message is lost.
    fn corrupt_on_the_wire(&mut self, from: NodeId, to: NodeId, msg: &P::Msg) {
        self.stats.messages_dropped_corrupt += 1;
        let env = Envelope { from, to, msg };
        let Ok(mut frame) = kvlab_codec::encode(&env, MAX_FRAME_BYTES_LIMIT, &self.peer_key) else {
            return; // too large for any frame: lost all the same
        };
        let bit = self.net_rng.random_range(0..frame.len() * 8);
        frame[bit / 8] ^= 1 << (bit % 8);
        let decoded = kvlab_codec::decode::<P::Msg>(&frame, MAX_FRAME_BYTES_LIMIT, &self.peer_key);
        assert!(
            decoded.is_err(),
            "simulator invariant: the frame codec accepted a frame with bit {bit} flipped (seed {})",
            self.seed
        );
    }

    /// An attacker without the cluster secret sends `to` a copy of `msg` claiming a
    /// random member as sender, framed with a random key: the receiver's decoder must
    /// refuse it as unauthenticated.
    fn forge_towards(&mut self, to: NodeId, msg: &P::Msg) {
        self.stats.messages_dropped_forged += 1;
        let claimed = self.peers[self.net_rng.random_range(0..self.peers.len())];
        let mut wrong = [0u8; 32];
        for b in &mut wrong {
            *b = self.net_rng.random();
        }
        let env = Envelope {
            from: claimed,
            to,
            msg,
        };
        let Ok(frame) = kvlab_codec::encode(&env, MAX_FRAME_BYTES_LIMIT, &PeerKey::from_raw(wrong))
        else {
            return;
        };
        let decoded = kvlab_codec::decode::<P::Msg>(&frame, MAX_FRAME_BYTES_LIMIT, &self.peer_key);
        assert!(
            matches!(decoded, Err(CodecError::Unauthenticated { .. })),
            "simulator invariant: the frame codec did not refuse a forged frame as unauthenticated: {:?} (seed {})",
            decoded.as_ref().err(),
            self.seed
        );
    }

    fn in_flight_full(&self) -> bool {
        self.stats.messages_in_flight >= self.config.network.max_in_flight_messages as u64
    }

    fn link_verdict(&self, from: NodeId, to: NodeId) -> Verdict {
        let mut v = Verdict::default();
        for rule in self.rules.values() {
            if rule.cuts(from, to) {
                v.cut = true;
                v.held = false;
                return v;
            }
            v.held |= rule.holds(from, to);
        }
        v
    }

    fn schedule_delivery(
        &mut self,
        from: NodeId,
        to: usize,
        incarnation: u64,
        msg: P::Msg,
        extra_ns: u64,
    ) {
        if self.in_flight_full() {
            self.stats.messages_dropped_by_bound += 1;
            return;
        }
        let net = &self.config.network;
        let mut delay = net
            .latency
            .sample_ns(&mut self.net_rng)
            .saturating_add(extra_ns);
        if chance(&mut self.net_rng, net.reorder_probability) {
            let window = LatencyDist::Uniform {
                min_ms: 0.0,
                max_ms: net.reorder_window_ms,
            };
            delay = delay.saturating_add(window.sample_ns(&mut self.net_rng));
        }
        if self.summary.delay_rules {
            for rule in self.rules.values() {
                if let FaultRule::Delay { extra } = rule {
                    delay = delay.saturating_add(extra.sample_ns(&mut self.net_rng));
                }
            }
        }
        self.stats.messages_in_flight += 1;
        self.queue.push(
            self.now.0.saturating_add(delay),
            Event::Deliver {
                from,
                to,
                incarnation,
                msg,
            },
        );
    }

    /// Sends, in their original order, the held messages no remaining hold rule matches.
    fn release_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        for h in held {
            let to_id = self.slots[h.to].id;
            let still_held = self.rules.values().any(|r| r.holds(h.from, to_id));
            if still_held {
                self.held.push(h);
            } else {
                self.stats.messages_in_flight -= 1;
                self.transmit(h.from, h.to, h.incarnation, h.msg);
            }
        }
    }

    fn crash_idx(&mut self, idx: usize) {
        let slot = &mut self.slots[idx];
        if slot.proto.is_none() {
            return;
        }
        slot.proto = None;
        slot.paused = false;
        slot.incarnation += 1;
        slot.timers.clear();
        slot.stats.crashes += 1;
        self.stats.crashes += 1;
        let lost = slot.gated.len() as u64;
        slot.gated.clear();
        slot.stats.effects_lost_unsynced += lost;
        self.stats.effects_lost_unsynced += lost;
        for ev in slot.deferred.drain(..) {
            match ev {
                Event::Deliver { .. } => {
                    self.stats.messages_in_flight -= 1;
                    self.stats.messages_dropped_by_crash += 1;
                }
                Event::ClientArrive { .. } => {
                    slot.stats.client_requests_lost += 1;
                    self.stats.client_requests_lost += 1;
                }
                Event::Timer { .. }
                | Event::SyncDone { .. }
                | Event::Admin { .. }
                | Event::ReplyArrive { .. } => {}
            }
        }
        slot.last_sync_done_ns = 0;
        slot.disk
            .crash(&mut slot.disk_rng, &self.config.disk.crash_options());
    }

    /// A storage operation failed: the node stops as a real server stops when it cannot
    /// write its log (the rest of the step is discarded), and the failure is reported as
    /// a `storage_error` event of that node.
    fn fail_stop(&mut self, idx: usize, error: &kvlab_storage::StorageError) {
        let slot = &mut self.slots[idx];
        slot.stats.storage_errors += 1;
        self.stats.storage_errors += 1;
        self.pending.push(SimOutput::Event {
            at: self.now,
            node: slot.id,
            event: NodeEvent::StorageError {
                reason: error.to_string(),
            },
        });
        self.crash_idx(idx);
    }
}

//! A small deterministic test cluster for SWIM: virtual time, a `(time, seq)` event
//! heap, one seeded RNG for the network, loss, directed link cuts, crash and restart
//! with a durable record store. The crate's unit tests use it because they look inside
//! [`Swim`] between steps; its integration tests (`tests/sim_*.rs`) and its benchmark run
//! on kvlab-sim instead.
//!
//! Simplification: `Persist` is durable at once (no unsynced writes are lost), and a send
//! after a `Sync` leaves at once. The harness still *checks* the ordering contract with
//! [`StepOrder`], the classifier every executor shares: a `Send` never follows a
//! `Persist` of the same step without a `Sync` in between.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

use kvlab_types::{
    Cx, Effect, NodeEvent, NodeId, Out, Protocol, Recovery, Rng, StepOrder, Time, TimerId,
    derive_seed, seeded_rng,
};
use rand::RngExt;

use crate::{MemberState, Swim, SwimConfig, SwimMsg, SwimNode};

#[derive(Debug)]
enum Ev {
    Deliver {
        from: NodeId,
        to: NodeId,
        bytes: Vec<u8>,
    },
    Timer {
        node: NodeId,
        timer: TimerId,
        generation: u64,
    },
}

#[derive(Debug)]
struct Slot {
    node: Option<SwimNode>,
    rng: Rng,
    timers: BTreeMap<TimerId, u64>,
    durable: Recovery,
    /// Paused nodes process nothing; their inputs wait until they resume.
    paused_until: Time,
}

/// One event the cluster's nodes reported.
#[derive(Debug, Clone)]
pub(crate) struct Logged {
    pub(crate) at: Time,
    pub(crate) node: NodeId,
    pub(crate) event: NodeEvent,
}

/// The test cluster.
#[derive(Debug)]
pub(crate) struct Cluster {
    now: Time,
    config: SwimConfig,
    ids: Vec<NodeId>,
    slots: Vec<Slot>,
    heap: BinaryHeap<Reverse<(Time, u64)>>,
    events: BTreeMap<u64, Ev>,
    seq: u64,
    net: Rng,
    /// Probability that a message is lost.
    pub(crate) loss: f64,
    /// One-way latency range, milliseconds.
    pub(crate) latency_ms: (u64, u64),
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Members whose incoming messages lose their piggybacked updates: they miss all
    /// gossip while probes, acks and push-pull still reach them.
    deaf_to_gossip: BTreeSet<NodeId>,
    inbound_delay: BTreeMap<NodeId, Duration>,
    pub(crate) log: Vec<Logged>,
    pub(crate) messages_delivered: u64,
    pub(crate) messages_sent: u64,
    /// Messages sent to ids outside the cluster (a forged member's), dropped.
    pub(crate) sent_to_unknown: u64,
    /// When set, keeps up to [`SAMPLED_MESSAGES`] recently sent messages in
    /// `sent_sample`, for hostile tests to replay.
    pub(crate) sample_sent: bool,
    pub(crate) sent_sample: Vec<SwimMsg>,
    /// Set by tests that inject forged messages. Otherwise every `run_until` checks that
    /// no member refused an update: honest members never send an implausible one.
    pub(crate) hostile: bool,
}

/// How many sent messages `sent_sample` keeps.
const SAMPLED_MESSAGES: usize = 128;

impl Cluster {
    /// Boots `n` nodes (ids 0..n) at time zero.
    pub(crate) fn new(n: u32, seed: u64, config: SwimConfig) -> Cluster {
        let ids: Vec<NodeId> = (0..n).map(NodeId).collect();
        let mut c = Cluster {
            now: Time::ZERO,
            config,
            ids: ids.clone(),
            slots: Vec::new(),
            heap: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            net: seeded_rng(derive_seed(seed, "net", 0)),
            loss: 0.0,
            latency_ms: (1, 5),
            cut: BTreeSet::new(),
            deaf_to_gossip: BTreeSet::new(),
            inbound_delay: BTreeMap::new(),
            log: Vec::new(),
            messages_delivered: 0,
            messages_sent: 0,
            sent_to_unknown: 0,
            sample_sent: false,
            sent_sample: Vec::new(),
            hostile: false,
        };
        for id in ids {
            c.slots.push(Slot {
                node: None,
                rng: seeded_rng(derive_seed(seed, "node", u64::from(id.0))),
                timers: BTreeMap::new(),
                durable: Recovery::default(),
                paused_until: Time::ZERO,
            });
            c.boot(id);
        }
        c
    }

    pub(crate) fn now(&self) -> Time {
        self.now
    }

    fn boot(&mut self, id: NodeId) {
        let i = id.0 as usize;
        let rec = self.slots[i].durable.clone();
        let mut out = Out::new();
        let ids = self.ids.clone();
        let config = self.config.clone();
        let node = {
            let slot = &mut self.slots[i];
            let mut cx = Cx::new(id, self.now, &mut slot.rng);
            SwimNode::boot(&mut cx, &config, &ids, rec, &mut out)
        };
        self.slots[i].node = Some(node);
        self.apply_effects(id, out);
    }

    /// The SWIM core of a running node.
    pub(crate) fn swim(&self, id: NodeId) -> Option<&Swim> {
        self.slots[id.0 as usize].node.as_ref()?.swim()
    }

    /// Whether the node is running (not crashed).
    pub(crate) fn is_up(&self, id: NodeId) -> bool {
        self.slots[id.0 as usize].node.is_some()
    }

    /// What `observer` believes about `member` (`None`: unknown or observer down).
    pub(crate) fn view(&self, observer: NodeId, member: NodeId) -> Option<MemberState> {
        self.swim(observer)?.member(member).map(|m| m.state)
    }

    pub(crate) fn ids(&self) -> Vec<NodeId> {
        self.ids.clone()
    }

    pub(crate) fn up_ids(&self) -> Vec<NodeId> {
        self.ids
            .iter()
            .copied()
            .filter(|i| self.is_up(*i))
            .collect()
    }

    /// Crashes a node: it loses its state and timers (its durable records survive).
    pub(crate) fn crash(&mut self, id: NodeId) {
        let slot = &mut self.slots[id.0 as usize];
        slot.node = None;
        slot.timers.clear();
    }

    /// Restarts a crashed node from its durable records.
    pub(crate) fn restart(&mut self, id: NodeId) {
        assert!(!self.is_up(id), "restart of a running node {id}");
        self.boot(id);
    }

    /// Restarts a crashed node with its storage wiped.
    pub(crate) fn restart_without_storage(&mut self, id: NodeId) {
        self.slots[id.0 as usize].durable = Recovery::default();
        self.restart(id);
    }

    /// Freezes a node (a GC pause, a stalled VM): it handles nothing until `until`.
    pub(crate) fn pause_until(&mut self, id: NodeId, until: Time) {
        self.slots[id.0 as usize].paused_until = until;
    }

    /// Delays every message to `id` by `d` on top of the latency: a member whose receive
    /// path is overloaded (Lifeguard's slow member) — its timers fire on time, but the
    /// acks it waits for are processed late.
    pub(crate) fn set_inbound_delay(&mut self, id: NodeId, d: Duration) {
        self.inbound_delay.insert(id, d);
    }

    /// Cuts every link between the two groups, both ways.
    pub(crate) fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for x in a {
            for y in b {
                self.cut.insert((*x, *y));
                self.cut.insert((*y, *x));
            }
        }
    }

    /// Restores every link.
    pub(crate) fn heal(&mut self) {
        self.cut.clear();
    }

    /// From now on (or no longer, `deaf = false`) every message to `id` arrives without
    /// its piggybacked updates: `id` misses all gossip, and only push-pull (or its own
    /// probing) can tell it what changed.
    pub(crate) fn set_deaf_to_gossip(&mut self, id: NodeId, deaf: bool) {
        if deaf {
            self.deaf_to_gossip.insert(id);
        } else {
            self.deaf_to_gossip.remove(&id);
        }
    }

    /// Runs a leave on a node.
    pub(crate) fn leave(&mut self, id: NodeId) {
        let i = id.0 as usize;
        let mut out = Out::new();
        {
            let slot = &mut self.slots[i];
            let Some(node) = slot.node.as_mut() else {
                return;
            };
            let mut cx = Cx::new(id, self.now, &mut slot.rng);
            node.leave(&mut cx, &mut out);
        }
        self.apply_effects(id, out);
    }

    /// Delivers `msg` to `to` now, as if `from` had sent it (a forged or replayed
    /// packet): no loss, latency or cut applies.
    pub(crate) fn inject(&mut self, from: NodeId, to: NodeId, msg: &SwimMsg) {
        self.hostile = true;
        let bytes = postcard::to_allocvec(msg).expect("encode");
        let at = self.now;
        self.schedule(at, Ev::Deliver { from, to, bytes });
    }

    fn schedule(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn apply_effects(&mut self, id: NodeId, mut out: Out<SwimMsg>) {
        let mut order = StepOrder::new(id, SwimNode::SENDS_UNSYNCED_STATE);
        for e in out.drain() {
            // Panics on a send after an unsynced persist; nothing is held here.
            order.classify(&e);
            match e {
                Effect::Send { to, msg } => {
                    self.messages_sent += 1;
                    if self.sample_sent {
                        let k = (self.messages_sent % SAMPLED_MESSAGES as u64) as usize;
                        if k < self.sent_sample.len() {
                            self.sent_sample[k] = msg.clone();
                        } else {
                            self.sent_sample.push(msg.clone());
                        }
                    }
                    if to.0 as usize >= self.slots.len() {
                        self.sent_to_unknown += 1;
                        continue;
                    }
                    let msg = if self.deaf_to_gossip.contains(&to) {
                        SwimMsg {
                            updates: Vec::new(),
                            ..msg
                        }
                    } else {
                        msg
                    };
                    let bytes = postcard::to_allocvec(&msg).expect("encode");
                    if self.cut.contains(&(id, to)) || self.net.random_bool(self.loss) {
                        continue;
                    }
                    let (lo, hi) = self.latency_ms;
                    let ms = self.net.random_range(lo..=hi);
                    let slow = self.inbound_delay.get(&to).copied().unwrap_or_default();
                    let at = self.now + Duration::from_millis(ms) + slow;
                    self.schedule(
                        at,
                        Ev::Deliver {
                            from: id,
                            to,
                            bytes,
                        },
                    );
                }
                Effect::SetTimer { timer, after } => {
                    self.seq += 1;
                    let generation = self.seq;
                    self.slots[id.0 as usize].timers.insert(timer, generation);
                    let at = self.now + after;
                    self.schedule(
                        at,
                        Ev::Timer {
                            node: id,
                            timer,
                            generation,
                        },
                    );
                }
                Effect::CancelTimer { timer } => {
                    self.slots[id.0 as usize].timers.remove(&timer);
                }
                Effect::Persist { group, record } => {
                    let d = &mut self.slots[id.0 as usize].durable;
                    d.groups.entry(group).or_default().records.push(record);
                }
                Effect::Sync => {}
                Effect::SaveSnapshot { group, data } => {
                    let d = &mut self.slots[id.0 as usize].durable;
                    let g = d.groups.entry(group).or_default();
                    g.snapshot = Some(data);
                    g.records.clear();
                }
                Effect::Reply(_) | Effect::Scope(_) => {}
                Effect::Event(event) => self.log.push(Logged {
                    at: self.now,
                    node: id,
                    event,
                }),
            }
        }
    }

    /// Runs every event up to and including `until`.
    pub(crate) fn run_until(&mut self, until: Time) {
        while let Some(Reverse((at, seq))) = self.heap.peek().copied() {
            if at > until {
                break;
            }
            self.heap.pop();
            self.now = at;
            let Some(ev) = self.events.remove(&seq) else {
                continue;
            };
            self.step(ev);
        }
        self.now = until;
        if !self.hostile {
            for id in self.up_ids() {
                let refused = self.swim(id).map_or(0, |s| s.counters().updates_refused);
                assert_eq!(refused, 0, "{id} refused an honest update");
            }
        }
    }

    /// Runs `d` more.
    pub(crate) fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Runs in `step` increments until `pred` holds (returns the time) or `deadline`.
    pub(crate) fn run_until_true(
        &mut self,
        deadline: Time,
        step: Duration,
        mut pred: impl FnMut(&Cluster) -> bool,
    ) -> Option<Time> {
        loop {
            if pred(self) {
                return Some(self.now);
            }
            if self.now >= deadline {
                return None;
            }
            let next = (self.now + step).min(deadline);
            self.run_until(next);
        }
    }

    fn step(&mut self, ev: Ev) {
        let node_id = match &ev {
            Ev::Deliver { to, .. } => *to,
            Ev::Timer { node, .. } => *node,
        };
        let i = node_id.0 as usize;
        if self.slots[i].node.is_none() {
            return;
        }
        if self.slots[i].paused_until > self.now {
            // Hold the input until the node resumes, in order.
            let at = self.slots[i].paused_until;
            self.schedule(at, ev);
            return;
        }
        let mut out = Out::new();
        {
            let slot = &mut self.slots[i];
            let Some(node) = slot.node.as_mut() else {
                return;
            };
            let mut cx = Cx::new(node_id, self.now, &mut slot.rng);
            match ev {
                Ev::Deliver { from, to: _, bytes } => {
                    let msg: SwimMsg = postcard::from_bytes(&bytes).expect("decode");
                    self.messages_delivered += 1;
                    node.on_msg(&mut cx, from, msg, &mut out);
                }
                Ev::Timer {
                    node: _,
                    timer,
                    generation,
                } => {
                    if slot.timers.get(&timer) != Some(&generation) {
                        return;
                    }
                    slot.timers.remove(&timer);
                    node.on_timer(&mut cx, timer, &mut out);
                }
            }
        }
        self.apply_effects(node_id, out);
    }

    /// Whether every running node other than `member` believes `member` is in `state`.
    pub(crate) fn all_see(&self, member: NodeId, state: MemberState) -> bool {
        self.up_ids()
            .into_iter()
            .filter(|o| *o != member)
            .all(|o| self.view(o, member) == Some(state))
    }

    /// Whether every running node of `observers` (but `member`) believes `member` is in
    /// `state`.
    pub(crate) fn all_see_in(
        &self,
        observers: &[NodeId],
        member: NodeId,
        state: MemberState,
    ) -> bool {
        observers
            .iter()
            .filter(|o| **o != member && self.is_up(**o))
            .all(|o| self.view(*o, member) == Some(state))
    }

    /// Whether any running node believes `member` is in `state`.
    pub(crate) fn any_sees(&self, member: NodeId, state: MemberState) -> bool {
        self.up_ids()
            .into_iter()
            .filter(|o| *o != member)
            .any(|o| self.view(o, member) == Some(state))
    }

    /// Whether every running node knows every running node as alive.
    pub(crate) fn converged(&self) -> bool {
        let up = self.up_ids();
        up.iter().all(|o| {
            up.iter()
                .all(|m| self.view(*o, *m) == Some(MemberState::Alive))
        })
    }

    /// Logged events of `kind` about `member`.
    pub(crate) fn events_about(&self, kind: &str, member: NodeId) -> Vec<&Logged> {
        self.log
            .iter()
            .filter(|l| {
                l.event.kind() == kind && l.event.member().is_some_and(|(m, _)| m == member)
            })
            .collect()
    }
}

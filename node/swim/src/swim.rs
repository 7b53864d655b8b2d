//! The SWIM core: a membership table driven by probes, suspicion, piggybacked gossip and
//! push-pull, emitting effects into an [`Out<SwimMsg>`]. It owns no I/O; a driver (the
//! [`crate::SwimNode`] protocol, or a composed node) feeds it messages and timers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use kvlab_types::{Cx, GroupId, Message, NodeEvent, NodeId, Out, Time, TimerId, TimerSpace};
use rand::RngExt;
use rand::seq::SliceRandom;

use crate::broadcast::BroadcastQueue;
use crate::config::{
    MAX_ADDRESS_BYTES, MAX_INCARNATION, MAX_INCARNATION_JUMP, MAX_INCOMING_UPDATES, MAX_MEMBERS,
    MAX_PENDING_EVENTS, NACK_TIMEOUT_PERCENT, dynamic_suspicion_timeout,
};
use crate::digest::{bucket_hashes, bucket_of, digest_bucket_count, root_hash, valid_bucket_count};
use crate::{
    Member, MemberSnapshot, MemberState, MembershipEvent, SwimBody, SwimConfig, SwimCounters,
    SwimError, SwimMsg, Update,
};

/// The most push-pull exchanges by digest a member has open at once (it opens at most
/// three per push-pull interval: a live member, a dead one, a forgotten seed); every
/// interval closes the ones still open.
const MAX_OPEN_SYNCS: usize = 8;

/// How many live members a leaving node tells at once (with a bare gossip message),
/// besides piggybacking the leave on its acks.
pub const LEAVE_FANOUT: usize = 4;

/// Inside SWIM's timer space ([`TimerSpace::Swim`]), a timer id is its kind (bits 40 and
/// up) and a payload (a probe sequence number or a member id, below bit 40).
const TIMER_KIND_SHIFT: u32 = 40;
const TIMER_PAYLOAD_MASK: u64 = (1 << TIMER_KIND_SHIFT) - 1;

pub(crate) const T_PROBE: u64 = 0;
pub(crate) const T_ACK: u64 = 1;
pub(crate) const T_PUSH_PULL: u64 = 2;
pub(crate) const T_JOIN: u64 = 3;
pub(crate) const T_SUSPICION: u64 = 4;
pub(crate) const T_RECLAIM: u64 = 5;
pub(crate) const T_RELAY: u64 = 6;
pub(crate) const T_GOSSIP: u64 = 7;

pub(crate) fn timer(kind: u64, payload: u64) -> TimerId {
    TimerId::new(
        TimerSpace::Swim,
        (kind << TIMER_KIND_SHIFT) | (payload & TIMER_PAYLOAD_MASK),
    )
}

/// The durable "group" SWIM's incarnation records belong to: node-local state, kept apart
/// from every replication group's records and snapshots.
pub const SWIM_STATE: GroupId = GroupId(u64::MAX);

/// The record SWIM persists: a tag and the incarnation number (little endian).
const RECORD_TAG: &[u8; 4] = b"SWI1";

/// Encodes the incarnation record [`Swim`] persists (`Persist` + `Sync`) whenever its
/// incarnation changes.
pub fn encode_incarnation_record(incarnation: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    v.extend_from_slice(RECORD_TAG);
    v.extend_from_slice(&incarnation.to_le_bytes());
    v
}

/// Decodes an incarnation record; `index` names the record in the error.
pub fn decode_incarnation_record(bytes: &[u8], index: usize) -> Result<u64, SwimError> {
    let corrupt = |reason: &str| SwimError::CorruptRecord {
        index,
        reason: reason.to_string(),
    };
    if bytes.len() != 12 {
        return Err(corrupt(&format!("length {} (expected 12)", bytes.len())));
    }
    if &bytes[..4] != RECORD_TAG {
        return Err(corrupt("missing SWI1 tag"));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[4..]);
    Ok(u64::from_le_bytes(n))
}

/// What [`recover_incarnation`] found in durable storage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncarnationRecovery {
    /// The highest incarnation persisted, if any record was readable.
    pub highest: Option<u64>,
    /// How many records (snapshot included) were read.
    pub records: usize,
    /// Records that could not be decoded (skipped).
    pub errors: Vec<SwimError>,
}

/// Reads the highest persisted incarnation from a node's recovered storage (snapshot and
/// records). A restarted member boots with `highest + 1`, so everything it says
/// overrides what the cluster remembers of its previous life (SWIM §4.2).
pub fn recover_incarnation(recovered: &kvlab_types::Recovery) -> IncarnationRecovery {
    let mut r = IncarnationRecovery::default();
    let state = recovered.group(SWIM_STATE);
    let snapshot = state.snapshot.iter().map(|s| (usize::MAX, s));
    let records = state.records.iter().enumerate();
    for (index, bytes) in snapshot.chain(records) {
        r.records += 1;
        match decode_incarnation_record(bytes, index) {
            Ok(inc) => r.highest = Some(r.highest.map_or(inc, |h: u64| h.max(inc))),
            Err(e) => r.errors.push(e),
        }
    }
    r
}

#[derive(Debug, Clone)]
struct Suspicion {
    incarnation: u64,
    /// The first suspecter; not counted as a confirmation.
    from: NodeId,
    confirmers: BTreeSet<NodeId>,
    /// Confirmations expected (Lifeguard's K).
    expected: u32,
    started: Time,
    min: Duration,
    max: Duration,
    deadline: Time,
}

#[derive(Debug, Clone)]
struct Probe {
    seq: u64,
    target: NodeId,
    acked: bool,
    indirect_sent: bool,
    expected_nacks: u32,
    nacks: u32,
    /// The relays asked to probe indirectly that have not nacked yet: only their acks
    /// and nacks (and the target's ack) count for this probe.
    relays: Vec<NodeId>,
}

/// Where an exchange this member opened with a digest stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncStage {
    /// The digest went out; waiting for the peer's bucket hashes (or for nothing, if the
    /// tables match).
    AwaitBuckets,
    /// This member's rows of the differing buckets went out; waiting for the peer's.
    AwaitEntries,
}

#[derive(Debug, Clone)]
struct Relay {
    origin: NodeId,
    origin_seq: u64,
    /// The member pinged on the origin's behalf: only its ack is forwarded.
    target: NodeId,
    nacked: bool,
}

/// The header of a [`SwimBody::SyncEntries`].
#[derive(Debug)]
struct SyncRequest {
    seq: u64,
    bucket_count: u32,
    buckets: Vec<u32>,
    reply: bool,
}

/// A SWIM + Lifeguard member: the membership table and the failure detector of one node.
///
/// Feed it [`Swim::start`] once, then every SWIM message ([`Swim::handle_msg`]) and every
/// timer it owns ([`Swim::handle_timer`]); read the table with [`Swim::members`] and the
/// changes with [`Swim::drain_events`].
#[derive(Debug, Clone)]
pub struct Swim {
    id: NodeId,
    config: SwimConfig,
    address: String,
    incarnation: u64,
    left: bool,
    members: BTreeMap<NodeId, Member>,
    live_count: usize,
    suspicions: BTreeMap<NodeId, Suspicion>,
    probe_order: Vec<NodeId>,
    probe_index: usize,
    probe: Option<Probe>,
    relays: BTreeMap<u64, Relay>,
    /// Push-pull exchanges by digest this member opened: seq → (peer, stage).
    syncs: BTreeMap<u64, (NodeId, SyncStage)>,
    next_seq: u64,
    broadcasts: BroadcastQueue,
    local_health: u32,
    seeds: Vec<NodeId>,
    joined: bool,
    join_attempts: u32,
    events: VecDeque<MembershipEvent>,
    counters: SwimCounters,
    /// Whether `member_incarnation_exhausted` was reported (it is, once).
    incarnation_exhausted_reported: bool,
}

impl Swim {
    /// A member `id` reachable at `address`, starting at `incarnation` (use
    /// [`recover_incarnation`]`.highest + 1` after a restart), joining through
    /// `config.seeds`. Fails if the config does not validate.
    pub fn new(
        id: NodeId,
        address: String,
        incarnation: u64,
        config: SwimConfig,
    ) -> Result<Swim, SwimError> {
        config.validate()?;
        let seeds: Vec<NodeId> = config
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != id)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut members = BTreeMap::new();
        members.insert(
            id,
            Member {
                id,
                address: address.clone(),
                incarnation,
                state: MemberState::Alive,
                state_since: Time::ZERO,
            },
        );
        Ok(Swim {
            id,
            config,
            address,
            incarnation,
            left: false,
            members,
            live_count: 1,
            suspicions: BTreeMap::new(),
            probe_order: Vec::new(),
            probe_index: 0,
            probe: None,
            relays: BTreeMap::new(),
            syncs: BTreeMap::new(),
            next_seq: 1,
            broadcasts: BroadcastQueue::default(),
            local_health: 0,
            seeds,
            joined: false,
            join_attempts: 0,
            events: VecDeque::new(),
            counters: SwimCounters::default(),
            incarnation_exhausted_reported: false,
        })
    }

    // ----- accessors ---------------------------------------------------------------

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// This member's current incarnation number.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }
    /// This member's address.
    pub fn address(&self) -> &str {
        &self.address
    }
    /// The configuration in use.
    pub fn config(&self) -> &SwimConfig {
        &self.config
    }
    /// Whether this member has left the cluster ([`Swim::leave`]).
    pub fn has_left(&self) -> bool {
        self.left
    }
    /// Whether a seed answered the join (true at once when there are no seeds).
    pub fn is_joined(&self) -> bool {
        self.joined
    }
    /// The membership table, ordered by id, this member included.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }
    /// One member's row.
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }
    /// Members believed running (alive or suspect), this member included, by id.
    pub fn live_members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .values()
            .filter(|m| m.state.is_live())
            .map(|m| m.id)
    }
    /// How many members are alive or suspect (this member included): the `n` of the
    /// suspicion and retransmit formulas.
    pub fn live_count(&self) -> usize {
        self.live_count
    }
    /// The Lifeguard local-health score (0 = healthy); timeouts scale by `score + 1`.
    pub fn local_health(&self) -> u32 {
        self.local_health
    }
    /// The counters, for metrics.
    pub fn counters(&self) -> &SwimCounters {
        &self.counters
    }
    /// How many updates wait to be piggybacked.
    pub fn pending_broadcasts(&self) -> usize {
        self.broadcasts.len()
    }
    /// When a suspected member will be declared dead (this node's clock), if suspected.
    pub fn suspicion_deadline(&self, member: NodeId) -> Option<Time> {
        self.suspicions.get(&member).map(|s| s.deadline)
    }
    /// Independent confirmations recorded for a suspected member (Lifeguard §IV-B).
    pub fn suspicion_confirmations(&self, member: NodeId) -> Option<usize> {
        self.suspicions.get(&member).map(|s| s.confirmers.len())
    }
    /// The hash of the membership table (every row's member, incarnation, state and
    /// address): two members whose digests are equal hold the same table, and a
    /// push-pull between them exchanges one small message (see the crate docs).
    pub fn digest(&self) -> u64 {
        root_hash(self.members.values())
    }
    /// Takes the membership events recorded since the last call, oldest first.
    pub fn drain_events(&mut self) -> std::collections::vec_deque::Drain<'_, MembershipEvent> {
        self.events.drain(..)
    }
    /// Whether `timer` is one of the timers this crate arms.
    pub fn owns_timer(timer: TimerId) -> bool {
        timer.space == TimerSpace::Swim
    }

    // ----- lifecycle ---------------------------------------------------------------

    /// Starts the member: persists its incarnation (if configured), arms the protocol
    /// period and push-pull timers (with a random phase, so members do not probe in
    /// lockstep), and joins through the seeds with a push-pull.
    pub fn start(&mut self, cx: &mut Cx<'_>, out: &mut Out<SwimMsg>) {
        if let Some(me) = self.members.get_mut(&self.id) {
            me.state_since = cx.now;
        }
        self.persist_incarnation(out);
        let period_ns = self.config.protocol_period_ms.saturating_mul(1_000_000);
        let phase = cx.rng.random_range(0..period_ns.max(1));
        out.set_timer(timer(T_PROBE, 0), Duration::from_nanos(phase));
        if self.config.push_pull_interval_ms > 0 {
            let ns = self.config.push_pull_interval_ms.saturating_mul(1_000_000);
            let phase = cx.rng.random_range(0..ns.max(1));
            out.set_timer(timer(T_PUSH_PULL, 0), Duration::from_nanos(phase));
        }
        if self.config.gossip_interval_ms > 0 {
            let ns = self.config.gossip_interval_ms.saturating_mul(1_000_000);
            let phase = cx.rng.random_range(0..ns.max(1));
            out.set_timer(timer(T_GOSSIP, 0), Duration::from_nanos(phase));
        }
        // Announce ourselves to whoever hears our first messages.
        self.enqueue(self.self_alive());
        if self.seeds.is_empty() {
            self.joined = true;
        } else {
            self.join_round(cx, out);
        }
    }

    /// Leaves the cluster gracefully: marks this member `left`, tells up to
    /// [`LEAVE_FANOUT`] live members at once and piggybacks the leave on every later
    /// ack. The member stops probing; the driver may stop it once the leave has spread.
    pub fn leave(&mut self, cx: &mut Cx<'_>, out: &mut Out<SwimMsg>) {
        if self.left {
            return;
        }
        self.left = true;
        let now = cx.now;
        if let Some(me) = self.members.get_mut(&self.id) {
            me.state = MemberState::Left;
            me.state_since = now;
        }
        self.live_count = self.live_count.saturating_sub(1);
        self.enqueue(Update::Left {
            member: self.id,
            incarnation: self.incarnation,
        });
        out.cancel_timer(timer(T_PROBE, 0));
        out.cancel_timer(timer(T_PUSH_PULL, 0));
        out.cancel_timer(timer(T_JOIN, 0));
        if let Some(p) = self.probe.take() {
            out.cancel_timer(timer(T_ACK, p.seq));
        }
        let mut targets = self.others_in(|s| s == MemberState::Alive);
        targets.shuffle(cx.rng);
        targets.truncate(LEAVE_FANOUT);
        for t in targets {
            self.counters.gossips_sent += 1;
            self.send(out, t, SwimBody::Gossip, Vec::new());
        }
    }

    // ----- inputs ------------------------------------------------------------------

    /// Handles a message from `from`: applies its piggybacked updates first (so that a
    /// refutation rides on the answer), then its body.
    pub fn handle_msg(
        &mut self,
        cx: &mut Cx<'_>,
        from: NodeId,
        msg: SwimMsg,
        out: &mut Out<SwimMsg>,
    ) {
        if from == self.id {
            return;
        }
        self.counters.messages_received += 1;
        self.counters.bytes_received += msg.wire_size() as u64;
        let SwimMsg { body, updates } = msg;
        if updates.len() > MAX_INCOMING_UPDATES {
            self.counters.updates_rejected += (updates.len() - MAX_INCOMING_UPDATES) as u64;
        }
        for u in updates.into_iter().take(MAX_INCOMING_UPDATES) {
            if self.admit(&u) {
                self.apply(cx, out, u);
            }
        }
        match body {
            SwimBody::Ping { seq, target } => {
                if target != self.id {
                    self.counters.misdirected += 1;
                    return;
                }
                self.counters.acks_sent += 1;
                self.send(out, from, SwimBody::Ack { seq }, Vec::new());
            }
            SwimBody::Ack { seq } => self.on_ack(out, from, seq),
            SwimBody::Nack { seq } => {
                // Only a relay this probe asked, once: a forged flood of nacks cannot
                // hide the missing ones from local health (Lifeguard §IV-A).
                if let Some(p) = self.probe.as_mut().filter(|p| p.seq == seq && !p.acked)
                    && let Some(k) = p.relays.iter().position(|&r| r == from)
                {
                    p.relays.swap_remove(k);
                    p.nacks = p.nacks.saturating_add(1);
                    self.counters.nacks_received += 1;
                } else {
                    self.counters.stale_acks += 1;
                }
            }
            SwimBody::PingReq { seq, target } => self.on_ping_req(out, from, seq, target),
            SwimBody::PushPull {
                join: _,
                reply,
                members,
            } => {
                self.merge_state(cx, out, from, members);
                if reply {
                    if !self.joined {
                        self.joined = true;
                        out.cancel_timer(timer(T_JOIN, 0));
                    }
                } else {
                    self.send_push_pull(cx, out, from, false, true);
                }
            }
            SwimBody::Gossip => {}
            SwimBody::SyncDigest { seq, root } => self.on_sync_digest(out, from, seq, root),
            SwimBody::SyncBuckets { seq, hashes } => {
                self.on_sync_buckets(cx, out, from, seq, hashes);
            }
            SwimBody::SyncEntries {
                seq,
                bucket_count,
                buckets,
                reply,
                members,
            } => {
                let request = SyncRequest {
                    seq,
                    bucket_count,
                    buckets,
                    reply,
                };
                self.on_sync_entries(cx, out, from, request, members);
            }
        }
    }

    /// Handles a timer. Returns `false` (and does nothing) if the timer is not SWIM's.
    pub fn handle_timer(&mut self, cx: &mut Cx<'_>, t: TimerId, out: &mut Out<SwimMsg>) -> bool {
        if !Self::owns_timer(t) {
            return false;
        }
        let kind = (t.id >> TIMER_KIND_SHIFT) & 0xff;
        let payload = t.id & TIMER_PAYLOAD_MASK;
        match kind {
            T_PROBE => self.on_probe_tick(cx, out),
            T_ACK => self.on_ack_timeout(cx, out, payload),
            T_PUSH_PULL => self.on_push_pull_tick(cx, out),
            T_GOSSIP => self.on_gossip_tick(cx, out),
            T_JOIN => {
                if !self.joined && !self.left {
                    self.join_round(cx, out);
                }
            }
            T_SUSPICION => self.on_suspicion_timeout(cx, out, NodeId(payload as u32)),
            T_RECLAIM => self.on_reclaim(cx, out, NodeId(payload as u32)),
            T_RELAY => self.on_relay_timeout(out, payload),
            _ => return false,
        }
        true
    }

    // ----- probing (SWIM §3.1, §4.3; Lifeguard §IV-A) ------------------------------

    fn scaled(&self, d: Duration) -> Duration {
        d.saturating_mul(self.local_health + 1)
    }

    fn adjust_health(&mut self, delta: i64) {
        if !self.config.lifeguard.local_health {
            return;
        }
        let v = i64::from(self.local_health) + delta;
        self.local_health = v.clamp(0, i64::from(self.config.local_health_max)) as u32;
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq = (self.next_seq + 1) & TIMER_PAYLOAD_MASK;
        if self.next_seq == 0 {
            self.next_seq = 1;
        }
        s
    }

    fn on_probe_tick(&mut self, cx: &mut Cx<'_>, out: &mut Out<SwimMsg>) {
        if self.left {
            return;
        }
        self.finish_probe(cx, out);
        if let Some(target) = self.next_probe_target(cx) {
            let seq = self.next_seq();
            self.probe = Some(Probe {
                seq,
                target,
                acked: false,
                indirect_sent: false,
                expected_nacks: 0,
                nacks: 0,
                relays: Vec::new(),
            });
            self.counters.probes_started += 1;
            let buddy = self.buddy_prefix(target);
            self.counters.pings_sent += 1;
            self.send(out, target, SwimBody::Ping { seq, target }, buddy);
            out.set_timer(timer(T_ACK, seq), self.scaled(self.config.ack_timeout()));
        }
        out.set_timer(
            timer(T_PROBE, 0),
            self.scaled(self.config.protocol_period()),
        );
    }

    /// Lifeguard §IV-C: a probe of a suspected member carries the suspicion first, so the
    /// member learns of it from the probe itself and can refute at once.
    fn buddy_prefix(&self, target: NodeId) -> Vec<Update> {
        if !self.config.lifeguard.buddy {
            return Vec::new();
        }
        match self.suspicions.get(&target) {
            Some(s) => vec![Update::Suspect {
                member: target,
                incarnation: s.incarnation,
                from: s.from,
            }],
            None => Vec::new(),
        }
    }

    /// Ends the current probe: one with no ack by the end of its period makes the
    /// target suspect (SWIM §4.2) and worsens local health by the nacks that did not
    /// come (Lifeguard §IV-A; +1 when no relay was asked).
    fn finish_probe(&mut self, cx: &mut Cx<'_>, out: &mut Out<SwimMsg>) {
        let Some(p) = self.probe.take() else {
            return;
        };
        if p.acked {
            return;
        }
        out.cancel_timer(timer(T_ACK, p.seq));
        self.counters.probes_failed += 1;
        let delta = if p.expected_nacks > 0 {
            i64::from(p.expected_nacks.saturating_sub(p.nacks))
        } else {
            1
        };
        self.adjust_health(delta);
        let Some(m) = self.members.get(&p.target) else {
            return;
        };
        if m.state.is_live() {
            let u = Update::Suspect {
                member: p.target,
                incarnation: m.incarnation,
                from: self.id,
            };
            self.apply(cx, out, u);
        }
    }

    /// Round-robin over a shuffled list of the live members, reshuffled every round
    /// (SWIM §4.3): every member is probed once per round, so a failure is detected
    /// within `2n - 1` periods at worst.
    fn next_probe_target(&mut self, cx: &mut Cx<'_>) -> Option<NodeId> {
        for _round in 0..2 {
            while self.probe_index < self.probe_order.len() {
                let cand = self.probe_order[self.probe_index];
                self.probe_index += 1;
                if cand != self.id && self.members.get(&cand).is_some_and(|m| m.state.is_live()) {
                    return Some(cand);
                }
            }
            self.probe_order = self.others_in(MemberState::is_live);
            self.probe_order.shuffle(cx.rng);
            self.probe_index = 0;
        }
        None
    }

    /// New members go to a random position of the probe list (SWIM §4.3).
    fn insert_probe_target(&mut self, cx: &mut Cx<'_>, member: NodeId) {
        if self.probe_order.contains(&member) {
            return;
        }
        let pos = cx.rng.random_range(0..=self.probe_order.len());
        self.probe_order.insert(pos, member);
        if pos < self.probe_index {
            self.probe_index += 1;
        }
    }

    /// An ack counts for the current probe if it comes from the target or from a relay
    /// this probe asked; for a relay this node runs, if it comes from the relay's target.
    fn on_ack(&mut self, out: &mut Out<SwimMsg>, from: NodeId, seq: u64) {
        if let Some(p) = self
            .probe
            .as_mut()
            .filter(|p| p.seq == seq && !p.acked && (from == p.target || p.relays.contains(&from)))
        {
            p.acked = true;
            out.cancel_timer(timer(T_ACK, seq));
            self.adjust_health(-1);
            return;
        }
        if self.relays.get(&seq).is_some_and(|r| r.target == from)
            && let Some(r) = self.relays.remove(&seq)
        {
            out.cancel_timer(timer(T_RELAY, seq));
            self.counters.acks_sent += 1;
            self.send(
                out,
                r.origin,
                SwimBody::Ack { seq: r.origin_seq },
                Vec::new(),
            );
            return;
        }
        self.counters.stale_acks += 1;
    }

    /// No direct ack in time: ask `k` random alive members to probe the target
    /// (SWIM §3.1), expecting a nack from each that hears nothing (Lifeguard §IV-A).
    fn on_ack_timeout(&mut self, cx: &mut Cx<'_>, out: &mut Out<SwimMsg>, seq: u64) {
        let Some(p) = self.probe.as_ref() else {
            return;
        };
        if p.seq != seq || p.acked || p.indirect_sent {
            return;
        }
        let target = p.target;
        let mut relays = self.others_in(|s| s == MemberState::Alive);
        relays.retain(|r| *r != target);
        relays.shuffle(cx.rng);
        relays.truncate(self.config.indirect_probes as usize);
        if let Some(p) = self.probe.as_mut() {
            p.indirect_sent = true;
            p.expected_nacks = relays.len() as u32;
            p.relays = relays.clone();
        }
        for r in relays {
            self.counters.ping_reqs_sent += 1;
            self.send(out, r, SwimBody::PingReq { seq, target }, Vec::new());
        }
    }

    fn on_ping_req(&mut self, out: &mut Out<SwimMsg>, origin: NodeId, seq: u64, target: NodeId) {
        if target == self.id {
            self.counters.acks_sent += 1;
            self.send(out, origin, SwimBody::Ack { seq }, Vec::new());
            return;
        }
        if self.relays.len() >= self.config.max_pending_relays {
            self.counters.relays_refused += 1;
            return;
        }
        let relay_seq = self.next_seq();
        self.relays.insert(
            relay_seq,
            Relay {
                origin,
                origin_seq: seq,
                target,
                nacked: false,
            },
        );
        let buddy = self.buddy_prefix(target);
        self.counters.pings_sent += 1;
        self.send(
            out,
            target,
            SwimBody::Ping {
                seq: relay_seq,
                target,
            },
            buddy,
        );
        let nack_after = self.config.ack_timeout() * NACK_TIMEOUT_PERCENT as u32 / 100;
        out.set_timer(timer(T_RELAY, relay_seq), nack_after);
    }

    /// A relay that heard nothing sends a nack, then keeps the relay open one more ack
    /// timeout for a late ack before forgetting it.
    fn on_relay_timeout(&mut self, out: &mut Out<SwimMsg>, relay_seq: u64) {
        let Some(r) = self.relays.get_mut(&relay_seq) else {
            return;
        };
        if r.nacked {
            self.relays.remove(&relay_seq);
            return;
        }
        r.nacked = true;
        let (origin, origin_seq) = (r.origin, r.origin_seq);
        self.counters.nacks_sent += 1;
        self.send(out, origin, SwimBody::Nack { seq: origin_seq }, Vec::new());
        out.set_timer(timer(T_RELAY, relay_seq), self.config.ack_timeout());
    }

    // ----- suspicion (SWIM §4.2, Lifeguard §IV-B) ----------------------------------

    fn suspicion_timeout(&self, s: &Suspicion) -> Duration {
        if self.config.lifeguard.dynamic_suspicion {
            dynamic_suspicion_timeout(s.min, s.max, s.confirmers.len() as u32, s.expected)
        } else {
            s.min
        }
    }

    fn on_suspicion_timeout(&mut self, cx: &mut Cx<'_>, out: &mut Out<SwimMsg>, member: NodeId) {
        let Some(s) = self.suspicions.get(&member) else {
            return;
        };
        if cx.now < s.deadline {
            out.set_timer(
                timer(T_SUSPICION, u64::from(member.0)),
                s.deadline.saturating_since(cx.now),
            );
            return;
        }
        let incarnation = s.incarnation;
        self.counters.deaths_declared += 1;
        let u = Update::Dead {
            member,
            incarnation,
            from: self.id,
        };
        self.apply(cx, out, u);
    }

    fn on_reclaim(&mut self, cx: &mut Cx<'_>, out: &mut Out<SwimMsg>, member: NodeId) {
        let Some(m) = self.members.get(&member) else {
            return;
        };
        if m.state.is_live() || member == self.id {
            return;
        }
        let due = m.state_since + Duration::from_millis(self.config.dead_reclaim_ms);
        if cx.now < due {
            out.set_timer(
                timer(T_RECLAIM, u64::from(member.0)),
                due.saturating_since(cx.now),
            );
            return;
        }
        let incarnation = m.incarnation;
        self.members.remove(&member);
        self.emit(
            out,
            MembershipEvent::Reclaimed {
                member,
                incarnation,
            },
        );
    }

    // ----- the precedence rules (SWIM §4.2) ----------------------------------------

    /// Whether an update that came off the wire may reach the table (the crate docs'
    /// "Hostile input"): its incarnation within [`MAX_INCARNATION`] and, for this member
    /// and for members it tracks as live, at most [`MAX_INCARNATION_JUMP`] ahead of what
    /// it knows; no new member beyond [`MAX_MEMBERS`]. A refusal is counted in
    /// `updates_refused`.
    ///
    /// The relative bound is not applied to dead, left or unknown members: this node no
    /// longer follows their incarnation, so its record may be arbitrarily stale — a
    /// member pushed a jump ahead by a forgery that others believed must still be able
    /// to come back here (an alive of a higher incarnation overrides dead and left).
    fn admit(&mut self, u: &Update) -> bool {
        let member = u.member();
        let incarnation = u.incarnation();
        let known = if member == self.id {
            Some(self.incarnation)
        } else {
            self.members
                .get(&member)
                .filter(|m| m.state.is_live())
                .map(|m| m.incarnation)
        };
        let plausible = incarnation <= MAX_INCARNATION
            && match known {
                Some(k) => incarnation <= k.saturating_add(MAX_INCARNATION_JUMP),
                // Only an alive update adds a member (the others ignore unknown ones).
                None => {
                    !matches!(u, Update::Alive { .. })
                        || self.members.contains_key(&member)
                        || self.members.len() < MAX_MEMBERS
                }
            };
        if !plausible {
            self.counters.updates_refused += 1;
        }
        plausible
    }

    /// Applies one update with the precedence rules of SWIM §4.2, extended so that a
    /// higher incarnation also revives a dead or left member (memberlist; this is how a
    /// restarted member rejoins) and so that dead/left override only incarnations up to
    /// their own (a stale death does not kill a member that has since rejoined).
    fn apply(&mut self, cx: &mut Cx<'_>, out: &mut Out<SwimMsg>, u: Update) {
        if u.member() == self.id {
            self.apply_about_self(cx, out, u);
            return;
        }
        match u {
            Update::Alive {
                member,
                incarnation,
                address,
            } => self.apply_alive(cx, out, member, incarnation, address),
            Update::Suspect {
                member,
                incarnation,
                from,
            } => self.apply_suspect(cx, out, member, incarnation, from),
            Update::Dead {
                member,
                incarnation,
                ..
            } => self.apply_retirement(cx, out, member, incarnation, MemberState::Dead, u),
            Update::Left {
                member,
                incarnation,
            } => self.apply_retirement(cx, out, member, incarnation, MemberState::Left, u),
        }
    }

    /// Something said about this member: anything that is not "alive at my current
    /// incarnation and address" is refuted by moving past its incarnation (SWIM §4.2).
    /// A member that has left never refutes.
    fn apply_about_self(&mut self, cx: &mut Cx<'_>, out: &mut Out<SwimMsg>, u: Update) {
        if self.left {
            return;
        }
        match u {
            Update::Alive {
                incarnation,
                address,
                ..
            } => {
                if incarnation > self.incarnation
                    || (incarnation == self.incarnation && address != self.address)
                {
                    self.refute(out, incarnation, false);
                }
            }
            Update::Suspect {
                incarnation, from, ..
            }
            | Update::Dead {
                incarnation, from, ..
            } => {
                if incarnation >= self.incarnation {
                    self.refute(out, incarnation, true);
                    self.push_refutation(cx, out, from);
                }
            }
            Update::Left { incarnation, .. } => {
                if incarnation >= self.incarnation {
                    self.refute(out, incarnation, true);
                }
            }
        }
    }

    /// Sends a fresh refutation at once to the accuser and `indirect_probes` random live
    /// members instead of waiting for the next probe to carry it: a member whose probes
    /// are slowed by its local health score (Lifeguard §IV-A) would otherwise also be
    /// slow to clear its name, and be declared dead while it is alive.
    fn push_refutation(&mut self, cx: &mut Cx<'_>, out: &mut Out<SwimMsg>, accuser: NodeId) {
        let mut targets = self.others_in(|s| s == MemberState::Alive);
        targets.retain(|t| *t != accuser);
        targets.shuffle(cx.rng);
        targets.truncate(self.config.indirect_probes as usize);
        if accuser != self.id && self.members.contains_key(&accuser) {
            targets.insert(0, accuser);
        }
        for t in targets {
            self.counters.gossips_sent += 1;
            let alive = vec![self.self_alive()];
            self.send(out, t, SwimBody::Gossip, alive);
        }
    }

    fn refute(&mut self, out: &mut Out<SwimMsg>, seen: u64, accused: bool) {
        // `admit` keeps `seen` within MAX_INCARNATION, so `seen + 1` cannot overflow; it
        // may still pass the bound, which peers would refuse: then there is nothing left
        // to refute with.
        let next = seen + 1;
        if next > MAX_INCARNATION {
            self.counters.refutations_exhausted += 1;
            if !self.incarnation_exhausted_reported {
                self.incarnation_exhausted_reported = true;
                out.event(NodeEvent::IncarnationExhausted {
                    member: self.id,
                    incarnation: self.incarnation,
                });
            }
            return;
        }
        self.incarnation = next;
        if let Some(me) = self.members.get_mut(&self.id) {
            me.incarnation = self.incarnation;
        }
        self.counters.refutations += 1;
        // Not a change of the table (no `MembershipEvent`), but what experiments count.
        out.event(NodeEvent::MemberRefuted {
            member: self.id,
            incarnation: self.incarnation,
            accused,
        });
        if accused {
            // Lifeguard §IV-A: having to refute means others cannot hear us in time.
            self.adjust_health(1);
        }
        self.persist_incarnation(out);
        self.enqueue(self.self_alive());
    }

    fn apply_alive(
        &mut self,
        cx: &mut Cx<'_>,
        out: &mut Out<SwimMsg>,
        member: NodeId,
        incarnation: u64,
        address: String,
    ) {
        if address.len() > MAX_ADDRESS_BYTES {
            self.counters.updates_rejected += 1;
            return;
        }
        let now = cx.now;
        let Some(cur) = self.members.get_mut(&member) else {
            let update = Update::Alive {
                member,
                incarnation,
                address: address.clone(),
            };
            self.members.insert(
                member,
                Member {
                    id: member,
                    address: address.clone(),
                    incarnation,
                    state: MemberState::Alive,
                    state_since: now,
                },
            );
            self.live_count += 1;
            self.insert_probe_target(cx, member);
            self.emit(
                out,
                MembershipEvent::Joined {
                    member,
                    incarnation,
                    address,
                },
            );
            self.enqueue(update);
            return;
        };
        if incarnation <= cur.incarnation {
            if incarnation == cur.incarnation
                && cur.state == MemberState::Alive
                && address != cur.address
            {
                self.counters.address_conflicts += 1;
            }
            return;
        }
        let update = Update::Alive {
            member,
            incarnation,
            address: address.clone(),
        };
        let old_state = cur.state;
        let old_address = std::mem::replace(&mut cur.address, address.clone());
        cur.incarnation = incarnation;
        if old_state != MemberState::Alive {
            cur.state = MemberState::Alive;
            cur.state_since = now;
        }
        if !old_state.is_live() {
            self.live_count += 1;
            out.cancel_timer(timer(T_RECLAIM, u64::from(member.0)));
            self.insert_probe_target(cx, member);
        }
        if self.suspicions.remove(&member).is_some() {
            out.cancel_timer(timer(T_SUSPICION, u64::from(member.0)));
        }
        if old_address != address {
            self.emit(
                out,
                MembershipEvent::AddressChanged {
                    member,
                    incarnation,
                    old_address,
                    address,
                },
            );
        }
        if old_state != MemberState::Alive {
            self.emit(
                out,
                MembershipEvent::Alive {
                    member,
                    incarnation,
                },
            );
        }
        self.enqueue(update);
    }

    fn apply_suspect(
        &mut self,
        cx: &mut Cx<'_>,
        out: &mut Out<SwimMsg>,
        member: NodeId,
        incarnation: u64,
        from: NodeId,
    ) {
        let Some(cur) = self.members.get(&member) else {
            return;
        };
        if !cur.state.is_live() || incarnation < cur.incarnation {
            return;
        }
        if cur.state == MemberState::Suspect && incarnation == cur.incarnation {
            self.confirm_suspicion(cx, out, member, from);
            return;
        }
        // Alive at <= incarnation, or suspect at a lower one: a new suspicion.
        let n = self.live_count;
        let (min, max) = self.config.suspicion_timeout_bounds(n);
        // memberlist: K = suspicion_mult - 2, and no confirmations are expected from a
        // cluster too small to give them.
        let k = self.config.suspicion_mult.saturating_sub(2);
        let expected = if (n as u64).saturating_sub(2) < u64::from(k) {
            0
        } else {
            k
        };
        let mut s = Suspicion {
            incarnation,
            from,
            confirmers: BTreeSet::new(),
            expected,
            started: cx.now,
            min,
            max,
            deadline: cx.now,
        };
        let timeout = self.suspicion_timeout(&s);
        s.deadline = cx.now + timeout;
        self.suspicions.insert(member, s);
        if let Some(cur) = self.members.get_mut(&member) {
            cur.incarnation = incarnation;
            cur.state = MemberState::Suspect;
            cur.state_since = cx.now;
        }
        out.set_timer(timer(T_SUSPICION, u64::from(member.0)), timeout);
        if from == self.id {
            self.counters.suspicions_raised += 1;
        }
        self.announce(
            out,
            Update::Suspect {
                member,
                incarnation,
                from,
            },
        );
    }

    /// Lifeguard §IV-B: a suspicion of the same incarnation from another member is an
    /// independent confirmation; it shortens the timeout and is re-gossiped so others
    /// count it too.
    fn confirm_suspicion(
        &mut self,
        cx: &mut Cx<'_>,
        out: &mut Out<SwimMsg>,
        member: NodeId,
        from: NodeId,
    ) {
        if !self.config.lifeguard.dynamic_suspicion {
            return;
        }
        let Some(s) = self.suspicions.get_mut(&member) else {
            return;
        };
        if from == s.from || s.confirmers.contains(&from) || s.confirmers.len() as u32 >= s.expected
        {
            return;
        }
        s.confirmers.insert(from);
        let incarnation = s.incarnation;
        // Dynamic suspicion is on (checked above), so the timeout is Lifeguard's formula.
        let timeout =
            dynamic_suspicion_timeout(s.min, s.max, s.confirmers.len() as u32, s.expected);
        let deadline = s.started + timeout;
        s.deadline = deadline;
        self.counters.suspicion_confirmations += 1;
        out.set_timer(
            timer(T_SUSPICION, u64::from(member.0)),
            deadline.saturating_since(cx.now),
        );
        self.enqueue(Update::Suspect {
            member,
            incarnation,
            from,
        });
    }

    /// Applies a death or a leave (`u`, about `member` at `incarnation`) that moves the
    /// member to `to`, then reports and gossips it.
    fn apply_retirement(
        &mut self,
        cx: &mut Cx<'_>,
        out: &mut Out<SwimMsg>,
        member: NodeId,
        incarnation: u64,
        to: MemberState,
        u: Update,
    ) {
        if self.retire(cx, out, member, incarnation, to) {
            self.announce(out, u);
        }
    }

    /// Moves a member to dead or left if the rules allow: dead overrides alive and
    /// suspect of the same or a lower incarnation; left overrides those and dead.
    fn retire(
        &mut self,
        cx: &mut Cx<'_>,
        out: &mut Out<SwimMsg>,
        member: NodeId,
        incarnation: u64,
        to: MemberState,
    ) -> bool {
        let Some(cur) = self.members.get_mut(&member) else {
            return false;
        };
        let allowed = match (cur.state, to) {
            (MemberState::Left, _) => false,
            (MemberState::Dead, MemberState::Dead) => false,
            _ => incarnation >= cur.incarnation,
        };
        if !allowed {
            return false;
        }
        let was_live = cur.state.is_live();
        cur.state = to;
        cur.incarnation = incarnation;
        cur.state_since = cx.now;
        if was_live {
            self.live_count = self.live_count.saturating_sub(1);
        }
        if self.suspicions.remove(&member).is_some() {
            out.cancel_timer(timer(T_SUSPICION, u64::from(member.0)));
        }
        out.set_timer(
            timer(T_RECLAIM, u64::from(member.0)),
            Duration::from_millis(self.config.dead_reclaim_ms),
        );
        true
    }

    // ----- push-pull anti-entropy and join -----------------------------------------

    fn join_round(&mut self, cx: &mut Cx<'_>, out: &mut Out<SwimMsg>) {
        if self.join_attempts >= self.config.join_attempts_max {
            out.event(NodeEvent::SwimJoinFailed {
                attempts: self.join_attempts,
                seeds: self.seeds.clone(),
            });
            return;
        }
        self.join_attempts += 1;
        for s in self.seeds.clone() {
            self.send_push_pull(cx, out, s, true, false);
        }
        out.set_timer(
            timer(T_JOIN, 0),
            Duration::from_millis(self.config.join_retry_ms),
        );
    }

    /// Every gossip interval, while updates wait: send them to `gossip_fanout` random
    /// live members (drawn from the probe list, so a round costs `O(fanout · log n)`).
    fn on_gossip_tick(&mut self, cx: &mut Cx<'_>, out: &mut Out<SwimMsg>) {
        if self.left || self.config.gossip_interval_ms == 0 {
            return;
        }
        out.set_timer(
            timer(T_GOSSIP, 0),
            Duration::from_millis(self.config.gossip_interval_ms),
        );
        if self.broadcasts.len() == 0 || self.probe_order.is_empty() {
            return;
        }
        let fanout = self.config.gossip_fanout as usize;
        let mut targets: Vec<NodeId> = Vec::with_capacity(fanout);
        // A bounded number of draws: the list may hold members that died since.
        for _ in 0..fanout.saturating_mul(4) {
            if targets.len() >= fanout {
                break;
            }
            let cand = self.probe_order[cx.rng.random_range(0..self.probe_order.len())];
            let alive = self
                .members
                .get(&cand)
                .is_some_and(|m| m.state == MemberState::Alive);
            if alive && cand != self.id && !targets.contains(&cand) {
                targets.push(cand);
            }
        }
        for t in targets {
            if self.broadcasts.len() == 0 {
                break;
            }
            self.counters.gossips_sent += 1;
            self.send(out, t, SwimBody::Gossip, Vec::new());
        }
    }

    /// Every push-pull interval: a full state exchange with one random live member;
    /// also one with a random dead member (so that the two sides of a healed partition,
    /// which declared each other dead, find each other again, as Serf's reconnect does),
    /// or with a seed when no member is live; and one with a random seed this member no
    /// longer knows at all (reclaimed after `dead_reclaim_ms`), so that two sides that
    /// forgot each other — a partition longer than the reclaim time, or deaths a forger
    /// made them believe while made-up members kept them from feeling alone — meet again
    /// through the seeds.
    ///
    /// With `push_pull_digest` (the default) each exchange but the one with a seed by a
    /// member that knows no live member starts with a digest (see the crate docs);
    /// exchanges of the previous interval still open are abandoned.
    fn on_push_pull_tick(&mut self, cx: &mut Cx<'_>, out: &mut Out<SwimMsg>) {
        if self.left || self.config.push_pull_interval_ms == 0 {
            return;
        }
        self.syncs.clear();
        let live = self.others_in(MemberState::is_live);
        if live.is_empty() {
            if !self.seeds.is_empty() {
                let i = cx.rng.random_range(0..self.seeds.len());
                let s = self.seeds[i];
                self.send_push_pull(cx, out, s, false, false);
            }
        } else {
            let i = cx.rng.random_range(0..live.len());
            self.anti_entropy(cx, out, live[i]);
        }
        let dead = self.others_in(|s| s == MemberState::Dead);
        if !dead.is_empty() {
            let i = cx.rng.random_range(0..dead.len());
            self.anti_entropy(cx, out, dead[i]);
        }
        if !live.is_empty() {
            let forgotten: Vec<NodeId> = self
                .seeds
                .iter()
                .copied()
                .filter(|s| !self.members.contains_key(s))
                .collect();
            if !forgotten.is_empty() {
                let i = cx.rng.random_range(0..forgotten.len());
                self.anti_entropy(cx, out, forgotten[i]);
            }
        }
        out.set_timer(
            timer(T_PUSH_PULL, 0),
            self.config.push_pull_interval(self.live_count),
        );
    }

    fn send_push_pull(
        &mut self,
        cx: &mut Cx<'_>,
        out: &mut Out<SwimMsg>,
        to: NodeId,
        join: bool,
        reply: bool,
    ) {
        let members = self.snapshot(cx);
        self.counters.push_pulls_sent += 1;
        self.send(
            out,
            to,
            SwimBody::PushPull {
                join,
                reply,
                members,
            },
            Vec::new(),
        );
    }

    /// This member's table for a push-pull: its own entry first, then the others (a
    /// random sample when there are more than `max_push_pull_entries`).
    fn snapshot(&mut self, cx: &mut Cx<'_>) -> Vec<MemberSnapshot> {
        self.rows(cx, |_| true)
    }

    /// The rows of members that pass `keep`: this member's own first (if it passes),
    /// then the others by id (a random sample when there are more than
    /// `max_push_pull_entries` in all).
    fn rows(&mut self, cx: &mut Cx<'_>, keep: impl Fn(NodeId) -> bool) -> Vec<MemberSnapshot> {
        let cap = self.config.max_push_pull_entries;
        let to_snap = |m: &Member| MemberSnapshot {
            member: m.id,
            address: m.address.clone(),
            incarnation: m.incarnation,
            state: m.state,
        };
        let mut v = Vec::new();
        if keep(self.id)
            && let Some(me) = self.members.get(&self.id)
        {
            v.push(to_snap(me));
        }
        let mut others: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.id != self.id && keep(m.id))
            .collect();
        if v.len() + others.len() > cap {
            self.counters.push_pull_truncated += 1;
            others.shuffle(cx.rng);
            others.truncate(cap.saturating_sub(v.len()));
            others.sort_by_key(|m| m.id);
        }
        v.reserve(others.len());
        v.extend(others.into_iter().map(to_snap));
        v
    }

    // ----- push-pull by digest (the crate docs) ------------------------------------

    /// One anti-entropy exchange with `to`: by digest, or a full push-pull when
    /// `push_pull_digest` is off.
    fn anti_entropy(&mut self, cx: &mut Cx<'_>, out: &mut Out<SwimMsg>, to: NodeId) {
        if self.config.push_pull_digest {
            self.send_digest(out, to);
        } else {
            self.send_push_pull(cx, out, to, false, false);
        }
    }

    /// Opens one anti-entropy exchange with `to` now, as a push-pull tick would.
    #[cfg(test)]
    pub(crate) fn anti_entropy_with(
        &mut self,
        to: NodeId,
        cx: &mut Cx<'_>,
        out: &mut Out<SwimMsg>,
    ) {
        self.anti_entropy(cx, out, to);
    }

    /// Step 1: the hash of this member's table.
    fn send_digest(&mut self, out: &mut Out<SwimMsg>, to: NodeId) {
        if self.syncs.len() >= MAX_OPEN_SYNCS {
            return;
        }
        let seq = self.next_seq();
        self.syncs.insert(seq, (to, SyncStage::AwaitBuckets));
        let root = self.digest();
        self.counters.digests_sent += 1;
        self.counters.push_pulls_sent += 1;
        self.send(out, to, SwimBody::SyncDigest { seq, root }, Vec::new());
    }

    /// Step 2: equal tables end the exchange; otherwise answer with this table hashed
    /// per bucket (about `√n` buckets of about `√n` rows).
    fn on_sync_digest(&mut self, out: &mut Out<SwimMsg>, from: NodeId, seq: u64, root: u64) {
        if root == self.digest() {
            self.counters.digests_matched += 1;
            return;
        }
        let count = digest_bucket_count(self.members.len());
        let hashes = bucket_hashes(self.members.values(), count);
        self.counters.push_pulls_sent += 1;
        self.send(out, from, SwimBody::SyncBuckets { seq, hashes }, Vec::new());
    }

    /// Step 3, at the member that sent the digest: send its rows of the buckets whose
    /// hashes differ and ask for the peer's. Only from the member the digest went to,
    /// once.
    fn on_sync_buckets(
        &mut self,
        cx: &mut Cx<'_>,
        out: &mut Out<SwimMsg>,
        from: NodeId,
        seq: u64,
        hashes: Vec<u64>,
    ) {
        let count = hashes.len();
        if self.syncs.get(&seq) != Some(&(from, SyncStage::AwaitBuckets))
            || !valid_bucket_count(count)
        {
            self.counters.syncs_refused += 1;
            return;
        }
        let mine = bucket_hashes(self.members.values(), count);
        let differ: Vec<u32> = (0..count)
            .filter(|&b| mine[b] != hashes[b])
            .map(|b| b as u32)
            .collect();
        if differ.is_empty() {
            // The tables changed since the digest and match now.
            self.syncs.remove(&seq);
            return;
        }
        self.syncs.insert(seq, (from, SyncStage::AwaitEntries));
        let mut wanted = vec![false; count];
        for &b in &differ {
            wanted[b as usize] = true;
        }
        let members = self.rows(cx, |id| wanted[bucket_of(id, count)]);
        self.counters.push_pulls_sent += 1;
        self.send(
            out,
            from,
            SwimBody::SyncEntries {
                seq,
                bucket_count: count as u32,
                buckets: differ,
                reply: false,
                members,
            },
            Vec::new(),
        );
    }

    /// Step 4: a request gets this member's rows of the buckets named (as they were
    /// before merging the request's rows, which the requester has) and is merged like
    /// a push-pull; a reply is merged if this member asked that peer for it.
    fn on_sync_entries(
        &mut self,
        cx: &mut Cx<'_>,
        out: &mut Out<SwimMsg>,
        from: NodeId,
        request: SyncRequest,
        members: Vec<MemberSnapshot>,
    ) {
        let SyncRequest {
            seq,
            bucket_count,
            buckets,
            reply,
        } = request;
        if reply {
            if self.syncs.get(&seq) != Some(&(from, SyncStage::AwaitEntries)) {
                self.counters.syncs_refused += 1;
                return;
            }
            self.syncs.remove(&seq);
            self.merge_state(cx, out, from, members);
            return;
        }
        let count = usize::try_from(bucket_count).unwrap_or(usize::MAX);
        let ascending = buckets.windows(2).all(|w| w[0] < w[1]);
        let in_range = buckets.last().is_none_or(|&b| (b as usize) < count);
        if !valid_bucket_count(count) || !ascending || !in_range {
            self.counters.syncs_refused += 1;
            return;
        }
        let mut wanted = vec![false; count];
        for &b in &buckets {
            wanted[b as usize] = true;
        }
        let rows = self.rows(cx, |id| wanted[bucket_of(id, count)]);
        self.merge_state(cx, out, from, members);
        self.counters.push_pulls_sent += 1;
        self.send(
            out,
            from,
            SwimBody::SyncEntries {
                seq,
                bucket_count,
                buckets: Vec::new(),
                reply: true,
                members: rows,
            },
            Vec::new(),
        );
    }

    /// Merges a remote table. A remote "dead" becomes a local suspicion (memberlist's
    /// `mergeState`): the member gets a chance to refute before this node believes it.
    fn merge_state(
        &mut self,
        cx: &mut Cx<'_>,
        out: &mut Out<SwimMsg>,
        from: NodeId,
        members: Vec<MemberSnapshot>,
    ) {
        let cap = self.config.max_push_pull_entries;
        if members.len() > cap {
            self.counters.updates_rejected += (members.len() - cap) as u64;
        }
        for m in members.into_iter().take(cap) {
            let u = match m.state {
                MemberState::Alive => Update::Alive {
                    member: m.member,
                    incarnation: m.incarnation,
                    address: m.address,
                },
                MemberState::Suspect | MemberState::Dead => Update::Suspect {
                    member: m.member,
                    incarnation: m.incarnation,
                    from,
                },
                MemberState::Left => Update::Left {
                    member: m.member,
                    incarnation: m.incarnation,
                },
            };
            if self.admit(&u) {
                self.apply(cx, out, u);
            }
        }
    }

    // ----- plumbing ----------------------------------------------------------------

    fn self_alive(&self) -> Update {
        Update::Alive {
            member: self.id,
            incarnation: self.incarnation,
            address: self.address.clone(),
        }
    }

    fn persist_incarnation(&mut self, out: &mut Out<SwimMsg>) {
        if self.config.persist_incarnation {
            out.persist(SWIM_STATE, encode_incarnation_record(self.incarnation));
            out.sync();
        }
    }

    /// Other members whose state passes `keep`, by id.
    fn others_in(&self, keep: impl Fn(MemberState) -> bool) -> Vec<NodeId> {
        self.members
            .values()
            .filter(|m| m.id != self.id && keep(m.state))
            .map(|m| m.id)
            .collect()
    }

    /// Reports a suspicion, death or leave just applied as the membership event of the
    /// same name, and gossips it on.
    fn announce(&mut self, out: &mut Out<SwimMsg>, u: Update) {
        let event = match u {
            Update::Suspect {
                member,
                incarnation,
                from,
            } => Some(MembershipEvent::Suspect {
                member,
                incarnation,
                from,
            }),
            Update::Dead {
                member,
                incarnation,
                from,
            } => Some(MembershipEvent::Dead {
                member,
                incarnation,
                from,
            }),
            Update::Left {
                member,
                incarnation,
            } => Some(MembershipEvent::Left {
                member,
                incarnation,
            }),
            // Alive becomes Joined or Alive depending on what was known before: the
            // caller reports it.
            Update::Alive { .. } => None,
        };
        if let Some(event) = event {
            self.emit(out, event);
        }
        self.enqueue(u);
    }

    fn enqueue(&mut self, u: Update) {
        let dropped = self.broadcasts.push(u, self.config.max_broadcast_queue);
        self.counters.broadcasts_dropped += dropped as u64;
    }

    fn emit(&mut self, out: &mut Out<SwimMsg>, e: MembershipEvent) {
        out.event(e.to_node_event());
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.pop_front();
            self.counters.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    /// Sends `body` to `to` with `prefix` and then as many queued updates as the
    /// piggyback budget allows (SWIM §4.1).
    fn send(&mut self, out: &mut Out<SwimMsg>, to: NodeId, body: SwimBody, prefix: Vec<Update>) {
        let mut updates = prefix;
        let used_bytes: usize = updates.iter().map(Update::encoded_len).sum();
        let count = self
            .config
            .max_piggyback_count
            .saturating_sub(updates.len());
        let bytes = self.config.max_piggyback_bytes.saturating_sub(used_bytes);
        let limit = self.config.retransmit_limit(self.live_count);
        let sel = self.broadcasts.select(count, bytes, limit, &mut updates);
        if sel.left_behind > 0 {
            self.counters.piggyback_full += 1;
        }
        let msg = SwimMsg { body, updates };
        if msg.is_anti_entropy() {
            self.counters.push_pull_bytes_sent += msg.body.wire_size() as u64;
        }
        self.counters.messages_sent += 1;
        self.counters.bytes_sent += msg.wire_size() as u64;
        out.send(to, msg);
    }
}

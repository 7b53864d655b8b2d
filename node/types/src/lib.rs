//! # kvlab-types
//!
//! The vocabulary every kvlab crate shares: node ids, virtual time in nanoseconds, the
//! context [`Cx`] a protocol runs in, the effects it emits ([`Effect`], collected in
//! [`Out`]), the [`Protocol`] trait, and the client API ([`ClientRequest`],
//! [`ClientResponse`]).
//!
//! **Must never depend on:** tokio, tarpc, any filesystem or network crate, or any other
//! kvlab crate. A protocol written against these types does no I/O, reads no clock and
//! spawns nothing, so the deterministic simulator and the async server run the very same
//! code.
//!
//! ```
//! use kvlab_types::*;
//! use std::time::Duration;
//!
//! // A protocol that answers every read with "not found" and pings node 2 once a second.
//! #[derive(Debug)]
//! struct Pinger;
//! impl Protocol for Pinger {
//!     type Msg = u8;
//!     type Config = ();
//!     fn boot(_cx: &mut Cx<'_>, _cfg: &(), _peers: &[NodeId], _rec: Recovery, out: &mut Out<u8>) -> Self {
//!         out.set_timer(TimerId::new(TimerSpace::Node, 0), Duration::from_secs(1));
//!         Pinger
//!     }
//!     fn on_msg(&mut self, _cx: &mut Cx<'_>, _from: NodeId, _msg: u8, _out: &mut Out<u8>) {}
//!     fn on_timer(&mut self, _cx: &mut Cx<'_>, t: TimerId, out: &mut Out<u8>) {
//!         out.send(NodeId(2), 1);
//!         out.set_timer(t, Duration::from_secs(1));
//!     }
//!     fn on_client(&mut self, _cx: &mut Cx<'_>, req: ClientRequest, out: &mut Out<u8>) {
//!         out.reply(req.id, Ok(OpOutput::Read(None)));
//!     }
//! }
//!
//! let mut rng = seeded_rng(7);
//! let mut cx = Cx::new(NodeId(1), Time::ZERO, &mut rng);
//! let mut out = Out::new();
//! let _p = Pinger::boot(&mut cx, &(), &[NodeId(1), NodeId(2)], Recovery::default(), &mut out);
//! assert_eq!(out.len(), 1);
//! ```

use std::fmt;
use std::time::Duration;

use rand::SeedableRng;
use serde::{Deserialize, Serialize};

pub mod client;
pub mod event;
pub mod order;
pub use client::*;
pub use event::{MembershipChange, NodeEvent, ReplicaCause, TxnFaultPoint, TxnRef, TxnStepKind};
pub use order::{Disposition, StepOrder};

/// The random number generator every protocol draws from. Seeded, portable and stable
/// across platforms, so a seed reproduces a run.
pub type Rng = rand::rngs::ChaCha8Rng;

/// Builds the crate-wide RNG from a seed.
pub fn seeded_rng(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// Derives an independent sub-seed from a parent seed and a label (SplitMix64 over both),
/// so that adding a consumer of randomness does not shift the streams of the others.
pub fn derive_seed(parent: u64, label: &str, index: u64) -> u64 {
    let mut h = parent ^ 0x9E37_79B9_7F4A_7C15;
    for b in label.bytes().chain(index.to_le_bytes()) {
        h = splitmix64(h ^ u64::from(b));
    }
    splitmix64(h)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Identifies a node of the cluster. Stable across restarts.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct NodeId(pub u32);

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}
impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// Identifies a replication group: one Raft group per partition of the key space, plus
/// the metadata group. A node's durable state is kept per group (each group has its own
/// snapshot; their log records share one write-ahead log).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct GroupId(pub u64);

impl GroupId {
    /// The group of systems that have only one (the single-group `raft` system, the
    /// baselines' logs).
    pub const DEFAULT: GroupId = GroupId(0);
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.0)
    }
}
impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.0)
    }
}

/// An instant of (virtual or real) time in nanoseconds since the start of the run.
///
/// Protocols see time only through [`Cx::now`]; in the simulator it is virtual and may
/// drift per node, in the server it is a monotonic clock.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Time(pub u64);

impl Time {
    /// The start of the run.
    pub const ZERO: Time = Time(0);
    /// The latest representable instant.
    pub const MAX: Time = Time(u64::MAX);

    /// Nanoseconds since the start of the run.
    pub fn as_nanos(self) -> u64 {
        self.0
    }
    /// Seconds since the start of the run, for reports.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
    /// Builds an instant from milliseconds since the start.
    pub fn from_millis(ms: u64) -> Time {
        Time(ms.saturating_mul(1_000_000))
    }
    /// Builds an instant from seconds since the start.
    pub fn from_secs(s: u64) -> Time {
        Time(s.saturating_mul(1_000_000_000))
    }
    /// `self + d`, saturating at [`Time::MAX`].
    pub fn saturating_add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
    /// The time elapsed since `earlier`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        self.saturating_add(d)
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6}s", self.as_secs_f64())
    }
}
impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6}s", self.as_secs_f64())
    }
}

/// Which component of a node armed a timer. A composed node routes a fired timer to
/// the component by its space, so components never carve up one number range by hand.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum TimerSpace {
    /// The node itself (its main tick).
    Node,
    /// Raft groups.
    Raft,
    /// Forwarded client requests waiting for the leader's answer.
    Forward,
    /// SWIM membership.
    Swim,
    /// Tests and examples.
    Test,
}

/// A timer chosen by a protocol: the component's space and an id within it. Setting a
/// timer with an id that is already armed re-arms it (the old deadline is forgotten).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct TimerId {
    /// The component that owns the timer.
    pub space: TimerSpace,
    /// The component's own id for it.
    pub id: u64,
}

impl TimerId {
    /// The timer `id` of component `space`.
    pub const fn new(space: TimerSpace, id: u64) -> TimerId {
        TimerId { space, id }
    }
}

/// The context of one protocol step: who I am, what time it is, and the only randomness
/// I may use.
#[derive(Debug)]
pub struct Cx<'a> {
    /// This node.
    pub id: NodeId,
    /// The node's local clock (it may drift from other nodes' clocks in simulation).
    pub now: Time,
    /// The node's seeded RNG. A protocol must draw randomness from nothing else.
    pub rng: &'a mut Rng,
    /// How many logs the driver spreads this node's groups over (`server.workers`;
    /// group `g` goes to log [`log_shard`]`(g, log_shards)`). 1 in simulation. A protocol
    /// may use it to scope its effects ([`Effect::Scope`]).
    pub log_shards: usize,
    /// Whether the driver calls [`Protocol::end_batch`] after this step and the others it
    /// takes together with it (the inputs already waiting): a protocol may then leave
    /// work common to the batch to that call — kvlab's Raft nodes drain their groups'
    /// `Ready`s there, so that the proposals of a batch share one AppendEntries per
    /// follower and one fsync. `false` in simulation and in direct calls, where
    /// `end_batch` never comes and each step finishes its own work.
    pub batched: bool,
}

impl<'a> Cx<'a> {
    /// A context for one step, with one log.
    pub fn new(id: NodeId, now: Time, rng: &'a mut Rng) -> Self {
        Cx {
            id,
            now,
            rng,
            log_shards: 1,
            batched: false,
        }
    }

    /// The same context for a driver that calls [`Protocol::end_batch`] after each batch
    /// of steps.
    pub fn batched(mut self) -> Self {
        self.batched = true;
        self
    }

    /// The same context for a driver with `shards` logs (at least 1).
    pub fn with_log_shards(mut self, shards: usize) -> Self {
        self.log_shards = shards.max(1);
        self
    }
}

/// The log shard of `group` among `shards` logs: `group % shards` (CockroachDB's static
/// modulo). Drivers write a group's records to this log; protocols name it in
/// [`Scope::Shard`].
pub fn log_shard(group: GroupId, shards: usize) -> usize {
    (group.0 % shards.max(1) as u64) as usize
}

/// What the effects after an [`Effect::Scope`] concern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// The whole node: the default at the start of every step.
    Node,
    /// Only the groups of one log shard ([`log_shard`]).
    Shard(u32),
}

/// What survived of one group's durable state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupRecovery {
    /// The group's latest snapshot, if one was saved.
    pub snapshot: Option<Vec<u8>>,
    /// The group's records persisted after that snapshot, in append order. A torn tail
    /// has already been cut off by the storage layer.
    pub records: Vec<Vec<u8>>,
}

/// What a node found in its durable storage when it (re)started, group by group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Every group that has a snapshot or records.
    pub groups: std::collections::BTreeMap<GroupId, GroupRecovery>,
}

impl Recovery {
    /// A recovery holding one group's state (tests, single-group systems).
    pub fn of_group(group: GroupId, snapshot: Option<Vec<u8>>, records: Vec<Vec<u8>>) -> Self {
        let mut groups = std::collections::BTreeMap::new();
        if snapshot.is_some() || !records.is_empty() {
            groups.insert(group, GroupRecovery { snapshot, records });
        }
        Recovery { groups }
    }

    /// One group's state (empty if nothing survived of it).
    pub fn group(&self, group: GroupId) -> GroupRecovery {
        self.groups.get(&group).cloned().unwrap_or_default()
    }

    /// Records replayed across every group.
    pub fn record_count(&self) -> usize {
        self.groups.values().map(|g| g.records.len()).sum()
    }

    /// Whether nothing durable was found.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// What an operator asks of a replication group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminAction {
    /// Add the node as a learner: it receives the log but does not vote.
    AddLearner(NodeId),
    /// Make the node a voter (promote a learner, or add a newcomer directly).
    AddVoter(NodeId),
    /// Remove the node (voter or learner) from the group.
    RemoveNode(NodeId),
    /// Hand leadership to the node.
    TransferLeader(NodeId),
    /// Node-level (the command's group is ignored): move every replica off this node,
    /// then leave the cluster (the composed `kvlab` system's graceful leave). Systems
    /// without a ring report it unsupported.
    Drain,
    /// Enter a joint configuration (Raft thesis §4.3) that makes `promote` (normally a
    /// caught-up learner) a voter and demotes voter `demote` to a learner — the wave-2
    /// operator step `EnterJoint{promote Y, demote X}`. Until the group leaves the joint
    /// configuration, decisions need a majority of the old and of the new voters.
    EnterJoint {
        /// The node that becomes a voter.
        promote: NodeId,
        /// The voter that becomes a learner once the joint configuration is left.
        demote: NodeId,
        /// Whether the leader leaves the joint configuration by itself once it is
        /// committed (otherwise send [`AdminAction::LeaveJoint`]).
        auto_leave: bool,
    },
    /// Leave the joint configuration: only the new voters vote from then on.
    LeaveJoint,
}

/// An operator's command to a node, delivered by a driver's admin endpoint
/// ([`Protocol::on_admin`]): a membership change or a leadership transfer of one of the
/// node's replication groups. A protocol answers with events (`config_changed`,
/// `admin_refused`, …), never with a client reply: an admin command has no client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AdminCommand {
    /// The group the command is for.
    pub group: GroupId,
    /// What to do.
    pub action: AdminAction,
}

impl AdminCommand {
    /// `action` for the [`GroupId::DEFAULT`] group.
    pub fn default_group(action: AdminAction) -> Self {
        AdminCommand {
            group: GroupId::DEFAULT,
            action,
        }
    }

    /// The node a single-node command is about (`None` for the joint-consensus
    /// commands, which name two nodes or none, and for the node-level `Drain`).
    pub fn target(self) -> Option<NodeId> {
        match self.action {
            AdminAction::AddLearner(n)
            | AdminAction::AddVoter(n)
            | AdminAction::RemoveNode(n)
            | AdminAction::TransferLeader(n) => Some(n),
            AdminAction::Drain | AdminAction::EnterJoint { .. } | AdminAction::LeaveJoint => None,
        }
    }
}

/// One effect a protocol asks its driver to carry out.
///
/// Drivers execute the effects of one step **in order**, with one rule that makes
/// durability an effect: every [`Effect::Send`] and [`Effect::Reply`] that comes after a
/// [`Effect::Sync`] is held back until that sync is durable. A protocol that must persist
/// before it speaks (Raft's term, vote, log) emits `Persist…, Sync, Send…`.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect<M> {
    /// Deliver `msg` to node `to` (best effort: the network may drop, delay, duplicate
    /// or reorder it).
    Send {
        /// Destination node.
        to: NodeId,
        /// The message.
        msg: M,
    },
    /// Fire [`Protocol::on_timer`] with `timer` after `after` of the node's local time,
    /// replacing any pending timer with the same id.
    SetTimer {
        /// Which timer.
        timer: TimerId,
        /// Delay on the node's local clock.
        after: Duration,
    },
    /// Disarm `timer` if it is pending.
    CancelTimer {
        /// Which timer.
        timer: TimerId,
    },
    /// Append a record of `group` to the node's write-ahead log. Not durable until a
    /// later [`Effect::Sync`] completes; a crash before that may lose it.
    Persist {
        /// The group whose record it is (recovery returns records by group).
        group: GroupId,
        /// The record.
        record: Vec<u8>,
    },
    /// Make every record persisted so far durable; effects after it wait for it.
    ///
    /// Syncs of one node complete in the order they were issued: a `Sync` completes only
    /// after every earlier `Sync` of that node. A `Sync` with nothing new to flush is
    /// therefore a barrier — a read that must not be answered before earlier writes are
    /// durable emits `Sync` and then its `Reply`.
    Sync,
    /// Durably replace `group`'s snapshot with `data`; the driver then discards every
    /// record **of that group** persisted before this effect (other groups' records are
    /// kept). Durable before later effects run.
    SaveSnapshot {
        /// The group.
        group: GroupId,
        /// The snapshot.
        data: Vec<u8>,
    },
    /// Answer a client request. The driver delivers it to the client that sent `id`.
    Reply(ClientResponse),
    /// Report an event for `events.jsonl`.
    Event(NodeEvent),
    /// The effects that follow, up to the next `Scope` or the end of the step, concern
    /// only the groups of one log shard (`Scope::Shard(i)`), or the whole node
    /// (`Scope::Node`, the default). In a shard's scope a protocol persists only that
    /// shard's groups, and sends and replies only what depends on no other group's
    /// durable state. A driver with several logs then makes a `Sync` in the scope a
    /// barrier for that shard's log alone, and lets a `Send` or `Reply` in it wait for
    /// that shard's barriers alone: it may leave before held effects of other scopes
    /// (effects of one scope keep their order). A driver with one log, and the
    /// simulator, treat it as a no-op. Emitted only when [`Cx::log_shards`] > 1.
    Scope(Scope),
}

impl<M> Effect<M> {
    /// The same effect with its message (if it carries one) turned into another type:
    /// how a composed node wraps a component's messages into its own.
    pub fn map_msg<N>(self, f: impl FnOnce(M) -> N) -> Effect<N> {
        match self {
            Effect::Send { to, msg } => Effect::Send { to, msg: f(msg) },
            Effect::SetTimer { timer, after } => Effect::SetTimer { timer, after },
            Effect::CancelTimer { timer } => Effect::CancelTimer { timer },
            Effect::Persist { group, record } => Effect::Persist { group, record },
            Effect::Sync => Effect::Sync,
            Effect::SaveSnapshot { group, data } => Effect::SaveSnapshot { group, data },
            Effect::Reply(r) => Effect::Reply(r),
            Effect::Event(e) => Effect::Event(e),
            Effect::Scope(s) => Effect::Scope(s),
        }
    }
}

/// The output buffer of one protocol step: the effects, in the order they were pushed.
#[derive(Clone, Debug)]
pub struct Out<M> {
    effects: Vec<Effect<M>>,
}

impl<M> Default for Out<M> {
    fn default() -> Self {
        Out {
            effects: Vec::new(),
        }
    }
}

impl<M> Out<M> {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sends `msg` to `to`.
    pub fn send(&mut self, to: NodeId, msg: M) {
        self.effects.push(Effect::Send { to, msg });
    }
    /// Arms (or re-arms) `timer` to fire after `after`.
    pub fn set_timer(&mut self, timer: TimerId, after: Duration) {
        self.effects.push(Effect::SetTimer { timer, after });
    }
    /// Disarms `timer`.
    pub fn cancel_timer(&mut self, timer: TimerId) {
        self.effects.push(Effect::CancelTimer { timer });
    }
    /// Appends a WAL record of `group` (not yet durable).
    pub fn persist(&mut self, group: GroupId, record: Vec<u8>) {
        self.effects.push(Effect::Persist { group, record });
    }
    /// Makes all persisted records durable before any later effect.
    pub fn sync(&mut self) {
        self.effects.push(Effect::Sync);
    }
    /// Replaces `group`'s snapshot durably and discards that group's older records.
    pub fn save_snapshot(&mut self, group: GroupId, data: Vec<u8>) {
        self.effects.push(Effect::SaveSnapshot { group, data });
    }
    /// Answers client request `id`.
    pub fn reply(&mut self, id: RequestId, result: Result<OpOutput, ClientError>) {
        self.effects
            .push(Effect::Reply(ClientResponse { id, result }));
    }
    /// Reports an event.
    pub fn event(&mut self, event: NodeEvent) {
        self.effects.push(Effect::Event(event));
    }
    /// Pushes any effect.
    pub fn push(&mut self, effect: Effect<M>) {
        self.effects.push(effect);
    }
    /// Number of effects.
    pub fn len(&self) -> usize {
        self.effects.len()
    }
    /// Whether no effect was emitted.
    pub fn is_empty(&self) -> bool {
        self.effects.is_empty()
    }
    /// The effects so far.
    pub fn effects(&self) -> &[Effect<M>] {
        &self.effects
    }
    /// Takes the effects out, leaving the buffer empty (and its allocation reusable).
    pub fn drain(&mut self) -> std::vec::Drain<'_, Effect<M>> {
        self.effects.drain(..)
    }

    /// Moves every effect into `into`, in order, wrapping messages with `wrap`: how a
    /// composed node runs a component on a scratch buffer of the component's message
    /// type and keeps its effects' order.
    pub fn drain_into<N>(&mut self, into: &mut Out<N>, mut wrap: impl FnMut(M) -> N) {
        into.effects
            .extend(self.effects.drain(..).map(|e| e.map_msg(&mut wrap)));
    }
}

/// A message type a protocol can put on the wire.
pub trait Message: Clone + fmt::Debug + Serialize + for<'de> Deserialize<'de> + 'static {
    /// Encoded size in bytes, for traffic metrics. The default counts what postcard would
    /// encode, without allocating the encoding.
    fn wire_size(&self) -> usize {
        postcard::serialize_with_flavor(self, postcard::ser_flavors::Size::default()).unwrap_or(0)
    }
}

impl<T> Message for T where T: Clone + fmt::Debug + Serialize + for<'de> Deserialize<'de> + 'static {}

/// A sans-IO protocol: it reacts to a start, a message, a timer or a client request by
/// pushing effects into `out`. It never sleeps, sends, reads a clock or touches a disk.
///
/// A driver (the simulator, or the async server) owns the protocol value and carries out
/// the effects; see [`Effect`] for the ordering contract.
pub trait Protocol: Sized + fmt::Debug {
    /// The messages nodes exchange.
    type Msg: Message;
    /// Static configuration, the same on every node of a run.
    type Config: Clone + fmt::Debug;

    /// Whether this protocol may send or reply right after a `Persist` without a `Sync`
    /// between them (revealing state a crash may lose). Only deliberately broken
    /// baselines say yes; for every other protocol the executors assert it never happens
    /// (see [`StepOrder`]).
    const SENDS_UNSYNCED_STATE: bool = false;

    /// Starts (or restarts, after a crash) the node `cx.id` of the cluster `peers`
    /// (which includes `cx.id`) from what survived in durable storage.
    fn boot(
        cx: &mut Cx<'_>,
        config: &Self::Config,
        peers: &[NodeId],
        recovered: Recovery,
        out: &mut Out<Self::Msg>,
    ) -> Self;

    /// Handles a message from `from`.
    fn on_msg(&mut self, cx: &mut Cx<'_>, from: NodeId, msg: Self::Msg, out: &mut Out<Self::Msg>);

    /// Handles a timer that fired.
    fn on_timer(&mut self, cx: &mut Cx<'_>, timer: TimerId, out: &mut Out<Self::Msg>);

    /// Handles a client request. Every request eventually gets exactly one
    /// [`Effect::Reply`] unless the node crashes or the client gives up first.
    fn on_client(&mut self, cx: &mut Cx<'_>, req: ClientRequest, out: &mut Out<Self::Msg>);

    /// Ends a batch of steps taken with [`Cx::batched`]: the driver calls it once after
    /// the inputs it handled together (never in simulation). A protocol that left work
    /// to it does it here; the default does nothing.
    fn end_batch(&mut self, cx: &mut Cx<'_>, out: &mut Out<Self::Msg>) {
        let _ = (cx, out);
    }

    /// Handles an operator's command. Protocols without membership changes keep this
    /// default, which changes nothing and reports an `admin_unsupported` event, so a
    /// driver can send any command to any protocol.
    fn on_admin(&mut self, cx: &mut Cx<'_>, cmd: AdminCommand, out: &mut Out<Self::Msg>) {
        let _ = cx;
        out.event(NodeEvent::AdminUnsupported { command: cmd });
    }

    /// Splits `msg` into the part that belongs to `layer` and the rest (either may be
    /// absent), so that a fault can aim at one layer of a node's traffic (kvlab-sim's
    /// layered rules: "drop only SWIM between these halves", "partition only group 7").
    /// A protocol without layers keeps every message whole, in no layer (this default):
    /// a layered fault never touches its traffic.
    fn split_layer(msg: Self::Msg, layer: Layer) -> (Option<Self::Msg>, Option<Self::Msg>) {
        let _ = layer;
        (None, Some(msg))
    }
}

/// A layer of a node's traffic that a fault can aim at alone ([`Protocol::split_layer`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// Membership and failure detection (SWIM).
    Swim,
    /// One replication group's Raft traffic.
    Group(GroupId),
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Swim => write!(f, "swim"),
            Layer::Group(g) => write!(f, "group {}", g.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ_by_label_and_index_and_are_stable() {
        let a = derive_seed(1, "net", 0);
        assert_eq!(a, derive_seed(1, "net", 0));
        assert_ne!(a, derive_seed(1, "net", 1));
        assert_ne!(a, derive_seed(1, "node", 0));
        assert_ne!(a, derive_seed(2, "net", 0));
    }

    #[test]
    fn time_arithmetic_saturates() {
        assert_eq!(Time::MAX + Duration::from_secs(1), Time::MAX);
        assert_eq!(Time(5).saturating_since(Time(9)), Duration::ZERO);
        assert_eq!(Time::from_millis(3).as_nanos(), 3_000_000);
    }

    #[test]
    fn default_on_admin_reports_admin_unsupported() {
        #[derive(Debug)]
        struct Mute;
        impl Protocol for Mute {
            type Msg = u8;
            type Config = ();
            fn boot(_: &mut Cx<'_>, _: &(), _: &[NodeId], _: Recovery, _: &mut Out<u8>) -> Self {
                Mute
            }
            fn on_msg(&mut self, _: &mut Cx<'_>, _: NodeId, _: u8, _: &mut Out<u8>) {}
            fn on_timer(&mut self, _: &mut Cx<'_>, _: TimerId, _: &mut Out<u8>) {}
            fn on_client(&mut self, _: &mut Cx<'_>, _: ClientRequest, _: &mut Out<u8>) {}
        }
        let mut rng = seeded_rng(1);
        let mut cx = Cx::new(NodeId(1), Time::ZERO, &mut rng);
        let mut out = Out::new();
        let cmd = AdminCommand::default_group(AdminAction::AddLearner(NodeId(4)));
        Mute.on_admin(&mut cx, cmd, &mut out);
        match out.effects() {
            [Effect::Event(NodeEvent::AdminUnsupported { command })] => assert_eq!(*command, cmd),
            other => panic!("{other:?}"),
        }
        let remove = AdminCommand::default_group(AdminAction::RemoveNode(NodeId(3)));
        assert_eq!(remove.target(), Some(NodeId(3)));
        assert_eq!(
            AdminCommand::default_group(AdminAction::LeaveJoint).target(),
            None
        );
    }

    #[test]
    fn out_keeps_effect_order() {
        let mut out: Out<u8> = Out::new();
        out.persist(GroupId::DEFAULT, vec![1]);
        out.sync();
        out.send(NodeId(2), 9);
        let mut wrapped: Out<u16> = Out::new();
        out.drain_into(&mut wrapped, |m| u16::from(m) * 100);
        assert!(out.is_empty());
        let kinds: Vec<_> = wrapped
            .drain()
            .map(|e| match e {
                Effect::Persist { .. } => "persist",
                Effect::Send { msg: 900, .. } => "send",
                Effect::Sync => "sync",
                Effect::Send { .. } => "send",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["persist", "sync", "send"]);
        assert!(out.is_empty());
    }
}

//! What SWIM nodes say to each other: a body (ping, ack, ping-req, nack, push-pull,
//! gossip) plus piggybacked membership updates.

use kvlab_types::NodeId;
use serde::{Deserialize, Serialize};

/// The state of a member in a membership table (SWIM §4.2, plus `Left` for a graceful
/// leave as in memberlist).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Believed to be running.
    Alive,
    /// Missed a probe; will be declared dead unless it refutes in time.
    Suspect,
    /// Declared failed (SWIM's "confirm").
    Dead,
    /// Left on purpose.
    Left,
}

impl MemberState {
    /// Whether the member is still probed and counted in `n` (alive or suspect).
    pub fn is_live(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }
    /// The lower-case name used in events.
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        }
    }
}

/// One membership update, the unit of dissemination (SWIM §4.1–4.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    /// `member` is alive at `incarnation`, reachable at `address`. Overrides suspect and
    /// alive of a lower incarnation; also dead or left of a lower incarnation, which is
    /// how a restarted member rejoins.
    Alive {
        /// The member.
        member: NodeId,
        /// Its incarnation number.
        incarnation: u64,
        /// Its opaque address (may change across restarts).
        address: String,
    },
    /// `from` suspects `member` at `incarnation`.
    Suspect {
        /// The member.
        member: NodeId,
        /// The incarnation suspected.
        incarnation: u64,
        /// Who suspects it (Lifeguard counts distinct suspecters as confirmations).
        from: NodeId,
    },
    /// `from` declared `member` dead at `incarnation` (SWIM's "confirm").
    Dead {
        /// The member.
        member: NodeId,
        /// The incarnation declared dead.
        incarnation: u64,
        /// Who declared it.
        from: NodeId,
    },
    /// `member` left the cluster on purpose at `incarnation`.
    Left {
        /// The member.
        member: NodeId,
        /// Its incarnation when leaving.
        incarnation: u64,
    },
}

impl Update {
    /// The member the update is about.
    pub fn member(&self) -> NodeId {
        match self {
            Update::Alive { member, .. }
            | Update::Suspect { member, .. }
            | Update::Dead { member, .. }
            | Update::Left { member, .. } => *member,
        }
    }
    /// The incarnation the update carries.
    pub fn incarnation(&self) -> u64 {
        match self {
            Update::Alive { incarnation, .. }
            | Update::Suspect { incarnation, .. }
            | Update::Dead { incarnation, .. }
            | Update::Left { incarnation, .. } => *incarnation,
        }
    }
    /// Encoded size in bytes (postcard), for the piggyback byte budget.
    pub fn encoded_len(&self) -> usize {
        postcard::to_allocvec(self)
            .map(|v| v.len())
            .unwrap_or(usize::MAX)
    }
}

/// One member's entry in a push-pull state exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSnapshot {
    /// The member.
    pub member: NodeId,
    /// Its address as the sender knows it.
    pub address: String,
    /// Its incarnation as the sender knows it.
    pub incarnation: u64,
    /// Its state as the sender knows it.
    pub state: MemberState,
}

/// What a message asks for. Every message also carries piggybacked [`Update`]s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwimBody {
    /// A direct probe of `target` (SWIM §3.1). Answered by an [`SwimBody::Ack`] with the
    /// same `seq`.
    Ping {
        /// Sequence number chosen by the prober.
        seq: u64,
        /// Who the prober means to probe; a mismatch is dropped.
        target: NodeId,
    },
    /// The answer to a ping, possibly forwarded by a ping-req relay.
    Ack {
        /// The ping's sequence number (the origin's, when forwarded).
        seq: u64,
    },
    /// Asks the receiver to probe `target` and forward the ack (SWIM §3.1).
    PingReq {
        /// The origin's sequence number, echoed in the forwarded ack or nack.
        seq: u64,
        /// The member to probe.
        target: NodeId,
    },
    /// A relay heard nothing from the target in time (Lifeguard §IV-A): it proves the
    /// relay, and therefore the origin's own network, is working.
    Nack {
        /// The origin's sequence number.
        seq: u64,
    },
    /// Full state exchange: the join handshake, anti-entropy with a member that knows
    /// no live member, and all anti-entropy when `push_pull_digest` is off.
    PushPull {
        /// The sender is joining through the receiver.
        join: bool,
        /// This is the answer to a push-pull (do not answer it).
        reply: bool,
        /// The sender's membership table (bounded by `max_push_pull_entries`).
        members: Vec<MemberSnapshot>,
    },
    /// Nothing but the piggybacked updates (used to announce a leave at once).
    Gossip,
    /// Push-pull by digest, step 1 (the crate docs, "Push-pull by digest"): the hash of
    /// the sender's whole table. A receiver whose table hashes the same has nothing to
    /// exchange and does not answer; otherwise it answers [`SwimBody::SyncBuckets`].
    SyncDigest {
        /// Names the exchange; the later steps echo it.
        seq: u64,
        /// The hash of the sender's table.
        root: u64,
    },
    /// Step 2: the tables differ; the sender's table hashed per bucket. Accepted only
    /// from the member a [`SwimBody::SyncDigest`] with this `seq` was sent to, once.
    SyncBuckets {
        /// The digest's `seq`.
        seq: u64,
        /// One hash per bucket; the length (a power of two, at most
        /// [`crate::MAX_DIGEST_BUCKETS`]) is the bucket count.
        hashes: Vec<u64>,
    },
    /// Step 3 (`reply: false`): the sender's rows of the buckets whose hashes differ,
    /// asking for the receiver's rows of the same buckets; step 4 (`reply: true`): those
    /// rows, accepted only from the member step 3 went to.
    SyncEntries {
        /// The digest's `seq`.
        seq: u64,
        /// The bucket count the bucket indices refer to.
        bucket_count: u32,
        /// The buckets that differ, ascending (empty in a reply).
        buckets: Vec<u32>,
        /// This is step 4 (do not answer it).
        reply: bool,
        /// The sender's rows of those buckets (bounded by `max_push_pull_entries`).
        members: Vec<MemberSnapshot>,
    },
}

/// A SWIM message: a body and piggybacked updates (SWIM §4.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwimMsg {
    /// What the message asks for.
    pub body: SwimBody,
    /// Membership updates riding along (bounded by the piggyback limits).
    pub updates: Vec<Update>,
}

impl SwimMsg {
    /// The message kind, for counters and traces.
    pub fn kind(&self) -> &'static str {
        match self.body {
            SwimBody::Ping { .. } => "ping",
            SwimBody::Ack { .. } => "ack",
            SwimBody::PingReq { .. } => "ping_req",
            SwimBody::Nack { .. } => "nack",
            SwimBody::PushPull { .. } => "push_pull",
            SwimBody::Gossip => "gossip",
            SwimBody::SyncDigest { .. } => "sync_digest",
            SwimBody::SyncBuckets { .. } => "sync_buckets",
            SwimBody::SyncEntries { .. } => "sync_entries",
        }
    }

    /// Whether this is anti-entropy (a push-pull, or a step of push-pull by digest).
    pub fn is_anti_entropy(&self) -> bool {
        matches!(
            self.body,
            SwimBody::PushPull { .. }
                | SwimBody::SyncDigest { .. }
                | SwimBody::SyncBuckets { .. }
                | SwimBody::SyncEntries { .. }
        )
    }
}

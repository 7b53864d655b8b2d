//! Entries of the membership table, the events a table change produces, and the
//! counters a node keeps for metrics.

use kvlab_types::{NodeEvent, NodeId, Time};
use serde::{Deserialize, Serialize};

use crate::MemberState;

/// One row of a node's membership table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member.
    pub id: NodeId,
    /// Its opaque address; a restarted member may come back with another one.
    pub address: String,
    /// Its incarnation number as this node knows it (SWIM §4.2).
    pub incarnation: u64,
    /// Its state as this node believes it.
    pub state: MemberState,
    /// When (this node's clock) the state last changed.
    pub state_since: Time,
}

/// A change of the membership table, for the rest of the node (a ring reacts to these)
/// and for `events.jsonl` (as `member_*` events with the same fields).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipEvent {
    /// A member this node did not know is alive.
    Joined {
        /// The member.
        member: NodeId,
        /// Its incarnation.
        incarnation: u64,
        /// Its address.
        address: String,
    },
    /// A member is suspected.
    Suspect {
        /// The member.
        member: NodeId,
        /// The incarnation suspected.
        incarnation: u64,
        /// Who suspected it first.
        from: NodeId,
    },
    /// A suspected, dead or left member is alive again (it refuted, or rejoined).
    Alive {
        /// The member.
        member: NodeId,
        /// Its new incarnation.
        incarnation: u64,
    },
    /// A member was declared dead.
    Dead {
        /// The member.
        member: NodeId,
        /// The incarnation declared dead.
        incarnation: u64,
        /// Who declared it.
        from: NodeId,
    },
    /// A member left on purpose.
    Left {
        /// The member.
        member: NodeId,
        /// Its incarnation when leaving.
        incarnation: u64,
    },
    /// A member came back at another address (with a higher incarnation).
    AddressChanged {
        /// The member.
        member: NodeId,
        /// The incarnation that brought the new address.
        incarnation: u64,
        /// The address it had.
        old_address: String,
        /// The address it has now.
        address: String,
    },
    /// A dead or left member was forgotten after `dead_reclaim_ms`.
    Reclaimed {
        /// The member.
        member: NodeId,
        /// Its last known incarnation.
        incarnation: u64,
    },
}

impl MembershipEvent {
    /// The `events.jsonl` kind: `member_joined`, `member_suspect`, `member_alive`,
    /// `member_dead`, `member_left`, `member_address_changed`, `member_reclaimed`.
    pub fn kind(&self) -> &'static str {
        match self {
            MembershipEvent::Joined { .. } => "member_joined",
            MembershipEvent::Suspect { .. } => "member_suspect",
            MembershipEvent::Alive { .. } => "member_alive",
            MembershipEvent::Dead { .. } => "member_dead",
            MembershipEvent::Left { .. } => "member_left",
            MembershipEvent::AddressChanged { .. } => "member_address_changed",
            MembershipEvent::Reclaimed { .. } => "member_reclaimed",
        }
    }
    /// The member the event is about.
    pub fn member(&self) -> NodeId {
        match self {
            MembershipEvent::Joined { member, .. }
            | MembershipEvent::Suspect { member, .. }
            | MembershipEvent::Alive { member, .. }
            | MembershipEvent::Dead { member, .. }
            | MembershipEvent::Left { member, .. }
            | MembershipEvent::AddressChanged { member, .. }
            | MembershipEvent::Reclaimed { member, .. } => *member,
        }
    }
    /// The node event this is, for `events.jsonl`.
    pub fn to_node_event(&self) -> NodeEvent {
        match self.clone() {
            MembershipEvent::Joined {
                member,
                incarnation,
                address,
            } => NodeEvent::MemberJoined {
                member,
                incarnation,
                address,
            },
            MembershipEvent::Suspect {
                member,
                incarnation,
                from,
            } => NodeEvent::MemberSuspect {
                member,
                incarnation,
                from,
            },
            MembershipEvent::Alive {
                member,
                incarnation,
            } => NodeEvent::MemberAlive {
                member,
                incarnation,
            },
            MembershipEvent::Dead {
                member,
                incarnation,
                from,
            } => NodeEvent::MemberDead {
                member,
                incarnation,
                from,
            },
            MembershipEvent::Left {
                member,
                incarnation,
            } => NodeEvent::MemberLeft {
                member,
                incarnation,
            },
            MembershipEvent::AddressChanged {
                member,
                incarnation,
                old_address,
                address,
            } => NodeEvent::MemberAddressChanged {
                member,
                incarnation,
                old_address,
                address,
            },
            MembershipEvent::Reclaimed {
                member,
                incarnation,
            } => NodeEvent::MemberReclaimed {
                member,
                incarnation,
            },
        }
    }
}

/// What a node has done, for metrics. Every counted drop of this crate is here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwimCounters {
    /// Pings sent (direct probes and probes on behalf of a ping-req).
    pub pings_sent: u64,
    /// Acks sent (answers and forwarded acks).
    pub acks_sent: u64,
    /// Ping-reqs sent.
    pub ping_reqs_sent: u64,
    /// Nacks sent as a ping-req relay.
    pub nacks_sent: u64,
    /// Anti-entropy messages sent: push-pulls (requests and replies, joins included)
    /// and every step of push-pull by digest.
    pub push_pulls_sent: u64,
    /// Encoded bytes of the anti-entropy messages sent, without the updates
    /// piggybacked on them (gossip's cost, bounded per message): what push-pull itself
    /// costs.
    pub push_pull_bytes_sent: u64,
    /// Push-pull exchanges this member started with a digest.
    pub digests_sent: u64,
    /// Digests received that matched this member's table: the whole exchange was that
    /// one message.
    pub digests_matched: u64,
    /// Bare gossip messages sent (leave announcements).
    pub gossips_sent: u64,
    /// All messages sent.
    pub messages_sent: u64,
    /// Encoded bytes of all messages sent.
    pub bytes_sent: u64,
    /// All messages received.
    pub messages_received: u64,
    /// Encoded bytes of all messages received.
    pub bytes_received: u64,
    /// Probes this node started (one per protocol period with a target).
    pub probes_started: u64,
    /// Probes that got no ack within the period.
    pub probes_failed: u64,
    /// Acks and nacks that matched no probe or relay (late, duplicated, or not from the
    /// member probed or a relay asked).
    pub stale_acks: u64,
    /// Nacks received for this node's probes.
    pub nacks_received: u64,
    /// Suspicions this node raised itself (alive → suspect by its own probe).
    pub suspicions_raised: u64,
    /// Independent suspicion confirmations recorded (Lifeguard §IV-B).
    pub suspicion_confirmations: u64,
    /// Times this node refuted a suspicion (or a stale claim) about itself.
    pub refutations: u64,
    /// Members this node declared dead when their suspicion timed out.
    pub deaths_declared: u64,
    /// Messages whose piggyback budget was full while updates waited.
    pub piggyback_full: u64,
    /// Updates dropped from the full broadcast queue.
    pub broadcasts_dropped: u64,
    /// Push-pull messages cut to `max_push_pull_entries`.
    pub push_pull_truncated: u64,
    /// Steps of push-pull by digest refused: bucket hashes or rows from a member no
    /// open exchange asked (a wrong `seq`, a wrong sender, a step repeated), a bucket
    /// count that is not a power of two at most `MAX_DIGEST_BUCKETS`, bucket indices
    /// out of range or not ascending. Zero without forged or corrupted messages.
    pub syncs_refused: u64,
    /// Ping-reqs refused because `max_pending_relays` relays were running.
    pub relays_refused: u64,
    /// Incoming updates ignored (address too long, beyond `MAX_INCOMING_UPDATES`).
    pub updates_rejected: u64,
    /// Incoming updates refused as implausible: an incarnation above
    /// `MAX_INCARNATION` or more than `MAX_INCARNATION_JUMP` ahead of the member's
    /// known one, or a new member beyond `MAX_MEMBERS`. Zero without forged or
    /// corrupted messages.
    pub updates_refused: u64,
    /// Refutations that could not happen because this member's incarnation is at
    /// `MAX_INCARNATION`.
    pub refutations_exhausted: u64,
    /// Pings meant for another member (stale identity).
    pub misdirected: u64,
    /// Alive updates at the same incarnation with another address (ignored).
    pub address_conflicts: u64,
    /// Membership events dropped because nobody drained them.
    pub events_dropped: u64,
}

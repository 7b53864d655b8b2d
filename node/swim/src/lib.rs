//! # kvlab-swim
//!
//! SWIM membership and failure detection (Das, Gupta, Motivala, DSN 2002) with the
//! Lifeguard refinements (Dadgar, Phillips, Currey, DSN 2018), sans-IO. A node probes
//! one member per protocol period (round-robin over a shuffled list), asks `k` others to
//! probe indirectly when the direct ack is late, suspects a member that stays silent,
//! declares it dead when the suspicion is not refuted in time, and disseminates every
//! change by piggybacking on its pings and acks; push-pull anti-entropy repairs what
//! gossip missed (and heals partitions). Lifeguard adds a local health multiplier, a
//! suspicion timeout that shrinks with independent confirmations, and buddy refutation.
//!
//! **Must never depend on:** tokio, tarpc, sockets, files, the clock, unseeded
//! randomness, or another kvlab protocol crate. Randomness comes from [`kvlab_types::Cx`]
//! only; every map is ordered.
//!
//! Two ways to use it:
//! * [`Swim`]: the core, with `handle_msg` / `handle_timer` emitting into
//!   `Out<SwimMsg>`, for a composed node (route timers with [`Swim::owns_timer`], read
//!   changes with [`Swim::drain_events`]).
//! * [`SwimNode`]: a [`kvlab_types::Protocol`] that runs SWIM alone.
//!
//! ```
//! use kvlab_swim::*;
//! use kvlab_types::*;
//!
//! let config = SwimConfig { seeds: vec![NodeId(1)], ..SwimConfig::default() };
//! config.validate().unwrap();
//! let mut rng = seeded_rng(1);
//! let mut cx = Cx::new(NodeId(2), Time::ZERO, &mut rng);
//! let mut out = Out::new();
//! let mut swim = Swim::new(NodeId(2), "10.0.0.2:7946".into(), 0, config).unwrap();
//! swim.start(&mut cx, &mut out);
//! // Persist + Sync of the incarnation, two timers, and a join push-pull to the seed.
//! let joins = out.effects().iter().filter(|e| matches!(e,
//!     Effect::Send { to: NodeId(1), msg: SwimMsg { body: SwimBody::PushPull { join: true, .. }, .. } })).count();
//! assert_eq!(joins, 1);
//! assert_eq!(swim.live_count(), 1);
//! ```
//!
//! ## Hostile input
//!
//! Every update a message carries (piggybacked, or a push-pull entry) is checked
//! before it touches the table: an incarnation above [`MAX_INCARNATION`], or more than
//! [`MAX_INCARNATION_JUMP`] ahead of what this node knows of itself or of a member it
//! tracks as live, an address longer than [`MAX_ADDRESS_BYTES`], and a new member
//! beyond [`MAX_MEMBERS`] are refused and counted in [`SwimCounters`]. So no update can
//! overflow an incarnation, grow the table without bound, or push a live member's
//! incarnation to where it can no longer refute, in one step; only acks from the member
//! probed and nacks from the relays asked count. SWIM is not Byzantine fault tolerant:
//! a plausible forged suspicion still has to be refuted like a real one, and forged
//! deaths heal like a partition does (push-pull with dead members and forgotten seeds).
//!
//! ## Departures from the papers (and why)
//!
//! * Alive with a higher incarnation overrides dead and left (SWIM §4.2 makes "confirm"
//!   final). Like memberlist, this lets a restarted member rejoin under the same id.
//!   In exchange, dead and left override only incarnations up to their own.
//! * A remote "dead" learnt through push-pull becomes a local suspicion (memberlist), so
//!   a stale view from the other side of a partition cannot kill a live member at once.
//! * Push-pull also contacts one random dead member per interval (like Serf's reconnect)
//!   — without it, the two sides of a healed partition that declared each other dead
//!   would never talk again. Once a dead member is reclaimed (`dead_reclaim_ms`),
//!   push-pull also contacts a random seed it no longer knows, so sides that forgot
//!   each other meet again through the seeds.
//! * A refuting member sends its refutation at once (a `Gossip` message) to its accuser
//!   and `indirect_probes` random members instead of waiting for its next probe: under
//!   Lifeguard's local health its probes may be several periods apart.
//! * Optional gossip rounds (`gossip_interval_ms`, memberlist's `GossipInterval`): while
//!   updates wait, they also go to `gossip_fanout` random members. Off by default (pure
//!   SWIM piggybacking, constant load); memberlist — which the Lifeguard paper measured
//!   — runs them every 200 ms.
//! * The push-pull interval grows with `log2 n` above `push_pull_scale_threshold`
//!   members (memberlist's `pushPullScale`), so full state exchanges, `O(n)` bytes each,
//!   do not dominate the load of large clusters.

#![deny(missing_docs)]

mod broadcast;
mod config;
mod digest;
mod error;
mod member;
mod msg;
mod node;
mod swim;

pub use config::{
    LifeguardConfig, MAX_ADDRESS_BYTES, MAX_INCARNATION, MAX_INCARNATION_JUMP,
    MAX_INCOMING_UPDATES, MAX_INDIRECT_PROBES, MAX_LOCAL_HEALTH, MAX_MEMBERS, MAX_PENDING_EVENTS,
    MIN_PIGGYBACK_BYTES, NACK_TIMEOUT_PERCENT, SwimConfig, dynamic_suspicion_timeout,
};
pub use digest::{MAX_DIGEST_BUCKETS, digest_bucket_count};
pub use error::SwimError;
pub use member::{Member, MembershipEvent, SwimCounters};
pub use msg::{MemberSnapshot, MemberState, SwimBody, SwimMsg, Update};
pub use node::{DEFAULT_SEED_COUNT, RECORD_COMPACTION_THRESHOLD, SwimNode};
pub use swim::{
    IncarnationRecovery, LEAVE_FANOUT, SWIM_STATE, Swim, decode_incarnation_record,
    encode_incarnation_record, recover_incarnation,
};

#[cfg(test)]
mod harness;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;

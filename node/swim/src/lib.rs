//! # kvlab-swim
//!
//! SWIM membership and failure detection (Das, Gupta, Motivala, DSN 2002) with the
//! Lifeguard refinements (Dadgar, Phillips, Currey, DSN 2018), sans-IO. A node probes
//! one member per protocol period (round-robin over a shuffled list), asks `k` others to
//! probe indirectly when the direct ack is late, suspects a member that stays silent,
//! declares it dead when the suspicion is not refuted in time, and disseminates every
//! change by piggybacking on its pings and acks; push-pull anti-entropy repairs what
//! gossip missed (and heals partitions), comparing table digests so that its cost does
//! not grow with the cluster. Lifeguard adds a local health multiplier, a
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
//! ## Push-pull by digest
//!
//! **Why push-pull exists.** Piggybacked gossip is fire-and-forget: each update rides
//! on at most `λ·⌈log2(n+1)⌉` messages and is then dropped from the queue. A member that
//! missed all of them — it was partitioned, paused, its packets were lost, or the queue
//! overflowed in a join storm — never hears that update again, and its table stays
//! wrong for good (a stale address, a death it never learnt, a whole side of a healed
//! partition it believes dead). Push-pull is the repair: every interval a member
//! compares its table with one random member's and both keep the newer rows. It is what
//! makes the tables converge *eventually*, whatever gossip lost.
//!
//! **Why its cost must not grow with n.** The obvious push-pull (memberlist's) sends
//! the whole table both ways: `O(n)` bytes per exchange, one exchange per member per
//! interval, so `O(n)` bytes per member per second — at 1,000 members, an ~11 KB
//! message each way to confirm that nothing changed. memberlist spaces the exchanges
//! out by `log2 n` (`push_pull_scale_threshold`), which only slows the growth: in
//! `configs/swim-scale.toml` push-pull cost 8, 36 and 193 B/member/s at n = 10, 100 and
//! 1,000 with full tables, and 1, 1 and 1 by digest. A node that
//! also carries Raft traffic cannot spend a bandwidth that grows with the cluster on
//! membership, and almost all of it is spent on tables that already agree.
//!
//! **The exchange** (`push_pull_digest`, on by default). The hash of a table is the
//! wrapping sum of a hash of each row (member, incarnation, state, address), so it can
//! also be split into buckets of members (about `√n` buckets, by a hash of the id):
//!
//! 1. A → B [`SwimBody::SyncDigest`]: the hash of A's whole table (~20 bytes). If B's
//!    table hashes the same, the tables agree and the exchange ends here. This is what
//!    a converged cluster pays: one small message per member per interval, whatever `n`.
//! 2. B → A [`SwimBody::SyncBuckets`]: B's table hashed per bucket (`8·√n` bytes).
//! 3. A → B [`SwimBody::SyncEntries`]: A's rows of the buckets whose hashes differ (for
//!    a few changed rows, a few buckets of `√n` rows), asking for B's rows of the same.
//! 4. B → A [`SwimBody::SyncEntries`] (`reply`): B's rows of those buckets, as they were
//!    before it merged A's. Both sides merge with the usual precedence rules (a remote
//!    death is only a suspicion), as a full push-pull would.
//!
//! A lost message only ends an exchange early; the next interval starts another. Two
//! tables that differ in `d` rows exchange `O(√n + d·√n)` bytes instead of `O(n)`: the
//! tables of 1,025 members that differ in two rows exchange ~1.4 KB, where a full
//! push-pull sends ~11 KB each way.
//! Joins still send the whole table (a joiner knows nothing), and so does a member that
//! knows no live member when it contacts a seed. The interval scaling above stays (it
//! is memberlist's and spaces out the `O(√n)` exchanges between tables that differ);
//! with digests it can be turned off to repair faster.
//!
//! What is not in the digest is not repaired by it, as before: when a row changed on
//! this member's clock (`state_since`). And what push-pull cannot repair makes a
//! difference that lasts: a dead member one side has already reclaimed costs an
//! exchange of one bucket per interval until the other side reclaims it too.
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
//! probed and nacks from the relays asked count. Push-pull by digest answers only what
//! it asked for: bucket hashes are accepted only from the member a digest went to, with
//! its `seq`, once, and rows in reply only from the member they were asked of (counted
//! in `syncs_refused` otherwise), so a forged message cannot make a member send its
//! table to a third party; a bucket count must be a power of two at most
//! [`MAX_DIGEST_BUCKETS`] and bucket indices ascending and in range; rows are bounded by
//! `max_push_pull_entries` and checked like any update. SWIM is not Byzantine fault tolerant:
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
//!   members (memberlist's `pushPullScale`).
//! * Push-pull compares digests and moves only the rows of buckets that differ (see
//!   above); memberlist always sends the whole table.

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
mod push_pull_tests;
#[cfg(test)]
mod tests;

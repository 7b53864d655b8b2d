//! Static configuration of a SWIM node, read from TOML and validated once.

use std::time::Duration;

use kvlab_types::NodeId;
use serde::{Deserialize, Serialize};

use crate::SwimError;

/// The most independent probes (`k`) a ping-req round may use. A larger `k` only adds
/// traffic: the paper shows the false-positive rate falls exponentially in `k`.
pub const MAX_INDIRECT_PROBES: u32 = 16;
/// The largest local-health score allowed; the probe interval is scaled by `score + 1`.
pub const MAX_LOCAL_HEALTH: u32 = 64;
/// The smallest piggyback byte budget that still fits one update with an address.
pub const MIN_PIGGYBACK_BYTES: usize = 64;
/// The longest member address accepted from the network (bytes); longer ones are dropped.
pub const MAX_ADDRESS_BYTES: usize = 256;
/// The largest number of piggybacked updates processed from one incoming message; the
/// rest are dropped and counted, so a hostile peer cannot make one step unbounded.
pub const MAX_INCOMING_UPDATES: usize = 1024;
/// How long (percent of `ack_timeout_ms`) a ping-req relay waits for the target before
/// it sends a nack to the origin (Lifeguard §IV-A: the nack must reach the origin before
/// its probe ends).
pub const NACK_TIMEOUT_PERCENT: u64 = 80;
/// The highest incarnation number accepted from the network. Half the `u64` range, so
/// that `incarnation + 1` (a refutation) never overflows. A member whose own
/// incarnation reached it can no longer refute (it reports
/// `member_incarnation_exhausted` once).
pub const MAX_INCARNATION: u64 = u64::MAX / 2;
/// How far an update may move a known member's incarnation (this member's included) in
/// one step. Honest incarnations grow by one per refutation or restart, so an honest
/// update is never `2^32` ahead; a forged one far in the future is refused instead of
/// making the member unable to refute, and reaching [`MAX_INCARNATION`] would take `2^31`
/// accepted forgeries in a row.
pub const MAX_INCARNATION_JUMP: u64 = 1 << 32;
/// The most members (dead and left ones included, until reclaimed) a membership table
/// holds; an update about an unknown member beyond it is refused and counted, so a flood
/// of made-up members cannot grow the table without bound.
pub const MAX_MEMBERS: usize = 1 << 16;
/// How many membership events a [`crate::Swim`] keeps for [`crate::Swim::drain_events`]
/// before it drops the oldest (counted in `events_dropped`).
pub const MAX_PENDING_EVENTS: usize = 65_536;

/// Which Lifeguard refinements (Dadgar et al. 2018) are on. Each can be switched off to
/// measure what it buys; all are on by default, as in memberlist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifeguardConfig {
    /// Local Health Multiplier (Lifeguard §IV-A): a node that misses acks or nacks, or
    /// must refute a suspicion of itself, slows its probes and waits longer for acks.
    pub local_health: bool,
    /// Dynamic suspicion timeout (Lifeguard §IV-B): starts at the maximum and shrinks
    /// toward the minimum as independent confirmations arrive. Off: fixed at the minimum.
    pub dynamic_suspicion: bool,
    /// Buddy system (Lifeguard §IV-C): a probe of a suspected member carries the
    /// suspicion, so the member can refute at once.
    pub buddy: bool,
}

impl Default for LifeguardConfig {
    fn default() -> Self {
        LifeguardConfig {
            local_health: true,
            dynamic_suspicion: true,
            buddy: true,
        }
    }
}

impl LifeguardConfig {
    /// Every refinement off: the SWIM protocol of the 2002 paper (with suspicion).
    pub fn off() -> Self {
        LifeguardConfig {
            local_health: false,
            dynamic_suspicion: false,
            buddy: false,
        }
    }
}

/// Configuration of a SWIM node. Defaults follow hashicorp/memberlist's LAN profile,
/// which implements both papers: 1 s protocol period, 500 ms ack timeout, k = 3,
/// suspicion multiplier 4 (max 6×), retransmit multiplier 4, push-pull every 30 s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwimConfig {
    /// The protocol period `T'` (SWIM §3.1): one member is probed per period.
    pub protocol_period_ms: u64,
    /// How long to wait for a direct ack before asking `k` members to probe (SWIM §3.1).
    /// Must be shorter than the period.
    pub ack_timeout_ms: u64,
    /// `k`: how many members are asked to probe indirectly with ping-req (SWIM §3.1).
    pub indirect_probes: u32,
    /// Minimum suspicion timeout = `suspicion_mult · max(1, log10 n) · period`
    /// (memberlist's formula; SWIM §4.2 leaves the timeout open).
    pub suspicion_mult: u32,
    /// Maximum suspicion timeout = `suspicion_max_timeout_mult ·` minimum (Lifeguard
    /// §IV-B). Used only with dynamic suspicion.
    pub suspicion_max_timeout_mult: u32,
    /// λ: each update is piggybacked at most `λ · ⌈log2(n + 1)⌉` times (SWIM §4.1).
    pub retransmit_mult: u32,
    /// Interval of the gossip round (memberlist's `GossipInterval`): while updates wait
    /// to be disseminated, send them to `gossip_fanout` random live members, besides
    /// piggybacking them on pings and acks. Dissemination then does not slow down when
    /// Lifeguard's local health slows the probes. `0` (the default): piggyback only, as
    /// in SWIM §4.1, with its constant load; memberlist uses 200 ms.
    pub gossip_interval_ms: u64,
    /// How many members one gossip round sends to (memberlist's `GossipNodes`).
    pub gossip_fanout: u32,
    /// Interval of push-pull anti-entropy: a state exchange with one random live member
    /// (and one dead member, and a forgotten seed; see the crate docs). `0` disables it
    /// (for comparisons; joins still use push-pull).
    pub push_pull_interval_ms: u64,
    /// Above this many live members, the push-pull interval grows with the cluster:
    /// `interval · (⌈log2 n − log2 threshold⌉ + 1)` (memberlist's `pushPullScale`).
    /// Full state exchanges cost `O(n)` bytes each, so without digests this keeps their
    /// cost per member near constant; with digests it only spaces out repairs (and the
    /// `O(√n)` bytes of an exchange between tables that differ). `0` turns scaling off.
    pub push_pull_scale_threshold: usize,
    /// Push-pull by digest (the crate docs): an exchange starts with the hash of the
    /// table and moves only the rows of buckets whose hashes differ, so two members
    /// that agree exchange one small message whatever `n`. Off: every exchange sends
    /// the whole table both ways, `O(n)` bytes (memberlist's push-pull), kept for
    /// comparison. Joins send the whole table either way.
    pub push_pull_digest: bool,
    /// How long a dead or left member stays in the table (and is gossiped about and
    /// reconnected to) before it is forgotten.
    pub dead_reclaim_ms: u64,
    /// How long to wait for a seed's answer before asking the seeds again.
    pub join_retry_ms: u64,
    /// How many join rounds to try before giving up (an event `swim_join_failed` says
    /// so; push-pull keeps trying the seeds while no member is known).
    pub join_attempts_max: u32,
    /// Members to join through. Empty: [`crate::SwimNode`] uses the lowest-numbered
    /// peers (see its docs); a node listed here does not join through itself.
    pub seeds: Vec<NodeId>,
    /// The most updates piggybacked on one message.
    pub max_piggyback_count: usize,
    /// The most bytes of updates piggybacked on one message (encoded size).
    pub max_piggyback_bytes: usize,
    /// The most updates waiting to be disseminated; beyond it the most-sent ones are
    /// dropped (counted in `broadcasts_dropped`).
    pub max_broadcast_queue: usize,
    /// The most member entries in one push-pull message, or in one step of push-pull by
    /// digest (own entry first, the rest sampled); more are cut and counted in
    /// `push_pull_truncated`.
    pub max_push_pull_entries: usize,
    /// The most ping-req relays this node runs for others at once; more are refused and
    /// counted in `relays_refused`.
    pub max_pending_relays: usize,
    /// The highest local-health score (Lifeguard §IV-A); timeouts scale by `score + 1`.
    pub local_health_max: u32,
    /// Persist the incarnation number (`Persist` + `Sync`) whenever it changes, so a
    /// restarted member comes back with a higher one. Off: a restarted member starts at
    /// incarnation 0 and climbs above its old number by refuting what others say.
    pub persist_incarnation: bool,
    /// The Lifeguard refinements.
    pub lifeguard: LifeguardConfig,
}

impl Default for SwimConfig {
    fn default() -> Self {
        SwimConfig {
            protocol_period_ms: 1_000,
            ack_timeout_ms: 500,
            indirect_probes: 3,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            retransmit_mult: 4,
            gossip_interval_ms: 0,
            gossip_fanout: 3,
            push_pull_interval_ms: 30_000,
            push_pull_scale_threshold: 32,
            push_pull_digest: true,
            dead_reclaim_ms: 60_000,
            join_retry_ms: 2_000,
            join_attempts_max: 30,
            seeds: Vec::new(),
            max_piggyback_count: 16,
            max_piggyback_bytes: 1_200,
            max_broadcast_queue: 4_096,
            max_push_pull_entries: 2_048,
            max_pending_relays: 64,
            local_health_max: 8,
            persist_incarnation: true,
            lifeguard: LifeguardConfig::default(),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SwimError {
    SwimError::InvalidConfig {
        field,
        reason: reason.into(),
    }
}

impl SwimConfig {
    /// Checks every field; the error names the first bad one and why.
    pub fn validate(&self) -> Result<(), SwimError> {
        if self.protocol_period_ms == 0 {
            return Err(invalid("protocol_period_ms", "must be > 0"));
        }
        if self.ack_timeout_ms == 0 || self.ack_timeout_ms >= self.protocol_period_ms {
            return Err(invalid(
                "ack_timeout_ms",
                format!(
                    "must be > 0 and < protocol_period_ms ({}), got {}",
                    self.protocol_period_ms, self.ack_timeout_ms
                ),
            ));
        }
        if self.indirect_probes > MAX_INDIRECT_PROBES {
            return Err(invalid(
                "indirect_probes",
                format!(
                    "must be <= {MAX_INDIRECT_PROBES}, got {}",
                    self.indirect_probes
                ),
            ));
        }
        if self.suspicion_mult == 0 {
            return Err(invalid("suspicion_mult", "must be >= 1"));
        }
        if self.suspicion_max_timeout_mult == 0 {
            return Err(invalid("suspicion_max_timeout_mult", "must be >= 1"));
        }
        if self.retransmit_mult == 0 {
            return Err(invalid("retransmit_mult", "must be >= 1"));
        }
        if self.gossip_interval_ms > 0
            && (self.gossip_fanout == 0 || self.gossip_fanout > MAX_INDIRECT_PROBES)
        {
            return Err(invalid(
                "gossip_fanout",
                format!(
                    "must be in 1..={MAX_INDIRECT_PROBES} while gossip_interval_ms > 0, got {}",
                    self.gossip_fanout
                ),
            ));
        }
        if self.dead_reclaim_ms == 0 {
            return Err(invalid("dead_reclaim_ms", "must be > 0"));
        }
        if self.join_retry_ms == 0 {
            return Err(invalid("join_retry_ms", "must be > 0"));
        }
        if self.max_piggyback_count == 0 {
            return Err(invalid("max_piggyback_count", "must be >= 1"));
        }
        if self.max_piggyback_bytes < MIN_PIGGYBACK_BYTES {
            return Err(invalid(
                "max_piggyback_bytes",
                format!(
                    "must be >= {MIN_PIGGYBACK_BYTES}, got {}",
                    self.max_piggyback_bytes
                ),
            ));
        }
        if self.max_broadcast_queue == 0 {
            return Err(invalid("max_broadcast_queue", "must be >= 1"));
        }
        if self.max_push_pull_entries == 0 {
            return Err(invalid("max_push_pull_entries", "must be >= 1"));
        }
        if self.local_health_max > MAX_LOCAL_HEALTH {
            return Err(invalid(
                "local_health_max",
                format!(
                    "must be <= {MAX_LOCAL_HEALTH}, got {}",
                    self.local_health_max
                ),
            ));
        }
        Ok(())
    }

    /// The protocol period as a duration.
    pub fn protocol_period(&self) -> Duration {
        Duration::from_millis(self.protocol_period_ms)
    }
    /// The direct-ack timeout as a duration.
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }

    /// `(min, max)` suspicion timeouts for a cluster of `n` live members: the minimum is
    /// `suspicion_mult · max(1, log10 n) · period`, the maximum that times
    /// `suspicion_max_timeout_mult` (memberlist `suspicionTimeout`, Lifeguard §IV-B).
    pub fn suspicion_timeout_bounds(&self, n: usize) -> (Duration, Duration) {
        let scale = (n.max(1) as f64).log10().max(1.0);
        let min_ns =
            f64::from(self.suspicion_mult) * scale * (self.protocol_period_ms as f64) * 1e6;
        let min = Duration::from_nanos(min_ns.round() as u64);
        let max = min.saturating_mul(self.suspicion_max_timeout_mult);
        (min, max)
    }

    /// The push-pull interval for a cluster of `n` live members (memberlist's
    /// `pushPullScale`; see `push_pull_scale_threshold`).
    pub fn push_pull_interval(&self, n: usize) -> Duration {
        let base = Duration::from_millis(self.push_pull_interval_ms);
        let t = self.push_pull_scale_threshold;
        if t == 0 || n <= t {
            return base;
        }
        let mult = ((n as f64).log2() - (t as f64).log2()).ceil() + 1.0;
        base.saturating_mul(mult.max(1.0) as u32)
    }

    /// How many times an update is piggybacked: `λ · ⌈log2(n + 1)⌉` (SWIM §4.1).
    pub fn retransmit_limit(&self, n: usize) -> u32 {
        let n1 = (n as u64).saturating_add(1);
        // ⌈log2(n+1)⌉ = bits needed for n (for n >= 1).
        let ceil_log2 = 64 - (n1 - 1).leading_zeros();
        self.retransmit_mult.saturating_mul(ceil_log2.max(1))
    }
}

/// The Lifeguard dynamic suspicion timeout (Lifeguard §IV-B, memberlist `suspicion.go`):
/// `max(min, max − (max − min) · log(C + 1) / log(K + 1))` for `C` independent
/// confirmations out of the `K` expected. With `K = 0` the timeout is `min`.
pub fn dynamic_suspicion_timeout(
    min: Duration,
    max: Duration,
    confirmations: u32,
    expected: u32,
) -> Duration {
    if expected == 0 || max <= min {
        return min;
    }
    let c = f64::from(confirmations.min(expected));
    let frac = (c + 1.0).ln() / (f64::from(expected) + 1.0).ln();
    let span_ns = (max - min).as_nanos() as f64;
    let timeout_ns = max.as_nanos() as f64 - span_ns * frac;
    let timeout = Duration::from_nanos(timeout_ns.max(0.0).round() as u64);
    timeout.max(min)
}

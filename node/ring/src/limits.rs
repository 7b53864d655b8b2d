//! Rate and concurrency limits on [`Time`]: token buckets (PD store limits), the
//! scheduler's per-node buckets, and the node-level snapshot limiter. Every limit counts
//! how often it said no, so runs can report that a limit bit (DESIGN: "a limit on
//! everything, reported when hit").
//!
//! Arithmetic is integer (micro-tokens, nanoseconds), so a bucket behaves identically on
//! every platform and in every replay.

use std::collections::BTreeMap;
use std::time::Duration;

use kvlab_types::{NodeId, Time};
use serde::{Deserialize, Serialize};

/// Micro-tokens per token: rates like 0.5 replicas/s stay exact enough.
const MICRO: u128 = 1_000_000;
/// Nanoseconds per second.
const NANOS_PER_S: u128 = 1_000_000_000;

/// A token bucket refilled continuously from [`Time`]: `rate_per_s` tokens a second, at
/// most `burst` banked. Starts full.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBucket {
    rate_micro_per_s: u64,
    capacity_micro: u64,
    level_micro: u64,
    last: Time,
    refused: u64,
}

impl TokenBucket {
    /// A full bucket. `rate_per_s` is rounded to a millionth of a token; negative or NaN
    /// rates count as zero (a bucket that never refills).
    pub fn new(rate_per_s: f64, burst: u32, now: Time) -> Self {
        let rate = if rate_per_s.is_finite() && rate_per_s > 0.0 {
            (rate_per_s * MICRO as f64).round().min(u64::MAX as f64) as u64
        } else {
            0
        };
        let capacity = u64::from(burst).saturating_mul(MICRO as u64);
        TokenBucket {
            rate_micro_per_s: rate,
            capacity_micro: capacity,
            level_micro: capacity,
            last: now,
            refused: 0,
        }
    }

    fn refill(&mut self, now: Time) {
        if now <= self.last {
            return;
        }
        let elapsed = u128::from(now.0 - self.last.0);
        let add = elapsed * u128::from(self.rate_micro_per_s) / NANOS_PER_S;
        if add == 0 {
            // Too little time for a micro-token: keep `last` so the time is not lost.
            return;
        }
        let add = u64::try_from(add).unwrap_or(u64::MAX);
        self.level_micro = self
            .level_micro
            .saturating_add(add)
            .min(self.capacity_micro);
        self.last = now;
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Time) -> u64 {
        self.refill(now);
        self.level_micro / MICRO as u64
    }

    /// Whether `n` tokens are available at `now`, without taking them.
    pub fn has(&mut self, now: Time, n: u32) -> bool {
        self.refill(now);
        self.level_micro >= u64::from(n).saturating_mul(MICRO as u64)
    }

    /// Takes `n` tokens if available; otherwise takes nothing, counts a refusal and
    /// returns false.
    pub fn try_take(&mut self, now: Time, n: u32) -> bool {
        if self.has(now, n) {
            self.level_micro -= u64::from(n) * MICRO as u64;
            true
        } else {
            self.refused += 1;
            false
        }
    }

    /// Counts a refusal decided elsewhere (a plan that needed this bucket and another).
    pub fn count_refusal(&mut self) {
        self.refused += 1;
    }

    /// How long until `n` tokens are available (zero if they are; `None` if never: a
    /// zero rate, or more than the burst).
    pub fn time_until(&mut self, now: Time, n: u32) -> Option<Duration> {
        self.refill(now);
        let need = u64::from(n).saturating_mul(MICRO as u64);
        if self.level_micro >= need {
            return Some(Duration::ZERO);
        }
        if need > self.capacity_micro || self.rate_micro_per_s == 0 {
            return None;
        }
        let missing = u128::from(need - self.level_micro);
        let nanos = missing * NANOS_PER_S / u128::from(self.rate_micro_per_s) + 1;
        Some(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }

    /// How many times it said no.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

/// Rates of the scheduler's per-node buckets (`[scheduler]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NodeRates {
    /// New replicas a node may receive per second (PD store limit add-peer).
    pub add_replica_per_s: f64,
    /// Replicas a node may lose per second (PD store limit remove-peer).
    pub remove_replica_per_s: f64,
    /// Leader transfers away from a node per second (CRDB: one lease transfer a second).
    pub leader_transfer_per_s: f64,
    /// Tokens each bucket banks.
    pub burst: u32,
}

/// Which per-node bucket.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum NodeBucket {
    /// Replicas added on the node.
    AddReplica,
    /// Replicas removed from the node.
    RemoveReplica,
    /// Leaderships moved away from the node.
    LeaderTransfer,
}

/// The scheduler's per-node token buckets (volatile: they live in the meta leader's
/// scheduler and start full after a meta leader change, as PD's store limits do).
#[derive(Clone, Debug)]
pub struct NodeLimits {
    rates: NodeRates,
    buckets: BTreeMap<(NodeId, NodeBucket), TokenBucket>,
}

impl NodeLimits {
    /// Limits with these rates; buckets are created full on first use.
    pub fn new(rates: NodeRates) -> Self {
        NodeLimits {
            rates,
            buckets: BTreeMap::new(),
        }
    }

    /// The bucket `which` of `node`.
    pub fn bucket(&mut self, node: NodeId, which: NodeBucket, now: Time) -> &mut TokenBucket {
        let rate = match which {
            NodeBucket::AddReplica => self.rates.add_replica_per_s,
            NodeBucket::RemoveReplica => self.rates.remove_replica_per_s,
            NodeBucket::LeaderTransfer => self.rates.leader_transfer_per_s,
        };
        let burst = self.rates.burst;
        self.buckets
            .entry((node, which))
            .or_insert_with(|| TokenBucket::new(rate, burst, now))
    }

    /// Whether each `(node, bucket)` has a token, taking none; the first empty bucket
    /// counts a refusal and is returned.
    pub fn check_all(
        &mut self,
        now: Time,
        needs: &[(NodeId, NodeBucket)],
    ) -> Result<(), (NodeId, NodeBucket)> {
        for &(n, b) in needs {
            if !self.bucket(n, b, now).has(now, 1) {
                self.bucket(n, b, now).count_refusal();
                return Err((n, b));
            }
        }
        Ok(())
    }

    /// Takes one token from each `(node, bucket)` if all have one; otherwise takes none,
    /// counts a refusal on the first empty bucket and returns it.
    pub fn try_take_all(
        &mut self,
        now: Time,
        needs: &[(NodeId, NodeBucket)],
    ) -> Result<(), (NodeId, NodeBucket)> {
        self.check_all(now, needs)?;
        for &(n, b) in needs {
            let took = self.bucket(n, b, now).try_take(now, 1);
            debug_assert!(took, "checked just above");
        }
        Ok(())
    }

    /// Refusals per bucket kind, summed over nodes.
    pub fn refused(&self) -> BTreeMap<NodeBucket, u64> {
        let mut out = BTreeMap::new();
        for ((_, b), bucket) in &self.buckets {
            *out.entry(*b).or_insert(0) += bucket.refused();
        }
        out
    }
}

/// A concurrency cap: at most `max` holders at once; refusals are counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcurrencyLimit {
    max: u32,
    in_use: u32,
    refused: u64,
    high_water: u32,
}

impl ConcurrencyLimit {
    /// A cap of `max` (0 refuses everything).
    pub fn new(max: u32) -> Self {
        ConcurrencyLimit {
            max,
            in_use: 0,
            refused: 0,
            high_water: 0,
        }
    }

    /// Takes a slot if one is free.
    pub fn try_acquire(&mut self) -> bool {
        if self.in_use < self.max {
            self.in_use += 1;
            self.high_water = self.high_water.max(self.in_use);
            true
        } else {
            self.refused += 1;
            false
        }
    }

    /// Frees a slot (a release without an acquire is ignored).
    pub fn release(&mut self) {
        self.in_use = self.in_use.saturating_sub(1);
    }

    /// Slots taken now.
    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// The most slots ever taken at once.
    pub fn high_water(&self) -> u32 {
        self.high_water
    }

    /// How many acquisitions were refused.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

/// Snapshot limits of one node (`[snapshot]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotRates {
    /// Bytes of snapshot chunks the node may send per second.
    pub max_bytes_per_s: u64,
    /// Snapshots the node may send at once.
    pub max_concurrent_send: u32,
    /// Snapshots the node may receive (install) at once.
    pub max_concurrent_recv: u32,
    /// The chunk size, which is also the byte bucket's burst.
    pub chunk_bytes: u64,
}

/// The node-level snapshot limiter (the node consults it; nothing here sends): a byte
/// rate for chunks sent, and caps on concurrent sends and receives. TiKV
/// `snap_io_max_bytes_per_sec`, `concurrent_send_snap_limit`; CRDB one applying snapshot
/// per receiver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotLimiter {
    /// Bytes sent: one token per byte, a burst of one chunk (so a chunk can always go
    /// once the bucket is full, and the long-run rate is the configured one).
    pub bytes: TokenBucket,
    /// Concurrent sends.
    pub send: ConcurrencyLimit,
    /// Concurrent receives.
    pub recv: ConcurrencyLimit,
}

impl SnapshotLimiter {
    /// A limiter, full at `now`.
    pub fn new(rates: SnapshotRates, now: Time) -> Self {
        let burst = rates.chunk_bytes.max(1).min(u64::from(u32::MAX)) as u32;
        SnapshotLimiter {
            bytes: TokenBucket::new(rates.max_bytes_per_s as f64, burst, now),
            send: ConcurrencyLimit::new(rates.max_concurrent_send),
            recv: ConcurrencyLimit::new(rates.max_concurrent_recv),
        }
    }

    /// Whether a chunk of `bytes` may go now; if not, how long to wait (`None`: never,
    /// the chunk is larger than the burst or the rate is zero).
    pub fn try_send_chunk(&mut self, now: Time, bytes: u64) -> Result<(), Option<Duration>> {
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        if self.bytes.try_take(now, n) {
            Ok(())
        } else {
            Err(self.bytes.time_until(now, n))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate_and_caps_at_burst() {
        let mut b = TokenBucket::new(2.0, 4, Time::ZERO);
        for _ in 0..4 {
            assert!(b.try_take(Time::ZERO, 1));
        }
        assert!(!b.try_take(Time::ZERO, 1));
        assert_eq!(b.refused(), 1);
        assert_eq!(b.available(Time::from_millis(499)), 0);
        assert_eq!(b.available(Time::from_millis(500)), 1);
        assert_eq!(b.available(Time::from_secs(100)), 4);
        assert_eq!(
            TokenBucket::new(2.0, 4, Time::ZERO).time_until(Time::ZERO, 5),
            None
        );
        let mut e = TokenBucket::new(1.0, 1, Time::ZERO);
        assert!(e.try_take(Time::ZERO, 1));
        let wait = e.time_until(Time::ZERO, 1).unwrap();
        assert!(wait >= Duration::from_secs(1) && wait < Duration::from_millis(1001));
    }

    #[test]
    fn tiny_steps_do_not_lose_time() {
        let mut b = TokenBucket::new(1.0, 1, Time::ZERO);
        assert!(b.try_take(Time::ZERO, 1));
        // 1 ns steps each add less than a micro-token; the time must still accumulate.
        let mut t = Time::ZERO;
        for _ in 0..1000 {
            t = Time(t.0 + 1);
            b.available(t);
        }
        assert_eq!(b.available(Time::from_secs(1)), 1);
    }

    #[test]
    fn try_take_all_is_all_or_nothing() {
        let rates = NodeRates {
            add_replica_per_s: 1.0,
            remove_replica_per_s: 1.0,
            leader_transfer_per_s: 1.0,
            burst: 1,
        };
        let mut l = NodeLimits::new(rates);
        let (a, b) = (NodeId(1), NodeId(2));
        assert!(
            l.try_take_all(Time::ZERO, &[(a, NodeBucket::AddReplica)])
                .is_ok()
        );
        let both = [(b, NodeBucket::RemoveReplica), (a, NodeBucket::AddReplica)];
        assert_eq!(
            l.try_take_all(Time::ZERO, &both),
            Err((a, NodeBucket::AddReplica))
        );
        // b's token was not taken.
        assert!(
            l.bucket(b, NodeBucket::RemoveReplica, Time::ZERO)
                .has(Time::ZERO, 1)
        );
        assert_eq!(l.refused()[&NodeBucket::AddReplica], 1);
    }

    #[test]
    fn snapshot_limiter_paces_chunks_and_caps_concurrency() {
        let rates = SnapshotRates {
            max_bytes_per_s: 1000,
            max_concurrent_send: 1,
            max_concurrent_recv: 1,
            chunk_bytes: 100,
        };
        let mut s = SnapshotLimiter::new(rates, Time::ZERO);
        assert!(s.send.try_acquire());
        assert!(!s.send.try_acquire());
        s.send.release();
        assert!(s.send.try_acquire());
        assert_eq!(s.send.refused(), 1);
        assert!(s.try_send_chunk(Time::ZERO, 100).is_ok());
        let wait = s.try_send_chunk(Time::ZERO, 100).unwrap_err().unwrap();
        assert!(wait >= Duration::from_millis(100) && wait < Duration::from_millis(101));
        assert!(s.try_send_chunk(Time::from_millis(100), 100).is_ok());
        assert_eq!(s.try_send_chunk(Time::from_secs(9), 101), Err(None));
    }
}

//! Counters every transport keeps: messages and bytes sent and received, and every drop
//! by its reason. "Never silent data loss": a message a transport gives up on is counted
//! here under exactly one [`DropReason`].

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Why a transport dropped a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// A bounded queue (outbound to a peer, inbound to the node, or the delay line) was
    /// full.
    QueueFull,
    /// The destination is not in the peer table, or a datagram came from an address that
    /// is not.
    UnknownPeer,
    /// The message is larger than `max_frame_bytes`.
    Oversize,
    /// Received bytes were not a valid frame (bad version, truncated, checksum, garbage).
    DecodeError,
    /// A [`crate::FaultRule`] dropped it on purpose.
    FaultRule,
    /// A well-formed envelope named another destination than this node, or a sender
    /// that does not match where it came from.
    Misaddressed,
    /// A socket or connection failed with the message on its way (connect refused, reset,
    /// RPC error).
    Io,
    /// Part of a chunked message arrived but the rest did not within the reassembly
    /// timeout, or the reassembly buffers were full.
    ReassemblyExpired,
    /// An intact frame whose MAC does not verify under this node's key: it was not made
    /// with the cluster secret (a forgery, or a node of another cluster). Its payload was
    /// never deserialized.
    Unauthenticated,
}

impl DropReason {
    /// The reason a receiver counts for a frame that does not decode: an intact frame
    /// that fails its MAC is [`DropReason::Unauthenticated`], anything else a
    /// [`DropReason::DecodeError`].
    pub fn of_decode_error(e: &crate::CodecError) -> DropReason {
        match e {
            crate::CodecError::Unauthenticated { .. } => DropReason::Unauthenticated,
            _ => DropReason::DecodeError,
        }
    }

    /// Every reason, in a fixed order (the order of [`DropCounts`]' fields).
    pub const ALL: [DropReason; 9] = [
        DropReason::QueueFull,
        DropReason::UnknownPeer,
        DropReason::Oversize,
        DropReason::DecodeError,
        DropReason::FaultRule,
        DropReason::Misaddressed,
        DropReason::Io,
        DropReason::ReassemblyExpired,
        DropReason::Unauthenticated,
    ];

    /// The reason's snake_case name, as in metrics.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::Oversize => "oversize",
            DropReason::DecodeError => "decode_error",
            DropReason::FaultRule => "fault_rule",
            DropReason::Misaddressed => "misaddressed",
            DropReason::Io => "io",
            DropReason::ReassemblyExpired => "reassembly_expired",
            DropReason::Unauthenticated => "unauthenticated",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Drop counts by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCounts {
    /// See [`DropReason::QueueFull`].
    pub queue_full: u64,
    /// See [`DropReason::UnknownPeer`].
    pub unknown_peer: u64,
    /// See [`DropReason::Oversize`].
    pub oversize: u64,
    /// See [`DropReason::DecodeError`].
    pub decode_error: u64,
    /// See [`DropReason::FaultRule`].
    pub fault_rule: u64,
    /// See [`DropReason::Misaddressed`].
    pub misaddressed: u64,
    /// See [`DropReason::Io`].
    pub io: u64,
    /// See [`DropReason::ReassemblyExpired`].
    pub reassembly_expired: u64,
    /// See [`DropReason::Unauthenticated`].
    #[serde(default)]
    pub unauthenticated: u64,
}

impl DropCounts {
    /// The count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::QueueFull => self.queue_full,
            DropReason::UnknownPeer => self.unknown_peer,
            DropReason::Oversize => self.oversize,
            DropReason::DecodeError => self.decode_error,
            DropReason::FaultRule => self.fault_rule,
            DropReason::Misaddressed => self.misaddressed,
            DropReason::Io => self.io,
            DropReason::ReassemblyExpired => self.reassembly_expired,
            DropReason::Unauthenticated => self.unauthenticated,
        }
    }

    /// All drops, whatever the reason.
    pub fn total(&self) -> u64 {
        DropReason::ALL.iter().map(|r| self.get(*r)).sum()
    }
}

/// A snapshot of a transport's counters.
///
/// `sent` counts messages handed to the network (the peer's inbox in process, the kernel
/// for UDP, a peer's acknowledgement for tarpc); `received` counts envelopes returned by
/// `recv`. A message dropped by the sender's rules is counted in the sender's `dropped`,
/// one dropped by the receiver's in the receiver's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportStats {
    /// Messages handed to the network.
    pub sent: u64,
    /// Payload bytes of those messages, frame headers included.
    pub sent_bytes: u64,
    /// Envelopes delivered to the caller of `recv`.
    pub received: u64,
    /// Bytes of those envelopes, frame headers included.
    pub received_bytes: u64,
    /// Messages dropped, by reason.
    pub dropped: DropCounts,
}

/// The live counters behind [`TransportStats`], shared by a transport's tasks.
#[derive(Debug, Default)]
pub struct StatsCounters {
    sent: AtomicU64,
    sent_bytes: AtomicU64,
    received: AtomicU64,
    received_bytes: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
}

impl StatsCounters {
    /// Zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `messages` messages of `bytes` bytes in total handed to the network.
    pub fn record_sent(&self, messages: u64, bytes: u64) {
        self.sent.fetch_add(messages, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts one envelope of `bytes` bytes delivered to the caller.
    pub fn record_received(&self, bytes: u64) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.received_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `n` messages dropped for `reason`.
    pub fn record_drop(&self, reason: DropReason, n: u64) {
        self.dropped[reason.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> TransportStats {
        let d = |r: DropReason| self.dropped[r.index()].load(Ordering::Relaxed);
        TransportStats {
            sent: self.sent.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
            dropped: DropCounts {
                queue_full: d(DropReason::QueueFull),
                unknown_peer: d(DropReason::UnknownPeer),
                oversize: d(DropReason::Oversize),
                decode_error: d(DropReason::DecodeError),
                fault_rule: d(DropReason::FaultRule),
                misaddressed: d(DropReason::Misaddressed),
                io: d(DropReason::Io),
                reassembly_expired: d(DropReason::ReassemblyExpired),
                unauthenticated: d(DropReason::Unauthenticated),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_lands_in_its_own_field() {
        let c = StatsCounters::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            c.record_drop(*r, i as u64 + 1);
        }
        let s = c.snapshot();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(s.dropped.get(*r), i as u64 + 1, "{}", r.name());
        }
        assert_eq!(s.dropped.total(), (1..=9).sum::<u64>());
    }
}

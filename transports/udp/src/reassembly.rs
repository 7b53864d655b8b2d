//! Datagram layout and the bounded reassembly of chunked messages.
//!
//! ```text
//! whole message:  [TAG_WHOLE u8][frame ...]
//! one chunk:      [TAG_CHUNK u8][message id u64 LE][chunk index u16 LE][chunk count u16 LE][bytes ...]
//! ```
//!
//! Chunks carry no retransmission: losing one loses the message, which the receiver counts
//! as [`DropReason::ReassemblyExpired`] when the reassembly timeout passes. The frame's
//! CRC-32 catches a reassembly that mixed chunks of two messages, and its MAC one that a
//! forger assembled.
//!
//! **Memory.** A chunk header is not trusted: nothing is allocated for the chunks it
//! announces. Each chunk is stored as it arrives and charged its data plus
//! [`CHUNK_OVERHEAD_BYTES`]; a count that no frame within `max_frame_bytes` could need is
//! refused. The partial messages together hold at most `max_bytes_total` (the oldest are
//! evicted, and counted, to make room) and at most `max_buffers` messages, so a flood of
//! headers claiming 65,535 chunks costs what the flood itself carries, within that bound.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::time::Duration;

use kvlab_transport::{DropReason, StatsCounters};
use kvlab_types::NodeId;
use tokio::time::Instant;

/// First byte of a datagram that holds one whole frame.
pub const TAG_WHOLE: u8 = 0xA1;
/// First byte of a datagram that holds one chunk of a frame.
pub const TAG_CHUNK: u8 = 0xA2;
/// Bytes before the frame in a whole-message datagram.
pub const WHOLE_HEADER_BYTES: usize = 1;
/// Bytes before the data in a chunk datagram.
pub const CHUNK_HEADER_BYTES: usize = 1 + 8 + 2 + 2;

/// Bytes charged per stored chunk on top of its data: the map entry and the buffer's
/// bookkeeping. A flood of empty-looking chunks is bounded by it.
pub const CHUNK_OVERHEAD_BYTES: usize = 64;

/// A parsed chunk header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Sender-chosen id shared by every chunk of one message.
    pub msg_id: u64,
    /// Position of this chunk.
    pub index: u16,
    /// Number of chunks of the message.
    pub count: u16,
}

/// Writes a chunk header into `out` (which it clears first).
pub fn write_chunk_header(out: &mut Vec<u8>, h: ChunkHeader) {
    out.clear();
    out.push(TAG_CHUNK);
    out.extend_from_slice(&h.msg_id.to_le_bytes());
    out.extend_from_slice(&h.index.to_le_bytes());
    out.extend_from_slice(&h.count.to_le_bytes());
}

/// Parses a chunk datagram (tag included) into its header and data; `None` if it is too
/// short or inconsistent.
pub fn parse_chunk(d: &[u8]) -> Option<(ChunkHeader, &[u8])> {
    if d.len() < CHUNK_HEADER_BYTES || d[0] != TAG_CHUNK {
        return None;
    }
    let msg_id = u64::from_le_bytes(d[1..9].try_into().ok()?);
    let index = u16::from_le_bytes(d[9..11].try_into().ok()?);
    let count = u16::from_le_bytes(d[11..13].try_into().ok()?);
    if count == 0 || index >= count {
        return None;
    }
    Some((
        ChunkHeader {
            msg_id,
            index,
            count,
        },
        &d[CHUNK_HEADER_BYTES..],
    ))
}

#[derive(Debug)]
struct Partial {
    /// Chunks received so far, by index: allocated as they arrive, never from the count.
    chunks: BTreeMap<u16, Vec<u8>>,
    count: u16,
    /// Data bytes received.
    bytes: usize,
    /// `bytes` plus the per-chunk overhead: what counts against the total bound.
    charged: usize,
    started: Instant,
}

/// Partially received messages, bounded in number, bytes and age.
#[derive(Debug)]
pub struct Reassembly {
    partials: BTreeMap<(NodeId, u64), Partial>,
    max_buffers: usize,
    timeout: Duration,
    max_frame_bytes: usize,
    max_chunks: usize,
    max_bytes_total: usize,
    charged_total: usize,
}

impl Reassembly {
    /// At most `max_buffers` messages in progress holding at most `max_bytes_total`
    /// bytes together (overhead included), each at most `max_frame_bytes` in at most
    /// `max_chunks` chunks, each given up after `timeout`.
    pub fn new(
        max_buffers: usize,
        timeout: Duration,
        max_frame_bytes: usize,
        max_chunks: usize,
        max_bytes_total: usize,
    ) -> Self {
        Reassembly {
            partials: BTreeMap::new(),
            max_buffers,
            timeout,
            max_frame_bytes,
            max_chunks,
            max_bytes_total,
            charged_total: 0,
        }
    }

    /// Messages in progress.
    pub fn in_progress(&self) -> usize {
        self.partials.len()
    }

    /// Bytes held by messages in progress, per-chunk overhead included.
    pub fn bytes_held(&self) -> usize {
        self.charged_total
    }

    fn remove(&mut self, key: &(NodeId, u64)) -> Option<Partial> {
        let p = self.partials.remove(key)?;
        self.charged_total -= p.charged;
        Some(p)
    }

    /// Evicts the oldest message other than `keep`, counting it; false if there is none.
    fn evict_oldest(&mut self, keep: (NodeId, u64), stats: &StatsCounters) -> bool {
        let oldest = self
            .partials
            .iter()
            .filter(|(k, _)| **k != keep)
            .min_by_key(|(k, p)| (p.started, **k))
            .map(|(k, _)| *k);
        match oldest {
            Some(k) => {
                self.remove(&k);
                stats.record_drop(DropReason::ReassemblyExpired, 1);
                true
            }
            None => false,
        }
    }

    /// Adds one chunk from `from`. Returns the whole frame once its last chunk arrives.
    /// Inconsistent chunks count a decode error; evicting a buffer to make room counts a
    /// reassembly expiry.
    pub fn insert(
        &mut self,
        from: NodeId,
        h: ChunkHeader,
        data: &[u8],
        now: Instant,
        stats: &StatsCounters,
    ) -> Option<Vec<u8>> {
        if usize::from(h.count) > self.max_chunks || data.is_empty() {
            // No frame within max_frame_bytes needs that many chunks; senders never send
            // an empty one.
            stats.record_drop(DropReason::DecodeError, 1);
            return None;
        }
        let key = (from, h.msg_id);
        if !self.partials.contains_key(&key) {
            if self.partials.len() >= self.max_buffers {
                self.evict_oldest(key, stats);
            }
            self.partials.insert(
                key,
                Partial {
                    chunks: BTreeMap::new(),
                    count: h.count,
                    bytes: 0,
                    charged: 0,
                    started: now,
                },
            );
        }
        let p = self.partials.get(&key)?;
        if p.count != h.count {
            // Two messages under one id, or a corrupted header.
            self.remove(&key);
            stats.record_drop(DropReason::DecodeError, 1);
            return None;
        }
        if p.chunks.contains_key(&h.index) {
            return None; // a duplicate datagram
        }
        if p.bytes + data.len() > self.max_frame_bytes {
            self.remove(&key);
            stats.record_drop(DropReason::Oversize, 1);
            return None;
        }
        let charge = data.len() + CHUNK_OVERHEAD_BYTES;
        while self.charged_total + charge > self.max_bytes_total {
            if !self.evict_oldest(key, stats) {
                // This message alone would exceed the bound.
                self.remove(&key);
                stats.record_drop(DropReason::ReassemblyExpired, 1);
                return None;
            }
        }
        let p = self.partials.get_mut(&key)?;
        if let Entry::Vacant(slot) = p.chunks.entry(h.index) {
            slot.insert(data.to_vec());
        }
        p.bytes += data.len();
        p.charged += charge;
        self.charged_total += charge;
        if p.chunks.len() < usize::from(h.count) {
            return None;
        }
        let p = self.remove(&key)?;
        let mut frame = Vec::with_capacity(p.bytes);
        for c in p.chunks.into_values() {
            frame.extend_from_slice(&c);
        }
        Some(frame)
    }

    /// Gives up on every message older than the timeout, counting each.
    pub fn expire(&mut self, now: Instant, stats: &StatsCounters) {
        let timeout = self.timeout;
        let stale: Vec<(NodeId, u64)> = self
            .partials
            .iter()
            .filter(|(_, p)| now.duration_since(p.started) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        for k in &stale {
            self.remove(k);
        }
        if !stale.is_empty() {
            stats.record_drop(DropReason::ReassemblyExpired, stale.len() as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(msg_id: u64, index: u16, count: u16) -> ChunkHeader {
        ChunkHeader {
            msg_id,
            index,
            count,
        }
    }

    #[test]
    fn chunk_header_round_trips_and_bad_ones_are_refused() {
        let mut d = Vec::new();
        write_chunk_header(&mut d, h(7, 1, 3));
        d.extend_from_slice(b"xy");
        assert_eq!(parse_chunk(&d), Some((h(7, 1, 3), &b"xy"[..])));
        assert_eq!(parse_chunk(&d[..5]), None);
        let mut bad = Vec::new();
        write_chunk_header(&mut bad, h(7, 3, 3));
        assert_eq!(parse_chunk(&bad), None, "index must be below count");
        write_chunk_header(&mut bad, h(7, 0, 0));
        assert_eq!(parse_chunk(&bad), None, "count must be positive");
    }

    #[tokio::test]
    async fn chunks_in_any_order_reassemble_and_duplicates_are_ignored() {
        let stats = StatsCounters::new();
        let mut r = Reassembly::new(4, Duration::from_secs(1), 1 << 20, 1 << 16, 1 << 30);
        let now = Instant::now();
        assert_eq!(r.insert(NodeId(1), h(1, 2, 3), b"cc", now, &stats), None);
        assert_eq!(r.insert(NodeId(1), h(1, 0, 3), b"aa", now, &stats), None);
        assert_eq!(r.insert(NodeId(1), h(1, 0, 3), b"aa", now, &stats), None);
        assert_eq!(
            r.insert(NodeId(1), h(1, 1, 3), b"bb", now, &stats),
            Some(b"aabbcc".to_vec())
        );
        assert_eq!(r.in_progress(), 0);
        assert_eq!(stats.snapshot().dropped.total(), 0);
    }

    #[tokio::test]
    async fn buffers_are_bounded_and_the_oldest_is_evicted_and_counted() {
        let stats = StatsCounters::new();
        let mut r = Reassembly::new(2, Duration::from_secs(1), 1 << 20, 1 << 16, 1 << 30);
        let t0 = Instant::now();
        r.insert(NodeId(1), h(1, 0, 2), b"a", t0, &stats);
        r.insert(
            NodeId(1),
            h(2, 0, 2),
            b"a",
            t0 + Duration::from_millis(1),
            &stats,
        );
        r.insert(
            NodeId(1),
            h(3, 0, 2),
            b"a",
            t0 + Duration::from_millis(2),
            &stats,
        );
        assert_eq!(r.in_progress(), 2);
        assert_eq!(stats.snapshot().dropped.reassembly_expired, 1);
        // Message 1 was evicted: its second chunk starts a new buffer, not a completion.
        assert_eq!(
            r.insert(NodeId(1), h(2, 1, 2), b"b", t0, &stats),
            Some(b"ab".to_vec())
        );
    }

    #[tokio::test]
    async fn stale_partials_expire_and_are_counted() {
        let stats = StatsCounters::new();
        let mut r = Reassembly::new(4, Duration::from_millis(100), 1 << 20, 1 << 16, 1 << 30);
        let t0 = Instant::now();
        r.insert(NodeId(1), h(1, 0, 2), b"a", t0, &stats);
        r.insert(
            NodeId(2),
            h(1, 0, 2),
            b"a",
            t0 + Duration::from_millis(80),
            &stats,
        );
        r.expire(t0 + Duration::from_millis(120), &stats);
        assert_eq!(r.in_progress(), 1);
        assert_eq!(stats.snapshot().dropped.reassembly_expired, 1);
    }

    #[tokio::test]
    async fn inconsistent_counts_and_oversize_totals_are_refused() {
        let stats = StatsCounters::new();
        let mut r = Reassembly::new(4, Duration::from_secs(1), 10, 1 << 16, 1 << 30);
        let t0 = Instant::now();
        r.insert(NodeId(1), h(1, 0, 2), b"a", t0, &stats);
        assert_eq!(r.insert(NodeId(1), h(1, 1, 3), b"b", t0, &stats), None);
        assert_eq!(stats.snapshot().dropped.decode_error, 1);
        r.insert(NodeId(1), h(2, 0, 2), b"0123456", t0, &stats);
        assert_eq!(
            r.insert(NodeId(1), h(2, 1, 2), b"0123456", t0, &stats),
            None
        );
        assert_eq!(stats.snapshot().dropped.oversize, 1);
        assert_eq!(r.in_progress(), 0);
    }

    #[tokio::test]
    async fn headers_claiming_65535_chunks_reserve_nothing_and_the_total_is_bounded() {
        let stats = StatsCounters::new();
        // 64 buffers, a 64 KiB total: as a 1 MiB-frame node with a small budget.
        let mut r = Reassembly::new(
            64,
            Duration::from_secs(10),
            1 << 20,
            u16::MAX.into(),
            64 << 10,
        );
        let t0 = Instant::now();
        for id in 0..64u64 {
            r.insert(NodeId(1), h(id, 0, u16::MAX), b"x", t0, &stats);
        }
        assert_eq!(r.in_progress(), 64);
        assert_eq!(r.bytes_held(), 64 * (1 + CHUNK_OVERHEAD_BYTES));
        // Large chunks push the total over the bound: the oldest partials are evicted.
        for id in 100..200u64 {
            r.insert(NodeId(1), h(id, 0, 4), &[7; 1000], t0, &stats);
            assert!(r.bytes_held() <= 64 << 10, "{}", r.bytes_held());
        }
        assert!(stats.snapshot().dropped.reassembly_expired > 0);
    }

    #[tokio::test]
    async fn counts_no_frame_could_need_and_empty_chunks_are_decode_errors() {
        let stats = StatsCounters::new();
        let mut r = Reassembly::new(4, Duration::from_secs(1), 1000, 10, 1 << 20);
        let t0 = Instant::now();
        assert_eq!(r.insert(NodeId(1), h(1, 0, 11), b"a", t0, &stats), None);
        assert_eq!(r.insert(NodeId(1), h(2, 0, 2), b"", t0, &stats), None);
        assert_eq!(stats.snapshot().dropped.decode_error, 2);
        assert_eq!(r.in_progress(), 0);
    }
}

//! Datagram layout and the bounded reassembly of chunked messages.
//!
//! ```text
//! whole message:  [TAG_WHOLE u8][frame ...]
//! one chunk:      [TAG_CHUNK u8][message id u64 LE][chunk index u16 LE][chunk count u16 LE][bytes ...]
//! ```
//!
//! Chunks carry no retransmission: losing one loses the message, which the receiver counts
//! as [`DropReason::ReassemblyExpired`] when the reassembly timeout passes. The frame's
//! CRC-32 catches a reassembly that mixed chunks of two messages.

use std::collections::BTreeMap;
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
    chunks: Vec<Option<Vec<u8>>>,
    got: u16,
    bytes: usize,
    started: Instant,
}

/// Partially received messages, bounded in number, bytes and age.
#[derive(Debug)]
pub struct Reassembly {
    partials: BTreeMap<(NodeId, u64), Partial>,
    max_buffers: usize,
    timeout: Duration,
    max_frame_bytes: usize,
}

impl Reassembly {
    /// At most `max_buffers` messages in progress, each at most `max_frame_bytes`, each
    /// given up after `timeout`.
    pub fn new(max_buffers: usize, timeout: Duration, max_frame_bytes: usize) -> Self {
        Reassembly {
            partials: BTreeMap::new(),
            max_buffers,
            timeout,
            max_frame_bytes,
        }
    }

    /// Messages in progress.
    pub fn in_progress(&self) -> usize {
        self.partials.len()
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
        let key = (from, h.msg_id);
        if !self.partials.contains_key(&key) {
            if self.partials.len() >= self.max_buffers {
                let oldest = self
                    .partials
                    .iter()
                    .min_by_key(|(k, p)| (p.started, **k))
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    self.partials.remove(&k);
                    stats.record_drop(DropReason::ReassemblyExpired, 1);
                }
            }
            self.partials.insert(
                key,
                Partial {
                    chunks: vec![None; usize::from(h.count)],
                    got: 0,
                    bytes: 0,
                    started: now,
                },
            );
        }
        let p = self.partials.get_mut(&key)?;
        if p.chunks.len() != usize::from(h.count) {
            // Two messages under one id, or a corrupted header.
            self.partials.remove(&key);
            stats.record_drop(DropReason::DecodeError, 1);
            return None;
        }
        let slot = &mut p.chunks[usize::from(h.index)];
        if slot.is_some() {
            return None; // a duplicate datagram
        }
        p.bytes += data.len();
        if p.bytes > self.max_frame_bytes {
            self.partials.remove(&key);
            stats.record_drop(DropReason::Oversize, 1);
            return None;
        }
        *slot = Some(data.to_vec());
        p.got += 1;
        if p.got < h.count {
            return None;
        }
        let p = self.partials.remove(&key)?;
        let mut frame = Vec::with_capacity(p.bytes);
        for c in p.chunks.into_iter().flatten() {
            frame.extend_from_slice(&c);
        }
        Some(frame)
    }

    /// Gives up on every message older than the timeout, counting each.
    pub fn expire(&mut self, now: Instant, stats: &StatsCounters) {
        let timeout = self.timeout;
        let before = self.partials.len();
        self.partials
            .retain(|_, p| now.duration_since(p.started) < timeout);
        let expired = before - self.partials.len();
        if expired > 0 {
            stats.record_drop(DropReason::ReassemblyExpired, expired as u64);
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
        let mut r = Reassembly::new(4, Duration::from_secs(1), 1 << 20);
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
        let mut r = Reassembly::new(2, Duration::from_secs(1), 1 << 20);
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
        let mut r = Reassembly::new(4, Duration::from_millis(100), 1 << 20);
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
        let mut r = Reassembly::new(4, Duration::from_secs(1), 10);
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
}

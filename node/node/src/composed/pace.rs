//! Snapshot pacing: a node sends snapshot chunks (the data of a replica being moved) at
//! most at `snapshot.max_bytes_per_s_per_node`, to at most
//! `snapshot.max_concurrent_send_per_node` receivers at once, so moving data cannot
//! starve client traffic (TiKV `snap-io-max-bytes-per-sec`, `concurrent-send-snap-limit`).
//!
//! kvlab-raft streams a snapshot stop-and-wait (one chunk in flight, re-sent on every
//! heartbeat answer), so holding a chunk back slows that stream and nothing else. The
//! pacer keeps at most one held chunk per (group, receiver) — a re-sent chunk replaces
//! the held one — and releases held chunks as the byte bucket refills. A chunk larger than
//! the bucket's burst goes out anyway (never stuck). Receive-side concurrency is not
//! limited here (the note for issue 10 says so).

use std::collections::BTreeMap;
use std::time::Duration;

use kvlab_raft::{GroupId, MessageBody, RaftMessage};
use kvlab_ring::limits::{SnapshotLimiter, SnapshotRates};
use kvlab_types::{NodeId, Time};

/// A stream with no chunk for this long no longer counts as sending.
const STREAM_IDLE: Duration = Duration::from_secs(2);

/// A Raft message with the sender's log epoch, ready to wrap.
pub(crate) type Outgoing = (u64, RaftMessage);

/// The node's snapshot pacer.
#[derive(Debug)]
pub(crate) struct Pacer {
    limiter: SnapshotLimiter,
    max_streams: usize,
    held: BTreeMap<(GroupId, NodeId), Outgoing>,
    /// Receivers with a snapshot stream under way, and the time of their last chunk.
    streams: BTreeMap<(GroupId, NodeId), Time>,
    /// Snapshot bytes sent (chunk data).
    pub(crate) bytes_sent: u64,
    /// Chunks held back at least once.
    pub(crate) chunks_held: u64,
    /// The snapshot index last reported complete per (group, receiver): the last chunk
    /// is re-sent on heartbeats, and a transfer is reported once.
    completed: BTreeMap<(GroupId, NodeId), u64>,
}

/// A snapshot transfer that just completed: (group, receiver, index, bytes).
pub(crate) type Completed = (GroupId, NodeId, u64, u64);

impl Pacer {
    pub(crate) fn new(rates: SnapshotRates, now: Time) -> Self {
        Pacer {
            limiter: SnapshotLimiter::new(rates, now),
            max_streams: rates.max_concurrent_send.max(1) as usize,
            held: BTreeMap::new(),
            streams: BTreeMap::new(),
            bytes_sent: 0,
            chunks_held: 0,
            completed: BTreeMap::new(),
        }
    }

    /// The transfer `m` completes, if it is the last chunk of a snapshot not reported
    /// yet.
    pub(crate) fn completes(&mut self, m: &RaftMessage) -> Option<Completed> {
        let MessageBody::InstallSnapshot {
            snapshot,
            offset,
            data,
            done: true,
        } = &m.body
        else {
            return None;
        };
        let key = (m.group, m.to);
        if self.completed.get(&key) == Some(&snapshot.index) {
            return None;
        }
        self.completed.insert(key, snapshot.index);
        let bytes = offset.saturating_add(data.len() as u64);
        Some((m.group, m.to, snapshot.index, bytes))
    }

    /// Whether chunks are waiting.
    pub(crate) fn has_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// Passes a message through: `Some` to send it now, `None` if it is a chunk held back.
    pub(crate) fn offer(&mut self, now: Time, epoch: u64, m: RaftMessage) -> Option<Outgoing> {
        let MessageBody::InstallSnapshot { data, done, .. } = &m.body else {
            return Some((epoch, m));
        };
        let key = (m.group, m.to);
        let (len, done) = (data.len() as u64, *done);
        if self.admit(now, key, len) {
            self.sent(now, key, len, done);
            return Some((epoch, m));
        }
        self.chunks_held += 1;
        self.held.insert(key, (epoch, m));
        None
    }

    fn admit(&mut self, now: Time, key: (GroupId, NodeId), len: u64) -> bool {
        self.streams
            .retain(|_, last| now.saturating_since(*last) < STREAM_IDLE);
        if !self.streams.contains_key(&key) && self.streams.len() >= self.max_streams {
            return false;
        }
        match self.limiter.try_send_chunk(now, len) {
            Ok(()) | Err(None) => true,
            Err(Some(_)) => false,
        }
    }

    fn sent(&mut self, now: Time, key: (GroupId, NodeId), len: u64, done: bool) {
        self.bytes_sent += len;
        if done {
            self.streams.remove(&key);
        } else {
            self.streams.insert(key, now);
        }
    }

    /// Held chunks the limits let go now.
    pub(crate) fn release(&mut self, now: Time) -> Vec<Outgoing> {
        let keys: Vec<(GroupId, NodeId)> = self.held.keys().copied().collect();
        let mut out = Vec::new();
        for key in keys {
            let len = match self.held.get(&key) {
                Some((_, m)) => match &m.body {
                    MessageBody::InstallSnapshot { data, .. } => data.len() as u64,
                    _ => 0,
                },
                None => continue,
            };
            if !self.admit(now, key, len) {
                continue;
            }
            if let Some((epoch, m)) = self.held.remove(&key) {
                let done = matches!(m.body, MessageBody::InstallSnapshot { done: true, .. });
                self.sent(now, key, len, done);
                out.push((epoch, m));
            }
        }
        out
    }
}

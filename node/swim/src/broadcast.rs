//! The bounded queue of updates waiting to be piggybacked (SWIM §4.1): one pending
//! update per member (a newer one replaces the older), fewest-sent first, each sent at
//! most a retransmit limit of times.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use kvlab_types::NodeId;

use crate::Update;

/// How many updates one selection may pass over because they did not fit the byte
/// budget before it stops looking: without it, a long queue (a join storm in a large
/// cluster) would be scanned whole for every message.
pub(crate) const MAX_SELECT_SKIPS: usize = 32;

/// Orders the queue: fewest transmissions first, then newest first.
type Key = (u32, Reverse<u64>);

#[derive(Debug, Clone)]
struct Entry {
    update: Update,
    bytes: usize,
}

/// Updates waiting to be disseminated.
#[derive(Debug, Clone, Default)]
pub(crate) struct BroadcastQueue {
    by_order: BTreeMap<Key, Entry>,
    by_member: BTreeMap<NodeId, Key>,
    next_id: u64,
}

/// What one selection did, for the counters.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Selected {
    /// Updates that did not fit the byte or count budget but were eligible.
    pub(crate) left_behind: usize,
}

impl BroadcastQueue {
    /// Queues `update`, replacing any pending update about the same member. Returns how
    /// many updates had to be dropped to stay within `capacity`.
    pub(crate) fn push(&mut self, update: Update, capacity: usize) -> usize {
        let member = update.member();
        if let Some(old) = self.by_member.remove(&member) {
            self.by_order.remove(&old);
        }
        let key = (0, Reverse(self.next_id));
        self.next_id += 1;
        let bytes = update.encoded_len();
        self.by_order.insert(key, Entry { update, bytes });
        self.by_member.insert(member, key);
        let mut dropped = 0;
        while self.by_order.len() > capacity.max(1) {
            // The last key has the most transmissions (and is the oldest among those).
            if let Some((_, e)) = self.by_order.pop_last() {
                self.by_member.remove(&e.update.member());
                dropped += 1;
            }
        }
        dropped
    }

    /// Picks updates for one message: fewest-sent first, at most `max_count` updates and
    /// `max_bytes` encoded bytes; each picked update counts one transmission and leaves
    /// the queue when it reaches `limit`.
    pub(crate) fn select(
        &mut self,
        max_count: usize,
        max_bytes: usize,
        limit: u32,
        into: &mut Vec<Update>,
    ) -> Selected {
        let mut picked: Vec<Key> = Vec::new();
        let mut bytes = 0usize;
        let mut left_behind = 0usize;
        for (key, e) in &self.by_order {
            if picked.len() >= max_count {
                left_behind += 1;
                break;
            }
            if bytes + e.bytes > max_bytes {
                left_behind += 1;
                if left_behind >= MAX_SELECT_SKIPS {
                    break;
                }
                continue;
            }
            bytes += e.bytes;
            picked.push(*key);
        }
        for key in picked {
            let Some(e) = self.by_order.remove(&key) else {
                continue;
            };
            into.push(e.update.clone());
            let member = e.update.member();
            let sent = key.0 + 1;
            if sent >= limit {
                self.by_member.remove(&member);
            } else {
                let new_key = (sent, key.1);
                self.by_member.insert(member, new_key);
                self.by_order.insert(new_key, e);
            }
        }
        Selected { left_behind }
    }

    /// The pending update about `member`, if any.
    #[cfg(test)]
    pub(crate) fn pending_for(&self, member: NodeId) -> Option<&Update> {
        let key = self.by_member.get(&member)?;
        self.by_order.get(key).map(|e| &e.update)
    }

    /// How many updates wait.
    pub(crate) fn len(&self) -> usize {
        self.by_order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(m: u32, inc: u64) -> Update {
        Update::Alive {
            member: NodeId(m),
            incarnation: inc,
            address: format!("n{m}"),
        }
    }

    #[test]
    fn newer_update_replaces_older_about_same_member() {
        let mut q = BroadcastQueue::default();
        q.push(alive(1, 1), 10);
        q.push(alive(1, 2), 10);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pending_for(NodeId(1)), Some(&alive(1, 2)));
    }

    #[test]
    fn fewest_sent_first_and_dropped_after_limit() {
        let mut q = BroadcastQueue::default();
        q.push(alive(1, 1), 10);
        let mut v = Vec::new();
        q.select(1, 1000, 2, &mut v);
        q.push(alive(2, 1), 10);
        v.clear();
        q.select(1, 1000, 2, &mut v);
        assert_eq!(v, [alive(2, 1)], "the never-sent update goes first");
        v.clear();
        q.select(2, 1000, 2, &mut v);
        assert_eq!(v.len(), 2);
        assert_eq!(q.len(), 0, "both reached the limit of 2 transmissions");
    }

    #[test]
    fn selection_respects_byte_and_count_budgets() {
        let mut q = BroadcastQueue::default();
        for m in 10..30 {
            q.push(alive(m, 1), 100);
        }
        let one = alive(10, 1).encoded_len();
        let mut v = Vec::new();
        let s = q.select(100, one * 3, 10, &mut v);
        assert_eq!(v.len(), 3);
        assert!(s.left_behind > 0);
        v.clear();
        q.select(5, 10_000, 10, &mut v);
        assert_eq!(v.len(), 5);
    }

    #[test]
    fn queue_capacity_drops_most_sent() {
        let mut q = BroadcastQueue::default();
        q.push(alive(1, 1), 2);
        let mut v = Vec::new();
        q.select(1, 1000, 10, &mut v);
        q.push(alive(2, 1), 2);
        let dropped = q.push(alive(3, 1), 2);
        assert_eq!(dropped, 1);
        assert_eq!(q.len(), 2);
        assert!(
            q.pending_for(NodeId(1)).is_none(),
            "the most-sent update was dropped"
        );
    }
}

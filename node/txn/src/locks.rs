//! The lock table of one group (replicated: part of the participant state), the
//! conflict policies, and the leader's pre-check set of proposed-but-unapplied PREPAREs
//! (not replicated: rebuilt empty at every leader change).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use kvlab_types::Key;
use serde::{Deserialize, Serialize};

use crate::ops::TxnId;

/// How a transaction locks one key: shared for keys it only reads, exclusive for keys
/// it appends to or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LockMode {
    /// Readers share.
    Shared,
    /// One writer, no readers.
    Exclusive,
}

/// The lock on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lock {
    /// Held by these readers.
    Shared(BTreeSet<TxnId>),
    /// Held by this writer.
    Exclusive(TxnId),
}

/// What to do on a conflict (`txn.conflict`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// Vote NO at once: no waiting, no deadlock, no detector (the default).
    #[default]
    NoWait,
    /// An older requester waits (in a bounded per-key queue) for younger holders; a
    /// younger one dies.
    WaitDie,
}

/// A conflict: `key` is held by `holders` in a mode incompatible with the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The key.
    pub key: Key,
    /// The transactions holding it (or, for the pre-check, proposing to).
    pub holders: Vec<TxnId>,
}

/// What a policy says about a request that met conflicts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyVerdict {
    /// No conflict: take the locks.
    Grant,
    /// Wait-die, requester older than every holder: wait on this key.
    Wait(Key),
    /// Refuse: NO_WAIT, or wait-die with an older holder.
    Die(Conflict),
}

/// Applies `policy` to the first conflict found (`None`: no conflict).
pub fn judge(policy: ConflictPolicy, txn: TxnId, conflict: Option<Conflict>) -> PolicyVerdict {
    match (policy, conflict) {
        (_, None) => PolicyVerdict::Grant,
        (ConflictPolicy::NoWait, Some(c)) => PolicyVerdict::Die(c),
        (ConflictPolicy::WaitDie, Some(c)) => {
            if c.holders.iter().all(|h| txn.is_older_than(h)) {
                PolicyVerdict::Wait(c.key)
            } else {
                PolicyVerdict::Die(c)
            }
        }
    }
}

fn compatible(lock: &Lock, txn: TxnId, mode: LockMode) -> Result<(), Vec<TxnId>> {
    match (lock, mode) {
        (Lock::Exclusive(h), _) if *h == txn => Ok(()),
        (Lock::Exclusive(h), _) => Err(vec![*h]),
        (Lock::Shared(_), LockMode::Shared) => Ok(()),
        (Lock::Shared(s), LockMode::Exclusive) => {
            let others: Vec<TxnId> = s.iter().copied().filter(|h| *h != txn).collect();
            if others.is_empty() {
                Ok(())
            } else {
                Err(others)
            }
        }
    }
}

/// The locks of one group, and the queues of PREPAREs waiting under wait-die.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockTable {
    locks: BTreeMap<Key, Lock>,
    /// Wait-die queues: key → waiting transactions, first come first served.
    queues: BTreeMap<Key, VecDeque<TxnId>>,
}

impl LockTable {
    /// The first conflict `txn` would meet taking `requests`.
    pub fn conflict(&self, txn: TxnId, requests: &BTreeMap<Key, LockMode>) -> Option<Conflict> {
        for (key, mode) in requests {
            if let Some(lock) = self.locks.get(key) {
                if let Err(holders) = compatible(lock, txn, *mode) {
                    return Some(Conflict {
                        key: key.clone(),
                        holders,
                    });
                }
            }
        }
        None
    }

    /// Takes every lock of `requests` for `txn`. The caller checked [`Self::conflict`]
    /// first; a request that conflicts anyway is not granted and is returned (an
    /// invariant breach the caller reports), so the table never holds two writers.
    pub fn acquire(&mut self, txn: TxnId, requests: &BTreeMap<Key, LockMode>) -> Option<Conflict> {
        if let Some(c) = self.conflict(txn, requests) {
            return Some(c);
        }
        for (key, mode) in requests {
            match (self.locks.get_mut(key), mode) {
                (None, LockMode::Shared) => {
                    self.locks
                        .insert(key.clone(), Lock::Shared(BTreeSet::from([txn])));
                }
                (Some(Lock::Shared(s)), LockMode::Shared) => {
                    s.insert(txn);
                }
                (_, LockMode::Exclusive) => {
                    self.locks.insert(key.clone(), Lock::Exclusive(txn));
                }
                (Some(Lock::Exclusive(_)), LockMode::Shared) => {} // held exclusively by txn
            }
        }
        None
    }

    /// Releases every lock `txn` holds on `keys`. Returns the keys that became free
    /// or less restricted, whose wait queues should be reconsidered.
    pub fn release(&mut self, txn: TxnId, keys: impl IntoIterator<Item = Key>) -> Vec<Key> {
        let mut freed = Vec::new();
        for key in keys {
            let drop_it = match self.locks.get_mut(&key) {
                Some(Lock::Exclusive(h)) if *h == txn => true,
                Some(Lock::Shared(s)) => {
                    if !s.remove(&txn) {
                        continue;
                    }
                    s.is_empty()
                }
                _ => continue,
            };
            if drop_it {
                self.locks.remove(&key);
            }
            freed.push(key);
        }
        freed
    }

    /// The lock on `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Lock> {
        self.locks.get(key)
    }

    /// Number of locked keys.
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    /// Whether no key is locked.
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// Queues `txn` behind `key`, unless that queue already holds `max` waiters.
    pub fn enqueue(&mut self, key: &Key, txn: TxnId, max: usize) -> bool {
        let q = self.queues.entry(key.clone()).or_default();
        if q.contains(&txn) {
            return true;
        }
        if q.len() >= max {
            if q.is_empty() {
                self.queues.remove(key);
            }
            return false;
        }
        q.push_back(txn);
        true
    }

    /// Takes `txn` out of every wait queue.
    pub fn dequeue(&mut self, txn: TxnId) {
        self.queues.retain(|_, q| {
            q.retain(|t| *t != txn);
            !q.is_empty()
        });
    }

    /// The transactions waiting behind `keys`, in queue order, each once.
    pub fn waiters_of(&self, keys: &[Key]) -> Vec<TxnId> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for key in keys {
            for t in self.queues.get(key).into_iter().flatten() {
                if seen.insert(*t) {
                    out.push(*t);
                }
            }
        }
        out
    }
}

/// The locks each transaction would take for its keys (`true`: written).
pub fn lock_requests(keys: &BTreeMap<Key, bool>, read_locks: bool) -> BTreeMap<Key, LockMode> {
    keys.iter()
        .filter(|(_, w)| **w || read_locks)
        .map(|(k, w)| {
            (
                k.clone(),
                if *w {
                    LockMode::Exclusive
                } else {
                    LockMode::Shared
                },
            )
        })
        .collect()
}

/// A leader's set of PREPAREs it has proposed but not yet applied, so that it can
/// refuse a conflicting PREPARE *without writing to Raft* (NO_WAIT's cheap NO).
///
/// Not replicated, and never authoritative: the apply-time check in
/// [`crate::ParticipantState::apply`] decides. A new leader starts with
/// [`LeaderPrecheck::default`] (empty); that is safe because a pre-check that misses a
/// conflict only costs a Raft entry whose apply votes NO.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderPrecheck {
    proposed: BTreeMap<TxnId, BTreeMap<Key, LockMode>>,
}

impl LeaderPrecheck {
    /// Checks `requests` of `txn` against the applied `table` and the proposed set.
    /// A transaction never conflicts with its own proposal (a retried PREPARE).
    pub fn check(
        &self,
        table: &LockTable,
        txn: TxnId,
        requests: &BTreeMap<Key, LockMode>,
    ) -> Option<Conflict> {
        if let Some(c) = table.conflict(txn, requests) {
            return Some(c);
        }
        for (key, mode) in requests {
            let holders: Vec<TxnId> = self
                .proposed
                .iter()
                .filter(|(t, _)| **t != txn)
                .filter_map(|(t, reqs)| reqs.get(key).map(|m| (*t, *m)))
                .filter(|(_, m)| *m == LockMode::Exclusive || *mode == LockMode::Exclusive)
                .map(|(t, _)| t)
                .collect();
            if !holders.is_empty() {
                return Some(Conflict {
                    key: key.clone(),
                    holders,
                });
            }
        }
        None
    }

    /// The leader's whole job on an entry a coordinator sent: for a PREPARE or a 1PC,
    /// pre-check its locks under `cfg.conflict` and, on a conflict the policy refuses,
    /// return the NO to answer at once **without proposing**. Otherwise record it as
    /// proposed, stamp it with the leader's clock `now`, and return `Ok`: the caller
    /// proposes `entry` and calls [`LeaderPrecheck::note_applied`] when it applies.
    pub fn admit(
        &mut self,
        state: &crate::ParticipantState,
        cfg: &crate::TxnConfig,
        entry: &mut crate::TxnEntry,
        now: kvlab_types::Time,
    ) -> Result<(), crate::EntryAnswer> {
        use crate::{EntryAnswer, Refusal, TxnBug, TxnEntry, Vote};
        let txn = entry.txn();
        let ops = match &*entry {
            TxnEntry::Prepare(p) => Some(&p.ops),
            TxnEntry::Execute1Pc { ops, .. } => Some(ops),
            TxnEntry::Commit { .. } | TxnEntry::Abort { .. } => None,
        };
        if let Some(ops) = ops {
            let requests = lock_requests(&crate::key_modes(ops), cfg.bug != TxnBug::NoReadLocks);
            let conflict = self.check(state.locks(), txn, &requests);
            // A 1PC never waits.
            let policy = match &*entry {
                TxnEntry::Execute1Pc { .. } => ConflictPolicy::NoWait,
                _ => cfg.conflict,
            };
            if let PolicyVerdict::Die(c) = judge(policy, txn, conflict) {
                return Err(EntryAnswer::Vote(Vote::No(Refusal::Conflict(c))));
            }
            self.note_proposed(txn, requests);
        }
        entry.stamp(now);
        Ok(())
    }

    /// The entry applied (or was lost with a leader change): stop counting its locks.
    pub fn on_applied(&mut self, entry: &crate::TxnEntry) {
        if let crate::TxnEntry::Prepare(_) | crate::TxnEntry::Execute1Pc { .. } = entry {
            self.note_applied(entry.txn());
        }
    }

    /// Whether `txn` has a proposal in flight here.
    pub fn is_proposed(&self, txn: TxnId) -> bool {
        self.proposed.contains_key(&txn)
    }

    /// Records that the leader proposed `txn`'s PREPARE.
    pub fn note_proposed(&mut self, txn: TxnId, requests: BTreeMap<Key, LockMode>) {
        self.proposed.insert(txn, requests);
    }

    /// Records that `txn`'s PREPARE was applied (or will never be).
    pub fn note_applied(&mut self, txn: TxnId) {
        self.proposed.remove(&txn);
    }

    /// Forgets everything: the node stopped leading, or just became leader.
    pub fn clear(&mut self) {
        self.proposed.clear();
    }

    /// Number of proposals tracked.
    pub fn len(&self) -> usize {
        self.proposed.len()
    }

    /// Whether none is tracked.
    pub fn is_empty(&self) -> bool {
        self.proposed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvlab_types::NodeId;

    fn t(seq: u64) -> TxnId {
        TxnId {
            node: NodeId(1),
            boot_epoch: 1,
            seq,
        }
    }
    fn req(pairs: &[(&str, LockMode)]) -> BTreeMap<Key, LockMode> {
        pairs.iter().map(|(k, m)| (k.to_string(), *m)).collect()
    }

    #[test]
    fn readers_share_and_a_writer_excludes_everyone() {
        let mut lt = LockTable::default();
        assert_eq!(lt.acquire(t(1), &req(&[("x", LockMode::Shared)])), None);
        assert_eq!(lt.acquire(t(2), &req(&[("x", LockMode::Shared)])), None);
        let c = lt
            .conflict(t(3), &req(&[("x", LockMode::Exclusive)]))
            .unwrap();
        assert_eq!(c.holders, vec![t(1), t(2)]);
        lt.release(t(1), ["x".to_string()]);
        lt.release(t(2), ["x".to_string()]);
        assert!(lt.is_empty());
        assert_eq!(lt.acquire(t(3), &req(&[("x", LockMode::Exclusive)])), None);
        assert!(
            lt.conflict(t(1), &req(&[("x", LockMode::Shared)]))
                .is_some()
        );
        // A retried request of the holder itself is no conflict.
        assert!(
            lt.conflict(t(3), &req(&[("x", LockMode::Exclusive)]))
                .is_none()
        );
    }

    #[test]
    fn wait_die_lets_only_the_older_requester_wait() {
        let c = |h| {
            Some(Conflict {
                key: "x".into(),
                holders: vec![t(h)],
            })
        };
        assert_eq!(
            judge(ConflictPolicy::WaitDie, t(1), c(5)),
            PolicyVerdict::Wait("x".into())
        );
        assert!(matches!(
            judge(ConflictPolicy::WaitDie, t(9), c(5)),
            PolicyVerdict::Die(_)
        ));
        assert!(matches!(
            judge(ConflictPolicy::NoWait, t(1), c(5)),
            PolicyVerdict::Die(_)
        ));
    }

    #[test]
    fn wait_queues_are_bounded() {
        let mut lt = LockTable::default();
        assert!(lt.enqueue(&"x".to_string(), t(1), 2));
        assert!(lt.enqueue(&"x".to_string(), t(2), 2));
        assert!(!lt.enqueue(&"x".to_string(), t(3), 2));
        assert_eq!(lt.waiters_of(&["x".to_string()]), vec![t(1), t(2)]);
        lt.dequeue(t(1));
        assert_eq!(lt.waiters_of(&["x".to_string()]), vec![t(2)]);
    }

    #[test]
    fn precheck_sees_proposed_but_unapplied_prepares() {
        let lt = LockTable::default();
        let mut pc = LeaderPrecheck::default();
        pc.note_proposed(t(1), req(&[("x", LockMode::Exclusive)]));
        assert!(
            pc.check(&lt, t(2), &req(&[("x", LockMode::Shared)]))
                .is_some()
        );
        assert!(
            pc.check(&lt, t(1), &req(&[("x", LockMode::Exclusive)]))
                .is_none()
        );
        pc.clear();
        assert!(
            pc.check(&lt, t(2), &req(&[("x", LockMode::Shared)]))
                .is_none()
        );
    }
}

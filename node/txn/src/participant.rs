//! The participant: the replicated, deterministic part of the protocol that every
//! group's state machine runs on each transaction entry of its Raft log.
//!
//! [`ParticipantState::apply`] is a pure function of the state, the store and the entry
//! (the time it needs travels *in* the entry, stamped by the proposing leader), so every
//! replica of the group reaches the same state, and a snapshot ([`serde`]) carries it.

use std::collections::BTreeMap;

use kvlab_types::{GroupId, Key, Time};
use serde::{Deserialize, Serialize};

use crate::bugs::TxnBug;
use crate::config::TxnConfig;
use crate::locks::{
    Conflict, ConflictPolicy, LockMode, LockTable, PolicyVerdict, judge, lock_requests,
};
use crate::ops::{
    BufferedWrite, EvalError, MicroOp, OpResult, TxnId, TxnStore, apply_writes, evaluate, key_modes,
};
use crate::record::{CasOutcome, Decision, TxnRecord, cas_abort, cas_commit};

/// A PREPARE: this group's micro-operations of `txn`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    /// The transaction.
    pub txn: TxnId,
    /// Its home group (holds the record).
    pub home: GroupId,
    /// The micro-operations on this group's keys, in the transaction's order.
    pub ops: Vec<MicroOp>,
    /// Every group the transaction touches; set only on the home's copy.
    pub participants: Vec<GroupId>,
    /// How long the home's `Pending` record lives.
    pub ttl_ms: u64,
    /// The proposing leader's clock, stamped by [`TxnEntry::stamp`] just before it
    /// proposes, so that every replica computes the same `expires_at`.
    pub proposed_at: Time,
}

/// One transaction entry of a group's Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnEntry {
    /// A transaction that touches only this group: lock check, evaluation and writes in
    /// one entry (1PC); no record.
    Execute1Pc {
        /// The transaction.
        txn: TxnId,
        /// Its micro-operations.
        ops: Vec<MicroOp>,
    },
    /// Phase one.
    Prepare(Prepare),
    /// The commit decision. At the home it is the CAS `Pending → Committed`.
    Commit {
        /// The transaction.
        txn: TxnId,
        /// Its home group.
        home: GroupId,
    },
    /// The abort decision. At the home it is the CAS `Pending → Aborted`, or creates
    /// `Aborted` if there is no record.
    Abort {
        /// The transaction.
        txn: TxnId,
        /// Its home group.
        home: GroupId,
    },
}

impl TxnEntry {
    /// The transaction the entry is about.
    pub fn txn(&self) -> TxnId {
        match self {
            TxnEntry::Execute1Pc { txn, .. }
            | TxnEntry::Commit { txn, .. }
            | TxnEntry::Abort { txn, .. } => *txn,
            TxnEntry::Prepare(p) => p.txn,
        }
    }

    /// Stamps a PREPARE with the proposing leader's clock. Call it once, just before
    /// proposing; other entries carry no time.
    pub fn stamp(&mut self, now: Time) {
        if let TxnEntry::Prepare(p) = self {
            p.proposed_at = now;
        }
    }
}

/// Why a participant refuses (votes NO, or refuses a 1PC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// A lock conflict (NO_WAIT, or wait-die with an older holder).
    Conflict(Conflict),
    /// Wait-die: the key's wait queue is full.
    QueueFull {
        /// The key.
        key: Key,
    },
    /// The transaction already finished here (the finished marker).
    Finished(Decision),
    /// The home already holds `Aborted` for it (a resolver got there first).
    RecordAborted,
    /// More distinct keys than `txn.max_keys_per_txn`.
    TooManyKeys {
        /// Keys touched.
        keys: usize,
        /// The bound.
        max: usize,
    },
    /// The group remembers `txn.records_max` transactions already (no GC in wave 2).
    RecordsFull {
        /// The bound.
        max: usize,
    },
    /// The micro-operations do not fit the stored values.
    Eval(EvalError),
}

/// A participant's vote on a PREPARE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Vote {
    /// Prepared: locks held, writes buffered; the results of this group's micro-ops.
    Yes {
        /// Results in the order of the PREPARE's ops.
        results: Vec<OpResult>,
    },
    /// Refused.
    No(Refusal),
}

/// What applying an entry answers to whoever proposed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryAnswer {
    /// The 1PC result: committed with these results, or refused (nothing changed).
    OnePc(Result<Vec<OpResult>, Refusal>),
    /// The vote on a PREPARE.
    Vote(Vote),
    /// Wait-die: the PREPARE waits in a lock queue; its vote comes later, in
    /// [`Applied::woken`] of the entry that frees the lock.
    Waiting,
    /// The transaction's fate as this group now holds it (after a Commit or Abort
    /// entry). At the home it is the record's decision, which may be the *other* one
    /// when the CAS was refused.
    Decided(Decision),
    /// A Commit at the home found no record: the home never prepared. Nothing changed.
    NoRecord,
    /// An Abort at the home had to create a record and the group is full.
    RecordsFull {
        /// The bound.
        max: usize,
    },
}

/// The result of [`ParticipantState::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The answer for the entry's proposer.
    pub answer: EntryAnswer,
    /// Votes of waiting PREPAREs that this entry's releases decided (wait-die): send
    /// each to its coordinator, `txn.node`.
    pub woken: Vec<(TxnId, Vote)>,
}

impl Applied {
    fn just(answer: EntryAnswer) -> Applied {
        Applied {
            answer,
            woken: Vec::new(),
        }
    }
}

/// A transaction prepared here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedTxn {
    /// Its home group.
    pub home: GroupId,
    /// Keys it holds locks on.
    pub locked: Vec<Key>,
    /// Writes to apply on commit.
    pub writes: Vec<BufferedWrite>,
    /// Whether the writes were applied already (`writes-at-prepare`).
    pub writes_applied: bool,
    /// The vote's results (a duplicate PREPARE is answered with them).
    pub results: Vec<OpResult>,
    /// When the PREPARE was proposed (leader clock); the resolver's reference.
    pub prepared_at: Time,
}

/// A transaction that finished here: its decision and, for 1PC, the results that a
/// duplicate `Execute1Pc` is answered with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    /// Committed or aborted.
    pub decision: Decision,
    /// A committed 1PC's results.
    pub results: Option<Vec<OpResult>>,
}

/// Counters (replicated, so identical on every replica).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantStats {
    /// PREPAREs that voted YES.
    pub prepared: u64,
    /// PREPAREs that voted NO at apply.
    pub refused: u64,
    /// PREPAREs that waited (wait-die).
    pub waited: u64,
    /// Transactions committed here (2PC).
    pub committed: u64,
    /// Transactions aborted here (2PC).
    pub aborted: u64,
    /// 1PC transactions committed.
    pub one_pc_committed: u64,
    /// 1PC transactions refused.
    pub one_pc_refused: u64,
    /// Refusals because `records_max` was reached.
    pub records_full: u64,
    /// Buffered writes that no longer fitted their key (only under a broken variant).
    pub writes_skipped: u64,
}

/// One group's transaction state: locks, prepared and waiting transactions, records (at
/// the home) and finished markers. Records and markers are never collected (wave 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantState {
    group: GroupId,
    locks: LockTable,
    prepared: BTreeMap<TxnId, PreparedTxn>,
    waiting: BTreeMap<TxnId, Prepare>,
    records: BTreeMap<TxnId, TxnRecord>,
    finished: BTreeMap<TxnId, Finished>,
    stats: ParticipantStats,
}

impl ParticipantState {
    /// The empty state of group `group`.
    pub fn new(group: GroupId) -> ParticipantState {
        ParticipantState {
            group,
            locks: LockTable::default(),
            prepared: BTreeMap::new(),
            waiting: BTreeMap::new(),
            records: BTreeMap::new(),
            finished: BTreeMap::new(),
            stats: ParticipantStats::default(),
        }
    }

    /// Applies one committed log entry. Deterministic; never panics.
    pub fn apply(
        &mut self,
        cfg: &TxnConfig,
        store: &mut dyn TxnStore,
        entry: &TxnEntry,
    ) -> Applied {
        match entry {
            TxnEntry::Execute1Pc { txn, ops } => {
                Applied::just(self.apply_1pc(cfg, store, *txn, ops))
            }
            TxnEntry::Prepare(p) => self.apply_prepare(cfg, store, p),
            TxnEntry::Commit { txn, home } => self.apply_commit(cfg, store, *txn, *home),
            TxnEntry::Abort { txn, home } => self.apply_abort(cfg, store, *txn, *home),
        }
    }

    /// How many transactions the group remembers (bounded by `txn.records_max`).
    pub fn occupancy(&self) -> usize {
        self.prepared.len() + self.waiting.len() + self.records.len() + self.finished.len()
    }

    fn admit(&mut self, cfg: &TxnConfig, ops: &[MicroOp]) -> Result<BTreeMap<Key, bool>, Refusal> {
        let keys = key_modes(ops);
        if keys.len() > cfg.max_keys_per_txn {
            return Err(Refusal::TooManyKeys {
                keys: keys.len(),
                max: cfg.max_keys_per_txn,
            });
        }
        if self.occupancy() >= cfg.records_max {
            self.stats.records_full += 1;
            return Err(Refusal::RecordsFull {
                max: cfg.records_max,
            });
        }
        Ok(keys)
    }

    fn is_home(&self, cfg: &TxnConfig, home: GroupId) -> bool {
        home == self.group && cfg.bug != TxnBug::NoDecisionRecord
    }

    fn apply_1pc(
        &mut self,
        cfg: &TxnConfig,
        store: &mut dyn TxnStore,
        txn: TxnId,
        ops: &[MicroOp],
    ) -> EntryAnswer {
        if let Some(f) = self.finished.get(&txn) {
            return EntryAnswer::OnePc(match (&f.decision, &f.results) {
                (Decision::Commit, Some(r)) => Ok(r.clone()),
                (d, _) => Err(Refusal::Finished(*d)),
            });
        }
        let refuse = |me: &mut Self, why: Refusal, mark: bool| {
            me.stats.one_pc_refused += 1;
            if mark {
                // A duplicate of this entry must not apply later.
                me.finished.insert(
                    txn,
                    Finished {
                        decision: Decision::Abort,
                        results: None,
                    },
                );
            }
            EntryAnswer::OnePc(Err(why))
        };
        let keys = match self.admit(cfg, ops) {
            Ok(k) => k,
            Err(why) => return refuse(self, why, false),
        };
        let requests = lock_requests(&keys, cfg.bug != TxnBug::NoReadLocks);
        if let Some(c) = self.locks.conflict(txn, &requests) {
            return refuse(self, Refusal::Conflict(c), true);
        }
        match evaluate(store, ops) {
            Err(e) => refuse(self, Refusal::Eval(e), true),
            Ok((results, writes)) => {
                self.stats.writes_skipped += apply_writes(store, &writes) as u64;
                self.stats.one_pc_committed += 1;
                let f = Finished {
                    decision: Decision::Commit,
                    results: Some(results.clone()),
                };
                self.finished.insert(txn, f);
                EntryAnswer::OnePc(Ok(results))
            }
        }
    }

    fn apply_prepare(&mut self, cfg: &TxnConfig, store: &mut dyn TxnStore, p: &Prepare) -> Applied {
        if let Some(prep) = self.prepared.get(&p.txn) {
            return Applied::just(EntryAnswer::Vote(Vote::Yes {
                results: prep.results.clone(),
            }));
        }
        if self.waiting.contains_key(&p.txn) {
            return Applied::just(EntryAnswer::Waiting);
        }
        if let Some(why) = self.refusal_by_history(cfg, p) {
            self.stats.refused += 1;
            return Applied::just(EntryAnswer::Vote(Vote::No(why)));
        }
        let keys = match self.admit(cfg, &p.ops) {
            Ok(k) => k,
            Err(why) => {
                self.stats.refused += 1;
                return Applied::just(EntryAnswer::Vote(Vote::No(why)));
            }
        };
        let requests = lock_requests(&keys, cfg.bug != TxnBug::NoReadLocks);
        let answer = match self.try_lock(cfg, store, p, &requests) {
            Some(vote) => EntryAnswer::Vote(vote),
            None => EntryAnswer::Waiting,
        };
        Applied::just(answer)
    }

    /// A refusal that follows from what happened to the transaction before: it
    /// finished here, or its home record says aborted.
    fn refusal_by_history(&self, cfg: &TxnConfig, p: &Prepare) -> Option<Refusal> {
        if self.is_home(cfg, p.home) {
            match self.records.get(&p.txn) {
                Some(TxnRecord::Aborted) => return Some(Refusal::RecordAborted),
                Some(TxnRecord::Committed) => return Some(Refusal::Finished(Decision::Commit)),
                _ => {}
            }
        }
        match self.finished.get(&p.txn) {
            Some(f) if cfg.bug != TxnBug::NoFinishedMarker => Some(Refusal::Finished(f.decision)),
            _ => None,
        }
    }

    /// Judges `requests` under the conflict policy: a vote, or `None` if the PREPARE
    /// now waits in a lock queue.
    fn try_lock(
        &mut self,
        cfg: &TxnConfig,
        store: &mut dyn TxnStore,
        p: &Prepare,
        requests: &BTreeMap<Key, LockMode>,
    ) -> Option<Vote> {
        let policy = cfg.conflict;
        match judge(policy, p.txn, self.locks.conflict(p.txn, requests)) {
            PolicyVerdict::Grant => Some(self.prepare_now(cfg, store, p, requests)),
            PolicyVerdict::Die(c) => {
                self.stats.refused += 1;
                Some(Vote::No(Refusal::Conflict(c)))
            }
            PolicyVerdict::Wait(key) => {
                debug_assert_eq!(policy, ConflictPolicy::WaitDie);
                if self.locks.enqueue(&key, p.txn, cfg.lock_wait_queue_max) {
                    self.stats.waited += 1;
                    self.waiting.insert(p.txn, p.clone());
                    None
                } else {
                    self.stats.refused += 1;
                    Some(Vote::No(Refusal::QueueFull { key }))
                }
            }
        }
    }

    /// Takes the locks (free: checked by the caller), evaluates, buffers the writes and,
    /// at the home, creates the `Pending` record.
    fn prepare_now(
        &mut self,
        cfg: &TxnConfig,
        store: &mut dyn TxnStore,
        p: &Prepare,
        requests: &BTreeMap<Key, LockMode>,
    ) -> Vote {
        let (results, writes) = match evaluate(store, &p.ops) {
            Ok(r) => r,
            Err(e) => {
                self.stats.refused += 1;
                return Vote::No(Refusal::Eval(e));
            }
        };
        if let Some(c) = self.locks.acquire(p.txn, requests) {
            // The caller checked; a conflict here is a broken invariant, refused safely.
            self.stats.refused += 1;
            return Vote::No(Refusal::Conflict(c));
        }
        if self.is_home(cfg, p.home) {
            let expires_at = p
                .proposed_at
                .saturating_add(std::time::Duration::from_millis(p.ttl_ms));
            let participants = p.participants.clone();
            self.records.insert(
                p.txn,
                TxnRecord::Pending {
                    participants,
                    expires_at,
                },
            );
        }
        let mut locked: Vec<Key> = requests.keys().cloned().collect();
        if cfg.bug == TxnBug::ReleaseBeforeDecision {
            // BROKEN: the locks go as soon as the vote is cast.
            self.locks.release(p.txn, std::mem::take(&mut locked));
        }
        let writes_applied = cfg.bug == TxnBug::WritesAtPrepare;
        if writes_applied {
            // BROKEN: the writes are visible before the decision, and stay on abort.
            self.stats.writes_skipped += apply_writes(store, &writes) as u64;
        }
        self.stats.prepared += 1;
        let prep = PreparedTxn {
            home: p.home,
            locked,
            writes,
            writes_applied,
            results: results.clone(),
            prepared_at: p.proposed_at,
        };
        self.prepared.insert(p.txn, prep);
        Vote::Yes { results }
    }

    fn apply_commit(
        &mut self,
        cfg: &TxnConfig,
        store: &mut dyn TxnStore,
        txn: TxnId,
        home: GroupId,
    ) -> Applied {
        if self.is_home(cfg, home) {
            match cas_commit(self.records.get_mut(&txn)) {
                CasOutcome::Done => {}
                CasOutcome::Refused(d) => return Applied::just(EntryAnswer::Decided(d)),
                CasOutcome::Missing => {
                    return Applied::just(match self.finished.get(&txn) {
                        Some(f) => EntryAnswer::Decided(f.decision),
                        None => EntryAnswer::NoRecord,
                    });
                }
            }
        }
        self.decide_here(cfg, store, txn, Decision::Commit)
    }

    fn apply_abort(
        &mut self,
        cfg: &TxnConfig,
        store: &mut dyn TxnStore,
        txn: TxnId,
        home: GroupId,
    ) -> Applied {
        if self.is_home(cfg, home) {
            match self.records.get_mut(&txn) {
                Some(r) => {
                    if let CasOutcome::Refused(d) = cas_abort(r) {
                        return Applied::just(EntryAnswer::Decided(d));
                    }
                }
                None => {
                    if let Some(f) = self.finished.get(&txn) {
                        // A 1PC that finished here: its marker is its record.
                        return Applied::just(EntryAnswer::Decided(f.decision));
                    }
                    if self.occupancy() >= cfg.records_max {
                        self.stats.records_full += 1;
                        return Applied::just(EntryAnswer::RecordsFull {
                            max: cfg.records_max,
                        });
                    }
                    self.records.insert(txn, TxnRecord::Aborted);
                }
            }
        }
        self.decide_here(cfg, store, txn, Decision::Abort)
    }

    /// Carries out `decision` for `txn` at this group: a prepared transaction applies
    /// (commit) or drops (abort) its writes and releases its locks; a waiting one leaves
    /// its queue; the finished marker is written. A transaction that already finished
    /// keeps its first decision.
    fn decide_here(
        &mut self,
        cfg: &TxnConfig,
        store: &mut dyn TxnStore,
        txn: TxnId,
        decision: Decision,
    ) -> Applied {
        let mut woken = Vec::new();
        if let Some(prep) = self.prepared.remove(&txn) {
            if decision == Decision::Commit && !prep.writes_applied {
                self.stats.writes_skipped += apply_writes(store, &prep.writes) as u64;
            }
            let freed = self.locks.release(txn, prep.locked);
            woken = self.wake(cfg, store, &freed);
        } else if self.waiting.remove(&txn).is_some() {
            self.locks.dequeue(txn);
        } else if let Some(f) = self.finished.get(&txn) {
            return Applied::just(EntryAnswer::Decided(f.decision));
        } else if self.occupancy() >= cfg.records_max {
            // Unknown here and no room for its marker. Safe without one: a PREPARE of it
            // can never be admitted while the group is full, and nothing is collected.
            self.stats.records_full += 1;
            return Applied::just(EntryAnswer::Decided(decision));
        }
        match decision {
            Decision::Commit => self.stats.committed += 1,
            Decision::Abort => self.stats.aborted += 1,
        }
        // The marker may exist already (re-prepared under `no-finished-marker`).
        self.finished.insert(
            txn,
            Finished {
                decision,
                results: None,
            },
        );
        Applied {
            answer: EntryAnswer::Decided(decision),
            woken,
        }
    }

    /// Reconsiders the PREPAREs waiting behind `freed` keys, in queue order.
    fn wake(
        &mut self,
        cfg: &TxnConfig,
        store: &mut dyn TxnStore,
        freed: &[Key],
    ) -> Vec<(TxnId, Vote)> {
        let mut votes = Vec::new();
        for t in self.locks.waiters_of(freed) {
            let Some(p) = self.waiting.remove(&t) else {
                self.locks.dequeue(t);
                continue;
            };
            self.locks.dequeue(t);
            let requests = lock_requests(&key_modes(&p.ops), cfg.bug != TxnBug::NoReadLocks);
            if let Some(vote) = self.try_lock(cfg, store, &p, &requests) {
                votes.push((t, vote));
            }
        }
        votes
    }

    /// Whether a plain (non-transactional) operation on `key` conflicts with a held
    /// lock: plain reads and writes run as single-key 1PC transactions with this check,
    /// so they never see or overwrite what a prepared transaction is about to change.
    pub fn plain_conflict(&self, key: &str, write: bool) -> Option<Conflict> {
        let mode = if write {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        };
        let probe = TxnId {
            node: kvlab_types::NodeId(u32::MAX),
            boot_epoch: u64::MAX,
            seq: u64::MAX,
        };
        self.locks
            .conflict(probe, &BTreeMap::from([(key.to_string(), mode)]))
    }

    /// This state's group.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The lock table.
    pub fn locks(&self) -> &LockTable {
        &self.locks
    }

    /// The transactions prepared here.
    pub fn prepared(&self) -> &BTreeMap<TxnId, PreparedTxn> {
        &self.prepared
    }

    /// Whether `txn` waits in a lock queue here.
    pub fn is_waiting(&self, txn: TxnId) -> bool {
        self.waiting.contains_key(&txn)
    }

    /// The record of `txn` (home only).
    pub fn record(&self, txn: TxnId) -> Option<&TxnRecord> {
        self.records.get(&txn)
    }

    /// The finished marker of `txn`.
    pub fn finished(&self, txn: TxnId) -> Option<&Finished> {
        self.finished.get(&txn)
    }

    /// The counters.
    pub fn stats(&self) -> &ParticipantStats {
        &self.stats
    }
}

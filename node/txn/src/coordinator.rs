//! The coordinator of one transaction, on the gateway that took the client's request.
//! Sans-IO: it says which entry to send to which group's leader ([`Request`]); the node
//! routes it, and feeds back what the group's log answered ([`Coordinator::on_answer`]) and
//! the passing of time ([`Coordinator::on_tick`]).
//!
//! It keeps nothing durable: if its node dies, the participants' resolvers finish the
//! transaction, and the client's operation is `info`.

use std::collections::BTreeMap;
use std::time::Duration;

use kvlab_types::{GroupId, Key, Time};
use serde::{Deserialize, Serialize};

use crate::bugs::TxnBug;
use crate::config::TxnConfig;
use crate::ops::{MicroOp, OpResult, TxnId, key_modes};
use crate::participant::{EntryAnswer, Prepare, Refusal, TxnEntry, Vote};
use crate::record::Decision;

/// Send `entry` to the leader of `group` (its leader stamps a PREPARE with
/// [`TxnEntry::stamp`], pre-checks it with [`crate::LeaderPrecheck`], and proposes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The destination group.
    pub group: GroupId,
    /// The entry.
    pub entry: TxnEntry,
}

/// Why a transaction surely did not commit (history `fail`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbortReason {
    /// A participant refused (its vote, or a 1PC refusal).
    Refused {
        /// The group.
        group: GroupId,
        /// Why.
        refusal: Refusal,
    },
    /// Not every vote arrived within `prepare_timeout_ms`.
    PrepareTimeout,
    /// The home's record was already `Aborted` (a resolver aborted it first).
    AbortedByResolver,
}

/// What the client is told; maps one to one onto history outcomes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOutcome {
    /// `ok`: the home applied `Committed` (or the 1PC entry applied). Results in the
    /// transaction's order.
    Committed {
        /// One result per micro-op.
        results: Vec<OpResult>,
    },
    /// `fail`: the home's record is `Aborted` (the abort CAS succeeded, or a commit CAS
    /// found it), or a 1PC entry was refused at apply: surely not committed.
    Aborted {
        /// Why.
        reason: AbortReason,
    },
    /// `info`: the outcome is not known here.
    Unknown {
        /// Why.
        reason: String,
    },
}

impl TxnOutcome {
    /// The history type: `ok`, `fail` or `info`.
    pub fn history_type(&self) -> &'static str {
        match self {
            TxnOutcome::Committed { .. } => "ok",
            TxnOutcome::Aborted { .. } => "fail",
            TxnOutcome::Unknown { .. } => "info",
        }
    }
}

/// A transaction refused before anything was sent (definite: nothing happened).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// No micro-operations.
    #[error("a transaction needs at least one micro-op")]
    Empty,
    /// More micro-operations than [`crate::MAX_MICRO_OPS`].
    #[error("{ops} micro-ops, more than {max}", max = crate::MAX_MICRO_OPS)]
    TooManyOps {
        /// How many.
        ops: usize,
    },
    /// More distinct keys than `txn.max_keys_per_txn`.
    #[error("{keys} keys, more than txn.max_keys_per_txn = {max}")]
    TooManyKeys {
        /// Keys touched.
        keys: usize,
        /// The bound.
        max: usize,
    },
}

/// What one coordinator input produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoordStep {
    /// Entries to send.
    pub send: Vec<Request>,
    /// The client's answer, exactly once over the coordinator's life.
    pub outcome: Option<TxnOutcome>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// One group: `Execute1Pc`; `aborting` after a leader's pre-check refused it, while
    /// an `Abort` at the group settles whether some copy applied after all.
    OnePc { aborting: bool },
    /// Waiting for votes.
    Preparing,
    /// The decision was sent to the home; waiting for the CAS's answer.
    Deciding(Decision),
    /// The home decided; telling the other participants.
    Finishing(Decision),
    /// Nothing more to do.
    Done,
}

#[derive(Clone, Debug)]
struct Part {
    /// `(index in the transaction, op)`.
    ops: Vec<(usize, MicroOp)>,
    /// The YES results, once voted.
    yes: Option<Vec<OpResult>>,
    /// Acknowledged the decision.
    acked: bool,
}

/// The coordinator of one transaction. See [the module docs](self).
#[derive(Clone, Debug)]
pub struct Coordinator {
    txn: TxnId,
    cfg: TxnConfig,
    home: GroupId,
    parts: BTreeMap<GroupId, Part>,
    n_ops: usize,
    phase: Phase,
    started_at: Time,
    last_send: Time,
    attempts: u32,
    answered: bool,
    /// The refusal that made us send Abort, reported once the home confirms it.
    pending_abort: Option<AbortReason>,
    /// When every vote was in (for the prepare/decide latency split).
    pub votes_done_at: Option<Time>,
    /// When the client's outcome was produced.
    pub outcome_at: Option<Time>,
}

impl Coordinator {
    /// Starts `txn` at `now`: splits `ops` by group (`group_of`), names the home (the
    /// first key's group), and returns the first entries to send.
    pub fn start(
        txn: TxnId,
        ops: Vec<MicroOp>,
        cfg: &TxnConfig,
        now: Time,
        group_of: impl Fn(&Key) -> GroupId,
    ) -> Result<(Coordinator, CoordStep), TxnError> {
        let first = ops.first().ok_or(TxnError::Empty)?;
        if ops.len() > crate::MAX_MICRO_OPS {
            return Err(TxnError::TooManyOps { ops: ops.len() });
        }
        let keys = key_modes(&ops).len();
        if keys > cfg.max_keys_per_txn {
            return Err(TxnError::TooManyKeys {
                keys,
                max: cfg.max_keys_per_txn,
            });
        }
        let home = group_of(first.key());
        let mut parts: BTreeMap<GroupId, Part> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            let part = parts.entry(group_of(op.key())).or_insert(Part {
                ops: Vec::new(),
                yes: None,
                acked: false,
            });
            part.ops.push((i, op.clone()));
        }
        let phase = if parts.len() == 1 && cfg.one_pc {
            Phase::OnePc { aborting: false }
        } else {
            Phase::Preparing
        };
        let mut c = Coordinator {
            txn,
            cfg: cfg.clone(),
            home,
            parts,
            n_ops: ops.len(),
            phase,
            started_at: now,
            last_send: now,
            attempts: 0,
            answered: false,
            pending_abort: None,
            votes_done_at: None,
            outcome_at: None,
        };
        let send = c.resend();
        Ok((
            c,
            CoordStep {
                send,
                outcome: None,
            },
        ))
    }

    /// The transaction.
    pub fn txn(&self) -> TxnId {
        self.txn
    }

    /// Its home group.
    pub fn home(&self) -> GroupId {
        self.home
    }

    /// The groups it touches.
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.parts.keys().copied()
    }

    /// How long its phases took, once the client's outcome was produced (see
    /// [`kvlab_types::TxnTiming`]: 1PC counts its one entry as prepare; an abort's
    /// "decide" is the abort's CAS at the home).
    pub fn timing(&self) -> Option<kvlab_types::TxnTiming> {
        let done = self.outcome_at?;
        let votes = if self.phase_was_one_pc() {
            done
        } else {
            self.votes_done_at.unwrap_or(done)
        };
        let ns = |from: Time, to: Time| to.saturating_since(from).as_nanos() as u64;
        Some(kvlab_types::TxnTiming {
            groups: u32::try_from(self.parts.len()).unwrap_or(u32::MAX),
            prepare_ns: ns(self.started_at, votes),
            decide_ns: ns(votes, done),
        })
    }

    /// Whether it ran (or began) as one 1PC entry.
    fn phase_was_one_pc(&self) -> bool {
        self.parts.len() == 1 && self.cfg.one_pc
    }

    /// Whether it has nothing more to do (it may be dropped).
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// When [`Coordinator::on_tick`] next has something to do.
    pub fn next_wakeup(&self) -> Option<Time> {
        match self.phase {
            Phase::Done => None,
            _ => Some(self.last_send.saturating_add(self.retry())),
        }
    }

    fn retry(&self) -> Duration {
        Duration::from_millis(self.cfg.decision_retry_ms)
    }

    fn prepare(&self, group: GroupId, part: &Part) -> TxnEntry {
        let participants = if group == self.home {
            self.parts.keys().copied().collect()
        } else {
            Vec::new()
        };
        TxnEntry::Prepare(Prepare {
            txn: self.txn,
            home: self.home,
            ops: part.ops.iter().map(|(_, op)| op.clone()).collect(),
            participants,
            ttl_ms: self.cfg.txn_ttl_ms,
            proposed_at: Time::ZERO,
        })
    }

    fn decision_entry(&self, d: Decision) -> TxnEntry {
        match d {
            Decision::Commit => TxnEntry::Commit {
                txn: self.txn,
                home: self.home,
            },
            Decision::Abort => TxnEntry::Abort {
                txn: self.txn,
                home: self.home,
            },
        }
    }

    /// Everything the current phase is waiting for, (re)sent.
    fn resend(&mut self) -> Vec<Request> {
        let txn = self.txn;
        let req = |group, entry| Request { group, entry };
        match self.phase {
            Phase::OnePc { aborting: false } => {
                let ops = self
                    .parts
                    .values()
                    .flat_map(|p| p.ops.iter().map(|(_, op)| op.clone()))
                    .collect();
                vec![req(self.home, TxnEntry::Execute1Pc { txn, ops })]
            }
            Phase::OnePc { aborting: true } => {
                vec![req(self.home, self.decision_entry(Decision::Abort))]
            }
            Phase::Preparing => self
                .parts
                .iter()
                .filter(|(_, p)| p.yes.is_none())
                .map(|(g, p)| req(*g, self.prepare(*g, p)))
                .collect(),
            Phase::Deciding(d) => vec![req(self.home, self.decision_entry(d))],
            Phase::Finishing(d) => self
                .parts
                .iter()
                .filter(|(g, p)| **g != self.home && !p.acked)
                .map(|(g, _)| req(*g, self.decision_entry(d)))
                .collect(),
            Phase::Done => Vec::new(),
        }
    }

    fn finish(&mut self, now: Time, outcome: TxnOutcome, step: &mut CoordStep) {
        if !self.answered {
            self.answered = true;
            self.outcome_at = Some(now);
            step.outcome = Some(outcome);
        }
    }

    fn enter(&mut self, phase: Phase, now: Time, step: &mut CoordStep) {
        self.phase = phase;
        self.attempts = 0;
        self.last_send = now;
        step.send.extend(self.resend());
        if let Phase::Finishing(_) = phase {
            if step.send.is_empty() {
                self.phase = Phase::Done;
            }
        }
    }

    /// Group `group`'s log answered `answer` to an entry of this transaction (or its
    /// leader's pre-check refused a PREPARE: `EntryAnswer::Vote(Vote::No(..))`).
    /// Duplicated, late and reordered answers are harmless.
    pub fn on_answer(&mut self, group: GroupId, answer: &EntryAnswer, now: Time) -> CoordStep {
        let mut step = CoordStep::default();
        if !self.parts.contains_key(&group) {
            return step;
        }
        match self.phase {
            Phase::OnePc { aborting } => {
                self.on_one_pc_answer(group, aborting, answer, now, &mut step)
            }
            Phase::Preparing => self.on_vote(group, answer, now, &mut step),
            Phase::Deciding(d) if group == self.home => {
                self.on_home_decision(d, answer, now, &mut step)
            }
            Phase::Finishing(_) => {
                if let EntryAnswer::Decided(_) = answer {
                    if let Some(p) = self.parts.get_mut(&group) {
                        p.acked = true;
                    }
                    if self.parts.iter().all(|(g, p)| *g == self.home || p.acked) {
                        self.phase = Phase::Done;
                    }
                }
            }
            Phase::Deciding(_) | Phase::Done => {}
        }
        step
    }

    fn on_one_pc_answer(
        &mut self,
        group: GroupId,
        aborting: bool,
        answer: &EntryAnswer,
        now: Time,
        step: &mut CoordStep,
    ) {
        match (answer, aborting) {
            (EntryAnswer::OnePc(Ok(results)), _) => {
                let results = results.clone();
                self.finish(now, TxnOutcome::Committed { results }, step);
                self.phase = Phase::Done;
            }
            (EntryAnswer::OnePc(Err(refusal)), _) => {
                let reason = AbortReason::Refused {
                    group,
                    refusal: refusal.clone(),
                };
                self.finish(now, TxnOutcome::Aborted { reason }, step);
                self.phase = Phase::Done;
            }
            (EntryAnswer::Vote(Vote::No(_)), false) => {
                // The leader's pre-check refused without a log entry, but an earlier copy
                // of the entry may still be in the log: settle it with an Abort in the
                // same log (the finished marker acts as the record).
                self.enter(Phase::OnePc { aborting: true }, now, step);
            }
            (EntryAnswer::Decided(Decision::Abort), true) => {
                let reason = AbortReason::Refused {
                    group,
                    refusal: Refusal::Finished(Decision::Abort),
                };
                self.finish(now, TxnOutcome::Aborted { reason }, step);
                self.phase = Phase::Done;
            }
            (EntryAnswer::Decided(Decision::Commit), true) => {
                // A copy applied after all: fetch its recorded results.
                self.enter(Phase::OnePc { aborting: false }, now, step);
            }
            (EntryAnswer::RecordsFull { .. }, true) => {
                self.finish(
                    now,
                    TxnOutcome::Unknown {
                        reason: "home records full".into(),
                    },
                    step,
                );
                self.phase = Phase::Done;
            }
            _ => {}
        }
    }

    fn on_vote(&mut self, group: GroupId, answer: &EntryAnswer, now: Time, step: &mut CoordStep) {
        match answer {
            EntryAnswer::Vote(Vote::Yes { results }) => {
                if let Some(p) = self.parts.get_mut(&group) {
                    p.yes = Some(results.clone());
                }
                let all = self.parts.values().all(|p| p.yes.is_some());
                let partial = self.cfg.bug == TxnBug::CommitOnPartialVotes && group == self.home;
                if all || partial {
                    // BROKEN when `partial` and not `all`: the others' votes are ignored.
                    self.votes_done_at = Some(now);
                    self.enter(Phase::Deciding(Decision::Commit), now, step);
                }
            }
            EntryAnswer::Vote(Vote::No(refusal)) => {
                self.votes_done_at = Some(now);
                let reason = AbortReason::Refused {
                    group,
                    refusal: refusal.clone(),
                };
                self.pending_abort = Some(reason);
                self.enter(Phase::Deciding(Decision::Abort), now, step);
            }
            _ => {}
        }
    }

    fn on_home_decision(
        &mut self,
        sent: Decision,
        answer: &EntryAnswer,
        now: Time,
        step: &mut CoordStep,
    ) {
        match answer {
            EntryAnswer::Decided(Decision::Commit) if sent == Decision::Commit => {
                let results = self.results();
                self.finish(now, TxnOutcome::Committed { results }, step);
                self.enter(Phase::Finishing(Decision::Commit), now, step);
            }
            EntryAnswer::Decided(Decision::Abort) => {
                let reason = match (sent, self.pending_abort.take()) {
                    (Decision::Abort, Some(r)) => r,
                    (Decision::Abort, None) => AbortReason::PrepareTimeout,
                    (Decision::Commit, _) => AbortReason::AbortedByResolver,
                };
                self.finish(now, TxnOutcome::Aborted { reason }, step);
                self.enter(Phase::Finishing(Decision::Abort), now, step);
            }
            EntryAnswer::Decided(Decision::Commit) => {
                // Our abort met a Committed record: only a broken variant commits behind
                // the coordinator's back. The client cannot be told `ok` without reads.
                let reason = "the home's record is Committed, not by this coordinator".into();
                self.finish(now, TxnOutcome::Unknown { reason }, step);
                self.enter(Phase::Finishing(Decision::Commit), now, step);
            }
            EntryAnswer::NoRecord | EntryAnswer::RecordsFull { .. } => {
                let reason = format!("the home answered {answer:?}");
                self.finish(now, TxnOutcome::Unknown { reason }, step);
                self.phase = Phase::Done;
            }
            _ => {}
        }
    }

    /// The YES results, in the transaction's order (a group that did not vote YES —
    /// only under `commit-on-partial-votes` — contributes none).
    fn results(&self) -> Vec<OpResult> {
        let mut slots: Vec<Option<OpResult>> = vec![None; self.n_ops];
        for p in self.parts.values() {
            for ((i, _), r) in p.ops.iter().zip(p.yes.iter().flatten()) {
                if let Some(s) = slots.get_mut(*i) {
                    *s = Some(r.clone());
                }
            }
        }
        slots.into_iter().flatten().collect()
    }

    /// Time passed: resend what is unanswered every `decision_retry_ms`, abort after
    /// `prepare_timeout_ms` without every vote, give up after `decision_retries_max`.
    pub fn on_tick(&mut self, now: Time) -> CoordStep {
        let mut step = CoordStep::default();
        if self.phase == Phase::Done {
            return step;
        }
        let timeout = Duration::from_millis(self.cfg.prepare_timeout_ms);
        let expired = now >= self.started_at.saturating_add(timeout);
        match self.phase {
            Phase::Preparing if expired => {
                self.votes_done_at = Some(now);
                self.enter(Phase::Deciding(Decision::Abort), now, &mut step);
                return step;
            }
            Phase::OnePc { .. } if expired => {
                let reason = "no answer to the 1PC entry within txn.prepare_timeout_ms".into();
                self.finish(now, TxnOutcome::Unknown { reason }, &mut step);
                self.phase = Phase::Done;
                return step;
            }
            _ => {}
        }
        if now < self.last_send.saturating_add(self.retry()) {
            return step;
        }
        self.attempts += 1;
        if self.attempts > self.cfg.decision_retries_max {
            let reason = "no answer within txn.decision_retries_max".into();
            self.finish(now, TxnOutcome::Unknown { reason }, &mut step);
            self.phase = Phase::Done;
            return step;
        }
        self.last_send = now;
        step.send = self.resend();
        step
    }

    /// The node gives up on the transaction (its request timed out, it is shutting
    /// down): the client's outcome if it was not given yet (`info`, unless decided).
    pub fn abandon(&mut self, now: Time) -> Option<TxnOutcome> {
        let mut step = CoordStep::default();
        let reason = "abandoned by the gateway before the outcome was known".into();
        self.finish(now, TxnOutcome::Unknown { reason }, &mut step);
        self.phase = Phase::Done;
        step.outcome
    }
}

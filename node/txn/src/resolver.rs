//! Recovery when a coordinator dies: a participant leader that has held a prepared
//! transaction longer than `txn.resolve_after_ms` asks the home, and the home answers
//! from its record — aborting, through its own log, a record that expired or never
//! existed.

use std::collections::BTreeMap;
use std::time::Duration;

use kvlab_types::{GroupId, Time};

use crate::bugs::TxnBug;
use crate::config::TxnConfig;
use crate::ops::TxnId;
use crate::participant::{ParticipantState, TxnEntry};
use crate::record::{Decision, TxnRecord};

/// What a participant leader's resolver wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolveAction {
    /// Send `Resolve{txn}` to the leader of `home`; feed its answer to
    /// [`Resolver::on_decision`].
    AskHome {
        /// The transaction.
        txn: TxnId,
        /// Its home group.
        home: GroupId,
    },
    /// Propose this entry in the participant's own group (only under the broken
    /// `no-decision-record`: a local abort without asking anyone).
    Propose(TxnEntry),
}

/// What the home leader does with `Resolve{txn}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HomeResolve {
    /// The record is decided: answer it.
    Answer(Decision),
    /// `Pending` and not expired: answer "retry later" (the asker asks again after
    /// `resolve_after_ms`).
    RetryLater,
    /// Propose this entry in the home group; once applied, its answer
    /// ([`crate::EntryAnswer::Decided`]) is the answer.
    Propose(TxnEntry),
}

/// The home's side: decides how to answer `Resolve{txn}` from the record, at the home
/// leader's clock `now`. The leader's clock only decides *when* an abort may happen; the
/// CAS in the log decides *whether* (a concurrent commit wins if applied first).
pub fn home_resolve(
    state: &ParticipantState,
    cfg: &TxnConfig,
    txn: TxnId,
    now: Time,
) -> HomeResolve {
    let home = state.group();
    match state.record(txn) {
        Some(TxnRecord::Committed) => HomeResolve::Answer(Decision::Commit),
        Some(TxnRecord::Aborted) => HomeResolve::Answer(Decision::Abort),
        Some(TxnRecord::Pending { expires_at, .. }) if now < *expires_at => HomeResolve::RetryLater,
        Some(TxnRecord::Pending { .. }) if cfg.bug == TxnBug::ResolverCommitsPending => {
            // BROKEN: an expired Pending record is committed, although some participants
            // may never have prepared.
            HomeResolve::Propose(TxnEntry::Commit { txn, home })
        }
        Some(TxnRecord::Pending { .. }) => HomeResolve::Propose(TxnEntry::Abort { txn, home }),
        None => match state.finished(txn) {
            Some(f) => HomeResolve::Answer(f.decision),
            // No record at all: the home never prepared. Abort, creating the record,
            // so that a PREPARE still in flight is refused.
            None => HomeResolve::Propose(TxnEntry::Abort { txn, home }),
        },
    }
}

/// A participant leader's resolver: not replicated; a new leader starts with
/// [`Resolver::default`] and finds the prepared transactions in the replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolver {
    /// When each stale transaction was last asked about.
    asked: BTreeMap<TxnId, Time>,
    /// Questions sent (`resolver_invocations`).
    pub invocations: u64,
}

impl Resolver {
    /// The actions due at `now`: every transaction prepared for longer than
    /// `resolve_after_ms`, asked at most once per `resolve_after_ms`.
    pub fn poll(
        &mut self,
        state: &ParticipantState,
        cfg: &TxnConfig,
        now: Time,
    ) -> Vec<ResolveAction> {
        let after = Duration::from_millis(cfg.resolve_after_ms);
        self.asked.retain(|t, _| state.prepared().contains_key(t));
        let mut actions = Vec::new();
        for (txn, prep) in state.prepared() {
            if now < prep.prepared_at.saturating_add(after) {
                continue;
            }
            if let Some(at) = self.asked.get(txn) {
                if now < at.saturating_add(after) {
                    continue;
                }
            }
            self.asked.insert(*txn, now);
            self.invocations += 1;
            if cfg.bug == TxnBug::NoDecisionRecord {
                // BROKEN: no record to ask; a stale prepared transaction is aborted here.
                actions.push(ResolveAction::Propose(TxnEntry::Abort {
                    txn: *txn,
                    home: prep.home,
                }));
            } else {
                actions.push(ResolveAction::AskHome {
                    txn: *txn,
                    home: prep.home,
                });
            }
        }
        actions
    }

    /// The home answered `decision` for `txn`: the entry to propose in this group. The
    /// question stays remembered until the transaction leaves the prepared set (the
    /// entry applied), so a proposal that is refused or lost (a leader transfer under
    /// way, a leader change) is followed by the next question only `resolve_after_ms`
    /// later, not at every poll.
    pub fn on_decision(&mut self, txn: TxnId, home: GroupId, decision: Decision) -> TxnEntry {
        match decision {
            Decision::Commit => TxnEntry::Commit { txn, home },
            Decision::Abort => TxnEntry::Abort { txn, home },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kvlab_types::{Key, NodeId};

    use super::*;
    use crate::{MicroOp, Prepare, TxnValue};

    #[test]
    fn a_decision_whose_entry_never_applies_is_asked_about_again_only_after_resolve_after() {
        let cfg = TxnConfig::default();
        let mut state = ParticipantState::new(GroupId(2));
        let mut store: BTreeMap<Key, TxnValue> = BTreeMap::new();
        let txn = TxnId {
            node: NodeId(1),
            boot_epoch: 1,
            seq: 1,
        };
        let prepare = TxnEntry::Prepare(Prepare {
            txn,
            home: GroupId(1),
            ops: vec![MicroOp::Append {
                key: "a".into(),
                value: 1,
            }],
            participants: Vec::new(),
            ttl_ms: cfg.txn_ttl_ms,
            proposed_at: Time::ZERO,
        });
        state.apply(&cfg, &mut store, &prepare);
        let after = Duration::from_millis(cfg.resolve_after_ms);
        let t = Time::ZERO.saturating_add(after);
        let mut r = Resolver::default();
        assert_eq!(r.poll(&state, &cfg, t).len(), 1);
        // The home answered; the entry proposed for it is refused (a leader transfer).
        let entry = r.on_decision(txn, GroupId(1), Decision::Abort);
        assert_eq!(entry.txn(), txn);
        let soon = t.saturating_add(Duration::from_millis(10));
        assert!(r.poll(&state, &cfg, soon).is_empty(), "asked again at once");
        assert_eq!(r.poll(&state, &cfg, t.saturating_add(after)).len(), 1);
        assert_eq!(r.invocations, 2);
    }
}

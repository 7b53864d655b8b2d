//! The transaction record, kept in the home group only: the single place where a
//! multi-group transaction's fate is decided, by a compare-and-set applied through the
//! home's Raft log. Exactly one of `Committed` or `Aborted` can ever be written.

use kvlab_types::{GroupId, Time};
use serde::{Deserialize, Serialize};

/// The state of one transaction's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnRecord {
    /// The home prepared; the decision is open until `expires_at`, after which a
    /// resolver may abort it.
    Pending {
        /// Every group the transaction touches (the home included).
        participants: Vec<GroupId>,
        /// The home leader's clock when it proposed the PREPARE, plus `txn_ttl_ms`.
        expires_at: Time,
    },
    /// Decided: committed.
    Committed,
    /// Decided: aborted.
    Aborted,
}

/// A decision, as participants and clients learn it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Committed.
    Commit,
    /// Aborted.
    Abort,
}

impl TxnRecord {
    /// The decision it holds, if decided.
    pub fn decision(&self) -> Option<Decision> {
        match self {
            TxnRecord::Pending { .. } => None,
            TxnRecord::Committed => Some(Decision::Commit),
            TxnRecord::Aborted => Some(Decision::Abort),
        }
    }
}

/// The outcome of a CAS on a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CasOutcome {
    /// The record now holds the requested decision (it may have held it already: a
    /// duplicate decision is answered the same).
    Done,
    /// The record holds the other decision; nothing changed.
    Refused(Decision),
    /// Commit only: there is no record (the home never prepared); nothing changed.
    Missing,
}

/// `Pending → Committed` (or `Committed` again). Never from `Aborted`, never from
/// nothing: a transaction the home never prepared cannot commit.
pub fn cas_commit(record: Option<&mut TxnRecord>) -> CasOutcome {
    match record {
        None => CasOutcome::Missing,
        Some(r) => match r {
            TxnRecord::Aborted => CasOutcome::Refused(Decision::Abort),
            TxnRecord::Committed => CasOutcome::Done,
            TxnRecord::Pending { .. } => {
                *r = TxnRecord::Committed;
                CasOutcome::Done
            }
        },
    }
}

/// `Pending → Aborted` (or `Aborted` again). Never from `Committed`. A missing record is
/// the caller's case: it creates `Aborted` (create-if-absent, TiKV's
/// `rollback_if_not_exist`), so that a PREPARE arriving later is refused.
pub fn cas_abort(record: &mut TxnRecord) -> CasOutcome {
    match record {
        TxnRecord::Committed => CasOutcome::Refused(Decision::Commit),
        TxnRecord::Aborted => CasOutcome::Done,
        TxnRecord::Pending { .. } => {
            *record = TxnRecord::Aborted;
            CasOutcome::Done
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> TxnRecord {
        TxnRecord::Pending {
            participants: vec![GroupId(1)],
            expires_at: Time(5),
        }
    }

    #[test]
    fn exactly_one_decision_can_be_written() {
        let mut r = pending();
        assert_eq!(cas_commit(Some(&mut r)), CasOutcome::Done);
        assert_eq!(cas_abort(&mut r), CasOutcome::Refused(Decision::Commit));
        assert_eq!(r, TxnRecord::Committed);
        assert_eq!(cas_commit(Some(&mut r)), CasOutcome::Done);

        let mut r = pending();
        assert_eq!(cas_abort(&mut r), CasOutcome::Done);
        assert_eq!(
            cas_commit(Some(&mut r)),
            CasOutcome::Refused(Decision::Abort)
        );
        assert_eq!(r, TxnRecord::Aborted);
    }

    #[test]
    fn a_commit_without_a_record_is_refused() {
        assert_eq!(cas_commit(None), CasOutcome::Missing);
    }
}

//! The deliberately broken variants of design note §3.5 (`faults.bugs.txn`). Each is
//! compiled in, off unless a spec names it, and does exactly the one wrong thing its
//! name says, so that a run shows the checker catching it.

use serde::{Deserialize, Serialize};

/// One broken variant, or none. At most one is on at a time, as in the spec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxnBug {
    /// The protocol as designed.
    #[default]
    None,
    /// Reads take no shared locks (and check none): SI-like. Expected anomaly: G2-item
    /// (write skew), G-single (read skew).
    NoReadLocks,
    /// A participant releases its locks right after voting YES, before the decision.
    /// Expected: G-single-realtime, G2-item.
    ReleaseBeforeDecision,
    /// Buffered writes become visible at PREPARE (and stay on abort). Expected: G1a.
    WritesAtPrepare,
    /// The coordinator commits as soon as the home votes YES, ignoring the others;
    /// participants that voted NO never apply their part. Expected: partial-txn,
    /// lost-append.
    CommitOnPartialVotes,
    /// The decision lives only in the coordinator's memory: the home keeps no record
    /// and a resolver aborts a stale prepared transaction locally without asking.
    /// Expected after a coordinator crash mid-commit: partial-txn.
    NoDecisionRecord,
    /// The home answers a resolver's question about an expired `Pending` record by
    /// committing it. Expected: partial-txn (participants that never prepared have
    /// nothing to commit).
    ResolverCommitsPending,
    /// A late duplicate PREPARE is accepted after the transaction finished at that
    /// participant. Expected after a commit: duplicate elements (the resolver finds
    /// `Committed` and the appends are applied twice).
    NoFinishedMarker,
}

impl TxnBug {
    /// Every variant but `None`, in the §3.5 table's order.
    pub const ALL: [TxnBug; 7] = [
        TxnBug::NoReadLocks,
        TxnBug::ReleaseBeforeDecision,
        TxnBug::WritesAtPrepare,
        TxnBug::CommitOnPartialVotes,
        TxnBug::NoDecisionRecord,
        TxnBug::ResolverCommitsPending,
        TxnBug::NoFinishedMarker,
    ];

    /// The spec name (`faults.bugs.txn`).
    pub fn name(self) -> &'static str {
        match self {
            TxnBug::None => "none",
            TxnBug::NoReadLocks => "no-read-locks",
            TxnBug::ReleaseBeforeDecision => "release-before-decision",
            TxnBug::WritesAtPrepare => "writes-at-prepare",
            TxnBug::CommitOnPartialVotes => "commit-on-partial-votes",
            TxnBug::NoDecisionRecord => "no-decision-record",
            TxnBug::ResolverCommitsPending => "resolver-commits-pending",
            TxnBug::NoFinishedMarker => "no-finished-marker",
        }
    }

    /// The variant a spec names, if any.
    pub fn from_name(name: &str) -> Option<TxnBug> {
        std::iter::once(TxnBug::None)
            .chain(TxnBug::ALL)
            .find(|b| b.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for b in TxnBug::ALL {
            assert_eq!(TxnBug::from_name(b.name()), Some(b));
        }
        assert_eq!(TxnBug::from_name("none"), Some(TxnBug::None));
        assert_eq!(TxnBug::from_name("nope"), None);
    }
}

//! What nodes send each other about transactions. The composed node wraps a [`TxnMsg`]
//! in its own message type and routes it by group leader; this crate never sends.

use kvlab_types::{GroupId, NodeId};
use serde::{Deserialize, Serialize};

use crate::config::TxnConfig;
use crate::ops::TxnId;
use crate::participant::{EntryAnswer, TxnEntry};
use crate::record::Decision;

/// The most micro-operations one transaction may carry, whatever its keys: bounds the
/// size of a PREPARE and of its vote.
pub const MAX_MICRO_OPS: usize = 256;

/// A transaction message between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnMsg {
    /// Gateway → leader of `group`: admit ([`crate::LeaderPrecheck::admit`]) and propose
    /// `entry`; answer with `Answer` once it applied (or at once if admit refused).
    Request {
        /// The group.
        group: GroupId,
        /// The entry ([`crate::Request::entry`]).
        entry: TxnEntry,
    },
    /// Leader of `group` → the coordinator (`txn.node`): what the log answered. Also
    /// carries votes that a later entry decided ([`crate::Applied::woken`]).
    Answer {
        /// The group that answers.
        group: GroupId,
        /// The transaction.
        txn: TxnId,
        /// The answer.
        answer: EntryAnswer,
    },
    /// Participant leader → home leader: what became of `txn`?
    Resolve {
        /// The home group.
        home: GroupId,
        /// The transaction.
        txn: TxnId,
        /// The asking group (the answer goes to its leader).
        asker: GroupId,
        /// The node that asked (the asking group's leader then): the answer goes to it,
        /// also when a home replica that does not lead forwarded the question.
        reply_to: NodeId,
    },
    /// Home leader → the asker's leader: the decision, to apply through its own log
    /// ([`crate::Resolver::on_decision`]).
    Resolved {
        /// The asking group.
        group: GroupId,
        /// The transaction.
        txn: TxnId,
        /// Its home group.
        home: GroupId,
        /// The decision.
        decision: Decision,
    },
}

/// A message no honest node sends: refused before it touches any state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxnMsgError {
    /// More micro-operations than [`MAX_MICRO_OPS`].
    #[error("{ops} micro-ops, more than {MAX_MICRO_OPS}")]
    TooManyOps {
        /// How many.
        ops: usize,
    },
    /// A PREPARE or 1PC with no micro-operation.
    #[error("an entry with no micro-op")]
    NoOps,
    /// More participants than `txn.max_keys_per_txn` (each has at least one key).
    #[error("{participants} participants, more than txn.max_keys_per_txn = {max}")]
    TooManyParticipants {
        /// How many.
        participants: usize,
        /// The bound.
        max: usize,
    },
}

impl TxnMsg {
    /// Checks what needs no state: sizes within the bounds.
    pub fn validate(&self, cfg: &TxnConfig) -> Result<(), TxnMsgError> {
        let TxnMsg::Request { entry, .. } = self else {
            return Ok(());
        };
        let (ops, participants) = match entry {
            TxnEntry::Prepare(p) => (&p.ops, p.participants.len()),
            TxnEntry::Execute1Pc { ops, .. } => (ops, 0),
            TxnEntry::Commit { .. } | TxnEntry::Abort { .. } => return Ok(()),
        };
        if ops.is_empty() {
            return Err(TxnMsgError::NoOps);
        }
        if ops.len() > MAX_MICRO_OPS {
            return Err(TxnMsgError::TooManyOps { ops: ops.len() });
        }
        if participants > cfg.max_keys_per_txn {
            return Err(TxnMsgError::TooManyParticipants {
                participants,
                max: cfg.max_keys_per_txn,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::MicroOp;

    #[test]
    fn oversized_and_empty_requests_are_refused_and_messages_round_trip() {
        let cfg = TxnConfig::default();
        let txn = TxnId {
            node: NodeId(1),
            boot_epoch: 1,
            seq: 1,
        };
        let req = |n: usize| TxnMsg::Request {
            group: GroupId(1),
            entry: TxnEntry::Execute1Pc {
                txn,
                ops: vec![MicroOp::Read { key: "k".into() }; n],
            },
        };
        assert_eq!(req(0).validate(&cfg), Err(TxnMsgError::NoOps));
        assert_eq!(
            req(MAX_MICRO_OPS + 1).validate(&cfg),
            Err(TxnMsgError::TooManyOps { ops: 257 })
        );
        assert_eq!(req(3).validate(&cfg), Ok(()));
        let bytes = postcard::to_allocvec(&req(3)).unwrap();
        assert_eq!(postcard::from_bytes::<TxnMsg>(&bytes).unwrap(), req(3));
        // Garbage bytes are an error, not a panic.
        assert!(postcard::from_bytes::<TxnMsg>(&[0xff, 0xff, 0xff]).is_err());
    }
}

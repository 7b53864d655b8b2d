//! Consistency models and the anomalies each forbids, transcribed from Elle's
//! `consistency_model.clj` (`direct-proscribed-anomalies` closed under `models` and
//! `implied-anomalies`); the table is in the [module docs](super).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A transactional consistency model a history is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxnModel {
    /// Adya's PL-2: no G0, no G1 (aborted, intermediate reads, G1c cycles).
    ReadCommitted,
    /// Adya's PL-SI as Elle reads it: PL-2 plus no internal anomaly, no G-single and no
    /// G-nonadjacent; write skew (G2-item) is allowed.
    SnapshotIsolation,
    /// PL-3 (conflict serializability): no G1, no G2.
    Serializable,
    /// PL-SS: serializable in an order that respects real time (and so each process's
    /// order): no -process or -realtime variant either.
    StrictSerializable,
}

impl TxnModel {
    /// Every model, weakest first.
    pub const ALL: [TxnModel; 4] = [
        TxnModel::ReadCommitted,
        TxnModel::SnapshotIsolation,
        TxnModel::Serializable,
        TxnModel::StrictSerializable,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            TxnModel::ReadCommitted => "read-committed",
            TxnModel::SnapshotIsolation => "snapshot-isolation",
            TxnModel::Serializable => "serializable",
            TxnModel::StrictSerializable => "strict-serializable",
        }
    }

    /// The model with this [`name`](Self::name), if any.
    pub fn from_name(name: &str) -> Option<TxnModel> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether a history showing `anomaly` violates this model.
    pub fn forbids(self, anomaly: AnomalyKind) -> bool {
        use AnomalyKind as A;
        let level = match anomaly {
            // Read committed and up (PL-1, PL-2; Elle's incompatible-order implies G1a;
            // kvlab's garbage reads and final-read checks are read as G1a-like, below
            // every model).
            A::G0
            | A::G1a
            | A::G1b
            | A::G1c
            | A::DuplicateElements
            | A::IncompatibleOrder
            | A::GarbageRead
            | A::LostAppend
            | A::PartialTxn
            | A::FutureRead => TxnModel::ReadCommitted,
            A::Internal | A::GSingle | A::GNonadjacent => TxnModel::SnapshotIsolation,
            A::G2Item => TxnModel::Serializable,
            A::G0Process
            | A::G1cProcess
            | A::GSingleProcess
            | A::GNonadjacentProcess
            | A::G2ItemProcess
            | A::G0Realtime
            | A::G1cRealtime
            | A::GSingleRealtime
            | A::GNonadjacentRealtime
            | A::G2ItemRealtime => TxnModel::StrictSerializable,
        };
        self >= level
    }

    /// Which edges the dependency graph of this model holds: process and real-time
    /// order only under strict serializability, rw only where G2 or G-single is
    /// forbidden.
    pub(crate) fn edge_mask(self) -> u8 {
        use super::graph::{PROCESS, REALTIME, RW, WR, WW};
        match self {
            TxnModel::ReadCommitted => WW | WR,
            TxnModel::SnapshotIsolation | TxnModel::Serializable => WW | WR | RW,
            TxnModel::StrictSerializable => WW | WR | RW | PROCESS | REALTIME,
        }
    }
}

impl fmt::Display for TxnModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An anomaly class, named as Elle names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AnomalyKind {
    /// A cycle of write-write edges (dirty write).
    #[serde(rename = "G0")]
    G0,
    /// A committed transaction read a value written by an aborted (`fail`) one.
    #[serde(rename = "G1a")]
    G1a,
    /// A committed transaction read a value another transaction later overwrote itself
    /// (an intermediate version).
    #[serde(rename = "G1b")]
    G1b,
    /// A cycle of ww and wr edges with at least one wr (circular information flow).
    #[serde(rename = "G1c")]
    G1c,
    /// A cycle with exactly one rw edge (read skew).
    #[serde(rename = "G-single")]
    GSingle,
    /// A cycle with several rw edges, no two adjacent.
    #[serde(rename = "G-nonadjacent")]
    GNonadjacent,
    /// Any other cycle with rw edges (write skew, lost update).
    #[serde(rename = "G2-item")]
    G2Item,
    /// G0 once process order is added.
    #[serde(rename = "G0-process")]
    G0Process,
    /// G1c once process order is added.
    #[serde(rename = "G1c-process")]
    G1cProcess,
    /// G-single once process order is added.
    #[serde(rename = "G-single-process")]
    GSingleProcess,
    /// G-nonadjacent once process order is added.
    #[serde(rename = "G-nonadjacent-process")]
    GNonadjacentProcess,
    /// G2-item once process order is added.
    #[serde(rename = "G2-item-process")]
    G2ItemProcess,
    /// G0 once real-time order is added.
    #[serde(rename = "G0-realtime")]
    G0Realtime,
    /// G1c once real-time order is added.
    #[serde(rename = "G1c-realtime")]
    G1cRealtime,
    /// G-single once real-time order is added (a stale read).
    #[serde(rename = "G-single-realtime")]
    GSingleRealtime,
    /// G-nonadjacent once real-time order is added.
    #[serde(rename = "G-nonadjacent-realtime")]
    GNonadjacentRealtime,
    /// G2-item once real-time order is added.
    #[serde(rename = "G2-item-realtime")]
    G2ItemRealtime,
    /// A transaction's read disagrees with its own earlier reads and writes.
    #[serde(rename = "internal")]
    Internal,
    /// Reads of one key that are not prefixes of one another: no single version order.
    #[serde(rename = "incompatible-order")]
    IncompatibleOrder,
    /// An element appears more than once in one read (an append applied twice).
    #[serde(rename = "duplicate-elements")]
    DuplicateElements,
    /// A read returned a value no transaction wrote.
    #[serde(rename = "garbage-read")]
    GarbageRead,
    /// A transaction read an element it appends only later (Elle: implies G1c).
    #[serde(rename = "future-read")]
    FutureRead,
    /// An element appended by an `ok` transaction is missing from the final read of its
    /// key.
    #[serde(rename = "lost-append")]
    LostAppend,
    /// Some but not all of one transaction's appends are in the final reads.
    #[serde(rename = "partial-txn")]
    PartialTxn,
}

impl AnomalyKind {
    /// The name Elle (or, for the final-read checks, kvlab) gives it.
    pub fn name(self) -> &'static str {
        use AnomalyKind as A;
        match self {
            A::G0 => "G0",
            A::G1a => "G1a",
            A::G1b => "G1b",
            A::G1c => "G1c",
            A::GSingle => "G-single",
            A::GNonadjacent => "G-nonadjacent",
            A::G2Item => "G2-item",
            A::G0Process => "G0-process",
            A::G1cProcess => "G1c-process",
            A::GSingleProcess => "G-single-process",
            A::GNonadjacentProcess => "G-nonadjacent-process",
            A::G2ItemProcess => "G2-item-process",
            A::G0Realtime => "G0-realtime",
            A::G1cRealtime => "G1c-realtime",
            A::GSingleRealtime => "G-single-realtime",
            A::GNonadjacentRealtime => "G-nonadjacent-realtime",
            A::G2ItemRealtime => "G2-item-realtime",
            A::Internal => "internal",
            A::IncompatibleOrder => "incompatible-order",
            A::DuplicateElements => "duplicate-elements",
            A::GarbageRead => "garbage-read",
            A::FutureRead => "future-read",
            A::LostAppend => "lost-append",
            A::PartialTxn => "partial-txn",
        }
    }

    /// The models (of [`TxnModel::ALL`]) this anomaly rules out, weakest first.
    pub fn violates(self) -> Vec<TxnModel> {
        TxnModel::ALL
            .into_iter()
            .filter(|m| m.forbids(self))
            .collect()
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stronger_models_forbid_everything_weaker_ones_do() {
        let all = [
            AnomalyKind::G0,
            AnomalyKind::G1a,
            AnomalyKind::Internal,
            AnomalyKind::GSingle,
            AnomalyKind::G2Item,
            AnomalyKind::G2ItemRealtime,
            AnomalyKind::LostAppend,
        ];
        for a in all {
            for w in TxnModel::ALL.windows(2) {
                assert!(!w[0].forbids(a) || w[1].forbids(a), "{a} {w:?}");
            }
        }
        assert!(!TxnModel::SnapshotIsolation.forbids(AnomalyKind::G2Item));
        assert!(TxnModel::Serializable.forbids(AnomalyKind::G2Item));
        assert!(!TxnModel::Serializable.forbids(AnomalyKind::GSingleRealtime));
        assert!(!TxnModel::ReadCommitted.forbids(AnomalyKind::Internal));
    }
}

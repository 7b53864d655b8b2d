//! The client API every kvlab system serves: single-key read, write, compare-and-set and
//! delete, each tagged with a [`RequestId`] so that a retried request is applied at most
//! once.

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// A key. Workloads name keys `k0`, `k1`, …
pub type Key = String;
/// A value. Workloads write unique values so that a checker can tell writes apart.
pub type Value = i64;

/// Identifies one client request across retries: a client numbers its requests; a retry
/// reuses the number, so a system that remembers `(client, seq)` applies it at most once.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize, Default,
)]
pub struct RequestId {
    /// The client (a workload process, a CLI invocation, …).
    pub client: u64,
    /// The client's sequence number for this request.
    pub seq: u64,
}

/// One operation on the store.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum KvOp {
    /// Read the value of `key` (`None` if absent).
    Read {
        /// The key.
        key: Key,
    },
    /// Set `key` to `value`.
    Write {
        /// The key.
        key: Key,
        /// The new value.
        value: Value,
    },
    /// Set `key` to `new` if its value is `expected` (`None`: absent).
    Cas {
        /// The key.
        key: Key,
        /// The value the key must have.
        expected: Option<Value>,
        /// The value to store.
        new: Value,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Key,
    },
}

impl KvOp {
    /// The key this operation touches.
    pub fn key(&self) -> &Key {
        match self {
            KvOp::Read { key }
            | KvOp::Write { key, .. }
            | KvOp::Cas { key, .. }
            | KvOp::Delete { key } => key,
        }
    }
    /// Whether the operation never changes the store.
    pub fn is_read_only(&self) -> bool {
        matches!(self, KvOp::Read { .. })
    }
    /// The history name of the operation (`read`, `write`, `cas`, `delete`).
    pub fn name(&self) -> &'static str {
        match self {
            KvOp::Read { .. } => "read",
            KvOp::Write { .. } => "write",
            KvOp::Cas { .. } => "cas",
            KvOp::Delete { .. } => "delete",
        }
    }
}

/// A client request as a node receives it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ClientRequest {
    /// The request's identity (stable across retries).
    pub id: RequestId,
    /// What to do.
    pub op: KvOp,
}

/// What a successful operation returns.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum OpOutput {
    /// A read's result (`None`: the key is absent).
    Read(Option<Value>),
    /// A write, successful cas or delete took effect.
    Done,
}

/// Why an operation did not succeed, and whether it surely did not take effect.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ClientError {
    /// A cas found another value; it did not take effect.
    CasMismatch {
        /// The value the key had.
        current: Option<Value>,
    },
    /// The request was refused before it took effect (no leader, node not ready,
    /// overloaded). Safe to retry.
    Unavailable {
        /// Why, for a person.
        reason: String,
        /// A node that may serve the request, if known.
        hint: Option<NodeId>,
    },
    /// The request may or may not have taken effect (a forwarded request was lost, a
    /// leader stepped down after proposing it).
    Indeterminate {
        /// Why, for a person.
        reason: String,
    },
}

impl ClientError {
    /// Whether the operation surely did not take effect (a history `fail`), as opposed
    /// to maybe (`info`).
    pub fn is_definite(&self) -> bool {
        !matches!(self, ClientError::Indeterminate { .. })
    }
}

/// A node's answer to one request.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ClientResponse {
    /// Which request this answers.
    pub id: RequestId,
    /// The outcome.
    pub result: Result<OpOutput, ClientError>,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::CasMismatch { current } => write!(f, "cas mismatch (current {current:?})"),
            ClientError::Unavailable { reason, hint } => match hint {
                Some(h) => write!(f, "unavailable: {reason} (try {h})"),
                None => write!(f, "unavailable: {reason}"),
            },
            ClientError::Indeterminate { reason } => write!(f, "indeterminate: {reason}"),
        }
    }
}

impl std::error::Error for ClientError {}

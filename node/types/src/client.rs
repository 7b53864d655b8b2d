//! The client API every kvlab system serves: single-key read, write, compare-and-set and
//! delete, each tagged with a [`RequestId`] so that a retried request is applied at most
//! once.
//!
//! ## Limits
//!
//! A request is checked at the edge, before it reaches a log: [`ClientRequest::validate`]
//! refuses a key longer than [`MAX_KEY_BYTES`], and every system answers such a request
//! with the definite [`ClientError::Invalid`]. Values are `i64` and request ids two
//! `u64`s, so the key is the only field whose size a client chooses, and a valid
//! request encodes (postcard) in at most [`MAX_REQUEST_BYTES`] — 4 KiB and change. That is
//! far below what the layers underneath carry in one piece, so a valid request always
//! fits:
//!
//! * one write-ahead-log record: kvlab-storage's `MAX_RECORD_BYTES` (4 MiB);
//! * one peer message: kvlab-transport's frame (`DEFAULT_MAX_FRAME_BYTES`, 1 MiB by
//!   default), which carries a forwarded request or a Raft AppendEntries;
//! * one Raft entry: kvlab-raft's `RaftConfig::max_entry_bytes` (64 KiB by default), which
//!   kvlab-node's `raft` system requires to hold any valid request.

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// A key. Workloads name keys `k0`, `k1`, …
pub type Key = String;

/// The longest key any system accepts, in bytes (of its UTF-8 encoding).
pub const MAX_KEY_BYTES: usize = 4 << 10;

/// An upper bound on the postcard-encoded size of a single-key request that passes
/// [`ClientRequest::validate`] (a [`KvOp::Txn`] carries up to [`MAX_TXN_MICRO_OPS`] keys
/// and values, and only the `kvlab` system, which splits it by group, takes one): the key plus every other field at its longest varint
/// (the request id, the operation tag, the key's length, a cas's two values).
pub const MAX_REQUEST_BYTES: usize = MAX_KEY_BYTES + REQUEST_OVERHEAD_BYTES;

/// What a request encodes to besides its key's bytes, at most: two `u64` ids (10 bytes
/// each), the operation tag (1), the key length (10), an `Option<i64>` and an `i64` (21).
const REQUEST_OVERHEAD_BYTES: usize = 64;
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
    /// One request of etcd's v3 KV API (kvlab-etcd), applied to the store's etcd keyspace
    /// (a separate MVCC map with its own revisions; see kvlab-node's `etcd` module). Only
    /// the `raft` system with one group serves it; every other system refuses it with
    /// [`InvalidRequest::EtcdNotServed`].
    Etcd(EtcdOp),
    /// A one-shot transaction: its micro-operations, run atomically and in order (only
    /// the composed `kvlab` system serves it; every other system refuses it with
    /// [`InvalidRequest::TxnNotServed`]). At most [`MAX_TXN_MICRO_OPS`] of them, at least
    /// one.
    Txn {
        /// The micro-operations, in order.
        ops: Vec<TxnMicroOp>,
    },
}

/// The most micro-operations one [`KvOp::Txn`] may carry.
pub const MAX_TXN_MICRO_OPS: usize = 256;

/// One micro-operation of a [`KvOp::Txn`] (Jepsen/Elle's `[:r k v]`, `[:append k v]`,
/// `[:w k v]`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum TxnMicroOp {
    /// Read `key`.
    Read {
        /// The key.
        key: Key,
    },
    /// Append `value` to the list at `key` (absent: the empty list).
    Append {
        /// The key.
        key: Key,
        /// The element.
        value: Value,
    },
    /// Set the register at `key` to `value`.
    Write {
        /// The key.
        key: Key,
        /// The value.
        value: Value,
    },
}

impl TxnMicroOp {
    /// The key it touches.
    pub fn key(&self) -> &Key {
        match self {
            TxnMicroOp::Read { key }
            | TxnMicroOp::Append { key, .. }
            | TxnMicroOp::Write { key, .. } => key,
        }
    }

    /// Whether it changes its key.
    pub fn is_write(&self) -> bool {
        !matches!(self, TxnMicroOp::Read { .. })
    }
}

/// A value a transaction read: a register or a list.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum TxnReadValue {
    /// A register.
    Register(Value),
    /// A list, oldest element first.
    List(Vec<Value>),
}

/// The result of one micro-operation of a committed transaction.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum TxnMicroResult {
    /// What a read saw (`None`: absent).
    Read(Option<TxnReadValue>),
    /// An append or write took place.
    Done,
}

/// The kind of an etcd v3 KV request.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum EtcdOpKind {
    /// `KV.Range`: read-only.
    Range,
    /// `KV.Put`.
    Put,
    /// `KV.DeleteRange`.
    DeleteRange,
    /// `KV.Txn`.
    Txn,
    /// `KV.Compact`.
    Compact,
    /// `KV.Txn` whose branches hold ranges only (at any depth): read-only, so served
    /// like a range (ReadIndex), as etcd serves such a txn.
    ReadTxn,
}

/// An etcd v3 KV request: its kind and its protobuf encoding (etcd's `RangeRequest`,
/// `PutRequest`, … as the kind says). This crate does not decode it; the state machine
/// does, and answers a request that does not decode with an etcd error.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct EtcdOp {
    /// Which request `request` encodes.
    pub kind: EtcdOpKind,
    /// The protobuf-encoded request (as one byte string: postcard writes the same bytes
    /// as for a sequence of `u8`, without a call per byte).
    #[serde(with = "serde_bytes")]
    pub request: Vec<u8>,
}

/// The largest etcd request accepted, in bytes: etcd's default `--max-request-bytes`
/// (1.5 MiB). The Raft entry limit (`max_entry_bytes`, 64 KiB by default) usually binds
/// first; both are answered as etcd answers an oversized request.
pub const MAX_ETCD_REQUEST_BYTES: usize = 3 << 19;

/// The key an [`KvOp::Etcd`] request routes by: every etcd request goes to one group.
static ETCD_ROUTING_KEY: Key = Key::new();

impl KvOp {
    /// The key this operation touches.
    pub fn key(&self) -> &Key {
        match self {
            KvOp::Read { key }
            | KvOp::Write { key, .. }
            | KvOp::Cas { key, .. }
            | KvOp::Delete { key } => key,
            KvOp::Etcd(_) => &ETCD_ROUTING_KEY,
            // The home: the first key's group (an empty transaction routes nowhere
            // and is refused by the system).
            KvOp::Txn { ops } => ops.first().map_or(&ETCD_ROUTING_KEY, TxnMicroOp::key),
        }
    }
    /// Checks the operation's sizes against the [limits](self#limits).
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        if let KvOp::Etcd(op) = self {
            if op.request.len() > MAX_ETCD_REQUEST_BYTES {
                return Err(InvalidRequest::CommandTooLarge {
                    len_bytes: op.request.len() as u64,
                    max_bytes: MAX_ETCD_REQUEST_BYTES as u64,
                });
            }
            return Ok(());
        }
        if let KvOp::Txn { ops } = self {
            if ops.is_empty() || ops.len() > MAX_TXN_MICRO_OPS {
                return Err(InvalidRequest::TxnShape {
                    ops: ops.len() as u64,
                    max_ops: MAX_TXN_MICRO_OPS as u64,
                });
            }
            return ops.iter().try_for_each(|op| key_fits(op.key()));
        }
        key_fits(self.key())
    }
    /// Whether the operation never changes the store.
    pub fn is_read_only(&self) -> bool {
        match self {
            KvOp::Read { .. } => true,
            KvOp::Etcd(op) => matches!(op.kind, EtcdOpKind::Range | EtcdOpKind::ReadTxn),
            // Served through the transaction layer, never as a plain read.
            KvOp::Write { .. } | KvOp::Cas { .. } | KvOp::Delete { .. } | KvOp::Txn { .. } => false,
        }
    }
    /// The history name of the operation (`read`, `write`, `cas`, `delete`, `etcd`,
    /// `txn`).
    pub fn name(&self) -> &'static str {
        match self {
            KvOp::Read { .. } => "read",
            KvOp::Write { .. } => "write",
            KvOp::Cas { .. } => "cas",
            KvOp::Delete { .. } => "delete",
            KvOp::Etcd(_) => "etcd",
            KvOp::Txn { .. } => "txn",
        }
    }
}

fn key_fits(key: &Key) -> Result<(), InvalidRequest> {
    if key.len() > MAX_KEY_BYTES {
        return Err(InvalidRequest::KeyTooLong {
            len_bytes: key.len() as u64,
            max_bytes: MAX_KEY_BYTES as u64,
        });
    }
    Ok(())
}

/// A client request as a node receives it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ClientRequest {
    /// The request's identity (stable across retries).
    pub id: RequestId,
    /// What to do.
    pub op: KvOp,
}

impl ClientRequest {
    /// Checks the request against the [limits](self#limits); every system calls it before
    /// the request can reach a log, and answers a refusal with [`ClientError::Invalid`].
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        self.op.validate()
    }
}

/// Why a request is refused as invalid. It surely did not take effect, and retrying it
/// unchanged cannot help.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum InvalidRequest {
    /// The key is longer than [`MAX_KEY_BYTES`].
    KeyTooLong {
        /// The key's length.
        len_bytes: u64,
        /// [`MAX_KEY_BYTES`].
        max_bytes: u64,
    },
    /// The encoded command is larger than the system can replicate in one piece (a Raft
    /// entry's `max_entry_bytes`).
    CommandTooLarge {
        /// The encoded command's length.
        len_bytes: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// The request id was already used by this client for a different operation; the
    /// session table answers a retry only if it is the same operation.
    RequestIdReused {
        /// The client.
        client: u64,
        /// The reused sequence number.
        seq: u64,
    },
    /// An etcd request ([`KvOp::Etcd`]) sent to a system that does not serve the etcd
    /// API (only the `raft` system with one group does).
    EtcdNotServed,
    /// A transaction ([`KvOp::Txn`]) sent to a system that does not serve transactions
    /// (only `kvlab` does).
    TxnNotServed,
    /// A transaction with no micro-operation, or more than the system takes (micro-ops,
    /// or distinct keys: `txn.max_keys_per_txn`).
    TxnShape {
        /// Its micro-operations (or distinct keys).
        ops: u64,
        /// The bound.
        max_ops: u64,
    },
}

impl std::fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvalidRequest::KeyTooLong {
                len_bytes,
                max_bytes,
            } => write!(
                f,
                "key of {len_bytes} bytes exceeds MAX_KEY_BYTES ({max_bytes})"
            ),
            InvalidRequest::CommandTooLarge {
                len_bytes,
                max_bytes,
            } => write!(
                f,
                "command of {len_bytes} bytes exceeds the entry limit ({max_bytes})"
            ),
            InvalidRequest::RequestIdReused { client, seq } => write!(
                f,
                "request {seq} of client {client} was already used for another operation"
            ),
            InvalidRequest::EtcdNotServed => write!(
                f,
                "this system does not serve the etcd API (only `raft` with one group does)"
            ),
            InvalidRequest::TxnNotServed => write!(
                f,
                "this system does not serve transactions (only `kvlab` does)"
            ),
            InvalidRequest::TxnShape { ops, max_ops } => write!(
                f,
                "a transaction needs 1 to {max_ops} micro-ops (and keys), this one has {ops}"
            ),
        }
    }
}

/// What a successful operation returns.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum OpOutput {
    /// A read's result (`None`: the key is absent).
    Read(Option<Value>),
    /// A write, successful cas or delete took effect.
    Done,
    /// The answer to a [`KvOp::Etcd`] request, encoded by kvlab-node's `etcd` module (a
    /// response or an etcd error, both definite).
    Etcd(Vec<u8>),
    /// A committed transaction's results, one per micro-operation in order, and how long
    /// its coordinator's phases took.
    Txn {
        /// One result per micro-operation, in order.
        results: Vec<TxnMicroResult>,
        /// The coordinator's phases (on the gateway's clock).
        timing: TxnTiming,
    },
}

/// How long a committed transaction's phases took at its coordinator (the gateway that
/// ran it), measured on the gateway's clock: the split of the commit latency by phase
/// (design wave 2 §5.2). The client's own latency (invoke → reply) is at least
/// `prepare_ns + decide_ns`; the rest is the trip to and from the gateway.
///
/// * **2PC** (`groups` ≥ 2): *prepare* is the coordinator's start → the last YES vote
///   in (every participant's PREPARE applied in its group's log); *decide* is that → the
///   home group applied `Committed` (the decision is durable; the client is answered
///   then, the other participants are told after).
/// * **1PC** (`groups` = 1): the one `Execute1Pc` entry prepares and decides at once;
///   its whole time (start → the entry applied) counts as *prepare*, and *decide* is 0.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct TxnTiming {
    /// The groups (vnodes, partitions) the transaction touched.
    pub groups: u32,
    /// The prepare phase, nanoseconds.
    pub prepare_ns: u64,
    /// The decide phase, nanoseconds (0 for 1PC).
    pub decide_ns: u64,
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
    /// A transaction surely did not commit: the abort is decided (its home group's record
    /// says `Aborted`, or its one group refused it).
    TxnAborted {
        /// Why, for a person.
        reason: String,
    },
    /// The request itself is refused (too large, a reused request id with another
    /// operation): it surely did not take effect, and retrying it unchanged cannot help.
    Invalid {
        /// What is wrong with it.
        reason: InvalidRequest,
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
            ClientError::Invalid { reason } => write!(f, "invalid request: {reason}"),
            ClientError::TxnAborted { reason } => write!(f, "transaction aborted: {reason}"),
        }
    }
}

impl std::error::Error for ClientError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(len: usize) -> Key {
        "k".repeat(len)
    }

    #[test]
    fn a_key_up_to_max_key_bytes_is_valid_and_one_byte_more_is_not() {
        let ok = ClientRequest {
            id: RequestId { client: 1, seq: 1 },
            op: KvOp::Write {
                key: key(MAX_KEY_BYTES),
                value: 1,
            },
        };
        assert_eq!(ok.validate(), Ok(()));
        let long = ClientRequest {
            op: KvOp::Read {
                key: key(MAX_KEY_BYTES + 1),
            },
            ..ok
        };
        assert_eq!(
            long.validate(),
            Err(InvalidRequest::KeyTooLong {
                len_bytes: MAX_KEY_BYTES as u64 + 1,
                max_bytes: MAX_KEY_BYTES as u64,
            })
        );
        let e = ClientError::Invalid {
            reason: long.validate().unwrap_err(),
        };
        assert!(e.is_definite());
        assert!(e.to_string().contains("MAX_KEY_BYTES"), "{e}");
    }

    #[test]
    fn the_largest_valid_request_encodes_within_max_request_bytes() {
        let id = RequestId {
            client: u64::MAX,
            seq: u64::MAX,
        };
        let ops = [
            KvOp::Read {
                key: key(MAX_KEY_BYTES),
            },
            KvOp::Write {
                key: key(MAX_KEY_BYTES),
                value: i64::MIN,
            },
            KvOp::Cas {
                key: key(MAX_KEY_BYTES),
                expected: Some(i64::MIN),
                new: i64::MAX,
            },
            KvOp::Delete {
                key: key(MAX_KEY_BYTES),
            },
        ];
        for op in ops {
            let req = ClientRequest { id, op };
            req.validate().unwrap();
            let len = postcard::to_allocvec(&req).unwrap().len();
            assert!(len <= MAX_REQUEST_BYTES, "{len} > {MAX_REQUEST_BYTES}");
        }
    }
}

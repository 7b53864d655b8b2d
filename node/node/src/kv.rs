//! The key-value state machine every kvlab system serves, with client sessions so that a
//! retried request is applied at most once.
//!
//! Sequential specification (the one the checker's `kv` model encodes):
//! * `read k` returns the value of `k`, or nothing if absent;
//! * `write k v` sets `k` to `v`;
//! * `cas k old new` sets `k` to `new` if its value is `old` (absent when `old` is none),
//!   and otherwise fails without effect;
//! * `delete k` removes `k`.
//!
//! Sessions answer a retry from memory only if it is the *same* request: each client's
//! last applied request is remembered with a digest of its operation, and a request
//! that reuses the id with another operation is refused with the definite
//! [`ClientError::Invalid`] ([`InvalidRequest::RequestIdReused`]) — it is not applied,
//! and it is not answered with the other operation's result.

use std::collections::BTreeMap;

use kvlab_types::{ClientError, InvalidRequest, Key, KvOp, OpOutput, RequestId, Value};
use serde::{Deserialize, Serialize};

use crate::etcd::EtcdStore;

/// The result of applying one operation.
pub type ApplyResult = Result<OpOutput, ClientError>;

/// The most recent request each client had applied, and its result. Part of the
/// store's snapshot encoding (postcard, field order matters; snapshots written before
/// `op_digest` existed do not decode, which recovery reports as a corrupt snapshot).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    seq: u64,
    /// [`op_digest`] of the request's operation: a retry must carry the same one.
    op_digest: u64,
    result: ApplyResult,
}

/// A fixed 64-bit digest (FNV-1a over the postcard encoding) of an operation: the same
/// on every replica and across restarts, so sessions restored from a snapshot compare
/// alike. Two different operations collide with probability about `2^-64`.
pub fn op_digest(op: &KvOp) -> u64 {
    // Encoding a plain enum into a Vec cannot fail.
    crate::fnv1a(&postcard::to_allocvec(op).unwrap_or_default())
}

/// An in-memory key-value map plus client sessions, and the etcd keyspace
/// ([`KvOp::Etcd`], see [`crate::etcd`]). Deterministic: ordered maps only.
///
/// Its snapshot image ([`KvStore::encode_image`]) is the serde (postcard) encoding of the
/// map and the sessions, followed by the etcd keyspace only if that was ever used: a
/// store that never served etcd encodes byte for byte as before the etcd keyspace
/// existed, and an image written before it decodes (with an empty etcd keyspace).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStore {
    data: BTreeMap<Key, Value>,
    sessions: BTreeMap<u64, Session>,
    /// The etcd keyspace; `None` until the first etcd request. Not in the serde
    /// encoding: [`KvStore::encode_image`] appends it.
    #[serde(skip)]
    etcd: Option<Box<EtcdStore>>,
}

impl KvStore {
    /// Applies `op` on behalf of request `id`, unless that request (or a later one of the
    /// same client) was applied already: then the remembered result of the same request
    /// is returned and nothing changes. Clients number their requests in increasing
    /// order and have at most one in flight, so one entry per client suffices. A request
    /// that reuses the id of the applied one with a different operation is refused
    /// ([`InvalidRequest::RequestIdReused`]) and changes nothing.
    pub fn apply(&mut self, id: RequestId, op: &KvOp) -> ApplyResult {
        self.apply_in_term(id, op, 0)
    }

    /// [`KvStore::apply`] for an entry of Raft term `term` (etcd responses report it).
    pub fn apply_in_term(&mut self, id: RequestId, op: &KvOp, term: u64) -> ApplyResult {
        if let Some(s) = self.sessions.get(&id.client) {
            if s.seq == id.seq {
                if s.op_digest != op_digest(op) {
                    return Err(ClientError::Invalid {
                        reason: InvalidRequest::RequestIdReused {
                            client: id.client,
                            seq: id.seq,
                        },
                    });
                }
                return s.result.clone();
            }
            if s.seq > id.seq {
                // An older request arriving late (e.g. a duplicated message): it was
                // superseded, so it must not take effect now.
                return Err(ClientError::Unavailable {
                    reason: format!("request {} superseded by {}", id.seq, s.seq),
                    hint: None,
                });
            }
        }
        let result = self.apply_op_in_term(op, term);
        if !op.is_read_only() {
            self.sessions.insert(
                id.client,
                Session {
                    seq: id.seq,
                    op_digest: op_digest(op),
                    result: result.clone(),
                },
            );
        }
        result
    }

    /// Applies `op` without session bookkeeping.
    pub fn apply_op(&mut self, op: &KvOp) -> ApplyResult {
        self.apply_op_in_term(op, 0)
    }

    fn apply_op_in_term(&mut self, op: &KvOp, term: u64) -> ApplyResult {
        match op {
            KvOp::Etcd(op) => Ok(OpOutput::Etcd(
                self.etcd.get_or_insert_default().apply(op, term),
            )),
            KvOp::Read { key } => Ok(OpOutput::Read(self.data.get(key).copied())),
            KvOp::Write { key, value } => {
                self.data.insert(key.clone(), *value);
                Ok(OpOutput::Done)
            }
            KvOp::Cas { key, expected, new } => {
                let current = self.data.get(key).copied();
                if current == *expected {
                    self.data.insert(key.clone(), *new);
                    Ok(OpOutput::Done)
                } else {
                    Err(ClientError::CasMismatch { current })
                }
            }
            KvOp::Delete { key } => {
                self.data.remove(key);
                Ok(OpOutput::Done)
            }
            // A transaction is never one store operation: the composed node runs it
            // through kvlab-txn, and every system refuses it before it reaches a log.
            KvOp::Txn { .. } => Err(ClientError::Invalid {
                reason: InvalidRequest::TxnNotServed,
            }),
        }
    }

    /// Serves a read-only operation without changing anything: a read, or an etcd
    /// range. Anything else is refused (`Unavailable`: it did not take effect).
    pub fn query(&self, op: &KvOp) -> ApplyResult {
        match op {
            KvOp::Read { key } => Ok(OpOutput::Read(self.get(key))),
            KvOp::Etcd(op) => Ok(OpOutput::Etcd(match &self.etcd {
                Some(e) => e.query(op),
                None => EtcdStore::default().query(op),
            })),
            KvOp::Write { .. } | KvOp::Cas { .. } | KvOp::Delete { .. } | KvOp::Txn { .. } => {
                Err(ClientError::Unavailable {
                    reason: format!("a {} is not served as a read", op.name()),
                    hint: None,
                })
            }
        }
    }

    /// The etcd keyspace, if it was ever used.
    pub fn etcd(&self) -> Option<&EtcdStore> {
        self.etcd.as_deref()
    }

    /// The snapshot image: see [`KvStore`].
    pub fn encode_image(&self) -> Vec<u8> {
        // Encoding plain owned data into a Vec cannot fail.
        let mut bytes = postcard::to_allocvec(self).unwrap_or_default();
        if let Some(etcd) = self.etcd.as_deref().filter(|e| !e.is_pristine()) {
            bytes.extend(postcard::to_allocvec(etcd).unwrap_or_default());
        }
        bytes
    }

    /// Rebuilds a store from [`KvStore::encode_image`]'s bytes (or from an image written
    /// before the etcd keyspace existed).
    pub fn decode_image(bytes: &[u8]) -> Result<KvStore, postcard::Error> {
        let (mut kv, rest): (KvStore, &[u8]) = postcard::take_from_bytes(bytes)?;
        if !rest.is_empty() {
            kv.etcd = Some(Box::new(postcard::from_bytes(rest)?));
        }
        Ok(kv)
    }

    /// Approximate bytes of the data (keys plus 8 per value), for placement reports.
    pub fn approx_bytes(&self) -> u64 {
        self.data.keys().map(|k| k.len() as u64 + 8).sum()
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.data.get(key).copied()
    }

    /// Number of keys present.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether no key is present.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(client: u64, seq: u64) -> RequestId {
        RequestId { client, seq }
    }

    #[test]
    fn cas_succeeds_only_on_expected_value() {
        let mut kv = KvStore::default();
        let k = || "k".to_string();
        assert_eq!(
            kv.apply_op(&KvOp::Cas {
                key: k(),
                expected: None,
                new: 1
            }),
            Ok(OpOutput::Done)
        );
        assert_eq!(
            kv.apply_op(&KvOp::Cas {
                key: k(),
                expected: Some(7),
                new: 2
            }),
            Err(ClientError::CasMismatch { current: Some(1) })
        );
        assert_eq!(kv.get("k"), Some(1));
    }

    #[test]
    fn retried_request_is_applied_at_most_once() {
        let mut kv = KvStore::default();
        let cas = KvOp::Cas {
            key: "k".into(),
            expected: None,
            new: 1,
        };
        assert_eq!(kv.apply(rid(1, 1), &cas), Ok(OpOutput::Done));
        // Applying it again would fail (the key is now 1); the session answers instead.
        assert_eq!(kv.apply(rid(1, 1), &cas), Ok(OpOutput::Done));
        assert_eq!(kv.get("k"), Some(1));
    }

    #[test]
    fn superseded_request_does_not_take_effect() {
        let mut kv = KvStore::default();
        kv.apply(
            rid(1, 2),
            &KvOp::Write {
                key: "k".into(),
                value: 2,
            },
        )
        .unwrap();
        assert!(
            kv.apply(
                rid(1, 1),
                &KvOp::Write {
                    key: "k".into(),
                    value: 1
                }
            )
            .is_err()
        );
        assert_eq!(kv.get("k"), Some(2));
    }

    #[test]
    fn a_reused_request_id_with_another_operation_is_refused_not_answered_ok() {
        let mut kv = KvStore::default();
        let w = |value| KvOp::Write {
            key: "k".into(),
            value,
        };
        assert_eq!(kv.apply(rid(1, 1), &w(1)), Ok(OpOutput::Done));
        let refusal = ClientError::Invalid {
            reason: InvalidRequest::RequestIdReused { client: 1, seq: 1 },
        };
        assert!(refusal.is_definite());
        let reused = Err(refusal);
        // Another value, another key, another kind of operation, a read: all refused.
        assert_eq!(kv.apply(rid(1, 1), &w(2)), reused);
        let other_key = KvOp::Write {
            key: "j".into(),
            value: 1,
        };
        assert_eq!(kv.apply(rid(1, 1), &other_key), reused);
        assert_eq!(
            kv.apply(rid(1, 1), &KvOp::Delete { key: "k".into() }),
            reused
        );
        assert_eq!(kv.apply(rid(1, 1), &KvOp::Read { key: "k".into() }), reused);
        assert_eq!(kv.get("k"), Some(1));
        assert_eq!(kv.get("j"), None);
        // The genuine retry is still answered from the session, and other clients are
        // unaffected.
        assert_eq!(kv.apply(rid(1, 1), &w(1)), Ok(OpOutput::Done));
        assert_eq!(kv.apply(rid(2, 1), &w(2)), Ok(OpOutput::Done));
        assert_eq!(kv.get("k"), Some(2));
    }

    #[test]
    fn the_session_check_survives_a_snapshot_and_restore() {
        let mut kv = KvStore::default();
        let cas = KvOp::Cas {
            key: "k".into(),
            expected: None,
            new: 5,
        };
        kv.apply(rid(9, 4), &cas).unwrap();
        // The store is what a Raft snapshot carries (postcard).
        let bytes = postcard::to_allocvec(&kv).unwrap();
        let mut restored: KvStore = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(restored, kv);
        assert_eq!(restored.apply(rid(9, 4), &cas), Ok(OpOutput::Done));
        let other = KvOp::Write {
            key: "k".into(),
            value: 6,
        };
        assert!(matches!(
            restored.apply(rid(9, 4), &other),
            Err(ClientError::Invalid {
                reason: InvalidRequest::RequestIdReused { client: 9, seq: 4 }
            })
        ));
        assert_eq!(restored.get("k"), Some(5));
    }

    #[test]
    fn delete_removes_key() {
        let mut kv = KvStore::default();
        kv.apply_op(&KvOp::Write {
            key: "k".into(),
            value: 2,
        })
        .unwrap();
        kv.apply_op(&KvOp::Delete { key: "k".into() }).unwrap();
        assert_eq!(
            kv.apply_op(&KvOp::Read { key: "k".into() }),
            Ok(OpOutput::Read(None))
        );
    }
}

//! The key-value state machine every kvlab system serves, with client sessions so that a
//! retried request is applied at most once.
//!
//! Sequential specification (the one the checker's `kv` model encodes):
//! * `read k` returns the value of `k`, or nothing if absent;
//! * `write k v` sets `k` to `v`;
//! * `cas k old new` sets `k` to `new` if its value is `old` (absent when `old` is none),
//!   and otherwise fails without effect;
//! * `delete k` removes `k`.

use std::collections::BTreeMap;

use kvlab_types::{ClientError, Key, KvOp, OpOutput, RequestId, Value};
use serde::{Deserialize, Serialize};

/// The result of applying one operation.
pub type ApplyResult = Result<OpOutput, ClientError>;

/// The most recent request each client had applied, and its result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    seq: u64,
    result: ApplyResult,
}

/// An in-memory key-value map plus client sessions. Deterministic: ordered maps only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStore {
    data: BTreeMap<Key, Value>,
    sessions: BTreeMap<u64, Session>,
}

impl KvStore {
    /// Applies `op` on behalf of request `id`, unless that request (or a later one of the
    /// same client) was applied already: then the remembered result of the same request
    /// is returned and nothing changes. Clients number their requests in increasing
    /// order and have at most one in flight, so one entry per client suffices.
    pub fn apply(&mut self, id: RequestId, op: &KvOp) -> ApplyResult {
        if let Some(s) = self.sessions.get(&id.client) {
            if s.seq == id.seq {
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
        let result = self.apply_op(op);
        if !op.is_read_only() {
            self.sessions.insert(
                id.client,
                Session {
                    seq: id.seq,
                    result: result.clone(),
                },
            );
        }
        result
    }

    /// Applies `op` without session bookkeeping.
    pub fn apply_op(&mut self, op: &KvOp) -> ApplyResult {
        match op {
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
        }
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

//! Transactions as data: ids, micro-operations, values, and the in-order evaluation of
//! a transaction's micro-operations over one group's keys.

use std::collections::BTreeMap;
use std::fmt;

use kvlab_types::{Key, NodeId, Value};
use serde::{Deserialize, Serialize};

/// Identifies a transaction: the gateway that coordinates it, the gateway's boot epoch
/// (persisted and raised at every start, so ids stay unique across restarts) and the
/// gateway's sequence number within that boot. Never derived from a clock.
///
/// Its order ([`Ord`]) is the *start order* wait-die uses: `(boot_epoch, seq, node)`,
/// smaller is older.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnId {
    /// The coordinating gateway. Answers about this transaction go to it.
    pub node: NodeId,
    /// The gateway's boot epoch.
    pub boot_epoch: u64,
    /// The gateway's sequence number within the boot.
    pub seq: u64,
}

impl From<TxnId> for kvlab_types::TxnRef {
    /// The id as node events name it.
    fn from(t: TxnId) -> Self {
        kvlab_types::TxnRef {
            node: t.node,
            boot_epoch: t.boot_epoch,
            seq: t.seq,
        }
    }
}

impl TxnId {
    /// The wait-die age key: smaller is older.
    fn age_key(&self) -> (u64, u64, NodeId) {
        (self.boot_epoch, self.seq, self.node)
    }

    /// Whether `self` started before `other` (wait-die: an older requester waits).
    pub fn is_older_than(&self, other: &TxnId) -> bool {
        self.age_key() < other.age_key()
    }
}

impl Ord for TxnId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.age_key().cmp(&other.age_key())
    }
}

impl PartialOrd for TxnId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}.{}.{}", self.node.0, self.boot_epoch, self.seq)
    }
}

/// One micro-operation of a one-shot transaction (Jepsen/Elle's `[:r k v]`,
/// `[:append k v]`, `[:w k v]`): the client API's own type, so a client's transaction
/// reaches the coordinator as it was sent.
pub use kvlab_types::TxnMicroOp as MicroOp;

/// A stored value: a register (`write`) or a list (`append`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnValue {
    /// A register value.
    Register(Value),
    /// A list, oldest element first.
    List(Vec<Value>),
}

/// The result of one micro-operation, in the transaction's order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// What a read saw (`None`: absent), including the transaction's own earlier writes.
    Read {
        /// The key.
        key: Key,
        /// The value seen.
        value: Option<TxnValue>,
    },
    /// The append took place (in the buffered writes).
    Appended {
        /// The key.
        key: Key,
        /// The element.
        value: Value,
    },
    /// The write took place (in the buffered writes).
    Written {
        /// The key.
        key: Key,
        /// The value.
        value: Value,
    },
}

/// A change a transaction makes, buffered until the decision and applied in order.
/// Appends are kept as appends (not as the whole new list) so that a commit adds
/// exactly this transaction's elements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BufferedWrite {
    /// Append `value` to `key`.
    Append {
        /// The key.
        key: Key,
        /// The element.
        value: Value,
    },
    /// Set `key` to `value`.
    Set {
        /// The key.
        key: Key,
        /// The value.
        value: Value,
    },
}

/// Why a transaction's micro-operations cannot run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum EvalError {
    /// An append to a key that holds a register.
    #[error("append to {key}, which holds a register")]
    AppendToRegister {
        /// The key.
        key: Key,
    },
}

/// Where transactions read and write: a group's key-value map. The composed node
/// implements it on its state machine's map; tests use a [`BTreeMap`].
pub trait TxnStore {
    /// The value of `key`, if present.
    fn get(&self, key: &str) -> Option<TxnValue>;
    /// Sets `key` to `value`.
    fn put(&mut self, key: &str, value: TxnValue);
}

impl TxnStore for BTreeMap<Key, TxnValue> {
    fn get(&self, key: &str) -> Option<TxnValue> {
        BTreeMap::get(self, key).cloned()
    }
    fn put(&mut self, key: &str, value: TxnValue) {
        self.insert(key.to_string(), value);
    }
}

/// The value of `key` after `w`, given its value before.
fn after_write(before: Option<TxnValue>, w: &BufferedWrite) -> Result<TxnValue, EvalError> {
    match w {
        BufferedWrite::Set { value, .. } => Ok(TxnValue::Register(*value)),
        BufferedWrite::Append { key, value } => match before {
            None => Ok(TxnValue::List(vec![*value])),
            Some(TxnValue::List(mut l)) => {
                l.push(*value);
                Ok(TxnValue::List(l))
            }
            Some(TxnValue::Register(_)) => Err(EvalError::AppendToRegister { key: key.clone() }),
        },
    }
}

/// Evaluates `ops` in order over `store` without changing it: reads see the store plus
/// the transaction's own earlier writes. Returns the results and the writes to buffer.
pub fn evaluate(
    store: &dyn TxnStore,
    ops: &[MicroOp],
) -> Result<(Vec<OpResult>, Vec<BufferedWrite>), EvalError> {
    let mut view: BTreeMap<&Key, Option<TxnValue>> = BTreeMap::new();
    let mut results = Vec::with_capacity(ops.len());
    let mut writes = Vec::new();
    for op in ops {
        let key = op.key();
        let current = view.entry(key).or_insert_with(|| store.get(key));
        match op {
            MicroOp::Read { .. } => results.push(OpResult::Read {
                key: key.clone(),
                value: current.clone(),
            }),
            MicroOp::Append { value, .. } | MicroOp::Write { value, .. } => {
                let w = match op {
                    MicroOp::Append { .. } => BufferedWrite::Append {
                        key: key.clone(),
                        value: *value,
                    },
                    _ => BufferedWrite::Set {
                        key: key.clone(),
                        value: *value,
                    },
                };
                *current = Some(after_write(current.take(), &w)?);
                results.push(match w {
                    BufferedWrite::Append { .. } => OpResult::Appended {
                        key: key.clone(),
                        value: *value,
                    },
                    BufferedWrite::Set { .. } => OpResult::Written {
                        key: key.clone(),
                        value: *value,
                    },
                });
                writes.push(w);
            }
        }
    }
    Ok((results, writes))
}

/// Applies buffered writes to `store`, in order. A write that no longer fits its key
/// (an append to a key that became a register, possible only under a broken variant)
/// is skipped and counted in the return value; it never panics.
pub fn apply_writes(store: &mut dyn TxnStore, writes: &[BufferedWrite]) -> usize {
    let mut skipped = 0;
    for w in writes {
        let key = match w {
            BufferedWrite::Append { key, .. } | BufferedWrite::Set { key, .. } => key,
        };
        match after_write(store.get(key), w) {
            Ok(v) => store.put(key, v),
            Err(_) => skipped += 1,
        }
    }
    skipped
}

/// The distinct keys of `ops`, with whether the transaction writes each.
pub fn key_modes(ops: &[MicroOp]) -> BTreeMap<Key, bool> {
    let mut keys: BTreeMap<Key, bool> = BTreeMap::new();
    for op in ops {
        *keys.entry(op.key().clone()).or_insert(false) |= op.is_write();
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Key {
        s.to_string()
    }

    #[test]
    fn reads_see_the_transactions_own_earlier_appends_in_order() {
        let mut store: BTreeMap<Key, TxnValue> = BTreeMap::new();
        store.put("x", TxnValue::List(vec![1]));
        let ops = vec![
            MicroOp::Read { key: k("x") },
            MicroOp::Append {
                key: k("x"),
                value: 2,
            },
            MicroOp::Read { key: k("x") },
            MicroOp::Write {
                key: k("r"),
                value: 9,
            },
            MicroOp::Read { key: k("r") },
        ];
        let (res, writes) = evaluate(&store, &ops).unwrap();
        assert_eq!(
            res[0],
            OpResult::Read {
                key: k("x"),
                value: Some(TxnValue::List(vec![1]))
            }
        );
        assert_eq!(
            res[2],
            OpResult::Read {
                key: k("x"),
                value: Some(TxnValue::List(vec![1, 2]))
            }
        );
        assert_eq!(
            res[4],
            OpResult::Read {
                key: k("r"),
                value: Some(TxnValue::Register(9))
            }
        );
        // Evaluation changes nothing; applying the buffered writes does.
        assert_eq!(TxnStore::get(&store, "x"), Some(TxnValue::List(vec![1])));
        assert_eq!(apply_writes(&mut store, &writes), 0);
        assert_eq!(TxnStore::get(&store, "x"), Some(TxnValue::List(vec![1, 2])));
        assert_eq!(TxnStore::get(&store, "r"), Some(TxnValue::Register(9)));
    }

    #[test]
    fn an_append_to_a_register_is_an_error_not_a_panic() {
        let mut store: BTreeMap<Key, TxnValue> = BTreeMap::new();
        store.put("r", TxnValue::Register(1));
        let ops = vec![MicroOp::Append {
            key: k("r"),
            value: 2,
        }];
        assert_eq!(
            evaluate(&store, &ops),
            Err(EvalError::AppendToRegister { key: k("r") })
        );
        let w = [BufferedWrite::Append {
            key: k("r"),
            value: 2,
        }];
        assert_eq!(apply_writes(&mut store, &w), 1);
        assert_eq!(TxnStore::get(&store, "r"), Some(TxnValue::Register(1)));
    }

    #[test]
    fn txn_ids_order_by_boot_epoch_then_seq_then_node() {
        let t = |node, boot_epoch, seq| TxnId {
            node: NodeId(node),
            boot_epoch,
            seq,
        };
        assert!(t(9, 1, 5).is_older_than(&t(1, 2, 0)));
        assert!(t(9, 1, 5).is_older_than(&t(1, 1, 6)));
        assert!(t(1, 1, 5).is_older_than(&t(2, 1, 5)));
        assert!(!t(1, 1, 5).is_older_than(&t(1, 1, 5)));
    }
}

//! The vnode state machine: the key-value store plus the group's transaction state
//! (kvlab-txn's [`ParticipantState`]: locks, prepared transactions, records, finished
//! markers) and the lists that `append` builds.
//!
//! ## Log entries
//!
//! A vnode log carries two kinds of normal entries: a client's plain request (a
//! [`KvCommand`], exactly as before transactions existed) and a transaction entry
//! ([`TxnEntry`]), encoded as [`TXN_ENTRY_TAG`] followed by its postcard encoding. The
//! tag is ten `0xFF` bytes: no valid postcard `u64` varint starts so (the tenth byte of
//! a `u64` varint can only be 0 or 1), so no [`KvCommand`] — which opens with its client
//! id — is ever mistaken for a transaction entry, nor the other way round.
//!
//! ## Snapshot image
//!
//! Until the group applies its first transaction entry the image is the plain
//! [`KvStore`] image, byte for byte; after, it is [`TXN_ENTRY_TAG`] and the postcard of
//! `(store image, transaction part)` (the tag again keeps the two apart).
//!
//! ## Plain operations and locks
//!
//! A plain read, write, cas or delete whose key a transaction holds a conflicting lock
//! on is refused at apply (and a ReadIndex read at serve time) with the definite
//! `Unavailable`: a plain read never sees a value that a committed-but-not-yet-applied
//! transaction is about to replace here (design note wave 2 §3.3, step 1).
//!
//! Values: a register is the store's `i64`; a list lives in the transaction part. A
//! plain read of a list key answers absent.

use std::collections::BTreeMap;
use std::sync::Arc;

use kvlab_raft::GroupId;
use kvlab_txn::{Applied, ParticipantState, TxnConfig, TxnEntry, TxnStore, TxnValue};
use kvlab_types::{ClientError, Key, KvOp, NodeEvent, Out, Value};
use serde::{Deserialize, Serialize};

use crate::kv::{ApplyResult, KvStore};
use crate::replica::{KvCommand, StateMachine};

/// The prefix of a transaction entry (and of a snapshot image with transaction state).
pub const TXN_ENTRY_TAG: [u8; 10] = [0xFF; 10];

/// Encodes a transaction entry for a vnode log.
pub fn encode_txn_entry(entry: &TxnEntry) -> Vec<u8> {
    let mut data = TXN_ENTRY_TAG.to_vec();
    // Encoding plain owned data into a Vec cannot fail.
    data.extend(postcard::to_allocvec(entry).unwrap_or_default());
    data
}

/// The replicated transaction part of a vnode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnPart {
    /// Locks, prepared transactions, records, markers.
    pub state: ParticipantState,
    /// List values (`append`), by key.
    pub lists: BTreeMap<Key, Vec<Value>>,
}

/// The key-value store as kvlab-txn sees it: registers in the store, lists beside it.
struct StoreView<'a> {
    kv: &'a mut KvStore,
    lists: &'a mut BTreeMap<Key, Vec<Value>>,
}

impl TxnStore for StoreView<'_> {
    fn get(&self, key: &str) -> Option<TxnValue> {
        if let Some(l) = self.lists.get(key) {
            return Some(TxnValue::List(l.clone()));
        }
        self.kv.get(key).map(TxnValue::Register)
    }

    fn put(&mut self, key: &str, value: TxnValue) {
        let key = key.to_string();
        // A register write and a delete cannot fail.
        match value {
            TxnValue::Register(v) => {
                self.lists.remove(&key);
                let _ = self.kv.apply_op(&KvOp::Write { key, value: v });
            }
            TxnValue::List(l) => {
                let _ = self.kv.apply_op(&KvOp::Delete { key: key.clone() });
                self.lists.insert(key, l);
            }
        }
    }
}

/// A vnode's state machine. See [the module docs](self).
#[derive(Debug, Default)]
pub struct VnodeStore {
    /// Registers, sessions (and the unused etcd keyspace).
    pub kv: KvStore,
    /// The transaction part; `None` until the first transaction entry.
    pub txn: Option<Box<TxnPart>>,
    /// The `[txn]` configuration (not replicated: the same on every node).
    pub cfg: Arc<TxnConfig>,
    /// Transaction entries applied since the node last drained them, with what they
    /// answered: the group's leader sends the answers.
    pub applied_txn: Vec<(TxnEntry, Applied)>,
}

impl VnodeStore {
    /// An empty store under `cfg`.
    pub fn new(cfg: Arc<TxnConfig>) -> Self {
        VnodeStore {
            cfg,
            ..VnodeStore::default()
        }
    }

    /// The group's transaction state, if it ever applied a transaction entry.
    pub fn participant(&self) -> Option<&ParticipantState> {
        self.txn.as_deref().map(|t| &t.state)
    }

    /// The list at `key`, if it is one.
    pub fn list(&self, key: &str) -> Option<&[Value]> {
        self.txn.as_deref()?.lists.get(key).map(Vec::as_slice)
    }

    /// Approximate bytes of the data.
    pub fn approx_bytes(&self) -> u64 {
        let lists = self.txn.as_deref().map_or(0, |t| {
            t.lists
                .iter()
                .map(|(k, l)| k.len() as u64 + 8 * l.len() as u64)
                .sum()
        });
        self.kv.approx_bytes() + lists
    }

    /// The refusal of a plain `op` whose key a transaction holds a conflicting lock on.
    fn locked(&self, op: &KvOp) -> Option<ClientError> {
        let state = self.participant()?;
        let c = state.plain_conflict(op.key(), !op.is_read_only())?;
        Some(ClientError::Unavailable {
            reason: format!("key {:?} is locked by transaction {:?}", c.key, c.holders),
            hint: None,
        })
    }

    fn apply_txn(&mut self, group: GroupId, entry: TxnEntry) {
        let part = self.txn.get_or_insert_with(|| {
            Box::new(TxnPart {
                state: ParticipantState::new(group),
                lists: BTreeMap::new(),
            })
        });
        let mut view = StoreView {
            kv: &mut self.kv,
            lists: &mut part.lists,
        };
        let applied = part.state.apply(&self.cfg, &mut view, &entry);
        self.applied_txn.push((entry, applied));
    }
}

impl StateMachine for VnodeStore {
    fn apply_entry<M>(
        &mut self,
        group: GroupId,
        index: u64,
        term: u64,
        data: &[u8],
        out: &mut Out<M>,
    ) -> Option<ApplyResult> {
        let bad = |reason: String, out: &mut Out<M>| {
            out.event(NodeEvent::BadCommand {
                group,
                index,
                reason,
            })
        };
        if let Some(rest) = data.strip_prefix(&TXN_ENTRY_TAG) {
            match postcard::from_bytes::<TxnEntry>(rest) {
                Ok(entry) => self.apply_txn(group, entry),
                Err(e) => bad(format!("transaction entry: {e}"), out),
            }
            return None;
        }
        match KvCommand::decode(data) {
            Ok(cmd) => Some(match self.locked(&cmd.op) {
                Some(refusal) => Err(refusal),
                None => self.kv.apply_in_term(cmd.id, &cmd.op, term),
            }),
            Err(e) => {
                // Every replica skips it the same way: the stores stay identical.
                bad(e.to_string(), out);
                None
            }
        }
    }

    fn read(&self, key: &str) -> Option<Value> {
        self.kv.get(key)
    }

    fn query(&self, op: &KvOp) -> ApplyResult {
        match self.locked(op) {
            Some(refusal) => Err(refusal),
            None => self.kv.query(op),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let image = self.kv.encode_image();
        match &self.txn {
            None => image,
            Some(t) => {
                let mut bytes = TXN_ENTRY_TAG.to_vec();
                // Encoding plain owned data into a Vec cannot fail.
                bytes.extend(postcard::to_allocvec(&(image, t)).unwrap_or_default());
                bytes
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        VnodeStore::default().restore_from(bytes)
    }

    fn restore_from(&self, bytes: &[u8]) -> Result<Self, String> {
        let (kv, txn) = match bytes.strip_prefix(&TXN_ENTRY_TAG) {
            None => (KvStore::decode_image(bytes), None),
            Some(rest) => {
                let (image, t): (Vec<u8>, TxnPart) =
                    postcard::from_bytes(rest).map_err(|e| e.to_string())?;
                (KvStore::decode_image(&image), Some(Box::new(t)))
            }
        };
        Ok(VnodeStore {
            kv: kv.map_err(|e| e.to_string())?,
            txn,
            cfg: Arc::clone(&self.cfg),
            applied_txn: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvlab_txn::{MicroOp, TxnId};
    use kvlab_types::{NodeId, RequestId};

    #[test]
    fn a_txn_entry_is_never_a_kv_command_and_the_image_round_trips() {
        let txn = TxnId {
            node: NodeId(1),
            boot_epoch: 1,
            seq: 1,
        };
        let entry = TxnEntry::Execute1Pc {
            txn,
            ops: vec![MicroOp::Append {
                key: "a".into(),
                value: 3,
            }],
        };
        let data = encode_txn_entry(&entry);
        assert!(KvCommand::decode(&data).is_err());
        let mut s = VnodeStore::new(Arc::new(TxnConfig::default()));
        let plain = s.encode();
        let mut out: Out<()> = Out::new();
        assert!(s.apply_entry(GroupId(5), 1, 1, &data, &mut out).is_none());
        assert_eq!(s.list("a"), Some(&[3][..]));
        assert_eq!(s.applied_txn.len(), 1);
        let image = s.encode();
        assert_ne!(image, plain);
        let back = s.restore_from(&image).unwrap();
        assert_eq!(back.list("a"), Some(&[3][..]));
        assert_eq!(back.participant(), s.participant());
        // A store that never saw a transaction encodes as the plain KvStore did.
        let w = KvCommand {
            id: RequestId { client: 1, seq: 1 },
            op: KvOp::Write {
                key: "b".into(),
                value: 1,
            },
        };
        let mut p = VnodeStore::default();
        p.apply_entry(GroupId(5), 1, 1, &w.encode(), &mut out);
        let mut kv = KvStore::default();
        kv.apply(w.id, &w.op).unwrap();
        assert_eq!(p.encode(), kv.encode_image());
        // Garbage after the tag is a bad command, not a panic.
        let mut junk = TXN_ENTRY_TAG.to_vec();
        junk.extend([0xFF, 0x00, 0x13]);
        assert!(p.apply_entry(GroupId(5), 2, 1, &junk, &mut out).is_none());
        assert!(p.restore_from(&junk).is_err());
    }
}

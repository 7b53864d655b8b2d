//! etcd's v3 KV semantics as part of the replicated state: an MVCC-lite keyspace
//! ([`EtcdStore`]) that every replica applies the same way, and the encoding of its
//! answers. kvlab-etcd serves it over gRPC; this module does no I/O.
//!
//! ## What it keeps
//!
//! Byte keys and values; one global revision (1 on an empty store, as etcd's), raised by
//! one for every request that changes something (a txn's writes share one revision); for
//! every key its history of versions (`create_revision`, `mod_revision`, `version`,
//! value, or a tombstone) back to the last compaction, so a read at an old revision sees
//! that revision. Compacting at `r` keeps, for each key, the newest version at or below
//! `r` (dropped too if it is a tombstone) and everything after it. No leases: a request
//! that names one gets etcd's "requested lease not found".
//!
//! ## How it follows etcd 3.4
//!
//! The checks, their order and the error messages are etcd 3.4's (`v3rpc/key.go`'s request
//! checks, `etcdserver/apply.go`, `mvcc/kvstore_txn.go`): see [`check_request`] and the
//! `apply_*` functions. A txn evaluates the compares of its taken branch and of every
//! nested txn on that branch against the state before the txn (`compareToPath`), checks
//! its puts and ranges, then applies; a failed check changes nothing. Inner responses
//! carry etcd's headers (a range or a put its revision, a nested txn an empty header).
//! Sorting is stable (etcd's is not, for ties of a non-key target beyond 12 results).
//!
//! ## Encoding
//!
//! An answer ([`Outcome`]) travels as bytes inside `OpOutput::Etcd`: a tag, the Raft
//! term the store last applied in (for the response header), then the protobuf-encoded
//! response, or for an error the gRPC code and etcd's message.

use std::collections::BTreeMap;

use kvlab_types::{EtcdOp, EtcdOpKind};
use prost::Message;
use serde::{Deserialize, Serialize};

/// etcd's protobuf messages, generated from the `.proto` files vendored in
/// `node/etcd/proto` (etcd's, Apache-2.0).
#[allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
pub mod pb {
    /// `mvccpb`: `KeyValue`, `Event`.
    pub mod mvccpb {
        include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    }
    /// `authpb`: users and roles (only for the messages `rpc.proto` names).
    pub mod authpb {
        include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
    }
    /// `etcdserverpb`: the requests and responses of the KV, Cluster and Maintenance
    /// services.
    pub mod etcdserverpb {
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    }
}

use pb::etcdserverpb as rpc;
use pb::mvccpb::KeyValue;
use rpc::compare::{CompareResult, CompareTarget, TargetUnion};
use rpc::range_request::{SortOrder, SortTarget};
use rpc::request_op::Request;
use rpc::response_op::Response;

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// gRPC status codes the etcd API answers with (their numeric values are gRPC's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Code {
    /// `InvalidArgument` (3).
    InvalidArgument = 3,
    /// `NotFound` (5).
    NotFound = 5,
    /// `ResourceExhausted` (8).
    ResourceExhausted = 8,
    /// `FailedPrecondition` (9).
    FailedPrecondition = 9,
    /// `OutOfRange` (11).
    OutOfRange = 11,
    /// `Unavailable` (14).
    Unavailable = 14,
}

impl Code {
    fn from_u8(v: u8) -> Option<Code> {
        Some(match v {
            3 => Code::InvalidArgument,
            5 => Code::NotFound,
            8 => Code::ResourceExhausted,
            9 => Code::FailedPrecondition,
            11 => Code::OutOfRange,
            14 => Code::Unavailable,
            _ => return None,
        })
    }
}

/// An error as etcd answers it: a gRPC code and etcd's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdError {
    /// The gRPC status code.
    pub code: Code,
    /// The message, word for word etcd 3.4's where etcd has one.
    pub message: String,
}

impl EtcdError {
    fn new(code: Code, message: &str) -> EtcdError {
        EtcdError {
            code,
            message: message.to_string(),
        }
    }
    /// `etcdserver: mvcc: required revision has been compacted`.
    pub fn compacted() -> EtcdError {
        Self::new(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        )
    }
    /// `etcdserver: mvcc: required revision is a future revision`.
    pub fn future_rev() -> EtcdError {
        Self::new(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        )
    }
    /// `etcdserver: key is not provided`.
    pub fn empty_key() -> EtcdError {
        Self::new(Code::InvalidArgument, "etcdserver: key is not provided")
    }
    /// `etcdserver: key not found`.
    pub fn key_not_found() -> EtcdError {
        Self::new(Code::InvalidArgument, "etcdserver: key not found")
    }
    /// `etcdserver: value is provided`.
    pub fn value_provided() -> EtcdError {
        Self::new(Code::InvalidArgument, "etcdserver: value is provided")
    }
    /// `etcdserver: lease is provided`.
    pub fn lease_provided() -> EtcdError {
        Self::new(Code::InvalidArgument, "etcdserver: lease is provided")
    }
    /// `etcdserver: requested lease not found` (kvlab has no leases).
    pub fn lease_not_found() -> EtcdError {
        Self::new(Code::NotFound, "etcdserver: requested lease not found")
    }
    /// `etcdserver: duplicate key given in txn request`.
    pub fn duplicate_key() -> EtcdError {
        Self::new(
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        )
    }
    /// `etcdserver: too many operations in txn request`.
    pub fn too_many_ops() -> EtcdError {
        Self::new(
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        )
    }
    /// `etcdserver: request is too large`.
    pub fn request_too_large() -> EtcdError {
        Self::new(Code::InvalidArgument, "etcdserver: request is too large")
    }
    /// A request that does not decode (kvlab's message; etcd's gRPC layer would answer
    /// a similar `Internal`/`InvalidArgument`).
    pub fn malformed(what: &str, why: &str) -> EtcdError {
        EtcdError {
            code: Code::InvalidArgument,
            message: format!("kvlab: malformed etcd {what}: {why}"),
        }
    }
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (gRPC code {})", self.message, self.code as u8)
    }
}

impl std::error::Error for EtcdError {}

/// One decoded etcd KV request.
#[derive(Clone, Debug, PartialEq)]
pub enum EtcdRequest {
    /// `KV.Range`.
    Range(rpc::RangeRequest),
    /// `KV.Put`.
    Put(rpc::PutRequest),
    /// `KV.DeleteRange`.
    DeleteRange(rpc::DeleteRangeRequest),
    /// `KV.Txn`.
    Txn(rpc::TxnRequest),
    /// `KV.Compact`.
    Compact(rpc::CompactionRequest),
}

impl EtcdRequest {
    /// The operation that carries this request through the log.
    pub fn to_op(&self) -> EtcdOp {
        let (kind, request) = match self {
            EtcdRequest::Range(r) => (EtcdOpKind::Range, r.encode_to_vec()),
            EtcdRequest::Put(r) => (EtcdOpKind::Put, r.encode_to_vec()),
            EtcdRequest::DeleteRange(r) => (EtcdOpKind::DeleteRange, r.encode_to_vec()),
            EtcdRequest::Txn(r) if txn_is_read_only(r) => (EtcdOpKind::ReadTxn, r.encode_to_vec()),
            EtcdRequest::Txn(r) => (EtcdOpKind::Txn, r.encode_to_vec()),
            EtcdRequest::Compact(r) => (EtcdOpKind::Compact, r.encode_to_vec()),
        };
        EtcdOp { kind, request }
    }

    /// Decodes an operation built by [`EtcdRequest::to_op`].
    pub fn from_op(op: &EtcdOp) -> Result<EtcdRequest, EtcdError> {
        let bytes = op.request.as_slice();
        let bad = |what: &str, e: prost::DecodeError| EtcdError::malformed(what, &e.to_string());
        Ok(match op.kind {
            EtcdOpKind::Range => {
                EtcdRequest::Range(Message::decode(bytes).map_err(|e| bad("RangeRequest", e))?)
            }
            EtcdOpKind::Put => {
                EtcdRequest::Put(Message::decode(bytes).map_err(|e| bad("PutRequest", e))?)
            }
            EtcdOpKind::DeleteRange => EtcdRequest::DeleteRange(
                Message::decode(bytes).map_err(|e| bad("DeleteRangeRequest", e))?,
            ),
            EtcdOpKind::Txn | EtcdOpKind::ReadTxn => {
                EtcdRequest::Txn(Message::decode(bytes).map_err(|e| bad("TxnRequest", e))?)
            }
            EtcdOpKind::Compact => EtcdRequest::Compact(
                Message::decode(bytes).map_err(|e| bad("CompactionRequest", e))?,
            ),
        })
    }

    /// Whether this is a `serializable` range: served from the local replica, without
    /// a read point.
    pub fn is_serializable_read(&self) -> bool {
        matches!(self, EtcdRequest::Range(r) if r.serializable)
    }
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq)]
pub enum EtcdResponse {
    /// To a range.
    Range(rpc::RangeResponse),
    /// To a put.
    Put(rpc::PutResponse),
    /// To a delete.
    DeleteRange(rpc::DeleteRangeResponse),
    /// To a txn.
    Txn(rpc::TxnResponse),
    /// To a compaction.
    Compact(rpc::CompactionResponse),
}

/// What the store answers: the Raft term it last applied in (for the response header)
/// and the response or etcd's error.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The term of the last etcd entry the store applied (0 before any).
    pub raft_term: u64,
    /// The answer.
    pub result: Result<EtcdResponse, EtcdError>,
}

const TAG_ERROR: u8 = 0xff;

impl Outcome {
    /// Encodes the outcome for `OpOutput::Etcd`.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, body) = match &self.result {
            Ok(EtcdResponse::Range(r)) => (0, r.encode_to_vec()),
            Ok(EtcdResponse::Put(r)) => (1, r.encode_to_vec()),
            Ok(EtcdResponse::DeleteRange(r)) => (2, r.encode_to_vec()),
            Ok(EtcdResponse::Txn(r)) => (3, r.encode_to_vec()),
            Ok(EtcdResponse::Compact(r)) => (4, r.encode_to_vec()),
            Err(e) => {
                let mut body = vec![e.code as u8];
                body.extend_from_slice(e.message.as_bytes());
                (TAG_ERROR, body)
            }
        };
        let mut bytes = Vec::with_capacity(9 + body.len());
        bytes.push(tag);
        bytes.extend_from_slice(&self.raft_term.to_le_bytes());
        bytes.extend_from_slice(&body);
        bytes
    }

    /// Decodes [`Outcome::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Outcome, String> {
        if bytes.len() < 9 {
            return Err(format!(
                "etcd outcome of {} bytes is too short",
                bytes.len()
            ));
        }
        let mut term = [0u8; 8];
        term.copy_from_slice(&bytes[1..9]);
        let body = &bytes[9..];
        let e = |e: prost::DecodeError| e.to_string();
        let result = match bytes[0] {
            0 => Ok(EtcdResponse::Range(Message::decode(body).map_err(e)?)),
            1 => Ok(EtcdResponse::Put(Message::decode(body).map_err(e)?)),
            2 => Ok(EtcdResponse::DeleteRange(Message::decode(body).map_err(e)?)),
            3 => Ok(EtcdResponse::Txn(Message::decode(body).map_err(e)?)),
            4 => Ok(EtcdResponse::Compact(Message::decode(body).map_err(e)?)),
            TAG_ERROR => {
                let (&code, msg) = body
                    .split_first()
                    .ok_or_else(|| "etcd error without a code".to_string())?;
                let code = Code::from_u8(code).ok_or_else(|| format!("unknown code {code}"))?;
                let message = String::from_utf8(msg.to_vec()).map_err(|e| e.to_string())?;
                Err(EtcdError { code, message })
            }
            t => return Err(format!("unknown etcd outcome tag {t}")),
        };
        Ok(Outcome {
            raft_term: u64::from_le_bytes(term),
            result,
        })
    }
}

/// The checks etcd's gRPC layer makes before a request reaches Raft (`v3rpc/key.go`):
/// keys present, `ignore_value`/`ignore_lease` without a value/lease, at most
/// [`MAX_TXN_OPS`] per txn level, no key put twice or put and deleted in one txn.
pub fn check_request(req: &EtcdRequest) -> Result<(), EtcdError> {
    match req {
        EtcdRequest::Range(r) => check_range(r),
        EtcdRequest::Put(p) => check_put(p),
        EtcdRequest::DeleteRange(d) => check_delete(d),
        EtcdRequest::Txn(t) => {
            check_txn(t, MAX_TXN_OPS as i64)?;
            check_intervals(&t.success)?;
            check_intervals(&t.failure)?;
            Ok(())
        }
        EtcdRequest::Compact(_) => Ok(()),
    }
}

fn check_range(r: &rpc::RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::empty_key());
    }
    Ok(())
}

fn check_put(p: &rpc::PutRequest) -> Result<(), EtcdError> {
    if p.key.is_empty() {
        return Err(EtcdError::empty_key());
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(EtcdError::value_provided());
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(EtcdError::lease_provided());
    }
    Ok(())
}

fn check_delete(d: &rpc::DeleteRangeRequest) -> Result<(), EtcdError> {
    if d.key.is_empty() {
        return Err(EtcdError::empty_key());
    }
    Ok(())
}

fn check_txn(t: &rpc::TxnRequest, max_ops: i64) -> Result<(), EtcdError> {
    let opc = t.compare.len().max(t.success.len()).max(t.failure.len()) as i64;
    if opc > max_ops {
        return Err(EtcdError::too_many_ops());
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::empty_key());
    }
    for op in t.success.iter().chain(&t.failure) {
        check_request_op(op, max_ops - opc)?;
    }
    Ok(())
}

fn check_request_op(op: &rpc::RequestOp, max_ops: i64) -> Result<(), EtcdError> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(p)) => check_put(p),
        Some(Request::RequestDeleteRange(d)) => check_delete(d),
        Some(Request::RequestTxn(t)) => check_txn(t, max_ops),
        // etcd: "empty op / nil entry".
        None => Err(EtcdError::key_not_found()),
    }
}

/// A delete's key interval, with etcd's "affine" ends: an empty end is +infinity.
#[derive(Clone, Debug)]
struct Interval {
    begin: Vec<u8>,
    /// `None`: +infinity.
    end: Option<Vec<u8>>,
}

impl Interval {
    fn of_delete(d: &rpc::DeleteRangeRequest) -> Interval {
        if d.range_end.is_empty() {
            // A point: [key, key + "\0").
            let mut end = d.key.clone();
            end.push(0);
            Interval {
                begin: d.key.clone(),
                end: Some(end),
            }
        } else {
            Interval {
                begin: d.key.clone(),
                end: Some(d.range_end.clone()),
            }
        }
    }
    fn contains(&self, k: &[u8]) -> bool {
        self.begin.as_slice() <= k && self.end.as_deref().is_none_or(|e| k < e)
    }
}

/// etcd 3.4's `checkIntervals`: the keys a list of ops puts (with its nested txns), and
/// the intervals it deletes; an error if a key is put twice (other than in the two
/// exclusive branches of one nested txn) or put and deleted.
fn check_intervals(
    reqs: &[rpc::RequestOp],
) -> Result<(std::collections::BTreeSet<Vec<u8>>, Vec<Interval>), EtcdError> {
    let mut dels: Vec<Interval> = reqs
        .iter()
        .filter_map(|r| match &r.request {
            Some(Request::RequestDeleteRange(d)) => Some(Interval::of_delete(d)),
            _ => None,
        })
        .collect();
    let mut puts = std::collections::BTreeSet::new();
    let deleted = |dels: &[Interval], k: &[u8]| dels.iter().any(|i| i.contains(k));
    for r in reqs {
        let Some(Request::RequestTxn(t)) = &r.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(EtcdError::duplicate_key());
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if puts.contains(k) && !puts_then.contains(k) {
                return Err(EtcdError::duplicate_key());
            }
            if deleted(&dels, k) {
                return Err(EtcdError::duplicate_key());
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for r in reqs {
        let Some(Request::RequestPut(p)) = &r.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(EtcdError::duplicate_key());
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

/// One version of a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Version {
    mod_revision: i64,
    create_revision: i64,
    version: i64,
    /// `None`: the key was deleted at `mod_revision` (a tombstone).
    value: Option<Vec<u8>>,
}

/// The etcd keyspace: see [the module docs](self). Deterministic (ordered maps only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdStore {
    /// The store's revision; 0 stands for etcd's initial 1 (see [`EtcdStore::revision`]).
    revision: i64,
    /// The revision of the last compaction, if any.
    compact_revision: Option<i64>,
    /// The term of the last etcd entry applied (response headers report it).
    raft_term: u64,
    /// Every key's versions, oldest first, back to the last compaction.
    keys: BTreeMap<Vec<u8>, Vec<Version>>,
}

/// A write in progress (a put, a delete or a txn): its writes share revision `begin + 1`.
#[derive(Debug)]
struct WriteCx {
    begin: i64,
    changed: bool,
    /// Keys whose history got a version, to undo if the write must be abandoned.
    touched: Vec<Vec<u8>>,
}

impl WriteCx {
    /// The revision reads inside this write see (`beginRev`, +1 once it changed
    /// something, as etcd's `storeTxnWrite`).
    fn read_rev(&self) -> i64 {
        self.begin + i64::from(self.changed)
    }
}

fn header(revision: i64) -> Option<rpc::ResponseHeader> {
    Some(rpc::ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// The end of a range as etcd's mvcc takes it: `None` for a single key, `Some(None)` for
/// "every key from `key` on" (`range_end` = `"\0"`), `Some(Some(end))` for `[key, end)`.
fn range_end(end: &[u8]) -> Option<Option<&[u8]>> {
    match end {
        [] => None,
        [0] => Some(None),
        e => Some(Some(e)),
    }
}

impl EtcdStore {
    /// The current revision (1 on an empty store, as etcd's).
    pub fn revision(&self) -> i64 {
        self.revision.max(1)
    }

    /// The revision of the last compaction (`None` before the first).
    pub fn compact_revision(&self) -> Option<i64> {
        self.compact_revision
    }

    /// The term of the last etcd entry applied.
    pub fn raft_term(&self) -> u64 {
        self.raft_term
    }

    /// Bytes held (keys and values of every kept version), for `Maintenance.Status`'s
    /// `dbSize`.
    pub fn approx_bytes(&self) -> u64 {
        self.keys
            .iter()
            .map(|(k, vs)| {
                vs.iter()
                    .map(|v| k.len() as u64 + 24 + v.value.as_ref().map_or(0, |x| x.len() as u64))
                    .sum::<u64>()
            })
            .sum()
    }

    /// Keys alive now.
    pub fn live_keys(&self) -> usize {
        let rev = self.revision();
        self.keys
            .values()
            .filter(|vs| Self::at(vs, rev).is_some())
            .count()
    }

    /// Whether the store was never touched (it is then left out of snapshots, so a
    /// store that never served etcd encodes as before).
    pub fn is_pristine(&self) -> bool {
        *self == EtcdStore::default()
    }

    /// Applies a request taken from the log (in Raft term `term`) and returns its
    /// encoded [`Outcome`].
    pub fn apply(&mut self, op: &EtcdOp, term: u64) -> Vec<u8> {
        self.raft_term = term;
        let result = EtcdRequest::from_op(op).and_then(|req| self.apply_request(&req));
        Outcome {
            raft_term: self.raft_term,
            result,
        }
        .encode()
    }

    /// Serves a read-only request (a range) without changing anything; anything else is
    /// refused.
    pub fn query(&self, op: &EtcdOp) -> Vec<u8> {
        let result = EtcdRequest::from_op(op).and_then(|req| match req {
            EtcdRequest::Range(r) => {
                check_range(&r)?;
                self.range(&r, self.revision()).map(EtcdResponse::Range)
            }
            EtcdRequest::Txn(t) if txn_is_read_only(&t) => {
                check_request(&EtcdRequest::Txn(t.clone()))?;
                self.read_txn(&t).map(EtcdResponse::Txn)
            }
            _ => Err(EtcdError::malformed(
                "read",
                "only a range or a txn of ranges is served as a read",
            )),
        });
        Outcome {
            raft_term: self.raft_term,
            result,
        }
        .encode()
    }

    /// Applies a decoded request: the checks of [`check_request`], then etcd's apply.
    pub fn apply_request(&mut self, req: &EtcdRequest) -> Result<EtcdResponse, EtcdError> {
        check_request(req)?;
        match req {
            EtcdRequest::Range(r) => self.range(r, self.revision()).map(EtcdResponse::Range),
            EtcdRequest::Put(p) => {
                if p.lease != 0 {
                    return Err(EtcdError::lease_not_found());
                }
                let mut cx = self.begin();
                let resp = self.put(p, &mut cx);
                self.finish(cx, resp.is_ok());
                resp.map(EtcdResponse::Put)
            }
            EtcdRequest::DeleteRange(d) => {
                let mut cx = self.begin();
                let resp = self.delete_range(d, &mut cx);
                self.finish(cx, true);
                Ok(EtcdResponse::DeleteRange(resp))
            }
            EtcdRequest::Txn(t) => self.txn(t).map(EtcdResponse::Txn),
            EtcdRequest::Compact(c) => self.compact(c.revision).map(EtcdResponse::Compact),
        }
    }

    fn begin(&self) -> WriteCx {
        WriteCx {
            begin: self.revision(),
            changed: false,
            touched: Vec::new(),
        }
    }

    /// Ends a write: keeps it (the revision moves on if it changed something) or undoes
    /// it.
    fn finish(&mut self, cx: WriteCx, keep: bool) {
        if keep {
            if cx.changed {
                self.revision = cx.begin + 1;
            }
            return;
        }
        for k in cx.touched.iter().rev() {
            if let Some(vs) = self.keys.get_mut(k) {
                vs.pop();
                if vs.is_empty() {
                    self.keys.remove(k);
                }
            }
        }
    }

    /// The version of a key alive at `rev`, if any.
    fn at(vs: &[Version], rev: i64) -> Option<&Version> {
        vs.iter()
            .rev()
            .find(|v| v.mod_revision <= rev)
            .filter(|v| v.value.is_some())
    }

    fn key_value(key: &[u8], v: &Version) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: v.create_revision,
            mod_revision: v.mod_revision,
            version: v.version,
            value: v.value.clone().unwrap_or_default(),
            lease: 0,
        }
    }

    /// The keys alive at `rev` in `[key, end)` (etcd's range semantics), in key order.
    fn live_in(&self, key: &[u8], end: &[u8], rev: i64) -> Vec<KeyValue> {
        use std::ops::Bound;
        let upper = match range_end(end) {
            None => {
                return self
                    .keys
                    .get(key)
                    .and_then(|vs| Self::at(vs, rev))
                    .map(|v| vec![Self::key_value(key, v)])
                    .unwrap_or_default();
            }
            Some(None) => Bound::Unbounded,
            Some(Some(e)) => {
                if e <= key {
                    return Vec::new();
                }
                Bound::Excluded(e.to_vec())
            }
        };
        self.keys
            .range((Bound::Included(key.to_vec()), upper))
            .filter_map(|(k, vs)| Self::at(vs, rev).map(|v| Self::key_value(k, v)))
            .collect()
    }

    /// etcd's `applierV3backend.Range` over `mvcc.rangeKeys`, reading at `cur_rev`.
    fn range(&self, r: &rpc::RangeRequest, cur_rev: i64) -> Result<rpc::RangeResponse, EtcdError> {
        if r.revision > cur_rev {
            return Err(EtcdError::future_rev());
        }
        let rev = if r.revision <= 0 { cur_rev } else { r.revision };
        if rev < self.compact_revision.unwrap_or(-1) {
            return Err(EtcdError::compacted());
        }
        let mut kvs = self.live_in(&r.key, &r.range_end, rev);
        let count = kvs.len() as i64;
        if r.count_only {
            kvs.clear();
        }
        if r.max_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision <= r.max_mod_revision);
        }
        if r.min_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision >= r.min_mod_revision);
        }
        if r.max_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision <= r.max_create_revision);
        }
        if r.min_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision >= r.min_create_revision);
        }
        let target = SortTarget::try_from(r.sort_target).ok();
        let mut order = SortOrder::try_from(r.sort_order).ok();
        if target != Some(SortTarget::Key) && order == Some(SortOrder::None) {
            // etcd: results come sorted by key, so only another target sorts by default.
            order = Some(SortOrder::Ascend);
        }
        if let (Some(target), Some(order @ (SortOrder::Ascend | SortOrder::Descend))) =
            (target, order)
        {
            let cmp = |a: &KeyValue, b: &KeyValue| match target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            if order == SortOrder::Ascend {
                kvs.sort_by(cmp);
            } else {
                kvs.sort_by(|a, b| cmp(b, a));
            }
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() as i64 > r.limit {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(rpc::RangeResponse {
            header: header(cur_rev),
            kvs,
            more,
            count,
        })
    }

    fn current(&self, key: &[u8], rev: i64) -> Option<KeyValue> {
        self.keys
            .get(key)
            .and_then(|vs| Self::at(vs, rev))
            .map(|v| Self::key_value(key, v))
    }

    fn push(&mut self, key: &[u8], v: Version, cx: &mut WriteCx) {
        self.keys.entry(key.to_vec()).or_default().push(v);
        cx.touched.push(key.to_vec());
        cx.changed = true;
    }

    /// etcd's `applierV3backend.Put` (the lease check is the caller's).
    fn put(
        &mut self,
        p: &rpc::PutRequest,
        cx: &mut WriteCx,
    ) -> Result<rpc::PutResponse, EtcdError> {
        let prev = self.current(&p.key, cx.read_rev());
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(EtcdError::key_not_found());
        }
        let value = match (&prev, p.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => p.value.clone(),
        };
        let rev = cx.begin + 1;
        let (create_revision, version) = match &prev {
            Some(prev) => (prev.create_revision, prev.version + 1),
            None => (rev, 1),
        };
        let v = Version {
            mod_revision: rev,
            create_revision,
            version,
            value: Some(value),
        };
        self.push(&p.key, v, cx);
        Ok(rpc::PutResponse {
            header: header(rev),
            prev_kv: prev.filter(|_| p.prev_kv),
        })
    }

    /// etcd's `applierV3backend.DeleteRange`.
    fn delete_range(
        &mut self,
        d: &rpc::DeleteRangeRequest,
        cx: &mut WriteCx,
    ) -> rpc::DeleteRangeResponse {
        let live = self.live_in(&d.key, &d.range_end, cx.read_rev());
        let rev = cx.begin + 1;
        for kv in &live {
            let tomb = Version {
                mod_revision: rev,
                create_revision: 0,
                version: 0,
                value: None,
            };
            self.push(&kv.key, tomb, cx);
        }
        let deleted = live.len() as i64;
        let revision = if deleted != 0 || cx.changed {
            rev
        } else {
            cx.begin
        };
        rpc::DeleteRangeResponse {
            header: header(revision),
            deleted,
            prev_kvs: if d.prev_kv { live } else { Vec::new() },
        }
    }

    /// etcd's `applyCompare`.
    fn compare(&self, c: &rpc::Compare, rev: i64) -> bool {
        let kvs = self.live_in(&c.key, &c.range_end, rev);
        let target = CompareTarget::try_from(c.target).ok();
        if kvs.is_empty() {
            if target == Some(CompareTarget::Value) {
                // Comparing the value of a key that does not exist always fails.
                return false;
            }
            return compare_kv(c, target, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_kv(c, target, kv))
    }

    /// etcd's `compareToPath`: which branch the txn and each nested txn on the taken
    /// branches take, all judged on the state before the txn.
    fn compare_path(&self, t: &rpc::TxnRequest, rev: i64, path: &mut Vec<bool>) {
        let ok = t.compare.iter().all(|c| self.compare(c, rev));
        path.push(ok);
        let ops = if ok { &t.success } else { &t.failure };
        for op in ops {
            if let Some(Request::RequestTxn(n)) = &op.request {
                self.compare_path(n, rev, path);
            }
        }
    }

    /// etcd's `checkRequests` with `checkRequestPut` then `checkRequestRange`, on the
    /// state before the txn. Returns how many nested txns it walked.
    fn check_taken(
        &self,
        t: &rpc::TxnRequest,
        path: &[bool],
        puts: bool,
    ) -> Result<usize, EtcdError> {
        let mut path = path;
        let Some(&taken) = path.first() else {
            return Ok(0);
        };
        let ops = if taken { &t.success } else { &t.failure };
        let rev = self.revision();
        let mut txns = 0;
        for op in ops {
            match &op.request {
                Some(Request::RequestTxn(n)) => {
                    // As etcd's walk: `path[0]` is consumed; a nested txn starts at
                    // `path[1..]` and the walk goes on after what it consumed.
                    let inner = self.check_taken(n, path.get(1..).unwrap_or(&[]), puts)?;
                    txns += inner + 1;
                    path = path.get(inner + 1..).unwrap_or(&[]);
                }
                Some(Request::RequestPut(p)) if puts => {
                    if (p.ignore_value || p.ignore_lease) && self.current(&p.key, rev).is_none() {
                        return Err(EtcdError::key_not_found());
                    }
                    if p.lease != 0 {
                        return Err(EtcdError::lease_not_found());
                    }
                }
                Some(Request::RequestRange(r)) if !puts && r.revision != 0 => {
                    if r.revision > rev {
                        return Err(EtcdError::future_rev());
                    }
                    if r.revision < self.compact_revision.unwrap_or(-1) {
                        return Err(EtcdError::compacted());
                    }
                }
                _ => {}
            }
        }
        Ok(txns)
    }

    /// A txn of ranges only, served without changing anything: the same path, checks
    /// and responses as [`EtcdStore::txn`] gives it (every range reads the current
    /// revision, as nothing in the txn writes).
    fn read_txn(&self, t: &rpc::TxnRequest) -> Result<rpc::TxnResponse, EtcdError> {
        let mut path = Vec::new();
        let rev = self.revision();
        self.compare_path(t, rev, &mut path);
        self.check_taken(t, &path, false)?;
        let (mut resp, _) = self.read_branch(t, &path, rev)?;
        resp.header = header(rev);
        Ok(resp)
    }

    fn read_branch(
        &self,
        t: &rpc::TxnRequest,
        path: &[bool],
        rev: i64,
    ) -> Result<(rpc::TxnResponse, usize), EtcdError> {
        let Some(&taken) = path.first() else {
            return Err(EtcdError::malformed("txn", "compare path ended early"));
        };
        let ops = if taken { &t.success } else { &t.failure };
        let mut rest = &path[1..];
        let mut txns = 0;
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => Response::ResponseRange(self.range(r, rev)?),
                Some(Request::RequestTxn(n)) => {
                    let (resp, inner) = self.read_branch(n, rest, rev)?;
                    txns += inner + 1;
                    rest = rest.get(inner + 1..).unwrap_or(&[]);
                    Response::ResponseTxn(resp)
                }
                _ => return Err(EtcdError::malformed("read", "a write in a read-only txn")),
            };
            responses.push(rpc::ResponseOp {
                response: Some(response),
            });
        }
        let resp = rpc::TxnResponse {
            header: Some(rpc::ResponseHeader::default()),
            succeeded: taken,
            responses,
        };
        Ok((resp, txns))
    }

    /// etcd's `applierV3backend.Txn`.
    fn txn(&mut self, t: &rpc::TxnRequest) -> Result<rpc::TxnResponse, EtcdError> {
        let mut path = Vec::new();
        self.compare_path(t, self.revision(), &mut path);
        self.check_taken(t, &path, true)?;
        self.check_taken(t, &path, false)?;
        let mut cx = self.begin();
        let applied = self.apply_txn(t, &path, &mut cx);
        let ok = applied.is_ok();
        self.finish_txn(&mut cx, ok);
        let (mut resp, _) = applied?;
        resp.header = header(cx.read_rev());
        Ok(resp)
    }

    fn finish_txn(&mut self, cx: &mut WriteCx, keep: bool) {
        let done = WriteCx {
            begin: cx.begin,
            changed: cx.changed,
            touched: std::mem::take(&mut cx.touched),
        };
        self.finish(done, keep);
    }

    /// etcd's `applyTxn`: runs the branch `path[0]` says; returns the response (with an
    /// empty header, as etcd's nested ones) and how many nested txns it ran.
    fn apply_txn(
        &mut self,
        t: &rpc::TxnRequest,
        path: &[bool],
        cx: &mut WriteCx,
    ) -> Result<(rpc::TxnResponse, usize), EtcdError> {
        let Some(&taken) = path.first() else {
            return Err(EtcdError::malformed("txn", "compare path ended early"));
        };
        let ops = if taken { &t.success } else { &t.failure };
        let mut rest = &path[1..];
        let mut txns = 0;
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => {
                    Response::ResponseRange(self.range(r, cx.read_rev())?)
                }
                Some(Request::RequestPut(p)) => Response::ResponsePut(self.put(p, cx)?),
                Some(Request::RequestDeleteRange(d)) => {
                    Response::ResponseDeleteRange(self.delete_range(d, cx))
                }
                Some(Request::RequestTxn(n)) => {
                    let (resp, inner) = self.apply_txn(n, rest, cx)?;
                    txns += inner + 1;
                    rest = rest.get(inner + 1..).unwrap_or(&[]);
                    Response::ResponseTxn(resp)
                }
                None => return Err(EtcdError::key_not_found()),
            };
            responses.push(rpc::ResponseOp {
                response: Some(response),
            });
        }
        let resp = rpc::TxnResponse {
            header: Some(rpc::ResponseHeader::default()),
            succeeded: taken,
            responses,
        };
        Ok((resp, txns))
    }

    /// etcd's `store.Compact`: keeps what reads at `rev` and later need.
    fn compact(&mut self, rev: i64) -> Result<rpc::CompactionResponse, EtcdError> {
        if rev <= self.compact_revision.unwrap_or(-1) {
            return Err(EtcdError::compacted());
        }
        if rev > self.revision() {
            return Err(EtcdError::future_rev());
        }
        self.compact_revision = Some(rev);
        self.keys.retain(|_, vs| {
            if let Some(i) = vs.iter().rposition(|v| v.mod_revision <= rev) {
                let keep_from = if vs[i].value.is_some() { i } else { i + 1 };
                vs.drain(..keep_from);
            }
            !vs.is_empty()
        });
        Ok(rpc::CompactionResponse {
            header: header(self.revision()),
        })
    }
}

/// etcd's `isTxnReadonly`: no put, delete or writing nested txn in either branch.
pub fn txn_is_read_only(t: &rpc::TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) => true,
            Some(Request::RequestTxn(n)) => txn_is_read_only(n),
            Some(Request::RequestPut(_) | Request::RequestDeleteRange(_)) | None => false,
        })
}

/// etcd's `compareKV`.
fn compare_kv(c: &rpc::Compare, target: Option<CompareTarget>, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match target {
        Some(CompareTarget::Value) => {
            let v: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(v)
        }
        Some(CompareTarget::Create) => {
            let r = match c.target_union {
                Some(TargetUnion::CreateRevision(r)) => r,
                _ => 0,
            };
            kv.create_revision.cmp(&r)
        }
        Some(CompareTarget::Mod) => {
            let r = match c.target_union {
                Some(TargetUnion::ModRevision(r)) => r,
                _ => 0,
            };
            kv.mod_revision.cmp(&r)
        }
        Some(CompareTarget::Version) => {
            let r = match c.target_union {
                Some(TargetUnion::Version(r)) => r,
                _ => 0,
            };
            kv.version.cmp(&r)
        }
        Some(CompareTarget::Lease) => {
            let r = match c.target_union {
                Some(TargetUnion::Lease(r)) => r,
                _ => 0,
            };
            kv.lease.cmp(&r)
        }
        None => Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
        Ok(CompareResult::Greater) => ord == Ordering::Greater,
        Ok(CompareResult::Less) => ord == Ordering::Less,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests;

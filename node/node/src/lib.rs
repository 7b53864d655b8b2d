//! # kvlab-node
//!
//! A kvlab node: the protocols composed into one sans-IO [`kvlab_types::Protocol`], the
//! KV state machine they replicate ([`kv::KvStore`]), and the baseline systems that
//! give the pipeline something real to test ([`baseline`]).
//!
//! **Must never depend on:** tokio, tarpc, the filesystem, sockets, clocks. A node does
//! no I/O: the simulator and the async server drive the very same values. (A test in
//! kvlab-experiments proves this from `cargo metadata`.)
//!
//! ```
//! use kvlab_node::kv::KvStore;
//! use kvlab_types::{KvOp, OpOutput, RequestId};
//!
//! let mut kv = KvStore::default();
//! let id = RequestId { client: 1, seq: 1 };
//! let w = kv.apply(id, &KvOp::Write { key: "k1".into(), value: 5 });
//! assert_eq!(w, Ok(OpOutput::Done));
//! // A retry of the same request is answered from the session table, not applied again.
//! assert_eq!(kv.apply(id, &KvOp::Write { key: "k1".into(), value: 5 }), Ok(OpOutput::Done));
//! ```

pub mod baseline;
pub mod composed;
pub mod etcd;
pub mod forward;
pub mod inspect;
pub mod kv;
pub mod raft_kv;
pub mod replica;
mod system;

pub use system::SystemKind;

/// [`kvlab_types::ClientRequest::validate`], and a refusal of etcd requests: the systems
/// other than `raft` do not serve the etcd keyspace.
pub(crate) fn validate_kv_only(
    req: &kvlab_types::ClientRequest,
) -> Result<(), kvlab_types::InvalidRequest> {
    req.validate()?;
    match req.op {
        kvlab_types::KvOp::Etcd(_) => Err(kvlab_types::InvalidRequest::EtcdNotServed),
        kvlab_types::KvOp::Txn { .. } => Err(kvlab_types::InvalidRequest::TxnNotServed),
        _ => Ok(()),
    }
}

/// FNV-1a, 64 bits: a fixed, portable hash for digests that must agree across replicas,
/// runs and restarts (never a randomly seeded hasher).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

//! kvlab-etcd: etcd's v3 gRPC API in front of a kvlab node, so that `etcdctl`, the
//! `etcd-client` crate and Jepsen's etcd workloads can drive a kvlab cluster.
//!
//! **Serves:** `KV.Range`, `KV.Put`, `KV.DeleteRange`, `KV.Txn`, `KV.Compact`,
//! `Cluster.MemberList` and `Maintenance.Status`. Every other method of those services
//! answers `Unimplemented`; the `Watch`, `Lease` and `Auth` services are not served at
//! all (a request that names a lease gets etcd's "requested lease not found").
//!
//! **Must not depend on:** kvlab-server (the server depends on this crate and serves the
//! API from its node loop, see [`Backend`]); the semantics (revisions, txns, errors) are
//! not here but in kvlab-node's `etcd` module, part of the replicated state.
//!
//! ## How a request travels
//!
//! The gRPC handler decodes the request (tonic, the messages generated into
//! `kvlab_node::etcd::pb` from etcd's `.proto` files), makes etcd's request checks
//! ([`kvlab_node::etcd::check_request`]) and its size check ([`MAX_ETCD_REQUEST_BYTES`],
//! 1.5 MiB as etcd's default, and the Raft entry limit, whichever binds first), and
//! submits a `KvOp::Etcd` to the node through [`Backend::execute`], with a request id
//! from a pool of [`ID_SLOTS`] per node (see [`IdPool`]):
//!
//! * a write (put, delete, txn, compact) is proposed to the group's Raft log like any
//!   write (a follower forwards it to the leader); every replica applies it to its etcd
//!   keyspace and the proposer answers with the encoded response;
//! * a linearizable range, or a txn of ranges only (etcd's read-only txn), is a
//!   **ReadIndex** read (thesis §6.4) on the leader, served once the leader applied up
//!   to the read point (or through the log when the node's `read_mode = "log"`);
//! * a `serializable` range is served at once from the contacted node's own replica.
//!
//! The response header's `revision` comes from the state machine; `raft_term` is the
//! term of the last etcd entry that replica applied; `cluster_id` and `member_id` are
//! the node's ([`EtcdApiInfo`]).
//!
//! Only the single-group `raft` system serves it (revisions are global). On the composed
//! `kvlab` system every vnode group would need its own revision counter: a range over
//! several groups would have no single revision, so it would need per-group revisions in
//! the header (or a hybrid clock): not built.
//!
//! ## Differences from etcd 3.4, and what is not built
//!
//! * No leases, watches, auth, TLS, `MemberAdd/Remove/Update/Promote`, `Defragment`,
//!   `Hash`, `Snapshot`, `MoveLeader` or alarms (`Unimplemented`).
//! * Requests are refused above 1.5 MiB as etcd does, but kvlab's Raft entry limit
//!   (`raft.max_entry_bytes`, 64 KiB by default) usually binds first: a larger put gets
//!   the same "request is too large" where etcd would accept it.
//! * `Maintenance.Status`: `version` is [`VERSION`], `dbSize` the bytes of the live keys
//!   and values of the contacted replica (there is no bolt file), member ids are node ids
//!   and the cluster id a hash of them.
//! * A txn that deletes a key and then puts it with `ignore_value` (possible because
//!   etcd's duplicate check misses deletes to `"\0"`) is refused with "key not found";
//!   etcd 3.4 panics on it.
//! * The number of connections is not capped (requests are: [`ID_SLOTS`] per node,
//!   [`MAX_IN_SERVICE_PER_CONNECTION`] per connection).
//! * The composed `kvlab` system does not serve the API (see above).
//!
//! ```
//! use kvlab_etcd::IdPool;
//! let pool = IdPool::new(3, 1_000);
//! let a = pool.try_take().unwrap();
//! let b = pool.try_take().unwrap();
//! assert_ne!(a.id().client, b.id().client);
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvlab_node::etcd::pb::etcdserverpb as rpc;
use kvlab_node::etcd::{self as mvcc, EtcdError, EtcdRequest, EtcdResponse, Outcome};
pub use kvlab_types::MAX_ETCD_REQUEST_BYTES;
use kvlab_types::{
    ClientError, ClientRequest, ClientResponse, InvalidRequest, KvOp, NodeId, OpOutput, RequestId,
};
use tonic::{Request, Response, Status};

/// The generated gRPC services.
#[allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
pub mod services {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

use services::cluster_server::{Cluster, ClusterServer};
use services::kv_server::{Kv, KvServer};
use services::maintenance_server::{Maintenance, MaintenanceServer};

/// The version `Maintenance.Status` reports: etcd 3.4's API, served by kvlab.
pub const VERSION: &str = "3.4.0+kvlab";

/// Request ids held at once by one node's etcd endpoint: at most this many etcd requests
/// are in flight per node; more wait (up to the request timeout) for a free one.
pub const ID_SLOTS: u32 = 256;

/// The largest gRPC message accepted: etcd's request limit plus its gRPC overhead
/// (512 KiB), as etcd sets its server's receive limit. A larger message is refused by
/// gRPC itself (`ResourceExhausted`).
pub const MAX_GRPC_MESSAGE_BYTES: usize = MAX_ETCD_REQUEST_BYTES + (512 << 10);

/// The most concurrent requests (HTTP/2 streams) on one connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// The most requests one connection has in service at once (more wait in the
/// connection's queue, bounded by `MAX_CONCURRENT_STREAMS`).
pub const MAX_IN_SERVICE_PER_CONNECTION: usize = 256;

/// What the node behind the API can do: run a request, report its state.
pub trait Backend: Clone + Send + Sync + 'static {
    /// Runs one client request and waits for the answer (bounded by the node's own
    /// request timeout).
    fn execute(&self, req: ClientRequest) -> impl Future<Output = ClientResponse> + Send;
    /// The node's Raft state, or `None` if it is not running.
    fn member_status(&self) -> impl Future<Output = Option<MemberStatus>> + Send;
}

/// A node's Raft state, for `Maintenance.Status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberStatus {
    /// The leader it knows.
    pub leader: Option<NodeId>,
    /// Its current term.
    pub term: u64,
    /// Its commit index.
    pub commit_index: u64,
    /// Its applied index.
    pub applied_index: u64,
}

/// One member as `Cluster.MemberList` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// The node.
    pub id: NodeId,
    /// Where its peers reach it (its Raft transport).
    pub peer_addr: Option<SocketAddr>,
    /// Where its etcd API listens, if it serves one and this node was told.
    pub client_addr: Option<SocketAddr>,
}

/// What the endpoint reports about the node and the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdApiInfo {
    /// This node.
    pub node: NodeId,
    /// The cluster id (the same on every member; see [`cluster_id`]).
    pub cluster_id: u64,
    /// Every member.
    pub members: Vec<MemberInfo>,
    /// How long a request may wait for a free request id.
    pub request_timeout: Duration,
    /// The largest encoded request the node can replicate: [`MAX_ETCD_REQUEST_BYTES`], or
    /// less where the Raft entry limit binds first (see [`max_request_bytes`]). A larger
    /// one is refused here, as etcd refuses an oversized one, before it is forwarded.
    pub max_request_bytes: usize,
}

/// Bytes a log entry spends on an etcd request besides the encoded request itself, at
/// most: the request id (two varints), the operation and kind tags, the length.
pub const ENTRY_OVERHEAD_BYTES: usize = 32;

/// The largest encoded etcd request a node whose Raft entries hold at most
/// `max_entry_bytes` can replicate.
pub fn max_request_bytes(max_entry_bytes: usize) -> usize {
    MAX_ETCD_REQUEST_BYTES.min(max_entry_bytes.saturating_sub(ENTRY_OVERHEAD_BYTES))
}

/// The cluster id every member reports: FNV-1a over the sorted member ids.
pub fn cluster_id(members: &[NodeId]) -> u64 {
    let mut ids: Vec<u32> = members.iter().map(|n| n.0).collect();
    ids.sort_unstable();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ids.iter().flat_map(|i| i.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The member id of a node: its node id.
pub fn member_id(node: NodeId) -> u64 {
    u64::from(node.0)
}

/// Why the endpoint could not run.
#[derive(Debug, thiserror::Error)]
pub enum EtcdApiError {
    /// The gRPC server failed.
    #[error("etcd API of node {node}: {source}")]
    Serve {
        /// The node.
        node: NodeId,
        /// What failed.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Request ids for etcd requests. kvlab's session table applies a client's request at
/// most once and expects one request in flight per client, so each in-flight etcd
/// request holds a slot: client `TAG | node << 16 | slot`, sequence numbers rising from
/// the endpoint's start time in nanoseconds (so a restarted endpoint numbers above its
/// previous life, unless the clock went back: then its first requests are refused as
/// superseded, `Unavailable`). The session table holds at most `nodes × ID_SLOTS`
/// etcd clients.
#[derive(Debug)]
pub struct IdPool {
    node: u32,
    free: Mutex<Vec<(u32, u64)>>,
    slots: tokio::sync::Semaphore,
}

/// The tag of etcd clients in the session table (high bits no workload client uses).
const ETCD_CLIENT_TAG: u64 = 0xE7CD << 48;

/// A slot taken from an [`IdPool`]; given back (with its next sequence number) on drop.
#[derive(Debug)]
pub struct IdSlot<'a> {
    pool: &'a IdPool,
    slot: u32,
    seq: u64,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl IdSlot<'_> {
    /// The request id to use.
    pub fn id(&self) -> RequestId {
        RequestId {
            client: ETCD_CLIENT_TAG | (u64::from(self.pool.node) << 16) | u64::from(self.slot),
            seq: self.seq,
        }
    }
}

impl Drop for IdSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut free) = self.pool.free.lock() {
            free.push((self.slot, self.seq + 1));
        }
    }
}

impl IdPool {
    /// A pool for `node`, numbering from `first_seq`.
    pub fn new(node: u32, first_seq: u64) -> IdPool {
        IdPool {
            node,
            free: Mutex::new((0..ID_SLOTS).rev().map(|s| (s, first_seq)).collect()),
            slots: tokio::sync::Semaphore::new(ID_SLOTS as usize),
        }
    }

    /// A slot if one is free now.
    pub fn try_take(&self) -> Option<IdSlot<'_>> {
        let permit = self.slots.try_acquire().ok()?;
        self.slot_with(permit)
    }

    /// A slot, waiting at most `timeout` for one.
    pub async fn take(&self, timeout: Duration) -> Option<IdSlot<'_>> {
        let permit = tokio::time::timeout(timeout, self.slots.acquire())
            .await
            .ok()?
            .ok()?;
        self.slot_with(permit)
    }

    fn slot_with<'a>(&'a self, permit: tokio::sync::SemaphorePermit<'a>) -> Option<IdSlot<'a>> {
        let (slot, seq) = self.free.lock().ok()?.pop()?;
        Some(IdSlot {
            pool: self,
            slot,
            seq,
            _permit: permit,
        })
    }
}

/// The etcd endpoint of one node.
#[derive(Debug)]
pub struct EtcdApi<B> {
    backend: B,
    info: EtcdApiInfo,
    ids: IdPool,
}

/// Maps an etcd error to its gRPC status.
pub fn status_of(e: &EtcdError) -> Status {
    let code = tonic::Code::from_i32(i32::from(e.code as u8));
    Status::new(code, e.message.clone())
}

impl<B: Backend> EtcdApi<B> {
    /// An endpoint over `backend`.
    pub fn new(backend: B, info: EtcdApiInfo) -> Arc<Self> {
        let start_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Arc::new(EtcdApi {
            backend,
            ids: IdPool::new(info.node.0, start_ns.max(1)),
            info,
        })
    }

    fn header(&self, revision: i64, raft_term: u64) -> rpc::ResponseHeader {
        rpc::ResponseHeader {
            cluster_id: self.info.cluster_id,
            member_id: member_id(self.info.node),
            revision,
            raft_term,
        }
    }

    /// Runs one etcd request: checks, size, then the node.
    pub async fn run(&self, req: EtcdRequest) -> Result<EtcdResponse, Status> {
        mvcc::check_request(&req).map_err(|e| status_of(&e))?;
        let op = req.to_op();
        if op.request.len() > self.info.max_request_bytes.min(MAX_ETCD_REQUEST_BYTES) {
            return Err(status_of(&EtcdError::request_too_large()));
        }
        let Some(slot) = self.ids.take(self.info.request_timeout).await else {
            return Err(Status::resource_exhausted("etcdserver: too many requests"));
        };
        let resp = self
            .backend
            .execute(ClientRequest {
                id: slot.id(),
                op: KvOp::Etcd(op),
            })
            .await;
        drop(slot);
        let outcome = match resp.result {
            Ok(OpOutput::Etcd(bytes)) => Outcome::decode(&bytes).map_err(Status::internal)?,
            Ok(other) => {
                return Err(Status::internal(format!(
                    "kvlab: an etcd request was answered {other:?}"
                )));
            }
            Err(e) => return Err(status_of_client_error(&e)),
        };
        let mut resp = outcome.result.map_err(|e| status_of(&e))?;
        let fill = |h: &mut Option<rpc::ResponseHeader>| {
            let revision = h.as_ref().map_or(0, |h| h.revision);
            *h = Some(self.header(revision, outcome.raft_term));
        };
        match &mut resp {
            EtcdResponse::Range(r) => fill(&mut r.header),
            EtcdResponse::Put(r) => fill(&mut r.header),
            EtcdResponse::DeleteRange(r) => fill(&mut r.header),
            EtcdResponse::Txn(r) => fill(&mut r.header),
            EtcdResponse::Compact(r) => fill(&mut r.header),
        }
        Ok(resp)
    }

    /// The contacted replica's revision, term, and bytes of live keys and values (a
    /// serializable range over every key).
    async fn local_state(&self) -> Result<(i64, u64, i64), Status> {
        let all = rpc::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            serializable: true,
            ..Default::default()
        };
        match self.run(EtcdRequest::Range(all)).await? {
            EtcdResponse::Range(r) => {
                let h = r.header.unwrap_or_default();
                let bytes: usize = r.kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
                Ok((h.revision, h.raft_term, bytes as i64))
            }
            _ => Err(Status::internal(
                "kvlab: a range was answered as another request",
            )),
        }
    }
}

/// Maps kvlab's refusals to what etcd answers in the same situation, with etcd's exact
/// messages where etcd has one (clients match on them); kvlab's reason goes to the log.
pub fn status_of_client_error(e: &ClientError) -> Status {
    tracing::debug!(error = %e, "etcd request refused by the node");
    match e {
        ClientError::Invalid {
            reason: InvalidRequest::CommandTooLarge { .. },
        } => status_of(&EtcdError::request_too_large()),
        ClientError::Invalid { reason } => Status::invalid_argument(format!("kvlab: {reason}")),
        ClientError::Unavailable { reason, .. } if reason.contains("no leader") => {
            Status::unavailable("etcdserver: no leader")
        }
        ClientError::Unavailable { reason, .. } if reason.contains("too many") => {
            Status::resource_exhausted("etcdserver: too many requests")
        }
        ClientError::Unavailable { reason, .. } => {
            Status::unavailable(format!("etcdserver: unavailable ({reason})"))
        }
        // etcd's ErrTimeout: the request may or may not have taken effect.
        ClientError::Indeterminate { .. } => Status::unavailable("etcdserver: request timed out"),
        ClientError::CasMismatch { .. } => {
            Status::internal("kvlab: cas mismatch on an etcd request")
        }
        ClientError::TxnAborted { .. } => {
            Status::internal("kvlab: a kvlab transaction answer to an etcd request")
        }
    }
}

/// The services' handle on the shared endpoint.
#[derive(Debug)]
pub struct Svc<B>(Arc<EtcdApi<B>>);

impl<B> Clone for Svc<B> {
    fn clone(&self) -> Self {
        Svc(self.0.clone())
    }
}

macro_rules! kv_call {
    ($self:ident, $req:ident, $variant:ident) => {{
        match $self
            .0
            .run(EtcdRequest::$variant($req.into_inner()))
            .await?
        {
            EtcdResponse::$variant(r) => Ok(Response::new(r)),
            _ => Err(Status::internal("kvlab: answered as another request")),
        }
    }};
}

#[tonic::async_trait]
impl<B: Backend> Kv for Svc<B> {
    async fn range(
        &self,
        request: Request<rpc::RangeRequest>,
    ) -> Result<Response<rpc::RangeResponse>, Status> {
        kv_call!(self, request, Range)
    }
    async fn put(
        &self,
        request: Request<rpc::PutRequest>,
    ) -> Result<Response<rpc::PutResponse>, Status> {
        kv_call!(self, request, Put)
    }
    async fn delete_range(
        &self,
        request: Request<rpc::DeleteRangeRequest>,
    ) -> Result<Response<rpc::DeleteRangeResponse>, Status> {
        kv_call!(self, request, DeleteRange)
    }
    async fn txn(
        &self,
        request: Request<rpc::TxnRequest>,
    ) -> Result<Response<rpc::TxnResponse>, Status> {
        kv_call!(self, request, Txn)
    }
    async fn compact(
        &self,
        request: Request<rpc::CompactionRequest>,
    ) -> Result<Response<rpc::CompactionResponse>, Status> {
        kv_call!(self, request, Compact)
    }
}

#[tonic::async_trait]
impl<B: Backend> Cluster for Svc<B> {
    async fn member_list(
        &self,
        _request: Request<rpc::MemberListRequest>,
    ) -> Result<Response<rpc::MemberListResponse>, Status> {
        let (revision, term, _) = self.0.local_state().await?;
        let url = |a: Option<SocketAddr>| a.map(|a| format!("http://{a}")).into_iter().collect();
        let members = self
            .0
            .info
            .members
            .iter()
            .map(|m| rpc::Member {
                id: member_id(m.id),
                name: m.id.to_string(),
                peer_ur_ls: url(m.peer_addr),
                client_ur_ls: url(m.client_addr),
                is_learner: false,
            })
            .collect();
        Ok(Response::new(rpc::MemberListResponse {
            header: Some(self.0.header(revision, term)),
            members,
        }))
    }
}

#[tonic::async_trait]
impl<B: Backend> Maintenance for Svc<B> {
    async fn status(
        &self,
        _request: Request<rpc::StatusRequest>,
    ) -> Result<Response<rpc::StatusResponse>, Status> {
        let (revision, _, db_size) = self.0.local_state().await?;
        let Some(st) = self.0.backend.member_status().await else {
            return Err(Status::unavailable("etcdserver: server stopped"));
        };
        Ok(Response::new(rpc::StatusResponse {
            header: Some(self.0.header(revision, st.term)),
            version: VERSION.to_string(),
            db_size,
            leader: st.leader.map_or(0, member_id),
            raft_index: st.commit_index,
            raft_term: st.term,
            raft_applied_index: st.applied_index,
            db_size_in_use: db_size,
            ..Default::default()
        }))
    }
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve<B: Backend>(
    listener: tokio::net::TcpListener,
    backend: B,
    info: EtcdApiInfo,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), EtcdApiError> {
    let node = info.node;
    let timeout = info.request_timeout;
    let svc = Svc(EtcdApi::new(backend, info));
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .timeout(timeout * 2)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .concurrency_limit_per_connection(MAX_IN_SERVICE_PER_CONNECTION)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(KvServer::new(svc.clone()).max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES))
        .add_service(
            ClusterServer::new(svc.clone()).max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES),
        )
        .add_service(MaintenanceServer::new(svc).max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|source| EtcdApiError::Serve { node, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_given_back_is_reused_with_the_next_sequence_number() {
        let pool = IdPool::new(2, 100);
        let first = pool.try_take().unwrap().id();
        let again = pool.try_take().unwrap().id();
        assert_eq!(again.client, first.client);
        assert_eq!(again.seq, first.seq + 1);
        assert_eq!(first.client >> 48, 0xE7CD);
        assert_eq!((first.client >> 16) & 0xFFFF_FFFF, 2);
    }

    #[tokio::test]
    async fn every_slot_taken_means_waiting_then_none() {
        let pool = IdPool::new(1, 1);
        let held: Vec<_> = (0..ID_SLOTS).map(|_| pool.try_take().unwrap()).collect();
        let clients: std::collections::BTreeSet<u64> = held.iter().map(|s| s.id().client).collect();
        assert_eq!(clients.len(), ID_SLOTS as usize);
        assert!(pool.try_take().is_none());
        assert!(pool.take(Duration::from_millis(20)).await.is_none());
        drop(held);
        assert!(pool.take(Duration::from_millis(20)).await.is_some());
    }

    #[test]
    fn the_request_limit_is_etcds_or_the_raft_entry_limit_whichever_is_smaller() {
        assert_eq!(
            max_request_bytes(64 << 10),
            (64 << 10) - ENTRY_OVERHEAD_BYTES
        );
        assert_eq!(max_request_bytes(4 << 20), MAX_ETCD_REQUEST_BYTES);
        assert_eq!(max_request_bytes(8), 0);
        // The overhead bound holds for the largest ids and a request at etcd's limit.
        let op = kvlab_types::EtcdOp {
            kind: kvlab_types::EtcdOpKind::Txn,
            request: vec![0; MAX_ETCD_REQUEST_BYTES],
        };
        let cmd = kvlab_node::raft_kv::KvCommand {
            id: RequestId {
                client: u64::MAX,
                seq: u64::MAX,
            },
            op: KvOp::Etcd(op),
        };
        assert!(cmd.encode().len() <= MAX_ETCD_REQUEST_BYTES + ENTRY_OVERHEAD_BYTES);
    }

    #[test]
    fn refusals_map_to_etcds_codes_and_messages() {
        let too_large = ClientError::Invalid {
            reason: InvalidRequest::CommandTooLarge {
                len_bytes: 70_000,
                max_bytes: 65_536,
            },
        };
        let cases = [
            (
                too_large,
                tonic::Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                ClientError::Unavailable {
                    reason: "no leader known".into(),
                    hint: None,
                },
                tonic::Code::Unavailable,
                "etcdserver: no leader",
            ),
            (
                ClientError::Indeterminate {
                    reason: "node 1 did not answer within 2000 ms".into(),
                },
                tonic::Code::Unavailable,
                "etcdserver: request timed out",
            ),
            (
                ClientError::Unavailable {
                    reason: "too many requests pending (65536)".into(),
                    hint: None,
                },
                tonic::Code::ResourceExhausted,
                "etcdserver: too many requests",
            ),
        ];
        for (e, code, message) in cases {
            let st = status_of_client_error(&e);
            assert_eq!((st.code(), st.message()), (code, message), "{e}");
        }
        let st = status_of(&EtcdError::compacted());
        assert_eq!(st.code(), tonic::Code::OutOfRange);
        assert_eq!(
            status_of(&EtcdError::lease_not_found()).code(),
            tonic::Code::NotFound
        );
    }
}

//! # kvlab-server
//!
//! The async node server: it runs one sans-IO [`kvlab_types::Protocol`] (RaftKv, Single,
//! AsyncPrimary) on tokio over any [`kvlab_transport::Transport`] (mem, udp, tarpc) with
//! on-disk storage ([`kvlab_storage::NodeStorage`]), and serves it to clients and
//! operators.
//!
//! - [`NodeServer`] — the driver: one task, a `biased` select over shutdown, admin
//!   commands, timers, peer messages and client requests; effects executed in order with
//!   a pipelined group commit over `server.workers` WAL shards ([`commit`]: every send
//!   and reply after a `Sync` waits for the fsync, the driver does not); a failed fsync
//!   stops the node. See [`driver`] for the contract.
//! - The **client endpoint** ([`KvService`] over tarpc/TCP, postcard frames) and
//!   [`KvClient`], which workloads and `kvlab client` use.
//! - The **admin endpoint** ([`AdminService`] over tarpc/TCP, JSON, loopback by default,
//!   token on every call) and [`AdminClient`]: status, fault rules, shutdown.
//! - [`NodeConfig`] (TOML, validated once, errors name file/line/field),
//!   [`load_node_config`], [`BoundNode`] / [`RunningNode`] and [`run_node`] — the whole
//!   life of `kvlab node --config NODE.toml`.
//! - [`LocalCluster`] — N nodes as tasks of one runtime over the in-process network, for
//!   the `--transport mem` backend.
//!
//! **Must never depend on:** the simulator, the checker, the experiments crate, or any
//! protocol internals beyond their public status accessors. Protocol crates never depend
//! on this one: the server drives them, they do not know it exists. Real time is read
//! here (and only here) for `Cx::now` and timers; randomness still derives from the
//! configured seed.
//!
//! ```
//! use kvlab_node::raft_kv::RaftKvConfig;
//! use kvlab_server::{LocalCluster, LocalClusterConfig, SystemConfig};
//! use kvlab_types::{ClientRequest, KvOp, NodeId, OpOutput, RequestId};
//!
//! # tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let config = LocalClusterConfig::new(1, SystemConfig::Raft(RaftKvConfig::default()), dir.path(), 7);
//! let cluster = LocalCluster::start(config).await.unwrap();
//! let client = cluster.client(NodeId(1)).unwrap();
//! let write = ClientRequest { id: RequestId { client: 1, seq: 1 }, op: KvOp::Write { key: "k".into(), value: 5 } };
//! // A one-node cluster elects itself within a few election timeouts.
//! let resp = loop {
//!     let resp = client.execute(write.clone()).await; // retries reuse the request id
//!     if resp.result.is_ok() { break resp; }
//!     tokio::time::sleep(std::time::Duration::from_millis(20)).await;
//! };
//! assert_eq!(resp.result, Ok(OpOutput::Done));
//! cluster.shutdown().await.unwrap();
//! # });
//! ```

pub mod admin;
pub mod client;
pub mod cluster;
pub mod commit;
pub mod config;
pub mod driver;
pub mod error;
pub mod etcd;
pub mod node;
pub mod rpc;

pub use admin::{
    ADMIN_CALL_TIMEOUT_MS, AdminClient, AdminClientError, AdminError, AdminService,
    AdminServiceClient, EndpointCounters, serve_admin_endpoint,
};
pub use client::{
    KV_CLIENT_RECONNECT_AFTER_IDLE_MS, KvClient, KvClientError, KvClientOptions, KvService,
    KvServiceClient, MAX_CLIENT_ATTEMPTS, serve_client_endpoint,
};
pub use cluster::{LocalClient, LocalCluster, LocalClusterConfig};
pub use commit::{MAX_QUEUED_IO_BYTES, MAX_WORKERS, shard_of};
pub use config::{
    AdminConfig, EtcdApiConfig, MAX_ADMIN_TOKEN_BYTES, MAX_CLIENT_QUEUE_LEN,
    MAX_CLIENT_REQUEST_TIMEOUT_MS, MAX_CLUSTER_NODES, MAX_EVENT_LOG_LEN, MAX_STEPS_PER_SYNC_LIMIT,
    NodeConfig, ServerOptions, SystemConfig, SystemKind, TransportKind, generate_cluster_secret,
    load_node_config, write_private_file,
};
pub use driver::{
    ADMIN_QUEUE_LEN, ClientCall, ConnectionsStatus, DriverCommand, DriverStats, DurableStore,
    EventRecord, MAX_WAITING_CLIENT_REQUESTS, NodeHandle, NodeParts, NodeServer, NodeStatus,
    StorageStatus,
};
pub use error::ServerError;
pub use kvlab_node::inspect::{Inspect, MembershipStatus, ProtocolStatus, raft_role_name};
pub use kvlab_transport::{ClusterSecret, PeerKey};
pub use kvlab_transport_tarpc::guard::{ConnectionStats, MAX_REQUEST_DEADLINE_MS};
pub use node::{
    AnyTransport, BoundNode, EVENTS_FILE_NAME, RunningNode, SHUTDOWN_DRAIN_MS, ShutdownFuture,
    run_node,
};
pub use rpc::{MAX_CONCURRENT_REQUESTS_PER_CONNECTION, MAX_RPC_FRAME_BYTES};

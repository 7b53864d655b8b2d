//! Assembling a node: open its storage, bind its transport and its two endpoints, boot
//! the protocol, run it. [`BoundNode::bind`] does everything that can fail on a port
//! before anything runs (so tests can bind on port 0 first and exchange the addresses
//! afterwards); [`BoundNode::start`] spawns the node; [`run_node`] is the whole life of a
//! `kvlab node` process.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kvlab_node::baseline::{AsyncPrimary, Single};
use kvlab_node::composed::KvlabNode;
use kvlab_node::raft_kv::RaftKv;
use kvlab_storage::{NodeStorage, RealFs, StorageOptions};
use kvlab_transport::{
    DeliveryOrder, Envelope, FaultRules, Transport, TransportError, TransportStats,
};
use kvlab_transport_mem::MemTransport;
use kvlab_transport_tarpc::TarpcTransport;
use kvlab_transport_udp::UdpTransport;
use kvlab_types::{Message, NodeId, Protocol, Recovery, derive_seed};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::ServerError;
use crate::admin::{EndpointCounters, serve_admin_endpoint};
use crate::client::serve_client_endpoint;
use crate::config::{NodeConfig, ServerOptions, SystemConfig, TransportKind};
use crate::driver::{NodeHandle, NodeParts, NodeServer};
use kvlab_node::inspect::Inspect;
use kvlab_transport_tarpc::guard::Endpoint;

/// How long the endpoints stay up after the driver stopped gracefully, so that answers
/// already decided (and the admin `shutdown` call's own answer) reach their callers.
pub const SHUTDOWN_DRAIN_MS: u64 = 100;

/// The name of the event file in a node's data directory.
pub const EVENTS_FILE_NAME: &str = "events.jsonl";

/// Any of the transports a server runs over, behind one type.
#[derive(Debug)]
pub enum AnyTransport<M> {
    /// Tokio channels in one process.
    Mem(MemTransport<M>),
    /// One UDP socket.
    Udp(UdpTransport<M>),
    /// A tarpc peer service over TCP.
    Tarpc(TarpcTransport<M>),
}

impl<M: Message + Send> AnyTransport<M> {
    /// The address peers reach this node at (`None` in process).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            AnyTransport::Mem(_) => None,
            AnyTransport::Udp(t) => Some(t.local_addr()),
            AnyTransport::Tarpc(t) => Some(t.local_addr()),
        }
    }

    /// The guarded peer port's endpoint (its counters), for the tarpc transport.
    pub fn peer_endpoint(&self) -> Option<Arc<Endpoint>> {
        match self {
            AnyTransport::Tarpc(t) => Some(t.endpoint()),
            AnyTransport::Mem(_) | AnyTransport::Udp(_) => None,
        }
    }

    /// Replaces the peer table (no effect in process, where the network knows everyone).
    pub fn set_peers(&self, peers: BTreeMap<NodeId, SocketAddr>) {
        match self {
            AnyTransport::Mem(_) => {}
            AnyTransport::Udp(t) => t.set_peers(peers),
            AnyTransport::Tarpc(t) => t.set_peers(peers),
        }
    }
}

impl<M: Message + Send> Transport for AnyTransport<M> {
    type Msg = M;

    fn local_id(&self) -> NodeId {
        match self {
            AnyTransport::Mem(t) => t.local_id(),
            AnyTransport::Udp(t) => t.local_id(),
            AnyTransport::Tarpc(t) => t.local_id(),
        }
    }

    fn send(&self, to: NodeId, msg: M) -> Result<(), TransportError> {
        match self {
            AnyTransport::Mem(t) => t.send(to, msg),
            AnyTransport::Udp(t) => t.send(to, msg),
            AnyTransport::Tarpc(t) => t.send(to, msg),
        }
    }

    async fn recv(&self) -> Result<Envelope<M>, TransportError> {
        match self {
            AnyTransport::Mem(t) => t.recv().await,
            AnyTransport::Udp(t) => t.recv().await,
            AnyTransport::Tarpc(t) => t.recv().await,
        }
    }

    fn stats(&self) -> TransportStats {
        match self {
            AnyTransport::Mem(t) => t.stats(),
            AnyTransport::Udp(t) => t.stats(),
            AnyTransport::Tarpc(t) => t.stats(),
        }
    }

    fn fault_rules(&self) -> &FaultRules {
        match self {
            AnyTransport::Mem(t) => t.fault_rules(),
            AnyTransport::Udp(t) => t.fault_rules(),
            AnyTransport::Tarpc(t) => t.fault_rules(),
        }
    }

    fn delivery_order(&self) -> DeliveryOrder {
        match self {
            AnyTransport::Mem(t) => t.delivery_order(),
            AnyTransport::Udp(t) => t.delivery_order(),
            AnyTransport::Tarpc(t) => t.delivery_order(),
        }
    }

    async fn shutdown(&self) {
        match self {
            AnyTransport::Mem(t) => t.shutdown().await,
            AnyTransport::Udp(t) => t.shutdown().await,
            AnyTransport::Tarpc(t) => t.shutdown().await,
        }
    }
}

/// A boxed future that ends a node.
pub type ShutdownFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type RunFn = Box<
    dyn FnOnce(ShutdownFuture) -> Pin<Box<dyn Future<Output = Result<(), ServerError>> + Send>>
        + Send,
>;
type SetPeersFn = Box<dyn Fn(BTreeMap<NodeId, SocketAddr>) + Send + Sync>;

/// A node server with its system type erased: its handle, its peer address, and how to
/// run it.
pub(crate) struct ErasedServer {
    pub(crate) handle: NodeHandle,
    pub(crate) peer_addr: Option<SocketAddr>,
    pub(crate) peer_endpoint: Option<Arc<Endpoint>>,
    pub(crate) set_peers: SetPeersFn,
    pub(crate) run: RunFn,
}

/// What every system needs to be assembled, besides its transport.
pub(crate) struct Assembly {
    pub(crate) id: NodeId,
    pub(crate) members: Vec<NodeId>,
    pub(crate) seed: u64,
    pub(crate) options: ServerOptions,
    /// One store per WAL shard, in shard order.
    pub(crate) stores: Vec<NodeStorage<RealFs>>,
    pub(crate) recovery: Recovery,
    pub(crate) data_dir: std::path::PathBuf,
}

/// The name of WAL shard `i`'s directory inside a data directory (`workers` > 1).
pub const SHARD_DIR_PREFIX: &str = "shard-";

/// The directory of each WAL shard of a node whose data directory is `dir`: `dir` itself
/// for one shard, `dir/shard-<i>` for more.
pub fn shard_dirs(dir: &Path, workers: usize) -> Vec<std::path::PathBuf> {
    if workers <= 1 {
        return vec![dir.to_path_buf()];
    }
    (0..workers)
        .map(|i| dir.join(format!("{SHARD_DIR_PREFIX}{i}")))
        .collect()
}

/// Refuses a data directory written with another `server.workers`: its groups' records
/// would be looked for in the wrong logs, and a log nobody opens is acknowledged data
/// lost.
fn check_shard_layout(id: NodeId, dir: &Path, workers: usize) -> Result<(), ServerError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ServerError::DataDir {
        node: id,
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let shard = name
            .strip_prefix(SHARD_DIR_PREFIX)
            .and_then(|n| n.parse::<usize>().ok());
        let refusal = match shard {
            Some(_) if workers == 1 => Some(format!(
                "it holds WAL shard directory {name}, written with server.workers > 1"
            )),
            Some(i) if i >= workers => Some(format!(
                "it holds WAL shard directory {name}, written with server.workers > {i}"
            )),
            None if workers > 1 && (name.starts_with("wal-") || name.starts_with("snapshot")) => {
                Some(format!("it holds {name}, written with server.workers = 1"))
            }
            _ => None,
        };
        if let Some(why) = refusal {
            return Err(ServerError::InvalidConfig {
                field: "server.workers".into(),
                reason: format!(
                    "{workers} does not match data directory {}: {why}; start the node with \
                     the workers it was written with",
                    dir.display()
                ),
            });
        }
    }
    Ok(())
}

/// Opens (or creates) a node's data directory and its `workers` WAL shards, and merges
/// what they recovered. Refuses a directory written with another shard count, and a
/// shard holding a group that belongs to another.
pub(crate) fn open_storage(
    id: NodeId,
    dir: &Path,
    options: &StorageOptions,
    workers: usize,
) -> Result<(Vec<NodeStorage<RealFs>>, Recovery), ServerError> {
    std::fs::create_dir_all(dir).map_err(|source| ServerError::DataDir {
        node: id,
        path: dir.to_path_buf(),
        source,
    })?;
    check_shard_layout(id, dir, workers)?;
    let mut stores = Vec::with_capacity(workers);
    let mut recovery = Recovery::default();
    for (i, shard_dir) in shard_dirs(dir, workers).iter().enumerate() {
        let (store, shard) = open_shard(id, shard_dir, options)?;
        for (group, state) in shard.groups {
            if crate::commit::shard_of(group, workers) != i {
                return Err(ServerError::InvalidConfig {
                    field: "server.workers".into(),
                    reason: format!(
                        "{workers} puts group {group} in shard {}, but its records are in {}",
                        crate::commit::shard_of(group, workers),
                        shard_dir.display()
                    ),
                });
            }
            recovery.groups.insert(group, state);
        }
        stores.push(store);
    }
    Ok((stores, recovery))
}

/// Opens one WAL shard's storage and logs what its recovery found.
fn open_shard(
    id: NodeId,
    dir: &Path,
    options: &StorageOptions,
) -> Result<(NodeStorage<RealFs>, Recovery), ServerError> {
    let (store, recovery) =
        NodeStorage::open(RealFs, dir, options).map_err(|source| ServerError::Storage {
            node: id,
            op: "open",
            source,
        })?;
    let report = store.recovery_report();
    tracing::info!(
        node = %id,
        dir = %dir.display(),
        records = report.records,
        snapshots = report.snapshot_lsns.len(),
        torn_tail = report.torn_tail.is_some(),
        clean_shutdown = report.clean_shutdown,
        recovery = %options.recovery,
        "storage recovered"
    );
    if let Some(torn) = &report.torn_tail {
        tracing::info!(
            node = %id,
            file = %torn.file.display(),
            offset = torn.offset,
            dropped_bytes = torn.dropped_bytes,
            "cut a torn log tail (unsynced writes a crash interrupted): {}",
            torn.reason
        );
    }
    for cut in &report.damage_truncated {
        // The operator asked for this with recovery = "truncate-damaged"; records that
        // were synced (and perhaps acknowledged) are gone, which must not go unnoticed.
        tracing::warn!(
            node = %id,
            file = %cut.damage.file.display(),
            offset = cut.damage.offset,
            bytes_dropped = cut.bytes_dropped,
            records_dropped = %cut
                .records_dropped
                .map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
            "storage recovery dropped synced data: {cut}"
        );
    }
    Ok((store, recovery))
}

/// The fault-rule seed of node `id` in a run with `seed`.
pub(crate) fn fault_seed(seed: u64, id: NodeId) -> u64 {
    derive_seed(seed, "transport-faults", u64::from(id.0))
}

/// Builds the driver for protocol `P` over `transport` and erases its type.
fn assemble<P>(
    config: &P::Config,
    system_name: &str,
    transport: AnyTransport<P::Msg>,
    a: Assembly,
) -> ErasedServer
where
    P: Protocol + Inspect + Send + 'static,
    P::Msg: Send,
{
    let transport = Arc::new(transport);
    let peer_addr = transport.local_addr();
    let peer_endpoint = transport.peer_endpoint();
    let (server, handle) = NodeServer::<P, AnyTransport<P::Msg>>::new(
        config,
        NodeParts {
            id: a.id,
            members: a.members,
            system: system_name.to_string(),
            seed: a.seed,
            transport: transport.clone(),
            stores: a.stores,
            recovery: a.recovery,
            options: a.options,
            events_file: Some(a.data_dir.join(EVENTS_FILE_NAME)),
        },
    );
    let peers_transport = transport;
    ErasedServer {
        handle,
        peer_addr,
        peer_endpoint,
        set_peers: Box::new(move |peers| peers_transport.set_peers(peers)),
        run: Box::new(move |shutdown| Box::pin(server.run(shutdown))),
    }
}

/// How a node's transport is made, given its message type.
pub(crate) trait MakeTransport {
    /// Binds or joins the transport for messages `M`.
    fn make<M: Message + Send>(
        self,
    ) -> impl Future<Output = Result<AnyTransport<M>, ServerError>> + Send;
}

/// Assembles the node for `system` over the transport `make` builds.
pub(crate) async fn assemble_system(
    system: &SystemConfig,
    make: impl MakeTransport,
    a: Assembly,
) -> Result<ErasedServer, ServerError> {
    let name = system.kind().name();
    Ok(match system {
        SystemConfig::Raft(c) => assemble::<RaftKv>(c, name, make.make().await?, a),
        SystemConfig::Single(c) => assemble::<Single>(c, name, make.make().await?, a),
        SystemConfig::AsyncPrimary(c) => assemble::<AsyncPrimary>(c, name, make.make().await?, a),
        SystemConfig::Kvlab(c) => assemble::<KvlabNode>(c, name, make.make().await?, a),
    })
}

/// Binds a UDP or tarpc transport from a node configuration.
struct WireTransport<'a> {
    config: &'a NodeConfig,
    peers: BTreeMap<NodeId, SocketAddr>,
}

impl MakeTransport for WireTransport<'_> {
    async fn make<M: Message + Send>(self) -> Result<AnyTransport<M>, ServerError> {
        let id = self.config.node_id();
        let rules = FaultRules::new(fault_seed(self.config.seed, id));
        let wrap = |source| ServerError::Transport { node: id, source };
        Ok(match self.config.transport {
            TransportKind::Udp => AnyTransport::Udp(
                UdpTransport::bind(
                    id,
                    self.config.listen,
                    self.peers,
                    self.config.udp_config(),
                    rules,
                )
                .await
                .map_err(wrap)?,
            ),
            TransportKind::Tarpc => AnyTransport::Tarpc(
                TarpcTransport::bind(
                    id,
                    self.config.listen,
                    self.peers,
                    self.config.tarpc_config(),
                    rules,
                )
                .await
                .map_err(wrap)?,
            ),
        })
    }
}

async fn bind_endpoint(
    id: NodeId,
    endpoint: &'static str,
    addr: SocketAddr,
) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            node: id,
            endpoint,
            addr,
            source,
        })
}

/// A node whose storage is open and whose sockets are bound, not yet running.
pub struct BoundNode {
    id: NodeId,
    server: ErasedServer,
    etcd: Option<crate::etcd::BoundEtcdApi>,
    client: TcpListener,
    client_addr: SocketAddr,
    admin: TcpListener,
    admin_addr: SocketAddr,
    admin_token: String,
    endpoints: EndpointCounters,
}

impl std::fmt::Debug for BoundNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundNode")
            .field("id", &self.id)
            .field("peer_addr", &self.server.peer_addr)
            .field("client_addr", &self.client_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl BoundNode {
    /// Validates `config`, opens the storage in `data_dir` (recovering what is there),
    /// binds the peer transport, the client endpoint and the admin endpoint, and boots
    /// the protocol. Nothing runs until [`BoundNode::start`].
    pub async fn bind(config: &NodeConfig) -> Result<BoundNode, ServerError> {
        config.validate()?;
        let id = config.node_id();
        let peers = config.peer_table()?;
        let members: Vec<NodeId> = peers.keys().copied().collect();
        let (stores, recovery) =
            open_storage(id, &config.data_dir, &config.storage, config.server.workers)?;
        let client = bind_endpoint(id, "client", config.client).await?;
        let admin = bind_endpoint(id, "admin", config.admin.addr).await?;
        let local = |l: &TcpListener, endpoint, addr| {
            l.local_addr().map_err(|source| ServerError::Bind {
                node: id,
                endpoint,
                addr,
                source,
            })
        };
        let client_addr = local(&client, "client", config.client)?;
        let admin_addr = local(&admin, "admin", config.admin.addr)?;
        let etcd = match &config.etcd_api {
            Some(e) => {
                let listener = bind_endpoint(id, "etcd", e.listen).await?;
                let addr = local(&listener, "etcd", e.listen)?;
                Some(crate::etcd::BoundEtcdApi::new(
                    config, &peers, listener, addr,
                )?)
            }
            None => None,
        };
        let server = assemble_system(
            &config.system_config()?,
            WireTransport {
                config,
                peers: peers.clone(),
            },
            Assembly {
                id,
                members,
                seed: config.seed,
                options: config.server,
                stores,
                recovery,
                data_dir: config.data_dir.clone(),
            },
        )
        .await?;
        if let Some(limit) = open_files_limit() {
            let caps = config.server.client_max_connections
                + config.server.admin_max_connections
                + match config.transport {
                    TransportKind::Tarpc => config.tarpc_config().max_connections,
                    TransportKind::Udp => 0,
                };
            if caps as u64 + FILES_RESERVED_FOR_THE_NODE > limit {
                tracing::warn!(
                    node = %id,
                    caps,
                    limit,
                    "the connection caps and the node's own files may exceed the open-files limit (ulimit -n): lower the caps or raise the limit"
                );
            }
        }
        let endpoints = EndpointCounters {
            peer: server.peer_endpoint.clone(),
            client: Some(Endpoint::new("client", config.server.client_limits())),
            admin: Some(Endpoint::new("admin", config.server.admin_limits())),
        };
        Ok(BoundNode {
            id,
            server,
            etcd,
            client,
            client_addr,
            admin,
            admin_addr,
            admin_token: config.admin.token.clone(),
            endpoints,
        })
    }

    /// The node.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Where peers reach this node (the port the OS picked if `listen` had port 0).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.server.peer_addr
    }

    /// Where the client endpoint listens.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// Where the admin endpoint listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Replaces the peer table (for nodes bound on port 0 that learn each other's
    /// addresses afterwards).
    pub fn set_peers(&self, peers: BTreeMap<NodeId, SocketAddr>) {
        if let Some(e) = &self.etcd {
            e.set_peer_addrs(&peers);
        }
        (self.server.set_peers)(peers);
    }

    /// Where the etcd API listens, if configured (`[etcd_api]`).
    pub fn etcd_addr(&self) -> Option<SocketAddr> {
        self.etcd.as_ref().map(crate::etcd::BoundEtcdApi::addr)
    }

    /// Replaces the other members' etcd API addresses that `Cluster.MemberList` lists
    /// (for nodes bound on port 0).
    pub fn set_etcd_members(&self, members: &BTreeMap<NodeId, SocketAddr>) {
        if let Some(e) = &self.etcd {
            e.set_client_addrs(members);
        }
    }

    /// A handle on the node (valid once it runs).
    pub fn handle(&self) -> NodeHandle {
        self.server.handle.clone()
    }

    /// Spawns the node on the current tokio runtime: the driver, the client endpoint and
    /// the admin endpoint run until `shutdown` completes, an admin `shutdown` arrives, or
    /// a failure stops the node.
    pub fn start(self, shutdown: impl Future<Output = ()> + Send + 'static) -> RunningNode {
        let BoundNode {
            id,
            server,
            etcd,
            client,
            client_addr,
            admin,
            admin_addr,
            admin_token,
            endpoints,
        } = self;
        let handle = server.handle.clone();
        let peer_addr = server.peer_addr;
        let endpoints_handle = handle.clone();
        let run = server.run;
        let task = tokio::spawn(async move {
            let client_endpoint = endpoints
                .client
                .clone()
                .expect("BoundNode::bind makes the client endpoint");
            let client_ep =
                serve_client_endpoint(client, endpoints_handle.clone(), client_endpoint);
            let etcd_handle = endpoints_handle.clone();
            let admin_ep = serve_admin_endpoint(admin, endpoints_handle, admin_token, endpoints);
            let etcd_ep = async move {
                match etcd {
                    Some(e) => e.serve(etcd_handle).await,
                    None => std::future::pending().await,
                }
            };
            let mut client_ep = std::pin::pin!(client_ep);
            let mut admin_ep = std::pin::pin!(admin_ep);
            let mut etcd_ep = std::pin::pin!(etcd_ep);
            let driver = run(Box::pin(shutdown));
            let result = tokio::select! {
                r = driver => r,
                _ = &mut client_ep => unreachable_endpoint(id),
                _ = &mut admin_ep => unreachable_endpoint(id),
                r = &mut etcd_ep => Err(ServerError::Driver {
                    node: id,
                    reason: format!("the etcd API stopped: {}", r.err().map_or_else(|| "its accept loop ended".to_string(), |e| e.to_string())),
                }),
            };
            if result.is_ok() {
                // Let answers already decided reach their callers, then close the sockets.
                let drain = tokio::time::sleep(Duration::from_millis(SHUTDOWN_DRAIN_MS));
                tokio::select! {
                    _ = drain => {}
                    _ = &mut client_ep => {}
                    _ = &mut admin_ep => {}
                }
            }
            result
        });
        RunningNode {
            id,
            handle,
            peer_addr,
            client_addr,
            admin_addr,
            task,
        }
    }
}

/// File descriptors a node needs besides its connections (WAL segments, snapshots,
/// listeners, the runtime), for the open-files check at bind.
pub const FILES_RESERVED_FOR_THE_NODE: u64 = 128;

/// The soft open-files limit of this process (`ulimit -n`), where it can be read.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The accept loops never end on their own; if one did, the node reports it.
fn unreachable_endpoint(id: NodeId) -> Result<(), ServerError> {
    Err(ServerError::Driver {
        node: id,
        reason: "an endpoint's accept loop ended".into(),
    })
}

/// A node running as a tokio task.
#[derive(Debug)]
pub struct RunningNode {
    id: NodeId,
    handle: NodeHandle,
    peer_addr: Option<SocketAddr>,
    client_addr: SocketAddr,
    admin_addr: SocketAddr,
    task: JoinHandle<Result<(), ServerError>>,
}

impl RunningNode {
    /// The node.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// A handle on the node (in-process client requests, status, fault rules).
    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }
    /// Where peers reach this node.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }
    /// Where the client endpoint listens.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }
    /// Where the admin endpoint listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }
    /// Whether the node's task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until the node stops by itself (its shutdown future, an admin `shutdown`, or
    /// a failure) and returns how it ended.
    pub async fn wait(self) -> Result<(), ServerError> {
        let id = self.id;
        self.task.await.map_err(|e| ServerError::Driver {
            node: id,
            reason: e.to_string(),
        })?
    }

    /// Stops the node gracefully (store synced, sockets closed) and waits for it.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.handle.shutdown();
        self.wait().await
    }

    /// Kills the node like `kill -9` would, as far as one process can: the task is
    /// aborted, appends still buffered in the process are lost, nothing is synced. The
    /// sockets are closed when this returns.
    pub async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The whole life of a `kvlab node` process: binds everything from `config`, runs until
/// `shutdown` completes (the binary passes ctrl-c / SIGTERM) or an admin `shutdown`
/// arrives, then stops gracefully (stops accepting, syncs the store, closes the
/// sockets). A restarted node recovers from its `data_dir`.
pub async fn run_node(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let bound = BoundNode::bind(&config).await?;
    tracing::info!(
        node = %bound.id(),
        system = config.system.name(),
        transport = config.transport.name(),
        peer_addr = ?bound.peer_addr(),
        client_addr = %bound.client_addr(),
        admin_addr = %bound.admin_addr(),
        data_dir = %config.data_dir.display(),
        "node listening"
    );
    bound.start(shutdown).wait().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvlab_storage::{FsyncPolicy, RecoveryMode, Vfs, VfsFile};
    use kvlab_types::GroupId;
    use std::sync::Mutex;

    /// A tracing writer that keeps what was logged.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn write_groups(dir: &Path, workers: usize, groups: &[u64]) {
        let options = StorageOptions::default();
        let (mut stores, _) = open_storage(NodeId(1), dir, &options, workers).unwrap();
        for &g in groups {
            let shard = crate::commit::shard_of(GroupId(g), workers);
            stores[shard].persist(GroupId(g), &g.to_le_bytes()).unwrap();
        }
        for s in &mut stores {
            s.close().unwrap();
        }
    }

    #[test]
    fn wal_shards_reopen_with_every_group_and_refuse_another_worker_count() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let options = StorageOptions::default();
        write_groups(dir, 2, &[0, 1, 2, 3]);
        assert!(dir.join("shard-0").is_dir() && dir.join("shard-1").is_dir());
        let (stores, recovery) = open_storage(NodeId(1), dir, &options, 2).unwrap();
        assert_eq!(stores.len(), 2);
        let groups: Vec<u64> = recovery.groups.keys().map(|g| g.0).collect();
        assert_eq!(groups, [0, 1, 2, 3]);
        drop(stores);
        for (workers, says) in [(1, "WAL shard directory shard-"), (4, "group g2")] {
            match open_storage(NodeId(1), dir, &options, workers) {
                Err(ServerError::InvalidConfig { field, reason }) => {
                    assert_eq!(field, "server.workers");
                    assert!(reason.contains(says), "{workers}: {reason}");
                }
                other => panic!("workers = {workers}: {other:?}"),
            }
        }
        let one = tmp.path().join("one");
        write_groups(&one, 1, &[0, 1]);
        match open_storage(NodeId(1), &one, &options, 2) {
            Err(ServerError::InvalidConfig { field, reason }) => {
                assert_eq!(field, "server.workers");
                assert!(reason.contains("server.workers = 1"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let three = tmp.path().join("three");
        write_groups(&three, 3, &[5]);
        match open_storage(NodeId(1), &three, &options, 2) {
            Err(ServerError::InvalidConfig { reason, .. }) => {
                assert!(reason.contains("shard-2"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn opening_storage_with_truncate_damaged_logs_the_loss_at_warn() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("n1");
        let strict = StorageOptions {
            fsync: FsyncPolicy::Always,
            ..StorageOptions::default()
        };
        let (mut store, _) = NodeStorage::open(RealFs, &dir, &strict).unwrap();
        for i in 0..20u32 {
            store.persist(GroupId::DEFAULT, &i.to_le_bytes()).unwrap();
        }
        store.close().unwrap();
        drop(store);
        // After the graceful stop, the last five records (16 + 8 + 4 bytes each) vanish.
        let segment = dir.join(kvlab_storage::segment_file_name(kvlab_storage::Lsn::FIRST));
        let mut f = RealFs.open_append(&segment).unwrap();
        let len = f.len_bytes().unwrap();
        f.truncate(len - 5 * 28).unwrap();
        f.sync_all().unwrap();
        drop(f);

        let refused = open_storage(NodeId(1), &dir, &strict, 1);
        assert!(
            matches!(refused, Err(ServerError::Storage { .. })),
            "strict recovery refuses"
        );
        let truncating = StorageOptions {
            recovery: RecoveryMode::TruncateDamaged,
            ..strict
        };
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let logs = logs.clone();
                move || logs.clone()
            })
            .with_ansi(false)
            .finish();
        let (stores, recovery) = tracing::subscriber::with_default(subscriber, || {
            open_storage(NodeId(1), &dir, &truncating, 1)
        })
        .unwrap();
        let store = &stores[0];
        assert_eq!(recovery.group(GroupId::DEFAULT).records.len(), 15);
        assert_eq!(
            store.recovery_report().damage_truncated[0].records_dropped,
            Some(5)
        );
        let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let warn = logs
            .lines()
            .find(|l| l.contains("WARN"))
            .unwrap_or_else(|| panic!("no WARN line in:\n{logs}"));
        assert!(warn.contains("records_dropped=5"), "{warn}");
        assert!(warn.contains("bytes_dropped=140"), "{warn}");
        assert!(warn.contains(&segment.display().to_string()), "{warn}");
    }
}

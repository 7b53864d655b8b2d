//! [`LocalCluster`]: N node servers as tasks of one tokio runtime over a
//! [`kvlab_transport_mem::MemNetwork`], in real time, each with on-disk storage in its own
//! directory — the `--transport mem` backend. Nodes can be crashed, stopped, restarted
//! (recovering from their data directory) and cut off with fault rules; clients reach
//! them through in-process handles that follow restarts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use kvlab_node::baseline::BaselineMsg;
use kvlab_node::composed::KvlabMsg;
use kvlab_node::raft_kv::RaftKvMsg;
use kvlab_storage::StorageOptions;
use kvlab_transport::{ClusterSecret, FaultRule, FaultRules};
use kvlab_transport_mem::{MemConfig, MemNetwork};
use kvlab_types::{ClientError, ClientRequest, ClientResponse, Message, NodeId};
use tokio::task::JoinHandle;

use crate::ServerError;
use crate::config::{MAX_CLUSTER_NODES, ServerOptions, SystemConfig};
use crate::driver::{NodeHandle, NodeStatus};
use crate::node::{
    AnyTransport, Assembly, MakeTransport, assemble_system, fault_seed, open_storage,
};

/// Everything a [`LocalCluster`] needs.
#[derive(Clone, Debug)]
pub struct LocalClusterConfig {
    /// Number of nodes (ids `1..=nodes`).
    pub nodes: u32,
    /// The system every node runs.
    pub system: SystemConfig,
    /// Node `i` keeps its data in `data_root/n<i>`.
    pub data_root: PathBuf,
    /// Storage options of every node.
    pub storage: StorageOptions,
    /// Driver options of every node.
    pub server: ServerOptions,
    /// The in-process network's limits.
    pub mem: MemConfig,
    /// The run seed.
    pub seed: u64,
    /// Keys the MAC of every frame the in-process network encodes (`mem.codec_roundtrip`
    /// and injected frames); [`LocalClusterConfig::new`] generates a fresh one.
    pub cluster_secret: ClusterSecret,
}

impl LocalClusterConfig {
    /// A cluster of `nodes` nodes running `system` with default options.
    pub fn new(nodes: u32, system: SystemConfig, data_root: impl Into<PathBuf>, seed: u64) -> Self {
        LocalClusterConfig {
            nodes,
            system,
            data_root: data_root.into(),
            storage: StorageOptions::default(),
            server: ServerOptions::default(),
            mem: MemConfig::default(),
            seed,
            cluster_secret: crate::config::generate_cluster_secret(seed),
        }
    }

    /// Checks every field, naming the one out of range.
    pub fn validate(&self) -> Result<(), ServerError> {
        if !(1..=MAX_CLUSTER_NODES as u64).contains(&u64::from(self.nodes)) {
            return Err(ServerError::InvalidConfig {
                field: "nodes".into(),
                reason: format!("{} is outside [1, {MAX_CLUSTER_NODES}]", self.nodes),
            });
        }
        self.storage
            .validate()
            .map_err(|e| ServerError::InvalidConfig {
                field: format!("storage.{}", e.field),
                reason: e.reason,
            })?;
        self.server.validate()?;
        self.mem
            .transport
            .validate()
            .map_err(|e| ServerError::InvalidConfig {
                field: "mem".into(),
                reason: e.to_string(),
            })?;
        self.system.validate(&self.members())
    }

    fn members(&self) -> Vec<NodeId> {
        (1..=self.nodes).map(NodeId).collect()
    }
}

/// The in-process network, typed by the system's message.
#[derive(Clone, Debug)]
enum Net {
    Raft(MemNetwork<RaftKvMsg>),
    Kvlab(MemNetwork<KvlabMsg>),
    Baseline(MemNetwork<BaselineMsg>),
}

/// Joins node `id` to the network (the message type is the system's).
struct JoinMem<'a> {
    net: &'a Net,
    id: NodeId,
    rules: FaultRules,
}

impl MakeTransport for JoinMem<'_> {
    async fn make<M: Message + Send>(self) -> Result<AnyTransport<M>, ServerError> {
        // The network's message type is fixed by the system; `M` is the same type, which
        // `Any` checks at run time without unsafe code.
        let wrap = |source| ServerError::Transport {
            node: self.id,
            source,
        };
        let joined: Box<dyn std::any::Any> = match self.net {
            Net::Raft(n) => Box::new(n.join(self.id, self.rules).map_err(wrap)?),
            Net::Kvlab(n) => Box::new(n.join(self.id, self.rules).map_err(wrap)?),
            Net::Baseline(n) => Box::new(n.join(self.id, self.rules).map_err(wrap)?),
        };
        match joined.downcast::<kvlab_transport_mem::MemTransport<M>>() {
            Ok(t) => Ok(AnyTransport::Mem(*t)),
            Err(_) => Err(ServerError::NodeState {
                node: self.id,
                reason: "the in-process network carries another message type than the system"
                    .into(),
            }),
        }
    }
}

/// One node of the cluster while it runs.
#[derive(Debug)]
struct Running {
    handle: NodeHandle,
    task: JoinHandle<Result<(), ServerError>>,
}

type Handles = Arc<RwLock<BTreeMap<NodeId, Option<NodeHandle>>>>;

/// A client of one node of a [`LocalCluster`] that follows the node across restarts.
#[derive(Clone, Debug)]
pub struct LocalClient {
    node: NodeId,
    handles: Handles,
}

impl LocalClient {
    /// The node this client talks to.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Executes `req` on the node: `Unavailable` if the node is down (the request surely
    /// did not take effect), otherwise as [`NodeHandle::execute`].
    pub async fn execute(&self, req: ClientRequest) -> ClientResponse {
        let handle = self
            .handles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&self.node)
            .cloned()
            .flatten();
        match handle {
            Some(h) => h.execute(req).await,
            None => ClientResponse {
                id: req.id,
                result: Err(ClientError::Unavailable {
                    reason: format!("node {} is down", self.node),
                    hint: None,
                }),
            },
        }
    }
}

/// N nodes in one process over an in-process network. See the [module docs](self).
#[derive(Debug)]
pub struct LocalCluster {
    config: LocalClusterConfig,
    net: Net,
    nodes: BTreeMap<NodeId, Option<Running>>,
    handles: Handles,
}

impl LocalCluster {
    /// Starts every node (each recovers from its data directory if it has one).
    pub async fn start(mut config: LocalClusterConfig) -> Result<LocalCluster, ServerError> {
        config.validate()?;
        config.mem.transport.peer_key = config.cluster_secret.peer_key();
        let wrap = |e: kvlab_transport::TransportError| ServerError::InvalidConfig {
            field: "mem".into(),
            reason: e.to_string(),
        };
        let net = match config.system {
            SystemConfig::Raft(_) => Net::Raft(MemNetwork::new(config.mem).map_err(wrap)?),
            SystemConfig::Kvlab(_) => Net::Kvlab(MemNetwork::new(config.mem).map_err(wrap)?),
            SystemConfig::Single(_) | SystemConfig::AsyncPrimary(_) => {
                Net::Baseline(MemNetwork::new(config.mem).map_err(wrap)?)
            }
        };
        let members = config.members();
        let mut cluster = LocalCluster {
            config,
            net,
            nodes: members.iter().map(|id| (*id, None)).collect(),
            handles: Arc::new(RwLock::new(members.iter().map(|id| (*id, None)).collect())),
        };
        for id in members {
            cluster.restart(id).await?;
        }
        Ok(cluster)
    }

    /// The members, in order.
    pub fn members(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The data directory of `id`.
    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.config.data_root.join(format!("n{}", id.0))
    }

    /// Whether `id` runs now.
    pub fn is_running(&self, id: NodeId) -> bool {
        matches!(self.nodes.get(&id), Some(Some(r)) if !r.task.is_finished())
    }

    /// A client of `id` that follows it across restarts.
    pub fn client(&self, id: NodeId) -> Result<LocalClient, ServerError> {
        self.check_member(id)?;
        Ok(LocalClient {
            node: id,
            handles: self.handles.clone(),
        })
    }

    /// The handle of `id` while it runs.
    pub fn handle(&self, id: NodeId) -> Result<NodeHandle, ServerError> {
        match self.nodes.get(&id) {
            None => Err(not_member(id)),
            Some(None) => Err(ServerError::NodeState {
                node: id,
                reason: "not running".into(),
            }),
            Some(Some(r)) => Ok(r.handle.clone()),
        }
    }

    /// The status of `id`.
    pub async fn status(&self, id: NodeId) -> Result<NodeStatus, ServerError> {
        self.handle(id)?.status().await
    }

    /// Replaces the fault rules of `id` (lost when it restarts, as in a process).
    pub fn set_fault_rules(&self, id: NodeId, rules: Vec<FaultRule>) -> Result<(), ServerError> {
        self.handle(id)?
            .fault_rules()
            .set(rules)
            .map_err(|source| ServerError::Transport { node: id, source })
    }

    /// Removes every fault rule of `id`.
    pub fn clear_fault_rules(&self, id: NodeId) -> Result<(), ServerError> {
        self.handle(id)?.fault_rules().clear();
        Ok(())
    }

    /// Pauses `id` (the in-process `SIGSTOP`: see [`crate::DriverCommand::Pause`]).
    pub async fn pause(&self, id: NodeId) -> Result<(), ServerError> {
        self.handle(id)?.pause().await;
        Ok(())
    }

    /// Resumes a paused `id` (`SIGCONT`).
    pub async fn resume(&self, id: NodeId) -> Result<(), ServerError> {
        self.handle(id)?.resume().await;
        Ok(())
    }

    /// Kills `id` without syncing (appends buffered in the process are lost). A node that
    /// is already down is left alone.
    pub async fn crash(&mut self, id: NodeId) -> Result<(), ServerError> {
        let running = self.take(id)?;
        if let Some(r) = running {
            r.task.abort();
            let _ = r.task.await;
        }
        Ok(())
    }

    /// Stops `id` gracefully and returns how it ended. A node that is already down is
    /// left alone.
    pub async fn stop(&mut self, id: NodeId) -> Result<(), ServerError> {
        match self.take(id)? {
            None => Ok(()),
            Some(r) => {
                r.handle.shutdown();
                r.task.await.map_err(|e| ServerError::Driver {
                    node: id,
                    reason: e.to_string(),
                })?
            }
        }
    }

    /// Starts `id` from its data directory (crashing it first if it runs).
    pub async fn restart(&mut self, id: NodeId) -> Result<(), ServerError> {
        self.crash(id).await?;
        let dir = self.data_dir(id);
        let (stores, recovery) =
            open_storage(id, &dir, &self.config.storage, self.config.server.workers)?;
        let server = assemble_system(
            &self.config.system,
            JoinMem {
                net: &self.net,
                id,
                rules: FaultRules::new(fault_seed(self.config.seed, id)),
            },
            Assembly {
                id,
                members: self.config.members(),
                seed: self.config.seed,
                options: self.config.server,
                stores,
                recovery,
                data_dir: dir,
            },
        )
        .await?;
        let handle = server.handle.clone();
        let task = tokio::spawn((server.run)(Box::pin(std::future::pending())));
        self.handles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Some(handle.clone()));
        self.nodes.insert(id, Some(Running { handle, task }));
        Ok(())
    }

    /// Stops every node gracefully; returns the first failure, if any.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        let mut first = Ok(());
        for id in self.members() {
            let r = self.stop(id).await;
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    fn take(&mut self, id: NodeId) -> Result<Option<Running>, ServerError> {
        let slot = self.nodes.get_mut(&id).ok_or_else(|| not_member(id))?;
        let running = slot.take();
        self.handles
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, None);
        Ok(running)
    }

    fn check_member(&self, id: NodeId) -> Result<(), ServerError> {
        if self.nodes.contains_key(&id) {
            Ok(())
        } else {
            Err(not_member(id))
        }
    }
}

fn not_member(id: NodeId) -> ServerError {
    ServerError::NodeState {
        node: id,
        reason: "not a member of the cluster".into(),
    }
}

//! Helpers shared by the integration tests: a cluster of real node servers on 127.0.0.1
//! (bound on port 0 first, then told each other's addresses), clients, and waiting with a
//! bound.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kvlab_server::{
    AdminClient, AdminConfig, BoundNode, KvClient, KvClientOptions, NodeConfig, NodeStatus,
    RunningNode, ServerOptions, SystemKind, TransportKind,
};
use kvlab_types::{ClientRequest, ClientResponse, KvOp, NodeId, RequestId};

pub const TOKEN: &str = "test-token";
/// The cluster secret of every test cluster (hex).
pub const SECRET: &str = "6b766c61622d746573742d636c75737465722d736563726574";

pub fn secret() -> kvlab_server::ClusterSecret {
    SECRET.parse().expect("a valid test secret")
}
pub const STEP: Duration = Duration::from_millis(20);

/// Sends the servers' tracing to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Runs `f` and fails the test if it takes longer than `limit`.
pub async fn bounded<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish within {limit:?}"),
    }
}

/// Polls `check` every STEP until it returns Some, failing after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    bounded(limit, what, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(STEP).await;
        }
    })
    .await
}

/// Addresses of one node, kept across restarts.
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    pub peer: SocketAddr,
    pub client: SocketAddr,
    pub admin: SocketAddr,
}

/// A cluster of node servers as tasks of this runtime, over real sockets.
pub struct Cluster {
    pub transport: TransportKind,
    pub root: PathBuf,
    pub addrs: BTreeMap<NodeId, Addrs>,
    pub nodes: BTreeMap<NodeId, Option<RunningNode>>,
}

pub fn loopback0() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub fn node_config(
    id: u32,
    transport: TransportKind,
    root: &Path,
    listen: SocketAddr,
    client: SocketAddr,
    admin: SocketAddr,
    peers: &BTreeMap<NodeId, Addrs>,
) -> NodeConfig {
    NodeConfig {
        id,
        system: SystemKind::Raft,
        transport,
        listen,
        client,
        admin: AdminConfig {
            addr: admin,
            token: TOKEN.into(),
            allow_non_loopback: false,
        },
        cluster_secret: secret(),
        peers: peers
            .iter()
            .map(|(id, a)| (id.0.to_string(), a.peer))
            .collect(),
        data_dir: root.join(format!("n{id}")),
        seed: 7,
        storage: Default::default(),
        server: ServerOptions::default(),
        udp: None,
        tarpc: None,
        raft: None,
        single: None,
        async_primary: None,
        kvlab: None,
        etcd_api: None,
    }
}

impl Cluster {
    /// Binds `n` nodes on port 0, tells every node every address, starts them.
    pub async fn start(transport: TransportKind, n: u32, root: &Path) -> Cluster {
        init_tracing();
        let mut bound = Vec::new();
        let mut addrs = BTreeMap::new();
        // Every member is known from the start; the addresses are learned after binding.
        let placeholders: BTreeMap<NodeId, Addrs> = (1..=n)
            .map(|id| {
                let a = Addrs {
                    peer: loopback0(),
                    client: loopback0(),
                    admin: loopback0(),
                };
                (NodeId(id), a)
            })
            .collect();
        for id in 1..=n {
            let cfg = node_config(
                id,
                transport,
                root,
                loopback0(),
                loopback0(),
                loopback0(),
                &placeholders,
            );
            let b = BoundNode::bind(&cfg).await.expect("bind");
            addrs.insert(
                NodeId(id),
                Addrs {
                    peer: b.peer_addr().expect("a wire transport has an address"),
                    client: b.client_addr(),
                    admin: b.admin_addr(),
                },
            );
            bound.push(b);
        }
        let table: BTreeMap<NodeId, SocketAddr> = addrs
            .iter()
            .map(|(id, a): (&NodeId, &Addrs)| (*id, a.peer))
            .collect();
        let mut nodes = BTreeMap::new();
        for b in bound {
            b.set_peers(table.clone());
            let id = b.id();
            nodes.insert(id, Some(b.start(std::future::pending())));
        }
        Cluster {
            transport,
            root: root.to_path_buf(),
            addrs,
            nodes,
        }
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.addrs.keys().copied().collect()
    }

    /// Crashes `id` (task aborted, nothing synced).
    pub async fn crash(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.get_mut(&id).and_then(Option::take) {
            n.crash().await;
        }
    }

    /// Stops `id` gracefully.
    pub async fn stop(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.get_mut(&id).and_then(Option::take) {
            n.shutdown().await.expect("graceful shutdown");
        }
    }

    /// Restarts `id` on its old addresses from its data dir.
    pub async fn restart(&mut self, id: NodeId) {
        let a = self.addrs[&id];
        let cfg = node_config(
            id.0,
            self.transport,
            &self.root,
            a.peer,
            a.client,
            a.admin,
            &self.addrs,
        );
        // The old sockets were closed when the node stopped; the kernel may take a moment
        // to release a port.
        let b = eventually(Duration::from_secs(5), "rebind", || {
            let cfg = cfg.clone();
            async move { BoundNode::bind(&cfg).await.ok() }
        })
        .await;
        self.nodes.insert(id, Some(b.start(std::future::pending())));
    }

    pub async fn kv(&self, id: NodeId) -> KvClient {
        KvClient::connect(self.addrs[&id].client, KvClientOptions::default())
            .await
            .expect("connect client endpoint")
    }

    pub async fn admin(&self, id: NodeId) -> AdminClient {
        AdminClient::connect(self.addrs[&id].admin, TOKEN, Duration::from_secs(2))
            .await
            .expect("connect admin endpoint")
    }

    pub async fn status(&self, id: NodeId) -> Option<NodeStatus> {
        let admin = AdminClient::connect(self.addrs[&id].admin, TOKEN, Duration::from_secs(1))
            .await
            .ok()?;
        admin.status().await.ok()
    }

    /// Waits until one of `among` reports itself leader with a term above `min_term`.
    pub async fn leader_among(&self, among: &[NodeId], min_term: u64) -> (NodeId, u64) {
        eventually(Duration::from_secs(15), "a leader is elected", || async {
            for id in among {
                if let Some(s) = self.status(*id).await
                    && s.protocol.role.as_deref() == Some("leader")
                    && s.protocol.term.unwrap_or(0) > min_term
                {
                    return Some((*id, s.protocol.term.unwrap_or(0)));
                }
            }
            None
        })
        .await
    }

    pub async fn shutdown(mut self) {
        for id in self.ids() {
            self.stop(id).await;
        }
    }
}

pub fn req(client: u64, seq: u64, op: KvOp) -> ClientRequest {
    ClientRequest {
        id: RequestId { client, seq },
        op,
    }
}

pub fn write(key: &str, value: i64) -> KvOp {
    KvOp::Write {
        key: key.into(),
        value,
    }
}

pub fn read(key: &str) -> KvOp {
    KvOp::Read { key: key.into() }
}

/// Executes `op` through `client`, retrying (with the same request id) until a
/// definite answer arrives.
pub async fn execute_ok(client: &KvClient, r: ClientRequest) -> ClientResponse {
    eventually(Duration::from_secs(15), "a definite answer", || {
        let r = r.clone();
        async move {
            let resp = client.execute_with_retries(r).await;
            match &resp.result {
                Ok(_) | Err(kvlab_types::ClientError::CasMismatch { .. }) => Some(resp),
                Err(_) => None,
            }
        }
    })
    .await
}

//! A local kvlab `raft` cluster with the etcd API on every node (real sockets on
//! 127.0.0.1, bound on port 0 first, then told each other's addresses), and waiting with
//! a bound.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use kvlab_server::{
    AdminConfig, BoundNode, EtcdApiConfig, NodeConfig, RunningNode, ServerOptions, SystemKind,
    TransportKind,
};
use kvlab_types::NodeId;

/// The cluster secret of the test cluster (hex).
const SECRET: &str = "6b766c61622d746573742d636c75737465722d736563726574";

/// Runs `f` and fails the test if it takes longer than `limit`.
pub async fn bounded<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish within {limit:?}"),
    }
}

/// Retries `f` every 50 ms until it returns `Ok`, failing after `limit`.
pub async fn retry<T, E: std::fmt::Debug, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                panic!("{what}: still failing after {limit:?}: {e:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn loopback0() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn config(id: u32, root: &Path, n: u32) -> NodeConfig {
    NodeConfig {
        id,
        system: SystemKind::Raft,
        transport: TransportKind::Tarpc,
        listen: loopback0(),
        client: loopback0(),
        admin: AdminConfig {
            addr: loopback0(),
            token: "test-token".into(),
            allow_non_loopback: false,
        },
        cluster_secret: SECRET.parse().expect("a valid secret"),
        peers: (1..=n).map(|i| (i.to_string(), loopback0())).collect(),
        data_dir: root.join(format!("n{id}")),
        seed: 7,
        storage: Default::default(),
        server: ServerOptions::default(),
        udp: None,
        tarpc: None,
        // Elections take 250–500 ms: a loaded test machine should not depose a leader
        // mid-run (the differential test compares every answer).
        raft: Some(kvlab_node::raft_kv::RaftKvConfig {
            tick_interval_ms: 25,
            ..Default::default()
        }),
        single: None,
        async_primary: None,
        kvlab: None,
        etcd_api: Some(EtcdApiConfig {
            listen: loopback0(),
            allow_non_loopback: false,
            members: BTreeMap::new(),
        }),
    }
}

/// A running cluster: its nodes and their etcd endpoints (`http://127.0.0.1:PORT`).
pub struct EtcdCluster {
    pub nodes: Vec<RunningNode>,
    pub endpoints: Vec<String>,
}

impl EtcdCluster {
    /// Starts `n` nodes with the etcd API on, under `root`.
    pub async fn start(n: u32, root: &Path) -> EtcdCluster {
        let mut bound = Vec::new();
        for id in 1..=n {
            bound.push(BoundNode::bind(&config(id, root, n)).await.expect("bind"));
        }
        let peers: BTreeMap<NodeId, SocketAddr> = bound
            .iter()
            .map(|b| (b.id(), b.peer_addr().expect("tarpc has an address")))
            .collect();
        let etcd: BTreeMap<NodeId, SocketAddr> = bound
            .iter()
            .map(|b| (b.id(), b.etcd_addr().expect("etcd_api is on")))
            .collect();
        let endpoints = etcd.values().map(|a| format!("http://{a}")).collect();
        let nodes = bound
            .into_iter()
            .map(|b| {
                b.set_peers(peers.clone());
                b.set_etcd_members(&etcd);
                b.start(std::future::pending())
            })
            .collect();
        EtcdCluster { nodes, endpoints }
    }

    /// Stops every node.
    pub async fn shutdown(self) {
        for n in self.nodes {
            let _ = n.shutdown().await;
        }
    }
}

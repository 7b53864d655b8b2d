//! A 3-node RaftKv cluster of real node servers in one process (tasks, real sockets on
//! 127.0.0.1, real fsync with `fsync = "batch"` group commit) under 1, 16 and 64 closed-
//! loop clients: ops/s and latency p50/p99 of writes and of linearizable (ReadIndex)
//! reads, per transport. Clients talk to the leader's client endpoint over TCP, one
//! connection each.
//!
//! `cargo bench -p kvlab-server --bench raft_cluster [-- SECONDS_PER_POINT]`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvlab_server::{
    AdminClient, AdminConfig, BoundNode, KvClient, KvClientOptions, NodeConfig, RunningNode,
    ServerOptions, SystemKind, TransportKind,
};
use kvlab_types::{KvOp, NodeId, RequestId};

const TOKEN: &str = "bench";
const CLIENT_COUNTS: [usize; 3] = [1, 16, 64];
const KEYS: u64 = 64;

fn loopback0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config(id: u32, transport: TransportKind, root: &std::path::Path, n: u32) -> NodeConfig {
    NodeConfig {
        id,
        system: SystemKind::Raft,
        transport,
        listen: loopback0(),
        client: loopback0(),
        admin: AdminConfig {
            addr: loopback0(),
            token: TOKEN.into(),
            allow_non_loopback: false,
        },
        cluster_secret: kvlab_server::ClusterSecret::from_entropy(b"raft_cluster bench"),
        peers: (1..=n).map(|p| (p.to_string(), loopback0())).collect(),
        data_dir: root.join(format!("n{id}")),
        seed: 1,
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

struct Cluster {
    nodes: Vec<RunningNode>,
}

async fn start(transport: TransportKind, root: &std::path::Path) -> Cluster {
    let mut bound = Vec::new();
    for id in 1..=3 {
        bound.push(
            BoundNode::bind(&config(id, transport, root, 3))
                .await
                .unwrap(),
        );
    }
    let table: BTreeMap<NodeId, SocketAddr> = bound
        .iter()
        .map(|b| (b.id(), b.peer_addr().unwrap()))
        .collect();
    let nodes = bound
        .into_iter()
        .map(|b| {
            b.set_peers(table.clone());
            b.start(std::future::pending())
        })
        .collect();
    Cluster { nodes }
}

async fn leader(cluster: &Cluster) -> &RunningNode {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for n in &cluster.nodes {
            let admin = AdminClient::connect(n.admin_addr(), TOKEN, Duration::from_secs(1))
                .await
                .unwrap();
            if admin.status().await.unwrap().protocol.role.as_deref() == Some("leader") {
                return n;
            }
        }
        assert!(Instant::now() < deadline, "no leader within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// Runs `clients` closed-loop clients for `secs` seconds; returns (ok ops, latencies,
/// failed ops).
async fn drive(
    addr: SocketAddr,
    clients: usize,
    secs: f64,
    reads: bool,
    base: u64,
) -> (usize, Vec<Duration>, usize) {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let kv = Arc::new(
            KvClient::connect(addr, KvClientOptions::default())
                .await
                .unwrap(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0;
            let mut seq = 0u64;
            while Instant::now() < until {
                seq += 1;
                let key = format!("k{}", (c as u64 + seq) % KEYS);
                let op = if reads {
                    KvOp::Read { key }
                } else {
                    KvOp::Write {
                        key,
                        value: seq as i64,
                    }
                };
                let req = kvlab_types::ClientRequest {
                    id: RequestId {
                        client: base + c as u64,
                        seq,
                    },
                    op,
                };
                let t = Instant::now();
                match kv.execute(req).await {
                    Ok(r) if r.result.is_ok() => lat.push(t.elapsed()),
                    _ => failed += 1,
                }
            }
            (lat, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await.unwrap();
        all.extend(l);
        failed += f;
    }
    all.sort();
    (all.len(), all, failed)
}

fn main() {
    let secs: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("3-node raft, fsync = batch, {secs} s per point, clients on the leader");
        println!(
            "{:<6} {:<6} {:>7} {:>10} {:>8} {:>8} {:>7} {:>9}",
            "wire", "op", "clients", "ops/s", "p50_ms", "p99_ms", "failed", "fsyncs"
        );
        let mut base = 1u64 << 20;
        for transport in [TransportKind::Tarpc, TransportKind::Udp] {
            let dir = tempfile::tempdir().unwrap();
            let cluster = start(transport, dir.path()).await;
            let leader = leader(&cluster).await;
            let admin = AdminClient::connect(leader.admin_addr(), TOKEN, Duration::from_secs(1))
                .await
                .unwrap();
            for reads in [false, true] {
                for clients in CLIENT_COUNTS {
                    base += 1 << 10;
                    let before = admin.status().await.unwrap().driver.syncs_done;
                    let (ok, lat, failed) =
                        drive(leader.client_addr(), clients, secs, reads, base).await;
                    let after = admin.status().await.unwrap().driver.syncs_done;
                    println!(
                        "{:<6} {:<6} {:>7} {:>10.0} {:>8.3} {:>8.3} {:>7} {:>9}",
                        transport.name(),
                        if reads { "read" } else { "write" },
                        clients,
                        ok as f64 / secs,
                        percentile(&lat, 0.5),
                        percentile(&lat, 0.99),
                        failed,
                        after - before
                    );
                }
            }
            for n in cluster.nodes {
                n.shutdown().await.unwrap();
            }
        }
    });
}

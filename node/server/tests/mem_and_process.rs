//! The in-process `mem` cluster (the `--transport mem` backend) and `run_node`, the life
//! of a `kvlab node` process, driven from a TOML file.

mod common;

use std::time::Duration;

use common::*;
use kvlab_node::baseline::SingleConfig;
use kvlab_node::raft_kv::RaftKvConfig;
use kvlab_server::{
    KvClient, KvClientOptions, LocalCluster, LocalClusterConfig, SystemConfig, load_node_config,
    run_node,
};
use kvlab_transport::FaultRule;
use kvlab_types::{ClientError, NodeId, OpOutput};

const TEST_LIMIT: Duration = Duration::from_secs(60);

async fn mem_leader(cluster: &LocalCluster, among: &[NodeId], min_term: u64) -> (NodeId, u64) {
    eventually(Duration::from_secs(15), "a mem leader", || async {
        for id in among {
            if let Ok(s) = cluster.status(*id).await
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

async fn mem_ok(cluster: &LocalCluster, node: NodeId, r: kvlab_types::ClientRequest) -> OpOutput {
    let client = cluster.client(node).unwrap();
    eventually(Duration::from_secs(15), "a definite mem answer", || {
        let r = r.clone();
        let client = client.clone();
        async move { client.execute(r).await.result.ok() }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_raft_cluster_serves_survives_a_crash_and_a_partition() {
    init_tracing();
    bounded(TEST_LIMIT, "mem cluster", async {
        let dir = tempfile::tempdir().unwrap();
        let config = LocalClusterConfig::new(
            3,
            SystemConfig::Raft(RaftKvConfig::default()),
            dir.path(),
            11,
        );
        let mut cluster = LocalCluster::start(config).await.unwrap();
        let ids = cluster.members();
        let (leader, term) = mem_leader(&cluster, &ids, 0).await;
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                mem_ok(&cluster, *id, req(5, i as u64, write("m", i as i64))).await,
                OpOutput::Done
            );
        }
        for id in &ids {
            assert_eq!(
                mem_ok(&cluster, *id, req(5, 10 + u64::from(id.0), read("m"))).await,
                OpOutput::Read(Some(2))
            );
        }
        // Crash the leader: the others elect a new one; the crashed node comes back with
        // its data.
        cluster.crash(leader).await.unwrap();
        let down = cluster
            .client(leader)
            .unwrap()
            .execute(req(5, 20, read("m")))
            .await;
        assert!(
            matches!(down.result, Err(ClientError::Unavailable { .. })),
            "{down:?}"
        );
        let others: Vec<NodeId> = ids.iter().copied().filter(|id| *id != leader).collect();
        let (new, term2) = mem_leader(&cluster, &others, term).await;
        assert_eq!(
            mem_ok(&cluster, new, req(5, 21, write("m", 42))).await,
            OpOutput::Done
        );
        cluster.restart(leader).await.unwrap();
        assert_eq!(
            mem_ok(&cluster, leader, req(5, 22, read("m"))).await,
            OpOutput::Read(Some(42))
        );
        // Partition the current leader with fault rules.
        let rules: Vec<FaultRule> = ids
            .iter()
            .filter(|p| **p != new)
            .flat_map(|p| {
                [
                    FaultRule::DropTo { peer: *p },
                    FaultRule::DropFrom { peer: *p },
                ]
            })
            .collect();
        cluster.set_fault_rules(new, rules).unwrap();
        let majority: Vec<NodeId> = ids.iter().copied().filter(|id| *id != new).collect();
        let (third, _) = mem_leader(&cluster, &majority, term2).await;
        assert_ne!(third, new);
        cluster.clear_fault_rules(new).unwrap();
        cluster.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_single_cluster_forwards_to_the_holder() {
    bounded(TEST_LIMIT, "mem single", async {
        let dir = tempfile::tempdir().unwrap();
        let config = LocalClusterConfig::new(
            3,
            SystemConfig::Single(SingleConfig::default()),
            dir.path(),
            3,
        );
        let cluster = LocalCluster::start(config).await.unwrap();
        assert_eq!(
            mem_ok(&cluster, NodeId(3), req(6, 1, write("s", 5))).await,
            OpOutput::Done
        );
        assert_eq!(
            mem_ok(&cluster, NodeId(2), req(6, 2, read("s"))).await,
            OpOutput::Read(Some(5))
        );
        let holder = cluster.status(NodeId(1)).await.unwrap();
        assert_eq!(holder.protocol.role.as_deref(), Some("holder"));
        assert!(
            holder.driver.syncs_done > 0,
            "the holder syncs before it answers"
        );
        cluster.shutdown().await.unwrap();
    })
    .await;
}

/// A free loopback port (bound, then released; the node binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_node_serves_from_a_toml_file_until_its_shutdown_future_and_recovers_on_restart() {
    init_tracing();
    bounded(TEST_LIMIT, "run_node", async {
        let dir = tempfile::tempdir().unwrap();
        let (peer, client, admin) = (free_port(), free_port(), free_port());
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            format!(
                "id = 1\nsystem = \"raft\"\ntransport = \"tarpc\"\n\
                 listen = \"127.0.0.1:{peer}\"\nclient = \"127.0.0.1:{client}\"\n\
                 data_dir = \"{}\"\ncluster_secret = \"{SECRET}\"\n[admin]\naddr = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\n\
                 [storage]\nfsync = \"always\"\n",
                dir.path().join("n1").display()
            ),
        )
        .unwrap();
        for round in 0..2i64 {
            let config = load_node_config(&path).unwrap();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let node = tokio::spawn(run_node(config, async {
                let _ = stop_rx.await;
            }));
            let addr = format!("127.0.0.1:{client}").parse().unwrap();
            let kv = eventually(Duration::from_secs(5), "client endpoint up", || async {
                KvClient::connect(addr, KvClientOptions::default())
                    .await
                    .ok()
            })
            .await;
            if round == 1 {
                // The value written before the restart was recovered from the data dir.
                let r = execute_ok(&kv, req(7, 100, read("r"))).await;
                assert_eq!(r.result, Ok(OpOutput::Read(Some(0))));
            }
            let w = execute_ok(&kv, req(7, round as u64, write("r", round))).await;
            assert_eq!(w.result, Ok(OpOutput::Done));
            let _ = stop_tx.send(());
            node.await.unwrap().unwrap();
            // The sockets are closed: a new connection is refused.
            assert!(tokio::net::TcpStream::connect(addr).await.is_err());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_mem_node_answers_nothing_until_resumed() {
    bounded(TEST_LIMIT, "mem pause", async {
        let dir = tempfile::tempdir().unwrap();
        let config = LocalClusterConfig::new(
            1,
            SystemConfig::Single(SingleConfig::default()),
            dir.path(),
            5,
        );
        let cluster = LocalCluster::start(config).await.unwrap();
        assert_eq!(
            mem_ok(&cluster, NodeId(1), req(7, 1, write("p", 1))).await,
            OpOutput::Done
        );
        cluster.pause(NodeId(1)).await.unwrap();
        let handle = cluster.handle(NodeId(1)).unwrap();
        let paused = handle
            .execute_within(req(7, 2, write("p", 2)), Duration::from_millis(200))
            .await;
        assert!(
            matches!(paused.result, Err(ClientError::Indeterminate { .. })),
            "{paused:?}"
        );
        let status =
            tokio::time::timeout(Duration::from_millis(200), cluster.status(NodeId(1))).await;
        assert!(
            !matches!(status, Ok(Ok(_))),
            "a paused node answers no status"
        );
        cluster.resume(NodeId(1)).await.unwrap();
        assert_eq!(
            mem_ok(&cluster, NodeId(1), req(7, 3, read("p"))).await,
            OpOutput::Read(Some(2)),
            "the request queued while paused ran on resume"
        );
        cluster.shutdown().await.unwrap();
    })
    .await;
}

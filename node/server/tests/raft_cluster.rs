//! A 3-node RaftKv cluster of real node servers over udp and tarpc on 127.0.0.1: writes
//! and linearizable reads through the client endpoint, restart from the data dir,
//! partitions from the admin endpoint, and the admin token.

mod common;

use std::time::Duration;

use common::*;
use kvlab_server::{AdminClient, AdminClientError, AdminError, TransportKind};
use kvlab_transport::FaultRule;
use kvlab_types::{ClientError, KvOp, NodeId, OpOutput};

const TEST_LIMIT: Duration = Duration::from_secs(60);

async fn serves_writes_and_linearizable_reads(transport: TransportKind) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(transport, 3, dir.path()).await;
    cluster.leader_among(&cluster.ids(), 0).await;
    let mut seq = 0;
    for (round, writer) in cluster.ids().into_iter().enumerate() {
        let value = 100 + round as i64;
        let w = cluster.kv(writer).await;
        seq += 1;
        let resp = execute_ok(&w, req(1, seq, write("k", value))).await;
        assert_eq!(resp.result, Ok(OpOutput::Done), "write through {writer}");
        // Every node, leader or follower, returns the write that completed before the
        // read began.
        for reader in cluster.ids() {
            let r = cluster.kv(reader).await;
            seq += 1;
            let resp = execute_ok(&r, req(1, seq, read("k"))).await;
            assert_eq!(
                resp.result,
                Ok(OpOutput::Read(Some(value))),
                "read through {reader} after write {value} through {writer}"
            );
        }
    }
    let c = cluster.kv(NodeId(2)).await;
    let cas = |expected, new| KvOp::Cas {
        key: "k".into(),
        expected,
        new,
    };
    assert_eq!(
        execute_ok(&c, req(2, 1, cas(Some(102), 7))).await.result,
        Ok(OpOutput::Done)
    );
    assert_eq!(
        execute_ok(&c, req(2, 2, cas(Some(102), 8))).await.result,
        Err(ClientError::CasMismatch { current: Some(7) })
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_cluster_serves_writes_and_linearizable_reads() {
    bounded(
        TEST_LIMIT,
        "udp cluster",
        serves_writes_and_linearizable_reads(TransportKind::Udp),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarpc_cluster_serves_writes_and_linearizable_reads() {
    bounded(
        TEST_LIMIT,
        "tarpc cluster",
        serves_writes_and_linearizable_reads(TransportKind::Tarpc),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_node_restarts_from_its_data_dir_and_rejoins_with_its_data() {
    bounded(TEST_LIMIT, "restart", async {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster::start(TransportKind::Udp, 3, dir.path()).await;
        let (leader, _) = cluster.leader_among(&cluster.ids(), 0).await;
        let victim = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
        let w = cluster.kv(leader).await;
        for i in 0..5 {
            execute_ok(&w, req(3, i, write(&format!("k{i}"), i as i64))).await;
        }
        cluster.crash(victim).await;
        // Writes go on with a majority while the victim is down.
        for i in 5..10 {
            execute_ok(&w, req(3, i, write(&format!("k{i}"), i as i64))).await;
        }
        cluster.restart(victim).await;
        let status = eventually(Duration::from_secs(15), "victim catches up", || async {
            let s = cluster.status(victim).await?;
            (s.protocol.keys == Some(10)).then_some(s)
        })
        .await;
        assert!(
            status.storage.recovered_records > 0,
            "the restarted node recovered its log from its data dir: {:?}",
            status.storage
        );
        // And it serves them.
        let r = cluster.kv(victim).await;
        let resp = execute_ok(&r, req(3, 100, read("k2"))).await;
        assert_eq!(resp.result, Ok(OpOutput::Read(Some(2))));

        // A graceful stop and restart of the leader keeps everything too.
        cluster.stop(leader).await;
        cluster.restart(leader).await;
        let r = cluster.kv(leader).await;
        let resp = execute_ok(&r, req(3, 101, read("k9"))).await;
        assert_eq!(resp.result, Ok(OpOutput::Read(Some(9))));
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_fault_rules_partition_the_leader_and_a_new_leader_is_elected() {
    bounded(TEST_LIMIT, "partition", async {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::start(TransportKind::Tarpc, 3, dir.path()).await;
        let (old, term) = cluster.leader_among(&cluster.ids(), 0).await;
        let others: Vec<NodeId> = cluster.ids().into_iter().filter(|id| *id != old).collect();
        let admin = cluster.admin(old).await;
        let rules: Vec<FaultRule> = others
            .iter()
            .flat_map(|p| {
                [
                    FaultRule::DropTo { peer: *p },
                    FaultRule::DropFrom { peer: *p },
                ]
            })
            .collect();
        admin.set_fault_rules(rules).await.unwrap();
        let (new, new_term) = cluster.leader_among(&others, term).await;
        assert_ne!(new, old);
        assert!(new_term > term);
        // The majority side serves writes.
        let w = cluster.kv(new).await;
        let resp = execute_ok(&w, req(4, 1, write("p", 1))).await;
        assert_eq!(resp.result, Ok(OpOutput::Done));
        // The isolated old leader counted the drops and steps down (check quorum).
        let s = admin.status().await.unwrap();
        assert!(s.transport.dropped.fault_rule > 0, "{:?}", s.transport);
        eventually(Duration::from_secs(10), "old leader steps down", || async {
            let s = admin.status().await.ok()?;
            (s.protocol.role.as_deref() != Some("leader")).then_some(())
        })
        .await;
        // Healed, it learns the write.
        admin.clear_fault_rules().await.unwrap();
        let r = cluster.kv(old).await;
        let resp = execute_ok(&r, req(4, 2, read("p"))).await;
        assert_eq!(resp.result, Ok(OpOutput::Read(Some(1))));
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_admin_token_is_refused_and_changes_nothing() {
    bounded(TEST_LIMIT, "admin token", async {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::start(TransportKind::Udp, 1, dir.path()).await;
        let id = NodeId(1);
        let intruder =
            AdminClient::connect(cluster.addrs[&id].admin, "wrong", Duration::from_secs(2))
                .await
                .unwrap();
        let refused = |r: Result<(), AdminClientError>| {
            matches!(
                r,
                Err(AdminClientError::Refused {
                    source: AdminError::BadToken,
                    ..
                })
            )
        };
        assert!(refused(intruder.status().await.map(|_| ())));
        assert!(refused(
            intruder
                .set_fault_rules(vec![FaultRule::DropTo { peer: NodeId(2) }])
                .await
        ));
        assert!(refused(intruder.shutdown().await));
        // Nothing changed: the node runs and has no rules.
        let admin = cluster.admin(id).await;
        let s = admin.status().await.unwrap();
        assert_eq!(s.node, id);
        assert!(
            cluster.nodes[&id]
                .as_ref()
                .is_some_and(|n| !n.is_finished())
        );
        // The right token stops it.
        admin.shutdown().await.unwrap();
        let mut cluster = cluster;
        let node = cluster.nodes.get_mut(&id).and_then(Option::take).unwrap();
        bounded(Duration::from_secs(5), "admin shutdown", node.wait())
            .await
            .unwrap();
    })
    .await;
}

//! Forged peer messages never reach the protocol. The issue: one 40-byte `deliver` to a
//! follower's tarpc peer port, a Heartbeat "from n1" with term = u64::MAX, made n2 and n1
//! exit; over UDP the same heartbeat sent from a stopped peer's free port crashed them.
//! Here the same heartbeat, built with the real message types but without the cluster
//! secret, is dropped and counted as unauthenticated, the cluster keeps serving, and a
//! restart works.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use kvlab_node::raft_kv::RaftKvMsg;
use kvlab_raft::{MessageBody, RaftMessage};
use kvlab_server::TransportKind;
use kvlab_transport::{Envelope, PeerKey, codec};
use kvlab_types::{GroupId, NodeId, OpOutput};

const TEST_LIMIT: Duration = Duration::from_secs(90);

/// The forged heartbeat of the issue: "from" `from` to `to`, term u64::MAX, framed with
/// `key` (which is not the cluster's).
fn forged_heartbeat(from: NodeId, to: NodeId, key: &PeerKey) -> Vec<u8> {
    let msg = RaftKvMsg::Raft(RaftMessage {
        group: GroupId(0),
        from,
        to,
        term: u64::MAX,
        body: MessageBody::Heartbeat {
            leader_commit: u64::MAX,
            read_round: u64::MAX,
        },
    });
    codec::encode(
        &Envelope { from, to, msg },
        codec::DEFAULT_MAX_FRAME_BYTES,
        key,
    )
    .expect("the forged heartbeat encodes")
}

/// The keys an attacker without the secret may try: the well-known unauthenticated key
/// and a guess.
fn attacker_keys() -> [PeerKey; 2] {
    [
        PeerKey::unauthenticated(),
        PeerKey::derive(b"a guess at the cluster secret"),
    ]
}

/// Unauthenticated drops `id` reports, through its admin endpoint.
async fn unauthenticated_at(cluster: &Cluster, id: NodeId) -> u64 {
    cluster
        .status(id)
        .await
        .map_or(0, |s| s.transport.dropped.unauthenticated)
}

/// Writes and reads back through `via`, and checks no node's term went wild.
async fn serves_and_terms_are_sane(cluster: &Cluster, via: NodeId, seq: u64, value: i64) {
    let kv = cluster.kv(via).await;
    let w = execute_ok(&kv, req(40, seq, write("h", value))).await;
    assert_eq!(w.result, Ok(OpOutput::Done));
    let r = execute_ok(&kv, req(40, seq + 1, read("h"))).await;
    assert_eq!(r.result, Ok(OpOutput::Read(Some(value))));
    for id in cluster.ids() {
        if let Some(s) = cluster.status(id).await {
            let term = s.protocol.term.unwrap_or(0);
            assert!(term < 1_000, "{id} adopted term {term}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_max_term_heartbeat_to_a_tarpc_follower_is_dropped_and_counted() {
    bounded(TEST_LIMIT, "forged tarpc heartbeat", async {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster::start(TransportKind::Tarpc, 3, dir.path()).await;
        let (leader, _) = cluster.leader_among(&cluster.ids(), 0).await;
        let follower = *cluster.ids().iter().find(|id| **id != leader).unwrap();
        serves_and_terms_are_sane(&cluster, leader, 1, 1).await;

        // A `deliver` RPC to the follower's peer port, as the attacker sent it.
        let client = kvlab_transport_tarpc::wire::connect(cluster.addrs[&follower].peer, 1 << 20)
            .await
            .unwrap();
        for key in attacker_keys() {
            client
                .deliver(
                    tarpc::context::current(),
                    forged_heartbeat(leader, follower, &key),
                )
                .await
                .expect("the peer port answers the RPC");
        }
        let dropped = eventually(
            Duration::from_secs(5),
            "two unauthenticated drops",
            || async {
                let n = unauthenticated_at(&cluster, follower).await;
                (n >= 2).then_some(n)
            },
        )
        .await;
        assert_eq!(dropped, 2);
        serves_and_terms_are_sane(&cluster, follower, 3, 2).await;

        // A restart of the attacked follower and of the leader works.
        cluster.crash(follower).await;
        cluster.restart(follower).await;
        cluster.stop(leader).await;
        cluster.restart(leader).await;
        let (_, _) = cluster.leader_among(&cluster.ids(), 0).await;
        serves_and_terms_are_sane(&cluster, follower, 5, 3).await;
        cluster.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_max_term_heartbeat_over_udp_from_a_foreign_or_a_stopped_peers_port_is_dropped() {
    bounded(TEST_LIMIT, "forged udp heartbeat", async {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster::start(TransportKind::Udp, 3, dir.path()).await;
        let (leader, _) = cluster.leader_among(&cluster.ids(), 0).await;
        serves_and_terms_are_sane(&cluster, leader, 1, 1).await;
        let ids = cluster.ids();

        // From a foreign port: an address no member has.
        let foreign = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for to in &ids {
            for key in attacker_keys() {
                let mut d = vec![kvlab_transport_udp::reassembly::TAG_WHOLE];
                d.extend(forged_heartbeat(NodeId(1), *to, &key));
                foreign.send_to(&d, cluster.addrs[to].peer).await.unwrap();
            }
        }
        for to in &ids {
            eventually(
                Duration::from_secs(5),
                "foreign datagrams counted",
                || async {
                    let s = cluster.status(*to).await?;
                    (s.transport.dropped.unknown_peer >= 2).then_some(())
                },
            )
            .await;
        }

        // From a stopped peer's port: n3 stops, the attacker binds its free port and
        // claims to be n1 (as in the issue) and n3.
        let victim = NodeId(3);
        cluster.stop(victim).await;
        let stolen: SocketAddr = cluster.addrs[&victim].peer;
        let squatter = eventually(Duration::from_secs(5), "bind n3's port", || async {
            tokio::net::UdpSocket::bind(stolen).await.ok()
        })
        .await;
        let targets: Vec<NodeId> = ids.iter().copied().filter(|id| *id != victim).collect();
        let before: Vec<u64> = {
            let mut v = Vec::new();
            for to in &targets {
                v.push(unauthenticated_at(&cluster, *to).await);
            }
            v
        };
        for to in &targets {
            for claimed in [NodeId(1), victim] {
                for key in attacker_keys() {
                    let mut d = vec![kvlab_transport_udp::reassembly::TAG_WHOLE];
                    d.extend(forged_heartbeat(claimed, *to, &key));
                    squatter.send_to(&d, cluster.addrs[to].peer).await.unwrap();
                }
            }
        }
        for (to, before) in targets.iter().zip(before) {
            eventually(
                Duration::from_secs(5),
                "stolen-port datagrams counted",
                || async {
                    let n = unauthenticated_at(&cluster, *to).await;
                    (n >= before + 4).then_some(())
                },
            )
            .await;
        }
        let survivor = targets[0];
        serves_and_terms_are_sane(&cluster, survivor, 3, 2).await;

        // The port is given back; n3 restarts and the cluster serves through it.
        drop(squatter);
        cluster.restart(victim).await;
        serves_and_terms_are_sane(&cluster, victim, 5, 3).await;
        cluster.shutdown().await;
    })
    .await;
}

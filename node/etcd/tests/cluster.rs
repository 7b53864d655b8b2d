//! A 3-node local kvlab `raft` cluster with the etcd API on, driven by the `etcd-client`
//! crate: put, get, delete, txn, compaction, status, member list, and the errors etcd
//! gives.

mod common;

use std::time::Duration;

use common::{EtcdCluster, bounded, retry};
use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};

const LIMIT: Duration = Duration::from_secs(60);

/// Not a RangeRequest: field 1 as a varint, where RangeRequest's `key` is bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct NotARange {
    #[prost(uint64, tag = "1")]
    key: u64,
}

/// Sends `KV.Range` a body that does not decode; returns the error status.
async fn malformed_range(endpoint: &str) -> tonic::Status {
    let channel = tonic::transport::Channel::from_shared(endpoint.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<
        NotARange,
        kvlab_node::etcd::pb::etcdserverpb::RangeResponse,
    >::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Range");
    grpc.unary(tonic::Request::new(NotARange { key: 7 }), path, codec)
        .await
        .expect_err("a body that does not decode must be refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_client_drives_a_three_node_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = EtcdCluster::start(3, dir.path()).await;
    bounded(LIMIT, "etcd client session", async {
        // One client per node: writes through followers are forwarded to the leader.
        let mut clients = Vec::new();
        for ep in &cluster.endpoints {
            clients.push(Client::connect([ep.as_str()], None).await.expect("connect"));
        }
        // The first write waits for an election.
        let first = retry(Duration::from_secs(20), "first put", || {
            let mut c = clients[0].clone();
            async move { c.put("k1", "v1", None).await }
        })
        .await;
        let rev1 = first.header().unwrap().revision();
        assert_eq!(rev1, 2, "an empty store is at revision 1");

        // Put with prev_kv, through another node.
        let put = clients[1]
            .put("k1", "v2", Some(PutOptions::new().with_prev_key()))
            .await
            .unwrap();
        assert_eq!(put.prev_key().unwrap().value(), b"v1");
        assert_eq!(put.header().unwrap().revision(), 3);
        clients[2].put("k2", "x", None).await.unwrap();

        // Linearizable get on every node sees every write.
        for c in &mut clients {
            let got = c
                .get("k", Some(GetOptions::new().with_prefix()))
                .await
                .unwrap();
            assert_eq!(got.count(), 2);
            assert_eq!(got.kvs()[0].value(), b"v2");
            assert_eq!(got.kvs()[0].version(), 2);
            assert_eq!(got.kvs()[0].create_revision(), 2);
            assert_eq!(got.header().unwrap().revision(), 4);
        }
        // Serializable get on a follower: its own replica (it caught up by now or soon).
        let ser = retry(Duration::from_secs(5), "serializable read", || {
            let mut c = clients[2].clone();
            async move {
                let r = c
                    .get("k2", Some(GetOptions::new().with_serializable()))
                    .await
                    .map_err(|e| e.to_string())?;
                if r.count() == 1 {
                    Ok(r)
                } else {
                    Err("not caught up".to_string())
                }
            }
        })
        .await;
        assert_eq!(ser.kvs()[0].value(), b"x");

        // A txn: compare on value and version, both branches.
        let txn = Txn::new()
            .when([
                Compare::value("k1", CompareOp::Equal, "v2"),
                Compare::version("k2", CompareOp::Greater, 0),
            ])
            .and_then([TxnOp::put("k3", "then", None), TxnOp::get("k1", None)])
            .or_else([TxnOp::put("k3", "else", None)]);
        let t = clients[1].txn(txn).await.unwrap();
        assert!(t.succeeded());
        assert_eq!(t.header().unwrap().revision(), 5);
        let t = clients[0]
            .txn(
                Txn::new()
                    .when([Compare::mod_revision("k3", CompareOp::Less, 5)])
                    .and_then([TxnOp::delete("k3", None)])
                    .or_else([TxnOp::get("k3", None)]),
            )
            .await
            .unwrap();
        assert!(!t.succeeded());

        // Delete a prefix with prev_kv.
        let del = clients[2]
            .delete(
                "k",
                Some(DeleteOptions::new().with_prefix().with_prev_key()),
            )
            .await
            .unwrap();
        assert_eq!(del.deleted(), 3);
        assert_eq!(del.prev_kvs().len(), 3);
        assert_eq!(del.header().unwrap().revision(), 6);

        // Reading the past, compacting it away, and etcd's errors.
        let old = clients[0]
            .get("k1", Some(GetOptions::new().with_revision(2)))
            .await
            .unwrap();
        assert_eq!(old.kvs()[0].value(), b"v1");
        clients[0].compact(4, None).await.unwrap();
        let err = clients[1]
            .get("k1", Some(GetOptions::new().with_revision(2)))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("etcdserver: mvcc: required revision has been compacted"),
            "{err}"
        );
        let err = clients[1].compact(99, None).await.unwrap_err().to_string();
        assert!(
            err.contains("required revision is a future revision"),
            "{err}"
        );
        let err = clients[1]
            .txn(Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate key given in txn request"), "{err}");
        let big = vec![b'x'; (3 << 19) + 1];
        let err = clients[0]
            .put("big", big, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("etcdserver: request is too large"), "{err}");
        // Above the Raft entry limit (64 KiB by default), through a follower too: refused
        // at the endpoint, never forwarded.
        let over_entry = vec![b'x'; 70 << 10];
        let err = clients[2]
            .put("big", over_entry, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("etcdserver: request is too large"), "{err}");
        let fits = vec![b'x'; 60 << 10];
        clients[2].put("fits", fits, None).await.unwrap();
        clients[2].delete("fits", None).await.unwrap();

        // A malformed request (a varint where RangeRequest has bytes) is an error, and
        // the endpoint goes on serving.
        let status = malformed_range(&cluster.endpoints[0]).await;
        assert_ne!(status.code(), tonic::Code::Ok);
        assert!(status.message().contains("decode"), "{status:?}");
        clients[0].get("k1", None).await.unwrap();

        // Status and member list.
        let mut leaders = Vec::new();
        for c in &mut clients {
            let st = c.status().await.unwrap();
            assert!(st.version().starts_with("3.4"), "{}", st.version());
            assert!(st.raft_term() >= 1);
            assert!(st.raft_index() >= 6);
            leaders.push(st.leader());
        }
        assert!(
            leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]),
            "{leaders:?}"
        );
        let members = clients[0].member_list().await.unwrap();
        let ids: Vec<u64> = members.members().iter().map(|m| m.id()).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        for (m, ep) in members.members().iter().zip(&cluster.endpoints) {
            assert_eq!(m.client_urls(), std::slice::from_ref(ep));
        }
    })
    .await;
    cluster.shutdown().await;
}

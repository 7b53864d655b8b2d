use std::time::Duration;

use kvlab_transport::contract::wire::{self as wire_contract, loopback};
use kvlab_transport::contract::{Harness, TestMsg, recv_within, wait_stats};
use kvlab_transport::{FaultRules, Transport, TransportConfig};
use kvlab_types::NodeId;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::*;

kvlab_transport::impl_wire_transport!(TarpcTransport, TarpcConfig);

async fn cluster(n: usize, config: TarpcConfig) -> Vec<TarpcTransport<TestMsg>> {
    wire_contract::cluster(n, config).await
}

/// Injects garbage as the frames of a real `deliver` RPC, so it reaches the frame decoder.
#[derive(Debug, Default)]
struct TarpcHarness;

impl Harness for TarpcHarness {
    type T = TarpcTransport<TestMsg>;

    async fn build(&self, n: usize, config: TransportConfig) -> Vec<Self::T> {
        wire_contract::cluster_with_limits(n, config).await
    }

    async fn inject_raw(&self, target: &Self::T, bytes: Vec<u8>) {
        let client = wire::connect(target.local_addr(), 1 << 20).await.unwrap();
        client
            .deliver(tarpc::context::current(), bytes)
            .await
            .unwrap();
    }

    async fn assert_released(&self, shut_down: &Self::T) {
        TcpListener::bind(shut_down.local_addr())
            .await
            .expect("the port of a shut-down transport can be bound again");
    }
}

kvlab_transport::contract_tests!(TarpcHarness);

#[tokio::test]
async fn raw_tcp_garbage_is_counted_per_connection_and_traffic_continues() {
    let ts = cluster(2, TarpcConfig::default()).await;
    let inputs: Vec<Vec<u8>> = vec![
        vec![0xFF; 64],                           // a length prefix far over the limit
        vec![0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8], // a frame that is no tarpc request
        vec![0, 0, 0, 100, 1, 2],                 // cut off mid-frame
    ];
    for bytes in &inputs {
        let mut s = TcpStream::connect(ts[1].local_addr()).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s.shutdown().await.unwrap();
    }
    wait_stats(&ts[1], "one decode error per bad connection", |s| {
        s.dropped.decode_error == inputs.len() as u64
    })
    .await;
    ts[0].send(NodeId(2), TestMsg::new(1, 4)).unwrap();
    let env = recv_within(&ts[1], Duration::from_secs(5))
        .await
        .expect("still serving");
    assert_eq!(env.msg.seq, 1);
}

#[tokio::test]
async fn frames_from_a_sender_outside_the_peer_table_are_dropped() {
    let ts = cluster(1, TarpcConfig::default()).await;
    let stranger = kvlab_transport::codec::encode(
        &kvlab_transport::Envelope {
            from: NodeId(77),
            to: NodeId(1),
            msg: TestMsg::new(1, 4),
        },
        kvlab_transport::codec::DEFAULT_MAX_FRAME_BYTES,
        &kvlab_transport::PeerKey::default(),
    )
    .unwrap();
    TarpcHarness.inject_raw(&ts[0], stranger).await;
    wait_stats(&ts[0], "an unknown sender", |s| s.dropped.unknown_peer == 1).await;
    assert!(
        recv_within(&ts[0], Duration::from_millis(200))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn unreachable_peer_drops_are_counted_and_a_restarted_peer_is_reached_again() {
    let config = TarpcConfig {
        reconnect_backoff_ms_min: 5,
        reconnect_backoff_ms_max: 40,
        ..TarpcConfig::default()
    };
    let ts = cluster(2, config).await;
    let b_addr = ts[1].local_addr();
    ts[0].send(NodeId(2), TestMsg::new(1, 4)).unwrap();
    assert!(recv_within(&ts[1], Duration::from_secs(5)).await.is_some());
    ts[1].shutdown().await;

    // While n2 is down, messages are dropped (the live connection fails, then connection
    // attempts fail) and counted as i/o drops; nothing blocks.
    for seq in 2..10 {
        let _ = ts[0].send(NodeId(2), TestMsg::new(seq, 4));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_stats(&ts[0], "i/o drops while the peer is down", |s| {
        s.dropped.io > 0
    })
    .await;

    // n2 restarts on the same port; n1 reconnects within the bounded backoff.
    let b2 = TarpcTransport::<TestMsg>::bind(
        NodeId(2),
        b_addr,
        ts[0].peers(),
        config,
        FaultRules::new(2),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let env = loop {
        let _ = ts[0].send(NodeId(2), TestMsg::new(100, 4));
        // Messages queued during a backoff may still arrive first; wait for a new one.
        if let Some(env) = recv_within(&b2, Duration::from_millis(100)).await
            && env.msg.seq == 100
        {
            break env;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "n1 never reconnected: {:?}",
            ts[0].stats()
        );
    };
    assert_eq!(env.msg.seq, 100);
}

#[tokio::test]
async fn invalid_config_is_refused_naming_the_field() {
    wire_contract::assert_invalid_configs_name_their_field::<TarpcTransport<TestMsg>>([
        (
            TarpcConfig {
                rpc_timeout_ms: 0,
                ..TarpcConfig::default()
            },
            "rpc_timeout_ms",
        ),
        (
            TarpcConfig {
                reconnect_backoff_ms_min: 50,
                reconnect_backoff_ms_max: 10,
                ..TarpcConfig::default()
            },
            "reconnect_backoff_ms_max",
        ),
        (
            TarpcConfig {
                max_batch_messages: 0,
                ..TarpcConfig::default()
            },
            "max_batch_messages",
        ),
    ])
    .await;
}

#[tokio::test]
async fn binding_a_taken_port_is_a_bind_error_naming_the_address() {
    let taken = TcpListener::bind(loopback()).await.unwrap();
    let addr = taken.local_addr().unwrap();
    wire_contract::assert_taken_port_is_a_bind_error::<TarpcTransport<TestMsg>>(
        addr,
        TarpcConfig::default(),
    )
    .await;
}

#[tokio::test]
async fn idle_connections_are_closed_and_links_reopen_without_losing_messages() {
    let config = TarpcConfig {
        idle_timeout_ms: 200,
        ..TarpcConfig::default()
    };
    let ts = cluster(2, config).await;
    // A stranger connects and says nothing: closed after the idle timeout.
    let mut idle = TcpStream::connect(ts[1].local_addr()).await.unwrap();
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        idle.read(&mut buf).await
    })
    .await
    .expect("the idle connection is closed within the bound");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(ts[1].connection_stats().closed_idle >= 1);
    // A link idle longer than the timeout reconnects on its next message.
    for seq in 0..3 {
        ts[0].send(NodeId(2), TestMsg::new(seq, 4)).unwrap();
        let env = recv_within(&ts[1], Duration::from_secs(5))
            .await
            .expect("delivered");
        assert_eq!(env.msg.seq, seq);
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    assert_eq!(ts[0].stats().dropped.io, 0, "{:?}", ts[0].stats());
}

#[tokio::test]
async fn at_the_connection_cap_the_idlest_connection_makes_room() {
    let config = TarpcConfig {
        max_connections: 4,
        ..TarpcConfig::default()
    };
    let ts = cluster(2, config).await;
    let mut squatters = Vec::new();
    for _ in 0..10 {
        squatters.push(TcpStream::connect(ts[1].local_addr()).await.unwrap());
    }
    ts[0].send(NodeId(2), TestMsg::new(1, 4)).unwrap();
    let env = recv_within(&ts[1], Duration::from_secs(5))
        .await
        .expect("a peer gets through the squatters");
    assert_eq!(env.msg.seq, 1);
    let s = ts[1].connection_stats();
    assert!(s.open <= 4 && s.evicted_at_cap >= 7, "{s:?}");
}

#[tokio::test]
async fn a_length_prefix_over_the_limit_closes_the_connection_and_is_counted() {
    let ts = cluster(1, TarpcConfig::default()).await;
    let mut s = TcpStream::connect(ts[0].local_addr()).await.unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    wait_stats(&ts[0], "a decode error", |s| s.dropped.decode_error == 1).await;
    assert_eq!(ts[0].connection_stats().closed_oversize_frame, 1);
    assert_eq!(ts[0].connection_stats().buffered_bytes, 0);
}

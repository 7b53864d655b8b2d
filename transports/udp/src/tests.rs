use std::time::Duration;

use kvlab_transport::contract::wire::{self as wire_contract, loopback};
use kvlab_transport::contract::{Harness, TestMsg, recv_within, wait_stats};
use kvlab_transport::{Envelope, Transport, TransportConfig, TransportError, codec};
use kvlab_types::NodeId;
use tokio::net::UdpSocket;

use super::*;

/// Garbage sockets are registered as peers with ids from here on, one id per socket.
const FIRST_GARBAGE_PEER: u32 = 1000;

kvlab_transport::impl_wire_transport!(UdpTransport, UdpConfig);

async fn cluster(n: usize, config: UdpConfig) -> Vec<UdpTransport<TestMsg>> {
    wire_contract::cluster(n, config).await
}

/// Sends each raw input from a fresh socket the target knows as a peer.
#[derive(Debug, Default)]
struct UdpHarness {
    injections: std::sync::atomic::AtomicU32,
}

impl Harness for UdpHarness {
    type T = UdpTransport<TestMsg>;

    async fn build(&self, n: usize, config: TransportConfig) -> Vec<Self::T> {
        wire_contract::cluster_with_limits(n, config).await
    }

    async fn inject_raw(&self, target: &Self::T, bytes: Vec<u8>) {
        let sock = UdpSocket::bind(loopback()).await.unwrap();
        let n = self.injections.fetch_add(1, Ordering::Relaxed);
        target.add_peer(NodeId(FIRST_GARBAGE_PEER + n), sock.local_addr().unwrap());
        let mut d = vec![TAG_WHOLE];
        d.extend_from_slice(&bytes);
        sock.send_to(&d, target.local_addr()).await.unwrap();
    }

    async fn assert_released(&self, shut_down: &Self::T) {
        UdpSocket::bind(shut_down.local_addr())
            .await
            .expect("the port of a shut-down transport can be bound again");
    }

    fn os_drops(&self, t: &Self::T) -> u64 {
        crate::loopback_socket_drops(t.local_addr().port())
    }
}

kvlab_transport::contract_tests!(UdpHarness::default());

async fn raw_socket() -> UdpSocket {
    UdpSocket::bind(loopback()).await.unwrap()
}

#[tokio::test]
async fn datagrams_from_unknown_addresses_are_counted_and_dropped() {
    let ts = cluster(1, UdpConfig::default()).await;
    let stranger = raw_socket().await;
    let frame = codec::encode(
        &Envelope {
            from: NodeId(5),
            to: NodeId(1),
            msg: TestMsg::new(1, 4),
        },
        codec::DEFAULT_MAX_FRAME_BYTES,
        &kvlab_transport::PeerKey::default(),
    )
    .unwrap();
    let mut d = vec![TAG_WHOLE];
    d.extend_from_slice(&frame);
    stranger.send_to(&d, ts[0].local_addr()).await.unwrap();
    wait_stats(&ts[0], "an unknown sender", |s| s.dropped.unknown_peer == 1).await;
    assert!(
        recv_within(&ts[0], Duration::from_millis(200))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn raw_garbage_datagrams_are_decode_errors() {
    let ts = cluster(1, UdpConfig::default()).await;
    let peer = raw_socket().await;
    ts[0].add_peer(NodeId(2), peer.local_addr().unwrap());
    let mut short_chunk = Vec::new();
    write_chunk_header(
        &mut short_chunk,
        ChunkHeader {
            msg_id: 1,
            index: 0,
            count: 2,
        },
    );
    short_chunk.truncate(5);
    let mut bad_index = Vec::new();
    write_chunk_header(
        &mut bad_index,
        ChunkHeader {
            msg_id: 1,
            index: 0,
            count: 2,
        },
    );
    bad_index[9] = 7; // index 7 of 2
    let inputs: Vec<Vec<u8>> = vec![vec![], vec![0x00; 30], vec![0xFF], short_chunk, bad_index];
    for d in &inputs {
        peer.send_to(d, ts[0].local_addr()).await.unwrap();
    }
    wait_stats(&ts[0], "a decode error per datagram", |s| {
        s.dropped.decode_error == inputs.len() as u64
    })
    .await;
}

#[tokio::test]
async fn envelope_naming_another_sender_is_misaddressed() {
    let ts = cluster(1, UdpConfig::default()).await;
    let peer = raw_socket().await;
    ts[0].add_peer(NodeId(2), peer.local_addr().unwrap());
    for env in [
        // Claims to come from n3 but arrives from n2's address.
        Envelope {
            from: NodeId(3),
            to: NodeId(1),
            msg: TestMsg::new(1, 4),
        },
        // Comes from n2 but is meant for n9.
        Envelope {
            from: NodeId(2),
            to: NodeId(9),
            msg: TestMsg::new(2, 4),
        },
    ] {
        let mut d = vec![TAG_WHOLE];
        codec::encode_into(
            &env,
            codec::DEFAULT_MAX_FRAME_BYTES,
            &kvlab_transport::PeerKey::default(),
            &mut d,
        )
        .unwrap();
        peer.send_to(&d, ts[0].local_addr()).await.unwrap();
    }
    wait_stats(&ts[0], "two misaddressed envelopes", |s| {
        s.dropped.misaddressed == 2
    })
    .await;
    assert!(
        recv_within(&ts[0], Duration::from_millis(200))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_chunked_message_missing_a_chunk_expires_and_is_counted() {
    let config = UdpConfig {
        reassembly_timeout_ms: 100,
        ..UdpConfig::default()
    };
    let ts = cluster(1, config).await;
    let peer = raw_socket().await;
    ts[0].add_peer(NodeId(2), peer.local_addr().unwrap());
    let mut d = Vec::new();
    write_chunk_header(
        &mut d,
        ChunkHeader {
            msg_id: 9,
            index: 0,
            count: 3,
        },
    );
    d.extend_from_slice(&[1; 100]);
    peer.send_to(&d, ts[0].local_addr()).await.unwrap();
    wait_stats(&ts[0], "an expired reassembly", |s| {
        s.dropped.reassembly_expired == 1
    })
    .await;
}

#[tokio::test]
async fn chunks_of_a_large_message_use_small_datagrams() {
    // A sniffer peer receives what n1 sends and checks every datagram's size.
    let config = UdpConfig {
        max_datagram_bytes: 512,
        ..UdpConfig::default()
    };
    let ts = cluster(1, config).await;
    let sniffer = raw_socket().await;
    ts[0].add_peer(NodeId(2), sniffer.local_addr().unwrap());
    ts[0].send(NodeId(2), TestMsg::new(1, 5000)).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut chunks = 0;
    let mut total = 0;
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(300), sniffer.recv_from(&mut buf)).await
    {
        assert!(n <= 512, "datagram of {n} bytes");
        assert_eq!(buf[0], TAG_CHUNK);
        chunks += 1;
        total += n - CHUNK_HEADER_BYTES;
    }
    assert_eq!(chunks, total.div_ceil(512 - CHUNK_HEADER_BYTES));
    assert!(chunks >= 10, "{chunks} chunks for a 5000-byte message");
}

#[tokio::test]
async fn peer_table_changes_take_effect_at_run_time() {
    let ts = cluster(2, UdpConfig::default()).await;
    ts[0].remove_peer(NodeId(2));
    let err = ts[0].send(NodeId(2), TestMsg::new(1, 4)).unwrap_err();
    assert!(
        matches!(err, TransportError::UnknownPeer { peer: NodeId(2) }),
        "{err}"
    );
    ts[0].add_peer(NodeId(2), ts[1].local_addr());
    ts[0].send(NodeId(2), TestMsg::new(2, 4)).unwrap();
    let env = recv_within(&ts[1], Duration::from_secs(5))
        .await
        .expect("delivered after re-adding");
    assert_eq!(env.msg.seq, 2);
    assert!(ts[0].peers().contains_key(&NodeId(1)), "own entry is kept");
}

#[tokio::test]
async fn invalid_config_is_refused_naming_the_field() {
    wire_contract::assert_invalid_configs_name_their_field::<UdpTransport<TestMsg>>([
        (
            UdpConfig {
                max_datagram_bytes: 10,
                ..UdpConfig::default()
            },
            "max_datagram_bytes",
        ),
        (
            UdpConfig {
                max_reassembly_buffers: 0,
                ..UdpConfig::default()
            },
            "max_reassembly_buffers",
        ),
        (
            UdpConfig {
                reassembly_timeout_ms: 0,
                ..UdpConfig::default()
            },
            "reassembly_timeout_ms",
        ),
        (
            UdpConfig {
                max_reassembly_bytes: 1000,
                ..UdpConfig::default()
            },
            "max_reassembly_bytes",
        ),
        (
            UdpConfig {
                max_datagram_bytes: MIN_DATAGRAM_BYTES,
                transport: TransportConfig {
                    max_frame_bytes: 64 << 20,
                    ..TransportConfig::default()
                },
                ..UdpConfig::default()
            },
            "max_datagram_bytes",
        ),
    ])
    .await;
}

#[tokio::test]
async fn binding_a_taken_port_is_a_bind_error_naming_the_address() {
    let taken = raw_socket().await;
    let addr = taken.local_addr().unwrap();
    wire_contract::assert_taken_port_is_a_bind_error::<UdpTransport<TestMsg>>(
        addr,
        UdpConfig::default(),
    )
    .await;
}

/// The kernel's drop counter is read for the right socket: a socket nobody reads
/// overflows its buffer, and the drops show (Linux; elsewhere the table is missing and
/// nothing is claimed).
#[test]
fn kernel_drops_of_an_unread_socket_are_read_from_proc() {
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sink.local_addr().unwrap().port();
    assert_eq!(crate::loopback_socket_drops(port), 0);
    let src = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..20_000 {
        let _ = src.send_to(&[7u8; 1_000], ("127.0.0.1", port));
    }
    if std::path::Path::new("/proc/net/udp").exists() {
        assert!(crate::loopback_socket_drops(port) > 0);
    }
}

//! The contract every [`Transport`] implementation must pass, as a suite of async test
//! cases generic over a [`Harness`] that builds connected transports.
//!
//! An implementation runs the whole suite from its own tests with one line, which expands
//! to one `#[tokio::test]` per case (so `cargo test` lists them by name):
//!
//! ```text
//! kvlab_transport::contract_tests!(MyHarness::default());
//! ```
//!
//! The calling crate needs `tokio` (with the `macros` and `rt-multi-thread` features) as a
//! dev-dependency. Every case is bounded by [`CASE_TIMEOUT`]; every wait inside it by a
//! shorter bound, so a hung transport fails a test instead of hanging CI. Only loopback
//! addresses are ever used.
//!
//! Cases that depend on ordering consult [`Transport::delivery_order`]: per-peer FIFO is
//! checked only where it is promised; an unordered transport must still deliver every
//! message exactly once on an idle loopback (the cases pace it in windows so the
//! kernel's buffers are never the bottleneck).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kvlab_types::NodeId;
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, timeout};

use crate::codec::{self, CODEC_VERSION, FRAME_HEADER_BYTES};
use crate::{
    DeliveryOrder, Envelope, FaultRule, PeerKey, Transport, TransportConfig, TransportError,
    TransportStats,
};

pub mod wire;

/// Bound on one whole contract case.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on waiting for one message that must arrive.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a case listens to be sure a message that must not arrive does not.
pub const QUIET_PERIOD: Duration = Duration::from_millis(300);
/// Messages sent per pacing window to an unordered transport.
pub const UNORDERED_WINDOW: usize = 50;

/// The message type the suite sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestMsg {
    /// Which sending task (concurrent-sender case) wrote it.
    pub task: u32,
    /// Sequence number within that task.
    pub seq: u64,
    /// Filler, to reach a size.
    pub payload: Vec<u8>,
}

impl TestMsg {
    /// A message of task 0 with `seq` and `payload_bytes` bytes of a pattern that depends
    /// on `seq` (so a corrupted or swapped payload is noticed).
    pub fn new(seq: u64, payload_bytes: usize) -> Self {
        TestMsg {
            task: 0,
            seq,
            payload: (0..payload_bytes).map(|i| (i as u64 ^ seq) as u8).collect(),
        }
    }
}

/// What an implementation provides to run the suite.
pub trait Harness: Send + Sync + 'static {
    /// The implementation under test.
    type T: Transport<Msg = TestMsg>;

    /// Builds `n` transports with ids `NodeId(1)..=NodeId(n)`, each knowing every other
    /// and itself, all with `config`, each with its own (empty) fault rules. Only
    /// loopback addresses, ephemeral ports. Panics if it cannot (it is test code).
    fn build(&self, n: usize, config: TransportConfig)
    -> impl Future<Output = Vec<Self::T>> + Send;

    /// Feeds `bytes` to `target`'s receive path as one unit (an in-process frame, a
    /// datagram from a known peer's address, one RPC batch), as a misbehaving peer would.
    fn inject_raw(&self, target: &Self::T, bytes: Vec<u8>) -> impl Future<Output = ()> + Send;

    /// Panics unless the resources of `shut_down` (ports, the node id's slot) can be
    /// taken again.
    fn assert_released(&self, shut_down: &Self::T) -> impl Future<Output = ()> + Send;

    /// Messages to `t` that the operating system dropped before the transport could read
    /// them (a datagram socket's full receive buffer on a loaded host). Transports that
    /// cannot lose a message keep the default, 0.
    fn os_drops(&self, t: &Self::T) -> u64 {
        let _ = t;
        0
    }
}

/// Runs one case under [`CASE_TIMEOUT`], panicking with the case's name if it overruns.
pub async fn run_case(name: &str, case: impl Future<Output = ()>) {
    if timeout(CASE_TIMEOUT, case).await.is_err() {
        panic!("contract case `{name}` did not finish within {CASE_TIMEOUT:?}");
    }
}

/// Expands to one `#[tokio::test]` per contract case for the harness expression given.
#[macro_export]
macro_rules! contract_tests {
    ($harness:expr) => {
        $crate::contract_tests!(@cases $harness;
            point_to_point_delivery_is_counted,
            many_messages_arrive_in_order_where_promised,
            send_to_self_is_delivered,
            unknown_peer_is_a_typed_error_and_counted,
            oversize_message_is_refused_with_a_typed_error,
            large_message_within_the_limit_arrives_intact,
            garbage_input_is_counted_and_dropped_and_traffic_continues,
            frames_without_the_cluster_key_are_counted_and_never_delivered,
            fault_rules_drop_and_restore_traffic,
            delay_rule_holds_messages_for_the_delay,
            loss_rule_drops_a_seeded_fraction,
            concurrent_senders_all_deliver,
            full_queues_drop_and_count_instead_of_blocking,
            shutdown_releases_resources,
        );
    };
    (@cases $harness:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let harness = $harness;
                $crate::contract::run_case(stringify!($name), $crate::contract::$name(&harness)).await;
            }
        )*
    };
}

/// Receives one envelope within `within`, or `None`.
pub async fn recv_within<T: Transport>(t: &T, within: Duration) -> Option<Envelope<T::Msg>> {
    match timeout(within, t.recv()).await {
        Ok(Ok(env)) => Some(env),
        _ => None,
    }
}

async fn must_recv<T: Transport>(t: &T, what: &str) -> Envelope<T::Msg> {
    match timeout(DELIVERY_TIMEOUT, t.recv()).await {
        Ok(Ok(env)) => env,
        Ok(Err(e)) => panic!(
            "{}: recv failed while waiting for {what}: {e}",
            t.local_id()
        ),
        Err(_) => panic!(
            "{}: {what} did not arrive within {DELIVERY_TIMEOUT:?}; stats {:?}",
            t.local_id(),
            t.stats()
        ),
    }
}

async fn must_be_quiet<T: Transport>(t: &T, what: &str) {
    if let Some(env) = recv_within(t, QUIET_PERIOD).await {
        panic!("{}: {what}, but received {env:?}", t.local_id());
    }
}

/// Polls `t`'s stats until `pred` holds (bounded by [`DELIVERY_TIMEOUT`]) and returns
/// them; panics with `what` otherwise.
pub async fn wait_stats<T: Transport>(
    t: &T,
    what: &str,
    pred: impl Fn(&TransportStats) -> bool,
) -> TransportStats {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let s = t.stats();
        if pred(&s) {
            return s;
        }
        if Instant::now() >= deadline {
            panic!("{}: stats never showed {what}: {s:?}", t.local_id());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn id(n: u32) -> NodeId {
    NodeId(n)
}

/// One message each way between two nodes arrives intact with the right ends, and the
/// counters say so.
pub async fn point_to_point_delivery_is_counted<H: Harness>(h: &H) {
    let ts = h.build(2, TransportConfig::default()).await;
    let (a, b) = (&ts[0], &ts[1]);
    assert_eq!(a.local_id(), id(1));
    assert_eq!(b.local_id(), id(2));
    a.send(id(2), TestMsg::new(1, 100)).unwrap();
    let env = must_recv(b, "message 1 from n1").await;
    assert_eq!(
        env,
        Envelope {
            from: id(1),
            to: id(2),
            msg: TestMsg::new(1, 100)
        }
    );
    b.send(id(1), TestMsg::new(2, 10)).unwrap();
    let env = must_recv(a, "message 2 from n2").await;
    assert_eq!(
        env,
        Envelope {
            from: id(2),
            to: id(1),
            msg: TestMsg::new(2, 10)
        }
    );
    wait_stats(a, "sent = 1", |s| s.sent == 1).await;
    let sb = wait_stats(b, "sent = 1", |s| s.sent == 1).await;
    assert_eq!(sb.received, 1);
    assert!(
        sb.received_bytes > 100,
        "received_bytes counts the frame: {sb:?}"
    );
    assert_eq!(a.stats().dropped.total(), 0);
    assert_eq!(sb.dropped.total(), 0);
}

/// A thousand messages from one peer all arrive exactly once; in send order where the
/// implementation promises per-peer FIFO (paced in windows where it does not).
pub async fn many_messages_arrive_in_order_where_promised<H: Harness>(h: &H) {
    const N: u64 = 1000;
    let ts = h.build(2, TransportConfig::default()).await;
    let (a, b) = (&ts[0], &ts[1]);
    match a.delivery_order() {
        DeliveryOrder::PerPeerFifo => {
            for seq in 0..N {
                a.send(id(2), TestMsg::new(seq, 32)).unwrap();
            }
            for seq in 0..N {
                let env = must_recv(b, &format!("message {seq} of {N}")).await;
                assert_eq!(
                    env.msg,
                    TestMsg::new(seq, 32),
                    "per-peer FIFO broken at {seq}"
                );
            }
        }
        DeliveryOrder::Unordered => {
            let mut seen = BTreeSet::new();
            for window in 0..N / UNORDERED_WINDOW as u64 {
                let base = window * UNORDERED_WINDOW as u64;
                for seq in base..base + UNORDERED_WINDOW as u64 {
                    a.send(id(2), TestMsg::new(seq, 32)).unwrap();
                }
                for _ in 0..UNORDERED_WINDOW {
                    let env = must_recv(b, &format!("a message of window {window}")).await;
                    assert_eq!(env.msg, TestMsg::new(env.msg.seq, 32), "payload corrupted");
                    assert!(
                        seen.insert(env.msg.seq),
                        "duplicate delivery of {}",
                        env.msg.seq
                    );
                }
            }
            assert_eq!(seen, (0..N).collect::<BTreeSet<_>>());
        }
    }
    must_be_quiet(b, "every message was already received").await;
}

/// A node can send to itself (a protocol broadcasting to all members includes itself).
pub async fn send_to_self_is_delivered<H: Harness>(h: &H) {
    let ts = h.build(2, TransportConfig::default()).await;
    let a = &ts[0];
    a.send(id(1), TestMsg::new(7, 8)).unwrap();
    let env = must_recv(a, "message to self").await;
    assert_eq!(
        env,
        Envelope {
            from: id(1),
            to: id(1),
            msg: TestMsg::new(7, 8)
        }
    );
}

/// Sending to a node nobody knows is a typed error naming it, counted, and harmless.
pub async fn unknown_peer_is_a_typed_error_and_counted<H: Harness>(h: &H) {
    let ts = h.build(2, TransportConfig::default()).await;
    let (a, b) = (&ts[0], &ts[1]);
    let err = a.send(id(99), TestMsg::new(1, 1)).unwrap_err();
    assert!(
        matches!(err, TransportError::UnknownPeer { peer } if peer == id(99)),
        "{err}"
    );
    assert!(
        err.to_string().contains("n99"),
        "the error names the peer: {err}"
    );
    assert_eq!(a.stats().dropped.unknown_peer, 1);
    a.send(id(2), TestMsg::new(2, 1)).unwrap();
    assert_eq!(
        must_recv(b, "message after the error").await.msg,
        TestMsg::new(2, 1)
    );
}

/// A message over `max_frame_bytes` is refused at the sender with a typed error and
/// counted; smaller ones still go.
pub async fn oversize_message_is_refused_with_a_typed_error<H: Harness>(h: &H) {
    let config = TransportConfig {
        max_frame_bytes: 8 * 1024,
        ..TransportConfig::default()
    };
    let ts = h.build(2, config).await;
    let (a, b) = (&ts[0], &ts[1]);
    let err = a.send(id(2), TestMsg::new(1, 16 * 1024)).unwrap_err();
    match err {
        TransportError::Oversize {
            peer,
            size_bytes,
            max_bytes,
        } => {
            assert_eq!(peer, id(2));
            assert!(size_bytes > 16 * 1024);
            assert_eq!(max_bytes, 8 * 1024);
        }
        other => panic!("expected Oversize, got {other}"),
    }
    assert_eq!(a.stats().dropped.oversize, 1);
    a.send(id(2), TestMsg::new(2, 4 * 1024)).unwrap();
    assert_eq!(
        must_recv(b, "a 4 KiB message").await.msg,
        TestMsg::new(2, 4 * 1024)
    );
    must_be_quiet(b, "the oversize message was refused").await;
}

/// A message far above a datagram's size but within the frame limit arrives intact
/// (chunked by UDP, one frame elsewhere).
pub async fn large_message_within_the_limit_arrives_intact<H: Harness>(h: &H) {
    let config = TransportConfig {
        max_frame_bytes: 256 * 1024,
        ..TransportConfig::default()
    };
    let ts = h.build(2, config).await;
    let (a, b) = (&ts[0], &ts[1]);
    for seq in 0..3 {
        a.send(id(2), TestMsg::new(seq, 64 * 1024)).unwrap();
        let env = must_recv(b, "a 64 KiB message").await;
        assert_eq!(env.msg, TestMsg::new(seq, 64 * 1024));
    }
}

/// The garbage the suite feeds to a node whose frames are keyed with `key`: each a
/// different way a frame goes wrong before its MAC is checked (or, for the last one, after
/// it verified).
pub fn garbage_inputs(key: &PeerKey) -> Vec<(&'static str, Vec<u8>)> {
    let good = codec::encode(
        &Envelope {
            from: id(1),
            to: id(2),
            msg: TestMsg::new(5, 40),
        },
        codec::DEFAULT_MAX_FRAME_BYTES,
        key,
    )
    .unwrap_or_default();
    let mut seed: u64 = 0x5EED;
    let random: Vec<u8> = (0..64)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u8
        })
        .collect();
    let mut bad_version = good.clone();
    bad_version[0] = CODEC_VERSION.wrapping_add(1);
    let truncated = good[..good.len() / 2].to_vec();
    let mut bad_checksum = good.clone();
    let last = bad_checksum.len() - 1;
    bad_checksum[last] ^= 0xFF;
    // Authentic, but not a TestMsg: the MAC verifies, the payload does not decode.
    let wrong_schema = codec::frame_with_raw_payload(id(1), id(2), &[0xFFu8; 7], key);
    debug_assert_eq!(wrong_schema.len(), FRAME_HEADER_BYTES + 7);
    let mut huge_length = vec![CODEC_VERSION];
    huge_length.extend_from_slice(&u32::MAX.to_le_bytes());
    huge_length.extend_from_slice(&[0; FRAME_HEADER_BYTES - 5]);
    vec![
        ("random bytes", random),
        ("bad version", bad_version),
        ("truncated frame", truncated),
        ("bad checksum", bad_checksum),
        ("payload of another schema", wrong_schema),
        ("length over the limit", huge_length),
    ]
}

/// Malformed input is counted as a decode error per input, never delivered, never a
/// panic, and the node keeps working.
pub async fn garbage_input_is_counted_and_dropped_and_traffic_continues<H: Harness>(h: &H) {
    let config = TransportConfig {
        peer_key: PeerKey::derive(b"contract suite cluster secret"),
        ..TransportConfig::default()
    };
    let ts = h.build(2, config).await;
    let (a, b) = (&ts[0], &ts[1]);
    let inputs = garbage_inputs(&config.peer_key);
    for (_what, bytes) in &inputs {
        h.inject_raw(b, bytes.clone()).await;
    }
    a.send(id(2), TestMsg::new(1, 10)).unwrap();
    let env = must_recv(b, "a good message after the garbage").await;
    assert_eq!(
        env.msg,
        TestMsg::new(1, 10),
        "garbage must never be delivered"
    );
    // Some transports decode as they receive, some when `recv` is called: poll.
    let s = wait_stats(b, "one decode error per garbage input", |s| {
        s.dropped.decode_error >= inputs.len() as u64
    })
    .await;
    assert_eq!(s.dropped.decode_error, inputs.len() as u64, "{s:?}");
    assert_eq!(s.received, 1);
    must_be_quiet(b, "garbage is never delivered").await;
    assert_eq!(b.stats().dropped.decode_error, inputs.len() as u64);
}

/// Intact frames made without the cluster's key — with another cluster's key, or with
/// the well-known unauthenticated key, claiming to come from a member — are counted as
/// [`crate::DropReason::Unauthenticated`], never delivered, and nodes that share the key
/// keep talking.
pub async fn frames_without_the_cluster_key_are_counted_and_never_delivered<H: Harness>(h: &H) {
    let config = TransportConfig {
        peer_key: PeerKey::derive(b"contract suite cluster secret"),
        ..TransportConfig::default()
    };
    let ts = h.build(2, config).await;
    let (a, b) = (&ts[0], &ts[1]);
    let forged = |key: &PeerKey, seq: u64| {
        codec::encode(
            &Envelope {
                from: id(1),
                to: id(2),
                msg: TestMsg::new(seq, 16),
            },
            codec::DEFAULT_MAX_FRAME_BYTES,
            key,
        )
        .expect("a test frame encodes")
    };
    h.inject_raw(b, forged(&PeerKey::derive(b"another cluster"), 100))
        .await;
    h.inject_raw(b, forged(&PeerKey::unauthenticated(), 101))
        .await;
    a.send(id(2), TestMsg::new(1, 16)).unwrap();
    let env = must_recv(b, "a genuine message after the forgeries").await;
    assert_eq!(env.msg, TestMsg::new(1, 16), "a forged frame was delivered");
    let s = wait_stats(b, "two unauthenticated frames", |s| {
        s.dropped.unauthenticated >= 2
    })
    .await;
    assert_eq!(s.dropped.unauthenticated, 2, "{s:?}");
    assert_eq!(s.dropped.decode_error, 0, "{s:?}");
    assert_eq!(s.received, 1);
    must_be_quiet(b, "forged frames are never delivered").await;
}

/// Drop-to and drop-from rules cut traffic (counted, `send` still `Ok`) and clearing
/// them restores it; a two-way partition heals.
pub async fn fault_rules_drop_and_restore_traffic<H: Harness>(h: &H) {
    let ts = h.build(2, TransportConfig::default()).await;
    let (a, b) = (&ts[0], &ts[1]);
    a.fault_rules()
        .add(FaultRule::DropTo { peer: id(2) })
        .unwrap();
    for seq in 0..10 {
        a.send(id(2), TestMsg::new(seq, 8)).unwrap();
    }
    must_be_quiet(b, "n1 drops everything to n2").await;
    assert_eq!(a.stats().dropped.fault_rule, 10);
    a.fault_rules().clear();
    a.send(id(2), TestMsg::new(10, 8)).unwrap();
    assert_eq!(
        must_recv(b, "message after clearing drop_to").await.msg.seq,
        10
    );

    b.fault_rules()
        .add(FaultRule::DropFrom { peer: id(1) })
        .unwrap();
    a.send(id(2), TestMsg::new(11, 8)).unwrap();
    must_be_quiet(b, "n2 drops everything from n1").await;
    assert_eq!(b.stats().dropped.fault_rule, 1);
    b.fault_rules().clear();
    a.send(id(2), TestMsg::new(12, 8)).unwrap();
    assert_eq!(
        must_recv(b, "message after clearing drop_from")
            .await
            .msg
            .seq,
        12
    );

    // A full partition, both ways, then heal.
    a.fault_rules()
        .add(FaultRule::DropTo { peer: id(2) })
        .unwrap();
    b.fault_rules()
        .add(FaultRule::DropTo { peer: id(1) })
        .unwrap();
    a.send(id(2), TestMsg::new(13, 8)).unwrap();
    b.send(id(1), TestMsg::new(14, 8)).unwrap();
    must_be_quiet(b, "partitioned from n1").await;
    must_be_quiet(a, "partitioned from n2").await;
    a.fault_rules().clear();
    b.fault_rules().clear();
    a.send(id(2), TestMsg::new(15, 8)).unwrap();
    b.send(id(1), TestMsg::new(16, 8)).unwrap();
    assert_eq!(must_recv(b, "message after healing").await.msg.seq, 15);
    assert_eq!(must_recv(a, "message after healing").await.msg.seq, 16);
}

/// A delay rule holds messages at least that long, keeps per-peer order where promised,
/// and leaves other peers alone.
pub async fn delay_rule_holds_messages_for_the_delay<H: Harness>(h: &H) {
    const DELAY_MS: u64 = 200;
    let ts = h.build(3, TransportConfig::default()).await;
    let (a, b, c) = (&ts[0], &ts[1], &ts[2]);
    a.fault_rules()
        .add(FaultRule::DelayTo {
            peer: id(2),
            delay_ms: DELAY_MS,
        })
        .unwrap();
    let start = Instant::now();
    for seq in 0..20 {
        a.send(id(2), TestMsg::new(seq, 8)).unwrap();
    }
    a.send(id(3), TestMsg::new(100, 8)).unwrap();
    assert_eq!(must_recv(c, "undelayed message to n3").await.msg.seq, 100);
    let mut seqs = Vec::new();
    for _ in 0..20 {
        seqs.push(must_recv(b, "delayed message").await.msg.seq);
        if seqs.len() == 1 {
            let waited = start.elapsed();
            assert!(
                waited >= Duration::from_millis(DELAY_MS),
                "delayed message arrived after {waited:?}"
            );
        }
    }
    if a.delivery_order() == DeliveryOrder::PerPeerFifo {
        assert_eq!(
            seqs,
            (0..20).collect::<Vec<_>>(),
            "a constant delay keeps the order"
        );
    } else {
        seqs.sort_unstable();
        assert_eq!(seqs, (0..20).collect::<Vec<_>>());
    }
    a.fault_rules().clear();
    a.send(id(2), TestMsg::new(21, 8)).unwrap();
    assert_eq!(
        must_recv(b, "message after clearing the delay")
            .await
            .msg
            .seq,
        21
    );
}

/// A loss rule of probability 1 drops everything; of 0.5 a seeded fraction, and exactly
/// the messages not counted as dropped arrive.
pub async fn loss_rule_drops_a_seeded_fraction<H: Harness>(h: &H) {
    let ts = h.build(2, TransportConfig::default()).await;
    let (a, b) = (&ts[0], &ts[1]);
    a.fault_rules()
        .add(FaultRule::Loss {
            peer: None,
            probability: 1.0,
        })
        .unwrap();
    for seq in 0..20 {
        a.send(id(2), TestMsg::new(seq, 8)).unwrap();
    }
    must_be_quiet(b, "loss probability is 1").await;
    assert_eq!(a.stats().dropped.fault_rule, 20);

    a.fault_rules()
        .set(vec![FaultRule::Loss {
            peer: Some(id(2)),
            probability: 0.5,
        }])
        .unwrap();
    let mut received = 0u64;
    let mut dropped_before = a.stats().dropped.fault_rule;
    for window in 0..200 / UNORDERED_WINDOW as u64 {
        for i in 0..UNORDERED_WINDOW as u64 {
            a.send(id(2), TestMsg::new(window * 100 + i, 8)).unwrap();
        }
        let dropped_now = a.stats().dropped.fault_rule;
        let expect = UNORDERED_WINDOW as u64 - (dropped_now - dropped_before);
        dropped_before = dropped_now;
        for _ in 0..expect {
            must_recv(b, "a message the loss rule kept").await;
            received += 1;
        }
    }
    must_be_quiet(b, "every kept message was received").await;
    let lost = 200 - received;
    assert!((50..=150).contains(&lost), "{lost} of 200 lost at p = 0.5");
}

/// Several tasks on several nodes send to one node at once; everything arrives, and each
/// task's messages keep their order where per-peer FIFO is promised.
pub async fn concurrent_senders_all_deliver<H: Harness>(h: &H) {
    const TASKS: u32 = 4;
    const PER_TASK: u64 = 100;
    const BURST: u64 = 10;
    let ts: Vec<Arc<H::T>> = h
        .build(3, TransportConfig::default())
        .await
        .into_iter()
        .map(Arc::new)
        .collect();
    let mut handles = Vec::new();
    for sender in &ts[1..] {
        for task in 0..TASKS {
            let sender = sender.clone();
            handles.push(tokio::spawn(async move {
                for seq in 0..PER_TASK {
                    let msg = TestMsg {
                        task,
                        seq,
                        payload: vec![task as u8; 16],
                    };
                    sender.send(id(1), msg).unwrap();
                    if seq % BURST == BURST - 1 {
                        // Pace bursts so an unordered transport's kernel buffers keep up.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }));
        }
    }
    for handle in handles {
        handle.await.unwrap();
    }
    let total = 2 * TASKS as u64 * PER_TASK;
    let mut next: std::collections::BTreeMap<(NodeId, u32), u64> = Default::default();
    let mut seen = BTreeSet::new();
    // Everything arrives, except what the operating system provably dropped.
    while (seen.len() as u64) + h.os_drops(&ts[0]) < total {
        let env = must_recv(&*ts[0], "a concurrent message").await;
        assert!(
            seen.insert((env.from, env.msg.task, env.msg.seq)),
            "duplicate {env:?}"
        );
        let expected = next.entry((env.from, env.msg.task)).or_insert(0);
        if ts[0].delivery_order() == DeliveryOrder::PerPeerFifo {
            assert_eq!(
                env.msg.seq, *expected,
                "order of {} task {} broken",
                env.from, env.msg.task
            );
        }
        *expected += 1;
    }
    if h.os_drops(&ts[0]) == 0 {
        assert!(next.values().all(|n| *n == PER_TASK), "{next:?}");
    }
    must_be_quiet(&*ts[0], "all concurrent messages were received").await;
}

/// With tiny queues and a receiver that does not read, sends never block: the excess is
/// returned as `QueueFull` and counted, or, by a transport that hands a message straight
/// to the kernel when its own queue is empty (UDP), dropped and counted at the receiver
/// (its full inbound queue, or the kernel's count for its socket); and traffic flows
/// again once the receiver reads.
pub async fn full_queues_drop_and_count_instead_of_blocking<H: Harness>(h: &H) {
    const SENDS: u64 = 2000;
    let config = TransportConfig {
        outbound_queue_len: 4,
        inbound_queue_len: 4,
        ..TransportConfig::default()
    };
    let ts = h.build(2, config).await;
    let (a, b) = (&ts[0], &ts[1]);
    let mut refused = 0u64;
    for seq in 0..SENDS {
        match a.send(id(2), TestMsg::new(seq, 64)) {
            Ok(()) => {}
            Err(TransportError::QueueFull { peer, capacity }) => {
                assert_eq!(peer, id(2));
                assert!(capacity >= 1);
                refused += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(
        a.stats().dropped.queue_full,
        refused,
        "every refusal is counted"
    );
    tokio::time::sleep(QUIET_PERIOD).await;
    let lost_at_receiver = b.stats().dropped.queue_full + h.os_drops(b);
    assert!(
        refused + lost_at_receiver > 0,
        "2000 sends into queues of 4 must overflow somewhere, counted"
    );
    // Drain whatever made it through.
    let mut drained = 0u64;
    while recv_within(b, QUIET_PERIOD).await.is_some() {
        drained += 1;
    }
    assert!(
        drained <= SENDS - refused,
        "received {drained} but only {} were accepted",
        SENDS - refused
    );
    a.send(id(2), TestMsg::new(SENDS, 64)).unwrap();
    let env = must_recv(b, "a message after the queues drained").await;
    assert_eq!(env.msg.seq, SENDS);
}

/// After `shutdown` the transport refuses to send or receive with `Closed`, its resources
/// can be taken again, and peers sending to it do not panic.
pub async fn shutdown_releases_resources<H: Harness>(h: &H) {
    let ts = h.build(2, TransportConfig::default()).await;
    let (a, b) = (&ts[0], &ts[1]);
    a.send(id(2), TestMsg::new(1, 8)).unwrap();
    must_recv(b, "message before shutdown").await;
    b.shutdown().await;
    let err = b.recv().await.unwrap_err();
    assert!(
        matches!(err, TransportError::Closed { node } if node == id(2)),
        "{err}"
    );
    let err = b.send(id(1), TestMsg::new(2, 8)).unwrap_err();
    assert!(matches!(err, TransportError::Closed { .. }), "{err}");
    h.assert_released(b).await;
    // The peer may get an error or a silent drop, never a panic or a hang.
    let _ = a.send(id(2), TestMsg::new(3, 8));
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Shutting down twice is harmless.
    b.shutdown().await;
    a.shutdown().await;
}

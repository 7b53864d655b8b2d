//! Raw overhead of kvlab's transports against the physical limit of this machine.
//!
//! For each case, node 1 sends 100-byte messages to node 2, which echoes them back, on
//! loopback in one process (a 2-worker tokio runtime):
//!
//! - round-trip latency with one message in flight (p50, p99), and
//! - throughput with `IN_FLIGHT` messages in flight (completed round trips per second).
//!
//! Cases: `mem`, `mem+codec` (encode/decode on every message), `udp`, `tarpc`, and, as
//! the reference, a plain tokio UDP echo and a plain tokio TCP echo measured in the same
//! run. Each phase runs for `PHASE` after a `WARMUP`; lost UDP messages are topped up after
//! `LOSS_TIMEOUT` and counted. Run with `cargo bench -p kvlab-transport-udp --bench
//! transport_echo`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kvlab_transport::{FaultRules, Transport, TransportConfig};
use kvlab_transport_mem::{MemConfig, MemNetwork};
use kvlab_transport_tarpc::{TarpcConfig, TarpcTransport};
use kvlab_transport_udp::{UdpConfig, UdpTransport};
use kvlab_types::NodeId;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::{Instant, timeout};

/// Payload bytes per message (the FINDINGS reference numbers use 100-byte messages).
const PAYLOAD_BYTES: usize = 100;
/// Messages in flight in the throughput phase.
const IN_FLIGHT: usize = 32;
/// Length of each measured phase.
const PHASE: Duration = Duration::from_secs(2);
/// Unmeasured run before each phase.
const WARMUP: Duration = Duration::from_millis(300);
/// A reply not back within this is taken as lost and replaced.
const LOSS_TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, Serialize, Deserialize)]
struct BenchMsg {
    seq: u64,
    payload: Vec<u8>,
}

fn msg(seq: u64) -> BenchMsg {
    BenchMsg {
        seq,
        payload: vec![7; PAYLOAD_BYTES],
    }
}

#[derive(Debug, Default)]
struct Row {
    name: &'static str,
    rtt_us_p50: f64,
    rtt_us_p99: f64,
    round_trips_per_s: f64,
    lost: u64,
}

fn percentile_us(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_ns.len() as f64 - 1.0) * p).round() as usize;
    sorted_ns[i] as f64 / 1000.0
}

/// Something that can send one message and wait for one echo.
trait EchoClient {
    async fn send_one(&mut self, seq: u64);
    /// `false` if nothing came back within `LOSS_TIMEOUT`.
    async fn recv_one(&mut self) -> bool;
}

async fn measure(name: &'static str, c: &mut impl EchoClient) -> Row {
    let mut row = Row {
        name,
        ..Row::default()
    };
    let mut seq = 0u64;
    // Latency: one in flight.
    let mut rtts = Vec::new();
    for measuring in [false, true] {
        let end = Instant::now() + if measuring { PHASE } else { WARMUP };
        while Instant::now() < end {
            let t0 = Instant::now();
            c.send_one(seq).await;
            seq += 1;
            if c.recv_one().await {
                if measuring {
                    rtts.push(t0.elapsed().as_nanos() as u64);
                }
            } else {
                row.lost += 1;
            }
        }
    }
    rtts.sort_unstable();
    row.rtt_us_p50 = percentile_us(&rtts, 0.50);
    row.rtt_us_p99 = percentile_us(&rtts, 0.99);
    // Throughput: IN_FLIGHT in flight.
    for _ in 0..IN_FLIGHT {
        c.send_one(seq).await;
        seq += 1;
    }
    for measuring in [false, true] {
        let start = Instant::now();
        let end = start + if measuring { PHASE } else { WARMUP };
        let mut done = 0u64;
        while Instant::now() < end {
            if c.recv_one().await {
                done += 1;
            } else {
                row.lost += 1;
            }
            c.send_one(seq).await;
            seq += 1;
        }
        if measuring {
            row.round_trips_per_s = done as f64 / start.elapsed().as_secs_f64();
        }
    }
    // Drain the messages still in flight so the next case starts quiet.
    for _ in 0..IN_FLIGHT {
        if !c.recv_one().await {
            break;
        }
    }
    row
}

struct TransportClient<T: Transport<Msg = BenchMsg>> {
    t: Arc<T>,
}

impl<T: Transport<Msg = BenchMsg>> EchoClient for TransportClient<T> {
    async fn send_one(&mut self, seq: u64) {
        // A refused send shows up as a lost reply.
        let _ = self.t.send(NodeId(2), msg(seq));
    }
    async fn recv_one(&mut self) -> bool {
        matches!(timeout(LOSS_TIMEOUT, self.t.recv()).await, Ok(Ok(_)))
    }
}

fn spawn_echo_server<T: Transport<Msg = BenchMsg>>(t: Arc<T>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(env) = t.recv().await {
            let _ = t.send(env.from, env.msg);
        }
    })
}

async fn bench_transport<T: Transport<Msg = BenchMsg>>(name: &'static str, a: T, b: T) -> Row {
    let (a, b) = (Arc::new(a), Arc::new(b));
    let server = spawn_echo_server(b.clone());
    let row = measure(name, &mut TransportClient { t: a.clone() }).await;
    server.abort();
    a.shutdown().await;
    b.shutdown().await;
    row
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn big_queues() -> TransportConfig {
    TransportConfig {
        outbound_queue_len: 4096,
        inbound_queue_len: 4096,
        ..TransportConfig::default()
    }
}

struct PlainUdp {
    sock: UdpSocket,
    server: SocketAddr,
    buf: Vec<u8>,
}

impl EchoClient for PlainUdp {
    async fn send_one(&mut self, seq: u64) {
        let mut d = vec![7u8; PAYLOAD_BYTES + 8];
        d[..8].copy_from_slice(&seq.to_le_bytes());
        let _ = self.sock.send_to(&d, self.server).await;
    }
    async fn recv_one(&mut self) -> bool {
        matches!(
            timeout(LOSS_TIMEOUT, self.sock.recv_from(&mut self.buf)).await,
            Ok(Ok(_))
        )
    }
}

/// Reads whatever bytes are available and counts whole messages, so many echoes cost one
/// read (the best a plain TCP client can do).
struct PlainTcp {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of echoes read but not yet counted as messages.
    pending_bytes: usize,
}

impl EchoClient for PlainTcp {
    async fn send_one(&mut self, seq: u64) {
        let mut d = vec![7u8; PAYLOAD_BYTES + 8];
        d[..8].copy_from_slice(&seq.to_le_bytes());
        let _ = self.stream.write_all(&d).await;
    }
    async fn recv_one(&mut self) -> bool {
        const MSG: usize = PAYLOAD_BYTES + 8;
        while self.pending_bytes < MSG {
            match timeout(LOSS_TIMEOUT, self.stream.read(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => self.pending_bytes += n,
                _ => return false,
            }
        }
        self.pending_bytes -= MSG;
        true
    }
}

async fn plain_udp() -> Row {
    let server = UdpSocket::bind(loopback()).await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = server.recv_from(&mut buf).await {
            let _ = server.send_to(&buf[..n], from).await;
        }
    });
    let mut c = PlainUdp {
        sock: UdpSocket::bind(loopback()).await.unwrap(),
        server: server_addr,
        buf: vec![0; 2048],
    };
    let row = measure("plain tokio UDP echo", &mut c).await;
    task.abort();
    row
}

async fn plain_tcp() -> Row {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let _ = s.set_nodelay(true);
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut c = PlainTcp {
        stream,
        buf: vec![0; 64 * 1024],
        pending_bytes: 0,
    };
    let row = measure("plain tokio TCP echo", &mut c).await;
    task.abort();
    row
}

/// Binds nodes 1 and 2 of a socket transport (`UdpTransport`, `TarpcTransport`: same
/// `bind`, `local_addr` and `set_peers`) on loopback with `config`, each knowing both.
macro_rules! bound_pair {
    ($transport:ident, $config:expr) => {{
        let config = $config;
        let mut pair = Vec::new();
        for id in [1, 2] {
            let t = $transport::bind(
                NodeId(id),
                loopback(),
                BTreeMap::new(),
                config,
                FaultRules::new(u64::from(id)),
            )
            .await
            .unwrap();
            pair.push(t);
        }
        let table: BTreeMap<NodeId, SocketAddr> = pair
            .iter()
            .map(|t| (t.local_id(), t.local_addr()))
            .collect();
        for t in &pair {
            t.set_peers(table.clone());
        }
        let b = pair.pop().unwrap();
        let a = pair.pop().unwrap();
        (a, b)
    }};
}

async fn run() -> Vec<Row> {
    let mut rows = vec![plain_udp().await, plain_tcp().await];

    for (name, roundtrip) in [("mem", false), ("mem+codec", true)] {
        let net = MemNetwork::new(MemConfig {
            transport: big_queues(),
            codec_roundtrip: roundtrip,
        })
        .unwrap();
        let a = net.join(NodeId(1), FaultRules::new(1)).unwrap();
        let b = net.join(NodeId(2), FaultRules::new(2)).unwrap();
        rows.push(bench_transport(name, a, b).await);
    }

    let (a, b) = bound_pair!(
        UdpTransport,
        UdpConfig {
            transport: big_queues(),
            ..UdpConfig::default()
        }
    );
    rows.push(bench_transport("udp", a, b).await);

    let (a, b) = bound_pair!(
        TarpcTransport,
        TarpcConfig {
            transport: big_queues(),
            ..TarpcConfig::default()
        }
    );
    rows.push(bench_transport("tarpc", a, b).await);
    rows
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let rows = rt.block_on(run());
    let udp_ref = &rows[0];
    let tcp_ref = &rows[1];
    println!(
        "transport_echo: {PAYLOAD_BYTES}-byte messages on loopback, one process, 2 tokio workers; \
         latency with 1 in flight, throughput with {IN_FLIGHT} in flight, {PHASE:?} per phase"
    );
    println!(
        "| case | RTT p50 µs | RTT p99 µs | round trips/s @{IN_FLIGHT} | p50 vs UDP echo | p50 vs TCP echo | rate vs UDP echo | rate vs TCP echo | lost |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.0} | {:.2}× | {:.2}× | {:.2} | {:.2} | {} |",
            r.name,
            r.rtt_us_p50,
            r.rtt_us_p99,
            r.round_trips_per_s,
            r.rtt_us_p50 / udp_ref.rtt_us_p50,
            r.rtt_us_p50 / tcp_ref.rtt_us_p50,
            r.round_trips_per_s / udp_ref.round_trips_per_s,
            r.round_trips_per_s / tcp_ref.round_trips_per_s,
            r.lost
        );
    }
}

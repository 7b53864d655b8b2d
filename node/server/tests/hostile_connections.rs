//! Connection exhaustion and hostile deadlines against a real node process.
//!
//! The issue: ~20k idle connections to the tarpc peer port hit the fd limit (node at
//! 200% CPU, client and admin calls hang > 10 s); 4,200 idle connections to the client
//! port locked out real clients and the admin endpoint; 40 connections each holding
//! 15 MiB of an unfinished frame took RSS to 625 MB; a request deadline of u64::MAX
//! seconds panicked the connection's task.
//!
//! Each test starts the node as a child process (this test binary re-executed with
//! [`CHILD_ENV`] set, under `ulimit -n` [`CHILD_OPEN_FILES`]), attacks it over
//! loopback, and requires that a real client and the admin endpoint are still answered
//! within [`ANSWER_WITHIN`], and that the node's RSS (`/proc/<pid>/status`) stays
//! bounded. Tests take a lock so that only one attack runs at a time.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kvlab_server::{
    AdminClient, AdminConfig, KvClient, KvClientOptions, NodeConfig, NodeStatus, ServerOptions,
    SystemKind, TransportKind,
};
use kvlab_types::{ClientRequest, OpOutput};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Set in the child: the path of its node config.
const CHILD_ENV: &str = "KVLAB_HOSTILE_CHILD_CONFIG";
/// The child's open-files limit: low enough that the old unbounded peer port and the old
/// 4,096-connection client cap exhaust it, far above what the new caps need.
const CHILD_OPEN_FILES: u32 = 2048;
/// How fast a real client and the admin endpoint must be answered under attack.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// Bound on one whole test.
const TEST_LIMIT: Duration = Duration::from_secs(120);

static ONE_ATTACK_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Not a test of its own: the node process the other tests start. Does nothing unless
/// [`CHILD_ENV`] is set.
#[test]
fn hostile_child_node() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = kvlab_server::load_node_config(&path).expect("child config");
        kvlab_server::run_node(config, std::future::pending())
            .await
            .expect("the child node runs until killed");
    });
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A single-node raft node process over tarpc, killed when dropped.
struct ChildNode {
    child: Child,
    peer: SocketAddr,
    client: SocketAddr,
    admin: SocketAddr,
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        // Only the process this test started, by its id.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildNode {
    async fn start(dir: &Path) -> ChildNode {
        let (peer, client, admin) = (at(free_port()), at(free_port()), at(free_port()));
        let config = NodeConfig {
            id: 1,
            system: SystemKind::Raft,
            transport: TransportKind::Tarpc,
            listen: peer,
            client,
            admin: AdminConfig {
                addr: admin,
                token: TOKEN.into(),
                allow_non_loopback: false,
            },
            cluster_secret: secret(),
            peers: [("1".to_string(), peer)].into_iter().collect(),
            data_dir: dir.join("n1"),
            seed: 9,
            storage: Default::default(),
            server: ServerOptions::default(),
            udp: None,
            tarpc: None,
            raft: None,
            single: None,
            async_primary: None,
            kvlab: None,
            etcd_api: None,
        };
        let path = dir.join("node.toml");
        config.write_private(&path).unwrap();
        let exe = std::env::current_exe().unwrap();
        let log = std::fs::File::create(dir.join("node.log")).unwrap();
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n {CHILD_OPEN_FILES} && exec \"$0\" --exact hostile_child_node --nocapture --test-threads=1"
            ))
            .arg(exe)
            .env(CHILD_ENV, &path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the child node");
        let node = ChildNode {
            child,
            peer,
            client,
            admin,
        };
        // Ready once a write is answered.
        let kv = eventually(Duration::from_secs(20), "child client endpoint", || async {
            KvClient::connect(node.client, KvClientOptions::default())
                .await
                .ok()
        })
        .await;
        execute_ok(&kv, req(1, 0, write("ready", 1))).await;
        node
    }

    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the child's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("a VmRSS line")
            * 1024
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A fresh client's write and read, and a fresh admin connection's status, each
    /// timed; panics if either is not answered within [`ANSWER_WITHIN`].
    async fn real_users_are_answered(&self, seq: u64) -> (Duration, Duration, NodeStatus) {
        let started = Instant::now();
        let served = tokio::time::timeout(ANSWER_WITHIN, async {
            let options = KvClientOptions {
                max_attempts: 1,
                ..KvClientOptions::default()
            };
            let kv = KvClient::connect(self.client, options)
                .await
                .expect("connect");
            let w = kv
                .execute(req(2, seq, write("k", seq as i64)))
                .await
                .expect("write");
            assert_eq!(w.result, Ok(OpOutput::Done));
            let r = kv.execute(req(2, seq + 1, read("k"))).await.expect("read");
            assert_eq!(r.result, Ok(OpOutput::Read(Some(seq as i64))));
        })
        .await;
        let client_latency = started.elapsed();
        assert!(
            served.is_ok(),
            "a real client was not answered within {ANSWER_WITHIN:?}"
        );
        let started = Instant::now();
        let status = tokio::time::timeout(ANSWER_WITHIN, async {
            let admin = AdminClient::connect(self.admin, TOKEN, ANSWER_WITHIN)
                .await
                .expect("admin connect");
            admin.status().await.expect("admin status")
        })
        .await
        .unwrap_or_else(|_| panic!("the admin endpoint was not answered within {ANSWER_WITHIN:?}"));
        (client_latency, started.elapsed(), status)
    }
}

/// Opens up to `n` TCP connections to `addr` within `budget`, and keeps them idle.
async fn idle_connections(addr: SocketAddr, n: usize, budget: Duration) -> Vec<TcpStream> {
    let deadline = Instant::now() + budget;
    let mut conns = Vec::with_capacity(n);
    while conns.len() < n && Instant::now() < deadline {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
        {
            conns.push(s);
        }
    }
    conns
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_peer_connections_neither_exhaust_files_nor_lock_out_users() {
    let _one = ONE_ATTACK_AT_A_TIME.lock().await;
    bounded(TEST_LIMIT, "idle peer connections", async {
        let dir = tempfile::tempdir().unwrap();
        let mut node = ChildNode::start(dir.path()).await;
        let before = node.rss_bytes();
        let conns = idle_connections(node.peer, 3_000, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (client, admin, status) = node.real_users_are_answered(10).await;
        let after = node.rss_bytes();
        let peer = status.connections.peer.expect("tarpc peer port stats");
        println!(
            "idle peer connections: {} opened; peer port {peer:?}; client answered in {client:?}, admin in {admin:?}; RSS {:.1} MiB -> {:.1} MiB",
            conns.len(),
            mib(before),
            mib(after)
        );
        assert!(conns.len() >= 2_500, "only {} connections opened", conns.len());
        assert!(peer.open <= 256, "{peer:?}");
        assert!(peer.evicted_at_cap > 0, "{peer:?}");
        assert!(after < before + (64 << 20), "RSS grew {:.1} MiB", mib(after - before));
        assert!(node.alive());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_client_connections_lock_out_neither_clients_nor_admin() {
    let _one = ONE_ATTACK_AT_A_TIME.lock().await;
    bounded(TEST_LIMIT, "idle client connections", async {
        let dir = tempfile::tempdir().unwrap();
        let mut node = ChildNode::start(dir.path()).await;
        let before = node.rss_bytes();
        let conns = idle_connections(node.client, 4_200, Duration::from_secs(30)).await;
        // And the admin port's own small cap, flooded too.
        let admin_conns = idle_connections(node.admin, 200, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (client, admin, status) = node.real_users_are_answered(20).await;
        let after = node.rss_bytes();
        let c = status.connections.client.expect("client endpoint stats");
        let a = status.connections.admin.expect("admin endpoint stats");
        println!(
            "idle client connections: {} + {} admin opened; client endpoint {c:?}; admin endpoint {a:?}; client answered in {client:?}, admin in {admin:?}; RSS {:.1} MiB -> {:.1} MiB",
            conns.len(),
            admin_conns.len(),
            mib(before),
            mib(after)
        );
        assert!(conns.len() >= 4_000, "only {} connections opened", conns.len());
        assert!(c.open <= 1024 && c.evicted_at_cap > 0, "{c:?}");
        assert!(a.open <= 16 && a.evicted_at_cap > 0, "{a:?}");
        assert!(after < before + (64 << 20), "RSS grew {:.1} MiB", mib(after - before));
        assert!(node.alive());
    })
    .await;
}

/// Sends a length prefix announcing `announced` bytes and then `sent` bytes of it, and
/// keeps the connection open without finishing the frame. Bounded by `budget`.
async fn unfinished_frame(
    addr: SocketAddr,
    announced: u32,
    sent: usize,
    budget: Duration,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = tokio::time::timeout(budget, async {
        s.write_all(&announced.to_be_bytes()).await?;
        let chunk = vec![0x42u8; 256 << 10];
        let mut left = sent;
        while left > 0 {
            let n = left.min(chunk.len());
            s.write_all(&chunk[..n]).await?;
            left -= n;
        }
        s.flush().await
    })
    .await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_holding_large_unfinished_frames_are_bounded() {
    let _one = ONE_ATTACK_AT_A_TIME.lock().await;
    bounded(TEST_LIMIT, "unfinished frames", async {
        let dir = tempfile::tempdir().unwrap();
        let mut node = ChildNode::start(dir.path()).await;
        let before = node.rss_bytes();
        let budget = Duration::from_secs(5);
        // The attack: 40 connections, each 15 MiB into a frame announced at
        // 15 MiB + 1 KiB; then 40 more just under the 1 MiB request limit, which only the
        // endpoint's total bound stops; and the same against the peer port.
        let mut tasks = Vec::new();
        for i in 0..120usize {
            let (addr, announced, sent) = match i / 40 {
                0 => (node.client, (15 << 20) + 1024, 15 << 20),
                1 => (node.client, (1 << 20) - 64, (1 << 20) - 1024),
                _ => (node.peer, (1 << 20), (1 << 20) - 1024),
            };
            tasks.push(tokio::spawn(unfinished_frame(addr, announced, sent, budget)));
        }
        let mut held = Vec::new();
        for t in tasks {
            held.push(t.await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = node.rss_bytes();
        let (client, admin, status) = node.real_users_are_answered(30).await;
        let c = status.connections.client.expect("client endpoint stats");
        let p = status.connections.peer.expect("peer port stats");
        println!(
            "unfinished frames: client endpoint {c:?}; peer port {p:?}; client answered in {client:?}, admin in {admin:?}; RSS {:.1} MiB -> {:.1} MiB",
            mib(before),
            mib(after)
        );
        assert!(c.closed_oversize_frame >= 40, "{c:?}");
        assert!(c.closed_buffer_limit > 0, "{c:?}");
        assert!(p.closed_buffer_limit > 0, "{p:?}");
        // client 32 MiB + peer 32 MiB of buffer bounds, plus the allocator's slack.
        assert!(after < before + (128 << 20), "RSS grew {:.1} MiB", mib(after - before));
        assert!(node.alive());
        drop(held);
    })
    .await;
}

/// A raw `execute` request whose deadline is `u64::MAX` seconds, as a hostile client
/// writes it: postcard of tarpc's `ClientMessage::Request` with the deadline as the
/// duration it is on the wire, behind a 4-byte length prefix.
fn request_with_max_deadline(id: u64, req: ClientRequest) -> Vec<u8> {
    #[derive(serde::Serialize)]
    enum HostileMessage {
        Request {
            deadline: Duration,
            trace_context: tarpc::trace::Context,
            id: u64,
            message: kvlab_server::client::KvServiceRequest,
        },
    }
    let body = postcard::to_allocvec(&HostileMessage::Request {
        deadline: Duration::new(u64::MAX, 999_999_999),
        trace_context: tarpc::trace::Context::default(),
        id,
        message: kvlab_server::client::KvServiceRequest::Execute { req },
    })
    .unwrap();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_u64_max_deadline_is_clamped_and_answered() {
    let _one = ONE_ATTACK_AT_A_TIME.lock().await;
    bounded(TEST_LIMIT, "u64::MAX deadline", async {
        let dir = tempfile::tempdir().unwrap();
        let mut node = ChildNode::start(dir.path()).await;
        let mut s = TcpStream::connect(node.client).await.unwrap();
        let started = Instant::now();
        s.write_all(&request_with_max_deadline(7, req(3, 1, write("d", 5))))
            .await
            .unwrap();
        let answer = tokio::time::timeout(ANSWER_WITHIN, async {
            let mut len = [0u8; 4];
            s.read_exact(&mut len).await?;
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            s.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        })
        .await
        .expect("answered in time")
        .expect("an answer, not a closed connection");
        let resp: tarpc::Response<kvlab_server::client::KvServiceResponse> =
            postcard::from_bytes(&answer).unwrap();
        assert_eq!(resp.request_id, 7);
        match resp.message {
            Ok(kvlab_server::client::KvServiceResponse::Execute(r)) => {
                assert_eq!(r.result, Ok(OpOutput::Done))
            }
            other => panic!("{other:?}"),
        }
        let (_, _, status) = node.real_users_are_answered(40).await;
        let c = status.connections.client.expect("client endpoint stats");
        println!(
            "u64::MAX deadline answered in {:?}; client endpoint {c:?}",
            started.elapsed()
        );
        assert_eq!(c.deadlines_clamped, 1, "{c:?}");
        assert!(node.alive());
    })
    .await;
}

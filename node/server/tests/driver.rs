//! The driver's ordering contract, checked with a scripted protocol, a store and a
//! transport that write into one shared log: persist before sync, sends and replies after
//! a Sync leave only once the sync returned, a failed fsync stops the node, a request the
//! protocol never answers comes back `Indeterminate`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvlab_server::{DurableStore, NodeParts, NodeServer, ServerError, ServerOptions};
use kvlab_storage::{StorageError, WalStats};
use kvlab_transport::{
    DeliveryOrder, Envelope, FaultRules, Transport, TransportError, TransportStats,
};
use kvlab_types::{
    ClientError, ClientRequest, Cx, KvOp, NodeId, OpOutput, Out, Protocol, Recovery, RequestId,
    TimerId,
};

type Log = Arc<Mutex<Vec<String>>>;

fn note(log: &Log, what: impl Into<String>) {
    log.lock().unwrap().push(what.into());
}

/// Writes: `Send(pre)`, `Persist`, `Sync`, `Send(post)`, `Reply`. Reads: `Reply` at once.
/// Deletes: never answered. Cas: persists to groups 0 and 1, `Sync`, `Reply`. Every
/// client step notes `step <seq>` in the log first. Client 7's writes instead persist,
/// sync and send message 7 to this node itself, and are answered when it arrives; the
/// batch they were taken in notes `end batch`.
#[derive(Debug)]
struct Scripted {
    log: Option<Log>,
    /// Client 7's request waiting for the message to itself.
    to_answer: Option<RequestId>,
}

impl Protocol for Scripted {
    type Msg = u8;
    /// Where client steps are noted (`None`: nowhere).
    type Config = Option<Log>;
    fn boot(_: &mut Cx<'_>, log: &Option<Log>, _: &[NodeId], _: Recovery, _: &mut Out<u8>) -> Self {
        Scripted {
            log: log.clone(),
            to_answer: None,
        }
    }
    fn on_msg(&mut self, _: &mut Cx<'_>, from: NodeId, msg: u8, out: &mut Out<u8>) {
        if let Some(log) = &self.log {
            note(log, format!("msg {msg} from {from}"));
        }
        if let Some(id) = self.to_answer.take() {
            out.reply(id, Ok(OpOutput::Done));
        }
    }
    fn end_batch(&mut self, cx: &mut Cx<'_>, _: &mut Out<u8>) {
        assert!(cx.batched);
        if let (Some(log), Some(_)) = (&self.log, self.to_answer) {
            note(log, "end batch");
        }
    }
    fn on_timer(&mut self, _: &mut Cx<'_>, _: TimerId, _: &mut Out<u8>) {}
    fn on_client(&mut self, cx: &mut Cx<'_>, req: ClientRequest, out: &mut Out<u8>) {
        if let Some(log) = &self.log {
            note(log, format!("step {}", req.id.seq));
        }
        match req.op {
            KvOp::Write { .. } if req.id.client == 7 => {
                assert!(cx.batched, "the driver steps with Cx::batched");
                out.persist(kvlab_types::GroupId::DEFAULT, b"record".to_vec());
                out.sync();
                out.send(NodeId(1), 7);
                self.to_answer = Some(req.id);
            }
            KvOp::Cas { .. } => {
                out.persist(kvlab_types::GroupId(0), b"a".to_vec());
                out.persist(kvlab_types::GroupId(1), b"b".to_vec());
                out.sync();
                out.reply(req.id, Ok(OpOutput::Done));
            }
            KvOp::Write { .. } => {
                out.send(NodeId(2), 1);
                out.persist(kvlab_types::GroupId::DEFAULT, b"record".to_vec());
                out.sync();
                out.send(NodeId(2), 2);
                out.reply(req.id, Ok(OpOutput::Done));
            }
            KvOp::Read { .. } => out.reply(req.id, Ok(OpOutput::Read(None))),
            _ => {}
        }
    }
}

impl kvlab_server::Inspect for Scripted {}

struct LoggingStore {
    log: Log,
    fail_sync: bool,
    /// Noted after each entry (`""` for a single store).
    name: &'static str,
}

impl DurableStore for LoggingStore {
    fn persist(&mut self, group: kvlab_types::GroupId, _: &[u8]) -> Result<(), StorageError> {
        if self.name.is_empty() {
            note(&self.log, "persist");
        } else {
            note(&self.log, format!("persist g{}{}", group.0, self.name));
        }
        Ok(())
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        note(&self.log, format!("sync begins{}", self.name));
        // A slow disk: anything that does not wait for the sync would overtake it here.
        std::thread::sleep(Duration::from_millis(50));
        if self.fail_sync {
            note(&self.log, format!("sync fails{}", self.name));
            return Err(StorageError::Io {
                path: "/fake/wal".into(),
                op: "fdatasync",
                source: std::io::Error::other("injected EIO"),
            });
        }
        note(&self.log, format!("sync returns{}", self.name));
        Ok(())
    }
    fn save_snapshot(&mut self, _: kvlab_types::GroupId, _: &[u8]) -> Result<(), StorageError> {
        note(&self.log, "snapshot");
        Ok(())
    }
    fn wal_stats(&self) -> WalStats {
        WalStats::default()
    }
}

struct LoggingTransport {
    log: Log,
    faults: FaultRules,
}

impl Transport for LoggingTransport {
    type Msg = u8;
    fn local_id(&self) -> NodeId {
        NodeId(1)
    }
    fn send(&self, to: NodeId, msg: u8) -> Result<(), TransportError> {
        note(&self.log, format!("send {msg} to {to}"));
        Ok(())
    }
    async fn recv(&self) -> Result<Envelope<u8>, TransportError> {
        std::future::pending().await
    }
    fn stats(&self) -> TransportStats {
        TransportStats::default()
    }
    fn fault_rules(&self) -> &FaultRules {
        &self.faults
    }
    fn delivery_order(&self) -> DeliveryOrder {
        DeliveryOrder::PerPeerFifo
    }
    async fn shutdown(&self) {
        note(&self.log, "transport shut down");
    }
}

fn server(
    log: &Log,
    fail_sync: bool,
    timeout_ms: u64,
) -> (
    NodeServer<Scripted, LoggingTransport, LoggingStore>,
    kvlab_server::NodeHandle,
) {
    let store = LoggingStore {
        log: log.clone(),
        fail_sync,
        name: "",
    };
    server_with(log, vec![store], timeout_ms, false)
}

fn server_with(
    log: &Log,
    stores: Vec<LoggingStore>,
    timeout_ms: u64,
    note_steps: bool,
) -> (
    NodeServer<Scripted, LoggingTransport, LoggingStore>,
    kvlab_server::NodeHandle,
) {
    NodeServer::new(
        &note_steps.then(|| log.clone()),
        NodeParts {
            id: NodeId(1),
            members: vec![NodeId(1), NodeId(2)],
            system: "scripted".into(),
            seed: 1,
            transport: Arc::new(LoggingTransport {
                log: log.clone(),
                faults: FaultRules::new(1),
            }),
            stores,
            recovery: Recovery::default(),
            options: ServerOptions {
                client_request_timeout_ms: timeout_ms,
                ..ServerOptions::default()
            },
            events_file: None,
        },
    )
}

/// Runs `server`, sends it `req`, notes "reply received" when the answer came, and stops
/// it gracefully.
async fn serve_one(
    server: NodeServer<Scripted, LoggingTransport, LoggingStore>,
    handle: &kvlab_server::NodeHandle,
    req: ClientRequest,
    log: &Log,
) -> kvlab_types::ClientResponse {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stop_rx.await;
    }));
    let resp = tokio::time::timeout(Duration::from_secs(5), handle.execute(req))
        .await
        .unwrap();
    note(log, "reply received");
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    resp
}

fn write_req(seq: u64) -> ClientRequest {
    ClientRequest {
        id: RequestId { client: 9, seq },
        op: KvOp::Write {
            key: "k".into(),
            value: 1,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_and_replies_after_a_sync_leave_only_once_the_sync_returned() {
    let log: Log = Arc::default();
    let (server, handle) = server(&log, false, 5_000);
    let resp = serve_one(server, &handle, write_req(1), &log).await;
    assert_eq!(resp.result, Ok(OpOutput::Done));
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log[..6],
        [
            "send 1 to n2",
            "persist",
            "sync begins",
            "sync returns",
            "send 2 to n2",
            "reply received",
        ],
        "{log:?}"
    );
    // A graceful stop syncs once more and closes the transport.
    assert_eq!(
        log[6..],
        ["sync begins", "sync returns", "transport shut down"],
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_the_node_and_nothing_after_it_is_sent() {
    let log: Log = Arc::default();
    let (server, handle) = server(&log, true, 5_000);
    let task = tokio::spawn(server.run(std::future::pending()));
    let resp = tokio::time::timeout(Duration::from_secs(5), handle.execute(write_req(1)))
        .await
        .unwrap();
    // The node died with the request inside: the client cannot know the outcome.
    assert!(
        matches!(resp.result, Err(ClientError::Indeterminate { .. })),
        "{resp:?}"
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    match ended {
        Err(ServerError::Storage { op: "sync", .. }) => {}
        other => panic!("expected a storage error during sync, got {other:?}"),
    }
    let log = log.lock().unwrap().clone();
    assert!(!log.contains(&"send 2 to n2".to_string()), "{log:?}");
    assert_eq!(log.last().map(String::as_str), Some("transport shut down"));
    // Later requests are refused: the node is not running.
    let resp = handle.execute(write_req(2)).await;
    assert!(
        matches!(resp.result, Err(ClientError::Unavailable { .. })),
        "{resp:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_protocol_never_answers_is_indeterminate_after_the_timeout() {
    let log: Log = Arc::default();
    let (server, handle) = server(&log, false, 100);
    let task = tokio::spawn(server.run(std::future::pending()));
    let delete = ClientRequest {
        id: RequestId { client: 9, seq: 7 },
        op: KvOp::Delete { key: "k".into() },
    };
    let resp = tokio::time::timeout(Duration::from_secs(5), handle.execute(delete))
        .await
        .unwrap();
    assert!(
        matches!(resp.result, Err(ClientError::Indeterminate { .. })),
        "{resp:?}"
    );
    // Reads are answered at once, and the driver is still alive.
    let read = ClientRequest {
        id: RequestId { client: 9, seq: 8 },
        op: KvOp::Read { key: "k".into() },
    };
    assert_eq!(handle.execute(read).await.result, Ok(OpOutput::Read(None)));
    let status = handle.status().await.unwrap();
    assert_eq!(status.driver.orphan_replies, 0);
    assert_eq!(status.client_requests_waiting, 1, "the unanswered delete");
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

fn store(log: &Log, name: &'static str, fail_sync: bool) -> LoggingStore {
    LoggingStore {
        log: log.clone(),
        fail_sync,
        name,
    }
}

fn req(seq: u64, op: KvOp) -> ClientRequest {
    ClientRequest {
        id: RequestId { client: 9, seq },
        op,
    }
}

fn position(log: &[String], line: &str) -> usize {
    log.iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("no {line:?} in {log:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_steps_the_next_request_while_a_sync_runs_and_holds_its_reply() {
    let log: Log = Arc::default();
    let (server, handle) = server_with(&log, vec![store(&log, "", false)], 5_000, true);
    let task = tokio::spawn(server.run(std::future::pending()));
    let first = tokio::spawn({
        let handle = handle.clone();
        async move { handle.execute(write_req(1)).await }
    });
    // Wait until the first write's sync is on the disk, then send a second write.
    tokio::time::timeout(Duration::from_secs(5), async {
        while !log.lock().unwrap().iter().any(|l| l == "sync begins") {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
    let second = handle.execute(write_req(2)).await;
    note(&log, "reply 2 received");
    assert_eq!(first.await.unwrap().result, Ok(OpOutput::Done));
    assert_eq!(second.result, Ok(OpOutput::Done));
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let log = log.lock().unwrap().clone();
    let first_sync_returns = position(&log, "sync returns");
    // Pipelining: the second request was stepped while the first sync ran ...
    assert!(position(&log, "step 2") < first_sync_returns, "{log:?}");
    // ... and its record went into the next batch, whose sync its reply waited for.
    let second_sync = first_sync_returns
        + 1
        + log[first_sync_returns + 1..]
            .iter()
            .position(|l| l == "sync returns")
            .unwrap_or_else(|| panic!("one sync per batch: {log:?}"));
    assert!(second_sync < position(&log, "reply 2 received"), "{log:?}");
    assert_eq!(
        log.iter().filter(|l| *l == "send 2 to n2").count(),
        2,
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_wal_shards_each_group_goes_to_its_shard_and_a_reply_waits_for_both() {
    let log: Log = Arc::default();
    let stores = vec![store(&log, " [0]", false), store(&log, " [1]", false)];
    let (server, handle) = server_with(&log, stores, 5_000, false);
    let task = tokio::spawn(server.run(std::future::pending()));
    let cas = req(
        1,
        KvOp::Cas {
            key: "k".into(),
            expected: None,
            new: 1,
        },
    );
    let resp = tokio::time::timeout(Duration::from_secs(5), handle.execute(cas))
        .await
        .unwrap();
    note(&log, "reply received");
    assert_eq!(resp.result, Ok(OpOutput::Done));
    let status = handle.status().await.unwrap();
    assert_eq!(status.storage.wal_shards, 2);
    handle.shutdown();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let log = log.lock().unwrap().clone();
    let reply = position(&log, "reply received");
    assert!(position(&log, "persist g0 [0]") < position(&log, "sync begins [0]"));
    assert!(position(&log, "persist g1 [1]") < position(&log, "sync begins [1]"));
    assert!(position(&log, "sync returns [0]") < reply, "{log:?}");
    assert!(position(&log, "sync returns [1]") < reply, "{log:?}");
    assert!(
        !log.iter()
            .any(|l| l == "persist g1 [0]" || l == "persist g0 [1]")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_on_one_shard_stops_the_node_before_the_reply() {
    let log: Log = Arc::default();
    let stores = vec![store(&log, " [0]", false), store(&log, " [1]", true)];
    let (server, handle) = server_with(&log, stores, 5_000, false);
    let task = tokio::spawn(server.run(std::future::pending()));
    let cas = req(
        1,
        KvOp::Cas {
            key: "k".into(),
            expected: None,
            new: 1,
        },
    );
    let resp = tokio::time::timeout(Duration::from_secs(5), handle.execute(cas))
        .await
        .unwrap();
    assert!(
        matches!(resp.result, Err(ClientError::Indeterminate { .. })),
        "{resp:?}"
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(ended, Err(ServerError::Storage { op: "sync", .. })),
        "{ended:?}"
    );
}

/// A message a node sends itself never touches the transport (no encoding, no socket):
/// the driver delivers it from a local queue, still only after the sync before it
/// returned; and the batch the step was taken in ends with `Protocol::end_batch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_itself_is_delivered_locally_after_its_sync() {
    let log: Log = Arc::default();
    let (server, handle) = server_with(&log, vec![store(&log, "", false)], 5_000, true);
    let mut req = write_req(1);
    req.id.client = 7;
    let resp = serve_one(server, &handle, req, &log).await;
    assert_eq!(resp.result, Ok(OpOutput::Done));
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log[..6],
        [
            "step 1",
            "end batch",
            "persist",
            "sync begins",
            "sync returns",
            "msg 7 from n1",
        ],
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.starts_with("send ")), "{log:?}");
}

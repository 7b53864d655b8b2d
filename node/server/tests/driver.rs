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
/// Deletes: never answered.
#[derive(Debug)]
struct Scripted;

impl Protocol for Scripted {
    type Msg = u8;
    type Config = ();
    fn boot(_: &mut Cx<'_>, _: &(), _: &[NodeId], _: Recovery, _: &mut Out<u8>) -> Self {
        Scripted
    }
    fn on_msg(&mut self, _: &mut Cx<'_>, _: NodeId, _: u8, _: &mut Out<u8>) {}
    fn on_timer(&mut self, _: &mut Cx<'_>, _: TimerId, _: &mut Out<u8>) {}
    fn on_client(&mut self, _: &mut Cx<'_>, req: ClientRequest, out: &mut Out<u8>) {
        match req.op {
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
}

impl DurableStore for LoggingStore {
    fn persist(&mut self, _: kvlab_types::GroupId, _: &[u8]) -> Result<(), StorageError> {
        note(&self.log, "persist");
        Ok(())
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        note(&self.log, "sync begins");
        // A slow disk: anything that does not wait for the sync would overtake it here.
        std::thread::sleep(Duration::from_millis(50));
        if self.fail_sync {
            note(&self.log, "sync fails");
            return Err(StorageError::Io {
                path: "/fake/wal".into(),
                op: "fdatasync",
                source: std::io::Error::other("injected EIO"),
            });
        }
        note(&self.log, "sync returns");
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
    NodeServer::new(
        &(),
        NodeParts {
            id: NodeId(1),
            members: vec![NodeId(1), NodeId(2)],
            system: "scripted".into(),
            seed: 1,
            transport: Arc::new(LoggingTransport {
                log: log.clone(),
                faults: FaultRules::new(1),
            }),
            store: LoggingStore {
                log: log.clone(),
                fail_sync,
            },
            recovery: Recovery::default(),
            options: ServerOptions {
                client_request_timeout_ms: timeout_ms,
                ..ServerOptions::default()
            },
            events_file: None,
        },
    )
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
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stop_rx.await;
    }));
    let resp = tokio::time::timeout(Duration::from_secs(5), handle.execute(write_req(1)))
        .await
        .unwrap();
    note(&log, "reply received");
    assert_eq!(resp.result, Ok(OpOutput::Done));
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
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

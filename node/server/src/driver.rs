//! [`NodeServer`]: the async driver that runs one sans-IO [`Protocol`] on tokio.
//!
//! One task owns the protocol value, its durable store and its transport, and reacts to
//! five inputs in a fixed priority (`select!` with `biased;`): shutdown, admin commands,
//! due timers, peer messages, client requests (with one waiting client request taken
//! after every peer message, so a stream of peer traffic cannot starve clients). Each
//! input is one protocol step; the step's effects run in order:
//!
//! - `Persist` queues the record on its group's WAL shard (not yet durable);
//! - `Sync` sets a barrier at everything queued so far; while a barrier is not durable,
//!   every later `Send` and `Reply` is **held**, in order — except a `Send` that comes
//!   before any `Sync` of its step: it depends on nothing unsynced (the step order
//!   refuses a send after an unsynced persist) and leaves at once (a parallel Raft
//!   leader's AppendEntries, thesis §10.2.1);
//! - `SaveSnapshot` first writes and syncs everything queued, then replaces the snapshot
//!   durably;
//! - `SetTimer` / `CancelTimer` re-arm or disarm the timer (a new deadline replaces the
//!   old one);
//! - `Event` goes to tracing and to the event log.
//!
//! **Pipelined group commit** ([`crate::commit`]). The driver takes the inputs that are
//! already ready (at most `max_steps_per_sync` steps), ends the batch with
//! [`Protocol::end_batch`] (the steps run with [`Cx::batched`]: kvlab's Raft nodes
//! propose a batch's client requests in their steps and drain Raft's `Ready` once, at
//! the end, so the batch shares one AppendEntries per follower), then starts one writer per idle
//! WAL shard (`server.workers` shards, groups by `group % workers`), which appends that
//! shard's queued records and fsyncs them on a blocking thread. The driver does not wait:
//! it steps the next inputs while the disk works, and their records form the next batch.
//! When the writers that a barrier needs have returned, the sends and replies held
//! behind it leave, in order. Nothing a step said after a `Sync` leaves the node before
//! everything persisted up to that `Sync` is durable. A failed append, fsync or snapshot
//! stops the node with [`ServerError::Storage`]: it never continues after a failed
//! fsync.
//!
//! **Where this differs from the design note (wave 2, §4.2).** Stage 1 (the node keeps
//! stepping while a batch syncs) is this. Stage 2 runs each shard's groups on a thread of
//! their own (a `NodeCore` and W `GroupShard`s talking by messages); here the protocol
//! steps on one thread and the shards are the logs and their writers, each shard with its
//! own commit point when the protocol scopes its effects (`Effect::Scope`, as the
//! composed node does). Measured on this 2-core machine with three node processes and
//! 64 writers (`configs/ring-workers.toml`), the CPU is the limit (85 % busy): the
//! pipelined commit writes as fast as the blocking one did (0.90–1.02×), and W = 2 gives
//! 0.75–0.95× of W = 1, spending 1.7× the fsyncs on the same writes.
//!
//! **Graceful stop.** The driver writes what is queued, releases what was held and
//! closes every shard's store ([`DurableStore::close`]): a last sync that also records
//! where the log ends, so that the next start refuses any loss from it, however small,
//! rather than taking it for a torn tail. A crash (the process killed) skips this, and
//! recovery then bounds what it may cut by `max_unsynced_bytes`.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kvlab_storage::{NodeStorage, StorageError, Vfs, WalStats};
use kvlab_transport::{FaultRules, Transport, TransportError, TransportStats};
use kvlab_types::{
    ClientError, ClientRequest, ClientResponse, Cx, Disposition, Effect, GroupId, NodeEvent,
    NodeId, Out, Protocol, Recovery, RequestId, Rng, StepOrder, Time, TimerId, derive_seed,
    seeded_rng,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use crate::ServerError;
use crate::commit::{Commit, Held, IoDone};
use crate::config::ServerOptions;
use kvlab_node::inspect::{Inspect, ProtocolStatus};

/// The most client requests the driver keeps waiting for the protocol's reply; beyond
/// it new requests are refused with `Unavailable` (they surely did not take effect).
pub const MAX_WAITING_CLIENT_REQUESTS: usize = 65_536;
/// Admin commands queued for the driver at most.
pub const ADMIN_QUEUE_LEN: usize = 64;

/// The durable state a driver writes through: the storage effects of [`Effect`]. The
/// server uses [`NodeStorage`]; tests substitute a store that records what happened when.
pub trait DurableStore: Send + 'static {
    /// Appends a record of `group` (`Effect::Persist`); durable only after a later `sync`.
    fn persist(&mut self, group: GroupId, record: &[u8]) -> Result<(), StorageError>;
    /// Makes every record appended so far durable (`Effect::Sync`). Called on a blocking
    /// thread.
    fn sync(&mut self) -> Result<(), StorageError>;
    /// Durably replaces `group`'s snapshot (`Effect::SaveSnapshot`).
    fn save_snapshot(&mut self, group: GroupId, data: &[u8]) -> Result<(), StorageError>;
    /// The log's counters.
    fn wal_stats(&self) -> WalStats;
    /// A graceful stop: makes everything durable and, for [`NodeStorage`], records where
    /// the log ends, so that the next open refuses any shortfall from it instead of
    /// taking it for a torn tail. The store takes no more writes afterwards. Called on
    /// a blocking thread.
    fn close(&mut self) -> Result<(), StorageError> {
        self.sync()
    }
}

impl<V: Vfs + Send + 'static> DurableStore for NodeStorage<V>
where
    NodeStorage<V>: Send,
{
    fn persist(&mut self, group: GroupId, record: &[u8]) -> Result<(), StorageError> {
        NodeStorage::persist(self, group, record).map(|_| ())
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        NodeStorage::sync(self)
    }
    fn save_snapshot(&mut self, group: GroupId, data: &[u8]) -> Result<(), StorageError> {
        NodeStorage::save_snapshot(self, group, data)
    }
    fn wal_stats(&self) -> WalStats {
        NodeStorage::wal_stats(self).clone()
    }
    fn close(&mut self) -> Result<(), StorageError> {
        NodeStorage::close(self)
    }
}

/// One protocol event as the node logged it: a line of the node's `events.jsonl`,
/// `{"time_ns":…,"node":1,"kind":"leader_elected","group":0,"term":4}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// The node's clock (nanoseconds since the server started).
    pub time_ns: u64,
    /// The node.
    pub node: NodeId,
    /// The event, typed.
    #[serde(flatten)]
    pub event: NodeEvent,
}

/// The driver's own counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverStats {
    /// Protocol steps run (boot, messages, timers, client requests).
    pub steps: u64,
    /// Peer messages handed to the protocol.
    pub messages_in: u64,
    /// Sends the protocol asked for.
    pub messages_out: u64,
    /// Of those, sends that came before any `Sync` of their step and so left at once,
    /// without waiting for earlier steps' barriers (a parallel Raft leader's appends).
    pub early_sends: u64,
    /// Sends the transport refused at once (unknown peer, full queue, oversize); also
    /// counted in the transport's stats.
    pub send_errors: u64,
    /// Timers fired.
    pub timers_fired: u64,
    /// Client requests handed to the protocol.
    pub client_requests: u64,
    /// Client requests refused before the protocol saw them (too many waiting).
    pub client_requests_refused: u64,
    /// Replies with no client waiting any more (it timed out or went away).
    pub orphan_replies: u64,
    /// Records appended.
    pub persists: u64,
    /// `Effect::Sync`s the protocol emitted.
    pub syncs_requested: u64,
    /// fsyncs the driver issued (one per group commit).
    pub syncs_done: u64,
    /// The slowest group-commit sync, in microseconds.
    pub sync_us_max: u64,
    /// All group-commit syncs together, in microseconds.
    pub sync_us_total: u64,
    /// Snapshots saved.
    pub snapshots_saved: u64,
}

/// Storage figures for the admin endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageStatus {
    /// The logs' counters since open, summed over the WAL shards.
    pub wal: WalStats,
    /// WAL shards (`server.workers`), each with its own log and writer.
    #[serde(default)]
    pub wal_shards: usize,
    /// Records recovered at boot.
    pub recovered_records: usize,
    /// Whether a snapshot was recovered at boot.
    pub recovered_snapshot: bool,
}

/// Everything `status()` reports about a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node.
    pub node: NodeId,
    /// The system it runs (`raft`, `single`, …), as the caller named it.
    pub system: String,
    /// Time since the server started.
    pub uptime_ms: u64,
    /// What the protocol says about itself.
    pub protocol: ProtocolStatus,
    /// The transport's counters.
    pub transport: TransportStats,
    /// The storage's counters.
    pub storage: StorageStatus,
    /// The driver's counters.
    pub driver: DriverStats,
    /// Client requests waiting for the protocol's reply now.
    pub client_requests_waiting: usize,
    /// Timers armed now.
    pub timers_armed: usize,
    /// The most recent protocol events, oldest first.
    pub recent_events: Vec<EventRecord>,
    /// What the guards of the node's listening ports did (filled in by the admin
    /// endpoint; empty in process).
    #[serde(default)]
    pub connections: ConnectionsStatus,
}

/// The guard counters of a node's listening ports: connections open, evicted at the cap,
/// closed idle or at the buffer bound, deadlines clamped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionsStatus {
    /// The tarpc peer port (`None` over UDP or in process).
    pub peer: Option<kvlab_transport_tarpc::guard::ConnectionStats>,
    /// The client endpoint.
    pub client: Option<kvlab_transport_tarpc::guard::ConnectionStats>,
    /// The admin endpoint.
    pub admin: Option<kvlab_transport_tarpc::guard::ConnectionStats>,
}

/// A command for the driver from its own process (the admin endpoint, the mem cluster):
/// status, pause, resume, shutdown. Not to be confused with [`kvlab_types::AdminCommand`],
/// an operator's command to the protocol.
#[derive(Debug)]
pub enum DriverCommand {
    /// Report the node's status.
    Status(oneshot::Sender<NodeStatus>),
    /// Stop gracefully (close the store, close the transport).
    Shutdown,
    /// Stop stepping until [`DriverCommand::Resume`]: the in-process stand-in for
    /// `SIGSTOP`. Peer messages and client requests queue (or are dropped where their
    /// queues are full), timers come due but fire only on resume, status is not answered.
    /// The sender, if any, is answered once the node has stopped stepping: anything sent
    /// to the node after that waits for the resume, as with a stopped process.
    Pause(Option<oneshot::Sender<()>>),
    /// Resume a paused node (`SIGCONT`); overdue timers fire at once. Ignored when the
    /// node is not paused.
    Resume,
}

/// A client request on its way to the driver, with where to send the answer.
#[derive(Debug)]
pub struct ClientCall {
    /// The request.
    pub req: ClientRequest,
    /// The answer goes here.
    pub reply: oneshot::Sender<ClientResponse>,
}

/// A cloneable handle on a running (or about to run) node: submit client requests, ask
/// for status, change fault rules, stop it. In-process callers (tests, the `mem`
/// cluster) use it directly; the client and admin endpoints are built on it.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    id: NodeId,
    client_tx: mpsc::Sender<ClientCall>,
    admin_tx: mpsc::Sender<DriverCommand>,
    faults: FaultRules,
    request_timeout: Duration,
}

impl NodeHandle {
    /// The node.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The node's transport fault rules (shared: changes apply to the next message).
    pub fn fault_rules(&self) -> &FaultRules {
        &self.faults
    }

    /// How long [`NodeHandle::execute`] waits for the protocol's answer.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Submits a request and waits for the answer, at most the configured client request
    /// timeout. A full queue or a stopped node is `Unavailable` (the request surely did
    /// not take effect); a timeout, or a node that stopped with the request inside, is
    /// `Indeterminate`.
    pub async fn execute(&self, req: ClientRequest) -> ClientResponse {
        self.execute_within(req, self.request_timeout).await
    }

    /// [`NodeHandle::execute`] with an explicit timeout.
    pub async fn execute_within(&self, req: ClientRequest, timeout: Duration) -> ClientResponse {
        let id = req.id;
        let (tx, rx) = oneshot::channel();
        let refused = |reason: &str| ClientResponse {
            id,
            result: Err(ClientError::Unavailable {
                reason: format!("node {}: {reason}", self.id),
                hint: None,
            }),
        };
        match self.client_tx.try_send(ClientCall { req, reply: tx }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return refused("client queue is full"),
            Err(mpsc::error::TrySendError::Closed(_)) => return refused("node is not running"),
        }
        let indeterminate = |reason: String| ClientResponse {
            id,
            result: Err(ClientError::Indeterminate { reason }),
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(_)) => indeterminate(format!("node {} stopped before it answered", self.id)),
            Err(_) => indeterminate(format!(
                "node {} did not answer within {} ms",
                self.id,
                timeout.as_millis()
            )),
        }
    }

    /// The node's status.
    pub async fn status(&self) -> Result<NodeStatus, ServerError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || ServerError::NodeState {
            node: self.id,
            reason: "not running".into(),
        };
        self.admin_tx
            .send(DriverCommand::Status(tx))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    /// Pauses the node like `SIGSTOP` would (see [`DriverCommand::Pause`]) and returns once
    /// it has stopped stepping, so that a request sent afterwards waits for the resume
    /// (the driver polls its inputs one after another, so a pause merely queued could
    /// still lose the race to a request sent after it). A node that is not running is
    /// left alone.
    pub async fn pause(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .admin_tx
            .send(DriverCommand::Pause(Some(tx)))
            .await
            .is_ok()
        {
            // An error: the node stopped instead, which answers nothing either.
            let _ = rx.await;
        }
    }

    /// Resumes a paused node like `SIGCONT` would.
    pub async fn resume(&self) {
        let _ = self.admin_tx.send(DriverCommand::Resume).await;
    }

    /// Asks the node to stop gracefully; returns at once (await the task that runs it to
    /// know when it has stopped). A node that is already stopped is not an error.
    pub fn shutdown(&self) {
        // A full admin queue: the shutdown is retried from a task so it is never lost.
        if let Err(mpsc::error::TrySendError::Full(cmd)) =
            self.admin_tx.try_send(DriverCommand::Shutdown)
        {
            let tx = self.admin_tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(cmd).await;
            });
        }
    }
}

/// Pending timers: re-arming an id replaces its deadline; ties fire in arming order.
#[derive(Debug, Default)]
struct Timers {
    by_deadline: BTreeMap<(Instant, u64), TimerId>,
    by_id: BTreeMap<TimerId, (Instant, u64)>,
    next_seq: u64,
}

impl Timers {
    fn set(&mut self, id: TimerId, deadline: Instant) {
        self.cancel(id);
        let key = (deadline, self.next_seq);
        self.next_seq += 1;
        self.by_deadline.insert(key, id);
        self.by_id.insert(id, key);
    }
    fn cancel(&mut self, id: TimerId) {
        if let Some(key) = self.by_id.remove(&id) {
            self.by_deadline.remove(&key);
        }
    }
    fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.keys().next().map(|(d, _)| *d)
    }
    fn pop_due(&mut self, now: Instant) -> Option<TimerId> {
        let (&key, &id) = self.by_deadline.iter().next()?;
        if key.0 > now {
            return None;
        }
        self.by_deadline.remove(&key);
        self.by_id.remove(&id);
        Some(id)
    }
    fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// Recent events in memory, and optionally appended to a JSONL file.
#[derive(Debug)]
struct EventLog {
    recent: VecDeque<EventRecord>,
    capacity: usize,
    file: Option<std::fs::File>,
}

impl EventLog {
    fn push(&mut self, record: EventRecord) {
        if let Some(f) = &mut self.file {
            let line = serde_json::to_string(&record).unwrap_or_default();
            if let Err(e) = writeln!(f, "{line}") {
                // Events are reports, not state: stop writing them rather than stop the node.
                tracing::warn!(error = %e, "cannot append to events.jsonl; event file disabled");
                self.file = None;
            }
        }
        if self.recent.len() == self.capacity {
            self.recent.pop_front();
        }
        self.recent.push_back(record);
    }
}

/// What woke the driver up.
enum Wake<M> {
    Shutdown,
    Admin(DriverCommand),
    Timers,
    Msg(Result<kvlab_transport::Envelope<M>, TransportError>),
    Client(ClientCall),
    /// A WAL shard's writer returned.
    Io(IoDone),
    /// A message this node sent itself is waiting.
    ToSelf,
    /// Nothing was ready (only when not waiting).
    Idle,
}

/// Whether the loop goes on.
#[derive(Debug)]
enum Flow {
    Continue,
    Stop,
    /// With whom to acknowledge the pause once nothing is stepped any more.
    Pause(Option<oneshot::Sender<()>>),
}

/// Tells a pauser that the node has stopped stepping.
fn acknowledge(ack: Option<oneshot::Sender<()>>) {
    if let Some(tx) = ack {
        let _ = tx.send(());
    }
}

/// Everything a [`NodeServer`] needs besides the protocol's own configuration.
#[derive(Debug)]
pub struct NodeParts<T, S> {
    /// This node.
    pub id: NodeId,
    /// Every member of the cluster, this node included.
    pub members: Vec<NodeId>,
    /// The system's name, for status reports.
    pub system: String,
    /// The run seed; the node's RNG is seeded from it and the node id.
    pub seed: u64,
    /// The peer transport.
    pub transport: Arc<T>,
    /// The durable stores, already opened: one per WAL shard (`server.workers`), in
    /// shard order; group `g` is written to store `g % stores.len()`. At least one.
    pub stores: Vec<S>,
    /// What the store recovered.
    pub recovery: Recovery,
    /// Driver options.
    pub options: ServerOptions,
    /// Where to append `events.jsonl` (`None`: memory only).
    pub events_file: Option<std::path::PathBuf>,
}

/// The async driver of one node. Build it with [`NodeServer::new`] (which boots the
/// protocol and returns a [`NodeHandle`]), then `run` it.
pub struct NodeServer<P, T, S = NodeStorage<kvlab_storage::RealFs>>
where
    P: Protocol,
    T: Transport<Msg = P::Msg>,
{
    id: NodeId,
    system: String,
    protocol: P,
    commit: Commit<S, P::Msg>,
    transport: Arc<T>,
    rng: Rng,
    started: Instant,
    timers: Timers,
    client_rx: mpsc::Receiver<ClientCall>,
    admin_rx: mpsc::Receiver<DriverCommand>,
    waiters: BTreeMap<RequestId, VecDeque<oneshot::Sender<ClientResponse>>>,
    waiting: usize,
    /// Messages the protocol sent to its own node (a Raft leader's `LocalAppended`):
    /// delivered in order from here, without the transport's encoding and socket.
    to_self: VecDeque<P::Msg>,
    out: Out<P::Msg>,
    events: EventLog,
    stats: DriverStats,
    options: ServerOptions,
    recovered_records: usize,
    recovered_snapshot: bool,
    role: Option<&'static str>,
}

impl<P, T, S> std::fmt::Debug for NodeServer<P, T, S>
where
    P: Protocol,
    T: Transport<Msg = P::Msg>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeServer")
            .field("id", &self.id)
            .field("system", &self.system)
            .field("protocol", &self.protocol)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn lock<S>(store: &Mutex<S>) -> MutexGuard<'_, S> {
    // Only the driver and its blocking sync use the store, one at a time; a poisoned lock
    // means a panic inside the store, after which the driver stops anyway.
    store.lock().unwrap_or_else(|p| p.into_inner())
}

impl<P, T, S> NodeServer<P, T, S>
where
    P: Protocol + Inspect + Send + 'static,
    P::Msg: Send,
    T: Transport<Msg = P::Msg>,
    S: DurableStore,
{
    /// Boots the protocol from `parts.recovery` and returns the driver and a handle on
    /// it. The boot step's effects run first thing in [`NodeServer::run`]. Must be called
    /// inside a tokio runtime.
    pub fn new(config: &P::Config, parts: NodeParts<T, S>) -> (Self, NodeHandle) {
        let NodeParts {
            id,
            members,
            system,
            seed,
            transport,
            stores,
            recovery,
            options,
            events_file,
        } = parts;
        let recovered_records = recovery.record_count();
        let recovered_snapshot = recovery.groups.values().any(|g| g.snapshot.is_some());
        let mut rng = seeded_rng(derive_seed(seed, "node", u64::from(id.0)));
        let started = Instant::now();
        let mut out = Out::new();
        let protocol = {
            let mut cx = Cx::new(id, Time::ZERO, &mut rng).with_log_shards(stores.len());
            P::boot(&mut cx, config, &members, recovery, &mut out)
        };
        let file = events_file.and_then(|path| open_events_file(&path));
        let (client_tx, client_rx) = mpsc::channel(options.client_queue_len);
        let (admin_tx, admin_rx) = mpsc::channel(ADMIN_QUEUE_LEN);
        let handle = NodeHandle {
            id,
            client_tx,
            admin_tx,
            faults: transport.fault_rules().clone(),
            request_timeout: Duration::from_millis(options.client_request_timeout_ms),
        };
        let role = protocol.role_name(id);
        let server = NodeServer {
            id,
            system,
            protocol,
            commit: Commit::new(stores),
            transport,
            rng,
            started,
            timers: Timers::default(),
            client_rx,
            admin_rx,
            waiters: BTreeMap::new(),
            waiting: 0,
            to_self: VecDeque::new(),
            out,
            events: EventLog {
                recent: VecDeque::with_capacity(options.event_log_len),
                capacity: options.event_log_len,
                file,
            },
            stats: DriverStats {
                steps: 1,
                ..DriverStats::default()
            },
            options,
            recovered_records,
            recovered_snapshot,
            role,
        };
        (server, handle)
    }

    /// The protocol value (for tests and inspection before `run`).
    pub fn protocol(&self) -> &P {
        &self.protocol
    }

    /// Runs the node until `shutdown` completes, an admin `shutdown` arrives, or a
    /// storage or transport failure stops it. On a graceful stop it releases what a due
    /// sync held, closes the store (a last sync that records the log's end) and shuts the
    /// transport down (sockets closed) before returning. On a failure it shuts the transport down and returns the error.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        // The span carries the node; the role, which changes, goes on each protocol
        // event and on a `role changed` line (recording it on this long-lived span again
        // and again would make every later log line list every role the node ever had).
        let span = tracing::info_span!("node", node = %self.id);
        let transport = self.transport.clone();
        let result = async {
            let mut shutdown = std::pin::pin!(shutdown);
            let looped = self.run_loop(shutdown.as_mut()).await;
            match looped {
                Ok(()) => {
                    self.flush().await?;
                    self.close_stores().await?;
                    tracing::info!("node stopped gracefully");
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(error = %e, "node stopped by a failure");
                    Err(e)
                }
            }
        }
        .instrument(span)
        .await;
        transport.shutdown().await;
        result
    }

    async fn run_loop(
        &mut self,
        mut shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Result<(), ServerError> {
        // The boot step's effects.
        self.execute_effects().await?;
        self.flush().await?;
        loop {
            let wake = self.next_wake(shutdown.as_mut(), true).await;
            let mut flow = self.handle(wake).await?;
            // Group commit: the inputs already ready join this batch.
            let mut steps = 1;
            while matches!(flow, Flow::Continue) && steps < self.options.max_steps_per_sync {
                let wake = self.next_wake(shutdown.as_mut(), false).await;
                if matches!(wake, Wake::Idle) {
                    break;
                }
                flow = self.handle(wake).await?;
                steps += 1;
            }
            self.end_batch().await?;
            match flow {
                Flow::Stop => return Ok(()),
                Flow::Pause(ack) => {
                    self.flush().await?;
                    acknowledge(ack);
                    if matches!(self.wait_resumed(shutdown.as_mut()).await, Flow::Stop) {
                        return Ok(());
                    }
                }
                Flow::Continue => {}
            }
            self.commit.pump(&mut self.stats);
        }
    }

    /// Paused: handles nothing but `Resume` and shutdown (status requests are dropped
    /// unanswered, as a stopped process would leave them).
    async fn wait_resumed(
        &mut self,
        mut shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Flow {
        tracing::info!("node paused");
        loop {
            tokio::select! {
                biased;
                _ = shutdown.as_mut() => return Flow::Stop,
                cmd = self.admin_rx.recv() => match cmd {
                    None | Some(DriverCommand::Shutdown) => return Flow::Stop,
                    Some(DriverCommand::Resume) => {
                        tracing::info!("node resumed");
                        return Flow::Continue;
                    }
                    Some(DriverCommand::Pause(ack)) => acknowledge(ack),
                    Some(DriverCommand::Status(_)) => {}
                },
            }
        }
    }

    async fn next_wake(
        &mut self,
        shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
        wait: bool,
    ) -> Wake<P::Msg> {
        let next_timer = self.timers.next_deadline();
        let far = Instant::now() + Duration::from_secs(3600);
        // Too much queued for the disk: take no new input until a writer returns.
        let open = !self.commit.backlogged();
        tokio::select! {
            biased;
            _ = shutdown => Wake::Shutdown,
            Some(cmd) = self.admin_rx.recv() => Wake::Admin(cmd),
            done = self.commit.next_done() => Wake::Io(done),
            _ = std::future::ready(()), if open && !self.to_self.is_empty() => Wake::ToSelf,
            _ = tokio::time::sleep_until(next_timer.unwrap_or(far)), if open && next_timer.is_some() => Wake::Timers,
            r = self.transport.recv(), if open => Wake::Msg(r),
            Some(call) = self.client_rx.recv(), if open => Wake::Client(call),
            _ = std::future::ready(()), if !wait => Wake::Idle,
        }
    }

    fn now(&self) -> Time {
        Time(u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    async fn handle(&mut self, wake: Wake<P::Msg>) -> Result<Flow, ServerError> {
        match wake {
            Wake::Shutdown | Wake::Admin(DriverCommand::Shutdown) => return Ok(Flow::Stop),
            Wake::Admin(DriverCommand::Pause(ack)) => return Ok(Flow::Pause(ack)),
            Wake::Admin(DriverCommand::Resume) | Wake::Idle => {}
            Wake::Admin(DriverCommand::Status(tx)) => {
                let _ = tx.send(self.status());
            }
            Wake::Timers => {
                let now = Instant::now();
                while let Some(timer) = self.timers.pop_due(now) {
                    self.stats.timers_fired += 1;
                    let t = self.now();
                    let mut cx = Cx::new(self.id, t, &mut self.rng)
                        .with_log_shards(self.commit.workers())
                        .batched();
                    self.protocol.on_timer(&mut cx, timer, &mut self.out);
                    self.after_step().await?;
                }
            }
            Wake::Msg(Ok(env)) => {
                self.on_msg(env.from, env.msg).await?;
                // Fairness: peer messages rank above clients, so a steady stream of them
                // would starve clients; take one waiting client request per message.
                if let Ok(call) = self.client_rx.try_recv() {
                    self.on_client(call).await?;
                }
            }
            Wake::Msg(Err(source)) => {
                // `recv` reports only a closed transport; malformed input is counted and
                // skipped inside it. A node without a network cannot go on.
                return Err(ServerError::Transport {
                    node: self.id,
                    source,
                });
            }
            Wake::ToSelf => {
                if let Some(msg) = self.to_self.pop_front() {
                    self.on_msg(self.id, msg).await?;
                }
            }
            Wake::Client(call) => self.on_client(call).await?,
            Wake::Io(done) => {
                let released = self
                    .commit
                    .on_done(done, &mut self.stats)
                    .map_err(|(op, source)| self.storage_error(op, source))?;
                self.release(released);
            }
        }
        Ok(Flow::Continue)
    }

    async fn on_msg(&mut self, from: NodeId, msg: P::Msg) -> Result<(), ServerError> {
        self.stats.messages_in += 1;
        let t = self.now();
        let mut cx = Cx::new(self.id, t, &mut self.rng)
            .with_log_shards(self.commit.workers())
            .batched();
        self.protocol.on_msg(&mut cx, from, msg, &mut self.out);
        self.after_step().await
    }

    async fn on_client(&mut self, call: ClientCall) -> Result<(), ServerError> {
        if self.waiting >= MAX_WAITING_CLIENT_REQUESTS {
            self.prune_waiters();
        }
        if self.waiting >= MAX_WAITING_CLIENT_REQUESTS {
            self.stats.client_requests_refused += 1;
            let _ = call.reply.send(ClientResponse {
                id: call.req.id,
                result: Err(ClientError::Unavailable {
                    reason: format!(
                        "node {}: MAX_WAITING_CLIENT_REQUESTS ({MAX_WAITING_CLIENT_REQUESTS}) reached",
                        self.id
                    ),
                    hint: None,
                }),
            });
            return Ok(());
        }
        self.stats.client_requests += 1;
        self.waiters
            .entry(call.req.id)
            .or_default()
            .push_back(call.reply);
        self.waiting += 1;
        let t = self.now();
        let mut cx = Cx::new(self.id, t, &mut self.rng)
            .with_log_shards(self.commit.workers())
            .batched();
        self.protocol.on_client(&mut cx, call.req, &mut self.out);
        self.after_step().await
    }

    /// The batch's last step: [`Protocol::end_batch`] (the steps were taken with
    /// [`Cx::batched`]).
    async fn end_batch(&mut self) -> Result<(), ServerError> {
        let t = self.now();
        let mut cx = Cx::new(self.id, t, &mut self.rng)
            .with_log_shards(self.commit.workers())
            .batched();
        self.protocol.end_batch(&mut cx, &mut self.out);
        self.after_step().await
    }

    /// Forgets waiters whose client went away (timed out).
    fn prune_waiters(&mut self) {
        self.waiters.retain(|_, q| {
            q.retain(|tx| !tx.is_closed());
            !q.is_empty()
        });
        self.waiting = self.waiters.values().map(VecDeque::len).sum();
    }

    async fn after_step(&mut self) -> Result<(), ServerError> {
        self.stats.steps += 1;
        self.execute_effects().await?;
        let role = self.protocol.role_name(self.id);
        if role != self.role {
            tracing::info!(
                from = self.role.unwrap_or("-"),
                to = role.unwrap_or("-"),
                "role changed"
            );
            self.role = role;
        }
        Ok(())
    }

    async fn execute_effects(&mut self) -> Result<(), ServerError> {
        let mut out = std::mem::take(&mut self.out);
        let mut result = Ok(());
        let mut order = StepOrder::new(self.id, P::SENDS_UNSYNCED_STATE);
        let mut effects = out.drain();
        self.commit.begin_step();
        for effect in effects.by_ref() {
            // The shared step order asserts the durability contract here (a send after an
            // unsynced persist of the same step). Holding is the commit's: a send the step
            // order would hold (`HoldForSync`) comes after a `Sync` that set a barrier,
            // and it leaves at once only if that barrier is already durable.
            let disposition = order.classify(&effect);
            debug_assert!(
                disposition != Disposition::HoldForSync || self.stats.syncs_requested > 0
            );
            let effect = match effect {
                // A send before any `Sync` of its step promises nothing about this
                // node's disk (the step order refused it after an unsynced persist): it
                // leaves now, not behind earlier steps' barriers. Raft sends only its
                // leader's AppendEntries so (thesis §10.2.1); replies always wait.
                Effect::Send { to, msg } if disposition == Disposition::Run => {
                    self.stats.messages_out += 1;
                    self.stats.early_sends += 1;
                    self.send_now(to, msg);
                    continue;
                }
                other => other,
            };
            if let Err(e) = self.execute(effect).await {
                result = Err(e);
                break;
            }
        }
        drop(effects);
        self.out = out;
        result
    }

    async fn execute(&mut self, effect: Effect<P::Msg>) -> Result<(), ServerError> {
        match effect {
            Effect::Send { to, msg } => {
                self.stats.messages_out += 1;
                if let Some(item) = self.commit.send_or_hold(Held::Send { to, msg }) {
                    self.release(vec![item]);
                }
            }
            Effect::Reply(resp) => {
                if let Some(item) = self.commit.send_or_hold(Held::Reply(resp)) {
                    self.release(vec![item]);
                }
            }
            Effect::Persist { group, record } => {
                self.stats.persists += 1;
                self.commit.persist(group, record);
            }
            Effect::Sync => {
                self.stats.syncs_requested += 1;
                self.commit.barrier();
            }
            Effect::SaveSnapshot { group, data } => {
                // Effects after an earlier Sync wait for it; the snapshot is one of them.
                // The group's records before it are in its shard's log first, so that the
                // snapshot's log position covers them.
                self.flush().await?;
                let store = self.commit.store_of(group);
                let saved =
                    tokio::task::spawn_blocking(move || lock(&store).save_snapshot(group, &data))
                        .await;
                match saved {
                    Ok(Ok(())) => self.stats.snapshots_saved += 1,
                    Ok(Err(source)) => return Err(self.storage_error("save_snapshot", source)),
                    Err(e) => return Err(self.join_error(e)),
                }
            }
            Effect::SetTimer { timer, after } => {
                self.timers.set(timer, Instant::now() + after);
            }
            Effect::CancelTimer { timer } => self.timers.cancel(timer),
            Effect::Scope(scope) => self.commit.set_scope(scope),
            Effect::Event(event) => {
                tracing::info!(role = self.role.unwrap_or("-"), kind = event.kind(), %event, "protocol event");
                let time_ns = self.now().as_nanos();
                self.events.push(EventRecord {
                    time_ns,
                    node: self.id,
                    event,
                });
            }
        }
        Ok(())
    }

    fn send_now(&mut self, to: NodeId, msg: P::Msg) {
        if to == self.id {
            self.to_self.push_back(msg);
            return;
        }
        if let Err(e) = self.transport.send(to, msg) {
            // Best effort: the transport counted it; to the protocol it is a lost message.
            self.stats.send_errors += 1;
            tracing::debug!(%to, error = %e, "send refused by the transport");
        }
    }

    fn reply_now(&mut self, resp: ClientResponse) {
        let Some(queue) = self.waiters.get_mut(&resp.id) else {
            self.stats.orphan_replies += 1;
            return;
        };
        let tx = queue.pop_front();
        if queue.is_empty() {
            self.waiters.remove(&resp.id);
        }
        if let Some(tx) = tx {
            self.waiting -= 1;
            if tx.send(resp).is_err() {
                self.stats.orphan_replies += 1;
            }
        }
    }

    /// Sends and replies what the commit let go, in order.
    fn release(&mut self, items: Vec<Held<P::Msg>>) {
        for item in items {
            match item {
                Held::Send { to, msg } => self.send_now(to, msg),
                Held::Reply(resp) => self.reply_now(resp),
            }
        }
    }

    /// Writes and syncs everything queued on every shard and waits for it, then releases
    /// every held send and reply, in order.
    async fn flush(&mut self) -> Result<(), ServerError> {
        let released = self
            .commit
            .drain(&mut self.stats)
            .await
            .map_err(|(op, source)| self.storage_error(op, source))?;
        self.release(released);
        Ok(())
    }

    /// Closes every shard's store at a graceful stop (a final sync that also records the
    /// log's end), in parallel.
    async fn close_stores(&mut self) -> Result<(), ServerError> {
        let closing: Vec<_> = self
            .commit
            .stores()
            .map(|store| tokio::task::spawn_blocking(move || lock(&store).close()))
            .collect();
        for closed in closing {
            match closed.await {
                Ok(Ok(())) => {}
                Ok(Err(source)) => return Err(self.storage_error("close", source)),
                Err(e) => return Err(self.join_error(e)),
            }
        }
        Ok(())
    }

    fn storage_error(&self, op: &'static str, source: StorageError) -> ServerError {
        ServerError::Storage {
            node: self.id,
            op,
            source,
        }
    }

    fn join_error(&self, e: tokio::task::JoinError) -> ServerError {
        ServerError::Driver {
            node: self.id,
            reason: format!("storage task failed: {e}"),
        }
    }

    fn status(&self) -> NodeStatus {
        NodeStatus {
            node: self.id,
            system: self.system.clone(),
            uptime_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            protocol: self.protocol.inspect(self.id),
            transport: self.transport.stats(),
            storage: StorageStatus {
                wal: self.commit.wal_stats(),
                wal_shards: self.commit.workers(),
                recovered_records: self.recovered_records,
                recovered_snapshot: self.recovered_snapshot,
            },
            driver: self.stats,
            client_requests_waiting: self.waiting,
            timers_armed: self.timers.len(),
            recent_events: self.events.recent.iter().cloned().collect(),
            connections: ConnectionsStatus::default(),
        }
    }
}

fn open_events_file(path: &Path) -> Option<std::fs::File> {
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot open the event file; events stay in memory");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rearming_a_timer_replaces_its_deadline() {
        let mut t = Timers::default();
        let base = Instant::now();
        t.set(
            TimerId::new(kvlab_types::TimerSpace::Test, 1),
            base + Duration::from_secs(10),
        );
        t.set(
            TimerId::new(kvlab_types::TimerSpace::Test, 2),
            base + Duration::from_secs(5),
        );
        t.set(
            TimerId::new(kvlab_types::TimerSpace::Test, 1),
            base + Duration::from_secs(1),
        );
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.pop_due(base + Duration::from_secs(2)),
            Some(TimerId::new(kvlab_types::TimerSpace::Test, 1))
        );
        assert_eq!(t.pop_due(base + Duration::from_secs(2)), None);
        t.cancel(TimerId::new(kvlab_types::TimerSpace::Test, 2));
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn timers_with_equal_deadlines_fire_in_arming_order() {
        let mut t = Timers::default();
        let at = Instant::now();
        for id in [3, 1, 2] {
            t.set(TimerId::new(kvlab_types::TimerSpace::Test, id), at);
        }
        let fired: Vec<_> = std::iter::from_fn(|| t.pop_due(at)).collect();
        assert_eq!(
            fired,
            [
                TimerId::new(kvlab_types::TimerSpace::Test, 3),
                TimerId::new(kvlab_types::TimerSpace::Test, 1),
                TimerId::new(kvlab_types::TimerSpace::Test, 2)
            ]
        );
    }
}

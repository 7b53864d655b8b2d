//! # kvlab-transport-tarpc
//!
//! The TCP [`Transport`]: every node serves a tarpc [`wire::PeerService`] on a listening
//! socket, and keeps one client connection per peer, opened on the first message and
//! re-opened after a failure with exponential backoff (bounded by
//! `reconnect_backoff_ms_max`).
//!
//! **Must never depend on:** the node, any protocol crate, or the filesystem.
//!
//! Design choices:
//!
//! - **One bounded queue and one task per peer.** `send` encodes the frame and puts it on
//!   the peer's queue (bound `outbound_queue_len`; full → [`TransportError::QueueFull`],
//!   counted). The peer's task takes whatever is queued (up to `max_batch_messages`
//!   frames and `max_frame_bytes` bytes) and sends it as one `deliver` RPC, awaiting the
//!   answer before the next batch: under load batches grow, at rest a message costs one
//!   round trip.
//! - **Order.** One connection, one batch in flight and in-order execution on the server
//!   give per-peer FIFO ([`DeliveryOrder::PerPeerFifo`]) while the connection lives. A
//!   batch whose RPC fails is dropped (counted [`DropReason::Io`]), never retried, so no
//!   message is delivered twice; later messages may follow on a new connection.
//! - **Unreachable peers.** When a connection attempt fails, every message queued for
//!   that peer is dropped (counted [`DropReason::Io`]) before backing off, so a peer
//!   that comes back receives fresh messages, not a backlog of stale ones.
//! - **Faults.** The sender consults its [`FaultRules`] on send (drop, delay, loss); the
//!   receiver consults its own on arrival (drop-from).
//! - **Trust.** A frame is accepted only if its MAC verifies under the cluster key
//!   (`transport.peer_key`; otherwise it is counted as [`DropReason::Unauthenticated`]
//!   and never deserialized), it names a sender in the peer table and this node as
//!   destination. Bytes that are not a valid RPC are counted as decode errors and close
//!   that connection.
//! - **A port anyone can reach.** The listener is a [`guard`]ed endpoint: at most
//!   `max_connections` connections (at the cap the idlest is closed), an idle timeout,
//!   one frame of `max_frame_bytes` per connection and `max_buffered_bytes` for all of
//!   them, request deadlines clamped; see [`TarpcTransport::connection_stats`]. A link
//!   closes its own connection after half the idle timeout without traffic, so the
//!   receiver's timeout never cuts a message in flight.
//!
//! ```
//! use std::collections::BTreeMap;
//! use kvlab_transport::{FaultRules, Transport};
//! use kvlab_transport_tarpc::{TarpcConfig, TarpcTransport};
//! use kvlab_types::NodeId;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let loopback = "127.0.0.1:0".parse().unwrap();
//! let a = TarpcTransport::<String>::bind(NodeId(1), loopback, BTreeMap::new(), TarpcConfig::default(), FaultRules::new(1)).await.unwrap();
//! let b = TarpcTransport::<String>::bind(NodeId(2), loopback, BTreeMap::new(), TarpcConfig::default(), FaultRules::new(2)).await.unwrap();
//! a.add_peer(NodeId(2), b.local_addr());
//! b.add_peer(NodeId(1), a.local_addr());
//! a.send(NodeId(2), "hello".to_string()).unwrap();
//! let env = b.recv().await.unwrap();
//! assert_eq!((env.from, env.msg.as_str()), (NodeId(1), "hello"));
//! # });
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kvlab_transport::{
    DelayLine, DeliveryOrder, DropReason, Envelope, FaultRules, Inbox, PeerTable, StatsCounters,
    Transport, TransportConfig, TransportError, TransportStats, codec, oversize_or_encode_error,
    route_send,
};
use kvlab_types::{Message, NodeId};
use serde::{Deserialize, Serialize};
use tarpc::server::{BaseChannel, Channel};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub mod guard;
pub mod wire;

use guard::{ConnectionLimits, ConnectionStats, Endpoint, ServerTransport};
use wire::{CountingConnection, PeerService, PostcardFormat, RPC_OVERHEAD_BYTES};

/// Default first wait after a failed connection attempt.
pub const DEFAULT_RECONNECT_BACKOFF_MS_MIN: u64 = 10;
/// Default longest wait between connection attempts.
pub const DEFAULT_RECONNECT_BACKOFF_MS_MAX: u64 = 1_000;
/// Default bound on one connection attempt.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Default deadline of one `deliver` RPC.
pub const DEFAULT_RPC_TIMEOUT_MS: u64 = 5_000;
/// Default number of frames in one `deliver` batch.
pub const DEFAULT_MAX_BATCH_MESSAGES: usize = 256;
/// Upper bound for every millisecond setting.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Upper bound for `max_batch_messages`.
pub const MAX_BATCH_MESSAGES_LIMIT: usize = 65_536;
/// Default cap on connections to the peer port (a cluster needs one per peer, plus
/// reconnections).
pub const DEFAULT_PEER_MAX_CONNECTIONS: usize = 256;
/// Default idle timeout of a peer connection.
pub const DEFAULT_PEER_IDLE_TIMEOUT_MS: u64 = 30_000;
/// Default bound on the bytes all peer connections buffer together: 32 MiB.
pub const DEFAULT_PEER_MAX_BUFFERED_BYTES: usize = 32 << 20;

/// Configuration of one tarpc transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TarpcConfig {
    /// Limits shared with the other transports; `outbound_queue_len` is per peer.
    pub transport: TransportConfig,
    /// First wait after a failed connection attempt; doubles on every failure.
    pub reconnect_backoff_ms_min: u64,
    /// Longest wait between connection attempts.
    pub reconnect_backoff_ms_max: u64,
    /// Bound on one connection attempt.
    pub connect_timeout_ms: u64,
    /// Deadline of one `deliver` RPC; past it the batch is dropped and the connection
    /// re-opened.
    pub rpc_timeout_ms: u64,
    /// Frames in one `deliver` batch at most.
    pub max_batch_messages: usize,
    /// Connections the peer port serves at once; at the cap the one idle longest is
    /// closed (counted) to make room.
    pub max_connections: usize,
    /// A peer connection without a complete RPC for this long is closed (counted). A
    /// link closes its own connection after half of it without traffic.
    pub idle_timeout_ms: u64,
    /// Bytes all peer connections may buffer together (frames being assembled count),
    /// at least one RPC of `max_frame_bytes`; the connection that would exceed it is
    /// closed (counted).
    pub max_buffered_bytes: usize,
}

impl Default for TarpcConfig {
    fn default() -> Self {
        TarpcConfig {
            transport: TransportConfig::default(),
            reconnect_backoff_ms_min: DEFAULT_RECONNECT_BACKOFF_MS_MIN,
            reconnect_backoff_ms_max: DEFAULT_RECONNECT_BACKOFF_MS_MAX,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            rpc_timeout_ms: DEFAULT_RPC_TIMEOUT_MS,
            max_batch_messages: DEFAULT_MAX_BATCH_MESSAGES,
            max_connections: DEFAULT_PEER_MAX_CONNECTIONS,
            idle_timeout_ms: DEFAULT_PEER_IDLE_TIMEOUT_MS,
            max_buffered_bytes: DEFAULT_PEER_MAX_BUFFERED_BYTES,
        }
    }
}

impl TarpcConfig {
    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), TransportError> {
        self.transport.validate()?;
        for (field, v) in [
            ("reconnect_backoff_ms_min", self.reconnect_backoff_ms_min),
            ("reconnect_backoff_ms_max", self.reconnect_backoff_ms_max),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("rpc_timeout_ms", self.rpc_timeout_ms),
        ] {
            if !(1..=MAX_TIMEOUT_MS).contains(&v) {
                return Err(TransportError::InvalidConfig {
                    field,
                    reason: format!("{v} is outside [1, {MAX_TIMEOUT_MS}]"),
                });
            }
        }
        if self.reconnect_backoff_ms_max < self.reconnect_backoff_ms_min {
            return Err(TransportError::InvalidConfig {
                field: "reconnect_backoff_ms_max",
                reason: "must be at least reconnect_backoff_ms_min".to_string(),
            });
        }
        if !(1..=MAX_BATCH_MESSAGES_LIMIT).contains(&self.max_batch_messages) {
            return Err(TransportError::InvalidConfig {
                field: "max_batch_messages",
                reason: format!(
                    "{} is outside [1, {MAX_BATCH_MESSAGES_LIMIT}]",
                    self.max_batch_messages
                ),
            });
        }
        self.connection_limits()
            .validate()
            .map_err(|(field, reason)| TransportError::InvalidConfig { field, reason })
    }

    fn max_rpc_bytes(&self) -> usize {
        self.transport.max_frame_bytes + RPC_OVERHEAD_BYTES
    }

    /// The limits of the peer port.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections,
            idle_timeout_ms: self.idle_timeout_ms,
            max_request_frame_bytes: self.max_rpc_bytes(),
            max_response_frame_bytes: self.max_rpc_bytes(),
            max_buffered_bytes_total: self.max_buffered_bytes,
        }
    }
}

/// The outbound side towards one peer.
#[derive(Debug)]
struct Link {
    addr: SocketAddr,
    queue: mpsc::Sender<Vec<u8>>,
    task: JoinHandle<()>,
}

/// Everything a send (immediate or delayed) needs.
#[derive(Debug)]
struct Outbound {
    config: TarpcConfig,
    peers: Arc<PeerTable>,
    links: std::sync::Mutex<BTreeMap<NodeId, Link>>,
    stats: Arc<StatsCounters>,
}

impl Outbound {
    /// Queues `frame` for `to`, starting (or re-pointing) the peer's link as needed.
    fn enqueue(&self, to: NodeId, frame: Vec<u8>) -> Result<(), TransportError> {
        let Some(addr) = self.peers.addr_of(to) else {
            self.stats.record_drop(DropReason::UnknownPeer, 1);
            return Err(TransportError::UnknownPeer { peer: to });
        };
        let queue = {
            let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
            let stale = links
                .get(&to)
                .is_none_or(|l| l.addr != addr || l.task.is_finished());
            if stale {
                if let Some(old) = links.remove(&to) {
                    old.task.abort();
                }
                let (tx, rx) = mpsc::channel(self.config.transport.outbound_queue_len);
                let task = tokio::spawn(link_loop(addr, rx, self.config, self.stats.clone()));
                links.insert(
                    to,
                    Link {
                        addr,
                        queue: tx,
                        task,
                    },
                );
            }
            links.get(&to).map(|l| l.queue.clone())
        };
        let Some(queue) = queue else {
            return Err(TransportError::UnknownPeer { peer: to });
        };
        queue.try_send(frame).map_err(|_| {
            self.stats.record_drop(DropReason::QueueFull, 1);
            TransportError::QueueFull {
                peer: to,
                capacity: self.config.transport.outbound_queue_len,
            }
        })
    }

    fn stop_links(&self) -> Vec<JoinHandle<()>> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *links)
            .into_values()
            .map(|l| {
                l.task.abort();
                l.task
            })
            .collect()
    }
}

/// One node's tarpc transport.
pub struct TarpcTransport<M> {
    id: NodeId,
    local_addr: SocketAddr,
    outbound: Arc<Outbound>,
    inbox: Inbox<(Envelope<M>, usize)>,
    faults: FaultRules,
    delay: DelayLine<(NodeId, Vec<u8>)>,
    listener: std::sync::Mutex<Option<JoinHandle<()>>>,
    endpoint: Arc<Endpoint>,
}

impl<M> fmt::Debug for TarpcTransport<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TarpcTransport")
            .field("id", &self.id)
            .field("local_addr", &self.local_addr)
            .field("stats", &self.outbound.stats.snapshot())
            .finish()
    }
}

/// The server half: decodes delivered batches into the inbox.
struct PeerServer<M> {
    id: NodeId,
    max_frame_bytes: usize,
    key: kvlab_transport::PeerKey,
    peers: Arc<PeerTable>,
    inbox: mpsc::Sender<(Envelope<M>, usize)>,
    stats: Arc<StatsCounters>,
    faults: FaultRules,
}

impl<M> Clone for PeerServer<M> {
    fn clone(&self) -> Self {
        PeerServer {
            id: self.id,
            max_frame_bytes: self.max_frame_bytes,
            key: self.key,
            peers: self.peers.clone(),
            inbox: self.inbox.clone(),
            stats: self.stats.clone(),
            faults: self.faults.clone(),
        }
    }
}

impl<M: Message + Send> PeerServer<M> {
    fn accept_batch(&self, frames: &[u8]) {
        let mut at = 0;
        while at < frames.len() {
            let (env, used) =
                match codec::decode_prefix::<M>(&frames[at..], self.max_frame_bytes, &self.key) {
                    Ok(x) => x,
                    Err(
                        e @ (codec::CodecError::Unauthenticated { .. }
                        | codec::CodecError::Garbage { .. }),
                    ) => {
                        // The checksum held, so the length is right: skip this frame.
                        self.stats.record_drop(DropReason::of_decode_error(&e), 1);
                        match codec::frame_len(&frames[at..], self.max_frame_bytes) {
                            Ok(len) => {
                                at += len;
                                continue;
                            }
                            Err(_) => return,
                        }
                    }
                    Err(_) => {
                        // Frames are self-delimiting only while they parse: the rest of
                        // the batch cannot be resynchronised and is counted as one decode
                        // error.
                        self.stats.record_drop(DropReason::DecodeError, 1);
                        return;
                    }
                };
            at += used;
            if !self.peers.contains(env.from) {
                self.stats.record_drop(DropReason::UnknownPeer, 1);
                continue;
            }
            if env.to != self.id {
                self.stats.record_drop(DropReason::Misaddressed, 1);
                continue;
            }
            if self.faults.drops_from(env.from) {
                self.stats.record_drop(DropReason::FaultRule, 1);
                continue;
            }
            if self.inbox.try_send((env, used)).is_err() {
                self.stats.record_drop(DropReason::QueueFull, 1);
            }
        }
    }
}

impl<M: Message + Send> PeerService for PeerServer<M> {
    async fn deliver(self, _: tarpc::context::Context, frames: Vec<u8>) {
        self.accept_batch(&frames);
    }
}

impl<M: Message + Send> TarpcTransport<M> {
    /// Listens on `listen` (port 0 picks a free one) for node `id` with the peer table
    /// `peers` (this node's own entry is added if missing).
    pub async fn bind(
        id: NodeId,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
        config: TarpcConfig,
        faults: FaultRules,
    ) -> Result<Self, TransportError> {
        config.validate()?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(TransportError::bind_failed(id, listen))?;
        let local_addr = listener
            .local_addr()
            .map_err(TransportError::bind_failed(id, listen))?;
        let peers = Arc::new(PeerTable::new(id, local_addr, peers));
        let stats = Arc::new(StatsCounters::new());
        let (in_tx, in_rx) = mpsc::channel(config.transport.inbound_queue_len);
        let server = PeerServer {
            id,
            max_frame_bytes: config.transport.max_frame_bytes,
            key: config.transport.peer_key,
            peers: peers.clone(),
            inbox: in_tx,
            stats: stats.clone(),
            faults: faults.clone(),
        };
        let endpoint = Endpoint::new("peer", config.connection_limits());
        let listener_task = tokio::spawn(accept_loop(listener, server, endpoint.clone()));
        let outbound = Arc::new(Outbound {
            config,
            peers,
            links: std::sync::Mutex::new(BTreeMap::new()),
            stats,
        });
        let line_outbound = outbound.clone();
        let delay = DelayLine::spawn(config.transport.max_delayed_messages, move |(to, frame)| {
            // Errors are counted by enqueue.
            let _ = line_outbound.enqueue(to, frame);
        });
        Ok(TarpcTransport {
            id,
            local_addr,
            outbound,
            inbox: Inbox::new(id, in_rx),
            faults,
            delay,
            listener: std::sync::Mutex::new(Some(listener_task)),
            endpoint,
        })
    }

    /// What the peer port's guard did: connections open, closed idle, evicted at the
    /// cap, closed at the buffer bound, deadlines clamped.
    pub fn connection_stats(&self) -> ConnectionStats {
        self.endpoint.stats()
    }

    /// The peer port's guarded endpoint (its counters are shared with whoever holds it).
    pub fn endpoint(&self) -> Arc<Endpoint> {
        self.endpoint.clone()
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The peer table now.
    pub fn peers(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.outbound.peers.snapshot()
    }

    /// Replaces the peer table (this node's own entry is kept if missing). A peer whose
    /// address changed gets a new connection on its next message.
    pub fn set_peers(&self, peers: BTreeMap<NodeId, SocketAddr>) {
        self.outbound.peers.set(peers);
    }

    /// Adds or moves one peer.
    pub fn add_peer(&self, id: NodeId, addr: SocketAddr) {
        self.outbound.peers.add(id, addr);
    }

    /// Forgets one peer.
    pub fn remove_peer(&self, id: NodeId) {
        self.outbound.peers.remove(id);
    }
}

impl<M: Message + Send> Transport for TarpcTransport<M> {
    type Msg = M;

    fn local_id(&self) -> NodeId {
        self.id
    }

    fn send(&self, to: NodeId, msg: M) -> Result<(), TransportError> {
        self.inbox.ensure_open()?;
        let stats = &self.outbound.stats;
        if !self.outbound.peers.contains(to) {
            stats.record_drop(DropReason::UnknownPeer, 1);
            return Err(TransportError::UnknownPeer { peer: to });
        }
        let env = Envelope {
            from: self.id,
            to,
            msg,
        };
        let transport = &self.outbound.config.transport;
        let frame = codec::encode(&env, transport.max_frame_bytes, &transport.peer_key)
            .map_err(|e| oversize_or_encode_error(stats, to, e))?;
        route_send(
            &self.faults,
            stats,
            &self.delay,
            to,
            (to, frame),
            |(to, frame)| self.outbound.enqueue(to, frame),
        )
    }

    async fn recv(&self) -> Result<Envelope<M>, TransportError> {
        self.inbox
            .recv_with(|(env, size_bytes)| {
                self.outbound.stats.record_received(size_bytes as u64);
                Some(env)
            })
            .await
    }

    fn stats(&self) -> TransportStats {
        self.outbound.stats.snapshot()
    }

    fn fault_rules(&self) -> &FaultRules {
        &self.faults
    }

    fn delivery_order(&self) -> DeliveryOrder {
        DeliveryOrder::PerPeerFifo
    }

    async fn shutdown(&self) {
        self.inbox.mark_closed();
        self.delay.stop().await;
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut tasks = self.outbound.stop_links();
        if let Some(l) = listener {
            l.abort();
            tasks.push(l);
        }
        for t in tasks {
            // The listener task owns the socket (and its connections): once it has
            // ended, the port is free.
            let _ = t.await;
        }
        self.inbox.close_and_drain().await;
    }
}

impl<M> Drop for TarpcTransport<M> {
    fn drop(&mut self) {
        if let Some(l) = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            l.abort();
        }
        for l in self
            .outbound
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            l.task.abort();
        }
    }
}

/// Accepts peer connections under the endpoint's limits; each is served in order (one
/// request at a time), which is what keeps per-peer FIFO. Aborting this task closes the
/// listener and every connection.
async fn accept_loop<M: Message + Send>(
    listener: TcpListener,
    server: PeerServer<M>,
    endpoint: Arc<Endpoint>,
) {
    guard::serve_guarded(listener, endpoint, move |framed| {
        let conn = CountingConnection::new(
            ServerTransport::<PostcardFormat, _, _>::new(framed),
            server.stats.clone(),
        );
        BaseChannel::with_defaults(conn)
            .execute(server.clone().serve())
            .for_each(|respond| respond)
    })
    .await;
}

/// Drains one peer's queue into `deliver` batches over one connection; reconnects with
/// exponential backoff after a failure.
async fn link_loop(
    addr: SocketAddr,
    mut queue: mpsc::Receiver<Vec<u8>>,
    config: TarpcConfig,
    stats: Arc<StatsCounters>,
) {
    let backoff_min = Duration::from_millis(config.reconnect_backoff_ms_min);
    let backoff_max = Duration::from_millis(config.reconnect_backoff_ms_max);
    let max_batch_bytes = config.transport.max_frame_bytes;
    // Close an unused connection before the receiver's idle timeout would.
    let link_idle = Duration::from_millis((config.idle_timeout_ms / 2).max(1));
    let mut backoff = backoff_min;
    let mut carry: Option<Vec<u8>> = None;
    loop {
        // Connect lazily, on the first message.
        if carry.is_none() {
            match queue.recv().await {
                Some(f) => carry = Some(f),
                None => return,
            }
        }
        let connected = tokio::time::timeout(
            Duration::from_millis(config.connect_timeout_ms),
            wire::connect(addr, config.max_rpc_bytes()),
        )
        .await;
        let client = match connected {
            Ok(Ok(c)) => {
                backoff = backoff_min;
                c
            }
            _ => {
                // Unreachable: drop what is queued rather than deliver it stale later.
                let mut dropped = u64::from(carry.take().is_some());
                while queue.try_recv().is_ok() {
                    dropped += 1;
                }
                stats.record_drop(DropReason::Io, dropped);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(backoff_max);
                continue;
            }
        };
        loop {
            let mut batch = match carry.take() {
                Some(f) => f,
                None => match tokio::time::timeout(link_idle, queue.recv()).await {
                    Ok(Some(f)) => f,
                    Ok(None) => return,
                    // Idle: drop the connection; the next message opens a new one.
                    Err(_) => break,
                },
            };
            let mut n: u64 = 1;
            while (n as usize) < config.max_batch_messages {
                match queue.try_recv() {
                    Ok(f) if batch.len() + f.len() <= max_batch_bytes => {
                        batch.extend_from_slice(&f);
                        n += 1;
                    }
                    Ok(f) => {
                        carry = Some(f);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let bytes = batch.len() as u64;
            let mut ctx = tarpc::context::current();
            ctx.deadline = std::time::Instant::now() + Duration::from_millis(config.rpc_timeout_ms);
            match client.deliver(ctx, batch).await {
                Ok(()) => stats.record_sent(n, bytes),
                Err(_) => {
                    stats.record_drop(DropReason::Io, n);
                    break; // reconnect on the next message
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

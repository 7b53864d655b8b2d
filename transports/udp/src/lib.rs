//! # kvlab-transport-udp
//!
//! The UDP [`Transport`]: one tokio `UdpSocket` per node, peers from a static address
//! table (`BTreeMap<NodeId, SocketAddr>`, updatable at run time), a writer task draining
//! a bounded outbound queue and a reader task decoding datagrams into a bounded inbox.
//!
//! **Must never depend on:** the node, any protocol crate, tarpc, or the filesystem.
//!
//! Design choices:
//!
//! - **Datagram size.** A frame that fits in `max_datagram_bytes` (default 1400, under
//!   an Ethernet MTU with IP and UDP headers) travels in one datagram. A larger frame, up
//!   to `max_frame_bytes`, is **chunked**: each chunk carries the message id, its index
//!   and the chunk count (see [`reassembly`]); the receiver reassembles it in one of at
//!   most `max_reassembly_buffers` buffers and gives up after `reassembly_timeout_ms`
//!   (counted as [`DropReason::ReassemblyExpired`]). There is no retransmission: a lost
//!   chunk loses the message, as a lost datagram would. Memory for reassembly is bounded
//!   by `max_reassembly_bytes` (chunks are stored as they arrive; a header's chunk count
//!   reserves nothing). Snapshots of many megabytes should go over a stream (the tarpc
//!   transport) instead.
//! - **Authentication.** Every frame carries a MAC keyed by `transport.peer_key` (the
//!   cluster secret, see `kvlab_codec`); a frame that fails it is counted as
//!   [`DropReason::Unauthenticated`] and never deserialized. Chunks are not
//!   authenticated one by one; the reassembled frame is.
//! - **Order.** None promised ([`DeliveryOrder::Unordered`]), as UDP promises none; on an
//!   idle loopback messages usually arrive in order.
//! - **Who sent it.** A datagram is accepted only from an address in the peer table, its
//!   frame must verify under the cluster key, and it must name that peer as sender and
//!   this node as destination; otherwise
//!   it is counted ([`DropReason::UnknownPeer`], [`DropReason::Misaddressed`]) and dropped.
//!   Bind a concrete address (e.g. `127.0.0.1:0`), not a wildcard, so that the address
//!   peers see is the one in their tables.
//! - **Faults.** The sender consults its [`FaultRules`] on send (drop, delay, loss); the
//!   reader consults the receiver's on arrival (drop-from).
//!
//! ```
//! use std::collections::BTreeMap;
//! use kvlab_transport::{FaultRules, Transport};
//! use kvlab_transport_udp::{UdpConfig, UdpTransport};
//! use kvlab_types::NodeId;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let loopback = "127.0.0.1:0".parse().unwrap();
//! let a = UdpTransport::<String>::bind(NodeId(1), loopback, BTreeMap::new(), UdpConfig::default(), FaultRules::new(1)).await.unwrap();
//! let b = UdpTransport::<String>::bind(NodeId(2), loopback, BTreeMap::new(), UdpConfig::default(), FaultRules::new(2)).await.unwrap();
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kvlab_transport::{
    DelayLine, DeliveryOrder, DropReason, Envelope, FaultRules, Inbox, PeerTable, StatsCounters,
    Transport, TransportConfig, TransportError, TransportStats, codec, oversize_or_encode_error,
    route_send,
};
use kvlab_types::{Message, NodeId};
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub mod reassembly;

/// Datagrams the kernel dropped at the UDP socket bound to `127.0.0.1:port` because its
/// receive buffer was full (the `drops` column of Linux's /proc/net/udp); 0 where that
/// table is missing or has no such socket. For tests and diagnostics: a flood on a
/// loaded host loses datagrams before any transport code sees them.
pub fn loopback_socket_drops(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .find(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0)
}

use reassembly::{
    CHUNK_HEADER_BYTES, ChunkHeader, Reassembly, TAG_CHUNK, TAG_WHOLE, WHOLE_HEADER_BYTES,
    parse_chunk, write_chunk_header,
};

/// Default largest datagram sent: 1400 bytes, under a 1500-byte MTU after IP and UDP
/// headers.
pub const DEFAULT_MAX_DATAGRAM_BYTES: usize = 1400;
/// The largest UDP payload over IPv4.
pub const MAX_DATAGRAM_BYTES_LIMIT: usize = 65_507;
/// Smallest `max_datagram_bytes` accepted: a chunk header plus some data.
pub const MIN_DATAGRAM_BYTES: usize = 128;
/// Default number of chunked messages reassembled at once.
pub const DEFAULT_MAX_REASSEMBLY_BUFFERS: usize = 64;
/// Largest `max_reassembly_buffers` accepted.
pub const MAX_REASSEMBLY_BUFFERS_LIMIT: usize = 4096;
/// Default time to wait for the rest of a chunked message.
pub const DEFAULT_REASSEMBLY_TIMEOUT_MS: u64 = 2_000;
/// Longest `reassembly_timeout_ms` accepted.
pub const MAX_REASSEMBLY_TIMEOUT_MS: u64 = 60_000;
/// Default bound on the bytes all partially received messages hold together: 8 MiB.
pub const DEFAULT_MAX_REASSEMBLY_BYTES: usize = 8 << 20;
/// Largest `max_reassembly_bytes` accepted: 1 GiB.
pub const MAX_REASSEMBLY_BYTES_LIMIT: usize = 1 << 30;

/// Configuration of one UDP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UdpConfig {
    /// Limits shared with the other transports. `outbound_queue_len` bounds the one queue
    /// of this node's writer (all peers share it).
    pub transport: TransportConfig,
    /// Largest datagram sent; larger frames are chunked.
    pub max_datagram_bytes: usize,
    /// Chunked messages reassembled at once; the oldest is evicted (and counted) to make
    /// room.
    pub max_reassembly_buffers: usize,
    /// How long a partially received message is kept.
    pub reassembly_timeout_ms: u64,
    /// Bytes all partially received messages may hold together (each stored chunk
    /// counts its data plus `reassembly::CHUNK_OVERHEAD_BYTES`); the oldest are evicted,
    /// and counted, to make room. At least `transport.max_frame_bytes`.
    pub max_reassembly_bytes: usize,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            transport: TransportConfig::default(),
            max_datagram_bytes: DEFAULT_MAX_DATAGRAM_BYTES,
            max_reassembly_buffers: DEFAULT_MAX_REASSEMBLY_BUFFERS,
            reassembly_timeout_ms: DEFAULT_REASSEMBLY_TIMEOUT_MS,
            max_reassembly_bytes: DEFAULT_MAX_REASSEMBLY_BYTES,
        }
    }
}

impl UdpConfig {
    /// Checks every field; the error names the field.
    pub fn validate(&self) -> Result<(), TransportError> {
        self.transport.validate()?;
        let bad = |field, reason: String| Err(TransportError::InvalidConfig { field, reason });
        if !(MIN_DATAGRAM_BYTES..=MAX_DATAGRAM_BYTES_LIMIT).contains(&self.max_datagram_bytes) {
            return bad(
                "max_datagram_bytes",
                format!(
                    "{} is outside [{MIN_DATAGRAM_BYTES}, {MAX_DATAGRAM_BYTES_LIMIT}]",
                    self.max_datagram_bytes
                ),
            );
        }
        let chunks = self
            .transport
            .max_frame_bytes
            .div_ceil(self.chunk_data_bytes());
        if chunks > usize::from(u16::MAX) {
            return bad(
                "max_datagram_bytes",
                format!(
                    "a frame of max_frame_bytes = {} would need {chunks} chunks, more than {}",
                    self.transport.max_frame_bytes,
                    u16::MAX
                ),
            );
        }
        if !(1..=MAX_REASSEMBLY_BUFFERS_LIMIT).contains(&self.max_reassembly_buffers) {
            return bad(
                "max_reassembly_buffers",
                format!(
                    "{} is outside [1, {MAX_REASSEMBLY_BUFFERS_LIMIT}]",
                    self.max_reassembly_buffers
                ),
            );
        }
        if !(1..=MAX_REASSEMBLY_TIMEOUT_MS).contains(&self.reassembly_timeout_ms) {
            return bad(
                "reassembly_timeout_ms",
                format!(
                    "{} is outside [1, {MAX_REASSEMBLY_TIMEOUT_MS}]",
                    self.reassembly_timeout_ms
                ),
            );
        }
        if !(self.transport.max_frame_bytes..=MAX_REASSEMBLY_BYTES_LIMIT)
            .contains(&self.max_reassembly_bytes)
        {
            return bad(
                "max_reassembly_bytes",
                format!(
                    "{} is outside [max_frame_bytes = {}, {MAX_REASSEMBLY_BYTES_LIMIT}]",
                    self.max_reassembly_bytes, self.transport.max_frame_bytes
                ),
            );
        }
        Ok(())
    }

    /// The most chunks any frame within `max_frame_bytes` can need from any sender (the
    /// smallest datagram a sender may use carries the least data).
    fn max_chunks(&self) -> usize {
        self.transport
            .max_frame_bytes
            .div_ceil(MIN_DATAGRAM_BYTES - CHUNK_HEADER_BYTES)
            .min(usize::from(u16::MAX))
    }

    fn chunk_data_bytes(&self) -> usize {
        self.max_datagram_bytes - CHUNK_HEADER_BYTES
    }
}

/// One message on its way out: the encoded frame behind a reserved tag byte.
#[derive(Debug)]
struct Outgoing {
    addr: SocketAddr,
    /// `[TAG_WHOLE][frame]`.
    datagram: Vec<u8>,
    msg_id: u64,
}

/// One node's UDP transport.
pub struct UdpTransport<M> {
    id: NodeId,
    local_addr: SocketAddr,
    config: UdpConfig,
    peers: Arc<PeerTable>,
    outbound: mpsc::Sender<Outgoing>,
    inbox: Inbox<(Envelope<M>, usize)>,
    stats: Arc<StatsCounters>,
    faults: FaultRules,
    delay: DelayLine<Outgoing>,
    next_msg_id: AtomicU64,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// The socket, for sending from the caller's task (`send_direct`); `None` once shut
    /// down, so that the port is free when the tasks have ended.
    direct: std::sync::Mutex<Option<Arc<UdpSocket>>>,
}

impl<M> fmt::Debug for UdpTransport<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpTransport")
            .field("id", &self.id)
            .field("local_addr", &self.local_addr)
            .field("stats", &self.stats.snapshot())
            .finish()
    }
}

impl<M: Message + Send> UdpTransport<M> {
    /// Binds `addr` (port 0 picks a free one) for node `id` with the peer table `peers`
    /// (this node's own entry is added if missing) and starts the reader and writer tasks.
    pub async fn bind(
        id: NodeId,
        addr: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
        config: UdpConfig,
        faults: FaultRules,
    ) -> Result<Self, TransportError> {
        config.validate()?;
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(TransportError::bind_failed(id, addr))?;
        let local_addr = socket
            .local_addr()
            .map_err(TransportError::bind_failed(id, addr))?;
        let socket = Arc::new(socket);
        let peers = Arc::new(PeerTable::new(id, local_addr, peers));
        let stats = Arc::new(StatsCounters::new());
        let (out_tx, out_rx) = mpsc::channel(config.transport.outbound_queue_len);
        let (in_tx, in_rx) = mpsc::channel(config.transport.inbound_queue_len);

        let direct = std::sync::Mutex::new(Some(socket.clone()));
        let writer = tokio::spawn(write_loop(socket.clone(), out_rx, config, stats.clone()));
        let reader = tokio::spawn(read_loop::<M>(
            socket,
            id,
            config,
            peers.clone(),
            in_tx,
            stats.clone(),
            faults.clone(),
        ));
        let line_tx = out_tx.clone();
        let line_stats = stats.clone();
        let delay = DelayLine::spawn(config.transport.max_delayed_messages, move |o: Outgoing| {
            if line_tx.try_send(o).is_err() {
                line_stats.record_drop(DropReason::QueueFull, 1);
            }
        });
        // Message ids only need to differ from those of this node's previous incarnation
        // that a receiver may still hold partial buffers for; the wall clock provides that.
        let first_msg_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Ok(UdpTransport {
            id,
            local_addr,
            config,
            peers,
            outbound: out_tx,
            inbox: Inbox::new(id, in_rx),
            stats,
            faults,
            delay,
            next_msg_id: AtomicU64::new(first_msg_id),
            tasks: std::sync::Mutex::new(vec![writer, reader]),
            direct,
        })
    }

    /// The address the socket is bound to (with the port the OS picked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The peer table now.
    pub fn peers(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.peers.snapshot()
    }

    /// Replaces the peer table (this node's own entry is kept if missing).
    pub fn set_peers(&self, peers: BTreeMap<NodeId, SocketAddr>) {
        self.peers.set(peers);
    }

    /// Adds or moves one peer.
    pub fn add_peer(&self, id: NodeId, addr: SocketAddr) {
        self.peers.add(id, addr);
    }

    /// Forgets one peer: sends to it become [`TransportError::UnknownPeer`] and its
    /// datagrams are dropped.
    pub fn remove_peer(&self, id: NodeId) {
        self.peers.remove(id);
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a one-datagram message from the caller's task when nothing is queued for
    /// the writer (so it overtakes nothing) and the socket has room: one `sendto`, no
    /// queue and no task switch on the way out. `None`: the writer must take it.
    fn send_direct(&self, out: &Outgoing) -> Option<()> {
        if out.datagram.len() > self.config.max_datagram_bytes
            || self.outbound.capacity() < self.outbound.max_capacity()
        {
            return None;
        }
        let direct = self.direct.lock().unwrap_or_else(|p| p.into_inner());
        let sent = direct.as_ref()?.try_send_to(&out.datagram, out.addr);
        match sent {
            Ok(_) => {
                let frame_bytes = (out.datagram.len() - WHOLE_HEADER_BYTES) as u64;
                self.stats.record_sent(1, frame_bytes);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
            // As in the writer: a datagram the kernel refused is lost.
            Err(_) => self.stats.record_drop(DropReason::Io, 1),
        }
        Some(())
    }
}

impl<M: Message + Send> Transport for UdpTransport<M> {
    type Msg = M;

    fn local_id(&self) -> NodeId {
        self.id
    }

    fn send(&self, to: NodeId, msg: M) -> Result<(), TransportError> {
        self.inbox.ensure_open()?;
        let Some(addr) = self.peers.addr_of(to) else {
            self.stats.record_drop(DropReason::UnknownPeer, 1);
            return Err(TransportError::UnknownPeer { peer: to });
        };
        let max = self.config.transport.max_frame_bytes;
        let env = Envelope {
            from: self.id,
            to,
            msg,
        };
        let mut datagram = Vec::with_capacity(128);
        datagram.push(TAG_WHOLE);
        codec::encode_into(&env, max, &self.config.transport.peer_key, &mut datagram)
            .map_err(|e| oversize_or_encode_error(&self.stats, to, e))?;
        let out = Outgoing {
            addr,
            datagram,
            msg_id: self.next_msg_id.fetch_add(1, Ordering::Relaxed),
        };
        route_send(&self.faults, &self.stats, &self.delay, to, out, |out| {
            if self.send_direct(&out).is_some() {
                return Ok(());
            }
            self.outbound.try_send(out).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    self.stats.record_drop(DropReason::QueueFull, 1);
                    TransportError::QueueFull {
                        peer: to,
                        capacity: self.config.transport.outbound_queue_len,
                    }
                }
                mpsc::error::TrySendError::Closed(_) => TransportError::Closed { node: self.id },
            })
        })
    }

    async fn recv(&self) -> Result<Envelope<M>, TransportError> {
        self.inbox
            .recv_with(|(env, size_bytes)| {
                self.stats.record_received(size_bytes as u64);
                Some(env)
            })
            .await
    }

    fn stats(&self) -> TransportStats {
        self.stats.snapshot()
    }

    fn fault_rules(&self) -> &FaultRules {
        &self.faults
    }

    fn delivery_order(&self) -> DeliveryOrder {
        DeliveryOrder::Unordered
    }

    async fn shutdown(&self) {
        self.inbox.mark_closed();
        self.direct.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.delay.stop().await;
        let tasks: Vec<_> = self.lock_tasks().drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            // The tasks own the socket: once they have ended, the port is free.
            let _ = t.await;
        }
        self.inbox.close_and_drain().await;
    }
}

impl<M> Drop for UdpTransport<M> {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            t.abort();
        }
    }
}

/// Drains the outbound queue into the socket, chunking frames that do not fit a datagram.
async fn write_loop(
    socket: Arc<UdpSocket>,
    mut rx: mpsc::Receiver<Outgoing>,
    config: UdpConfig,
    stats: Arc<StatsCounters>,
) {
    let chunk_data = config.chunk_data_bytes();
    let mut scratch = Vec::with_capacity(config.max_datagram_bytes);
    while let Some(out) = rx.recv().await {
        let frame_bytes = (out.datagram.len() - WHOLE_HEADER_BYTES) as u64;
        let result = if out.datagram.len() <= config.max_datagram_bytes {
            socket.send_to(&out.datagram, out.addr).await.map(|_| ())
        } else {
            let frame = &out.datagram[WHOLE_HEADER_BYTES..];
            // validate() guarantees the count fits a u16 for any frame within the limit.
            let count = frame.len().div_ceil(chunk_data) as u16;
            let mut result = Ok(());
            for (index, data) in frame.chunks(chunk_data).enumerate() {
                write_chunk_header(
                    &mut scratch,
                    ChunkHeader {
                        msg_id: out.msg_id,
                        index: index as u16,
                        count,
                    },
                );
                scratch.extend_from_slice(data);
                if let Err(e) = socket.send_to(&scratch, out.addr).await {
                    result = Err(e);
                    break;
                }
            }
            result
        };
        match result {
            Ok(()) => stats.record_sent(1, frame_bytes),
            Err(_) => stats.record_drop(DropReason::Io, 1),
        }
    }
}

/// Reads datagrams, reassembles chunks, decodes and checks envelopes, applies drop-from
/// rules and queues the survivors for `recv`.
async fn read_loop<M: Message + Send>(
    socket: Arc<UdpSocket>,
    id: NodeId,
    config: UdpConfig,
    peers: Arc<PeerTable>,
    inbox: mpsc::Sender<(Envelope<M>, usize)>,
    stats: Arc<StatsCounters>,
    faults: FaultRules,
) {
    let timeout = Duration::from_millis(config.reassembly_timeout_ms);
    let max = config.transport.max_frame_bytes;
    let key = config.transport.peer_key;
    let mut reassembly = Reassembly::new(
        config.max_reassembly_buffers,
        timeout,
        max,
        config.max_chunks(),
        config.max_reassembly_bytes,
    );
    let mut buf = vec![0u8; MAX_DATAGRAM_BYTES_LIMIT + 1];
    let mut sweep = tokio::time::interval(timeout / 2);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (n, src) = tokio::select! {
            biased;
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // Linux reports an ICMP "port unreachable" for an earlier send as an error
                // on the next receive; it concerns no datagram in hand.
                Err(_) => continue,
            },
            _ = sweep.tick() => {
                reassembly.expire(Instant::now(), &stats);
                continue;
            }
        };
        let d = &buf[..n];
        let Some(peer) = peers.id_of(&src) else {
            stats.record_drop(DropReason::UnknownPeer, 1);
            continue;
        };
        let decoded = match d.first() {
            Some(&TAG_WHOLE) => {
                codec::decode::<M>(&d[WHOLE_HEADER_BYTES..], max, &key).map(|e| (e, n - 1))
            }
            Some(&TAG_CHUNK) => {
                let Some((h, data)) = parse_chunk(d) else {
                    stats.record_drop(DropReason::DecodeError, 1);
                    continue;
                };
                let Some(frame) = reassembly.insert(peer, h, data, Instant::now(), &stats) else {
                    continue;
                };
                codec::decode::<M>(&frame, max, &key).map(|e| (e, frame.len()))
            }
            _ => {
                stats.record_drop(DropReason::DecodeError, 1);
                continue;
            }
        };
        let (env, size_bytes) = match decoded {
            Ok(x) => x,
            Err(e) => {
                stats.record_drop(DropReason::of_decode_error(&e), 1);
                continue;
            }
        };
        if env.from != peer || env.to != id {
            stats.record_drop(DropReason::Misaddressed, 1);
            continue;
        }
        if faults.drops_from(env.from) {
            stats.record_drop(DropReason::FaultRule, 1);
            continue;
        }
        if inbox.try_send((env, size_bytes)).is_err() {
            stats.record_drop(DropReason::QueueFull, 1);
        }
    }
}

#[cfg(test)]
mod tests;

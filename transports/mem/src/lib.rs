//! # kvlab-transport-mem
//!
//! The in-process [`Transport`]: every node of a [`MemNetwork`] owns a bounded tokio
//! channel (its inbox); sending to a node puts the message straight into that inbox. It
//! runs a whole cluster as tasks of one process in real time — the `mem` transport of
//! `kvlab run --backend local`.
//!
//! **Must never depend on:** sockets, the filesystem, the node or any protocol crate.
//!
//! Design choices:
//!
//! - **Values, not bytes.** Messages travel as values (no encode, no decode), which is
//!   what makes this transport the fast baseline. The frame-size limit is still enforced
//!   exactly: [`codec::frame_size`] runs postcard's size-counting serializer, which does
//!   not allocate (measured in the `transport_echo` bench of `kvlab-transport-udp`). With
//!   [`MemConfig::codec_roundtrip`] every message is encoded and decoded as on a wire,
//!   to prove a message type survives serialization. Frames (the round trip, and bytes
//!   injected with [`MemNetwork::inject_frame`]) are authenticated with
//!   `transport.peer_key` like on a wire; values never leave the process, so they carry
//!   no MAC.
//! - **One bounded queue per receiver.** The receiver's inbox (bound
//!   `inbound_queue_len`) is the only queue; a send into a full inbox is refused with
//!   [`TransportError::QueueFull`] and counted at the sender.
//! - **Order.** Messages from one sender to one receiver arrive in send order
//!   ([`DeliveryOrder::PerPeerFifo`]) as long as the fault rules do not change in
//!   between (a message held by a delay rule can be overtaken once the rule is removed).
//! - **Faults.** The sender consults its [`FaultRules`] (drop, delay, loss); the receiver
//!   consults its own on `recv` (drop-from).
//!
//! ```
//! use kvlab_transport::{FaultRules, Transport};
//! use kvlab_transport_mem::{MemConfig, MemNetwork};
//! use kvlab_types::NodeId;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let net = MemNetwork::<String>::new(MemConfig::default()).unwrap();
//! let a = net.join(NodeId(1), FaultRules::new(1)).unwrap();
//! let b = net.join(NodeId(2), FaultRules::new(2)).unwrap();
//! a.send(NodeId(2), "hello".to_string()).unwrap();
//! let env = b.recv().await.unwrap();
//! assert_eq!((env.from, env.msg.as_str()), (NodeId(1), "hello"));
//! # });
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use kvlab_transport::codec;
use kvlab_transport::{
    DelayLine, DeliveryOrder, DropReason, Envelope, FaultRules, Inbox, StatsCounters, Transport,
    TransportConfig, TransportError, TransportStats, route_send,
};
use kvlab_types::{Message, NodeId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Configuration of an in-process network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemConfig {
    /// The limits shared with the wire transports.
    pub transport: TransportConfig,
    /// Encode and decode every message through the wire codec (slower; proves the message
    /// type round-trips).
    pub codec_roundtrip: bool,
}

/// What an inbox carries: a value (the fast path) or bytes (codec round trip, injected
/// garbage).
enum Packet<M> {
    Value { env: Envelope<M>, size_bytes: usize },
    Frame(Vec<u8>),
}

struct Hub<M> {
    config: MemConfig,
    inboxes: RwLock<BTreeMap<NodeId, mpsc::Sender<Packet<M>>>>,
}

impl<M> Hub<M> {
    fn inboxes(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<NodeId, mpsc::Sender<Packet<M>>>> {
        // The map is valid at every instruction; a poisoned lock only means another thread
        // panicked elsewhere while holding it.
        self.inboxes.read().unwrap_or_else(|p| p.into_inner())
    }
    fn inboxes_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<NodeId, mpsc::Sender<Packet<M>>>> {
        self.inboxes.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `packet` into `to`'s inbox now, counting the outcome in `stats`.
    fn deliver_now(
        &self,
        stats: &StatsCounters,
        to: NodeId,
        packet: Packet<M>,
    ) -> Result<(), TransportError> {
        let size_bytes = match &packet {
            Packet::Value { size_bytes, .. } => *size_bytes,
            Packet::Frame(f) => f.len(),
        };
        let inboxes = self.inboxes();
        let Some(inbox) = inboxes.get(&to) else {
            stats.record_drop(DropReason::UnknownPeer, 1);
            return Err(TransportError::UnknownPeer { peer: to });
        };
        match inbox.try_send(packet) {
            Ok(()) => {
                stats.record_sent(1, size_bytes as u64);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                stats.record_drop(DropReason::QueueFull, 1);
                Err(TransportError::QueueFull {
                    peer: to,
                    capacity: self.config.transport.inbound_queue_len,
                })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The node shut down between the lookup and the send.
                stats.record_drop(DropReason::UnknownPeer, 1);
                Err(TransportError::UnknownPeer { peer: to })
            }
        }
    }
}

/// A set of in-process nodes that can reach each other. Cloning shares the network.
pub struct MemNetwork<M> {
    hub: Arc<Hub<M>>,
}

impl<M> Clone for MemNetwork<M> {
    fn clone(&self) -> Self {
        MemNetwork {
            hub: self.hub.clone(),
        }
    }
}

impl<M> fmt::Debug for MemNetwork<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemNetwork")
            .field("config", &self.hub.config)
            .field("members", &self.hub.inboxes().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<M: Message + Send> MemNetwork<M> {
    /// An empty network with `config` (validated).
    pub fn new(config: MemConfig) -> Result<Self, TransportError> {
        config.transport.validate()?;
        Ok(MemNetwork {
            hub: Arc::new(Hub {
                config,
                inboxes: RwLock::new(BTreeMap::new()),
            }),
        })
    }

    /// Attaches node `id` and returns its transport. Must be called from within a tokio
    /// runtime (the transport runs a delay-line task). An id can be attached again once
    /// its previous transport was shut down or dropped.
    pub fn join(&self, id: NodeId, faults: FaultRules) -> Result<MemTransport<M>, TransportError> {
        let (tx, rx) = mpsc::channel(self.hub.config.transport.inbound_queue_len);
        {
            let mut inboxes = self.hub.inboxes_mut();
            if let Some(existing) = inboxes.get(&id)
                && !existing.is_closed()
            {
                return Err(TransportError::DuplicateNode { node: id });
            }
            inboxes.insert(id, tx.clone());
        }
        let stats = Arc::new(StatsCounters::new());
        let hub = self.hub.clone();
        let line_stats = stats.clone();
        let delay = DelayLine::spawn(
            self.hub.config.transport.max_delayed_messages,
            move |(to, packet)| {
                // Errors are counted by deliver_now; nobody is waiting for them.
                let _ = hub.deliver_now(&line_stats, to, packet);
            },
        );
        Ok(MemTransport {
            id,
            hub: self.hub.clone(),
            inbox: Inbox::new(id, rx),
            own_inbox: tx,
            stats,
            faults,
            delay,
        })
    }

    /// Puts raw bytes into `to`'s inbox, to be decoded there as a frame: how a test plays
    /// a peer that sends garbage.
    pub fn inject_frame(&self, to: NodeId, frame: Vec<u8>) -> Result<(), TransportError> {
        let inboxes = self.hub.inboxes();
        let inbox = inboxes
            .get(&to)
            .ok_or(TransportError::UnknownPeer { peer: to })?;
        inbox
            .try_send(Packet::Frame(frame))
            .map_err(|_| TransportError::QueueFull {
                peer: to,
                capacity: self.hub.config.transport.inbound_queue_len,
            })
    }

    /// The ids attached now, in order.
    pub fn members(&self) -> Vec<NodeId> {
        self.hub
            .inboxes()
            .iter()
            .filter(|(_, tx)| !tx.is_closed())
            .map(|(id, _)| *id)
            .collect()
    }
}

/// One node's end of a [`MemNetwork`].
pub struct MemTransport<M> {
    id: NodeId,
    hub: Arc<Hub<M>>,
    inbox: Inbox<Packet<M>>,
    own_inbox: mpsc::Sender<Packet<M>>,
    stats: Arc<StatsCounters>,
    faults: FaultRules,
    delay: DelayLine<(NodeId, Packet<M>)>,
}

impl<M> fmt::Debug for MemTransport<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemTransport")
            .field("id", &self.id)
            .field("stats", &self.stats.snapshot())
            .finish()
    }
}

impl<M> MemTransport<M> {
    fn detach(&self) {
        let mut inboxes = self.hub.inboxes_mut();
        if inboxes
            .get(&self.id)
            .is_some_and(|tx| tx.same_channel(&self.own_inbox))
        {
            inboxes.remove(&self.id);
        }
    }
}

impl<M: Message + Send> Transport for MemTransport<M> {
    type Msg = M;

    fn local_id(&self) -> NodeId {
        self.id
    }

    fn send(&self, to: NodeId, msg: M) -> Result<(), TransportError> {
        self.inbox.ensure_open()?;
        let config = &self.hub.config;
        let max = config.transport.max_frame_bytes;
        let env = Envelope {
            from: self.id,
            to,
            msg,
        };
        let size_bytes = codec::frame_size(&env)
            .map_err(|source| TransportError::Encode { peer: to, source })?;
        if size_bytes > max {
            self.stats.record_drop(DropReason::Oversize, 1);
            return Err(TransportError::Oversize {
                peer: to,
                size_bytes: size_bytes as u64,
                max_bytes: max,
            });
        }
        if !self.hub.inboxes().contains_key(&to) {
            self.stats.record_drop(DropReason::UnknownPeer, 1);
            return Err(TransportError::UnknownPeer { peer: to });
        }
        let packet = if config.codec_roundtrip {
            let frame = codec::encode(&env, max, &config.transport.peer_key)
                .map_err(|source| TransportError::Encode { peer: to, source })?;
            Packet::Frame(frame)
        } else {
            Packet::Value { env, size_bytes }
        };
        route_send(
            &self.faults,
            &self.stats,
            &self.delay,
            to,
            (to, packet),
            |(to, packet)| self.hub.deliver_now(&self.stats, to, packet),
        )
    }

    async fn recv(&self) -> Result<Envelope<M>, TransportError> {
        let max = self.hub.config.transport.max_frame_bytes;
        let key = &self.hub.config.transport.peer_key;
        self.inbox
            .recv_with(|packet| {
                let (env, size_bytes) = match packet {
                    Packet::Value { env, size_bytes } => (env, size_bytes),
                    Packet::Frame(frame) => match codec::decode::<M>(&frame, max, key) {
                        Ok(env) => (env, frame.len()),
                        Err(e) => {
                            self.stats.record_drop(DropReason::of_decode_error(&e), 1);
                            return None;
                        }
                    },
                };
                if env.to != self.id {
                    self.stats.record_drop(DropReason::Misaddressed, 1);
                    return None;
                }
                if self.faults.drops_from(env.from) {
                    self.stats.record_drop(DropReason::FaultRule, 1);
                    return None;
                }
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
        DeliveryOrder::PerPeerFifo
    }

    async fn shutdown(&self) {
        self.inbox.mark_closed();
        self.detach();
        self.delay.stop().await;
        self.inbox.close_and_drain().await;
    }
}

impl<M> Drop for MemTransport<M> {
    fn drop(&mut self) {
        self.detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvlab_transport::contract::{Harness, TestMsg};

    /// Builds nodes on a fresh network; `roundtrip` selects the codec path.
    #[derive(Debug)]
    struct MemHarness {
        roundtrip: bool,
        network: std::sync::Mutex<Option<MemNetwork<TestMsg>>>,
    }

    impl MemHarness {
        fn new(roundtrip: bool) -> Self {
            MemHarness {
                roundtrip,
                network: std::sync::Mutex::new(None),
            }
        }
        fn network(&self) -> MemNetwork<TestMsg> {
            self.network.lock().unwrap().clone().expect("build() first")
        }
    }

    impl Harness for MemHarness {
        type T = MemTransport<TestMsg>;

        async fn build(&self, n: usize, config: TransportConfig) -> Vec<Self::T> {
            let net = MemNetwork::new(MemConfig {
                transport: config,
                codec_roundtrip: self.roundtrip,
            })
            .unwrap();
            *self.network.lock().unwrap() = Some(net.clone());
            (1..=n as u32)
                .map(|i| net.join(NodeId(i), FaultRules::new(u64::from(i))).unwrap())
                .collect()
        }

        async fn inject_raw(&self, target: &Self::T, bytes: Vec<u8>) {
            self.network()
                .inject_frame(target.local_id(), bytes)
                .unwrap();
        }

        async fn assert_released(&self, shut_down: &Self::T) {
            let net = self.network();
            assert!(!net.members().contains(&shut_down.local_id()));
            let again = net
                .join(shut_down.local_id(), FaultRules::new(0))
                .expect("the id of a shut-down node can join again");
            again.shutdown().await;
        }
    }

    mod values {
        use super::*;
        kvlab_transport::contract_tests!(MemHarness::new(false));
    }

    mod codec_roundtrip {
        use super::*;
        kvlab_transport::contract_tests!(MemHarness::new(true));
    }

    #[tokio::test]
    async fn joining_an_attached_id_twice_is_refused() {
        let net = MemNetwork::<u8>::new(MemConfig::default()).unwrap();
        let _a = net.join(NodeId(1), FaultRules::new(1)).unwrap();
        let err = net.join(NodeId(1), FaultRules::new(1)).unwrap_err();
        assert!(
            matches!(err, TransportError::DuplicateNode { node: NodeId(1) }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn dropping_a_transport_detaches_it() {
        let net = MemNetwork::<u8>::new(MemConfig::default()).unwrap();
        let a = net.join(NodeId(1), FaultRules::new(1)).unwrap();
        let b = net.join(NodeId(2), FaultRules::new(2)).unwrap();
        drop(b);
        assert_eq!(net.members(), vec![NodeId(1)]);
        let err = a.send(NodeId(2), 1).unwrap_err();
        assert!(
            matches!(err, TransportError::UnknownPeer { peer: NodeId(2) }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn invalid_config_is_refused_naming_the_field() {
        let config = MemConfig {
            transport: TransportConfig {
                outbound_queue_len: 0,
                ..TransportConfig::default()
            },
            codec_roundtrip: false,
        };
        let err = MemNetwork::<u8>::new(config).unwrap_err();
        assert!(err.to_string().contains("outbound_queue_len"), "{err}");
    }
}

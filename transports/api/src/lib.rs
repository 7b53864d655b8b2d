//! # kvlab-transport
//!
//! The seam between a kvlab node and the network: the [`Transport`] trait, its error
//! ([`TransportError`]), the wire [`codec`] (re-exported from `kvlab-codec`: a version
//! byte, a length, a CRC-32, the sender and destination, a MAC keyed by the cluster
//! secret and a postcard payload, with a `max_frame_bytes` limit), application-level [`FaultRules`]
//! every implementation consults on send and receive, the [`TransportStats`] every
//! implementation keeps, the [`contract`] test suite every implementation runs, and the
//! plumbing the implementations share ([`PeerTable`], [`Inbox`], [`route_send`],
//! [`oversize_or_encode_error`]).
//!
//! **Must never depend on:** a concrete transport (mem, udp, tarpc), the node, any
//! protocol crate, or the simulator. The simulator does not use this trait at all: it
//! drives sans-IO nodes directly; this crate is for the async server.
//!
//! Implementations: `kvlab-transport-mem` (tokio channels in one process),
//! `kvlab-transport-udp` (one UDP socket per node), `kvlab-transport-tarpc` (a tarpc peer
//! service over TCP).
//!
//! ```
//! use kvlab_transport::{codec, Envelope, FaultRule, FaultRules, PeerKey, SendVerdict, Transport};
//! use kvlab_types::NodeId;
//!
//! // A driver is written once against the trait and runs over any implementation.
//! async fn echo_forever<T: Transport>(t: T) {
//!     while let Ok(env) = t.recv().await {
//!         let _ = t.send(env.from, env.msg); // best effort: a drop is counted, not fatal
//!     }
//! }
//!
//! // Frames carry a version byte, a checksum and a MAC; garbage is a typed error, never a
//! // panic.
//! let key = PeerKey::derive(b"the cluster secret");
//! let env = Envelope { from: NodeId(1), to: NodeId(2), msg: String::from("hello") };
//! let frame = codec::encode(&env, codec::DEFAULT_MAX_FRAME_BYTES, &key).unwrap();
//! assert_eq!(codec::decode::<String>(&frame, codec::DEFAULT_MAX_FRAME_BYTES, &key).unwrap(), env);
//! assert!(codec::decode::<String>(&frame[..3], codec::DEFAULT_MAX_FRAME_BYTES, &key).is_err());
//!
//! // Fault rules are shared values an admin endpoint can change at run time.
//! let rules = FaultRules::new(42);
//! rules.add(FaultRule::DropTo { peer: NodeId(2) }).unwrap();
//! assert_eq!(rules.on_send(NodeId(2)), SendVerdict::Drop);
//! rules.clear();
//! assert_eq!(rules.on_send(NodeId(2)), SendVerdict::Deliver);
//! ```

use std::future::Future;

use kvlab_types::{Message, NodeId};
use serde::{Deserialize, Serialize};

/// The frame codec: see `kvlab-codec` for the format.
pub use kvlab_codec as codec;
pub use kvlab_codec::{ClusterSecret, Envelope, PeerKey, SecretError};
pub mod contract;
mod delay;
mod error;
mod faults;
mod plumbing;
mod stats;

pub use delay::DelayLine;
pub use error::{CodecError, TransportError};
pub use faults::{FaultRule, FaultRules, MAX_FAULT_DELAY_MS, MAX_FAULT_RULES, SendVerdict};
pub use plumbing::{Inbox, PeerTable, oversize_or_encode_error, route_send};
pub use stats::{DropCounts, DropReason, StatsCounters, TransportStats};

/// The delivery order an implementation promises between one sender and one receiver.
/// No implementation promises an order across different senders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOrder {
    /// Messages from one peer that arrive, arrive in the order they were sent (mem: one
    /// channel per receiver; tarpc: one TCP connection per peer, batches in order).
    PerPeerFifo,
    /// Messages may arrive in any order (UDP).
    Unordered,
}

/// Default bound on the outbound queue towards one peer.
pub const DEFAULT_OUTBOUND_QUEUE_LEN: usize = 1024;
/// Default bound on the queue of received envelopes waiting for `recv`.
pub const DEFAULT_INBOUND_QUEUE_LEN: usize = 4096;
/// Default bound on messages held by delay rules at once.
pub const DEFAULT_MAX_DELAYED_MESSAGES: usize = 4096;
/// The largest queue bound a configuration may ask for.
pub const MAX_QUEUE_LEN: usize = 1 << 20;

/// Limits shared by every implementation. Each implementation's own config embeds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Largest frame (header included) a node sends or accepts.
    pub max_frame_bytes: usize,
    /// Messages waiting to leave towards one peer (UDP: towards all peers); beyond it a
    /// send is a counted [`DropReason::QueueFull`].
    pub outbound_queue_len: usize,
    /// Received envelopes waiting for `recv`; beyond it arrivals are counted drops.
    pub inbound_queue_len: usize,
    /// Messages held by delay rules at once; beyond it a delayed send is a counted drop.
    pub max_delayed_messages: usize,
    /// The key every frame is authenticated with (derived from the cluster secret, see
    /// [`ClusterSecret::peer_key`]). Never read from or written to a config file: a node
    /// sets it from its `cluster_secret`. Defaults to [`PeerKey::unauthenticated`].
    #[serde(skip)]
    pub peer_key: PeerKey,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_frame_bytes: codec::DEFAULT_MAX_FRAME_BYTES,
            outbound_queue_len: DEFAULT_OUTBOUND_QUEUE_LEN,
            inbound_queue_len: DEFAULT_INBOUND_QUEUE_LEN,
            max_delayed_messages: DEFAULT_MAX_DELAYED_MESSAGES,
            peer_key: PeerKey::unauthenticated(),
        }
    }
}

impl TransportConfig {
    /// Checks every field is within its range; the error names the field.
    pub fn validate(&self) -> Result<(), TransportError> {
        let min_frame = codec::FRAME_HEADER_BYTES + 16;
        if !(min_frame..=codec::MAX_FRAME_BYTES_LIMIT).contains(&self.max_frame_bytes) {
            return Err(TransportError::InvalidConfig {
                field: "max_frame_bytes",
                reason: format!(
                    "{} is outside [{min_frame}, MAX_FRAME_BYTES_LIMIT = {}]",
                    self.max_frame_bytes,
                    codec::MAX_FRAME_BYTES_LIMIT
                ),
            });
        }
        for (field, v) in [
            ("outbound_queue_len", self.outbound_queue_len),
            ("inbound_queue_len", self.inbound_queue_len),
            ("max_delayed_messages", self.max_delayed_messages),
        ] {
            if !(1..=MAX_QUEUE_LEN).contains(&v) {
                return Err(TransportError::InvalidConfig {
                    field,
                    reason: format!("{v} is outside [1, MAX_QUEUE_LEN = {MAX_QUEUE_LEN}]"),
                });
            }
        }
        Ok(())
    }
}

/// A node's connection to its peers: send to one node, receive from any.
///
/// Contract (checked by [`contract`] for every implementation):
///
/// - [`send`](Transport::send) is best effort and never blocks: it checks the peer and the
///   size limit, consults the fault rules, and puts the message on a bounded queue. A full
///   queue, an unknown peer or an oversize message is returned as a typed error **and**
///   counted; a drop by a fault rule returns `Ok` (to the protocol a partition looks like
///   the network) and is counted. `Ok` never promises delivery. It must be called from
///   within a tokio runtime.
/// - [`recv`](Transport::recv) waits for the next envelope from any peer (or from this
///   node itself). Malformed input is counted and skipped, never returned and never a
///   panic. Several tasks may call it concurrently; each envelope goes to one of them.
/// - [`shutdown`](Transport::shutdown) stops every task and releases sockets before it
///   returns; afterwards `send` and `recv` return [`TransportError::Closed`]. Dropping a
///   transport also stops its tasks, but without waiting.
///
/// The futures are `Send`, so a generic driver can spawn them:
/// `async fn run<T: Transport>(t: T)`.
pub trait Transport: Send + Sync + 'static {
    /// The protocol's message type.
    type Msg: Message + Send;

    /// This node.
    fn local_id(&self) -> NodeId;

    /// Sends `msg` to `to` (which may be this node). Never blocks.
    fn send(&self, to: NodeId, msg: Self::Msg) -> Result<(), TransportError>;

    /// The next envelope addressed to this node.
    fn recv(&self) -> impl Future<Output = Result<Envelope<Self::Msg>, TransportError>> + Send;

    /// A snapshot of the counters.
    fn stats(&self) -> TransportStats;

    /// The fault rules this transport consults (shared: changing them takes effect on the
    /// next message).
    fn fault_rules(&self) -> &FaultRules;

    /// The order this implementation promises between one sender and one receiver.
    fn delivery_order(&self) -> DeliveryOrder;

    /// Stops the transport and releases its resources before returning.
    fn shutdown(&self) -> impl Future<Output = ()> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_bad_fields_are_named() {
        TransportConfig::default().validate().unwrap();
        let bad = TransportConfig {
            inbound_queue_len: 0,
            ..TransportConfig::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("inbound_queue_len"), "{err}");
        let bad = TransportConfig {
            max_frame_bytes: 3,
            ..TransportConfig::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("max_frame_bytes")
        );
    }
}

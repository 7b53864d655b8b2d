//! The errors of the transport boundary: [`TransportError`] for everything a caller of a
//! [`crate::Transport`] can be told. [`CodecError`] (a frame that does not encode or
//! decode) lives in `kvlab-codec` and is re-exported here.

use std::io;
use std::net::SocketAddr;

use kvlab_types::NodeId;

pub use kvlab_codec::CodecError;

/// Everything that can go wrong at the transport boundary. Each variant names the peer or
/// the address involved, so a log line is enough to act on.
///
/// Sending is best effort: a `send` that returns `Ok` may still be lost on the way, and
/// every drop the sender can see is also counted in [`crate::TransportStats`].
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The destination is not in this transport's peer table.
    #[error("no address known for peer {peer}")]
    UnknownPeer {
        /// The destination asked for.
        peer: NodeId,
    },
    /// The encoded message (frame header included) is larger than `max_frame_bytes`.
    #[error(
        "message to {peer} is {size_bytes} bytes on the wire, over max_frame_bytes = {max_bytes}"
    )]
    Oversize {
        /// The destination.
        peer: NodeId,
        /// Encoded size, header included.
        size_bytes: u64,
        /// The limit in force.
        max_bytes: usize,
    },
    /// The bounded outbound queue towards `peer` is full; the message was dropped.
    #[error("outbound queue to {peer} is full ({capacity} messages); message dropped")]
    QueueFull {
        /// The destination.
        peer: NodeId,
        /// The queue's bound.
        capacity: usize,
    },
    /// The message could not be encoded.
    #[error("encoding a message to {peer}: {source}")]
    Encode {
        /// The destination.
        peer: NodeId,
        /// The codec's reason.
        #[source]
        source: CodecError,
    },
    /// The transport of `node` was shut down; it neither sends nor receives any more.
    #[error("the transport of {node} is shut down")]
    Closed {
        /// The local node.
        node: NodeId,
    },
    /// A socket could not be bound.
    #[error("node {node} could not bind {addr}: {source}")]
    Bind {
        /// The local node.
        node: NodeId,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Another socket operation failed.
    #[error("i/o error on {addr} (peer {peer:?}): {source}")]
    Io {
        /// The peer involved, if one is.
        peer: Option<NodeId>,
        /// The local or remote address involved.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A node id was registered twice on the same network (in-process transport).
    #[error("node {node} is already attached to this network")]
    DuplicateNode {
        /// The id registered twice.
        node: NodeId,
    },
    /// A fault rule was refused.
    #[error("invalid fault rule {rule}: {reason}")]
    InvalidFaultRule {
        /// The rule, as written.
        rule: String,
        /// Why it is refused.
        reason: String,
    },
    /// A configuration field is out of range.
    #[error("invalid transport config field `{field}`: {reason}")]
    InvalidConfig {
        /// The field's name.
        field: &'static str,
        /// Why the value is refused.
        reason: String,
    },
}

impl TransportError {
    /// Turns the OS error of binding `addr` for `node` into [`TransportError::Bind`]
    /// (for `map_err` on the bind and on reading back the bound address).
    pub fn bind_failed(node: NodeId, addr: SocketAddr) -> impl FnOnce(io::Error) -> Self {
        move |source| TransportError::Bind { node, addr, source }
    }
}

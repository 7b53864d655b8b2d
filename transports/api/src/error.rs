//! The errors of the transport boundary: [`TransportError`] for everything a caller of a
//! [`crate::Transport`] can be told, [`CodecError`] for a frame that does not encode or
//! decode.

use std::io;
use std::net::SocketAddr;

use kvlab_types::NodeId;

/// Why a frame could not be encoded or decoded. Decoding never panics: every malformed
/// input maps to one of these variants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The first byte names a codec version this build does not speak (or the input is not
    /// a kvlab frame at all).
    #[error("frame has codec version {found}, this build speaks version {expected}")]
    BadVersion {
        /// The version byte found.
        found: u8,
        /// [`crate::codec::CODEC_VERSION`].
        expected: u8,
    },
    /// The frame (header included) is larger than the configured `max_frame_bytes`.
    #[error("frame of {len_bytes} bytes exceeds the limit max_frame_bytes = {max_bytes}")]
    TooLarge {
        /// Size of the whole frame, header included.
        len_bytes: u64,
        /// The limit in force.
        max_bytes: usize,
    },
    /// The input ends before the header or the announced payload does.
    #[error("truncated frame: need {needed_bytes} bytes, have {have_bytes}")]
    Truncated {
        /// Bytes the header announced (or the header size).
        needed_bytes: u64,
        /// Bytes present.
        have_bytes: usize,
    },
    /// The payload's CRC-32 does not match the header: the bytes were corrupted or are not
    /// a frame.
    #[error("frame checksum mismatch: header says {expected:#010x}, payload has {found:#010x}")]
    Checksum {
        /// CRC-32 stored in the header.
        expected: u32,
        /// CRC-32 of the payload received.
        found: u32,
    },
    /// The payload passed the checksum but does not deserialize into an envelope of the
    /// expected message type (a peer running another message schema, or trailing bytes).
    #[error("frame payload does not decode: {reason}")]
    Garbage {
        /// What the deserializer said.
        reason: String,
    },
    /// More bytes follow a complete frame where exactly one frame was expected.
    #[error("{trailing_bytes} unexpected bytes after a complete frame")]
    TrailingBytes {
        /// How many.
        trailing_bytes: usize,
    },
    /// The message could not be serialized (a serde `Serialize` impl failed).
    #[error("message does not encode: {reason}")]
    Encode {
        /// What the serializer said.
        reason: String,
    },
}

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

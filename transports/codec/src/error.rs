//! [`CodecError`]: why a frame could not be encoded or decoded.

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
        /// [`crate::CODEC_VERSION`].
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
    /// The frame is intact (its checksum matches) but its MAC does not verify under this
    /// node's key: it was not made by a holder of the cluster secret, or it was altered
    /// by one who computed a new checksum. Its payload was not deserialized.
    #[error(
        "frame claiming to be from {from} to {to} fails its MAC: not made with the cluster secret"
    )]
    Unauthenticated {
        /// The sender the header claims.
        from: NodeId,
        /// The destination the header names.
        to: NodeId,
    },
    /// The payload passed the checksum and the MAC but does not deserialize into an envelope of the
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

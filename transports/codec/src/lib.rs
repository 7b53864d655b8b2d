//! # kvlab-codec
//!
//! The peer frame codec every byte-carrying kvlab transport uses (UDP, tarpc, the
//! in-process transport's codec round trip, and the simulator's corruption and forgery
//! faults), and the cluster secret that keys it. Re-exported by `kvlab-transport` as
//! `kvlab_transport::codec`.
//!
//! **Must never depend on:** tokio or any runtime, sockets, files, the wall clock, any
//! transport, the node or a protocol crate. The deterministic simulator links it.
//!
//! ## Frame format (version 2)
//!
//! A frame is a 33-byte header followed by a postcard payload (the protocol message):
//!
//! ```text
//! offset  0   u8        CODEC_VERSION (2)
//! offset  1   u32 LE    payload length in bytes
//! offset  5   u32 LE    CRC-32 (IEEE) of bytes 0..5 ++ bytes 9..end (everything but itself)
//! offset  9   u32 LE    sender node id (`from`)
//! offset 13   u32 LE    destination node id (`to`)
//! offset 17   [u8; 16]  MAC: BLAKE3 keyed hash (key: the [`PeerKey`]) of
//!                       bytes 0..5 ++ bytes 9..17 ++ payload, truncated to 16 bytes
//! offset 33   ...       postcard(msg)
//! ```
//!
//! - The **version byte** lets a node refuse a peer that speaks another format instead of
//!   misreading it (version 1 had no ids or MAC in the header).
//! - The **length** makes frames self-delimiting on a stream; a length over
//!   `max_frame_bytes` is refused before anything is read or allocated.
//! - The **CRC-32** catches corruption (every single-bit flip and every burst of up to 32
//!   bits, header included) and reports it as [`CodecError::Checksum`], so a damaged
//!   frame is told apart from a forged one.
//! - The **MAC** authenticates the frame: only a holder of the cluster secret can make
//!   one that verifies. It covers the version, the length, the claimed sender, the
//!   destination and the payload, so a frame cannot be re-attributed to another sender
//!   or re-addressed without the key. A frame that fails it is
//!   [`CodecError::Unauthenticated`] and is **never** deserialized: hostile bytes never
//!   reach the message decoder, let alone a protocol.
//!
//! BLAKE3 in keyed mode is a PRF; 16 bytes of its output leave a forger one chance in
//! 2^128 per attempt. The key is derived from the cluster secret with BLAKE3's
//! `derive_key` under a fixed context string ([`MAC_KEY_CONTEXT`]), so the secret itself
//! is never used as a key directly and may have any length of at least
//! [`MIN_CLUSTER_SECRET_BYTES`].
//!
//! **What the MAC does not do.** The secret is shared by the whole cluster: a node that
//! holds it can still claim any sender id (per-node keys would need a secret per node).
//! There is no replay protection: a captured frame can be sent again. The protocols
//! tolerate duplicates (UDP duplicates packets anyway), and the wire transports also
//! check that the sender id matches the peer the frame came from (UDP) — a replay from
//! elsewhere is dropped as misaddressed. Frames are authenticated, not encrypted.
//!
//! Without a configured secret a transport uses [`PeerKey::unauthenticated`], a
//! well-known key: the MAC then only works as a second checksum. Node configurations
//! require a secret.
//!
//! ```
//! use kvlab_codec::{decode, encode, ClusterSecret, CodecError, Envelope, PeerKey, DEFAULT_MAX_FRAME_BYTES};
//! use kvlab_types::NodeId;
//!
//! let secret: ClusterSecret = "00112233445566778899aabbccddeeff".parse().unwrap();
//! let key = secret.peer_key();
//! let env = Envelope { from: NodeId(1), to: NodeId(2), msg: String::from("hello") };
//! let frame = encode(&env, DEFAULT_MAX_FRAME_BYTES, &key).unwrap();
//! assert_eq!(decode::<String>(&frame, DEFAULT_MAX_FRAME_BYTES, &key).unwrap(), env);
//!
//! // Without the secret a frame does not verify, and its payload is never decoded.
//! let forged = encode(&env, DEFAULT_MAX_FRAME_BYTES, &PeerKey::unauthenticated()).unwrap();
//! assert!(matches!(
//!     decode::<String>(&forged, DEFAULT_MAX_FRAME_BYTES, &key),
//!     Err(CodecError::Unauthenticated { .. })
//! ));
//! // A flipped bit is a checksum error, told apart from a forgery.
//! let mut damaged = frame.clone();
//! damaged[35] ^= 1;
//! assert!(matches!(
//!     decode::<String>(&damaged, DEFAULT_MAX_FRAME_BYTES, &key),
//!     Err(CodecError::Checksum { .. })
//! ));
//! ```

use kvlab_types::NodeId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod error;
mod secret;

pub use error::CodecError;
pub use secret::{
    ClusterSecret, MAC_KEY_CONTEXT, MAX_CLUSTER_SECRET_BYTES, MIN_CLUSTER_SECRET_BYTES, PeerKey,
    SecretError,
};

/// One message on its way between two nodes. Both ends are named so a receiver can check
/// the envelope was meant for it and attribute it to a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<M> {
    /// The sending node.
    pub from: NodeId,
    /// The destination node.
    pub to: NodeId,
    /// The protocol message.
    pub msg: M,
}

/// The version byte this build writes and accepts. Bump it whenever the header layout,
/// the MAC or the payload encoding changes.
pub const CODEC_VERSION: u8 = 2;

/// Bytes of the MAC carried in a frame.
pub const MAC_BYTES: usize = 16;

/// Size of the frame header in bytes: version (1), length (4), CRC-32 (4), from (4),
/// to (4), MAC (16).
pub const FRAME_HEADER_BYTES: usize = 1 + 4 + 4 + 4 + 4 + MAC_BYTES;

const LEN_AT: usize = 1;
const CRC_AT: usize = 5;
const FROM_AT: usize = 9;
const TO_AT: usize = 13;
const MAC_AT: usize = 17;

/// Default bound on a whole frame, header included: 1 MiB. Raft snapshots larger than
/// this must be split by the protocol (or sent over a stream transport with a raised
/// limit).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;

/// The largest `max_frame_bytes` any configuration may ask for: 64 MiB. The length field
/// could say 4 GiB; this keeps a single frame from exhausting memory.
pub const MAX_FRAME_BYTES_LIMIT: usize = 64 << 20;

fn mac_of(key: &PeerKey, frame: &[u8], payload: &[u8]) -> [u8; MAC_BYTES] {
    let mut h = blake3::Hasher::new_keyed(key.as_bytes());
    h.update(&frame[..CRC_AT]);
    h.update(&frame[FROM_AT..MAC_AT]);
    h.update(payload);
    let full = h.finalize();
    let mut out = [0u8; MAC_BYTES];
    out.copy_from_slice(&full.as_bytes()[..MAC_BYTES]);
    out
}

fn crc_of(frame: &[u8], total: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&frame[..CRC_AT]);
    h.update(&frame[FROM_AT..total]);
    h.finalize()
}

/// Compares two MACs in time independent of where they first differ.
fn macs_match(a: &[u8; MAC_BYTES], b: &[u8]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    diff == 0 && b.len() == MAC_BYTES
}

fn le32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Encodes `env` as one frame authenticated with `key`, appended to `buf`, and returns
/// the frame's length.
///
/// On error `buf` is left as it was.
pub fn encode_into<M: Serialize>(
    env: &Envelope<M>,
    max_frame_bytes: usize,
    key: &PeerKey,
    buf: &mut Vec<u8>,
) -> Result<usize, CodecError> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    if let Err(e) = postcard::to_extend(&env.msg, AppendTo(buf)) {
        buf.truncate(start);
        return Err(CodecError::Encode {
            reason: e.to_string(),
        });
    }
    let frame_len = buf.len() - start;
    let payload_len = frame_len - FRAME_HEADER_BYTES;
    // The length field carries a u32; refuse anything it cannot say even if a caller's
    // max_frame_bytes is larger.
    let len32 = match u32::try_from(payload_len) {
        Ok(n) if frame_len <= max_frame_bytes => n,
        _ => {
            buf.truncate(start);
            return Err(CodecError::TooLarge {
                len_bytes: frame_len as u64,
                max_bytes: max_frame_bytes,
            });
        }
    };
    let frame = &mut buf[start..];
    frame[0] = CODEC_VERSION;
    frame[LEN_AT..CRC_AT].copy_from_slice(&len32.to_le_bytes());
    frame[FROM_AT..TO_AT].copy_from_slice(&env.from.0.to_le_bytes());
    frame[TO_AT..MAC_AT].copy_from_slice(&env.to.0.to_le_bytes());
    let (head, payload) = frame.split_at_mut(FRAME_HEADER_BYTES);
    let mac = mac_of(key, head, payload);
    head[MAC_AT..].copy_from_slice(&mac);
    let crc = crc_of(frame, frame_len);
    frame[CRC_AT..FROM_AT].copy_from_slice(&crc.to_le_bytes());
    Ok(frame_len)
}

/// Lets postcard append to a borrowed buffer, so that a failed encode can be rolled back
/// without losing what the caller had in it.
struct AppendTo<'a>(&'a mut Vec<u8>);

impl Extend<u8> for AppendTo<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

/// Encodes `env` as one frame authenticated with `key`, in a fresh buffer.
pub fn encode<M: Serialize>(
    env: &Envelope<M>,
    max_frame_bytes: usize,
    key: &PeerKey,
) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::new();
    encode_into(env, max_frame_bytes, key, &mut buf)?;
    Ok(buf)
}

/// The size `env` would have as a frame (header included), computed without allocating.
/// The in-process transport uses it to enforce the same size limit as the wire
/// transports without encoding.
pub fn frame_size<M: Serialize>(env: &Envelope<M>) -> Result<usize, CodecError> {
    postcard::experimental::serialized_size(&env.msg)
        .map(|n| n + FRAME_HEADER_BYTES)
        .map_err(|e| CodecError::Encode {
            reason: e.to_string(),
        })
}

/// Reads and checks a frame header at the start of `buf`: returns the whole frame's length
/// once the version and length are readable and acceptable. A stream reader calls it to
/// learn how many bytes to wait for.
pub fn frame_len(buf: &[u8], max_frame_bytes: usize) -> Result<usize, CodecError> {
    let Some(&version) = buf.first() else {
        return Err(CodecError::Truncated {
            needed_bytes: FRAME_HEADER_BYTES as u64,
            have_bytes: 0,
        });
    };
    if version != CODEC_VERSION {
        return Err(CodecError::BadVersion {
            found: version,
            expected: CODEC_VERSION,
        });
    }
    if buf.len() < FRAME_HEADER_BYTES {
        return Err(CodecError::Truncated {
            needed_bytes: FRAME_HEADER_BYTES as u64,
            have_bytes: buf.len(),
        });
    }
    let payload_len = u64::from(le32(buf, LEN_AT));
    let total = payload_len + FRAME_HEADER_BYTES as u64;
    if total > max_frame_bytes as u64 {
        return Err(CodecError::TooLarge {
            len_bytes: total,
            max_bytes: max_frame_bytes,
        });
    }
    // total <= max_frame_bytes, which is a usize.
    Ok(total as usize)
}

/// Checks the frame at the start of `buf` — version, length, checksum, then the MAC
/// under `key` — without deserializing its payload. Returns the claimed sender and
/// destination, the payload, and the frame's length.
pub fn verify_prefix<'a>(
    buf: &'a [u8],
    max_frame_bytes: usize,
    key: &PeerKey,
) -> Result<(NodeId, NodeId, &'a [u8], usize), CodecError> {
    let total = frame_len(buf, max_frame_bytes)?;
    if buf.len() < total {
        return Err(CodecError::Truncated {
            needed_bytes: total as u64,
            have_bytes: buf.len(),
        });
    }
    let expected = le32(buf, CRC_AT);
    let found = crc_of(buf, total);
    if found != expected {
        return Err(CodecError::Checksum { expected, found });
    }
    let from = NodeId(le32(buf, FROM_AT));
    let to = NodeId(le32(buf, TO_AT));
    let payload = &buf[FRAME_HEADER_BYTES..total];
    let mac = mac_of(key, buf, payload);
    if !macs_match(&mac, &buf[MAC_AT..FRAME_HEADER_BYTES]) {
        return Err(CodecError::Unauthenticated { from, to });
    }
    Ok((from, to, payload, total))
}

/// Decodes the frame at the start of `buf`, checking it was made with `key`; returns the
/// envelope and the number of bytes the frame used. Bytes after the frame are left alone
/// (the next frame of a batch or a stream). The payload is deserialized only after the
/// checksum and the MAC verified.
pub fn decode_prefix<M: DeserializeOwned>(
    buf: &[u8],
    max_frame_bytes: usize,
    key: &PeerKey,
) -> Result<(Envelope<M>, usize), CodecError> {
    let (from, to, payload, total) = verify_prefix(buf, max_frame_bytes, key)?;
    let (msg, rest) = postcard::take_from_bytes::<M>(payload).map_err(|e| CodecError::Garbage {
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(CodecError::Garbage {
            reason: format!("{} payload bytes left after the message", rest.len()),
        });
    }
    Ok((Envelope { from, to, msg }, total))
}

/// Decodes `buf`, which must hold exactly one frame made with `key` (a datagram, an
/// in-process frame).
pub fn decode<M: DeserializeOwned>(
    buf: &[u8],
    max_frame_bytes: usize,
    key: &PeerKey,
) -> Result<Envelope<M>, CodecError> {
    let (env, used) = decode_prefix(buf, max_frame_bytes, key)?;
    if used != buf.len() {
        return Err(CodecError::TrailingBytes {
            trailing_bytes: buf.len() - used,
        });
    }
    Ok(env)
}

/// Builds a frame around `payload` with a correct checksum and the given MAC bytes, for
/// tests that need a frame that passes the checksum but not the MAC, or whose payload is
/// not a message at all. Not used by any transport.
pub fn frame_with_raw_payload(from: NodeId, to: NodeId, payload: &[u8], key: &PeerKey) -> Vec<u8> {
    let total = FRAME_HEADER_BYTES + payload.len();
    let mut frame = vec![0u8; FRAME_HEADER_BYTES];
    frame.extend_from_slice(payload);
    frame[0] = CODEC_VERSION;
    frame[LEN_AT..CRC_AT].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    frame[FROM_AT..TO_AT].copy_from_slice(&from.0.to_le_bytes());
    frame[TO_AT..MAC_AT].copy_from_slice(&to.0.to_le_bytes());
    let mac = mac_of(key, &frame, payload);
    frame[MAC_AT..FRAME_HEADER_BYTES].copy_from_slice(&mac);
    let crc = crc_of(&frame, total);
    frame[CRC_AT..FROM_AT].copy_from_slice(&crc.to_le_bytes());
    frame
}

#[cfg(test)]
mod tests;

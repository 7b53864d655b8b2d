//! The wire codec every byte-carrying transport uses.
//!
//! A frame is a 9-byte header followed by a postcard payload:
//!
//! ```text
//! offset 0   u8      CODEC_VERSION
//! offset 1   u32 LE  payload length in bytes
//! offset 5   u32 LE  CRC-32 (IEEE) of the payload
//! offset 9   ...     postcard(Envelope { from, to, msg })
//! ```
//!
//! The version byte lets a node refuse a peer that speaks another format instead of
//! misreading it; the length makes frames self-delimiting on a stream; the checksum turns
//! random garbage that happens to parse into a typed [`CodecError::Checksum`] instead of a
//! wrong message (UDP and TCP checksums are weak and do not cover a buggy or hostile
//! sender). Every limit is checked before any allocation: a header announcing a payload
//! over `max_frame_bytes` is refused without reading it.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{CodecError, Envelope};

/// The version byte this build writes and accepts. Bump it whenever the envelope layout
/// or the payload encoding changes.
pub const CODEC_VERSION: u8 = 1;

/// Size of the frame header in bytes: version (1), length (4), CRC-32 (4).
pub const FRAME_HEADER_BYTES: usize = 9;

/// Default bound on a whole frame, header included: 1 MiB. Raft snapshots larger than
/// this must be split by the protocol (or sent over a stream transport with a raised
/// limit).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;

/// The largest `max_frame_bytes` any configuration may ask for: 64 MiB. The length field
/// could say 4 GiB; this keeps a single frame from exhausting memory.
pub const MAX_FRAME_BYTES_LIMIT: usize = 64 << 20;

/// Encodes `env` as one frame appended to `buf`, and returns the frame's length.
///
/// On error `buf` is left as it was.
pub fn encode_into<M: Serialize>(
    env: &Envelope<M>,
    max_frame_bytes: usize,
    buf: &mut Vec<u8>,
) -> Result<usize, CodecError> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    if let Err(e) = postcard::to_extend(env, AppendTo(buf)) {
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
    let crc = crc32fast::hash(&buf[start + FRAME_HEADER_BYTES..]);
    buf[start] = CODEC_VERSION;
    buf[start + 1..start + 5].copy_from_slice(&len32.to_le_bytes());
    buf[start + 5..start + 9].copy_from_slice(&crc.to_le_bytes());
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

/// Encodes `env` as one frame in a fresh buffer.
pub fn encode<M: Serialize>(
    env: &Envelope<M>,
    max_frame_bytes: usize,
) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::new();
    encode_into(env, max_frame_bytes, &mut buf)?;
    Ok(buf)
}

/// The size `env` would have as a frame (header included), computed without allocating.
/// The in-process transport uses it to enforce the same size limit as the wire
/// transports without encoding.
pub fn frame_size<M: Serialize>(env: &Envelope<M>) -> Result<usize, CodecError> {
    postcard::experimental::serialized_size(env)
        .map(|n| n + FRAME_HEADER_BYTES)
        .map_err(|e| CodecError::Encode {
            reason: e.to_string(),
        })
}

/// Reads and checks a frame header at the start of `buf`: returns the whole frame's length
/// once the header is complete and acceptable. A stream reader calls it to learn how many
/// bytes to wait for.
pub fn frame_len(buf: &[u8], max_frame_bytes: usize) -> Result<usize, CodecError> {
    if buf.is_empty() {
        return Err(CodecError::Truncated {
            needed_bytes: FRAME_HEADER_BYTES as u64,
            have_bytes: 0,
        });
    }
    if buf[0] != CODEC_VERSION {
        return Err(CodecError::BadVersion {
            found: buf[0],
            expected: CODEC_VERSION,
        });
    }
    if buf.len() < FRAME_HEADER_BYTES {
        return Err(CodecError::Truncated {
            needed_bytes: FRAME_HEADER_BYTES as u64,
            have_bytes: buf.len(),
        });
    }
    let payload_len = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]) as u64;
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

/// Decodes the frame at the start of `buf`, returning the envelope and the number of bytes
/// it used. Bytes after the frame are left alone (the next frame of a batch or a stream).
pub fn decode_prefix<M: DeserializeOwned>(
    buf: &[u8],
    max_frame_bytes: usize,
) -> Result<(Envelope<M>, usize), CodecError> {
    let total = frame_len(buf, max_frame_bytes)?;
    if buf.len() < total {
        return Err(CodecError::Truncated {
            needed_bytes: total as u64,
            have_bytes: buf.len(),
        });
    }
    let expected = u32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]);
    let payload = &buf[FRAME_HEADER_BYTES..total];
    let found = crc32fast::hash(payload);
    if found != expected {
        return Err(CodecError::Checksum { expected, found });
    }
    let (env, rest) =
        postcard::take_from_bytes::<Envelope<M>>(payload).map_err(|e| CodecError::Garbage {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(CodecError::Garbage {
            reason: format!("{} payload bytes left after the envelope", rest.len()),
        });
    }
    Ok((env, total))
}

/// Decodes `buf`, which must hold exactly one frame (a datagram, an in-process frame).
pub fn decode<M: DeserializeOwned>(
    buf: &[u8],
    max_frame_bytes: usize,
) -> Result<Envelope<M>, CodecError> {
    let (env, used) = decode_prefix(buf, max_frame_bytes)?;
    if used != buf.len() {
        return Err(CodecError::TrailingBytes {
            trailing_bytes: buf.len() - used,
        });
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvlab_types::NodeId;
    use serde::Deserialize;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Msg {
        seq: u64,
        body: Vec<u8>,
    }

    fn env(body_len: usize) -> Envelope<Msg> {
        Envelope {
            from: NodeId(1),
            to: NodeId(2),
            msg: Msg {
                seq: 7,
                body: vec![0xAB; body_len],
            },
        }
    }

    #[test]
    fn frame_round_trips_and_reports_its_size() {
        let e = env(100);
        let frame = encode(&e, DEFAULT_MAX_FRAME_BYTES).unwrap();
        assert_eq!(frame[0], CODEC_VERSION);
        assert_eq!(frame.len(), frame_size(&e).unwrap());
        assert_eq!(
            frame_len(&frame, DEFAULT_MAX_FRAME_BYTES).unwrap(),
            frame.len()
        );
        let back: Envelope<Msg> = decode(&frame, DEFAULT_MAX_FRAME_BYTES).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn encode_over_the_limit_is_too_large_and_leaves_the_buffer_alone() {
        let mut buf = vec![1, 2, 3];
        let err = encode_into(&env(200), 100, &mut buf).unwrap_err();
        assert!(
            matches!(err, CodecError::TooLarge { max_bytes: 100, .. }),
            "{err}"
        );
        assert_eq!(buf, [1, 2, 3]);
    }

    #[test]
    fn frames_concatenate_and_decode_in_sequence() {
        let mut buf = Vec::new();
        for n in 0..3 {
            encode_into(&env(n * 10), DEFAULT_MAX_FRAME_BYTES, &mut buf).unwrap();
        }
        let mut at = 0;
        let mut lens = Vec::new();
        while at < buf.len() {
            let (e, used): (Envelope<Msg>, usize) =
                decode_prefix(&buf[at..], DEFAULT_MAX_FRAME_BYTES).unwrap();
            lens.push(e.msg.body.len());
            at += used;
        }
        assert_eq!(lens, [0, 10, 20]);
    }

    #[test]
    fn wrong_version_is_bad_version() {
        let mut frame = encode(&env(4), DEFAULT_MAX_FRAME_BYTES).unwrap();
        frame[0] = 9;
        let err = decode::<Msg>(&frame, DEFAULT_MAX_FRAME_BYTES).unwrap_err();
        assert_eq!(
            err,
            CodecError::BadVersion {
                found: 9,
                expected: CODEC_VERSION
            }
        );
    }

    #[test]
    fn every_truncation_is_truncated_never_a_panic() {
        let frame = encode(&env(50), DEFAULT_MAX_FRAME_BYTES).unwrap();
        for cut in 0..frame.len() {
            let err = decode::<Msg>(&frame[..cut], DEFAULT_MAX_FRAME_BYTES).unwrap_err();
            assert!(
                matches!(err, CodecError::Truncated { .. }),
                "cut {cut}: {err}"
            );
        }
    }

    #[test]
    fn announced_length_over_the_limit_is_refused_before_reading() {
        let mut frame = vec![CODEC_VERSION];
        frame.extend_from_slice(&u32::MAX.to_le_bytes());
        frame.extend_from_slice(&[0; 4]);
        let err = decode::<Msg>(&frame, 4096).unwrap_err();
        assert!(
            matches!(
                err,
                CodecError::TooLarge {
                    max_bytes: 4096,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn flipped_payload_bit_fails_the_checksum() {
        let mut frame = encode(&env(50), DEFAULT_MAX_FRAME_BYTES).unwrap();
        let last = frame.len() - 1;
        frame[last] ^= 0x01;
        let err = decode::<Msg>(&frame, DEFAULT_MAX_FRAME_BYTES).unwrap_err();
        assert!(matches!(err, CodecError::Checksum { .. }), "{err}");
    }

    #[test]
    fn payload_of_another_schema_with_a_valid_checksum_is_garbage() {
        // A well-formed frame whose payload is not an Envelope<Msg>: just three bytes.
        let payload = [0xFFu8, 0xFF, 0xFF];
        let mut frame = vec![CODEC_VERSION];
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        let err = decode::<Msg>(&frame, DEFAULT_MAX_FRAME_BYTES).unwrap_err();
        assert!(matches!(err, CodecError::Garbage { .. }), "{err}");
    }

    #[test]
    fn bytes_after_a_single_frame_are_trailing_bytes() {
        let mut frame = encode(&env(5), DEFAULT_MAX_FRAME_BYTES).unwrap();
        frame.extend_from_slice(&[1, 2]);
        let err = decode::<Msg>(&frame, DEFAULT_MAX_FRAME_BYTES).unwrap_err();
        assert_eq!(err, CodecError::TrailingBytes { trailing_bytes: 2 });
    }

    #[test]
    fn seeded_random_inputs_never_panic_the_decoder() {
        use rand::RngExt;
        let mut rng = kvlab_types::seeded_rng(5);
        let good = encode(&env(30), DEFAULT_MAX_FRAME_BYTES).unwrap();
        for i in 0..20_000 {
            let buf: Vec<u8> = if i % 2 == 0 {
                let len = rng.random_range(0..64usize);
                (0..len).map(|_| rng.random::<u8>()).collect()
            } else {
                // Mutate one byte of a good frame.
                let mut b = good.clone();
                let at = rng.random_range(0..b.len());
                b[at] = rng.random::<u8>();
                b
            };
            let _ = decode::<Msg>(&buf, DEFAULT_MAX_FRAME_BYTES);
        }
    }
}

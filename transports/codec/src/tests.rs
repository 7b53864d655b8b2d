use super::*;
use kvlab_types::NodeId;
use rand::RngExt;
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

fn key() -> PeerKey {
    ClusterSecret::from_entropy(b"codec tests").peer_key()
}

const MAX: usize = DEFAULT_MAX_FRAME_BYTES;

#[test]
fn frame_round_trips_and_reports_its_size() {
    let e = env(100);
    let frame = encode(&e, MAX, &key()).unwrap();
    assert_eq!(frame[0], CODEC_VERSION);
    assert_eq!(frame.len(), frame_size(&e).unwrap());
    assert_eq!(frame_len(&frame, MAX).unwrap(), frame.len());
    let back: Envelope<Msg> = decode(&frame, MAX, &key()).unwrap();
    assert_eq!(back, e);
}

#[test]
fn encode_over_the_limit_is_too_large_and_leaves_the_buffer_alone() {
    let mut buf = vec![1, 2, 3];
    let err = encode_into(&env(200), 100, &key(), &mut buf).unwrap_err();
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
        encode_into(&env(n * 10), MAX, &key(), &mut buf).unwrap();
    }
    let mut at = 0;
    let mut lens = Vec::new();
    while at < buf.len() {
        let (e, used): (Envelope<Msg>, usize) = decode_prefix(&buf[at..], MAX, &key()).unwrap();
        lens.push(e.msg.body.len());
        at += used;
    }
    assert_eq!(lens, [0, 10, 20]);
}

#[test]
fn wrong_version_is_bad_version() {
    let mut frame = encode(&env(4), MAX, &key()).unwrap();
    frame[0] = 9;
    let err = decode::<Msg>(&frame, MAX, &key()).unwrap_err();
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
    let frame = encode(&env(50), MAX, &key()).unwrap();
    for cut in 0..frame.len() {
        let err = decode::<Msg>(&frame[..cut], MAX, &key()).unwrap_err();
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
    frame.extend_from_slice(&[0; FRAME_HEADER_BYTES - 5]);
    let err = decode::<Msg>(&frame, 4096, &key()).unwrap_err();
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
fn every_single_bit_flip_is_a_checksum_error() {
    let frame = encode(&env(50), MAX, &key()).unwrap();
    for bit in 0..frame.len() * 8 {
        let mut f = frame.clone();
        f[bit / 8] ^= 1 << (bit % 8);
        let err = decode::<Msg>(&f, MAX, &key()).unwrap_err();
        // The version byte and the length are read first; every other flip is caught by
        // the checksum.
        if bit / 8 == 0 {
            assert!(
                matches!(err, CodecError::BadVersion { .. }),
                "bit {bit}: {err}"
            );
        } else if (1..5).contains(&(bit / 8)) {
            assert!(
                matches!(
                    err,
                    CodecError::TooLarge { .. }
                        | CodecError::Truncated { .. }
                        | CodecError::Checksum { .. }
                        | CodecError::TrailingBytes { .. }
                ),
                "bit {bit}: {err}"
            );
        } else {
            assert!(
                matches!(err, CodecError::Checksum { .. }),
                "bit {bit}: {err}"
            );
        }
    }
}

#[test]
fn a_frame_made_with_another_key_is_unauthenticated() {
    let other = ClusterSecret::from_entropy(b"another cluster").peer_key();
    let frame = encode(&env(10), MAX, &other).unwrap();
    let err = decode::<Msg>(&frame, MAX, &key()).unwrap_err();
    assert_eq!(
        err,
        CodecError::Unauthenticated {
            from: NodeId(1),
            to: NodeId(2)
        }
    );
    let public = encode(&env(10), MAX, &PeerKey::unauthenticated()).unwrap();
    assert!(matches!(
        decode::<Msg>(&public, MAX, &key()),
        Err(CodecError::Unauthenticated { .. })
    ));
}

#[test]
fn rewriting_the_sender_or_destination_breaks_the_mac() {
    // An attacker who can recompute the CRC but not the MAC re-labels a genuine frame.
    let frame = encode(&env(10), MAX, &key()).unwrap();
    for (at, what) in [(FROM_AT, "sender"), (TO_AT, "destination")] {
        let mut f = frame.clone();
        f[at..at + 4].copy_from_slice(&3u32.to_le_bytes());
        let total = f.len();
        let crc = crc_of(&f, total);
        f[CRC_AT..FROM_AT].copy_from_slice(&crc.to_le_bytes());
        let err = decode::<Msg>(&f, MAX, &key()).unwrap_err();
        assert!(
            matches!(err, CodecError::Unauthenticated { .. }),
            "{what}: {err}"
        );
    }
}

#[test]
fn payload_of_another_schema_with_a_valid_mac_is_garbage() {
    let frame = frame_with_raw_payload(NodeId(1), NodeId(2), &[0xFF, 0xFF, 0xFF], &key());
    let err = decode::<Msg>(&frame, MAX, &key()).unwrap_err();
    assert!(matches!(err, CodecError::Garbage { .. }), "{err}");
}

#[test]
fn bytes_after_a_single_frame_are_trailing_bytes() {
    let mut frame = encode(&env(5), MAX, &key()).unwrap();
    frame.extend_from_slice(&[1, 2]);
    let err = decode::<Msg>(&frame, MAX, &key()).unwrap_err();
    assert_eq!(err, CodecError::TrailingBytes { trailing_bytes: 2 });
}

/// What one fuzz input was made from.
#[derive(Clone, Copy, Debug)]
enum Mutation {
    RandomBytes,
    Truncation,
    BitFlips,
    ByteOverwrites,
    ForgedWithValidChecksum,
    WrongKey,
}

/// Feeds `n` seeded inputs to the decoder: random bytes, truncations, bit flips and byte
/// overwrites of valid frames, frames with a valid checksum but a random MAC, and frames
/// made with the wrong key. None may panic, and none that differs from a genuine frame
/// may be accepted under the key. Returns the count per kind.
fn fuzz(seed: u64, n: u64) -> [u64; 6] {
    let mut rng = kvlab_types::seeded_rng(seed);
    let key = key();
    let wrong = ClusterSecret::from_entropy(b"not the cluster's").peer_key();
    let goods: Vec<Vec<u8>> = [0usize, 1, 30, 300]
        .iter()
        .map(|len| encode(&env(*len), MAX, &key).unwrap())
        .collect();
    let mut counts = [0u64; 6];
    for _ in 0..n {
        let good = &goods[rng.random_range(0..goods.len())];
        let kind = match rng.random_range(0..6u8) {
            0 => Mutation::RandomBytes,
            1 => Mutation::Truncation,
            2 => Mutation::BitFlips,
            3 => Mutation::ByteOverwrites,
            4 => Mutation::ForgedWithValidChecksum,
            _ => Mutation::WrongKey,
        };
        counts[kind as usize] += 1;
        let input: Vec<u8> = match kind {
            Mutation::RandomBytes => {
                let len = rng.random_range(0..96usize);
                let mut b: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
                if len > 0 && rng.random::<bool>() {
                    b[0] = CODEC_VERSION; // get past the version check
                }
                b
            }
            Mutation::Truncation => good[..rng.random_range(0..good.len())].to_vec(),
            Mutation::BitFlips => {
                let mut b = good.clone();
                for _ in 0..rng.random_range(1..=4u32) {
                    let bit = rng.random_range(0..b.len() * 8);
                    b[bit / 8] ^= 1 << (bit % 8);
                }
                b
            }
            Mutation::ByteOverwrites => {
                let mut b = good.clone();
                for _ in 0..rng.random_range(1..=8u32) {
                    let at = rng.random_range(0..b.len());
                    b[at] = rng.random::<u8>();
                }
                b
            }
            Mutation::ForgedWithValidChecksum => {
                let mut b = good.clone();
                for byte in &mut b[MAC_AT..FRAME_HEADER_BYTES] {
                    *byte = rng.random::<u8>();
                }
                if rng.random::<bool>() {
                    let from = rng.random::<u32>();
                    b[FROM_AT..TO_AT].copy_from_slice(&from.to_le_bytes());
                }
                let total = b.len();
                let crc = crc_of(&b, total);
                b[CRC_AT..FROM_AT].copy_from_slice(&crc.to_le_bytes());
                b
            }
            Mutation::WrongKey => {
                let e = Envelope {
                    from: NodeId(rng.random::<u32>()),
                    to: NodeId(2),
                    msg: Msg {
                        seq: rng.random(),
                        body: vec![rng.random(); rng.random_range(0..40usize)],
                    },
                };
                encode(&e, MAX, &wrong).unwrap()
            }
        };
        let result = decode::<Msg>(&input, MAX, &key);
        if let Ok(got) = result {
            assert!(
                goods.contains(&input),
                "seed {seed}: a {kind:?} input was accepted without the key: {got:?} from {input:?}"
            );
        }
    }
    counts
}

#[test]
fn seeded_random_inputs_never_panic_and_are_never_accepted_without_the_key() {
    let counts = fuzz(5, 60_000);
    assert!(counts.iter().all(|c| *c > 5_000), "{counts:?}");
}

/// The long run: `KVLAB_CODEC_FUZZ_INPUTS=10000000 cargo test --release -p kvlab-codec
/// -- --ignored --nocapture long_fuzz`. Prints the count and the time.
#[test]
#[ignore = "long: scale with KVLAB_CODEC_FUZZ_INPUTS and run in release"]
fn long_fuzz_of_the_frame_decoder() {
    let n: u64 = std::env::var("KVLAB_CODEC_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = std::env::var("KVLAB_CODEC_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_240_601);
    let started = std::time::Instant::now();
    let counts = fuzz(seed, n);
    println!(
        "codec fuzz: seed {seed}, {n} inputs {counts:?} (random, truncation, bit flips, overwrites, forged-with-crc, wrong key) in {:.2?}, none accepted without the key",
        started.elapsed()
    );
}

//! The cluster secret ([`ClusterSecret`]) a node configuration carries, and the MAC key
//! ([`PeerKey`]) derived from it.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The shortest cluster secret accepted, in bytes (128 bits).
pub const MIN_CLUSTER_SECRET_BYTES: usize = 16;
/// The longest cluster secret accepted, in bytes.
pub const MAX_CLUSTER_SECRET_BYTES: usize = 1024;
/// The BLAKE3 `derive_key` context that turns a cluster secret into the frame MAC key.
/// Changing it changes every key: it is part of the frame format.
pub const MAC_KEY_CONTEXT: &str = "kvlab peer frame MAC v2 (kvlab-codec)";

/// Why a string or byte string is not an acceptable cluster secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Fewer than [`MIN_CLUSTER_SECRET_BYTES`] or more than [`MAX_CLUSTER_SECRET_BYTES`]
    /// bytes once decoded.
    #[error(
        "a cluster secret must be {MIN_CLUSTER_SECRET_BYTES}..={MAX_CLUSTER_SECRET_BYTES} bytes once decoded, this one has {len_bytes}"
    )]
    Length {
        /// Decoded length.
        len_bytes: usize,
    },
    /// Not valid hex (unprefixed or `hex:`) or base64 (`base64:`).
    #[error("a cluster secret is hex (`00ff…` or `hex:00ff…`) or base64 (`base64:…`): {reason}")]
    Encoding {
        /// What is wrong.
        reason: String,
    },
}

/// The 32-byte key of the frame MAC. `Debug` shows a fingerprint, never the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerKey([u8; 32]);

impl PeerKey {
    /// Derives the key from secret bytes (BLAKE3 `derive_key` under
    /// [`MAC_KEY_CONTEXT`]).
    pub fn derive(secret: &[u8]) -> PeerKey {
        PeerKey(blake3::derive_key(MAC_KEY_CONTEXT, secret))
    }

    /// The well-known key of a transport configured without a secret: derived from the
    /// empty secret. Anyone can make frames that verify under it; the MAC then only works
    /// as a checksum.
    pub fn unauthenticated() -> PeerKey {
        PeerKey::derive(b"")
    }

    /// A key from 32 raw bytes (tests and the simulator's forger).
    pub fn from_raw(bytes: [u8; 32]) -> PeerKey {
        PeerKey(bytes)
    }

    /// Whether this is the well-known [`PeerKey::unauthenticated`] key.
    pub fn is_unauthenticated(&self) -> bool {
        *self == PeerKey::unauthenticated()
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short public fingerprint (first 8 hex digits of the BLAKE3 hash of the key),
    /// safe to log: two nodes with different fingerprints cannot talk.
    pub fn fingerprint(&self) -> String {
        hex(&blake3::hash(&self.0).as_bytes()[..4])
    }
}

impl Default for PeerKey {
    /// [`PeerKey::unauthenticated`].
    fn default() -> Self {
        PeerKey::unauthenticated()
    }
}

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_unauthenticated() {
            f.write_str("PeerKey(unauthenticated)")
        } else {
            write!(f, "PeerKey(fingerprint {})", self.fingerprint())
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, SecretError> {
    let bad = |reason: String| SecretError::Encoding { reason };
    if s.len() % 2 != 0 {
        return Err(bad(format!("odd number of hex digits ({})", s.len())));
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(h), Some(l)) => Ok((h * 16 + l) as u8),
                _ => Err(bad(format!(
                    "`{}` is not a hex byte",
                    String::from_utf8_lossy(pair)
                ))),
            }
        })
        .collect()
}

/// The secret shared by the members of one cluster, from which every node derives the
/// same frame MAC key. In a node configuration it is a string: hex (`"00ff…"`, or
/// `"hex:00ff…"`) or standard base64 (`"base64:…"`), at least
/// [`MIN_CLUSTER_SECRET_BYTES`] bytes once decoded. It is checked when parsed, so a
/// value of this type is always acceptable. `Debug` and `Display` never show it;
/// serializing writes it (as unprefixed hex), which is how a launcher writes a node's
/// configuration file (which must then be private: mode 0600).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret {
    bytes: Vec<u8>,
}

impl ClusterSecret {
    /// A secret of `bytes`, checked for length.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<ClusterSecret, SecretError> {
        if !(MIN_CLUSTER_SECRET_BYTES..=MAX_CLUSTER_SECRET_BYTES).contains(&bytes.len()) {
            return Err(SecretError::Length {
                len_bytes: bytes.len(),
            });
        }
        Ok(ClusterSecret { bytes })
    }

    /// A 32-byte secret expanded from `entropy` with BLAKE3 (what a launcher uses,
    /// feeding it the OS's randomness or, failing that, the run seed mixed with
    /// whatever it has). The same input gives the same secret.
    pub fn from_entropy(entropy: &[u8]) -> ClusterSecret {
        let bytes = blake3::derive_key("kvlab cluster secret from entropy v1", entropy);
        ClusterSecret {
            bytes: bytes.to_vec(),
        }
    }

    /// The frame MAC key every member derives from this secret.
    pub fn peer_key(&self) -> PeerKey {
        PeerKey::derive(&self.bytes)
    }

    /// The secret as unprefixed hex (what [`Serialize`] writes).
    pub fn to_hex(&self) -> String {
        hex(&self.bytes)
    }

    /// Its length in bytes.
    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }
}

impl FromStr for ClusterSecret {
    type Err = SecretError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bytes = if let Some(b64) = s.strip_prefix("base64:") {
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| SecretError::Encoding {
                    reason: e.to_string(),
                })?
        } else {
            unhex(s.strip_prefix("hex:").unwrap_or(s))?
        };
        ClusterSecret::from_bytes(bytes)
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClusterSecret(<redacted {} bytes>, key fingerprint {})",
            self.bytes.len(),
            self.peer_key().fingerprint()
        )
    }
}

impl fmt::Display for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {}-byte secret>", self.bytes.len())
    }
}

impl Serialize for ClusterSecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ClusterSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base64_forms_parse_to_the_same_secret() {
        let hex: ClusterSecret = "000102030405060708090a0b0c0d0e0f".parse().unwrap();
        let prefixed: ClusterSecret = "hex:000102030405060708090A0B0C0D0E0F".parse().unwrap();
        let b64: ClusterSecret = "base64:AAECAwQFBgcICQoLDA0ODw==".parse().unwrap();
        assert_eq!(hex, prefixed);
        assert_eq!(hex, b64);
        assert_eq!(hex.to_hex(), "000102030405060708090a0b0c0d0e0f");
        assert_eq!(hex.peer_key(), b64.peer_key());
    }

    #[test]
    fn short_and_malformed_secrets_are_refused() {
        assert_eq!(
            "00112233".parse::<ClusterSecret>(),
            Err(SecretError::Length { len_bytes: 4 })
        );
        assert!(matches!(
            "zz112233445566778899aabbccddeeff".parse::<ClusterSecret>(),
            Err(SecretError::Encoding { .. })
        ));
        assert!(matches!(
            "0011223".parse::<ClusterSecret>(),
            Err(SecretError::Encoding { .. })
        ));
        assert!(matches!(
            "base64:!!!".parse::<ClusterSecret>(),
            Err(SecretError::Encoding { .. })
        ));
        assert!(ClusterSecret::from_bytes(vec![0; MAX_CLUSTER_SECRET_BYTES + 1]).is_err());
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let s: ClusterSecret = "deadbeefdeadbeefdeadbeefdeadbeef".parse().unwrap();
        let shown = format!("{s:?} {s} {:?}", s.peer_key());
        assert!(!shown.contains("deadbeef"), "{shown}");
        assert!(format!("{:?}", PeerKey::unauthenticated()).contains("unauthenticated"));
    }

    #[test]
    fn a_secret_round_trips_through_toml() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct C {
            cluster_secret: ClusterSecret,
        }
        let c = C {
            cluster_secret: ClusterSecret::from_entropy(b"seed 7"),
        };
        let text = toml::to_string(&c).unwrap();
        assert_eq!(toml::from_str::<C>(&text).unwrap(), c);
        let err = toml::from_str::<C>("cluster_secret = \"abcd\"").unwrap_err();
        assert!(err.to_string().contains("16..=1024"), "{err}");
    }

    #[test]
    fn different_secrets_give_different_keys_and_none_is_the_public_one() {
        let a = ClusterSecret::from_entropy(b"a").peer_key();
        let b = ClusterSecret::from_entropy(b"b").peer_key();
        assert_ne!(a, b);
        assert!(!a.is_unauthenticated());
        assert!(PeerKey::default().is_unauthenticated());
    }
}

//! The fixed key hash, the ring layout, and how vnodes map to Raft groups.
//!
//! `key → vnode = xxh3_64(key) >> (64 − log2 P)`: the top `log2 P` bits of a fixed,
//! seedless 64-bit hash (xxh3 with its default secret), so every node, every run and
//! every version computes the same vnode for a key. Taking the *top* bits makes vnode
//! `v` the hash range `[v·2^64/P, (v+1)·2^64/P)`: equal ranges, in ring order, which the
//! `ring-tokens` strategy relies on (a vnode's midpoint is a point on the same ring as
//! the tokens).

use std::fmt;

use kvlab_types::GroupId;
use serde::{Deserialize, Serialize};

/// The most vnodes a ring may have (wave 2: up to 1,024 Raft groups per cluster).
pub const MAX_VNODE_COUNT: u32 = 1024;

/// The metadata group's id: `2^32`, the first id above every possible vnode group (vnode
/// groups are `0..2^32`, see [`vnode_group`]). Not [`GroupId::DEFAULT`] (`0`), which is
/// vnode 0's group here and the single group of the older systems, and not
/// `GroupId(u64::MAX)`, which SWIM uses for its own durable state (`kvlab_swim::SWIM_STATE`).
pub const META_GROUP: GroupId = GroupId(1 << 32);

/// The fixed, seedless 64-bit key hash: xxh3-64 with its default secret. Never a
/// `RandomState`: the same key must land on the same vnode on every node and in every run.
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// A virtual node: one of the `P` equal hash ranges of the ring, replicated by its own
/// Raft group ([`vnode_group`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct VnodeId(pub u32);

impl fmt::Debug for VnodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}
impl fmt::Display for VnodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// The Raft group that replicates vnode `v`: group id = vnode id (wave 2 §1.2 P1), so
/// `g7` in `events.jsonl` is vnode 7.
pub fn vnode_group(v: VnodeId) -> GroupId {
    GroupId(u64::from(v.0))
}

/// The vnode a group replicates, if it is a vnode group (ids below `2^32`); `None` for
/// [`META_GROUP`], SWIM's state and anything else. Whether the vnode exists in a given
/// layout is [`RingLayout::contains`].
pub fn group_vnode(g: GroupId) -> Option<VnodeId> {
    u32::try_from(g.0).ok().map(VnodeId)
}

/// Why a vnode count was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Not a power of two in `1..=MAX_VNODE_COUNT`.
    #[error("vnode_count {0} must be a power of two in 1..={MAX_VNODE_COUNT}")]
    BadVnodeCount(u32),
}

/// The shape of the ring: how many vnodes (`P`, a power of two in `1..=1024`). Built only
/// through [`RingLayout::new`] (also when deserialized), so a layout in hand is valid.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct RingLayout {
    vnode_count: u32,
}

impl TryFrom<u32> for RingLayout {
    type Error = LayoutError;
    fn try_from(vnode_count: u32) -> Result<Self, LayoutError> {
        RingLayout::new(vnode_count)
    }
}

impl From<RingLayout> for u32 {
    fn from(l: RingLayout) -> u32 {
        l.vnode_count
    }
}

impl RingLayout {
    /// A ring of `vnode_count` vnodes; refused unless a power of two in `1..=1024`.
    pub fn new(vnode_count: u32) -> Result<Self, LayoutError> {
        if vnode_count == 0 || vnode_count > MAX_VNODE_COUNT || !vnode_count.is_power_of_two() {
            return Err(LayoutError::BadVnodeCount(vnode_count));
        }
        Ok(RingLayout { vnode_count })
    }

    /// `P`, the number of vnodes.
    pub fn vnode_count(self) -> u32 {
        self.vnode_count
    }

    /// `log2 P`: how many top bits of the hash name the vnode.
    pub fn bits(self) -> u32 {
        self.vnode_count.trailing_zeros()
    }

    /// The vnode that owns `key`.
    pub fn vnode_of(self, key: &str) -> VnodeId {
        self.vnode_of_bytes(key.as_bytes())
    }

    /// The vnode that owns a binary key.
    pub fn vnode_of_bytes(self, key: &[u8]) -> VnodeId {
        self.vnode_of_hash(key_hash(key))
    }

    /// The vnode whose hash range contains `hash`.
    pub fn vnode_of_hash(self, hash: u64) -> VnodeId {
        let bits = self.bits();
        if bits == 0 {
            return VnodeId(0);
        }
        // bits ≤ 10, so the shifted value fits in u32.
        VnodeId((hash >> (64 - bits)) as u32)
    }

    /// The first hash of vnode `v`'s range.
    pub fn range_start(self, v: VnodeId) -> u64 {
        let bits = self.bits();
        if bits == 0 {
            0
        } else {
            u64::from(v.0) << (64 - bits)
        }
    }

    /// The midpoint of vnode `v`'s hash range (the `ring-tokens` strategy walks
    /// clockwise from it).
    pub fn range_midpoint(self, v: VnodeId) -> u64 {
        self.range_start(v) + (1u64 << (63 - self.bits()))
    }

    /// Whether `v` is a vnode of this ring.
    pub fn contains(self, v: VnodeId) -> bool {
        v.0 < self.vnode_count
    }

    /// Every vnode, in order.
    pub fn vnodes(self) -> impl Iterator<Item = VnodeId> + Clone {
        (0..self.vnode_count).map(VnodeId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_accepts_powers_of_two_up_to_1024_only() {
        for ok in [1, 2, 64, 1024] {
            assert_eq!(RingLayout::new(ok).map(RingLayout::vnode_count), Ok(ok));
        }
        for bad in [0, 3, 100, 2048] {
            assert_eq!(RingLayout::new(bad), Err(LayoutError::BadVnodeCount(bad)));
        }
        // Deserializing goes through the same check.
        assert!(
            postcard::from_bytes::<RingLayout>(&postcard::to_allocvec(&3u32).unwrap()).is_err()
        );
    }

    #[test]
    fn key_hash_is_fixed_across_versions() {
        // Pinned values: changing the hash would move every key of every stored run.
        assert_eq!(key_hash(b""), 0x2d06_8005_38d3_94c2);
        let l = RingLayout::new(64).unwrap();
        let v = l.vnode_of("k7");
        assert_eq!(v, l.vnode_of_hash(key_hash(b"k7")));
        assert!(l.contains(v));
    }

    #[test]
    fn vnode_ranges_are_equal_and_in_ring_order() {
        let l = RingLayout::new(8).unwrap();
        for v in l.vnodes() {
            assert_eq!(l.vnode_of_hash(l.range_start(v)), v);
            assert_eq!(l.vnode_of_hash(l.range_midpoint(v)), v);
        }
        assert_eq!(l.vnode_of_hash(u64::MAX), VnodeId(7));
        let one = RingLayout::new(1).unwrap();
        assert_eq!(one.vnode_of_hash(u64::MAX), VnodeId(0));
        assert_eq!(one.range_midpoint(VnodeId(0)), 1 << 63);
    }

    #[test]
    fn keys_spread_evenly_over_vnodes() {
        let l = RingLayout::new(16).unwrap();
        let mut counts = [0u32; 16];
        for i in 0..16_000 {
            counts[l.vnode_of(&format!("key-{i}")).0 as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn groups_map_to_vnodes_and_meta_is_apart() {
        assert_eq!(group_vnode(vnode_group(VnodeId(5))), Some(VnodeId(5)));
        assert_eq!(group_vnode(META_GROUP), None);
        assert_eq!(group_vnode(GroupId(u64::MAX)), None);
        assert_ne!(META_GROUP, GroupId::DEFAULT);
    }
}

//! Helpers for this crate's unit tests: a tiny seeded generator (the crate itself needs
//! no RNG) and placement builders.

use std::collections::BTreeMap;

use kvlab_types::NodeId;

use crate::hash::RingLayout;
use crate::placement::Placement;
use crate::strategy::{Eligibility, PlacementStrategy, StrategyParams, initial_placement};

/// SplitMix64: enough randomness for choosing test cases, reproducible from a seed.
pub(crate) struct TestRng(u64);

impl TestRng {
    pub(crate) fn new(seed: u64) -> Self {
        TestRng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

pub(crate) fn nodes(ids: impl IntoIterator<Item = u32>) -> Vec<NodeId> {
    ids.into_iter().map(NodeId).collect()
}

pub(crate) fn all_active(ids: &[NodeId]) -> BTreeMap<NodeId, Eligibility> {
    ids.iter().map(|n| (*n, Eligibility::Active)).collect()
}

pub(crate) fn layout(p: u32) -> RingLayout {
    RingLayout::new(p).expect("test layouts are valid")
}

/// A balanced placement of `p` vnodes over `ids`.
pub(crate) fn balanced(p: u32, rf: usize, ids: &[NodeId]) -> Placement {
    initial_placement(
        PlacementStrategy::Balanced,
        layout(p),
        rf,
        ids,
        StrategyParams::default(),
    )
    .expect("enough nodes")
}

//! `ring-tokens`: Cassandra's token ring (Dynamo strategy 1). Each active node owns
//! `ring_tokens_per_node` points of the 64-bit hash ring; vnode `v`'s replicas are the
//! first RF distinct nodes met walking clockwise from the midpoint of `v`'s hash range.
//! With few tokens per node the ranges a node owns are uneven (imbalance); with many, a
//! node shares vnodes with more peers (the `num_tokens` debate, wave 2 §1.1).
//!
//! Tokens are a fixed hash of (node id, token index) rather than random draws, so that
//! every meta leader computes the same ring: "random" in the sense of spread, fixed in the
//! sense of reproducible.

use kvlab_types::NodeId;

use super::{MAX_RING_TOKENS_PER_NODE, StrategyError, StrategyInput, fill_ranked};
use crate::hash::key_hash;
use crate::placement::Placement;

/// The tokens `node` owns on the ring: `count` fixed hashes of (node, index), sorted.
pub fn node_tokens(node: NodeId, count: u32) -> Vec<u64> {
    let mut tokens: Vec<u64> = (0..count)
        .map(|i| {
            let mut buf = [0u8; 20];
            buf[..12].copy_from_slice(b"kvlab-token\0");
            buf[12..16].copy_from_slice(&node.0.to_le_bytes());
            buf[16..].copy_from_slice(&i.to_le_bytes());
            key_hash(&buf)
        })
        .collect();
    tokens.sort_unstable();
    tokens
}

pub(super) fn place(input: &StrategyInput<'_>) -> Result<Placement, StrategyError> {
    let per_node = input.params.ring_tokens_per_node;
    if per_node == 0 || per_node > MAX_RING_TOKENS_PER_NODE {
        return Err(StrategyError::BadTokenCount(per_node));
    }
    let active: Vec<NodeId> = input.active().into_iter().collect();
    let mut ring: Vec<(u64, NodeId)> = active
        .iter()
        .flat_map(|n| node_tokens(*n, per_node).into_iter().map(move |t| (t, *n)))
        .collect();
    ring.sort_unstable();
    let mut target = Placement::new(input.layout);
    for v in input.layout.vnodes() {
        let mid = input.layout.range_midpoint(v);
        let start = ring.partition_point(|(t, _)| *t < mid);
        let clockwise = (0..ring.len()).map(|i| ring[(start + i) % ring.len()].1);
        let set = fill_ranked(input, v, clockwise, active.len())?;
        target.insert(v, set)?;
    }
    Ok(target)
}

//! Placement strategies: pure functions from (members, current placement, RF, params) to
//! a target placement (wave 2 §1.2 P2).
//!
//! | strategy | target rule |
//! |---|---|
//! | [`PlacementStrategy::Balanced`] (default) | from the current placement: replicas on ineligible nodes go to the least loaded nodes, then the most loaded node gives to the least loaded one until every node holds ⌊P·RF/N⌋ or ⌈P·RF/N⌉ — the fewest moves |
//! | [`PlacementStrategy::Rendezvous`] | the RF nodes with the highest `hash(node, vnode)` (HRW); stateless |
//! | [`PlacementStrategy::RingTokens`] | Cassandra-style: each node owns `ring_tokens_per_node` tokens on the hash ring; a vnode's replicas are the next RF distinct nodes clockwise from its midpoint |
//!
//! Rules shared by every strategy, so that the planner's health rules hold whatever the
//! strategy: an [`Eligibility::Active`] node (state Up) may receive and give replicas; an
//! [`Eligibility::Frozen`] node (Suspect) keeps exactly the voter replicas it has and
//! receives none (wave 2 §2.2 M1: a Suspect node is no target, and no new operator
//! removes its replicas); a node absent from the member map (Down, Draining, Removed)
//! holds nothing in the target. Ties are broken by ids, so the result is deterministic.
//! Tokens and rendezvous scores are fixed hashes of node and vnode ids, not draws from an
//! RNG: a new meta leader must compute the same target as the old one.

use std::collections::{BTreeMap, BTreeSet};

use kvlab_types::NodeId;
use serde::{Deserialize, Serialize};

use crate::hash::{RingLayout, VnodeId};
use crate::placement::{Placement, PlacementError, ReplicaSet, check_rf};

mod balanced;
mod rendezvous;
mod ring_tokens;

pub use ring_tokens::node_tokens;

/// The most tokens a node may own with `ring-tokens` (Cassandra's old default was 256).
pub const MAX_RING_TOKENS_PER_NODE: u32 = 4096;

/// Which rule computes the target placement (`ring.placement_strategy`).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementStrategy {
    /// Greedy, from the current placement: the fewest moves, counts within one of the mean.
    #[default]
    Balanced,
    /// Highest random weight (rendezvous hashing) per vnode.
    Rendezvous,
    /// Cassandra-style token ring with `ring_tokens_per_node` tokens per node.
    RingTokens,
}

impl PlacementStrategy {
    /// Every strategy, for sweeps and tables.
    pub const ALL: [PlacementStrategy; 3] = [
        PlacementStrategy::Balanced,
        PlacementStrategy::Rendezvous,
        PlacementStrategy::RingTokens,
    ];

    /// The name used in specs (`balanced`, `rendezvous`, `ring-tokens`).
    pub fn name(self) -> &'static str {
        match self {
            PlacementStrategy::Balanced => "balanced",
            PlacementStrategy::Rendezvous => "rendezvous",
            PlacementStrategy::RingTokens => "ring-tokens",
        }
    }
}

/// Strategy parameters from the spec.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StrategyParams {
    /// Tokens per node for [`PlacementStrategy::RingTokens`].
    pub ring_tokens_per_node: u32,
}

impl Default for StrategyParams {
    fn default() -> Self {
        StrategyParams {
            ring_tokens_per_node: 16,
        }
    }
}

/// What a member may do in the target placement.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Eligibility {
    /// May receive and give replicas (state Up).
    Active,
    /// Keeps the voter replicas it has, receives none (state Suspect).
    Frozen,
}

/// Why no target placement could be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    /// A vnode cannot get RF distinct eligible voters.
    #[error("{vnode} needs {needed} more voters but only {available} eligible nodes can take one")]
    NotEnoughNodes {
        /// The first vnode that could not be filled.
        vnode: VnodeId,
        /// Voters it still needs.
        needed: usize,
        /// Active nodes not already in it.
        available: usize,
    },
    /// The replication factor is out of range.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// `ring_tokens_per_node` is out of range.
    #[error("ring_tokens_per_node {0} must be in 1..={MAX_RING_TOKENS_PER_NODE}")]
    BadTokenCount(u32),
}

/// The inputs of a strategy.
#[derive(Clone, Copy, Debug)]
pub struct StrategyInput<'a> {
    /// The ring.
    pub layout: RingLayout,
    /// Voters per vnode.
    pub replication_factor: usize,
    /// Eligible members (absent: may hold nothing).
    pub members: &'a BTreeMap<NodeId, Eligibility>,
    /// Where replicas are now (vnodes without a set start empty).
    pub current: &'a Placement,
    /// Strategy parameters.
    pub params: StrategyParams,
}

impl StrategyInput<'_> {
    fn active(&self) -> BTreeSet<NodeId> {
        self.members
            .iter()
            .filter(|(_, e)| **e == Eligibility::Active)
            .map(|(n, _)| *n)
            .collect()
    }

    /// The frozen voters of `v` that stay (at most RF, lowest ids first).
    fn frozen_kept(&self, v: VnodeId) -> BTreeSet<NodeId> {
        self.current
            .get(v)
            .map(|s| {
                s.voters
                    .iter()
                    .filter(|n| self.members.get(n) == Some(&Eligibility::Frozen))
                    .take(self.replication_factor)
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn epoch(&self, v: VnodeId) -> crate::placement::ConfEpoch {
        self.current
            .get(v)
            .map(|s| s.conf_epoch)
            .unwrap_or_default()
    }
}

/// Computes the target placement with `strategy`. The result passes
/// [`Placement::check`] with the input's replication factor.
pub fn target_placement(
    strategy: PlacementStrategy,
    input: &StrategyInput<'_>,
) -> Result<Placement, StrategyError> {
    check_rf(input.replication_factor)?;
    let target = match strategy {
        PlacementStrategy::Balanced => balanced::place(input)?,
        PlacementStrategy::Rendezvous => rendezvous::place(input)?,
        PlacementStrategy::RingTokens => ring_tokens::place(input)?,
    };
    // A strategy that breaks the invariants is a bug in this crate, not bad input.
    debug_assert_eq!(target.check(input.replication_factor), Ok(()));
    Ok(target)
}

/// The placement a new cluster boots with: `strategy` over `nodes`, all Up, from nothing.
/// Every node computes the same one, so each can create its vnode groups with the same
/// bootstrap voter lists before the meta group exists.
pub fn initial_placement(
    strategy: PlacementStrategy,
    layout: RingLayout,
    replication_factor: usize,
    nodes: &[NodeId],
    params: StrategyParams,
) -> Result<Placement, StrategyError> {
    let members: BTreeMap<NodeId, Eligibility> =
        nodes.iter().map(|n| (*n, Eligibility::Active)).collect();
    let current = Placement::new(layout);
    target_placement(
        strategy,
        &StrategyInput {
            layout,
            replication_factor,
            members: &members,
            current: &current,
            params,
        },
    )
}

/// Fills a vnode from a ranked candidate list (best first), after its kept frozen
/// voters; shared by the stateless strategies.
fn fill_ranked(
    input: &StrategyInput<'_>,
    v: VnodeId,
    ranked: impl Iterator<Item = NodeId>,
    active_count: usize,
) -> Result<ReplicaSet, StrategyError> {
    let rf = input.replication_factor;
    let mut voters = input.frozen_kept(v);
    let needed = rf - voters.len();
    for n in ranked {
        if voters.len() == rf {
            break;
        }
        voters.insert(n);
    }
    if voters.len() < rf {
        return Err(StrategyError::NotEnoughNodes {
            vnode: v,
            needed,
            available: active_count,
        });
    }
    Ok(ReplicaSet {
        voters,
        conf_epoch: input.epoch(v),
        ..ReplicaSet::default()
    })
}

#[cfg(test)]
mod tests;

//! Balance and data-movement metrics (wave 2 §2.3, §5.2): how even a placement is, how
//! much data a membership event moved against the optimum, how exposed a placement is
//! to two simultaneous failures, and how much a per-node series thrashed.

use std::collections::{BTreeMap, BTreeSet};

use kvlab_types::NodeId;

use crate::hash::{LayoutError, RingLayout};
use crate::placement::Placement;
use crate::strategy::{
    Eligibility, PlacementStrategy, StrategyError, StrategyInput, StrategyParams,
    initial_placement, target_placement,
};

/// Coefficient of variation (population standard deviation / mean); 0 for an empty
/// series or a zero mean.
pub fn coefficient_of_variation(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if mean == 0.0 {
        return 0.0;
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    var.sqrt() / mean
}

/// Max over mean; 0 for an empty series or a zero mean (1.0 is perfectly balanced).
pub fn max_over_mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    if mean == 0.0 {
        return 0.0;
    }
    values.iter().copied().fold(f64::MIN, f64::max) / mean
}

/// Whether every value lies within `mean · (1 ± tolerance_ratio)` (CRDB roachtest's
/// criterion, ±20% there; the store rebalancer aims at ±10%).
pub fn within_band(values: &[f64], tolerance_ratio: f64) -> bool {
    if values.is_empty() {
        return true;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let (lo, hi) = (
        mean * (1.0 - tolerance_ratio),
        mean * (1.0 + tolerance_ratio),
    );
    values.iter().all(|v| *v >= lo && *v <= hi)
}

/// Voter replicas per node as floats, every node of `nodes` included (zero if empty).
pub fn replica_counts(placement: &Placement, nodes: &BTreeSet<NodeId>) -> Vec<f64> {
    placement
        .replicas_per_node_of(nodes)
        .into_iter()
        .filter(|(n, _)| nodes.contains(n))
        .map(|(_, c)| c as f64)
        .collect()
}

/// A membership event whose data movement is measured.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MembershipEvent {
    /// `joined` nodes join `before` nodes.
    Join {
        /// Nodes before the event.
        before: usize,
        /// Nodes that join.
        joined: usize,
    },
    /// `lost` of `before` nodes are lost and their replicas re-created.
    Loss {
        /// Nodes before the event.
        before: usize,
        /// Nodes lost.
        lost: usize,
    },
    /// `drained` of `before` nodes are drained.
    Drain {
        /// Nodes before the event.
        before: usize,
        /// Nodes drained.
        drained: usize,
    },
}

/// The least data an event must move, with `data_bytes` of logical data replicated RF
/// times (wave 2 §2.3, that note's arithmetic): joining nodes must receive their share,
/// `RF·D·j/(N+j)` — `RF·D/(N+1)` for one node; lost or drained nodes' shares must be
/// re-created, `RF·D·l/N` — `RF·D/N` for one node. Zero nodes give zero.
pub fn optimum_moved_bytes(
    event: MembershipEvent,
    replication_factor: usize,
    data_bytes: f64,
) -> f64 {
    let rf_d = replication_factor as f64 * data_bytes;
    let share = |k: usize, of: usize| {
        if of == 0 {
            0.0
        } else {
            rf_d * k as f64 / of as f64
        }
    };
    match event {
        MembershipEvent::Join { before, joined } => share(joined, before + joined),
        MembershipEvent::Loss { before, lost } => share(lost.min(before), before),
        MembershipEvent::Drain { before, drained } => share(drained.min(before), before),
    }
}

/// Moved bytes over the optimum (1.0 is optimal; above means extra or thrashing moves).
/// Infinite if something moved against a zero optimum, 1.0 if nothing had to move and
/// nothing did.
pub fn move_ratio(moved_bytes: f64, optimum_bytes: f64) -> f64 {
    if optimum_bytes > 0.0 {
        moved_bytes / optimum_bytes
    } else if moved_bytes > 0.0 {
        f64::INFINITY
    } else {
        1.0
    }
}

/// The fraction of node pairs `{a, b}` (over every node holding a replica) whose loss
/// leaves some vnode without a voter majority. With RF = 3 that is the fraction of pairs
/// that share a vnode: the probability that two random simultaneous failures make some
/// vnode unavailable (wave 2 §2.3). Computed exactly from the table, for any RF (a pair
/// breaks a vnode when the voters left are not a majority, which happens for RF ≤ 4).
pub fn pairs_unavailable_fraction(placement: &Placement) -> f64 {
    let nodes: Vec<NodeId> = placement
        .iter()
        .flat_map(|(_, s)| s.voters.iter().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let n = nodes.len();
    if n < 2 {
        return 0.0;
    }
    let index = |x: NodeId| nodes.binary_search(&x).unwrap_or(0);
    let mut broken = vec![false; n * n];
    for (_, set) in placement.iter() {
        let k = set.voters.len();
        // Two voters lost leave k − 2; a majority needs k/2 + 1.
        if k < 2 || k - 2 > k / 2 {
            continue;
        }
        let members: Vec<usize> = set.voters.iter().map(|x| index(*x)).collect();
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                broken[a * n + b] = true;
                broken[b * n + a] = true;
            }
        }
    }
    let pairs = n * (n - 1) / 2;
    let bad = (0..n)
        .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
        .filter(|(a, b)| broken[a * n + b])
        .count();
    bad as f64 / pairs as f64
}

/// How much one series (for example a node's replica count over time) moved, and how
/// much of that was against its dominant trend: CRDB asim's trend-discounting total
/// variation (`pkg/kv/kvserver/asim/history/thrashing.go`), re-derived here.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Thrashing {
    /// Maximal runs of first differences of one sign (1 + sign changes).
    pub runs: usize,
    /// Total upward movement.
    pub up: f64,
    /// Total downward movement (positive).
    pub down: f64,
    /// Trend-discounting total variation: 0 for a monotone series, about `up + down` for
    /// one without a trend.
    pub tdtv: f64,
    /// The series' range (max − min, or 1 if flat), the normaliser.
    pub range: f64,
}

impl Thrashing {
    /// `100 · tdtv / range`: how many times (in percent) thrashing swept the series' range.
    pub fn tdtv_percent(&self) -> f64 {
        100.0 * self.tdtv / self.range
    }
}

/// The thrashing of a series (see [`Thrashing`]).
pub fn thrashing(values: &[f64]) -> Thrashing {
    let mut runs = 1;
    let mut rising = values.len() > 1 && values[1] >= values[0];
    let (mut up, mut down) = (0.0, 0.0);
    for w in values.windows(2) {
        let d = w[1] - w[0];
        if (d >= 0.0) != rising {
            rising = !rising;
            runs += 1;
        }
        if d >= 0.0 {
            up += d;
        } else {
            down -= d;
        }
    }
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let range = if values.is_empty() || hi == lo {
        1.0
    } else {
        hi - lo
    };
    Thrashing {
        runs,
        up,
        down,
        tdtv: tdtv(up, down),
        range,
    }
}

/// Trend-discounting total variation of upward and downward totals: 0 when all movement
/// goes one way, `2·u` when both are `u`, scaling linearly, and between `min(u, d)` and
/// `u + d` in general. The weight of the full total is `(min/max)^0.8`, CRDB's choice.
pub fn tdtv(up: f64, down: f64) -> f64 {
    let lo = up.min(down);
    if lo <= 0.0 {
        return 0.0;
    }
    let alpha = (lo / up.max(down)).powf(0.8);
    alpha * (up + down) + (1.0 - alpha) * lo
}

/// What a strategy's plan moves when nodes join: `before` nodes (ids 1..=before) hold a
/// placement the strategy made, and nodes up to id `after` join at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JoinMoves {
    /// Replicas placed on a node that did not hold them.
    pub moved_replicas: usize,
    /// The least that must move: the joiners' share of P·RF, `P·RF·j/(N+j)`.
    pub optimum_replicas: f64,
    /// Most replicas on a node over the mean, after the join.
    pub max_over_mean: f64,
}

impl JoinMoves {
    /// `moved / optimum`: with data spread evenly over vnodes, the moved bytes' ratio to
    /// the optimum RF·D·j/(N+j) too.
    pub fn ratio(&self) -> f64 {
        move_ratio(self.moved_replicas as f64, self.optimum_replicas)
    }
}

/// Why [`join_moves`] could not plan.
#[derive(Debug, thiserror::Error)]
pub enum JoinMovesError {
    /// P is no power of two (or out of range).
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Too few nodes for RF, or the strategy refused.
    #[error(transparent)]
    Strategy(#[from] StrategyError),
    /// `after` is not above `before`.
    #[error("a join needs more nodes after ({after}) than before ({before})")]
    NoJoin {
        /// Nodes before.
        before: u32,
        /// Nodes after.
        after: u32,
    },
}

/// The planner's moves for `before → after` nodes with `strategy` over `vnodes` vnodes
/// (wave 2 §2.3): what `kvlab ring moves` prints and the strategy tests bound.
pub fn join_moves(
    strategy: PlacementStrategy,
    vnodes: u32,
    replication_factor: usize,
    before: u32,
    after: u32,
    params: StrategyParams,
) -> Result<JoinMoves, JoinMovesError> {
    if after <= before {
        return Err(JoinMovesError::NoJoin { before, after });
    }
    let layout = RingLayout::new(vnodes)?;
    let old: Vec<NodeId> = (1..=before).map(NodeId).collect();
    let current = initial_placement(strategy, layout, replication_factor, &old, params)?;
    let members: BTreeMap<NodeId, Eligibility> = (1..=after)
        .map(|n| (NodeId(n), Eligibility::Active))
        .collect();
    let target = target_placement(
        strategy,
        &StrategyInput {
            layout,
            replication_factor,
            members: &members,
            current: &current,
            params,
        },
    )?;
    let all: BTreeSet<NodeId> = members.keys().copied().collect();
    Ok(JoinMoves {
        moved_replicas: current.moved_replicas_to(&target),
        // The optimum in replicas: every vnode one unit of data.
        optimum_replicas: optimum_moved_bytes(
            MembershipEvent::Join {
                before: before as usize,
                joined: (after - before) as usize,
            },
            replication_factor,
            f64::from(vnodes),
        ),
        max_over_mean: max_over_mean(&replica_counts(&target, &all)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::VnodeId;
    use crate::placement::ReplicaSet;

    #[test]
    fn spread_metrics() {
        assert_eq!(coefficient_of_variation(&[2.0, 2.0]), 0.0);
        assert!((coefficient_of_variation(&[1.0, 3.0]) - 0.5).abs() < 1e-12);
        assert_eq!(max_over_mean(&[1.0, 3.0]), 1.5);
        assert!(within_band(&[9.5, 10.5], 0.1));
        assert!(!within_band(&[8.0, 12.0], 0.1));
        assert_eq!(coefficient_of_variation(&[]), 0.0);
    }

    #[test]
    fn optimum_and_ratio() {
        let d = 1024.0;
        let join = |before, joined| MembershipEvent::Join { before, joined };
        assert_eq!(optimum_moved_bytes(join(5, 1), 3, d), 512.0);
        assert_eq!(optimum_moved_bytes(join(5, 3), 3, d), 3.0 * d * 3.0 / 8.0);
        let loss = MembershipEvent::Loss { before: 6, lost: 1 };
        assert_eq!(optimum_moved_bytes(loss, 3, d), 512.0);
        let drain = MembershipEvent::Drain {
            before: 0,
            drained: 1,
        };
        assert_eq!(optimum_moved_bytes(drain, 3, d), 0.0);
        assert_eq!(move_ratio(600.0, 512.0), 600.0 / 512.0);
        assert_eq!(move_ratio(0.0, 0.0), 1.0);
        assert!(move_ratio(1.0, 0.0).is_infinite());
    }

    #[test]
    fn pairs_fraction_counts_pairs_sharing_a_vnode() {
        let l = RingLayout::new(2).unwrap();
        let mut p = Placement::new(l);
        let n = NodeId;
        p.insert(VnodeId(0), ReplicaSet::of_voters([n(1), n(2), n(3)]))
            .unwrap();
        p.insert(VnodeId(1), ReplicaSet::of_voters([n(4), n(5), n(6)]))
            .unwrap();
        // 6 of the 15 pairs share a vnode.
        assert!((pairs_unavailable_fraction(&p) - 6.0 / 15.0).abs() < 1e-12);
        // RF = 5: two losses leave 3 of 5, still a majority.
        let mut q = Placement::new(RingLayout::new(1).unwrap());
        q.insert(VnodeId(0), ReplicaSet::of_voters((1..=5).map(n)))
            .unwrap();
        assert_eq!(pairs_unavailable_fraction(&q), 0.0);
    }

    #[test]
    fn tdtv_discounts_trends_and_counts_oscillation() {
        let mono = thrashing(&[0.0, 1.0, 2.0, 3.0]);
        assert_eq!((mono.tdtv, mono.runs), (0.0, 1));
        let osc = thrashing(&[0.0, 1.0, 0.0, 1.0, 0.0]);
        assert_eq!(osc.runs, 4);
        assert!((osc.tdtv - 4.0).abs() < 1e-12);
        assert!((osc.tdtv_percent() - 400.0).abs() < 1e-9);
        assert_eq!(tdtv(3.0, 3.0), 6.0);
        assert!((tdtv(6.0, 2.0) - 2.0 * tdtv(3.0, 1.0)).abs() < 1e-12);
        let t = tdtv(10.0, 1.0);
        assert!((1.0..=11.0).contains(&t));
        assert_eq!(thrashing(&[]).range, 1.0);
    }
}

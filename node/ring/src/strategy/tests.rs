use std::collections::{BTreeMap, BTreeSet};

use kvlab_types::NodeId;

use super::*;
use crate::balance::{MembershipEvent, move_ratio, optimum_moved_bytes};
use crate::testutil::{TestRng, all_active, balanced, layout, nodes};

fn run(
    strategy: PlacementStrategy,
    rf: usize,
    members: &BTreeMap<NodeId, Eligibility>,
    current: &Placement,
) -> Result<Placement, StrategyError> {
    target_placement(
        strategy,
        &StrategyInput {
            layout: current.layout(),
            replication_factor: rf,
            members,
            current,
            params: StrategyParams::default(),
        },
    )
}

/// Random rings, RFs, member sets and eligibilities: every strategy gives RF distinct
/// eligible voters per vnode, keeps frozen voters exactly, and gives ineligible nodes
/// nothing.
#[test]
fn every_strategy_keeps_rf_distinct_voters_per_vnode() {
    for seed in 0..300u64 {
        let mut rng = TestRng::new(seed);
        let p = 1u32 << rng.below(9);
        let rf = 1 + rng.below(5) as usize;
        let n = rf + rng.below(8) as usize;
        let mut ids: BTreeSet<u32> = BTreeSet::new();
        while ids.len() < n {
            ids.insert(1 + rng.below(100) as u32);
        }
        let ids = nodes(ids);
        let start = PlacementStrategy::ALL[rng.below(3) as usize];
        let current = initial_placement(start, layout(p), rf, &ids, StrategyParams::default())
            .unwrap_or_else(|e| panic!("seed {seed}: initial: {e}"));
        // Some newcomers, some frozen, some gone.
        let mut members = BTreeMap::new();
        for id in &ids {
            match rng.below(10) {
                0 | 1 => {}
                2 => {
                    members.insert(*id, Eligibility::Frozen);
                }
                _ => {
                    members.insert(*id, Eligibility::Active);
                }
            }
        }
        for extra in 0..rng.below(3) {
            members.insert(NodeId(200 + extra as u32), Eligibility::Active);
        }
        let active = members
            .values()
            .filter(|e| **e == Eligibility::Active)
            .count();
        for strategy in PlacementStrategy::ALL {
            let res = run(strategy, rf, &members, &current);
            let target = match res {
                Ok(t) => t,
                Err(StrategyError::NotEnoughNodes { .. }) if active < rf => continue,
                Err(e) => panic!("seed {seed} {strategy:?} P={p} rf={rf}: {e}"),
            };
            assert_eq!(target.check(rf), Ok(()), "seed {seed} {strategy:?}");
            for (v, set) in target.iter() {
                let cur = current.get(v).expect("complete");
                for node in &set.voters {
                    assert!(
                        members.contains_key(node),
                        "seed {seed} {strategy:?}: {node} gone"
                    );
                }
                let frozen = |s: &BTreeSet<NodeId>| -> BTreeSet<NodeId> {
                    s.iter()
                        .filter(|x| members.get(x) == Some(&Eligibility::Frozen))
                        .copied()
                        .collect()
                };
                let kept: BTreeSet<NodeId> = frozen(&cur.voters).into_iter().take(rf).collect();
                assert_eq!(
                    frozen(&set.voters),
                    kept,
                    "seed {seed} {strategy:?} {v}: frozen moved"
                );
            }
        }
    }
}

#[test]
fn balanced_counts_are_within_one_of_each_other() {
    for seed in 0..100u64 {
        let mut rng = TestRng::new(seed);
        let p = 1u32 << (3 + rng.below(7));
        let rf = 1 + rng.below(4) as usize;
        let n = rf + rng.below(10) as usize;
        let ids = nodes(1..=n as u32);
        let current = balanced(p, rf, &ids);
        let counts = current.replicas_per_node_of(&ids);
        let (lo, hi) = (
            counts.values().min().unwrap(),
            counts.values().max().unwrap(),
        );
        assert!(hi - lo <= 1, "seed {seed}: {counts:?}");
        // After random joins and losses too.
        let mut members = all_active(&ids);
        members.remove(&NodeId(1 + rng.below(n as u64) as u32));
        members.insert(NodeId(50), Eligibility::Active);
        if let Ok(t) = run(PlacementStrategy::Balanced, rf, &members, &current) {
            let c = t.replicas_per_node_of(members.keys());
            let c: Vec<usize> = members.keys().map(|k| c[k]).collect();
            let (lo, hi) = (c.iter().min().unwrap(), c.iter().max().unwrap());
            assert!(hi - lo <= 1, "seed {seed}: {c:?}");
        }
    }
}

fn join_moves(
    strategy: PlacementStrategy,
    p: u32,
    rf: usize,
    before: u32,
    after: u32,
) -> (usize, f64) {
    let m = crate::balance::join_moves(strategy, p, rf, before, after, StrategyParams::default())
        .unwrap();
    (m.moved_replicas, m.optimum_replicas)
}

/// Wave 2 §6: `balanced` never moves more than ⌈optimum⌉ + N replicas on a join.
#[test]
fn balanced_join_moves_at_most_optimum_plus_n() {
    let mut cases = Vec::new();
    for p in [1, 4, 16, 64, 256] {
        for rf in 1..=5usize {
            for before in rf as u32..=9 {
                cases.push((p, rf, before));
            }
        }
    }
    cases.extend([(1024, 3, 3), (1024, 3, 5), (1024, 5, 9)]);
    for (p, rf, before) in cases {
        {
            {
                for after in before + 1..=before + 3 {
                    let (moved, optimum) =
                        join_moves(PlacementStrategy::Balanced, p, rf, before, after);
                    let bound = optimum.ceil() as usize + before as usize;
                    assert!(
                        moved <= bound,
                        "P={p} rf={rf} {before}→{after}: moved {moved} > ⌈{optimum}⌉ + {before}"
                    );
                }
            }
        }
    }
}

/// Wave 2 §8 item 2: `balanced` has `move_ratio ≤ 1.1` at P ≥ 64 for joins 5→6 and 5→8.
#[test]
fn balanced_join_move_ratio_is_within_ten_percent_at_p_64_and_up() {
    for p in [64, 128, 256, 512, 1024] {
        for after in [6, 8] {
            let (moved, _) = join_moves(PlacementStrategy::Balanced, p, 3, 5, after);
            // Bytes: every vnode holds D/P.
            let d = 1u64 << 30;
            let moved_bytes = moved as f64 * d as f64 / f64::from(p);
            let event = MembershipEvent::Join {
                before: 5,
                joined: after as usize - 5,
            };
            let optimum = optimum_moved_bytes(event, 3, d as f64);
            let ratio = move_ratio(moved_bytes, optimum);
            assert!(ratio <= 1.1, "P={p} 5→{after}: ratio {ratio}");
            assert!(
                ratio >= 0.9,
                "P={p} 5→{after}: ratio {ratio} (too few moves to balance)"
            );
        }
    }
}

/// A lost node's replicas are re-created and nothing else moves (the optimum RF·D/N of
/// wave 2 §2.3, exactly).
#[test]
fn balanced_node_loss_recreates_only_the_lost_replicas() {
    for p in [16, 64, 256] {
        for n in 4..=9u32 {
            let ids = nodes(1..=n);
            let current = balanced(p, 3, &ids);
            let lost = NodeId(1 + p % n);
            let lost_count = current.replicas_per_node()[&lost];
            let mut members = all_active(&ids);
            members.remove(&lost);
            let target = run(PlacementStrategy::Balanced, 3, &members, &current).unwrap();
            let moved = current.moved_replicas_to(&target);
            assert_eq!(
                moved, lost_count,
                "P={p} N={n}: moved {moved}, lost {lost_count}"
            );
            assert!(!target.replicas_per_node().contains_key(&lost));
        }
    }
}

#[test]
fn strategies_are_deterministic_and_stateless_ones_ignore_the_current_placement() {
    let ids = nodes(1..=7);
    let members = all_active(&ids);
    let a = balanced(64, 3, &nodes(1..=5));
    let b = balanced(64, 3, &nodes(3..=7));
    for strategy in PlacementStrategy::ALL {
        let x = run(strategy, 3, &members, &a).unwrap();
        assert_eq!(x, run(strategy, 3, &members, &a).unwrap(), "{strategy:?}");
        if strategy != PlacementStrategy::Balanced {
            let mut y = run(strategy, 3, &members, &b).unwrap();
            // Epochs come from the current placement (all zero here); voters must match.
            for (v, s) in x.iter() {
                assert_eq!(s.voters, y.get_mut(v).unwrap().voters, "{strategy:?} {v}");
            }
        }
    }
}

#[test]
fn too_few_nodes_or_tokens_are_typed_errors() {
    let current = balanced(4, 3, &nodes(1..=3));
    let members = all_active(&nodes(1..=2));
    for strategy in PlacementStrategy::ALL {
        assert!(matches!(
            run(strategy, 3, &members, &current),
            Err(StrategyError::NotEnoughNodes { .. })
        ));
    }
    let zero = StrategyInput {
        layout: layout(4),
        replication_factor: 3,
        members: &all_active(&nodes(1..=3)),
        current: &current,
        params: StrategyParams {
            ring_tokens_per_node: 0,
        },
    };
    assert_eq!(
        target_placement(PlacementStrategy::RingTokens, &zero),
        Err(StrategyError::BadTokenCount(0))
    );
    assert!(matches!(
        initial_placement(
            PlacementStrategy::Balanced,
            layout(4),
            0,
            &nodes(1..=3),
            StrategyParams::default()
        ),
        Err(StrategyError::Placement(_))
    ));
}

#[test]
fn ring_tokens_are_fixed_per_node() {
    assert_eq!(node_tokens(NodeId(3), 4), node_tokens(NodeId(3), 4));
    assert_ne!(node_tokens(NodeId(3), 4), node_tokens(NodeId(4), 4));
    let t = node_tokens(NodeId(3), 16);
    assert!(t.windows(2).all(|w| w[0] <= w[1]));
}

//! Data moved by joins, per placement strategy and vnode count, against the optimum
//! (wave 2 §8 item 2), and how exposed each placement is to two simultaneous failures
//! (item 10).
//!
//! For joins 5→6 and 5→8 with RF = 3 and D = 1 GiB of logical data, each strategy and
//! P ∈ {16, 64, 256}: the replicas the strategy's target adds (each one a snapshot of
//! D/P bytes), those bytes, the optimum `RF·D·j/(N+j)` (`RF·D/(N+1)` for one node), their
//! ratio, and `pairs_unavailable_fraction` before and after the join.
//!
//! ```text
//! cargo run -p kvlab-ring --example moves
//! ```

use kvlab_ring::balance::{
    MembershipEvent, coefficient_of_variation, move_ratio, optimum_moved_bytes,
    pairs_unavailable_fraction, replica_counts,
};
use kvlab_ring::strategy::{Eligibility, StrategyInput};
use kvlab_ring::{
    PlacementStrategy, RingLayout, StrategyParams, initial_placement, target_placement,
};
use kvlab_types::NodeId;

const RF: usize = 3;
const DATA_BYTES: u64 = 1 << 30;
const GIB: f64 = (1u64 << 30) as f64;

fn main() {
    let params = StrategyParams::default();
    println!(
        "| join | strategy | P | moved replicas | moved GiB | optimum GiB | ratio | CV after | pairs unavailable before | after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (before, after) in [(5u32, 6u32), (5, 8)] {
        for strategy in PlacementStrategy::ALL {
            for p in [16u32, 64, 256] {
                let layout = RingLayout::new(p).expect("power of two");
                let old: Vec<NodeId> = (1..=before).map(NodeId).collect();
                let new: Vec<NodeId> = (1..=after).map(NodeId).collect();
                let current =
                    initial_placement(strategy, layout, RF, &old, params).expect("enough nodes");
                let members = new.iter().map(|n| (*n, Eligibility::Active)).collect();
                let target = target_placement(
                    strategy,
                    &StrategyInput {
                        layout,
                        replication_factor: RF,
                        members: &members,
                        current: &current,
                        params,
                    },
                )
                .expect("enough nodes");
                let moved = current.moved_replicas_to(&target);
                let moved_bytes = current.moved_bytes_to(&target, |_| DATA_BYTES / u64::from(p));
                let event = MembershipEvent::Join {
                    before: before as usize,
                    joined: (after - before) as usize,
                };
                let optimum = optimum_moved_bytes(event, RF, DATA_BYTES as f64);
                let ratio = move_ratio(moved_bytes as f64, optimum);
                let cv = coefficient_of_variation(&replica_counts(
                    &target,
                    &new.iter().copied().collect(),
                ));
                println!(
                    "| {before}→{after} | {} | {p} | {moved} | {:.3} | {:.3} | {ratio:.3} | {cv:.3} | {:.3} | {:.3} |",
                    strategy.name(),
                    moved_bytes as f64 / GIB,
                    optimum / GIB,
                    pairs_unavailable_fraction(&current),
                    pairs_unavailable_fraction(&target),
                );
            }
        }
    }
}

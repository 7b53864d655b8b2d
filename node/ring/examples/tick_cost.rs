//! What one scheduler round costs on the meta leader (wave 2 §8 item 11: a 1,000-group
//! run must finish): 10 nodes, node 11 joining, P ∈ {64, 256, 1024}; each round computes
//! the target, plans under the limits (anti-thrash checks included) and applies the
//! commands. Wall-clock time is read here, in the example, never in the crate.
//!
//! ```text
//! cargo run --release -p kvlab-ring --example tick_cost
//! ```

use std::time::{Duration, Instant};

use kvlab_ring::meta::{LedGroup, StoreReport};
use kvlab_ring::{
    Descriptor, MetaState, PlacementStrategy, RingLayout, RingSpec, Scheduler, StrategyParams,
    initial_placement,
};
use kvlab_types::{NodeId, Time};

const ROUNDS: u64 = 50;

fn main() {
    println!("| strategy | P | rounds | mean round µs | max round µs | operators created |");
    println!("|---|---|---|---|---|---|");
    for strategy in PlacementStrategy::ALL {
        for p in [64u32, 256, 1024] {
            let mut spec = RingSpec::default();
            spec.ring.vnode_count = p;
            spec.ring.placement_strategy = strategy;
            spec.validate(3).expect("valid");
            let ten: Vec<NodeId> = (1..=10).map(NodeId).collect();
            let layout = RingLayout::new(p).expect("power of two");
            let initial = initial_placement(strategy, layout, 3, &ten, StrategyParams::default())
                .expect("enough nodes");
            let members: Vec<(NodeId, Option<String>)> = ten.iter().map(|n| (*n, None)).collect();
            let mut state = MetaState::bootstrap(3, &members, &initial, Time::ZERO).expect("valid");
            let mut sched = Scheduler::new(spec.clone());
            // Node 11 starts and sends its first heartbeat; node 1 leads every group.
            let led = initial
                .iter()
                .map(|(v, s)| LedGroup {
                    descriptor: Descriptor::new(v, s.clone()),
                    term: 1,
                    down_peers: Vec::new(),
                })
                .collect();
            for (node, led) in [(NodeId(1), led), (NodeId(11), Vec::new())] {
                let report = StoreReport {
                    node,
                    address: None,
                    hosted_bytes: Default::default(),
                    led,
                };
                sched.observe_report(Time::ZERO, report).expect("bounded");
            }
            let (mut total, mut max) = (Duration::ZERO, Duration::ZERO);
            for round in 0..ROUNDS {
                let now = Time::from_millis(200 * round);
                let start = Instant::now();
                for cmd in sched.tick(now, &state) {
                    state.apply(cmd, now);
                }
                let took = start.elapsed();
                total += took;
                max = max.max(took);
            }
            println!(
                "| {} | {p} | {ROUNDS} | {} | {} | {} |",
                strategy.name(),
                total.as_micros() / u128::from(ROUNDS),
                max.as_micros(),
                state.counters().operators_created
            );
        }
    }
}

//! How long a simulated SWIM cluster takes to run, in wall time, as it grows: n = 100 and
//! 1,000 members (and 2,000 with `--big`) for 120 simulated seconds with one crash at
//! 60 s, byte counting on (as `kvlab run` does). The bar: the 1,000-member run
//! completes in under a minute.
//!
//! `cargo bench -p kvlab-swim --bench swim_scale`

use std::time::{Duration, Instant};

use kvlab_sim::{NetworkConfig, Sim, SimConfig, SimOutput};
use kvlab_swim::{SwimConfig, SwimNode};
use kvlab_types::{NodeEvent, NodeId, Time};

/// Simulated length of one measured run.
const SIMULATED_S: u64 = 120;
/// When the one crash happens.
const CRASH_AT_S: u64 = 60;

fn run(n: u32, seed: u64) {
    let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
    let config = SimConfig {
        network: NetworkConfig {
            measure_bytes: true,
            ..NetworkConfig::default()
        },
        ..SimConfig::default()
    };
    let wall = Instant::now();
    let mut sim = Sim::<SwimNode>::new(config, seed, &ids, SwimConfig::default())
        .unwrap_or_else(|e| panic!("n={n}: {e}"));
    let mut outputs = Vec::new();
    let mut events = 0u64;
    let mut dead = 0u64;
    sim.run_until(Time::from_secs(CRASH_AT_S), &mut outputs)
        .unwrap_or_else(|e| panic!("n={n}: {e}"));
    events += outputs.len() as u64;
    outputs.clear();
    let victim = NodeId(n / 2);
    sim.crash(victim);
    let mut t = Time::from_secs(CRASH_AT_S);
    while t < Time::from_secs(SIMULATED_S) {
        t = t + Duration::from_secs(1);
        sim.run_until(t, &mut outputs)
            .unwrap_or_else(|e| panic!("n={n}: {e}"));
        for o in outputs.drain(..) {
            events += 1;
            if let SimOutput::Event { event, .. } = o
                && matches!(event, NodeEvent::MemberDead { member, .. } if member == victim)
            {
                dead += 1;
            }
        }
    }
    let secs = wall.elapsed().as_secs_f64();
    let st = sim.stats();
    println!(
        "n={n:5}: {SIMULATED_S} simulated s in {secs:6.2} s wall ({:.0}× real time); {} sim events ({:.2} M/s), {} messages ({:.2} per member per s), {} node events; {victim} declared dead by {dead} of {}",
        SIMULATED_S as f64 / secs,
        st.events_processed,
        st.events_processed as f64 / secs / 1e6,
        st.messages_sent,
        st.messages_sent as f64 / f64::from(n) / SIMULATED_S as f64,
        events,
        n - 1,
    );
}

fn main() {
    let big = std::env::args().any(|a| a == "--big");
    for n in [100, 1_000] {
        run(n, 1);
    }
    if big {
        run(2_000, 1);
    }
}

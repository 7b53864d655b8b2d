//! One seed decides a run: the same seed and inputs give the same outputs, statistics and
//! node states bit for bit; different seeds give different runs.

mod common;

use common::{Msg, Probe, ProbeConfig, cmd, ids, ms};
use kvlab_sim::{FaultRule, LatencyDist, Sim, SimConfig, SimOutput, SimStats};
use kvlab_types::{NodeId, Time};

/// Everything observable about a run.
#[derive(Debug, PartialEq)]
struct Trace {
    outputs: Vec<SimOutput>,
    stats: SimStats,
    received: Vec<Vec<(NodeId, Msg, Time)>>,
}

/// A busy run with every source of randomness and every kind of fault.
fn chaotic_run(seed: u64) -> Trace {
    let mut config = SimConfig::default();
    config.network.latency = LatencyDist::Exponential {
        mean_ms: 2.0,
        min_ms: 0.2,
        max_ms: 15.0,
    };
    config.network.loss_probability = 0.05;
    config.network.duplicate_probability = 0.05;
    config.network.reorder_probability = 0.2;
    config.network.measure_bytes = true;
    config.disk.tear_probability = 0.5;
    let nodes = ids(5);
    let gossip = ProbeConfig {
        reply_pong: true,
        gossip_ms: Some(5),
    };
    let mut sim = Sim::<Probe>::new(config, seed, &nodes, gossip).expect("valid sim");
    let mut outputs = Vec::new();
    let mut seq = 0;
    for step in 0..40u64 {
        let t = ms(step as f64 * 10.0);
        for n in 1..=5u32 {
            seq += 1;
            let target = (n % 5) + 1;
            sim.submit(NodeId(n), cmd(seq, &format!("incr_send:{target}"), 0));
        }
        match step {
            5 => {
                sim.add_rule(FaultRule::Partition {
                    a: vec![NodeId(1), NodeId(2)],
                    b: vec![NodeId(3), NodeId(4), NodeId(5)],
                });
            }
            8 => sim.crash(NodeId(3)),
            10 => sim.restart(NodeId(3)).expect("restart"),
            12 => {
                sim.add_rule(FaultRule::Hold {
                    from: vec![NodeId(4)],
                    to: vec![NodeId(5)],
                });
            }
            14 => sim.pause(NodeId(2)),
            15 => sim.set_clock_drift(NodeId(1), 30_000),
            16 => {
                sim.add_rule(FaultRule::Delay {
                    extra: LatencyDist::Uniform {
                        min_ms: 0.0,
                        max_ms: 5.0,
                    },
                });
            }
            18 => sim.resume(NodeId(2)),
            20 => sim.heal(),
            25 => sim.crash(NodeId(5)),
            30 => sim.restart(NodeId(5)).expect("restart"),
            _ => {}
        }
        sim.run_until(t + std::time::Duration::from_millis(10), &mut outputs)
            .expect("run");
    }
    let received = nodes
        .iter()
        .map(|&n| sim.node(n).map(|p| p.received.clone()).unwrap_or_default())
        .collect();
    Trace {
        outputs,
        stats: sim.stats().clone(),
        received,
    }
}

#[test]
fn same_seed_gives_identical_runs_over_many_seeds() {
    for seed in 0..40 {
        let a = chaotic_run(seed);
        let b = chaotic_run(seed);
        assert!(
            a.stats.messages_delivered > 100,
            "seed {seed}: the run is busy"
        );
        assert!(a.stats.crashes == 2 && a.stats.syncs > 0, "seed {seed}");
        if a != b {
            panic!(
                "runs differ for seed {seed}; reproduce with \
                 `cargo test -p kvlab-sim --test determinism` and chaotic_run({seed})"
            );
        }
    }
}

#[test]
fn different_seeds_give_different_runs() {
    let base = chaotic_run(0);
    for seed in 1..10 {
        let other = chaotic_run(seed);
        assert_ne!(base.outputs, other.outputs, "seed {seed} repeats seed 0");
        assert_ne!(base.stats, other.stats, "seed {seed} repeats seed 0");
    }
}

//! SWIM alone in kvlab-sim: the two convergence properties of issue 4.
//!
//! * A partition long enough for each side to declare the other dead heals, and the
//!   cluster is back to one view (every member sees every other alive) within a bound:
//!   push-pull with a dead member reconnects the sides (see the crate docs).
//! * A member that crashes, is declared dead everywhere and restarts with a new address
//!   (`SwimNode` comes back as `<id>/inc<incarnation>`) is alive, at its new address and
//!   incarnation, in every member's table within a bound.

use std::time::Duration;

use kvlab_sim::{FaultRule, NetworkConfig, Sim, SimConfig};
use kvlab_swim::{MemberState, SwimConfig, SwimNode};
use kvlab_types::{NodeId, Time};

/// Sampling step of the tests' waits.
const STEP: Duration = Duration::from_millis(100);

fn sim(n: u32, config: SwimConfig, seed: u64) -> (Sim<SwimNode>, Vec<NodeId>) {
    let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
    let sim_config = SimConfig {
        network: NetworkConfig {
            loss_probability: 0.01,
            ..NetworkConfig::default()
        },
        ..SimConfig::default()
    };
    let sim = Sim::<SwimNode>::new(sim_config, seed, &ids, config)
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    (sim, ids)
}

fn state(sim: &Sim<SwimNode>, observer: NodeId, member: NodeId) -> Option<(MemberState, u64)> {
    let m = sim.node(observer)?.swim()?.member(member)?;
    Some((m.state, m.incarnation))
}

/// Every member sees every other alive.
fn one_view(sim: &Sim<SwimNode>, ids: &[NodeId]) -> bool {
    ids.iter().all(|o| {
        ids.iter()
            .filter(|m| *m != o)
            .all(|m| state(sim, *o, *m).is_some_and(|(s, _)| s == MemberState::Alive))
    })
}

/// Runs until `done` holds or `bound` passes; returns how long it took.
fn wait_for(
    sim: &mut Sim<SwimNode>,
    bound: Duration,
    mut done: impl FnMut(&Sim<SwimNode>) -> bool,
) -> Option<Duration> {
    let start = sim.now();
    let mut out = Vec::new();
    loop {
        if done(sim) {
            return Some(sim.now().saturating_since(start));
        }
        if sim.now().saturating_since(start) >= bound {
            return None;
        }
        let t = sim.now() + STEP;
        sim.run_until(t, &mut out).expect("simulation runs");
        out.clear();
    }
}

#[test]
fn healed_partition_converges_to_one_view_within_bound() {
    let config = SwimConfig {
        push_pull_interval_ms: 10_000,
        ..SwimConfig::default()
    };
    // Two push-pull intervals (one to reach across, one for the news to spread) and
    // a margin for gossip.
    let bound = Duration::from_secs(30);
    for seed in 1..=3 {
        let (mut sim, ids) = sim(16, config.clone(), seed);
        wait_for(&mut sim, Duration::from_secs(60), |s| one_view(s, &ids))
            .unwrap_or_else(|| panic!("seed {seed}: no initial view"));
        let (a, b) = ids.split_at(8);
        let rule = sim.add_rule(FaultRule::Partition {
            a: a.to_vec(),
            b: b.to_vec(),
        });
        // Long enough for the maximum (Lifeguard) suspicion timeout to run out.
        let cut = sim.now() + Duration::from_secs(60);
        sim.run_until(cut, &mut Vec::new())
            .expect("simulation runs");
        assert_eq!(
            state(&sim, a[0], b[0]).map(|(s, _)| s),
            Some(MemberState::Dead),
            "seed {seed}: the sides did not declare each other dead"
        );
        sim.remove_rule(rule);
        let took = wait_for(&mut sim, bound, |s| one_view(s, &ids))
            .unwrap_or_else(|| panic!("seed {seed}: no single view within {bound:?} of the heal"));
        println!("seed {seed}: one view {took:?} after the heal");
    }
}

#[test]
fn restarted_member_with_new_address_is_alive_everywhere_within_bound() {
    // A few protocol periods: the rejoin is a push-pull with a seed plus gossip.
    let bound = Duration::from_secs(10);
    for seed in 1..=3 {
        let (mut sim, ids) = sim(20, SwimConfig::default(), seed);
        wait_for(&mut sim, Duration::from_secs(60), |s| one_view(s, &ids))
            .unwrap_or_else(|| panic!("seed {seed}: no initial view"));
        let victim = NodeId(7);
        let old = sim
            .node(victim)
            .and_then(|p| p.swim())
            .map(|s| (s.address().to_string(), s.incarnation()))
            .expect("victim up");
        sim.crash(victim);
        let others: Vec<NodeId> = ids.iter().copied().filter(|i| *i != victim).collect();
        wait_for(&mut sim, Duration::from_secs(60), |s| {
            others
                .iter()
                .all(|o| state(s, *o, victim).is_some_and(|(st, _)| st == MemberState::Dead))
        })
        .unwrap_or_else(|| panic!("seed {seed}: {victim} never dead everywhere"));
        sim.restart(victim).expect("restart");
        let (address, incarnation) = sim
            .node(victim)
            .and_then(|p| p.swim())
            .map(|s| (s.address().to_string(), s.incarnation()))
            .expect("victim up");
        assert_ne!(
            address, old.0,
            "seed {seed}: a restart brings a new address"
        );
        assert!(incarnation > old.1, "seed {seed}: and a higher incarnation");
        let took = wait_for(&mut sim, bound, |s| {
            others.iter().all(|o| {
                s.node(*o)
                    .and_then(|p| p.swim())
                    .and_then(|sw| sw.member(victim))
                    .is_some_and(|m| {
                        m.state == MemberState::Alive
                            && m.address == address
                            && m.incarnation >= incarnation
                    })
            })
        })
        .unwrap_or_else(|| panic!("seed {seed}: {victim} not alive everywhere within {bound:?}"));
        println!("seed {seed}: {victim} alive everywhere at {address} {took:?} after restart");
        assert!(one_view(&sim, &ids), "seed {seed}");
    }
}

/// Guards the helper: a cluster that never started has no view.
#[test]
fn one_view_needs_every_member_to_see_every_other() {
    let (sim, ids) = sim(4, SwimConfig::default(), 1);
    assert!(!one_view(&sim, &ids));
    assert_eq!(sim.now(), Time::ZERO);
}

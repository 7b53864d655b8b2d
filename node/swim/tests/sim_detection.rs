//! SWIM alone in kvlab-sim: crash members one at a time in clusters of 32 and 100 and
//! measure what the SWIM paper measures — time to first suspicion, time until every
//! member has declared the crashed one dead, and message load per member per second.
//! Compared with the paper's expected mean first-detection time `T·e/(e−1)`.
//!
//! Run `cargo test -p kvlab-swim --test sim_detection -- --nocapture` to see the numbers.

use std::time::Duration;

use kvlab_sim::{NetworkConfig, Sim, SimConfig, SimOutput};
use kvlab_swim::{MemberState, SwimConfig, SwimNode};
use kvlab_types::{NodeEvent, NodeId, Time};

struct Detection {
    first_suspicion_s: Vec<f64>,
    dead_everywhere_s: Vec<f64>,
    messages_per_member_s: f64,
    bytes_per_member_s: f64,
}

fn up_view(sim: &Sim<SwimNode>, observer: NodeId, member: NodeId) -> Option<MemberState> {
    sim.node(observer)?.swim()?.member(member).map(|m| m.state)
}

fn converged(sim: &Sim<SwimNode>, ids: &[NodeId]) -> bool {
    ids.iter().filter(|o| sim.is_up(**o)).all(|o| {
        ids.iter()
            .filter(|m| sim.is_up(**m))
            .all(|m| up_view(sim, *o, *m) == Some(MemberState::Alive))
    })
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i]
}

/// Boots `n` members, waits for one view, then crashes `crashes` members one at a time.
fn measure(n: u32, crashes: u32, seed: u64) -> Detection {
    let ids: Vec<NodeId> = (0..n).map(NodeId).collect();
    let sim_config = SimConfig {
        network: NetworkConfig {
            measure_bytes: true,
            ..NetworkConfig::default()
        },
        ..SimConfig::default()
    };
    let mut sim = Sim::<SwimNode>::new(sim_config, seed, &ids, SwimConfig::default())
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let mut outputs = Vec::new();
    let mut t = Time::ZERO;
    while !converged(&sim, &ids) {
        assert!(
            t < Time::from_secs(120),
            "seed {seed}: {n} members never converged"
        );
        t = t + Duration::from_millis(500);
        sim.run_until(t, &mut outputs).unwrap();
    }
    outputs.clear();
    let steady_start = (sim.now(), sim.stats().messages_sent, sim.stats().bytes_sent);
    let cfg = SwimConfig::default();
    let (_, max_suspicion) = cfg.suspicion_timeout_bounds(n as usize);
    let bound = Duration::from_millis(cfg.protocol_period_ms * (2 * u64::from(n))) + max_suspicion;
    let mut d = Detection {
        first_suspicion_s: Vec::new(),
        dead_everywhere_s: Vec::new(),
        messages_per_member_s: 0.0,
        bytes_per_member_s: 0.0,
    };
    for k in 0..crashes {
        let victim = NodeId((k * 7 + 3) % n);
        // Let the cluster settle a little between crashes.
        let t_settle = sim.now() + Duration::from_secs(5);
        sim.run_until(t_settle, &mut outputs).unwrap();
        outputs.clear();
        let t0 = sim.now();
        sim.crash(victim);
        let mut first: Option<Time> = None;
        let mut t = t0;
        loop {
            t = t + Duration::from_millis(100);
            sim.run_until(t, &mut outputs).unwrap();
            for o in outputs.drain(..) {
                if let SimOutput::Event { at, event, .. } = o
                    && matches!(
                        event,
                        NodeEvent::MemberSuspect { member, .. } | NodeEvent::MemberDead { member, .. }
                            if member == victim
                    )
                {
                    first.get_or_insert(at);
                }
            }
            let all_dead = ids
                .iter()
                .filter(|o| **o != victim && sim.is_up(**o))
                .all(|o| up_view(&sim, *o, victim) == Some(MemberState::Dead));
            if all_dead {
                break;
            }
            assert!(
                t.saturating_since(t0) < bound,
                "seed {seed}: {victim} not dead everywhere within {bound:?}"
            );
        }
        let first = first.unwrap_or_else(|| panic!("seed {seed}: no suspicion of {victim}"));
        d.first_suspicion_s
            .push(first.saturating_since(t0).as_secs_f64());
        d.dead_everywhere_s
            .push(sim.now().saturating_since(t0).as_secs_f64());
        // No live member may be dead or suspect in anyone's view (false positives).
        for o in ids.iter().filter(|o| sim.is_up(**o)) {
            for m in ids.iter().filter(|m| sim.is_up(**m)) {
                assert_ne!(
                    up_view(&sim, *o, *m),
                    Some(MemberState::Dead),
                    "seed {seed}: false positive: {o} thinks live {m} is dead"
                );
            }
        }
    }
    let secs = sim.now().saturating_since(steady_start.0).as_secs_f64();
    let msgs = (sim.stats().messages_sent - steady_start.1) as f64;
    let bytes = (sim.stats().bytes_sent - steady_start.2) as f64;
    d.messages_per_member_s = msgs / f64::from(n) / secs;
    d.bytes_per_member_s = bytes / f64::from(n) / secs;
    d
}

fn report(n: u32, d: &Detection) {
    let mean = d.first_suspicion_s.iter().sum::<f64>() / d.first_suspicion_s.len() as f64;
    let e = std::f64::consts::E;
    println!(
        "n={n}: crashes={} first suspicion mean {mean:.2} s p50 {:.2} max {:.2} \
         (paper T·e/(e−1) = {:.2} s); dead everywhere p50 {:.1} s max {:.1} s; \
         {:.2} msgs/member/s, {:.0} bytes/member/s",
        d.first_suspicion_s.len(),
        percentile(&d.first_suspicion_s, 0.5),
        percentile(&d.first_suspicion_s, 1.0),
        e / (e - 1.0),
        percentile(&d.dead_everywhere_s, 0.5),
        percentile(&d.dead_everywhere_s, 1.0),
        d.messages_per_member_s,
        d.bytes_per_member_s,
    );
}

#[test]
fn crash_detection_in_32_members() {
    let d = measure(32, 8, 1);
    report(32, &d);
    let mean = d.first_suspicion_s.iter().sum::<f64>() / d.first_suspicion_s.len() as f64;
    assert!(mean < 5.0, "mean first suspicion {mean:.2} s");
    // SWIM's load is constant per member: a ping and an ack per period, plus ping-reqs.
    assert!(
        d.messages_per_member_s < 6.0,
        "{:.2} msgs/member/s",
        d.messages_per_member_s
    );
}

#[test]
fn crash_detection_in_100_members() {
    let d = measure(100, 4, 2);
    report(100, &d);
    assert!(
        d.messages_per_member_s < 6.0,
        "{:.2} msgs/member/s",
        d.messages_per_member_s
    );
}

//! Tests, in two layers: scripted tests of one [`Swim`] core fed by hand (each rule,
//! citing the paper section it checks), and cluster tests on the in-crate harness over
//! many seeds (each failure names its seed).

use std::time::Duration;

use kvlab_types::{
    Cx, Effect, NodeEvent, NodeId, Out, Recovery, Rng, Time, TimerId, TimerSpace, seeded_rng,
};

use crate::harness::Cluster;
use crate::swim::{T_ACK, T_GOSSIP, T_PROBE, T_PUSH_PULL, T_RECLAIM, T_RELAY, T_SUSPICION, timer};
use crate::*;

// ----- a single scripted core ---------------------------------------------------------

/// One core driven by hand with a clock the test moves.
struct One {
    swim: Swim,
    rng: Rng,
    now: Time,
}

fn n(i: u32) -> NodeId {
    NodeId(i)
}

fn alive(m: u32, inc: u64) -> Update {
    Update::Alive {
        member: n(m),
        incarnation: inc,
        address: format!("n{m}/a"),
    }
}

fn suspect(m: u32, inc: u64, from: u32) -> Update {
    Update::Suspect {
        member: n(m),
        incarnation: inc,
        from: n(from),
    }
}

fn dead(m: u32, inc: u64, from: u32) -> Update {
    Update::Dead {
        member: n(m),
        incarnation: inc,
        from: n(from),
    }
}

fn sends(effects: &[Effect<SwimMsg>]) -> Vec<(NodeId, SwimMsg)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

fn timer_after(effects: &[Effect<SwimMsg>], t: TimerId) -> Option<Duration> {
    effects.iter().rev().find_map(|e| match e {
        Effect::SetTimer { timer, after } if *timer == t => Some(*after),
        _ => None,
    })
}

impl One {
    /// Node 0, started, knowing members `1..=others` alive at incarnation 0.
    fn new(others: u32, config: SwimConfig) -> One {
        let swim = Swim::new(n(0), "n0/a".into(), 0, config).expect("valid config");
        let mut one = One {
            swim,
            rng: seeded_rng(11),
            now: Time::ZERO,
        };
        let mut out = Out::new();
        let mut cx = Cx::new(n(0), one.now, &mut one.rng);
        one.swim.start(&mut cx, &mut out);
        let ups: Vec<Update> = (1..=others).map(|m| alive(m, 0)).collect();
        if !ups.is_empty() {
            one.gossip(1, ups);
        }
        one.swim.drain_events();
        one
    }

    fn at(&mut self, ms: u64) -> &mut Self {
        self.now = Time::from_millis(ms);
        self
    }

    fn msg(&mut self, from: u32, body: SwimBody, updates: Vec<Update>) -> Vec<Effect<SwimMsg>> {
        let mut out = Out::new();
        let mut cx = Cx::new(n(0), self.now, &mut self.rng);
        self.swim
            .handle_msg(&mut cx, n(from), SwimMsg { body, updates }, &mut out);
        out.effects().to_vec()
    }

    fn gossip(&mut self, from: u32, updates: Vec<Update>) -> Vec<Effect<SwimMsg>> {
        self.msg(from, SwimBody::Gossip, updates)
    }

    fn fire(&mut self, t: TimerId) -> Vec<Effect<SwimMsg>> {
        let mut out = Out::new();
        let mut cx = Cx::new(n(0), self.now, &mut self.rng);
        assert!(self.swim.handle_timer(&mut cx, t, &mut out));
        out.effects().to_vec()
    }

    fn state(&self, m: u32) -> Option<(MemberState, u64)> {
        self.swim.member(n(m)).map(|x| (x.state, x.incarnation))
    }

    /// Fires the probe tick and returns the probe's target and seq.
    fn probe(&mut self) -> (NodeId, u64, Vec<Effect<SwimMsg>>) {
        let effects = self.fire(timer(T_PROBE, 0));
        let (to, msg) = sends(&effects)
            .into_iter()
            .find(|(_, m)| matches!(m.body, SwimBody::Ping { .. }))
            .expect("a ping");
        let SwimBody::Ping { seq, .. } = msg.body else {
            unreachable!()
        };
        (to, seq, effects)
    }
}

fn quiet() -> SwimConfig {
    SwimConfig {
        push_pull_interval_ms: 0,
        ..SwimConfig::default()
    }
}

// ----- configuration -------------------------------------------------------------------

#[test]
fn default_config_validates_and_toml_rejects_unknown_fields() {
    SwimConfig::default().validate().unwrap();
    let c: SwimConfig =
        toml::from_str("protocol_period_ms = 200\nseeds = [1, 2]\n[lifeguard]\nbuddy = false\n")
            .unwrap();
    assert_eq!(c.protocol_period_ms, 200);
    assert_eq!(c.seeds, vec![n(1), n(2)]);
    assert!(!c.lifeguard.buddy && c.lifeguard.local_health);
    let err = toml::from_str::<SwimConfig>("protocol_period = 200\n").unwrap_err();
    assert!(err.to_string().contains("protocol_period"), "{err}");
}

#[test]
fn validate_names_the_bad_field() {
    let cases: Vec<(SwimConfig, &str)> = vec![
        (
            SwimConfig {
                protocol_period_ms: 0,
                ..SwimConfig::default()
            },
            "protocol_period_ms",
        ),
        (
            SwimConfig {
                ack_timeout_ms: 1_000,
                ..SwimConfig::default()
            },
            "ack_timeout_ms",
        ),
        (
            SwimConfig {
                indirect_probes: 99,
                ..SwimConfig::default()
            },
            "indirect_probes",
        ),
        (
            SwimConfig {
                suspicion_mult: 0,
                ..SwimConfig::default()
            },
            "suspicion_mult",
        ),
        (
            SwimConfig {
                retransmit_mult: 0,
                ..SwimConfig::default()
            },
            "retransmit_mult",
        ),
        (
            SwimConfig {
                max_piggyback_bytes: 10,
                ..SwimConfig::default()
            },
            "max_piggyback_bytes",
        ),
        (
            SwimConfig {
                local_health_max: 1_000,
                ..SwimConfig::default()
            },
            "local_health_max",
        ),
        (
            SwimConfig {
                dead_reclaim_ms: 0,
                ..SwimConfig::default()
            },
            "dead_reclaim_ms",
        ),
    ];
    for (c, field) in cases {
        match c.validate() {
            Err(SwimError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected InvalidConfig, got {other:?}"),
        }
    }
}

#[test]
fn invalid_config_leaves_swim_node_inert_with_an_event() {
    use kvlab_types::Protocol;
    let bad = SwimConfig {
        protocol_period_ms: 0,
        ..SwimConfig::default()
    };
    let mut rng = seeded_rng(1);
    let mut cx = Cx::new(n(0), Time::ZERO, &mut rng);
    let mut out = Out::new();
    let node = SwimNode::boot(&mut cx, &bad, &[n(0), n(1)], Recovery::default(), &mut out);
    assert!(node.swim().is_none());
    assert!(out.effects().iter().any(
        |e| matches!(e, Effect::Event(NodeEvent::RecoveryFailed { reason }) if reason.contains("protocol_period_ms"))
    ));
    assert!(sends(out.effects()).is_empty());
}

// ----- formulas ------------------------------------------------------------------------

/// SWIM §4.1: each update is piggybacked λ·log(n) times; we use ⌈log2(n+1)⌉.
#[test]
fn retransmit_limit_is_lambda_times_ceil_log2() {
    let c = SwimConfig {
        retransmit_mult: 4,
        ..SwimConfig::default()
    };
    assert_eq!(c.retransmit_limit(1), 4);
    assert_eq!(c.retransmit_limit(3), 8);
    assert_eq!(c.retransmit_limit(4), 12);
    assert_eq!(c.retransmit_limit(31), 20);
    assert_eq!(c.retransmit_limit(1000), 40);
}

/// Lifeguard §IV-B: max(min, max − (max−min)·log(C+1)/log(K+1)).
#[test]
fn dynamic_suspicion_timeout_follows_lifeguard_formula() {
    let min = Duration::from_secs(6);
    let max = Duration::from_secs(36);
    assert_eq!(dynamic_suspicion_timeout(min, max, 0, 3), max);
    let one = dynamic_suspicion_timeout(min, max, 1, 3);
    let expected = 36.0 - 30.0 * 2f64.ln() / 4f64.ln();
    assert!((one.as_secs_f64() - expected).abs() < 1e-6, "{one:?}");
    let two = dynamic_suspicion_timeout(min, max, 2, 3);
    assert!(two < one && two > min);
    assert_eq!(dynamic_suspicion_timeout(min, max, 3, 3), min);
    assert_eq!(
        dynamic_suspicion_timeout(min, max, 9, 3),
        min,
        "capped at K"
    );
    assert_eq!(
        dynamic_suspicion_timeout(min, max, 0, 0),
        min,
        "K = 0: the minimum"
    );
}

#[test]
fn suspicion_timeout_bounds_scale_with_log10_n() {
    let c = SwimConfig::default();
    let (min, max) = c.suspicion_timeout_bounds(5);
    assert_eq!(min, Duration::from_secs(4), "log10 n is floored at 1");
    assert_eq!(max, Duration::from_secs(24));
    let (min, _) = c.suspicion_timeout_bounds(1000);
    assert_eq!(min, Duration::from_secs(12));
}

// ----- precedence rules (SWIM §4.2) ----------------------------------------------------

/// SWIM §4.2: {Alive, i} overrides {Suspect, j} only if i > j.
#[test]
fn alive_overrides_suspect_only_with_higher_incarnation() {
    let mut one = One::new(3, quiet());
    one.gossip(2, vec![suspect(1, 0, 2)]);
    assert_eq!(one.state(1), Some((MemberState::Suspect, 0)));
    one.gossip(2, vec![alive(1, 0)]);
    assert_eq!(
        one.state(1),
        Some((MemberState::Suspect, 0)),
        "same incarnation"
    );
    one.gossip(2, vec![alive(1, 1)]);
    assert_eq!(one.state(1), Some((MemberState::Alive, 1)));
    assert!(one.swim.suspicion_deadline(n(1)).is_none());
    let kinds: Vec<_> = one.swim.drain_events().map(|e| e.kind()).collect();
    assert_eq!(kinds, ["member_suspect", "member_alive"]);
}

/// SWIM §4.2: {Suspect, i} overrides {Alive, j} if i >= j and {Suspect, j} if i > j.
#[test]
fn suspect_overrides_alive_with_same_or_higher_incarnation() {
    let mut one = One::new(3, quiet());
    one.gossip(2, vec![alive(1, 3)]);
    one.gossip(2, vec![suspect(1, 2, 2)]);
    assert_eq!(
        one.state(1),
        Some((MemberState::Alive, 3)),
        "stale suspicion ignored"
    );
    one.gossip(2, vec![suspect(1, 3, 2)]);
    assert_eq!(one.state(1), Some((MemberState::Suspect, 3)));
    one.gossip(3, vec![suspect(1, 4, 3)]);
    assert_eq!(one.state(1), Some((MemberState::Suspect, 4)));
}

/// SWIM §4.2: {Confirm} overrides alive and suspect; here only up to its own
/// incarnation, so a stale death cannot kill a member that rejoined.
#[test]
fn dead_overrides_alive_and_suspect_but_not_a_newer_incarnation() {
    let mut one = One::new(3, quiet());
    one.gossip(2, vec![dead(1, 0, 2)]);
    assert_eq!(one.state(1), Some((MemberState::Dead, 0)));
    one.gossip(2, vec![alive(2, 5), dead(2, 4, 3)]);
    assert_eq!(one.state(2), Some((MemberState::Alive, 5)));
    one.gossip(2, vec![suspect(3, 0, 2), dead(3, 0, 2)]);
    assert_eq!(one.state(3), Some((MemberState::Dead, 0)));
    assert!(one.swim.suspicion_deadline(n(3)).is_none());
    assert_eq!(one.swim.live_count(), 2);
}

/// SWIM §4.2 (memberlist's rejoin): alive with a higher incarnation revives a dead
/// member, and a new address comes with it.
#[test]
fn rejoin_with_new_address_is_accepted_with_higher_incarnation() {
    let mut one = One::new(2, quiet());
    one.gossip(2, vec![dead(1, 0, 2)]);
    one.swim.drain_events();
    let moved = Update::Alive {
        member: n(1),
        incarnation: 0,
        address: "n1/b".into(),
    };
    one.gossip(2, vec![moved]);
    assert_eq!(
        one.state(1),
        Some((MemberState::Dead, 0)),
        "same incarnation ignored"
    );
    let moved = Update::Alive {
        member: n(1),
        incarnation: 1,
        address: "n1/b".into(),
    };
    one.gossip(2, vec![moved]);
    assert_eq!(one.state(1), Some((MemberState::Alive, 1)));
    assert_eq!(one.swim.member(n(1)).unwrap().address, "n1/b");
    let ev: Vec<_> = one.swim.drain_events().collect();
    assert_eq!(
        ev,
        [
            MembershipEvent::AddressChanged {
                member: n(1),
                incarnation: 1,
                old_address: "n1/a".into(),
                address: "n1/b".into()
            },
            MembershipEvent::Alive {
                member: n(1),
                incarnation: 1
            }
        ]
    );
}

#[test]
fn address_conflict_at_same_incarnation_is_ignored_and_counted() {
    let mut one = One::new(2, quiet());
    let other = Update::Alive {
        member: n(1),
        incarnation: 0,
        address: "impostor".into(),
    };
    one.gossip(2, vec![other]);
    assert_eq!(one.swim.member(n(1)).unwrap().address, "n1/a");
    assert_eq!(one.swim.counters().address_conflicts, 1);
}

/// SWIM §4.2: a suspected member refutes by incrementing its incarnation, and the
/// refutation is persisted (Sync) before anything is sent.
#[test]
fn refutes_suspicion_with_higher_incarnation() {
    let mut one = One::new(2, quiet());
    let effects = one.msg(
        1,
        SwimBody::Ping {
            seq: 9,
            target: n(0),
        },
        vec![suspect(0, 0, 2)],
    );
    assert_eq!(one.swim.incarnation(), 1);
    assert_eq!(one.swim.counters().refutations, 1);
    let persist = effects
        .iter()
        .position(|e| matches!(e, Effect::Persist { record: r, .. } if decode_incarnation_record(r, 0) == Ok(1)))
        .expect("incarnation persisted");
    let sync = effects
        .iter()
        .position(|e| matches!(e, Effect::Sync))
        .expect("sync");
    let send = effects
        .iter()
        .position(|e| matches!(e, Effect::Send { .. }))
        .expect("ack");
    assert!(persist < sync && sync < send, "persist, sync, then send");
    let all = sends(&effects);
    let (_, ack) = all
        .iter()
        .find(|(to, m)| *to == n(1) && m.body == SwimBody::Ack { seq: 9 })
        .expect("ack to the prober");
    let refutation = Update::Alive {
        member: n(0),
        incarnation: 1,
        address: "n0/a".into(),
    };
    assert!(
        ack.updates.contains(&refutation),
        "the refutation rides on the ack: {:?}",
        ack.updates
    );
    // ... and is pushed at once to the accuser, not left for the next probe.
    assert!(
        all.iter().any(|(to, m)| *to == n(2)
            && m.body == SwimBody::Gossip
            && m.updates.contains(&refutation)),
        "refutation pushed to the accuser n2: {all:?}"
    );
    // A suspicion of an older incarnation is stale: no second refutation.
    one.gossip(2, vec![suspect(0, 0, 2)]);
    assert_eq!(one.swim.incarnation(), 1);
    // Death is refuted the same way.
    one.gossip(2, vec![dead(0, 1, 2)]);
    assert_eq!(one.swim.incarnation(), 2);
}

#[test]
fn stale_alive_of_a_previous_life_is_outnumbered() {
    let mut one = One::new(2, quiet());
    one.gossip(1, vec![alive(0, 7)]);
    assert_eq!(one.swim.incarnation(), 8);
    assert_eq!(
        one.swim.local_health(),
        0,
        "not an accusation: health unchanged"
    );
}

// ----- probing (SWIM §3.1, §4.3) -------------------------------------------------------

/// SWIM §4.3: round-robin over a shuffled list; every member once per round, and the
/// list is reshuffled between rounds.
#[test]
fn probe_order_visits_every_member_once_per_round_and_reshuffles() {
    let mut one = One::new(6, quiet());
    let mut rounds = Vec::new();
    for _ in 0..6 {
        let mut round = Vec::new();
        for _ in 0..6 {
            let (target, seq, _) = one.probe();
            one.msg(target.0, SwimBody::Ack { seq }, vec![]);
            round.push(target.0);
        }
        let mut sorted = round.clone();
        sorted.sort();
        assert_eq!(sorted, [1, 2, 3, 4, 5, 6], "round {round:?}");
        rounds.push(round);
    }
    assert!(
        rounds.windows(2).any(|w| w[0] != w[1]),
        "never reshuffled: {rounds:?}"
    );
}

/// SWIM §4.3: a new member enters the current round at a random position.
#[test]
fn new_member_is_probed_within_the_next_round() {
    let mut one = One::new(4, quiet());
    let (t, seq, _) = one.probe();
    one.msg(t.0, SwimBody::Ack { seq }, vec![]);
    one.gossip(1, vec![alive(9, 0)]);
    let mut seen = false;
    for _ in 0..9 {
        let (t, seq, _) = one.probe();
        one.msg(t.0, SwimBody::Ack { seq }, vec![]);
        seen |= t == n(9);
    }
    assert!(seen);
}

/// SWIM §3.1: no ack within the ack timeout → ping-req to k random members.
#[test]
fn missing_ack_sends_ping_req_to_k_members() {
    let mut one = One::new(6, quiet());
    let (target, seq, effects) = one.probe();
    assert_eq!(
        timer_after(&effects, timer(T_ACK, seq)),
        Some(Duration::from_millis(500))
    );
    let effects = one.fire(timer(T_ACK, seq));
    let reqs: Vec<_> = sends(&effects)
        .into_iter()
        .filter(|(_, m)| m.body == SwimBody::PingReq { seq, target })
        .map(|(to, _)| to)
        .collect();
    assert_eq!(reqs.len(), 3);
    assert!(!reqs.contains(&target) && !reqs.contains(&n(0)));
    // An ack forwarded by a relay completes the probe: no suspicion.
    one.msg(reqs[0].0, SwimBody::Ack { seq }, vec![]);
    one.fire(timer(T_PROBE, 0));
    assert_eq!(one.state(target.0).unwrap().0, MemberState::Alive);
    assert_eq!(one.swim.counters().probes_failed, 0);
}

/// SWIM §3.1 + Lifeguard §IV-A: a relay probes the target, forwards its ack to the
/// origin, and sends a nack if the target stays silent.
#[test]
fn ping_req_relay_forwards_ack_and_nacks_on_silence() {
    let mut one = One::new(3, quiet());
    let effects = one.msg(
        1,
        SwimBody::PingReq {
            seq: 77,
            target: n(2),
        },
        vec![],
    );
    let (to, ping) = sends(&effects).remove(0);
    assert_eq!(to, n(2));
    let SwimBody::Ping {
        seq: relay_seq,
        target,
    } = ping.body
    else {
        panic!("{ping:?}")
    };
    assert_eq!(target, n(2));
    let effects = one.msg(2, SwimBody::Ack { seq: relay_seq }, vec![]);
    assert_eq!(sends(&effects)[0].0, n(1));
    assert_eq!(sends(&effects)[0].1.body, SwimBody::Ack { seq: 77 });

    let effects = one.msg(
        1,
        SwimBody::PingReq {
            seq: 78,
            target: n(3),
        },
        vec![],
    );
    let SwimBody::Ping { seq: relay_seq, .. } = sends(&effects)[0].1.body else {
        panic!()
    };
    assert_eq!(
        timer_after(&effects, timer(T_RELAY, relay_seq)),
        Some(Duration::from_millis(400)),
        "nack after 80% of the ack timeout"
    );
    let effects = one.fire(timer(T_RELAY, relay_seq));
    assert_eq!(sends(&effects)[0], (n(1), sends(&effects)[0].1.clone()));
    assert_eq!(sends(&effects)[0].1.body, SwimBody::Nack { seq: 78 });
    // A late ack within one more ack timeout is still forwarded.
    let effects = one.msg(3, SwimBody::Ack { seq: relay_seq }, vec![]);
    assert_eq!(sends(&effects)[0].1.body, SwimBody::Ack { seq: 78 });
}

#[test]
fn relays_are_bounded_and_refusals_counted() {
    let mut one = One::new(
        3,
        SwimConfig {
            max_pending_relays: 2,
            ..quiet()
        },
    );
    for s in 0..5 {
        one.msg(
            1,
            SwimBody::PingReq {
                seq: s,
                target: n(2),
            },
            vec![],
        );
    }
    assert_eq!(one.swim.counters().relays_refused, 3);
}

/// SWIM §4.2: a probe with no ack by the end of the protocol period makes the target
/// suspect, and the suspicion is gossiped.
#[test]
fn unacked_probe_raises_suspicion_at_end_of_period() {
    let mut one = One::new(3, quiet());
    let (target, seq, _) = one.probe();
    one.fire(timer(T_ACK, seq));
    let effects = one.at(1_000).fire(timer(T_PROBE, 0));
    assert_eq!(one.state(target.0), Some((MemberState::Suspect, 0)));
    assert_eq!(one.swim.counters().suspicions_raised, 1);
    // The next ping carries the suspicion.
    let (_, next) = sends(&effects)
        .into_iter()
        .find(|(_, m)| matches!(m.body, SwimBody::Ping { .. }))
        .unwrap();
    assert!(next.updates.contains(&Update::Suspect {
        member: target,
        incarnation: 0,
        from: n(0)
    }));
    let events: Vec<_> = one.swim.drain_events().collect();
    assert_eq!(
        events,
        [MembershipEvent::Suspect {
            member: target,
            incarnation: 0,
            from: n(0)
        }]
    );
}

/// SWIM §4.2: suspect → dead when the suspicion timeout passes unrefuted.
#[test]
fn unrefuted_suspicion_becomes_dead_after_timeout() {
    let cfg = SwimConfig {
        lifeguard: LifeguardConfig::off(),
        ..quiet()
    };
    let mut one = One::new(3, cfg);
    one.gossip(2, vec![suspect(1, 0, 2)]);
    let deadline = one.swim.suspicion_deadline(n(1)).unwrap();
    assert_eq!(
        deadline,
        Time::from_secs(4),
        "fixed timeout: 4 · max(1, log10 4) · 1 s"
    );
    one.at(3_999).fire(timer(T_SUSPICION, 1));
    assert_eq!(one.state(1).unwrap().0, MemberState::Suspect, "not yet");
    let effects = one.at(4_000).fire(timer(T_SUSPICION, 1));
    assert_eq!(one.state(1), Some((MemberState::Dead, 0)));
    assert_eq!(one.swim.counters().deaths_declared, 1);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Event(NodeEvent::MemberDead { .. })))
    );
    assert!(timer_after(&effects, timer(T_RECLAIM, 1)).is_some());
}

// ----- Lifeguard (Dadgar et al. 2018) --------------------------------------------------

/// Lifeguard §IV-B: the suspicion timeout starts at the maximum and shrinks toward the
/// minimum with each independent confirmation; repeats from the same member do not count.
#[test]
fn suspicion_timeout_shrinks_with_independent_confirmations() {
    let cfg = SwimConfig {
        suspicion_mult: 5, // K = 3
        ..quiet()
    };
    let mut one = One::new(9, cfg.clone());
    let (min, max) = cfg.suspicion_timeout_bounds(10);
    one.gossip(2, vec![suspect(1, 0, 2)]);
    let d0 = one.swim.suspicion_deadline(n(1)).unwrap();
    assert_eq!(d0, Time::ZERO + max);
    one.gossip(2, vec![suspect(1, 0, 2)]);
    assert_eq!(
        one.swim.suspicion_deadline(n(1)),
        Some(d0),
        "same suspecter"
    );
    let mut last = d0;
    for (i, from) in [3u32, 4, 5].into_iter().enumerate() {
        let effects = one.gossip(from, vec![suspect(1, 0, from)]);
        let d = one.swim.suspicion_deadline(n(1)).unwrap();
        assert!(d < last, "confirmation {i} shrank nothing");
        assert_eq!(one.swim.suspicion_confirmations(n(1)), Some(i + 1));
        assert_eq!(
            timer_after(&effects, timer(T_SUSPICION, 1)),
            Some(d.saturating_since(Time::ZERO)),
            "timer re-armed"
        );
        last = d;
    }
    assert_eq!(last, Time::ZERO + min, "K confirmations reach the minimum");
    one.gossip(6, vec![suspect(1, 0, 6)]);
    assert_eq!(
        one.swim.suspicion_confirmations(n(1)),
        Some(3),
        "capped at K"
    );
}

#[test]
fn without_dynamic_suspicion_confirmations_change_nothing() {
    let cfg = SwimConfig {
        lifeguard: LifeguardConfig {
            dynamic_suspicion: false,
            ..LifeguardConfig::default()
        },
        ..quiet()
    };
    let mut one = One::new(9, cfg.clone());
    one.gossip(2, vec![suspect(1, 0, 2)]);
    let d0 = one.swim.suspicion_deadline(n(1)).unwrap();
    assert_eq!(d0, Time::ZERO + cfg.suspicion_timeout_bounds(10).0);
    one.gossip(3, vec![suspect(1, 0, 3)]);
    assert_eq!(one.swim.suspicion_deadline(n(1)), Some(d0));
}

/// Lifeguard §IV-A: missed acks (and missing nacks) raise the local health score, which
/// stretches the probe interval and ack timeout; acks lower it again.
#[test]
fn local_health_rises_on_missed_acks_and_scales_timeouts() {
    let mut one = One::new(2, quiet()); // one relay candidate per probe at most
    let mut t = 0;
    for _ in 0..3 {
        let (_, seq, _) = one.probe();
        one.fire(timer(T_ACK, seq)); // one ping-req, no nack will come
        t += 10_000;
        one.at(t);
    }
    let effects = one.fire(timer(T_PROBE, 0));
    let health = one.swim.local_health();
    assert!(health >= 3, "health {health}");
    assert_eq!(
        timer_after(&effects, timer(T_PROBE, 0)),
        Some(Duration::from_millis(1_000) * (health + 1))
    );
    let (to, msg) = sends(&effects)
        .into_iter()
        .find(|(_, m)| matches!(m.body, SwimBody::Ping { .. }))
        .unwrap();
    let SwimBody::Ping { seq, .. } = msg.body else {
        unreachable!()
    };
    assert_eq!(
        timer_after(&effects, timer(T_ACK, seq)),
        Some(Duration::from_millis(500) * (health + 1))
    );
    one.msg(to.0, SwimBody::Ack { seq }, vec![]);
    assert_eq!(one.swim.local_health(), health - 1, "an ack heals by one");
}

/// Lifeguard §IV-A: a nack shows the relay path works, so it spares the score.
#[test]
fn nacks_spare_local_health() {
    let mut one = One::new(5, quiet());
    let (_, seq, _) = one.probe();
    let effects = one.fire(timer(T_ACK, seq));
    let relays: Vec<NodeId> = sends(&effects).into_iter().map(|(t, _)| t).collect();
    assert_eq!(relays.len(), 3);
    for r in &relays {
        one.msg(r.0, SwimBody::Nack { seq }, vec![]);
    }
    one.at(1_000).fire(timer(T_PROBE, 0));
    assert_eq!(one.swim.counters().probes_failed, 1);
    assert_eq!(
        one.swim.local_health(),
        0,
        "all nacks came: our network is fine"
    );
}

#[test]
fn local_health_rises_when_refuting_and_is_capped() {
    let mut one = One::new(
        2,
        SwimConfig {
            local_health_max: 2,
            ..quiet()
        },
    );
    for i in 0..5 {
        one.gossip(1, vec![suspect(0, i, 1)]);
    }
    assert_eq!(one.swim.counters().refutations, 5);
    assert_eq!(one.swim.local_health(), 2);
}

#[test]
fn without_local_health_the_score_stays_zero() {
    let cfg = SwimConfig {
        lifeguard: LifeguardConfig {
            local_health: false,
            ..LifeguardConfig::default()
        },
        ..quiet()
    };
    let mut one = One::new(2, cfg);
    for _ in 0..3 {
        let (_, seq, _) = one.probe();
        one.fire(timer(T_ACK, seq));
    }
    one.gossip(1, vec![suspect(0, 0, 1)]);
    assert_eq!(one.swim.local_health(), 0);
}

/// Lifeguard §IV-C: the probe of a suspected member carries the suspicion first.
#[test]
fn buddy_probe_of_suspect_carries_the_suspicion() {
    for buddy in [true, false] {
        let cfg = SwimConfig {
            lifeguard: LifeguardConfig {
                buddy,
                ..LifeguardConfig::default()
            },
            // A piggyback budget of one update: only the buddy prefix can get through
            // ahead of the queued gossip.
            max_piggyback_count: 1,
            ..quiet()
        };
        let mut one = One::new(1, cfg);
        one.gossip(2, vec![suspect(1, 0, 2)]);
        // Fill the queue with fresher updates so regular piggybacking would pick them.
        one.gossip(2, (10..20).map(|m| alive(m, 0)).collect());
        let mut carried = false;
        for _ in 0..11 {
            let effects = one.fire(timer(T_PROBE, 0));
            for (to, m) in sends(&effects) {
                if to == n(1) && matches!(m.body, SwimBody::Ping { .. }) {
                    carried |= m.updates.first() == Some(&suspect(1, 0, 2));
                }
            }
        }
        assert_eq!(carried, buddy, "buddy = {buddy}");
    }
}

// ----- dissemination (SWIM §4.1) and push-pull -----------------------------------------

#[test]
fn piggyback_is_bounded_by_count_and_bytes() {
    let cfg = SwimConfig {
        max_piggyback_count: 5,
        max_piggyback_bytes: 100,
        ..quiet()
    };
    let mut one = One::new(3, cfg);
    one.gossip(1, (10..200).map(|m| alive(m, 0)).collect());
    for s in 0..50 {
        let effects = one.msg(
            1,
            SwimBody::Ping {
                seq: s,
                target: n(0),
            },
            vec![],
        );
        let (_, ack) = sends(&effects).remove(0);
        assert!(ack.updates.len() <= 5);
        let bytes: usize = ack.updates.iter().map(Update::encoded_len).sum();
        assert!(bytes <= 100, "{bytes} bytes");
        assert!(!ack.updates.is_empty());
    }
    assert!(one.swim.counters().piggyback_full > 0);
}

#[test]
fn broadcast_queue_is_bounded_and_drops_are_counted() {
    let mut one = One::new(
        1,
        SwimConfig {
            max_broadcast_queue: 8,
            ..quiet()
        },
    );
    one.gossip(1, (10..40).map(|m| alive(m, 0)).collect());
    assert_eq!(one.swim.pending_broadcasts(), 8);
    assert!(one.swim.counters().broadcasts_dropped >= 22);
}

#[test]
fn update_is_retransmitted_at_most_lambda_log_n_times() {
    let mut one = One::new(3, quiet()); // n = 4: limit 4 · 3 = 12
    let limit = one.swim.config().retransmit_limit(4) as usize;
    while one.swim.pending_broadcasts() > 0 {
        one.msg(
            1,
            SwimBody::Ping {
                seq: 0,
                target: n(0),
            },
            vec![],
        );
    }
    one.gossip(1, vec![suspect(2, 0, 1)]);
    let mut carried = 0;
    for s in 0..(limit as u64 + 10) {
        let effects = one.msg(
            1,
            SwimBody::Ping {
                seq: s,
                target: n(0),
            },
            vec![],
        );
        carried += sends(&effects)[0]
            .1
            .updates
            .iter()
            .filter(|u| **u == suspect(2, 0, 1))
            .count();
    }
    assert_eq!(carried, limit);
}

#[test]
fn push_pull_exchanges_full_state_and_is_bounded() {
    let mut one = One::new(
        5,
        SwimConfig {
            max_push_pull_entries: 3,
            ..quiet()
        },
    );
    let remote = vec![
        MemberSnapshot {
            member: n(1),
            address: "n1/a".into(),
            incarnation: 0,
            state: MemberState::Alive,
        },
        MemberSnapshot {
            member: n(7),
            address: "n7/a".into(),
            incarnation: 2,
            state: MemberState::Alive,
        },
        MemberSnapshot {
            member: n(2),
            address: "n2/a".into(),
            incarnation: 0,
            state: MemberState::Dead,
        },
        MemberSnapshot {
            member: n(3),
            address: "n3/a".into(),
            incarnation: 0,
            state: MemberState::Dead,
        },
    ];
    let effects = one.msg(
        1,
        SwimBody::PushPull {
            join: false,
            reply: false,
            members: remote,
        },
        vec![],
    );
    assert_eq!(one.state(7), Some((MemberState::Alive, 2)));
    assert_eq!(
        one.state(2),
        Some((MemberState::Suspect, 0)),
        "a remote death is only a suspicion here"
    );
    assert_eq!(
        one.state(3),
        Some((MemberState::Alive, 0)),
        "beyond the bound: ignored"
    );
    assert_eq!(one.swim.counters().updates_rejected, 1);
    let (to, reply) = sends(&effects).remove(0);
    assert_eq!(to, n(1));
    let SwimBody::PushPull {
        reply: true,
        members,
        ..
    } = reply.body
    else {
        panic!("{reply:?}")
    };
    assert_eq!(members.len(), 3);
    assert_eq!(members[0].member, n(0), "own entry first");
    assert_eq!(one.swim.counters().push_pull_truncated, 1);
}

#[test]
fn push_pull_tick_also_contacts_a_dead_member() {
    let mut one = One::new(3, SwimConfig::default());
    one.gossip(2, vec![dead(1, 0, 2)]);
    let effects = one.fire(timer(T_PUSH_PULL, 0));
    let targets: Vec<NodeId> = sends(&effects)
        .into_iter()
        .filter(|(_, m)| m.is_anti_entropy())
        .map(|(t, _)| t)
        .collect();
    assert_eq!(targets.len(), 2);
    assert!(targets.contains(&n(1)));
}

// ----- join, leave, reclaim, recovery ---------------------------------------------------

#[test]
fn join_retries_until_a_seed_answers_then_stops() {
    let cfg = SwimConfig {
        seeds: vec![n(0), n(5)],
        join_attempts_max: 3,
        ..quiet()
    };
    let mut one = One::new(0, cfg);
    assert!(!one.swim.is_joined());
    let effects = one.fire(timer(crate::swim::T_JOIN, 0));
    let joins: Vec<_> = sends(&effects).into_iter().map(|(t, _)| t).collect();
    assert_eq!(joins, [n(5)], "never joins through itself");
    one.fire(timer(crate::swim::T_JOIN, 0));
    let effects = one.fire(timer(crate::swim::T_JOIN, 0));
    assert!(sends(&effects).is_empty());
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Event(NodeEvent::SwimJoinFailed { .. })))
    );
    one.msg(
        5,
        SwimBody::PushPull {
            join: false,
            reply: true,
            members: vec![MemberSnapshot {
                member: n(5),
                address: "n5/a".into(),
                incarnation: 0,
                state: MemberState::Alive,
            }],
        },
        vec![],
    );
    assert!(one.swim.is_joined());
    assert_eq!(one.state(5), Some((MemberState::Alive, 0)));
}

#[test]
fn leave_is_announced_and_never_refuted() {
    let mut one = One::new(6, quiet());
    let mut out = Out::new();
    let mut cx = Cx::new(n(0), one.now, &mut one.rng);
    one.swim.leave(&mut cx, &mut out);
    let gossips = sends(out.effects());
    assert_eq!(gossips.len(), LEAVE_FANOUT);
    assert!(gossips.iter().all(|(_, m)| m.body == SwimBody::Gossip
        && m.updates.contains(&Update::Left {
            member: n(0),
            incarnation: 0
        })));
    one.gossip(1, vec![suspect(0, 0, 1)]);
    assert_eq!(
        one.swim.incarnation(),
        0,
        "a leaving member does not refute"
    );
    assert!(one.fire(timer(T_PROBE, 0)).is_empty(), "no more probes");
    // And a member that hears of a leave marks it left, not dead.
    let mut other = One::new(2, quiet());
    other.gossip(
        1,
        vec![Update::Left {
            member: n(1),
            incarnation: 0,
        }],
    );
    assert_eq!(other.state(1), Some((MemberState::Left, 0)));
    other.gossip(2, vec![dead(1, 0, 2)]);
    assert_eq!(
        other.state(1),
        Some((MemberState::Left, 0)),
        "dead does not override left"
    );
}

#[test]
fn dead_member_is_reclaimed_after_configured_time() {
    let mut one = One::new(
        2,
        SwimConfig {
            dead_reclaim_ms: 5_000,
            ..quiet()
        },
    );
    one.at(1_000).gossip(2, vec![dead(1, 0, 2)]);
    one.at(5_999).fire(timer(T_RECLAIM, 1));
    assert!(one.swim.member(n(1)).is_some(), "not yet");
    one.at(6_000).fire(timer(T_RECLAIM, 1));
    assert!(one.swim.member(n(1)).is_none());
    assert_eq!(
        one.swim.drain_events().next_back().map(|e| e.kind()),
        Some("member_reclaimed")
    );
}

#[test]
fn incarnation_record_roundtrips_and_corrupt_records_are_reported() {
    let rec = Recovery::of_group(
        SWIM_STATE,
        Some(encode_incarnation_record(4)),
        vec![
            encode_incarnation_record(6),
            b"garbage".to_vec(),
            encode_incarnation_record(5),
        ],
    );
    let r = recover_incarnation(&rec);
    assert_eq!(r.highest, Some(6));
    assert_eq!(r.records, 4);
    assert_eq!(r.errors.len(), 1);
    assert!(matches!(
        r.errors[0],
        SwimError::CorruptRecord { index: 1, .. }
    ));
    assert!(r.errors[0].to_string().contains("#1"));
}

#[test]
fn swim_node_boots_past_its_persisted_incarnation_at_a_new_address() {
    use kvlab_types::Protocol;
    let mut rng = seeded_rng(3);
    let mut cx = Cx::new(n(2), Time::ZERO, &mut rng);
    let mut out = Out::new();
    let rec = Recovery::of_group(SWIM_STATE, None, vec![encode_incarnation_record(3)]);
    let node = SwimNode::boot(&mut cx, &quiet(), &[n(0), n(1), n(2), n(3)], rec, &mut out);
    let swim = node.swim().unwrap();
    assert_eq!(swim.incarnation(), 4);
    assert_eq!(swim.address(), "n2/inc4");
    let joins: Vec<NodeId> = sends(out.effects()).into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        joins,
        [n(0), n(1), n(3)],
        "default seeds: the lowest peers but itself"
    );
    assert!(matches!(out.effects()[0], Effect::Persist { .. }));
    assert!(matches!(out.effects()[1], Effect::Sync));
}

#[test]
fn hostile_input_is_counted_not_fatal() {
    let mut one = One::new(2, quiet());
    let long = Update::Alive {
        member: n(9),
        incarnation: 0,
        address: "x".repeat(MAX_ADDRESS_BYTES + 1),
    };
    one.gossip(1, vec![long]);
    assert!(one.swim.member(n(9)).is_none());
    let many: Vec<Update> = (0..MAX_INCOMING_UPDATES as u32 + 5)
        .map(|i| alive(1_000 + i, 0))
        .collect();
    one.gossip(1, many);
    assert_eq!(one.swim.counters().updates_rejected, 1 + 5);
    let effects = one.msg(
        1,
        SwimBody::Ping {
            seq: 1,
            target: n(5),
        },
        vec![],
    );
    assert!(sends(&effects).is_empty());
    assert_eq!(one.swim.counters().misdirected, 1);
    one.msg(1, SwimBody::Ack { seq: 12345 }, vec![]);
    assert_eq!(one.swim.counters().stale_acks, 1);
    // Suspect/dead about unknown members, and timers about them, are ignored.
    one.gossip(1, vec![suspect(4242, 0, 1), dead(4243, 0, 1)]);
    one.fire(timer(T_SUSPICION, 4242));
    one.fire(timer(T_RECLAIM, 4243));
}

#[test]
fn timers_are_namespaced_for_composition() {
    let mut one = One::new(2, quiet());
    let mut out = Out::new();
    let mut cx = Cx::new(n(0), one.now, &mut one.rng);
    assert!(
        !one.swim
            .handle_timer(&mut cx, TimerId::new(TimerSpace::Test, 7), &mut out)
    );
    assert!(out.is_empty());
    assert!(Swim::owns_timer(timer(T_RELAY, 123)));
    assert!(!Swim::owns_timer(TimerId::new(TimerSpace::Raft, 1)));
}

#[test]
fn counters_track_messages_and_bytes() {
    let mut one = One::new(2, quiet());
    let before = one.swim.counters().clone();
    let effects = one.msg(
        1,
        SwimBody::Ping {
            seq: 1,
            target: n(0),
        },
        vec![],
    );
    let c = one.swim.counters();
    assert_eq!(c.messages_received, before.messages_received + 1);
    assert_eq!(c.acks_sent, before.acks_sent + 1);
    assert_eq!(c.messages_sent, before.messages_sent + 1);
    let (_, ack) = sends(&effects).remove(0);
    use kvlab_types::Message;
    assert_eq!(c.bytes_sent - before.bytes_sent, ack.wire_size() as u64);
}

// ----- cluster tests on the harness (many seeds) ---------------------------------------

const SEEDS: u64 = 12;

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

/// A 16-member cluster that has joined through its seeds and converged.
fn converged_cluster(n_members: u32, seed: u64, config: SwimConfig) -> Cluster {
    let mut c = Cluster::new(n_members, seed, config);
    let t = c.run_until_true(Time::from_secs(60), ms(250), Cluster::converged);
    assert!(
        t.is_some(),
        "seed {seed}: {n_members} members did not converge after join"
    );
    c
}

#[test]
fn cluster_joins_through_seeds_and_converges() {
    for seed in 0..SEEDS {
        let c = converged_cluster(16, seed, SwimConfig::default());
        let joined = c
            .log
            .iter()
            .filter(|l| l.event.kind() == "member_joined")
            .count();
        assert_eq!(
            joined,
            16 * 15,
            "seed {seed}: each member joined once per observer"
        );
        assert!(
            c.now() < Time::from_secs(20),
            "seed {seed}: slow join {:?}",
            c.now()
        );
    }
}

/// SWIM §3.1/§5: a crashed member is suspected (first detection) and then declared dead
/// by every member within a bound: `2n−1` periods to first suspicion at worst (§4.3),
/// plus the maximum suspicion timeout, plus dissemination.
#[test]
fn crashed_member_is_suspected_then_dead_everywhere_within_bound() {
    let n_members = 16;
    let cfg = SwimConfig::default();
    let (_, max) = cfg.suspicion_timeout_bounds(n_members as usize);
    let bound_first = ms(cfg.protocol_period_ms * (2 * u64::from(n_members) - 1) + 1_000);
    let bound_dead = bound_first + max + ms(10_000);
    let mut first_s = Vec::new();
    for seed in 0..SEEDS {
        let mut c = converged_cluster(n_members, seed, cfg.clone());
        c.run_for(ms(3_000));
        let victim = NodeId((seed % u64::from(n_members)) as u32);
        let t0 = c.now();
        c.crash(victim);
        let first = c
            .run_until_true(t0 + bound_first, ms(50), |c| {
                c.any_sees(victim, MemberState::Suspect) || c.any_sees(victim, MemberState::Dead)
            })
            .unwrap_or_else(|| panic!("seed {seed}: {victim} never suspected"));
        first_s.push(first.saturating_since(t0).as_secs_f64());
        let all = c.run_until_true(t0 + bound_dead, ms(100), |c| {
            c.all_see(victim, MemberState::Dead)
        });
        assert!(
            all.is_some(),
            "seed {seed}: {victim} not dead everywhere within {bound_dead:?}"
        );
        assert!(
            c.up_ids()
                .iter()
                .all(|m| *m == victim || c.all_see(*m, MemberState::Alive)),
            "seed {seed}: a live member is not alive everywhere"
        );
    }
    let mean = first_s.iter().sum::<f64>() / first_s.len() as f64;
    eprintln!(
        "first detection: mean {mean:.2} s over {} seeds",
        first_s.len()
    );
    // SWIM §5: mean first detection ≈ T·e/(e−1) ≈ 1.58 s, plus the period's wait.
    assert!(mean < 4.0, "mean first detection {mean:.2} s");
}

/// SWIM §5 (accuracy): without loss nobody is ever suspected.
#[test]
fn no_false_positives_without_loss() {
    for seed in 0..SEEDS {
        let mut c = converged_cluster(16, seed, SwimConfig::default());
        c.run_for(Duration::from_secs(120));
        let suspicions = c
            .log
            .iter()
            .filter(|l| l.event.kind() == "member_suspect")
            .count();
        let deaths = c
            .log
            .iter()
            .filter(|l| l.event.kind() == "member_dead")
            .count();
        assert_eq!((suspicions, deaths), (0, 0), "seed {seed}");
        assert!(c.converged(), "seed {seed}");
        for id in c.ids() {
            assert_eq!(c.swim(id).unwrap().local_health(), 0, "seed {seed}: {id}");
        }
    }
}

/// Under 5% loss members may be suspected, but they refute and nobody is declared dead
/// (indirect probes and refutation, SWIM §3.1 and §4.2).
#[test]
fn loss_causes_no_deaths_and_views_stay_converged() {
    for seed in 0..SEEDS / 2 {
        let mut c = converged_cluster(16, seed, SwimConfig::default());
        c.loss = 0.05;
        c.run_for(Duration::from_secs(90));
        let deaths = c
            .log
            .iter()
            .filter(|l| l.event.kind() == "member_dead")
            .count();
        assert_eq!(deaths, 0, "seed {seed}");
        c.loss = 0.0;
        let t = c.run_until_true(
            c.now() + Duration::from_secs(30),
            ms(250),
            Cluster::converged,
        );
        assert!(t.is_some(), "seed {seed}");
    }
}

/// Push-pull anti-entropy: after a partition in which each side declared the other dead,
/// healing brings everyone back to one view within a bound.
#[test]
fn healed_partition_converges_to_one_view_within_bound() {
    let cfg = SwimConfig {
        push_pull_interval_ms: 5_000,
        ..SwimConfig::default()
    };
    for seed in 0..SEEDS / 2 {
        let mut c = converged_cluster(12, seed, cfg.clone());
        let ids = c.ids();
        let (a, b) = ids.split_at(5);
        c.partition(a, b);
        let split = c.run_until_true(c.now() + Duration::from_secs(120), ms(500), |c| {
            a.iter().all(|m| c.all_see_in(b, *m, MemberState::Dead))
                && b.iter().all(|m| c.all_see_in(a, *m, MemberState::Dead))
        });
        assert!(
            split.is_some(),
            "seed {seed}: the sides never declared each other dead"
        );
        c.heal();
        let t0 = c.now();
        let bound = Duration::from_secs(60);
        let healed = c.run_until_true(t0 + bound, ms(250), Cluster::converged);
        assert!(
            healed.is_some(),
            "seed {seed}: not one view within {bound:?} of healing"
        );
    }
}

/// A crashed member restarts with a higher incarnation and a new address; everyone sees
/// it alive at that address within a bound — whether or not it was declared dead first.
#[test]
fn restarted_member_with_new_address_is_alive_everywhere_within_bound() {
    for seed in 0..SEEDS {
        let mut c = converged_cluster(12, seed, SwimConfig::default());
        let victim = NodeId(1 + (seed % 11) as u32);
        c.crash(victim);
        // Half the seeds restart before the death is declared, half after.
        let down_for = if seed % 2 == 0 { 2 } else { 60 };
        c.run_for(Duration::from_secs(down_for));
        c.restart(victim);
        let swim = c.swim(victim).unwrap();
        let (inc, addr) = (swim.incarnation(), swim.address().to_string());
        assert!(inc >= 1, "seed {seed}");
        let t0 = c.now();
        let ok = c.run_until_true(t0 + Duration::from_secs(30), ms(100), |c| {
            c.converged()
                && c.up_ids().iter().all(|o| {
                    c.swim(*o)
                        .unwrap()
                        .member(victim)
                        .map(|m| m.address.as_str())
                        == Some(addr.as_str())
                })
        });
        assert!(
            ok.is_some(),
            "seed {seed}: {victim} (down {down_for} s) not alive at {addr}"
        );
        assert!(
            !c.events_about("member_address_changed", victim).is_empty(),
            "seed {seed}: no address change reported"
        );
    }
}

/// Without storage a restarted member starts at incarnation 0 and must refute its way
/// past what the cluster remembers (SWIM §4.2).
#[test]
fn restarted_member_without_storage_climbs_past_old_incarnation() {
    for seed in 0..SEEDS / 2 {
        let mut c = converged_cluster(10, seed, SwimConfig::default());
        let victim = NodeId(4);
        let old = c.swim(victim).unwrap().incarnation();
        c.crash(victim);
        c.run_for(Duration::from_secs(60));
        assert!(c.all_see(victim, MemberState::Dead), "seed {seed}");
        c.restart_without_storage(victim);
        let ok = c.run_until_true(
            c.now() + Duration::from_secs(30),
            ms(100),
            Cluster::converged,
        );
        assert!(ok.is_some(), "seed {seed}");
        assert!(c.swim(victim).unwrap().incarnation() > old, "seed {seed}");
    }
}

#[test]
fn graceful_leave_reaches_every_member() {
    for seed in 0..SEEDS / 2 {
        let mut c = converged_cluster(16, seed, SwimConfig::default());
        c.leave(NodeId(3));
        let t = c.run_until_true(c.now() + Duration::from_secs(10), ms(100), |c| {
            c.all_see(NodeId(3), MemberState::Left)
        });
        assert!(t.is_some(), "seed {seed}");
        c.crash(NodeId(3));
        c.run_for(Duration::from_secs(30));
        assert!(
            c.events_about("member_dead", NodeId(3)).is_empty(),
            "seed {seed}"
        );
    }
}

#[test]
fn dead_members_are_reclaimed_everywhere() {
    let cfg = SwimConfig {
        dead_reclaim_ms: 20_000,
        ..SwimConfig::default()
    };
    let mut c = converged_cluster(8, 1, cfg);
    c.crash(NodeId(5));
    c.run_for(Duration::from_secs(120));
    for o in c.up_ids() {
        assert!(
            c.swim(o).unwrap().member(NodeId(5)).is_none(),
            "{o} still remembers n5"
        );
    }
}

/// Lifeguard §III (its motivation) and §IV: a member whose receive path is slow
/// processes acks late, so without Lifeguard it suspects healthy members and, not
/// hearing their refutations in time, declares them dead. With Lifeguard its local
/// health slows its probes and a lone suspicion waits the maximum timeout, so it
/// declares fewer (here: no) healthy members dead, in the same seeded runs.
#[test]
fn lifeguard_reduces_false_deaths_with_a_slow_member() {
    let mut deaths = [0usize; 2];
    let slow = NodeId(2);
    for (i, lifeguard) in [LifeguardConfig::off(), LifeguardConfig::default()]
        .into_iter()
        .enumerate()
    {
        let cfg = SwimConfig {
            lifeguard,
            ..SwimConfig::default()
        };
        for seed in 0..SEEDS / 2 {
            let mut c = converged_cluster(16, seed, cfg.clone());
            c.loss = 0.01;
            c.set_inbound_delay(slow, ms(6_000));
            c.run_for(Duration::from_secs(60));
            deaths[i] += c
                .log
                .iter()
                .filter(|l| {
                    matches!(l.event, NodeEvent::MemberDead { member, .. } if member != NodeId(2))
                })
                .count();
        }
    }
    eprintln!(
        "false deaths of healthy members: lifeguard off {} on {}",
        deaths[0], deaths[1]
    );
    assert!(deaths[0] > 0, "the scenario must hurt plain SWIM");
    assert!(
        deaths[1] * 4 <= deaths[0],
        "false deaths of healthy members: lifeguard off {} vs on {}",
        deaths[0],
        deaths[1]
    );
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut c = converged_cluster(10, seed, SwimConfig::default());
        c.loss = 0.05;
        c.crash(NodeId(3));
        c.run_for(Duration::from_secs(40));
        c.log
            .iter()
            .map(|l| format!("{} {} {}", l.at, l.node, l.event))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

/// A member frozen long enough to be declared dead (a long GC pause) learns of its death
/// when it resumes, refutes it (SWIM §4.2), and is alive everywhere again.
#[test]
fn paused_member_refutes_its_death_after_resuming() {
    for seed in 0..SEEDS / 2 {
        let mut c = converged_cluster(10, seed, SwimConfig::default());
        let frozen = NodeId(7);
        let until = c.now() + Duration::from_secs(60);
        c.pause_until(frozen, until);
        c.run_until(until);
        assert!(c.all_see(frozen, MemberState::Dead), "seed {seed}");
        let ok = c.run_until_true(
            c.now() + Duration::from_secs(30),
            ms(100),
            Cluster::converged,
        );
        assert!(
            ok.is_some(),
            "seed {seed}: not alive everywhere after resuming"
        );
        assert!(
            c.swim(frozen).unwrap().counters().refutations >= 1,
            "seed {seed}"
        );
    }
}

/// memberlist's `pushPullScale`: the push-pull interval grows with `log2 n` above the
/// threshold, so full state exchanges cost about the same per member at any size.
#[test]
fn push_pull_interval_scales_with_log_of_cluster_size() {
    let c = SwimConfig::default();
    let base = Duration::from_millis(c.push_pull_interval_ms);
    assert_eq!(c.push_pull_interval(10), base);
    assert_eq!(c.push_pull_interval(32), base);
    assert_eq!(c.push_pull_interval(64), base * 2);
    assert_eq!(c.push_pull_interval(1000), base * 6);
    let off = SwimConfig {
        push_pull_scale_threshold: 0,
        ..SwimConfig::default()
    };
    assert_eq!(off.push_pull_interval(1000), base);
}

/// memberlist's gossip rounds: while updates wait, they go to `gossip_fanout` live
/// members every `gossip_interval_ms`, not only on the next probe.
#[test]
fn gossip_round_sends_pending_updates_to_fanout_members() {
    let config = SwimConfig {
        gossip_interval_ms: 200,
        gossip_fanout: 2,
        ..quiet()
    };
    let mut one = One::new(0, config);
    // Four members become known: each join is an update waiting to be disseminated.
    one.gossip(
        1,
        (1..=4)
            .map(|m| Update::Alive {
                member: n(m),
                incarnation: 0,
                address: format!("n{m}/a"),
            })
            .collect(),
    );
    let effects = one.fire(timer(T_GOSSIP, 0));
    let gossips: Vec<_> = sends(&effects)
        .into_iter()
        .filter(|(_, m)| m.body == SwimBody::Gossip)
        .collect();
    assert_eq!(gossips.len(), 2, "{gossips:?}");
    assert!(gossips.iter().all(|(_, m)| !m.updates.is_empty()));
    let rearmed = effects
        .iter()
        .any(|e| matches!(e, Effect::SetTimer { timer: t, .. } if *t == timer(T_GOSSIP, 0)));
    assert!(rearmed, "the gossip timer is re-armed");
    let bad = SwimConfig {
        gossip_interval_ms: 200,
        gossip_fanout: 0,
        ..SwimConfig::default()
    };
    assert!(matches!(
        bad.validate(),
        Err(crate::SwimError::InvalidConfig {
            field: "gossip_fanout",
            ..
        })
    ));
}

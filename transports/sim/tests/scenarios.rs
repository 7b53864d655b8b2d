//! Scenario tests of the simulator: the network model, fault rules, the durability
//! contract, crashes, pauses, clock drift and limits.

mod common;

use common::{Msg, Probe, ProbeConfig, cmd, exact_config, ids, ms, read, test_timer};
use kvlab_sim::{FaultRule, LatencyDist, Sim, SimConfig, SimError, SimOutput};
use kvlab_types::{AdminAction, AdminCommand, GroupId, NodeEvent, NodeId, OpOutput, Time};

type ProbeSim = Sim<Probe>;

fn sim(config: SimConfig, nodes: u32) -> ProbeSim {
    Sim::new(config, 7, &ids(nodes), ProbeConfig::default()).expect("valid sim")
}

fn run(sim: &mut ProbeSim, until: Time) -> Vec<SimOutput> {
    let mut out = Vec::new();
    sim.run_until(until, &mut out).expect("run");
    out
}

fn received(sim: &ProbeSim, node: u32) -> Vec<(NodeId, Msg, Time)> {
    sim.node(NodeId(node)).expect("node is up").received.clone()
}

fn replies(out: &[SimOutput]) -> Vec<(Time, NodeId, u64)> {
    out.iter()
        .filter_map(|o| match o {
            SimOutput::Reply { at, node, response } => Some((*at, *node, response.id.seq)),
            SimOutput::Event { .. } => None,
        })
        .collect()
}

#[test]
fn messages_to_self_are_delivered_after_network_latency() {
    let mut s = sim(exact_config(), 2);
    s.submit(NodeId(1), cmd(1, "send:1", 7));
    run(&mut s, ms(10.0));
    assert_eq!(received(&s, 1), vec![(NodeId(1), Msg::Ping(7), ms(1.5))]);
}

#[test]
fn injected_message_arrives_at_once_past_every_rule_and_is_lost_at_a_down_node() {
    let mut s = sim(exact_config(), 3);
    s.add_rule(FaultRule::Partition {
        a: vec![NodeId(1)],
        b: vec![NodeId(2)],
    });
    run(&mut s, ms(2.0));
    // A packet "from n1" that n1 never sent: no latency, no partition.
    assert!(
        s.inject(NodeId(1), NodeId(2), Msg::Ping(-1))
            .expect("known node")
    );
    run(&mut s, ms(2.0));
    assert_eq!(received(&s, 2), vec![(NodeId(1), Msg::Ping(-1), ms(2.0))]);
    assert_eq!(s.stats().messages_delivered, 1);
    assert_eq!(s.stats().messages_in_flight, 0);
    s.crash(NodeId(3));
    assert!(
        !s.inject(NodeId(1), NodeId(3), Msg::Ping(-2))
            .expect("known node")
    );
    assert!(matches!(
        s.inject(NodeId(1), NodeId(9), Msg::Ping(-3)),
        Err(SimError::UnknownNode(NodeId(9)))
    ));
}

#[test]
fn replies_reach_the_client_after_client_latency_and_clock_ends_at_deadline() {
    let mut s = sim(exact_config(), 1);
    s.submit(NodeId(1), read(1));
    let out = run(&mut s, ms(5.0));
    assert_eq!(replies(&out), vec![(ms(1.0), NodeId(1), 1)]);
    assert_eq!(s.now(), ms(5.0));
    assert_eq!(s.stats().client_replies_delivered, 1);
}

#[test]
fn partition_drops_both_ways_and_spares_other_links() {
    let mut s = sim(exact_config(), 3);
    s.add_rule(FaultRule::Partition {
        a: vec![NodeId(1)],
        b: vec![NodeId(2)],
    });
    s.submit(NodeId(1), cmd(1, "send:2", 1));
    s.submit(NodeId(2), cmd(2, "send:1", 2));
    s.submit(NodeId(1), cmd(3, "send:3", 3));
    run(&mut s, ms(10.0));
    assert!(received(&s, 1).is_empty());
    assert!(received(&s, 2).is_empty());
    assert_eq!(received(&s, 3), vec![(NodeId(1), Msg::Ping(3), ms(1.5))]);
    assert_eq!(s.stats().messages_dropped_by_rule, 2);
}

#[test]
fn one_way_rule_drops_only_one_direction() {
    let mut s = sim(exact_config(), 2);
    s.add_rule(FaultRule::OneWay {
        from: vec![NodeId(1)],
        to: vec![NodeId(2)],
    });
    s.submit(NodeId(1), cmd(1, "send:2", 1));
    s.submit(NodeId(2), cmd(2, "send:1", 2));
    run(&mut s, ms(10.0));
    assert!(received(&s, 2).is_empty());
    assert_eq!(received(&s, 1), vec![(NodeId(2), Msg::Ping(2), ms(1.5))]);
    assert_eq!(s.stats().messages_dropped_by_rule, 1);
}

#[test]
fn isolate_cuts_a_node_from_peers_but_not_from_clients_or_itself() {
    let mut s = sim(exact_config(), 3);
    s.add_rule(FaultRule::Isolate { node: NodeId(2) });
    s.submit(NodeId(2), cmd(1, "send:1", 1));
    s.submit(NodeId(3), cmd(2, "send:2", 2));
    s.submit(NodeId(2), cmd(3, "send:2", 3));
    s.submit(NodeId(3), cmd(4, "send:1", 4));
    let out = run(&mut s, ms(10.0));
    assert_eq!(
        replies(&out).len(),
        4,
        "clients still reach the isolated node"
    );
    assert_eq!(received(&s, 2), vec![(NodeId(2), Msg::Ping(3), ms(1.5))]);
    assert_eq!(received(&s, 1), vec![(NodeId(3), Msg::Ping(4), ms(1.5))]);
    assert_eq!(s.stats().messages_dropped_by_rule, 2);
}

#[test]
fn removing_a_rule_restores_the_link() {
    let mut s = sim(exact_config(), 2);
    let rule = s.add_rule(FaultRule::Isolate { node: NodeId(2) });
    s.submit(NodeId(1), cmd(1, "send:2", 1));
    run(&mut s, ms(5.0));
    assert!(s.remove_rule(rule));
    assert!(!s.remove_rule(rule), "a rule is removed once");
    s.submit(NodeId(1), cmd(2, "send:2", 2));
    run(&mut s, ms(10.0));
    assert_eq!(received(&s, 2), vec![(NodeId(1), Msg::Ping(2), ms(6.5))]);
}

#[test]
fn hold_keeps_messages_until_heal_then_releases_them_in_order() {
    let mut s = sim(exact_config(), 2);
    s.add_rule(FaultRule::Hold {
        from: vec![NodeId(1)],
        to: vec![NodeId(2)],
    });
    for v in 1..=3 {
        s.submit(NodeId(1), cmd(v as u64, "send:2", v));
    }
    s.submit(NodeId(2), cmd(9, "send:1", 9));
    run(&mut s, ms(100.0));
    assert!(received(&s, 2).is_empty());
    assert_eq!(s.held_messages(), 3);
    assert_eq!(received(&s, 1).len(), 1, "the other direction is not held");
    s.heal();
    assert_eq!(s.held_messages(), 0);
    run(&mut s, ms(200.0));
    let got: Vec<_> = received(&s, 2)
        .into_iter()
        .map(|(_, m, t)| (m, t))
        .collect();
    assert_eq!(
        got,
        vec![
            (Msg::Ping(1), ms(101.0)),
            (Msg::Ping(2), ms(101.0)),
            (Msg::Ping(3), ms(101.0))
        ]
    );
    assert_eq!(s.stats().messages_held, 3);
    assert_eq!(s.stats().messages_in_flight, 0);
}

#[test]
fn removing_one_hold_releases_only_what_no_other_hold_keeps() {
    let mut s = sim(exact_config(), 3);
    let to_2 = s.add_rule(FaultRule::Hold {
        from: vec![NodeId(1)],
        to: vec![NodeId(2), NodeId(3)],
    });
    s.add_rule(FaultRule::Hold {
        from: vec![NodeId(1)],
        to: vec![NodeId(3)],
    });
    s.submit(NodeId(1), cmd(1, "send:2", 2));
    s.submit(NodeId(1), cmd(2, "send:3", 3));
    run(&mut s, ms(10.0));
    assert!(s.remove_rule(to_2));
    run(&mut s, ms(20.0));
    assert_eq!(received(&s, 2), vec![(NodeId(1), Msg::Ping(2), ms(11.0))]);
    assert!(received(&s, 3).is_empty());
    assert_eq!(s.held_messages(), 1);
}

#[test]
fn loss_probability_is_roughly_honoured_over_many_messages() {
    let mut config = exact_config();
    config.network.loss_probability = 0.3;
    let mut s = sim(config, 2);
    s.submit(NodeId(1), cmd(1, "burst:2", 20_000));
    run(&mut s, ms(10.0));
    let st = s.stats();
    assert_eq!(st.messages_sent, 20_000);
    assert_eq!(st.messages_delivered + st.messages_dropped_by_loss, 20_000);
    let loss = st.messages_dropped_by_loss as f64 / 20_000.0;
    assert!((0.28..0.32).contains(&loss), "observed loss {loss}");
}

#[test]
fn corrupted_and_forged_frames_are_rejected_by_the_real_codec_and_counted() {
    let mut config = exact_config();
    config.network.corrupt_probability = 0.2;
    config.network.forge_probability = 0.3;
    let mut s = sim(config.clone(), 3);
    s.submit(NodeId(1), cmd(1, "burst:2", 5_000));
    s.submit(NodeId(1), cmd(2, "burst:3", 5_000));
    run(&mut s, ms(10.0));
    let st = s.stats();
    assert_eq!(st.messages_sent, 10_000);
    // A corrupted message is lost; a forged one is an extra frame that never arrives.
    assert_eq!(
        st.messages_delivered + st.messages_dropped_corrupt,
        10_000,
        "{st:?}"
    );
    let corrupt = st.messages_dropped_corrupt as f64 / 10_000.0;
    assert!(
        (0.18..0.22).contains(&corrupt),
        "observed corruption {corrupt}"
    );
    let forged = st.messages_dropped_forged as f64 / st.messages_delivered as f64;
    assert!((0.27..0.33).contains(&forged), "observed forgery {forged}");
    // Only genuine payloads reached the protocol.
    assert_eq!(
        received(&s, 2).len() + received(&s, 3).len(),
        st.messages_delivered as usize
    );

    // Deterministic: the same seed gives the same counts.
    let mut again = sim(config, 3);
    again.submit(NodeId(1), cmd(1, "burst:2", 5_000));
    again.submit(NodeId(1), cmd(2, "burst:3", 5_000));
    run(&mut again, ms(10.0));
    assert_eq!(again.stats(), st);
}

#[test]
fn corruption_and_forgery_are_spec_knobs_validated_like_the_others() {
    let c: SimConfig =
        toml::from_str("[network]\ncorrupt_probability = 0.01\nforge_probability = 0.5\n")
            .expect("parses");
    c.validate().unwrap();
    let bad: SimConfig = toml::from_str("[network]\nforge_probability = 2.0\n").expect("parses");
    let err = bad.validate().unwrap_err();
    assert!(
        err.to_string().contains("network.forge_probability"),
        "{err}"
    );
}

#[test]
fn loss_rules_compose_with_configured_loss() {
    let mut config = exact_config();
    config.network.loss_probability = 0.5;
    let mut s = sim(config, 2);
    s.add_rule(FaultRule::Loss { probability: 0.5 });
    s.submit(NodeId(1), cmd(1, "burst:2", 20_000));
    run(&mut s, ms(10.0));
    let loss = s.stats().messages_dropped_by_loss as f64 / 20_000.0;
    assert!(
        (0.73..0.77).contains(&loss),
        "observed loss {loss}, expected 0.75"
    );
}

#[test]
fn duplication_delivers_a_second_copy() {
    let mut config = exact_config();
    config.network.duplicate_probability = 1.0;
    let mut s = sim(config, 2);
    s.submit(NodeId(1), cmd(1, "send:2", 5));
    run(&mut s, ms(10.0));
    assert_eq!(received(&s, 2).len(), 2);
    assert_eq!(s.stats().messages_duplicated, 1);
    assert_eq!(s.stats().messages_delivered, 2);

    let mut s = sim(exact_config(), 2);
    s.add_rule(FaultRule::Duplicate { probability: 0.25 });
    s.submit(NodeId(1), cmd(1, "burst:2", 20_000));
    run(&mut s, ms(10.0));
    let dup = s.stats().messages_duplicated as f64 / 20_000.0;
    assert!((0.23..0.27).contains(&dup), "observed duplication {dup}");
}

#[test]
fn reordering_lets_later_messages_overtake_earlier_ones() {
    let mut config = exact_config();
    config.network.reorder_probability = 0.5;
    config.network.reorder_window_ms = 10.0;
    let mut s = sim(config, 2);
    s.submit(NodeId(1), cmd(1, "burst:2", 1000));
    run(&mut s, ms(100.0));
    let got: Vec<i64> = received(&s, 2)
        .into_iter()
        .map(|(_, m, _)| match m {
            Msg::Ping(v) | Msg::Pong(v) => v,
        })
        .collect();
    assert_eq!(got.len(), 1000);
    assert!(
        got.windows(2).any(|w| w[0] > w[1]),
        "some message overtook another"
    );
    for (_, _, t) in received(&s, 2) {
        assert!(
            t >= ms(1.5) && t <= ms(11.5),
            "arrival {t} outside latency + window"
        );
    }
}

#[test]
fn delay_rule_adds_to_latency() {
    let mut s = sim(exact_config(), 2);
    s.add_rule(FaultRule::Delay {
        extra: LatencyDist::Constant { ms: 20.0 },
    });
    s.submit(NodeId(1), cmd(1, "send:2", 1));
    run(&mut s, ms(50.0));
    assert_eq!(received(&s, 2), vec![(NodeId(1), Msg::Ping(1), ms(21.5))]);
}

#[test]
fn sends_after_a_sync_wait_for_the_fsync() {
    let mut s = sim(exact_config(), 2);
    s.submit(NodeId(1), cmd(1, "incr_send:2", 0));
    let out = run(&mut s, ms(10.0));
    // Arrives 0.5 ms, fsync done 2.5 ms, message 3.5 ms, reply at the client 3.0 ms.
    assert_eq!(received(&s, 2), vec![(NodeId(1), Msg::Ping(1), ms(3.5))]);
    assert_eq!(replies(&out), vec![(ms(3.0), NodeId(1), 1)]);
    assert_eq!(s.stats().syncs, 1);
}

#[test]
fn sends_after_a_sync_are_never_released_if_the_node_crashes_before_it_completes() {
    let mut s = sim(exact_config(), 2);
    s.submit(NodeId(1), cmd(1, "incr_send:2", 0));
    run(&mut s, ms(1.0));
    s.crash(NodeId(1));
    let out = run(&mut s, ms(100.0));
    assert!(received(&s, 2).is_empty());
    assert!(replies(&out).is_empty());
    assert_eq!(s.stats().effects_lost_unsynced, 2, "the send and the reply");
    assert_eq!(s.stats().syncs, 0);
    assert_eq!(s.stats().messages_sent, 0);
}

#[test]
fn crash_loses_unsynced_records_but_keeps_synced_ones() {
    let mut lost = 0;
    for seed in 0..40 {
        let mut s = Sim::<Probe>::new(exact_config(), seed, &ids(1), ProbeConfig::default())
            .expect("valid sim");
        s.submit(NodeId(1), cmd(1, "incr", 0));
        run(&mut s, ms(10.0));
        s.submit(NodeId(1), cmd(2, "persist", 100));
        run(&mut s, ms(20.0));
        s.crash(NodeId(1));
        assert!(!s.is_up(NodeId(1)));
        assert!(s.node(NodeId(1)).is_none());
        s.restart(NodeId(1)).expect("restart");
        let records = &s
            .node(NodeId(1))
            .expect("up")
            .recovered
            .group(GroupId::DEFAULT)
            .records;
        assert_eq!(
            records[0],
            1i64.to_le_bytes(),
            "seed {seed}: synced record lost"
        );
        match records.len() {
            1 => lost += 1,
            2 => assert_eq!(records[1], 100i64.to_le_bytes(), "seed {seed}"),
            n => panic!("seed {seed}: {n} records recovered"),
        }
    }
    assert!(lost > 0, "an unsynced record is lost by some crash");
}

#[test]
fn fsync_always_policy_makes_every_persist_durable() {
    let mut config = exact_config();
    config.disk.storage.fsync = kvlab_storage::FsyncPolicy::Always;
    for seed in 0..10 {
        let mut s = Sim::<Probe>::new(config.clone(), seed, &ids(1), ProbeConfig::default())
            .expect("valid sim");
        s.submit(NodeId(1), cmd(1, "persist", 100));
        run(&mut s, ms(10.0));
        s.crash(NodeId(1));
        s.restart(NodeId(1)).expect("restart");
        let p = s.node(NodeId(1)).expect("up");
        assert_eq!(
            p.recovered.group(GroupId::DEFAULT).records,
            vec![100i64.to_le_bytes().to_vec()],
            "seed {seed}"
        );
    }
}

#[test]
fn a_failed_storage_write_stops_the_node_and_is_reported() {
    let mut s = sim(exact_config(), 2);
    s.submit(NodeId(1), cmd(1, "persist_too_large", 0));
    let out = run(&mut s, ms(10.0));
    assert!(!s.is_up(NodeId(1)));
    assert!(
        replies(&out).is_empty(),
        "the rest of the step is discarded"
    );
    let reported = out.iter().any(|o| {
        matches!(o, SimOutput::Event { node: NodeId(1), event, .. } if matches!(event, NodeEvent::StorageError { .. }))
    });
    assert!(reported);
    assert_eq!(s.stats().storage_errors, 1);
    s.restart(NodeId(1)).expect("the log was left unchanged");
}

#[test]
fn restart_boots_with_recovery_from_storage() {
    let mut s = sim(exact_config(), 1);
    for seq in 1..=3 {
        s.submit(NodeId(1), cmd(seq, "incr", 0));
    }
    run(&mut s, ms(20.0));
    s.crash(NodeId(1));
    s.restart(NodeId(1)).expect("restart");
    let p = s.node(NodeId(1)).expect("up");
    assert_eq!(p.counter, 3);
    assert_eq!(p.recovered.group(GroupId::DEFAULT).records.len(), 3);
    s.submit(NodeId(1), read(4));
    let out = run(&mut s, ms(30.0));
    let value = out.iter().find_map(|o| match o {
        SimOutput::Reply { response, .. } => Some(response.result.clone()),
        SimOutput::Event { .. } => None,
    });
    assert_eq!(value, Some(Ok(OpOutput::Read(Some(3)))));
    assert_eq!(s.stats().crashes, 1);
    assert_eq!(s.stats().restarts, 1);
    assert_eq!(s.stats().per_node[&NodeId(1)].restarts, 1);
}

#[test]
fn snapshot_survives_a_crash_and_replaces_older_records() {
    let mut s = sim(exact_config(), 1);
    s.submit(NodeId(1), cmd(1, "incr", 0));
    s.submit(NodeId(1), cmd(2, "incr", 0));
    s.submit(NodeId(1), cmd(3, "snapshot", 0));
    run(&mut s, ms(20.0));
    s.crash(NodeId(1));
    s.restart(NodeId(1)).expect("restart");
    let p = s.node(NodeId(1)).expect("up");
    assert_eq!(
        p.recovered.group(GroupId::DEFAULT).snapshot,
        Some(2i64.to_le_bytes().to_vec())
    );
    assert!(p.recovered.group(GroupId::DEFAULT).records.is_empty());
    assert_eq!(p.counter, 2);
}

#[test]
fn messages_in_flight_to_a_crashed_node_are_dropped_even_after_it_restarts() {
    let mut config = exact_config();
    config.network.latency = LatencyDist::Constant { ms: 10.0 };
    let mut s = sim(config, 2);
    s.submit(NodeId(1), cmd(1, "send:2", 1));
    run(&mut s, ms(1.0));
    s.crash(NodeId(2));
    run(&mut s, ms(2.0));
    s.restart(NodeId(2)).expect("restart");
    s.submit(NodeId(1), cmd(2, "send:2", 2));
    run(&mut s, ms(30.0));
    assert_eq!(received(&s, 2), vec![(NodeId(1), Msg::Ping(2), ms(12.5))]);
    assert_eq!(s.stats().messages_dropped_by_crash, 1);
    assert_eq!(s.stats().messages_in_flight, 0);
}

#[test]
fn client_requests_to_a_down_node_are_lost() {
    let mut s = sim(exact_config(), 2);
    s.crash(NodeId(1));
    s.submit(NodeId(1), read(1));
    let out = run(&mut s, ms(10.0));
    assert!(replies(&out).is_empty());
    assert_eq!(s.stats().client_requests_lost, 1);
    assert_eq!(s.stats().per_node[&NodeId(1)].client_requests_lost, 1);
}

#[test]
fn pause_defers_timers_and_messages_until_resume() {
    let mut s = sim(exact_config(), 2);
    s.submit(NodeId(2), cmd(1, "timer:1", 5));
    run(&mut s, ms(1.0));
    s.pause(NodeId(2));
    assert!(s.is_paused(NodeId(2)) && s.is_up(NodeId(2)));
    s.submit(NodeId(1), cmd(2, "send:2", 4));
    s.submit(NodeId(2), read(3));
    let out = run(&mut s, ms(20.0));
    assert!(
        replies(&out).iter().all(|r| r.1 != NodeId(2)),
        "a paused node answers nothing"
    );
    let p = s.node(NodeId(2)).expect("up");
    assert!(p.received.is_empty() && p.fired.is_empty());
    s.resume(NodeId(2));
    let out = run(&mut s, ms(30.0));
    let p = s.node(NodeId(2)).expect("up");
    // Everything that waited happens at resume time, in arrival order.
    assert_eq!(p.received, vec![(NodeId(1), Msg::Ping(4), ms(20.0))]);
    assert_eq!(p.fired, vec![(test_timer(1), ms(20.0))]);
    assert_eq!(replies(&out), vec![(ms(20.5), NodeId(2), 3)]);
}

#[test]
fn crash_of_a_paused_node_drops_what_waited() {
    let mut s = sim(exact_config(), 2);
    s.pause(NodeId(2));
    s.submit(NodeId(1), cmd(1, "send:2", 1));
    s.submit(NodeId(2), read(2));
    run(&mut s, ms(10.0));
    s.crash(NodeId(2));
    assert!(!s.is_paused(NodeId(2)));
    s.restart(NodeId(2)).expect("restart");
    run(&mut s, ms(20.0));
    assert!(received(&s, 2).is_empty());
    assert_eq!(s.stats().messages_dropped_by_crash, 1);
    assert_eq!(s.stats().client_requests_lost, 1);
    assert_eq!(s.stats().messages_in_flight, 0);
}

fn timer_event_time(out: &[SimOutput]) -> Time {
    out.iter()
        .find_map(|o| match o {
            SimOutput::Event {
                at,
                event: NodeEvent::TimerFired { .. },
                ..
            } => Some(*at),
            _ => None,
        })
        .expect("the timer fired")
}

#[test]
fn clock_drift_makes_timers_fire_earlier_or_later_in_global_time() {
    // Timer of 110 ms local, armed when the request arrives at 0.5 ms global.
    let mut fast = sim(exact_config(), 1);
    fast.set_clock_drift(NodeId(1), 100_000); // local clock runs 1.1x
    fast.submit(NodeId(1), cmd(1, "timer:1", 110));
    let at = timer_event_time(&run(&mut fast, ms(500.0)));
    assert_eq!(at, ms(100.5));
    let (_, local) = fast.node(NodeId(1)).expect("up").fired[0];
    assert_eq!(
        local,
        ms(0.55 + 110.0),
        "fires exactly at its local deadline"
    );

    let mut slow = sim(exact_config(), 1);
    slow.set_clock_drift(NodeId(1), -100_000); // 0.9x
    slow.submit(NodeId(1), cmd(1, "timer:1", 110));
    let at = timer_event_time(&run(&mut slow, ms(500.0)));
    let expected = 0.5 + 110.0 / 0.9;
    assert!(
        (at.as_secs_f64() * 1e3 - expected).abs() < 1e-5,
        "fired at {at}, expected {expected} ms"
    );
    let (_, local) = slow.node(NodeId(1)).expect("up").fired[0];
    assert!(local >= ms(0.45 + 110.0));
}

#[test]
fn changing_drift_keeps_local_deadlines_of_armed_timers() {
    let mut s = sim(exact_config(), 1);
    s.submit(NodeId(1), cmd(1, "timer:1", 100));
    run(&mut s, ms(50.5)); // 50 ms of the timer's 100 ms elapsed
    s.set_clock_drift(NodeId(1), 1_000_000); // clamped to +50%: 1.5x
    assert_eq!(s.local_time(NodeId(1)), Some(ms(50.5)));
    let at = timer_event_time(&run(&mut s, ms(500.0)));
    // The remaining 50 ms of local time pass in 50 / 1.5 ms of global time.
    let expected = 50.5 + 50.0 / 1.5;
    assert!(
        (at.as_secs_f64() * 1e3 - expected).abs() < 1e-5,
        "fired at {at}"
    );
    assert_eq!(s.stats().timers_fired, 1);
}

#[test]
fn rearmed_timer_fires_once_at_its_new_deadline_and_cancelled_timer_never_fires() {
    let mut s = sim(exact_config(), 1);
    s.submit(NodeId(1), cmd(1, "timer:1", 10));
    s.submit(NodeId(1), cmd(2, "timer:2", 10));
    run(&mut s, ms(5.5));
    s.submit(NodeId(1), cmd(3, "timer:1", 10)); // re-armed at 6 ms: fires at 16 ms
    s.submit(NodeId(1), cmd(4, "cancel:2", 0));
    run(&mut s, ms(50.0));
    assert_eq!(
        s.node(NodeId(1)).expect("up").fired,
        vec![(test_timer(1), ms(16.0))]
    );
    assert_eq!(s.stats().timers_fired, 1);
}

#[test]
fn exhausting_the_event_budget_is_a_typed_error() {
    let mut config = exact_config();
    config.max_events = 50;
    let gossip = ProbeConfig {
        reply_pong: true,
        gossip_ms: Some(3),
    };
    let mut s = Sim::<Probe>::new(config, 1, &ids(3), gossip).expect("valid sim");
    let mut out = Vec::new();
    match s.run_until(Time::from_secs(10), &mut out) {
        Err(SimError::EventBudgetExhausted { max_events, at }) => {
            assert_eq!(max_events, 50);
            assert!(at < Time::from_secs(10));
            assert_eq!(s.stats().events_processed, 50);
        }
        other => panic!("expected the budget error, got {other:?}"),
    }
    assert!(
        !out.is_empty(),
        "outputs produced before the stop are handed out"
    );
}

#[test]
fn deadline_in_the_past_is_refused() {
    let mut s = sim(exact_config(), 1);
    run(&mut s, ms(10.0));
    let err = s.run_until(ms(5.0), &mut Vec::new()).unwrap_err();
    assert!(matches!(err, SimError::DeadlineInPast { .. }), "{err}");
    assert_eq!(s.now(), ms(10.0));
}

#[test]
fn messages_and_requests_to_unknown_nodes_are_counted_drops() {
    let mut s = sim(exact_config(), 2);
    s.submit(NodeId(1), cmd(1, "send:77", 1));
    s.submit(NodeId(77), read(2));
    run(&mut s, ms(10.0));
    assert_eq!(s.stats().messages_dropped_unknown_node, 1);
    assert_eq!(s.stats().client_requests_unknown_node, 1);
}

#[test]
fn in_flight_bound_drops_and_counts_excess_messages() {
    let mut config = exact_config();
    config.network.max_in_flight_messages = 5;
    let mut s = sim(config, 2);
    s.submit(NodeId(1), cmd(1, "burst:2", 10));
    run(&mut s, ms(10.0));
    assert_eq!(received(&s, 2).len(), 5);
    assert_eq!(s.stats().messages_dropped_by_bound, 5);
}

#[test]
fn new_rejects_empty_and_duplicate_node_lists_and_invalid_configs() {
    let e = Sim::<Probe>::new(exact_config(), 1, &[], ProbeConfig::default()).unwrap_err();
    assert!(matches!(e, SimError::NoNodes));
    let e = Sim::<Probe>::new(
        exact_config(),
        1,
        &[NodeId(1), NodeId(1)],
        ProbeConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(e, SimError::DuplicateNode(NodeId(1))));
    let mut bad = exact_config();
    bad.network.latency = LatencyDist::Uniform {
        min_ms: 5.0,
        max_ms: 1.0,
    };
    let e = Sim::<Probe>::new(bad, 1, &ids(1), ProbeConfig::default()).unwrap_err();
    match e {
        SimError::InvalidConfig { field, .. } => assert_eq!(field, "network.latency.min_ms"),
        other => panic!("{other}"),
    }
}

#[test]
fn restarting_a_running_or_unknown_node_is_an_error() {
    let mut s = sim(exact_config(), 1);
    assert!(matches!(
        s.restart(NodeId(1)),
        Err(SimError::NodeNotCrashed(NodeId(1)))
    ));
    assert!(matches!(
        s.restart(NodeId(9)),
        Err(SimError::UnknownNode(NodeId(9)))
    ));
}

#[test]
fn boot_events_are_reported_at_time_zero() {
    let mut s = sim(exact_config(), 2);
    let out = run(&mut s, ms(1.0));
    let boots: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            SimOutput::Event {
                at,
                node,
                event: NodeEvent::NodeStarted { .. },
            } => Some((*at, *node)),
            _ => None,
        })
        .collect();
    assert_eq!(
        boots,
        vec![(Time::ZERO, NodeId(1)), (Time::ZERO, NodeId(2))]
    );
}

#[test]
fn bytes_are_measured_only_when_configured() {
    let mut s = sim(exact_config(), 2);
    s.submit(NodeId(1), cmd(1, "send:2", 1));
    run(&mut s, ms(10.0));
    assert_eq!(s.stats().bytes_sent, 0);
    let mut config = exact_config();
    config.network.measure_bytes = true;
    let mut s = sim(config, 2);
    s.submit(NodeId(1), cmd(1, "send:2", 1));
    run(&mut s, ms(10.0));
    // postcard: one byte of variant tag, one byte of zigzag varint.
    assert_eq!(s.stats().bytes_sent, 2);
}

#[test]
fn stats_serialize_with_per_node_counters() {
    let mut s = sim(exact_config(), 2);
    s.submit(NodeId(1), cmd(1, "send:2", 1));
    run(&mut s, ms(10.0));
    let json = serde_json::to_value(s.stats()).expect("serialize");
    assert_eq!(json["messages_delivered"], 1);
    assert_eq!(json["per_node"]["1"]["messages_sent"], 1);
    assert_eq!(json["per_node"]["2"]["messages_delivered"], 1);
}

#[test]
fn config_reads_from_toml_and_refuses_unknown_fields() {
    let text = r#"
        max_events = 1000
        [network]
        loss_probability = 0.1
        latency = { kind = "exponential", mean_ms = 2.0, min_ms = 0.5, max_ms = 20.0 }
        [disk]
        fsync_latency = { kind = "constant", ms = 1.0 }
    "#;
    let c: SimConfig = toml::from_str(text).expect("parses");
    c.validate().expect("valid");
    assert_eq!(c.max_events, 1000);
    assert_eq!(
        c.network.latency,
        LatencyDist::Exponential {
            mean_ms: 2.0,
            min_ms: 0.5,
            max_ms: 20.0
        }
    );
    assert_eq!(
        c.network.client_latency,
        SimConfig::default().network.client_latency
    );
    let err = toml::from_str::<SimConfig>("[network]\nlos_probability = 0.1\n").unwrap_err();
    assert!(err.to_string().contains("los_probability"), "{err}");
    let bad: SimConfig = toml::from_str("[network]\nloss_probability = 1.5\n").expect("parses");
    match bad.validate() {
        Err(SimError::InvalidConfig { field, .. }) => {
            assert_eq!(field, "network.loss_probability")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn fault_rules_round_trip_through_json_with_operator_names() {
    let rules = vec![
        FaultRule::Partition {
            a: vec![NodeId(1)],
            b: vec![NodeId(2), NodeId(3)],
        },
        FaultRule::Loss { probability: 0.2 },
        FaultRule::Delay {
            extra: LatencyDist::Uniform {
                min_ms: 1.0,
                max_ms: 2.0,
            },
        },
    ];
    let json = serde_json::to_string(&rules).expect("serialize");
    assert!(json.contains(r#""rule":"partition""#), "{json}");
    let back: Vec<FaultRule> = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, rules);
    assert_eq!(back[0].name(), "partition");
    assert!(
        FaultRule::Loss { probability: 2.0 }
            .validate("nemesis.rule")
            .is_err()
    );
}

#[test]
fn admin_commands_reach_the_node_now_wait_while_paused_and_are_lost_when_down() {
    let admin_events = |out: &[SimOutput]| -> Vec<(Time, NodeId)> {
        out.iter()
            .filter_map(|o| match o {
                SimOutput::Event {
                    at,
                    node,
                    event: NodeEvent::AdminUnsupported { .. },
                } => Some((*at, *node)),
                _ => None,
            })
            .collect()
    };
    let mut s = sim(exact_config(), 3);
    run(&mut s, ms(10.0));
    // Probe keeps the default `on_admin`, which reports `admin_unsupported` at once.
    assert_eq!(
        s.admin(
            NodeId(1),
            AdminCommand::default_group(AdminAction::AddLearner(NodeId(3)))
        )
        .ok(),
        Some(true)
    );
    assert_eq!(
        admin_events(&run(&mut s, ms(20.0))),
        vec![(ms(10.0), NodeId(1))]
    );
    s.pause(NodeId(2));
    assert_eq!(
        s.admin(
            NodeId(2),
            AdminCommand::default_group(AdminAction::RemoveNode(NodeId(3)))
        )
        .ok(),
        Some(true)
    );
    assert!(
        admin_events(&run(&mut s, ms(30.0))).is_empty(),
        "a paused node acted"
    );
    s.resume(NodeId(2));
    assert_eq!(
        admin_events(&run(&mut s, ms(40.0))),
        vec![(ms(30.0), NodeId(2))]
    );
    s.crash(NodeId(3));
    assert_eq!(
        s.admin(
            NodeId(3),
            AdminCommand::default_group(AdminAction::AddVoter(NodeId(3)))
        )
        .ok(),
        Some(false)
    );
    assert!(matches!(
        s.admin(
            NodeId(9),
            AdminCommand::default_group(AdminAction::AddVoter(NodeId(9)))
        ),
        Err(SimError::UnknownNode(NodeId(9)))
    ));
}

#[test]
fn an_absent_node_is_down_until_started_once_and_then_restarts_like_any_other() {
    let mut s = Sim::<Probe>::new_with_absent(
        exact_config(),
        7,
        &ids(3),
        &[NodeId(3)],
        ProbeConfig::default(),
    )
    .expect("valid sim");
    assert!(!s.is_up(NodeId(3)) && !s.is_started(NodeId(3)));
    // A message to it is lost, as to any down node.
    s.submit(NodeId(1), cmd(1, "send:3", 7));
    run(&mut s, ms(10.0));
    assert!(matches!(
        s.restart(NodeId(3)),
        Err(SimError::NeverStarted(NodeId(3)))
    ));
    s.start(NodeId(3)).expect("first boot");
    assert!(s.is_up(NodeId(3)) && s.is_started(NodeId(3)));
    assert!(received(&s, 3).is_empty(), "nothing sent before it booted");
    assert!(matches!(
        s.start(NodeId(3)),
        Err(SimError::AlreadyStarted(NodeId(3)))
    ));
    s.crash(NodeId(3));
    s.restart(NodeId(3)).expect("a started node restarts");
    assert!(matches!(
        Sim::<Probe>::new_with_absent(
            exact_config(),
            7,
            &ids(2),
            &[NodeId(9)],
            ProbeConfig::default()
        ),
        Err(SimError::UnknownNode(NodeId(9)))
    ));
}

#[test]
fn a_failing_fsync_stops_the_node_before_anything_held_behind_it_and_a_restart_recovers() {
    let mut s = sim(exact_config(), 2);
    s.submit(NodeId(1), cmd(1, "incr", 0));
    run(&mut s, ms(10.0));
    s.set_failing_syncs(NodeId(1), true);
    s.submit(NodeId(1), cmd(2, "incr_send:2", 0));
    let out = run(&mut s, ms(20.0));
    assert!(!s.is_up(NodeId(1)), "the node stops at the failed fsync");
    assert!(
        replies(&out).is_empty(),
        "the reply held behind it is never sent"
    );
    assert!(received(&s, 2).is_empty(), "nor the message");
    assert!(out.iter().any(|o| matches!(
        o,
        SimOutput::Event { node: NodeId(1), event: NodeEvent::StorageError { reason }, .. }
            if reason.contains("injected fsync failure")
    )));
    assert_eq!(s.stats().per_node[&NodeId(1)].disk_syncs_failed, 1);
    // Restarted while the disk still fails, it stops again at its first fsync (or
    // cannot open its log at all, if recovery had a torn tail to cut).
    if s.restart(NodeId(1)).is_ok() {
        s.submit(NodeId(1), cmd(3, "incr", 0));
        let out = run(&mut s, ms(30.0));
        assert!(!s.is_up(NodeId(1)));
        assert!(replies(&out).is_empty());
    }
    s.set_failing_syncs(NodeId(1), false);
    s.restart(NodeId(1)).expect("restart once the disk works");
    let p = s.node(NodeId(1)).expect("up");
    let records = &p.recovered.group(GroupId::DEFAULT).records;
    assert_eq!(records[0], 1i64.to_le_bytes(), "the synced record survived");
    assert!(records.len() <= 2, "{records:?}");
}

#[test]
fn a_corrupted_synced_record_makes_the_restart_refuse_naming_the_file() {
    for seed in 0..20 {
        let mut config = exact_config();
        // Small log bounds so that a few records put synced bytes beyond the bound.
        config.disk.storage.max_unsynced_bytes = kvlab_storage::MIN_UNSYNCED_BYTES;
        config.disk.storage.segment_size_bytes = kvlab_storage::MIN_SEGMENT_BYTES;
        let mut s =
            Sim::<Probe>::new(config, seed, &ids(1), ProbeConfig::default()).expect("valid sim");
        assert!(
            matches!(
                s.corrupt_synced_log(NodeId(1)),
                Err(SimError::NodeNotCrashed(_))
            ),
            "a running node's disk is left alone"
        );
        for seq in 1..=700 {
            s.submit(NodeId(1), cmd(seq, "incr", 0));
        }
        run(&mut s, ms(2_000.0));
        s.crash(NodeId(1));
        let damage = s
            .corrupt_synced_log(NodeId(1))
            .expect("crashed")
            .expect("700 synced records leave room for detectable damage");
        let err = s.restart(NodeId(1)).expect_err("a damaged log is refused");
        let name = damage
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(err.to_string().contains(&name), "seed {seed}: {err}");
        assert!(!s.is_up(NodeId(1)), "seed {seed}: never serves from it");
    }
}

#[test]
fn a_short_log_has_no_byte_that_a_crash_could_not_have_damaged() {
    let mut s = sim(exact_config(), 1);
    s.submit(NodeId(1), cmd(1, "incr", 0));
    run(&mut s, ms(10.0));
    s.crash(NodeId(1));
    assert_eq!(s.corrupt_synced_log(NodeId(1)).expect("crashed"), None);
    s.restart(NodeId(1)).expect("the log is untouched");
}

#[test]
fn a_clock_jump_fires_every_timer_due_within_it_at_once_and_shifts_the_rest() {
    let mut s = sim(exact_config(), 1);
    s.submit(NodeId(1), cmd(1, "timer:1", 100));
    s.submit(NodeId(1), cmd(2, "timer:2", 400));
    run(&mut s, ms(10.0));
    let before = s.local_time(NodeId(1)).expect("node");
    s.jump_clock(NodeId(1), std::time::Duration::from_millis(200));
    assert_eq!(
        s.local_time(NodeId(1)).expect("node"),
        before + std::time::Duration::from_millis(200)
    );
    run(&mut s, ms(10.0 + 1e-3));
    let fired = &s.node(NodeId(1)).expect("up").fired;
    assert_eq!(
        fired.len(),
        1,
        "the 100 ms timer fires at the jump: {fired:?}"
    );
    run(&mut s, ms(1_000.0));
    let fired = &s.node(NodeId(1)).expect("up").fired;
    assert_eq!(fired.len(), 2);
    // Timer 2 was due at local 400.5; after the jump that is global 200.5.
    assert_eq!(fired[1].1, ms(400.5));
}

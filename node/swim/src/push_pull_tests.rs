//! Push-pull by digest: what one exchange sends between two cores fed by hand, and what
//! anti-entropy costs and repairs in a cluster on the harness (the crate docs explain
//! the exchange).

use std::collections::VecDeque;
use std::time::Duration;

use kvlab_types::{Cx, Effect, Message, NodeId, Out, Rng, Time, seeded_rng};

use crate::harness::Cluster;
use crate::*;

fn n(i: u32) -> NodeId {
    NodeId(i)
}

/// The member the hand-fed cores hear their table from.
const FEEDER: u32 = 9_999;

fn alive(m: u32, inc: u64, address: &str) -> Update {
    Update::Alive {
        member: n(m),
        incarnation: inc,
        address: address.into(),
    }
}

/// Core `id`, started, that knows `rows` (fed as gossip).
fn core(id: u32, rows: Vec<Update>, rng: &mut Rng) -> Swim {
    let config = SwimConfig {
        push_pull_interval_ms: 0,
        ..SwimConfig::default()
    };
    let mut s = Swim::new(n(id), format!("n{id}/a"), 0, config).expect("valid");
    let mut out = Out::new();
    s.start(&mut Cx::new(n(id), Time::ZERO, rng), &mut out);
    for chunk in rows.chunks(MAX_INCOMING_UPDATES) {
        let msg = SwimMsg {
            body: SwimBody::Gossip,
            updates: chunk.to_vec(),
        };
        let mut out = Out::new();
        s.handle_msg(
            &mut Cx::new(n(id), Time::from_secs(1), rng),
            n(FEEDER),
            msg,
            &mut out,
        );
    }
    s.drain_events();
    s
}

/// Members 0 and 1 and `others` more, every one alive at incarnation 0.
fn table(others: u32) -> Vec<Update> {
    (0..others + 2)
        .map(|m| alive(m, 0, &format!("n{m}/a")))
        .collect()
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

/// Core 0 opens an exchange with core 1; delivers every anti-entropy message between
/// them, without piggybacked updates (gossip is over), until none is left. Returns the
/// messages in the order delivered.
fn exchange(a: &mut Swim, b: &mut Swim, rng: &mut Rng) -> Vec<SwimMsg> {
    let mut out = Out::new();
    a.anti_entropy_with(
        b.id(),
        &mut Cx::new(a.id(), Time::from_secs(2), rng),
        &mut out,
    );
    let mut queue: VecDeque<(NodeId, NodeId, SwimMsg)> = sends(out.effects())
        .into_iter()
        .map(|(to, m)| (a.id(), to, m))
        .collect();
    let mut log = Vec::new();
    while let Some((from, to, msg)) = queue.pop_front() {
        if !msg.is_anti_entropy() {
            continue;
        }
        let msg = SwimMsg {
            updates: Vec::new(),
            ..msg
        };
        log.push(msg.clone());
        let core = if to == a.id() { &mut *a } else { &mut *b };
        let mut out = Out::new();
        core.handle_msg(
            &mut Cx::new(to, Time::from_secs(2), rng),
            from,
            msg,
            &mut out,
        );
        queue.extend(sends(out.effects()).into_iter().map(|(t, m)| (to, t, m)));
    }
    log
}

fn body_bytes(log: &[SwimMsg]) -> usize {
    log.iter().map(|m| m.body.wire_size()).sum()
}

fn rows_carried(log: &[SwimMsg]) -> usize {
    log.iter()
        .map(|m| match &m.body {
            SwimBody::PushPull { members, .. } | SwimBody::SyncEntries { members, .. } => {
                members.len()
            }
            _ => 0,
        })
        .sum()
}

#[test]
fn members_that_agree_exchange_one_small_message_whatever_n() {
    let mut sizes = Vec::new();
    for others in [14, 1_022] {
        let mut rng = seeded_rng(1);
        let mut a = core(0, table(others), &mut rng);
        let mut b = core(1, table(others), &mut rng);
        assert_eq!(a.digest(), b.digest(), "n = {}", others + 2);
        let log = exchange(&mut a, &mut b, &mut rng);
        assert_eq!(log.len(), 1, "n = {}: {log:?}", others + 2);
        assert!(matches!(log[0].body, SwimBody::SyncDigest { .. }));
        assert_eq!(b.counters().digests_matched, 1);
        sizes.push(body_bytes(&log));
    }
    // A seq and a 64-bit hash: at most 1 + 10 + 10 bytes, at n = 16 as at n = 1024.
    assert!(sizes.iter().all(|&s| s <= 21), "{sizes:?}");
}

#[test]
fn members_that_differ_exchange_only_the_rows_of_differing_buckets() {
    let others = 1_022;
    let mut rng = seeded_rng(2);
    // 0 has member 7's restart (a higher incarnation at a new address); 1 has a member
    // 0 never heard of.
    let mut rows_a = table(others);
    rows_a.push(alive(7, 3, "n7/b"));
    let mut rows_b = table(others);
    rows_b.push(alive(5_000, 0, "n5000/a"));
    let mut a = core(0, rows_a, &mut rng);
    let mut b = core(1, rows_b, &mut rng);
    assert_ne!(a.digest(), b.digest());

    let log = exchange(&mut a, &mut b, &mut rng);
    let kinds: Vec<&str> = log.iter().map(SwimMsg::kind).collect();
    assert_eq!(
        kinds,
        [
            "sync_digest",
            "sync_buckets",
            "sync_entries",
            "sync_entries"
        ]
    );
    assert_eq!(a.digest(), b.digest(), "one exchange repairs both sides");
    assert_eq!(
        b.member(n(7)).map(|m| (m.incarnation, m.address.as_str())),
        Some((3, "n7/b"))
    );
    assert!(
        a.member(n(5_000))
            .is_some_and(|m| m.state == MemberState::Alive)
    );

    // 1,025 rows: 64 buckets of ~16 rows; two buckets differ, each side sends its rows
    // of them. A full push-pull would carry all 1,025 rows both ways.
    let carried = rows_carried(&log);
    assert!(carried <= 96, "{carried} rows carried");
    let full = SwimBody::PushPull {
        join: false,
        reply: false,
        members: a
            .members()
            .map(|m| MemberSnapshot {
                member: m.id,
                address: m.address.clone(),
                incarnation: m.incarnation,
                state: m.state,
            })
            .collect(),
    }
    .wire_size();
    let bytes = body_bytes(&log);
    assert!(
        bytes * 4 < full,
        "{bytes} bytes exchanged, one full table is {full}"
    );
    assert_eq!(a.counters().syncs_refused + b.counters().syncs_refused, 0);
}

#[test]
fn without_digests_an_exchange_is_the_whole_table_both_ways() {
    let mut rng = seeded_rng(3);
    let config = SwimConfig {
        push_pull_interval_ms: 0,
        push_pull_digest: false,
        ..SwimConfig::default()
    };
    let mut a = core(0, table(62), &mut rng);
    a = {
        // The same table, in a core configured without digests.
        let rows: Vec<Update> = a
            .members()
            .map(|m| alive(m.id.0, m.incarnation, &m.address))
            .collect();
        let mut s = Swim::new(n(0), "n0/a".into(), 0, config).expect("valid");
        let mut out = Out::new();
        s.start(&mut Cx::new(n(0), Time::ZERO, &mut rng), &mut out);
        let msg = SwimMsg {
            body: SwimBody::Gossip,
            updates: rows,
        };
        s.handle_msg(
            &mut Cx::new(n(0), Time::ZERO, &mut rng),
            n(FEEDER),
            msg,
            &mut out,
        );
        s
    };
    let mut b = core(1, table(62), &mut rng);
    let log = exchange(&mut a, &mut b, &mut rng);
    let kinds: Vec<&str> = log.iter().map(SwimMsg::kind).collect();
    assert_eq!(kinds, ["push_pull", "push_pull"]);
    assert_eq!(rows_carried(&log), 2 * 64);
}

// ----- on the harness ------------------------------------------------------------------

/// Whether every running member's table hashes the same.
fn same_tables(c: &Cluster) -> bool {
    let mut digests = c
        .up_ids()
        .into_iter()
        .filter_map(|i| c.swim(i).map(Swim::digest));
    let first = digests.next();
    digests.all(|d| Some(d) == first)
}

/// Push-pull bytes (bodies only) every member sends per second once all tables agree,
/// in a cluster of `members` with push-pull every 2 s and no interval scaling.
fn converged_push_pull_bytes(members: u32, digest: bool) -> f64 {
    let config = SwimConfig {
        push_pull_interval_ms: 2_000,
        push_pull_scale_threshold: 0,
        push_pull_digest: digest,
        ..SwimConfig::default()
    };
    let mut c = Cluster::new(members, 7, config);
    let t = c.run_until_true(Time::from_secs(120), Duration::from_secs(1), |c| {
        c.converged() && same_tables(c)
    });
    assert!(t.is_some(), "{members} members never agreed");
    let sent = |c: &Cluster| -> u64 {
        c.up_ids()
            .into_iter()
            .filter_map(|i| c.swim(i))
            .map(|s| s.counters().push_pull_bytes_sent)
            .sum()
    };
    let before = sent(&c);
    // Five intervals: once the tables agree, every one of them costs the same.
    let window = Duration::from_secs(10);
    c.run_for(window);
    assert!(same_tables(&c), "{members} members: tables drifted apart");
    (sent(&c) - before) as f64 / f64::from(members) / window.as_secs_f64()
}

/// The regression test of issue 10: in a cluster whose members agree, push-pull's bytes
/// per member per second must not grow with `n` (32 → 256 members). With full-table
/// push-pull they grow linearly (4× from 32 to 128 members), which the second half
/// checks the measurement can see.
#[test]
fn converged_push_pull_bytes_per_member_do_not_grow_with_n() {
    let small = converged_push_pull_bytes(32, true);
    let large = converged_push_pull_bytes(256, true);
    println!("push-pull by digest: {small:.1} B/member/s at n=32, {large:.1} at n=256");
    assert!(small > 0.0);
    assert!(
        large < small * 1.5,
        "digest push-pull grew with n: {small:.1} B/member/s at 32, {large:.1} at 256"
    );
    // One digest (≤ 21 bytes) per member per 2 s interval.
    assert!(large < 12.0, "{large:.1} B/member/s");

    // (128 rather than 256 members: full tables are what makes the harness slow.)
    let small_full = converged_push_pull_bytes(32, false);
    let large_full = converged_push_pull_bytes(128, false);
    println!("full push-pull: {small_full:.1} B/member/s at n=32, {large_full:.1} at n=128");
    assert!(
        large_full > small_full * 3.0,
        "full-table push-pull should grow ~linearly: {small_full:.1} at 32, {large_full:.1} at 128"
    );
}

/// A member that misses every piggybacked update while a member restarts at a new
/// address still learns the new address — through push-pull, the only path left. With
/// push-pull off it never does, which shows the test closes the gossip path.
#[test]
fn a_member_that_missed_the_gossip_converges_through_push_pull() {
    let deaf = n(5);
    let restarted = n(8);
    for (digest, interval_ms) in [(true, 5_000), (false, 5_000), (true, 0)] {
        for seed in 0..4 {
            let config = SwimConfig {
                push_pull_interval_ms: interval_ms,
                push_pull_digest: digest,
                ..SwimConfig::default()
            };
            let mut c = Cluster::new(12, seed, config);
            let t = c.run_until_true(Time::from_secs(60), Duration::from_millis(250), |c| {
                c.converged() && same_tables(c)
            });
            assert!(t.is_some(), "seed {seed}: no initial agreement");
            c.set_deaf_to_gossip(deaf, true);
            // A restart between two probes: nobody suspects it, everyone but the deaf
            // member hears its new incarnation and address through gossip.
            c.crash(restarted);
            c.restart(restarted);
            let new = c.swim(restarted).map(|s| s.address().to_string());
            let knows_new = |c: &Cluster, o: NodeId| {
                c.swim(o)
                    .and_then(|s| s.member(restarted))
                    .map(|m| m.address.clone())
                    == new
            };
            let others_know = c.run_until_true(
                c.now() + Duration::from_secs(10),
                Duration::from_millis(100),
                |c| {
                    c.up_ids()
                        .into_iter()
                        .filter(|&o| o != deaf && o != restarted)
                        .all(|o| knows_new(c, o))
                },
            );
            assert!(others_know.is_some(), "seed {seed}: gossip did not spread");
            let bound = Duration::from_secs(30);
            let repaired = c.run_until_true(c.now() + bound, Duration::from_millis(100), |c| {
                knows_new(c, deaf)
            });
            if interval_ms == 0 {
                assert!(
                    repaired.is_none(),
                    "seed {seed}: the deaf member learnt the address without push-pull"
                );
                continue;
            }
            assert!(
                repaired.is_some(),
                "seed {seed}, digest {digest}: {deaf} still has the old address of \
                 {restarted} {bound:?} after the restart"
            );
            // …and the whole cluster agrees again, gossip still off for the deaf member.
            let agreed = c.run_until_true(c.now() + bound, Duration::from_millis(250), |c| {
                c.converged() && same_tables(c)
            });
            assert!(
                agreed.is_some(),
                "seed {seed}, digest {digest}: tables differ"
            );
        }
    }
}

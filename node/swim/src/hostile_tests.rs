//! Hostile input: scripted tests of the bounds on what a message may claim, and a seeded
//! fuzz test that feeds a live cluster forged messages (random fields with extremes,
//! postcard-decoded random bytes, mutated replays of real messages) and requires no
//! panic, intact table invariants, and convergence once the forgeries stop.
//!
//! `cargo test` runs [`DEFAULT_INPUTS`] forged messages; `KVLAB_FUZZ_SEED=N` reruns one
//! case, `KVLAB_FUZZ_INPUTS=N` scales the run, and the ignored test runs millions (use
//! `--release`): `KVLAB_FUZZ_INPUTS=2000000 cargo test --release -p kvlab-swim --lib
//! hostile -- --ignored`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use kvlab_types::{Cx, Effect, NodeEvent, NodeId, Out, Rng, Time, derive_seed, seeded_rng};
use rand::RngExt;

use crate::harness::Cluster;
use crate::swim::{T_PROBE, timer};
use crate::*;

fn n(i: u32) -> NodeId {
    NodeId(i)
}

/// Member 0 at `incarnation`, started, knowing members `1..=others` alive at 0.
fn member(incarnation: u64, others: u32) -> (Swim, Rng) {
    let config = SwimConfig {
        push_pull_interval_ms: 0,
        ..SwimConfig::default()
    };
    let mut swim = Swim::new(n(0), "n0/a".into(), incarnation, config).expect("valid");
    let mut rng = seeded_rng(3);
    let mut out = Out::new();
    swim.start(&mut Cx::new(n(0), Time::ZERO, &mut rng), &mut out);
    let ups = (1..=others)
        .map(|m| Update::Alive {
            member: n(m),
            incarnation: 0,
            address: format!("n{m}/a"),
        })
        .collect();
    deliver(&mut swim, &mut rng, 1, SwimBody::Gossip, ups);
    swim.drain_events();
    (swim, rng)
}

fn deliver(
    swim: &mut Swim,
    rng: &mut Rng,
    from: u32,
    body: SwimBody,
    updates: Vec<Update>,
) -> Vec<Effect<SwimMsg>> {
    let mut out = Out::new();
    let mut cx = Cx::new(n(0), Time::from_secs(1), rng);
    swim.handle_msg(&mut cx, n(from), SwimMsg { body, updates }, &mut out);
    out.effects().to_vec()
}

fn suspect_me(incarnation: u64) -> Update {
    Update::Suspect {
        member: n(0),
        incarnation,
        from: n(1),
    }
}

#[test]
fn suspicion_at_u64_max_is_refused_and_the_member_can_still_refute() {
    // Before the bound, a forged suspicion at u64::MAX left the member at u64::MAX
    // (saturating), unable ever to refute a suspicion at that incarnation again.
    let (mut s, mut rng) = member(3, 2);
    deliver(
        &mut s,
        &mut rng,
        1,
        SwimBody::Gossip,
        vec![suspect_me(u64::MAX)],
    );
    assert_eq!(s.incarnation(), 3);
    assert_eq!(s.counters().updates_refused, 1);
    assert_eq!(s.counters().refutations, 0);
    // A plausible suspicion is refuted as SWIM §4.2 says.
    deliver(&mut s, &mut rng, 1, SwimBody::Gossip, vec![suspect_me(3)]);
    assert_eq!(s.incarnation(), 4);
    assert_eq!(s.counters().refutations, 1);
}

#[test]
fn an_incarnation_far_ahead_of_the_known_one_is_refused() {
    let (mut s, mut rng) = member(0, 2);
    let alive = |inc| Update::Alive {
        member: n(1),
        incarnation: inc,
        address: "n1/b".into(),
    };
    for inc in [MAX_INCARNATION_JUMP + 1, MAX_INCARNATION, u64::MAX] {
        deliver(&mut s, &mut rng, 2, SwimBody::Gossip, vec![alive(inc)]);
        assert_eq!(s.member(n(1)).map(|m| m.incarnation), Some(0), "{inc}");
    }
    assert_eq!(s.counters().updates_refused, 3);
    deliver(
        &mut s,
        &mut rng,
        2,
        SwimBody::Gossip,
        vec![alive(MAX_INCARNATION_JUMP)],
    );
    assert_eq!(
        s.member(n(1)).map(|m| m.incarnation),
        Some(MAX_INCARNATION_JUMP)
    );
    // The same bounds apply to push-pull entries.
    let entry = MemberSnapshot {
        member: n(2),
        address: "n2/z".into(),
        incarnation: u64::MAX,
        state: MemberState::Dead,
    };
    let body = SwimBody::PushPull {
        join: false,
        reply: true,
        members: vec![entry],
    };
    deliver(&mut s, &mut rng, 1, body, Vec::new());
    assert_eq!(
        s.member(n(2)).map(|m| (m.state, m.incarnation)),
        Some((MemberState::Alive, 0))
    );
    assert_eq!(s.counters().updates_refused, 4);
}

#[test]
fn a_member_at_max_incarnation_stops_refuting_and_reports_it_once() {
    let (mut s, mut rng) = member(MAX_INCARNATION, 2);
    let mut reported = 0;
    for _ in 0..3 {
        let effects = deliver(
            &mut s,
            &mut rng,
            1,
            SwimBody::Gossip,
            vec![suspect_me(MAX_INCARNATION)],
        );
        reported += effects
            .iter()
            .filter(|e| matches!(e, Effect::Event(NodeEvent::IncarnationExhausted { .. })))
            .count();
    }
    assert_eq!(s.incarnation(), MAX_INCARNATION);
    assert_eq!(s.counters().refutations_exhausted, 3);
    assert_eq!(reported, 1);
}

#[test]
fn acks_and_nacks_count_only_from_the_target_and_the_relays_asked() {
    let (mut s, mut rng) = member(0, 3);
    let mut out = Out::new();
    s.handle_timer(
        &mut Cx::new(n(0), Time::from_secs(1), &mut rng),
        timer(T_PROBE, 0),
        &mut out,
    );
    let (target, seq) = out
        .effects()
        .iter()
        .find_map(|e| match e {
            Effect::Send {
                to,
                msg:
                    SwimMsg {
                        body: SwimBody::Ping { seq, .. },
                        ..
                    },
            } => Some((*to, *seq)),
            _ => None,
        })
        .expect("a probe");
    let other = (1..=3).map(n).find(|&m| m != target).unwrap();
    // A forged ack from a member that was not probed and a forged nack.
    deliver(&mut s, &mut rng, other.0, SwimBody::Ack { seq }, Vec::new());
    deliver(
        &mut s,
        &mut rng,
        other.0,
        SwimBody::Nack { seq },
        Vec::new(),
    );
    assert_eq!(s.counters().stale_acks, 2);
    assert_eq!(s.counters().nacks_received, 0);
    // The target's own ack ends the probe: the next period suspects nobody.
    deliver(
        &mut s,
        &mut rng,
        target.0,
        SwimBody::Ack { seq },
        Vec::new(),
    );
    assert_eq!(s.counters().stale_acks, 2);
    let mut out = Out::new();
    s.handle_timer(
        &mut Cx::new(n(0), Time::from_secs(2), &mut rng),
        timer(T_PROBE, 0),
        &mut out,
    );
    assert_eq!(s.counters().probes_failed, 0);
}

#[test]
fn a_restart_from_an_incarnation_at_the_ceiling_stays_at_it() {
    let mut rec = kvlab_types::Recovery::default();
    rec.groups.entry(SWIM_STATE).or_default().records = vec![encode_incarnation_record(u64::MAX)];
    let mut rng = seeded_rng(1);
    let mut out = Out::new();
    let node = <SwimNode as kvlab_types::Protocol>::boot(
        &mut Cx::new(n(0), Time::ZERO, &mut rng),
        &SwimConfig::default(),
        &[n(0), n(1)],
        rec,
        &mut out,
    );
    assert_eq!(node.swim().map(Swim::incarnation), Some(MAX_INCARNATION));
    assert!(
        out.effects()
            .iter()
            .any(|e| matches!(e, Effect::Event(NodeEvent::IncarnationExhausted { .. })))
    );
}

// ----- push-pull by digest ------------------------------------------------------------

fn sent(effects: &[Effect<SwimMsg>]) -> Vec<(NodeId, SwimMsg)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

/// Opens an exchange by digest with member 1; returns its seq.
fn open_sync(s: &mut Swim, rng: &mut Rng) -> u64 {
    let mut out = Out::new();
    s.anti_entropy_with(n(1), &mut Cx::new(n(0), Time::from_secs(1), rng), &mut out);
    let (to, msg) = sent(out.effects()).remove(0);
    assert_eq!(to, n(1));
    let SwimBody::SyncDigest { seq, .. } = msg.body else {
        panic!("{msg:?}")
    };
    seq
}

fn entries(seq: u64, bucket_count: u32, buckets: Vec<u32>, reply: bool) -> SwimBody {
    SwimBody::SyncEntries {
        seq,
        bucket_count,
        buckets,
        reply,
        members: vec![MemberSnapshot {
            member: n(77),
            address: "n77/a".into(),
            incarnation: 0,
            state: MemberState::Alive,
        }],
    }
}

#[test]
fn digest_steps_nobody_asked_for_are_refused() {
    let (mut s, mut rng) = member(0, 3);
    // Bucket hashes and rows with no exchange open: an amplification attempt (rows for
    // a few bytes) and a forged table.
    let body = SwimBody::SyncBuckets {
        seq: 5,
        hashes: vec![0; 4],
    };
    assert!(sent(&deliver(&mut s, &mut rng, 1, body, Vec::new())).is_empty());
    assert!(
        sent(&deliver(
            &mut s,
            &mut rng,
            1,
            entries(5, 4, vec![], true),
            Vec::new()
        ))
        .is_empty()
    );
    assert!(s.member(n(77)).is_none());
    assert_eq!(s.counters().syncs_refused, 2);

    // An exchange open with member 1: not from member 2, not with another seq, not a
    // bucket count that is not a power of two or above the bound; once, from 1.
    let seq = open_sync(&mut s, &mut rng);
    let buckets = |seq, len| SwimBody::SyncBuckets {
        seq,
        hashes: vec![7; len],
    };
    for (from, body) in [
        (2, buckets(seq, 4)),
        (1, buckets(seq + 1, 4)),
        (1, buckets(seq, 0)),
        (1, buckets(seq, 3)),
        (1, buckets(seq, MAX_DIGEST_BUCKETS * 2)),
    ] {
        assert!(
            sent(&deliver(&mut s, &mut rng, from, body.clone(), Vec::new())).is_empty(),
            "{from}: {body:?}"
        );
    }
    assert_eq!(s.counters().syncs_refused, 7);
    let effects = deliver(&mut s, &mut rng, 1, buckets(seq, 4), Vec::new());
    assert!(matches!(
        sent(&effects)[..],
        [(to, SwimMsg { body: SwimBody::SyncEntries { reply: false, .. }, .. })] if to == n(1)
    ));
    assert!(sent(&deliver(&mut s, &mut rng, 1, buckets(seq, 4), Vec::new())).is_empty());
    assert_eq!(s.counters().syncs_refused, 8);
    // The reply: from 2 refused; from 1 merged, once.
    deliver(
        &mut s,
        &mut rng,
        2,
        entries(seq, 4, vec![], true),
        Vec::new(),
    );
    assert!(s.member(n(77)).is_none());
    deliver(
        &mut s,
        &mut rng,
        1,
        entries(seq, 4, vec![], true),
        Vec::new(),
    );
    assert!(s.member(n(77)).is_some());
    deliver(
        &mut s,
        &mut rng,
        1,
        entries(seq, 4, vec![], true),
        Vec::new(),
    );
    assert_eq!(s.counters().syncs_refused, 10);
}

#[test]
fn malformed_bucket_requests_are_refused_and_valid_ones_bounded() {
    let (mut s, mut rng) = member(0, 40);
    for (count, buckets) in [
        (0, vec![]),
        (3, vec![0]),
        (512, vec![0]),
        (u32::MAX, vec![0]),
        (4, vec![2, 1]),
        (4, vec![1, 1]),
        (4, vec![0, 4]),
        (4, vec![u32::MAX]),
    ] {
        let body = entries(1, count, buckets.clone(), false);
        let effects = deliver(&mut s, &mut rng, 1, body, Vec::new());
        assert!(sent(&effects).is_empty(), "{count} {buckets:?}");
    }
    assert_eq!(s.counters().syncs_refused, 8);
    assert!(s.member(n(77)).is_none(), "a refused request is not merged");
    // A valid request is answered with the rows of the buckets named, no more than
    // `max_push_pull_entries`.
    let effects = deliver(
        &mut s,
        &mut rng,
        1,
        entries(1, 1, vec![0], false),
        Vec::new(),
    );
    let [(_, reply)] = &sent(&effects)[..] else {
        panic!("{effects:?}")
    };
    let SwimBody::SyncEntries {
        reply: true,
        members,
        ..
    } = &reply.body
    else {
        panic!("{reply:?}")
    };
    assert_eq!(members.len(), 41, "one bucket: the whole table");
    assert!(s.member(n(77)).is_some());
}

// ----- fuzzing ------------------------------------------------------------------------

/// Members of the fuzzed cluster.
const MEMBERS: u32 = 5;
/// Forged messages per case.
const INPUTS_PER_CASE: u64 = 400;
/// Forged messages of the test `cargo test` runs.
const DEFAULT_INPUTS: u64 = 12_000;
/// Forged messages of the ignored long run, unless `KVLAB_FUZZ_INPUTS` says otherwise.
const LONG_INPUTS: u64 = 2_000_000;

/// An "interesting" u64: an extreme, a bound and its neighbours, or anything.
fn pick(rng: &mut Rng, near: u64) -> u64 {
    const EXTREMES: [u64; 9] = [
        0,
        1,
        u64::MAX,
        u64::MAX - 1,
        MAX_INCARNATION,
        MAX_INCARNATION + 1,
        MAX_INCARNATION_JUMP,
        MAX_INCARNATION_JUMP + 1,
        1 << 63,
    ];
    match rng.random_range(0..10) {
        0..3 => EXTREMES[rng.random_range(0..EXTREMES.len())],
        3..7 => near.saturating_add(rng.random_range(0..3)),
        7..9 => rng.random_range(0..8),
        _ => rng.random(),
    }
}

fn any_member(rng: &mut Rng) -> NodeId {
    match rng.random_range(0..10) {
        0 => n(rng.random()),
        1 => n(MEMBERS + rng.random_range(0..50)),
        _ => n(rng.random_range(0..MEMBERS)),
    }
}

fn address(rng: &mut Rng) -> String {
    match rng.random_range(0..20) {
        0 => "x".repeat(MAX_ADDRESS_BYTES + 1),
        1 => String::new(),
        _ => format!("forged/{}", rng.random_range(0..4)),
    }
}

fn random_update(rng: &mut Rng, near: u64) -> Update {
    let member = any_member(rng);
    let incarnation = pick(rng, near);
    match rng.random_range(0..4) {
        0 => Update::Alive {
            member,
            incarnation,
            address: address(rng),
        },
        1 => Update::Suspect {
            member,
            incarnation,
            from: any_member(rng),
        },
        2 => Update::Dead {
            member,
            incarnation,
            from: any_member(rng),
        },
        _ => Update::Left {
            member,
            incarnation,
        },
    }
}

fn random_snapshot(rng: &mut Rng, near: u64) -> MemberSnapshot {
    MemberSnapshot {
        member: any_member(rng),
        address: address(rng),
        incarnation: pick(rng, near),
        state: [
            MemberState::Alive,
            MemberState::Suspect,
            MemberState::Dead,
            MemberState::Left,
        ][rng.random_range(0..4)],
    }
}

/// A bucket count: valid ones, and the ones a receiver must refuse.
fn bucket_count(rng: &mut Rng) -> u32 {
    const COUNTS: [u32; 9] = [0, 1, 2, 3, 4, 255, 256, 512, u32::MAX];
    COUNTS[rng.random_range(0..COUNTS.len())]
}

fn random_msg(rng: &mut Rng, near: u64) -> SwimMsg {
    let body = match rng.random_range(0..9) {
        0 => SwimBody::Ping {
            seq: pick(rng, 1),
            target: any_member(rng),
        },
        1 => SwimBody::Ack { seq: pick(rng, 1) },
        2 => SwimBody::PingReq {
            seq: pick(rng, 1),
            target: any_member(rng),
        },
        3 => SwimBody::Nack { seq: pick(rng, 1) },
        4 => SwimBody::PushPull {
            join: rng.random(),
            reply: rng.random(),
            members: (0..rng.random_range(0..6))
                .map(|_| random_snapshot(rng, near))
                .collect(),
        },
        6 => SwimBody::SyncDigest {
            seq: pick(rng, 1),
            root: rng.random(),
        },
        7 => SwimBody::SyncBuckets {
            seq: pick(rng, 1),
            hashes: (0..bucket_count(rng).min(600))
                .map(|_| rng.random())
                .collect(),
        },
        8 => SwimBody::SyncEntries {
            seq: pick(rng, 1),
            bucket_count: bucket_count(rng),
            buckets: (0..rng.random_range(0..5))
                .map(|_| match rng.random_range(0..3) {
                    0 => rng.random(),
                    _ => rng.random_range(0..8),
                })
                .collect(),
            reply: rng.random(),
            members: (0..rng.random_range(0..6))
                .map(|_| random_snapshot(rng, near))
                .collect(),
        },
        _ => SwimBody::Gossip,
    };
    let updates = (0..rng.random_range(0..5))
        .map(|_| random_update(rng, near))
        .collect();
    SwimMsg { body, updates }
}

/// A real message with a field or two replaced by an interesting value.
fn mutate(rng: &mut Rng, mut m: SwimMsg, near: u64) -> SwimMsg {
    if let Some(u) = m.updates.first_mut() {
        let v = pick(rng, near);
        match u {
            Update::Alive { incarnation, .. }
            | Update::Suspect { incarnation, .. }
            | Update::Dead { incarnation, .. }
            | Update::Left { incarnation, .. } => *incarnation = v,
        }
    } else {
        m.updates.push(random_update(rng, near));
    }
    match &mut m.body {
        SwimBody::Ping { seq, .. }
        | SwimBody::Ack { seq }
        | SwimBody::PingReq { seq, .. }
        | SwimBody::Nack { seq } => *seq = pick(rng, *seq),
        SwimBody::PushPull { members, .. } => {
            if let Some(e) = members.first_mut() {
                e.incarnation = pick(rng, near);
            }
        }
        SwimBody::SyncDigest { seq, root } => {
            *seq = pick(rng, *seq);
            *root ^= 1 << rng.random_range(0..64);
        }
        SwimBody::SyncBuckets { seq, hashes } => {
            *seq = pick(rng, *seq);
            if rng.random() {
                hashes.pop();
            }
        }
        SwimBody::SyncEntries {
            seq,
            bucket_count: count,
            members,
            reply,
            ..
        } => {
            *seq = pick(rng, *seq);
            *count = bucket_count(rng);
            *reply = rng.random();
            if let Some(e) = members.first_mut() {
                e.incarnation = pick(rng, near);
            }
        }
        SwimBody::Gossip => {}
    }
    m
}

fn forge(c: &Cluster, rng: &mut Rng) -> SwimMsg {
    let near = c
        .swim(n(rng.random_range(0..MEMBERS)))
        .map_or(0, Swim::incarnation);
    match rng.random_range(0..10) {
        0..5 => random_msg(rng, near),
        5..7 => {
            for _ in 0..64 {
                let len = rng.random_range(1..40);
                let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                if let Ok(m) = postcard::from_bytes::<SwimMsg>(&bytes) {
                    return m;
                }
            }
            random_msg(rng, near)
        }
        _ if c.sent_sample.is_empty() => random_msg(rng, near),
        7..9 => {
            let k = rng.random_range(0..c.sent_sample.len());
            mutate(rng, c.sent_sample[k].clone(), near)
        }
        _ => {
            let k = rng.random_range(0..c.sent_sample.len());
            let mut bytes = postcard::to_allocvec(&c.sent_sample[k]).expect("encodes");
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] = rng.random();
            }
            postcard::from_bytes(&bytes).unwrap_or_else(|_| random_msg(rng, near))
        }
    }
}

/// The table invariants no input may break.
fn check_tables(c: &Cluster) {
    for id in c.up_ids() {
        let Some(s) = c.swim(id) else { continue };
        assert!(s.incarnation() <= MAX_INCARNATION, "{id}");
        let mut live = 0;
        let mut count = 0;
        for m in s.members() {
            count += 1;
            assert!(m.incarnation <= MAX_INCARNATION, "{id} sees {m:?}");
            assert!(m.address.len() <= MAX_ADDRESS_BYTES, "{id} sees {m:?}");
            live += usize::from(m.state.is_live());
        }
        assert!(count <= MAX_MEMBERS);
        assert_eq!(live, s.live_count(), "{id}: live_count drifted");
    }
}

#[derive(Debug, Default)]
struct Totals {
    forged: u64,
    refused: u64,
    restarts: u64,
}

/// One case: a cluster that settles, a phase of forged messages interleaved with its
/// own traffic (and a crash/restart or two), then a quiet phase in which the real
/// members must agree again that every one of them is alive.
fn run_case(seed: u64, inputs: u64, t: &mut Totals) {
    let mut rng = seeded_rng(derive_seed(seed, "forge", 0));
    // Plausible forgeries (a death at the current incarnation, made-up live members, an
    // incarnation a jump ahead) are believed like real ones. The cluster heals them as
    // it heals a partition: push-pull with dead members refutes the deaths, and once
    // records are reclaimed, push-pull with forgotten seeds brings the sides together.
    let config = SwimConfig {
        push_pull_interval_ms: 5_000,
        dead_reclaim_ms: 20_000,
        // One case in four exchanges whole tables (forged digest steps still arrive).
        push_pull_digest: seed % 4 != 0,
        ..SwimConfig::default()
    };
    let mut c = Cluster::new(MEMBERS, seed, config);
    c.sample_sent = true;
    c.run_for(Duration::from_secs(5));
    for _ in 0..inputs {
        let to = n(rng.random_range(0..MEMBERS));
        let from = any_member(&mut rng);
        let m = forge(&c, &mut rng);
        c.inject(from, to, &m);
        t.forged += 1;
        c.run_for(Duration::from_millis(rng.random_range(0..50)));
        check_tables(&c);
        if rng.random_range(0..200) == 0 {
            let victim = n(rng.random_range(0..MEMBERS));
            c.crash(victim);
            c.run_for(Duration::from_millis(100));
            c.restart(victim);
            t.restarts += 1;
        }
    }
    for id in c.up_ids() {
        if let Some(s) = c.swim(id) {
            t.refused += s.counters().updates_refused;
        }
    }
    // Quiet: forged members die and are reclaimed, real ones refute what was said.
    let members: Vec<NodeId> = c.ids();
    let deadline = c.now() + Duration::from_secs(120);
    let converged = c.run_until_true(deadline, Duration::from_secs(1), |c| {
        members.iter().all(|&m| c.all_see(m, MemberState::Alive))
    });
    check_tables(&c);
    if converged.is_none() {
        let views: Vec<String> = c
            .up_ids()
            .into_iter()
            .filter_map(|id| {
                let s = c.swim(id)?;
                let rows: Vec<String> = s
                    .members()
                    .filter(|m| m.id.0 < MEMBERS)
                    .map(|m| format!("{}:{:?}@{}", m.id, m.state, m.incarnation))
                    .collect();
                Some(format!(
                    "{id} (inc {}, joined {}, left {}, {} members): {}\n  {:?}",
                    s.incarnation(),
                    s.is_joined(),
                    s.has_left(),
                    s.members().count(),
                    rows.join(" "),
                    s.counters()
                ))
            })
            .collect();
        panic!(
            "real members did not agree on each other within 120 s of quiet:\n{}",
            views.join("\n")
        );
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn fuzz(label: &str, inputs: u64) {
    let start = Instant::now();
    let cases: Vec<u64> = match env_u64("KVLAB_FUZZ_SEED") {
        Some(seed) => vec![seed],
        None => (0..inputs.div_ceil(INPUTS_PER_CASE))
            .map(|k| derive_seed(0x5eed, label, k))
            .collect(),
    };
    let mut t = Totals::default();
    for &seed in &cases {
        if catch_unwind(AssertUnwindSafe(|| run_case(seed, INPUTS_PER_CASE, &mut t))).is_err() {
            panic!(
                "swim fuzz case failed (see the panic above)\n\
                 reproduce: KVLAB_FUZZ_SEED={seed} cargo test -p kvlab-swim --lib hostile -- --include-ignored"
            );
        }
    }
    println!(
        "swim fuzz: {} forged messages in {} cases, {:.1} s: {t:?}",
        cases.len() as u64 * INPUTS_PER_CASE,
        cases.len(),
        start.elapsed().as_secs_f64()
    );
    if cases.len() > 1 {
        assert!(t.refused > 0, "no forged update was ever refused: {t:?}");
    }
}

#[test]
fn swim_members_survive_arbitrary_messages_and_converge_after() {
    fuzz(
        "swim",
        env_u64("KVLAB_FUZZ_INPUTS").unwrap_or(DEFAULT_INPUTS),
    );
}

#[test]
#[ignore = "long: millions of inputs, run with --release"]
fn swim_members_survive_millions_of_arbitrary_messages() {
    fuzz(
        "swim-long",
        env_u64("KVLAB_FUZZ_INPUTS").unwrap_or(LONG_INPUTS),
    );
}

//! Tests of the `raft` system: a few hand-written scenarios in the simulator, unit tests of
//! the effect order, and a randomized search with the linearizability checker.

use std::collections::BTreeMap;
use std::time::Duration;

use kvlab_checker::{CheckOptions, EventType, HistoryEvent, ModelKind, OpFn, Verdict};
use kvlab_sim::{FaultRule, Sim, SimConfig, SimOutput};
use kvlab_types::{
    AdminAction, AdminCommand, ClientError, ClientRequest, ClientResponse, Cx, Effect, KvOp,
    MAX_KEY_BYTES, NodeId, OpOutput, Out, Protocol, Recovery, RequestId, Time, derive_seed,
    seeded_rng,
};
use rand::RngExt;

use super::*;

pub(super) const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

pub(super) fn write(client: u64, seq: u64, key: &str, value: i64) -> ClientRequest {
    ClientRequest {
        id: RequestId { client, seq },
        op: KvOp::Write {
            key: key.into(),
            value,
        },
    }
}

pub(super) fn read(client: u64, seq: u64, key: &str) -> ClientRequest {
    ClientRequest {
        id: RequestId { client, seq },
        op: KvOp::Read { key: key.into() },
    }
}

pub(super) fn sim(seed: u64, cfg: RaftKvConfig) -> Sim<RaftKv> {
    Sim::<RaftKv>::new(SimConfig::default(), seed, &NODES, cfg).expect("valid sim config")
}

/// Runs `ms` more milliseconds and returns the replies, by request id.
pub(super) fn run_ms(sim: &mut Sim<RaftKv>, ms: u64) -> BTreeMap<RequestId, ClientResponse> {
    let mut out = Vec::new();
    let until = sim.now() + Duration::from_millis(ms);
    sim.run_until(until, &mut out).expect("simulation runs");
    out.into_iter()
        .filter_map(|o| match o {
            SimOutput::Reply { response, .. } => Some((response.id, response)),
            SimOutput::Event { .. } => None,
        })
        .collect()
}

/// The leader, once exactly one up node leads the highest term.
pub(super) fn leader(sim: &Sim<RaftKv>) -> Option<NodeId> {
    let leaders: Vec<NodeId> = NODES
        .iter()
        .copied()
        .filter(|&n| sim.node(n).is_some_and(|p| p.role() == Role::Leader))
        .collect();
    let top = NODES
        .iter()
        .filter_map(|&n| sim.node(n).map(RaftKv::term))
        .max()?;
    leaders
        .into_iter()
        .find(|&n| sim.node(n).is_some_and(|p| p.term() == top))
}

pub(super) fn wait_for_leader(sim: &mut Sim<RaftKv>) -> NodeId {
    for _ in 0..100 {
        run_ms(sim, 50);
        if let Some(l) = leader(sim) {
            // Let the leader's no-op commit so that it serves at once.
            run_ms(sim, 50);
            return l;
        }
    }
    panic!("no leader within 5 s (seed {})", sim.seed());
}

#[test]
fn three_nodes_elect_a_leader_and_serve_writes_and_reads_at_every_node() {
    let mut s = sim(1, RaftKvConfig::default());
    let mut outs = Vec::new();
    s.run_until(Time::from_secs(2), &mut outs).expect("runs");
    let elected = outs
        .iter()
        .filter(|o| matches!(o, SimOutput::Event { event, .. } if event.kind() == "leader_elected"))
        .count();
    assert!(elected >= 1, "no leader_elected event: {outs:?}");
    let l = leader(&s).expect("a leader after 2 s");
    for (k, &n) in NODES.iter().enumerate() {
        s.submit(n, write(n.0.into(), 1, &format!("k{k}"), 10 + k as i64));
    }
    let replies = run_ms(&mut s, 500);
    assert_eq!(replies.len(), 3, "leader {l}: {replies:?}");
    assert!(replies.values().all(|r| r.result == Ok(OpOutput::Done)));
    for (k, &n) in NODES.iter().enumerate() {
        s.submit(n, read(n.0.into(), 2, &format!("k{}", (k + 1) % 3)));
    }
    let replies = run_ms(&mut s, 500);
    for (k, &n) in NODES.iter().enumerate() {
        let id = RequestId {
            client: n.0.into(),
            seq: 2,
        };
        let expect = 10 + ((k + 1) % 3) as i64;
        assert_eq!(
            replies.get(&id).map(|r| r.result.clone()),
            Some(Ok(OpOutput::Read(Some(expect)))),
            "read at {n}"
        );
    }
    // Every replica applied the same writes.
    run_ms(&mut s, 200);
    let stores: Vec<_> = NODES
        .iter()
        .map(|&n| s.node(n).and_then(|p| p.store_of(DEFAULT_GROUP).cloned()))
        .collect();
    assert!(stores.windows(2).all(|w| w[0] == w[1]), "{stores:?}");
}

#[test]
fn leader_crash_elects_a_new_leader_acknowledged_writes_survive_and_restart_recovers() {
    // Compact often, so that the restart replays a saved WAL image and the crashed node
    // may have to catch up from a snapshot.
    let cfg = RaftKvConfig {
        snapshot_every_entries: 4,
        ..RaftKvConfig::default()
    };
    let mut s = sim(7, cfg);
    let old = wait_for_leader(&mut s);
    let mut acked = BTreeMap::new();
    for seq in 1..=10u64 {
        let key = format!("k{}", seq % 4);
        s.submit(old, write(1, seq, &key, seq as i64));
        let replies = run_ms(&mut s, 100);
        let r = replies
            .get(&RequestId { client: 1, seq })
            .expect("write answered");
        assert_eq!(r.result, Ok(OpOutput::Done));
        acked.insert(key, seq as i64);
    }
    s.crash(old);
    let new = wait_for_leader(&mut s);
    assert_ne!(new, old);
    // More writes while the old leader is down, so that it lags behind a compaction.
    for seq in 11..=20u64 {
        let key = format!("k{}", seq % 4);
        s.submit(new, write(1, seq, &key, seq as i64));
        let replies = run_ms(&mut s, 100);
        let r = replies
            .get(&RequestId { client: 1, seq })
            .expect("write answered");
        assert_eq!(r.result, Ok(OpOutput::Done));
        acked.insert(key, seq as i64);
    }
    for (i, (key, value)) in acked.iter().enumerate() {
        s.submit(new, read(2, i as u64 + 1, key));
        let replies = run_ms(&mut s, 100);
        let r = replies.get(&RequestId {
            client: 2,
            seq: i as u64 + 1,
        });
        assert_eq!(
            r.map(|r| r.result.clone()),
            Some(Ok(OpOutput::Read(Some(*value)))),
            "{key}"
        );
    }
    s.restart(old).expect("restart");
    run_ms(&mut s, 1_000);
    let restarted = s.node(old).expect("up");
    // It compacted before the crash or caught up from the new leader's snapshot.
    assert!(
        restarted
            .group()
            .is_some_and(|g| g.snapshot_meta().index > 0)
    );
    assert_eq!(restarted.poisoned(), None);
    assert_eq!(
        restarted.applied_index(),
        s.node(new).expect("up").applied_index()
    );
    assert_eq!(
        restarted.store_of(DEFAULT_GROUP),
        s.node(new).expect("up").store_of(DEFAULT_GROUP)
    );
    for (key, value) in &acked {
        assert_eq!(
            restarted.store_of(DEFAULT_GROUP).and_then(|kv| kv.get(key)),
            Some(*value)
        );
    }
    // The restarted node serves again (forwarding to the leader).
    s.submit(old, read(3, 1, "k0"));
    let replies = run_ms(&mut s, 300);
    assert_eq!(
        replies
            .get(&RequestId { client: 3, seq: 1 })
            .map(|r| r.result.clone()),
        Some(Ok(OpOutput::Read(acked.get("k0").copied())))
    );
}

#[test]
fn partitioned_old_leader_cannot_serve_a_read_index_read() {
    let mut s = sim(3, RaftKvConfig::default());
    let old = wait_for_leader(&mut s);
    s.submit(old, write(1, 1, "k", 1));
    assert_eq!(run_ms(&mut s, 200).len(), 1);
    let others: Vec<NodeId> = NODES.iter().copied().filter(|&n| n != old).collect();
    s.add_rule(FaultRule::Partition {
        a: vec![old],
        b: others.clone(),
    });
    // The majority elects a new leader and overwrites the value.
    let mut new = None;
    for _ in 0..40 {
        run_ms(&mut s, 50);
        new = others
            .iter()
            .copied()
            .find(|&n| s.node(n).is_some_and(|p| p.role() == Role::Leader));
        if new.is_some() {
            break;
        }
    }
    let new = new.expect("majority elects a leader");
    s.submit(new, write(1, 2, "k", 2));
    run_ms(&mut s, 200);
    // The old leader may still believe it leads, but it cannot confirm it with a quorum.
    s.submit(old, read(2, 1, "k"));
    let replies = run_ms(&mut s, 2_000);
    let r = replies
        .get(&RequestId { client: 2, seq: 1 })
        .expect("read answered");
    assert!(
        matches!(r.result, Err(ClientError::Unavailable { .. })),
        "old leader answered {:?}",
        r.result
    );
}

#[test]
fn deposed_leader_answers_indeterminate_for_a_write_it_could_not_commit() {
    let mut s = sim(5, RaftKvConfig::default());
    let old = wait_for_leader(&mut s);
    let others: Vec<NodeId> = NODES.iter().copied().filter(|&n| n != old).collect();
    s.add_rule(FaultRule::Partition {
        a: vec![old],
        b: others,
    });
    // Still leader for a moment: it proposes, but no quorum can acknowledge.
    s.submit(old, write(1, 1, "k", 1));
    let replies = run_ms(&mut s, 3_000);
    let r = replies
        .get(&RequestId { client: 1, seq: 1 })
        .expect("answered");
    assert!(
        matches!(r.result, Err(ClientError::Indeterminate { .. })),
        "{:?}",
        r.result
    );
    // After healing, the entry was overwritten: nobody applied it.
    s.heal();
    run_ms(&mut s, 1_000);
    for n in NODES {
        assert_eq!(
            s.node(n)
                .and_then(|p| p.store_of(DEFAULT_GROUP))
                .and_then(|kv| kv.get("k")),
            None
        );
    }
}

/// Delivers the node's messages to itself (a one-node group's only traffic: the
/// leader's `LocalAppended` after its sync) until there are none; returns every effect.
fn deliver_to_self(
    node: &mut RaftKv,
    me: NodeId,
    now: Time,
    rng: &mut kvlab_types::Rng,
    out: &mut Out<RaftKvMsg>,
) -> Vec<Effect<RaftKvMsg>> {
    let mut all = Vec::new();
    for _ in 0..100 {
        let effects: Vec<_> = out.drain().collect();
        if effects.is_empty() {
            break;
        }
        for e in effects {
            match e {
                Effect::Send { to, msg } if to == me => {
                    all.push(Effect::Sync);
                    node.on_msg(&mut Cx::new(me, now, rng), me, msg, out);
                }
                other => all.push(other),
            }
        }
    }
    all
}

fn kinds(effects: &[Effect<RaftKvMsg>]) -> Vec<&'static str> {
    effects
        .iter()
        .map(|e| match e {
            Effect::Persist { .. } => "persist",
            Effect::Sync => "sync",
            Effect::Reply(_) => "reply",
            _ => "other",
        })
        .filter(|k| *k != "other")
        .collect()
}

#[test]
fn effects_of_a_write_are_persist_sync_then_reply() {
    for parallel in [false, true] {
        let mut rng = seeded_rng(1);
        let mut out = Out::new();
        let me = NodeId(1);
        let cfg = RaftKvConfig {
            parallel_leader_append: parallel,
            ..RaftKvConfig::default()
        };
        let mut node = RaftKv::boot(
            &mut Cx::new(me, Time::ZERO, &mut rng),
            &cfg,
            &[me],
            Recovery::default(),
            &mut out,
        );
        let mut now = Time::ZERO;
        while node.role() != Role::Leader {
            now = now + Duration::from_millis(10);
            node.on_timer(&mut Cx::new(me, now, &mut rng), TICK_TIMER, &mut out);
            deliver_to_self(&mut node, me, now, &mut rng, &mut out);
        }
        out.drain();
        node.on_client(
            &mut Cx::new(me, now, &mut rng),
            write(1, 1, "k", 5),
            &mut out,
        );
        let in_step = kinds(out.effects());
        // In parallel mode the leader counts itself only when its LocalAppended comes
        // back, after its sync: the reply is in a later step, never in this one.
        assert_eq!(in_step.contains(&"reply"), !parallel, "{in_step:?}");
        // A self-delivered message stands for "after the sync" (it was held for one).
        let kinds = kinds(&deliver_to_self(&mut node, me, now, &mut rng, &mut out));
        let first_sync = kinds.iter().position(|k| *k == "sync").expect("a sync");
        let reply = kinds.iter().position(|k| *k == "reply").expect("a reply");
        assert!(kinds[..first_sync].contains(&"persist"), "{kinds:?}");
        assert!(first_sync < reply, "{kinds:?}");
        assert_eq!(
            node.store_of(DEFAULT_GROUP).and_then(|kv| kv.get("k")),
            Some(5)
        );
    }
}

#[test]
fn compaction_saves_a_wal_image_that_a_restart_recovers_from() {
    let me = NodeId(1);
    let cfg = RaftKvConfig {
        snapshot_every_entries: 5,
        ..RaftKvConfig::default()
    };
    let mut rng = seeded_rng(1);
    let mut out = Out::new();
    let mut node = RaftKv::boot(
        &mut Cx::new(me, Time::ZERO, &mut rng),
        &cfg,
        &[me],
        Recovery::default(),
        &mut out,
    );
    let mut now = Time::ZERO;
    while node.role() != Role::Leader {
        now = now + Duration::from_millis(10);
        node.on_timer(&mut Cx::new(me, now, &mut rng), TICK_TIMER, &mut out);
    }
    let mut effects = deliver_to_self(&mut node, me, now, &mut rng, &mut out);
    for seq in 1..=13u64 {
        let req = write(1, seq, &format!("k{}", seq % 3), seq as i64);
        node.on_client(&mut Cx::new(me, now, &mut rng), req, &mut out);
        effects.extend(deliver_to_self(&mut node, me, now, &mut rng, &mut out));
    }
    // A disk that keeps everything: a saved snapshot discards the records before it.
    let mut disk = Recovery::default();
    let mut snapshots = 0;
    for e in effects {
        match e {
            Effect::Persist { group, record } => {
                disk.groups.entry(group).or_default().records.push(record)
            }
            Effect::SaveSnapshot { group, data } => {
                snapshots += 1;
                let g = disk.groups.entry(group).or_default();
                g.snapshot = Some(data);
                g.records.clear();
            }
            _ => {}
        }
    }
    assert!(snapshots >= 2, "{snapshots} snapshots");
    let mut out = Out::new();
    let mut restarted = RaftKv::boot(&mut Cx::new(me, now, &mut rng), &cfg, &[me], disk, &mut out);
    assert_eq!(restarted.poisoned(), None);
    assert_eq!(restarted.term(), node.term());
    // The commit index is only a hint riding with later records: at boot the node has
    // applied what the last one covered; once it leads again, everything.
    assert!(restarted.applied_index() <= node.applied_index());
    while restarted.role() != Role::Leader {
        now = now + Duration::from_millis(10);
        restarted.on_timer(&mut Cx::new(me, now, &mut rng), TICK_TIMER, &mut out);
    }
    deliver_to_self(&mut restarted, me, now, &mut rng, &mut out);
    assert!(
        restarted.applied_index() > node.applied_index(),
        "its no-op too"
    );
    assert_eq!(
        restarted.store_of(DEFAULT_GROUP),
        node.store_of(DEFAULT_GROUP)
    );
}

#[test]
fn a_snapshot_larger_than_a_wal_record_is_saved_installed_and_recovered() {
    // The report: a kvlab node died with `wal record of 4216801 bytes exceeds
    // MAX_RECORD_BYTES` once its state machine outgrew one log record, because each
    // snapshot (a compaction, or one installed from the leader) was also written as one
    // log record. Here the store holds about 4.9 MB: the leader compacts it, a follower
    // that was down installs it in chunks, and every node restarts from it.
    let cfg = RaftKvConfig {
        snapshot_every_entries: 400,
        ..RaftKvConfig::default()
    };
    let mut s = sim(31, cfg);
    let l = wait_for_leader(&mut s);
    let lagging = NODES.iter().copied().find(|&n| n != l).expect("a follower");
    s.crash(lagging);
    const KEYS: u64 = 1_200;
    let key = |i: u64| format!("{i:06}{}", "x".repeat(MAX_KEY_BYTES - 6));
    for i in 0..KEYS {
        s.submit(l, write(i + 1, 1, &key(i), i as i64));
    }
    let replies = run_ms(&mut s, 3_000);
    let done = replies
        .values()
        .filter(|r| r.result == Ok(OpOutput::Done))
        .count();
    let first_err = replies.values().find(|r| r.result != Ok(OpOutput::Done));
    assert_eq!(
        done, KEYS as usize,
        "every write acknowledged: {first_err:?}"
    );
    s.restart(lagging).expect("the follower restarts");
    run_ms(&mut s, 3_000);
    for &n in &NODES {
        s.crash(n);
        s.restart(n).expect("restarts from its snapshot");
        wait_for_leader(&mut s);
    }
    run_ms(&mut s, 1_000);
    for &n in &NODES {
        let node = s.node(n).expect("up");
        assert_eq!(node.poisoned(), None, "{n}");
        let store = node.store_of(DEFAULT_GROUP).expect("a store");
        for i in [0, KEYS / 2, KEYS - 1] {
            assert_eq!(store.get(&key(i)), Some(i as i64), "{n} key {i}");
        }
        let image = postcard::to_allocvec(store).expect("encodes");
        assert!(
            image.len() > kvlab_storage::MAX_RECORD_BYTES,
            "{}",
            image.len()
        );
    }
}

#[test]
fn undecodable_wal_refuses_to_serve_and_reports_it() {
    let mut rng = seeded_rng(1);
    let mut out = Out::new();
    let me = NodeId(1);
    let rec = Recovery::of_group(
        DEFAULT_GROUP,
        None,
        vec![vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff]],
    );
    let mut node = RaftKv::boot(
        &mut Cx::new(me, Time::ZERO, &mut rng),
        &RaftKvConfig::default(),
        &NODES,
        rec,
        &mut out,
    );
    assert!(node.poisoned().is_some());
    assert!(
        out.effects()
            .iter()
            .any(|e| matches!(e, Effect::Event(NodeEvent::RecoveryFailed { .. })))
    );
    out.drain();
    node.on_client(
        &mut Cx::new(me, Time::ZERO, &mut rng),
        read(1, 1, "k"),
        &mut out,
    );
    assert!(matches!(
        out.effects(),
        [Effect::Reply(ClientResponse {
            result: Err(ClientError::Unavailable { .. }),
            ..
        })]
    ));
}

#[test]
fn config_parses_read_mode_and_rejects_unknown_fields() {
    let cfg: RaftKvConfig =
        serde_json::from_str(r#"{"read_mode":"log","tick_interval_ms":5}"#).expect("parses");
    assert_eq!(cfg.read_mode, ReadMode::Log);
    assert_eq!(cfg.tick_interval_ms, 5);
    assert!(serde_json::from_str::<RaftKvConfig>(r#"{"tick_ms":5}"#).is_err());
    let bad = RaftKvConfig {
        request_timeout_ms: 0,
        ..RaftKvConfig::default()
    };
    assert!(matches!(
        bad.validate(),
        Err(RaftKvError::InvalidConfig {
            field: "request_timeout_ms",
            ..
        })
    ));
}

// ----- randomized search --------------------------------------------------------------

/// One workload client: at most one request in flight; after an indeterminate outcome
/// it continues as a new history process.
#[derive(Debug)]
struct TestClient {
    client: u64,
    process: u64,
    seq: u64,
    next_at: Time,
    outstanding: Option<(ClientRequest, NodeId, Time)>,
}

/// A history event before indices are assigned: time, completion-before-invoke at equal
/// times, then the event.
type Timed = (Time, u8, HistoryEvent);

fn history_event(
    process: u64,
    kind: EventType,
    op: &KvOp,
    node: NodeId,
    result: Option<&Result<OpOutput, ClientError>>,
) -> HistoryEvent {
    use serde_json::{Value as J, json};
    let (f, invoke_value) = match op {
        KvOp::Read { .. } => (OpFn::Read, J::Null),
        KvOp::Write { value, .. } => (OpFn::Write, json!(value)),
        KvOp::Cas { expected, new, .. } => (OpFn::Cas, json!([expected, new])),
        KvOp::Delete { .. } => (OpFn::Delete, J::Null),
        KvOp::Etcd(_) | KvOp::Txn { .. } => {
            unreachable!("these workloads issue no etcd requests and no transactions")
        }
    };
    let value = match result {
        Some(Ok(OpOutput::Read(v))) => json!(v),
        _ => invoke_value,
    };
    HistoryEvent {
        index: 0,
        time_ns: 0,
        process,
        kind,
        f,
        key: Some(op.key().clone()),
        value,
        node: Some(node.0),
        error: result
            .and_then(|r| r.as_ref().err())
            .map(ToString::to_string),
    }
}

/// Asserts Election Safety (Raft §5.2, Figure 3): at most one leader per term, over
/// everything observed during a run.
#[derive(Debug, Default)]
struct LeaderPerTerm {
    seen: BTreeMap<u64, NodeId>,
}

impl LeaderPerTerm {
    fn observe(&mut self, s: &Sim<RaftKv>, seed: u64) {
        for n in NODES {
            let Some(p) = s.node(n).filter(|p| p.role() == Role::Leader) else {
                continue;
            };
            let first = *self.seen.entry(p.term()).or_insert(n);
            assert_eq!(first, n, "seed {seed}: two leaders in term {}", p.term());
        }
    }
}

/// Asserts that every node is up, applied the same index and holds the same store, and
/// that their logs agree on every committed entry still held (Log Matching, §5.3).
fn assert_converged(s: &Sim<RaftKv>, seed: u64) {
    let nodes: Vec<&RaftKv> = NODES
        .iter()
        .map(|&n| {
            s.node(n)
                .unwrap_or_else(|| panic!("seed {seed}: {n} is down"))
        })
        .collect();
    let applied: Vec<u64> = nodes.iter().map(|p| p.applied_index()).collect();
    assert!(
        applied.windows(2).all(|w| w[0] == w[1]),
        "seed {seed}: applied {applied:?}"
    );
    // Honest peers never send a message the validation refuses, whatever the faults
    // (loss, duplication, reordering, partitions, crashes that lose unsynced writes).
    let refused: Vec<u64> = nodes.iter().map(|p| p.refused_messages()).collect();
    assert!(
        refused.iter().all(|&r| r == 0),
        "seed {seed}: honest messages refused {refused:?}"
    );
    for p in &nodes[1..] {
        assert_eq!(
            p.store_of(DEFAULT_GROUP),
            nodes[0].store_of(DEFAULT_GROUP),
            "seed {seed}: stores differ"
        );
    }
    let groups: Vec<&RaftGroup> = nodes.iter().filter_map(|p| p.group()).collect();
    let commit = groups.iter().map(|g| g.commit_index()).min().unwrap_or(0);
    for i in 1..=commit {
        let terms: Vec<Option<u64>> = groups.iter().map(|g| g.entry(i).map(|e| e.term)).collect();
        let held: Vec<u64> = terms.iter().flatten().copied().collect();
        assert!(
            held.windows(2).all(|w| w[0] == w[1]),
            "seed {seed}: committed index {i} differs: {terms:?}"
        );
    }
}

const RANDOM_CLIENTS: u64 = 4;
const RANDOM_KEYS: u64 = 3;
const RANDOM_STEP_MS: u64 = 5;
const RANDOM_FAULT_MS: u64 = 4_000;
const RANDOM_HEALED_MS: u64 = 3_000;
const RANDOM_CLIENT_TIMEOUT_MS: u64 = 1_500;

/// The state of one [`run_random`] seed.
struct RandomRun {
    s: Sim<RaftKv>,
    rng: kvlab_types::Rng,
    clients: Vec<TestClient>,
    next_process: u64,
    next_value: i64,
    last_written: BTreeMap<String, i64>,
    timed: Vec<Timed>,
    next_fault: Time,
    healed: bool,
    ok_after_heal: usize,
}

/// Runs one seed: clients at every node, random partitions, crashes and restarts for
/// `fault_ms`, then a healed phase; returns the history and how many operations
/// succeeded after healing.
fn run_random(
    seed: u64,
    read_mode: ReadMode,
    unsafe_local_reads: bool,
) -> (Vec<HistoryEvent>, usize) {
    let cfg = RaftKvConfig {
        read_mode,
        unsafe_local_reads,
        snapshot_every_entries: 50,
        ..RaftKvConfig::default()
    };
    // A lossy, duplicating, reordering network on top of the nemesis: duplicated forwards
    // exercise the session table's at-most-once.
    let mut sim_cfg = SimConfig::default();
    sim_cfg.network.loss_probability = 0.02;
    sim_cfg.network.duplicate_probability = 0.02;
    sim_cfg.network.reorder_probability = 0.05;
    let mut r = RandomRun {
        s: Sim::<RaftKv>::new(sim_cfg, seed, &NODES, cfg).expect("valid sim config"),
        rng: seeded_rng(derive_seed(seed, "raft_kv_test", 0)),
        clients: (0..RANDOM_CLIENTS)
            .map(|c| TestClient {
                client: c + 1,
                process: c,
                seq: 0,
                next_at: Time::ZERO,
                outstanding: None,
            })
            .collect(),
        next_process: RANDOM_CLIENTS,
        next_value: 1,
        last_written: BTreeMap::new(),
        timed: Vec::new(),
        next_fault: Time::from_millis(500),
        healed: false,
        ok_after_heal: 0,
    };
    let end = Time::from_millis(RANDOM_FAULT_MS + RANDOM_HEALED_MS);
    let mut outs = Vec::new();
    let mut leaders = LeaderPerTerm::default();
    while r.s.now() < end {
        leaders.observe(&r.s, seed);
        r.nemesis();
        r.clients_act();
        outs.clear();
        let until = r.s.now() + Duration::from_millis(RANDOM_STEP_MS);
        if let Err(e) = r.s.run_until(until, &mut outs) {
            panic!("seed {seed}: simulation failed: {e}");
        }
        for o in outs.drain(..) {
            if let SimOutput::Reply { at, response, .. } = o {
                r.on_reply(at, response);
            }
        }
    }
    // Liveness: once healed, every replica converges to the same state.
    run_ms(&mut r.s, 1_000);
    assert_converged(&r.s, seed);
    // Stable sort: completions before invokes at the same instant, else emission order.
    r.timed.sort_by_key(|(t, o, _)| (*t, *o));
    let events = r
        .timed
        .into_iter()
        .enumerate()
        .map(|(i, (t, _, mut ev))| {
            ev.index = i as u64;
            ev.time_ns = t.as_nanos();
            ev
        })
        .collect();
    (events, r.ok_after_heal)
}

impl RandomRun {
    /// The heal at `RANDOM_FAULT_MS`, or the next random fault when one is due.
    fn nemesis(&mut self) {
        let now = self.s.now();
        if self.healed {
            return;
        }
        if now >= Time::from_millis(RANDOM_FAULT_MS) {
            self.s.heal();
            self.restart_all();
            self.healed = true;
            return;
        }
        if now < self.next_fault {
            return;
        }
        self.next_fault = now + Duration::from_millis(self.rng.random_range(100..400));
        // Half of the faults hit the leader, where the interesting bugs hide.
        let victim = match leader(&self.s) {
            Some(l) if self.rng.random_bool(0.5) => l,
            _ => NODES[self.rng.random_range(0..NODES.len())],
        };
        let rest: Vec<NodeId> = NODES.iter().copied().filter(|&n| n != victim).collect();
        match self.rng.random_range(0..6u32) {
            0 => {
                self.s.add_rule(FaultRule::Partition {
                    a: vec![victim],
                    b: rest,
                });
            }
            1 => self.s.heal(),
            5 => {
                self.s.add_rule(FaultRule::OneWay {
                    from: vec![victim],
                    to: rest,
                });
            }
            2 if NODES.iter().all(|&n| self.s.is_up(n)) => self.s.crash(victim),
            3 => self.restart_all(),
            _ => {}
        }
    }

    fn restart_all(&mut self) {
        for n in NODES {
            if !self.s.is_up(n) {
                self.s.restart(n).expect("restart");
            }
        }
    }

    /// Every client gives up a request past its timeout, and sends a new one when due.
    fn clients_act(&mut self) {
        let now = self.s.now();
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if let Some((req, node, invoked)) = &c.outstanding
                && now.saturating_since(*invoked) >= Duration::from_millis(RANDOM_CLIENT_TIMEOUT_MS)
            {
                let ev = history_event(c.process, EventType::Info, &req.op, *node, None);
                self.timed.push((now, 0, ev));
                c.outstanding = None;
                c.process = self.next_process;
                self.next_process += 1;
                c.next_at = now;
            }
            let c = &self.clients[i];
            if c.outstanding.is_none() && now >= c.next_at {
                self.send(i, now);
            }
        }
    }

    /// Client `i` sends a random operation on a random key to a random node.
    fn send(&mut self, i: usize, now: Time) {
        self.clients[i].seq += 1;
        let key = format!("k{}", self.rng.random_range(0..RANDOM_KEYS));
        let op = match self.rng.random_range(0..10u32) {
            0..=3 => KvOp::Read { key },
            4..=7 => {
                self.next_value += 1;
                KvOp::Write {
                    key,
                    value: self.next_value,
                }
            }
            8 => {
                self.next_value += 1;
                let expected = self.last_written.get(&key).copied();
                KvOp::Cas {
                    key,
                    expected,
                    new: self.next_value,
                }
            }
            _ => KvOp::Delete { key },
        };
        if let KvOp::Write { key, value }
        | KvOp::Cas {
            key, new: value, ..
        } = &op
        {
            self.last_written.insert(key.clone(), *value);
        }
        let node = NODES[self.rng.random_range(0..NODES.len())];
        let c = &mut self.clients[i];
        let req = ClientRequest {
            id: RequestId {
                client: c.client,
                seq: c.seq,
            },
            op,
        };
        self.timed.push((
            now,
            1,
            history_event(c.process, EventType::Invoke, &req.op, node, None),
        ));
        self.s.submit(node, req.clone());
        c.outstanding = Some((req, node, now));
    }

    /// A reply reached its client at `at` (a late answer to a request the client gave
    /// up on is dropped).
    fn on_reply(&mut self, at: Time, response: ClientResponse) {
        let Some(c) = self
            .clients
            .iter_mut()
            .find(|c| c.client == response.id.client)
        else {
            return;
        };
        if c.outstanding
            .as_ref()
            .is_none_or(|(req, _, _)| req.id != response.id)
        {
            return;
        }
        let Some((req, node, _)) = c.outstanding.take() else {
            return;
        };
        let kind = match &response.result {
            Ok(_) => EventType::Ok,
            Err(e) if e.is_definite() => EventType::Fail,
            Err(_) => EventType::Info,
        };
        if kind == EventType::Ok && self.healed {
            self.ok_after_heal += 1;
        }
        self.timed.push((
            at,
            0,
            history_event(c.process, kind, &req.op, node, Some(&response.result)),
        ));
        if kind == EventType::Info {
            c.process = self.next_process;
            self.next_process += 1;
        }
        c.next_at = at + Duration::from_millis(self.rng.random_range(5..30));
    }
}

fn check_seeds(seeds: std::ops::Range<u64>, read_mode: ReadMode) {
    for seed in seeds {
        let (events, ok_after_heal) = run_random(seed, read_mode, false);
        let report = kvlab_checker::check(
            &events,
            &CheckOptions {
                model: ModelKind::Kv,
                timeout: Some(Duration::from_secs(20)),
            },
        )
        .unwrap_or_else(|e| panic!("seed {seed} ({read_mode:?}): malformed history: {e}"));
        eprintln!(
            "seed {seed} ({read_mode:?}): {} ops, {} ok, {} fail, {} info, {ok_after_heal} ok after heal: {}",
            report.operations,
            report.operations_ok,
            report.operations_fail,
            report.operations_info,
            report.verdict
        );
        assert_eq!(
            report.verdict,
            Verdict::Valid,
            "seed {seed} ({read_mode:?}): {report:?}"
        );
        assert!(
            ok_after_heal > 0,
            "seed {seed} ({read_mode:?}): no operation succeeded after the faults healed"
        );
        assert!(report.operations_ok > 0, "seed {seed}");
    }
}

#[test]
fn random_partitions_and_crashes_stay_linearizable_with_read_index() {
    check_seeds(0..50, ReadMode::ReadIndex);
}

#[test]
fn random_partitions_and_crashes_stay_linearizable_with_log_reads() {
    check_seeds(100..120, ReadMode::Log);
}

#[test]
fn checker_catches_stale_local_reads() {
    // The deliberately broken switch must be caught on some seed, or the randomized tests
    // above could not fail either.
    let caught = (0..20u64).find(|&seed| {
        let (events, _) = run_random(seed, ReadMode::ReadIndex, true);
        let report = kvlab_checker::check(
            &events,
            &CheckOptions {
                model: ModelKind::Kv,
                timeout: Some(Duration::from_secs(20)),
            },
        )
        .unwrap_or_else(|e| panic!("seed {seed}: malformed history: {e}"));
        report.verdict == Verdict::Invalid
    });
    assert!(
        caught.is_some(),
        "no seed in 0..20 exposed stale local reads"
    );
    eprintln!("stale local reads caught on seed {caught:?}");
}

// ----- membership through admin commands ------------------------------------------------

const FIVE: [NodeId; 5] = [NodeId(1), NodeId(2), NodeId(3), NodeId(4), NodeId(5)];

/// Runs `ms` more milliseconds and returns the node events, as (node, kind, event).
fn run_events(sim: &mut Sim<RaftKv>, ms: u64) -> Vec<(NodeId, &'static str, NodeEvent)> {
    let mut out = Vec::new();
    let until = sim.now() + Duration::from_millis(ms);
    sim.run_until(until, &mut out).expect("simulation runs");
    out.into_iter()
        .filter_map(|o| match o {
            SimOutput::Event { node, event, .. } => Some((node, event.kind(), event)),
            SimOutput::Reply { .. } => None,
        })
        .collect()
}

fn five_node_leader(sim: &mut Sim<RaftKv>) -> NodeId {
    for _ in 0..100 {
        run_ms(sim, 50);
        let top = FIVE
            .iter()
            .filter_map(|&n| sim.node(n).map(RaftKv::term))
            .max();
        if let Some(l) = FIVE.iter().copied().find(|&n| {
            sim.node(n)
                .is_some_and(|p| p.role() == Role::Leader && Some(p.term()) == top)
        }) {
            run_ms(sim, 100);
            return l;
        }
    }
    panic!("no leader within 5 s (seed {})", sim.seed());
}

fn members(sim: &Sim<RaftKv>, at: NodeId) -> (Vec<NodeId>, Vec<NodeId>) {
    let g = sim.node(at).and_then(RaftKv::group).expect("node is up");
    (g.voters().to_vec(), g.learners().to_vec())
}

#[test]
fn initial_voters_start_a_smaller_group_and_admin_grows_it_learner_then_voter() {
    let cfg = RaftKvConfig {
        initial_voters: 3,
        ..RaftKvConfig::default()
    };
    let mut s = Sim::<RaftKv>::new(SimConfig::default(), 11, &FIVE, cfg).expect("valid");
    let l = five_node_leader(&mut s);
    assert!(l.0 <= 3, "only n1..n3 may lead, {l} did");
    assert_eq!(members(&s, l).0, FIVE[..3].to_vec());
    // An outsider serves no client.
    s.submit(NodeId(5), write(50, 1, "k", 1));
    let replies = run_ms(&mut s, 300);
    assert!(
        matches!(
            replies.values().next().map(|r| &r.result),
            Some(Err(ClientError::Unavailable { .. }))
        ),
        "{replies:?}"
    );
    assert!(
        s.admin(
            l,
            AdminCommand::default_group(AdminAction::AddLearner(NodeId(5)))
        )
        .expect("known node")
    );
    let ev = run_events(&mut s, 500);
    assert!(
        ev.iter().any(|(n, k, _)| *n == l && *k == "admin_proposed"),
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|(_, k, _)| *k == "config_committed"),
        "{ev:?}"
    );
    assert_eq!(members(&s, l).1, vec![NodeId(5)]);
    assert!(
        s.node(NodeId(5))
            .is_some_and(|p| p.is_member_of(DEFAULT_GROUP))
    );
    assert!(
        s.admin(
            l,
            AdminCommand::default_group(AdminAction::AddVoter(NodeId(5)))
        )
        .expect("known node")
    );
    run_ms(&mut s, 500);
    assert_eq!(
        members(&s, l),
        (vec![NodeId(1), NodeId(2), NodeId(3), NodeId(5)], vec![])
    );
    // The new voter serves (through the leader) and holds the replicated writes.
    s.submit(NodeId(5), write(50, 2, "k", 7));
    let replies = run_ms(&mut s, 500);
    assert_eq!(
        replies.values().next().map(|r| r.result.clone()),
        Some(Ok(OpOutput::Done))
    );
    run_ms(&mut s, 200);
    assert_eq!(
        s.node(NodeId(5)).map(|p| p.store_digest(DEFAULT_GROUP)),
        s.node(l).map(|p| p.store_digest(DEFAULT_GROUP))
    );
}

#[test]
fn admin_replaces_a_voter_through_a_joint_configuration() {
    // The wave-2 operator: AddLearner(Y), EnterJoint{promote Y, demote X}, LeaveJoint.
    let cfg = RaftKvConfig {
        initial_voters: 3,
        ..RaftKvConfig::default()
    };
    let mut s = Sim::<RaftKv>::new(SimConfig::default(), 12, &FIVE, cfg).expect("valid");
    let l = five_node_leader(&mut s);
    let x = FIVE[..3]
        .iter()
        .copied()
        .find(|&n| n != l)
        .expect("a follower");
    let y = NodeId(5);
    s.admin(l, AdminCommand::default_group(AdminAction::AddLearner(y)))
        .expect("known node");
    run_ms(&mut s, 500);
    let enter = AdminAction::EnterJoint {
        promote: y,
        demote: x,
        auto_leave: false,
    };
    s.admin(l, AdminCommand::default_group(enter))
        .expect("known node");
    let ev = run_events(&mut s, 500);
    assert!(
        ev.iter().any(|(n, k, _)| *n == l && *k == "admin_proposed"),
        "{ev:?}"
    );
    let g = s.node(l).and_then(RaftKv::group).expect("leader is up");
    assert!(g.is_joint());
    assert!(g.voters().contains(&y) && !g.voters().contains(&x));
    assert!(g.voters_outgoing().contains(&x));
    assert!(
        s.node(x).is_some_and(|p| p.is_member_of(DEFAULT_GROUP)),
        "an outgoing voter is still a member"
    );
    s.admin(l, AdminCommand::default_group(AdminAction::LeaveJoint))
        .expect("known node");
    run_ms(&mut s, 500);
    let mut voters: Vec<NodeId> = FIVE[..3].iter().copied().filter(|&n| n != x).collect();
    voters.push(y);
    assert_eq!(members(&s, l), (voters, vec![x]));
    // The new voter holds the data.
    s.submit(y, write(50, 1, "k", 3));
    let replies = run_ms(&mut s, 500);
    assert_eq!(
        replies.values().next().map(|r| r.result.clone()),
        Some(Ok(OpOutput::Done))
    );
}

#[test]
fn admin_on_a_follower_is_refused_naming_the_leader() {
    let mut s =
        Sim::<RaftKv>::new(SimConfig::default(), 3, &FIVE, RaftKvConfig::default()).expect("valid");
    let l = five_node_leader(&mut s);
    let f = FIVE.iter().copied().find(|&n| n != l).expect("a follower");
    s.admin(f, AdminCommand::default_group(AdminAction::RemoveNode(l)))
        .expect("known node");
    let ev = run_events(&mut s, 50);
    let refused = ev
        .iter()
        .find(|(n, k, _)| *n == f && *k == "admin_refused")
        .unwrap_or_else(|| panic!("{ev:?}"));
    assert!(
        matches!(refused.2, NodeEvent::AdminRefused { leader, .. } if leader == Some(l)),
        "{refused:?}"
    );
    assert_eq!(members(&s, l).0, FIVE.to_vec());
}

#[test]
fn removed_node_stops_serving_and_campaigning_until_added_back() {
    let mut s =
        Sim::<RaftKv>::new(SimConfig::default(), 5, &FIVE, RaftKvConfig::default()).expect("valid");
    let l = five_node_leader(&mut s);
    let x = FIVE.iter().copied().find(|&n| n != l).expect("a follower");
    s.admin(l, AdminCommand::default_group(AdminAction::RemoveNode(x)))
        .expect("known node");
    let ev = run_events(&mut s, 3_000);
    assert!(!members(&s, l).0.contains(&x));
    // The removed node never saw its removal; it campaigned, was told, and stopped.
    assert!(
        ev.iter().any(|(n, k, _)| *n == x && *k == "node_removed"),
        "{ev:?}"
    );
    assert!(s.node(x).is_some_and(|p| !p.is_member_of(DEFAULT_GROUP)));
    let term = s.node(x).map(RaftKv::term);
    run_ms(&mut s, 3_000);
    assert_eq!(
        s.node(x).map(RaftKv::term),
        term,
        "a removed node campaigned"
    );
    s.submit(x, write(70, 1, "k", 1));
    let replies = run_ms(&mut s, 300);
    assert!(
        matches!(
            replies.values().next().map(|r| &r.result),
            Some(Err(ClientError::Unavailable { .. }))
        ),
        "{replies:?}"
    );
    // Added back as a learner it catches up past its removal and is a member again.
    let l = five_node_leader(&mut s);
    s.admin(l, AdminCommand::default_group(AdminAction::AddLearner(x)))
        .expect("known node");
    run_ms(&mut s, 500);
    s.admin(l, AdminCommand::default_group(AdminAction::AddVoter(x)))
        .expect("known node");
    run_ms(&mut s, 500);
    assert!(members(&s, l).0.contains(&x));
    assert!(s.node(x).is_some_and(|p| p.is_member_of(DEFAULT_GROUP)));
    s.submit(x, write(70, 2, "k", 2));
    let replies = run_ms(&mut s, 500);
    assert_eq!(
        replies.values().next().map(|r| r.result.clone()),
        Some(Ok(OpOutput::Done))
    );
}

#[test]
fn leader_transfer_by_admin_moves_leadership() {
    let mut s =
        Sim::<RaftKv>::new(SimConfig::default(), 9, &FIVE, RaftKvConfig::default()).expect("valid");
    let l = five_node_leader(&mut s);
    let to = FIVE.iter().copied().find(|&n| n != l).expect("a follower");
    s.admin(
        l,
        AdminCommand::default_group(AdminAction::TransferLeader(to)),
    )
    .expect("known node");
    run_ms(&mut s, 500);
    assert_eq!(s.node(to).map(RaftKv::role), Some(Role::Leader));
}

#[test]
fn invariant_checker_stays_quiet_on_a_correct_cluster_under_leader_crashes() {
    use super::invariants::{INVARIANT_CHECK_INTERVAL_MS, InvariantChecker};
    let cfg = RaftKvConfig {
        snapshot_every_entries: 50,
        ..RaftKvConfig::default()
    };
    let mut s = Sim::<RaftKv>::new(SimConfig::default(), 21, &FIVE, cfg).expect("valid");
    let mut checker = InvariantChecker::new();
    let mut seq = 0;
    let mut crashed: Option<NodeId> = None;
    for step in 0..100u64 {
        for &n in &FIVE {
            seq += 1;
            s.submit(
                n,
                write(u64::from(n.0), seq, &format!("k{}", seq % 4), seq as i64),
            );
        }
        let mut outs = Vec::new();
        let until = s.now() + Duration::from_millis(INVARIANT_CHECK_INTERVAL_MS);
        s.run_until(until, &mut outs).expect("runs");
        for o in &outs {
            if let SimOutput::Event { node, event, .. } = o {
                checker.on_event(*node, event).expect("election safety");
            }
        }
        for &n in &FIVE {
            if let Some(p) = s.node(n) {
                checker.observe(n, p).expect("invariants hold");
            }
        }
        if step % 20 == 10 {
            if let Some(l) = FIVE
                .iter()
                .copied()
                .find(|&n| s.node(n).is_some_and(|p| p.role() == Role::Leader))
            {
                s.crash(l);
                crashed = Some(l);
            }
        } else if step % 20 == 15 {
            if let Some(c) = crashed.take() {
                s.restart(c).expect("restarts");
            }
        }
    }
    assert!(
        checker.terms_with_leader() >= 3,
        "leaders seen: {}",
        checker.terms_with_leader()
    );
    assert!(checker.observations() > 400);
}

#[test]
fn a_write_commits_in_network_round_trips_not_in_ticks() {
    // Constant 1 ms links, 0.1 ms fsyncs, instant clients and a 50 ms tick: replication
    // and the reply must not wait for a tick (etcd sends appends at once on propose; only
    // heartbeats are tick-driven). The leader persists (0.1), sends (1), the follower
    // persists (0.1) and acknowledges (1), the leader commits, syncs its commit index
    // (0.1) and replies: about 2.3 ms. Reads take one heartbeat round (about 2.1 ms).
    use kvlab_sim::LatencyDist;
    let mut config = SimConfig::default();
    config.network.latency = LatencyDist::Constant { ms: 1.0 };
    config.network.client_latency = LatencyDist::Constant { ms: 0.0 };
    config.disk.fsync_latency = LatencyDist::Constant { ms: 0.1 };
    let cfg = RaftKvConfig {
        tick_interval_ms: 50,
        raft: kvlab_raft::RaftConfig {
            election_ticks: 4,
            ..kvlab_raft::RaftConfig::default()
        },
        ..RaftKvConfig::default()
    };
    let mut s = Sim::<RaftKv>::new(config, 2, &NODES, cfg).expect("valid");
    let l = wait_for_leader(&mut s);
    run_ms(&mut s, 300);
    for (seq, req) in [(1, write(9, 1, "k", 5)), (2, read(9, 2, "k"))] {
        let start = s.now();
        s.submit(l, req);
        let mut outs = Vec::new();
        let mut done = None;
        while done.is_none() && s.now() < start + Duration::from_millis(100) {
            let next = s.now() + Duration::from_micros(100);
            s.run_until(next, &mut outs).expect("runs");
            done = outs.iter().find_map(|o| match o {
                SimOutput::Reply { at, response, .. } if response.id.seq == seq => Some(*at),
                _ => None,
            });
        }
        let took = done
            .expect("answered within 100 ms")
            .saturating_since(start);
        assert!(
            took <= Duration::from_micros(2_500),
            "request {seq} took {took:?}: it waited for something slower than the network"
        );
    }
}

#[test]
fn follower_reforwards_to_the_new_leader_instead_of_waiting_out_the_forward_timeout() {
    let cfg = RaftKvConfig {
        forward_timeout_ms: 2_000,
        ..RaftKvConfig::default()
    };
    let mut s = sim(8, cfg);
    let l = wait_for_leader(&mut s);
    let f = NODES.iter().copied().find(|&n| n != l).expect("a follower");
    s.crash(l);
    let start = s.now();
    s.submit(f, write(42, 1, "k", 3));
    let mut outs = Vec::new();
    s.run_until(start + Duration::from_millis(1_500), &mut outs)
        .expect("runs");
    let answer = outs.iter().find_map(|o| match o {
        SimOutput::Reply { at, response, .. } if response.id.client == 42 => {
            Some((*at, response.result.clone()))
        }
        _ => None,
    });
    let (at, result) = answer.expect("answered before the 2 s forward timeout");
    assert_eq!(result, Ok(OpOutput::Done));
    assert!(
        at.saturating_since(start) < Duration::from_millis(1_000),
        "took {:?}",
        at.saturating_since(start)
    );
}

/// A key of `group` among `groups` (the first `k<i>` that hashes there).
fn key_in(group: GroupId, groups: u32) -> impl Iterator<Item = String> {
    (0u32..)
        .map(|i| format!("k{i}"))
        .filter(move |k| group_of_key(k, groups) == group)
}

#[test]
fn a_snapshot_of_group_1_leaves_group_2s_log_intact_across_a_restart() {
    // One node, two groups; group 1 compacts every 8 entries, group 2 never reaches it.
    let me = NodeId(1);
    let cfg = RaftKvConfig {
        groups: 2,
        snapshot_every_entries: 8,
        ..RaftKvConfig::default()
    };
    let (g1, g2) = (GroupId(1), GroupId(0));
    let mut s = Sim::<RaftKv>::new(SimConfig::default(), 7, &[me], cfg).expect("valid");
    run_ms(&mut s, 1_000);
    let node = s.node(me).expect("up");
    assert!(
        node.group_ids()
            .all(|g| node.raft(g).unwrap().role() == Role::Leader)
    );
    let g1_keys: Vec<String> = key_in(g1, 2).take(12).collect();
    let g2_keys: Vec<String> = key_in(g2, 2).take(3).collect();
    let mut seq = 0;
    for (k, key) in g1_keys.iter().chain(&g2_keys).enumerate() {
        seq += 1;
        s.submit(me, write(1, seq, key, 100 + k as i64));
        let r = run_ms(&mut s, 50);
        assert_eq!(
            r.values().next().map(|r| r.result.clone()),
            Some(Ok(OpOutput::Done))
        );
    }
    let node = s.node(me).expect("up");
    let g2_log = node.raft(g2).unwrap().last_index();
    assert!(
        node.raft(g1).unwrap().snapshot_meta().index > 0,
        "group 1 compacted"
    );
    assert_eq!(
        node.raft(g2).unwrap().snapshot_meta().index,
        0,
        "group 2 did not"
    );
    assert!(s.stats().per_node[&me].snapshots_saved > 0);

    s.crash(me);
    s.restart(me).expect("restarts");
    run_ms(&mut s, 1_000);
    let node = s.node(me).expect("up");
    assert_eq!(node.poisoned(), None);
    assert_eq!(node.raft(g2).unwrap().snapshot_meta().index, 0);
    assert!(
        node.raft(g2).unwrap().last_index() >= g2_log,
        "group 2's log lost entries: {} < {g2_log}",
        node.raft(g2).unwrap().last_index()
    );
    for (k, key) in g1_keys.iter().chain(&g2_keys).enumerate() {
        let group = node.group_of(key);
        assert_eq!(
            node.store_of(group).and_then(|kv| kv.get(key)),
            Some(100 + k as i64),
            "{key} of {group}"
        );
    }
}

/// An etcd request as the etcd endpoint submits it.
fn etcd(client: u64, seq: u64, req: crate::etcd::EtcdRequest) -> ClientRequest {
    ClientRequest {
        id: RequestId { client, seq },
        op: KvOp::Etcd(req.to_op()),
    }
}

fn etcd_outcome(r: &ClientResponse) -> crate::etcd::Outcome {
    match &r.result {
        Ok(OpOutput::Etcd(bytes)) => crate::etcd::Outcome::decode(bytes).expect("decodes"),
        other => panic!("not an etcd answer: {other:?}"),
    }
}

#[test]
fn etcd_requests_replicate_read_by_read_index_and_survive_snapshots_and_restarts() {
    use crate::etcd::pb::etcdserverpb as rpc;
    use crate::etcd::{EtcdRequest, EtcdResponse};
    let cfg = RaftKvConfig {
        snapshot_every_entries: 4,
        ..RaftKvConfig::default()
    };
    let mut s = sim(11, cfg);
    let l = wait_for_leader(&mut s);
    let follower = NODES.into_iter().find(|&n| n != l).unwrap();
    for i in 1..=10u64 {
        let put = EtcdRequest::Put(rpc::PutRequest {
            key: format!("k{i:02}").into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        });
        // Through a follower: forwarded to the leader, applied by every replica.
        s.submit(follower, etcd(9, i, put));
        let r = run_ms(&mut s, 100);
        let o = etcd_outcome(&r[&RequestId { client: 9, seq: i }]);
        let Ok(EtcdResponse::Put(p)) = o.result else {
            panic!("{o:?}")
        };
        assert_eq!(p.header.unwrap().revision, 1 + i as i64);
        assert!(o.raft_term >= 1);
    }
    // A linearizable range on a follower (ReadIndex at the leader) and a serializable
    // one answered by the follower itself.
    let all = |serializable| {
        EtcdRequest::Range(rpc::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            serializable,
            ..Default::default()
        })
    };
    s.submit(follower, etcd(9, 11, all(false)));
    s.submit(follower, etcd(9, 12, all(true)));
    let r = run_ms(&mut s, 100);
    for seq in [11, 12] {
        let o = etcd_outcome(&r[&RequestId { client: 9, seq }]);
        let Ok(EtcdResponse::Range(rr)) = o.result else {
            panic!("{o:?}")
        };
        assert_eq!((rr.count, rr.header.unwrap().revision), (10, 11));
    }
    // Every replica holds the same etcd keyspace, though each compacted its log into
    // snapshots along the way; a restarted follower recovers it from its own disk.
    let digest = |s: &Sim<RaftKv>, n| s.node(n).unwrap().store_digest(DEFAULT_GROUP);
    assert!(NODES.iter().all(|&n| digest(&s, n) == digest(&s, l)));
    s.crash(follower);
    run_ms(&mut s, 50);
    s.restart(follower).unwrap();
    run_ms(&mut s, 1_000);
    let back = s.node(follower).unwrap();
    assert_eq!(back.poisoned(), None);
    let store = back.store_of(DEFAULT_GROUP).unwrap();
    assert_eq!(store.etcd().unwrap().revision(), 11);
    assert_eq!(digest(&s, follower), digest(&s, l));
}

#[test]
fn etcd_requests_are_refused_on_more_than_one_group() {
    let cfg = RaftKvConfig {
        groups: 2,
        ..RaftKvConfig::default()
    };
    let mut s = sim(3, cfg);
    let l = wait_for_leader(&mut s);
    let put = crate::etcd::EtcdRequest::Put(Default::default());
    s.submit(l, etcd(4, 1, put));
    let r = run_ms(&mut s, 50);
    assert_eq!(
        r[&RequestId { client: 4, seq: 1 }].result,
        Err(ClientError::Invalid {
            reason: InvalidRequest::EtcdNotServed
        })
    );
}

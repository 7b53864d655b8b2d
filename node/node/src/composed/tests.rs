//! Tests of the composed `kvlab` system in the simulator: routing, joins, drains,
//! node loss, replica lifecycle, and a randomized search with the linearizability
//! checker.

use std::collections::BTreeMap;
use std::time::Duration;

use kvlab_ring::{ConfChangeMode, VnodeId};
use kvlab_sim::{Sim, SimConfig, SimOutput};
use kvlab_types::{ClientRequest, ClientResponse, KvOp, NodeEvent, NodeId, OpOutput, RequestId};

use super::*;

pub(super) fn ids(n: u32) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

/// A small, fast ring: 16 vnodes, RF 3, timers tuned for seconds of simulated time.
pub(super) fn fast_config(initial: u32) -> KvlabConfig {
    let mut c = KvlabConfig {
        initial_members: ids(initial),
        ..KvlabConfig::default()
    };
    c.ring.vnode_count = 16;
    c.scheduler.conf_change = ConfChangeMode::Joint;
    c.scheduler.node_add_replica_per_s = 20.0;
    c.scheduler.node_remove_replica_per_s = 20.0;
    c.scheduler.operator_timeout_ms = 10_000;
    c.meta.store_heartbeat_interval_ms = 200;
    c.meta.schedule_interval_ms = 100;
    c.membership.suspect_hold_ms = 1_000;
    c.membership.replace_down_after_ms = 3_000;
    c.membership.peer_down_after_ms = 1_000;
    c.membership.stale_peer_check_ms = 5_000;
    c.swim.protocol_period_ms = 200;
    c.swim.ack_timeout_ms = 80;
    c.swim.push_pull_interval_ms = 2_000;
    c.swim.join_retry_ms = 200;
    c.swim.dead_reclaim_ms = 600_000;
    c
}

pub(super) type KvSim = Sim<KvlabNode>;

pub(super) fn sim(seed: u64, nodes: u32, cfg: KvlabConfig) -> KvSim {
    let initial = cfg.initial(&ids(nodes));
    let absent: Vec<NodeId> = ids(nodes)
        .into_iter()
        .filter(|n| !initial.contains(n))
        .collect();
    Sim::new_with_absent(SimConfig::default(), seed, &ids(nodes), &absent, cfg).expect("valid sim")
}

pub(super) fn run_ms(
    s: &mut KvSim,
    ms: u64,
) -> (BTreeMap<RequestId, ClientResponse>, Vec<NodeEvent>) {
    let mut out = Vec::new();
    let until = s.now() + Duration::from_millis(ms);
    s.run_until(until, &mut out).expect("simulation runs");
    let mut replies = BTreeMap::new();
    let mut events = Vec::new();
    for o in out {
        match o {
            SimOutput::Reply { response, .. } => {
                replies.insert(response.id, response);
            }
            SimOutput::Event { event, .. } => events.push(event),
        }
    }
    (replies, events)
}

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

/// Replicas per node (initialized members of their group's configuration).
pub(super) fn replicas_per_node(s: &KvSim, nodes: u32) -> BTreeMap<NodeId, usize> {
    ids(nodes)
        .into_iter()
        .filter_map(|n| s.node(n).map(|p| (n, p.hosted().count())))
        .collect()
}

#[test]
fn writes_and_reads_reach_every_vnode_through_any_node() {
    let mut s = sim(1, 5, fast_config(5));
    run_ms(&mut s, 2_000);
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let node = NodeId(1 + (i as u32 % 5));
        s.submit(node, write(1 + i as u64, 1, k, i as i64));
    }
    let (replies, _) = run_ms(&mut s, 3_000);
    for (i, _) in keys.iter().enumerate() {
        let id = RequestId {
            client: 1 + i as u64,
            seq: 1,
        };
        assert_eq!(
            replies.get(&id).map(|r| &r.result),
            Some(&Ok(OpOutput::Done)),
            "write {i}"
        );
    }
    for (i, k) in keys.iter().enumerate() {
        let node = NodeId(1 + ((i as u32 + 2) % 5));
        s.submit(node, read(100 + i as u64, 1, k));
    }
    let (replies, _) = run_ms(&mut s, 3_000);
    for i in 0..keys.len() {
        let id = RequestId {
            client: 100 + i as u64,
            seq: 1,
        };
        assert_eq!(
            replies.get(&id).map(|r| &r.result),
            Some(&Ok(OpOutput::Read(Some(i as i64)))),
            "read {i}"
        );
    }
    // 16 vnodes × RF 3 over 5 nodes.
    let total: usize = replicas_per_node(&s, 5).values().sum();
    assert_eq!(total, 48);
    let _ = VnodeId(0);
}

#[test]
fn a_joining_node_receives_replicas_and_data_stays_readable() {
    let mut s = sim(2, 6, fast_config(5));
    run_ms(&mut s, 2_000);
    for i in 0..32u64 {
        s.submit(
            NodeId(1 + (i % 5) as u32),
            write(1 + i, 1, &format!("k{i}"), i as i64),
        );
    }
    let (replies, _) = run_ms(&mut s, 2_000);
    for i in 0..32u64 {
        let id = RequestId {
            client: 1 + i,
            seq: 1,
        };
        assert_eq!(
            replies.get(&id).map(|r| &r.result),
            Some(&Ok(OpOutput::Done)),
            "write k{i}"
        );
    }
    s.start(NodeId(6)).expect("node 6 joins");
    let (_, events) = run_ms(&mut s, 15_000);
    let done = events
        .iter()
        .filter(|e| matches!(e, NodeEvent::OperatorAdvanced { done: true, .. }))
        .count();
    let per_node = replicas_per_node(&s, 6);
    assert!(done > 0, "no operator finished; replicas {per_node:?}");
    assert!(per_node[&NodeId(6)] >= 7, "node 6 holds {per_node:?}");
    // A learner just added is not a silent peer: group leaders once reported it down at
    // once, meta marked the joiner Suspect and the join stalled for suspect_hold_ms.
    let suspected = events.iter().any(|e| {
        matches!(e, NodeEvent::RingNodeState { member, state, .. } if *member == NodeId(6) && state == "suspect")
    });
    assert!(!suspected, "the joiner was marked suspect");
    for i in 0..32u64 {
        s.submit(
            NodeId(1 + (i % 6) as u32),
            read(100 + i, 1, &format!("k{i}")),
        );
    }
    let (replies, _) = run_ms(&mut s, 3_000);
    for i in 0..32u64 {
        let id = RequestId {
            client: 100 + i,
            seq: 1,
        };
        assert_eq!(
            replies.get(&id).map(|r| &r.result),
            Some(&Ok(OpOutput::Read(Some(i as i64)))),
            "read k{i}"
        );
    }
}

fn sum_replicas(s: &KvSim, nodes: u32) -> usize {
    replicas_per_node(s, nodes).values().sum()
}

#[test]
fn a_drained_node_gives_away_every_replica_then_leaves_swim() {
    let mut s = sim(3, 6, fast_config(6));
    run_ms(&mut s, 3_000);
    for i in 0..24u64 {
        s.submit(
            NodeId(1 + (i % 6) as u32),
            write(1 + i, 1, &format!("k{i}"), i as i64),
        );
    }
    run_ms(&mut s, 2_000);
    let drain = kvlab_types::AdminCommand::default_group(kvlab_types::AdminAction::Drain);
    assert!(s.admin(NodeId(6), drain).expect("node 6 is known"));
    let (_, events) = run_ms(&mut s, 20_000);
    let per_node = replicas_per_node(&s, 6);
    assert_eq!(per_node[&NodeId(6)], 0, "node 6 still hosts {per_node:?}");
    assert_eq!(sum_replicas(&s, 6), 48, "{per_node:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, NodeEvent::RingNodeState { member, state, .. } if *member == NodeId(6) && state == "draining")),
        "meta never marked node 6 draining"
    );
    assert!(
        s.node(NodeId(6))
            .expect("up")
            .swim()
            .is_some_and(Swim::has_left)
    );
    for i in 0..24u64 {
        s.submit(
            NodeId(1 + (i % 5) as u32),
            read(100 + i, 1, &format!("k{i}")),
        );
    }
    let (replies, _) = run_ms(&mut s, 3_000);
    for i in 0..24u64 {
        let id = RequestId {
            client: 100 + i,
            seq: 1,
        };
        assert_eq!(
            replies.get(&id).map(|r| &r.result),
            Some(&Ok(OpOutput::Read(Some(i as i64)))),
            "k{i}"
        );
    }
}

#[test]
fn replicas_of_a_node_lost_for_good_are_replaced_and_no_acknowledged_write_is_lost() {
    let mut s = sim(4, 6, fast_config(6));
    run_ms(&mut s, 3_000);
    let mut acked = Vec::new();
    for i in 0..24u64 {
        s.submit(
            NodeId(1 + (i % 5) as u32),
            write(1 + i, 1, &format!("k{i}"), i as i64),
        );
    }
    let (replies, _) = run_ms(&mut s, 2_000);
    for i in 0..24u64 {
        if replies
            .get(&RequestId {
                client: 1 + i,
                seq: 1,
            })
            .is_some_and(|r| r.result.is_ok())
        {
            acked.push(i);
        }
    }
    assert!(
        acked.len() >= 20,
        "only {} writes acknowledged",
        acked.len()
    );
    s.crash(NodeId(6));
    // SWIM declares it dead within seconds; replace_down_after_ms is 3 s; then moves.
    run_ms(&mut s, 25_000);
    let live: BTreeMap<NodeId, usize> = replicas_per_node(&s, 5);
    assert_eq!(
        live.values().sum::<usize>(),
        48,
        "replicas on live nodes {live:?}"
    );
    for &i in &acked {
        s.submit(
            NodeId(1 + (i % 5) as u32),
            read(100 + i, 1, &format!("k{i}")),
        );
    }
    let (replies, _) = run_ms(&mut s, 3_000);
    for &i in &acked {
        let id = RequestId {
            client: 100 + i,
            seq: 1,
        };
        assert_eq!(
            replies.get(&id).map(|r| &r.result),
            Some(&Ok(OpOutput::Read(Some(i as i64)))),
            "k{i}"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_events() {
    let trace = |seed| {
        let mut s = sim(seed, 6, fast_config(5));
        run_ms(&mut s, 1_000);
        for i in 0..10u64 {
            s.submit(
                NodeId(1 + (i % 5) as u32),
                write(1 + i, 1, &format!("k{i}"), i as i64),
            );
        }
        run_ms(&mut s, 1_000);
        s.start(NodeId(6)).expect("joins");
        let (replies, events) = run_ms(&mut s, 5_000);
        format!("{replies:?}{events:?}")
    };
    assert_eq!(trace(11), trace(11));
    assert_ne!(trace(11), trace(12));
}

/// A fault aimed at SWIM alone: SWIM traffic cut between two halves for longer than
/// `replace_down_after_ms`. SWIM on each side declares the other side dead, but every
/// group's leader keeps hearing from its followers, so meta replaces nothing (the Raft
/// evidence a Down needs never comes) and clients keep being served.
#[test]
fn swim_cut_alone_moves_no_replica() {
    let mut s = sim(31, 5, fast_config(5));
    run_ms(&mut s, 3_000);
    let before = replicas_per_node(&s, 5);
    let rule = s.add_rule(kvlab_sim::FaultRule::Layered {
        layer: kvlab_types::Layer::Swim,
        apply: Box::new(kvlab_sim::FaultRule::Partition {
            a: ids(2),
            b: vec![NodeId(3), NodeId(4), NodeId(5)],
        }),
    });
    for i in 0..20u64 {
        s.submit(
            NodeId(1 + (i % 5) as u32),
            write(1 + i, 1, &format!("k{i}"), 1),
        );
    }
    let (replies, events) = run_ms(&mut s, 8_000);
    s.remove_rule(rule);
    let acked = replies.values().filter(|r| r.result.is_ok()).count();
    assert_eq!(acked, 20, "{replies:?}");
    let dead_in_swim = s
        .node(NodeId(1))
        .and_then(KvlabNode::swim)
        .is_some_and(|w| {
            w.members()
                .any(|m| m.id == NodeId(4) && m.state != kvlab_swim::MemberState::Alive)
        });
    assert!(dead_in_swim, "the SWIM cut did not show in n1's SWIM table");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, NodeEvent::RingNodeState { state, .. } if state == "down")),
        "meta marked a node down on SWIM alone"
    );
    assert_eq!(replicas_per_node(&s, 5), before);
}

/// A fault aimed at one Raft group: its leader is cut off from its followers for that
/// group only. The group elects a new leader; every other group keeps its leader.
#[test]
fn a_cut_of_one_group_elects_in_that_group_only() {
    let mut s = sim(32, 5, fast_config(5));
    run_ms(&mut s, 3_000);
    let v = VnodeId(3);
    let group = kvlab_ring::vnode_group(v);
    let leader = ids(5)
        .into_iter()
        .find(|&n| {
            s.node(n)
                .and_then(|p| p.raft(v))
                .is_some_and(|r| r.role() == kvlab_raft::Role::Leader)
        })
        .expect("vnode 3 has a leader");
    s.add_rule(kvlab_sim::FaultRule::Layered {
        layer: kvlab_types::Layer::Group(group),
        apply: Box::new(kvlab_sim::FaultRule::Isolate { node: leader }),
    });
    let (_, events) = run_ms(&mut s, 3_000);
    let elected: std::collections::BTreeSet<kvlab_types::GroupId> = events
        .iter()
        .filter_map(|e| match e {
            NodeEvent::LeaderElected { group, .. } => Some(*group),
            _ => None,
        })
        .collect();
    assert!(
        elected.contains(&group),
        "group {group:?} elected no new leader"
    );
    let others: Vec<_> = elected
        .iter()
        .filter(|g| **g != group && kvlab_ring::group_vnode(**g).is_some())
        .collect();
    assert!(others.is_empty(), "other groups elected too: {others:?}");
}

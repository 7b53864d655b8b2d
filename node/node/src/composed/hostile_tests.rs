//! Hostile input to the composed node: scripted forgeries that must be refused (a meta
//! message from a node that is no meta voter, a sender that disagrees with the
//! transport, an epoch or a group out of range, oversized descriptors), and a seeded
//! fuzz of structured and random messages under client load, crashes and restarts:
//! no panic, and no node that restarts from its own durable state fails to recover.

use kvlab_raft::{MessageBody, RaftMessage};
use kvlab_ring::{OperatorId, Step, StepCommand, VnodeId, meta::StoreReport, vnode_group};
use kvlab_types::{ClientResponse, KvOp, NodeId, OpOutput, RequestId, derive_seed, seeded_rng};
use rand::RngExt;

use super::route::{RouteDescriptor, RouteMsg, RouteRefusal};
use super::tests::{fast_config, read, run_ms, sim, write};
use super::*;

fn refused(s: &tests::KvSim, n: u32) -> u64 {
    s.node(NodeId(n))
        .map_or(0, |p| p.counters().refused_messages)
}

#[test]
fn meta_traffic_from_a_node_that_is_no_meta_voter_is_refused() {
    let mut s = sim(21, 5, fast_config(5));
    run_ms(&mut s, 2_000);
    let victim = NodeId(2);
    let hosted: Vec<VnodeId> = s.node(victim).expect("up").hosted().collect();
    let gc = MetaMsg::Gc {
        replicas: hosted.iter().map(|v| (*v, u64::MAX / 2)).collect(),
    };
    // Node 5 is not a meta voter (voters are 1, 2, 3).
    s.inject(NodeId(5), victim, KvlabMsg::Meta(gc))
        .expect("known");
    let step = StepCommand {
        operator: OperatorId(99),
        vnode: hosted[0],
        step_index: 0,
        step: Step::RemoveNode(NodeId(1)),
        expected_conf_epoch: None,
    };
    s.inject(
        NodeId(5),
        victim,
        KvlabMsg::Meta(MetaMsg::Steps(vec![step])),
    )
    .expect("known");
    run_ms(&mut s, 100);
    assert_eq!(refused(&s, 2), 2);
    let now: Vec<VnodeId> = s.node(victim).expect("up").hosted().collect();
    assert_eq!(now, hosted, "a forged gc destroyed replicas");
}

#[test]
fn impossible_wire_values_are_refused_and_counted() {
    let mut s = sim(22, 5, fast_config(5));
    run_ms(&mut s, 2_000);
    let to = NodeId(1);
    let hb = |group, from| RaftMessage {
        group,
        from,
        to,
        term: 1,
        body: MessageBody::Heartbeat {
            leader_commit: 0,
            read_round: 0,
        },
    };
    let cases = vec![
        // The sender field disagrees with the transport.
        (
            NodeId(2),
            KvlabMsg::Raft(vec![RaftEnvelope {
                epoch: 0,
                msg: hb(vnode_group(VnodeId(0)), NodeId(3)),
            }]),
        ),
        // An epoch beyond any log.
        (
            NodeId(2),
            KvlabMsg::Raft(vec![RaftEnvelope {
                epoch: u64::MAX,
                msg: hb(vnode_group(VnodeId(0)), NodeId(2)),
            }]),
        ),
        // A group outside the ring of 16 vnodes.
        (
            NodeId(2),
            KvlabMsg::Raft(vec![RaftEnvelope {
                epoch: 0,
                msg: hb(vnode_group(VnodeId(999)), NodeId(2)),
            }]),
        ),
        // A store report about another node.
        (
            NodeId(4),
            KvlabMsg::Meta(MetaMsg::Report {
                report: StoreReport {
                    node: NodeId(5),
                    address: None,
                    hosted_bytes: Default::default(),
                    led: Vec::new(),
                },
                epochs: Vec::new(),
            }),
        ),
        // A descriptor no group can have.
        (
            NodeId(3),
            KvlabMsg::Route(RouteMsg::Refused {
                id: RequestId { client: 1, seq: 1 },
                attempt: 1,
                refusal: RouteRefusal::EpochNotMatch {
                    descriptor: RouteDescriptor {
                        voters: (1..100).map(NodeId).collect(),
                        epoch: 1,
                        leader: None,
                    },
                },
            }),
        ),
    ];
    let n = cases.len() as u64;
    for (from, m) in cases {
        s.inject(from, to, m).expect("known");
    }
    run_ms(&mut s, 100);
    assert_eq!(refused(&s, 1), n);
    // Still serving.
    s.submit(NodeId(1), write(1, 1, "k", 7));
    run_ms(&mut s, 1_000);
    s.submit(NodeId(2), read(2, 1, "k"));
    let (replies, _) = run_ms(&mut s, 1_000);
    assert_eq!(
        replies
            .get(&RequestId { client: 2, seq: 1 })
            .map(|r| &r.result),
        Some(&Ok(OpOutput::Read(Some(7))))
    );
}

fn forge(rng: &mut kvlab_types::Rng, to: NodeId) -> (NodeId, KvlabMsg) {
    let from = NodeId(rng.random_range(1..=5));
    let near = [0, 1, 2, 5, 1 << 20, u64::MAX];
    let pick = |rng: &mut kvlab_types::Rng| near[rng.random_range(0..near.len())];
    let v = VnodeId(rng.random_range(0..20));
    let id = RequestId {
        client: rng.random_range(1..4),
        seq: rng.random_range(1..4),
    };
    let msg = match rng.random_range(0..10u32) {
        0..3 => KvlabMsg::Raft(vec![RaftEnvelope {
            epoch: pick(rng),
            msg: RaftMessage {
                group: vnode_group(v),
                from,
                to,
                term: pick(rng),
                body: MessageBody::Heartbeat {
                    leader_commit: pick(rng),
                    read_round: pick(rng),
                },
            },
        }]),
        3 => KvlabMsg::Route(RouteMsg::Request {
            req: kvlab_types::ClientRequest {
                id,
                op: KvOp::Write {
                    key: format!("k{}", rng.random_range(0..4)),
                    value: 1,
                },
            },
            attempt: rng.random_range(0..3),
            epoch: pick(rng),
        }),
        4 => KvlabMsg::Route(RouteMsg::Reply {
            resp: ClientResponse {
                id,
                result: Ok(OpOutput::Done),
            },
        }),
        5 => KvlabMsg::Meta(MetaMsg::Lookup { vnode: v }),
        6 => KvlabMsg::Meta(MetaMsg::Directory {
            vnode: v,
            descriptor: Some(RouteDescriptor {
                voters: vec![from],
                epoch: pick(rng),
                leader: Some(from),
            }),
        }),
        7 => KvlabMsg::NotMember {
            group: vnode_group(v),
            conf_index: pick(rng),
        },
        _ => {
            let mut found = None;
            for _ in 0..64 {
                let len = rng.random_range(1..48);
                let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                if let Ok(m) = postcard::from_bytes::<KvlabMsg>(&bytes) {
                    found = Some(m);
                    break;
                }
            }
            found.unwrap_or(KvlabMsg::Meta(MetaMsg::Lookup { vnode: v }))
        }
    };
    (from, msg)
}

#[test]
fn forged_messages_under_load_crashes_and_restarts_never_panic() {
    let mut forged = 0u64;
    for seed in 0..4u64 {
        let mut rng = seeded_rng(derive_seed(seed, "forge-kvlab", 0));
        let mut s = sim(seed, 5, fast_config(5));
        run_ms(&mut s, 1_000);
        for i in 0..2_000u64 {
            let to = NodeId(rng.random_range(1..=5));
            let (from, msg) = forge(&mut rng, to);
            let _ = s.inject(from, to, msg);
            forged += 1;
            if i % 4 == 0 {
                s.submit(to, write(100, i + 1, &format!("k{}", i % 8), i as i64));
            }
            run_ms(&mut s, rng.random_range(0..10));
            if rng.random_range(0..300) == 0 {
                s.crash(to);
                run_ms(&mut s, 50);
                s.restart(to)
                    .unwrap_or_else(|e| panic!("seed {seed}: restart: {e}"));
            }
        }
    }
    assert_eq!(forged, 8_000);
}

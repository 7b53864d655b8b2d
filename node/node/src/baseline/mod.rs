//! Baseline systems: small, honest designs that give the pipeline something real to test
//! before Raft, and that teach what the checker catches.
//!
//! * [`Single`] (`system = "single"`): one node, the *holder*, keeps the data and makes
//!   every change durable before it answers; the other nodes forward to it.
//!   Linearizable; unavailable whenever the holder is down or cut off.
//! * [`AsyncPrimary`] (`system = "async-primary"`): the primary acknowledges a write as
//!   soon as it applied it in memory, then replicates it asynchronously; every node
//!   serves reads from its own copy. Fast and **not** linearizable: reads at a backup
//!   are stale, and a primary crash loses acknowledged writes that were never synced.

mod async_primary;
mod single;

pub use async_primary::{AsyncPrimary, AsyncPrimaryConfig};
pub use single::{Single, SingleConfig};

use std::ops::ControlFlow;

use kvlab_types::{ClientResponse, KvOp, NodeId, Out, RequestId};
use serde::{Deserialize, Serialize};

use crate::forward::ForwardMsg;
use crate::kv::{ApplyResult, KvStore};

/// Messages of the baseline systems.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BaselineMsg {
    /// A node that does not own the data passes a client request on, or the owner
    /// answers one.
    Forward(ForwardMsg),
    /// The primary ships one applied update to a backup (async-primary only).
    Replicate {
        /// The primary's update counter (1, 2, …).
        seq: u64,
        /// The request that caused it.
        id: RequestId,
        /// The update.
        op: KvOp,
    },
}

/// One update as it is persisted in the write-ahead log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct UpdateRecord {
    id: RequestId,
    op: KvOp,
}

impl UpdateRecord {
    /// The WAL bytes of the update `op` caused by request `id`.
    fn encode(id: RequestId, op: &KvOp) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(&UpdateRecord { id, op: op.clone() })
    }
}

/// Replays WAL `records` in append order into `kv`, which rebuilds the client sessions
/// too, so retries stay at-most-once. `on_undecodable` is told the index of each record
/// that does not decode and whether to go on past it; returns how many records were
/// applied.
fn replay(
    kv: &mut KvStore,
    records: &[Vec<u8>],
    mut on_undecodable: impl FnMut(usize, postcard::Error) -> ControlFlow<()>,
) -> u64 {
    let mut applied = 0;
    for (i, bytes) in records.iter().enumerate() {
        match postcard::from_bytes::<UpdateRecord>(bytes) {
            Ok(rec) => {
                let _ = kv.apply(rec.id, &rec.op);
                applied += 1;
            }
            Err(e) => {
                if on_undecodable(i, e).is_break() {
                    break;
                }
            }
        }
    }
    applied
}

/// Answers request `id` with `result`: to the client directly when this node took the
/// request (`reply_to` is `None`), otherwise to the node that forwarded it.
fn answer(
    id: RequestId,
    result: ApplyResult,
    reply_to: Option<NodeId>,
    out: &mut Out<BaselineMsg>,
) {
    let resp = ClientResponse { id, result };
    match reply_to {
        None => out.push(kvlab_types::Effect::Reply(resp)),
        Some(origin) => out.send(
            origin,
            BaselineMsg::Forward(ForwardMsg::ForwardReply { resp }),
        ),
    }
}

/// Picks the node that owns the data: the configured one, or the smallest peer id.
fn owner(configured: Option<NodeId>, peers: &[NodeId]) -> NodeId {
    configured.unwrap_or_else(|| peers.iter().copied().min().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvlab_types::Time;
    use kvlab_types::{
        ClientError, ClientRequest, Cx, Effect, GroupId, NodeEvent, OpOutput, Out, Protocol,
        Recovery, TimerId, TimerSpace, seeded_rng,
    };

    const PEERS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

    fn req(seq: u64, op: KvOp) -> ClientRequest {
        ClientRequest {
            id: RequestId { client: 7, seq },
            op,
        }
    }

    fn boot<P: Protocol>(id: u32, cfg: &P::Config, rec: Recovery) -> (P, Out<P::Msg>) {
        let mut rng = seeded_rng(1);
        let mut cx = Cx::new(NodeId(id), Time::ZERO, &mut rng);
        let mut out = Out::new();
        let p = P::boot(&mut cx, cfg, &PEERS, rec, &mut out);
        (p, out)
    }

    /// What node `id` does with the client request `r`.
    fn client<P: Protocol>(n: &mut P, id: u32, r: ClientRequest) -> Out<P::Msg> {
        let mut rng = seeded_rng(1);
        let mut out = Out::new();
        n.on_client(&mut Cx::new(NodeId(id), Time::ZERO, &mut rng), r, &mut out);
        out
    }

    fn names<M>(out: &Out<M>) -> Vec<&'static str> {
        out.effects()
            .iter()
            .map(|e| match e {
                Effect::Send { .. } => "send",
                Effect::SetTimer { .. } => "set_timer",
                Effect::CancelTimer { .. } => "cancel_timer",
                Effect::Persist { .. } => "persist",
                Effect::Sync => "sync",
                Effect::SaveSnapshot { .. } => "snapshot",
                Effect::Reply(_) => "reply",
                Effect::Event(_) => "event",
                Effect::Scope(_) => "scope",
            })
            .collect()
    }

    #[test]
    fn baselines_refuse_etcd_requests() {
        let etcd = || {
            let op = kvlab_types::EtcdOp {
                kind: kvlab_types::EtcdOpKind::Put,
                request: Vec::new(),
            };
            req(1, KvOp::Etcd(op))
        };
        let refused = |out: &Out<BaselineMsg>| {
            out.effects().iter().any(|e| {
                matches!(
                    e,
                    Effect::Reply(r) if r.result == Err(ClientError::Invalid {
                        reason: kvlab_types::InvalidRequest::EtcdNotServed
                    })
                )
            })
        };
        let (mut single, _) = boot::<Single>(1, &SingleConfig::default(), Recovery::default());
        assert!(refused(&client(&mut single, 1, etcd())));
        let (mut primary, _) =
            boot::<AsyncPrimary>(2, &AsyncPrimaryConfig::default(), Recovery::default());
        assert!(refused(&client(&mut primary, 2, etcd())));
    }

    #[test]
    fn single_holder_persists_and_syncs_before_answering_a_write() {
        let (mut n, _) = boot::<Single>(1, &SingleConfig::default(), Recovery::default());
        let out = client(
            &mut n,
            1,
            req(
                1,
                KvOp::Write {
                    key: "k".into(),
                    value: 3,
                },
            ),
        );
        assert_eq!(names(&out), ["persist", "sync", "reply"]);
    }

    #[test]
    fn single_holder_answers_reads_behind_a_sync_barrier() {
        let (mut n, _) = boot::<Single>(1, &SingleConfig::default(), Recovery::default());
        let out = client(&mut n, 1, req(1, KvOp::Read { key: "k".into() }));
        assert_eq!(names(&out), ["sync", "reply"]);
    }

    #[test]
    fn single_non_holder_forwards_and_times_out_as_indeterminate() {
        let (mut n, _) = boot::<Single>(2, &SingleConfig::default(), Recovery::default());
        let mut rng = seeded_rng(1);
        let mut out = Out::new();
        let mut cx = Cx::new(NodeId(2), Time::ZERO, &mut rng);
        n.on_client(&mut cx, req(1, KvOp::Read { key: "k".into() }), &mut out);
        let timer = match out.effects() {
            [
                Effect::SetTimer { timer, .. },
                Effect::Send {
                    to,
                    msg: BaselineMsg::Forward(ForwardMsg::Forward { .. }),
                },
            ] => {
                assert_eq!(*to, NodeId(1));
                *timer
            }
            other => panic!("unexpected effects {other:?}"),
        };
        let mut out = Out::new();
        n.on_timer(&mut cx, timer, &mut out);
        match out.effects() {
            [Effect::Reply(r)] => {
                assert!(matches!(r.result, Err(ClientError::Indeterminate { .. })))
            }
            other => panic!("unexpected effects {other:?}"),
        }
        // A late answer after the timeout is not delivered twice.
        let mut out = Out::new();
        n.on_msg(
            &mut cx,
            NodeId(1),
            BaselineMsg::Forward(ForwardMsg::ForwardReply {
                resp: kvlab_types::ClientResponse {
                    id: RequestId { client: 7, seq: 1 },
                    result: Ok(OpOutput::Read(None)),
                },
            }),
            &mut out,
        );
        assert!(out.is_empty());
        let mut out = Out::new();
        n.on_timer(&mut cx, TimerId::new(TimerSpace::Node, 3), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn single_holder_recovers_its_data_from_the_log() {
        let rec = |id, op| {
            postcard::to_allocvec(&UpdateRecord {
                id: RequestId { client: 1, seq: id },
                op,
            })
            .unwrap()
        };
        let records = vec![
            rec(
                1,
                KvOp::Write {
                    key: "a".into(),
                    value: 1,
                },
            ),
            rec(
                2,
                KvOp::Cas {
                    key: "a".into(),
                    expected: Some(1),
                    new: 2,
                },
            ),
        ];
        let (n, out) = boot::<Single>(
            1,
            &SingleConfig::default(),
            Recovery::of_group(GroupId::DEFAULT, None, records),
        );
        assert_eq!(n.store().get("a"), Some(2));
        assert_eq!(names(&out), ["event"]);
    }

    #[test]
    fn single_holder_with_an_undecodable_record_refuses_to_serve() {
        let records = vec![vec![0xff, 0xff, 0xff]];
        let (mut n, out) = boot::<Single>(
            1,
            &SingleConfig::default(),
            Recovery::of_group(GroupId::DEFAULT, None, records),
        );
        assert!(
            out.effects()
                .iter()
                .any(|e| matches!(e, Effect::Event(NodeEvent::RecoveryFailed { .. })))
        );
        let out = client(&mut n, 1, req(1, KvOp::Read { key: "k".into() }));
        match out.effects() {
            [Effect::Reply(r)] => assert!(matches!(r.result, Err(ClientError::Unavailable { .. }))),
            other => panic!("unexpected effects {other:?}"),
        }
    }

    #[test]
    fn oversized_keys_are_refused_before_the_log_by_both_baselines() {
        // The reported sizes: 5,000,000 bytes (over the WAL's 4 MiB record limit) and
        // 1 MiB (over the peer frame), and the first size over MAX_KEY_BYTES.
        for len in [5_000_000, 1 << 20, kvlab_types::MAX_KEY_BYTES + 1] {
            let big = req(
                1,
                KvOp::Write {
                    key: "k".repeat(len),
                    value: 1,
                },
            );
            let refused = |out: &Out<BaselineMsg>| match out.effects() {
                [Effect::Reply(r)] => matches!(
                    r.result,
                    Err(ClientError::Invalid {
                        reason: kvlab_types::InvalidRequest::KeyTooLong { .. }
                    })
                ),
                _ => false,
            };
            for id in [1, 2] {
                let (mut n, _) = boot::<Single>(id, &SingleConfig::default(), Recovery::default());
                let out = client(&mut n, id, big.clone());
                assert!(refused(&out), "single n{id}: {:?}", names(&out));
                let (mut n, _) =
                    boot::<AsyncPrimary>(id, &AsyncPrimaryConfig::default(), Recovery::default());
                let out = client(&mut n, id, big.clone());
                assert!(refused(&out), "async-primary n{id}: {:?}", names(&out));
            }
        }
        // A forged replicated update with such a key is refused by a backup.
        let (mut n, _) =
            boot::<AsyncPrimary>(2, &AsyncPrimaryConfig::default(), Recovery::default());
        let mut rng = seeded_rng(1);
        let mut out = Out::new();
        n.on_msg(
            &mut Cx::new(NodeId(2), Time::ZERO, &mut rng),
            NodeId(1),
            BaselineMsg::Replicate {
                seq: 1,
                id: RequestId { client: 1, seq: 1 },
                op: KvOp::Write {
                    key: "k".repeat(kvlab_types::MAX_KEY_BYTES + 1),
                    value: 1,
                },
            },
            &mut out,
        );
        assert_eq!(n.refused_messages(), 1);
        assert!(n.store().is_empty());
    }

    #[test]
    fn async_primary_acknowledges_before_syncing_and_replicates() {
        let (mut n, _) =
            boot::<AsyncPrimary>(1, &AsyncPrimaryConfig::default(), Recovery::default());
        let out = client(
            &mut n,
            1,
            req(
                1,
                KvOp::Write {
                    key: "k".into(),
                    value: 3,
                },
            ),
        );
        assert_eq!(names(&out), ["persist", "send", "send", "reply"]);
    }

    #[test]
    fn async_backup_serves_stale_reads_and_applies_replicated_updates() {
        let (mut n, _) =
            boot::<AsyncPrimary>(2, &AsyncPrimaryConfig::default(), Recovery::default());
        let mut rng = seeded_rng(1);
        let mut cx = Cx::new(NodeId(2), Time::ZERO, &mut rng);
        let mut out = Out::new();
        n.on_client(&mut cx, req(1, KvOp::Read { key: "k".into() }), &mut out);
        assert_eq!(names(&out), ["reply"]);
        let mut out = Out::new();
        n.on_msg(
            &mut cx,
            NodeId(1),
            BaselineMsg::Replicate {
                seq: 2,
                id: RequestId { client: 1, seq: 1 },
                op: KvOp::Write {
                    key: "k".into(),
                    value: 9,
                },
            },
            &mut out,
        );
        // An older update arriving late is skipped.
        n.on_msg(
            &mut cx,
            NodeId(1),
            BaselineMsg::Replicate {
                seq: 1,
                id: RequestId { client: 1, seq: 0 },
                op: KvOp::Write {
                    key: "k".into(),
                    value: 1,
                },
            },
            &mut out,
        );
        assert_eq!(n.store().get("k"), Some(9));
    }
}

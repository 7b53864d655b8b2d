//! Forwarding client requests to the node that can serve them, with a timeout: the
//! followers of `raft` pass requests to their group's leader, the non-holders of
//! `single` to the holder, the backups of `async-primary` their writes to the primary.
//!
//! The forwarder speaks its own messages ([`ForwardMsg`]), which a system wraps into its
//! message type (the `wrap` argument of [`Forwarder::forward`]). Its timers live in
//! [`TimerSpace::Forward`], so they never collide with the system's.

use std::collections::BTreeMap;
use std::time::Duration;

use kvlab_types::{
    ClientError, ClientRequest, ClientResponse, Effect, KvOp, NodeId, Out, RequestId, TimerId,
    TimerSpace,
};
use serde::{Deserialize, Serialize};

/// The most forwarded requests one node keeps waiting at once; beyond it new requests
/// are refused (`Unavailable`) rather than queued without bound.
pub const MAX_PENDING_FORWARDS: usize = 4096;

/// The messages of forwarding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardMsg {
    /// A node that cannot serve a client request passes it on.
    Forward {
        /// The client's request, unchanged.
        req: ClientRequest,
    },
    /// The answer to a [`ForwardMsg::Forward`].
    ForwardReply {
        /// The response for the client.
        resp: ClientResponse,
    },
}

/// Tracks requests passed on to another node until their answer or timeout.
#[derive(Clone, Debug)]
pub struct Forwarder {
    timeout: Duration,
    /// Each request waiting for an answer: its timer, and whether it is a read.
    pending: BTreeMap<RequestId, (TimerId, bool)>,
    timers: BTreeMap<TimerId, RequestId>,
    next_timer: u64,
}

impl Forwarder {
    /// A forwarder that gives up on an answer after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Forwarder {
            timeout,
            pending: BTreeMap::new(),
            timers: BTreeMap::new(),
            next_timer: 0,
        }
    }

    /// Passes `req` to `to`. The client gets the answer through [`Forwarder::on_reply`],
    /// or an `Indeterminate` error at the timeout (the request may have been applied).
    pub fn forward<M>(
        &mut self,
        to: NodeId,
        req: ClientRequest,
        out: &mut Out<M>,
        wrap: impl FnOnce(ForwardMsg) -> M,
    ) {
        if let Some((old, _)) = self.pending.remove(&req.id) {
            // A retry of a request still in flight: keep one timer for it.
            self.timers.remove(&old);
            out.cancel_timer(old);
        }
        if self.pending.len() >= MAX_PENDING_FORWARDS {
            out.reply(
                req.id,
                Err(ClientError::Unavailable {
                    reason: format!(
                        "too many forwarded requests in flight ({MAX_PENDING_FORWARDS})"
                    ),
                    hint: Some(to),
                }),
            );
            return;
        }
        let timer = TimerId::new(TimerSpace::Forward, self.next_timer);
        self.next_timer = self.next_timer.wrapping_add(1);
        let read = matches!(req.op, KvOp::Read { .. });
        self.pending.insert(req.id, (timer, read));
        self.timers.insert(timer, req.id);
        out.set_timer(timer, self.timeout);
        out.send(to, wrap(ForwardMsg::Forward { req }));
    }

    /// Delivers an answer to a forwarded request; a late or unknown one is ignored.
    ///
    /// A refusal (`Unavailable`: the owner did not take *this copy*) of a write is
    /// answered `Indeterminate`: the network may have duplicated the forward, and a copy
    /// the owner took before it refused this one (it was the leader then, or still a
    /// member) may commit. "Surely did not happen" would be a lie. Raft swarm seed 1558
    /// of configs/swarm.toml: a write refused with "this node is not a member of its
    /// group" had taken effect through its duplicate.
    pub fn on_reply<M>(&mut self, mut resp: ClientResponse, out: &mut Out<M>) {
        if let Some((timer, read)) = self.pending.remove(&resp.id) {
            self.timers.remove(&timer);
            out.cancel_timer(timer);
            if let Err(ClientError::Unavailable { reason, .. }) = &resp.result
                && !read
            {
                resp.result = Err(ClientError::Indeterminate {
                    reason: format!(
                        "{reason} (refused by the owner; another copy of the forwarded \
                         request may still take effect)"
                    ),
                });
            }
            out.push(Effect::Reply(resp));
        }
    }

    /// Handles `timer` if it is the forwarder's; returns whether it was.
    pub fn on_timer<M>(&mut self, timer: TimerId, out: &mut Out<M>) -> bool {
        if timer.space != TimerSpace::Forward {
            return false;
        }
        if let Some(id) = self.timers.remove(&timer) {
            self.pending.remove(&id);
            out.reply(
                id,
                Err(ClientError::Indeterminate {
                    reason: "no answer from the owner within the forward timeout".into(),
                }),
            );
        }
        true
    }

    /// Requests waiting for an answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(seq: u64, op: KvOp) -> ClientRequest {
        ClientRequest {
            id: RequestId { client: 1, seq },
            op,
        }
    }

    fn refused(id: RequestId) -> ClientResponse {
        ClientResponse {
            id,
            result: Err(ClientError::Unavailable {
                reason: "this node is not a member of its group".into(),
                hint: None,
            }),
        }
    }

    fn replies(out: &mut Out<ForwardMsg>) -> Vec<ClientResponse> {
        out.drain()
            .filter_map(|e| match e {
                Effect::Reply(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// The owner's refusal covers one copy of a forwarded request; a duplicate it took
    /// earlier may commit. So a refused write is `Indeterminate`; a refused read (no
    /// effect either way) and every other answer pass unchanged.
    #[test]
    fn a_refused_forwarded_write_is_indeterminate_and_a_refused_read_stays_definite() {
        let mut f = Forwarder::new(Duration::from_millis(100));
        let mut out = Out::new();
        let write = req(
            1,
            KvOp::Write {
                key: "k".into(),
                value: 1,
            },
        );
        let read = req(2, KvOp::Read { key: "k".into() });
        let ok_write = req(
            3,
            KvOp::Write {
                key: "k".into(),
                value: 2,
            },
        );
        for r in [&write, &read, &ok_write] {
            f.forward(NodeId(2), r.clone(), &mut out, |m| m);
        }
        out.drain().for_each(drop);
        f.on_reply(refused(write.id), &mut out);
        f.on_reply(refused(read.id), &mut out);
        let done = ClientResponse {
            id: ok_write.id,
            result: Ok(kvlab_types::OpOutput::Done),
        };
        f.on_reply(done.clone(), &mut out);
        let r = replies(&mut out);
        assert!(
            matches!(&r[0].result, Err(ClientError::Indeterminate { reason }) if reason.contains("not a member")),
            "{:?}",
            r[0]
        );
        assert_eq!(r[1], refused(read.id));
        assert_eq!(r[2], done);
        assert_eq!(f.pending(), 0);
    }
}

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
    ClientError, ClientRequest, ClientResponse, Effect, NodeId, Out, RequestId, TimerId, TimerSpace,
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
    pending: BTreeMap<RequestId, TimerId>,
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
        if let Some(old) = self.pending.remove(&req.id) {
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
        self.pending.insert(req.id, timer);
        self.timers.insert(timer, req.id);
        out.set_timer(timer, self.timeout);
        out.send(to, wrap(ForwardMsg::Forward { req }));
    }

    /// Delivers an answer to a forwarded request; a late or unknown one is ignored.
    pub fn on_reply<M>(&mut self, resp: ClientResponse, out: &mut Out<M>) {
        if let Some(timer) = self.pending.remove(&resp.id) {
            self.timers.remove(&timer);
            out.cancel_timer(timer);
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

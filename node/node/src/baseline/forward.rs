//! Forwarding client requests to the node that can serve them, with a timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use kvlab_types::{ClientError, ClientRequest, ClientResponse, NodeId, Out, RequestId, TimerId};

use super::BaselineMsg;

/// The most forwarded requests one node keeps waiting at once; beyond it new requests
/// are refused (`Unavailable`) rather than queued without bound.
pub const MAX_PENDING_FORWARDS: usize = 4096;

/// Timer ids at or above this are the forwarder's; a protocol keeps its own below it.
const FORWARD_TIMER_BASE: u64 = 1 << 32;

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
            next_timer: FORWARD_TIMER_BASE,
        }
    }

    /// Passes `req` to `to`. The client gets the answer through [`Forwarder::on_reply`],
    /// or an `Indeterminate` error at the timeout (the request may have been applied).
    pub fn forward(&mut self, to: NodeId, req: ClientRequest, out: &mut Out<BaselineMsg>) {
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
        let timer = TimerId(self.next_timer);
        self.next_timer += 1;
        self.pending.insert(req.id, timer);
        self.timers.insert(timer, req.id);
        out.set_timer(timer, self.timeout);
        out.send(to, BaselineMsg::Forward { req });
    }

    /// Delivers an answer to a forwarded request; a late or unknown one is ignored.
    pub fn on_reply(&mut self, resp: ClientResponse, out: &mut Out<BaselineMsg>) {
        if let Some(timer) = self.pending.remove(&resp.id) {
            self.timers.remove(&timer);
            out.cancel_timer(timer);
            out.push(kvlab_types::Effect::Reply(resp));
        }
    }

    /// Handles `timer` if it is the forwarder's; returns whether it was.
    pub fn on_timer(&mut self, timer: TimerId, out: &mut Out<BaselineMsg>) -> bool {
        if timer.0 < FORWARD_TIMER_BASE {
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

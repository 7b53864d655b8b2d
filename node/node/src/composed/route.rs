//! Routing: how a node that receives a client request (the *gateway*) gets it to the
//! leader of the key's vnode.
//!
//! The gateway keeps a route cache — per vnode, the replicas it believes in, their
//! configuration epoch and the leader hint — seeded with the initial placement and
//! corrected by every refusal:
//!
//! * `NotLeader { leader }`: the replica is not the leader; try the hint.
//! * `EpochNotMatch { descriptor }`: the replica's configuration is newer than the
//!   gateway's (the group moved): adopt the descriptor and try its leader.
//! * `GroupNotHere`: the node hosts no replica of the vnode (it was moved away); try
//!   another cached replica, and when none is left ask a meta voter for the directory
//!   (`Lookup`).
//!
//! Every refusal is **definite**: the request never entered a log, so retrying it
//! elsewhere is safe. A refusal that names no leader (an election is under way) is
//! retried after `route_backoff_ms`. At most `max_route_attempts` attempts; then the
//! client is told `Unavailable`. An attempt that gets no answer within a
//! [`ATTEMPTS_PER_ROUTE_TIMEOUT`]th of `route_timeout_ms` is tried again at another
//! replica (the silent node may be dead while SWIM still only suspects it; the cache
//! forgets it as the leader); when `route_timeout_ms` has passed since the request
//! arrived the request ends: a write's outcome is then unknown (`Indeterminate`), a read
//! fails (it had no effect). Duplicated or late refusals are
//! matched by attempt number and ignored when stale; a late answer to a finished request
//! is dropped. Retries reuse the request id, so the vnode's session table applies a
//! write at most once even if two attempts reached two leaders.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kvlab_ring::{Placement, VnodeId};
use kvlab_types::{ClientRequest, ClientResponse, KvOp, NodeId, RequestId, Time};
use serde::{Deserialize, Serialize};

use crate::replica::{indeterminate, unavailable};

/// A meta lookup not answered within this many backoffs is asked again.
pub const LOOKUP_RETRY_BACKOFFS: u32 = 4;

/// An attempt that gets no answer within `route_timeout_ms / ATTEMPTS_PER_ROUTE_TIMEOUT`
/// is tried again elsewhere, within the request's `route_timeout_ms` in all.
pub const ATTEMPTS_PER_ROUTE_TIMEOUT: u32 = 4;

/// The most requests a gateway routes at once; beyond it requests are refused.
pub const MAX_PENDING_ROUTES: usize = 65_536;

/// What a gateway knows of a vnode's group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteDescriptor {
    /// Voters.
    pub voters: Vec<NodeId>,
    /// The configuration epoch.
    pub epoch: u64,
    /// The leader, if known.
    pub leader: Option<NodeId>,
}

/// Why a replica did not take a routed request (always before it entered any log).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteRefusal {
    /// Not the leader; the leader it knows of.
    NotLeader {
        /// The leader hint.
        leader: Option<NodeId>,
    },
    /// The group's configuration is newer than the one the gateway routed by.
    EpochNotMatch {
        /// The replica's view of the group.
        descriptor: RouteDescriptor,
    },
    /// This node hosts no replica of the vnode.
    GroupNotHere,
}

/// Routing between a gateway and a replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteMsg {
    /// A client request routed to a replica of its vnode.
    Request {
        /// The request.
        req: ClientRequest,
        /// The gateway's attempt number.
        attempt: u32,
        /// The configuration epoch the gateway routed by.
        epoch: u64,
    },
    /// The replica's answer (the request's outcome).
    Reply {
        /// The answer.
        resp: ClientResponse,
    },
    /// The replica did not take the request.
    Refused {
        /// The request.
        id: RequestId,
        /// The attempt refused.
        attempt: u32,
        /// Why, with a hint.
        refusal: RouteRefusal,
    },
}

#[derive(Clone, Debug)]
struct Pending {
    req: ClientRequest,
    vnode: VnodeId,
    attempt: u32,
    /// The node the current attempt went to (`None` while waiting to retry or for meta).
    target: Option<NodeId>,
    /// When the current attempt times out.
    attempt_deadline: Time,
    /// When the request ends unless answered (`route_timeout_ms` after it arrived).
    deadline: Time,
    /// When to send the next attempt (after a refusal without a leader).
    retry_at: Option<Time>,
    /// Nodes that refused with `GroupNotHere` or without a hint since the last lookup.
    refused_by: BTreeSet<NodeId>,
    /// Whether an attempt was sent to a replica. A refusal answers one copy of one
    /// attempt: the network may have duplicated the request, and a copy the refusing
    /// leader (or an earlier one) proposed may still commit. So once a write was sent,
    /// no failure of the route is definite ([`Pending::final_failure`]).
    sent: bool,
}

impl Pending {
    /// The answer when the route gives up, or a replica refuses for good: `Unavailable`
    /// (surely not done) for reads and for writes never sent, `Indeterminate` for a write
    /// that was sent (it may have taken effect).
    fn final_failure(&self, failure: ClientResponse) -> ClientResponse {
        let definite = matches!(
            failure.result,
            Err(kvlab_types::ClientError::Unavailable { .. })
        );
        if !definite || !self.sent || matches!(self.req.op, KvOp::Read { .. }) {
            return failure;
        }
        let why = match &failure.result {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        };
        indeterminate(
            failure.id,
            &format!("{why}; an earlier copy of the request may have taken effect"),
        )
    }
}

/// What the gateway wants done.
#[derive(Debug, PartialEq)]
pub enum RouteAction {
    /// Send attempt `attempt` of `req` to `to` (maybe this node itself).
    Send {
        /// The replica.
        to: NodeId,
        /// The request.
        req: ClientRequest,
        /// Its attempt number.
        attempt: u32,
        /// The cached epoch.
        epoch: u64,
    },
    /// Ask meta for `vnode`'s directory.
    Lookup(VnodeId),
    /// Answer the client.
    Answer(ClientResponse),
}

/// A node's routing state: the cache and the requests under way.
#[derive(Debug)]
pub struct Gateway {
    cache: BTreeMap<VnodeId, RouteDescriptor>,
    pending: BTreeMap<RequestId, Pending>,
    max_attempts: u32,
    route_timeout: Duration,
    attempt_timeout: Duration,
    backoff: Duration,
    /// Redirects followed (refusals acted on), for the run's routing metric.
    pub redirects: u64,
    /// Nodes SWIM holds dead or gone: never routed to while another choice exists.
    down: BTreeSet<NodeId>,
}

impl Gateway {
    /// A gateway whose cache starts from the initial placement; a request ends
    /// `route_timeout` after it arrived.
    pub fn new(
        bootstrap: &Placement,
        max_attempts: u32,
        route_timeout: Duration,
        backoff: Duration,
    ) -> Self {
        let cache = bootstrap
            .iter()
            .map(|(v, set)| {
                let d = RouteDescriptor {
                    voters: set.voters.iter().copied().collect(),
                    epoch: set.conf_epoch.0,
                    leader: None,
                };
                (v, d)
            })
            .collect();
        Gateway {
            cache,
            pending: BTreeMap::new(),
            max_attempts,
            route_timeout,
            attempt_timeout: route_timeout / ATTEMPTS_PER_ROUTE_TIMEOUT,
            backoff,
            redirects: 0,
            down: BTreeSet::new(),
        }
    }

    /// The nodes SWIM holds dead or gone (they are tried only when nothing else is left).
    pub fn set_down(&mut self, down: BTreeSet<NodeId>) {
        self.down = down;
    }

    /// Requests under way.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The cached descriptor of `v`.
    pub fn cached(&self, v: VnodeId) -> Option<&RouteDescriptor> {
        self.cache.get(&v)
    }

    /// Starts routing `req` (of vnode `v`).
    pub fn start(&mut self, now: Time, req: ClientRequest, v: VnodeId) -> RouteAction {
        if self.pending.len() >= MAX_PENDING_ROUTES {
            let reason = format!("too many requests being routed ({MAX_PENDING_ROUTES})");
            return RouteAction::Answer(unavailable(req.id, &reason, None));
        }
        if self.pending.contains_key(&req.id) {
            // A client re-sent a request still under way: one route is enough.
            return RouteAction::Answer(unavailable(
                req.id,
                "the same request id is already being routed",
                None,
            ));
        }
        let id = req.id;
        let p = Pending {
            req,
            vnode: v,
            attempt: 0,
            target: None,
            attempt_deadline: now,
            deadline: now + self.route_timeout,
            retry_at: None,
            refused_by: BTreeSet::new(),
            sent: false,
        };
        self.pending.insert(id, p);
        self.dispatch(now, id)
    }

    /// The next attempt of `id`: to the cached leader, else to a replica that has not
    /// refused, else a meta lookup.
    fn dispatch(&mut self, now: Time, id: RequestId) -> RouteAction {
        let Some(p) = self.pending.get_mut(&id) else {
            return RouteAction::Answer(unavailable(id, "no longer routed", None));
        };
        if p.attempt >= self.max_attempts {
            let p = self.pending.remove(&id).expect("looked up above");
            let reason = format!("no leader reached in {} attempts", p.attempt);
            return RouteAction::Answer(p.final_failure(unavailable(id, &reason, None)));
        }
        p.attempt += 1;
        p.retry_at = None;
        p.attempt_deadline = (now + self.attempt_timeout).min(p.deadline);
        let entry = self.cache.get(&p.vnode);
        // Nodes SWIM holds down are tried only when nothing else is left: this node's
        // own view may be the stale one (it heard no one for a while), and skipping them
        // for good would leave it unable to route at all.
        let not_refused = |n: &NodeId| !p.refused_by.contains(n);
        let up = |n: &NodeId| not_refused(n) && !self.down.contains(n);
        let leader = entry.and_then(|e| e.leader);
        let voters: &[NodeId] = entry.map_or(&[], |e| &e.voters);
        let turn = p.attempt as usize + id.seq as usize;
        let pick_from = |c: Vec<NodeId>| (!c.is_empty()).then(|| c[turn % c.len()]);
        let pick = leader
            .filter(up)
            .or_else(|| pick_from(voters.iter().copied().filter(up).collect()))
            .or_else(|| leader.filter(not_refused))
            .or_else(|| pick_from(voters.iter().copied().filter(not_refused).collect()));
        match pick {
            Some(to) => {
                p.target = Some(to);
                p.sent = true;
                RouteAction::Send {
                    to,
                    req: p.req.clone(),
                    attempt: p.attempt,
                    epoch: entry.map_or(0, |e| e.epoch),
                }
            }
            None => {
                // Ask meta; if its answer is lost, ask again (maybe another voter).
                p.target = None;
                p.refused_by.clear();
                p.retry_at = Some(now + self.backoff * LOOKUP_RETRY_BACKOFFS);
                RouteAction::Lookup(p.vnode)
            }
        }
    }

    /// A refusal of attempt `attempt` of `id` by `from`.
    pub fn on_refused(
        &mut self,
        now: Time,
        from: NodeId,
        id: RequestId,
        attempt: u32,
        refusal: RouteRefusal,
    ) -> Option<RouteAction> {
        let p = self.pending.get_mut(&id)?;
        if p.attempt != attempt || p.target != Some(from) {
            return None; // a duplicate, or an answer to an attempt already given up
        }
        self.redirects += 1;
        let v = p.vnode;
        let mut wait = false;
        match refusal {
            RouteRefusal::NotLeader { leader } => {
                let leader = leader.filter(|&l| l != from);
                if leader.is_none() {
                    wait = true;
                }
                if let Some(e) = self.cache.get_mut(&v) {
                    e.leader = leader;
                }
                p.refused_by.insert(from);
            }
            RouteRefusal::EpochNotMatch { descriptor } => {
                p.refused_by.clear();
                p.refused_by.insert(from);
                if descriptor.leader.is_none() {
                    wait = true;
                }
                self.adopt(v, descriptor);
            }
            RouteRefusal::GroupNotHere => {
                p.refused_by.insert(from);
                if let Some(e) = self.cache.get_mut(&v)
                    && e.leader == Some(from)
                {
                    e.leader = None;
                }
            }
        }
        if wait {
            let p = self.pending.get_mut(&id)?;
            p.target = None;
            p.retry_at = Some(now + self.backoff);
            return None;
        }
        Some(self.dispatch(now, id))
    }

    /// A replica's answer: finishes the request, unless it is a definite refusal that
    /// names a leader (`Unavailable` with a hint) and attempts remain.
    pub fn on_reply(
        &mut self,
        now: Time,
        from: NodeId,
        resp: ClientResponse,
    ) -> Option<RouteAction> {
        let p = self.pending.get(&resp.id)?;
        if let Err(kvlab_types::ClientError::Unavailable { hint, .. }) = &resp.result
            && p.target == Some(from)
        {
            let attempt = p.attempt;
            let refusal = RouteRefusal::NotLeader { leader: *hint };
            return self.on_refused(now, from, resp.id, attempt, refusal);
        }
        let p = self.pending.remove(&resp.id)?;
        Some(RouteAction::Answer(p.final_failure(resp)))
    }

    /// Meta's directory for `v` (or a replica's newer descriptor): adopt it if it is
    /// newer, then retry every request of `v` waiting for one.
    pub fn on_directory(
        &mut self,
        now: Time,
        v: VnodeId,
        descriptor: Option<RouteDescriptor>,
    ) -> Vec<RouteAction> {
        if let Some(d) = descriptor {
            self.adopt(v, d);
        }
        let waiting: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.vnode == v && p.target.is_none())
            .map(|(id, _)| *id)
            .collect();
        waiting
            .into_iter()
            .map(|id| self.dispatch(now, id))
            .collect()
    }

    fn adopt(&mut self, v: VnodeId, d: RouteDescriptor) {
        match self.cache.get_mut(&v) {
            Some(e) if e.epoch > d.epoch => {}
            Some(e) if e.epoch == d.epoch => {
                if d.leader.is_some() {
                    e.leader = d.leader;
                }
            }
            _ => {
                self.cache.insert(v, d);
            }
        }
    }

    /// Stops routing `id`: this node's own replica took it and answers the client.
    pub fn forget(&mut self, id: RequestId) {
        self.pending.remove(&id);
    }

    /// Notes a leader this node learned of first-hand (it hosts a replica).
    pub fn note_leader(&mut self, v: VnodeId, leader: Option<NodeId>, epoch: u64) {
        if let Some(e) = self.cache.get_mut(&v)
            && e.epoch <= epoch
            && leader.is_some()
        {
            e.leader = leader;
        }
    }

    /// Whether SWIM holds `n` down (dead or gone).
    pub fn is_down(&self, n: NodeId) -> bool {
        self.down.contains(&n)
    }

    /// A leader hint from a node that does not lead `v` (`None`: it knows of none, so
    /// the cached leader is forgotten and the voters are tried in turn).
    pub fn hint_leader(&mut self, v: VnodeId, leader: Option<NodeId>) {
        if let Some(e) = self.cache.get_mut(&v) {
            e.leader = leader;
        }
    }

    /// Timeouts and due retries: answers for attempts that got nothing in time, and the
    /// next attempts of requests whose backoff ended or whose meta lookup went unanswered.
    pub fn tick(&mut self, now: Time) -> Vec<RouteAction> {
        let mut actions = Vec::new();
        let ids: Vec<RequestId> = self.pending.keys().copied().collect();
        for id in ids {
            let Some(p) = self.pending.get(&id) else {
                continue;
            };
            if let Some(at) = p.retry_at {
                if at <= now {
                    actions.push(self.dispatch(now, id));
                }
                continue;
            }
            if p.attempt_deadline > now {
                continue;
            }
            if p.deadline > now {
                if let Some(silent) = p.target {
                    // Silent, maybe dead: try elsewhere, and stop believing it leads.
                    let v = p.vnode;
                    if let Some(p) = self.pending.get_mut(&id) {
                        p.refused_by.insert(silent);
                    }
                    if let Some(e) = self.cache.get_mut(&v)
                        && e.leader == Some(silent)
                    {
                        e.leader = None;
                    }
                    actions.push(self.dispatch(now, id));
                }
                continue;
            }
            let p = self.pending.remove(&id).expect("looked up above");
            match (p.target, &p.req.op) {
                // Waiting for meta, or a read: nothing took effect.
                (None, _) | (_, KvOp::Read { .. }) => {
                    let reason = "no answer within the route timeout";
                    actions.push(RouteAction::Answer(unavailable(id, reason, None)));
                }
                (Some(_), _) => {
                    let reason = "no answer from the vnode's leader within the route timeout";
                    actions.push(RouteAction::Answer(indeterminate(id, reason)));
                }
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvlab_ring::RingLayout;
    use kvlab_types::ClientError;

    fn routed(op: KvOp) -> (Gateway, RouteAction) {
        let layout = RingLayout::new(1).expect("one vnode");
        let mut g = Gateway::new(
            &Placement::new(layout),
            3, // the meta lookup is the first attempt
            Duration::from_millis(100),
            Duration::from_millis(10),
        );
        let req = ClientRequest {
            id: RequestId { client: 1, seq: 1 },
            op,
        };
        let v = layout.vnode_of(req.op.key());
        assert!(matches!(
            g.start(Time::ZERO, req, v),
            RouteAction::Lookup(_)
        ));
        let d = RouteDescriptor {
            voters: vec![NodeId(1), NodeId(2)],
            epoch: 1,
            leader: Some(NodeId(1)),
        };
        let sent = g.on_directory(Time::ZERO, v, Some(d));
        assert!(matches!(
            sent[..],
            [RouteAction::Send { to: NodeId(1), .. }]
        ));
        // n1 refuses for good, naming n2; n2 refuses, naming n1: the attempts run out.
        let refuse = |id, hint| ClientResponse {
            id,
            result: Err(ClientError::Unavailable {
                reason: "leader transfer in progress".into(),
                hint: Some(hint),
            }),
        };
        let id = RequestId { client: 1, seq: 1 };
        let next = g.on_reply(Time::ZERO, NodeId(1), refuse(id, NodeId(2)));
        assert!(
            matches!(next, Some(RouteAction::Send { to: NodeId(2), .. })),
            "{next:?}"
        );
        let last = g.on_reply(Time::ZERO, NodeId(2), refuse(id, NodeId(1)));
        (g, last.expect("an answer"))
    }

    /// A leader that went silent (dead, while SWIM only suspects it) costs one attempt's
    /// timeout, not the request: the next attempt goes to another voter within the route
    /// timeout, the cache stops naming the silent node, and a write whose retry succeeds
    /// is `ok` (the session table applies it once). Swarm seed 1575 of
    /// configs/swarm.toml: after a node was lost for good, every request whose cache
    /// named it timed out until SWIM declared it dead, seconds later.
    #[test]
    fn an_attempt_to_a_silent_leader_is_retried_at_another_voter_before_the_route_timeout() {
        let layout = RingLayout::new(1).expect("one vnode");
        let mut g = Gateway::new(
            &Placement::new(layout),
            8,
            Duration::from_millis(400),
            Duration::from_millis(10),
        );
        let id = RequestId { client: 1, seq: 1 };
        let req = ClientRequest {
            id,
            op: KvOp::Write {
                key: "k".into(),
                value: 1,
            },
        };
        let v = layout.vnode_of(req.op.key());
        g.start(Time::ZERO, req, v);
        let d = RouteDescriptor {
            voters: vec![NodeId(1), NodeId(2), NodeId(3)],
            epoch: 1,
            leader: Some(NodeId(2)),
        };
        let sent = g.on_directory(Time::ZERO, v, Some(d));
        assert!(matches!(
            sent[..],
            [RouteAction::Send { to: NodeId(2), .. }]
        ));
        let ms = |m: u64| Time::ZERO + Duration::from_millis(m);
        assert!(g.tick(ms(99)).is_empty(), "the attempt has 100 ms");
        let retried = g.tick(ms(100));
        let to = match &retried[..] {
            [RouteAction::Send { to, attempt: 3, .. }] => *to,
            other => panic!("expected a second attempt, got {other:?}"),
        };
        assert_ne!(to, NodeId(2), "the silent node is not tried again");
        assert_eq!(g.cached(v).and_then(|d| d.leader), None);
        let ok = ClientResponse {
            id,
            result: Ok(kvlab_types::OpOutput::Done),
        };
        assert_eq!(
            g.on_reply(ms(150), to, ok.clone()),
            Some(RouteAction::Answer(ok))
        );
        // Silent everywhere: the request ends at the route timeout, Indeterminate.
        let id2 = RequestId { client: 1, seq: 2 };
        let req2 = ClientRequest {
            id: id2,
            op: KvOp::Write {
                key: "k".into(),
                value: 2,
            },
        };
        g.start(ms(1000), req2, v);
        let mut answer = None;
        for t in (1000..=1400).step_by(10) {
            for a in g.tick(ms(t)) {
                if let RouteAction::Answer(r) = a {
                    answer = Some((t, r));
                }
            }
        }
        let (t, r) = answer.expect("answered by the route timeout");
        assert_eq!(t, 1400);
        assert!(
            matches!(r.result, Err(ClientError::Indeterminate { .. })),
            "{r:?}"
        );
    }

    /// A gateway whose SWIM holds every other voter down still tries them, after the
    /// ones it believes up (swarm seed 2545 of configs/swarm.toml: after `n2 hears no
    /// one`, n2 held n1 and n3 dead past the heal and answered every request "no leader
    /// reached" until the run ended).
    #[test]
    fn voters_swim_holds_down_are_tried_when_nothing_else_is_left() {
        let layout = RingLayout::new(1).expect("one vnode");
        let mut g = Gateway::new(
            &Placement::new(layout),
            8,
            Duration::from_millis(100),
            Duration::from_millis(10),
        );
        g.set_down([NodeId(1), NodeId(3)].into_iter().collect());
        let req = ClientRequest {
            id: RequestId { client: 1, seq: 1 },
            op: KvOp::Read { key: "k".into() },
        };
        let v = layout.vnode_of(req.op.key());
        g.start(Time::ZERO, req, v);
        let d = RouteDescriptor {
            voters: vec![NodeId(1), NodeId(2), NodeId(3)],
            epoch: 1,
            leader: Some(NodeId(1)),
        };
        let sent = g.on_directory(Time::ZERO, v, Some(d));
        assert!(
            matches!(sent[..], [RouteAction::Send { to: NodeId(2), .. }]),
            "{sent:?}"
        );
        // n2 refuses naming n1, whom SWIM holds down: n1 is tried all the same.
        let id = RequestId { client: 1, seq: 1 };
        let refusal = RouteRefusal::NotLeader {
            leader: Some(NodeId(1)),
        };
        let next = g.on_refused(Time::ZERO, NodeId(2), id, 2, refusal);
        assert!(
            matches!(next, Some(RouteAction::Send { to: NodeId(1), .. })),
            "{next:?}"
        );
    }

    /// A refusal answers one copy of one attempt; a duplicated copy of a write may have
    /// been proposed and may commit, so the route's failure is not definite (swarm seed
    /// 2606 of configs/swarm.toml: a `duplicate` fault made a refused write's other copy
    /// commit, and the client was told `fail`).
    #[test]
    fn a_sent_write_whose_route_fails_is_indeterminate_and_a_read_is_unavailable() {
        let write = KvOp::Write {
            key: "k".into(),
            value: 1,
        };
        let (g, answer) = routed(write);
        assert_eq!(g.pending(), 0);
        match answer {
            RouteAction::Answer(ClientResponse {
                result: Err(ClientError::Indeterminate { reason }),
                ..
            }) => assert!(reason.contains("may have taken effect"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let (_, answer) = routed(KvOp::Read { key: "k".into() });
        assert!(
            matches!(
                answer,
                RouteAction::Answer(ClientResponse {
                    result: Err(ClientError::Unavailable { .. }),
                    ..
                })
            ),
            "{answer:?}"
        );
    }
}

//! `single`: one node holds the data and makes each change durable before answering.

use std::ops::ControlFlow;
use std::time::Duration;

use kvlab_types::{
    ClientError, ClientRequest, Cx, GroupId, NodeEvent, NodeId, Out, Protocol, Recovery, TimerId,
};
use serde::{Deserialize, Serialize};

use super::{BaselineMsg, UpdateRecord, answer, owner, replay};
use crate::forward::{ForwardMsg, Forwarder};
use crate::kv::KvStore;

/// Configuration of the `single` system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SingleConfig {
    /// The node that holds the data (default: the smallest node id).
    pub holder: Option<NodeId>,
    /// How long a non-holder waits for the holder's answer before telling the client the
    /// outcome is unknown.
    pub forward_timeout_ms: u64,
}

impl Default for SingleConfig {
    fn default() -> Self {
        SingleConfig {
            holder: None,
            forward_timeout_ms: 500,
        }
    }
}

/// A node of the `single` system. See [the module docs](super).
///
/// The holder applies a request, appends it to its WAL, syncs, and only then answers;
/// reads also wait behind a sync barrier, so no answer ever reveals a write that a crash
/// could still lose. On restart it replays its WAL.
#[derive(Debug)]
pub struct Single {
    holder: NodeId,
    kv: KvStore,
    forwarder: Forwarder,
    /// Set when recovery found a record it cannot decode: the node then refuses to serve
    /// rather than answer from a state it knows is incomplete.
    poisoned: Option<String>,
}

impl Single {
    /// Whether this node holds the data.
    pub fn is_holder(&self, id: NodeId) -> bool {
        id == self.holder
    }

    /// The data (meaningful on the holder).
    pub fn store(&self) -> &KvStore {
        &self.kv
    }

    fn serve(&mut self, req: ClientRequest, reply_to: Option<NodeId>, out: &mut Out<BaselineMsg>) {
        if let Err(reason) = crate::validate_kv_only(&req) {
            // Refused before it can reach the log.
            answer(req.id, Err(ClientError::Invalid { reason }), reply_to, out);
            return;
        }
        let result = match &self.poisoned {
            Some(why) => Err(ClientError::Unavailable {
                reason: format!("holder cannot recover its log: {why}"),
                hint: None,
            }),
            None => {
                let result = self.kv.apply(req.id, &req.op);
                if !req.op.is_read_only() {
                    // Encoding a plain struct into a Vec cannot fail; if it ever did the
                    // update would not be durable, so refuse to acknowledge it.
                    match UpdateRecord::encode(req.id, &req.op) {
                        Ok(bytes) => out.persist(GroupId::DEFAULT, bytes),
                        Err(e) => {
                            self.poisoned = Some(format!("cannot encode a log record: {e}"));
                        }
                    }
                }
                // Even a read waits for the sync barrier: it may observe a write whose
                // record is not durable yet.
                out.sync();
                result
            }
        };
        answer(req.id, result, reply_to, out);
    }
}

impl Protocol for Single {
    type Msg = BaselineMsg;
    type Config = SingleConfig;

    fn boot(
        cx: &mut Cx<'_>,
        config: &SingleConfig,
        peers: &[NodeId],
        recovered: Recovery,
        out: &mut Out<BaselineMsg>,
    ) -> Self {
        let holder = owner(config.holder, peers);
        let mut node = Single {
            holder,
            kv: KvStore::default(),
            forwarder: Forwarder::new(Duration::from_millis(config.forward_timeout_ms)),
            poisoned: None,
        };
        if cx.id == holder {
            let records = recovered.group(GroupId::DEFAULT).records;
            let applied = replay(&mut node.kv, &records, |i, e| {
                let reason = format!("record {i} of {}: {e}", records.len());
                out.event(NodeEvent::RecoveryFailed {
                    reason: reason.clone(),
                });
                node.poisoned = Some(reason);
                ControlFlow::Break(())
            });
            out.event(NodeEvent::NodeStarted {
                role: "holder".into(),
                records: records.len() as u64,
                snapshot: false,
                term: 0,
                applied,
            });
        }
        node
    }

    fn on_msg(
        &mut self,
        cx: &mut Cx<'_>,
        from: NodeId,
        msg: BaselineMsg,
        out: &mut Out<BaselineMsg>,
    ) {
        match msg {
            BaselineMsg::Forward(ForwardMsg::Forward { req }) if cx.id == self.holder => {
                self.serve(req, Some(from), out)
            }
            BaselineMsg::Forward(ForwardMsg::ForwardReply { resp }) => {
                self.forwarder.on_reply(resp, out)
            }
            // A forward to a node that is not the holder, or a replication message: not
            // part of this system; ignored.
            BaselineMsg::Forward(ForwardMsg::Forward { .. }) | BaselineMsg::Replicate { .. } => {}
        }
    }

    fn on_timer(&mut self, _cx: &mut Cx<'_>, timer: TimerId, out: &mut Out<BaselineMsg>) {
        self.forwarder.on_timer(timer, out);
    }

    fn on_client(&mut self, cx: &mut Cx<'_>, req: ClientRequest, out: &mut Out<BaselineMsg>) {
        if let Err(reason) = crate::validate_kv_only(&req) {
            out.reply(req.id, Err(ClientError::Invalid { reason }));
        } else if cx.id == self.holder {
            self.serve(req, None, out);
        } else {
            self.forwarder
                .forward(self.holder, req, out, BaselineMsg::Forward);
        }
    }
}

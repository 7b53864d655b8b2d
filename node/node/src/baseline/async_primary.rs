//! `async-primary`: acknowledge first, replicate later, read anywhere. Not linearizable.

use std::ops::ControlFlow;
use std::time::Duration;

use kvlab_types::{
    ClientError, ClientRequest, Cx, GroupId, NodeEvent, NodeId, Out, Protocol, Recovery, TimerId,
};
use serde::{Deserialize, Serialize};

use super::{BaselineMsg, UpdateRecord, answer, owner, replay};
use crate::forward::{ForwardMsg, Forwarder};
use crate::kv::KvStore;

/// Configuration of the `async-primary` system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AsyncPrimaryConfig {
    /// The primary (default: the smallest node id).
    pub primary: Option<NodeId>,
    /// How long a backup waits for the primary's answer to a forwarded update.
    pub forward_timeout_ms: u64,
}

impl Default for AsyncPrimaryConfig {
    fn default() -> Self {
        AsyncPrimaryConfig {
            primary: None,
            forward_timeout_ms: 500,
        }
    }
}

/// A node of the `async-primary` system. See [the module docs](super).
///
/// The primary applies an update, appends it to its WAL **without** syncing, answers at
/// once, and ships it to the backups; backups apply what reaches them (skipping gaps);
/// every node answers reads from its own copy.
#[derive(Debug)]
pub struct AsyncPrimary {
    primary: NodeId,
    peers: Vec<NodeId>,
    kv: KvStore,
    forwarder: Forwarder,
    /// Updates the primary has shipped, or the highest one a backup has applied.
    seq: u64,
    /// Replicated updates a backup refused as invalid (a key over `MAX_KEY_BYTES`).
    refused_messages: u64,
}

impl AsyncPrimary {
    /// This node's copy of the data.
    pub fn store(&self) -> &KvStore {
        &self.kv
    }

    /// Replicated updates this backup refused as invalid.
    pub fn refused_messages(&self) -> u64 {
        self.refused_messages
    }

    fn update_at_primary(
        &mut self,
        req: ClientRequest,
        reply_to: Option<NodeId>,
        out: &mut Out<BaselineMsg>,
    ) {
        if let Err(reason) = crate::validate_kv_only(&req) {
            // Refused before it reaches the log or the backups.
            answer(req.id, Err(ClientError::Invalid { reason }), reply_to, out);
            return;
        }
        let result = self.kv.apply(req.id, &req.op);
        if result.is_ok() && !req.op.is_read_only() {
            if let Ok(bytes) = UpdateRecord::encode(req.id, &req.op) {
                // Deliberately no sync: the acknowledgement races the disk.
                out.persist(GroupId::DEFAULT, bytes);
            }
            self.seq += 1;
            for &peer in &self.peers {
                if peer != self.primary {
                    out.send(
                        peer,
                        BaselineMsg::Replicate {
                            seq: self.seq,
                            id: req.id,
                            op: req.op.clone(),
                        },
                    );
                }
            }
        }
        answer(req.id, result, reply_to, out);
    }
}

impl Protocol for AsyncPrimary {
    type Msg = BaselineMsg;
    type Config = AsyncPrimaryConfig;
    /// The primary acknowledges before its record is durable: that is the design.
    const SENDS_UNSYNCED_STATE: bool = true;

    fn boot(
        cx: &mut Cx<'_>,
        config: &AsyncPrimaryConfig,
        peers: &[NodeId],
        recovered: Recovery,
        out: &mut Out<BaselineMsg>,
    ) -> Self {
        let primary = owner(config.primary, peers);
        let mut node = AsyncPrimary {
            primary,
            peers: peers.to_vec(),
            kv: KvStore::default(),
            forwarder: Forwarder::new(Duration::from_millis(config.forward_timeout_ms)),
            seq: 0,
            refused_messages: 0,
        };
        if cx.id == primary {
            let records = recovered.group(GroupId::DEFAULT).records;
            // Undecodable records are skipped: this design does not care.
            node.seq = replay(&mut node.kv, &records, |_, _| ControlFlow::Continue(()));
            out.event(NodeEvent::NodeStarted {
                role: "primary".into(),
                records: records.len() as u64,
                snapshot: false,
                term: 0,
                applied: node.seq,
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
            BaselineMsg::Forward(ForwardMsg::Forward { req }) if cx.id == self.primary => {
                self.update_at_primary(req, Some(from), out)
            }
            BaselineMsg::Forward(ForwardMsg::ForwardReply { resp }) => {
                self.forwarder.on_reply(resp, out)
            }
            BaselineMsg::Replicate { op, .. } if op.validate().is_err() => {
                // The primary never ships an invalid update: forged or corrupted.
                self.refused_messages += 1;
            }
            BaselineMsg::Replicate { seq, id, op } if cx.id != self.primary => {
                if seq > self.seq {
                    // Gaps are skipped, not repaired: that is this design's weakness.
                    let _ = self.kv.apply(id, &op);
                    self.seq = seq;
                }
            }
            BaselineMsg::Forward(ForwardMsg::Forward { .. }) | BaselineMsg::Replicate { .. } => {}
        }
    }

    fn on_timer(&mut self, _cx: &mut Cx<'_>, timer: TimerId, out: &mut Out<BaselineMsg>) {
        self.forwarder.on_timer(timer, out);
    }

    fn on_client(&mut self, cx: &mut Cx<'_>, req: ClientRequest, out: &mut Out<BaselineMsg>) {
        if let Err(reason) = crate::validate_kv_only(&req) {
            out.reply(req.id, Err(ClientError::Invalid { reason }));
        } else if req.op.is_read_only() {
            // Any node answers reads from its own, possibly stale, copy.
            let result = self.kv.apply_op(&req.op);
            out.reply(req.id, result);
        } else if cx.id == self.primary {
            self.update_at_primary(req, None, out);
        } else {
            self.forwarder
                .forward(self.primary, req, out, BaselineMsg::Forward);
        }
    }
}

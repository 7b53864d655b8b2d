//! [`SwimNode`]: SWIM alone as a [`Protocol`], so the simulator and the server can run
//! it without the rest of the stack (`system = "swim"`).

use kvlab_types::{
    ClientError, ClientRequest, Cx, Layer, NodeEvent, NodeId, Out, Protocol, Recovery, TimerId,
};

use crate::{MAX_INCARNATION, Swim, SwimConfig, SwimMsg, recover_incarnation};

/// When no seeds are configured, [`SwimNode`] joins through this many of the
/// lowest-numbered peers (itself excluded).
pub const DEFAULT_SEED_COUNT: usize = 3;
/// A booting [`SwimNode`] that recovers more records than this compacts them into one
/// snapshot, so restarts do not grow the log without bound.
pub const RECORD_COMPACTION_THRESHOLD: usize = 16;

/// SWIM running alone as a node.
///
/// * Incarnation: boots at `highest persisted + 1` (0 on first boot), persisted with
///   `Persist` + `Sync` before anything is sent; if storage was lost it starts at 0 and
///   climbs past its old number by refuting what the cluster remembers.
/// * Address: `"<id>/inc<incarnation at boot>"`, so every restart comes back at a new
///   address (it stands for the new port or pod IP a real restart gets).
/// * Seeds: `config.seeds`, or the [`DEFAULT_SEED_COUNT`] lowest-numbered peers.
/// * A config that does not validate leaves the node inert; it reports
///   `swim_config_invalid` once.
/// * Client requests are answered `Unavailable`: SWIM serves no keys.
#[derive(Debug)]
pub struct SwimNode {
    swim: Option<Swim>,
}

impl SwimNode {
    /// The SWIM core, unless the config was invalid.
    pub fn swim(&self) -> Option<&Swim> {
        self.swim.as_ref()
    }
    /// The SWIM core, mutably (to call [`Swim::leave`], for instance).
    pub fn swim_mut(&mut self) -> Option<&mut Swim> {
        self.swim.as_mut()
    }
    /// Leaves the cluster gracefully (see [`Swim::leave`]).
    pub fn leave(&mut self, cx: &mut Cx<'_>, out: &mut Out<SwimMsg>) {
        if let Some(s) = self.swim.as_mut() {
            s.leave(cx, out);
            s.drain_events();
        }
    }
}

impl Protocol for SwimNode {
    type Msg = SwimMsg;
    type Config = SwimConfig;

    /// Every message of a SWIM-only node is SWIM's.
    fn split_layer(msg: SwimMsg, layer: Layer) -> (Option<SwimMsg>, Option<SwimMsg>) {
        match layer {
            Layer::Swim => (Some(msg), None),
            Layer::Group(_) => (None, Some(msg)),
        }
    }

    fn boot(
        cx: &mut Cx<'_>,
        config: &SwimConfig,
        peers: &[NodeId],
        recovered: Recovery,
        out: &mut Out<SwimMsg>,
    ) -> Self {
        let rec = recover_incarnation(&recovered);
        for e in &rec.errors {
            out.event(NodeEvent::RecoveryFailed {
                reason: format!("member {}: {e}", cx.id),
            });
        }
        // A persisted incarnation at the ceiling (only a forged one adopted by an older
        // build gets there) is kept at it: peers refuse anything above.
        let incarnation = rec
            .highest
            .map_or(0, |h| h.saturating_add(1).min(MAX_INCARNATION));
        if rec.highest.is_some_and(|h| h >= MAX_INCARNATION) {
            out.event(NodeEvent::IncarnationExhausted {
                member: cx.id,
                incarnation,
            });
        }
        let mut config = config.clone();
        if config.seeds.is_empty() {
            let mut sorted: Vec<NodeId> = peers.iter().copied().filter(|p| *p != cx.id).collect();
            sorted.sort();
            sorted.dedup();
            sorted.truncate(DEFAULT_SEED_COUNT);
            config.seeds = sorted;
        }
        let address = format!("{}/inc{incarnation}", cx.id);
        let mut swim = match Swim::new(cx.id, address, incarnation, config) {
            Ok(s) => s,
            Err(e) => {
                out.event(NodeEvent::RecoveryFailed {
                    reason: format!("member {}: invalid SWIM configuration: {e}", cx.id),
                });
                return SwimNode { swim: None };
            }
        };
        if rec.records > RECORD_COMPACTION_THRESHOLD
            && let Some(h) = rec.highest
        {
            out.save_snapshot(crate::SWIM_STATE, crate::encode_incarnation_record(h));
        }
        swim.start(cx, out);
        swim.drain_events();
        SwimNode { swim: Some(swim) }
    }

    fn on_msg(&mut self, cx: &mut Cx<'_>, from: NodeId, msg: SwimMsg, out: &mut Out<SwimMsg>) {
        if let Some(s) = self.swim.as_mut() {
            s.handle_msg(cx, from, msg, out);
            // Events already went to `out`; nobody else reads the typed queue here.
            s.drain_events();
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_>, timer: TimerId, out: &mut Out<SwimMsg>) {
        if let Some(s) = self.swim.as_mut() {
            s.handle_timer(cx, timer, out);
            s.drain_events();
        }
    }

    fn on_client(&mut self, _cx: &mut Cx<'_>, req: ClientRequest, out: &mut Out<SwimMsg>) {
        out.reply(
            req.id,
            Err(ClientError::Unavailable {
                reason: "swim serves no keys".to_string(),
                hint: None,
            }),
        );
    }
}

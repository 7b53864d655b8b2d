//! The transaction faults, `kill-gateway` and `partition-home-group`: aimed at a point
//! of two-phase commit, so they wait for a transaction to get there.
//!
//! When such a fault's time comes it is *armed*. The composed node's replicas report
//! each 2PC step they apply as a typed [`NodeEvent::TxnStep`]; the driver hands every
//! one to [`Nemesis::on_txn_step`], and the first report of a step at a transaction's
//! home is the point: the home applied the PREPARE (`after-prepare`) or the Commit
//! (`after-decision`), and its answer to the coordinator is on its way. On the
//! simulator the driver acts at that very instant, before any message sent then can
//! arrive, so the gateway dies (or the home is cut off) exactly between the two steps.
//! The fault then lasts its planned duration from that instant. An armed fault that no
//! transaction triggers before its planned end (or the end of the safety phase) is
//! skipped, and counted so.

use kvlab_types::{NodeEvent, NodeId, Time, TxnFaultPoint, TxnRef, TxnStepKind};

use super::{Nemesis, PlannedFault, Undo, node_list, partition};
use crate::cluster::FaultControl;
use crate::error::FaultError;
use crate::events::RunEvent;
use crate::spec::{FaultKind, GatewayKillPoint};
use crate::workload::below;

/// A transaction fault waiting for its point.
#[derive(Clone, Debug)]
pub(super) struct Armed {
    pub(super) p: PlannedFault,
    /// Where it strikes (`partition-home-group`: always after the home's PREPARE).
    pub(super) point: TxnFaultPoint,
}

/// How a transaction is named in fault details.
fn txn_name(t: &TxnRef) -> String {
    format!("{}/{}/{}", t.node, t.boot_epoch, t.seq)
}

/// A home's step as the nemesis needs it.
struct HomeStep<'a> {
    txn: TxnRef,
    home: kvlab_types::GroupId,
    point: TxnFaultPoint,
    voters: &'a [NodeId],
}

impl Nemesis {
    /// Arms a transaction fault whose start time came: it waits for its point.
    pub(super) fn arm(&mut self, p: PlannedFault) {
        let point = match (p.kind, p.point, self.spec.gateway_kill_point) {
            (FaultKind::PartitionHomeGroup, _, _) => TxnFaultPoint::AfterPrepare,
            (_, Some(point), _) => point,
            (_, None, GatewayKillPoint::AfterPrepare) => TxnFaultPoint::AfterPrepare,
            (_, None, GatewayKillPoint::AfterDecision) => TxnFaultPoint::AfterDecision,
            (_, None, GatewayKillPoint::Any) => match below(&mut self.rng, 2) {
                0 => TxnFaultPoint::AfterPrepare,
                _ => TxnFaultPoint::AfterDecision,
            },
        };
        self.armed.push(Armed { p, point });
    }

    /// Skips the armed faults whose window closed by `now` (all of them when `all`:
    /// the safety phase is over).
    pub(super) fn expire_armed(&mut self, now: Time, all: bool, events: &mut Vec<RunEvent>) {
        let (gone, keep): (Vec<Armed>, Vec<Armed>) = std::mem::take(&mut self.armed)
            .into_iter()
            .partition(|a| all || a.p.end <= now);
        self.armed = keep;
        for a in gone {
            let why = match a.point {
                TxnFaultPoint::AfterPrepare => {
                    "no transaction's home applied a PREPARE while the fault waited"
                }
                TxnFaultPoint::AfterDecision => {
                    "no transaction's home applied a Commit while the fault waited"
                }
            };
            // Skipping records an event and cannot fail.
            let _ = self.skip(&a.p, now, events, why);
        }
    }

    /// A replica reported a 2PC step (the driver calls this for every `txn_step` event
    /// of the safety phase): strikes with the first armed fault whose point it is.
    pub fn on_txn_step(
        &mut self,
        now: Time,
        reporter: NodeId,
        event: &NodeEvent,
        cluster: &mut dyn FaultControl,
        events: &mut Vec<RunEvent>,
    ) -> Result<(), FaultError> {
        let NodeEvent::TxnStep {
            txn,
            group,
            home,
            step,
            voters,
        } = event
        else {
            return Ok(());
        };
        if !self.aims_at_txns() {
            return Ok(());
        }
        let point = match step {
            TxnStepKind::Prepared => TxnFaultPoint::AfterPrepare,
            TxnStepKind::Committed => TxnFaultPoint::AfterDecision,
            _ => return Ok(()),
        };
        // Only a home's first report is the point (every replica reports the step).
        if group != home || !self.home_steps_seen.insert((*txn, *step)) {
            return Ok(());
        }
        // A gateway that is the home's replica hears the answer within the same step.
        if self.armed.is_empty() || reporter == txn.node {
            return Ok(());
        }
        let s = HomeStep {
            txn: *txn,
            home: *home,
            point,
            voters,
        };
        let Some(i) = self.armed.iter().position(|a| self.fits(a, &s)) else {
            return Ok(());
        };
        let a = self.armed.remove(i);
        let started = match a.p.kind {
            FaultKind::KillGateway => self.kill_gateway(&s, cluster)?,
            _ => self.cut_home(&s, cluster),
        };
        let end = now.saturating_add(a.p.end.saturating_since(a.p.start));
        self.record_start(&a.p, now, end, started, events);
        Ok(())
    }

    /// Whether any fault of the spec waits for 2PC points.
    fn aims_at_txns(&self) -> bool {
        let kinds = (self.spec.faults.iter()).chain(self.spec.schedule.iter().map(|f| &f.kind));
        kinds
            .into_iter()
            .any(|k| matches!(k, FaultKind::KillGateway | FaultKind::PartitionHomeGroup))
    }

    /// Whether armed fault `a` strikes at step `s`.
    fn fits(&self, a: &Armed, s: &HomeStep<'_>) -> bool {
        if a.point != s.point {
            return false;
        }
        let gw = s.txn.node;
        match a.p.kind {
            FaultKind::KillGateway => {
                a.p.targets.first().is_none_or(|t| *t == gw)
                    && self.in_cluster(&gw)
                    && !self.crashed.contains(&gw)
                    && !self.paused.contains(&gw)
            }
            _ => {
                let (side, rest) = self.home_sides(s);
                !side.is_empty() && !rest.is_empty()
            }
        }
    }

    /// The home's voters without the gateway, and every other node in the cluster.
    fn home_sides(&self, s: &HomeStep<'_>) -> (Vec<NodeId>, Vec<NodeId>) {
        let side: Vec<NodeId> = (s.voters.iter().copied())
            .filter(|n| *n != s.txn.node && self.in_cluster(n))
            .collect();
        let rest = (self.gateways().into_iter())
            .filter(|n| !side.contains(n))
            .collect();
        (side, rest)
    }

    fn kill_gateway(
        &mut self,
        s: &HomeStep<'_>,
        cluster: &mut dyn FaultControl,
    ) -> Result<(Undo, String, Option<NodeId>, Option<TxnFaultPoint>), FaultError> {
        let gw = s.txn.node;
        cluster.crash(gw)?;
        self.crashed.insert(gw);
        let detail = format!(
            "gateway {gw} crashed {} of txn {} (home group {})",
            s.point.name(),
            txn_name(&s.txn),
            s.home.0
        );
        Ok((Undo::Restart(gw), detail, Some(gw), Some(s.point)))
    }

    fn cut_home(
        &mut self,
        s: &HomeStep<'_>,
        cluster: &mut dyn FaultControl,
    ) -> (Undo, String, Option<NodeId>, Option<TxnFaultPoint>) {
        let (side, rest) = self.home_sides(s);
        let detail = format!(
            "home group {} of txn {} cut off after its PREPARE: {} | {}",
            s.home.0,
            txn_name(&s.txn),
            node_list(&side),
            node_list(&rest)
        );
        let undo = partition(cluster, &side, &rest);
        (undo, detail, None, None)
    }
}

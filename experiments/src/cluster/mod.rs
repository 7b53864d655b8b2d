//! [`Cluster`]: the one seam between an experiment and the nodes it runs on.
//!
//! The phase driver ([`crate::driver`]) runs every experiment through this trait: it
//! submits client requests, advances the cluster's clock, applies faults and reads a
//! view of the cluster. Each backend implements it once:
//!
//! - [`SimCluster`] — the deterministic simulator (`backend = "sim"`), virtual time;
//! - [`crate::local::LocalCluster`] — real nodes on this machine (`backend = "local"`):
//!   `kvlab node` processes over udp or tarpc, or tasks over the in-process network; and
//!   (`backend = "docker"`) one container per node ([`crate::local::docker`]).
//!
//! All times are on the cluster's own clock ([`Cluster::now`]), the clock of the history
//! and of `events.jsonl`: virtual nanoseconds in simulation, nanoseconds of wall time since
//! the run started on real nodes.

mod sim;

use std::any::Any;
use std::collections::BTreeSet;

use kvlab_node::inspect::{MembershipStatus, ProtocolStatus};
use kvlab_sim::{FaultRule, RuleId};
use kvlab_types::{AdminCommand, ClientRequest, ClientResponse, NodeEvent, NodeId, Time};

pub use sim::SimCluster;

use crate::error::{ExperimentError, FaultAction, FaultError};

/// Something the cluster produced that the runner sees.
#[derive(Clone, Debug, PartialEq)]
pub enum ClusterOutput {
    /// A reply reached the client that sent the request to `node`.
    Reply {
        /// When the client saw it.
        at: Time,
        /// The answer.
        response: ClientResponse,
    },
    /// A node reported an event.
    Event {
        /// When (on the run's clock).
        at: Time,
        /// The reporting node.
        node: NodeId,
        /// The event.
        event: NodeEvent,
    },
    /// The backend could not do something it was asked (a fault rule a real node did
    /// not take); recorded as a `fault_error` runner event.
    Warning {
        /// When.
        at: Time,
        /// What went wrong.
        detail: String,
    },
}

/// What the runner knows about the cluster when it steps the nemesis: the leader (of the
/// default group) and that group's membership as the leader sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// The up node that leads the highest term, if any.
    pub leader: Option<NodeId>,
    /// The group's configuration as `leader` sees it, for systems with membership.
    pub membership: Option<MembershipStatus>,
}

impl ClusterView {
    /// The view from every answering node's status: the leader of the highest term
    /// among the nodes that call themselves leader, and its view of the membership.
    pub fn from_statuses(statuses: impl IntoIterator<Item = (NodeId, ProtocolStatus)>) -> Self {
        let mut best: Option<(u64, NodeId, ProtocolStatus)> = None;
        for (node, status) in statuses {
            // `meta-leader`: the composed node's placement driver, which leader faults
            // aim at.
            if !matches!(status.role.as_deref(), Some("leader" | "meta-leader")) {
                continue;
            }
            let term = status.term.unwrap_or(0);
            if best.as_ref().is_none_or(|(t, _, _)| term > *t) {
                best = Some((term, node, status));
            }
        }
        match best {
            Some((_, leader, status)) => ClusterView {
                leader: Some(leader),
                membership: status.membership,
            },
            None => ClusterView::default(),
        }
    }
}

/// What the nemesis does to a cluster: fault rules, crashes, pauses, clock drift and
/// operator commands. Every backend implements it; a test implements it with a recorder.
pub trait FaultControl {
    /// Installs a fault rule and returns its id.
    fn add_rule(&mut self, rule: FaultRule) -> RuleId;
    /// Removes a rule installed by [`FaultControl::add_rule`].
    fn remove_rule(&mut self, rule: RuleId);
    /// Crashes a node (unsynced writes may be lost).
    fn crash(&mut self, node: NodeId) -> Result<(), FaultError>;
    /// Restarts a crashed node from its durable storage.
    fn restart(&mut self, node: NodeId) -> Result<(), FaultError>;
    /// Pauses a node: it keeps its state but handles nothing until resumed.
    fn pause(&mut self, node: NodeId) -> Result<(), FaultError>;
    /// Resumes a paused node.
    fn resume(&mut self, node: NodeId) -> Result<(), FaultError>;
    /// Boots a node that never ran (a joiner). Backends without joiners refuse.
    fn start(&mut self, node: NodeId) -> Result<(), FaultError> {
        Err(FaultError::new(
            FaultAction::Start,
            node,
            "this backend has no absent nodes to start".to_string(),
        ))
    }
    /// Whether `node` ever booted (joiners that were never started have not).
    fn is_started(&self, node: NodeId) -> bool {
        let _ = node;
        true
    }
    /// Makes a node's clock run `ppm` parts per million fast (positive) or slow.
    fn set_clock_drift(&mut self, node: NodeId, ppm: i64) -> Result<(), FaultError>;
    /// Steps a node's clock forward by `by`. Only the simulator can.
    fn jump_clock(&mut self, node: NodeId, by: std::time::Duration) -> Result<(), FaultError> {
        let _ = by;
        Err(sim_only(FaultAction::JumpClock, node))
    }
    /// Makes every fsync of a node's disk fail (`on`) or work again. Only the simulator
    /// can.
    fn fail_fsyncs(&mut self, node: NodeId, on: bool) -> Result<(), FaultError> {
        let _ = on;
        Err(sim_only(FaultAction::DiskFault, node))
    }
    /// Flips a bit of a synced log byte of the crashed `node` that its recovery must
    /// refuse; `Ok(None)` if its log holds no such byte yet, `Ok(Some(what))` says which.
    /// Only the simulator can.
    fn corrupt_log(&mut self, node: NodeId) -> Result<Option<String>, FaultError> {
        Err(sim_only(FaultAction::DiskFault, node))
    }
    /// Restarts `node` if it is down: [`Restart::WasUp`] if it was running, and
    /// [`Restart::Refused`] if its storage refused to recover (the node stays down).
    fn restart_if_down(&mut self, node: NodeId) -> Result<Restart, FaultError> {
        self.restart(node).map(|()| Restart::Restarted)
    }
    /// Sends an operator's command to `node`; `Ok(false)` if it could not be delivered
    /// (the node is down, or the cluster takes no commands, the default).
    fn admin(&mut self, node: NodeId, cmd: AdminCommand) -> Result<bool, FaultError> {
        let _ = (node, cmd);
        Ok(false)
    }
}

/// What [`FaultControl::restart_if_down`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restart {
    /// The node was down and runs again.
    Restarted,
    /// The node was running; nothing was done.
    WasUp,
    /// Its storage refused to recover (the reason names the damage); it stays down.
    Refused(String),
}

fn sim_only(action: FaultAction, node: NodeId) -> FaultError {
    FaultError::new(action, node, "only the simulator can do this")
}

/// What the backend reports when the run is over.
#[derive(Clone, Debug, Default)]
pub struct BackendReport {
    /// The simulator's counters (simulated runs).
    pub sim_stats: Option<kvlab_sim::SimStats>,
    /// Problems stopping real nodes, for `meta.json` and the report.
    pub warnings: Vec<String>,
}

/// A running cluster, whatever runs it. See [the module docs](self).
pub trait Cluster: FaultControl {
    /// The backend's name in `meta.json` and reproduce commands (`sim`, `local`).
    fn backend_name(&self) -> &'static str;
    /// The nodes, sorted.
    fn nodes(&self) -> &[NodeId];
    /// The cluster's clock now.
    fn now(&self) -> Time;
    /// Sends a client request to `node`; the answer arrives as a
    /// [`ClusterOutput::Reply`] from a later [`Cluster::advance`] (or never, if lost).
    fn submit(&mut self, node: NodeId, req: ClientRequest);
    /// Lets the cluster run until `deadline`, returning earlier as soon as it produced
    /// output (appended to `out`). The simulator runs its events up to there; a real
    /// cluster waits (bounded by `deadline`) for replies and events.
    fn advance(
        &mut self,
        deadline: Time,
        out: &mut Vec<ClusterOutput>,
    ) -> Result<(), ExperimentError>;
    /// Whether the nodes take operator commands ([`FaultControl::admin`]) that the
    /// membership reconciler may send.
    fn takes_admin_commands(&self) -> bool {
        false
    }
    /// Whether `node` is running (not crashed; it may be paused).
    fn is_up(&self, node: NodeId) -> bool;
    /// The leader and membership, from the nodes' own statuses.
    fn view(&mut self) -> ClusterView;
    /// Undoes every fault, whatever caused it: no rules, every node up, running, and on
    /// the true clock — except joiners never started and the `retired` nodes (gone for
    /// good), which stay down. Problems are returned as warnings (the liveness phase will
    /// show whether the cluster recovered).
    fn heal_all(&mut self, retired: &BTreeSet<NodeId>) -> Vec<String>;
    /// The protocol value of `node`, for observers that look inside nodes (only the
    /// simulator can offer it; real nodes return `None`).
    fn protocol(&self, node: NodeId) -> Option<&dyn Any> {
        let _ = node;
        None
    }
    /// The simulator's counters (messages, bytes, …) now; `None` on real clusters.
    fn sim_stats(&self) -> Option<kvlab_sim::SimStats> {
        None
    }
    /// Ends the run: stops real nodes (writing what they report into the run
    /// directory) and returns the backend's counters.
    fn finish(&mut self) -> Result<BackendReport, ExperimentError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(role: &str, term: u64) -> ProtocolStatus {
        ProtocolStatus {
            role: Some(role.into()),
            term: Some(term),
            ..ProtocolStatus::default()
        }
    }

    #[test]
    fn the_view_follows_the_leader_of_the_highest_term() {
        let v = ClusterView::from_statuses([
            (NodeId(1), status("leader", 3)),
            (NodeId(2), status("follower", 5)),
            (NodeId(3), status("leader", 5)),
        ]);
        assert_eq!(v.leader, Some(NodeId(3)));
        assert_eq!(
            ClusterView::from_statuses([(NodeId(1), status("follower", 1))]),
            ClusterView::default()
        );
    }
}
